/* Runs a snippet of machine code both natively on the host CPU and on the soft CPU, from the
 * same registers and the same memory, so a unit test can compare the two. Shared by the soft
 * engine's control, string and misc tests.
 *
 * The memory is one fixed mapping below 4 GiB (so 32-bit address-size forms reach it) that
 * both runs use at the same address; a test marks pages inaccessible or read-only with
 * sn_protect() and both the host mapping and the soft CPU's memory backend follow. Natively
 * the snippet is entered with every general register and RFLAGS loaded from struct sn_regs
 * and ends with a jump back to the harness, which stores them again; a fault arrives as a
 * signal whose handler copies the registers from the signal frame (on an alternate stack, as
 * the snippet's RSP may point anywhere) and resumes the harness. On the soft CPU the snippet
 * ends with a syscall instead. */
#ifndef FERRY_TEST_SOFT_STRING_NATIVE_H
#define FERRY_TEST_SOFT_STRING_NATIVE_H

#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include "engine/soft/soft.h"

#define SN_BASE  0x20000000ull
#define SN_PAGES 64u
#define SN_SIZE  (SN_PAGES * 0x1000ull)
#define SN_CODE  SN_BASE /* the first two pages hold the snippet */
#define SN_DATA  (SN_BASE + 0x2000)

/* The outcome of one run. sig is 0 when the snippet ran to its end. */
struct sn_regs {
	uint64_t gpr[16]; /* GPR_RAX.. GPR_R15 order */
	uint64_t rflags;
	uint64_t rip;
	int sig;        /* native: the signal; soft: the one Linux would send for the vector */
	int vector;     /* the exception vector (trap number) when sig != 0 */
	uint32_t error; /* its error code */
	uint64_t addr;  /* #PF: the faulting address */
};

enum { SN_RW, SN_NONE, SN_RO };
static uint8_t sn_prot[SN_PAGES];

/* Used from the assembly below, so not static. */
uint64_t sn_host_rsp, sn_scratch, sn_target;
struct sn_regs *sn_state;
void sn_enter(struct sn_regs *r, uint64_t code);
void sn_exit(void);
void sn_resume(void);

__asm__(".text\n"
	".globl sn_enter\n"
	".type sn_enter, @function\n"
	"sn_enter:\n"
	"	push %rbx\n"
	"	push %rbp\n"
	"	push %r12\n"
	"	push %r13\n"
	"	push %r14\n"
	"	push %r15\n"
	"	mov %rsp, sn_host_rsp(%rip)\n"
	"	mov %rdi, sn_state(%rip)\n"
	"	mov %rsi, sn_target(%rip)\n"
	"	pushq 128(%rdi)\n"
	"	popfq\n"
	"	mov 0(%rdi), %rax\n"
	"	mov 8(%rdi), %rcx\n"
	"	mov 16(%rdi), %rdx\n"
	"	mov 24(%rdi), %rbx\n"
	"	mov 40(%rdi), %rbp\n"
	"	mov 48(%rdi), %rsi\n"
	"	mov 64(%rdi), %r8\n"
	"	mov 72(%rdi), %r9\n"
	"	mov 80(%rdi), %r10\n"
	"	mov 88(%rdi), %r11\n"
	"	mov 96(%rdi), %r12\n"
	"	mov 104(%rdi), %r13\n"
	"	mov 112(%rdi), %r14\n"
	"	mov 120(%rdi), %r15\n"
	"	mov 32(%rdi), %rsp\n"
	"	mov 56(%rdi), %rdi\n"
	"	jmp *sn_target(%rip)\n"
	".globl sn_exit\n"
	"sn_exit:\n"
	"	mov %rax, sn_scratch(%rip)\n"
	"	mov sn_state(%rip), %rax\n"
	"	mov %rcx, 8(%rax)\n"
	"	mov %rdx, 16(%rax)\n"
	"	mov %rbx, 24(%rax)\n"
	"	mov %rsp, 32(%rax)\n"
	"	mov %rbp, 40(%rax)\n"
	"	mov %rsi, 48(%rax)\n"
	"	mov %rdi, 56(%rax)\n"
	"	mov %r8, 64(%rax)\n"
	"	mov %r9, 72(%rax)\n"
	"	mov %r10, 80(%rax)\n"
	"	mov %r11, 88(%rax)\n"
	"	mov %r12, 96(%rax)\n"
	"	mov %r13, 104(%rax)\n"
	"	mov %r14, 112(%rax)\n"
	"	mov %r15, 120(%rax)\n"
	"	mov sn_host_rsp(%rip), %rsp\n"
	"	pushfq\n"
	"	popq 128(%rax)\n"
	"	mov sn_scratch(%rip), %rcx\n"
	"	mov %rcx, 0(%rax)\n"
	"	cld\n"
	".globl sn_resume\n"
	"sn_resume:\n"
	"	pop %r15\n"
	"	pop %r14\n"
	"	pop %r13\n"
	"	pop %r12\n"
	"	pop %rbp\n"
	"	pop %rbx\n"
	"	ret\n"
	".size sn_enter, .-sn_enter\n");

static const int sn_greg[16] = {REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP,
				REG_RSI, REG_RDI, REG_R8,  REG_R9,  REG_R10, REG_R11,
				REG_R12, REG_R13, REG_R14, REG_R15};

static void sn_signal(int sig, siginfo_t *si, void *ucv)
{
	ucontext_t *uc = ucv;
	greg_t *g = uc->uc_mcontext.gregs;
	struct sn_regs *r = sn_state;
	if (!r || (uint64_t)g[REG_RIP] - SN_BASE >= SN_SIZE) {
		/* Not from a snippet: a real crash of the test. */
		signal(sig, SIG_DFL);
		return;
	}
	for (unsigned i = 0; i < 16; i++)
		r->gpr[i] = (uint64_t)g[sn_greg[i]];
	r->rip = (uint64_t)g[REG_RIP];
	r->rflags = (uint64_t)g[REG_EFL];
	r->sig = sig;
	r->vector = (int)g[REG_TRAPNO];
	r->error = (uint32_t)g[REG_ERR];
	r->addr = (uint64_t)si->si_addr;
	g[REG_RIP] = (greg_t)(uintptr_t)sn_resume;
	g[REG_RSP] = (greg_t)sn_host_rsp;
	g[REG_EFL] &= ~(greg_t)(FL_DF | FL_TF | (1u << 18));
}

static const int sn_sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE};
#define SN_NSIGS (sizeof(sn_sigs) / sizeof(sn_sigs[0]))

/* Maps the memory and sets up the signal stack; false on failure. */
static bool sn_setup(void)
{
	void *m = mmap((void *)SN_BASE, SN_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (m != (void *)SN_BASE)
		return false;
	static uint8_t altstack[1 << 16];
	stack_t ss = {.ss_sp = altstack, .ss_size = sizeof(altstack)};
	return sigaltstack(&ss, NULL) == 0;
}

/* The handlers are ours only while a snippet runs: the test framework has its own. */
static void sn_handlers(bool install, struct sigaction *saved)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = sn_signal;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
	for (unsigned i = 0; i < SN_NSIGS; i++)
		sigaction(sn_sigs[i], install ? &sa : &saved[i], install ? &saved[i] : NULL);
}

static void sn_teardown(void)
{
	munmap((void *)SN_BASE, SN_SIZE);
}

/* Page i of the mapping (from SN_BASE) becomes accessible, inaccessible or read-only. */
static void sn_protect(unsigned page, int prot)
{
	sn_prot[page] = (uint8_t)prot;
	int p = prot == SN_NONE ? PROT_NONE
		: prot == SN_RO ? PROT_READ
				: PROT_READ | PROT_WRITE | PROT_EXEC;
	mprotect((void *)(SN_BASE + page * 0x1000ull), 0x1000, p);
}

static void sn_unprotect_all(void)
{
	for (unsigned i = 0; i < SN_PAGES; i++)
		if (sn_prot[i] != SN_RW)
			sn_protect(i, SN_RW);
}

static void *sn_page_ptr(void *opaque, uint64_t gpa, enum mem_access acc, bool *writable)
{
	(void)opaque;
	(void)acc;
	if (gpa < SN_BASE || gpa >= SN_BASE + SN_SIZE)
		return NULL;
	unsigned page = (unsigned)((gpa - SN_BASE) >> 12);
	if (sn_prot[page] == SN_NONE)
		return NULL;
	*writable = sn_prot[page] == SN_RW;
	return (void *)(gpa & ~0xfffull);
}

/* Puts code at SN_CODE followed by the native return stub. */
static void sn_put_native(const uint8_t *code, size_t len)
{
	uint8_t *p = (uint8_t *)SN_CODE;
	memcpy(p, code, len);
	static const uint8_t jmp_abs[] = {0xff, 0x25, 0, 0, 0, 0}; /* jmp [rip + 0] */
	memcpy(p + len, jmp_abs, sizeof(jmp_abs));
	uint64_t target = (uint64_t)(uintptr_t)sn_exit;
	memcpy(p + len + sizeof(jmp_abs), &target, 8);
}

/* Runs code natively from r's registers; r gets the result. */
static void sn_run_native(struct sn_regs *r, const uint8_t *code, size_t len)
{
	sn_put_native(code, len);
	__builtin___clear_cache((char *)SN_CODE, (char *)SN_CODE + len + 14);
	r->sig = 0;
	r->vector = 0;
	r->error = 0;
	r->addr = 0;
	struct sigaction saved[SN_NSIGS];
	sn_handlers(true, saved);
	sn_state = r;
	sn_enter(r, SN_CODE);
	sn_state = NULL;
	sn_handlers(false, saved);
	if (!r->sig)
		r->rip = SN_CODE + len;
}

/* The signal Linux sends a process for an exception vector. */
static int sn_signal_of(int vector)
{
	switch (vector) {
	case EXC_DE:
		return SIGFPE;
	case EXC_DB:
	case EXC_BP:
		return SIGTRAP;
	case EXC_UD:
		return SIGILL;
	default:
		return SIGSEGV;
	}
}

/* Runs code on a new soft CPU from r's registers; r gets the result. prep, if not NULL, may
 * adjust the CPU before it runs. */
static void sn_run_soft(struct sn_regs *r, const uint8_t *code, size_t len,
			void (*prep)(struct soft_cpu *c))
{
	uint8_t *p = (uint8_t *)SN_CODE;
	memcpy(p, code, len);
	p[len] = 0x0f; /* syscall: the end */
	p[len + 1] = 0x05;
	struct soft_mem_ops ops = {.page_ptr = sn_page_ptr};
	struct soft_cpu *c = soft_cpu_create(&ops, true);
	if (!c)
		abort();
	memcpy(c->gpr, r->gpr, sizeof(c->gpr));
	c->rflags = r->rflags | RFLAGS_FIXED;
	c->lf.op = LF_NONE;
	c->rip = SN_CODE;
	if (prep)
		prep(c);
	enum soft_exit e = soft_cpu_run(c);
	memcpy(r->gpr, c->gpr, sizeof(r->gpr));
	r->rflags = soft_flags(c);
	r->rip = c->rip;
	r->sig = 0;
	r->vector = 0;
	r->error = 0;
	r->addr = 0;
	if (e == SOFT_EXIT_SYSCALL) {
		r->rip -= 2;
	} else if (e == SOFT_EXIT_EXCEPTION) {
		r->vector = c->exc_vector;
		r->sig = sn_signal_of(c->exc_vector);
		r->error = c->exc_error;
		r->addr = c->exc_vector == EXC_PF ? c->exc_addr : 0;
	} else {
		r->sig = -1; /* anything else is a failure of the test */
	}
	soft_cpu_destroy(c);
}

/* The data pages (all but the code pages), for comparing what two runs left in memory. */
#define SN_DATA_SIZE (SN_SIZE - (SN_DATA - SN_BASE))

static void sn_snapshot(uint8_t *out)
{
	for (unsigned p = 2; p < SN_PAGES; p++) {
		uint8_t *dst = out + (p - 2) * 0x1000ull;
		if (sn_prot[p] == SN_NONE)
			memset(dst, 0, 0x1000);
		else
			memcpy(dst, (const void *)(SN_BASE + p * 0x1000ull), 0x1000);
	}
}

/* Fills the accessible data pages with bytes from a small generator (seeded), so both runs
 * start from the same memory. One page of random words, varied per page, is plenty. */
static void sn_fill(uint64_t seed)
{
	uint64_t words[512];
	for (unsigned i = 0; i < 512; i++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		words[i] = seed;
	}
	for (unsigned p = 2; p < SN_PAGES; p++) {
		if (sn_prot[p] == SN_NONE)
			continue;
		bool ro = sn_prot[p] == SN_RO;
		if (ro)
			mprotect((void *)(SN_BASE + p * 0x1000ull), 0x1000, PROT_READ | PROT_WRITE);
		uint64_t *w = (uint64_t *)(SN_BASE + p * 0x1000ull);
		uint64_t mix = p * 0x9e3779b97f4a7c15ull;
		for (unsigned i = 0; i < 512; i++)
			w[i] = words[(i + p * 7) & 511] ^ mix;
		if (ro)
			mprotect((void *)(SN_BASE + p * 0x1000ull), 0x1000, PROT_READ);
	}
}

/* Compares a native result with a soft one: every register, RIP, the flags in fmask and how
 * the run ended. Prints the differences; true when there are none. */
static bool sn_same(const struct sn_regs *n, const struct sn_regs *s, uint64_t fmask,
		    const char *what)
{
	static const char *const names[16] = {"rax", "rcx", "rdx", "rbx", "rsp", "rbp",
					      "rsi", "rdi", "r8",  "r9",  "r10", "r11",
					      "r12", "r13", "r14", "r15"};
	bool same = true;
	for (unsigned i = 0; i < 16; i++)
		if (n->gpr[i] != s->gpr[i]) {
			printf("%s: %s native %#" PRIx64 " soft %#" PRIx64 "\n", what, names[i],
			       n->gpr[i], s->gpr[i]);
			same = false;
		}
	if (n->rip != s->rip || n->sig != s->sig || (n->sig && n->vector != s->vector)) {
		printf("%s: native rip %#" PRIx64 " sig %d vector %d, soft rip %#" PRIx64
		       " sig %d vector %d\n",
		       what, n->rip, n->sig, n->vector, s->rip, s->sig, s->vector);
		same = false;
	}
	if (n->sig && n->vector == EXC_PF && n->addr != s->addr) {
		printf("%s: #PF address native %#" PRIx64 " soft %#" PRIx64 "\n", what, n->addr,
		       s->addr);
		same = false;
	}
	if ((n->rflags ^ s->rflags) & fmask) {
		printf("%s: flags native %#" PRIx64 " soft %#" PRIx64 "\n", what, n->rflags & fmask,
		       s->rflags & fmask);
		same = false;
	}
	return same;
}

/* The native result of the last sn_check, for tests that look further. */
static struct sn_regs sn_last;

/* Runs code natively and on the soft CPU from the same registers and memory (filled from
 * seed) and compares registers, flags in fmask and the data pages. */
static bool sn_check(const uint8_t *code, size_t len, const struct sn_regs *in, uint64_t seed,
		     uint64_t fmask, void (*prep)(struct soft_cpu *c), const char *what)
{
	static uint8_t native_mem[SN_DATA_SIZE], soft_mem_img[SN_DATA_SIZE];
	struct sn_regs n = *in, s = *in;
	sn_fill(seed);
	sn_run_native(&n, code, len);
	sn_snapshot(native_mem);
	sn_fill(seed);
	sn_run_soft(&s, code, len, prep);
	sn_snapshot(soft_mem_img);
	bool same = sn_same(&n, &s, fmask, what);
	sn_last = n;
	if (memcmp(native_mem, soft_mem_img, SN_DATA_SIZE) != 0) {
		for (size_t i = 0; i < SN_DATA_SIZE; i++)
			if (native_mem[i] != soft_mem_img[i]) {
				printf("%s: memory differs first at %#llx: native %02x soft %02x\n",
				       what, (unsigned long long)(SN_DATA + i), native_mem[i],
				       soft_mem_img[i]);
				break;
			}
		same = false;
	}
	return same;
}

/* ---- shared by the test files that use this header ------------------------------------ */

/* A xorshift generator; each test file seeds sn_rng in its main() so its cases stay fixed. */
static uint64_t sn_rng = 0x9e3779b97f4a7c15ull;

static __attribute__((unused)) uint64_t sn_rnd(void)
{
	sn_rng ^= sn_rng << 13;
	sn_rng ^= sn_rng >> 7;
	sn_rng ^= sn_rng << 17;
	return sn_rng;
}

/* Pages of the test mapping used as fixtures: one inaccessible, one read-only. */
#define SN_PAGE(n)    (SN_BASE + 0x1000ull * (n))
#define SN_GUARD_PAGE 40u
#define SN_RO_PAGE    41u

/* cmocka group set-up: the mapping with its guard page (inaccessible). */
static __attribute__((unused)) int sn_group_setup(void **state)
{
	(void)state;
	if (!sn_setup())
		return -1;
	sn_protect(SN_GUARD_PAGE, SN_NONE);
	return 0;
}

static __attribute__((unused)) int sn_group_teardown(void **state)
{
	(void)state;
	sn_unprotect_all();
	sn_teardown();
	return 0;
}

/* Random general registers and arithmetic flags, with a stack in page 30. */
static __attribute__((unused)) struct sn_regs sn_random_regs(void)
{
	struct sn_regs r;
	memset(&r, 0, sizeof(r));
	for (unsigned i = 0; i < 16; i++)
		r.gpr[i] = sn_rnd();
	r.gpr[GPR_RSP] = SN_PAGE(30);
	r.rflags = 0x202 | (sn_rnd() & FL_ARITH);
	return r;
}

#endif
