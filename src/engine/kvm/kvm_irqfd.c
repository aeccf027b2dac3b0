/* The KVM engine's device fast paths: ioeventfd (a guest's write to a virtqueue's notification
 * address signals the device's eventfd inside the kernel, no exit) and irqfd over MSI routes (a
 * device thread's write to an eventfd raises the MSI inside the kernel, no ioctl). Setting one
 * MSI route means handing KVM the whole routing table, so the table below keeps the default
 * routes of the in-kernel 8259s and I/O APIC (which KVM_SET_GSI_ROUTING would otherwise drop)
 * plus one GSI per device vector. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "engine/kvm/kvm.h"
#include "util/log.h"
#include "vm/vm.h"

#define IOAPIC_PINS  24
#define PIC_IRQS     16
#define MSI_GSI_BASE IOAPIC_PINS /* GSIs after the I/O APIC's pins carry the MSI routes */

void kvm_routes_init(struct kvm_vm *kv)
{
	pthread_mutex_init(&kv->route_lock, NULL);
	for (unsigned i = 0; i < KVM_MAX_MSI_ROUTES; i++)
		kv->routes[i].fd = -1;
}

int kvm_ioeventfd(struct vm *vm, uint64_t addr, unsigned len, int fd, bool assign)
{
	struct kvm_vm *kv = vm->engine_data;
	struct kvm_ioeventfd io = {
	    .addr = addr,
	    .len = len,
	    .fd = fd,
	    .flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN,
	};
	return ioctl(kv->vm_fd, KVM_IOEVENTFD, &io) < 0 ? -1 : 0;
}

/* With route_lock held: gives KVM the default chip routes and every MSI route in use. */
static int push_routes(struct kvm_vm *kv)
{
	unsigned max = PIC_IRQS + IOAPIC_PINS + KVM_MAX_MSI_ROUTES;
	struct kvm_irq_routing *t =
	    calloc(1, sizeof(*t) + max * sizeof(struct kvm_irq_routing_entry));
	if (!t)
		return -1;
	unsigned n = 0;
	for (unsigned gsi = 0; gsi < IOAPIC_PINS; gsi++) {
		struct kvm_irq_routing_entry *e = &t->entries[n++];
		e->gsi = gsi;
		e->type = KVM_IRQ_ROUTING_IRQCHIP;
		e->u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
		e->u.irqchip.pin = gsi;
		if (gsi < PIC_IRQS) {
			e = &t->entries[n++];
			e->gsi = gsi;
			e->type = KVM_IRQ_ROUTING_IRQCHIP;
			e->u.irqchip.irqchip =
			    gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
			e->u.irqchip.pin = gsi % 8;
		}
	}
	for (unsigned i = 0; i < KVM_MAX_MSI_ROUTES; i++) {
		const struct kvm_msi_route *r = &kv->routes[i];
		if (r->fd < 0)
			continue;
		struct kvm_irq_routing_entry *e = &t->entries[n++];
		e->gsi = r->gsi;
		e->type = KVM_IRQ_ROUTING_MSI;
		e->u.msi.address_lo = (uint32_t)r->addr;
		e->u.msi.address_hi = (uint32_t)(r->addr >> 32);
		e->u.msi.data = r->data;
	}
	t->nr = n;
	int rc = ioctl(kv->vm_fd, KVM_SET_GSI_ROUTING, t);
	free(t);
	return rc < 0 ? -1 : 0;
}

int kvm_irqfd_msi(struct vm *vm, int fd, uint64_t addr, uint32_t data, bool assign)
{
	struct kvm_vm *kv = vm->engine_data;
	int rc = -1;
	pthread_mutex_lock(&kv->route_lock);
	struct kvm_msi_route *r = NULL, *free_slot = NULL;
	for (unsigned i = 0; i < KVM_MAX_MSI_ROUTES; i++) {
		if (kv->routes[i].fd == fd)
			r = &kv->routes[i];
		else if (kv->routes[i].fd < 0 && !free_slot)
			free_slot = &kv->routes[i];
	}
	if (!assign) {
		if (r) {
			struct kvm_irqfd irqfd = {
			    .fd = (uint32_t)fd, .gsi = r->gsi, .flags = KVM_IRQFD_FLAG_DEASSIGN};
			rc = ioctl(kv->vm_fd, KVM_IRQFD, &irqfd) < 0 ? -1 : 0;
			r->fd = -1;
			if (push_routes(kv) < 0)
				rc = -1;
		} else {
			rc = 0;
		}
		goto out;
	}
	if (r) {
		/* A new message for an existing route: the irqfd stays bound to its GSI. */
		r->addr = addr;
		r->data = data;
		rc = push_routes(kv);
		goto out;
	}
	if (!free_slot) {
		errno = ENOSPC;
		goto out;
	}
	free_slot->fd = fd;
	free_slot->gsi = MSI_GSI_BASE + (uint32_t)(free_slot - kv->routes);
	free_slot->addr = addr;
	free_slot->data = data;
	if (push_routes(kv) < 0) {
		free_slot->fd = -1;
		goto out;
	}
	struct kvm_irqfd irqfd = {.fd = (uint32_t)fd, .gsi = free_slot->gsi};
	if (ioctl(kv->vm_fd, KVM_IRQFD, &irqfd) < 0) {
		free_slot->fd = -1;
		push_routes(kv);
		goto out;
	}
	rc = 0;
out:
	pthread_mutex_unlock(&kv->route_lock);
	return rc;
}
