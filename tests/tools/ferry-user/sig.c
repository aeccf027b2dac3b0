/* The guest's signals.
 *
 * The guest's dispositions live here; the host's follow them: SIG_DFL and SIG_IGN are set on
 * the host as they are (so default deaths, stops and SIGCHLD reaping are the kernel's own), and
 * a guest handler becomes a host handler that only marks the signal pending, keeps it blocked
 * on the host and asks the soft CPU to stop. The run loop then delivers it the way Linux
 * does: an rt_sigframe on the guest stack (siginfo, ucontext with the registers and the signal
 * mask, an FXSAVE image of the x87/SSE state), RIP at the handler, the return address at
 * sa_restorer, which calls rt_sigreturn. The guest's blocked mask is also the host's, so the
 * kernel keeps blocked signals pending exactly as it would for the guest.
 *
 * A host handler interrupts the system call in progress (it is installed without SA_RESTART):
 * the call returns -EINTR, and sys.c restarts it after the guest handler when the guest asked
 * for SA_RESTART and the call is one Linux restarts. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "fu.h"

#define NSIG_K        64
#define BIT(sig)      (1ull << ((sig)-1))
#define UNBLOCKABLE   (BIT(SIGKILL) | BIT(SIGSTOP))
#define K_SIG_DFL     0ull
#define K_SIG_IGN     1ull
#define K_SA_RESTORER 0x04000000ull

/* The kernel's struct sigaction for x86-64. */
struct k_sigaction {
	uint64_t handler, flags, restorer, mask;
};

/* The kernel's signal frame for x86-64 (arch/x86: struct rt_sigframe, struct ucontext, struct
 * sigcontext). glibc's gregs order is the same. */
struct k_sigcontext {
	uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
	uint64_t rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags;
	uint16_t cs, gs, fs, ss;
	uint64_t err, trapno, oldmask, cr2, fpstate;
	uint64_t reserved1[8];
};
struct k_stack {
	uint64_t sp;
	int32_t flags, pad;
	uint64_t size;
};
struct k_ucontext {
	uint64_t flags, link;
	struct k_stack stack;
	struct k_sigcontext mc;
	uint64_t sigmask;
};
struct k_rt_sigframe {
	uint64_t pretcode;
	struct k_ucontext uc;
	uint8_t info[128];
};
_Static_assert(sizeof(struct k_sigcontext) == 256, "sigcontext layout");
_Static_assert(sizeof(struct k_ucontext) == 304, "ucontext layout");
_Static_assert(sizeof(siginfo_t) == 128, "siginfo layout");

#define UC_SIGCONTEXT_SS     0x2
#define UC_STRICT_RESTORE_SS 0x4
/* The flags sigreturn may change (the kernel's FIX_EFLAGS). */
#define FIX_EFLAGS 0x50dd5ull

static struct k_sigaction acts[NSIG_K + 1];
static uint64_t blocked;
static volatile uint64_t pending; /* caught by the host handler, not delivered yet */
static siginfo_t pinfo[NSIG_K + 1];
static struct k_stack altstack = {.flags = SS_DISABLE};
/* rt_sigsuspend: the mask to restore once a handler ran. */
static bool suspended;
static uint64_t suspend_saved;

static void host_set_mask(uint64_t m)
{
	m &= ~UNBLOCKABLE;
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &m, NULL, sizeof(m));
}

void sig_before_exec(void)
{
	host_set_mask(blocked);
	uint64_t p = __atomic_exchange_n(&pending, 0, __ATOMIC_SEQ_CST);
	for (int sig = 1; sig <= NSIG_K; sig++)
		if (p & BIT(sig))
			syscall(SYS_tgkill, getpid(), gettid(), sig);
}

static bool is_fault_signal(int sig)
{
	return sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE || sig == SIGTRAP;
}

static void on_host_signal(int sig, siginfo_t *info, void *ucv)
{
	if (is_fault_signal(sig) && info->si_code > 0) {
		/* ferry-user itself faulted (the guest's faults come from the soft CPU, never from
		 * the host): die of it on the way back. */
		signal(sig, SIG_DFL);
		return;
	}
	pinfo[sig] = *info;
	__atomic_or_fetch(&pending, BIT(sig), __ATOMIC_SEQ_CST);
	/* Keep it blocked until it is delivered, as the kernel would hold further instances. */
	sigaddset(&((ucontext_t *)ucv)->uc_sigmask, sig);
	if (fu_cpu)
		soft_cpu_stop(fu_cpu);
}

/* The host disposition that matches guest action a. */
static int host_apply(int sig, const struct k_sigaction *a)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	if (a->handler == K_SIG_DFL) {
		sa.sa_handler = SIG_DFL;
	} else if (a->handler == K_SIG_IGN) {
		sa.sa_handler = SIG_IGN;
	} else {
		sa.sa_sigaction = on_host_signal;
		sa.sa_flags = SA_SIGINFO;
	}
	sa.sa_flags |= (int)(a->flags & (SA_NOCLDSTOP | SA_NOCLDWAIT));
	sigemptyset(&sa.sa_mask);
	if (sigaction(sig, &sa, NULL) != 0)
		return -errno;
	return 0;
}

void sig_init(void)
{
	/* Ignored signals stay ignored across exec; everything else starts at the default, on
	 * the host too (a sanitizer runtime may have installed handlers of its own). */
	for (int sig = 1; sig <= NSIG_K; sig++) {
		struct sigaction old;
		if (sigaction(sig, NULL, &old) != 0)
			continue;
		if (old.sa_handler == SIG_IGN)
			acts[sig].handler = K_SIG_IGN;
		else if (old.sa_handler != SIG_DFL)
			host_apply(sig, &acts[sig]);
	}
	uint64_t m = 0;
	syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &m, sizeof(m));
	blocked = m & ~UNBLOCKABLE;
}

/* ---- delivery --------------------------------------------------------------------------------- */

static bool on_altstack(uint64_t sp)
{
	return !(altstack.flags & SS_DISABLE) && sp - altstack.sp < altstack.size;
}

static int default_ignored(int sig)
{
	return sig == SIGCHLD || sig == SIGCONT || sig == SIGURG || sig == SIGWINCH;
}

static int default_stops(int sig)
{
	return sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU || sig == SIGSTOP;
}

/* The default action for a signal that was caught while the guest had a handler. */
static void default_action(int sig)
{
	if (default_ignored(sig))
		return;
	if (default_stops(sig)) {
		signal(sig, SIG_DFL);
		host_set_mask(blocked & ~BIT(sig));
		raise(sig);
		host_set_mask(blocked);
		return;
	}
	fu_die_by_signal(sig);
}

struct fault_info {
	uint64_t trapno, err, cr2;
};

static void setup_frame(struct soft_cpu *c, int sig, const siginfo_t *info,
			const struct fault_info *fi)
{
	const struct k_sigaction *a = &acts[sig];
	uint64_t old_mask = suspended ? suspend_saved : blocked;
	suspended = false;
	if (!(a->flags & K_SA_RESTORER)) {
		fu_log("signal %d: handler without SA_RESTORER", sig);
		fu_die_by_signal(SIGSEGV);
	}
	uint64_t rsp = c->gpr[GPR_RSP];
	uint64_t sp = rsp - 128; /* the red zone */
	if ((a->flags & SA_ONSTACK) && !(altstack.flags & SS_DISABLE) && !on_altstack(rsp))
		sp = altstack.sp + altstack.size;
	uint64_t fpstate = (sp - 512) & ~63ull;
	uint64_t frame = ((fpstate - sizeof(struct k_rt_sigframe)) & ~15ull) - 8;

	struct k_rt_sigframe f;
	memset(&f, 0, sizeof(f));
	f.pretcode = a->restorer;
	f.uc.flags = UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS;
	f.uc.stack.sp = altstack.sp;
	f.uc.stack.flags = on_altstack(rsp) ? SS_ONSTACK : altstack.flags;
	f.uc.stack.size = altstack.size;
	struct k_sigcontext *m = &f.uc.mc;
	const uint64_t *g = c->gpr;
	m->r8 = g[GPR_R8], m->r9 = g[GPR_R9], m->r10 = g[GPR_R10], m->r11 = g[GPR_R11];
	m->r12 = g[GPR_R12], m->r13 = g[GPR_R13], m->r14 = g[GPR_R14], m->r15 = g[GPR_R15];
	m->rdi = g[GPR_RDI], m->rsi = g[GPR_RSI], m->rbp = g[GPR_RBP], m->rbx = g[GPR_RBX];
	m->rdx = g[GPR_RDX], m->rax = g[GPR_RAX], m->rcx = g[GPR_RCX], m->rsp = g[GPR_RSP];
	m->rip = c->rip;
	m->eflags = soft_flags(c);
	m->cs = 0x33;
	m->ss = 0x2b;
	if (fi) {
		m->trapno = fi->trapno;
		m->err = fi->err;
		m->cr2 = fi->cr2;
	}
	m->oldmask = old_mask;
	m->fpstate = fpstate;
	f.uc.sigmask = old_mask;
	memcpy(f.info, info, sizeof(f.info));

	uint8_t fx[512];
	soft_fxsave_image(c, fx);
	if (guest_write(fpstate, fx, sizeof(fx)) != 0 || guest_write(frame, &f, sizeof(f)) != 0) {
		/* No room for the frame: Linux kills the process with SIGSEGV. */
		fu_log("signal %d: cannot write the signal frame at 0x%llx", sig,
		       (unsigned long long)frame);
		fu_die_by_signal(SIGSEGV);
	}
	c->gpr[GPR_RDI] = (uint64_t)sig;
	c->gpr[GPR_RSI] = frame + offsetof(struct k_rt_sigframe, info);
	c->gpr[GPR_RDX] = frame + offsetof(struct k_rt_sigframe, uc);
	c->gpr[GPR_RAX] = 0;
	c->gpr[GPR_RSP] = frame;
	c->rip = a->handler;
	c->rflags &= ~(uint64_t)(FL_TF | FL_DF | (1u << 16) | (1u << 18));

	blocked = old_mask | a->mask;
	if (!(a->flags & SA_NODEFER))
		blocked |= BIT(sig);
	blocked &= ~UNBLOCKABLE;
	if (a->flags & SA_RESETHAND) {
		acts[sig].handler = K_SIG_DFL;
		acts[sig].flags &= ~(uint64_t)SA_SIGINFO;
		host_apply(sig, &acts[sig]);
	}
}

/* The lowest-numbered signal that is pending and not blocked, or 0. */
static int next_deliverable(void)
{
	uint64_t d = __atomic_load_n(&pending, __ATOMIC_SEQ_CST) & ~blocked;
	return d ? __builtin_ctzll(d) + 1 : 0;
}

void sig_deliver_pending(struct soft_cpu *c)
{
	if (!__atomic_load_n(&pending, __ATOMIC_SEQ_CST) && !suspended)
		return;
	for (int sig; (sig = next_deliverable()) != 0;) {
		__atomic_and_fetch(&pending, ~BIT(sig), __ATOMIC_SEQ_CST);
		siginfo_t info = pinfo[sig];
		uint64_t h = acts[sig].handler;
		if (h == K_SIG_IGN)
			continue;
		if (h == K_SIG_DFL) {
			default_action(sig);
			continue;
		}
		setup_frame(c, sig, &info, NULL);
	}
	if (suspended) {
		blocked = suspend_saved;
		suspended = false;
	}
	host_set_mask(blocked);
}

bool sig_pending(void)
{
	return next_deliverable() != 0;
}

void sig_after_fork(void)
{
	__atomic_store_n(&pending, 0, __ATOMIC_SEQ_CST);
	host_set_mask(blocked);
}

bool sig_restart_wanted(void)
{
	int sig = next_deliverable();
	if (!sig)
		return false;
	uint64_t h = acts[sig].handler;
	return h == K_SIG_DFL || h == K_SIG_IGN || (acts[sig].flags & SA_RESTART);
}

static const char *fault_name(int vector)
{
	switch (vector) {
	case EXC_DE:
		return "divide error";
	case EXC_DB:
		return "debug trap";
	case EXC_BP:
		return "breakpoint";
	case EXC_UD:
		return "invalid opcode";
	case EXC_GP:
		return "general protection fault";
	case EXC_SS:
		return "stack fault";
	case EXC_PF:
		return "page fault";
	case EXC_MF:
		return "x87 floating-point error";
	case EXC_AC:
		return "alignment check";
	case EXC_XM:
		return "SIMD floating-point exception";
	default:
		return "exception";
	}
}

void sig_fault(struct soft_cpu *c)
{
	int v = c->exc_vector, sig, code;
	uint64_t addr = 0;
	switch (v) {
	case EXC_PF:
		sig = SIGSEGV;
		/* As Linux decides it: by whether there is a mapping, whatever the error code. */
		code = mm_check(c->exc_addr, 1, 0) ? SEGV_ACCERR : SEGV_MAPERR;
		addr = c->exc_addr;
		break;
	case EXC_UD:
		sig = SIGILL;
		code = ILL_ILLOPN;
		addr = c->rip;
		break;
	case EXC_DE:
		sig = SIGFPE;
		code = FPE_INTDIV;
		addr = c->rip;
		break;
	case EXC_MF:
	case EXC_XM:
		sig = SIGFPE;
		code = FPE_FLTINV;
		addr = c->rip;
		break;
	case EXC_BP:
	case EXC_DB:
		sig = SIGTRAP;
		code = SI_KERNEL;
		/* int3 is a trap: the handler sees RIP after it. */
		if (v == EXC_BP && mm_check(c->rip, 1, PROT_EXEC) &&
		    *(const uint8_t *)(uintptr_t)c->rip == 0xcc)
			c->rip += 1;
		break;
	case EXC_AC:
		sig = SIGBUS;
		code = BUS_ADRALN;
		addr = c->exc_addr;
		break;
	case EXC_SS:
		sig = SIGBUS;
		code = SI_KERNEL;
		break;
	default: /* #GP and the rest */
		sig = SIGSEGV;
		code = SI_KERNEL;
		break;
	}
	const struct k_sigaction *a = &acts[sig];
	if (a->handler == K_SIG_DFL || a->handler == K_SIG_IGN || (blocked & BIT(sig))) {
		const char *name = sigabbrev_np(sig);
		if (v == EXC_PF)
			fu_log("SIG%s: %s at address 0x%llx (%s), rip 0x%llx", name ? name : "?",
			       fault_name(v), (unsigned long long)addr,
			       (c->exc_error & 2)    ? "write"
			       : (c->exc_error & 16) ? "fetch"
						     : "read",
			       (unsigned long long)c->rip);
		else
			fu_log("SIG%s: %s at rip 0x%llx", name ? name : "?", fault_name(v),
			       (unsigned long long)c->rip);
		fu_die_by_signal(sig);
	}
	siginfo_t info;
	memset(&info, 0, sizeof(info));
	info.si_signo = sig;
	info.si_code = code;
	info.si_addr = (void *)(uintptr_t)addr;
	struct fault_info fi = {.trapno = (uint64_t)v, .err = c->exc_error, .cr2 = c->exc_addr};
	setup_frame(c, sig, &info, &fi);
	host_set_mask(blocked);
}

bool sig_rt_sigreturn(struct soft_cpu *c)
{
	uint64_t frame = c->gpr[GPR_RSP] - 8;
	struct k_rt_sigframe f;
	if (guest_read(&f, frame, sizeof(f)) != 0)
		return false;
	const struct k_sigcontext *m = &f.uc.mc;
	uint64_t *g = c->gpr;
	g[GPR_R8] = m->r8, g[GPR_R9] = m->r9, g[GPR_R10] = m->r10, g[GPR_R11] = m->r11;
	g[GPR_R12] = m->r12, g[GPR_R13] = m->r13, g[GPR_R14] = m->r14, g[GPR_R15] = m->r15;
	g[GPR_RDI] = m->rdi, g[GPR_RSI] = m->rsi, g[GPR_RBP] = m->rbp, g[GPR_RBX] = m->rbx;
	g[GPR_RDX] = m->rdx, g[GPR_RAX] = m->rax, g[GPR_RCX] = m->rcx, g[GPR_RSP] = m->rsp;
	c->rip = m->rip;
	soft_flags(c);
	c->rflags = (c->rflags & ~FIX_EFLAGS) | (m->eflags & FIX_EFLAGS) | RFLAGS_FIXED;
	if (m->fpstate) {
		uint8_t fx[512];
		if (guest_read(fx, m->fpstate, sizeof(fx)) != 0)
			return false;
		uint32_t mxcsr;
		memcpy(&mxcsr, fx + 24, 4);
		mxcsr &= 0xffff;
		memcpy(fx + 24, &mxcsr, 4);
		soft_fxrstor_image(c, fx);
	}
	blocked = f.uc.sigmask & ~UNBLOCKABLE;
	host_set_mask(blocked);
	return true;
}

/* ---- the system calls --------------------------------------------------------------------------- */

long sig_rt_sigaction(int sig, uint64_t act, uint64_t oact, uint64_t size)
{
	if (size != 8)
		return -EINVAL;
	if (sig < 1 || sig > NSIG_K)
		return -EINVAL;
	struct k_sigaction old = acts[sig], na;
	if (act) {
		if (sig == SIGKILL || sig == SIGSTOP)
			return -EINVAL;
		if (guest_read(&na, act, sizeof(na)) != 0)
			return -EFAULT;
		na.mask &= ~UNBLOCKABLE;
		int r = host_apply(sig, &na);
		if (r)
			return r;
		acts[sig] = na;
	}
	if (oact && guest_write(oact, &old, sizeof(old)) != 0)
		return -EFAULT;
	return 0;
}

long sig_rt_sigprocmask(int how, uint64_t set, uint64_t oset, uint64_t size)
{
	if (size != 8)
		return -EINVAL;
	uint64_t old = blocked;
	if (set) {
		uint64_t n;
		if (guest_read(&n, set, sizeof(n)) != 0)
			return -EFAULT;
		switch (how) {
		case SIG_BLOCK:
			blocked |= n;
			break;
		case SIG_UNBLOCK:
			blocked &= ~n;
			break;
		case SIG_SETMASK:
			blocked = n;
			break;
		default:
			return -EINVAL;
		}
		blocked &= ~UNBLOCKABLE;
		host_set_mask(blocked);
	}
	if (oset && guest_write(oset, &old, sizeof(old)) != 0)
		return -EFAULT;
	return 0;
}

long sig_rt_sigpending(uint64_t set, uint64_t size)
{
	if (size > 8)
		return -EINVAL;
	uint64_t host = 0;
	syscall(SYS_rt_sigpending, &host, sizeof(host));
	uint64_t p = (host | __atomic_load_n(&pending, __ATOMIC_SEQ_CST)) & blocked;
	if (guest_write(set, &p, size) != 0)
		return -EFAULT;
	return 0;
}

long sig_rt_sigsuspend(uint64_t mask, uint64_t size)
{
	if (size != 8)
		return -EINVAL;
	uint64_t n;
	if (guest_read(&n, mask, sizeof(n)) != 0)
		return -EFAULT;
	n &= ~UNBLOCKABLE;
	suspend_saved = blocked;
	suspended = true;
	blocked = n;
	/* A signal caught earlier that the new mask lets through ends the wait at once. */
	if (!next_deliverable())
		syscall(SYS_rt_sigsuspend, &n, sizeof(n));
	return -EINTR;
}

long sig_sigaltstack(struct soft_cpu *c, uint64_t ss, uint64_t old)
{
	bool on = on_altstack(c->gpr[GPR_RSP]);
	struct k_stack cur = altstack;
	if (on)
		cur.flags |= SS_ONSTACK;
	if (ss) {
		struct k_stack n;
		if (guest_read(&n, ss, sizeof(n)) != 0)
			return -EFAULT;
		if (on)
			return -EPERM;
		int mode = (int)((uint32_t)n.flags & ~(1u << 31)); /* without SS_AUTODISARM */
		if (mode != SS_DISABLE && mode != SS_ONSTACK && mode != 0)
			return -EINVAL;
		if (mode == SS_DISABLE) {
			altstack = (struct k_stack){.flags = SS_DISABLE};
		} else {
			if (n.size < 2048) /* the kernel's MINSIGSTKSZ */
				return -ENOMEM;
			altstack = (struct k_stack){.sp = n.sp, .flags = 0, .size = n.size};
		}
	}
	if (old && guest_write(old, &cur, sizeof(cur)) != 0)
		return -EFAULT;
	return 0;
}
