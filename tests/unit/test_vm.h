/* A VM for unit tests, built by hand rather than by vm_create(): the test's configuration and
 * engine double, buses, RAM, and only the device types the test names -- no engine, no vCPUs,
 * no kernel. Plus the accesses a guest driver makes: port and MMIO bus cycles, PCI configuration
 * mechanism #1, and guest RAM. Each unit test is a single-file program, so everything here is
 * static inline (a test need not use all of it). Special set-ups (a chardev, stdio swapped for
 * pipes) stay in the test, around these. */
#ifndef FERRY_TEST_VM_H
#define FERRY_TEST_VM_H

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dev/pci.h"
#include "vm/bus.h"
#include "vm/device.h"
#include "vm/mem.h"
#include "vm/vm.h"

/* Sets up vm (zeroed by the caller) for cfg and engine: locks, buses, and cfg->mem_size bytes
 * of RAM (none when it is 0). cfg must outlive vm. -1 (nothing left to undo) when RAM fails. */
static inline int test_vm_init(struct vm *vm, const struct vm_config *cfg,
			       const struct engine_ops *engine)
{
	char err[256];
	vm->cfg = cfg;
	vm->engine = engine;
	vm->nvcpus = cfg->smp;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->stopped_cond, NULL);
	bus_init(&vm->pio, "pio");
	bus_init(&vm->mmio, "mmio");
	if (cfg->mem_size && gmem_init(&vm->mem, cfg->mem_size, err, sizeof(err)) < 0) {
		print_error("test VM: %s\n", err);
		bus_destroy(&vm->pio);
		bus_destroy(&vm->mmio);
		pthread_mutex_destroy(&vm->lock);
		pthread_cond_destroy(&vm->stopped_cond);
		return -1;
	}
	return 0;
}

/* Creates the named device types (a NULL-terminated list) in list order, so the list must
 * name a bus before the devices on it. -1 when a type is unknown or its create() fails. */
static inline int test_vm_add_devices(struct vm *vm, const char *const *names)
{
	for (; *names; names++) {
		struct device_type *ty = device_types();
		while (ty && strcmp(ty->name, *names) != 0)
			ty = ty->next;
		if (!ty) {
			print_error("test VM: no device type %s\n", *names);
			return -1;
		}
		if (ty->create(vm) != 0) {
			print_error("test VM: cannot create %s\n", *names);
			return -1;
		}
	}
	return 0;
}

/* Undoes test_vm_init and the devices: devices first (in vm->devices order), then buses, RAM
 * and locks. Whatever the devices used (a chardev) is the caller's to close afterwards. */
static inline void test_vm_destroy(struct vm *vm)
{
	while (vm->devices) {
		struct device *d = vm->devices;
		vm->devices = d->next;
		d->destroy(d->opaque);
	}
	bus_destroy(&vm->pio);
	bus_destroy(&vm->mmio);
	/* A zeroed guest_mem has fd 0: only RAM that was made is destroyed. */
	if (vm->cfg->mem_size)
		gmem_destroy(&vm->mem);
	pthread_mutex_destroy(&vm->lock);
	pthread_cond_destroy(&vm->stopped_cond);
}

/* ---- accesses as a guest makes them ------------------------------------------------------- */

/* A read returns bytes the device did not write as 0x5a, so a device that leaves part of an
 * access unanswered shows up in the value. */
static inline uint64_t test_bus_rd(const struct bus *b, uint64_t addr, unsigned size)
{
	uint8_t buf[8];
	assert_true(size >= 1 && size <= sizeof(buf));
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(bus_access(b, addr, buf, size, false), 0);
	uint64_t v = 0;
	for (unsigned i = 0; i < size; i++)
		v |= (uint64_t)buf[i] << (8 * i);
	return v;
}

static inline void test_bus_wr(const struct bus *b, uint64_t addr, uint64_t v, unsigned size)
{
	uint8_t buf[8];
	assert_true(size >= 1 && size <= sizeof(buf));
	for (unsigned i = 0; i < size; i++)
		buf[i] = (uint8_t)(v >> (8 * i));
	assert_int_equal(bus_access(b, addr, buf, size, true), 0);
}

/* CONFIG_ADDRESS for a configuration access (enable bit set). */
static inline uint32_t test_cfg_addr(unsigned bus, unsigned slot, unsigned fn, unsigned off)
{
	return 0x80000000u | bus << 16 | slot << 11 | fn << 8 | (off & 0xfc);
}

/* Configuration space of bus 0, slot, function fn, through 0xcf8/0xcfc as a guest reaches it. */
static inline uint32_t test_cfg_rd(struct vm *vm, unsigned slot, unsigned fn, unsigned off,
				   unsigned size)
{
	test_bus_wr(&vm->pio, PCI_CONFIG_ADDR_PORT, test_cfg_addr(0, slot, fn, off), 4);
	return (uint32_t)test_bus_rd(&vm->pio, PCI_CONFIG_DATA_PORT + (off & 3), size);
}

static inline void test_cfg_wr(struct vm *vm, unsigned slot, unsigned fn, unsigned off, uint32_t v,
			       unsigned size)
{
	test_bus_wr(&vm->pio, PCI_CONFIG_ADDR_PORT, test_cfg_addr(0, slot, fn, off), 4);
	test_bus_wr(&vm->pio, PCI_CONFIG_DATA_PORT + (off & 3), v, size);
}

/* The host address of guest RAM [gpa, gpa + len), which must be RAM. */
static inline void *test_ram(struct vm *vm, uint64_t gpa, uint64_t len)
{
	void *p = gmem_ptr(&vm->mem, gpa, len);
	assert_non_null(p);
	return p;
}

#endif
