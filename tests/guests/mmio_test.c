/* mmio_test: a store to guest-physical 0xf0000000, where nothing is mapped. The VMM must fail
 * closed (ferry: exit status 4, "unmapped MMIO" with the address and rip). A VMM that ignores
 * the store (QEMU does) lets the guest go on to say so and exit with 0x33 (status 103). */
#include "rt.h"

void kmain(uint32_t magic, uint64_t info)
{
	puts("about to touch unmapped MMIO\n");
	mmio_write32(0xf0000000, 0x12345678);
	puts("unmapped MMIO store returned\n");
	vm_exit(0x33);
}
