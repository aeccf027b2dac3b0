/* triple: loads an empty IDT (limit 0) and executes ud2: #UD cannot be delivered (#GP), nor
 * can the #DF, so the CPU shuts down. ferry must report "triple fault" and exit 4. */
#include "rt.h"

void kmain(uint32_t magic, uint64_t info)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) d = {0, 0};
	puts("triple: loading an empty IDT, then ud2\n");
	__asm__ volatile("lidt %0; ud2" ::"m"(d));
	puts("FAIL: still running after ud2\n");
	vm_exit(0x34);
}
