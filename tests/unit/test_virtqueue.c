/* Split virtqueues (src/virtio/virtqueue.c): chains as a driver lays them out in guest RAM,
 * the used ring after pushes, interrupt and notification suppression (with and without the
 * event index, across the 16-bit wrap), snapshots, and many ways a hostile driver can break
 * the rules, each of which must stop the queue with a message and never touch memory outside
 * RAM. A seeded random test throws thousands of random rings at it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <linux/virtio_ring.h>

#include "virtio/virtqueue.h"
#include "vm/mem.h"
#include "vm/state.h"

#define RAM_SIZE (16ull << 20)
#define DESC     0x10000ull /* descriptor table */
#define AVAIL    0x20000ull
#define USED     0x30000ull
#define IND      0x40000ull  /* indirect tables */
#define BUF      0x100000ull /* buffers */

#define NEXT     VRING_DESC_F_NEXT
#define WRITE    VRING_DESC_F_WRITE
#define INDIR    VRING_DESC_F_INDIRECT

static struct guest_mem mem;
static struct virtq_seg segs[64];

static int setup(void **state)
{
	(void)state;
	char err[128];
	if (gmem_init(&mem, RAM_SIZE, err, sizeof(err)) < 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	gmem_destroy(&mem);
	return 0;
}

static void wr16(uint64_t gpa, uint16_t v)
{
	assert_int_equal(gmem_write(&mem, gpa, &v, 2), 0);
}

static uint16_t rd16(uint64_t gpa)
{
	uint16_t v;
	assert_int_equal(gmem_read(&mem, gpa, &v, 2), 0);
	return v;
}

static uint32_t rd32(uint64_t gpa)
{
	uint32_t v;
	assert_int_equal(gmem_read(&mem, gpa, &v, 4), 0);
	return v;
}

static void put_desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	struct vring_desc d = {.addr = addr, .len = len, .flags = flags, .next = next};
	assert_int_equal(gmem_write(&mem, table + 16ull * i, &d, sizeof(d)), 0);
}

/* The driver's side: place head in the next available slot and publish it. */
static void avail_add(const struct virtq *q, uint16_t head)
{
	uint16_t idx = rd16(q->avail_gpa + 2);
	wr16(q->avail_gpa + 4 + 2ull * (idx & (q->size - 1)), head);
	wr16(q->avail_gpa + 2, (uint16_t)(idx + 1));
}

static void set_used_event(const struct virtq *q, uint16_t v)
{
	wr16(q->avail_gpa + 4 + 2ull * q->size, v);
}

static void clear_rings(void)
{
	memset(mem.host, 0, 2u << 20);
}

static void qinit(struct virtq *q, uint16_t size, bool event_idx, bool indirect)
{
	memset(q, 0, sizeof(*q));
	q->size = size;
	q->desc_gpa = DESC;
	q->avail_gpa = AVAIL;
	q->used_gpa = USED;
	q->event_idx = event_idx;
	q->indirect = indirect;
}

static void qup(struct virtq *q, uint16_t size, bool event_idx, bool indirect)
{
	clear_rings();
	qinit(q, size, event_idx, indirect);
	assert_int_equal(virtq_enable(q, &mem), 0);
	assert_true(q->ready);
	assert_string_equal(q->err, "");
}

static struct virtq_chain chain(unsigned cap)
{
	return (struct virtq_chain){.seg = segs, .cap = cap};
}

static uint8_t *host(uint64_t gpa)
{
	return gmem_ptr(&mem, gpa, 1);
}

/* The driver broke a rule: -1, the queue stopped with a message naming the rule, and it stays
 * stopped. */
static void expect_broken(struct virtq *q, unsigned cap, const char *needle)
{
	struct virtq_chain c = chain(cap);
	int rc = virtq_pop(q, &c);
	if (rc != -1 || !strstr(q->err, needle))
		fail_msg("pop gave %d, err \"%s\", wanted -1 and \"%s\"", rc, q->err, needle);
	assert_false(q->ready);
	assert_true(strlen(q->err) < sizeof(q->err));
	char saved[sizeof(q->err)];
	memcpy(saved, q->err, sizeof(saved));
	assert_int_equal(virtq_pop(q, &c), -1);
	assert_string_equal(q->err, saved);
	/* Nothing more is handed to the driver or asked of it. */
	virtq_push(q, 0, 1);
	assert_false(virtq_should_interrupt(q));
	assert_false(virtq_notify_enable(q, true));
}

static void test_enable_checks(void **state)
{
	(void)state;
	struct virtq q;
	static const uint16_t bad_sizes[] = {0, 3, 6, 100, 0xffff, 32769};
	for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		qinit(&q, bad_sizes[i], false, false);
		assert_int_equal(virtq_enable(&q, &mem), -1);
		assert_false(q.ready);
		assert_non_null(strstr(q.err, "power of 2"));
	}
	for (unsigned sh = 0; sh <= 15; sh++) {
		qinit(&q, (uint16_t)(1u << sh), true, true);
		q.desc_gpa = BUF; /* 512 KiB of table at the largest size */
		assert_int_equal(virtq_enable(&q, &mem), 0);
		assert_true(q.ready);
		assert_ptr_equal(q.desc, host(BUF));
		assert_ptr_equal(q.avail, host(AVAIL));
		assert_ptr_equal(q.used, host(USED));
	}

	/* Alignment: 16 for the table, 2 for the available ring, 4 for the used ring. */
	const struct {
		uint64_t desc, avail, used;
	} misaligned[] = {{DESC + 8, AVAIL, USED},
			  {DESC + 1, AVAIL, USED},
			  {DESC, AVAIL + 1, USED},
			  {DESC, AVAIL, USED + 2},
			  {DESC, AVAIL, USED + 1}};
	for (size_t i = 0; i < sizeof(misaligned) / sizeof(misaligned[0]); i++) {
		qinit(&q, 8, false, false);
		q.desc_gpa = misaligned[i].desc;
		q.avail_gpa = misaligned[i].avail;
		q.used_gpa = misaligned[i].used;
		assert_int_equal(virtq_enable(&q, &mem), -1);
		assert_false(q.ready);
		assert_non_null(strstr(q.err, "aligned"));
	}

	/* Placement: wholly inside RAM, exactly up to its end at most, no wrap at 2^64. */
	qinit(&q, 8, false, false);
	q.desc_gpa = RAM_SIZE - 16ull * 8;
	q.avail_gpa = RAM_SIZE - 4 - 2ull * 8 - 2ull * 0x100;
	q.used_gpa = RAM_SIZE - 0x1000;
	assert_int_equal(virtq_enable(&q, &mem), 0);
	q.desc_gpa = RAM_SIZE - 16ull * 8 + 16;
	assert_int_equal(virtq_enable(&q, &mem), -1);
	assert_non_null(strstr(q.err, "descriptor table"));
	assert_non_null(strstr(q.err, "not in RAM"));
	q.desc_gpa = 0xfffffffffffffff0ull;
	assert_int_equal(virtq_enable(&q, &mem), -1);
	assert_non_null(strstr(q.err, "descriptor table"));
	q.desc_gpa = DESC;

	/* The available ring ends exactly at the end of RAM: the event field does not fit. */
	q.avail_gpa = RAM_SIZE - 4 - 2ull * 8;
	assert_int_equal(virtq_enable(&q, &mem), 0);
	q.event_idx = true;
	assert_int_equal(virtq_enable(&q, &mem), -1);
	assert_non_null(strstr(q.err, "available ring"));
	q.event_idx = false;
	q.avail_gpa = 0xfffffffffffffffeull;
	assert_int_equal(virtq_enable(&q, &mem), -1);
	assert_non_null(strstr(q.err, "available ring"));
	q.avail_gpa = AVAIL;

	q.used_gpa = RAM_SIZE - 4 - 8ull * 8;
	assert_int_equal(virtq_enable(&q, &mem), 0);
	q.event_idx = true;
	assert_int_equal(virtq_enable(&q, &mem), -1);
	assert_non_null(strstr(q.err, "used ring"));
	q.used_gpa = RAM_SIZE;
	q.event_idx = false;
	assert_int_equal(virtq_enable(&q, &mem), -1);
	assert_non_null(strstr(q.err, "used ring"));
	q.used_gpa = 0xfffffffffffffffcull;
	assert_int_equal(virtq_enable(&q, &mem), -1);
	assert_false(q.ready);

	/* A queue never enabled, and a reset one, take nothing. */
	struct virtq_chain c = chain(4);
	memset(&q, 0, sizeof(q));
	assert_int_equal(virtq_pop(&q, &c), -1);
	assert_non_null(strstr(q.err, "not enabled"));
	virtq_push(&q, 0, 0);
	assert_false(virtq_should_interrupt(&q));
	assert_false(virtq_notify_enable(&q, true));
	qup(&q, 8, false, false);
	virtq_reset(&q);
	assert_false(q.ready);
	assert_null(q.used);
	assert_int_equal(q.size, 0);
	assert_int_equal(virtq_pop(&q, &c), -1);
}

static void test_simple_chain(void **state)
{
	(void)state;
	struct virtq q;
	qup(&q, 8, false, false);
	struct virtq_chain c = chain(8);
	assert_int_equal(virtq_pop(&q, &c), 0); /* nothing yet */

	put_desc(DESC, 5, BUF, 100, 0, 0);
	memset(host(BUF), 0xab, 100);
	avail_add(&q, 5);
	assert_int_equal(virtq_pop(&q, &c), 1);
	assert_int_equal(c.head, 5);
	assert_int_equal(c.nseg, 1);
	assert_int_equal(c.n_out, 1);
	assert_int_equal(c.out_len, 100);
	assert_int_equal(c.in_len, 0);
	assert_ptr_equal(c.seg[0].host, host(BUF));
	assert_int_equal(c.seg[0].len, 100);
	assert_false(c.seg[0].write);
	assert_int_equal(q.inflight, 1);
	assert_int_equal(q.last_avail, 1);

	uint8_t buf[128];
	assert_int_equal(virtq_read(&c, 0, buf, sizeof(buf)), 100);
	for (int i = 0; i < 100; i++)
		assert_int_equal(buf[i], 0xab);
	assert_int_equal(virtq_write(&c, 0, buf, 10), 0); /* nothing writable */
	assert_int_equal(virtq_pop(&q, &c), 0);

	/* Three descriptors chained out of order, the last writable. */
	put_desc(DESC, 2, BUF + 0x1000, 16, NEXT, 7);
	put_desc(DESC, 7, BUF + 0x2000, 0, NEXT, 0); /* an empty buffer is allowed */
	put_desc(DESC, 0, BUF + 0x3000, 512, WRITE, 0);
	avail_add(&q, 2);
	assert_int_equal(virtq_pop(&q, &c), 1);
	assert_int_equal(c.head, 2);
	assert_int_equal(c.nseg, 3);
	assert_int_equal(c.n_out, 2);
	assert_int_equal(c.out_len, 16);
	assert_int_equal(c.in_len, 512);
	assert_true(c.seg[2].write);
	assert_ptr_equal(c.seg[2].host, host(BUF + 0x3000));
	assert_int_equal(q.inflight, 2);

	virtq_push(&q, 2, 300);
	virtq_push(&q, 5, 0);
	assert_int_equal(q.inflight, 0);
	assert_int_equal(rd16(USED + 2), 2);
	assert_int_equal(rd32(USED + 4), 2);
	assert_int_equal(rd32(USED + 8), 300);
	assert_int_equal(rd32(USED + 12), 5);
	assert_int_equal(rd32(USED + 16), 0);
	assert_string_equal(q.err, "");
}

static void test_read_write_split(void **state)
{
	(void)state;
	struct virtq q;
	qup(&q, 16, false, false);
	/* Readable 10 + 20 bytes, then writable 5 + 0 + 30 bytes. */
	put_desc(DESC, 0, BUF, 10, NEXT, 1);
	put_desc(DESC, 1, BUF + 0x100, 20, NEXT, 2);
	put_desc(DESC, 2, BUF + 0x200, 5, NEXT | WRITE, 3);
	put_desc(DESC, 3, 0xffffffffffff0000ull, 0, NEXT | WRITE, 4); /* empty: never accessed */
	put_desc(DESC, 4, BUF + 0x300, 30, WRITE, 0);
	for (int i = 0; i < 10; i++)
		host(BUF)[i] = (uint8_t)i;
	for (int i = 0; i < 20; i++)
		host(BUF + 0x100)[i] = (uint8_t)(10 + i);
	avail_add(&q, 0);
	struct virtq_chain c = chain(5);
	assert_int_equal(virtq_pop(&q, &c), 1);
	assert_int_equal(c.nseg, 5);
	assert_int_equal(c.n_out, 2);
	assert_int_equal(c.out_len, 30);
	assert_int_equal(c.in_len, 35);
	assert_int_equal(c.seg[3].len, 0);

	uint8_t buf[64];
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(virtq_read(&c, 7, buf, 6), 6); /* across the segment boundary */
	for (int i = 0; i < 6; i++)
		assert_int_equal(buf[i], 7 + i);
	assert_int_equal(virtq_read(&c, 25, buf, 64), 5); /* short: the readable part ends */
	for (int i = 0; i < 5; i++)
		assert_int_equal(buf[i], 25 + i);
	assert_int_equal(virtq_read(&c, 30, buf, 1), 0);
	assert_int_equal(virtq_read(&c, UINT64_MAX, buf, 1), 0);
	assert_int_equal(virtq_read(&c, 0, buf, 0), 0);

	uint8_t src[40];
	for (int i = 0; i < 40; i++)
		src[i] = (uint8_t)(0x80 + i);
	assert_int_equal(virtq_write(&c, 3, src, 40), 32); /* 2 + 30: short */
	assert_int_equal(host(BUF + 0x200)[3], 0x80);
	assert_int_equal(host(BUF + 0x200)[4], 0x81);
	assert_int_equal(host(BUF + 0x300)[0], 0x82);
	assert_int_equal(host(BUF + 0x300)[29], 0x80 + 31);
	assert_int_equal(host(BUF + 0x300)[30], 0); /* nothing past the segment */
	assert_int_equal(host(BUF + 0x200)[2], 0);
	/* The readable segments are never written. */
	assert_int_equal(host(BUF)[9], 9);
	assert_int_equal(host(BUF + 0x100)[19], 29);
	assert_int_equal(virtq_write(&c, 35, src, 1), 0);

	/* A chain exactly as long as the caller's array is fine. */
	virtq_push(&q, 0, 32);
	avail_add(&q, 0);
	c = chain(5);
	assert_int_equal(virtq_pop(&q, &c), 1);
	assert_int_equal(c.nseg, 5);
}

static void test_indirect(void **state)
{
	(void)state;
	struct virtq q;
	qup(&q, 4, false, true);
	/* Head 3 refers to a table of four descriptors, chained 0 -> 2 -> 1 -> 3; the WRITE flag
	 * on the indirect descriptor itself is ignored. */
	put_desc(DESC, 3, IND, 4 * 16, INDIR | WRITE, 0);
	put_desc(IND, 0, BUF, 64, NEXT, 2);
	put_desc(IND, 2, BUF + 0x1000, 32, NEXT, 1);
	put_desc(IND, 1, BUF + 0x2000, 8, NEXT | WRITE, 3);
	put_desc(IND, 3, BUF + 0x3000, 4096, WRITE, 0);
	avail_add(&q, 3);
	struct virtq_chain c = chain(16);
	assert_int_equal(virtq_pop(&q, &c), 1);
	assert_int_equal(c.head, 3);
	assert_int_equal(c.nseg, 4);
	assert_int_equal(c.n_out, 2);
	assert_int_equal(c.out_len, 96);
	assert_int_equal(c.in_len, 4104);
	assert_ptr_equal(c.seg[1].host, host(BUF + 0x1000));
	assert_ptr_equal(c.seg[2].host, host(BUF + 0x2000));
	assert_ptr_equal(c.seg[3].host, host(BUF + 0x3000));
	assert_int_equal(q.inflight, 1);
	virtq_push(&q, 3, 12);
	assert_int_equal(rd32(USED + 4), 3);
	assert_int_equal(rd32(USED + 8), 12);

	/* An indirect table at an odd address is read as well. */
	uint64_t odd = IND + 0x1001;
	put_desc(odd, 0, BUF + 0x10, 7, NEXT, 1);
	put_desc(odd, 1, BUF + 0x20, 9, WRITE, 0);
	put_desc(DESC, 0, odd, 32, INDIR, 0);
	avail_add(&q, 0);
	assert_int_equal(virtq_pop(&q, &c), 1);
	assert_int_equal(c.nseg, 2);
	assert_int_equal(c.out_len, 7);
	assert_int_equal(c.in_len, 9);
	assert_ptr_equal(c.seg[0].host, host(BUF + 0x10));

	/* The indirect chain may be as long as the queue (4), not longer. */
	for (unsigned i = 0; i < 4; i++)
		put_desc(IND, i, BUF + 0x100ull * i, 1, i < 3 ? NEXT : 0, (uint16_t)(i + 1));
	put_desc(DESC, 1, IND, 8 * 16, INDIR, 0);
	avail_add(&q, 1);
	assert_int_equal(virtq_pop(&q, &c), 1);
	assert_int_equal(c.nseg, 4);
	assert_int_equal(c.out_len, 4);
}

/* One broken chain per case: a fresh queue (size 8, indirect negotiated), the case's
 * descriptors, head 0 made available, and the message expected. */
static void test_bad_descriptors(void **state)
{
	(void)state;
	const uint64_t top = RAM_SIZE;
	const uint16_t big = 0xffff;
	for (int k = 0;; k++) {
		struct virtq q;
		qup(&q, 8, false, true);
		unsigned cap = 16;
		const char *needle;
		switch (k) {
		case 0: /* wholly outside RAM */
			put_desc(DESC, 0, top + 0x1000, 16, 0, 0);
			needle = "descriptor 0: address 0x1001000 length 0x10 outside RAM";
			break;
		case 1: /* straddles the end of RAM */
			put_desc(DESC, 0, top - 8, 16, 0, 0);
			needle = "outside RAM";
			break;
		case 2: /* wraps at 2^64 */
			put_desc(DESC, 0, 0xfffffffffffffff8ull, 16, 0, 0);
			needle = "address 0xfffffffffffffff8 length 0x10 outside RAM";
			break;
		case 3: /* the largest length from address 0 */
			put_desc(DESC, 0, 0, 0xffffffff, 0, 0);
			needle = "length 0xffffffff outside RAM";
			break;
		case 4: /* a bad buffer later in the chain */
			put_desc(DESC, 0, BUF, 16, NEXT, 1);
			put_desc(DESC, 1, top - 1, 2, WRITE, 0);
			needle = "descriptor 1:";
			break;
		case 5: /* a loop of two */
			put_desc(DESC, 0, BUF, 16, NEXT, 1);
			put_desc(DESC, 1, BUF, 16, NEXT, 0);
			needle = "longer than queue size 8";
			break;
		case 6: /* a descriptor chained to itself */
			put_desc(DESC, 0, BUF, 16, NEXT | WRITE, 0);
			needle = "loop";
			break;
		case 7: /* longer than the caller's array */
			for (unsigned i = 0; i < 5; i++)
				put_desc(DESC, i, BUF, 1, i < 4 ? NEXT : 0, (uint16_t)(i + 1));
			cap = 4;
			needle = "longer than 4 segments";
			break;
		case 8: /* next beyond the table */
			put_desc(DESC, 0, BUF, 16, NEXT, 8);
			needle = "next 8 beyond table of 8";
			break;
		case 9:
			put_desc(DESC, 0, BUF, 16, NEXT, big);
			needle = "next 65535";
			break;
		case 10: /* writable, then readable */
			put_desc(DESC, 0, BUF, 16, NEXT | WRITE, 1);
			put_desc(DESC, 1, BUF, 16, 0, 0);
			needle = "descriptor 1: readable after a writable one";
			break;
		case 11: /* indirect and next together */
			put_desc(DESC, 0, IND, 32, INDIR | NEXT, 1);
			put_desc(IND, 0, BUF, 16, 0, 0);
			needle = "both INDIRECT and NEXT";
			break;
		case 12: /* indirect not at the head: not its chain's only descriptor */
			put_desc(DESC, 0, BUF, 16, NEXT, 1);
			put_desc(DESC, 1, IND, 32, INDIR, 0);
			put_desc(IND, 0, BUF, 16, 0, 0);
			needle = "not alone";
			break;
		case 13: /* nested indirect */
			put_desc(DESC, 0, IND, 32, INDIR, 0);
			put_desc(IND, 0, BUF, 16, NEXT, 1);
			put_desc(IND, 1, IND + 0x100, 16, INDIR, 0);
			needle = "nested";
			break;
		case 14: /* indirect table lengths */
			put_desc(DESC, 0, IND, 0, INDIR, 0);
			needle = "indirect table length 0x0";
			break;
		case 15:
			put_desc(DESC, 0, IND, 17, INDIR, 0);
			needle = "indirect table length 0x11";
			break;
		case 16:
			put_desc(DESC, 0, IND, 8, INDIR, 0);
			needle = "indirect table length 0x8";
			break;
		case 17: /* indirect table outside RAM, straddling its end, wrapping */
			put_desc(DESC, 0, top, 16, INDIR, 0);
			needle = "indirect table 0x1000000 length 0x10 outside RAM";
			break;
		case 18:
			put_desc(DESC, 0, top - 16, 32, INDIR, 0);
			needle = "outside RAM";
			break;
		case 19:
			put_desc(DESC, 0, 0xfffffffffffffff0ull, 32, INDIR, 0);
			needle = "indirect table 0xfffffffffffffff0";
			break;
		case 20: /* inside an indirect table: next beyond it, a bad buffer, loops */
			put_desc(DESC, 0, IND, 32, INDIR, 0);
			put_desc(IND, 0, BUF, 16, NEXT, 2);
			needle = "indirect descriptor 0: next 2 beyond table of 2";
			break;
		case 21:
			put_desc(DESC, 0, IND, 32, INDIR, 0);
			put_desc(IND, 0, BUF, 16, NEXT, 1);
			put_desc(IND, 1, top - 4, 8, 0, 0);
			needle = "indirect descriptor 1: address";
			break;
		case 22:
			put_desc(DESC, 0, IND, 64, INDIR, 0);
			put_desc(IND, 0, BUF, 16, NEXT, 1);
			put_desc(IND, 1, BUF, 16, NEXT, 0);
			needle = "longer than queue size";
			break;
		case 23: /* an indirect table longer than the queue, even without a loop */
			for (unsigned i = 0; i < 12; i++)
				put_desc(IND, i, BUF, 1, i < 11 ? NEXT : 0, (uint16_t)(i + 1));
			put_desc(DESC, 0, IND, 12 * 16, INDIR, 0);
			needle = "longer than queue size 8";
			break;
		case 24:
			put_desc(DESC, 0, IND, 32, INDIR, 0);
			put_desc(IND, 0, BUF, 16, NEXT | WRITE, 1);
			put_desc(IND, 1, BUF, 16, 0, 0);
			needle = "indirect descriptor 1: readable after";
			break;
		case 25: /* indirect without the feature */
			q.indirect = false;
			put_desc(DESC, 0, IND, 32, INDIR, 0);
			put_desc(IND, 0, BUF, 16, 0, 0);
			needle = "without VIRTIO_F_INDIRECT_DESC";
			break;
		case 26: /* no room at all */
			put_desc(DESC, 0, BUF, 16, 0, 0);
			cap = 0;
			needle = "longer than 0 segments";
			break;
		default:
			return;
		}
		avail_add(&q, 0);
		expect_broken(&q, cap, needle);
		assert_int_equal(q.last_avail, 0);
		assert_int_equal(q.inflight, 0);
		/* A reset and a new enable start over. */
		q.indirect = true;
		put_desc(DESC, 0, BUF, 16, 0, 0);
		assert_int_equal(virtq_enable(&q, &mem), 0);
		assert_string_equal(q.err, "");
		struct virtq_chain c = chain(16);
		assert_int_equal(virtq_pop(&q, &c), 1);
	}
}

static void test_bad_ring_indices(void **state)
{
	(void)state;
	struct virtq q;
	struct virtq_chain c = chain(8);

	/* The available index more than a queue ahead. */
	qup(&q, 8, false, false);
	put_desc(DESC, 0, BUF, 16, 0, 0);
	wr16(AVAIL + 2, 9);
	expect_broken(&q, 8, "available index 9 is 9 entries past 0 (queue size 8)");
	qup(&q, 8, false, false);
	wr16(AVAIL + 2, 0xffff); /* "behind" is ahead by 65535 */
	expect_broken(&q, 8, "available index 65535");
	/* Exactly a queue ahead is fine. */
	qup(&q, 8, false, false);
	put_desc(DESC, 0, BUF, 16, 0, 0);
	wr16(AVAIL + 2, 8);
	for (int i = 0; i < 8; i++)
		assert_int_equal(virtq_pop(&q, &c), 1);
	assert_int_equal(virtq_pop(&q, &c), 0);

	/* Head out of range. */
	qup(&q, 8, false, false);
	avail_add(&q, 8);
	expect_broken(&q, 8, "available ring entry 0: head 8 beyond queue size 8");
	qup(&q, 8, false, false);
	avail_add(&q, 0xffff);
	expect_broken(&q, 8, "head 65535");

	/* More in flight than the queue holds: the driver reused descriptors still in use. */
	qup(&q, 4, false, false);
	put_desc(DESC, 0, BUF, 16, 0, 0);
	for (int i = 0; i < 4; i++) {
		avail_add(&q, 0);
		assert_int_equal(virtq_pop(&q, &c), 1);
	}
	assert_int_equal(q.inflight, 4);
	assert_int_equal(virtq_pop(&q, &c), 0); /* nothing new: not an error */
	assert_true(q.ready);
	avail_add(&q, 0);
	expect_broken(&q, 8, "more than 4 chains in flight");
	/* One returned, one more may be taken. */
	qup(&q, 4, false, false);
	put_desc(DESC, 0, BUF, 16, 0, 0);
	for (int i = 0; i < 4; i++) {
		avail_add(&q, 0);
		assert_int_equal(virtq_pop(&q, &c), 1);
	}
	virtq_push(&q, 0, 0);
	avail_add(&q, 0);
	assert_int_equal(virtq_pop(&q, &c), 1);
	assert_int_equal(q.inflight, 4);
}

static void test_push_misuse(void **state)
{
	(void)state;
	struct virtq q;
	qup(&q, 8, false, false);
	virtq_push(&q, 0, 10); /* nothing in flight */
	assert_non_null(strstr(q.err, "device bug"));
	assert_int_equal(rd16(USED + 2), 0);
	assert_int_equal(q.used_idx, 0);
	assert_int_equal(q.inflight, 0);
	assert_true(q.ready);

	put_desc(DESC, 0, BUF, 16, 0, 0);
	avail_add(&q, 0);
	struct virtq_chain c = chain(8);
	assert_int_equal(virtq_pop(&q, &c), 1);
	q.err[0] = 0;
	virtq_push(&q, 8, 10); /* head beyond the queue */
	assert_non_null(strstr(q.err, "push of head 8"));
	assert_int_equal(rd16(USED + 2), 0);
	assert_int_equal(q.inflight, 1);
	virtq_push(&q, 0, 10);
	assert_int_equal(rd16(USED + 2), 1);
	assert_int_equal(q.inflight, 0);
}

/* The used ring wraps around its slots while the index runs on. */
static void test_used_ring_wrap(void **state)
{
	(void)state;
	struct virtq q;
	qup(&q, 4, false, false);
	for (unsigned i = 0; i < 4; i++)
		put_desc(DESC, i, BUF + 0x100ull * i, 0x10, WRITE, 0);
	struct virtq_chain c = chain(4);
	for (unsigned n = 0; n < 10; n++) {
		/* Two at a time, returned in reverse order. */
		uint16_t a = (uint16_t)(n % 4), b = (uint16_t)((n + 1) % 4);
		avail_add(&q, a);
		avail_add(&q, b);
		assert_int_equal(virtq_pop(&q, &c), 1);
		assert_int_equal(c.head, a);
		assert_int_equal(virtq_pop(&q, &c), 1);
		assert_int_equal(c.head, b);
		virtq_push(&q, b, 100 + n);
		virtq_push(&q, a, 200 + n);
		uint16_t u = (uint16_t)(2 * n);
		assert_int_equal(rd16(USED + 2), u + 2);
		assert_int_equal(rd32(USED + 4 + 8ull * (u % 4)), b);
		assert_int_equal(rd32(USED + 8 + 8ull * (u % 4)), 100 + n);
		assert_int_equal(rd32(USED + 4 + 8ull * ((u + 1) % 4)), a);
		assert_int_equal(rd32(USED + 8 + 8ull * ((u + 1) % 4)), 200 + n);
	}
	assert_int_equal(q.inflight, 0);
	assert_int_equal(q.used_idx, 20);
	assert_int_equal(q.last_avail, 20);
}

/* Moves a fresh queue's indices to n, as if n chains had been taken and returned. */
static void jump_indices(struct virtq *q, uint16_t n)
{
	q->last_avail = q->used_idx = q->signalled_used = n;
	wr16(q->avail_gpa + 2, n);
	wr16(q->used_gpa + 2, n);
}

/* Makes one chain available, takes it and returns it. */
static void round_trip(struct virtq *q)
{
	struct virtq_chain c = chain(4);
	avail_add(q, 0);
	assert_int_equal(virtq_pop(q, &c), 1);
	virtq_push(q, 0, 0);
}

static void test_interrupt_suppression(void **state)
{
	(void)state;
	struct virtq q;
	/* Without the event index: only the driver's NO_INTERRUPT flag counts. */
	qup(&q, 8, false, false);
	put_desc(DESC, 0, BUF, 16, 0, 0);
	round_trip(&q);
	assert_true(virtq_should_interrupt(&q));
	wr16(AVAIL, VRING_AVAIL_F_NO_INTERRUPT);
	round_trip(&q);
	assert_false(virtq_should_interrupt(&q));
	wr16(AVAIL, 0);
	assert_true(virtq_should_interrupt(&q));

	/* With it: used_event = e asks for an interrupt once the used index passes e. */
	qup(&q, 8, true, false);
	put_desc(DESC, 0, BUF, 16, 0, 0);
	wr16(AVAIL, VRING_AVAIL_F_NO_INTERRUPT); /* ignored with the event index */
	set_used_event(&q, 5);
	round_trip(&q);
	assert_true(virtq_should_interrupt(&q)); /* the first decision always interrupts */
	assert_true(q.signalled_valid);
	assert_int_equal(q.signalled_used, 1);
	set_used_event(&q, 2);
	round_trip(&q); /* used 2: entry 2 not yet used */
	assert_false(virtq_should_interrupt(&q));
	round_trip(&q); /* used 3: entry 2 used */
	assert_true(virtq_should_interrupt(&q));
	assert_false(virtq_should_interrupt(&q)); /* nothing new */
	set_used_event(&q, 4);
	round_trip(&q);
	round_trip(&q);
	round_trip(&q); /* 3 -> 6 passes 4 */
	assert_true(virtq_should_interrupt(&q));
	set_used_event(&q, 5); /* already passed: no interrupt until the index wraps to it */
	round_trip(&q);
	assert_false(virtq_should_interrupt(&q));

	/* Across the 16-bit wrap. */
	qup(&q, 8, true, false);
	put_desc(DESC, 0, BUF, 16, 0, 0);
	jump_indices(&q, 65534);
	q.signalled_valid = true;
	set_used_event(&q, 65535);
	round_trip(&q); /* 65535 */
	assert_false(virtq_should_interrupt(&q));
	round_trip(&q); /* 0: entry 65535 used */
	assert_int_equal(q.used_idx, 0);
	assert_int_equal(rd16(USED + 2), 0);
	assert_true(virtq_should_interrupt(&q));
	set_used_event(&q, 1);
	round_trip(&q); /* 1 */
	assert_false(virtq_should_interrupt(&q));
	round_trip(&q); /* 2 */
	assert_true(virtq_should_interrupt(&q));
	jump_indices(&q, 65533);
	set_used_event(&q, 65535);
	for (int i = 0; i < 5; i++) /* 65533 -> 2 in one batch */
		round_trip(&q);
	assert_true(virtq_should_interrupt(&q));
	jump_indices(&q, 65533);
	set_used_event(&q, 2);
	for (int i = 0; i < 5; i++) /* entry 2 is not yet used */
		round_trip(&q);
	assert_false(virtq_should_interrupt(&q));

	/* 65536 pushes without a decision: the window is ambiguous, so interrupt. */
	qup(&q, 8, true, false);
	put_desc(DESC, 0, BUF, 16, 0, 0);
	round_trip(&q);
	assert_true(virtq_should_interrupt(&q));
	set_used_event(&q, 0);
	for (int i = 0; i < 65536; i++)
		round_trip(&q);
	assert_false(q.signalled_valid);
	assert_true(virtq_should_interrupt(&q));
}

/* need_event against a model with unbounded counters: interrupt exactly when an entry whose
 * 16-bit index equals used_event was used since the last decision. */
static void test_event_idx_model(void **state)
{
	(void)state;
	struct virtq q;
	qup(&q, 8, true, false);
	put_desc(DESC, 0, BUF, 16, 0, 0);
	round_trip(&q);
	assert_true(virtq_should_interrupt(&q));
	uint64_t total = 1, signalled = 1, rng = 0x9e3779b97f4a7c15ull;
	unsigned yes = 0, no = 0;
	while (total < 140000) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		unsigned batch = (unsigned)(rng % 6);
		/* Usually an event near the window, sometimes anywhere. */
		uint16_t ev = (rng >> 8) % 4 ? (uint16_t)(signalled + (rng >> 16) % 9 - 2)
					     : (uint16_t)(rng >> 24);
		set_used_event(&q, ev);
		for (unsigned i = 0; i < batch; i++)
			round_trip(&q);
		total += batch;
		bool want = false;
		for (uint64_t k = signalled; k < total; k++)
			want |= (uint16_t)k == ev;
		bool got = virtq_should_interrupt(&q);
		if (got != want)
			fail_msg("used %llu, last interrupt %llu, used_event %u: got %d",
				 (unsigned long long)total, (unsigned long long)signalled, ev, got);
		signalled = total;
		if (got)
			yes++;
		else
			no++;
	}
	assert_true(yes > 1000 && no > 1000);
}

static void test_notify_enable(void **state)
{
	(void)state;
	struct virtq q;
	struct virtq_chain c = chain(4);
	qup(&q, 8, false, false);
	put_desc(DESC, 0, BUF, 16, 0, 0);
	wr16(USED, 0x8000); /* other bits are left alone */
	assert_false(virtq_notify_enable(&q, false));
	assert_int_equal(rd16(USED), 0x8000 | VRING_USED_F_NO_NOTIFY);
	avail_add(&q, 0);
	assert_true(virtq_notify_enable(&q, true)); /* a chain arrived meanwhile */
	assert_int_equal(rd16(USED), 0x8000);
	assert_int_equal(virtq_pop(&q, &c), 1);
	assert_false(virtq_notify_enable(&q, true));
	assert_int_equal(rd16(USED + 4 + 8ull * 8), 0); /* no avail_event without the feature */

	qup(&q, 8, true, false);
	put_desc(DESC, 0, BUF, 16, 0, 0);
	for (int i = 0; i < 3; i++) {
		avail_add(&q, 0);
		assert_int_equal(virtq_pop(&q, &c), 1);
	}
	wr16(USED + 4 + 8ull * 8, 0x1234);
	assert_false(virtq_notify_enable(&q, false));
	assert_int_equal(rd16(USED + 4 + 8ull * 8), 0x1234); /* left as it was */
	assert_false(virtq_notify_enable(&q, true));
	assert_int_equal(rd16(USED + 4 + 8ull * 8), 3);
	assert_int_equal(rd16(USED), 0); /* flags untouched with the event index */
	avail_add(&q, 0);
	assert_true(virtq_notify_enable(&q, true));
	assert_int_equal(rd16(USED + 4 + 8ull * 8), 3);
	jump_indices(&q, 65535);
	assert_false(virtq_notify_enable(&q, true));
	assert_int_equal(rd16(USED + 4 + 8ull * 8), 65535);
}

static void save(const struct virtq *q, struct state_writer *w)
{
	sw_init(w);
	virtq_save(q, w);
	assert_false(w->err);
}

static void test_save_load(void **state)
{
	(void)state;
	struct virtq q, q2;
	struct virtq_chain c = chain(4);
	qup(&q, 8, true, true);
	for (unsigned i = 0; i < 8; i++)
		put_desc(DESC, i, BUF + 0x100ull * i, 0x10, WRITE, 0);
	for (uint16_t h = 0; h < 3; h++) {
		avail_add(&q, h);
		assert_int_equal(virtq_pop(&q, &c), 1);
	}
	virtq_push(&q, 1, 5);
	assert_true(virtq_should_interrupt(&q));
	struct state_writer w;
	save(&q, &w);

	memset(&q2, 0x5a, sizeof(q2));
	struct state_reader r;
	sr_init(&r, w.buf, w.len);
	assert_int_equal(virtq_load(&q2, &r, &mem), 0);
	assert_false(r.err);
	assert_int_equal(r.off, w.len);
	assert_int_equal(q2.size, 8);
	assert_int_equal(q2.desc_gpa, DESC);
	assert_int_equal(q2.avail_gpa, AVAIL);
	assert_int_equal(q2.used_gpa, USED);
	assert_true(q2.event_idx);
	assert_true(q2.indirect);
	assert_true(q2.ready);
	assert_ptr_equal(q2.mem, &mem);
	assert_ptr_equal(q2.desc, q.desc);
	assert_ptr_equal(q2.avail, q.avail);
	assert_ptr_equal(q2.used, q.used);
	assert_int_equal(q2.last_avail, 3);
	assert_int_equal(q2.used_idx, 1);
	assert_int_equal(q2.signalled_used, 1);
	assert_true(q2.signalled_valid);
	assert_int_equal(q2.inflight, 2);
	assert_string_equal(q2.err, "");
	/* It carries on where the saved one stopped. */
	avail_add(&q2, 6);
	assert_int_equal(virtq_pop(&q2, &c), 1);
	assert_int_equal(c.head, 6);
	virtq_push(&q2, 6, 9);
	assert_int_equal(rd16(USED + 2), 2);
	assert_int_equal(rd32(USED + 12), 6);
	assert_int_equal(rd32(USED + 16), 9);

	/* Every truncation fails and leaves the queue as it was. */
	struct virtq before;
	memcpy(&before, &q2, sizeof(before));
	for (size_t len = 0; len < w.len; len++) {
		sr_init(&r, w.buf, len);
		assert_int_equal(virtq_load(&q2, &r, &mem), -1);
		assert_true(r.err);
		assert_memory_equal(&q2, &before, sizeof(before));
	}

	/* The same rings in a RAM too small for them: enable fails at load. */
	struct guest_mem small;
	char err[128];
	assert_int_equal(gmem_init(&small, 1u << 20, err, sizeof(err)), 0);
	q.used_gpa = (1u << 20) - 8;
	sw_free(&w);
	save(&q, &w);
	sr_init(&r, w.buf, w.len);
	assert_int_equal(virtq_load(&q2, &r, &small), -1);
	assert_true(r.err);
	assert_memory_equal(&q2, &before, sizeof(before));
	gmem_destroy(&small);

	/* A stopped queue loads stopped, whatever its size register holds. */
	q.ready = false;
	q.size = 100;
	q.inflight = 7;
	sw_free(&w);
	save(&q, &w);
	sr_init(&r, w.buf, w.len);
	assert_int_equal(virtq_load(&q2, &r, &mem), 0);
	assert_false(q2.ready);
	assert_int_equal(q2.size, 100);
	assert_null(q2.used);
	assert_int_equal(virtq_pop(&q2, &c), -1);
	virtq_push(&q2, 0, 0);
	sw_free(&w);
}

/* A hand-made record with the given fields. */
static void record(struct state_writer *w, const char *tag, uint32_t version, uint16_t size,
		   uint64_t used, uint8_t flags, uint8_t ready, uint8_t sv, uint32_t inflight)
{
	sw_init(w);
	sw_begin(w, tag, version);
	sw_u16(w, size);
	sw_u64(w, DESC);
	sw_u64(w, AVAIL);
	sw_u64(w, used);
	sw_u8(w, flags);
	sw_u8(w, ready);
	sw_u16(w, 1);
	sw_u16(w, 1);
	sw_u16(w, 1);
	sw_u8(w, sv);
	sw_u32(w, inflight);
}

static void test_load_garbage(void **state)
{
	(void)state;
	const struct {
		const char *tag;
		uint32_t version;
		uint16_t size;
		uint64_t used;
		uint8_t flags, ready, sv;
		uint32_t inflight;
		int rc;
	} cases[] = {
	    {"virtq", 1, 8, USED, 3, 1, 1, 8, 0},           /* valid */
	    {"virtq", 1, 8, USED, 3, 0, 0, 0, 0},           /* valid, not ready */
	    {"virtqx", 1, 8, USED, 3, 1, 1, 0, -1},         /* tag */
	    {"uart", 1, 8, USED, 3, 1, 1, 0, -1},           /* tag */
	    {"virtq", 0, 8, USED, 3, 1, 1, 0, -1},          /* version */
	    {"virtq", 2, 8, USED, 3, 1, 1, 0, -1},          /* version */
	    {"virtq", 1, 8, USED, 4, 1, 1, 0, -1},          /* unknown flag */
	    {"virtq", 1, 8, USED, 0, 2, 1, 0, -1},          /* ready not a bool */
	    {"virtq", 1, 8, USED, 0, 1, 2, 0, -1},          /* signalled_valid not a bool */
	    {"virtq", 1, 8, USED, 0, 1, 1, 9, -1},          /* more in flight than the queue */
	    {"virtq", 1, 8, USED, 0, 0, 1, 0xffffffff, -1}, /* likewise, not ready */
	    {"virtq", 1, 3, USED, 0, 1, 1, 0, -1},          /* size not a power of 2 */
	    {"virtq", 1, 0, USED, 0, 1, 1, 0, -1},          /* size 0 */
	    {"virtq", 1, 8, USED + 1, 0, 1, 1, 0, -1},      /* misaligned ring */
	    {"virtq", 1, 8, RAM_SIZE, 0, 1, 1, 0, -1},      /* ring outside RAM */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct state_writer w;
		struct state_reader r;
		struct virtq q;
		memset(&q, 0, sizeof(q));
		record(&w, cases[i].tag, cases[i].version, cases[i].size, cases[i].used,
		       cases[i].flags, cases[i].ready, cases[i].sv, cases[i].inflight);
		sr_init(&r, w.buf, w.len);
		int rc = virtq_load(&q, &r, &mem);
		if (rc != cases[i].rc)
			fail_msg("case %zu: load gave %d", i, rc);
		assert_int_equal(r.err, rc < 0);
		if (rc == 0)
			assert_int_equal(q.ready, cases[i].ready);
		else
			assert_false(q.ready);
		sw_free(&w);
	}

	/* Random bytes, and random corruptions of a good record: never a crash, and a record that
	 * loads describes a usable queue. */
	struct state_writer good;
	record(&good, "virtq", 1, 16, USED, 3, 1, 1, 4);
	uint64_t rng = 12345;
	uint8_t buf[64];
	unsigned loaded = 0;
	for (int n = 0; n < 20000; n++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		size_t len;
		if (n % 2) {
			len = rng % sizeof(buf);
			for (size_t i = 0; i < len; i++)
				buf[i] = (uint8_t)(rng >> (i % 56));
		} else {
			len = good.len;
			memcpy(buf, good.buf, len);
			buf[(rng >> 8) % len] ^= (uint8_t)(1u << ((rng >> 20) % 8));
		}
		struct state_reader r;
		struct virtq q;
		memset(&q, 0, sizeof(q));
		sr_init(&r, buf, len);
		if (virtq_load(&q, &r, &mem) == 0) {
			loaded++;
			assert_true(q.inflight <= q.size);
			if (q.ready) {
				assert_non_null(q.used);
				struct virtq_chain c = chain(4);
				(void)virtq_pop(&q, &c);
			}
		}
	}
	assert_true(loaded > 0);
	sw_free(&good);
}

/* A random but plausible descriptor: mostly small buffers in or near RAM, random flags, next
 * mostly within a small table. */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void random_desc(uint64_t *s, uint64_t gpa)
{
	uint64_t r = rnd(s);
	uint64_t addr;
	switch (r % 16) {
	case 0:
		addr = rnd(s);
		break;
	case 1:
		addr = RAM_SIZE - rnd(s) % 0x2000;
		break;
	case 2:
	case 3: /* an indirect table among the random descriptors */
		addr = DESC + (rnd(s) % 0x4000) * 2;
		break;
	default:
		addr = BUF + rnd(s) % 0x100000;
		break;
	}
	uint32_t len = (r >> 8) % 16 ? (uint32_t)((r >> 16) % 0x3000) : (uint32_t)rnd(s);
	if ((r >> 40) % 4 == 0)
		len &= ~15u;
	uint16_t flags = (uint16_t)((r >> 32) % 2 ? NEXT : 0);
	if ((r >> 33) % 3 == 0)
		flags |= WRITE;
	if ((r >> 35) % 10 == 0)
		flags |= INDIR;
	uint16_t next = (r >> 44) % 16 ? (uint16_t)((r >> 48) % 40) : (uint16_t)(r >> 48);
	put_desc(gpa, 0, addr, len, flags, next);
}

static void check_chain(const struct virtq *q, const struct virtq_chain *c)
{
	const uint8_t *lo = mem.host, *hi = mem.host + mem.size;
	assert_true(c->nseg >= 1 && c->nseg <= c->cap && c->nseg <= q->size);
	assert_true(c->head < q->size);
	assert_true(c->n_out <= c->nseg);
	uint64_t out = 0, in = 0;
	for (unsigned i = 0; i < c->nseg; i++) {
		const struct virtq_seg *s = &c->seg[i];
		assert_int_equal(s->write, i >= c->n_out);
		if (s->write)
			in += s->len;
		else
			out += s->len;
		if (s->len) {
			const uint8_t *p = s->host;
			assert_true(p >= lo && p <= hi && (uint64_t)(hi - p) >= s->len);
		}
	}
	assert_int_equal(out, c->out_len);
	assert_int_equal(in, c->in_len);
}

static void test_random_rings(void **state)
{
	(void)state;
	uint64_t s = 0x0123456789abcdefull;
	static uint8_t scratch[0x4000];
	unsigned popped = 0, broken = 0;
	for (int iter = 0; iter < 4000; iter++) {
		/* A soup of random descriptors holds the table and any indirect tables. */
		for (uint64_t g = DESC; g < DESC + 0x10000; g += 16)
			random_desc(&s, g);
		struct virtq q;
		memset(&q, 0, sizeof(q));
		uint64_t r = rnd(&s);
		q.size = r % 16 ? (uint16_t)(1u << (r >> 8) % 7) : (uint16_t)(r >> 16);
		q.desc_gpa = r % 32 ? DESC + ((r >> 32) % 0x100) * 16 : rnd(&s);
		q.avail_gpa = AVAIL;
		q.used_gpa = USED;
		q.event_idx = (r >> 40) & 1;
		q.indirect = (r >> 41) & 1;
		if (virtq_enable(&q, &mem) < 0) {
			assert_false(q.ready);
			assert_true(q.err[0] != 0);
			continue;
		}
		/* The driver's side: a random number of random heads. */
		uint16_t start = (uint16_t)rnd(&s);
		jump_indices(&q, start);
		unsigned n = (unsigned)(rnd(&s) % (q.size + 3u));
		for (unsigned i = 0; i < q.size; i++)
			wr16(AVAIL + 4 + 2ull * i,
			     (uint16_t)(rnd(&s) % 8 ? rnd(&s) % q.size : rnd(&s) % 70000));
		wr16(AVAIL + 2, (uint16_t)(start + n));
		set_used_event(&q, (uint16_t)rnd(&s));
		uint16_t heads[64];
		unsigned nheads = 0;
		for (unsigned step = 0; step < 2u * q.size + 4; step++) {
			struct virtq_chain c = chain(1 + (unsigned)(rnd(&s) % 64));
			int rc = virtq_pop(&q, &c);
			if (rc < 0) {
				assert_false(q.ready);
				assert_true(q.err[0] != 0 && strlen(q.err) < sizeof(q.err));
				broken++;
				break;
			}
			assert_true(q.inflight <= q.size);
			if (rc == 0)
				break;
			popped++;
			check_chain(&q, &c);
			uint64_t off = rnd(&s) % 0x2000;
			size_t got = virtq_read(&c, off, scratch, sizeof(scratch));
			assert_true(got <= sizeof(scratch));
			assert_true(got == 0 || off + got <= c.out_len);
			size_t put = virtq_write(&c, off, scratch, sizeof(scratch));
			assert_true(put == 0 || off + put <= c.in_len);
			if (nheads < 64)
				heads[nheads++] = c.head;
			if (rnd(&s) % 2 && nheads) {
				virtq_push(&q, heads[--nheads], (uint32_t)rnd(&s));
				(void)virtq_should_interrupt(&q);
			}
			if (rnd(&s) % 4 == 0)
				(void)virtq_notify_enable(&q, rnd(&s) % 2);
		}
		if (rnd(&s) % 4 == 0) {
			struct state_writer w;
			struct state_reader rd;
			struct virtq q2;
			save(&q, &w);
			sr_init(&rd, w.buf, w.len);
			assert_int_equal(virtq_load(&q2, &rd, &mem), 0);
			assert_int_equal(q2.ready, q.ready);
			assert_int_equal(q2.last_avail, q.last_avail);
			assert_int_equal(q2.inflight, q.inflight);
			sw_free(&w);
		}
	}
	/* The mix reaches both outcomes often. */
	assert_true(popped > 1000);
	assert_true(broken > 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_enable_checks),         cmocka_unit_test(test_simple_chain),
	    cmocka_unit_test(test_read_write_split),      cmocka_unit_test(test_indirect),
	    cmocka_unit_test(test_bad_descriptors),       cmocka_unit_test(test_bad_ring_indices),
	    cmocka_unit_test(test_push_misuse),           cmocka_unit_test(test_used_ring_wrap),
	    cmocka_unit_test(test_interrupt_suppression), cmocka_unit_test(test_event_idx_model),
	    cmocka_unit_test(test_notify_enable),         cmocka_unit_test(test_save_load),
	    cmocka_unit_test(test_load_garbage),          cmocka_unit_test(test_random_rings),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
