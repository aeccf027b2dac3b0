/* The soft engine's SSE/SSE2 instructions against the host CPU: every form from random states
 * (edge values, NaNs, denormals, infinities; random rounding mode, DAZ, FTZ and exception
 * masks, so #XM is exercised), register and memory operands (aligned, misaligned: #GP, crossing
 * into an inaccessible page: #PF), plus what only the soft CPU can show (#UD for MMX and SSE3+
 * forms, #NM, CR4.OSXMMEXCPT) and the FXSAVE image. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/soft/exec_sse.h"
#include "soft_sse_native.h"

#ifndef CASES
#define CASES 60
#endif

/* Operand forms: how the encoder builds ModRM (and REX) for an entry. */
enum form {
	XX,  /* xmm, xmm */
	XM,  /* xmm, [rsi] */
	MX,  /* [rsi], xmm */
	XI,  /* xmm (ModRM.rm), imm8 with /digit */
	GX,  /* r32/r64 (ModRM.reg), xmm */
	RX,  /* r32/r64 (ModRM.rm), xmm (ModRM.reg) */
	XG,  /* xmm, r32/r64 */
	GM,  /* r32/r64, [rsi] */
	MG,  /* [rsi], r32/r64 */
	MEM, /* [rsi] alone, /digit */
};

/* Memory operand alignment: A16 must be aligned (misaligned is #GP), U may be anywhere. */
enum { U = 0, A16 = 1 };

struct entry {
	const char *name;
	uint8_t pfx;   /* 0, 0x66, 0xf2 or 0xf3 */
	uint8_t op[3]; /* after 0F */
	uint8_t nop;
	enum form form;
	enum fn_lanes lanes;
	uint8_t align;
	int8_t imm;    /* -1: none, -2: random imm8, else: this ModRM.reg digit (XI/MEM) */
	uint8_t wide;  /* GX/XG/GM/MG: also test REX.W */
	uint8_t digit; /* XI, MEM */
};

#define E2(n, p, o, f, l, a)                                                                       \
	{                                                                                          \
		n, p, {o}, 1, f, l, a, -1, 0, 0                                                    \
	}
#define E2I(n, p, o, f, l, a)                                                                      \
	{                                                                                          \
		n, p, {o}, 1, f, l, a, -2, 0, 0                                                    \
	}
#define EG(n, p, o, f, l, w)                                                                       \
	{                                                                                          \
		n, p, {o}, 1, f, l, U, -1, w, 0                                                    \
	}
#define EGI(n, p, o, f, l)                                                                         \
	{                                                                                          \
		n, p, {o}, 1, f, l, U, -2, 0, 0                                                    \
	}
#define ED(n, p, o, f, l, d, imm)                                                                  \
	{                                                                                          \
		n, p, {o}, 1, f, l, U, imm, 0, d                                                   \
	}

/* A binary operation: register and memory forms. */
#define BIN(n, p, o, l, a) E2(n, p, o, XX, l, a), E2(n " mem", p, o, XM, l, a)

static const struct entry entries[] = {
    /* arithmetic */
    BIN("addps", 0, 0x58, FN_PS, A16),
    BIN("addss", 0xf3, 0x58, FN_PS, U),
    BIN("addpd", 0x66, 0x58, FN_PD, A16),
    BIN("addsd", 0xf2, 0x58, FN_PD, U),
    BIN("mulps", 0, 0x59, FN_PS, A16),
    BIN("mulss", 0xf3, 0x59, FN_PS, U),
    BIN("mulpd", 0x66, 0x59, FN_PD, A16),
    BIN("mulsd", 0xf2, 0x59, FN_PD, U),
    BIN("subps", 0, 0x5c, FN_PS, A16),
    BIN("subss", 0xf3, 0x5c, FN_PS, U),
    BIN("subpd", 0x66, 0x5c, FN_PD, A16),
    BIN("subsd", 0xf2, 0x5c, FN_PD, U),
    BIN("minps", 0, 0x5d, FN_PS, A16),
    BIN("minss", 0xf3, 0x5d, FN_PS, U),
    BIN("minpd", 0x66, 0x5d, FN_PD, A16),
    BIN("minsd", 0xf2, 0x5d, FN_PD, U),
    BIN("divps", 0, 0x5e, FN_PS, A16),
    BIN("divss", 0xf3, 0x5e, FN_PS, U),
    BIN("divpd", 0x66, 0x5e, FN_PD, A16),
    BIN("divsd", 0xf2, 0x5e, FN_PD, U),
    BIN("maxps", 0, 0x5f, FN_PS, A16),
    BIN("maxss", 0xf3, 0x5f, FN_PS, U),
    BIN("maxpd", 0x66, 0x5f, FN_PD, A16),
    BIN("maxsd", 0xf2, 0x5f, FN_PD, U),
    BIN("sqrtps", 0, 0x51, FN_PS, A16),
    BIN("sqrtss", 0xf3, 0x51, FN_PS, U),
    BIN("sqrtpd", 0x66, 0x51, FN_PD, A16),
    BIN("sqrtsd", 0xf2, 0x51, FN_PD, U),
    BIN("rcpps", 0, 0x53, FN_PS, A16),
    BIN("rcpss", 0xf3, 0x53, FN_PS, U),
    BIN("rsqrtps", 0, 0x52, FN_PS, A16),
    BIN("rsqrtss", 0xf3, 0x52, FN_PS, U),
    /* comparisons */
    E2I("cmpps", 0, 0xc2, XX, FN_PS, A16),
    E2I("cmpps mem", 0, 0xc2, XM, FN_PS, A16),
    E2I("cmpss", 0xf3, 0xc2, XX, FN_PS, U),
    E2I("cmpss mem", 0xf3, 0xc2, XM, FN_PS, U),
    E2I("cmppd", 0x66, 0xc2, XX, FN_PD, A16),
    E2I("cmppd mem", 0x66, 0xc2, XM, FN_PD, A16),
    E2I("cmpsd", 0xf2, 0xc2, XX, FN_PD, U),
    E2I("cmpsd mem", 0xf2, 0xc2, XM, FN_PD, U),
    BIN("comiss", 0, 0x2f, FN_PS, U),
    BIN("ucomiss", 0, 0x2e, FN_PS, U),
    BIN("comisd", 0x66, 0x2f, FN_PD, U),
    BIN("ucomisd", 0x66, 0x2e, FN_PD, U),
    /* conversions */
    BIN("cvtps2pd", 0, 0x5a, FN_PS, U),
    BIN("cvtpd2ps", 0x66, 0x5a, FN_PD, A16),
    BIN("cvtss2sd", 0xf3, 0x5a, FN_PS, U),
    BIN("cvtsd2ss", 0xf2, 0x5a, FN_PD, U),
    BIN("cvtdq2ps", 0, 0x5b, FN_INT, A16),
    BIN("cvtps2dq", 0x66, 0x5b, FN_PS, A16),
    BIN("cvttps2dq", 0xf3, 0x5b, FN_PS, A16),
    BIN("cvttpd2dq", 0x66, 0xe6, FN_PD, A16),
    BIN("cvtdq2pd", 0xf3, 0xe6, FN_INT, U),
    BIN("cvtpd2dq", 0xf2, 0xe6, FN_PD, A16),
    EG("cvtsi2ss", 0xf3, 0x2a, XG, FN_INT, 1),
    EG("cvtsi2ss mem", 0xf3, 0x2a, XM, FN_INT, 1),
    EG("cvtsi2sd", 0xf2, 0x2a, XG, FN_INT, 1),
    EG("cvtsi2sd mem", 0xf2, 0x2a, XM, FN_INT, 1),
    EG("cvtss2si", 0xf3, 0x2d, GX, FN_PS, 1),
    EG("cvtss2si mem", 0xf3, 0x2d, GM, FN_PS, 1),
    EG("cvttss2si", 0xf3, 0x2c, GX, FN_PS, 1),
    EG("cvttss2si mem", 0xf3, 0x2c, GM, FN_PS, 1),
    EG("cvtsd2si", 0xf2, 0x2d, GX, FN_PD, 1),
    EG("cvtsd2si mem", 0xf2, 0x2d, GM, FN_PD, 1),
    EG("cvttsd2si", 0xf2, 0x2c, GX, FN_PD, 1),
    EG("cvttsd2si mem", 0xf2, 0x2c, GM, FN_PD, 1),
    /* bitwise, unpacks, shuffles */
    BIN("andps", 0, 0x54, FN_PS, A16),
    BIN("andnps", 0, 0x55, FN_PS, A16),
    BIN("orps", 0, 0x56, FN_PS, A16),
    BIN("xorps", 0, 0x57, FN_PS, A16),
    BIN("andpd", 0x66, 0x54, FN_PD, A16),
    BIN("andnpd", 0x66, 0x55, FN_PD, A16),
    BIN("orpd", 0x66, 0x56, FN_PD, A16),
    BIN("xorpd", 0x66, 0x57, FN_PD, A16),
    BIN("unpcklps", 0, 0x14, FN_PS, A16),
    BIN("unpckhps", 0, 0x15, FN_PS, A16),
    BIN("unpcklpd", 0x66, 0x14, FN_PD, A16),
    BIN("unpckhpd", 0x66, 0x15, FN_PD, A16),
    E2I("shufps", 0, 0xc6, XX, FN_PS, A16),
    E2I("shufps mem", 0, 0xc6, XM, FN_PS, A16),
    E2I("shufpd", 0x66, 0xc6, XX, FN_PD, A16),
    E2I("shufpd mem", 0x66, 0xc6, XM, FN_PD, A16),
    E2I("pshufd", 0x66, 0x70, XX, FN_INT, A16),
    E2I("pshufd mem", 0x66, 0x70, XM, FN_INT, A16),
    E2I("pshuflw", 0xf2, 0x70, XX, FN_INT, A16),
    E2I("pshuflw mem", 0xf2, 0x70, XM, FN_INT, A16),
    E2I("pshufhw", 0xf3, 0x70, XX, FN_INT, A16),
    E2I("pshufhw mem", 0xf3, 0x70, XM, FN_INT, A16),
    /* integer */
    BIN("paddb", 0x66, 0xfc, FN_INT, A16),
    BIN("paddw", 0x66, 0xfd, FN_INT, A16),
    BIN("paddd", 0x66, 0xfe, FN_INT, A16),
    BIN("paddq", 0x66, 0xd4, FN_INT, A16),
    BIN("psubb", 0x66, 0xf8, FN_INT, A16),
    BIN("psubw", 0x66, 0xf9, FN_INT, A16),
    BIN("psubd", 0x66, 0xfa, FN_INT, A16),
    BIN("psubq", 0x66, 0xfb, FN_INT, A16),
    BIN("paddsb", 0x66, 0xec, FN_INT, A16),
    BIN("paddsw", 0x66, 0xed, FN_INT, A16),
    BIN("paddusb", 0x66, 0xdc, FN_INT, A16),
    BIN("paddusw", 0x66, 0xdd, FN_INT, A16),
    BIN("psubsb", 0x66, 0xe8, FN_INT, A16),
    BIN("psubsw", 0x66, 0xe9, FN_INT, A16),
    BIN("psubusb", 0x66, 0xd8, FN_INT, A16),
    BIN("psubusw", 0x66, 0xd9, FN_INT, A16),
    BIN("pmullw", 0x66, 0xd5, FN_INT, A16),
    BIN("pmulhw", 0x66, 0xe5, FN_INT, A16),
    BIN("pmulhuw", 0x66, 0xe4, FN_INT, A16),
    BIN("pmuludq", 0x66, 0xf4, FN_INT, A16),
    BIN("pmaddwd", 0x66, 0xf5, FN_INT, A16),
    BIN("psadbw", 0x66, 0xf6, FN_INT, A16),
    BIN("pavgb", 0x66, 0xe0, FN_INT, A16),
    BIN("pavgw", 0x66, 0xe3, FN_INT, A16),
    BIN("pminub", 0x66, 0xda, FN_INT, A16),
    BIN("pmaxub", 0x66, 0xde, FN_INT, A16),
    BIN("pminsw", 0x66, 0xea, FN_INT, A16),
    BIN("pmaxsw", 0x66, 0xee, FN_INT, A16),
    BIN("pcmpeqb", 0x66, 0x74, FN_INT, A16),
    BIN("pcmpeqw", 0x66, 0x75, FN_INT, A16),
    BIN("pcmpeqd", 0x66, 0x76, FN_INT, A16),
    BIN("pcmpgtb", 0x66, 0x64, FN_INT, A16),
    BIN("pcmpgtw", 0x66, 0x65, FN_INT, A16),
    BIN("pcmpgtd", 0x66, 0x66, FN_INT, A16),
    BIN("packsswb", 0x66, 0x63, FN_INT, A16),
    BIN("packssdw", 0x66, 0x6b, FN_INT, A16),
    BIN("packuswb", 0x66, 0x67, FN_INT, A16),
    BIN("punpcklbw", 0x66, 0x60, FN_INT, A16),
    BIN("punpcklwd", 0x66, 0x61, FN_INT, A16),
    BIN("punpckldq", 0x66, 0x62, FN_INT, A16),
    BIN("punpcklqdq", 0x66, 0x6c, FN_INT, A16),
    BIN("punpckhbw", 0x66, 0x68, FN_INT, A16),
    BIN("punpckhwd", 0x66, 0x69, FN_INT, A16),
    BIN("punpckhdq", 0x66, 0x6a, FN_INT, A16),
    BIN("punpckhqdq", 0x66, 0x6d, FN_INT, A16),
    BIN("pand", 0x66, 0xdb, FN_INT, A16),
    BIN("pandn", 0x66, 0xdf, FN_INT, A16),
    BIN("por", 0x66, 0xeb, FN_INT, A16),
    BIN("pxor", 0x66, 0xef, FN_INT, A16),
    BIN("psllw", 0x66, 0xf1, FN_INT, A16),
    BIN("pslld", 0x66, 0xf2, FN_INT, A16),
    BIN("psllq", 0x66, 0xf3, FN_INT, A16),
    BIN("psrlw", 0x66, 0xd1, FN_INT, A16),
    BIN("psrld", 0x66, 0xd2, FN_INT, A16),
    BIN("psrlq", 0x66, 0xd3, FN_INT, A16),
    BIN("psraw", 0x66, 0xe1, FN_INT, A16),
    BIN("psrad", 0x66, 0xe2, FN_INT, A16),
    ED("psllw imm", 0x66, 0x71, XI, FN_INT, 6, -2),
    ED("psrlw imm", 0x66, 0x71, XI, FN_INT, 2, -2),
    ED("psraw imm", 0x66, 0x71, XI, FN_INT, 4, -2),
    ED("pslld imm", 0x66, 0x72, XI, FN_INT, 6, -2),
    ED("psrld imm", 0x66, 0x72, XI, FN_INT, 2, -2),
    ED("psrad imm", 0x66, 0x72, XI, FN_INT, 4, -2),
    ED("psllq imm", 0x66, 0x73, XI, FN_INT, 6, -2),
    ED("psrlq imm", 0x66, 0x73, XI, FN_INT, 2, -2),
    ED("pslldq", 0x66, 0x73, XI, FN_INT, 7, -2),
    ED("psrldq", 0x66, 0x73, XI, FN_INT, 3, -2),
    EGI("pinsrw", 0x66, 0xc4, XG, FN_INT),
    EGI("pinsrw mem", 0x66, 0xc4, XM, FN_INT),
    EGI("pextrw", 0x66, 0xc5, GX, FN_INT),
    EG("pmovmskb", 0x66, 0xd7, GX, FN_INT, 1),
    EG("movmskps", 0, 0x50, GX, FN_PS, 1),
    EG("movmskpd", 0x66, 0x50, GX, FN_PD, 1),
    /* data movement */
    E2("movaps", 0, 0x28, XX, FN_PS, A16),
    E2("movaps load", 0, 0x28, XM, FN_PS, A16),
    E2("movaps store", 0, 0x29, MX, FN_PS, A16),
    E2("movapd", 0x66, 0x28, XX, FN_PD, A16),
    E2("movapd load", 0x66, 0x28, XM, FN_PD, A16),
    E2("movapd store", 0x66, 0x29, MX, FN_PD, A16),
    E2("movdqa", 0x66, 0x6f, XX, FN_INT, A16),
    E2("movdqa load", 0x66, 0x6f, XM, FN_INT, A16),
    E2("movdqa store", 0x66, 0x7f, MX, FN_INT, A16),
    E2("movups", 0, 0x10, XX, FN_PS, U),
    E2("movups load", 0, 0x10, XM, FN_PS, U),
    E2("movups store", 0, 0x11, MX, FN_PS, U),
    E2("movupd load", 0x66, 0x10, XM, FN_PD, U),
    E2("movupd store", 0x66, 0x11, MX, FN_PD, U),
    E2("movdqu", 0xf3, 0x6f, XX, FN_INT, U),
    E2("movdqu load", 0xf3, 0x6f, XM, FN_INT, U),
    E2("movdqu store", 0xf3, 0x7f, MX, FN_INT, U),
    E2("movntps", 0, 0x2b, MX, FN_PS, A16),
    E2("movntpd", 0x66, 0x2b, MX, FN_PD, A16),
    E2("movntdq", 0x66, 0xe7, MX, FN_INT, A16),
    EG("movnti", 0, 0xc3, MG, FN_INT, 1),
    E2("movss", 0xf3, 0x10, XX, FN_PS, U),
    E2("movss load", 0xf3, 0x10, XM, FN_PS, U),
    E2("movss store", 0xf3, 0x11, MX, FN_PS, U),
    E2("movsd", 0xf2, 0x10, XX, FN_PD, U),
    E2("movsd load", 0xf2, 0x10, XM, FN_PD, U),
    E2("movsd store", 0xf2, 0x11, MX, FN_PD, U),
    EG("movd/movq to xmm", 0x66, 0x6e, XG, FN_INT, 1),
    EG("movd/movq load", 0x66, 0x6e, XM, FN_INT, 1),
    EG("movd/movq from xmm", 0x66, 0x7e, RX, FN_INT, 1),
    EG("movd/movq store", 0x66, 0x7e, MX, FN_INT, 1),
    E2("movq xmm, xmm", 0xf3, 0x7e, XX, FN_INT, U),
    E2("movq load", 0xf3, 0x7e, XM, FN_INT, U),
    E2("movq xmm, xmm (d6)", 0x66, 0xd6, XX, FN_INT, U),
    E2("movq store (d6)", 0x66, 0xd6, MX, FN_INT, U),
    E2("movlps load", 0, 0x12, XM, FN_PS, U),
    E2("movlps store", 0, 0x13, MX, FN_PS, U),
    E2("movlpd load", 0x66, 0x12, XM, FN_PD, U),
    E2("movlpd store", 0x66, 0x13, MX, FN_PD, U),
    E2("movhps load", 0, 0x16, XM, FN_PS, U),
    E2("movhps store", 0, 0x17, MX, FN_PS, U),
    E2("movhpd load", 0x66, 0x16, XM, FN_PD, U),
    E2("movhpd store", 0x66, 0x17, MX, FN_PD, U),
    E2("movhlps", 0, 0x12, XX, FN_PS, U),
    E2("movlhps", 0, 0x16, XX, FN_PS, U),
    E2("maskmovdqu", 0x66, 0xf7, XX, FN_INT, U),
    /* MXCSR */
    ED("ldmxcsr", 0, 0xae, MEM, FN_INT, 2, -1),
    ED("stmxcsr", 0, 0xae, MEM, FN_INT, 3, -1),
};

/* General registers a form may name: not RSP, not RSI (the memory base), not RDI (MASKMOVDQU's
 * destination). */
static unsigned random_gpr(void)
{
	static const unsigned ok[] = {0, 1, 2, 3, 5, 8, 9, 10, 11, 12, 13, 14, 15};
	return ok[fn_below(sizeof(ok) / sizeof(ok[0]))];
}

/* Encodes one instruction of entry e with random registers; returns its length. */
static size_t encode(const struct entry *e, uint8_t *p, bool wide)
{
	size_t n = 0;
	unsigned reg = 0, rm = 0, mod = 3;
	switch (e->form) {
	case XX:
		reg = fn_below(16);
		rm = fn_below(16);
		break;
	case XM:
	case GM:
		reg = e->form == GM ? random_gpr() : fn_below(16);
		rm = 6;
		mod = 0;
		break;
	case MX:
	case MG:
		reg = e->form == MG ? random_gpr() : fn_below(16);
		rm = 6;
		mod = 0;
		break;
	case XI:
		reg = e->digit;
		rm = fn_below(16);
		break;
	case GX:
		reg = random_gpr();
		rm = fn_below(16);
		break;
	case RX:
		reg = fn_below(16);
		rm = random_gpr();
		break;
	case XG:
		reg = fn_below(16);
		rm = random_gpr();
		break;
	case MEM:
		reg = e->digit;
		rm = 6;
		mod = 0;
		break;
	}
	if (e->pfx)
		p[n++] = e->pfx;
	uint8_t rex =
	    (uint8_t)(0x40 | (wide ? 8 : 0) |
		      (reg >= 8 && e->form != XI && e->form != MEM ? 4 : 0) | (rm >= 8 ? 1 : 0));
	if (rex != 0x40 || fn_below(8) == 0)
		p[n++] = rex; /* sometimes a bare REX, which changes nothing here */
	p[n++] = 0x0f;
	for (unsigned i = 0; i < e->nop; i++)
		p[n++] = e->op[i];
	p[n++] = (uint8_t)(mod << 6 | (reg & 7) << 3 | (rm & 7));
	if (e->imm == -2)
		p[n++] = (uint8_t)(fn_below(4) == 0 ? fn_below(8) : fn_rand());
	return n;
}

/* A random MXCSR: rounding, DAZ, FTZ, old flags, and sometimes unmasked exceptions. */
static uint32_t random_mxcsr(void)
{
	uint32_t m = 0x1f80 | (uint32_t)fn_below(4) << 13;
	if (fn_below(4) == 0)
		m |= 0x8000;
	if (fn_below(4) == 0)
		m |= 0x40;
	if (fn_below(4) == 0)
		m |= (uint32_t)fn_rand() & 0x3f;
	if (fn_below(3) == 0)
		m &= ~((uint32_t)fn_rand() & 0x1f80);
	return m;
}

/* Where [rsi] points: mostly aligned, sometimes not, sometimes across into the guard page. */
static uint64_t random_address(const struct entry *e)
{
	unsigned k = fn_below(20);
	if (k == 0)
		return FN_GUARD - 1 - fn_below(15);
	if (k <= 2)
		return FN_DATA + fn_below(FN_DSIZE - 32) + 1;
	if (e->form == MEM && k < 6)
		return FN_DATA + fn_below(FN_DSIZE - 32);
	return FN_DATA + 16 * fn_below(FN_DSIZE / 16 - 2);
}

static void random_state(struct fn_state *st, const struct entry *e)
{
	for (int i = 0; i < 16; i++)
		st->gpr[i] = fn_below(3) == 0 ? fn_rand() & 0xffffffff : fn_rand();
	st->gpr[GPR_RSI] = random_address(e);
	st->gpr[GPR_RDI] = FN_DATA + fn_below(FN_DSIZE - 16);
	st->rflags = 0x202 | (fn_rand() & 0x8d5);
	fn_default_fx(st->fx, random_mxcsr());
	fn_fill(st->fx + FXO_XMM(0), 256, e->lanes);
	if (e->form == XG && fn_below(2)) {
		/* integer sources that convert exactly or need rounding */
		for (int i = 0; i < 16; i++)
			st->gpr[i] = (uint64_t)(int64_t)(int32_t)fn_rand() >> fn_below(40);
		st->gpr[GPR_RSI] = random_address(e);
	}
	fn_fill(fn_data_in, FN_DSIZE, e->lanes);
	if (e->form == MEM && e->digit == 2 && fn_below(4)) {
		/* LDMXCSR: mostly valid values, sometimes reserved bits (#GP) */
		uint32_t m = random_mxcsr();
		uint64_t off = st->gpr[GPR_RSI] - FN_DATA;
		if (off + 4 <= FN_DSIZE)
			memcpy(fn_data_in + off, &m, 4);
	}
}

static void test_forms(void **state)
{
	(void)state;
	bool ok = true;
	for (size_t k = 0; k < sizeof(entries) / sizeof(entries[0]); k++) {
		const struct entry *e = &entries[k];
		for (int i = 0; i < CASES; i++) {
			struct fn_state in;
			random_state(&in, e);
			uint8_t code[16];
			bool wide = e->wide && fn_below(2);
			size_t len = encode(e, code, wide);
			ok &= fn_check(e->name, code, len, &in, FL_ARITH | FL_DF);
		}
	}
	assert_true(ok);
}

/* Runs code on the soft CPU only (forms the host would execute differently, as it has more
 * extensions) and returns the exception vector, -1 if none. */
static int soft_only(const uint8_t *code, size_t len, void (*prep)(struct soft_cpu *))
{
	struct fn_state in;
	memset(&in, 0, sizeof(in));
	in.gpr[GPR_RSI] = FN_DATA;
	in.rflags = 0x202;
	fn_default_fx(in.fx, 0x1f80);
	fn_run_soft(code, len, &in, &fn_sft, prep);
	return fn_sft.vector;
}

/* MMX registers and SSE3+ instructions do not exist on this CPU. */
static void test_undefined(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		uint8_t code[8];
		size_t len;
	} ud[] = {
	    {"paddb mm0, mm1", {0x0f, 0xfc, 0xc1}, 3},
	    {"movd mm0, eax", {0x0f, 0x6e, 0xc0}, 3},
	    {"movq mm0, [rsi]", {0x0f, 0x6f, 0x06}, 3},
	    {"cvtpi2ps xmm0, mm1", {0x0f, 0x2a, 0xc1}, 3},
	    {"cvttps2pi mm0, xmm1", {0x0f, 0x2c, 0xc1}, 3},
	    {"movq2dq xmm0, mm1", {0xf3, 0x0f, 0xd6, 0xc1}, 4},
	    {"pshufw mm0, mm1, 0", {0x0f, 0x70, 0xc1, 0x00}, 4},
	    {"pmovmskb eax, mm1", {0x0f, 0xd7, 0xc1}, 3},
	    {"maskmovq mm0, mm1", {0x0f, 0xf7, 0xc1}, 3},
	    {"emms", {0x0f, 0x77}, 2},
	    {"haddps (SSE3)", {0xf2, 0x0f, 0x7c, 0xc1}, 4},
	    {"lddqu (SSE3)", {0xf2, 0x0f, 0xf0, 0x06}, 4},
	    {"movddup (SSE3)", {0xf2, 0x0f, 0x12, 0xc1}, 4},
	    {"pshufb (SSSE3)", {0x66, 0x0f, 0x38, 0x00, 0xc1}, 5},
	    {"pextrw [rsi] (SSE4.1)", {0x66, 0x0f, 0x3a, 0x15, 0x06, 0x01}, 6},
	    {"ptest (SSE4.1)", {0x66, 0x0f, 0x38, 0x17, 0xc1}, 5},
	    {"movlpd xmm0, xmm1 (no such form)", {0x66, 0x0f, 0x12, 0xc1}, 4},
	};
	for (size_t i = 0; i < sizeof(ud) / sizeof(ud[0]); i++) {
		int v = soft_only(ud[i].code, ud[i].len, NULL);
		if (v != EXC_UD)
			fprintf(stderr, "%s: vector %d, expected #UD\n", ud[i].name, v);
		assert_int_equal(v, EXC_UD);
	}
}

static void prep_ts(struct soft_cpu *c)
{
	c->cr0 |= CR0_TS;
}

static void prep_no_osfxsr(struct soft_cpu *c)
{
	c->cr4 &= ~CR4_OSFXSR;
}

static void prep_no_osxmmexcpt(struct soft_cpu *c)
{
	c->cr4 &= ~CR4_OSXMMEXCPT;
	c->mxcsr = 0x1f80 & ~0x200u; /* divide by zero unmasked */
}

static void prep_unmask_ze(struct soft_cpu *c)
{
	c->mxcsr = 0x1f80 & ~0x200u;
}

static void test_control_bits(void **state)
{
	(void)state;
	static const uint8_t addps[] = {0x0f, 0x58, 0xc1};
	static const uint8_t divss[] = {0xf3, 0x0f, 0x5e, 0xc1}; /* 0 / 0 */
	static const uint8_t fxsave[] = {0x48, 0x0f, 0xae, 0x06};
	assert_int_equal(soft_only(addps, sizeof(addps), prep_ts), EXC_NM);
	assert_int_equal(soft_only(fxsave, sizeof(fxsave), prep_ts), EXC_NM);
	assert_int_equal(soft_only(addps, sizeof(addps), prep_no_osfxsr), EXC_UD);
	assert_int_equal(soft_only(addps, sizeof(addps), NULL), -1);
	/* 0/0 is invalid, not divide by zero: IE is masked, so it completes. */
	assert_int_equal(soft_only(divss, sizeof(divss), prep_unmask_ze), -1);
	assert_int_equal(fn_sft.st.fx[FXO_MXCSR] & 0x3f, 0x01);
	/* 0/1 fine; 1/0 is #Z: #XM, or #UD without CR4.OSXMMEXCPT; xmm0 keeps its value. */
	struct fn_state in;
	memset(&in, 0, sizeof(in));
	in.rflags = 0x202;
	fn_default_fx(in.fx, 0x1f80 & ~0x200u);
	uint32_t one = 0x3f800000;
	memcpy(in.fx + FXO_XMM(0), &one, 4);
	fn_run_soft(divss, sizeof(divss), &in, &fn_sft, NULL);
	assert_int_equal(fn_sft.vector, EXC_XM);
	assert_memory_equal(fn_sft.st.fx + FXO_XMM(0), &one, 4);
	assert_int_equal(fn_sft.st.fx[FXO_MXCSR] & 0x3f, 0x04);
	fn_run_soft(divss, sizeof(divss), &in, &fn_sft, prep_no_osxmmexcpt);
	assert_int_equal(fn_sft.vector, EXC_UD);
	/* The same natively. */
	fn_run_native(divss, sizeof(divss), &in, &fn_nat);
	assert_int_equal(fn_nat.vector, EXC_XM);
}

/* x87 state for FXSAVE tests: random registers, tags, control and status words. */
static void random_x87(uint8_t *fx)
{
	uint16_t fcw = (uint16_t)((fn_rand() & 0x0f3f) | 0x40);
	uint16_t fsw = (uint16_t)(fn_rand() & 0x7f00);
	if (fn_below(2))
		fsw |= (uint16_t)(fn_rand() & 0x3f & fcw); /* masked flags only: nothing pending */
	memcpy(fx + FXO_FCW, &fcw, 2);
	memcpy(fx + FXO_FSW, &fsw, 2);
	fx[FXO_FTW] = (uint8_t)fn_rand();
	for (int i = 0; i < 8; i++) {
		uint64_t m = fn_rand();
		uint16_t se = (uint16_t)fn_rand();
		memcpy(fx + FXO_ST(i), &m, 8);
		memcpy(fx + FXO_ST(i) + 8, &se, 2);
	}
}

/* FXRSTOR then FXSAVE natively against soft_fxrstor_image then soft_fxsave_image, byte for
 * byte (an empty snippet). */
static void test_fx_image(void **state)
{
	(void)state;
	bool ok = true;
	static const uint8_t nop[] = {0x90};
	for (int i = 0; i < 300; i++) {
		struct fn_state in;
		memset(&in, 0, sizeof(in));
		in.rflags = 0x202;
		fn_default_fx(in.fx, random_mxcsr());
		random_x87(in.fx);
		fn_fill(in.fx + FXO_XMM(0), 256, FN_INT);
		fn_fill(fn_data_in, FN_DSIZE, FN_INT);
		ok &= fn_check("fxrstor/fxsave image", nop, sizeof(nop), &in, FL_ARITH);
	}
	assert_true(ok);
}

/* FXSAVE/FXSAVE64 and FXRSTOR/FXRSTOR64 as instructions: the stored area (but for the
 * last-instruction pointers and MXCSR_MASK), alignment, the MXCSR check, faults. */
static void test_fxsave_insns(void **state)
{
	(void)state;
	bool ok = true;
	static const struct {
		const char *name;
		uint8_t code[4];
		size_t len;
		bool save;
	} insns[] = {
	    {"fxsave64", {0x48, 0x0f, 0xae, 0x06}, 4, true},
	    {"fxsave", {0x0f, 0xae, 0x06}, 3, true},
	    {"fxrstor64", {0x48, 0x0f, 0xae, 0x0e}, 4, false},
	    {"fxrstor", {0x0f, 0xae, 0x0e}, 3, false},
	};
	for (size_t k = 0; k < sizeof(insns) / sizeof(insns[0]); k++) {
		for (int i = 0; i < 150; i++) {
			struct fn_state in;
			memset(&in, 0, sizeof(in));
			in.rflags = 0x202;
			fn_default_fx(in.fx, random_mxcsr());
			random_x87(in.fx);
			fn_fill(in.fx + FXO_XMM(0), 256, FN_INT);
			fn_fill(fn_data_in, FN_DSIZE, FN_INT);
			unsigned off = 16 * fn_below(FN_DSIZE / 16 - 32);
			unsigned pick = fn_below(16);
			if (pick == 0)
				off += 1 + fn_below(15); /* misaligned: #GP */
			else if (pick == 1)
				off = FN_DSIZE - 256; /* runs into the guard page: #PF */
			in.gpr[GPR_RSI] = FN_DATA + off;
			memset(fn_skip_data, 0, sizeof(fn_skip_data));
			if (insns[k].save && off + 32 <= FN_DSIZE) {
				memset(fn_skip_data + off + 6, 1, 18);
				memset(fn_skip_data + off + 28, 1, 4);
			}
			if (!insns[k].save && off + 512 <= FN_DSIZE) {
				/* a plausible image: a loadable MXCSR most of the time */
				uint8_t *img = fn_data_in + off;
				random_x87(img);
				uint32_t m =
				    fn_below(8) ? random_mxcsr() : random_mxcsr() | 1u << 16;
				memcpy(img + FXO_MXCSR, &m, 4);
			}
			ok &= fn_check(insns[k].name, insns[k].code, insns[k].len, &in, FL_ARITH);
		}
	}
	memset(fn_skip_data, 0, sizeof(fn_skip_data));
	assert_true(ok);
}

/* A short sequence such as glibc's strlen and memcpy run: loads, compares, masks, stores. */
static void test_sequence(void **state)
{
	(void)state;
	static const uint8_t code[] = {
	    0x66, 0x0f, 0xef, 0xc0,       /* pxor xmm0, xmm0 */
	    0xf3, 0x0f, 0x6f, 0x0e,       /* movdqu xmm1, [rsi] */
	    0x66, 0x0f, 0x74, 0xc1,       /* pcmpeqb xmm0, xmm1 */
	    0x66, 0x0f, 0xd7, 0xc0,       /* pmovmskb eax, xmm0 */
	    0x66, 0x0f, 0x6f, 0x56, 0x10, /* movdqa xmm2, [rsi + 16] */
	    0x66, 0x0f, 0x7f, 0x57, 0x20, /* movdqa [rdi + 32], xmm2 */
	    0x0f, 0x11, 0x4f, 0x05,       /* movups [rdi + 5], xmm1 */
	    0x66, 0x0f, 0xda, 0xca,       /* pminub xmm1, xmm2 */
	    0x66, 0x0f, 0x73, 0xd9, 0x03, /* psrldq xmm1, 3 */
	    0x66, 0x48, 0x0f, 0x7e, 0xcb, /* movq rbx, xmm1 */
	};
	bool ok = true;
	for (int i = 0; i < 200; i++) {
		struct fn_state in;
		memset(&in, 0, sizeof(in));
		in.rflags = 0x202;
		fn_default_fx(in.fx, 0x1f80);
		fn_fill(in.fx + FXO_XMM(0), 256, FN_INT);
		fn_fill(fn_data_in, FN_DSIZE, FN_INT);
		in.gpr[GPR_RSI] = FN_DATA + 16 * fn_below(64);
		in.gpr[GPR_RDI] = FN_DATA + 0x1000 + 16 * fn_below(64);
		ok &= fn_check("strlen/memcpy sequence", code, sizeof(code), &in, FL_ARITH);
	}
	assert_true(ok);
}

static int setup(void **state)
{
	(void)state;
	return fn_setup();
}

static int teardown(void **state)
{
	(void)state;
	fn_teardown();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_forms),        cmocka_unit_test(test_undefined),
	    cmocka_unit_test(test_control_bits), cmocka_unit_test(test_fx_image),
	    cmocka_unit_test(test_fxsave_insns), cmocka_unit_test(test_sequence),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
