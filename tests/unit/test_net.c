/* Network backends (src/backend/net*.c) and the --net option's pieces: hostfwd, MAC and
 * interface-name parsing; the user-mode NAT answering ARP and turning a host connection to a
 * forwarded port into a SYN towards the guest; the TAP backend in a private network namespace
 * (root only, in a child process), with and without virtio headers, and its errors; and the
 * virtio-net device on the user backend driven as a guest driver drives it (PCI configuration
 * and BAR 0 accesses, rings in guest RAM): ARP through both queues, malformed transmit chains,
 * frames too big for the receive buffers, merged receive buffers, and a receiver without
 * buffers that gets its frame once it adds some. Frames are built by hand. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_net.h>
#include <linux/virtio_pci.h>
#include <linux/virtio_ring.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend/net.h"
#include "dev/pci.h"
#include "vm/bus.h"
#include "vm/device.h"
#include "vm/mem.h"
#include "vm/state.h"
#include "vm/vm.h"

#include "test_vm.h"

#define WAIT_MS 5000
#define ETH_ARP 0x0806
#define ETH_IP  0x0800

static const uint8_t guest_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

/* ---- parsing --------------------------------------------------------------------------------- */

static void test_hostfwd_parse(void **state)
{
	(void)state;
	struct net_hostfwd f;
	char err[200];
	assert_int_equal(net_parse_hostfwd("tcp:127.0.0.1:8080-:80", &f, err, sizeof(err)), 0);
	assert_false(f.udp);
	assert_int_equal(f.host_addr.s_addr, htonl(0x7f000001));
	assert_int_equal(f.host_port, 8080);
	assert_int_equal(f.guest_addr.s_addr, INADDR_ANY);
	assert_int_equal(f.guest_port, 80);

	assert_int_equal(net_parse_hostfwd("udp::5353-10.0.2.16:53", &f, err, sizeof(err)), 0);
	assert_true(f.udp);
	assert_int_equal(f.host_addr.s_addr, INADDR_ANY);
	assert_int_equal(f.host_port, 5353);
	assert_int_equal(f.guest_addr.s_addr, htonl(0x0a000210));
	assert_int_equal(f.guest_port, 53);

	/* An empty protocol is TCP, as in QEMU. */
	assert_int_equal(net_parse_hostfwd("::2222-:22", &f, err, sizeof(err)), 0);
	assert_false(f.udp);
	assert_int_equal(f.host_port, 2222);
	assert_int_equal(f.guest_port, 22);

	static const char *const bad[] = {
	    "",
	    "tcp",
	    "tcp:8080-:80",
	    "sctp::1-:2",
	    "tcp::0-:80",
	    "tcp::65536-:80",
	    "tcp::80-:",
	    "tcp::-:80",
	    "tcp::80:80",
	    "tcp:1.2.3:80-:80",
	    "tcp::80-300.1.1.1:80",
	    "tcp::8x-:80",
	    "tcp::80-:80x",
	    "tcp::+80-:80",
	    "tcp:localhost:80-:80",
	    "tcp::99999999999999999999-:80",
	    "tcp::80-:80-:81",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		if (net_parse_hostfwd(bad[i], &f, err, sizeof(err)) != -1)
			fail_msg("hostfwd=%s was accepted", bad[i]);
		assert_non_null(strstr(err, "hostfwd="));
		assert_null(strchr(err, '\n'));
	}
	char longer[300];
	memset(longer, '1', sizeof(longer) - 1);
	longer[sizeof(longer) - 1] = 0;
	assert_int_equal(net_parse_hostfwd(longer, &f, err, sizeof(err)), -1);
}

static void test_mac_parse(void **state)
{
	(void)state;
	uint8_t m[6] = {0};
	char err[200];
	assert_int_equal(net_parse_mac("52:54:00:ab:CD:ef", m, err, sizeof(err)), 0);
	static const uint8_t want[6] = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};
	assert_memory_equal(m, want, 6);
	static const char *const bad[] = {
	    "",
	    "52:54:00:ab:cd",
	    "52:54:00:ab:cd:ef:01",
	    "52-54-00-ab-cd-ef",
	    "52:54:00:ab:cd:eg",
	    "52:54:0:ab:cd:ef0",
	    " 52:54:00:ab:cd:e",
	    "+2:54:00:ab:cd:ef",
	    "01:00:5e:00:00:01", /* multicast */
	    "ff:ff:ff:ff:ff:ff", /* broadcast */
	    "00:00:00:00:00:00",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(m, want, 6);
		if (net_parse_mac(bad[i], m, err, sizeof(err)) != -1)
			fail_msg("mac=%s was accepted", bad[i]);
		assert_memory_equal(m, want, 6); /* untouched on error */
	}
}

static void test_ifname(void **state)
{
	(void)state;
	assert_true(net_ifname_ok("tap0"));
	assert_true(net_ifname_ok("a"));
	assert_true(net_ifname_ok("fifteen-chars-x"));
	assert_false(net_ifname_ok(""));
	assert_false(net_ifname_ok("sixteen-chars-xx"));
	assert_false(net_ifname_ok("a/b"));
	assert_false(net_ifname_ok("a:1"));
	assert_false(net_ifname_ok("a b"));
	assert_false(net_ifname_ok("tab\t"));
	assert_false(net_ifname_ok("."));
	assert_false(net_ifname_ok(".."));
	assert_false(net_ifname_ok("caf\xc3\xa9"));
}

/* ---- frames ---------------------------------------------------------------------------------- */

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* An ARP request from (mac, ip) for target, padded to the 60-byte minimum. */
static size_t arp_request(uint8_t *f, const uint8_t mac[6], uint32_t ip, uint32_t target)
{
	memset(f, 0, 60);
	memset(f, 0xff, 6);
	memcpy(f + 6, mac, 6);
	f[12] = ETH_ARP >> 8;
	f[13] = ETH_ARP & 0xff;
	uint8_t *a = f + 14;
	a[1] = 1;    /* Ethernet */
	a[2] = 0x08; /* IPv4 */
	a[4] = 6;
	a[5] = 4;
	a[7] = 1; /* request */
	memcpy(a + 8, mac, 6);
	uint32_t nip = htonl(ip), ntarget = htonl(target);
	memcpy(a + 14, &nip, 4);
	memcpy(a + 24, &ntarget, 4);
	return 60;
}

/* Whether f is an ARP reply telling mac's owner (ip) where sender is. */
static bool is_arp_reply(const uint8_t *f, size_t len, const uint8_t mac[6], uint32_t ip,
			 uint32_t sender)
{
	if (len < 42 || be16(f + 12) != ETH_ARP || memcmp(f, mac, 6) != 0)
		return false;
	const uint8_t *a = f + 14;
	uint32_t spa, tpa;
	memcpy(&spa, a + 14, 4);
	memcpy(&tpa, a + 24, 4);
	return be16(a + 6) == 2 && !memcmp(a + 18, mac, 6) && spa == htonl(sender) &&
	       tpa == htonl(ip);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits (bounded) for the backend's next frame. Returns its length, or 0 on time-out. */
static size_t recv_frame(struct net_backend *b, uint8_t *buf, size_t cap, int64_t deadline)
{
	for (;;) {
		ssize_t n = net_recv(b, buf, cap);
		if (n > 0)
			return (size_t)n;
		if (n < 0)
			return 0;
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return 0;
		struct pollfd p = {.fd = b->fd, .events = POLLIN};
		poll(&p, 1, (int)left);
	}
}

static uint16_t free_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
	close(s);
	return ntohs(a.sin_port);
}

/* ---- user-mode NAT --------------------------------------------------------------------------- */

static void test_user_arp_and_hostfwd(void **state)
{
	(void)state;
	struct net_config cfg = {.kind = NET_USER};
	memcpy(cfg.mac, guest_mac, 6);
	uint16_t port = free_port();
	cfg.fwd[0] = (struct net_hostfwd){
	    .host_addr.s_addr = htonl(INADDR_LOOPBACK), .host_port = port, .guest_port = 80};
	cfg.nfwd = 1;
	char err[256];
	struct net_backend *b = net_user_open(&cfg, err, sizeof(err));
	if (!b)
		fail_msg("%s", err);
	assert_int_equal(b->hdr_len, 0);

	/* The same port again cannot be listened on: a clear error, nothing left open. */
	struct net_backend *b2 = net_user_open(&cfg, err, sizeof(err));
	assert_null(b2);
	assert_non_null(strstr(err, "cannot listen"));

	/* The gateway answers ARP (slirp_input on this thread, the reply through the queue). */
	uint8_t *buf = malloc(NET_FRAME_MAX);
	assert_non_null(buf);
	uint8_t f[60];
	size_t len = arp_request(f, guest_mac, 0x0a00020f, 0x0a000202);
	struct iovec iov = {.iov_base = f, .iov_len = len};
	assert_int_equal(net_send(b, &iov, 1), 0);
	net_flush(b);
	int64_t deadline = now_ms() + WAIT_MS;
	bool got = false;
	while (!got && (len = recv_frame(b, buf, NET_FRAME_MAX, deadline)) > 0)
		got = is_arp_reply(buf, len, guest_mac, 0x0a00020f, 0x0a000202);
	assert_true(got);

	/* A host connection to the forwarded port: slirp's thread accepts it and opens a TCP
	 * connection to the guest's port 80 (a SYN to 10.0.2.15). */
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(s >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons(port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int rc = connect(s, (struct sockaddr *)&a, sizeof(a));
	assert_true(rc == 0 || errno == EINPROGRESS);
	deadline = now_ms() + WAIT_MS;
	got = false;
	while (!got && (len = recv_frame(b, buf, NET_FRAME_MAX, deadline)) > 0) {
		const uint8_t *ip = buf + 14;
		if (len < 14 + 20 + 20 || be16(buf + 12) != ETH_IP || (ip[0] >> 4) != 4 ||
		    ip[9] != 6)
			continue;
		const uint8_t *tcp = ip + (ip[0] & 15) * 4;
		if ((size_t)(tcp + 20 - buf) > len)
			continue;
		uint32_t dst;
		memcpy(&dst, ip + 16, 4);
		got = be16(tcp + 2) == 80 && (tcp[13] & 0x02) && dst == htonl(0x0a00020f) &&
		      !memcmp(buf, guest_mac, 6);
	}
	close(s);
	free(buf);
	net_close(b);
	assert_true(got);
}

static void test_user_oversized_send(void **state)
{
	(void)state;
	struct net_config cfg = {.kind = NET_USER};
	char err[256];
	struct net_backend *b = net_user_open(&cfg, err, sizeof(err));
	if (!b)
		fail_msg("%s", err);
	/* More than a frame can be: refused, not copied past the backend's buffer. */
	static uint8_t big[NET_FRAME_MAX];
	struct iovec iov[2] = {{big, sizeof(big)}, {big, 1}};
	assert_int_equal(net_send(b, iov, 2), -1);
	/* Runt and junk frames go to slirp, which must shrug them off. */
	uint8_t junk[64];
	for (size_t n = 0; n <= sizeof(junk); n += 7) {
		memset(junk, (int)n, sizeof(junk));
		struct iovec j = {junk, n};
		assert_int_equal(net_send(b, &j, 1), 0);
	}
	net_flush(b);
	net_close(b);
}

/* ---- TAP, in a private network namespace --------------------------------------------------- */

static int if_setup(const char *name, uint32_t ip)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0)
		return -1;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(ip);
	int rc = ioctl(s, SIOCSIFADDR, &ifr);
	sin->sin_addr.s_addr = htonl(0xffffff00);
	rc = rc < 0 ? rc : ioctl(s, SIOCSIFNETMASK, &ifr);
	rc = rc < 0 ? rc : ioctl(s, SIOCGIFFLAGS, &ifr);
	ifr.ifr_flags |= IFF_UP;
	rc = rc < 0 ? rc : ioctl(s, SIOCSIFFLAGS, &ifr);
	close(s);
	return rc;
}

/* The kernel behind the tap answers an ARP request. Returns 0, or the failing step. */
static int tap_arp(bool offload)
{
	static const uint8_t mac[6] = {0x52, 0x54, 0x00, 0x77, 0x00, 0x02};
	struct net_config cfg = {.kind = NET_TAP};
	snprintf(cfg.ifname, sizeof(cfg.ifname), "%s", offload ? "fttap1" : "fttap0");
	char err[256];
	struct net_backend *b = net_tap_open(&cfg, offload, err, sizeof(err));
	if (!b) {
		fprintf(stderr, "%s\n", err);
		return 10;
	}
	int rc = 0;
	unsigned hl = b->hdr_len;
	if (hl != (offload ? 12u : 0u) || b->offloads != offload)
		rc = 11;
	/* A second opener of the same (single-queue) tap is told it is busy. */
	struct net_backend *b2 = net_tap_open(&cfg, offload, err, sizeof(err));
	if (!rc && (b2 || !strstr(err, "another program")))
		rc = 12;
	net_close(b2);
	uint32_t host_ip = offload ? 0xc0a84f01 : 0xc0a84e01; /* 192.168.79.1 / .78.1 */
	if (!rc && if_setup(cfg.ifname, host_ip) < 0)
		rc = 13;
	uint8_t hdr[12] = {0}, f[60];
	size_t len = arp_request(f, mac, host_ip + 1, host_ip);
	struct iovec iov[2] = {{hdr, hl}, {f, len}};
	if (!rc && net_send(b, hl ? iov : iov + 1, hl ? 2 : 1) < 0)
		rc = 14;
	uint8_t *buf = malloc(NET_FRAME_MAX + hl);
	bool got = false;
	int64_t deadline = now_ms() + WAIT_MS;
	while (!rc && buf && !got && (len = recv_frame(b, buf, NET_FRAME_MAX + hl, deadline)) > 0)
		got = len > hl && is_arp_reply(buf + hl, len - hl, mac, host_ip + 1, host_ip);
	if (!rc && !got)
		rc = 15;
	if (!rc && offload && b->ops->guest_features) /* accepted without complaint */
		b->ops->guest_features(b, 0x3ff);
	free(buf);
	net_close(b);
	return rc;
}

static int tap_child(void)
{
	if (unshare(CLONE_NEWNET) < 0)
		return 77;
	int rc = tap_arp(false);
	if (!rc)
		rc = tap_arp(true);
	if (rc)
		return rc;
	/* Errors: an interface that is not a tap, and a name that cannot be one. */
	struct net_config cfg = {.kind = NET_TAP};
	char err[256];
	snprintf(cfg.ifname, sizeof(cfg.ifname), "lo");
	if (net_tap_open(&cfg, false, err, sizeof(err)) || !strstr(err, "tap lo: cannot attach"))
		return 20;
	snprintf(cfg.ifname, sizeof(cfg.ifname), "a/b");
	if (net_tap_open(&cfg, false, err, sizeof(err)) || !strstr(err, "not an interface name"))
		return 21;
	return 0;
}

static void test_tap(void **state)
{
	(void)state;
	if (geteuid() != 0 || access("/dev/net/tun", R_OK | W_OK) != 0)
		skip();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(tap_child());
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77)
		skip(); /* no network namespaces here */
	if (WEXITSTATUS(st) != 0)
		fail_msg("tap check failed at step %d", WEXITSTATUS(st));
}

/* ---- the device, driven as a guest driver ---------------------------------------------------- */

#define RAM_SIZE   (16ull << 20)
#define NET_SLOT   1
#define OFF_DEVICE 0x2000
#define OFF_NOTIFY 0x3000
#define QSIZE      64
#define RX_RINGS   0x10000ull
#define TX_RINGS   0x20000ull
#define RX_BUFS    0x100000ull /* receive buffers, 0x800 apart */
#define TX_BUFS    0x200000ull
#define BIG_BUF    0x400000ull /* an oversized transmit frame */
#define QUIET_MS   200

static int test_irq_line(struct vm *vm, unsigned gsi, int level)
{
	(void)vm;
	(void)gsi;
	(void)level;
	return 0;
}

static int test_msi(struct vm *vm, uint64_t addr, uint32_t data)
{
	(void)vm;
	(void)addr;
	(void)data;
	return 0;
}

static const struct engine_ops test_engine = {
    .name = "test", .irq_line = test_irq_line, .msi = test_msi};

struct tvm {
	struct vm vm;
	struct vm_config cfg;
};

static struct tvm *tvm_new(void)
{
	static const char *const types[] = {"pci", "virtio-net", NULL};
	struct tvm *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	t->cfg.mem_size = RAM_SIZE;
	t->cfg.smp = 1;
	t->cfg.serial = "none";
	t->cfg.nics[0] = (struct net_config){.kind = NET_USER};
	memcpy(t->cfg.nics[0].mac, guest_mac, 6);
	t->cfg.nnics = 1;
	assert_int_equal(test_vm_init(&t->vm, &t->cfg, &test_engine), 0);
	assert_int_equal(test_vm_add_devices(&t->vm, types), 0);
	return t;
}

static void tvm_free(struct tvm *t)
{
	test_vm_destroy(&t->vm);
	free(t);
}

static void *ram(struct tvm *t, uint64_t gpa, uint64_t len)
{
	return test_ram(&t->vm, gpa, len);
}

static uint32_t cfg_rd(struct tvm *t, unsigned off, unsigned size)
{
	return test_cfg_rd(&t->vm, NET_SLOT, 0, off, size);
}

static void cfg_wr(struct tvm *t, unsigned off, uint32_t v, unsigned size)
{
	test_cfg_wr(&t->vm, NET_SLOT, 0, off, v, size);
}

struct dq {
	uint64_t rings; /* descriptors; avail +0x1000; used +0x2000 */
	uint16_t avail_idx, used_idx, next_desc;
};

struct drv {
	struct tvm *t;
	uint64_t bar;
	struct dq q[2];
};

static uint64_t rd(struct drv *d, unsigned off, unsigned size)
{
	return test_bus_rd(&d->t->vm.mmio, d->bar + off, size);
}

static void wr(struct drv *d, unsigned off, uint64_t v, unsigned size)
{
	test_bus_wr(&d->t->vm.mmio, d->bar + off, v, size);
}

static void drv_setup(struct drv *d, struct tvm *t, uint64_t features)
{
	memset(d, 0, sizeof(*d));
	d->t = t;
	d->bar = cfg_rd(t, 0x10, 4) & ~0xfu;
	d->q[0].rings = RX_RINGS;
	d->q[1].rings = TX_RINGS;
	cfg_wr(t, 0x04, 0x0006, 2); /* memory space, bus master */
	wr(d, VIRTIO_PCI_COMMON_STATUS, 0, 1);
	wr(d, VIRTIO_PCI_COMMON_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER, 1);
	wr(d, VIRTIO_PCI_COMMON_GFSELECT, 0, 4);
	wr(d, VIRTIO_PCI_COMMON_GF, (uint32_t)features, 4);
	wr(d, VIRTIO_PCI_COMMON_GFSELECT, 1, 4);
	wr(d, VIRTIO_PCI_COMMON_GF, (uint32_t)(features >> 32), 4);
	uint8_t s =
	    VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
	wr(d, VIRTIO_PCI_COMMON_STATUS, s, 1);
	assert_int_equal(rd(d, VIRTIO_PCI_COMMON_STATUS, 1), s);
	for (unsigned q = 0; q < 2; q++) {
		uint64_t r = d->q[q].rings;
		memset(ram(t, r, 0x3000), 0, 0x3000);
		wr(d, VIRTIO_PCI_COMMON_Q_SELECT, q, 2);
		wr(d, VIRTIO_PCI_COMMON_Q_SIZE, QSIZE, 2);
		wr(d, VIRTIO_PCI_COMMON_Q_DESCLO, (uint32_t)r, 4);
		wr(d, VIRTIO_PCI_COMMON_Q_DESCHI, 0, 4);
		wr(d, VIRTIO_PCI_COMMON_Q_AVAILLO, (uint32_t)(r + 0x1000), 4);
		wr(d, VIRTIO_PCI_COMMON_Q_AVAILHI, 0, 4);
		wr(d, VIRTIO_PCI_COMMON_Q_USEDLO, (uint32_t)(r + 0x2000), 4);
		wr(d, VIRTIO_PCI_COMMON_Q_USEDHI, 0, 4);
		wr(d, VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
	}
	wr(d, VIRTIO_PCI_COMMON_STATUS, s | VIRTIO_CONFIG_S_DRIVER_OK, 1);
}

struct seg {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

/* Makes one chain available on queue q and notifies. */
static void drv_add(struct drv *d, unsigned q, const struct seg *s, unsigned n)
{
	struct dq *dq = &d->q[q];
	uint16_t head = dq->next_desc;
	for (unsigned i = 0; i < n; i++) {
		uint16_t at = (uint16_t)((head + i) % QSIZE);
		struct vring_desc v = {.addr = s[i].gpa,
				       .len = s[i].len,
				       .flags = (uint16_t)((s[i].write ? VRING_DESC_F_WRITE : 0) |
							   (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
				       .next = (uint16_t)((at + 1) % QSIZE)};
		memcpy(ram(d->t, dq->rings + 16ull * at, sizeof(v)), &v, sizeof(v));
	}
	dq->next_desc = (uint16_t)((head + n) % QSIZE);
	uint16_t *avail = ram(d->t, dq->rings + 0x1000, 4 + 2 * QSIZE);
	avail[2 + dq->avail_idx % QSIZE] = head;
	dq->avail_idx++;
	__atomic_store_n(&avail[1], dq->avail_idx, __ATOMIC_RELEASE);
	wr(d, OFF_NOTIFY + 4 * q, q, 2);
}

static uint16_t used_index(struct drv *d, unsigned q)
{
	uint16_t *used = ram(d->t, d->q[q].rings + 0x2000, 4);
	return __atomic_load_n(&used[1], __ATOMIC_ACQUIRE);
}

/* Waits (bounded) until queue q has n used entries the driver has not taken; false on time-out
 * (after ms). */
static bool drv_wait(struct drv *d, unsigned q, unsigned n, int ms)
{
	int64_t end = now_ms() + ms;
	while ((uint16_t)(used_index(d, q) - d->q[q].used_idx) < n) {
		if (now_ms() > end)
			return false;
		usleep(200);
	}
	return true;
}

static uint32_t drv_take(struct drv *d, unsigned q, uint16_t *id)
{
	struct vring_used_elem e;
	struct dq *dq = &d->q[q];
	memcpy(&e, ram(d->t, dq->rings + 0x2000 + 4 + 8ull * (dq->used_idx % QSIZE), 8), 8);
	dq->used_idx++;
	*id = (uint16_t)e.id;
	return e.len;
}

/* Sends an ARP request for the gateway (header and frame in two segments). */
static void send_arp(struct drv *d)
{
	uint8_t *p = ram(d->t, TX_BUFS, 12 + 60);
	memset(p, 0, 12);
	size_t len = arp_request(p + 12, guest_mac, 0x0a00020f, 0x0a000202);
	struct seg s[2] = {{TX_BUFS, 12, false}, {TX_BUFS + 12, (uint32_t)len, false}};
	drv_add(d, 1, s, 2);
	assert_true(drv_wait(d, 1, 1, WAIT_MS));
	uint16_t id;
	assert_int_equal(drv_take(d, 1, &id), 0);
}

static void add_rx(struct drv *d, unsigned i, uint32_t len)
{
	struct seg s = {RX_BUFS + 0x800ull * i, len, true};
	memset(ram(d->t, s.gpa, len), 0xee, len);
	drv_add(d, 0, &s, 1);
}

static bool needs_reset(struct drv *d)
{
	return rd(d, VIRTIO_PCI_COMMON_STATUS, 1) & VIRTIO_CONFIG_S_NEEDS_RESET;
}

/* Takes k used receive chains made of buffers of size bufsz from buffer first on: the frame,
 * header first, must be an ARP reply from the gateway, its num_buffers k. */
static void expect_arp_reply(struct drv *d, unsigned first, unsigned k, uint32_t bufsz)
{
	uint8_t got[2048];
	size_t total = 0;
	for (unsigned i = 0; i < k; i++) {
		uint16_t id;
		uint32_t len = drv_take(d, 0, &id);
		assert_true(len <= bufsz && total + len <= sizeof(got));
		if (i + 1 < k)
			assert_int_equal(len, bufsz); /* only the last buffer is partly filled */
		memcpy(got + total, ram(d->t, RX_BUFS + 0x800ull * (first + i), len), len);
		total += len;
	}
	struct virtio_net_hdr_v1 h;
	assert_true(total > sizeof(h));
	memcpy(&h, got, sizeof(h));
	assert_int_equal(h.num_buffers, k);
	assert_int_equal(h.flags, 0);
	assert_int_equal(h.gso_type, VIRTIO_NET_HDR_GSO_NONE);
	assert_true(is_arp_reply(got + 12, total - 12, guest_mac, 0x0a00020f, 0x0a000202));
}

static void test_device(void **state)
{
	(void)state;
	struct tvm *t = tvm_new();
	assert_int_equal(cfg_rd(t, 0x00, 2), 0x1af4);
	assert_int_equal(cfg_rd(t, 0x02, 2), 0x1040 + VIRTIO_ID_NET);
	assert_int_equal(cfg_rd(t, 0x08, 4) >> 8, 0x020000);
	struct drv d;
	drv_setup(&d, t,
		  1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_NET_F_MAC |
		      1ull << VIRTIO_NET_F_STATUS);
	for (unsigned i = 0; i < 6; i++)
		assert_int_equal(rd(&d, OFF_DEVICE + i, 1), guest_mac[i]);
	assert_int_equal(rd(&d, OFF_DEVICE + 6, 2), VIRTIO_NET_S_LINK_UP);
	wr(&d, VIRTIO_PCI_COMMON_DFSELECT, 0, 4);
	uint64_t offered = rd(&d, VIRTIO_PCI_COMMON_DF, 4);
	assert_true(offered & 1ull << VIRTIO_NET_F_MRG_RXBUF);
	assert_false(offered & 1ull << VIRTIO_NET_F_CSUM); /* the user backend has no offloads */

	/* No receive buffers yet: the reply waits in the device, then arrives when one is added. */
	send_arp(&d);
	assert_false(drv_wait(&d, 0, 1, QUIET_MS));
	add_rx(&d, 0, 1526);
	assert_true(drv_wait(&d, 0, 1, WAIT_MS));
	expect_arp_reply(&d, 0, 1, 1526);

	/* Malformed transmit chains are dropped, each returned, and the device keeps working. */
	memset(ram(t, BIG_BUF, NET_FRAME_MAX + 13), 0, NET_FRAME_MAX + 13);
	struct seg runt = {TX_BUFS, 5, false}, hdr_only = {TX_BUFS, 12, false},
		   huge = {BIG_BUF, NET_FRAME_MAX + 13, false};
	drv_add(&d, 1, &runt, 1);
	drv_add(&d, 1, &hdr_only, 1);
	drv_add(&d, 1, &huge, 1);
	assert_true(drv_wait(&d, 1, 3, WAIT_MS));
	for (unsigned i = 0; i < 3; i++) {
		uint16_t id;
		assert_int_equal(drv_take(&d, 1, &id), 0);
	}
	assert_false(needs_reset(&d));
	add_rx(&d, 1, 1526);
	send_arp(&d);
	assert_true(drv_wait(&d, 0, 1, WAIT_MS));
	expect_arp_reply(&d, 1, 1, 1526);

	/* Without merged buffers a frame that does not fit the buffer is dropped, the buffer kept. */
	add_rx(&d, 2, 40);
	send_arp(&d);
	assert_false(drv_wait(&d, 0, 1, QUIET_MS));
	assert_false(needs_reset(&d));

	/* With merged buffers it spreads over small ones; one buffer short, it waits for more. */
	drv_setup(&d, t,
		  1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_NET_F_MAC |
		      1ull << VIRTIO_NET_F_MRG_RXBUF);
	add_rx(&d, 0, 20);
	send_arp(&d);
	assert_false(drv_wait(&d, 0, 1, QUIET_MS));
	for (unsigned i = 1; i < 8; i++)
		add_rx(&d, i, 20);
	/* 12 + 42 or more bytes: at least three buffers, and none more than needed. */
	assert_true(drv_wait(&d, 0, 1, WAIT_MS));
	struct virtio_net_hdr_v1 h;
	memcpy(&h, ram(t, RX_BUFS, sizeof(h)), sizeof(h));
	unsigned k = h.num_buffers;
	assert_true(k >= 3 && k <= 4);
	assert_true(drv_wait(&d, 0, k, WAIT_MS));
	assert_false(drv_wait(&d, 0, k + 1, QUIET_MS));
	expect_arp_reply(&d, 0, k, 20);
	tvm_free(t);
}

/* Saves every device record of t into w, in list order. */
static void save_all(struct tvm *t, struct state_writer *w)
{
	for (struct device *dev = t->vm.devices; dev; dev = dev->next)
		dev->save(dev->opaque, w);
	assert_false(w->err);
}

/* A snapshot taken while the device holds a receive chain and a frame waits for more buffers:
 * a second VM loaded from it (RAM copied, records loaded in order) takes the held chain again
 * and delivers the waiting frame over it and the buffers its driver adds after the restore. A
 * record cut short anywhere is refused. */
static void test_device_snapshot(void **state)
{
	(void)state;
	struct tvm *t = tvm_new();
	struct drv d;
	drv_setup(&d, t,
		  1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_NET_F_MAC |
		      1ull << VIRTIO_NET_F_MRG_RXBUF);
	add_rx(&d, 0, 20);
	send_arp(&d);
	assert_false(drv_wait(&d, 0, 1, QUIET_MS)); /* buffer 0 held, the reply waiting */

	struct state_writer w;
	sw_init(&w);
	save_all(t, &w);
	struct tvm *t2 = tvm_new();
	memcpy(ram(t2, 0, RAM_SIZE), ram(t, 0, RAM_SIZE), RAM_SIZE);
	tvm_free(t);
	struct state_reader r;
	sr_init(&r, w.buf, w.len);
	for (struct device *dev = t2->vm.devices; dev; dev = dev->next)
		assert_int_equal(dev->load(dev->opaque, &r), 0);
	assert_int_equal(r.off, w.len);

	struct drv d2 = d;
	d2.t = t2;
	for (unsigned i = 1; i < 8; i++)
		add_rx(&d2, i, 20);
	assert_true(drv_wait(&d2, 0, 1, WAIT_MS));
	struct virtio_net_hdr_v1 h;
	memcpy(&h, ram(t2, RX_BUFS, sizeof(h)), sizeof(h)); /* in buffer 0: the held one */
	unsigned k = h.num_buffers;
	assert_true(k >= 3 && k <= 4);
	assert_true(drv_wait(&d2, 0, k, WAIT_MS));
	expect_arp_reply(&d2, 0, k, 20);
	assert_false(needs_reset(&d2));

	/* Every truncation of the net device's own record is refused. */
	struct device *net = t2->vm.devices; /* created last: first in the list */
	struct state_writer w2;
	sw_init(&w2);
	net->save(net->opaque, &w2);
	for (size_t cut = 0; cut < w2.len; cut += 1 + cut / 8) {
		sr_init(&r, w2.buf, cut);
		assert_int_equal(net->load(net->opaque, &r), -1);
	}
	sw_free(&w2);
	sw_free(&w);
	tvm_free(t2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hostfwd_parse),
	    cmocka_unit_test(test_mac_parse),
	    cmocka_unit_test(test_ifname),
	    cmocka_unit_test(test_user_arp_and_hostfwd),
	    cmocka_unit_test(test_user_oversized_send),
	    cmocka_unit_test(test_tap),
	    cmocka_unit_test(test_device),
	    cmocka_unit_test(test_device_snapshot),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
