/* Internals of the KVM engine, shared by its files only. */
#ifndef FERRY_KVM_INTERNAL_H
#define FERRY_KVM_INTERNAL_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

struct kvm_vm {
	int sys_fd, vm_fd;
	size_t run_size;
	bool dirty_logging;
	struct kvm_cpuid2 *supported_cpuid;
	uint32_t *msr_list; /* MSRs this KVM saves and restores, filtered to those ferry carries */
	unsigned nmsrs;
};

struct kvm_vcpu {
	int fd;
	struct kvm_run *run;
};

/* Builds this vCPU's CPUID table from KVM's supported list; -1 with a message on failure. */
int kvm_cpuid_setup(struct vcpu *cpu, const struct kvm_vm *kv);
/* Reads the MSR index list and keeps the ones that belong to the architectural state. */
int kvm_msr_list_init(struct kvm_vm *kv);
/* KVM_SET_MSRS for n MSRs; -1 (with the refused index logged) unless KVM took them all. */
int kvm_put_msrs(int fd, const struct cpu_msr *msrs, uint32_t n);
int kvm_get_state(struct vcpu *cpu, struct cpu_state *st);
int kvm_set_state(struct vcpu *cpu, const struct cpu_state *st);

#endif
