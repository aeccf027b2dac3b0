/* I/O APIC (82093AA): redirection table, edge and level semantics, EOI. The model choices are
 * listed in ioapic.h. */
#include "dev/ioapic.h"

#include <stdlib.h>
#include <string.h>

#include "vm/state.h"

#define IOAPIC_VERSION  0x00170020u /* max redirection entry 23, version 0x20 */

#define O_IOREGSEL      0x00u
#define O_IOWIN         0x10u
#define O_EOI           0x40u

#define REG_ID          0x00u
#define REG_VER         0x01u
#define REG_ARB         0x02u
#define REG_REDIR       0x10u

#define RTE_LOGICAL     (1ull << 11)
#define RTE_POLARITY    (1ull << 13) /* active low */
#define RTE_REMOTE_IRR  (1ull << 14)
#define RTE_LEVEL       (1ull << 15)
#define RTE_MASKED      (1ull << 16)
#define RTE_LO_WRITABLE 0x0001afffull /* vector, mode, dest mode, polarity, trigger, mask */
#define RTE_HI_WRITABLE 0xff00000000000000ull
#define ID_MASK         0x0f000000u

typedef void (*deliver_fn)(void *opaque, uint8_t dest, bool logical, unsigned mode, uint8_t vector,
			   bool level_trig);

struct ioapic {
	deliver_fn deliver;
	void *opaque;
	uint32_t id;
	uint8_t sel;
	uint64_t redir[IOAPIC_NPINS];
	uint32_t lines; /* input levels as driven, bit n = pin n */
};

static unsigned rte_mode(uint64_t e)
{
	return (unsigned)(e >> 8) & 7;
}

/* Level semantics (remote IRR, EOI) apply only to fixed and lowest-priority entries. */
static bool rte_level(uint64_t e)
{
	return (e & RTE_LEVEL) && rte_mode(e) <= 1;
}

/* Inputs are logical levels (1 = asserted) whatever the entry's polarity bit says: devices
 * raise vm_irq_line(gsi, 1) for an active-low PCI INTx# line too, as with KVM's I/O APIC. */
static bool asserted(const struct ioapic *io, unsigned pin)
{
	return ((io->lines >> pin) & 1) != 0;
}

static void deliver_pin(struct ioapic *io, unsigned pin)
{
	uint64_t e = io->redir[pin];
	unsigned mode = rte_mode(e);
	if (mode == 3 || mode == 6)
		return; /* reserved */
	bool level = rte_level(e);
	if (level)
		io->redir[pin] |= RTE_REMOTE_IRR;
	if (io->deliver)
		io->deliver(io->opaque, (uint8_t)(e >> 56), (e & RTE_LOGICAL) != 0, mode,
			    (uint8_t)e, level);
}

static void service_level(struct ioapic *io, unsigned pin)
{
	uint64_t e = io->redir[pin];
	if (rte_level(e) && !(e & (RTE_MASKED | RTE_REMOTE_IRR)) && asserted(io, pin))
		deliver_pin(io, pin);
}

void ioapic_set_irq(struct ioapic *io, unsigned pin, int level)
{
	if (pin >= IOAPIC_NPINS)
		return;
	bool was = asserted(io, pin);
	if (level)
		io->lines |= 1u << pin;
	else
		io->lines &= ~(1u << pin);
	uint64_t e = io->redir[pin];
	if (rte_level(e))
		service_level(io, pin);
	else if (!was && asserted(io, pin) && !(e & RTE_MASKED))
		deliver_pin(io, pin);
}

void ioapic_eoi(struct ioapic *io, uint8_t vector)
{
	for (unsigned pin = 0; pin < IOAPIC_NPINS; pin++) {
		uint64_t e = io->redir[pin];
		if (!(e & RTE_REMOTE_IRR) || (uint8_t)e != vector)
			continue;
		io->redir[pin] &= ~RTE_REMOTE_IRR;
		service_level(io, pin);
	}
}

static uint32_t reg_read(const struct ioapic *io, uint8_t idx)
{
	if (idx >= REG_REDIR && idx < REG_REDIR + 2 * IOAPIC_NPINS) {
		uint64_t e = io->redir[(idx - REG_REDIR) / 2];
		return (idx & 1) ? (uint32_t)(e >> 32) : (uint32_t)e;
	}
	switch (idx) {
	case REG_ID:
	case REG_ARB:
		return io->id;
	case REG_VER:
		return IOAPIC_VERSION;
	default:
		return 0;
	}
}

static void reg_write(struct ioapic *io, uint8_t idx, uint32_t v)
{
	if (idx == REG_ID) {
		io->id = v & ID_MASK;
		return;
	}
	if (idx < REG_REDIR || idx >= REG_REDIR + 2 * IOAPIC_NPINS)
		return;
	unsigned pin = (idx - REG_REDIR) / 2;
	uint64_t e = io->redir[pin];
	if (idx & 1)
		e = (e & 0xffffffffull) | (((uint64_t)v << 32) & RTE_HI_WRITABLE);
	else
		e = (e & (RTE_HI_WRITABLE | RTE_REMOTE_IRR)) | (v & RTE_LO_WRITABLE);
	if (!rte_level(e))
		e &= ~RTE_REMOTE_IRR;
	io->redir[pin] = e;
	service_level(io, pin);
}

void ioapic_mmio(struct ioapic *io, uint32_t offset, uint8_t *data, unsigned size, bool write)
{
	if (!data)
		return;
	if (size != 1 && size != 2 && size != 4 && size != 8) {
		if (!write)
			memset(data, 0, size);
		return;
	}
	if (write) {
		if (size < 4)
			return;
		uint32_t v = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
			     (uint32_t)data[3] << 24;
		if (offset == O_IOREGSEL)
			io->sel = (uint8_t)v;
		else if (offset == O_IOWIN)
			reg_write(io, io->sel, v);
		else if (offset == O_EOI)
			ioapic_eoi(io, (uint8_t)v);
		return;
	}
	for (unsigned i = 0; i < size; i++) {
		uint64_t o = (uint64_t)offset + i;
		uint32_t v = 0;
		if ((o & ~3ull) == O_IOREGSEL)
			v = io->sel;
		else if ((o & ~3ull) == O_IOWIN)
			v = reg_read(io, io->sel);
		data[i] = (uint8_t)(v >> (8 * (o & 3)));
	}
}

struct ioapic *ioapic_create(deliver_fn deliver, void *opaque)
{
	struct ioapic *io = calloc(1, sizeof(*io));
	if (!io)
		return NULL;
	io->deliver = deliver;
	io->opaque = opaque;
	ioapic_reset(io);
	return io;
}

void ioapic_destroy(struct ioapic *io)
{
	free(io);
}

void ioapic_reset(struct ioapic *io)
{
	io->id = 0;
	io->sel = 0;
	for (unsigned i = 0; i < IOAPIC_NPINS; i++)
		io->redir[i] = RTE_MASKED;
}

static const char ioapic_tag[] = "ioapic";
#define IOAPIC_STATE_VERSION 1

void ioapic_save(const struct ioapic *io, struct state_writer *w)
{
	sw_begin(w, ioapic_tag, IOAPIC_STATE_VERSION);
	sw_u32(w, io->id);
	sw_u8(w, io->sel);
	for (unsigned i = 0; i < IOAPIC_NPINS; i++)
		sw_u64(w, io->redir[i]);
	sw_u32(w, io->lines);
}

int ioapic_load(struct ioapic *io, struct state_reader *r)
{
	uint64_t redir[IOAPIC_NPINS];
	sr_begin(r, ioapic_tag, IOAPIC_STATE_VERSION);
	uint32_t id = sr_u32(r);
	uint8_t sel = sr_u8(r);
	for (unsigned i = 0; i < IOAPIC_NPINS; i++)
		redir[i] = sr_u64(r);
	uint32_t lines = sr_u32(r);
	sr_check(r, (id & ~ID_MASK) == 0 && lines < (1u << IOAPIC_NPINS));
	for (unsigned i = 0; i < IOAPIC_NPINS; i++) {
		uint64_t e = redir[i];
		sr_check(r, (e & ~(RTE_LO_WRITABLE | RTE_HI_WRITABLE | RTE_REMOTE_IRR)) == 0);
		sr_check(r, !(e & RTE_REMOTE_IRR) || rte_level(e));
	}
	if (r->err)
		return -1;
	io->id = id;
	io->sel = sel;
	memcpy(io->redir, redir, sizeof(redir));
	io->lines = lines;
	return 0;
}
