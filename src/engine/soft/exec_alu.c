/* Integer data movement and arithmetic: mov (and movzx/movsx/movsxd, moves of segment
 * registers), xchg/xadd/cmpxchg/cmpxchg8b/cmpxchg16b, bswap, lea, the two-operand ALU
 * operations, neg/not/inc/dec, push/pop (also of flags, segment registers and all registers),
 * the sign extensions of the accumulator, cmovcc/setcc, the flag instructions, xlat and the
 * NOP family.
 *
 * The forms compiled code runs get handlers of their own, picked at decode time, that decide
 * nothing at run time: mov, movzx/movsx and the ALU operations at every operand size with
 * register, immediate and memory operands through the common address forms ([base + disp],
 * [base + index * scale + disp], [rip + disp]; any other address the slow way), inc/dec/neg/not,
 * lea, push/pop r64, and cmovcc/setcc per condition. They are generated from templates (see
 * "templates" below). Everything else, and every TLB miss of the specialized handlers, goes
 * through generic handlers. LOCK-prefixed read-modify-writes are host atomics on the guest
 * page, so they are atomic against other vCPUs and the host. */
#include <Zydis/Zydis.h>
#include <pthread.h>
#include <string.h>

#include "engine/soft/exec_alu.h"
#include "engine/soft/soft.h"

/* RFLAGS bits this file needs beyond soft.h's. */
#define FLAG_IOPL (3u << 12)
#define FLAG_NT   (1u << 14)
#define FLAG_RF   (1u << 16)
#define FLAG_VM   (1u << 17)
#define FLAG_AC   (1u << 18)
#define FLAG_ID   (1u << 21)
/* The flags LAHF and SAHF move. */
#define FLAGS_LAHF (FL_SF | FL_ZF | FL_AF | FL_PF | FL_CF)

#define RSP_REF    ((gpr_ref)(GPR_RSP * 8))
#define RAX_REF    ((gpr_ref)(GPR_RAX * 8))
#define RCX_REF    ((gpr_ref)(GPR_RCX * 8))
#define RDX_REF    ((gpr_ref)(GPR_RDX * 8))
#define RBX_REF    ((gpr_ref)(GPR_RBX * 8))
#define AH_REF     ((gpr_ref)(GPR_RAX * 8 + 1))

/* ---- small helpers --------------------------------------------------------------------------- */

/* A 32- or 64-bit register (their refs are 8-aligned) as a whole 64-bit slot. */
static inline uint64_t *reg64(struct soft_cpu *c, gpr_ref r)
{
	return (uint64_t *)((uint8_t *)c->gpr + r);
}

static inline bool mode64(const struct soft_cpu *c)
{
	return (c->efer & EFER_LMA) && c->seg[SEG_CS].l;
}

static inline unsigned cpl(const struct soft_cpu *c)
{
	return c->seg[SEG_CS].dpl;
}

static inline unsigned iopl(const struct soft_cpu *c)
{
	return (unsigned)(c->rflags >> 12) & 3;
}

/* Host-side loads and stores of guest data: memcpy, because guest accesses need not be
 * aligned. */
static inline uint64_t host_load(const void *p, unsigned size)
{
	uint64_t v = 0;
	memcpy(&v, p, size);
	return v;
}

static inline void host_store(void *p, uint64_t v, unsigned size)
{
	memcpy(p, &v, size);
}

/* Whether an access hits the soft TLB and stays within its page; *p is then its host pointer.
 * Hot handlers try this inline and leave everything else to a slow path they tail-call, so
 * the fast path needs no stack frame. One comparison checks both: an entry only ever holds
 * the tag of a page that indexes it, and the page after va's indexes another entry, so the tag
 * matches the page of the access's last byte only if that is va's page and it is mapped. */
static inline bool tlb_hit(struct soft_cpu *c, uint64_t va, unsigned size, enum mem_access acc,
			   void **p)
{
	const struct tlb_entry *e = &c->tlb[(va >> 12) & (TLB_SIZE - 1)];
	uint64_t tag = acc == ACC_WRITE ? e->tag_write : e->tag_read;
	*p = (void *)(va + e->addend);
	return likely(tag == ((va + size - 1) & ~0xfffull));
}

/* The lazy-flags record of an operation whose flags need the inputs. */
static inline void lf_rec(struct soft_cpu *c, unsigned op, uint64_t res, uint64_t a, uint64_t b)
{
	c->lf.op = op;
	c->lf.res = res;
	c->lf.src1 = a;
	c->lf.src2 = b;
}

/* Logic operations: the flags depend on the result alone. */
static inline void lf_logic(struct soft_cpu *c, unsigned op, uint64_t res)
{
	c->lf.op = op;
	c->lf.res = res;
}

/* CF without materializing the other flags when the last operation makes that cheap
 * (exec_alu.h): ADC/SBB chains and INC/DEC loops then never compute flags they do not need. */
static inline uint64_t carry_in(struct soft_cpu *c)
{
	int cf = soft_cond_fast(c, 2);
	if (likely(cf >= 0))
		return (unsigned)cf;
	return (soft_flags(c) & FL_CF) != 0;
}

/* The source operand i at operand size sz: immediates are already sign-extended by the
 * decoder, and their own operand size may be smaller than sz (imm8 forms). */
static inline uint64_t src_read(struct soft_cpu *c, const struct insn *in, unsigned i, unsigned sz)
{
	if (in->op[i].kind == OPK_IMM)
		return in->imm & size_mask(sz);
	return opnd_read(c, in, i);
}

/* ---- the stack ------------------------------------------------------------------------------ */

/* Width of the stack pointer: RSP in 64-bit mode, else ESP or SP by SS.B. */
static inline unsigned stack_width(const struct soft_cpu *c)
{
	return mode64(c) ? 8 : c->seg[SEG_SS].db ? 4 : 2;
}

/* The linear address of stack offset sp. Outside 64-bit mode SS has a base. */
static inline uint64_t stack_linear(const struct soft_cpu *c, uint64_t sp, unsigned sw)
{
	if (sw == 8)
		return sp;
	return (uint32_t)(c->seg[SEG_SS].base + (sp & size_mask(sw)));
}

/* Stack accesses with a non-canonical address raise #SS rather than #GP. Only a TLB miss can
 * see one (a tag never matches a non-canonical address), so the check costs nothing on hits. */
static inline void stack_check(struct soft_cpu *c, uint64_t va, enum mem_access acc)
{
	const struct tlb_entry *e = &c->tlb[(va >> 12) & (TLB_SIZE - 1)];
	uint64_t tag = acc == ACC_WRITE ? e->tag_write : e->tag_read;
	if (tag != (va & ~0xfffull) && !soft_canonical(va) && (c->efer & EFER_LMA))
		soft_fault(c, EXC_SS, 0);
}

static inline uint64_t stack_load(struct soft_cpu *c, uint64_t va, unsigned size)
{
	stack_check(c, va, ACC_READ);
	return soft_load(c, va, size);
}

static inline void stack_store(struct soft_cpu *c, uint64_t va, uint64_t v, unsigned size)
{
	stack_check(c, va, ACC_WRITE);
	soft_store(c, va, v, size);
}

/* Pushes v (size bytes); memory is written before RSP changes so a fault leaves RSP alone. */
static void push_val(struct soft_cpu *c, uint64_t v, unsigned size)
{
	unsigned sw = stack_width(c);
	uint64_t sp = (c->gpr[GPR_RSP] - size) & size_mask(sw);
	stack_store(c, stack_linear(c, sp, sw), v, size);
	gpr_write(c, RSP_REF, sp, sw);
}

/* The value on top of the stack and the stack pointer after popping it (not yet written). */
static uint64_t pop_peek(struct soft_cpu *c, unsigned size, uint64_t *new_sp)
{
	unsigned sw = stack_width(c);
	uint64_t sp = c->gpr[GPR_RSP] & size_mask(sw);
	uint64_t v = stack_load(c, stack_linear(c, sp, sw), size);
	*new_sp = sp + size;
	return v;
}

static inline void sp_write(struct soft_cpu *c, uint64_t sp)
{
	gpr_write(c, RSP_REF, sp, stack_width(c));
}

/* ---- atomics ----------------------------------------------------------------------------------- */

/* The read-modify-write operations, for the generic handlers and the atomic helpers. */
enum alu_op {
	OP_ADD,
	OP_ADC,
	OP_SUB,
	OP_SBB,
	OP_AND,
	OP_OR,
	OP_XOR,
	OP_CMP,
	OP_TEST,
	OP_NEG,
	OP_NOT,
	OP_INC,
	OP_DEC,
	OP_XCHG,
};

static inline uint64_t alu_calc(unsigned op, uint64_t a, uint64_t b, uint64_t carry)
{
	switch (op) {
	case OP_ADD:
		return a + b;
	case OP_ADC:
		return a + b + carry;
	case OP_SUB:
	case OP_CMP:
		return a - b;
	case OP_SBB:
		return a - b - carry;
	case OP_AND:
	case OP_TEST:
		return a & b;
	case OP_OR:
		return a | b;
	case OP_XOR:
		return a ^ b;
	case OP_NEG:
		return -a;
	case OP_NOT:
		return ~a;
	case OP_INC:
		return a + 1;
	case OP_DEC:
		return a - 1;
	default: /* OP_XCHG */
		return b;
	}
}

/* One host atomic per operation where the host has one, else a compare-exchange loop. Each
 * returns the old value. */
#define DEFINE_ATOMIC_RMW(bits)                                                                    \
	static uint64_t atomic_rmw##bits(void *p, unsigned op, uint64_t b, uint64_t carry)         \
	{                                                                                          \
		uint##bits##_t *q = p, v = (uint##bits##_t)b, old, nv;                             \
		switch (op) {                                                                      \
		case OP_ADD:                                                                       \
			return __atomic_fetch_add(q, v, __ATOMIC_SEQ_CST);                         \
		case OP_SUB:                                                                       \
			return __atomic_fetch_sub(q, v, __ATOMIC_SEQ_CST);                         \
		case OP_AND:                                                                       \
			return __atomic_fetch_and(q, v, __ATOMIC_SEQ_CST);                         \
		case OP_OR:                                                                        \
			return __atomic_fetch_or(q, v, __ATOMIC_SEQ_CST);                          \
		case OP_XOR:                                                                       \
			return __atomic_fetch_xor(q, v, __ATOMIC_SEQ_CST);                         \
		case OP_NOT:                                                                       \
			return __atomic_fetch_xor(q, (uint##bits##_t) ~0ull, __ATOMIC_SEQ_CST);    \
		case OP_INC:                                                                       \
			return __atomic_fetch_add(q, 1, __ATOMIC_SEQ_CST);                         \
		case OP_DEC:                                                                       \
			return __atomic_fetch_sub(q, 1, __ATOMIC_SEQ_CST);                         \
		case OP_XCHG:                                                                      \
			return __atomic_exchange_n(q, v, __ATOMIC_SEQ_CST);                        \
		default:                                                                           \
			old = __atomic_load_n(q, __ATOMIC_RELAXED);                                \
			do {                                                                       \
				nv = (uint##bits##_t)alu_calc(op, old, b, carry);                  \
			} while (!__atomic_compare_exchange_n(q, &old, nv, true, __ATOMIC_SEQ_CST, \
							      __ATOMIC_RELAXED));                  \
			return old;                                                                \
		}                                                                                  \
	}

DEFINE_ATOMIC_RMW(8)
DEFINE_ATOMIC_RMW(16)
DEFINE_ATOMIC_RMW(32)
DEFINE_ATOMIC_RMW(64)

/* A locked access that crosses a page has no single host pointer: it is done under this
 * mutex, so it is atomic against other split locked accesses but not against aligned ones
 * (guests essentially never lock across pages). */
static pthread_mutex_t split_lock = PTHREAD_MUTEX_INITIALIZER;

/* The accesses under the mutex can still leave by longjmp (a device that refuses an MMIO
 * access stops the run; MMIO pages are not checked ahead), so the CPU notes that it holds it
 * and the run loop releases it when it unwinds (soft_release_locks). */
static void split_lock_take(struct soft_cpu *c)
{
	pthread_mutex_lock(&split_lock);
	c->holds_split_lock = true;
}

static void split_lock_drop(struct soft_cpu *c)
{
	c->holds_split_lock = false;
	pthread_mutex_unlock(&split_lock);
}

void soft_release_locks(struct soft_cpu *c)
{
	if (c->holds_split_lock)
		split_lock_drop(c);
}

/* A LOCK-prefixed read-modify-write of size bytes at va; returns the old value. */
static uint64_t locked_rmw(struct soft_cpu *c, uint64_t va, unsigned size, unsigned op, uint64_t b,
			   uint64_t carry)
{
	void *p = soft_mem(c, va, size, ACC_WRITE);
	if (unlikely(!p)) {
		split_lock_take(c);
		uint64_t old = soft_load(c, va, size);
		soft_store(c, va, alu_calc(op, old, b, carry), size);
		split_lock_drop(c);
		return old;
	}
	switch (size) {
	case 1:
		return atomic_rmw8(p, op, b, carry);
	case 2:
		return atomic_rmw16(p, op, b, carry);
	case 4:
		return atomic_rmw32(p, op, b, carry);
	default:
		return atomic_rmw64(p, op, b, carry);
	}
}

/* A read-modify-write without LOCK; returns the old value. Write access is checked before the
 * read, as CPUs do: a read-only or missing page gives a write fault. */
static uint64_t plain_rmw(struct soft_cpu *c, uint64_t va, unsigned size, unsigned op, uint64_t b,
			  uint64_t carry)
{
	void *p = soft_mem(c, va, size, ACC_WRITE);
	uint64_t old;
	if (likely(p != NULL)) {
		old = host_load(p, size);
		host_store(p, alu_calc(op, old, b, carry), size);
	} else {
		old = soft_load(c, va, size);
		soft_store(c, va, alu_calc(op, old, b, carry), size);
	}
	return old;
}

/* Compare-exchange of size bytes at va: returns the old value; memory holds desired if that
 * equals expected. Always written, as on hardware (a read-only page faults either way). */
static uint64_t locked_cmpxchg(struct soft_cpu *c, uint64_t va, unsigned size, uint64_t expected,
			       uint64_t desired)
{
	void *p = soft_mem(c, va, size, ACC_WRITE);
	if (unlikely(!p)) {
		split_lock_take(c);
		uint64_t old = soft_load(c, va, size);
		soft_store(c, va, old == expected ? desired : old, size);
		split_lock_drop(c);
		return old;
	}
	switch (size) {
	case 1: {
		uint8_t e = (uint8_t)expected;
		__atomic_compare_exchange_n((uint8_t *)p, &e, (uint8_t)desired, false,
					    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
		return e;
	}
	case 2: {
		uint16_t e = (uint16_t)expected;
		__atomic_compare_exchange_n((uint16_t *)p, &e, (uint16_t)desired, false,
					    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
		return e;
	}
	case 4: {
		uint32_t e = (uint32_t)expected;
		__atomic_compare_exchange_n((uint32_t *)p, &e, (uint32_t)desired, false,
					    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
		return e;
	}
	default: {
		uint64_t e = expected;
		__atomic_compare_exchange_n((uint64_t *)p, &e, desired, false, __ATOMIC_SEQ_CST,
					    __ATOMIC_SEQ_CST);
		return e;
	}
	}
}

/* ---- templates ------------------------------------------------------------------------------ */

/* The hot forms are generated from always-inline templates whose operation, operand size and
 * address form are compile-time constants, so each handler is straight-line code: it decides
 * nothing at run time but whether its TLB lookup hit (and, for an operation that reads the
 * flags, whether the lazy record answers CF at once). Everything else, including every miss,
 * tail-calls the generic handler of the instruction, which starts over and does it all the
 * slow way; the fast path has changed nothing by then. */
#define AI static inline __attribute__((always_inline))

/* The address forms with handlers of their own, all with 64-bit addressing and no FS/GS base:
 * [base + disp], [base + index * scale + disp], [rip + disp]; anything else goes through
 * insn_addr. */
enum addr_form { AF_BD, AF_BISD, AF_RIP, AF_ANY };

static enum addr_form addr_form(const struct insn *in)
{
	const struct mem_ref *m = &in->mem;
	if (m->asize != 8 || m->seg == SEG_FS || m->seg == SEG_GS)
		return AF_ANY;
	if (m->rip_rel)
		return m->index == GPR_NONE && m->base == GPR_NONE ? AF_RIP : AF_ANY;
	if (m->base == GPR_NONE)
		return AF_ANY;
	return m->index == GPR_NONE ? AF_BD : AF_BISD;
}

#define EA_BD(c, in)   (*reg64(c, (in)->mem.base) + (uint64_t)(in)->mem.disp)
#define EA_BISD(c, in) (EA_BD(c, in) + (*reg64(c, (in)->mem.index) << (in)->mem.scale))
#define EA_RIP(c, in)  ((c)->rip + (uint64_t)(in)->mem.disp)

AI uint64_t ea_of(struct soft_cpu *c, const struct insn *in, enum addr_form f)
{
	switch (f) {
	case AF_BD:
		return EA_BD(c, in);
	case AF_BISD:
		return EA_BISD(c, in);
	case AF_RIP:
		return EA_RIP(c, in);
	default:
		return insn_addr(c, in);
	}
}

/* Each size in bits, and each address form, as macro arguments. */
#define FOR_SIZES(M, ...) M(__VA_ARGS__, 8) M(__VA_ARGS__, 16) M(__VA_ARGS__, 32) M(__VA_ARGS__, 64)
#define FOR_FORMS(M, ...)                                                                          \
	M(__VA_ARGS__, BD) M(__VA_ARGS__, BISD) M(__VA_ARGS__, RIP) M(__VA_ARGS__, ANY)
/* A table of handlers h_NAME_FORMbits_ADDR by [size index][address form]. */
#define AF_ROW(name, form, bits)                                                                   \
	{                                                                                          \
		h_##name##_##form##bits##_BD, h_##name##_##form##bits##_BISD,                      \
		    h_##name##_##form##bits##_RIP, h_##name##_##form##bits##_ANY                   \
	}
#define AF_TABLE(name, form)                                                                       \
	{                                                                                          \
		AF_ROW(name, form, 8), AF_ROW(name, form, 16), AF_ROW(name, form, 32),             \
		    AF_ROW(name, form, 64)                                                         \
	}
#define SZ_ROW(name, form)                                                                         \
	{                                                                                          \
		h_##name##_##form##8, h_##name##_##form##16, h_##name##_##form##32,                \
		    h_##name##_##form##64                                                          \
	}

/* Whether an operand size has handlers of its own (1, 2, 4 or 8 bytes). */
static inline bool plain_size(unsigned sz)
{
	return sz == 1 || sz == 2 || sz == 4 || sz == 8;
}

/* ---- mov ------------------------------------------------------------------------------------ */

static __attribute__((noinline)) void h_mov(struct soft_cpu *c, const struct insn *in)
{
	opnd_write(c, in, 0, src_read(c, in, 1, in->op[0].size));
}

/* Register and immediate sources; 8- and 16-bit writes merge, 32-bit ones zero-extend. */
AI void mov_reg(struct soft_cpu *c, const struct insn *in, unsigned sz, bool imm)
{
	gpr_write(c, in->op[0].reg, imm ? in->imm : gpr_read(c, in->op[1].reg, sz), sz);
}

/* mov r, [mem] */
AI void mov_load(struct soft_cpu *c, const struct insn *in, unsigned sz, enum addr_form f)
{
	void *p;
	if (unlikely(!tlb_hit(c, ea_of(c, in, f), sz, ACC_READ, &p))) {
		h_mov(c, in);
		return;
	}
	gpr_write(c, in->op[0].reg, host_load(p, sz), sz);
}

/* mov [mem], r and mov [mem], imm (a 64-bit store takes the immediate sign-extended). */
AI void mov_store(struct soft_cpu *c, const struct insn *in, unsigned sz, enum addr_form f,
		  bool imm)
{
	uint64_t v = imm ? in->imm : gpr_read(c, in->op[1].reg, sz);
	void *p;
	if (unlikely(!tlb_hit(c, ea_of(c, in, f), sz, ACC_WRITE, &p))) {
		h_mov(c, in);
		return;
	}
	host_store(p, v, sz);
}

#define MOV_MEM(bits, af)                                                                          \
	static void h_mov_load##bits##_##af(struct soft_cpu *c, const struct insn *in)             \
	{                                                                                          \
		mov_load(c, in, (bits) / 8, AF_##af);                                              \
	}                                                                                          \
	static void h_mov_store##bits##_##af(struct soft_cpu *c, const struct insn *in)            \
	{                                                                                          \
		mov_store(c, in, (bits) / 8, AF_##af, false);                                      \
	}                                                                                          \
	static void h_mov_storei##bits##_##af(struct soft_cpu *c, const struct insn *in)           \
	{                                                                                          \
		mov_store(c, in, (bits) / 8, AF_##af, true);                                       \
	}
#define MOV_SIZE(unused, bits)                                                                     \
	static void h_mov_rr##bits(struct soft_cpu *c, const struct insn *in)                      \
	{                                                                                          \
		mov_reg(c, in, (bits) / 8, false);                                                 \
	}                                                                                          \
	static void h_mov_ri##bits(struct soft_cpu *c, const struct insn *in)                      \
	{                                                                                          \
		mov_reg(c, in, (bits) / 8, true);                                                  \
	}                                                                                          \
	FOR_FORMS(MOV_MEM, bits)

FOR_SIZES(MOV_SIZE, )

static const insn_fn mov_rr[4] = SZ_ROW(mov, rr), mov_ri[4] = SZ_ROW(mov, ri);
static const insn_fn mov_m_load[4][4] = AF_TABLE(mov, load),
		     mov_m_store[4][4] = AF_TABLE(mov, store),
		     mov_m_storei[4][4] = AF_TABLE(mov, storei);
/* mov r/m, Sreg: the selector; a 32- or 64-bit register destination is zero-extended. */
static void h_mov_from_seg(struct soft_cpu *c, const struct insn *in)
{
	opnd_write(c, in, 0, c->seg[in->op[1].reg].selector);
}

/* Loads segment register seg with selector sel (mov Sreg, r/m and pop Sreg). Real mode only
 * needs the base; protected mode reads the descriptor (segment.c). ferry-user has no
 * descriptor tables: there only the loads user programs make that need no descriptor work: in
 * 64-bit mode, reloading DS, ES or SS with the selector they hold, or a null selector into DS
 * or ES (their bases and limits are unused in 64-bit mode). */
static void load_seg(struct soft_cpu *c, const struct insn *in, unsigned seg, uint16_t sel)
{
	struct cpu_segment *s = &c->seg[seg];
	if (!(c->cr0 & CR0_PE)) {
		s->selector = sel;
		s->base = (uint64_t)sel << 4;
		return;
	}
	if (!c->user_mode) {
		soft_load_seg(c, seg, sel);
		return;
	}
	if (mode64(c) && (seg == SEG_DS || seg == SEG_ES || seg == SEG_SS)) {
		if (sel == s->selector)
			return;
		if ((sel & ~3u) == 0) {
			/* A null SS only at CPL < 3 and with RPL = CPL. */
			if (seg == SEG_SS && (cpl(c) == 3 || (sel & 3u) != cpl(c)))
				soft_fault(c, EXC_GP, 0);
			s->selector = sel;
			s->unusable = 1;
			return;
		}
	}
	soft_unimplemented(c, in);
}

static void h_mov_to_seg(struct soft_cpu *c, const struct insn *in)
{
	load_seg(c, in, in->op[0].reg, (uint16_t)opnd_read(c, in, 1));
}

static insn_fn sel_mov(const struct insn *in)
{
	const struct opnd *d = &in->op[0], *s = &in->op[1];
	unsigned sz = d->size;
	if (d->kind == OPK_OTHER || s->kind == OPK_OTHER) /* control and debug registers */
		return soft_select_mov_crdr(in);
	if (s->kind == OPK_SEG)
		return h_mov_from_seg;
	if (d->kind == OPK_SEG)
		return d->reg == SEG_CS ? NULL : h_mov_to_seg;
	if (!plain_size(sz))
		return h_mov;
	unsigned si = size_index(sz);
	if (d->kind == OPK_REG && s->kind == OPK_REG)
		return mov_rr[si];
	if (d->kind == OPK_REG && s->kind == OPK_IMM)
		return mov_ri[si];
	if (d->kind == OPK_REG && s->kind == OPK_MEM)
		return mov_m_load[si][addr_form(in)];
	if (d->kind == OPK_MEM && s->kind == OPK_REG)
		return mov_m_store[si][addr_form(in)];
	if (d->kind == OPK_MEM && s->kind == OPK_IMM)
		return mov_m_storei[si][addr_form(in)];
	return h_mov;
}

/* ---- movzx / movsx / movsxd ------------------------------------------------------------------ */

static __attribute__((noinline)) void h_movzx(struct soft_cpu *c, const struct insn *in)
{
	gpr_write(c, in->op[0].reg, opnd_read(c, in, 1), in->op[0].size);
}

static __attribute__((noinline)) void h_movsx(struct soft_cpu *c, const struct insn *in)
{
	uint64_t v = sign_extend(opnd_read(c, in, 1), in->op[1].size);
	gpr_write(c, in->op[0].reg, v, in->op[0].size);
}

/* The common ones: to a 32- or 64-bit register (dsz), from ssz bytes. A zero extension gives
 * the same 64 bits whichever the destination size, so those need no dsz. */
AI void ext_done(struct soft_cpu *c, const struct insn *in, uint64_t v, unsigned ssz, bool sx,
		 unsigned dsz)
{
	if (sx)
		v = sign_extend(v, ssz);
	*reg64(c, in->op[0].reg) = dsz == 4 ? (uint32_t)v : v;
}

AI void ext_reg(struct soft_cpu *c, const struct insn *in, unsigned ssz, bool sx, unsigned dsz)
{
	ext_done(c, in, gpr_read(c, in->op[1].reg, ssz), ssz, sx, dsz);
}

AI void ext_load(struct soft_cpu *c, const struct insn *in, unsigned ssz, bool sx, unsigned dsz,
		 enum addr_form f)
{
	void *p;
	if (unlikely(!tlb_hit(c, ea_of(c, in, f), ssz, ACC_READ, &p))) {
		if (sx)
			h_movsx(c, in);
		else
			h_movzx(c, in);
		return;
	}
	ext_done(c, in, host_load(p, ssz), ssz, sx, dsz);
}

#define EXT_MEM(name, ssz, sx, dsz, af)                                                            \
	static void h_##name##_m_##af(struct soft_cpu *c, const struct insn *in)                   \
	{                                                                                          \
		ext_load(c, in, ssz, sx, dsz, AF_##af);                                            \
	}
#define DEFINE_EXT(name, ssz, sx, dsz)                                                             \
	static void h_##name##_r(struct soft_cpu *c, const struct insn *in)                        \
	{                                                                                          \
		ext_reg(c, in, ssz, sx, dsz);                                                      \
	}                                                                                          \
	FOR_FORMS(EXT_MEM, name, ssz, sx, dsz)

DEFINE_EXT(zx8, 1, false, 8)
DEFINE_EXT(zx16, 2, false, 8)
DEFINE_EXT(sx8_32, 1, true, 4)
DEFINE_EXT(sx8_64, 1, true, 8)
DEFINE_EXT(sx16_32, 2, true, 4)
DEFINE_EXT(sx16_64, 2, true, 8)
DEFINE_EXT(sx32_64, 4, true, 8)

/* By kind: the register form, then the memory forms by address form. */
#define EXT_ROW(name)                                                                              \
	{                                                                                          \
		h_##name##_r, h_##name##_m_BD, h_##name##_m_BISD, h_##name##_m_RIP,                \
		    h_##name##_m_ANY                                                               \
	}
enum { EXT_ZX8, EXT_ZX16, EXT_SX8_32, EXT_SX8_64, EXT_SX16_32, EXT_SX16_64, EXT_SX32_64 };
static const insn_fn ext_forms[7][5] = {
    [EXT_ZX8] = EXT_ROW(zx8),         [EXT_ZX16] = EXT_ROW(zx16),
    [EXT_SX8_32] = EXT_ROW(sx8_32),   [EXT_SX8_64] = EXT_ROW(sx8_64),
    [EXT_SX16_32] = EXT_ROW(sx16_32), [EXT_SX16_64] = EXT_ROW(sx16_64),
    [EXT_SX32_64] = EXT_ROW(sx32_64),
};

static insn_fn sel_ext_kind(const struct insn *in, unsigned kind)
{
	return ext_forms[kind][in->op[1].kind == OPK_MEM ? 1 + addr_form(in) : 0];
}

static insn_fn sel_movzx(const struct insn *in)
{
	unsigned ssz = in->op[1].size, dsz = in->op[0].size;
	if ((dsz != 4 && dsz != 8) || (ssz != 1 && ssz != 2))
		return h_movzx;
	return sel_ext_kind(in, ssz == 1 ? EXT_ZX8 : EXT_ZX16);
}

static insn_fn sel_movsx(const struct insn *in)
{
	unsigned ssz = in->op[1].size, dsz = in->op[0].size;
	if ((dsz != 4 && dsz != 8) || (ssz != 1 && ssz != 2))
		return h_movsx;
	if (ssz == 1)
		return sel_ext_kind(in, dsz == 4 ? EXT_SX8_32 : EXT_SX8_64);
	return sel_ext_kind(in, dsz == 4 ? EXT_SX16_32 : EXT_SX16_64);
}

/* movsxd r64, r/m32; without REX.W it is a plain 32- or 16-bit move. */
static insn_fn sel_movsxd(const struct insn *in)
{
	if (in->op[0].size == 8 && in->op[1].size == 4)
		return sel_ext_kind(in, EXT_SX32_64);
	return h_movsx;
}

/* ---- the two-operand ALU operations, neg, not, inc, dec ------------------------------------- */

/* Records the flags of op on size sz. carry: the carry-in of ADC/SBB, the CF INC/DEC keep.
 * INC and DEC record only what their flags need (flags.c): the result and that CF, which is
 * already in lf.src3 when carry is CARRY_KEPT (after another INC/DEC: a counting loop then
 * reads and writes no flag state but lf.op and lf.res). */
#define CARRY_KEPT 2u
AI void alu_flags(struct soft_cpu *c, unsigned op, unsigned sz, uint64_t r, uint64_t a, uint64_t b,
		  uint64_t carry)
{
	unsigned si = size_index(sz);
	switch (op) {
	case OP_ADD:
		lf_rec(c, LF_ADD + si, r, a, b);
		break;
	case OP_ADC:
		lf_rec(c, LF_ADC + si, r, a, b);
		c->lf.src3 = carry;
		break;
	case OP_SUB:
	case OP_CMP:
		lf_rec(c, LF_SUB + si, r, a, b);
		break;
	case OP_SBB:
		lf_rec(c, LF_SBB + si, r, a, b);
		c->lf.src3 = carry;
		break;
	case OP_AND:
	case OP_OR:
	case OP_XOR:
	case OP_TEST:
		lf_logic(c, LF_LOGIC + si, r);
		break;
	case OP_NEG:
		lf_rec(c, LF_NEG + si, r, a, 0);
		break;
	case OP_INC:
		lf_logic(c, LF_INC + si, r);
		if (carry != CARRY_KEPT)
			c->lf.src3 = carry;
		break;
	case OP_DEC:
		lf_logic(c, LF_DEC + si, r);
		if (carry != CARRY_KEPT)
			c->lf.src3 = carry;
		break;
	default: /* NOT: no flags */
		break;
	}
}

/* Every form of the ALU operations: op0 is r/m, op1 (if any) r/m or imm. All loads happen
 * before anything is written. */
AI void alu_generic(struct soft_cpu *c, const struct insn *in, unsigned op)
{
	unsigned sz = in->op[0].size;
	uint64_t m = size_mask(sz), a, b = 0, carry = 0, r;
	bool writes = op != OP_CMP && op != OP_TEST;
	if (op == OP_ADC || op == OP_SBB || op == OP_INC || op == OP_DEC)
		carry = carry_in(c);
	if (in->op[0].kind == OPK_MEM) {
		uint64_t va = insn_addr(c, in);
		if (in->nops > 1)
			b = src_read(c, in, 1, sz);
		if (!writes)
			a = soft_load(c, va, sz);
		else if (in->prefix & PFX_LOCK)
			a = locked_rmw(c, va, sz, op, b, carry);
		else
			a = plain_rmw(c, va, sz, op, b, carry);
		r = alu_calc(op, a, b, carry) & m;
	} else {
		if (in->nops > 1)
			b = src_read(c, in, 1, sz);
		a = gpr_read(c, in->op[0].reg, sz);
		r = alu_calc(op, a, b, carry) & m;
		if (writes)
			gpr_write(c, in->op[0].reg, r, sz);
	}
	alu_flags(c, op, sz, r, a, b, carry);
}

/* The generic handlers: every form, and the slow paths of the specialized ones. */
#define DEFINE_ALU(name, OP)                                                                       \
	static __attribute__((noinline)) void h_##name(struct soft_cpu *c, const struct insn *in)  \
	{                                                                                          \
		alu_generic(c, in, OP);                                                            \
	}

DEFINE_ALU(add, OP_ADD)
DEFINE_ALU(adc, OP_ADC)
DEFINE_ALU(sub, OP_SUB)
DEFINE_ALU(sbb, OP_SBB)
DEFINE_ALU(and, OP_AND)
DEFINE_ALU(or, OP_OR)
DEFINE_ALU(xor, OP_XOR)
DEFINE_ALU(cmp, OP_CMP)
DEFINE_ALU(test, OP_TEST)
DEFINE_ALU(neg, OP_NEG)
DEFINE_ALU(not, OP_NOT)
DEFINE_ALU(inc, OP_INC)
DEFINE_ALU(dec, OP_DEC)

AI void alu_slow(struct soft_cpu *c, const struct insn *in, unsigned op)
{
	switch (op) {
	case OP_ADD:
		h_add(c, in);
		break;
	case OP_ADC:
		h_adc(c, in);
		break;
	case OP_SUB:
		h_sub(c, in);
		break;
	case OP_SBB:
		h_sbb(c, in);
		break;
	case OP_AND:
		h_and(c, in);
		break;
	case OP_OR:
		h_or(c, in);
		break;
	case OP_XOR:
		h_xor(c, in);
		break;
	case OP_CMP:
		h_cmp(c, in);
		break;
	case OP_TEST:
		h_test(c, in);
		break;
	case OP_NEG:
		h_neg(c, in);
		break;
	case OP_NOT:
		h_not(c, in);
		break;
	case OP_INC:
		h_inc(c, in);
		break;
	default:
		h_dec(c, in);
		break;
	}
}

/* The carry-in of ADC/SBB and the CF that INC/DEC keep, when the lazy record answers it at
 * once; false sends the instruction to its generic handler. */
AI bool fast_carry(const struct soft_cpu *c, unsigned op, uint64_t *carry)
{
	*carry = 0;
	if (op != OP_ADC && op != OP_SBB && op != OP_INC && op != OP_DEC)
		return true;
	unsigned kind = c->lf.op & ~3u;
	if ((op == OP_INC || op == OP_DEC) && (kind == LF_INC || kind == LF_DEC)) {
		*carry = CARRY_KEPT;
		return true;
	}
	int cf = soft_cond_fast(c, 2);
	*carry = (unsigned)cf;
	return likely(cf >= 0);
}

/* The operation on a and b (both of size sz) with its flags recorded; returns the result. */
AI uint64_t alu_do(struct soft_cpu *c, unsigned op, unsigned sz, uint64_t a, uint64_t b,
		   uint64_t carry)
{
	uint64_t r = alu_calc(op, a, b, carry) & size_mask(sz);
	alu_flags(c, op, sz, r, a, b, carry);
	return r;
}

static inline bool alu_writes(unsigned op)
{
	return op != OP_CMP && op != OP_TEST;
}

/* op r, r / op r, imm (and neg, not, inc, dec r: src is then unused). */
AI void alu_reg(struct soft_cpu *c, const struct insn *in, unsigned op, unsigned sz, bool imm)
{
	uint64_t carry;
	if (unlikely(!fast_carry(c, op, &carry))) {
		alu_slow(c, in, op);
		return;
	}
	uint64_t a = gpr_read(c, in->op[0].reg, sz), b = 0;
	if (op != OP_NEG && op != OP_NOT && op != OP_INC && op != OP_DEC)
		b = imm ? in->imm & size_mask(sz) : gpr_read(c, in->op[1].reg, sz);
	uint64_t r = alu_do(c, op, sz, a, b, carry);
	if (alu_writes(op))
		gpr_write(c, in->op[0].reg, r, sz);
}

/* op r, [mem] */
AI void alu_load(struct soft_cpu *c, const struct insn *in, unsigned op, unsigned sz,
		 enum addr_form f)
{
	uint64_t carry;
	void *p;
	if (unlikely(!fast_carry(c, op, &carry)) ||
	    unlikely(!tlb_hit(c, ea_of(c, in, f), sz, ACC_READ, &p))) {
		alu_slow(c, in, op);
		return;
	}
	uint64_t a = gpr_read(c, in->op[0].reg, sz);
	uint64_t r = alu_do(c, op, sz, a, host_load(p, sz), carry);
	if (alu_writes(op))
		gpr_write(c, in->op[0].reg, r, sz);
}

/* op [mem], r / op [mem], imm (and the unary operations on memory). A write checks write
 * access before it reads, as CPUs do; LOCK-prefixed forms take the generic handler. */
AI void alu_store(struct soft_cpu *c, const struct insn *in, unsigned op, unsigned sz,
		  enum addr_form f, bool imm)
{
	uint64_t carry;
	void *p;
	if (unlikely(!fast_carry(c, op, &carry)) ||
	    unlikely(!tlb_hit(c, ea_of(c, in, f), sz, alu_writes(op) ? ACC_WRITE : ACC_READ, &p))) {
		alu_slow(c, in, op);
		return;
	}
	uint64_t b = 0;
	if (op != OP_NEG && op != OP_NOT && op != OP_INC && op != OP_DEC)
		b = imm ? in->imm & size_mask(sz) : gpr_read(c, in->op[1].reg, sz);
	uint64_t r = alu_do(c, op, sz, host_load(p, sz), b, carry);
	if (alu_writes(op))
		host_store(p, r, sz);
}

/* The handlers of each operation: h_NAME_{rr,ri}BITS, h_NAME_{rm,mr,mi}BITS_ADDR. */
#define ALU_MEM(name, OP, bits, af)                                                                \
	static void h_##name##_rm##bits##_##af(struct soft_cpu *c, const struct insn *in)          \
	{                                                                                          \
		alu_load(c, in, OP, (bits) / 8, AF_##af);                                          \
	}                                                                                          \
	static void h_##name##_mr##bits##_##af(struct soft_cpu *c, const struct insn *in)          \
	{                                                                                          \
		alu_store(c, in, OP, (bits) / 8, AF_##af, false);                                  \
	}                                                                                          \
	static void h_##name##_mi##bits##_##af(struct soft_cpu *c, const struct insn *in)          \
	{                                                                                          \
		alu_store(c, in, OP, (bits) / 8, AF_##af, true);                                   \
	}
#define ALU_SIZE(name, OP, bits)                                                                   \
	static void h_##name##_rr##bits(struct soft_cpu *c, const struct insn *in)                 \
	{                                                                                          \
		alu_reg(c, in, OP, (bits) / 8, false);                                             \
	}                                                                                          \
	static void h_##name##_ri##bits(struct soft_cpu *c, const struct insn *in)                 \
	{                                                                                          \
		alu_reg(c, in, OP, (bits) / 8, true);                                              \
	}                                                                                          \
	FOR_FORMS(ALU_MEM, name, OP, bits)

struct alu_forms {
	insn_fn generic;
	insn_fn rr[4], ri[4];                 /* by size index */
	insn_fn rm[4][4], mr[4][4], mi[4][4]; /* by size index and address form */
};

#define DEFINE_ALU_FORMS(name, OP)                                                                 \
	FOR_SIZES(ALU_SIZE, name, OP)                                                              \
	static const struct alu_forms forms_##name = {                                             \
	    .generic = h_##name,                                                                   \
	    .rr = SZ_ROW(name, rr),                                                                \
	    .ri = SZ_ROW(name, ri),                                                                \
	    .rm = AF_TABLE(name, rm),                                                              \
	    .mr = AF_TABLE(name, mr),                                                              \
	    .mi = AF_TABLE(name, mi),                                                              \
	};

DEFINE_ALU_FORMS(add, OP_ADD)
DEFINE_ALU_FORMS(adc, OP_ADC)
DEFINE_ALU_FORMS(sub, OP_SUB)
DEFINE_ALU_FORMS(sbb, OP_SBB)
DEFINE_ALU_FORMS(and, OP_AND)
DEFINE_ALU_FORMS(or, OP_OR)
DEFINE_ALU_FORMS(xor, OP_XOR)
DEFINE_ALU_FORMS(cmp, OP_CMP)

/* test has no r, [mem] form (85 /r names the memory operand first). */
#define TEST_MEM(unused, bits, af)                                                                 \
	static void h_test_mr##bits##_##af(struct soft_cpu *c, const struct insn *in)              \
	{                                                                                          \
		alu_store(c, in, OP_TEST, (bits) / 8, AF_##af, false);                             \
	}                                                                                          \
	static void h_test_mi##bits##_##af(struct soft_cpu *c, const struct insn *in)              \
	{                                                                                          \
		alu_store(c, in, OP_TEST, (bits) / 8, AF_##af, true);                              \
	}
#define TEST_SIZE(unused, bits)                                                                    \
	static void h_test_rr##bits(struct soft_cpu *c, const struct insn *in)                     \
	{                                                                                          \
		alu_reg(c, in, OP_TEST, (bits) / 8, false);                                        \
	}                                                                                          \
	static void h_test_ri##bits(struct soft_cpu *c, const struct insn *in)                     \
	{                                                                                          \
		alu_reg(c, in, OP_TEST, (bits) / 8, true);                                         \
	}                                                                                          \
	FOR_FORMS(TEST_MEM, , bits)

FOR_SIZES(TEST_SIZE, )
static const struct alu_forms forms_test = {
    .generic = h_test,
    .rr = SZ_ROW(test, rr),
    .ri = SZ_ROW(test, ri),
    .mr = AF_TABLE(test, mr),
    .mi = AF_TABLE(test, mi),
};

static insn_fn sel_alu(const struct insn *in, const struct alu_forms *f)
{
	const struct opnd *d = &in->op[0], *s = &in->op[1];
	if ((in->prefix & PFX_LOCK) || !plain_size(d->size))
		return f->generic;
	unsigned si = size_index(d->size);
	insn_fn h = NULL;
	if (d->kind == OPK_REG && s->kind == OPK_REG)
		h = f->rr[si];
	else if (d->kind == OPK_REG && s->kind == OPK_IMM)
		h = f->ri[si];
	else if (d->kind == OPK_REG && s->kind == OPK_MEM)
		h = f->rm[si][addr_form(in)];
	else if (d->kind == OPK_MEM && s->kind == OPK_REG)
		h = f->mr[si][addr_form(in)];
	else if (d->kind == OPK_MEM && s->kind == OPK_IMM)
		h = f->mi[si][addr_form(in)];
	return h ? h : f->generic;
}

#define DEFINE_ALU_SELECT(name)                                                                    \
	static insn_fn sel_##name(const struct insn *in)                                           \
	{                                                                                          \
		return sel_alu(in, &forms_##name);                                                 \
	}

DEFINE_ALU_SELECT(add)
DEFINE_ALU_SELECT(adc)
DEFINE_ALU_SELECT(sub)
DEFINE_ALU_SELECT(sbb)
DEFINE_ALU_SELECT(and)
DEFINE_ALU_SELECT(or)
DEFINE_ALU_SELECT(xor)
DEFINE_ALU_SELECT(cmp)
DEFINE_ALU_SELECT(test)

/* neg, not, inc, dec: every register size; inc and dec (counters) also on memory. INC/DEC keep
 * CF: after another INC/DEC it is already in lf.src3, so a counting loop never computes flags. */
#define UNARY_MEM(name, OP, bits, af)                                                              \
	static void h_##name##_m##bits##_##af(struct soft_cpu *c, const struct insn *in)           \
	{                                                                                          \
		alu_store(c, in, OP, (bits) / 8, AF_##af, false);                                  \
	}
#define UNARY_SIZE(name, OP, bits)                                                                 \
	static void h_##name##_r##bits(struct soft_cpu *c, const struct insn *in)                  \
	{                                                                                          \
		alu_reg(c, in, OP, (bits) / 8, false);                                             \
	}
#define INCDEC_SIZE(name, OP, bits) UNARY_SIZE(name, OP, bits) FOR_FORMS(UNARY_MEM, name, OP, bits)

FOR_SIZES(UNARY_SIZE, neg, OP_NEG)
FOR_SIZES(UNARY_SIZE, not, OP_NOT)
FOR_SIZES(INCDEC_SIZE, inc, OP_INC)
FOR_SIZES(INCDEC_SIZE, dec, OP_DEC)

struct unary_forms {
	insn_fn generic;
	insn_fn r[4];    /* by size index */
	insn_fn m[4][4]; /* by size index and address form; none for neg and not */
};
static const struct unary_forms forms_neg = {.generic = h_neg, .r = SZ_ROW(neg, r)};
static const struct unary_forms forms_not = {.generic = h_not, .r = SZ_ROW(not, r)};
static const struct unary_forms forms_inc = {
    .generic = h_inc, .r = SZ_ROW(inc, r), .m = AF_TABLE(inc, m)};
static const struct unary_forms forms_dec = {
    .generic = h_dec, .r = SZ_ROW(dec, r), .m = AF_TABLE(dec, m)};

static insn_fn sel_unary(const struct insn *in, const struct unary_forms *f)
{
	const struct opnd *d = &in->op[0];
	if ((in->prefix & PFX_LOCK) || !plain_size(d->size))
		return f->generic;
	insn_fn h = NULL;
	if (d->kind == OPK_REG)
		h = f->r[size_index(d->size)];
	else if (d->kind == OPK_MEM)
		h = f->m[size_index(d->size)][addr_form(in)];
	return h ? h : f->generic;
}

static insn_fn sel_neg(const struct insn *in)
{
	return sel_unary(in, &forms_neg);
}

static insn_fn sel_not(const struct insn *in)
{
	return sel_unary(in, &forms_not);
}

static insn_fn sel_inc(const struct insn *in)
{
	return sel_unary(in, &forms_inc);
}

static insn_fn sel_dec(const struct insn *in)
{
	return sel_unary(in, &forms_dec);
}

/* ---- xchg, xadd, cmpxchg ------------------------------------------------------------------- */

/* xchg with memory is locked whether or not it has the prefix. */
static void h_xchg(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->op[0].size;
	if (in->op[0].kind == OPK_MEM || in->op[1].kind == OPK_MEM) {
		unsigned r = in->op[0].kind == OPK_MEM ? 1 : 0;
		uint64_t v = gpr_read(c, in->op[r].reg, sz);
		uint64_t old = locked_rmw(c, insn_addr(c, in), sz, OP_XCHG, v, 0);
		gpr_write(c, in->op[r].reg, old, sz);
		return;
	}
	uint64_t a = gpr_read(c, in->op[0].reg, sz), b = gpr_read(c, in->op[1].reg, sz);
	gpr_write(c, in->op[0].reg, b, sz);
	gpr_write(c, in->op[1].reg, a, sz);
}

static void h_xchg_r64_r64(struct soft_cpu *c, const struct insn *in)
{
	uint64_t *a = reg64(c, in->op[0].reg), *b = reg64(c, in->op[1].reg);
	uint64_t t = *a;
	*a = *b;
	*b = t;
}

static insn_fn sel_xchg(const struct insn *in)
{
	return in->op[0].kind == OPK_REG && in->op[1].kind == OPK_REG && in->op[0].size == 8
		   ? h_xchg_r64_r64
		   : h_xchg;
}

/* xadd: TEMP = SRC + DEST; SRC = DEST; DEST = TEMP (so xadd r, r leaves the sum). */
static void h_xadd(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->op[0].size;
	uint64_t b = gpr_read(c, in->op[1].reg, sz), a;
	if (in->op[0].kind == OPK_MEM) {
		uint64_t va = insn_addr(c, in);
		if (in->prefix & PFX_LOCK)
			a = locked_rmw(c, va, sz, OP_ADD, b, 0);
		else
			a = plain_rmw(c, va, sz, OP_ADD, b, 0);
	} else {
		a = gpr_read(c, in->op[0].reg, sz);
	}
	uint64_t r = (a + b) & size_mask(sz);
	gpr_write(c, in->op[1].reg, a, sz);
	if (in->op[0].kind == OPK_REG)
		gpr_write(c, in->op[0].reg, r, sz);
	lf_rec(c, LF_ADD + size_index(sz), r, a, b);
}

/* cmpxchg: compares the accumulator with DEST. Equal: DEST = SRC. Not equal: the accumulator
 * gets DEST. A register DEST is not written when they differ (so a 32-bit one keeps its upper
 * half), and the accumulator is not written when they are equal: that is what CPUs do. */
static void h_cmpxchg(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->op[0].size;
	uint64_t acc = gpr_read(c, RAX_REF, sz), src = gpr_read(c, in->op[1].reg, sz), old;
	if (in->op[0].kind == OPK_MEM) {
		old = locked_cmpxchg(c, insn_addr(c, in), sz, acc, src);
	} else {
		old = gpr_read(c, in->op[0].reg, sz);
		if (old == acc)
			gpr_write(c, in->op[0].reg, src, sz);
	}
	if (old != acc)
		gpr_write(c, RAX_REF, old, sz);
	lf_rec(c, LF_SUB + size_index(sz), (acc - old) & size_mask(sz), acc, old);
}

/* cmpxchg8b m64: EDX:EAX against memory; ECX:EBX stored when equal. Only ZF changes. */
static void h_cmpxchg8b(struct soft_cpu *c, const struct insn *in)
{
	uint64_t expected = (uint32_t)c->gpr[GPR_RAX] | (c->gpr[GPR_RDX] << 32);
	uint64_t desired = (uint32_t)c->gpr[GPR_RBX] | (c->gpr[GPR_RCX] << 32);
	uint64_t old = locked_cmpxchg(c, insn_addr(c, in), 8, expected, desired);
	bool eq = old == expected;
	if (!eq) {
		c->gpr[GPR_RAX] = (uint32_t)old;
		c->gpr[GPR_RDX] = old >> 32;
	}
	soft_set_flags(c, eq ? FL_ZF : 0, FL_ZF);
}

/* cmpxchg16b m128: RDX:RAX against memory, RCX:RBX stored when equal. The operand must be
 * 16-byte aligned, so it never crosses a page and the host instruction does the work on RAM;
 * memory without a host pointer goes through the split-access mutex. */
static void h_cmpxchg16b(struct soft_cpu *c, const struct insn *in)
{
	uint64_t va = insn_addr(c, in);
	if (va & 15)
		soft_fault(c, EXC_GP, 0);
	void *p = soft_mem(c, va, 16, ACC_WRITE);
	uint64_t lo = c->gpr[GPR_RAX], hi = c->gpr[GPR_RDX];
	bool eq;
	if (likely(p != NULL)) {
		__asm__ volatile("lock cmpxchg16b %1"
				 : "=@ccz"(eq), "+m"(*(u128 *)p), "+a"(lo), "+d"(hi)
				 : "b"(c->gpr[GPR_RBX]), "c"(c->gpr[GPR_RCX])
				 : "memory");
	} else {
		uint64_t m[2];
		split_lock_take(c);
		soft_read_bytes(c, va, m, 16);
		eq = m[0] == lo && m[1] == hi;
		const uint64_t desired[2] = {c->gpr[GPR_RBX], c->gpr[GPR_RCX]};
		soft_write_bytes(c, va, eq ? desired : m, 16);
		split_lock_drop(c);
		lo = m[0];
		hi = m[1];
	}
	if (!eq) {
		c->gpr[GPR_RAX] = lo;
		c->gpr[GPR_RDX] = hi;
	}
	soft_set_flags(c, eq ? FL_ZF : 0, FL_ZF);
}

/* ---- bswap, lea ---------------------------------------------------------------------------- */

static void h_bswap(struct soft_cpu *c, const struct insn *in)
{
	uint64_t *d = reg64(c, in->op[0].reg);
	switch (in->op[0].size) {
	case 8:
		*d = __builtin_bswap64(*d);
		break;
	case 4:
		*d = __builtin_bswap32((uint32_t)*d);
		break;
	default:
		/* Undefined for 16 bits; CPUs clear the low word. */
		*d &= ~0xffffull;
		break;
	}
}

/* The effective address alone: no segment base, truncated to the address size; the
 * destination write truncates it to the operand size. */
static void h_lea(struct soft_cpu *c, const struct insn *in)
{
	const struct mem_ref *m = &in->mem;
	uint64_t a = (uint64_t)m->disp;
	if (m->base != GPR_NONE)
		a += *reg64(c, m->base);
	if (m->index != GPR_NONE)
		a += *reg64(c, m->index) << m->scale;
	if (m->rip_rel)
		a += c->rip;
	gpr_write(c, in->op[0].reg, a & size_mask(m->asize), in->op[0].size);
}

#define EA_ID(c, in) ((*reg64(c, (in)->mem.index) << (in)->mem.scale) + (uint64_t)(in)->mem.disp)

#define DEFINE_LEA(form)                                                                           \
	static void h_lea64_##form(struct soft_cpu *c, const struct insn *in)                      \
	{                                                                                          \
		*reg64(c, in->op[0].reg) = EA_##form(c, in);                                       \
	}                                                                                          \
	static void h_lea32_##form(struct soft_cpu *c, const struct insn *in)                      \
	{                                                                                          \
		*reg64(c, in->op[0].reg) = (uint32_t)EA_##form(c, in);                             \
	}

DEFINE_LEA(BD)
DEFINE_LEA(BISD)
DEFINE_LEA(RIP)
DEFINE_LEA(ID)

static insn_fn sel_lea(const struct insn *in)
{
	const struct mem_ref *m = &in->mem;
	unsigned sz = in->op[0].size;
	if (m->asize != 8 || (sz != 8 && sz != 4))
		return h_lea;
	bool q = sz == 8;
	if (m->rip_rel)
		return m->base == GPR_NONE && m->index == GPR_NONE ? (q ? h_lea64_RIP : h_lea32_RIP)
								   : h_lea;
	if (m->base == GPR_NONE)
		return m->index == GPR_NONE ? h_lea : q ? h_lea64_ID : h_lea32_ID;
	if (m->index == GPR_NONE)
		return q ? h_lea64_BD : h_lea32_BD;
	return q ? h_lea64_BISD : h_lea32_BISD;
}

/* ---- push / pop ---------------------------------------------------------------------------- */

/* push r64 and push imm in 64-bit mode, where the stack is flat and 64 bits wide. push rsp
 * pushes the value before the push. */
static __attribute__((noinline)) void push64_slow(struct soft_cpu *c, uint64_t v)
{
	uint64_t sp = c->gpr[GPR_RSP] - 8;
	stack_store(c, sp, v, 8);
	c->gpr[GPR_RSP] = sp;
}

static inline void push64(struct soft_cpu *c, uint64_t v)
{
	uint64_t sp = c->gpr[GPR_RSP] - 8;
	void *p;
	if (likely(tlb_hit(c, sp, 8, ACC_WRITE, &p))) {
		host_store(p, v, 8);
		c->gpr[GPR_RSP] = sp;
	} else {
		push64_slow(c, v);
	}
}

static void h_push_r64(struct soft_cpu *c, const struct insn *in)
{
	push64(c, *reg64(c, in->op[0].reg));
}

static void h_push_imm64(struct soft_cpu *c, const struct insn *in)
{
	push64(c, in->imm);
}

/* pop r64: the increment comes first, so pop rsp leaves the popped value. */
static __attribute__((noinline)) void pop64_slow(struct soft_cpu *c, gpr_ref r)
{
	uint64_t sp = c->gpr[GPR_RSP];
	uint64_t v = stack_load(c, sp, 8);
	c->gpr[GPR_RSP] = sp + 8;
	*reg64(c, r) = v;
}

static void h_pop_r64(struct soft_cpu *c, const struct insn *in)
{
	uint64_t sp = c->gpr[GPR_RSP];
	void *p;
	if (likely(tlb_hit(c, sp, 8, ACC_READ, &p))) {
		uint64_t v = host_load(p, 8);
		c->gpr[GPR_RSP] = sp + 8;
		*reg64(c, in->op[0].reg) = v;
	} else {
		pop64_slow(c, in->op[0].reg);
	}
}

/* Every push: the operand is read (with the old RSP) before the stack changes. A segment
 * register is pushed zero-extended. */
static void h_push(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->osize;
	uint64_t v;
	switch (in->op[0].kind) {
	case OPK_SEG:
		v = c->seg[in->op[0].reg].selector;
		break;
	case OPK_IMM:
		v = in->imm & size_mask(sz);
		break;
	default:
		v = opnd_read(c, in, 0);
		break;
	}
	push_val(c, v, sz);
}

static void h_pop(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->osize;
	uint64_t sp, old_rsp = c->gpr[GPR_RSP];
	uint64_t v = pop_peek(c, sz, &sp);
	switch (in->op[0].kind) {
	case OPK_REG:
		sp_write(c, sp);
		gpr_write(c, in->op[0].reg, v, sz);
		break;
	case OPK_MEM: {
		/* The address is computed with RSP already incremented (pop [rsp] works on the
		 * new top), but RSP only changes once the store went through. */
		sp_write(c, sp);
		uint64_t va = insn_addr(c, in);
		uint64_t new_rsp = c->gpr[GPR_RSP];
		c->gpr[GPR_RSP] = old_rsp;
		soft_store(c, va, v, sz);
		c->gpr[GPR_RSP] = new_rsp;
		break;
	}
	default: /* OPK_SEG */
		load_seg(c, in, in->op[0].reg, (uint16_t)v);
		sp_write(c, sp);
		break;
	}
}

static insn_fn sel_push(const struct insn *in)
{
	if (in->osize == 8 && in->op[0].kind == OPK_REG)
		return h_push_r64;
	if (in->osize == 8 && in->op[0].kind == OPK_IMM)
		return h_push_imm64;
	return h_push;
}

static insn_fn sel_pop(const struct insn *in)
{
	if (in->op[0].kind == OPK_SEG && in->op[0].reg == SEG_CS)
		return NULL;
	return in->osize == 8 && in->op[0].kind == OPK_REG ? h_pop_r64 : h_pop;
}

/* pusha: AX, CX, DX, BX, the original SP, BP, SI, DI (16/32-bit modes only). */
static void h_pusha(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->osize, sw = stack_width(c);
	uint64_t sp = c->gpr[GPR_RSP];
	for (unsigned r = 0; r < 8; r++) {
		sp = (sp - sz) & size_mask(sw);
		stack_store(c, stack_linear(c, sp, sw), c->gpr[r] & size_mask(sz), sz);
	}
	sp_write(c, sp);
}

/* popa: the reverse, skipping the saved SP. */
static void h_popa(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->osize, sw = stack_width(c);
	uint64_t sp = c->gpr[GPR_RSP], v[8];
	for (int r = 7; r >= 0; r--) {
		v[r] = stack_load(c, stack_linear(c, sp, sw), sz);
		sp = (sp + sz) & size_mask(sw);
	}
	for (unsigned r = 0; r < 8; r++)
		if (r != GPR_RSP)
			gpr_write(c, (gpr_ref)(r * 8), v[r], sz);
	sp_write(c, sp);
}

/* ---- flags ----------------------------------------------------------------------------------- */

/* pushf: the image has RF and VM clear. */
static void h_pushf(struct soft_cpu *c, const struct insn *in)
{
	uint64_t f = soft_flags(c) & ~(uint64_t)(FLAG_RF | FLAG_VM);
	push_val(c, f & size_mask(in->osize), in->osize);
}

/* popf: which bits change depends on the privilege. At any level the arithmetic flags, TF, DF
 * and NT, and with a 32/64-bit operand AC and ID; IF only when CPL <= IOPL; IOPL only at CPL
 * 0 (real mode counts as CPL 0). RF is cleared; VM, VIF and VIP never change. */
static void h_popf(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->osize;
	uint64_t sp;
	uint64_t v = pop_peek(c, sz, &sp);
	uint64_t mask = FL_ARITH | FL_TF | FL_DF | FLAG_NT;
	bool real = !(c->cr0 & CR0_PE);
	if (real || cpl(c) == 0)
		mask |= FLAG_IOPL | FL_IF;
	else if (cpl(c) <= iopl(c))
		mask |= FL_IF;
	uint64_t f = soft_flags(c);
	if (sz >= 4) {
		mask |= FLAG_AC | FLAG_ID;
		f &= ~(uint64_t)FLAG_RF;
	}
	c->rflags = (f & ~mask) | (v & mask) | RFLAGS_FIXED;
	sp_write(c, sp);
	/* TF, IF or AC may have changed: let the run loop look before the next instruction. */
	c->stop_block = true;
}

static void h_lahf(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	gpr_write(c, AH_REF, (soft_flags(c) & FLAGS_LAHF) | RFLAGS_FIXED, 1);
}

static void h_sahf(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	soft_set_flags(c, gpr_read(c, AH_REF, 1), FLAGS_LAHF);
}

static void h_clc(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	soft_set_flags(c, 0, FL_CF);
}

static void h_stc(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	soft_set_flags(c, FL_CF, FL_CF);
}

static void h_cmc(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	c->rflags = soft_flags(c) ^ FL_CF;
}

/* DF is not one of the lazy flags: it lives in rflags. */
static void h_cld(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	c->rflags &= ~(uint64_t)FL_DF;
}

static void h_std(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	c->rflags |= FL_DF;
}

/* cli/sti in protected mode need CPL <= IOPL (virtual-interrupt extensions are not
 * offered: CR4.VME/PVI stay clear). */
static void check_iopl(struct soft_cpu *c)
{
	if ((c->cr0 & CR0_PE) && cpl(c) > iopl(c))
		soft_fault(c, EXC_GP, 0);
}

static void h_cli(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	check_iopl(c);
	c->rflags &= ~(uint64_t)FL_IF;
}

static void h_sti(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	check_iopl(c);
	/* Interrupts may now be deliverable: the run loop checks between blocks, but not before
	 * the next instruction has run when sti set IF (sti; hlt must not lose a wake-up). */
	if (!(c->rflags & FL_IF))
		c->intr_shadow = true;
	c->rflags |= FL_IF;
	c->stop_block = true;
}

/* ---- cbw family, cmovcc, setcc, xlat, nop ------------------------------------------------- */

static void h_cbw(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	gpr_write(c, RAX_REF, sign_extend(c->gpr[GPR_RAX] & 0xff, 1), 2);
}

static void h_cwde(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	gpr_write(c, RAX_REF, sign_extend(c->gpr[GPR_RAX] & 0xffff, 2), 4);
}

static void h_cdqe(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	c->gpr[GPR_RAX] = sign_extend(c->gpr[GPR_RAX] & 0xffffffff, 4);
}

/* cwd/cdq/cqo: DX/EDX/RDX become copies of the accumulator's sign bit. */
static void h_cwd(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->osize;
	uint64_t sign = (c->gpr[GPR_RAX] >> (sz * 8 - 1)) & 1;
	gpr_write(c, RDX_REF, sign ? ~0ull : 0, sz);
}

static __attribute__((noinline)) void h_cmov(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->op[0].size;
	uint64_t v = opnd_read(c, in, 1); /* memory is read (and may fault) either way */
	if (soft_cond(c, in->cc))
		gpr_write(c, in->op[0].reg, v, sz);
	else if (sz == 4)
		*reg64(c, in->op[0].reg) &= 0xffffffff; /* a 32-bit destination is written anyway */
}

static __attribute__((noinline)) void h_setcc(struct soft_cpu *c, const struct insn *in)
{
	opnd_write(c, in, 0, soft_cond(c, in->cc));
}

/* cmovcc r32/r64, r and setcc r8, one handler per condition (exec_alu.h); a lazy record that
 * cannot answer at once sends them to the generic handlers. */
AI void cmov_rr(struct soft_cpu *c, const struct insn *in, unsigned cc, unsigned sz)
{
	int t = soft_cond_fast(c, cc);
	if (unlikely(t < 0)) {
		h_cmov(c, in);
		return;
	}
	uint64_t *d = reg64(c, in->op[0].reg);
	if (sz == 8) {
		if (t)
			*d = *reg64(c, in->op[1].reg);
	} else {
		*d = (uint32_t)(t ? *reg64(c, in->op[1].reg) : *d);
	}
}

AI void setcc_r(struct soft_cpu *c, const struct insn *in, unsigned cc)
{
	int t = soft_cond_fast(c, cc);
	if (unlikely(t < 0)) {
		h_setcc(c, in);
		return;
	}
	*((uint8_t *)c->gpr + in->op[0].reg) = (uint8_t)t;
}

#define DEFINE_CC(cc)                                                                              \
	static void h_cmov_rr32_##cc(struct soft_cpu *c, const struct insn *in)                    \
	{                                                                                          \
		cmov_rr(c, in, cc, 4);                                                             \
	}                                                                                          \
	static void h_cmov_rr64_##cc(struct soft_cpu *c, const struct insn *in)                    \
	{                                                                                          \
		cmov_rr(c, in, cc, 8);                                                             \
	}                                                                                          \
	static void h_setcc_r_##cc(struct soft_cpu *c, const struct insn *in)                      \
	{                                                                                          \
		setcc_r(c, in, cc);                                                                \
	}
#define FOR_CC(M)                                                                                  \
	M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)
#define CC_ROW(name)                                                                               \
	{                                                                                          \
		name##0, name##1, name##2, name##3, name##4, name##5, name##6, name##7, name##8,   \
		    name##9, name##10, name##11, name##12, name##13, name##14, name##15            \
	}

FOR_CC(DEFINE_CC)
static const insn_fn cmov_rr32[16] = CC_ROW(h_cmov_rr32_), cmov_rr64[16] = CC_ROW(h_cmov_rr64_),
		     setcc_r8[16] = CC_ROW(h_setcc_r_);

static insn_fn sel_cmov(const struct insn *in)
{
	if (in->op[1].kind != OPK_REG)
		return h_cmov;
	return in->op[0].size == 8   ? cmov_rr64[in->cc & 15]
	       : in->op[0].size == 4 ? cmov_rr32[in->cc & 15]
				     : h_cmov;
}

static insn_fn sel_setcc(const struct insn *in)
{
	return in->op[0].kind == OPK_REG ? setcc_r8[in->cc & 15] : h_setcc;
}

/* The offset and segment of xlat's hidden operand, [rBX + AL]. The decoder leaves hidden
 * operands out of in->mem, so unless it was filled (asize != 0) the instruction's prefixes
 * tell: 67 switches the address size, 64/65 select FS/GS (the only overrides with a base in
 * 64-bit mode; the others have none here either). */
static void xlat_mem(struct soft_cpu *c, const struct insn *in, struct mem_ref *m)
{
	if (in->mem.asize) {
		*m = in->mem;
		return;
	}
	bool m64 = mode64(c);
	unsigned asize = m64 ? 8 : c->seg[SEG_CS].db ? 4 : 2;
	uint8_t seg = SEG_DS;
	for (unsigned i = 0; i + 1 < in->len; i++) {
		uint64_t va = c->insn_start + i;
		uint8_t b = *(const uint8_t *)soft_mem(c, va, 1, ACC_EXEC);
		if (b == 0x67)
			asize = m64 ? 4 : asize == 4 ? 2 : 4;
		else if (b == 0x64)
			seg = SEG_FS;
		else if (b == 0x65)
			seg = SEG_GS;
	}
	*m = (struct mem_ref){.base = RBX_REF, .index = GPR_NONE, .seg = seg, .asize = asize};
}

static void h_xlat(struct soft_cpu *c, const struct insn *in)
{
	struct insn t = *in;
	xlat_mem(c, in, &t.mem);
	t.mem.base = RBX_REF;
	t.mem.index = GPR_NONE;
	t.mem.rip_rel = false;
	t.mem.disp = (int64_t)(c->gpr[GPR_RAX] & 0xff);
	gpr_write(c, RAX_REF, soft_load(c, insn_addr(c, &t), 1), 1);
}

static void h_nop(struct soft_cpu *c, const struct insn *in)
{
	(void)c;
	(void)in;
}

void soft_register_alu(void)
{
	static const unsigned cmov[] = {
	    ZYDIS_MNEMONIC_CMOVO,   ZYDIS_MNEMONIC_CMOVNO,  ZYDIS_MNEMONIC_CMOVB,
	    ZYDIS_MNEMONIC_CMOVNB,  ZYDIS_MNEMONIC_CMOVZ,   ZYDIS_MNEMONIC_CMOVNZ,
	    ZYDIS_MNEMONIC_CMOVBE,  ZYDIS_MNEMONIC_CMOVNBE, ZYDIS_MNEMONIC_CMOVS,
	    ZYDIS_MNEMONIC_CMOVNS,  ZYDIS_MNEMONIC_CMOVP,   ZYDIS_MNEMONIC_CMOVNP,
	    ZYDIS_MNEMONIC_CMOVL,   ZYDIS_MNEMONIC_CMOVNL,  ZYDIS_MNEMONIC_CMOVLE,
	    ZYDIS_MNEMONIC_CMOVNLE,
	};
	static const unsigned setcc[] = {
	    ZYDIS_MNEMONIC_SETO, ZYDIS_MNEMONIC_SETNO, ZYDIS_MNEMONIC_SETB,  ZYDIS_MNEMONIC_SETNB,
	    ZYDIS_MNEMONIC_SETZ, ZYDIS_MNEMONIC_SETNZ, ZYDIS_MNEMONIC_SETBE, ZYDIS_MNEMONIC_SETNBE,
	    ZYDIS_MNEMONIC_SETS, ZYDIS_MNEMONIC_SETNS, ZYDIS_MNEMONIC_SETP,  ZYDIS_MNEMONIC_SETNP,
	    ZYDIS_MNEMONIC_SETL, ZYDIS_MNEMONIC_SETNL, ZYDIS_MNEMONIC_SETLE, ZYDIS_MNEMONIC_SETNLE,
	};
	/* The hint-NOP space 0F 18..0F 1F decodes to these when the extension behind the
	 * encoding is not offered (MPX, CLDEMOTE, CET shadow stacks): they execute as NOPs. */
	static const unsigned nops[] = {
	    ZYDIS_MNEMONIC_NOP,    ZYDIS_MNEMONIC_ENDBR32,  ZYDIS_MNEMONIC_ENDBR64,
	    ZYDIS_MNEMONIC_BNDCL,  ZYDIS_MNEMONIC_BNDCN,    ZYDIS_MNEMONIC_BNDCU,
	    ZYDIS_MNEMONIC_BNDLDX, ZYDIS_MNEMONIC_BNDMK,    ZYDIS_MNEMONIC_BNDMOV,
	    ZYDIS_MNEMONIC_BNDSTX, ZYDIS_MNEMONIC_CLDEMOTE, ZYDIS_MNEMONIC_RDSSPD,
	    ZYDIS_MNEMONIC_RDSSPQ,
	};
	for (unsigned i = 0; i < sizeof(cmov) / sizeof(cmov[0]); i++)
		soft_register(cmov[i], sel_cmov);
	for (unsigned i = 0; i < sizeof(setcc) / sizeof(setcc[0]); i++)
		soft_register(setcc[i], sel_setcc);
	for (unsigned i = 0; i < sizeof(nops) / sizeof(nops[0]); i++)
		soft_register_fn(nops[i], h_nop);

	soft_register(ZYDIS_MNEMONIC_MOV, sel_mov);
	soft_register(ZYDIS_MNEMONIC_MOVZX, sel_movzx);
	soft_register(ZYDIS_MNEMONIC_MOVSX, sel_movsx);
	soft_register(ZYDIS_MNEMONIC_MOVSXD, sel_movsxd);
	soft_register(ZYDIS_MNEMONIC_XCHG, sel_xchg);
	soft_register_fn(ZYDIS_MNEMONIC_XADD, h_xadd);
	soft_register_fn(ZYDIS_MNEMONIC_CMPXCHG, h_cmpxchg);
	soft_register_fn(ZYDIS_MNEMONIC_CMPXCHG8B, h_cmpxchg8b);
	soft_register_fn(ZYDIS_MNEMONIC_CMPXCHG16B, h_cmpxchg16b);
	soft_register_fn(ZYDIS_MNEMONIC_BSWAP, h_bswap);
	soft_register(ZYDIS_MNEMONIC_LEA, sel_lea);

	soft_register(ZYDIS_MNEMONIC_ADD, sel_add);
	soft_register(ZYDIS_MNEMONIC_ADC, sel_adc);
	soft_register(ZYDIS_MNEMONIC_SUB, sel_sub);
	soft_register(ZYDIS_MNEMONIC_SBB, sel_sbb);
	soft_register(ZYDIS_MNEMONIC_AND, sel_and);
	soft_register(ZYDIS_MNEMONIC_OR, sel_or);
	soft_register(ZYDIS_MNEMONIC_XOR, sel_xor);
	soft_register(ZYDIS_MNEMONIC_CMP, sel_cmp);
	soft_register(ZYDIS_MNEMONIC_TEST, sel_test);
	soft_register(ZYDIS_MNEMONIC_NEG, sel_neg);
	soft_register(ZYDIS_MNEMONIC_NOT, sel_not);
	soft_register(ZYDIS_MNEMONIC_INC, sel_inc);
	soft_register(ZYDIS_MNEMONIC_DEC, sel_dec);

	soft_register(ZYDIS_MNEMONIC_PUSH, sel_push);
	soft_register(ZYDIS_MNEMONIC_POP, sel_pop);
	soft_register_fn(ZYDIS_MNEMONIC_PUSHA, h_pusha);
	soft_register_fn(ZYDIS_MNEMONIC_PUSHAD, h_pusha);
	soft_register_fn(ZYDIS_MNEMONIC_POPA, h_popa);
	soft_register_fn(ZYDIS_MNEMONIC_POPAD, h_popa);
	soft_register_fn(ZYDIS_MNEMONIC_PUSHF, h_pushf);
	soft_register_fn(ZYDIS_MNEMONIC_PUSHFD, h_pushf);
	soft_register_fn(ZYDIS_MNEMONIC_PUSHFQ, h_pushf);
	soft_register_fn(ZYDIS_MNEMONIC_POPF, h_popf);
	soft_register_fn(ZYDIS_MNEMONIC_POPFD, h_popf);
	soft_register_fn(ZYDIS_MNEMONIC_POPFQ, h_popf);

	soft_register_fn(ZYDIS_MNEMONIC_LAHF, h_lahf);
	soft_register_fn(ZYDIS_MNEMONIC_SAHF, h_sahf);
	soft_register_fn(ZYDIS_MNEMONIC_CLC, h_clc);
	soft_register_fn(ZYDIS_MNEMONIC_STC, h_stc);
	soft_register_fn(ZYDIS_MNEMONIC_CMC, h_cmc);
	soft_register_fn(ZYDIS_MNEMONIC_CLD, h_cld);
	soft_register_fn(ZYDIS_MNEMONIC_STD, h_std);
	soft_register_fn(ZYDIS_MNEMONIC_CLI, h_cli);
	soft_register_fn(ZYDIS_MNEMONIC_STI, h_sti);

	soft_register_fn(ZYDIS_MNEMONIC_CBW, h_cbw);
	soft_register_fn(ZYDIS_MNEMONIC_CWDE, h_cwde);
	soft_register_fn(ZYDIS_MNEMONIC_CDQE, h_cdqe);
	soft_register_fn(ZYDIS_MNEMONIC_CWD, h_cwd);
	soft_register_fn(ZYDIS_MNEMONIC_CDQ, h_cwd);
	soft_register_fn(ZYDIS_MNEMONIC_CQO, h_cwd);
	soft_register_fn(ZYDIS_MNEMONIC_XLAT, h_xlat);
}
