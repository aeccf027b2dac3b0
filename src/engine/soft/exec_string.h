/* Helpers of the string group (exec_string.c) that the control and misc groups share: the
 * address size and segment of instructions whose memory operands are implicit.
 *
 * decode.c records the address size and segment only for a visible memory operand. String
 * instructions, xlat and loop/jrcxz have none, so their 67h and segment-override prefixes are
 * not in struct insn. The common encodings carry no such prefix, which the instruction's
 * length shows; only the others read their own bytes again at run time. */
#ifndef FERRY_SOFT_EXEC_STRING_H
#define FERRY_SOFT_EXEC_STRING_H

#include <string.h>

#include "engine/soft/soft.h"

/* The implicit-operand environment of an instruction. */
struct implicit_env {
	unsigned asize; /* address size in bytes: 8, 4 or 2 */
	uint64_t amask; /* size_mask(asize) */
	uint64_t base;  /* the base of the overridable (DS) segment: FS/GS, else 0 */
};

static inline bool soft_long_mode(const struct soft_cpu *c)
{
	return (c->efer & EFER_LMA) && c->seg[SEG_CS].l;
}

/* The address size without a 67h prefix. */
static inline unsigned default_asize(const struct soft_cpu *c)
{
	return soft_long_mode(c) ? 8 : c->seg[SEG_CS].db ? 4 : 2;
}

/* The bytes of the instruction being executed. They were fetched when it was decoded; a
 * fault now is the fault that fetch would raise. */
static inline void insn_bytes(struct soft_cpu *c, const struct insn *in, uint8_t out[16])
{
	uint64_t va = c->insn_start;
	unsigned n = in->len, first = 0x1000 - (unsigned)(va & 0xfff);
	if (first > n)
		first = n;
	memcpy(out, soft_mem(c, va, first, ACC_EXEC), first);
	if (n > first)
		memcpy(out + first, soft_mem(c, va + first, n - first, ACC_EXEC), n - first);
}

/* Reads the legacy prefixes (and REX) of the instruction: fills e from its 67h and segment
 * prefixes and returns the offset of the opcode. The last segment prefix counts. */
static inline unsigned implicit_env_parse(struct soft_cpu *c, const struct insn *in,
					  struct implicit_env *e)
{
	uint8_t b[16];
	insn_bytes(c, in, b);
	bool lm = soft_long_mode(c), a67 = false;
	unsigned seg = SEG_DS, i;
	for (i = 0; i + 1 < in->len; i++) {
		if (b[i] == 0x67)
			a67 = true;
		else if (b[i] == 0x64)
			seg = SEG_FS;
		else if (b[i] == 0x65)
			seg = SEG_GS;
		else if (b[i] == 0x26 || b[i] == 0x2e || b[i] == 0x36 || b[i] == 0x3e)
			seg = SEG_DS; /* no base: the engine ignores them everywhere */
		else if (b[i] != 0x66 && b[i] != 0xf0 && b[i] != 0xf2 && b[i] != 0xf3 &&
			 !(lm && (b[i] & 0xf0) == 0x40))
			break;
	}
	unsigned def = default_asize(c);
	e->asize = !a67 ? def : def == 4 ? 2 : 4;
	e->amask = size_mask(e->asize);
	e->base = seg == SEG_FS || seg == SEG_GS ? c->seg[seg].base : 0;
	return i;
}

/* The environment of an instruction whose encoding without extra prefixes is base_len bytes
 * plus one per prefix decode.c recorded (rep/repne, 66h, REX.W). */
static inline void implicit_env(struct soft_cpu *c, const struct insn *in, unsigned base_len,
				struct implicit_env *e)
{
	unsigned known = (unsigned)__builtin_popcount(
	    in->prefix & (PFX_REP | PFX_REPNE | PFX_OPSIZE | PFX_REX_W));
	if (likely(in->len == base_len + known)) {
		e->asize = default_asize(c);
		e->amask = size_mask(e->asize);
		e->base = 0;
		return;
	}
	implicit_env_parse(c, in, e);
}

/* MOVSD and CMPSD are also SSE2 mnemonics. The string forms have no visible operands; a group
 * that registers those mnemonics after the string group must pass such forms to this. */
insn_fn soft_select_string(const struct insn *in);

#endif
