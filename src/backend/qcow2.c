/* The qcow2 image format (versions 2 and 3, as in QEMU's docs/interop/qcow2.txt).
 *
 * Mapping: the L1 table lives in memory; L2 tables and refcount blocks go through two small
 * LRU caches of whole clusters. Guest data is written to its host cluster at once; metadata is
 * written back on flush, on close, and when a dirty L2 table is evicted.
 *
 * Ordering, so that a crash leaves at worst leaked clusters, never a reference to a cluster
 * with refcount 0 or to unwritten data:
 *   1. data goes to a newly allocated cluster before any table points at it;
 *   2. refcount increments (refcount blocks, then the refcount table, then the header when the
 *      table moved) are written before the L2 tables, and L2 tables before the L1 table, with
 *      fdatasync between the stages so that the order also holds across a power loss;
 *   3. refcount decrements wait until the metadata that stopped referencing the clusters is
 *      durable (they are queued, and applied after the flush's final fdatasync).
 * New clusters come from those freed in this session, else from the end of the file. Freed
 * clusters get their host space punched out.
 *
 * Clusters whose refcount may exceed 1 (internal snapshots, compressed clusters) are never
 * written in place: an L1 or L2 entry without the COPIED flag leads to a copy, as the format
 * requires. Autoclear feature bits (persistent dirty bitmaps) are cleared when an image is opened
 * writable, as the format requires of a program that does not maintain them. Nothing read from
 * the image is trusted: every offset is checked before use, and a bad one fails the request with
 * -EIO (after one message per image). */
#include "backend/qcow2.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "util/log.h"

#define QCOW2_MAGIC      0x514649fbu
#define HDR_V2_LEN       72u
#define HDR_V3_LEN       104u
#define MIN_CLUSTER_BITS 9u
#define MAX_CLUSTER_BITS 21u
#define MAX_L1_BYTES     (32ull << 20) /* as QEMU: larger tables are refused, not allocated */
#define MAX_REFT_BYTES   (8ull << 20)
#define MAX_BACKING_NAME 1023u
#define MAX_VIRTUAL_SIZE (1ull << 61)
#define MAX_HOST_OFFSET  (1ull << 56) /* L1/L2 entries hold host offset bits 9..55 */
#define MAX_SNAPSHOTS    65536u
#define PENDING_MAX      65536u /* queued frees that force an early write-back */

/* Header field offsets. */
#define H_MAGIC              0
#define H_VERSION            4
#define H_BACKING_OFF        8
#define H_BACKING_SIZE       16
#define H_CLUSTER_BITS       20
#define H_SIZE               24
#define H_CRYPT              32
#define H_L1_SIZE            36
#define H_L1_OFF             40
#define H_REFT_OFF           48
#define H_REFT_CLUSTERS      56
#define H_NB_SNAPSHOTS       60
#define H_SNAPSHOTS_OFF      64
#define H_INCOMPAT           72
#define H_COMPAT             80
#define H_AUTOCLEAR          88
#define H_REFCOUNT_ORD       96
#define H_HEADER_LEN         100
#define H_COMPRESS_TYPE      104

#define INCOMPAT_DIRTY       (1ull << 0)
#define INCOMPAT_CORRUPT     (1ull << 1)
#define INCOMPAT_DATA_FILE   (1ull << 2)
#define INCOMPAT_COMPRESSION (1ull << 3)
#define INCOMPAT_EXTL2       (1ull << 4)

#define EXT_END              0x00000000u
#define EXT_BACKING_FMT      0xe2792acau
#define EXT_FEATURES         0x6803f857u

#define OFLAG_COPIED         (1ull << 63)
#define OFLAG_COMPRESSED     (1ull << 62)
#define OFLAG_ZERO           1ull
#define OFFSET_MASK          0x00fffffffffffe00ull /* bits 9..55 */
#define L1E_RESERVED         (~(OFFSET_MASK | OFLAG_COPIED))
#define L2E_RESERVED         (~(OFFSET_MASK | OFLAG_COPIED | OFLAG_COMPRESSED | OFLAG_ZERO))
#define REFT_RESERVED        0x1ffull

enum ctype { C_UNALLOC, C_ZERO, C_NORMAL, C_COMPRESSED };

struct centry {
	uint64_t off;  /* host offset of the cached cluster; 0: the slot is empty */
	uint64_t used; /* LRU stamp */
	bool dirty;
	uint8_t *buf; /* the cluster as on disk (big-endian) */
};

struct tcache {
	struct centry *e;
	unsigned n;
	uint64_t tick;
};

struct qcow2 {
	/* Geometry. */
	char *path;
	uint64_t cs; /* cluster size */
	uint64_t size;
	uint64_t rc_max;

	uint64_t *l1; /* host byte order */
	uint64_t l1_off;

	uint64_t *reft; /* host byte order */
	uint64_t reft_entries;
	uint64_t reft_off;
	uint64_t reft_dlo, reft_dhi; /* dirty entries [lo, hi) */

	struct tcache l2c, rbc;

	uint64_t alloc_end;        /* first cluster index past everything in use or reserved */
	uint64_t free_lo, free_hi; /* clusters freed in this session lie in [free_lo, free_hi) */
	uint64_t *pending;         /* cluster indexes whose refcount drops at the next flush */
	size_t npending, cap_pending;

	struct block *backing;

	uint8_t *tmp;   /* a cluster of scratch */
	uint8_t *wbuf;  /* a cluster for converting tables to disk order */
	uint8_t *zeros; /* a cluster of zeroes */
	uint8_t *dbuf;  /* the last decompressed cluster ... */
	uint64_t dkey;  /* ... and its L2 entry; 0: none */
	uint8_t *cbuf;  /* compressed input */
	z_stream zs;
	struct iovec *iov;

	int fd;
	int iov_cap;
	unsigned version;
	unsigned cb; /* cluster_bits */
	unsigned l2_bits;
	unsigned rc_order;
	unsigned rb_shift; /* log2(refcount entries per block) */
	uint32_t l1_size;
	uint32_t l1_dlo, l1_dhi; /* dirty entries [lo, hi) */
	uint32_t reft_clusters;

	bool ro;
	bool broken;     /* metadata in memory may be inconsistent: no more writes */
	bool warned;     /* one corruption message per image */
	bool growing;    /* inside grow_reftable() */
	bool reft_moved; /* the whole table and the header need writing */
	bool no_punch;
	bool zs_init;
};

/* ---- small helpers ----------------------------------------------------------------------------- */

static uint64_t ld64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return be64toh(v);
}

static uint32_t ld32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return be32toh(v);
}

static void st64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, 8);
}

static void st32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
}

/* Logs the first sign of corruption in this image. */
static void report_corrupt(struct qcow2 *q, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void report_corrupt(struct qcow2 *q, const char *fmt, ...)
{
	if (!q->warned) {
		char msg[256];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		log_error("qcow2 image %s is corrupt: %s (check it with qemu-img check)", q->path,
			  msg);
		q->warned = true;
	}
}

/* Reports corruption and evaluates to -EIO (a macro, so analyzers see the constant). */
#define corrupt(q, ...) (report_corrupt((q), __VA_ARGS__), -EIO)

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/* Whether the cluster at host offset off holds the header, the L1 table or the refcount table
 * (a cluster that must never be used as an L2 table, a refcount block or guest data). */
static bool is_fixed_metadata(const struct qcow2 *q, uint64_t off)
{
	if (off < q->cs)
		return true;
	if (q->l1_size && ranges_overlap(off, q->cs, q->l1_off, (uint64_t)q->l1_size * 8))
		return true;
	return ranges_overlap(off, q->cs, q->reft_off, (uint64_t)q->reft_clusters * q->cs);
}

/* A cluster-aligned host offset inside the image. */
static bool host_ok(const struct qcow2 *q, uint64_t off)
{
	return off && !(off & (q->cs - 1)) && (off >> q->cb) < q->alloc_end;
}

static bool table_ok(const struct qcow2 *q, uint64_t off)
{
	return host_ok(q, off) && !is_fixed_metadata(q, off);
}

/* ---- cluster caches ---------------------------------------------------------------------------- */

static int flush_refcounts(struct qcow2 *q, bool sync);
static int sync_fd(struct qcow2 *q);

static int tcache_init(struct tcache *c, unsigned n)
{
	c->e = calloc(n, sizeof(*c->e));
	c->n = n;
	c->tick = 0;
	return c->e ? 0 : -ENOMEM;
}

static void tcache_free(struct tcache *c)
{
	if (!c->e)
		return;
	for (unsigned i = 0; i < c->n; i++)
		free(c->e[i].buf);
	free(c->e);
	c->e = NULL;
}

static struct centry *tcache_find(struct tcache *c, uint64_t off)
{
	for (unsigned i = 0; i < c->n; i++)
		if (c->e[i].off == off)
			return &c->e[i];
	return NULL;
}

/* Forgets a cached cluster (one that was freed); its content is no longer wanted. */
static void tcache_drop(struct tcache *c, uint64_t off)
{
	struct centry *e = tcache_find(c, off);
	if (e) {
		e->off = 0;
		e->dirty = false;
	}
}

static bool tcache_any_dirty(const struct tcache *c)
{
	for (unsigned i = 0; i < c->n; i++)
		if (c->e[i].off && c->e[i].dirty)
			return true;
	return false;
}

static bool tcache_holds(const struct tcache *c, uint64_t off)
{
	for (unsigned i = 0; i < c->n; i++)
		if (c->e[i].off == off)
			return true;
	return false;
}

static int write_entry(struct qcow2 *q, struct centry *e)
{
	int r = blk_pwrite_full(q->fd, e->buf, q->cs, e->off);
	if (r < 0) {
		q->broken = true;
		return r;
	}
	e->dirty = false;
	return 0;
}

/* The cached cluster at host offset off; fresh: a newly allocated cluster, zeroed and dirty
 * rather than read. Loading may evict the least recently used entry, writing it back first
 * (an L2 table only after the refcounts it depends on). Pointers to other entries of the same
 * cache are invalid afterwards. */
static int cache_get(struct qcow2 *q, struct tcache *c, uint64_t off, bool fresh,
		     struct centry **out)
{
	struct centry *e = tcache_find(c, off);
	if (!e) {
		struct centry *v = NULL;
		for (unsigned i = 0; i < c->n; i++) {
			if (!c->e[i].off) {
				v = &c->e[i];
				break;
			}
			if (!v || c->e[i].used < v->used)
				v = &c->e[i];
		}
		if (!v)
			return -EIO; /* an empty cache; never so after open */
		if (v->off && v->dirty) {
			int r = 0;
			/* Refcounts first, durable before the table that relies on them. */
			if (c == &q->l2c && (r = flush_refcounts(q, true)) > 0)
				r = sync_fd(q);
			if (r >= 0)
				r = write_entry(q, v);
			if (r < 0)
				return r;
		}
		v->off = 0;
		if (!v->buf && !(v->buf = malloc(q->cs)))
			return -ENOMEM;
		if (fresh) {
			memset(v->buf, 0, q->cs);
		} else {
			int r = blk_pread_full(q->fd, v->buf, q->cs, off);
			if (r < 0)
				return r;
		}
		v->dirty = fresh;
		v->off = off;
		e = v;
	} else if (fresh) {
		memset(e->buf, 0, q->cs);
		e->dirty = true;
	}
	e->used = ++c->tick;
	*out = e;
	return 0;
}

/* ---- refcounts --------------------------------------------------------------------------------- */

static uint64_t rc_get(const struct qcow2 *q, const uint8_t *blk, uint64_t i)
{
	if (q->rc_order >= 3) {
		unsigned bytes = 1u << (q->rc_order - 3);
		const uint8_t *p = blk + i * bytes;
		uint64_t v = 0;
		for (unsigned k = 0; k < bytes; k++)
			v = v << 8 | p[k];
		return v;
	}
	/* Sub-byte widths: entry 0 in the least significant bits of byte 0. */
	unsigned bits = 1u << q->rc_order, per = 8 / bits;
	return (blk[i / per] >> ((i % per) * bits)) & ((1u << bits) - 1);
}

static void rc_set(const struct qcow2 *q, uint8_t *blk, uint64_t i, uint64_t v)
{
	if (q->rc_order >= 3) {
		unsigned bytes = 1u << (q->rc_order - 3);
		uint8_t *p = blk + i * bytes;
		for (unsigned k = bytes; k-- > 0; v >>= 8)
			p[k] = (uint8_t)v;
		return;
	}
	unsigned bits = 1u << q->rc_order, per = 8 / bits;
	unsigned shift = (unsigned)(i % per) * bits, mask = ((1u << bits) - 1) << shift;
	blk[i / per] = (uint8_t)((blk[i / per] & ~mask) | ((v << shift) & mask));
}

static void reft_mark(struct qcow2 *q, uint64_t ti)
{
	if (ti < q->reft_dlo)
		q->reft_dlo = ti;
	if (ti + 1 > q->reft_dhi)
		q->reft_dhi = ti + 1;
}

static int rc_add(struct qcow2 *q, uint64_t cidx, int delta, uint64_t *newv);

/* A cluster index for a new cluster, its refcount still 0: freed clusters first, else the end of
 * the file. The index is reserved (never returned again) even before its refcount is set. */
static int alloc_index(struct qcow2 *q, uint64_t *idx);

static int grow_reftable(struct qcow2 *q, uint64_t need_ti)
{
	if (q->growing)
		return corrupt(q, "refcount table growth recursed");
	uint64_t per_cluster = q->cs / 8;
	uint64_t want = need_ti + 1;
	if (want < q->reft_entries * 2)
		want = q->reft_entries * 2;
	uint64_t start = q->alloc_end, k, ents;
	for (;;) {
		k = (want + per_cluster - 1) / per_cluster;
		if (k > MAX_REFT_BYTES / q->cs) {
			static bool told;
			if (!told)
				log_error(
				    "qcow2 image %s: the refcount table would exceed %llu MiB; "
				    "the image cannot grow further",
				    q->path, MAX_REFT_BYTES >> 20);
			told = true;
			return -ENOSPC;
		}
		ents = k * per_cluster;
		/* The table, and the few refcount blocks needed to cover it, must be covered. */
		uint64_t last_ti = (start + 2 * k + 8) >> q->rb_shift;
		if (ents > need_ti && ents > last_ti + 1)
			break;
		want = (need_ti > last_ti ? need_ti : last_ti) + 2;
	}
	uint64_t *nt = calloc(ents, sizeof(*nt));
	if (!nt)
		return -ENOMEM;
	memcpy(nt, q->reft, q->reft_entries * sizeof(*nt));
	uint64_t old = q->reft_off >> q->cb, oldk = q->reft_clusters;

	/* From here on a failure leaves the in-memory refcounts inconsistent. */
	free(q->reft);
	q->reft = nt;
	q->reft_entries = ents;
	q->reft_off = start << q->cb;
	q->reft_clusters = (uint32_t)k;
	q->reft_moved = true;
	q->alloc_end = start + k;
	q->growing = true;
	int r = 0;
	for (uint64_t i = 0; i < k && r >= 0; i++)
		r = rc_add(q, start + i, 1, NULL);
	q->growing = false;
	for (uint64_t i = 0; i < oldk && r >= 0; i++) {
		if (q->npending == q->cap_pending) {
			size_t cap = q->cap_pending ? q->cap_pending * 2 : 64;
			uint64_t *p = realloc(q->pending, cap * sizeof(*p));
			if (!p) {
				r = -ENOMEM;
				break;
			}
			q->pending = p;
			q->cap_pending = cap;
		}
		q->pending[q->npending++] = old + i;
	}
	if (r < 0)
		q->broken = true;
	return r;
}

/* Creates the refcount block for refcount table index ti. */
static int new_refblock(struct qcow2 *q, uint64_t ti)
{
	uint64_t idx;
	int r = alloc_index(q, &idx);
	if (r < 0)
		return r;
	struct centry *b;
	r = cache_get(q, &q->rbc, idx << q->cb, true, &b);
	if (r < 0)
		return r;
	q->reft[ti] = idx << q->cb;
	reft_mark(q, ti);
	if ((idx >> q->rb_shift) == ti) {
		rc_set(q, b->buf, idx & ((1ull << q->rb_shift) - 1), 1);
		return 0;
	}
	r = rc_add(q, idx, 1, NULL);
	if (r < 0)
		q->broken = true;
	return r;
}

/* The refcount block covering cluster cidx, or NULL (all refcounts 0) when it does not exist
 * and create is false. */
static int rc_block(struct qcow2 *q, uint64_t cidx, bool create, struct centry **out)
{
	uint64_t ti = cidx >> q->rb_shift;
	*out = NULL;
	if (ti >= q->reft_entries) {
		if (!create)
			return 0;
		int r = grow_reftable(q, ti);
		if (r < 0)
			return r;
	}
	uint64_t e = q->reft[ti];
	if (e & REFT_RESERVED)
		return corrupt(q, "refcount table entry %llu has reserved bits set",
			       (unsigned long long)ti);
	if (!e) {
		if (!create)
			return 0;
		int r = new_refblock(q, ti);
		if (r < 0)
			return r;
		e = q->reft[ti];
	} else if (!table_ok(q, e)) {
		return corrupt(q, "refcount block offset 0x%llx is invalid", (unsigned long long)e);
	}
	return cache_get(q, &q->rbc, e, false, out);
}

static int rc_read(struct qcow2 *q, uint64_t cidx, uint64_t *v)
{
	struct centry *b;
	int r = rc_block(q, cidx, false, &b);
	if (r < 0)
		return r;
	*v = b ? rc_get(q, b->buf, cidx & ((1ull << q->rb_shift) - 1)) : 0;
	return 0;
}

static int rc_add(struct qcow2 *q, uint64_t cidx, int delta, uint64_t *newv)
{
	struct centry *b;
	int r = rc_block(q, cidx, delta > 0, &b);
	if (r < 0)
		return r;
	if (!b)
		return corrupt(q, "freeing cluster %llu, which has no refcount",
			       (unsigned long long)cidx);
	uint64_t i = cidx & ((1ull << q->rb_shift) - 1);
	uint64_t v = rc_get(q, b->buf, i);
	if (delta > 0 && v >= q->rc_max)
		return corrupt(q, "refcount of cluster %llu overflows", (unsigned long long)cidx);
	if (delta < 0 && v == 0)
		return corrupt(q, "freeing cluster %llu, whose refcount is 0",
			       (unsigned long long)cidx);
	v = delta > 0 ? v + 1 : v - 1;
	rc_set(q, b->buf, i, v);
	b->dirty = true;
	if (newv)
		*newv = v;
	return 0;
}

static int alloc_index(struct qcow2 *q, uint64_t *idx)
{
	uint64_t v;
	while (q->free_lo < q->free_hi) {
		uint64_t c = q->free_lo++;
		int r = rc_read(q, c, &v);
		if (r < 0)
			return r;
		if (v == 0) {
			*idx = c;
			return 0;
		}
	}
	uint64_t c = q->alloc_end;
	if (c >= MAX_HOST_OFFSET >> q->cb)
		return -ENOSPC;
	int r = rc_read(q, c, &v);
	if (r < 0)
		return r;
	if (v != 0)
		return corrupt(q, "cluster %llu past the end of the file is in use",
			       (unsigned long long)c);
	q->alloc_end = c + 1;
	*idx = c;
	return 0;
}

/* A new cluster with refcount 1; its content is undefined until written. */
static int alloc_cluster(struct qcow2 *q, uint64_t *off)
{
	uint64_t idx;
	int r = alloc_index(q, &idx);
	if (r < 0)
		return r;
	r = rc_add(q, idx, 1, NULL);
	if (r < 0)
		return r;
	*off = idx << q->cb;
	return 0;
}

/* Queues a refcount decrement for after the next durable metadata write. */
static int free_later(struct qcow2 *q, uint64_t cidx)
{
	if (q->npending == q->cap_pending) {
		size_t cap = q->cap_pending ? q->cap_pending * 2 : 64;
		uint64_t *p = realloc(q->pending, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		q->pending = p;
		q->cap_pending = cap;
	}
	q->pending[q->npending++] = cidx;
	return 0;
}

/* The host clusters holding a compressed cluster's data: [*first, *last]. */
static void compressed_span(const struct qcow2 *q, uint64_t e, uint64_t *coff, uint64_t *clen,
			    uint64_t *first, uint64_t *last)
{
	unsigned shift = 62 - (q->cb - 8);
	uint64_t off = e & ((1ull << shift) - 1);
	uint64_t nsec = ((e >> shift) & ((1ull << (q->cb - 8)) - 1)) + 1;
	uint64_t start = off & ~511ull, end = start + nsec * 512;
	*coff = off;
	*clen = end - off;
	*first = start >> q->cb;
	*last = (end - 1) >> q->cb;
}

/* Classifies an L2 entry, checking everything in it. host: the (cluster-aligned) host offset
 * of a normal or preallocated-zero cluster, the byte offset of compressed data. */
static int decode(struct qcow2 *q, uint64_t e, enum ctype *t, uint64_t *host)
{
	*host = 0;
	if (e & OFLAG_COMPRESSED) {
		uint64_t coff, clen, first, last;
		compressed_span(q, e, &coff, &clen, &first, &last);
		if (e & OFLAG_COPIED || first == 0 || last >= q->alloc_end)
			return corrupt(q, "bad compressed cluster descriptor 0x%llx",
				       (unsigned long long)e);
		*host = coff;
		*t = C_COMPRESSED;
		return 0;
	}
	if (e & L2E_RESERVED || (q->version < 3 && (e & OFLAG_ZERO)))
		return corrupt(q, "L2 entry 0x%llx has reserved bits set", (unsigned long long)e);
	uint64_t off = e & OFFSET_MASK;
	if (off && !host_ok(q, off))
		return corrupt(q, "L2 entry 0x%llx points outside the image",
			       (unsigned long long)e);
	if (off && is_fixed_metadata(q, off)) /* freeing or writing it would wreck the image */
		return corrupt(q, "L2 entry 0x%llx points at the image's own tables",
			       (unsigned long long)e);
	*host = off;
	*t = (e & OFLAG_ZERO) ? C_ZERO : off ? C_NORMAL : C_UNALLOC;
	return 0;
}

/* ---- write-back ------------------------------------------------------------------------------ */

/* Writes n host-order 64-bit entries big-endian at off, through q->tmp. */
static int write_table(struct qcow2 *q, const uint64_t *t, uint64_t n, uint64_t off)
{
	uint64_t per = q->cs / 8;
	for (uint64_t i = 0; i < n; i += per) {
		uint64_t k = n - i < per ? n - i : per;
		for (uint64_t j = 0; j < k; j++)
			st64(q->wbuf + 8 * j, t[i + j]);
		int r = blk_pwrite_full(q->fd, q->wbuf, k * 8, off + i * 8);
		if (r < 0) {
			q->broken = true;
			return r;
		}
	}
	return 0;
}

static int sync_fd(struct qcow2 *q)
{
	if (fdatasync(q->fd) < 0) {
		q->broken = true;
		return -errno;
	}
	return 0;
}

/* Stage 1: refcount blocks, the refcount table, and the header if the table moved. Returns
 * 1 if anything was written. */
static int flush_refcounts(struct qcow2 *q, bool sync)
{
	int wrote = 0, r;
	for (unsigned i = 0; i < q->rbc.n; i++) {
		struct centry *e = &q->rbc.e[i];
		if (e->off && e->dirty) {
			if ((r = write_entry(q, e)) < 0)
				return r;
			wrote = 1;
		}
	}
	if (q->reft_moved) {
		if ((r = write_table(q, q->reft, q->reft_entries, q->reft_off)) < 0)
			return r;
		if (sync && (r = sync_fd(q)) < 0)
			return r;
		uint8_t h[12];
		st64(h, q->reft_off);
		st32(h + 8, q->reft_clusters);
		if ((r = blk_pwrite_full(q->fd, h, sizeof(h), H_REFT_OFF)) < 0) {
			q->broken = true;
			return r;
		}
		q->reft_moved = false;
		q->reft_dlo = UINT64_MAX;
		q->reft_dhi = 0;
		wrote = 1;
	} else if (q->reft_dlo < q->reft_dhi) {
		r = write_table(q, q->reft + q->reft_dlo, q->reft_dhi - q->reft_dlo,
				q->reft_off + q->reft_dlo * 8);
		if (r < 0)
			return r;
		q->reft_dlo = UINT64_MAX;
		q->reft_dhi = 0;
		wrote = 1;
	}
	return wrote;
}

static void punch(struct qcow2 *q, uint64_t cidx, uint64_t n)
{
	if (q->no_punch || !n)
		return;
	if (fallocate(q->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(cidx << q->cb),
		      (off_t)(n << q->cb)) < 0)
		q->no_punch = true; /* unsupported here; the space stays allocated */
}

/* Applies the queued refcount decrements; clusters reaching 0 become free for reuse. */
static int apply_frees(struct qcow2 *q)
{
	uint64_t run = 0, runlen = 0;
	int r = 0;
	for (size_t i = 0; i < q->npending; i++) {
		uint64_t c = q->pending[i], v;
		r = rc_add(q, c, -1, &v);
		if (r < 0) {
			q->broken = true;
			break;
		}
		if (v)
			continue;
		tcache_drop(&q->l2c, c << q->cb);
		tcache_drop(&q->rbc, c << q->cb);
		if (c < q->free_lo || q->free_lo >= q->free_hi)
			q->free_lo = c;
		if (c + 1 > q->free_hi)
			q->free_hi = c + 1;
		if (runlen && c == run + runlen) {
			runlen++;
		} else {
			punch(q, run, runlen);
			run = c;
			runlen = 1;
		}
	}
	punch(q, run, runlen);
	q->npending = 0;
	q->dkey = 0; /* freed clusters may be reused for other data */
	return r;
}

/* Writes all dirty metadata in the safe order and makes it durable. */
static int writeback(struct qcow2 *q)
{
	if (q->ro)
		return 0;
	if (q->broken)
		return -EIO;
	int r = flush_refcounts(q, true);
	if (r < 0)
		return r;
	bool l2dirty = tcache_any_dirty(&q->l2c), l1dirty = q->l1_dlo < q->l1_dhi;
	if (r > 0 && (l2dirty || l1dirty) && (r = sync_fd(q)) < 0)
		return r;
	for (unsigned i = 0; i < q->l2c.n; i++) {
		struct centry *e = &q->l2c.e[i];
		if (e->off && e->dirty && (r = write_entry(q, e)) < 0)
			return r;
	}
	if (l1dirty) {
		if (l2dirty && (r = sync_fd(q)) < 0)
			return r;
		r = write_table(q, q->l1 + q->l1_dlo, q->l1_dhi - q->l1_dlo,
				q->l1_off + (uint64_t)q->l1_dlo * 8);
		if (r < 0)
			return r;
		q->l1_dlo = UINT32_MAX;
		q->l1_dhi = 0;
	}
	if ((r = sync_fd(q)) < 0)
		return r;
	if (q->npending) {
		/* The decrements need not be durable now: losing them only leaks clusters. */
		if ((r = apply_frees(q)) < 0)
			return r;
		if ((r = flush_refcounts(q, false)) < 0)
			return r;
	}
	return 0;
}

/* Keeps the queue of decrements bounded between guest flushes. */
static int maybe_writeback(struct qcow2 *q)
{
	return q->npending >= PENDING_MAX ? writeback(q) : 0;
}

/* ---- mapping ----------------------------------------------------------------------------------- */

static void l1_mark(struct qcow2 *q, uint32_t i)
{
	if (i < q->l1_dlo)
		q->l1_dlo = i;
	if (i + 1 > q->l1_dhi)
		q->l1_dhi = i + 1;
}

/* The L2 entry for guest cluster cidx (0 when there is no L2 table). */
static int l2_lookup(struct qcow2 *q, uint64_t cidx, uint64_t *e)
{
	uint64_t l1e = q->l1[cidx >> q->l2_bits];
	*e = 0;
	if (l1e & L1E_RESERVED)
		return corrupt(q, "L1 entry 0x%llx has reserved bits set", (unsigned long long)l1e);
	uint64_t off = l1e & OFFSET_MASK;
	if (!off)
		return 0;
	if (!table_ok(q, off))
		return corrupt(q, "L2 table offset 0x%llx is invalid", (unsigned long long)off);
	struct centry *t;
	int r = cache_get(q, &q->l2c, off, false, &t);
	if (r < 0)
		return r;
	*e = ld64(t->buf + 8 * (cidx & ((1ull << q->l2_bits) - 1)));
	return 0;
}

/* The L2 table for guest cluster cidx, ready to be modified: allocated if missing, copied if
 * shared (no COPIED flag). */
static int l2_for_write(struct qcow2 *q, uint64_t cidx, struct centry **out)
{
	uint32_t l1i = (uint32_t)(cidx >> q->l2_bits);
	uint64_t l1e = q->l1[l1i];
	if (l1e & L1E_RESERVED)
		return corrupt(q, "L1 entry 0x%llx has reserved bits set", (unsigned long long)l1e);
	uint64_t off = l1e & OFFSET_MASK, noff;
	int r;
	if (off && !table_ok(q, off))
		return corrupt(q, "L2 table offset 0x%llx is invalid", (unsigned long long)off);
	if (off && (l1e & OFLAG_COPIED))
		return cache_get(q, &q->l2c, off, false, out);
	if (off) {
		struct centry *old;
		if ((r = cache_get(q, &q->l2c, off, false, &old)) < 0)
			return r;
		memcpy(q->tmp, old->buf, q->cs);
	}
	if ((r = alloc_cluster(q, &noff)) < 0)
		return r;
	if ((r = cache_get(q, &q->l2c, noff, true, out)) < 0)
		return r;
	if (off) {
		memcpy((*out)->buf, q->tmp, q->cs);
		tcache_drop(&q->l2c, off);
		if ((r = free_later(q, off >> q->cb)) < 0)
			return r;
	}
	q->l1[l1i] = noff | OFLAG_COPIED;
	l1_mark(q, l1i);
	return 0;
}

/* Queues the decrements for the clusters an L2 entry being replaced referenced. */
static int release_entry(struct qcow2 *q, uint64_t e)
{
	enum ctype t;
	uint64_t host;
	int r = decode(q, e, &t, &host);
	if (r < 0)
		return r;
	if (t == C_COMPRESSED) {
		uint64_t coff, clen, first, last;
		compressed_span(q, e, &coff, &clen, &first, &last);
		for (uint64_t c = first; c <= last && r >= 0; c++)
			r = free_later(q, c);
		return r;
	}
	return host ? free_later(q, host >> q->cb) : 0;
}

/* The decompressed content of a compressed cluster. */
static int read_compressed(struct qcow2 *q, uint64_t e, const uint8_t **out)
{
	if (q->dkey == e) {
		*out = q->dbuf;
		return 0;
	}
	uint64_t coff, clen, first, last;
	compressed_span(q, e, &coff, &clen, &first, &last);
	if (!q->dbuf && !(q->dbuf = malloc(q->cs)))
		return -ENOMEM;
	if (!q->cbuf && !(q->cbuf = malloc(2 * q->cs + 512)))
		return -ENOMEM;
	if (!q->zs_init) {
		if (inflateInit2(&q->zs, -15) != Z_OK)
			return -ENOMEM;
		q->zs_init = true;
	}
	int r = blk_pread_full(q->fd, q->cbuf, clen, coff);
	if (r < 0)
		return r;
	if (inflateReset(&q->zs) != Z_OK)
		return -EIO;
	q->zs.next_in = q->cbuf;
	q->zs.avail_in = (uInt)clen;
	q->zs.next_out = q->dbuf;
	q->zs.avail_out = (uInt)q->cs;
	int zr = inflate(&q->zs, Z_FINISH);
	if (!((zr == Z_STREAM_END || zr == Z_BUF_ERROR || zr == Z_OK) && q->zs.avail_out == 0))
		return corrupt(q, "compressed cluster at 0x%llx does not decompress",
			       (unsigned long long)coff);
	q->dkey = e;
	*out = q->dbuf;
	return 0;
}

static int iov_reserve(struct qcow2 *q, int n)
{
	if (n <= q->iov_cap)
		return 0;
	struct iovec *v = realloc(q->iov, (size_t)n * sizeof(*v));
	if (!v)
		return -ENOMEM;
	q->iov = v;
	q->iov_cap = n;
	return 0;
}

/* Guest bytes [off, off+n) of the backing file (zeroes without one) into buf. */
static int read_backing(struct qcow2 *q, uint64_t off, void *buf, size_t n)
{
	if (!q->backing) {
		memset(buf, 0, n);
		return 0;
	}
	struct iovec v = {buf, n};
	return block_read_any(q->backing, off, &v, 1);
}

/* ---- requests ---------------------------------------------------------------------------------- */

int qcow2_read(struct qcow2 *q, uint64_t off, const struct iovec *iov, int cnt)
{
	struct iov_cursor c;
	uint64_t len = 0;
	for (int i = 0; i < cnt; i++)
		len += iov[i].iov_len;
	int r = iov_reserve(q, cnt);
	if (r < 0)
		return r;
	iovc_init(&c, iov, cnt);
	while (len) {
		uint64_t cidx = off >> q->cb, in = off & (q->cs - 1);
		uint64_t n = q->cs - in < len ? q->cs - in : len, e, host;
		enum ctype t;
		if ((r = l2_lookup(q, cidx, &e)) < 0 || (r = decode(q, e, &t, &host)) < 0)
			return r;
		if (t == C_UNALLOC && q->backing) {
			int k = iovc_take(&c, n, q->iov, q->iov_cap);
			if (k < 0)
				return -EINVAL;
			r = block_read_any(q->backing, off, q->iov, k);
		} else if (t == C_UNALLOC || t == C_ZERO) {
			iovc_zero(&c, n);
		} else if (t == C_COMPRESSED) {
			const uint8_t *d;
			if ((r = read_compressed(q, e, &d)) == 0)
				iovc_copy_from(&c, d + in, n);
		} else {
			/* Following clusters that are contiguous on the host join this read. */
			while (n < len) {
				uint64_t e2, h2, k2 = q->cs < len - n ? q->cs : len - n;
				enum ctype t2;
				if (l2_lookup(q, (off + n) >> q->cb, &e2) < 0 ||
				    decode(q, e2, &t2, &h2) < 0 || t2 != C_NORMAL ||
				    h2 != host + in + n)
					break;
				n += k2;
			}
			int k = iovc_take(&c, n, q->iov, q->iov_cap);
			if (k < 0)
				return -EINVAL;
			r = blk_preadv_full(q->fd, q->iov, k, host + in);
		}
		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

/* Writes n bytes (inside one cluster) from src at guest offset off. */
static int write_chunk(struct qcow2 *q, uint64_t off, uint64_t n, struct iov_cursor *src)
{
	uint64_t cidx = off >> q->cb, in = off & (q->cs - 1), e, host, nh;
	uint64_t l2i = cidx & ((1ull << q->l2_bits) - 1);
	const uint8_t *fill = q->zeros;
	struct centry *t;
	enum ctype ty;
	int r, k;
	if ((r = l2_for_write(q, cidx, &t)) < 0)
		return r;
	e = ld64(t->buf + 8 * l2i);
	if ((r = decode(q, e, &ty, &host)) < 0)
		return r;
	bool in_place = (ty == C_NORMAL || (ty == C_ZERO && host)) && (e & OFLAG_COPIED);
	if (in_place && (is_fixed_metadata(q, host) || tcache_holds(&q->l2c, host) ||
			 tcache_holds(&q->rbc, host)))
		return corrupt(q, "data cluster 0x%llx overlaps metadata",
			       (unsigned long long)host);
	if (in_place && ty == C_NORMAL) {
		if ((k = iovc_take(src, n, q->iov, q->iov_cap)) < 0)
			return -EINVAL;
		return blk_pwritev_full(q->fd, q->iov, k, host + in);
	}
	if (n < q->cs && !in_place) {
		if (ty == C_UNALLOC) {
			if (q->backing && (r = read_backing(q, cidx << q->cb, q->tmp, q->cs)) < 0)
				return r;
			if (q->backing)
				fill = q->tmp;
		} else if (ty == C_COMPRESSED) {
			if ((r = read_compressed(q, e, &fill)) < 0)
				return r;
		} else if (ty == C_NORMAL) {
			if ((r = blk_pread_full(q->fd, q->tmp, q->cs, host)) < 0)
				return r;
			fill = q->tmp;
		}
	}
	if (in_place) {
		nh = host; /* a preallocated zero cluster: fill around the data with zeroes */
	} else if ((r = alloc_cluster(q, &nh)) < 0) {
		return r;
	}
	/* Head fill, data, tail fill; q->iov[0] is kept for the head. */
	if ((k = iovc_take(src, n, q->iov + 1, q->iov_cap - 2)) < 0)
		return -EINVAL;
	int first = 1, last = k + 1;
	if (n < q->cs) {
		if (in) {
			q->iov[0] = (struct iovec){(void *)fill, in};
			first = 0;
		}
		if (in + n < q->cs)
			q->iov[last++] = (struct iovec){(void *)(fill + in + n), q->cs - in - n};
	}
	if ((r = blk_pwritev_full(q->fd, q->iov + first, last - first, nh)) < 0)
		return r;
	/* Allocation touched only the refcount cache, so t is still this L2 table. */
	st64(t->buf + 8 * l2i, nh | OFLAG_COPIED);
	t->dirty = true;
	return in_place ? 0 : release_entry(q, e);
}

int qcow2_write(struct qcow2 *q, uint64_t off, const struct iovec *iov, int cnt)
{
	if (q->broken)
		return -EIO;
	struct iov_cursor c;
	uint64_t len = 0;
	for (int i = 0; i < cnt; i++)
		len += iov[i].iov_len;
	int r = iov_reserve(q, cnt + 2);
	if (r < 0)
		return r;
	iovc_init(&c, iov, cnt);
	while (len) {
		uint64_t in = off & (q->cs - 1);
		uint64_t n = q->cs - in < len ? q->cs - in : len;
		if ((r = write_chunk(q, off, n, &c)) < 0)
			return r;
		off += n;
		len -= n;
	}
	return maybe_writeback(q);
}

/* Makes one whole guest cluster read as zeroes. */
static int zero_cluster(struct qcow2 *q, uint64_t cidx, bool may_unmap)
{
	uint64_t e, host, ne;
	enum ctype t;
	int r;
	if ((r = l2_lookup(q, cidx, &e)) < 0 || (r = decode(q, e, &t, &host)) < 0)
		return r;
	if ((t == C_UNALLOC && !q->backing) || (t == C_ZERO && (!host || !may_unmap)))
		return 0;
	bool keep = !may_unmap && t == C_NORMAL && (e & OFLAG_COPIED);
	if (q->version < 3 && (q->backing || keep)) {
		/* No zero flag: write the zeroes (in place when the cluster is kept). */
		struct iovec z = {q->zeros, q->cs};
		struct iov_cursor c;
		iovc_init(&c, &z, 1);
		return write_chunk(q, cidx << q->cb, q->cs, &c);
	}
	/* Without a backing file an unallocated cluster reads as zeroes; with one (version 3
	 * here) the zero flag hides the backing file's data. */
	if (keep)
		ne = host | OFLAG_COPIED | OFLAG_ZERO;
	else
		ne = q->backing ? OFLAG_ZERO : 0;
	struct centry *tb;
	if ((r = l2_for_write(q, cidx, &tb)) < 0)
		return r;
	st64(tb->buf + 8 * (cidx & ((1ull << q->l2_bits) - 1)), ne);
	tb->dirty = true;
	return keep ? 0 : release_entry(q, e);
}

int qcow2_zero(struct qcow2 *q, uint64_t off, uint64_t len, bool may_unmap)
{
	if (q->broken)
		return -EIO;
	int r = iov_reserve(q, 3);
	if (r < 0)
		return r;
	while (len) {
		uint64_t cidx = off >> q->cb, in = off & (q->cs - 1);
		uint64_t n = q->cs - in < len ? q->cs - in : len;
		uint64_t l1e = q->l1[cidx >> q->l2_bits];
		if (!(l1e & OFFSET_MASK) && !(l1e & L1E_RESERVED) && !q->backing) {
			/* No L2 table and no backing file: all of it reads as zeroes already. */
			uint64_t span = q->cs << q->l2_bits;
			uint64_t rest = span - (off & (span - 1));
			n = rest < len ? rest : len;
		} else if (n < q->cs) {
			uint64_t e, host;
			enum ctype t;
			if ((r = l2_lookup(q, cidx, &e)) < 0 || (r = decode(q, e, &t, &host)) < 0)
				return r;
			if (t != C_ZERO && !(t == C_UNALLOC && !q->backing)) {
				struct iovec z = {q->zeros, n};
				struct iov_cursor c;
				iovc_init(&c, &z, 1);
				if ((r = write_chunk(q, off, n, &c)) < 0)
					return r;
			}
		} else if ((r = zero_cluster(q, cidx, may_unmap)) < 0) {
			return r;
		}
		off += n;
		len -= n;
	}
	return maybe_writeback(q);
}

int qcow2_flush(struct qcow2 *q)
{
	return writeback(q);
}

uint64_t qcow2_size(const struct qcow2 *q)
{
	return q->size;
}

/* ---- open / close ----------------------------------------------------------------------------- */

static void qcow2_free(struct qcow2 *q)
{
	if (q->backing)
		block_close(q->backing);
	tcache_free(&q->l2c);
	tcache_free(&q->rbc);
	if (q->zs_init)
		inflateEnd(&q->zs);
	free(q->l1);
	free(q->reft);
	free(q->pending);
	free(q->tmp);
	free(q->wbuf);
	free(q->zeros);
	free(q->dbuf);
	free(q->cbuf);
	free(q->iov);
	free(q->path);
	free(q);
}

void qcow2_close(struct qcow2 *q)
{
	if (!q)
		return;
	if (!q->ro) {
		int r = writeback(q);
		if (r < 0)
			log_error("qcow2 image %s: metadata not written back: %s", q->path,
				  strerror(-r));
	}
	qcow2_free(q);
}

/* The name of incompatible feature bit `bit` from the feature name table, if it has one. */
static void feature_name(const uint8_t *tab, uint32_t len, unsigned bit, char *out, size_t outlen)
{
	snprintf(out, outlen, "bit %u", bit);
	for (uint32_t i = 0; tab && i + 48 <= len; i += 48) {
		if (tab[i] == 0 && tab[i + 1] == bit) {
			char name[47];
			memcpy(name, tab + i + 2, 46);
			name[46] = 0;
			snprintf(out, outlen, "'%s' (bit %u)", name, bit);
			return;
		}
	}
}

static unsigned clamp_u(uint64_t v, unsigned lo, unsigned hi)
{
	return v < lo ? lo : v > hi ? hi : (unsigned)v;
}

/* Parses and checks the header cluster h; fills q's geometry. On failure returns -1 with the
 * reason in err. bname/bfmt receive the backing file name and format ("" if none). */
/* Sets err and evaluates to -1 (a macro, so analyzers see the constant). */
#define refuse(...) (set_err(err, err_len, __VA_ARGS__), -1)

static int parse_header(struct qcow2 *q, const uint8_t *h, uint64_t file_size, char *bname,
			char *bfmt, size_t bfmt_len, char *err, size_t err_len)
{
	const char *p = q->path;
	unsigned hlen = q->version >= 3 ? ld32(h + H_HEADER_LEN) : HDR_V2_LEN;
	if (q->version >= 3 && (hlen < HDR_V3_LEN || hlen % 8 || hlen > q->cs))
		return refuse("%s: bad qcow2 header length %u", p, hlen);
	if (ld32(h + H_CRYPT))
		return refuse("%s: encrypted qcow2 images are not supported (decrypt it with "
			      "qemu-img convert)",
			      p);
	uint64_t boff = ld64(h + H_BACKING_OFF);
	uint32_t blen = ld32(h + H_BACKING_SIZE);
	if (boff && (blen == 0 || blen > MAX_BACKING_NAME || boff < hlen || boff > q->cs ||
		     blen > q->cs - boff || boff + blen > file_size))
		return refuse("%s: bad backing file name location", p);

	/* Header extensions: up to the backing file name, else to the end of the cluster. */
	const uint8_t *ftab = NULL;
	uint32_t ftab_len = 0;
	uint64_t pos = hlen, end = boff ? boff : q->cs;
	while (pos + 8 <= end) {
		uint32_t type = ld32(h + pos), len = ld32(h + pos + 4);
		pos += 8;
		if (type == EXT_END)
			break;
		if (len > end - pos)
			return refuse("%s: header extension 0x%x is truncated", p, type);
		if (type == EXT_BACKING_FMT) {
			if (len == 0 || len >= bfmt_len)
				return refuse("%s: bad backing format extension", p);
			memcpy(bfmt, h + pos, len);
			bfmt[len] = 0;
		} else if (type == EXT_FEATURES) {
			ftab = h + pos;
			ftab_len = len;
		}
		pos += (len + 7ull) & ~7ull;
	}

	if (q->version >= 3) {
		uint64_t inc = ld64(h + H_INCOMPAT);
		if (inc & INCOMPAT_DIRTY)
			return refuse("%s: the image was not closed cleanly (dirty bit set) and "
				      "its refcounts need repair: run qemu-img check -r all %s",
				      p, p);
		if (inc & INCOMPAT_CORRUPT)
			return refuse("%s: the image is marked corrupt; run qemu-img check -r all "
				      "%s",
				      p, p);
		if (inc & INCOMPAT_DATA_FILE)
			return refuse("%s: qcow2 images with an external data file are not "
				      "supported",
				      p);
		if (inc & INCOMPAT_EXTL2)
			return refuse("%s: qcow2 images with extended L2 entries (subclusters) "
				      "are not supported",
				      p);
		uint8_t ctype = hlen > H_COMPRESS_TYPE ? h[H_COMPRESS_TYPE] : 0;
		if ((inc & INCOMPAT_COMPRESSION) || ctype)
			return refuse("%s: compression type %u is not supported (only zlib)", p,
				      ctype);
		inc &= ~(INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_EXTL2 |
			 INCOMPAT_COMPRESSION);
		if (inc) {
			char name[80];
			feature_name(ftab, ftab_len, (unsigned)__builtin_ctzll(inc), name,
				     sizeof(name));
			return refuse("%s: unsupported incompatible qcow2 feature %s (0x%llx)", p,
				      name, (unsigned long long)inc);
		}
		q->rc_order = ld32(h + H_REFCOUNT_ORD);
		if (q->rc_order > 6)
			return refuse("%s: bad refcount order %u", p, q->rc_order);
	} else {
		q->rc_order = 4;
	}
	q->rb_shift = q->cb + 3 - q->rc_order;
	q->rc_max = q->rc_order == 6 ? UINT64_MAX : (1ull << (1u << q->rc_order)) - 1;

	if (boff) {
		memcpy(bname, h + boff, blen);
		bname[blen] = 0;
		if (strlen(bname) != blen)
			return refuse("%s: the backing file name contains a NUL", p);
	}

	q->size = ld64(h + H_SIZE);
	if (q->size > MAX_VIRTUAL_SIZE || q->size % 512)
		return refuse("%s: virtual size %llu is not supported (too large, or not a "
			      "multiple of 512)",
			      p, (unsigned long long)q->size);
	uint64_t alloc_end = (file_size + q->cs - 1) >> q->cb;
	uint64_t file_end = alloc_end << q->cb;

	q->l1_size = ld32(h + H_L1_SIZE);
	q->l1_off = ld64(h + H_L1_OFF);
	unsigned span_bits = q->cb + q->l2_bits;
	uint64_t need = (q->size + (1ull << span_bits) - 1) >> span_bits;
	if ((uint64_t)q->l1_size * 8 > MAX_L1_BYTES)
		return refuse("%s: L1 table too large (%u entries)", p, q->l1_size);
	if (q->l1_size < need)
		return refuse("%s: L1 table too small for the virtual size (%u entries, %llu "
			      "needed)",
			      p, q->l1_size, (unsigned long long)need);
	if (q->l1_size && (!q->l1_off || q->l1_off & (q->cs - 1) || q->l1_off > file_end ||
			   (uint64_t)q->l1_size * 8 > file_end - q->l1_off))
		return refuse("%s: L1 table offset 0x%llx is invalid or past the end "
			      "of the file",
			      p, (unsigned long long)q->l1_off);

	q->reft_off = ld64(h + H_REFT_OFF);
	q->reft_clusters = ld32(h + H_REFT_CLUSTERS);
	if (!q->reft_clusters || q->reft_clusters > MAX_REFT_BYTES / q->cs)
		return refuse("%s: bad refcount table size (%u clusters)", p, q->reft_clusters);
	if (!q->reft_off || q->reft_off & (q->cs - 1) || q->reft_off > file_end ||
	    (uint64_t)q->reft_clusters << q->cb > file_end - q->reft_off)
		return refuse("%s: refcount table offset 0x%llx is invalid or past the end of "
			      "the file",
			      p, (unsigned long long)q->reft_off);
	q->reft_entries = ((uint64_t)q->reft_clusters << q->cb) / 8;

	uint32_t nsnap = ld32(h + H_NB_SNAPSHOTS);
	uint64_t snoff = ld64(h + H_SNAPSHOTS_OFF);
	if (nsnap > MAX_SNAPSHOTS ||
	    (nsnap && (!snoff || snoff & (q->cs - 1) || snoff >= file_end)))
		return refuse("%s: bad snapshot table (%u snapshots at 0x%llx)", p, nsnap,
			      (unsigned long long)snoff);
	q->alloc_end = alloc_end;
	return 0;
}

#undef refuse

struct qcow2 *qcow2_open(int fd, const char *path, uint64_t file_size, bool readonly, int depth,
			 char *err, size_t err_len)
{
	uint8_t h0[HDR_V3_LEN];
	char bname[MAX_BACKING_NAME + 1] = "", bfmt[32] = "";
	if (file_size < HDR_V2_LEN) {
		set_err(err, err_len, "%s: too small to be a qcow2 image", path);
		return NULL;
	}
	int r = blk_pread_full(fd, h0, sizeof(h0), 0);
	if (r < 0) {
		set_err(err, err_len, "%s: cannot read the header: %s", path, strerror(-r));
		return NULL;
	}
	if (ld32(h0 + H_MAGIC) != QCOW2_MAGIC) {
		set_err(err, err_len, "%s: not a qcow2 image (bad magic)", path);
		return NULL;
	}
	uint32_t version = ld32(h0 + H_VERSION), cb = ld32(h0 + H_CLUSTER_BITS);
	if (version != 2 && version != 3) {
		set_err(err, err_len, "%s: qcow2 version %u is not supported (only 2 and 3)", path,
			version);
		return NULL;
	}
	if (cb < MIN_CLUSTER_BITS || cb > MAX_CLUSTER_BITS) {
		set_err(err, err_len, "%s: cluster_bits %u is out of range (%u-%u)", path, cb,
			MIN_CLUSTER_BITS, MAX_CLUSTER_BITS);
		return NULL;
	}

	struct qcow2 *q = calloc(1, sizeof(*q));
	if (!q || !(q->path = strdup(path))) {
		free(q);
		set_err(err, err_len, "%s: out of memory", path);
		return NULL;
	}
	q->fd = fd;
	q->ro = readonly;
	q->version = version;
	q->cb = cb;
	q->cs = 1ull << cb;
	q->l2_bits = cb - 3;
	q->l1_dlo = UINT32_MAX;
	q->reft_dlo = UINT64_MAX;
	q->tmp = malloc(q->cs);
	q->wbuf = malloc(q->cs);
	q->zeros = calloc(1, q->cs);
	if (!q->tmp || !q->wbuf || !q->zeros) {
		set_err(err, err_len, "%s: out of memory", path);
		goto fail;
	}
	/* The whole first cluster: header, extensions, backing file name. */
	if ((r = blk_pread_full(fd, q->tmp, q->cs, 0)) < 0) {
		set_err(err, err_len, "%s: cannot read the header: %s", path, strerror(-r));
		goto fail;
	}
	if (parse_header(q, q->tmp, file_size, bname, bfmt, sizeof(bfmt), err, err_len) < 0)
		goto fail;
	uint64_t autoclear = version >= 3 ? ld64(q->tmp + H_AUTOCLEAR) : 0;

	/* Caches sized by bytes: a few MiB of L2 tables, a MiB of refcount blocks. */
	if (tcache_init(&q->l2c, clamp_u((4ull << 20) >> cb, 2, 128)) < 0 ||
	    tcache_init(&q->rbc, clamp_u((1ull << 20) >> cb, 2, 32)) < 0) {
		set_err(err, err_len, "%s: out of memory", path);
		goto fail;
	}
	q->l1 = calloc(q->l1_size ? q->l1_size : 1, sizeof(*q->l1));
	q->reft = calloc(q->reft_entries ? q->reft_entries : 1, sizeof(*q->reft));
	if (!q->l1 || !q->reft) {
		set_err(err, err_len, "%s: out of memory", path);
		goto fail;
	}
	if ((r = blk_pread_full(fd, q->l1, (size_t)q->l1_size * 8, q->l1_off)) < 0 ||
	    (r = blk_pread_full(fd, q->reft, q->reft_entries * 8, q->reft_off)) < 0) {
		set_err(err, err_len, "%s: cannot read the image's tables: %s", path, strerror(-r));
		goto fail;
	}
	for (uint32_t i = 0; i < q->l1_size; i++)
		q->l1[i] = be64toh(q->l1[i]);
	for (uint64_t i = 0; i < q->reft_entries; i++)
		q->reft[i] = be64toh(q->reft[i]);
	/* Every table pointer must lie inside the file as it is now: one past its end would come
	 * to alias whatever ferry allocates there later. */
	for (uint32_t i = 0; i < q->l1_size; i++) {
		uint64_t e = q->l1[i], off = e & OFFSET_MASK;
		if ((e & L1E_RESERVED) || (off && !table_ok(q, off))) {
			set_err(err, err_len,
				"%s: L1 entry %u (0x%llx) is invalid: the image is corrupt (try "
				"qemu-img check -r all)",
				path, i, (unsigned long long)e);
			goto fail;
		}
	}
	for (uint64_t i = 0; i < q->reft_entries; i++) {
		uint64_t e = q->reft[i];
		if ((e & REFT_RESERVED) || (e && !table_ok(q, e))) {
			set_err(err, err_len,
				"%s: refcount table entry %llu (0x%llx) is invalid: the image is "
				"corrupt (try qemu-img check -r all)",
				path, (unsigned long long)i, (unsigned long long)e);
			goto fail;
		}
	}

	if (!readonly && autoclear) {
		/* Bits we do not know describe data we will not keep up to date: drop them. */
		uint8_t z[8] = {0};
		if ((r = blk_pwrite_full(fd, z, 8, H_AUTOCLEAR)) < 0 || fdatasync(fd) < 0) {
			set_err(err, err_len, "%s: cannot update the header: %s", path,
				strerror(r < 0 ? -r : errno));
			goto fail;
		}
	}

	if (bname[0]) {
		enum block_format bf;
		if (!bfmt[0] || !strcmp(bfmt, "raw")) {
			bf = BLOCK_RAW;
		} else if (!strcmp(bfmt, "qcow2")) {
			bf = BLOCK_QCOW2;
		} else {
			set_err(err, err_len, "%s: backing file format '%s' is not supported", path,
				bfmt);
			goto fail;
		}
		if (depth + 1 >= BLOCK_MAX_DEPTH) {
			set_err(err, err_len, "%s: the backing chain is longer than %d (a loop?)",
				path, BLOCK_MAX_DEPTH);
			goto fail;
		}
		char *bpath = NULL;
		const char *slash = strrchr(path, '/');
		if (bname[0] == '/' || !slash) {
			bpath = strdup(bname);
		} else if (asprintf(&bpath, "%.*s/%s", (int)(slash - path), path, bname) < 0) {
			bpath = NULL;
		}
		if (!bpath) {
			set_err(err, err_len, "%s: out of memory", path);
			goto fail;
		}
		char berr[512];
		q->backing = block_open_depth(bpath, bf, true, depth + 1, berr, sizeof(berr));
		free(bpath);
		if (!q->backing) {
			/* Only the top image names itself: a deep chain would bury the cause. */
			if (depth == 0)
				set_err(err, err_len, "%s: backing file: %s", path, berr);
			else
				set_err(err, err_len, "%s", berr);
			goto fail;
		}
	}
	return q;

fail:
	qcow2_free(q);
	return NULL;
}
