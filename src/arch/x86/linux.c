/* Linux x86 boot protocol (Documentation/arch/x86/boot.rst), 64-bit entry: the protected-mode
 * kernel goes to 1 MiB and is entered at +0x200 in long mode with RSI pointing at boot_params.
 * The real-mode setup code is never run, so only its header is used.
 *
 * Direct mode (linux_direct): the payload the kernel's decompressor would unpack (an XZ-compressed
 * vmlinux ELF) is decompressed here, its segments are copied to their physical link addresses and
 * the ELF entry (startup_64) is entered in the same long-mode state with the same boot_params.
 * This skips running the decompressor, which is slow on an emulated CPU. The decompressor is
 * where the kernel picks its random physical and virtual base (KASLR), so a kernel loaded this
 * way runs at its link address; KASLR_FLAG is still passed (unless "nokaslr"), as the
 * decompressor does, so the kernel still randomizes its memory regions (direct map, vmalloc,
 * vmemmap) and module addresses. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arch/x86/boot.h"
#include "arch/x86/xz.h"
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
#define HDR_PAYLOAD_OFFSET   0x248 /* from the protected-mode code start */
#define HDR_PAYLOAD_LENGTH   0x24c
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
#define KASLR_FLAG            0x02 /* loadflags bit 1: set by the decompressor when KASLR is on */
#define CAN_USE_HEAP          0x80
#define XLF_KERNEL_64         0x01
#define TYPE_UNDEFINED_LOADER 0xff
/* End of the setup heap, as an offset from the setup code minus 0x200; the setup code never
 * runs with the 64-bit entry, but the protocol asks for a consistent value with CAN_USE_HEAP. */
#define HEAP_END_PTR 0xde00

/* ELF fields the shared ELF helpers do not read. */
#define ELF_CLASS        4
#define ELF_MACHINE      18
#define ELF_PHDR64_VADDR 16
#define ELFCLASS64       2
#define EM_X86_64        62
#define ELF64_EHDR_SIZE  64
/* Start of the kernel's virtual mapping of itself (__START_KERNEL_map): an entry address above
 * it is virtual. */
#define KERNEL_VIRT_BASE 0xffffffff80000000ull

/* load_direct's "enter through the decompressor instead" result. */
#define DIRECT_FALLBACK 1

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

/* Writes boot_params and starts the boot processor at rip in 64-bit mode, RSI = boot_params. */
static int enter_long64(struct guest_mem *mem, const uint8_t *bp, uint64_t rip,
			struct cpu_state *bsp, char *err, size_t err_len)
{
	if (gmem_write(mem, BOOT_INFO_ADDR, bp, BP_SIZE) < 0 ||
	    x86_setup_long64(mem, bsp, BOOT_PT_ADDR, BOOT_GDT_ADDR) < 0)
		return set_err(err, err_len, "guest RAM too small for the boot structures");
	bsp->rip = rip;
	bsp->gpr[GPR_RSI] = BOOT_INFO_ADDR;
	bsp->gpr[GPR_RSP] = BOOT_STACK_TOP;
	return 0;
}

/* ---- direct mode ------------------------------------------------------------------------ */

/* Names the compression of a payload that is not XZ, for the fallback message. */
static const char *payload_kind(const uint8_t *p, size_t len)
{
	static const struct {
		uint8_t magic[4];
		size_t len;
		const char *name;
	} kinds[] = {
	    {{0x1f, 0x8b}, 2, "gzip"},
	    {{'B', 'Z', 'h'}, 3, "bzip2"},
	    {{0x5d, 0x00, 0x00}, 3, "LZMA"},
	    {{0x89, 'L', 'Z', 'O'}, 4, "LZO"},
	    {{0x02, 0x21, 0x4c, 0x18}, 4, "LZ4"},
	    {{0x28, 0xb5, 0x2f, 0xfd}, 4, "zstd"},
	};
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (len >= kinds[i].len && !memcmp(p, kinds[i].magic, kinds[i].len))
			return kinds[i].name;
	return "of an unknown format";
}

/* Decompresses the setup header's payload into a malloc'd *elf, or returns DIRECT_FALLBACK
 * when it is not XZ. */
static int unpack_payload(const struct guest_mem *mem, const struct bzimage *bz, uint8_t **elf,
			  size_t *elf_len, char *err, size_t err_len)
{
	uint32_t off = boot_rd32(bz->img + HDR_PAYLOAD_OFFSET);
	uint32_t len = boot_rd32(bz->img + HDR_PAYLOAD_LENGTH);
	if (len == 0) {
		/* No payload named (a kernel that is not compressed, or a test image): only its
		 * own entry knows what to do. */
		log_info("kernel names no compressed payload: entering at its 64-bit entry");
		return DIRECT_FALLBACK;
	}
	if ((uint64_t)off + len > bz->pm_len)
		return set_err(
		    err, err_len,
		    "kernel payload (offset 0x%x, 0x%x bytes) lies outside the 0x%zx bytes "
		    "of protected-mode code",
		    off, len, bz->pm_len);
	const uint8_t *payload = bz->img + bz->pm_off + off;
	if (!xz_is_xz(payload, len)) {
		log_info("kernel payload is %s, not XZ: entering through the kernel's decompressor",
			 payload_kind(payload, len));
		return DIRECT_FALLBACK;
	}
	/* Linux appends the decompressed size; it only sizes the first buffer. */
	size_t hint = boot_rd32(payload + len - 4);
	size_t max = mem->size < BOOT_DIRECT_MAX ? (size_t)mem->size : (size_t)BOOT_DIRECT_MAX;
	struct timespec t0, t1;
	char msg[160];
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc = xz_decompress(payload, len, max, hint, elf, elf_len, msg, sizeof(msg));
	if (rc == XZ_TOO_BIG)
		return set_err(
		    err, err_len, "kernel is too big: it decompresses to more than %zu MiB (%s)",
		    max >> 20, max < BOOT_DIRECT_MAX ? "the guest's RAM" : "ferry's limit");
	if (rc < 0)
		return set_err(err, err_len, "kernel payload: %s", msg);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	log_info("kernel payload: %u XZ bytes decompressed to %zu in %lld ms", len, *elf_len,
		 (long long)(t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
	return 0;
}

/* The entry's physical address: e_entry is physical in vmlinux (phys_startup_64); a virtual one
 * is translated through the PT_LOAD that maps it. */
static int elf_entry(const struct boot_elf *e, const struct boot_range *loaded, unsigned nloaded,
		     uint64_t *entry, char *err, size_t err_len)
{
	uint64_t ent = e->entry;
	if (ent >= KERNEL_VIRT_BASE) {
		unsigned i;
		for (i = 0; i < e->phnum; i++) {
			struct boot_elf_phdr ph;
			boot_elf_phdr(e, i, &ph);
			uint64_t vaddr = boot_rd64(e->img + e->phoff + (uint64_t)i * e->phentsize +
						   ELF_PHDR64_VADDR);
			if (ph.type == BOOT_PT_LOAD && ent >= vaddr && ent - vaddr < ph.memsz) {
				ent = ph.paddr + (ent - vaddr);
				break;
			}
		}
		if (i == e->phnum)
			return set_err(err, err_len,
				       "virtual entry point 0x%llx is in no loadable segment",
				       (unsigned long long)e->entry);
	}
	if (!boot_in_ranges(ent, loaded, nloaded))
		return set_err(err, err_len, "entry point 0x%llx is not in a loaded segment",
			       (unsigned long long)ent);
	*entry = ent;
	return 0;
}

/* Checks that elf is an x86-64 executable and copies its PT_LOAD segments to their p_paddr. */
static int load_elf_kernel(struct guest_mem *mem, const uint8_t *elf, size_t len,
			   struct boot_range *loaded, unsigned *nloaded, uint64_t *entry, char *err,
			   size_t err_len)
{
	if (len < ELF64_EHDR_SIZE)
		return set_err(err, err_len, "decompressed kernel: ELF header is truncated");
	if (elf[ELF_CLASS] != ELFCLASS64 || boot_rd16(elf + ELF_MACHINE) != EM_X86_64)
		return set_err(err, err_len,
			       "decompressed kernel is not an x86-64 ELF (class %u, machine %u)",
			       elf[ELF_CLASS], boot_rd16(elf + ELF_MACHINE));
	struct boot_elf e;
	char msg[200];
	if (boot_elf_open(&e, elf, len, msg, sizeof(msg)) < 0 ||
	    boot_elf_load(mem, &e, loaded, nloaded, msg, sizeof(msg)) < 0 ||
	    elf_entry(&e, loaded, *nloaded, entry, msg, sizeof(msg)) < 0)
		return set_err(err, err_len, "decompressed kernel: %s", msg);
	return 0;
}

/* True when the command line holds word as a whole option. */
static bool cmdline_has(const char *cmdline, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = cmdline; p && *p;) {
		p += strspn(p, " \t\n");
		size_t len = strcspn(p, " \t\n");
		if (len == n && !memcmp(p, word, n))
			return true;
		p += len;
	}
	return false;
}

/* Returns 0, -1 with err, or DIRECT_FALLBACK when the payload is not an XZ-compressed ELF (then
 * guest RAM is untouched). */
static int load_direct(struct guest_mem *mem, const struct boot_params_in *in,
		       const struct bzimage *bz, struct cpu_state *bsp, char *err, size_t err_len)
{
	uint8_t *elf = NULL;
	size_t elf_len = 0;
	int rc = unpack_payload(mem, bz, &elf, &elf_len, err, err_len);
	if (rc != 0)
		return rc;
	if (!boot_is_elf(elf, elf_len)) {
		log_info("kernel payload is not an ELF file: entering through the kernel's "
			 "decompressor");
		free(elf);
		return DIRECT_FALLBACK;
	}
	struct boot_range loaded[BOOT_ELF_MAX_LOADS];
	unsigned nloaded = 0;
	uint64_t entry = 0, initrd_addr;
	rc = load_elf_kernel(mem, elf, elf_len, loaded, &nloaded, &entry, err, err_len);
	free(elf);
	if (rc < 0 || boot_write_cmdline(mem, in->cmdline, bz->cmdline_size, err, err_len) < 0)
		return -1;
	uint64_t limit = bz->initrd_limit < MEM_4G ? bz->initrd_limit : MEM_4G;
	if (boot_place_initrd(mem, in, limit, loaded, nloaded, &initrd_addr, err, err_len) < 0)
		return -1;
	uint8_t bp[BP_SIZE];
	build_boot_params(mem, bz, initrd_addr, initrd_addr ? in->initrd_len : 0, bp);
	/* What the decompressor reports to the kernel when it did not see "nokaslr". */
	if (!cmdline_has(in->cmdline, "nokaslr"))
		bp[HDR_LOADFLAGS] |= KASLR_FLAG;
	return enter_long64(mem, bp, entry, bsp, err, err_len);
}

/* ---- loader ----------------------------------------------------------------------------- */

int boot_load_bzimage(struct guest_mem *mem, const struct boot_params_in *in, struct cpu_state *bsp,
		      char *err, size_t err_len)
{
	struct bzimage bz = {0};
	if (parse_header(in, &bz, err, err_len) < 0)
		return -1;
	if (in->linux_direct) {
		int rc = load_direct(mem, in, &bz, bsp, err, err_len);
		if (rc != DIRECT_FALLBACK)
			return rc;
	}
	if (kernel_extent(mem, &bz, err, err_len) < 0)
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
	return enter_long64(mem, bp, BOOT_KERNEL_ADDR + 0x200, bsp, err, err_len);
}
