/* The seam between the machine and a CPU. Nothing above this header knows which engine runs:
 * the VM hands an engine its memory, runs vCPUs until an exit event, and moves complete
 * architectural state in and out. KVM is one implementation; the soft engine is the other. */
#ifndef FERRY_ENGINE_H
#define FERRY_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/cpu_state.h"

struct vm;
struct vcpu;

enum vm_exit_reason {
	VMEXIT_IO,       /* port I/O: the VM dispatches to its PIO bus */
	VMEXIT_MMIO,     /* access to guest-physical memory that is not RAM */
	VMEXIT_HLT,      /* halted with no interrupt due (engines without an in-kernel irqchip) */
	VMEXIT_SHUTDOWN, /* triple fault */
	VMEXIT_KICKED,   /* engine_ops.kick() interrupted the run; the VM checks why */
	VMEXIT_FAIL,     /* the engine cannot continue: fail.msg says why */
};

struct vm_exit {
	enum vm_exit_reason reason;
	uint64_t rip; /* guest RIP at the exit, for messages */
	union {
		struct {
			uint16_t port;
			uint8_t size; /* 1, 2 or 4 */
			bool write;
			uint32_t count; /* string I/O: count elements of size bytes */
			uint8_t
			    *data; /* engine-owned; for reads the VM fills it before the next run */
		} io;
		struct {
			uint64_t addr;
			uint8_t len; /* 1..8 */
			bool write;
			uint8_t *data; /* engine-owned, len bytes */
		} mmio;
		struct {
			char msg[192];
		} fail;
	};
};

struct engine_ops {
	const char *name;
	/* Can this engine run on this host? On false, why (one line) is written to why. */
	bool (*available)(char *why, size_t why_len);
	int (*vm_init)(struct vm *vm);
	void (*vm_destroy)(struct vm *vm);
	int (*vcpu_init)(struct vcpu *cpu);
	void (*vcpu_destroy)(struct vcpu *cpu);
	/* Run until one exit event; fills *exit. Returns 0, or -1 with exit->reason VMEXIT_FAIL. */
	int (*vcpu_run)(struct vcpu *cpu, struct vm_exit *exit);
	int (*get_state)(struct vcpu *cpu, struct cpu_state *st);
	int (*set_state)(struct vcpu *cpu, const struct cpu_state *st);
	/* Interrupt controller inputs: a level on a GSI, or a message-signalled interrupt. */
	int (*irq_line)(struct vm *vm, unsigned gsi, int level);
	int (*msi)(struct vm *vm, uint64_t addr, uint32_t data);
	int (*nmi)(struct vcpu *cpu);
	/* Dirty-page tracking over guest RAM: bitmap bit i is RAM page i (offset into RAM / 4096).
	 * dirty_pages returns the pages written since the previous call and clears them. */
	int (*dirty_log)(struct vm *vm, bool enable);
	int (*dirty_pages)(struct vm *vm, uint64_t *bitmap);
	/* Optional fast paths for devices that run in their own threads (NULL: not offered; the VM
	 * then delivers through its buses and msi above).
	 * ioeventfd: a guest write of len bytes at MMIO address addr signals eventfd fd without
	 * leaving the guest (assign false removes it).
	 * irqfd_msi: a write to eventfd fd raises the message-signalled interrupt (addr, data);
	 * called again with the same fd it changes the message; assign false removes it. */
	int (*ioeventfd)(struct vm *vm, uint64_t addr, unsigned len, int fd, bool assign);
	int (*irqfd_msi)(struct vm *vm, int fd, uint64_t addr, uint32_t data, bool assign);
	/* Make a vcpu_run in another thread return soon with VMEXIT_KICKED (from any thread). */
	void (*kick)(struct vcpu *cpu);
};

enum engine_choice { ENGINE_AUTO, ENGINE_KVM, ENGINE_SOFT };

/* Picks the engine for a choice (auto decides by the host CPU flags); an engine that is not
 * built gives NULL and one line in err. Whether the host can run the engine is checked by its
 * vm_init (and by engine_ops.available). */
const struct engine_ops *engine_select(enum engine_choice choice, char *err, size_t err_len);
/* True when the host CPU flags show hardware virtualization (vmx or svm). */
bool engine_host_has_hw_virt(void);

extern const struct engine_ops kvm_engine;
extern const struct engine_ops soft_engine;

#endif
