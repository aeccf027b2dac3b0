/* The translator (src/engine/soft/jit.c) against the host CPU: random blocks of the forms it
 * turns into host code (mov, movzx/movsx, lea, the ALU operations on registers and memory,
 * shifts and rotates by an immediate, inc/dec/not), mixed with instructions it leaves to their
 * handlers (adc, sbb, setcc, cmovcc, bswap) and with forward conditional branches, run natively
 * and on the soft CPU from the same registers, flags and memory, many values per block; every
 * other run starts with an empty soft TLB, so memory accesses take the slow path too.
 *
 * This is what the single-instruction differential test cannot see: which flags a block may
 * skip recording (an instruction whose flags a later one overwrites), a branch that tests the
 * host's flags left by the operation before it (also when that operation went the slow way),
 * and handlers called between host code. Flags
 * the SDM leaves undefined are never read by a generated block (no O conditions after a
 * multi-bit shift or rotate, no AF readers) and not compared at the end. */
#include "soft_bit_native.h"

#define BLOCKS 20000
#define VALUES 8

/* Registers a block may use: RAX, RCX, RDX, RSI, RDI (RSP and RBP are not loaded; RBX points
 * at the data area for the memory forms and is only read). */
static const unsigned regs[] = {0, 1, 2, 6, 7};

struct gen {
	struct bn_enc e;
	bool of_defined; /* OF after the last flag writer is defined */
	bool af_defined;
};

static unsigned pick_reg(void)
{
	return regs[bn_rand() % (sizeof(regs) / sizeof(regs[0]))];
}

static void put32(struct bn_enc *e, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		bn_byte(e, (v >> (8 * i)) & 0xff);
}

static void modrm_rr(struct bn_enc *e, unsigned reg, unsigned rm)
{
	bn_byte(e, 0xc0 | reg << 3 | rm);
}

/* A condition a block may test: none that reads OF (O, L, LE and their negations) when OF is
 * undefined now. */
static unsigned pick_cc(const struct gen *g)
{
	unsigned cc;
	do
		cc = (unsigned)(bn_rand() % 16);
	while (!g->of_defined && (cc < 2 || cc >= 12));
	return cc;
}

/* ModRM + disp8 for [rbx + d], d chosen so an 8-byte access stays within the compared window. */
static void mem_rbx(struct bn_enc *e, unsigned reg)
{
	bn_byte(e, 0x43 | reg << 3);
	bn_byte(e, (unsigned)((int)(bn_rand() % 121) - 64) & 0xff);
}

static void gen_insn(struct gen *g, bool allow_branch);

/* The memory forms (through the inline TLB probe, or its slow path after a flush). */
static void gen_mem(struct gen *g, bool allow_branch)
{
	struct bn_enc *e = &g->e;
	bool w = bn_rand() % 2;
	unsigned r = pick_reg();
	static const unsigned alu_mr[] = {0x01, 0x09, 0x21, 0x29, 0x31, 0x39, 0x85};
	static const unsigned alu_digit[] = {0, 1, 4, 5, 6, 7};
	static const unsigned src8[] = {0, 1, 2, 3, 6, 7};
	bool sets_flags = false;
	switch (bn_rand() % 8) {
	case 0: /* mov r, [m] / mov [m], r */
		bn_prefix(e, w ? 8 : 4, 0);
		bn_byte(e, bn_rand() % 2 ? 0x8b : 0x89);
		mem_rbx(e, r);
		break;
	case 1: /* mov [m], imm32 */
		bn_prefix(e, w ? 8 : 4, 0);
		bn_byte(e, 0xc7);
		mem_rbx(e, 0);
		put32(e, (uint32_t)bn_value(4));
		break;
	case 2: /* op r, [m] (not test) */
		bn_prefix(e, w ? 8 : 4, 0);
		bn_byte(e, alu_mr[bn_rand() % 6] + 2);
		mem_rbx(e, r);
		sets_flags = true;
		break;
	case 3: /* op [m], r */
		bn_prefix(e, w ? 8 : 4, 0);
		bn_byte(e, alu_mr[bn_rand() % 7]);
		mem_rbx(e, r);
		sets_flags = true;
		break;
	case 4: { /* op [m], imm8 / imm32, test [m], imm32 */
		bn_prefix(e, w ? 8 : 4, 0);
		unsigned k = (unsigned)(bn_rand() % 7);
		if (k == 6) {
			bn_byte(e, 0xf7);
			mem_rbx(e, 0);
			put32(e, (uint32_t)bn_value(4));
		} else if (bn_rand() % 2) {
			bn_byte(e, 0x83);
			mem_rbx(e, alu_digit[k]);
			bn_byte(e, bn_value(1) & 0xff);
		} else {
			bn_byte(e, 0x81);
			mem_rbx(e, alu_digit[k]);
			put32(e, (uint32_t)bn_value(4));
		}
		sets_flags = true;
		break;
	}
	case 5: /* movzx / movsx r, byte or word [m]; movsxd r64, [m] */
		if (bn_rand() % 4 == 0) {
			bn_byte(e, 0x48);
			bn_byte(e, 0x63);
		} else {
			bn_prefix(e, w ? 8 : 4, 0);
			bn_byte(e, 0x0f);
			bn_byte(e, (bn_rand() % 2 ? 0xb6 : 0xbe) + bn_rand() % 2);
		}
		mem_rbx(e, r);
		break;
	case 6: /* movzx / movsx r, r8 (AL, CL, DL, BL, DH, BH) or r16 */
		bn_prefix(e, w ? 8 : 4, 0);
		bn_byte(e, 0x0f);
		bn_byte(e, (bn_rand() % 2 ? 0xb6 : 0xbe) + bn_rand() % 2);
		modrm_rr(e, r, src8[bn_rand() % 6]);
		break;
	default: /* a store through a 64-bit register mov after a load: both ways round */
		bn_prefix(e, 8, 0);
		bn_byte(e, 0x8b);
		mem_rbx(e, r);
		bn_prefix(e, 8, 0);
		bn_byte(e, 0x89);
		mem_rbx(e, r);
		break;
	}
	if (sets_flags) {
		g->of_defined = true;
		g->af_defined = false;               /* undefined after the logic operations */
		if (allow_branch && bn_rand() % 2) { /* the jcc that tests the host's flags */
			struct bn_enc *x = &g->e;
			bn_byte(x, 0x70 + pick_cc(g));
			bn_byte(x, 5);
			bn_byte(x, 0xb8 + pick_reg());
			put32(x, (uint32_t)bn_value(4));
		}
	}
}

/* Byte and word forms: registers AL, CL, DL, AH, CH, DH as destinations (BL and BH are RBX's,
 * which stays the data pointer), any byte register as a source; words through 66. */
static void gen_narrow(struct gen *g)
{
	struct bn_enc *e = &g->e;
	static const unsigned dst8[] = {0, 1, 2, 4, 5, 6};
	static const unsigned alu_digit[] = {0, 1, 4, 5, 6, 7};
	bool word = bn_rand() % 2;
	/* sources: any byte register; for words not SP or BP (not loaded), BX allowed */
	unsigned d = word ? pick_reg() : dst8[bn_rand() % 6];
	unsigned s = word ? (bn_rand() % 6 ? pick_reg() : 3) : (unsigned)(bn_rand() % 8);
	if (word)
		bn_byte(e, 0x66);
	switch (bn_rand() % 6) {
	case 0: /* op r, r */
		/* 00 add, 08 or, 10 adc, 18 sbb, 20 and, 28 sub (byte; +1 word), 84/85 test */
		bn_byte(e, (bn_rand() % 7 == 6 ? 0x84u : (unsigned)(bn_rand() % 6) * 8) + word);
		modrm_rr(e, s, d);
		g->of_defined = true;
		g->af_defined = false;
		break;
	case 1: /* op r, imm */
		bn_byte(e, word ? 0x81 : 0x80);
		modrm_rr(e, alu_digit[bn_rand() % 6], d);
		bn_byte(e, bn_value(1) & 0xff);
		if (word)
			bn_byte(e, bn_value(1) & 0xff);
		g->of_defined = true;
		g->af_defined = false;
		break;
	case 2: /* mov r, r / mov r, imm */
		if (bn_rand() % 2) {
			bn_byte(e, word ? 0x89 : 0x88);
			modrm_rr(e, s, d);
		} else {
			bn_byte(e, (word ? 0xb8 : 0xb0) + d);
			bn_byte(e, bn_value(1) & 0xff);
			if (word)
				bn_byte(e, bn_value(1) & 0xff);
		}
		break;
	case 3: { /* mov [m], r / mov r, [m] / op [m], r / op r, [m] */
		static const unsigned alu[] = {0x00, 0x08, 0x20, 0x28, 0x30, 0x38};
		unsigned k = (unsigned)(bn_rand() % 4), op = alu[bn_rand() % 6];
		bn_byte(e, (k == 0 ? 0x88 : k == 1 ? 0x8a : k == 2 ? op : op + 2) + word);
		mem_rbx(e, d);
		if (k >= 2) {
			g->of_defined = true;
			g->af_defined = false;
		}
		break;
	}
	case 4: /* op [m], imm / mov [m], imm */
		if (bn_rand() % 3 == 0) {
			bn_byte(e, word ? 0xc7 : 0xc6);
			mem_rbx(e, 0);
		} else {
			bn_byte(e, word ? 0x81 : 0x80);
			mem_rbx(e, alu_digit[bn_rand() % 6]);
			g->of_defined = true;
			g->af_defined = false;
		}
		bn_byte(e, bn_value(1) & 0xff);
		if (word)
			bn_byte(e, bn_value(1) & 0xff);
		break;
	default: /* inc, dec or not [m] */
		if (bn_rand() % 2) {
			bn_byte(e, word ? 0xff : 0xfe);
			mem_rbx(e, (unsigned)(bn_rand() % 2));
			g->of_defined = true;
		} else {
			bn_byte(e, word ? 0xf7 : 0xf6);
			mem_rbx(e, 2);
		}
		break;
	}
}

static void gen_insn(struct gen *g, bool allow_branch)
{
	struct bn_enc *e = &g->e;
	bool w = bn_rand() % 2;
	unsigned d = pick_reg(), s = pick_reg();
	static const unsigned alu_rr[] = {0x01, 0x09, 0x21, 0x29, 0x31, 0x39, 0x85};
	static const unsigned alu_digit[] = {0, 1, 4, 5, 6, 7};
	static const unsigned shift_digit[] = {0, 1, 4, 5, 7};
	switch (bn_rand() % 23) {
	case 20:
	case 21:
	case 22:
		gen_narrow(g);
		break;
	case 16:
	case 17:
	case 18:
	case 19:
		gen_mem(g, allow_branch);
		break;
	case 0:
	case 1: /* op r, r */
		bn_prefix(e, w ? 8 : 4, 0);
		bn_byte(e, alu_rr[bn_rand() % 7]);
		modrm_rr(e, s, d);
		g->of_defined = true;
		g->af_defined = false;
		break;
	case 2:
	case 3: { /* op r, imm8 / imm32, test r, imm32 */
		bn_prefix(e, w ? 8 : 4, 0);
		unsigned k = (unsigned)(bn_rand() % 7);
		if (k == 6) {
			bn_byte(e, 0xf7);
			modrm_rr(e, 0, d);
			put32(e, (uint32_t)bn_value(4));
		} else if (bn_rand() % 2) {
			bn_byte(e, 0x83);
			modrm_rr(e, alu_digit[k], d);
			bn_byte(e, bn_value(1) & 0xff);
		} else {
			bn_byte(e, 0x81);
			modrm_rr(e, alu_digit[k], d);
			put32(e, (uint32_t)bn_value(4));
		}
		g->of_defined = true;
		g->af_defined = false;
		break;
	}
	case 4: /* mov r, r */
		bn_prefix(e, w ? 8 : 4, 0);
		bn_byte(e, 0x89);
		modrm_rr(e, s, d);
		break;
	case 5: /* mov r, imm32 / imm64 / simm32 */
		switch (bn_rand() % 3) {
		case 0:
			bn_byte(e, 0xb8 + d);
			put32(e, (uint32_t)bn_value(4));
			break;
		case 1: {
			bn_byte(e, 0x48);
			bn_byte(e, 0xb8 + d);
			uint64_t v = bn_value(8);
			put32(e, (uint32_t)v);
			put32(e, (uint32_t)(v >> 32));
			break;
		}
		default:
			bn_byte(e, 0x48);
			bn_byte(e, 0xc7);
			modrm_rr(e, 0, d);
			put32(e, (uint32_t)bn_value(4));
			break;
		}
		break;
	case 6: { /* lea r, [base + index*scale + disp32] (either may be absent) */
		bn_prefix(e, w ? 8 : 4, 0);
		bn_byte(e, 0x8d);
		unsigned kind = (unsigned)(bn_rand() % 3), scale = (unsigned)(bn_rand() % 4);
		if (kind == 0) { /* base + index */
			bn_byte(e, 0x84 | d << 3);
			bn_byte(e, scale << 6 | s << 3 | pick_reg());
		} else if (kind == 1) { /* index only */
			bn_byte(e, 0x04 | d << 3);
			bn_byte(e, scale << 6 | s << 3 | 5);
		} else { /* base only */
			bn_byte(e, 0x80 | d << 3 | s);
			if (s == 4)
				bn_byte(e, 0x24);
		}
		put32(e, (uint32_t)bn_value(4));
		break;
	}
	case 7:
	case 8: { /* shift or rotate r, imm8 (sometimes 0 or past the width) */
		bn_prefix(e, w ? 8 : 4, 0);
		unsigned digit = shift_digit[bn_rand() % 5];
		unsigned count = (unsigned)(bn_rand() % 70);
		bn_byte(e, 0xc1);
		modrm_rr(e, digit, d);
		bn_byte(e, count);
		unsigned masked = count & (w ? 63u : 31u);
		if (masked > 1)
			g->of_defined = false;
		if (masked && digit >= 4)
			g->af_defined = false;
		break;
	}
	case 9: /* inc, dec, not */
		bn_prefix(e, w ? 8 : 4, 0);
		switch (bn_rand() % 3) {
		case 0:
			bn_byte(e, 0xff);
			modrm_rr(e, 0, d);
			g->of_defined = true;
			break;
		case 1:
			bn_byte(e, 0xff);
			modrm_rr(e, 1, d);
			g->of_defined = true;
			break;
		default:
			bn_byte(e, 0xf7);
			modrm_rr(e, 2, d);
			break;
		}
		break;
	case 10: /* adc / sbb r, r: the handler, reading CF */
		bn_prefix(e, w ? 8 : 4, 0);
		bn_byte(e, bn_rand() % 2 ? 0x11 : 0x19);
		modrm_rr(e, s, d);
		g->of_defined = true;
		g->af_defined = true;
		break;
	case 11: /* setcc r8 (AL, CL, DL or DH: not BH, which is in RBX) */
		bn_byte(e, 0x0f);
		bn_byte(e, 0x90 + pick_cc(g));
		modrm_rr(e, 0, d == 7 ? 6 : d);
		break;
	case 12: /* cmovcc r, r */
		bn_prefix(e, w ? 8 : 4, 0);
		bn_byte(e, 0x0f);
		bn_byte(e, 0x40 + pick_cc(g));
		modrm_rr(e, d, s);
		break;
	case 13: /* bswap */
		bn_prefix(e, w ? 8 : 4, 0);
		bn_byte(e, 0x0f);
		bn_byte(e, 0xc8 + d);
		break;
	default: /* jcc over a 5-byte mov (a block ends there) */
		if (!allow_branch) {
			gen_insn(g, false);
			break;
		}
		bn_byte(e, 0x70 + pick_cc(g));
		bn_byte(e, 5);
		bn_byte(e, 0xb8 + d);
		put32(e, (uint32_t)bn_value(4));
		break;
	}
}

/* Random blocks against the host, VALUES sets of registers and flags each. */
static void test_random_blocks(void **state)
{
	(void)state;
	unsigned bad = 0;
	for (unsigned b = 0; b < BLOCKS && bad < 5; b++) {
		struct gen g = {.of_defined = true, .af_defined = true};
		unsigned n = 2 + (unsigned)(bn_rand() % 24);
		for (unsigned i = 0; i < n && g.e.n < 400; i++)
			gen_insn(&g, true);
		struct bn_insn t;
		bn_begin(&t, g.e.b, g.e.n, NULL, 0);
		assert_non_null(t.cpu->jit); /* the translator is what is under test */
		uint64_t flags = FL_CF | FL_PF | FL_ZF | FL_SF | (g.of_defined ? FL_OF : 0) |
				 (g.af_defined ? FL_AF : 0);
		for (unsigned v = 0; v < VALUES; v++) {
			struct bn_state in;
			for (unsigned i = 0; i < BN_NREGS; i++)
				in.gpr[i] = bn_value(8);
			in.gpr[GPR_RBX] = BN_MID;
			in.rflags = bn_flags();
			bn_fill_mem(BN_MEM_NEAR, 0, bn_value(8), 8);
			/* Every other run starts with an empty TLB: each access's first touch of
			 * its page then takes the slow path (the instruction's handler). */
			if (v % 2)
				soft_tlb_flush(t.cpu);
			if (!bn_check(&t, &in, flags, 0xcf, BN_MEM_NEAR)) {
				bad++;
				break;
			}
		}
		bn_end(&t);
	}
	assert_int_equal(bad, 0);
}

/* RIP-relative lea and a branch on the host's flags, both ways, and the RIP each leaves. */
static void test_rip_relative(void **state)
{
	(void)state;
	struct bn_insn t;
	/* lea rax, [rip + 0]; cmp rcx, rdx; jz +5; mov eax, 1; (end) */
	static const uint8_t code[] = {0x48, 0x8d, 0x05, 0,    0, 0, 0, 0x48, 0x39,
				       0xd1, 0x74, 0x05, 0xb8, 1, 0, 0, 0};
	bn_begin(&t, code, sizeof(code), NULL, 0);
	struct soft_cpu *c = t.cpu;
	for (unsigned k = 0; k < 4; k++) {
		memset(c->gpr, 0, sizeof(c->gpr));
		c->gpr[GPR_RCX] = k & 1;
		c->lf.op = LF_NONE;
		c->rip = BN_CODE;
		assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
		assert_int_equal(c->rip, BN_CODE + sizeof(code) + 2);
		assert_int_equal(c->gpr[GPR_RAX], k & 1 ? 1 : BN_CODE + 7);
		assert_true((soft_flags(c) & FL_ZF) == (k & 1 ? 0 : FL_ZF));
	}
	bn_end(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_random_blocks),
	    cmocka_unit_test(test_rip_relative),
	};
	return cmocka_run_group_tests_name("soft_jit", tests, bn_setup, bn_teardown);
}
