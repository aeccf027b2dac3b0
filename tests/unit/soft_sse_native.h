/* Runs a snippet of machine code natively on the host and on the soft CPU from the same state
 * (general registers, RFLAGS, the whole FXSAVE image: x87, MXCSR, XMM0-15) and the same memory,
 * and compares what they leave. Shared by the SSE and x87 tests.
 *
 * One fixed mapping holds everything at the same address for both runs: slots for the soft
 * CPU's code, the native runner, its state block, two data pages and an inaccessible page after
 * them (#PF). Natively a generated runner saves the host's registers and FPU state, loads the
 * test state with FXRSTOR64 and plain moves, runs the snippet and stores everything back; a
 * fault arrives as a signal whose frame holds the registers and the FXSAVE image at the fault.
 * The soft CPU runs the snippet followed by a syscall. */
#ifndef FERRY_TEST_SOFT_SSE_NATIVE_H
#define FERRY_TEST_SOFT_SSE_NATIVE_H

#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include "engine/soft/soft.h"

#define FN_BASE   0x30000000ull
#define FN_CODE   FN_BASE /* soft code: FN_SLOTS slots of 64 bytes */
#define FN_SLOTS  256u
#define FN_RUNNER (FN_BASE + 0x4000)
#define FN_STATE  (FN_BASE + 0x5000)
#define FN_DATA   (FN_BASE + 0x8000)
#define FN_DSIZE  0x2000u
#define FN_GUARD  (FN_DATA + FN_DSIZE) /* never accessible */
#define FN_SIZE   (FN_GUARD + 0x1000 - FN_BASE)

/* FXSAVE offsets. */
#define FXO_FCW    0
#define FXO_FSW    2
#define FXO_FTW    4
#define FXO_MXCSR  24
#define FXO_ST(i)  (32 + 16 * (i))
#define FXO_XMM(i) (160 + 16 * (i))

struct fn_state {
	uint64_t gpr[16]; /* GPR_RAX.. GPR_R15 (RSP is not the snippet's) */
	uint64_t rflags;
	uint8_t fx[512] __attribute__((aligned(16)));
};

struct fn_result {
	struct fn_state st;
	int vector;   /* -1: ran to the end */
	uint64_t rip; /* a fault: offset of the faulting instruction in the snippet */
	uint8_t data[FN_DSIZE];
};

/* The native runner's block at FN_STATE. */
struct fn_native {
	uint64_t gpr[16];
	uint64_t rflags, saved_rsp;
	uint8_t pad[48];
	uint8_t fx[512];
	uint8_t host_fx[512];
};
_Static_assert(offsetof(struct fn_native, fx) % 16 == 0, "fxsave area alignment");
_Static_assert(offsetof(struct fn_native, host_fx) % 16 == 0, "fxsave area alignment");

#define FN_N ((struct fn_native *)FN_STATE)

static uint8_t *fn_mem;
static struct soft_cpu *fn_cpu;
static unsigned fn_slot;
static size_t fn_snippet_at; /* offset of the snippet in the runner */
static sigjmp_buf fn_jmp;
static struct fn_result *fn_fault_out;
static struct sigaction fn_saved[4];
static const int fn_signals[4] = {SIGSEGV, SIGFPE, SIGILL, SIGBUS};
/* Bytes of the data area (offsets) the comparison skips: fields this CPU legitimately stores
 * differently from the host (the x87 last-instruction pointers, MXCSR_MASK). */
static uint8_t fn_skip_data[FN_DSIZE];

static void *fn_page_ptr(void *opaque, uint64_t gpa, enum mem_access acc, bool *writable)
{
	(void)opaque;
	(void)acc;
	if (gpa < FN_BASE || gpa >= FN_GUARD)
		return NULL;
	*writable = true;
	return (void *)gpa;
}

static void fn_signal(int sig, siginfo_t *si, void *ucv)
{
	(void)si;
	ucontext_t *uc = ucv;
	const greg_t *g = uc->uc_mcontext.gregs;
	uint64_t rip = (uint64_t)g[REG_RIP];
	if (!fn_fault_out || rip < FN_RUNNER || rip >= FN_RUNNER + 0x1000) {
		signal(sig, SIG_DFL); /* a bug in the test itself: die of it */
		return;
	}
	struct fn_result *r = fn_fault_out;
	static const int map[16] = {REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP,
				    REG_RSI, REG_RDI, REG_R8,  REG_R9,  REG_R10, REG_R11,
				    REG_R12, REG_R13, REG_R14, REG_R15};
	for (int i = 0; i < 16; i++)
		r->st.gpr[i] = (uint64_t)g[map[i]];
	r->st.rflags = (uint64_t)g[REG_EFL];
	memcpy(r->st.fx, uc->uc_mcontext.fpregs, 512);
	r->vector = (int)g[REG_TRAPNO];
	r->rip = rip - (FN_RUNNER + fn_snippet_at);
	siglongjmp(fn_jmp, 1);
}

static int fn_setup(void)
{
	fn_mem = mmap((void *)FN_BASE, FN_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (fn_mem != (void *)FN_BASE)
		return -1;
	mprotect((void *)FN_GUARD, 0x1000, PROT_NONE);
	struct soft_mem_ops ops = {.page_ptr = fn_page_ptr};
	fn_cpu = soft_cpu_create(&ops, true);
	return fn_cpu ? 0 : -1;
}

/* The handlers are installed around each native run only: cmocka installs its own for every
 * test. */
static void fn_handlers(bool install)
{
	if (!install) {
		for (int i = 0; i < 4; i++)
			sigaction(fn_signals[i], &fn_saved[i], NULL);
		return;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = fn_signal;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < 4; i++)
		sigaction(fn_signals[i], &sa, &fn_saved[i]);
}

static void fn_teardown(void)
{
	soft_cpu_destroy(fn_cpu);
	munmap(fn_mem, FN_SIZE);
}

/* [rex] op modrm(00, reg, 100) sib(25) disp32: an absolute memory operand. */
static size_t fn_abs(uint8_t *p, uint8_t rex, const char *op, unsigned reg, uint64_t addr)
{
	size_t n = 0;
	if (rex)
		p[n++] = rex;
	while (*op)
		p[n++] = (uint8_t)*op++;
	p[n++] = (uint8_t)(((reg & 7) << 3) | 4);
	p[n++] = 0x25;
	uint32_t a = (uint32_t)addr;
	memcpy(p + n, &a, 4);
	return n + 4;
}

#define FN_FIELD(f) (FN_STATE + offsetof(struct fn_native, f))

static void fn_build_runner(const uint8_t *code, size_t len)
{
	uint8_t *p = (uint8_t *)FN_RUNNER;
	size_t n = 0;
	static const uint8_t push[] = {0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57};
	memcpy(p, push, sizeof(push));
	n += sizeof(push);
	n += fn_abs(p + n, 0x48, "\x89", 4, FN_FIELD(saved_rsp));   /* mov [], rsp */
	n += fn_abs(p + n, 0x48, "\x0f\xae", 0, FN_FIELD(host_fx)); /* fxsave64 */
	n += fn_abs(p + n, 0x48, "\x0f\xae", 1, FN_FIELD(fx));      /* fxrstor64 */
	n += fn_abs(p + n, 0, "\xff", 6, FN_FIELD(rflags));         /* push qword [] */
	p[n++] = 0x9d;                                              /* popfq */
	for (unsigned r = 0; r < 16; r++)
		if (r != GPR_RSP)
			n += fn_abs(p + n, (uint8_t)(0x48 | (r >= 8 ? 4 : 0)), "\x8b", r,
				    FN_FIELD(gpr) + 8 * r);
	fn_snippet_at = n;
	memcpy(p + n, code, len);
	n += len;
	for (unsigned r = 0; r < 16; r++)
		if (r != GPR_RSP)
			n += fn_abs(p + n, (uint8_t)(0x48 | (r >= 8 ? 4 : 0)), "\x89", r,
				    FN_FIELD(gpr) + 8 * r);
	p[n++] = 0x9c;                                              /* pushfq */
	n += fn_abs(p + n, 0, "\x8f", 0, FN_FIELD(rflags));         /* pop qword [] */
	n += fn_abs(p + n, 0x48, "\x0f\xae", 0, FN_FIELD(fx));      /* fxsave64 */
	n += fn_abs(p + n, 0x48, "\x0f\xae", 1, FN_FIELD(host_fx)); /* fxrstor64 */
	n += fn_abs(p + n, 0x48, "\x8b", 4, FN_FIELD(saved_rsp));   /* mov rsp, [] */
	static const uint8_t pop[] = {0x41, 0x5f, 0x41, 0x5e, 0x41, 0x5d,
				      0x41, 0x5c, 0x5d, 0x5b, 0xc3};
	memcpy(p + n, pop, sizeof(pop));
}

static void fn_run_native(const uint8_t *code, size_t len, const struct fn_state *in,
			  struct fn_result *out)
{
	fn_build_runner(code, len);
	memcpy(FN_N->gpr, in->gpr, sizeof(in->gpr));
	FN_N->rflags = in->rflags;
	memcpy(FN_N->fx, in->fx, 512);
	fn_fault_out = out;
	fn_handlers(true);
	if (sigsetjmp(fn_jmp, 1) == 0) {
		((void (*)(void))FN_RUNNER)();
		memcpy(out->st.gpr, FN_N->gpr, sizeof(out->st.gpr));
		out->st.rflags = FN_N->rflags;
		memcpy(out->st.fx, FN_N->fx, 512);
		out->vector = -1;
		out->rip = 0;
	}
	fn_fault_out = NULL;
	fn_handlers(false);
	memcpy(out->data, (void *)FN_DATA, FN_DSIZE);
}

/* Runs on the soft CPU; prep (may be NULL) adjusts the CPU first (control registers ...). */
static void fn_run_soft(const uint8_t *code, size_t len, const struct fn_state *in,
			struct fn_result *out, void (*prep)(struct soft_cpu *))
{
	struct soft_cpu *c = fn_cpu;
	if (fn_slot == 0)
		soft_cache_flush(c->cache); /* the slots are about to be reused */
	uint64_t at = FN_CODE + 64 * fn_slot;
	fn_slot = (fn_slot + 1) % FN_SLOTS;
	memcpy((void *)at, code, len);
	memcpy((void *)(at + len), "\x0f\x05", 2);
	memcpy(c->gpr, in->gpr, sizeof(c->gpr));
	c->lf.op = LF_NONE;
	c->rflags = in->rflags;
	c->cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
	c->cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
	soft_fxrstor_image(c, in->fx);
	if (prep)
		prep(c);
	c->rip = at;
	enum soft_exit e = soft_cpu_run(c);
	memcpy(out->st.gpr, c->gpr, sizeof(c->gpr));
	out->st.rflags = soft_flags(c);
	soft_fxsave_image(c, out->st.fx);
	out->vector = e == SOFT_EXIT_EXCEPTION ? c->exc_vector : e == SOFT_EXIT_SYSCALL ? -1 : -2;
	out->rip = e == SOFT_EXIT_EXCEPTION ? c->rip - at : 0;
	memcpy(out->data, (void *)FN_DATA, FN_DSIZE);
}

static void fn_hex(const char *what, const uint8_t *p, size_t n)
{
	fprintf(stderr, "  %s:", what);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, " %02x", p[i]);
	fprintf(stderr, "\n");
}

/* The FXSAVE bytes compared: all but FOP/FIP/FDP (6..23; AMD stores them only with an
 * exception pending) and MXCSR_MASK (28..31; AMD adds its misaligned-SSE bit). */
static bool fn_fx_compared(unsigned i)
{
	return i < 416 && !(i >= 6 && i < 24) && !(i >= 28 && i < 32);
}

static unsigned fn_failures;

/* Compares; prints the differences. fmask: the RFLAGS bits compared. */
static bool fn_compare(const char *name, const uint8_t *code, size_t len, const struct fn_state *in,
		       const struct fn_result *n, const struct fn_result *s, uint64_t fmask)
{
	bool ok = n->vector == s->vector && (n->vector < 0 || n->rip == s->rip);
	for (int i = 0; i < 16; i++)
		if (i != GPR_RSP && n->st.gpr[i] != s->st.gpr[i])
			ok = false;
	if ((n->st.rflags ^ s->st.rflags) & fmask)
		ok = false;
	for (unsigned i = 0; i < 512; i++)
		if (fn_fx_compared(i) && n->st.fx[i] != s->st.fx[i])
			ok = false;
	for (unsigned i = 0; i < FN_DSIZE; i++)
		if (!fn_skip_data[i] && n->data[i] != s->data[i])
			ok = false;
	if (ok)
		return true;
	if (++fn_failures > 12)
		return false;
	fprintf(stderr, "MISMATCH %s\n", name);
	fn_hex("code", code, len);
	fprintf(stderr, "  vector native %d soft %d, rip native +%llu soft +%llu\n", n->vector,
		s->vector, (unsigned long long)n->rip, (unsigned long long)s->rip);
	for (int i = 0; i < 16; i++)
		if (i != GPR_RSP && (n->st.gpr[i] != s->st.gpr[i] || in->gpr[i] != n->st.gpr[i]))
			fprintf(stderr, "  gpr%d in %016llx native %016llx soft %016llx\n", i,
				(unsigned long long)in->gpr[i], (unsigned long long)n->st.gpr[i],
				(unsigned long long)s->st.gpr[i]);
	fprintf(stderr, "  rflags in %llx native %llx soft %llx\n", (unsigned long long)in->rflags,
		(unsigned long long)(n->st.rflags & fmask),
		(unsigned long long)(s->st.rflags & fmask));
	for (unsigned i = 0; i < 416; i += 16) {
		bool diff = false;
		for (unsigned k = i; k < i + 16; k++)
			diff |= fn_fx_compared(k) && n->st.fx[k] != s->st.fx[k];
		if (!diff)
			continue;
		fprintf(stderr, "  fx+%u\n", i);
		fn_hex("in    ", in->fx + i, 16);
		fn_hex("native", n->st.fx + i, 16);
		fn_hex("soft  ", s->st.fx + i, 16);
	}
	for (unsigned i = 0; i < FN_DSIZE; i++)
		if (!fn_skip_data[i] && n->data[i] != s->data[i]) {
			unsigned at = i & ~15u;
			fprintf(stderr, "  data+%#x\n", at);
			fn_hex("native", n->data + at, 16);
			fn_hex("soft  ", s->data + at, 16);
			break;
		}
	return false;
}

static struct fn_result fn_nat, fn_sft;
static uint8_t fn_data_in[FN_DSIZE];

/* Runs code both ways from *in with the data area holding fn_data_in. */
static bool fn_check(const char *name, const uint8_t *code, size_t len, const struct fn_state *in,
		     uint64_t fmask)
{
	memcpy((void *)FN_DATA, fn_data_in, FN_DSIZE);
	fn_run_native(code, len, in, &fn_nat);
	memcpy((void *)FN_DATA, fn_data_in, FN_DSIZE);
	fn_run_soft(code, len, in, &fn_sft, NULL);
	return fn_compare(name, code, len, in, &fn_nat, &fn_sft, fmask);
}

/* ---- random numbers and values ---------------------------------------------------------- */

#ifndef FN_SEED
#define FN_SEED 0x9e3779b97f4a7c15ull
#endif
static uint64_t fn_rng = FN_SEED;

static uint64_t fn_rand(void)
{
	fn_rng ^= fn_rng << 13;
	fn_rng ^= fn_rng >> 7;
	fn_rng ^= fn_rng << 17;
	return fn_rng;
}

static unsigned fn_below(unsigned n)
{
	return (unsigned)(fn_rand() % n);
}

static uint32_t fn_f32(void)
{
	static const uint32_t edge[] = {
	    0x00000000, 0x80000000, 0x3f800000, 0xbf800000, 0x00000001, 0x807fffff, 0x00800000,
	    0x7f7fffff, 0xff7fffff, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001,
	    0xffa00000, 0x4b000000, 0x4f000000, 0xcf000000, 0x5f000000, 0xdf000000, 0x3f000000,
	    0x3fc00000, 0x40200000, 0xbfc00000, 0x1c800000, 0x1f800001, 0x7e800000, 0x4effffff,
	    0xcf000001, 0x40400000, 0x3eaaaaab, 0x00400000,
	};
	switch (fn_below(4)) {
	case 0:
	case 1:
		return edge[fn_below(sizeof(edge) / sizeof(edge[0]))];
	case 2: /* moderate magnitudes: ordinary arithmetic */
		return (uint32_t)(fn_rand() & 0x807fffff) | (uint32_t)(110 + fn_below(40)) << 23;
	default:
		return (uint32_t)fn_rand();
	}
}

static uint64_t fn_f64(void)
{
	static const uint64_t edge[] = {
	    0x0000000000000000ull, 0x8000000000000000ull, 0x3ff0000000000000ull,
	    0xbff0000000000000ull, 0x0000000000000001ull, 0x800fffffffffffffull,
	    0x0010000000000000ull, 0x7fefffffffffffffull, 0xffefffffffffffffull,
	    0x7ff0000000000000ull, 0xfff0000000000000ull, 0x7ff8000000000000ull,
	    0xfff8000000000000ull, 0x7ff0000000000001ull, 0xfff4000000000000ull,
	    0x41e0000000000000ull, 0xc1e0000000000000ull, 0x43e0000000000000ull,
	    0xc3e0000000000000ull, 0x3fe0000000000000ull, 0x3ff8000000000000ull,
	    0x4004000000000000ull, 0x41dfffffffffffffull, 0xc1e0000000200000ull,
	    0x2000000000000001ull, 0x1ff0000000000000ull, 0x7fe0000000000000ull,
	    0x47efffffe0000000ull, 0x47f0000000000000ull, 0x3690000000000000ull,
	    0x3fd5555555555555ull, 0x0008000000000000ull,
	};
	switch (fn_below(4)) {
	case 0:
	case 1:
		return edge[fn_below(sizeof(edge) / sizeof(edge[0]))];
	case 2:
		return (fn_rand() & 0x800fffffffffffffull) | (uint64_t)(990 + fn_below(70)) << 52;
	default:
		return fn_rand();
	}
}

enum fn_lanes { FN_INT, FN_PS, FN_PD };

static void fn_fill(uint8_t *p, size_t n, enum fn_lanes lanes)
{
	for (size_t i = 0; i + 8 <= n; i += 8) {
		uint64_t v;
		if (lanes == FN_PS)
			v = fn_f32() | (uint64_t)fn_f32() << 32;
		else if (lanes == FN_PD)
			v = fn_f64();
		else if (fn_below(4) == 0)
			v = fn_below(2) ? 0 : ~0ull;
		else if (fn_below(3) == 0)
			v = fn_rand() & 0x8080808080808080ull; /* lanes at their edges */
		else
			v = fn_rand();
		memcpy(p + i, &v, 8);
	}
}

/* A default FXSAVE image: the FNINIT x87 state, MXCSR as given. */
static void fn_default_fx(uint8_t *fx, uint32_t mxcsr)
{
	memset(fx, 0, 512);
	uint16_t fcw = 0x037f;
	memcpy(fx + FXO_FCW, &fcw, 2);
	memcpy(fx + FXO_MXCSR, &mxcsr, 4);
}

#endif
