/* The local APIC and I/O APIC models driven as the glue and a guest drive them: MMIO register
 * accesses, deliveries, the CPU-side queries, the timer with explicit times, and their save/load
 * records. The glue's callbacks are recorders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dev/ioapic.h"
#include "dev/lapic.h"
#include "vm/state.h"

/* ---- recorders: they keep the first MAXREC calls and count all of them ------------------- */

struct ipi {
	struct lapic *from;
	uint8_t dest;
	bool logical;
	unsigned shorthand, mode;
	uint8_t vector;
	bool level;
};

#define MAXREC 64

static struct ipi ipis[MAXREC];
static int nipis;
static uint8_t eois[MAXREC];
static int neois;

static void rec_ipi(void *opaque, struct lapic *from, uint8_t dest, bool logical,
		    unsigned shorthand, unsigned mode, uint8_t vector, bool level)
{
	(void)opaque;
	if (nipis < MAXREC)
		ipis[nipis] = (struct ipi){from, dest, logical, shorthand, mode, vector, level};
	nipis++;
}

static void rec_eoi(void *opaque, uint8_t vector)
{
	(void)opaque;
	if (neois < MAXREC)
		eois[neois] = vector;
	neois++;
}

static const struct lapic_host host = {.send_ipi = rec_ipi, .eoi_level = rec_eoi};

struct delivery {
	uint8_t dest;
	bool logical;
	unsigned mode;
	uint8_t vector;
	bool level;
};

static struct delivery dels[MAXREC];
static int ndels;

static void rec_deliver(void *opaque, uint8_t dest, bool logical, unsigned mode, uint8_t vector,
			bool level)
{
	(void)opaque;
	if (ndels < MAXREC)
		dels[ndels] = (struct delivery){dest, logical, mode, vector, level};
	ndels++;
}

static void clear_records(void)
{
	nipis = neois = ndels = 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

#define TSC_HZ 2000000000ull /* 2 ticks per ns */

static uint32_t rd(struct lapic *l, uint32_t off, uint64_t now)
{
	uint8_t b[4] = {0xaa, 0xaa, 0xaa, 0xaa};
	lapic_mmio(l, off, b, 4, false, now, now * 2);
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void wr(struct lapic *l, uint32_t off, uint32_t v, uint64_t now)
{
	uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	lapic_mmio(l, off, b, 4, true, now, now * 2);
}

static uint32_t esr(struct lapic *l)
{
	wr(l, 0x280, 0, 0);
	return rd(l, 0x280, 0);
}

static struct lapic *new_lapic(uint8_t id)
{
	clear_records();
	struct lapic *l = lapic_create(id, TSC_HZ, &host);
	assert_non_null(l);
	return l;
}

/* A BSP with the APIC software-enabled (spurious vector 0xff). */
static struct lapic *enabled_lapic(uint8_t id)
{
	struct lapic *l = new_lapic(id);
	lapic_reset(l, true);
	wr(l, 0xf0, 0x1ff, 0);
	return l;
}

static uint32_t ioread(struct ioapic *io, uint8_t idx)
{
	uint8_t b[4] = {idx, 0, 0, 0};
	ioapic_mmio(io, 0x00, b, 4, true);
	memset(b, 0xaa, 4);
	ioapic_mmio(io, 0x10, b, 4, false);
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void iowrite(struct ioapic *io, uint8_t idx, uint32_t v)
{
	uint8_t b[4] = {idx, 0, 0, 0};
	ioapic_mmio(io, 0x00, b, 4, true);
	uint8_t d[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	ioapic_mmio(io, 0x10, d, 4, true);
}

static void set_entry(struct ioapic *io, unsigned pin, uint64_t e)
{
	iowrite(io, (uint8_t)(0x11 + 2 * pin), (uint32_t)(e >> 32));
	iowrite(io, (uint8_t)(0x10 + 2 * pin), (uint32_t)e);
}

static uint64_t get_entry(struct ioapic *io, unsigned pin)
{
	return (uint64_t)ioread(io, (uint8_t)(0x11 + 2 * pin)) << 32 |
	       ioread(io, (uint8_t)(0x10 + 2 * pin));
}

static struct ioapic *new_ioapic(void)
{
	clear_records();
	struct ioapic *io = ioapic_create(rec_deliver, NULL);
	assert_non_null(io);
	return io;
}

/* Acknowledges the pending interrupt, which must be want. */
static void take(struct lapic *l, int want)
{
	assert_int_equal(lapic_pending(l), want);
	lapic_ack(l, (uint8_t)want);
}

/* ---- local APIC: registers ---------------------------------------------------------------- */

static void test_lapic_reset_values(void **state)
{
	(void)state;
	struct lapic *l = new_lapic(3);
	assert_int_equal(lapic_get_base(l), 0xfee00800ull);
	lapic_reset(l, true);
	assert_int_equal(lapic_get_base(l), 0xfee00900ull);
	assert_int_equal(rd(l, 0x20, 0), 3u << 24);
	assert_int_equal(rd(l, 0x30, 0), 0x00060014);
	assert_int_equal(rd(l, 0x80, 0), 0);
	assert_int_equal(rd(l, 0x90, 0), 0);
	assert_int_equal(rd(l, 0xa0, 0), 0);
	assert_int_equal(rd(l, 0xd0, 0), 0);
	assert_int_equal(rd(l, 0xe0, 0), 0xffffffff);
	assert_int_equal(rd(l, 0xf0, 0), 0xff);
	for (uint32_t r = 0x100; r < 0x280; r += 0x10)
		assert_int_equal(rd(l, r, 0), 0);
	assert_int_equal(rd(l, 0x280, 0), 0);
	assert_int_equal(rd(l, 0x2f0, 0), 0x10000);
	for (uint32_t r = 0x320; r <= 0x370; r += 0x10)
		assert_int_equal(rd(l, r, 0), 0x10000);
	assert_int_equal(rd(l, 0x300, 0), 0);
	assert_int_equal(rd(l, 0x310, 0), 0);
	assert_int_equal(rd(l, 0x380, 0), 0);
	assert_int_equal(rd(l, 0x390, 0), 0);
	assert_int_equal(rd(l, 0x3e0, 0), 0);
	assert_int_equal(lapic_pending(l), -1);
	assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
	assert_int_equal(esr(l), 0); /* none of the reads above was illegal */
	lapic_destroy(l);
}

static void test_lapic_register_access(void **state)
{
	(void)state;
	struct lapic *l = enabled_lapic(1);
	/* Writable bits only. */
	wr(l, 0x20, 0xffffffff, 0);
	assert_int_equal(rd(l, 0x20, 0), 0xff000000);
	wr(l, 0x20, 0x07000000, 0);
	wr(l, 0x80, 0xffffffff, 0);
	assert_int_equal(rd(l, 0x80, 0), 0xff);
	wr(l, 0x80, 0, 0);
	wr(l, 0xd0, 0xffffffff, 0);
	assert_int_equal(rd(l, 0xd0, 0), 0xff000000);
	wr(l, 0xe0, 0, 0);
	assert_int_equal(rd(l, 0xe0, 0), 0x0fffffff);
	wr(l, 0xf0, 0xffffffff, 0);
	assert_int_equal(rd(l, 0xf0, 0), 0x3ff);
	wr(l, 0x350, 0xffffffff, 0);
	assert_int_equal(rd(l, 0x350, 0), 0x1a7ff);
	wr(l, 0x370, 0xffffffff, 0);
	assert_int_equal(rd(l, 0x370, 0), 0x100ff);
	wr(l, 0x320, 0x000400ff, 0); /* TSC-deadline mode */
	assert_int_equal(rd(l, 0x320, 0), 0x000400ff);
	wr(l, 0x320, 0x000600ee, 0); /* reserved timer mode 3: keeps mode 2 */
	assert_int_equal(rd(l, 0x320, 0), 0x000400ee);
	wr(l, 0x3e0, 0xffffffff, 0);
	assert_int_equal(rd(l, 0x3e0, 0), 0xb);
	wr(l, 0x310, 0xffffffff, 0);
	assert_int_equal(rd(l, 0x310, 0), 0xff000000);
	/* Read-only registers ignore writes without an error. */
	wr(l, 0x30, 0, 0);
	wr(l, 0xa0, 0xff, 0);
	wr(l, 0x100 + 0x70, 0xffffffff, 0);
	wr(l, 0x390, 5, 0);
	assert_int_equal(rd(l, 0x30, 0), 0x00060014);
	assert_int_equal(rd(l, 0xa0, 0), 0);
	assert_int_equal(rd(l, 0x170, 0), 0);
	assert_int_equal(esr(l), 0);
	/* Narrow and 8-byte reads: bytes 4..15 of a slot read 0. */
	uint8_t b[8];
	memset(b, 0xaa, sizeof(b));
	lapic_mmio(l, 0x23, b, 1, false, 0, 0);
	assert_int_equal(b[0], 0x07);
	lapic_mmio(l, 0x20, b, 8, false, 0, 0);
	assert_int_equal(b[3], 0x07);
	assert_int_equal(b[4] | b[5] | b[6] | b[7], 0);
	memset(b, 0xaa, sizeof(b));
	lapic_mmio(l, 0x1e, b, 4, false, 0, 0); /* straddles into ID */
	assert_int_equal(b[0] | b[1] | b[2] | b[3], 0);
	lapic_mmio(l, 0x24, b, 2, false, 0, 0);
	assert_int_equal(b[0] | b[1], 0);
	/* Partial and misaligned writes are ignored. */
	uint8_t w2[2] = {0x55, 0x55};
	lapic_mmio(l, 0x80, w2, 2, true, 0, 0);
	assert_int_equal(rd(l, 0x80, 0), 0);
	uint8_t w4[4] = {0x55, 0, 0, 0};
	lapic_mmio(l, 0x84, w4, 4, true, 0, 0);
	assert_int_equal(rd(l, 0x80, 0), 0);
	/* An 8-byte write at the slot writes the register. */
	uint8_t w8[8] = {0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
	lapic_mmio(l, 0x80, w8, 8, true, 0, 0);
	assert_int_equal(rd(l, 0x80, 0), 0x20);
	assert_int_equal(esr(l), 0);
	/* Reserved registers read 0, ignore writes and log an illegal register address. */
	assert_int_equal(rd(l, 0x40, 0), 0);
	assert_int_equal(esr(l), 0x80);
	assert_int_equal(esr(l), 0); /* the write cleared it */
	wr(l, 0x3f0, 1, 0);
	assert_int_equal(esr(l), 0x80);
	assert_int_equal(rd(l, 0x3f0, 0), 0);
	assert_int_equal(rd(l, 0xff0, 0), 0);
	/* Out-of-page offsets and bad sizes are harmless. */
	memset(b, 0xaa, sizeof(b));
	lapic_mmio(l, 0xffe, b, 8, false, 0, 0);
	assert_int_equal(b[2] | b[7], 0);
	lapic_mmio(l, 0xfffffffc, b, 8, false, 0, 0);
	assert_int_equal(b[0] | b[7], 0);
	lapic_mmio(l, 0x80, b, 3, false, 0, 0);
	assert_int_equal(b[0] | b[1] | b[2], 0);
	lapic_mmio(l, 0x80, b, 3, true, 0, 0);
	lapic_mmio(l, 0x80, NULL, 4, true, 0, 0);
	assert_int_equal(rd(l, 0x80, 0), 0x20);
	lapic_destroy(l);
}

/* ---- local APIC: priorities and the IRR/ISR/EOI flow ------------------------------------- */

static void test_lapic_tpr_ppr(void **state)
{
	(void)state;
	struct lapic *l = enabled_lapic(0);
	lapic_deliver(l, 0, 0x45, false);
	wr(l, 0x80, 0x40, 0);
	assert_int_equal(rd(l, 0xa0, 0), 0x40);
	assert_int_equal(lapic_pending(l), -1); /* same priority class as the TPR */
	wr(l, 0x80, 0x5f, 0);
	assert_int_equal(lapic_pending(l), -1);
	wr(l, 0x80, 0x3f, 0);
	assert_int_equal(rd(l, 0x90, 0), 0x40); /* APR: the IRR's class is above the TPR's */
	assert_int_equal(lapic_pending(l), 0x45);
	lapic_ack(l, 0x45);
	assert_int_equal(rd(l, 0xa0, 0), 0x40); /* ISR class above TPR class */
	lapic_deliver(l, 1, 0x41, false);       /* lowest priority taken as fixed */
	assert_int_equal(lapic_pending(l), -1);
	lapic_deliver(l, 0, 0x51, false);
	assert_int_equal(lapic_pending(l), 0x51);
	wr(l, 0x80, 0x55, 0); /* TPR class 5 masks 0x51 */
	assert_int_equal(rd(l, 0xa0, 0), 0x55);
	assert_int_equal(lapic_pending(l), -1);
	wr(l, 0x80, 0, 0);
	assert_int_equal(lapic_pending(l), 0x51);
	/* An ack of a vector not in IRR changes nothing. */
	lapic_ack(l, 0x99);
	assert_int_equal(rd(l, 0x100 + 0x40, 0), 0);
	lapic_destroy(l);
}

static void test_lapic_nested_eoi(void **state)
{
	(void)state;
	struct lapic *l = enabled_lapic(0);
	lapic_deliver(l, 0, 0x30, false);
	take(l, 0x30);
	assert_int_equal(rd(l, 0x110, 0), 1u << 16); /* ISR bit 0x30 */
	assert_int_equal(rd(l, 0x210, 0), 0);
	lapic_deliver(l, 0, 0x80, false);
	assert_int_equal(rd(l, 0x240, 0), 1);
	take(l, 0x80); /* nests above 0x30 */
	lapic_deliver(l, 0, 0x31, false);
	lapic_deliver(l, 0, 0x85, false);
	assert_int_equal(lapic_pending(l), -1); /* both at or below the ISR's class 8 */
	assert_int_equal(rd(l, 0xa0, 0), 0x80);
	wr(l, 0xb0, 0, 0); /* EOI ends 0x80 */
	assert_int_equal(rd(l, 0x140, 0), 0);
	assert_int_equal(rd(l, 0xa0, 0), 0x30);
	take(l, 0x85);
	wr(l, 0xb0, 0, 0);
	assert_int_equal(lapic_pending(l), -1); /* 0x31 is in the class of 0x30 in service */
	wr(l, 0xb0, 0, 0);
	assert_int_equal(rd(l, 0x110, 0), 0);
	take(l, 0x31);
	wr(l, 0xb0, 0, 0);
	assert_int_equal(rd(l, 0x110, 0), 0);
	wr(l, 0xb0, 0, 0); /* EOI with nothing in service is harmless */
	assert_int_equal(neois, 0);
	/* Vectors 0-15 are illegal: dropped and logged. */
	lapic_deliver(l, 0, 5, false);
	assert_int_equal(rd(l, 0x200, 0), 0);
	assert_int_equal(lapic_pending(l), -1);
	assert_int_equal(esr(l), 0x40);
	lapic_destroy(l);
}

static void test_lapic_eoi_level(void **state)
{
	(void)state;
	struct lapic *l = enabled_lapic(0);
	lapic_deliver(l, 0, 0x50, true);
	assert_int_equal(rd(l, 0x180 + 0x20, 0), 1u << 16); /* TMR bit 0x50 */
	take(l, 0x50);
	lapic_deliver(l, 0, 0x60, false);
	take(l, 0x60);
	wr(l, 0xb0, 0, 0); /* edge 0x60: no broadcast */
	assert_int_equal(neois, 0);
	wr(l, 0xb0, 0, 0);
	assert_int_equal(neois, 1);
	assert_int_equal(eois[0], 0x50);
	/* The same vector accepted edge-triggered clears its TMR bit. */
	lapic_deliver(l, 0, 0x50, false);
	assert_int_equal(rd(l, 0x180 + 0x20, 0), 0);
	take(l, 0x50);
	wr(l, 0xb0, 0, 0);
	assert_int_equal(neois, 1);
	lapic_destroy(l);
}

static void test_lapic_svr_disable(void **state)
{
	(void)state;
	struct lapic *l = enabled_lapic(0);
	wr(l, 0x320, 0x40, 0);
	wr(l, 0x350, 0x700, 0);
	assert_int_equal(rd(l, 0x320, 0), 0x40);
	lapic_deliver(l, 0, 0x70, false);
	wr(l, 0xf0, 0xff, 0); /* software disable */
	for (uint32_t r = 0x320; r <= 0x370; r += 0x10)
		assert_true(rd(l, r, 0) & 0x10000);
	assert_true(rd(l, 0x2f0, 0) & 0x10000);
	wr(l, 0x320, 0x40, 0);
	assert_int_equal(rd(l, 0x320, 0), 0x10040); /* cannot be unmasked */
	wr(l, 0x350, 0x700, 0);
	assert_int_equal(rd(l, 0x350, 0), 0x10700);
	assert_int_equal(lapic_pending(l), -1);
	assert_false(lapic_accepts_pic(l));
	lapic_deliver(l, 0, 0x71, false); /* fixed interrupts are dropped */
	lapic_deliver(l, 4, 0, false);    /* NMI is still taken */
	assert_int_equal(lapic_take_events(l, NULL), LAPIC_EV_NMI);
	wr(l, 0xf0, 0x1ff, 0);
	assert_int_equal(rd(l, 0x320, 0), 0x10040); /* stays masked until written */
	assert_int_equal(lapic_pending(l), 0x70);
	assert_int_equal(rd(l, 0x230, 0), 1u << 16); /* 0x70 held, 0x71 dropped */
	wr(l, 0x320, 0x40, 0);
	assert_int_equal(rd(l, 0x320, 0), 0x40);
	lapic_destroy(l);
}

static void test_lapic_esr_error_lvt(void **state)
{
	(void)state;
	struct lapic *l = enabled_lapic(0);
	wr(l, 0x370, 0xfe, 0);
	lapic_deliver(l, 0, 3, false);
	assert_int_equal(lapic_pending(l), 0xfe);
	lapic_deliver(l, 0, 4, false); /* already logged: no second interrupt is raised */
	assert_int_equal(esr(l), 0x40);
	/* An illegal vector in the error LVT itself does not recurse. */
	wr(l, 0x370, 0x02, 0);
	assert_int_equal(rd(l, 0x40, 0), 0);
	assert_int_equal(esr(l), 0xc0);
	lapic_destroy(l);
}

/* ---- local APIC: timer ---------------------------------------------------------------------- */

static void test_lapic_timer_oneshot(void **state)
{
	(void)state;
	static const struct {
		uint32_t tdcr;
		uint64_t div;
	} divs[] = {{0x0, 2},  {0x1, 4},  {0x2, 8},   {0x3, 16},
		    {0x8, 32}, {0x9, 64}, {0xa, 128}, {0xb, 1}};
	struct lapic *l = enabled_lapic(0);
	wr(l, 0x320, 0x40, 0);
	for (size_t i = 0; i < sizeof(divs) / sizeof(divs[0]); i++) {
		uint64_t t = 1000000 + i * 10000000, div = divs[i].div;
		wr(l, 0x3e0, divs[i].tdcr, t);
		wr(l, 0x380, 1000, t);
		assert_int_equal(rd(l, 0x380, t), 1000);
		assert_int_equal(lapic_timer_deadline(l), t + 1000 * div);
		assert_int_equal(rd(l, 0x390, t), 1000);
		assert_int_equal(rd(l, 0x390, t + 250 * div), 750);
		/* A partial count still reads as not yet counted (whole ticks at divide 1). */
		assert_int_equal(rd(l, 0x390, t + 250 * div + 1), div == 1 ? 749 : 750);
		assert_int_equal(rd(l, 0x390, t + 1000 * div - 1), 1);
		lapic_timer_poll(l, t + 1000 * div - 1, 0);
		assert_int_equal(lapic_pending(l), -1);
		lapic_timer_poll(l, t + 1000 * div, 0);
		take(l, 0x40);
		wr(l, 0xb0, 0, t + 1000 * div);
		assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
		assert_int_equal(rd(l, 0x390, t + 1000 * div), 0);
		assert_int_equal(rd(l, 0x390, t + 5000 * div), 0);
		lapic_timer_poll(l, t + 5000 * div, 0);
		assert_int_equal(lapic_pending(l), -1); /* one-shot fires once */
	}
	/* Writing 0 stops the count. */
	wr(l, 0x3e0, 0xb, 0);
	wr(l, 0x380, 500, 100);
	wr(l, 0x380, 0, 200);
	assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
	assert_int_equal(rd(l, 0x390, 300), 0);
	/* A divider change keeps the remaining count: 400 counts left at divide 1 -> 2. */
	wr(l, 0x380, 1000, 1000);
	wr(l, 0x3e0, 0x0, 1600);
	assert_int_equal(rd(l, 0x390, 1600), 400);
	assert_int_equal(lapic_timer_deadline(l), 1600 + 800);
	/* A masked one-shot expires silently. */
	wr(l, 0x320, 0x10040, 1700);
	lapic_timer_poll(l, 5000, 0);
	assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
	wr(l, 0x320, 0x40, 5000);
	lapic_timer_poll(l, 6000, 0);
	assert_int_equal(lapic_pending(l), -1);
	/* An expiry not yet polled fires before a new initial count restarts the count. */
	wr(l, 0x380, 100, 10000);
	wr(l, 0x380, 100, 10300);
	take(l, 0x40);
	lapic_destroy(l);
}

static void test_lapic_timer_periodic(void **state)
{
	(void)state;
	struct lapic *l = enabled_lapic(0);
	wr(l, 0x320, 0x20041, 0); /* periodic, vector 0x41 */
	wr(l, 0x3e0, 0x0, 0);     /* divide by 2 */
	wr(l, 0x380, 10000, 1000);
	uint64_t p = 20000;
	assert_int_equal(lapic_timer_deadline(l), 1000 + p);
	assert_int_equal(rd(l, 0x390, 1000 + 5000), 7500);
	lapic_timer_poll(l, 1000 + p, 0);
	take(l, 0x41);
	wr(l, 0xb0, 0, 0);
	assert_int_equal(lapic_timer_deadline(l), 1000 + 2 * p);
	assert_int_equal(rd(l, 0x390, 1000 + p), 10000); /* reloaded */
	assert_int_equal(rd(l, 0x390, 1000 + p + 2000), 9000);
	/* Five and a bit periods late: one interrupt, and the next deadline stays in phase. */
	uint64_t now = 1000 + 7 * p + 7;
	assert_int_equal(rd(l, 0x390, now), 10000 - 3); /* computed without a poll */
	lapic_timer_poll(l, now, 0);
	take(l, 0x41);
	assert_int_equal(lapic_pending(l), -1);
	wr(l, 0xb0, 0, 0);
	assert_int_equal(lapic_timer_deadline(l), 1000 + 8 * p);
	lapic_timer_poll(l, now + 1, 0);
	assert_int_equal(lapic_pending(l), -1);
	/* A tiny initial count gets the minimum period, and the deadline advances. */
	wr(l, 0x3e0, 0xb, 500000);
	wr(l, 0x380, 1, 500000);
	uint64_t d = lapic_timer_deadline(l);
	assert_int_equal(d, 500000 + LAPIC_MIN_PERIOD_NS);
	for (int i = 0; i < 10; i++) {
		lapic_timer_poll(l, d, 0);
		assert_true(lapic_timer_deadline(l) > d);
		d = lapic_timer_deadline(l);
	}
	assert_int_equal(d, 500000 + 11 * LAPIC_MIN_PERIOD_NS);
	wr(l, 0x380, 0, d - 500); /* stops it */
	assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
	take(l, 0x41);
	wr(l, 0xb0, 0, 0);
	/* Masked periodic: no deadline for the glue; unmasking accounts for the missed periods
	   without an interrupt. */
	wr(l, 0x380, 2000, 1000000); /* period 2 us */
	wr(l, 0x320, 0x30041, 1000100);
	assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
	wr(l, 0x320, 0x20041, 1009000);
	assert_int_equal(lapic_pending(l), -1);
	assert_int_equal(lapic_timer_deadline(l), 1010000);
	/* Switching to one-shot while counting fires once more, then stops. */
	wr(l, 0x320, 0x00041, 1009500);
	lapic_timer_poll(l, 1010000, 0);
	take(l, 0x41);
	assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
	lapic_destroy(l);
}

static void test_lapic_timer_tsc_deadline(void **state)
{
	(void)state;
	struct lapic *l = enabled_lapic(0);
	/* Outside TSC-deadline mode the MSR reads 0 and ignores writes. */
	lapic_set_tsc_deadline(l, 5000, 0, 0);
	assert_int_equal(lapic_get_tsc_deadline(l), 0);
	assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
	wr(l, 0x320, 0x40042, 0);
	lapic_set_tsc_deadline(l, 2000000 + 3001, 1000000, 2000000); /* 1500.5 ns ahead */
	assert_int_equal(lapic_get_tsc_deadline(l), 2003001);
	assert_int_equal(lapic_timer_deadline(l), 1000000 + 1501);
	assert_int_equal(rd(l, 0x390, 1000100), 0); /* current count reads 0 */
	wr(l, 0x380, 1234, 1000100);                /* initial count ignores writes */
	assert_int_equal(rd(l, 0x380, 1000100), 0);
	lapic_timer_poll(l, 1001000, 2002000);
	assert_int_equal(lapic_pending(l), -1);
	lapic_timer_poll(l, 1001501, 2003002);
	take(l, 0x42);
	wr(l, 0xb0, 0, 1001600);
	assert_int_equal(lapic_get_tsc_deadline(l), 0); /* disarmed by firing */
	assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
	/* The TSC reaching the deadline fires it even if the ns clock lags. */
	lapic_set_tsc_deadline(l, 3000000, 1200000, 2400000);
	lapic_timer_poll(l, 1200001, 3000000);
	take(l, 0x42);
	wr(l, 0xb0, 0, 1200002);
	/* A deadline in the past fires at the next poll. */
	lapic_set_tsc_deadline(l, 10, 1300000, 2600000);
	assert_int_equal(lapic_timer_deadline(l), 1300000);
	lapic_timer_poll(l, 1300000, 2600000);
	take(l, 0x42);
	wr(l, 0xb0, 0, 1300000);
	/* Writing 0 disarms. */
	lapic_set_tsc_deadline(l, 9000000, 1400000, 2800000);
	assert_int_not_equal(lapic_timer_deadline(l), UINT64_MAX);
	lapic_set_tsc_deadline(l, 0, 1400001, 2800002);
	assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
	lapic_timer_poll(l, 9000000, 18000000);
	assert_int_equal(lapic_pending(l), -1);
	/* A deadline too far for the ns clock never comes due through it. */
	lapic_set_tsc_deadline(l, UINT64_MAX, 1500000, 3000000);
	assert_true(lapic_timer_deadline(l) > (1ull << 62));
	assert_int_equal(lapic_get_tsc_deadline(l), UINT64_MAX);
	/* Leaving TSC-deadline mode disarms it. */
	lapic_set_tsc_deadline(l, 4000000, 1500000, 3000000);
	wr(l, 0x320, 0x00042, 1500001);
	assert_int_equal(lapic_get_tsc_deadline(l), 0);
	assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
	wr(l, 0x320, 0x40042, 1500002);
	assert_int_equal(lapic_get_tsc_deadline(l), 0);
	lapic_timer_poll(l, 3000000, 6000000);
	assert_int_equal(lapic_pending(l), -1);
	lapic_destroy(l);
}

/* ---- local APIC: IPIs, events, destinations, APIC base ---------------------------------- */

static void test_lapic_icr(void **state)
{
	(void)state;
	struct lapic *l = enabled_lapic(0);
	wr(l, 0x310, 0x03000000, 0);
	wr(l, 0x300, 0x00000070, 0); /* fixed, physical, edge */
	assert_int_equal(nipis, 1);
	assert_ptr_equal(ipis[0].from, l);
	assert_int_equal(ipis[0].dest, 3);
	assert_false(ipis[0].logical);
	assert_int_equal(ipis[0].shorthand, 0);
	assert_int_equal(ipis[0].mode, 0);
	assert_int_equal(ipis[0].vector, 0x70);
	assert_false(ipis[0].level);
	assert_int_equal(rd(l, 0x300, 0) & (1u << 12), 0); /* delivery status idle */
	assert_int_equal(rd(l, 0x300, 0), 0x70);

	wr(l, 0x310, 0x0f000000, 0);
	wr(l, 0x300, 0x0000c971, 0); /* lowest priority, logical, level assert, level trigger */
	assert_int_equal(nipis, 2);
	assert_int_equal(ipis[1].dest, 0x0f);
	assert_true(ipis[1].logical);
	assert_int_equal(ipis[1].mode, 1);
	assert_int_equal(ipis[1].vector, 0x71);
	assert_true(ipis[1].level);

	wr(l, 0x300, 0x000c0072, 0); /* all excluding self */
	assert_int_equal(ipis[2].shorthand, 3);
	wr(l, 0x300, 0x00040073, 0); /* self */
	assert_int_equal(ipis[3].shorthand, 1);
	assert_int_equal(ipis[3].vector, 0x73);

	wr(l, 0x310, 0x01000000, 0);
	wr(l, 0x300, 0x0000c500, 0); /* INIT assert */
	assert_int_equal(nipis, 5);
	assert_int_equal(ipis[4].mode, 5);
	assert_int_equal(ipis[4].dest, 1);
	wr(l, 0x300, 0x00008500, 0); /* INIT level de-assert: not sent */
	assert_int_equal(nipis, 5);
	wr(l, 0x300, 0x00004608, 0); /* SIPI, vector 8 */
	assert_int_equal(nipis, 6);
	assert_int_equal(ipis[5].mode, 6);
	assert_int_equal(ipis[5].vector, 8);
	wr(l, 0x300, 0x00000400, 0); /* NMI */
	assert_int_equal(ipis[6].mode, 4);
	assert_int_equal(nipis, 7);

	wr(l, 0x300, 0x00040400, 0); /* NMI to self: invalid, not sent */
	wr(l, 0x300, 0x00000300, 0); /* reserved mode */
	wr(l, 0x300, 0x00000700, 0);
	assert_int_equal(nipis, 7);
	assert_int_equal(esr(l), 0);
	wr(l, 0x300, 0x0000000f, 0); /* fixed with an illegal vector: logged, not sent */
	assert_int_equal(nipis, 7);
	assert_int_equal(esr(l), 0x20);
	lapic_destroy(l);
}

static void test_lapic_events(void **state)
{
	(void)state;
	struct lapic *l = new_lapic(2);
	uint8_t sipi = 0;
	assert_int_equal(lapic_take_events(l, &sipi), 0);
	lapic_deliver(l, 4, 0, false);
	assert_int_equal(lapic_take_events(l, &sipi), LAPIC_EV_NMI);
	assert_int_equal(lapic_take_events(l, &sipi), 0);
	lapic_deliver(l, 5, 0, false);
	lapic_deliver(l, 6, 0x9a, false);
	assert_int_equal(lapic_take_events(l, &sipi), LAPIC_EV_INIT | LAPIC_EV_SIPI);
	assert_int_equal(sipi, 0x9a);
	assert_int_equal(lapic_take_events(l, NULL), 0);
	/* SMI, ExtINT and reserved modes post nothing and touch no vector state. */
	lapic_deliver(l, 2, 0x40, false);
	lapic_deliver(l, 7, 0x40, false);
	lapic_deliver(l, 3, 0x40, false);
	lapic_deliver(l, 99, 0x40, false);
	assert_int_equal(lapic_take_events(l, NULL), 0);
	assert_int_equal(rd(l, 0x220, 0), 0);
	/* A globally disabled APIC takes nothing. */
	assert_int_equal(lapic_set_base(l, 0xfee00000), 0);
	lapic_deliver(l, 4, 0, false);
	lapic_deliver(l, 6, 0x10, false);
	assert_int_equal(lapic_take_events(l, NULL), 0);
	lapic_destroy(l);
}

static void test_lapic_accepts_pic(void **state)
{
	(void)state;
	struct lapic *l = new_lapic(0);
	assert_false(lapic_accepts_pic(l)); /* LINT0 masked after reset */
	wr(l, 0xf0, 0x1ff, 0);
	wr(l, 0x350, 0x700, 0);
	assert_true(lapic_accepts_pic(l));
	wr(l, 0x350, 0x10700, 0);
	assert_false(lapic_accepts_pic(l));
	wr(l, 0x350, 0x0030, 0); /* fixed mode */
	assert_false(lapic_accepts_pic(l));
	wr(l, 0x350, 0x0400, 0); /* NMI mode */
	assert_false(lapic_accepts_pic(l));
	assert_int_equal(lapic_set_base(l, 0xfee00000), 0); /* globally disabled */
	assert_true(lapic_accepts_pic(l));
	lapic_destroy(l);
}

static void test_lapic_match_dest(void **state)
{
	(void)state;
	struct lapic *l = enabled_lapic(5);
	assert_true(lapic_match_dest(l, 5, false));
	assert_true(lapic_match_dest(l, 0xff, false));
	assert_false(lapic_match_dest(l, 4, false));
	wr(l, 0x20, 0x09000000, 0); /* the writable ID is what matches */
	assert_true(lapic_match_dest(l, 9, false));
	assert_false(lapic_match_dest(l, 5, false));
	/* Flat model (DFR reset value). */
	assert_false(lapic_match_dest(l, 0xff, true)); /* LDR 0 matches nothing */
	wr(l, 0xd0, 0x04000000, 0);
	assert_true(lapic_match_dest(l, 0x04, true));
	assert_true(lapic_match_dest(l, 0x0c, true));
	assert_true(lapic_match_dest(l, 0xff, true));
	assert_false(lapic_match_dest(l, 0x03, true));
	assert_false(lapic_match_dest(l, 0x00, true));
	wr(l, 0xd0, 0x80000000, 0); /* flat: no cluster nibble */
	assert_true(lapic_match_dest(l, 0x80, true));
	assert_true(lapic_match_dest(l, 0xc0, true));
	assert_false(lapic_match_dest(l, 0x7f, true));
	/* Cluster model: cluster 2, member bit 1. */
	wr(l, 0xe0, 0x0fffffff, 0);
	wr(l, 0xd0, 0x22000000, 0);
	assert_true(lapic_match_dest(l, 0x22, true));
	assert_true(lapic_match_dest(l, 0x23, true));
	assert_true(lapic_match_dest(l, 0xf2, true)); /* all clusters */
	assert_false(lapic_match_dest(l, 0x12, true));
	assert_false(lapic_match_dest(l, 0x21, true));
	assert_false(lapic_match_dest(l, 0x20, true));
	assert_int_equal(lapic_set_base(l, 0xfee00000), 0);
	assert_false(lapic_match_dest(l, 0xff, false));
	lapic_destroy(l);
}

static void test_lapic_apic_base(void **state)
{
	(void)state;
	struct lapic *l = enabled_lapic(1);
	uint64_t base = lapic_get_base(l);
	assert_int_equal(lapic_set_base(l, base | 1), -1);
	assert_int_equal(lapic_set_base(l, base | 0x80), -1);
	assert_int_equal(lapic_set_base(l, base | (1ull << 9)), -1);
	assert_int_equal(lapic_set_base(l, base | (1ull << 10)), -1); /* x2APIC */
	assert_int_equal(lapic_set_base(l, base | (1ull << 40)), -1);
	assert_int_equal(lapic_set_base(l, base | (1ull << 63)), -1);
	assert_int_equal(lapic_get_base(l), base);
	assert_int_equal(lapic_set_base(l, 0xfee00000ull | 0x800), 0); /* BSP flag clear */
	assert_int_equal(lapic_get_base(l), 0xfee00800ull);
	assert_int_equal(lapic_set_base(l, 0xff00000000ull | 0x900), 0); /* relocated */
	assert_int_equal(lapic_get_base(l), 0xff00000900ull);
	assert_int_equal(rd(l, 0xf0, 0), 0x1ff);
	/* Global disable: the page reads 0, nothing is pending, the state is lost. */
	wr(l, 0x80, 0x20, 0);
	lapic_deliver(l, 0, 0x80, false);
	assert_int_equal(lapic_set_base(l, 0xfee00100), 0);
	assert_int_equal(lapic_pending(l), -1);
	assert_int_equal(rd(l, 0x30, 0), 0);
	wr(l, 0xf0, 0x1ff, 0);
	assert_int_equal(lapic_set_base(l, 0xfee00900), 0);
	assert_int_equal(rd(l, 0xf0, 0), 0xff);
	assert_int_equal(rd(l, 0x80, 0), 0);
	assert_int_equal(rd(l, 0x200 + 0x40, 0), 0);
	assert_int_equal(rd(l, 0x20, 0), 1u << 24);
	lapic_destroy(l);
}

/* ---- I/O APIC ------------------------------------------------------------------------------ */

static void test_ioapic_registers(void **state)
{
	(void)state;
	struct ioapic *io = new_ioapic();
	assert_int_equal(ioread(io, 0x01), 0x00170020);
	assert_int_equal(ioread(io, 0x00), 0);
	for (unsigned pin = 0; pin < IOAPIC_NPINS; pin++)
		assert_int_equal(get_entry(io, pin), 0x10000);
	iowrite(io, 0x00, 0xffffffff);
	assert_int_equal(ioread(io, 0x00), 0x0f000000);
	assert_int_equal(ioread(io, 0x02), 0x0f000000);
	iowrite(io, 0x01, 0);
	assert_int_equal(ioread(io, 0x01), 0x00170020);
	/* Writable bits only; delivery status and remote IRR are read-only. */
	set_entry(io, 5, 0xffffffffffffffffull);
	assert_int_equal(get_entry(io, 5), 0xff0000000001afffull);
	set_entry(io, 23, 0x0300000000000935ull);
	assert_int_equal(get_entry(io, 23), 0x0300000000000935ull);
	iowrite(io, 0x10 + 2 * 23 + 1, 0x01000000); /* high half alone */
	assert_int_equal(get_entry(io, 23), 0x0100000000000935ull);
	assert_int_equal(ndels, 0);
	/* IOREGSEL reads back; unknown indices read 0 and ignore writes. */
	iowrite(io, 0x40, 0x12345678);
	uint8_t b[8];
	memset(b, 0xaa, sizeof(b));
	ioapic_mmio(io, 0x00, b, 8, false);
	assert_int_equal(b[0], 0x40);
	assert_int_equal(b[1] | b[4] | b[7], 0);
	assert_int_equal(ioread(io, 0x40), 0);
	assert_int_equal(ioread(io, 0xff), 0);
	assert_int_equal(ioread(io, 0x03), 0);
	/* Narrow reads of IOWIN, reads elsewhere, bad sizes and writes. */
	iowrite(io, 0x01, 0);
	memset(b, 0xaa, sizeof(b));
	ioapic_mmio(io, 0x12, b, 1, false);
	assert_int_equal(b[0], 0x17);
	ioapic_mmio(io, 0x40, b, 4, false); /* EOI is write-only */
	assert_int_equal(b[0] | b[3], 0);
	ioapic_mmio(io, 0x20, b, 4, false);
	assert_int_equal(b[0] | b[3], 0);
	memset(b, 0xaa, sizeof(b));
	ioapic_mmio(io, 0xfffffffe, b, 8, false);
	assert_int_equal(b[0] | b[7], 0);
	ioapic_mmio(io, 0x10, b, 5, false);
	assert_int_equal(b[0] | b[4], 0);
	uint8_t w[4] = {0x11, 0, 0, 0};
	ioapic_mmio(io, 0x00, w, 1, true); /* narrow write ignored */
	ioapic_mmio(io, 0x04, w, 4, true); /* misaligned write ignored */
	ioapic_mmio(io, 0x10, NULL, 4, true);
	memset(b, 0, sizeof(b));
	ioapic_mmio(io, 0x00, b, 4, false);
	assert_int_equal(b[0], 0x01);
	ioapic_reset(io);
	assert_int_equal(get_entry(io, 5), 0x10000);
	assert_int_equal(ioread(io, 0x00), 0);
	ioapic_destroy(io);
}

static void test_ioapic_edge(void **state)
{
	(void)state;
	struct ioapic *io = new_ioapic();
	set_entry(io, 4, 0x0100000000000934ull); /* lowest priority, logical, edge, vector 0x34 */
	ioapic_set_irq(io, 4, 1);
	assert_int_equal(ndels, 1);
	assert_int_equal(dels[0].dest, 1);
	assert_true(dels[0].logical);
	assert_int_equal(dels[0].mode, 1);
	assert_int_equal(dels[0].vector, 0x34);
	assert_false(dels[0].level);
	ioapic_set_irq(io, 4, 1); /* no edge */
	assert_int_equal(ndels, 1);
	ioapic_set_irq(io, 4, 0);
	assert_int_equal(ndels, 1);
	ioapic_set_irq(io, 4, 5); /* any non-zero level is high */
	assert_int_equal(ndels, 2);
	assert_int_equal(get_entry(io, 4) & (1u << 14), 0); /* no remote IRR for edge */
	/* Masked: the edge is lost, and unmasking with the line high delivers nothing. */
	ioapic_set_irq(io, 4, 0);
	set_entry(io, 4, 0x0100000000010934ull);
	ioapic_set_irq(io, 4, 1);
	set_entry(io, 4, 0x0100000000000934ull);
	assert_int_equal(ndels, 2);
	/* NMI mode with the level bit set behaves as an edge entry. */
	set_entry(io, 6, 0x0000000000008400ull);
	ioapic_set_irq(io, 6, 1);
	ioapic_set_irq(io, 6, 1);
	assert_int_equal(ndels, 3);
	assert_int_equal(dels[2].mode, 4);
	assert_false(dels[2].level);
	assert_int_equal(get_entry(io, 6) & (1u << 14), 0);
	/* Reserved delivery modes deliver nothing. */
	set_entry(io, 7, 0x0000000000000330ull);
	ioapic_set_irq(io, 7, 1);
	assert_int_equal(ndels, 3);
	ioapic_destroy(io);
}

static void test_ioapic_level(void **state)
{
	(void)state;
	struct ioapic *io = new_ioapic();
	set_entry(io, 9, 0x0200000000008039ull); /* fixed, physical, level, vector 0x39, dest 2 */
	ioapic_set_irq(io, 9, 1);
	assert_int_equal(ndels, 1);
	assert_int_equal(dels[0].dest, 2);
	assert_false(dels[0].logical);
	assert_int_equal(dels[0].vector, 0x39);
	assert_true(dels[0].level);
	assert_true(get_entry(io, 9) & (1u << 14));
	ioapic_set_irq(io, 9, 1); /* remote IRR holds it */
	assert_int_equal(ndels, 1);
	ioapic_eoi(io, 0x38); /* another vector */
	assert_int_equal(ndels, 1);
	ioapic_eoi(io, 0x39); /* still high: delivered again */
	assert_int_equal(ndels, 2);
	assert_true(get_entry(io, 9) & (1u << 14));
	ioapic_set_irq(io, 9, 0);
	uint8_t eoi[4] = {0x39, 0, 0, 0}; /* the EOI register */
	ioapic_mmio(io, 0x40, eoi, 4, true);
	assert_int_equal(ndels, 2);
	assert_false(get_entry(io, 9) & (1u << 14));
	/* Masked while high: nothing, until unmasked. */
	set_entry(io, 9, 0x0200000000018039ull);
	ioapic_set_irq(io, 9, 1);
	assert_int_equal(ndels, 2);
	set_entry(io, 9, 0x0200000000008039ull);
	assert_int_equal(ndels, 3);
	/* Writing the entry as edge clears remote IRR. */
	set_entry(io, 9, 0x0200000000000039ull);
	assert_false(get_entry(io, 9) & (1u << 14));
	set_entry(io, 9, 0x0200000000008039ull); /* level again, line high: delivers */
	assert_int_equal(ndels, 4);
	/* A masked entry's remote IRR is still cleared by EOI; no delivery while masked. */
	set_entry(io, 9, 0x0200000000018039ull);
	assert_true(get_entry(io, 9) & (1u << 14));
	ioapic_eoi(io, 0x39);
	assert_false(get_entry(io, 9) & (1u << 14));
	assert_int_equal(ndels, 4);
	ioapic_destroy(io);
}

/* Inputs are logical levels: an active-low entry behaves as an active-high one (a PCI INTx#
 * line is raised with level 1), and changing the polarity bit delivers nothing by itself. */
static void test_ioapic_polarity(void **state)
{
	(void)state;
	struct ioapic *io = new_ioapic();
	set_entry(io, 10, 0x000000000000a04aull); /* level, active low, vector 0x4a */
	assert_int_equal(ndels, 0);               /* an idle (0) input is not asserted */
	ioapic_set_irq(io, 10, 1);
	assert_int_equal(ndels, 1);
	assert_int_equal(dels[0].vector, 0x4a);
	ioapic_set_irq(io, 10, 0);
	ioapic_eoi(io, 0x4a);
	assert_int_equal(ndels, 1); /* deasserted before the EOI: no re-delivery */
	/* Edge, active low: the rising edge of the logical input delivers. */
	set_entry(io, 11, 0x000000000000204bull);
	ioapic_set_irq(io, 11, 1);
	assert_int_equal(ndels, 2);
	assert_int_equal(dels[1].vector, 0x4b);
	ioapic_set_irq(io, 11, 0);
	assert_int_equal(ndels, 2);
	/* Flipping the polarity of a level entry whose input is low delivers nothing. */
	set_entry(io, 12, 0x000000000000804cull);
	set_entry(io, 12, 0x000000000000a04cull);
	assert_int_equal(ndels, 2);
	ioapic_destroy(io);
}

static void test_ioapic_out_of_range(void **state)
{
	(void)state;
	struct ioapic *io = new_ioapic();
	for (unsigned pin = 0; pin < IOAPIC_NPINS; pin++)
		set_entry(io, pin, 0x30 + pin);
	ioapic_set_irq(io, 24, 1);
	ioapic_set_irq(io, 1000, 1);
	ioapic_set_irq(io, UINT32_MAX, 1);
	assert_int_equal(ndels, 0);
	iowrite(io, 0x40, 0xffffffff); /* just past the table */
	iowrite(io, 0x0f, 0xffffffff);
	for (unsigned pin = 0; pin < IOAPIC_NPINS; pin++)
		assert_int_equal(get_entry(io, pin), 0x30 + pin);
	/* Random hostile accesses never crash and keep the state well formed. */
	srand(1);
	for (int i = 0; i < 20000; i++) {
		uint8_t b[8];
		for (int j = 0; j < 8; j++)
			b[j] = (uint8_t)rand();
		unsigned sizes[] = {0, 1, 2, 3, 4, 8};
		uint32_t off = (rand() & 1) ? (uint32_t)rand() & 0x7f : (uint32_t)rand();
		ioapic_mmio(io, off, b, sizes[rand() % 6], rand() & 1);
		ioapic_set_irq(io, (unsigned)rand() % 30, rand() & 1);
		if (rand() % 4 == 0)
			ioapic_eoi(io, (uint8_t)rand());
	}
	struct state_writer w;
	sw_init(&w);
	ioapic_save(io, &w);
	struct state_reader r;
	sr_init(&r, w.buf, w.len);
	assert_int_equal(ioapic_load(io, &r), 0);
	sw_free(&w);
	ioapic_destroy(io);
}

/* ---- save/load ---------------------------------------------------------------------------- */

static void save_lapic(const struct lapic *l, struct state_writer *w)
{
	sw_init(w);
	lapic_save(l, w);
	assert_false(w->err);
}

static int load_lapic_bytes(struct lapic *l, const uint8_t *buf, size_t len)
{
	struct state_reader r;
	sr_init(&r, buf, len);
	return lapic_load(l, &r);
}

/* Offsets into a lapic record: 12 bytes of header, then the fields in save order. */
enum {
	LR_BASE = 12,
	LR_ID = 20,
	LR_DFR = 32,
	LR_SVR = 36,
	LR_IRR = 40 + 64,
	LR_ESR = LR_IRR + 32,
	LR_LVT = LR_ESR + 8,
	LR_ICR = LR_LVT + 28,
	LR_TMICT = LR_ICR + 8,
	LR_TDCR = LR_TMICT + 4,
	LR_COUNTING = LR_TDCR + 4,
	LR_NEXT = LR_COUNTING + 1 + 8,
	LR_TSCDL = LR_NEXT + 8,
	LR_EVENTS = LR_TSCDL + 8,
	LR_END = LR_EVENTS + 2,
};

static void test_lapic_save_load(void **state)
{
	(void)state;
	struct lapic *a = enabled_lapic(4);
	wr(a, 0x80, 0x10, 0);
	wr(a, 0xd0, 0x08000000, 0);
	wr(a, 0x370, 0x100fe, 0); /* masked: the ESR entry below raises nothing */
	wr(a, 0x350, 0x700, 0);
	lapic_deliver(a, 0, 0x61, true);
	take(a, 0x61);
	lapic_deliver(a, 0, 0x72, false);
	lapic_deliver(a, 0, 0x22, false);
	lapic_deliver(a, 6, 0x9b, false);
	wr(a, 0x310, 0x02000000, 0);
	wr(a, 0x300, 0x00004500, 0);
	assert_int_equal(rd(a, 0x50, 0), 0); /* an ESR entry to carry */
	wr(a, 0x320, 0x20040, 0);
	wr(a, 0x3e0, 0x1, 0);
	wr(a, 0x380, 5000, 1000);

	struct state_writer w;
	save_lapic(a, &w);
	assert_int_equal(w.len, LR_END);
	struct lapic *b = new_lapic(9);
	assert_int_equal(load_lapic_bytes(b, w.buf, w.len), 0);
	struct state_writer w2;
	save_lapic(b, &w2);
	assert_int_equal(w2.len, w.len);
	assert_memory_equal(w.buf, w2.buf, w.len);
	sw_free(&w2);
	/* The loaded APIC behaves as the original. */
	assert_int_equal(lapic_timer_deadline(b), lapic_timer_deadline(a));
	assert_int_equal(rd(b, 0x390, 3000), rd(a, 0x390, 3000));
	assert_int_equal(lapic_pending(b), 0x72);
	take(b, 0x72);
	wr(b, 0xb0, 0, 0);
	wr(b, 0xb0, 0, 0);
	assert_int_equal(neois, 1);
	assert_int_equal(eois[0], 0x61);
	uint8_t sipi = 0;
	assert_int_equal(lapic_take_events(b, &sipi), LAPIC_EV_SIPI);
	assert_int_equal(sipi, 0x9b);
	assert_true(lapic_accepts_pic(b));
	assert_true(lapic_match_dest(b, 0x08, true));
	assert_true(lapic_match_dest(b, 4, false));
	assert_int_equal(esr(b), 0x80);

	/* Malformed records are refused and leave the APIC unchanged. */
	struct state_writer before;
	save_lapic(b, &before);
	uint8_t *bad = malloc(w.len);
	assert_non_null(bad);
	static const struct {
		size_t off;
		uint8_t val;
	} patches[] = {
	    {0, 'x'},                /* tag */
	    {8, 2},                  /* version */
	    {LR_BASE + 1, 0x04},     /* x2APIC enable */
	    {LR_BASE + 5, 0x01},     /* above MAXPHYADDR */
	    {LR_ID, 1},              /* reserved ID bits */
	    {LR_DFR, 0},             /* DFR low bits must read 1 */
	    {LR_SVR + 1, 0x10},      /* EOI-broadcast suppression */
	    {LR_IRR, 0x01},          /* vector 0 */
	    {LR_ESR, 0x01},          /* unmodelled error */
	    {LR_LVT + 4 + 2, 0x06},  /* timer mode 3 */
	    {LR_LVT + 24 + 1, 0x07}, /* error LVT delivery mode */
	    {LR_ICR + 1, 0x10},      /* delivery status */
	    {LR_TDCR, 0x04},         /* reserved divide bit */
	    {LR_COUNTING, 2},        /* bool */
	    {LR_NEXT, 0x00},         /* next expiry differs from the count's */
	    {LR_TSCDL, 0x01},        /* a TSC deadline outside deadline mode */
	    {LR_EVENTS, 0x08},       /* unknown event */
	};
	for (size_t i = 0; i < sizeof(patches) / sizeof(patches[0]); i++) {
		memcpy(bad, w.buf, w.len);
		assert_int_not_equal(bad[patches[i].off], patches[i].val);
		bad[patches[i].off] = patches[i].val;
		if (load_lapic_bytes(b, bad, w.len) != -1)
			fail_msg("patch %zu accepted", i);
	}
	for (size_t n = 0; n < w.len; n++)
		assert_int_equal(load_lapic_bytes(b, w.buf, n), -1); /* truncated */
	/* Software-disabled with an unmasked LVT; globally disabled but software-enabled. */
	memcpy(bad, w.buf, w.len);
	bad[LR_SVR + 1] = 0;
	assert_int_equal(load_lapic_bytes(b, bad, w.len), -1);
	memcpy(bad, w.buf, w.len);
	bad[LR_BASE + 1] &= (uint8_t)~0x08;
	assert_int_equal(load_lapic_bytes(b, bad, w.len), -1);
	struct state_writer after;
	save_lapic(b, &after);
	assert_int_equal(after.len, before.len);
	assert_memory_equal(after.buf, before.buf, before.len);
	sw_free(&after);
	sw_free(&before);
	free(bad);
	sw_free(&w);
	lapic_destroy(a);
	lapic_destroy(b);
}

static void test_ioapic_save_load(void **state)
{
	(void)state;
	struct ioapic *a = new_ioapic();
	iowrite(a, 0x00, 0x05000000);
	set_entry(a, 3, 0x0100000000008033ull);
	set_entry(a, 4, 0x0000000000000934ull);
	ioapic_set_irq(a, 3, 1); /* remote IRR set */
	ioapic_set_irq(a, 4, 1);
	ioapic_set_irq(a, 20, 1);
	uint8_t s[4] = {0x18, 0, 0, 0};
	ioapic_mmio(a, 0x00, s, 4, true); /* IOREGSEL is state too */
	struct state_writer w;
	sw_init(&w);
	ioapic_save(a, &w);
	assert_false(w.err);
	assert_int_equal(w.len, 12 + 4 + 1 + 24 * 8 + 4);

	struct ioapic *b = new_ioapic();
	struct state_reader r;
	sr_init(&r, w.buf, w.len);
	assert_int_equal(ioapic_load(b, &r), 0);
	struct state_writer w2;
	sw_init(&w2);
	ioapic_save(b, &w2);
	assert_memory_equal(w.buf, w2.buf, w.len);
	sw_free(&w2);
	assert_int_equal(ndels, 0); /* loading delivers nothing */
	uint8_t sel[4];
	ioapic_mmio(b, 0, sel, 4, false);
	assert_int_equal(sel[0], 0x18);
	assert_int_equal(ioread(b, 0x00), 0x05000000);
	ioapic_set_irq(b, 4, 1); /* line already high: no edge */
	assert_int_equal(ndels, 0);
	ioapic_eoi(b, 0x33); /* the loaded remote IRR, line still high */
	assert_int_equal(ndels, 1);
	assert_int_equal(dels[0].vector, 0x33);

	enum { ENTRY3 = 12 + 4 + 1 + 3 * 8, ENTRY4 = ENTRY3 + 8, LINES = 12 + 4 + 1 + 24 * 8 };
	static const struct {
		size_t off;
		uint8_t val;
	} patches[] = {
	    {0, 'j'},           /* tag */
	    {8, 7},             /* version */
	    {12, 0x01},         /* reserved ID bits */
	    {15, 0x15},         /* ID above 4 bits */
	    {ENTRY3 + 1, 0xc4}, /* NMI mode with remote IRR set */
	    {ENTRY4 + 1, 0x49}, /* remote IRR on an edge entry */
	    {ENTRY4 + 1, 0x19}, /* delivery status */
	    {ENTRY4 + 2, 0x02}, /* reserved bit 17 */
	    {ENTRY4 + 6, 0x01}, /* reserved bit 48 */
	    {LINES + 3, 0x01},  /* a line beyond pin 23 */
	};
	uint8_t *bad = malloc(w.len);
	assert_non_null(bad);
	for (size_t i = 0; i < sizeof(patches) / sizeof(patches[0]); i++) {
		memcpy(bad, w.buf, w.len);
		assert_int_not_equal(bad[patches[i].off], patches[i].val);
		bad[patches[i].off] = patches[i].val;
		sr_init(&r, bad, w.len);
		if (ioapic_load(b, &r) != -1)
			fail_msg("patch %zu accepted", i);
	}
	for (size_t n = 0; n < w.len; n++) {
		sr_init(&r, w.buf, n);
		assert_int_equal(ioapic_load(b, &r), -1);
	}
	assert_int_equal(ioread(b, 0x00), 0x05000000); /* unchanged */
	free(bad);
	sw_free(&w);
	ioapic_destroy(a);
	ioapic_destroy(b);
}

/* Random hostile MMIO and deliveries on a lapic: no crash, and its record stays loadable. */
static void test_lapic_hostile(void **state)
{
	(void)state;
	struct lapic *l = enabled_lapic(0);
	srand(2);
	uint64_t now = 0;
	for (int i = 0; i < 50000; i++) {
		uint8_t b[8];
		for (int j = 0; j < 8; j++)
			b[j] = (uint8_t)rand();
		unsigned sizes[] = {0, 1, 2, 3, 4, 8};
		uint32_t off = (rand() & 3) ? ((uint32_t)rand() & 0x3f0) : (uint32_t)rand();
		now += (uint64_t)(rand() % 3000);
		lapic_mmio(l, off, b, sizes[rand() % 6], rand() & 1, now, now * 2);
		lapic_deliver(l, (unsigned)rand() % 9, (uint8_t)rand(), rand() & 1);
		if (rand() % 8 == 0)
			lapic_set_tsc_deadline(l, now * 2 + (uint64_t)(rand() % 5000), now,
					       now * 2);
		if (lapic_timer_deadline(l) <= now)
			lapic_timer_poll(l, now, now * 2);
		assert_true(lapic_timer_deadline(l) > now);
		int v = lapic_pending(l);
		if (v >= 0)
			lapic_ack(l, (uint8_t)v);
		lapic_take_events(l, NULL);
	}
	struct state_writer w;
	save_lapic(l, &w);
	assert_int_equal(load_lapic_bytes(l, w.buf, w.len), 0);
	sw_free(&w);
	lapic_destroy(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lapic_reset_values),
	    cmocka_unit_test(test_lapic_register_access),
	    cmocka_unit_test(test_lapic_tpr_ppr),
	    cmocka_unit_test(test_lapic_nested_eoi),
	    cmocka_unit_test(test_lapic_eoi_level),
	    cmocka_unit_test(test_lapic_svr_disable),
	    cmocka_unit_test(test_lapic_esr_error_lvt),
	    cmocka_unit_test(test_lapic_timer_oneshot),
	    cmocka_unit_test(test_lapic_timer_periodic),
	    cmocka_unit_test(test_lapic_timer_tsc_deadline),
	    cmocka_unit_test(test_lapic_icr),
	    cmocka_unit_test(test_lapic_events),
	    cmocka_unit_test(test_lapic_accepts_pic),
	    cmocka_unit_test(test_lapic_match_dest),
	    cmocka_unit_test(test_lapic_apic_base),
	    cmocka_unit_test(test_lapic_hostile),
	    cmocka_unit_test(test_ioapic_registers),
	    cmocka_unit_test(test_ioapic_edge),
	    cmocka_unit_test(test_ioapic_level),
	    cmocka_unit_test(test_ioapic_polarity),
	    cmocka_unit_test(test_ioapic_out_of_range),
	    cmocka_unit_test(test_lapic_save_load),
	    cmocka_unit_test(test_ioapic_save_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
