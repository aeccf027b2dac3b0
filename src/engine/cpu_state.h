/* Architectural x86-64 CPU state, as the Intel SDM defines it -- not any engine's structs.
 * A state read from one engine can be written to another, saved in a snapshot or compared
 * register by register in a test. */
#ifndef FERRY_CPU_STATE_H
#define FERRY_CPU_STATE_H

#include <stdbool.h>
#include <stdint.h>

enum cpu_gpr {
	GPR_RAX,
	GPR_RCX,
	GPR_RDX,
	GPR_RBX,
	GPR_RSP,
	GPR_RBP,
	GPR_RSI,
	GPR_RDI,
	GPR_R8,
	GPR_R9,
	GPR_R10,
	GPR_R11,
	GPR_R12,
	GPR_R13,
	GPR_R14,
	GPR_R15,
	GPR_COUNT
};

enum cpu_seg { SEG_ES, SEG_CS, SEG_SS, SEG_DS, SEG_FS, SEG_GS, SEG_LDT, SEG_TR, SEG_COUNT };

/* A segment register with its hidden (descriptor cache) part. */
struct cpu_segment {
	uint64_t base;
	uint32_t limit; /* byte granular: already scaled by G */
	uint16_t selector;
	uint8_t type; /* descriptor type field, 4 bits */
	uint8_t s, dpl, present, avl, l, db, g;
	uint8_t unusable; /* a null selector loaded into a data segment register */
};

struct cpu_dtable {
	uint64_t base;
	uint16_t limit;
};

struct cpu_msr {
	uint32_t index;
	uint32_t reserved;
	uint64_t value;
};

/* Events that are part of the state between two instructions. */
struct cpu_events {
	uint8_t exception_injected, exception_vector, exception_has_error;
	uint32_t exception_error;
	uint8_t interrupt_injected, interrupt_vector, interrupt_soft;
	uint8_t interrupt_shadow; /* bit 0: STI shadow, bit 1: MOV SS shadow */
	uint8_t nmi_injected, nmi_pending, nmi_masked;
};

enum cpu_mp_state {
	MP_RUNNABLE,
	MP_WAIT_FOR_SIPI, /* application processor after INIT */
	MP_HALTED,
};

#define CPU_STATE_MAX_MSRS 64
#define CPU_XSAVE_SIZE     4096 /* XSAVE standard format; bytes 0..511 are the FXSAVE area */
#define CPU_LAPIC_SIZE     1024 /* xAPIC register page, registers at 16-byte stride */

struct cpu_state {
	uint64_t gpr[GPR_COUNT];
	uint64_t rip, rflags;
	struct cpu_segment seg[SEG_COUNT];
	struct cpu_dtable gdt, idt;
	uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base;
	uint64_t dr[4], dr6, dr7;
	uint64_t xcr0;
	uint8_t xsave[CPU_XSAVE_SIZE] __attribute__((aligned(64)));
	uint32_t nmsrs;
	struct cpu_msr msrs[CPU_STATE_MAX_MSRS];
	struct cpu_events events;
	uint32_t mp_state; /* enum cpu_mp_state */
	uint8_t lapic[CPU_LAPIC_SIZE];
};

/* Architectural bits used across the tree. */
#define CR0_PE                (1ull << 0)
#define CR0_MP                (1ull << 1)
#define CR0_ET                (1ull << 4)
#define CR0_NE                (1ull << 5)
#define CR0_WP                (1ull << 16)
#define CR0_PG                (1ull << 31)
#define CR4_PAE               (1ull << 5)
#define CR4_PGE               (1ull << 7)
#define CR4_OSFXSR            (1ull << 9)
#define CR4_OSXMMEXCPT        (1ull << 10)
#define EFER_SCE              (1ull << 0)
#define EFER_LME              (1ull << 8)
#define EFER_LMA              (1ull << 10)
#define EFER_NXE              (1ull << 11)
#define RFLAGS_FIXED          (1ull << 1)
#define RFLAGS_IF             (1ull << 9)

#define MSR_IA32_TSC          0x10
#define MSR_IA32_APIC_BASE    0x1b
#define MSR_IA32_SYSENTER_CS  0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE  0x1a0
#define MSR_IA32_PAT          0x277
#define MSR_STAR              0xc0000081
#define MSR_LSTAR             0xc0000082
#define MSR_CSTAR             0xc0000083
#define MSR_SFMASK            0xc0000084
#define MSR_FS_BASE           0xc0000100
#define MSR_GS_BASE           0xc0000101
#define MSR_KERNEL_GS_BASE    0xc0000102
#define MSR_TSC_AUX           0xc0000103

#define APIC_DEFAULT_BASE     0xfee00000ull
#define APIC_BASE_BSP         (1ull << 8)
#define APIC_BASE_ENABLE      (1ull << 11)

/* The state a processor has after RESET/INIT (Intel SDM vol. 3, "Processor State After Reset"). */
void cpu_state_reset(struct cpu_state *st, bool bsp);
/* Set or add an MSR value in st; returns -1 when the MSR list is full. */
int cpu_state_set_msr(struct cpu_state *st, uint32_t index, uint64_t value);
/* Find an MSR; returns false when st does not carry it. */
bool cpu_state_get_msr(const struct cpu_state *st, uint32_t index, uint64_t *value);

#endif
