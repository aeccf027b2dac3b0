/* virtio_test: a virtio 1.x PCI driver for ferry's virtio-rng (`ferry run --rng`), small enough
 * for the KVM engine on the nested development host (a few thousand CPL 0 instructions).
 *  1. Scans bus 0 through configuration mechanism #1 (0xcf8/0xcfc) for 1af4:1044, checks the
 *     host bridge's class at 00:00.0, sizes BAR 0 (which also moves the notification address's
 *     ioeventfd away and back on KVM), and walks the capability list for the common, notify and
 *     ISR regions and MSI-X.
 *  2. MSI-X: reset, feature negotiation (VERSION_1 only), queue 0 of size 8 with two chains of
 *     device-writable buffers (2 x 32 and 1 x 32 bytes), table entry 0 to vector 0x31 of APIC 0,
 *     DRIVER_OK, notify; halts until the interrupt, then checks the used ring and the bytes.
 *  3. INTx: the same with MSI-X off, through the I/O APIC's entry for the slot's GSI
 *     (level-triggered, active low); the handler reads ISR (bit 0 set; the read clears it and
 *     lowers the line). No interrupt may come before the notification (an idle line must not
 *     read as asserted) nor after the ISR read and EOI (~5 ms windows each).
 *  4. A descriptor outside RAM: the device must set NEEDS_RESET (and raise a configuration
 *     interrupt), use nothing, and read status 0 after a reset.
 * A one-shot local APIC timer (~4 s, vector 0x30) is the watchdog for each wait.
 * Exit: 0 (status 1) ok; one code per failed check, 0x50-0x77 (see the fail() calls), printed
 * with the phase on a "FAIL:" line. */
#include <linux/virtio_config.h>
#include <linux/virtio_pci.h>
#include <linux/virtio_ring.h>

#include "rt.h"

#define VENDOR_VIRTIO  0x1af4
#define DEVICE_RNG     0x1044 /* 0x1040 + VIRTIO_ID_RNG */
#define CLASS_HOST     0x060000
#define PCI_MMIO_LO    0xc0000000u /* ferry places BARs in [3 GiB, 3.5 GiB) */
#define PCI_MMIO_HI    0xe0000000u
#define CAP_VENDOR     0x09
#define CAP_MSIX       0x11
#define CMD_MEM        0x0002
#define CMD_MASTER     0x0004
#define STS_INTX       0x0008
#define STS_CAPS       0x0010
#define IOAPIC         0xfec00000ull
#define IOAPIC_REDIR   0x10
#define RTE_ACTIVE_LOW (1u << 13)
#define RTE_LEVEL      (1u << 15)
#define RTE_MASKED     (1u << 16)
#define INTX_GSI(slot) (16 + (slot) % 8)

#define WDOG_VEC       0x30
#define MSI_VEC        0x31
#define INTX_VEC       0x32
#define WDOG_COUNT     0xf0000000u /* ~4 s of a 1 GHz APIC bus clock */
#define QUIET_COUNT    5000000u    /* ~5 ms */
#define LAPIC_ISR      0x100

#define QSZ            8
#define BUF_LEN        32
#define BAD_ADDR       0xffffffff0000ull /* far beyond any guest RAM */

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline uint8_t mmio_read8(uint64_t a)
{
	return *(volatile uint8_t *)a;
}
static inline uint16_t mmio_read16(uint64_t a)
{
	return *(volatile uint16_t *)a;
}
static inline void mmio_write8(uint64_t a, uint8_t v)
{
	*(volatile uint8_t *)a = v;
}
static inline void mmio_write16(uint64_t a, uint16_t v)
{
	*(volatile uint16_t *)a = v;
}
static inline void barrier(void)
{
	__asm__ volatile("" ::: "memory");
}

/* The rings live in the image's .bss (identity-mapped RAM, so a pointer is its guest-physical
 * address). No VIRTIO_F_EVENT_IDX: no used_event / avail_event fields. */
static struct vring_desc desc[QSZ] __attribute__((aligned(16)));
static volatile struct {
	uint16_t flags, idx, ring[QSZ];
} avail __attribute__((aligned(4)));
static volatile struct {
	uint16_t flags, idx;
	struct vring_used_elem ring[QSZ];
} used __attribute__((aligned(4)));
static uint8_t bufs[3][BUF_LEN] __attribute__((aligned(16)));

static unsigned slot;
static uint64_t bar0, common, notify_base, isr_addr, msix_table;
static uint32_t notify_mult, notify_len;
static unsigned msix_cap;

static const char *phase = "pci";
static volatile unsigned msi_count, intx_count, intx_stray, wdog_fired;
static volatile int lapic_quirk; /* the local APIC did not show the INTx vector in service */
static volatile uint8_t intx_isr;

__attribute__((noreturn, format(printf, 2, 3))) static void fail(uint8_t code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("FAIL: %s: ", phase);
	vprintf(fmt, ap);
	va_end(ap);
	putc('\n');
	vm_exit(code);
}

/* ---- PCI configuration space (mechanism #1) ---- */

static void cfg_select(unsigned s, unsigned reg)
{
	outl(0xcf8, 0x80000000u | s << 11 | (reg & 0xfc));
}
static uint32_t cfg_read32(unsigned s, unsigned reg)
{
	cfg_select(s, reg);
	return inl(0xcfc);
}
static void cfg_write32(unsigned s, unsigned reg, uint32_t v)
{
	cfg_select(s, reg);
	outl(0xcfc, v);
}
static void cfg_write16(unsigned s, unsigned reg, uint16_t v)
{
	cfg_select(s, reg);
	outw((uint16_t)(0xcfc + (reg & 2)), v);
}

/* ---- interrupts ---- */

static void on_watchdog(struct irq_frame *f)
{
	wdog_fired = 1;
	mmio_write32(LAPIC + LAPIC_EOI, 0);
}

static void on_msi(struct irq_frame *f)
{
	msi_count++;
	mmio_write32(LAPIC + LAPIC_EOI, 0);
}

/* Level-triggered: reading ISR lowers the line before the EOI lets the I/O APIC look at it
 * again. An interrupt with nothing in ISR means the line was seen asserted when it was not.
 * One exception: the nested development host's local APIC (kvm_pvm) does not move a level
 * interrupt from IRR to ISR when it delivers it, so the stale IRR bit delivers it once more
 * after the EOI; that host is recognised by the vector not being in service in its own handler,
 * and there a stray interrupt after a real one is counted instead of failing. */
static void on_intx(struct irq_frame *f)
{
	uint32_t in_service =
	    mmio_read32(LAPIC + LAPIC_ISR + 0x10 * (INTX_VEC / 32)) >> (INTX_VEC % 32) & 1;
	uint8_t isr = mmio_read8(isr_addr);
	mmio_write32(LAPIC + LAPIC_EOI, 0);
	if (isr & 1) {
		intx_isr = isr;
		intx_count++;
		lapic_quirk |= !in_service;
		return;
	}
	intx_stray++;
	if (!lapic_quirk || intx_stray > 1)
		fail(0x6c, "interrupt with ISR 0x%x (%u before it): the line was not asserted", isr,
		     intx_count);
}

static void watchdog_arm(uint32_t count)
{
	wdog_fired = 0;
	mmio_write32(LAPIC + LAPIC_TIMER_DIV, 0xb);      /* divide by 1 */
	mmio_write32(LAPIC + LAPIC_LVT_TIMER, WDOG_VEC); /* one-shot, unmasked */
	mmio_write32(LAPIC + LAPIC_TIMER_INIT, count);
}

static void watchdog_stop(void)
{
	mmio_write32(LAPIC + LAPIC_TIMER_INIT, 0);
}

/* Halts until *count reaches n (1) or the LAPIC timer has counted down from timeout (0);
 * interrupts off on return. */
static int wait_irq(volatile unsigned *count, unsigned n, uint32_t timeout)
{
	watchdog_arm(timeout);
	for (;;) {
		cli();
		if (*count >= n) {
			watchdog_stop();
			return 1;
		}
		if (wdog_fired)
			return 0;
		sti_hlt();
	}
}

static void ioapic_write(unsigned idx, uint32_t v)
{
	mmio_write32(IOAPIC, idx);
	mmio_write32(IOAPIC + 0x10, v);
}

/* ---- discovery ---- */

static unsigned find_device(void)
{
	uint32_t host_class = cfg_read32(0, 0x08) >> 8;
	if (host_class != CLASS_HOST)
		fail(0x50, "00:00.0 class 0x%06x, expected a host bridge (0x%06x)", host_class,
		     CLASS_HOST);
	for (unsigned s = 1; s < 32; s++) {
		uint32_t id = cfg_read32(s, 0x00);
		if (id == ((uint32_t)DEVICE_RNG << 16 | VENDOR_VIRTIO))
			return s;
	}
	fail(0x51, "no virtio-rng (%04x:%04x) on bus 0", VENDOR_VIRTIO, DEVICE_RNG);
}

/* Sizes BAR 0 the way firmware does (decoding off meanwhile) and restores it. */
static uint32_t size_bar0(uint32_t bar)
{
	cfg_write16(slot, 0x04, 0);
	cfg_write32(slot, 0x10, 0xffffffffu);
	uint32_t mask = cfg_read32(slot, 0x10);
	cfg_write32(slot, 0x10, bar);
	cfg_write16(slot, 0x04, CMD_MEM | CMD_MASTER);
	return ~(mask & ~0xfu) + 1;
}

static void check_region(uint8_t code, const char *what, uint32_t off, uint32_t len,
			 uint32_t min_len, uint32_t bar_size)
{
	if (len < min_len || off > bar_size || len > bar_size - off)
		fail(code, "%s region at 0x%x (0x%x bytes) does not fit BAR 0 (0x%x bytes)", what,
		     off, len, bar_size);
}

static void discover(void)
{
	slot = find_device();
	uint32_t rev = cfg_read32(slot, 0x08) & 0xff, sub = cfg_read32(slot, 0x2c);
	uint32_t hdr = cfg_read32(slot, 0x0c) >> 16 & 0x7f, irq = cfg_read32(slot, 0x3c);
	printf("virtio-rng at 00:%02x.0, revision %u, subsystem %04x:%04x, irq pin %u line %u\n",
	       slot, rev, sub & 0xffff, sub >> 16, irq >> 8 & 0xff, irq & 0xff);
	/* Non-transitional device: revision >= 1, subsystem device >= 0x40 (spec 4.1.2.1). */
	if (hdr != 0 || rev < 1 || (sub >> 16) < 0x40 || (irq >> 8 & 0xff) != 1)
		fail(0x52, "header type %u, revision %u, subsystem device 0x%x, pin %u", hdr, rev,
		     sub >> 16, irq >> 8 & 0xff);
	uint32_t bar = cfg_read32(slot, 0x10);
	uint32_t size = size_bar0(bar);
	bar0 = bar & ~0xfu;
	printf("BAR 0: 0x%lx, 0x%x bytes\n", bar0, size);
	if ((bar & 0x7) != 0 || size < 0x1000 || (size & (size - 1)) || (bar0 & (size - 1)) ||
	    bar0 < PCI_MMIO_LO || bar0 + size > PCI_MMIO_HI)
		fail(0x53, "BAR 0 0x%x of 0x%x bytes: not a 32-bit memory BAR in the window", bar,
		     size);

	if (!(cfg_read32(slot, 0x04) >> 16 & STS_CAPS))
		fail(0x54, "status register has no capability list");
	unsigned found = 0, ptr = cfg_read32(slot, 0x34) & 0xfc;
	for (unsigned n = 0; ptr && n < 48; n++, ptr = cfg_read32(slot, ptr) >> 8 & 0xfc) {
		if (ptr < 0x40)
			fail(0x55, "capability pointer 0x%x inside the header", ptr);
		uint32_t w0 = cfg_read32(slot, ptr);
		if ((w0 & 0xff) == CAP_MSIX) {
			msix_cap = ptr;
			uint32_t table = cfg_read32(slot, ptr + 4), pba = cfg_read32(slot, ptr + 8);
			unsigned nvec = (w0 >> 16 & 0x7ff) + 1;
			if ((table & 7) || (pba & 7))
				fail(0x56, "MSI-X table/PBA in BARs %u/%u", table & 7, pba & 7);
			check_region(0x57, "MSI-X table", table, 16 * nvec, 16, size);
			check_region(0x58, "MSI-X PBA", pba, (nvec + 63) / 64 * 8, 8, size);
			msix_table = bar0 + table;
			found |= 8;
			continue;
		}
		if ((w0 & 0xff) != CAP_VENDOR)
			continue;
		unsigned type = w0 >> 24, cap_len = w0 >> 16 & 0xff;
		uint32_t b = cfg_read32(slot, ptr + 4) & 0xff;
		uint32_t off = cfg_read32(slot, ptr + 8), len = cfg_read32(slot, ptr + 12);
		if (type < VIRTIO_PCI_CAP_COMMON_CFG || type > VIRTIO_PCI_CAP_ISR_CFG)
			continue;
		if (b != 0 || cap_len < 16)
			fail(0x59, "virtio capability type %u: BAR %u, length %u", type, b,
			     cap_len);
		if (type == VIRTIO_PCI_CAP_COMMON_CFG) {
			check_region(0x5a, "common", off, len, 0x38, size);
			common = bar0 + off;
		} else if (type == VIRTIO_PCI_CAP_NOTIFY_CFG) {
			check_region(0x5b, "notify", off, len, 2, size);
			notify_mult = cfg_read32(slot, ptr + 16);
			if (cap_len < 20 || (notify_mult & 1))
				fail(0x5c, "notify capability: length %u, multiplier %u", cap_len,
				     notify_mult);
			notify_base = bar0 + off;
			notify_len = len;
		} else {
			check_region(0x5d, "ISR", off, len, 1, size);
			isr_addr = bar0 + off;
		}
		found |= 1u << (type - 1);
	}
	if (found != 0xf)
		fail(0x5e, "capabilities found 0x%x of 0xf (common, notify, ISR, MSI-X)", found);
	printf("caps: common +0x%lx notify +0x%lx (x%u) isr +0x%lx msix +0x%lx\n", common - bar0,
	       notify_base - bar0, notify_mult, isr_addr - bar0, msix_table - bar0);
}

/* ---- the device ---- */

static uint8_t status_read(void)
{
	return mmio_read8(common + VIRTIO_PCI_COMMON_STATUS);
}

static void status_set(uint8_t bits)
{
	mmio_write8(common + VIRTIO_PCI_COMMON_STATUS, (uint8_t)(status_read() | bits));
}

static void device_reset(void)
{
	mmio_write8(common + VIRTIO_PCI_COMMON_STATUS, 0);
	uint8_t s = status_read();
	if (s != 0)
		fail(0x5f, "status 0x%x after a reset", s);
}

/* Reset, negotiate VERSION_1 alone, set up queue 0 (size QSZ); returns its notify address. */
static uint64_t device_init(void)
{
	device_reset();
	status_set(VIRTIO_CONFIG_S_ACKNOWLEDGE);
	status_set(VIRTIO_CONFIG_S_DRIVER);
	mmio_write32(common + VIRTIO_PCI_COMMON_DFSELECT, 1);
	uint32_t hi = mmio_read32(common + VIRTIO_PCI_COMMON_DF);
	if (!(hi & 1u << (VIRTIO_F_VERSION_1 - 32)))
		fail(0x60, "device features 63:32 = 0x%x lack VERSION_1", hi);
	mmio_write32(common + VIRTIO_PCI_COMMON_GFSELECT, 0);
	mmio_write32(common + VIRTIO_PCI_COMMON_GF, 0);
	mmio_write32(common + VIRTIO_PCI_COMMON_GFSELECT, 1);
	mmio_write32(common + VIRTIO_PCI_COMMON_GF, 1u << (VIRTIO_F_VERSION_1 - 32));
	status_set(VIRTIO_CONFIG_S_FEATURES_OK);
	uint8_t s = status_read();
	if (!(s & VIRTIO_CONFIG_S_FEATURES_OK))
		fail(0x61, "FEATURES_OK did not stick (status 0x%x)", s);

	uint16_t nq = mmio_read16(common + VIRTIO_PCI_COMMON_NUMQ);
	mmio_write16(common + VIRTIO_PCI_COMMON_Q_SELECT, 0);
	uint16_t qmax = mmio_read16(common + VIRTIO_PCI_COMMON_Q_SIZE);
	uint16_t en = mmio_read16(common + VIRTIO_PCI_COMMON_Q_ENABLE);
	uint16_t vec = mmio_read16(common + VIRTIO_PCI_COMMON_Q_MSIX);
	if (nq < 1 || qmax < QSZ || en != 0 || vec != VIRTIO_MSI_NO_VECTOR)
		fail(0x62, "queues %u, queue 0 size %u, enable %u, vector 0x%x after reset", nq,
		     qmax, en, vec);
	mmio_write16(common + VIRTIO_PCI_COMMON_Q_SIZE, QSZ);
	mmio_write32(common + VIRTIO_PCI_COMMON_Q_DESCLO, (uint32_t)(uint64_t)desc);
	mmio_write32(common + VIRTIO_PCI_COMMON_Q_DESCHI, 0);
	mmio_write32(common + VIRTIO_PCI_COMMON_Q_AVAILLO, (uint32_t)(uint64_t)&avail);
	mmio_write32(common + VIRTIO_PCI_COMMON_Q_AVAILHI, 0);
	mmio_write32(common + VIRTIO_PCI_COMMON_Q_USEDLO, (uint32_t)(uint64_t)&used);
	mmio_write32(common + VIRTIO_PCI_COMMON_Q_USEDHI, 0);
	uint16_t noff = mmio_read16(common + VIRTIO_PCI_COMMON_Q_NOFF);
	if ((uint64_t)noff * notify_mult + 2 > notify_len)
		fail(0x63, "queue 0 notifies at +0x%lx, outside the 0x%x-byte notify region",
		     (uint64_t)noff * notify_mult, notify_len);
	return notify_base + (uint64_t)noff * notify_mult;
}

static void queue_enable(void)
{
	mmio_write16(common + VIRTIO_PCI_COMMON_Q_ENABLE, 1);
	uint16_t en = mmio_read16(common + VIRTIO_PCI_COMMON_Q_ENABLE);
	if (en != 1)
		fail(0x64, "queue_enable reads %u after enabling", en);
}

/* Chain A: descriptors 0 -> 1 (2 x 32 bytes); chain B: descriptor 2 (32 bytes). */
static void post_buffers(uint64_t addr0)
{
	memset((void *)bufs, 0, sizeof(bufs));
	memset((void *)&used, 0, sizeof(used));
	for (unsigned i = 0; i < 3; i++)
		desc[i] = (struct vring_desc){
		    .addr = i == 0 ? addr0 : (uint64_t)bufs[i],
		    .len = BUF_LEN,
		    .flags = VRING_DESC_F_WRITE | (i == 0 ? VRING_DESC_F_NEXT : 0),
		    .next = 1,
		};
	avail.flags = 0;
	avail.ring[0] = 0;
	avail.ring[1] = 2;
	barrier(); /* x86 keeps stores in order: the ring entries before the index */
	avail.idx = 2;
}

/* Fails with code .. code + 3. */
static void check_used(uint8_t code)
{
	barrier();
	uint16_t idx = used.idx;
	if (idx != 2)
		fail(code, "used idx %u, expected 2", idx);
	uint32_t id0 = used.ring[0].id, len0 = used.ring[0].len;
	uint32_t id1 = used.ring[1].id, len1 = used.ring[1].len;
	if (id0 != 0 || len0 != 2 * BUF_LEN || id1 != 2 || len1 != BUF_LEN)
		fail((uint8_t)(code + 1), "used (%u, %u), (%u, %u); expected (0, %u), (2, %u)", id0,
		     len0, id1, len1, 2 * BUF_LEN, BUF_LEN);
	for (unsigned i = 0; i < 3; i++) {
		unsigned nz = 0;
		for (unsigned j = 0; j < BUF_LEN; j++)
			nz |= bufs[i][j];
		if (!nz)
			fail((uint8_t)(code + 2), "buffer %u is all zero", i);
		for (unsigned k = 0; k < i; k++) {
			unsigned d = 0;
			for (unsigned j = 0; j < BUF_LEN; j++)
				d |= bufs[i][j] ^ bufs[k][j];
			if (!d)
				fail((uint8_t)(code + 3), "buffers %u and %u are equal", k, i);
		}
	}
	printf("%s: used idx 2, lens %u and %u, bytes %02x%02x%02x%02x...\n", phase, len0, len1,
	       bufs[0][0], bufs[0][1], bufs[0][2], bufs[0][3]);
}

/* Message control: bit 15 enable, bit 14 function mask; the table size bits are read-only. */
static void msix_control(uint16_t ctl)
{
	cfg_write16(slot, msix_cap + 2, ctl);
}

static void phase_msix(void)
{
	phase = "msix";
	uint64_t qnotify = device_init();
	msix_control(0x8000);                      /* enable, function not masked */
	mmio_write32(msix_table + 0, 0xfee00000u); /* APIC ID 0, physical */
	mmio_write32(msix_table + 4, 0);
	mmio_write32(msix_table + 8, MSI_VEC); /* fixed, edge */
	mmio_write32(msix_table + 12, 0);      /* unmasked */
	mmio_write16(common + VIRTIO_PCI_COMMON_Q_MSIX, 0);
	uint16_t vec = mmio_read16(common + VIRTIO_PCI_COMMON_Q_MSIX);
	if (vec != 0)
		fail(0x6d, "queue_msix_vector reads 0x%x after writing 0", vec);
	queue_enable();
	post_buffers((uint64_t)bufs[0]);
	status_set(VIRTIO_CONFIG_S_DRIVER_OK);
	mmio_write16(qnotify, 0);
	if (!wait_irq(&msi_count, 1, WDOG_COUNT))
		fail(0x6e, "no interrupt within the ~4 s watchdog (used idx %u, status 0x%x)",
		     used.idx, status_read());
	printf("msix: interrupt on vector 0x%x\n", MSI_VEC);
	check_used(0x65);
	if (cfg_read32(slot, 0x04) >> 16 & STS_INTX)
		fail(0x6f, "INTx asserted while MSI-X is enabled");
}

static void phase_intx(void)
{
	phase = "intx";
	uint64_t qnotify = device_init();
	msix_control(0); /* MSI-X off: the device falls back to INTx */
	unsigned gsi = INTX_GSI(slot);
	ioapic_write(IOAPIC_REDIR + 2 * gsi + 1, 0); /* destination: APIC ID 0 */
	ioapic_write(IOAPIC_REDIR + 2 * gsi, INTX_VEC | RTE_LEVEL | RTE_ACTIVE_LOW);
	/* The device has raised nothing yet: interrupts on for a while must stay quiet (on_intx
	 * fails on an interrupt with ISR clear). */
	if (wait_irq(&intx_count, 1, QUIET_COUNT))
		fail(0x73, "interrupt before the device was notified");
	queue_enable();
	post_buffers((uint64_t)bufs[0]);
	status_set(VIRTIO_CONFIG_S_DRIVER_OK);
	mmio_write16(qnotify, 0);
	if (!wait_irq(&intx_count, 1, WDOG_COUNT))
		fail(0x70, "no interrupt on GSI %u within the ~4 s watchdog (used idx %u)", gsi,
		     used.idx);
	printf("intx: interrupt on GSI %u, ISR 0x%x\n", gsi, intx_isr);
	uint8_t again = mmio_read8(isr_addr);
	if (again != 0)
		fail(0x71, "ISR reads 0x%x after being read", again);
	if (cfg_read32(slot, 0x04) >> 16 & STS_INTX)
		fail(0x72, "INTx still asserted after reading ISR");
	check_used(0x69);
	/* ISR read and EOI done: the level-triggered entry must not fire again. */
	if (wait_irq(&intx_count, 2, QUIET_COUNT))
		fail(0x77, "a second interrupt with ISR set");
	if (intx_stray)
		printf(
		    "intx: note: %u stray interrupt(s) after the EOI; the local APIC did not show "
		    "the vector in service (nested KVM host)\n",
		    intx_stray);
	ioapic_write(IOAPIC_REDIR + 2 * gsi, INTX_VEC | RTE_LEVEL | RTE_ACTIVE_LOW | RTE_MASKED);
}

static void phase_needs_reset(void)
{
	phase = "bad buffer";
	uint64_t qnotify = device_init();
	queue_enable();
	post_buffers(BAD_ADDR);
	status_set(VIRTIO_CONFIG_S_DRIVER_OK);
	mmio_write16(qnotify, 0);
	uint8_t s = 0;
	unsigned n;
	for (n = 0; n < 100000 && !(s & VIRTIO_CONFIG_S_NEEDS_RESET); n++)
		s = status_read();
	if (!(s & VIRTIO_CONFIG_S_NEEDS_RESET))
		fail(0x74, "status 0x%x after %u reads, no NEEDS_RESET", s, n);
	uint8_t isr = mmio_read8(isr_addr);
	barrier();
	printf("bad buffer: status 0x%x after %u reads, ISR 0x%x, used idx %u\n", s, n, isr,
	       used.idx);
	if (!(isr & VIRTIO_PCI_ISR_CONFIG))
		fail(0x75, "no configuration interrupt (ISR 0x%x)", isr);
	if (used.idx != 0)
		fail(0x76, "the device used %u chains", used.idx);
	device_reset();
}

void kmain(uint32_t magic, uint64_t info)
{
	puts("virtio_test: virtio-rng over PCI\n");
	idt_init();
	idt_set_handler(WDOG_VEC, on_watchdog, 0);
	idt_set_handler(MSI_VEC, on_msi, 0);
	idt_set_handler(INTX_VEC, on_intx, 0);
	pic_init(0);                            /* every 8259 line masked */
	mmio_write32(LAPIC + LAPIC_SVR, 0x1ff); /* software-enabled */
	discover();
	phase_msix();
	phase_intx();
	phase_needs_reset();
	puts("reset: status 0\n");
	puts("virtio_test ok\n");
	vm_exit(0);
}
