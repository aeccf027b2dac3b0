/* The block backends, in a temporary directory: raw (read/write, discard, write zeroes, flush,
 * read-only, locking, bad files) and qcow2 against QEMU's own tools (qemu-img, qemu-io from
 * Debian's qemu-utils). Every qcow2 image ferry writes is compared with a shadow copy of what the
 * guest wrote, then has to pass `qemu-img check` and convert to the same bytes; images written
 * by QEMU (plain, compressed, with backing chains and snapshots) have to read the same in
 * ferry; malformed headers are refused with a message; corrupted tables never crash; and a
 * process that dies after a flush leaves at most leaked clusters. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend/block.h"

static char tmpdir[128];
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static uint64_t rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static void pathf(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tmpdir, name);
}

/* Runs a shell command quietly; its exit status, or -1 if it did not exit normally. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[2048], line[2100];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	assert_true(n > 0 && (size_t)n < sizeof(cmd));
	snprintf(line, sizeof(line), "( %s ) >/dev/null 2>&1", cmd);
	int st = system(line);
	if (st == -1 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static bool have_qemu(void)
{
	static int have = -1;
	if (have < 0)
		have = sh("qemu-img --version") == 0 && sh("qemu-io --version") == 0;
	return have;
}

#define NEED_QEMU()                                                                                \
	do {                                                                                       \
		if (!have_qemu()) {                                                                \
			print_message("qemu-img/qemu-io not installed (scripts/setup.sh installs " \
				      "qemu-utils): test skipped\n");                              \
			skip();                                                                    \
		}                                                                                  \
	} while (0)

static uint8_t *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	uint8_t *d = malloc((size_t)st.st_size + 1);
	assert_non_null(d);
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, d + got, (size_t)st.st_size - got);
		assert_true(r > 0);
		got += (size_t)r;
	}
	close(fd);
	*len = got;
	return d;
}

static void spit(const char *path, const void *d, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, d, len), (ssize_t)len);
	close(fd);
}

static void assert_same(const uint8_t *got, const uint8_t *want, size_t len, const char *what)
{
	if (memcmp(got, want, len) == 0)
		return;
	size_t i = 0;
	while (got[i] == want[i])
		i++;
	fail_msg("%s: first difference at byte 0x%zx (got 0x%02x, want 0x%02x)", what, i, got[i],
		 want[i]);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static struct block *must_open(const char *path, enum block_format fmt, bool ro)
{
	char err[512] = "";
	struct block *b = block_open(path, fmt, ro, err, sizeof(err));
	if (!b)
		fail_msg("cannot open %s: %s", path, err);
	return b;
}

/* `qemu-img check` exit status: 0 clean, 2 corruption, 3 leaked clusters only. */
static int qemu_check(const char *img)
{
	return sh("qemu-img check '%s'", img);
}

/* The image converted to raw by qemu-img must equal shadow. */
static void assert_image_is(const char *img, const uint8_t *shadow, uint64_t size,
			    const char *extra)
{
	char raw[256];
	size_t n;
	snprintf(raw, sizeof(raw), "%s.out.raw", img);
	assert_int_equal(sh("qemu-img convert %s -O raw '%s' '%s'", extra, img, raw), 0);
	uint8_t *d = slurp(raw, &n);
	assert_int_equal(n, size);
	assert_same(d, shadow, size, img);
	free(d);
	unlink(raw);
}

/* ---- random requests against a shadow copy ----------------------------------------------- */

/* Splits [buf, buf+len) into 1..4 iovecs at random byte positions. */
static int split_iov(uint8_t *buf, size_t len, struct iovec *iov)
{
	int n = 1 + (int)rnd_below(4);
	size_t pos = 0;
	for (int i = 0; i < n - 1; i++) {
		size_t k = (size_t)rnd_below(len - pos + 1);
		iov[i] = (struct iovec){buf + pos, k};
		pos += k;
	}
	iov[n - 1] = (struct iovec){buf + pos, len - pos};
	return n;
}

static void op_write(struct block *b, uint8_t *shadow, uint64_t off, uint64_t len)
{
	uint8_t *buf = malloc(len);
	struct iovec iov[4];
	assert_non_null(buf);
	uint8_t pat = (uint8_t)rnd();
	for (uint64_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(pat + i * 7 + (i >> 9)) | 1; /* never a zero byte */
	int n = split_iov(buf, len, iov);
	assert_int_equal(block_writev(b, off, iov, n), 0);
	memcpy(shadow + off, buf, len);
	free(buf);
}

static void op_check(struct block *b, const uint8_t *shadow, uint64_t off, uint64_t len)
{
	uint8_t *buf = malloc(len);
	struct iovec iov[4];
	assert_non_null(buf);
	memset(buf, 0x5a, len);
	int n = split_iov(buf, len, iov);
	assert_int_equal(block_readv(b, off, iov, n), 0);
	assert_same(buf, shadow + off, len, "read back");
	free(buf);
}

/* kind 0: discard, 1: write zeroes with unmap, 2: write zeroes without. */
static void op_zero(struct block *b, uint8_t *shadow, uint64_t off, uint64_t len, int kind)
{
	int r = kind == 0 ? block_discard(b, off, len) : block_write_zeroes(b, off, len, kind == 1);
	assert_int_equal(r, 0);
	memset(shadow + off, 0, len);
}

static void rnd_range(uint64_t size, uint64_t maxlen, uint64_t *off, uint64_t *len)
{
	*off = rnd_below(size / 512) * 512;
	*len = (1 + rnd_below(maxlen / 512)) * 512;
	if (*len > size - *off)
		*len = size - *off;
}

static void random_ops(struct block *b, uint8_t *shadow, uint64_t size, unsigned nops,
		       uint64_t maxlen, bool zeroes)
{
	for (unsigned i = 0; i < nops; i++) {
		uint64_t off, len;
		rnd_range(size, maxlen, &off, &len);
		unsigned what = (unsigned)rnd_below(zeroes ? 10 : 6);
		if (what < 3)
			op_write(b, shadow, off, len);
		else if (what < 5)
			op_check(b, shadow, off, len);
		else if (what == 5)
			assert_int_equal(block_flush(b), 0);
		else
			op_zero(b, shadow, off, len, (int)(what - 6) % 3);
	}
	op_check(b, shadow, 0, size);
}

/* ---- raw ------------------------------------------------------------------------------------ */

static void make_file(const char *path, uint64_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	close(fd);
}

static void test_raw_rw(void **state)
{
	(void)state;
	char p[256];
	const uint64_t size = 2 << 20;
	pathf(p, sizeof(p), "rw.raw");
	make_file(p, size);
	uint8_t *shadow = calloc(1, size);
	assert_non_null(shadow);
	struct block *b = must_open(p, BLOCK_RAW, false);
	assert_int_equal(block_size(b), size);
	assert_false(block_readonly(b));
	random_ops(b, shadow, size, 300, 64 << 10, false);

	/* Out of range or misaligned requests are refused. */
	uint8_t buf[1024];
	struct iovec v = {buf, 512};
	assert_int_equal(block_readv(b, size, &v, 1), -EINVAL);
	assert_int_equal(block_writev(b, size - 512, &(struct iovec){buf, 1024}, 1), -EINVAL);
	assert_int_equal(block_readv(b, 100, &v, 1), -EINVAL);
	assert_int_equal(block_readv(b, 0, &(struct iovec){buf, 100}, 1), -EINVAL);
	assert_int_equal(block_discard(b, 512, 100), -EINVAL);
	assert_int_equal(block_write_zeroes(b, UINT64_MAX - 511, 1024, false), -EINVAL);
	assert_int_equal(block_readv(b, 0, NULL, 0), 0);
	assert_int_equal(block_flush(b), 0);
	block_close(b);

	size_t n;
	uint8_t *d = slurp(p, &n);
	assert_int_equal(n, size);
	assert_same(d, shadow, size, "raw file");
	free(d);
	free(shadow);
}

static void test_raw_zeroes(void **state)
{
	(void)state;
	char p[256];
	const uint64_t size = 4 << 20;
	pathf(p, sizeof(p), "zero.raw");
	make_file(p, size);
	uint8_t *shadow = calloc(1, size);
	assert_non_null(shadow);
	struct block *b = must_open(p, BLOCK_RAW, false);
	op_write(b, shadow, 0, size);
	assert_int_equal(block_flush(b), 0);
	struct stat st0, st1;
	assert_int_equal(stat(p, &st0), 0);
	op_zero(b, shadow, 1 << 20, 2 << 20, 0);
	op_zero(b, shadow, 512, 1536, 1);
	op_zero(b, shadow, 3 << 20, 4096 + 512, 2);
	op_check(b, shadow, 0, size);
	random_ops(b, shadow, size, 200, 128 << 10, true);
	assert_int_equal(block_flush(b), 0);
	if (block_can_discard(b)) {
		/* A punched hole frees the space. */
		op_write(b, shadow, 0, size);
		assert_int_equal(block_flush(b), 0);
		assert_int_equal(stat(p, &st0), 0);
		op_zero(b, shadow, 0, size, 0);
		assert_int_equal(stat(p, &st1), 0);
		assert_true(st1.st_blocks < st0.st_blocks / 2);
	}
	block_close(b);
	size_t n;
	uint8_t *d = slurp(p, &n);
	assert_same(d, shadow, size, "raw file after zeroing");
	free(d);
	free(shadow);
}

/* tmpfs punches holes but has no FALLOC_FL_ZERO_RANGE: writing zeroes without unmapping falls
 * back to writing them. */
static void test_raw_zeroes_tmpfs(void **state)
{
	(void)state;
	char p[] = "/dev/shm/ferry-block-XXXXXX";
	int fd = mkstemp(p);
	if (fd < 0) {
		print_message("no /dev/shm: test skipped\n");
		skip();
	}
	const uint64_t size = 1 << 20;
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	close(fd);
	uint8_t *shadow = calloc(1, size);
	assert_non_null(shadow);
	struct block *b = must_open(p, BLOCK_RAW, false);
	op_write(b, shadow, 0, size);
	op_zero(b, shadow, 4096, 200 << 10, 2);
	op_zero(b, shadow, 300 << 10, 100 << 10, 0);
	op_check(b, shadow, 0, size);
	random_ops(b, shadow, size, 100, 100 << 10, true);
	block_close(b);
	size_t n;
	uint8_t *d = slurp(p, &n);
	unlink(p);
	assert_same(d, shadow, size, "tmpfs file after zeroing");
	free(d);
	free(shadow);
}

static void test_raw_readonly_and_locks(void **state)
{
	(void)state;
	char p[256], err[512];
	uint8_t buf[4096];
	pathf(p, sizeof(p), "ro.raw");
	memset(buf, 0x11, sizeof(buf));
	spit(p, buf, sizeof(buf));
	struct block *b = must_open(p, BLOCK_RAW, true);
	assert_true(block_readonly(b));
	assert_false(block_can_discard(b));
	struct iovec v = {buf, 512};
	assert_int_equal(block_writev(b, 0, &v, 1), -EROFS);
	assert_int_equal(block_discard(b, 0, 512), -EROFS);
	assert_int_equal(block_write_zeroes(b, 0, 512, true), -EROFS);
	memset(buf, 0, 512);
	assert_int_equal(block_readv(b, 512, &v, 1), 0);
	assert_int_equal(buf[0], 0x11);
	assert_int_equal(block_flush(b), 0);

	/* A second reader is fine; a writer is not while someone reads, and vice versa. */
	struct block *b2 = must_open(p, BLOCK_RAW, true);
	assert_null(block_open(p, BLOCK_RAW, false, err, sizeof(err)));
	assert_non_null(strstr(err, "in use"));
	block_close(b2);
	block_close(b);
	b = must_open(p, BLOCK_RAW, false);
	assert_null(block_open(p, BLOCK_RAW, true, err, sizeof(err)));
	assert_non_null(strstr(err, "in use"));
	block_close(b);
}

static void test_raw_bad_files(void **state)
{
	(void)state;
	char p[256], err[512];
	pathf(p, sizeof(p), "odd.raw");
	make_file(p, 1000);
	assert_null(block_open(p, BLOCK_RAW, false, err, sizeof(err)));
	assert_non_null(strstr(err, "multiple of 512"));
	pathf(p, sizeof(p), "missing.raw");
	assert_null(block_open(p, BLOCK_RAW, true, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot open"));
	assert_null(block_open(tmpdir, BLOCK_RAW, true, err, sizeof(err)));
	assert_non_null(strstr(err, "not a regular file"));
	/* Empty is a valid (if useless) disk. */
	pathf(p, sizeof(p), "empty.raw");
	make_file(p, 0);
	struct block *b = must_open(p, BLOCK_RAW, false);
	assert_int_equal(block_size(b), 0);
	block_close(b);
}

/* ---- qcow2 written by ferry --------------------------------------------------------------- */

static void qcow2_roundtrip(const char *name, const char *opts, uint64_t size, unsigned nops,
			    uint64_t maxlen, bool zeroes)
{
	char p[256];
	pathf(p, sizeof(p), name);
	assert_int_equal(
	    sh("qemu-img create -f qcow2 %s '%s' %llu", opts, p, (unsigned long long)size), 0);
	uint8_t *shadow = calloc(1, size);
	assert_non_null(shadow);
	struct block *b = must_open(p, BLOCK_QCOW2, false);
	assert_int_equal(block_size(b), size);
	assert_true(block_can_discard(b));
	random_ops(b, shadow, size, nops, maxlen, zeroes);
	block_close(b);

	b = must_open(p, BLOCK_QCOW2, true);
	op_check(b, shadow, 0, size);
	block_close(b);
	if (qemu_check(p) != 0)
		fail_msg("qemu-img check %s (%s) is not clean", p, opts);
	assert_image_is(p, shadow, size, "");
	free(shadow);
}

static void test_qcow2_random_writes(void **state)
{
	(void)state;
	NEED_QEMU();
	qcow2_roundtrip("v3.qcow2", "", 8 << 20, 300, 200 << 10, false);
	qcow2_roundtrip("v2.qcow2", "-o compat=0.10", 8 << 20, 300, 200 << 10, false);
	qcow2_roundtrip("c4k.qcow2", "-o cluster_size=4096", 4 << 20, 300, 16 << 10, false);
	qcow2_roundtrip("rc1.qcow2", "-o cluster_size=512,refcount_bits=1", 1 << 20, 300, 4 << 10,
			false);
	qcow2_roundtrip("rc2.qcow2", "-o cluster_size=1024,refcount_bits=2", 1 << 20, 200, 8 << 10,
			false);
	qcow2_roundtrip("rc8.qcow2", "-o cluster_size=2048,refcount_bits=8", 2 << 20, 200, 8 << 10,
			false);
	qcow2_roundtrip("rc64.qcow2", "-o cluster_size=1024,refcount_bits=64", 2 << 20, 200,
			8 << 10, false);
	qcow2_roundtrip("c2m.qcow2", "-o cluster_size=2M", 8 << 20, 60, 3 << 20, false);
}

static void test_qcow2_discard_zeroes(void **state)
{
	(void)state;
	NEED_QEMU();
	qcow2_roundtrip("z3.qcow2", "", 8 << 20, 400, 300 << 10, true);
	qcow2_roundtrip("z2.qcow2", "-o compat=0.10", 8 << 20, 300, 300 << 10, true);
	qcow2_roundtrip("z4k.qcow2", "-o cluster_size=4096", 2 << 20, 400, 20 << 10, true);

	/* Discarding everything gives the host space back. */
	char p[256];
	const uint64_t size = 8 << 20;
	pathf(p, sizeof(p), "punch.qcow2");
	assert_int_equal(sh("qemu-img create -f qcow2 '%s' 8M", p), 0);
	uint8_t *shadow = calloc(1, size);
	assert_non_null(shadow);
	struct block *b = must_open(p, BLOCK_QCOW2, false);
	op_write(b, shadow, 0, size);
	assert_int_equal(block_flush(b), 0);
	struct stat st0, st1;
	assert_int_equal(stat(p, &st0), 0);
	op_zero(b, shadow, 0, size, 0);
	assert_int_equal(block_flush(b), 0);
	assert_int_equal(stat(p, &st1), 0);
	assert_true(st1.st_blocks < st0.st_blocks / 4);
	/* The freed clusters are reused: writing it all again does not grow the file. */
	op_write(b, shadow, 0, size);
	block_close(b);
	assert_int_equal(stat(p, &st1), 0);
	assert_true(st1.st_size <= st0.st_size);
	assert_int_equal(qemu_check(p), 0);
	assert_image_is(p, shadow, size, "");
	free(shadow);
}

/* Small clusters and 64-bit refcounts: the refcount table has to grow (more than once). */
static void test_qcow2_refcount_growth(void **state)
{
	(void)state;
	NEED_QEMU();
	const char *opts[] = {"-o cluster_size=512,refcount_bits=64",
			      "-o cluster_size=512,refcount_bits=16"};
	for (unsigned k = 0; k < 2; k++) {
		char p[256];
		const uint64_t size = k == 0 ? 6 << 20 : 12 << 20;
		pathf(p, sizeof(p), "grow.qcow2");
		assert_int_equal(sh("qemu-img create -f qcow2 %s '%s' %llu", opts[k], p,
				    (unsigned long long)size),
				 0);
		uint8_t *shadow = calloc(1, size);
		assert_non_null(shadow);
		struct block *b = must_open(p, BLOCK_QCOW2, false);
		for (uint64_t off = 0; off < size; off += 256 << 10) {
			op_write(b, shadow, off, 256 << 10);
			if (rnd_below(4) == 0)
				assert_int_equal(block_flush(b), 0);
		}
		random_ops(b, shadow, size, 100, 8 << 10, true);
		block_close(b);

		size_t n;
		uint8_t *d = slurp(p, &n);
		uint32_t reft_clusters = get32(d + 56);
		free(d);
		assert_true(reft_clusters > 1);
		if (qemu_check(p) != 0)
			fail_msg("qemu-img check after refcount table growth (%s)", opts[k]);
		assert_image_is(p, shadow, size, "");
		free(shadow);
	}
}

/* ---- qcow2 written by QEMU ------------------------------------------------------------------ */

static void test_qcow2_qemu_written(void **state)
{
	(void)state;
	NEED_QEMU();
	char p[256];
	const uint64_t size = 4 << 20;
	pathf(p, sizeof(p), "qio.qcow2");
	assert_int_equal(sh("qemu-img create -f qcow2 '%s' 4M", p), 0);
	assert_int_equal(sh("qemu-io -c 'write -P 0xab 0 64k' -c 'write -P 0xcd 100k 12k' "
			    "-c 'write -P 0x11 1M 256k' -c 'write -z 1088k 64k' "
			    "-c 'write -P 0x22 4032k 64k' '%s'",
			    p),
			 0);
	uint8_t *want = calloc(1, size);
	assert_non_null(want);
	memset(want, 0xab, 64 << 10);
	memset(want + (100 << 10), 0xcd, 12 << 10);
	memset(want + (1 << 20), 0x11, 256 << 10);
	memset(want + (1088 << 10), 0, 64 << 10);
	memset(want + (4032 << 10), 0x22, 64 << 10);
	struct block *b = must_open(p, BLOCK_QCOW2, true);
	op_check(b, want, 0, size);
	assert_int_equal(block_writev(b, 0, &(struct iovec){want, 512}, 1), -EROFS);
	block_close(b);

	/* Then ferry writes into it and QEMU reads it. */
	b = must_open(p, BLOCK_QCOW2, false);
	random_ops(b, want, size, 150, 100 << 10, true);
	block_close(b);
	assert_int_equal(qemu_check(p), 0);
	assert_image_is(p, want, size, "");
	free(want);
}

static void test_qcow2_compressed(void **state)
{
	(void)state;
	NEED_QEMU();
	char raw[256], p[256];
	const uint64_t size = 3 << 20;
	pathf(raw, sizeof(raw), "comp.src");
	pathf(p, sizeof(p), "comp.qcow2");
	uint8_t *shadow = malloc(size);
	assert_non_null(shadow);
	for (uint64_t i = 0; i < size; i++) /* compressible, but not trivially */
		shadow[i] = (uint8_t)((i / 3) ^ (i >> 12));
	memset(shadow + (1 << 20), 0, 300 << 10);
	spit(raw, shadow, size);
	assert_int_equal(sh("qemu-img convert -c -O qcow2 -o cluster_size=16k '%s' '%s'", raw, p),
			 0);
	struct block *b = must_open(p, BLOCK_QCOW2, true);
	op_check(b, shadow, 0, size);
	block_close(b);

	b = must_open(p, BLOCK_QCOW2, false);
	random_ops(b, shadow, size, 250, 40 << 10, true);
	block_close(b);
	assert_int_equal(qemu_check(p), 0);
	assert_image_is(p, shadow, size, "");
	free(shadow);
}

static void test_qcow2_backing(void **state)
{
	(void)state;
	NEED_QEMU();
	char base[256], mid[256], top[256], rawb[256], ovr[256];
	const uint64_t size = 5 << 20;
	pathf(base, sizeof(base), "base.qcow2");
	pathf(mid, sizeof(mid), "mid.qcow2");
	pathf(top, sizeof(top), "top.qcow2");
	assert_int_equal(sh("qemu-img create -f qcow2 -o cluster_size=4k '%s' 3M", base), 0);
	assert_int_equal(
	    sh("qemu-io -c 'write -P 0x41 0 1M' -c 'write -P 0x42 2050k 900k' '%s'", base), 0);
	/* Relative backing names, resolved from the image's own directory. */
	assert_int_equal(sh("cd '%s' && qemu-img create -f qcow2 -b base.qcow2 -F qcow2 "
			    "mid.qcow2 4M && qemu-io -c 'write -P 0x43 512k 64k' mid.qcow2 && "
			    "qemu-img create -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 5M",
			    tmpdir),
			 0);
	uint8_t *shadow = calloc(1, size);
	assert_non_null(shadow);
	memset(shadow, 0x41, 1 << 20);
	memset(shadow + (2050 << 10), 0x42, 900 << 10);
	memset(shadow + (512 << 10), 0x43, 64 << 10);
	assert_image_is(top, shadow, size, "");

	size_t n0, n1;
	uint8_t *base0 = slurp(base, &n0);
	struct block *b = must_open(top, BLOCK_QCOW2, false);
	assert_int_equal(block_size(b), size);
	op_check(b, shadow, 0, size);
	random_ops(b, shadow, size, 300, 20 << 10, true);
	block_close(b);
	uint8_t *base1 = slurp(base, &n1);
	assert_int_equal(n0, n1);
	assert_same(base1, base0, n0, "backing file after writes to the overlay");
	free(base0);
	free(base1);
	assert_int_equal(qemu_check(top), 0);
	assert_int_equal(qemu_check(mid), 0);
	assert_image_is(top, shadow, size, "");

	/* A raw backing file of an odd length; v2 overlay (no zero flag). */
	pathf(rawb, sizeof(rawb), "back.raw");
	pathf(ovr, sizeof(ovr), "ovr.qcow2");
	const uint64_t rlen = (1 << 20) + 100;
	uint8_t *r = malloc(rlen);
	assert_non_null(r);
	for (uint64_t i = 0; i < rlen; i++)
		r[i] = (uint8_t)(i * 13 + 1);
	spit(rawb, r, rlen);
	assert_int_equal(sh("cd '%s' && qemu-img create -f qcow2 -o compat=0.10 -b back.raw -F "
			    "raw ovr.qcow2 2M",
			    tmpdir),
			 0);
	memset(shadow, 0, size);
	memcpy(shadow, r, rlen);
	b = must_open(ovr, BLOCK_QCOW2, false);
	op_check(b, shadow, 0, 2 << 20);
	random_ops(b, shadow, 2 << 20, 200, 80 << 10, true);
	block_close(b);
	assert_int_equal(qemu_check(ovr), 0);
	assert_image_is(ovr, shadow, 2 << 20, "");
	uint8_t *r1 = slurp(rawb, &n1);
	assert_int_equal(n1, rlen);
	assert_same(r1, r, rlen, "raw backing file");
	free(r1);
	free(r);
	free(shadow);
}

static void test_qcow2_snapshot(void **state)
{
	(void)state;
	NEED_QEMU();
	char p[256];
	const uint64_t size = 2 << 20;
	pathf(p, sizeof(p), "snap.qcow2");
	assert_int_equal(sh("qemu-img create -f qcow2 -o cluster_size=4k '%s' 2M && qemu-io -c "
			    "'write -P 0x77 0 1536k' '%s' && qemu-img snapshot -c s1 '%s'",
			    p, p, p),
			 0);
	uint8_t *orig = calloc(1, size), *shadow = calloc(1, size);
	assert_non_null(orig);
	assert_non_null(shadow);
	memset(orig, 0x77, 1536 << 10);
	memcpy(shadow, orig, size);
	struct block *b = must_open(p, BLOCK_QCOW2, false);
	random_ops(b, shadow, size, 200, 24 << 10, true);
	block_close(b);
	assert_int_equal(qemu_check(p), 0);
	assert_image_is(p, shadow, size, "");
	assert_image_is(p, orig, size, "-l snapshot.name=s1");
	free(orig);
	free(shadow);
}

/* ---- malformed images ----------------------------------------------------------------------- */

enum mut {
	M_MAGIC,
	M_VERSION1,
	M_HUGE_L1,
	M_L1_PAST_END,
	M_CLUSTER_BITS30,
	M_CRYPT,
	M_UNKNOWN_INCOMPAT,
	M_DIRTY,
	M_CORRUPT,
	M_DATA_FILE,
	M_EXTL2,
	M_ZSTD,
	M_RC_ORDER,
	M_HDR_LEN,
	M_ODD_SIZE,
	M_REFT_PAST_END,
	M_SMALL_L1,
	M_TRUNCATED,
	M_NMUT
};

static void mutate(uint8_t *d, size_t *len, enum mut m)
{
	switch (m) {
	case M_MAGIC:
		d[0] = 'X';
		break;
	case M_VERSION1:
		put32(d + 4, 1);
		break;
	case M_HUGE_L1:
		put32(d + 36, 0x10000000);
		break;
	case M_L1_PAST_END:
		put64(d + 40, 0x7fff0000);
		break;
	case M_CLUSTER_BITS30:
		put32(d + 20, 30);
		break;
	case M_CRYPT:
		put32(d + 32, 1);
		break;
	case M_UNKNOWN_INCOMPAT:
		put64(d + 72, 1ull << 10);
		break;
	case M_DIRTY:
		put64(d + 72, 1);
		break;
	case M_CORRUPT:
		put64(d + 72, 2);
		break;
	case M_DATA_FILE:
		put64(d + 72, 4);
		break;
	case M_EXTL2:
		put64(d + 72, 16);
		break;
	case M_ZSTD:
		put64(d + 72, 8);
		d[104] = 1;
		break;
	case M_RC_ORDER:
		put32(d + 96, 7);
		break;
	case M_HDR_LEN:
		put32(d + 100, 105);
		break;
	case M_ODD_SIZE:
		put64(d + 24, (1 << 20) + 100);
		break;
	case M_REFT_PAST_END:
		put64(d + 48, 0x40000000);
		break;
	case M_SMALL_L1:
		put64(d + 24, 1ull << 40);
		break;
	case M_TRUNCATED:
		*len = 50;
		break;
	case M_NMUT:
		break;
	}
}

static const char *const mut_msg[M_NMUT] = {
    "bad magic",          "version 1",     "L1 table too large", "L1 table offset",
    "cluster_bits 30",    "encrypted",     "incompatible",       "qemu-img check -r all",
    "marked corrupt",     "external data", "extended L2",        "compression type 1",
    "refcount order",     "header length", "virtual size",       "refcount table offset",
    "L1 table too small", "too small",
};

static void test_qcow2_malformed(void **state)
{
	(void)state;
	NEED_QEMU();
	char good[256], bad[256], err[512];
	size_t len;
	pathf(good, sizeof(good), "good.qcow2");
	pathf(bad, sizeof(bad), "bad.qcow2");
	assert_int_equal(sh("qemu-img create -f qcow2 '%s' 1M", good), 0);
	uint8_t *img = slurp(good, &len);
	assert_int_equal(get32(img + 100), 112); /* the v3 header these mutations assume */
	for (int m = 0; m < M_NMUT; m++) {
		uint8_t *d = malloc(len);
		size_t l = len;
		assert_non_null(d);
		memcpy(d, img, len);
		mutate(d, &l, (enum mut)m);
		spit(bad, d, l);
		free(d);
		for (int ro = 0; ro < 2; ro++) {
			err[0] = 0;
			struct block *b = block_open(bad, BLOCK_QCOW2, ro, err, sizeof(err));
			if (b)
				fail_msg("mutation %d (%s) was accepted", m, mut_msg[m]);
			if (!strstr(err, mut_msg[m]))
				fail_msg("mutation %d: message '%s' lacks '%s'", m, err,
					 mut_msg[m]);
		}
	}
	free(img);

	/* A raw image is not a qcow2 image; backing files that are not there, of a format ferry
	 * does not read, or that loop. */
	pathf(bad, sizeof(bad), "plain.raw");
	make_file(bad, 1 << 20);
	assert_null(block_open(bad, BLOCK_QCOW2, true, err, sizeof(err)));
	assert_non_null(strstr(err, "not a qcow2 image"));
	assert_int_equal(sh("cd '%s' && qemu-img create -f qcow2 -u -b nothere.qcow2 -F qcow2 "
			    "nob.qcow2 1M && qemu-img create -f qcow2 -u -b plain.raw -F vmdk "
			    "vmdk.qcow2 1M && qemu-img create -f qcow2 loop.qcow2 1M && qemu-img "
			    "rebase -u -b loop.qcow2 -F qcow2 loop.qcow2",
			    tmpdir),
			 0);
	pathf(bad, sizeof(bad), "nob.qcow2");
	assert_null(block_open(bad, BLOCK_QCOW2, true, err, sizeof(err)));
	assert_non_null(strstr(err, "nothere.qcow2"));
	pathf(bad, sizeof(bad), "vmdk.qcow2");
	assert_null(block_open(bad, BLOCK_QCOW2, false, err, sizeof(err)));
	assert_non_null(strstr(err, "'vmdk'"));
	pathf(bad, sizeof(bad), "loop.qcow2");
	assert_null(block_open(bad, BLOCK_QCOW2, true, err, sizeof(err)));
	assert_non_null(strstr(err, "backing chain"));
	assert_null(block_open(bad, BLOCK_QCOW2, false, err, sizeof(err)));
	assert_non_null(strstr(err, "in use"));
}

/* Random bytes of the header, the L1 table, an L2 table and the refcount structures
 * corrupted, then requests: errors are fine, crashes (ASan) are not. */
static void test_qcow2_fuzz(void **state)
{
	(void)state;
	NEED_QEMU();
	char good[256], p[256], raw[256];
	size_t len;
	const uint64_t size = 1 << 20;
	pathf(raw, sizeof(raw), "fz.src");
	pathf(good, sizeof(good), "fz-good.qcow2");
	pathf(p, sizeof(p), "fz.qcow2");
	uint8_t *data = malloc(size);
	assert_non_null(data);
	for (uint64_t i = 0; i < size; i++)
		data[i] = (uint8_t)(i >> 10);
	spit(raw, data, size);
	assert_int_equal(sh("qemu-img convert -c -O qcow2 -o cluster_size=4k '%s' '%s' && qemu-io "
			    "-c 'write -P 0x5 64k 128k' -c 'write -z 512k 64k' '%s'",
			    raw, good, good),
			 0);
	free(data);
	uint8_t *img = slurp(good, &len);
	uint64_t l1 = get64(img + 40), reft = get64(img + 48);
	assert_true(l1 + 8 <= len && reft + 8 <= len);
	uint64_t l2 = get64(img + l1) & 0x00fffffffffffe00ull;
	uint64_t rb = get64(img + reft) & ~0x1ffull;
	assert_true(l2 && l2 + 4096 <= len && rb && rb + 4096 <= len);
	const uint64_t regions[][2] = {{0, 112}, {l1, 64}, {l2, 4096}, {reft, 64}, {rb, 4096}};

	/* Corruption messages would flood the test output (BLOCK_FUZZ_VERBOSE=1 keeps them, and
	 * any sanitizer report); BLOCK_FUZZ_ITERS=n runs longer. */
	const char *iters_env = getenv("BLOCK_FUZZ_ITERS");
	const char *verbose = getenv("BLOCK_FUZZ_VERBOSE");
	int iters = iters_env ? atoi(iters_env) : 400;
	fflush(stderr);
	int saved = dup(2), null = open("/dev/null", O_WRONLY);
	assert_true(saved >= 0 && null >= 0);
	if (!verbose)
		dup2(null, 2);
	uint8_t *d = malloc(len), *buf = malloc(64 << 10);
	assert_non_null(d);
	assert_non_null(buf);
	unsigned opened = 0;
	for (int it = 0; it < iters; it++) {
		memcpy(d, img, len);
		int nflips = 1 + (int)rnd_below(6);
		for (int f = 0; f < nflips; f++) {
			const uint64_t *r = regions[rnd_below(5)];
			uint64_t at = r[0] + rnd_below(r[1]);
			if (rnd_below(3) == 0)
				d[at] ^= (uint8_t)(1u << rnd_below(8));
			else
				d[at] = (uint8_t)rnd();
		}
		spit(p, d, len);
		char err[512];
		bool ro = rnd_below(4) == 0;
		struct block *b = block_open(p, BLOCK_QCOW2, ro, err, sizeof(err));
		if (!b) {
			if (!err[0])
				fail_msg("refused without a message");
			continue;
		}
		opened++;
		uint64_t bs = block_size(b);
		for (int op = 0; op < 12 && bs >= 512; op++) {
			uint64_t off, l;
			rnd_range(bs, 64 << 10, &off, &l);
			struct iovec v = {buf, l};
			switch (rnd_below(5)) {
			case 0:
			case 1:
				block_readv(b, off, &v, 1);
				break;
			case 2:
				memset(buf, 0x3c, l);
				block_writev(b, off, &v, 1);
				break;
			case 3:
				block_write_zeroes(b, off, l, rnd_below(2));
				break;
			default:
				block_flush(b);
				break;
			}
		}
		block_close(b);
	}
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	close(null);
	assert_true(opened > (unsigned)iters / 8);
	free(d);
	free(buf);
	free(img);
}

/* A process that dies between requests (after a flush, and with writes after it) leaves an
 * image with no errors: at worst leaked clusters. */
static void test_qcow2_crash(void **state)
{
	(void)state;
	NEED_QEMU();
	const char *opts[] = {"-o cluster_size=512", "-o cluster_size=4k",
			      "-o cluster_size=4k,compat=0.10"};
	for (unsigned k = 0; k < 3; k++) {
		char p[256];
		/* With 512-byte clusters both metadata caches overflow and write back early. */
		const uint64_t size = k == 0 ? 16 << 20 : 4 << 20;
		pathf(p, sizeof(p), "crash.qcow2");
		assert_int_equal(sh("qemu-img create -f qcow2 %s '%s' %llu", opts[k], p,
				    (unsigned long long)size),
				 0);
		uint64_t seed = rnd();
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			char err[512];
			uint8_t *buf = malloc(256 << 10);
			struct block *b = block_open(p, BLOCK_QCOW2, false, err, sizeof(err));
			if (!b || !buf)
				_exit(10);
			rng = seed;
			memset(buf, 0x6b, 256 << 10);
			for (int i = 0; i < 600; i++) {
				uint64_t off, l;
				rnd_range(size, 256 << 10, &off, &l);
				struct iovec v = {buf, l};
				int r = 0;
				switch (rnd_below(6)) {
				case 0:
					r = block_discard(b, off, l);
					break;
				case 1:
					r = block_write_zeroes(b, off, l, false);
					break;
				case 2:
					r = i < 300 ? block_flush(b) : 0;
					break;
				default:
					r = block_writev(b, off, &v, 1);
					break;
				}
				if (r < 0)
					_exit(11);
			}
			_exit(0); /* no close: the metadata since the last flush is lost */
		}
		int st;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
		int c = qemu_check(p);
		if (c != 0 && c != 3)
			fail_msg("qemu-img check after a crash (%s): status %d", opts[k], c);
		/* Repaired, it opens and reads again. */
		assert_int_equal(sh("qemu-img check -r leaks '%s'", p), 0);
		struct block *b = must_open(p, BLOCK_QCOW2, false);
		uint8_t *buf = malloc(size);
		assert_non_null(buf);
		assert_int_equal(block_readv(b, 0, &(struct iovec){buf, size}, 1), 0);
		free(buf);
		block_close(b);
	}
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int group_setup(void **state)
{
	(void)state;
	const char *t = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/ferry-block-XXXXXX", t && *t ? t : "/tmp");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	return nftw(tmpdir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_raw_rw),
	    cmocka_unit_test(test_raw_zeroes),
	    cmocka_unit_test(test_raw_zeroes_tmpfs),
	    cmocka_unit_test(test_raw_readonly_and_locks),
	    cmocka_unit_test(test_raw_bad_files),
	    cmocka_unit_test(test_qcow2_random_writes),
	    cmocka_unit_test(test_qcow2_discard_zeroes),
	    cmocka_unit_test(test_qcow2_refcount_growth),
	    cmocka_unit_test(test_qcow2_qemu_written),
	    cmocka_unit_test(test_qcow2_compressed),
	    cmocka_unit_test(test_qcow2_backing),
	    cmocka_unit_test(test_qcow2_snapshot),
	    cmocka_unit_test(test_qcow2_malformed),
	    cmocka_unit_test(test_qcow2_fuzz),
	    cmocka_unit_test(test_qcow2_crash),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
