/* Block backends: open/close and request dispatch, the raw backend, and the file and iovec
 * helpers qcow2.c shares. A raw image is the file itself (or a block device); it must be a
 * multiple of 512 bytes long, since a disk is a whole number of sectors and quietly dropping a
 * tail would hide a mistake. Images are flock()ed (exclusive when writable, shared when
 * read-only) so two ferry processes cannot write one image or write a backing file in use. */
#include "backend/block.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/qcow2.h"
#include "util/log.h"

#define SECTOR 512u

struct block {
	enum block_format fmt;
	bool readonly;
	bool no_punch;      /* the file system refused FALLOC_FL_PUNCH_HOLE */
	bool no_zero_range; /* ... and FALLOC_FL_ZERO_RANGE */
	int fd;
	uint64_t size;
	struct iovec *scratch; /* raw: a mutable copy of a request's iovecs */
	int scratch_cap;
	struct qcow2 *q;
};

/* ---- file I/O --------------------------------------------------------------------------------- */

int blk_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	struct iovec iov = {buf, len};
	return blk_preadv_full(fd, &iov, 1, off);
}

int blk_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	struct iovec iov = {(void *)buf, len};
	return blk_pwritev_full(fd, &iov, 1, off);
}

/* Drops n transferred bytes from the front of iov[0..*cnt). */
static struct iovec *iov_advance(struct iovec *iov, int *cnt, size_t n)
{
	while (*cnt > 0 && (n >= iov->iov_len)) {
		n -= iov->iov_len;
		iov++;
		(*cnt)--;
	}
	if (*cnt > 0 && n) {
		iov->iov_base = (uint8_t *)iov->iov_base + n;
		iov->iov_len -= n;
	}
	return iov;
}

int blk_preadv_full(int fd, struct iovec *iov, int cnt, uint64_t off)
{
	while (cnt > 0) {
		if (iov->iov_len == 0) {
			iov++;
			cnt--;
			continue;
		}
		if (off > (uint64_t)INT64_MAX)
			return -EINVAL;
		ssize_t n = preadv(fd, iov, cnt > IOV_MAX ? IOV_MAX : cnt, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) { /* end of file: the rest reads as zeroes */
			for (int i = 0; i < cnt; i++)
				memset(iov[i].iov_base, 0, iov[i].iov_len);
			return 0;
		}
		off += (uint64_t)n;
		iov = iov_advance(iov, &cnt, (size_t)n);
	}
	return 0;
}

int blk_pwritev_full(int fd, struct iovec *iov, int cnt, uint64_t off)
{
	while (cnt > 0) {
		if (iov->iov_len == 0) {
			iov++;
			cnt--;
			continue;
		}
		if (off > (uint64_t)INT64_MAX)
			return -EINVAL;
		ssize_t n = pwritev(fd, iov, cnt > IOV_MAX ? IOV_MAX : cnt, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		off += (uint64_t)n;
		iov = iov_advance(iov, &cnt, (size_t)n);
	}
	return 0;
}

/* ---- iovec cursor ----------------------------------------------------------------------------- */

void iovc_init(struct iov_cursor *c, const struct iovec *iov, int cnt)
{
	c->iov = iov;
	c->cnt = cnt;
	c->i = 0;
	c->off = 0;
}

int iovc_take(struct iov_cursor *c, size_t len, struct iovec *out, int max)
{
	int n = 0;
	while (len) {
		if (c->i >= c->cnt || n >= max)
			return -1;
		size_t avail = c->iov[c->i].iov_len - c->off;
		if (avail == 0) {
			c->i++;
			c->off = 0;
			continue;
		}
		size_t k = avail < len ? avail : len;
		out[n].iov_base = (uint8_t *)c->iov[c->i].iov_base + c->off;
		out[n].iov_len = k;
		n++;
		c->off += k;
		len -= k;
	}
	return n;
}

/* Fills the next len bytes of the iovecs from src, or with zeroes if src is NULL. */
static void iovc_each(struct iov_cursor *c, size_t len, const uint8_t *src)
{
	while (len && c->i < c->cnt) {
		size_t avail = c->iov[c->i].iov_len - c->off;
		if (avail == 0) {
			c->i++;
			c->off = 0;
			continue;
		}
		size_t k = avail < len ? avail : len;
		uint8_t *dst = (uint8_t *)c->iov[c->i].iov_base + c->off;
		if (src) {
			memcpy(dst, src, k);
			src += k;
		} else {
			memset(dst, 0, k);
		}
		c->off += k;
		len -= k;
	}
}

void iovc_copy_from(struct iov_cursor *c, const void *src, size_t len)
{
	iovc_each(c, len, src);
}

void iovc_zero(struct iov_cursor *c, size_t len)
{
	iovc_each(c, len, NULL);
}

/* Sum of the iovecs' lengths in *len; -EINVAL if it does not fit in 64 bits or cnt is bad. */
static int iov_total(const struct iovec *iov, int cnt, uint64_t *len)
{
	uint64_t t = 0;
	if (cnt < 0 || (cnt > 0 && !iov))
		return -EINVAL;
	for (int i = 0; i < cnt; i++) {
		if (iov[i].iov_len > UINT64_MAX - t)
			return -EINVAL;
		t += iov[i].iov_len;
	}
	*len = t;
	return 0;
}

static int scratch_reserve(struct block *b, int n)
{
	if (n <= b->scratch_cap)
		return 0;
	struct iovec *s = realloc(b->scratch, (size_t)n * sizeof(*s));
	if (!s)
		return -ENOMEM;
	b->scratch = s;
	b->scratch_cap = n;
	return 0;
}

/* ---- raw ------------------------------------------------------------------------------------ */

static int raw_rw(struct block *b, uint64_t off, const struct iovec *iov, int cnt, bool write)
{
	int r = scratch_reserve(b, cnt);
	if (r < 0)
		return r;
	memcpy(b->scratch, iov, (size_t)cnt * sizeof(*iov));
	return write ? blk_pwritev_full(b->fd, b->scratch, cnt, off)
		     : blk_preadv_full(b->fd, b->scratch, cnt, off);
}

static bool fallocate_unsupported(int e)
{
	return e == EOPNOTSUPP || e == ENOSYS || e == EINVAL || e == ENOTTY || e == ENODEV;
}

static int raw_zero(struct block *b, uint64_t off, uint64_t len, bool may_unmap)
{
	if (len == 0)
		return 0;
	if (may_unmap && !b->no_punch) {
		if (fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			      (off_t)len) == 0)
			return 0;
		if (!fallocate_unsupported(errno))
			return -errno;
		b->no_punch = true;
	}
	if (!b->no_zero_range) {
		if (fallocate(b->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			      (off_t)len) == 0)
			return 0;
		if (!fallocate_unsupported(errno))
			return -errno;
		b->no_zero_range = true;
	}
	/* The file system does neither: write the zeroes, 64 KiB per call from one 4 KiB page. */
	static const uint8_t zeros[4096];
	struct iovec iov[16];
	while (len) {
		uint64_t chunk = len < sizeof(iov) / sizeof(iov[0]) * sizeof(zeros)
				     ? len
				     : sizeof(iov) / sizeof(iov[0]) * sizeof(zeros);
		int n = 0;
		for (uint64_t left = chunk; left; n++) {
			size_t k = left < sizeof(zeros) ? (size_t)left : sizeof(zeros);
			iov[n] = (struct iovec){(void *)zeros, k};
			left -= k;
		}
		int r = blk_pwritev_full(b->fd, iov, n, off);
		if (r < 0)
			return r;
		off += chunk;
		len -= chunk;
	}
	return 0;
}

/* ---- open / close --------------------------------------------------------------------------- */

struct block *block_open_depth(const char *path, enum block_format fmt, bool readonly, int depth,
			       char *err, size_t err_len)
{
	if (!path || !*path) {
		set_err(err, err_len, "no disk image path given");
		return NULL;
	}
	if (fmt != BLOCK_RAW && fmt != BLOCK_QCOW2) {
		set_err(err, err_len, "%s: unknown image format", path);
		return NULL;
	}
	/* O_NONBLOCK: a FIFO (say, named as a backing file) must be refused, not wait forever
	 * for a writer; it is cleared once the file is known to be a regular or block file. */
	int fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		set_err(err, err_len, "cannot open %s%s: %s", path, readonly ? "" : " for writing",
			strerror(errno));
		return NULL;
	}
	struct stat st;
	uint64_t fsize;
	if (fstat(fd, &st) < 0) {
		set_err(err, err_len, "cannot stat %s: %s", path, strerror(errno));
		goto fail_fd;
	}
	if (S_ISREG(st.st_mode)) {
		fsize = (uint64_t)st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &fsize) < 0) {
			set_err(err, err_len, "cannot get the size of %s: %s", path,
				strerror(errno));
			goto fail_fd;
		}
	} else {
		set_err(err, err_len, "%s is not a regular file or a block device", path);
		goto fail_fd;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		set_err(err, err_len, "cannot set up %s: %s", path, strerror(errno));
		goto fail_fd;
	}
	if (flock(fd, (readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			set_err(err, err_len, "%s is in use by another process (it is locked)",
				path);
		else
			set_err(err, err_len, "cannot lock %s: %s", path, strerror(errno));
		goto fail_fd;
	}

	struct block *b = calloc(1, sizeof(*b));
	if (!b) {
		set_err(err, err_len, "%s: out of memory", path);
		goto fail_fd;
	}
	b->fmt = fmt;
	b->readonly = readonly;
	b->fd = fd;
	if (fmt == BLOCK_RAW) {
		/* A backing file is read up to its end, whatever its length. */
		if (depth == 0 && fsize % SECTOR) {
			set_err(err, err_len,
				"%s: size %llu is not a multiple of 512 bytes (a raw disk image "
				"holds whole sectors; resize it, e.g. with truncate -s)",
				path, (unsigned long long)fsize);
			free(b);
			goto fail_fd;
		}
		b->size = fsize;
		/* Whether holes can be punched: a hole past the end is a no-op where supported. */
		if (!readonly && S_ISREG(st.st_mode) &&
		    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)((fsize + 4095) & ~4095ull), 4096) < 0 &&
		    fallocate_unsupported(errno))
			b->no_punch = true;
	} else {
		b->q = qcow2_open(fd, path, fsize, readonly, depth, err, err_len);
		if (!b->q) {
			free(b);
			goto fail_fd;
		}
		b->size = qcow2_size(b->q);
	}
	return b;

fail_fd:
	close(fd);
	return NULL;
}

struct block *block_open(const char *path, enum block_format fmt, bool readonly, char *err,
			 size_t err_len)
{
	return block_open_depth(path, fmt, readonly, 0, err, err_len);
}

void block_close(struct block *b)
{
	if (!b)
		return;
	if (b->q)
		qcow2_close(b->q);
	close(b->fd);
	free(b->scratch);
	free(b);
}

uint64_t block_size(const struct block *b)
{
	return b->size;
}

bool block_readonly(const struct block *b)
{
	return b->readonly;
}

bool block_can_discard(const struct block *b)
{
	if (b->readonly)
		return false;
	return b->fmt == BLOCK_QCOW2 || !b->no_punch;
}

/* ---- requests ------------------------------------------------------------------------------- */

static int check_range(const struct block *b, uint64_t off, uint64_t len)
{
	if (off % SECTOR || len % SECTOR || off > b->size || len > b->size - off)
		return -EINVAL;
	return 0;
}

int block_read_any(struct block *b, uint64_t off, const struct iovec *iov, int cnt)
{
	uint64_t len;
	int r = iov_total(iov, cnt, &len);
	if (r < 0)
		return r;
	uint64_t inside = off >= b->size ? 0 : (len < b->size - off ? len : b->size - off);
	struct iov_cursor c;
	iovc_init(&c, iov, cnt);
	if (inside) {
		if (inside == len) {
			r = b->q ? qcow2_read(b->q, off, iov, cnt)
				 : raw_rw(b, off, iov, cnt, false);
		} else {
			r = scratch_reserve(b, cnt);
			if (r < 0)
				return r;
			int n = iovc_take(&c, inside, b->scratch, cnt);
			if (n < 0)
				return -EINVAL;
			/* qcow2_read keeps its own scratch, so b->scratch may be passed to it. */
			r = b->q ? qcow2_read(b->q, off, b->scratch, n)
				 : blk_preadv_full(b->fd, b->scratch, n, off);
		}
		if (r < 0)
			return r;
	}
	iovc_zero(&c, len - inside);
	return 0;
}

int block_readv(struct block *b, uint64_t off, const struct iovec *iov, int iovcnt)
{
	uint64_t len;
	int r = iov_total(iov, iovcnt, &len);
	if (r < 0)
		return r;
	r = check_range(b, off, len);
	if (r < 0 || len == 0)
		return r;
	return b->q ? qcow2_read(b->q, off, iov, iovcnt) : raw_rw(b, off, iov, iovcnt, false);
}

int block_writev(struct block *b, uint64_t off, const struct iovec *iov, int iovcnt)
{
	if (b->readonly)
		return -EROFS;
	uint64_t len;
	int r = iov_total(iov, iovcnt, &len);
	if (r < 0)
		return r;
	r = check_range(b, off, len);
	if (r < 0 || len == 0)
		return r;
	return b->q ? qcow2_write(b->q, off, iov, iovcnt) : raw_rw(b, off, iov, iovcnt, true);
}

int block_flush(struct block *b)
{
	if (b->readonly)
		return 0;
	if (b->q)
		return qcow2_flush(b->q);
	return fdatasync(b->fd) < 0 ? -errno : 0;
}

int block_discard(struct block *b, uint64_t off, uint64_t len)
{
	return block_write_zeroes(b, off, len, true);
}

int block_write_zeroes(struct block *b, uint64_t off, uint64_t len, bool may_unmap)
{
	if (b->readonly)
		return -EROFS;
	int r = check_range(b, off, len);
	if (r < 0 || len == 0)
		return r;
	return b->q ? qcow2_zero(b->q, off, len, may_unmap) : raw_zero(b, off, len, may_unmap);
}
