/* Intel MultiProcessor Specification 1.4 tables: a floating pointer structure in the BIOS area
 * and the configuration table right after it, describing the processors, the ISA and PCI buses,
 * the I/O APIC and how ISA and PCI interrupts reach it (for guests booted without ACPI; the
 * DSDT's _PRT says the same). */
#include <string.h>

#include "arch/x86/boot.h"
#include "dev/pci.h"
#include "util/log.h"

#define MP_SPEC_REV   4 /* 1.4 */
#define MP_FPS_SIZE   16
#define MP_HDR_SIZE   44
#define MP_CPU_SIZE   20
#define MP_ENTRY_SIZE 8
#define MP_ISA_IRQS   16
#define MP_PCI_INTX   ((PCI_SLOTS - 1) * 4) /* slots 1..31, pins A-D */
#define MP_MAX_CPUS   254 /* xAPIC IDs 0..ncpus-1, then the I/O APIC's; 0xff is broadcast */
#define MP_TABLE_MAX                                                                               \
	(MP_FPS_SIZE + MP_HDR_SIZE + MP_MAX_CPUS * MP_CPU_SIZE +                                   \
	 (3 + MP_ISA_IRQS + 2 + MP_PCI_INTX) * MP_ENTRY_SIZE)

enum { MP_PROCESSOR, MP_BUS, MP_IOAPIC, MP_IOINTR, MP_LINTR };
enum { MP_INT, MP_NMI, MP_SMI, MP_EXTINT }; /* interrupt types */

#define CPU_ENABLED    0x01
#define CPU_BSP        0x02
#define LAPIC_VERSION  0x14
#define IOAPIC_VERSION 0x11
#define IOAPIC_ADDR    0xfec00000u
#define CPU_SIGNATURE  0x600 /* family 6 */
#define CPU_FEATURES   0x201 /* CPUID.1:EDX FPU and APIC */
/* Linux matches a PCI interrupt entry's MP bus ID against the PCI bus number itself, so PCI bus
 * 0 is MP bus 0 (as PC BIOSes number them) and ISA comes after it. */
#define PCI_BUS        0
#define ISA_BUS        1
#define PCI_INTX_FLAGS 0x000f /* active low (polarity 3), level-triggered (trigger 3) */
#define LAPIC_ALL      0xff

struct mp_writer {
	uint8_t *buf;
	size_t pos;
};

static void put(struct mp_writer *w, const void *p, size_t n)
{
	memcpy(w->buf + w->pos, p, n);
	w->pos += n;
}

static void put8(struct mp_writer *w, uint8_t v)
{
	put(w, &v, 1);
}

static void put16(struct mp_writer *w, uint16_t v)
{
	put(w, &v, 2); /* little-endian host, like the guest */
}

static void put32(struct mp_writer *w, uint32_t v)
{
	put(w, &v, 4);
}

/* The byte that makes the sum of p[0..n) zero. */
static uint8_t checksum(const uint8_t *p, size_t n)
{
	uint8_t sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += p[i];
	return (uint8_t)-sum;
}

static void put_cpu(struct mp_writer *w, unsigned id)
{
	put8(w, MP_PROCESSOR);
	put8(w, (uint8_t)id);
	put8(w, LAPIC_VERSION);
	put8(w, CPU_ENABLED | (id == 0 ? CPU_BSP : 0));
	put32(w, CPU_SIGNATURE);
	put32(w, CPU_FEATURES);
	put32(w, 0);
	put32(w, 0);
}

/* Entries 3 (I/O APIC input) and 4 (local APIC input) share one layout. */
static void put_intr(struct mp_writer *w, uint8_t entry, uint8_t type, uint16_t flags, uint8_t bus,
		     uint8_t src_irq, uint8_t dst_id, uint8_t dst_pin)
{
	put8(w, entry);
	put8(w, type);
	put16(w, flags); /* 0: polarity and trigger as the bus defines them (ISA: edge, high) */
	put8(w, bus);
	put8(w, src_irq);
	put8(w, dst_id);
	put8(w, dst_pin);
}

/* Writes the configuration table at w->pos. */
static void put_config(struct mp_writer *w, unsigned ncpus)
{
	size_t start = w->pos;
	unsigned n = 0;
	put(w, "PCMP", 4);
	put16(w, 0); /* base table length, patched below */
	put8(w, MP_SPEC_REV);
	put8(w, 0); /* checksum, patched below */
	put(w, "FERRY   ", 8);
	put(w, "VIRTUAL PC  ", 12);
	put32(w, 0); /* no OEM table */
	put16(w, 0);
	put16(w, 0); /* entry count, patched below */
	put32(w, APIC_DEFAULT_BASE);
	put16(w, 0); /* no extended table */
	put8(w, 0);
	put8(w, 0);

	for (unsigned i = 0; i < ncpus; i++, n++)
		put_cpu(w, i);
	put8(w, MP_BUS);
	put8(w, PCI_BUS);
	put(w, "PCI   ", 6);
	put8(w, MP_BUS);
	put8(w, ISA_BUS);
	put(w, "ISA   ", 6);
	n += 2;
	uint8_t ioapic = (uint8_t)ncpus;
	put8(w, MP_IOAPIC);
	put8(w, ioapic);
	put8(w, IOAPIC_VERSION);
	put8(w, 1); /* enabled */
	put32(w, IOAPIC_ADDR);
	n++;
	/* The PIT's IRQ 0 arrives on pin 2 as on PCs; IRQ 2 is the PIC cascade and has no pin. */
	for (uint8_t irq = 0; irq < MP_ISA_IRQS; irq++) {
		if (irq == 2)
			continue;
		put_intr(w, MP_IOINTR, MP_INT, 0, ISA_BUS, irq, ioapic, irq == 0 ? 2 : irq);
		n++;
	}
	/* A PCI source IRQ is (device << 2) | pin (MP spec D.3). */
	for (unsigned slot = 1; slot < PCI_SLOTS; slot++)
		for (unsigned pin = 0; pin < 4; pin++, n++)
			put_intr(w, MP_IOINTR, MP_INT, PCI_INTX_FLAGS, PCI_BUS,
				 (uint8_t)(slot << 2 | pin), ioapic,
				 (uint8_t)PCI_INTX_GSI(slot, pin));
	put_intr(w, MP_LINTR, MP_EXTINT, 0, ISA_BUS, 0, LAPIC_ALL, 0);
	put_intr(w, MP_LINTR, MP_NMI, 0, ISA_BUS, 0, LAPIC_ALL, 1);
	n += 2;

	uint8_t *hdr = w->buf + start;
	uint16_t len = (uint16_t)(w->pos - start), count = (uint16_t)n;
	memcpy(hdr + 4, &len, 2);
	memcpy(hdr + 34, &count, 2);
	hdr[7] = checksum(hdr, len);
}

int mptable_write(struct guest_mem *mem, unsigned ncpus, char *err, size_t err_len)
{
	if (ncpus == 0 || ncpus > MP_MAX_CPUS)
		return set_err(err, err_len, "the MP table describes 1 to %u processors, not %u",
			       MP_MAX_CPUS, ncpus);
	uint8_t buf[MP_TABLE_MAX] = {0};
	struct mp_writer w = {buf, 0};
	put(&w, "_MP_", 4);
	put32(&w, BOOT_MPTABLE_ADDR + MP_FPS_SIZE);
	put8(&w, 1); /* length in 16-byte units */
	put8(&w, MP_SPEC_REV);
	put8(&w, 0); /* checksum, patched below */
	put8(&w, 0); /* feature 1: a configuration table is present */
	put8(&w, 0); /* feature 2: no IMCR, virtual wire mode */
	put8(&w, 0);
	put8(&w, 0);
	put8(&w, 0);
	buf[10] = checksum(buf, MP_FPS_SIZE);
	put_config(&w, ncpus);
	if (gmem_write(mem, BOOT_MPTABLE_ADDR, buf, w.pos) < 0)
		return set_err(err, err_len, "no RAM for the MP table at 0x%x", BOOT_MPTABLE_ADDR);
	return 0;
}
