/* The guest's memory: a sorted table of its mappings (start, end, PROT bits), the soft CPU's
 * page_ptr callback that checks accesses against it, and the memory system calls.
 *
 * Guest mappings are host mappings at the same addresses. What is not in the table is
 * ferry-user's own memory (its code, heap, stacks, the interpreter's decoded code) or nothing;
 * either way the guest may not touch it. Mappings the kernel places (no MAP_FIXED) can never
 * land on ferry-user's memory. A MAP_FIXED request (mmap, mremap) may replace only guest
 * memory: every part of its range that is not in the table is first claimed with a PROT_NONE
 * MAP_FIXED_NOREPLACE placeholder, which fails (and the call with -ENOMEM) where anything of
 * ferry-user's is mapped. That check is exact at the moment of the call, unlike a snapshot of
 * /proc/self/maps, because the interpreter keeps allocating. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fu.h"

struct vma {
	uint64_t start, end;
	int prot;
};

static struct vma *vmas;
static size_t nvmas, capvmas;

/* Index of the first mapping that ends above addr (nvmas if none). */
static size_t first_after(uint64_t addr)
{
	size_t lo = 0, hi = nvmas;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (vmas[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void insert_at(size_t i, struct vma v)
{
	if (nvmas == capvmas) {
		size_t cap = capvmas ? capvmas * 2 : 64;
		struct vma *nv = realloc(vmas, cap * sizeof(*nv));
		if (!nv) {
			fu_log("out of memory for the mapping table");
			fu_exit(127);
		}
		vmas = nv;
		capvmas = cap;
	}
	memmove(&vmas[i + 1], &vmas[i], (nvmas - i) * sizeof(*vmas));
	vmas[i] = v;
	nvmas++;
}

static void delete_at(size_t i)
{
	memmove(&vmas[i], &vmas[i + 1], (nvmas - i - 1) * sizeof(*vmas));
	nvmas--;
}

void mm_remove(uint64_t start, uint64_t end)
{
	size_t i = first_after(start);
	while (i < nvmas && vmas[i].start < end) {
		struct vma v = vmas[i];
		if (v.start < start && v.end > end) {
			vmas[i].end = start;
			insert_at(i + 1, (struct vma){end, v.end, v.prot});
			return;
		}
		if (v.start < start) {
			vmas[i].end = start;
			i++;
		} else if (v.end > end) {
			vmas[i].start = end;
			return;
		} else {
			delete_at(i);
		}
	}
}

void mm_add(uint64_t start, uint64_t end, int prot)
{
	if (start >= end)
		return;
	mm_remove(start, end);
	size_t i = first_after(start);
	insert_at(i, (struct vma){start, end, prot});
	/* Merge with equal neighbours so the table stays short. */
	if (i + 1 < nvmas && vmas[i + 1].start == end && vmas[i + 1].prot == prot) {
		vmas[i].end = vmas[i + 1].end;
		delete_at(i + 1);
	}
	if (i > 0 && vmas[i - 1].end == start && vmas[i - 1].prot == prot) {
		vmas[i - 1].end = vmas[i].end;
		delete_at(i);
	}
}

static bool prot_allows(int prot, int need)
{
	if ((need & PROT_READ) && !(prot & (PROT_READ | PROT_WRITE | PROT_EXEC)))
		return false;
	if ((need & PROT_WRITE) && !(prot & PROT_WRITE))
		return false;
	if ((need & PROT_EXEC) && !(prot & PROT_EXEC))
		return false;
	return true;
}

bool mm_check(uint64_t start, uint64_t len, int prot)
{
	if (len == 0)
		return true;
	uint64_t end = start + len;
	if (end < start)
		return false;
	uint64_t cur = start;
	for (size_t i = first_after(start); i < nvmas && cur < end; i++) {
		if (vmas[i].start > cur || !prot_allows(vmas[i].prot, prot))
			return false;
		cur = vmas[i].end;
	}
	return cur >= end;
}

void *mm_page_ptr(void *opaque, uint64_t gpa, enum mem_access acc, bool *writable)
{
	(void)opaque;
	static const int need[] = {
	    [ACC_READ] = PROT_READ, [ACC_WRITE] = PROT_WRITE, [ACC_EXEC] = PROT_EXEC};
	size_t i = first_after(gpa);
	if (i >= nvmas || vmas[i].start > gpa)
		return NULL;
	*writable = (vmas[i].prot & PROT_WRITE) != 0;
	/* A write to a readable page comes back as a protection fault (not-writable) by itself. */
	int want = acc == ACC_WRITE ? PROT_READ : need[acc];
	if (!prot_allows(vmas[i].prot, want))
		return NULL;
	return (void *)(uintptr_t)FU_PAGE_DOWN(gpa);
}

void mm_code_changed(uint64_t start, uint64_t end)
{
	if (!fu_cpu)
		return;
	for (size_t i = first_after(start); i < nvmas && vmas[i].start < end; i++) {
		if (!(vmas[i].prot & PROT_EXEC))
			continue;
		uint64_t s = vmas[i].start > start ? vmas[i].start : start;
		uint64_t e = vmas[i].end < end ? vmas[i].end : end;
		for (uint64_t p = FU_PAGE_DOWN(s); p < e; p += FU_PAGE)
			if (soft_cache_page_has_code(fu_cpu->cache, p))
				soft_cache_invalidate_page(fu_cpu->cache, p);
	}
}

static void tlb_flush(void)
{
	if (fu_cpu)
		soft_tlb_flush(fu_cpu);
}

/* ---- copying to and from the guest ------------------------------------------------------------ */

int guest_read(void *dst, uint64_t src, size_t len)
{
	if (!mm_check(src, len, PROT_READ))
		return -EFAULT;
	memcpy(dst, (const void *)(uintptr_t)src, len);
	return 0;
}

int guest_write(uint64_t dst, const void *src, size_t len)
{
	if (!mm_check(dst, len, PROT_WRITE))
		return -EFAULT;
	mm_code_changed(dst, dst + len);
	memcpy((void *)(uintptr_t)dst, src, len);
	return 0;
}

int guest_strdup(uint64_t addr, size_t max, char **out)
{
	size_t n = 0;
	for (;;) {
		uint64_t a = addr + n;
		if (!mm_check(a, 1, PROT_READ))
			return -EFAULT;
		size_t chunk = FU_PAGE - (a & (FU_PAGE - 1));
		const char *p = (const char *)(uintptr_t)a;
		const char *nul = memchr(p, 0, chunk);
		if (nul) {
			n += (size_t)(nul - p);
			break;
		}
		n += chunk;
		if (n >= max)
			return -ENAMETOOLONG;
	}
	if (n >= max)
		return -ENAMETOOLONG;
	char *s = malloc(n + 1);
	if (!s)
		return -ENOMEM;
	memcpy(s, (const void *)(uintptr_t)addr, n + 1);
	*out = s;
	return 0;
}

/* ---- MAP_FIXED placeholders ------------------------------------------------------------------- */

struct gaps {
	struct {
		uint64_t start, end;
	} g[64];
	size_t n;
};

static void release_gaps(struct gaps *gs)
{
	for (size_t k = 0; k < gs->n; k++)
		munmap((void *)(uintptr_t)gs->g[k].start, gs->g[k].end - gs->g[k].start);
	gs->n = 0;
}

/* Claims every part of [start, end) that is not guest memory; false (nothing claimed) if some
 * part is taken by anything else. */
static bool claim_gaps(uint64_t start, uint64_t end, struct gaps *gs)
{
	gs->n = 0;
	uint64_t cur = start;
	size_t i = first_after(start);
	while (cur < end) {
		if (i < nvmas && vmas[i].start <= cur) {
			cur = vmas[i].end;
			i++;
			continue;
		}
		uint64_t gap_end = i < nvmas && vmas[i].start < end ? vmas[i].start : end;
		if (gs->n == sizeof(gs->g) / sizeof(gs->g[0])) {
			release_gaps(gs);
			return false;
		}
		void *p =
		    mmap((void *)(uintptr_t)cur, gap_end - cur, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED || (uint64_t)(uintptr_t)p != cur) {
			if (p != MAP_FAILED)
				munmap(p, gap_end - cur);
			release_gaps(gs);
			return false;
		}
		gs->g[gs->n].start = cur;
		gs->g[gs->n].end = gap_end;
		gs->n++;
		cur = gap_end;
	}
	return true;
}

/* ---- brk ------------------------------------------------------------------------------------- */

static uint64_t brk_start, brk_cur, brk_end; /* brk_end: end of the mapped pages */

void mm_brk_init(uint64_t start)
{
	brk_start = brk_cur = start;
	brk_end = FU_PAGE_UP(start);
}

uint64_t mm_brk(uint64_t want)
{
	if (want < brk_start)
		return brk_cur;
	uint64_t end = FU_PAGE_UP(want);
	if (end < want)
		return brk_cur;
	if (end > brk_end) {
		void *p = mmap((void *)(uintptr_t)brk_end, end - brk_end, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (p == MAP_FAILED)
			return brk_cur;
		if ((uint64_t)(uintptr_t)p != brk_end) {
			munmap(p, end - brk_end);
			return brk_cur;
		}
		mm_add(brk_end, end, PROT_READ | PROT_WRITE);
	} else if (end < brk_end) {
		mm_code_changed(end, brk_end);
		munmap((void *)(uintptr_t)end, brk_end - end);
		mm_remove(end, brk_end);
		tlb_flush();
	}
	brk_end = end;
	brk_cur = want;
	return brk_cur;
}

/* ---- mmap and friends ------------------------------------------------------------------------ */

#define KPROT (PROT_READ | PROT_WRITE | PROT_EXEC)

long mm_mmap(uint64_t addr, uint64_t len, int prot, int flags, int fd, uint64_t off)
{
	if (len == 0)
		return -EINVAL;
	uint64_t plen = FU_PAGE_UP(len);
	if (plen < len)
		return -ENOMEM;
	bool fixed = (flags & MAP_FIXED) && !(flags & MAP_FIXED_NOREPLACE);
	struct gaps gs = {.n = 0};
	if (fixed) {
		if (addr & (FU_PAGE - 1))
			return -EINVAL;
		if (addr + plen < addr)
			return -ENOMEM;
		if (!claim_gaps(addr, addr + plen, &gs))
			return -ENOMEM;
		mm_code_changed(addr, addr + plen);
	}
	void *p = mmap((void *)(uintptr_t)addr, len, prot, flags, fd, (off_t)off);
	if (p == MAP_FAILED) {
		int e = errno;
		release_gaps(&gs);
		return -e;
	}
	uint64_t a = (uint64_t)(uintptr_t)p;
	mm_add(a, a + plen, prot & KPROT);
	if (fixed)
		tlb_flush();
	return (long)a;
}

long mm_munmap(uint64_t addr, uint64_t len)
{
	if ((addr & (FU_PAGE - 1)) || len == 0)
		return -EINVAL;
	uint64_t end = addr + FU_PAGE_UP(len);
	if (end < addr)
		return -EINVAL;
	mm_code_changed(addr, end);
	/* Only the guest's parts: the rest is ferry-user's or nothing. */
	for (size_t i = first_after(addr); i < nvmas && vmas[i].start < end; i++) {
		uint64_t s = vmas[i].start > addr ? vmas[i].start : addr;
		uint64_t e = vmas[i].end < end ? vmas[i].end : end;
		if (munmap((void *)(uintptr_t)s, e - s) != 0)
			return -errno;
	}
	mm_remove(addr, end);
	tlb_flush();
	return 0;
}

long mm_mprotect(uint64_t addr, uint64_t len, int prot)
{
	if (addr & (FU_PAGE - 1))
		return -EINVAL;
	/* PROT_GROWSDOWN/UP extend the change to the whole stack mapping; here it is just the
	 * range asked for. */
	prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP);
	if (prot & ~KPROT)
		return -EINVAL;
	if (len == 0)
		return 0;
	uint64_t end = addr + FU_PAGE_UP(len);
	if (end < addr)
		return -ENOMEM;
	if (!mm_check(addr, end - addr, 0))
		return -ENOMEM;
	if (mprotect((void *)(uintptr_t)addr, end - addr, prot) != 0)
		return -errno;
	mm_code_changed(addr, end);
	mm_add(addr, end, prot);
	tlb_flush();
	return 0;
}

long mm_mremap(uint64_t old, uint64_t old_len, uint64_t new_len, int flags, uint64_t new_addr)
{
	if (old & (FU_PAGE - 1))
		return -EINVAL;
	old_len = FU_PAGE_UP(old_len);
	uint64_t plen = FU_PAGE_UP(new_len);
	if (plen == 0 || plen < new_len)
		return -EINVAL;
	size_t i = first_after(old);
	if (i >= nvmas || vmas[i].start > old)
		return -EFAULT;
	int prot = vmas[i].prot;
	if (old_len && !mm_check(old, old_len, 0))
		return -EFAULT;
	struct gaps gs = {.n = 0};
	if (flags & MREMAP_FIXED) {
		if ((new_addr & (FU_PAGE - 1)) || new_addr + plen < new_addr)
			return -EINVAL;
		if (!claim_gaps(new_addr, new_addr + plen, &gs))
			return -ENOMEM;
		mm_code_changed(new_addr, new_addr + plen);
	}
	void *p = mremap((void *)(uintptr_t)old, old_len, plen, flags, (void *)(uintptr_t)new_addr);
	if (p == MAP_FAILED) {
		int e = errno;
		release_gaps(&gs);
		return -e;
	}
	uint64_t a = (uint64_t)(uintptr_t)p;
	if (old_len && !(flags & MREMAP_DONTUNMAP)) {
		mm_code_changed(old, old + old_len);
		mm_remove(old, old + old_len);
	}
	mm_add(a, a + plen, prot);
	tlb_flush();
	return (long)a;
}

long mm_madvise(uint64_t addr, uint64_t len, int advice)
{
	if (addr & (FU_PAGE - 1))
		return -EINVAL;
	if (len == 0)
		return 0;
	uint64_t end = addr + FU_PAGE_UP(len);
	if (end < addr)
		return -EINVAL;
	if (!mm_check(addr, end - addr, 0))
		return -ENOMEM;
	if (madvise((void *)(uintptr_t)addr, end - addr, advice) != 0)
		return -errno;
	if (advice == MADV_DONTNEED || advice == MADV_FREE || advice == MADV_REMOVE)
		mm_code_changed(addr, end);
	return 0;
}
