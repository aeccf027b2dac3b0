/* The integer group (exec_alu.c): what other files may hook into, and the condition codes
 * (jcc, setcc, cmovcc, the carry-in of adc/sbb) evaluated inline from the lazy flags. */
#ifndef FERRY_SOFT_EXEC_ALU_H
#define FERRY_SOFT_EXEC_ALU_H

#include "engine/soft/soft.h"

/* MOV to and from control and debug registers shares the MOV mnemonic with the integer moves,
 * so exec_alu.c owns its registration and asks exec_system.c for those forms. */
insn_fn soft_select_mov_crdr(const struct insn *in);

/* Condition cc (0..15, as in Jcc) from materialized flags f. */
static inline __attribute__((always_inline)) bool soft_cond_flags(uint64_t f, unsigned cc)
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

/* Condition cc straight from the lazy-flags record, without computing the flags: 1 or 0, or -1
 * when this record needs soft_cond (which computes them). For handlers that test one condition
 * fixed at decode time (cc a constant), so everything but the producer's test folds away.
 *
 * Values are compared shifted left by 64 - width: that drops the bits above the operand size,
 * and the operand's sign bit lands in bit 63, so unsigned and signed comparisons of the
 * shifted values are those of the operands. Every op below LF_COUNT has ZF, SF and PF from its
 * result. After SUB/CMP, B/BE/L/LE/O come from the operands; after the logic ops CF = OF = 0;
 * after ADD, CF is res < src1; INC and DEC keep CF in src3. */
static inline __attribute__((always_inline)) int soft_cond_fast(const struct soft_cpu *c,
								unsigned cc)
{
	static const uint8_t shift[4] = {56, 48, 32, 0};
	unsigned op = c->lf.op, kind = op & ~3u;
	unsigned sh = shift[op & 3];
	uint64_t r = c->lf.res << sh;
	bool v;
	switch (cc >> 1) {
	case 2: /* E */
		if (op - LF_ADD >= LF_COUNT - LF_ADD)
			goto other;
		v = r == 0;
		break;
	case 4: /* S */
		if (op - LF_ADD >= LF_COUNT - LF_ADD)
			goto other;
		v = (int64_t)r < 0;
		break;
	case 5: /* P */
		if (op - LF_ADD >= LF_COUNT - LF_ADD)
			goto other;
		v = parity8(c->lf.res);
		break;
	case 1: /* B */
		if (kind == LF_SUB)
			v = c->lf.src1 << sh < c->lf.src2 << sh;
		else if (kind == LF_LOGIC)
			v = false;
		else if (kind == LF_INC || kind == LF_DEC)
			v = c->lf.src3 != 0;
		else if (kind == LF_ADD)
			v = r < c->lf.src1 << sh;
		else
			goto other;
		break;
	case 3: /* BE */
		if (kind == LF_SUB)
			v = c->lf.src1 << sh <= c->lf.src2 << sh;
		else if (kind == LF_LOGIC)
			v = r == 0;
		else if (kind == LF_INC || kind == LF_DEC)
			v = c->lf.src3 != 0 || r == 0;
		else if (kind == LF_ADD)
			v = r < c->lf.src1 << sh || r == 0;
		else
			goto other;
		break;
	case 6: /* L */
		if (kind == LF_SUB)
			v = (int64_t)(c->lf.src1 << sh) < (int64_t)(c->lf.src2 << sh);
		else if (kind == LF_LOGIC)
			v = (int64_t)r < 0;
		else
			goto other;
		break;
	case 7: /* LE */
		if (kind == LF_SUB)
			v = (int64_t)(c->lf.src1 << sh) <= (int64_t)(c->lf.src2 << sh);
		else if (kind == LF_LOGIC)
			v = (int64_t)r <= 0;
		else
			goto other;
		break;
	default: /* O */
		if (kind == LF_SUB) {
			uint64_t a = c->lf.src1 << sh, b = c->lf.src2 << sh;
			v = (int64_t)((a ^ b) & (a ^ r)) < 0;
		} else if (kind == LF_LOGIC) {
			v = false;
		} else if (kind == LF_ADD) {
			uint64_t a = c->lf.src1 << sh, b = c->lf.src2 << sh;
			v = (int64_t)((a ^ r) & (b ^ r)) < 0;
		} else {
			goto other;
		}
		break;
	}
	return v ^ (cc & 1);
other:
	if (op == LF_NONE)
		return soft_cond_flags(c->rflags, cc);
	return -1;
}

#endif
