/* bzimage_test: reads what a Linux boot protocol loader put in boot_params (RSI at the 64-bit
 * entry): the setup header copy, type_of_loader, the command line, the e820 table and the
 * initrd, then exit=N. */
#include "rt.h"

#define BP(off, type) (*(const type *)(bp + (off)))

void kmain(uint32_t magic, uint64_t info)
{
	const uint8_t *bp = (const uint8_t *)info;
	int bad = 0;

	printf("bzimage_test: 64-bit entry, boot_params at 0x%lx\n", info);
	if (!bp || BP(0x202, uint32_t) != 0x53726448 || BP(0x1fe, uint16_t) != 0xaa55) {
		puts("FAIL: no setup header in boot_params\n");
		vm_exit(0x70);
	}
	printf("boot protocol 0x%x, type_of_loader 0x%x, loadflags 0x%x\n", BP(0x206, uint16_t),
	       BP(0x210, uint8_t), BP(0x211, uint8_t));

	uint64_t cl = BP(0x228, uint32_t) | (uint64_t)BP(0xc8, uint32_t) << 32;
	const char *cmdline = cl ? (const char *)cl : "";
	printf("cmdline: '%s'\n", cmdline);

	unsigned n = BP(0x1e8, uint8_t);
	uint64_t ram = 0;
	for (unsigned i = 0; i < n && i < 128; i++) {
		const uint8_t *e = bp + 0x2d0 + 20 * i; /* addr u64, size u64, type u32 */
		if (*(const uint32_t *)(e + 16) == 1)
			ram += *(const uint64_t *)(e + 8);
	}
	printf("e820 entries: %u, ram %lu MiB\n", n, ram >> 20);
	if (!n) {
		puts("FAIL: no e820 entries\n");
		bad = 1;
	}

	uint64_t rd = BP(0x218, uint32_t) | (uint64_t)BP(0xc0, uint32_t) << 32;
	uint64_t rd_size = BP(0x21c, uint32_t) | (uint64_t)BP(0xc4, uint32_t) << 32;
	printf("initrd at 0x%lx size %lu\n", rd, rd_size);
	if (rd_size) {
		puts("initrd first line: ");
		print_first_line((const char *)rd, rd_size, 80);
		putc('\n');
	}
	if (bad)
		vm_exit(0x71);
	puts("bzimage_test ok\n");
	finish(cmdline);
}
