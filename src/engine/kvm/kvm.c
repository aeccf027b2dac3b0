/* The KVM engine: guest code runs on the host CPU through /dev/kvm; ferry sees only exits.
 * The local APIC, 8259 PICs, I/O APIC and PIT are KVM's in-kernel models, so interrupt
 * delivery and HLT never leave the kernel. */
#include "engine/kvm/kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/log.h"
#include "vm/vm.h"

#define KICK_SIGNAL SIGUSR1
/* Addresses in the 32-bit hole that Intel's KVM needs for real-mode emulation. */
#define KVM_TSS_ADDR          0xfffbd000ul
#define KVM_IDENTITY_MAP_ADDR 0xfffbc000ull

static const struct {
	int cap;
	const char *name;
} required_caps[] = {
    {KVM_CAP_USER_MEMORY, "USER_MEMORY"},
    {KVM_CAP_IRQCHIP, "IRQCHIP"},
    {KVM_CAP_PIT2, "PIT2"},
    {KVM_CAP_EXT_CPUID, "EXT_CPUID"},
    {KVM_CAP_SET_TSS_ADDR, "SET_TSS_ADDR"},
    {KVM_CAP_IMMEDIATE_EXIT, "IMMEDIATE_EXIT"},
    {KVM_CAP_MP_STATE, "MP_STATE"},
    {KVM_CAP_VCPU_EVENTS, "VCPU_EVENTS"},
    {KVM_CAP_XSAVE, "XSAVE"},
    {KVM_CAP_XCRS, "XCRS"},
    {KVM_CAP_DEBUGREGS, "DEBUGREGS"},
    {KVM_CAP_SIGNAL_MSI, "SIGNAL_MSI"},
    {KVM_CAP_IRQ_INJECT_STATUS, "IRQ_INJECT_STATUS"},
    {KVM_CAP_IOEVENTFD, "IOEVENTFD"},
    {KVM_CAP_IRQFD, "IRQFD"},
    {KVM_CAP_IRQ_ROUTING, "IRQ_ROUTING"},
};

static int open_kvm(char *why, size_t why_len)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return set_err(
			    why, why_len,
			    "/dev/kvm does not exist (no KVM on this host: load kvm_intel or "
			    "kvm_amd, or use another engine)");
		if (errno == EACCES || errno == EPERM)
			return set_err(
			    why, why_len,
			    "no permission to open /dev/kvm (join the kvm group or run as root)");
		return set_err(why, why_len, "cannot open /dev/kvm: %s", strerror(errno));
	}
	int version = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (version != KVM_API_VERSION) {
		close(fd);
		return set_err(why, why_len, "KVM API version %d, ferry needs %d", version,
			       KVM_API_VERSION);
	}
	for (size_t i = 0; i < sizeof(required_caps) / sizeof(required_caps[0]); i++)
		if (ioctl(fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0) {
			close(fd);
			return set_err(why, why_len, "KVM lacks the capability KVM_CAP_%s",
				       required_caps[i].name);
		}
	return fd;
}

static bool kvm_available(char *why, size_t why_len)
{
	int fd = open_kvm(why, why_len);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static int set_slots(struct vm *vm, bool log_dirty)
{
	struct kvm_vm *kv = vm->engine_data;
	for (unsigned i = 0; i < vm->mem.nregions; i++) {
		const struct mem_region *r = &vm->mem.region[i];
		struct kvm_userspace_memory_region slot = {
		    .slot = i,
		    .flags = log_dirty ? KVM_MEM_LOG_DIRTY_PAGES : 0,
		    .guest_phys_addr = r->gpa,
		    .memory_size = r->size,
		    .userspace_addr = (uint64_t)(uintptr_t)(vm->mem.host + r->offset),
		};
		if (ioctl(kv->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0) {
			log_error("KVM_SET_USER_MEMORY_REGION slot %u: %s", i, strerror(errno));
			return -1;
		}
	}
	kv->dirty_logging = log_dirty;
	return 0;
}

static struct kvm_cpuid2 *get_supported_cpuid(int sys_fd)
{
	for (unsigned n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return NULL;
		c->nent = n;
		if (ioctl(sys_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
			return c;
		free(c);
		if (errno != E2BIG)
			return NULL;
	}
	return NULL;
}

static void kick_handler(int sig)
{
	(void)sig; /* only there so that KVM_RUN returns EINTR */
}

static int kvm_vm_init(struct vm *vm)
{
	char why[256];
	struct kvm_vm *kv = calloc(1, sizeof(*kv));
	if (!kv)
		return -1;
	kv->vm_fd = -1;
	kvm_routes_init(kv);
	vm->engine_data = kv;
	kv->sys_fd = open_kvm(why, sizeof(why));
	if (kv->sys_fd < 0) {
		log_error("%s", why);
		return -1;
	}
	struct sigaction sa = {.sa_handler = kick_handler};
	sigemptyset(&sa.sa_mask);
	sigaction(KICK_SIGNAL, &sa, NULL);

	int mmap_size = ioctl(kv->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	kv->vm_fd = ioctl(kv->sys_fd, KVM_CREATE_VM, 0);
	if (kv->vm_fd < 0 || mmap_size <= 0) {
		log_error("KVM_CREATE_VM: %s", strerror(errno));
		return -1;
	}
	kv->run_size = (size_t)mmap_size;
	int max_vcpus = ioctl(kv->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (max_vcpus <= 0)
		max_vcpus = ioctl(kv->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	if (max_vcpus > 0 && vm->nvcpus > (unsigned)max_vcpus) {
		log_error("KVM on this host runs at most %d vCPUs; --smp %u asks for more",
			  max_vcpus, vm->nvcpus);
		return -1;
	}
	if (ioctl(kv->vm_fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR) < 0 ||
	    ioctl(kv->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &(uint64_t){KVM_IDENTITY_MAP_ADDR}) < 0) {
		log_error("KVM_SET_TSS_ADDR: %s", strerror(errno));
		return -1;
	}
	if (set_slots(vm, false) < 0)
		return -1;
	if (ioctl(kv->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
		log_error("KVM_CREATE_IRQCHIP: %s", strerror(errno));
		return -1;
	}
	struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
	if (ioctl(kv->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
		log_error("KVM_CREATE_PIT2: %s", strerror(errno));
		return -1;
	}
	kv->supported_cpuid = get_supported_cpuid(kv->sys_fd);
	if (!kv->supported_cpuid) {
		log_error("KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
		return -1;
	}
	return kvm_msr_list_init(kv);
}

static void kvm_vm_destroy(struct vm *vm)
{
	struct kvm_vm *kv = vm->engine_data;
	if (kv->vm_fd >= 0)
		close(kv->vm_fd);
	if (kv->sys_fd >= 0)
		close(kv->sys_fd);
	free(kv->supported_cpuid);
	free(kv->msr_list);
	pthread_mutex_destroy(&kv->route_lock);
	free(kv);
	vm->engine_data = NULL;
}

/* What firmware leaves in the MSRs before it hands over to an OS loader: the SYSENTER and
 * SYSCALL MSRs clear, the TSC at zero, fast strings on. */
static int set_boot_msrs(struct vcpu *cpu)
{
	static const struct cpu_msr boot_msrs[] = {
	    {MSR_IA32_SYSENTER_CS, 0, 0},
	    {MSR_IA32_SYSENTER_ESP, 0, 0},
	    {MSR_IA32_SYSENTER_EIP, 0, 0},
	    {MSR_STAR, 0, 0},
	    {MSR_LSTAR, 0, 0},
	    {MSR_CSTAR, 0, 0},
	    {MSR_SFMASK, 0, 0},
	    {MSR_KERNEL_GS_BASE, 0, 0},
	    {MSR_IA32_TSC, 0, 0},
	    {MSR_IA32_MISC_ENABLE, 0, 1},
	};
	struct kvm_vcpu *kc = cpu->engine_data;
	if (kvm_put_msrs(kc->fd, boot_msrs, sizeof(boot_msrs) / sizeof(boot_msrs[0])) < 0) {
		log_error("vcpu %u: KVM refused the boot MSR values", cpu->id);
		return -1;
	}
	return 0;
}

/* Local APIC as firmware leaves it: enabled, the BSP's LINT0 in virtual-wire (ExtINT) mode so
 * the 8259's interrupts reach it, LINT1 as NMI on every CPU (MP spec, virtual wire mode). */
static int set_boot_lapic(struct vcpu *cpu)
{
	struct kvm_vcpu *kc = cpu->engine_data;
	struct kvm_lapic_state l;
	if (ioctl(kc->fd, KVM_GET_LAPIC, &l) < 0)
		return -1;
	uint32_t svr = 0x1ff, lvt0 = cpu->id == 0 ? 0x700 : 0x10700, lvt1 = 0x400;
	memcpy(&l.regs[0xf0], &svr, 4);
	memcpy(&l.regs[0x350], &lvt0, 4);
	memcpy(&l.regs[0x360], &lvt1, 4);
	return ioctl(kc->fd, KVM_SET_LAPIC, &l);
}

static int kvm_vcpu_init(struct vcpu *cpu)
{
	struct kvm_vm *kv = cpu->vm->engine_data;
	struct kvm_vcpu *kc = calloc(1, sizeof(*kc));
	if (!kc)
		return -1;
	kc->fd = ioctl(kv->vm_fd, KVM_CREATE_VCPU, cpu->id);
	cpu->engine_data = kc;
	if (kc->fd < 0) {
		log_error("KVM_CREATE_VCPU %u: %s", cpu->id, strerror(errno));
		return -1;
	}
	void *run = mmap(NULL, kv->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, kc->fd, 0);
	if (run == MAP_FAILED) {
		log_error("vcpu %u: cannot map kvm_run: %s", cpu->id, strerror(errno));
		return -1;
	}
	kc->run = run;
	if (kvm_cpuid_setup(cpu, kv) < 0 || set_boot_msrs(cpu) < 0)
		return -1;
	if (set_boot_lapic(cpu) < 0) {
		log_error("vcpu %u: cannot set up the local APIC: %s", cpu->id, strerror(errno));
		return -1;
	}
	return 0;
}

static void kvm_vcpu_destroy(struct vcpu *cpu)
{
	struct kvm_vcpu *kc = cpu->engine_data;
	struct kvm_vm *kv = cpu->vm->engine_data;
	if (kc->run)
		munmap(kc->run, kv->run_size);
	if (kc->fd >= 0)
		close(kc->fd);
	free(kc);
	cpu->engine_data = NULL;
}

static uint64_t current_rip(struct kvm_vcpu *kc)
{
	struct kvm_regs r;
	return ioctl(kc->fd, KVM_GET_REGS, &r) == 0 ? r.rip : ~0ull;
}

static int fail(struct vm_exit *ex, struct kvm_vcpu *kc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct vm_exit *ex, struct kvm_vcpu *kc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	ex->reason = VMEXIT_FAIL;
	vsnprintf(ex->fail.msg, sizeof(ex->fail.msg), fmt, ap);
	va_end(ap);
	ex->rip = current_rip(kc);
	return -1;
}

static int internal_error(struct vm_exit *ex, struct kvm_vcpu *kc)
{
	struct kvm_run *run = kc->run;
	char bytes[64] = "";
	if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION &&
	    (run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) {
		size_t off = 0;
		unsigned n = run->emulation_failure.insn_size;
		for (unsigned i = 0; i < n && i < 15 && off + 4 < sizeof(bytes); i++)
			off += (size_t)snprintf(bytes + off, sizeof(bytes) - off, " %02x",
						run->emulation_failure.insn_bytes[i]);
	}
	return fail(ex, kc, "KVM internal error, suberror %u%s%s%s", run->internal.suberror,
		    run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ? " (emulation failure)"
									   : "",
		    bytes[0] ? ", instruction bytes" : "", bytes);
}

static int kvm_vcpu_run(struct vcpu *cpu, struct vm_exit *ex)
{
	struct kvm_vcpu *kc = cpu->engine_data;
	struct kvm_run *run = kc->run;
	if (ioctl(kc->fd, KVM_RUN, 0) < 0) {
		if (errno == EINTR || errno == EAGAIN) {
			run->immediate_exit = 0;
			ex->reason = VMEXIT_KICKED;
			return 0;
		}
		return fail(ex, kc, "KVM_RUN failed: %s", strerror(errno));
	}
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		ex->reason = VMEXIT_IO;
		ex->io.port = run->io.port;
		ex->io.size = run->io.size;
		ex->io.write = run->io.direction == KVM_EXIT_IO_OUT;
		ex->io.count = run->io.count;
		ex->io.data = (uint8_t *)run + run->io.data_offset;
		/* The data area lives inside the kvm_run page set; refuse anything that says not. */
		if (run->io.data_offset >= 4096 &&
		    (uint64_t)run->io.data_offset + (uint64_t)run->io.size * run->io.count <=
			((struct kvm_vm *)cpu->vm->engine_data)->run_size)
			return 0;
		return fail(ex, kc, "KVM reported port I/O data outside kvm_run");
	case KVM_EXIT_MMIO:
		ex->reason = VMEXIT_MMIO;
		ex->mmio.addr = run->mmio.phys_addr;
		ex->mmio.len = (uint8_t)(run->mmio.len > 8 ? 8 : run->mmio.len);
		ex->mmio.write = run->mmio.is_write;
		ex->mmio.data = run->mmio.data;
		return 0;
	case KVM_EXIT_HLT:
		ex->reason = VMEXIT_HLT;
		return 0;
	case KVM_EXIT_SHUTDOWN:
		ex->reason = VMEXIT_SHUTDOWN;
		ex->rip = current_rip(kc);
		return 0;
	case KVM_EXIT_INTR:
		run->immediate_exit = 0;
		ex->reason = VMEXIT_KICKED;
		return 0;
	case KVM_EXIT_INTERNAL_ERROR:
		return internal_error(ex, kc);
	case KVM_EXIT_FAIL_ENTRY:
		return fail(ex, kc, "VM entry failed, hardware reason 0x%llx",
			    (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
	case KVM_EXIT_UNKNOWN:
		return fail(ex, kc, "unknown KVM exit, hardware reason 0x%llx",
			    (unsigned long long)run->hw.hardware_exit_reason);
	case KVM_EXIT_SYSTEM_EVENT:
		return fail(ex, kc, "unhandled KVM system event type %u", run->system_event.type);
	default:
		return fail(ex, kc, "unhandled KVM exit reason %u", run->exit_reason);
	}
}

static int kvm_irq_line(struct vm *vm, unsigned gsi, int level)
{
	struct kvm_vm *kv = vm->engine_data;
	struct kvm_irq_level irq = {.irq = gsi, .level = (uint32_t)level};
	return ioctl(kv->vm_fd, KVM_IRQ_LINE_STATUS, &irq) < 0 ? -1 : 0;
}

static int kvm_msi(struct vm *vm, uint64_t addr, uint32_t data)
{
	struct kvm_vm *kv = vm->engine_data;
	struct kvm_msi msi = {
	    .address_lo = (uint32_t)addr, .address_hi = (uint32_t)(addr >> 32), .data = data};
	return ioctl(kv->vm_fd, KVM_SIGNAL_MSI, &msi) < 0 ? -1 : 0;
}

static int kvm_nmi(struct vcpu *cpu)
{
	struct kvm_vcpu *kc = cpu->engine_data;
	return ioctl(kc->fd, KVM_NMI, 0) < 0 ? -1 : 0;
}

static int kvm_dirty_log(struct vm *vm, bool enable)
{
	return set_slots(vm, enable);
}

static int kvm_dirty_pages(struct vm *vm, uint64_t *bitmap)
{
	struct kvm_vm *kv = vm->engine_data;
	if (!kv->dirty_logging)
		return -1;
	memset(bitmap, 0, ((vm->mem.size / PAGE_SIZE + 63) / 64) * 8);
	for (unsigned i = 0; i < vm->mem.nregions; i++) {
		const struct mem_region *r = &vm->mem.region[i];
		uint64_t pages = r->size / PAGE_SIZE, first = r->offset / PAGE_SIZE;
		uint64_t *slot_bits = calloc((pages + 63) / 64, 8);
		if (!slot_bits)
			return -1;
		struct kvm_dirty_log log = {.slot = i, .dirty_bitmap = slot_bits};
		if (ioctl(kv->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
			free(slot_bits);
			return -1;
		}
		for (uint64_t p = 0; p < pages; p++)
			if (slot_bits[p / 64] >> (p % 64) & 1)
				bitmap[(first + p) / 64] |= 1ull << ((first + p) % 64);
		free(slot_bits);
	}
	return 0;
}

static void kvm_kick(struct vcpu *cpu)
{
	struct kvm_vcpu *kc = cpu->engine_data;
	if (!kc || !kc->run)
		return;
	/* immediate_exit covers a thread that has not entered KVM_RUN yet; the signal covers one
	 * that is inside it. */
	__atomic_store_n(&kc->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (atomic_load(&cpu->thread_started))
		pthread_kill(cpu->thread, KICK_SIGNAL);
}

const struct engine_ops kvm_engine = {
    .name = "kvm",
    .available = kvm_available,
    .vm_init = kvm_vm_init,
    .vm_destroy = kvm_vm_destroy,
    .vcpu_init = kvm_vcpu_init,
    .vcpu_destroy = kvm_vcpu_destroy,
    .vcpu_run = kvm_vcpu_run,
    .get_state = kvm_get_state,
    .set_state = kvm_set_state,
    .irq_line = kvm_irq_line,
    .msi = kvm_msi,
    .nmi = kvm_nmi,
    .dirty_log = kvm_dirty_log,
    .dirty_pages = kvm_dirty_pages,
    .ioeventfd = kvm_ioeventfd,
    .irqfd_msi = kvm_irqfd_msi,
    .kick = kvm_kick,
};
