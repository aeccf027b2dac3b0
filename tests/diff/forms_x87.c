/* x87 forms. The stack starts with a random TOP and a random number of valid registers, so
 * pushes onto a full stack and pops of empty registers (stack faults, masked) happen too. All
 * exceptions stay masked: an unmasked one would be delivered at the next waiting instruction,
 * outside the instruction under test. Condition codes the SDM leaves undefined are masked. */
#include <stdio.h>
#include <string.h>

#include "forms.h"

#define C0    0x0100
#define C1    0x0200
#define C2    0x0400
#define C3    0x4000
#define C023  (C0 | C2 | C3)
#define C_ALL (C0 | C1 | C2 | C3)

enum mtype { T_F32, T_F64, T_F80, T_I16, T_I32, T_I64, T_CW, T_NONE };

static const unsigned tbytes[] = {4, 8, 10, 2, 4, 8, 2, 0};

static void fix_mem(struct tcase *tc)
{
	uint64_t v;
	switch (tc->f->arg) {
	case T_F32:
		mem_set(tc, tc->ea, 4, rnd_float_bits());
		break;
	case T_F64:
		mem_set(tc, tc->ea, 8, rnd_double_bits());
		break;
	case T_F80:
		if (in_scratch(tc->ea, 10) && chance(90)) {
			/* Mostly a well-formed extended value from a double. */
			uint64_t b = rnd_double_bits();
			double d;
			memcpy(&d, &b, 8);
			long double ld = d;
			memcpy(tc->mem + (tc->ea - SCRATCH_BASE), &ld, 10);
		}
		break;
	case T_I16:
	case T_I32:
	case T_I64:
		v = rnd_interesting(tbytes[tc->f->arg]);
		mem_set(tc, tc->ea, tbytes[tc->f->arg], v);
		break;
	case T_CW:
		/* Rounding and precision control vary; exceptions stay masked. */
		mem_set(tc, tc->ea, 2, 0x037f | (rnd() & 0x0f00) | (rnd() & 0xf040));
		break;
	default:
		break;
	}
}

/* Register forms: ST(i) in the low three bits of the second byte. */
static void fix_sti(struct tcase *tc)
{
	tc->insn[tc->len - 1] = (uint8_t)((tc->insn[tc->len - 1] & 0xf8) | rnd_below(8));
}

static struct form *xm(const char *name, uint8_t op, int digit, enum mtype t, unsigned msize,
		       uint16_t undef)
{
	struct form *f = add(0, NOPFX, &op, 1, digit, 0, K_G8, 1, 0, "%s", name);
	f->msize = (uint8_t)msize;
	f->arg = t;
	f->fix = fix_mem;
	f->fl |= FF_X87 | FF_CMPX87;
	f->fsw_undef = undef;
	return f;
}

static struct form *xr(const char *name, uint8_t op, uint8_t modrm, bool sti, uint16_t undef)
{
	struct form *f = form_new();
	snprintf(f->name, sizeof(f->name), "%s", name);
	f->opc[0] = op;
	f->nopc = 1;
	f->modrm_byte = modrm;
	if (sti)
		f->fix = fix_sti;
	f->fl |= FF_X87 | FF_CMPX87;
	f->fsw_undef = undef;
	return f;
}

void forms_x87(void)
{
	/* Loads and stores. */
	xm("fld m32", 0xd9, 0, T_F32, 4, C023);
	xm("fld m64", 0xdd, 0, T_F64, 8, C023);
	xm("fld m80", 0xdb, 5, T_F80, 10, C023);
	xm("fst m32", 0xd9, 2, T_NONE, 4, C023);
	xm("fstp m32", 0xd9, 3, T_NONE, 4, C023);
	xm("fst m64", 0xdd, 2, T_NONE, 8, C023);
	xm("fstp m64", 0xdd, 3, T_NONE, 8, C023);
	xm("fstp m80", 0xdb, 7, T_NONE, 10, C023);
	xm("fild m16", 0xdf, 0, T_I16, 2, C023);
	xm("fild m32", 0xdb, 0, T_I32, 4, C023);
	xm("fild m64", 0xdf, 5, T_I64, 8, C023);
	xm("fist m16", 0xdf, 2, T_NONE, 2, C023);
	xm("fistp m16", 0xdf, 3, T_NONE, 2, C023);
	xm("fist m32", 0xdb, 2, T_NONE, 4, C023);
	xm("fistp m32", 0xdb, 3, T_NONE, 4, C023);
	xm("fistp m64", 0xdf, 7, T_NONE, 8, C023);
	xm("fisttp m16", 0xdf, 1, T_NONE, 2, C023)->feat = FEAT_SSE3;
	xm("fisttp m32", 0xdb, 1, T_NONE, 4, C023)->feat = FEAT_SSE3;
	xm("fisttp m64", 0xdd, 1, T_NONE, 8, C023)->feat = FEAT_SSE3;
	xr("fld st(i)", 0xd9, 0xc0, true, C023);
	xr("fst st(i)", 0xdd, 0xd0, true, C023);
	xr("fstp st(i)", 0xdd, 0xd8, true, C023);
	xr("fxch st(i)", 0xd9, 0xc8, true, C023);
	xr("ffree st(i)", 0xdd, 0xc0, true, C_ALL);

	/* Arithmetic: memory, st0 op st(i), st(i) op st0 and the popping forms. */
	static const char *const ar[8] = {"fadd", "fmul",  "fcom", "fcomp",
					  "fsub", "fsubr", "fdiv", "fdivr"};
	char name[64];
	for (int op = 0; op < 8; op++) {
		uint16_t u = op == 2 || op == 3 ? 0 : C023;
		snprintf(name, sizeof(name), "%s m32", ar[op]);
		xm(name, 0xd8, op, T_F32, 4, u);
		snprintf(name, sizeof(name), "%s m64", ar[op]);
		xm(name, 0xdc, op, T_F64, 8, u);
		snprintf(name, sizeof(name), "fi%s m16", ar[op] + 1);
		xm(name, 0xde, op, T_I16, 2, u);
		snprintf(name, sizeof(name), "fi%s m32", ar[op] + 1);
		xm(name, 0xda, op, T_I32, 4, u);
		snprintf(name, sizeof(name), "%s st0, st(i)", ar[op]);
		xr(name, 0xd8, (uint8_t)(0xc0 + 8 * op), true, u);
		if (op == 2 || op == 3)
			continue;
		/* DC and DE encode the reverse direction; for sub/div the mnemonics swap too. */
		snprintf(name, sizeof(name), "dc %02x+i (st(i), st0 form)", 0xc0 + 8 * op);
		xr(name, 0xdc, (uint8_t)(0xc0 + 8 * op), true, u);
		snprintf(name, sizeof(name), "de %02x+i (popping st(i), st0 form)", 0xc0 + 8 * op);
		xr(name, 0xde, (uint8_t)(0xc0 + 8 * op), true, u);
	}
	xr("fcompp", 0xde, 0xd9, false, 0);
	xr("fucom st(i)", 0xdd, 0xe0, true, 0);
	xr("fucomp st(i)", 0xdd, 0xe8, true, 0);
	xr("fucompp", 0xda, 0xe9, false, 0);
	xr("fucomi st0, st(i)", 0xdb, 0xe8, true, 0);
	xr("fcomi st0, st(i)", 0xdb, 0xf0, true, 0);
	xr("fucomip st0, st(i)", 0xdf, 0xe8, true, 0);
	xr("fcomip st0, st(i)", 0xdf, 0xf0, true, 0);
	static const char *const cm[8] = {"fcmovb",  "fcmove",  "fcmovbe",  "fcmovu",
					  "fcmovnb", "fcmovne", "fcmovnbe", "fcmovnu"};
	for (int i = 0; i < 8; i++) {
		snprintf(name, sizeof(name), "%s st0, st(i)", cm[i]);
		xr(name, (uint8_t)(i < 4 ? 0xda : 0xdb), (uint8_t)(0xc0 + 8 * (i & 3)), true, C023);
	}

	/* No-operand instructions. */
	static const struct {
		const char *name;
		uint8_t op, modrm;
		uint16_t undef;
	} one[] = {
	    {"fchs", 0xd9, 0xe0, C023},       {"fabs", 0xd9, 0xe1, C023},
	    {"ftst", 0xd9, 0xe4, 0},          {"fxam", 0xd9, 0xe5, 0},
	    {"fld1", 0xd9, 0xe8, C023},       {"fldl2t", 0xd9, 0xe9, C023},
	    {"fldl2e", 0xd9, 0xea, C023},     {"fldpi", 0xd9, 0xeb, C023},
	    {"fldlg2", 0xd9, 0xec, C023},     {"fldln2", 0xd9, 0xed, C023},
	    {"fldz", 0xd9, 0xee, C023},       {"fxtract", 0xd9, 0xf4, C023},
	    {"fprem1", 0xd9, 0xf5, 0},        {"fdecstp", 0xd9, 0xf6, C023},
	    {"fincstp", 0xd9, 0xf7, C023},    {"fprem", 0xd9, 0xf8, 0},
	    {"fsqrt", 0xd9, 0xfa, C023},      {"frndint", 0xd9, 0xfc, C023},
	    {"fscale", 0xd9, 0xfd, C023},     {"fnop", 0xd9, 0xd0, C_ALL},
	    {"fnclex", 0xdb, 0xe2, C_ALL},    {"fninit", 0xdb, 0xe3, 0},
	    {"fnstsw ax", 0xdf, 0xe0, C_ALL},
	};
	for (size_t i = 0; i < sizeof(one) / sizeof(one[0]); i++)
		xr(one[i].name, one[i].op, one[i].modrm, false, one[i].undef);
	xr("fwait", 0x9b, 0, false, 0);
	xm("fldcw m16", 0xd9, 5, T_CW, 2, C_ALL);
	xm("fnstcw m16", 0xd9, 7, T_NONE, 2, C_ALL);
	xm("fnstsw m16", 0xdd, 7, T_NONE, 2, C_ALL);
}
