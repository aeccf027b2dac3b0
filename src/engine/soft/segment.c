/* Segmentation in protected and long mode (Intel SDM vol. 3, ch. 3 and 5): reading
 * descriptors from the GDT and LDT, loading segment registers with the architectural checks
 * (mov/pop Sreg, far jmp/call/ret), and the system-segment loads (ltr, lldt).
 *
 * Descriptor-table accesses are supervisor accesses at any CPL (c->sv_access). What ferry does
 * not model fails closed with the reason: call gates, task gates and task switches, and far
 * returns to an outer privilege level (Linux uses none of them). */
#include <Zydis/Zydis.h>

#include "engine/soft/soft.h"

#define DESC_ACCESSED (1ull << 40)
#define RSP_REF       ((gpr_ref)(GPR_RSP * 8))

static bool long_mode64(const struct soft_cpu *c)
{
	return (c->efer & EFER_LMA) && c->seg[SEG_CS].l;
}

bool soft_read_desc(struct soft_cpu *c, uint16_t sel, uint64_t *desc, uint64_t *addr)
{
	uint64_t base, limit;
	if (sel & 4) {
		const struct cpu_segment *ldt = &c->seg[SEG_LDT];
		if (ldt->unusable || !ldt->present)
			return false;
		base = ldt->base;
		limit = ldt->limit;
	} else {
		base = c->gdt.base;
		limit = c->gdt.limit;
	}
	uint64_t off = sel & ~7u;
	if (off + 7 > limit)
		return false;
	*addr = base + off;
	*desc = soft_sv_load(c, *addr, 8);
	return true;
}

void soft_seg_from_desc(struct cpu_segment *s, uint16_t sel, uint64_t d)
{
	uint32_t limit = (uint32_t)((d & 0xffff) | ((d >> 32) & 0xf0000));
	s->selector = sel;
	s->base = ((d >> 16) & 0xffffff) | ((d >> 32) & 0xff000000);
	s->g = (d >> 55) & 1;
	s->limit = s->g ? (limit << 12) | 0xfff : limit;
	s->type = (d >> 40) & 0xf;
	s->s = (d >> 44) & 1;
	s->dpl = (d >> 45) & 3;
	s->present = (d >> 47) & 1;
	s->avl = (d >> 52) & 1;
	s->l = (d >> 53) & 1;
	s->db = (d >> 54) & 1;
	s->unusable = 0;
}

/* The processor sets a code or data descriptor's accessed bit when it loads it. */
static void set_accessed(struct soft_cpu *c, uint64_t addr, uint64_t d)
{
	if (d & DESC_ACCESSED)
		return;
	soft_sv_begin(c);
	soft_store(c, addr, d | DESC_ACCESSED, 8);
	soft_sv_end(c);
}

static bool is_code(uint64_t d)
{
	return ((d >> 44) & 1) && ((d >> 43) & 1);
}

static unsigned desc_dpl(uint64_t d)
{
	return (d >> 45) & 3;
}

static bool desc_present(uint64_t d)
{
	return (d >> 47) & 1;
}

/* ---- data and stack segments ------------------------------------------------------------ */

void soft_load_seg(struct soft_cpu *c, unsigned seg, uint16_t sel)
{
	struct cpu_segment *s = &c->seg[seg];
	unsigned cpl = soft_cpl(c), rpl = sel & 3;
	if ((sel & ~3u) == 0) {
		/* A null selector: never into SS, except in 64-bit mode below CPL 3 with RPL = CPL. */
		if (seg == SEG_SS && !(long_mode64(c) && cpl < 3 && rpl == cpl))
			soft_fault(c, EXC_GP, 0);
		/* Intel processors clear the base with a null load (Linux knows AMD's keep it). */
		*s = (struct cpu_segment){.selector = sel, .unusable = 1};
		if (seg == SEG_SS) {
			s->dpl = (uint8_t)cpl;
			c->intr_shadow = true;
			c->stop_block = true;
		}
		return;
	}
	uint64_t d, addr;
	if (!soft_read_desc(c, sel, &d, &addr))
		soft_fault(c, EXC_GP, sel & ~3u);
	unsigned dpl = desc_dpl(d), type = (d >> 40) & 0xf;
	if (!((d >> 44) & 1))
		soft_fault(c, EXC_GP, sel & ~3u); /* a system descriptor */
	if (seg == SEG_SS) {
		bool writable_data = !(type & 8) && (type & 2);
		if (rpl != cpl || !writable_data || dpl != cpl)
			soft_fault(c, EXC_GP, sel & ~3u);
		if (!desc_present(d))
			soft_fault(c, EXC_SS, sel & ~3u);
	} else {
		bool readable = !(type & 8) || (type & 2);
		bool conforming_code = (type & 8) && (type & 4);
		if (!readable || (!conforming_code && (rpl > dpl || cpl > dpl)))
			soft_fault(c, EXC_GP, sel & ~3u);
		if (!desc_present(d))
			soft_fault(c, EXC_NP, sel & ~3u);
	}
	set_accessed(c, addr, d);
	soft_seg_from_desc(s, sel, d | DESC_ACCESSED);
	if (seg == SEG_SS) {
		/* mov ss / pop ss: no interrupt before the next instruction (it loads RSP). */
		c->intr_shadow = true;
		c->stop_block = true;
	}
}

/* ---- code segments: far transfers -------------------------------------------------------- */

/* Checks the target of a far jmp or call (a code segment; gates fail closed) and returns its
 * descriptor. */
static uint64_t code_target(struct soft_cpu *c, uint16_t sel)
{
	unsigned cpl = soft_cpl(c), rpl = sel & 3;
	if ((sel & ~3u) == 0)
		soft_fault(c, EXC_GP, 0);
	uint64_t d, addr;
	if (!soft_read_desc(c, sel, &d, &addr))
		soft_fault(c, EXC_GP, sel & ~3u);
	if (!is_code(d)) {
		if (!((d >> 44) & 1))
			soft_fail(c,
				  "far transfer through a system descriptor (type %u, selector "
				  "0x%x): call gates and task switches are not supported",
				  (unsigned)((d >> 40) & 0xf), sel);
		soft_fault(c, EXC_GP, sel & ~3u);
	}
	bool conforming = (d >> 42) & 1;
	if (conforming ? desc_dpl(d) > cpl : (rpl > cpl || desc_dpl(d) != cpl))
		soft_fault(c, EXC_GP, sel & ~3u);
	if (!desc_present(d))
		soft_fault(c, EXC_NP, sel & ~3u);
	set_accessed(c, addr, d);
	return d | DESC_ACCESSED;
}

/* Loads CS from descriptor d with RPL = cpl and moves to that privilege level. */
void soft_load_cs(struct soft_cpu *c, uint16_t sel, uint64_t d, unsigned cpl)
{
	struct cpu_segment *cs = &c->seg[SEG_CS];
	bool was64 = long_mode64(c), was32 = cs->db;
	soft_seg_from_desc(cs, (uint16_t)((sel & ~3u) | cpl), d);
	cs->dpl = (uint8_t)cpl; /* CPL, also for a conforming segment */
	soft_cpl_changed(c);
	if (long_mode64(c) != was64 || cs->db != was32)
		c->stop_block = true; /* the decode mode changed */
}

static uint64_t checked_target(struct soft_cpu *c, uint64_t d, uint64_t off, unsigned osize)
{
	bool l = (c->efer & EFER_LMA) && ((d >> 53) & 1);
	if (l) {
		if (!soft_canonical(off))
			soft_fault(c, EXC_GP, 0);
		return off;
	}
	off &= size_mask(osize);
	struct cpu_segment tmp;
	soft_seg_from_desc(&tmp, 0, d);
	if (off > tmp.limit)
		soft_fault(c, EXC_GP, 0);
	return off;
}

void soft_far_jump(struct soft_cpu *c, uint16_t sel, uint64_t off, unsigned osize)
{
	if (!(c->cr0 & CR0_PE)) {
		c->seg[SEG_CS].selector = sel;
		c->seg[SEG_CS].base = (uint64_t)sel << 4;
		c->rip = off & size_mask(osize);
		c->stop_block = true;
		return;
	}
	uint64_t d = code_target(c, sel);
	uint64_t t = checked_target(c, d, off, osize);
	soft_load_cs(c, sel, d, soft_cpl(c));
	c->rip = t;
}

static unsigned stack_width(const struct soft_cpu *c)
{
	return long_mode64(c) ? 8 : c->seg[SEG_SS].db ? 4 : 2;
}

static uint64_t stack_addr(const struct soft_cpu *c, uint64_t sp)
{
	return long_mode64(c) ? sp : c->seg[SEG_SS].base + sp;
}

void soft_far_call(struct soft_cpu *c, uint16_t sel, uint64_t off, unsigned osize)
{
	unsigned sw = stack_width(c);
	uint64_t sp = c->gpr[GPR_RSP] & size_mask(sw);
	uint64_t ret_cs = c->seg[SEG_CS].selector, ret_ip = c->rip;
	bool pm = c->cr0 & CR0_PE;
	/* Protected mode checks the target before anything is pushed. */
	uint64_t d = pm ? code_target(c, sel) : 0;
	uint64_t t = pm ? checked_target(c, d, off, osize) : 0;
	soft_store(c, stack_addr(c, (sp - osize) & size_mask(sw)), ret_cs, osize);
	soft_store(c, stack_addr(c, (sp - 2 * (uint64_t)osize) & size_mask(sw)), ret_ip, osize);
	gpr_write(c, RSP_REF, (sp - 2 * (uint64_t)osize) & size_mask(sw), sw);
	if (!pm) {
		soft_far_jump(c, sel, off, osize);
		return;
	}
	soft_load_cs(c, sel, d, soft_cpl(c));
	c->rip = t;
}

void soft_far_ret(struct soft_cpu *c, unsigned osize, uint16_t release)
{
	unsigned sw = stack_width(c);
	uint64_t sp = c->gpr[GPR_RSP] & size_mask(sw);
	uint64_t ip = soft_load(c, stack_addr(c, sp), osize);
	uint16_t sel = (uint16_t)soft_load(c, stack_addr(c, (sp + osize) & size_mask(sw)), 2);
	uint64_t new_sp = (sp + 2 * (uint64_t)osize + release) & size_mask(sw);
	if (!(c->cr0 & CR0_PE)) {
		gpr_write(c, RSP_REF, new_sp, sw);
		soft_far_jump(c, sel, ip, osize);
		return;
	}
	unsigned cpl = soft_cpl(c), rpl = sel & 3;
	if ((sel & ~3u) == 0)
		soft_fault(c, EXC_GP, 0);
	if (rpl < cpl)
		soft_fault(c, EXC_GP, sel & ~3u);
	if (rpl > cpl)
		soft_fail(c,
			  "far return to an outer privilege level (CPL %u to %u) is not "
			  "supported",
			  cpl, rpl);
	uint64_t d = code_target(c, sel);
	uint64_t t = checked_target(c, d, ip, osize);
	gpr_write(c, RSP_REF, new_sp, sw);
	soft_load_cs(c, sel, d, cpl);
	c->rip = t;
}

/* ---- system segments ----------------------------------------------------------------------- */

static void need_pm_cpl0(struct soft_cpu *c)
{
	if (!(c->cr0 & CR0_PE))
		soft_fault(c, EXC_UD, 0);
	if (soft_cpl(c) != 0)
		soft_fault(c, EXC_GP, 0);
}

/* A system descriptor from the GDT: 16 bytes in long mode (the upper 8 hold base 63:32). */
static void read_system_desc(struct soft_cpu *c, uint16_t sel, uint64_t *lo, uint64_t *hi,
			     uint64_t *addr)
{
	if (sel & 4)
		soft_fault(c, EXC_GP, sel & ~3u);
	if (!soft_read_desc(c, sel, lo, addr))
		soft_fault(c, EXC_GP, sel & ~3u);
	*hi = 0;
	if (c->efer & EFER_LMA) {
		if ((uint64_t)(sel & ~7u) + 15 > c->gdt.limit)
			soft_fault(c, EXC_GP, sel & ~3u);
		*hi = soft_sv_load(c, *addr + 8, 8);
	}
}

static void system_seg(struct cpu_segment *s, uint16_t sel, uint64_t lo, uint64_t hi)
{
	soft_seg_from_desc(s, sel, lo);
	s->base |= (hi & 0xffffffffull) << 32;
}

static void h_ltr(struct soft_cpu *c, const struct insn *in)
{
	need_pm_cpl0(c);
	uint16_t sel = (uint16_t)opnd_read(c, in, 0);
	if ((sel & ~3u) == 0)
		soft_fault(c, EXC_GP, 0);
	uint64_t lo, hi, addr;
	read_system_desc(c, sel, &lo, &hi, &addr);
	unsigned type = (lo >> 40) & 0x1f; /* with the S bit */
	bool lma = c->efer & EFER_LMA;
	if (!(type == 9 || (!lma && type == 1)))
		soft_fault(c, EXC_GP, sel & ~3u);
	if (!desc_present(lo))
		soft_fault(c, EXC_NP, sel & ~3u);
	uint64_t base = ((lo >> 16) & 0xffffff) | ((lo >> 32) & 0xff000000) | (hi << 32);
	if (lma && !soft_canonical(base))
		soft_fault(c, EXC_GP, sel & ~3u);
	/* Mark the TSS busy in the GDT. */
	soft_sv_begin(c);
	soft_store(c, addr, lo | (2ull << 40), 8);
	soft_sv_end(c);
	system_seg(&c->seg[SEG_TR], sel, lo | (2ull << 40), hi);
}

static void h_lldt(struct soft_cpu *c, const struct insn *in)
{
	need_pm_cpl0(c);
	uint16_t sel = (uint16_t)opnd_read(c, in, 0);
	if ((sel & ~3u) == 0) {
		c->seg[SEG_LDT] = (struct cpu_segment){.selector = sel, .unusable = 1};
		return;
	}
	uint64_t lo, hi, addr;
	read_system_desc(c, sel, &lo, &hi, &addr);
	if (((lo >> 40) & 0x1f) != 2)
		soft_fault(c, EXC_GP, sel & ~3u);
	if (!desc_present(lo))
		soft_fault(c, EXC_NP, sel & ~3u);
	system_seg(&c->seg[SEG_LDT], sel, lo, hi);
}

void soft_register_segment(void)
{
	soft_register_fn(ZYDIS_MNEMONIC_LTR, h_ltr);
	soft_register_fn(ZYDIS_MNEMONIC_LLDT, h_lldt);
}
