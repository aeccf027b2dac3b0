/* Benchmark guests (PVH, 32-bit, paging off; the same image runs under ferry and QEMU):
 *   BENCH_EXIT       the first instructions write 0 to the debug-exit port (status 1)
 *   BENCH_PIO=N      N writes to the UART scratch register (0x3ff), then exit 0; prints "S"
 *                    on COM1 before the loop and "E" after it (the bench timestamps them)
 *   BENCH_LOOP=N     the same with a nop in place of the OUT (the loop's own cost)
 *   BENCH_MEM_MIB=M  writes one byte in each 4 KiB page of M MiB from 16 MiB up, prints "T"
 *                    on COM1 and halts with interrupts off (the VMM stays up for RSS reading) */
	.section .note.Xen, "a"
	.balign 4
	.long 4, 4, 18			/* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long _start

	.section .text.entry, "ax"
	.code32
	.globl _start
_start:
#if defined(BENCH_EXIT)
	xor %eax, %eax
	out %al, $0xf4
#elif defined(BENCH_PIO) || defined(BENCH_LOOP)
#ifdef BENCH_PIO
	mov $BENCH_PIO, %ecx
#else
	mov $BENCH_LOOP, %ecx
#endif
	mov $0x3f8, %dx
	mov $'S', %al
	out %al, %dx
	mov $0x3ff, %dx
	test %ecx, %ecx
	jz 2f
#ifdef BENCH_PIO
1:	out %al, %dx
#else
1:	nop
#endif
	dec %ecx
	jnz 1b
2:	mov $0x3f8, %dx
	mov $'E', %al
	out %al, %dx
	xor %eax, %eax
	out %al, $0xf4
#elif defined(BENCH_MEM_MIB)
	mov $0x1000000, %edi
	mov $(BENCH_MEM_MIB * 256), %ecx
1:	movb $1, (%edi)
	add $4096, %edi
	dec %ecx
	jnz 1b
	mov $'T', %al
	mov $0x3f8, %dx
	out %al, %dx
	mov $'\n', %al
	out %al, %dx
#endif
3:	cli
	hlt
	jmp 3b
