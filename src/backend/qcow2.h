/* The internal interface between block.c (open/close dispatch, the raw backend, file I/O and
 * iovec helpers) and qcow2.c. Only src/backend uses it; everything else goes through block.h. */
#ifndef FERRY_QCOW2_H
#define FERRY_QCOW2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "backend/block.h"

#define BLOCK_MAX_DEPTH 16 /* backing chain length; deeper chains are refused as likely loops */

/* ---- file I/O: whole transfers, EINTR and short transfers retried ------------------------- */

/* Reads past the end of the file read as zeroes. 0 or -errno. */
int blk_pread_full(int fd, void *buf, size_t len, uint64_t off);
/* iov is consumed (advanced in place); it may have more than IOV_MAX entries. */
int blk_preadv_full(int fd, struct iovec *iov, int cnt, uint64_t off);
int blk_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
int blk_pwritev_full(int fd, struct iovec *iov, int cnt, uint64_t off);

/* ---- a position in an iovec array ---------------------------------------------------------- */

struct iov_cursor {
	const struct iovec *iov;
	int cnt;
	int i;      /* current element */
	size_t off; /* bytes of iov[i] already consumed */
};

void iovc_init(struct iov_cursor *c, const struct iovec *iov, int cnt);
/* Describes the next len bytes as at most max elements in out and advances past them. Returns
 * the element count, or -1 if len runs past the end or needs more than max elements. */
int iovc_take(struct iov_cursor *c, size_t len, struct iovec *out, int max);
void iovc_copy_from(struct iov_cursor *c, const void *src, size_t len); /* into the iovecs */
void iovc_zero(struct iov_cursor *c, size_t len);

/* ---- block.c for qcow2.c -------------------------------------------------------------------- */

/* block_open with the depth of the backing chain so far. */
struct block *block_open_depth(const char *path, enum block_format fmt, bool readonly, int depth,
			       char *err, size_t err_len);
/* Reads the iovecs' total length at any byte offset; what lies past block_size() reads as
 * zeroes. For reading through a backing file. 0 or -errno. */
int block_read_any(struct block *b, uint64_t off, const struct iovec *iov, int cnt);

/* ---- qcow2.c for block.c --------------------------------------------------------------------- */

struct qcow2;

/* Takes over nothing: fd stays the caller's. file_size is the image file's size. */
struct qcow2 *qcow2_open(int fd, const char *path, uint64_t file_size, bool readonly, int depth,
			 char *err, size_t err_len);
/* Writes back metadata (logging any failure) and frees q, closing the backing chain. */
void qcow2_close(struct qcow2 *q);
uint64_t qcow2_size(const struct qcow2 *q);
/* Byte ranges inside the virtual size, any alignment; the length is the iovecs' total. */
int qcow2_read(struct qcow2 *q, uint64_t off, const struct iovec *iov, int cnt);
int qcow2_write(struct qcow2 *q, uint64_t off, const struct iovec *iov, int cnt);
int qcow2_flush(struct qcow2 *q);
/* Makes [off, off+len) read as zeroes; may_unmap lets it deallocate clusters. */
int qcow2_zero(struct qcow2 *q, uint64_t off, uint64_t len, bool may_unmap);

#endif
