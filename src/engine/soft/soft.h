/* The soft engine: an x86-64 interpreter. Internal header shared by its files.
 *
 * Flow of one instruction: the run loop (cpu.c) looks up the decoded block that starts at RIP
 * (cache.c: keyed by guest-physical address, invalidated when its page is written); a block is a
 * run of struct insn that decode.c built once with libzydis, each carrying the handler chosen for
 * its mnemonic and operand forms. The loop advances RIP past the instruction, then calls the
 * handler, which reads and writes registers directly and memory through the soft TLB (mmu.c).
 * Arithmetic flags are lazy (flags.c): handlers record the operation and its operands and the
 * flags are computed only when something reads them. Faults unwind to the run loop with longjmp
 * after RIP is put back on the faulting instruction. 64-bit blocks also become host code once
 * (jit.c), which runs the common forms itself and calls the handlers for the rest. */
#ifndef FERRY_SOFT_H
#define FERRY_SOFT_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine/cpu_state.h"

#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

typedef unsigned __int128 u128;
typedef __int128 s128;

/* Guest memory accesses may be misaligned (x86 allows it): host loads and stores through these
 * types say so, as C requires (and UBSan checks); on x86-64 they are plain moves. */
typedef uint16_t u16_unaligned __attribute__((aligned(1), may_alias));
typedef uint32_t u32_unaligned __attribute__((aligned(1), may_alias));
typedef uint64_t u64_unaligned __attribute__((aligned(1), may_alias));

struct soft_cpu;
struct insn;

/* What the run loop returns. */
enum soft_exit {
	SOFT_EXIT_NONE,
	SOFT_EXIT_SYSCALL,   /* user mode: a syscall instruction, RIP after it */
	SOFT_EXIT_EXCEPTION, /* user mode: a fault; exc_vector/exc_error/exc_addr say which */
	SOFT_EXIT_HLT,
	SOFT_EXIT_STOP,     /* soft_cpu_stop() or the instruction budget ran out */
	SOFT_EXIT_FAIL,     /* the engine cannot go on: fail_msg says why */
	SOFT_EXIT_SHUTDOWN, /* system mode: a triple fault */
};

/* How an event reaches the IDT (system mode): the kind decides the gate-DPL check, the EXT bit
 * of error codes and where RIP points. */
enum soft_event_kind {
	EV_FAULT, /* an exception raised by an instruction (RIP on it, or past it for traps) */
	EV_SOFT,  /* int n, int3, into: the gate's DPL must allow the CPL */
	EV_EXT,   /* an external interrupt or NMI */
};

/* ---- exceptions ---------------------------------------------------------------------------- */

enum {
	EXC_DE = 0,
	EXC_DB = 1,
	EXC_NMI = 2,
	EXC_BP = 3,
	EXC_OF = 4,
	EXC_BR = 5,
	EXC_UD = 6,
	EXC_NM = 7,
	EXC_DF = 8,
	EXC_TS = 10,
	EXC_NP = 11,
	EXC_SS = 12,
	EXC_GP = 13,
	EXC_PF = 14,
	EXC_MF = 16,
	EXC_AC = 17,
	EXC_MC = 18,
	EXC_XM = 19,
};

/* Raise a fault for the current instruction: RIP goes back to its first byte, the run loop
 * returns (user mode) or delivers it (system mode). Never returns. */
__attribute__((noreturn)) void soft_fault(struct soft_cpu *c, int vector, uint32_t error);
/* A page fault at linear address addr with the architectural error code. */
__attribute__((noreturn)) void soft_page_fault(struct soft_cpu *c, uint64_t addr, uint32_t error);
/* The instruction being executed (found from insn_start in the current block; for the rare
 * paths that need more than its address). NULL outside a block. */
const struct insn *soft_current_insn(const struct soft_cpu *c);
/* Stop with SOFT_EXIT_FAIL: something the engine does not support (fail closed). */
__attribute__((noreturn, format(printf, 2, 3))) void soft_fail(struct soft_cpu *c, const char *fmt,
							       ...);
/* Leave the run loop now with exit reason why (RIP must already be where to resume). */
__attribute__((noreturn)) void soft_exit(struct soft_cpu *c, enum soft_exit why);
/* An instruction this engine does not implement: logged once per address with its bytes,
 * then #UD. */
__attribute__((noreturn)) void soft_unimplemented(struct soft_cpu *c, const struct insn *in);

/* ---- decoded instructions -------------------------------------------------------------------- */

typedef void (*insn_fn)(struct soft_cpu *c, const struct insn *in);

/* Operand kinds, as decode.c fills them. */
enum opnd_kind { OPK_NONE, OPK_REG, OPK_MEM, OPK_IMM, OPK_XMM, OPK_ST, OPK_SEG, OPK_OTHER };

/* A general register as a byte offset into soft_cpu.gpr (so AH is offset 1 into RAX). */
typedef uint16_t gpr_ref;
#define GPR_NONE 0xffff

struct opnd {
	uint8_t kind; /* enum opnd_kind */
	uint8_t size; /* bytes: 1, 2, 4, 8, 10, 16 ... */
	uint16_t reg; /* OPK_REG: gpr_ref; OPK_XMM/ST/SEG: index */
};

/* The memory operand of an instruction (at most one has an address; string instructions and
 * push/pop address memory implicitly). */
struct mem_ref {
	gpr_ref base, index; /* GPR_NONE when absent */
	uint8_t scale;       /* shift: 0..3 */
	uint8_t seg;         /* SEG_ES.. SEG_GS (enum cpu_seg) */
	uint8_t asize;       /* address size in bytes: 2, 4 or 8 */
	bool rip_rel;        /* disp is relative to the next instruction's RIP */
	int64_t disp;
};

enum insn_prefix {
	PFX_LOCK = 1 << 0,
	PFX_REP = 1 << 1,   /* F3: rep / repe */
	PFX_REPNE = 1 << 2, /* F2: repne */
	PFX_OPSIZE = 1 << 3,
	PFX_REX_W = 1 << 4,
	/* Not a prefix: the instruction also addresses the stack implicitly (push, call, ...). */
	INSN_STACK = 1 << 7,
};

struct insn {
	insn_fn fn;
	uint8_t len;    /* bytes */
	uint8_t osize;  /* effective operand size in bytes */
	uint8_t nops;   /* visible operands */
	uint8_t prefix; /* enum insn_prefix */
	uint16_t
	    mnemonic; /* ZydisMnemonic, for handlers shared by several mnemonics and for logs */
	uint8_t cc;   /* condition code (jcc/setcc/cmovcc: the low 4 bits of the opcode) */
	uint8_t aux;  /* handler-specific: a sub-operation, an immediate byte ... */
	struct opnd op[4];
	struct mem_ref mem; /* valid when some op[i].kind == OPK_MEM */
	uint64_t imm;       /* the immediate, sign-extended to the operand size; branch: rel disp */
	uint64_t imm2;      /* a second immediate (enter, far pointers) */
};

/* ---- the CPU ----------------------------------------------------------------------------- */

/* Lazy arithmetic flags: the last flag-setting operation and its inputs. LF_NONE means the
 * flags are materialized in rflags. The size is part of the op (LF_ADD + size index). */
enum lf_op {
	LF_NONE = 0,
	LF_ADD = 1 * 4,   /* res = src1 + src2 */
	LF_ADC = 2 * 4,   /* res = src1 + src2 + carry-in (src3) */
	LF_SUB = 3 * 4,   /* res = src1 - src2 (also CMP) */
	LF_SBB = 4 * 4,   /* res = src1 - src2 - borrow-in (src3) */
	LF_LOGIC = 5 * 4, /* AND/OR/XOR/TEST: CF=OF=0, AF undefined (0) */
	LF_INC = 6 * 4,   /* CF preserved (kept in src3) */
	LF_DEC = 7 * 4,
	LF_NEG = 8 * 4,
	LF_SHL = 9 * 4, /* src1 = value, src2 = count (masked, non-zero) */
	LF_SHR = 10 * 4,
	LF_SAR = 11 * 4,
	LF_COUNT = 12 * 4, /* ops below this one have ZF = (res == 0) */
	/* Rotates change only CF and OF: they keep a snapshot (lf.base_*) of the operation that
	 * set the other flags, so a run of rotates never computes flags. */
	LF_ROL = 12 * 4,
	LF_ROR = 13 * 4,
};
/* Size index for lazy ops: 0 = byte, 1 = word, 2 = dword, 3 = qword. */
static inline unsigned size_index(unsigned bytes)
{
	return bytes == 8 ? 3 : bytes == 4 ? 2 : bytes == 2 ? 1 : 0;
}

#define FL_CF    (1u << 0)
#define FL_PF    (1u << 2)
#define FL_AF    (1u << 4)
#define FL_ZF    (1u << 6)
#define FL_SF    (1u << 7)
#define FL_TF    (1u << 8)
#define FL_IF    (1u << 9)
#define FL_DF    (1u << 10)
#define FL_OF    (1u << 11)
#define FL_ARITH (FL_CF | FL_PF | FL_AF | FL_ZF | FL_SF | FL_OF)

union xmm {
	uint8_t b[16];
	uint16_t w[8];
	uint32_t d[4];
	uint64_t q[2];
	int8_t sb[16];
	int16_t sw[8];
	int32_t sd[4];
	int64_t sq[2];
	float f[4];
	double df[2];
} __attribute__((aligned(16)));

struct x87 {
	long double st[8]; /* physical registers R0..R7 (80-bit extended on x86-64 hosts) */
	uint16_t fcw, fsw, ftw_full; /* ftw_full: two bits per register (00 valid .. 11 empty) */
	uint16_t fop;
	unsigned top;
	uint64_t fip, fdp;
};

/* One soft-TLB entry: the page tags a read, write or fetch may hit, and how to get from the
 * guest-virtual address to the host pointer. A tag of TLB_INVALID never matches. */
struct tlb_entry {
	uint64_t tag_read, tag_write, tag_exec;
	intptr_t addend;   /* host pointer = guest-virtual address + addend */
	uint64_t gpa_page; /* guest-physical page, for the decoded-block cache */
};
#define TLB_BITS    10
#define TLB_SIZE    (1u << TLB_BITS)
#define TLB_INVALID (~0ull)

enum mem_access { ACC_READ = 0, ACC_WRITE = 1, ACC_EXEC = 2 };

/* How guest-physical memory is reached. The VM passes guest RAM; ferry-user passes its own
 * address space (guest-physical == host-virtual, checked against the guest's mappings). */
struct soft_mem_ops {
	/* Host pointer for the guest-physical page holding gpa, or NULL if it is not RAM. *writable
	 * tells whether writes may go straight to it. Called on TLB misses only. */
	void *(*page_ptr)(void *opaque, uint64_t gpa, enum mem_access acc, bool *writable);
	/* System mode: an access to guest-physical memory that is not RAM (size 1, 2, 4 or 8).
	 * Returns 0, or -1 when nothing answers there (the VM is then stopping). NULL: no MMIO. */
	int (*mmio)(void *opaque, uint64_t gpa, uint8_t *data, unsigned size, bool write);
	/* System mode: port I/O of one element. */
	void (*pio)(void *opaque, uint16_t port, uint8_t *data, unsigned size, bool write);
	void *opaque;
};

struct soft_cache;
struct block;
/* System mode: where maskable interrupts come from (the VM's interrupt controllers). */
struct soft_irq_ops {
	/* The interrupt-acknowledge cycle: the vector of the interrupt to take now, or -1. */
	int (*intack)(void *opaque);
	/* MSRs the platform owns (the local APIC's): 1 handled, 0 not the platform's, -1 #GP. */
	int (*msr)(void *opaque, uint32_t index, uint64_t *value, bool write);
	void *opaque;
};

/* The jump cache: the block last run from a virtual address, valid while neither the decoded
 * code nor the translations changed (both bump the CPU's epoch). */
struct jc_entry {
	uint64_t va, epoch;
	struct block *block;
};
#define JC_SIZE 4096

struct soft_cpu {
	/* Hot state first: the run loop and most handlers touch only these lines. */
	uint64_t gpr[16];
	uint64_t rip;
	uint64_t rflags; /* with lf.op != LF_NONE its arithmetic bits are stale */
	struct {
		uint64_t res, src1, src2, src3;
		uint32_t op;      /* enum lf_op + size index */
		uint32_t base_op; /* LF_ROL/LF_ROR: the operation before the rotates */
		uint64_t base_res, base_src1, base_src2, base_src3;
	} lf;
	bool stop_block; /* leave the current block after this instruction */
	/* Requests from other threads, seen between blocks; translated code reads the four words
	 * as two quadwords (jit.c). */
	volatile int exit_request __attribute__((aligned(8))); /* return from soft_cpu_run soon */
	volatile int intr_request; /* set by the interrupt controllers: an interrupt may be due */
	volatile int nmi_request;  /* an NMI is waiting */
	uint32_t requests_zero;    /* always 0 */
	uint64_t icount;           /* instructions retired */
	struct tlb_entry *tlb; /* the TLB of the current privilege: tlbs[0] CPL 0-2, [1] CPL 3 */
	struct jc_entry *jc;   /* the jump cache of the current privilege, likewise */

	struct cpu_segment seg[SEG_COUNT];
	struct cpu_dtable gdt, idt;
	uint64_t cr0, cr2, cr3, cr4, cr8, efer, xcr0, apic_base;
	uint64_t kernel_gs_base, star, lstar, cstar, sfmask, tsc_aux, pat, misc_enable;
	uint64_t sysenter_cs, sysenter_esp, sysenter_eip;
	uint64_t tsc_offset;     /* guest TSC = soft_host_ns() + tsc_offset */
	uint32_t apic_id, ncpus; /* this CPU's APIC ID and how many the VM has (CPUID topology) */
	uint64_t kvm_wall_clock, kvm_system_time; /* the kvmclock MSRs */
	uint64_t dr[4], dr6, dr7;

	union xmm xmm[16];
	uint32_t mxcsr;
	struct x87 fpu;

	bool user_mode; /* ferry-user: syscalls and faults return to the caller */
	/* System mode: interrupts. */
	struct soft_irq_ops irq;
	bool nmi_blocked;      /* in an NMI handler until the next iret */
	bool intr_shadow;      /* after sti: no interrupt before the next instruction */
	bool sv_access;        /* descriptor-table and TSS accesses: supervisor, whatever the CPL */
	bool holds_split_lock; /* inside a locked access that crosses a page (exec_alu.c) */
	int event_vector;      /* the event being delivered (double-fault rules), or -1 */
	enum soft_event_kind exc_kind; /* of the exception in exc_vector */
	enum soft_event_kind event_kind;
	bool wait_for_sipi; /* an application processor after INIT */
	enum soft_exit exit;
	int exc_vector;
	uint32_t exc_error;
	uint64_t exc_addr;     /* #PF: the faulting linear address */
	uint64_t insn_budget;  /* run at most this many instructions (0: no limit); what is left
	                         * of it when soft_cpu_run returns */
	uint64_t icount_limit; /* icount at which the current run stops (0: none) */
	uint64_t insn_start;   /* RIP of the instruction being executed */
	const struct block *cur_block; /* the block being executed, entered at cur_block_va */
	uint64_t cur_block_va;
	const struct insn
	    *cur_end;   /* where the current pass over the block stops (NULL: its end) */
	uint64_t epoch; /* bumped by every TLB flush and every drop of decoded code: caches keyed
	                 * by virtual address check it */
	char fail_msg[160];
	uint64_t *dirty_bitmap; /* one bit per guest-physical page written, when logging */
	uint64_t dirty_pages;   /* pages the bitmap covers */

	struct soft_mem_ops mem;
	struct soft_cache *cache;
	struct soft_jit *jit; /* host code for 64-bit blocks (jit.c); NULL: interpret only */
	jmp_buf unwind;
	struct tlb_entry tlbs[2][TLB_SIZE];
	uint64_t tlb_global[2][TLB_SIZE / 64]; /* entries that map a global page */
	struct jc_entry jcs[2][JC_SIZE];
};

/* The soft CPU's time stamp counter runs at SOFT_TSC_HZ on every host: guest TSC = the host's
 * monotonic clock in nanoseconds + tsc_offset. A fixed rate keeps a VM's notion of time the
 * same on whichever host it runs or moves to, and CPUID can state it exactly. */
#define SOFT_TSC_HZ 1000000000ull
uint64_t soft_host_ns(void);
static inline uint64_t soft_tsc(const struct soft_cpu *c)
{
	return soft_host_ns() + c->tsc_offset;
}

/* ---- life cycle and running (cpu.c) -------------------------------------------------------- */

/* Creates a CPU in 64-bit mode (user_mode) or in the reset state; NULL on allocation failure. */
struct soft_cpu *soft_cpu_create(const struct soft_mem_ops *mem, bool user_mode);
void soft_cpu_destroy(struct soft_cpu *c);
/* Runs until an exit; returns it (also left in c->exit). */
enum soft_exit soft_cpu_run(struct soft_cpu *c);
/* The current privilege level (CPL), and the TLB and jump cache that go with it: whoever loads
 * CS calls soft_cpl_changed. */
static inline unsigned soft_cpl(const struct soft_cpu *c)
{
	return c->seg[SEG_CS].dpl;
}
void soft_cpl_changed(struct soft_cpu *c);
/* Releases what a handler may hold when it leaves by longjmp (the run loop's unwind). */
void soft_release_locks(struct soft_cpu *c);
/* Descriptor-table, IDT and TSS accesses are supervisor accesses at any CPL: bracket them. */
static inline void soft_sv_begin(struct soft_cpu *c)
{
	c->sv_access = true;
	c->tlb = c->tlbs[0];
}
static inline void soft_sv_end(struct soft_cpu *c)
{
	c->sv_access = false;
	c->tlb = c->tlbs[soft_cpl(c) == 3];
}

/* ---- segmentation (segment.c) and events (interrupt.c), system mode ------------------------ */

/* The 8-byte descriptor sel selects in the GDT or LDT and its linear address; false when the
 * selector lies outside the table. */
bool soft_read_desc(struct soft_cpu *c, uint16_t sel, uint64_t *desc, uint64_t *addr);
void soft_seg_from_desc(struct cpu_segment *s, uint16_t sel, uint64_t d);
/* mov Sreg / pop Sreg in protected mode, with the SDM's checks and faults. */
void soft_load_seg(struct soft_cpu *c, unsigned seg, uint16_t sel);
/* Loads CS from descriptor d with RPL = cpl and makes cpl the CPL. */
void soft_load_cs(struct soft_cpu *c, uint16_t sel, uint64_t d, unsigned cpl);
void soft_far_jump(struct soft_cpu *c, uint16_t sel, uint64_t off, unsigned osize);
void soft_far_call(struct soft_cpu *c, uint16_t sel, uint64_t off, unsigned osize);
void soft_far_ret(struct soft_cpu *c, unsigned osize, uint16_t release);
/* Delivers an event through the IDT (long mode): the stack switch, the frame, the new CS:RIP.
 * A fault while delivering unwinds like any fault; the run loop applies the double-fault
 * rules. */
void soft_deliver(struct soft_cpu *c, unsigned vector, uint32_t error, bool has_error,
		  enum soft_event_kind kind);
/* Raised the pending exception (exc_vector/exc_error/exc_kind) through the IDT after the
 * double-fault rules; false when that ends in a triple fault (c->exit is then SHUTDOWN). */
bool soft_deliver_exception(struct soft_cpu *c);
/* Between blocks: takes a due NMI or maskable interrupt. */
void soft_check_interrupts(struct soft_cpu *c);
/* System mode: an interrupt may be due (interrupt controllers call this from any thread). */
static inline void soft_cpu_interrupt(struct soft_cpu *c)
{
	__atomic_store_n(&c->intr_request, 1, __ATOMIC_RELEASE);
}
/* Asks a running CPU to return SOFT_EXIT_STOP soon. Thread-safe. */
void soft_cpu_stop(struct soft_cpu *c);
/* Architectural state in and out (engine/cpu_state.h). */
void soft_cpu_get_state(struct soft_cpu *c, struct cpu_state *st);
void soft_cpu_set_state(struct soft_cpu *c, const struct cpu_state *st);
/* The FXSAVE image (512 bytes) of the x87 and SSE state, in and out (exec_sse.c). */
void soft_fxsave_image(struct soft_cpu *c, uint8_t out[512]);
void soft_fxrstor_image(struct soft_cpu *c, const uint8_t in[512]);

/* ---- memory (mmu.c) -------------------------------------------------------------------------- */

void soft_tlb_flush(struct soft_cpu *c);
void soft_tlb_flush_page(struct soft_cpu *c, uint64_t va);
void soft_tlb_flush_nonglobal(struct soft_cpu *c);
/* Dirty-page logging: every write to guest-physical page p sets bit p of bitmap (pages bits
 * long; NULL stops logging). After the owner reads and clears the bitmap it calls
 * soft_dirty_rearm so the next write to each page is seen again. */
void soft_dirty_log(struct soft_cpu *c, uint64_t *bitmap, uint64_t pages);
void soft_dirty_rearm(struct soft_cpu *c);
/* Decoded code now lives on gpa_page: no TLB entry may let writes reach it directly. */
void soft_tlb_protect_code_page(struct soft_cpu *c, uint64_t gpa_page);
/* TLB miss: translate, check, fill; returns the host pointer for va, or faults. An access
 * that crosses into the next page returns NULL once both pages were found accessible, and so
 * does one to memory-mapped I/O: the caller then goes through soft_load / soft_store /
 * soft_read_bytes / soft_write_bytes, which split it or reach the device. */
void *soft_mem_slow(struct soft_cpu *c, uint64_t va, unsigned size, enum mem_access acc);

static inline void *soft_mem(struct soft_cpu *c, uint64_t va, unsigned size, enum mem_access acc)
{
	struct tlb_entry *e = &c->tlb[(va >> 12) & (TLB_SIZE - 1)];
	uint64_t tag = acc == ACC_WRITE  ? e->tag_write
		       : acc == ACC_READ ? e->tag_read
					 : e->tag_exec;
	if (likely(tag == (va & ~0xfffull)) && likely((va & 0xfff) + size <= 0x1000))
		return (void *)(va + e->addend);
	return soft_mem_slow(c, va, size, acc);
}

/* Loads and stores of 1..16 bytes at a guest-virtual address; accesses that cross a page are
 * split. Values are little-endian, zero-extended. */
uint64_t soft_load_slow(struct soft_cpu *c, uint64_t va, unsigned size);
void soft_store_slow(struct soft_cpu *c, uint64_t va, uint64_t v, unsigned size);
void soft_read_bytes(struct soft_cpu *c, uint64_t va, void *dst, size_t n);
void soft_write_bytes(struct soft_cpu *c, uint64_t va, const void *src, size_t n);

static inline uint64_t soft_load(struct soft_cpu *c, uint64_t va, unsigned size)
{
	struct tlb_entry *e = &c->tlb[(va >> 12) & (TLB_SIZE - 1)];
	if (likely(e->tag_read == (va & ~0xfffull)) && likely((va & 0xfff) + size <= 0x1000)) {
		const void *p = (const void *)(va + e->addend);
		switch (size) {
		case 1:
			return *(const uint8_t *)p;
		case 2:
			return *(const u16_unaligned *)p;
		case 4:
			return *(const u32_unaligned *)p;
		default:
			return *(const u64_unaligned *)p;
		}
	}
	return soft_load_slow(c, va, size);
}

static inline void soft_store(struct soft_cpu *c, uint64_t va, uint64_t v, unsigned size)
{
	struct tlb_entry *e = &c->tlb[(va >> 12) & (TLB_SIZE - 1)];
	if (likely(e->tag_write == (va & ~0xfffull)) && likely((va & 0xfff) + size <= 0x1000)) {
		void *p = (void *)(va + e->addend);
		switch (size) {
		case 1:
			*(uint8_t *)p = (uint8_t)v;
			return;
		case 2:
			*(u16_unaligned *)p = (uint16_t)v;
			return;
		case 4:
			*(u32_unaligned *)p = (uint32_t)v;
			return;
		default:
			*(u64_unaligned *)p = v;
			return;
		}
	}
	soft_store_slow(c, va, v, size);
}
/* A supervisor-access load (descriptor tables, IDT, TSS), at any CPL. */
static inline uint64_t soft_sv_load(struct soft_cpu *c, uint64_t va, unsigned size)
{
	soft_sv_begin(c);
	uint64_t v = soft_load(c, va, size);
	soft_sv_end(c);
	return v;
}
/* A 64-bit linear address is canonical when bits 63..47 are all equal. */
static inline bool soft_canonical(uint64_t va)
{
	return (uint64_t)((int64_t)(va << 16) >> 16) == va;
}

/* Little-endian fields of in-memory images (FXSAVE, FNSAVE/FNSTENV) in host buffers. */
static inline void le_put16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}
static inline void le_put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}
static inline void le_put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}
static inline uint16_t le_get16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return v;
}
static inline uint32_t le_get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}
static inline uint64_t le_get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

/* ---- operands (inline helpers for handlers) ------------------------------------------------ */

static inline uint64_t size_mask(unsigned bytes)
{
	return bytes >= 8 ? ~0ull : (1ull << (bytes * 8)) - 1;
}

static inline uint64_t sign_extend(uint64_t v, unsigned bytes)
{
	unsigned sh = 64 - bytes * 8;
	return bytes >= 8 ? v : (uint64_t)((int64_t)(v << sh) >> sh);
}

static inline uint64_t gpr_read(const struct soft_cpu *c, gpr_ref r, unsigned size)
{
	const uint8_t *p = (const uint8_t *)c->gpr + r;
	switch (size) {
	case 1:
		return *p;
	case 2:
		return *(const uint16_t *)p;
	case 4:
		return *(const uint32_t *)p;
	default:
		return *(const uint64_t *)p;
	}
}

/* A 32-bit write zero-extends into the full register; 8- and 16-bit writes merge. */
static inline void gpr_write(struct soft_cpu *c, gpr_ref r, uint64_t v, unsigned size)
{
	uint8_t *p = (uint8_t *)c->gpr + r;
	switch (size) {
	case 1:
		*p = (uint8_t)v;
		break;
	case 2:
		*(uint16_t *)p = (uint16_t)v;
		break;
	case 4:
		*(uint64_t *)p = (uint32_t)v;
		break;
	default:
		*(uint64_t *)p = v;
	}
}

/* The effective (linear) address of in's memory operand; c->rip already points past in. */
static inline uint64_t insn_addr(const struct soft_cpu *c, const struct insn *in)
{
	const struct mem_ref *m = &in->mem;
	uint64_t a = (uint64_t)m->disp;
	if (m->base != GPR_NONE)
		a += *(const uint64_t *)((const uint8_t *)c->gpr + m->base);
	if (m->index != GPR_NONE)
		a += *(const uint64_t *)((const uint8_t *)c->gpr + m->index) << m->scale;
	if (m->rip_rel)
		a += c->rip;
	if (m->asize == 4)
		a = (uint32_t)a;
	else if (m->asize == 2)
		a = (uint16_t)a;
	if (m->seg == SEG_FS || m->seg == SEG_GS)
		a += c->seg[m->seg].base;
	return a;
}

/* Reads operand i (register, memory or immediate) at its size, zero-extended. */
static inline uint64_t opnd_read(struct soft_cpu *c, const struct insn *in, unsigned i)
{
	const struct opnd *o = &in->op[i];
	switch (o->kind) {
	case OPK_REG:
		return gpr_read(c, o->reg, o->size);
	case OPK_MEM:
		return soft_load(c, insn_addr(c, in), o->size);
	default:
		/* Zydis sizes an immediate as encoded (imm8, imm32); it acts at the operand size,
		 * sign-extended. */
		return in->imm & size_mask(in->osize > o->size ? in->osize : o->size);
	}
}

/* A load that the instruction will write back (read-modify-write): hardware checks write
 * access before reading, so a fault here reports a write. */
static inline uint64_t soft_load_rmw(struct soft_cpu *c, uint64_t va, unsigned size)
{
	soft_mem(c, va, size, ACC_WRITE); /* faults, or NULL for a split or MMIO access */
	return soft_load(c, va, size);
}

/* Reads operand i of a read-modify-write instruction (see soft_load_rmw). */
static inline uint64_t opnd_read_rmw(struct soft_cpu *c, const struct insn *in, unsigned i)
{
	const struct opnd *o = &in->op[i];
	if (o->kind == OPK_MEM)
		return soft_load_rmw(c, insn_addr(c, in), o->size);
	return opnd_read(c, in, i);
}

static inline void opnd_write(struct soft_cpu *c, const struct insn *in, unsigned i, uint64_t v)
{
	const struct opnd *o = &in->op[i];
	if (o->kind == OPK_REG)
		gpr_write(c, o->reg, v, o->size);
	else
		soft_store(c, insn_addr(c, in), v, o->size);
}

/* ---- flags (flags.c) ----------------------------------------------------------------------- */

static inline void lf_set(struct soft_cpu *c, unsigned op, unsigned size, uint64_t res,
			  uint64_t src1, uint64_t src2)
{
	c->lf.op = op + size_index(size);
	c->lf.res = res;
	c->lf.src1 = src1;
	c->lf.src2 = src2;
}

/* A rotate's result (ROL or ROR, count not 0): CF and OF follow from it; the other flags stay
 * what the operation before the rotates made them. */
static inline void lf_rot(struct soft_cpu *c, unsigned op, unsigned size, uint64_t res)
{
	unsigned prev = c->lf.op & ~3u;
	if (prev != LF_ROL && prev != LF_ROR) {
		c->lf.base_op = c->lf.op;
		c->lf.base_res = c->lf.res;
		c->lf.base_src1 = c->lf.src1;
		c->lf.base_src2 = c->lf.src2;
		c->lf.base_src3 = c->lf.src3;
	}
	c->lf.op = op + size_index(size);
	c->lf.res = res;
}

/* Computes the arithmetic flags into rflags (lf.op becomes LF_NONE) and returns rflags. */
uint64_t soft_flags(struct soft_cpu *c);
/* Sets the arithmetic flags in mask from v, leaving the others; resolves lazy state first. */
void soft_set_flags(struct soft_cpu *c, uint64_t v, uint64_t mask);
/* Evaluates condition code cc (0..15, as in Jcc) against the current flags. */
bool soft_cond(struct soft_cpu *c, unsigned cc);
static inline bool soft_cf(struct soft_cpu *c)
{
	return soft_flags(c) & FL_CF;
}
/* Parity of the low byte: PF is set when the number of set bits is even. */
static inline bool parity8(uint64_t v)
{
	return !__builtin_parity((unsigned)(v & 0xff));
}

/* ---- decoding and the block cache (decode.c, cache.c) ---------------------------------------- */

/* Decode modes: how the bytes are read (CS.L / CS.D). */
enum { SOFT_MODE_64, SOFT_MODE_32, SOFT_MODE_16 };
/* Decodes the instruction at guest-virtual va into *in. Returns its length; *end says the
 * block must end after it. Faults on fetch; bytes that are no instruction decode to a #UD. */
int soft_decode(struct soft_cpu *c, uint64_t va, unsigned mode, struct insn *in, bool *end);
const char *soft_mnemonic_name(unsigned mnemonic);
/* Handler registration: each exec_*.c file lists the mnemonics it implements. select is called
 * at decode time with the decoded instruction and may specialize (return a handler); NULL from
 * select means this form is not implemented (#UD, logged). */
typedef insn_fn (*insn_select_fn)(const struct insn *in);
void soft_register(unsigned mnemonic, insn_select_fn select);
void soft_register_fn(unsigned mnemonic, insn_fn fn);
void soft_decode_init(void);

/* The register functions of each group, called once by soft_decode_init. */
void soft_register_alu(void);
void soft_register_control(void);
void soft_register_string(void);
void soft_register_bit(void);
void soft_register_muldiv(void);
void soft_register_misc(void);
void soft_register_sse(void);
void soft_register_x87(void);
void soft_register_io(void);
void soft_register_system(void);
void soft_register_segment(void);
void soft_register_interrupt(void);

/* A cache bumps *epoch whenever it drops blocks. */
struct soft_cache *soft_cache_create(uint64_t *epoch);
void soft_cache_destroy(struct soft_cache *cache);
/* Drops every decoded block (e.g. when the mode changes how bytes decode). */
void soft_cache_flush(struct soft_cache *cache);
/* A write reached guest-physical page gpa_page: drop the blocks decoded from it. Returns true
 * if any were dropped. */
bool soft_cache_invalidate_page(struct soft_cache *cache, uint64_t gpa_page);
bool soft_cache_page_has_code(struct soft_cache *cache, uint64_t gpa_page);

/* The soft CPU's CPUID model (cpuid.c). */
void soft_cpuid(const struct soft_cpu *c, uint32_t leaf, uint32_t subleaf, uint32_t out[4]);

/* Statistics, for ferry's -v output and the benchmark. */
struct soft_stats {
	uint64_t blocks_decoded, insns_decoded, block_invalidations;
	uint64_t tlb_misses;  /* "hidden" faults: refills the guest never sees */
	uint64_t page_faults; /* "true" faults: #PF delivered to the guest */
};
extern struct soft_stats soft_stats;

#endif
