/* Building a case: random machine state, the instruction's encoding from its form, and the
 * memory operand aimed into the scratch area (now and then at a faulting address). */
#include <Zydis/Zydis.h>
#include <string.h>

#include "diff.h"

/* ---- random numbers: splitmix64, good enough and seedable per case ---- */

static uint64_t rng_state;

void rng_seed(uint64_t s)
{
	rng_state = s;
}

uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t mix_seed(uint64_t a, uint64_t b)
{
	uint64_t save = rng_state;
	rng_state = a ^ (b * 0xd6e8feb86659fd93ull);
	uint64_t r = rnd();
	rng_state = save;
	return r;
}

uint64_t rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

bool chance(unsigned percent)
{
	return rnd_below(100) < percent;
}

static uint64_t mask_of(unsigned bytes)
{
	return bytes >= 8 ? ~0ull : (1ull << (bytes * 8)) - 1;
}

/* Values near the edges of a size's signed and unsigned ranges make the flags interesting;
 * the bits above the size stay random so partial writes show. */
uint64_t rnd_interesting(unsigned bytes)
{
	unsigned bits = bytes * 8;
	uint64_t m = mask_of(bytes), sb = 1ull << (bits - 1), v;
	switch (rnd_below(14)) {
	case 0:
		v = 0;
		break;
	case 1:
		v = 1;
		break;
	case 2:
		v = m;
		break;
	case 3:
		v = sb;
		break;
	case 4:
		v = sb - 1;
		break;
	case 5:
		v = rnd_below(64);
		break;
	case 6:
		v = -rnd_below(64);
		break;
	case 7:
		v = 1ull << rnd_below(bits);
		break;
	case 8:
		v = (1ull << rnd_below(bits)) - 1;
		break;
	case 9:
		v = sb + rnd_below(5) - 2;
		break;
	case 10:
		v = rnd() & 0x0f0f0f0f0f0f0f0full; /* nibbles that carry into AF */
		break;
	default:
		v = rnd();
		break;
	}
	return (v & m) | (rnd() & ~m);
}

static const uint64_t dspecial[] = {
    0x0000000000000000ull, 0x8000000000000000ull, 0x3ff0000000000000ull, 0xbff0000000000000ull,
    0x7ff0000000000000ull, 0xfff0000000000000ull, 0x7ff8000000000000ull, 0xfff8000000000000ull,
    0x7ff4000000000000ull, 0x7ff0000000000001ull, 0xfff8000000000123ull, 0x0000000000000001ull,
    0x000fffffffffffffull, 0x8000000000000001ull, 0x0010000000000000ull, 0x7fefffffffffffffull,
    0x41dfffffffc00000ull, 0x41e0000000000000ull, 0xc1e0000000000000ull, 0xc1e0000000200000ull,
    0x43e0000000000000ull, 0xc3e0000000000000ull, 0x3fe0000000000000ull, 0x3ff8000000000000ull,
    0x4004000000000000ull, 0xc004000000000000ull, 0x47efffffe0000000ull, 0x36a0000000000000ull,
    0x3810000000000000ull, 0x3fb999999999999aull, 0x43dfffffffffffffull, 0x4330000000000000ull,
};

static const uint32_t fspecial[] = {
    0x00000000, 0x80000000, 0x3f800000, 0xbf800000, 0x7f800000, 0xff800000, 0x7fc00000,
    0xffc00000, 0x7fa00000, 0x7f800001, 0xffc00123, 0x00000001, 0x007fffff, 0x80000001,
    0x00800000, 0x7f7fffff, 0x4f000000, 0xcf000000, 0x4effffff, 0x5f000000, 0xdf000000,
    0x3f000000, 0x3fc00000, 0x40200000, 0xc0200000, 0x3dcccccd, 0x4b000000, 0x5effffff,
};

uint64_t rnd_double_bits(void)
{
	switch (rnd_below(8)) {
	case 0:
	case 1:
	case 2:
		return dspecial[rnd_below(sizeof(dspecial) / sizeof(dspecial[0]))];
	case 3:
	case 4: { /* a moderate number */
		uint64_t e = 1023 - 40 + rnd_below(80);
		return (rnd() & 0x800fffffffffffffull) | (e << 52);
	}
	case 5: { /* an integer-valued one, maybe with .5 */
		double d = (double)(int64_t)(rnd() >> rnd_below(64)) * (chance(50) ? 1 : -1);
		if (chance(30))
			d += 0.5;
		uint64_t v;
		memcpy(&v, &d, 8);
		return v;
	}
	default:
		return rnd();
	}
}

uint32_t rnd_float_bits(void)
{
	switch (rnd_below(8)) {
	case 0:
	case 1:
	case 2:
		return fspecial[rnd_below(sizeof(fspecial) / sizeof(fspecial[0]))];
	case 3:
	case 4: {
		uint32_t e = 127 - 20 + (uint32_t)rnd_below(40);
		return ((uint32_t)rnd() & 0x807fffffu) | (e << 23);
	}
	case 5: {
		float f =
		    (float)(int32_t)((uint32_t)rnd() >> rnd_below(32)) * (chance(50) ? 1 : -1);
		if (chance(30))
			f += 0.5f;
		uint32_t v;
		memcpy(&v, &f, 4);
		return v;
	}
	default:
		return (uint32_t)rnd();
	}
}

static void fill_lanes(uint8_t *p, unsigned n, unsigned lanes)
{
	unsigned es = lanes == L_PD ? 8 : lanes == L_PS ? 4 : 1u << rnd_below(4);
	for (unsigned i = 0; i + es <= n; i += es) {
		uint64_t v;
		if (lanes == L_PD)
			v = rnd_double_bits();
		else if (lanes == L_PS)
			v = rnd_float_bits();
		else
			v = rnd_interesting(es);
		memcpy(p + i, &v, es);
	}
}

/* An 80-bit x87 value: mostly converted doubles, sometimes odd encodings. */
static void rnd_ext(uint8_t out[10])
{
	if (chance(10)) {
		static const uint8_t odd[][10] = {
		    {0, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0x7f}, /* QNaN */
		    {0, 0, 0, 0, 0, 0, 0, 0xa0, 0xff, 0x7f}, /* SNaN */
		    {0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0xff}, /* -inf */
		    {1, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x00}, /* denormal */
		    {0, 0, 0, 0, 0, 0, 0, 0x80, 0x00, 0x00}, /* pseudo-denormal */
		    {0, 0, 0, 0, 0, 0, 0, 0x40, 0xff, 0x3f}, /* unnormal */
		    {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0x7f}, /* max */
		};
		memcpy(out, odd[rnd_below(sizeof(odd) / sizeof(odd[0]))], 10);
		return;
	}
	uint64_t b = rnd_double_bits();
	double d;
	memcpy(&d, &b, 8);
	long double ld = d;
	if (chance(30))
		ld += (long double)d * 0x1p-60L; /* bits a double cannot hold */
	memcpy(out, &ld, 10);
}

/* A random FXSAVE image: x87 (or the FNINIT state), MXCSR, XMM lanes. */
void rnd_fx(uint8_t *fx, unsigned lanes, bool x87, bool unmask)
{
	memset(fx, 0, 512);
	uint16_t fcw = 0x037f, fsw = 0;
	uint8_t ftw = 0;
	if (x87) {
		if (chance(30))
			fcw = (uint16_t)((fcw & ~0x0c00) | rnd_below(4) << 10);
		if (chance(30)) {
			static const uint16_t pc[] = {0x0000, 0x0200, 0x0300};
			fcw = (uint16_t)((fcw & ~0x0300) | pc[rnd_below(3)]);
		}
		unsigned top = (unsigned)rnd_below(8), nvalid = (unsigned)rnd_below(9);
		fsw = (uint16_t)(top << 11 | (rnd() & 0x4700));
		if (chance(20))
			fsw |= (uint16_t)(rnd() & 0x3f); /* sticky flags, all masked: no ES */
		for (unsigned i = 0; i < nvalid; i++) {
			ftw |= (uint8_t)(1u << ((top + i) & 7));
			rnd_ext(fx + FX_ST(i));
		}
	}
	memcpy(fx + FX_FCW, &fcw, 2);
	memcpy(fx + FX_FSW, &fsw, 2);
	fx[FX_FTW] = ftw;
	uint32_t mxcsr = 0x1f80;
	if (chance(50))
		mxcsr |= (uint32_t)rnd_below(4) << 13;
	if (chance(15))
		mxcsr |= 1u << 15; /* FTZ */
	if (chance(15))
		mxcsr |= 1u << 6; /* DAZ */
	if (chance(20))
		mxcsr |= (uint32_t)rnd() & 0x3f;
	if (unmask && chance(15))
		mxcsr &= ~((uint32_t)rnd() & 0x1f80);
	memcpy(fx + FX_MXCSR, &mxcsr, 4);
	for (int i = 0; i < 16; i++)
		fill_lanes(fx + FX_XMM(i), 16, lanes);
}

/* ---- access helpers for fixups ---- */

unsigned kind_bytes(unsigned k)
{
	switch (k) {
	case K_G8:
		return 1;
	case K_G16:
		return 2;
	case K_G32:
		return 4;
	case K_G64:
		return 8;
	case K_XMM:
		return 16;
	default:
		return 0;
	}
}

uint64_t reg_get(const struct tcase *tc, int r, unsigned bytes)
{
	if (r >= R_AH)
		return (tc->in.gpr[r - R_AH] >> 8) & 0xff;
	return tc->in.gpr[r] & mask_of(bytes);
}

void reg_set(struct tcase *tc, int r, unsigned bytes, uint64_t v)
{
	if (r >= R_AH) {
		uint64_t *g = &tc->in.gpr[r - R_AH];
		*g = (*g & ~0xff00ull) | ((v & 0xff) << 8);
		return;
	}
	uint64_t m = mask_of(bytes);
	tc->in.gpr[r] = (tc->in.gpr[r] & ~m) | (v & m);
}

bool in_scratch(uint64_t addr, unsigned bytes)
{
	return addr >= SCRATCH_BASE && addr + bytes <= SCRATCH_BASE + SCRATCH_SIZE &&
	       addr + bytes >= addr;
}

uint64_t mem_get(const struct tcase *tc, uint64_t addr, unsigned bytes)
{
	uint64_t v = 0;
	if (in_scratch(addr, bytes))
		memcpy(&v, tc->mem + (addr - SCRATCH_BASE), bytes > 8 ? 8 : bytes);
	return v;
}

void mem_set(struct tcase *tc, uint64_t addr, unsigned bytes, uint64_t v)
{
	if (in_scratch(addr, bytes))
		memcpy(tc->mem + (addr - SCRATCH_BASE), &v, bytes > 8 ? 8 : bytes);
}

uint64_t rm_get(const struct tcase *tc, unsigned bytes)
{
	return tc->has_mem ? mem_get(tc, tc->ea, bytes) : reg_get(tc, tc->rm, bytes);
}

void rm_set(struct tcase *tc, unsigned bytes, uint64_t v)
{
	if (tc->has_mem)
		mem_set(tc, tc->ea, bytes, v);
	else
		reg_set(tc, tc->rm, bytes, v);
}

uint64_t imm_get(const struct tcase *tc, unsigned bytes)
{
	uint64_t v = 0;
	memcpy(&v, tc->insn + tc->imm_off, bytes);
	return v;
}

void imm_set(struct tcase *tc, unsigned bytes, uint64_t v)
{
	memcpy(tc->insn + tc->imm_off, &v, bytes);
}

uint64_t rnd_stack(bool may_fault)
{
	unsigned r = (unsigned)rnd_below(100);
	if (may_fault && r < 4)
		return SCRATCH_BASE + rnd_below(12); /* a push runs off the bottom */
	if (may_fault && r < 7)
		return SCRATCH_BASE + SCRATCH_SIZE - rnd_below(12); /* a pop runs off the top */
	if (may_fault && r < 8)
		return 0x0000800000000000ull + rnd_below(0x100000) * 8; /* non-canonical: #SS */
	uint64_t sp = SCRATCH_BASE + 0x400 + rnd_below(SCRATCH_SIZE - 0x800);
	return chance(85) ? sp & ~7ull : sp;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

bool pick_target(struct tcase *tc, uint64_t next, int64_t lo, int64_t hi, uint64_t *target)
{
	for (int tries = 0; tries < 200; tries++) {
		int64_t d = lo + (int64_t)rnd_below((uint64_t)(hi - lo + 1));
		uint64_t t = next + (uint64_t)d;
		if (t == next) { /* the fall-through stub itself */
			*target = t;
			return true;
		}
		if (t < TARGET_LO || t + STUB_LEN > CODE_BASE + CODE_SIZE)
			continue;
		if (overlaps(t, STUB_LEN, INSN_ADDR, next - INSN_ADDR + STUB_LEN))
			continue;
		bool clash = false;
		for (unsigned i = 0; i < tc->ntargets; i++)
			clash |= overlaps(t, STUB_LEN, tc->targets[i], STUB_LEN);
		if (clash)
			continue;
		*target = t;
		tc->targets[tc->ntargets++] = t;
		return true;
	}
	return false;
}

/* ---- the encoder ---- */

static int pick_reg(unsigned k, bool high, bool norsp)
{
	if (k == K_XMM)
		return (int)rnd_below(16);
	for (;;) {
		int r = (int)rnd_below(high ? 8 : 16);
		if (k == K_G8 && high && r >= 4)
			return R_AH + r - 4;
		if (!(norsp && r == 4))
			return r;
	}
}

/* The register number as encoded (AH..BH are 4..7 without REX). */
static unsigned enc(int r)
{
	return r >= R_AH ? (unsigned)(r - R_AH + 4) : (unsigned)r;
}

static int pick_from(uint16_t allowed)
{
	if (!allowed)
		return -1;
	for (;;) {
		int r = (int)rnd_below(16);
		if (allowed & (1u << r))
			return r;
	}
}

static uint64_t pick_ea(const struct form *f, bool a32, bool riprel)
{
	unsigned sz = f->msize ? f->msize : 1;
	unsigned r = (unsigned)rnd_below(100);
	bool may_fault = !(f->fl & FF_NOFAULT);
	uint64_t end = SCRATCH_BASE + SCRATCH_SIZE;
	if (may_fault && r < 3)
		return end - rnd_below(sz); /* runs into the unmapped page */
	if (may_fault && r < 5)
		return UNMAPPED_BASE + rnd_below(0x10000);
	if (may_fault && r < 7 && !a32 && !riprel)
		return (rnd() & 0x7fffffffffffull) | 0x0000800000000000ull | (rnd() & (1ull << 62));
	if (r < 12 && sz > 1 && f->mlo < 0x1000 && f->mhi < 0x1000)
		return SCRATCH_BASE + 0x1000 - 1 -
		       rnd_below(sz - 1); /* crosses the middle page line */
	uint64_t lo = SCRATCH_BASE + f->mlo, hi = end - sz - f->mhi;
	uint64_t ea = lo + rnd_below(hi - lo + 1);
	if (f->malign) {
		if (chance(90))
			ea = (ea + f->malign - 1) & ~(uint64_t)(f->malign - 1);
	} else if (sz <= 8 && chance(50)) {
		ea = (ea + sz - 1) & ~(uint64_t)(sz - 1);
	}
	if (ea > hi)
		ea -= f->malign ? f->malign : sz;
	return ea;
}

enum amode { AM_RIP, AM_ABS, AM_IDX, AM_BASE, AM_BASE_IDX };

static bool encode(struct tcase *tc, enum amode *am, int64_t *disp_out, unsigned *disp_off,
		   unsigned *scale_out)
{
	const struct form *f = tc->f;
	bool has8 = f->regk == K_G8 || (f->rmk == K_G8 && !f->mem) || f->opregk == K_G8;
	bool high = has8 && !f->rexw && !(f->fl & FF_HIGH8NO) && chance(30);
	bool norsp = f->fl & FF_NORSP;
	uint8_t *p = tc->insn;
	unsigned n = 0;

	tc->a32 = f->mem && !(f->fl & FF_NO67) && chance(5);
	if (f->modrm == MR_R)
		tc->reg = pick_reg(f->regk, high, norsp);
	if (f->modrm != MR_NONE && !f->mem)
		tc->rm = pick_reg(f->rmk, high, norsp);
	if (f->opregk)
		tc->opreg = pick_reg(f->opregk, high, norsp);

	uint8_t modrm = 0, sib = 0;
	bool has_sib = false;
	unsigned dispsz = 0, scale = 0;
	int64_t disp = 0;
	if (f->mem) {
		tc->has_mem = true;
		uint16_t allowed = (uint16_t)~f->implicit;
		if (f->fl & FF_STACK)
			allowed &= (uint16_t) ~(1u << 4);
		if (f->fl & FF_NOALIAS) {
			if (tc->reg >= 0 && f->regk != K_XMM)
				allowed &= (uint16_t) ~(
				    1u << (tc->reg >= R_AH ? tc->reg - R_AH : tc->reg));
			if (tc->opreg >= 0)
				allowed &= (uint16_t) ~(1u << tc->opreg);
		}
		if (high)
			allowed &= 0xff;
		unsigned r = (unsigned)rnd_below(100);
		*am = r < 8    ? AM_RIP
		      : r < 13 ? AM_ABS
		      : r < 18 ? AM_IDX
		      : r < 60 ? AM_BASE
			       : AM_BASE_IDX;
		if (*am == AM_IDX || *am == AM_BASE_IDX) {
			tc->index =
			    pick_from(allowed & (uint16_t) ~(1u << 4)); /* RSP cannot index */
			if (tc->index < 0)
				*am = AM_BASE;
		}
		if (*am == AM_BASE || *am == AM_BASE_IDX) {
			uint16_t b = allowed;
			if (tc->index >= 0)
				b &= (uint16_t) ~(1u << tc->index);
			tc->base = pick_from(b);
			if (tc->base < 0) {
				*am = AM_ABS;
				tc->index = -1;
			}
		}
		tc->ea = pick_ea(f, tc->a32, *am == AM_RIP);
		if ((*am == AM_ABS) && !tc->a32 && tc->ea >= 0x80000000ull)
			tc->ea = SCRATCH_BASE + rnd_below(SCRATCH_SIZE - (f->msize ? f->msize : 1));
		unsigned mod = 0, rm = 0;
		switch (*am) {
		case AM_RIP:
			rm = 5;
			dispsz = 4;
			break;
		case AM_ABS:
			rm = 4;
			has_sib = true;
			sib = 0x25;
			dispsz = 4;
			disp = (int32_t)(uint32_t)tc->ea;
			break;
		case AM_IDX:
			rm = 4;
			has_sib = true;
			scale = (unsigned)rnd_below(4);
			sib = (uint8_t)(scale << 6 | (tc->index & 7) << 3 | 5);
			dispsz = 4;
			break;
		case AM_BASE:
		case AM_BASE_IDX: {
			unsigned d = (unsigned)rnd_below(3);
			if (d == 0 && (tc->base & 7) == 5)
				d = 1; /* RBP/R13 as a base need a displacement */
			mod = d;
			dispsz = d == 0 ? 0 : d == 1 ? 1 : 4;
			disp = d == 1 ? (int8_t)rnd() : d == 2 ? (int32_t)rnd_interesting(4) : 0;
			if (d == 2 && chance(50))
				disp = (int32_t)(rnd_below(0x2000) - 0x1000);
			if (*am == AM_BASE_IDX || (tc->base & 7) == 4) {
				rm = 4;
				has_sib = true;
				unsigned idx = 4; /* none */
				if (*am == AM_BASE_IDX) {
					scale = (unsigned)rnd_below(4);
					idx = tc->index & 7;
				}
				sib = (uint8_t)(scale << 6 | idx << 3 | (tc->base & 7));
			} else {
				rm = tc->base & 7;
			}
			break;
		}
		}
		modrm = (uint8_t)(mod << 6 | rm);
	} else if (f->modrm != MR_NONE) {
		modrm = (uint8_t)(0xc0 | (enc(tc->rm) & 7));
	}
	if (f->modrm >= 0)
		modrm |= (uint8_t)(f->modrm << 3);
	else if (f->modrm == MR_R)
		modrm |= (uint8_t)((enc(tc->reg) & 7) << 3);

	/* Prefixes: address size, the form's own (mandatory ones last), REX. */
	if (tc->a32)
		p[n++] = 0x67;
	memcpy(p + n, f->pfx, f->npfx);
	n += f->npfx;
	unsigned rex = f->rexw ? 8 : 0;
	if (tc->reg >= 0 && tc->reg < 16 && tc->reg >= 8)
		rex |= 4;
	if (tc->index >= 8)
		rex |= 2;
	if ((tc->rm >= 8 && tc->rm < 16) || tc->base >= 8 || (tc->opreg >= 8 && tc->opreg < 16))
		rex |= 1;
	bool need_rex = rex != 0;
	if (has8 && !high) {
		/* SPL, BPL, SIL, DIL exist only with a REX prefix. */
		if ((f->regk == K_G8 && tc->reg >= 4 && tc->reg < 8) ||
		    (f->rmk == K_G8 && !f->mem && tc->rm >= 4 && tc->rm < 8) ||
		    (f->opregk == K_G8 && tc->opreg >= 4 && tc->opreg < 8))
			need_rex = true;
	}
	if (!high && !(f->fl & FF_NOREX40) && chance(10))
		need_rex = true;
	if (need_rex)
		p[n++] = (uint8_t)(0x40 | rex);
	memcpy(p + n, f->opc, f->nopc);
	n += f->nopc;
	if (f->opregk)
		p[n - 1] |= (uint8_t)(enc(tc->opreg) & 7);
	if (f->modrm != MR_NONE) {
		p[n++] = modrm;
		if (has_sib)
			p[n++] = sib;
		*disp_off = n;
		memcpy(p + n, &disp, dispsz);
		n += dispsz;
	} else if (f->modrm_byte) {
		p[n++] = f->modrm_byte;
	}
	tc->imm_off = n;
	if (f->immsz) {
		uint64_t imm = rnd_interesting(f->immsz);
		memcpy(p + n, &imm, f->immsz);
		n += f->immsz;
	}
	tc->len = n;
	*disp_out = disp;
	*scale_out = scale;
	return n <= 15;
}

/* Sets the address registers so that the memory operand lands on tc->ea. */
static void aim(struct tcase *tc, enum amode am, int64_t disp, unsigned disp_off, unsigned scale)
{
	uint64_t ea = tc->ea;
	uint64_t amask = tc->a32 ? 0xffffffffull : ~0ull;
	switch (am) {
	case AM_RIP: {
		int64_t d = (int64_t)(ea - (INSN_ADDR + tc->len));
		if (tc->a32)
			d = (int32_t)(uint32_t)d;
		int32_t d32 = (int32_t)d;
		memcpy(tc->insn + disp_off, &d32, 4);
		break;
	}
	case AM_ABS:
		break;
	case AM_IDX: {
		int32_t d = (int32_t)rnd();
		d = (int32_t)(((uint32_t)d & ~((1u << scale) - 1)) |
			      ((uint32_t)ea & ((1u << scale) - 1)));
		uint64_t v = (uint64_t)((int64_t)(ea - (uint64_t)(int64_t)d) >> scale);
		if (tc->a32)
			v = (((uint32_t)ea - (uint32_t)d) >> scale) | (rnd() & ~0xffffffffull);
		memcpy(tc->insn + disp_off, &d, 4);
		reg_set(tc, tc->index, 8, v);
		break;
	}
	case AM_BASE:
	case AM_BASE_IDX: {
		uint64_t idx = tc->index >= 0 ? tc->in.gpr[tc->index] << scale : 0;
		uint64_t b = (ea - (uint64_t)disp - idx) & amask;
		if (tc->a32)
			b |= rnd() & ~0xffffffffull;
		tc->in.gpr[tc->base] = b;
		break;
	}
	}
}

static void random_state(struct tcase *tc)
{
	const struct form *f = tc->f;
	static const unsigned sizes[] = {1, 2, 4, 8, 8};
	for (int i = 0; i < 16; i++)
		tc->in.gpr[i] = rnd_interesting(sizes[rnd_below(5)]);
	tc->in.rflags = 0x202 | (rnd() & F_ARITH) | (chance(30) ? F_DF : 0);
	tc->in.vector = -1;

	rnd_fx(tc->in.fx, f->lanes, f->fl & (FF_X87 | FF_CMPX87), f->fl & FF_MXUNMASK);

	for (unsigned i = 0; i < SCRATCH_SIZE; i += 8) {
		uint64_t v = rnd();
		memcpy(tc->mem + i, &v, 8);
	}
	if (f->lanes != L_INT || chance(30))
		for (unsigned i = 0; i < SCRATCH_SIZE; i += 16)
			if (chance(50))
				fill_lanes(tc->mem + i, 16, f->lanes);
}

bool gen_case(struct tcase *tc, const struct form *f, uint64_t seed)
{
	memset(tc, 0, sizeof(*tc));
	rng_seed(seed);
	tc->f = f;
	tc->seed = seed;
	tc->reg = tc->rm = tc->opreg = tc->base = tc->index = -1;
	tc->undef = f->undef;
	tc->fsw_undef = f->fsw_undef;
	random_state(tc);

	enum amode am = AM_ABS;
	int64_t disp = 0;
	unsigned disp_off = 0, scale = 0;
	if (!encode(tc, &am, &disp, &disp_off, &scale))
		return false;
	if (f->fl & FF_STACK)
		tc->in.gpr[4] = rnd_stack(!(f->fl & FF_NOFAULT));
	if (tc->has_mem && f->lanes != L_INT && in_scratch(tc->ea, f->msize))
		fill_lanes(tc->mem + (tc->ea - SCRATCH_BASE), f->msize, f->lanes);
	if (f->fl & (FF_REL8 | FF_REL32)) {
		uint64_t next = INSN_ADDR + tc->len, t;
		bool ok = f->fl & FF_REL8 ? pick_target(tc, next, -128, 127, &t)
					  : pick_target(tc, next, -0x3c0, 0x7c0, &t);
		if (!ok)
			return false;
		imm_set(tc, f->fl & FF_REL8 ? 1 : 4, t - next);
	}
	if (f->fix)
		f->fix(tc);
	if (tc->has_mem)
		aim(tc, am, disp, disp_off, scale);

	/* The encoding must be what we meant: Zydis decodes the same length. */
	static ZydisDecoder dec;
	static bool dec_ready;
	if (!dec_ready) {
		ZydisDecoderInit(&dec, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
		dec_ready = true;
	}
	ZydisDecodedInstruction zi;
	if (!(f->fl & FF_BADENC) &&
	    (!ZYAN_SUCCESS(ZydisDecoderDecodeInstruction(&dec, NULL, tc->insn, tc->len, &zi)) ||
	     zi.length != tc->len))
		return false;
	layout_code(tc);
	return true;
}
