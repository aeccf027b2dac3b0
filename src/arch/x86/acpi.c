/* ACPI tables (ACPI 6.3 layouts) for a PC with legacy fixed hardware: Linux finds the CPUs,
 * the I/O APIC and the interrupt overrides in the MADT, powers off through PM1a_CNT with the
 * \_S5 sleep type and resets through the FADT's RESET_REG. There is no firmware: SMI_CMD is 0,
 * so the machine is in ACPI mode from the start, and the FACS is there because a
 * non-hardware-reduced FADT must point to one.
 *
 * Layout from ACPI_TABLES_ADDR (0xe0000), every table 16-byte aligned, all inside one 4 KiB
 * area that ends well below the MP table at 0xf0000:
 *   +0x000  RSDP  36 bytes, revision 2: RSDT and XSDT addresses
 *   +0x040  FACS  64 bytes (must be 64-byte aligned)
 *   +0x080  RSDT  36 + 4 * 2: FADT, MADT
 *   +0x0c0  XSDT  36 + 8 * 2: FADT, MADT
 *   +0x100  FADT  276 bytes, revision 6.3: FACS, DSDT, PM1a event/control, PM timer, reset
 *   +0x220  DSDT  36 + 14: AML Name (_S5, Package () { 5, 5, 0, 0 })
 *   +0x260  MADT  44 + 8 * ncpus + 12 + 2 * 10 + 6 (at most 0x842 bytes for 254 CPUs) */
#include <string.h>

#include "arch/x86/acpi.h"
#include "arch/x86/boot.h"
#include "util/log.h"

#define OFF_RSDP        0x000
#define OFF_FACS        0x040
#define OFF_RSDT        0x080
#define OFF_XSDT        0x0c0
#define OFF_FADT        0x100
#define OFF_DSDT        0x220
#define OFF_MADT        0x260

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

/* AML for Name (_S5, Package () { 5, 5, 0, 0 }): NameOp, NameSeg "_S5_", PackageOp,
 * PkgLength (8: itself, the count and 6 bytes of elements), NumElements 4, BytePrefix 5,
 * BytePrefix 5, ZeroOp, ZeroOp. The first two are SLP_TYPa and SLP_TYPb. */
static const uint8_t dsdt_aml[] = {
    0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0a, ACPI_SLP_TYP_S5, 0x0a, ACPI_SLP_TYP_S5,
    0x00, 0x00};
#define DSDT_SIZE (HDR_SIZE + sizeof(dsdt_aml))

_Static_assert(OFF_FACS % 64 == 0, "the FACS must be 64-byte aligned");
_Static_assert(OFF_RSDT >= OFF_FACS + FACS_SIZE, "FACS overlaps the RSDT");
_Static_assert(OFF_XSDT >= OFF_RSDT + HDR_SIZE + 4 * NTABLES, "RSDT overlaps the XSDT");
_Static_assert(OFF_FADT >= OFF_XSDT + HDR_SIZE + 8 * NTABLES, "XSDT overlaps the FADT");
_Static_assert(OFF_DSDT >= OFF_FADT + FADT_SIZE, "FADT overlaps the DSDT");
_Static_assert(OFF_MADT >= OFF_DSDT + DSDT_SIZE, "DSDT overlaps the MADT");
_Static_assert(OFF_MADT + MADT_MAX_SIZE <= ACPI_TABLES_MAX, "the MADT does not fit");
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

static void put_dsdt(uint8_t *t)
{
	header(t, "DSDT", DSDT_SIZE, 2); /* revision 2: 64-bit AML integers */
	memcpy(t + HDR_SIZE, dsdt_aml, sizeof(dsdt_aml));
	seal(t);
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

/* Returns the MADT's length. */
static size_t put_madt(uint8_t *t, unsigned ncpus)
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
	return off;
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
	put_dsdt(area + OFF_DSDT);
	size_t end = OFF_MADT + put_madt(area + OFF_MADT, ncpus);

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
