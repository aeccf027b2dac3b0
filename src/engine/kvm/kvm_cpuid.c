/* The CPUID model a KVM guest sees: what the host and KVM support, minus what ferry does not
 * offer, with the topology of this VM (one package, one thread per core, smp cores) and the
 * hypervisor bit, identical on every vCPU except for the APIC ID. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "engine/kvm/kvm.h"
#include "util/log.h"
#include "vm/vm.h"

#define CPUID1_ECX_VMX        (1u << 5)
#define CPUID1_ECX_HYPERVISOR (1u << 31)
#define CPUID1_EDX_HTT        (1u << 28)
#define CPUID80000001_ECX_SVM (1u << 2)

static void fix_entry(struct kvm_cpuid_entry2 *e, unsigned apic_id, unsigned ncpus)
{
	switch (e->function) {
	case 1:
		/* No nested virtualization: ferry does not offer it. */
		e->ecx = (e->ecx & ~CPUID1_ECX_VMX) | CPUID1_ECX_HYPERVISOR;
		/* EBX: APIC ID, logical processors per package, CLFLUSH line size 64 (8 x 8). */
		e->ebx = (apic_id << 24) | ((ncpus & 0xff) << 16) | (8u << 8);
		e->edx = ncpus > 1 ? e->edx | CPUID1_EDX_HTT : e->edx & ~CPUID1_EDX_HTT;
		break;
	case 4:
		/* Deterministic cache parameters: cores per package in EAX[31:26]; a cache is
		 * shared by one thread (EAX[25:14] = 0). */
		if (e->eax & 0x1f)
			e->eax = (e->eax & 0x3ff) | (((ncpus - 1) & 0x3f) << 26);
		break;
	case 0xb:
	case 0x1f:
		/* Extended topology: level 0 = SMT (1 thread), level 1 = core (ncpus cores). */
		e->edx = apic_id;
		if (e->index == 0) {
			e->eax = 0;
			e->ebx = 1;
			e->ecx = (1u << 8) | 0;
		} else if (e->index == 1) {
			unsigned shift = 0;
			while ((1u << shift) < ncpus)
				shift++;
			e->eax = shift;
			e->ebx = ncpus;
			e->ecx = (2u << 8) | 1;
		} else {
			e->eax = e->ebx = 0;
			e->ecx = e->index & 0xff;
		}
		break;
	case 0x80000001:
		e->ecx &= ~CPUID80000001_ECX_SVM;
		break;
	default:
		break;
	}
}

static bool has_entry(const struct kvm_cpuid2 *c, uint32_t function, uint32_t index)
{
	for (unsigned i = 0; i < c->nent; i++)
		if (c->entries[i].function == function && c->entries[i].index == index)
			return true;
	return false;
}

/* Extended topology leaves need their SMT, core and terminating subleaves: some hosts' KVM
 * lists only subleaf 0, and a guest would then read the core level (and its x2APIC ID) as
 * zeros. fix_entry() fills in their values. */
static void add_topology_subleaves(struct kvm_cpuid2 *c, unsigned room)
{
	static const uint32_t leaves[] = {0xb, 0x1f};
	for (size_t l = 0; l < sizeof(leaves) / sizeof(leaves[0]); l++) {
		if (!has_entry(c, leaves[l], 0))
			continue;
		for (uint32_t sub = 1; sub <= 2 && room; sub++)
			if (!has_entry(c, leaves[l], sub)) {
				c->entries[c->nent++] = (struct kvm_cpuid_entry2){
				    .function = leaves[l],
				    .index = sub,
				    .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
				};
				room--;
			}
	}
}

int kvm_cpuid_setup(struct vcpu *cpu, const struct kvm_vm *kv)
{
	enum { EXTRA = 4 };
	const struct kvm_cpuid2 *sup = kv->supported_cpuid;
	size_t bytes = sizeof(*sup) + sup->nent * sizeof(sup->entries[0]);
	struct kvm_cpuid2 *c = malloc(bytes + EXTRA * sizeof(sup->entries[0]));
	struct kvm_vcpu *kc = cpu->engine_data;
	if (!c)
		return -1;
	memcpy(c, sup, bytes);
	add_topology_subleaves(c, EXTRA);
	for (unsigned i = 0; i < c->nent; i++)
		fix_entry(&c->entries[i], cpu->id, cpu->vm->nvcpus);
	int rc = ioctl(kc->fd, KVM_SET_CPUID2, c);
	if (rc < 0)
		log_error("vcpu %u: KVM_SET_CPUID2: %s", cpu->id, strerror(errno));
	free(c);
	return rc < 0 ? -1 : 0;
}
