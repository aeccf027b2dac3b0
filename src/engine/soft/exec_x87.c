/* Instruction group "x87": being written. */
#include <Zydis/Zydis.h>

#include "engine/soft/soft.h"

void soft_register_x87(void)
{
}
