/* The debug exit port at 0xf4, compatible with QEMU's isa-debug-exit: a guest (typically a
 * test) writes a value v and ferry exits with status (v << 1) | 1, truncated to the 8 bits a
 * process status has. An odd status can never be mistaken for ferry's own 0 success. Reads
 * return 0. The device has no state, so it needs no lock and its record is empty. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "vm/vm.h"

#define DEBUGEXIT_PORT 0xf4
#define DEBUGEXIT_LEN  4 /* the port is a byte wide; 2- and 4-byte writes are accepted too */

static const char debugexit_tag[8] = "dbgexit";
#define DEBUGEXIT_STATE_VERSION 1

struct debugexit {
	struct vm *vm;
	struct device dev;
};

static void debugexit_io(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool write)
{
	struct debugexit *d = opaque;
	if (!write) {
		memset(data, 0, size);
		return;
	}
	if (offset != 0)
		return; /* only the port itself; the bytes after it are there for wide accesses */
	uint32_t v = 0;
	for (unsigned i = 0; i < size && i < 4; i++)
		v |= (uint32_t)data[i] << (8 * i);
	vm_stop(d->vm, VM_STOP_EXIT, (int)(((v << 1) | 1) & 0xff),
		"guest wrote 0x%x to the exit port", v);
}

static void debugexit_save(void *opaque, struct state_writer *w)
{
	(void)opaque;
	sw_begin(w, debugexit_tag, DEBUGEXIT_STATE_VERSION);
}

static int debugexit_load(void *opaque, struct state_reader *r)
{
	(void)opaque;
	sr_begin(r, debugexit_tag, DEBUGEXIT_STATE_VERSION);
	return r->err ? -1 : 0;
}

static void debugexit_destroy(void *opaque)
{
	free(opaque);
}

static int debugexit_create(struct vm *vm)
{
	struct debugexit *d = calloc(1, sizeof(*d));
	if (!d) {
		log_error("debug exit: out of memory");
		return -1;
	}
	d->vm = vm;
	if (bus_register(&vm->pio, DEBUGEXIT_PORT, DEBUGEXIT_LEN, debugexit_io, d, "debugexit") <
	    0) {
		log_error("debug exit: ports 0x%x-0x%x are taken", DEBUGEXIT_PORT,
			  DEBUGEXIT_PORT + DEBUGEXIT_LEN - 1);
		free(d);
		return -1;
	}
	d->dev = (struct device){
	    .name = "debugexit",
	    .opaque = d,
	    .save = debugexit_save,
	    .load = debugexit_load,
	    .destroy = debugexit_destroy,
	};
	vm_add_device(vm, &d->dev);
	return 0;
}

static struct device_type debugexit_type = {
    .name = "debugexit", .order = 40, .create = debugexit_create};
DEVICE_REGISTER(debugexit_type)
