/* Integer forms: ALU, moves, multiply and divide, shifts and rotates, bit operations,
 * exchanges, cmovcc/setcc, sign and zero extension. Undefined flags per the Intel SDM vol. 2. */
#include "forms.h"

typedef unsigned __int128 u128;
typedef __int128 s128;

static const unsigned SZ[4] = {8, 16, 32, 64};

static unsigned immv(unsigned bits)
{
	return bits == 8 ? 1 : bits == 16 ? 2 : 4;
}

static const char *acc(unsigned bits)
{
	return bits == 8 ? "al" : bits == 16 ? "ax" : bits == 32 ? "eax" : "rax";
}

static uint64_t mask_of(unsigned bytes)
{
	return bytes >= 8 ? ~0ull : (1ull << (bytes * 8)) - 1;
}

static int64_t sext(uint64_t v, unsigned bytes)
{
	unsigned sh = 64 - bytes * 8;
	return bytes >= 8 ? (int64_t)v : (int64_t)(v << sh) >> sh;
}

/* ---- fixups ---- */

/* The dividend of div/idiv: AX, DX:AX, EDX:EAX or RDX:RAX. */
static void set_dividend(struct tcase *tc, unsigned bytes, u128 n)
{
	if (bytes == 1) {
		reg_set(tc, 0, 2, (uint64_t)n);
		return;
	}
	reg_set(tc, 0, bytes, (uint64_t)n);
	reg_set(tc, 2, bytes, (uint64_t)(n >> (bytes * 8)));
}

/* Mostly a quotient that fits; sometimes a zero divisor or an overflow (#DE). */
static void fix_div(struct tcase *tc)
{
	unsigned bytes = kind_bytes(tc->f->rmk);
	uint64_t m = mask_of(bytes);
	unsigned r = (unsigned)rnd_below(100);
	if (r < 8) {
		rm_set(tc, bytes, 0);
		return;
	}
	if (r < 16)
		return; /* the random dividend: mostly too big */
	uint64_t d;
	do
		d = rnd_interesting(bytes) & m;
	while (!d);
	rm_set(tc, bytes, d);
	if (tc->f->modrm == 6) {
		u128 q = rnd_interesting(bytes) & m;
		set_dividend(tc, bytes, q * d + rnd() % d);
		return;
	}
	int64_t sd = sext(d, bytes), q = sext(rnd_interesting(bytes), bytes);
	uint64_t ad = sd < 0 ? -(uint64_t)sd : (uint64_t)sd;
	if (!ad)
		return; /* not reached: d is non-zero */
	s128 n = (s128)q * sd;
	s128 rem = (s128)(rnd() % ad);
	if (n < 0 || (n == 0 && chance(50)))
		rem = -rem;
	set_dividend(tc, bytes, (u128)(n + rem));
}

enum { CNT_IMM, CNT_ONE, CNT_CL };

static unsigned bias_count(unsigned bits)
{
	return chance(70) ? (unsigned)rnd_below(bits + 2) : (unsigned)(rnd() & 0xff);
}

static unsigned shift_count(struct tcase *tc, unsigned bits, unsigned src)
{
	unsigned raw = 1;
	if (src == CNT_IMM) {
		raw = bias_count(bits);
		imm_set(tc, 1, raw);
	} else if (src == CNT_CL) {
		raw = bias_count(bits);
		reg_set(tc, 1, 1, raw);
	}
	return raw & (bits == 64 ? 0x3f : 0x1f);
}

/* arg: sub-operation (ModRM.reg) | count source << 4. A zero count changes no flags; OF is
 * defined for 1-bit counts only; shifts leave AF undefined, and SHL/SHR leave CF undefined
 * once the count reaches the operand size. */
static void fix_shift(struct tcase *tc)
{
	unsigned bits = kind_bytes(tc->f->rmk) * 8, sub = tc->f->arg & 7;
	unsigned cnt = shift_count(tc, bits, (unsigned)tc->f->arg >> 4);
	uint32_t u = 0;
	if (cnt) {
		if (cnt != 1)
			u |= F_OF;
		if (sub >= 4) {
			u |= F_AF;
			if (sub != 7 && cnt >= bits)
				u |= F_CF;
		}
	}
	tc->undef = u;
}

/* SHLD/SHRD: a count above the operand size (16-bit only) leaves result and flags undefined. */
static void fix_shld(struct tcase *tc)
{
	unsigned bytes = kind_bytes(tc->f->rmk), bits = bytes * 8;
	unsigned cnt = shift_count(tc, bits, (unsigned)tc->f->arg >> 4);
	if (!cnt) {
		tc->undef = 0;
	} else if (cnt > bits) {
		tc->undef = F_ARITH;
		if (tc->has_mem) {
			tc->undef_mem_lo = (uint32_t)(tc->ea - SCRATCH_BASE);
			tc->undef_mem_hi = tc->undef_mem_lo + bytes;
		} else {
			tc->undef_gpr |= (uint16_t)(1u << tc->rm);
		}
	} else {
		tc->undef = F_AF | (cnt != 1 ? F_OF : 0);
	}
}

/* BT* with a register bit offset into memory: keep the addressed bit near the operand. */
static void fix_bt_reg(struct tcase *tc)
{
	if (!tc->has_mem)
		return;
	int64_t off = (int64_t)rnd_below(0x3000) - 0x1800;
	reg_set(tc, tc->reg, kind_bytes(tc->f->regk), (uint64_t)off);
}

/* BSF/BSR: a zero source leaves the destination undefined. */
static void fix_bsf(struct tcase *tc)
{
	unsigned bytes = kind_bytes(tc->f->rmk);
	if (chance(15))
		rm_set(tc, bytes, 0);
	if (rm_get(tc, bytes) == 0)
		tc->undef_gpr |= (uint16_t)(1u << tc->reg);
}

static void fix_zero_src(struct tcase *tc)
{
	if (chance(15))
		rm_set(tc, kind_bytes(tc->f->rmk), 0);
}

static void fix_cmpxchg(struct tcase *tc)
{
	unsigned bytes = kind_bytes(tc->f->rmk);
	if (chance(50))
		reg_set(tc, 0, bytes, rm_get(tc, bytes));
}

static void fix_cmpxchg8b(struct tcase *tc)
{
	unsigned half = tc->f->msize / 2;
	if (chance(50)) {
		reg_set(tc, 0, half, mem_get(tc, tc->ea, half));
		reg_set(tc, 2, half, mem_get(tc, tc->ea + half, half));
	}
}

/* mov with a 64-bit absolute address (moffs). */
static void fix_moffs(struct tcase *tc)
{
	unsigned bytes = kind_bytes(tc->f->rmk);
	unsigned r = (unsigned)rnd_below(100);
	uint64_t a;
	if (r < 5)
		a = UNMAPPED_BASE + rnd_below(0x1000);
	else if (r < 10)
		a = 0x0000800000000000ull | rnd_below(1ull << 40);
	else if (r < 15)
		a = SCRATCH_BASE + SCRATCH_SIZE - 1 - rnd_below(bytes);
	else
		a = SCRATCH_BASE + rnd_below(SCRATCH_SIZE - bytes);
	imm_set(tc, 8, a);
}

/* ---- groups ---- */

static void alu(void)
{
	static const char *const mn[8] = {"add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"};
	for (unsigned op = 0; op < 8; op++) {
		uint32_t u = (op == 1 || op == 4 || op == 6) ? F_AF : 0; /* logic: AF undefined */
		for (unsigned s = 0; s < 4; s++) {
			unsigned b = SZ[s], k = gk(b), w = b != 8;
			for (int m = 0; m < 2; m++) {
				add(b, NOPFX, B(op * 8 + w), MR_R, k, k, m, 0, "%s r/m%u, r%u%s",
				    mn[op], b, b, rm_sfx(m))
				    ->undef = u;
				add(b, NOPFX, B(op * 8 + 2 + w), MR_R, k, k, m, 0,
				    "%s r%u, r/m%u%s", mn[op], b, b, rm_sfx(m))
				    ->undef = u;
				add(b, NOPFX, B(0x80 + w), (int)op, 0, k, m, immv(b),
				    "%s r/m%u, imm%u%s", mn[op], b, immv(b) * 8, rm_sfx(m))
				    ->undef = u;
				if (w)
					add(b, NOPFX, B(0x83), (int)op, 0, k, m, 1,
					    "%s r/m%u, imm8%s", mn[op], b, rm_sfx(m))
					    ->undef = u;
			}
			add(b, NOPFX, B(op * 8 + 4 + w), MR_NONE, 0, 0, 0, immv(b), "%s %s, imm%u",
			    mn[op], acc(b), immv(b) * 8)
			    ->undef = u;
		}
		if (op == 7)
			continue;
		for (unsigned s = 0; s < 4; s += s == 0 ? 2 : 1) {
			unsigned b = SZ[s], w = b != 8;
			add(b, B(0xf0), B(op * 8 + w), MR_R, gk(b), gk(b), 1, 0, "lock %s m%u, r%u",
			    mn[op], b, b)
			    ->undef = u;
		}
	}
	/* LOCK with a register destination is #UD. */
	add(32, B(0xf0), B(0x01), MR_R, K_G32, K_G32, 0, 0, "lock add r32, r32 (#UD)")->fl |=
	    FF_BADENC;

	for (unsigned s = 0; s < 4; s++) {
		unsigned b = SZ[s], k = gk(b), w = b != 8;
		for (int m = 0; m < 2; m++) {
			add(b, NOPFX, B(0x84 + w), MR_R, k, k, m, 0, "test r/m%u, r%u%s", b, b,
			    rm_sfx(m))
			    ->undef = F_AF;
			add(b, NOPFX, B(0xf6 + w), 0, 0, k, m, immv(b), "test r/m%u, imm%u%s", b,
			    immv(b) * 8, rm_sfx(m))
			    ->undef = F_AF;
			add(b, NOPFX, B(0xfe + w), 0, 0, k, m, 0, "inc r/m%u%s", b, rm_sfx(m));
			add(b, NOPFX, B(0xfe + w), 1, 0, k, m, 0, "dec r/m%u%s", b, rm_sfx(m));
			add(b, NOPFX, B(0xf6 + w), 2, 0, k, m, 0, "not r/m%u%s", b, rm_sfx(m));
			add(b, NOPFX, B(0xf6 + w), 3, 0, k, m, 0, "neg r/m%u%s", b, rm_sfx(m));
		}
		add(b, NOPFX, B(0xa8 + w), MR_NONE, 0, 0, 0, immv(b), "test %s, imm%u", acc(b),
		    immv(b) * 8)
		    ->undef = F_AF;
		if (b == 8 || b == 64) {
			add(b, B(0xf0), B(0xfe + w), 0, 0, k, 1, 0, "lock inc m%u", b);
			add(b, B(0xf0), B(0xfe + w), 1, 0, k, 1, 0, "lock dec m%u", b);
			add(b, B(0xf0), B(0xf6 + w), 2, 0, k, 1, 0, "lock not m%u", b);
			add(b, B(0xf0), B(0xf6 + w), 3, 0, k, 1, 0, "lock neg m%u", b);
		}
	}
}

static void moves(void)
{
	for (unsigned s = 0; s < 4; s++) {
		unsigned b = SZ[s], k = gk(b), w = b != 8;
		for (int m = 0; m < 2; m++) {
			add(b, NOPFX, B(0x88 + w), MR_R, k, k, m, 0, "mov r/m%u, r%u%s", b, b,
			    rm_sfx(m));
			add(b, NOPFX, B(0x8a + w), MR_R, k, k, m, 0, "mov r%u, r/m%u%s", b, b,
			    rm_sfx(m));
			add(b, NOPFX, B(0xc6 + w), 0, 0, k, m, immv(b), "mov r/m%u, imm%u%s", b,
			    immv(b) * 8, rm_sfx(m));
			add(b, NOPFX, B(0x86 + w), MR_R, k, k, m, 0, "xchg r/m%u, r%u%s", b, b,
			    rm_sfx(m));
		}
		struct form *f = add(b, NOPFX, B(w ? 0xb8 : 0xb0), MR_NONE, 0, 0, 0,
				     b == 64 ? 8 : immv(b), "mov r%u, imm%u", b, b == 64 ? 64 : b);
		f->opregk = (uint8_t)k;
		f = add(b, NOPFX, B(0xa0 + w), MR_NONE, 0, k, 0, 8, "mov %s, moffs%u", acc(b), b);
		f->fix = fix_moffs;
		f->fl |= FF_NO67;
		f = add(b, NOPFX, B(0xa2 + w), MR_NONE, 0, k, 0, 8, "mov moffs%u, %s", b, acc(b));
		f->fix = fix_moffs;
		f->fl |= FF_NO67;
		if (w) {
			f = add(b, NOPFX, B(0x90), MR_NONE, 0, 0, 0, 0, "xchg %s, r%u", acc(b), b);
			f->opregk = (uint8_t)k;
		}
	}
	add(8, B(0xf0), B(0x86), MR_R, K_G8, K_G8, 1, 0, "lock xchg m8, r8");
	for (unsigned b = 16; b <= 64; b *= 2) {
		for (int m = 0; m < 2; m++) {
			add(b, NOPFX, B(0x0f, 0xb6), MR_R, gk(b), K_G8, m, 0, "movzx r%u, r/m8%s",
			    b, rm_sfx(m));
			add(b, NOPFX, B(0x0f, 0xbe), MR_R, gk(b), K_G8, m, 0, "movsx r%u, r/m8%s",
			    b, rm_sfx(m));
			if (b > 16) {
				add(b, NOPFX, B(0x0f, 0xb7), MR_R, gk(b), K_G16, m, 0,
				    "movzx r%u, r/m16%s", b, rm_sfx(m));
				add(b, NOPFX, B(0x0f, 0xbf), MR_R, gk(b), K_G16, m, 0,
				    "movsx r%u, r/m16%s", b, rm_sfx(m));
			}
		}
		struct form *f = add(b, NOPFX, B(0x8d), MR_R, gk(b), gk(b), 1, 0, "lea r%u, m", b);
		f->msize = 1;
	}
	for (int m = 0; m < 2; m++)
		add(64, NOPFX, B(0x63), MR_R, K_G64, K_G32, m, 0, "movsxd r64, r/m32%s", rm_sfx(m));
	add(16, NOPFX, B(0x98), MR_NONE, 0, 0, 0, 0, "cbw");
	add(32, NOPFX, B(0x98), MR_NONE, 0, 0, 0, 0, "cwde");
	add(64, NOPFX, B(0x98), MR_NONE, 0, 0, 0, 0, "cdqe");
	add(16, NOPFX, B(0x99), MR_NONE, 0, 0, 0, 0, "cwd");
	add(32, NOPFX, B(0x99), MR_NONE, 0, 0, 0, 0, "cdq");
	add(64, NOPFX, B(0x99), MR_NONE, 0, 0, 0, 0, "cqo");
	for (unsigned b = 32; b <= 64; b *= 2)
		add(b, NOPFX, B(0x0f, 0xc8), MR_NONE, 0, 0, 0, 0, "bswap r%u", b)->opregk =
		    (uint8_t)gk(b);
}

static void muldiv(void)
{
	static const char *const mn[4] = {"mul", "imul", "div", "idiv"};
	for (unsigned s = 0; s < 4; s++) {
		unsigned b = SZ[s], k = gk(b), w = b != 8;
		for (int m = 0; m < 2; m++) {
			for (unsigned op = 0; op < 4; op++) {
				struct form *f = add(b, NOPFX, B(0xf6 + w), (int)(4 + op), 0, k, m,
						     0, "%s r/m%u%s", mn[op], b, rm_sfx(m));
				f->implicit = 1u << 0 | 1u << 2;
				if (op < 2) {
					f->undef = F_SF | F_ZF | F_AF | F_PF;
				} else {
					f->undef = F_ARITH;
					f->fix = fix_div;
				}
			}
			if (!w)
				continue;
			add(b, NOPFX, B(0x0f, 0xaf), MR_R, k, k, m, 0, "imul r%u, r/m%u%s", b, b,
			    rm_sfx(m))
			    ->undef = F_SF | F_ZF | F_AF | F_PF;
			add(b, NOPFX, B(0x6b), MR_R, k, k, m, 1, "imul r%u, r/m%u, imm8%s", b, b,
			    rm_sfx(m))
			    ->undef = F_SF | F_ZF | F_AF | F_PF;
			add(b, NOPFX, B(0x69), MR_R, k, k, m, immv(b), "imul r%u, r/m%u, imm%u%s",
			    b, b, immv(b) * 8, rm_sfx(m))
			    ->undef = F_SF | F_ZF | F_AF | F_PF;
		}
	}
}

static void shifts(void)
{
	static const char *const mn[8] = {"rol", "ror", "rcl", "rcr", "shl", "shr", "sal", "sar"};
	static const char *const cnt[3] = {"imm8", "1", "cl"};
	for (unsigned sub = 0; sub < 8; sub++)
		for (unsigned s = 0; s < 4; s++) {
			unsigned b = SZ[s], k = gk(b), w = b != 8;
			for (unsigned src = 0; src < 3; src++)
				for (int m = 0; m < 2; m++) {
					static const uint8_t op[3] = {0xc0, 0xd0, 0xd2};
					struct form *f =
					    add(b, NOPFX, B(op[src] + w), (int)sub, 0, k, m,
						src == CNT_IMM ? 1 : 0, "%s r/m%u, %s%s%s", mn[sub],
						b, cnt[src], sub == 6 ? " (/6)" : "", rm_sfx(m));
					f->arg = (int)(sub | src << 4);
					f->fix = fix_shift;
					if (src == CNT_CL)
						f->implicit = 1u << 1;
				}
		}
	static const char *const dn[2] = {"shld", "shrd"};
	for (unsigned d = 0; d < 2; d++)
		for (unsigned b = 16; b <= 64; b *= 2)
			for (unsigned src = 0; src < 3; src += 2)
				for (int m = 0; m < 2; m++) {
					uint8_t op = (uint8_t)(0xa4 + 8 * d + (src == CNT_CL));
					struct form *f =
					    add(b, NOPFX, B(0x0f, op), MR_R, gk(b), gk(b), m,
						src == CNT_IMM ? 1 : 0, "%s r/m%u, r%u, %s%s",
						dn[d], b, b, cnt[src], rm_sfx(m));
					f->arg = (int)(d | src << 4);
					f->fix = fix_shld;
					if (src == CNT_CL)
						f->implicit = 1u << 1;
				}
}

static void bitops(void)
{
	static const char *const mn[4] = {"bt", "bts", "btr", "btc"};
	const uint32_t u = F_OF | F_SF | F_AF | F_PF;
	for (unsigned op = 0; op < 4; op++)
		for (unsigned b = 16; b <= 64; b *= 2) {
			for (int m = 0; m < 2; m++) {
				struct form *f =
				    add(b, NOPFX, B(0x0f, 0xa3 + 8 * op), MR_R, gk(b), gk(b), m, 0,
					"%s r/m%u, r%u%s", mn[op], b, b, rm_sfx(m));
				f->undef = u;
				f->fix = fix_bt_reg;
				f->fl |= FF_NOALIAS | FF_NOFAULT;
				f->mlo = f->mhi = 0x310;
				add(b, NOPFX, B(0x0f, 0xba), (int)(4 + op), 0, gk(b), m, 1,
				    "%s r/m%u, imm8%s", mn[op], b, rm_sfx(m))
				    ->undef = u;
			}
			if (op && b != 16) {
				struct form *f =
				    add(b, B(0xf0), B(0x0f, 0xa3 + 8 * op), MR_R, gk(b), gk(b), 1,
					0, "lock %s m%u, r%u", mn[op], b, b);
				f->undef = u;
				f->fix = fix_bt_reg;
				f->fl |= FF_NOALIAS | FF_NOFAULT;
				f->mlo = f->mhi = 0x310;
			}
		}
	for (unsigned b = 16; b <= 64; b *= 2)
		for (int m = 0; m < 2; m++) {
			struct form *f;
			f = add(b, NOPFX, B(0x0f, 0xbc), MR_R, gk(b), gk(b), m, 0,
				"bsf r%u, r/m%u%s", b, b, rm_sfx(m));
			f->undef = F_CF | F_OF | F_SF | F_AF | F_PF;
			f->fix = fix_bsf;
			f = add(b, NOPFX, B(0x0f, 0xbd), MR_R, gk(b), gk(b), m, 0,
				"bsr r%u, r/m%u%s", b, b, rm_sfx(m));
			f->undef = F_CF | F_OF | F_SF | F_AF | F_PF;
			f->fix = fix_bsf;
			f = add(b, B(0xf3), B(0x0f, 0xbd), MR_R, gk(b), gk(b), m, 0,
				"lzcnt r%u, r/m%u%s", b, b, rm_sfx(m));
			f->undef = F_OF | F_SF | F_AF | F_PF;
			f->fix = fix_zero_src;
			f->feat = FEAT_LZCNT;
			f = add(b, B(0xf3), B(0x0f, 0xbc), MR_R, gk(b), gk(b), m, 0,
				"tzcnt r%u, r/m%u%s", b, b, rm_sfx(m));
			f->undef = F_OF | F_SF | F_AF | F_PF;
			f->fix = fix_zero_src;
			f->feat = FEAT_BMI1;
			f = add(b, B(0xf3), B(0x0f, 0xb8), MR_R, gk(b), gk(b), m, 0,
				"popcnt r%u, r/m%u%s", b, b, rm_sfx(m));
			f->fix = fix_zero_src;
			f->feat = FEAT_POPCNT;
		}
}

static void atomics(void)
{
	for (unsigned s = 0; s < 4; s++) {
		unsigned b = SZ[s], k = gk(b), w = b != 8;
		for (int m = 0; m < 2; m++) {
			add(b, NOPFX, B(0x0f, 0xc0 + w), MR_R, k, k, m, 0, "xadd r/m%u, r%u%s", b,
			    b, rm_sfx(m));
			struct form *f = add(b, NOPFX, B(0x0f, 0xb0 + w), MR_R, k, k, m, 0,
					     "cmpxchg r/m%u, r%u%s", b, b, rm_sfx(m));
			f->fix = fix_cmpxchg;
			f->implicit = 1;
		}
		if (b == 8 || b == 64) {
			add(b, B(0xf0), B(0x0f, 0xc0 + w), MR_R, k, k, 1, 0, "lock xadd m%u, r%u",
			    b, b);
			struct form *f = add(b, B(0xf0), B(0x0f, 0xb0 + w), MR_R, k, k, 1, 0,
					     "lock cmpxchg m%u, r%u", b, b);
			f->fix = fix_cmpxchg;
			f->implicit = 1;
		}
	}
	for (int lock = 0; lock < 2; lock++) {
		static const uint8_t lk = 0xf0;
		struct form *f = add(0, &lk, (size_t)lock, B(0x0f, 0xc7), 1, 0, K_G64, 1, 0,
				     "%scmpxchg8b m64", lock ? "lock " : "");
		f->fix = fix_cmpxchg8b;
		f->implicit = 0xf;
		f = add(64, &lk, (size_t)lock, B(0x0f, 0xc7), 1, 0, K_XMM, 1, 0,
			"%scmpxchg16b m128", lock ? "lock " : "");
		f->fix = fix_cmpxchg8b;
		f->implicit = 0xf;
		f->malign = 16;
		f->feat = FEAT_CX16;
	}
}

static void conds(void)
{
	static const char *const cc[16] = {"o", "no", "b", "ae", "e", "ne", "be", "a",
					   "s", "ns", "p", "np", "l", "ge", "le", "g"};
	for (unsigned c = 0; c < 16; c++) {
		for (unsigned b = 16; b <= 64; b *= 2)
			for (int m = 0; m < 2; m++)
				add(b, NOPFX, B(0x0f, 0x40 + c), MR_R, gk(b), gk(b), m, 0,
				    "cmov%s r%u, r/m%u%s", cc[c], b, b, rm_sfx(m));
		for (int m = 0; m < 2; m++)
			add(0, NOPFX, B(0x0f, 0x90 + c), 0, 0, K_G8, m, 0, "set%s r/m8%s", cc[c],
			    rm_sfx(m));
	}
}

void forms_int(void)
{
	alu();
	moves();
	muldiv();
	shifts();
	bitops();
	atomics();
	conds();
}
