/* Network backends: where a virtio-net NIC's Ethernet frames go on the host.
 *   tap   a TAP interface (/dev/net/tun): frames to and from the host's network stack, a bridge,
 *         another VM (net_tap.c);
 *   user  a user-mode NAT (libslirp, net_slirp.c): the guest sees the 10.0.2.0/24 network with
 *         a gateway and host at 10.0.2.2, DNS at 10.0.2.3 and DHCP from 10.0.2.15; its TCP and
 *         UDP become the host's own sockets, and host ports may be forwarded into the guest.
 * A backend hands frames to the device one at a time: net_fd() is readable while net_recv() may
 * have a frame. Frames may carry a virtio_net_hdr in front (hdr_len, the tap with offloads), or
 * none. Sending never blocks; a frame the backend cannot take now is dropped (and counted), as a
 * busy wire would. */
#ifndef FERRY_NET_H
#define FERRY_NET_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* The largest Ethernet frame without FCS: a 64 KiB IP datagram (GSO), a VLAN tag, the header. */
#define NET_FRAME_MAX   (65535 + 4 + 14)
#define NET_MAX_HOSTFWD 16
#define NET_IFNAME_MAX  16 /* IFNAMSIZ, with the NUL */

enum net_kind {
	NET_USER,
	NET_TAP,
};

/* hostfwd=tcp|udp:[hostaddr]:hostport-[guestaddr]:guestport */
struct net_hostfwd {
	bool udp;
	struct in_addr host_addr;  /* INADDR_ANY when not given */
	struct in_addr guest_addr; /* INADDR_ANY: the guest's DHCP address, 10.0.2.15 */
	uint16_t host_port, guest_port;
};

/* One NIC (--net). */
struct net_config {
	enum net_kind kind;
	char ifname[NET_IFNAME_MAX]; /* tap */
	uint8_t mac[6];
	bool offload; /* tap: virtio headers through the tap (IFF_VNET_HDR), offloads offered */
	struct net_hostfwd fwd[NET_MAX_HOSTFWD]; /* user */
	unsigned nfwd;
};

struct net_backend;

struct net_backend_ops {
	/* One frame into buf (cap bytes): its length, 0 when none is waiting, -1 when the backend
	 * broke for good (reported; the device stops reading). A frame longer than cap is
	 * dropped. */
	ssize_t (*recv)(struct net_backend *b, void *buf, size_t cap);
	/* One frame gathered from iov (hdr_len bytes of header first). 0, or -1 if dropped. */
	int (*send)(struct net_backend *b, const struct iovec *iov, int iovcnt);
	/* After a batch of sends. Optional. */
	void (*flush)(struct net_backend *b);
	/* The guest driver accepted these virtio-net features (VIRTIO_NET_F_GUEST_*): the frames
	 * recv gives may use those offloads, and no others. Optional (backends without offloads). */
	void (*guest_features)(struct net_backend *b, uint64_t features);
	void (*close)(struct net_backend *b);
};

struct net_backend {
	const struct net_backend_ops *ops;
	int fd;           /* readable while recv may have a frame */
	unsigned hdr_len; /* bytes of virtio_net_hdr_v1 before each frame, both ways: 0 or 12 */
	bool offloads;    /* the frames may be GSO or have partial checksums (hdr_len 12) */
};

/* Opens the backend cfg describes. NULL with the reason in err; for a tap, errno is EINVAL
 * when the name cannot be a tap's (bad input rather than a host problem). */
struct net_backend *net_tap_open(const struct net_config *cfg, bool offloads, char *err,
				 size_t err_len);
struct net_backend *net_user_open(const struct net_config *cfg, char *err, size_t err_len);

static inline ssize_t net_recv(struct net_backend *b, void *buf, size_t cap)
{
	return b->ops->recv(b, buf, cap);
}
static inline int net_send(struct net_backend *b, const struct iovec *iov, int iovcnt)
{
	return b->ops->send(b, iov, iovcnt);
}
static inline void net_flush(struct net_backend *b)
{
	if (b->ops->flush)
		b->ops->flush(b);
}
static inline void net_close(struct net_backend *b)
{
	if (b)
		b->ops->close(b);
}

/* Parsing for the command line. Each returns 0, or -1 with a one-line reason in err.
 * net_parse_mac is virtio/net.c's, net_parse_hostfwd net_slirp.c's, net_ifname_ok net_tap.c's. */
int net_parse_mac(const char *s, uint8_t mac[6], char *err, size_t err_len);
int net_parse_hostfwd(const char *s, struct net_hostfwd *f, char *err, size_t err_len);
/* Whether name can name a network interface (1..15 bytes, no '/', ':', space or control). */
bool net_ifname_ok(const char *name);

#endif
