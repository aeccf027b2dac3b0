/* ferry test guests: from 32-bit protected mode (multiboot, PVH, or an AP's trampoline) to
 * 64-bit long mode with this image's own GDT and page tables (an identity map of the first
 * 4 GiB with 2 MiB pages, user-accessible so CPL 3 code can use them too). */

	.set KCODE64, 0x08
	.set KDATA, 0x10
	.set KCODE32, 0x18

	.macro ENABLE_LONG_MODE
	mov $pml4, %eax
	mov %eax, %cr3
	mov %cr4, %eax
	or $0x20, %eax			/* PAE */
	mov %eax, %cr4
	mov $0xc0000080, %ecx		/* EFER */
	rdmsr
	or $0x100, %eax			/* LME */
	wrmsr
	mov %cr0, %eax
	or $0x80000001, %eax		/* PG | PE */
	mov %eax, %cr0
	.endm

	.section .text.lm32, "ax"
	.code32
/* In: EDI, ESI = kmain's two arguments. No stack needed. */
	.globl lm32_enter
lm32_enter:
	cli
	lgdt gdt_desc
	ENABLE_LONG_MODE
	ljmp $KCODE64, $1f
	.code64
1:	mov $KDATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	mov $stack_top, %esp
	mov %edi, %edi			/* upper halves are undefined after the mode switch */
	mov %esi, %esi
	call kmain
	jmp halt64

	.globl halt64
halt64:	cli
	hlt
	jmp halt64

/* Application processors: the real-mode trampoline (copied below 1 MiB and started by a SIPI)
 * loads this GDT, sets PE and jumps here. */
	.code32
	.weak ap_main
	.globl ap_entry32
ap_entry32:
	mov $KDATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	ENABLE_LONG_MODE
	ljmp $KCODE64, $1f
	.code64
1:	mov $KDATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov $0xfee00020, %edx		/* local APIC ID register */
	mov (%rdx), %edi
	shr $24, %edi
	mov %edi, %eax
	and $7, %eax
	inc %eax
	shl $12, %eax
	lea ap_stacks(%rax), %rsp
	call ap_main
	jmp halt64

/* The trampoline: position-independent 16-bit code, copied to a page-aligned address
 * below 1 MiB (SIPI vector = address >> 12, so CS base = that address, IP = 0). */
	.section .rodata.trampoline, "a"
	.code16
	.globl trampoline_start, trampoline_end
trampoline_start:
	cli
	lgdtl %cs:(tramp_gdt_desc - trampoline_start)
	mov %cr0, %eax
	or $1, %al
	mov %eax, %cr0
	ljmpl $KCODE32, $ap_entry32
tramp_gdt_desc:
	.word gdt_end - gdt - 1
	.long gdt
trampoline_end:

	.section .data.gdt, "aw"
	.code64
	.balign 16
	.globl gdt, gdt_desc
gdt:	.quad 0
	.quad 0x00af9a000000ffff	/* 0x08 kernel code, 64-bit */
	.quad 0x00cf92000000ffff	/* 0x10 kernel data */
	.quad 0x00cf9a000000ffff	/* 0x18 kernel code, 32-bit (APs) */
	.quad 0x00cff2000000ffff	/* 0x20 user data (0x23) */
	.quad 0x00affa000000ffff	/* 0x28 user code, 64-bit (0x2b) */
	.quad 0, 0			/* 0x30 TSS, filled by tss_init */
gdt_end:
	.balign 8
	.word 0, 0, 0
gdt_desc:
	.word gdt_end - gdt - 1
	.quad gdt

/* Page tables: P|RW|US everywhere; 2 MiB pages mapping 0-4 GiB 1:1. */
	.section .data.pagetables, "aw"
	.balign 4096
	.globl pml4
pml4:	.quad pdpt + 7
	.fill 511, 8, 0
pdpt:	.quad pd + 7, pd + 0x1000 + 7, pd + 0x2000 + 7, pd + 0x3000 + 7
	.fill 508, 8, 0
pd:
	.set i, 0
	.rept 2048
	.quad (i << 21) | 0x87
	.set i, i + 1
	.endr

	.section .bss.stack, "aw", @nobits
	.balign 4096
	.globl stack_top
	.space 16384
stack_top:
	.globl ap_stacks
ap_stacks:
	.space 4096 * 8
