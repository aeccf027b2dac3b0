/* ACPI: where the firmware tables live and the fixed hardware they describe. The tables
 * (acpi.c) and the power-management device (dev/acpi_pm.c) share these numbers, so a guest
 * finds the registers exactly where the FADT says they are. acpi_write_tables() itself is
 * declared in arch/x86/boot.h next to mptable_write(). */
#ifndef FERRY_ACPI_H
#define FERRY_ACPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Guest-physical placement: in the BIOS area Linux scans for the RSDP (0xe0000-0xfffff),
 * below the MP table at BOOT_MPTABLE_ADDR. */
#define ACPI_TABLES_ADDR 0xe0000u
#define ACPI_TABLES_MAX  0x4000u /* bytes the tables may take from ACPI_TABLES_ADDR */
#define ACPI_RSDP_ADDR   ACPI_TABLES_ADDR
#define ACPI_MAX_CPUS    254 /* xAPIC IDs 0..n-1, then the I/O APIC's; 0xff is broadcast */

/* Fixed hardware, in port I/O space. */
#define ACPI_SCI_IRQ      9
#define ACPI_PM1A_EVT     0x600 /* PM1_STS (2 bytes), then PM1_EN (2 bytes) */
#define ACPI_PM1_EVT_LEN  4
#define ACPI_PM1A_CNT     0x604
#define ACPI_PM1_CNT_LEN  2
#define ACPI_PM_TMR       0x608 /* 32-bit counter (FADT flag TMR_VAL_EXT) */
#define ACPI_PM_TMR_LEN   4
#define ACPI_PM_TMR_HZ    3579545u
#define ACPI_RESET_PORT   0xcf9 /* the PC's reset control register (FADT RESET_REG) */
#define ACPI_RESET_VALUE  0x06  /* full CPU reset: RST_CPU with SYS_RST */
#define ACPI_SLP_TYP_S5   5     /* the value the DSDT's \_S5 gives for soft-off */
#define ACPI_CENTURY_CMOS 0x32  /* CMOS index of the RTC's century byte */

/* PM1_STS / PM1_EN bits */
#define ACPI_PM1_TMR    0x0001 /* TMR_STS / TMR_EN: bit 31 of the timer changed */
#define ACPI_PM1_BM     0x0010 /* BM_STS */
#define ACPI_PM1_GBL    0x0020 /* GBL_STS / GBL_EN */
#define ACPI_PM1_PWRBTN 0x0100 /* PWRBTN_STS / PWRBTN_EN */
#define ACPI_PM1_SLPBTN 0x0200 /* SLPBTN_STS / SLPBTN_EN */
#define ACPI_PM1_RTC    0x0400 /* RTC_STS / RTC_EN */
#define ACPI_PM1_PCIEXP 0x4000 /* PCIEXP_WAKE_STS / PCIEXP_WAKE_DIS */
#define ACPI_PM1_WAK    0x8000 /* WAK_STS */

/* PM1_CNT bits */
#define ACPI_PM1_SCI_EN        0x0001
#define ACPI_PM1_BM_RLD        0x0002
#define ACPI_PM1_GBL_RLS       0x0004
#define ACPI_PM1_SLP_TYP_SHIFT 10
#define ACPI_PM1_SLP_TYP       (7u << ACPI_PM1_SLP_TYP_SHIFT)
#define ACPI_PM1_SLP_EN        0x2000

/* Reset control register (0xcf9) bits */
#define ACPI_CF9_SYS_RST  0x02 /* hard rather than soft reset */
#define ACPI_CF9_RST_CPU  0x04 /* a 0 -> 1 change starts the reset */
#define ACPI_CF9_FULL_RST 0x08 /* power-cycle rather than assert reset */

/* ---- AML (ACPI 6.3 chapter 20): the encoders acpi.c builds the DSDT with, here for tests. ---- */

#define AML_PKGLEN_MAX 0x0fffffffu /* a PkgLength holds 28 bits */

/* A byte stream written into a fixed buffer. Anything that does not fit or cannot be encoded
 * (a bad name, a package too long) sets err and leaves the stream unusable, so a builder
 * checks once at the end. */
struct aml {
	uint8_t *buf;
	size_t cap, len;
	bool err;
};

void aml_init(struct aml *a, uint8_t *buf, size_t cap);
void aml_bytes(struct aml *a, const void *p, size_t n);
/* The PkgLength encoding of value (which counts the encoding itself and what follows it) in 1
 * to 4 bytes, the fewest that hold it; returns the count, 0 if value > AML_PKGLEN_MAX. */
size_t aml_pkglen(uint8_t out[4], uint32_t value);
/* An integer in its shortest form: ZeroOp, OneOp, or a Byte/Word/DWord/QWord prefix. */
void aml_integer(struct aml *a, uint64_t v);
/* A name path as ASL writes it: a root '\\' or any number of '^' (parent), then NameSegs of
 * 1-4 characters separated by '.' (padded with '_'): "\\_SB.PCI0", "^PCI0", "_S5". */
void aml_namestring(struct aml *a, const char *path);
/* EisaId("PNP0A03"): three capitals and four hex digits compressed into a DWord, always with
 * the DWord prefix (how ASL compilers emit it, so readers recognize it). */
void aml_eisaid(struct aml *a, const char *id);
/* Name (path, <the object the caller writes next>). */
void aml_name(struct aml *a, const char *path);
/* Scope, Device and Package open a PkgLength and return a mark that aml_end takes once their
 * contents are written; they nest. A Package's element count is the caller's to get right. */
size_t aml_scope(struct aml *a, const char *path);
size_t aml_device(struct aml *a, const char *path);
size_t aml_package(struct aml *a, uint8_t nelems);
void aml_end(struct aml *a, size_t mark);
/* Buffer () { bytes }: a ResourceTemplate is one, holding resource descriptors. */
void aml_buffer(struct aml *a, const uint8_t *p, size_t n);

#endif
