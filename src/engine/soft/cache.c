/* The decoded-block cache. A block is the run of instructions from one entry point up to a
 * control transfer (or the end of its page, or BLOCK_MAX instructions), decoded once. Blocks are
 * found by guest-physical address and decode mode, so the same code mapped twice is decoded
 * once, and a write to a page drops exactly the blocks decoded from it.
 *
 * Dropped blocks are not freed at once: the CPU may be executing one (a store into the block
 * it runs from). They wait on a list that the run loop empties between blocks. */
#include <stdlib.h>
#include <string.h>

#include "engine/soft/cache.h"

#define HASH_BITS      16
#define PAGE_HASH_BITS 12

static unsigned hash_key(uint64_t gpa, unsigned mode)
{
	uint64_t h = (gpa ^ ((uint64_t)mode << 61)) * 0x9e3779b97f4a7c15ull;
	return (unsigned)(h >> (64 - HASH_BITS));
}

static unsigned page_hash(uint64_t gpa_page)
{
	return (unsigned)((gpa_page >> 12) * 0x9e3779b97f4a7c15ull >> (64 - PAGE_HASH_BITS));
}

struct soft_cache *soft_cache_create(uint64_t *epoch)
{
	struct soft_cache *cache = calloc(1, sizeof(struct soft_cache));
	if (cache)
		cache->epoch = epoch;
	return cache;
}

struct block *soft_cache_find(struct soft_cache *cache, uint64_t gpa, unsigned mode)
{
	for (struct block *b = cache->hash[hash_key(gpa, mode)]; b; b = b->hash_next)
		if (b->gpa == gpa && b->mode == mode)
			return b;
	return NULL;
}

static struct page_entry *page_get(struct soft_cache *cache, uint64_t gpa_page, bool create)
{
	struct page_entry **head = &cache->pages[page_hash(gpa_page)];
	for (struct page_entry *p = *head; p; p = p->next)
		if (p->gpa_page == gpa_page)
			return p;
	if (!create)
		return NULL;
	struct page_entry *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->gpa_page = gpa_page;
	p->next = *head;
	*head = p;
	return p;
}

bool soft_cache_insert(struct soft_cache *cache, struct block *b)
{
	for (unsigned i = 0; i < b->npages; i++)
		if (!page_get(cache, b->pages[i], true))
			return false;
	unsigned h = hash_key(b->gpa, b->mode);
	b->hash_next = cache->hash[h];
	cache->hash[h] = b;
	for (unsigned i = 0; i < b->npages; i++) {
		struct page_entry *p = page_get(cache, b->pages[i], false);
		b->page_next[i] = p->blocks;
		p->blocks = b;
	}
	return true;
}

static void unlink_hash(struct soft_cache *cache, struct block *b)
{
	for (struct block **pp = &cache->hash[hash_key(b->gpa, b->mode)]; *pp;
	     pp = &(*pp)->hash_next)
		if (*pp == b) {
			*pp = b->hash_next;
			return;
		}
}

/* Removes b from the block list of every page but skip_page (whose list the caller drops). */
static void unlink_pages(struct soft_cache *cache, struct block *b, uint64_t skip_page)
{
	for (unsigned i = 0; i < b->npages; i++) {
		if (b->pages[i] == skip_page)
			continue;
		struct page_entry *p = page_get(cache, b->pages[i], false);
		if (!p)
			continue;
		for (struct block **pp = &p->blocks; *pp;) {
			struct block *x = *pp;
			unsigned k = x->pages[0] == b->pages[i] ? 0 : 1;
			if (x == b) {
				*pp = x->page_next[k];
				break;
			}
			pp = &x->page_next[k];
		}
	}
}

static void remove_page_entry(struct soft_cache *cache, uint64_t gpa_page)
{
	for (struct page_entry **pp = &cache->pages[page_hash(gpa_page)]; *pp; pp = &(*pp)->next)
		if ((*pp)->gpa_page == gpa_page) {
			struct page_entry *p = *pp;
			*pp = p->next;
			free(p);
			return;
		}
}

bool soft_cache_invalidate_page(struct soft_cache *cache, uint64_t gpa_page)
{
	gpa_page &= ~0xfffull;
	struct page_entry *p = page_get(cache, gpa_page, false);
	if (!p)
		return false;
	struct block *b = p->blocks;
	bool any = b != NULL;
	while (b) {
		unsigned k = b->pages[0] == gpa_page ? 0 : 1;
		struct block *next = b->page_next[k];
		unlink_hash(cache, b);
		unlink_pages(cache, b, gpa_page);
		b->dead_next = cache->dead;
		cache->dead = b;
		soft_stats.block_invalidations++;
		b = next;
	}
	remove_page_entry(cache, gpa_page);
	(*cache->epoch)++;
	return any;
}

bool soft_cache_page_has_code(struct soft_cache *cache, uint64_t gpa_page)
{
	return page_get(cache, gpa_page & ~0xfffull, false) != NULL;
}

void soft_cache_reap(struct soft_cache *cache)
{
	while (cache->dead) {
		struct block *b = cache->dead;
		cache->dead = b->dead_next;
		free(b);
	}
}

void soft_cache_flush(struct soft_cache *cache)
{
	for (unsigned i = 0; i < (1u << HASH_BITS); i++) {
		struct block *b = cache->hash[i];
		while (b) {
			struct block *next = b->hash_next;
			b->dead_next = cache->dead;
			cache->dead = b;
			b = next;
		}
		cache->hash[i] = NULL;
	}
	for (unsigned i = 0; i < (1u << PAGE_HASH_BITS); i++) {
		struct page_entry *p = cache->pages[i];
		while (p) {
			struct page_entry *next = p->next;
			free(p);
			p = next;
		}
		cache->pages[i] = NULL;
	}
	(*cache->epoch)++;
}

void soft_cache_destroy(struct soft_cache *cache)
{
	if (!cache)
		return;
	soft_cache_flush(cache);
	soft_cache_reap(cache);
	free(cache);
}
