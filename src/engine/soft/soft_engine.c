/* The soft engine behind the engine seam (engine/engine.h): each vCPU is a soft_cpu whose
 * guest-physical memory is the VM's RAM, and whose port and MMIO accesses go straight to the
 * VM's buses (the interpreter runs in the VM's process, so there is nothing to exit to).
 *
 * The PC's interrupt controllers and timers run in user space beside it (vm/irqchip.h): they
 * answer the CPU's interrupt-acknowledge cycles and own the local APIC's MSRs, and they wake a
 * halted vCPU, which sleeps on its waiter (an idle guest costs no host CPU). Application
 * processors start in real mode, which the soft engine does not run yet: it runs one vCPU. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dev/lapic.h"
#include "engine/soft/soft.h"
#include "util/log.h"
#include "vm/irqchip.h"
#include "vm/vm.h"

/* Where a halted vCPU sleeps until an interrupt or a kick. */
struct waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool woken;
};

struct soft_vm {
	uint64_t *dirty; /* dirty-page bitmap shared by all vCPUs, or NULL */
	struct waiter w[VM_MAX_VCPUS];
};

static void wake(struct vm *vm, unsigned id)
{
	struct soft_vm *sv = vm->engine_data;
	struct waiter *w = &sv->w[id];
	pthread_mutex_lock(&w->lock);
	w->woken = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

/* The interrupt controllers: something may be due for vCPU id. */
static void notify(void *opaque, unsigned id)
{
	struct vm *vm = opaque;
	struct soft_cpu *c = vm->vcpus[id].engine_data;
	if (c)
		soft_cpu_interrupt(c);
	wake(vm, id);
}

static int intack(void *opaque)
{
	struct vcpu *cpu = opaque;
	return irqchip_intack(cpu->vm->irqchip, cpu->id);
}

static int platform_msr(void *opaque, uint32_t index, uint64_t *value, bool write)
{
	struct vcpu *cpu = opaque;
	struct soft_cpu *c = cpu->engine_data;
	return irqchip_msr(cpu->vm->irqchip, cpu->id, index, value, write, soft_tsc(c));
}

static bool soft_available(char *why, size_t why_len)
{
	(void)why;
	(void)why_len;
	return true; /* runs anywhere ferry builds */
}

static void *page_ptr(void *opaque, uint64_t gpa, enum mem_access acc, bool *writable)
{
	struct vcpu *cpu = opaque;
	(void)acc;
	*writable = true;
	return gmem_ptr(&cpu->vm->mem, gpa & ~0xfffull, PAGE_SIZE);
}

static int mmio(void *opaque, uint64_t gpa, uint8_t *data, unsigned size, bool write)
{
	return vm_mmio(opaque, gpa, data, size, write);
}

static void pio(void *opaque, uint16_t port, uint8_t *data, unsigned size, bool write)
{
	vm_pio(opaque, port, data, size, write);
}

static int soft_vm_init(struct vm *vm)
{
	if (vm->nvcpus > 1) {
		log_error("the soft engine runs one vCPU so far (--smp 1): application processors "
			  "start in real mode, which it does not run yet");
		return -1;
	}
	struct soft_vm *sv = calloc(1, sizeof(struct soft_vm));
	if (!sv)
		return -1;
	for (unsigned i = 0; i < VM_MAX_VCPUS; i++) {
		pthread_mutex_init(&sv->w[i].lock, NULL);
		pthread_cond_init(&sv->w[i].cond, NULL);
	}
	vm->engine_data = sv;
	return irqchip_create(vm, notify, vm);
}

static void soft_vm_destroy(struct vm *vm)
{
	struct soft_vm *sv = vm->engine_data;
	for (unsigned i = 0; i < VM_MAX_VCPUS; i++) {
		pthread_mutex_destroy(&sv->w[i].lock);
		pthread_cond_destroy(&sv->w[i].cond);
	}
	free(sv->dirty);
	free(sv);
	vm->engine_data = NULL;
}

static int soft_vcpu_init(struct vcpu *cpu)
{
	struct soft_mem_ops ops = {.page_ptr = page_ptr, .mmio = mmio, .pio = pio, .opaque = cpu};
	struct soft_cpu *c = soft_cpu_create(&ops, false);
	if (!c)
		return -1;
	/* What firmware leaves (as the KVM engine sets too): fast strings on. Linux clears ERMS
	 * when they are off but keeps FSRM, and its memmove then skips the short-length check. */
	c->misc_enable = 1;
	c->apic_id = cpu->id;
	c->ncpus = cpu->vm->nvcpus;
	c->irq = (struct soft_irq_ops){.intack = intack, .msr = platform_msr, .opaque = cpu};
	/* INIT state: the BSP runs, application processors wait for a SIPI. */
	if (cpu->id != 0)
		c->wait_for_sipi = true;
	cpu->engine_data = c;
	return 0;
}

static void soft_vcpu_destroy(struct vcpu *cpu)
{
	const struct soft_cpu *c = cpu->engine_data;
	/* The soft engine's statistics, with -v: hidden faults are TLB refills the guest never
	 * sees, true faults the page faults delivered to it. */
	if (c && log_verbose)
		log_info("vcpu %u (soft): %llu instructions, %llu blocks decoded, %llu TLB refills "
			 "(hidden faults), %llu page faults delivered (true faults)",
			 cpu->id, (unsigned long long)c->icount,
			 (unsigned long long)soft_stats.blocks_decoded,
			 (unsigned long long)soft_stats.tlb_misses,
			 (unsigned long long)soft_stats.page_faults);
	soft_cpu_destroy(cpu->engine_data);
	cpu->engine_data = NULL;
}

static int fail(struct vm_exit *ex, const struct soft_cpu *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct vm_exit *ex, const struct soft_cpu *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	ex->reason = VMEXIT_FAIL;
	vsnprintf(ex->fail.msg, sizeof(ex->fail.msg), fmt, ap);
	va_end(ap);
	ex->rip = c->rip;
	return -1;
}

/* NMI, INIT and SIPI from the local APIC. Returns -1 (with ex filled) for what cannot run. */
static int take_events(struct vcpu *cpu, struct soft_cpu *c, struct vm_exit *ex)
{
	uint8_t sipi = 0;
	unsigned ev = irqchip_take_events(cpu->vm->irqchip, cpu->id, &sipi);
	if (ev & LAPIC_EV_NMI)
		c->nmi_request = 1;
	if (ev & (LAPIC_EV_INIT | LAPIC_EV_SIPI))
		return fail(ex, c,
			    "INIT/SIPI to vcpu %u: the soft engine cannot start processors yet "
			    "(they begin in real mode)",
			    cpu->id);
	return 0;
}

/* hlt: sleep until an interrupt the CPU would take, an NMI, or a kick. */
static void wait_for_interrupt(struct vcpu *cpu, struct soft_cpu *c)
{
	struct soft_vm *sv = cpu->vm->engine_data;
	struct waiter *w = &sv->w[cpu->id];
	for (;;) {
		if (c->exit_request || c->nmi_request)
			return;
		if ((c->rflags & FL_IF) && irqchip_pending(cpu->vm->irqchip, cpu->id))
			return;
		/* Not under w->lock: notify() takes the chip's lock before ours. */
		pthread_mutex_lock(&w->lock);
		while (!w->woken)
			pthread_cond_wait(&w->cond, &w->lock);
		w->woken = false;
		pthread_mutex_unlock(&w->lock);
		uint8_t sipi;
		if (irqchip_take_events(cpu->vm->irqchip, cpu->id, &sipi) & LAPIC_EV_NMI)
			c->nmi_request = 1;
	}
}

static int soft_vcpu_run(struct vcpu *cpu, struct vm_exit *ex)
{
	struct soft_cpu *c = cpu->engine_data;
	if (c->wait_for_sipi) {
		/* Only a SIPI could start it, and the soft engine cannot run its real-mode start. */
		ex->reason = VMEXIT_HLT;
		return 0;
	}
	irqchip_set_tsc_offset(cpu->vm->irqchip, cpu->id, c->tsc_offset);
	if (take_events(cpu, c, ex) < 0)
		return -1;
	switch (soft_cpu_run(c)) {
	case SOFT_EXIT_STOP:
		ex->reason = VMEXIT_KICKED;
		return 0;
	case SOFT_EXIT_HLT:
		wait_for_interrupt(cpu, c);
		ex->reason = VMEXIT_KICKED;
		ex->rip = c->rip;
		return 0;
	case SOFT_EXIT_SHUTDOWN:
		ex->reason = VMEXIT_SHUTDOWN;
		ex->rip = c->rip;
		return 0;
	case SOFT_EXIT_EXCEPTION:
		return fail(ex, c, "exception %d (error code 0x%x) was not delivered",
			    c->exc_vector, c->exc_error);
	case SOFT_EXIT_FAIL:
		return fail(ex, c, "soft engine: %s", c->fail_msg);
	default:
		return fail(ex, c, "soft engine: unexpected exit %d", (int)c->exit);
	}
}

static int soft_get_state(struct vcpu *cpu, struct cpu_state *st)
{
	struct soft_cpu *c = cpu->engine_data;
	soft_cpu_get_state(c, st);
	if (c->wait_for_sipi)
		st->mp_state = MP_WAIT_FOR_SIPI;
	return 0;
}

static int soft_set_state(struct vcpu *cpu, const struct cpu_state *st)
{
	struct soft_cpu *c = cpu->engine_data;
	soft_cpu_set_state(c, st);
	c->wait_for_sipi = st->mp_state == MP_WAIT_FOR_SIPI;
	return 0;
}

static int soft_irq_line(struct vm *vm, unsigned gsi, int level)
{
	if (!vm->irqchip)
		return -1;
	irqchip_set_irq(vm->irqchip, gsi, level);
	return 0;
}

/* A message-signalled interrupt: the address selects the local APIC(s) (Intel SDM 11.11). */
static int soft_msi(struct vm *vm, uint64_t addr, uint32_t data)
{
	return vm->irqchip ? irqchip_msi(vm->irqchip, addr, data) : -1;
}

static int soft_nmi(struct vcpu *cpu)
{
	struct soft_cpu *c = cpu->engine_data;
	c->nmi_request = 1;
	notify(cpu->vm, cpu->id);
	return 0;
}

static int soft_dirty_log_enable(struct vm *vm, bool enable)
{
	struct soft_vm *sv = vm->engine_data;
	/* The bitmap is indexed by guest-physical page (the soft TLB knows gpa, not RAM
	 * offsets); dirty_pages() converts to RAM offsets. */
	uint64_t top = 0;
	for (unsigned i = 0; i < vm->mem.nregions; i++)
		if (vm->mem.region[i].gpa + vm->mem.region[i].size > top)
			top = vm->mem.region[i].gpa + vm->mem.region[i].size;
	uint64_t pages = top / PAGE_SIZE;
	free(sv->dirty);
	sv->dirty = NULL;
	if (enable) {
		sv->dirty = calloc(pages / 64 + 1, 8);
		if (!sv->dirty)
			return -1;
	}
	for (unsigned i = 0; i < vm->nvcpus; i++)
		soft_dirty_log(vm->vcpus[i].engine_data, sv->dirty, enable ? pages : 0);
	return 0;
}

static int soft_dirty_pages(struct vm *vm, uint64_t *bitmap)
{
	struct soft_vm *sv = vm->engine_data;
	if (!sv->dirty)
		return -1;
	memset(bitmap, 0, ((vm->mem.size / PAGE_SIZE + 63) / 64) * 8);
	for (unsigned i = 0; i < vm->mem.nregions; i++) {
		const struct mem_region *r = &vm->mem.region[i];
		uint64_t first_gpa = r->gpa / PAGE_SIZE, first_ram = r->offset / PAGE_SIZE;
		for (uint64_t p = 0; p < r->size / PAGE_SIZE; p++) {
			uint64_t g = first_gpa + p;
			uint64_t bit = 1ull << (g % 64);
			if (__atomic_fetch_and(&sv->dirty[g / 64], ~bit, __ATOMIC_RELAXED) & bit)
				bitmap[(first_ram + p) / 64] |= 1ull << ((first_ram + p) % 64);
		}
	}
	for (unsigned i = 0; i < vm->nvcpus; i++)
		soft_dirty_rearm(vm->vcpus[i].engine_data);
	return 0;
}

static void soft_kick(struct vcpu *cpu)
{
	if (!cpu->engine_data)
		return;
	soft_cpu_stop(cpu->engine_data);
	wake(cpu->vm, cpu->id); /* a halted vCPU sees the stop request */
}

const struct engine_ops soft_engine = {
    .name = "soft",
    .available = soft_available,
    .vm_init = soft_vm_init,
    .vm_destroy = soft_vm_destroy,
    .vcpu_init = soft_vcpu_init,
    .vcpu_destroy = soft_vcpu_destroy,
    .vcpu_run = soft_vcpu_run,
    .get_state = soft_get_state,
    .set_state = soft_set_state,
    .irq_line = soft_irq_line,
    .msi = soft_msi,
    .nmi = soft_nmi,
    .dirty_log = soft_dirty_log_enable,
    .dirty_pages = soft_dirty_pages,
    .kick = soft_kick,
};
