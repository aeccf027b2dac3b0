/* The guest's system calls. Guest pointers are host pointers (identity mapping), so most calls
 * go to the host kernel unchanged and the kernel checks their arguments. The rest are
 * emulated: memory (mm.c), signals (sig.c), the FS/GS bases (the soft CPU's, never the
 * host's), process creation (fork semantics only: no threads), exec (ferry-user re-executes
 * itself on the new program) and the few paths that name ferry-user rather than the guest
 * (/proc/self/exe). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fu.h"

#define ARCH_SET_GS 0x1001
#define ARCH_SET_FS 0x1002
#define ARCH_GET_FS 0x1003
#define ARCH_GET_GS 0x1004

/* Calls passed to the host as they are. */
static const uint16_t pass_list[] = {
    SYS_write,
    SYS_close,
    SYS_stat,
    SYS_fstat,
    SYS_lstat,
    SYS_poll,
    SYS_lseek,
    SYS_ioctl,
    SYS_pwrite64,
    SYS_writev,
    SYS_access,
    SYS_pipe,
    SYS_select,
    SYS_sched_yield,
    SYS_msync,
    SYS_mincore,
    SYS_shmget,
    SYS_shmctl,
    SYS_dup,
    SYS_dup2,
    SYS_pause,
    SYS_nanosleep,
    SYS_getitimer,
    SYS_alarm,
    SYS_setitimer,
    SYS_getpid,
    SYS_sendfile,
    SYS_socket,
    SYS_connect,
    SYS_accept,
    SYS_sendto,
    SYS_recvfrom,
    SYS_sendmsg,
    SYS_recvmsg,
    SYS_shutdown,
    SYS_bind,
    SYS_listen,
    SYS_getsockname,
    SYS_getpeername,
    SYS_socketpair,
    SYS_setsockopt,
    SYS_getsockopt,
    SYS_wait4,
    SYS_kill,
    SYS_uname,
    SYS_semget,
    SYS_semop,
    SYS_semctl,
    SYS_msgget,
    SYS_msgsnd,
    SYS_msgrcv,
    SYS_msgctl,
    SYS_fcntl,
    SYS_flock,
    SYS_fsync,
    SYS_fdatasync,
    SYS_truncate,
    SYS_ftruncate,
    SYS_getdents,
    SYS_getcwd,
    SYS_chdir,
    SYS_fchdir,
    SYS_rename,
    SYS_mkdir,
    SYS_rmdir,
    SYS_creat,
    SYS_link,
    SYS_unlink,
    SYS_symlink,
    SYS_chmod,
    SYS_fchmod,
    SYS_chown,
    SYS_fchown,
    SYS_lchown,
    SYS_umask,
    SYS_gettimeofday,
    SYS_getrlimit,
    SYS_getrusage,
    SYS_sysinfo,
    SYS_times,
    SYS_getuid,
    SYS_syslog,
    SYS_getgid,
    SYS_setuid,
    SYS_setgid,
    SYS_geteuid,
    SYS_getegid,
    SYS_setpgid,
    SYS_getppid,
    SYS_getpgrp,
    SYS_setsid,
    SYS_setreuid,
    SYS_setregid,
    SYS_getgroups,
    SYS_setgroups,
    SYS_setresuid,
    SYS_getresuid,
    SYS_setresgid,
    SYS_getresgid,
    SYS_getpgid,
    SYS_setfsuid,
    SYS_setfsgid,
    SYS_getsid,
    SYS_capget,
    SYS_capset,
    SYS_rt_sigtimedwait,
    SYS_rt_sigqueueinfo,
    SYS_utime,
    SYS_mknod,
    SYS_personality,
    SYS_ustat,
    SYS_statfs,
    SYS_fstatfs,
    SYS_getpriority,
    SYS_setpriority,
    SYS_sched_setparam,
    SYS_sched_getparam,
    SYS_sched_setscheduler,
    SYS_sched_getscheduler,
    SYS_sched_get_priority_max,
    SYS_sched_get_priority_min,
    SYS_sched_rr_get_interval,
    SYS_mlock,
    SYS_munlock,
    SYS_mlockall,
    SYS_munlockall,
    SYS_vhangup,
    SYS_prctl,
    SYS_setrlimit,
    SYS_chroot,
    SYS_sync,
    SYS_acct,
    SYS_settimeofday,
    SYS_sethostname,
    SYS_setdomainname,
    SYS_gettid,
    SYS_readahead,
    SYS_setxattr,
    SYS_lsetxattr,
    SYS_fsetxattr,
    SYS_getxattr,
    SYS_lgetxattr,
    SYS_fgetxattr,
    SYS_listxattr,
    SYS_llistxattr,
    SYS_flistxattr,
    SYS_removexattr,
    SYS_lremovexattr,
    SYS_fremovexattr,
    SYS_tkill,
    SYS_time,
    SYS_futex,
    SYS_sched_setaffinity,
    SYS_sched_getaffinity,
    SYS_getdents64,
    SYS_set_tid_address,
    SYS_fadvise64,
    SYS_timer_create,
    SYS_timer_settime,
    SYS_timer_gettime,
    SYS_timer_getoverrun,
    SYS_timer_delete,
    SYS_clock_settime,
    SYS_clock_gettime,
    SYS_clock_getres,
    SYS_clock_nanosleep,
    SYS_epoll_create,
    SYS_epoll_wait,
    SYS_epoll_ctl,
    SYS_tgkill,
    SYS_utimes,
    SYS_mq_open,
    SYS_mq_unlink,
    SYS_mq_timedsend,
    SYS_mq_timedreceive,
    SYS_mq_notify,
    SYS_mq_getsetattr,
    SYS_waitid,
    SYS_ioprio_set,
    SYS_ioprio_get,
    SYS_inotify_init,
    SYS_inotify_add_watch,
    SYS_inotify_rm_watch,
    SYS_mkdirat,
    SYS_mknodat,
    SYS_fchownat,
    SYS_futimesat,
    SYS_newfstatat,
    SYS_unlinkat,
    SYS_renameat,
    SYS_linkat,
    SYS_symlinkat,
    SYS_fchmodat,
    SYS_faccessat,
    SYS_pselect6,
    SYS_ppoll,
    SYS_set_robust_list,
    SYS_get_robust_list,
    SYS_splice,
    SYS_tee,
    SYS_sync_file_range,
    SYS_vmsplice,
    SYS_utimensat,
    SYS_epoll_pwait,
    SYS_signalfd,
    SYS_timerfd_create,
    SYS_eventfd,
    SYS_fallocate,
    SYS_timerfd_settime,
    SYS_timerfd_gettime,
    SYS_accept4,
    SYS_signalfd4,
    SYS_eventfd2,
    SYS_epoll_create1,
    SYS_dup3,
    SYS_pipe2,
    SYS_inotify_init1,
    SYS_pwritev,
    SYS_rt_tgsigqueueinfo,
    SYS_recvmmsg,
    SYS_prlimit64,
    SYS_name_to_handle_at,
    SYS_open_by_handle_at,
    SYS_syncfs,
    SYS_sendmmsg,
    SYS_getcpu,
    SYS_kcmp,
    SYS_renameat2,
    SYS_getrandom,
    SYS_memfd_create,
    SYS_copy_file_range,
    SYS_pwritev2,
    SYS_statx,
    SYS_pidfd_send_signal,
    SYS_pidfd_open,
    SYS_close_range,
    SYS_faccessat2,
    SYS_epoll_pwait2,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_sched_setattr,
    SYS_sched_getattr,
};

static uint8_t pass_map[512];
static uint8_t warned[512];

static long host(long nr, const uint64_t a[6])
{
	long r = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
	return r == -1 ? -errno : r;
}

/* ---- paths that mean ferry-user to the host but the guest program to the guest ------------ */

static bool is_self_exe(const char *p)
{
	if (!strcmp(p, "/proc/self/exe") || !strcmp(p, "/proc/thread-self/exe"))
		return true;
	char mine[64];
	snprintf(mine, sizeof(mine), "/proc/%d/exe", (int)getpid());
	return !strcmp(p, mine);
}

/* Whether the guest path at addr, looked up from dirfd, names /proc/self/exe. */
static bool names_self_exe(int dirfd, uint64_t addr)
{
	char *p = NULL;
	if (guest_strdup(addr, PATH_MAX, &p) != 0)
		return false; /* the host call reports the error */
	bool r = (p[0] == '/' || dirfd == AT_FDCWD) && is_self_exe(p);
	free(p);
	return r;
}

static long sys_readlinkat(int dirfd, uint64_t path, uint64_t buf, uint64_t size, long nr,
			   const uint64_t a[6])
{
	if (!names_self_exe(dirfd, path))
		return host(nr, a);
	if ((int64_t)size <= 0)
		return -EINVAL;
	size_t n = strlen(fu_exe_path);
	if (n > size)
		n = size;
	if (guest_write(buf, fu_exe_path, n) != 0)
		return -EFAULT;
	return (long)n;
}

/* ---- read into memory that may hold decoded code --------------------------------------------- */

static void iov_changed(uint64_t iov, uint64_t cnt, uint64_t done)
{
	for (uint64_t i = 0; i < cnt && done; i++) {
		struct iovec v;
		if (guest_read(&v, iov + i * sizeof(v), sizeof(v)) != 0)
			return;
		uint64_t n = v.iov_len < done ? v.iov_len : done;
		uint64_t base = (uint64_t)(uintptr_t)v.iov_base;
		mm_code_changed(base, base + n);
		done -= n;
	}
}

/* ---- processes ---------------------------------------------------------------------------------- */

static long sys_clone(struct soft_cpu *c, uint64_t flags, uint64_t newsp, uint64_t ptid,
		      uint64_t ctid, uint64_t tls)
{
	if ((flags & CLONE_THREAD) || ((flags & CLONE_VM) && !(flags & CLONE_VFORK))) {
		if (!warned[SYS_clone]++)
			fu_log("clone(0x%llx): threads are not supported",
			       (unsigned long long)flags);
		return -ENOSYS;
	}
	/* A vfork child would share the parent's memory, which the interpreter cannot: it is a
	 * fork, whose child runs on its own copy. */
	uint64_t hflags = flags & ~(uint64_t)(CLONE_VM | CLONE_VFORK | CLONE_SETTLS);
	uint64_t tidflags = CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID;
	long pid;
	if ((hflags & CSIGNAL) == SIGCHLD && (hflags & ~(uint64_t)(CSIGNAL | tidflags)) == 0) {
		/* Plain fork: through glibc so ferry-user's own libc state follows. */
		pid = fork();
		if (pid < 0)
			return -errno;
		if (pid == 0) {
			if (flags & CLONE_CHILD_SETTID) {
				int tid = (int)gettid();
				guest_write(ctid, &tid, sizeof(tid));
			}
			if (flags & CLONE_CHILD_CLEARTID)
				syscall(SYS_set_tid_address, ctid);
		}
	} else {
		pid = syscall(SYS_clone, hflags, 0, ptid, ctid, 0);
		if (pid < 0)
			return -errno;
	}
	if (pid == 0) {
		sig_after_fork();
		fu_stats_restart();
		if (flags & CLONE_SETTLS)
			c->seg[SEG_FS].base = tls;
		if (newsp)
			c->gpr[GPR_RSP] = newsp;
	}
	return pid;
}

static void free_strv(char **v)
{
	if (!v)
		return;
	for (size_t i = 0; v[i]; i++)
		free(v[i]);
	free(v);
}

/* A guest argv/envp array into a malloc'ed NULL-terminated copy. */
static long copy_strv(uint64_t addr, char ***out, size_t *count)
{
	size_t n = 0, cap = 16, total = 0;
	char **v = calloc(cap, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (; addr; n++) {
		uint64_t p;
		if (guest_read(&p, addr + n * 8, 8) != 0) {
			free_strv(v);
			return -EFAULT;
		}
		if (!p)
			break;
		if (n + 2 > cap) {
			char **nv = realloc(v, cap * 2 * sizeof(*v));
			if (!nv) {
				free_strv(v);
				return -ENOMEM;
			}
			memset(nv + cap, 0, cap * sizeof(*v));
			v = nv;
			cap *= 2;
		}
		long r = guest_strdup(p, (size_t)128 * 1024, &v[n]);
		if (r) {
			free_strv(v);
			return r == -ENAMETOOLONG ? -E2BIG : r;
		}
		total += strlen(v[n]) + 1 + 8;
		if (total > (size_t)2 * 1024 * 1024) {
			free_strv(v);
			return -E2BIG;
		}
	}
	*out = v;
	*count = n;
	return 0;
}

/* The file an execveat names, as a path the new ferry-user can open. */
static long exec_path(int dirfd, const char *path, int flags, char **out)
{
	char link[64], dir[PATH_MAX];
	if (flags & ~(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
		return -EINVAL;
	if (path[0] == '/' || (dirfd == AT_FDCWD && path[0])) {
		*out = strdup(is_self_exe(path) ? fu_exe_path : path);
	} else {
		snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
		ssize_t n = readlink(link, dir, sizeof(dir) - 1);
		if (n < 0)
			return -EBADF;
		dir[n] = 0;
		if (!path[0]) {
			if (!(flags & AT_EMPTY_PATH))
				return -ENOENT;
			*out = strdup(dir);
		} else if (asprintf(out, "%s/%s", dir, path) < 0) {
			*out = NULL;
		}
	}
	return *out ? 0 : -ENOMEM;
}

static long sys_execve(int dirfd, uint64_t path_addr, uint64_t argv_addr, uint64_t envp_addr,
		       int flags)
{
	char *gpath = NULL, *file = NULL, **argv = NULL, **envp = NULL, **hargv = NULL;
	size_t argc = 0, envc = 0;
	long r = guest_strdup(path_addr, PATH_MAX, &gpath);
	if (r)
		return r;
	if ((r = exec_path(dirfd, gpath, flags, &file)) != 0)
		goto out;
	if ((r = copy_strv(argv_addr, &argv, &argc)) != 0)
		goto out;
	if ((r = copy_strv(envp_addr, &envp, &envc)) != 0)
		goto out;
	/* Room for: ferry-user, -v, --stats, --argv0 A, --, FILE, up to two script words, argv,
	 * NULL. */
	hargv = calloc(argc + 16, sizeof(*hargv));
	if (!hargv) {
		r = -ENOMEM;
		goto out;
	}
	/* Follow "#!" lines the way the kernel does, keeping the words in front of argv[1..]. */
	char interp[4][256], arg[4][256];
	const char *front[12];
	size_t nfront = 0;
	const char *argv0 = argc ? argv[0] : "";
	const char *cur = file;
	int depth = 0;
	for (;; depth++) {
		int k = elf_probe(cur, interp[depth & 3], sizeof(interp[0]), arg[depth & 3],
				  sizeof(arg[0]));
		if (k < 0) {
			r = k;
			goto out;
		}
		if (k == 0)
			break;
		if (depth == 3) {
			r = -ELOOP;
			goto out;
		}
		/* New argv: interp [arg] script original-argv[1..]; the script path replaces the
		 * old argv[0]. */
		const char *add[3];
		size_t nadd = 0;
		if (arg[depth][0])
			add[nadd++] = arg[depth];
		add[nadd++] = cur;
		memmove(front + nadd, front, nfront * sizeof(*front));
		memcpy(front, add, nadd * sizeof(*add));
		nfront += nadd;
		argv0 = interp[depth];
		cur = interp[depth];
	}
	size_t h = 0;
	hargv[h++] = fu_self_name;
	if (fu_opts.verbose)
		hargv[h++] = "-v";
	if (fu_opts.stats)
		hargv[h++] = "--stats";
	hargv[h++] = "--argv0";
	hargv[h++] = (char *)argv0;
	hargv[h++] = "--";
	hargv[h++] = (char *)cur;
	for (size_t i = 0; i < nfront; i++)
		hargv[h++] = (char *)front[i];
	for (size_t i = 1; i < argc; i++)
		hargv[h++] = argv[i];
	hargv[h] = NULL;
	fu_info("execve %s", cur);
	fu_print_stats();
	sig_before_exec();
	execve("/proc/self/exe", hargv, envp);
	r = -errno;
out:
	free(gpath);
	free(file);
	free_strv(argv);
	free_strv(envp);
	free(hargv);
	return r;
}

/* ---- dispatch ---------------------------------------------------------------------------------- */

static bool restartable(long nr)
{
	switch (nr) {
	case SYS_read:
	case SYS_write:
	case SYS_readv:
	case SYS_writev:
	case SYS_pread64:
	case SYS_pwrite64:
	case SYS_preadv:
	case SYS_pwritev:
	case SYS_ioctl:
	case SYS_open:
	case SYS_openat:
	case SYS_creat:
	case SYS_wait4:
	case SYS_waitid:
	case SYS_accept:
	case SYS_accept4:
	case SYS_connect:
	case SYS_recvfrom:
	case SYS_recvmsg:
	case SYS_recvmmsg:
	case SYS_sendto:
	case SYS_sendmsg:
	case SYS_sendmmsg:
	case SYS_flock:
	case SYS_fcntl:
	case SYS_futex:
	case SYS_getrandom:
	case SYS_sendfile:
	case SYS_splice:
	case SYS_copy_file_range:
	case SYS_fsync:
	case SYS_ftruncate:
		return true;
	default:
		return false;
	}
}

static long sys_arch_prctl(struct soft_cpu *c, int code, uint64_t addr)
{
	switch (code) {
	case ARCH_SET_FS:
	case ARCH_SET_GS:
		if ((uint64_t)((int64_t)(addr << 16) >> 16) != addr)
			return -EPERM;
		c->seg[code == ARCH_SET_FS ? SEG_FS : SEG_GS].base = addr;
		return 0;
	case ARCH_GET_FS:
	case ARCH_GET_GS: {
		uint64_t v = c->seg[code == ARCH_GET_FS ? SEG_FS : SEG_GS].base;
		return guest_write(addr, &v, sizeof(v));
	}
	default:
		return -EINVAL;
	}
}

void sys_dispatch(struct soft_cpu *c)
{
	static bool init;
	if (!init) {
		for (size_t i = 0; i < sizeof(pass_list) / sizeof(pass_list[0]); i++)
			pass_map[pass_list[i]] = 1;
		init = true;
	}
	if (sig_pending()) {
		/* A signal came in while the guest ran up to here: take it before the call, as if it
		 * had arrived just before the syscall instruction, which runs again after the
		 * handler. (Otherwise a blocking call could wait with the signal pending.) */
		c->rip = c->insn_start;
		return;
	}
	long nr = (long)c->gpr[GPR_RAX];
	uint64_t a[6] = {c->gpr[GPR_RDI], c->gpr[GPR_RSI], c->gpr[GPR_RDX],
			 c->gpr[GPR_R10], c->gpr[GPR_R8],  c->gpr[GPR_R9]};
	uint64_t sys_rip = c->insn_start;
	/* What the syscall instruction does to RCX and R11. */
	c->gpr[GPR_RCX] = c->rip;
	c->gpr[GPR_R11] = soft_flags(c) & ~(uint64_t)(1u << 16);
	long r;
	switch (nr) {
	case SYS_read:
	case SYS_pread64:
		r = host(nr, a);
		if (r > 0)
			mm_code_changed(a[1], a[1] + (uint64_t)r);
		break;
	case SYS_readv:
	case SYS_preadv:
	case SYS_preadv2:
		r = host(nr, a);
		if (r > 0)
			iov_changed(a[1], a[2], (uint64_t)r);
		break;
	case SYS_open:
		if (names_self_exe(AT_FDCWD, a[0]))
			a[0] = (uint64_t)(uintptr_t)fu_exe_path;
		r = host(nr, a);
		break;
	case SYS_openat:
		if (names_self_exe((int)a[0], a[1]))
			a[1] = (uint64_t)(uintptr_t)fu_exe_path;
		r = host(nr, a);
		break;
	case SYS_readlink:
		r = sys_readlinkat(AT_FDCWD, a[0], a[1], a[2], nr, a);
		break;
	case SYS_readlinkat:
		r = sys_readlinkat((int)a[0], a[1], a[2], a[3], nr, a);
		break;
	case SYS_brk:
		r = (long)mm_brk(a[0]);
		break;
	case SYS_mmap:
		r = mm_mmap(a[0], a[1], (int)a[2], (int)a[3], (int)a[4], a[5]);
		break;
	case SYS_munmap:
		r = mm_munmap(a[0], a[1]);
		break;
	case SYS_mprotect:
		r = mm_mprotect(a[0], a[1], (int)a[2]);
		break;
	case SYS_mremap:
		r = mm_mremap(a[0], a[1], a[2], (int)a[3], a[4]);
		break;
	case SYS_madvise:
		r = mm_madvise(a[0], a[1], (int)a[2]);
		break;
	case SYS_arch_prctl:
		r = sys_arch_prctl(c, (int)a[0], a[1]);
		break;
	case SYS_exit:
	case SYS_exit_group:
		fu_exit((int)(a[0] & 0xff));
	case SYS_fork:
	case SYS_vfork:
		r = sys_clone(c, SIGCHLD, 0, 0, 0, 0);
		break;
	case SYS_clone:
		r = sys_clone(c, a[0], a[1], a[2], a[3], a[4]);
		break;
	case SYS_execve:
		r = sys_execve(AT_FDCWD, a[0], a[1], a[2], 0);
		break;
	case SYS_execveat:
		r = sys_execve((int)a[0], a[1], a[2], a[3], (int)a[4]);
		break;
	case SYS_rt_sigaction:
		r = sig_rt_sigaction((int)a[0], a[1], a[2], a[3]);
		break;
	case SYS_rt_sigprocmask:
		r = sig_rt_sigprocmask((int)a[0], a[1], a[2], a[3]);
		break;
	case SYS_rt_sigpending:
		r = sig_rt_sigpending(a[0], a[1]);
		break;
	case SYS_rt_sigsuspend:
		r = sig_rt_sigsuspend(a[0], a[1]);
		break;
	case SYS_sigaltstack:
		r = sig_sigaltstack(c, a[0], a[1]);
		break;
	case SYS_rt_sigreturn:
		if (!sig_rt_sigreturn(c)) {
			fu_log("rt_sigreturn: bad signal frame at 0x%llx",
			       (unsigned long long)c->gpr[GPR_RSP]);
			fu_die_by_signal(SIGSEGV);
		}
		return; /* RAX is the interrupted code's */
	case SYS_rseq:
	case SYS_clone3:
		r = -ENOSYS; /* glibc does without rseq and falls back to clone */
		break;
	default:
		if (nr >= 0 && nr < (long)sizeof(pass_map) && pass_map[nr]) {
			r = host(nr, a);
		} else {
			if (nr >= 0 && nr < (long)sizeof(warned) && !warned[nr]++)
				fu_info("system call %ld is not supported: -ENOSYS", nr);
			r = -ENOSYS;
		}
		break;
	}
	if (r == -EINTR && restartable(nr) && sig_restart_wanted()) {
		/* As Linux does for -ERESTARTSYS: back onto the syscall instruction, to run again
		 * once the handler returns. */
		c->rip = sys_rip;
		r = nr;
	}
	c->gpr[GPR_RAX] = (uint64_t)r;
}
