#include "vm/device.h"

#include <stddef.h>

static struct device_type *types;

/* Called from constructors before main(): keeps the list sorted by order, stable for ties. */
void device_type_register(struct device_type *t)
{
	struct device_type **p = &types;
	while (*p && (*p)->order <= t->order)
		p = &(*p)->next;
	t->next = *p;
	*p = t;
}

struct device_type *device_types(void)
{
	return types;
}
