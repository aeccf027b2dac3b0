/* A minimal QEMU-compatible firmware configuration device (fw_cfg), traditional I/O interface
 * only: a 16-bit selector at port 0x510 picks an item, and port 0x511 reads it a byte at a
 * time from the start. The items carry what firmware and guests ask of it: the signature, the
 * interface ID, the RAM size and the CPU counts; the file directory is empty. Unknown items and
 * bytes past an item's end read as 0. Item contents are built from the VM when selected. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "vm/vm.h"

#define FWCFG_BASE 0x510 /* selector; data at +1 */

/* Selector keys (QEMU's fw_cfg specification) */
#define FW_CFG_SIGNATURE      0x0000
#define FW_CFG_ID             0x0001
#define FW_CFG_RAM_SIZE       0x0003
#define FW_CFG_NB_CPUS        0x0005
#define FW_CFG_MAX_CPUS       0x000f
#define FW_CFG_FILE_DIR       0x0019
#define FW_CFG_WRITE_CHANNEL  0x4000 /* ignored: the write interface is not offered */

#define FW_CFG_ID_TRADITIONAL 0x01

#define ITEM_MAX              8 /* longest item built here */

static const char fwcfg_tag[8] = "fwcfg";
#define FWCFG_STATE_VERSION 1

struct fwcfg {
	pthread_mutex_t lock;
	struct vm *vm;
	struct device dev;

	uint16_t selector;
	uint32_t offset; /* next byte to read; stops at the item's length */

	/* The selected item, rebuilt from selector on select and on load. */
	uint8_t item[ITEM_MAX];
	uint32_t item_len;
};

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void build_item(struct fwcfg *f)
{
	const struct vm *vm = f->vm;
	memset(f->item, 0, sizeof(f->item));
	f->item_len = 0;
	switch (f->selector & (uint16_t)~FW_CFG_WRITE_CHANNEL) {
	case FW_CFG_SIGNATURE:
		memcpy(f->item, "QEMU", 4);
		f->item_len = 4;
		break;
	case FW_CFG_ID:
		put_le(f->item, FW_CFG_ID_TRADITIONAL, 4);
		f->item_len = 4;
		break;
	case FW_CFG_RAM_SIZE:
		put_le(f->item, vm->mem.size, 8);
		f->item_len = 8;
		break;
	case FW_CFG_NB_CPUS:
	case FW_CFG_MAX_CPUS: /* no CPU hotplug: the maximum is what runs */
		put_le(f->item, vm->nvcpus, 2);
		f->item_len = 2;
		break;
	case FW_CFG_FILE_DIR:
		f->item_len = 4; /* big-endian count of files: none */
		break;
	default:
		break; /* unknown (including architecture-specific 0x8000 keys): empty */
	}
}

static void fwcfg_io(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool write)
{
	struct fwcfg *f = opaque;
	pthread_mutex_lock(&f->lock);
	if (offset == 0) {
		if (write) {
			uint16_t sel = data[0];
			if (size >= 2)
				sel |= (uint16_t)(data[1] << 8);
			f->selector = sel;
			f->offset = 0;
			build_item(f);
		} else {
			memset(data, 0, size);
		}
	} else if (!write) {
		/* The data port is a byte wide; a wider read takes that many bytes in turn. */
		for (unsigned i = 0; i < size; i++) {
			if (f->offset < f->item_len) {
				data[i] = f->item[f->offset];
				f->offset++;
			} else {
				data[i] = 0;
			}
		}
	}
	/* Writes to the data port: the legacy write interface is not offered; ignored. */
	pthread_mutex_unlock(&f->lock);
}

static void fwcfg_save(void *opaque, struct state_writer *w)
{
	struct fwcfg *f = opaque;
	pthread_mutex_lock(&f->lock);
	sw_begin(w, fwcfg_tag, FWCFG_STATE_VERSION);
	sw_u16(w, f->selector);
	sw_u32(w, f->offset);
	pthread_mutex_unlock(&f->lock);
}

static int fwcfg_load(void *opaque, struct state_reader *r)
{
	struct fwcfg *f = opaque;
	sr_begin(r, fwcfg_tag, FWCFG_STATE_VERSION);
	uint16_t sel = sr_u16(r);
	uint32_t off = sr_u32(r);
	if (r->err)
		return -1;
	pthread_mutex_lock(&f->lock);
	uint16_t old_sel = f->selector;
	f->selector = sel;
	build_item(f);
	if (off > f->item_len) {
		/* The offset stops at the item's end: anything beyond is a corrupt record. */
		f->selector = old_sel;
		build_item(f);
		pthread_mutex_unlock(&f->lock);
		sr_check(r, false);
		return -1;
	}
	f->offset = off;
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static void fwcfg_destroy(void *opaque)
{
	struct fwcfg *f = opaque;
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static int fwcfg_create(struct vm *vm)
{
	struct fwcfg *f = calloc(1, sizeof(*f));
	if (!f) {
		log_error("fw_cfg: out of memory");
		return -1;
	}
	pthread_mutex_init(&f->lock, NULL);
	f->vm = vm;
	build_item(f); /* selector 0: the signature */
	if (bus_register(&vm->pio, FWCFG_BASE, 2, fwcfg_io, f, "fw_cfg") < 0) {
		log_error("fw_cfg: ports 0x%x-0x%x are taken", FWCFG_BASE, FWCFG_BASE + 1);
		fwcfg_destroy(f);
		return -1;
	}
	f->dev = (struct device){
	    .name = "fw_cfg",
	    .opaque = f,
	    .save = fwcfg_save,
	    .load = fwcfg_load,
	    .destroy = fwcfg_destroy,
	};
	vm_add_device(vm, &f->dev);
	return 0;
}

static struct device_type fwcfg_type = {.name = "fw_cfg", .order = 50, .create = fwcfg_create};
DEVICE_REGISTER(fwcfg_type)
