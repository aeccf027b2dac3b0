/* ACPI: the tables in guest RAM found and followed the way Linux does (RSDP scan of the BIOS
 * area in 16-byte steps, XSDT and RSDT, then FADT -> FACS/DSDT, MADT), every checksum and length
 * checked and every field the guest relies on compared; the DSDT's PCI root bridge (_HID, bus,
 * I/O and memory windows, _PRT) read with a decoder of the test's own and with ACPICA's iasl
 * (disassembled, compared whole, compiled back to the same bytes); the AML encoders at their
 * boundaries; and the power-management device driven
 * through the port I/O bus as a guest drives it: S5 power-off, ignored sleep types, the PM timer's
 * rate, PM1 status/enable and the SCI, the 0xcf9 reset, and its save/load record. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "arch/x86/acpi.h"
#include "arch/x86/boot.h"
#include "dev/pci.h"
#include "vm/bus.h"
#include "vm/device.h"
#include "vm/mem.h"
#include "vm/state.h"
#include "vm/vm.h"

#include "test_vm.h"

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

/* The DSDT starts with \_S5 as it always has: Name (_S5, Package () { 5, 5, 0, 0 }). */
static void test_dsdt(void **state)
{
	(void)state;
	struct tables tb;
	write_tables(&tb, 2);
	static const uint8_t s5[] = {0x08, 0x5f, 0x53, 0x35, 0x5f, 0x12, 0x08,
				     0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00};
	assert_true(r32(tb.dsdt + 4) > HDR + sizeof(s5));
	assert_true(tb.dsdt[8] >= 2); /* revision 2: 64-bit integers */
	assert_memory_equal(tb.dsdt + HDR, s5, sizeof(s5));
	/* The package length byte covers itself and everything after it to the end. */
	assert_int_equal(tb.dsdt[HDR + 6], sizeof(s5) - 6);
	gmem_destroy(&tb.mem);
}

/* Every table lies in the area and none overlaps another, with the most CPUs the MADT takes. */
static void test_layout(void **state)
{
	(void)state;
	static const unsigned ncpus[] = {1, ACPI_MAX_CPUS};
	for (size_t n = 0; n < sizeof(ncpus) / sizeof(ncpus[0]); n++) {
		struct tables tb;
		write_tables(&tb, ncpus[n]);
		const uint8_t *base = gmem_ptr(&tb.mem, ACPI_TABLES_ADDR, ACPI_TABLES_MAX);
		assert_non_null(base);
		const uint8_t *fadt = tb.fadt, *rsdp = tb.rsdp;
		struct {
			uint64_t start, len;
		} t[] = {
		    {ACPI_RSDP_ADDR, 36},
		    {r32(rsdp + 16), r32(base + r32(rsdp + 16) - ACPI_TABLES_ADDR + 4)},
		    {r64(rsdp + 24), r32(base + r64(rsdp + 24) - ACPI_TABLES_ADDR + 4)},
		    {tb.fadt_gpa, r32(fadt + 4)},
		    {r64(fadt + 132), 64},
		    {r64(fadt + 140), r32(tb.dsdt + 4)},
		    {tb.madt_gpa, r32(tb.madt + 4)},
		};
		size_t nt = sizeof(t) / sizeof(t[0]);
		for (size_t i = 0; i < nt; i++) {
			assert_true(t[i].start >= ACPI_TABLES_ADDR &&
				    t[i].start + t[i].len <= AREA_END);
			for (size_t j = 0; j < i; j++)
				assert_true(t[i].start + t[i].len <= t[j].start ||
					    t[j].start + t[j].len <= t[i].start);
		}
		gmem_destroy(&tb.mem);
	}
	assert_true(AREA_END <= BOOT_MPTABLE_ADDR);
}

/* ---- the PCI root bridge in the DSDT, read with a decoder of our own ------------------------ */

/* A PkgLength at p: returns its size and sets *value, 0 if malformed. */
static size_t dec_pkglen(const uint8_t *p, size_t avail, uint32_t *value)
{
	if (avail == 0)
		return 0;
	size_t n = 1 + (p[0] >> 6);
	if (n > avail || (n > 1 && (p[0] & 0x30)))
		return 0;
	*value = n == 1 ? p[0] : p[0] & 0xfu;
	for (size_t i = 1; i < n; i++)
		*value |= (uint32_t)p[i] << (4 + 8 * (i - 1));
	return n;
}

/* A ComputationalData integer at p: returns its size and sets *v, 0 if not an integer. */
static size_t dec_int(const uint8_t *p, size_t avail, uint64_t *v)
{
	static const size_t width[16] = {[0x0a] = 1, [0x0b] = 2, [0x0c] = 4, [0x0e] = 8};
	if (avail == 0)
		return 0;
	if (p[0] == 0x00 || p[0] == 0x01) {
		*v = p[0];
		return 1;
	}
	size_t w = p[0] < 16 ? width[p[0]] : 0;
	if (w == 0 || 1 + w > avail)
		return 0;
	*v = 0;
	for (size_t i = 0; i < w; i++)
		*v |= (uint64_t)p[1 + i] << (8 * i);
	return 1 + w;
}

/* A construct at p: op (1 or 2 bytes), then a PkgLength; returns where its contents start and
 * sets *end to where it ends, checked against limit. */
static size_t open_pkg(const uint8_t *aml, size_t at, size_t limit, const uint8_t *op, size_t oplen,
		       size_t *end)
{
	assert_true(at + oplen < limit);
	assert_memory_equal(aml + at, op, oplen);
	uint32_t len = 0;
	size_t n = dec_pkglen(aml + at + oplen, limit - at - oplen, &len);
	assert_true(n > 0 && len >= n);
	*end = at + oplen + len;
	assert_true(*end <= limit);
	return at + oplen + n;
}

static uint64_t expect_int(const uint8_t *aml, size_t *at, size_t limit)
{
	uint64_t v = 0;
	size_t n = dec_int(aml + *at, limit - *at, &v);
	assert_true(n > 0);
	*at += n;
	return v;
}

/* The resource descriptors of the bridge's _CRS, in order; type 0xff: the small I/O one. */
static void check_crs(const uint8_t *r, size_t n)
{
	static const struct {
		uint8_t tag, space, tflags;
		uint64_t min, max;
	} want[] = {
	    {0x88, 2, 0x00, 0, 0xff},                                        /* bus numbers */
	    {0x47, 0xff, 0, PCI_CONFIG_ADDR_PORT, PCI_CONFIG_DATA_PORT + 3}, /* config ports */
	    {0x88, 1, 0x03, 0, PCI_CONFIG_ADDR_PORT - 1},                    /* I/O below them */
	    {0x88, 1, 0x03, PCI_CONFIG_DATA_PORT + 4, 0xffff},               /* and above */
	    {0x87, 0, 0x03, 0xa0000, 0xbffff},                               /* VGA, cacheable */
	    {0x87, 0, 0x01, PCI_MMIO_BASE, PCI_MMIO_BASE + PCI_MMIO_SIZE - 1},
	};
	size_t at = 0, i = 0;
	bool io_window = false;
	while (at < n && r[at] != 0x79) {
		assert_true(i < sizeof(want) / sizeof(want[0]));
		assert_int_equal(r[at], want[i].tag);
		uint64_t min, max, gran, tra, len;
		if (r[at] == 0x47) {
			assert_true(at + 8 <= n);
			assert_int_equal(r[at + 1], 1); /* 16-bit decode */
			min = r16(r + at + 2);
			assert_int_equal(r16(r + at + 4), min); /* a fixed base */
			assert_int_equal(r[at + 6], 1);
			max = min + r[at + 7] - 1;
			at += 8;
		} else {
			bool dword = r[at] == 0x87;
			size_t w = dword ? 4 : 2, dlen = dword ? 23 : 13;
			assert_true(at + 3 + dlen <= n);
			assert_int_equal(r16(r + at + 1), dlen);
			assert_int_equal(r[at + 3], want[i].space);
			assert_int_equal(r[at + 4],
					 0x0c); /* producer, fixed min and max, positive */
			assert_int_equal(r[at + 5], want[i].tflags);
			const uint8_t *f = r + at + 6;
			gran = dword ? r32(f) : r16(f);
			min = dword ? r32(f + w) : r16(f + w);
			max = dword ? r32(f + 2 * w) : r16(f + 2 * w);
			tra = dword ? r32(f + 3 * w) : r16(f + 3 * w);
			len = dword ? r32(f + 4 * w) : r16(f + 4 * w);
			assert_int_equal(gran, 0);
			assert_int_equal(tra, 0);
			assert_int_equal(len, max - min + 1);
			if (want[i].space == 1 && min <= PCI_IO_BASE &&
			    PCI_IO_BASE + PCI_IO_SIZE - 1 <= max)
				io_window = true;
			at += 3 + dlen;
		}
		assert_int_equal(min, want[i].min);
		assert_int_equal(max, want[i].max);
		i++;
	}
	assert_int_equal(i, sizeof(want) / sizeof(want[0]));
	assert_true(io_window); /* the I/O BARs' window is forwarded */
	/* The end tag, its checksum 0 ("none"), and nothing after it. */
	assert_int_equal(at + 2, n);
	assert_int_equal(r[at + 1], 0);
}

/* The _PRT: every slot but the host bridge's, every pin, to a GSI (source 0). */
static void check_prt(const uint8_t *aml, size_t at, size_t end)
{
	assert_int_equal(aml[at++], (PCI_SLOTS - 1) * 4);
	for (unsigned slot = 1; slot < PCI_SLOTS; slot++)
		for (unsigned pin = 0; pin < 4; pin++) {
			size_t e_end;
			at = open_pkg(aml, at, end, (const uint8_t *)"\x12", 1, &e_end);
			assert_int_equal(aml[at++], 4);
			assert_int_equal(expect_int(aml, &at, e_end),
					 (uint64_t)slot << 16 | 0xffff);
			assert_int_equal(expect_int(aml, &at, e_end), pin);
			assert_int_equal(expect_int(aml, &at, e_end), 0);
			uint64_t gsi = expect_int(aml, &at, e_end);
			assert_int_equal(gsi, PCI_INTX_GSI(slot, pin));
			assert_true(gsi >= 16 &&
				    gsi < 24); /* I/O APIC inputs with no ISA override */
			assert_int_equal(at, e_end);
		}
	assert_int_equal(at, end);
}

static void test_dsdt_pci(void **state)
{
	(void)state;
	struct tables tb;
	write_tables(&tb, 1);
	const uint8_t *aml = tb.dsdt + HDR;
	size_t n = r32(tb.dsdt + 4) - HDR, sb_end, dev_end;
	/* Scope (_SB) { Device (PCI0) { ... } } after \_S5, to the end of the table. */
	size_t at = open_pkg(aml, 14, n, (const uint8_t *)"\x10", 1, &sb_end);
	assert_int_equal(sb_end, n);
	assert_memory_equal(aml + at, "_SB_", 4);
	at = open_pkg(aml, at + 4, sb_end, (const uint8_t *)"\x5b\x82", 2, &dev_end);
	assert_int_equal(dev_end, sb_end);
	assert_memory_equal(aml + at, "PCI0", 4);
	at += 4;
	unsigned seen = 0;
	static const char *const names[] = {"_HID", "_UID", "_BBN", "_SEG", "_CRS", "_PRT"};
	while (at < dev_end) {
		assert_int_equal(aml[at], 0x08); /* Name */
		assert_true(at + 5 < dev_end);
		const uint8_t *name = aml + at + 1;
		at += 5;
		size_t i = 0;
		while (i < 6 && memcmp(name, names[i], 4) != 0)
			i++;
		assert_true(i < 6);
		assert_int_equal(seen & (1u << i), 0);
		seen |= 1u << i;
		if (i == 0) { /* EisaId ("PNP0A03"), as a DWord */
			assert_int_equal(aml[at], 0x0c);
			assert_int_equal(expect_int(aml, &at, dev_end), 0x030ad041);
		} else if (i <= 3) {
			assert_int_equal(expect_int(aml, &at, dev_end), 0);
		} else if (i == 4) {
			size_t buf_end;
			at = open_pkg(aml, at, dev_end, (const uint8_t *)"\x11", 1, &buf_end);
			uint64_t size = expect_int(aml, &at, buf_end);
			assert_int_equal(at + size, buf_end);
			check_crs(aml + at, size);
			at = buf_end;
		} else {
			size_t prt_end;
			at = open_pkg(aml, at, dev_end, (const uint8_t *)"\x12", 1, &prt_end);
			check_prt(aml, at, prt_end);
			at = prt_end;
		}
	}
	assert_int_equal(at, dev_end);
	assert_int_equal(seen, 0x3f);
	gmem_destroy(&tb.mem);
}

/* ---- the same DSDT through ACPICA's disassembler and compiler -------------------------------- */

/* Runs iasl with argv, its output appended to log; returns its exit status, -1 if there is no
 * iasl to run. */
static int run_iasl(char *const argv[], const char *log)
{
	posix_spawn_file_actions_t fa;
	assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
	assert_int_equal(
	    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0600), 0);
	assert_int_equal(posix_spawn_file_actions_adddup2(&fa, 1, 2), 0);
	pid_t pid;
	int rc = posix_spawnp(&pid, "iasl", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc == ENOENT)
		return -1;
	assert_int_equal(rc, 0);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

/* The whole file, NUL-terminated; *len its size. */
static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	long n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	char *s = malloc((size_t)n + 1);
	assert_non_null(s);
	assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
	s[n] = 0;
	fclose(f);
	*len = (size_t)n;
	return s;
}

/* ASL without comments and white space (outside string literals), so it compares exactly. */
static char *compact(const char *s)
{
	char *out = malloc(strlen(s) + 1), *o = out;
	assert_non_null(out);
	bool quoted = false;
	for (; *s; s++) {
		if (quoted) {
			*o++ = *s;
			quoted = *s != '"';
		} else if (s[0] == '/' && s[1] == '/') {
			while (s[1] && s[1] != '\n')
				s++;
		} else if (s[0] == '/' && s[1] == '*') {
			const char *e = strstr(s + 2, "*/");
			assert_non_null(e);
			s = e + 1;
		} else if (!isspace((unsigned char)*s)) {
			*o++ = *s;
			quoted = *s == '"';
		}
	}
	*o = 0;
	return out;
}

static void append(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t cap, const char *fmt, ...)
{
	size_t len = strlen(buf);
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + len, cap - len, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < cap - len);
}

/* What the disassembly of the DSDT's definition block must read, compacted. */
static void expected_asl(char *e, size_t cap)
{
	static const char *const pins[] = {"Zero", "One", "0x02", "0x03"};
	e[0] = 0;
	append(e, cap, "{Name(_S5,Package(0x04){0x05,0x05,Zero,Zero})");
	append(e, cap, "Scope(_SB){Device(PCI0){Name(_HID,EisaId(\"PNP0A03\"))");
	append(e, cap, "Name(_UID,Zero)Name(_BBN,Zero)Name(_SEG,Zero)");
	append(e, cap, "Name(_CRS,ResourceTemplate(){");
	append(e, cap,
	       "WordBusNumber(ResourceProducer,MinFixed,MaxFixed,PosDecode,"
	       "0x0000,0x0000,0x00FF,0x0000,0x0100,,,)");
	append(e, cap, "IO(Decode16,0x%04X,0x%04X,0x01,0x08,)", PCI_CONFIG_ADDR_PORT,
	       PCI_CONFIG_ADDR_PORT);
	append(e, cap,
	       "WordIO(ResourceProducer,MinFixed,MaxFixed,PosDecode,EntireRange,"
	       "0x0000,0x0000,0x%04X,0x0000,0x%04X,,,,TypeStatic,DenseTranslation)",
	       PCI_CONFIG_ADDR_PORT - 1, PCI_CONFIG_ADDR_PORT);
	append(e, cap,
	       "WordIO(ResourceProducer,MinFixed,MaxFixed,PosDecode,EntireRange,"
	       "0x0000,0x%04X,0xFFFF,0x0000,0x%04X,,,,TypeStatic,DenseTranslation)",
	       PCI_CONFIG_DATA_PORT + 4, 0x10000 - (PCI_CONFIG_DATA_PORT + 4));
	append(e, cap,
	       "DWordMemory(ResourceProducer,PosDecode,MinFixed,MaxFixed,Cacheable,ReadWrite,"
	       "0x00000000,0x000A0000,0x000BFFFF,0x00000000,0x00020000,,,,AddressRangeMemory,"
	       "TypeStatic)");
	append(e, cap,
	       "DWordMemory(ResourceProducer,PosDecode,MinFixed,MaxFixed,NonCacheable,ReadWrite,"
	       "0x00000000,0x%08llX,0x%08llX,0x00000000,0x%08llX,,,,AddressRangeMemory,"
	       "TypeStatic)})",
	       PCI_MMIO_BASE, PCI_MMIO_BASE + PCI_MMIO_SIZE - 1, PCI_MMIO_SIZE);
	append(e, cap, "Name(_PRT,Package(0x%02X){", (PCI_SLOTS - 1) * 4);
	for (unsigned slot = 1; slot < PCI_SLOTS; slot++)
		for (unsigned pin = 0; pin < 4; pin++)
			append(e, cap, "%sPackage(0x04){0x%08X,%s,Zero,0x%02X}",
			       slot == 1 && pin == 0 ? "" : ",", slot << 16 | 0xffff, pins[pin],
			       PCI_INTX_GSI(slot, pin));
	append(e, cap, "})}}}");
}

/* The iasl test's files live in a directory of their own, removed even when the test fails. */
static int make_tmpdir(void **state)
{
	static char dir[32];
	snprintf(dir, sizeof(dir), "/tmp/ferry-test-acpi-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	*state = dir;
	return 0;
}

static int remove_tmpdir(void **state)
{
	const char *dir = *state;
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	struct dirent *de;
	int rc = 0;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			rc |= unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
	return rc | rmdir(dir);
}

static void test_dsdt_iasl(void **state)
{
	const char *dir = *state;
	struct tables tb;
	write_tables(&tb, 1);
	uint32_t len = r32(tb.dsdt + 4);
	char dat[64], dsl[64], log1[64], log2[64], re[64], re_aml[64];
	snprintf(dat, sizeof(dat), "%s/dsdt.dat", dir);
	snprintf(dsl, sizeof(dsl), "%s/dsdt.dsl", dir);
	snprintf(log1, sizeof(log1), "%s/disassemble.log", dir);
	snprintf(log2, sizeof(log2), "%s/compile.log", dir);
	snprintf(re, sizeof(re), "%s/re", dir);
	snprintf(re_aml, sizeof(re_aml), "%s/re.aml", dir);
	FILE *f = fopen(dat, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(tb.dsdt, 1, len, f), len);
	assert_int_equal(fclose(f), 0);

	char *dis[] = {"iasl", "-d", dat, NULL};
	int rc = run_iasl(dis, log1);
	if (rc < 0) {
		gmem_destroy(&tb.mem);
		print_message("iasl is not installed (Debian package acpica-tools): skipped\n");
		skip();
	}
	size_t n;
	char *log = slurp(log1, &n);
	if (rc != 0 || strcasestr(log, "warning") || strcasestr(log, "error"))
		fail_msg("iasl -d: status %d\n%s", rc, log);
	free(log);

	/* The definition block, compared whole. */
	char *text = slurp(dsl, &n), *c = compact(text);
	free(text);
	static const char head[] =
	    "DefinitionBlock(\"\",\"DSDT\",2,\"FERRY \",\"FERRYVM \",0x00000001)";
	const char *body = strstr(c, head);
	assert_non_null(body);
	body += strlen(head);
	size_t cap = 16384;
	char *want = malloc(cap);
	assert_non_null(want);
	expected_asl(want, cap);
	if (strcmp(body, want) != 0)
		fail_msg("disassembly:\n%s\nexpected:\n%s", body, want);
	free(want);
	free(c);

	/* Compiled back, it is the same AML, with no complaint: every encoding is the shortest
	 * one, as the compiler's. */
	char *comp[] = {"iasl", "-p", re, dsl, NULL};
	rc = run_iasl(comp, log2);
	log = slurp(log2, &n);
	if (rc != 0 || !strstr(log, "Compilation successful. 0 Errors, 0 Warnings, 0 Remarks"))
		fail_msg("iasl: status %d\n%s", rc, log);
	free(log);
	char *aml = slurp(re_aml, &n);
	assert_int_equal(n, len);
	assert_memory_equal(aml, tb.dsdt, 9);            /* signature, length, revision */
	assert_memory_equal(aml + 10, tb.dsdt + 10, 18); /* OEM fields */
	assert_memory_equal(aml + HDR, tb.dsdt + HDR, len - HDR);
	free(aml);
	gmem_destroy(&tb.mem);
}

/* ---- the AML encoders ----------------------------------------------------------------------- */

/* Runs one encoder into a fresh stream and compares its bytes. */
#define EXPECT_AML(call, ...)                                                                      \
	do {                                                                                       \
		static const uint8_t want_[] = {__VA_ARGS__};                                      \
		uint8_t buf_[64];                                                                  \
		struct aml a_;                                                                     \
		aml_init(&a_, buf_, sizeof(buf_));                                                 \
		call;                                                                              \
		assert_false(a_.err);                                                              \
		assert_int_equal(a_.len, sizeof(want_));                                           \
		assert_memory_equal(buf_, want_, sizeof(want_));                                   \
	} while (0)

#define EXPECT_AML_ERR(call)                                                                       \
	do {                                                                                       \
		uint8_t buf_[2048];                                                                \
		struct aml a_;                                                                     \
		aml_init(&a_, buf_, sizeof(buf_));                                                 \
		call;                                                                              \
		assert_true(a_.err);                                                               \
	} while (0)

static void check_pkglen(uint32_t value, size_t n, const uint8_t *want)
{
	uint8_t out[4] = {0};
	assert_int_equal(aml_pkglen(out, value), n);
	assert_memory_equal(out, want, n);
	uint32_t back = 0;
	assert_int_equal(dec_pkglen(out, n, &back), n);
	assert_int_equal(back, value);
}

static void test_aml_pkglen(void **state)
{
	(void)state;
	check_pkglen(0, 1, (const uint8_t[]){0x00});
	check_pkglen(63, 1, (const uint8_t[]){0x3f});
	check_pkglen(64, 2, (const uint8_t[]){0x40, 0x04});
	check_pkglen(65, 2, (const uint8_t[]){0x41, 0x04});
	check_pkglen(4095, 2, (const uint8_t[]){0x4f, 0xff});
	check_pkglen(4096, 3, (const uint8_t[]){0x80, 0x00, 0x01});
	check_pkglen(0xfffff, 3, (const uint8_t[]){0x8f, 0xff, 0xff});
	check_pkglen(0x100000, 4, (const uint8_t[]){0xc0, 0x00, 0x00, 0x01});
	check_pkglen(0x1234567, 4, (const uint8_t[]){0xc7, 0x56, 0x34, 0x12});
	check_pkglen(AML_PKGLEN_MAX, 4, (const uint8_t[]){0xcf, 0xff, 0xff, 0xff});
	uint8_t out[4];
	assert_int_equal(aml_pkglen(out, AML_PKGLEN_MAX + 1), 0);
	assert_int_equal(aml_pkglen(out, 0xffffffffu), 0);

	/* A construct's PkgLength counts itself: Buffer () with n bytes has BufferSize (2 or 3
	 * bytes here) and n bytes behind it, and the length grows a byte exactly where the value
	 * with itself included stops fitting. */
	static const struct {
		size_t n;
		size_t pkglen_bytes;
		uint32_t value;
	} cases[] = {
	    {60, 1, 63},           /* 2 + 60 + 1 */
	    {61, 2, 65},           /* 2 + 61 + 2: 64 would not fit one byte */
	    {0xff, 2, 0x103},      /* 2 + 255 + 2 */
	    {0x100, 2, 0x105},     /* a Word BufferSize: 3 + 256 + 2 */
	    {4090, 2, 4095},       /* 3 + 4090 + 2 */
	    {4091, 3, 4097},       /* 3 + 4091 + 3: 4096 would not fit two */
	    {0xfff00, 3, 0xfff08}, /* a DWord BufferSize */
	    {0xffff7, 3, 0xfffff}, /* 5 + 0xffff7 + 3 */
	    {0xffff8, 4, 0x100001},
	};
	size_t cap = 0x100010;
	uint8_t *buf = malloc(cap), *payload = calloc(1, 0xffff8);
	assert_non_null(buf);
	assert_non_null(payload);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct aml a;
		aml_init(&a, buf, cap);
		memset(payload, 0xa5, cases[i].n);
		aml_buffer(&a, payload, cases[i].n);
		assert_false(a.err);
		assert_int_equal(buf[0], 0x11);
		uint32_t value = 0;
		assert_int_equal(dec_pkglen(buf + 1, a.len - 1, &value), cases[i].pkglen_bytes);
		assert_int_equal(value, cases[i].value);
		assert_int_equal(a.len, 1 + value); /* the opcode, then what the length covers */
		size_t at = 1 + cases[i].pkglen_bytes;
		assert_int_equal(expect_int(buf, &at, a.len), cases[i].n);
		assert_int_equal(a.len - at, cases[i].n);
		assert_int_equal(buf[at], 0xa5);
		assert_int_equal(buf[a.len - 1], 0xa5);
	}
	free(payload);
	free(buf);
}

static void test_aml_integers(void **state)
{
	(void)state;
	EXPECT_AML(aml_integer(&a_, 0), 0x00);
	EXPECT_AML(aml_integer(&a_, 1), 0x01);
	EXPECT_AML(aml_integer(&a_, 2), 0x0a, 0x02);
	EXPECT_AML(aml_integer(&a_, 0xff), 0x0a, 0xff);
	EXPECT_AML(aml_integer(&a_, 0x100), 0x0b, 0x00, 0x01);
	EXPECT_AML(aml_integer(&a_, 0xffff), 0x0b, 0xff, 0xff);
	EXPECT_AML(aml_integer(&a_, 0x10000), 0x0c, 0x00, 0x00, 0x01, 0x00);
	EXPECT_AML(aml_integer(&a_, 0x1234567), 0x0c, 0x67, 0x45, 0x23, 0x01);
	EXPECT_AML(aml_integer(&a_, 0xffffffff), 0x0c, 0xff, 0xff, 0xff, 0xff);
	EXPECT_AML(aml_integer(&a_, 0x100000000ull), 0x0e, 0, 0, 0, 0, 1, 0, 0, 0);
	EXPECT_AML(aml_integer(&a_, 0x0123456789abcdefull), 0x0e, 0xef, 0xcd, 0xab, 0x89, 0x67,
		   0x45, 0x23, 0x01);
	EXPECT_AML(aml_integer(&a_, UINT64_MAX), 0x0e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		   0xff);

	/* EISA IDs: PNP0A03 is 0x030ad041 (the PCI host bridge), PNP0501 0x0105d041 (a 16550). */
	EXPECT_AML(aml_eisaid(&a_, "PNP0A03"), 0x0c, 0x41, 0xd0, 0x0a, 0x03);
	EXPECT_AML(aml_eisaid(&a_, "PNP0501"), 0x0c, 0x41, 0xd0, 0x05, 0x01);
	EXPECT_AML(aml_eisaid(&a_, "ABZ00FF"), 0x0c, 0x04, 0x5a, 0x00, 0xff);
	EXPECT_AML(aml_eisaid(&a_, "ZZZFFFF"), 0x0c, 0x6b, 0x5a, 0xff, 0xff);
	static const char *const bad_ids[] = {"pnp0a03",  "PNP0a03", "PN00A03", "PNP0A0",
					      "PNP0A033", "PNP0G03", "@NP0A03", ""};
	for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++)
		EXPECT_AML_ERR(aml_eisaid(&a_, bad_ids[i]));
}

static void test_aml_names(void **state)
{
	(void)state;
	EXPECT_AML(aml_namestring(&a_, "_S5"), '_', 'S', '5', '_');
	EXPECT_AML(aml_namestring(&a_, "PCI0"), 'P', 'C', 'I', '0');
	EXPECT_AML(aml_namestring(&a_, "A"), 'A', '_', '_', '_');
	EXPECT_AML(aml_namestring(&a_, "\\_SB"), '\\', '_', 'S', 'B', '_');
	EXPECT_AML(aml_namestring(&a_, "\\_SB.PCI0"), '\\', 0x2e, '_', 'S', 'B', '_', 'P', 'C', 'I',
		   '0');
	EXPECT_AML(aml_namestring(&a_, "_SB.PCI0.ISA"), 0x2f, 3, '_', 'S', 'B', '_', 'P', 'C', 'I',
		   '0', 'I', 'S', 'A', '_');
	EXPECT_AML(aml_namestring(&a_, "^^FOO"), '^', '^', 'F', 'O', 'O', '_');
	EXPECT_AML(aml_namestring(&a_, "\\"), '\\', 0x00);
	EXPECT_AML(aml_namestring(&a_, ""), 0x00);
	static const char *const bad[] = {"pci0", "0ABC", "ABCDE", "A..B", "A.",   ".A",
					  "\\^A", "^\\A", "A-B",   "A B",  "_SB.", "\\\\A"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		EXPECT_AML_ERR(aml_namestring(&a_, bad[i]));

	/* A MultiNamePath counts its segments in a byte: 255 of them, not 256. */
	char path[256 * 2 + 1] = {0};
	for (size_t i = 0; i < 256; i++)
		memcpy(path + 2 * i, ".A", 2);
	size_t cut = 2 * (size_t)255;
	path[cut] = 0; /* ".A" 255 times */
	uint8_t buf[2048];
	struct aml a;
	aml_init(&a, buf, sizeof(buf));
	aml_namestring(&a, path + 1);
	assert_false(a.err);
	assert_int_equal(a.len, 2 + 255 * 4);
	assert_int_equal(buf[0], 0x2f);
	assert_int_equal(buf[1], 255);
	path[cut] = '.'; /* 256 */
	EXPECT_AML_ERR(aml_namestring(&a_, path + 1));
}

static void test_aml_nesting(void **state)
{
	(void)state;
	/* Scope (\_SB) { Device (PCI0) { Name (_UID, Zero) } }: each length covers itself, the
	 * name and the contents, inner ones included. */
	EXPECT_AML(
	    {
		    size_t s = aml_scope(&a_, "\\_SB");
		    size_t d = aml_device(&a_, "PCI0");
		    aml_name(&a_, "_UID");
		    aml_integer(&a_, 0);
		    aml_end(&a_, d);
		    aml_end(&a_, s);
	    },
	    0x10, 19, '\\', '_', 'S', 'B', '_', 0x5b, 0x82, 11, 'P', 'C', 'I', '0', 0x08, '_', 'U',
	    'I', 'D', 0x00);
	/* Package () { 1, Package () { 0x1234 } } and a resource template's Buffer. */
	EXPECT_AML(
	    {
		    size_t p = aml_package(&a_, 2);
		    aml_integer(&a_, 1);
		    size_t q = aml_package(&a_, 1);
		    aml_integer(&a_, 0x1234);
		    aml_end(&a_, q);
		    aml_end(&a_, p);
	    },
	    0x12, 9, 2, 0x01, 0x12, 5, 1, 0x0b, 0x34, 0x12);
	EXPECT_AML(aml_buffer(&a_, (const uint8_t[]){0x79, 0x00}, 2), 0x11, 5, 0x0a, 2, 0x79, 0x00);
	EXPECT_AML(aml_buffer(&a_, NULL, 0), 0x11, 2, 0x00);

	/* A stream that runs out of room, or a name that is not one, fails as a whole and writes
	 * nothing past its buffer. */
	uint8_t buf[8];
	memset(buf, 0xee, sizeof(buf));
	struct aml a;
	aml_init(&a, buf, 5);
	aml_bytes(&a, "\x01\x02\x03\x04\x05", 5);
	assert_false(a.err);
	aml_integer(&a, 0);
	assert_true(a.err);
	assert_int_equal(a.len, 5);
	aml_integer(&a, 0);
	assert_int_equal(a.len, 5);
	assert_int_equal(buf[5], 0xee);

	/* Room for a package's contents but not for its length: an error. */
	memset(buf, 0xee, sizeof(buf));
	aml_init(&a, buf, 3);
	size_t p = aml_package(&a, 1);
	aml_integer(&a, 0);
	assert_false(a.err);
	aml_end(&a, p);
	assert_true(a.err);
	assert_int_equal(buf[3], 0xee);

	EXPECT_AML_ERR({
		size_t d = aml_device(&a_, "pci0");
		aml_end(&a_, d);
	});
	EXPECT_AML_ERR(aml_end(&a_, 1)); /* a mark past the end */
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
	t->cfg.smp = 1; /* and no RAM: the device does not reach it */
	static const char *const types[] = {"acpi_pm", NULL};
	if (test_vm_init(&t->vm, &t->cfg, &test_engine) < 0 ||
	    test_vm_add_devices(&t->vm, types) < 0)
		return -1;
	t->dev = t->vm.devices;
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct tvm *t = *state;
	test_vm_destroy(&t->vm);
	free(t);
	return 0;
}

static uint32_t in(struct tvm *t, uint16_t port, unsigned size)
{
	return (uint32_t)test_bus_rd(&t->vm.pio, port, size);
}

static void out(struct tvm *t, uint16_t port, uint32_t v, unsigned size)
{
	test_bus_wr(&t->vm.pio, port, v, size);
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
	    cmocka_unit_test(test_layout),
	    cmocka_unit_test(test_dsdt_pci),
	    cmocka_unit_test_setup_teardown(test_dsdt_iasl, make_tmpdir, remove_tmpdir),
	    cmocka_unit_test(test_aml_pkglen),
	    cmocka_unit_test(test_aml_integers),
	    cmocka_unit_test(test_aml_names),
	    cmocka_unit_test(test_aml_nesting),
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
