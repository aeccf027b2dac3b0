/* The PCI bus: one host bridge at 00:00.0 with configuration mechanism #1 (ports 0xcf8/0xcfc),
 * bus 0 only. A PCI device fills a 256-byte configuration space, declares its BARs and
 * capabilities, and gets its BARs placed (firmware-like: ferry assigns addresses before the guest
 * starts, inside the windows the ACPI tables give the root bridge). The numbers below are shared
 * with the DSDT (arch/x86/acpi.c), so the guest finds exactly what the bus decodes. */
#ifndef FERRY_PCI_H
#define FERRY_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vm/state.h"

struct vm;

#define PCI_CONFIG_ADDR_PORT 0xcf8 /* CONFIG_ADDRESS (dword) */
#define PCI_CONFIG_DATA_PORT 0xcfc /* CONFIG_DATA (bytes 0xcfc..0xcff) */

/* Windows of the root bridge (the DSDT's _CRS): BARs are placed inside them. */
#define PCI_MMIO_BASE 0xc0000000ull /* 32-bit memory window, start of the hole below 4 GiB */
#define PCI_MMIO_SIZE 0x20000000ull /* 512 MiB: [3 GiB, 3.5 GiB) */
#define PCI_IO_BASE   0xc000u       /* I/O window for I/O BARs: [0xc000, 0x10000) */
#define PCI_IO_SIZE   0x4000u

#define PCI_SLOTS     32 /* devices on bus 0; slot 0 is the host bridge */

/* Legacy INTx routing (the DSDT's _PRT and the bus agree): slot s, pin p (0 = INTA#) is wired to
 * I/O APIC input PCI_INTX_GSI(s, p), level-triggered, active low. */
#define PCI_INTX_GSI_BASE       16
#define PCI_INTX_GSIS           8
#define PCI_INTX_GSI(slot, pin) (PCI_INTX_GSI_BASE + (((slot) + (pin)) % PCI_INTX_GSIS))

#define PCI_BARS                6
#define PCI_BAR_UNMAPPED        (~0ull)
#define PCI_CFG_SIZE            256

struct pci_bus;
struct pci_device;

struct pci_bar_def {
	uint32_t size; /* a power of 2 (memory >= 4 KiB, I/O >= 4 bytes); 0: no BAR */
	bool io;       /* an I/O BAR (else a 32-bit non-prefetchable memory BAR) */
	/* Accesses inside the BAR while it is decoded; offset is relative to the BAR. Called
	 * without any bus lock held. */
	void (*access)(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool write);
};

/* A function on bus 0. The device fills the part above the line before pci_add_device(); the bus
 * owns the rest. Config space accesses are serialized by the bus's lock; the hooks run under it
 * (so they may take the device's own lock, never the other way round). */
struct pci_device {
	const char *name;
	void *opaque;
	uint8_t
	    cfg[PCI_CFG_SIZE]; /* as the guest reads it; the header is filled by pci_init_header */
	uint8_t wmask[PCI_CFG_SIZE]; /* bits the guest may write */
	struct pci_bar_def bar[PCI_BARS];
	/* Optional: after the guest wrote len bytes at off (cfg already updated). */
	void (*config_written)(struct pci_device *d, unsigned off, unsigned len);
	/* Optional: before the guest reads len bytes at off (the device may refresh cfg). */
	void (*config_read)(struct pci_device *d, unsigned off, unsigned len);
	/* Optional: BAR i is now decoded at addr, or no longer decoded (PCI_BAR_UNMAPPED). */
	void (*bar_mapped)(struct pci_device *d, unsigned i, uint64_t addr);
	/* ---- owned by the bus ---- */
	struct pci_bus *bus;
	unsigned slot;
	uint64_t bar_addr[PCI_BARS]; /* where each BAR is decoded, or PCI_BAR_UNMAPPED */
	pthread_mutex_t irq_lock;    /* a leaf lock: the INTx level and the status/command bits */
	bool intx_level;
	unsigned cap_end; /* first free byte after the capabilities (pci_add_capability) */
};

/* Fills the type-0 header: IDs, class, revision, subsystem IDs, interrupt pin A. */
void pci_init_header(struct pci_device *d, uint16_t vendor, uint16_t device, uint32_t class_code,
		     uint8_t revision, uint16_t sub_vendor, uint16_t sub_device);
/* Appends a capability of len bytes (id at +0, next pointer at +1, the rest zero) and returns
 * its offset in config space, or 0 when the space is full. */
unsigned pci_add_capability(struct pci_device *d, uint8_t id, unsigned len);
/* Puts d in the next free slot of vm's bus, places its BARs in the windows and enables their
 * decoding as a firmware would. Returns 0, or -1 with the reason reported. */
int pci_add_device(struct vm *vm, struct pci_device *d);
/* Drives d's INTx# line (pin A): level 1 asserted. Honours the command register's INTx disable
 * bit and reflects the level in the status register. Any thread. */
void pci_set_intx(struct pci_device *d, int level);
/* Whether the guest allowed d to master the bus (command register bit 2): DMA is refused
 * otherwise. */
bool pci_bus_master(struct pci_device *d);

#endif
