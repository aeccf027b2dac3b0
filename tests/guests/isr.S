/* ferry test guests: 64-bit interrupt entry stubs for vectors 0-63 and 0x80. Each pushes
 * (error code or 0, vector), saves the caller-saved registers and calls isr_dispatch(frame). */
	.code64
	.altmacro
	.section .text.isr, "ax"

	.macro STUB vec
	.balign 16
isr_\vec:
	.if (\vec == 8) || (\vec >= 10 && \vec <= 14) || (\vec == 17) || (\vec == 21)
	.else
	push $0
	.endif
	push $\vec
	jmp isr_common
	.endm

	.set v, 0
	.rept 64
	STUB %v
	.set v, v + 1
	.endr
	STUB 128

isr_common:
	push %rax
	push %rcx
	push %rdx
	push %rsi
	push %rdi
	push %r8
	push %r9
	push %r10
	push %r11
	mov %rsp, %rdi
	cld
	call isr_dispatch
	pop %r11
	pop %r10
	pop %r9
	pop %r8
	pop %rdi
	pop %rsi
	pop %rdx
	pop %rcx
	pop %rax
	add $16, %rsp
	iretq

	.section .rodata.isr, "a"
	.balign 8
	.globl isr_table
isr_table:
	.set v, 0
	.macro REF vec
	.quad isr_\vec
	.endm
	.rept 64
	REF %v
	.set v, v + 1
	.endr
	.quad isr_128
