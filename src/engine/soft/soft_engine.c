/* The soft engine behind the engine seam (engine/engine.h): each vCPU is a soft_cpu whose
 * guest-physical memory is the VM's RAM, and whose port and MMIO accesses go straight to the
 * VM's buses (the interpreter runs in the VM's process, so there is nothing to exit to).
 *
 * What part 1 of the engine does not have yet fails closed with the reason: exception and
 * interrupt delivery through the IDT, an interrupt controller, and HLT waiting for interrupts
 * (src/engine/soft/README.md). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/soft/soft.h"
#include "util/log.h"
#include "vm/vm.h"

struct soft_vm {
	uint64_t *dirty; /* dirty-page bitmap shared by all vCPUs, or NULL */
};

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
	vm->engine_data = calloc(1, sizeof(struct soft_vm));
	return vm->engine_data ? 0 : -1;
}

static void soft_vm_destroy(struct vm *vm)
{
	struct soft_vm *sv = vm->engine_data;
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
	/* INIT state: the BSP runs, application processors wait for a SIPI (which needs the
	 * local APIC of part 2). */
	if (cpu->id != 0)
		c->wait_for_sipi = true;
	cpu->engine_data = c;
	return 0;
}

static void soft_vcpu_destroy(struct vcpu *cpu)
{
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

static int soft_vcpu_run(struct vcpu *cpu, struct vm_exit *ex)
{
	struct soft_cpu *c = cpu->engine_data;
	if (c->wait_for_sipi) {
		/* Nothing can wake it in part 1: report rather than spin. */
		ex->reason = VMEXIT_HLT;
		return 0;
	}
	switch (soft_cpu_run(c)) {
	case SOFT_EXIT_STOP:
		ex->reason = VMEXIT_KICKED;
		return 0;
	case SOFT_EXIT_HLT:
		ex->reason = VMEXIT_HLT;
		ex->rip = c->rip;
		return 0;
	case SOFT_EXIT_EXCEPTION:
		return fail(ex, c,
			    "exception %d (error code 0x%x) and the soft engine cannot deliver "
			    "exceptions through the IDT yet",
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
	(void)vm;
	(void)gsi;
	(void)level;
	return -1; /* no interrupt controller yet: the caller reports it */
}

static int soft_msi(struct vm *vm, uint64_t addr, uint32_t data)
{
	(void)vm;
	(void)addr;
	(void)data;
	return -1;
}

static int soft_nmi(struct vcpu *cpu)
{
	(void)cpu;
	return -1;
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
	if (cpu->engine_data)
		soft_cpu_stop(cpu->engine_data);
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
