/* The user-mode NAT backend on libslirp: the QEMU-like network 10.0.2.0/24 (host and gateway
 * 10.0.2.2, DNS 10.0.2.3, DHCP from 10.0.2.15), IPv4 only, and host port forwarding.
 *
 * libslirp is not thread-safe and wants its own poll loop (its socket set changes as
 * connections come and go), so each instance has a thread that polls slirp's sockets and runs
 * its timers, and one lock (lock) guards every call into slirp. The device's worker feeds guest
 * frames in with slirp_input under that lock. Frames slirp sends to the guest -- from its own
 * thread, or from inside slirp_input on the worker -- only go into a bounded queue (qlock, taken
 * inside lock) and make base.fd, an eventfd, readable; the worker takes them from there. Slirp
 * code therefore never calls into the virtio queues, and the lock order is the device's queue
 * lock, then lock, then qlock. A full queue drops frames; TCP resends them. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <slirp/libslirp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "backend/net.h"
#include "util/log.h"
#include "util/parse.h"

#define QUEUE_FRAMES   1024       /* frames waiting for the guest, at most */
#define QUEUE_BYTES    (2u << 20) /* and bytes */
#define GUEST_ERR_LOGS 8          /* guest_error messages logged per instance */

struct frame {
	struct frame *next;
	size_t len;
	uint8_t data[];
};

struct utimer {
	struct utimer *next;
	SlirpTimerCb cb; /* timer_new's kind */
	SlirpTimerId id; /* timer_new_opaque's kind: slirp_handle_timer(id, cb_opaque) */
	bool by_id;
	void *cb_opaque;
	int64_t expire_ms; /* -1: not armed */
};

struct user {
	struct net_backend base; /* base.fd: readable while the queue holds frames */

	pthread_mutex_t lock; /* slirp, the timers, the poll set */
	Slirp *slirp;
	struct utimer *timers;
	struct pollfd *pfd;
	unsigned npfd, pfd_cap;
	unsigned guest_errors;
	pthread_t thread;
	bool started;
	int wake_fd; /* wakes the thread: new sockets or timers, or stop */
	atomic_bool stop;

	pthread_mutex_t qlock; /* the queue to the guest */
	struct frame *head, *tail;
	unsigned qframes;
	size_t qbytes;
	uint64_t dropped;

	bool tx_since_flush; /* worker only */
	uint8_t txbuf[NET_FRAME_MAX];
};

static void signal_fd(int fd)
{
	uint64_t one = 1;
	while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static void drain_fd(int fd)
{
	uint64_t v;
	while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- slirp's callbacks (lock held) --------------------------------------------------------- */

static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
	struct user *u = opaque;
	struct frame *f = len <= NET_FRAME_MAX ? malloc(sizeof(*f) + len) : NULL;
	pthread_mutex_lock(&u->qlock);
	if (!f || u->qframes >= QUEUE_FRAMES || u->qbytes + len > QUEUE_BYTES) {
		u->dropped++;
		pthread_mutex_unlock(&u->qlock);
		free(f);
		return (ssize_t)len; /* not an I/O error: the guest is just not keeping up */
	}
	f->next = NULL;
	f->len = len;
	memcpy(f->data, buf, len);
	if (u->tail)
		u->tail->next = f;
	else
		u->head = f;
	u->tail = f;
	u->qframes++;
	u->qbytes += len;
	/* Readable iff the queue is not empty: set here and cleared by recv, both under qlock. */
	if (u->qframes == 1)
		signal_fd(u->base.fd);
	pthread_mutex_unlock(&u->qlock);
	return (ssize_t)len;
}

static void cb_guest_error(const char *msg, void *opaque)
{
	struct user *u = opaque;
	if (u->guest_errors < GUEST_ERR_LOGS) {
		u->guest_errors++;
		log_warn("user network: the guest sent something wrong: %s", msg);
	}
}

static int64_t cb_clock_get_ns(void *opaque)
{
	(void)opaque;
	return now_ns();
}

static struct utimer *timer_add(struct user *u)
{
	struct utimer *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->expire_ms = -1;
	t->next = u->timers;
	u->timers = t;
	return t;
}

static void *cb_timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque)
{
	struct utimer *t = timer_add(opaque);
	if (t) {
		t->cb = cb;
		t->cb_opaque = cb_opaque;
	}
	return t;
}

static void *cb_timer_new_opaque(SlirpTimerId id, void *cb_opaque, void *opaque)
{
	struct utimer *t = timer_add(opaque);
	if (t) {
		t->id = id;
		t->by_id = true;
		t->cb_opaque = cb_opaque;
	}
	return t;
}

static void cb_timer_free(void *timer, void *opaque)
{
	struct user *u = opaque;
	for (struct utimer **p = &u->timers; *p; p = &(*p)->next)
		if (*p == timer) {
			*p = ((struct utimer *)timer)->next;
			free(timer);
			return;
		}
}

static void cb_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
	struct user *u = opaque;
	if (!timer)
		return;
	((struct utimer *)timer)->expire_ms = expire_ms < 0 ? 0 : expire_ms;
	/* From slirp_input on the worker, the thread may be asleep with a longer timeout. */
	signal_fd(u->wake_fd);
}

static void cb_poll_fd(int fd, void *opaque)
{
	/* The poll set is rebuilt from slirp_pollfds_fill on every round. */
	(void)fd;
	(void)opaque;
}

static void cb_notify(void *opaque)
{
	struct user *u = opaque;
	signal_fd(u->wake_fd);
}

static const SlirpCb callbacks = {
    .send_packet = cb_send_packet,
    .guest_error = cb_guest_error,
    .clock_get_ns = cb_clock_get_ns,
    .timer_new = cb_timer_new,
    .timer_free = cb_timer_free,
    .timer_mod = cb_timer_mod,
    .register_poll_fd = cb_poll_fd,
    .unregister_poll_fd = cb_poll_fd,
    .notify = cb_notify,
    .timer_new_opaque = cb_timer_new_opaque,
};

/* ---- the thread ---------------------------------------------------------------------------- */

static int cb_add_poll(int fd, int events, void *opaque)
{
	struct user *u = opaque;
	if (u->npfd == u->pfd_cap) {
		unsigned cap = u->pfd_cap * 2;
		struct pollfd *p = realloc(u->pfd, cap * sizeof(*p));
		if (!p)
			return -1; /* slirp then does not look at this socket this round */
		u->pfd = p;
		u->pfd_cap = cap;
	}
	short ev = 0;
	ev |= events & SLIRP_POLL_IN ? POLLIN : 0;
	ev |= events & SLIRP_POLL_OUT ? POLLOUT : 0;
	ev |= events & SLIRP_POLL_PRI ? POLLPRI : 0;
	u->pfd[u->npfd] = (struct pollfd){.fd = fd, .events = ev};
	return (int)u->npfd++;
}

static int cb_get_revents(int idx, void *opaque)
{
	struct user *u = opaque;
	if (idx < 1 || (unsigned)idx >= u->npfd)
		return 0;
	short re = u->pfd[idx].revents;
	int r = 0;
	r |= re & POLLIN ? SLIRP_POLL_IN : 0;
	r |= re & POLLOUT ? SLIRP_POLL_OUT : 0;
	r |= re & POLLPRI ? SLIRP_POLL_PRI : 0;
	r |= re & (POLLERR | POLLNVAL) ? SLIRP_POLL_ERR : 0;
	r |= re & POLLHUP ? SLIRP_POLL_HUP : 0;
	return r;
}

/* lock held: milliseconds until the next timer is due (0: one is due), -1 for none. */
static int64_t timers_next(const struct user *u)
{
	int64_t now = now_ns() / 1000000, next = -1;
	for (const struct utimer *t = u->timers; t; t = t->next)
		if (t->expire_ms >= 0) {
			int64_t d = t->expire_ms > now ? t->expire_ms - now : 0;
			if (next < 0 || d < next)
				next = d;
		}
	return next;
}

/* lock held: fires the due timers. A callback may free or re-arm any timer, so the search
 * starts over after each. */
static void timers_run(struct user *u)
{
	for (;;) {
		int64_t now = now_ns() / 1000000;
		struct utimer *t = u->timers;
		while (t && !(t->expire_ms >= 0 && t->expire_ms <= now))
			t = t->next;
		if (!t)
			return;
		t->expire_ms = -1;
		if (t->by_id)
			slirp_handle_timer(u->slirp, t->id, t->cb_opaque);
		else
			t->cb(t->cb_opaque);
	}
}

static void *user_thread(void *arg)
{
	struct user *u = arg;
	pthread_mutex_lock(&u->lock);
	while (!atomic_load(&u->stop)) {
		uint32_t timeout = UINT32_MAX;
		u->npfd = 1;
		u->pfd[0] = (struct pollfd){.fd = u->wake_fd, .events = POLLIN};
		slirp_pollfds_fill(u->slirp, &timeout, cb_add_poll, u);
		int64_t ms = timeout == UINT32_MAX ? -1 : (int64_t)timeout;
		int64_t t = timers_next(u);
		if (t >= 0 && (ms < 0 || t < ms))
			ms = t;
		if (ms > INT_MAX)
			ms = INT_MAX;
		unsigned n = u->npfd;
		pthread_mutex_unlock(&u->lock);
		/* Unlocked: the worker may feed slirp meanwhile; only this thread touches pfd. */
		int r = poll(u->pfd, n, (int)ms);
		pthread_mutex_lock(&u->lock);
		if (r > 0 && u->pfd[0].revents)
			drain_fd(u->wake_fd);
		slirp_pollfds_poll(u->slirp, r < 0, cb_get_revents, u);
		timers_run(u);
	}
	pthread_mutex_unlock(&u->lock);
	return NULL;
}

/* ---- the backend --------------------------------------------------------------------------- */

static ssize_t user_recv(struct net_backend *b, void *buf, size_t cap)
{
	struct user *u = (struct user *)b;
	for (;;) {
		pthread_mutex_lock(&u->qlock);
		struct frame *f = u->head;
		if (!f) {
			drain_fd(u->base.fd);
			pthread_mutex_unlock(&u->qlock);
			return 0;
		}
		u->head = f->next;
		if (!u->head)
			u->tail = NULL;
		u->qframes--;
		u->qbytes -= f->len;
		bool fits = f->len <= cap;
		if (!fits)
			u->dropped++;
		pthread_mutex_unlock(&u->qlock);
		size_t len = f->len;
		if (fits)
			memcpy(buf, f->data, len);
		free(f);
		if (fits)
			return (ssize_t)len;
	}
}

static int user_send(struct net_backend *b, const struct iovec *iov, int iovcnt)
{
	struct user *u = (struct user *)b;
	size_t len = 0;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > sizeof(u->txbuf) - len)
			return -1;
		memcpy(u->txbuf + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	pthread_mutex_lock(&u->lock);
	slirp_input(u->slirp, u->txbuf, (int)len);
	pthread_mutex_unlock(&u->lock);
	u->tx_since_flush = true;
	return 0;
}

static void user_flush(struct net_backend *b)
{
	struct user *u = (struct user *)b;
	/* slirp_input may have opened sockets the thread's poll set lacks. */
	if (u->tx_since_flush) {
		u->tx_since_flush = false;
		signal_fd(u->wake_fd);
	}
}

static void user_close(struct net_backend *b)
{
	struct user *u = (struct user *)b;
	if (u->started) {
		atomic_store(&u->stop, true);
		signal_fd(u->wake_fd);
		pthread_join(u->thread, NULL);
	}
	if (u->slirp)
		slirp_cleanup(u->slirp);
	while (u->timers) {
		struct utimer *t = u->timers;
		u->timers = t->next;
		free(t);
	}
	while (u->head) {
		struct frame *f = u->head;
		u->head = f->next;
		free(f);
	}
	if (u->dropped)
		log_info("user network: %llu frames to the guest dropped",
			 (unsigned long long)u->dropped);
	if (u->base.fd >= 0)
		close(u->base.fd);
	if (u->wake_fd >= 0)
		close(u->wake_fd);
	free(u->pfd);
	pthread_mutex_destroy(&u->qlock);
	pthread_mutex_destroy(&u->lock);
	free(u);
}

static const struct net_backend_ops user_ops = {
    .recv = user_recv,
    .send = user_send,
    .flush = user_flush,
    .close = user_close,
};

static struct in_addr ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
	return (struct in_addr){
	    .s_addr = htonl((uint32_t)a << 24 | (uint32_t)b << 16 | (uint32_t)c << 8 | d)};
}

static void fwd_str(const struct net_hostfwd *f, char *s, size_t len)
{
	char h[INET_ADDRSTRLEN] = "", g[INET_ADDRSTRLEN] = "";
	if (f->host_addr.s_addr)
		inet_ntop(AF_INET, &f->host_addr, h, sizeof(h));
	if (f->guest_addr.s_addr)
		inet_ntop(AF_INET, &f->guest_addr, g, sizeof(g));
	snprintf(s, len, "%s:%s:%u-%s:%u", f->udp ? "udp" : "tcp", h, f->host_port, g,
		 f->guest_port);
}

struct net_backend *net_user_open(const struct net_config *cfg, char *err, size_t err_len)
{
	struct user *u = calloc(1, sizeof(*u));
	if (!u) {
		set_err(err, err_len, "user network: out of memory");
		return NULL;
	}
	u->base = (struct net_backend){.ops = &user_ops, .fd = -1};
	u->wake_fd = -1;
	pthread_mutex_init(&u->lock, NULL);
	pthread_mutex_init(&u->qlock, NULL);
	u->pfd_cap = 64;
	u->pfd = malloc(u->pfd_cap * sizeof(*u->pfd));
	u->base.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	u->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!u->pfd || u->base.fd < 0 || u->wake_fd < 0) {
		set_err(err, err_len, "user network: %s", strerror(errno));
		user_close(&u->base);
		return NULL;
	}
	SlirpConfig sc = {
	    .version = 4,
	    .in_enabled = true,
	    .vnetwork = ip4(10, 0, 2, 0),
	    .vnetmask = ip4(255, 255, 255, 0),
	    .vhost = ip4(10, 0, 2, 2),
	    .vdhcp_start = ip4(10, 0, 2, 15),
	    .vnameserver = ip4(10, 0, 2, 3),
	    .vhostname = "ferry",
	};
	/* slirp_new calls back (timers) under the lock's protection like every other call. */
	pthread_mutex_lock(&u->lock);
	u->slirp = slirp_new(&sc, &callbacks, u);
	int bad = -1;
	for (unsigned i = 0; u->slirp && i < cfg->nfwd && bad < 0; i++) {
		const struct net_hostfwd *f = &cfg->fwd[i];
		if (slirp_add_hostfwd(u->slirp, f->udp, f->host_addr, f->host_port, f->guest_addr,
				      f->guest_port) < 0)
			bad = (int)i;
	}
	pthread_mutex_unlock(&u->lock);
	if (!u->slirp) {
		set_err(err, err_len, "user network: libslirp failed to start");
		user_close(&u->base);
		return NULL;
	}
	if (bad >= 0) {
		char s[80];
		fwd_str(&cfg->fwd[bad], s, sizeof(s));
		set_err(err, err_len,
			"user network: hostfwd=%s: cannot listen on host port %u (in use?)", s,
			cfg->fwd[bad].host_port);
		user_close(&u->base);
		return NULL;
	}
	int e = pthread_create(&u->thread, NULL, user_thread, u);
	if (e) {
		set_err(err, err_len, "user network: cannot start its thread: %s", strerror(e));
		user_close(&u->base);
		return NULL;
	}
	u->started = true;
	return &u->base;
}

/* ---- hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport ---------------------------- */

/* "addr:port" with addr optional; s is modified. */
static int parse_addr_port(char *s, struct in_addr *addr, uint16_t *port)
{
	char *colon = strrchr(s, ':');
	uint64_t n;
	if (!colon)
		return -1;
	*colon = 0;
	addr->s_addr = INADDR_ANY;
	if (*s && inet_pton(AF_INET, s, addr) != 1)
		return -1;
	if (parse_uint(colon + 1, &n) < 0 || n < 1 || n > 65535)
		return -1;
	*port = (uint16_t)n;
	return 0;
}

int net_parse_hostfwd(const char *s, struct net_hostfwd *f, char *err, size_t err_len)
{
	char buf[128];
	size_t n = strlen(s);
	if (n >= sizeof(buf))
		return set_err(err, err_len, "hostfwd=%.40s...: too long", s);
	memcpy(buf, s, n + 1);
	memset(f, 0, sizeof(*f));
	char *p = buf, *colon = strchr(p, ':');
	if (!colon)
		goto bad;
	*colon = 0;
	if (!strcmp(p, "udp"))
		f->udp = true;
	else if (*p && strcmp(p, "tcp") != 0)
		return set_err(err, err_len, "hostfwd=%s: protocol '%s' (use tcp or udp)", s, p);
	p = colon + 1;
	char *dash = strchr(p, '-');
	if (!dash)
		goto bad;
	*dash = 0;
	if (parse_addr_port(p, &f->host_addr, &f->host_port) < 0 ||
	    parse_addr_port(dash + 1, &f->guest_addr, &f->guest_port) < 0)
		goto bad;
	return 0;
bad:
	return set_err(err, err_len,
		       "hostfwd=%s: use tcp|udp:[hostaddr]:hostport-[guestaddr]:guestport "
		       "(ports 1-65535)",
		       s);
}
