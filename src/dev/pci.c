/* The PCI bus (bus 0) and its host bridge at 00:00.0, reached through configuration mechanism #1:
 * the guest writes a bus/device/function/register address to CONFIG_ADDRESS (0xcf8) and moves
 * data through CONFIG_DATA (0xcfc..0xcff). Functions other than 0, other buses and empty slots
 * read as all-ones (no device), as on real hardware.
 *
 * BARs are decoded inside two windows the bus claims whole on the VM's buses (the DSDT publishes
 * the same windows): an access there is dispatched to the BAR that holds it, so a guest may move
 * or disable BARs at run time while the VM's buses stay fixed. An access inside a window that no
 * BAR decodes ends as a PCI master abort: reads return all-ones and writes are dropped. */
#include "dev/pci.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "vm/vm.h"

#define HOST_VENDOR       0x1b36 /* Red Hat, Inc.: the PCI IDs virtual host bridges use */
#define HOST_DEVICE       0x0008
#define CLASS_HOST_BRIDGE 0x060000

#define CMD_IO            0x0001
#define CMD_MEM           0x0002
#define CMD_MASTER        0x0004
#define CMD_SERR          0x0100
#define CMD_INTX_OFF      0x0400
#define STS_INTX          0x0008
#define STS_CAPS          0x0010

static const char pci_tag[8] = "pci";
#define PCI_STATE_VERSION 1

struct pci_bus {
	struct vm *vm;
	pthread_mutex_t lock; /* config space, the BAR map, CONFIG_ADDRESS */
	uint32_t config_addr;
	struct pci_device host;
	struct pci_device *slot[PCI_SLOTS];
	uint64_t next_mmio; /* firmware placement cursors */
	uint32_t next_io;
	struct bus_range cf9; /* the reset register inside the config ports, if a device has it */
	struct device dev;
};

static uint16_t cfg16(const struct pci_device *d, unsigned off)
{
	return (uint16_t)(d->cfg[off] | d->cfg[off + 1] << 8);
}

static uint32_t cfg32(const struct pci_device *d, unsigned off)
{
	return (uint32_t)cfg16(d, off) | (uint32_t)cfg16(d, off + 2) << 16;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

void pci_init_header(struct pci_device *d, uint16_t vendor, uint16_t device, uint32_t class_code,
		     uint8_t revision, uint16_t sub_vendor, uint16_t sub_device)
{
	memset(d->cfg, 0, sizeof(d->cfg));
	memset(d->wmask, 0, sizeof(d->wmask));
	put16(d->cfg + 0x00, vendor);
	put16(d->cfg + 0x02, device);
	d->cfg[0x08] = revision;
	d->cfg[0x09] = (uint8_t)class_code;
	d->cfg[0x0a] = (uint8_t)(class_code >> 8);
	d->cfg[0x0b] = (uint8_t)(class_code >> 16);
	put16(d->cfg + 0x2c, sub_vendor);
	put16(d->cfg + 0x2e, sub_device);
	d->cfg[0x3d] = 1; /* interrupt pin A */
	put16(d->wmask + 0x04, CMD_IO | CMD_MEM | CMD_MASTER | CMD_SERR | CMD_INTX_OFF);
	d->wmask[0x0c] = 0xff; /* cache line size: plain storage */
	d->wmask[0x0d] = 0xff; /* latency timer */
	d->wmask[0x3c] = 0xff; /* interrupt line: written by software, meaningless to the device */
}

unsigned pci_add_capability(struct pci_device *d, uint8_t id, unsigned len)
{
	/* Capabilities are laid out from 0x40 upwards, dword-aligned, linked in the order added. */
	unsigned off = d->cap_end ? (d->cap_end + 3) & ~3u : 0x40;
	if (len < 2 || off + len > PCI_CFG_SIZE)
		return 0;
	d->cfg[off] = id;
	d->cfg[off + 1] = 0;
	if (!d->cfg[0x34]) {
		d->cfg[0x34] = (uint8_t)off;
	} else {
		unsigned p = d->cfg[0x34];
		while (d->cfg[p + 1])
			p = d->cfg[p + 1];
		d->cfg[p + 1] = (uint8_t)off;
	}
	d->cfg[0x06] |= STS_CAPS;
	d->cap_end = off + len;
	return off;
}

/* ---- BARs ---------------------------------------------------------------------------------- */

static unsigned bar_off(unsigned i)
{
	return 0x10 + 4 * i;
}

/* Where BAR i decodes now: its address if the command register enables its space and the
 * whole BAR lies inside the matching window, else PCI_BAR_UNMAPPED. */
static uint64_t bar_decode(const struct pci_device *d, unsigned i)
{
	const struct pci_bar_def *b = &d->bar[i];
	if (!b->size)
		return PCI_BAR_UNMAPPED;
	uint16_t cmd = cfg16(d, 0x04);
	uint32_t v = cfg32(d, bar_off(i));
	if (b->io) {
		uint64_t a = v & ~3u;
		if (!(cmd & CMD_IO) || a < PCI_IO_BASE || a + b->size > PCI_IO_BASE + PCI_IO_SIZE)
			return PCI_BAR_UNMAPPED;
		return a;
	}
	uint64_t a = v & ~0xfu;
	if (!(cmd & CMD_MEM) || a < PCI_MMIO_BASE || a + b->size > PCI_MMIO_BASE + PCI_MMIO_SIZE)
		return PCI_BAR_UNMAPPED;
	return a;
}

/* Recomputes every BAR's decoding after a config write and tells the device what moved. Two
 * BARs the guest made overlap: the lower slot wins on lookup (undefined on real hardware). */
static void bars_update(struct pci_device *d)
{
	for (unsigned i = 0; i < PCI_BARS; i++) {
		uint64_t a = bar_decode(d, i);
		if (a == d->bar_addr[i])
			continue;
		d->bar_addr[i] = a;
		if (d->bar_mapped)
			d->bar_mapped(d, i, a);
	}
}

/* An access inside one of the windows: find the BAR under the lock, call it without. */
static void window_access(struct pci_bus *bus, bool io, uint64_t addr, uint8_t *data, unsigned size,
			  bool write)
{
	struct pci_device *hit = NULL;
	unsigned bar = 0;
	uint64_t off = 0;
	pthread_mutex_lock(&bus->lock);
	for (unsigned s = 0; s < PCI_SLOTS && !hit; s++) {
		struct pci_device *d = bus->slot[s];
		if (!d)
			continue;
		for (unsigned i = 0; i < PCI_BARS; i++) {
			uint64_t a = d->bar_addr[i];
			if (a == PCI_BAR_UNMAPPED || d->bar[i].io != io || addr < a ||
			    addr - a + size > d->bar[i].size)
				continue;
			hit = d;
			bar = i;
			off = addr - a;
			break;
		}
	}
	pthread_mutex_unlock(&bus->lock);
	if (hit) {
		hit->bar[bar].access(hit->opaque, off, data, size, write);
		return;
	}
	/* Master abort. */
	if (!write)
		memset(data, 0xff, size);
	if (log_verbose)
		log_info("pci: %s of %u bytes at %s 0x%llx that no BAR decodes",
			 write ? "write" : "read", size, io ? "port" : "address",
			 (unsigned long long)addr);
}

static void mmio_window(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool write)
{
	window_access(opaque, false, PCI_MMIO_BASE + offset, data, size, write);
}

static void io_window(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool write)
{
	window_access(opaque, true, PCI_IO_BASE + offset, data, size, write);
}

/* ---- INTx ---------------------------------------------------------------------------------- */

/* With irq_lock held: drive the GSI from the line level and the INTx-disable bit. */
static void intx_apply(struct pci_device *d, bool was_driven)
{
	bool driven = d->intx_level && !(cfg16(d, 0x04) & CMD_INTX_OFF);
	if (d->intx_level)
		d->cfg[0x06] |= STS_INTX;
	else
		d->cfg[0x06] &= (uint8_t)~STS_INTX;
	if (driven != was_driven)
		vm_irq_line(d->bus->vm, PCI_INTX_GSI(d->slot, 0), driven);
}

void pci_set_intx(struct pci_device *d, int level)
{
	pthread_mutex_lock(&d->irq_lock);
	bool was = d->intx_level && !(cfg16(d, 0x04) & CMD_INTX_OFF);
	d->intx_level = level != 0;
	intx_apply(d, was);
	pthread_mutex_unlock(&d->irq_lock);
}

bool pci_bus_master(struct pci_device *d)
{
	pthread_mutex_lock(&d->irq_lock);
	bool on = cfg16(d, 0x04) & CMD_MASTER;
	pthread_mutex_unlock(&d->irq_lock);
	return on;
}

/* ---- configuration space ------------------------------------------------------------------ */

static struct pci_device *addressed(struct pci_bus *bus, unsigned *reg)
{
	uint32_t a = bus->config_addr;
	if (!(a & 0x80000000u) || ((a >> 16) & 0xff) != 0 || ((a >> 8) & 7) != 0)
		return NULL; /* disabled, another bus, or a function other than 0 */
	*reg = a & 0xfc;
	return bus->slot[(a >> 11) & 0x1f];
}

static void config_read(struct pci_device *d, unsigned off, uint8_t *data, unsigned size)
{
	if (d->config_read)
		d->config_read(d, off, size);
	pthread_mutex_lock(&d->irq_lock); /* the status and command bytes change under it */
	memcpy(data, d->cfg + off, size);
	pthread_mutex_unlock(&d->irq_lock);
}

static void config_write(struct pci_device *d, unsigned off, const uint8_t *data, unsigned size)
{
	pthread_mutex_lock(&d->irq_lock);
	bool was = d->intx_level && !(cfg16(d, 0x04) & CMD_INTX_OFF);
	for (unsigned i = 0; i < size; i++) {
		uint8_t m = d->wmask[off + i];
		d->cfg[off + i] = (uint8_t)((d->cfg[off + i] & ~m) | (data[i] & m));
	}
	intx_apply(d, was);
	pthread_mutex_unlock(&d->irq_lock);
	if (off < 0x28 && off + size > 0x04)
		bars_update(d); /* the command register or a BAR changed */
	if (d->config_written)
		d->config_written(d, off, size);
}

static void config_port(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool write)
{
	struct pci_bus *bus = opaque;
	if (offset == 1 && size == 1 && bus->cf9.fn) {
		/* Byte accesses to 0xcf9 are the chipset's reset control register. */
		bus->cf9.fn(bus->cf9.opaque, 0, data, size, write);
		return;
	}
	pthread_mutex_lock(&bus->lock);
	if (offset < 4) {
		/* CONFIG_ADDRESS is decoded only as a whole dword; byte writes to 0xcfb are
		 * how mechanism #2 hardware is told apart and are ignored. */
		if (offset == 0 && size == 4) {
			if (write)
				bus->config_addr = (uint32_t)data[0] | (uint32_t)data[1] << 8 |
						   (uint32_t)data[2] << 16 |
						   (uint32_t)data[3] << 24;
			else
				put32(data, bus->config_addr);
		} else if (!write) {
			memset(data, 0xff, size);
		}
	} else {
		unsigned reg = 0, byte = (unsigned)offset - 4;
		struct pci_device *d = addressed(bus, &reg);
		if (!d || byte + size > 4) {
			if (!write)
				memset(data, 0xff, size);
		} else if (write) {
			config_write(d, reg + byte, data, size);
		} else {
			config_read(d, reg + byte, data, size);
		}
	}
	pthread_mutex_unlock(&bus->lock);
}

/* ---- devices ------------------------------------------------------------------------------- */

static void device_attach(struct pci_bus *bus, struct pci_device *d, unsigned slot)
{
	d->bus = bus;
	d->slot = slot;
	pthread_mutex_init(&d->irq_lock, NULL);
	for (unsigned i = 0; i < PCI_BARS; i++)
		d->bar_addr[i] = PCI_BAR_UNMAPPED;
	d->cfg[0x3c] = (uint8_t)PCI_INTX_GSI(slot, 0);
	bus->slot[slot] = d;
}

int pci_add_device(struct vm *vm, struct pci_device *d)
{
	struct pci_bus *bus = vm->pci;
	if (!bus) {
		log_error("%s: the machine has no PCI bus", d->name);
		return -1;
	}
	unsigned slot = 1;
	while (slot < PCI_SLOTS && bus->slot[slot])
		slot++;
	if (slot == PCI_SLOTS) {
		log_error("%s: no free PCI slot (at most %u devices)", d->name, PCI_SLOTS - 1);
		return -1;
	}
	uint16_t cmd = 0;
	for (unsigned i = 0; i < PCI_BARS; i++) {
		struct pci_bar_def *b = &d->bar[i];
		if (!b->size)
			continue;
		if (b->size & (b->size - 1) || (!b->io && b->size < 4096) ||
		    (b->io && b->size < 4)) {
			log_error("%s: BAR %u size 0x%x is not a power of 2 of the minimum size",
				  d->name, i, b->size);
			return -1;
		}
		/* Natural alignment, as the BAR's read-only low bits force. */
		uint64_t cur = b->io ? bus->next_io : bus->next_mmio;
		uint64_t a = (cur + b->size - 1) & ~(uint64_t)(b->size - 1);
		uint64_t end = b->io ? PCI_IO_BASE + PCI_IO_SIZE : PCI_MMIO_BASE + PCI_MMIO_SIZE;
		if (a + b->size > end) {
			log_error("%s: no room for BAR %u in the PCI window", d->name, i);
			return -1;
		}
		if (b->io)
			bus->next_io = (uint32_t)(a + b->size);
		else
			bus->next_mmio = a + b->size;
		put32(d->cfg + bar_off(i), (uint32_t)a | (b->io ? 1u : 0u));
		put32(d->wmask + bar_off(i), ~(b->size - 1) & (b->io ? ~3u : ~0xfu));
		cmd |= b->io ? CMD_IO : CMD_MEM;
	}
	pthread_mutex_lock(&bus->lock);
	device_attach(bus, d, slot);
	put16(d->cfg + 0x04, cmd);
	bars_update(d);
	pthread_mutex_unlock(&bus->lock);
	return 0;
}

/* ---- the bus as a device: creation and snapshot -------------------------------------------- */

static void pci_save(void *opaque, struct state_writer *w)
{
	struct pci_bus *bus = opaque;
	pthread_mutex_lock(&bus->lock);
	sw_begin(w, pci_tag, PCI_STATE_VERSION);
	sw_u32(w, bus->config_addr);
	for (unsigned s = 0; s < PCI_SLOTS; s++) {
		struct pci_device *d = bus->slot[s];
		sw_u8(w, d != NULL);
		if (!d)
			continue;
		pthread_mutex_lock(&d->irq_lock);
		sw_bytes(w, d->cfg, PCI_CFG_SIZE);
		sw_u8(w, d->intx_level);
		pthread_mutex_unlock(&d->irq_lock);
	}
	pthread_mutex_unlock(&bus->lock);
}

/* The same devices must be present (the VM is built from the same configuration); their config
 * spaces are restored and the BAR decoding recomputed. */
static int pci_load(void *opaque, struct state_reader *r)
{
	struct pci_bus *bus = opaque;
	sr_begin(r, pci_tag, PCI_STATE_VERSION);
	uint32_t addr = sr_u32(r);
	uint8_t cfg[PCI_SLOTS][PCI_CFG_SIZE];
	bool level[PCI_SLOTS] = {false};
	for (unsigned s = 0; s < PCI_SLOTS && !r->err; s++) {
		bool present = sr_u8(r);
		const struct pci_device *d = bus->slot[s];
		sr_check(r, present == (d != NULL));
		if (!present || !d || r->err)
			continue;
		sr_bytes(r, cfg[s], PCI_CFG_SIZE);
		level[s] = sr_u8(r);
		/* Read-only bytes must match the device this VM has. */
		for (unsigned i = 0; i < PCI_CFG_SIZE; i++)
			sr_check(r, ((cfg[s][i] ^ d->cfg[i]) & ~d->wmask[i] &
				     (i == 0x06 ? ~STS_INTX : 0xff)) == 0);
	}
	if (r->err)
		return -1;
	pthread_mutex_lock(&bus->lock);
	bus->config_addr = addr;
	for (unsigned s = 0; s < PCI_SLOTS; s++) {
		struct pci_device *d = bus->slot[s];
		if (!d)
			continue;
		pthread_mutex_lock(&d->irq_lock);
		bool was = d->intx_level && !(cfg16(d, 0x04) & CMD_INTX_OFF);
		memcpy(d->cfg, cfg[s], PCI_CFG_SIZE);
		d->intx_level = level[s];
		intx_apply(d, was);
		pthread_mutex_unlock(&d->irq_lock);
		bars_update(d);
	}
	pthread_mutex_unlock(&bus->lock);
	return 0;
}

static void pci_destroy(void *opaque)
{
	struct pci_bus *bus = opaque;
	pthread_mutex_destroy(&bus->lock);
	bus->vm->pci = NULL;
	free(bus);
}

static int pci_create(struct vm *vm)
{
	struct pci_bus *bus = calloc(1, sizeof(*bus));
	if (!bus) {
		log_error("pci: out of memory");
		return -1;
	}
	bus->vm = vm;
	pthread_mutex_init(&bus->lock, NULL);
	bus->next_mmio = PCI_MMIO_BASE;
	bus->next_io = PCI_IO_BASE;
	struct pci_device *h = &bus->host;
	h->name = "host bridge";
	pci_init_header(h, HOST_VENDOR, HOST_DEVICE, CLASS_HOST_BRIDGE, 0, 0, 0);
	h->cfg[0x3d] = 0; /* no interrupt pin */
	device_attach(bus, h, 0);
	put16(h->cfg + 0x04, CMD_MEM | CMD_MASTER);
	bus->dev = (struct device){.name = "pci",
				   .opaque = bus,
				   .save = pci_save,
				   .load = pci_load,
				   .destroy = pci_destroy};
	if (bus_take(&vm->pio, PCI_CONFIG_ADDR_PORT + 1, &bus->cf9) == 0 &&
	    (bus->cf9.base != PCI_CONFIG_ADDR_PORT + 1 || bus->cf9.len != 1)) {
		log_error("pci: the configuration ports overlap %s", bus->cf9.name);
		free(bus);
		return -1;
	}
	if (bus_register(&vm->pio, PCI_CONFIG_ADDR_PORT, 8, config_port, bus, "pci-config") < 0 ||
	    bus_register(&vm->pio, PCI_IO_BASE, PCI_IO_SIZE, io_window, bus, "pci-io") < 0 ||
	    bus_register(&vm->mmio, PCI_MMIO_BASE, PCI_MMIO_SIZE, mmio_window, bus, "pci-mmio") <
		0) {
		log_error("pci: the configuration ports or windows are taken");
		pthread_mutex_destroy(&bus->lock);
		free(bus);
		return -1;
	}
	vm->pci = bus;
	vm_add_device(vm, &bus->dev);
	return 0;
}

static struct device_type pci_type = {.name = "pci", .order = 70, .create = pci_create};
DEVICE_REGISTER(pci_type)
