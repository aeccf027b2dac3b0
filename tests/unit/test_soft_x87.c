/* The soft engine's x87 instructions against the host CPU: every register and memory form from
 * random FPU states (stack depth and TOP, tags, precision and rounding control, masked and
 * unmasked exceptions, pending ones) and random operands (zeros, denormals, pseudo-denormals,
 * unnormals, infinities, NaNs, huge and tiny exponents, integers, BCD), followed by FWAIT so a
 * newly pending exception shows as #MF; plus the environment formats and what only the soft CPU
 * can show (#NM, CR0.NE, FISTTP being SSE3, the last-instruction pointers). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/soft/exec_sse.h"
#include "soft_sse_native.h"

#ifndef CASES
#define CASES 40
#endif

/* A random 80-bit value from the classes that matter. */
static void random_f80(uint8_t *p)
{
	uint64_t m = fn_rand();
	unsigned e;
	switch (fn_below(16)) {
	case 0:
		m = 0;
		e = 0;
		break;
	case 1:
		m = 1ull << 63;
		e = 0x3fff + fn_below(3);
		break;
	case 2:
		m = 1ull << 63;
		e = 0x7fff;
		break;
	case 3:
		m = 0xc000000000000000ull | (fn_below(2) ? 0 : m >> 2);
		e = 0x7fff;
		break;
	case 4: /* signalling NaN */
		m = 0x8000000000000000ull | ((m >> 2) | 1);
		e = 0x7fff;
		break;
	case 5: /* denormal */
		m >>= 1 + fn_below(63);
		e = 0;
		break;
	case 6: /* pseudo-denormal */
		m |= 1ull << 63;
		e = 0;
		break;
	case 7: /* unnormal, pseudo-NaN, pseudo-infinity */
		m >>= 1;
		e = fn_below(2) ? 0x7fff : 1 + fn_below(0x7ffe);
		break;
	case 8:
		m |= 1ull << 63;
		e = 0x3fff + 100 + fn_below(16000);
		break;
	case 9:
		m |= 1ull << 63;
		e = 0x3fff - 100 - fn_below(16000);
		break;
	case 10: /* integers, and values near float and double limits */
		m = (m | 1ull << 63) & ~((1ull << fn_below(64)) - 1);
		e = fn_below(2) ? 0x3fff + fn_below(70)
				: 0x3fff + (fn_below(2) ? 127 : 1023) + fn_below(3) - 1;
		break;
	case 11:
		m = ~0ull;
		e = 0x7ffe;
		break;
	case 12: /* small arguments for the transcendental instructions */
		m |= 1ull << 63;
		e = 0x3fff - fn_below(8);
		break;
	default:
		m |= 1ull << 63;
		e = 0x3fff - 64 + fn_below(128);
		break;
	}
	uint16_t se = (uint16_t)(e | (fn_below(2) ? 0x8000 : 0));
	memcpy(p, &m, 8);
	memcpy(p + 8, &se, 2);
}

/* Random control and status words; unmasked exceptions sometimes, and then sometimes one
 * already pending. */
static void random_words(uint16_t *fcw, uint16_t *fsw)
{
	uint16_t masks = fn_below(4) ? 0x3f : (uint16_t)(fn_rand() & 0x3f);
	uint16_t pc = (uint16_t)(fn_below(8) == 0 ? 1 : fn_below(2) ? 3 : fn_below(2) * 2);
	*fcw = (uint16_t)(masks | 0x40 | pc << 8 | (fn_rand() & 0x1c00));
	uint16_t flags = fn_below(2) ? (uint16_t)(fn_rand() & 0x7f & (masks | 0x40)) : 0;
	if (fn_below(20) == 0)
		flags |= (uint16_t)(fn_rand() & 0x3f); /* pending: #MF at the first waiting one */
	*fsw = (uint16_t)((fn_rand() & 0x7f00) | flags);
}

static void random_x87_state(uint8_t *fx)
{
	uint16_t fcw, fsw;
	random_words(&fcw, &fsw);
	memcpy(fx + FXO_FCW, &fcw, 2);
	memcpy(fx + FXO_FSW, &fsw, 2);
	unsigned top = (fsw >> 11) & 7;
	if (fn_below(2)) {
		/* a stack: ST(0).. ST(depth-1) in use */
		unsigned depth = fn_below(9);
		uint8_t t = 0;
		for (unsigned i = 0; i < depth; i++)
			t |= (uint8_t)(1u << ((top + i) & 7));
		fx[FXO_FTW] = t;
	} else {
		fx[FXO_FTW] = (uint8_t)fn_rand();
	}
	for (int i = 0; i < 8; i++)
		random_f80(fx + FXO_ST(i));
}

enum mtype { M_NONE, M_F32, M_F64, M_F80, M_I16, M_I32, M_I64, M_BCD, M_CW, M_ENV, M_SAVE };

static void random_mem(uint8_t *p, enum mtype t)
{
	switch (t) {
	case M_F32: {
		uint32_t v = fn_f32();
		memcpy(p, &v, 4);
		break;
	}
	case M_F64: {
		uint64_t v = fn_f64();
		memcpy(p, &v, 8);
		break;
	}
	case M_F80:
		random_f80(p);
		break;
	case M_I16:
	case M_I32:
	case M_I64: {
		uint64_t v = fn_rand();
		unsigned k = fn_below(6);
		if (k == 0)
			v = 0;
		else if (k == 1)
			v = (uint64_t)-1;
		else if (k == 2)
			v = 1ull << (t == M_I16 ? 15 : t == M_I32 ? 31 : 63);
		else if (k == 3)
			v >>= fn_below(64);
		memcpy(p, &v, 8);
		break;
	}
	case M_BCD:
		for (int i = 0; i < 9; i++)
			p[i] = (uint8_t)(fn_below(10) << 4 | fn_below(10));
		p[9] = fn_below(2) ? 0x80 : 0;
		if (fn_below(10) == 0)
			p[fn_below(10)] = (uint8_t)fn_rand(); /* invalid digits */
		break;
	case M_CW: {
		uint16_t fcw, fsw;
		random_words(&fcw, &fsw);
		if (fn_below(8) == 0)
			fcw = (uint16_t)fn_rand();
		memcpy(p, &fcw, 2);
		break;
	}
	case M_ENV:
	case M_SAVE: {
		uint16_t fcw, fsw, ftw = (uint16_t)fn_rand();
		random_words(&fcw, &fsw);
		uint32_t w[7] = {0xffff0000u | fcw,
				 0xffff0000u | fsw,
				 0xffff0000u | ftw,
				 (uint32_t)fn_rand(),
				 (uint32_t)fn_rand() & 0x07ffffff,
				 (uint32_t)fn_rand(),
				 0xffff0000u | (uint32_t)(fn_rand() & 0xffff)};
		memcpy(p, w, sizeof(w));
		if (t == M_SAVE)
			for (int i = 0; i < 8; i++)
				random_f80(p + 28 + 10 * i);
		break;
	}
	default:
		break;
	}
}

struct entry {
	const char *name;
	uint8_t pfx;    /* 0 or 0x66 (the 16-bit environment formats) */
	uint8_t b1, b2; /* opcode; ModRM base (register forms: + i; memory: reg << 3) */
	uint8_t group;  /* register forms: 8 ST(i) variants */
	enum mtype mem; /* memory forms: the operand */
};

#define R8(n, b1, b2)                                                                              \
	{                                                                                          \
		n, 0, b1, b2, 1, M_NONE                                                            \
	}
#define R1(n, b1, b2)                                                                              \
	{                                                                                          \
		n, 0, b1, b2, 0, M_NONE                                                            \
	}
#define M(n, b1, r, t)                                                                             \
	{                                                                                          \
		n, 0, b1, (uint8_t)((r) << 3 | 6), 0, t                                            \
	}
#define M16(n, b1, r, t)                                                                           \
	{                                                                                          \
		n, 0x66, b1, (uint8_t)((r) << 3 | 6), 0, t                                         \
	}

static const struct entry entries[] = {
    R8("fadd st0, st(i)", 0xd8, 0xc0),
    R8("fmul st0, st(i)", 0xd8, 0xc8),
    R8("fcom st(i)", 0xd8, 0xd0),
    R8("fcomp st(i)", 0xd8, 0xd8),
    R8("fsub st0, st(i)", 0xd8, 0xe0),
    R8("fsubr st0, st(i)", 0xd8, 0xe8),
    R8("fdiv st0, st(i)", 0xd8, 0xf0),
    R8("fdivr st0, st(i)", 0xd8, 0xf8),
    R8("fld st(i)", 0xd9, 0xc0),
    R8("fxch st(i)", 0xd9, 0xc8),
    R1("fnop", 0xd9, 0xd0),
    R8("fstp st(i) (d9 d8)", 0xd9, 0xd8),
    R1("fchs", 0xd9, 0xe0),
    R1("fabs", 0xd9, 0xe1),
    R1("ftst", 0xd9, 0xe4),
    R1("fxam", 0xd9, 0xe5),
    R1("fld1", 0xd9, 0xe8),
    R1("fldl2t", 0xd9, 0xe9),
    R1("fldl2e", 0xd9, 0xea),
    R1("fldpi", 0xd9, 0xeb),
    R1("fldlg2", 0xd9, 0xec),
    R1("fldln2", 0xd9, 0xed),
    R1("fldz", 0xd9, 0xee),
    R1("f2xm1", 0xd9, 0xf0),
    R1("fyl2x", 0xd9, 0xf1),
    R1("fptan", 0xd9, 0xf2),
    R1("fpatan", 0xd9, 0xf3),
    R1("fxtract", 0xd9, 0xf4),
    R1("fprem1", 0xd9, 0xf5),
    R1("fdecstp", 0xd9, 0xf6),
    R1("fincstp", 0xd9, 0xf7),
    R1("fprem", 0xd9, 0xf8),
    R1("fyl2xp1", 0xd9, 0xf9),
    R1("fsqrt", 0xd9, 0xfa),
    R1("fsincos", 0xd9, 0xfb),
    R1("frndint", 0xd9, 0xfc),
    R1("fscale", 0xd9, 0xfd),
    R1("fsin", 0xd9, 0xfe),
    R1("fcos", 0xd9, 0xff),
    R8("fcmovb", 0xda, 0xc0),
    R8("fcmove", 0xda, 0xc8),
    R8("fcmovbe", 0xda, 0xd0),
    R8("fcmovu", 0xda, 0xd8),
    R1("fucompp", 0xda, 0xe9),
    R8("fcmovnb", 0xdb, 0xc0),
    R8("fcmovne", 0xdb, 0xc8),
    R8("fcmovnbe", 0xdb, 0xd0),
    R8("fcmovnu", 0xdb, 0xd8),
    R1("fneni", 0xdb, 0xe0),
    R1("fndisi", 0xdb, 0xe1),
    R1("fnclex", 0xdb, 0xe2),
    R1("fninit", 0xdb, 0xe3),
    R1("fnsetpm", 0xdb, 0xe4),
    R8("fucomi", 0xdb, 0xe8),
    R8("fcomi", 0xdb, 0xf0),
    R8("fadd st(i), st0", 0xdc, 0xc0),
    R8("fmul st(i), st0", 0xdc, 0xc8),
    R8("fcom (dc d0)", 0xdc, 0xd0),
    R8("fcomp (dc d8)", 0xdc, 0xd8),
    R8("fsubr st(i), st0", 0xdc, 0xe0),
    R8("fsub st(i), st0", 0xdc, 0xe8),
    R8("fdivr st(i), st0", 0xdc, 0xf0),
    R8("fdiv st(i), st0", 0xdc, 0xf8),
    R8("ffree", 0xdd, 0xc0),
    R8("fxch (dd c8)", 0xdd, 0xc8),
    R8("fst st(i)", 0xdd, 0xd0),
    R8("fstp st(i)", 0xdd, 0xd8),
    R8("fucom", 0xdd, 0xe0),
    R8("fucomp", 0xdd, 0xe8),
    R8("faddp", 0xde, 0xc0),
    R8("fmulp", 0xde, 0xc8),
    R8("fcomp (de d0)", 0xde, 0xd0),
    R1("fcompp", 0xde, 0xd9),
    R8("fsubrp", 0xde, 0xe0),
    R8("fsubp", 0xde, 0xe8),
    R8("fdivrp", 0xde, 0xf0),
    R8("fdivp", 0xde, 0xf8),
    R8("ffreep", 0xdf, 0xc0),
    R8("fxch (df c8)", 0xdf, 0xc8),
    R8("fstp (df d0)", 0xdf, 0xd0),
    R8("fstp (df d8)", 0xdf, 0xd8),
    R1("fnstsw ax", 0xdf, 0xe0),
    R8("fucomip", 0xdf, 0xe8),
    R8("fcomip", 0xdf, 0xf0),
    /* memory forms */
    M("fadd m32", 0xd8, 0, M_F32),
    M("fmul m32", 0xd8, 1, M_F32),
    M("fcom m32", 0xd8, 2, M_F32),
    M("fcomp m32", 0xd8, 3, M_F32),
    M("fsub m32", 0xd8, 4, M_F32),
    M("fsubr m32", 0xd8, 5, M_F32),
    M("fdiv m32", 0xd8, 6, M_F32),
    M("fdivr m32", 0xd8, 7, M_F32),
    M("fld m32", 0xd9, 0, M_F32),
    M("fst m32", 0xd9, 2, M_F32),
    M("fstp m32", 0xd9, 3, M_F32),
    M("fldenv", 0xd9, 4, M_ENV),
    M("fldcw", 0xd9, 5, M_CW),
    M("fnstenv", 0xd9, 6, M_ENV),
    M("fnstcw", 0xd9, 7, M_CW),
    M("fiadd m32", 0xda, 0, M_I32),
    M("fimul m32", 0xda, 1, M_I32),
    M("ficom m32", 0xda, 2, M_I32),
    M("ficomp m32", 0xda, 3, M_I32),
    M("fisub m32", 0xda, 4, M_I32),
    M("fisubr m32", 0xda, 5, M_I32),
    M("fidiv m32", 0xda, 6, M_I32),
    M("fidivr m32", 0xda, 7, M_I32),
    M("fild m32", 0xdb, 0, M_I32),
    M("fist m32", 0xdb, 2, M_I32),
    M("fistp m32", 0xdb, 3, M_I32),
    M("fld m80", 0xdb, 5, M_F80),
    M("fstp m80", 0xdb, 7, M_F80),
    M("fadd m64", 0xdc, 0, M_F64),
    M("fmul m64", 0xdc, 1, M_F64),
    M("fcom m64", 0xdc, 2, M_F64),
    M("fcomp m64", 0xdc, 3, M_F64),
    M("fsub m64", 0xdc, 4, M_F64),
    M("fsubr m64", 0xdc, 5, M_F64),
    M("fdiv m64", 0xdc, 6, M_F64),
    M("fdivr m64", 0xdc, 7, M_F64),
    M("fld m64", 0xdd, 0, M_F64),
    M("fst m64", 0xdd, 2, M_F64),
    M("fstp m64", 0xdd, 3, M_F64),
    M("frstor", 0xdd, 4, M_SAVE),
    M("fnsave", 0xdd, 6, M_SAVE),
    M("fnstsw m16", 0xdd, 7, M_CW),
    M("fiadd m16", 0xde, 0, M_I16),
    M("fimul m16", 0xde, 1, M_I16),
    M("ficom m16", 0xde, 2, M_I16),
    M("ficomp m16", 0xde, 3, M_I16),
    M("fisub m16", 0xde, 4, M_I16),
    M("fisubr m16", 0xde, 5, M_I16),
    M("fidiv m16", 0xde, 6, M_I16),
    M("fidivr m16", 0xde, 7, M_I16),
    M("fild m16", 0xdf, 0, M_I16),
    M("fist m16", 0xdf, 2, M_I16),
    M("fistp m16", 0xdf, 3, M_I16),
    M("fbld", 0xdf, 4, M_BCD),
    M("fild m64", 0xdf, 5, M_I64),
    M("fbstp", 0xdf, 6, M_BCD),
    M("fistp m64", 0xdf, 7, M_I64),
    M16("fnstenv o16", 0xd9, 6, M_ENV),
    M16("fldenv o16", 0xd9, 4, M_ENV),
    M16("fnsave o16", 0xdd, 6, M_SAVE),
    M16("frstor o16", 0xdd, 4, M_SAVE),
};

/* FNSTENV/FNSAVE store the last-instruction pointers and selectors, which this CPU does not
 * record as the host does: bytes 12..27 of the environment (6..13 in the 16-bit format) are
 * not compared. */
static void skip_env_pointers(uint64_t off, enum mtype t, bool o16)
{
	memset(fn_skip_data, 0, sizeof(fn_skip_data));
	if ((t == M_ENV || t == M_SAVE) && off + 28 <= FN_DSIZE)
		memset(fn_skip_data + off + (o16 ? 6 : 12), 1, o16 ? 8 : 16);
}

static bool run_entry(const struct entry *e)
{
	struct fn_state in;
	memset(&in, 0, sizeof(in));
	for (int i = 0; i < 16; i++)
		in.gpr[i] = fn_rand();
	in.rflags = 0x202 | (fn_rand() & 0x8d5);
	fn_default_fx(in.fx, 0x1f80);
	random_x87_state(in.fx);
	fn_fill(fn_data_in, FN_DSIZE, FN_INT);
	uint8_t code[8];
	size_t n = 0;
	if (e->pfx)
		code[n++] = e->pfx;
	code[n++] = e->b1;
	if (e->mem == M_NONE) {
		code[n++] = (uint8_t)(e->b2 + (e->group ? fn_below(8) : 0));
	} else {
		code[n++] = e->b2;
		uint64_t off = 16 * fn_below(FN_DSIZE / 16 - 8) + fn_below(4) * fn_below(16);
		if (fn_below(25) == 0)
			off = FN_DSIZE - 1 - fn_below(8); /* into the guard page: #PF */
		in.gpr[GPR_RSI] = FN_DATA + off;
		if (off + 120 <= FN_DSIZE) {
			random_mem(fn_data_in + off, e->mem);
			if (e->pfx && (e->mem == M_ENV || e->mem == M_SAVE)) {
				/* the 16-bit layout: five words, then the registers */
				uint8_t *p = fn_data_in + off;
				for (int w = 1; w < 7; w++)
					memmove(p + 2 * w, p + 4 * w, 2);
				if (e->mem == M_SAVE)
					memmove(p + 14, p + 28, 80);
			}
		}
		skip_env_pointers(off, e->mem, e->pfx != 0);
	}
	if (fn_below(2))
		code[n++] = 0x9b; /* fwait: an exception this left pending is #MF now */
	bool ok = fn_check(e->name, code, n, &in, FL_ARITH);
	memset(fn_skip_data, 0, sizeof(fn_skip_data));
	return ok;
}

static void test_forms(void **state)
{
	(void)state;
	bool ok = true;
	for (size_t k = 0; k < sizeof(entries) / sizeof(entries[0]); k++)
		for (int i = 0; i < CASES * (entries[k].group ? 2 : 1); i++)
			ok &= run_entry(&entries[k]);
	assert_true(ok);
}

/* A longer computation: what printf("%Lf") and strtold do with long doubles, and a mixed
 * expression under each rounding and precision mode. */
static void test_sequence(void **state)
{
	(void)state;
	static const uint8_t code[] = {
	    0xdb, 0x2e,           /* fld tbyte [rsi] */
	    0xdd, 0x46,     0x10, /* fld qword [rsi + 16] */
	    0xde, 0xc9,           /* fmulp */
	    0xd9, 0xc0,           /* fld st0 */
	    0xd9, 0xfc,           /* frndint */
	    0xdc, 0xe9,           /* fsub st1, st0 */
	    0xd9, 0xc9,           /* fxch */
	    0xdf, 0x7e,     0x20, /* fistp qword [rsi + 32] */
	    0xd9, 0xfa,           /* fsqrt */
	    0xdb, 0xe8 | 1,       /* fucomi st0, st1 */
	    0xd9, 0xe8,           /* fld1 */
	    0xde, 0xf9,           /* fdivp */
	    0xdb, 0x7e,     0x30, /* fstp tbyte [rsi + 48] */
	    0xdf, 0xe0,           /* fnstsw ax */
	    0x9b,                 /* fwait */
	};
	bool ok = true;
	for (int i = 0; i < 400; i++) {
		struct fn_state in;
		memset(&in, 0, sizeof(in));
		in.rflags = 0x202;
		fn_default_fx(in.fx, 0x1f80);
		uint16_t fcw = (uint16_t)(0x037f & ~0x0f00) | (uint16_t)(fn_below(4) << 10) |
			       (uint16_t)((fn_below(2) ? 3 : fn_below(2) * 2) << 8);
		memcpy(in.fx + FXO_FCW, &fcw, 2);
		fn_fill(fn_data_in, FN_DSIZE, FN_INT);
		in.gpr[GPR_RSI] = FN_DATA + 64 * fn_below(32);
		uint8_t *m = fn_data_in + (in.gpr[GPR_RSI] - FN_DATA);
		random_f80(m);
		uint64_t d = fn_f64();
		memcpy(m + 16, &d, 8);
		ok &= fn_check("x87 sequence", code, sizeof(code), &in, FL_ARITH);
	}
	assert_true(ok);
}

static int soft_only(const uint8_t *code, size_t len, const struct fn_state *in,
		     void (*prep)(struct soft_cpu *))
{
	fn_run_soft(code, len, in, &fn_sft, prep);
	return fn_sft.vector;
}

static void prep_ts(struct soft_cpu *c)
{
	c->cr0 |= CR0_TS;
}

static void prep_ts_no_mp(struct soft_cpu *c)
{
	c->cr0 = (c->cr0 | CR0_TS) & ~CR0_MP;
}

static void prep_em(struct soft_cpu *c)
{
	c->cr0 |= CR0_EM;
}

static void prep_no_ne(struct soft_cpu *c)
{
	c->cr0 &= ~CR0_NE;
}

static void test_control(void **state)
{
	(void)state;
	struct fn_state in;
	memset(&in, 0, sizeof(in));
	in.rflags = 0x202;
	in.gpr[GPR_RSI] = FN_DATA;
	fn_default_fx(in.fx, 0x1f80);
	static const uint8_t fld1[] = {0xd9, 0xe8};
	static const uint8_t fwait[] = {0x9b};
	static const uint8_t fnstcw[] = {0xd9, 0x3e};
	/* #NM: CR0.TS or CR0.EM for x87 instructions; FWAIT only with TS and MP. */
	assert_int_equal(soft_only(fld1, 2, &in, prep_ts), EXC_NM);
	assert_int_equal(soft_only(fld1, 2, &in, prep_em), EXC_NM);
	assert_int_equal(soft_only(fnstcw, 2, &in, prep_ts), EXC_NM);
	assert_int_equal(soft_only(fwait, 1, &in, prep_ts), EXC_NM);
	assert_int_equal(soft_only(fwait, 1, &in, prep_ts_no_mp), -1);
	assert_int_equal(soft_only(fwait, 1, &in, prep_em), -1);
	/* A pending unmasked exception: #MF at the next waiting instruction with CR0.NE, not at
	 * a non-waiting one; without CR0.NE the instruction runs. */
	uint16_t fcw = 0x037e, fsw = 0x0001;
	memcpy(in.fx + FXO_FCW, &fcw, 2);
	memcpy(in.fx + FXO_FSW, &fsw, 2);
	assert_int_equal(soft_only(fld1, 2, &in, NULL), EXC_MF);
	assert_int_equal(soft_only(fwait, 1, &in, NULL), EXC_MF);
	assert_int_equal(soft_only(fnstcw, 2, &in, NULL), -1);
	assert_int_equal(soft_only(fld1, 2, &in, prep_no_ne), -1);
	/* FISTTP is SSE3: not on this CPU. */
	static const uint8_t fisttp[] = {0xdd, 0x0e};
	fn_default_fx(in.fx, 0x1f80);
	assert_int_equal(soft_only(fisttp, 2, &in, NULL), EXC_UD);
}

/* The last-instruction pointers: FOP, FIP and FDP of the last non-control instruction. */
static void test_last_instruction(void **state)
{
	(void)state;
	struct fn_state in;
	memset(&in, 0, sizeof(in));
	in.rflags = 0x202;
	in.gpr[GPR_RSI] = FN_DATA + 0x40;
	fn_default_fx(in.fx, 0x1f80);
	memset(fn_data_in, 0, FN_DSIZE);
	static const uint8_t code[] = {
	    0xdd, 0x06,       /* fld qword [rsi] */
	    0xd9, 0x7e, 0x08, /* fnstcw [rsi + 8]: a control instruction, not recorded */
	    0xd9, 0xe1,       /* fabs */
	};
	memcpy((void *)FN_DATA, fn_data_in, FN_DSIZE);
	fn_run_soft(code, sizeof(code), &in, &fn_sft, NULL);
	assert_int_equal(fn_sft.vector, -1);
	uint16_t fop;
	uint64_t fip, fdp;
	memcpy(&fop, fn_sft.st.fx + 6, 2);
	memcpy(&fip, fn_sft.st.fx + 8, 8);
	memcpy(&fdp, fn_sft.st.fx + 16, 8);
	assert_int_equal(fop, 0x1e1);
	assert_int_equal(fdp, FN_DATA + 0x40);
	assert_int_equal(fip, fn_cpu->rip - 4); /* fabs, before the final syscall */
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
	    cmocka_unit_test(test_forms),
	    cmocka_unit_test(test_sequence),
	    cmocka_unit_test(test_control),
	    cmocka_unit_test(test_last_instruction),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
