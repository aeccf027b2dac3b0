/* libFuzzer target for split virtqueues (src/virtio/virtqueue.c): the input is a driver, hostile
 * or not. Guest RAM is 64 KiB in two regions, 48 KiB at 0 and 16 KiB at 4 GiB, in one malloc'd
 * buffer of exactly that size, so ASan sees any access outside RAM; a chain's segments must
 * also each lie within one region.
 *
 * Input layout:
 *   byte 0      bits 0-3 log2 of the queue size, bit 4 VIRTIO_F_EVENT_IDX, bit 5
 *               VIRTIO_F_INDIRECT_DESC, bit 6 take the size from bytes 1-2 instead
 *   bytes 1-2   queue size (little-endian) when bit 6 is set
 *   bytes 3-14  descriptor table, available and used ring addresses, 32 bits each; bit 31
 *               set means 4 GiB + the low 31 bits
 *   byte 15     the caller's segment array size (0-255)
 *   bytes 16-111  32 operations of 3 bytes: op, a, b (see run_op)
 *   the rest    RAM contents from address 0; its first 16 KiB are also the RAM at 4 GiB
 *
 * Built with -DFUZZ_SEED_MAIN instead, this file is the seed generator: it writes a few
 * drivers (plain chains, indirect tables with the event index, rings above 4 GiB, a loop, a
 * chain too long for the caller) into the directory given as its argument. */
#include <linux/virtio_ring.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "virtio/virtqueue.h"

#define LOW_SIZE  (48u << 10)
#define HIGH_SIZE (16u << 10)
#define RAM_SIZE  (LOW_SIZE + HIGH_SIZE)
#define HDR_LEN   16
#define NOPS      32
#define PROG_LEN  (3 * NOPS)
#define IMAGE_OFF (HDR_LEN + PROG_LEN)

#ifndef FUZZ_SEED_MAIN

static uint8_t *ram;
static struct guest_mem mem;
static struct virtq_seg segs[256];
static uint8_t scratch[256 * 17]; /* the largest read or write (case 5) */
static int debug;                 /* FUZZ_VQ_DEBUG set: print the queue after each operation */

static void init_once(void)
{
	debug = getenv("FUZZ_VQ_DEBUG") != NULL;
	ram = malloc(RAM_SIZE);
	if (!ram)
		abort();
	mem.fd = -1;
	mem.host = ram;
	mem.size = RAM_SIZE;
	mem.nregions = 2;
	mem.region[0] = (struct mem_region){.gpa = 0, .size = LOW_SIZE, .offset = 0};
	mem.region[1] = (struct mem_region){.gpa = MEM_4G, .size = HIGH_SIZE, .offset = LOW_SIZE};
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t ring_gpa(const uint8_t *p)
{
	uint32_t v = le32(p);
	return v & 0x80000000u ? MEM_4G + (v & 0x7fffffffu) : v;
}

/* A host range lies wholly within one RAM region. */
static int in_one_region(const void *p, uint64_t len)
{
	for (unsigned i = 0; i < mem.nregions; i++) {
		const uint8_t *lo = ram + mem.region[i].offset, *hi = lo + mem.region[i].size;
		if ((const uint8_t *)p >= lo && (const uint8_t *)p <= hi &&
		    len <= (uint64_t)(hi - (const uint8_t *)p))
			return 1;
	}
	return 0;
}

/* A stopped queue says why, in a terminated message. */
static void check_queue(const struct virtq *q)
{
	if (!memchr(q->err, 0, sizeof(q->err)))
		abort();
	if (q->ready) {
		if (q->inflight > q->size || !q->desc || !q->avail || !q->used)
			abort();
		if (!in_one_region(q->desc, 16ull * q->size) ||
		    !in_one_region(q->avail, 4 + 2ull * q->size) ||
		    !in_one_region(q->used, 4 + 8ull * q->size))
			abort();
	}
}

static void check_chain(const struct virtq *q, const struct virtq_chain *c)
{
	if (c->nseg < 1 || c->nseg > c->cap || c->nseg > q->size || c->n_out > c->nseg ||
	    c->head >= q->size)
		abort();
	uint64_t out = 0, in = 0;
	for (unsigned i = 0; i < c->nseg; i++) {
		const struct virtq_seg *s = &c->seg[i];
		if (s->write != (i >= c->n_out))
			abort();
		if (s->len && !in_one_region(s->host, s->len))
			abort();
		if (s->write)
			in += s->len;
		else
			out += s->len;
	}
	if (out != c->out_len || in != c->in_len)
		abort();
}

struct run {
	struct virtq q;
	struct virtq params; /* the transport's registers, to configure the queue after a reset */
	struct virtq_chain last; /* the last chain taken (its segments are in segs) */
	unsigned cap;
	uint16_t heads[256];
	unsigned nheads;
};

static void save_load(struct run *rn, uint8_t a, uint8_t b)
{
	struct state_writer w;
	struct state_reader r;
	struct virtq q2;
	sw_init(&w);
	virtq_save(&rn->q, &w);
	if (w.err)
		abort();
	/* The record as saved loads back to the same queue... */
	sr_init(&r, w.buf, w.len);
	if (virtq_load(&q2, &r, &mem) != 0 || r.off != w.len)
		abort();
	if (q2.ready != rn->q.ready || q2.last_avail != rn->q.last_avail ||
	    q2.used_idx != rn->q.used_idx || q2.inflight != rn->q.inflight)
		abort();
	if (q2.ready && (q2.desc != rn->q.desc || q2.avail != rn->q.avail || q2.used != rn->q.used))
		abort();
	/* ...and a corrupted one is refused or describes a sound queue. */
	w.buf[a % w.len] ^= (uint8_t)(b | 1);
	sr_init(&r, w.buf, w.len - (b & 0x80 ? b % w.len : 0));
	struct virtq q3 = rn->q;
	if (virtq_load(&q3, &r, &mem) == 0) {
		check_queue(&q3);
	} else if (!r.err || q3.ready != rn->q.ready || q3.size != rn->q.size ||
		   q3.last_avail != rn->q.last_avail || q3.inflight != rn->q.inflight ||
		   q3.used != rn->q.used) {
		abort(); /* a refused record leaves the queue alone */
	}
	sw_free(&w);
}

/* One operation, op % 10: 0-1 pop, 2 push (a taken head, or with a % 8 == 0 any head), 3 the
 * interrupt decision, 4 notifications on/off, 5 read and write the last chain, 6 the driver
 * adds to the available index, 7 the driver rewrites a RAM byte, 8 save and load, 9 reset. */
static void run_op(struct run *rn, uint8_t op, uint8_t a, uint8_t b)
{
	struct virtq *q = &rn->q;
	switch (op % 10) {
	case 0:
	case 1: {
		struct virtq_chain c = {.seg = segs, .cap = rn->cap};
		uint32_t inflight = q->inflight;
		int rc = virtq_pop(q, &c);
		if (rc == 1) {
			check_chain(q, &c);
			if (q->inflight != inflight + 1)
				abort();
			rn->last = c;
			if (rn->nheads < 256)
				rn->heads[rn->nheads++] = c.head;
		} else if (rc == -1) {
			if (q->ready || !q->err[0])
				abort();
			rn->last.nseg = 0;
		} else if (rc != 0) {
			abort();
		}
		break;
	}
	case 2: {
		uint16_t used = q->used_idx;
		if (rn->nheads && a % 8) {
			unsigned i = b % rn->nheads;
			bool ready = q->ready;
			virtq_push(q, rn->heads[i], (uint32_t)a << 8 | b);
			rn->heads[i] = rn->heads[--rn->nheads];
			if (ready && q->used_idx != (uint16_t)(used + 1))
				abort();
		} else {
			/* A device bug: a head that may not be in flight. The queue cannot tell
			 * when it is in range with chains in flight, so it takes it as one of them. */
			virtq_push(q, (uint16_t)(a << 8 | b), 0);
			if (q->used_idx != used && rn->nheads)
				rn->nheads--;
		}
		break;
	}
	case 3:
		(void)virtq_should_interrupt(q);
		break;
	case 4:
		(void)virtq_notify_enable(q, a & 1);
		break;
	case 5: {
		uint64_t off = (uint64_t)a * 61 + (b & 0x80 ? UINT64_MAX - 300 : 0);
		size_t len = (size_t)b * 17;
		size_t got = virtq_read(&rn->last, off, scratch, len);
		if (got > len || (got && off + got > rn->last.out_len))
			abort();
		got = virtq_write(&rn->last, off, scratch, len);
		if (got > len || (got && off + got > rn->last.in_len))
			abort();
		break;
	}
	case 6: /* the driver makes more chains available */
		if (q->avail) {
			uint16_t *idx = (uint16_t *)q->avail + 1;
			*idx = (uint16_t)(*idx + (a % 4));
		}
		break;
	case 7: /* the driver rewrites a byte anywhere */
		ram[((unsigned)a << 8 | b) % RAM_SIZE] = a ^ b;
		break;
	case 8:
		save_load(rn, a, b);
		break;
	case 9: /* a device reset, and the transport sets the queue up again */
		virtq_reset(q);
		if (q->ready || q->used)
			abort();
		rn->nheads = 0;
		rn->last.nseg = 0;
		*q = rn->params;
		if (virtq_enable(q, &mem) < 0 && (q->ready || !q->err[0]))
			abort();
		break;
	}
	if (debug)
		fprintf(stderr,
			"op %u: ready %d last_avail %u used %u inflight %u nseg %u err \"%s\"\n",
			(unsigned)op % 10, q->ready, q->last_avail, q->used_idx, q->inflight,
			rn->last.nseg, q->err);
	check_queue(q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run rn;
	if (!ram)
		init_once();
	if (size < IMAGE_OFF)
		return 0;
	memset(ram, 0, RAM_SIZE);
	size_t image = size - IMAGE_OFF;
	memcpy(ram, data + IMAGE_OFF, image < LOW_SIZE ? image : LOW_SIZE);
	memcpy(ram + LOW_SIZE, data + IMAGE_OFF, image < HIGH_SIZE ? image : HIGH_SIZE);

	memset(&rn, 0, sizeof(rn));
	rn.last.seg = segs;
	rn.last.cap = sizeof(segs) / sizeof(segs[0]);
	struct virtq *q = &rn.q;
	uint8_t ctl = data[0];
	q->size = ctl & 0x40 ? (uint16_t)(data[1] | data[2] << 8) : (uint16_t)(1u << (ctl & 15));
	q->desc_gpa = ring_gpa(data + 3);
	q->avail_gpa = ring_gpa(data + 7);
	q->used_gpa = ring_gpa(data + 11);
	q->event_idx = ctl & 0x10;
	q->indirect = ctl & 0x20;
	rn.cap = data[15];
	rn.params = *q;
	if (virtq_enable(q, &mem) < 0 && (q->ready || !q->err[0]))
		abort();
	check_queue(q);

	const uint8_t *prog = data + HDR_LEN;
	for (size_t i = 0; i < NOPS; i++)
		run_op(&rn, prog[3 * i], prog[3 * i + 1], prog[3 * i + 2]);
	return 0;
}

#else /* FUZZ_SEED_MAIN: the seed generator */

static uint8_t buf[IMAGE_OFF + 0x3000];

static void w16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}

static void w32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		 uint16_t next)
{
	struct vring_desc d = {.addr = addr, .len = len, .flags = flags, .next = next};
	memcpy(buf + IMAGE_OFF + table + 16 * i, &d, sizeof(d));
}

/* Rings at 0x0 (table), 0x100 (available) and 0x200 (used) of the RAM image; gpa_base is where
 * the transport is told they are (0, or 4 GiB for the same bytes seen through the high region). */
static void header(uint8_t ctl, uint32_t gpa_base, uint8_t cap)
{
	memset(buf, 0, sizeof(buf));
	buf[0] = ctl;
	w32(buf + 3, gpa_base | 0x0);
	w32(buf + 7, gpa_base | 0x100);
	w32(buf + 11, gpa_base | 0x200);
	buf[15] = cap;
	/* pop, pop, push, read/write, should_interrupt, notify on, save/load, pop, push, ... */
	static const uint8_t ops[] = {0, 1, 2, 5, 3, 4, 8, 0, 2, 6, 0, 5, 3, 4, 2, 9, 0, 3};
	for (unsigned i = 0; i < NOPS; i++) {
		buf[HDR_LEN + 3 * i] = ops[i % sizeof(ops)];
		buf[HDR_LEN + 3 * i + 1] = (uint8_t)(i * 37 + 1);
		buf[HDR_LEN + 3 * i + 2] = (uint8_t)(i * 11 + 3);
	}
}

static void avail(uint16_t idx, const uint16_t *heads, unsigned n)
{
	uint8_t *a = buf + IMAGE_OFF + 0x100;
	w16(a + 2, idx);
	for (unsigned i = 0; i < n; i++)
		w16(a + 4 + 2 * i, heads[i]);
}

static int write_seed(const char *dir, const char *name)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, sizeof(buf), f) != sizeof(buf) || fclose(f) != 0) {
		perror(path);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	const uint16_t heads[] = {0, 2, 3, 5};

	/* Size 8, no features: a readable+writable chain and three single buffers. */
	header(3, 0, 16);
	desc(0, 0, 0x1000, 64, VRING_DESC_F_NEXT, 1);
	desc(0, 1, 0x2000, 128, VRING_DESC_F_WRITE, 0);
	desc(0, 2, 0x1100, 16, 0, 0);
	desc(0, 3, 0x2100, 32, VRING_DESC_F_WRITE, 0);
	desc(0, 5, 0x1200, 0, 0, 0);
	avail(4, heads, 4);
	if (write_seed(argv[1], "plain") < 0)
		return 1;

	/* The same with the event index and an indirect table of three at 0x400. */
	header(3 | 0x30, 0, 16);
	desc(0, 0, 0x400, 48, VRING_DESC_F_INDIRECT, 0);
	desc(0x400, 0, 0x1000, 64, VRING_DESC_F_NEXT, 2);
	desc(0x400, 2, 0x1800, 8, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
	desc(0x400, 1, 0x2000, 128, VRING_DESC_F_WRITE, 0);
	desc(0, 2, 0x1100, 16, 0, 0);
	desc(0, 3, 0x2100, 32, VRING_DESC_F_WRITE, 0);
	desc(0, 5, 0x1200, 0, 0, 0);
	w16(buf + IMAGE_OFF + 0x100 + 4 + 2 * 8, 2); /* used_event */
	avail(4, heads, 4);
	if (write_seed(argv[1], "indirect_event") < 0)
		return 1;

	/* Rings above 4 GiB, size 4, buffers in both regions. */
	header(2, 0x80000000u, 4);
	desc(0, 0, 0x100001000ull, 64, VRING_DESC_F_NEXT, 1);
	desc(0, 1, 0x2000, 128, VRING_DESC_F_WRITE, 0);
	desc(0, 2, 0x100000100ull, 16, 0, 0);
	desc(0, 3, 0x100003ff0ull, 16, VRING_DESC_F_WRITE, 0);
	avail(3, heads, 3);
	if (write_seed(argv[1], "high") < 0)
		return 1;

	/* A loop, and a chain longer than the caller's array. */
	header(3, 0, 16);
	desc(0, 0, 0x1000, 64, VRING_DESC_F_NEXT, 1);
	desc(0, 1, 0x1000, 64, VRING_DESC_F_NEXT, 0);
	avail(1, heads, 1);
	if (write_seed(argv[1], "loop") < 0)
		return 1;
	header(3, 0, 2);
	desc(0, 2, 0x1000, 1, VRING_DESC_F_NEXT, 3);
	desc(0, 3, 0x1000, 1, VRING_DESC_F_NEXT, 5);
	desc(0, 5, 0x1000, 1, 0, 0);
	avail(1, heads + 1, 1);
	if (write_seed(argv[1], "too_long") < 0)
		return 1;
	return 0;
}

#endif
