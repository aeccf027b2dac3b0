/* The soft TLB: guest-virtual pages to host pointers, filled on a miss by translating through
 * the guest's page tables (long-mode 4-level paging) or one to one (ferry-user, paging off).
 * Entries hold the rights of the walk that filled them: a write is entered only after a write
 * walk set the dirty bit, so the TLB never lets a write skip that. They are valid for the
 * privilege level they were filled at (each level has its own TLB); CR3 writes flush.
 *
 * A page holding decoded code is never entered into the TLB for writes: a write to it comes
 * here, drops the decoded blocks of that page, and only then goes through. */
#include <string.h>

#include "engine/soft/soft.h"

#define PF_PRESENT (1u << 0)
#define PF_WRITE   (1u << 1)
#define PF_USER    (1u << 2)
#define PF_FETCH   (1u << 4)

struct soft_stats soft_stats;

void soft_tlb_flush(struct soft_cpu *c)
{
	for (unsigned t = 0; t < 2; t++)
		for (unsigned i = 0; i < TLB_SIZE; i++) {
			struct tlb_entry *e = &c->tlbs[t][i];
			e->tag_read = e->tag_write = e->tag_exec = TLB_INVALID;
			e->addend = 0;
		}
	c->epoch++;
}

/* A CR3 write: entries of global pages (PTE.G with CR4.PGE) survive it. */
void soft_tlb_flush_nonglobal(struct soft_cpu *c)
{
	for (unsigned t = 0; t < 2; t++)
		for (unsigned i = 0; i < TLB_SIZE; i++) {
			if (c->tlb_global[t][i / 64] & (1ull << (i % 64)))
				continue;
			struct tlb_entry *e = &c->tlbs[t][i];
			e->tag_read = e->tag_write = e->tag_exec = TLB_INVALID;
		}
	c->epoch++;
}

void soft_tlb_flush_page(struct soft_cpu *c, uint64_t va)
{
	for (unsigned t = 0; t < 2; t++) {
		struct tlb_entry *e = &c->tlbs[t][(va >> 12) & (TLB_SIZE - 1)];
		if (e->tag_read == (va & ~0xfffull) || e->tag_write == (va & ~0xfffull) ||
		    e->tag_exec == (va & ~0xfffull))
			e->tag_read = e->tag_write = e->tag_exec = TLB_INVALID;
	}
	c->epoch++;
}

void soft_tlb_protect_code_page(struct soft_cpu *c, uint64_t gpa_page)
{
	for (unsigned t = 0; t < 2; t++)
		for (unsigned i = 0; i < TLB_SIZE; i++) {
			struct tlb_entry *e = &c->tlbs[t][i];
			if (e->tag_write != TLB_INVALID && e->gpa_page == gpa_page)
				e->tag_write = TLB_INVALID;
		}
}

/* Each privilege has its own TLB and jump cache, so a system call or an interrupt does not
 * flush: entries are valid for the privilege whose walk filled them. Descriptor-table and TSS
 * accesses (sv_access) are supervisor accesses at any CPL and use the supervisor TLB. */
void soft_cpl_changed(struct soft_cpu *c)
{
	unsigned user = soft_cpl(c) == 3 && !c->sv_access;
	c->tlb = c->tlbs[user];
	c->jc = c->jcs[user];
	c->stop_block = true;
}

/* A non-canonical address faults #SS(0) when it is a stack reference (through SS: RSP or RBP
 * based, or push/pop/call/ret) and #GP(0) otherwise. */
__attribute__((noreturn)) static void noncanonical_fault(struct soft_cpu *c, uint64_t va)
{
	const struct insn *in = soft_current_insn(c);
	bool stack = false;
	if (in) {
		bool explicit_mem = false;
		for (unsigned i = 0; i < in->nops; i++)
			if (in->op[i].kind == OPK_MEM)
				explicit_mem =
				    va - insn_addr(c, in) < 64; /* any byte of the operand */
		stack = explicit_mem ? in->mem.seg == SEG_SS : (in->prefix & INSN_STACK) != 0;
	}
	soft_fault(c, stack ? EXC_SS : EXC_GP, 0);
}

static unsigned cpl(const struct soft_cpu *c)
{
	return c->sv_access ? 0 : c->seg[SEG_CS].dpl;
}

#define PTE_P    (1ull << 0)
#define PTE_W    (1ull << 1)
#define PTE_U    (1ull << 2)
#define PTE_A    (1ull << 5)
#define PTE_D    (1ull << 6)
#define PTE_PS   (1ull << 7)
#define PTE_G    (1ull << 8)
#define PTE_NX   (1ull << 63)
#define PTE_ADDR 0x000ffffffffff000ull
#define PF_RSVD  (1u << 3)
/* Physical address bits above the 40 the CPU reports (CPUID 0x80000008) are reserved. */
#define PTE_RSVD_HIGH 0x000fff0000000000ull

static uint64_t *pte_ptr(struct soft_cpu *c, uint64_t gpa)
{
	bool writable;
	uint8_t *p = c->mem.page_ptr(c->mem.opaque, gpa & ~0xfffull, ACC_READ, &writable);
	if (!p)
		soft_fail(c, "guest page table entry at 0x%llx is not in RAM",
			  (unsigned long long)gpa);
	/* p points into guest RAM, not at writable (cppcheck cannot see through page_ptr). */
	// cppcheck-suppress returnDanglingLifetime
	return (uint64_t *)(p + (gpa & 0xfff));
}

/* The 4-level page walk of long mode (Intel SDM vol. 3, 4.5). Sets accessed bits on the way
 * and the dirty bit of the leaf on a write; raises #PF with the architectural error code. */
static uint64_t walk4(struct soft_cpu *c, uint64_t va, enum mem_access acc, bool *global)
{
	bool user = cpl(c) == 3, write = acc == ACC_WRITE, fetch = acc == ACC_EXEC;
	bool nxe = (c->efer & EFER_NXE) != 0;
	uint32_t err =
	    (write ? PF_WRITE : 0) | (user ? PF_USER : 0) | (fetch && nxe ? PF_FETCH : 0);
	uint64_t rsvd = PTE_RSVD_HIGH | (nxe ? 0 : PTE_NX);
	uint64_t table = c->cr3 & PTE_ADDR, gpa = 0;
	uint64_t *path[4];
	unsigned depth = 0;
	bool may_write = true, may_user = true, no_exec = false;

	for (int level = 4; level >= 1; level--) {
		uint64_t *pe = pte_ptr(c, table + ((va >> (12 + 9 * (level - 1))) & 511) * 8);
		uint64_t e = __atomic_load_n(pe, __ATOMIC_RELAXED);
		if (!(e & PTE_P))
			soft_page_fault(c, va, err);
		bool leaf = level == 1 || ((e & PTE_PS) && level <= 3);
		uint64_t bad = rsvd | (level == 4 ? PTE_PS : 0);
		if (leaf && level == 3)
			bad |= 0x3fffe000ull; /* 1 GiB page: address bits 13..29 are reserved */
		else if (leaf && level == 2)
			bad |= 0x1fe000ull; /* 2 MiB page: bits 13..20 */
		if (e & bad)
			soft_page_fault(c, va, err | PF_PRESENT | PF_RSVD);
		may_write &= (e & PTE_W) != 0;
		may_user &= (e & PTE_U) != 0;
		no_exec |= nxe && (e & PTE_NX);
		path[depth++] = pe;
		if (leaf) {
			uint64_t off_mask = (1ull << (12 + 9 * (level - 1))) - 1;
			gpa = (e & PTE_ADDR & ~off_mask) | (va & off_mask);
			*global = (e & PTE_G) && (c->cr4 & CR4_PGE);
			break;
		}
		table = e & PTE_ADDR;
	}
	if ((user && !may_user) || (fetch && no_exec) ||
	    (write && !may_write && (user || (c->cr0 & CR0_WP))))
		soft_page_fault(c, va, err | PF_PRESENT);
	for (unsigned i = 0; i < depth; i++)
		if (!(*path[i] & PTE_A))
			__atomic_fetch_or(path[i], PTE_A, __ATOMIC_RELAXED);
	if (write && !(*path[depth - 1] & PTE_D))
		__atomic_fetch_or(path[depth - 1], PTE_D, __ATOMIC_RELAXED);
	return gpa & ~0xfffull;
}

/* Guest-virtual (linear) to guest-physical. ferry-user's processes and code that runs with
 * paging off map one to one; long-mode paging walks the guest's tables. 32-bit paging modes
 * are not implemented: they fail closed. */
static uint64_t translate(struct soft_cpu *c, uint64_t va, enum mem_access acc, bool *global)
{
	*global = false;
	if (c->user_mode || !(c->cr0 & CR0_PG))
		return va & ~0xfffull;
	if (c->efer & EFER_LMA)
		return walk4(c, va, acc, global);
	soft_fail(c, "32-bit guest paging is not implemented by the soft engine yet");
}

/* Resolves va for an access: on RAM fills the TLB and returns the host pointer for va; on
 * memory-mapped I/O (a guest-physical address that is not RAM, in system mode) returns NULL
 * with *gpa_out set. Faults otherwise. */
static uint8_t *resolve(struct soft_cpu *c, uint64_t va, enum mem_access acc, uint64_t *gpa_out)
{
	if ((c->efer & EFER_LMA) && !soft_canonical(va))
		noncanonical_fault(c, va);
	soft_stats.tlb_misses++;
	uint64_t page = va & ~0xfffull;
	bool global;
	uint64_t gpa = translate(c, va, acc, &global); /* a #PF reports va itself in CR2 */
	*gpa_out = gpa | (va & 0xfff);
	bool writable = false;
	uint8_t *host = c->mem.page_ptr(c->mem.opaque, gpa, acc, &writable);
	if (!host && c->mem.mmio && !c->user_mode) {
		if (acc == ACC_EXEC)
			soft_fail(c, "instruction fetch from 0x%llx, which is not RAM",
				  (unsigned long long)gpa);
		return NULL;
	}
	if (!host || (acc == ACC_WRITE && !writable)) {
		uint32_t err = (host ? PF_PRESENT : 0) | (acc == ACC_WRITE ? PF_WRITE : 0) |
			       (cpl(c) == 3 ? PF_USER : 0) | (acc == ACC_EXEC ? PF_FETCH : 0);
		soft_page_fault(c, va, err);
	}
	if (acc == ACC_WRITE) {
		if (c->dirty_bitmap && gpa / 4096 < c->dirty_pages)
			__atomic_fetch_or(&c->dirty_bitmap[gpa / 4096 / 64],
					  1ull << (gpa / 4096 % 64), __ATOMIC_RELAXED);
		/* Code on this page was decoded: drop it, and leave the current block after this
		 * instruction in case the write changed an instruction still ahead in it. */
		if (soft_cache_page_has_code(c->cache, gpa) &&
		    soft_cache_invalidate_page(c->cache, gpa))
			c->stop_block = true;
	}
	unsigned idx = (va >> 12) & (TLB_SIZE - 1), t = c->tlb == c->tlbs[1];
	struct tlb_entry *e = &c->tlb[idx];
	intptr_t addend = (intptr_t)((uintptr_t)host - page);
	if (global)
		c->tlb_global[t][idx / 64] |= 1ull << (idx % 64);
	else
		c->tlb_global[t][idx / 64] &= ~(1ull << (idx % 64));
	if (e->addend != addend || e->gpa_page != gpa)
		e->tag_read = e->tag_write = e->tag_exec = TLB_INVALID;
	e->addend = addend;
	e->gpa_page = gpa;
	switch (acc) {
	case ACC_READ:
		e->tag_read = page;
		break;
	case ACC_EXEC:
		e->tag_exec = page;
		e->tag_read = page;
		break;
	case ACC_WRITE:
		e->tag_write = page;
		e->tag_read = page;
		break;
	}
	return host + (va & 0xfff);
}

void *soft_mem_slow(struct soft_cpu *c, uint64_t va, unsigned size, enum mem_access acc)
{
	uint64_t gpa = 0;
	uint8_t *p = resolve(c, va, acc, &gpa);
	if (!p)
		return NULL; /* MMIO: the caller goes through soft_load/soft_store, which reach it */
	if ((va & 0xfff) + size > 0x1000) {
		/* The access crosses into the next page: make sure that one is reachable too, then
		 * let the caller split the access. */
		soft_mem(c, (va & ~0xfffull) + 0x1000, 1, acc);
		return NULL;
	}
	return p;
}

/* One MMIO access, split into naturally sized pieces a device register understands. */
static void mmio(struct soft_cpu *c, uint64_t gpa, uint8_t *data, size_t n, bool write)
{
	while (n) {
		unsigned piece = n >= 8 && !(gpa & 7)   ? 8
				 : n >= 4 && !(gpa & 3) ? 4
				 : n >= 2 && !(gpa & 1) ? 2
							: 1;
		if (c->mem.mmio(c->mem.opaque, gpa, data, piece, write) < 0) {
			/* The VM refused it and is stopping: the instruction does not complete. */
			c->rip = c->insn_start;
			soft_exit(c, SOFT_EXIT_STOP);
		}
		gpa += piece;
		data += piece;
		n -= piece;
	}
	/* A device may have asked the VM to stop (or reset): do not run further ahead. */
	if (c->exit_request)
		c->stop_block = true;
}

uint64_t soft_load_slow(struct soft_cpu *c, uint64_t va, unsigned size)
{
	uint64_t v = 0;
	soft_read_bytes(c, va, &v, size > 8 ? 8 : size);
	return v;
}

void soft_store_slow(struct soft_cpu *c, uint64_t va, uint64_t v, unsigned size)
{
	soft_write_bytes(c, va, &v, size > 8 ? 8 : size);
}

void soft_read_bytes(struct soft_cpu *c, uint64_t va, void *dst, size_t n)
{
	uint8_t *d = dst;
	while (n) {
		size_t chunk = 0x1000 - (va & 0xfff);
		if (chunk > n)
			chunk = n;
		struct tlb_entry *e = &c->tlb[(va >> 12) & (TLB_SIZE - 1)];
		uint64_t gpa = 0;
		const uint8_t *p = e->tag_read == (va & ~0xfffull)
				       ? (const uint8_t *)(va + e->addend)
				       : resolve(c, va, ACC_READ, &gpa);
		if (p)
			memcpy(d, p, chunk);
		else
			mmio(c, gpa, d, chunk, false);
		d += chunk;
		va += chunk;
		n -= chunk;
	}
}

void soft_write_bytes(struct soft_cpu *c, uint64_t va, const void *src, size_t n)
{
	const uint8_t *s = src;
	/* Check every page first so a fault leaves memory untouched. */
	uint64_t gpa = 0;
	for (uint64_t p = va & ~0xfffull; p < va + n; p += 0x1000)
		resolve(c, p < va ? va : p, ACC_WRITE, &gpa);
	while (n) {
		size_t chunk = 0x1000 - (va & 0xfff);
		if (chunk > n)
			chunk = n;
		uint8_t *p = resolve(c, va, ACC_WRITE, &gpa);
		if (p)
			memcpy(p, s, chunk);
		else
			mmio(c, gpa, (uint8_t *)s, chunk, true);
		s += chunk;
		va += chunk;
		n -= chunk;
	}
}

void soft_dirty_log(struct soft_cpu *c, uint64_t *bitmap, uint64_t pages)
{
	c->dirty_bitmap = bitmap;
	c->dirty_pages = bitmap ? pages : 0;
	soft_tlb_flush(c);
}

void soft_dirty_rearm(struct soft_cpu *c)
{
	/* Writable entries would let later writes skip the dirty bitmap. */
	for (unsigned i = 0; i < TLB_SIZE; i++)
		c->tlb[i].tag_write = TLB_INVALID;
}
