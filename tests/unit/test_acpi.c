/* ACPI: the tables in guest RAM found and followed the way Linux does (RSDP scan of the BIOS
 * area in 16-byte steps, XSDT and RSDT, then FADT -> FACS/DSDT, MADT), every checksum and length
 * checked and every field the guest relies on compared; and the power-management device driven
 * through the port I/O bus as a guest drives it: S5 power-off, ignored sleep types, the PM timer's
 * rate, PM1 status/enable and the SCI, the 0xcf9 reset, and its save/load record. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "arch/x86/acpi.h"
#include "arch/x86/boot.h"
#include "vm/bus.h"
#include "vm/device.h"
#include "vm/mem.h"
#include "vm/state.h"
#include "vm/vm.h"

#define RAM_SIZE  (64ull << 20)
#define SCAN_LO   0xe0000u
#define SCAN_HI   0x100000u
#define AREA_END  (ACPI_TABLES_ADDR + ACPI_TABLES_MAX)
#define HDR       36
#define FADT_LEN  276
#define MAX_TABLE 16

static uint16_t r16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return v;
}

static uint32_t r32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static uint64_t r64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	for (size_t i = 0; i < n; i++)
		s += p[i];
	return s;
}

/* ---- tables ------------------------------------------------------------------------------ */

struct tables {
	struct guest_mem mem;
	const uint8_t *rsdp, *fadt, *madt, *dsdt, *facs;
	uint64_t fadt_gpa, madt_gpa;
};

/* A table at gpa: in RAM, inside the ACPI area, 16-byte aligned, with a length that covers its
 * header and a zero checksum. */
static const uint8_t *table_at(const struct guest_mem *m, uint64_t gpa, const char *sig)
{
	assert_true(gpa >= ACPI_TABLES_ADDR && gpa + HDR <= AREA_END);
	assert_int_equal(gpa % 16, 0);
	const uint8_t *t = gmem_ptr(m, gpa, HDR);
	assert_non_null(t);
	assert_memory_equal(t, sig, 4);
	uint32_t len = r32(t + 4);
	assert_true(len >= HDR && gpa + len <= AREA_END);
	t = gmem_ptr(m, gpa, len);
	assert_non_null(t);
	assert_int_equal(sum(t, len), 0);
	assert_memory_equal(t + 10, "FERRY ", 6);
	return t;
}

/* Scans for the RSDP as Linux does, then follows the XSDT (and checks the RSDT agrees). */
static void find_tables(struct tables *tb)
{
	const uint8_t *rsdp = NULL;
	unsigned found = 0;
	for (uint64_t a = SCAN_LO; a < SCAN_HI; a += 16) {
		const uint8_t *p = gmem_ptr(&tb->mem, a, 36);
		if (p && memcmp(p, "RSD PTR ", 8) == 0 && sum(p, 20) == 0) {
			rsdp = p;
			found++;
			assert_int_equal(a, ACPI_RSDP_ADDR);
		}
	}
	assert_int_equal(found, 1);
	assert_int_equal(rsdp[15], 2); /* revision: 2.0+ */
	assert_int_equal(r32(rsdp + 20), 36);
	assert_int_equal(sum(rsdp, 36), 0);
	assert_memory_equal(rsdp + 9, "FERRY ", 6);
	tb->rsdp = rsdp;

	const uint8_t *xsdt = table_at(&tb->mem, r64(rsdp + 24), "XSDT");
	const uint8_t *rsdt = table_at(&tb->mem, r32(rsdp + 16), "RSDT");
	uint32_t xn = (r32(xsdt + 4) - HDR) / 8, rn = (r32(rsdt + 4) - HDR) / 4;
	assert_int_equal((r32(xsdt + 4) - HDR) % 8, 0);
	assert_int_equal((r32(rsdt + 4) - HDR) % 4, 0);
	assert_int_equal(xn, 2);
	assert_int_equal(rn, xn);
	for (uint32_t i = 0; i < xn; i++) {
		uint64_t gpa = r64(xsdt + HDR + 8 * i);
		assert_int_equal(r32(rsdt + HDR + 4 * i), gpa);
		const uint8_t *t = gmem_ptr(&tb->mem, gpa, 4);
		assert_non_null(t);
		if (memcmp(t, "FACP", 4) == 0) {
			assert_null(tb->fadt);
			tb->fadt = table_at(&tb->mem, gpa, "FACP");
			tb->fadt_gpa = gpa;
		} else {
			assert_null(tb->madt);
			tb->madt = table_at(&tb->mem, gpa, "APIC");
			tb->madt_gpa = gpa;
		}
	}
	assert_non_null(tb->fadt);
	assert_non_null(tb->madt);

	const uint8_t *f = tb->fadt;
	assert_int_equal(r32(f + 40), r64(f + 140)); /* DSDT / X_DSDT */
	assert_int_equal(r32(f + 36), r64(f + 132)); /* FIRMWARE_CTRL / X_FIRMWARE_CTRL */
	tb->dsdt = table_at(&tb->mem, r64(f + 140), "DSDT");
	uint64_t facs = r64(f + 132);
	assert_int_equal(facs % 64, 0);
	tb->facs = gmem_ptr(&tb->mem, facs, 64);
	assert_non_null(tb->facs);
	assert_true(facs + 64 <= AREA_END);
}

static void write_tables(struct tables *tb, unsigned ncpus)
{
	char err[256];
	memset(tb, 0, sizeof(*tb));
	assert_int_equal(gmem_init(&tb->mem, RAM_SIZE, err, sizeof(err)), 0);
	assert_int_equal(mptable_write(&tb->mem, ncpus, err, sizeof(err)), 0);
	assert_int_equal(acpi_write_tables(&tb->mem, ncpus, err, sizeof(err)), 0);
	find_tables(tb);
}

/* A generic address structure in system I/O space. */
static void check_gas(const uint8_t *g, unsigned bits, unsigned access, uint64_t addr)
{
	assert_int_equal(g[0], 1);
	assert_int_equal(g[1], bits);
	assert_int_equal(g[2], 0);
	assert_int_equal(g[3], access);
	assert_int_equal(r64(g + 4), addr);
}

static void test_fadt(void **state)
{
	(void)state;
	struct tables tb;
	write_tables(&tb, 1);
	const uint8_t *f = tb.fadt;
	assert_int_equal(r32(f + 4), FADT_LEN);
	assert_int_equal(f[8], 6);                    /* revision */
	assert_int_equal(r16(f + 46), 9);             /* SCI_INT */
	assert_int_equal(r32(f + 48), 0);             /* SMI_CMD: ACPI mode from the start */
	assert_int_equal(f[52] | f[53] | f[54], 0);   /* ACPI_ENABLE/DISABLE, S4BIOS_REQ */
	assert_int_equal(r32(f + 56), ACPI_PM1A_EVT); /* PM1a_EVT_BLK */
	assert_int_equal(r32(f + 60), 0);             /* no PM1b */
	assert_int_equal(r32(f + 64), ACPI_PM1A_CNT); /* PM1a_CNT_BLK */
	assert_int_equal(r32(f + 68), 0);
	assert_int_equal(r32(f + 72), 0);           /* no PM2 */
	assert_int_equal(r32(f + 76), ACPI_PM_TMR); /* PM_TMR_BLK */
	assert_int_equal(r32(f + 80) | r32(f + 84), 0);
	assert_int_equal(f[88], 4); /* PM1_EVT_LEN */
	assert_int_equal(f[89], 2); /* PM1_CNT_LEN */
	assert_int_equal(f[90], 0);
	assert_int_equal(f[91], 4);               /* PM_TMR_LEN */
	assert_int_equal(f[92] | f[93], 0);       /* no GPE blocks */
	assert_true(r16(f + 96) > 100);           /* no C2 */
	assert_true(r16(f + 98) > 1000);          /* no C3 */
	assert_int_equal(f[108], 0x32);           /* RTC century index */
	assert_int_equal(r16(f + 109) & 3, 3);    /* legacy devices, 8042 */
	assert_int_equal(r16(f + 109) & 0x20, 0); /* the CMOS RTC is present */
	uint32_t flags = r32(f + 112);
	assert_int_equal(flags & 0x1, 0x1);            /* WBINVD */
	assert_int_equal(flags & 0x4, 0x4);            /* PROC_C1 */
	assert_int_equal(flags & 0x30, 0x30);          /* no fixed power / sleep button */
	assert_int_equal(flags & 0x100, 0x100);        /* TMR_VAL_EXT: the timer is 32 bits */
	assert_int_equal(flags & 0x400, 0x400);        /* RESET_REG_SUP */
	assert_int_equal(flags & (1u << 20), 0);       /* not hardware-reduced */
	check_gas(f + 116, 8, 1, ACPI_RESET_PORT);     /* RESET_REG, byte access */
	assert_int_equal(f[128], 0x06);                /* RESET_VALUE */
	check_gas(f + 148, 32, 2, r32(f + 56));        /* X_PM1a_EVT_BLK */
	check_gas(f + 172, 16, 2, r32(f + 64));        /* X_PM1a_CNT_BLK */
	check_gas(f + 208, 32, 3, r32(f + 76));        /* X_PM_TMR_BLK */
	for (unsigned off = 160; off < 268; off += 12) /* PM1b, PM2, GPE0/1, sleep regs */
		if (off != 172 && off != 208)
			assert_int_equal(r64(f + off + 4), 0);
	/* The 32-bit fields and the X_ ones agree in width too. */
	assert_int_equal(f[149], 8 * f[88]);
	assert_int_equal(f[173], 8 * f[89]);
	assert_int_equal(f[209], 8 * f[91]);

	const uint8_t *facs = tb.facs;
	assert_memory_equal(facs, "FACS", 4);
	assert_int_equal(r32(facs + 4), 64);
	assert_int_equal(r32(facs + 12), 0); /* no waking vector */
	assert_int_equal(r32(facs + 20), 0); /* no S4BIOS, no 64-bit wake */
	assert_true(facs[32] >= 1);          /* version */
	gmem_destroy(&tb.mem);
}

static void test_dsdt(void **state)
{
	(void)state;
	struct tables tb;
	write_tables(&tb, 2);
	static const uint8_t aml[] = {0x08, 0x5f, 0x53, 0x35, 0x5f, 0x12, 0x08,
				      0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00};
	assert_int_equal(r32(tb.dsdt + 4), HDR + sizeof(aml));
	assert_true(tb.dsdt[8] >= 2); /* revision 2: 64-bit integers */
	assert_memory_equal(tb.dsdt + HDR, aml, sizeof(aml));
	/* The package length byte covers itself and everything after it to the end. */
	assert_int_equal(tb.dsdt[HDR + 6], sizeof(aml) - 6);
	gmem_destroy(&tb.mem);
}

static void check_madt(unsigned ncpus)
{
	struct tables tb;
	write_tables(&tb, ncpus);
	const uint8_t *t = tb.madt;
	uint32_t len = r32(t + 4);
	assert_int_equal(r32(t + 36), 0xfee00000u);
	assert_int_equal(r32(t + 40) & 1, 1); /* PCAT_COMPAT */
	unsigned cpus = 0, ioapics = 0, iso0 = 0, iso9 = 0, nmis = 0;
	for (uint32_t off = 44; off < len;) {
		assert_true(off + 2 <= len);
		uint8_t type = t[off], elen = t[off + 1];
		assert_true(elen >= 2 && off + elen <= len);
		const uint8_t *e = t + off;
		switch (type) {
		case 0: /* processor local APIC */
			assert_int_equal(elen, 8);
			assert_int_equal(e[2], cpus); /* UID */
			assert_int_equal(e[3], cpus); /* APIC ID */
			assert_int_equal(r32(e + 4), 1);
			cpus++;
			break;
		case 1:
			assert_int_equal(elen, 12);
			assert_int_equal(e[2], ncpus);
			assert_int_equal(r32(e + 4), 0xfec00000u);
			assert_int_equal(r32(e + 8), 0);
			ioapics++;
			break;
		case 2:
			assert_int_equal(elen, 10);
			assert_int_equal(e[2], 0); /* ISA */
			if (e[3] == 0) {
				assert_int_equal(r32(e + 4), 2);
				assert_int_equal(r16(e + 8), 0x5); /* edge, active high */
				iso0++;
			} else {
				assert_int_equal(e[3], 9);
				assert_int_equal(r32(e + 4), 9);
				assert_int_equal(r16(e + 8), 0xd); /* level, active high */
				iso9++;
			}
			break;
		case 4:
			assert_int_equal(elen, 6);
			assert_int_equal(e[2], 0xff); /* all processors */
			assert_int_equal(r16(e + 3), 0);
			assert_int_equal(e[5], 1); /* LINT1 */
			nmis++;
			break;
		default:
			fail_msg("unexpected MADT entry type %u", type);
		}
		off += elen;
	}
	assert_int_equal(cpus, ncpus);
	assert_int_equal(ioapics, 1);
	assert_int_equal(iso0, 1);
	assert_int_equal(iso9, 1);
	assert_int_equal(nmis, 1);
	/* The MP table the other path writes is untouched. */
	const uint8_t *mp = gmem_ptr(&tb.mem, BOOT_MPTABLE_ADDR, 16);
	assert_memory_equal(mp, "_MP_", 4);
	assert_int_equal(sum(mp, 16), 0);
	gmem_destroy(&tb.mem);
}

static void test_madt(void **state)
{
	(void)state;
	check_madt(1);
	check_madt(4);
	check_madt(ACPI_MAX_CPUS);
}

static void test_errors(void **state)
{
	(void)state;
	char err[256];
	struct guest_mem m;
	assert_int_equal(gmem_init(&m, RAM_SIZE, err, sizeof(err)), 0);
	err[0] = 0;
	assert_int_equal(acpi_write_tables(&m, 0, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "processors"));
	err[0] = 0;
	assert_int_equal(acpi_write_tables(&m, ACPI_MAX_CPUS + 1, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "processors"));
	gmem_destroy(&m);

	/* RAM that ends below the tables, or in the middle of them (a guest_mem by hand: real
	 * RAM is always at least 1 MiB): an error, and nothing written. */
	static const uint64_t ends[] = {0xa0000, ACPI_TABLES_ADDR + 0x100};
	for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++) {
		uint8_t *host = calloc(1, ends[i]);
		assert_non_null(host);
		struct guest_mem small = {.fd = -1, .host = host, .size = ends[i], .nregions = 1};
		small.region[0] = (struct mem_region){.gpa = 0, .size = ends[i], .offset = 0};
		err[0] = 0;
		assert_int_equal(acpi_write_tables(&small, 1, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "ACPI"));
		for (uint64_t a = 0; a < ends[i]; a++)
			assert_int_equal(host[a], 0);
		free(host);
	}
}

/* ---- the PM device ----------------------------------------------------------------------- */

static atomic_int sci_level = -1;
static atomic_int sci_calls;

static int test_irq_line(struct vm *vm, unsigned gsi, int level)
{
	(void)vm;
	if (gsi == ACPI_SCI_IRQ) {
		atomic_store(&sci_level, level);
		atomic_fetch_add(&sci_calls, 1);
	}
	return 0;
}

static const struct engine_ops test_engine = {.name = "test", .irq_line = test_irq_line};

struct tvm {
	struct vm vm;
	struct vm_config cfg;
	struct device *dev;
};

static int setup(void **state)
{
	struct tvm *t = calloc(1, sizeof(*t));
	if (!t)
		return -1;
	atomic_store(&sci_level, -1);
	atomic_store(&sci_calls, 0);
	t->cfg.smp = 1;
	t->vm.cfg = &t->cfg;
	t->vm.engine = &test_engine;
	t->vm.nvcpus = 1;
	pthread_mutex_init(&t->vm.lock, NULL);
	pthread_cond_init(&t->vm.stopped_cond, NULL);
	bus_init(&t->vm.pio, "pio");
	bus_init(&t->vm.mmio, "mmio");
	struct device_type *ty = device_types();
	while (ty && strcmp(ty->name, "acpi_pm") != 0)
		ty = ty->next;
	if (!ty || ty->create(&t->vm) < 0)
		return -1;
	t->dev = t->vm.devices;
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct tvm *t = *state;
	while (t->vm.devices) {
		struct device *d = t->vm.devices;
		t->vm.devices = d->next;
		d->destroy(d->opaque);
	}
	bus_destroy(&t->vm.pio);
	bus_destroy(&t->vm.mmio);
	pthread_mutex_destroy(&t->vm.lock);
	pthread_cond_destroy(&t->vm.stopped_cond);
	free(t);
	return 0;
}

static uint32_t in(struct tvm *t, uint16_t port, unsigned size)
{
	uint8_t b[4] = {0x5a, 0x5a, 0x5a, 0x5a};
	assert_int_equal(bus_access(&t->vm.pio, port, b, size, false), 0);
	uint32_t v = 0;
	for (unsigned i = 0; i < size; i++)
		v |= (uint32_t)b[i] << (8 * i);
	return v;
}

static void out(struct tvm *t, uint16_t port, uint32_t v, unsigned size)
{
	uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	assert_int_equal(bus_access(&t->vm.pio, port, b, size, true), 0);
}

static void clear_stop(struct tvm *t)
{
	atomic_store(&t->vm.stop_reason, VM_RUNNING);
	t->vm.exit_status = -1;
	t->vm.stop_msg[0] = 0;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

#define PM1_STS  ACPI_PM1A_EVT
#define PM1_EN   (ACPI_PM1A_EVT + 2)
#define PM1_CNT  ACPI_PM1A_CNT
#define SLP(typ) ((uint32_t)(typ) << ACPI_PM1_SLP_TYP_SHIFT)

static void test_pm_poweroff(void **state)
{
	struct tvm *t = *state;
	clear_stop(t);
	assert_int_equal(in(t, PM1_CNT, 2), ACPI_PM1_SCI_EN);
	/* Linux's sequence: SLP_TYP first, then SLP_TYP with SLP_EN. */
	out(t, PM1_CNT, SLP(5) | ACPI_PM1_SCI_EN, 2);
	assert_false(vm_stopping(&t->vm));
	assert_int_equal(in(t, PM1_CNT, 2), SLP(5) | ACPI_PM1_SCI_EN);
	out(t, PM1_CNT, SLP(5) | ACPI_PM1_SLP_EN | ACPI_PM1_SCI_EN, 2);
	assert_int_equal(atomic_load(&t->vm.stop_reason), VM_STOP_POWEROFF);
	assert_int_equal(t->vm.exit_status, 0);
	assert_string_equal(t->vm.stop_msg, "guest powered off (ACPI S5)");

	/* A byte write of the high half alone does it too. */
	clear_stop(t);
	out(t, PM1_CNT, 0, 2);
	out(t, PM1_CNT + 1, (SLP(5) | ACPI_PM1_SLP_EN) >> 8, 1);
	assert_int_equal(atomic_load(&t->vm.stop_reason), VM_STOP_POWEROFF);
}

static void test_pm_other_sleep_types(void **state)
{
	struct tvm *t = *state;
	clear_stop(t);
	for (unsigned typ = 0; typ < 8; typ++) {
		if (typ == ACPI_SLP_TYP_S5)
			continue;
		out(t, PM1_CNT, SLP(typ) | ACPI_PM1_SLP_EN, 2);
		assert_false(vm_stopping(&t->vm));
		/* SLP_TYP stays, SLP_EN reads 0, SCI_EN reads 1. */
		assert_int_equal(in(t, PM1_CNT, 2), SLP(typ) | ACPI_PM1_SCI_EN);
	}
	/* A dword write at the control block is not a register access (the bus refuses it);
	 * BM_RLD is kept, GBL_RLS and SCI_EN writes are not. */
	uint8_t b[4] = {0xff, 0xff, 0xff, 0xff};
	assert_int_equal(bus_access(&t->vm.pio, PM1_CNT, b, 4, true), -1);
	out(t, PM1_CNT, ACPI_PM1_BM_RLD | ACPI_PM1_GBL_RLS, 2);
	assert_int_equal(in(t, PM1_CNT, 2), ACPI_PM1_BM_RLD | ACPI_PM1_SCI_EN);
	assert_int_equal(in(t, PM1_CNT + 1, 1), 0);
	out(t, PM1_CNT, 0, 2);
	assert_int_equal(in(t, PM1_CNT, 2), ACPI_PM1_SCI_EN);
	assert_false(vm_stopping(&t->vm));
	/* The ignored requests change nothing for a later S5. */
	out(t, PM1_CNT, SLP(5) | ACPI_PM1_SLP_EN, 2);
	assert_int_equal(atomic_load(&t->vm.stop_reason), VM_STOP_POWEROFF);
}

static void test_pm_timer_rate(void **state)
{
	struct tvm *t = *state;
	/* The counter read must lie between what the clock says before and after each read. */
	int64_t a = now_ns();
	uint32_t v0 = in(t, ACPI_PM_TMR, 4);
	int64_t b = now_ns();
	sleep_ms(200);
	int64_t c = now_ns();
	uint32_t v1 = in(t, ACPI_PM_TMR, 4);
	int64_t d = now_ns();
	uint32_t delta = v1 - v0;
	double lo = (double)(c - b) * ACPI_PM_TMR_HZ / 1e9 - 2;
	double hi = (double)(d - a) * ACPI_PM_TMR_HZ / 1e9 + 2;
	assert_true(delta >= lo && delta <= hi);
	assert_true(delta > 3579545 / 5 * 0.95); /* ~715909 for 200 ms */
	/* Narrow reads give the bytes of the same counter; writes do nothing. */
	uint32_t lo16 = in(t, ACPI_PM_TMR, 2), hi16 = in(t, ACPI_PM_TMR + 2, 2);
	uint32_t after = in(t, ACPI_PM_TMR, 4);
	assert_true(((lo16 - v1) & 0xffff) <= after - v1);
	assert_true(hi16 >= v1 >> 16 && hi16 <= after >> 16);
	out(t, ACPI_PM_TMR, 0, 4);
	assert_true(in(t, ACPI_PM_TMR, 4) - after < 3579545u);
	assert_false(vm_stopping(&t->vm));
}

static void save_dev(struct device *d, struct state_writer *w)
{
	sw_init(w);
	d->save(d->opaque, w);
	assert_false(w->err);
}

static int load_dev(struct device *d, const void *buf, size_t len)
{
	struct state_reader r;
	sr_init(&r, buf, len);
	return d->load(d->opaque, &r);
}

/* The record: tag and version, then sts, en, cnt (u16), cf9 (u8), timer (u32). */
#define REC_STS 12
#define REC_EN  14
#define REC_CNT 16
#define REC_CF9 18
#define REC_TMR 19
#define REC_LEN 23

static int load_rec(struct tvm *t, uint16_t sts, uint16_t en, uint16_t cnt, uint8_t cf9,
		    uint32_t tmr)
{
	struct state_writer w;
	sw_init(&w);
	sw_begin(&w, "acpipm", 1);
	sw_u16(&w, sts);
	sw_u16(&w, en);
	sw_u16(&w, cnt);
	sw_u8(&w, cf9);
	sw_u32(&w, tmr);
	assert_int_equal(w.len, REC_LEN);
	int rc = load_dev(t->dev, w.buf, w.len);
	sw_free(&w);
	return rc;
}

#define MS_TICKS (ACPI_PM_TMR_HZ / 1000)

static void test_pm1_status_enable(void **state)
{
	struct tvm *t = *state;
	assert_int_equal(in(t, PM1_STS, 2), 0);
	assert_int_equal(atomic_load(&sci_level), 0); /* driven low at creation */
	/* Enable bits latch; reserved ones read 0. */
	out(t, PM1_EN, 0xffff, 2);
	assert_int_equal(in(t, PM1_EN, 2), 0x4721);
	assert_int_equal(in(t, PM1_STS, 4), 0x4721u << 16);
	out(t, PM1_EN + 1, 0, 1);
	assert_int_equal(in(t, PM1_EN, 2), 0x21);
	out(t, PM1_EN, 0, 2);

	/* Bit 31 of the counter changes 100 ms from now: TMR_STS is set and stays set. */
	assert_int_equal(load_rec(t, 0, 0, 0, 0, 0x80000000u - 100 * MS_TICKS), 0);
	assert_int_equal(in(t, PM1_STS, 2) & ACPI_PM1_TMR, 0);
	sleep_ms(150);
	assert_true(in(t, ACPI_PM_TMR, 4) >= 0x80000000u);
	assert_int_equal(in(t, PM1_STS, 2), ACPI_PM1_TMR);
	assert_int_equal(atomic_load(&sci_level), 0); /* TMR_EN is off */
	out(t, PM1_STS, 0xfffe, 2);                   /* writing 0 to it leaves it */
	assert_int_equal(in(t, PM1_STS, 2), ACPI_PM1_TMR);
	out(t, PM1_STS + 1, 0xff, 1); /* another byte */
	assert_int_equal(in(t, PM1_STS, 2), ACPI_PM1_TMR);
	out(t, PM1_STS, ACPI_PM1_TMR, 2);
	assert_int_equal(in(t, PM1_STS, 2), 0);

	/* With TMR_EN the timer thread raises the SCI at the change, with no access meanwhile. */
	int64_t start = now_ns();
	assert_int_equal(load_rec(t, 0, ACPI_PM1_TMR, 0, 0, 0xffffffffu - 100 * MS_TICKS), 0);
	assert_int_equal(atomic_load(&sci_level), 0);
	while (atomic_load(&sci_level) != 1 && now_ns() - start < 2000000000)
		sleep_ms(1);
	int64_t waited = now_ns() - start;
	assert_int_equal(atomic_load(&sci_level), 1);
	assert_true(waited >= 99000000); /* not before the change */
	assert_int_equal(in(t, PM1_STS, 2), ACPI_PM1_TMR);
	assert_true(in(t, ACPI_PM_TMR, 4) < 0x80000000u); /* wrapped */
	/* Clearing the status drops the level line; so does disabling. */
	out(t, PM1_STS, ACPI_PM1_TMR, 2);
	assert_int_equal(atomic_load(&sci_level), 0);
	assert_int_equal(load_rec(t, ACPI_PM1_TMR, ACPI_PM1_TMR, 0, 0, 5), 0);
	assert_int_equal(atomic_load(&sci_level), 1);
	out(t, PM1_EN, 0, 2);
	assert_int_equal(atomic_load(&sci_level), 0);
	assert_false(vm_stopping(&t->vm));
}

static void test_cf9_reset(void **state)
{
	struct tvm *t = *state;
	clear_stop(t);
	assert_int_equal(in(t, ACPI_RESET_PORT, 1), 0);
	out(t, ACPI_RESET_PORT, ACPI_CF9_SYS_RST, 1); /* choose a hard reset: nothing yet */
	assert_false(vm_stopping(&t->vm));
	assert_int_equal(in(t, ACPI_RESET_PORT, 1), ACPI_CF9_SYS_RST);
	out(t, ACPI_RESET_PORT, ACPI_CF9_SYS_RST | ACPI_CF9_RST_CPU, 1);
	assert_int_equal(atomic_load(&t->vm.stop_reason), VM_STOP_RESET);
	assert_int_equal(t->vm.exit_status, 0);
	assert_string_equal(t->vm.stop_msg, "guest reset through port 0xcf9");
	assert_int_equal(in(t, ACPI_RESET_PORT, 1), ACPI_CF9_SYS_RST); /* RST_CPU never sticks */

	/* What Linux's ACPI reset does: the FADT's value in one byte write. */
	clear_stop(t);
	out(t, ACPI_RESET_PORT, 0, 1);
	out(t, ACPI_RESET_PORT, ACPI_RESET_VALUE, 1);
	assert_int_equal(atomic_load(&t->vm.stop_reason), VM_STOP_RESET);
	clear_stop(t);
	out(t, ACPI_RESET_PORT, ACPI_CF9_FULL_RST, 1);
	assert_false(vm_stopping(&t->vm));
	assert_int_equal(in(t, ACPI_RESET_PORT, 1), ACPI_CF9_FULL_RST);
	out(t, ACPI_RESET_PORT, ACPI_CF9_RST_CPU, 1);
	assert_int_equal(atomic_load(&t->vm.stop_reason), VM_STOP_RESET);
	/* Only the byte port is claimed: 0xcf8 and wide accesses are someone else's. */
	uint8_t b[4] = {0};
	assert_int_equal(bus_access(&t->vm.pio, ACPI_RESET_PORT, b, 2, true), -1);
	assert_null(bus_find(&t->vm.pio, 0xcf8));
}

static void test_save_load(void **state)
{
	struct tvm *t = *state;
	/* A state with every field non-zero. */
	assert_int_equal(load_rec(t, ACPI_PM1_TMR, 0x0121, SLP(3) | ACPI_PM1_BM_RLD,
				  ACPI_CF9_FULL_RST | ACPI_CF9_SYS_RST, 0x12345678u),
			 0);
	assert_int_equal(atomic_load(&sci_level), 1);
	struct state_writer a, b;
	save_dev(t->dev, &a);
	assert_int_equal(a.len, REC_LEN);
	assert_int_equal(r16(a.buf + REC_STS), ACPI_PM1_TMR);
	assert_int_equal(r16(a.buf + REC_EN), 0x0121);
	assert_int_equal(r16(a.buf + REC_CNT), SLP(3) | ACPI_PM1_BM_RLD);
	assert_int_equal(a.buf[REC_CF9], ACPI_CF9_FULL_RST | ACPI_CF9_SYS_RST);
	uint32_t t0 = r32(a.buf + REC_TMR);
	assert_true(t0 - 0x12345678u < 3579545u);

	/* Change everything, load the record back: the device saves the same again, and the
	 * counter continues from the saved count. */
	out(t, PM1_STS, 0xffff, 2);
	out(t, PM1_EN, 0, 2);
	out(t, PM1_CNT, 0, 2);
	out(t, ACPI_RESET_PORT, 0, 1);
	assert_int_equal(atomic_load(&sci_level), 0);
	sleep_ms(20);
	int64_t before = now_ns();
	assert_int_equal(load_dev(t->dev, a.buf, a.len), 0);
	assert_int_equal(atomic_load(&sci_level), 1);
	save_dev(t->dev, &b);
	int64_t after = now_ns();
	assert_int_equal(b.len, a.len);
	assert_memory_equal(b.buf, a.buf, REC_TMR);
	uint32_t t1 = r32(b.buf + REC_TMR);
	assert_true(t1 - t0 <= (uint32_t)((after - before) * (double)ACPI_PM_TMR_HZ / 1e9) + 1);
	assert_int_equal(in(t, PM1_CNT, 2), SLP(3) | ACPI_PM1_BM_RLD | ACPI_PM1_SCI_EN);
	assert_int_equal(in(t, ACPI_RESET_PORT, 1), ACPI_CF9_FULL_RST | ACPI_CF9_SYS_RST);
	sw_free(&b);

	/* Truncations, a wrong tag, a future version, out-of-range values: refused, and the
	 * device is unchanged. */
	uint8_t *bad = malloc(a.len);
	assert_non_null(bad);
	for (size_t n = 0; n < a.len; n++)
		assert_int_equal(load_dev(t->dev, a.buf, n), -1);
	memcpy(bad, a.buf, a.len);
	bad[0] ^= 0x20;
	assert_int_equal(load_dev(t->dev, bad, a.len), -1);
	memcpy(bad, a.buf, a.len);
	bad[8] = 2; /* version */
	assert_int_equal(load_dev(t->dev, bad, a.len), -1);
	static const struct {
		size_t off;
		uint8_t v;
	} garble[] = {
	    {REC_STS, 0x02},     /* a status bit this hardware has not */
	    {REC_STS + 1, 0x80}, /* WAK_STS: nothing sleeps */
	    {REC_EN, 0x02},      /* reserved enable bit */
	    {REC_CNT, 0x01},     /* SCI_EN is not stored */
	    {REC_CNT + 1, 0x20}, /* SLP_EN is not stored */
	    {REC_CNT + 1, 0x40}, /* reserved */
	    {REC_CF9, 0x04},     /* RST_CPU is not stored */
	    {REC_CF9, 0x10},     /* reserved */
	};
	for (size_t i = 0; i < sizeof(garble) / sizeof(garble[0]); i++) {
		memcpy(bad, a.buf, a.len);
		bad[garble[i].off] |= garble[i].v;
		assert_int_equal(load_dev(t->dev, bad, a.len), -1);
	}
	free(bad);
	save_dev(t->dev, &b);
	assert_memory_equal(b.buf, a.buf, REC_TMR);
	sw_free(&b);
	sw_free(&a);
}

/* Every register offset and width: no crash, reads of absent bits are 0, unclaimed ports read
 * all ones. */
static void test_pm_access_widths(void **state)
{
	struct tvm *t = *state;
	clear_stop(t);
	for (uint16_t port = ACPI_PM1A_EVT; port < ACPI_PM_TMR + ACPI_PM_TMR_LEN; port++)
		for (unsigned size = 1; size <= 4; size *= 2) {
			uint8_t buf[4] = {0};
			int rc = bus_access(&t->vm.pio, port, buf, size, false);
			if (port == 0x606 || port == 0x607)
				assert_int_equal(rc, -1); /* the gap between the blocks */
			memset(buf, 0, sizeof(buf));
			bus_access(&t->vm.pio, port, buf, size, true);
		}
	assert_false(vm_stopping(&t->vm));
	assert_int_equal(in(t, PM1_STS, 4), 0);
	assert_int_equal(in(t, PM1_CNT, 2), ACPI_PM1_SCI_EN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fadt),
	    cmocka_unit_test(test_dsdt),
	    cmocka_unit_test(test_madt),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test_setup_teardown(test_pm_poweroff, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pm_other_sleep_types, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pm_timer_rate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pm1_status_enable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cf9_reset, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_save_load, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pm_access_widths, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
