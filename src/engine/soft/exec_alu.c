/* Integer data movement and arithmetic: mov, add/sub/and/or/xor/cmp/test, inc/dec. */
#include <Zydis/Zydis.h>

#include "engine/soft/soft.h"

static void h_mov(struct soft_cpu *c, const struct insn *in)
{
	opnd_write(c, in, 0, opnd_read(c, in, 1));
}

/* mov r64, r64: the hottest form, with nothing to decide at run time. */
static void h_mov_r64_r64(struct soft_cpu *c, const struct insn *in)
{
	*(uint64_t *)((uint8_t *)c->gpr + in->op[0].reg) =
	    *(const uint64_t *)((const uint8_t *)c->gpr + in->op[1].reg);
}

static insn_fn sel_mov(const struct insn *in)
{
	if (in->op[0].kind == OPK_REG && in->op[1].kind == OPK_REG && in->op[0].size == 8)
		return h_mov_r64_r64;
	return h_mov;
}

/* The binary ALU operations share one shape: dst = dst OP src, flags recorded lazily. */
#define ALU_OP(name, expr, lf, writes)                                                             \
	static void h_##name(struct soft_cpu *c, const struct insn *in)                            \
	{                                                                                          \
		unsigned sz = in->op[0].size;                                                      \
		uint64_t a = opnd_read(c, in, 0);                                                  \
		uint64_t b =                                                                       \
		    in->op[1].kind == OPK_IMM ? in->imm & size_mask(sz) : opnd_read(c, in, 1);     \
		uint64_t r = (expr)&size_mask(sz);                                                 \
		if (writes)                                                                        \
			opnd_write(c, in, 0, r);                                                   \
		lf_set(c, lf, sz, r, a, b);                                                        \
	}

ALU_OP(add, a + b, LF_ADD, 1)
ALU_OP(sub, a - b, LF_SUB, 1)
ALU_OP(and, a &b, LF_LOGIC, 1)
ALU_OP(or, a | b, LF_LOGIC, 1)
ALU_OP(xor, a ^ b, LF_LOGIC, 1)
ALU_OP(cmp, a - b, LF_SUB, 0)
ALU_OP(test, a &b, LF_LOGIC, 0)

/* INC and DEC keep CF. After another INC/DEC the carry is already in lf.src3, so a loop
 * counter never forces the flags to be computed. */
static inline uint64_t carry_for_inc_dec(struct soft_cpu *c)
{
	unsigned prev = c->lf.op & ~3u;
	if (prev == LF_INC || prev == LF_DEC)
		return c->lf.src3;
	return soft_flags(c) & FL_CF;
}

static void inc_dec(struct soft_cpu *c, const struct insn *in, int delta, unsigned lf)
{
	unsigned sz = in->op[0].size;
	uint64_t carry = carry_for_inc_dec(c);
	uint64_t a = opnd_read(c, in, 0);
	uint64_t r = (a + (uint64_t)(int64_t)delta) & size_mask(sz);
	opnd_write(c, in, 0, r);
	lf_set(c, lf, sz, r, a, 1);
	c->lf.src3 = carry;
}

/* dec/inc r64: loop counters. */
static void h_dec_r64(struct soft_cpu *c, const struct insn *in)
{
	uint64_t carry = carry_for_inc_dec(c);
	uint64_t *r = (uint64_t *)((uint8_t *)c->gpr + in->op[0].reg);
	uint64_t a = *r;
	*r = a - 1;
	c->lf.op = LF_DEC + 3;
	c->lf.res = a - 1;
	c->lf.src1 = a;
	c->lf.src2 = 1;
	c->lf.src3 = carry;
}

static void h_inc_r64(struct soft_cpu *c, const struct insn *in)
{
	uint64_t carry = carry_for_inc_dec(c);
	uint64_t *r = (uint64_t *)((uint8_t *)c->gpr + in->op[0].reg);
	uint64_t a = *r;
	*r = a + 1;
	c->lf.op = LF_INC + 3;
	c->lf.res = a + 1;
	c->lf.src1 = a;
	c->lf.src2 = 1;
	c->lf.src3 = carry;
}

static insn_fn sel_inc(const struct insn *in);
static insn_fn sel_dec(const struct insn *in);

static void h_inc(struct soft_cpu *c, const struct insn *in)
{
	inc_dec(c, in, 1, LF_INC);
}

static void h_dec(struct soft_cpu *c, const struct insn *in)
{
	inc_dec(c, in, -1, LF_DEC);
}

static insn_fn sel_inc(const struct insn *in)
{
	return in->op[0].kind == OPK_REG && in->op[0].size == 8 ? h_inc_r64 : h_inc;
}

static insn_fn sel_dec(const struct insn *in)
{
	return in->op[0].kind == OPK_REG && in->op[0].size == 8 ? h_dec_r64 : h_dec;
}

void soft_register_alu(void)
{
	soft_register(ZYDIS_MNEMONIC_MOV, sel_mov);
	soft_register_fn(ZYDIS_MNEMONIC_ADD, h_add);
	soft_register_fn(ZYDIS_MNEMONIC_SUB, h_sub);
	soft_register_fn(ZYDIS_MNEMONIC_AND, h_and);
	soft_register_fn(ZYDIS_MNEMONIC_OR, h_or);
	soft_register_fn(ZYDIS_MNEMONIC_XOR, h_xor);
	soft_register_fn(ZYDIS_MNEMONIC_CMP, h_cmp);
	soft_register_fn(ZYDIS_MNEMONIC_TEST, h_test);
	soft_register(ZYDIS_MNEMONIC_INC, sel_inc);
	soft_register(ZYDIS_MNEMONIC_DEC, sel_dec);
}
