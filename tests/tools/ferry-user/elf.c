/* Loading an x86-64 ELF executable into ferry-user's address space, at the addresses the guest
 * will use, and building the initial stack as the Linux x86-64 ABI describes it: argc, argv,
 * envp and the auxiliary vector, with the strings above them.
 *
 * Segments are anonymous memory filled with pread rather than file mappings: that zeroes the
 * bss for free and copes with segments sharing a page. A static executable needs nothing else;
 * a dynamic one gets its PT_INTERP loader loaded too, which then maps the libraries itself
 * through the emulated mmap. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fu.h"

#define STACK_SIZE  (8ull << 20)
#define STACK_GUARD (1ull << 20)
#define MAX_PHDRS   128
/* Where a position-independent main program goes if that space is free (else where the kernel
 * puts it): low, so its brk has room to grow. */
#define DYN_BASE 0x200000000ull

struct loaded {
	uint64_t base, entry, phdr, max_end;
	unsigned phnum;
	bool has_interp, exec_stack;
	char interp[PATH_MAX];
};

static int read_full(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int prot_of(uint32_t pf)
{
	return (pf & PF_R ? PROT_READ : 0) | (pf & PF_W ? PROT_WRITE : 0) |
	       (pf & PF_X ? PROT_EXEC : 0);
}

static bool ehdr_ok(const Elf64_Ehdr *eh)
{
	return memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
	       eh->e_ident[EI_DATA] == ELFDATA2LSB && eh->e_machine == EM_X86_64 &&
	       (eh->e_type == ET_EXEC || eh->e_type == ET_DYN);
}

static int load_one(const char *path, struct loaded *l, bool is_interp)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fu_log("%s: %s", path, strerror(errno));
		return -1;
	}
	struct stat st;
	Elf64_Ehdr eh;
	Elf64_Phdr ph[MAX_PHDRS] = {0};
	const char *why = NULL;
	if (fstat(fd, &st) != 0 || read_full(fd, &eh, sizeof(eh), 0) != 0)
		why = "cannot read the ELF header";
	else if (!ehdr_ok(&eh))
		why = "not an x86-64 ELF executable";
	else if (is_interp && eh.e_type != ET_DYN)
		why = "the program interpreter is not position-independent";
	else if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > MAX_PHDRS)
		why = "bad program headers";
	else if (read_full(fd, ph, eh.e_phnum * sizeof(Elf64_Phdr), eh.e_phoff) != 0)
		why = "cannot read the program headers";
	if (why) {
		fu_log("%s: %s", path, why);
		close(fd);
		return -1;
	}

	uint64_t lo = UINT64_MAX, hi = 0;
	memset(l, 0, sizeof(*l));
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		const Elf64_Phdr *p = &ph[i];
		if (p->p_type == PT_GNU_STACK)
			l->exec_stack = (p->p_flags & PF_X) != 0;
		if (p->p_type == PT_INTERP && !is_interp) {
			if (p->p_filesz == 0 || p->p_filesz >= sizeof(l->interp) ||
			    read_full(fd, l->interp, p->p_filesz, p->p_offset) != 0) {
				why = "bad PT_INTERP";
				break;
			}
			l->interp[p->p_filesz] = 0;
			l->has_interp = true;
		}
		if (p->p_type != PT_LOAD)
			continue;
		if (p->p_filesz > p->p_memsz || p->p_vaddr + p->p_memsz < p->p_vaddr ||
		    p->p_offset + p->p_filesz > (uint64_t)st.st_size ||
		    (p->p_vaddr & (FU_PAGE - 1)) != (p->p_offset & (FU_PAGE - 1))) {
			why = "bad PT_LOAD segment";
			break;
		}
		if (FU_PAGE_DOWN(p->p_vaddr) < lo)
			lo = FU_PAGE_DOWN(p->p_vaddr);
		if (FU_PAGE_UP(p->p_vaddr + p->p_memsz) > hi)
			hi = FU_PAGE_UP(p->p_vaddr + p->p_memsz);
	}
	if (!why && lo >= hi)
		why = "no loadable segments";
	if (why) {
		fu_log("%s: %s", path, why);
		close(fd);
		return -1;
	}

	/* One read-write reservation for the whole image; segments are filled in it, then get
	 * their protections, and the holes between them are given back. */
	uint64_t span = hi - lo, base = 0;
	void *m;
	if (eh.e_type == ET_EXEC) {
		m = mmap((void *)(uintptr_t)lo, span, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (m == MAP_FAILED || (uint64_t)(uintptr_t)m != lo) {
			fu_log("%s: cannot map 0x%llx-0x%llx: %s", path, (unsigned long long)lo,
			       (unsigned long long)hi,
			       m == MAP_FAILED ? strerror(errno) : "address in use");
			close(fd);
			return -1;
		}
	} else {
		m = MAP_FAILED;
		if (!is_interp)
			m = mmap((void *)(uintptr_t)DYN_BASE, span, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (m == MAP_FAILED)
			m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				 -1, 0);
		if (m == MAP_FAILED) {
			fu_log("%s: cannot map %llu bytes: %s", path, (unsigned long long)span,
			       strerror(errno));
			close(fd);
			return -1;
		}
		base = (uint64_t)(uintptr_t)m - lo;
	}

	uint64_t prev_end = lo, prev_prot = 0;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		const Elf64_Phdr *p = &ph[i];
		if (p->p_type != PT_LOAD)
			continue;
		if (p->p_filesz && read_full(fd, (void *)(uintptr_t)(base + p->p_vaddr),
					     p->p_filesz, p->p_offset) != 0) {
			fu_log("%s: cannot read a segment", path);
			close(fd);
			return -1;
		}
		uint64_t s = FU_PAGE_DOWN(p->p_vaddr), e = FU_PAGE_UP(p->p_vaddr + p->p_memsz);
		int prot = prot_of(p->p_flags);
		if (s > prev_end)
			munmap((void *)(uintptr_t)(base + prev_end), s - prev_end);
		if (s < prev_end) {
			/* Shares its first page(s) with the previous segment: both need access. */
			uint64_t ov = e < prev_end ? e : prev_end;
			int both = prot | (int)prev_prot;
			mprotect((void *)(uintptr_t)(base + s), ov - s, both);
			mm_add(base + s, base + ov, both);
			s = ov;
		}
		if (s < e) {
			mprotect((void *)(uintptr_t)(base + s), e - s, prot);
			mm_add(base + s, base + e, prot);
		}
		if (e > prev_end) {
			prev_end = e;
			prev_prot = (uint64_t)prot;
		}
	}
	if (hi > prev_end)
		munmap((void *)(uintptr_t)(base + prev_end), hi - prev_end);

	l->base = base;
	l->entry = base + eh.e_entry;
	l->phnum = eh.e_phnum;
	l->max_end = base + hi;
	for (unsigned i = 0; i < eh.e_phnum; i++)
		if (ph[i].p_type == PT_PHDR)
			l->phdr = base + ph[i].p_vaddr;
	for (unsigned i = 0; i < eh.e_phnum && !l->phdr; i++)
		if (ph[i].p_type == PT_LOAD && eh.e_phoff >= ph[i].p_offset &&
		    eh.e_phoff < ph[i].p_offset + ph[i].p_filesz)
			l->phdr = base + ph[i].p_vaddr + (eh.e_phoff - ph[i].p_offset);
	close(fd);
	return 0;
}

int elf_probe(const char *path, char *interp, size_t interp_len, char *arg, size_t arg_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EACCES;
	}
	if (access(path, X_OK) != 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	char buf[256];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	if (n < 0)
		return -EIO;
	buf[n] = 0;
	if (n >= 2 && buf[0] == '#' && buf[1] == '!') {
		/* The kernel's rules: the first line, the interpreter up to a blank, the rest (trimmed)
		 * as one argument. */
		char *nl = memchr(buf, '\n', (size_t)n);
		if (nl)
			*nl = 0;
		char *p = buf + 2;
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			return -ENOEXEC;
		char *q = p;
		while (*q && *q != ' ' && *q != '\t')
			q++;
		char *rest = q;
		if (*rest) {
			*rest++ = 0;
			while (*rest == ' ' || *rest == '\t')
				rest++;
			size_t rl = strlen(rest);
			while (rl && (rest[rl - 1] == ' ' || rest[rl - 1] == '\t'))
				rest[--rl] = 0;
		}
		if (strlen(p) >= interp_len || strlen(rest) >= arg_len)
			return -ENAMETOOLONG;
		snprintf(interp, interp_len, "%s", p);
		snprintf(arg, arg_len, "%s", rest);
		return 1;
	}
	if ((size_t)n < sizeof(Elf64_Ehdr))
		return -ENOEXEC;
	Elf64_Ehdr eh;
	memcpy(&eh, buf, sizeof(eh));
	return ehdr_ok(&eh) ? 0 : -ENOEXEC;
}

/* ---- the initial stack ---------------------------------------------------------------------- */

int elf_load(const char *path, char *const argv[], char *const envp[], struct fu_image *img)
{
	struct loaded *prog = calloc(2, sizeof(*prog));
	if (!prog) {
		fu_log("out of memory");
		return -1;
	}
	struct loaded *interp = &prog[1];
	int rc = -1;
	if (load_one(path, prog, false) != 0)
		goto out;
	uint64_t entry = prog->entry, interp_base = 0;
	if (prog->has_interp) {
		if (load_one(prog->interp, interp, true) != 0)
			goto out;
		entry = interp->entry;
		interp_base = interp->base;
	}
	mm_brk_init(FU_PAGE_UP(prog->max_end));

	size_t argc = 0, envc = 0, strbytes = 0;
	for (; argv[argc]; argc++)
		strbytes += strlen(argv[argc]) + 1;
	for (; envp[envc]; envc++)
		strbytes += strlen(envp[envc]) + 1;
	strbytes += strlen(path) + 1;
	if (strbytes > STACK_SIZE / 4) {
		fu_log("%s: arguments and environment too long", path);
		goto out;
	}

	/* The stack, with a guard below it that is not guest memory: an overflow faults rather
	 * than running into the guest's next mapping. */
	int sprot = PROT_READ | PROT_WRITE | (prog->exec_stack ? PROT_EXEC : 0);
	void *sm = mmap(NULL, STACK_GUARD + STACK_SIZE, PROT_NONE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (sm == MAP_FAILED || mprotect((uint8_t *)sm + STACK_GUARD, STACK_SIZE, sprot) != 0) {
		fu_log("cannot map the stack: %s", strerror(errno));
		goto out;
	}
	uint64_t stack_lo = (uint64_t)(uintptr_t)sm + STACK_GUARD, top = stack_lo + STACK_SIZE;
	mm_add(stack_lo, top, sprot);

	/* Strings at the top: the file name, then argv and envp, then the platform and the
	 * random bytes for AT_RANDOM. */
	uint64_t sp = top - 8;
#define PUSH_STR(s, dst)                                                                           \
	do {                                                                                       \
		size_t len_ = strlen(s) + 1;                                                       \
		sp -= len_;                                                                        \
		memcpy((void *)(uintptr_t)sp, (s), len_);                                          \
		(dst) = sp;                                                                        \
	} while (0)
	uint64_t execfn, platform, random_at;
	PUSH_STR(path, execfn);
	uint64_t *ptrs = calloc(argc + envc + 2, sizeof(uint64_t));
	if (!ptrs) {
		fu_log("out of memory");
		goto out;
	}
	for (size_t i = envc; i-- > 0;)
		PUSH_STR(envp[i], ptrs[argc + 1 + i]);
	for (size_t i = argc; i-- > 0;)
		PUSH_STR(argv[i], ptrs[i]);
	PUSH_STR("x86_64", platform);
#undef PUSH_STR
	sp &= ~15ull;
	sp -= 16;
	random_at = sp;
	uint8_t rnd[16];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0x5a, sizeof(rnd));
	memcpy((void *)(uintptr_t)random_at, rnd, sizeof(rnd));

	uint32_t id[4];
	soft_cpuid(fu_cpu, 1, 0, id);
	uint64_t auxv[][2] = {
	    {AT_PHDR, prog->phdr},   {AT_PHENT, sizeof(Elf64_Phdr)},
	    {AT_PHNUM, prog->phnum}, {AT_PAGESZ, FU_PAGE},
	    {AT_BASE, interp_base},  {AT_FLAGS, 0},
	    {AT_ENTRY, prog->entry}, {AT_UID, getuid()},
	    {AT_EUID, geteuid()},    {AT_GID, getgid()},
	    {AT_EGID, getegid()},    {AT_SECURE, 0},
	    {AT_HWCAP, id[3]},       {AT_CLKTCK, (uint64_t)sysconf(_SC_CLK_TCK)},
	    {AT_PLATFORM, platform}, {AT_RANDOM, random_at},
	    {AT_EXECFN, execfn},     {AT_NULL, 0},
	};
	size_t naux = sizeof(auxv) / sizeof(auxv[0]);
	size_t words = 1 + argc + 1 + envc + 1 + 2 * naux;
	sp = (sp - words * 8) & ~15ull;
	uint64_t *w = (uint64_t *)(uintptr_t)sp;
	*w++ = argc;
	for (size_t i = 0; i < argc; i++)
		*w++ = ptrs[i];
	*w++ = 0;
	for (size_t i = 0; i < envc; i++)
		*w++ = ptrs[argc + 1 + i];
	*w++ = 0;
	for (size_t i = 0; i < naux; i++) {
		*w++ = auxv[i][0];
		*w++ = auxv[i][1];
	}
	free(ptrs);
	img->entry = entry;
	img->rsp = sp;
	rc = 0;
out:
	free(prog);
	return rc;
}
