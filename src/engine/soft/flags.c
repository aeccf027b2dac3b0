/* Lazy arithmetic flags. Handlers record the last flag-setting operation; the flags are
 * computed here only when an instruction reads them. Conditional branches on the common
 * operations (CMP, SUB, logic, INC/DEC) are answered straight from the recorded operands. */
#include "engine/soft/soft.h"

static inline uint64_t sign_bit(unsigned si)
{
	return 1ull << ((8u << si) - 1);
}

/* The flags of one recorded operation; rflags supplies them for LF_NONE. */
static uint64_t compute_op(unsigned lfop, uint64_t res_in, uint64_t src1, uint64_t src2,
			   uint64_t src3, uint64_t rflags)
{
	unsigned op = lfop & ~3u, si = lfop & 3u;
	unsigned bits = 8u << si;
	uint64_t mask = size_mask(bits / 8), sb = sign_bit(si);
	uint64_t res = res_in & mask, a = src1 & mask, b = src2 & mask;
	uint64_t f = 0;
	bool cf = false, of = false, af = false;

	switch (op) {
	case LF_ADD:
		cf = res < a;
		of = ((a ^ res) & (b ^ res) & sb) != 0;
		af = ((a ^ b ^ res) & 0x10) != 0;
		break;
	case LF_ADC:
		cf = src3 ? res <= a : res < a;
		of = ((a ^ res) & (b ^ res) & sb) != 0;
		af = ((a ^ b ^ res) & 0x10) != 0;
		break;
	case LF_SUB:
		cf = a < b;
		of = ((a ^ b) & (a ^ res) & sb) != 0;
		af = ((a ^ b ^ res) & 0x10) != 0;
		break;
	case LF_SBB:
		cf = src3 ? a <= b : a < b;
		of = ((a ^ b) & (a ^ res) & sb) != 0;
		af = ((a ^ b ^ res) & 0x10) != 0;
		break;
	case LF_LOGIC:
		break;
	case LF_INC:
		cf = src3 != 0;
		of = res == sb;
		af = (res & 0xf) == 0;
		break;
	case LF_DEC:
		cf = src3 != 0;
		of = res == sb - 1;
		af = (res & 0xf) == 0xf;
		break;
	case LF_NEG:
		cf = a != 0;
		of = a == sb;
		af = ((a ^ res) & 0x10) != 0;
		break;
	case LF_SHL: /* b = count, 1..63 after masking */
		cf = b <= bits ? (a >> (bits - b)) & 1 : 0;
		of = ((res & sb) != 0) != cf;
		break;
	case LF_SHR:
		cf = b <= bits ? (a >> (b - 1)) & 1 : 0;
		of = (a & sb) != 0; /* defined for a count of 1: the original sign */
		break;
	case LF_SAR: {
		/* The last bit shifted out; past the width, copies of the sign bit. */
		cf = b <= bits ? (a >> (b - 1)) & 1 : (a & sb) != 0;
		of = false;
		break;
	}
	default:
		return rflags & FL_ARITH;
	}
	if (cf)
		f |= FL_CF;
	if (parity8(res))
		f |= FL_PF;
	if (af)
		f |= FL_AF;
	if (res == 0)
		f |= FL_ZF;
	if (res & sb)
		f |= FL_SF;
	if (of)
		f |= FL_OF;
	return f;
}

static uint64_t compute(const struct soft_cpu *c)
{
	unsigned op = c->lf.op & ~3u;
	if (op != LF_ROL && op != LF_ROR)
		return compute_op(c->lf.op, c->lf.res, c->lf.src1, c->lf.src2, c->lf.src3,
				  c->rflags);
	/* CF is the bit that went round; OF is computed as for a count of 1 whatever the count
	 * (what AMD does; the SDM leaves it undefined above 1): ROL MSB ^ CF, ROR the XOR of the
	 * top two bits. */
	unsigned bits = 8u << (c->lf.op & 3u);
	uint64_t r = c->lf.res, msb = (r >> (bits - 1)) & 1, cf, of;
	if (op == LF_ROL) {
		cf = r & 1;
		of = msb ^ cf;
	} else {
		cf = msb;
		of = msb ^ ((r >> (bits - 2)) & 1);
	}
	uint64_t base = compute_op(c->lf.base_op, c->lf.base_res, c->lf.base_src1, c->lf.base_src2,
				   c->lf.base_src3, c->rflags);
	return (base & ~(uint64_t)(FL_CF | FL_OF)) | (cf ? FL_CF : 0) | (of ? FL_OF : 0);
}

uint64_t soft_flags(struct soft_cpu *c)
{
	if (c->lf.op != LF_NONE) {
		c->rflags = (c->rflags & ~(uint64_t)FL_ARITH) | compute(c);
		c->lf.op = LF_NONE;
	}
	return c->rflags;
}

void soft_set_flags(struct soft_cpu *c, uint64_t v, uint64_t mask)
{
	c->rflags = (soft_flags(c) & ~mask) | (v & mask);
}

/* The condition from a set of materialized flags. */
static bool cond_from_flags(uint64_t f, unsigned cc)
{
	bool r;
	switch (cc >> 1) {
	case 0: /* O */
		r = f & FL_OF;
		break;
	case 1: /* B */
		r = f & FL_CF;
		break;
	case 2: /* E */
		r = f & FL_ZF;
		break;
	case 3: /* BE */
		r = f & (FL_CF | FL_ZF);
		break;
	case 4: /* S */
		r = f & FL_SF;
		break;
	case 5: /* P */
		r = f & FL_PF;
		break;
	case 6: /* L: SF != OF */
		r = !(f & FL_SF) != !(f & FL_OF);
		break;
	default: /* LE: ZF or SF != OF */
		r = (f & FL_ZF) || (!(f & FL_SF) != !(f & FL_OF));
		break;
	}
	return r ^ (cc & 1);
}

bool soft_cond(struct soft_cpu *c, unsigned cc)
{
	unsigned op = c->lf.op & ~3u, si = c->lf.op & 3u;
	uint64_t mask = size_mask(1u << si);
	/* Fast paths: answers from the operands, no flags computed. */
	if (op == LF_SUB) {
		uint64_t a = c->lf.src1 & mask, b = c->lf.src2 & mask;
		int64_t sa = (int64_t)sign_extend(a, 1u << si),
			sbv = (int64_t)sign_extend(b, 1u << si);
		bool r;
		switch (cc >> 1) {
		case 1:
			r = a < b;
			break;
		case 2:
			r = a == b;
			break;
		case 3:
			r = a <= b;
			break;
		case 6:
			r = sa < sbv;
			break;
		case 7:
			r = sa <= sbv;
			break;
		default:
			return cond_from_flags(soft_flags(c), cc);
		}
		return r ^ (cc & 1);
	}
	if ((cc >> 1) == 2 && op != LF_NONE && op <= LF_SAR) /* E/NE: ZF is res == 0 */
		return ((c->lf.res & mask) == 0) ^ (cc & 1);
	return cond_from_flags(soft_flags(c), cc);
}
