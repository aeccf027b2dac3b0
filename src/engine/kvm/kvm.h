/* Internals of the KVM engine, shared by its files only. */
#ifndef FERRY_KVM_INTERNAL_H
#define FERRY_KVM_INTERNAL_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

#define KVM_MAX_MSI_ROUTES 256

/* An MSI route behind an irqfd (kvm_irqfd.c). */
struct kvm_msi_route {
	int fd; /* -1: free */
	uint32_t gsi;
	uint64_t addr;
	uint32_t data;
};

struct kvm_vm {
	int sys_fd, vm_fd;
	pthread_mutex_t route_lock; /* the MSI routes: devices change them from their threads */
	struct kvm_msi_route routes[KVM_MAX_MSI_ROUTES];
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
/* The device fast paths of engine_ops (kvm_irqfd.c). */
void kvm_routes_init(struct kvm_vm *kv);
int kvm_ioeventfd(struct vm *vm, uint64_t addr, unsigned len, int fd, bool assign);
int kvm_irqfd_msi(struct vm *vm, int fd, uint64_t addr, uint32_t data, bool assign);
int kvm_set_state(struct vcpu *cpu, const struct cpu_state *st);

#endif
