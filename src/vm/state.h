/* Versioned, bounds-checked state records: how every device and engine saves and restores its
 * complete state. A writer appends little-endian fields; a reader takes them back and refuses
 * (sticky error) anything short, over-long or of an unknown version -- a malformed snapshot
 * gives an error, never a wild read. */
#ifndef FERRY_STATE_H
#define FERRY_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct state_writer {
	uint8_t *buf;
	size_t len, cap;
	bool err; /* allocation failed */
};

struct state_reader {
	const uint8_t *buf;
	size_t len, off;
	bool err; /* read past the end, or a value out of range */
};

void sw_init(struct state_writer *w);
void sw_free(struct state_writer *w);
void sw_bytes(struct state_writer *w, const void *p, size_t n);
void sw_u8(struct state_writer *w, uint8_t v);
void sw_u16(struct state_writer *w, uint16_t v);
void sw_u32(struct state_writer *w, uint32_t v);
void sw_u64(struct state_writer *w, uint64_t v);
/* A record header: a tag (up to 8 characters) naming the owner, and its layout version. */
void sw_begin(struct state_writer *w, const char *tag, uint32_t version);

void sr_init(struct state_reader *r, const void *buf, size_t len);
void sr_bytes(struct state_reader *r, void *p, size_t n);
uint8_t sr_u8(struct state_reader *r);
uint16_t sr_u16(struct state_reader *r);
uint32_t sr_u32(struct state_reader *r);
uint64_t sr_u64(struct state_reader *r);
/* Checks the header; returns the version, or 0 (and sets err) on a wrong tag or a version
 * above max_version. */
uint32_t sr_begin(struct state_reader *r, const char *tag, uint32_t max_version);
/* Marks the reader failed unless cond holds: for range checks on loaded values. */
void sr_check(struct state_reader *r, bool cond);

#endif
