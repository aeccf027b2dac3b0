/* For the unit tests of the soft engine's bit and muldiv groups: runs one instruction on the
 * soft CPU and natively on the host from the same registers, flags and memory, many times over
 * with different values, and compares the two.
 *
 * An instruction may use RAX, RCX, RDX, RBX, RSI and RDI (the others are not loaded). Its memory
 * operand lives in one fixed mapping that both runs use at the same address: the soft CPU's
 * memory backend maps it one to one. Each encoding is decoded once by the soft CPU and then run
 * for every set of values; natively the instruction is copied into an executable page and
 * called, ending with a ret. A fault arrives natively as a signal and on the soft CPU as an
 * exception exit: both become a vector. */
#ifndef FERRY_TEST_SOFT_BIT_NATIVE_H
#define FERRY_TEST_SOFT_BIT_NATIVE_H

#include <cpuid.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "engine/soft/soft.h"

#define BN_BASE   0x30000000ull
#define BN_CODE   (BN_BASE + 0x1000) /* the soft CPU's code page */
#define BN_DATA   (BN_BASE + 0x2000) /* data: 4 pages, RBX points at the middle */
#define BN_DSIZE  0x4000u
#define BN_MID    (BN_DATA + BN_DSIZE / 2)
#define BN_RO     (BN_DATA + BN_DSIZE)        /* a read-only page */
#define BN_END    (BN_RO + 0x1000)            /* a guard page follows, unmapped for both */
#define BN_MAPLEN (BN_END + 0x1000 - BN_BASE) /* the first page is a guard too */

#define BN_NREGS  8 /* RAX..RDI; RSP and RBP are left alone */

struct bn_state {
	uint64_t gpr[BN_NREGS]; /* GPR_RAX order */
	uint64_t rflags;
	int vector; /* -1: no exception */
};

struct bn_insn {
	uint8_t soft[512], native[512];
	unsigned slen, nlen;
	struct soft_cpu *cpu;
};

static uint8_t *bn_ncode; /* the native code page */
static struct soft_cpu *bn_cpu;
static bool bn_amd; /* the host is AMD: compare what the engine takes from AMD too */
static sigjmp_buf bn_jmp;
static uint8_t bn_init[BN_DSIZE], bn_native_mem[BN_DSIZE];

/* Loads the registers and flags from *s, calls code, stores them back. */
void bn_enter(struct bn_state *s, const void *code);
__asm__(".text\n"
	".globl bn_enter\n"
	".type bn_enter, @function\n"
	"bn_enter:\n"
	"	push %rbx\n"
	"	push %rbp\n"
	"	push %r14\n"
	"	push %r15\n"
	"	mov %rdi, %r15\n"
	"	mov %rsi, %r14\n"
	"	mov 0(%r15), %rax\n"
	"	mov 8(%r15), %rcx\n"
	"	mov 16(%r15), %rdx\n"
	"	mov 24(%r15), %rbx\n"
	"	mov 48(%r15), %rsi\n"
	"	mov 56(%r15), %rdi\n"
	"	pushq 64(%r15)\n"
	"	popfq\n"
	"	call *%r14\n"
	"	pushfq\n"
	"	popq 64(%r15)\n"
	"	mov %rax, 0(%r15)\n"
	"	mov %rcx, 8(%r15)\n"
	"	mov %rdx, 16(%r15)\n"
	"	mov %rbx, 24(%r15)\n"
	"	mov %rsi, 48(%r15)\n"
	"	mov %rdi, 56(%r15)\n"
	"	cld\n"
	"	pop %r15\n"
	"	pop %r14\n"
	"	pop %rbp\n"
	"	pop %rbx\n"
	"	ret\n"
	".size bn_enter, .-bn_enter\n");

static void bn_signal(int sig, siginfo_t *si, void *uc)
{
	(void)si;
	(void)uc;
	siglongjmp(bn_jmp, sig);
}

static void *bn_page_ptr(void *opaque, uint64_t gpa, enum mem_access acc, bool *writable)
{
	(void)opaque;
	(void)acc;
	if (gpa < BN_CODE || gpa >= BN_END)
		return NULL;
	*writable = gpa < BN_RO;
	return (void *)gpa;
}

static int bn_setup(void **state)
{
	(void)state;
	uint8_t *m = mmap((void *)BN_BASE, BN_MAPLEN, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (m != (void *)BN_BASE)
		return -1;
	if (mprotect((void *)BN_CODE, BN_RO - BN_CODE, PROT_READ | PROT_WRITE) ||
	    mprotect((void *)BN_RO, 0x1000, PROT_READ))
		return -1;
	bn_ncode = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE | PROT_EXEC,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (bn_ncode == MAP_FAILED)
		return -1;
	unsigned a = 0, b = 0, c = 0, d = 0;
	__get_cpuid(0, &a, &b, &c, &d);
	bn_amd = b == 0x68747541; /* "Auth"enticAMD */
	return 0;
}

static int bn_teardown(void **state)
{
	(void)state;
	soft_cpu_destroy(bn_cpu);
	bn_cpu = NULL;
	munmap((void *)BN_BASE, BN_MAPLEN);
	munmap(bn_ncode, 0x1000);
	return 0;
}

/* ---- random values ------------------------------------------------------------------------- */

static uint64_t bn_rng = 0x9e3779b97f4a7c15ull;

static uint64_t bn_rand(void)
{
	bn_rng ^= bn_rng << 13;
	bn_rng ^= bn_rng >> 7;
	bn_rng ^= bn_rng << 17;
	return bn_rng;
}

/* A value of sz bytes: often an edge (0, 1, the sign boundary, all ones ...), else random
 * with a random number of significant bits. */
static uint64_t bn_value(unsigned sz)
{
	unsigned bits = sz * 8;
	uint64_t mask = sz >= 8 ? ~0ull : (1ull << bits) - 1, sb = 1ull << (bits - 1);
	switch (bn_rand() % 16) {
	case 0:
		return 0;
	case 1:
		return 1;
	case 2:
		return mask;
	case 3:
		return sb;
	case 4:
		return sb - 1;
	case 5:
		return sb + 1;
	case 6:
		return (0x5555555555555555ull ^ (bn_rand() & 1 ? mask : 0)) & mask;
	case 7:
		return (1ull << (bn_rand() % bits)) & mask;
	case 8:
		return bn_rand() & (mask >> (bn_rand() % bits));
	case 9:
		return ~(bn_rand() & (mask >> (bn_rand() % bits))) & mask;
	default:
		return bn_rand() & mask;
	}
}

static uint64_t bn_flags(void)
{
	return (bn_rand() & FL_ARITH) | 0x202;
}

/* ---- running --------------------------------------------------------------------------------- */

/* cmocka puts its own handlers in place for every test: ours go back for every encoding. */
static void bn_catch_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = bn_signal;
	sa.sa_flags = SA_SIGINFO;
	static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
	for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		assert_int_equal(sigaction(sigs[i], &sa, NULL), 0);
}

/* Prepares an encoding: soft is what the soft CPU runs, native (NULL: the same) what the host
 * runs in its place, for instructions whose meaning differs on the host (tzcnt with BMI1). */
static void bn_begin(struct bn_insn *t, const uint8_t *soft, unsigned slen, const uint8_t *native,
		     unsigned nlen)
{
	memcpy(t->soft, soft, slen);
	t->slen = slen;
	if (!native) {
		native = soft;
		nlen = slen;
	}
	memcpy(t->native, native, nlen);
	t->nlen = nlen;
	uint8_t *code = (uint8_t *)BN_CODE;
	memcpy(code, soft, slen);
	code[slen] = 0x0f; /* syscall: the end of the run */
	code[slen + 1] = 0x05;
	memcpy(bn_ncode, native, nlen);
	bn_ncode[nlen] = 0xc3; /* ret */
	if (!bn_cpu) {
		struct soft_mem_ops ops = {.page_ptr = bn_page_ptr};
		bn_cpu = soft_cpu_create(&ops, true);
		assert_non_null(bn_cpu);
	}
	/* One CPU for all encodings (making one is the expensive part): the code it decoded
	 * from the previous one goes. */
	soft_cache_flush(bn_cpu->cache);
	t->cpu = bn_cpu;
	bn_catch_signals();
}

static void bn_end(struct bn_insn *t)
{
	t->cpu = NULL;
}

static int bn_vector_of(int sig)
{
	return sig == SIGFPE ? EXC_DE : sig == SIGILL ? EXC_UD : EXC_PF;
}

static void bn_run_native(struct bn_state *s)
{
	int sig = sigsetjmp(bn_jmp, 1);
	if (sig) {
		s->vector = bn_vector_of(sig);
		return;
	}
	s->vector = -1;
	bn_enter(s, bn_ncode);
}

static void bn_run_soft(struct bn_insn *t, struct bn_state *s)
{
	struct soft_cpu *c = t->cpu;
	memcpy(c->gpr, s->gpr, sizeof(s->gpr));
	c->rflags = s->rflags;
	c->lf.op = LF_NONE;
	c->rip = BN_CODE;
	enum soft_exit e = soft_cpu_run(c);
	memcpy(s->gpr, c->gpr, sizeof(s->gpr));
	s->rflags = soft_flags(c);
	if (e == SOFT_EXIT_SYSCALL) {
		s->vector = -1;
		assert_int_equal(c->rip, BN_CODE + t->slen + 2);
	} else {
		assert_int_equal(e, SOFT_EXIT_EXCEPTION);
		assert_int_equal(c->rip, BN_CODE);
		/* Linux reports #GP (non-canonical) as SIGSEGV too. */
		s->vector = c->exc_vector == EXC_GP ? EXC_PF : c->exc_vector;
	}
}

static void bn_print_bytes(const char *what, const uint8_t *b, unsigned n)
{
	print_error("%s:", what);
	for (unsigned i = 0; i < n; i++)
		print_error(" %02x", b[i]);
	print_error("\n");
}

/* How much of the data area an instruction may touch: none, a window around RBX, all of it. */
enum bn_mem { BN_MEM_NONE, BN_MEM_NEAR, BN_MEM_ALL };
#define BN_NEAR 64u

/* One comparison. in: registers and flags before; the data area starts as bn_init (the test
 * fills it). flags: the arithmetic flags to compare; regs: bit i set compares GPR i; mem: the
 * part of the data area to set up and compare. Returns false (after printing what differs) on
 * a mismatch. */
static bool bn_check(struct bn_insn *t, const struct bn_state *in, uint64_t flags, unsigned regs,
		     enum bn_mem mem)
{
	struct bn_state n = *in, s = *in;
	unsigned off = mem == BN_MEM_ALL ? 0 : BN_DSIZE / 2 - BN_NEAR;
	unsigned len = mem == BN_MEM_ALL ? BN_DSIZE : mem == BN_MEM_NEAR ? 2 * BN_NEAR : 0;
	uint8_t *data = (uint8_t *)BN_DATA;
	memcpy(data + off, bn_init + off, len);
	bn_run_native(&n);
	memcpy(bn_native_mem + off, data + off, len);
	memcpy(data + off, bn_init + off, len);
	bn_run_soft(t, &s);
	bool ok = n.vector == s.vector;
	if (ok && n.vector < 0) {
		ok = ((n.rflags ^ s.rflags) & flags) == 0;
		for (unsigned i = 0; i < BN_NREGS; i++)
			if ((regs >> i & 1) && n.gpr[i] != s.gpr[i])
				ok = false;
		if (memcmp(bn_native_mem + off, data + off, len))
			ok = false;
	}
	if (ok)
		return true;
	bn_print_bytes("soft encoding", t->soft, t->slen);
	bn_print_bytes("native encoding", t->native, t->nlen);
	print_error("in:     rax=%016llx rcx=%016llx rdx=%016llx rbx=%016llx rflags=%03llx\n",
		    (unsigned long long)in->gpr[0], (unsigned long long)in->gpr[1],
		    (unsigned long long)in->gpr[2], (unsigned long long)in->gpr[3],
		    (unsigned long long)(in->rflags & FL_ARITH));
	if (mem != BN_MEM_NONE) {
		uint64_t v;
		memcpy(&v, bn_init + BN_DSIZE / 2 - 8, 8);
		print_error("        [rbx-8]=%016llx", (unsigned long long)v);
		memcpy(&v, bn_init + BN_DSIZE / 2, 8);
		print_error(" [rbx]=%016llx\n", (unsigned long long)v);
	}
	const struct bn_state *o[2] = {&n, &s};
	for (unsigned k = 0; k < 2; k++)
		print_error("%s rax=%016llx rcx=%016llx rdx=%016llx rbx=%016llx rflags=%03llx "
			    "(compared %03llx) exc=%d\n",
			    k ? "soft:  " : "native:", (unsigned long long)o[k]->gpr[0],
			    (unsigned long long)o[k]->gpr[1], (unsigned long long)o[k]->gpr[2],
			    (unsigned long long)o[k]->gpr[3],
			    (unsigned long long)(o[k]->rflags & FL_ARITH),
			    (unsigned long long)flags, o[k]->vector);
	for (unsigned i = off; i < off + len; i++)
		if (bn_native_mem[i] != data[i])
			print_error("memory differs at [rbx%+d]: native %02x soft %02x\n",
				    (int)i - (int)(BN_DSIZE / 2), bn_native_mem[i], data[i]);
	return false;
}

/* Fills the data area (mem says how much of it) with random bytes and puts v (sz bytes) at
 * RBX's address plus disp. */
static inline void bn_fill_mem(enum bn_mem mem, int disp, uint64_t v, unsigned sz)
{
	unsigned off = mem == BN_MEM_ALL ? 0 : BN_DSIZE / 2 - BN_NEAR;
	unsigned len = mem == BN_MEM_ALL ? BN_DSIZE : mem == BN_MEM_NEAR ? 2 * BN_NEAR : 0;
	for (unsigned i = off; i < off + len; i += 8) {
		uint64_t r = bn_rand();
		memcpy(bn_init + i, &r, 8);
	}
	if (mem != BN_MEM_NONE && disp > -(int)BN_NEAR && disp < (int)BN_NEAR - 8)
		memcpy(bn_init + BN_DSIZE / 2 + disp, &v, sz);
}

/* ---- encodings ------------------------------------------------------------------------------- */

struct bn_enc {
	uint8_t b[512]; /* test_soft_jit encodes whole blocks */
	unsigned n;
};

static void bn_byte(struct bn_enc *e, unsigned b)
{
	e->b[e->n++] = (uint8_t)b;
}

/* The prefixes of operand size sz: 66 for 16 bits, REX.W for 64 (rex: other REX bits; emitted
 * when not 0 even for other sizes). */
static inline void bn_prefix(struct bn_enc *e, unsigned sz, unsigned rex)
{
	if (sz == 2)
		bn_byte(e, 0x66);
	if (sz == 8)
		rex |= 0x48;
	if (rex)
		bn_byte(e, rex | 0x40);
}

/* Where an operand is: a register (0..7, the ModRM rm field; 4 is AH for a byte operand) or
 * memory at RBX, at RBX - 2 (across a page boundary) or on the read-only page. */
enum { BN_M_RBX = -1, BN_M_CROSS = -2, BN_M_RO = -3 };

static inline int bn_disp(int where)
{
	return where == BN_M_CROSS ? -2 : where == BN_M_RO ? (int)(BN_RO - BN_MID) : 0;
}

/* ModRM (and displacement) for reg field reg and an operand at where. */
static inline void bn_modrm(struct bn_enc *e, unsigned reg, int where)
{
	if (where >= 0) {
		bn_byte(e, 0xc0 | reg << 3 | (unsigned)where);
	} else if (where == BN_M_RBX) {
		bn_byte(e, 0x03 | reg << 3);
	} else if (where == BN_M_CROSS) {
		bn_byte(e, 0x43 | reg << 3);
		bn_byte(e, 0xfe);
	} else {
		uint32_t d = (uint32_t)(BN_RO - BN_MID);
		bn_byte(e, 0x83 | reg << 3);
		for (unsigned i = 0; i < 4; i++)
			bn_byte(e, d >> (8 * i));
	}
}

#endif
