/* ACPI tables (ACPI 6.3 layouts) for a PC with legacy fixed hardware: Linux finds the CPUs,
 * the I/O APIC and the interrupt overrides in the MADT, the PCI root bridge (its windows and
 * INTx routing) in the DSDT, powers off through PM1a_CNT with the \_S5 sleep type and resets
 * through the FADT's RESET_REG. There is no firmware: SMI_CMD is 0, so the machine is in ACPI
 * mode from the start, and the FACS is there because a non-hardware-reduced FADT must point to
 * one.
 *
 * Layout from ACPI_TABLES_ADDR (0xe0000), every table 16-byte aligned, all inside one 16 KiB
 * area that ends below the MP table at 0xf0000:
 *   +0x000  RSDP  36 bytes, revision 2: RSDT and XSDT addresses
 *   +0x040  FACS  64 bytes (must be 64-byte aligned)
 *   +0x080  RSDT  36 + 4 * 2: FADT, MADT
 *   +0x0c0  XSDT  36 + 8 * 2: FADT, MADT
 *   +0x100  FADT  276 bytes, revision 6.3: FACS, DSDT, PM1a event/control, PM timer, reset
 *   +0x220  MADT  44 + 8 * ncpus + 12 + 2 * 10 + 6 (at most 0x842 bytes for 254 CPUs)
 *   +0xa70  DSDT  36 + AML (1772 bytes in all), built below; the rest of the area is its room
 *
 * The DSDT:
 *   Name (_S5, Package () { 5, 5, 0, 0 })
 *   Scope (_SB) {
 *     Device (PCI0) {       the host bridge of dev/pci.h: bus 0, configuration mechanism #1
 *       _HID PNP0A03, _UID 0, _BBN 0, _SEG 0
 *       _CRS  bus numbers 0-0xff, the configuration ports 0xcf8-0xcff, the I/O ports on either
 *             side of them, the VGA hole and the 32-bit PCI memory window
 *       _PRT  slots 1-31, INTA#-INTD# -> GSI PCI_INTX_GSI(slot, pin)
 *     }
 *   }
 * No _ADR next to the _HID: a device has one or the other (ACPI 6.3 section 6.1). */
#include <string.h>

#include "arch/x86/acpi.h"
#include "arch/x86/boot.h"
#include "dev/ioapic.h"
#include "dev/pci.h"
#include "util/log.h"

#define OFF_RSDP        0x000
#define OFF_FACS        0x040
#define OFF_RSDT        0x080
#define OFF_XSDT        0x0c0
#define OFF_FADT        0x100
#define OFF_MADT        0x220
#define OFF_DSDT        0xa70
#define DSDT_MAX        (ACPI_TABLES_MAX - OFF_DSDT)

#define HDR_SIZE        36 /* the common system description table header */
#define RSDP_SIZE       36
#define RSDP_V1_SIZE    20 /* what the first checksum covers */
#define FACS_SIZE       64
#define FADT_SIZE       276
#define NTABLES         2 /* listed in the RSDT/XSDT: FADT, MADT */
#define MADT_HDR_SIZE   44
#define MADT_LAPIC_LEN  8
#define MADT_IOAPIC_LEN 12
#define MADT_ISO_LEN    10
#define MADT_NMI_LEN    6
#define MADT_MAX_SIZE                                                                              \
	(MADT_HDR_SIZE + ACPI_MAX_CPUS * MADT_LAPIC_LEN + MADT_IOAPIC_LEN + 2 * MADT_ISO_LEN +     \
	 MADT_NMI_LEN)

_Static_assert(OFF_FACS % 64 == 0, "the FACS must be 64-byte aligned");
_Static_assert(OFF_RSDT >= OFF_FACS + FACS_SIZE, "FACS overlaps the RSDT");
_Static_assert(OFF_XSDT >= OFF_RSDT + HDR_SIZE + 4 * NTABLES, "RSDT overlaps the XSDT");
_Static_assert(OFF_FADT >= OFF_XSDT + HDR_SIZE + 8 * NTABLES, "XSDT overlaps the FADT");
_Static_assert(OFF_MADT >= OFF_FADT + FADT_SIZE, "FADT overlaps the MADT");
_Static_assert(OFF_DSDT >= OFF_MADT + MADT_MAX_SIZE && OFF_DSDT % 16 == 0,
	       "the MADT overlaps the DSDT");
_Static_assert(DSDT_MAX >= 0x1000, "too little room for the DSDT"); /* it takes 1.7 KiB */
_Static_assert(ACPI_TABLES_ADDR % 16 == 0 && ACPI_TABLES_ADDR >= 0xe0000 &&
		   ACPI_TABLES_ADDR + ACPI_TABLES_MAX <= BOOT_MPTABLE_ADDR,
	       "the tables belong in the scanned BIOS area, below the MP table");

/* FADT */
#define FADT_REVISION       6
#define FADT_MINOR_REVISION 3
#define FADT_WBINVD         (1u << 0)
#define FADT_PROC_C1        (1u << 2)
#define FADT_PWR_BUTTON     (1u << 4) /* set: no fixed-feature power button */
#define FADT_SLP_BUTTON     (1u << 5) /* set: no fixed-feature sleep button */
#define FADT_FIX_RTC        (1u << 6) /* set: no RTC wake status in PM1 */
#define FADT_TMR_VAL_EXT    (1u << 8) /* 32-bit PM timer */
#define FADT_RESET_REG_SUP  (1u << 10)
#define BOOT_LEGACY_DEVICES (1u << 0)
#define BOOT_8042           (1u << 1)
#define BOOT_NO_VGA         (1u << 2) /* ferry has no VGA for a guest to probe */
#define C2_NOT_SUPPORTED    101       /* P_LVL2_LAT above 100 us */
#define C3_NOT_SUPPORTED    1001      /* P_LVL3_LAT above 1000 us */

/* Generic address structure */
#define GAS_SYSTEM_IO 1
#define GAS_BYTE      1
#define GAS_WORD      2
#define GAS_DWORD     3

/* MADT */
#define MADT_REVISION    5
#define MADT_PCAT_COMPAT 1u
#define MADT_LAPIC       0
#define MADT_IOAPIC      1
#define MADT_ISO         2
#define MADT_LAPIC_NMI   4
#define LAPIC_ENABLED    1u
#define IOAPIC_ADDR      0xfec00000u
#define ISA_BUS          0
#define ISO_ACTIVE_HIGH  0x1
#define ISO_EDGE         (0x1 << 2)
#define ISO_LEVEL        (0x3 << 2)
#define ALL_PROCESSORS   0xff
#define NMI_LINT         1

/* The GSIs the _PRT names are I/O APIC inputs above the ISA ones (the MADT's I/O APIC has GSI
 * base 0), and nothing overrides them: a GSI from a _PRT is level-triggered, active low. */
_Static_assert(PCI_INTX_GSI_BASE >= 16 && PCI_INTX_GSI_BASE + PCI_INTX_GSIS <= IOAPIC_NPINS,
	       "the PCI interrupts are not I/O APIC inputs above the ISA IRQs");

/* AML opcodes and prefixes */
#define AML_ZERO       0x00
#define AML_ONE        0x01
#define AML_NAME       0x08
#define AML_BYTE       0x0a
#define AML_WORD       0x0b
#define AML_DWORD      0x0c
#define AML_QWORD      0x0e
#define AML_SCOPE      0x10
#define AML_BUFFER     0x11
#define AML_PACKAGE    0x12
#define AML_DUAL_NAME  0x2e
#define AML_MULTI_NAME 0x2f
#define AML_EXT        0x5b
#define AML_EXT_DEVICE 0x82
#define AML_ROOT       '\\'
#define AML_PARENT     '^'
#define AML_NULL_NAME  0x00
#define AML_SEG_LEN    4
#define AML_MAX_SEGS   255 /* a MultiNamePath's SegCount is a byte */
#define AML_DSDT_REV   2   /* revision 2: 64-bit AML integers */

/* Resource descriptors (ACPI 6.3 section 6.4) */
#define RES_IO          0x47 /* small item: I/O port, 7 bytes */
#define RES_IO_DECODE16 0x01 /* the device decodes all 16 address bits */
#define RES_END         0x79 /* small item: end tag, 1 byte (checksum; 0: none) */
#define RES_DWORD       0x87 /* large item: DWord address space, 23 bytes */
#define RES_DWORD_LEN   23
#define RES_WORD        0x88 /* large item: Word address space, 13 bytes */
#define RES_WORD_LEN    13
#define SPACE_MEM       0
#define SPACE_IO        1
#define SPACE_BUS       2
/* General flags: _MIF and _MAF (a fixed window), positive decode, and bit 0 clear: the bridge
 * produces the range for the devices below it. */
#define WINDOW_FIXED    0x0c
#define IO_ENTIRE_RANGE 0x03 /* _RNG: ISA and non-ISA ports */
#define MEM_RW          0x01
#define MEM_CACHEABLE   (1 << 1)

/* The root bridge's windows. I/O: every port but the configuration block, as a PC's firmware
 * publishes it; the I/O BAR window lies in the upper part. Memory: the VGA hole and the 32-bit
 * BAR window, which ends below the I/O APIC and local APICs. */
#define CFG_PORTS     8 /* CONFIG_ADDRESS and CONFIG_DATA, 0xcf8-0xcff */
#define IO_LOW_END    (PCI_CONFIG_ADDR_PORT - 1)
#define IO_HIGH_START (PCI_CONFIG_ADDR_PORT + CFG_PORTS)
#define VGA_BASE      0xa0000u
#define VGA_SIZE      0x20000u
#define INTX_PINS     4                             /* INTA#..INTD# */
#define PRT_ENTRIES   ((PCI_SLOTS - 1) * INTX_PINS) /* slot 0, the host bridge, has none */
_Static_assert(PCI_CONFIG_DATA_PORT + 4 == IO_HIGH_START, "the configuration ports moved");
_Static_assert(PCI_IO_BASE >= IO_HIGH_START && PCI_IO_BASE + PCI_IO_SIZE <= 0x10000,
	       "the I/O BAR window is outside the bridge's I/O ranges");
_Static_assert(PCI_MMIO_BASE >= 0x100000 && PCI_MMIO_BASE + PCI_MMIO_SIZE <= IOAPIC_ADDR,
	       "the PCI memory window must lie between 1 MiB and the I/O APIC");
_Static_assert(PRT_ENTRIES <= 0xff, "the _PRT is a Package: at most 255 elements");

static void w8(uint8_t *b, size_t off, uint8_t v)
{
	b[off] = v;
}

static void w16(uint8_t *b, size_t off, uint16_t v)
{
	memcpy(b + off, &v, 2); /* x86 hosts only: guest and host are both little-endian */
}

static void w32(uint8_t *b, size_t off, uint32_t v)
{
	memcpy(b + off, &v, 4);
}

static void w64(uint8_t *b, size_t off, uint64_t v)
{
	memcpy(b + off, &v, 8);
}

/* A fixed-width identifier field: signatures and OEM strings, space-padded, no NUL. */
static void put_id(uint8_t *b, size_t off, const char *id, size_t n)
{
	memcpy(b + off, id, n);
}

/* The byte that makes the sum of p[0..n) zero. */
static uint8_t checksum(const uint8_t *p, size_t n)
{
	uint8_t sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += p[i];
	return (uint8_t)-sum;
}

static void header(uint8_t *t, const char sig[4], uint32_t len, uint8_t rev)
{
	put_id(t, 0, sig, 4);
	w32(t, 4, len);
	w8(t, 8, rev);
	put_id(t, 10, "FERRY ", 6);   /* OEM ID */
	put_id(t, 16, "FERRYVM ", 8); /* OEM table ID */
	w32(t, 24, 1);                /* OEM revision */
	put_id(t, 28, "FRRY", 4);     /* creator ID */
	w32(t, 32, 1);                /* creator revision */
}

/* Sets the checksum of the table at t once its contents are complete. */
static void seal(uint8_t *t)
{
	uint32_t len;
	memcpy(&len, t + 4, 4);
	t[9] = 0;
	t[9] = checksum(t, len);
}

static void gas(uint8_t *b, size_t off, uint8_t bit_width, uint8_t access, uint64_t addr)
{
	w8(b, off, GAS_SYSTEM_IO);
	w8(b, off + 1, bit_width);
	w8(b, off + 2, 0); /* bit offset */
	w8(b, off + 3, access);
	w64(b, off + 4, addr);
}

static void put_fadt(uint8_t *t)
{
	header(t, "FACP", FADT_SIZE, FADT_REVISION);
	/* Both the 32- and 64-bit pointers, equal: older readers take the first. */
	w32(t, 36, ACPI_TABLES_ADDR + OFF_FACS);
	w32(t, 40, ACPI_TABLES_ADDR + OFF_DSDT);
	w8(t, 45, 0); /* preferred PM profile: unspecified */
	w16(t, 46, ACPI_SCI_IRQ);
	w32(t, 48, 0); /* SMI_CMD: none, ACPI mode is permanent (and ACPI_ENABLE etc. are 0) */
	w32(t, 56, ACPI_PM1A_EVT);
	w32(t, 64, ACPI_PM1A_CNT);
	w32(t, 76, ACPI_PM_TMR);
	w8(t, 88, ACPI_PM1_EVT_LEN);
	w8(t, 89, ACPI_PM1_CNT_LEN);
	w8(t, 91, ACPI_PM_TMR_LEN);
	w16(t, 96, C2_NOT_SUPPORTED);
	w16(t, 98, C3_NOT_SUPPORTED);
	w8(t, 108, ACPI_CENTURY_CMOS);
	w16(t, 109, BOOT_LEGACY_DEVICES | BOOT_8042 | BOOT_NO_VGA);
	w32(t, 112,
	    FADT_WBINVD | FADT_PROC_C1 | FADT_PWR_BUTTON | FADT_SLP_BUTTON | FADT_FIX_RTC |
		FADT_TMR_VAL_EXT | FADT_RESET_REG_SUP);
	gas(t, 116, 8, GAS_BYTE, ACPI_RESET_PORT);
	w8(t, 128, ACPI_RESET_VALUE);
	w8(t, 131, FADT_MINOR_REVISION);
	w64(t, 132, ACPI_TABLES_ADDR + OFF_FACS);
	w64(t, 140, ACPI_TABLES_ADDR + OFF_DSDT);
	gas(t, 148, 8 * ACPI_PM1_EVT_LEN, GAS_WORD, ACPI_PM1A_EVT);
	gas(t, 172, 8 * ACPI_PM1_CNT_LEN, GAS_WORD, ACPI_PM1A_CNT);
	gas(t, 208, 8 * ACPI_PM_TMR_LEN, GAS_DWORD, ACPI_PM_TMR);
	/* PM1b, PM2, GPE blocks, sleep control/status (hardware-reduced only) and the
	 * hypervisor vendor identity stay zero: absent. */
	seal(t);
}

static void put_facs(uint8_t *t)
{
	put_id(t, 0, "FACS", 4);
	w32(t, 4, FACS_SIZE);
	/* Hardware signature, waking vectors, global lock and flags are 0: there is no S4BIOS
	 * and nothing ever wakes from a sleep state. */
	w8(t, 32, 2); /* version */
}

/* ---- AML ---------------------------------------------------------------------------------- */

void aml_init(struct aml *a, uint8_t *buf, size_t cap)
{
	*a = (struct aml){.buf = buf, .cap = cap};
}

void aml_bytes(struct aml *a, const void *p, size_t n)
{
	if (a->err || n > a->cap - a->len) {
		a->err = true;
		return;
	}
	if (n == 0)
		return; /* p may be NULL then */
	memcpy(a->buf + a->len, p, n);
	a->len += n;
}

static void aml_byte(struct aml *a, uint8_t b)
{
	aml_bytes(a, &b, 1);
}

size_t aml_pkglen(uint8_t out[4], uint32_t value)
{
	if (value > AML_PKGLEN_MAX)
		return 0;
	if (value < 0x40) { /* one byte: bits 0-5 */
		out[0] = (uint8_t)value;
		return 1;
	}
	/* Lead byte: the count of following bytes in bits 6-7, the low nibble in bits 0-3; the
	 * following bytes carry the rest, 8 bits each. */
	size_t n = value < 0x1000 ? 2 : value < 0x100000 ? 3 : 4;
	out[0] = (uint8_t)((n - 1) << 6 | (value & 0xf));
	for (size_t i = 1; i < n; i++)
		out[i] = (uint8_t)(value >> (4 + 8 * (i - 1)));
	return n;
}

void aml_integer(struct aml *a, uint64_t v)
{
	uint8_t b[9];
	size_t n;
	/* No OnesOp: its value depends on the table revision. */
	if (v <= 1) {
		aml_byte(a, v ? AML_ONE : AML_ZERO);
		return;
	}
	if (v <= 0xff) {
		b[0] = AML_BYTE;
		n = 1;
	} else if (v <= 0xffff) {
		b[0] = AML_WORD;
		n = 2;
	} else if (v <= 0xffffffff) {
		b[0] = AML_DWORD;
		n = 4;
	} else {
		b[0] = AML_QWORD;
		n = 8;
	}
	w64(b, 1, v); /* little-endian: the low n bytes are the value */
	aml_bytes(a, b, 1 + n);
}

/* The length of the NameSeg at p (ended by '.' or the end of the path), 0 if it is not one. */
static size_t seg_len(const char *p)
{
	size_t n = 0;
	for (; p[n] && p[n] != '.'; n++) {
		char c = p[n];
		bool lead = (c >= 'A' && c <= 'Z') || c == '_';
		if (n == AML_SEG_LEN || !(lead || (n > 0 && c >= '0' && c <= '9')))
			return 0;
	}
	return n;
}

void aml_namestring(struct aml *a, const char *path)
{
	const char *p = path;
	if (*p == AML_ROOT)
		aml_byte(a, (uint8_t)*p++);
	else
		while (*p == AML_PARENT)
			aml_byte(a, (uint8_t)*p++);
	/* Check the segments and count them first: the prefix depends on the count. */
	size_t nsegs = 0;
	for (const char *q = p; *q; nsegs++) {
		size_t n = seg_len(q);
		if (n == 0 || nsegs == AML_MAX_SEGS || (q[n] == '.' && !q[n + 1])) {
			a->err = true;
			return;
		}
		q += n + (q[n] == '.');
	}
	if (nsegs == 0)
		aml_byte(a, AML_NULL_NAME);
	else if (nsegs == 2)
		aml_byte(a, AML_DUAL_NAME);
	else if (nsegs > 2) {
		aml_byte(a, AML_MULTI_NAME);
		aml_byte(a, (uint8_t)nsegs);
	}
	while (*p) {
		size_t n = seg_len(p);
		char seg[AML_SEG_LEN] = {'_', '_', '_', '_'};
		memcpy(seg, p, n);
		aml_bytes(a, seg, AML_SEG_LEN);
		p += n + (p[n] == '.');
	}
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

void aml_eisaid(struct aml *a, const char *id)
{
	/* Letters are 5 bits each ('A' = 1), packed big-endian into the first two bytes; the
	 * four hex digits follow as two bytes, in order. */
	uint8_t b[5] = {AML_DWORD};
	unsigned letters[3];
	for (size_t i = 0; i < 3; i++) {
		if (id[i] < 'A' || id[i] > 'Z') {
			a->err = true;
			return;
		}
		letters[i] = (unsigned)(id[i] - '@');
	}
	b[1] = (uint8_t)(letters[0] << 2 | letters[1] >> 3);
	b[2] = (uint8_t)((letters[1] & 7) << 5 | letters[2]);
	for (size_t i = 0; i < 2; i++) {
		int hi = hex_digit(id[3 + 2 * i]), lo = hi < 0 ? -1 : hex_digit(id[4 + 2 * i]);
		if (lo < 0) {
			a->err = true;
			return;
		}
		b[3 + i] = (uint8_t)(hi << 4 | lo);
	}
	if (id[7]) {
		a->err = true;
		return;
	}
	aml_bytes(a, b, sizeof(b));
}

void aml_name(struct aml *a, const char *path)
{
	aml_byte(a, AML_NAME);
	aml_namestring(a, path);
}

size_t aml_scope(struct aml *a, const char *path)
{
	aml_byte(a, AML_SCOPE);
	size_t mark = a->len;
	aml_namestring(a, path);
	return mark;
}

size_t aml_device(struct aml *a, const char *path)
{
	aml_byte(a, AML_EXT);
	aml_byte(a, AML_EXT_DEVICE);
	size_t mark = a->len;
	aml_namestring(a, path);
	return mark;
}

size_t aml_package(struct aml *a, uint8_t nelems)
{
	aml_byte(a, AML_PACKAGE);
	size_t mark = a->len;
	aml_byte(a, nelems);
	return mark;
}

/* The PkgLength goes in front of what was written since mark, so the contents move up by its
 * size, the fewest bytes that hold it. */
void aml_end(struct aml *a, size_t mark)
{
	if (a->err || mark > a->len) {
		a->err = true;
		return;
	}
	size_t body = a->len - mark;
	uint8_t enc[4];
	size_t n = 0;
	for (size_t k = 1; k <= 4 && n == 0; k++)
		if (body <= AML_PKGLEN_MAX - k && aml_pkglen(enc, (uint32_t)(body + k)) == k)
			n = k;
	if (n == 0 || n > a->cap - a->len) {
		a->err = true;
		return;
	}
	memmove(a->buf + mark + n, a->buf + mark, body);
	memcpy(a->buf + mark, enc, n);
	a->len += n;
}

void aml_buffer(struct aml *a, const uint8_t *p, size_t n)
{
	aml_byte(a, AML_BUFFER);
	size_t mark = a->len;
	aml_integer(a, n); /* BufferSize */
	aml_bytes(a, p, n);
	aml_end(a, mark);
}

/* ---- the DSDT ----------------------------------------------------------------------------- */

/* An I/O port descriptor for len ports at a fixed base. */
static void res_io(struct aml *r, uint16_t base, uint8_t len)
{
	uint8_t d[8] = {RES_IO, RES_IO_DECODE16};
	w16(d, 2, base); /* minimum base */
	w16(d, 4, base); /* maximum base */
	w8(d, 6, 1);     /* alignment */
	w8(d, 7, len);
	aml_bytes(r, d, sizeof(d));
}

/* A fixed window [min, max] the bridge produces, in a Word address space descriptor
 * (granularity and translation 0). */
static void res_word(struct aml *r, uint8_t space, uint8_t type_flags, uint16_t min, uint16_t max)
{
	uint32_t len = (uint32_t)max - min + 1;
	if (max < min || len > 0xffff) {
		r->err = true;
		return;
	}
	uint8_t d[3 + RES_WORD_LEN] = {RES_WORD, RES_WORD_LEN, 0, space, WINDOW_FIXED, type_flags};
	w16(d, 8, min);
	w16(d, 10, max);
	w16(d, 14, (uint16_t)len);
	aml_bytes(r, d, sizeof(d));
}

/* A fixed memory window [base, base + size) below 4 GiB, in a DWord address space descriptor. */
static void res_dword_mem(struct aml *r, uint8_t type_flags, uint64_t base, uint64_t size)
{
	if (size == 0 || base > 0xffffffffu || size > 0x100000000ull - base) {
		r->err = true;
		return;
	}
	uint8_t d[3 + RES_DWORD_LEN] = {RES_DWORD, RES_DWORD_LEN, 0,
					SPACE_MEM, WINDOW_FIXED,  type_flags};
	w32(d, 10, (uint32_t)base);
	w32(d, 14, (uint32_t)(base + size - 1));
	w32(d, 22, (uint32_t)size);
	aml_bytes(r, d, sizeof(d));
}

/* Name (_CRS, ResourceTemplate () { ... }) of the root bridge. */
static void put_crs(struct aml *a)
{
	uint8_t buf[128];
	struct aml r;
	aml_init(&r, buf, sizeof(buf));
	res_word(&r, SPACE_BUS, 0, 0, 0xff);
	res_io(&r, PCI_CONFIG_ADDR_PORT, CFG_PORTS);
	res_word(&r, SPACE_IO, IO_ENTIRE_RANGE, 0, IO_LOW_END);
	res_word(&r, SPACE_IO, IO_ENTIRE_RANGE, IO_HIGH_START, 0xffff);
	res_dword_mem(&r, MEM_RW | MEM_CACHEABLE, VGA_BASE, VGA_SIZE);
	res_dword_mem(&r, MEM_RW, PCI_MMIO_BASE, PCI_MMIO_SIZE);
	static const uint8_t end[] = {RES_END, 0};
	aml_bytes(&r, end, sizeof(end));
	if (r.err) {
		a->err = true;
		return;
	}
	aml_name(a, "_CRS");
	aml_buffer(a, buf, r.len);
}

/* Name (_PRT, Package () { Package () { slot << 16 | 0xffff, pin, 0, GSI }, ... }): source 0
 * makes the last field a GSI, which the OS programs level-triggered and active low. */
static void put_prt(struct aml *a)
{
	aml_name(a, "_PRT");
	size_t prt = aml_package(a, PRT_ENTRIES);
	for (unsigned slot = 1; slot < PCI_SLOTS; slot++)
		for (unsigned pin = 0; pin < INTX_PINS; pin++) {
			size_t e = aml_package(a, 4);
			aml_integer(a, (uint64_t)slot << 16 | 0xffff); /* every function */
			aml_integer(a, pin);
			aml_integer(a, 0); /* source */
			aml_integer(a, PCI_INTX_GSI(slot, pin));
			aml_end(a, e);
		}
	aml_end(a, prt);
}

/* Builds the DSDT at t, in at most max bytes; returns its length, 0 if it does not fit. */
static size_t put_dsdt(uint8_t *t, size_t max)
{
	struct aml a;
	if (max < HDR_SIZE)
		return 0;
	aml_init(&a, t + HDR_SIZE, max - HDR_SIZE);
	aml_name(&a, "_S5"); /* SLP_TYPa, SLP_TYPb, two reserved */
	size_t s5 = aml_package(&a, 4);
	aml_integer(&a, ACPI_SLP_TYP_S5);
	aml_integer(&a, ACPI_SLP_TYP_S5);
	aml_integer(&a, 0);
	aml_integer(&a, 0);
	aml_end(&a, s5);

	size_t sb = aml_scope(&a, "_SB"); /* the root scope's \_SB */
	size_t pci0 = aml_device(&a, "PCI0");
	aml_name(&a, "_HID");
	aml_eisaid(&a, "PNP0A03"); /* PCI host bridge */
	aml_name(&a, "_UID");
	aml_integer(&a, 0);
	aml_name(&a, "_BBN");
	aml_integer(&a, 0);
	aml_name(&a, "_SEG");
	aml_integer(&a, 0);
	put_crs(&a);
	put_prt(&a);
	aml_end(&a, pci0);
	aml_end(&a, sb);
	if (a.err)
		return 0;

	size_t len = HDR_SIZE + a.len;
	header(t, "DSDT", (uint32_t)len, AML_DSDT_REV);
	seal(t);
	return len;
}

static size_t put_iso(uint8_t *t, size_t off, uint8_t irq, uint32_t gsi, uint16_t flags)
{
	w8(t, off, MADT_ISO);
	w8(t, off + 1, MADT_ISO_LEN);
	w8(t, off + 2, ISA_BUS);
	w8(t, off + 3, irq);
	w32(t, off + 4, gsi);
	w16(t, off + 8, flags);
	return off + MADT_ISO_LEN;
}

static void put_madt(uint8_t *t, unsigned ncpus)
{
	size_t off = MADT_HDR_SIZE;
	w32(t, 36, (uint32_t)APIC_DEFAULT_BASE);
	w32(t, 40, MADT_PCAT_COMPAT); /* the 8259 pair is there (and masked by the guest) */
	for (unsigned i = 0; i < ncpus; i++) {
		w8(t, off, MADT_LAPIC);
		w8(t, off + 1, MADT_LAPIC_LEN);
		w8(t, off + 2, (uint8_t)i); /* ACPI processor UID */
		w8(t, off + 3, (uint8_t)i); /* APIC ID, as the engines number the vCPUs */
		w32(t, off + 4, LAPIC_ENABLED);
		off += MADT_LAPIC_LEN;
	}
	w8(t, off, MADT_IOAPIC);
	w8(t, off + 1, MADT_IOAPIC_LEN);
	w8(t, off + 2, (uint8_t)ncpus); /* the I/O APIC ID follows the CPUs', as in the MP table */
	w8(t, off + 3, 0);
	w32(t, off + 4, IOAPIC_ADDR);
	w32(t, off + 8, 0); /* GSI base */
	off += MADT_IOAPIC_LEN;
	/* ISA IRQs are identity-mapped to GSIs except the PIT's, which arrives on pin 2; the SCI
	 * is a level-triggered, active-high line (dev/acpi_pm.c drives it so). */
	off = put_iso(t, off, 0, 2, ISO_ACTIVE_HIGH | ISO_EDGE);
	off = put_iso(t, off, ACPI_SCI_IRQ, ACPI_SCI_IRQ, ISO_ACTIVE_HIGH | ISO_LEVEL);
	w8(t, off, MADT_LAPIC_NMI);
	w8(t, off + 1, MADT_NMI_LEN);
	w8(t, off + 2, ALL_PROCESSORS);
	w16(t, off + 3, 0); /* polarity and trigger as the bus defines them */
	w8(t, off + 5, NMI_LINT);
	off += MADT_NMI_LEN;
	header(t, "APIC", (uint32_t)off, MADT_REVISION);
	seal(t);
}

static void put_rsdp(uint8_t *t)
{
	put_id(t, 0, "RSD PTR ", 8);
	put_id(t, 9, "FERRY ", 6);
	w8(t, 15, 2); /* revision: ACPI 2.0 and later, with the XSDT */
	w32(t, 16, ACPI_TABLES_ADDR + OFF_RSDT);
	w32(t, 20, RSDP_SIZE);
	w64(t, 24, ACPI_TABLES_ADDR + OFF_XSDT);
	w8(t, 8, checksum(t, RSDP_V1_SIZE));
	w8(t, 32, checksum(t, RSDP_SIZE));
}

int acpi_write_tables(struct guest_mem *mem, unsigned ncpus, char *err, size_t err_len)
{
	if (ncpus == 0 || ncpus > ACPI_MAX_CPUS)
		return set_err(err, err_len, "the MADT describes 1 to %u processors, not %u",
			       ACPI_MAX_CPUS, ncpus);
	uint8_t area[ACPI_TABLES_MAX] = {0};
	put_facs(area + OFF_FACS);
	put_fadt(area + OFF_FADT);
	put_madt(area + OFF_MADT, ncpus);
	size_t dsdt_len = put_dsdt(area + OFF_DSDT, DSDT_MAX);
	if (dsdt_len == 0)
		return set_err(err, err_len, "the DSDT does not fit in its %u bytes", DSDT_MAX);
	size_t end = OFF_DSDT + dsdt_len;

	static const uint32_t listed[NTABLES] = {OFF_FADT, OFF_MADT};
	uint8_t *rsdt = area + OFF_RSDT, *xsdt = area + OFF_XSDT;
	header(rsdt, "RSDT", HDR_SIZE + 4 * NTABLES, 1);
	header(xsdt, "XSDT", HDR_SIZE + 8 * NTABLES, 1);
	for (unsigned i = 0; i < NTABLES; i++) {
		w32(rsdt, HDR_SIZE + 4 * i, ACPI_TABLES_ADDR + listed[i]);
		w64(xsdt, HDR_SIZE + 8 * i, ACPI_TABLES_ADDR + listed[i]);
	}
	seal(rsdt);
	seal(xsdt);
	put_rsdp(area + OFF_RSDP);

	if (gmem_write(mem, ACPI_TABLES_ADDR, area, end) < 0)
		return set_err(err, err_len, "no RAM for the ACPI tables at 0x%x-0x%zx",
			       ACPI_TABLES_ADDR, ACPI_TABLES_ADDR + end - 1);
	return 0;
}
