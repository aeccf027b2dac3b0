/* Devices register themselves: each device file declares a device_type with DEVICE_REGISTER,
 * and vm_create() calls every type's create(). create() claims bus ranges and returns the
 * instance; save/load carry its complete state as a versioned record (vm/state.h). */
#ifndef FERRY_DEVICE_H
#define FERRY_DEVICE_H

#include "vm/state.h"

struct vm;

struct device {
	const char *name;
	void *opaque;
	void (*save)(void *opaque, struct state_writer *w);
	int (*load)(void *opaque, struct state_reader *r); /* 0, or -1 on a bad record */
	void (*destroy)(void *opaque);
	struct device *next;
};

#define DEVICE_BAD_INPUT (-2)

struct device_type {
	const char *name;
	int order; /* lower creates first; ties keep registration order */
	/* Creates the device on vm (claiming bus ranges, adding itself with vm_add_device).
	 * Returns 0; -1 with a message already reported; or DEVICE_BAD_INPUT when the
	 * configuration names bad input (an unreadable or malformed image): the one line
	 * reported says why and ferry exits with the usage status. A type may decide it is not
	 * wanted by this VM's configuration and return 0 without adding anything. */
	int (*create)(struct vm *vm);
	struct device_type *next;
};

void device_type_register(struct device_type *t);
/* Every registered type, ordered by order. */
struct device_type *device_types(void);

#define DEVICE_REGISTER(type)                                                                      \
	__attribute__((constructor)) static void register_##type(void)                             \
	{                                                                                          \
		device_type_register(&type);                                                       \
	}

#endif
