/* The virtio 1.x PCI transport: see virtio_pci.h for the model. Layout of BAR 0 (32 KiB):
 *   0x0000 common configuration     0x1000 ISR status     0x2000 device configuration
 *   0x3000 notifications (queue q at 4*q)                0x4000 MSI-X table   0x5000 MSI-X PBA
 * There is no legacy (0.9) interface: the device IDs are the modern 0x1040 + type. */
#include "virtio/virtio_pci.h"

#include <errno.h>
#include <linux/virtio_config.h>
#include <linux/virtio_pci.h>
#include <linux/virtio_ring.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "dev/pci.h"
#include "util/log.h"
#include "vm/vm.h"

#define VENDOR_VIRTIO  0x1af4
#define DEVICE_MODERN  0x1040
#define BAR0_SIZE      0x8000
#define OFF_COMMON     0x0000
#define OFF_ISR        0x1000
#define OFF_DEVICE     0x2000
#define OFF_NOTIFY     0x3000
#define OFF_MSIX_TABLE 0x4000
#define OFF_MSIX_PBA   0x5000
#define REGION_SIZE    0x1000
#define NOTIFY_MULT    4
#define COMMON_SIZE    0x40 /* struct virtio_pci_common_cfg (0x38) rounded up */
#define NO_VECTOR      VIRTIO_MSI_NO_VECTOR
#define MSIX_VECTORS   (VIRTIO_MAX_QUEUES + 1)
#define CAP_VENDOR     0x09
#define CAP_MSIX       0x11
#define ISR_QUEUE      0x1 /* ISR bit 0: a queue interrupt (bit 1 is VIRTIO_PCI_ISR_CONFIG) */

/* Features the transport itself offers. */
#define TRANSPORT_FEATURES                                                                         \
	((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_INDIRECT_DESC) |                    \
	 (1ull << VIRTIO_RING_F_EVENT_IDX))

static const char virtio_tag[8] = "virtio";
#define VIRTIO_STATE_VERSION 1

struct queue_regs {
	uint16_t size, vector;
	bool enabled;
	uint64_t desc, driver, device;
	int kick_fd;    /* eventfd the notification signals */
	bool ioeventfd; /* registered with the engine at notify_addr */
	uint64_t notify_addr;
};

struct msix_entry {
	uint64_t addr;
	uint32_t data;
	bool masked;
	bool pending;
	int irqfd;   /* eventfd the engine turns into this MSI, or -1 */
	bool routed; /* the engine's route matches addr/data */
};

struct virtio_device {
	struct vm *vm;
	const struct virtio_ops *ops;
	void *opaque;
	struct pci_device pci;
	struct device dev;
	unsigned msix_cap, cfg_cap; /* capability offsets in config space */
	uint16_t nvectors;

	pthread_mutex_t qlock; /* the virtqueues (see virtio_pci.h for the order) */
	pthread_mutex_t lock;  /* everything below */
	uint8_t status;
	uint32_t dfselect, gfselect;
	uint64_t driver_features;
	uint16_t msix_config, queue_select;
	uint8_t generation, isr;
	bool msix_enabled, msix_fmask;
	struct queue_regs qr[VIRTIO_MAX_QUEUES];
	struct msix_entry msix[MSIX_VECTORS];
	bool reported; /* NEEDS_RESET logged since the last reset */

	struct virtq vq[VIRTIO_MAX_QUEUES];
	bool kicked[VIRTIO_MAX_QUEUES]; /* notified before DRIVER_OK: served once it is set */

	pthread_t worker;
	bool worker_started;
	int stop_fd;
	struct {
		int fd;
		void (*fn)(struct virtio_device *vd, int fd);
	} watch[VIRTIO_MAX_FDS];
	unsigned nwatch;
};

static uint64_t rd_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void wr_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t offered(const struct virtio_device *vd)
{
	return vd->ops->features | TRANSPORT_FEATURES;
}

static void signal_fd(int fd)
{
	uint64_t one = 1;
	/* The counter saturating (EAGAIN) still leaves the fd readable: nothing is lost. */
	while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

/* ---- interrupts ---------------------------------------------------------------------------- */

/* lock held. */
static void msix_send(struct virtio_device *vd, unsigned v)
{
	struct msix_entry *e = &vd->msix[v];
	if (e->irqfd >= 0 && !e->routed) {
		int rc = vm_irqfd_msi(vd->vm, e->irqfd, e->addr, e->data, true);
		if (rc == 0) {
			e->routed = true;
		} else {
			if (rc < 0)
				log_warn("%s: MSI-X vector %u falls back to direct delivery",
					 vd->ops->name, v);
			close(e->irqfd);
			e->irqfd = -1;
		}
	}
	if (e->irqfd >= 0)
		signal_fd(e->irqfd);
	else
		vm_msi(vd->vm, e->addr, e->data);
}

/* lock held: interrupt through vector (MSI-X) or set isr_bit and raise INTx. */
static void raise_irq(struct virtio_device *vd, uint16_t vector, uint8_t isr_bit)
{
	if (vd->msix_enabled) {
		if (vector == NO_VECTOR || vector >= vd->nvectors)
			return;
		if (vd->msix_fmask || vd->msix[vector].masked)
			vd->msix[vector].pending = true;
		else
			msix_send(vd, vector);
		return;
	}
	vd->isr |= isr_bit;
	pci_set_intx(&vd->pci, 1);
}

/* lock held: deliver what masking held back. */
static void msix_unmasked(struct virtio_device *vd)
{
	if (!vd->msix_enabled || vd->msix_fmask)
		return;
	for (unsigned v = 0; v < vd->nvectors; v++)
		if (vd->msix[v].pending && !vd->msix[v].masked) {
			vd->msix[v].pending = false;
			msix_send(vd, v);
		}
}

void virtio_queue_interrupt(struct virtio_device *vd, unsigned q)
{
	if (!virtq_should_interrupt(&vd->vq[q]))
		return;
	pthread_mutex_lock(&vd->lock);
	raise_irq(vd, vd->qr[q].vector, ISR_QUEUE);
	pthread_mutex_unlock(&vd->lock);
}

static void config_irq_locked(struct virtio_device *vd)
{
	vd->generation++;
	raise_irq(vd, vd->msix_config, VIRTIO_PCI_ISR_CONFIG);
}

void virtio_config_changed(struct virtio_device *vd)
{
	pthread_mutex_lock(&vd->lock);
	config_irq_locked(vd);
	pthread_mutex_unlock(&vd->lock);
}

void virtio_needs_reset(struct virtio_device *vd, const char *why)
{
	pthread_mutex_lock(&vd->lock);
	if (!vd->reported) {
		log_warn("%s: the guest driver broke a rule (%s): device needs reset",
			 vd->ops->name, why);
		vd->reported = true;
	}
	if (!(vd->status & VIRTIO_CONFIG_S_NEEDS_RESET)) {
		vd->status |= VIRTIO_CONFIG_S_NEEDS_RESET;
		if (vd->status & VIRTIO_CONFIG_S_DRIVER_OK)
			config_irq_locked(vd);
	}
	pthread_mutex_unlock(&vd->lock);
}

/* ---- accessors for models ------------------------------------------------------------------ */

void *virtio_opaque(struct virtio_device *vd)
{
	return vd->opaque;
}

struct vm *virtio_vm(struct virtio_device *vd)
{
	return vd->vm;
}

struct virtq *virtio_queue(struct virtio_device *vd, unsigned q)
{
	return &vd->vq[q];
}

uint64_t virtio_driver_features(struct virtio_device *vd)
{
	pthread_mutex_lock(&vd->lock);
	uint64_t f = vd->driver_features;
	pthread_mutex_unlock(&vd->lock);
	return f;
}

bool virtio_running(struct virtio_device *vd)
{
	pthread_mutex_lock(&vd->lock);
	bool on = (vd->status & (VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_NEEDS_RESET |
				 VIRTIO_CONFIG_S_FAILED)) == VIRTIO_CONFIG_S_DRIVER_OK;
	pthread_mutex_unlock(&vd->lock);
	return on && pci_bus_master(&vd->pci);
}

void virtio_kick(struct virtio_device *vd, unsigned q)
{
	if (q < vd->ops->nqueues)
		signal_fd(vd->qr[q].kick_fd);
}

int virtio_process_queue(struct virtio_device *vd, unsigned q, virtio_chain_fn fn)
{
	struct virtq *vq = &vd->vq[q];
	struct virtq_seg segs[64];
	struct virtq_seg *seg = segs;
	unsigned cap = vd->ops->max_segs;
	if (cap > 64) {
		seg = malloc(cap * sizeof(*seg));
		if (!seg)
			return 0; /* try again on the next notification */
	}
	int rc = 0;
	bool pushed = false;
	virtq_notify_enable(vq, false);
	for (;;) {
		struct virtq_chain c = {.seg = seg, .cap = cap};
		int r = virtq_pop(vq, &c);
		if (r < 0) {
			virtio_needs_reset(vd, vq->err);
			rc = -1;
			break;
		}
		if (r == 0) {
			if (!virtq_notify_enable(vq, true))
				break;
			virtq_notify_enable(vq, false);
			continue;
		}
		int64_t n = fn(vd, q, &c);
		if (n < 0) {
			virtio_needs_reset(vd, "malformed request");
			rc = -1;
			break;
		}
		virtq_push(vq, c.head, (uint32_t)n);
		pushed = true;
	}
	if (pushed)
		virtio_queue_interrupt(vd, q);
	if (seg != segs)
		free(seg);
	return rc;
}

/* ---- the worker ---------------------------------------------------------------------------- */

static void drain(int fd)
{
	uint64_t v;
	while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

static void serve_queue(struct virtio_device *vd, unsigned q)
{
	pthread_mutex_lock(&vd->qlock);
	if (!vd->vq[q].ready) {
		pthread_mutex_unlock(&vd->qlock);
		return;
	}
	if (!virtio_running(vd)) {
		/* Served once DRIVER_OK or bus mastering is set (status_write, pci_cfg_written). */
		pthread_mutex_lock(&vd->lock);
		vd->kicked[q] = true;
		pthread_mutex_unlock(&vd->lock);
		pthread_mutex_unlock(&vd->qlock);
		return;
	}
	if (vd->ops->queue_notify(vd, q) < 0)
		virtio_needs_reset(vd, vd->vq[q].err[0] ? vd->vq[q].err : "malformed request");
	pthread_mutex_unlock(&vd->qlock);
}

static void *worker_main(void *arg)
{
	struct virtio_device *vd = arg;
	unsigned nq = vd->ops->nqueues;
	struct pollfd pfd[1 + VIRTIO_MAX_QUEUES + VIRTIO_MAX_FDS];
	pfd[0] = (struct pollfd){.fd = vd->stop_fd, .events = POLLIN};
	for (unsigned q = 0; q < nq; q++)
		pfd[1 + q] = (struct pollfd){.fd = vd->qr[q].kick_fd, .events = POLLIN};
	for (unsigned i = 0; i < vd->nwatch; i++)
		pfd[1 + nq + i] = (struct pollfd){.fd = vd->watch[i].fd, .events = POLLIN};
	for (;;) {
		if (poll(pfd, 1 + nq + vd->nwatch, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("%s: poll: %s", vd->ops->name, strerror(errno));
			return NULL;
		}
		if (pfd[0].revents)
			return NULL;
		for (unsigned q = 0; q < nq; q++)
			if (pfd[1 + q].revents) {
				drain(vd->qr[q].kick_fd);
				serve_queue(vd, q);
			}
		for (unsigned i = 0; i < vd->nwatch; i++)
			if (pfd[1 + nq + i].revents) {
				pthread_mutex_lock(&vd->qlock);
				vd->watch[i].fn(vd, vd->watch[i].fd);
				pthread_mutex_unlock(&vd->qlock);
			}
	}
}

int virtio_watch_fd(struct virtio_device *vd, int fd, void (*fn)(struct virtio_device *vd, int fd))
{
	if (vd->nwatch == VIRTIO_MAX_FDS || vd->worker_started)
		return -1;
	vd->watch[vd->nwatch].fd = fd;
	vd->watch[vd->nwatch].fn = fn;
	vd->nwatch++;
	return 0;
}

/* ---- reset and status ---------------------------------------------------------------------- */

/* qlock and lock held. */
static void device_reset(struct virtio_device *vd)
{
	if (vd->ops->reset)
		vd->ops->reset(vd->opaque);
	for (unsigned q = 0; q < vd->ops->nqueues; q++) {
		struct queue_regs *r = &vd->qr[q];
		r->size = vd->ops->queue_max;
		r->vector = NO_VECTOR;
		r->enabled = false;
		r->desc = r->driver = r->device = 0;
		virtq_reset(&vd->vq[q]);
		vd->kicked[q] = false;
	}
	vd->status = 0;
	vd->dfselect = vd->gfselect = 0;
	vd->driver_features = 0;
	vd->msix_config = NO_VECTOR;
	vd->queue_select = 0;
	vd->isr = 0;
	vd->reported = false;
	if (vd->pci.bus) /* not before the function is on the bus */
		pci_set_intx(&vd->pci, 0);
}

/* lock held; qlock too. The driver writes the status byte: 0 resets, otherwise bits are only
 * ever added (spec 2.1.2), and FEATURES_OK sticks only for an acceptable feature set. */
static void status_write(struct virtio_device *vd, uint8_t v)
{
	if (v == 0) {
		device_reset(vd);
		return;
	}
	uint8_t old = vd->status;
	if (v & VIRTIO_CONFIG_S_FEATURES_OK && !(old & VIRTIO_CONFIG_S_FEATURES_OK)) {
		uint64_t f = vd->driver_features;
		if ((f & ~offered(vd)) || !(f & (1ull << VIRTIO_F_VERSION_1)))
			v &= (uint8_t)~VIRTIO_CONFIG_S_FEATURES_OK;
	}
	/* NEEDS_RESET is the device's bit: a driver cannot set or clear it. */
	vd->status =
	    (uint8_t)((v & ~VIRTIO_CONFIG_S_NEEDS_RESET) | (old & VIRTIO_CONFIG_S_NEEDS_RESET));
	if (vd->status & VIRTIO_CONFIG_S_DRIVER_OK && !(old & VIRTIO_CONFIG_S_DRIVER_OK))
		for (unsigned q = 0; q < vd->ops->nqueues; q++)
			if (vd->kicked[q] || vd->vq[q].ready) {
				vd->kicked[q] = false;
				signal_fd(vd->qr[q].kick_fd);
			}
}

/* lock and qlock held: the driver enables the selected queue. */
static void queue_enable(struct virtio_device *vd, struct queue_regs *r, unsigned q)
{
	if (r->enabled)
		return;
	struct virtq *vq = &vd->vq[q];
	/* The ring layout is fixed here, with the rings' checks: later feature writes cannot
	 * change it under a live queue. */
	uint64_t f = vd->status & VIRTIO_CONFIG_S_FEATURES_OK ? vd->driver_features : 0;
	bool ev = f & (1ull << VIRTIO_RING_F_EVENT_IDX),
	     ind = f & (1ull << VIRTIO_RING_F_INDIRECT_DESC);
	virtq_reset(vq);
	vq->size = r->size;
	vq->desc_gpa = r->desc;
	vq->avail_gpa = r->driver;
	vq->used_gpa = r->device;
	vq->event_idx = ev;
	vq->indirect = ind;
	r->enabled = true;
	if (r->size > vd->ops->queue_max)
		vq->size = 0; /* refused below like any size that is not a power of 2 */
	if (virtq_enable(vq, &vd->vm->mem) < 0) {
		pthread_mutex_unlock(&vd->lock);
		virtio_needs_reset(vd, vq->err);
		pthread_mutex_lock(&vd->lock);
	}
}

/* ---- BAR 0 --------------------------------------------------------------------------------- */

static void common_read(struct virtio_device *vd, unsigned off, uint8_t *data, unsigned size)
{
	uint8_t img[COMMON_SIZE] = {0};
	unsigned qs = vd->queue_select;
	const struct queue_regs *r = qs < vd->ops->nqueues ? &vd->qr[qs] : NULL;
	uint64_t feat = vd->dfselect < 2 ? offered(vd) >> (32 * vd->dfselect) : 0;
	wr_le(img + VIRTIO_PCI_COMMON_DFSELECT, vd->dfselect, 4);
	wr_le(img + VIRTIO_PCI_COMMON_DF, (uint32_t)feat, 4);
	wr_le(img + VIRTIO_PCI_COMMON_GFSELECT, vd->gfselect, 4);
	wr_le(img + VIRTIO_PCI_COMMON_GF,
	      vd->gfselect < 2 ? (uint32_t)(vd->driver_features >> (32 * vd->gfselect)) : 0, 4);
	wr_le(img + VIRTIO_PCI_COMMON_MSIX, vd->msix_config, 2);
	wr_le(img + VIRTIO_PCI_COMMON_NUMQ, vd->ops->nqueues, 2);
	img[VIRTIO_PCI_COMMON_STATUS] = vd->status;
	img[VIRTIO_PCI_COMMON_CFGGENERATION] = vd->generation;
	wr_le(img + VIRTIO_PCI_COMMON_Q_SELECT, qs, 2);
	if (r) {
		wr_le(img + VIRTIO_PCI_COMMON_Q_SIZE, r->size, 2);
		wr_le(img + VIRTIO_PCI_COMMON_Q_MSIX, r->vector, 2);
		wr_le(img + VIRTIO_PCI_COMMON_Q_ENABLE, r->enabled, 2);
		wr_le(img + VIRTIO_PCI_COMMON_Q_NOFF, qs, 2);
		wr_le(img + VIRTIO_PCI_COMMON_Q_DESCLO, r->desc, 8);
		wr_le(img + VIRTIO_PCI_COMMON_Q_AVAILLO, r->driver, 8);
		wr_le(img + VIRTIO_PCI_COMMON_Q_USEDLO, r->device, 8);
	}
	memcpy(data, img + off, size);
}

/* Writes a field of the common configuration. Accesses narrower than their field change only
 * the bytes written (the spec asks drivers for full-width accesses; 64-bit fields come as two
 * 32-bit halves). */
static void merge(uint64_t *field, unsigned field_off, unsigned off, const uint8_t *data,
		  unsigned size)
{
	for (unsigned i = 0; i < size; i++) {
		unsigned b = off + i - field_off;
		if (b >= 8)
			break; /* past the widest field: bytes of the next one, ignored */
		*field = (*field & ~(0xffull << (8 * b))) | (uint64_t)data[i] << (8 * b);
	}
}

static void common_write(struct virtio_device *vd, unsigned off, const uint8_t *data, unsigned size)
{
	unsigned qs = vd->queue_select;
	struct queue_regs *r = qs < vd->ops->nqueues ? &vd->qr[qs] : NULL;
	uint64_t v;
	/* Which field: the last field start at or below off. */
	static const unsigned starts[] = {VIRTIO_PCI_COMMON_DFSELECT,
					  VIRTIO_PCI_COMMON_DF,
					  VIRTIO_PCI_COMMON_GFSELECT,
					  VIRTIO_PCI_COMMON_GF,
					  VIRTIO_PCI_COMMON_MSIX,
					  VIRTIO_PCI_COMMON_NUMQ,
					  VIRTIO_PCI_COMMON_STATUS,
					  VIRTIO_PCI_COMMON_CFGGENERATION,
					  VIRTIO_PCI_COMMON_Q_SELECT,
					  VIRTIO_PCI_COMMON_Q_SIZE,
					  VIRTIO_PCI_COMMON_Q_MSIX,
					  VIRTIO_PCI_COMMON_Q_ENABLE,
					  VIRTIO_PCI_COMMON_Q_NOFF,
					  VIRTIO_PCI_COMMON_Q_DESCLO,
					  VIRTIO_PCI_COMMON_Q_AVAILLO,
					  VIRTIO_PCI_COMMON_Q_USEDLO,
					  0x38};
	unsigned fs = 0;
	for (unsigned i = 0; i < sizeof(starts) / sizeof(starts[0]); i++)
		if (starts[i] <= off)
			fs = starts[i];
	if (fs == 0x38)
		return;              /* past the fields we implement: reserved, writes ignored */
	bool live = r && r->enabled; /* queue registers freeze once the queue is enabled */
	switch (fs) {
	case VIRTIO_PCI_COMMON_DFSELECT:
		v = vd->dfselect;
		merge(&v, fs, off, data, size);
		vd->dfselect = (uint32_t)v;
		break;
	case VIRTIO_PCI_COMMON_GFSELECT:
		v = vd->gfselect;
		merge(&v, fs, off, data, size);
		vd->gfselect = (uint32_t)v;
		break;
	case VIRTIO_PCI_COMMON_GF:
		if (vd->gfselect < 2 && !(vd->status & VIRTIO_CONFIG_S_FEATURES_OK)) {
			v = (uint32_t)(vd->driver_features >> (32 * vd->gfselect));
			merge(&v, fs, off, data, size);
			unsigned sh = 32 * vd->gfselect;
			vd->driver_features = (vd->driver_features & ~(0xffffffffull << sh)) |
					      ((v & 0xffffffffull) << sh);
		}
		break;
	case VIRTIO_PCI_COMMON_MSIX:
		v = vd->msix_config;
		merge(&v, fs, off, data, size);
		vd->msix_config = (uint16_t)v < vd->nvectors ? (uint16_t)v : NO_VECTOR;
		break;
	case VIRTIO_PCI_COMMON_STATUS:
		status_write(vd, data[0]);
		break;
	case VIRTIO_PCI_COMMON_Q_SELECT:
		v = vd->queue_select;
		merge(&v, fs, off, data, size);
		vd->queue_select = (uint16_t)v;
		break;
	case VIRTIO_PCI_COMMON_Q_SIZE:
		if (r && !live) {
			v = r->size;
			merge(&v, fs, off, data, size);
			/* Any power of 2 up to the maximum; anything else makes enabling fail. */
			r->size = (uint16_t)v;
		}
		break;
	case VIRTIO_PCI_COMMON_Q_MSIX:
		if (r) {
			v = r->vector;
			merge(&v, fs, off, data, size);
			r->vector = (uint16_t)v < vd->nvectors ? (uint16_t)v : NO_VECTOR;
		}
		break;
	case VIRTIO_PCI_COMMON_Q_ENABLE:
		if (r && rd_le(data, size) == 1 && off == fs)
			queue_enable(vd, r, qs);
		break;
	case VIRTIO_PCI_COMMON_Q_DESCLO:
		if (r && !live)
			merge(&r->desc, fs, off, data, size);
		break;
	case VIRTIO_PCI_COMMON_Q_AVAILLO:
		if (r && !live)
			merge(&r->driver, fs, off, data, size);
		break;
	case VIRTIO_PCI_COMMON_Q_USEDLO:
		if (r && !live)
			merge(&r->device, fs, off, data, size);
		break;
	default: /* read-only fields */
		break;
	}
}

static void msix_table_access(struct virtio_device *vd, unsigned off, uint8_t *data, unsigned size,
			      bool write)
{
	unsigned v = off / 16, f = off % 16;
	if (v >= vd->nvectors || f + size > 16) {
		if (!write)
			memset(data, 0, size);
		return;
	}
	struct msix_entry *e = &vd->msix[v];
	uint8_t img[16];
	wr_le(img, e->addr, 8);
	wr_le(img + 8, e->data, 4);
	wr_le(img + 12, e->masked, 4);
	if (!write) {
		memcpy(data, img + f, size);
		return;
	}
	memcpy(img + f, data, size);
	uint64_t addr = rd_le(img, 8);
	uint32_t msg = (uint32_t)rd_le(img + 8, 4);
	if (addr != e->addr || msg != e->data)
		e->routed = false; /* the engine's route is refreshed at the next send */
	e->addr = addr;
	e->data = msg;
	bool was = e->masked;
	e->masked = img[12] & 1;
	if (was && !e->masked)
		msix_unmasked(vd);
}

static void bar0_access(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool write)
{
	struct virtio_device *vd = opaque;
	unsigned region = (unsigned)(offset / REGION_SIZE) * REGION_SIZE;
	unsigned off = (unsigned)(offset % REGION_SIZE);
	if (region == OFF_NOTIFY) {
		/* A write at 4*q notifies queue q; the value written is the queue index (no
		 * NOTIFICATION_DATA), which adds nothing. */
		unsigned q = off / NOTIFY_MULT;
		if (write && off % NOTIFY_MULT == 0 && q < vd->ops->nqueues)
			signal_fd(vd->qr[q].kick_fd);
		else if (!write)
			memset(data, 0, size);
		return;
	}
	bool reset_path = region == OFF_COMMON && write;
	if (reset_path)
		pthread_mutex_lock(&vd->qlock); /* a status or enable write may touch the queues */
	pthread_mutex_lock(&vd->lock);
	switch (region) {
	case OFF_COMMON:
		if (off + size > COMMON_SIZE) {
			if (!write)
				memset(data, 0, size);
		} else if (write) {
			common_write(vd, off, data, size);
		} else {
			common_read(vd, off, data, size);
		}
		break;
	case OFF_ISR:
		if (!write) {
			memset(data, 0, size);
			if (off == 0) {
				/* Reading ISR acknowledges it and lowers INTx. */
				data[0] = vd->isr;
				vd->isr = 0;
				pci_set_intx(&vd->pci, 0);
			}
		}
		break;
	case OFF_DEVICE:
		if (off + size > vd->ops->config_size) {
			if (!write)
				memset(data, 0, size);
		} else if (write) {
			if (vd->ops->config_write)
				vd->ops->config_write(vd->opaque, off, data, size);
		} else {
			vd->ops->config_read(vd->opaque, off, data, size);
		}
		break;
	case OFF_MSIX_TABLE:
		msix_table_access(vd, off, data, size, write);
		break;
	case OFF_MSIX_PBA:
		if (!write) {
			uint64_t bits = 0;
			for (unsigned v = 0; v < vd->nvectors; v++)
				bits |= (uint64_t)vd->msix[v].pending << v;
			uint8_t img[8];
			wr_le(img, bits, 8);
			memset(data, 0, size);
			if (off < 8)
				memcpy(data, img + off, size <= 8 - off ? size : 8 - off);
		}
		break;
	default:
		if (!write)
			memset(data, 0, size);
		break;
	}
	pthread_mutex_unlock(&vd->lock);
	if (reset_path)
		pthread_mutex_unlock(&vd->qlock);
}

/* ---- PCI configuration space ---------------------------------------------------------------- */

#define CFG_CAP_BAR    4 /* struct virtio_pci_cap: bar */
#define CFG_CAP_OFFSET 8
#define CFG_CAP_LENGTH 12
#define CFG_CAP_DATA   16 /* struct virtio_pci_cfg_cap: pci_cfg_data */

static bool overlaps(unsigned off, unsigned len, unsigned start, unsigned n)
{
	return off < start + n && start < off + len;
}

/* The VIRTIO_PCI_CAP_PCI_CFG window: the driver names BAR 0, an offset and a length (1, 2 or
 * 4) and moves the data through pci_cfg_data. Anything else reads 0 and writes nothing. */
static bool cfg_window(struct virtio_device *vd, unsigned *off, unsigned *len)
{
	const uint8_t *c = vd->pci.cfg + vd->cfg_cap;
	*off = (unsigned)rd_le(c + CFG_CAP_OFFSET, 4);
	*len = (unsigned)rd_le(c + CFG_CAP_LENGTH, 4);
	return c[CFG_CAP_BAR] == 0 && (*len == 1 || *len == 2 || *len == 4) && *off % *len == 0 &&
	       *off < BAR0_SIZE;
}

static void pci_cfg_read(struct pci_device *d, unsigned off, unsigned len)
{
	struct virtio_device *vd = d->opaque;
	unsigned boff, blen;
	if (!overlaps(off, len, vd->cfg_cap + CFG_CAP_DATA, 4))
		return;
	uint8_t buf[4] = {0};
	if (cfg_window(vd, &boff, &blen))
		bar0_access(vd, boff, buf, blen, false);
	memcpy(d->cfg + vd->cfg_cap + CFG_CAP_DATA, buf, 4);
}

static void pci_cfg_written(struct pci_device *d, unsigned off, unsigned len)
{
	struct virtio_device *vd = d->opaque;
	unsigned boff, blen;
	if (overlaps(off, len, vd->cfg_cap + CFG_CAP_DATA, 4) && cfg_window(vd, &boff, &blen))
		bar0_access(vd, boff, d->cfg + vd->cfg_cap + CFG_CAP_DATA, blen, true);
	if (overlaps(off, len, 0x04, 1) && pci_bus_master(d)) {
		pthread_mutex_lock(&vd->lock);
		for (unsigned q = 0; q < vd->ops->nqueues; q++)
			if (vd->kicked[q]) {
				vd->kicked[q] = false;
				signal_fd(vd->qr[q].kick_fd);
			}
		pthread_mutex_unlock(&vd->lock);
	}
	if (overlaps(off, len, vd->msix_cap + 2, 2)) {
		uint16_t ctl = (uint16_t)rd_le(d->cfg + vd->msix_cap + 2, 2);
		pthread_mutex_lock(&vd->lock);
		bool was_enabled = vd->msix_enabled;
		vd->msix_enabled = ctl & 0x8000;
		vd->msix_fmask = ctl & 0x4000;
		if (vd->msix_enabled && !was_enabled) {
			vd->isr = 0;
			pci_set_intx(&vd->pci, 0);
		}
		msix_unmasked(vd);
		pthread_mutex_unlock(&vd->lock);
	}
}

/* BAR 0 moved or was switched off: the notification addresses follow it in the engine. */
static void pci_bar_mapped(struct pci_device *d, unsigned i, uint64_t addr)
{
	struct virtio_device *vd = d->opaque;
	if (i != 0)
		return;
	for (unsigned q = 0; q < vd->ops->nqueues; q++) {
		struct queue_regs *r = &vd->qr[q];
		if (r->ioeventfd) {
			vm_ioeventfd(vd->vm, r->notify_addr, 2, r->kick_fd, false);
			r->ioeventfd = false;
		}
		if (addr == PCI_BAR_UNMAPPED)
			continue;
		r->notify_addr = addr + OFF_NOTIFY + (uint64_t)NOTIFY_MULT * q;
		r->ioeventfd = vm_ioeventfd(vd->vm, r->notify_addr, 2, r->kick_fd, true) == 0;
	}
}

static bool add_vendor_cap(struct pci_device *d, uint8_t type, uint32_t off, uint32_t len,
			   unsigned extra, uint32_t extra_val)
{
	unsigned c = pci_add_capability(d, CAP_VENDOR, 16 + extra);
	if (!c)
		return false;
	d->cfg[c + 2] = (uint8_t)(16 + extra); /* cap_len */
	d->cfg[c + 3] = type;
	d->cfg[c + 4] = 0; /* BAR 0 */
	wr_le(d->cfg + c + 8, off, 4);
	wr_le(d->cfg + c + 12, len, 4);
	if (extra)
		wr_le(d->cfg + c + 16, extra_val, 4);
	return true;
}

static int build_config_space(struct virtio_device *vd)
{
	struct pci_device *d = &vd->pci;
	unsigned nq = vd->ops->nqueues;
	pci_init_header(d, VENDOR_VIRTIO, (uint16_t)(DEVICE_MODERN + vd->ops->type),
			vd->ops->pci_class, 1, VENDOR_VIRTIO,
			(uint16_t)(DEVICE_MODERN + vd->ops->type));
	d->bar[0] = (struct pci_bar_def){.size = BAR0_SIZE, .access = bar0_access};
	add_vendor_cap(d, VIRTIO_PCI_CAP_COMMON_CFG, OFF_COMMON, 0x38, 0, 0);
	add_vendor_cap(d, VIRTIO_PCI_CAP_NOTIFY_CFG, OFF_NOTIFY, NOTIFY_MULT * nq, 4, NOTIFY_MULT);
	add_vendor_cap(d, VIRTIO_PCI_CAP_ISR_CFG, OFF_ISR, 1, 0, 0);
	if (vd->ops->config_size)
		add_vendor_cap(d, VIRTIO_PCI_CAP_DEVICE_CFG, OFF_DEVICE, vd->ops->config_size, 0,
			       0);
	add_vendor_cap(d, VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 4, 0);
	vd->cfg_cap = d->cap_end - 20;
	d->wmask[vd->cfg_cap + CFG_CAP_BAR] = 0xff;
	memset(d->wmask + vd->cfg_cap + CFG_CAP_OFFSET, 0xff, 12); /* offset, length, data */
	vd->msix_cap = pci_add_capability(d, CAP_MSIX, 12);
	if (!vd->msix_cap)
		return -1;
	wr_le(d->cfg + vd->msix_cap + 2, vd->nvectors - 1u, 2);
	wr_le(d->cfg + vd->msix_cap + 4, OFF_MSIX_TABLE, 4); /* BIR 0 */
	wr_le(d->cfg + vd->msix_cap + 8, OFF_MSIX_PBA, 4);
	d->wmask[vd->msix_cap + 3] = 0xc0; /* enable and function mask */
	d->opaque = vd;
	d->name = vd->ops->name;
	d->config_read = pci_cfg_read;
	d->config_written = pci_cfg_written;
	d->bar_mapped = pci_bar_mapped;
	return 0;
}

/* ---- snapshot -------------------------------------------------------------------------------- */

static void virtio_save(void *opaque, struct state_writer *w)
{
	struct virtio_device *vd = opaque;
	pthread_mutex_lock(&vd->qlock);
	pthread_mutex_lock(&vd->lock);
	sw_begin(w, virtio_tag, VIRTIO_STATE_VERSION);
	sw_u16(w, vd->ops->type);
	sw_u8(w, vd->status);
	sw_u32(w, vd->dfselect);
	sw_u32(w, vd->gfselect);
	sw_u64(w, vd->driver_features);
	sw_u16(w, vd->msix_config);
	sw_u16(w, vd->queue_select);
	sw_u8(w, vd->generation);
	sw_u8(w, vd->isr);
	sw_u8(w, vd->msix_enabled);
	sw_u8(w, vd->msix_fmask);
	for (unsigned v = 0; v < vd->nvectors; v++) {
		sw_u64(w, vd->msix[v].addr);
		sw_u32(w, vd->msix[v].data);
		sw_u8(w, vd->msix[v].masked);
		sw_u8(w, vd->msix[v].pending);
	}
	for (unsigned q = 0; q < vd->ops->nqueues; q++) {
		const struct queue_regs *r = &vd->qr[q];
		sw_u16(w, r->size);
		sw_u16(w, r->vector);
		sw_u8(w, r->enabled);
		sw_u64(w, r->desc);
		sw_u64(w, r->driver);
		sw_u64(w, r->device);
		sw_u8(w, vd->kicked[q]);
		struct virtq copy = vd->vq[q];
		unsigned held = vd->ops->held ? vd->ops->held(vd->opaque, q) : 0;
		if (held <= copy.inflight) {
			copy.last_avail = (uint16_t)(copy.last_avail - held);
			copy.inflight -= held;
		}
		virtq_save(&copy, w);
	}
	if (vd->ops->save)
		vd->ops->save(vd->opaque, w);
	pthread_mutex_unlock(&vd->lock);
	pthread_mutex_unlock(&vd->qlock);
}

static int virtio_load(void *opaque, struct state_reader *r)
{
	struct virtio_device *vd = opaque;
	int rc = -1;
	pthread_mutex_lock(&vd->qlock);
	pthread_mutex_lock(&vd->lock);
	struct msix_entry msix[MSIX_VECTORS];
	bool msix_enabled = vd->msix_enabled, msix_fmask = vd->msix_fmask;
	memcpy(msix, vd->msix, sizeof(msix));
	sr_begin(r, virtio_tag, VIRTIO_STATE_VERSION);
	sr_check(r, sr_u16(r) == vd->ops->type);
	vd->status = sr_u8(r);
	vd->dfselect = sr_u32(r);
	vd->gfselect = sr_u32(r);
	vd->driver_features = sr_u64(r);
	sr_check(r, !(vd->driver_features & ~offered(vd)));
	vd->msix_config = sr_u16(r);
	sr_check(r, vd->msix_config == NO_VECTOR || vd->msix_config < vd->nvectors);
	vd->queue_select = sr_u16(r);
	vd->generation = sr_u8(r);
	vd->isr = sr_u8(r) & 3;
	vd->msix_enabled = sr_u8(r);
	vd->msix_fmask = sr_u8(r);
	for (unsigned v = 0; v < vd->nvectors; v++) {
		vd->msix[v].addr = sr_u64(r);
		vd->msix[v].data = sr_u32(r);
		vd->msix[v].masked = sr_u8(r);
		vd->msix[v].pending = sr_u8(r);
		vd->msix[v].routed = false;
	}
	for (unsigned q = 0; q < vd->ops->nqueues && !r->err; q++) {
		struct queue_regs *qr = &vd->qr[q];
		qr->size = sr_u16(r);
		qr->vector = sr_u16(r);
		sr_check(r, qr->vector == NO_VECTOR || qr->vector < vd->nvectors);
		qr->enabled = sr_u8(r);
		qr->desc = sr_u64(r);
		qr->driver = sr_u64(r);
		qr->device = sr_u64(r);
		vd->kicked[q] = sr_u8(r);
		if (virtq_load(&vd->vq[q], r, &vd->vm->mem) < 0)
			sr_check(r, false);
	}
	if (!r->err && vd->ops->load && vd->ops->load(vd->opaque, r) < 0)
		sr_check(r, false);
	if (r->err) {
		/* The PCI function's MSI-X state goes back as it was; the rest is reset. */
		memcpy(vd->msix, msix, sizeof(msix));
		vd->msix_enabled = msix_enabled;
		vd->msix_fmask = msix_fmask;
		device_reset(vd); /* a half-loaded device is worse than a reset one */
	} else {
		pci_set_intx(&vd->pci, !vd->msix_enabled && vd->isr);
		for (unsigned q = 0; q < vd->ops->nqueues; q++)
			if (vd->vq[q].ready)
				signal_fd(
				    vd->qr[q].kick_fd); /* look for work that came meanwhile */
		rc = 0;
	}
	pthread_mutex_unlock(&vd->lock);
	pthread_mutex_unlock(&vd->qlock);
	return rc;
}

/* ---- life cycle ------------------------------------------------------------------------------ */

/* Everything but the model. */
static void free_transport(struct virtio_device *vd)
{
	if (vd->worker_started) {
		signal_fd(vd->stop_fd);
		pthread_join(vd->worker, NULL);
	}
	for (unsigned q = 0; q < vd->ops->nqueues; q++) {
		if (vd->qr[q].ioeventfd)
			vm_ioeventfd(vd->vm, vd->qr[q].notify_addr, 2, vd->qr[q].kick_fd, false);
		if (vd->qr[q].kick_fd >= 0)
			close(vd->qr[q].kick_fd);
	}
	for (unsigned v = 0; v < vd->nvectors; v++)
		if (vd->msix[v].irqfd >= 0) {
			if (vd->msix[v].routed)
				vm_irqfd_msi(vd->vm, vd->msix[v].irqfd, 0, 0, false);
			close(vd->msix[v].irqfd);
		}
	if (vd->stop_fd >= 0)
		close(vd->stop_fd);
	pthread_mutex_destroy(&vd->lock);
	pthread_mutex_destroy(&vd->qlock);
	free(vd);
}

static void virtio_destroy(void *opaque)
{
	struct virtio_device *vd = opaque;
	void (*destroy)(void *) = vd->ops->destroy;
	void *model = vd->opaque;
	free_transport(vd);
	if (destroy)
		destroy(model);
}

struct virtio_device *virtio_pci_create(struct vm *vm, const struct virtio_ops *ops, void *opaque)
{
	if (ops->nqueues < 1 || ops->nqueues > VIRTIO_MAX_QUEUES ||
	    ops->config_size > REGION_SIZE || !ops->queue_max ||
	    ops->queue_max & (ops->queue_max - 1)) {
		log_error("%s: bad device description", ops->name);
		return NULL;
	}
	struct virtio_device *vd = calloc(1, sizeof(*vd));
	if (!vd) {
		log_error("%s: out of memory", ops->name);
		return NULL;
	}
	vd->vm = vm;
	vd->ops = ops;
	vd->opaque = opaque;
	vd->nvectors = (uint16_t)(ops->nqueues + 1);
	pthread_mutex_init(&vd->qlock, NULL);
	pthread_mutex_init(&vd->lock, NULL);
	vd->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	bool fds_ok = vd->stop_fd >= 0;
	for (unsigned q = 0; q < ops->nqueues; q++) {
		vd->qr[q].kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		fds_ok = fds_ok && vd->qr[q].kick_fd >= 0;
	}
	for (unsigned q = ops->nqueues; q < VIRTIO_MAX_QUEUES; q++)
		vd->qr[q].kick_fd = -1;
	for (unsigned v = 0; v < vd->nvectors; v++) {
		vd->msix[v].masked = true;
		/* Engines without irqfds deliver directly; the fd then simply goes unused. */
		vd->msix[v].irqfd = vm->engine->irqfd_msi && !vm->irqchip
					? eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
					: -1;
	}
	for (unsigned q = 0; q < ops->nqueues; q++)
		vd->vq[q].mem = &vm->mem;
	device_reset(vd);
	vd->dev = (struct device){.name = ops->name,
				  .opaque = vd,
				  .save = virtio_save,
				  .load = virtio_load,
				  .destroy = virtio_destroy};
	if (!fds_ok) {
		log_error("%s: eventfd: %s", ops->name, strerror(errno));
		free_transport(vd);
		return NULL;
	}
	if (build_config_space(vd) < 0) {
		log_error("%s: its capabilities do not fit in PCI config space", ops->name);
		free_transport(vd);
		return NULL;
	}
	if (pci_add_device(vm, &vd->pci) < 0) {
		free_transport(vd);
		return NULL;
	}
	vm_add_device(vm, &vd->dev);
	return vd;
}

int virtio_start(struct virtio_device *vd)
{
	int e = pthread_create(&vd->worker, NULL, worker_main, vd);
	if (e) {
		log_error("%s: cannot start its thread: %s", vd->ops->name, strerror(e));
		return -1;
	}
	vd->worker_started = true;
	return 0;
}
