/* The serial console backends on their own: spec parsing, the file backend, "none", a pty
 * without and with a client, and the stdio input thread's escapes, backpressure and EOF (stdin
 * swapped for a pipe). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pty.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend/chardev.h"

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A receiver that takes at most `limit` bytes per call into a buffer. */
struct sink {
	pthread_mutex_t lock;
	uint8_t buf[256];
	size_t len;
	size_t limit;
	atomic_int calls;
	atomic_int quits;
};

static size_t sink_rx(void *opaque, const uint8_t *buf, size_t len)
{
	struct sink *s = opaque;
	pthread_mutex_lock(&s->lock);
	size_t room = sizeof(s->buf) - s->len;
	size_t n = len < s->limit ? len : s->limit;
	if (n > room)
		n = room;
	memcpy(s->buf + s->len, buf, n);
	s->len += n;
	pthread_mutex_unlock(&s->lock);
	atomic_fetch_add(&s->calls, 1);
	return n;
}

static void sink_quit(void *opaque)
{
	struct sink *s = opaque;
	atomic_fetch_add(&s->quits, 1);
}

static size_t sink_len(struct sink *s)
{
	pthread_mutex_lock(&s->lock);
	size_t n = s->len;
	pthread_mutex_unlock(&s->lock);
	return n;
}

static bool wait_len(struct sink *s, size_t want, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;
	while (sink_len(s) < want && now_ms() < end)
		sleep_ms(1);
	return sink_len(s) >= want;
}

static void sink_init(struct sink *s, size_t limit)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	s->limit = limit;
}

static void test_bad_specs(void **state)
{
	(void)state;
	char err[256];
	assert_null(chardev_open("telnet:1234", err, sizeof(err)));
	assert_string_equal(
	    err, "unknown serial backend 'telnet:1234' (use stdio, file:PATH, pty or none)");
	assert_null(chardev_open("", err, sizeof(err)));
	assert_string_equal(err, "unknown serial backend '' (use stdio, file:PATH, pty or none)");
	assert_null(chardev_open("file:", err, sizeof(err)));
	assert_non_null(strstr(err, "path"));
	assert_null(chardev_open("file:/nonexistent-dir/x", err, sizeof(err)));
	assert_non_null(strstr(err, "/nonexistent-dir/x"));
}

static void test_file_backend(void **state)
{
	(void)state;
	char path[] = "/tmp/ferry-chardev-XXXXXX", err[256];
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "old contents", 12), 12);
	close(fd);
	char spec[64];
	snprintf(spec, sizeof(spec), "file:%s", path);

	struct chardev *c = chardev_open(spec, err, sizeof(err));
	assert_non_null(c);
	struct sink s;
	sink_init(&s, 100);
	chardev_set_handlers(c, sink_rx, sink_quit, &s);
	assert_int_equal(chardev_start(c), 0); /* no input: nothing to start */
	chardev_write(c, (const uint8_t *)"hello ", 6);
	chardev_write(c, (const uint8_t *)"world\n", 6);
	chardev_accept_input(c); /* harmless without input */
	chardev_close(c);

	char buf[64] = {0};
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, sizeof(buf) - 1), 12);
	close(fd);
	assert_string_equal(buf, "hello world\n"); /* truncated, not appended to */
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	unlink(path);
}

static void test_none_backend(void **state)
{
	(void)state;
	char err[256];
	struct chardev *c = chardev_open("none", err, sizeof(err));
	assert_non_null(c);
	chardev_write(c, (const uint8_t *)"dropped", 7);
	assert_int_equal(chardev_start(c), 0);
	chardev_close(c);
	/* A NULL chardev is "no serial" too. */
	chardev_write(NULL, (const uint8_t *)"x", 1);
	chardev_accept_input(NULL);
	chardev_set_handlers(NULL, NULL, NULL, NULL);
	assert_int_equal(chardev_start(NULL), 0);
	chardev_close(NULL);
	chardev_restore_terminals();
}

/* The pty master the chardev opened: the newest /dev/ptmx descriptor of this process. */
static int find_ptmx(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int best = -1;
	assert_non_null(d);
	while ((e = readdir(d))) {
		char path[64], target[64];
		int fd = atoi(e->d_name);
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		if (n > 0) {
			target[n] = 0;
			if (strcmp(target, "/dev/ptmx") == 0 && fd > best)
				best = fd;
		}
	}
	closedir(d);
	return best;
}

static void test_pty_backend(void **state)
{
	(void)state;
	char err[256];
	struct chardev *c = chardev_open("pty", err, sizeof(err));
	if (!c) {
		skip(); /* no /dev/pts in this environment */
		return;
	}
	struct sink s;
	sink_init(&s, 100);
	chardev_set_handlers(c, sink_rx, sink_quit, &s);
	assert_int_equal(chardev_start(c), 0);

	/* No client: output is dropped, never blocks. */
	static uint8_t big[256 * 1024];
	memset(big, 'z', sizeof(big));
	int64_t t0 = now_ms();
	chardev_write(c, big, sizeof(big));
	assert_true(now_ms() - t0 < 2000);
	sleep_ms(150); /* the input thread sees EIO and waits; it must not spin or quit */

	int master = find_ptmx();
	assert_true(master >= 0);
	const char *name = ptsname(master);
	assert_non_null(name);
	int slave = open(name, O_RDWR | O_NOCTTY);
	assert_true(slave >= 0);
	struct termios tio;
	assert_int_equal(tcgetattr(slave, &tio), 0);
	cfmakeraw(&tio);
	tcsetattr(slave, TCSANOW, &tio);
	tcflush(slave, TCIOFLUSH);

	assert_int_equal(write(slave, "ping", 4), 4);
	assert_true(wait_len(&s, 4, 2000));
	assert_memory_equal(s.buf, "ping", 4);
	assert_int_equal(atomic_load(&s.quits), 0); /* no escapes on a pty */

	chardev_write(c, (const uint8_t *)"pong", 4);
	char buf[8] = {0};
	size_t got = 0;
	for (int i = 0; i < 200 && got < 4; i++) {
		ssize_t n = read(slave, buf + got, 4 - got);
		if (n > 0)
			got += (size_t)n;
		else
			sleep_ms(5);
	}
	assert_int_equal(got, 4);
	assert_memory_equal(buf, "pong", 4);
	close(slave);
	chardev_close(c);
}

/* stdin replaced by a pipe for the test; returns the write end. */
static int pipe_stdin(int *saved)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	*saved = dup(STDIN_FILENO);
	dup2(p[0], STDIN_FILENO);
	close(p[0]);
	return p[1];
}

static void restore_stdin(int saved)
{
	dup2(saved, STDIN_FILENO);
	close(saved);
}

static void test_stdio_input(void **state)
{
	(void)state;
	char err[256];
	int saved;
	int w = pipe_stdin(&saved);
	struct chardev *c = chardev_open("stdio", err, sizeof(err));
	assert_non_null(c);
	struct sink s;
	sink_init(&s, 3); /* backpressure: at most 3 bytes per call */
	chardev_set_handlers(c, sink_rx, sink_quit, &s);
	assert_int_equal(chardev_start(c), 0);

	assert_int_equal(write(w, "abcdefg", 7), 7);
	assert_true(wait_len(&s, 3, 2000));
	sleep_ms(30);
	assert_int_equal(sink_len(&s), 3); /* the rest is held until the device asks */
	chardev_accept_input(c);
	assert_true(wait_len(&s, 6, 2000));
	chardev_accept_input(c);
	assert_true(wait_len(&s, 7, 2000));
	assert_memory_equal(s.buf, "abcdefg", 7);

	/* Escapes: C-a C-a is one C-a, C-a with anything else passes both, C-a h prints help. */
	assert_int_equal(write(w,
			       "\x01\x01"
			       "\x01"
			       "q",
			       4),
			 4);
	assert_true(wait_len(&s, 9, 2000));
	chardev_accept_input(c);
	assert_true(wait_len(&s, 10, 2000));
	assert_memory_equal(s.buf + 7, "\x01\x01q", 3);
	assert_int_equal(atomic_load(&s.quits), 0);
	assert_int_equal(write(w, "\x01x", 2), 2);
	for (int i = 0; i < 2000 && !atomic_load(&s.quits); i++)
		sleep_ms(1);
	assert_int_equal(atomic_load(&s.quits), 1);
	assert_int_equal(sink_len(&s), 10);

	/* EOF: input stops, nothing quits, close still works. */
	close(w);
	sleep_ms(30);
	assert_int_equal(atomic_load(&s.quits), 1);
	chardev_set_handlers(c, NULL, NULL, NULL);
	chardev_close(c);
	restore_stdin(saved);
}

static void test_stdio_close_while_held(void **state)
{
	(void)state;
	char err[256];
	int saved;
	int w = pipe_stdin(&saved);
	struct chardev *c = chardev_open("stdio", err, sizeof(err));
	assert_non_null(c);
	struct sink s;
	sink_init(&s, 0); /* takes nothing: the thread waits for accept_input forever */
	chardev_set_handlers(c, sink_rx, sink_quit, &s);
	assert_int_equal(chardev_start(c), 0);
	assert_int_equal(write(w, "stuck", 5), 5);
	for (int i = 0; i < 2000 && !atomic_load(&s.calls); i++)
		sleep_ms(1);
	int calls = atomic_load(&s.calls);
	assert_true(calls >= 1);
	sleep_ms(50);
	assert_int_equal(atomic_load(&s.calls), calls); /* waits, does not spin */

	/* A new receiver (the guest rebooted, a new UART) gets the held bytes without waiting
	 * for the old one to drain. */
	struct sink s2;
	sink_init(&s2, 100);
	chardev_set_handlers(c, sink_rx, sink_quit, &s2);
	assert_true(wait_len(&s2, 5, 2000));
	assert_memory_equal(s2.buf, "stuck", 5);
	chardev_set_handlers(c, sink_rx, sink_quit, &s);
	assert_int_equal(write(w, "more", 4), 4);
	sleep_ms(30);
	int64_t t0 = now_ms();
	chardev_close(c); /* must not hang */
	assert_true(now_ms() - t0 < 1000);
	close(w);
	restore_stdin(saved);
}

/* stdin a terminal: raw while the chardev runs, restored by chardev_restore_terminals() (the
 * signal path) and by chardev_close(); escapes work even while the device holds input back. */
static void test_stdio_terminal(void **state)
{
	(void)state;
	char err[256];
	int master, slave;
	if (openpty(&master, &slave, NULL, NULL, NULL) < 0) {
		skip();
		return;
	}
	struct termios before, now;
	assert_int_equal(tcgetattr(slave, &before), 0);
	assert_true(before.c_lflag & ICANON);
	int saved = dup(STDIN_FILENO);
	dup2(slave, STDIN_FILENO);

	struct chardev *c = chardev_open("stdio", err, sizeof(err));
	assert_non_null(c);
	struct sink s;
	sink_init(&s, 0); /* holds everything back */
	chardev_set_handlers(c, sink_rx, sink_quit, &s);
	assert_int_equal(chardev_start(c), 0);
	assert_int_equal(tcgetattr(slave, &now), 0);
	assert_false(now.c_lflag & (ICANON | ECHO | ISIG));
	assert_false(now.c_iflag & (ICRNL | IXON));
	assert_int_equal(now.c_oflag, before.c_oflag); /* output processing kept */

	assert_int_equal(write(master, "abc\x01x", 5), 5);
	for (int i = 0; i < 2000 && !atomic_load(&s.quits); i++)
		sleep_ms(1);
	assert_int_equal(atomic_load(&s.quits), 1);

	chardev_restore_terminals();
	assert_int_equal(tcgetattr(slave, &now), 0);
	assert_true(now.c_lflag & ICANON);
	chardev_close(c);
	assert_int_equal(tcgetattr(slave, &now), 0);
	assert_int_equal(now.c_lflag, before.c_lflag);
	assert_int_equal(now.c_iflag, before.c_iflag);

	dup2(saved, STDIN_FILENO);
	close(saved);
	close(slave);
	close(master);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bad_specs),      cmocka_unit_test(test_file_backend),
	    cmocka_unit_test(test_none_backend),   cmocka_unit_test(test_pty_backend),
	    cmocka_unit_test(test_stdio_input),    cmocka_unit_test(test_stdio_close_while_held),
	    cmocka_unit_test(test_stdio_terminal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
