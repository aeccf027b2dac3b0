/* Instruction group "sse": being written. */
#include <Zydis/Zydis.h>

#include "engine/soft/soft.h"

void soft_register_sse(void)
{
}

void soft_fxsave_image(struct soft_cpu *c, uint8_t out[512])
{
	(void)c;
	for (int i = 0; i < 512; i++)
		out[i] = 0;
}

void soft_fxrstor_image(struct soft_cpu *c, const uint8_t in[512])
{
	(void)c;
	(void)in;
}
