/* The TAP backend: one /dev/net/tun file attached to the named TAP interface (IFF_TAP |
 * IFF_NO_PI), non-blocking. An existing interface is attached to (a persistent tap made with
 * `ip tuntap add`, possibly in a bridge); a missing one is created and disappears when ferry
 * closes it. With offloads the file carries a 12-byte virtio_net_hdr_v1 before each frame
 * (IFF_VNET_HDR), which is the device's own header format, so GSO frames and partial checksums
 * pass through unchanged; TUNSETOFFLOAD tells the kernel which of them the guest accepts. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "backend/net.h"
#include "util/log.h"

struct tap {
	struct net_backend base;
	char ifname[NET_IFNAME_MAX];
	unsigned offload; /* TUN_F_* now set */
};

bool net_ifname_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n >= NET_IFNAME_MAX || !strcmp(name, ".") || !strcmp(name, ".."))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c <= ' ' || c >= 0x7f || c == '/' || c == ':')
			return false;
	}
	return true;
}

static ssize_t tap_recv(struct net_backend *b, void *buf, size_t cap)
{
	for (;;) {
		/* One read is one frame. The kernel refuses (EFAULT, frame dropped) a frame that
		 * does not fit; NET_FRAME_MAX fits any a tap can carry. */
		ssize_t n = read(b->fd, buf, cap);
		if (n >= 0)
			return n;
		if (errno == EINTR || errno == EFAULT)
			continue;
		if (errno == EAGAIN)
			return 0;
		log_warn("tap: read: %s (no longer receiving)", strerror(errno));
		return -1;
	}
}

static int tap_send(struct net_backend *b, const struct iovec *iov, int iovcnt)
{
	for (;;) {
		ssize_t n = writev(b->fd, iov, iovcnt);
		if (n >= 0)
			return 0;
		if (errno == EINTR)
			continue;
		/* EAGAIN: the interface's queue is full; EIO: it is down. Both drop, as a wire
		 * would; anything else (EINVAL: a malformed GSO header) too. */
		return -1;
	}
}

static void tap_guest_features(struct net_backend *b, uint64_t f)
{
	struct tap *t = (struct tap *)b;
	unsigned off = 0;
	if (f & (1ull << VIRTIO_NET_F_GUEST_CSUM)) {
		off |= TUN_F_CSUM;
		if (f & (1ull << VIRTIO_NET_F_GUEST_TSO4))
			off |= TUN_F_TSO4;
		if (f & (1ull << VIRTIO_NET_F_GUEST_TSO6))
			off |= TUN_F_TSO6;
		if (off & (TUN_F_TSO4 | TUN_F_TSO6) && f & (1ull << VIRTIO_NET_F_GUEST_ECN))
			off |= TUN_F_TSO_ECN;
	}
	if (off == t->offload)
		return;
	if (ioctl(b->fd, TUNSETOFFLOAD, off) < 0) {
		log_warn("tap %s: TUNSETOFFLOAD: %s", t->ifname, strerror(errno));
		return;
	}
	t->offload = off;
}

static void tap_close(struct net_backend *b)
{
	close(b->fd);
	free(b);
}

static const struct net_backend_ops tap_ops = {
    .recv = tap_recv,
    .send = tap_send,
    .close = tap_close,
};

static const struct net_backend_ops tap_offload_ops = {
    .recv = tap_recv,
    .send = tap_send,
    .guest_features = tap_guest_features,
    .close = tap_close,
};

struct net_backend *net_tap_open(const struct net_config *cfg, bool offloads, char *err,
				 size_t err_len)
{
	if (!net_ifname_ok(cfg->ifname)) {
		set_err(err, err_len, "tap: '%s' is not an interface name", cfg->ifname);
		errno = EINVAL;
		return NULL;
	}
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		set_err(err, err_len, "tap %s: cannot open /dev/net/tun: %s%s", cfg->ifname,
			strerror(errno),
			errno == ENOENT ? " (no TUN/TAP support: load the tun module)" : "");
		return NULL;
	}
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, cfg->ifname, strlen(cfg->ifname));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (offloads ? IFF_VNET_HDR : 0);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int e = errno;
		const char *why = e == EPERM ? " (creating or attaching a tap needs CAP_NET_ADMIN, "
					       "or a tap whose owner you are)"
				  : e == EBUSY  ? " (another program has it open)"
				  : e == EINVAL ? " (is it an interface other than a tap?)"
						: "";
		set_err(err, err_len, "tap %s: cannot attach: %s%s", cfg->ifname, strerror(e), why);
		close(fd);
		errno = e;
		return NULL;
	}
	if (offloads) {
		int hl = (int)sizeof(struct virtio_net_hdr_v1);
		if (ioctl(fd, TUNSETVNETHDRSZ, &hl) < 0 || ioctl(fd, TUNSETOFFLOAD, 0u) < 0) {
			set_err(err, err_len, "tap %s: cannot set up virtio headers: %s",
				cfg->ifname, strerror(errno));
			close(fd);
			return NULL;
		}
	}
	struct tap *t = calloc(1, sizeof(*t));
	if (!t) {
		set_err(err, err_len, "tap %s: out of memory", cfg->ifname);
		close(fd);
		return NULL;
	}
	t->base = (struct net_backend){.ops = offloads ? &tap_offload_ops : &tap_ops,
				       .fd = fd,
				       .hdr_len = offloads ? sizeof(struct virtio_net_hdr_v1) : 0,
				       .offloads = offloads};
	memcpy(t->ifname, cfg->ifname, sizeof(t->ifname));
	return &t->base;
}
