/* The PC memory map the loaders hand to guests. */
#include "arch/x86/boot.h"

#define EBDA_START  0x9fc00ull /* the last KiB of base memory: the BIOS's extended data area */
#define LEGACY_HOLE 0xa0000ull /* VGA window and option ROMs: not RAM as far as the guest knows */
#define BIOS_START  0xf0000ull /* system BIOS area; the MP table lives here */
#define HIGH_START  0x100000ull

static unsigned add(struct e820_entry *out, unsigned n, unsigned max, uint64_t addr, uint64_t end,
		    uint32_t type)
{
	if (n >= max || end <= addr)
		return n;
	out[n] = (struct e820_entry){.addr = addr, .size = end - addr, .type = type};
	return n + 1;
}

unsigned e820_build(const struct guest_mem *mem, struct e820_entry *out, unsigned max)
{
	unsigned n = 0;
	for (unsigned i = 0; i < mem->nregions && i < MEM_MAX_REGIONS; i++) {
		const struct mem_region *r = &mem->region[i];
		uint64_t end = r->gpa + r->size;
		if (r->gpa != 0) {
			n = add(out, n, max, r->gpa, end, E820_RAM);
			continue;
		}
		/* The region at 0 carries the legacy PC layout below 1 MiB. */
		n = add(out, n, max, 0, end < EBDA_START ? end : EBDA_START, E820_RAM);
		n = add(out, n, max, EBDA_START, LEGACY_HOLE, E820_RESERVED);
		n = add(out, n, max, BIOS_START, HIGH_START, E820_RESERVED);
		n = add(out, n, max, HIGH_START, end, E820_RAM);
	}
	return n;
}
