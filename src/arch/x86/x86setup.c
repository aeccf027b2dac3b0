/* Initial processor states shared by the boot protocols. */
#include <string.h>

#include "arch/x86/boot.h"

#define SEL_CODE32  0x08
#define SEL_CODE64  0x10
#define SEL_DATA    0x18
#define GDT_ENTRIES 4

#define PTE_P       0x1ull
#define PTE_RW      0x2ull
#define PTE_PS      0x80ull
#define PT_PAGES    6 /* PML4, PDPT, 4 page directories */
#define PD_COUNT    4

static const uint64_t gdt[GDT_ENTRIES] = {
    0,                     /* null */
    0x00cf9b000000ffffull, /* 0x08: flat 32-bit code, for flat32 states */
    0x00af9b000000ffffull, /* 0x10: 64-bit code (Linux's __BOOT_CS) */
    0x00cf93000000ffffull, /* 0x18: flat data (Linux's __BOOT_DS) */
};

int x86_write_gdt(struct guest_mem *mem, uint64_t gdt_gpa)
{
	return gmem_write(mem, gdt_gpa, gdt, sizeof(gdt));
}

/* The hidden part of a flat (base 0, 4 GiB) segment, as loading it from the GDT would fill it. */
static struct cpu_segment flat_seg(uint16_t sel, uint8_t type, uint8_t l)
{
	return (struct cpu_segment){.base = 0,
				    .limit = 0xffffffff,
				    .selector = sel,
				    .type = type,
				    .s = 1,
				    .present = 1,
				    .l = l,
				    .db = l ? 0 : 1,
				    .g = 1};
}

/* Everything both protected-mode states share; code is the CS cache. */
static void setup_common(struct cpu_state *st, struct cpu_segment code)
{
	struct cpu_segment data = flat_seg(SEL_DATA, 0x3, 0);
	st->seg[SEG_CS] = code;
	st->seg[SEG_DS] = data;
	st->seg[SEG_ES] = data;
	st->seg[SEG_FS] = data;
	st->seg[SEG_GS] = data;
	st->seg[SEG_SS] = data;
	/* No LDT; TR must still hold a busy TSS for VM entry, though nothing uses it. */
	st->seg[SEG_LDT] =
	    (struct cpu_segment){.limit = 0xffff, .type = 0x2, .present = 1, .unusable = 1};
	st->seg[SEG_TR] = (struct cpu_segment){.limit = 0xffff, .type = 0xb, .present = 1};
	st->gdt = (struct cpu_dtable){.base = BOOT_GDT_ADDR, .limit = sizeof(gdt) - 1};
	/* No IDT: a fault before the guest installs one shuts the VM down rather than jumping
	 * through garbage. */
	st->idt = (struct cpu_dtable){.base = 0, .limit = 0};
	st->rflags = RFLAGS_FIXED; /* interrupts off */
	st->cr2 = 0;
	st->cr4 = 0;
	st->efer = 0;
	st->cr3 = 0;
}

void x86_setup_flat32(struct cpu_state *st)
{
	setup_common(st, flat_seg(SEL_CODE32, 0xb, 0));
	st->cr0 = CR0_PE | CR0_ET;
}

/* Identity map of the first 4 GiB with 2 MiB pages. */
static int write_page_tables(struct guest_mem *mem, uint64_t pt_gpa)
{
	uint64_t *pt = gmem_ptr(mem, pt_gpa, PT_PAGES * PAGE_SIZE);
	if (!pt || pt_gpa % PAGE_SIZE)
		return -1;
	memset(pt, 0, (size_t)PT_PAGES * PAGE_SIZE);
	uint64_t *pml4 = pt, *pdpt = pt + 512, *pd = pt + 1024;
	pml4[0] = (pt_gpa + PAGE_SIZE) | PTE_P | PTE_RW;
	for (unsigned i = 0; i < PD_COUNT; i++)
		pdpt[i] = (pt_gpa + (2 + i) * PAGE_SIZE) | PTE_P | PTE_RW;
	for (uint64_t i = 0; i < (uint64_t)PD_COUNT * 512; i++)
		pd[i] = (i << 21) | PTE_P | PTE_RW | PTE_PS;
	return 0;
}

int x86_setup_long64(struct guest_mem *mem, struct cpu_state *st, uint64_t pt_gpa, uint64_t gdt_gpa)
{
	if (write_page_tables(mem, pt_gpa) < 0 || x86_write_gdt(mem, gdt_gpa) < 0)
		return -1;
	setup_common(st, flat_seg(SEL_CODE64, 0xb, 1));
	st->gdt.base = gdt_gpa;
	st->cr0 = CR0_PE | CR0_ET | CR0_PG;
	st->cr4 = CR4_PAE;
	st->efer = EFER_LME | EFER_LMA;
	st->cr3 = pt_gpa;
	return 0;
}
