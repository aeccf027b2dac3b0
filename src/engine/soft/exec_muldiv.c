/* Multiplication and division: mul, imul (one, two and three operands), div, idiv. */
#include <Zydis/Zydis.h>

#include "engine/soft/exec_bit.h"

#define REG_RAX ((gpr_ref)(GPR_RAX * 8))
#define REG_RDX ((gpr_ref)(GPR_RDX * 8))

/* After a multiplication CF = OF = "the result did not fit in the low half". SF, ZF, AF and PF
 * are undefined; here they are those of the low half as after a logic operation (AF clear),
 * which keeps them lazy: the product without overflow, the common case, is just recorded. (AMD
 * keeps the previous SF/ZF/AF/PF, which would mean computing the previous flags every time.) */
static inline void mul_flags(struct soft_cpu *c, bool overflow, uint64_t low, unsigned sz)
{
	if (likely(!overflow))
		lf_set(c, LF_LOGIC, sz, low, low, 0);
	else
		bit_set_arith_flags(c, FL_CF | FL_OF | bit_szp_flags(low, sz));
}

/* ---- one operand: rDX:rAX = rAX * r/m -------------------------------------------------------- */

static void h_mul(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->op[0].size;
	uint64_t s = opnd_read(c, in, 0), a = gpr_read(c, REG_RAX, sz), lo, hi;
	if (sz == 8) {
		u128 p = (u128)a * s;
		lo = (uint64_t)p;
		hi = (uint64_t)(p >> 64);
	} else {
		uint64_t p = a * s; /* at most 64 bits */
		lo = p & size_mask(sz);
		hi = p >> (sz * 8);
	}
	if (sz == 1) {
		gpr_write(c, REG_RAX, lo | hi << 8, 2); /* AX */
	} else {
		gpr_write(c, REG_RAX, lo, sz);
		gpr_write(c, REG_RDX, hi, sz);
	}
	mul_flags(c, hi != 0, lo, sz);
}

static void h_imul1(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->op[0].size;
	int64_t s = (int64_t)sign_extend(opnd_read(c, in, 0), sz);
	int64_t a = (int64_t)sign_extend(gpr_read(c, REG_RAX, sz), sz);
	uint64_t lo, hi;
	bool overflow;
	if (sz == 8) {
		s128 p = (s128)a * s;
		lo = (uint64_t)p;
		hi = (uint64_t)((u128)p >> 64);
		overflow = hi != 0 - (lo >> 63); /* not the sign extension of lo */
	} else {
		int64_t p = a * s; /* |p| <= 2^62 */
		lo = (uint64_t)p & size_mask(sz);
		hi = ((uint64_t)p >> (sz * 8)) & size_mask(sz);
		overflow = sign_extend(lo, sz) != (uint64_t)p;
	}
	if (sz == 1) {
		gpr_write(c, REG_RAX, lo | hi << 8, 2);
	} else {
		gpr_write(c, REG_RAX, lo, sz);
		gpr_write(c, REG_RDX, hi, sz);
	}
	mul_flags(c, overflow, lo, sz);
}

/* ---- two and three operands: r = r * r/m, r = r/m * imm -------------------------------------- */

static void h_imul(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->op[0].size;
	uint64_t a, b;
	if (in->nops == 3) {
		a = opnd_read(c, in, 1);
		b = in->imm;
	} else {
		a = gpr_read(c, in->op[0].reg, sz);
		b = opnd_read(c, in, 1);
	}
	int64_t p;
	bool overflow;
	if (sz == 8) {
		overflow = __builtin_mul_overflow((int64_t)a, (int64_t)b, &p);
	} else {
		p = (int64_t)sign_extend(a, sz) * (int64_t)sign_extend(b, sz);
		overflow = sign_extend((uint64_t)p, sz) != (uint64_t)p;
	}
	gpr_write(c, in->op[0].reg, (uint64_t)p, sz);
	mul_flags(c, overflow, (uint64_t)p & size_mask(sz), sz);
}

/* The hot forms, with nothing left to decide. */
static void h_imul_r64_r64(struct soft_cpu *c, const struct insn *in)
{
	uint64_t *d = bit_gpr_ptr(c, in->op[0].reg);
	int64_t p;
	bool overflow =
	    __builtin_mul_overflow((int64_t)*d, (int64_t)*bit_gpr_ptr(c, in->op[1].reg), &p);
	*d = (uint64_t)p;
	mul_flags(c, overflow, (uint64_t)p, 8);
}

static void h_imul_r64_m64(struct soft_cpu *c, const struct insn *in)
{
	int64_t b = (int64_t)soft_load(c, insn_addr(c, in), 8), p;
	uint64_t *d = bit_gpr_ptr(c, in->op[0].reg);
	bool overflow = __builtin_mul_overflow((int64_t)*d, b, &p);
	*d = (uint64_t)p;
	mul_flags(c, overflow, (uint64_t)p, 8);
}

static void h_imul_r64_r64_imm(struct soft_cpu *c, const struct insn *in)
{
	int64_t p;
	bool overflow =
	    __builtin_mul_overflow((int64_t)*bit_gpr_ptr(c, in->op[1].reg), (int64_t)in->imm, &p);
	*bit_gpr_ptr(c, in->op[0].reg) = (uint64_t)p;
	mul_flags(c, overflow, (uint64_t)p, 8);
}

static void h_imul_r32_r32(struct soft_cpu *c, const struct insn *in)
{
	uint64_t *d = bit_gpr_ptr(c, in->op[0].reg);
	int64_t p = (int64_t)(int32_t)*d * (int32_t)*bit_gpr_ptr(c, in->op[1].reg);
	*d = (uint32_t)p;
	mul_flags(c, p != (int32_t)p, (uint32_t)p, 4);
}

static void h_imul_r32_r32_imm(struct soft_cpu *c, const struct insn *in)
{
	int64_t p = (int64_t)(int32_t)*bit_gpr_ptr(c, in->op[1].reg) * (int32_t)in->imm;
	*bit_gpr_ptr(c, in->op[0].reg) = (uint32_t)p;
	mul_flags(c, p != (int32_t)p, (uint32_t)p, 4);
}

static insn_fn sel_imul(const struct insn *in)
{
	unsigned sz = in->op[0].size;
	if (in->nops == 1)
		return h_imul1;
	if (in->op[1].kind == OPK_REG && (sz == 8 || sz == 4)) {
		if (in->nops == 3)
			return sz == 8 ? h_imul_r64_r64_imm : h_imul_r32_r32_imm;
		return sz == 8 ? h_imul_r64_r64 : h_imul_r32_r32;
	}
	if (in->nops == 2 && in->op[1].kind == OPK_MEM && sz == 8)
		return h_imul_r64_m64;
	return h_imul;
}

/* ---- division -------------------------------------------------------------------------------- */

/* The flags after div/idiv are undefined. AMD clears SF, ZF and PF, sets AF and keeps CF and
 * OF; cheap enough next to a division. */
static inline void div_flags(struct soft_cpu *c)
{
	soft_set_flags(c, FL_AF, FL_SF | FL_ZF | FL_AF | FL_PF);
}

/* Quotient and remainder go to rAX and rDX (AL and AH for a byte divisor). */
static inline void div_result(struct soft_cpu *c, unsigned sz, uint64_t q, uint64_t r)
{
	if (sz == 1) {
		gpr_write(c, REG_RAX, (q & 0xff) | (r & 0xff) << 8, 2);
	} else {
		gpr_write(c, REG_RAX, q, sz);
		gpr_write(c, REG_RDX, r, sz);
	}
	div_flags(c);
}

/* #DE for a zero divisor and for a quotient that does not fit the destination. */
static void h_div(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->op[0].size;
	uint64_t d = opnd_read(c, in, 0), q, r;
	if (!d)
		soft_fault(c, EXC_DE, 0);
	if (sz == 8) {
		uint64_t hi = c->gpr[GPR_RDX], lo = c->gpr[GPR_RAX];
		if (hi >= d)
			soft_fault(c, EXC_DE, 0);
		if (!hi) {
			q = lo / d;
			r = lo % d;
		} else {
			u128 n = ((u128)hi << 64) | lo;
			q = (uint64_t)(n / d);
			r = (uint64_t)(n % d);
		}
	} else {
		uint64_t n = sz == 1
				 ? gpr_read(c, REG_RAX, 2)
				 : gpr_read(c, REG_RDX, sz) << (sz * 8) | gpr_read(c, REG_RAX, sz);
		q = n / d;
		r = n % d;
		if (q > size_mask(sz))
			soft_fault(c, EXC_DE, 0);
	}
	div_result(c, sz, q, r);
}

/* Signed 128 / 64 bits on magnitudes (no C overflow for INT128_MIN / -1); #DE unless the
 * quotient fits in 64 signed bits. */
static void idiv128(struct soft_cpu *c, uint64_t hi, uint64_t lo, int64_t d, uint64_t *q,
		    uint64_t *r)
{
	bool nneg = (int64_t)hi < 0, dneg = d < 0;
	u128 n = ((u128)hi << 64) | lo;
	if (nneg)
		n = -n;
	uint64_t ud = dneg ? -(uint64_t)d : (uint64_t)d;
	u128 uq = n / ud;
	uint64_t ur = (uint64_t)(n % ud);
	if (uq > (nneg != dneg ? 1ull << 63 : (1ull << 63) - 1))
		soft_fault(c, EXC_DE, 0);
	*q = nneg != dneg ? -(uint64_t)uq : (uint64_t)uq;
	*r = nneg ? -ur : ur;
}

static void h_idiv(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->op[0].size;
	int64_t d = (int64_t)sign_extend(opnd_read(c, in, 0), sz);
	uint64_t q, r;
	if (!d)
		soft_fault(c, EXC_DE, 0);
	if (sz == 8) {
		uint64_t hi = c->gpr[GPR_RDX], lo = c->gpr[GPR_RAX];
		if (hi == 0 - (lo >> 63) && !((int64_t)lo == INT64_MIN && d == -1)) {
			/* The dividend fits in 64 bits: so does the quotient. */
			q = (uint64_t)((int64_t)lo / d);
			r = (uint64_t)((int64_t)lo % d);
		} else {
			idiv128(c, hi, lo, d, &q, &r);
		}
	} else {
		/* At most 64 bits of dividend: plain int64 arithmetic, but INT64_MIN / -1 (a 32-bit
		 * divide of 0x8000000000000000) would overflow C's as well as the result. */
		int64_t n = sz == 1 ? (int64_t)(int16_t)gpr_read(c, REG_RAX, 2)
				    : (int64_t)sign_extend(gpr_read(c, REG_RDX, sz) << (sz * 8) |
							       gpr_read(c, REG_RAX, sz),
							   sz * 2);
		if (n == INT64_MIN && d == -1)
			soft_fault(c, EXC_DE, 0);
		int64_t sq = n / d, lim = (int64_t)1 << (sz * 8 - 1);
		if (sq < -lim || sq >= lim)
			soft_fault(c, EXC_DE, 0);
		q = (uint64_t)sq;
		r = (uint64_t)(n % d);
	}
	div_result(c, sz, q, r);
}

void soft_register_muldiv(void)
{
	soft_register_fn(ZYDIS_MNEMONIC_MUL, h_mul);
	soft_register(ZYDIS_MNEMONIC_IMUL, sel_imul);
	soft_register_fn(ZYDIS_MNEMONIC_DIV, h_div);
	soft_register_fn(ZYDIS_MNEMONIC_IDIV, h_idiv);
}
