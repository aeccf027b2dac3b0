/* ferry-user: runs a static (or dynamic) Linux x86-64 program on the soft CPU, with its system
 * calls passed through to the host. A test tool for the interpreter, not part of ferry.
 *
 *   ferry-user [-v] [--stats] [--argv0 NAME] [--] PROGRAM [ARGS...]
 *
 * --argv0 sets the argv[0] the program sees (PROGRAM by default); execve uses it. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fu.h"
#include "util/log.h"

struct fu_opts fu_opts;
struct soft_cpu *fu_cpu;
char fu_exe_path[4096];
char fu_self_name[] = "ferry-user";

static struct timespec t_start;
static bool stats_done;

static void vmsg(const char *fmt, va_list ap)
{
	char line[1024];
	vsnprintf(line, sizeof(line), fmt, ap);
	fprintf(stderr, "ferry-user: %s\n", line);
}

void fu_log(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
}

void fu_info(const char *fmt, ...)
{
	if (!fu_opts.verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
}

void fu_print_stats(void)
{
	if (!fu_opts.stats || stats_done || !fu_cpu)
		return;
	stats_done = true;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	double secs =
	    (double)(now.tv_sec - t_start.tv_sec) + (double)(now.tv_nsec - t_start.tv_nsec) / 1e9;
	double mips = secs > 0 ? (double)fu_cpu->icount / secs / 1e6 : 0;
	fu_log("pid %d: %llu instructions in %.3f s, %.1f MIPS; blocks decoded %llu, "
	       "instructions decoded %llu, block invalidations %llu, TLB misses %llu",
	       (int)getpid(), (unsigned long long)fu_cpu->icount, secs, mips,
	       (unsigned long long)soft_stats.blocks_decoded,
	       (unsigned long long)soft_stats.insns_decoded,
	       (unsigned long long)soft_stats.block_invalidations,
	       (unsigned long long)soft_stats.tlb_misses);
}

void fu_stats_restart(void)
{
	clock_gettime(CLOCK_MONOTONIC, &t_start);
	if (fu_cpu)
		fu_cpu->icount = 0;
}

void fu_exit(int status)
{
	fu_print_stats();
	_exit(status);
}

void fu_die_by_signal(int sig)
{
	fu_print_stats();
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigaction(sig, &sa, NULL);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, sig);
	sigprocmask(SIG_UNBLOCK, &s, NULL);
	raise(sig);
	_exit(128 + sig);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: ferry-user [-v] [--stats] [--argv0 NAME] [--] PROGRAM [ARGS...]\n"
		   "Runs a Linux x86-64 program on ferry's soft CPU (a test tool).\n"
		   "  -v            log unsupported system calls, execs and engine messages\n"
		   "  --stats       print instructions, time and MIPS to stderr at exit\n"
		   "  --argv0 NAME  the argv[0] the program sees (default: PROGRAM)\n");
}

static void run(struct soft_cpu *c)
{
	for (;;) {
		switch (soft_cpu_run(c)) {
		case SOFT_EXIT_SYSCALL:
			sys_dispatch(c);
			break;
		case SOFT_EXIT_EXCEPTION:
			sig_fault(c);
			break;
		case SOFT_EXIT_HLT: /* a privileged instruction at CPL 3 */
			c->exc_vector = EXC_GP;
			c->exc_error = 0;
			sig_fault(c);
			break;
		case SOFT_EXIT_SHUTDOWN: /* system mode only: user mode has no IDT to fault through */
		case SOFT_EXIT_FAIL:
			fu_log("soft engine failure at rip 0x%llx: %s", (unsigned long long)c->rip,
			       c->fail_msg);
			fu_exit(125);
		case SOFT_EXIT_STOP:
		case SOFT_EXIT_NONE:
			break;
		}
		sig_deliver_pending(c);
	}
}

int main(int argc, char **argv)
{
	const char *argv0 = NULL;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *o = argv[i];
		if (!strcmp(o, "--")) {
			i++;
			break;
		} else if (!strcmp(o, "-v")) {
			fu_opts.verbose = true;
		} else if (!strcmp(o, "--stats")) {
			fu_opts.stats = true;
		} else if (!strcmp(o, "--argv0") && i + 1 < argc) {
			argv0 = argv[++i];
		} else if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	log_verbose = fu_opts.verbose;
	const char *prog = argv[i];
	/* The guest's argv; a "#!" script runs its interpreter, as execve would, which puts up
	 * to two words in front per level (three levels at most). */
	size_t n = (size_t)(argc - i);
	char **gargv = calloc(n + 8, sizeof(*gargv));
	if (!gargv)
		return 127;
	memcpy(gargv, &argv[i], n * sizeof(*gargv));
	if (argv0)
		gargv[0] = (char *)argv0;
	static char interp[4][256], arg[4][256];
	int rc = 127;
	for (int depth = 0;
	     elf_probe(prog, interp[depth], sizeof(interp[0]), arg[depth], sizeof(arg[0])) == 1;
	     depth++) {
		if (depth == 3) {
			fu_log("%s: %s", prog, strerror(ELOOP));
			goto fail;
		}
		size_t front = arg[depth][0] ? 3 : 2;
		memmove(gargv + front, gargv + 1, (n - 1) * sizeof(*gargv));
		gargv[0] = interp[depth];
		if (front == 3)
			gargv[1] = arg[depth];
		gargv[front - 1] = (char *)prog;
		n = n - 1 + front;
		gargv[n] = NULL;
		prog = interp[depth];
	}
	if (!realpath(prog, fu_exe_path)) {
		fu_log("%s: %s", prog, strerror(errno));
		goto fail;
	}

	struct soft_mem_ops ops = {.page_ptr = mm_page_ptr, .opaque = NULL};
	fu_cpu = soft_cpu_create(&ops, true);
	if (!fu_cpu) {
		fu_log("cannot create the soft CPU");
		goto fail;
	}
	sig_init();
	struct fu_image img;
	extern char **environ;
	if (elf_load(prog, gargv, environ, &img) != 0)
		goto fail;
	free(gargv);

	struct soft_cpu *c = fu_cpu;
	memset(c->gpr, 0, sizeof(c->gpr));
	c->gpr[GPR_RSP] = img.rsp;
	c->rip = img.entry;
	soft_set_flags(c, 0, FL_ARITH);
	c->rflags = RFLAGS_FIXED | RFLAGS_IF;
	clock_gettime(CLOCK_MONOTONIC, &t_start);
	fu_info("%s: entry 0x%llx, stack 0x%llx", prog, (unsigned long long)img.entry,
		(unsigned long long)img.rsp);
	run(c);
	return 0;
fail:
	free(gargv);
	return rc;
}
