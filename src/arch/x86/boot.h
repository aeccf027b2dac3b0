/* Kernel loaders for x86 guests. A loader checks every header field, offset and size of the
 * (untrusted) kernel file against the file and guest RAM, copies the kernel, command line and
 * initrd into RAM, writes the boot information the protocol defines, and sets the boot
 * processor's initial architectural state. */
#ifndef FERRY_BOOT_H
#define FERRY_BOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/cpu_state.h"
#include "vm/mem.h"

enum boot_format {
	BOOT_FMT_UNKNOWN,
	BOOT_FMT_BZIMAGE,   /* Linux x86 boot protocol, 64-bit entry */
	BOOT_FMT_PVH,       /* ELF with a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) */
	BOOT_FMT_MULTIBOOT, /* multiboot v1 header, as QEMU's -kernel accepts */
};

struct boot_params_in {
	const uint8_t *kernel;
	size_t kernel_len;
	const uint8_t *initrd; /* may be NULL */
	size_t initrd_len;
	const char *cmdline; /* may be NULL */
	unsigned ncpus;
	/* bzImage only: decompress an XZ payload on the host and enter the ELF kernel inside it
	 * directly (at its link address: no physical KASLR), instead of through the kernel's own
	 * decompressor. A payload that is not XZ or not ELF falls back to the decompressor. */
	bool linux_direct;
};

/* Which protocol a kernel image speaks, from its headers alone. */
enum boot_format boot_detect(const uint8_t *img, size_t len);
const char *boot_format_name(enum boot_format f);

/* Loads the image into mem and fills bsp (which starts from the reset state).
 * Returns 0, or -1 with one line in err that names what is wrong with the file. */
int boot_load(struct guest_mem *mem, const struct boot_params_in *in, struct cpu_state *bsp,
	      char *err, size_t err_len);

/* Per-protocol loaders (boot_load dispatches to them). */
int boot_load_bzimage(struct guest_mem *mem, const struct boot_params_in *in, struct cpu_state *bsp,
		      char *err, size_t err_len);
int boot_load_pvh(struct guest_mem *mem, const struct boot_params_in *in, struct cpu_state *bsp,
		  char *err, size_t err_len);
int boot_load_multiboot(struct guest_mem *mem, const struct boot_params_in *in,
			struct cpu_state *bsp, char *err, size_t err_len);

/* The guest-physical memory map as E820 entries (RAM, reserved low areas). */
struct e820_entry {
	uint64_t addr, size;
	uint32_t type;
} __attribute__((packed));
#define E820_RAM      1
#define E820_RESERVED 2
#define E820_MAX      16
/* Returns the number of entries written (at most max). */
unsigned e820_build(const struct guest_mem *mem, struct e820_entry *out, unsigned max);

/* Initial processor set-ups the protocols share. */
/* 32-bit protected mode, flat 4 GiB code/data segments, paging off (multiboot, PVH): selectors
 * 0x08 (code) and 0x18 (data) of the GDT x86_write_gdt puts at BOOT_GDT_ADDR. */
void x86_setup_flat32(struct cpu_state *st);
/* 64-bit long mode at CPL 0 with an identity map of the first 4 GiB (2 MiB pages) written at
 * pt_gpa (6 pages) and a GDT at gdt_gpa; code selector 0x10, data 0x18 (Linux's __BOOT_CS/DS). */
int x86_setup_long64(struct guest_mem *mem, struct cpu_state *st, uint64_t pt_gpa,
		     uint64_t gdt_gpa);

/* Multiprocessor table (Intel MP spec 1.4) in the BIOS area, so guests find the APs and the
 * I/O APIC without ACPI. */
int mptable_write(struct guest_mem *mem, unsigned ncpus, char *err, size_t err_len);

/* ACPI tables (RSDP, RSDT/XSDT, FADT, FACS, DSDT with \_S5, MADT) at ACPI_TABLES_ADDR
 * (arch/x86/acpi.h), describing ncpus processors and the power-management registers of
 * dev/acpi_pm.c. Returns 0, or -1 with one line in err. */
int acpi_write_tables(struct guest_mem *mem, unsigned ncpus, char *err, size_t err_len);

/* Fixed guest-physical addresses used by the loaders (all below 1 MiB, inside RAM). */
#define BOOT_GDT_ADDR     0x500
#define BOOT_INFO_ADDR    0x7000 /* boot_params / hvm_start_info / multiboot_info */
#define BOOT_PT_ADDR      0x9000 /* 6 pages: PML4, PDPT, 4 PDs */
#define BOOT_STACK_TOP    0x8ff0
#define BOOT_CMDLINE_ADDR 0x20000
#define BOOT_CMDLINE_MAX  0x10000
#define BOOT_MPTABLE_ADDR 0xf0000
#define BOOT_KERNEL_ADDR  0x100000

/* The most a bzImage payload may decompress to when the loader unpacks it (linux_direct);
 * guest RAM bounds it too. */
#define BOOT_DIRECT_MAX (512ull << 20)

/* ---- Helpers the loaders share (boot.c, x86setup.c); not for callers outside the loaders. */

/* Little-endian field reads from a byte buffer the caller has bounds-checked. */
static inline uint16_t boot_rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t boot_rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t boot_rd64(const uint8_t *p)
{
	return (uint64_t)boot_rd32(p) | (uint64_t)boot_rd32(p + 4) << 32;
}

/* A guest-physical range [start, end). */
struct boot_range {
	uint64_t start, end;
};

bool boot_in_ranges(uint64_t addr, const struct boot_range *r, unsigned n);
/* Checks that [gpa, gpa+size) is RAM and stays clear of the loader's fixed areas below 1 MiB
 * (GDT, boot information, stack, page tables, command line, BIOS area); what names the range. */
int boot_check_load_range(const struct guest_mem *mem, uint64_t gpa, uint64_t size,
			  const char *what, char *err, size_t err_len);
/* Copies cmdline (NULL means empty) to BOOT_CMDLINE_ADDR; max_len excludes the NUL. */
int boot_write_cmdline(struct guest_mem *mem, const char *cmdline, uint64_t max_len, char *err,
		       size_t err_len);
/* Places the initrd of in (if any) page-aligned at the highest address at or above 1 MiB whose
 * end is at most limit and the end of low RAM, clear of the busy ranges, and copies it there.
 * *addr is 0 when there is no initrd. */
int boot_place_initrd(struct guest_mem *mem, const struct boot_params_in *in, uint64_t limit,
		      const struct boot_range *busy, unsigned nbusy, uint64_t *addr, char *err,
		      size_t err_len);

/* ELF images (PVH and multiboot). boot_elf_open checks the ELF header and that the program
 * header table lies in the file, so boot_elf_phdr needs no further checks. */
#define BOOT_ELF_MAX_PHDRS 128
#define BOOT_ELF_MAX_LOADS 32
#define BOOT_PT_LOAD       1
#define BOOT_PT_NOTE       4
struct boot_elf {
	const uint8_t *img;
	size_t len;
	int is64;
	uint64_t entry;
	uint64_t phoff;
	unsigned phentsize, phnum;
};
struct boot_elf_phdr {
	uint32_t type;
	uint64_t offset, paddr, filesz, memsz, align;
};
bool boot_is_elf(const uint8_t *img, size_t len);
int boot_elf_open(struct boot_elf *e, const uint8_t *img, size_t len, char *err, size_t err_len);
void boot_elf_phdr(const struct boot_elf *e, unsigned i, struct boot_elf_phdr *ph);
/* Loads every PT_LOAD segment at its p_paddr; their ranges go to loaded (BOOT_ELF_MAX_LOADS). */
int boot_elf_load(struct guest_mem *mem, const struct boot_elf *e, struct boot_range *loaded,
		  unsigned *nloaded, char *err, size_t err_len);

/* The PVH entry point from an ELF's Xen notes; false when the image has none. */
bool pvh_find_entry(const uint8_t *img, size_t len, uint32_t *entry);
/* Offset of the first multiboot v1 header in the first 8 KiB (with a valid checksum when
 * need_checksum), or -1. */
long multiboot_find_header(const uint8_t *img, size_t len, bool need_checksum);
/* Writes the GDT x86_setup_long64 and x86_setup_flat32 refer to: 0x08 flat 32-bit code,
 * 0x10 64-bit code, 0x18 flat data. */
int x86_write_gdt(struct guest_mem *mem, uint64_t gdt_gpa);

#endif
