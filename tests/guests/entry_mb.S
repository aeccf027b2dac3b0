/* Multiboot v1 entry (ELF image: no address fields). EAX = magic, EBX = multiboot_info. */
	.set MB_MAGIC, 0x1badb002
	.set MB_FLAGS, 0x3		/* modules page-aligned, memory info */

	.section .mbheader, "a"
	.balign 4
	.long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

	.section .text.entry, "ax"
	.code32
	.globl _start
_start:
	mov %eax, %edi
	mov %ebx, %esi
	jmp lm32_enter
