/* The interrupt controllers and timers of a PC in user space, for an engine that has none of its
 * own (the soft engine; KVM keeps them in the kernel). The VM routes interrupt lines here
 * (vm_irq_line); the engine's vCPUs ask here which interrupt to take, and are told through
 * their notify callback when one may be due. Implemented by src/dev/pc_irqchip.c: the 8259 pair,
 * the 8254 PIT (with port 0x61), the I/O APIC and one local APIC per vCPU, under one lock, with
 * a timer thread for the PIT and the local APIC timers. */
#ifndef FERRY_IRQCHIP_H
#define FERRY_IRQCHIP_H

#include <stdbool.h>
#include <stdint.h>

struct vm;
struct irqchip;

/* Called (from any thread, with the chip's lock held: it must not call back into the chip)
 * when an interrupt or event may be due for vCPU cpu. */
typedef void (*irqchip_notify_fn)(void *opaque, unsigned cpu);

/* Creates the chips on vm (ports, MMIO ranges, the timer thread) and makes vm->irqchip point at
 * them. Returns 0, or -1 with the reason reported. */
int irqchip_create(struct vm *vm, irqchip_notify_fn notify, void *opaque);
void irqchip_set_irq(struct irqchip *ic, unsigned gsi, int level);
/* A message-signalled interrupt (Intel SDM 11.11); -1 if addr is not in the MSI window. */
int irqchip_msi(struct irqchip *ic, uint64_t addr, uint32_t data);
/* The vCPU side. now_tsc: that vCPU's TSC now (the local APIC's deadline mode needs it). */
int irqchip_intack(struct irqchip *ic, unsigned cpu);          /* vector to take now, or -1 */
bool irqchip_pending(struct irqchip *ic, unsigned cpu);        /* a maskable interrupt waits */
unsigned irqchip_take_events(struct irqchip *ic, unsigned cpu, /* LAPIC_EV_* (NMI/INIT/SIPI) */
			     uint8_t *sipi_vector);
/* IA32_APIC_BASE and IA32_TSC_DEADLINE: 1 handled, 0 not the chip's, -1 #GP. */
int irqchip_msr(struct irqchip *ic, unsigned cpu, uint32_t index, uint64_t *value, bool write,
		uint64_t now_tsc);
/* The offset of cpu's TSC from the host's monotonic nanoseconds (TSC = ns + offset). */
void irqchip_set_tsc_offset(struct irqchip *ic, unsigned cpu, uint64_t offset);

#endif
