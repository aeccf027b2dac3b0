/* XZ decompression (liblzma) of untrusted data into a bounded host buffer, for kernels whose
 * payload the loader unpacks itself. */
#ifndef FERRY_XZ_H
#define FERRY_XZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most memory liblzma may take for its state. Linux compresses with a 32 MiB dictionary;
 * a stream that needs more than this limit is refused, not allowed to claim host memory. */
#define XZ_MEMLIMIT (128ull << 20)

/* True when p starts with the XZ stream magic (FD 37 7A 58 5A 00). */
bool xz_is_xz(const uint8_t *p, size_t len);

/* Decompresses the one XZ stream at the start of in[0..in_len); bytes after the stream's end are
 * ignored (Linux appends the uncompressed size). The output may not exceed max_out bytes;
 * size_hint (0: none) only sizes the first allocation. On success *out is a malloc'd buffer of
 * *out_len bytes that the caller frees. Returns 0; XZ_TOO_BIG when the output would exceed
 * max_out; or -1 (corrupt, truncated, unsupported options, out of memory). On failure err holds
 * one line and *out is NULL. */
#define XZ_TOO_BIG (-2)
int xz_decompress(const uint8_t *in, size_t in_len, size_t max_out, size_t size_hint, uint8_t **out,
		  size_t *out_len, char *err, size_t err_len);

#endif
