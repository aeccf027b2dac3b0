/* ferry-user: runs a Linux x86-64 user program on the soft CPU, passing its system calls through
 * to the host. A test tool for the interpreter, not part of ferry.
 *
 * Guest virtual addresses are ferry-user's own addresses (identity mapping): the program's
 * segments, stack, heap and mappings live in this process, and a table of the guest's mappings
 * (mm.c) decides what the soft CPU may touch. */
#ifndef FERRY_USER_H
#define FERRY_USER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/soft/soft.h"

#define FU_PAGE         4096ull
#define FU_PAGE_DOWN(a) ((uint64_t)(a) & ~(FU_PAGE - 1))
#define FU_PAGE_UP(a)   (((uint64_t)(a) + FU_PAGE - 1) & ~(FU_PAGE - 1))

/* ---- process-wide state (main.c) ------------------------------------------------------------ */

struct fu_opts {
	bool verbose, stats;
};

extern struct fu_opts fu_opts;
extern struct soft_cpu *fu_cpu;
/* The guest program's file, absolute: what /proc/self/exe means to the guest. */
extern char fu_exe_path[4096];
/* argv[0] for ferry-user itself when execve runs it again. */
extern char fu_self_name[];

void fu_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));  /* always */
void fu_info(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* with -v */
/* Prints the --stats lines (if asked for) once per process. */
void fu_print_stats(void);
/* A forked child starts its own --stats account (count and clock). */
void fu_stats_restart(void);
/* Leaves the process with status (exit, exit_group). */
__attribute__((noreturn)) void fu_exit(int status);
/* Dies of sig the way a native process would, so a parent sees a signal death. */
__attribute__((noreturn)) void fu_die_by_signal(int sig);

/* ---- guest memory (mm.c) ---------------------------------------------------------------------- */

/* Records [start, end) as guest memory with prot (replacing what was recorded there). */
void mm_add(uint64_t start, uint64_t end, int prot);
void mm_remove(uint64_t start, uint64_t end);
/* True if every byte of [start, start + len) is guest memory allowing prot (0: mapped at all;
 * PROT_READ: anything but PROT_NONE, as on x86; PROT_WRITE, PROT_EXEC: those bits). */
bool mm_check(uint64_t start, uint64_t len, int prot);
/* The soft_mem_ops page_ptr callback. */
void *mm_page_ptr(void *opaque, uint64_t gpa, enum mem_access acc, bool *writable);
/* Drops decoded code on executable guest pages in [start, end). */
void mm_code_changed(uint64_t start, uint64_t end);

/* Copies to or from guest memory after checking it the way the kernel would: -EFAULT. */
int guest_read(void *dst, uint64_t src, size_t len);
int guest_write(uint64_t dst, const void *src, size_t len);
/* A NUL-terminated guest string of at most max bytes into a malloc'ed copy: -EFAULT,
 * -ENAMETOOLONG (too long) or -ENOMEM. */
int guest_strdup(uint64_t addr, size_t max, char **out);

/* The guest's program break: set up once after loading, then the brk system call. */
void mm_brk_init(uint64_t start);
uint64_t mm_brk(uint64_t want);
/* The memory system calls, emulated: results as the kernel returns them (-errno). */
long mm_mmap(uint64_t addr, uint64_t len, int prot, int flags, int fd, uint64_t off);
long mm_munmap(uint64_t addr, uint64_t len);
long mm_mprotect(uint64_t addr, uint64_t len, int prot);
long mm_mremap(uint64_t old, uint64_t old_len, uint64_t new_len, int flags, uint64_t new_addr);
long mm_madvise(uint64_t addr, uint64_t len, int advice);

/* ---- loading (elf.c) -------------------------------------------------------------------------- */

struct fu_image {
	uint64_t entry; /* where the CPU starts: the interpreter's entry if there is one */
	uint64_t rsp;   /* the initial stack pointer (argc) */
};

/* Loads path (a static or dynamic x86-64 ELF executable) and builds the initial stack with
 * argv (argv[0] as the program sees it) and envp. Returns 0, or -1 after printing why. */
int elf_load(const char *path, char *const argv[], char *const envp[], struct fu_image *img);
/* What the kernel's execve would say of path before replacing the process: 0 for an x86-64 ELF
 * this tool can load, 1 for a "#!" script (interp and arg filled, arg may be empty), or
 * -errno. */
int elf_probe(const char *path, char *interp, size_t interp_len, char *arg, size_t arg_len);

/* ---- system calls (sys.c) --------------------------------------------------------------------- */

/* Handles the syscall instruction the CPU stopped at. */
void sys_dispatch(struct soft_cpu *c);

/* ---- signals (sig.c) ------------------------------------------------------------------------- */

void sig_init(void);
/* Delivers the pending signals the guest does not block. */
void sig_deliver_pending(struct soft_cpu *c);
/* A fault the CPU returned (SOFT_EXIT_EXCEPTION): signal the guest or die of it. */
void sig_fault(struct soft_cpu *c);
/* Whether a signal is waiting that the guest does not block. */
bool sig_pending(void);
/* After an -EINTR: whether the signal about to be delivered wants the call restarted. */
bool sig_restart_wanted(void);
/* In a fork child: the parent's pending signals are not the child's. */
void sig_after_fork(void);

long sig_rt_sigaction(int sig, uint64_t act, uint64_t oact, uint64_t size);
long sig_rt_sigprocmask(int how, uint64_t set, uint64_t oset, uint64_t size);
long sig_rt_sigpending(uint64_t set, uint64_t size);
long sig_rt_sigsuspend(uint64_t mask, uint64_t size);
long sig_sigaltstack(struct soft_cpu *c, uint64_t ss, uint64_t old);
/* Restores the state saved by the signal frame; false if the frame was bad (the guest then
 * gets a SIGSEGV, as from the kernel). */
bool sig_rt_sigreturn(struct soft_cpu *c);
/* Before execve: signals caught but blocked by the guest go back to the kernel, pending, so
 * the new program gets them as it would natively. */
void sig_before_exec(void);

#endif
