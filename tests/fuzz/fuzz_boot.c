/* libFuzzer target for the kernel loaders: the input is a kernel image, loaded into 16 MiB of
 * guest RAM through boot_load and through each protocol's loader directly.
 *
 * Input layout: byte 0 controls the run, the rest is the kernel.
 *   bits 0-1  initrd: none, the last quarter of the input, 4 KiB, or 15 MiB (too big)
 *   bits 2-3  command line: none, short, 300 bytes, or BOOT_CMDLINE_MAX bytes (too long)
 *   bits 4-7  processor count for mptable_write (0 is refused)
 *
 * Built with -DFUZZ_SEED_MAIN instead, this file is the seed generator: it writes a minimal
 * valid image of each format into the directory given as its argument. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/x86/boot.h"

#define FUZZ_RAM   (16ull << 20)
#define BIG_INITRD (15ull << 20)

#ifndef FUZZ_SEED_MAIN

static struct guest_mem mem;
static uint8_t *big_initrd, *small_initrd;
static char *long_cmdline, *max_cmdline;

static int debug; /* FUZZ_BOOT_DEBUG set: print what each loader says */

static void init_once(void)
{
	char err[256];
	debug = getenv("FUZZ_BOOT_DEBUG") != NULL;
	if (gmem_init(&mem, FUZZ_RAM, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_boot: %s\n", err);
		abort();
	}
	big_initrd = calloc(1, BIG_INITRD);
	small_initrd = calloc(1, 4096);
	long_cmdline = malloc(301);
	max_cmdline = malloc(BOOT_CMDLINE_MAX + 1);
	if (!big_initrd || !small_initrd || !long_cmdline || !max_cmdline)
		abort();
	memset(long_cmdline, 'a', 300);
	long_cmdline[300] = 0;
	memset(max_cmdline, 'b', BOOT_CMDLINE_MAX);
	max_cmdline[BOOT_CMDLINE_MAX] = 0;
}

/* A failed load must say why: a non-empty, terminated message. */
static void check(int rc, const char *err, size_t err_len, const struct cpu_state *st)
{
	if (rc == -1) {
		if (!err[0] || !memchr(err, 0, err_len))
			abort();
		return;
	}
	if (rc != 0)
		abort();
	/* A successful load starts the processor inside RAM. */
	if (!gmem_is_ram(&mem, st->rip, 1))
		abort();
}

typedef int (*loader_fn)(struct guest_mem *, const struct boot_params_in *, struct cpu_state *,
			 char *, size_t);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cpu_state st;
	static const loader_fn loaders[] = {boot_load, boot_load_bzimage, boot_load_pvh,
					    boot_load_multiboot};
	char err[256];

	if (!big_initrd)
		init_once();
	if (size < 1)
		return 0;
	uint8_t ctl = data[0];
	data++;
	size--;

	/* Bits 4-6 of the control byte: CPU count; bit 7: the Linux entry (direct or decompressor). */
	struct boot_params_in in = {.ncpus = (ctl >> 4) & 7, .linux_direct = ctl >> 7};
	size_t kernel_len = size;
	switch (ctl & 3) {
	case 1:
		kernel_len = size - size / 4;
		in.initrd = data + kernel_len;
		in.initrd_len = size / 4;
		break;
	case 2:
		in.initrd = small_initrd;
		in.initrd_len = 4096;
		break;
	case 3:
		in.initrd = big_initrd;
		in.initrd_len = BIG_INITRD;
		break;
	}
	static const char *const cmdlines[] = {NULL, "console=ttyS0 quiet", NULL, NULL};
	in.cmdline = cmdlines[(ctl >> 2) & 3];
	if (((ctl >> 2) & 3) == 2)
		in.cmdline = long_cmdline;
	else if (((ctl >> 2) & 3) == 3)
		in.cmdline = max_cmdline;

	/* The kernel in a buffer of its own exact size, so ASan sees any read past its end. */
	uint8_t *kernel = malloc(kernel_len ? kernel_len : 1);
	if (!kernel)
		return 0;
	memcpy(kernel, data, kernel_len);
	in.kernel = kernel;
	in.kernel_len = kernel_len;

	enum boot_format fmt = boot_detect(kernel, kernel_len);
	if (!boot_format_name(fmt))
		abort();
	for (size_t i = 0; i < sizeof(loaders) / sizeof(loaders[0]); i++) {
		cpu_state_reset(&st, true);
		err[0] = 0;
		int rc = loaders[i](&mem, &in, &st, err, sizeof(err));
		if (debug)
			fprintf(stderr, "loader %zu (detected %s): %d %s\n", i,
				boot_format_name(fmt), rc, rc ? err : "");
		check(rc, err, sizeof(err), &st);
		/* boot_load succeeds only on what boot_detect recognises. */
		if (i == 0 && rc == 0 && fmt == BOOT_FMT_UNKNOWN)
			abort();
	}
	err[0] = 0;
	if (mptable_write(&mem, in.ncpus, err, sizeof(err)) < 0 && !err[0])
		abort();
	free(kernel);
	return 0;
}

#else /* FUZZ_SEED_MAIN: the seed generator */

static void w16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}

static void w32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void w64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

/* A bzImage: one setup sector, a protected-mode part of 4 KiB, sized for 16 MiB of RAM. */
static size_t gen_bzimage(uint8_t *p)
{
	size_t len = 1024 + 4096;
	p[0x1f1] = 1;
	w32(p + 0x1f4, 4096 / 16); /* syssize */
	w16(p + 0x1fe, 0xaa55);
	p[0x200] = 0xeb;
	p[0x201] = 0x6a;
	memcpy(p + 0x202, "HdrS", 4);
	w16(p + 0x206, 0x020f);
	p[0x211] = 0x01;
	w32(p + 0x22c, 0x7fffffff);
	w32(p + 0x230, 0x200000);
	p[0x234] = 1;
	w16(p + 0x236, 0x3);
	w32(p + 0x238, 2047);
	w64(p + 0x258, 0x200000);
	w32(p + 0x260, 0x100000);
	for (size_t i = 1024; i < len; i++)
		p[i] = (uint8_t)i;
	return len;
}

static void elf_header(uint8_t *p, int is64, uint64_t entry, unsigned phnum)
{
	memcpy(p, "\177ELF", 4);
	p[4] = is64 ? 2 : 1;
	p[5] = 1;
	p[6] = 1;
	w16(p + 16, 2);
	w16(p + 18, is64 ? 62 : 3);
	w32(p + 20, 1);
	if (is64) {
		w64(p + 24, entry);
		w64(p + 32, 64);
		w16(p + 52, 64);
		w16(p + 54, 56);
		w16(p + 56, (uint16_t)phnum);
	} else {
		w32(p + 24, (uint32_t)entry);
		w32(p + 28, 52);
		w16(p + 40, 52);
		w16(p + 42, 32);
		w16(p + 44, (uint16_t)phnum);
	}
}

static void phdr64(uint8_t *q, uint32_t type, uint64_t off, uint64_t paddr, uint64_t filesz,
		   uint64_t memsz)
{
	w32(q, type);
	w64(q + 8, off);
	w64(q + 16, paddr);
	w64(q + 24, paddr);
	w64(q + 32, filesz);
	w64(q + 40, memsz);
	w64(q + 48, 4);
}

/* PVH: an ELF64 with a PT_LOAD at 2 MiB and a PT_NOTE holding the Xen entry note. */
static size_t gen_pvh(uint8_t *p)
{
	elf_header(p, 1, 0, 2);
	phdr64(p + 64, 1, 0x400, 0x200000, 0x400, 0x800);
	phdr64(p + 64 + 56, 4, 0x200, 0, 20, 20);
	w32(p + 0x200, 4);
	w32(p + 0x204, 4);
	w32(p + 0x208, 18);
	memcpy(p + 0x20c, "Xen", 4);
	w32(p + 0x210, 0x200000);
	return 0x800;
}

static void mb_header(uint8_t *p, uint32_t flags)
{
	w32(p, 0x1badb002);
	w32(p + 4, flags);
	w32(p + 8, (uint32_t) - (0x1badb002u + flags));
}

/* Multiboot ELF32: a PT_LOAD at 1 MiB. */
static size_t gen_mb_elf(uint8_t *p)
{
	elf_header(p, 0, 0x100000, 1);
	uint8_t *q = p + 52;
	w32(q, 1);
	w32(q + 4, 0x200);
	w32(q + 8, 0x100000);
	w32(q + 12, 0x100000);
	w32(q + 16, 0x200);
	w32(q + 20, 0x400);
	mb_header(p + 0x100, 0x3);
	return 0x400;
}

/* Multiboot with address fields: a raw image loaded at 2 MiB. */
static size_t gen_mb_raw(uint8_t *p)
{
	mb_header(p, 0x10003);
	w32(p + 12, 0x200000);
	w32(p + 16, 0x200000);
	w32(p + 20, 0);
	w32(p + 24, 0x201000);
	w32(p + 28, 0x200040);
	return 0x200;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		size_t (*gen)(uint8_t *);
	} seeds[] = {
	    {"bzimage", gen_bzimage},
	    {"pvh", gen_pvh},
	    {"multiboot_elf", gen_mb_elf},
	    {"multiboot_raw", gen_mb_raw},
	};
	/* Each image with: nothing extra; an initrd from the input's tail and a short command
	 * line on 2 processors. */
	static const uint8_t ctls[] = {0x10, 0x25};
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		for (size_t c = 0; c < sizeof(ctls); c++) {
			static uint8_t buf[1 + 0x4000];
			memset(buf, 0, sizeof(buf));
			buf[0] = ctls[c];
			size_t len = 1 + seeds[i].gen(buf + 1);
			if (ctls[c] & 1)
				len += len / 3; /* room for the initrd: a quarter of the rest */
			char path[4096];
			snprintf(path, sizeof(path), "%s/%s_%zu", argv[1], seeds[i].name, c);
			FILE *f = fopen(path, "wb");
			if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
				perror(path);
				return 1;
			}
		}
	}
	return 0;
}

#endif
