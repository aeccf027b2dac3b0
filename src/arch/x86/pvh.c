/* PVH boot (Xen's x86 HVM direct boot ABI, as Linux and other kernels implement it): an ELF
 * whose Xen note XEN_ELFNOTE_PHYS32_ENTRY gives a 32-bit entry point, entered in flat 32-bit
 * protected mode with EBX pointing at struct hvm_start_info. */
#include <string.h>

#include "arch/x86/boot.h"
#include "util/log.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define NOTE_HDR_SIZE            12 /* namesz, descsz, type */

#define HVM_START_MAGIC          0x336ec578
#define HVM_START_VERSION        1

struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr; /* version 1 and later */
	uint32_t memmap_entries;
	uint32_t reserved;
};

struct hvm_modlist_entry {
	uint64_t paddr;
	uint64_t size;
	uint64_t cmdline_paddr;
	uint64_t reserved;
};

struct hvm_memmap_table_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type; /* E820 types */
	uint32_t reserved;
};

/* Where the pieces go inside the boot information page. */
#define MODLIST_OFF 0x40
#define MEMMAP_OFF  0x80
_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info layout");
_Static_assert(sizeof(struct hvm_start_info) <= MODLIST_OFF, "start info overlaps modlist");
_Static_assert(MODLIST_OFF + sizeof(struct hvm_modlist_entry) <= MEMMAP_OFF,
	       "modlist overlaps memmap");
_Static_assert(MEMMAP_OFF + E820_MAX * sizeof(struct hvm_memmap_table_entry) <= PAGE_SIZE,
	       "memmap does not fit in the boot information page");

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* Looks for the entry note in one PT_NOTE segment's bytes. Offsets stay below
 * len + 2 * (2^32 + 8), so no sum here can overflow. */
static bool scan_notes(const uint8_t *p, uint64_t len, uint64_t align, uint32_t *entry)
{
	uint64_t off = 0;
	while (len - off >= NOTE_HDR_SIZE) {
		uint32_t namesz = boot_rd32(p + off), descsz = boot_rd32(p + off + 4);
		uint32_t type = boot_rd32(p + off + 8);
		uint64_t name = off + NOTE_HDR_SIZE, desc = name + align_up(namesz, align);
		if (desc > len || descsz > len - desc)
			return false;
		if (type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 &&
		    !memcmp(p + name, "Xen", 4)) {
			uint64_t v = descsz == 4   ? boot_rd32(p + desc)
				     : descsz == 8 ? boot_rd64(p + desc)
						   : UINT64_MAX;
			if (v <= UINT32_MAX) {
				*entry = (uint32_t)v;
				return true;
			}
		}
		off = desc + align_up(descsz, align);
		if (off > len)
			return false;
	}
	return false;
}

bool pvh_find_entry(const uint8_t *img, size_t len, uint32_t *entry)
{
	struct boot_elf e;
	if (!boot_is_elf(img, len) || boot_elf_open(&e, img, len, NULL, 0) < 0)
		return false;
	for (unsigned i = 0; i < e.phnum; i++) {
		struct boot_elf_phdr ph;
		uint64_t end;
		boot_elf_phdr(&e, i, &ph);
		if (ph.type != BOOT_PT_NOTE || __builtin_add_overflow(ph.offset, ph.filesz, &end) ||
		    end > len)
			continue;
		if (scan_notes(img + ph.offset, ph.filesz, ph.align == 8 ? 8 : 4, entry))
			return true;
	}
	return false;
}

static int write_start_info(struct guest_mem *mem, uint64_t initrd_addr, uint64_t initrd_len)
{
	uint8_t page[PAGE_SIZE] = {0};
	struct hvm_start_info si = {
	    .magic = HVM_START_MAGIC,
	    .version = HVM_START_VERSION,
	    .cmdline_paddr = BOOT_CMDLINE_ADDR,
	    .rsdp_paddr = 0, /* no ACPI: the guest finds the MP table instead */
	    .memmap_paddr = BOOT_INFO_ADDR + MEMMAP_OFF,
	};
	if (initrd_addr) {
		struct hvm_modlist_entry mod = {.paddr = initrd_addr, .size = initrd_len};
		si.nr_modules = 1;
		si.modlist_paddr = BOOT_INFO_ADDR + MODLIST_OFF;
		memcpy(page + MODLIST_OFF, &mod, sizeof(mod));
	}
	struct e820_entry map[E820_MAX];
	si.memmap_entries = e820_build(mem, map, E820_MAX);
	for (unsigned i = 0; i < si.memmap_entries; i++) {
		struct hvm_memmap_table_entry m = {map[i].addr, map[i].size, map[i].type, 0};
		memcpy(page + MEMMAP_OFF + i * sizeof(m), &m, sizeof(m));
	}
	memcpy(page, &si, sizeof(si));
	return gmem_write(mem, BOOT_INFO_ADDR, page, sizeof(page));
}

int boot_load_pvh(struct guest_mem *mem, const struct boot_params_in *in, struct cpu_state *bsp,
		  char *err, size_t err_len)
{
	struct boot_elf e;
	struct boot_range loaded[BOOT_ELF_MAX_LOADS];
	unsigned nloaded;
	uint32_t entry;
	uint64_t initrd_addr;

	if (boot_elf_open(&e, in->kernel, in->kernel_len, err, err_len) < 0)
		return -1;
	if (!pvh_find_entry(in->kernel, in->kernel_len, &entry))
		return set_err(err, err_len,
			       "ELF file has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");
	if (boot_elf_load(mem, &e, loaded, &nloaded, err, err_len) < 0)
		return -1;
	if (!boot_in_ranges(entry, loaded, nloaded))
		return set_err(err, err_len, "PVH entry point 0x%x is not in a loaded segment",
			       entry);
	if (boot_write_cmdline(mem, in->cmdline, BOOT_CMDLINE_MAX - 1, err, err_len) < 0 ||
	    boot_place_initrd(mem, in, MEM_4G, loaded, nloaded, &initrd_addr, err, err_len) < 0)
		return -1;
	if (write_start_info(mem, initrd_addr, initrd_addr ? in->initrd_len : 0) < 0 ||
	    x86_write_gdt(mem, BOOT_GDT_ADDR) < 0)
		return set_err(err, err_len, "guest RAM too small for the boot structures");
	x86_setup_flat32(bsp);
	bsp->rip = entry;
	bsp->gpr[GPR_RBX] = BOOT_INFO_ADDR;
	return 0;
}
