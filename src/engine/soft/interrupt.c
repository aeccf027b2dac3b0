/* Events in system mode (Intel SDM vol. 3, ch. 6): exceptions and interrupts delivered
 * through the long-mode IDT with IST and privilege stack switches, the double-fault rules and
 * the triple fault, NMI blocking, iret, and the fast system calls syscall/sysret.
 *
 * Interrupts are taken between blocks (soft_check_interrupts): an interrupt controller sets
 * c->intr_request from any thread and the run loop looks at it before the next block. Delivery
 * in legacy protected mode and real mode fails closed: Linux enters long mode before it
 * enables interrupts or can fault. */
#include <Zydis/Zydis.h>

#include "engine/soft/soft.h"

#define RSP_REF   ((gpr_ref)(GPR_RSP * 8))

#define FL_RF     (1ull << 16)
#define FL_VM     (1ull << 17)
#define FL_NT     (1ull << 14)
#define FL_AC     (1ull << 18)
#define FL_VIF    (1ull << 19)
#define FL_VIP    (1ull << 20)
#define FL_ID     (1ull << 21)
#define FL_IOPL   (3ull << 12)

#define GATE_INTR 0xe
#define GATE_TRAP 0xf

static bool has_error_code(unsigned vector)
{
	switch (vector) {
	case EXC_DF:
	case EXC_TS:
	case EXC_NP:
	case EXC_SS:
	case EXC_GP:
	case EXC_PF:
	case EXC_AC:
		return true;
	default:
		return false;
	}
}

/* ---- delivery -------------------------------------------------------------------------- */

/* The stack pointer a TSS holds at offset off (RSPn or ISTn). */
static uint64_t tss_rsp(struct soft_cpu *c, unsigned off, uint32_t ext)
{
	const struct cpu_segment *tr = &c->seg[SEG_TR];
	if (tr->unusable || !tr->present || off + 7 > tr->limit)
		soft_fault(c, EXC_TS, (tr->selector & ~3u) | ext);
	return soft_sv_load(c, tr->base + off, 8);
}

void soft_deliver(struct soft_cpu *c, unsigned vector, uint32_t error, bool has_error,
		  enum soft_event_kind kind)
{
	if (!(c->efer & EFER_LMA))
		soft_fail(c,
			  "exception or interrupt %u outside long mode: the soft engine delivers "
			  "events through the long-mode IDT only",
			  vector);
	uint32_t ext = kind == EV_SOFT ? 0 : 1;
	uint32_t idt_err = vector * 8 + 2 + ext;
	if ((uint64_t)vector * 16 + 15 > c->idt.limit)
		soft_fault(c, EXC_GP, idt_err);
	uint64_t lo = soft_sv_load(c, c->idt.base + (uint64_t)vector * 16, 8);
	uint64_t hi = soft_sv_load(c, c->idt.base + (uint64_t)vector * 16 + 8, 8);
	unsigned type = (lo >> 40) & 0x1f, gate_dpl = (lo >> 45) & 3;
	unsigned cpl = soft_cpl(c);
	if (type != GATE_INTR && type != GATE_TRAP)
		soft_fault(c, EXC_GP, idt_err);
	if (kind == EV_SOFT && gate_dpl < cpl)
		soft_fault(c, EXC_GP, vector * 8 + 2);
	if (!((lo >> 47) & 1))
		soft_fault(c, EXC_NP, idt_err);
	uint16_t sel = (uint16_t)(lo >> 16);
	uint64_t target = (lo & 0xffff) | ((lo >> 32) & 0xffff0000) | (hi << 32);
	unsigned ist = (lo >> 32) & 7;

	/* The handler's code segment: a present 64-bit code segment at or above the CPL. */
	if ((sel & ~3u) == 0)
		soft_fault(c, EXC_GP, ext);
	uint64_t d, daddr;
	if (!soft_read_desc(c, sel, &d, &daddr))
		soft_fault(c, EXC_GP, (sel & ~3u) | ext);
	bool code = ((d >> 44) & 1) && ((d >> 43) & 1), conforming = (d >> 42) & 1;
	unsigned dpl = (d >> 45) & 3;
	if (!code || dpl > cpl || !((d >> 53) & 1) || ((d >> 54) & 1))
		soft_fault(c, EXC_GP, (sel & ~3u) | ext);
	if (!((d >> 47) & 1))
		soft_fault(c, EXC_NP, (sel & ~3u) | ext);
	unsigned new_cpl = conforming ? cpl : dpl;

	/* The stack: IST if the gate names one, else RSPn of the TSS when the privilege rises. */
	uint64_t old_rsp = c->gpr[GPR_RSP], rsp = old_rsp;
	uint16_t old_ss = c->seg[SEG_SS].selector;
	if (ist)
		rsp = tss_rsp(c, 0x24 + (ist - 1) * 8, ext);
	else if (new_cpl < cpl)
		rsp = tss_rsp(c, 4 + new_cpl * 8, ext);
	if (!soft_canonical(rsp))
		soft_fault(c, EXC_SS, ext);
	if (!soft_canonical(target))
		soft_fault(c, EXC_GP, ext);
	rsp &= ~0xfull;

	uint64_t frame[6];
	unsigned n = 0;
	uint64_t flags = soft_flags(c);
	if (has_error)
		frame[n++] = error;
	frame[n++] = c->rip;
	frame[n++] = c->seg[SEG_CS].selector;
	frame[n++] = flags;
	frame[n++] = old_rsp;
	frame[n++] = old_ss;
	/* Push at the handler's privilege (faults here are delivery faults), highest address
	 * first so a fault leaves nothing half-done. */
	if (new_cpl < 3)
		soft_sv_begin(c);
	for (unsigned i = n; i-- > 0;)
		soft_store(c, rsp - (uint64_t)(n - i) * 8, frame[i], 8);
	soft_sv_end(c);

	if (new_cpl < cpl) {
		/* A null SS with RPL = the new CPL, as the SDM specifies for long mode. */
		c->seg[SEG_SS] = (struct cpu_segment){
		    .selector = (uint16_t)new_cpl, .unusable = 1, .dpl = (uint8_t)new_cpl};
	}
	uint64_t cleared = FL_TF | FL_NT | FL_RF | FL_VM | (type == GATE_INTR ? FL_IF : 0);
	c->rflags = (flags & ~cleared) | RFLAGS_FIXED;
	c->lf.op = LF_NONE;
	if (!(d & (1ull << 40))) {
		soft_sv_begin(c);
		soft_store(c, daddr, d | (1ull << 40), 8);
		soft_sv_end(c);
	}
	soft_load_cs(c, sel, d | (1ull << 40), new_cpl);
	c->gpr[GPR_RSP] = rsp - (uint64_t)n * 8;
	c->rip = target;
	c->stop_block = true;
	if (vector == EXC_NMI && kind == EV_EXT)
		c->nmi_blocked = true;
}

/* The classes of the double-fault rules (SDM vol. 3, table 6-5). */
enum exc_class { BENIGN, CONTRIBUTORY, PAGE_FAULT, DOUBLE_FAULT };

static enum exc_class exc_class(int vector, enum soft_event_kind kind)
{
	if (kind != EV_FAULT)
		return BENIGN;
	switch (vector) {
	case EXC_DE:
	case EXC_TS:
	case EXC_NP:
	case EXC_SS:
	case EXC_GP:
		return CONTRIBUTORY;
	case EXC_PF:
		return PAGE_FAULT;
	case EXC_DF:
		return DOUBLE_FAULT;
	default:
		return BENIGN;
	}
}

bool soft_deliver_exception(struct soft_cpu *c)
{
	int vector = c->exc_vector;
	uint32_t error = c->exc_error;
	enum soft_event_kind kind = c->exc_kind;
	if (c->event_vector >= 0) {
		/* A fault while delivering an earlier event. */
		enum exc_class first = exc_class(c->event_vector, c->event_kind);
		enum exc_class second = exc_class(vector, kind);
		if (first == DOUBLE_FAULT && second != BENIGN) {
			c->event_vector = -1;
			c->exit = SOFT_EXIT_SHUTDOWN;
			return false;
		}
		if ((first == CONTRIBUTORY && second == CONTRIBUTORY) ||
		    (first == PAGE_FAULT && second != BENIGN)) {
			vector = EXC_DF;
			error = 0;
			kind = EV_FAULT;
		}
	}
	if (kind == EV_FAULT && vector == EXC_PF)
		soft_stats.page_faults++;
	c->event_vector = vector;
	c->event_kind = kind;
	soft_deliver(c, (unsigned)vector, error,
		     kind == EV_FAULT && has_error_code((unsigned)vector), kind);
	c->event_vector = -1;
	c->exit = SOFT_EXIT_NONE;
	return true;
}

void soft_check_interrupts(struct soft_cpu *c)
{
	if (c->intr_shadow)
		return;
	/* Between instructions: a fault while delivering rewinds to where the code goes on. */
	c->insn_start = c->rip;
	if (c->nmi_request && !c->nmi_blocked) {
		c->nmi_request = 0;
		c->event_vector = EXC_NMI;
		c->event_kind = EV_EXT;
		soft_deliver(c, EXC_NMI, 0, false, EV_EXT);
		c->event_vector = -1;
		return;
	}
	if (!(c->rflags & FL_IF) || !c->irq.intack)
		return;
	__atomic_store_n(&c->intr_request, 0, __ATOMIC_RELAXED);
	int v = c->irq.intack(c->irq.opaque);
	if (v < 0)
		return;
	c->event_vector = v;
	c->event_kind = EV_EXT;
	soft_deliver(c, (unsigned)v, 0, false, EV_EXT);
	c->event_vector = -1;
	/* Another may be waiting behind it: look again once the handler re-enables them. */
	c->intr_request = 1;
}

/* ---- iret ---------------------------------------------------------------------------------- */

/* iret in long mode (IRETQ, or IRETD/IRET with a smaller operand size): pops RIP, CS, RFLAGS,
 * RSP and SS, returning to the same or an outer privilege level. */
static void h_iret(struct soft_cpu *c, const struct insn *in)
{
	unsigned os = in->osize, cpl = soft_cpl(c);
	if (!(c->efer & EFER_LMA)) {
		if (!(c->cr0 & CR0_PE))
			soft_fail(c, "iret in real mode is not supported by the soft engine");
		soft_fail(c, "iret in legacy protected mode is not supported by the soft engine");
	}
	if (c->rflags & FL_NT)
		soft_fault(c, EXC_GP, 0); /* a task return: no task switches in long mode */
	uint64_t sp = c->gpr[GPR_RSP];
	if (!c->seg[SEG_CS].l)
		sp &= c->seg[SEG_SS].db ? 0xffffffffull : 0xffffull;
	uint64_t rip = soft_load(c, sp, os);
	uint16_t cs_sel = (uint16_t)soft_load(c, sp + os, 2);
	uint64_t flags = soft_load(c, sp + 2 * (uint64_t)os, os);
	uint64_t rsp = soft_load(c, sp + 3 * (uint64_t)os, os);
	uint16_t ss_sel = (uint16_t)soft_load(c, sp + 4 * (uint64_t)os, 2);
	unsigned rpl = cs_sel & 3;

	if ((cs_sel & ~3u) == 0)
		soft_fault(c, EXC_GP, 0);
	if (rpl < cpl)
		soft_fault(c, EXC_GP, cs_sel & ~3u);
	uint64_t d, daddr;
	if (!soft_read_desc(c, cs_sel, &d, &daddr))
		soft_fault(c, EXC_GP, cs_sel & ~3u);
	bool code = ((d >> 44) & 1) && ((d >> 43) & 1), conforming = (d >> 42) & 1;
	unsigned dpl = (d >> 45) & 3;
	if (!code || (conforming ? dpl > rpl : dpl != rpl))
		soft_fault(c, EXC_GP, cs_sel & ~3u);
	if (!((d >> 47) & 1))
		soft_fault(c, EXC_NP, cs_sel & ~3u);
	bool to64 = (d >> 53) & 1;
	if (to64 && !soft_canonical(rip))
		soft_fault(c, EXC_GP, 0);
	if (!to64)
		rip &= 0xffffffffull;

	/* SS: a null selector only for a 64-bit return below CPL 3. */
	struct cpu_segment ss = {.selector = ss_sel, .unusable = 1, .dpl = (uint8_t)rpl};
	if ((ss_sel & ~3u) == 0) {
		if (!to64 || rpl == 3 || (ss_sel & 3) != rpl)
			soft_fault(c, EXC_GP, 0);
	} else {
		uint64_t sd, saddr;
		if ((ss_sel & 3) != rpl || !soft_read_desc(c, ss_sel, &sd, &saddr))
			soft_fault(c, EXC_GP, ss_sel & ~3u);
		unsigned stype = (sd >> 40) & 0x1f;
		if ((stype & 0x1a) != 0x12 || ((sd >> 45) & 3) != rpl)
			soft_fault(c, EXC_GP, ss_sel & ~3u);
		if (!((sd >> 47) & 1))
			soft_fault(c, EXC_SS, ss_sel & ~3u);
		soft_seg_from_desc(&ss, ss_sel, sd);
	}

	/* Which flags the return may change depends on the privilege it runs at. */
	uint64_t mask = FL_ARITH | FL_TF | FL_DF | FL_NT | FL_RF | FL_AC | FL_ID;
	if (cpl == 0)
		mask |= FL_IOPL | FL_VIF | FL_VIP;
	if (cpl <= ((c->rflags >> 12) & 3))
		mask |= FL_IF;
	if (os == 2)
		mask &= 0xffff;
	uint64_t old = soft_flags(c);
	c->rflags = (old & ~mask) | (flags & mask) | RFLAGS_FIXED;
	c->lf.op = LF_NONE;

	soft_load_cs(c, cs_sel, d, rpl);
	c->seg[SEG_SS] = ss;
	c->gpr[GPR_RSP] = os == 8 ? rsp : rsp & size_mask(os);
	c->rip = rip;
	if (rpl > cpl) {
		/* Data segments the outer level may not use become null. */
		static const unsigned data[] = {SEG_ES, SEG_DS, SEG_FS, SEG_GS};
		for (unsigned i = 0; i < 4; i++) {
			struct cpu_segment *s = &c->seg[data[i]];
			bool conf_code = (s->type & 0xc) == 0xc;
			if (!s->unusable && s->s && !conf_code && s->dpl < rpl) {
				uint64_t base = s->base;
				*s = (struct cpu_segment){.unusable = 1};
				if (data[i] == SEG_FS || data[i] == SEG_GS)
					s->base = base; /* the bases are MSRs in 64-bit mode */
			}
		}
	}
	c->nmi_blocked = false;
	c->stop_block = true;
}

/* ---- syscall / sysret ---------------------------------------------------------------------- */

static void flat_segment(struct cpu_segment *s, uint16_t sel, bool code, bool l, unsigned dpl)
{
	*s = (struct cpu_segment){.selector = sel,
				  .base = 0,
				  .limit = 0xffffffff,
				  .type = code ? 0xb : 0x3,
				  .s = 1,
				  .dpl = (uint8_t)dpl,
				  .present = 1,
				  .l = l,
				  .db = !l || !code,
				  .g = 1};
}

static void h_syscall_sys(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	if (c->user_mode)
		soft_exit(c, SOFT_EXIT_SYSCALL);
	if (!(c->efer & EFER_SCE) || !(c->efer & EFER_LMA))
		soft_fault(c, EXC_UD, 0);
	uint16_t sel = (uint16_t)(c->star >> 32);
	uint64_t flags = soft_flags(c);
	c->gpr[GPR_RCX] = c->rip;
	c->gpr[GPR_R11] = flags & ~FL_RF;
	c->rip = c->seg[SEG_CS].l ? c->lstar : c->cstar;
	c->rflags = (flags & ~c->sfmask & ~FL_RF) | RFLAGS_FIXED;
	c->lf.op = LF_NONE;
	flat_segment(&c->seg[SEG_SS], (uint16_t)(sel + 8), false, false, 0);
	flat_segment(&c->seg[SEG_CS], sel & 0xfffc, true, true, 0);
	soft_cpl_changed(c);
}

static void h_sysret(struct soft_cpu *c, const struct insn *in)
{
	if (!(c->efer & EFER_SCE))
		soft_fault(c, EXC_UD, 0);
	if (soft_cpl(c) != 0 || !(c->efer & EFER_LMA) || !c->seg[SEG_CS].l)
		soft_fault(c, EXC_GP, 0);
	bool to64 = in->prefix & PFX_REX_W;
	uint64_t rip = c->gpr[GPR_RCX];
	if (to64 && !soft_canonical(rip))
		soft_fault(c, EXC_GP, 0);
	uint16_t sel = (uint16_t)(c->star >> 48);
	c->rip = to64 ? rip : (uint32_t)rip;
	c->rflags = (c->gpr[GPR_R11] & 0x3c7fd7) | RFLAGS_FIXED;
	c->lf.op = LF_NONE;
	flat_segment(&c->seg[SEG_CS], (uint16_t)((to64 ? sel + 16 : sel) | 3), true, to64, 3);
	/* SS gets the selector; its cached descriptor stays flat (the SDM's fixed values). */
	flat_segment(&c->seg[SEG_SS], (uint16_t)((sel + 8) | 3), false, false, 3);
	soft_cpl_changed(c);
}

void soft_register_interrupt(void)
{
	soft_register_fn(ZYDIS_MNEMONIC_IRET, h_iret);
	soft_register_fn(ZYDIS_MNEMONIC_IRETD, h_iret);
	soft_register_fn(ZYDIS_MNEMONIC_IRETQ, h_iret);
	soft_register_fn(ZYDIS_MNEMONIC_SYSCALL, h_syscall_sys);
	soft_register_fn(ZYDIS_MNEMONIC_SYSRET, h_sysret);
}
