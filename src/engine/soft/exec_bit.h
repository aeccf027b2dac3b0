/* Small helpers shared by the bit and muldiv groups (exec_bit.c, exec_muldiv.c). */
#ifndef FERRY_SOFT_EXEC_BIT_H
#define FERRY_SOFT_EXEC_BIT_H

#include "engine/soft/soft.h"

static inline uint64_t *bit_gpr_ptr(struct soft_cpu *c, gpr_ref r)
{
	return (uint64_t *)((uint8_t *)c->gpr + r);
}

/* SF, ZF and PF of a result of sz bytes. */
static inline uint64_t bit_szp_flags(uint64_t r, unsigned sz)
{
	r &= size_mask(sz);
	return (parity8(r) ? FL_PF : 0) | (r ? 0 : FL_ZF) | ((r >> (sz * 8 - 1)) & 1 ? FL_SF : 0);
}

/* Sets all six arithmetic flags to f. Nothing of the previous lazy state survives, so it need
 * not be computed first (which soft_set_flags would do). */
static inline void bit_set_arith_flags(struct soft_cpu *c, uint64_t f)
{
	c->rflags = (c->rflags & ~(uint64_t)FL_ARITH) | f;
	c->lf.op = LF_NONE;
}

#endif
