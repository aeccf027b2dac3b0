/* Control transfer: jmp, jcc, call, ret, loop/loope/loopne, jrcxz/jecxz, enter/leave, the
 * software interrupts (int3, int n, int1, into), ud0/ud1/ud2, syscall, hlt, nop.
 *
 * Near branches in 64-bit mode have a 64-bit operand size: the 66h prefix is ignored there, as
 * on Intel processors (decode.c's Zydis decoder follows Intel, which the CPUID model names), so
 * their hot forms need no size logic. A target that is not canonical raises #GP(0) on the
 * branch itself, with nothing changed (Intel SDM: JMP, CALL, RET in 64-bit mode). The forms
 * with a 16- or 32-bit operand size only occur outside 64-bit mode: their targets are cut to
 * that size and the stack is used at the width SS.B gives. Far transfers (jmp/call/ret far,
 * iret) need descriptor tables: they are left unimplemented. */
#include <Zydis/Zydis.h>

#include "engine/soft/exec_alu.h"
#include "engine/soft/exec_string.h"

#define RCX_REF ((gpr_ref)(GPR_RCX * 8))
#define RSP_REF ((gpr_ref)(GPR_RSP * 8))
#define RBP_REF ((gpr_ref)(GPR_RBP * 8))

/* #GP(0) for a non-canonical target, out of line: a hot handler's only call is then a tail
 * call, and it needs no stack frame. GCC must not learn that it does not return (noipa), or
 * the call could not be a tail call; clang has no such attribute and does not need it. */
#if defined(__clang__)
#define NO_IPA
#else
#define NO_IPA __attribute__((noipa))
#endif
static __attribute__((noinline, cold)) NO_IPA void bad_target(struct soft_cpu *c)
{
	soft_fault(c, EXC_GP, 0);
}

/* A near branch of the 64-bit operand size to t. */
static inline void jump64(struct soft_cpu *c, uint64_t t)
{
	if (unlikely(!soft_canonical(t))) {
		bad_target(c); /* does not return */
		return;
	}
	c->rip = t;
}

/* A near branch of operand size osize (2 or 4: outside 64-bit mode) to t. */
static inline void jump_narrow(struct soft_cpu *c, uint64_t t, unsigned osize)
{
	c->rip = t & size_mask(osize);
}

/* The width of the stack pointer: RSP in 64-bit mode, else ESP or SP as SS.B says. */
static inline unsigned stack_width(const struct soft_cpu *c)
{
	return soft_long_mode(c) ? 8 : c->seg[SEG_SS].db ? 4 : 2;
}

/* Pushes size bytes; the store comes first so a fault leaves RSP alone. */
static void push_sized(struct soft_cpu *c, uint64_t v, unsigned size)
{
	unsigned sw = stack_width(c);
	uint64_t sp = (gpr_read(c, RSP_REF, sw) - size) & size_mask(sw);
	soft_store(c, sp, v, size);
	gpr_write(c, RSP_REF, sp, sw);
}

/* ---- the software interrupts ------------------------------------------------------------ */

/* A trap-class exception (int3, int n, into, int1): it is reported after the instruction, so
 * RIP stays past it, unlike soft_fault which rewinds to the instruction. The run loop does not
 * count an instruction that left with SOFT_EXIT_EXCEPTION as retired, but a trap's instruction
 * did retire: count it here. In system mode the run loop delivers it through the IDT, checking
 * the gate's DPL for the software interrupts (kind EV_SOFT). */
static __attribute__((noreturn)) void trap_exit(struct soft_cpu *c, int vector,
						enum soft_event_kind kind)
{
	c->exc_vector = vector;
	c->exc_error = 0;
	c->exc_kind = kind;
	c->icount++;
	soft_exit(c, SOFT_EXIT_EXCEPTION);
}

static void h_int3(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	trap_exit(c, EXC_BP, EV_SOFT);
}

static void h_int1(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	trap_exit(c, EXC_DB, EV_FAULT);
}

/* int n. In user mode the gates are Linux's: only int3 (3), into's overflow (4) and the 32-bit
 * system call (0x80) are open to CPL 3. Any other vector meets a DPL-0 gate: #GP with the
 * error code naming the IDT entry (vector * 8 + 2), reported on the instruction. 0x80 is
 * reported as an exception with that vector, after the instruction: the caller decides what
 * a 32-bit system call means to it. */
static void h_int(struct soft_cpu *c, const struct insn *in)
{
	unsigned v = (unsigned)(in->imm & 0xff);
	if (c->user_mode && v != EXC_BP && v != EXC_OF && v != 0x80)
		soft_fault(c, EXC_GP, v * 8 + 2);
	trap_exit(c, (int)v, EV_SOFT);
}

/* into exists outside 64-bit mode only (there it does not decode: #UD). */
static void h_into(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	if (soft_flags(c) & FL_OF)
		trap_exit(c, EXC_OF, EV_SOFT);
}

/* ud0, ud1, ud2: defined to raise #UD, so not "unimplemented" (no log). */
static void h_ud(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	soft_fault(c, EXC_UD, 0);
}

/* ---- jcc and jmp -------------------------------------------------------------------------- */

/* Any condition after any operation (also the slow path of the handlers below). */
static __attribute__((noinline)) void h_jcc(struct soft_cpu *c, const struct insn *in)
{
	if (soft_cond(c, in->cc))
		jump64(c, c->rip + in->imm);
}

/* One handler per condition (64-bit operand size): the condition is a constant, so only the
 * tests of the producers it can be answered from remain (exec_alu.h); anything else goes
 * through h_jcc, which computes the flags. */
#define DEFINE_JCC(cc, name)                                                                       \
	static void h_##name(struct soft_cpu *c, const struct insn *in)                            \
	{                                                                                          \
		int t = soft_cond_fast(c, cc);                                                     \
		if (unlikely(t < 0)) {                                                             \
			h_jcc(c, in);                                                              \
			return;                                                                    \
		}                                                                                  \
		if (t)                                                                             \
			jump64(c, c->rip + in->imm);                                               \
	}

DEFINE_JCC(0, jo)
DEFINE_JCC(1, jno)
DEFINE_JCC(2, jb)
DEFINE_JCC(3, jnb)
DEFINE_JCC(4, jz)
DEFINE_JCC(5, jnz)
DEFINE_JCC(6, jbe)
DEFINE_JCC(7, jnbe)
DEFINE_JCC(8, js)
DEFINE_JCC(9, jns)
DEFINE_JCC(10, jp)
DEFINE_JCC(11, jnp)
DEFINE_JCC(12, jl)
DEFINE_JCC(13, jnl)
DEFINE_JCC(14, jle)
DEFINE_JCC(15, jnle)

static void h_jcc_narrow(struct soft_cpu *c, const struct insn *in)
{
	if (soft_cond(c, in->cc))
		jump_narrow(c, c->rip + in->imm, in->osize);
}

static insn_fn sel_jcc(const struct insn *in)
{
	static const insn_fn by_cc[16] = {h_jo, h_jno, h_jb, h_jnb, h_jz, h_jnz, h_jbe, h_jnbe,
					  h_js, h_jns, h_jp, h_jnp, h_jl, h_jnl, h_jle, h_jnle};
	if (in->osize != 8)
		return h_jcc_narrow;
	return by_cc[in->cc & 15];
}

static void h_jmp_rel(struct soft_cpu *c, const struct insn *in)
{
	jump64(c, c->rip + in->imm);
}

static void h_jmp_r64(struct soft_cpu *c, const struct insn *in)
{
	jump64(c, *(const uint64_t *)((const uint8_t *)c->gpr + in->op[0].reg));
}

static void h_jmp_m64(struct soft_cpu *c, const struct insn *in)
{
	jump64(c, soft_load(c, insn_addr(c, in), 8));
}

static void h_jmp_rel_narrow(struct soft_cpu *c, const struct insn *in)
{
	jump_narrow(c, c->rip + in->imm, in->osize);
}

static void h_jmp_indirect_narrow(struct soft_cpu *c, const struct insn *in)
{
	jump_narrow(c, opnd_read(c, in, 0), in->osize);
}

/* A far pointer operand (immediate ptr16:16/32 or m16:16/32/64) is two bytes wider than the
 * operand size; a relative displacement or a near target is not. */
static inline bool far_operand(const struct insn *in)
{
	return in->op[0].size == in->osize + 2;
}

/* jmp far: ptr16:16/32 (outside 64-bit mode) or m16:16/32/64. The offset comes first in
 * memory, the selector after it. */
static void far_pointer(struct soft_cpu *c, const struct insn *in, uint16_t *sel, uint64_t *off)
{
	if (in->op[0].kind == OPK_MEM) {
		uint64_t a = insn_addr(c, in);
		*off = soft_load(c, a, in->osize);
		*sel = (uint16_t)soft_load(c, a + in->osize, 2);
	} else {
		*off = in->imm;
		*sel = (uint16_t)in->imm2;
	}
}

static void h_jmp_far(struct soft_cpu *c, const struct insn *in)
{
	uint16_t sel;
	uint64_t off;
	if (c->user_mode)
		soft_unimplemented(c, in); /* no descriptor tables in ferry-user */
	far_pointer(c, in, &sel, &off);
	soft_far_jump(c, sel, off, in->osize);
}

static void h_call_far(struct soft_cpu *c, const struct insn *in)
{
	uint16_t sel;
	uint64_t off;
	if (c->user_mode)
		soft_unimplemented(c, in);
	far_pointer(c, in, &sel, &off);
	soft_far_call(c, sel, off, in->osize);
}

static insn_fn sel_jmp(const struct insn *in)
{
	if (far_operand(in))
		return h_jmp_far;
	switch (in->op[0].kind) {
	case OPK_IMM:
		return in->osize == 8 ? h_jmp_rel : h_jmp_rel_narrow;
	case OPK_REG:
		return in->osize == 8 ? h_jmp_r64 : h_jmp_indirect_narrow;
	case OPK_MEM:
		return in->osize == 8 ? h_jmp_m64 : h_jmp_indirect_narrow;
	default:
		return NULL;
	}
}

/* ---- call and ret ------------------------------------------------------------------------- */

/* call in 64-bit mode: the target is read and checked before the return address is pushed,
 * and the push's store before RSP changes, so a fault leaves everything as it was. */
static __attribute__((noinline)) void call64(struct soft_cpu *c, uint64_t t)
{
	if (unlikely(!soft_canonical(t)))
		soft_fault(c, EXC_GP, 0);
	uint64_t sp = c->gpr[GPR_RSP] - 8;
	soft_store(c, sp, c->rip, 8);
	c->gpr[GPR_RSP] = sp;
	c->rip = t;
}

/* Whether the soft TLB has the page of the 8 stack bytes at va for acc, and they do not cross
 * into the next page (one comparison covers both: see tlb_hit in exec_alu.c); *p is then their
 * host pointer. */
static inline bool stack_hit(struct soft_cpu *c, uint64_t va, enum mem_access acc, void **p)
{
	const struct tlb_entry *e = &c->tlb[(va >> 12) & (TLB_SIZE - 1)];
	uint64_t tag = acc == ACC_WRITE ? e->tag_write : e->tag_read;
	*p = (void *)(va + e->addend);
	return likely(tag == ((va + 7) & ~0xfffull));
}

/* call64 inline where the stack slot hits the TLB; everything else out of line. */
static inline void call64_fast(struct soft_cpu *c, uint64_t t)
{
	uint64_t sp = c->gpr[GPR_RSP] - 8;
	void *p;
	if (unlikely(!stack_hit(c, sp, ACC_WRITE, &p)) || unlikely(!soft_canonical(t))) {
		call64(c, t);
		return;
	}
	memcpy(p, &c->rip, 8);
	c->gpr[GPR_RSP] = sp;
	c->rip = t;
}

static void h_call_rel(struct soft_cpu *c, const struct insn *in)
{
	call64_fast(c, c->rip + in->imm);
}

static void h_call_r64(struct soft_cpu *c, const struct insn *in)
{
	call64_fast(c, *(const uint64_t *)((const uint8_t *)c->gpr + in->op[0].reg));
}

static void h_call_m64(struct soft_cpu *c, const struct insn *in)
{
	call64_fast(c, soft_load(c, insn_addr(c, in), 8));
}

static void h_call_narrow(struct soft_cpu *c, const struct insn *in)
{
	unsigned os = in->osize;
	uint64_t t = in->op[0].kind == OPK_IMM ? c->rip + in->imm : opnd_read(c, in, 0);
	push_sized(c, c->rip, os);
	jump_narrow(c, t, os);
}

static insn_fn sel_call(const struct insn *in)
{
	if (far_operand(in))
		return h_call_far;
	if (in->osize != 8)
		return h_call_narrow;
	switch (in->op[0].kind) {
	case OPK_IMM:
		return h_call_rel;
	case OPK_REG:
		return h_call_r64;
	case OPK_MEM:
		return h_call_m64;
	default:
		return NULL;
	}
}

/* ret (and ret imm16: release bytes more). The slow way: a TLB miss or page crossing. */
static __attribute__((noinline)) void ret64(struct soft_cpu *c, uint64_t release)
{
	uint64_t sp = c->gpr[GPR_RSP];
	uint64_t t = soft_load(c, sp, 8);
	if (unlikely(!soft_canonical(t)))
		soft_fault(c, EXC_GP, 0);
	c->gpr[GPR_RSP] = sp + 8 + release;
	c->rip = t;
}

static inline void ret64_fast(struct soft_cpu *c, uint64_t release)
{
	uint64_t sp = c->gpr[GPR_RSP], t;
	void *p;
	if (unlikely(!stack_hit(c, sp, ACC_READ, &p))) {
		ret64(c, release);
		return;
	}
	memcpy(&t, p, 8);
	if (unlikely(!soft_canonical(t))) {
		bad_target(c); /* does not return */
		return;
	}
	c->gpr[GPR_RSP] = sp + 8 + release;
	c->rip = t;
}

static void h_ret(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	ret64_fast(c, 0);
}

static void h_ret_imm(struct soft_cpu *c, const struct insn *in)
{
	ret64_fast(c, in->imm & 0xffff);
}

/* Zydis names near and far returns alike. With REX.W (either) or outside 64-bit mode (both
 * have the same operand size) only the opcode tells them apart: C3/C2 near, CB/CA far. */
static void h_ret_any(struct soft_cpu *c, const struct insn *in)
{
	uint8_t b[16];
	insn_bytes(c, in, b);
	uint8_t op = b[in->len - 1 - (in->nops ? 2 : 0)];
	if (op == 0xcb || op == 0xca) {
		if (c->user_mode)
			soft_unimplemented(c, in); /* no descriptor tables in ferry-user */
		soft_far_ret(c, in->osize, (uint16_t)(in->nops ? in->imm & 0xffff : 0));
		return;
	}
	unsigned os = in->osize, sw = stack_width(c);
	uint64_t sp = gpr_read(c, RSP_REF, sw);
	uint64_t t = soft_load(c, sp, os);
	if (os == 8 && !soft_canonical(t))
		soft_fault(c, EXC_GP, 0);
	gpr_write(c, RSP_REF, sp + os + (in->nops ? in->imm & 0xffff : 0), sw);
	c->rip = t;
}

static insn_fn sel_ret(const struct insn *in)
{
	/* Without REX.W a 64-bit operand size means a near return in 64-bit mode (a far one
	 * defaults to 32 bits). */
	if (in->osize == 8 && !(in->prefix & PFX_REX_W))
		return in->nops ? h_ret_imm : h_ret;
	return h_ret_any;
}

/* ---- loop and jrcxz ----------------------------------------------------------------------- */

/* The counter's size: the address size. Without prefixes the instruction is two bytes. */
static inline unsigned counter_size(struct soft_cpu *c, const struct insn *in)
{
	struct implicit_env e;
	implicit_env(c, in, 2, &e);
	return e.asize;
}

/* loop/loope/loopne with RCX, no prefixes, in 64-bit mode. RCX is written after the branch,
 * which is the part that can fault. */
static void h_loop64(struct soft_cpu *c, const struct insn *in)
{
	uint64_t n = c->gpr[GPR_RCX] - 1;
	if (n != 0)
		jump64(c, c->rip + in->imm);
	c->gpr[GPR_RCX] = n;
}

static void h_loope64(struct soft_cpu *c, const struct insn *in)
{
	uint64_t n = c->gpr[GPR_RCX] - 1;
	if (n != 0 && soft_cond(c, 4))
		jump64(c, c->rip + in->imm);
	c->gpr[GPR_RCX] = n;
}

static void h_loopne64(struct soft_cpu *c, const struct insn *in)
{
	uint64_t n = c->gpr[GPR_RCX] - 1;
	if (n != 0 && soft_cond(c, 5))
		jump64(c, c->rip + in->imm);
	c->gpr[GPR_RCX] = n;
}

/* Any form: the counter is RCX, ECX or CX as the address size says; its write follows the
 * register-write rules (ECX zero-extends into RCX). */
static void h_loop_any(struct soft_cpu *c, const struct insn *in)
{
	unsigned as = counter_size(c, in);
	uint64_t n = (gpr_read(c, RCX_REF, as) - 1) & size_mask(as);
	bool taken = n != 0;
	if (in->mnemonic == ZYDIS_MNEMONIC_LOOPE)
		taken = taken && soft_cond(c, 4);
	else if (in->mnemonic == ZYDIS_MNEMONIC_LOOPNE)
		taken = taken && soft_cond(c, 5);
	uint64_t t = c->rip + in->imm;
	if (taken && in->osize == 8 && !soft_canonical(t))
		soft_fault(c, EXC_GP, 0);
	gpr_write(c, RCX_REF, n, as);
	if (taken)
		c->rip = t & size_mask(in->osize);
}

static insn_fn sel_loop(const struct insn *in)
{
	if (in->osize == 8 && in->len == 2) {
		switch (in->mnemonic) {
		case ZYDIS_MNEMONIC_LOOP:
			return h_loop64;
		case ZYDIS_MNEMONIC_LOOPE:
			return h_loope64;
		default:
			return h_loopne64;
		}
	}
	return h_loop_any;
}

/* jrcxz/jecxz/jcxz: Zydis names the counter's size. */
static void h_jrcxz(struct soft_cpu *c, const struct insn *in)
{
	unsigned as = in->mnemonic == ZYDIS_MNEMONIC_JRCXZ   ? 8
		      : in->mnemonic == ZYDIS_MNEMONIC_JECXZ ? 4
							     : 2;
	if (gpr_read(c, RCX_REF, as) != 0)
		return;
	if (in->osize == 8)
		jump64(c, c->rip + in->imm);
	else
		jump_narrow(c, c->rip + in->imm, in->osize);
}

/* ---- enter and leave ---------------------------------------------------------------------- */

/* enter imm16, imm8: push the frame pointer, copy level - 1 outer frame pointers and the new
 * one (the "display"), point the frame pointer at the new frame and allocate imm16 bytes.
 * Like the hardware it first checks that a write at the final stack pointer would succeed.
 * Registers change only at the end, so a fault leaves them (not the stack below RSP) alone.
 * With the 66h prefix the pointers are 16 bits and only BP takes the new frame. */
static void h_enter(struct soft_cpu *c, const struct insn *in)
{
	unsigned os = in->osize, sw = stack_width(c);
	uint64_t smask = size_mask(sw);
	uint64_t alloc = in->imm & 0xffff;
	unsigned level = (unsigned)(in->imm2 & 31);
	uint64_t bp = gpr_read(c, RBP_REF, sw);
	uint64_t sp = (gpr_read(c, RSP_REF, sw) - os) & smask;
	soft_store(c, sp, c->gpr[GPR_RBP], os);
	uint64_t frame = sp;
	if (level > 0) {
		for (unsigned i = 1; i < level; i++) {
			bp = (bp - os) & smask;
			uint64_t v = soft_load(c, bp, os);
			sp = (sp - os) & smask;
			soft_store(c, sp, v, os);
		}
		sp = (sp - os) & smask;
		soft_store(c, sp, frame, os);
	}
	sp = (sp - alloc) & smask;
	soft_mem(c, sp, os, ACC_WRITE);
	gpr_write(c, RBP_REF, frame, os < sw ? os : sw);
	gpr_write(c, RSP_REF, sp, sw);
}

static void h_leave64(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	uint64_t bp = c->gpr[GPR_RBP];
	uint64_t v = soft_load(c, bp, 8);
	c->gpr[GPR_RSP] = bp + 8;
	c->gpr[GPR_RBP] = v;
}

/* leave with any operand size: the stack pointer takes the frame pointer at the stack width,
 * then the frame pointer is popped at the operand size. */
static void h_leave(struct soft_cpu *c, const struct insn *in)
{
	unsigned os = in->osize, sw = stack_width(c);
	uint64_t sp = gpr_read(c, RBP_REF, sw);
	uint64_t v = soft_load(c, sp, os);
	gpr_write(c, RSP_REF, sp + os, sw);
	gpr_write(c, RBP_REF, v, os);
}

static insn_fn sel_leave(const struct insn *in)
{
	return in->osize == 8 ? h_leave64 : h_leave;
}

/* ---- the rest ----------------------------------------------------------------------------- */

/* Also the hint NOPs (0F 18..0F 1F forms Zydis calls nop): they never touch their operand. */
static void h_hlt(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	if (c->seg[SEG_CS].dpl != 0)
		soft_fault(c, EXC_GP, 0);
	soft_exit(c, SOFT_EXIT_HLT);
}

void soft_register_control(void)
{
	static const unsigned jcc[] = {
	    ZYDIS_MNEMONIC_JO, ZYDIS_MNEMONIC_JNO, ZYDIS_MNEMONIC_JB,  ZYDIS_MNEMONIC_JNB,
	    ZYDIS_MNEMONIC_JZ, ZYDIS_MNEMONIC_JNZ, ZYDIS_MNEMONIC_JBE, ZYDIS_MNEMONIC_JNBE,
	    ZYDIS_MNEMONIC_JS, ZYDIS_MNEMONIC_JNS, ZYDIS_MNEMONIC_JP,  ZYDIS_MNEMONIC_JNP,
	    ZYDIS_MNEMONIC_JL, ZYDIS_MNEMONIC_JNL, ZYDIS_MNEMONIC_JLE, ZYDIS_MNEMONIC_JNLE,
	};
	for (unsigned i = 0; i < sizeof(jcc) / sizeof(jcc[0]); i++)
		soft_register(jcc[i], sel_jcc);
	soft_register(ZYDIS_MNEMONIC_JMP, sel_jmp);
	soft_register(ZYDIS_MNEMONIC_CALL, sel_call);
	soft_register(ZYDIS_MNEMONIC_RET, sel_ret);
	soft_register(ZYDIS_MNEMONIC_LOOP, sel_loop);
	soft_register(ZYDIS_MNEMONIC_LOOPE, sel_loop);
	soft_register(ZYDIS_MNEMONIC_LOOPNE, sel_loop);
	soft_register_fn(ZYDIS_MNEMONIC_JRCXZ, h_jrcxz);
	soft_register_fn(ZYDIS_MNEMONIC_JECXZ, h_jrcxz);
	soft_register_fn(ZYDIS_MNEMONIC_JCXZ, h_jrcxz);
	soft_register_fn(ZYDIS_MNEMONIC_ENTER, h_enter);
	soft_register(ZYDIS_MNEMONIC_LEAVE, sel_leave);
	soft_register_fn(ZYDIS_MNEMONIC_INT3, h_int3);
	soft_register_fn(ZYDIS_MNEMONIC_INT1, h_int1);
	soft_register_fn(ZYDIS_MNEMONIC_INT, h_int);
	soft_register_fn(ZYDIS_MNEMONIC_INTO, h_into);
	soft_register_fn(ZYDIS_MNEMONIC_UD0, h_ud);
	soft_register_fn(ZYDIS_MNEMONIC_UD1, h_ud);
	soft_register_fn(ZYDIS_MNEMONIC_UD2, h_ud);
	soft_register_fn(ZYDIS_MNEMONIC_HLT, h_hlt);
}
