/* libFuzzer target for the qcow2 backend (src/backend/qcow2.c through block.h): the input is a
 * qcow2 image file, as untrusted as a guest's disk image is, plus a few requests to run on it.
 * A malformed image must be refused at open with a message or fail requests with -EIO (or
 * -ENOSPC, -EFBIG, -ENOMEM); a read-only one must refuse every change with -EROFS; an image
 * that opened must open again after close. ASan/UBSan catch the rest, libFuzzer's -timeout the
 * hangs and -rss_limit_mb runaway allocation.
 *
 * Input layout, from the end:
 *   last byte     bit 0 open read-only; bits 2-7 the number of requests n (0-63)
 *   6n bytes      the requests (see run_op), first to last
 *   the rest      the image file
 *
 * The image is written to "img" in a fresh mkdtemp directory (on /dev/shm when there is one)
 * that also holds b.raw and b.qcow2 (whose backing file is b.raw), so that backing chains are
 * exercised. ferry resolves a relative backing file name against the image's directory (so the
 * harness need not chdir there, which would break libFuzzer's relative corpus paths); a '/' in
 * the name the image gives is replaced by '_' before the image is written, so an input can only
 * name files in that directory, never escape it (a FIFO or a device elsewhere would hang or have
 * side effects). Work per input is bounded: at most 63 requests, 4 MiB read or written and
 * 16 MiB zeroed in all.
 *
 * FUZZ_QCOW2_DEBUG=1 prints the open error and each request's result. FUZZ_QCOW2_VERIFY=1 also
 * checks that reads return what earlier writes and zeroings of this input left (until a request
 * fails). That is off by default because a malformed image may alias two guest clusters to one
 * host cluster, or a table to data, and then a mismatch needs looking at by hand;
 * FUZZ_QCOW2_VERIFY=clean checks only images that `qemu-img check` finds consistent (slower: a
 * qemu-img run or two per input), where any mismatch is a bug, and also that they are still
 * consistent after ferry wrote them.
 *
 * Built with -DFUZZ_SEED_MAIN instead, this file is the seed generator: `gen DIR [IMAGE...]`
 * writes images it builds itself (versions 2 and 3, cluster sizes 512 to 64 KiB, refcount
 * widths 1 to 64 bits, with and without backing files) and each IMAGE given (those the Makefile
 * makes with qemu-img), each with a read-write and a read-only request trailer, into DIR. */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/block.h"

#define OP_LEN       6
#define MAX_OPS      63
#define IO_BUDGET    (4ull << 20)
#define ZERO_BUDGET  (16ull << 20)
#define MAX_PIECES   16
#define MAX_BACKNAME 1023u

/* ---- qcow2 image building (the harness's b.qcow2 and the seeds) ------------------------------ */

struct img_spec {
	unsigned version, cb, rc_order;
	uint64_t size;       /* virtual size; at least 4 clusters */
	const char *backing; /* NULL: none */
	const char *backing_fmt;
};

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void set_refcount(uint8_t *blk, unsigned order, uint64_t i, uint64_t v)
{
	if (order >= 3) {
		unsigned bytes = 1u << (order - 3);
		for (unsigned k = bytes; k-- > 0; v >>= 8)
			blk[i * bytes + k] = (uint8_t)v;
		return;
	}
	unsigned bits = 1u << order, per = 8 / bits;
	blk[i / per] |= (uint8_t)(v << (i % per * bits));
}

/* A consistent image (`qemu-img check` finds it clean): header, refcount table, one refcount
 * block, the L1 table, one L2 table, and data in guest clusters 0 and 2 (and, in version 3,
 * guest cluster 3 reads as zeroes through the zero flag). Returns its length, or 0 if it does not
 * fit in cap bytes. */
static size_t build_qcow2(uint8_t *buf, size_t cap, const struct img_spec *s)
{
	uint64_t cs = 1ull << s->cb, span = cs * (cs / 8);
	uint64_t l1_size = (s->size + span - 1) / span;
	uint64_t l1_clusters = (l1_size * 8 + cs - 1) / cs;
	uint64_t reft = 1, refblk = 2, l1 = 3, l2 = l1 + l1_clusters, d0 = l2 + 1, d1 = d0 + 1;
	uint64_t n = d1 + 1;
	if (n * cs > cap || n > cs * 8 >> s->rc_order || s->size < 4 * cs)
		return 0;
	memset(buf, 0, n * cs);

	unsigned hlen = s->version >= 3 ? 104 : 72;
	put32(buf, 0x514649fbu);
	put32(buf + 4, s->version);
	put32(buf + 20, s->cb);
	put64(buf + 24, s->size);
	put32(buf + 36, (uint32_t)l1_size);
	put64(buf + 40, l1 * cs);
	put64(buf + 48, reft * cs);
	put32(buf + 56, 1);
	if (s->version >= 3) {
		put32(buf + 96, s->rc_order);
		put32(buf + 100, hlen);
	}
	uint64_t pos = hlen;
	if (s->backing_fmt) {
		size_t len = strlen(s->backing_fmt);
		put32(buf + pos, 0xe2792acau);
		put32(buf + pos + 4, (uint32_t)len);
		memcpy(buf + pos + 8, s->backing_fmt, len);
		pos += 8 + ((len + 7) & ~(size_t)7);
	}
	pos += 8; /* the end-of-extensions marker: zeroes */
	if (s->backing) {
		size_t len = strlen(s->backing);
		put64(buf + 8, pos);
		put32(buf + 16, (uint32_t)len);
		memcpy(buf + pos, s->backing, len);
	}

	put64(buf + reft * cs, refblk * cs);
	for (uint64_t i = 0; i < n; i++)
		set_refcount(buf + refblk * cs, s->rc_order, i, 1);
	const uint64_t copied = 1ull << 63;
	put64(buf + l1 * cs, l2 * cs | copied);
	put64(buf + l2 * cs, d0 * cs | copied);
	put64(buf + l2 * cs + 16, d1 * cs | copied);
	if (s->version >= 3)
		put64(buf + l2 * cs + 24, 1); /* the zero flag, over the backing file's data */
	for (uint64_t i = 0; i < 2 * cs; i++)
		buf[d0 * cs + i] = (uint8_t)(i * 7 + (i >> 9) + 1);
	return n * cs;
}

#ifndef FUZZ_SEED_MAIN

static char dir[PATH_MAX];          /* the mkdtemp directory */
static char img_path[PATH_MAX + 8]; /* dir/img: the image under test */
static int img_fd = -1;             /* the harness's own descriptor for writing it */
static int debug;
static enum { VERIFY_OFF, VERIFY_ALL, VERIFY_CLEAN } verify;
static uint8_t flat[IO_BUDGET]; /* one request's data, contiguous */

/* Request kinds (byte 0 of a request, modulo OP_KINDS). */
enum { OP_READ, OP_WRITE, OP_ZERO, OP_DISCARD, OP_FLUSH, OP_REOPEN, OP_KINDS };

static void write_file(const char *name, const void *data, size_t len)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len || close(fd) != 0) {
		perror(path);
		abort();
	}
}

static const char *const dir_files[] = {"img", "b.raw", "b.qcow2"};

/* Removes a directory of ours: only the files the harness makes, so rmdir fails (and the
 * directory stays) if anything else is in it. */
static void remove_dir(const char *d)
{
	char path[PATH_MAX];
	for (size_t i = 0; i < sizeof(dir_files) / sizeof(dir_files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", d, dir_files[i]);
		unlink(path);
	}
	rmdir(d);
}

static void cleanup(void)
{
	if (img_fd >= 0)
		close(img_fd);
	remove_dir(dir);
}

/* A run that crashed exits without cleanup(): its directory, named after its process id, is
 * removed by a later run once that process is gone. */
static void remove_stale_dirs(const char *base)
{
	DIR *d = opendir(base);
	struct dirent *de;
	char path[PATH_MAX];
	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		int pid, n = 0;
		if (sscanf(de->d_name, "ferry-fuzz-qcow2-%d-%*6c%n", &pid, &n) != 1 || n == 0 ||
		    de->d_name[n] || pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(path, sizeof(path), "%s/%s", base, de->d_name);
		remove_dir(path);
	}
	closedir(d);
}

static void init_once(void)
{
	debug = getenv("FUZZ_QCOW2_DEBUG") != NULL;
	const char *v = getenv("FUZZ_QCOW2_VERIFY");
	verify = !v ? VERIFY_OFF : !strcmp(v, "clean") ? VERIFY_CLEAN : VERIFY_ALL;
	struct stat st;
	const char *base = getenv("TMPDIR");
	if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
		base = "/dev/shm";
	else if (!base || !*base)
		base = "/tmp";
	remove_stale_dirs(base);
	if ((size_t)snprintf(dir, sizeof(dir), "%s/ferry-fuzz-qcow2-%d-XXXXXX", base,
			     (int)getpid()) >= sizeof(dir) ||
	    !mkdtemp(dir)) {
		perror("fuzz_qcow2: mkdtemp");
		abort();
	}
	atexit(cleanup);

	/* b.raw: 1 MiB less a sector, so reads through it run past its end; b.qcow2 over it. */
	static uint8_t raw[(1u << 20) - 512], q[64 << 10];
	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = (uint8_t)(i ^ i >> 9 ^ 0x5a);
	write_file("b.raw", raw, sizeof(raw));
	struct img_spec s = {.version = 3,
			     .cb = 9,
			     .rc_order = 4,
			     .size = 2u << 20,
			     .backing = "b.raw",
			     .backing_fmt = "raw"};
	size_t len = build_qcow2(q, sizeof(q), &s);
	if (!len)
		abort();
	write_file("b.qcow2", q, len);

	snprintf(img_path, sizeof(img_path), "%s/img", dir);
	img_fd = open(img_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (img_fd < 0) {
		perror(img_path);
		abort();
	}
}

static uint64_t be(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* The byte range ferry would take as the backing file name, if any: the header's name offset and
 * length, within the image (ferry refuses the image otherwise). */
static bool backing_name(const uint8_t *img, size_t len, size_t *off, size_t *n)
{
	if (len < 20)
		return false;
	uint64_t o = be(img + 8, 8), l = be(img + 16, 4);
	if (!o || !l || l > MAX_BACKNAME || o >= len || l > len - o)
		return false;
	*off = (size_t)o;
	*n = (size_t)l;
	return true;
}

static void put_image(const uint8_t *data, size_t len)
{
	static uint8_t *copy;
	static size_t copy_cap;
	if (!copy || len > copy_cap) {
		free(copy);
		copy = malloc(len ? len : 1);
		if (!copy)
			abort();
		copy_cap = len;
	}
	memcpy(copy, data, len);
	size_t off, n;
	if (backing_name(copy, len, &off, &n))
		for (size_t i = off; i < off + n; i++)
			if (copy[i] == '/')
				copy[i] = '_';
	if (ftruncate(img_fd, 0) != 0 || pwrite(img_fd, copy, len, 0) != (ssize_t)len)
		abort();
}

/* Whether the image file as it is now still names only files in dir (ferry writes the header
 * only to move the refcount table, but nothing is taken on trust before a reopen). */
static bool header_still_safe(void)
{
	uint8_t h[20];
	size_t off, n;
	char name[MAX_BACKNAME];
	if (pread(img_fd, h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return true; /* too short to be opened at all */
	struct stat st;
	if (fstat(img_fd, &st) != 0)
		return false;
	uint64_t o = be(h + 8, 8), l = be(h + 16, 4);
	if (!o || !l || l > MAX_BACKNAME || o >= (uint64_t)st.st_size ||
	    l > (uint64_t)st.st_size - o)
		return true;
	off = (size_t)o;
	n = (size_t)l;
	if (pread(img_fd, name, n, (off_t)off) != (ssize_t)n)
		return false;
	return !memchr(name, '/', n);
}

/* Whether `qemu-img check` finds the image as written consistent (leaked clusters allowed):
 * only then must reads return what was written (FUZZ_QCOW2_VERIFY=clean). The backing chain is
 * left out (qemu-img spins on an image that is its own backing file) and a check that takes
 * over 5 s is killed. */
static bool qemu_finds_clean(void)
{
	char spec[PATH_MAX + 128];
	snprintf(spec, sizeof(spec),
		 "json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"%s\"},"
		 "\"backing\":null}",
		 img_path);
	char *argv[] = {"timeout", "-s", "KILL", "5", "qemu-img", "check", "-q", spec, NULL};
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int st;
	if (posix_spawn_file_actions_init(&fa) != 0 ||
	    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0) != 0 ||
	    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0) != 0)
		abort();
	int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0) {
		fprintf(stderr, "fuzz_qcow2: cannot run timeout/qemu-img: %s\n", strerror(r));
		abort();
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			abort();
	return WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 3);
}

/* ---- what the disk should read as (FUZZ_QCOW2_VERIFY) ---------------------------------------- */

struct extent {
	uint64_t off, len;
	uint8_t seed;
	bool zero;
};

struct run {
	struct block *b;
	bool ro;
	bool known; /* verifying, and no request failed yet */
	uint64_t size, io_left, zero_left;
	struct extent ext[MAX_OPS];
	unsigned next;
};

/* The harness's own loops over request data stay out of the coverage feedback (it would only
 * slow them down and measure nothing of ferry's). */
#ifdef __clang__
#define NO_COVERAGE __attribute__((no_sanitize("coverage")))
#else
#define NO_COVERAGE
#endif

/* What a write with this seed puts in disk bytes [x, x+n) (x and n multiples of 8): every
 * 8-byte word differs from every other, so data put in the wrong place shows. */
NO_COVERAGE static void fill_pattern(uint8_t *p, uint64_t x, uint64_t n, uint8_t seed)
{
	for (uint64_t j = 0; j < n; j += 8) {
		uint64_t w =
		    htole64((((x + j) >> 3) ^ (uint64_t)seed << 56) * 0x9e3779b97f4a7c15ull);
		memcpy(p + j, &w, 8);
	}
}

static void record(struct run *rn, uint64_t off, uint64_t len, uint8_t seed, bool zero)
{
	if (rn->next < MAX_OPS)
		rn->ext[rn->next++] = (struct extent){off, len, seed, zero};
}

/* Compares what a read returned with the last write or zeroing of each sector, if any. */
NO_COVERAGE static void check_read(const struct run *rn, uint64_t off, const uint8_t *got,
				   uint64_t len)
{
	uint8_t want[512];
	for (uint64_t s = 0; s < len; s += 512) {
		uint64_t x = off + s;
		const struct extent *e = NULL;
		for (unsigned i = rn->next; i-- > 0;)
			if (x >= rn->ext[i].off && x - rn->ext[i].off < rn->ext[i].len) {
				e = &rn->ext[i];
				break;
			}
		if (!e)
			continue;
		if (e->zero)
			memset(want, 0, sizeof(want));
		else
			fill_pattern(want, x, sizeof(want), e->seed);
		if (!memcmp(got + s, want, sizeof(want)))
			continue;
		unsigned k = 0;
		while (got[s + k] == want[k])
			k++;
		uint64_t at = x + k;
		fprintf(stderr,
			"fuzz_qcow2: disk byte 0x%llx reads 0x%02x; the %s at 0x%llx (+0x%llx) "
			"left 0x%02x\n",
			(unsigned long long)at, got[s + k], e->zero ? "zeroing" : "write",
			(unsigned long long)e->off, (unsigned long long)e->len, want[k]);
		abort();
	}
}

/* ---- requests -------------------------------------------------------------------------------- */

/* Errors a request may end with on a malformed image; anything else is a bug. */
static bool allowed_error(int rc)
{
	return rc == -EIO || rc == -ENOSPC || rc == -ENOMEM || rc == -EFBIG;
}

/* Splits len bytes into `pieces` separately allocated buffers (ASan sees an overrun of any of
 * them) at points taken from a small generator seeded by r. */
static int make_iov(struct iovec *iov, unsigned pieces, uint64_t len, uint32_t r)
{
	uint64_t left = len;
	for (unsigned i = 0; i < pieces; i++) {
		uint64_t k = left;
		if (i + 1 < pieces) {
			r = r * 1103515245u + 12345u;
			/* Mostly small odd sizes, sometimes empty, sometimes half of the rest. */
			k = (r >> 16) % 4 == 0   ? 0
			    : (r >> 16) % 4 == 1 ? left / 2
						 : (r >> 8) % 1500;
			if (k > left)
				k = left;
		}
		iov[i].iov_len = (size_t)k;
		iov[i].iov_base = malloc(k ? k : 1);
		if (!iov[i].iov_base)
			abort();
		left -= k;
	}
	return (int)pieces;
}

static void scatter(const struct iovec *iov, int n, const uint8_t *src)
{
	for (int i = 0; i < n; src += iov[i].iov_len, i++)
		memcpy(iov[i].iov_base, src, iov[i].iov_len);
}

static void gather(uint8_t *dst, const struct iovec *iov, int n)
{
	for (int i = 0; i < n; dst += iov[i].iov_len, i++)
		memcpy(dst, iov[i].iov_base, iov[i].iov_len);
}

static void free_iov(struct iovec *iov, int n)
{
	for (int i = 0; i < n; i++)
		free(iov[i].iov_base);
}

static void reopen(struct run *rn)
{
	char err[512];
	if (!rn->ro && rn->known && block_flush(rn->b) != 0)
		rn->known = false;
	block_close(rn->b);
	rn->b = NULL;
	if (!header_still_safe()) {
		fprintf(stderr, "fuzz_qcow2: ferry wrote a '/' into the backing file name\n");
		abort();
	}
	err[0] = 0;
	rn->b = block_open(img_path, BLOCK_QCOW2, rn->ro, err, sizeof(err));
	if (!rn->b) {
		/* What opened once opens again: only the header's refcount table fields change. */
		fprintf(stderr, "fuzz_qcow2: the image no longer opens after close: %s\n", err);
		abort();
	}
	if (block_size(rn->b) != rn->size || block_readonly(rn->b) != rn->ro)
		abort();
}

/* One request from 6 bytes: kind, flags, offset (24 bits), length.
 *   kind % 6    read, write, write zeroes, discard, flush, close and reopen
 *   flags       bit 0 the offset counts back from the end of the disk; bit 1 the offset is in
 *               units of 4096 sectors; bit 3 write zeroes may unmap; bits 4-7 the number of
 *               buffers less one
 *   length      bits 0-6 sectors less one; bit 7 times 64 */
static void run_op(struct run *rn, const uint8_t *op, unsigned idx)
{
	unsigned kind = op[0] % OP_KINDS, flags = op[1];
	uint64_t nsec = rn->size / 512;
	if (kind == OP_FLUSH) {
		int rc = block_flush(rn->b);
		if (debug)
			fprintf(stderr, "op %u flush: %d\n", idx, rc);
		if (rc && (rn->ro || !allowed_error(rc)))
			abort();
		if (rc)
			rn->known = false;
		return;
	}
	if (kind == OP_REOPEN) {
		if (debug)
			fprintf(stderr, "op %u reopen\n", idx);
		reopen(rn);
		return;
	}
	if (!nsec)
		return;
	uint64_t sec = (uint64_t)op[2] | (uint64_t)op[3] << 8 | (uint64_t)op[4] << 16;
	if (flags & 2)
		sec <<= 12;
	sec %= nsec;
	if (flags & 1)
		sec = nsec - 1 - sec;
	uint64_t cnt = (uint64_t)(op[5] & 0x7f) + 1;
	if (op[5] & 0x80)
		cnt *= 64;
	if (cnt > nsec - sec)
		cnt = nsec - sec;
	uint64_t off = sec * 512, len = cnt * 512;
	uint64_t *left = kind == OP_ZERO || kind == OP_DISCARD ? &rn->zero_left : &rn->io_left;
	if (len > *left)
		len = *left;
	if (!len)
		return;
	*left -= len;

	int rc;
	if (kind == OP_READ || kind == OP_WRITE) {
		struct iovec iov[MAX_PIECES];
		uint8_t seed = (uint8_t)(op[0] ^ op[2] ^ idx);
		int n = make_iov(iov, (flags >> 4) + 1, len, (uint32_t)be(op, 4));
		if (kind == OP_WRITE) {
			fill_pattern(flat, off, len, seed);
			scatter(iov, n, flat);
			rc = block_writev(rn->b, off, iov, n);
		} else {
			rc = block_readv(rn->b, off, iov, n);
		}
		if (kind == OP_READ && rc == 0 && rn->known) {
			gather(flat, iov, n);
			check_read(rn, off, flat, len);
		}
		free_iov(iov, n);
		if (kind == OP_WRITE && rc == 0)
			record(rn, off, len, seed, false);
	} else {
		rc = kind == OP_DISCARD ? block_discard(rn->b, off, len)
					: block_write_zeroes(rn->b, off, len, flags & 8);
		/* ferry makes a discarded range read as zeroes too (block.h). */
		if (rc == 0)
			record(rn, off, len, 0, true);
	}
	if (debug)
		fprintf(stderr, "op %u kind %u off 0x%llx len 0x%llx: %d\n", idx, kind,
			(unsigned long long)off, (unsigned long long)len, rc);
	if (rn->ro && kind != OP_READ) {
		if (rc != -EROFS)
			abort(); /* a read-only disk refuses every change */
		return;
	}
	if (rc && !allowed_error(rc))
		abort();
	if (rc)
		rn->known = false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run rn;
	if (img_fd < 0)
		init_once();
	if (size < 1)
		return 0;
	uint8_t ctl = data[size - 1];
	size_t nops = ctl >> 2;
	if (nops > (size - 1) / OP_LEN)
		nops = (size - 1) / OP_LEN;
	size_t img_len = size - 1 - nops * OP_LEN;
	const uint8_t *ops = data + img_len;
	put_image(data, img_len);

	memset(&rn, 0, sizeof(rn));
	rn.ro = ctl & 1;
	rn.known = verify == VERIFY_ALL || (verify == VERIFY_CLEAN && qemu_finds_clean());
	rn.io_left = IO_BUDGET;
	rn.zero_left = ZERO_BUDGET;
	char err[512];
	err[0] = 0;
	rn.b = block_open(img_path, BLOCK_QCOW2, rn.ro, err, sizeof(err));
	if (!rn.b) {
		if (debug)
			fprintf(stderr, "open: %s\n", err);
		/* A refused image says why: a non-empty, terminated message. */
		if (!err[0] || !memchr(err, 0, sizeof(err)))
			abort();
		return 0;
	}
	rn.size = block_size(rn.b);
	if (debug)
		fprintf(stderr, "open: size 0x%llx%s%s\n", (unsigned long long)rn.size,
			rn.ro ? " read-only" : "", rn.known ? ", verified" : "");
	if (rn.size % 512 || block_readonly(rn.b) != rn.ro)
		abort();
	for (size_t i = 0; i < nops; i++)
		run_op(&rn, ops + OP_LEN * i, (unsigned)i);
	block_close(rn.b);
	/* What ferry wrote to a consistent image, without a failed request, is consistent too. */
	if (verify == VERIFY_CLEAN && rn.known && !rn.ro && !qemu_finds_clean()) {
		fprintf(stderr, "fuzz_qcow2: qemu-img check finds the image inconsistent after "
				"ferry wrote it\n");
		abort();
	}
	return 0;
}

#else /* FUZZ_SEED_MAIN: the seed generator */

static uint8_t buf[2u << 20];

/* A request list touching both ends of the disk, unaligned buffers, zeroing (with and without
 * unmapping), discard, flush and a reopen, with reads in between. */
static const uint8_t trailer_ops[][6] = {
    {1, 0x00, 11, 0, 0, 2},   /* write 3 sectors at sector 11 (inside a cluster) */
    {1, 0x30, 0, 0, 0, 7},    /* write 8 sectors at 0 in 4 buffers */
    {0, 0x20, 0, 0, 0, 15},   /* read them back and more */
    {1, 0x01, 0, 0, 0, 9},    /* write the last 10 sectors */
    {2, 0x08, 16, 0, 0, 63},  /* write zeroes, may unmap */
    {2, 0x00, 130, 0, 0, 1},  /* write zeroes, keep allocated */
    {3, 0x00, 0, 0, 0, 127},  /* discard 64 KiB */
    {0, 0xf0, 0, 0, 0, 0x81}, /* read 64 KiB + in 16 buffers */
    {4, 0, 0, 0, 0, 0},       /* flush */
    {1, 0x02, 1, 0, 0, 3},    /* write at sector 4096 */
    {5, 0, 0, 0, 0, 0},       /* close and reopen */
    {0, 0x11, 0, 0, 0, 0x83}, /* read the last 128 KiB */
    {3, 0x01, 0, 0, 0, 0xff}, /* discard from the end */
    {0, 0x00, 0, 0, 0, 0x87}, /* read 256 KiB from 0 */
};

/* Enough new clusters (4 MiB of 512-byte ones) to outgrow a one-cluster refcount table with
 * 64-bit refcounts (it covers 2 MiB), then a reopen to read the moved table back. */
static const uint8_t grow_ops[][6] = {
    {1, 0x00, 0, 0, 0, 0xff}, /* write 4 MiB at 0 */
    {4, 0, 0, 0, 0, 0},       /* flush */
    {5, 0, 0, 0, 0, 0},       /* close and reopen */
    {2, 0x08, 0, 0, 0, 0xff}, /* write zeroes, may unmap: frees the clusters */
    {4, 0, 0, 0, 0, 0},       /* flush */
    {0, 0x00, 0, 0, 0, 0x83}, /* read 128 KiB */
};

/* Writes buf[0..len) with the requests ops[0..nops) and the control byte as DIR/NAME-rw or -ro. */
static int write_seed(const char *outdir, const char *name, size_t len, bool ro,
		      const uint8_t (*ops)[6], size_t nops)
{
	char path[4096];
	size_t total = len + 6 * nops + 1;
	if (total > sizeof(buf)) {
		fprintf(stderr, "%s: too large for a seed\n", name);
		return -1;
	}
	memcpy(buf + len, ops, 6 * nops);
	buf[total - 1] = (uint8_t)(nops << 2 | (ro ? 1 : 0));
	snprintf(path, sizeof(path), "%s/%s-%s", outdir, name, ro ? "ro" : "rw");
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, total, f) != total || fclose(f) != 0) {
		perror(path);
		return -1;
	}
	return 0;
}

/* The image in buf[0..len) as a read-write and a read-only seed with the usual requests. */
static int write_seeds(const char *outdir, const char *name, size_t len)
{
	const size_t n = sizeof(trailer_ops) / sizeof(trailer_ops[0]);
	if (write_seed(outdir, name, len, false, trailer_ops, n) < 0)
		return -1;
	return write_seed(outdir, name, len, true, trailer_ops, n);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR [IMAGE...]\n", argv[0]);
		return 2;
	}
	static const struct {
		const char *name;
		struct img_spec s;
	} built[] = {
	    {"built-v3-c512", {3, 9, 4, 1u << 20, NULL, NULL}},
	    {"built-v2-c512", {2, 9, 4, 1u << 20, NULL, NULL}},
	    {"built-v3-c4k-r1", {3, 12, 0, 4u << 20, NULL, NULL}},
	    {"built-v3-c512-r64", {3, 9, 6, 1u << 20, NULL, NULL}},
	    {"built-v3-c64k-r8", {3, 16, 3, 8u << 20, NULL, NULL}},
	    {"built-v3-c512-braw", {3, 9, 4, 2u << 20, "b.raw", "raw"}},
	    {"built-v2-c4k-braw", {2, 12, 4, 4u << 20, "b.raw", NULL}},
	    {"built-v3-c512-bqcow2", {3, 9, 2, 4u << 20, "b.qcow2", "qcow2"}},
	    {"built-v3-c512-self", {3, 9, 4, 1u << 20, "img", "qcow2"}},
	};
	for (size_t i = 0; i < sizeof(built) / sizeof(built[0]); i++) {
		size_t len = build_qcow2(buf, sizeof(buf), &built[i].s);
		if (!len) {
			fprintf(stderr, "%s: does not build\n", built[i].name);
			return 1;
		}
		if (write_seeds(argv[1], built[i].name, len) < 0)
			return 1;
	}
	static const struct img_spec grow = {3, 9, 6, 8u << 20, NULL, NULL};
	size_t glen = build_qcow2(buf, sizeof(buf), &grow);
	if (!glen || write_seed(argv[1], "built-v3-c512-r64-grow", glen, false, grow_ops,
				sizeof(grow_ops) / sizeof(grow_ops[0])) < 0)
		return 1;
	for (int i = 2; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (!f) {
			perror(argv[i]);
			return 1;
		}
		size_t len = fread(buf, 1, sizeof(buf) - sizeof(trailer_ops) - 1, f);
		bool more = fgetc(f) != EOF;
		fclose(f);
		if (more) {
			fprintf(stderr, "%s: too large for a seed\n", argv[i]);
			return 1;
		}
		const char *base = strrchr(argv[i], '/');
		base = base ? base + 1 : argv[i];
		if (write_seeds(argv[1], base, len) < 0)
			return 1;
	}
	return 0;
}

#endif
