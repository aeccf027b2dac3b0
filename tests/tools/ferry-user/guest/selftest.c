/* A guest program for ferry-user's own mechanisms (tests/integration/user.sh builds it static
 * and compares its output natively and under ferry-user): signal frames and sigreturn, faults
 * turned into signals, masks, the alternate stack, fork/exec, the memory calls, code that
 * changes under the interpreter. Every line it prints is the same on a real CPU. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static sigjmp_buf jb;
static volatile sig_atomic_t hits;
static volatile void *fault_addr;
static volatile int fault_code;
static char *page;

static void on_segv_fix(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	fault_addr = si->si_addr;
	fault_code = si->si_code;
	hits++;
	mprotect(page, 4096, PROT_READ | PROT_WRITE);
}

static void on_jump(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	fault_addr = si->si_addr;
	fault_code = si->si_code;
	siglongjmp(jb, sig);
}

static void on_usr1(int sig)
{
	(void)sig;
	hits++;
}

static char altstack[65536];
static volatile int on_alt;

static void on_usr2(int sig)
{
	char here;
	(void)sig;
	uintptr_t h = (uintptr_t)&here, a = (uintptr_t)altstack;
	on_alt = h >= a && h < a + sizeof(altstack);
}

static volatile double fp_in_handler;

static void on_alrm_fp(int sig)
{
	(void)sig;
	double x = 1.0;
	for (int i = 0; i < 10; i++)
		x = x * 1.5 + 0.25;
	fp_in_handler = x;
}

static volatile int ticks;

static void on_tick(int sig)
{
	(void)sig;
	volatile double x = 3.0;
	for (int i = 0; i < 5; i++)
		x = x * x - 1.0 / x;
	ticks++;
}

__attribute__((noinline)) static void compute(uint64_t *sum, double *dsum, uint32_t i)
{
	*sum = *sum * 31 + (i ^ (*sum >> 7));
	*dsum += (double)(i & 1023) * 0.5;
}

static void install(int sig, void (*fn)(int, siginfo_t *, void *), int flags)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = fn;
	sa.sa_flags = SA_SIGINFO | flags;
	sigemptyset(&sa.sa_mask);
	sigaction(sig, &sa, NULL);
}

static void install_plain(int sig, void (*fn)(int), int flags)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	sigaction(sig, &sa, NULL);
}

static int call_code(void *code)
{
	int (*f)(void) = (int (*)(void))code;
	return f();
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "exec-child")) {
		printf("exec: argv[0]=%s argc=%d\n", argv[0], argc);
		return 5;
	}
	setvbuf(stdout, NULL, _IONBF, 0);

	/* A write to a read-only page; the handler makes it writable and the write is retried. */
	page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	install(SIGSEGV, on_segv_fix, 0);
	*(volatile char *)(page + 100) = 42;
	printf("segv-fix: hits=%d addr-ok=%d code=%s value=%d\n", hits, fault_addr == page + 100,
	       fault_code == SEGV_ACCERR   ? "ACCERR"
	       : fault_code == SEGV_MAPERR ? "MAPERR"
					   : "?",
	       page[100]);

	/* A read of an unmapped page, left with siglongjmp. */
	install(SIGSEGV, on_jump, 0);
	munmap(page, 4096);
	int sig = sigsetjmp(jb, 1);
	if (!sig)
		printf("never %d\n", *(volatile char *)(page + 8));
	printf("segv-unmapped: sig=%d addr-ok=%d code=%s\n", sig, fault_addr == page + 8,
	       fault_code == SEGV_MAPERR ? "MAPERR" : "?");

	/* Integer division by zero. */
	install(SIGFPE, on_jump, 0);
	volatile int zero = 0;
	sig = sigsetjmp(jb, 1);
	if (!sig)
		printf("never %d\n", 10 / zero);
	printf("sigfpe: sig=%d code=%s\n", sig, fault_code == FPE_INTDIV ? "INTDIV" : "?");

	/* int3. */
	install(SIGTRAP, on_jump, 0);
	sig = sigsetjmp(jb, 1);
	if (!sig)
		__asm__ volatile("int3");
	printf("sigtrap: sig=%d\n", sig);

	/* ud2. */
	install(SIGILL, on_jump, 0);
	sig = sigsetjmp(jb, 1);
	if (!sig)
		__asm__ volatile("ud2");
	printf("sigill: sig=%d\n", sig);

	/* Blocked, pending, then delivered when unblocked. */
	hits = 0;
	install_plain(SIGUSR1, on_usr1, 0);
	sigset_t s, old;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigprocmask(SIG_BLOCK, &s, &old);
	raise(SIGUSR1);
	sigset_t p;
	sigpending(&p);
	printf("blocked: hits=%d pending=%d\n", hits, sigismember(&p, SIGUSR1));
	sigprocmask(SIG_SETMASK, &old, NULL);
	printf("unblocked: hits=%d\n", hits);

	/* The alternate signal stack. */
	stack_t ss = {.ss_sp = altstack, .ss_size = sizeof(altstack), .ss_flags = 0};
	sigaltstack(&ss, NULL);
	install_plain(SIGUSR2, on_usr2, SA_ONSTACK);
	raise(SIGUSR2);
	printf("altstack: on=%d\n", on_alt);

	/* Floating point in a handler does not disturb the interrupted code. */
	install_plain(SIGALRM, on_alrm_fp, 0);
	volatile double acc = 0.1;
	for (int i = 0; i < 100; i++) {
		acc = acc * 1.01 + 0.5;
		if (i == 50)
			raise(SIGALRM);
	}
	printf("fp: acc=%.9f handler=%.6f\n", acc, fp_in_handler);

	/* SIG_IGN and sigsuspend. */
	signal(SIGUSR2, SIG_IGN);
	raise(SIGUSR2);
	hits = 0;
	sigprocmask(SIG_BLOCK, &s, &old);
	raise(SIGUSR1);
	sigset_t none;
	sigemptyset(&none);
	int r = sigsuspend(&none);
	printf("sigsuspend: r=%d errno-EINTR=%d hits=%d\n", r, errno == EINTR, hits);
	sigprocmask(SIG_SETMASK, &old, NULL);

	/* Memory: mremap moves the data, brk grows. */
	char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(m, 'x', 8192);
	char *m2 = mremap(m, 8192, 1 << 20, MREMAP_MAYMOVE);
	m2[(1 << 20) - 1] = 'y';
	printf("mremap: ok=%d data=%c%c\n", m2 != MAP_FAILED, m2[8191], m2[(1 << 20) - 1]);
	munmap(m2, 1 << 20);
	char *b0 = sbrk(0);
	char *b1 = sbrk(1 << 20);
	memset(b1, 1, 1 << 20);
	printf("brk: grew=%d\n", b1 == b0 && sbrk(0) == b0 + (1 << 20));

	/* Code that changes: written by the program, then read() over. */
	unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	static const unsigned char ret1[] = {0xb8, 1, 0, 0, 0, 0xc3}; /* mov eax, 1; ret */
	static const unsigned char ret2[] = {0xb8, 2, 0, 0, 0, 0xc3};
	static const unsigned char ret3[] = {0xb8, 3, 0, 0, 0, 0xc3};
	memcpy(code, ret1, sizeof(ret1));
	int a1 = call_code(code);
	memcpy(code, ret2, sizeof(ret2));
	int a2 = call_code(code);
	int pfd[2];
	if (pipe(pfd) == 0) {
		write(pfd[1], ret3, sizeof(ret3));
		read(pfd[0], code, sizeof(ret3));
		close(pfd[0]);
		close(pfd[1]);
	}
	int a3 = call_code(code);
	printf("smc: %d %d %d\n", a1, a2, a3);

	/* fork, exit status, death by signal. */
	pid_t pid = fork();
	if (pid == 0)
		_exit(9);
	int st;
	waitpid(pid, &st, 0);
	printf("fork: exited=%d status=%d\n", WIFEXITED(st), WEXITSTATUS(st));
	pid = fork();
	if (pid == 0) {
		signal(SIGSEGV, SIG_DFL);
		*(volatile int *)(uintptr_t)zero = 1;
		_exit(0);
	}
	waitpid(pid, &st, 0);
	printf("fork-segv: signaled=%d sig=%d\n", WIFSIGNALED(st), WTERMSIG(st));

	/* Signals arriving at any instruction of a computation (a 1 ms timer) leave it intact:
	 * the frame saves and sigreturn restores every register, the flags and the SSE state.
	 * The same computation without the timer must give the same result. */
	install_plain(SIGALRM, on_tick, SA_RESTART);
	struct itimerval it = {{0, 1000}, {0, 1000}};
	setitimer(ITIMER_REAL, &it, NULL);
	uint32_t n_iter = 0;
	uint64_t sum1 = 0;
	double dsum1 = 0;
	while (ticks < 5 || n_iter < 100000)
		compute(&sum1, &dsum1, n_iter++);
	struct itimerval off = {{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &off, NULL);
	uint64_t sum2 = 0;
	double dsum2 = 0;
	for (uint32_t i = 0; i < n_iter; i++)
		compute(&sum2, &dsum2, i);
	printf("async: match=%d\n", sum1 == sum2 && dsum1 == dsum2);

	/* A blocking read interrupted by a handled signal: restarted with SA_RESTART, -EINTR
	 * without. (The child signals at 200 ms and writes at 600 ms.) */
	for (int restart = 0; restart < 2; restart++) {
		int fds[2];
		if (pipe(fds) != 0)
			return 1;
		hits = 0;
		install_plain(SIGUSR1, on_usr1, restart ? SA_RESTART : 0);
		pid = fork();
		if (pid == 0) {
			usleep(200000);
			kill(getppid(), SIGUSR1);
			usleep(400000);
			write(fds[1], "z", 1);
			_exit(0);
		}
		char ch = 0;
		errno = 0;
		ssize_t got = read(fds[0], &ch, 1);
		int e = errno;
		waitpid(pid, &st, 0);
		printf("read-interrupted: restart=%d got=%zd eintr=%d hits=%d\n", restart, got,
		       e == EINTR, hits);
		close(fds[0]);
		close(fds[1]);
	}

	/* exec of /proc/self/exe is the program itself. */
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	self[n > 0 ? n : 0] = 0;
	const char *base = strrchr(self, '/');
	printf("readlink: %s\n", base ? base + 1 : self);
	pid = fork();
	if (pid == 0) {
		char *args[] = {"renamed", "exec-child", "x", NULL};
		execv("/proc/self/exe", args);
		_exit(99);
	}
	waitpid(pid, &st, 0);
	printf("exec: status=%d\n", WEXITSTATUS(st));
	errno = 0;
	execl("/nonexistent/program", "x", (char *)NULL);
	printf("exec-missing: errno-ENOENT=%d\n", errno == ENOENT);
	return 0;
}
