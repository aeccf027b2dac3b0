/* The PC's interrupt controllers and timers in user space (vm/irqchip.h): the wiring between the
 * pure chip models (i8259.c, i8254.c, ioapic.c, lapic.c), the buses, the vCPUs and time.
 *
 * Wiring, as on a PC with an I/O APIC: ISA IRQ n goes to 8259 input n and to I/O APIC pin n,
 * except IRQ 0 (the PIT), which reaches I/O APIC pin 2 (the MP table and MADT say so); GSIs
 * 16-23 go to the I/O APIC only. The 8259's INTR reaches the boot processor through its local
 * APIC's LINT0 (virtual-wire mode, lapic_accepts_pic). The I/O APIC and IPIs deliver to the local
 * APICs their destinations select.
 *
 * One mutex guards every model. A timer thread sleeps until the next PIT edge or local APIC
 * timer deadline (re-armed whenever the guest programs a timer), fires what is due, and tells
 * the vCPUs; missed PIT periods are coalesced (the guest keeps time with kvm-clock, not by
 * counting ticks). A local APIC is reached by MMIO at 0xfee00000 from the vCPU that owns it
 * (vm_current_vcpu). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dev/i8254.h"
#include "dev/i8259.h"
#include "dev/ioapic.h"
#include "dev/lapic.h"
#include "util/log.h"
#include "vm/irqchip.h"
#include "vm/vm.h"

#define IOAPIC_BASE         0xfec00000ull
#define IOAPIC_SIZE         0x1000
#define LAPIC_BASE          0xfee00000ull
#define LAPIC_SIZE          0x1000
#define PORT_SPEAKER        0x61
#define MSR_APIC_BASE       0x1b
#define MSR_TSC_DEADLINE    0x6e0
#define SOFT_TSC_HZ_DEFAULT 1000000000ull

struct irqchip {
	struct vm *vm;
	pthread_mutex_t lock;
	struct i8259 *pic;
	struct i8254 *pit;
	struct ioapic *ioapic;
	struct lapic *lapic[VM_MAX_VCPUS];
	uint64_t tsc_offset[VM_MAX_VCPUS];
	unsigned ncpus;
	uint8_t port61;       /* bits 0 (gate 2) and 1 (speaker data) as written */
	uint64_t pit_checked; /* IRQ 0 edges up to this time have been raised */
	irqchip_notify_fn notify;
	void *notify_opaque;
	struct device dev;
	/* the timer thread */
	pthread_t thread;
	bool thread_started, thread_stop;
	pthread_cond_t timer_cond;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_tsc(const struct irqchip *ic, unsigned cpu, uint64_t ns)
{
	return ns + ic->tsc_offset[cpu];
}

/* ---- delivery ------------------------------------------------------------------------------ */

static bool cpu_has_work(struct irqchip *ic, unsigned cpu)
{
	struct lapic *l = ic->lapic[cpu];
	if (lapic_pending(l) >= 0)
		return true;
	return cpu == 0 && lapic_accepts_pic(l) && i8259_intr(ic->pic);
}

/* After anything that may have made an interrupt due: tell the vCPUs that have one. */
static void notify_cpus(struct irqchip *ic)
{
	for (unsigned i = 0; i < ic->ncpus; i++)
		if (cpu_has_work(ic, i))
			ic->notify(ic->notify_opaque, i);
}

static void deliver_to(struct irqchip *ic, unsigned cpu, unsigned mode, uint8_t vector, bool level)
{
	lapic_deliver(ic->lapic[cpu], mode, vector, level);
	/* NMI, INIT and SIPI are events, not vectors in the IRR: always tell the CPU. */
	ic->notify(ic->notify_opaque, cpu);
}

static void ioapic_deliver(void *opaque, uint8_t dest, bool logical, unsigned mode, uint8_t vector,
			   bool level)
{
	struct irqchip *ic = opaque;
	for (unsigned i = 0; i < ic->ncpus; i++)
		if (lapic_match_dest(ic->lapic[i], dest, logical)) {
			deliver_to(ic, i, mode, vector, level);
			if (mode == 1) /* lowest priority: one processor takes it */
				break;
		}
}

static void send_ipi(void *opaque, struct lapic *from, uint8_t dest, bool logical,
		     unsigned shorthand, unsigned mode, uint8_t vector, bool level)
{
	struct irqchip *ic = opaque;
	for (unsigned i = 0; i < ic->ncpus; i++) {
		struct lapic *l = ic->lapic[i];
		bool self = l == from;
		bool hit = shorthand == 1   ? self
			   : shorthand == 2 ? true
			   : shorthand == 3 ? !self
					    : lapic_match_dest(l, dest, logical);
		if (hit)
			deliver_to(ic, i, mode, vector, level);
	}
}

static void eoi_level(void *opaque, uint8_t vector)
{
	struct irqchip *ic = opaque;
	ioapic_eoi(ic->ioapic, vector);
}

void irqchip_set_irq(struct irqchip *ic, unsigned gsi, int level)
{
	pthread_mutex_lock(&ic->lock);
	if (gsi < 16)
		i8259_set_irq(ic->pic, gsi, level);
	ioapic_set_irq(ic->ioapic, gsi == 0 ? 2 : gsi, level);
	notify_cpus(ic);
	pthread_mutex_unlock(&ic->lock);
}

int irqchip_msi(struct irqchip *ic, uint64_t addr, uint32_t data)
{
	if ((addr >> 20) != 0xfee)
		return -1;
	pthread_mutex_lock(&ic->lock);
	ioapic_deliver(ic, (uint8_t)(addr >> 12), (addr >> 2) & 1, (data >> 8) & 7, (uint8_t)data,
		       (data >> 15) & 1);
	pthread_mutex_unlock(&ic->lock);
	return 0;
}

int irqchip_intack(struct irqchip *ic, unsigned cpu)
{
	int v = -1;
	pthread_mutex_lock(&ic->lock);
	struct lapic *l = ic->lapic[cpu];
	v = lapic_pending(l);
	if (v >= 0)
		lapic_ack(l, (uint8_t)v);
	else if (cpu == 0 && lapic_accepts_pic(l) && i8259_intr(ic->pic))
		v = i8259_intack(ic->pic);
	pthread_mutex_unlock(&ic->lock);
	return v;
}

bool irqchip_pending(struct irqchip *ic, unsigned cpu)
{
	pthread_mutex_lock(&ic->lock);
	bool r = cpu_has_work(ic, cpu);
	pthread_mutex_unlock(&ic->lock);
	return r;
}

unsigned irqchip_take_events(struct irqchip *ic, unsigned cpu, uint8_t *sipi_vector)
{
	pthread_mutex_lock(&ic->lock);
	unsigned ev = lapic_take_events(ic->lapic[cpu], sipi_vector);
	pthread_mutex_unlock(&ic->lock);
	return ev;
}

void irqchip_set_tsc_offset(struct irqchip *ic, unsigned cpu, uint64_t offset)
{
	if (cpu < ic->ncpus)
		ic->tsc_offset[cpu] = offset;
}

/* ---- timers -------------------------------------------------------------------------------- */

/* Fires what is due at now; returns the next deadline. Called with the lock held. */
static uint64_t run_timers(struct irqchip *ic, uint64_t now)
{
	uint64_t edge = i8254_next_irq0(ic->pit, ic->pit_checked);
	if (edge <= now) {
		i8259_set_irq(ic->pic, 0, 1);
		ioapic_set_irq(ic->ioapic, 2, 1);
		i8259_set_irq(ic->pic, 0, 0);
		ioapic_set_irq(ic->ioapic, 2, 0);
	}
	ic->pit_checked = now;
	uint64_t next = i8254_next_irq0(ic->pit, now);
	for (unsigned i = 0; i < ic->ncpus; i++) {
		struct lapic *l = ic->lapic[i];
		if (lapic_timer_deadline(l) <= now)
			lapic_timer_poll(l, now, cpu_tsc(ic, i, now));
		uint64_t d = lapic_timer_deadline(l);
		if (d < next)
			next = d;
	}
	notify_cpus(ic);
	return next;
}

static void *timer_thread(void *arg)
{
	struct irqchip *ic = arg;
	pthread_setname_np(pthread_self(), "timers");
	pthread_mutex_lock(&ic->lock);
	while (!ic->thread_stop) {
		uint64_t next = run_timers(ic, now_ns());
		if (next == UINT64_MAX) {
			pthread_cond_wait(&ic->timer_cond, &ic->lock);
		} else {
			struct timespec ts = {.tv_sec = (time_t)(next / 1000000000ull),
					      .tv_nsec = (long)(next % 1000000000ull)};
			pthread_cond_timedwait(&ic->timer_cond, &ic->lock, &ts);
		}
	}
	pthread_mutex_unlock(&ic->lock);
	return NULL;
}

/* The guest reprogrammed a timer: the thread re-computes its deadline. Lock held. */
static void timers_changed(struct irqchip *ic)
{
	pthread_cond_signal(&ic->timer_cond);
}

/* ---- guest accesses ------------------------------------------------------------------------ */

static void port_io(struct irqchip *ic, uint16_t port, uint8_t *data, unsigned size, bool write)
{
	pthread_mutex_lock(&ic->lock);
	uint64_t now = now_ns();
	for (unsigned i = 0; i < size; i++) {
		uint16_t p = (uint16_t)(port + i);
		uint8_t *d = &data[i];
		if (p >= 0x40 && p <= 0x43) {
			if (write) {
				i8254_write(ic->pit, p - 0x40, *d, now);
				timers_changed(ic);
			} else {
				*d = i8254_read(ic->pit, p - 0x40, now);
			}
		} else if (p == PORT_SPEAKER) {
			if (write) {
				ic->port61 = *d & 3;
				i8254_set_gate(ic->pit, 2, *d & 1, now);
			} else {
				/* bit 4: the DRAM refresh toggle (every 15 us); bit 5: OUT2. */
				bool refresh = (now / 15000) & 1;
				*d = (uint8_t)(ic->port61 | (refresh ? 0x10 : 0) |
					       (i8254_out(ic->pit, 2, now) ? 0x20 : 0));
			}
		} else if (write) {
			i8259_write(ic->pic, p, *d);
		} else {
			*d = i8259_read(ic->pic, p);
		}
	}
	notify_cpus(ic);
	pthread_mutex_unlock(&ic->lock);
}

static void pic_master_io(void *opaque, uint64_t off, uint8_t *data, unsigned size, bool write)
{
	port_io(opaque, (uint16_t)(0x20 + off), data, size, write);
}
static void pic_slave_io(void *opaque, uint64_t off, uint8_t *data, unsigned size, bool write)
{
	port_io(opaque, (uint16_t)(0xa0 + off), data, size, write);
}
static void elcr_io(void *opaque, uint64_t off, uint8_t *data, unsigned size, bool write)
{
	port_io(opaque, (uint16_t)(0x4d0 + off), data, size, write);
}
static void pit_io(void *opaque, uint64_t off, uint8_t *data, unsigned size, bool write)
{
	port_io(opaque, (uint16_t)(0x40 + off), data, size, write);
}
static void speaker_io(void *opaque, uint64_t off, uint8_t *data, unsigned size, bool write)
{
	port_io(opaque, (uint16_t)(PORT_SPEAKER + off), data, size, write);
}

static void ioapic_io(void *opaque, uint64_t off, uint8_t *data, unsigned size, bool write)
{
	struct irqchip *ic = opaque;
	pthread_mutex_lock(&ic->lock);
	ioapic_mmio(ic->ioapic, (uint32_t)off, data, size, write);
	notify_cpus(ic);
	pthread_mutex_unlock(&ic->lock);
}

static void lapic_io(void *opaque, uint64_t off, uint8_t *data, unsigned size, bool write)
{
	struct irqchip *ic = opaque;
	struct vcpu *cpu = vm_current_vcpu();
	unsigned id = cpu && cpu->vm == ic->vm ? cpu->id : 0;
	pthread_mutex_lock(&ic->lock);
	uint64_t now = now_ns();
	lapic_mmio(ic->lapic[id], (uint32_t)off, data, size, write, now, cpu_tsc(ic, id, now));
	if (write)
		timers_changed(ic);
	notify_cpus(ic);
	pthread_mutex_unlock(&ic->lock);
}

int irqchip_msr(struct irqchip *ic, unsigned cpu, uint32_t index, uint64_t *value, bool write,
		uint64_t now_tsc)
{
	if (index != MSR_APIC_BASE && index != MSR_TSC_DEADLINE)
		return 0;
	int r = 1;
	pthread_mutex_lock(&ic->lock);
	struct lapic *l = ic->lapic[cpu];
	if (index == MSR_APIC_BASE) {
		if (!write) {
			*value = lapic_get_base(l);
		} else if ((*value & ~0xfffull) != LAPIC_BASE && (*value & (1ull << 11))) {
			/* The MMIO range is registered at the architectural address only. */
			log_warn("vcpu %u: moving the local APIC to 0x%llx is not supported", cpu,
				 (unsigned long long)(*value & ~0xfffull));
			r = -1;
		} else {
			r = lapic_set_base(l, *value) < 0 ? -1 : 1;
		}
	} else if (!write) {
		*value = lapic_get_tsc_deadline(l);
	} else {
		uint64_t now = now_ns();
		(void)now_tsc;
		lapic_set_tsc_deadline(l, *value, now, cpu_tsc(ic, cpu, now));
		timers_changed(ic);
	}
	notify_cpus(ic);
	pthread_mutex_unlock(&ic->lock);
	return r;
}

/* ---- state and life cycle ------------------------------------------------------------------ */

static void lapic_write32(struct lapic *l, uint32_t reg, uint32_t v)
{
	uint8_t b[4];
	memcpy(b, &v, 4);
	lapic_mmio(l, reg, b, 4, true, 0, 0);
}

/* The local APIC as firmware leaves it (as the KVM engine sets it up too): software-enabled,
 * the BSP's LINT0 in virtual-wire (ExtINT) mode so the 8259 reaches it, LINT1 as NMI. */
static void firmware_lapic(struct lapic *l, bool bsp)
{
	lapic_reset(l, bsp);
	lapic_write32(l, 0xf0, 0x1ff);
	lapic_write32(l, 0x350, bsp ? 0x700 : 0x10700);
	lapic_write32(l, 0x360, 0x400);
}

static const char irqchip_tag[8] = "irqchip";

static void irqchip_save(void *opaque, struct state_writer *w)
{
	struct irqchip *ic = opaque;
	pthread_mutex_lock(&ic->lock);
	sw_begin(w, irqchip_tag, 1);
	sw_u8(w, ic->port61);
	sw_u64(w, ic->pit_checked);
	sw_u32(w, ic->ncpus);
	i8259_save(ic->pic, w);
	i8254_save(ic->pit, w);
	ioapic_save(ic->ioapic, w);
	for (unsigned i = 0; i < ic->ncpus; i++)
		lapic_save(ic->lapic[i], w);
	pthread_mutex_unlock(&ic->lock);
}

static int irqchip_load(void *opaque, struct state_reader *r)
{
	struct irqchip *ic = opaque;
	if (sr_begin(r, irqchip_tag, 1) == 0)
		return -1;
	pthread_mutex_lock(&ic->lock);
	uint8_t port61 = sr_u8(r);
	uint64_t checked = sr_u64(r);
	uint32_t n = sr_u32(r);
	sr_check(r, port61 <= 3 && n == ic->ncpus);
	int rc = -1;
	if (!r->err && i8259_load(ic->pic, r) == 0 && i8254_load(ic->pit, r) == 0 &&
	    ioapic_load(ic->ioapic, r) == 0) {
		rc = 0;
		for (unsigned i = 0; i < ic->ncpus && rc == 0; i++)
			rc = lapic_load(ic->lapic[i], r);
	}
	if (rc == 0) {
		ic->port61 = port61;
		ic->pit_checked = checked;
		timers_changed(ic);
		notify_cpus(ic);
	}
	pthread_mutex_unlock(&ic->lock);
	return rc;
}

static void irqchip_destroy(void *opaque)
{
	struct irqchip *ic = opaque;
	if (ic->thread_started) {
		pthread_mutex_lock(&ic->lock);
		ic->thread_stop = true;
		pthread_cond_signal(&ic->timer_cond);
		pthread_mutex_unlock(&ic->lock);
		pthread_join(ic->thread, NULL);
	}
	if (ic->vm && ic->vm->irqchip == ic)
		ic->vm->irqchip = NULL;
	for (unsigned i = 0; i < ic->ncpus; i++)
		lapic_destroy(ic->lapic[i]);
	ioapic_destroy(ic->ioapic);
	i8254_destroy(ic->pit);
	i8259_destroy(ic->pic);
	pthread_cond_destroy(&ic->timer_cond);
	pthread_mutex_destroy(&ic->lock);
	free(ic);
}

int irqchip_create(struct vm *vm, irqchip_notify_fn notify, void *opaque)
{
	struct irqchip *ic = calloc(1, sizeof(*ic));
	if (!ic) {
		log_error("interrupt controllers: out of memory");
		return -1;
	}
	ic->vm = vm;
	ic->notify = notify;
	ic->notify_opaque = opaque;
	ic->ncpus = vm->nvcpus;
	pthread_mutex_init(&ic->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ic->timer_cond, &ca);
	pthread_condattr_destroy(&ca);
	ic->dev = (struct device){.name = "irqchip",
				  .opaque = ic,
				  .save = irqchip_save,
				  .load = irqchip_load,
				  .destroy = irqchip_destroy};
	struct lapic_host host = {.opaque = ic, .send_ipi = send_ipi, .eoi_level = eoi_level};
	ic->pic = i8259_create();
	ic->pit = i8254_create();
	ic->ioapic = ioapic_create(ioapic_deliver, ic);
	bool ok = ic->pic && ic->pit && ic->ioapic;
	for (unsigned i = 0; ok && i < ic->ncpus; i++) {
		ic->lapic[i] = lapic_create((uint8_t)i, SOFT_TSC_HZ_DEFAULT, &host);
		ok = ic->lapic[i] != NULL;
		if (ok)
			firmware_lapic(ic->lapic[i], i == 0);
	}
	if (!ok) {
		log_error("interrupt controllers: out of memory");
		irqchip_destroy(ic);
		return -1;
	}
	uint64_t now = now_ns();
	i8254_reset(ic->pit, now);
	ic->pit_checked = now;
	if (bus_register(&vm->pio, 0x20, 2, pic_master_io, ic, "pic") < 0 ||
	    bus_register(&vm->pio, 0xa0, 2, pic_slave_io, ic, "pic") < 0 ||
	    bus_register(&vm->pio, 0x4d0, 2, elcr_io, ic, "elcr") < 0 ||
	    bus_register(&vm->pio, 0x40, 4, pit_io, ic, "pit") < 0 ||
	    bus_register(&vm->pio, PORT_SPEAKER, 1, speaker_io, ic, "port61") < 0 ||
	    bus_register(&vm->mmio, IOAPIC_BASE, IOAPIC_SIZE, ioapic_io, ic, "ioapic") < 0 ||
	    bus_register(&vm->mmio, LAPIC_BASE, LAPIC_SIZE, lapic_io, ic, "lapic") < 0) {
		log_error("interrupt controllers: their ports or addresses are taken");
		irqchip_destroy(ic);
		return -1;
	}
	int e = pthread_create(&ic->thread, NULL, timer_thread, ic);
	if (e) {
		log_error("interrupt controllers: cannot start the timer thread: %s", strerror(e));
		irqchip_destroy(ic);
		return -1;
	}
	ic->thread_started = true;
	vm->irqchip = ic;
	vm_add_device(vm, &ic->dev);
	return 0;
}
