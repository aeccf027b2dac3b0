/* Split virtqueues (virtio 1.x, section 2.7) as a device sees them: take a descriptor chain the
 * driver made available, hand back its used length, and decide whether the driver wants an
 * interrupt. Pure: it touches only guest RAM (struct guest_mem) and the struct below, so it is
 * unit-tested and fuzzed alone. The guest is untrusted: every ring and buffer is checked to lie in
 * RAM with overflow-safe arithmetic, a chain may not be longer than the queue (nor than the
 * caller's segment array), indirect tables may not nest, and in-flight chains are capped at the
 * queue size. A rule broken gives -1: the transport then puts the device into NEEDS_RESET. */
#ifndef FERRY_VIRTQUEUE_H
#define FERRY_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vm/mem.h"
#include "vm/state.h"

#define VIRTQ_MAX_SIZE 32768 /* the largest queue size virtio allows (a power of 2) */

struct virtq {
	/* Set by the transport from the driver's queue registers before virtq_enable(). */
	uint16_t size; /* a power of 2, 1..VIRTQ_MAX_SIZE */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	bool event_idx; /* VIRTIO_F_EVENT_IDX negotiated */
	bool indirect;  /* VIRTIO_F_INDIRECT_DESC negotiated */

	/* Owned by virtqueue.c. */
	const struct guest_mem *mem;
	bool ready;                /* virtq_enable() succeeded and no rule has been broken since */
	void *desc, *avail, *used; /* host pointers of the three rings, checked at enable */
	uint16_t last_avail;       /* the next available-ring index the device takes */
	uint16_t used_idx;       /* the device's used index (the driver sees it after virtq_push) */
	uint16_t signalled_used; /* used_idx when the driver was last interrupted (event index) */
	bool signalled_valid;
	uint32_t inflight; /* chains taken and not yet returned */
	char err[96];      /* what rule the driver broke, for the transport's message */
};

/* One buffer of a chain: a host pointer to len bytes of guest RAM, checked. */
struct virtq_seg {
	void *host;
	uint32_t len;
	bool write; /* device-writable (VIRTQ_DESC_F_WRITE) */
};

struct virtq_chain {
	uint16_t head;    /* the head descriptor's index: what virtq_push returns to the driver */
	unsigned nseg;    /* segments filled */
	unsigned n_out;   /* the first n_out segments are device-readable, the rest writable */
	uint64_t out_len; /* bytes the device may read */
	uint64_t in_len;  /* bytes the device may write */
	struct virtq_seg *seg; /* caller-provided array of cap entries */
	unsigned cap;
};

/* Checks the rings' placement (alignment 16/2/4, inside RAM, size a power of 2) and takes host
 * pointers to them. Starts at avail/used index 0. Returns 0, or -1 with q->err set. */
int virtq_enable(struct virtq *q, const struct guest_mem *mem);
/* Forgets everything (device reset). */
void virtq_reset(struct virtq *q);

/* Takes the next available chain into *c (c->seg and c->cap set by the caller). Returns 1 with a
 * chain, 0 when the driver has made nothing new available, -1 when the driver broke a rule (bad
 * index, address or length outside RAM, loop or chain longer than the queue or than c->cap,
 * nested or misplaced indirect table, a readable segment after a writable one, more in flight
 * than the queue size): q->err says which and the queue stops (ready = false). */
int virtq_pop(struct virtq *q, struct virtq_chain *c);
/* Returns chain head to the driver with len bytes written into its writable segments. */
void virtq_push(struct virtq *q, uint16_t head, uint32_t len);
/* After one or more pushes: true when the driver asked to be interrupted (VIRTQ_AVAIL_F_NO_INTERRUPT
 * clear, or with the event index: used_event was passed since the last interrupt). */
bool virtq_should_interrupt(struct virtq *q);
/* Asks the driver for (true) or excuses it from (false) notifications; with the event index,
 * publishes avail_event = last_avail. Returns true if, after enabling, more chains became
 * available meanwhile (so the caller polls again instead of sleeping). */
bool virtq_notify_enable(struct virtq *q, bool on);

/* The device-side indices and registers, for snapshots. Load re-checks the rings (virtq_enable)
 * when the queue was ready. */
void virtq_save(const struct virtq *q, struct state_writer *w);
int virtq_load(struct virtq *q, struct state_reader *r, const struct guest_mem *mem);

/* Copies between a chain's segments and a flat buffer: from the readable segments starting at
 * byte off (virtq_read), or into the writable ones starting at byte off (virtq_write). Return the
 * bytes copied (short when the chain ends first). */
size_t virtq_read(const struct virtq_chain *c, uint64_t off, void *dst, size_t len);
size_t virtq_write(const struct virtq_chain *c, uint64_t off, const void *src, size_t len);

#endif
