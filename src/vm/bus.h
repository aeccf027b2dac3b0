/* An address-decoded bus: port I/O or MMIO. Devices claim ranges at set-up; an access is
 * dispatched to the one range that holds it. Ranges never overlap. Registration happens before
 * vCPUs start, so lookups take no lock; each device serializes its own state. */
#ifndef FERRY_BUS_H
#define FERRY_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* offset is relative to the range's base; data holds size bytes, little-endian. For a read the
 * handler fills data. */
typedef void (*bus_handler)(void *opaque, uint64_t offset, uint8_t *data, unsigned size,
			    bool write);

struct bus_range {
	uint64_t base, len;
	bus_handler fn;
	void *opaque;
	const char *name;
};

struct bus {
	const char *name;         /* "pio" or "mmio", for messages */
	struct bus_range *ranges; /* sorted by base */
	size_t n, cap;
};

void bus_init(struct bus *b, const char *name);
void bus_destroy(struct bus *b);
/* Claims [base, base+len). Returns -1 if it overlaps a claimed range or wraps around. */
int bus_register(struct bus *b, uint64_t base, uint64_t len, bus_handler fn, void *opaque,
		 const char *name);
/* Removes the range that holds addr and returns it in *out: for a device that decodes a register
 * inside another's range (the PCI config ports hold the reset register 0xcf9). -1 if none. */
int bus_take(struct bus *b, uint64_t addr, struct bus_range *out);
const struct bus_range *bus_find(const struct bus *b, uint64_t addr);
/* Dispatches one access of size bytes. Returns -1 (data untouched) when no range holds all of
 * [addr, addr+size). */
int bus_access(const struct bus *b, uint64_t addr, uint8_t *data, unsigned size, bool write);

#endif
