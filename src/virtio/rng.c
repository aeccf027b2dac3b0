/* virtio-rng (virtio spec 5.4): one queue of device-writable buffers that the device fills with
 * random bytes from the host's getrandom(2). The guest's hwrng core feeds them to its entropy
 * pool. Present when the configuration asks for it (--rng). */
#include <errno.h>
#include <linux/virtio_ids.h>
#include <stdlib.h>
#include <sys/random.h>

#include "util/log.h"
#include "virtio/virtio_pci.h"
#include "vm/vm.h"

#define RNG_QUEUE_SIZE 64
#define RNG_MAX_SEGS   16
#define RNG_MAX_CHAIN  (64u << 10) /* bytes given per request: enough, and bounded */

static int64_t rng_fill(struct virtio_device *vd, unsigned q, struct virtq_chain *c)
{
	(void)vd;
	(void)q;
	uint64_t done = 0;
	for (unsigned i = c->n_out; i < c->nseg && done < RNG_MAX_CHAIN; i++) {
		uint8_t *p = c->seg[i].host;
		uint64_t len = c->seg[i].len;
		if (len > RNG_MAX_CHAIN - done)
			len = RNG_MAX_CHAIN - done;
		uint64_t got = 0;
		while (got < len) {
			ssize_t n = getrandom(p + got, len - got, 0);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				log_warn("virtio-rng: getrandom: %m");
				return (int64_t)(done + got);
			}
			got += (uint64_t)n;
		}
		done += got;
	}
	return (int64_t)done;
}

static int rng_notify(struct virtio_device *vd, unsigned q)
{
	return virtio_process_queue(vd, q, rng_fill);
}

static const struct virtio_ops rng_ops = {
    .name = "virtio-rng",
    .type = VIRTIO_ID_RNG,
    .pci_class = 0x00ff00, /* unclassified */
    .nqueues = 1,
    .queue_max = RNG_QUEUE_SIZE,
    .max_segs = RNG_MAX_SEGS,
    .queue_notify = rng_notify,
};

static int rng_create(struct vm *vm)
{
	if (!vm->cfg->rng)
		return 0;
	struct virtio_device *vd = virtio_pci_create(vm, &rng_ops, NULL);
	if (!vd || virtio_start(vd) < 0)
		return -1;
	return 0;
}

static struct device_type rng_type = {.name = "virtio-rng", .order = 90, .create = rng_create};
DEVICE_REGISTER(rng_type)
