/* Interpreter execution: the soft engine in user mode, over this process's own copies of the
 * code page and the scratch area, mapped at the same fixed addresses as in the native child.
 * A crash inside the interpreter is caught and reported as that case's result, and the
 * harness goes on with a fresh CPU. */
#include <cpuid.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "diff.h"
#include "engine/soft/soft.h"

static struct soft_cpu *cpu;

static void *page_ptr(void *opaque, uint64_t gpa, enum mem_access acc, bool *writable)
{
	(void)opaque;
	(void)acc;
	uint64_t page = gpa & ~0xfffull;
	if ((page >= CODE_BASE && page < CODE_BASE + CODE_SIZE) ||
	    (page >= SCRATCH_BASE && page < SCRATCH_BASE + SCRATCH_SIZE)) {
		*writable = true;
		return (void *)(uintptr_t)page;
	}
	return NULL;
}

static const struct soft_mem_ops mem_ops = {.page_ptr = page_ptr};

static sigjmp_buf crash_env;
static volatile sig_atomic_t in_soft;
static uint8_t crash_stack[65536] __attribute__((aligned(64)));

static void on_crash(int sig)
{
	if (in_soft)
		siglongjmp(crash_env, sig);
	signal(sig, SIG_DFL);
	raise(sig);
}

static bool map_fixed(uint64_t addr, uint64_t size)
{
	void *p = mmap((void *)addr, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (p != (void *)addr) {
		fprintf(stderr, "diff-test: cannot map 0x%llx: %m\n", (unsigned long long)addr);
		return false;
	}
	return true;
}

bool soft_init(void)
{
	if (!map_fixed(CODE_BASE, CODE_SIZE) || !map_fixed(SCRATCH_BASE, SCRATCH_SIZE))
		return false;
	cpu = soft_cpu_create(&mem_ops, true);
	if (!cpu) {
		fprintf(stderr, "diff-test: soft_cpu_create failed\n");
		return false;
	}
	stack_t ss = {.ss_sp = crash_stack, .ss_size = sizeof(crash_stack)};
	sigaltstack(&ss, NULL);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_crash;
	sa.sa_flags = SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
	for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	return true;
}

/* Where the translator's run of a case stops: a syscall (which leaves the run loop with RIP
 * after it) over the first bytes of each landing stub, in the interpreter's copy only. */
static const uint8_t stop_insn[2] = {0x0f, 0x05};

static bool at_stop(uint64_t rip, const struct tcase *tc)
{
	if (rip == INSN_ADDR + tc->len)
		return true;
	for (unsigned i = 0; i < tc->ntargets; i++)
		if (rip == tc->targets[i])
			return true;
	return false;
}

int soft_run_case(const struct tcase *tc, bool translated, struct machine *out, uint8_t *mem_out,
		  char *why, size_t why_len)
{
	struct soft_cpu *c = cpu;
	memcpy((void *)CODE_BASE, tc->code, CODE_SIZE);
	if (translated) {
		memcpy((void *)(INSN_ADDR + tc->len), stop_insn, sizeof(stop_insn));
		for (unsigned i = 0; i < tc->ntargets; i++)
			memcpy((void *)tc->targets[i], stop_insn, sizeof(stop_insn));
	}
	memcpy((void *)SCRATCH_BASE, tc->mem, SCRATCH_SIZE);
	/* The code page changed under the decoded-block cache: drop what was decoded from it, the
	 * way the engine does for self-modifying code (emptying the whole cache each case would
	 * cost more than running it). */
	soft_cache_invalidate_page(c->cache, CODE_BASE);
	soft_tlb_flush(c);

	memcpy(c->gpr, tc->in.gpr, sizeof(c->gpr));
	c->rip = INSN_ADDR;
	c->lf.op = LF_NONE;
	c->rflags = (c->rflags & ~(uint64_t)F_CMPMASK) | (tc->in.rflags & F_DF);
	soft_set_flags(c, tc->in.rflags, FL_ARITH);
	/* x87 through the FXSAVE-image interface; XMM and MXCSR directly. */
	soft_fxrstor_image(c, tc->in.fx);
	memcpy(c->xmm, tc->in.fx + FX_XMM(0), sizeof(c->xmm));
	memcpy(&c->mxcsr, tc->in.fx + FX_MXCSR, 4);
	c->exc_vector = -1;
	c->exc_error = 0;
	c->exc_addr = 0;
	/* The handler loop runs the one instruction under a budget; the translator runs whole
	 * blocks only, so its run goes on to the stop after the instruction. */
	c->insn_budget = translated ? 64 : 1;
	c->exit_request = 0;

	int sig = sigsetjmp(crash_env, 1);
	if (sig) {
		in_soft = 0;
		snprintf(why, why_len, "the interpreter crashed: %s", strsignal(sig));
		/* Its state may be half-updated: go on with a new CPU (the old one is leaked). */
		cpu = soft_cpu_create(&mem_ops, true);
		return -1;
	}
	in_soft = 1;
	enum soft_exit ex = soft_cpu_run(c);
	in_soft = 0;

	memcpy(out->gpr, c->gpr, sizeof(out->gpr));
	out->rip = c->rip;
	out->rflags = soft_flags(c);
	soft_fxsave_image(c, out->fx);
	memcpy(out->fx + FX_XMM(0), c->xmm, sizeof(c->xmm));
	memcpy(out->fx + FX_MXCSR, &c->mxcsr, 4);
	out->vector = -1;
	out->error = 0;
	out->addr = 0;
	memcpy(mem_out, (void *)SCRATCH_BASE, SCRATCH_SIZE);
	if (translated && ex == SOFT_EXIT_SYSCALL && at_stop(c->rip - sizeof(stop_insn), tc)) {
		out->rip = c->rip - sizeof(stop_insn);
		return 0;
	}
	switch (ex) {
	case SOFT_EXIT_STOP:
		if (!translated)
			return 0;
		snprintf(why, why_len, "the translated run did not reach its stop");
		return -1;
	case SOFT_EXIT_EXCEPTION:
		out->vector = c->exc_vector;
		out->error = c->exc_error;
		out->addr = c->exc_vector == 14 ? c->exc_addr : 0;
		return 0;
	case SOFT_EXIT_FAIL:
		snprintf(why, why_len, "the interpreter failed: %s", c->fail_msg);
		return -1;
	default:
		snprintf(why, why_len, "the interpreter returned exit %d", (int)ex);
		return -1;
	}
}

/* ---- features ---- */

static bool bit(const uint32_t r[4], int reg, int b)
{
	return (r[reg] >> b) & 1;
}

static bool feat_in(void (*q)(uint32_t, uint32_t, uint32_t[4]), enum feat f)
{
	uint32_t l1[4], l7[4], e1[4];
	q(1, 0, l1);
	q(7, 0, l7);
	q(0x80000001u, 0, e1);
	switch (f) {
	case FEAT_BASE:
		return true;
	case FEAT_SSE3:
		return bit(l1, 2, 0);
	case FEAT_SSSE3:
		return bit(l1, 2, 9);
	case FEAT_SSE41:
		return bit(l1, 2, 19);
	case FEAT_SSE42:
		return bit(l1, 2, 20);
	case FEAT_POPCNT:
		return bit(l1, 2, 23);
	case FEAT_CX16:
		return bit(l1, 2, 13);
	case FEAT_MOVBE:
		return bit(l1, 2, 22);
	case FEAT_LZCNT:
		return bit(e1, 2, 5);
	case FEAT_LAHF:
		return bit(e1, 2, 0);
	case FEAT_BMI1:
		return bit(l7, 1, 3);
	default:
		return false;
	}
}

static void soft_q(uint32_t leaf, uint32_t sub, uint32_t out[4])
{
	soft_cpuid(cpu, leaf, sub, out);
}

static void host_q(uint32_t leaf, uint32_t sub, uint32_t out[4])
{
	__cpuid_count(leaf, sub, out[0], out[1], out[2], out[3]);
}

bool soft_has_feat(enum feat f)
{
	return feat_in(soft_q, f);
}

bool host_has_feat(enum feat f)
{
	return feat_in(host_q, f);
}
