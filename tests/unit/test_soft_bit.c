/* The soft engine's bit group (exec_bit.c) against the host CPU: shifts, rotates, double
 * shifts, bit tests, bit scans and counts, every operand size and form, edge and random values.
 *
 * Flags the SDM defines are always compared. Where it leaves a flag or a result undefined the
 * engine does what AMD cores do when that is cheap; those are compared only on an AMD host. */
#include "soft_bit_native.h"

#define ALL_REGS 0xffu
#define CASES    96

static const unsigned sizes[] = {1, 2, 4, 8};

static unsigned fails;

static void expect(bool ok)
{
	if (!ok && ++fails >= 5)
		fail_msg("too many mismatches");
}

static uint64_t amd(uint64_t flags)
{
	return bn_amd ? flags : 0;
}

/* v (sz bytes) with random bits above it in a 64-bit register. */
static uint64_t with_garbage(uint64_t v, unsigned sz)
{
	return sz == 8 ? v : (bn_rand() << 8 * sz) | v;
}

/* Registers for one case: random values everywhere, RBX at the data. */
static void random_regs(struct bn_state *s, unsigned sz)
{
	for (unsigned i = 0; i < BN_NREGS; i++)
		s->gpr[i] = bn_rand() % 3 ? bn_value(8) : with_garbage(bn_value(sz), sz);
	s->gpr[GPR_RBX] = BN_MID;
	s->rflags = bn_flags();
}

/* ---- shifts and rotates (group 2: D0..D3, C0, C1) -------------------------------------------- */

enum { ROL, ROR, RCL, RCR, SHL, SHR, SAL, SAR };

/* The flags to compare after group-2 operation ext on sz bytes with masked count n. */
static uint64_t shift_flags(unsigned ext, unsigned sz, unsigned n)
{
	unsigned bits = sz * 8;
	if (n == 0)
		return FL_ARITH; /* nothing changes */
	if (ext <= RCR) {
		/* The others are kept; OF is defined for a count of 1, AMD computes it always. */
		uint64_t f = FL_ARITH & ~(uint64_t)FL_OF;
		return f | (n == 1 ? FL_OF : amd(FL_OF));
	}
	uint64_t f = FL_SF | FL_ZF | FL_PF; /* AF is undefined: AMD sets it, flags.c clears it */
	if (n < bits || ext == SAR)
		f |= FL_CF; /* SHL/SHR past the width: CF undefined */
	else
		f |= amd(FL_CF);
	if (n == 1)
		f |= FL_OF;
	else if (ext != SHR)
		f |= amd(FL_OF); /* AMD's SHR OF after more than one bit is neither rule */
	return f;
}

static void shift_case(struct bn_insn *t, unsigned ext, unsigned sz, int where, unsigned count,
		       bool by_cl)
{
	struct bn_state s;
	random_regs(&s, sz);
	if (by_cl) {
		static const unsigned edges[] = {0,  1,  2,  7,  8,  9,  15, 16,
						 17, 31, 32, 33, 63, 64, 65};
		count = bn_rand() % 2 ? edges[bn_rand() % 15] : (unsigned)(bn_rand() & 0xff);
		s.gpr[GPR_RCX] = (s.gpr[GPR_RCX] & ~0xffull) | count;
	}
	unsigned n = count & (sz == 8 ? 63 : 31);
	enum bn_mem mem = where < 0 ? BN_MEM_NEAR : BN_MEM_NONE;
	bn_fill_mem(mem, bn_disp(where), bn_value(sz), sz);
	expect(bn_check(t, &s, shift_flags(ext, sz, n), ALL_REGS, mem));
}

static void test_shift_rotate(void **state)
{
	(void)state;
	static const int places[] = {0, 4, BN_M_RBX, BN_M_CROSS, BN_M_RO};
	static const unsigned imms[] = {0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 200};
	for (unsigned ext = 0; ext < 8; ext++)
		for (unsigned si = 0; si < 4; si++)
			for (unsigned pi = 0; pi < 5; pi++) {
				unsigned sz = sizes[si];
				int where = places[pi];
				if (where == 4 && sz != 1)
					continue; /* AH */
				/* by 1 (D0/D1), by CL (D2/D3), by imm8 (C0/C1) */
				for (unsigned form = 0; form < 2 + 16; form++) {
					struct bn_enc e = {.n = 0};
					unsigned imm = form >= 2 ? imms[form - 2] : 1;
					bn_prefix(&e, sz, 0);
					bn_byte(&e, (form == 0   ? 0xd0
						     : form == 1 ? 0xd2
								 : 0xc0) |
							(sz > 1));
					bn_modrm(&e, ext, where);
					if (form >= 2)
						bn_byte(&e, imm);
					struct bn_insn t;
					bn_begin(&t, e.b, e.n, NULL, 0);
					unsigned cases =
					    where == BN_M_RO ? 2 : CASES / (form >= 2 ? 4 : 1);
					for (unsigned k = 0; k < cases; k++)
						shift_case(&t, ext, sz, where, imm, form == 1);
					bn_end(&t);
				}
			}
}

/* ---- shld, shrd ------------------------------------------------------------------------------ */

static void test_double_shift(void **state)
{
	(void)state;
	static const int places[] = {0, BN_M_RBX, BN_M_CROSS, BN_M_RO};
	static const unsigned imms[] = {0, 1, 2, 8, 15, 16, 17, 24, 31, 32, 33, 63, 64};
	for (unsigned right = 0; right < 2; right++)
		for (unsigned si = 1; si < 4; si++)
			for (unsigned pi = 0; pi < 4; pi++)
				for (unsigned form = 0; form < 1 + 13; form++) {
					unsigned sz = sizes[si], bits = sz * 8;
					int where = places[pi];
					struct bn_enc e = {.n = 0};
					bn_prefix(&e, sz, 0);
					bn_byte(&e, 0x0f);
					/* shld A4 (imm) A5 (CL), shrd AC, AD; source RDX */
					bn_byte(&e, (right ? 0xac : 0xa4) | (form == 0));
					bn_modrm(&e, GPR_RDX, where);
					if (form)
						bn_byte(&e, imms[form - 1]);
					struct bn_insn t;
					bn_begin(&t, e.b, e.n, NULL, 0);
					unsigned cases = where == BN_M_RO ? 2
							 : form           ? CASES / 4
									  : CASES;
					for (unsigned k = 0; k < cases; k++) {
						struct bn_state s;
						random_regs(&s, sz);
						unsigned count =
						    form ? imms[form - 1] : bn_rand() & 0xff;
						if (!form)
							s.gpr[GPR_RCX] =
							    (s.gpr[GPR_RCX] & ~0xffull) | count;
						unsigned n = count & (sz == 8 ? 63 : 31);
						enum bn_mem mem =
						    where < 0 ? BN_MEM_NEAR : BN_MEM_NONE;
						bn_fill_mem(mem, bn_disp(where), bn_value(sz), sz);
						uint64_t f = FL_ARITH;
						unsigned regs = ALL_REGS;
						if (n > bits) {
							/* Undefined result and flags (16 bits only). */
							f = amd(FL_ARITH);
							if (!bn_amd) {
								regs &= ~1u;
								mem = BN_MEM_NONE;
							}
						} else if (n > 0) {
							f &= ~(uint64_t)(FL_AF | FL_OF);
							f |= amd(FL_AF) |
							     (n == 1 ? FL_OF : amd(FL_OF));
						}
						expect(bn_check(&t, &s, f, regs, mem));
					}
					bn_end(&t);
				}
}

/* ---- bt, bts, btr, btc ----------------------------------------------------------------------- */

/* A signed bit offset (as sz bytes) for a memory operand at RBX: within the data area, or
 * (far) outside it: the guard pages, the read-only page, unmapped or non-canonical addresses. */
static uint64_t bit_offset(unsigned sz, bool far)
{
	int64_t span = sz == 2 ? 32767 : (int64_t)(BN_DSIZE / 2 - 16) * 8, off;
	off = (int64_t)(bn_rand() % (uint64_t)(2 * span)) - span;
	if (far) {
		static const int64_t fars[] = {
		    (int64_t)(BN_END - BN_MID + 8) * 8,
		    -(int64_t)(BN_MID - BN_BASE) * 8,
		    (int64_t)(BN_RO - BN_MID + 8) * 8,
		    INT32_MAX,
		    INT32_MIN,
		    (int64_t)1 << 40,
		    -((int64_t)1 << 40),
		    (int64_t)1 << 62,
		    INT64_MIN,
		};
		unsigned n = sz == 8 ? 9 : sz == 4 ? 5 : 0;
		off = n ? fars[bn_rand() % n] : bn_rand() % 2 ? 32767 : -32768;
	}
	return (uint64_t)off & (sz == 8 ? ~0ull : (1ull << 8 * sz) - 1);
}

/* The flags after a bit test: CF; ZF is kept; OF, SF, AF, PF are undefined (AMD keeps them). */
#define BT_FLAGS (FL_CF | FL_ZF | amd(FL_OF | FL_SF | FL_AF | FL_PF))

/* The forms of a bit test: the offset in a register or an imm8, the operand in RAX or memory
 * (far: a register offset that leaves the data area), with or without LOCK, with a 32-bit
 * address size (the address wraps at 4 GiB, the bit offset's part too). */
static const struct bt_form {
	bool by_reg, locked, far, a32;
	int where;
} bt_forms[] = {
    {true, false, false, false, GPR_RAX},    {false, false, false, false, GPR_RAX},
    {false, false, false, false, BN_M_RBX},  {false, false, false, false, BN_M_CROSS},
    {false, false, false, false, BN_M_RO},   {true, false, false, false, BN_M_RBX},
    {true, false, false, false, BN_M_CROSS}, {true, false, false, false, BN_M_RO},
    {true, false, true, false, BN_M_RBX},    {false, true, false, false, BN_M_RBX},
    {false, true, false, false, BN_M_CROSS}, {false, true, false, false, BN_M_RO},
    {true, true, false, false, BN_M_RBX},    {true, true, false, false, BN_M_CROSS},
    {true, true, false, false, BN_M_RO},     {true, true, true, false, BN_M_RBX},
    {true, false, false, true, BN_M_RBX},    {true, false, true, true, BN_M_RBX},
};

/* op: 0 bt, 1 bts, 2 btr, 3 btc */
static void bit_test_form(unsigned op, unsigned sz, const struct bt_form *f)
{
	struct bn_enc e = {.n = 0}, native = {.n = 0};
	unsigned imm = (unsigned)bn_rand() & 0xff;
	for (unsigned k = 0; k < 2; k++) {
		/* A locked access that may straddle a cache line is a split lock on the host,
		 * which the kernel may slow down or kill: the host runs it unlocked. */
		struct bn_enc *x = k ? &native : &e;
		if (f->locked && (!k || f->where != BN_M_CROSS))
			bn_byte(x, 0xf0);
		if (f->a32)
			bn_byte(x, 0x67);
		bn_prefix(x, sz, 0);
		bn_byte(x, 0x0f);
		if (f->by_reg) {
			bn_byte(x, 0xa3 | op << 3); /* A3 bt, AB bts, B3 btr, BB btc */
			bn_modrm(x, GPR_RCX, f->where);
		} else {
			bn_byte(x, 0xba);
			bn_modrm(x, 4 + op, f->where);
			bn_byte(x, imm);
		}
	}
	struct bn_insn t;
	bn_begin(&t, e.b, e.n, native.b, native.n);
	enum bn_mem mem = f->where >= 0 ? BN_MEM_NONE : f->by_reg ? BN_MEM_ALL : BN_MEM_NEAR;
	unsigned cases = f->where == BN_M_RO ? 4 : mem == BN_MEM_ALL ? 24 : CASES;
	for (unsigned k = 0; k < cases; k++) {
		struct bn_state s;
		random_regs(&s, sz);
		if (f->by_reg && f->where < 0)
			s.gpr[GPR_RCX] = with_garbage(bit_offset(sz, f->far), sz);
		bn_fill_mem(mem, bn_disp(f->where), bn_value(sz), sz);
		expect(bn_check(&t, &s, BT_FLAGS, ALL_REGS, mem));
	}
	bn_end(&t);
}

static void test_bit_test(void **state)
{
	(void)state;
	for (unsigned op = 0; op < 4; op++)
		for (unsigned si = 1; si < 4; si++)
			for (unsigned i = 0; i < sizeof(bt_forms) / sizeof(bt_forms[0]); i++)
				if (!bt_forms[i].locked || op != 0) /* lock bt is #UD */
					bit_test_form(op, sizes[si], &bt_forms[i]);
}

/* ---- bsf, bsr, tzcnt, lzcnt, popcnt ---------------------------------------------------------- */

static bool host_has(unsigned leaf, unsigned reg, unsigned bit)
{
	unsigned r[4] = {0};
	__get_cpuid(leaf, &r[0], &r[1], &r[2], &r[3]);
	return (r[reg] >> bit) & 1;
}

static void test_scan_count(void **state)
{
	(void)state;
	enum { BSF, BSR, TZCNT, LZCNT, POPCNT };
	bool has_lzcnt = host_has(0x80000001, 2, 5), has_popcnt = host_has(1, 2, 23);
	static const int places[] = {GPR_RCX, BN_M_RBX, BN_M_CROSS};
	for (unsigned op = 0; op < 5; op++) {
		if ((op == LZCNT && !has_lzcnt) || (op == POPCNT && !has_popcnt)) {
			print_message("host without %s: not compared\n",
				      op == LZCNT ? "lzcnt" : "popcnt");
			continue;
		}
		for (unsigned si = 1; si < 4; si++)
			for (unsigned pi = 0; pi < 3; pi++) {
				unsigned sz = sizes[si];
				int where = places[pi];
				static const uint8_t opc[] = {0xbc, 0xbd, 0xbc, 0xbd, 0xb8};
				struct bn_enc e = {.n = 0}, native = {.n = 0};
				/* tzcnt must act as bsf (no BMI1): the host, which may have BMI1,
				 * runs bsf for it. */
				if (op >= LZCNT || op == TZCNT)
					bn_byte(&e, 0xf3);
				if (op >= LZCNT)
					bn_byte(&native, 0xf3);
				bn_prefix(&e, sz, 0);
				bn_prefix(&native, sz, 0);
				bn_byte(&e, 0x0f);
				bn_byte(&native, 0x0f);
				bn_byte(&e, opc[op]);
				bn_byte(&native, opc[op]);
				bn_modrm(&e, GPR_RAX, where);
				bn_modrm(&native, GPR_RAX, where);
				struct bn_insn t;
				bn_begin(&t, e.b, e.n, native.b, native.n);
				enum bn_mem mem = where < 0 ? BN_MEM_NEAR : BN_MEM_NONE;
				for (unsigned k = 0; k < CASES * 2; k++) {
					struct bn_state s;
					random_regs(&s, sz);
					uint64_t src = bn_value(sz);
					if (where >= 0)
						s.gpr[where] = with_garbage(src, sz);
					bn_fill_mem(mem, bn_disp(where), src, sz);
					if (where < 0) /* the value crossing the page */
						memcpy(&src,
						       bn_init + BN_DSIZE / 2 + bn_disp(where), 8);
					src &= sz == 8 ? ~0ull : (1ull << 8 * sz) - 1;
					uint64_t f;
					unsigned regs = ALL_REGS;
					if (op == POPCNT) {
						f = FL_ARITH;
					} else if (op == LZCNT) {
						f = FL_CF | FL_ZF |
						    amd(FL_OF | FL_SF | FL_AF | FL_PF);
					} else {
						f = FL_ZF |
						    amd(FL_CF | FL_OF | FL_SF | FL_AF | FL_PF);
						if (!src && !bn_amd)
							regs &= ~1u; /* the destination */
					}
					expect(bn_check(&t, &s, f, regs, mem));
				}
				bn_end(&t);
			}
	}
}

/* lock bts/btr are atomic: threads that set and clear their own bit of one shared word always
 * find it as they left it. */
#include <pthread.h>

/* L: lock bts [rbx], rcx; jc F; lock btr [rbx], rcx; jnc F; dec rsi; jnz L; syscall
 * F: syscall (with RSI not 0) */
static const uint8_t flip_code[] = {0xf0, 0x48, 0x0f, 0xab, 0x0b, 0x72, 0x0e, 0xf0,
				    0x48, 0x0f, 0xb3, 0x0b, 0x73, 0x07, 0x48, 0xff,
				    0xce, 0x75, 0xed, 0x0f, 0x05, 0x0f, 0x05};

static void *flip_thread(void *arg)
{
	uint64_t *bit = arg;
	struct soft_mem_ops ops = {.page_ptr = bn_page_ptr};
	struct soft_cpu *c = soft_cpu_create(&ops, true);
	if (!c)
		return NULL;
	c->gpr[GPR_RBX] = BN_MID;
	c->gpr[GPR_RCX] = *bit;
	c->gpr[GPR_RSI] = 50000;
	c->rip = BN_CODE;
	*bit = soft_cpu_run(c) == SOFT_EXIT_SYSCALL ? c->gpr[GPR_RSI] : ~0ull;
	soft_cpu_destroy(c);
	return NULL;
}

static void test_locked_atomic(void **state)
{
	(void)state;
	enum { N = 4 };
	pthread_t th[N];
	uint64_t bits[N];
	memcpy((void *)BN_CODE, flip_code, sizeof(flip_code));
	uint64_t *word = (uint64_t *)BN_MID;
	*word = 0xf0f0f0f0f0f0f000ull;
	for (unsigned i = 0; i < N; i++) {
		bits[i] = i * 17 % 64; /* bits 0, 17, 34, 51: in different bytes */
		assert_int_equal(pthread_create(&th[i], NULL, flip_thread, &bits[i]), 0);
	}
	for (unsigned i = 0; i < N; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(bits[i], 0); /* ran to the end, never surprised */
	}
	assert_int_equal(*word, 0xf0f0f0f0f0f0f000ull);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_shift_rotate),  cmocka_unit_test(test_double_shift),
	    cmocka_unit_test(test_bit_test),      cmocka_unit_test(test_scan_count),
	    cmocka_unit_test(test_locked_atomic),
	};
	return cmocka_run_group_tests_name("soft_bit", tests, bn_setup, bn_teardown);
}
