/* virtio-blk (virtio spec 5.2): one request queue over a block backend (backend/block.h). A
 * request is a chain: a 16-byte header (type, sector) the device reads, the data, and one status
 * byte the device writes last. Served in the device's worker thread, one request at a time, in
 * order; a completed flush is durable on the host before the guest sees it. Every sector range
 * is checked against the capacity; a request the device cannot carry out gets IOERR or UNSUPP,
 * and only a chain that cannot even hold a status byte puts the device into NEEDS_RESET. */
#include <errno.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_ids.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/block.h"
#include "util/log.h"
#include "virtio/virtio_pci.h"
#include "vm/vm.h"

#define BLK_QUEUE_SIZE 256
#define BLK_MAX_SEGS   130 /* seg_max data segments + header + status */
#define BLK_SEG_MAX    (BLK_MAX_SEGS - 2)
#define SECTOR         512u
#define HDR_SIZE       16
#define MAX_RANGES     16        /* discard / write-zeroes ranges per request */
#define MAX_RANGE_SECT 0x3fffffu /* sectors per discard / write-zeroes range (2 GiB) */

struct blk {
	struct block *img;
	unsigned index;
	char serial[VIRTIO_BLK_ID_BYTES];
	struct virtio_blk_config config;
	struct virtio_ops ops;
};

struct range {
	uint64_t sector;
	uint32_t num, flags;
};

/* iovecs for len bytes of the chain's segments [first, last), starting skip bytes in. Returns
 * the count, or -1 if the segments are too short or too many. */
static int chain_iov(const struct virtq_chain *c, unsigned first, unsigned last, uint64_t skip,
		     uint64_t len, struct iovec *iov, int max)
{
	int n = 0;
	for (unsigned i = first; i < last && len; i++) {
		uint64_t sl = c->seg[i].len;
		if (skip >= sl) {
			skip -= sl;
			continue;
		}
		uint64_t take = sl - skip < len ? sl - skip : len;
		if (n == max)
			return -1;
		iov[n].iov_base = (uint8_t *)c->seg[i].host + skip;
		iov[n].iov_len = take;
		n++;
		len -= take;
		skip = 0;
	}
	return len ? -1 : n;
}

static bool in_disk(const struct blk *b, uint64_t sector, uint64_t bytes)
{
	uint64_t cap = block_size(b->img) / SECTOR;
	return sector <= cap && bytes / SECTOR <= cap - sector;
}

static uint8_t errno_status(int rc)
{
	return rc == 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
}

static uint8_t do_ranges(struct blk *b, const struct virtq_chain *c, uint64_t data_len, bool zeroes)
{
	if (data_len == 0 || data_len % sizeof(struct virtio_blk_discard_write_zeroes) ||
	    data_len / sizeof(struct virtio_blk_discard_write_zeroes) > MAX_RANGES)
		return VIRTIO_BLK_S_IOERR;
	unsigned n = (unsigned)(data_len / sizeof(struct virtio_blk_discard_write_zeroes));
	struct virtio_blk_discard_write_zeroes r[MAX_RANGES];
	if (virtq_read(c, HDR_SIZE, r, data_len) != data_len)
		return VIRTIO_BLK_S_IOERR;
	for (unsigned i = 0; i < n; i++) {
		uint64_t sector = r[i].sector;
		uint32_t num = r[i].num_sectors, flags = r[i].flags;
		/* Flags other than unmap (and unmap on a discard) are errors by the spec. */
		if (num > MAX_RANGE_SECT || (flags & ~1u) || (!zeroes && flags) ||
		    !in_disk(b, sector, (uint64_t)num * SECTOR))
			return flags & ~1u ? VIRTIO_BLK_S_UNSUPP : VIRTIO_BLK_S_IOERR;
	}
	for (unsigned i = 0; i < n; i++) {
		uint64_t off = r[i].sector * SECTOR, len = (uint64_t)r[i].num_sectors * SECTOR;
		int rc = zeroes ? block_write_zeroes(b->img, off, len, r[i].flags & 1)
				: block_discard(b->img, off, len);
		if (rc < 0)
			return VIRTIO_BLK_S_IOERR;
	}
	return VIRTIO_BLK_S_OK;
}

static int64_t blk_request(struct virtio_device *vd, unsigned q, struct virtq_chain *c)
{
	(void)q;
	struct blk *b = virtio_opaque(vd);
	struct virtio_blk_outhdr hdr;
	/* The status byte is the chain's last writable byte; the header its first 16 readable. */
	if (c->in_len < 1 || c->out_len < HDR_SIZE || virtq_read(c, 0, &hdr, HDR_SIZE) != HDR_SIZE)
		return -1;
	uint64_t out_data = c->out_len - HDR_SIZE, in_data = c->in_len - 1;
	uint64_t written = 0;
	uint8_t status = VIRTIO_BLK_S_OK;
	struct iovec iov[BLK_MAX_SEGS];
	int n;
	bool ro = block_readonly(b->img);
	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
		if (in_data % SECTOR || !in_disk(b, hdr.sector, in_data)) {
			status = VIRTIO_BLK_S_IOERR;
			break;
		}
		n = chain_iov(c, c->n_out, c->nseg, 0, in_data, iov, BLK_MAX_SEGS);
		status = n < 0 ? VIRTIO_BLK_S_IOERR
			       : errno_status(block_readv(b->img, hdr.sector * SECTOR, iov, n));
		if (status == VIRTIO_BLK_S_OK)
			written = in_data;
		break;
	case VIRTIO_BLK_T_OUT:
		if (ro || out_data % SECTOR || !in_disk(b, hdr.sector, out_data)) {
			status = VIRTIO_BLK_S_IOERR;
			break;
		}
		n = chain_iov(c, 0, c->n_out, HDR_SIZE, out_data, iov, BLK_MAX_SEGS);
		status = n < 0 ? VIRTIO_BLK_S_IOERR
			       : errno_status(block_writev(b->img, hdr.sector * SECTOR, iov, n));
		break;
	case VIRTIO_BLK_T_FLUSH:
		status = errno_status(block_flush(b->img));
		break;
	case VIRTIO_BLK_T_GET_ID:
		written = virtq_write(c, 0, b->serial,
				      in_data < sizeof(b->serial) ? in_data : sizeof(b->serial));
		break;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		if (ro || (hdr.type == VIRTIO_BLK_T_DISCARD && !block_can_discard(b->img)))
			status = ro ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_UNSUPP;
		else
			status = do_ranges(b, c, out_data, hdr.type == VIRTIO_BLK_T_WRITE_ZEROES);
		break;
	default:
		status = VIRTIO_BLK_S_UNSUPP;
		break;
	}
	virtq_write(c, c->in_len - 1, &status, 1);
	return (int64_t)(written + 1);
}

static int blk_notify(struct virtio_device *vd, unsigned q)
{
	return virtio_process_queue(vd, q, blk_request);
}

static void blk_config_read(void *opaque, unsigned off, uint8_t *data, unsigned len)
{
	const struct blk *b = opaque;
	memset(data, 0, len);
	if (off < sizeof(b->config))
		memcpy(data, (const uint8_t *)&b->config + off,
		       len < sizeof(b->config) - off ? len : sizeof(b->config) - off);
}

static void blk_destroy(void *opaque)
{
	struct blk *b = opaque;
	block_close(b->img);
	free(b);
}

static int blk_create_one(struct vm *vm, unsigned index)
{
	const struct vm_drive *d = &vm->cfg->drives[index];
	char err[256];
	struct blk *b = calloc(1, sizeof(*b));
	if (!b) {
		log_error("virtio-blk: out of memory");
		return -1;
	}
	b->img = block_open(d->file, d->format, d->readonly, err, sizeof(err));
	if (!b->img) {
		log_error("--drive: %s", err);
		free(b);
		return DEVICE_BAD_INPUT;
	}
	b->index = index;
	/* The ID is up to 20 bytes, NUL-terminated only when shorter. */
	char id[32];
	int n = snprintf(id, sizeof(id), "ferry-disk%u", index);
	memcpy(b->serial, id, (size_t)n < sizeof(b->serial) ? (size_t)n : sizeof(b->serial));
	uint64_t f = (1ull << VIRTIO_BLK_F_SEG_MAX) | (1ull << VIRTIO_BLK_F_BLK_SIZE) |
		     (1ull << VIRTIO_BLK_F_FLUSH) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES);
	if (d->readonly)
		f |= 1ull << VIRTIO_BLK_F_RO;
	if (block_can_discard(b->img))
		f |= 1ull << VIRTIO_BLK_F_DISCARD;
	b->config.capacity = block_size(b->img) / SECTOR;
	b->config.seg_max = BLK_SEG_MAX;
	b->config.blk_size = SECTOR;
	b->config.max_discard_sectors = MAX_RANGE_SECT;
	b->config.max_discard_seg = MAX_RANGES;
	b->config.discard_sector_alignment = 1;
	b->config.max_write_zeroes_sectors = MAX_RANGE_SECT;
	b->config.max_write_zeroes_seg = MAX_RANGES;
	b->config.write_zeroes_may_unmap = 1;
	b->ops = (struct virtio_ops){
	    .name = "virtio-blk",
	    .type = VIRTIO_ID_BLOCK,
	    .pci_class = 0x018000, /* mass storage, other */
	    .nqueues = 1,
	    .queue_max = BLK_QUEUE_SIZE,
	    .max_segs = BLK_MAX_SEGS,
	    .features = f,
	    .config_size = sizeof(b->config),
	    .config_read = blk_config_read,
	    .queue_notify = blk_notify,
	    .destroy = blk_destroy,
	};
	struct virtio_device *vd = virtio_pci_create(vm, &b->ops, b);
	if (!vd) {
		blk_destroy(b);
		return -1;
	}
	return virtio_start(vd);
}

static int blk_create(struct vm *vm)
{
	for (unsigned i = 0; i < vm->cfg->ndrives; i++) {
		int rc = blk_create_one(vm, i);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static struct device_type blk_type = {.name = "virtio-blk", .order = 80, .create = blk_create};
DEVICE_REGISTER(blk_type)
