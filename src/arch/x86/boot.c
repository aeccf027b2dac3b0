/* Kernel format detection, the loader dispatch and the helpers the loaders share. */
#include <stdio.h>
#include <string.h>

#include "arch/x86/boot.h"
#include "util/log.h"

#define MIB (1ull << 20)

/* ---- detection -------------------------------------------------------------------------- */

static bool is_bzimage(const uint8_t *img, size_t len)
{
	return len >= 0x206 && boot_rd16(img + 0x1fe) == 0xaa55 && !memcmp(img + 0x202, "HdrS", 4);
}

enum boot_format boot_detect(const uint8_t *img, size_t len)
{
	uint32_t entry;
	if (!img)
		return BOOT_FMT_UNKNOWN;
	if (is_bzimage(img, len))
		return BOOT_FMT_BZIMAGE;
	if (pvh_find_entry(img, len, &entry))
		return BOOT_FMT_PVH;
	if (multiboot_find_header(img, len, true) >= 0)
		return BOOT_FMT_MULTIBOOT;
	return BOOT_FMT_UNKNOWN;
}

const char *boot_format_name(enum boot_format f)
{
	switch (f) {
	case BOOT_FMT_BZIMAGE:
		return "Linux bzImage";
	case BOOT_FMT_PVH:
		return "PVH ELF";
	case BOOT_FMT_MULTIBOOT:
		return "multiboot";
	case BOOT_FMT_UNKNOWN:
		break;
	}
	return "unknown";
}

int boot_load(struct guest_mem *mem, const struct boot_params_in *in, struct cpu_state *bsp,
	      char *err, size_t err_len)
{
	if (!in->kernel || (!in->initrd && in->initrd_len))
		return set_err(err, err_len, "no kernel image or initrd data");
	switch (boot_detect(in->kernel, in->kernel_len)) {
	case BOOT_FMT_BZIMAGE:
		return boot_load_bzimage(mem, in, bsp, err, err_len);
	case BOOT_FMT_PVH:
		return boot_load_pvh(mem, in, bsp, err, err_len);
	case BOOT_FMT_MULTIBOOT:
		return boot_load_multiboot(mem, in, bsp, err, err_len);
	case BOOT_FMT_UNKNOWN:
		/* A multiboot magic with a bad checksum deserves a more precise message. */
		if (multiboot_find_header(in->kernel, in->kernel_len, false) >= 0)
			return boot_load_multiboot(mem, in, bsp, err, err_len);
		break;
	}
	return set_err(err, err_len,
		       "not a kernel ferry can boot (no Linux boot header, PVH note or multiboot "
		       "header)");
}

/* ---- placement -------------------------------------------------------------------------- */

/* Areas below 1 MiB that the loaders write after loading the kernel, or that the guest's e820
 * map does not call RAM. */
static const struct boot_range fixed_areas[] = {
    /* real-mode IVT and BDA, boot GDT */
    {0, 0x1000},
    /* boot information page, stack, page tables */
    {BOOT_INFO_ADDR, BOOT_PT_ADDR + 6 * PAGE_SIZE},
    {BOOT_CMDLINE_ADDR, BOOT_CMDLINE_ADDR + BOOT_CMDLINE_MAX},
    /* EBDA, VGA and option ROM hole, BIOS area with the MP table */
    {0x9fc00, BOOT_KERNEL_ADDR},
};

static bool overlaps(uint64_t start, uint64_t end, const struct boot_range *r)
{
	return start < r->end && r->start < end;
}

bool boot_in_ranges(uint64_t addr, const struct boot_range *r, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (addr >= r[i].start && addr < r[i].end)
			return true;
	return false;
}

int boot_check_load_range(const struct guest_mem *mem, uint64_t gpa, uint64_t size,
			  const char *what, char *err, size_t err_len)
{
	uint64_t end;
	if (__builtin_add_overflow(gpa, size, &end) || !gmem_is_ram(mem, gpa, size))
		return set_err(
		    err, err_len,
		    "%s at 0x%llx (0x%llx bytes) is outside the guest's RAM (0x%llx bytes "
		    "below 4 GiB)",
		    what, (unsigned long long)gpa, (unsigned long long)size,
		    (unsigned long long)gmem_low_end(mem));
	for (size_t i = 0; i < sizeof(fixed_areas) / sizeof(fixed_areas[0]); i++)
		if (overlaps(gpa, end, &fixed_areas[i]))
			return set_err(
			    err, err_len,
			    "%s at 0x%llx-0x%llx overlaps the loader's area at 0x%llx-0x%llx", what,
			    (unsigned long long)gpa, (unsigned long long)end,
			    (unsigned long long)fixed_areas[i].start,
			    (unsigned long long)fixed_areas[i].end);
	return 0;
}

int boot_write_cmdline(struct guest_mem *mem, const char *cmdline, uint64_t max_len, char *err,
		       size_t err_len)
{
	const char *s = cmdline ? cmdline : "";
	size_t len = strlen(s);
	if (max_len > BOOT_CMDLINE_MAX - 1)
		max_len = BOOT_CMDLINE_MAX - 1;
	if (len > max_len)
		return set_err(err, err_len,
			       "command line is %zu bytes; the kernel takes at most %llu", len,
			       (unsigned long long)max_len);
	if (gmem_write(mem, BOOT_CMDLINE_ADDR, s, len + 1) < 0)
		return set_err(err, err_len, "no RAM for the command line at 0x%x",
			       BOOT_CMDLINE_ADDR);
	return 0;
}

int boot_place_initrd(struct guest_mem *mem, const struct boot_params_in *in, uint64_t limit,
		      const struct boot_range *busy, unsigned nbusy, uint64_t *addr, char *err,
		      size_t err_len)
{
	*addr = 0;
	if (!in->initrd || !in->initrd_len)
		return 0;
	uint64_t size = in->initrd_len;
	uint64_t top = limit < gmem_low_end(mem) ? limit : gmem_low_end(mem);
	/* Each collision lowers top to the start of a busy range, which the next candidate then
	 * ends below, so this runs at most nbusy + 1 times. */
	for (;;) {
		if (top < BOOT_KERNEL_ADDR || size > top - BOOT_KERNEL_ADDR)
			break;
		uint64_t start = (top - size) & ~(PAGE_SIZE - 1);
		if (start < BOOT_KERNEL_ADDR)
			break;
		unsigned i;
		for (i = 0; i < nbusy && !overlaps(start, start + size, &busy[i]); i++)
			;
		if (i == nbusy) {
			if (gmem_write(mem, start, in->initrd, size) < 0)
				break;
			*addr = start;
			return 0;
		}
		top = busy[i].start;
	}
	return set_err(
	    err, err_len,
	    "initrd (%llu bytes) does not fit in guest RAM below 0x%llx beside the kernel",
	    (unsigned long long)size,
	    (unsigned long long)(limit < gmem_low_end(mem) ? limit : gmem_low_end(mem)));
}

/* ---- ELF -------------------------------------------------------------------------------- */

#define EI_CLASS    4
#define EI_DATA     5
#define ELFCLASS32  1
#define ELFCLASS64  2
#define ELFDATA2LSB 1
#define ET_EXEC     2
#define EM_386      3
#define EM_X86_64   62
#define EHDR32_SIZE 52
#define EHDR64_SIZE 64
#define PHDR32_SIZE 32
#define PHDR64_SIZE 56

bool boot_is_elf(const uint8_t *img, size_t len)
{
	return len >= 4 && !memcmp(img, "\177ELF", 4);
}

int boot_elf_open(struct boot_elf *e, const uint8_t *img, size_t len, char *err, size_t err_len)
{
	memset(e, 0, sizeof(*e));
	if (!boot_is_elf(img, len) || len < EHDR32_SIZE)
		return set_err(err, err_len, "not an ELF file");
	if (img[EI_DATA] != ELFDATA2LSB)
		return set_err(err, err_len, "ELF file is not little-endian");
	if (img[EI_CLASS] == ELFCLASS64) {
		if (len < EHDR64_SIZE)
			return set_err(err, err_len, "ELF header is truncated");
		e->is64 = 1;
		e->entry = boot_rd64(img + 24);
		e->phoff = boot_rd64(img + 32);
		e->phentsize = boot_rd16(img + 54);
		e->phnum = boot_rd16(img + 56);
	} else if (img[EI_CLASS] == ELFCLASS32) {
		e->entry = boot_rd32(img + 24);
		e->phoff = boot_rd32(img + 28);
		e->phentsize = boot_rd16(img + 42);
		e->phnum = boot_rd16(img + 44);
	} else {
		return set_err(err, err_len, "ELF file has an unknown class %u", img[EI_CLASS]);
	}
	uint16_t type = boot_rd16(img + 16), machine = boot_rd16(img + 18);
	if (type != ET_EXEC)
		return set_err(err, err_len, "ELF file is not an executable (type %u)", type);
	if (machine != EM_386 && machine != EM_X86_64)
		return set_err(err, err_len, "ELF file is not for x86 (machine %u)", machine);
	if (e->phentsize < (e->is64 ? PHDR64_SIZE : PHDR32_SIZE))
		return set_err(err, err_len, "ELF program header size %u is too small",
			       e->phentsize);
	if (e->phnum == 0 || e->phnum > BOOT_ELF_MAX_PHDRS)
		return set_err(err, err_len, "ELF file has %u program headers (1 to %u supported)",
			       e->phnum, BOOT_ELF_MAX_PHDRS);
	/* phnum * phentsize is at most 128 * 65535: only the addition can overflow. */
	uint64_t table = (uint64_t)e->phnum * e->phentsize, end;
	if (__builtin_add_overflow(e->phoff, table, &end) || end > len)
		return set_err(err, err_len, "ELF program headers lie outside the file");
	e->img = img;
	e->len = len;
	return 0;
}

void boot_elf_phdr(const struct boot_elf *e, unsigned i, struct boot_elf_phdr *ph)
{
	const uint8_t *p = e->img + e->phoff + (uint64_t)i * e->phentsize;
	ph->type = boot_rd32(p);
	if (e->is64) {
		ph->offset = boot_rd64(p + 8);
		ph->paddr = boot_rd64(p + 24);
		ph->filesz = boot_rd64(p + 32);
		ph->memsz = boot_rd64(p + 40);
		ph->align = boot_rd64(p + 48);
	} else {
		ph->offset = boot_rd32(p + 4);
		ph->paddr = boot_rd32(p + 12);
		ph->filesz = boot_rd32(p + 16);
		ph->memsz = boot_rd32(p + 20);
		ph->align = boot_rd32(p + 28);
	}
}

static int load_segment(struct guest_mem *mem, const struct boot_elf *e, unsigned i,
			const struct boot_elf_phdr *ph, char *err, size_t err_len)
{
	uint64_t fend;
	if (ph->filesz > ph->memsz)
		return set_err(
		    err, err_len,
		    "ELF segment %u has a file size (0x%llx) larger than its memory size "
		    "(0x%llx)",
		    i, (unsigned long long)ph->filesz, (unsigned long long)ph->memsz);
	if (__builtin_add_overflow(ph->offset, ph->filesz, &fend) || fend > e->len)
		return set_err(err, err_len, "ELF segment %u lies outside the file", i);
	char what[32];
	snprintf(what, sizeof(what), "ELF segment %u", i);
	if (boot_check_load_range(mem, ph->paddr, ph->memsz, what, err, err_len) < 0)
		return -1;
	uint8_t *dst = gmem_ptr(mem, ph->paddr, ph->memsz);
	memcpy(dst, e->img + ph->offset, ph->filesz);
	memset(dst + ph->filesz, 0, ph->memsz - ph->filesz); /* bss */
	return 0;
}

int boot_elf_load(struct guest_mem *mem, const struct boot_elf *e, struct boot_range *loaded,
		  unsigned *nloaded, char *err, size_t err_len)
{
	*nloaded = 0;
	for (unsigned i = 0; i < e->phnum; i++) {
		struct boot_elf_phdr ph;
		boot_elf_phdr(e, i, &ph);
		if (ph.type != BOOT_PT_LOAD || ph.memsz == 0)
			continue;
		if (*nloaded == BOOT_ELF_MAX_LOADS)
			return set_err(err, err_len, "ELF file has more than %u loadable segments",
				       BOOT_ELF_MAX_LOADS);
		if (load_segment(mem, e, i, &ph, err, err_len) < 0)
			return -1;
		loaded[(*nloaded)++] = (struct boot_range){ph.paddr, ph.paddr + ph.memsz};
	}
	if (*nloaded == 0)
		return set_err(err, err_len, "ELF file has no loadable segment");
	return 0;
}
