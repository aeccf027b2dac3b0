/* Split virtqueues, the device side (virtio 1.x, section 2.7); see virtqueue.h.
 *
 * Guest RAM is shared with vCPUs that may rewrite a ring or a descriptor while it is being read
 * here. So every guest field is loaded exactly once, atomically, into a local, and every check
 * and every use is made on that local: the guest cannot pass a check with one value and have
 * another one used. Ring fields are naturally aligned (enable checks the ring alignment), so
 * the __atomic builtins apply to them directly. */
#include "virtio/virtqueue.h"

#include <linux/virtio_ring.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* virtio 1.x rings are little-endian; ferry runs on x86-64 and reads them natively. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "rings are read in host byte order");
_Static_assert(sizeof(struct vring_desc) == 16, "a descriptor is 16 bytes");
_Static_assert(sizeof(struct vring_used_elem) == 8, "a used element is 8 bytes");

#define VIRTQ_STATE_VERSION 1

static int broken(struct virtq *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int broken(struct virtq *q, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(q->err, sizeof(q->err), fmt, ap);
	va_end(ap);
	q->ready = false;
	return -1;
}

/* Ring sizes in bytes; the event fields exist only with VIRTIO_F_EVENT_IDX. */
static uint64_t avail_bytes(const struct virtq *q)
{
	return 4 + 2ull * q->size + (q->event_idx ? 2 : 0);
}

static uint64_t used_bytes(const struct virtq *q)
{
	return 4 + 8ull * q->size + (q->event_idx ? 2 : 0);
}

/* The available ring as u16 slots: 0 flags, 1 idx, 2.. ring[], 2 + size used_event. */
static uint16_t *avail_slot(const struct virtq *q, uint32_t i)
{
	return (uint16_t *)q->avail + i;
}

static uint16_t *used_flags(const struct virtq *q)
{
	return (uint16_t *)q->used;
}

static uint16_t *used_idx_field(const struct virtq *q)
{
	return (uint16_t *)q->used + 1;
}

static struct vring_used_elem *used_elem(const struct virtq *q, uint32_t i)
{
	return (struct vring_used_elem *)((uint8_t *)q->used + 4) + i;
}

static uint16_t *avail_event(const struct virtq *q)
{
	return (uint16_t *)((uint8_t *)q->used + 4 + 8ull * q->size);
}

/* One descriptor, read once. The queue's table is 16-byte aligned; an indirect table need not
 * be aligned at all, and there it is copied byte by byte through volatile loads, which the
 * compiler may not repeat either. */
static struct vring_desc load_desc(const uint8_t *p)
{
	struct vring_desc d;
	if (((uintptr_t)p & 7) == 0) {
		const struct vring_desc *s = (const struct vring_desc *)p;
		d.addr = __atomic_load_n(&s->addr, __ATOMIC_RELAXED);
		d.len = __atomic_load_n(&s->len, __ATOMIC_RELAXED);
		d.flags = __atomic_load_n(&s->flags, __ATOMIC_RELAXED);
		d.next = __atomic_load_n(&s->next, __ATOMIC_RELAXED);
	} else {
		const volatile uint8_t *v = p;
		uint8_t *o = (uint8_t *)&d;
		for (size_t i = 0; i < sizeof(d); i++)
			o[i] = v[i];
	}
	return d;
}

int virtq_enable(struct virtq *q, const struct guest_mem *mem)
{
	q->mem = mem;
	q->ready = false;
	q->desc = q->avail = q->used = NULL;
	q->last_avail = q->used_idx = q->signalled_used = 0;
	q->signalled_valid = false;
	q->inflight = 0;
	q->err[0] = 0;
	if (q->size == 0 || q->size > VIRTQ_MAX_SIZE || (q->size & (q->size - 1)))
		return broken(q, "queue size %u is not a power of 2 up to %u", q->size,
			      VIRTQ_MAX_SIZE);
	if (q->desc_gpa % VRING_DESC_ALIGN_SIZE || q->avail_gpa % VRING_AVAIL_ALIGN_SIZE ||
	    q->used_gpa % VRING_USED_ALIGN_SIZE)
		return broken(q, "rings 0x%llx/0x%llx/0x%llx not aligned to 16/2/4",
			      (unsigned long long)q->desc_gpa, (unsigned long long)q->avail_gpa,
			      (unsigned long long)q->used_gpa);
	void *desc = gmem_ptr(mem, q->desc_gpa, 16ull * q->size);
	void *avail = gmem_ptr(mem, q->avail_gpa, avail_bytes(q));
	void *used = gmem_ptr(mem, q->used_gpa, used_bytes(q));
	if (!desc)
		return broken(q, "descriptor table at 0x%llx (0x%llx bytes) is not in RAM",
			      (unsigned long long)q->desc_gpa, 16ull * q->size);
	if (!avail)
		return broken(q, "available ring at 0x%llx (0x%llx bytes) is not in RAM",
			      (unsigned long long)q->avail_gpa, (unsigned long long)avail_bytes(q));
	if (!used)
		return broken(q, "used ring at 0x%llx (0x%llx bytes) is not in RAM",
			      (unsigned long long)q->used_gpa, (unsigned long long)used_bytes(q));
	q->desc = desc;
	q->avail = avail;
	q->used = used;
	q->ready = true;
	return 0;
}

void virtq_reset(struct virtq *q)
{
	memset(q, 0, sizeof(*q));
}

/* Names a descriptor in messages: indices inside an indirect table are the table's own. */
static const char *desc_kind(bool indirect)
{
	return indirect ? "indirect descriptor" : "descriptor";
}

int virtq_pop(struct virtq *q, struct virtq_chain *c)
{
	c->nseg = 0;
	c->n_out = 0;
	c->out_len = 0;
	c->in_len = 0;
	if (!q->ready) {
		if (!q->err[0])
			snprintf(q->err, sizeof(q->err), "queue is not enabled");
		return -1;
	}
	/* Acquire: the ring entry and descriptors the driver wrote before idx are visible. */
	uint16_t avail_idx = __atomic_load_n(avail_slot(q, 1), __ATOMIC_ACQUIRE);
	uint16_t pending = (uint16_t)(avail_idx - q->last_avail);
	if (pending == 0)
		return 0;
	if (pending > q->size)
		return broken(q, "available index %u is %u entries past %u (queue size %u)",
			      avail_idx, pending, q->last_avail, q->size);
	/* Every chain takes at least one descriptor of the table: more than size in flight means
	 * the driver reused a descriptor the device still owns. */
	if (q->inflight >= q->size)
		return broken(q, "more than %u chains in flight", q->size);
	uint16_t slot = q->last_avail & (q->size - 1);
	uint16_t head = __atomic_load_n(avail_slot(q, 2u + slot), __ATOMIC_RELAXED);
	if (head >= q->size)
		return broken(q, "available ring entry %u: head %u beyond queue size %u", slot,
			      head, q->size);
	c->head = head;

	const uint8_t *table = q->desc;
	uint32_t count = q->size; /* entries in the table being walked */
	bool in_indirect = false, seen_write = false;
	uint32_t i = head;
	for (;;) {
		struct vring_desc d = load_desc(table + 16ull * i);
		const char *kind = desc_kind(in_indirect);
		if (d.flags & VRING_DESC_F_INDIRECT) {
			if (!q->indirect)
				return broken(
				    q, "descriptor %u: indirect without VIRTIO_F_INDIRECT_DESC", i);
			if (in_indirect)
				return broken(q, "head %u: indirect descriptor %u is nested", head,
					      i);
			if (d.flags & VRING_DESC_F_NEXT)
				return broken(q, "descriptor %u: both INDIRECT and NEXT", i);
			if (c->nseg)
				return broken(
				    q, "descriptor %u: indirect but not alone in its chain", i);
			if (d.len == 0 || d.len % sizeof(struct vring_desc))
				return broken(q, "descriptor %u: indirect table length 0x%x", i,
					      d.len);
			table = gmem_ptr(q->mem, d.addr, d.len);
			if (!table)
				return broken(q,
					      "descriptor %u: indirect table 0x%llx length 0x%x "
					      "outside RAM",
					      i, (unsigned long long)d.addr, d.len);
			/* The WRITE flag of the indirect descriptor itself means nothing (spec). */
			count = d.len / sizeof(struct vring_desc);
			in_indirect = true;
			i = 0;
			continue;
		}
		/* No chain may be longer than the queue, which also ends any loop. */
		if (c->nseg >= q->size)
			return broken(q, "head %u: chain longer than queue size %u (a loop?)", head,
				      q->size);
		if (c->nseg >= c->cap)
			return broken(q, "head %u: chain longer than %u segments", head, c->cap);
		void *host = gmem_ptr(q->mem, d.addr, d.len);
		/* A zero-length buffer is harmless wherever it points; it is never accessed. */
		if (!host && d.len)
			return broken(q, "%s %u: address 0x%llx length 0x%x outside RAM", kind, i,
				      (unsigned long long)d.addr, d.len);
		bool write = d.flags & VRING_DESC_F_WRITE;
		if (seen_write && !write)
			return broken(q, "%s %u: readable after a writable one (head %u)", kind, i,
				      head);
		c->seg[c->nseg++] = (struct virtq_seg){.host = host, .len = d.len, .write = write};
		if (write) {
			seen_write = true;
			c->in_len += d.len;
		} else {
			c->n_out++;
			c->out_len += d.len;
		}
		if (!(d.flags & VRING_DESC_F_NEXT))
			break;
		if (d.next >= count)
			return broken(q, "%s %u: next %u beyond table of %u", kind, i, d.next,
				      count);
		i = d.next;
	}
	q->last_avail++;
	q->inflight++;
	return 1;
}

void virtq_push(struct virtq *q, uint16_t head, uint32_t len)
{
	/* A stopped or reset queue: the driver no longer reads it, and nothing is owed. */
	if (!q->ready)
		return;
	if (head >= q->size || q->inflight == 0) {
		snprintf(q->err, sizeof(q->err), "device bug: push of head %u with %u in flight",
			 head, q->inflight);
		return;
	}
	struct vring_used_elem *e = used_elem(q, q->used_idx & (q->size - 1u));
	__atomic_store_n(&e->id, head, __ATOMIC_RELAXED);
	__atomic_store_n(&e->len, len, __ATOMIC_RELAXED);
	q->used_idx++;
	/* Release: the element is visible before the index that hands it over. */
	__atomic_store_n(used_idx_field(q), q->used_idx, __ATOMIC_RELEASE);
	q->inflight--;
	/* 65536 pushes without an interrupt decision: the 16-bit window since the last interrupt
	 * is ambiguous, so the next decision interrupts unconditionally. */
	if (q->used_idx == q->signalled_used)
		q->signalled_valid = false;
}

bool virtq_should_interrupt(struct virtq *q)
{
	if (!q->ready)
		return false;
	/* The used index must be visible before the driver's suppression fields are read: the
	 * driver does the mirror image, so one of the two sides sees the other's update. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!q->event_idx)
		return !(__atomic_load_n(avail_slot(q, 0), __ATOMIC_RELAXED) &
			 VRING_AVAIL_F_NO_INTERRUPT);
	uint16_t old = q->signalled_used;
	bool valid = q->signalled_valid;
	q->signalled_used = q->used_idx;
	q->signalled_valid = true;
	if (!valid)
		return true;
	uint16_t event = __atomic_load_n(avail_slot(q, 2u + q->size), __ATOMIC_RELAXED);
	return vring_need_event(event, q->used_idx, old);
}

bool virtq_notify_enable(struct virtq *q, bool on)
{
	if (!q->ready)
		return false;
	if (!q->event_idx) {
		/* used->flags is the device's own field; the driver only reads it. */
		uint16_t f = __atomic_load_n(used_flags(q), __ATOMIC_RELAXED);
		f = on ? (uint16_t)(f & ~VRING_USED_F_NO_NOTIFY)
		       : (uint16_t)(f | VRING_USED_F_NO_NOTIFY);
		__atomic_store_n(used_flags(q), f, __ATOMIC_RELAXED);
	} else if (on) {
		__atomic_store_n(avail_event(q), q->last_avail, __ATOMIC_RELAXED);
	}
	/* Publish before re-reading avail idx: a driver that added a chain just before it saw
	 * the request would otherwise not notify, and the device would sleep on it. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return __atomic_load_n(avail_slot(q, 1), __ATOMIC_ACQUIRE) != q->last_avail;
}

void virtq_save(const struct virtq *q, struct state_writer *w)
{
	sw_begin(w, "virtq", VIRTQ_STATE_VERSION);
	sw_u16(w, q->size);
	sw_u64(w, q->desc_gpa);
	sw_u64(w, q->avail_gpa);
	sw_u64(w, q->used_gpa);
	sw_u8(w, (uint8_t)((q->event_idx ? 1 : 0) | (q->indirect ? 2 : 0)));
	sw_u8(w, q->ready);
	sw_u16(w, q->last_avail);
	sw_u16(w, q->used_idx);
	sw_u16(w, q->signalled_used);
	sw_u8(w, q->signalled_valid);
	sw_u32(w, q->inflight);
}

int virtq_load(struct virtq *q, struct state_reader *r, const struct guest_mem *mem)
{
	struct virtq t;
	memset(&t, 0, sizeof(t));
	sr_begin(r, "virtq", VIRTQ_STATE_VERSION);
	t.size = sr_u16(r);
	t.desc_gpa = sr_u64(r);
	t.avail_gpa = sr_u64(r);
	t.used_gpa = sr_u64(r);
	uint8_t flags = sr_u8(r);
	uint8_t ready = sr_u8(r);
	uint16_t last_avail = sr_u16(r);
	uint16_t used_idx = sr_u16(r);
	uint16_t signalled_used = sr_u16(r);
	uint8_t signalled_valid = sr_u8(r);
	uint32_t inflight = sr_u32(r);
	/* A queue that is not ready keeps whatever size the driver wrote (it is only a register
	 * until enable); a ready one must pass enable's checks again against this RAM. */
	sr_check(r, flags <= 3 && ready <= 1 && signalled_valid <= 1 && inflight <= t.size);
	if (r->err)
		return -1;
	t.event_idx = flags & 1;
	t.indirect = flags & 2;
	if (ready) {
		if (virtq_enable(&t, mem) < 0) {
			sr_check(r, false);
			return -1;
		}
	} else {
		t.mem = mem;
	}
	t.last_avail = last_avail;
	t.used_idx = used_idx;
	t.signalled_used = signalled_used;
	t.signalled_valid = signalled_valid;
	t.inflight = inflight;
	*q = t;
	return 0;
}

/* A walk over the segments [i, to) of a chain from byte off of them. */
struct seg_cursor {
	const struct virtq_chain *c;
	unsigned i, to;
	uint64_t off;
};

/* The next piece of at most max bytes (max > 0): its host address and length; false at the
 * end of the segments. */
static bool next_piece(struct seg_cursor *k, size_t max, uint8_t **p, size_t *n)
{
	for (; k->i < k->to; k->i++) {
		const struct virtq_seg *s = &k->c->seg[k->i];
		if (k->off >= s->len) {
			k->off -= s->len;
			continue;
		}
		*p = (uint8_t *)s->host + k->off;
		*n = s->len - k->off < max ? (size_t)(s->len - k->off) : max;
		k->off += *n;
		return true;
	}
	return false;
}

/* The segment count, clamped to the caller's array whatever the chain says. */
static unsigned chain_segs(const struct virtq_chain *c)
{
	return c->nseg < c->cap ? c->nseg : c->cap;
}

size_t virtq_read(const struct virtq_chain *c, uint64_t off, void *dst, size_t len)
{
	unsigned nseg = chain_segs(c);
	struct seg_cursor k = {.c = c, .i = 0, .to = c->n_out < nseg ? c->n_out : nseg, .off = off};
	size_t done = 0, n;
	uint8_t *p;
	while (done < len && next_piece(&k, len - done, &p, &n)) {
		memcpy((uint8_t *)dst + done, p, n);
		done += n;
	}
	return done;
}

size_t virtq_write(const struct virtq_chain *c, uint64_t off, const void *src, size_t len)
{
	unsigned nseg = chain_segs(c);
	struct seg_cursor k = {
	    .c = c, .i = c->n_out < nseg ? c->n_out : nseg, .to = nseg, .off = off};
	size_t done = 0, n;
	uint8_t *p;
	while (done < len && next_piece(&k, len - done, &p, &n)) {
		memcpy(p, (const uint8_t *)src + done, n);
		done += n;
	}
	return done;
}
