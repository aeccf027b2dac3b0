#include "vm/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/x86/boot.h"
#include "backend/chardev.h"
#include "util/file.h"
#include "util/log.h"
#include "vm/irqchip.h"

/* ---- stopping ---------------------------------------------------------------------------- */

void vm_stop(struct vm *vm, enum vm_stop_reason why, int status, const char *fmt, ...)
{
	pthread_mutex_lock(&vm->lock);
	if (atomic_load(&vm->stop_reason) == VM_RUNNING) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(vm->stop_msg, sizeof(vm->stop_msg), fmt, ap);
		va_end(ap);
		vm->exit_status = status;
		atomic_store(&vm->stop_reason, why);
		pthread_cond_broadcast(&vm->stopped_cond);
	}
	pthread_mutex_unlock(&vm->lock);
	for (unsigned i = 0; i < vm->nvcpus; i++)
		if (vm->vcpus[i].thread_started &&
		    !pthread_equal(vm->vcpus[i].thread, pthread_self()))
			vm->engine->kick(&vm->vcpus[i]);
}

bool vm_stopping(const struct vm *vm)
{
	return atomic_load(&vm->stop_reason) != VM_RUNNING;
}

void vm_add_device(struct vm *vm, struct device *dev)
{
	dev->next = vm->devices;
	vm->devices = dev;
}

static __thread struct vcpu *current_vcpu;

struct vcpu *vm_current_vcpu(void)
{
	return current_vcpu;
}

void vm_irq_line(struct vm *vm, unsigned gsi, int level)
{
	if (vm->irqchip) {
		irqchip_set_irq(vm->irqchip, gsi, level);
		return;
	}
	if (vm->engine->irq_line(vm, gsi, level) < 0)
		log_warn("interrupt line %u could not be set to %d", gsi, level);
}

int vm_msi(struct vm *vm, uint64_t addr, uint32_t data)
{
	if (vm->irqchip)
		return irqchip_msi(vm->irqchip, addr, data);
	return vm->engine->msi(vm, addr, data);
}

int vm_ioeventfd(struct vm *vm, uint64_t addr, unsigned len, int fd, bool assign)
{
	if (!vm->engine->ioeventfd)
		return 1;
	if (vm->engine->ioeventfd(vm, addr, len, fd, assign) < 0) {
		log_error("cannot %s the notification address 0x%llx in the engine",
			  assign ? "register" : "unregister", (unsigned long long)addr);
		return -1;
	}
	return 0;
}

int vm_irqfd_msi(struct vm *vm, int fd, uint64_t addr, uint32_t data, bool assign)
{
	if (!vm->engine->irqfd_msi || vm->irqchip)
		return 1;
	if (vm->engine->irqfd_msi(vm, fd, addr, data, assign) < 0) {
		log_error("cannot %s an interrupt route (MSI 0x%llx/0x%x) in the engine",
			  assign ? "set" : "remove", (unsigned long long)addr, data);
		return -1;
	}
	return 0;
}

/* ---- the vCPU loop: one short switch over exit reasons ----------------------------------- */

static uint64_t vcpu_rip(struct vcpu *cpu)
{
	struct cpu_state *st = malloc(sizeof(*st));
	uint64_t rip = ~0ull;
	if (st && cpu->vm->engine->get_state(cpu, st) == 0)
		rip = st->rip;
	free(st);
	return rip;
}

/* Where a stopped vCPU was: for -v, so a user who stops a guest that seems stuck sees where. */
static void log_vcpu_position(struct vcpu *cpu)
{
	struct cpu_state *st = malloc(sizeof(*st));
	if (st && cpu->vm->engine->get_state(cpu, st) == 0)
		log_info("vcpu %u stopped at rip 0x%llx (cs 0x%x, cr0 0x%llx, efer 0x%llx, rflags "
			 "0x%llx, "
			 "%s)",
			 cpu->id, (unsigned long long)st->rip, st->seg[SEG_CS].selector,
			 (unsigned long long)st->cr0, (unsigned long long)st->efer,
			 (unsigned long long)st->rflags,
			 st->mp_state == MP_WAIT_FOR_SIPI ? "waiting for SIPI"
			 : st->mp_state == MP_HALTED      ? "halted"
							  : "running");
	free(st);
}

/* Port I/O. An unclaimed port behaves as on a PC's ISA bus: reads float high, writes vanish.
 * Guests probe absent hardware this way, so it is not an error; -v shows each port once. */
void vm_pio(struct vcpu *cpu, uint16_t port, uint8_t *data, unsigned size, bool write)
{
	static _Atomic uint8_t reported[65536 / 8];
	if (bus_access(&cpu->vm->pio, port, data, size, write) == 0)
		return;
	if (!write)
		memset(data, 0xff, size);
	uint8_t bit = (uint8_t)(1u << (port % 8));
	if (log_verbose && !(atomic_fetch_or(&reported[port / 8], bit) & bit))
		log_info("vcpu %u: %s of unclaimed port 0x%x", cpu->id, write ? "write" : "read",
			 port);
}

/* MMIO outside RAM and every device range stops the VM: ferry does not guess what a guest
 * meant by it. */
int vm_mmio(struct vcpu *cpu, uint64_t addr, uint8_t *data, unsigned size, bool write)
{
	if (bus_access(&cpu->vm->mmio, addr, data, size, write) == 0)
		return 0;
	vm_stop(cpu->vm, VM_STOP_ERROR, FERRY_EXIT_GUEST,
		"vcpu %u: %s of %u bytes at unmapped MMIO address 0x%llx, guest rip 0x%llx",
		cpu->id, write ? "write" : "read", size, (unsigned long long)addr,
		(unsigned long long)vcpu_rip(cpu));
	return -1;
}

static void handle_io(struct vcpu *cpu, struct vm_exit *ex)
{
	uint8_t *p = ex->io.data;
	for (uint32_t i = 0; i < ex->io.count; i++, p += ex->io.size)
		vm_pio(cpu, ex->io.port, p, ex->io.size, ex->io.write);
}

static void handle_exit(struct vcpu *cpu, struct vm_exit *ex)
{
	struct vm *vm = cpu->vm;
	switch (ex->reason) {
	case VMEXIT_IO:
		handle_io(cpu, ex);
		break;
	case VMEXIT_MMIO:
		if (bus_access(&vm->mmio, ex->mmio.addr, ex->mmio.data, ex->mmio.len,
			       ex->mmio.write) < 0)
			vm_stop(vm, VM_STOP_ERROR, FERRY_EXIT_GUEST,
				"vcpu %u: %s of %u bytes at unmapped MMIO address 0x%llx, guest "
				"rip 0x%llx",
				cpu->id, ex->mmio.write ? "write" : "read", ex->mmio.len,
				(unsigned long long)ex->mmio.addr,
				(unsigned long long)vcpu_rip(cpu));
		break;
	case VMEXIT_HLT:
		/* Only an engine without an interrupt controller of its own returns this. */
		vm_stop(
		    vm, VM_STOP_ERROR, FERRY_EXIT_GUEST,
		    "vcpu %u: halted at guest rip 0x%llx and engine %s cannot wait for interrupts",
		    cpu->id, (unsigned long long)vcpu_rip(cpu), vm->engine->name);
		break;
	case VMEXIT_SHUTDOWN:
		/* A triple fault resets a PC (Linux's reboot=t relies on it); by default ferry stops
		 * with the reason instead, since it usually means a guest gone wrong. */
		if (vm->cfg->triple_fault_reset) {
			log_info("vcpu %u: triple fault at guest rip 0x%llx: resetting", cpu->id,
				 (unsigned long long)vcpu_rip(cpu));
			vm_stop(vm, VM_STOP_RESET, FERRY_EXIT_OK, "guest reset (triple fault)");
			break;
		}
		vm_stop(vm, VM_STOP_ERROR, FERRY_EXIT_GUEST,
			"vcpu %u: triple fault (shutdown), guest rip 0x%llx", cpu->id,
			(unsigned long long)vcpu_rip(cpu));
		break;
	case VMEXIT_KICKED:
		break;
	case VMEXIT_FAIL:
		vm_stop(vm, VM_STOP_ERROR, FERRY_EXIT_GUEST, "vcpu %u: %s, guest rip 0x%llx",
			cpu->id, ex->fail.msg, (unsigned long long)ex->rip);
		break;
	default:
		vm_stop(vm, VM_STOP_ERROR, FERRY_EXIT_GUEST,
			"vcpu %u: unknown exit %d, guest rip 0x%llx", cpu->id, (int)ex->reason,
			(unsigned long long)vcpu_rip(cpu));
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *cpu = arg;
	struct vm *vm = cpu->vm;
	char name[16];
	snprintf(name, sizeof(name), "vcpu%u", cpu->id);
	current_vcpu = cpu;
	pthread_setname_np(pthread_self(), name);
	while (!vm_stopping(vm)) {
		struct vm_exit ex;
		memset(&ex, 0, sizeof(ex));
		if (vm->engine->vcpu_run(cpu, &ex) < 0 && ex.reason != VMEXIT_FAIL) {
			ex.reason = VMEXIT_FAIL;
			snprintf(ex.fail.msg, sizeof(ex.fail.msg), "engine %s failed to run",
				 vm->engine->name);
		}
		handle_exit(cpu, &ex);
	}
	return NULL;
}

/* ---- creation ---------------------------------------------------------------------------- */

static int load_kernel(struct vm *vm, struct cpu_state *bsp)
{
	const struct vm_config *cfg = vm->cfg;
	char err[256];
	struct file_buf kernel = {0}, initrd = {0};
	int rc = -1;

	if (file_read_all(cfg->kernel, &kernel, err, sizeof(err)) < 0) {
		log_error("kernel: %s", err);
		return -1;
	}
	if (cfg->initrd && file_read_all(cfg->initrd, &initrd, err, sizeof(err)) < 0) {
		log_error("initrd: %s", err);
		goto out;
	}
	struct boot_params_in in = {
	    .kernel = kernel.data,
	    .kernel_len = kernel.len,
	    .initrd = initrd.data,
	    .initrd_len = initrd.len,
	    .cmdline = cfg->append,
	    .ncpus = cfg->smp,
	    .linux_direct = cfg->linux_direct,
	};
	cpu_state_reset(bsp, true);
	if (boot_load(&vm->mem, &in, bsp, err, sizeof(err)) < 0) {
		log_error("%s: %s", cfg->kernel, err);
		goto out;
	}
	if (mptable_write(&vm->mem, cfg->smp, err, sizeof(err)) < 0) {
		log_error("MP table: %s", err);
		goto out;
	}
	if (acpi_write_tables(&vm->mem, cfg->smp, err, sizeof(err)) < 0) {
		log_error("ACPI tables: %s", err);
		goto out;
	}
	log_info("loaded %s (%s)", cfg->kernel,
		 boot_format_name(boot_detect(kernel.data, kernel.len)));
	rc = 0;
out:
	file_buf_free(&kernel);
	file_buf_free(&initrd);
	return rc;
}

/* The loader decides the registers a boot protocol defines; the engine keeps what it owns
 * (local APIC, MSRs, FPU, multiprocessor state). */
static void merge_boot_regs(struct cpu_state *dst, const struct cpu_state *boot)
{
	memcpy(dst->gpr, boot->gpr, sizeof(dst->gpr));
	dst->rip = boot->rip;
	dst->rflags = boot->rflags;
	memcpy(dst->seg, boot->seg, sizeof(dst->seg));
	dst->gdt = boot->gdt;
	dst->idt = boot->idt;
	dst->cr0 = boot->cr0;
	dst->cr3 = boot->cr3;
	dst->cr4 = boot->cr4;
	dst->efer = boot->efer;
}

static int setup_bsp(struct vm *vm, const struct cpu_state *boot)
{
	struct cpu_state *st = malloc(sizeof(*st));
	int rc = -1;
	if (!st)
		return -1;
	if (vm->engine->get_state(&vm->vcpus[0], st) == 0) {
		merge_boot_regs(st, boot);
		rc = vm->engine->set_state(&vm->vcpus[0], st);
	}
	if (rc < 0)
		log_error("cannot set the boot processor's initial state");
	free(st);
	return rc;
}

static int create_devices(struct vm *vm, int *status)
{
	for (struct device_type *t = device_types(); t; t = t->next) {
		int rc = t->create(vm);
		if (rc == DEVICE_BAD_INPUT) {
			*status = FERRY_EXIT_USAGE;
			return -1;
		}
		if (rc < 0) {
			log_error("cannot create device %s", t->name);
			return -1;
		}
	}
	return 0;
}

struct vm *vm_create(const struct vm_config *cfg, const struct engine_ops *engine, int *status)
{
	char err[256];
	struct vm *vm = calloc(1, sizeof(*vm));
	struct cpu_state *boot = malloc(sizeof(*boot));
	*status = FERRY_EXIT_HOST;
	if (!vm || !boot) {
		log_error("out of memory");
		free(vm);
		free(boot);
		return NULL;
	}
	vm->cfg = cfg;
	vm->engine = engine;
	vm->serial = cfg->serial_dev;
	vm->nvcpus = cfg->smp;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->stopped_cond, NULL);
	bus_init(&vm->pio, "pio");
	bus_init(&vm->mmio, "mmio");

	if (gmem_init(&vm->mem, cfg->mem_size, err, sizeof(err)) < 0) {
		log_error("%s", err);
		goto fail;
	}
	/* Bad input is found before any engine resource exists. */
	if (load_kernel(vm, boot) < 0) {
		*status = FERRY_EXIT_USAGE;
		goto fail;
	}
	if (engine->vm_init(vm) < 0)
		goto fail;
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		vm->vcpus[i].vm = vm;
		vm->vcpus[i].id = i;
		if (engine->vcpu_init(&vm->vcpus[i]) < 0)
			goto fail;
	}
	if (create_devices(vm, status) < 0 || setup_bsp(vm, boot) < 0)
		goto fail;
	free(boot);
	*status = FERRY_EXIT_OK;
	return vm;
fail:
	free(boot);
	vm_destroy(vm);
	return NULL;
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	while (vm->devices) {
		struct device *d = vm->devices;
		vm->devices = d->next;
		if (d->destroy)
			d->destroy(d->opaque);
	}
	for (unsigned i = 0; i < vm->nvcpus; i++)
		if (vm->vcpus[i].engine_data)
			vm->engine->vcpu_destroy(&vm->vcpus[i]);
	if (vm->engine_data)
		vm->engine->vm_destroy(vm);
	bus_destroy(&vm->pio);
	bus_destroy(&vm->mmio);
	gmem_destroy(&vm->mem);
	pthread_mutex_destroy(&vm->lock);
	pthread_cond_destroy(&vm->stopped_cond);
	free(vm);
}

/* ---- running ----------------------------------------------------------------------------- */

enum vm_stop_reason vm_run(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		int e = pthread_create(&vm->vcpus[i].thread, NULL, vcpu_thread, &vm->vcpus[i]);
		if (e) {
			vm_stop(vm, VM_STOP_ERROR, FERRY_EXIT_HOST, "cannot start vcpu %u: %s", i,
				strerror(e));
			break;
		}
		vm->vcpus[i].thread_started = true;
	}
	if (vm->serial && chardev_start(vm->serial) < 0)
		vm_stop(vm, VM_STOP_ERROR, FERRY_EXIT_HOST,
			"cannot start the serial console input");

	pthread_mutex_lock(&vm->lock);
	while (atomic_load(&vm->stop_reason) == VM_RUNNING)
		pthread_cond_wait(&vm->stopped_cond, &vm->lock);
	pthread_mutex_unlock(&vm->lock);

	/* vm_stop kicked every vCPU; kick again for threads that had not reached the engine. */
	for (unsigned i = 0; i < vm->nvcpus; i++)
		if (vm->vcpus[i].thread_started) {
			vm->engine->kick(&vm->vcpus[i]);
			pthread_join(vm->vcpus[i].thread, NULL);
			vm->vcpus[i].thread_started = false;
		}
	if (log_verbose)
		for (unsigned i = 0; i < vm->nvcpus; i++)
			log_vcpu_position(&vm->vcpus[i]);
	return (enum vm_stop_reason)atomic_load(&vm->stop_reason);
}
