/* The soft engine's control transfers against the host CPU: jcc (after materialized and lazy
 * flags), loop/loope/loopne/jrcxz/jecxz with both address sizes, jmp/call/ret in their forms,
 * non-canonical targets, enter/leave with nesting levels and faults, the software interrupts
 * and ud0/ud1/ud2; plus what only the soft CPU shows (int 0x80, int1, retired-instruction
 * counts, the 32-bit forms outside 64-bit mode). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "engine/soft/exec_alu.h"
#include "soft_string_native.h"

#define FMASK      (FL_ARITH | FL_DF)
#define PAGE(n)    SN_PAGE(n)
#define GUARD_PAGE SN_GUARD_PAGE

static const uint64_t edge[] = {0,
				1,
				2,
				0x7f,
				0x80,
				0xff,
				0x8000,
				0xffff,
				0x7fffffff,
				0x80000000,
				0xffffffff,
				0x100000000ull,
				0x7fffffffffffffffull,
				0x8000000000000000ull,
				~0ull};
#define NEDGE (sizeof(edge) / sizeof(edge[0]))

static uint64_t some_value(void)
{
	return sn_rnd() & 1 ? edge[sn_rnd() % NEDGE] : sn_rnd();
}

static void check(const uint8_t *code, size_t len, const struct sn_regs *r, const char *what)
{
	assert_true(sn_check(code, len, r, sn_rnd(), FMASK, NULL, what));
}

/* All sixteen conditions, short and near, on materialized flags and after every producer of
 * lazy flags at every size (the fast paths of each condition), alone and in chains whose
 * second operation takes CF from the first. */
static void test_jcc(void **state)
{
	(void)state;
	static const struct {
		uint8_t len, bytes[7];
		uint32_t undef; /* flags the SDM leaves undefined */
	} ops[] = {
	    {3, {0x48, 0x39, 0xd8}, 0},                   /* cmp rax, rbx */
	    {2, {0x29, 0xd8}, 0},                         /* sub eax, ebx */
	    {3, {0x48, 0x85, 0xd8}, 0},                   /* test rax, rbx */
	    {2, {0x00, 0xd8}, 0},                         /* add al, bl */
	    {3, {0x48, 0xff, 0xc8}, 0},                   /* dec rax */
	    {0, {0}, 0},                                  /* flags as loaded */
	    {2, {0x38, 0xd8}, 0},                         /* cmp al, bl */
	    {3, {0x66, 0x39, 0xd8}, 0},                   /* cmp ax, bx */
	    {2, {0x39, 0xd8}, 0},                         /* cmp eax, ebx */
	    {3, {0x66, 0x29, 0xd8}, 0},                   /* sub ax, bx */
	    {2, {0x38, 0x07}, 0},                         /* cmp byte ptr [rdi], al */
	    {3, {0x66, 0x3b, 0x07}, 0},                   /* cmp ax, word ptr [rdi] */
	    {2, {0x84, 0xd8}, FL_AF},                     /* test al, bl */
	    {3, {0x66, 0x21, 0xd8}, FL_AF},               /* and ax, bx */
	    {2, {0x09, 0xd8}, FL_AF},                     /* or eax, ebx */
	    {2, {0x30, 0xd8}, FL_AF},                     /* xor al, bl */
	    {2, {0x01, 0xd8}, 0},                         /* add eax, ebx */
	    {3, {0x48, 0x01, 0xd8}, 0},                   /* add rax, rbx */
	    {3, {0x66, 0x03, 0x07}, 0},                   /* add ax, word ptr [rdi] */
	    {2, {0x11, 0xd8}, 0},                         /* adc eax, ebx */
	    {2, {0x18, 0xd8}, 0},                         /* sbb al, bl */
	    {3, {0x66, 0xff, 0xc0}, 0},                   /* inc ax */
	    {2, {0xfe, 0xc8}, 0},                         /* dec al */
	    {2, {0xff, 0xc0}, 0},                         /* inc eax */
	    {3, {0x66, 0xff, 0x07}, 0},                   /* inc word ptr [rdi] */
	    {3, {0x48, 0xf7, 0xd8}, 0},                   /* neg rax */
	    {2, {0xf6, 0xd8}, 0},                         /* neg al */
	    {2, {0xd1, 0xe0}, FL_AF},                     /* shl eax, 1 */
	    {2, {0xd0, 0xf8}, FL_AF},                     /* sar al, 1 */
	    {3, {0x66, 0xd1, 0xe8}, FL_AF},               /* shr ax, 1 */
	    {4, {0x38, 0xd8, 0x11, 0xd8}, 0},             /* cmp al, bl; adc eax, ebx */
	    {5, {0x84, 0xd8, 0x66, 0x19, 0xd8}, 0},       /* test al, bl; sbb ax, bx */
	    {5, {0xfe, 0xc8, 0x66, 0xff, 0xc0}, 0},       /* dec al; inc ax */
	    {5, {0x48, 0x01, 0xd8, 0xff, 0xc8}, 0},       /* add rax, rbx; dec eax */
	    {5, {0x48, 0x39, 0xd8, 0xfe, 0x07}, 0},       /* cmp rax, rbx; inc byte ptr [rdi] */
	    {6, {0x66, 0x39, 0xd8, 0x66, 0x11, 0x07}, 0}, /* cmp ax, bx; adc word ptr [rdi], ax */
	};
	char what[64];
	for (unsigned cc = 0; cc < 16; cc++)
		for (unsigned k = 0; k < sizeof(ops) / sizeof(ops[0]); k++)
			for (unsigned i = 0; i < 10; i++) {
				uint8_t code[24];
				size_t n = ops[k].len;
				memcpy(code, ops[k].bytes, n);
				if (i & 1) {
					code[n++] = (uint8_t)(0x70 + cc);
					code[n++] = 5;
				} else {
					code[n++] = 0x0f;
					code[n++] = (uint8_t)(0x80 + cc);
					memcpy(code + n, "\x05\0\0\0", 4);
					n += 4;
				}
				/* mov ecx, 1: skipped if taken */
				memcpy(code + n, "\xb9\x01\0\0\0", 5);
				n += 5;
				struct sn_regs r = sn_random_regs();
				r.gpr[GPR_RAX] = some_value();
				r.gpr[GPR_RBX] = i < 3 ? r.gpr[GPR_RAX] : some_value();
				r.gpr[GPR_RDI] = SN_DATA + sn_rnd() % 64;
				snprintf(what, sizeof(what), "jcc %u after op %u #%u", cc, k, i);
				assert_true(sn_check(code, n, &r, sn_rnd(),
						     FMASK & ~(uint64_t)ops[k].undef, NULL, what));
			}
}

/* The conditions straight from the lazy-flags record (soft_cond_fast) and through soft_cond
 * against those of the flags flags.c computes, for records of every operation and size as the
 * handlers make them, with stale or garbage fields where an operation leaves them (INC/DEC
 * record only their result and CF), and after rotates. */
static void test_cond_fast_paths(void **state)
{
	(void)state;
	static struct soft_cpu c, m;
	static const unsigned kinds[] = {LF_NONE, LF_ADD, LF_ADC, LF_SUB, LF_SBB, LF_LOGIC,
					 LF_INC,  LF_DEC, LF_NEG, LF_SHL, LF_SHR, LF_SAR};
	char what[64];
	for (unsigned it = 0; it < 3000; it++) {
		unsigned kind = kinds[it % (sizeof(kinds) / sizeof(kinds[0]))];
		unsigned si = (unsigned)(sn_rnd() & 3), bits = 8u << si;
		uint64_t mask = bits == 64 ? ~0ull : (1ull << bits) - 1;
		uint64_t a = some_value() & mask, b = some_value() & mask, cin = sn_rnd() & 1, res;
		unsigned n = 1 + (unsigned)(sn_rnd() % (bits - 1)); /* a shift count: 1..bits-1 */
		c.lf.src1 = sn_rnd();
		c.lf.src2 = sn_rnd();
		c.lf.src3 = cin;
		switch (kind) {
		case LF_ADD:
			res = a + b;
			break;
		case LF_ADC:
			res = a + b + cin;
			break;
		case LF_SUB:
			res = a - b;
			break;
		case LF_SBB:
			res = a - b - cin;
			break;
		case LF_LOGIC:
			res = sn_rnd() & 1 ? a & b : a ^ b;
			break;
		case LF_INC:
			res = a + 1;
			break;
		case LF_DEC:
			res = a - 1;
			break;
		case LF_NEG:
			res = -a;
			b = 0;
			break;
		case LF_SHL:
			res = a << n;
			b = n;
			break;
		case LF_SHR:
			res = a >> n;
			b = n;
			break;
		case LF_SAR:
			res = (uint64_t)((int64_t)(a << (64 - bits)) >> (64 - bits + n));
			b = n;
			break;
		default:
			res = 0;
			break;
		}
		if (kind != LF_LOGIC && kind != LF_INC && kind != LF_DEC) {
			c.lf.src1 = a;
			c.lf.src2 = b;
		}
		if ((sn_rnd() & 3) == 0 && kind != LF_SHL && kind != LF_SHR && kind != LF_SAR) {
			/* Bits above the operand size that the record may carry. */
			c.lf.src1 |= sn_rnd() & ~mask;
			c.lf.src2 |= sn_rnd() & ~mask;
			res |= sn_rnd() & ~mask;
		}
		c.lf.op = kind == LF_NONE ? LF_NONE : kind + si;
		c.lf.res = kind == LF_NONE ? sn_rnd() : res;
		c.rflags = RFLAGS_FIXED | (sn_rnd() & FL_ARITH);
		if ((sn_rnd() & 3) == 0) {
			uint64_t r = sn_rnd() & mask;
			lf_rot(&c, sn_rnd() & 1 ? LF_ROL : LF_ROR, bits / 8, r);
		}
		for (unsigned cc = 0; cc < 16; cc++) {
			m = c;
			bool want = soft_cond_flags(soft_flags(&m), cc);
			snprintf(what, sizeof(what), "op %#x cc %u #%u", c.lf.op, cc, it);
			int fast = soft_cond_fast(&c, cc);
			if (fast >= 0 && fast != want)
				fail_msg("%s: fast path %d, flags say %d", what, fast, want);
			/* Where one condition of an op has a fast path, its opposite has one too. */
			assert_int_equal(fast < 0, soft_cond_fast(&c, cc ^ 1) < 0);
			m = c;
			if (soft_cond(&m, cc) != want)
				fail_msg("%s: soft_cond %d, flags say %d", what, !want, want);
		}
		/* After SUB/CMP every condition has its answer at once. */
		if (kind == LF_SUB && c.lf.op == kind + si)
			for (unsigned cc = 0; cc < 16; cc++)
				assert_true(soft_cond_fast(&c, cc) >= 0);
	}
}

/* loop, loope, loopne, jrcxz and (67h) their ECX forms. */
static void test_loop_jrcxz(void **state)
{
	(void)state;
	static const uint64_t counts[] = {0,
					  1,
					  2,
					  3,
					  0x100000000ull,
					  0x100000001ull,
					  0xffffffff00000001ull,
					  0xffffffff00000000ull,
					  0x00000000ffffffffull};
	static const uint8_t opc[] = {0xe2, 0xe1, 0xe0, 0xe3};
	char what[64];
	for (unsigned o = 0; o < 4; o++)
		for (unsigned a32 = 0; a32 < 2; a32++)
			for (unsigned k = 0; k < sizeof(counts) / sizeof(counts[0]); k++)
				for (unsigned eq = 0; eq < 2; eq++) {
					uint8_t code[16];
					size_t n = 0;
					memcpy(code, "\x48\x39\xd8", 3); /* cmp rax, rbx */
					n = 3;
					if (a32)
						code[n++] = 0x67;
					code[n++] = opc[o];
					code[n++] = 5;
					memcpy(code + n, "\xba\x01\0\0\0", 5); /* mov edx, 1 */
					n += 5;
					struct sn_regs r = sn_random_regs();
					r.gpr[GPR_RCX] = counts[k];
					r.gpr[GPR_RBX] = eq ? r.gpr[GPR_RAX] : r.gpr[GPR_RAX] + 1;
					snprintf(what, sizeof(what), "%02x a32=%u rcx=%#llx eq=%u",
						 opc[o], a32, (unsigned long long)counts[k], eq);
					check(code, n, &r, what);
				}
	/* A real loop: sum 1..100 with loop. */
	static const uint8_t sum[] = {0x31, 0xc0,       /* xor eax, eax */
				      0x48, 0x01, 0xc8, /* L: add rax, rcx */
				      0xe2, 0xfb};      /* loop L */
	struct sn_regs r = sn_random_regs();
	r.gpr[GPR_RCX] = 100;
	check(sum, sizeof(sum), &r, "loop sum");
}

/* call/ret, their register, memory and imm16 forms, REX.W ret, jmp forms. */
static void test_call_ret_jmp(void **state)
{
	(void)state;
	/* call L; mov eax, 1; jmp END; L: add rbx, 1; ret; END: */
	static const uint8_t call_rel[] = {0xe8, 0x07, 0x00, 0x00, 0x00, 0xb8, 0x01, 0x00, 0x00,
					   0x00, 0xeb, 0x05, 0x48, 0x83, 0xc3, 0x01, 0xc3};
	struct sn_regs r = sn_random_regs();
	check(call_rel, sizeof(call_rel), &r, "call rel32 / ret");

	/* call rsi; jmp END; L: (at 4) push rax; pop rdx? no: add rbx, 1; ret 16 */
	static const uint8_t call_reg[] = {0xff, 0xd6,             /* call rsi */
					   0xeb, 0x07,             /* jmp END */
					   0x48, 0x83, 0xc3, 0x01, /* L: add rbx, 1 */
					   0xc2, 0x10, 0x00,       /* ret 16 */
					   0x90};
	r = sn_random_regs();
	r.gpr[GPR_RSI] = SN_CODE + 4;
	check(call_reg, sizeof(call_reg), &r, "call r64 / ret imm16");

	/* call [rdi + 8] (the pointer stored first); jmp END; L: rex.w ret */
	r = sn_random_regs();
	r.gpr[GPR_RDI] = PAGE(5) + 3;
	static const uint8_t call_mem2[] = {0x48, 0x89, 0x77, 0x08, /* mov [rdi + 8], rsi */
					    0xff, 0x57, 0x08,       /* call [rdi + 8] */
					    0xeb, 0x02,             /* jmp END */
					    0x48, 0xc3,             /* L: rex.w ret */
					    0x90};
	r.gpr[GPR_RSI] = SN_CODE + 9;
	check(call_mem2, sizeof(call_mem2), &r, "call m64 / rex.w ret");

	/* jmp rel8 / rel32 / r64 / m64 */
	static const uint8_t jmps[] = {0xeb, 0x05,                   /* jmp +5 */
				       0xb8, 0x01, 0x00, 0x00, 0x00, /* mov eax, 1 */
				       0xe9, 0x05, 0x00, 0x00, 0x00, /* jmp +5 */
				       0xb8, 0x02, 0x00, 0x00, 0x00, /* mov eax, 2 */
				       0xff, 0xe6,                   /* jmp rsi (to 24) */
				       0xb8, 0x03, 0x00, 0x00, 0x00, /* mov eax, 3 */
				       0x48, 0x89, 0x77, 0x08,       /* 24: mov [rdi+8], rsi */
				       0x48, 0x83, 0x47, 0x08, 0x0b, /* add qword [rdi+8], 11 */
				       0xff, 0x67, 0x08,             /* jmp [rdi + 8] (to 35) */
				       0xb8, 0x04, 0x00, 0x00, 0x00, 0x90}; /* mov eax, 4 */
	r = sn_random_regs();
	r.gpr[GPR_RSI] = SN_CODE + 24;
	r.gpr[GPR_RDI] = PAGE(6);
	check(jmps, sizeof(jmps), &r, "jmp forms");
}

/* Branches to non-canonical addresses fault on the branch, with nothing changed. */
static void test_noncanonical(void **state)
{
	(void)state;
	static const uint64_t bad[] = {0x0000800000000000ull, 0xffff7fffffffffffull,
				       0x8000000000000000ull};
	static const struct {
		uint8_t code[8];
		size_t len;
		const char *what;
	} forms[] = {
	    {{0xff, 0xe0}, 2, "jmp rax"},
	    {{0xff, 0xd0}, 2, "call rax"},
	    {{0xff, 0x24, 0x24}, 3, "jmp [rsp]"},
	    {{0xff, 0x14, 0x24}, 3, "call [rsp]"},
	    {{0xc3}, 1, "ret"},
	    {{0xc2, 0x08, 0x00}, 3, "ret 8"},
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		for (unsigned f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
			uint8_t code[16];
			/* push rax first so [rsp] holds the target */
			code[0] = 0x50;
			memcpy(code + 1, forms[f].code, forms[f].len);
			struct sn_regs r = sn_random_regs();
			r.gpr[GPR_RAX] = bad[i];
			check(code, forms[f].len + 1, &r, forms[f].what);
			assert_int_equal(sn_last.vector, EXC_GP);
		}
}

/* enter with levels 0..33 and both operand sizes, leave; faults on the final stack pointer,
 * on a push and on a read through RBP. */
static void test_enter_leave(void **state)
{
	(void)state;
	static const unsigned levels[] = {0, 1, 2, 3, 5, 31, 32, 33};
	static const uint64_t rbps[] = {PAGE(34) + 0x208, PAGE(48) + 0x1, PAGE(34) + 0x10000,
					PAGE(41) + 0x10};
	char what[80];
	for (unsigned o16 = 0; o16 < 2; o16++)
		for (unsigned l = 0; l < sizeof(levels) / sizeof(levels[0]); l++)
			for (unsigned b = 0; b < sizeof(rbps) / sizeof(rbps[0]); b++) {
				uint8_t code[16];
				size_t n = 0;
				if (o16)
					code[n++] = 0x66;
				uint16_t alloc = (uint16_t)(sn_rnd() % 0x300);
				code[n++] = 0xc8;
				memcpy(code + n, &alloc, 2);
				n += 2;
				code[n++] = (uint8_t)levels[l];
				if (o16)
					code[n++] = 0x66;
				code[n++] = 0xc9; /* leave */
				struct sn_regs r = sn_random_regs();
				r.gpr[GPR_RSP] = PAGE(30) + 0x800 + (sn_rnd() & 0xf);
				r.gpr[GPR_RBP] = rbps[b];
				snprintf(what, sizeof(what), "enter %u,%u o16=%u rbp=%#llx", alloc,
					 levels[l], o16, (unsigned long long)rbps[b]);
				check(code, n, &r, what);
			}
	/* The final stack pointer lands in the guard page: #PF before anything changes. */
	static const uint8_t big[] = {0xc8, 0x00, 0x20, 0x00};
	struct sn_regs r = sn_random_regs();
	r.gpr[GPR_RSP] = PAGE(GUARD_PAGE + 2) + 0x10;
	check(big, sizeof(big), &r, "enter: final rsp faults");
	assert_int_equal(sn_last.vector, EXC_PF);
	/* Same, 16-bit, one byte short of the guard page. */
	static const uint8_t big16[] = {0x66, 0xc8, 0x0e, 0x20, 0x00};
	r.gpr[GPR_RSP] = PAGE(GUARD_PAGE + 2) + 0xf;
	check(big16, sizeof(big16), &r, "66 enter: final sp crosses");
	/* The push of RBP faults. */
	r.gpr[GPR_RSP] = PAGE(GUARD_PAGE + 1) + 0x4;
	check(big, sizeof(big), &r, "enter: push faults");
	/* The copy of an outer frame pointer reads the guard page. */
	static const uint8_t nest[] = {0xc8, 0x10, 0x00, 0x03};
	r.gpr[GPR_RSP] = PAGE(30) + 0x800;
	r.gpr[GPR_RBP] = PAGE(GUARD_PAGE + 1) + 0x8;
	check(nest, sizeof(nest), &r, "enter: display read faults");
	/* leave with RBP on the guard page. */
	static const uint8_t lv[] = {0xc9};
	r.gpr[GPR_RBP] = PAGE(GUARD_PAGE) + 0x20;
	check(lv, sizeof(lv), &r, "leave faults");
}

/* The software interrupts and the undefined opcodes, as the kernel reports them. */
static void test_interrupts(void **state)
{
	(void)state;
	static const struct {
		uint8_t code[4];
		size_t len;
		int vector;
		const char *what;
	} forms[] = {
	    {{0xcc}, 1, EXC_BP, "int3"},
	    {{0xcd, 0x03}, 2, EXC_BP, "int 3"},
	    {{0xcd, 0x04}, 2, EXC_OF, "int 4"},
	    {{0xcd, 0x21}, 2, EXC_GP, "int 0x21"},
	    {{0xcd, 0x01}, 2, EXC_GP, "int 1"},
	    {{0x0f, 0x0b}, 2, EXC_UD, "ud2"},
	    {{0x0f, 0xb9, 0x00}, 3, EXC_UD, "ud1"},
	    {{0xce}, 1, EXC_UD, "into (64-bit mode)"},
	    {{0xf4}, 1, EXC_GP, "hlt at CPL 3"},
	};
	for (unsigned f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
		uint8_t code[8];
		code[0] = 0x90;
		memcpy(code + 1, forms[f].code, forms[f].len);
		struct sn_regs r = sn_random_regs();
		check(code, forms[f].len + 1, &r, forms[f].what);
		assert_int_equal(sn_last.vector, forms[f].vector);
	}

	/* Soft only: the error code of int n, int 0x80 and int1 (reported after the
	 * instruction), and the count of retired instructions around traps and faults. */
	static const struct {
		uint8_t code[4];
		size_t len;
		int vector;
		uint32_t error;
		bool after;
		uint64_t icount;
	} soft[] = {
	    {{0x90, 0xcd, 0x21}, 3, EXC_GP, 0x21 * 8 + 2, false, 1},
	    {{0x90, 0xcd, 0x80}, 3, 0x80, 0, true, 2},
	    {{0x90, 0xf1}, 2, EXC_DB, 0, true, 2},
	    {{0x90, 0xcc}, 2, EXC_BP, 0, true, 2},
	    {{0x90, 0x0f, 0x0b}, 3, EXC_UD, 0, false, 1},
	};
	for (unsigned f = 0; f < sizeof(soft) / sizeof(soft[0]); f++) {
		memcpy((void *)SN_CODE, soft[f].code, soft[f].len);
		struct soft_mem_ops ops = {.page_ptr = sn_page_ptr};
		struct soft_cpu *c = soft_cpu_create(&ops, true);
		c->rip = SN_CODE;
		assert_int_equal(soft_cpu_run(c), SOFT_EXIT_EXCEPTION);
		assert_int_equal(c->exc_vector, soft[f].vector);
		assert_int_equal(c->exc_error, soft[f].error);
		assert_int_equal(c->rip, soft[f].after ? SN_CODE + soft[f].len : SN_CODE + 1);
		assert_int_equal(c->icount, soft[f].icount);
		soft_cpu_destroy(c);
	}
}

/* Outside 64-bit mode (a 32-bit code segment, soft only): near branches use 32-bit operands,
 * the stack 32-bit slots, loop and jecxz ECX. */
static void test_compat_mode(void **state)
{
	(void)state;
	static const uint8_t code[] = {
	    0xb9, 0x03, 0x00, 0x00, 0x00, /* mov ecx, 3 */
	    0xe8, 0x09, 0x00, 0x00, 0x00, /* call F (19) */
	    0xe2, 0xf9,                   /* loop back to the call (10 - 7 = 5... see below) */
	    0xe3, 0x02,                   /* jecxz +2 (taken: ECX = 0) */
	    0x0f, 0x0b,                   /* ud2 (skipped) */
	    0xf4,                         /* hlt: #GP at CPL 3, the end */
	    0x90, 0x90,                   /* padding */
	    0xc8, 0x08, 0x00, 0x01,       /* F: enter 8, 1 */
	    0x43,                         /* inc ebx */
	    0xc9,                         /* leave */
	    0xc3,                         /* ret */
	};
	memcpy((void *)SN_CODE, code, sizeof(code));
	struct soft_mem_ops ops = {.page_ptr = sn_page_ptr};
	struct soft_cpu *c = soft_cpu_create(&ops, true);
	c->seg[SEG_CS].l = 0;
	c->seg[SEG_CS].db = 1;
	c->rip = SN_CODE;
	c->gpr[GPR_RSP] = PAGE(30);
	c->gpr[GPR_RBP] = PAGE(31);
	c->gpr[GPR_RBX] = 0;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_EXCEPTION);
	assert_int_equal(c->exc_vector, EXC_GP);
	assert_int_equal(c->rip, SN_CODE + 16);
	assert_int_equal(c->gpr[GPR_RBX], 3);
	assert_int_equal(c->gpr[GPR_RCX], 0);
	assert_int_equal(c->gpr[GPR_RSP], PAGE(30));
	assert_int_equal(c->gpr[GPR_RBP], PAGE(31));
	/* The last call pushed a 4-byte return address; enter pushed EBP and the frame. */
	assert_int_equal(*(uint32_t *)(PAGE(30) - 4), SN_CODE + 10);
	assert_int_equal(*(uint32_t *)(PAGE(30) - 8), PAGE(31));
	assert_int_equal(*(uint32_t *)(PAGE(30) - 12), PAGE(30) - 8);
	soft_cpu_destroy(c);
}

int main(void)
{
	sn_rng = 0x2545f4914f6cdd1dull;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_jcc),          cmocka_unit_test(test_cond_fast_paths),
	    cmocka_unit_test(test_loop_jrcxz),   cmocka_unit_test(test_call_ret_jmp),
	    cmocka_unit_test(test_noncanonical), cmocka_unit_test(test_enter_leave),
	    cmocka_unit_test(test_interrupts),   cmocka_unit_test(test_compat_mode),
	};
	return cmocka_run_group_tests_name("soft_control", tests, sn_group_setup,
					   sn_group_teardown);
}
