/* The soft engine's muldiv group (exec_muldiv.c) against the host CPU: mul, imul with one, two
 * and three operands, div and idiv (with their #DE), every operand size and form.
 *
 * CF and OF after a multiplication are compared everywhere; its SF, ZF, AF and PF are undefined
 * and the engine does not copy any CPU there (AMD keeps them, which would cost a flags
 * computation per multiplication), so they are not compared. The flags after a division are
 * all undefined; the engine does what AMD does: compared on an AMD host. */
#include "soft_bit_native.h"

#define ALL_REGS 0xffu
#define CASES    160

static const unsigned sizes[] = {1, 2, 4, 8};

static unsigned fails;

static void expect(bool ok)
{
	if (!ok && ++fails >= 5)
		fail_msg("too many mismatches");
}

static uint64_t mask_of(unsigned sz)
{
	return sz == 8 ? ~0ull : (1ull << 8 * sz) - 1;
}

static uint64_t with_garbage(uint64_t v, unsigned sz)
{
	return sz == 8 ? v : (bn_rand() << 8 * sz) | v;
}

static void random_regs(struct bn_state *s, unsigned sz)
{
	for (unsigned i = 0; i < BN_NREGS; i++)
		s->gpr[i] = bn_rand() % 3 ? bn_value(8) : with_garbage(bn_value(sz), sz);
	s->gpr[GPR_RBX] = BN_MID;
	s->rflags = bn_flags();
}

/* Puts v (sz bytes) where the source operand is (a register or memory at RBX). */
static void put_source(struct bn_state *s, int where, uint64_t v, unsigned sz, enum bn_mem *mem)
{
	*mem = where < 0 ? BN_MEM_NEAR : BN_MEM_NONE;
	if (where == 4 && sz == 1)
		s->gpr[GPR_RAX] = (s->gpr[GPR_RAX] & ~0xff00ull) | (v & 0xff) << 8; /* AH */
	else if (where >= 0)
		s->gpr[where] = with_garbage(v, sz);
	bn_fill_mem(*mem, bn_disp(where), v, sz);
}

/* A dividend in rDX:rAX (AX for bytes) for divisor d: mostly one whose quotient fits, else
 * anything, sometimes the one overflow C itself cannot divide (the most negative / -1). */
static void put_dividend(struct bn_state *s, bool is_signed, unsigned sz, uint64_t d)
{
	uint64_t m = mask_of(sz), sb = 1ull << (8 * sz - 1);
	uint64_t hi = bn_value(sz), lo = bn_value(sz);
	switch (bn_rand() % 4) {
	case 0:
		break; /* anything: often #DE */
	case 1:
		if (is_signed) { /* the most negative dividend */
			hi = m;
			lo = sb;
			if (bn_rand() % 2)
				hi = sb, lo = 0;
		}
		break;
	default:
		if (is_signed) {
			/* A sign-extended dividend, or a small quotient times d. */
			hi = lo & sb ? m : 0;
		} else if (d) {
			hi = (d & m) > 1 ? bn_rand() % (d & m) : 0;
		}
		break;
	}
	if (sz == 1) {
		uint64_t ax = (hi << 8 | lo) & 0xffff;
		s->gpr[GPR_RAX] = (s->gpr[GPR_RAX] & ~0xffffull) | ax;
	} else {
		s->gpr[GPR_RAX] = with_garbage(lo, sz);
		s->gpr[GPR_RDX] = with_garbage(hi, sz);
	}
}

/* ---- F6/F7 /4../7: mul, imul, div, idiv r/m ---------------------------------------------- */

static void test_one_operand(void **state)
{
	(void)state;
	static const int places[] = {GPR_RCX, 4, GPR_RAX, BN_M_RBX, BN_M_CROSS, BN_M_RO};
	for (unsigned ext = 4; ext < 8; ext++)
		for (unsigned si = 0; si < 4; si++)
			for (unsigned pi = 0; pi < 6; pi++) {
				unsigned sz = sizes[si];
				int where = places[pi];
				if (where == 4 && sz != 1)
					continue;
				bool divide = ext >= 6, is_signed = ext & 1;
				struct bn_enc e = {.n = 0};
				bn_prefix(&e, sz, 0);
				bn_byte(&e, sz == 1 ? 0xf6 : 0xf7);
				bn_modrm(&e, ext, where);
				struct bn_insn t;
				bn_begin(&t, e.b, e.n, NULL, 0);
				for (unsigned k = 0; k < CASES; k++) {
					struct bn_state s;
					enum bn_mem mem;
					random_regs(&s, sz);
					uint64_t v = bn_value(sz);
					if (divide && bn_rand() % 4 == 0)
						v = bn_rand() % 2 ? mask_of(sz) : 0; /* -1 and 0 */
					if (where == BN_M_RO)
						v = 0; /* what that page holds */
					put_source(&s, where, v, sz, &mem);
					if (divide)
						put_dividend(&s, is_signed, sz,
							     where == GPR_RAX ? 0 : v);
					if (where == GPR_RAX || where == 4)
						mem = BN_MEM_NONE; /* the divisor is part of rAX */
					uint64_t f = divide ? FL_ARITH & (bn_amd ? ~0ull : 0)
							    : FL_CF | FL_OF;
					expect(bn_check(&t, &s, f, ALL_REGS, mem));
				}
				bn_end(&t);
			}
}

/* ---- 0F AF: imul r, r/m; 6B, 69: imul r, r/m, imm ---------------------------------------- */

static void test_imul(void **state)
{
	(void)state;
	static const int places[] = {GPR_RCX, GPR_RAX, BN_M_RBX, BN_M_CROSS, BN_M_RO};
	/* form 0: two operands into RAX, 1: into RDX; 2..: three operands with an imm8 or an
	 * immediate of the operand size (at most 32 bits). */
	static const int64_t imms[] = {0,       1,          -1,        2, 127, -128,    0x7fff,
				       -0x8000, 0x7fffffff, INT32_MIN, 3, -3,  0x12345, -0x10001};
	for (unsigned si = 1; si < 4; si++)
		for (unsigned pi = 0; pi < 5; pi++)
			for (unsigned form = 0; form < 2 + 14; form++) {
				unsigned sz = sizes[si];
				int where = places[pi];
				int64_t imm = form >= 2 ? imms[form - 2] : 0;
				bool imm8 = imm >= -128 && imm <= 127;
				if (!imm8 && sz == 2 && (imm > 0x7fff || imm < -0x8000))
					continue;
				struct bn_enc e = {.n = 0};
				bn_prefix(&e, sz, 0);
				if (form < 2) {
					bn_byte(&e, 0x0f);
					bn_byte(&e, 0xaf);
					bn_modrm(&e, form ? GPR_RDX : GPR_RAX, where);
				} else {
					bn_byte(&e, imm8 ? 0x6b : 0x69);
					bn_modrm(&e, GPR_RAX, where);
					unsigned n = imm8 ? 1 : sz == 2 ? 2 : 4;
					for (unsigned i = 0; i < n; i++)
						bn_byte(&e, (unsigned)((uint64_t)imm >> 8 * i));
				}
				struct bn_insn t;
				bn_begin(&t, e.b, e.n, NULL, 0);
				unsigned cases = form < 2 ? CASES : CASES / 4;
				for (unsigned k = 0; k < cases; k++) {
					struct bn_state s;
					enum bn_mem mem;
					random_regs(&s, sz);
					put_source(&s, where, where == BN_M_RO ? 0 : bn_value(sz),
						   sz, &mem);
					expect(bn_check(&t, &s, FL_CF | FL_OF, ALL_REGS, mem));
				}
				bn_end(&t);
			}
}

/* #DE leaves everything as it was, RIP on the division. */
static void test_divide_error(void **state)
{
	(void)state;
	static const uint8_t idiv_rcx[] = {0x48, 0xf7, 0xf9};
	struct bn_insn t;
	bn_begin(&t, idiv_rcx, sizeof(idiv_rcx), NULL, 0);
	struct soft_cpu *c = t.cpu;
	c->gpr[GPR_RAX] = 0;
	c->gpr[GPR_RDX] = 0x8000000000000000ull;
	c->gpr[GPR_RCX] = ~0ull;
	c->rip = BN_CODE;
	lf_set(c, LF_SUB, 8, 0, 5, 5);
	uint64_t before = soft_flags(c);
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_EXCEPTION);
	assert_int_equal(c->exc_vector, EXC_DE);
	assert_int_equal(c->rip, BN_CODE);
	assert_int_equal(c->gpr[GPR_RAX], 0);
	assert_int_equal(c->gpr[GPR_RDX], 0x8000000000000000ull);
	assert_int_equal(soft_flags(c), before);
	bn_end(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_one_operand),
	    cmocka_unit_test(test_imul),
	    cmocka_unit_test(test_divide_error),
	};
	return cmocka_run_group_tests_name("soft_muldiv", tests, bn_setup, bn_teardown);
}
