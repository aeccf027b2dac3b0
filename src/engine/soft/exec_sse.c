/* SSE and SSE2 (the CPUID's SIMD baseline; no MMX, no SSE3+), LDMXCSR/STMXCSR, FXSAVE/FXRSTOR
 * and the FXSAVE image of the architectural state.
 *
 * Integer, bitwise and data-movement instructions are done in C with SSE2 intrinsics: they are
 * exact and touch no MXCSR state. Floating-point instructions run the host's own instruction in
 * inline asm under the guest's rounding control, DAZ and FTZ with every exception masked, and
 * report the flags the host raised. The asm covers the MXCSR switch too: the compiler would move
 * an intrinsic across _mm_setcsr. From those flags and the guest's masks fp_run() decides between
 * committing the result (and ORing the flags into MXCSR) and #XM with the destination unchanged,
 * following the SDM's order: unmasked pre-computation exceptions (invalid, denormal, divide by
 * zero) first, then the post-computation ones (overflow, underflow, precision). Two things a
 * masked run does not show are worked out on that slow path only: an unmasked underflow is
 * signalled for every tiny result, exact or not (a run with FTZ tells which lanes were tiny),
 * and a lane that overflows or underflows with that exception unmasked is inexact only if its
 * result with an unbounded exponent is (the x87, with its wider exponent, rounds it). */
#include <Zydis/Zydis.h>
#include <emmintrin.h>
#include <stdbool.h>
#include <string.h>

#include "engine/soft/exec_sse.h"
#include "engine/soft/exec_string.h"
#include "engine/soft/soft.h"

/* ---- availability, operands ------------------------------------------------------------------ */

static __attribute__((noinline, noreturn)) void sse_unavailable(struct soft_cpu *c)
{
	if ((c->cr0 & CR0_EM) || !(c->cr4 & CR4_OSFXSR))
		soft_fault(c, EXC_UD, 0);
	soft_fault(c, EXC_NM, 0);
}

/* SSE instructions: #UD with CR0.EM or without CR4.OSFXSR, #NM with CR0.TS. */
static inline __attribute__((always_inline)) void sse_check(struct soft_cpu *c)
{
	if (unlikely((c->cr0 & (CR0_EM | CR0_TS)) || !(c->cr4 & CR4_OSFXSR)))
		sse_unavailable(c);
}

static inline union xmm *xreg(struct soft_cpu *c, const struct insn *in, unsigned i)
{
	return &c->xmm[in->op[i].reg];
}

static inline __m128i xget(const union xmm *x)
{
	return _mm_load_si128((const __m128i *)x);
}

static inline void xput(union xmm *x, __m128i v)
{
	_mm_store_si128((__m128i *)x, v);
}

/* The address of a 16-byte operand that must be aligned (every legacy-SSE 128-bit memory
 * operand except those of the explicitly unaligned moves). */
static inline uint64_t addr_a16(struct soft_cpu *c, const struct insn *in)
{
	uint64_t a = insn_addr(c, in);
	if (unlikely(a & 15))
		soft_fault(c, EXC_GP, 0);
	return a;
}

/* 16-byte accesses: straight through the TLB when it hits within a page, otherwise the byte
 * copies, which also reach memory-mapped I/O and split page-crossing accesses. */
static inline void rd16(struct soft_cpu *c, uint64_t a, union xmm *v)
{
	const struct tlb_entry *e = &c->tlb[(a >> 12) & (TLB_SIZE - 1)];
	if (likely(e->tag_read == (a & ~0xfffull)) && likely((a & 0xfff) <= 0x1000 - 16))
		memcpy(v, (const void *)(a + (uint64_t)e->addend), 16);
	else
		soft_read_bytes(c, a, v, 16);
}

static inline void wr16(struct soft_cpu *c, uint64_t a, const union xmm *v)
{
	const struct tlb_entry *e = &c->tlb[(a >> 12) & (TLB_SIZE - 1)];
	if (likely(e->tag_write == (a & ~0xfffull)) && likely((a & 0xfff) <= 0x1000 - 16))
		memcpy((void *)(a + (uint64_t)e->addend), v, 16);
	else
		soft_write_bytes(c, a, v, 16);
}

/* Loads the memory source of an instruction whose operand is size bytes (16: aligned; 4 or 8:
 * the low lanes, the rest zero). */
static inline void load_src(struct soft_cpu *c, const struct insn *in, union xmm *v, unsigned size)
{
	if (size == 16) {
		rd16(c, addr_a16(c, in), v);
	} else {
		v->q[0] = soft_load(c, insn_addr(c, in), size);
		v->q[1] = 0;
	}
}

/* Forms "xmm, xmm" and "xmm, mem": anything else (MMX registers above all) is #UD. */
static insn_fn pick_xx_xm(const struct insn *in, insn_fn xx, insn_fn xm)
{
	if (in->nops < 2 || in->op[0].kind != OPK_XMM)
		return NULL;
	if (in->op[1].kind == OPK_XMM)
		return xx;
	return in->op[1].kind == OPK_MEM ? xm : NULL;
}

/* ---- floating point under the guest's MXCSR -------------------------------------------------- */

/* A host operation: *r is the destination (in and out), *s the source, csr the MXCSR to run it
 * under. Returns the MXCSR after it, with the flags it raised. */
typedef uint32_t (*fp_kernel)(union xmm *r, const union xmm *s, uint32_t csr);

static __attribute__((noreturn)) void xm_fault(struct soft_cpu *c, uint32_t flags)
{
	c->mxcsr |= flags;
	soft_fault(c, (c->cr4 & CR4_OSXMMEXCPT) ? EXC_XM : EXC_UD, 0);
}

static uint32_t fp_control(uint32_t mxcsr)
{
	return (mxcsr & (MX_RC | MX_DAZ | MX_FTZ)) | MX_MASKS;
}

/* The per-lane analysis below needs to know what a kernel computes; set up after the kernels. */
static uint32_t lanes_precision(const struct soft_cpu *c, fp_kernel k, const union xmm *d,
				const union xmm *s, const union xmm *r, const union xmm *ftz,
				uint32_t post);

/* The guest has unmasked something: decide as the hardware does. d is the destination before
 * the operation, r the result of the masked run and f its flags. Returns if the result
 * stands. */
static __attribute__((noinline)) void fp_exceptions(struct soft_cpu *c, fp_kernel k,
						    const union xmm *d, const union xmm *s,
						    const union xmm *r, uint32_t f)
{
	uint32_t unmasked = ~(c->mxcsr >> 7) & MX_FLAGS;
	uint32_t pre = f & (MX_IE | MX_DE | MX_ZE), post = f & (MX_OE | MX_UE | MX_PE);
	if (pre & unmasked)
		xm_fault(c, pre); /* post-computation exceptions are not even looked for */
	union xmm ftz = *d;
	if (unmasked & MX_UE) {
		/* Unmasked, underflow is signalled for every tiny result, exact or not; with FTZ
		 * a masked underflow is too (and the tiny lanes read zero). */
		if (k(&ftz, s, fp_control(c->mxcsr) | MX_FTZ) & MX_UE)
			post |= MX_UE;
	}
	/* An unmasked overflow or underflow delivers (to a handler) the result with its exponent
	 * wrapped: whether it is inexact is judged without the exponent's limits. */
	if (post & unmasked & (MX_OE | MX_UE))
		post = lanes_precision(c, k, d, s, r, &ftz, post);
	if (post & unmasked)
		xm_fault(c, pre | post);
}

/* Runs k with *r as the destination; *r gets the result unless the operation faults. */
static inline void fp_run(struct soft_cpu *c, fp_kernel k, union xmm *r, const union xmm *s)
{
	union xmm d = *r;
	uint32_t f = k(r, s, fp_control(c->mxcsr)) & MX_FLAGS;
	if (unlikely((f | MX_UE) & ~(c->mxcsr >> 7)))
		fp_exceptions(c, k, &d, s, r, f);
	c->mxcsr |= f;
}

/* "op src, dst" in AT&T order, i.e. Intel "op dst, src": the host instruction itself. */
#define FP_KERNEL(name, text)                                                                      \
	static inline uint32_t k_##name(union xmm *r, const union xmm *s, uint32_t csr)            \
	{                                                                                          \
		__m128i a = xget(r), b = xget(s);                                                  \
		uint32_t host, out;                                                                \
		__asm__ volatile("stmxcsr %[h]\n\t"                                                \
				 "ldmxcsr %[c]\n\t" text " %[b], %[a]\n\t"                         \
				 "stmxcsr %[o]\n\t"                                                \
				 "ldmxcsr %[h]"                                                    \
				 : [a] "+x"(a), [h] "=m"(host), [o] "=m"(out)                      \
				 : [b] "x"(b), [c] "m"(csr));                                      \
		xput(r, a);                                                                        \
		return out;                                                                        \
	}

/* An operation "xmm, xmm/mem": size is the memory operand's (16 means aligned m128). */
#define FP_OP(name, size)                                                                          \
	FP_KERNEL(name, #name)                                                                     \
	static void h_##name##_xx(struct soft_cpu *c, const struct insn *in)                       \
	{                                                                                          \
		sse_check(c);                                                                      \
		union xmm r = *xreg(c, in, 0);                                                     \
		fp_run(c, k_##name, &r, xreg(c, in, 1));                                           \
		*xreg(c, in, 0) = r;                                                               \
	}                                                                                          \
	static void h_##name##_xm(struct soft_cpu *c, const struct insn *in)                       \
	{                                                                                          \
		sse_check(c);                                                                      \
		union xmm m;                                                                       \
		load_src(c, in, &m, size);                                                         \
		union xmm r = *xreg(c, in, 0);                                                     \
		fp_run(c, k_##name, &r, &m);                                                       \
		*xreg(c, in, 0) = r;                                                               \
	}                                                                                          \
	static insn_fn sel_##name(const struct insn *in)                                           \
	{                                                                                          \
		return pick_xx_xm(in, h_##name##_xx, h_##name##_xm);                               \
	}

FP_OP(addps, 16)
FP_OP(addss, 4)
FP_OP(addpd, 16)
FP_OP(addsd, 8)
FP_OP(subps, 16)
FP_OP(subss, 4)
FP_OP(subpd, 16)
FP_OP(subsd, 8)
FP_OP(mulps, 16)
FP_OP(mulss, 4)
FP_OP(mulpd, 16)
FP_OP(mulsd, 8)
FP_OP(divps, 16)
FP_OP(divss, 4)
FP_OP(divpd, 16)
FP_OP(divsd, 8)
FP_OP(minps, 16)
FP_OP(minss, 4)
FP_OP(minpd, 16)
FP_OP(minsd, 8)
FP_OP(maxps, 16)
FP_OP(maxss, 4)
FP_OP(maxpd, 16)
FP_OP(maxsd, 8)
FP_OP(sqrtps, 16)
FP_OP(sqrtss, 4)
FP_OP(sqrtpd, 16)
FP_OP(sqrtsd, 8)
/* Approximations: the host's tables, as good as any CPU's (they differ between vendors). */
FP_OP(rcpps, 16)
FP_OP(rcpss, 4)
FP_OP(rsqrtps, 16)
FP_OP(rsqrtss, 4)
FP_OP(cvtps2pd, 8)
FP_OP(cvtpd2ps, 16)
FP_OP(cvtss2sd, 4)
FP_OP(cvtsd2ss, 8)
FP_OP(cvtdq2ps, 16)
FP_OP(cvtps2dq, 16)
FP_OP(cvttps2dq, 16)
FP_OP(cvtdq2pd, 8)
FP_OP(cvtpd2dq, 16)
FP_OP(cvttpd2dq, 16)

/* ---- precision of results with a wrapped exponent ------------------------------------------ */

enum { XOP_ADD, XOP_SUB, XOP_MUL, XOP_DIV, XOP_ROUND };

/* a OP b rounded to the precision of cw (24 or 53 bits) in its rounding mode, with the x87's
 * exponent range, which no float or double result leaves. Returns true if that was inexact. */
static bool x87_rounded(unsigned op, long double a, long double b, uint16_t cw, long double *out)
{
	uint16_t save, sw;
	long double r;
#define X87_ROUND(bytes)                                                                           \
	__asm__ volatile("fnstcw %[save]\n\t"                                                      \
			 "fldcw %[cw]\n\t"                                                         \
			 "fldt %[b]\n\t"                                                           \
			 "fldt %[a]\n\t"                                                           \
			 "fnclex\n\t"                                                              \
			 ".byte " bytes "\n\t"                                                     \
			 "fnstsw %[sw]\n\t"                                                        \
			 "fstpt %[r]\n\t"                                                          \
			 "fldcw %[save]"                                                           \
			 : [r] "=m"(r), [sw] "=m"(sw), [save] "=m"(save)                           \
			 : [a] "m"(a), [b] "m"(b), [cw] "m"(cw)                                    \
			 : "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)")
	switch (op) {
	case XOP_ADD:
		X87_ROUND("0xde, 0xc1"); /* faddp: st1 = st0 + st1 */
		break;
	case XOP_SUB:
		X87_ROUND("0xde, 0xe1"); /* fsubrp: st1 = st0 - st1 */
		break;
	case XOP_DIV:
		X87_ROUND("0xde, 0xf1"); /* fdivrp: st1 = st0 / st1 */
		break;
	default:
		X87_ROUND("0xde, 0xc9"); /* fmulp (by 1.0: just the rounding) */
		break;
	}
#undef X87_ROUND
	*out = r;
	return sw & 0x20;
}

/* The operations that can overflow or underflow, lane by lane. */
static const struct lane_desc {
	fp_kernel k;
	uint8_t op, lanes, dbl_in, dbl_out;
} lane_descs[] = {
    {k_addps, XOP_ADD, 4, 0, 0}, {k_addss, XOP_ADD, 1, 0, 0},      {k_addpd, XOP_ADD, 2, 1, 1},
    {k_addsd, XOP_ADD, 1, 1, 1}, {k_subps, XOP_SUB, 4, 0, 0},      {k_subss, XOP_SUB, 1, 0, 0},
    {k_subpd, XOP_SUB, 2, 1, 1}, {k_subsd, XOP_SUB, 1, 1, 1},      {k_mulps, XOP_MUL, 4, 0, 0},
    {k_mulss, XOP_MUL, 1, 0, 0}, {k_mulpd, XOP_MUL, 2, 1, 1},      {k_mulsd, XOP_MUL, 1, 1, 1},
    {k_divps, XOP_DIV, 4, 0, 0}, {k_divss, XOP_DIV, 1, 0, 0},      {k_divpd, XOP_DIV, 2, 1, 1},
    {k_divsd, XOP_DIV, 1, 1, 1}, {k_cvtsd2ss, XOP_ROUND, 1, 1, 0}, {k_cvtpd2ps, XOP_ROUND, 2, 1, 0},
};

/* Lane i as a long double; false for a NaN (no overflow, underflow or precision there). DAZ
 * reads denormal inputs as zero. */
static bool lane_value(const union xmm *x, unsigned i, bool dbl, bool daz, long double *v)
{
	if (dbl) {
		uint64_t u = x->q[i];
		if ((u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull && (u << 12))
			return false;
		if (daz && !(u & 0x7ff0000000000000ull))
			u &= 1ull << 63;
		double f;
		memcpy(&f, &u, 8);
		*v = f;
	} else {
		uint32_t u = x->d[i];
		if ((u & 0x7f800000u) == 0x7f800000u && (u << 9))
			return false;
		if (daz && !(u & 0x7f800000u))
			u &= 1u << 31;
		float f;
		memcpy(&f, &u, 4);
		*v = f;
	}
	return true;
}

/* The precision flag of an operation some of whose lanes overflowed or were tiny with that
 * exception unmasked: those lanes count as inexact only if their wrapped result is; the others
 * as in the masked run (r). ftz: with UM unmasked, the run with FTZ, whose zero lanes were tiny
 * (tininess is detected before rounding). Returns post with PE recomputed. */
static uint32_t lanes_precision(const struct soft_cpu *c, fp_kernel k, const union xmm *d,
				const union xmm *s, const union xmm *r, const union xmm *ftz,
				uint32_t post)
{
	const struct lane_desc *ld = NULL;
	for (size_t i = 0; i < sizeof(lane_descs) / sizeof(lane_descs[0]); i++)
		if (lane_descs[i].k == k)
			ld = &lane_descs[i];
	if (!ld)
		return post;
	bool daz = c->mxcsr & MX_DAZ;
	bool om = !(c->mxcsr & (MX_OE << 7)), um = !(c->mxcsr & (MX_UE << 7));
	uint16_t cw = (uint16_t)(0x7f | (ld->dbl_out ? 0x200 : 0) | ((c->mxcsr & MX_RC) >> 3));
	long double max = ld->dbl_out ? 0x1.fffffffffffffp1023L : 0x1.fffffep127L;
	bool pe = false;
	for (unsigned i = 0; i < ld->lanes; i++) {
		long double a, b = 1.0L, exact, got, flushed = 1.0L;
		if (ld->op == XOP_ROUND) {
			if (!lane_value(s, i, true, daz, &a))
				continue;
		} else if (!lane_value(d, i, ld->dbl_in, daz, &a) ||
			   !lane_value(s, i, ld->dbl_in, daz, &b)) {
			continue;
		}
		bool inexact = x87_rounded(ld->op, a, b, cw, &exact);
		if (!lane_value(r, i, ld->dbl_out, false, &got) ||
		    (um && !lane_value(ftz, i, ld->dbl_out, false, &flushed)))
			continue;
		long double mag = exact < 0 ? -exact : exact;
		bool wrapped = (om && mag > max) || (um && exact != 0 && flushed == 0);
		pe |= wrapped ? inexact : inexact || got != exact;
	}
	return (post & ~MX_PE) | (pe ? MX_PE : 0);
}

/* CMPcc with its predicate: imm8[2:0] in the legacy encoding. */
#define CMP_KERNELS(op)                                                                            \
	FP_KERNEL(op##_0, #op " $0,")                                                              \
	FP_KERNEL(op##_1, #op " $1,")                                                              \
	FP_KERNEL(op##_2, #op " $2,")                                                              \
	FP_KERNEL(op##_3, #op " $3,")                                                              \
	FP_KERNEL(op##_4, #op " $4,")                                                              \
	FP_KERNEL(op##_5, #op " $5,")                                                              \
	FP_KERNEL(op##_6, #op " $6,")                                                              \
	FP_KERNEL(op##_7, #op " $7,")                                                              \
	static const fp_kernel op##_k[8] = {k_##op##_0, k_##op##_1, k_##op##_2, k_##op##_3,        \
					    k_##op##_4, k_##op##_5, k_##op##_6, k_##op##_7};       \
	static void h_##op##_xx(struct soft_cpu *c, const struct insn *in)                         \
	{                                                                                          \
		sse_check(c);                                                                      \
		union xmm r = *xreg(c, in, 0);                                                     \
		fp_run(c, op##_k[in->imm & 7], &r, xreg(c, in, 1));                                \
		*xreg(c, in, 0) = r;                                                               \
	}

CMP_KERNELS(cmpps)
CMP_KERNELS(cmppd)
CMP_KERNELS(cmpss)
CMP_KERNELS(cmpsd)

#define CMP_MEM(op, size)                                                                          \
	static void h_##op##_xm(struct soft_cpu *c, const struct insn *in)                         \
	{                                                                                          \
		sse_check(c);                                                                      \
		union xmm m;                                                                       \
		load_src(c, in, &m, size);                                                         \
		union xmm r = *xreg(c, in, 0);                                                     \
		fp_run(c, op##_k[in->imm & 7], &r, &m);                                            \
		*xreg(c, in, 0) = r;                                                               \
	}                                                                                          \
	static insn_fn sel_##op(const struct insn *in)                                             \
	{                                                                                          \
		return pick_xx_xm(in, h_##op##_xx, h_##op##_xm);                                   \
	}

CMP_MEM(cmpps, 16)
CMP_MEM(cmppd, 16)
CMP_MEM(cmpss, 4)
CMP_MEM(cmpsd, 8)

/* COMIS/UCOMIS: the result is ZF, PF and CF, returned in r->q[0] as RFLAGS bits. */
#define COMI_OP(name, size)                                                                        \
	static inline uint32_t k_##name(union xmm *r, const union xmm *s, uint32_t csr)            \
	{                                                                                          \
		__m128i a = xget(r), b = xget(s);                                                  \
		uint32_t host, out;                                                                \
		bool z, p, cy;                                                                     \
		__asm__ volatile("stmxcsr %[h]\n\t"                                                \
				 "ldmxcsr %[c]\n\t" #name " %[b], %[a]\n\t"                        \
				 "stmxcsr %[o]\n\t"                                                \
				 "ldmxcsr %[h]"                                                    \
				 : [h] "=m"(host), [o] "=m"(out), "=@ccz"(z), "=@ccp"(p),          \
				   "=@ccc"(cy)                                                     \
				 : [a] "x"(a), [b] "x"(b), [c] "m"(csr));                          \
		r->q[0] = (z ? FL_ZF : 0) | (p ? FL_PF : 0) | (cy ? FL_CF : 0);                    \
		return out;                                                                        \
	}                                                                                          \
	static void h_##name##_xx(struct soft_cpu *c, const struct insn *in)                       \
	{                                                                                          \
		sse_check(c);                                                                      \
		union xmm r = *xreg(c, in, 0);                                                     \
		fp_run(c, k_##name, &r, xreg(c, in, 1));                                           \
		soft_set_flags(c, r.q[0], FL_ARITH);                                               \
	}                                                                                          \
	static void h_##name##_xm(struct soft_cpu *c, const struct insn *in)                       \
	{                                                                                          \
		sse_check(c);                                                                      \
		union xmm m;                                                                       \
		load_src(c, in, &m, size);                                                         \
		union xmm r = *xreg(c, in, 0);                                                     \
		fp_run(c, k_##name, &r, &m);                                                       \
		soft_set_flags(c, r.q[0], FL_ARITH);                                               \
	}                                                                                          \
	static insn_fn sel_##name(const struct insn *in)                                           \
	{                                                                                          \
		return pick_xx_xm(in, h_##name##_xx, h_##name##_xm);                               \
	}

COMI_OP(comiss, 4)
COMI_OP(ucomiss, 4)
COMI_OP(comisd, 8)
COMI_OP(ucomisd, 8)

/* CVTSI2SS/SD: an integer source (s->q[0]) of 32 or 64 bits. */
#define CVTSI_KERNEL(name, text)                                                                   \
	static inline uint32_t k_##name(union xmm *r, const union xmm *s, uint32_t csr)            \
	{                                                                                          \
		__m128i a = xget(r);                                                               \
		uint32_t host, out;                                                                \
		__asm__ volatile("stmxcsr %[h]\n\t"                                                \
				 "ldmxcsr %[c]\n\t" text "\n\t"                                    \
				 "stmxcsr %[o]\n\t"                                                \
				 "ldmxcsr %[h]"                                                    \
				 : [a] "+x"(a), [h] "=m"(host), [o] "=m"(out)                      \
				 : [b] "r"(s->q[0]), [c] "m"(csr));                                \
		xput(r, a);                                                                        \
		return out;                                                                        \
	}

CVTSI_KERNEL(cvtsi2ss32, "cvtsi2ssl %k[b], %[a]")
CVTSI_KERNEL(cvtsi2ss64, "cvtsi2ssq %q[b], %[a]")
CVTSI_KERNEL(cvtsi2sd32, "cvtsi2sdl %k[b], %[a]")
CVTSI_KERNEL(cvtsi2sd64, "cvtsi2sdq %q[b], %[a]")

static void cvtsi(struct soft_cpu *c, const struct insn *in, fp_kernel k32, fp_kernel k64)
{
	sse_check(c);
	union xmm m = {.q = {opnd_read(c, in, 1), 0}};
	union xmm r = *xreg(c, in, 0);
	fp_run(c, in->op[1].size == 8 ? k64 : k32, &r, &m);
	*xreg(c, in, 0) = r;
}

static void h_cvtsi2ss(struct soft_cpu *c, const struct insn *in)
{
	cvtsi(c, in, k_cvtsi2ss32, k_cvtsi2ss64);
}

static void h_cvtsi2sd(struct soft_cpu *c, const struct insn *in)
{
	cvtsi(c, in, k_cvtsi2sd32, k_cvtsi2sd64);
}

static insn_fn sel_cvtsi2ss(const struct insn *in)
{
	if (in->op[0].kind != OPK_XMM || (in->op[1].kind != OPK_REG && in->op[1].kind != OPK_MEM))
		return NULL;
	return h_cvtsi2ss;
}

static insn_fn sel_cvtsi2sd(const struct insn *in)
{
	return sel_cvtsi2ss(in) ? h_cvtsi2sd : NULL;
}

/* CVT(T)SS2SI/SD2SI: the integer result (32 or 64 bits) comes back in r->q[0]. */
#define CVT2SI_KERNEL(name, text)                                                                  \
	static inline uint32_t k_##name(union xmm *r, const union xmm *s, uint32_t csr)            \
	{                                                                                          \
		__m128i b = xget(s);                                                               \
		uint64_t v = 0;                                                                    \
		uint32_t host, out;                                                                \
		__asm__ volatile("stmxcsr %[h]\n\t"                                                \
				 "ldmxcsr %[c]\n\t" text "\n\t"                                    \
				 "stmxcsr %[o]\n\t"                                                \
				 "ldmxcsr %[h]"                                                    \
				 : [v] "+r"(v), [h] "=m"(host), [o] "=m"(out)                      \
				 : [b] "x"(b), [c] "m"(csr));                                      \
		r->q[0] = v;                                                                       \
		return out;                                                                        \
	}

CVT2SI_KERNEL(cvtss2si32, "cvtss2si %[b], %k[v]")
CVT2SI_KERNEL(cvtss2si64, "cvtss2si %[b], %q[v]")
CVT2SI_KERNEL(cvttss2si32, "cvttss2si %[b], %k[v]")
CVT2SI_KERNEL(cvttss2si64, "cvttss2si %[b], %q[v]")
CVT2SI_KERNEL(cvtsd2si32, "cvtsd2si %[b], %k[v]")
CVT2SI_KERNEL(cvtsd2si64, "cvtsd2si %[b], %q[v]")
CVT2SI_KERNEL(cvttsd2si32, "cvttsd2si %[b], %k[v]")
CVT2SI_KERNEL(cvttsd2si64, "cvttsd2si %[b], %q[v]")

static void cvt2si(struct soft_cpu *c, const struct insn *in, unsigned size, fp_kernel k32,
		   fp_kernel k64)
{
	sse_check(c);
	union xmm m;
	const union xmm *s = &m;
	if (in->op[1].kind == OPK_XMM)
		s = xreg(c, in, 1);
	else
		load_src(c, in, &m, size);
	union xmm r = {.q = {0, 0}};
	fp_run(c, in->op[0].size == 8 ? k64 : k32, &r, s);
	gpr_write(c, in->op[0].reg, r.q[0], in->op[0].size);
}

#define CVT2SI_OP(name, size)                                                                      \
	static void h_##name(struct soft_cpu *c, const struct insn *in)                            \
	{                                                                                          \
		cvt2si(c, in, size, k_##name##32, k_##name##64);                                   \
	}

CVT2SI_OP(cvtss2si, 4)
CVT2SI_OP(cvttss2si, 4)
CVT2SI_OP(cvtsd2si, 8)
CVT2SI_OP(cvttsd2si, 8)

static insn_fn pick_cvt2si(const struct insn *in, insn_fn fn)
{
	if (in->op[0].kind != OPK_REG || (in->op[1].kind != OPK_XMM && in->op[1].kind != OPK_MEM))
		return NULL;
	return fn;
}

static insn_fn sel_cvtss2si(const struct insn *in)
{
	return pick_cvt2si(in, h_cvtss2si);
}

static insn_fn sel_cvttss2si(const struct insn *in)
{
	return pick_cvt2si(in, h_cvttss2si);
}

static insn_fn sel_cvtsd2si(const struct insn *in)
{
	return pick_cvt2si(in, h_cvtsd2si);
}

static insn_fn sel_cvttsd2si(const struct insn *in)
{
	return pick_cvt2si(in, h_cvttsd2si);
}

/* ---- integer and bitwise operations ------------------------------------------------------- */

/* dst = expr(a = dst, b = src) on 128 bits; the memory source is an aligned m128. */
#define INT_OP(name, expr)                                                                         \
	static inline __m128i op_##name(__m128i a, __m128i b)                                      \
	{                                                                                          \
		return expr;                                                                       \
	}                                                                                          \
	static void h_##name##_xx(struct soft_cpu *c, const struct insn *in)                       \
	{                                                                                          \
		sse_check(c);                                                                      \
		union xmm *d = xreg(c, in, 0);                                                     \
		xput(d, op_##name(xget(d), xget(xreg(c, in, 1))));                                 \
	}                                                                                          \
	static void h_##name##_xm(struct soft_cpu *c, const struct insn *in)                       \
	{                                                                                          \
		sse_check(c);                                                                      \
		union xmm m;                                                                       \
		rd16(c, addr_a16(c, in), &m);                                                      \
		union xmm *d = xreg(c, in, 0);                                                     \
		xput(d, op_##name(xget(d), xget(&m)));                                             \
	}                                                                                          \
	static insn_fn sel_##name(const struct insn *in)                                           \
	{                                                                                          \
		return pick_xx_xm(in, h_##name##_xx, h_##name##_xm);                               \
	}

INT_OP(paddb, _mm_add_epi8(a, b))
INT_OP(paddw, _mm_add_epi16(a, b))
INT_OP(paddd, _mm_add_epi32(a, b))
INT_OP(paddq, _mm_add_epi64(a, b))
INT_OP(psubb, _mm_sub_epi8(a, b))
INT_OP(psubw, _mm_sub_epi16(a, b))
INT_OP(psubd, _mm_sub_epi32(a, b))
INT_OP(psubq, _mm_sub_epi64(a, b))
INT_OP(paddsb, _mm_adds_epi8(a, b))
INT_OP(paddsw, _mm_adds_epi16(a, b))
INT_OP(paddusb, _mm_adds_epu8(a, b))
INT_OP(paddusw, _mm_adds_epu16(a, b))
INT_OP(psubsb, _mm_subs_epi8(a, b))
INT_OP(psubsw, _mm_subs_epi16(a, b))
INT_OP(psubusb, _mm_subs_epu8(a, b))
INT_OP(psubusw, _mm_subs_epu16(a, b))
INT_OP(pmullw, _mm_mullo_epi16(a, b))
INT_OP(pmulhw, _mm_mulhi_epi16(a, b))
INT_OP(pmulhuw, _mm_mulhi_epu16(a, b))
INT_OP(pmuludq, _mm_mul_epu32(a, b))
INT_OP(pmaddwd, _mm_madd_epi16(a, b))
INT_OP(psadbw, _mm_sad_epu8(a, b))
INT_OP(pavgb, _mm_avg_epu8(a, b))
INT_OP(pavgw, _mm_avg_epu16(a, b))
INT_OP(pminub, _mm_min_epu8(a, b))
INT_OP(pmaxub, _mm_max_epu8(a, b))
INT_OP(pminsw, _mm_min_epi16(a, b))
INT_OP(pmaxsw, _mm_max_epi16(a, b))
INT_OP(pcmpeqb, _mm_cmpeq_epi8(a, b))
INT_OP(pcmpeqw, _mm_cmpeq_epi16(a, b))
INT_OP(pcmpeqd, _mm_cmpeq_epi32(a, b))
INT_OP(pcmpgtb, _mm_cmpgt_epi8(a, b))
INT_OP(pcmpgtw, _mm_cmpgt_epi16(a, b))
INT_OP(pcmpgtd, _mm_cmpgt_epi32(a, b))
INT_OP(packsswb, _mm_packs_epi16(a, b))
INT_OP(packssdw, _mm_packs_epi32(a, b))
INT_OP(packuswb, _mm_packus_epi16(a, b))
INT_OP(punpcklbw, _mm_unpacklo_epi8(a, b))
INT_OP(punpcklwd, _mm_unpacklo_epi16(a, b))
INT_OP(punpckldq, _mm_unpacklo_epi32(a, b))
INT_OP(punpcklqdq, _mm_unpacklo_epi64(a, b))
INT_OP(punpckhbw, _mm_unpackhi_epi8(a, b))
INT_OP(punpckhwd, _mm_unpackhi_epi16(a, b))
INT_OP(punpckhdq, _mm_unpackhi_epi32(a, b))
INT_OP(punpckhqdq, _mm_unpackhi_epi64(a, b))
INT_OP(pand, _mm_and_si128(a, b))
INT_OP(pandn, _mm_andnot_si128(a, b))
INT_OP(por, _mm_or_si128(a, b))
INT_OP(pxor, _mm_xor_si128(a, b))
/* The floating-point bitwise and unpack instructions are the same bit operations. */
INT_OP(andps, _mm_and_si128(a, b))
INT_OP(andnps, _mm_andnot_si128(a, b))
INT_OP(orps, _mm_or_si128(a, b))
INT_OP(xorps, _mm_xor_si128(a, b))
INT_OP(andpd, _mm_and_si128(a, b))
INT_OP(andnpd, _mm_andnot_si128(a, b))
INT_OP(orpd, _mm_or_si128(a, b))
INT_OP(xorpd, _mm_xor_si128(a, b))
INT_OP(unpcklps, _mm_unpacklo_epi32(a, b))
INT_OP(unpckhps, _mm_unpackhi_epi32(a, b))
INT_OP(unpcklpd, _mm_unpacklo_epi64(a, b))
INT_OP(unpckhpd, _mm_unpackhi_epi64(a, b))

/* Shifts: by the low quadword of an xmm register or m128, or by imm8. */
#define SHIFT_OP(name, fn)                                                                         \
	INT_OP(name, fn(a, b))                                                                     \
	static void h_##name##_xi(struct soft_cpu *c, const struct insn *in)                       \
	{                                                                                          \
		sse_check(c);                                                                      \
		union xmm *d = xreg(c, in, 0);                                                     \
		xput(d, fn(xget(d), _mm_cvtsi32_si128((int)(in->imm & 0xff))));                    \
	}                                                                                          \
	static insn_fn sel_##name##_any(const struct insn *in)                                     \
	{                                                                                          \
		if (in->op[0].kind == OPK_XMM && in->op[1].kind == OPK_IMM)                        \
			return h_##name##_xi;                                                      \
		return sel_##name(in);                                                             \
	}

SHIFT_OP(psllw, _mm_sll_epi16)
SHIFT_OP(pslld, _mm_sll_epi32)
SHIFT_OP(psllq, _mm_sll_epi64)
SHIFT_OP(psrlw, _mm_srl_epi16)
SHIFT_OP(psrld, _mm_srl_epi32)
SHIFT_OP(psrlq, _mm_srl_epi64)
SHIFT_OP(psraw, _mm_sra_epi16)
SHIFT_OP(psrad, _mm_sra_epi32)

/* PSLLDQ/PSRLDQ: whole-register byte shifts by imm8 (16 or more clears it). */
static void h_pslldq(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	union xmm *d = xreg(c, in, 0), r = {.q = {0, 0}};
	unsigned n = (unsigned)(in->imm & 0xff);
	if (n < 16)
		memcpy(r.b + n, d->b, 16 - n);
	*d = r;
}

static void h_psrldq(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	union xmm *d = xreg(c, in, 0), r = {.q = {0, 0}};
	unsigned n = (unsigned)(in->imm & 0xff);
	if (n < 16)
		memcpy(r.b, d->b + n, 16 - n);
	*d = r;
}

static insn_fn sel_xmm_imm(const struct insn *in, insn_fn fn)
{
	return in->op[0].kind == OPK_XMM && in->op[1].kind == OPK_IMM ? fn : NULL;
}

static insn_fn sel_pslldq(const struct insn *in)
{
	return sel_xmm_imm(in, h_pslldq);
}

static insn_fn sel_psrldq(const struct insn *in)
{
	return sel_xmm_imm(in, h_psrldq);
}

/* ---- shuffles with imm8 -------------------------------------------------------------------- */

static void pshufd(union xmm *d, const union xmm *s, unsigned imm)
{
	union xmm r;
	for (unsigned i = 0; i < 4; i++)
		r.d[i] = s->d[(imm >> (2 * i)) & 3];
	*d = r;
}

static void pshuflw(union xmm *d, const union xmm *s, unsigned imm)
{
	union xmm r;
	for (unsigned i = 0; i < 4; i++)
		r.w[i] = s->w[(imm >> (2 * i)) & 3];
	r.q[1] = s->q[1];
	*d = r;
}

static void pshufhw(union xmm *d, const union xmm *s, unsigned imm)
{
	union xmm r;
	r.q[0] = s->q[0];
	for (unsigned i = 0; i < 4; i++)
		r.w[4 + i] = s->w[4 + ((imm >> (2 * i)) & 3)];
	*d = r;
}

static void shufps(union xmm *d, const union xmm *s, unsigned imm)
{
	union xmm r;
	r.d[0] = d->d[imm & 3];
	r.d[1] = d->d[(imm >> 2) & 3];
	r.d[2] = s->d[(imm >> 4) & 3];
	r.d[3] = s->d[(imm >> 6) & 3];
	*d = r;
}

static void shufpd(union xmm *d, const union xmm *s, unsigned imm)
{
	union xmm r;
	r.q[0] = d->q[imm & 1];
	r.q[1] = s->q[(imm >> 1) & 1];
	*d = r;
}

#define SHUF_OP(name)                                                                              \
	static void h_##name##_xx(struct soft_cpu *c, const struct insn *in)                       \
	{                                                                                          \
		sse_check(c);                                                                      \
		name(xreg(c, in, 0), xreg(c, in, 1), (unsigned)in->imm);                           \
	}                                                                                          \
	static void h_##name##_xm(struct soft_cpu *c, const struct insn *in)                       \
	{                                                                                          \
		sse_check(c);                                                                      \
		union xmm m;                                                                       \
		rd16(c, addr_a16(c, in), &m);                                                      \
		name(xreg(c, in, 0), &m, (unsigned)in->imm);                                       \
	}                                                                                          \
	static insn_fn sel_##name(const struct insn *in)                                           \
	{                                                                                          \
		return pick_xx_xm(in, h_##name##_xx, h_##name##_xm);                               \
	}

SHUF_OP(pshufd)
SHUF_OP(pshuflw)
SHUF_OP(pshufhw)
SHUF_OP(shufps)
SHUF_OP(shufpd)

/* PINSRW xmm, r32/m16, imm8 and PEXTRW r32, xmm, imm8. The SSE4.1 PEXTRW to memory (66 0F 3A
 * 15) is #UD here; its register form cannot be told apart from the SSE2 one in struct insn and
 * gives the same result. */
static void h_pinsrw(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	uint64_t v = in->op[1].kind == OPK_MEM ? soft_load(c, insn_addr(c, in), 2)
					       : gpr_read(c, in->op[1].reg, 2);
	xreg(c, in, 0)->w[in->imm & 7] = (uint16_t)v;
}

static insn_fn sel_pinsrw(const struct insn *in)
{
	if (in->op[0].kind != OPK_XMM || (in->op[1].kind != OPK_REG && in->op[1].kind != OPK_MEM))
		return NULL;
	return h_pinsrw;
}

static void h_pextrw(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	gpr_write(c, in->op[0].reg, xreg(c, in, 1)->w[in->imm & 7], in->op[0].size);
}

static insn_fn sel_pextrw(const struct insn *in)
{
	return in->op[0].kind == OPK_REG && in->op[1].kind == OPK_XMM ? h_pextrw : NULL;
}

/* ---- data movement ------------------------------------------------------------------------- */

static void h_mov_xx(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	*xreg(c, in, 0) = *xreg(c, in, 1);
}

static void h_load_a(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	union xmm m;
	rd16(c, addr_a16(c, in), &m);
	*xreg(c, in, 0) = m;
}

static void h_load_u(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	union xmm m;
	rd16(c, insn_addr(c, in), &m);
	*xreg(c, in, 0) = m;
}

static void h_store_a(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	wr16(c, addr_a16(c, in), xreg(c, in, 1));
}

static void h_store_u(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	wr16(c, insn_addr(c, in), xreg(c, in, 1));
}

static insn_fn pick_mov128(const struct insn *in, bool aligned)
{
	const struct opnd *d = &in->op[0], *s = &in->op[1];
	if (d->kind == OPK_XMM && s->kind == OPK_XMM)
		return h_mov_xx;
	if (d->kind == OPK_XMM && s->kind == OPK_MEM)
		return aligned ? h_load_a : h_load_u;
	if (d->kind == OPK_MEM && s->kind == OPK_XMM)
		return aligned ? h_store_a : h_store_u;
	return NULL;
}

static insn_fn sel_mov_aligned(const struct insn *in)
{
	return pick_mov128(in, true);
}

static insn_fn sel_mov_unaligned(const struct insn *in)
{
	return pick_mov128(in, false);
}

/* MOVNTDQ/MOVNTPS/MOVNTPD: plain aligned stores (there is no cache to bypass). */
static insn_fn sel_movnt(const struct insn *in)
{
	return in->op[0].kind == OPK_MEM && in->op[1].kind == OPK_XMM ? h_store_a : NULL;
}

static void h_movnti(struct soft_cpu *c, const struct insn *in)
{
	unsigned sz = in->op[1].size;
	soft_store(c, insn_addr(c, in), gpr_read(c, in->op[1].reg, sz), sz);
}

static insn_fn sel_movnti(const struct insn *in)
{
	return in->op[0].kind == OPK_MEM && in->op[1].kind == OPK_REG ? h_movnti : NULL;
}

/* MOVSS/MOVSD: register to register merges the low lane, a load clears the rest. */
static void h_movss_xx(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	xreg(c, in, 0)->d[0] = xreg(c, in, 1)->d[0];
}

static void h_movsd_xx(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	xreg(c, in, 0)->q[0] = xreg(c, in, 1)->q[0];
}

/* Loads of 4 or 8 bytes into the low lane, the rest cleared: MOVSS/MOVSD/MOVD/MOVQ. */
static void h_load_low(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	uint64_t v = soft_load(c, insn_addr(c, in), in->op[1].size);
	union xmm *d = xreg(c, in, 0);
	d->q[0] = v;
	d->q[1] = 0;
}

static void h_store_low(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	unsigned sz = in->op[0].size;
	soft_store(c, insn_addr(c, in), xreg(c, in, 1)->q[0] & size_mask(sz), sz);
}

static insn_fn pick_movs(const struct insn *in, insn_fn xx)
{
	const struct opnd *d = &in->op[0], *s = &in->op[1];
	if (in->nops != 2)
		return NULL;
	if (d->kind == OPK_XMM && s->kind == OPK_XMM)
		return xx;
	if (d->kind == OPK_XMM && s->kind == OPK_MEM)
		return h_load_low;
	if (d->kind == OPK_MEM && s->kind == OPK_XMM)
		return h_store_low;
	return NULL;
}

static insn_fn sel_movss(const struct insn *in)
{
	return pick_movs(in, h_movss_xx);
}

/* MOVSD is also the string instruction, which has no visible operands. */
static insn_fn sel_movsd(const struct insn *in)
{
	if (in->nops == 0)
		return soft_select_string(in);
	return pick_movs(in, h_movsd_xx);
}

/* MOVD/MOVQ between xmm and a general register or memory; MOVQ xmm, xmm clears the high half. */
static void h_movq_xx(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	union xmm *d = xreg(c, in, 0);
	d->q[0] = xreg(c, in, 1)->q[0];
	d->q[1] = 0;
}

static void h_movd_xr(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	union xmm *d = xreg(c, in, 0);
	d->q[0] = gpr_read(c, in->op[1].reg, in->op[1].size);
	d->q[1] = 0;
}

static void h_movd_rx(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	gpr_write(c, in->op[0].reg, xreg(c, in, 1)->q[0], in->op[0].size);
}

static insn_fn sel_movd(const struct insn *in)
{
	const struct opnd *d = &in->op[0], *s = &in->op[1];
	if (d->kind == OPK_XMM && s->kind == OPK_XMM)
		return h_movq_xx;
	if (d->kind == OPK_XMM && s->kind == OPK_REG)
		return h_movd_xr;
	if (d->kind == OPK_XMM && s->kind == OPK_MEM)
		return h_load_low;
	if (d->kind == OPK_REG && s->kind == OPK_XMM)
		return h_movd_rx;
	if (d->kind == OPK_MEM && s->kind == OPK_XMM)
		return h_store_low;
	return NULL;
}

/* MOVLPS/MOVLPD/MOVHPS/MOVHPD: one quadword between memory and a half of the register. */
static void h_movlp_load(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	xreg(c, in, 0)->q[0] = soft_load(c, insn_addr(c, in), 8);
}

static void h_movhp_load(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	xreg(c, in, 0)->q[1] = soft_load(c, insn_addr(c, in), 8);
}

static void h_movlp_store(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	soft_store(c, insn_addr(c, in), xreg(c, in, 1)->q[0], 8);
}

static void h_movhp_store(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	soft_store(c, insn_addr(c, in), xreg(c, in, 1)->q[1], 8);
}

static insn_fn pick_half(const struct insn *in, insn_fn load, insn_fn store)
{
	if (in->op[0].kind == OPK_XMM && in->op[1].kind == OPK_MEM)
		return load;
	if (in->op[0].kind == OPK_MEM && in->op[1].kind == OPK_XMM)
		return store;
	return NULL;
}

static insn_fn sel_movlp(const struct insn *in)
{
	return pick_half(in, h_movlp_load, h_movlp_store);
}

static insn_fn sel_movhp(const struct insn *in)
{
	return pick_half(in, h_movhp_load, h_movhp_store);
}

static void h_movhlps(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	xreg(c, in, 0)->q[0] = xreg(c, in, 1)->q[1];
}

static void h_movlhps(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	xreg(c, in, 0)->q[1] = xreg(c, in, 1)->q[0];
}

static insn_fn sel_xx(const struct insn *in, insn_fn fn)
{
	return in->op[0].kind == OPK_XMM && in->op[1].kind == OPK_XMM ? fn : NULL;
}

static insn_fn sel_movhlps(const struct insn *in)
{
	return sel_xx(in, h_movhlps);
}

static insn_fn sel_movlhps(const struct insn *in)
{
	return sel_xx(in, h_movlhps);
}

/* Sign-bit masks into a general register. */
static void h_pmovmskb(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	gpr_write(c, in->op[0].reg, (uint32_t)_mm_movemask_epi8(xget(xreg(c, in, 1))),
		  in->op[0].size);
}

static void h_movmskps(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	gpr_write(c, in->op[0].reg,
		  (uint32_t)_mm_movemask_ps(_mm_castsi128_ps(xget(xreg(c, in, 1)))),
		  in->op[0].size);
}

static void h_movmskpd(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	gpr_write(c, in->op[0].reg,
		  (uint32_t)_mm_movemask_pd(_mm_castsi128_pd(xget(xreg(c, in, 1)))),
		  in->op[0].size);
}

static insn_fn pick_rx(const struct insn *in, insn_fn fn)
{
	return in->op[0].kind == OPK_REG && in->op[1].kind == OPK_XMM ? fn : NULL;
}

static insn_fn sel_pmovmskb(const struct insn *in)
{
	return pick_rx(in, h_pmovmskb);
}

static insn_fn sel_movmskps(const struct insn *in)
{
	return pick_rx(in, h_movmskps);
}

static insn_fn sel_movmskpd(const struct insn *in)
{
	return pick_rx(in, h_movmskpd);
}

/* MASKMOVDQU: the bytes of op0 whose mask byte (op1) has its top bit set go to DS:RDI, each
 * run of consecutive ones as one write. A fault on a later page can follow writes to an
 * earlier one. */
static void h_maskmovdqu(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	const union xmm *v = xreg(c, in, 0);
	uint64_t a = c->gpr[GPR_RDI];
	unsigned mask = (unsigned)_mm_movemask_epi8(xget(xreg(c, in, 1)));
	/* Hardware checks the whole 16-byte destination before it writes any byte: a fault
	 * leaves memory untouched and names the first inaccessible page. */
	if (mask)
		soft_mem(c, a, 16, ACC_WRITE);
	while (mask) {
		unsigned first = (unsigned)__builtin_ctz(mask);
		unsigned n = (unsigned)__builtin_ctz(~(mask >> first));
		soft_write_bytes(c, a + first, v->b + first, n);
		mask &= ~(((1u << n) - 1) << first);
	}
}

static insn_fn sel_maskmovdqu(const struct insn *in)
{
	return sel_xx(in, h_maskmovdqu);
}

/* ---- MXCSR and FXSAVE -------------------------------------------------------------------- */

static void h_ldmxcsr(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	uint32_t v = (uint32_t)soft_load(c, insn_addr(c, in), 4);
	if (v & ~MXCSR_SUPPORTED)
		soft_fault(c, EXC_GP, 0);
	c->mxcsr = v;
}

static void h_stmxcsr(struct soft_cpu *c, const struct insn *in)
{
	sse_check(c);
	soft_store(c, insn_addr(c, in), c->mxcsr, 4);
}

static insn_fn sel_mxcsr_op(const struct insn *in)
{
	if (in->op[0].kind != OPK_MEM)
		return NULL;
	return in->mnemonic == ZYDIS_MNEMONIC_LDMXCSR ? h_ldmxcsr : h_stmxcsr;
}

enum {
	FX_FCW = 0,
	FX_FSW = 2,
	FX_FTW = 4,
	FX_FOP = 6,
	FX_FIP = 8,
	FX_FCS = 12,
	FX_FDP = 16,
	FX_FDS = 20,
	FX_MXCSR = 24,
	FX_MXCSR_MASK = 28,
	FX_ST = 32,
	FX_XMM = 160,
	FX_END = 416, /* bytes 416..511 are reserved or for software: never written */
};

/* The FXSAVE image: the 64-bit layout (64-bit FIP and FDP) or the legacy one (32-bit offsets
 * with the selectors, which this CPU does not record: the current CS and DS stand in). */
static void fx_build(struct soft_cpu *c, uint8_t *p, bool w64)
{
	const struct x87 *f = &c->fpu;
	memset(p, 0, 512);
	le_put16(p + FX_FCW, f->fcw);
	le_put16(p + FX_FSW, soft_x87_status(f));
	p[FX_FTW] = soft_x87_abridged_tags(f);
	le_put16(p + FX_FOP, f->fop & 0x7ff);
	if (w64) {
		le_put64(p + FX_FIP, f->fip);
		le_put64(p + FX_FDP, f->fdp);
	} else {
		le_put32(p + FX_FIP, (uint32_t)f->fip);
		le_put16(p + FX_FCS, c->seg[SEG_CS].selector);
		le_put32(p + FX_FDP, (uint32_t)f->fdp);
		le_put16(p + FX_FDS, c->seg[SEG_DS].selector);
	}
	le_put32(p + FX_MXCSR, c->mxcsr);
	le_put32(p + FX_MXCSR_MASK, MXCSR_SUPPORTED);
	for (size_t i = 0; i < 8; i++)
		memcpy(p + FX_ST + 16 * i, &f->st[(f->top + i) & 7], 10);
	memcpy(p + FX_XMM, c->xmm, sizeof(c->xmm));
}

/* Loads an image (MXCSR already checked); nxmm registers of it. */
static void fx_load(struct soft_cpu *c, const uint8_t *p, bool w64, unsigned nxmm)
{
	struct x87 *f = &c->fpu;
	f->fcw = soft_x87_control(le_get16(p + FX_FCW));
	for (size_t i = 0; i < 8; i++) {
		long double *r = &f->st[(le_get16(p + FX_FSW) / 2048 + i) & 7];
		memset(r, 0, sizeof(*r));
		memcpy(r, p + FX_ST + 16 * i, 10);
	}
	soft_x87_load_status(f, le_get16(p + FX_FSW));
	soft_x87_load_abridged_tags(f, p[FX_FTW]);
	f->fop = le_get16(p + FX_FOP) & 0x7ff;
	f->fip = w64 ? le_get64(p + FX_FIP) : le_get32(p + FX_FIP);
	f->fdp = w64 ? le_get64(p + FX_FDP) : le_get32(p + FX_FDP);
	c->mxcsr = le_get32(p + FX_MXCSR) & MXCSR_SUPPORTED;
	memcpy(c->xmm, p + FX_XMM, nxmm * sizeof(c->xmm[0]));
}

/* FXSAVE/FXRSTOR: #NM with CR0.TS or CR0.EM; the area must be 16-byte aligned. Outside 64-bit
 * mode only XMM0-7 are part of it. */
static uint64_t fx_addr(struct soft_cpu *c, const struct insn *in)
{
	if (c->cr0 & (CR0_EM | CR0_TS))
		soft_fault(c, EXC_NM, 0);
	return addr_a16(c, in);
}

static void h_fxsave(struct soft_cpu *c, const struct insn *in)
{
	uint64_t a = fx_addr(c, in);
	uint8_t img[512];
	fx_build(c, img, in->mnemonic == ZYDIS_MNEMONIC_FXSAVE64);
	soft_write_bytes(c, a, img, soft_long_mode(c) ? FX_END : FX_XMM + 8 * 16);
}

static void h_fxrstor(struct soft_cpu *c, const struct insn *in)
{
	uint64_t a = fx_addr(c, in);
	uint8_t img[FX_END];
	bool m64 = soft_long_mode(c);
	soft_read_bytes(c, a, img, m64 ? FX_END : FX_XMM + 8 * 16);
	if (le_get32(img + FX_MXCSR) & ~MXCSR_SUPPORTED)
		soft_fault(c, EXC_GP, 0);
	fx_load(c, img, in->mnemonic == ZYDIS_MNEMONIC_FXRSTOR64, m64 ? 16 : 8);
}

static insn_fn sel_fxsave(const struct insn *in)
{
	return in->op[0].kind == OPK_MEM ? h_fxsave : NULL;
}

static insn_fn sel_fxrstor(const struct insn *in)
{
	return in->op[0].kind == OPK_MEM ? h_fxrstor : NULL;
}

void soft_fxsave_image(struct soft_cpu *c, uint8_t out[512])
{
	fx_build(c, out, true);
}

void soft_fxrstor_image(struct soft_cpu *c, const uint8_t in[512])
{
	fx_load(c, in, true, 16);
}

/* ---- registration -------------------------------------------------------------------------- */

/* CMPSD is also the string compare, which has no visible operands. */
static insn_fn sel_cmpsd_any(const struct insn *in)
{
	if (in->nops == 0)
		return soft_select_string(in);
	return in->nops == 3 ? sel_cmpsd(in) : NULL;
}

void soft_register_sse(void)
{
	static const struct {
		uint16_t mnemonic;
		insn_select_fn select;
	} table[] = {
	    /* floating point */
	    {ZYDIS_MNEMONIC_ADDPS, sel_addps},
	    {ZYDIS_MNEMONIC_ADDSS, sel_addss},
	    {ZYDIS_MNEMONIC_ADDPD, sel_addpd},
	    {ZYDIS_MNEMONIC_ADDSD, sel_addsd},
	    {ZYDIS_MNEMONIC_SUBPS, sel_subps},
	    {ZYDIS_MNEMONIC_SUBSS, sel_subss},
	    {ZYDIS_MNEMONIC_SUBPD, sel_subpd},
	    {ZYDIS_MNEMONIC_SUBSD, sel_subsd},
	    {ZYDIS_MNEMONIC_MULPS, sel_mulps},
	    {ZYDIS_MNEMONIC_MULSS, sel_mulss},
	    {ZYDIS_MNEMONIC_MULPD, sel_mulpd},
	    {ZYDIS_MNEMONIC_MULSD, sel_mulsd},
	    {ZYDIS_MNEMONIC_DIVPS, sel_divps},
	    {ZYDIS_MNEMONIC_DIVSS, sel_divss},
	    {ZYDIS_MNEMONIC_DIVPD, sel_divpd},
	    {ZYDIS_MNEMONIC_DIVSD, sel_divsd},
	    {ZYDIS_MNEMONIC_MINPS, sel_minps},
	    {ZYDIS_MNEMONIC_MINSS, sel_minss},
	    {ZYDIS_MNEMONIC_MINPD, sel_minpd},
	    {ZYDIS_MNEMONIC_MINSD, sel_minsd},
	    {ZYDIS_MNEMONIC_MAXPS, sel_maxps},
	    {ZYDIS_MNEMONIC_MAXSS, sel_maxss},
	    {ZYDIS_MNEMONIC_MAXPD, sel_maxpd},
	    {ZYDIS_MNEMONIC_MAXSD, sel_maxsd},
	    {ZYDIS_MNEMONIC_SQRTPS, sel_sqrtps},
	    {ZYDIS_MNEMONIC_SQRTSS, sel_sqrtss},
	    {ZYDIS_MNEMONIC_SQRTPD, sel_sqrtpd},
	    {ZYDIS_MNEMONIC_SQRTSD, sel_sqrtsd},
	    {ZYDIS_MNEMONIC_RCPPS, sel_rcpps},
	    {ZYDIS_MNEMONIC_RCPSS, sel_rcpss},
	    {ZYDIS_MNEMONIC_RSQRTPS, sel_rsqrtps},
	    {ZYDIS_MNEMONIC_RSQRTSS, sel_rsqrtss},
	    {ZYDIS_MNEMONIC_CMPPS, sel_cmpps},
	    {ZYDIS_MNEMONIC_CMPSS, sel_cmpss},
	    {ZYDIS_MNEMONIC_CMPPD, sel_cmppd},
	    {ZYDIS_MNEMONIC_CMPSD, sel_cmpsd_any},
	    {ZYDIS_MNEMONIC_COMISS, sel_comiss},
	    {ZYDIS_MNEMONIC_UCOMISS, sel_ucomiss},
	    {ZYDIS_MNEMONIC_COMISD, sel_comisd},
	    {ZYDIS_MNEMONIC_UCOMISD, sel_ucomisd},
	    {ZYDIS_MNEMONIC_ANDPS, sel_andps},
	    {ZYDIS_MNEMONIC_ANDNPS, sel_andnps},
	    {ZYDIS_MNEMONIC_ORPS, sel_orps},
	    {ZYDIS_MNEMONIC_XORPS, sel_xorps},
	    {ZYDIS_MNEMONIC_ANDPD, sel_andpd},
	    {ZYDIS_MNEMONIC_ANDNPD, sel_andnpd},
	    {ZYDIS_MNEMONIC_ORPD, sel_orpd},
	    {ZYDIS_MNEMONIC_XORPD, sel_xorpd},
	    {ZYDIS_MNEMONIC_SHUFPS, sel_shufps},
	    {ZYDIS_MNEMONIC_SHUFPD, sel_shufpd},
	    {ZYDIS_MNEMONIC_UNPCKLPS, sel_unpcklps},
	    {ZYDIS_MNEMONIC_UNPCKHPS, sel_unpckhps},
	    {ZYDIS_MNEMONIC_UNPCKLPD, sel_unpcklpd},
	    {ZYDIS_MNEMONIC_UNPCKHPD, sel_unpckhpd},
	    /* conversions */
	    {ZYDIS_MNEMONIC_CVTSI2SS, sel_cvtsi2ss},
	    {ZYDIS_MNEMONIC_CVTSI2SD, sel_cvtsi2sd},
	    {ZYDIS_MNEMONIC_CVTSS2SI, sel_cvtss2si},
	    {ZYDIS_MNEMONIC_CVTTSS2SI, sel_cvttss2si},
	    {ZYDIS_MNEMONIC_CVTSD2SI, sel_cvtsd2si},
	    {ZYDIS_MNEMONIC_CVTTSD2SI, sel_cvttsd2si},
	    {ZYDIS_MNEMONIC_CVTSS2SD, sel_cvtss2sd},
	    {ZYDIS_MNEMONIC_CVTSD2SS, sel_cvtsd2ss},
	    {ZYDIS_MNEMONIC_CVTPS2PD, sel_cvtps2pd},
	    {ZYDIS_MNEMONIC_CVTPD2PS, sel_cvtpd2ps},
	    {ZYDIS_MNEMONIC_CVTDQ2PS, sel_cvtdq2ps},
	    {ZYDIS_MNEMONIC_CVTPS2DQ, sel_cvtps2dq},
	    {ZYDIS_MNEMONIC_CVTTPS2DQ, sel_cvttps2dq},
	    {ZYDIS_MNEMONIC_CVTDQ2PD, sel_cvtdq2pd},
	    {ZYDIS_MNEMONIC_CVTPD2DQ, sel_cvtpd2dq},
	    {ZYDIS_MNEMONIC_CVTTPD2DQ, sel_cvttpd2dq},
	    /* integer */
	    {ZYDIS_MNEMONIC_PADDB, sel_paddb},
	    {ZYDIS_MNEMONIC_PADDW, sel_paddw},
	    {ZYDIS_MNEMONIC_PADDD, sel_paddd},
	    {ZYDIS_MNEMONIC_PADDQ, sel_paddq},
	    {ZYDIS_MNEMONIC_PSUBB, sel_psubb},
	    {ZYDIS_MNEMONIC_PSUBW, sel_psubw},
	    {ZYDIS_MNEMONIC_PSUBD, sel_psubd},
	    {ZYDIS_MNEMONIC_PSUBQ, sel_psubq},
	    {ZYDIS_MNEMONIC_PADDSB, sel_paddsb},
	    {ZYDIS_MNEMONIC_PADDSW, sel_paddsw},
	    {ZYDIS_MNEMONIC_PADDUSB, sel_paddusb},
	    {ZYDIS_MNEMONIC_PADDUSW, sel_paddusw},
	    {ZYDIS_MNEMONIC_PSUBSB, sel_psubsb},
	    {ZYDIS_MNEMONIC_PSUBSW, sel_psubsw},
	    {ZYDIS_MNEMONIC_PSUBUSB, sel_psubusb},
	    {ZYDIS_MNEMONIC_PSUBUSW, sel_psubusw},
	    {ZYDIS_MNEMONIC_PMULLW, sel_pmullw},
	    {ZYDIS_MNEMONIC_PMULHW, sel_pmulhw},
	    {ZYDIS_MNEMONIC_PMULHUW, sel_pmulhuw},
	    {ZYDIS_MNEMONIC_PMULUDQ, sel_pmuludq},
	    {ZYDIS_MNEMONIC_PMADDWD, sel_pmaddwd},
	    {ZYDIS_MNEMONIC_PSADBW, sel_psadbw},
	    {ZYDIS_MNEMONIC_PAVGB, sel_pavgb},
	    {ZYDIS_MNEMONIC_PAVGW, sel_pavgw},
	    {ZYDIS_MNEMONIC_PMINUB, sel_pminub},
	    {ZYDIS_MNEMONIC_PMAXUB, sel_pmaxub},
	    {ZYDIS_MNEMONIC_PMINSW, sel_pminsw},
	    {ZYDIS_MNEMONIC_PMAXSW, sel_pmaxsw},
	    {ZYDIS_MNEMONIC_PCMPEQB, sel_pcmpeqb},
	    {ZYDIS_MNEMONIC_PCMPEQW, sel_pcmpeqw},
	    {ZYDIS_MNEMONIC_PCMPEQD, sel_pcmpeqd},
	    {ZYDIS_MNEMONIC_PCMPGTB, sel_pcmpgtb},
	    {ZYDIS_MNEMONIC_PCMPGTW, sel_pcmpgtw},
	    {ZYDIS_MNEMONIC_PCMPGTD, sel_pcmpgtd},
	    {ZYDIS_MNEMONIC_PACKSSWB, sel_packsswb},
	    {ZYDIS_MNEMONIC_PACKSSDW, sel_packssdw},
	    {ZYDIS_MNEMONIC_PACKUSWB, sel_packuswb},
	    {ZYDIS_MNEMONIC_PUNPCKLBW, sel_punpcklbw},
	    {ZYDIS_MNEMONIC_PUNPCKLWD, sel_punpcklwd},
	    {ZYDIS_MNEMONIC_PUNPCKLDQ, sel_punpckldq},
	    {ZYDIS_MNEMONIC_PUNPCKLQDQ, sel_punpcklqdq},
	    {ZYDIS_MNEMONIC_PUNPCKHBW, sel_punpckhbw},
	    {ZYDIS_MNEMONIC_PUNPCKHWD, sel_punpckhwd},
	    {ZYDIS_MNEMONIC_PUNPCKHDQ, sel_punpckhdq},
	    {ZYDIS_MNEMONIC_PUNPCKHQDQ, sel_punpckhqdq},
	    {ZYDIS_MNEMONIC_PAND, sel_pand},
	    {ZYDIS_MNEMONIC_PANDN, sel_pandn},
	    {ZYDIS_MNEMONIC_POR, sel_por},
	    {ZYDIS_MNEMONIC_PXOR, sel_pxor},
	    {ZYDIS_MNEMONIC_PSLLW, sel_psllw_any},
	    {ZYDIS_MNEMONIC_PSLLD, sel_pslld_any},
	    {ZYDIS_MNEMONIC_PSLLQ, sel_psllq_any},
	    {ZYDIS_MNEMONIC_PSRLW, sel_psrlw_any},
	    {ZYDIS_MNEMONIC_PSRLD, sel_psrld_any},
	    {ZYDIS_MNEMONIC_PSRLQ, sel_psrlq_any},
	    {ZYDIS_MNEMONIC_PSRAW, sel_psraw_any},
	    {ZYDIS_MNEMONIC_PSRAD, sel_psrad_any},
	    {ZYDIS_MNEMONIC_PSLLDQ, sel_pslldq},
	    {ZYDIS_MNEMONIC_PSRLDQ, sel_psrldq},
	    {ZYDIS_MNEMONIC_PSHUFD, sel_pshufd},
	    {ZYDIS_MNEMONIC_PSHUFLW, sel_pshuflw},
	    {ZYDIS_MNEMONIC_PSHUFHW, sel_pshufhw},
	    {ZYDIS_MNEMONIC_PINSRW, sel_pinsrw},
	    {ZYDIS_MNEMONIC_PEXTRW, sel_pextrw},
	    {ZYDIS_MNEMONIC_PMOVMSKB, sel_pmovmskb},
	    {ZYDIS_MNEMONIC_MOVMSKPS, sel_movmskps},
	    {ZYDIS_MNEMONIC_MOVMSKPD, sel_movmskpd},
	    /* data movement */
	    {ZYDIS_MNEMONIC_MOVAPS, sel_mov_aligned},
	    {ZYDIS_MNEMONIC_MOVAPD, sel_mov_aligned},
	    {ZYDIS_MNEMONIC_MOVDQA, sel_mov_aligned},
	    {ZYDIS_MNEMONIC_MOVUPS, sel_mov_unaligned},
	    {ZYDIS_MNEMONIC_MOVUPD, sel_mov_unaligned},
	    {ZYDIS_MNEMONIC_MOVDQU, sel_mov_unaligned},
	    {ZYDIS_MNEMONIC_MOVNTPS, sel_movnt},
	    {ZYDIS_MNEMONIC_MOVNTPD, sel_movnt},
	    {ZYDIS_MNEMONIC_MOVNTDQ, sel_movnt},
	    {ZYDIS_MNEMONIC_MOVNTI, sel_movnti},
	    {ZYDIS_MNEMONIC_MOVSS, sel_movss},
	    {ZYDIS_MNEMONIC_MOVSD, sel_movsd},
	    {ZYDIS_MNEMONIC_MOVD, sel_movd},
	    {ZYDIS_MNEMONIC_MOVQ, sel_movd},
	    {ZYDIS_MNEMONIC_MOVLPS, sel_movlp},
	    {ZYDIS_MNEMONIC_MOVLPD, sel_movlp},
	    {ZYDIS_MNEMONIC_MOVHPS, sel_movhp},
	    {ZYDIS_MNEMONIC_MOVHPD, sel_movhp},
	    {ZYDIS_MNEMONIC_MOVHLPS, sel_movhlps},
	    {ZYDIS_MNEMONIC_MOVLHPS, sel_movlhps},
	    {ZYDIS_MNEMONIC_MASKMOVDQU, sel_maskmovdqu},
	    /* state */
	    {ZYDIS_MNEMONIC_LDMXCSR, sel_mxcsr_op},
	    {ZYDIS_MNEMONIC_STMXCSR, sel_mxcsr_op},
	    {ZYDIS_MNEMONIC_FXSAVE, sel_fxsave},
	    {ZYDIS_MNEMONIC_FXSAVE64, sel_fxsave},
	    {ZYDIS_MNEMONIC_FXRSTOR, sel_fxrstor},
	    {ZYDIS_MNEMONIC_FXRSTOR64, sel_fxrstor},
	};
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		soft_register(table[i].mnemonic, table[i].select);
}
