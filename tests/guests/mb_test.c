/* mb_test: checks what a multiboot v1 loader hands over (EAX magic, info flags, mem_upper
 * against fw_cfg's RAM size, cmdline, module 0 = initrd, memory map), prints the CMOS RTC's
 * date, then exit=N. */
#include "multiboot.h"
#include "rt.h"

/* Prints the CMOS RTC's date and time (the test compares the year with the host's). */
static void print_rtc(void)
{
	for (int i = 0; i < 1000 && (cmos_read(0x0a) & 0x80); i++) /* update in progress */
		cpu_relax();
	unsigned v[6] = {cmos_read(0x09), cmos_read(0x08), cmos_read(0x07),
			 cmos_read(0x04), cmos_read(0x02), cmos_read(0x00)};
	unsigned b = cmos_read(0x0b);
	if (b == 0xff && v[0] == 0xff) {
		puts("rtc: none (CMOS reads 0xff)\n");
		return;
	}
	for (int i = 0; i < 6; i++) {
		if (i == 3 && !(b & 0x02) && (v[3] & 0x80)) /* 12-hour clock, PM */
			v[3] = (v[3] & 0x7f) + 0x100;
		unsigned pm = v[i] & 0x100, x = v[i] & 0xff;
		if (!(b & 0x04)) /* BCD */
			x = (x >> 4) * 10 + (x & 0xf);
		v[i] = pm ? (x % 12) + 12 : x;
	}
	printf("rtc: 20%02u-%02u-%02u %02u:%02u:%02u\n", v[0], v[1], v[2], v[3], v[4], v[5]);
}

void kmain(uint32_t magic, uint64_t info)
{
	const struct mb_info *mbi = (const struct mb_info *)info;
	int bad = 0;

	puts("mb_test: multiboot guest in long mode\n");
	if (magic != MB_BOOTLOADER_MAGIC) {
		printf("FAIL: eax 0x%x, not 0x2badb002\n", magic);
		vm_exit(0x70);
	}
	printf("magic ok, flags 0x%x\n", mbi->flags);

	if (!fwcfg_present()) {
		puts("FAIL: no fw_cfg signature\n");
		bad = 1;
	}
	uint64_t ram = fwcfg_ram_size();
	printf("fw_cfg: %u cpus, ram %lu MiB\n", fwcfg_ncpus(), ram >> 20);
	if (!(mbi->flags & MBI_MEM)) {
		puts("FAIL: no mem_lower/mem_upper\n");
		bad = 1;
	} else {
		/* mem_upper = KiB of RAM from 1 MiB up to the first hole (below 4 GiB). */
		uint64_t top = ((uint64_t)mbi->mem_upper << 10) + 0x100000;
		uint64_t low4g = ram < 0xc0000000 ? ram : 0xc0000000;
		printf("mem_lower %u KiB, mem_upper %u KiB\n", mbi->mem_lower, mbi->mem_upper);
		if (top > ram || top + 0x200000 < low4g || mbi->mem_lower > 640) {
			printf("FAIL: mem_upper inconsistent with fw_cfg ram size 0x%lx\n", ram);
			bad = 1;
		} else {
			puts("mem_upper ok\n");
		}
	}

	print_rtc();
	const char *cmdline = mb_cmdline(magic, info);
	printf("cmdline: '%s'\n", cmdline ? cmdline : "");

	if ((mbi->flags & MBI_MODS) && mbi->mods_count) {
		const struct mb_module *m = (const struct mb_module *)(uint64_t)mbi->mods_addr;
		printf("modules: %u\n", mbi->mods_count);
		printf("module 0 at 0x%x size %u\n", m->mod_start, m->mod_end - m->mod_start);
		puts("module 0 first line: ");
		print_first_line((const char *)(uint64_t)m->mod_start, m->mod_end - m->mod_start,
				 80);
		putc('\n');
	} else {
		puts("modules: 0\n");
	}

	if (mbi->flags & MBI_MMAP) {
		unsigned n = 0;
		uint64_t ram_in_map = 0;
		for (uint32_t off = 0; off < mbi->mmap_length && n < 64; n++) {
			const struct mb_mmap *e =
			    (const struct mb_mmap *)(uint64_t)(mbi->mmap_addr + off);
			if (e->type == 1)
				ram_in_map += e->len;
			off += e->size + 4;
		}
		printf("mmap entries: %u, ram %lu MiB\n", n, ram_in_map >> 20);
		if (!n) {
			puts("FAIL: empty memory map\n");
			bad = 1;
		}
	} else {
		puts("FAIL: no memory map\n");
		bad = 1;
	}
	if (bad)
		vm_exit(0x71);
	puts("mb_test ok\n");
	finish(cmdline);
}
