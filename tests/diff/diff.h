/* Differential test of the soft engine against the host CPU: shared definitions.
 *
 * A case is one instruction with a random machine state. It runs natively in a sandboxed
 * child (native.c) and in the interpreter (soft_run.c) at the same addresses, and the two
 * resulting states are compared (main.c). Forms (forms_*.c) say how to encode the instruction
 * and how to constrain the random state; gen.c builds a case from a form. */
#ifndef FERRY_DIFF_H
#define FERRY_DIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Fixed addresses: the native child and the interpreter see the same code and data there. */
#define CODE_BASE     0x10000000ull
#define CODE_SIZE     0x1000ull
#define INSN_ADDR     (CODE_BASE + 0x800) /* where the instruction under test sits */
#define EPI_ADDR      (CODE_BASE + 0x200) /* the common state-saving epilogue */
#define RECOVER_ADDR  (CODE_BASE + 0x300) /* where the native child resumes after a fault */
#define TARGET_LO     (CODE_BASE + 0x400) /* branch targets (landing stubs) go here .. */
#define STUB_LEN      18                  /* .. each a stub of this many bytes */
#define SCRATCH_BASE  0x20000000ull
#define SCRATCH_SIZE  0x2000ull /* two pages; the page after them stays unmapped */
#define XFER_BASE     0x30000000ull
#define UNMAPPED_BASE 0x40000000ull /* never mapped: accesses here are #PF */

/* RFLAGS bits the harness controls and compares: the arithmetic flags and DF. */
#define F_CF      0x001u
#define F_PF      0x004u
#define F_AF      0x010u
#define F_ZF      0x040u
#define F_SF      0x080u
#define F_DF      0x400u
#define F_OF      0x800u
#define F_ARITH   (F_CF | F_PF | F_AF | F_ZF | F_SF | F_OF)
#define F_CMPMASK (F_ARITH | F_DF)

/* FXSAVE image offsets (Intel SDM vol. 1, 10.5.1). */
#define FX_FCW    0
#define FX_FSW    2
#define FX_FTW    4 /* abridged: one bit per physical register, 1 = valid */
#define FX_MXCSR  24
#define FX_ST(i)  (32 + 16 * (i))
#define FX_XMM(i) (160 + 16 * (i))

/* The state compared after one instruction. vector is -1 when no exception was raised. */
struct machine {
	uint64_t gpr[16];
	uint64_t rip, rflags;
	uint8_t fx[512] __attribute__((aligned(16)));
	int vector;
	uint32_t error;
	uint64_t addr; /* #PF: the faulting linear address */
};

/* Operand kinds for the template encoder. */
enum kind { K_NONE, K_G8, K_G16, K_G32, K_G64, K_XMM };

/* What random lane values the XMM registers and a vector memory operand get. */
enum lanes { L_INT, L_PS, L_PD };

/* Extensions a form may need; tested only when the soft CPUID advertises it (and the host has
 * it). */
enum feat {
	FEAT_BASE,
	FEAT_SSE3,
	FEAT_SSSE3,
	FEAT_SSE41,
	FEAT_SSE42,
	FEAT_POPCNT,
	FEAT_LZCNT,
	FEAT_BMI1,
	FEAT_CX16,
	FEAT_LAHF,
	FEAT_MOVBE,
	FEAT_COUNT
};

/* Form flags. */
#define FF_STACK    (1u << 0)  /* uses the stack: RSP points into the scratch area */
#define FF_NOFAULT  (1u << 1)  /* never aim the memory operand at a faulting address */
#define FF_NOALIAS  (1u << 2)  /* address registers must not be the ModRM.reg / opcode register */
#define FF_REL8     (1u << 3)  /* the immediate is a rel8 branch displacement */
#define FF_REL32    (1u << 4)  /* .. a rel32 one */
#define FF_X87      (1u << 5)  /* random x87 state (else the FNINIT state) */
#define FF_NO67     (1u << 6)  /* no address-size prefix variation */
#define FF_HIGH8NO  (1u << 7)  /* no AH..BH choices (the form needs a REX prefix) */
#define FF_NOREX40  (1u << 8)  /* no redundant REX prefix */
#define FF_MXUNMASK (1u << 9)  /* sometimes unmask SSE exceptions (#XM) */
#define FF_NORSP    (1u << 10) /* no RSP as a ModRM register operand */
#define FF_BADENC   (1u << 11) /* an invalid encoding on purpose (#UD): Zydis rejects it */
#define FF_CMPX87   (1u << 12) /* compare the x87 state (x87 forms and FXSAVE/FXRSTOR) */

#define MR_NONE     (-2) /* no ModRM byte */
#define MR_R        (-1) /* ModRM.reg is a register operand (/r) */

struct tcase;

struct form {
	char name[72];
	uint8_t pfx[4], npfx; /* legacy prefixes, in order */
	uint8_t rexw;
	uint8_t opc[4], nopc;        /* opcode bytes including 0F / 0F 38 / 0F 3A */
	int8_t modrm;                /* MR_NONE, MR_R or the /digit in ModRM.reg */
	uint8_t regk, rmk;           /* kinds of the ModRM.reg (MR_R) and ModRM.rm operands */
	uint8_t mem;                 /* ModRM.rm is a memory operand */
	uint8_t msize;               /* .. of this many bytes */
	uint8_t malign;              /* .. that must be aligned to this (0: no requirement) */
	uint8_t modrm_byte;          /* MR_NONE forms: a fixed byte after the opcode (0: none) */
	uint8_t immsz;               /* immediate bytes */
	uint8_t opregk;              /* a register in the low 3 bits of the last opcode byte */
	uint8_t lanes;               /* enum lanes */
	uint8_t feat;                /* enum feat */
	uint16_t implicit;           /* GPRs used implicitly: never address registers */
	uint16_t mlo, mhi;           /* margins kept free in the scratch area around the operand */
	uint32_t undef;              /* undefined arithmetic flags (Intel SDM) */
	uint32_t fl;                 /* FF_* */
	int arg;                     /* form-specific: condition code, sub-operation .. */
	void (*fix)(struct tcase *); /* constrains the random state after encoding */
	uint16_t fsw_undef;          /* x87 status word bits that are undefined */
};

/* A register operand: 0..15, or 16..19 for AH, CH, DH, BH. */
#define R_AH 16

struct tcase {
	const struct form *f;
	uint64_t seed;
	uint8_t insn[16];
	unsigned len;
	uint8_t code[CODE_SIZE];
	uint8_t mem[SCRATCH_SIZE];
	struct machine in;

	/* What the encoder chose, for fixups and the reproducer. */
	int reg, rm, opreg; /* register operands, -1 when absent */
	bool has_mem;
	uint64_t ea;         /* the memory operand's address */
	int base, index;     /* address registers, -1 when absent */
	bool a32;            /* 67 prefix */
	unsigned imm_off;    /* offset of the immediate in insn */
	uint64_t targets[4]; /* landing stubs besides the fall-through one */
	unsigned ntargets;

	/* What not to compare in this case. */
	uint32_t undef;     /* arithmetic flags */
	uint16_t undef_gpr; /* whole registers */
	uint16_t fsw_undef;
	uint32_t undef_mem_lo, undef_mem_hi; /* scratch offsets [lo, hi) */
	uint32_t xmm_undef;                  /* bit i: XMMi */
	bool skip_x87;                       /* x87 data registers are not compared */
};

/* ---- random numbers (gen.c) ---- */
void rng_seed(uint64_t s);
uint64_t rnd(void);
uint64_t rnd_below(uint64_t n);
bool chance(unsigned percent);
uint64_t rnd_interesting(unsigned bytes); /* edge values of an operand size, or random */
uint64_t rnd_double_bits(void);
uint32_t rnd_float_bits(void);
uint64_t mix_seed(uint64_t a, uint64_t b);
void rnd_fx(uint8_t *fx, unsigned lanes, bool x87, bool unmask);

/* ---- building a case (gen.c) ---- */
bool gen_case(struct tcase *tc, const struct form *f, uint64_t seed);
uint64_t reg_get(const struct tcase *tc, int r, unsigned bytes);
void reg_set(struct tcase *tc, int r, unsigned bytes, uint64_t v);
uint64_t mem_get(const struct tcase *tc, uint64_t addr, unsigned bytes);
void mem_set(struct tcase *tc, uint64_t addr, unsigned bytes, uint64_t v);
bool in_scratch(uint64_t addr, unsigned bytes);
/* Reads/changes the rm operand (register or memory) of size bytes. */
uint64_t rm_get(const struct tcase *tc, unsigned bytes);
void rm_set(struct tcase *tc, unsigned bytes, uint64_t v);
uint64_t imm_get(const struct tcase *tc, unsigned bytes);
void imm_set(struct tcase *tc, unsigned bytes, uint64_t v);
/* A landing stub for a branch whose displacement is measured from next, within [lo, hi]. */
bool pick_target(struct tcase *tc, uint64_t next, int64_t lo, int64_t hi, uint64_t *target);
/* A stack pointer into the scratch area (sometimes near its ends, to fault). */
uint64_t rnd_stack(bool may_fault);
unsigned kind_bytes(unsigned k);
void layout_code(struct tcase *tc);

/* ---- the form table (forms_*.c) ---- */
struct form *form_new(void);
void forms_int(void);
void forms_ctl(void);
void forms_sse(void);
void forms_x87(void);
extern struct form *forms;
extern unsigned nforms;

/* ---- running (native.c, soft_run.c) ---- */
bool native_init(void);
/* 0: ran (out filled); -1: the child died or hung (it is restarted), why says how. */
int native_run(const struct tcase *tc, struct machine *out, uint8_t *mem_out, char *why,
	       size_t why_len);
void native_fini(void);
/* The prologue and epilogue, placed into every code page. */
void native_layout(uint8_t *code);

bool soft_init(void);
/* 0: ran; -1: the interpreter crashed (signal) or returned an unexpected exit, why says how.
 * translated: the instruction runs as translated code (src/engine/soft/jit.c) in a block with
 * a stop after it, instead of alone in the handler loop. */
int soft_run_case(const struct tcase *tc, bool translated, struct machine *out, uint8_t *mem_out,
		  char *why, size_t why_len);
bool soft_has_feat(enum feat f);
bool host_has_feat(enum feat f);

#endif
