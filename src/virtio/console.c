/* virtio-console (virtio spec 5.3) as the VM's console under --console virtio: one port, the
 * guest's hvc0, on the serial chardev in place of the UART. receiveq0 (queue 0) takes input into
 * buffers the driver posts; transmitq0 (queue 1) carries the guest's output to the chardev. No
 * MULTIPORT, no EMERG_WRITE, and no SIZE: the chardev does not tell whether it is a terminal, nor
 * when its size changes, and a size that goes stale is worse than none.
 *
 * Input arrives on the chardev's thread, which never waits for the queue lock (the worker holds
 * it while it writes output, for as long as a slow terminal takes): the receive callback copies
 * what fits into a bounded buffer under the model's own leaf lock and wakes the worker through
 * an eventfd the worker watches; the worker moves the bytes into the driver's buffers. With the
 * buffer full the callback takes less, the chardev keeps the rest, and the worker lets it retry
 * once the driver has posted buffers and bytes have moved on. Input that comes before the driver
 * is ready waits in the buffer (DRIVER_OK serves the ready queues). */
#include <errno.h>
#include <linux/virtio_console.h>
#include <linux/virtio_ids.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "backend/chardev.h"
#include "util/log.h"
#include "virtio/virtio_pci.h"
#include "vm/vm.h"

#define CON_RXQ        0
#define CON_TXQ        1
#define CON_QUEUE_SIZE 64
#define CON_MAX_SEGS   64
#define CON_RX_CAP     4096 /* input held for the guest; the chardev keeps what does not fit */

static const char con_tag[8] = "vconsole";
#define CON_STATE_VERSION 1

struct vcon {
	struct vm *vm;
	struct chardev *cd;
	int wake_fd; /* input arrived: watched by the device's worker */
	bool hooked; /* the chardev's handlers are ours */
	struct virtio_console_config config;

	pthread_mutex_t lock; /* a leaf lock: the input buffer below */
	uint8_t rx[CON_RX_CAP];
	size_t rx_len;
	bool rx_blocked; /* the chardev holds bytes that did not fit */
};

static void wake_worker(int fd)
{
	uint64_t one = 1;
	/* Fails only with the counter saturated, when the worker has a wake-up pending anyway. */
	while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

/* Worker, queue lock held: moves buffered input into the driver's receive buffers. Returns 0, or
 * -1 when the driver broke a rule (reported here: NEEDS_RESET). */
static int rx_fill(struct virtio_device *vd)
{
	struct vcon *v = virtio_opaque(vd);
	struct virtq *vq = virtio_queue(vd, CON_RXQ);
	struct virtq_seg seg[CON_MAX_SEGS];
	bool pushed = false, wake = false;
	const char *broken = NULL;
	pthread_mutex_lock(&v->lock);
	while (v->rx_len) {
		struct virtq_chain c = {.seg = seg, .cap = CON_MAX_SEGS};
		int r = virtq_pop(vq, &c);
		if (r < 0) {
			broken = vq->err;
			break;
		}
		if (r == 0) {
			/* No buffers: have the driver notify when it posts some (with the event
			 * index this publishes where), unless some came meanwhile. */
			if (virtq_notify_enable(vq, true))
				continue;
			break;
		}
		if (c.in_len == 0) {
			broken = "a receive buffer with no writable part";
			break;
		}
		size_t n = virtq_write(&c, 0, v->rx, v->rx_len);
		memmove(v->rx, v->rx + n, v->rx_len - n);
		v->rx_len -= n;
		virtq_push(vq, c.head, (uint32_t)n);
		pushed = true;
	}
	if (v->rx_blocked && v->rx_len < CON_RX_CAP) {
		v->rx_blocked = false;
		wake = true;
	}
	pthread_mutex_unlock(&v->lock);
	/* The transport's lock is taken only now: its save path takes ours inside it. */
	if (pushed)
		virtio_queue_interrupt(vd, CON_RXQ);
	if (wake)
		chardev_accept_input(v->cd);
	if (broken) {
		virtio_needs_reset(vd, broken);
		return -1;
	}
	return 0;
}

/* Worker, queue lock held: the chardev's thread buffered input. */
static void rx_wake(struct virtio_device *vd, int fd)
{
	uint64_t n;
	while (read(fd, &n, sizeof(n)) < 0 && errno == EINTR)
		;
	/* Before DRIVER_OK (or while the device may not touch RAM) the input waits: DRIVER_OK
	 * serves the ready queues, and so does the driver's next notification. */
	if (!virtio_queue(vd, CON_RXQ)->ready || !virtio_running(vd))
		return;
	rx_fill(vd);
}

static int64_t tx_chain(struct virtio_device *vd, unsigned q, struct virtq_chain *c)
{
	(void)q;
	struct vcon *v = virtio_opaque(vd);
	/* Straight from guest RAM: the segments were checked to lie in it. */
	for (unsigned i = 0; i < c->n_out; i++)
		chardev_write(v->cd, c->seg[i].host, c->seg[i].len);
	return 0; /* the device writes nothing into a transmit buffer */
}

static int con_notify(struct virtio_device *vd, unsigned q)
{
	if (q == CON_RXQ)
		return rx_fill(vd); /* the driver posted receive buffers */
	return virtio_process_queue(vd, q, tx_chain);
}

/* The chardev's input thread: bytes typed at the console. */
static size_t con_receive(void *opaque, const uint8_t *buf, size_t len)
{
	struct vcon *v = opaque;
	pthread_mutex_lock(&v->lock);
	size_t n = CON_RX_CAP - v->rx_len;
	if (n > len)
		n = len;
	memcpy(v->rx + v->rx_len, buf, n);
	v->rx_len += n;
	if (n < len)
		v->rx_blocked = true;
	pthread_mutex_unlock(&v->lock);
	if (n)
		wake_worker(v->wake_fd);
	return n;
}

static void con_quit(void *opaque)
{
	struct vcon *v = opaque;
	vm_stop(v->vm, VM_STOP_USER, 0, "quit from the console");
}

static void con_config_read(void *opaque, unsigned off, uint8_t *data, unsigned len)
{
	const struct vcon *v = opaque;
	memset(data, 0, len);
	if (off < sizeof(v->config))
		memcpy(data, (const uint8_t *)&v->config + off,
		       len < sizeof(v->config) - off ? len : sizeof(v->config) - off);
}

/* The input not yet given to the guest; the transport saves the queues. */
static void con_save(void *opaque, struct state_writer *w)
{
	struct vcon *v = opaque;
	pthread_mutex_lock(&v->lock);
	sw_begin(w, con_tag, CON_STATE_VERSION);
	sw_u32(w, (uint32_t)v->rx_len);
	sw_bytes(w, v->rx, v->rx_len);
	pthread_mutex_unlock(&v->lock);
}

static int con_load(void *opaque, struct state_reader *r)
{
	struct vcon *v = opaque;
	uint8_t buf[CON_RX_CAP];
	sr_begin(r, con_tag, CON_STATE_VERSION);
	uint32_t len = sr_u32(r);
	sr_check(r, len <= CON_RX_CAP);
	if (r->err)
		return -1;
	sr_bytes(r, buf, len);
	if (r->err)
		return -1;
	pthread_mutex_lock(&v->lock);
	memcpy(v->rx, buf, len);
	v->rx_len = len;
	/* The chardev may hold input from before the load: let it retry once there is room. The
	 * transport's load serves the ready queues afterwards. */
	v->rx_blocked = true;
	pthread_mutex_unlock(&v->lock);
	return 0;
}

static void con_destroy(void *opaque)
{
	struct vcon *v = opaque;
	/* Waits for a callback in flight; none starts after this. The worker is gone already. */
	if (v->hooked)
		chardev_set_handlers(v->cd, NULL, NULL, NULL);
	if (v->wake_fd >= 0)
		close(v->wake_fd);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

static const struct virtio_ops con_ops = {
    .name = "virtio-console",
    .type = VIRTIO_ID_CONSOLE,
    .pci_class = 0x078000, /* simple communication controller, other */
    .nqueues = 2,
    .queue_max = CON_QUEUE_SIZE,
    .max_segs = CON_MAX_SEGS,
    .config_size = sizeof(struct virtio_console_config),
    .config_read = con_config_read,
    .queue_notify = con_notify,
    .save = con_save,
    .load = con_load,
    .destroy = con_destroy,
};

static int con_create(struct vm *vm)
{
	if (!vm->cfg->virtio_console)
		return 0;
	struct vcon *v = calloc(1, sizeof(*v));
	if (!v) {
		log_error("virtio-console: out of memory");
		return -1;
	}
	v->vm = vm;
	v->cd = vm->serial;
	pthread_mutex_init(&v->lock, NULL);
	/* Only with MULTIPORT does the driver read max_nr_ports; one port either way. */
	v->config.max_nr_ports = 1;
	v->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (v->wake_fd < 0) {
		log_error("virtio-console: eventfd: %s", strerror(errno));
		con_destroy(v);
		return -1;
	}
	struct virtio_device *vd = virtio_pci_create(vm, &con_ops, v);
	if (!vd) {
		con_destroy(v);
		return -1;
	}
	/* From here the VM owns v: it is destroyed with the device. */
	if (virtio_watch_fd(vd, v->wake_fd, rx_wake) < 0 || virtio_start(vd) < 0)
		return -1;
	chardev_set_handlers(v->cd, con_receive, con_quit, v);
	v->hooked = true;
	return 0;
}

/* After the PCI bus (70); the UART (10) leaves the chardev alone under --console virtio. */
static struct device_type con_type = {.name = "virtio-console", .order = 95, .create = con_create};
DEVICE_REGISTER(con_type)
