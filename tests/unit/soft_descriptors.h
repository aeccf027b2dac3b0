/* x86 descriptor encodings for the soft engine's system-mode tests (test_soft_system.c,
 * test_soft_random.c): segment descriptors, the 16-byte system descriptors and gates of long
 * mode, and the hidden part of a flat segment register. Pure functions over host buffers. */
#ifndef FERRY_TEST_SOFT_DESCRIPTORS_H
#define FERRY_TEST_SOFT_DESCRIPTORS_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/soft/soft.h"

/* An 8-byte segment descriptor, page granular. type is the 4-bit type field; s=0 makes a
 * system descriptor. */
static inline uint64_t sd_desc(uint32_t base, uint32_t limit, unsigned type, bool s, unsigned dpl,
			       bool present, bool l, bool db)
{
	return (limit & 0xffff) | (uint64_t)(base & 0xffffff) << 16 | (uint64_t)type << 40 |
	       (uint64_t)s << 44 | (uint64_t)dpl << 45 | (uint64_t)present << 47 |
	       (uint64_t)((limit >> 16) & 0xf) << 48 | (uint64_t)l << 53 | (uint64_t)db << 54 |
	       1ull << 55 /* G */ | (uint64_t)(base >> 24) << 56;
}

/* A 16-byte, byte-granular system descriptor (TSS, LDT) of long mode at p. */
static inline void sd_system_desc(uint8_t *p, uint64_t base, uint32_t limit, unsigned type)
{
	le_put64(p, sd_desc((uint32_t)base, limit, type, false, 0, true, false, false) &
			~(1ull << 55));
	le_put64(p + 8, base >> 32);
}

/* A long-mode gate (interrupt 0xe, trap 0xf, call 0xc): 16 bytes at p. */
static inline void sd_gate(uint8_t *p, uint64_t target, uint16_t sel, unsigned type, unsigned dpl,
			   unsigned ist, bool present)
{
	le_put64(p, (target & 0xffff) | (uint64_t)sel << 16 | (uint64_t)ist << 32 |
			(uint64_t)type << 40 | (uint64_t)dpl << 45 | (uint64_t)present << 47 |
			((target >> 16) & 0xffff) << 48);
	le_put64(p + 8, target >> 32);
}

/* The hidden part of a flat segment register, as a descriptor load leaves it. */
static inline struct cpu_segment sd_flat(uint16_t sel, unsigned type, unsigned dpl, bool l, bool db)
{
	return (struct cpu_segment){.selector = sel,
				    .limit = 0xffffffff,
				    .type = (uint8_t)type,
				    .s = 1,
				    .dpl = (uint8_t)dpl,
				    .present = 1,
				    .l = l,
				    .db = db,
				    .g = 1};
}

#endif
