/* Instruction group "bit": being written. */
#include <Zydis/Zydis.h>

#include "engine/soft/soft.h"

void soft_register_bit(void)
{
}
