/* The virtio 1.x PCI transport (virtio spec 4.1) shared by every virtio device model: the PCI
 * function with its vendor capabilities (common, notify, ISR, device and PCI-config-access
 * regions, all in BAR 0), MSI-X with INTx as the fallback, feature negotiation, the device
 * status machine and NEEDS_RESET, and one worker thread per device that serves the queues.
 *
 * A device model (blk.c, rng.c, ...) supplies struct virtio_ops and lets the transport run it:
 * - a guest's notification of queue q wakes the worker (an eventfd: on KVM the kernel signals it
 *   directly through ioeventfd; on the soft engine the MMIO write does), which calls
 *   ops->queue_notify(vd, q) with the queue lock held, never before DRIVER_OK;
 * - the model takes chains with virtqueue.h, or lets virtio_process_queue() loop over them;
 * - virtio_queue_interrupt() raises the queue's MSI-X vector (on KVM through an irqfd) or INTx.
 * Locks: qlock (the queues; held by the worker while it serves them and by a vCPU resetting or
 * enabling a queue) is taken before lock (the registers); the PCI bus's locks come before both. */
#ifndef FERRY_VIRTIO_PCI_H
#define FERRY_VIRTIO_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "virtio/virtqueue.h"
#include "vm/state.h"

struct vm;
struct virtio_device;

#define VIRTIO_MAX_QUEUES 8
#define VIRTIO_MAX_FDS    4 /* extra descriptors a model may have the worker watch */

struct virtio_ops {
	const char *name;     /* "virtio-blk": messages and the device list */
	uint16_t type;        /* VIRTIO_ID_* */
	uint32_t pci_class;   /* class code (base, sub, interface) */
	unsigned nqueues;     /* 1..VIRTIO_MAX_QUEUES */
	uint16_t queue_max;   /* largest queue size offered (a power of 2) */
	unsigned max_segs;    /* the longest chain the model accepts */
	uint64_t features;    /* device-type feature bits offered (the transport adds its own) */
	unsigned config_size; /* bytes of device configuration space */
	/* Device configuration space; called with the register lock held. */
	void (*config_read)(void *opaque, unsigned off, uint8_t *data, unsigned len);
	void (*config_write)(void *opaque, unsigned off, const uint8_t *data, unsigned len);
	/* Worker thread, queue lock held: queue q was notified (or has become ready). Returns 0,
	 * or -1 when the driver broke a rule (the transport then sets NEEDS_RESET). */
	int (*queue_notify)(struct virtio_device *vd, unsigned q);
	/* The device is being reset (queue lock held, worker idle). Optional. */
	void (*reset)(void *opaque);
	/* Chains the model has taken from queue q and not yet returned, which must be the ones it
	 * took last (receive buffers a network device holds). A snapshot records the queue as if
	 * they were still available, so the restored device takes them again. Optional. */
	unsigned (*held)(void *opaque, unsigned q);
	/* The model's own state beyond the transport's, for snapshots. Optional. */
	void (*save)(void *opaque, struct state_writer *w);
	int (*load)(void *opaque, struct state_reader *r);
	void (*destroy)(void *opaque);
};

/* Creates the PCI function for a model on vm and starts its worker. Returns NULL with the
 * reason reported. The device is destroyed with the VM (ops->destroy(opaque) last). */
struct virtio_device *virtio_pci_create(struct vm *vm, const struct virtio_ops *ops, void *opaque);

/* Starts the device's worker thread, after the model's virtio_watch_fd() calls. */
int virtio_start(struct virtio_device *vd);

void *virtio_opaque(struct virtio_device *vd);
struct vm *virtio_vm(struct virtio_device *vd);
struct virtq *virtio_queue(struct virtio_device *vd, unsigned q);
/* The features the driver accepted (valid from FEATURES_OK on). */
uint64_t virtio_driver_features(struct virtio_device *vd);
/* Whether the device may use its queues now: DRIVER_OK, not NEEDS_RESET, bus mastering on. */
bool virtio_running(struct virtio_device *vd);

/* Worker side, queue lock held. Takes every available chain of queue q and hands it to fn,
 * which returns the bytes it wrote into the chain's writable part (or -1 on a driver error);
 * returns each chain to the driver, suppressing notifications meanwhile, and interrupts the
 * driver once at the end if it asked to be. Returns 0, or -1 on a driver error. */
typedef int64_t (*virtio_chain_fn)(struct virtio_device *vd, unsigned q, struct virtq_chain *c);
int virtio_process_queue(struct virtio_device *vd, unsigned q, virtio_chain_fn fn);
/* After pushes done by the model itself: interrupt if the driver asked to be. */
void virtio_queue_interrupt(struct virtio_device *vd, unsigned q);
/* The driver broke a rule: set NEEDS_RESET, tell it with a configuration-change interrupt, and
 * serve nothing more until it resets the device. why is logged once per reset. */
void virtio_needs_reset(struct virtio_device *vd, const char *why);
/* The device configuration changed (e.g. capacity): bump the generation and interrupt. */
void virtio_config_changed(struct virtio_device *vd);
/* Has the worker call fn(vd, fd) when fd becomes readable; only before the guest runs. */
int virtio_watch_fd(struct virtio_device *vd, int fd, void (*fn)(struct virtio_device *vd, int fd));
/* Makes the worker look at queue q soon (as if the driver had notified it). Any thread. */
void virtio_kick(struct virtio_device *vd, unsigned q);

#endif
