/* bzimage_test's protected-mode part, linked at 1 MiB: the 32-bit entry (offset 0) is not
 * supported; the 64-bit entry (offset 0x200) runs with the loader's identity map and GDT,
 * RSI = boot_params. */
	.section .text.bz32, "ax"
	.code32
bz_entry32:
	mov $0x3a, %al
	out %al, $0xf4
1:	hlt
	jmp 1b

	.org 0x200
	.code64
	.globl bz_entry64
bz_entry64:
	cli
	cld
	mov $__bss_start, %edi
	mov $__bss_end, %ecx
	sub %edi, %ecx
	shr $3, %ecx
	xor %eax, %eax
	rep stosq
	mov $bz_stack_top, %esp
	xor %edi, %edi
	call kmain
1:	cli
	hlt
	jmp 1b

	.section .stack, "aw", @nobits
	.balign 16
	.space 16384
bz_stack_top:
