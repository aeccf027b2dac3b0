/* XZ decompression with liblzma into a buffer that grows up to a caller-given bound. */
#include <lzma.h>
#include <stdlib.h>
#include <string.h>

#include "arch/x86/xz.h"
#include "util/log.h"

#define XZ_MIN_ALLOC (64u << 10)
#define XZ_MAX_RATIO 32 /* Linux kernels compress about 8:1 */

static const uint8_t xz_magic[6] = {0xfd, '7', 'z', 'X', 'Z', 0x00};

bool xz_is_xz(const uint8_t *p, size_t len)
{
	return p && len >= sizeof(xz_magic) && !memcmp(p, xz_magic, sizeof(xz_magic));
}

static int lzma_err(lzma_ret ret, char *err, size_t err_len)
{
	switch (ret) {
	case LZMA_FORMAT_ERROR:
		return set_err(err, err_len, "not an XZ stream");
	case LZMA_OPTIONS_ERROR:
		return set_err(err, err_len, "XZ stream uses options liblzma does not support");
	case LZMA_DATA_ERROR:
		return set_err(err, err_len, "XZ stream is corrupt");
	case LZMA_MEMLIMIT_ERROR:
		return set_err(err, err_len, "XZ stream needs more than %llu MiB to decompress",
			       (unsigned long long)(XZ_MEMLIMIT >> 20));
	case LZMA_MEM_ERROR:
		return set_err(err, err_len, "out of host memory decompressing the XZ stream");
	default:
		return set_err(err, err_len, "liblzma failed (error %d)", (int)ret);
	}
}

int xz_decompress(const uint8_t *in, size_t in_len, size_t max_out, size_t size_hint, uint8_t **out,
		  size_t *out_len, char *err, size_t err_len)
{
	*out = NULL;
	*out_len = 0;
	if (!xz_is_xz(in, in_len))
		return set_err(err, err_len, "not an XZ stream");
	if (max_out == 0)
		return set_err(err, err_len, "no room for the decompressed data");
	/* One byte of room past max_out tells "too big" from a stream that ends exactly there. */
	if (max_out == SIZE_MAX)
		max_out--;
	size_t limit = max_out + 1;
	/* The hint is untrusted: it may not reserve more than a generous compression ratio allows
	 * (a lie only costs a few reallocations). */
	size_t cap = size_hint,
	       ratio_cap = in_len > SIZE_MAX / XZ_MAX_RATIO ? SIZE_MAX : in_len * XZ_MAX_RATIO;
	if (cap == 0 || cap > ratio_cap)
		cap = ratio_cap;
	if (cap < XZ_MIN_ALLOC)
		cap = XZ_MIN_ALLOC;
	if (cap > limit)
		cap = limit;
	uint8_t *buf = malloc(cap);
	if (!buf)
		return set_err(err, err_len, "out of host memory (%zu bytes) for the XZ output",
			       cap);

	lzma_stream s = LZMA_STREAM_INIT;
	/* No LZMA_CONCATENATED: decoding stops at the end of the first stream, so trailing bytes
	 * are not parsed as another stream. */
	lzma_ret ret = lzma_stream_decoder(&s, XZ_MEMLIMIT, 0);
	if (ret != LZMA_OK) {
		free(buf);
		return lzma_err(ret, err, err_len);
	}
	s.next_in = in;
	s.avail_in = in_len;
	s.next_out = buf;
	s.avail_out = cap;
	bool too_big = false;
	for (;;) {
		if (s.avail_out == 0) { /* then cap < limit: a full limit-sized buffer is too big */
			size_t ncap = cap > limit / 2 ? limit : cap * 2;
			uint8_t *nbuf = realloc(buf, ncap);
			if (!nbuf) {
				ret = LZMA_MEM_ERROR;
				break;
			}
			buf = nbuf;
			s.next_out = buf + cap;
			s.avail_out = ncap - cap;
			cap = ncap;
		}
		/* All input is present: LZMA_FINISH makes a missing end an error, not a wait. */
		ret = lzma_code(&s, LZMA_FINISH);
		if (s.total_out > max_out) {
			too_big = true;
			break;
		}
		if (ret != LZMA_OK)
			break;
	}
	size_t produced = (size_t)s.total_out;
	lzma_end(&s);
	if (!too_big && ret == LZMA_STREAM_END) {
		*out = buf;
		*out_len = produced;
		return 0;
	}
	free(buf);
	if (too_big) {
		set_err(err, err_len, "XZ stream decompresses to more than %zu bytes", max_out);
		return XZ_TOO_BIG;
	}
	if (ret == LZMA_BUF_ERROR)
		return set_err(
		    err, err_len,
		    "XZ stream is truncated (%zu bytes in, %zu bytes out before its end)", in_len,
		    produced);
	return lzma_err(ret, err, err_len);
}
