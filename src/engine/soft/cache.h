/* Decoded blocks and their cache: internal to the soft engine (cpu.c builds and runs blocks,
 * cache.c finds and drops them). */
#ifndef FERRY_SOFT_CACHE_H
#define FERRY_SOFT_CACHE_H

#include "engine/soft/soft.h"

#define BLOCK_MAX 64

/* A block's host code (jit.c): runs the block from its first instruction (c->rip is its
 * address), and the blocks it chains to, entering each as the run loop would; returns how many
 * instructions of the block it left in did not run (0, or more when a handler set
 * stop_block). */
typedef unsigned (*jit_fn)(struct soft_cpu *c);

struct block {
	uint64_t gpa;  /* guest-physical address of the first instruction */
	unsigned mode; /* decode mode (64-, 32- or 16-bit code) */
	unsigned n;    /* instructions */
	unsigned npages;
	uint64_t pages[2]; /* guest-physical pages the instruction bytes come from */
	jit_fn jit;        /* its host code, or NULL: the handler loop runs it */
	void *jit_link;    /* where another block's host code enters it (jit.c) */
	struct block *hash_next, *page_next[2], *dead_next;
	struct insn insns[];
};

#define HASH_BITS      16
#define PAGE_HASH_BITS 12

struct page_entry {
	uint64_t gpa_page;
	struct block *blocks; /* linked through block->page_next[] */
	struct page_entry *next;
};

struct soft_cache {
	struct block *hash[1u << HASH_BITS];
	struct page_entry *pages[1u << PAGE_HASH_BITS];
	struct block *dead; /* dropped, waiting to be freed */
	uint64_t *epoch;    /* the CPU's epoch, bumped whenever blocks are dropped: pointers to
	                     * blocks kept elsewhere are stale then */
};

struct block *soft_cache_find(struct soft_cache *cache, uint64_t gpa, unsigned mode);
/* Adds a decoded block; false if memory ran out (the block is then the caller's). */
bool soft_cache_insert(struct soft_cache *cache, struct block *b);
/* Frees dropped blocks; call only where no block is executing. */
void soft_cache_reap(struct soft_cache *cache);

#endif
