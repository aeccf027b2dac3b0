/* The PCI bus (src/dev/pci.c), the virtio 1.x PCI transport (src/virtio/virtio_pci.c) and the
 * virtio-blk and virtio-rng models, driven exactly as a guest drives them: configuration
 * mechanism #1 on the port bus (0xcf8/0xcfc), BAR 0 on the MMIO bus, virtqueues laid out in guest
 * RAM. The devices' worker threads serve the queues asynchronously, so every wait is a bounded
 * poll on the used index. The only test double is the engine: it records INTx levels
 * (engine_ops.irq_line) and MSIs (engine_ops.msi) and has no ioeventfd/irqfd, so the transport
 * takes its direct paths. Snapshot records are saved from one VM and loaded into a second one
 * built the same way; a seeded random test throws config-space and BAR accesses at the bus.
 * The last tests pin down bugs this file found in src/ (now fixed). */
#include <fcntl.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <linux/virtio_pci.h>
#include <linux/virtio_ring.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dev/pci.h"
#include "vm/bus.h"
#include "vm/device.h"
#include "vm/mem.h"
#include "vm/state.h"
#include "vm/vm.h"

#include "test_vm.h"

#define RAM_SIZE     (16ull << 20)
#define DISK_SIZE    (4ull << 20)
#define DISK_SECTORS (DISK_SIZE / 512)
#define BLK_SLOT     1
#define RNG_SLOT     2
#define BAR0_SIZE    0x8000u
#define BLK_QMAX     256 /* the queue size virtio-blk offers */
#define RNG_QMAX     64

/* BAR 0 layout as the capabilities announce it (checked in test_enumeration). */
#define OFF_ISR      0x1000
#define OFF_DEVICE   0x2000
#define OFF_NOTIFY   0x3000
#define OFF_TABLE    0x4000
#define OFF_PBA      0x5000

#define CMD_IO       0x0001
#define CMD_MEM      0x0002
#define CMD_MASTER   0x0004
#define CMD_INTX_OFF 0x0400
#define STS_INTX     0x0008
#define STS_CAPS     0x0010
#define MSIX_ENABLE  0x8000
#define MSIX_FMASK   0x4000

#define S_ACK        VIRTIO_CONFIG_S_ACKNOWLEDGE
#define S_DRIVER     VIRTIO_CONFIG_S_DRIVER
#define S_FEAT_OK    VIRTIO_CONFIG_S_FEATURES_OK
#define S_DRIVER_OK  VIRTIO_CONFIG_S_DRIVER_OK
#define S_NEEDS_RST  VIRTIO_CONFIG_S_NEEDS_RESET
#define S_ALL        (S_ACK | S_DRIVER | S_FEAT_OK | S_DRIVER_OK)

#define F_VERSION_1  (1ull << VIRTIO_F_VERSION_1)
#define F_INDIRECT   (1ull << VIRTIO_RING_F_INDIRECT_DESC)
#define F_EVENT_IDX  (1ull << VIRTIO_RING_F_EVENT_IDX)

#define BAD_GPA      0xffffffff0000ull /* far outside any RAM */
#define WAIT_MS      5000              /* bound of every wait for the worker */
#define QUIET_MS     50                /* how long "nothing happens" is watched */
#define BLK_RINGS    0x10000ull        /* guest-physical homes of the two drivers' rings */
#define RNG_RINGS    0x20000ull
#define DATA_GPA     0x100000ull /* request data buffers */
#define DATA2_GPA    0x200000ull /* where data is read back into */

/* ---- the test engine: records interrupt lines and MSIs ------------------------------------ */

#define NLINES  32
#define MAX_MSI 8192

static atomic_int irq_level[NLINES];
static pthread_mutex_t msi_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	uint64_t addr;
	uint32_t data;
} msis[MAX_MSI];
static unsigned nmsi;

static int test_irq_line(struct vm *vm, unsigned gsi, int level)
{
	(void)vm;
	if (gsi < NLINES)
		atomic_store(&irq_level[gsi], level);
	return 0;
}

static int test_msi(struct vm *vm, uint64_t addr, uint32_t data)
{
	(void)vm;
	pthread_mutex_lock(&msi_lock);
	if (nmsi < MAX_MSI) {
		msis[nmsi].addr = addr;
		msis[nmsi].data = data;
	}
	nmsi++;
	pthread_mutex_unlock(&msi_lock);
	return 0;
}

static const struct engine_ops test_engine = {
    .name = "test", .irq_line = test_irq_line, .msi = test_msi};

static unsigned msi_count(void)
{
	pthread_mutex_lock(&msi_lock);
	unsigned n = nmsi;
	pthread_mutex_unlock(&msi_lock);
	return n;
}

static void msi_get(unsigned i, uint64_t *addr, uint32_t *data)
{
	assert_true(i < MAX_MSI && i < msi_count());
	pthread_mutex_lock(&msi_lock);
	*addr = msis[i].addr;
	*data = msis[i].data;
	pthread_mutex_unlock(&msi_lock);
}

static int level(unsigned gsi)
{
	return atomic_load(&irq_level[gsi]);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the test VM ------------------------------------------------------------------------- */

struct tvm {
	struct vm vm;
	struct vm_config cfg;
};

/* The bus before its devices; blk then rng gives BLK_SLOT and RNG_SLOT. */
static const char *const wanted[] = {"pci", "virtio-blk", "virtio-rng", NULL};

static struct tvm *tvm_new(const char *disk)
{
	struct tvm *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	for (int i = 0; i < NLINES; i++)
		atomic_store(&irq_level[i], 0);
	pthread_mutex_lock(&msi_lock);
	nmsi = 0;
	pthread_mutex_unlock(&msi_lock);
	t->cfg.mem_size = RAM_SIZE;
	t->cfg.smp = 1;
	t->cfg.serial = "none";
	t->cfg.drives[0] = (struct vm_drive){.file = disk, .format = BLOCK_RAW};
	t->cfg.ndrives = 1;
	t->cfg.rng = true;
	assert_int_equal(test_vm_init(&t->vm, &t->cfg, &test_engine), 0);
	assert_int_equal(test_vm_add_devices(&t->vm, wanted), 0);
	return t;
}

static void tvm_free(struct tvm *t)
{
	test_vm_destroy(&t->vm);
	free(t);
}

struct fix {
	char disk[64];
	struct tvm *t;
};

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	snprintf(f->disk, sizeof(f->disk), "/tmp/ferry-vpci-XXXXXX");
	int fd = mkstemp(f->disk);
	if (fd < 0 || ftruncate(fd, (off_t)DISK_SIZE) < 0) {
		free(f);
		return -1;
	}
	close(fd);
	f->t = tvm_new(f->disk);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;
	if (f->t)
		tvm_free(f->t);
	unlink(f->disk);
	free(f);
	return 0;
}

/* ---- bus accesses as a guest makes them -------------------------------------------------- */

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t pio_rd(struct tvm *t, uint16_t port, unsigned size)
{
	return test_bus_rd(&t->vm.pio, port, size);
}

static void pio_wr(struct tvm *t, uint16_t port, uint64_t v, unsigned size)
{
	test_bus_wr(&t->vm.pio, port, v, size);
}

static uint64_t mmio_rd(struct tvm *t, uint64_t addr, unsigned size)
{
	return test_bus_rd(&t->vm.mmio, addr, size);
}

static void mmio_wr(struct tvm *t, uint64_t addr, uint64_t v, unsigned size)
{
	test_bus_wr(&t->vm.mmio, addr, v, size);
}

static uint32_t cfg_rd_fn(struct tvm *t, unsigned slot, unsigned fn, unsigned off, unsigned size)
{
	return test_cfg_rd(&t->vm, slot, fn, off, size);
}

static uint32_t cfg_rd(struct tvm *t, unsigned slot, unsigned off, unsigned size)
{
	return test_cfg_rd(&t->vm, slot, 0, off, size);
}

static void cfg_wr(struct tvm *t, unsigned slot, unsigned off, uint32_t v, unsigned size)
{
	test_cfg_wr(&t->vm, slot, 0, off, v, size);
}

static uint64_t bar0(struct tvm *t, unsigned slot)
{
	return cfg_rd(t, slot, 0x10, 4) & ~0xfu;
}

static void *ram(struct tvm *t, uint64_t gpa, uint64_t len)
{
	return test_ram(&t->vm, gpa, len);
}

/* ---- capabilities ------------------------------------------------------------------------- */

struct caps {
	unsigned vendor[6]; /* config-space offset of the first vendor cap of each cfg_type */
	unsigned msix;
};

/* Walks the list, checking every entry's placement; fills c with what it found. */
static void walk_caps(struct tvm *t, unsigned slot, struct caps *c)
{
	struct {
		uint32_t start, len;
	} region[8];
	unsigned nregion = 0, count = 0;
	memset(c, 0, sizeof(*c));
	assert_true(cfg_rd(t, slot, 0x06, 2) & STS_CAPS);
	for (unsigned p = cfg_rd(t, slot, 0x34, 1); p; p = cfg_rd(t, slot, p + 1, 1)) {
		assert_true(p >= 0x40 && p <= 0xfc && p % 4 == 0);
		assert_true(++count <= 48); /* no loop */
		unsigned id = cfg_rd(t, slot, p, 1);
		if (id == 0x09) {
			unsigned len = cfg_rd(t, slot, p + 2, 1), type = cfg_rd(t, slot, p + 3, 1);
			uint32_t off = cfg_rd(t, slot, p + 8, 4),
				 length = cfg_rd(t, slot, p + 12, 4);
			assert_true(len >= sizeof(struct virtio_pci_cap) &&
				    p + len <= PCI_CFG_SIZE);
			assert_true(type >= 1 && type <= 5);
			/* Every region is in BAR 0 (the PCI_CFG window's fields are the driver's). */
			if (type != VIRTIO_PCI_CAP_PCI_CFG)
				assert_int_equal(cfg_rd(t, slot, p + 4, 1), 0);
			if (!c->vendor[type])
				c->vendor[type] = p;
			switch (type) {
			case VIRTIO_PCI_CAP_COMMON_CFG:
				assert_true(length >= 0x38);
				break;
			case VIRTIO_PCI_CAP_NOTIFY_CFG:
				assert_true(len >= sizeof(struct virtio_pci_notify_cap));
				/* queue 0 notifies at off + 0 * multiplier: 2 bytes must fit */
				assert_true(length >= 2);
				assert_true(cfg_rd(t, slot, p + 16, 4) % 2 == 0);
				break;
			case VIRTIO_PCI_CAP_ISR_CFG:
				assert_true(length >= 1);
				break;
			case VIRTIO_PCI_CAP_PCI_CFG:
				assert_int_equal(len, sizeof(struct virtio_pci_cfg_cap));
				break;
			default:
				break;
			}
			if (type != VIRTIO_PCI_CAP_PCI_CFG) {
				assert_true(length > 0 && off < BAR0_SIZE &&
					    length <= BAR0_SIZE - off);
				assert_true(nregion < 8);
				region[nregion].start = off;
				region[nregion++].len = length;
			}
		} else if (id == 0x11) {
			c->msix = p;
			unsigned n = (cfg_rd(t, slot, p + 2, 2) & 0x7ff) + 1;
			uint32_t table = cfg_rd(t, slot, p + 4, 4), pba = cfg_rd(t, slot, p + 8, 4);
			assert_int_equal(table & 7, 0); /* BIR 0 */
			assert_int_equal(pba & 7, 0);
			assert_true(nregion + 2 <= 8);
			region[nregion].start = table;
			region[nregion++].len = 16 * n;
			region[nregion].start = pba & ~7u;
			region[nregion++].len = (n + 63) / 64 * 8;
			assert_true(table + 16 * n <= BAR0_SIZE && (pba & ~7u) + 8 <= BAR0_SIZE);
		} else {
			fail_msg("slot %u: unexpected capability 0x%x at 0x%x", slot, id, p);
		}
	}
	for (unsigned i = 0; i < nregion; i++)
		for (unsigned j = i + 1; j < nregion; j++)
			assert_false(region[i].start < region[j].start + region[j].len &&
				     region[j].start < region[i].start + region[i].len);
	assert_true(c->vendor[VIRTIO_PCI_CAP_COMMON_CFG] && c->vendor[VIRTIO_PCI_CAP_NOTIFY_CFG] &&
		    c->vendor[VIRTIO_PCI_CAP_ISR_CFG] && c->vendor[VIRTIO_PCI_CAP_PCI_CFG] &&
		    c->msix);
}

/* ---- a virtio driver ----------------------------------------------------------------------- */

struct drv {
	struct tvm *t;
	unsigned slot;
	uint64_t bar;
	uint64_t rings; /* descriptor table; avail +0x1000, used +0x2000, indirect tables +0x3000,
			 * blk headers +0x6000, status bytes +0x7000 */
	uint16_t qsize;
	uint64_t features;
	bool msix;
	uint16_t avail_idx; /* the driver's next available index */
	uint16_t used_idx;  /* used entries the driver has taken */
	uint16_t next_desc;
	int used_event; /* >= 0: what to publish as used_event instead of used_idx */
};

static uint64_t d_desc(const struct drv *d)
{
	return d->rings;
}
static uint64_t d_avail(const struct drv *d)
{
	return d->rings + 0x1000;
}
static uint64_t d_used(const struct drv *d)
{
	return d->rings + 0x2000;
}

static uint64_t cc_rd(struct drv *d, unsigned off, unsigned size)
{
	return mmio_rd(d->t, d->bar + off, size);
}

static void cc_wr(struct drv *d, unsigned off, uint64_t v, unsigned size)
{
	mmio_wr(d->t, d->bar + off, v, size);
}

static uint8_t dev_status(struct drv *d)
{
	return (uint8_t)cc_rd(d, VIRTIO_PCI_COMMON_STATUS, 1);
}

static void set_status(struct drv *d, uint8_t s)
{
	cc_wr(d, VIRTIO_PCI_COMMON_STATUS, s, 1);
}

static uint64_t device_features(struct drv *d)
{
	cc_wr(d, VIRTIO_PCI_COMMON_DFSELECT, 0, 4);
	uint64_t lo = cc_rd(d, VIRTIO_PCI_COMMON_DF, 4);
	cc_wr(d, VIRTIO_PCI_COMMON_DFSELECT, 1, 4);
	uint64_t hi = cc_rd(d, VIRTIO_PCI_COMMON_DF, 4);
	return lo | hi << 32;
}

static void write_features(struct drv *d, uint64_t f)
{
	cc_wr(d, VIRTIO_PCI_COMMON_GFSELECT, 0, 4);
	cc_wr(d, VIRTIO_PCI_COMMON_GF, (uint32_t)f, 4);
	cc_wr(d, VIRTIO_PCI_COMMON_GFSELECT, 1, 4);
	cc_wr(d, VIRTIO_PCI_COMMON_GF, (uint32_t)(f >> 32), 4);
}

static uint64_t read_features(struct drv *d)
{
	cc_wr(d, VIRTIO_PCI_COMMON_GFSELECT, 0, 4);
	uint64_t lo = cc_rd(d, VIRTIO_PCI_COMMON_GF, 4);
	cc_wr(d, VIRTIO_PCI_COMMON_GFSELECT, 1, 4);
	uint64_t hi = cc_rd(d, VIRTIO_PCI_COMMON_GF, 4);
	return lo | hi << 32;
}

/* The MSI each vector of each device is programmed with. */
static uint64_t msi_addr(unsigned slot, unsigned v)
{
	return 0xfee00000ull | (uint64_t)slot << 12 | (uint64_t)v << 4;
}

static uint32_t msi_data(unsigned slot, unsigned v)
{
	return 0x40 + slot * 4 + v;
}

static void msix_entry(struct drv *d, unsigned v, uint64_t addr, uint32_t data, bool masked)
{
	uint64_t e = d->bar + OFF_TABLE + 16ull * v;
	mmio_wr(d->t, e, (uint32_t)addr, 4);
	mmio_wr(d->t, e + 4, (uint32_t)(addr >> 32), 4);
	mmio_wr(d->t, e + 8, data, 4);
	mmio_wr(d->t, e + 12, masked, 4);
}

static void msix_control(struct drv *d, uint16_t ctl)
{
	struct caps c;
	walk_caps(d->t, d->slot, &c);
	cfg_wr(d->t, d->slot, c.msix + 2, ctl, 2);
}

static void queue_regs(struct drv *d, uint16_t qsize, uint64_t desc, uint64_t avail, uint64_t used)
{
	cc_wr(d, VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
	cc_wr(d, VIRTIO_PCI_COMMON_Q_SIZE, qsize, 2);
	cc_wr(d, VIRTIO_PCI_COMMON_Q_DESCLO, (uint32_t)desc, 4);
	cc_wr(d, VIRTIO_PCI_COMMON_Q_DESCHI, (uint32_t)(desc >> 32), 4);
	cc_wr(d, VIRTIO_PCI_COMMON_Q_AVAILLO, (uint32_t)avail, 4);
	cc_wr(d, VIRTIO_PCI_COMMON_Q_AVAILHI, (uint32_t)(avail >> 32), 4);
	cc_wr(d, VIRTIO_PCI_COMMON_Q_USEDLO, (uint32_t)used, 4);
	cc_wr(d, VIRTIO_PCI_COMMON_Q_USEDHI, (uint32_t)(used >> 32), 4);
}

/* Reset, negotiate, set up queue 0 and (with msix) vectors 0 (configuration) and 1 (queue 0);
 * stops before DRIVER_OK when driver_ok is false. */
static void drv_setup(struct drv *d, struct tvm *t, unsigned slot, uint64_t features,
		      uint16_t qsize, bool msix, bool driver_ok)
{
	memset(d, 0, sizeof(*d));
	d->t = t;
	d->slot = slot;
	d->bar = bar0(t, slot);
	d->rings = slot == BLK_SLOT ? BLK_RINGS : RNG_RINGS;
	d->qsize = qsize;
	d->features = features;
	d->msix = msix;
	d->used_event = -1;
	cfg_wr(t, slot, 0x04, CMD_MEM | CMD_MASTER, 2);
	set_status(d, 0);
	assert_int_equal(dev_status(d), 0);
	set_status(d, S_ACK);
	set_status(d, S_ACK | S_DRIVER);
	write_features(d, features);
	set_status(d, S_ACK | S_DRIVER | S_FEAT_OK);
	assert_int_equal(dev_status(d), S_ACK | S_DRIVER | S_FEAT_OK);
	memset(ram(t, d->rings, 0x8000), 0, 0x8000);
	if (msix) {
		msix_entry(d, 0, msi_addr(slot, 0), msi_data(slot, 0), false);
		msix_entry(d, 1, msi_addr(slot, 1), msi_data(slot, 1), false);
		msix_control(d, MSIX_ENABLE);
		cc_wr(d, VIRTIO_PCI_COMMON_MSIX, 0, 2);
		assert_int_equal(cc_rd(d, VIRTIO_PCI_COMMON_MSIX, 2), 0);
	} else {
		msix_control(d, 0);
	}
	queue_regs(d, qsize, d_desc(d), d_avail(d), d_used(d));
	if (msix) {
		cc_wr(d, VIRTIO_PCI_COMMON_Q_MSIX, 1, 2);
		assert_int_equal(cc_rd(d, VIRTIO_PCI_COMMON_Q_MSIX, 2), 1);
	}
	cc_wr(d, VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
	assert_int_equal(cc_rd(d, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 1);
	if (driver_ok) {
		set_status(d, S_ALL);
		assert_int_equal(dev_status(d), S_ALL);
	}
}

struct seg {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

static void put_desc(struct tvm *t, uint64_t gpa, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	struct vring_desc v = {.addr = addr, .len = len, .flags = flags, .next = next};
	memcpy(ram(t, gpa, sizeof(v)), &v, sizeof(v));
}

/* Lays a chain out (in the queue's table, or in an indirect table) and puts its head in the
 * available ring without publishing the index. Returns the head. */
static uint16_t drv_add(struct drv *d, const struct seg *s, unsigned n, bool indirect)
{
	uint16_t head = d->next_desc;
	if (indirect) {
		uint64_t tbl = d->rings + 0x3000 + 16ull * 8 * head;
		assert_true(n <= 8);
		for (unsigned i = 0; i < n; i++)
			put_desc(d->t, tbl + 16ull * i, s[i].gpa, s[i].len,
				 (uint16_t)((s[i].write ? VRING_DESC_F_WRITE : 0) |
					    (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
				 (uint16_t)(i + 1));
		put_desc(d->t, d_desc(d) + 16ull * head, tbl, 16 * n, VRING_DESC_F_INDIRECT, 0);
		d->next_desc = (uint16_t)((head + 1) % d->qsize);
	} else {
		for (unsigned i = 0; i < n; i++) {
			uint16_t at = (uint16_t)((head + i) % d->qsize);
			uint16_t next = (uint16_t)((head + i + 1) % d->qsize);
			put_desc(d->t, d_desc(d) + 16ull * at, s[i].gpa, s[i].len,
				 (uint16_t)((s[i].write ? VRING_DESC_F_WRITE : 0) |
					    (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
				 next);
		}
		d->next_desc = (uint16_t)((head + n) % d->qsize);
	}
	uint16_t *avail = ram(d->t, d_avail(d), 6 + 2ull * d->qsize);
	avail[2 + d->avail_idx % d->qsize] = head;
	d->avail_idx++;
	return head;
}

/* Publishes the available index (and used_event) and notifies queue 0. */
static void drv_kick(struct drv *d)
{
	uint16_t *avail = ram(d->t, d_avail(d), 6 + 2ull * d->qsize);
	if (d->features & F_EVENT_IDX)
		__atomic_store_n(&avail[2 + d->qsize],
				 (uint16_t)(d->used_event >= 0 ? d->used_event : d->used_idx),
				 __ATOMIC_RELAXED);
	__atomic_store_n(&avail[1], d->avail_idx, __ATOMIC_RELEASE);
	mmio_wr(d->t, d->bar + OFF_NOTIFY, 0, 2);
}

static uint16_t used_index(struct drv *d)
{
	uint16_t *used = ram(d->t, d_used(d), 4);
	return __atomic_load_n(&used[1], __ATOMIC_ACQUIRE);
}

/* Waits (bounded) until the device has used n more chains. */
static void drv_wait(struct drv *d, unsigned n)
{
	uint16_t want = (uint16_t)(d->used_idx + n);
	uint64_t end = now_ms() + WAIT_MS;
	while (used_index(d) != want) {
		if (now_ms() > end)
			fail_msg("slot %u: used index %u, wanted %u (status 0x%x)", d->slot,
				 used_index(d), want, dev_status(d));
		usleep(100);
	}
}

/* Takes the next used element. */
static uint32_t drv_take(struct drv *d, uint16_t *id)
{
	struct vring_used_elem e;
	memcpy(&e, ram(d->t, d_used(d) + 4 + 8ull * (d->used_idx % d->qsize), 8), 8);
	d->used_idx++;
	*id = (uint16_t)e.id;
	return e.len;
}

/* One chain, start to end: returns the used length. */
static uint32_t drv_run(struct drv *d, const struct seg *s, unsigned n, bool indirect)
{
	uint16_t head = drv_add(d, s, n, indirect), id;
	drv_kick(d);
	drv_wait(d, 1);
	uint32_t len = drv_take(d, &id);
	assert_int_equal(id, head);
	return len;
}

static void wait_status(struct drv *d, uint8_t mask, uint8_t want)
{
	uint64_t end = now_ms() + WAIT_MS;
	while ((dev_status(d) & mask) != want) {
		if (now_ms() > end)
			fail_msg("slot %u: status 0x%x, wanted 0x%x under 0x%x", d->slot,
				 dev_status(d), want, mask);
		usleep(100);
	}
}

static void wait_msis(unsigned n)
{
	uint64_t end = now_ms() + WAIT_MS;
	while (msi_count() < n) {
		if (now_ms() > end)
			fail_msg("%u MSIs, wanted %u", msi_count(), n);
		usleep(100);
	}
}

static void wait_level(unsigned gsi, int want)
{
	uint64_t end = now_ms() + WAIT_MS;
	while (level(gsi) != want) {
		if (now_ms() > end)
			fail_msg("GSI %u stayed %d, wanted %d", gsi, level(gsi), want);
		usleep(100);
	}
}

/* The MSI number i is vector v of slot. */
static void check_msi(unsigned i, unsigned slot, unsigned v)
{
	uint64_t addr;
	uint32_t data;
	msi_get(i, &addr, &data);
	assert_int_equal(addr, msi_addr(slot, v));
	assert_int_equal(data, msi_data(slot, v));
}

/* ---- virtio-blk requests ------------------------------------------------------------------- */

struct blk_result {
	uint8_t status;
	uint32_t used_len;
};

/* A request: header, the data segments, a status byte. */
static struct blk_result blk_req(struct drv *d, uint32_t type, uint64_t sector,
				 const struct seg *data, unsigned ndata, bool indirect)
{
	unsigned slot = d->avail_idx % d->qsize;
	uint64_t hdr_gpa = d->rings + 0x6000 + 16ull * slot, st_gpa = d->rings + 0x7000 + slot;
	struct virtio_blk_outhdr h = {.type = type, .ioprio = 0, .sector = sector};
	memcpy(ram(d->t, hdr_gpa, sizeof(h)), &h, sizeof(h));
	*(uint8_t *)ram(d->t, st_gpa, 1) = 0xee;
	struct seg s[8];
	assert_true(ndata + 2 <= 8);
	s[0] = (struct seg){hdr_gpa, sizeof(h), false};
	for (unsigned i = 0; i < ndata; i++)
		s[1 + i] = data[i];
	s[1 + ndata] = (struct seg){st_gpa, 1, true};
	struct blk_result r;
	r.used_len = drv_run(d, s, ndata + 2, indirect);
	r.status = *(uint8_t *)ram(d->t, st_gpa, 1);
	return r;
}

static uint8_t blk_simple(struct drv *d, uint32_t type, uint64_t sector, uint64_t gpa, uint32_t len,
			  bool write, uint32_t want_len)
{
	struct seg s = {gpa, len, write};
	struct blk_result r = blk_req(d, type, sector, &s, len ? 1 : 0, false);
	assert_int_equal(r.used_len, want_len);
	return r.status;
}

static uint8_t blk_flush(struct drv *d)
{
	return blk_simple(d, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false, 1);
}

static void fill_pattern(void *p, size_t n, unsigned seed)
{
	uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(i * 7 + (size_t)seed * 13 + (i >> 9));
}

static void disk_read(const char *path, uint64_t off, void *buf, size_t n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, n, (off_t)off), (ssize_t)n);
	close(fd);
}

static bool all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

/* A discard or write-zeroes request with n ranges. */
static struct blk_result blk_ranges(struct drv *d, uint32_t type,
				    const struct virtio_blk_discard_write_zeroes *r, unsigned n)
{
	memcpy(ram(d->t, DATA_GPA, n * sizeof(*r)), r, n * sizeof(*r));
	struct seg s = {DATA_GPA, (uint32_t)(n * sizeof(*r)), false};
	return blk_req(d, type, 0, &s, 1, false);
}

/* ---- 1. enumeration ------------------------------------------------------------------------ */

static void test_enumeration(void **state)
{
	struct tvm *t = ((struct fix *)*state)->t;
	/* The host bridge. */
	assert_int_equal(cfg_rd(t, 0, 0x00, 4), 0x00081b36);
	assert_int_equal(cfg_rd(t, 0, 0x08, 4) >> 8, 0x060000);
	assert_int_equal(cfg_rd(t, 0, 0x0e, 1), 0);
	assert_int_equal(cfg_rd(t, 0, 0x3d, 1), 0); /* no interrupt pin */
	/* The two virtio functions: modern IDs (0x1040 + type), revision 1. */
	assert_int_equal(cfg_rd(t, BLK_SLOT, 0x00, 4), 0x10421af4);
	assert_int_equal(cfg_rd(t, RNG_SLOT, 0x00, 4), 0x10441af4);
	assert_int_equal(cfg_rd(t, BLK_SLOT, 0x00, 1), 0xf4);
	assert_int_equal(cfg_rd(t, BLK_SLOT, 0x01, 1), 0x1a);
	assert_int_equal(cfg_rd(t, BLK_SLOT, 0x02, 2), 0x1042);
	assert_int_equal(cfg_rd(t, BLK_SLOT, 0x08, 4), 0x01800001);
	assert_int_equal(cfg_rd(t, RNG_SLOT, 0x08, 4), 0x00ff0001);
	assert_int_equal(cfg_rd(t, BLK_SLOT, 0x2c, 4), 0x10421af4);
	assert_int_equal(cfg_rd(t, RNG_SLOT, 0x2c, 4), 0x10441af4);
	for (unsigned s = BLK_SLOT; s <= RNG_SLOT; s++) {
		assert_int_equal(cfg_rd(t, s, 0x0e, 1), 0);
		uint16_t cmd = (uint16_t)cfg_rd(t, s, 0x04, 2);
		assert_true(cmd & CMD_MEM); /* placed and enabled as firmware would */
		assert_false(cmd & (CMD_IO | CMD_MASTER));
		assert_int_equal(cfg_rd(t, s, 0x3d, 1), 1); /* INTA# */
		assert_int_equal(cfg_rd(t, s, 0x3c, 1), PCI_INTX_GSI(s, 0));
		assert_int_equal(cfg_rd(t, s, 0x3c, 1), 16 + s % 8);
		/* The line register is plain storage for software. */
		cfg_wr(t, s, 0x3c, 0x0b, 1);
		assert_int_equal(cfg_rd(t, s, 0x3c, 1), 0x0b);
		cfg_wr(t, s, 0x3c, 16 + s % 8, 1);
	}
	/* Nothing else answers: other functions, empty slots, bus 1, a disabled address. */
	for (unsigned s = 0; s <= RNG_SLOT; s++)
		for (unsigned fn = 1; fn < 8; fn++) {
			assert_int_equal(cfg_rd_fn(t, s, fn, 0x00, 4), 0xffffffff);
			assert_int_equal(cfg_rd_fn(t, s, fn, 0x08, 4), 0xffffffff);
		}
	for (unsigned s = RNG_SLOT + 1; s < PCI_SLOTS; s++)
		assert_int_equal(cfg_rd(t, s, 0x00, 4), 0xffffffff);
	pio_wr(t, PCI_CONFIG_ADDR_PORT, test_cfg_addr(1, 0, 0, 0), 4);
	assert_int_equal(pio_rd(t, PCI_CONFIG_DATA_PORT, 4), 0xffffffff);
	pio_wr(t, PCI_CONFIG_ADDR_PORT, test_cfg_addr(0, BLK_SLOT, 0, 0) & 0x7fffffff, 4);
	assert_int_equal(pio_rd(t, PCI_CONFIG_DATA_PORT, 4), 0xffffffff);
	/* CONFIG_ADDRESS reads back as written (dword accesses only). */
	pio_wr(t, PCI_CONFIG_ADDR_PORT, 0x80001008, 4);
	assert_int_equal(pio_rd(t, PCI_CONFIG_ADDR_PORT, 4), 0x80001008);
	/* A write to an absent function changes nothing anywhere. */
	pio_wr(t, PCI_CONFIG_ADDR_PORT, test_cfg_addr(0, BLK_SLOT, 3, 0x04), 4);
	pio_wr(t, PCI_CONFIG_DATA_PORT, 0, 2);
	assert_true(cfg_rd(t, BLK_SLOT, 0x04, 2) & CMD_MEM);

	/* BAR 0: a 32 KiB non-prefetchable 32-bit memory BAR inside the window; sizing. */
	uint64_t b[2];
	for (unsigned s = BLK_SLOT; s <= RNG_SLOT; s++) {
		uint32_t v = cfg_rd(t, s, 0x10, 4);
		b[s - 1] = v & ~0xfu;
		assert_int_equal(v & 0xf, 0);
		assert_int_equal(v % BAR0_SIZE, 0);
		assert_true(v >= PCI_MMIO_BASE && v + BAR0_SIZE <= PCI_MMIO_BASE + PCI_MMIO_SIZE);
		assert_int_equal(mmio_rd(t, v + VIRTIO_PCI_COMMON_NUMQ, 2), 1);
		cfg_wr(t, s, 0x10, 0xffffffff, 4);
		assert_int_equal(cfg_rd(t, s, 0x10, 4), ~(BAR0_SIZE - 1));
		/* While it holds the size mask the BAR decodes nowhere. */
		assert_int_equal(mmio_rd(t, v, 4), 0xffffffff);
		cfg_wr(t, s, 0x10, v, 4);
		assert_int_equal(cfg_rd(t, s, 0x10, 4), v);
		assert_int_equal(mmio_rd(t, v + VIRTIO_PCI_COMMON_NUMQ, 2), 1);
		/* BARs 1-5 and the expansion ROM do not exist: they stay 0 when sized. */
		for (unsigned off = 0x14; off <= 0x30; off += 4) {
			if (off > 0x24 && off < 0x30)
				continue;
			cfg_wr(t, s, off, 0xffffffff, 4);
			assert_int_equal(cfg_rd(t, s, off, 4), 0);
		}
		/* Read-only header fields stay. */
		cfg_wr(t, s, 0x00, 0, 4);
		cfg_wr(t, s, 0x08, 0, 4);
		assert_int_equal(cfg_rd(t, s, 0x00, 2), 0x1af4);
		assert_int_equal(cfg_rd(t, s, 0x08, 4) >> 8, s == BLK_SLOT ? 0x018000 : 0x00ff00);
	}
	assert_true(b[0] + BAR0_SIZE <= b[1] || b[1] + BAR0_SIZE <= b[0]);
	/* Nothing decodes in the I/O window. */
	assert_int_equal(pio_rd(t, PCI_IO_BASE, 4), 0xffffffff);

	/* The capability chains. */
	struct caps c;
	walk_caps(t, BLK_SLOT, &c);
	unsigned dev = c.vendor[VIRTIO_PCI_CAP_DEVICE_CFG];
	assert_true(dev != 0);
	assert_true(cfg_rd(t, BLK_SLOT, dev + 12, 4) >= offsetof(struct virtio_blk_config, wce));
	assert_int_equal(cfg_rd(t, BLK_SLOT, c.msix + 2, 2) & 0x7ff, 1); /* 2 vectors */
	unsigned notify = c.vendor[VIRTIO_PCI_CAP_NOTIFY_CFG];
	assert_int_equal(cfg_rd(t, BLK_SLOT, notify + 8, 4), OFF_NOTIFY);
	assert_int_equal(cfg_rd(t, BLK_SLOT, c.vendor[VIRTIO_PCI_CAP_ISR_CFG] + 8, 4), OFF_ISR);
	assert_int_equal(cfg_rd(t, BLK_SLOT, dev + 8, 4), OFF_DEVICE);
	assert_int_equal(cfg_rd(t, BLK_SLOT, c.msix + 4, 4), OFF_TABLE);
	assert_int_equal(cfg_rd(t, BLK_SLOT, c.msix + 8, 4), OFF_PBA);
	/* MSI-X starts disabled; only enable and function mask are writable. */
	assert_int_equal(cfg_rd(t, BLK_SLOT, c.msix + 2, 2) & 0xc000, 0);
	cfg_wr(t, BLK_SLOT, c.msix + 2, 0xffff, 2);
	assert_int_equal(cfg_rd(t, BLK_SLOT, c.msix + 2, 2), 0xc001);
	cfg_wr(t, BLK_SLOT, c.msix + 2, 0, 2);
	assert_int_equal(cfg_rd(t, BLK_SLOT, c.msix + 2, 2), 0x0001);
	/* The queue's notification address: off + queue_notify_off * multiplier. */
	struct drv d = {.t = t, .slot = BLK_SLOT, .bar = b[0]};
	cc_wr(&d, VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
	uint32_t qoff =
	    (uint32_t)cc_rd(&d, VIRTIO_PCI_COMMON_Q_NOFF, 2) * cfg_rd(t, BLK_SLOT, notify + 16, 4);
	assert_true(qoff + 2 <= cfg_rd(t, BLK_SLOT, notify + 12, 4));
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_Q_SIZE, 2), BLK_QMAX);
	/* A queue that does not exist has size 0. */
	cc_wr(&d, VIRTIO_PCI_COMMON_Q_SELECT, 1, 2);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_Q_SIZE, 2), 0);
	cc_wr(&d, VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);

	walk_caps(t, RNG_SLOT, &c);
	assert_int_equal(c.vendor[VIRTIO_PCI_CAP_DEVICE_CFG], 0); /* no device configuration */
	d.slot = RNG_SLOT;
	d.bar = b[1];
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_Q_SIZE, 2), RNG_QMAX);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
}

/* ---- 2. feature negotiation --------------------------------------------------------------- */

static void check_negotiation(struct drv *d, uint64_t good, uint64_t not_offered)
{
	set_status(d, 0);
	set_status(d, S_ACK | S_DRIVER);
	/* Without VERSION_1: refused. */
	write_features(d, good & ~F_VERSION_1);
	set_status(d, S_ACK | S_DRIVER | S_FEAT_OK);
	assert_int_equal(dev_status(d), S_ACK | S_DRIVER);
	/* A bit the device did not offer: refused. */
	write_features(d, good | not_offered);
	set_status(d, S_ACK | S_DRIVER | S_FEAT_OK);
	assert_int_equal(dev_status(d), S_ACK | S_DRIVER);
	write_features(d, good | (1ull << 50));
	set_status(d, S_ACK | S_DRIVER | S_FEAT_OK);
	assert_int_equal(dev_status(d), S_ACK | S_DRIVER);
	/* A valid set sticks, and is frozen from then on. */
	write_features(d, good);
	assert_int_equal(read_features(d), good);
	set_status(d, S_ACK | S_DRIVER | S_FEAT_OK);
	assert_int_equal(dev_status(d), S_ACK | S_DRIVER | S_FEAT_OK);
	write_features(d, ~0ull);
	assert_int_equal(read_features(d), good);
	write_features(d, 0);
	assert_int_equal(read_features(d), good);
	/* NEEDS_RESET is the device's bit. */
	set_status(d, S_ACK | S_DRIVER | S_FEAT_OK | S_NEEDS_RST);
	assert_int_equal(dev_status(d), S_ACK | S_DRIVER | S_FEAT_OK);
	/* Reset forgets the driver's features. */
	set_status(d, 0);
	assert_int_equal(dev_status(d), 0);
	assert_int_equal(read_features(d), 0);
}

static void test_features(void **state)
{
	struct tvm *t = ((struct fix *)*state)->t;
	struct drv d = {.t = t, .slot = BLK_SLOT, .bar = bar0(t, BLK_SLOT)};
	uint64_t f = device_features(&d);
	uint64_t want = F_VERSION_1 | F_INDIRECT | F_EVENT_IDX | 1ull << VIRTIO_BLK_F_SEG_MAX |
			1ull << VIRTIO_BLK_F_BLK_SIZE | 1ull << VIRTIO_BLK_F_FLUSH |
			1ull << VIRTIO_BLK_F_WRITE_ZEROES;
	assert_int_equal(f & want, want);
	assert_false(f & (1ull << VIRTIO_BLK_F_RO)); /* a writable disk */
	assert_false(f & (1ull << 50));
	cc_wr(&d, VIRTIO_PCI_COMMON_DFSELECT, 2, 4);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_DF, 4), 0);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_DFSELECT, 4), 2);
	check_negotiation(&d, F_VERSION_1 | F_EVENT_IDX | 1ull << VIRTIO_BLK_F_FLUSH,
			  1ull << VIRTIO_BLK_F_RO);
	/* Driver features beyond the two selectable words are not stored. */
	cc_wr(&d, VIRTIO_PCI_COMMON_GFSELECT, 2, 4);
	cc_wr(&d, VIRTIO_PCI_COMMON_GF, 0xffffffff, 4);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_GF, 4), 0);
	assert_int_equal(read_features(&d), 0);

	struct drv r = {.t = t, .slot = RNG_SLOT, .bar = bar0(t, RNG_SLOT)};
	assert_int_equal(device_features(&r), F_VERSION_1 | F_INDIRECT | F_EVENT_IDX);
	check_negotiation(&r, F_VERSION_1, 1ull << 0);
}

/* ---- 3. virtio-blk I/O -------------------------------------------------------------------- */

static void blk_io(struct fix *f, uint64_t features)
{
	struct tvm *t = f->t;
	struct drv d;
	bool ind = features & F_INDIRECT;
	drv_setup(&d, t, BLK_SLOT, features, 16, true, true);
	unsigned msi0 = msi_count(), reqs = 0;
	/* Device configuration. */
	assert_int_equal(mmio_rd(t, d.bar + OFF_DEVICE, 8), DISK_SECTORS);
	assert_int_equal(
	    mmio_rd(t, d.bar + OFF_DEVICE + offsetof(struct virtio_blk_config, seg_max), 4), 128);
	assert_int_equal(
	    mmio_rd(t, d.bar + OFF_DEVICE + offsetof(struct virtio_blk_config, blk_size), 4), 512);
	/* Queue registers freeze once the queue is enabled. */
	cc_wr(&d, VIRTIO_PCI_COMMON_Q_SIZE, 8, 2);
	cc_wr(&d, VIRTIO_PCI_COMMON_Q_DESCLO, 0x5000, 4);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_Q_SIZE, 2), 16);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_Q_DESCLO, 4), (uint32_t)d_desc(&d));

	/* A write of 4 KiB at sector 8 from two segments, then the file holds it. */
	uint8_t *wbuf = ram(t, DATA_GPA, 0x10000), *rbuf = ram(t, DATA2_GPA, 0x10000);
	uint8_t host[4096];
	fill_pattern(wbuf, 4096, (unsigned)features);
	struct seg w[2] = {{DATA_GPA, 1024, false}, {DATA_GPA + 1024, 3072, false}};
	struct blk_result r = blk_req(&d, VIRTIO_BLK_T_OUT, 8, w, 2, ind);
	assert_int_equal(r.status, VIRTIO_BLK_S_OK);
	assert_int_equal(r.used_len, 1);
	reqs++;
	disk_read(f->disk, 8ull * 512, host, 4096);
	assert_memory_equal(host, wbuf, 4096);
	/* Each completion is one MSI on the queue's vector. */
	wait_msis(msi0 + reqs);
	check_msi(msi0, BLK_SLOT, 1);
	if (features & F_EVENT_IDX) {
		/* The device asks for the next notification at the index it will take next. */
		uint16_t *ae = ram(t, d_used(&d) + 4 + 8ull * d.qsize, 2);
		assert_int_equal(__atomic_load_n(ae, __ATOMIC_RELAXED), d.avail_idx);
	} else {
		uint16_t *uf = ram(t, d_used(&d), 2);
		assert_int_equal(*uf & VRING_USED_F_NO_NOTIFY, 0);
	}

	/* Read it back into three segments. */
	memset(rbuf, 0xcc, 4096);
	struct seg rd[3] = {
	    {DATA2_GPA, 512, true}, {DATA2_GPA + 512, 2048, true}, {DATA2_GPA + 2560, 1536, true}};
	r = blk_req(&d, VIRTIO_BLK_T_IN, 8, rd, 3, ind);
	assert_int_equal(r.status, VIRTIO_BLK_S_OK);
	assert_int_equal(r.used_len, 4097);
	assert_memory_equal(rbuf, wbuf, 4096);
	reqs++;

	/* Flush; the ID; with a short buffer the ID is cut. */
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
	reqs++;
	memset(rbuf, 0xcc, 64);
	assert_int_equal(blk_simple(&d, VIRTIO_BLK_T_GET_ID, 0, DATA2_GPA, VIRTIO_BLK_ID_BYTES,
				    true, VIRTIO_BLK_ID_BYTES + 1),
			 VIRTIO_BLK_S_OK);
	assert_memory_equal(rbuf, "ferry-disk0\0\0\0\0\0\0\0\0\0", VIRTIO_BLK_ID_BYTES);
	assert_int_equal(rbuf[VIRTIO_BLK_ID_BYTES], 0xcc);
	memset(rbuf, 0xcc, 64);
	assert_int_equal(blk_simple(&d, VIRTIO_BLK_T_GET_ID, 0, DATA2_GPA, 8, true, 9),
			 VIRTIO_BLK_S_OK);
	assert_memory_equal(rbuf, "ferry-di", 8);
	assert_int_equal(rbuf[8], 0xcc);
	reqs += 2;

	/* Out of the disk, a length that is not whole sectors, an unknown type. */
	assert_int_equal(blk_simple(&d, VIRTIO_BLK_T_IN, DISK_SECTORS, DATA2_GPA, 512, true, 1),
			 VIRTIO_BLK_S_IOERR);
	assert_int_equal(
	    blk_simple(&d, VIRTIO_BLK_T_OUT, DISK_SECTORS - 1, DATA_GPA, 1024, false, 1),
	    VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_simple(&d, VIRTIO_BLK_T_IN, 1ull << 63, DATA2_GPA, 512, true, 1),
			 VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_simple(&d, VIRTIO_BLK_T_IN, ~0ull, DATA2_GPA, 512, true, 1),
			 VIRTIO_BLK_S_IOERR);
	assert_int_equal(
	    blk_simple(&d, VIRTIO_BLK_T_IN, DISK_SECTORS - 1, DATA2_GPA, 512, true, 513),
	    VIRTIO_BLK_S_OK);
	assert_int_equal(blk_simple(&d, VIRTIO_BLK_T_IN, 0, DATA2_GPA, 100, true, 1),
			 VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_simple(&d, 0x77, 0, DATA_GPA, 512, false, 1), VIRTIO_BLK_S_UNSUPP);
	reqs += 7;

	/* Write zeroes over part of a pattern, with and without unmap. */
	fill_pattern(wbuf, 8ul * 512, 99);
	assert_int_equal(blk_simple(&d, VIRTIO_BLK_T_OUT, 100, DATA_GPA, 8 * 512, false, 1),
			 VIRTIO_BLK_S_OK);
	uint8_t pat[8 * 512];
	memcpy(pat, wbuf, sizeof(pat));
	struct virtio_blk_discard_write_zeroes z[2] = {
	    {.sector = 100, .num_sectors = 2},
	    {.sector = 103, .num_sectors = 1, .flags = VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP}};
	r = blk_ranges(&d, VIRTIO_BLK_T_WRITE_ZEROES, z, 2);
	assert_int_equal(r.status, VIRTIO_BLK_S_OK);
	assert_int_equal(r.used_len, 1);
	uint8_t disk[8 * 512];
	disk_read(f->disk, 100ull * 512, disk, sizeof(disk));
	assert_true(all_zero(disk, 1024));
	assert_memory_equal(disk + 1024, pat + 1024, 512);
	assert_true(all_zero(disk + 1536, 512));
	assert_memory_equal(disk + 2048, pat + 2048, 4ul * 512);
	/* Unknown flags are UNSUPP; a range past the end is IOERR. */
	z[0] =
	    (struct virtio_blk_discard_write_zeroes){.sector = 104, .num_sectors = 1, .flags = 2};
	assert_int_equal(blk_ranges(&d, VIRTIO_BLK_T_WRITE_ZEROES, z, 1).status,
			 VIRTIO_BLK_S_UNSUPP);
	z[0] =
	    (struct virtio_blk_discard_write_zeroes){.sector = DISK_SECTORS - 1, .num_sectors = 2};
	assert_int_equal(blk_ranges(&d, VIRTIO_BLK_T_WRITE_ZEROES, z, 1).status,
			 VIRTIO_BLK_S_IOERR);
	reqs += 4;
	/* Discard: sectors 104-105 read back as zeroes (when the host file system can). */
	bool can_discard = device_features(&d) & (1ull << VIRTIO_BLK_F_DISCARD);
	z[0] = (struct virtio_blk_discard_write_zeroes){.sector = 104, .num_sectors = 2};
	r = blk_ranges(&d, VIRTIO_BLK_T_DISCARD, z, 1);
	assert_int_equal(r.status, can_discard ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_UNSUPP);
	disk_read(f->disk, 100ull * 512, disk, sizeof(disk));
	if (can_discard)
		assert_true(all_zero(disk + 2048, 1024));
	assert_memory_equal(disk + 3072, pat + 3072, 2ul * 512);
	if (can_discard) {
		/* The unmap flag means nothing to a discard: an error by the spec. */
		z[0].flags = VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
		assert_int_equal(blk_ranges(&d, VIRTIO_BLK_T_DISCARD, z, 1).status,
				 VIRTIO_BLK_S_IOERR);
		reqs++;
	}
	reqs++;
	wait_msis(msi0 + reqs);
	assert_int_equal(msi_count(), msi0 + reqs);
	for (unsigned i = msi0; i < msi0 + reqs; i++)
		check_msi(i, BLK_SLOT, 1);

	/* Interrupt suppression: the driver declines one completion's interrupt; the next one
	 * interrupts, so by then the first decision has been made. */
	uint16_t *avail = ram(t, d_avail(&d), 4);
	if (features & F_EVENT_IDX)
		d.used_event = (uint16_t)(d.used_idx + 8);
	else
		__atomic_store_n(&avail[0], VRING_AVAIL_F_NO_INTERRUPT, __ATOMIC_RELAXED);
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
	d.used_event = -1;
	__atomic_store_n(&avail[0], 0, __ATOMIC_RELAXED);
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
	wait_msis(msi0 + reqs + 1);
	sleep_ms(QUIET_MS);
	assert_int_equal(msi_count(), msi0 + reqs + 1);

	/* Four requests made available at once and notified once: one interrupt. */
	unsigned before = msi_count();
	uint16_t heads[4];
	for (unsigned i = 0; i < 4; i++) {
		uint64_t hdr = d.rings + 0x6000 + 16ull * i;
		struct virtio_blk_outhdr h = {.type = VIRTIO_BLK_T_FLUSH};
		memcpy(ram(t, hdr, sizeof(h)), &h, sizeof(h));
		struct seg s[2] = {{hdr, 16, false}, {d.rings + 0x7000 + i, 1, true}};
		heads[i] = drv_add(&d, s, 2, ind);
	}
	drv_kick(&d);
	drv_wait(&d, 4);
	for (unsigned i = 0; i < 4; i++) {
		uint16_t id;
		assert_int_equal(drv_take(&d, &id), 1);
		assert_int_equal(id, heads[i]);
	}
	wait_msis(before + 1);
	sleep_ms(QUIET_MS);
	assert_int_equal(msi_count(), before + 1);
}

static void test_blk_io(void **state)
{
	blk_io(*state, F_VERSION_1 | 1ull << VIRTIO_BLK_F_FLUSH);
}

static void test_blk_io_indirect_event_idx(void **state)
{
	struct fix *f = *state;
	struct drv d = {.t = f->t, .slot = BLK_SLOT, .bar = bar0(f->t, BLK_SLOT)};
	uint64_t discard = device_features(&d) & (1ull << VIRTIO_BLK_F_DISCARD);
	blk_io(f, F_VERSION_1 | F_INDIRECT | F_EVENT_IDX | 1ull << VIRTIO_BLK_F_WRITE_ZEROES |
		      discard);
}

/* A request before DRIVER_OK waits for it; without bus mastering nothing is served. */
static void test_blk_not_running(void **state)
{
	struct tvm *t = ((struct fix *)*state)->t;
	struct drv d;
	drv_setup(&d, t, BLK_SLOT, F_VERSION_1, 16, true, false);
	struct seg s[2] = {{d.rings + 0x6000, 16, false}, {d.rings + 0x7000, 1, true}};
	struct virtio_blk_outhdr h = {.type = VIRTIO_BLK_T_FLUSH};
	memcpy(ram(t, d.rings + 0x6000, 16), &h, 16);
	drv_add(&d, s, 2, false);
	drv_kick(&d);
	sleep_ms(QUIET_MS);
	assert_int_equal(used_index(&d), 0);
	set_status(&d, S_ALL);
	drv_wait(&d, 1);
	uint16_t id;
	assert_int_equal(drv_take(&d, &id), 1);

	cfg_wr(t, BLK_SLOT, 0x04, CMD_MEM, 2);
	drv_add(&d, s, 2, false);
	drv_kick(&d);
	sleep_ms(QUIET_MS);
	assert_int_equal(used_index(&d), d.used_idx);
	cfg_wr(t, BLK_SLOT, 0x04, CMD_MEM | CMD_MASTER, 2);
	drv_kick(&d);
	drv_wait(&d, 1);
	assert_int_equal(drv_take(&d, &id), 1);
}

/* MSI-X masking: a masked vector's interrupt waits in the PBA and comes on unmasking. */
static void test_msix_masking(void **state)
{
	struct tvm *t = ((struct fix *)*state)->t;
	struct drv d;
	drv_setup(&d, t, BLK_SLOT, F_VERSION_1, 16, true, true);
	/* The table reads back as programmed; vectors past the table read 0. */
	assert_int_equal(mmio_rd(t, d.bar + OFF_TABLE + 16, 4), (uint32_t)msi_addr(BLK_SLOT, 1));
	assert_int_equal(mmio_rd(t, d.bar + OFF_TABLE + 16, 8), msi_addr(BLK_SLOT, 1));
	assert_int_equal(mmio_rd(t, d.bar + OFF_TABLE + 24, 4), msi_data(BLK_SLOT, 1));
	assert_int_equal(mmio_rd(t, d.bar + OFF_TABLE + 28, 4), 0);
	assert_int_equal(mmio_rd(t, d.bar + OFF_TABLE + 32, 4), 0);
	assert_int_equal(mmio_rd(t, d.bar + OFF_PBA, 8), 0);

	unsigned n = msi_count();
	mmio_wr(t, d.bar + OFF_TABLE + 28, 1, 4); /* mask vector 1 */
	assert_int_equal(mmio_rd(t, d.bar + OFF_TABLE + 28, 4), 1);
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
	uint64_t end = now_ms() + WAIT_MS;
	while (!(mmio_rd(t, d.bar + OFF_PBA, 8) & 2))
		assert_true(now_ms() < end);
	assert_int_equal(mmio_rd(t, d.bar + OFF_PBA, 8), 2);
	assert_int_equal(msi_count(), n);
	/* Reprogrammed while pending: the message goes where the entry says at unmask time. */
	mmio_wr(t, d.bar + OFF_TABLE + 24, msi_data(BLK_SLOT, 1) + 0x10, 4);
	mmio_wr(t, d.bar + OFF_TABLE + 28, 0, 4);
	assert_int_equal(msi_count(), n + 1);
	uint64_t addr;
	uint32_t data;
	msi_get(n, &addr, &data);
	assert_int_equal(addr, msi_addr(BLK_SLOT, 1));
	assert_int_equal(data, msi_data(BLK_SLOT, 1) + 0x10);
	assert_int_equal(mmio_rd(t, d.bar + OFF_PBA, 8), 0);
	mmio_wr(t, d.bar + OFF_TABLE + 24, msi_data(BLK_SLOT, 1), 4);

	/* The function mask holds every vector back the same way. */
	msix_control(&d, MSIX_ENABLE | MSIX_FMASK);
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
	end = now_ms() + WAIT_MS;
	while (!(mmio_rd(t, d.bar + OFF_PBA, 8) & 2))
		assert_true(now_ms() < end);
	assert_int_equal(msi_count(), n + 1);
	msix_control(&d, MSIX_ENABLE);
	assert_int_equal(msi_count(), n + 2);
	check_msi(n + 1, BLK_SLOT, 1);
	assert_int_equal(mmio_rd(t, d.bar + OFF_PBA, 8), 0);

	/* No vector for the queue: no MSI, nothing pending, no INTx either. */
	cc_wr(&d, VIRTIO_PCI_COMMON_Q_MSIX, VIRTIO_MSI_NO_VECTOR, 2);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
	sleep_ms(QUIET_MS);
	assert_int_equal(msi_count(), n + 2);
	assert_int_equal(mmio_rd(t, d.bar + OFF_PBA, 8), 0);
	assert_int_equal(level(PCI_INTX_GSI(BLK_SLOT, 0)), 0);
	/* A vector beyond the table is refused (reads back as NO_VECTOR). */
	cc_wr(&d, VIRTIO_PCI_COMMON_Q_MSIX, 2, 2);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
	cc_wr(&d, VIRTIO_PCI_COMMON_MSIX, 7, 2);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
	cc_wr(&d, VIRTIO_PCI_COMMON_Q_MSIX, 1, 2);
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
	wait_msis(n + 3);
	check_msi(n + 2, BLK_SLOT, 1);
}

/* INTx: with MSI-X off a completion raises the slot's GSI until the driver reads ISR. */
static void test_intx(void **state)
{
	struct tvm *t = ((struct fix *)*state)->t;
	struct drv d;
	unsigned gsi = 16 + BLK_SLOT % 8;
	drv_setup(&d, t, BLK_SLOT, F_VERSION_1, 16, false, true);
	assert_int_equal(level(gsi), 0);
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
	wait_level(gsi, 1);
	assert_true(cfg_rd(t, BLK_SLOT, 0x06, 2) & STS_INTX);
	assert_int_equal(mmio_rd(t, d.bar + OFF_ISR, 1), 1);
	assert_int_equal(level(gsi), 0);
	assert_false(cfg_rd(t, BLK_SLOT, 0x06, 2) & STS_INTX);
	assert_int_equal(mmio_rd(t, d.bar + OFF_ISR, 1), 0);
	assert_int_equal(msi_count(), 0);

	/* The command register's INTx disable holds the line low; the status bit still shows. */
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
	wait_level(gsi, 1);
	cfg_wr(t, BLK_SLOT, 0x04, CMD_MEM | CMD_MASTER | CMD_INTX_OFF, 2);
	assert_int_equal(level(gsi), 0);
	assert_true(cfg_rd(t, BLK_SLOT, 0x06, 2) & STS_INTX);
	cfg_wr(t, BLK_SLOT, 0x04, CMD_MEM | CMD_MASTER, 2);
	assert_int_equal(level(gsi), 1);
	assert_int_equal(mmio_rd(t, d.bar + OFF_ISR, 1), 1);
	assert_int_equal(level(gsi), 0);

	/* Turning MSI-X on drops a pending INTx. */
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
	wait_level(gsi, 1);
	msix_control(&d, MSIX_ENABLE);
	assert_int_equal(level(gsi), 0);
	assert_int_equal(mmio_rd(t, d.bar + OFF_ISR, 1), 0);
	msix_control(&d, 0);

	/* virtio-rng in its own slot has its own line. */
	struct drv r;
	unsigned rgsi = 16 + RNG_SLOT % 8;
	drv_setup(&r, t, RNG_SLOT, F_VERSION_1, 8, false, true);
	struct seg s = {DATA2_GPA, 64, true};
	assert_int_equal(drv_run(&r, &s, 1, false), 64);
	wait_level(rgsi, 1);
	assert_int_equal(level(gsi), 0);
	assert_int_equal(mmio_rd(t, r.bar + OFF_ISR, 1), 1);
	assert_int_equal(level(rgsi), 0);
}

static void test_rng(void **state)
{
	struct tvm *t = ((struct fix *)*state)->t;
	struct drv d;
	drv_setup(&d, t, RNG_SLOT, F_VERSION_1 | F_INDIRECT, 8, true, true);
	uint8_t *buf = ram(t, DATA2_GPA, 256);
	for (int round = 0; round < 2; round++) {
		memset(buf, 0, 256);
		/* A readable segment is skipped; only the writable ones count. */
		struct seg s[3] = {
		    {DATA_GPA, 16, false}, {DATA2_GPA, 32, true}, {DATA2_GPA + 32, 64, true}};
		unsigned n = msi_count();
		assert_int_equal(drv_run(&d, s, 3, round == 1), 96);
		assert_false(all_zero(buf, 32));
		assert_false(all_zero(buf + 32, 64));
		assert_true(all_zero(buf + 96, 160));
		wait_msis(n + 1);
		check_msi(n, RNG_SLOT, 1);
	}
}

/* ---- 4. drivers that break the rules ------------------------------------------------------ */

static void expect_needs_reset(struct drv *d)
{
	wait_status(d, S_NEEDS_RST, S_NEEDS_RST);
	/* The driver can neither clear it nor have the device serve anything meanwhile. */
	set_status(d, S_ALL);
	assert_true(dev_status(d) & S_NEEDS_RST);
}

/* Reset, check every register is back to its reset value, set up again and run a request. */
static void recover(struct drv *d, bool msix)
{
	set_status(d, 0);
	assert_int_equal(dev_status(d), 0);
	cc_wr(d, VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
	assert_int_equal(cc_rd(d, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
	assert_int_equal(cc_rd(d, VIRTIO_PCI_COMMON_Q_SIZE, 2),
			 d->slot == BLK_SLOT ? BLK_QMAX : RNG_QMAX);
	assert_int_equal(cc_rd(d, VIRTIO_PCI_COMMON_Q_DESCLO, 4), 0);
	assert_int_equal(cc_rd(d, VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
	assert_int_equal(cc_rd(d, VIRTIO_PCI_COMMON_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
	assert_int_equal(read_features(d), 0);
	assert_int_equal(mmio_rd(d->t, d->bar + OFF_ISR, 1), 0);
	assert_int_equal(level(PCI_INTX_GSI(d->slot, 0)), 0);
	struct tvm *t = d->t;
	unsigned slot = d->slot;
	drv_setup(d, t, slot, F_VERSION_1 | F_INDIRECT, 16, msix, true);
	if (slot == BLK_SLOT) {
		assert_int_equal(blk_flush(d), VIRTIO_BLK_S_OK);
	} else {
		struct seg s = {DATA2_GPA, 16, true};
		assert_int_equal(drv_run(d, &s, 1, false), 16);
	}
	if (!msix) {
		/* Acknowledge the completion's INTx: the line is low again for what follows. */
		wait_level(PCI_INTX_GSI(slot, 0), 1);
		assert_int_equal(mmio_rd(t, d->bar + OFF_ISR, 1), 1);
		assert_int_equal(level(PCI_INTX_GSI(slot, 0)), 0);
	}
}

/* The configuration interrupt of a NEEDS_RESET: vector 0 with MSI-X, ISR bit 1 with INTx. */
static void expect_config_irq(struct drv *d, unsigned msi_before)
{
	if (d->msix) {
		wait_msis(msi_before + 1);
		check_msi(msi_before, d->slot, 0);
	} else {
		wait_level(PCI_INTX_GSI(d->slot, 0), 1);
		assert_int_equal(mmio_rd(d->t, d->bar + OFF_ISR, 1), VIRTIO_PCI_ISR_CONFIG);
		assert_int_equal(level(PCI_INTX_GSI(d->slot, 0)), 0);
	}
}

static void test_rule_breaking(void **state)
{
	struct tvm *t = ((struct fix *)*state)->t;
	struct drv d;
	/* A data buffer outside RAM. */
	drv_setup(&d, t, BLK_SLOT, F_VERSION_1 | F_INDIRECT, 16, true, true);
	unsigned n = msi_count();
	uint8_t gen = (uint8_t)cc_rd(&d, VIRTIO_PCI_COMMON_CFGGENERATION, 1);
	struct virtio_blk_outhdr h = {.type = VIRTIO_BLK_T_IN};
	memcpy(ram(t, d.rings + 0x6000, 16), &h, 16);
	struct seg bad[3] = {
	    {d.rings + 0x6000, 16, false}, {BAD_GPA, 512, true}, {d.rings + 0x7000, 1, true}};
	drv_add(&d, bad, 3, false);
	drv_kick(&d);
	expect_needs_reset(&d);
	expect_config_irq(&d, n);
	assert_int_equal(used_index(&d), 0);
	assert_true((uint8_t)cc_rd(&d, VIRTIO_PCI_COMMON_CFGGENERATION, 1) != gen);
	/* Further notifications are ignored. */
	drv_kick(&d);
	sleep_ms(QUIET_MS);
	assert_int_equal(used_index(&d), 0);
	assert_int_equal(msi_count(), n + 1);
	recover(&d, true);

	/* The same inside an indirect table. */
	drv_add(&d, bad, 3, true);
	drv_kick(&d);
	expect_needs_reset(&d);
	recover(&d, false);

	/* An available index far ahead of the queue size, with INTx. */
	uint16_t *avail = ram(t, d_avail(&d), 4);
	__atomic_store_n(&avail[1], (uint16_t)(d.avail_idx + 100), __ATOMIC_RELEASE);
	mmio_wr(t, d.bar + OFF_NOTIFY, 0, 2);
	expect_needs_reset(&d);
	expect_config_irq(&d, 0);
	recover(&d, true);

	/* Indirect descriptors without INDIRECT_DESC negotiated. */
	drv_setup(&d, t, BLK_SLOT, F_VERSION_1, 16, true, true);
	struct seg ok[2] = {{d.rings + 0x6000, 16, false}, {d.rings + 0x7000, 1, true}};
	drv_add(&d, ok, 2, true);
	drv_kick(&d);
	expect_needs_reset(&d);
	recover(&d, true);

	/* A readable descriptor after a writable one. */
	struct seg order[3] = {
	    {d.rings + 0x6000, 16, false}, {d.rings + 0x7000, 1, true}, {DATA_GPA, 512, false}};
	drv_add(&d, order, 3, false);
	drv_kick(&d);
	expect_needs_reset(&d);
	recover(&d, true);

	/* A blk chain with no status byte, and one whose header is short. */
	drv_add(&d, ok, 1, false);
	drv_kick(&d);
	expect_needs_reset(&d);
	recover(&d, true);
	struct seg shorthdr[2] = {{d.rings + 0x6000, 8, false}, {d.rings + 0x7000, 1, true}};
	drv_add(&d, shorthdr, 2, false);
	drv_kick(&d);
	expect_needs_reset(&d);
	recover(&d, true);

	/* Rings that cannot be used, found at enable: before DRIVER_OK the driver is not
	 * interrupted (it will read the status); after it, it is. */
	static const struct {
		uint16_t size;
		uint64_t desc, avail, used;
	} rings[] = {
	    {16, RAM_SIZE, BLK_RINGS + 0x1000, BLK_RINGS + 0x2000},       /* outside RAM */
	    {16, BLK_RINGS, BLK_RINGS + 0x1000, RAM_SIZE - 4},            /* crosses the end */
	    {16, BLK_RINGS + 8, BLK_RINGS + 0x1000, BLK_RINGS + 0x2000},  /* misaligned */
	    {16, BLK_RINGS, BLK_RINGS + 0x1001, BLK_RINGS + 0x2000},      /* misaligned */
	    {16, BLK_RINGS, BLK_RINGS + 0x1000, BLK_RINGS + 0x2002},      /* misaligned */
	    {100, BLK_RINGS, BLK_RINGS + 0x1000, BLK_RINGS + 0x2000},     /* not a power of 2 */
	    {0, BLK_RINGS, BLK_RINGS + 0x1000, BLK_RINGS + 0x2000},       /* empty */
	    {16, BAD_GPA, BLK_RINGS + 0x1000, BLK_RINGS + 0x2000},        /* far away */
	    {16, ~0ull & ~15ull, BLK_RINGS + 0x1000, BLK_RINGS + 0x2000}, /* wraps */
	    {16, BLK_RINGS, BLK_RINGS + 0x1000, MEM_HOLE_START - 0x100},  /* in no RAM */
	};
	for (size_t i = 0; i < sizeof(rings) / sizeof(rings[0]); i++)
		for (int late = 0; late < 2; late++) {
			set_status(&d, 0);
			set_status(&d, S_ACK | S_DRIVER);
			write_features(&d, F_VERSION_1);
			set_status(&d, S_ACK | S_DRIVER | S_FEAT_OK);
			cc_wr(&d, VIRTIO_PCI_COMMON_MSIX, 0, 2);
			if (late)
				set_status(&d, S_ALL);
			queue_regs(&d, rings[i].size, rings[i].desc, rings[i].avail, rings[i].used);
			n = msi_count();
			cc_wr(&d, VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
			assert_true(dev_status(&d) & S_NEEDS_RST);
			assert_int_equal(msi_count(), n + (late ? 1 : 0));
			if (late)
				check_msi(n, BLK_SLOT, 0);
		}
	recover(&d, true);

	/* virtio-rng: a chain longer than the device takes. */
	struct drv r;
	drv_setup(&r, t, RNG_SLOT, F_VERSION_1, 32, true, true);
	struct seg many[17];
	for (unsigned i = 0; i < 17; i++)
		many[i] = (struct seg){DATA2_GPA + 16ull * i, 16, true};
	for (unsigned i = 0; i < 17; i++)
		put_desc(t, d_desc(&r) + 16ull * i, many[i].gpa, many[i].len,
			 VRING_DESC_F_WRITE | (i < 16 ? VRING_DESC_F_NEXT : 0), (uint16_t)(i + 1));
	avail = ram(t, d_avail(&r), 4 + 2ull * r.qsize);
	avail[2] = 0;
	r.avail_idx = 1;
	drv_kick(&r);
	expect_needs_reset(&r);
	recover(&r, true);
	/* A descriptor loop. */
	put_desc(t, d_desc(&r), DATA2_GPA, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
	put_desc(t, d_desc(&r) + 16, DATA2_GPA, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 0);
	avail[2 + r.avail_idx % r.qsize] = 0;
	r.avail_idx++;
	drv_kick(&r);
	expect_needs_reset(&r);
	recover(&r, true);
	/* blk is unaffected by all of it. */
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
}

/* ---- 5. snapshot -------------------------------------------------------------------------- */

struct record {
	const char *name;
	struct state_writer w;
};

static unsigned save_all(struct tvm *t, struct record *rec, unsigned cap)
{
	unsigned n = 0;
	for (struct device *dv = t->vm.devices; dv; dv = dv->next) {
		assert_true(n < cap);
		rec[n].name = dv->name;
		sw_init(&rec[n].w);
		dv->save(dv->opaque, &rec[n].w);
		assert_false(rec[n].w.err);
		n++;
	}
	return n;
}

static int load_one(struct device *dv, const void *buf, size_t len)
{
	struct state_reader r;
	sr_init(&r, buf, len);
	return dv->load(dv->opaque, &r);
}

static void load_all(struct tvm *t, struct record *rec, unsigned n)
{
	unsigned i = 0;
	for (struct device *dv = t->vm.devices; dv; dv = dv->next, i++) {
		if (i >= n)
			fail_msg("more devices than records");
		assert_string_equal(dv->name, rec[i].name);
		assert_int_equal(load_one(dv, rec[i].w.buf, rec[i].w.len), 0);
	}
	assert_int_equal(i, n);
}

static struct device *find_dev(struct tvm *t, const char *name)
{
	for (struct device *dv = t->vm.devices; dv; dv = dv->next)
		if (strcmp(dv->name, name) == 0)
			return dv;
	fail_msg("no device %s", name);
	return NULL;
}

static size_t find_tag(const struct state_writer *w, const char *tag)
{
	char t8[8] = {0};
	memcpy(t8, tag, strlen(tag));
	for (size_t i = 0; i + 8 <= w->len; i++)
		if (memcmp(w->buf + i, t8, 8) == 0)
			return i;
	fail_msg("no %s record inside", tag);
	return 0;
}

/* A copy of rec with bytes [off, off+n) set to v; loaded into dv it must be refused. */
static void expect_refused(struct device *dv, const struct state_writer *rec, size_t off,
			   const void *v, size_t n)
{
	uint8_t *bad = malloc(rec->len + 1);
	if (!bad || !rec->buf || off + n > rec->len) {
		free(bad);
		fail_msg("no room for %zu bytes at %zu in a record of %zu", n, off, rec->len);
		return;
	}
	memcpy(bad, rec->buf, rec->len);
	memcpy(bad + off, v, n);
	assert_int_equal(load_one(dv, bad, rec->len), -1);
	free(bad);
}

static void snapshot_continue(struct drv *b, struct drv *r, uint16_t blk_used, uint16_t rng_used)
{
	unsigned n = msi_count();
	assert_int_equal(blk_simple(b, VIRTIO_BLK_T_IN, 8, DATA2_GPA, 512, true, 513),
			 VIRTIO_BLK_S_OK);
	assert_int_equal(used_index(b), (uint16_t)(blk_used + 1));
	wait_msis(n + 1);
	assert_memory_equal(ram(b->t, DATA2_GPA, 512), ram(b->t, DATA_GPA, 512), 512);
	struct seg s = {DATA2_GPA + 0x1000, 32, true};
	assert_int_equal(drv_run(r, &s, 1, false), 32);
	assert_int_equal(used_index(r), (uint16_t)(rng_used + 1));
	wait_msis(n + 2);
	uint64_t addr[2];
	uint32_t data[2];
	msi_get(n, &addr[0], &data[0]);
	msi_get(n + 1, &addr[1], &data[1]);
	assert_int_equal(addr[0], msi_addr(BLK_SLOT, 1));
	assert_int_equal(data[0], msi_data(BLK_SLOT, 1));
	assert_int_equal(addr[1], msi_addr(RNG_SLOT, 1));
	assert_int_equal(data[1], msi_data(RNG_SLOT, 1));
}

static void test_snapshot(void **state)
{
	struct fix *f = *state;
	struct tvm *t = f->t;
	struct drv b, r;
	drv_setup(&b, t, BLK_SLOT, F_VERSION_1 | F_EVENT_IDX | F_INDIRECT, 16, true, true);
	drv_setup(&r, t, RNG_SLOT, F_VERSION_1, 8, true, true);
	fill_pattern(ram(t, DATA_GPA, 4096), 4096, 5);
	assert_int_equal(blk_simple(&b, VIRTIO_BLK_T_OUT, 8, DATA_GPA, 4096, false, 1),
			 VIRTIO_BLK_S_OK);
	assert_int_equal(blk_flush(&b), VIRTIO_BLK_S_OK);
	assert_int_equal(blk_simple(&b, VIRTIO_BLK_T_IN, 8, DATA2_GPA, 4096, true, 4097),
			 VIRTIO_BLK_S_OK);
	struct seg s = {DATA2_GPA, 32, true};
	assert_int_equal(drv_run(&r, &s, 1, false), 32);
	/* Move blk's BAR 0 and mask the rng's configuration vector: both must survive. */
	uint64_t moved = PCI_MMIO_BASE + 0x100000;
	cfg_wr(t, BLK_SLOT, 0x10, (uint32_t)moved, 4);
	b.bar = moved;
	mmio_wr(t, r.bar + OFF_TABLE + 12, 1, 4);
	wait_msis(4);

	struct drv b0 = b, r0 = r; /* the driver's side of the saved state */
	struct record rec[8] = {0};
	unsigned nrec = save_all(t, rec, 8);
	if (nrec != 3 || !rec[0].w.buf || !rec[1].w.buf || !rec[2].w.buf) {
		fail_msg("%u records", nrec);
		return;
	}
	void *saved_ram = malloc(RAM_SIZE);
	assert_non_null(saved_ram);
	memcpy(saved_ram, ram(t, 0, RAM_SIZE), RAM_SIZE);

	/* A second VM built the same way (the first one goes: the image is locked). */
	tvm_free(t);
	f->t = t = tvm_new(f->disk);
	memcpy(ram(t, 0, RAM_SIZE), saved_ram, RAM_SIZE);
	load_all(t, rec, nrec);
	b.t = r.t = t;
	assert_int_equal(bar0(t, BLK_SLOT), moved);
	assert_int_equal(cfg_rd(t, BLK_SLOT, 0x04, 2), CMD_MEM | CMD_MASTER);
	assert_int_equal(dev_status(&b), S_ALL);
	assert_int_equal(dev_status(&r), S_ALL);
	assert_int_equal(read_features(&b), F_VERSION_1 | F_EVENT_IDX | F_INDIRECT);
	assert_int_equal(cc_rd(&b, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 1);
	assert_int_equal(cc_rd(&b, VIRTIO_PCI_COMMON_Q_SIZE, 2), 16);
	assert_int_equal(mmio_rd(t, r.bar + OFF_TABLE + 12, 4), 1);
	assert_int_equal(mmio_rd(t, b.bar + OFF_TABLE + 16, 8), msi_addr(BLK_SLOT, 1));
	snapshot_continue(&b, &r, 3, 1);

	/* Every truncation, a wrong tag and a future version are refused. */
	for (unsigned i = 0; i < nrec; i++) {
		struct device *dv = find_dev(t, rec[i].name);
		for (size_t len = 0; len < rec[i].w.len; len++)
			assert_int_equal(load_one(dv, rec[i].w.buf, len), -1);
		expect_refused(dv, &rec[i].w, 0, "x", 1);
		uint8_t v99[4] = {99, 0, 0, 0};
		expect_refused(dv, &rec[i].w, 8, v99, 4);
	}
	/* Values out of range. */
	struct device *blk = find_dev(t, "virtio-blk"), *rng = find_dev(t, "virtio-rng");
	struct device *pci = find_dev(t, "pci");
	const struct state_writer *bw = &rec[0].w;
	for (unsigned i = 0; i < nrec; i++)
		if (strcmp(rec[i].name, "virtio-blk") == 0)
			bw = &rec[i].w;
	/* The transport's fields start right after the 12-byte header: type, status, the two
	 * feature selectors, driver features (at 23), the config vector (at 31). */
	uint8_t u64_top[8] = {0, 0, 0, 0, 0, 0, 0, 0x80};
	expect_refused(blk, bw, 23, u64_top, 8);
	uint8_t vec[2] = {9, 0};
	expect_refused(blk, bw, 31, vec, 2);
	uint8_t rng_type[2] = {4, 0};
	expect_refused(blk, bw, 12, rng_type, 2);
	assert_int_equal(load_one(rng, bw->buf, bw->len), -1); /* another device's record */
	/* The queue's vector lies 28 bytes before its virtq record; the table's address 14 into it. */
	size_t vq = find_tag(bw, "virtq");
	expect_refused(blk, bw, vq - 28, vec, 2);
	uint8_t far[8] = {0, 0, 0, 0, 0, 0xff, 0xff, 0};
	expect_refused(blk, bw, vq + 14, far, 8);
	/* pci: a slot's read-only byte (vendor ID of slot 1), a slot claimed present that is not. */
	const struct state_writer *pw = &rec[nrec - 1].w;
	assert_string_equal(rec[nrec - 1].name, "pci");
	size_t slot1 = 12 + 4 + (1 + PCI_CFG_SIZE + 1);
	uint8_t zero = 0, one = 1;
	assert_int_equal(pw->buf[slot1], 1);
	expect_refused(pci, pw, slot1 + 1, &zero, 1);
	size_t slot3 = slot1 + 2ul * (1 + PCI_CFG_SIZE + 1);
	assert_int_equal(pw->buf[slot3], 0);
	expect_refused(pci, pw, slot3, &one, 1);

	/* Random garbling: whatever loads, nothing breaks. */
	uint64_t seed = 0x5eed5eedull;
	for (int i = 0; i < 300; i++) {
		const struct record *rc = &rec[i % nrec];
		uint8_t bad[2048];
		if (rc->w.len < 12 || rc->w.len > sizeof(bad)) {
			fail_msg("record %s: %zu bytes", rc->name, rc->w.len);
			break;
		}
		memcpy(bad, rc->w.buf, rc->w.len);
		for (int k = 0; k < 1 + i % 3; k++) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			bad[(seed >> 33) % rc->w.len] ^= (uint8_t)(1u << ((seed >> 20) % 8));
		}
		int rc_load = load_one(find_dev(t, rc->name), bad, rc->w.len);
		assert_true(rc_load == 0 || rc_load == -1);
	}
	/* Back to the saved state: the devices quiet first (the garbled ones may have served
	 * garbage rings), then RAM, then the records. */
	load_all(t, rec, nrec);
	set_status(&b, 0);
	set_status(&r, 0);
	memcpy(ram(t, 0, RAM_SIZE), saved_ram, RAM_SIZE);
	load_all(t, rec, nrec);
	b = b0;
	r = r0;
	b.t = r.t = t;
	unsigned n = msi_count();
	snapshot_continue(&b, &r, 3, 1);
	/* The rng's configuration vector is still masked: its NEEDS_RESET interrupt waits. */
	struct seg out = {BAD_GPA, 16, true};
	drv_add(&r, &out, 1, false);
	drv_kick(&r);
	wait_status(&r, S_NEEDS_RST, S_NEEDS_RST);
	assert_int_equal(mmio_rd(t, r.bar + OFF_PBA, 8), 1);
	assert_int_equal(msi_count(), n + 2);
	free(saved_ram);
	for (unsigned i = 0; i < nrec; i++)
		sw_free(&rec[i].w);
}

/* ---- 6. BAR relocation --------------------------------------------------------------------- */

static void test_bar_relocation(void **state)
{
	struct fix *f = *state;
	struct tvm *t = f->t;
	struct drv d;
	drv_setup(&d, t, BLK_SLOT, F_VERSION_1, 16, true, true);
	uint64_t old = d.bar, to = PCI_MMIO_BASE + 0x1230000;
	cfg_wr(t, BLK_SLOT, 0x10, (uint32_t)to, 4);
	assert_int_equal(bar0(t, BLK_SLOT), to);
	assert_int_equal(mmio_rd(t, old + VIRTIO_PCI_COMMON_NUMQ, 2), 0xffff);
	assert_int_equal(mmio_rd(t, old, 8), ~0ull);
	mmio_wr(t, old + VIRTIO_PCI_COMMON_STATUS, 0, 1); /* dropped: no reset */
	d.bar = to;
	assert_int_equal(dev_status(&d), S_ALL);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_NUMQ, 2), 1);
	/* Notifications follow the BAR. */
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
	/* The low bits are the BAR's own: an unaligned address is rounded down. */
	cfg_wr(t, BLK_SLOT, 0x10, (uint32_t)to + 0x1234, 4);
	assert_int_equal(cfg_rd(t, BLK_SLOT, 0x10, 4), to);

	/* Memory decoding off: nothing answers, writes are dropped. */
	cfg_wr(t, BLK_SLOT, 0x04, CMD_MASTER, 2);
	assert_int_equal(mmio_rd(t, to, 4), 0xffffffff);
	assert_int_equal(mmio_rd(t, old, 4), 0xffffffff);
	mmio_wr(t, to + VIRTIO_PCI_COMMON_Q_SELECT, 5, 2);
	cfg_wr(t, BLK_SLOT, 0x04, CMD_MEM | CMD_MASTER, 2);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_Q_SELECT, 2), 0);
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);

	/* A BAR outside the window decodes nowhere: just past its end, or over RAM. */
	cfg_wr(t, BLK_SLOT, 0x10, (uint32_t)(PCI_MMIO_BASE + PCI_MMIO_SIZE), 4);
	assert_int_equal(mmio_rd(t, PCI_MMIO_BASE + PCI_MMIO_SIZE - BAR0_SIZE, 4), 0xffffffff);
	assert_int_equal(mmio_rd(t, to, 4), 0xffffffff);
	cfg_wr(t, BLK_SLOT, 0x10, 0x10000000, 4);
	assert_int_equal(mmio_rd(t, to, 4), 0xffffffff);
	cfg_wr(t, BLK_SLOT, 0x10, (uint32_t)old, 4);
	d.bar = old;
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_NUMQ, 2), 1);
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
	/* The rng's BAR never moved. */
	assert_int_equal(mmio_rd(t, bar0(t, RNG_SLOT) + VIRTIO_PCI_COMMON_NUMQ, 2), 1);
}

/* ---- 7. the PCI configuration access capability -------------------------------------------- */

static uint32_t window_rd(struct tvm *t, unsigned cap, unsigned bar, uint32_t off, uint32_t len)
{
	cfg_wr(t, BLK_SLOT, cap + 4, bar, 1);
	cfg_wr(t, BLK_SLOT, cap + 8, off, 4);
	cfg_wr(t, BLK_SLOT, cap + 12, len, 4);
	return cfg_rd(t, BLK_SLOT, cap + 16, 4);
}

static void test_pci_cfg_window(void **state)
{
	struct tvm *t = ((struct fix *)*state)->t;
	struct drv d;
	drv_setup(&d, t, BLK_SLOT, F_VERSION_1, 16, true, true);
	struct caps c;
	walk_caps(t, BLK_SLOT, &c);
	unsigned cap = c.vendor[VIRTIO_PCI_CAP_PCI_CFG];
	assert_int_equal(window_rd(t, cap, 0, VIRTIO_PCI_COMMON_STATUS, 1), S_ALL);
	assert_int_equal(window_rd(t, cap, 0, VIRTIO_PCI_COMMON_NUMQ, 2), 1);
	cc_wr(&d, VIRTIO_PCI_COMMON_DFSELECT, 1, 4);
	assert_int_equal(window_rd(t, cap, 0, VIRTIO_PCI_COMMON_DF, 4) & 1, 1); /* VERSION_1 */
	assert_int_equal(window_rd(t, cap, 0, OFF_DEVICE, 4), (uint32_t)DISK_SECTORS);
	assert_int_equal(window_rd(t, cap, 0, OFF_TABLE + 24, 4), msi_data(BLK_SLOT, 1));
	/* A write through the window. */
	cfg_wr(t, BLK_SLOT, cap + 8, VIRTIO_PCI_COMMON_Q_SELECT, 4);
	cfg_wr(t, BLK_SLOT, cap + 12, 2, 4);
	cfg_wr(t, BLK_SLOT, cap + 16, 5, 4);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_Q_SELECT, 2), 5);
	cc_wr(&d, VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
	/* A window that is not one: another BAR, length 3 or 8, unaligned, past the BAR. */
	assert_int_equal(window_rd(t, cap, 1, VIRTIO_PCI_COMMON_STATUS, 1), 0);
	assert_int_equal(window_rd(t, cap, 0, VIRTIO_PCI_COMMON_NUMQ, 3), 0);
	assert_int_equal(window_rd(t, cap, 0, VIRTIO_PCI_COMMON_DFSELECT, 8), 0);
	assert_int_equal(window_rd(t, cap, 0, VIRTIO_PCI_COMMON_NUMQ + 1, 2), 0);
	assert_int_equal(window_rd(t, cap, 0, BAR0_SIZE, 1), 0);
	assert_int_equal(window_rd(t, cap, 0, 0xfffffffc, 4), 0);
	cfg_wr(t, BLK_SLOT, cap + 8, VIRTIO_PCI_COMMON_STATUS, 4);
	cfg_wr(t, BLK_SLOT, cap + 12, 3, 4);
	cfg_wr(t, BLK_SLOT, cap + 16, 0, 4); /* would reset the device */
	assert_int_equal(dev_status(&d), S_ALL);
	/* The window reaches the ISR too: reading it acknowledges an INTx. */
	msix_control(&d, 0);
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
	wait_level(PCI_INTX_GSI(BLK_SLOT, 0), 1);
	assert_int_equal(window_rd(t, cap, 0, OFF_ISR, 1), 1);
	assert_int_equal(level(PCI_INTX_GSI(BLK_SLOT, 0)), 0);
	/* A reset through the window. */
	cfg_wr(t, BLK_SLOT, cap + 8, VIRTIO_PCI_COMMON_STATUS, 4);
	cfg_wr(t, BLK_SLOT, cap + 12, 1, 4);
	cfg_wr(t, BLK_SLOT, cap + 16, 0, 4);
	assert_int_equal(dev_status(&d), 0);
}

/* ---- 8. random config-space and BAR traffic ----------------------------------------------- */

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* A random value, often one that means something here (a ring address, a small number). */
static uint64_t rnd_value(uint64_t *s)
{
	switch (rnd(s) % 5) {
	case 0:
		return rnd(s) % 64;
	case 1:
		return 0x10000 + (rnd(s) % 0x30000 & ~0xfull);
	case 2:
		return (rnd(s) % RAM_SIZE) & ~0xfull;
	case 3:
		return 1ull << (rnd(s) % 64);
	default:
		return rnd(s);
	}
}

/* The registers of BAR 0 at their own widths, for accesses a driver could make. */
static const struct {
	uint16_t off;
	uint8_t size;
} fields[] = {
    {VIRTIO_PCI_COMMON_DFSELECT, 4},
    {VIRTIO_PCI_COMMON_DF, 4},
    {VIRTIO_PCI_COMMON_GFSELECT, 4},
    {VIRTIO_PCI_COMMON_GF, 4},
    {VIRTIO_PCI_COMMON_MSIX, 2},
    {VIRTIO_PCI_COMMON_NUMQ, 2},
    {VIRTIO_PCI_COMMON_STATUS, 1},
    {VIRTIO_PCI_COMMON_STATUS, 1},
    {VIRTIO_PCI_COMMON_STATUS, 1},
    {VIRTIO_PCI_COMMON_CFGGENERATION, 1},
    {VIRTIO_PCI_COMMON_Q_SELECT, 2},
    {VIRTIO_PCI_COMMON_Q_SIZE, 2},
    {VIRTIO_PCI_COMMON_Q_MSIX, 2},
    {VIRTIO_PCI_COMMON_Q_ENABLE, 2},
    {VIRTIO_PCI_COMMON_Q_ENABLE, 2},
    {VIRTIO_PCI_COMMON_Q_NOFF, 2},
    {VIRTIO_PCI_COMMON_Q_DESCLO, 4},
    {VIRTIO_PCI_COMMON_Q_DESCHI, 4},
    {VIRTIO_PCI_COMMON_Q_AVAILLO, 4},
    {VIRTIO_PCI_COMMON_Q_AVAILHI, 4},
    {VIRTIO_PCI_COMMON_Q_USEDLO, 4},
    {VIRTIO_PCI_COMMON_Q_USEDHI, 4},
    {VIRTIO_PCI_COMMON_Q_DESCLO, 8},
    {OFF_ISR, 1},
    {OFF_DEVICE, 8},
    {OFF_DEVICE + 0x10, 4},
    {OFF_NOTIFY, 2},
    {OFF_NOTIFY, 2},
    {OFF_TABLE, 4},
    {OFF_TABLE + 8, 4},
    {OFF_TABLE + 12, 4},
    {OFF_TABLE + 28, 4},
    {OFF_PBA, 8},
};

/* A value for the field at off: statuses a driver writes, queue 0 enabled, vectors 0-2. */
static uint64_t field_value(uint64_t *s, unsigned off)
{
	static const uint8_t statuses[] = {
	    0, S_ACK, S_ACK | S_DRIVER, S_ACK | S_DRIVER | S_FEAT_OK, S_ALL, 0x80};
	if (rnd(s) % 4 == 0)
		return rnd_value(s);
	switch (off) {
	case VIRTIO_PCI_COMMON_STATUS:
		return statuses[rnd(s) % sizeof(statuses)];
	case VIRTIO_PCI_COMMON_Q_ENABLE:
	case VIRTIO_PCI_COMMON_DFSELECT:
	case VIRTIO_PCI_COMMON_GFSELECT:
		return rnd(s) % 2;
	case VIRTIO_PCI_COMMON_GF:
		return rnd(s) & (uint32_t)(F_INDIRECT | F_EVENT_IDX | 1u << VIRTIO_BLK_F_FLUSH | 1);
	case VIRTIO_PCI_COMMON_MSIX:
	case VIRTIO_PCI_COMMON_Q_MSIX:
	case VIRTIO_PCI_COMMON_Q_SELECT:
		return rnd(s) % 3;
	case VIRTIO_PCI_COMMON_Q_SIZE:
		return 1u << (rnd(s) % 10);
	case OFF_TABLE + 12:
	case OFF_TABLE + 28:
		return rnd(s) % 2;
	default:
		return rnd_value(s);
	}
}

/* A driver's set-up and request without any check: the device may be in any state. */
static void blind_setup(struct drv *d, uint64_t features)
{
	uint16_t qsize = d->qsize;
	uint64_t rings = d->rings;
	struct tvm *t = d->t;
	unsigned slot = d->slot;
	uint64_t bar = d->bar;
	/* As a driver's probe does: the function decodes its BAR and masters the bus. */
	cfg_wr(t, slot, 0x04, CMD_MEM | CMD_MASTER, 2);
	cfg_wr(t, slot, 0x10, (uint32_t)bar, 4);
	*d = (struct drv){.t = t,
			  .slot = slot,
			  .bar = bar,
			  .rings = rings,
			  .qsize = qsize,
			  .features = features,
			  .used_event = -1};
	set_status(d, 0);
	set_status(d, S_ACK | S_DRIVER);
	write_features(d, features);
	set_status(d, S_ACK | S_DRIVER | S_FEAT_OK);
	memset(ram(t, rings, 0x3000), 0, 0x3000);
	queue_regs(d, qsize, d_desc(d), d_avail(d), d_used(d));
	cc_wr(d, VIRTIO_PCI_COMMON_Q_MSIX, 1, 2);
	cc_wr(d, VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
	set_status(d, S_ALL);
}

static void blind_request(struct drv *d, uint64_t *s)
{
	if (d->slot == BLK_SLOT) {
		unsigned i = d->avail_idx % d->qsize;
		uint64_t hdr = d->rings + 0x6000 + 16ull * i;
		struct virtio_blk_outhdr h = {.type =
						  (uint32_t)(rnd(s) % 3 ? rnd(s) % 2 : rnd(s) % 16),
					      .sector = rnd(s) % (DISK_SECTORS + 8)};
		memcpy(ram(d->t, hdr, sizeof(h)), &h, sizeof(h));
		struct seg sg[3] = {{hdr, 16, false},
				    {DATA_GPA + 0x1000 * (rnd(s) % 16), 512 * (1 + rnd(s) % 8),
				     h.type == VIRTIO_BLK_T_IN},
				    {d->rings + 0x7000 + i, 1, true}};
		drv_add(d, sg, 3, (d->features & F_INDIRECT) && rnd(s) % 2);
	} else {
		struct seg sg = {DATA2_GPA + 64 * (rnd(s) % 64), 64, true};
		drv_add(d, &sg, 1, false);
	}
	drv_kick(d);
	/* Give the worker a moment (it runs in parallel with everything that follows anyway). */
	uint64_t end = now_ms() + 2;
	while (used_index(d) == d->used_idx && now_ms() <= end)
		usleep(20);
}

static void test_random(void **state)
{
	struct tvm *t = ((struct fix *)*state)->t;
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	uint64_t bars[2] = {bar0(t, BLK_SLOT), bar0(t, RNG_SLOT)};
	static const unsigned sizes[] = {1, 2, 4, 8};
	struct drv drvs[2];
	drv_setup(&drvs[0], t, BLK_SLOT, F_VERSION_1 | F_INDIRECT | F_EVENT_IDX, 16, true, true);
	drv_setup(&drvs[1], t, RNG_SLOT, F_VERSION_1 | F_INDIRECT, 8, true, true);
	/* Garbage where stray ring addresses land. */
	uint8_t *junk = ram(t, 0x30000, 0x10000);
	for (size_t i = 0; i < 0x10000; i++)
		junk[i] = (uint8_t)rnd(&seed);
	/* The devices complain about every broken rule: keep that out of the test's output. */
	fflush(stderr);
	int saved_stderr = dup(STDERR_FILENO), devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	assert_true(saved_stderr >= 0 && devnull >= 0);
	dup2(devnull, STDERR_FILENO);
	unsigned failed_accesses = 0;
	unsigned served = 0, needs_reset = 0;
	for (int i = 0; i < 6000; i++) {
		unsigned op = (unsigned)(rnd(&seed) % 16);
		unsigned size = sizes[rnd(&seed) % 4];
		uint8_t buf[8];
		put_le(buf, rnd_value(&seed), 8);
		bool write = rnd(&seed) & 1;
		struct drv *d = &drvs[rnd(&seed) % 2];
		int rc = 0;
		if (op < 3) {
			/* Configuration space of the three functions (and a few absent ones). */
			unsigned slot = (unsigned)(rnd(&seed) % 4),
				 off = (unsigned)(rnd(&seed) % 256);
			unsigned fn = rnd(&seed) % 8 == 0 ? (unsigned)(rnd(&seed) % 8) : 0;
			size = size == 8 ? 4 : size;
			off &= ~(size - 1);
			pio_wr(t, PCI_CONFIG_ADDR_PORT, test_cfg_addr(0, slot, fn, off), 4);
			rc = bus_access(&t->vm.pio, PCI_CONFIG_DATA_PORT + (off & 3), buf, size,
					write);
		} else if (op < 4) {
			/* The configuration ports themselves, any size. */
			unsigned port = (unsigned)(rnd(&seed) % 8);
			size = size == 8 ? 4 : size;
			if (port + size <= 8)
				rc = bus_access(&t->vm.pio, PCI_CONFIG_ADDR_PORT + port, buf, size,
						write);
		} else if (op < 9) {
			/* A register of BAR 0 at its width, with a value that means something. */
			unsigned k = (unsigned)(rnd(&seed) % (sizeof(fields) / sizeof(fields[0])));
			put_le(buf, field_value(&seed, fields[k].off), 8);
			rc = bus_access(&t->vm.mmio, d->bar + fields[k].off, buf, fields[k].size,
					write || fields[k].off == VIRTIO_PCI_COMMON_STATUS);
		} else if (op < 11) {
			/* Anywhere in BAR 0, naturally aligned. */
			uint64_t off = rnd(&seed) % 4 ? rnd(&seed) % 0x100 : rnd(&seed) % BAR0_SIZE;
			off &= ~(uint64_t)(size - 1);
			rc = bus_access(&t->vm.mmio, bars[rnd(&seed) % 2] + off, buf, size, write);
		} else if (op < 12) {
			/* Anywhere in the MMIO window. */
			uint64_t a = PCI_MMIO_BASE + rnd(&seed) % (PCI_MMIO_SIZE - 8);
			a &= ~(uint64_t)(size - 1);
			rc = bus_access(&t->vm.mmio, a, buf, size, write);
		} else if (op < 13) {
			/* The driver's side: ring memory changes under the device. */
			uint64_t a = d->rings + rnd(&seed) % 0x3000;
			memcpy(ram(t, a & ~7ull, 8), buf, 8);
		} else if (op < 14) {
			uint64_t f = F_VERSION_1 | (rnd(&seed) & (F_INDIRECT | F_EVENT_IDX));
			served += (uint16_t)(used_index(d) - d->used_idx);
			if (dev_status(d) & S_NEEDS_RST)
				needs_reset++;
			blind_setup(d, f);
		} else {
			blind_request(d, &seed);
		}
		failed_accesses += rc != 0;
	}
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	close(devnull);
	assert_int_equal(failed_accesses, 0);
	/* The run did reach the devices: requests were served and rules were broken. */
	assert_true(served > 0);
	assert_true(needs_reset > 0);

	/* Put the functions back as firmware left them, reset, and use them normally. */
	for (unsigned s = BLK_SLOT; s <= RNG_SLOT; s++) {
		cfg_wr(t, s, 0x04, CMD_MEM | CMD_MASTER, 2);
		cfg_wr(t, s, 0x10, (uint32_t)bars[s - 1], 4);
		struct drv x = {.t = t, .slot = s, .bar = bars[s - 1]};
		msix_control(&x, 0);
		set_status(&x, 0);
		mmio_rd(t, x.bar + OFF_ISR, 1);
	}
	recover(&drvs[0], true);
	recover(&drvs[1], false);
	assert_int_equal(blk_simple(&drvs[0], VIRTIO_BLK_T_IN, 0, DATA2_GPA, 4096, true, 4097),
			 VIRTIO_BLK_S_OK);
}

/* ---- regressions: bugs this test found in the transport ------------------------------------ */

/* The event index flags of a queue are fixed when it is enabled: its rings were checked against
 * RAM for that layout. A driver that enables the queue first and negotiates EVENT_IDX after, or
 * clears FEATURES_OK to renegotiate, must not make the device touch the 2 bytes after the used
 * ring. RAM's last page is taken away from the region so that the device's access lands there
 * instead of outside the mapping. */
static void test_event_idx_after_enable(void **state)
{
	struct tvm *t = ((struct fix *)*state)->t;
	t->vm.mem.region[0].size -= PAGE_SIZE;
	uint64_t end = t->vm.mem.region[0].size;
	uint8_t *guard = t->vm.mem.host + end;
	memset(guard, 0, PAGE_SIZE);
	for (int route = 0; route < 2; route++) {
		struct drv d = {.t = t,
				.slot = RNG_SLOT,
				.bar = bar0(t, RNG_SLOT),
				.rings = RNG_RINGS,
				.qsize = 8,
				.used_event = -1};
		uint64_t used = end - (4 + 8ull * d.qsize); /* ends exactly at the end of RAM */
		cfg_wr(t, RNG_SLOT, 0x04, CMD_MEM | CMD_MASTER, 2);
		set_status(&d, 0);
		set_status(&d, S_ACK | S_DRIVER);
		write_features(&d, F_VERSION_1 | (route == 0 ? F_EVENT_IDX : 0));
		if (route == 1)
			set_status(&d, S_ACK | S_DRIVER | S_FEAT_OK);
		memset(ram(t, d.rings, 0x3000), 0, 0x3000);
		memset(ram(t, used, 4 + 8ull * d.qsize), 0, 4 + 8ull * d.qsize);
		queue_regs(&d, d.qsize, d_desc(&d), d_avail(&d), used);
		cc_wr(&d, VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
		if (route == 1) {
			/* Clearing FEATURES_OK (which a device may refuse) to renegotiate. */
			set_status(&d, S_ACK | S_DRIVER);
			write_features(&d, F_VERSION_1 | F_EVENT_IDX);
		}
		set_status(&d, S_ACK | S_DRIVER | S_FEAT_OK);
		set_status(&d, S_ALL);
		put_desc(t, d_desc(&d), DATA2_GPA, 16, VRING_DESC_F_WRITE, 0);
		uint16_t *avail = ram(t, d_avail(&d), 4 + 2ull * d.qsize + 2);
		avail[2] = 0;
		__atomic_store_n(&avail[1], 1, __ATOMIC_RELEASE);
		mmio_wr(t, d.bar + OFF_NOTIFY, 0, 2);
		/* Served or refused, either way within the rings' bytes. */
		uint64_t until = now_ms() + WAIT_MS;
		uint16_t *uidx = (uint16_t *)(t->vm.mem.host + used + 2);
		while (__atomic_load_n(uidx, __ATOMIC_ACQUIRE) != 1 &&
		       !(dev_status(&d) & S_NEEDS_RST))
			assert_true(now_ms() < until);
		sleep_ms(QUIET_MS);
		assert_true(all_zero(guard, PAGE_SIZE));
	}
	t->vm.mem.region[0].size += PAGE_SIZE;
}

/* Accesses to the common configuration that are unaligned or wider than their field: each
 * changes only the bytes it covers (no shift past a field's 8 bytes). */
static void test_common_cfg_odd_writes(void **state)
{
	struct tvm *t = ((struct fix *)*state)->t;
	struct drv d = {.t = t, .slot = BLK_SLOT, .bar = bar0(t, BLK_SLOT)};
	set_status(&d, 0);
	queue_regs(&d, 16, 0x11110000, 0x22220000, 0x33330000);
	/* 8 bytes at queue_device + 4: the high half and 4 reserved bytes. */
	cc_wr(&d, VIRTIO_PCI_COMMON_Q_USEDHI, 0xaabbccdd00000000ull, 8);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_Q_USEDLO, 4), 0x33330000);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_Q_USEDHI, 4), 0);
	/* 4 bytes at queue_driver + 6. */
	cc_wr(&d, VIRTIO_PCI_COMMON_Q_AVAILLO + 6, 0x01020000, 4);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_Q_AVAILLO, 4), 0x22220000);
	/* 8 bytes at device_feature_select + 1. */
	cc_wr(&d, VIRTIO_PCI_COMMON_DFSELECT + 1, 0x0100000000000000ull, 8);
	assert_int_equal(cc_rd(&d, VIRTIO_PCI_COMMON_DFSELECT, 4), 0);
	set_status(&d, 0);
}

/* A snapshot record refused late (here: its ring is not in RAM) must not leave the MSI-X state
 * it carried behind: the function's table and enable bit are the PCI side's, which a virtio
 * reset does not touch, and they must still agree with config space. */
static void test_refused_load_keeps_msix(void **state)
{
	struct tvm *t = ((struct fix *)*state)->t;
	struct drv d;
	drv_setup(&d, t, BLK_SLOT, F_VERSION_1, 16, true, true);
	struct device *dv = find_dev(t, "virtio-blk");
	struct state_writer w;
	sw_init(&w);
	dv->save(dv->opaque, &w);
	assert_false(w.err);
	/* msix_enabled at 37, vector 1's data at 39 + 14 + 8, the ring 14 into the virtq record. */
	uint8_t *bad = malloc(w.len);
	assert_non_null(bad);
	memcpy(bad, w.buf, w.len);
	bad[37] = 0;
	put_le(bad + 61, 0x99, 4);
	put_le(bad + find_tag(&w, "virtq") + 14, BAD_GPA, 8);
	assert_int_equal(load_one(dv, bad, w.len), -1);
	free(bad);
	sw_free(&w);
	/* The driver starts over (the device was reset) and leaves MSI-X as config space shows it:
	 * enabled, vector 1 programmed. */
	struct caps c;
	walk_caps(t, BLK_SLOT, &c);
	assert_int_equal(cfg_rd(t, BLK_SLOT, c.msix + 2, 2) & MSIX_ENABLE, MSIX_ENABLE);
	d.qsize = 16;
	blind_setup(&d, F_VERSION_1);
	assert_int_equal(dev_status(&d), S_ALL);
	unsigned n = msi_count();
	assert_int_equal(blk_flush(&d), VIRTIO_BLK_S_OK);
	wait_msis(n + 1);
	assert_int_equal(level(PCI_INTX_GSI(BLK_SLOT, 0)), 0);
	assert_int_equal(mmio_rd(t, d.bar + OFF_TABLE + 24, 4), msi_data(BLK_SLOT, 1));
	check_msi(n, BLK_SLOT, 1);
}

/* A queue size above the one the device offers is refused at enable, as the transport's own
 * comment on queue_size promises. */
static void test_queue_size_above_max(void **state)
{
	struct tvm *t = ((struct fix *)*state)->t;
	struct drv d = {.t = t, .slot = RNG_SLOT, .bar = bar0(t, RNG_SLOT), .rings = RNG_RINGS};
	cfg_wr(t, RNG_SLOT, 0x04, CMD_MEM | CMD_MASTER, 2);
	set_status(&d, 0);
	set_status(&d, S_ACK | S_DRIVER);
	write_features(&d, F_VERSION_1);
	set_status(&d, S_ACK | S_DRIVER | S_FEAT_OK);
	queue_regs(&d, RNG_QMAX * 2, d_desc(&d), d_avail(&d), d_used(&d));
	cc_wr(&d, VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
	assert_true(dev_status(&d) & S_NEEDS_RST);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_enumeration, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_features, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_blk_io, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_blk_io_indirect_event_idx, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_blk_not_running, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_msix_masking, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_intx, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rng, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rule_breaking, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bar_relocation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pci_cfg_window, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_random, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_event_idx_after_enable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_common_cfg_odd_writes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused_load_keeps_msix, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_queue_size_above_max, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
