/* virtio-net (virtio spec 5.1): one receive queue (0) and one transmit queue (1) over a network
 * backend (backend/net.h), with the MAC address and link status in the configuration space.
 * Every frame carries the 12-byte virtio_net_hdr_v1 in front.
 *
 * Transmit: on a kick of queue 1, each chain's frame goes to the backend. Chains shorter than
 * the header or longer than header + NET_FRAME_MAX, and GSO frames the backend cannot take,
 * are dropped and counted (the spec makes none of them a driver error).
 * Receive: the worker watches the backend's descriptor through an epoll set of its own, so the
 * model can stop watching while the guest has no receive buffers: one frame then waits in the
 * device, the rest in the backend's bounded queue, until the driver adds buffers and notifies
 * queue 0. A frame goes into one chain, or with VIRTIO_NET_F_MRG_RXBUF into as many as it needs
 * (num_buffers); a frame that does not fit what the driver may give is dropped and counted.
 * Before the driver is up (or after it broke a rule) received frames are dropped, as on a link
 * that is down. With a tap that carries virtio headers (backend offloads) the checksum and
 * segmentation offloads pass straight through in both directions. */
#include <errno.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_net.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "backend/net.h"
#include "util/log.h"
#include "virtio/virtio_pci.h"
#include "vm/vm.h"

#define NET_QUEUE_SIZE 256
#define NET_MAX_SEGS   64 /* Linux uses up to MAX_SKB_FRAGS + 2 = 19 */
#define RX_MAX_CHAINS  64 /* chains one received frame may take with MRG_RXBUF */
#define RX_BUDGET      64 /* frames per wake-up, so a busy receiver does not starve transmit */
#define HDR_LEN        ((unsigned)sizeof(struct virtio_net_hdr_v1))
#define RXQ            0
#define TXQ            1
#define FEAT(f)        (1ull << (f))

struct net_cfg_space {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
};

struct net {
	struct net_backend *be;
	struct virtio_device *vd;
	struct net_cfg_space config;
	struct virtio_ops ops;
	char name[16];
	int epfd;
	bool paused;         /* the backend's fd is out of the epoll set */
	bool dead;           /* the backend broke: never watched again */
	uint64_t guest_feat; /* what the backend was last told (guest_features) */

	uint8_t *rxbuf; /* HDR_LEN + NET_FRAME_MAX: the header always at 0 */
	size_t pending; /* bytes of a received frame (with header) waiting in rxbuf */
	struct virtq_chain res[RX_MAX_CHAINS]; /* receive chains taken but not yet used */
	struct virtq_seg *res_seg;             /* RX_MAX_CHAINS * NET_MAX_SEGS */
	unsigned nres;
	uint64_t res_bytes;

	uint64_t rx_dropped, tx_dropped;
};

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int net_parse_mac(const char *s, uint8_t mac[6], char *err, size_t err_len)
{
	uint8_t m[6];
	if (strlen(s) != 17)
		goto bad;
	for (size_t i = 0; i < 6; i++) {
		const char *p = s + 3 * i;
		int hi = hex_digit(p[0]), lo = hex_digit(p[1]);
		if (hi < 0 || lo < 0 || (i < 5 && p[2] != ':'))
			goto bad;
		m[i] = (uint8_t)(hi << 4 | lo);
	}
	if (m[0] & 1)
		return set_err(err, err_len, "mac=%s: a multicast address cannot be a NIC's", s);
	if (!(m[0] | m[1] | m[2] | m[3] | m[4] | m[5]))
		return set_err(err, err_len, "mac=%s: the zero address cannot be a NIC's", s);
	memcpy(mac, m, 6);
	return 0;
bad:
	return set_err(err, err_len, "mac=%s: use six hex bytes, like 52:54:00:12:34:56", s);
}

/* ---- receive ------------------------------------------------------------------------------- */

static void set_paused(struct net *n, bool paused)
{
	if (n->dead)
		paused = true;
	if (paused == n->paused)
		return;
	/* Out of the set altogether: an fd reports errors even with no events asked for. */
	struct epoll_event ev = {.events = EPOLLIN};
	if (epoll_ctl(n->epfd, paused ? EPOLL_CTL_DEL : EPOLL_CTL_ADD, n->be->fd, &ev) == 0)
		n->paused = paused;
}

/* The guest may take frames now. */
static bool rx_usable(struct net *n)
{
	return virtio_running(n->vd) && virtio_queue(n->vd, RXQ)->ready;
}

/* Tells the backend which receive offloads the driver accepted, when that changed. */
static void sync_features(struct net *n, uint64_t f)
{
	if (n->be->ops->guest_features && f != n->guest_feat && !n->dead) {
		n->be->ops->guest_features(n->be, f);
		n->guest_feat = f;
	}
}

/* A header from the backend: keeps only what the driver accepted (clearing the flags it may
 * not see), or says the frame cannot go to the guest. */
static bool rx_header_ok(struct virtio_net_hdr_v1 *h, uint64_t f)
{
	uint8_t gso = h->gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
	bool ecn = h->gso_type & VIRTIO_NET_HDR_GSO_ECN;
	if (!(f & FEAT(VIRTIO_NET_F_GUEST_CSUM))) {
		/* A partial checksum read before the tap heard of a reset cannot go. */
		if (h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)
			return false;
		h->flags = 0;
	}
	h->flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID;
	switch (gso) {
	case VIRTIO_NET_HDR_GSO_NONE:
		return !ecn;
	case VIRTIO_NET_HDR_GSO_TCPV4:
		return f & FEAT(VIRTIO_NET_F_GUEST_TSO4) &&
		       (!ecn || f & FEAT(VIRTIO_NET_F_GUEST_ECN));
	case VIRTIO_NET_HDR_GSO_TCPV6:
		return f & FEAT(VIRTIO_NET_F_GUEST_TSO6) &&
		       (!ecn || f & FEAT(VIRTIO_NET_F_GUEST_ECN));
	default:
		return false;
	}
}

/* Reads the next frame from the backend into rxbuf with its header. Returns 1, 0 for none,
 * -1 if the backend broke. */
static int rx_fetch(struct net *n, uint64_t f)
{
	for (;;) {
		unsigned hl = n->be->hdr_len;
		ssize_t len = net_recv(n->be, n->rxbuf + HDR_LEN - hl, NET_FRAME_MAX + hl);
		if (len <= 0)
			return len < 0 ? -1 : 0;
		struct virtio_net_hdr_v1 *h = (struct virtio_net_hdr_v1 *)n->rxbuf;
		if (hl == 0)
			memset(h, 0, HDR_LEN);
		if ((size_t)len < hl || (hl && !rx_header_ok(h, f))) {
			n->rx_dropped++;
			continue;
		}
		n->pending = HDR_LEN + (size_t)len - hl;
		return 1;
	}
}

/* Takes receive chains until they hold need bytes or max chains. Returns 1 when they do, 0
 * when the driver has no more buffers now (notifications are then on), -1 on a broken rule. */
static int rx_reserve(struct net *n, uint64_t need, unsigned max)
{
	struct virtq *vq = virtio_queue(n->vd, RXQ);
	while (n->res_bytes < need && n->nres < max) {
		struct virtq_chain *c = &n->res[n->nres];
		c->seg = n->res_seg + (size_t)n->nres * NET_MAX_SEGS;
		c->cap = NET_MAX_SEGS;
		int r = virtq_pop(vq, c);
		if (r < 0)
			return -1;
		if (r == 0) {
			if (!virtq_notify_enable(vq, true))
				return 0;
			virtq_notify_enable(vq, false);
			continue;
		}
		n->res_bytes += c->in_len;
		n->nres++;
	}
	return 1;
}

/* Copies the pending frame into the first k reserved chains and returns them to the driver. */
static void rx_deliver(struct net *n, struct virtq *vq, unsigned k)
{
	struct virtio_net_hdr_v1 *h = (struct virtio_net_hdr_v1 *)n->rxbuf;
	h->num_buffers = (uint16_t)k;
	size_t off = 0;
	for (unsigned i = 0; i < k; i++) {
		const struct virtq_chain *c = &n->res[i];
		size_t take = n->pending - off < c->in_len ? n->pending - off : c->in_len;
		size_t done = virtq_write(c, 0, n->rxbuf + off, take);
		off += done;
		n->res_bytes -= c->in_len;
		virtq_push(vq, c->head, (uint32_t)done);
	}
	/* The chains left over keep their place for the next frame. */
	memmove(n->res, n->res + k, (n->nres - k) * sizeof(n->res[0]));
	n->nres -= k;
	for (unsigned i = 0; i < n->nres; i++)
		memmove(n->res_seg + (size_t)i * NET_MAX_SEGS, n->res[i].seg,
			n->res[i].nseg * sizeof(struct virtq_seg));
	for (unsigned i = 0; i < n->nres; i++)
		n->res[i].seg = n->res_seg + (size_t)i * NET_MAX_SEGS;
	n->pending = 0;
}

/* How many of the reserved chains the pending frame needs, or 0 if they cannot hold it. */
static unsigned rx_chains_needed(const struct net *n)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < n->nres; i++) {
		sum += n->res[i].in_len;
		if (sum >= n->pending)
			return i + 1;
	}
	return 0;
}

/* Worker, queue lock held: moves frames from the backend into the guest's receive buffers
 * until either runs out (or the budget does). */
static void rx_pump(struct net *n)
{
	struct virtq *vq = virtio_queue(n->vd, RXQ);
	if (!rx_usable(n)) {
		/* Link down: drop what arrives, keep watching. */
		n->pending = 0;
		for (unsigned i = 0; i < RX_BUDGET; i++) {
			int r = rx_fetch(n, 0);
			if (r < 0)
				n->dead = true;
			if (r <= 0)
				break;
			n->pending = 0;
			n->rx_dropped++;
		}
		set_paused(n, n->dead);
		return;
	}
	uint64_t f = virtio_driver_features(n->vd);
	sync_features(n, f);
	unsigned max = f & FEAT(VIRTIO_NET_F_MRG_RXBUF) ? RX_MAX_CHAINS : 1;
	if (max > vq->size)
		max = vq->size;
	bool pushed = false, starved = false;
	virtq_notify_enable(vq, false);
	for (unsigned i = 0; i < RX_BUDGET; i++) {
		if (!n->pending) {
			int r = rx_fetch(n, f);
			if (r < 0)
				n->dead = true;
			if (r <= 0)
				break;
		}
		int r = rx_reserve(n, n->pending, max);
		if (r < 0) {
			virtio_needs_reset(n->vd, vq->err);
			break;
		}
		if (r == 0) {
			starved = true; /* the frame waits here for the driver's next buffers */
			break;
		}
		unsigned k = rx_chains_needed(n);
		if (k == 0) {
			/* Bigger than all the driver may give: drop it, keep the chains. */
			n->pending = 0;
			n->rx_dropped++;
			continue;
		}
		rx_deliver(n, vq, k);
		pushed = true;
	}
	set_paused(n, starved || n->dead);
	if (pushed)
		virtio_queue_interrupt(n->vd, RXQ);
}

static void rx_ready(struct virtio_device *vd, int fd)
{
	(void)fd;
	rx_pump(virtio_opaque(vd));
}

/* ---- transmit ------------------------------------------------------------------------------ */

static int64_t tx_chain(struct virtio_device *vd, unsigned q, struct virtq_chain *c)
{
	(void)q;
	struct net *n = virtio_opaque(vd);
	struct virtio_net_hdr_v1 h;
	if (c->out_len < HDR_LEN || c->out_len - HDR_LEN > NET_FRAME_MAX ||
	    virtq_read(c, 0, &h, HDR_LEN) != HDR_LEN) {
		n->tx_dropped++;
		return 0;
	}
	unsigned hl = n->be->hdr_len;
	if (hl == 0 && h.gso_type != VIRTIO_NET_HDR_GSO_NONE) {
		n->tx_dropped++; /* segmentation was not offered */
		return 0;
	}
	/* The frame, with the header when the backend takes it (a tap checks it itself). */
	struct iovec iov[NET_MAX_SEGS];
	int cnt = 0;
	uint64_t skip = HDR_LEN - hl;
	for (unsigned i = 0; i < c->n_out; i++) {
		uint64_t len = c->seg[i].len;
		if (skip >= len) {
			skip -= len;
			continue;
		}
		iov[cnt].iov_base = (uint8_t *)c->seg[i].host + skip;
		iov[cnt].iov_len = len - skip;
		skip = 0;
		cnt++;
	}
	if (net_send(n->be, iov, cnt) < 0)
		n->tx_dropped++;
	return 0;
}

static int net_notify(struct virtio_device *vd, unsigned q)
{
	struct net *n = virtio_opaque(vd);
	if (q == RXQ) {
		/* New receive buffers: deliver what waits and watch the backend again. */
		rx_pump(n);
		return 0;
	}
	int rc = virtio_process_queue(vd, q, tx_chain);
	net_flush(n->be);
	return rc;
}

/* ---- the device ---------------------------------------------------------------------------- */

static void net_config_read(void *opaque, unsigned off, uint8_t *data, unsigned len)
{
	const struct net *n = opaque;
	memset(data, 0, len);
	if (off < sizeof(n->config))
		memcpy(data, (const uint8_t *)&n->config + off,
		       len < sizeof(n->config) - off ? len : sizeof(n->config) - off);
}

static void net_reset(void *opaque)
{
	struct net *n = opaque;
	/* The reserved chains belonged to the old queue; a waiting frame is dropped. */
	n->nres = 0;
	n->res_bytes = 0;
	if (n->pending)
		n->rx_dropped++;
	n->pending = 0;
	sync_features(n, 0);
	set_paused(n, false);
}

/* Snapshot: the receive chains the device holds are recorded as still available (held), and a
 * frame waiting for buffers is kept with its header. */
static const char net_tag[8] = "vnet";
#define NET_STATE_VERSION 1

static unsigned net_held(void *opaque, unsigned q)
{
	const struct net *n = opaque;
	return q == RXQ ? n->nres : 0;
}

static void net_save(void *opaque, struct state_writer *w)
{
	const struct net *n = opaque;
	sw_begin(w, net_tag, NET_STATE_VERSION);
	sw_u32(w, (uint32_t)n->pending);
	sw_bytes(w, n->rxbuf, n->pending);
	sw_u64(w, n->rx_dropped);
	sw_u64(w, n->tx_dropped);
}

static int net_load(void *opaque, struct state_reader *r)
{
	struct net *n = opaque;
	sr_begin(r, net_tag, NET_STATE_VERSION);
	uint32_t pending = sr_u32(r);
	sr_check(r, pending == 0 || (pending >= HDR_LEN && pending <= HDR_LEN + NET_FRAME_MAX));
	if (r->err)
		return -1;
	sr_bytes(r, n->rxbuf, pending);
	uint64_t rx_dropped = sr_u64(r), tx_dropped = sr_u64(r);
	if (r->err)
		return -1;
	n->pending = pending;
	n->rx_dropped = rx_dropped;
	n->tx_dropped = tx_dropped;
	n->nres = 0; /* the transport restored the held chains as available */
	n->res_bytes = 0;
	n->guest_feat = ~0ull; /* tell the backend the driver's offloads at the next frame */
	set_paused(n, false);
	return 0;
}

static void net_destroy(void *opaque)
{
	struct net *n = opaque;
	if (n->rx_dropped || n->tx_dropped)
		log_info("%s: %llu received and %llu sent frames dropped", n->name,
			 (unsigned long long)n->rx_dropped, (unsigned long long)n->tx_dropped);
	net_close(n->be);
	if (n->epfd >= 0)
		close(n->epfd);
	free(n->rxbuf);
	free(n->res_seg);
	free(n);
}

static int net_create_one(struct vm *vm, unsigned index)
{
	const struct net_config *nc = &vm->cfg->nics[index];
	char err[256];
	struct net *n = calloc(1, sizeof(*n));
	if (!n) {
		log_error("virtio-net: out of memory");
		return -1;
	}
	n->epfd = -1;
	snprintf(n->name, sizeof(n->name), "virtio-net%u", index);
	n->rxbuf = malloc(HDR_LEN + NET_FRAME_MAX);
	n->res_seg = calloc((size_t)RX_MAX_CHAINS * NET_MAX_SEGS, sizeof(*n->res_seg));
	if (!n->rxbuf || !n->res_seg) {
		log_error("virtio-net: out of memory");
		net_destroy(n);
		return -1;
	}
	n->be = nc->kind == NET_TAP ? net_tap_open(nc, nc->offload, err, sizeof(err))
				    : net_user_open(nc, err, sizeof(err));
	if (!n->be) {
		bool bad = nc->kind == NET_TAP && errno == EINVAL;
		log_error("%s", err);
		net_destroy(n);
		return bad ? DEVICE_BAD_INPUT : -1;
	}
	n->epfd = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN};
	if (n->epfd < 0 || epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->be->fd, &ev) < 0) {
		log_error("virtio-net: epoll: %s", strerror(errno));
		net_destroy(n);
		return -1;
	}
	memcpy(n->config.mac, nc->mac, 6);
	n->config.status = VIRTIO_NET_S_LINK_UP;
	n->config.max_virtqueue_pairs = 1;
	uint64_t f =
	    FEAT(VIRTIO_NET_F_MAC) | FEAT(VIRTIO_NET_F_STATUS) | FEAT(VIRTIO_NET_F_MRG_RXBUF);
	if (n->be->offloads)
		f |= FEAT(VIRTIO_NET_F_CSUM) | FEAT(VIRTIO_NET_F_HOST_TSO4) |
		     FEAT(VIRTIO_NET_F_HOST_TSO6) | FEAT(VIRTIO_NET_F_HOST_ECN) |
		     FEAT(VIRTIO_NET_F_GUEST_CSUM) | FEAT(VIRTIO_NET_F_GUEST_TSO4) |
		     FEAT(VIRTIO_NET_F_GUEST_TSO6) | FEAT(VIRTIO_NET_F_GUEST_ECN);
	n->ops = (struct virtio_ops){
	    .name = n->name,
	    .type = VIRTIO_ID_NET,
	    .pci_class = 0x020000, /* network, Ethernet */
	    .nqueues = 2,
	    .queue_max = NET_QUEUE_SIZE,
	    .max_segs = NET_MAX_SEGS,
	    .features = f,
	    .config_size = sizeof(n->config),
	    .config_read = net_config_read,
	    .queue_notify = net_notify,
	    .reset = net_reset,
	    .held = net_held,
	    .save = net_save,
	    .load = net_load,
	    .destroy = net_destroy,
	};
	n->vd = virtio_pci_create(vm, &n->ops, n);
	if (!n->vd) {
		net_destroy(n);
		return -1;
	}
	if (virtio_watch_fd(n->vd, n->epfd, rx_ready) < 0)
		return -1;
	return virtio_start(n->vd);
}

static int net_create(struct vm *vm)
{
	for (unsigned i = 0; i < vm->cfg->nnics; i++) {
		int rc = net_create_one(vm, i);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static struct device_type net_type = {.name = "virtio-net", .order = 75, .create = net_create};
DEVICE_REGISTER(net_type)
