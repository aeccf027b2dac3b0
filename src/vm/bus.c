#include "vm/bus.h"

#include <stdlib.h>
#include <string.h>

void bus_init(struct bus *b, const char *name)
{
	memset(b, 0, sizeof(*b));
	b->name = name;
}

void bus_destroy(struct bus *b)
{
	free(b->ranges);
	b->ranges = NULL;
	b->n = b->cap = 0;
}

/* Index of the first range whose end is above addr (ranges are sorted and disjoint). */
static size_t lower_bound(const struct bus *b, uint64_t addr)
{
	size_t lo = 0, hi = b->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct bus_range *r = &b->ranges[mid];
		if (addr - r->base >= r->len && addr > r->base)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int bus_register(struct bus *b, uint64_t base, uint64_t len, bus_handler fn, void *opaque,
		 const char *name)
{
	if (!len || !fn || base + len - 1 < base)
		return -1;
	size_t i = lower_bound(b, base);
	/* The new range must end before the next one starts. */
	if (i < b->n && b->ranges[i].base <= base + len - 1)
		return -1;
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 16;
		struct bus_range *nr = realloc(b->ranges, cap * sizeof(*nr));
		if (!nr)
			return -1;
		b->ranges = nr;
		b->cap = cap;
	}
	memmove(&b->ranges[i + 1], &b->ranges[i], (b->n - i) * sizeof(*b->ranges));
	b->ranges[i] = (struct bus_range){base, len, fn, opaque, name};
	b->n++;
	return 0;
}

int bus_take(struct bus *b, uint64_t addr, struct bus_range *out)
{
	const struct bus_range *r = bus_find(b, addr);
	if (!r)
		return -1;
	size_t i = (size_t)(r - b->ranges);
	*out = *r;
	memmove(&b->ranges[i], &b->ranges[i + 1], (b->n - i - 1) * sizeof(*b->ranges));
	b->n--;
	return 0;
}

const struct bus_range *bus_find(const struct bus *b, uint64_t addr)
{
	size_t i = lower_bound(b, addr);
	if (i < b->n && addr >= b->ranges[i].base && addr - b->ranges[i].base < b->ranges[i].len)
		return &b->ranges[i];
	return NULL;
}

int bus_access(const struct bus *b, uint64_t addr, uint8_t *data, unsigned size, bool write)
{
	const struct bus_range *r = bus_find(b, addr);
	if (!r || size == 0 || size - 1 > r->len - 1 - (addr - r->base))
		return -1;
	r->fn(r->opaque, addr - r->base, data, size, write);
	return 0;
}
