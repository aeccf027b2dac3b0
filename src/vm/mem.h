/* Guest RAM: one memfd mapped once, laid out on the PC's guest-physical map.
 * RAM below the 32-bit MMIO hole starts at 0; whatever does not fit below the hole
 * continues at 4 GiB. Every guest-supplied address goes through gmem_ptr(), which checks it. */
#ifndef FERRY_MEM_H
#define FERRY_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MEM_HOLE_START  0xc0000000ull /* 3 GiB: PCI, IOAPIC, LAPIC, firmware live above */
#define MEM_4G          0x100000000ull
#define MEM_MAX_REGIONS 2
#define PAGE_SIZE       4096ull

struct mem_region {
	uint64_t gpa;    /* guest-physical start */
	uint64_t size;   /* bytes */
	uint64_t offset; /* offset into the RAM memfd and the host mapping */
};

struct guest_mem {
	int fd;        /* memfd backing all of RAM */
	uint8_t *host; /* RAM mapped once, MAP_SHARED */
	uint64_t size; /* total RAM bytes */
	unsigned nregions;
	struct mem_region region[MEM_MAX_REGIONS];
};

/* Creates RAM of size bytes (a multiple of 4 KiB, >= 1 MiB). On failure returns -1 with a line in err. */
int gmem_init(struct guest_mem *m, uint64_t size, char *err, size_t err_len);
void gmem_destroy(struct guest_mem *m);
/* Host pointer for [gpa, gpa+len) if that range lies wholly inside one RAM region, else NULL.
 * Overflow-safe for any gpa and len. */
void *gmem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);
bool gmem_is_ram(const struct guest_mem *m, uint64_t gpa, uint64_t len);
/* Copy in or out of guest RAM; -1 if the range is not RAM. */
int gmem_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len);
int gmem_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len);
/* Guest-physical end of RAM below 4 GiB. */
uint64_t gmem_low_end(const struct guest_mem *m);

#endif
