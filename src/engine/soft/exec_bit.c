/* Shifts, rotates, double shifts, bit tests and bit scans: shl/sal, shr, sar, rol, ror, rcl,
 * rcr, shld, shrd, bt, bts, btr, btc, bsf, bsr, tzcnt (as bsf), lzcnt, popcnt.
 *
 * Shifts keep their flags lazy (flags.c, LF_SHL/LF_SHR/LF_SAR); the rest compute the flags they
 * write. Where the SDM leaves a flag or a result undefined, this does what current AMD (Zen)
 * cores do when that costs nothing: the differential harness masks those anyway, and matching
 * one real CPU keeps the difference small where it does not. */
#include <Zydis/Zydis.h>

#include "engine/soft/exec_bit.h"

/* ---- shifts ---------------------------------------------------------------------------------- */

/* The count in op[i] (an immediate or CL), masked to 5 bits, 6 for a 64-bit operand. */
static inline unsigned shift_count(const struct soft_cpu *c, const struct insn *in, unsigned i)
{
	uint64_t n = in->op[i].kind == OPK_IMM ? in->imm : gpr_read(c, in->op[i].reg, 1);
	return (unsigned)n & (in->op[0].size == 8 ? 63u : 31u);
}

/* A masked count of 0 changes no flags, but the destination is still written: a 32-bit register
 * has its upper half cleared and memory takes a write access (a read-only page faults). */
static inline void write_unchanged(struct soft_cpu *c, const struct insn *in, uint64_t v)
{
	opnd_write(c, in, 0, v);
}

static inline void shift(struct soft_cpu *c, const struct insn *in, unsigned op)
{
	unsigned sz = in->op[0].size;
	unsigned n = shift_count(c, in, 1);
	uint64_t a = opnd_read_rmw(c, in, 0), r;
	if (!n) {
		write_unchanged(c, in, a);
		return;
	}
	if (op == LF_SHL)
		r = a << n;
	else if (op == LF_SHR)
		r = a >> n;
	else
		r = (uint64_t)((int64_t)sign_extend(a, sz) >> n);
	r &= size_mask(sz);
	opnd_write(c, in, 0, r);
	lf_set(c, op, sz, r, a, n);
}

static void h_shl(struct soft_cpu *c, const struct insn *in)
{
	shift(c, in, LF_SHL);
}

static void h_shr(struct soft_cpu *c, const struct insn *in)
{
	shift(c, in, LF_SHR);
}

static void h_sar(struct soft_cpu *c, const struct insn *in)
{
	shift(c, in, LF_SAR);
}

/* The hot forms: a 32- or 64-bit register shifted by an immediate (whose masked count the
 * select function checked is not 0) or by CL. */
#define SHIFT_REG(name, type, bits, expr, lfop)                                                    \
	static void h_##name##_r##bits##_imm(struct soft_cpu *c, const struct insn *in)            \
	{                                                                                          \
		uint64_t *p = bit_gpr_ptr(c, in->op[0].reg);                                       \
		type a = (type)*p;                                                                 \
		unsigned n = (unsigned)in->imm & ((bits)-1);                                       \
		type r = (type)(expr);                                                             \
		*p = r;                                                                            \
		lf_set(c, lfop, (bits) / 8, r, a, n);                                              \
	}                                                                                          \
	static void h_##name##_r##bits##_cl(struct soft_cpu *c, const struct insn *in)             \
	{                                                                                          \
		uint64_t *p = bit_gpr_ptr(c, in->op[0].reg);                                       \
		type a = (type)*p;                                                                 \
		unsigned n = (unsigned)c->gpr[GPR_RCX] & ((bits)-1);                               \
		if (unlikely(!n)) {                                                                \
			*p = a;                                                                    \
			return;                                                                    \
		}                                                                                  \
		type r = (type)(expr);                                                             \
		*p = r;                                                                            \
		lf_set(c, lfop, (bits) / 8, r, a, n);                                              \
	}

SHIFT_REG(shl, uint64_t, 64, a << n, LF_SHL)
SHIFT_REG(shr, uint64_t, 64, a >> n, LF_SHR)
SHIFT_REG(sar, uint64_t, 64, (int64_t)a >> n, LF_SAR)
SHIFT_REG(shl, uint32_t, 32, a << n, LF_SHL)
SHIFT_REG(shr, uint32_t, 32, a >> n, LF_SHR)
SHIFT_REG(sar, uint32_t, 32, (int32_t)a >> n, LF_SAR)

static inline insn_fn select_shift(const struct insn *in, insn_fn r64i, insn_fn r32i, insn_fn r64c,
				   insn_fn r32c, insn_fn generic)
{
	unsigned sz = in->op[0].size;
	if (in->op[0].kind != OPK_REG || (sz != 8 && sz != 4))
		return generic;
	if (in->op[1].kind == OPK_REG)
		return sz == 8 ? r64c : r32c;
	if ((in->imm & (sz == 8 ? 63 : 31)) == 0)
		return generic; /* count 0: only the zero extension */
	return sz == 8 ? r64i : r32i;
}

static insn_fn sel_shl(const struct insn *in)
{
	return select_shift(in, h_shl_r64_imm, h_shl_r32_imm, h_shl_r64_cl, h_shl_r32_cl, h_shl);
}

static insn_fn sel_shr(const struct insn *in)
{
	return select_shift(in, h_shr_r64_imm, h_shr_r32_imm, h_shr_r64_cl, h_shr_r32_cl, h_shr);
}

static insn_fn sel_sar(const struct insn *in)
{
	return select_shift(in, h_sar_r64_imm, h_sar_r32_imm, h_sar_r64_cl, h_sar_r32_cl, h_sar);
}

/* ---- rotates --------------------------------------------------------------------------------- */

/* rol/ror: CF is the bit that went round; OF (defined for a count of 1) is computed the same
 * way for every count, as AMD does: rol MSB ^ CF, ror the top two bits' XOR. */
static inline void rotate(struct soft_cpu *c, const struct insn *in, bool left)
{
	unsigned sz = in->op[0].size, bits = sz * 8;
	unsigned n = shift_count(c, in, 1);
	uint64_t a = opnd_read_rmw(c, in, 0);
	if (!n) {
		write_unchanged(c, in, a);
		return;
	}
	unsigned k = n & (bits - 1);
	if (!left)
		k = (bits - k) & (bits - 1);
	uint64_t r = k ? ((a << k) | (a >> (bits - k))) & size_mask(sz) : a;
	opnd_write(c, in, 0, r);
	lf_rot(c, left ? LF_ROL : LF_ROR, sz, r);
}

/* The hot rotate forms (hash functions are made of them): a 32- or 64-bit register by a
 * non-zero immediate or by CL; the flags stay lazy (lf_rot). */
#define ROTATE_REG(name, type, bits, left, lfop)                                                   \
	static inline type name##_##bits(type a, unsigned n)                                       \
	{                                                                                          \
		return left ? (type)(a << n | a >> ((bits)-n)) : (type)(a >> n | a << ((bits)-n)); \
	}                                                                                          \
	static void h_##name##_r##bits##_imm(struct soft_cpu *c, const struct insn *in)            \
	{                                                                                          \
		uint64_t *p = bit_gpr_ptr(c, in->op[0].reg);                                       \
		type r = name##_##bits((type)*p, (unsigned)in->imm & ((bits)-1));                  \
		*p = r;                                                                            \
		lf_rot(c, lfop, (bits) / 8, r);                                                    \
	}                                                                                          \
	static void h_##name##_r##bits##_cl(struct soft_cpu *c, const struct insn *in)             \
	{                                                                                          \
		uint64_t *p = bit_gpr_ptr(c, in->op[0].reg);                                       \
		type a = (type)*p;                                                                 \
		unsigned n = (unsigned)c->gpr[GPR_RCX] & ((bits)-1);                               \
		if (unlikely(!n)) {                                                                \
			*p = a; /* no flags change; a 32-bit register is still zero-extended */    \
			return;                                                                    \
		}                                                                                  \
		type r = name##_##bits(a, n);                                                      \
		*p = r;                                                                            \
		lf_rot(c, lfop, (bits) / 8, r);                                                    \
	}

ROTATE_REG(rol, uint64_t, 64, true, LF_ROL)
ROTATE_REG(ror, uint64_t, 64, false, LF_ROR)
ROTATE_REG(rol, uint32_t, 32, true, LF_ROL)
ROTATE_REG(ror, uint32_t, 32, false, LF_ROR)

static void h_rol(struct soft_cpu *c, const struct insn *in)
{
	rotate(c, in, true);
}

static void h_ror(struct soft_cpu *c, const struct insn *in)
{
	rotate(c, in, false);
}

static insn_fn sel_rol(const struct insn *in)
{
	return select_shift(in, h_rol_r64_imm, h_rol_r32_imm, h_rol_r64_cl, h_rol_r32_cl, h_rol);
}

static insn_fn sel_ror(const struct insn *in)
{
	return select_shift(in, h_ror_r64_imm, h_ror_r32_imm, h_ror_r64_cl, h_ror_r32_cl, h_ror);
}

/* rcl/rcr rotate the operand with CF above it: bits + 1 bits, so 8- and 16-bit operands take
 * the count modulo 9 and 17. A masked count that is a multiple of that still updates OF. */
static inline void rotate_carry(struct soft_cpu *c, const struct insn *in, bool left)
{
	unsigned sz = in->op[0].size, bits = sz * 8;
	unsigned n = shift_count(c, in, 1);
	uint64_t a = opnd_read_rmw(c, in, 0);
	if (!n) {
		write_unchanged(c, in, a);
		return;
	}
	if (bits < 32)
		n %= bits + 1;
	uint64_t cf = soft_cf(c), r = a;
	if (n) {
		u128 wide = ((u128)cf << bits) | a;
		unsigned k = left ? n : bits + 1 - n;
		wide = ((wide << k) | (wide >> (bits + 1 - k))) & (((u128)1 << (bits + 1)) - 1);
		r = (uint64_t)wide & size_mask(sz);
		cf = (uint64_t)(wide >> bits) & 1;
	}
	opnd_write(c, in, 0, r);
	uint64_t msb = (r >> (bits - 1)) & 1;
	uint64_t of = left ? msb ^ cf : msb ^ ((r >> (bits - 2)) & 1);
	soft_set_flags(c, (cf ? FL_CF : 0) | (of ? FL_OF : 0), FL_CF | FL_OF);
}

static void h_rcl(struct soft_cpu *c, const struct insn *in)
{
	rotate_carry(c, in, true);
}

static void h_rcr(struct soft_cpu *c, const struct insn *in)
{
	rotate_carry(c, in, false);
}

/* ---- double shifts --------------------------------------------------------------------------- */

/* shld/shrd dst, src, count. CF is the last bit shifted out of dst; OF follows the rule the SDM
 * gives for a count of 1 at every count (shld: MSB ^ CF, shrd: the top two bits' XOR); AF is
 * undefined and set, as on AMD. A 16-bit operand with a count above 16 is undefined: AMD shifts
 * through dst:src:src (shld) or src:src:dst (shrd) and clears CF; its OF after a 16-bit shld
 * by 16 or more is CF. */
static inline void double_shift(struct soft_cpu *c, const struct insn *in, bool left)
{
	unsigned sz = in->op[0].size, bits = sz * 8;
	unsigned n = shift_count(c, in, 2);
	uint64_t d = opnd_read_rmw(c, in, 0), s = gpr_read(c, in->op[1].reg, sz), r, cf;
	if (!n) {
		write_unchanged(c, in, d);
		return;
	}
	if (bits == 16) {
		uint64_t wide = left ? (d << 32) | (s << 16) | s : (s << 32) | (s << 16) | d;
		r = (left ? wide >> (32 - n) : wide >> n) & 0xffff;
		cf = n > 16 ? 0 : (left ? wide >> (48 - n) : wide >> (n - 1)) & 1;
	} else if (left) {
		r = ((d << n) | (s >> (bits - n))) & size_mask(sz);
		cf = (d >> (bits - n)) & 1;
	} else {
		r = ((d >> n) | (s << (bits - n))) & size_mask(sz);
		cf = (d >> (n - 1)) & 1;
	}
	opnd_write(c, in, 0, r);
	uint64_t msb = (r >> (bits - 1)) & 1, of;
	if (left)
		of = bits == 16 && n >= 16 ? cf : msb ^ cf;
	else
		of = msb ^ ((r >> (bits - 2)) & 1);
	bit_set_arith_flags(c, (cf ? FL_CF : 0) | (of ? FL_OF : 0) | FL_AF | bit_szp_flags(r, sz));
}

static void h_shld(struct soft_cpu *c, const struct insn *in)
{
	double_shift(c, in, true);
}

static void h_shrd(struct soft_cpu *c, const struct insn *in)
{
	double_shift(c, in, false);
}

/* ---- bit tests ------------------------------------------------------------------------------- */

enum bt_op { BT_TEST, BT_SET, BT_RESET, BT_COMPLEMENT };

static inline uint64_t bt_apply(uint64_t v, uint64_t mask, enum bt_op op)
{
	switch (op) {
	case BT_SET:
		return v | mask;
	case BT_RESET:
		return v & ~mask;
	case BT_COMPLEMENT:
		return v ^ mask;
	default:
		return v;
	}
}

/* lock bts/btr/btc: the whole operand must be writable (that is what faults), but only the byte
 * that holds the bit changes, so one atomic byte operation does it: it never crosses a page or
 * a cache line, and the other bytes are left as they are. Returns the bit's old value. */
static bool bt_locked(struct soft_cpu *c, uint64_t addr, unsigned sz, unsigned bit, enum bt_op op)
{
	uint8_t *whole = soft_mem(c, addr, sz, ACC_WRITE);
	uint8_t *p = whole ? whole + bit / 8 : soft_mem(c, addr + bit / 8, 1, ACC_WRITE);
	if (!p) /* only memory-mapped I/O has no host byte to operate on atomically */
		soft_fail(c, "a LOCKed bit operation on memory-mapped I/O at 0x%llx",
			  (unsigned long long)addr + bit / 8);
	uint8_t m = (uint8_t)(1u << (bit & 7)), old;
	if (op == BT_SET)
		old = __atomic_fetch_or(p, m, __ATOMIC_SEQ_CST);
	else if (op == BT_RESET)
		old = __atomic_fetch_and(p, (uint8_t)~m, __ATOMIC_SEQ_CST);
	else
		old = __atomic_fetch_xor(p, m, __ATOMIC_SEQ_CST);
	return (old & m) != 0;
}

/* The address of a bit test's memory operand moved by delta bytes, wrapped to the address size
 * as the effective-address computation is (the FS/GS base is added after it). */
static inline uint64_t bt_addr(const struct soft_cpu *c, const struct insn *in, int64_t delta)
{
	const struct mem_ref *m = &in->mem;
	uint64_t base = m->seg == SEG_FS || m->seg == SEG_GS ? c->seg[m->seg].base : 0;
	uint64_t a = insn_addr(c, in) - base + (uint64_t)delta;
	if (m->asize == 4)
		a = (uint32_t)a;
	else if (m->asize == 2)
		a = (uint16_t)a;
	return a + base;
}

static inline void bit_test(struct soft_cpu *c, const struct insn *in, enum bt_op op)
{
	unsigned sz = in->op[0].size, bits = sz * 8;
	uint64_t off = opnd_read(c, in, 1), cf;
	if (in->op[0].kind == OPK_REG) {
		uint64_t v = gpr_read(c, in->op[0].reg, sz), mask = 1ull << (off & (bits - 1));
		cf = (v & mask) != 0;
		if (op != BT_TEST)
			gpr_write(c, in->op[0].reg, bt_apply(v, mask, op), sz);
	} else {
		uint64_t addr;
		if (in->op[1].kind == OPK_IMM) {
			addr = insn_addr(c, in);
		} else {
			/* A register offset is a signed index into a bit string that starts at the
			 * operand: the operand-sized unit that holds the bit is accessed. */
			int64_t soff = (int64_t)sign_extend(off, sz);
			int64_t unit = soff >> (sz == 8 ? 6 : sz == 4 ? 5 : 4);
			addr = bt_addr(c, in, unit * (int64_t)sz);
		}
		unsigned bit = (unsigned)off & (bits - 1);
		if ((in->prefix & PFX_LOCK) && op != BT_TEST) {
			cf = bt_locked(c, addr, sz, bit, op);
		} else {
			uint64_t v =
			    op == BT_TEST ? soft_load(c, addr, sz) : soft_load_rmw(c, addr, sz);
			uint64_t mask = 1ull << bit;
			cf = (v & mask) != 0;
			if (op != BT_TEST)
				soft_store(c, addr, bt_apply(v, mask, op), sz);
		}
	}
	/* Only CF: ZF is defined as kept, and AMD keeps the undefined ones too. */
	soft_set_flags(c, cf ? FL_CF : 0, FL_CF);
}

static void h_bt(struct soft_cpu *c, const struct insn *in)
{
	bit_test(c, in, BT_TEST);
}

static void h_bts(struct soft_cpu *c, const struct insn *in)
{
	bit_test(c, in, BT_SET);
}

static void h_btr(struct soft_cpu *c, const struct insn *in)
{
	bit_test(c, in, BT_RESET);
}

static void h_btc(struct soft_cpu *c, const struct insn *in)
{
	bit_test(c, in, BT_COMPLEMENT);
}

/* ---- bit scans and counts -------------------------------------------------------------------- */

/* bsf/bsr: a zero source sets ZF and leaves the destination alone -- all of it, even for a
 * 32-bit destination, as AMD documents (Intel clears the upper half). The undefined flags are
 * AMD's: CF, OF, SF, AF clear, PF from the index (from 0 for a zero source). Also tzcnt, which
 * CPUs without BMI1 (as this one says it is) execute as bsf. */
static void h_bsf(struct soft_cpu *c, const struct insn *in)
{
	uint64_t s = opnd_read(c, in, 1);
	if (!s) {
		bit_set_arith_flags(c, FL_ZF | FL_PF);
		return;
	}
	uint64_t r = (uint64_t)__builtin_ctzll(s);
	gpr_write(c, in->op[0].reg, r, in->op[0].size);
	bit_set_arith_flags(c, parity8(r) ? FL_PF : 0);
}

static void h_bsr(struct soft_cpu *c, const struct insn *in)
{
	uint64_t s = opnd_read(c, in, 1);
	if (!s) {
		bit_set_arith_flags(c, FL_ZF | FL_PF);
		return;
	}
	uint64_t r = 63 - (uint64_t)__builtin_clzll(s);
	gpr_write(c, in->op[0].reg, r, in->op[0].size);
	bit_set_arith_flags(c, parity8(r) ? FL_PF : 0);
}

/* lzcnt (ABM): CF says the source was 0, ZF that the result is. AMD clears SF, PF and AF and
 * keeps OF. */
static void h_lzcnt(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->op[0].size, bits = sz * 8;
	uint64_t s = opnd_read(c, in, 1);
	uint64_t r = s ? (uint64_t)__builtin_clzll(s) - (64 - bits) : bits;
	gpr_write(c, in->op[0].reg, r, sz);
	soft_set_flags(c, (s ? 0 : FL_CF) | (r ? 0 : FL_ZF), FL_ARITH & ~(uint64_t)FL_OF);
}

static void h_popcnt(struct soft_cpu *c, const struct insn *in)
{
	uint64_t s = opnd_read(c, in, 1);
	gpr_write(c, in->op[0].reg, (uint64_t)__builtin_popcountll(s), in->op[0].size);
	bit_set_arith_flags(c, s ? 0 : FL_ZF);
}

void soft_register_bit(void)
{
	soft_register(ZYDIS_MNEMONIC_SHL, sel_shl); /* sal decodes as shl */
	soft_register(ZYDIS_MNEMONIC_SHR, sel_shr);
	soft_register(ZYDIS_MNEMONIC_SAR, sel_sar);
	soft_register(ZYDIS_MNEMONIC_ROL, sel_rol);
	soft_register(ZYDIS_MNEMONIC_ROR, sel_ror);
	soft_register_fn(ZYDIS_MNEMONIC_RCL, h_rcl);
	soft_register_fn(ZYDIS_MNEMONIC_RCR, h_rcr);
	soft_register_fn(ZYDIS_MNEMONIC_SHLD, h_shld);
	soft_register_fn(ZYDIS_MNEMONIC_SHRD, h_shrd);
	soft_register_fn(ZYDIS_MNEMONIC_BT, h_bt);
	soft_register_fn(ZYDIS_MNEMONIC_BTS, h_bts);
	soft_register_fn(ZYDIS_MNEMONIC_BTR, h_btr);
	soft_register_fn(ZYDIS_MNEMONIC_BTC, h_btc);
	soft_register_fn(ZYDIS_MNEMONIC_BSF, h_bsf);
	soft_register_fn(ZYDIS_MNEMONIC_TZCNT, h_bsf); /* F3 0F BC without BMI1 */
	soft_register_fn(ZYDIS_MNEMONIC_BSR, h_bsr);
	soft_register_fn(ZYDIS_MNEMONIC_LZCNT, h_lzcnt);
	soft_register_fn(ZYDIS_MNEMONIC_POPCNT, h_popcnt);
}
