/* PVH entry: a Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY (18) gives the 32-bit entry point; the
 * VMM enters it in flat 32-bit protected mode, paging off, EBX = hvm_start_info. */
	.section .note.Xen, "a"
	.balign 4
	.long 4				/* namesz */
	.long 4				/* descsz */
	.long 18			/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long pvh_start

	.section .text.entry, "ax"
	.code32
	.globl pvh_start, _start
_start:
pvh_start:
	xor %edi, %edi
	mov %ebx, %esi
	jmp lm32_enter
