/* The x87 FPU.
 *
 * Every computational x87 instruction runs on the host's own FPU: the guest's FPU state is loaded
 * into it with FRSTOR (its control word included, so precision and rounding control apply and
 * unmasked exceptions take their architectural course), the instruction executes in its register
 * form with ST(i) as in the guest, or with its memory operand moved to a host buffer, and FNSAVE
 * brings the state back: results, condition codes, TOP, tags, stack faults and the exact
 * numerical behaviour of transcendental instructions all come from the hardware. FNSAVE does not
 * wait and reinitializes the FPU, so an exception the guest left unmasked never traps on the host.
 * What the host cannot see is done here: the #NM and #MF checks, guest memory, EFLAGS, and the
 * control instructions (FNINIT, FLDCW, FNSTENV, FNSAVE ...), whose formats are simple. */
#include <Zydis/Zydis.h>
#include <stdbool.h>
#include <string.h>

#include "engine/soft/exec_sse.h"
#include "engine/soft/exec_string.h"
#include "engine/soft/soft.h"

/* The FNSAVE/FRSTOR area, 32-bit protected-mode layout: the environment, then ST(0)..ST(7). */
struct fpu_img {
	uint16_t fcw, r0, fsw, r1, ftw, r2;
	uint32_t fip, fcs_fop, fdp, fds;
	uint8_t st[8][10];
};
_Static_assert(sizeof(struct fpu_img) == 108, "FNSAVE area is 108 bytes");

/* The memory operand of a host instruction: at most 10 bytes. */
struct membuf {
	uint8_t b[16];
};

/* ---- state helpers (also used by the FXSAVE image in exec_sse.c) ---------------------------- */

uint16_t soft_x87_status(const struct x87 *f)
{
	return (uint16_t)((f->fsw & ~FSW_TOP) | (f->top & 7) << 11);
}

void soft_x87_update_es(struct x87 *f)
{
	if (f->fsw & FSW_EXC & ~f->fcw)
		f->fsw |= FSW_ES | FSW_B;
	else
		f->fsw &= (uint16_t) ~(FSW_ES | FSW_B);
}

void soft_x87_load_status(struct x87 *f, uint16_t sw)
{
	f->top = (sw >> 11) & 7;
	f->fsw = sw & (uint16_t)~FSW_TOP;
	soft_x87_update_es(f);
}

uint16_t soft_x87_control(uint16_t cw)
{
	return (uint16_t)((cw & 0x1f3f) | 0x40);
}

unsigned soft_x87_tag_of(const void *reg80)
{
	uint64_t m;
	uint16_t se;
	memcpy(&m, reg80, 8);
	memcpy(&se, (const uint8_t *)reg80 + 8, 2);
	unsigned e = se & 0x7fff;
	if (e == 0)
		return m ? 2 : 1; /* denormals and pseudo-denormals are special */
	if (e == 0x7fff || !(m >> 63))
		return 2; /* NaN, infinity, unnormal */
	return 0;
}

uint8_t soft_x87_abridged_tags(const struct x87 *f)
{
	uint8_t t = 0;
	for (unsigned i = 0; i < 8; i++)
		if (((f->ftw_full >> (2 * i)) & 3) != 3)
			t |= (uint8_t)(1u << i);
	return t;
}

void soft_x87_load_abridged_tags(struct x87 *f, uint8_t tags)
{
	uint16_t w = 0;
	for (unsigned i = 0; i < 8; i++) {
		unsigned t = (tags >> i) & 1 ? soft_x87_tag_of(&f->st[i]) : 3;
		w |= (uint16_t)(t << (2 * i));
	}
	f->ftw_full = w;
}

/* The full tag word with the tags of non-empty registers computed from their contents, as
 * FSTENV and FSAVE store it. */
static uint16_t full_tags(const struct x87 *f)
{
	uint16_t w = 0;
	for (unsigned i = 0; i < 8; i++) {
		unsigned t = (f->ftw_full >> (2 * i)) & 3;
		if (t != 3)
			t = soft_x87_tag_of(&f->st[i]);
		w |= (uint16_t)(t << (2 * i));
	}
	return w;
}

/* ---- checks ------------------------------------------------------------------------------ */

/* Every x87 instruction: #NM with CR0.EM or CR0.TS. */
static inline void x87_nm(struct soft_cpu *c)
{
	if (unlikely(c->cr0 & (CR0_EM | CR0_TS)))
		soft_fault(c, EXC_NM, 0);
}

/* Waiting instructions also take a pending unmasked exception first: #MF with CR0.NE (without
 * it the PC-style FERR# path would apply; the instruction just runs). */
static inline void x87_wait_check(struct soft_cpu *c)
{
	x87_nm(c);
	if (unlikely(c->fpu.fsw & FSW_ES) && (c->cr0 & CR0_NE))
		soft_fault(c, EXC_MF, 0);
}

/* The first opcode byte (D8-DF) and the ModRM byte of the current instruction, from the code
 * itself: no prefix is D8-DF, so the first such byte is the opcode. */
static unsigned x87_opcode(struct soft_cpu *c, const struct insn *in)
{
	uint8_t p[16];
	insn_bytes(c, in, p);
	unsigned i = 0;
	while (i + 2 < in->len && (p[i] & 0xf8) != 0xd8)
		i++;
	return (unsigned)p[i] << 8 | p[i + 1];
}

/* ---- running an instruction on the host FPU ---------------------------------------------- */

#define X87_CLOBBERS "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)"

/* A register form. The guest's arithmetic flags go into the host's first (FCMOVcc reads them;
 * OF through an addition of AL to itself, the others with SAHF) and come back after (FCOMI
 * writes them, or, as the SDM has it for an unmasked #IA, may not). */
#define R1(b1, b2)                                                                                 \
	case (b1) << 8 | (b2):                                                                     \
		__asm__ volatile("fnstcw %[save]\n\t"                                              \
				 "frstor %[img]\n\t"                                               \
				 "addb %%al, %%al\n\t"                                             \
				 "sahf\n\t"                                                        \
				 ".byte " #b1 ", " #b2 "\n\t"                                      \
				 "fnsave %[img]\n\t"                                               \
				 "fldcw %[save]\n\t"                                               \
				 "lahf"                                                            \
				 : [img] "+m"(*img), [save] "=m"(save), "+a"(ax), "=@cco"(of)      \
				 :                                                                 \
				 : X87_CLOBBERS);                                                  \
		break;
#define R8(b1, b2)                                                                                 \
	R1(b1, b2 + 0)                                                                             \
	R1(b1, b2 + 1)                                                                             \
	R1(b1, b2 + 2)                                                                             \
	R1(b1, b2 + 3)                                                                             \
	R1(b1, b2 + 4)                                                                             \
	R1(b1, b2 + 5)                                                                             \
	R1(b1, b2 + 6)                                                                             \
	R1(b1, b2 + 7)

#define LAHF_FLAGS (FL_CF | FL_PF | FL_AF | FL_ZF | FL_SF)

/* Runs register-form instruction op (opcode byte << 8 | ModRM) with the arithmetic flags
 * rflags. Returns the arithmetic flags after it, or -1 if op is not run this way. */
static int64_t host_reg(unsigned op, struct fpu_img *img, uint64_t rflags)
{
	uint16_t save;
	bool of = false;
	uint64_t ax = (rflags & LAHF_FLAGS) << 8 | (rflags & FL_OF ? 0x80 : 0);
	switch (op) {
		R8(0xd8, 0xc0) /* fadd st0, st(i) */
		R8(0xd8, 0xc8) /* fmul */
		R8(0xd8, 0xd0) /* fcom */
		R8(0xd8, 0xd8) /* fcomp */
		R8(0xd8, 0xe0) /* fsub */
		R8(0xd8, 0xe8) /* fsubr */
		R8(0xd8, 0xf0) /* fdiv */
		R8(0xd8, 0xf8) /* fdivr */
		R8(0xd9, 0xc0) /* fld st(i) */
		R8(0xd9, 0xc8) /* fxch */
		R1(0xd9, 0xd0) /* fnop */
		R8(0xd9, 0xd8) /* fstp (alias) */
		R1(0xd9, 0xe0) /* fchs */
		R1(0xd9, 0xe1) /* fabs */
		R1(0xd9, 0xe4) /* ftst */
		R1(0xd9, 0xe5) /* fxam */
		R1(0xd9, 0xe8) /* fld1 */
		R1(0xd9, 0xe9) /* fldl2t */
		R1(0xd9, 0xea) /* fldl2e */
		R1(0xd9, 0xeb) /* fldpi */
		R1(0xd9, 0xec) /* fldlg2 */
		R1(0xd9, 0xed) /* fldln2 */
		R1(0xd9, 0xee) /* fldz */
		R8(0xd9, 0xf0) /* f2xm1 fyl2x fptan fpatan fxtract fprem1 fdecstp fincstp */
		R8(0xd9, 0xf8) /* fprem fyl2xp1 fsqrt fsincos frndint fscale fsin fcos */
		R8(0xda, 0xc0) /* fcmovb */
		R8(0xda, 0xc8) /* fcmove */
		R8(0xda, 0xd0) /* fcmovbe */
		R8(0xda, 0xd8) /* fcmovu */
		R1(0xda, 0xe9) /* fucompp */
		R8(0xdb, 0xc0) /* fcmovnb */
		R8(0xdb, 0xc8) /* fcmovne */
		R8(0xdb, 0xd0) /* fcmovnbe */
		R8(0xdb, 0xd8) /* fcmovnu */
		R8(0xdb, 0xe8) /* fucomi */
		R8(0xdb, 0xf0) /* fcomi */
		R8(0xdc, 0xc0) /* fadd st(i), st0 */
		R8(0xdc, 0xc8) /* fmul */
		R8(0xdc, 0xd0) /* fcom (alias) */
		R8(0xdc, 0xd8) /* fcomp (alias) */
		R8(0xdc, 0xe0) /* fsubr */
		R8(0xdc, 0xe8) /* fsub */
		R8(0xdc, 0xf0) /* fdivr */
		R8(0xdc, 0xf8) /* fdiv */
		R8(0xdd, 0xc0) /* ffree */
		R8(0xdd, 0xc8) /* fxch (alias) */
		R8(0xdd, 0xd0) /* fst st(i) */
		R8(0xdd, 0xd8) /* fstp st(i) */
		R8(0xdd, 0xe0) /* fucom */
		R8(0xdd, 0xe8) /* fucomp */
		R8(0xde, 0xc0) /* faddp */
		R8(0xde, 0xc8) /* fmulp */
		R8(0xde, 0xd0) /* fcomp (alias) */
		R1(0xde, 0xd9) /* fcompp */
		R8(0xde, 0xe0) /* fsubrp */
		R8(0xde, 0xe8) /* fsubp */
		R8(0xde, 0xf0) /* fdivrp */
		R8(0xde, 0xf8) /* fdivp */
		R8(0xdf, 0xc0) /* ffreep */
		R8(0xdf, 0xc8) /* fxch (alias) */
		R8(0xdf, 0xd0) /* fstp (alias) */
		R8(0xdf, 0xd8) /* fstp (alias) */
		R8(0xdf, 0xe8) /* fucomip */
		R8(0xdf, 0xf0) /* fcomip */
	default:
		return -1;
	}
	return (int64_t)(((ax >> 8) & LAHF_FLAGS) | (of ? FL_OF : 0));
}

/* A memory form, with the operand at [rax] = buf. */
#define M1(b1, reg)                                                                                \
	case ((b1)&7) << 3 | (reg):                                                                \
		__asm__ volatile("fnstcw %[save]\n\t"                                              \
				 "frstor %[img]\n\t"                                               \
				 ".byte " #b1 ", " #reg " << 3\n\t"                                \
				 "fnsave %[img]\n\t"                                               \
				 "fldcw %[save]"                                                   \
				 : [img] "+m"(*img), [save] "=m"(save), [buf] "+m"(*buf)           \
				 : "a"(buf)                                                        \
				 : X87_CLOBBERS);                                                  \
		break;
#define M8(b1) M1(b1, 0) M1(b1, 1) M1(b1, 2) M1(b1, 3) M1(b1, 4) M1(b1, 5) M1(b1, 6) M1(b1, 7)

static void host_mem(unsigned key, struct fpu_img *img, struct membuf *buf)
{
	uint16_t save;
	switch (key) {
		M8(0xd8)    /* arithmetic, m32fp */
		M1(0xd9, 0) /* fld m32fp */
		M1(0xd9, 2) /* fst m32fp */
		M1(0xd9, 3) /* fstp m32fp */
		M8(0xda)    /* arithmetic, m32int */
		M1(0xdb, 0) /* fild m32int */
		M1(0xdb, 2) /* fist m32int */
		M1(0xdb, 3) /* fistp m32int */
		M1(0xdb, 5) /* fld m80fp */
		M1(0xdb, 7) /* fstp m80fp */
		M8(0xdc)    /* arithmetic, m64fp */
		M1(0xdd, 0) /* fld m64fp */
		M1(0xdd, 2) /* fst m64fp */
		M1(0xdd, 3) /* fstp m64fp */
		M8(0xde)    /* arithmetic, m16int */
		M1(0xdf, 0) /* fild m16int */
		M1(0xdf, 2) /* fist m16int */
		M1(0xdf, 3) /* fistp m16int */
		M1(0xdf, 4) /* fbld m80bcd */
		M1(0xdf, 5) /* fild m64int */
		M1(0xdf, 6) /* fbstp m80bcd */
		M1(0xdf, 7) /* fistp m64int */
	default:
		break;
	}
}

enum { MF_NONE, MF_LOAD, MF_STORE };

/* The memory forms run on the host, by (opcode & 7) << 3 | ModRM.reg: direction and size. The
 * others are control instructions (their own handlers) or not instructions (FISTTP is SSE3). */
static const struct {
	uint8_t kind, size;
} mem_forms[64] = {
    /* D8 */ {MF_LOAD, 4}, {MF_LOAD, 4},  {MF_LOAD, 4},   {MF_LOAD, 4},
    {MF_LOAD, 4},          {MF_LOAD, 4},  {MF_LOAD, 4},   {MF_LOAD, 4},
    /* D9 */ {MF_LOAD, 4}, {MF_NONE, 0},  {MF_STORE, 4},  {MF_STORE, 4},
    {MF_NONE, 0},          {MF_NONE, 0},  {MF_NONE, 0},   {MF_NONE, 0},
    /* DA */ {MF_LOAD, 4}, {MF_LOAD, 4},  {MF_LOAD, 4},   {MF_LOAD, 4},
    {MF_LOAD, 4},          {MF_LOAD, 4},  {MF_LOAD, 4},   {MF_LOAD, 4},
    /* DB */ {MF_LOAD, 4}, {MF_NONE, 0},  {MF_STORE, 4},  {MF_STORE, 4},
    {MF_NONE, 0},          {MF_LOAD, 10}, {MF_NONE, 0},   {MF_STORE, 10},
    /* DC */ {MF_LOAD, 8}, {MF_LOAD, 8},  {MF_LOAD, 8},   {MF_LOAD, 8},
    {MF_LOAD, 8},          {MF_LOAD, 8},  {MF_LOAD, 8},   {MF_LOAD, 8},
    /* DD */ {MF_LOAD, 8}, {MF_NONE, 0},  {MF_STORE, 8},  {MF_STORE, 8},
    {MF_NONE, 0},          {MF_NONE, 0},  {MF_NONE, 0},   {MF_NONE, 0},
    /* DE */ {MF_LOAD, 2}, {MF_LOAD, 2},  {MF_LOAD, 2},   {MF_LOAD, 2},
    {MF_LOAD, 2},          {MF_LOAD, 2},  {MF_LOAD, 2},   {MF_LOAD, 2},
    /* DF */ {MF_LOAD, 2}, {MF_NONE, 0},  {MF_STORE, 2},  {MF_STORE, 2},
    {MF_LOAD, 10},         {MF_LOAD, 8},  {MF_STORE, 10}, {MF_STORE, 8},
};

/* The guest state as an FRSTOR image, with the exception flags cleared: what the host reports
 * afterwards is then exactly what this instruction raised. */
static void img_from(const struct x87 *f, struct fpu_img *img)
{
	memset(img, 0, sizeof(*img));
	img->fcw = f->fcw;
	img->fsw = soft_x87_status(f) & (uint16_t) ~(FSW_FLAGS | FSW_ES | FSW_B);
	img->ftw = f->ftw_full;
	for (unsigned i = 0; i < 8; i++)
		memcpy(img->st[i], &f->st[(f->top + i) & 7], 10);
}

static void img_commit(struct x87 *f, const struct fpu_img *img)
{
	unsigned top = (img->fsw >> 11) & 7;
	f->fsw = (uint16_t)((f->fsw & FSW_FLAGS) | (img->fsw & (FSW_FLAGS | FSW_CC)));
	f->top = top;
	soft_x87_update_es(f);
	f->ftw_full = img->ftw;
	for (unsigned i = 0; i < 8; i++)
		memcpy(&f->st[(top + i) & 7], img->st[i], 10);
}

static bool is_fcomi(unsigned op)
{
	unsigned b1 = op >> 8, m = op & 0xff;
	return (b1 == 0xdb || b1 == 0xdf) && m >= 0xe8 && m <= 0xf7;
}

/* Every non-control x87 instruction. */
static void h_x87(struct soft_cpu *c, const struct insn *in)
{
	x87_wait_check(c);
	struct x87 *f = &c->fpu;
	unsigned op = x87_opcode(c, in);
	struct fpu_img img;
	img_from(f, &img);
	if ((op & 0xff) >= 0xc0) {
		int64_t fl = host_reg(op, &img, soft_flags(c));
		if (fl < 0)
			soft_unimplemented(c, in);
		if (is_fcomi(op))
			soft_set_flags(c, (uint64_t)fl, FL_ARITH);
	} else {
		unsigned key = ((op >> 8) & 7) << 3 | ((op >> 3) & 7);
		unsigned size = mem_forms[key].size;
		uint64_t a = insn_addr(c, in);
		struct membuf buf;
		memset(&buf, 0, sizeof(buf));
		if (mem_forms[key].kind == MF_NONE)
			soft_unimplemented(c, in);
		if (mem_forms[key].kind == MF_LOAD) {
			soft_read_bytes(c, a, buf.b, size);
			host_mem(key, &img, &buf);
		} else {
			struct fpu_img before = img;
			host_mem(key, &img, &buf);
			bool stored = true;
			if (img.fsw & FSW_EXC & ~f->fcw) {
				/* An unmasked exception may have suppressed the store: run it again over
				 * a different buffer and see whether the host wrote it. */
				struct membuf other;
				memset(&other, 0xff, sizeof(other));
				host_mem(key, &before, &other);
				stored = memcmp(buf.b, other.b, size) == 0;
			}
			if (stored) {
				soft_write_bytes(c, a, buf.b, size);
			} else {
				/* Not stored, but the destination is still checked for writing. (This
				 * would stop the engine on memory-mapped I/O, where soft_mem cannot
				 * go: an x87 store there with an unmasked exception is not worth
				 * more.) */
				soft_mem(c, a, 1, ACC_WRITE);
				soft_mem(c, a + size - 1, 1, ACC_WRITE);
			}
		}
		f->fdp = a;
	}
	img_commit(f, &img);
	f->fop = (uint16_t)(op & 0x7ff);
	f->fip = c->insn_start;
}

static insn_fn sel_x87(const struct insn *in)
{
	(void)in;
	return h_x87;
}

/* ---- control instructions ------------------------------------------------------------------ */

static void x87_init(struct x87 *f)
{
	f->fcw = 0x037f;
	f->fsw = 0;
	f->top = 0;
	f->ftw_full = 0xffff;
	f->fop = 0;
	f->fip = f->fdp = 0;
}

static void h_fninit(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	x87_nm(c);
	x87_init(&c->fpu);
}

static void h_fnclex(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	x87_nm(c);
	c->fpu.fsw &= (uint16_t) ~(FSW_FLAGS | FSW_ES | FSW_B);
}

/* FENI, FDISI, FSETPM: 8087/287 controls, no-ops since the 387. */
static void h_fnop_legacy(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	x87_nm(c);
}

static void h_fldcw(struct soft_cpu *c, const struct insn *in)
{
	x87_wait_check(c);
	uint16_t v = (uint16_t)soft_load(c, insn_addr(c, in), 2);
	c->fpu.fcw = soft_x87_control(v);
	soft_x87_update_es(&c->fpu); /* unmasking a raised flag makes it pending */
}

static void h_fnstcw(struct soft_cpu *c, const struct insn *in)
{
	x87_nm(c);
	soft_store(c, insn_addr(c, in), c->fpu.fcw, 2);
}

static void h_fnstsw(struct soft_cpu *c, const struct insn *in)
{
	x87_nm(c);
	uint16_t sw = soft_x87_status(&c->fpu);
	if (in->op[0].kind == OPK_REG)
		gpr_write(c, in->op[0].reg, sw, 2);
	else
		soft_store(c, insn_addr(c, in), sw, 2);
}

static void h_fwait(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	if (unlikely((c->cr0 & (CR0_MP | CR0_TS)) == (CR0_MP | CR0_TS)))
		soft_fault(c, EXC_NM, 0);
	if (unlikely(c->fpu.fsw & FSW_ES) && (c->cr0 & CR0_NE))
		soft_fault(c, EXC_MF, 0);
}

/* The FSTENV environment: 28 bytes (32-bit operand size; the unused halves read as ones) or 14
 * (16-bit). Selectors are not recorded by this CPU: the current CS and DS stand in. Returns
 * its size. */
static unsigned env_build(const struct soft_cpu *c, uint8_t *p, bool big)
{
	const struct x87 *f = &c->fpu;
	uint16_t cs = c->seg[SEG_CS].selector, ds = c->seg[SEG_DS].selector;
	if (!big) {
		le_put16(p + 0, f->fcw);
		le_put16(p + 2, soft_x87_status(f));
		le_put16(p + 4, full_tags(f));
		le_put16(p + 6, (uint16_t)f->fip);
		le_put16(p + 8, cs);
		le_put16(p + 10, (uint16_t)f->fdp);
		le_put16(p + 12, ds);
		return 14;
	}
	le_put32(p + 0, 0xffff0000u | f->fcw);
	le_put32(p + 4, 0xffff0000u | soft_x87_status(f));
	le_put32(p + 8, 0xffff0000u | full_tags(f));
	le_put32(p + 12, (uint32_t)f->fip);
	le_put32(p + 16, cs | (uint32_t)(f->fop & 0x7ff) << 16);
	le_put32(p + 20, (uint32_t)f->fdp);
	le_put32(p + 24, 0xffff0000u | ds);
	return 28;
}

/* Loads an environment; the registers must already be in place (the tags of non-empty ones
 * are recomputed from them). */
static void env_load(struct x87 *f, const uint8_t *p, bool big)
{
	uint16_t ftw = le_get16(p + (big ? 8 : 4));
	f->fcw = soft_x87_control(le_get16(p));
	soft_x87_load_status(f, le_get16(p + (big ? 4 : 2)));
	f->ftw_full = ftw;
	f->ftw_full = full_tags(f);
	if (big) {
		f->fip = le_get32(p + 12);
		f->fop = (uint16_t)((le_get32(p + 16) >> 16) & 0x7ff);
		f->fdp = le_get32(p + 20);
	} else {
		f->fip = le_get16(p + 6);
		f->fdp = le_get16(p + 10);
	}
}

static bool env_big(const struct insn *in)
{
	return in->osize != 2;
}

static void h_fnstenv(struct soft_cpu *c, const struct insn *in)
{
	x87_nm(c);
	uint8_t env[28];
	unsigned n = env_build(c, env, env_big(in));
	soft_write_bytes(c, insn_addr(c, in), env, n);
	c->fpu.fcw |= 0x3f; /* FNSTENV masks every exception afterwards */
	soft_x87_update_es(&c->fpu);
}

static void h_fldenv(struct soft_cpu *c, const struct insn *in)
{
	x87_wait_check(c);
	uint8_t env[28];
	bool big = env_big(in);
	soft_read_bytes(c, insn_addr(c, in), env, big ? 28 : 14);
	env_load(&c->fpu, env, big);
}

static void h_fnsave(struct soft_cpu *c, const struct insn *in)
{
	x87_nm(c);
	uint8_t area[108];
	const struct x87 *f = &c->fpu;
	unsigned n = env_build(c, area, env_big(in));
	for (size_t i = 0; i < 8; i++)
		memcpy(area + n + 10 * i, &f->st[(f->top + i) & 7], 10);
	soft_write_bytes(c, insn_addr(c, in), area, n + 80);
	x87_init(&c->fpu);
}

static void h_frstor(struct soft_cpu *c, const struct insn *in)
{
	x87_wait_check(c);
	uint8_t area[108];
	bool big = env_big(in);
	unsigned n = big ? 28 : 14;
	soft_read_bytes(c, insn_addr(c, in), area, n + 80);
	struct x87 *f = &c->fpu;
	unsigned top = (le_get16(area + (big ? 4 : 2)) >> 11) & 7;
	for (size_t i = 0; i < 8; i++) {
		long double *r = &f->st[(top + i) & 7];
		memset(r, 0, sizeof(*r));
		memcpy(r, area + n + 10 * i, 10);
	}
	env_load(f, area, big);
}

static insn_fn sel_mem(const struct insn *in, insn_fn fn)
{
	return in->op[0].kind == OPK_MEM ? fn : NULL;
}

static insn_fn sel_fldcw(const struct insn *in)
{
	return sel_mem(in, h_fldcw);
}

static insn_fn sel_fnstcw(const struct insn *in)
{
	return sel_mem(in, h_fnstcw);
}

static insn_fn sel_fnstenv(const struct insn *in)
{
	return sel_mem(in, h_fnstenv);
}

static insn_fn sel_fldenv(const struct insn *in)
{
	return sel_mem(in, h_fldenv);
}

static insn_fn sel_fnsave(const struct insn *in)
{
	return sel_mem(in, h_fnsave);
}

static insn_fn sel_frstor(const struct insn *in)
{
	return sel_mem(in, h_frstor);
}

static insn_fn sel_fnstsw(const struct insn *in)
{
	if (in->op[0].kind == OPK_REG || in->op[0].kind == OPK_MEM)
		return h_fnstsw;
	return NULL;
}

void soft_register_x87(void)
{
	/* FISTTP is SSE3, which this CPU does not have: left unregistered, it is #UD. */
	static const uint16_t computational[] = {
	    ZYDIS_MNEMONIC_F2XM1,   ZYDIS_MNEMONIC_FABS,    ZYDIS_MNEMONIC_FADD,
	    ZYDIS_MNEMONIC_FADDP,   ZYDIS_MNEMONIC_FBLD,    ZYDIS_MNEMONIC_FBSTP,
	    ZYDIS_MNEMONIC_FCHS,    ZYDIS_MNEMONIC_FCMOVB,  ZYDIS_MNEMONIC_FCMOVBE,
	    ZYDIS_MNEMONIC_FCMOVE,  ZYDIS_MNEMONIC_FCMOVNB, ZYDIS_MNEMONIC_FCMOVNBE,
	    ZYDIS_MNEMONIC_FCMOVNE, ZYDIS_MNEMONIC_FCMOVNU, ZYDIS_MNEMONIC_FCMOVU,
	    ZYDIS_MNEMONIC_FCOM,    ZYDIS_MNEMONIC_FCOMI,   ZYDIS_MNEMONIC_FCOMIP,
	    ZYDIS_MNEMONIC_FCOMP,   ZYDIS_MNEMONIC_FCOMPP,  ZYDIS_MNEMONIC_FCOS,
	    ZYDIS_MNEMONIC_FDECSTP, ZYDIS_MNEMONIC_FDIV,    ZYDIS_MNEMONIC_FDIVP,
	    ZYDIS_MNEMONIC_FDIVR,   ZYDIS_MNEMONIC_FDIVRP,  ZYDIS_MNEMONIC_FFREE,
	    ZYDIS_MNEMONIC_FFREEP,  ZYDIS_MNEMONIC_FIADD,   ZYDIS_MNEMONIC_FICOM,
	    ZYDIS_MNEMONIC_FICOMP,  ZYDIS_MNEMONIC_FIDIV,   ZYDIS_MNEMONIC_FIDIVR,
	    ZYDIS_MNEMONIC_FILD,    ZYDIS_MNEMONIC_FIMUL,   ZYDIS_MNEMONIC_FINCSTP,
	    ZYDIS_MNEMONIC_FIST,    ZYDIS_MNEMONIC_FISTP,   ZYDIS_MNEMONIC_FISUB,
	    ZYDIS_MNEMONIC_FISUBR,  ZYDIS_MNEMONIC_FLD,     ZYDIS_MNEMONIC_FLD1,
	    ZYDIS_MNEMONIC_FLDL2E,  ZYDIS_MNEMONIC_FLDL2T,  ZYDIS_MNEMONIC_FLDLG2,
	    ZYDIS_MNEMONIC_FLDLN2,  ZYDIS_MNEMONIC_FLDPI,   ZYDIS_MNEMONIC_FLDZ,
	    ZYDIS_MNEMONIC_FMUL,    ZYDIS_MNEMONIC_FMULP,   ZYDIS_MNEMONIC_FNOP,
	    ZYDIS_MNEMONIC_FPATAN,  ZYDIS_MNEMONIC_FPREM,   ZYDIS_MNEMONIC_FPREM1,
	    ZYDIS_MNEMONIC_FPTAN,   ZYDIS_MNEMONIC_FRNDINT, ZYDIS_MNEMONIC_FSCALE,
	    ZYDIS_MNEMONIC_FSIN,    ZYDIS_MNEMONIC_FSINCOS, ZYDIS_MNEMONIC_FSQRT,
	    ZYDIS_MNEMONIC_FST,     ZYDIS_MNEMONIC_FSTP,    ZYDIS_MNEMONIC_FSTPNCE,
	    ZYDIS_MNEMONIC_FSUB,    ZYDIS_MNEMONIC_FSUBP,   ZYDIS_MNEMONIC_FSUBR,
	    ZYDIS_MNEMONIC_FSUBRP,  ZYDIS_MNEMONIC_FTST,    ZYDIS_MNEMONIC_FUCOM,
	    ZYDIS_MNEMONIC_FUCOMI,  ZYDIS_MNEMONIC_FUCOMIP, ZYDIS_MNEMONIC_FUCOMP,
	    ZYDIS_MNEMONIC_FUCOMPP, ZYDIS_MNEMONIC_FXAM,    ZYDIS_MNEMONIC_FXCH,
	    ZYDIS_MNEMONIC_FXTRACT, ZYDIS_MNEMONIC_FYL2X,   ZYDIS_MNEMONIC_FYL2XP1,
	};
	for (size_t i = 0; i < sizeof(computational) / sizeof(computational[0]); i++)
		soft_register(computational[i], sel_x87);
	soft_register_fn(ZYDIS_MNEMONIC_FNINIT, h_fninit);
	soft_register_fn(ZYDIS_MNEMONIC_FNCLEX, h_fnclex);
	soft_register_fn(ZYDIS_MNEMONIC_FENI8087_NOP, h_fnop_legacy);
	soft_register_fn(ZYDIS_MNEMONIC_FDISI8087_NOP, h_fnop_legacy);
	soft_register_fn(ZYDIS_MNEMONIC_FSETPM287_NOP, h_fnop_legacy);
	soft_register_fn(ZYDIS_MNEMONIC_FWAIT, h_fwait);
	soft_register(ZYDIS_MNEMONIC_FLDCW, sel_fldcw);
	soft_register(ZYDIS_MNEMONIC_FNSTCW, sel_fnstcw);
	soft_register(ZYDIS_MNEMONIC_FNSTSW, sel_fnstsw);
	soft_register(ZYDIS_MNEMONIC_FNSTENV, sel_fnstenv);
	soft_register(ZYDIS_MNEMONIC_FLDENV, sel_fldenv);
	soft_register(ZYDIS_MNEMONIC_FNSAVE, sel_fnsave);
	soft_register(ZYDIS_MNEMONIC_FRSTOR, sel_frstor);
}
