/* Control transfer, stack, string and miscellaneous forms. Branch targets are landing stubs
 * (gen.c pick_target), so a taken and a not-taken branch both end in the epilogue and the RIP
 * they left is compared. */
#include <stdio.h>
#include <string.h>

#include "forms.h"

static uint64_t mask_of(unsigned bytes)
{
	return bytes >= 8 ? ~0ull : (1ull << (bytes * 8)) - 1;
}

static uint64_t any_target(struct tcase *tc)
{
	uint64_t t = INSN_ADDR + tc->len;
	pick_target(tc, INSN_ADDR + tc->len, -0x3c0, 0x7c0, &t);
	return t;
}

/* jmp/call r/m64: the operand holds a landing stub's address. */
static void fix_indirect(struct tcase *tc)
{
	rm_set(tc, 8, any_target(tc));
}

/* ret: the return address on the stack is a landing stub. */
static void fix_ret(struct tcase *tc)
{
	mem_set(tc, tc->in.gpr[4], 8, any_target(tc));
	if (tc->f->immsz == 2)
		imm_set(tc, 2, chance(70) ? rnd_below(64) * 8 : rnd());
}

/* loop/jrcxz: counts around zero and one; with 67 only ECX counts. */
static void fix_loop(struct tcase *tc)
{
	unsigned bytes = tc->f->arg ? 4 : 8;
	uint64_t v;
	switch (rnd_below(5)) {
	case 0:
		v = 0;
		break;
	case 1:
		v = 1;
		break;
	case 2:
		v = 2;
		break;
	default:
		v = rnd_interesting(bytes);
		break;
	}
	reg_set(tc, 1, bytes, v);
}

/* popfq: what the stack holds has the arithmetic flags, DF, and bits user mode cannot change
 * (IF, IOPL, reserved ones); never TF or AC, which would trap or fault afterwards. */
static void fix_popf(struct tcase *tc)
{
	uint64_t v = (rnd() & (F_ARITH | F_DF)) | (rnd() & 0x322aull);
	mem_set(tc, tc->in.gpr[4], 8, v);
}

static void fix_leave(struct tcase *tc)
{
	tc->in.gpr[5] = rnd_stack(true);
}

/* enter imm16, imm8: a small frame and a nesting level of 0..3. */
static void fix_enter(struct tcase *tc)
{
	tc->in.gpr[5] = SCRATCH_BASE + 0x800 + rnd_below(0x1000);
	imm_set(tc, 2, chance(70) ? rnd_below(64) * 8 : rnd_below(0x400));
	tc->insn[tc->imm_off + 2] = (uint8_t)(chance(60) ? 0 : rnd_below(4));
}

static void fix_xlat(struct tcase *tc)
{
	tc->in.gpr[3] = SCRATCH_BASE + rnd_below(SCRATCH_SIZE - 256);
}

/* String instructions: arg = element size | kind << 4 | rep << 8 | a32 << 10. */
enum { S_MOVS, S_STOS, S_LODS, S_CMPS, S_SCAS };

static void fix_string(struct tcase *tc)
{
	unsigned es = tc->f->arg & 15, kind = (tc->f->arg >> 4) & 15, rep = (tc->f->arg >> 8) & 3;
	bool a32 = tc->f->arg & (1 << 10);
	bool down = tc->in.rflags & F_DF;
	unsigned ab = a32 ? 4 : 8;
	int64_t step = down ? -(int64_t)es : (int64_t)es;
	uint64_t cnt = rep ? (chance(10) ? 0 : rnd_below(17)) : rnd_interesting(8);
	uint64_t si = SCRATCH_BASE + 0x300 + rnd_below(SCRATCH_SIZE - 0x600);
	uint64_t di = SCRATCH_BASE + 0x300 + rnd_below(SCRATCH_SIZE - 0x600);
	if (chance(60)) { /* element-aligned */
		si &= ~(uint64_t)(es - 1);
		di &= ~(uint64_t)(es - 1);
	}
	if (kind == S_MOVS && chance(20))
		di = si + rnd_below(17) - 8; /* overlapping */
	if (rep && chance(8)) {
		/* Runs off the scratch area after k elements: a fault with partial progress. */
		unsigned k = 1 + (unsigned)rnd_below(6);
		uint64_t edge =
		    down ? SCRATCH_BASE + (k - 1) * es : SCRATCH_BASE + SCRATCH_SIZE - k * es;
		if (kind == S_LODS || (kind == S_CMPS && chance(50)) ||
		    (kind == S_MOVS && chance(50)))
			si = edge;
		else
			di = edge;
		cnt = k + 1 + rnd_below(8);
	}
	if (rep && (kind == S_CMPS || kind == S_SCAS) && cnt) {
		/* repe: equal for a while; repne: different for a while, then equal. */
		unsigned k = (unsigned)rnd_below(cnt + 1);
		uint64_t acc = tc->in.gpr[0] & mask_of(es);
		for (unsigned i = 0; i <= k && i < cnt; i++) {
			uint64_t s =
			    kind == S_CMPS ? mem_get(tc, si + (uint64_t)(step * i), es) : acc;
			uint64_t d = di + (uint64_t)(step * i);
			bool equal = rep == 1 ? i < k : i == k;
			if (equal)
				mem_set(tc, d, es, s);
			else if (mem_get(tc, d, es) == s)
				mem_set(tc, d, es, s ^ 1);
		}
	}
	reg_set(tc, 6, ab, si);
	reg_set(tc, 7, ab, di);
	reg_set(tc, 1, ab, cnt);
}

static void strings(void)
{
	static const char *const mn[5] = {"movs", "stos", "lods", "cmps", "scas"};
	static const uint8_t op[5] = {0xa4, 0xaa, 0xac, 0xa6, 0xae};
	static const char sfx[4] = {'b', 'w', 'd', 'q'};
	for (unsigned kind = 0; kind < 5; kind++)
		for (unsigned s = 0; s < 4; s++) {
			unsigned es = 1u << s;
			unsigned nrep = kind >= S_CMPS ? 3 : 2;
			for (unsigned rep = 0; rep < nrep; rep++)
				for (unsigned a32 = 0; a32 < 2; a32++) {
					if (a32 && (es == 2 || es == 8 || rep == 2))
						continue; /* a sample of 67 forms is enough */
					static const char *const rn[2][3] = {
					    {"", "rep ", ""}, {"", "repe ", "repne "}};
					uint8_t pfx[2];
					size_t np = 0;
					if (a32)
						pfx[np++] = 0x67;
					if (rep)
						pfx[np++] = rep == 1 ? 0xf3 : 0xf2;
					struct form *f =
					    add(es == 2   ? 16
						: es == 8 ? 64
							  : 0,
						pfx, np, B(op[kind] + (es > 1)), MR_NONE, 0, 0, 0,
						0, "%s%s%c%s", rn[kind >= S_CMPS][rep], mn[kind],
						sfx[s], a32 ? " (a32)" : "");
					f->arg = (int)(es | kind << 4 | rep << 8 | a32 << 10);
					f->fix = fix_string;
				}
		}
}

static void branches(void)
{
	static const char *const cc[16] = {"o", "no", "b", "ae", "e", "ne", "be", "a",
					   "s", "ns", "p", "np", "l", "ge", "le", "g"};
	for (unsigned c = 0; c < 16; c++) {
		add(0, NOPFX, B(0x70 + c), MR_NONE, 0, 0, 0, 1, "j%s rel8", cc[c])->fl |= FF_REL8;
		add(0, NOPFX, B(0x0f, 0x80 + c), MR_NONE, 0, 0, 0, 4, "j%s rel32", cc[c])->fl |=
		    FF_REL32;
	}
	add(0, NOPFX, B(0xeb), MR_NONE, 0, 0, 0, 1, "jmp rel8")->fl |= FF_REL8;
	add(0, NOPFX, B(0xe9), MR_NONE, 0, 0, 0, 4, "jmp rel32")->fl |= FF_REL32;
	add(0, NOPFX, B(0xe8), MR_NONE, 0, 0, 0, 4, "call rel32")->fl |= FF_REL32 | FF_STACK;
	for (int m = 0; m < 2; m++) {
		struct form *f =
		    add(0, NOPFX, B(0xff), 4, 0, K_G64, m, 0, "jmp r/m64%s", rm_sfx(m));
		f->fix = fix_indirect;
		f = add(0, NOPFX, B(0xff), 2, 0, K_G64, m, 0, "call r/m64%s", rm_sfx(m));
		f->fix = fix_indirect;
		f->fl |= FF_STACK | FF_NORSP;
	}
	struct form *f = add(0, NOPFX, B(0xc3), MR_NONE, 0, 0, 0, 0, "ret");
	f->fl |= FF_STACK;
	f->fix = fix_ret;
	f = add(0, NOPFX, B(0xc2), MR_NONE, 0, 0, 0, 2, "ret imm16");
	f->fl |= FF_STACK;
	f->fix = fix_ret;
	static const char *const lp[4] = {"loopne", "loope", "loop", "jrcxz"};
	for (unsigned i = 0; i < 4; i++) {
		f = add(0, NOPFX, B(0xe0 + i), MR_NONE, 0, 0, 0, 1, "%s rel8", lp[i]);
		f->fl |= FF_REL8;
		f->fix = fix_loop;
	}
	f = add(0, B(0x67), B(0xe3), MR_NONE, 0, 0, 0, 1, "jecxz rel8");
	f->fl |= FF_REL8;
	f->fix = fix_loop;
	f->arg = 1;
	f = add(0, B(0x67), B(0xe2), MR_NONE, 0, 0, 0, 1, "loop rel8 (ecx)");
	f->fl |= FF_REL8;
	f->fix = fix_loop;
	f->arg = 1;
}

static void stack(void)
{
	struct form *f;
	for (unsigned b = 16; b <= 64; b += 48) {
		unsigned os = b == 16 ? 16 : 0;
		f = add(os, NOPFX, B(0x50), MR_NONE, 0, 0, 0, 0, "push r%u", b);
		f->opregk = (uint8_t)gk(b);
		f->fl |= FF_STACK;
		f = add(os, NOPFX, B(0x58), MR_NONE, 0, 0, 0, 0, "pop r%u", b);
		f->opregk = (uint8_t)gk(b);
		f->fl |= FF_STACK;
		for (int m = 0; m < 2; m++) {
			add(os, NOPFX, B(0xff), 6, 0, gk(b), m, 0, "push r/m%u%s", b, rm_sfx(m))
			    ->fl |= FF_STACK;
			add(os, NOPFX, B(0x8f), 0, 0, gk(b), m, 0, "pop r/m%u%s", b, rm_sfx(m))
			    ->fl |= FF_STACK;
		}
	}
	add(0, NOPFX, B(0x6a), MR_NONE, 0, 0, 0, 1, "push imm8")->fl |= FF_STACK;
	add(0, NOPFX, B(0x68), MR_NONE, 0, 0, 0, 4, "push imm32")->fl |= FF_STACK;
	add(16, NOPFX, B(0x68), MR_NONE, 0, 0, 0, 2, "push imm16")->fl |= FF_STACK;
	add(0, NOPFX, B(0x9c), MR_NONE, 0, 0, 0, 0, "pushfq")->fl |= FF_STACK;
	f = add(0, NOPFX, B(0x9d), MR_NONE, 0, 0, 0, 0, "popfq");
	f->fl |= FF_STACK;
	f->fix = fix_popf;
	f = add(0, NOPFX, B(0xc9), MR_NONE, 0, 0, 0, 0, "leave");
	f->fl |= FF_STACK;
	f->fix = fix_leave;
	f = add(0, NOPFX, B(0xc8), MR_NONE, 0, 0, 0, 3, "enter imm16, imm8");
	f->fl |= FF_STACK;
	f->fix = fix_enter;
}

static void misc(void)
{
	static const struct {
		const char *name;
		uint8_t b[3], n;
		uint8_t feat;
	} simple[] = {
	    {"clc", {0xf8}, 1, 0},
	    {"stc", {0xf9}, 1, 0},
	    {"cmc", {0xf5}, 1, 0},
	    {"cld", {0xfc}, 1, 0},
	    {"std", {0xfd}, 1, 0},
	    {"lahf", {0x9f}, 1, FEAT_LAHF},
	    {"sahf", {0x9e}, 1, FEAT_LAHF},
	    {"nop", {0x90}, 1, 0},
	    {"nop (66)", {0x66, 0x90}, 2, 0},
	    {"pause", {0xf3, 0x90}, 2, 0},
	    {"ud2", {0x0f, 0x0b}, 2, 0},
	    {"int3", {0xcc}, 1, 0},
	    {"hlt (#GP)", {0xf4}, 1, 0},
	    {"cli (#GP)", {0xfa}, 1, 0},
	    {"sti (#GP)", {0xfb}, 1, 0},
	    {"in al, dx (#GP)", {0xec}, 1, 0},
	    {"out dx, al (#GP)", {0xee}, 1, 0},
	    {"in al, imm8 (#GP)", {0xe4, 0x40}, 2, 0},
	    {"rdmsr (#GP)", {0x0f, 0x32}, 2, 0},
	    {"wrmsr (#GP)", {0x0f, 0x30}, 2, 0},
	    {"mov cr0, rax (#GP)", {0x0f, 0x22, 0xc0}, 3, 0},
	    {"mov rax, cr0 (#GP)", {0x0f, 0x20, 0xc0}, 3, 0},
	    {"invd (#GP)", {0x0f, 0x08}, 2, 0},
	    {"wbinvd (#GP)", {0x0f, 0x09}, 2, 0},
	    {"clts (#GP)", {0x0f, 0x06}, 2, 0},
	    {"sfence", {0x0f, 0xae, 0xf8}, 3, 0},
	    {"lfence", {0x0f, 0xae, 0xe8}, 3, 0},
	    {"mfence", {0x0f, 0xae, 0xf0}, 3, 0},
	};
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
		struct form *f = form_new();
		strcpy(f->name, simple[i].name);
		memcpy(f->opc, simple[i].b, simple[i].n);
		f->nopc = simple[i].n;
		f->feat = simple[i].feat;
	}
	/* Opcodes that do not exist in 64-bit mode: #UD. */
	static const uint8_t gone[] = {0x06, 0x07, 0x0e, 0x16, 0x17, 0x1e, 0x1f, 0x27, 0x2f,
				       0x37, 0x3f, 0x60, 0x61, 0xce, 0xd4, 0xd5, 0xd6};
	for (size_t i = 0; i < sizeof(gone); i++) {
		struct form *f = form_new();
		snprintf(f->name, sizeof(f->name), "%02x (#UD in 64-bit mode)", gone[i]);
		f->opc[0] = gone[i];
		f->nopc = 1;
		f->fl |= FF_BADENC;
		if (gone[i] == 0xd4 || gone[i] == 0xd5) {
			f->immsz = 1;
		}
	}
	struct form *f = add(0, NOPFX, B(0xd7), MR_NONE, 0, 0, 0, 0, "xlat");
	f->fix = fix_xlat;
	for (int m = 0; m < 2; m++) {
		add(0, NOPFX, B(0x0f, 0x1f), 0, 0, K_G32, m, 0, "nop r/m32%s", rm_sfx(m));
		add(16, NOPFX, B(0x0f, 0x1f), 0, 0, K_G16, m, 0, "nop r/m16%s", rm_sfx(m));
	}
	for (unsigned h = 0; h < 4; h++) {
		f = add(0, NOPFX, B(0x0f, 0x18), (int)h, 0, K_G8, 1, 0, "prefetch%s m8",
			(const char *const[]){"nta", "t0", "t1", "t2"}[h]);
	}
	add(0, NOPFX, B(0x0f, 0xae), 7, 0, K_G8, 1, 0, "clflush m8");
}

void forms_ctl(void)
{
	branches();
	stack();
	strings();
	misc();
}
