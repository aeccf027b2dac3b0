#include "vm/state.h"

#include <stdlib.h>
#include <string.h>

void sw_init(struct state_writer *w)
{
	memset(w, 0, sizeof(*w));
}

void sw_free(struct state_writer *w)
{
	free(w->buf);
	memset(w, 0, sizeof(*w));
}

void sw_bytes(struct state_writer *w, const void *p, size_t n)
{
	if (w->err)
		return;
	if (n > w->cap - w->len) {
		size_t cap = w->cap ? w->cap : 256;
		while (cap - w->len < n) {
			if (cap > SIZE_MAX / 2) {
				w->err = true;
				return;
			}
			cap *= 2;
		}
		uint8_t *nb = realloc(w->buf, cap);
		if (!nb) {
			w->err = true;
			return;
		}
		w->buf = nb;
		w->cap = cap;
	}
	if (n)
		memcpy(w->buf + w->len, p, n);
	w->len += n;
}

/* Little-endian on every host: the record format does not depend on where it was written. */
static void put_le(struct state_writer *w, uint64_t v, unsigned n)
{
	uint8_t b[8];
	for (unsigned i = 0; i < n; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	sw_bytes(w, b, n);
}

void sw_u8(struct state_writer *w, uint8_t v)
{
	put_le(w, v, 1);
}
void sw_u16(struct state_writer *w, uint16_t v)
{
	put_le(w, v, 2);
}
void sw_u32(struct state_writer *w, uint32_t v)
{
	put_le(w, v, 4);
}
void sw_u64(struct state_writer *w, uint64_t v)
{
	put_le(w, v, 8);
}

void sw_begin(struct state_writer *w, const char *tag, uint32_t version)
{
	char t[8] = {0};
	memcpy(t, tag, strnlen(tag, 8));
	sw_bytes(w, t, 8);
	sw_u32(w, version);
}

void sr_init(struct state_reader *r, const void *buf, size_t len)
{
	r->buf = buf;
	r->len = len;
	r->off = 0;
	r->err = false;
}

void sr_bytes(struct state_reader *r, void *p, size_t n)
{
	if (r->err || n > r->len - r->off) {
		r->err = true;
		memset(p, 0, n);
		return;
	}
	memcpy(p, r->buf + r->off, n);
	r->off += n;
}

static uint64_t get_le(struct state_reader *r, unsigned n)
{
	uint8_t b[8];
	uint64_t v = 0;
	sr_bytes(r, b, n);
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)b[i] << (8 * i);
	return v;
}

uint8_t sr_u8(struct state_reader *r)
{
	return (uint8_t)get_le(r, 1);
}
uint16_t sr_u16(struct state_reader *r)
{
	return (uint16_t)get_le(r, 2);
}
uint32_t sr_u32(struct state_reader *r)
{
	return (uint32_t)get_le(r, 4);
}
uint64_t sr_u64(struct state_reader *r)
{
	return get_le(r, 8);
}

uint32_t sr_begin(struct state_reader *r, const char *tag, uint32_t max_version)
{
	char want[8] = {0}, got[8];
	memcpy(want, tag, strnlen(tag, 8));
	sr_bytes(r, got, 8);
	uint32_t version = sr_u32(r);
	sr_check(r, memcmp(want, got, 8) == 0 && version >= 1 && version <= max_version);
	return r->err ? 0 : version;
}

void sr_check(struct state_reader *r, bool cond)
{
	if (!cond)
		r->err = true;
}
