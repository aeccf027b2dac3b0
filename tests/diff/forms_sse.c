/* SSE forms: SSE/SSE2 (the baseline), and SSE3..SSE4.2 ones that run only when the soft CPUID
 * advertises them. Legacy-encoded 16-byte memory operands must be 16-byte aligned except for
 * the explicitly unaligned moves; a misaligned one is #GP(0), which some cases exercise. */
#include <stdio.h>
#include <string.h>

#include "forms.h"

enum { BOTH, REG, MEM };

static void vec(const char *mn, unsigned os, uint8_t pfx, unsigned map, uint8_t op, int modrm,
		unsigned regk, unsigned rmk, unsigned msize, unsigned align, unsigned lanes,
		unsigned imm, unsigned feat, unsigned only, void (*fix)(struct tcase *),
		uint32_t fl)
{
	for (int m = 0; m < 2; m++) {
		if ((only == REG && m) || (only == MEM && !m))
			continue;
		uint8_t opc[4];
		size_t n = 0;
		opc[n++] = 0x0f;
		if (map == 1)
			opc[n++] = 0x38;
		if (map == 2)
			opc[n++] = 0x3a;
		opc[n++] = op;
		struct form *f = add(os, pfx ? &pfx : NULL, pfx ? 1 : 0, opc, n, modrm, regk, rmk,
				     m, imm, "%s%s", mn, only ? "" : rm_sfx(m));
		if (m) {
			f->msize = (uint8_t)msize;
			f->malign = (uint8_t)align;
		}
		f->lanes = (uint8_t)lanes;
		f->feat = (uint8_t)feat;
		f->fix = fix;
		f->fl |= fl;
	}
}

/* Two-operand xmm, xmm/m forms. */
static void xx(const char *mn, uint8_t pfx, uint8_t op, unsigned msize, unsigned align,
	       unsigned lanes, uint32_t fl)
{
	vec(mn, 0, pfx, 0, op, MR_R, K_XMM, K_XMM, msize, align, lanes, 0, FEAT_BASE, BOTH, NULL,
	    fl);
}

/* Shifts by an xmm count: mostly counts that do not clear everything. */
static void fix_shcount(struct tcase *tc)
{
	if (!chance(70))
		return;
	uint64_t v = rnd_below(70);
	if (tc->has_mem)
		mem_set(tc, tc->ea, 8, v);
	else
		memcpy(tc->in.fx + FX_XMM(tc->rm), &v, 8);
}

static void fix_imm_count(struct tcase *tc)
{
	if (chance(70))
		imm_set(tc, 1, rnd_below(70));
}

/* cmpps & co.: predicates 0..7 mostly (the legacy encodings ignore bits 7:3). */
static void fix_cmp_pred(struct tcase *tc)
{
	if (chance(85))
		imm_set(tc, 1, rnd_below(8));
}

static void fix_round_imm(struct tcase *tc)
{
	if (chance(85))
		imm_set(tc, 1, rnd_below(16));
}

static void fix_ldmxcsr(struct tcase *tc)
{
	uint32_t v = (uint32_t)rnd() & 0xffff;
	if (chance(10))
		v |= 1u << (chance(50) ? 16 : 18 + rnd_below(14)); /* reserved: #GP */
	mem_set(tc, tc->ea, 4, v);
}

static void fix_fxrstor(struct tcase *tc)
{
	uint8_t img[512];
	rnd_fx(img, L_INT, true, true);
	if (chance(10))
		img[FX_MXCSR + 2] |= (uint8_t)(chance(50) ? 1 : 4); /* reserved MXCSR bit: #GP */
	if (in_scratch(tc->ea, 512))
		memcpy(tc->mem + (tc->ea - SCRATCH_BASE), img, 512);
}

/* FXSAVE's FOP, FIP, FDP (and their selectors) and MXCSR_MASK describe the machine, not the
 * instruction's result. */
static void fix_fxsave(struct tcase *tc)
{
	if (in_scratch(tc->ea, 512)) {
		tc->undef_mem_lo = (uint32_t)(tc->ea - SCRATCH_BASE) + 6;
		tc->undef_mem_hi = (uint32_t)(tc->ea - SCRATCH_BASE) + 32;
	}
}

static void fix_maskmov(struct tcase *tc)
{
	tc->in.gpr[7] = chance(95) ? SCRATCH_BASE + rnd_below(SCRATCH_SIZE - 16)
				   : SCRATCH_BASE + SCRATCH_SIZE - rnd_below(16);
}

static void sse_int(void)
{
	static const struct {
		const char *mn;
		uint8_t op;
	} ops[] = {
	    {"punpcklbw", 0x60},  {"punpcklwd", 0x61},  {"punpckldq", 0x62},
	    {"packsswb", 0x63},   {"pcmpgtb", 0x64},    {"pcmpgtw", 0x65},
	    {"pcmpgtd", 0x66},    {"packuswb", 0x67},   {"punpckhbw", 0x68},
	    {"punpckhwd", 0x69},  {"punpckhdq", 0x6a},  {"packssdw", 0x6b},
	    {"punpcklqdq", 0x6c}, {"punpckhqdq", 0x6d}, {"movdqa xmm, xmm/m128", 0x6f},
	    {"pcmpeqb", 0x74},    {"pcmpeqw", 0x75},    {"pcmpeqd", 0x76},
	    {"paddq", 0xd4},      {"pmullw", 0xd5},     {"psubusb", 0xd8},
	    {"psubusw", 0xd9},    {"pminub", 0xda},     {"pand", 0xdb},
	    {"paddusb", 0xdc},    {"paddusw", 0xdd},    {"pmaxub", 0xde},
	    {"pandn", 0xdf},      {"pavgb", 0xe0},      {"pavgw", 0xe3},
	    {"pmulhuw", 0xe4},    {"pmulhw", 0xe5},     {"psubsb", 0xe8},
	    {"psubsw", 0xe9},     {"pminsw", 0xea},     {"por", 0xeb},
	    {"paddsb", 0xec},     {"paddsw", 0xed},     {"pmaxsw", 0xee},
	    {"pxor", 0xef},       {"pmuludq", 0xf4},    {"pmaddwd", 0xf5},
	    {"psadbw", 0xf6},     {"psubb", 0xf8},      {"psubw", 0xf9},
	    {"psubd", 0xfa},      {"psubq", 0xfb},      {"paddb", 0xfc},
	    {"paddw", 0xfd},      {"paddd", 0xfe},      {"movdqa xmm/m128, xmm", 0x7f},
	};
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		xx(ops[i].mn, 0x66, ops[i].op, 16, 16, L_INT, 0);
	static const struct {
		const char *mn;
		uint8_t op;
	} shx[] = {{"psrlw", 0xd1}, {"psrld", 0xd2}, {"psrlq", 0xd3}, {"psraw", 0xe1},
		   {"psrad", 0xe2}, {"psllw", 0xf1}, {"pslld", 0xf2}, {"psllq", 0xf3}};
	for (size_t i = 0; i < sizeof(shx) / sizeof(shx[0]); i++)
		vec(shx[i].mn, 0, 0x66, 0, shx[i].op, MR_R, K_XMM, K_XMM, 16, 16, L_INT, 0,
		    FEAT_BASE, BOTH, fix_shcount, 0);
	static const struct {
		const char *mn;
		uint8_t op, digit;
	} shi[] = {{"psrlw xmm, imm8", 0x71, 2}, {"psraw xmm, imm8", 0x71, 4},
		   {"psllw xmm, imm8", 0x71, 6}, {"psrld xmm, imm8", 0x72, 2},
		   {"psrad xmm, imm8", 0x72, 4}, {"pslld xmm, imm8", 0x72, 6},
		   {"psrlq xmm, imm8", 0x73, 2}, {"psrldq xmm, imm8", 0x73, 3},
		   {"psllq xmm, imm8", 0x73, 6}, {"pslldq xmm, imm8", 0x73, 7}};
	for (size_t i = 0; i < sizeof(shi) / sizeof(shi[0]); i++)
		vec(shi[i].mn, 0, 0x66, 0, shi[i].op, shi[i].digit, 0, K_XMM, 16, 16, L_INT, 1,
		    FEAT_BASE, REG, fix_imm_count, 0);
	vec("pshufd", 0, 0x66, 0, 0x70, MR_R, K_XMM, K_XMM, 16, 16, L_INT, 1, FEAT_BASE, BOTH, NULL,
	    0);
	vec("pshuflw", 0, 0xf2, 0, 0x70, MR_R, K_XMM, K_XMM, 16, 16, L_INT, 1, FEAT_BASE, BOTH,
	    NULL, 0);
	vec("pshufhw", 0, 0xf3, 0, 0x70, MR_R, K_XMM, K_XMM, 16, 16, L_INT, 1, FEAT_BASE, BOTH,
	    NULL, 0);
	xx("movdqu xmm, xmm/m128", 0xf3, 0x6f, 16, 0, L_INT, 0);
	xx("movdqu xmm/m128, xmm", 0xf3, 0x7f, 16, 0, L_INT, 0);
	xx("movq xmm, xmm/m64", 0xf3, 0x7e, 8, 0, L_INT, 0);
	xx("movq xmm/m64, xmm", 0x66, 0xd6, 8, 0, L_INT, 0);
	vec("movntdq m128, xmm", 0, 0x66, 0, 0xe7, MR_R, K_XMM, K_XMM, 16, 16, L_INT, 0, FEAT_BASE,
	    MEM, NULL, 0);
	vec("movd xmm, r/m32", 0, 0x66, 0, 0x6e, MR_R, K_XMM, K_G32, 4, 0, L_INT, 0, FEAT_BASE,
	    BOTH, NULL, 0);
	vec("movq xmm, r/m64", 64, 0x66, 0, 0x6e, MR_R, K_XMM, K_G64, 8, 0, L_INT, 0, FEAT_BASE,
	    BOTH, NULL, 0);
	vec("movd r/m32, xmm", 0, 0x66, 0, 0x7e, MR_R, K_XMM, K_G32, 4, 0, L_INT, 0, FEAT_BASE,
	    BOTH, NULL, 0);
	vec("movq r/m64, xmm", 64, 0x66, 0, 0x7e, MR_R, K_XMM, K_G64, 8, 0, L_INT, 0, FEAT_BASE,
	    BOTH, NULL, 0);
	vec("pmovmskb r32, xmm", 0, 0x66, 0, 0xd7, MR_R, K_G32, K_XMM, 0, 0, L_INT, 0, FEAT_BASE,
	    REG, NULL, 0);
	vec("pextrw r32, xmm, imm8", 0, 0x66, 0, 0xc5, MR_R, K_G32, K_XMM, 0, 0, L_INT, 1,
	    FEAT_BASE, REG, NULL, 0);
	vec("pinsrw xmm, r32/m16, imm8", 0, 0x66, 0, 0xc4, MR_R, K_XMM, K_G32, 2, 0, L_INT, 1,
	    FEAT_BASE, BOTH, NULL, 0);
	vec("maskmovdqu xmm, xmm", 0, 0x66, 0, 0xf7, MR_R, K_XMM, K_XMM, 0, 0, L_INT, 0, FEAT_BASE,
	    REG, fix_maskmov, 0);
	for (unsigned b = 32; b <= 64; b *= 2) {
		struct form *f =
		    add(b, NOPFX, B(0x0f, 0xc3), MR_R, gk(b), gk(b), 1, 0, "movnti m%u, r%u", b, b);
		(void)f;
	}
}

static void sse_fp(void)
{
	/* The same operation in its ps, pd, ss and sd forms. */
	static const struct {
		const char *mn;
		uint8_t op;
	} arith[] = {{"sqrt", 0x51}, {"add", 0x58}, {"mul", 0x59}, {"sub", 0x5c},
		     {"min", 0x5d},  {"div", 0x5e}, {"max", 0x5f}};
	static const struct {
		const char *sfx;
		uint8_t pfx, msize, align, lanes;
	} kinds[] = {{"ps", 0, 16, 16, L_PS},
		     {"pd", 0x66, 16, 16, L_PD},
		     {"ss", 0xf3, 4, 0, L_PS},
		     {"sd", 0xf2, 8, 0, L_PD}};
	char name[64];
	for (size_t i = 0; i < sizeof(arith) / sizeof(arith[0]); i++)
		for (size_t k = 0; k < 4; k++) {
			snprintf(name, sizeof(name), "%s%s", arith[i].mn, kinds[k].sfx);
			xx(name, kinds[k].pfx, arith[i].op, kinds[k].msize, kinds[k].align,
			   kinds[k].lanes, FF_MXUNMASK);
		}
	for (size_t k = 0; k < 4; k++) {
		snprintf(name, sizeof(name), "cmp%s xmm, xmm/m, imm8", kinds[k].sfx);
		vec(name, 0, kinds[k].pfx, 0, 0xc2, MR_R, K_XMM, K_XMM, kinds[k].msize,
		    kinds[k].align, kinds[k].lanes, 1, FEAT_BASE, BOTH, fix_cmp_pred, FF_MXUNMASK);
	}
	static const struct {
		const char *mn;
		uint8_t op;
	} logic[] = {{"and", 0x54}, {"andn", 0x55},   {"or", 0x56},
		     {"xor", 0x57}, {"unpckl", 0x14}, {"unpckh", 0x15}};
	for (size_t i = 0; i < sizeof(logic) / sizeof(logic[0]); i++)
		for (size_t k = 0; k < 2; k++) {
			snprintf(name, sizeof(name), "%s%s", logic[i].mn, kinds[k].sfx);
			xx(name, kinds[k].pfx, logic[i].op, 16, 16, kinds[k].lanes, 0);
		}
	vec("shufps", 0, 0, 0, 0xc6, MR_R, K_XMM, K_XMM, 16, 16, L_PS, 1, FEAT_BASE, BOTH, NULL, 0);
	vec("shufpd", 0, 0x66, 0, 0xc6, MR_R, K_XMM, K_XMM, 16, 16, L_PD, 1, FEAT_BASE, BOTH, NULL,
	    0);

	static const struct {
		const char *mn;
		uint8_t pfx, op, msize, align, lanes;
		uint8_t only;
	} mv[] = {
	    {"movups xmm, xmm/m128", 0, 0x10, 16, 0, L_PS, BOTH},
	    {"movups xmm/m128, xmm", 0, 0x11, 16, 0, L_PS, BOTH},
	    {"movupd xmm, xmm/m128", 0x66, 0x10, 16, 0, L_PD, BOTH},
	    {"movupd xmm/m128, xmm", 0x66, 0x11, 16, 0, L_PD, BOTH},
	    {"movaps xmm, xmm/m128", 0, 0x28, 16, 16, L_PS, BOTH},
	    {"movaps xmm/m128, xmm", 0, 0x29, 16, 16, L_PS, BOTH},
	    {"movapd xmm, xmm/m128", 0x66, 0x28, 16, 16, L_PD, BOTH},
	    {"movapd xmm/m128, xmm", 0x66, 0x29, 16, 16, L_PD, BOTH},
	    {"movss xmm, xmm/m32", 0xf3, 0x10, 4, 0, L_PS, BOTH},
	    {"movss xmm/m32, xmm", 0xf3, 0x11, 4, 0, L_PS, BOTH},
	    {"movsd xmm, xmm/m64", 0xf2, 0x10, 8, 0, L_PD, BOTH},
	    {"movsd xmm/m64, xmm", 0xf2, 0x11, 8, 0, L_PD, BOTH},
	    {"movhlps xmm, xmm", 0, 0x12, 0, 0, L_PS, REG},
	    {"movlps xmm, m64", 0, 0x12, 8, 0, L_PS, MEM},
	    {"movlps m64, xmm", 0, 0x13, 8, 0, L_PS, MEM},
	    {"movlhps xmm, xmm", 0, 0x16, 0, 0, L_PS, REG},
	    {"movhps xmm, m64", 0, 0x16, 8, 0, L_PS, MEM},
	    {"movhps m64, xmm", 0, 0x17, 8, 0, L_PS, MEM},
	    {"movlpd xmm, m64", 0x66, 0x12, 8, 0, L_PD, MEM},
	    {"movlpd m64, xmm", 0x66, 0x13, 8, 0, L_PD, MEM},
	    {"movhpd xmm, m64", 0x66, 0x16, 8, 0, L_PD, MEM},
	    {"movhpd m64, xmm", 0x66, 0x17, 8, 0, L_PD, MEM},
	    {"movntps m128, xmm", 0, 0x2b, 16, 16, L_PS, MEM},
	    {"movntpd m128, xmm", 0x66, 0x2b, 16, 16, L_PD, MEM},
	    {"comiss", 0, 0x2f, 4, 0, L_PS, BOTH},
	    {"ucomiss", 0, 0x2e, 4, 0, L_PS, BOTH},
	    {"comisd", 0x66, 0x2f, 8, 0, L_PD, BOTH},
	    {"ucomisd", 0x66, 0x2e, 8, 0, L_PD, BOTH},
	    {"cvtps2pd", 0, 0x5a, 8, 0, L_PS, BOTH},
	    {"cvtpd2ps", 0x66, 0x5a, 16, 16, L_PD, BOTH},
	    {"cvtss2sd", 0xf3, 0x5a, 4, 0, L_PS, BOTH},
	    {"cvtsd2ss", 0xf2, 0x5a, 8, 0, L_PD, BOTH},
	    {"cvtdq2ps", 0, 0x5b, 16, 16, L_INT, BOTH},
	    {"cvtps2dq", 0x66, 0x5b, 16, 16, L_PS, BOTH},
	    {"cvttps2dq", 0xf3, 0x5b, 16, 16, L_PS, BOTH},
	    {"cvttpd2dq", 0x66, 0xe6, 16, 16, L_PD, BOTH},
	    {"cvtdq2pd", 0xf3, 0xe6, 8, 0, L_INT, BOTH},
	    {"cvtpd2dq", 0xf2, 0xe6, 16, 16, L_PD, BOTH},
	};
	for (size_t i = 0; i < sizeof(mv) / sizeof(mv[0]); i++)
		vec(mv[i].mn, 0, mv[i].pfx, 0, mv[i].op, MR_R, K_XMM, K_XMM, mv[i].msize,
		    mv[i].align, mv[i].lanes, 0, FEAT_BASE, mv[i].only, NULL, FF_MXUNMASK);
	vec("movmskps r32, xmm", 0, 0, 0, 0x50, MR_R, K_G32, K_XMM, 0, 0, L_PS, 0, FEAT_BASE, REG,
	    NULL, 0);
	vec("movmskpd r32, xmm", 0, 0x66, 0, 0x50, MR_R, K_G32, K_XMM, 0, 0, L_PD, 0, FEAT_BASE,
	    REG, NULL, 0);

	/* Conversions between general registers and scalars. */
	for (unsigned b = 32; b <= 64; b *= 2) {
		char n2[64];
		snprintf(n2, sizeof(n2), "cvtsi2ss xmm, r/m%u", b);
		vec(n2, b, 0xf3, 0, 0x2a, MR_R, K_XMM, gk(b), b / 8, 0, L_PS, 0, FEAT_BASE, BOTH,
		    NULL, FF_MXUNMASK);
		snprintf(n2, sizeof(n2), "cvtsi2sd xmm, r/m%u", b);
		vec(n2, b, 0xf2, 0, 0x2a, MR_R, K_XMM, gk(b), b / 8, 0, L_PD, 0, FEAT_BASE, BOTH,
		    NULL, FF_MXUNMASK);
		static const struct {
			const char *mn;
			uint8_t pfx, op, msize, lanes;
		} cv[] = {{"cvttss2si", 0xf3, 0x2c, 4, L_PS},
			  {"cvtss2si", 0xf3, 0x2d, 4, L_PS},
			  {"cvttsd2si", 0xf2, 0x2c, 8, L_PD},
			  {"cvtsd2si", 0xf2, 0x2d, 8, L_PD}};
		for (size_t i = 0; i < 4; i++) {
			snprintf(n2, sizeof(n2), "%s r%u, xmm/m%u", cv[i].mn, b, cv[i].msize * 8);
			vec(n2, b, cv[i].pfx, 0, cv[i].op, MR_R, gk(b), K_XMM, cv[i].msize, 0,
			    cv[i].lanes, 0, FEAT_BASE, BOTH, NULL, FF_MXUNMASK);
		}
	}

	/* MXCSR and the FXSAVE area. */
	vec("ldmxcsr m32", 0, 0, 0, 0xae, 2, 0, K_G32, 4, 0, L_INT, 0, FEAT_BASE, MEM, fix_ldmxcsr,
	    0);
	vec("stmxcsr m32", 0, 0, 0, 0xae, 3, 0, K_G32, 4, 0, L_INT, 0, FEAT_BASE, MEM, NULL, 0);
	for (unsigned w = 0; w < 2; w++) {
		struct form *f;
		f = add(w ? 64 : 0, NOPFX, B(0x0f, 0xae), 0, 0, K_XMM, 1, 0, "fxsave%s m512",
			w ? "64" : "");
		f->malign = 16;
		f->mhi = 512;
		f->fl |= FF_CMPX87 | FF_NOFAULT;
		f->fix = fix_fxsave;
		f = add(w ? 64 : 0, NOPFX, B(0x0f, 0xae), 1, 0, K_XMM, 1, 0, "fxrstor%s m512",
			w ? "64" : "");
		f->malign = 16;
		f->mhi = 512;
		f->fl |= FF_CMPX87 | FF_NOFAULT;
		f->fix = fix_fxrstor;
	}
}

/* Extensions beyond SSE2: tested only when advertised. */
static void sse_ext(void)
{
	static const struct {
		const char *mn;
		uint8_t pfx, map, op, msize, align, lanes, imm, feat, only;
	} ext[] = {
	    {"addsubpd", 0x66, 0, 0xd0, 16, 16, L_PD, 0, FEAT_SSE3, BOTH},
	    {"addsubps", 0xf2, 0, 0xd0, 16, 16, L_PS, 0, FEAT_SSE3, BOTH},
	    {"haddpd", 0x66, 0, 0x7c, 16, 16, L_PD, 0, FEAT_SSE3, BOTH},
	    {"haddps", 0xf2, 0, 0x7c, 16, 16, L_PS, 0, FEAT_SSE3, BOTH},
	    {"hsubpd", 0x66, 0, 0x7d, 16, 16, L_PD, 0, FEAT_SSE3, BOTH},
	    {"hsubps", 0xf2, 0, 0x7d, 16, 16, L_PS, 0, FEAT_SSE3, BOTH},
	    {"movddup", 0xf2, 0, 0x12, 8, 0, L_PD, 0, FEAT_SSE3, BOTH},
	    {"movsldup", 0xf3, 0, 0x12, 16, 16, L_PS, 0, FEAT_SSE3, BOTH},
	    {"movshdup", 0xf3, 0, 0x16, 16, 16, L_PS, 0, FEAT_SSE3, BOTH},
	    {"lddqu xmm, m128", 0xf2, 0, 0xf0, 16, 0, L_INT, 0, FEAT_SSE3, MEM},
	    {"pshufb", 0x66, 1, 0x00, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"phaddw", 0x66, 1, 0x01, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"phaddd", 0x66, 1, 0x02, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"phaddsw", 0x66, 1, 0x03, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"pmaddubsw", 0x66, 1, 0x04, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"phsubw", 0x66, 1, 0x05, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"phsubd", 0x66, 1, 0x06, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"phsubsw", 0x66, 1, 0x07, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"psignb", 0x66, 1, 0x08, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"psignw", 0x66, 1, 0x09, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"psignd", 0x66, 1, 0x0a, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"pmulhrsw", 0x66, 1, 0x0b, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"pabsb", 0x66, 1, 0x1c, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"pabsw", 0x66, 1, 0x1d, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"pabsd", 0x66, 1, 0x1e, 16, 16, L_INT, 0, FEAT_SSSE3, BOTH},
	    {"palignr", 0x66, 2, 0x0f, 16, 16, L_INT, 1, FEAT_SSSE3, BOTH},
	    {"pblendvb", 0x66, 1, 0x10, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"blendvps", 0x66, 1, 0x14, 16, 16, L_PS, 0, FEAT_SSE41, BOTH},
	    {"blendvpd", 0x66, 1, 0x15, 16, 16, L_PD, 0, FEAT_SSE41, BOTH},
	    {"ptest", 0x66, 1, 0x17, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmovsxbw", 0x66, 1, 0x20, 8, 0, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmovsxbd", 0x66, 1, 0x21, 4, 0, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmovsxbq", 0x66, 1, 0x22, 2, 0, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmovsxwd", 0x66, 1, 0x23, 8, 0, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmovsxwq", 0x66, 1, 0x24, 4, 0, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmovsxdq", 0x66, 1, 0x25, 8, 0, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmuldq", 0x66, 1, 0x28, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pcmpeqq", 0x66, 1, 0x29, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"movntdqa xmm, m128", 0x66, 1, 0x2a, 16, 16, L_INT, 0, FEAT_SSE41, MEM},
	    {"packusdw", 0x66, 1, 0x2b, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmovzxbw", 0x66, 1, 0x30, 8, 0, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmovzxbd", 0x66, 1, 0x31, 4, 0, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmovzxbq", 0x66, 1, 0x32, 2, 0, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmovzxwd", 0x66, 1, 0x33, 8, 0, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmovzxwq", 0x66, 1, 0x34, 4, 0, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmovzxdq", 0x66, 1, 0x35, 8, 0, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pminsb", 0x66, 1, 0x38, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pminsd", 0x66, 1, 0x39, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pminuw", 0x66, 1, 0x3a, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pminud", 0x66, 1, 0x3b, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmaxsb", 0x66, 1, 0x3c, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmaxsd", 0x66, 1, 0x3d, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmaxuw", 0x66, 1, 0x3e, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmaxud", 0x66, 1, 0x3f, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"pmulld", 0x66, 1, 0x40, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"phminposuw", 0x66, 1, 0x41, 16, 16, L_INT, 0, FEAT_SSE41, BOTH},
	    {"roundps", 0x66, 2, 0x08, 16, 16, L_PS, 1, FEAT_SSE41, BOTH},
	    {"roundpd", 0x66, 2, 0x09, 16, 16, L_PD, 1, FEAT_SSE41, BOTH},
	    {"roundss", 0x66, 2, 0x0a, 4, 0, L_PS, 1, FEAT_SSE41, BOTH},
	    {"roundsd", 0x66, 2, 0x0b, 8, 0, L_PD, 1, FEAT_SSE41, BOTH},
	    {"blendps", 0x66, 2, 0x0c, 16, 16, L_PS, 1, FEAT_SSE41, BOTH},
	    {"blendpd", 0x66, 2, 0x0d, 16, 16, L_PD, 1, FEAT_SSE41, BOTH},
	    {"pblendw", 0x66, 2, 0x0e, 16, 16, L_INT, 1, FEAT_SSE41, BOTH},
	    {"insertps", 0x66, 2, 0x21, 4, 0, L_PS, 1, FEAT_SSE41, BOTH},
	    {"dpps", 0x66, 2, 0x40, 16, 16, L_PS, 1, FEAT_SSE41, BOTH},
	    {"dppd", 0x66, 2, 0x41, 16, 16, L_PD, 1, FEAT_SSE41, BOTH},
	    {"mpsadbw", 0x66, 2, 0x42, 16, 16, L_INT, 1, FEAT_SSE41, BOTH},
	    {"pcmpgtq", 0x66, 1, 0x37, 16, 16, L_INT, 0, FEAT_SSE42, BOTH},
	};
	for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
		bool rnd_imm = ext[i].op >= 0x08 && ext[i].op <= 0x0b && ext[i].map == 2;
		vec(ext[i].mn, 0, ext[i].pfx, ext[i].map, ext[i].op, MR_R, K_XMM, K_XMM,
		    ext[i].msize, ext[i].align, ext[i].lanes, ext[i].imm, ext[i].feat, ext[i].only,
		    rnd_imm ? fix_round_imm : NULL, ext[i].lanes == L_INT ? 0 : FF_MXUNMASK);
	}
	vec("pextrb r/m8, xmm, imm8", 0, 0x66, 2, 0x14, MR_R, K_XMM, K_G32, 1, 0, L_INT, 1,
	    FEAT_SSE41, BOTH, NULL, 0);
	vec("pextrw r/m16, xmm, imm8", 0, 0x66, 2, 0x15, MR_R, K_XMM, K_G32, 2, 0, L_INT, 1,
	    FEAT_SSE41, BOTH, NULL, 0);
	vec("pextrd r/m32, xmm, imm8", 0, 0x66, 2, 0x16, MR_R, K_XMM, K_G32, 4, 0, L_INT, 1,
	    FEAT_SSE41, BOTH, NULL, 0);
	vec("pextrq r/m64, xmm, imm8", 64, 0x66, 2, 0x16, MR_R, K_XMM, K_G64, 8, 0, L_INT, 1,
	    FEAT_SSE41, BOTH, NULL, 0);
	vec("extractps r/m32, xmm, imm8", 0, 0x66, 2, 0x17, MR_R, K_XMM, K_G32, 4, 0, L_PS, 1,
	    FEAT_SSE41, BOTH, NULL, 0);
	vec("pinsrb xmm, r32/m8, imm8", 0, 0x66, 2, 0x20, MR_R, K_XMM, K_G32, 1, 0, L_INT, 1,
	    FEAT_SSE41, BOTH, NULL, 0);
	vec("pinsrd xmm, r/m32, imm8", 0, 0x66, 2, 0x22, MR_R, K_XMM, K_G32, 4, 0, L_INT, 1,
	    FEAT_SSE41, BOTH, NULL, 0);
	vec("pinsrq xmm, r/m64, imm8", 64, 0x66, 2, 0x22, MR_R, K_XMM, K_G64, 8, 0, L_INT, 1,
	    FEAT_SSE41, BOTH, NULL, 0);
}

void forms_sse(void)
{
	sse_int();
	sse_fp();
	sse_ext();
}
