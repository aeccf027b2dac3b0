/* The soft TLB: guest-virtual pages to host pointers, filled on a miss. Part 1 of the soft
 * engine translates guest-virtual to guest-physical as the identity (ferry-user, flat code
 * before paging); the page-table walk is where part 2 puts the guest's page tables.
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
	for (unsigned i = 0; i < TLB_SIZE; i++) {
		c->tlb[i].tag_read = c->tlb[i].tag_write = c->tlb[i].tag_exec = TLB_INVALID;
		c->tlb[i].addend = 0;
	}
	c->tlb_gen++;
}

void soft_tlb_flush_page(struct soft_cpu *c, uint64_t va)
{
	struct tlb_entry *e = &c->tlb[(va >> 12) & (TLB_SIZE - 1)];
	if (e->tag_read == (va & ~0xfffull) || e->tag_write == (va & ~0xfffull) ||
	    e->tag_exec == (va & ~0xfffull))
		e->tag_read = e->tag_write = e->tag_exec = TLB_INVALID;
	c->tlb_gen++;
}

void soft_tlb_protect_code_page(struct soft_cpu *c, uint64_t gpa_page)
{
	for (unsigned i = 0; i < TLB_SIZE; i++)
		if (c->tlb[i].tag_write != TLB_INVALID && c->tlb[i].gpa_page == gpa_page)
			c->tlb[i].tag_write = TLB_INVALID;
}

static bool canonical(uint64_t va)
{
	return (uint64_t)((int64_t)(va << 16) >> 16) == va;
}

static unsigned cpl(const struct soft_cpu *c)
{
	return c->seg[SEG_CS].dpl;
}

/* Guest-virtual to guest-physical. Identity for now: see the file comment. */
static uint64_t translate(struct soft_cpu *c, uint64_t va, enum mem_access acc)
{
	(void)acc;
	if ((c->cr0 & CR0_PG) && !c->user_mode)
		soft_fail(c, "guest paging is not implemented by this soft engine yet");
	return va;
}

void *soft_mem_slow(struct soft_cpu *c, uint64_t va, unsigned size, enum mem_access acc)
{
	if ((c->efer & EFER_LMA) && !canonical(va))
		soft_fault(c, EXC_GP, 0);
	soft_stats.tlb_misses++;
	uint64_t page = va & ~0xfffull;
	uint64_t gpa = translate(c, page, acc);
	bool writable = false;
	uint8_t *host = c->mem.page_ptr(c->mem.opaque, gpa, acc, &writable);
	if (!host || (acc == ACC_WRITE && !writable)) {
		uint32_t err = (host ? PF_PRESENT : 0) | (acc == ACC_WRITE ? PF_WRITE : 0) |
			       (cpl(c) == 3 ? PF_USER : 0) | (acc == ACC_EXEC ? PF_FETCH : 0);
		soft_page_fault(c, va, err);
	}
	if (acc == ACC_WRITE && soft_cache_page_has_code(c->cache, gpa)) {
		/* Code on this page was decoded: drop it, and leave the current block after this
		 * instruction in case the write changed an instruction still ahead in it. */
		if (soft_cache_invalidate_page(c->cache, gpa))
			c->stop_block = true;
	}
	struct tlb_entry *e = &c->tlb[(va >> 12) & (TLB_SIZE - 1)];
	intptr_t addend = (intptr_t)((uintptr_t)host - page);
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
	if ((va & 0xfff) + size > 0x1000) {
		/* The access crosses into the next page: make sure that one is reachable too, then
		 * let the caller split the access. */
		soft_mem(c, page + 0x1000, 1, acc);
		return NULL;
	}
	return host + (va & 0xfff);
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
		const uint8_t *p = soft_mem(c, va, (unsigned)chunk, ACC_READ);
		memcpy(d, p, chunk);
		d += chunk;
		va += chunk;
		n -= chunk;
	}
}

void soft_write_bytes(struct soft_cpu *c, uint64_t va, const void *src, size_t n)
{
	const uint8_t *s = src;
	/* Check every page first so a fault leaves memory untouched. */
	for (uint64_t p = va & ~0xfffull; p < va + n; p += 0x1000)
		soft_mem(c, p < va ? va : p, 1, ACC_WRITE);
	while (n) {
		size_t chunk = 0x1000 - (va & 0xfff);
		if (chunk > n)
			chunk = n;
		uint8_t *p = soft_mem(c, va, (unsigned)chunk, ACC_WRITE);
		memcpy(p, s, chunk);
		s += chunk;
		va += chunk;
		n -= chunk;
	}
}
