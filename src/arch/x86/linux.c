/* Linux x86 boot protocol (Documentation/arch/x86/boot.rst), 64-bit entry: the protected-mode
 * kernel goes to 1 MiB and is entered at +0x200 in long mode with RSI pointing at boot_params.
 * The real-mode setup code is never run, so only its header is used. */
#include <string.h>

#include "arch/x86/boot.h"
#include "util/log.h"

/* Setup header fields: offsets in the file and in boot_params alike. */
#define HDR_START            0x1f1 /* setup_sects, the first header field */
#define HDR_SYSSIZE          0x1f4 /* protected-mode code size in 16-byte units */
#define HDR_JUMP             0x200 /* the byte after the 0xeb jump gives the header's length */
#define HDR_VERSION          0x206
#define HDR_TYPE_OF_LOADER   0x210
#define HDR_LOADFLAGS        0x211
#define HDR_RAMDISK_IMAGE    0x218
#define HDR_RAMDISK_SIZE     0x21c
#define HDR_HEAP_END_PTR     0x224
#define HDR_CMD_LINE_PTR     0x228
#define HDR_INITRD_ADDR_MAX  0x22c
#define HDR_KERNEL_ALIGNMENT 0x230
#define HDR_RELOCATABLE      0x234
#define HDR_XLOADFLAGS       0x236
#define HDR_CMDLINE_SIZE     0x238
#define HDR_SETUP_DATA       0x250
#define HDR_PREF_ADDRESS     0x258
#define HDR_INIT_SIZE        0x260
#define HDR_MIN_END          0x264 /* protocol 2.12 headers reach at least past init_size */

/* boot_params fields outside the setup header. */
#define BP_SIZE               4096
#define BP_EXT_RAMDISK_IMAGE  0x0c0
#define BP_EXT_RAMDISK_SIZE   0x0c4
#define BP_EXT_CMD_LINE_PTR   0x0c8
#define BP_E820_ENTRIES       0x1e8
#define BP_E820_TABLE         0x2d0

#define MIN_VERSION           0x020c
#define LOADED_HIGH           0x01
#define CAN_USE_HEAP          0x80
#define XLF_KERNEL_64         0x01
#define TYPE_UNDEFINED_LOADER 0xff
/* End of the setup heap, as an offset from the setup code minus 0x200; the setup code never
 * runs with the 64-bit entry, but the protocol asks for a consistent value with CAN_USE_HEAP. */
#define HEAP_END_PTR 0xde00

struct bzimage {
	const uint8_t *img;
	size_t hdr_end; /* end of the setup header in the file */
	size_t pm_off;  /* protected-mode kernel: offset and length in the file */
	size_t pm_len;
	uint64_t kernel_end; /* end of what the kernel may use from BOOT_KERNEL_ADDR */
	uint64_t initrd_limit;
	uint32_t cmdline_size;
};

static void wr16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2); /* x86 hosts only: guest and host are both little-endian */
}

static void wr32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void wr64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static int parse_header(const struct boot_params_in *in, struct bzimage *bz, char *err,
			size_t err_len)
{
	const uint8_t *img = in->kernel;
	size_t len = in->kernel_len;
	bz->img = img;
	if (len < 0x206 || boot_rd16(img + 0x1fe) != 0xaa55 || memcmp(img + 0x202, "HdrS", 4) != 0)
		return set_err(err, err_len, "no Linux boot header");
	if (len < HDR_MIN_END)
		return set_err(err, err_len, "Linux boot header is truncated");
	uint16_t version = boot_rd16(img + HDR_VERSION);
	if (version < MIN_VERSION)
		return set_err(err, err_len,
			       "Linux boot protocol %u.%02u is too old; ferry needs 2.12 or later",
			       version >> 8, version & 0xff);
	bz->hdr_end = 0x202 + (size_t)img[HDR_JUMP + 1];
	if (bz->hdr_end < HDR_MIN_END || bz->hdr_end > len)
		return set_err(err, err_len, "Linux setup header length 0x%zx is invalid",
			       bz->hdr_end - HDR_START);
	if (!(boot_rd16(img + HDR_XLOADFLAGS) & XLF_KERNEL_64))
		return set_err(err, err_len,
			       "kernel has no 64-bit entry point (not an x86-64 kernel)");
	if (!(img[HDR_LOADFLAGS] & LOADED_HIGH))
		return set_err(err, err_len, "kernel is a zImage, not a bzImage");
	unsigned sects = img[HDR_START] ? img[HDR_START] : 4; /* 0 means 4, for old kernels */
	bz->pm_off = (size_t)(sects + 1) * 512;
	if (bz->pm_off >= len)
		return set_err(err, err_len,
			       "setup code (%u sectors) reaches past the end of the %zu-byte file",
			       sects, len);
	/* syssize says how much protected-mode code the kernel has: a file with less was cut short
	 * (a partial download or copy) and must not boot half a kernel. */
	uint64_t sys_bytes = (uint64_t)boot_rd32(img + HDR_SYSSIZE) * 16;
	if (sys_bytes == 0)
		return set_err(err, err_len, "Linux header gives a kernel size (syssize) of 0");
	if (sys_bytes > len - bz->pm_off)
		return set_err(err, err_len,
			       "kernel file is truncated: its header says %llu bytes of kernel "
			       "after the setup code, the file has %zu",
			       (unsigned long long)sys_bytes, len - bz->pm_off);
	bz->pm_len = (size_t)sys_bytes;
	bz->cmdline_size = boot_rd32(img + HDR_CMDLINE_SIZE);
	/* initrd_addr_max is the last byte the initrd may occupy. */
	bz->initrd_limit = (uint64_t)boot_rd32(img + HDR_INITRD_ADDR_MAX) + 1;
	return 0;
}

/* Where the kernel decompresses itself: a relocatable kernel moves up to an aligned address
 * not below pref_address (LOAD_PHYSICAL_ADDR); a fixed one runs at pref_address. Everything
 * from the load address to the end of that init_size buffer is taken to be the kernel's. */
static int kernel_extent(const struct guest_mem *mem, struct bzimage *bz, char *err, size_t err_len)
{
	const uint8_t *img = bz->img;
	uint64_t load = BOOT_KERNEL_ADDR, pref = boot_rd64(img + HDR_PREF_ADDRESS);
	uint64_t run = pref;
	if (img[HDR_RELOCATABLE]) {
		uint32_t align = boot_rd32(img + HDR_KERNEL_ALIGNMENT);
		if (align == 0 || (align & (align - 1)))
			return set_err(err, err_len, "kernel_alignment 0x%x is not a power of two",
				       align);
		uint64_t aligned = (load + align - 1) & ~((uint64_t)align - 1);
		if (aligned > run)
			run = aligned;
	}
	if (run < load)
		return set_err(err, err_len, "kernel wants to run at 0x%llx, below 1 MiB",
			       (unsigned long long)run);
	uint64_t run_end, load_end = load + bz->pm_len;
	if (__builtin_add_overflow(run, boot_rd32(img + HDR_INIT_SIZE), &run_end))
		return set_err(err, err_len, "kernel's pref_address 0x%llx is invalid",
			       (unsigned long long)pref);
	bz->kernel_end = run_end > load_end ? run_end : load_end;
	if (!gmem_is_ram(mem, load, bz->kernel_end - load))
		return set_err(
		    err, err_len,
		    "kernel needs RAM up to 0x%llx (its init_size) but the guest has 0x%llx "
		    "bytes below 4 GiB",
		    (unsigned long long)bz->kernel_end, (unsigned long long)gmem_low_end(mem));
	return 0;
}

static void build_boot_params(const struct guest_mem *mem, const struct bzimage *bz,
			      uint64_t initrd_addr, uint64_t initrd_len, uint8_t *bp)
{
	memset(bp, 0, BP_SIZE);
	memcpy(bp + HDR_START, bz->img + HDR_START, bz->hdr_end - HDR_START);
	bp[HDR_TYPE_OF_LOADER] = TYPE_UNDEFINED_LOADER;
	bp[HDR_LOADFLAGS] |= CAN_USE_HEAP;
	wr16(bp + HDR_HEAP_END_PTR, HEAP_END_PTR);
	wr32(bp + HDR_CMD_LINE_PTR, BOOT_CMDLINE_ADDR);
	wr32(bp + BP_EXT_CMD_LINE_PTR, 0);
	wr32(bp + HDR_RAMDISK_IMAGE, (uint32_t)initrd_addr);
	wr32(bp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(initrd_addr >> 32));
	wr32(bp + HDR_RAMDISK_SIZE, (uint32_t)initrd_len);
	wr32(bp + BP_EXT_RAMDISK_SIZE, (uint32_t)(initrd_len >> 32));
	wr64(bp + HDR_SETUP_DATA, 0); /* the loader owns this list; we pass none */
	struct e820_entry map[E820_MAX];
	unsigned n = e820_build(mem, map, E820_MAX);
	bp[BP_E820_ENTRIES] = (uint8_t)n;
	memcpy(bp + BP_E820_TABLE, map, n * sizeof(map[0]));
}

int boot_load_bzimage(struct guest_mem *mem, const struct boot_params_in *in, struct cpu_state *bsp,
		      char *err, size_t err_len)
{
	struct bzimage bz = {0};
	if (parse_header(in, &bz, err, err_len) < 0 || kernel_extent(mem, &bz, err, err_len) < 0)
		return -1;
	if (boot_write_cmdline(mem, in->cmdline, bz.cmdline_size, err, err_len) < 0)
		return -1;
	struct boot_range kernel = {BOOT_KERNEL_ADDR, bz.kernel_end};
	uint64_t limit = bz.initrd_limit < MEM_4G ? bz.initrd_limit : MEM_4G, initrd_addr;
	if (boot_place_initrd(mem, in, limit, &kernel, 1, &initrd_addr, err, err_len) < 0)
		return -1;
	if (gmem_write(mem, BOOT_KERNEL_ADDR, in->kernel + bz.pm_off, bz.pm_len) < 0)
		return set_err(err, err_len, "kernel does not fit in guest RAM");
	uint8_t bp[BP_SIZE];
	build_boot_params(mem, &bz, initrd_addr, initrd_addr ? in->initrd_len : 0, bp);
	if (gmem_write(mem, BOOT_INFO_ADDR, bp, BP_SIZE) < 0 ||
	    x86_setup_long64(mem, bsp, BOOT_PT_ADDR, BOOT_GDT_ADDR) < 0)
		return set_err(err, err_len, "guest RAM too small for the boot structures");
	bsp->rip = BOOT_KERNEL_ADDR + 0x200;
	bsp->gpr[GPR_RSI] = BOOT_INFO_ADDR;
	bsp->gpr[GPR_RSP] = BOOT_STACK_TOP;
	return 0;
}
