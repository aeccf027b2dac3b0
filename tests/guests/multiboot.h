/* Multiboot v1 information structure (the fields the tests read). */
#ifndef GUEST_MULTIBOOT_H
#define GUEST_MULTIBOOT_H
#include <stdint.h>

#define MB_BOOTLOADER_MAGIC 0x2badb002
#define MBI_MEM             (1u << 0)
#define MBI_CMDLINE         (1u << 2)
#define MBI_MODS            (1u << 3)
#define MBI_MMAP            (1u << 6)

struct mb_info {
	uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
	uint32_t syms[4];
	uint32_t mmap_length, mmap_addr;
} __attribute__((packed));

struct mb_module {
	uint32_t mod_start, mod_end, string, reserved;
};

struct mb_mmap {
	uint32_t size; /* of the rest of the entry */
	uint64_t addr, len;
	uint32_t type;
} __attribute__((packed));

/* The multiboot command line, or NULL. */
static inline const char *mb_cmdline(uint32_t magic, uint64_t info)
{
	const struct mb_info *mbi = (const struct mb_info *)info;
	if (magic != MB_BOOTLOADER_MAGIC || !mbi || !(mbi->flags & MBI_CMDLINE))
		return 0;
	return (const char *)(uint64_t)mbi->cmdline;
}
#endif
