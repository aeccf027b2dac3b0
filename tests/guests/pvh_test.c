/* pvh_test: checks the PVH hand-over (hvm_start_info magic, cmdline, memory map, module 0 =
 * initrd). Reaching kmain at all means the 32-bit entry switched to long mode on this image's
 * own page tables; it also checks that by reading CR3/EFER. Then exit=N. */
#include "rt.h"

#define HVM_START_MAGIC 0x336ec578

struct hvm_start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr;
	uint64_t memmap_paddr; /* version >= 1 */
	uint32_t memmap_entries, reserved;
};
struct hvm_modlist_entry {
	uint64_t paddr, size, cmdline_paddr, reserved;
};
struct hvm_memmap_entry {
	uint64_t addr, size;
	uint32_t type, reserved;
};

extern uint64_t pml4[];

void kmain(uint32_t magic, uint64_t info)
{
	const struct hvm_start_info *si = (const struct hvm_start_info *)info;
	int bad = 0;

	puts("pvh_test: PVH guest\n");
	if (!si || si->magic != HVM_START_MAGIC) {
		printf("FAIL: start_info at 0x%lx has magic 0x%x\n", info, si ? si->magic : 0);
		vm_exit(0x70);
	}
	printf("start_info magic ok, version %u\n", si->version);

	const char *cmdline = si->cmdline_paddr ? (const char *)si->cmdline_paddr : "";
	printf("cmdline: '%s'\n", cmdline);

	if (si->version >= 1) {
		const struct hvm_memmap_entry *m =
		    (const struct hvm_memmap_entry *)si->memmap_paddr;
		uint64_t ram = 0;
		for (uint32_t i = 0; i < si->memmap_entries && i < 128; i++)
			if (m[i].type == 1)
				ram += m[i].size;
		printf("memmap entries: %u, ram %lu MiB\n", si->memmap_entries, ram >> 20);
		if (!si->memmap_entries) {
			puts("FAIL: empty memory map\n");
			bad = 1;
		}
	} else {
		puts("memmap entries: none (start_info version 0)\n");
	}

	printf("modules: %u\n", si->nr_modules);
	if (si->nr_modules) {
		const struct hvm_modlist_entry *m =
		    (const struct hvm_modlist_entry *)si->modlist_paddr;
		printf("module 0 at 0x%lx size %lu\n", m->paddr, m->size);
		puts("module 0 first line: ");
		print_first_line((const char *)m->paddr, m->size, 80);
		putc('\n');
	}

	uint64_t cr3, efer;
	uint32_t lo, hi;
	__asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0xc0000080));
	efer = ((uint64_t)hi << 32) | lo;
	if ((cr3 & ~0xfffull) == (uint64_t)pml4 && (efer & 0x400)) {
		puts("long mode ok\n");
	} else {
		printf("FAIL: cr3 0x%lx efer 0x%lx\n", cr3, efer);
		bad = 1;
	}
	if (bad)
		vm_exit(0x71);
	finish(cmdline);
}
