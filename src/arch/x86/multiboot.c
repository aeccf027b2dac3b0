/* Multiboot v1 (the Multiboot Specification 0.6.96), as QEMU's -kernel accepts it: either the
 * header's address fields say where the image goes, or the file is a 32-bit ELF loaded by its
 * program headers. The kernel is entered in flat 32-bit protected mode with EAX = 0x2BADB002
 * and EBX pointing at struct multiboot_info.
 *
 * The kernel's command line is the --append string alone; unlike QEMU, ferry does not put the
 * kernel's file name in front of it. */
#include <string.h>

#include "arch/x86/boot.h"
#include "util/log.h"

#define MB_MAGIC         0x1badb002u
#define MB_BOOT_MAGIC    0x2badb002u
#define MB_SEARCH        8192 /* the header must lie in the first 8 KiB */
#define MB_HDR_SIZE      12
#define MB_HDR_ADDR_SIZE 32

/* Header flags. Bits 0-15 are requirements a loader must refuse if it cannot meet them. */
#define MB_PAGE_ALIGN    (1u << 0) /* modules page-aligned: always true here */
#define MB_MEMORY_INFO   (1u << 1)
#define MB_VIDEO_MODE    (1u << 2) /* a video mode preference; ignored, as QEMU does */
#define MB_ADDRESS       (1u << 16)
#define MB_REQUIRED_MASK 0xffffu
#define MB_SUPPORTED     (MB_PAGE_ALIGN | MB_MEMORY_INFO | MB_VIDEO_MODE)

/* multiboot_info flags. */
#define MBI_MEM         (1u << 0)
#define MBI_CMDLINE     (1u << 2)
#define MBI_MODS        (1u << 3)
#define MBI_MMAP        (1u << 6)
#define MBI_LOADER_NAME (1u << 9)

struct multiboot_info {
	uint32_t flags;
	uint32_t mem_lower, mem_upper; /* KiB below 640 KiB and above 1 MiB */
	uint32_t boot_device;
	uint32_t cmdline;
	uint32_t mods_count, mods_addr;
	uint32_t syms[4];
	uint32_t mmap_length, mmap_addr;
	uint32_t drives_length, drives_addr;
	uint32_t config_table;
	uint32_t boot_loader_name;
	uint32_t apm_table;
	uint32_t vbe_control_info, vbe_mode_info;
	uint16_t vbe_mode, vbe_interface_seg, vbe_interface_off, vbe_interface_len;
};

struct multiboot_mod {
	uint32_t mod_start, mod_end; /* end is exclusive */
	uint32_t string;
	uint32_t reserved;
};

struct multiboot_mmap {
	uint32_t size; /* of the rest of the entry */
	uint64_t addr, len;
	uint32_t type;
} __attribute__((packed));

/* Where the pieces go inside the boot information page. */
#define MODS_OFF        0x80
#define MMAP_OFF        0x100
#define LOADER_NAME_OFF 0x300
#define MOD_STRING_OFF  0x320
_Static_assert(sizeof(struct multiboot_info) == 88, "multiboot_info layout");
_Static_assert(sizeof(struct multiboot_info) <= MODS_OFF, "info overlaps the module list");
_Static_assert(MMAP_OFF + E820_MAX * sizeof(struct multiboot_mmap) <= LOADER_NAME_OFF,
	       "memory map overlaps the strings");

#define LOADER_NAME "ferry"
#define MOD_STRING  "initrd"

/* What the loader knows once the kernel is in RAM. */
struct mb_kernel {
	uint32_t entry;
	struct boot_range loaded[BOOT_ELF_MAX_LOADS];
	unsigned nloaded;
};

long multiboot_find_header(const uint8_t *img, size_t len, bool need_checksum)
{
	size_t limit = len < MB_SEARCH ? len : MB_SEARCH;
	for (size_t off = 0; img && off + MB_HDR_SIZE <= limit; off += 4) {
		if (boot_rd32(img + off) != MB_MAGIC)
			continue;
		uint32_t sum = MB_MAGIC + boot_rd32(img + off + 4) + boot_rd32(img + off + 8);
		if (!need_checksum || sum == 0)
			return (long)off;
	}
	return -1;
}

/* The header's address fields ("a.out kludge") place the image without looking at its format. */
static int load_by_address(struct guest_mem *mem, const uint8_t *img, size_t len, size_t hdr,
			   struct mb_kernel *k, char *err, size_t err_len)
{
	if (len - hdr < MB_HDR_ADDR_SIZE)
		return set_err(err, err_len, "multiboot header is truncated");
	const uint8_t *h = img + hdr;
	uint64_t header_addr = boot_rd32(h + 12), load_addr = boot_rd32(h + 16);
	uint64_t load_end = boot_rd32(h + 20), bss_end = boot_rd32(h + 24);
	/* All fields are 32-bit, so sums in 64 bits cannot overflow. */
	if (load_addr > header_addr || header_addr - load_addr > hdr)
		return set_err(err, err_len,
			       "multiboot load_addr 0x%llx puts the header outside the "
			       "file",
			       (unsigned long long)load_addr);
	size_t load_off = hdr - (header_addr - load_addr);
	uint64_t load_size = len - load_off;
	if (load_end) {
		if (load_end < load_addr || load_end - load_addr > len - load_off)
			return set_err(err, err_len,
				       "multiboot load_end_addr 0x%llx lies outside the file",
				       (unsigned long long)load_end);
		load_size = load_end - load_addr;
	}
	uint64_t mem_end = load_addr + load_size;
	if (bss_end) {
		if (bss_end < mem_end)
			return set_err(
			    err, err_len,
			    "multiboot bss_end_addr 0x%llx is below the loaded image's end",
			    (unsigned long long)bss_end);
		mem_end = bss_end;
	}
	if (mem_end == load_addr)
		return set_err(err, err_len, "multiboot image is empty");
	if (boot_check_load_range(mem, load_addr, mem_end - load_addr, "multiboot kernel", err,
				  err_len) < 0)
		return -1;
	uint8_t *dst = gmem_ptr(mem, load_addr, mem_end - load_addr);
	memcpy(dst, img + load_off, load_size);
	memset(dst + load_size, 0, mem_end - load_addr - load_size); /* bss */
	k->entry = boot_rd32(h + 28);
	k->loaded[0] = (struct boot_range){load_addr, mem_end};
	k->nloaded = 1;
	return 0;
}

static int load_elf32(struct guest_mem *mem, const uint8_t *img, size_t len, struct mb_kernel *k,
		      char *err, size_t err_len)
{
	struct boot_elf e;
	if (!boot_is_elf(img, len))
		return set_err(err, err_len,
			       "multiboot header has no address fields and the file is "
			       "not ELF");
	if (boot_elf_open(&e, img, len, err, err_len) < 0)
		return -1;
	if (e.is64)
		return set_err(err, err_len,
			       "multiboot kernel is a 64-bit ELF; multiboot needs a "
			       "32-bit ELF or the header's address fields");
	if (boot_elf_load(mem, &e, k->loaded, &k->nloaded, err, err_len) < 0)
		return -1;
	k->entry = (uint32_t)e.entry;
	return 0;
}

static int write_info(struct guest_mem *mem, uint64_t initrd_addr, uint64_t initrd_len)
{
	uint8_t page[PAGE_SIZE] = {0};
	uint64_t low_end = gmem_low_end(mem);
	struct multiboot_info mbi = {
	    .flags = MBI_MEM | MBI_CMDLINE | MBI_MODS | MBI_MMAP | MBI_LOADER_NAME,
	    .mem_lower = 0x9fc00 / 1024, /* the e820 map keeps the last KiB for the EBDA */
	    .mem_upper = (uint32_t)((low_end - BOOT_KERNEL_ADDR) / 1024),
	    .cmdline = BOOT_CMDLINE_ADDR,
	    .mods_addr = BOOT_INFO_ADDR + MODS_OFF,
	    .mmap_addr = BOOT_INFO_ADDR + MMAP_OFF,
	    .boot_loader_name = BOOT_INFO_ADDR + LOADER_NAME_OFF,
	};
	if (initrd_addr) {
		/* Below 4 GiB, so the 32-bit fields hold it. */
		struct multiboot_mod mod = {(uint32_t)initrd_addr,
					    (uint32_t)(initrd_addr + initrd_len),
					    BOOT_INFO_ADDR + MOD_STRING_OFF, 0};
		mbi.mods_count = 1;
		memcpy(page + MODS_OFF, &mod, sizeof(mod));
	}
	struct e820_entry map[E820_MAX];
	unsigned n = e820_build(mem, map, E820_MAX);
	for (unsigned i = 0; i < n; i++) {
		struct multiboot_mmap m = {sizeof(m) - 4, map[i].addr, map[i].size, map[i].type};
		memcpy(page + MMAP_OFF + i * sizeof(m), &m, sizeof(m));
	}
	mbi.mmap_length = n * sizeof(struct multiboot_mmap);
	memcpy(page + LOADER_NAME_OFF, LOADER_NAME, sizeof(LOADER_NAME));
	memcpy(page + MOD_STRING_OFF, MOD_STRING, sizeof(MOD_STRING));
	memcpy(page, &mbi, sizeof(mbi));
	return gmem_write(mem, BOOT_INFO_ADDR, page, sizeof(page));
}

int boot_load_multiboot(struct guest_mem *mem, const struct boot_params_in *in,
			struct cpu_state *bsp, char *err, size_t err_len)
{
	const uint8_t *img = in->kernel;
	size_t len = in->kernel_len;
	long hdr = multiboot_find_header(img, len, true);
	if (hdr < 0)
		return set_err(err, err_len, "%s",
			       multiboot_find_header(img, len, false) >= 0
				   ? "multiboot header has a bad checksum"
				   : "no multiboot header in the first 8 KiB");
	uint32_t flags = boot_rd32(img + hdr + 4);
	if (flags & MB_REQUIRED_MASK & ~MB_SUPPORTED)
		return set_err(err, err_len,
			       "multiboot header asks for features ferry does not provide (flags "
			       "0x%x)",
			       flags & MB_REQUIRED_MASK & ~MB_SUPPORTED);

	struct mb_kernel k = {0};
	int rc = flags & MB_ADDRESS ? load_by_address(mem, img, len, (size_t)hdr, &k, err, err_len)
				    : load_elf32(mem, img, len, &k, err, err_len);
	if (rc < 0)
		return -1;
	if (!boot_in_ranges(k.entry, k.loaded, k.nloaded))
		return set_err(err, err_len,
			       "multiboot entry point 0x%x is not in the loaded image", k.entry);

	uint64_t initrd_addr;
	if (boot_write_cmdline(mem, in->cmdline, BOOT_CMDLINE_MAX - 1, err, err_len) < 0 ||
	    boot_place_initrd(mem, in, MEM_4G, k.loaded, k.nloaded, &initrd_addr, err, err_len) < 0)
		return -1;
	if (write_info(mem, initrd_addr, initrd_addr ? in->initrd_len : 0) < 0 ||
	    x86_write_gdt(mem, BOOT_GDT_ADDR) < 0)
		return set_err(err, err_len, "guest RAM too small for the boot structures");
	x86_setup_flat32(bsp);
	bsp->rip = k.entry;
	bsp->gpr[GPR_RAX] = MB_BOOT_MAGIC;
	bsp->gpr[GPR_RBX] = BOOT_INFO_ADDR;
	return 0;
}
