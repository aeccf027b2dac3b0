/* The soft CPU's life cycle and run loop. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/soft/cache.h"
#include "engine/soft/jit.h"
#include "util/log.h"

uint64_t soft_host_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- leaving the loop -------------------------------------------------------------------- */

void soft_exit(struct soft_cpu *c, enum soft_exit why)
{
	c->exit = why;
	longjmp(c->unwind, 1);
}

void soft_fault(struct soft_cpu *c, int vector, uint32_t error)
{
	c->rip = c->insn_start;
	c->exc_vector = vector;
	c->exc_error = error;
	c->exc_kind = EV_FAULT;
	/* User mode returns it to the caller; system mode delivers it through the IDT when the
	 * run loop catches it (soft_cpu_run). */
	soft_exit(c, SOFT_EXIT_EXCEPTION);
}

void soft_page_fault(struct soft_cpu *c, uint64_t addr, uint32_t error)
{
	c->exc_addr = addr;
	c->cr2 = addr;
	if (c->user_mode)
		soft_stats.page_faults++; /* system mode counts those it delivers */
	soft_fault(c, EXC_PF, error);
}

void soft_fail(struct soft_cpu *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->fail_msg, sizeof(c->fail_msg), fmt, ap);
	va_end(ap);
	c->rip = c->insn_start;
	soft_exit(c, SOFT_EXIT_FAIL);
}

const struct insn *soft_current_insn(const struct soft_cpu *c)
{
	const struct block *b = c->cur_block;
	if (!b)
		return NULL;
	uint64_t pc = c->cur_block_va;
	for (unsigned i = 0; i < b->n; pc += b->insns[i].len, i++)
		if (pc == c->insn_start)
			return &b->insns[i];
	return NULL;
}

/* Unimplemented instructions are logged once per address, with their bytes, so gaps are found
 * by reading a log rather than by a crash. */
void soft_unimplemented(struct soft_cpu *c, const struct insn *in)
{
	enum { SEEN = 512 };
	static _Atomic uint64_t seen[SEEN];
	uint64_t rip = c->insn_start;
	unsigned slot = (unsigned)((rip * 0x9e3779b97f4a7c15ull) >> 55) % SEEN;
	if (atomic_exchange(&seen[slot], rip) != rip) {
		char hex[3 * 16] = "";
		size_t off = 0;
		for (unsigned i = 0; i < in->len && i < 15; i++) {
			uint64_t b = 0;
			/* The bytes were readable when decoded; read them without faulting now. */
			struct tlb_entry *e = &c->tlb[((rip + i) >> 12) & (TLB_SIZE - 1)];
			if (e->tag_exec == ((rip + i) & ~0xfffull))
				b = *(const uint8_t *)(rip + i + e->addend);
			off += (size_t)snprintf(hex + off, sizeof(hex) - off, "%s%02x",
						i ? " " : "", (unsigned)b);
		}
		log_warn("soft engine: unimplemented instruction %s (%s) at rip 0x%llx: #UD",
			 soft_mnemonic_name(in->mnemonic), hex, (unsigned long long)rip);
	}
	soft_fault(c, EXC_UD, 0);
}

/* ---- blocks ------------------------------------------------------------------------------ */

static unsigned decode_mode(const struct soft_cpu *c)
{
	if ((c->efer & EFER_LMA) && c->seg[SEG_CS].l)
		return SOFT_MODE_64;
	return c->seg[SEG_CS].db ? SOFT_MODE_32 : SOFT_MODE_16;
}

static struct block *build_block(struct soft_cpu *c, uint64_t va, uint64_t gpa, unsigned mode)
{
	struct insn tmp[BLOCK_MAX];
	unsigned n = 0;
	bool end = false;
	uint64_t pc = va;
	uint64_t last_page = gpa & ~0xfffull;
	while (!end && n < BLOCK_MAX) {
		/* Only the first instruction may fault while being fetched: a later one that might
		 * reach into the next page starts a block of its own, so its fault (if any) comes
		 * when it is executed. */
		if (n > 0 && (pc & 0xfff) > 0x1000 - 16)
			break;
		int len = soft_decode(c, pc, mode, &tmp[n], &end);
		n++;
		uint64_t next = pc + (uint64_t)len;
		if ((next - 1) >> 12 != pc >> 12) {
			/* Crossed a page: the rest of the bytes came from another physical page. */
			struct tlb_entry *e = &c->tlb[((next - 1) >> 12) & (TLB_SIZE - 1)];
			last_page = e->gpa_page;
			end = true;
		}
		pc = next;
		if ((pc & 0xfff) == 0)
			end = true;
	}
	struct block *b = malloc(sizeof(*b) + n * sizeof(struct insn));
	if (!b)
		soft_fail(c, "out of memory for decoded code");
	b->gpa = gpa;
	b->mode = mode;
	b->n = n;
	b->pages[0] = gpa & ~0xfffull;
	b->npages = last_page != b->pages[0] ? 2 : 1;
	b->pages[1] = last_page;
	memcpy(b->insns, tmp, n * sizeof(struct insn));
	b->jit = NULL;
	b->jit_link = NULL;
	if (c->jit) {
		b->jit = soft_jit_translate(c->jit, b);
		if (!b->jit && mode == SOFT_MODE_64) {
			/* The code space is full: drop every block (none is running between
			 * blocks) and start it again. */
			soft_cache_flush(c->cache);
			soft_cache_reap(c->cache);
			soft_jit_reset(c->jit);
			b->jit = soft_jit_translate(c->jit, b);
		}
	}
	/* A page that already holds code has no TLB entry letting writes through (the fill path
	 * sees to that): only a page's first block needs the TLBs searched. */
	bool fresh0 = !soft_cache_page_has_code(c->cache, b->pages[0]);
	bool fresh1 = b->npages > 1 && !soft_cache_page_has_code(c->cache, b->pages[1]);
	if (!soft_cache_insert(c->cache, b)) {
		free(b);
		soft_fail(c, "out of memory for decoded code");
	}
	if (fresh0)
		soft_tlb_protect_code_page(c, b->pages[0]);
	if (fresh1)
		soft_tlb_protect_code_page(c, b->pages[1]);
	soft_stats.blocks_decoded++;
	return b;
}

/* The block at RIP: the jump cache (by virtual address) first, then the physical cache. */
static inline struct block *find_block(struct soft_cpu *c)
{
	uint64_t va = c->rip;
	struct jc_entry *j = &c->jc[(va >> 2) & (JC_SIZE - 1)];
	if (likely(j->va == va && j->epoch == c->epoch))
		return j->block;
	c->insn_start = va;
	soft_mem(c, va, 1, ACC_EXEC);
	const struct tlb_entry *e = &c->tlb[(va >> 12) & (TLB_SIZE - 1)];
	uint64_t gpa = e->gpa_page | (va & 0xfff);
	unsigned mode = decode_mode(c);
	struct block *b = soft_cache_find(c->cache, gpa, mode);
	if (!b)
		b = build_block(c, va, gpa, mode);
	*j = (struct jc_entry){.va = va, .epoch = c->epoch, .block = b};
	return b;
}

/* Between blocks: the rare things. Returns false when the run must stop. */
static bool between_blocks(struct soft_cpu *c)
{
	if (c->intr_request | c->nmi_request)
		soft_check_interrupts(c);
	if (c->exit_request) {
		c->exit_request = 0;
		c->exit = SOFT_EXIT_STOP;
		return false;
	}
	if (c->icount_limit && c->icount >= c->icount_limit) {
		c->exit = SOFT_EXIT_STOP;
		return false;
	}
	soft_cache_reap(c->cache);
	return true;
}

/* Out of line on purpose: inlined into soft_cpu_run, which calls setjmp, it would keep its
 * variables in memory and reload them for every instruction. */
__attribute__((noinline)) static void run_blocks(struct soft_cpu *c)
{
	struct soft_cache *cache = c->cache;
	for (;;) {
		/* An interrupt delivered between blocks, or a fault while finding the next block,
		 * belongs to no block (the unwind must not take back instructions of the last). */
		c->cur_block = NULL;
		if (unlikely(c->exit_request | (cache->dead != NULL) | (c->icount_limit != 0) |
			     c->intr_request | c->nmi_request) &&
		    !between_blocks(c))
			return;
		c->intr_shadow = false; /* the instruction after sti runs before any interrupt */
		const struct block *b = find_block(c);
		uint64_t va = c->rip, epoch = c->epoch;
		const struct insn *end = b->insns + b->n;
		if (unlikely(c->icount_limit) && c->icount_limit - c->icount < b->n)
			end = b->insns + (c->icount_limit - c->icount);
		c->cur_block = b;
		c->cur_block_va = va;
		/* NULL: the whole block (translated code never sets it when it chains on). */
		c->cur_end = end == b->insns + b->n ? NULL : end;
		uint64_t count = (uint64_t)(end - b->insns);
		/* A block that branches back to its own start (a loop) runs again without a
		 * lookup, as long as nothing that a lookup would check has changed. Instructions
		 * are counted a pass at a time; what a pass did not run is taken back after it (or
		 * by soft_cpu_run when a handler unwinds). */
		do {
			const struct insn *in = b->insns;
			c->stop_block = false;
			c->icount += count;
			if (likely(b->jit != NULL) && count == b->n) {
				/* It may chain on into other blocks: the pass ends with no
				 * instruction of this one left to take back. */
				c->icount -= b->jit(c);
				in = end;
			} else {
				do {
					c->insn_start = c->rip;
					c->rip += in->len;
					in->fn(c, in);
				} while (++in < end && !c->stop_block);
			}
			if (unlikely(in != end))
				c->icount -= (uint64_t)(end - in);
		} while (c->rip == va && !c->stop_block && c->epoch == epoch &&
			 !(c->exit_request | c->icount_limit | c->intr_request | c->nmi_request));
	}
}

enum soft_exit soft_cpu_run(struct soft_cpu *c)
{
	c->exit = SOFT_EXIT_NONE;
	c->icount_limit = c->insn_budget ? c->icount + c->insn_budget : 0;
	c->cur_block = NULL;
	if (setjmp(c->unwind)) {
		/* A handler left through soft_exit. The pass counted its whole block: take back
		 * the instruction that exited and those after it, then count the one that exited
		 * if it retired (a fault or failure did not). */
		const struct insn *cur = soft_current_insn(c);
		if (cur)
			c->icount -=
			    (uint64_t)((c->cur_end ? c->cur_end
						   : c->cur_block->insns + c->cur_block->n) -
				       cur);
		if (c->exit != SOFT_EXIT_EXCEPTION && c->exit != SOFT_EXIT_FAIL)
			c->icount++;
		c->cur_block = NULL;
		soft_release_locks(c);
		if (c->sv_access)
			soft_sv_end(c);
		/* System mode: the exception goes to the guest's handler and the run goes on
		 * (a fault while delivering it comes back here, to the double-fault rules). A
		 * delivery counts against the budget like an instruction: a handler that faults
		 * again at once retires nothing, and the budget must still end the run. */
		if (c->exit == SOFT_EXIT_EXCEPTION && !c->user_mode && soft_deliver_exception(c)) {
			if (c->icount_limit && c->icount_limit <= c->icount + 1) {
				c->exit = SOFT_EXIT_STOP;
			} else {
				if (c->icount_limit)
					c->icount_limit--;
				run_blocks(c);
			}
		}
	} else {
		run_blocks(c);
	}
	if (c->icount_limit)
		c->insn_budget = c->icount_limit > c->icount ? c->icount_limit - c->icount : 0;
	return c->exit;
}

void soft_cpu_stop(struct soft_cpu *c)
{
	c->exit_request = 1;
}

/* ---- creation and state ------------------------------------------------------------------ */

static void x87_reset(struct x87 *f)
{
	memset(f, 0, sizeof(*f));
	f->fcw = 0x037f;
	f->ftw_full = 0xffff; /* all empty */
}

struct soft_cpu *soft_cpu_create(const struct soft_mem_ops *mem, bool user_mode)
{
	soft_decode_init();
	struct soft_cpu *c = aligned_alloc(64, (sizeof(struct soft_cpu) + 63) & ~(size_t)63);
	if (!c)
		return NULL;
	memset(c, 0, sizeof(*c));
	c->cache = soft_cache_create(&c->epoch);
	if (!c->cache) {
		free(c);
		return NULL;
	}
	/* FERRY_SOFT_JIT=0 interprets everything (to compare the two, or to rule the translator
	 * out); without code space the engine interprets too, only slower. */
	const char *jit = getenv("FERRY_SOFT_JIT");
	if (!jit || strcmp(jit, "0") != 0)
		c->jit = soft_jit_create();
	c->mem = *mem;
	c->user_mode = user_mode;
	soft_tlb_flush(c);
	for (unsigned t = 0; t < 2; t++)
		for (unsigned i = 0; i < JC_SIZE; i++)
			c->jcs[t][i].va = ~0ull;
	c->event_vector = -1;
	soft_cpl_changed(c);
	c->mxcsr = 0x1f80;
	x87_reset(&c->fpu);
	if (user_mode) {
		/* A 64-bit process at CPL 3, as Linux starts one. */
		c->seg[SEG_CS] = (struct cpu_segment){.selector = 0x33,
						      .type = 0xb,
						      .s = 1,
						      .dpl = 3,
						      .present = 1,
						      .l = 1,
						      .g = 1,
						      .limit = 0xffffffff};
		struct cpu_segment data = {.selector = 0x2b,
					   .type = 0x3,
					   .s = 1,
					   .dpl = 3,
					   .present = 1,
					   .db = 1,
					   .g = 1,
					   .limit = 0xffffffff};
		c->seg[SEG_SS] = c->seg[SEG_DS] = c->seg[SEG_ES] = c->seg[SEG_FS] = c->seg[SEG_GS] =
		    data;
		c->cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
		c->cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
		c->efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
		c->rflags = RFLAGS_FIXED | RFLAGS_IF;
		soft_cpl_changed(c);
	} else {
		struct cpu_state *st = malloc(sizeof(*st));
		if (!st) {
			soft_cpu_destroy(c);
			return NULL;
		}
		cpu_state_reset(st, true);
		soft_cpu_set_state(c, st);
		free(st);
	}
	return c;
}

void soft_cpu_destroy(struct soft_cpu *c)
{
	if (!c)
		return;
	soft_cache_destroy(c->cache);
	soft_jit_destroy(c->jit);
	free(c);
}

static const struct {
	uint32_t index;
	size_t off;
} msr_fields[] = {
    {MSR_STAR, offsetof(struct soft_cpu, star)},
    {MSR_LSTAR, offsetof(struct soft_cpu, lstar)},
    {MSR_CSTAR, offsetof(struct soft_cpu, cstar)},
    {MSR_SFMASK, offsetof(struct soft_cpu, sfmask)},
    {MSR_KERNEL_GS_BASE, offsetof(struct soft_cpu, kernel_gs_base)},
    {MSR_TSC_AUX, offsetof(struct soft_cpu, tsc_aux)},
    {MSR_IA32_PAT, offsetof(struct soft_cpu, pat)},
    {MSR_IA32_MISC_ENABLE, offsetof(struct soft_cpu, misc_enable)},
    {MSR_IA32_SYSENTER_CS, offsetof(struct soft_cpu, sysenter_cs)},
    {MSR_IA32_SYSENTER_ESP, offsetof(struct soft_cpu, sysenter_esp)},
    {MSR_IA32_SYSENTER_EIP, offsetof(struct soft_cpu, sysenter_eip)},
    {0x4b564d00, offsetof(struct soft_cpu, kvm_wall_clock)},
    {0x4b564d01, offsetof(struct soft_cpu, kvm_system_time)},
};

void soft_cpu_get_state(struct soft_cpu *c, struct cpu_state *st)
{
	memset(st, 0, sizeof(*st));
	memcpy(st->gpr, c->gpr, sizeof(st->gpr));
	st->rip = c->rip;
	st->rflags = soft_flags(c);
	memcpy(st->seg, c->seg, sizeof(st->seg));
	st->seg[SEG_FS].base = c->seg[SEG_FS].base;
	st->gdt = c->gdt;
	st->idt = c->idt;
	st->cr0 = c->cr0;
	st->cr2 = c->cr2;
	st->cr3 = c->cr3;
	st->cr4 = c->cr4;
	st->cr8 = c->cr8;
	st->efer = c->efer;
	st->apic_base = c->apic_base;
	memcpy(st->dr, c->dr, sizeof(st->dr));
	st->dr6 = c->dr6;
	st->dr7 = c->dr7;
	st->xcr0 = c->xcr0 ? c->xcr0 : 1;
	soft_fxsave_image(c, st->xsave);
	st->xsave[512] = 0x3; /* XSTATE_BV: the x87 and SSE state are in the image, not at init */
	for (size_t i = 0; i < sizeof(msr_fields) / sizeof(msr_fields[0]); i++)
		cpu_state_set_msr(st, msr_fields[i].index,
				  *(const uint64_t *)((const uint8_t *)c + msr_fields[i].off));
	uint64_t tsc = soft_tsc(c);
	cpu_state_set_msr(st, MSR_IA32_TSC, tsc);
	st->mp_state = MP_RUNNABLE;
}

void soft_cpu_set_state(struct soft_cpu *c, const struct cpu_state *st)
{
	memcpy(c->gpr, st->gpr, sizeof(c->gpr));
	c->rip = st->rip;
	c->lf.op = LF_NONE;
	c->rflags = st->rflags | RFLAGS_FIXED;
	memcpy(c->seg, st->seg, sizeof(c->seg));
	c->gdt = st->gdt;
	c->idt = st->idt;
	c->cr0 = st->cr0;
	c->cr2 = st->cr2;
	c->cr3 = st->cr3;
	c->cr4 = st->cr4;
	c->cr8 = st->cr8;
	c->efer = st->efer;
	c->apic_base = st->apic_base;
	memcpy(c->dr, st->dr, sizeof(c->dr));
	c->dr6 = st->dr6;
	c->dr7 = st->dr7;
	c->xcr0 = st->xcr0;
	soft_fxrstor_image(c, st->xsave);
	for (uint32_t i = 0; i < st->nmsrs && i < CPU_STATE_MAX_MSRS; i++) {
		uint32_t idx = st->msrs[i].index;
		if (idx == MSR_IA32_TSC)
			c->tsc_offset = st->msrs[i].value - soft_host_ns();
		for (size_t k = 0; k < sizeof(msr_fields) / sizeof(msr_fields[0]); k++)
			if (msr_fields[k].index == idx)
				*(uint64_t *)((uint8_t *)c + msr_fields[k].off) = st->msrs[i].value;
	}
	/* Translations and decoded code may depend on any of this. */
	c->event_vector = -1;
	c->sv_access = false;
	soft_cpl_changed(c);
	soft_tlb_flush(c);
}
