/* Lazy arithmetic flags. Handlers record the last flag-setting operation; the flags are
 * computed here only when an instruction reads them. Conditions after the common operations
 * (CMP/SUB, the logic ops, ADD, INC/DEC) are answered straight from the recorded operands
 * (soft_cond_fast in exec_alu.h). */
#include "engine/soft/exec_alu.h"

static inline uint64_t sign_bit(unsigned si)
{
	return 1ull << ((8u << si) - 1);
}

/* The flags the shifts leave (AF is undefined after them: 0 here). */
static uint64_t shift_flags(unsigned lfop, uint64_t res_in, uint64_t src1, uint64_t src2,
			    uint64_t rflags)
{
	unsigned op = lfop & ~3u, si = lfop & 3u;
	unsigned bits = 8u << si;
	uint64_t mask = size_mask(bits / 8), sb = sign_bit(si);
	uint64_t res = res_in & mask, a = src1 & mask, b = src2 & mask;
	uint64_t f = 0;
	bool cf = false, of = false;

	switch (op) {
	case LF_SHL: /* b = count, 1..63 after masking */
		cf = b <= bits ? (a >> (bits - b)) & 1 : 0;
		of = ((res & sb) != 0) != cf;
		break;
	case LF_SHR:
		cf = b <= bits ? (a >> (b - 1)) & 1 : 0;
		of = (a & sb) != 0; /* defined for a count of 1: the original sign */
		break;
	case LF_SAR:
		/* The last bit shifted out; past the width, copies of the sign bit. */
		cf = b <= bits ? (a >> (b - 1)) & 1 : (a & sb) != 0;
		of = false;
		break;
	default:
		return rflags & FL_ARITH;
	}
	if (cf)
		f |= FL_CF;
	if (parity8(res))
		f |= FL_PF;
	if (res == 0)
		f |= FL_ZF;
	if (res & sb)
		f |= FL_SF;
	if (of)
		f |= FL_OF;
	return f;
}

/* The arithmetic operations are done again by the host on the recorded inputs, and their flags
 * are the host's: ADD, ADC, SUB, SBB and NEG define all six, INC and DEC all but CF, which they
 * keep. CF goes in first (the carry-in of ADC/SBB, the CF that INC/DEC keep; 0 or 1). LAHF
 * gives SF, ZF, AF, PF and CF at their own bit positions, SETO gives OF. INC and DEC record
 * only their result and CF: they are redone from the result. The logic operations are a TEST
 * of their result (CF = OF = 0), less AF, which they leave undefined (0 here). */
#define HOST_OP(text, x, y)                                                                        \
	__asm__("btq $0, %q4\n\t" text "\n\tlahf\n\tseto %%al"                                     \
		: "=&a"(ax), "+r"(x)                                                               \
		: "r"(y), "0"(0), "r"(src3)                                                        \
		: "cc")
#define HOST_CASES(si, sfx, m)                                                                     \
	case LF_ADD + (si):                                                                        \
		HOST_OP("add" sfx " %" m "2, %" m "1", src1, src2);                                \
		break;                                                                             \
	case LF_ADC + (si):                                                                        \
		HOST_OP("adc" sfx " %" m "2, %" m "1", src1, src2);                                \
		break;                                                                             \
	case LF_SUB + (si):                                                                        \
		HOST_OP("sub" sfx " %" m "2, %" m "1", src1, src2);                                \
		break;                                                                             \
	case LF_SBB + (si):                                                                        \
		HOST_OP("sbb" sfx " %" m "2, %" m "1", src1, src2);                                \
		break;                                                                             \
	case LF_NEG + (si):                                                                        \
		HOST_OP("neg" sfx " %" m "1", src1, src2);                                         \
		break;                                                                             \
	case LF_INC + (si):                                                                        \
		src1 = res - 1;                                                                    \
		HOST_OP("inc" sfx " %" m "1", src1, src2);                                         \
		break;                                                                             \
	case LF_DEC + (si):                                                                        \
		src1 = res + 1;                                                                    \
		HOST_OP("dec" sfx " %" m "1", src1, src2);                                         \
		break;                                                                             \
	case LF_LOGIC + (si):                                                                      \
		HOST_OP("test" sfx " %" m "1, %" m "1", res, src2);                                \
		ax &= ~(uint64_t)(FL_AF << 8);                                                     \
		break;

/* The flags of one recorded operation; rflags supplies them for LF_NONE. */
static uint64_t compute_op(unsigned lfop, uint64_t res, uint64_t src1, uint64_t src2, uint64_t src3,
			   uint64_t rflags)
{
	uint64_t ax;
	src3 &= 1;
	switch (lfop) {
		HOST_CASES(0, "b", "b")
		HOST_CASES(1, "w", "w")
		HOST_CASES(2, "l", "k")
		HOST_CASES(3, "q", "q")
	default:
		return shift_flags(lfop, res, src1, src2, rflags);
	}
	return ((ax >> 8) & (FL_SF | FL_ZF | FL_AF | FL_PF | FL_CF)) | ((ax & 1) << 11);
}

/* After rotates: out of line, so soft_flags needs no stack frame for the common case. */
static __attribute__((noinline)) uint64_t compute_rotate(const struct soft_cpu *c)
{
	unsigned op = c->lf.op & ~3u;
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

static inline uint64_t compute(const struct soft_cpu *c)
{
	unsigned op = c->lf.op & ~3u;
	if (unlikely(op == LF_ROL || op == LF_ROR))
		return compute_rotate(c);
	return compute_op(c->lf.op, c->lf.res, c->lf.src1, c->lf.src2, c->lf.src3, c->rflags);
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

/* Each condition with its fast paths (exec_alu.h) inlined, so that one indirect jump on cc
 * leads to code that tests only the producers that condition can be answered from. */
#define COND_CASE(n)                                                                               \
	case n:                                                                                    \
		v = soft_cond_fast(c, n);                                                          \
		break;

bool soft_cond(struct soft_cpu *c, unsigned cc)
{
	int v;
	switch (cc & 15) {
		COND_CASE(0)
		COND_CASE(1)
		COND_CASE(2)
		COND_CASE(3)
		COND_CASE(4)
		COND_CASE(5)
		COND_CASE(6)
		COND_CASE(7)
		COND_CASE(8)
		COND_CASE(9)
		COND_CASE(10)
		COND_CASE(11)
		COND_CASE(12)
		COND_CASE(13)
		COND_CASE(14)
	default:
		v = soft_cond_fast(c, 15);
		break;
	}
	if (likely(v >= 0))
		return v;
	return soft_cond_flags(soft_flags(c), cc);
}
