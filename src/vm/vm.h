/* The virtual machine: RAM, the two buses, the devices, the vCPU threads and the run loop.
 * The VM sits above the engine seam: it drives an engine through engine_ops and never touches
 * /dev/kvm or the interpreter directly. */
#ifndef FERRY_VM_H
#define FERRY_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend/block.h"
#include "backend/net.h"
#include "engine/engine.h"
#include "vm/bus.h"
#include "vm/device.h"
#include "vm/mem.h"

#define VM_MAX_VCPUS  64
#define VM_MAX_DRIVES 8
#define VM_MAX_NICS   4

struct chardev;
struct pci_bus;

/* A disk (--drive): a virtio-blk device on an image file. */
struct vm_drive {
	const char *file;
	enum block_format format;
	bool readonly;
};

struct vm_config {
	const char *kernel;
	const char *initrd;
	const char *append;
	uint64_t mem_size;
	unsigned smp;
	enum engine_choice engine;
	const char *serial; /* "stdio", "file:PATH", "pty", "none" */
	bool no_reboot;     /* a guest reset ends ferry (status 0) instead of rebooting */
	bool linux_direct; /* bzImage: decompress on the host and enter the kernel (not its stub) */
	bool triple_fault_reset; /* a triple fault resets the guest (else the VM stops, status 4) */
	struct chardev *serial_dev; /* opened by the caller from serial; outlives reboots */
	struct vm_drive drives[VM_MAX_DRIVES];
	unsigned ndrives;
	bool rng; /* a virtio-rng device */
	/* virtio-net devices (--net) */
	struct net_config nics[VM_MAX_NICS];
	unsigned nnics;
	/* --console virtio: the serial chardev belongs to a virtio-console (the guest's hvc0) and
	 * the UART is left with no line attached. */
	bool virtio_console;
};

/* Why the VM stopped. */
enum vm_stop_reason {
	VM_RUNNING = 0,
	VM_STOP_EXIT,     /* guest asked to exit with a status (debug exit port) */
	VM_STOP_POWEROFF, /* guest powered off: status 0 */
	VM_STOP_RESET,    /* guest reset: reboot, or exit 0 with no_reboot */
	VM_STOP_ERROR,    /* failed closed: message says why */
	VM_STOP_USER,     /* the user quit (Ctrl-A x, a signal) */
};

/* Exit statuses of the ferry process. */
#define FERRY_EXIT_OK    0
#define FERRY_EXIT_HOST  1 /* the host cannot run the VM (no /dev/kvm, out of memory, ...) */
#define FERRY_EXIT_USAGE 2 /* bad command line or bad input file */
#define FERRY_EXIT_GUEST 4 /* the VM failed closed: triple fault, unhandled exit, bad MMIO */

struct vcpu {
	struct vm *vm;
	unsigned id;
	pthread_t thread;
	atomic_bool thread_started;
	void *engine_data; /* the engine's per-vCPU state */
};

struct vm {
	const struct vm_config *cfg;
	const struct engine_ops *engine;
	void *engine_data; /* the engine's per-VM state */
	struct guest_mem mem;
	struct bus pio, mmio;
	struct device *devices;
	struct chardev *serial;
	struct irqchip *irqchip; /* user-space interrupt controllers (vm/irqchip.h), or NULL */
	struct pci_bus *pci;     /* the PCI bus (dev/pci.h), created with the devices */
	unsigned nvcpus;
	struct vcpu vcpus[VM_MAX_VCPUS];

	pthread_mutex_t lock; /* guards the stop fields below */
	pthread_cond_t stopped_cond;
	atomic_int stop_reason; /* enum vm_stop_reason */
	int exit_status;
	char stop_msg[256];
};

/* Builds a VM from cfg with engine: RAM, buses, engine, devices, vCPUs, then loads the kernel.
 * Returns NULL with the reason already printed; *status says which exit status fits. */
struct vm *vm_create(const struct vm_config *cfg, const struct engine_ops *engine, int *status);
void vm_destroy(struct vm *vm);
/* Runs until the VM stops; returns the stop reason. vm->exit_status holds the process status. */
enum vm_stop_reason vm_run(struct vm *vm);
/* Asks the VM to stop. The first request wins; later ones are ignored. Thread and
 * async-signal unsafe (takes a lock): use from vCPU and I/O threads. */
void vm_stop(struct vm *vm, enum vm_stop_reason why, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
bool vm_stopping(const struct vm *vm);
void vm_add_device(struct vm *vm, struct device *dev);
/* The machine's I/O as a vCPU sees it: engines that exit to the VM get it through their exits;
 * an engine that executes in the VM's process (soft) calls these directly. vm_mmio returns -1
 * (and stops the VM) when nothing is mapped at addr. */
void vm_pio(struct vcpu *cpu, uint16_t port, uint8_t *data, unsigned size, bool write);
int vm_mmio(struct vcpu *cpu, uint64_t addr, uint8_t *data, unsigned size, bool write);
/* Raise or lower an interrupt line (a GSI); routed to the user-space interrupt controllers when
 * the VM has them, else to the engine's. */
void vm_irq_line(struct vm *vm, unsigned gsi, int level);
/* A message-signalled interrupt (a PCI device's MSI/MSI-X write), from any thread. -1 if the
 * message is not one the interrupt controllers accept. */
int vm_msi(struct vm *vm, uint64_t addr, uint32_t data);
/* The engine's fast paths (engine_ops.ioeventfd / irqfd_msi) when it has them. Return 0 when
 * installed, 1 when the engine has none (the device then handles the MMIO write / calls vm_msi
 * itself), -1 on failure (reported). */
int vm_ioeventfd(struct vm *vm, uint64_t addr, unsigned len, int fd, bool assign);
int vm_irqfd_msi(struct vm *vm, int fd, uint64_t addr, uint32_t data, bool assign);
/* The vCPU the calling thread runs (NULL on other threads): devices that exist once per vCPU,
 * like the local APIC, use it to tell whose access they see. */
struct vcpu *vm_current_vcpu(void);

#endif
