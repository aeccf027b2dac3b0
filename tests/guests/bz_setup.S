/* bzimage_test.bin: a Linux/x86 bzImage made by hand. Setup area (boot sector + 2 setup
 * sectors) carrying the boot protocol 2.15 header, then the protected-mode part (bz_pm.bin,
 * linked at 1 MiB; 64-bit entry at its offset 0x200). Offsets: Documentation/arch/x86/boot.rst.
 * The 16-bit entry (what a BIOS-style loader jumps to) only says it is not supported. */
	.set SETUP_SECTS, 2
	.set LOADED_HIGH, 0x01
	.set XLF_KERNEL_64, 0x01

	.section .setup, "a"
	.code16
setup_start:
	.org 0x1f1
	.byte SETUP_SECTS		/* 0x1f1 setup_sects */
	.word 0				/* 0x1f2 root_flags */
	.long (pm_end - pm_start + 15) / 16 /* 0x1f4 syssize */
	.word 0				/* 0x1f8 ram_size */
	.word 0xffff			/* 0x1fa vid_mode: normal */
	.word 0				/* 0x1fc root_dev */
	.word 0xaa55			/* 0x1fe boot_flag */
	.byte 0xeb, rm_entry - 0x202 - setup_start /* 0x200 jump */
	.ascii "HdrS"			/* 0x202 header */
	.word 0x020f			/* 0x206 version 2.15 */
	.long 0				/* 0x208 realmode_swtch */
	.word 0x1000			/* 0x20c start_sys_seg */
	.word 0				/* 0x20e kernel_version */
	.byte 0				/* 0x210 type_of_loader (loader writes) */
	.byte LOADED_HIGH		/* 0x211 loadflags */
	.word 0				/* 0x212 setup_move_size */
	.long 0x100000			/* 0x214 code32_start */
	.long 0				/* 0x218 ramdisk_image (loader writes) */
	.long 0				/* 0x21c ramdisk_size (loader writes) */
	.long 0				/* 0x220 bootsect_kludge */
	.word 0				/* 0x224 heap_end_ptr */
	.byte 0, 0			/* 0x226 ext_loader_ver, ext_loader_type */
	.long 0				/* 0x228 cmd_line_ptr (loader writes) */
	.long 0x37ffffff		/* 0x22c initrd_addr_max */
	.long 0x200000			/* 0x230 kernel_alignment */
	.byte 0				/* 0x234 relocatable_kernel: no, load at 1 MiB */
	.byte 21			/* 0x235 min_alignment (log2) */
	.word XLF_KERNEL_64		/* 0x236 xloadflags */
	.long 2047			/* 0x238 cmdline_size */
	.long 0				/* 0x23c hardware_subarch */
	.quad 0				/* 0x240 hardware_subarch_data */
	.long 0, 0			/* 0x248 payload_offset, payload_length */
	.quad 0				/* 0x250 setup_data */
	.quad 0x100000			/* 0x258 pref_address */
	.long 0x100000			/* 0x260 init_size */
	.long 0				/* 0x264 handover_offset */
	.long 0				/* 0x268 kernel_info_offset */

	.org 0x270
rm_entry:				/* CS base = setup + 0x200 */
	mov %cs, %ax
	mov %ax, %ds
	mov $(rm_msg - setup_start - 0x200), %si
	mov $0x3f8, %dx
1:	lodsb
	test %al, %al
	jz 2f
	out %al, %dx
	jmp 1b
2:	mov $0x39, %al
	out %al, $0xf4
3:	cli
	hlt
	jmp 3b
rm_msg:	.asciz "bzimage_test: the 16-bit entry is not supported, use the 64-bit one\r\n"

	.org (SETUP_SECTS + 1) * 512
pm_start:
	.incbin PM_BIN
	.balign 16, 0			/* syssize counts whole paragraphs: pad to one */
pm_end:
