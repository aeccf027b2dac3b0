/* Native execution: a long-lived child runs each case on the host CPU.
 *
 * The child maps the code page and the scratch area at the same addresses as the interpreter.
 * The code page holds a prologue that loads the whole state from the transfer block (FXRSTOR,
 * POPFQ, sixteen MOVs), the instruction under test, and landing stubs: the fall-through one
 * right after the instruction and, for branches, more at the targets. A stub saves RAX, puts
 * its own address in EAX (that is the RIP the instruction left) and jumps to the epilogue,
 * which stores everything back. Faults arrive as signals; the handler copies the state from
 * the signal frame and resumes at a recovery stub that returns to the C code (a plain return
 * from the handler, no longjmp: sanitizer runtimes make system calls in theirs). Once set up, the child can only read its command pipe, write its answer
 * pipe and exit (seccomp), so a mis-generated instruction cannot reach the system. */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>

#include "diff.h"

/* The transfer block, shared with the child. The code page addresses its fields with 32-bit
 * absolute displacements, so it lives below 2 GiB. */
struct xfer {
	uint64_t host_rsp; /* offset 0: the entry stub below stores RSP here */
	uint32_t default_mxcsr;
	uint32_t pad;
	uint64_t in_gpr[16];
	uint64_t in_rflags;
	uint64_t out_gpr[16];
	uint64_t out_rip;
	uint64_t out_rflags;
	int32_t out_vector;
	uint32_t out_error;
	uint64_t out_addr;
	uint8_t in_fx[512] __attribute__((aligned(64)));
	uint8_t out_fx[512] __attribute__((aligned(64)));
	uint8_t code[CODE_SIZE] __attribute__((aligned(4096)));
	uint8_t mem_in[SCRATCH_SIZE];
	uint8_t mem_out[SCRATCH_SIZE];
};

#define X      ((struct xfer *)XFER_BASE)
#define XA(fl) ((uint32_t)(XFER_BASE + offsetof(struct xfer, fl)))

_Static_assert(offsetof(struct xfer, host_rsp) == 0, "the entry stub stores RSP at offset 0");

/* Enters the code page with the C callee-saved registers on the stack; the epilogue restores
 * them and returns from here. */
void diff_native_enter(void);
__asm__(".text\n"
	".type diff_native_enter, @function\n"
	"diff_native_enter:\n"
	"	push %rbx\n"
	"	push %rbp\n"
	"	push %r12\n"
	"	push %r13\n"
	"	push %r14\n"
	"	push %r15\n"
	"	movq %rsp, 0x30000000\n"
	"	mov $0x10000000, %eax\n"
	"	jmp *%rax\n"
	".size diff_native_enter, .-diff_native_enter\n");

static unsigned put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
	return 4;
}

/* mov r64, [abs32] (load) or mov [abs32], r64 (store). */
static unsigned mov_abs(uint8_t *p, unsigned r, uint32_t addr, bool store)
{
	p[0] = 0x48 | (r >= 8 ? 4 : 0);
	p[1] = store ? 0x89 : 0x8b;
	p[2] = 0x04 | (uint8_t)((r & 7) << 3);
	p[3] = 0x25;
	return 4 + put32(p + 4, addr);
}

static unsigned stub(uint8_t *p, uint64_t at)
{
	unsigned n = mov_abs(p, 0, XA(out_gpr), true);
	p[n++] = 0xb8; /* mov eax, imm32: this stub's address */
	n += put32(p + n, (uint32_t)at);
	p[n++] = 0xe9;
	n += put32(p + n, (uint32_t)(EPI_ADDR - (at + n + 4)));
	return n;
}

void native_layout(uint8_t *code)
{
	uint8_t *p = code;
	unsigned n = 0;
	/* fxrstor64 [in_fx]: x87, MXCSR, XMM0-15 */
	memcpy(p, "\x48\x0f\xae\x0c\x25", 5);
	n = 5 + put32(p + 5, XA(in_fx));
	/* mov rsp, &in_rflags; popfq */
	memcpy(p + n, "\x48\xc7\xc4", 3);
	n += 3;
	n += put32(p + n, XA(in_rflags));
	p[n++] = 0x9d;
	for (unsigned r = 0; r < 16; r++)
		n += mov_abs(p + n, r, XA(in_gpr) + 8 * r, false);
	p[n++] = 0xe9;
	n += put32(p + n, (uint32_t)(INSN_ADDR - (CODE_BASE + n + 4)));
	_Static_assert(EPI_ADDR - CODE_BASE >= 160, "the prologue (150 bytes) fits below EPI_ADDR");

	/* The epilogue: RAX holds the landing address, the stub saved the real RAX. */
	p = code + (EPI_ADDR - CODE_BASE);
	n = mov_abs(p, 0, XA(out_rip), true);
	for (unsigned r = 1; r < 16; r++)
		n += mov_abs(p + n, r, XA(out_gpr) + 8 * r, true);
	memcpy(p + n, "\x48\xc7\xc4", 3); /* mov rsp, &out_rflags + 8; pushfq */
	n += 3;
	n += put32(p + n, XA(out_rflags) + 8);
	p[n++] = 0x9c;
	p[n++] = 0xfc;                            /* cld: the C code after us expects DF clear */
	memcpy(p + n, "\x48\x0f\xae\x04\x25", 5); /* fxsave64 [out_fx] */
	n += 5;
	n += put32(p + n, XA(out_fx));
	memcpy(p + n, "\xdb\xe3\x0f\xae\x14\x25", 6); /* fninit; ldmxcsr [default_mxcsr] */
	n += 6;
	n += put32(p + n, XA(default_mxcsr));
	memcpy(p + n, "\x48\x8b\x24\x25", 4); /* mov rsp, [host_rsp] */
	n += 4;
	n += put32(p + n, XA(host_rsp));
	memcpy(p + n, "\x41\x5f\x41\x5e\x41\x5d\x41\x5c\x5d\x5b\xc3", 11);
	_Static_assert(RECOVER_ADDR - EPI_ADDR >= 180, "the epilogue (175 bytes) fits");
	_Static_assert(TARGET_LO - RECOVER_ADDR >= 32, "the recovery stub (30 bytes) fits");

	/* The recovery stub, where a fault resumes: the C environment back, then the same return
	 * as the epilogue's. */
	p = code + (RECOVER_ADDR - CODE_BASE);
	memcpy(p, "\xfc\xdb\xe3\x0f\xae\x14\x25", 7); /* cld; fninit; ldmxcsr [default_mxcsr] */
	n = 7 + put32(p + 7, XA(default_mxcsr));
	memcpy(p + n, "\x48\x8b\x24\x25", 4);
	n += 4;
	n += put32(p + n, XA(host_rsp));
	memcpy(p + n, "\x41\x5f\x41\x5e\x41\x5d\x41\x5c\x5d\x5b\xc3", 11);
}

void layout_code(struct tcase *tc)
{
	memset(tc->code, 0xcc, sizeof(tc->code)); /* int3: a stray jump shows as #BP */
	native_layout(tc->code);
	uint64_t at = INSN_ADDR - CODE_BASE;
	memcpy(tc->code + at, tc->insn, tc->len);
	stub(tc->code + at + tc->len, INSN_ADDR + tc->len);
	for (unsigned i = 0; i < tc->ntargets; i++)
		if (tc->targets[i] != INSN_ADDR + tc->len)
			stub(tc->code + (tc->targets[i] - CODE_BASE), tc->targets[i]);
}

/* ---- the child ---- */

static void on_fault(int sig, siginfo_t *si, void *uctx)
{
	(void)sig;
	ucontext_t *uc = uctx;
	const greg_t *g = uc->uc_mcontext.gregs;
	static const int map[16] = {REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP,
				    REG_RSI, REG_RDI, REG_R8,  REG_R9,  REG_R10, REG_R11,
				    REG_R12, REG_R13, REG_R14, REG_R15};
	for (int i = 0; i < 16; i++)
		X->out_gpr[i] = (uint64_t)g[map[i]];
	X->out_rip = (uint64_t)g[REG_RIP];
	X->out_rflags = (uint64_t)g[REG_EFL];
	X->out_vector = (int32_t)g[REG_TRAPNO];
	X->out_error = (uint32_t)g[REG_ERR];
	X->out_addr = X->out_vector == 14 ? (uint64_t)si->si_addr : 0;
	if (uc->uc_mcontext.fpregs)
		memcpy(X->out_fx, uc->uc_mcontext.fpregs, 512);
	/* Resume in the recovery stub, with the flags the C code may rely on cleared (DF, TF,
	 * AC). The stack pointer does not matter: the stub reloads it. */
	uc->uc_mcontext.gregs[REG_RIP] = (greg_t)RECOVER_ADDR;
	uc->uc_mcontext.gregs[REG_EFL] &= ~(greg_t)(0x400 | 0x100 | 0x40000);
}

static int install_seccomp(void)
{
	struct sock_filter filt[] = {
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_read, 5, 0),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_write, 4, 0),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit, 3, 0),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit_group, 2, 0),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_rt_sigreturn, 1, 0),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof(filt) / sizeof(filt[0]), .filter = filt};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return -1;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

static uint8_t altstack[65536] __attribute__((aligned(64)));

__attribute__((noreturn)) static void child_main(int cmd_fd, int done_fd)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (mprotect((void *)CODE_BASE, CODE_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC))
		_exit(101);
	struct rlimit zero = {0, 0};
	setrlimit(RLIMIT_CORE, &zero);
	setrlimit(RLIMIT_FSIZE, &zero);
	stack_t ss = {.ss_sp = altstack, .ss_size = sizeof(altstack)};
	if (sigaltstack(&ss, NULL))
		_exit(102);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP};
	for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigaction(sigs[i], &sa, NULL))
			_exit(103);
	if (install_seccomp()) {
		/* A kernel or container without seccomp filters: the rlimits and NO_NEW_PRIVS
		 * still apply, and the instructions are generated, not arbitrary. */
		static const char msg[] = "diff-test: warning: seccomp unavailable, the native "
					  "child runs without a system-call filter\n";
		if (write(2, msg, sizeof(msg) - 1) < 0)
			_exit(104);
	}
	for (;;) {
		char cmd;
		if (read(cmd_fd, &cmd, 1) != 1)
			_exit(0);
		memcpy((void *)CODE_BASE, X->code, CODE_SIZE);
		memcpy((void *)SCRATCH_BASE, X->mem_in, SCRATCH_SIZE);
		X->out_vector = -1;
		X->out_error = 0;
		X->out_addr = 0;
		diff_native_enter();
		memcpy(X->mem_out, (void *)SCRATCH_BASE, SCRATCH_SIZE);
		if (write(done_fd, &cmd, 1) != 1)
			_exit(0);
	}
}

/* ---- the parent's side ---- */

static pid_t child = -1;
static int cmd_w = -1, done_r = -1;

static bool start_child(void)
{
	int cmd[2], done[2];
	if (pipe2(cmd, O_CLOEXEC) || pipe2(done, O_CLOEXEC)) {
		perror("diff-test: pipe");
		return false;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		perror("diff-test: fork");
		return false;
	}
	if (pid == 0) {
		close(cmd[1]);
		close(done[0]);
		child_main(cmd[0], done[1]);
	}
	close(cmd[0]);
	close(done[1]);
	child = pid;
	cmd_w = cmd[1];
	done_r = done[0];
	return true;
}

static void stop_child(void)
{
	if (child > 0) {
		close(cmd_w);
		close(done_r);
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	child = -1;
}

bool native_init(void)
{
	void *x = mmap((void *)XFER_BASE, sizeof(struct xfer), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (x != (void *)XFER_BASE) {
		perror("diff-test: mmap transfer block");
		return false;
	}
	X->default_mxcsr = 0x1f80;
	signal(SIGPIPE, SIG_IGN);
	return start_child();
}

void native_fini(void)
{
	stop_child();
}

int native_run(const struct tcase *tc, struct machine *out, uint8_t *mem_out, char *why,
	       size_t why_len)
{
	if (child < 0 && !start_child()) {
		snprintf(why, why_len, "cannot start the native child");
		return -1;
	}
	memcpy(X->code, tc->code, CODE_SIZE);
	memcpy(X->mem_in, tc->mem, SCRATCH_SIZE);
	memcpy(X->in_gpr, tc->in.gpr, sizeof(X->in_gpr));
	X->in_rflags = tc->in.rflags;
	memcpy(X->in_fx, tc->in.fx, 512);
	char c = 'r';
	struct pollfd pfd = {.fd = done_r, .events = POLLIN};
	int pr = -1;
	if (write(cmd_w, &c, 1) == 1) {
		do
			pr = poll(&pfd, 1, 5000);
		while (pr < 0 && errno == EINTR);
	}
	if (pr == 1 && read(done_r, &c, 1) == 1) {
		memcpy(out->gpr, X->out_gpr, sizeof(out->gpr));
		out->rip = X->out_rip;
		out->rflags = X->out_rflags;
		memcpy(out->fx, X->out_fx, 512);
		out->vector = X->out_vector;
		out->error = X->out_error;
		out->addr = X->out_addr;
		memcpy(mem_out, X->mem_out, SCRATCH_SIZE);
		return 0;
	}
	/* Hung or died: find out which, then start afresh. */
	int status = 0;
	if (pr == 0)
		kill(child, SIGKILL);
	waitpid(child, &status, 0);
	child = -1;
	close(cmd_w);
	close(done_r);
	if (pr == 0)
		snprintf(why, why_len, "native child hung");
	else if (WIFSIGNALED(status))
		snprintf(why, why_len, "native child killed by signal %d%s", WTERMSIG(status),
			 WTERMSIG(status) == SIGSYS ? " (seccomp: a system call)" : "");
	else
		snprintf(why, why_len, "native child exited with %d",
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	return -1;
}
