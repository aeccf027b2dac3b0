/* Block backends: a disk image file as a virtual disk of fixed size in bytes. The format is
 * stated by the user (raw or qcow2), never guessed for a writable image. Requests are byte
 * ranges at 512-byte granularity given as iovecs; errors come back as -errno, and a qcow2
 * image that is corrupt or uses features ferry does not implement is refused at open with one
 * clear message. Thread-compatible: one thread issues requests on a block at a time. */
#ifndef FERRY_BLOCK_H
#define FERRY_BLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

enum block_format { BLOCK_RAW, BLOCK_QCOW2 };

struct block;

/* Opens path as fmt; readonly opens it O_RDONLY and refuses writes with -EROFS. A qcow2 image's
 * backing file is opened read-only (its format from the image header; raw if unstated). A raw
 * image must be a multiple of 512 bytes long (refused otherwise). Images are flock()ed, shared
 * when read-only and exclusive when writable, so a second writer is refused. On failure returns
 * NULL with one line in err. */
struct block *block_open(const char *path, enum block_format fmt, bool readonly, char *err,
			 size_t err_len);
void block_close(struct block *b);
uint64_t block_size(const struct block *b); /* the virtual disk size in bytes */
bool block_readonly(const struct block *b);
/* Whether discard frees host space (raw: the file system punches holes; qcow2: clusters freed). */
bool block_can_discard(const struct block *b);

/* Read or write len bytes at byte offset off (off and len multiples of 512, inside the disk)
 * gathered from / scattered into iov[0..iovcnt). 0 or -errno. */
int block_readv(struct block *b, uint64_t off, const struct iovec *iov, int iovcnt);
int block_writev(struct block *b, uint64_t off, const struct iovec *iov, int iovcnt);
/* Makes every completed write durable on the host (fdatasync on every file written). */
int block_flush(struct block *b);
/* Discard: the range may read back as anything (ferry makes it read as zeroes). Write zeroes:
 * the range reads back as zeroes; may_unmap lets it free space. */
int block_discard(struct block *b, uint64_t off, uint64_t len);
int block_write_zeroes(struct block *b, uint64_t off, uint64_t len, bool may_unmap);

#endif
