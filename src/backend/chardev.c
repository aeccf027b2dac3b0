#include "backend/chardev.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <termios.h>
#include <unistd.h>

#include "util/log.h"

#define CTRL_A       0x01
#define PEND_CAP     4096 /* bytes read from the host but not yet taken by the device */
#define PTY_RETRY_MS 100  /* how often to look for a client on an unconnected pty */
#define OUT_POLL_MS  1000 /* wait for a non-blocking stdout to drain, per attempt */

enum chardev_kind { CD_NONE, CD_STDIO, CD_FILE, CD_PTY };

struct chardev {
	enum chardev_kind kind;
	int in_fd, out_fd;      /* -1 when the backend has no input / no output */
	bool own_fds;           /* close in_fd/out_fd on chardev_close (not stdin/stdout) */
	bool interactive;       /* stdin is a terminal: keep reading while the guest is slow */
	int term_slot;          /* saved-terminal slot while stdin is raw, else -1 */
	int stop_fd, accept_fd; /* eventfds: stop the input thread; the device drained */
	pthread_t thread;
	bool thread_started;

	/* Held across the callbacks so chardev_set_handlers(c, NULL...) guarantees that no
	 * callback into a device that is going away is still running. */
	pthread_mutex_t cb_lock;
	chardev_receive_fn rx;
	chardev_quit_fn quit;
	void *opaque;

	pthread_mutex_t out_lock; /* one chardev_write's bytes stay together */
	bool out_dead;            /* output failed for good: drop from now on */

	bool escape; /* input thread only: the previous byte was Ctrl-A */
};

/* ---- terminals in raw mode, restorable from a signal handler ------------------------------ */

#define MAX_TERMS 4

/* Written under terms_lock, read lock-free by chardev_restore_terminals(): a slot's fd and
 * termios are complete before `saved` is set, and `saved` is cleared before they change. */
static struct {
	int fd;
	struct termios tio;
	volatile sig_atomic_t saved;
} terms[MAX_TERMS];
static pthread_mutex_t terms_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

void chardev_restore_terminals(void)
{
	/* Only tcsetattr(), which is async-signal-safe, and plain loads. */
	for (int i = 0; i < MAX_TERMS; i++)
		if (terms[i].saved)
			tcsetattr(terms[i].fd, TCSANOW, &terms[i].tio);
}

static void register_atexit(void)
{
	atexit(chardev_restore_terminals);
}

/* Puts the terminal on fd into raw mode, remembering how it was. Returns the slot or -1. */
static int term_make_raw(int fd)
{
	struct termios old, raw;
	if (tcgetattr(fd, &old) < 0)
		return -1;
	pthread_once(&atexit_once, register_atexit);
	pthread_mutex_lock(&terms_lock);
	int slot = -1;
	for (int i = 0; i < MAX_TERMS; i++)
		if (!terms[i].saved) {
			slot = i;
			break;
		}
	if (slot >= 0) {
		terms[slot].fd = fd;
		terms[slot].tio = old;
		atomic_signal_fence(memory_order_seq_cst);
		terms[slot].saved = 1;
	}
	pthread_mutex_unlock(&terms_lock);
	if (slot < 0)
		return -1;

	raw = old;
	/* Every key goes to the guest as typed: no line editing, echo, signals (Ctrl-C is the
	 * guest's; Ctrl-A x quits) or CR/NL translation on input. Output processing is left as it
	 * was so that ferry's own messages still read correctly. */
	raw.c_iflag &=
	    ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
	raw.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
	raw.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
	raw.c_cflag |= CS8;
	raw.c_cc[VMIN] = 1;
	raw.c_cc[VTIME] = 0;
	tcsetattr(fd, TCSANOW, &raw);
	return slot;
}

static void term_restore(int slot)
{
	if (slot < 0 || slot >= MAX_TERMS)
		return;
	pthread_mutex_lock(&terms_lock);
	if (terms[slot].saved) {
		tcsetattr(terms[slot].fd, TCSANOW, &terms[slot].tio);
		terms[slot].saved = 0;
		atomic_signal_fence(memory_order_seq_cst);
	}
	pthread_mutex_unlock(&terms_lock);
}

/* ---- opening and closing ----------------------------------------------------------------- */

static struct chardev *chardev_alloc(enum chardev_kind kind)
{
	struct chardev *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->kind = kind;
	c->in_fd = c->out_fd = -1;
	c->term_slot = -1;
	c->stop_fd = c->accept_fd = -1;
	pthread_mutex_init(&c->cb_lock, NULL);
	pthread_mutex_init(&c->out_lock, NULL);
	return c;
}

static void chardev_free(struct chardev *c)
{
	if (c->own_fds) {
		if (c->in_fd >= 0)
			close(c->in_fd);
		if (c->out_fd >= 0 && c->out_fd != c->in_fd)
			close(c->out_fd);
	}
	if (c->stop_fd >= 0)
		close(c->stop_fd);
	if (c->accept_fd >= 0)
		close(c->accept_fd);
	pthread_mutex_destroy(&c->cb_lock);
	pthread_mutex_destroy(&c->out_lock);
	free(c);
}

static struct chardev *open_pty(char *err, size_t err_len)
{
	int master, slave;
	char name[128];
	struct termios raw;
	memset(&raw, 0, sizeof(raw));
	cfmakeraw(&raw);
	if (openpty(&master, &slave, name, &raw, NULL) < 0) {
		set_err(err, err_len, "cannot open a pseudo-terminal: %s", strerror(errno));
		return NULL;
	}
	/* Only a client (screen, minicom) holds the slave: until one connects, reads on the
	 * master fail with EIO and output is dropped rather than piling up. */
	close(slave);
	int fl = fcntl(master, F_GETFL);
	if (fl < 0 || fcntl(master, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(master, F_SETFD, FD_CLOEXEC) < 0) {
		set_err(err, err_len, "cannot set up the pseudo-terminal: %s", strerror(errno));
		close(master);
		return NULL;
	}
	struct chardev *c = chardev_alloc(CD_PTY);
	if (!c) {
		close(master);
		set_err(err, err_len, "out of memory");
		return NULL;
	}
	c->in_fd = c->out_fd = master;
	c->own_fds = true;
	fprintf(stderr, "ferry: serial is on %s\n", name);
	return c;
}

struct chardev *chardev_open(const char *spec, char *err, size_t err_len)
{
	struct chardev *c = NULL;
	if (!spec)
		spec = "";
	if (strcmp(spec, "none") == 0) {
		c = chardev_alloc(CD_NONE);
	} else if (strcmp(spec, "stdio") == 0) {
		c = chardev_alloc(CD_STDIO);
		if (c) {
			c->in_fd = STDIN_FILENO;
			c->out_fd = STDOUT_FILENO;
		}
	} else if (strncmp(spec, "file:", 5) == 0) {
		const char *path = spec + 5;
		if (!*path) {
			set_err(err, err_len, "serial backend 'file:' needs a path (file:PATH)");
			return NULL;
		}
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0) {
			set_err(err, err_len, "cannot open serial output file %s: %s", path,
				strerror(errno));
			return NULL;
		}
		c = chardev_alloc(CD_FILE);
		if (!c) {
			close(fd);
		} else {
			c->out_fd = fd;
			c->own_fds = true;
		}
	} else if (strcmp(spec, "pty") == 0) {
		return open_pty(err, err_len);
	} else {
		set_err(err, err_len,
			"unknown serial backend '%s' (use stdio, file:PATH, pty or none)", spec);
		return NULL;
	}
	if (!c)
		set_err(err, err_len, "out of memory");
	return c;
}

void chardev_close(struct chardev *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		uint64_t one = 1;
		if (write(c->stop_fd, &one, sizeof(one)) < 0) {
			/* An eventfd write only fails on counter overflow: the thread wakes anyway. */
		}
		pthread_join(c->thread, NULL);
		c->thread_started = false;
	}
	term_restore(c->term_slot);
	c->term_slot = -1;
	chardev_free(c);
}

void chardev_set_handlers(struct chardev *c, chardev_receive_fn rx, chardev_quit_fn quit,
			  void *opaque)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->cb_lock);
	c->rx = rx;
	c->quit = quit;
	c->opaque = opaque;
	pthread_mutex_unlock(&c->cb_lock);
	/* Held input waits for the old device to drain, which a new device (after a reboot) never
	 * signals: retry now, delivering to the new receiver or dropping without one. */
	chardev_accept_input(c);
}

void chardev_accept_input(struct chardev *c)
{
	/* Lock-free so a device may call it from anywhere, even with its own lock held. */
	if (!c || c->accept_fd < 0)
		return;
	uint64_t one = 1;
	if (write(c->accept_fd, &one, sizeof(one)) < 0) {
		/* Counter overflow only: a wake-up is already pending. */
	}
}

/* ---- output ------------------------------------------------------------------------------ */

void chardev_write(struct chardev *c, const uint8_t *buf, size_t len)
{
	if (!c || c->out_fd < 0 || !len)
		return;
	pthread_mutex_lock(&c->out_lock);
	while (len && !c->out_dead) {
		ssize_t n = write(c->out_fd, buf, len);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			/* A pty with no client reading: drop, as a serial line with nothing attached
			 * would. A non-blocking stdout: wait for it like a blocking one. */
			if (c->kind == CD_PTY)
				break;
			struct pollfd p = {.fd = c->out_fd, .events = POLLOUT};
			if (poll(&p, 1, OUT_POLL_MS) < 0 && errno != EINTR)
				c->out_dead = true;
			continue;
		}
		if (c->kind == CD_PTY && n < 0 && errno == EIO)
			break; /* no client: drop this output, try again next time */
		/* EPIPE, EBADF, ENOSPC...: the output is gone; the guest keeps running. */
		if (c->kind == CD_FILE)
			log_warn("serial output file: %s; dropping further output",
				 n < 0 ? strerror(errno) : "short write");
		c->out_dead = true;
	}
	pthread_mutex_unlock(&c->out_lock);
}

/* ---- input ------------------------------------------------------------------------------- */

static void print_help(void)
{
	static const char help[] = "\r\nferry: C-a x  quit    C-a C-a  send C-a to the guest    "
				   "C-a h  this help\r\n";
	if (write(STDERR_FILENO, help, sizeof(help) - 1) < 0) {
		/* stderr is gone: nothing useful to do. */
	}
}

static void call_quit(struct chardev *c)
{
	pthread_mutex_lock(&c->cb_lock);
	if (c->quit)
		c->quit(c->opaque);
	pthread_mutex_unlock(&c->cb_lock);
}

/* Applies the Ctrl-A escapes (stdio only) to in[0..n), appending what the guest should get to
 * out[*len..cap). Bytes that do not fit are dropped (only possible for an interactive terminal
 * while the guest is not reading). */
static void translate(struct chardev *c, const uint8_t *in, size_t n, uint8_t *out, size_t *len,
		      size_t cap)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t b = in[i];
		uint8_t emit[2];
		size_t ne = 0;
		if (c->kind == CD_STDIO && c->escape) {
			c->escape = false;
			switch (b) {
			case 'x':
			case 'X':
				call_quit(c);
				break;
			case 'h':
			case 'H':
			case '?':
				print_help();
				break;
			case CTRL_A:
				emit[ne++] = CTRL_A;
				break;
			default:
				/* Not one of ours: the guest gets both bytes. */
				emit[ne++] = CTRL_A;
				emit[ne++] = b;
			}
		} else if (c->kind == CD_STDIO && b == CTRL_A) {
			c->escape = true;
		} else {
			emit[ne++] = b;
		}
		for (size_t k = 0; k < ne && *len < cap; k++)
			out[(*len)++] = emit[k];
	}
}

static size_t deliver(struct chardev *c, const uint8_t *buf, size_t len)
{
	size_t n;
	pthread_mutex_lock(&c->cb_lock);
	if (c->rx) {
		n = c->rx(c->opaque, buf, len);
		if (n > len)
			n = len;
	} else {
		n = len; /* no device listening: the bytes are lost, as on an unconnected line */
	}
	pthread_mutex_unlock(&c->cb_lock);
	return n;
}

static void drain_eventfd(int fd)
{
	uint64_t v;
	if (read(fd, &v, sizeof(v)) < 0) {
		/* EAGAIN: already drained. */
	}
}

static void *input_thread(void *arg)
{
	struct chardev *c = arg;
	uint8_t pend[PEND_CAP], raw[PEND_CAP / 2];
	size_t off = 0, len = 0;
	bool eof = false, paused = false;

	pthread_setname_np(pthread_self(), "serial-in");
	for (;;) {
		bool blocked = false;
		if (off < len) {
			off += deliver(c, pend + off, len - off);
			blocked = off < len;
		}
		if (off == len) {
			off = len = 0;
		} else if (off) {
			memmove(pend, pend + off, len - off);
			len -= off;
			off = 0;
		}

		/* While the device holds back, a pipe or pty is not read (the host side waits, no
		 * byte is lost); an interactive terminal still is, so Ctrl-A x always works. */
		bool want_input = !eof && !paused && (!blocked || c->interactive);
		struct pollfd p[3];
		int np = 0, in_i = -1, acc_i = -1;
		p[np++] = (struct pollfd){.fd = c->stop_fd, .events = POLLIN};
		if (blocked) {
			acc_i = np;
			p[np++] = (struct pollfd){.fd = c->accept_fd, .events = POLLIN};
		}
		if (want_input) {
			in_i = np;
			p[np++] = (struct pollfd){.fd = c->in_fd, .events = POLLIN};
		}
		int r = poll(p, (nfds_t)np, paused ? PTY_RETRY_MS : -1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			break; /* cannot wait any more (ENOMEM): stop taking input */
		}
		if (p[0].revents)
			break;
		paused = false;
		if (acc_i >= 0 && p[acc_i].revents)
			drain_eventfd(c->accept_fd);
		if (in_i < 0 || !p[in_i].revents)
			continue;

		size_t want = sizeof(raw);
		ssize_t n = read(c->in_fd, raw, want);
		if (n > 0) {
			translate(c, raw, (size_t)n, pend, &len, sizeof(pend));
		} else if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
			continue;
		} else if (c->kind == CD_PTY) {
			/* EIO (or EOF) while no client holds the slave: look again shortly. */
			paused = true;
		} else {
			/* End of stdin: the guest keeps running without input. */
			eof = true;
		}
	}
	return NULL;
}

int chardev_start(struct chardev *c)
{
	if (!c || c->in_fd < 0 || c->thread_started)
		return 0;
	c->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	c->accept_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->stop_fd < 0 || c->accept_fd < 0) {
		log_error("cannot create the serial input events: %s", strerror(errno));
		return -1;
	}
	if (c->kind == CD_STDIO && isatty(c->in_fd)) {
		c->interactive = true;
		c->term_slot = term_make_raw(c->in_fd);
	}
	int e = pthread_create(&c->thread, NULL, input_thread, c);
	if (e) {
		log_error("cannot start the serial input thread: %s", strerror(e));
		term_restore(c->term_slot);
		c->term_slot = -1;
		return -1;
	}
	c->thread_started = true;
	return 0;
}
