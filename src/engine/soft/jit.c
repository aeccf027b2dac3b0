/* The translator (jit.h): decoded 64-bit blocks to host x86-64 code.
 *
 * Translated code runs with RBX = the CPU, R12 = the block's guest-virtual address (its RIP
 * on entry; a block may be entered at more than one address, so nothing guest-virtual is baked
 * in) and R13 = c->tlb (reloaded after every handler, which may change the privilege level). Guest registers live in c->gpr: each instruction loads what it reads and stores what it
 * writes, so a handler called in between always sees the whole guest state. RAX, RCX and RDX
 * are scratch. The code space is one mapping, filled from the start; when it is full every
 * block is dropped and it starts again (cpu.c). */
#include "engine/soft/jit.h"

#include <Zydis/Zydis.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define JIT_SPACE (64u << 20)

struct soft_jit {
	uint8_t *base;
	size_t size, used;
	FILE *perf_map; /* FERRY_SOFT_JIT_PERFMAP=1: /tmp/perf-PID.map, a symbol per instruction */
};

struct soft_jit *soft_jit_create(void)
{
	struct soft_jit *j = calloc(1, sizeof(*j));
	if (!j)
		return NULL;
	void *p = mmap(NULL, JIT_SPACE, PROT_READ | PROT_WRITE | PROT_EXEC,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		free(j);
		return NULL;
	}
	j->base = p;
	j->size = JIT_SPACE;
	/* For profiling the translated code with perf: each guest instruction's host code shows
	 * as a symbol named after its mnemonic and the template it got. */
	const char *map = getenv("FERRY_SOFT_JIT_PERFMAP");
	if (map && strcmp(map, "1") == 0) {
		char path[64];
		snprintf(path, sizeof(path), "/tmp/perf-%d.map", (int)getpid());
		j->perf_map = fopen(path, "a");
	}
	return j;
}

void soft_jit_destroy(struct soft_jit *j)
{
	if (!j)
		return;
	munmap(j->base, j->size);
	if (j->perf_map)
		fclose(j->perf_map);
	free(j);
}

void soft_jit_reset(struct soft_jit *j)
{
	j->used = 0;
}

/* ---- emitting host instructions ------------------------------------------------------------ */

enum { RAX = 0, RCX = 1, RDX = 2, RBX = 3, RSI = 6, RDI = 7, R12 = 12, R13 = 13 };

#define OFF_RIP      ((int32_t)offsetof(struct soft_cpu, rip))
#define OFF_START    ((int32_t)offsetof(struct soft_cpu, insn_start))
#define OFF_STOP     ((int32_t)offsetof(struct soft_cpu, stop_block))
#define OFF_LF_OP    ((int32_t)offsetof(struct soft_cpu, lf.op))
#define OFF_LF_RES   ((int32_t)offsetof(struct soft_cpu, lf.res))
#define OFF_LF_S1    ((int32_t)offsetof(struct soft_cpu, lf.src1))
#define OFF_LF_S2    ((int32_t)offsetof(struct soft_cpu, lf.src2))
#define OFF_LF_S3    ((int32_t)offsetof(struct soft_cpu, lf.src3))
#define OFF_RFLAGS   ((int32_t)offsetof(struct soft_cpu, rflags))
#define OFF_TLB      ((int32_t)offsetof(struct soft_cpu, tlb))
#define OFF_SEGB(s)  ((int32_t)(offsetof(struct soft_cpu, seg) + (s) * sizeof(struct cpu_segment)))

#define OFF_EXITREQ  ((int32_t)offsetof(struct soft_cpu, exit_request))
#define OFF_INTRREQ  ((int32_t)offsetof(struct soft_cpu, intr_request))
#define OFF_NMIREQ   ((int32_t)offsetof(struct soft_cpu, nmi_request))
#define OFF_LIMIT    ((int32_t)offsetof(struct soft_cpu, icount_limit))
#define OFF_ICOUNT   ((int32_t)offsetof(struct soft_cpu, icount))
#define OFF_JC       ((int32_t)offsetof(struct soft_cpu, jc))
#define OFF_EPOCH    ((int32_t)offsetof(struct soft_cpu, epoch))
#define OFF_CURBLOCK ((int32_t)offsetof(struct soft_cpu, cur_block))
#define OFF_CURVA    ((int32_t)offsetof(struct soft_cpu, cur_block_va))
#define OFF_SHADOW   ((int32_t)offsetof(struct soft_cpu, intr_shadow))

_Static_assert(sizeof(struct jc_entry) == 24 && offsetof(struct jc_entry, va) == 0 &&
		   offsetof(struct jc_entry, epoch) == 8 && offsetof(struct jc_entry, block) == 16,
	       "the chain's jump-cache probe");
_Static_assert(
    offsetof(struct soft_cpu, exit_request) % 8 == 0 &&
	offsetof(struct soft_cpu, intr_request) == offsetof(struct soft_cpu, exit_request) + 4 &&
	offsetof(struct soft_cpu, nmi_request) == offsetof(struct soft_cpu, exit_request) + 8 &&
	offsetof(struct soft_cpu, requests_zero) == offsetof(struct soft_cpu, exit_request) + 12,
    "the requests are read as two quadwords");
_Static_assert(sizeof(((struct soft_cpu *)0)->exit_request) == 4 &&
		   sizeof(((struct soft_cpu *)0)->intr_request) == 4 &&
		   sizeof(((struct soft_cpu *)0)->nmi_request) == 4 &&
		   sizeof(((struct soft_cpu *)0)->stop_block) == 1 &&
		   sizeof(((struct soft_cpu *)0)->intr_shadow) == 1,
	       "the chain's checks read these widths");
_Static_assert(sizeof(struct tlb_entry) == 40, "the TLB probe indexes entries of 5 quadwords");
_Static_assert(offsetof(struct tlb_entry, tag_read) == 0 &&
		   offsetof(struct tlb_entry, tag_write) == 8 &&
		   offsetof(struct tlb_entry, addend) == 24,
	       "the TLB probe's field offsets");

struct emit {
	uint8_t *p, *end;
	bool full;
	const struct block *block; /* the block being translated */
	uint8_t *body; /* the block's first instruction's code (a loop back to it jumps there) */
};

static void b1(struct emit *e, unsigned v)
{
	if (e->p < e->end)
		*e->p++ = (uint8_t)v;
	else
		e->full = true;
}

static void b4(struct emit *e, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		b1(e, (v >> (8 * i)) & 0xff);
}

static void b8(struct emit *e, uint64_t v)
{
	b4(e, (uint32_t)v);
	b4(e, (uint32_t)(v >> 32));
}

/* A fixed run of instruction bytes. */
#define BYTES(e, ...)                                                                              \
	do {                                                                                       \
		const uint8_t bytes_[] = {__VA_ARGS__};                                            \
		for (size_t k_ = 0; k_ < sizeof(bytes_); k_++)                                     \
			b1(e, bytes_[k_]);                                                         \
	} while (0)

static bool fits32(int64_t v)
{
	return v == (int32_t)v;
}

/* The REX prefix, when one is needed: W for 64-bit operands, R and B extend the ModRM fields. */
static void rex(struct emit *e, bool w, unsigned reg, unsigned rm)
{
	unsigned v = 0x40u | (w ? 8u : 0u) | ((reg >> 3) << 2) | (rm >> 3);
	if (v != 0x40u)
		b1(e, v);
}

/* op reg, [rbx + off] (and the reverse: op is the opcode byte). */
static void rbx_mem(struct emit *e, bool w, unsigned op, unsigned reg, int32_t off)
{
	rex(e, w, reg, RBX);
	b1(e, op);
	b1(e, 0x80u | ((reg & 7u) << 3) | RBX);
	b4(e, (uint32_t)off);
}

static void load(struct emit *e, bool w, unsigned reg, int32_t off)
{
	rbx_mem(e, w, 0x8b, reg, off);
}

static void store(struct emit *e, bool w, unsigned reg, int32_t off)
{
	rbx_mem(e, w, 0x89, reg, off);
}

static void store_imm32(struct emit *e, int32_t off, uint32_t v)
{
	rbx_mem(e, false, 0xc7, 0, off);
	b4(e, v);
}

/* lea reg, [r12 + disp]: a guest-virtual address in this block's frame. */
static void lea_r12(struct emit *e, unsigned reg, int32_t disp)
{
	rex(e, true, reg, R12);
	b1(e, 0x8d);
	b1(e, 0x84u | ((reg & 7u) << 3));
	b1(e, 0x24);
	b4(e, (uint32_t)disp);
}

static void set_va(struct emit *e, int32_t field, int32_t disp)
{
	lea_r12(e, RAX, disp);
	store(e, true, RAX, field);
}

/* Leaves the translated code: EAX = the current block's instructions that did not run (they
 * were counted when it was entered), then the epilogue. */
static void leave(struct emit *e, unsigned not_run)
{
	b1(e, 0xb8);
	b4(e, not_run);
	b1(e, 0x41);
	b1(e, 0x5d); /* pop r13 */
	b1(e, 0x41);
	b1(e, 0x5c); /* pop r12 */
	b1(e, 0x5b); /* pop rbx */
	b1(e, 0xc3);
}

/* A rel32 jump or jcc to be patched: returns where its displacement goes. */
static uint8_t *jump_fwd(struct emit *e, int cc)
{
	if (cc < 0) {
		b1(e, 0xe9);
	} else {
		b1(e, 0x0f);
		b1(e, 0x80u + (unsigned)cc);
	}
	uint8_t *at = e->p;
	b4(e, 0);
	return at;
}

static void patch_here(struct emit *e, uint8_t *at)
{
	if (e->full || !at)
		return;
	int32_t rel = (int32_t)(e->p - (at + 4));
	memcpy(at, &rel, 4);
}

/* RDX = the address of entry (RAX >> shift) & mask of the table whose pointer is at
 * [rbx + table], entries of quads quadwords (3 or 5). Clobbers RSI. */
#define TABLE_R13 (-1) /* the table pointer is in R13 (the soft TLB: c->tlb) */

static void table_entry(struct emit *e, unsigned shift, uint32_t mask, unsigned quads,
			int32_t table)
{
	BYTES(e, 0x48, 0x89, 0xc2, 0x48, 0xc1, 0xea, shift); /* mov rdx, rax; shr rdx, shift */
	b1(e, 0x81);
	b1(e, 0xe2);
	b4(e, mask);                                          /* and edx, mask */
	BYTES(e, 0x48, 0x8d, 0x14, quads == 5 ? 0x92 : 0x52); /* lea rdx, [rdx + rdx*4 or 2] */
	if (table == TABLE_R13) {
		BYTES(e, 0x49, 0x8d, 0x54, 0xd5, 0x00); /* lea rdx, [r13 + rdx*8] */
		return;
	}
	load(e, true, RSI, table);
	BYTES(e, 0x48, 0x8d, 0x14, 0xd6); /* lea rdx, [rsi + rdx*8] */
}

/* Whether the run loop has anything to do before the next block: a request from another
 * thread, an instruction budget, and (stop) stop_block: where no handler ran since the last
 * stop_check, it is clear. Returns the jnz (yes) to patch. */
static uint8_t *anything_due(struct emit *e, bool stop)
{
	load(e, true, RCX, OFF_LIMIT);
	rbx_mem(e, true, 0x0b, RCX, OFF_EXITREQ);     /* or rcx, [exit_request, intr_request] */
	rbx_mem(e, true, 0x0b, RCX, OFF_EXITREQ + 8); /* or rcx, [nmi_request, 0] */
	if (stop) {
		BYTES(e, 0x0f, 0xb6, 0x80u | (RDX << 3) | RBX); /* movzx edx, byte [stop_block] */
		b4(e, (uint32_t)OFF_STOP);
		BYTES(e, 0x48, 0x09, 0xd1); /* or rcx, rdx */
	}
	return jump_fwd(e, 0x5); /* jnz */
}

/* The jump cache's block for RAX, as the run loop finds it: RDX = the block, RCX = its linked
 * entry; out[] get the jumps taken when there is none. */
static void jc_lookup(struct emit *e, uint8_t *out[3])
{
	table_entry(e, 2, JC_SIZE - 1, 3, OFF_JC);
	BYTES(e, 0x48, 0x3b, 0x02); /* cmp rax, [rdx] */
	out[0] = jump_fwd(e, 0x5);
	load(e, true, RCX, OFF_EPOCH);
	BYTES(e, 0x48, 0x3b, 0x4a, 0x08); /* cmp rcx, [rdx + 8] */
	out[1] = jump_fwd(e, 0x5);
	BYTES(e, 0x48, 0x8b, 0x52, 0x10); /* mov rdx, [rdx + 16] */
	BYTES(e, 0x48, 0x8b, 0x8a);       /* mov rcx, [rdx + block.jit_link] */
	b4(e, (uint32_t)offsetof(struct block, jit_link));
	BYTES(e, 0x48, 0x85, 0xc9); /* test rcx, rcx */
	out[2] = jump_fwd(e, 0x4);  /* jz */
}

/* The end of a block whose next RIP is in c->rip: straight on into that block's host code (its
 * linked entry) when the run loop would do nothing else between the two and the jump cache
 * knows the block; otherwise back to the run loop. */
static void chain(struct emit *e)
{
	load(e, true, RAX, OFF_RIP);
	uint8_t *out[4];
	out[3] = anything_due(e, true);
	jc_lookup(e, out);
	BYTES(e, 0xff, 0xe1); /* jmp rcx */
	for (unsigned i = 0; i < 4; i++)
		patch_here(e, out[i]);
	leave(e, 0);
}

/* The same for a direct branch (or the fall-through) to a target in the block's own first page
 * (RAX = the target, already in c->rip). Such a target is the block at a fixed guest-physical
 * address, and it lives exactly as long as this block (dropping that page drops both; a target
 * that reaches into a second page is never remembered), so the first lookup's answer is kept in
 * a slot and later exits jump through it. */
static void chain_near(struct emit *e)
{
	uint8_t *out[4];
	out[3] = anything_due(e, false);
	BYTES(e, 0xff, 0x25); /* jmp [rip + slot] */
	uint8_t *slot_ref = e->p;
	b4(e, 0);
	uint8_t *lookup = e->p;
	jc_lookup(e, out);
	BYTES(e, 0x83, 0xba); /* cmp dword [rdx + block.npages], 1 */
	b4(e, (uint32_t)offsetof(struct block, npages));
	b1(e, 1);
	BYTES(e, 0x75, 0x07);       /* jne over the store */
	BYTES(e, 0x48, 0x89, 0x0d); /* mov [rip + slot], rcx */
	uint8_t *slot_ref2 = e->p;
	b4(e, 0);
	BYTES(e, 0xff, 0xe1); /* jmp rcx */
	for (unsigned i = 0; i < 4; i++)
		patch_here(e, out[i]);
	leave(e, 0);
	while ((uintptr_t)e->p % 8)
		b1(e, 0xcc);
	uint8_t *slot = e->p;
	b8(e, (uint64_t)(uintptr_t)lookup);
	if (!e->full) {
		int32_t r1 = (int32_t)(slot - (slot_ref + 4)),
			r2 = (int32_t)(slot - (slot_ref2 + 4));
		memcpy(slot_ref, &r1, 4);
		memcpy(slot_ref2, &r2, 4);
	}
}

/* Leaves for the next RIP, frame + disp, known to be canonical. */
static void exit_to(struct emit *e, const struct block *b, int64_t disp)
{
	lea_r12(e, RAX, (int32_t)disp);
	store(e, true, RAX, OFF_RIP);
	if (disp == 0 && e->body) {
		/* A loop back to the block's own start: the run loop's bookkeeping for the next
		 * pass is to count it (and end the shadow of an sti). */
		uint8_t *out = anything_due(e, false);
		rbx_mem(e, true, 0x81, 0, OFF_ICOUNT); /* add qword [rbx + icount], n */
		b4(e, b->n);
		rbx_mem(e, false, 0xc6, 0, OFF_SHADOW); /* mov byte [rbx + intr_shadow], 0 */
		b1(e, 0);
		b1(e, 0xe9); /* jmp body */
		b4(e, (uint32_t)(int32_t)(e->body - (e->p + 4)));
		patch_here(e, out);
		leave(e, 0);
		return;
	}
	int64_t in_page = (int64_t)(b->gpa & 0xfff) + disp;
	if (in_page >= 0 && in_page < 0x1000)
		chain_near(e);
	else
		chain(e);
}

/* The instruction as the handler loop runs it: insn_start, RIP past it, the handler. */
static void call_handler(struct emit *e, const struct insn *in, int32_t off)
{
	/* What the run loop's unwind needs to find the instruction (soft_current_insn): only a
	 * handler can fault or exit, so only here. */
	BYTES(e, 0x48, 0xb9); /* mov rcx, imm64 */
	b8(e, (uint64_t)(uintptr_t)e->block);
	store(e, true, RCX, OFF_CURBLOCK);
	store(e, true, R12, OFF_CURVA);
	set_va(e, OFF_START, off);
	set_va(e, OFF_RIP, off + in->len);
	b1(e, 0x48);
	b1(e, 0x89);
	b1(e, 0xdf); /* mov rdi, rbx */
	b1(e, 0x48);
	b1(e, 0xbe); /* mov rsi, imm64 */
	b8(e, (uint64_t)(uintptr_t)in);
	b1(e, 0x48);
	b1(e, 0xb8); /* mov rax, imm64 */
	b8(e, (uint64_t)(uintptr_t)in->fn);
	b1(e, 0xff);
	b1(e, 0xd0);                 /* call rax */
	load(e, true, R13, OFF_TLB); /* the handler may have changed the privilege level */
}

/* After a handler: leave if it asked to (stop_block). */
static void stop_check(struct emit *e, unsigned not_run)
{
	rbx_mem(e, false, 0x80, 7, OFF_STOP); /* cmp byte [rbx + stop_block], 0 */
	b1(e, 0);
	b1(e, 0x74);
	b1(e, 11); /* je over the exit */
	leave(e, not_run);
}

/* ---- which instructions become host code ------------------------------------------------- */

enum form {
	F_CALL,   /* the handler */
	F_ALU_RR, /* add/sub/and/or/xor/cmp/test r, r */
	F_ALU_RI, /* ... r, imm */
	F_MOV_RR,
	F_MOV_RI,
	F_LEA,
	F_SHIFT, /* shl/shr/sar r, imm (count not 0) */
	F_ROT,   /* rol/ror r, imm (count not 0) */
	F_INCDEC,
	F_NOT,
	F_JCC,
	F_JMP,
	F_PUSH,    /* push r64 */
	F_POP,     /* pop r64 */
	F_CALLR,   /* call rel32 */
	F_RET,     /* ret (near, no immediate) */
	F_EXT,     /* movzx/movsx/movsxd r, r/m */
	F_LOAD,    /* mov r, [m] */
	F_STORE,   /* mov [m], r / imm */
	F_ALU_RM,  /* add/sub/and/or/xor/cmp r, [m] */
	F_ALU_MR,  /* add/sub/and/or/xor/cmp/test [m], r / imm */
	F_UNARY_M, /* inc/dec/not [m] */
	F_NOP,
	F_IMUL, /* imul r, r / imul r, r, imm (32/64-bit) */
};

/* A memory operand the host code can address: 64-bit addressing, registers at whole-register
 * offsets. */
static bool mem_ok(const struct insn *in)
{
	const struct mem_ref *m = &in->mem;
	return m->asize == 8 && fits32(m->disp) && (m->base == GPR_NONE || m->base % 8 == 0) &&
	       (m->index == GPR_NONE || m->index % 8 == 0);
}

/* A 32- or 64-bit general register operand. */
static bool gpr_op(const struct opnd *o)
{
	return o->kind == OPK_REG && (o->size == 4 || o->size == 8) && o->reg % 8 == 0 &&
	       o->reg < 16 * 8;
}

/* A general register operand of any size: byte registers include AH..BH (offset 1 into their
 * register). */
static bool sized_reg(const struct opnd *o)
{
	if (o->kind != OPK_REG || o->reg >= 16 * 8)
		return false;
	switch (o->size) {
	case 1:
		return o->reg % 8 <= 1;
	case 2:
	case 4:
	case 8:
		return o->reg % 8 == 0;
	default:
		return false;
	}
}

static bool is_jcc(unsigned m)
{
	switch (m) {
	case ZYDIS_MNEMONIC_JO:
	case ZYDIS_MNEMONIC_JNO:
	case ZYDIS_MNEMONIC_JB:
	case ZYDIS_MNEMONIC_JNB:
	case ZYDIS_MNEMONIC_JZ:
	case ZYDIS_MNEMONIC_JNZ:
	case ZYDIS_MNEMONIC_JBE:
	case ZYDIS_MNEMONIC_JNBE:
	case ZYDIS_MNEMONIC_JS:
	case ZYDIS_MNEMONIC_JNS:
	case ZYDIS_MNEMONIC_JP:
	case ZYDIS_MNEMONIC_JNP:
	case ZYDIS_MNEMONIC_JL:
	case ZYDIS_MNEMONIC_JNL:
	case ZYDIS_MNEMONIC_JLE:
	case ZYDIS_MNEMONIC_JNLE:
		return true;
	default:
		return false;
	}
}

/* The host opcode (r/m, reg form) of an ALU mnemonic; CMP and TEST compute as SUB and AND
 * (same flags) so the lazy result is at hand. 0: not one. */
static unsigned alu_opcode(unsigned m)
{
	switch (m) {
	case ZYDIS_MNEMONIC_ADD:
		return 0x01;
	case ZYDIS_MNEMONIC_OR:
		return 0x09;
	case ZYDIS_MNEMONIC_AND:
	case ZYDIS_MNEMONIC_TEST:
		return 0x21;
	case ZYDIS_MNEMONIC_SUB:
	case ZYDIS_MNEMONIC_CMP:
		return 0x29;
	case ZYDIS_MNEMONIC_XOR:
		return 0x31;
	default:
		return 0;
	}
}

/* The /digit of a shift or rotate by an immediate (C1 /n); -1: not one. */
static int shift_digit(unsigned m)
{
	switch (m) {
	case ZYDIS_MNEMONIC_ROL:
		return 0;
	case ZYDIS_MNEMONIC_ROR:
		return 1;
	case ZYDIS_MNEMONIC_SHL:
		return 4;
	case ZYDIS_MNEMONIC_SHR:
		return 5;
	case ZYDIS_MNEMONIC_SAR:
		return 7;
	default:
		return -1;
	}
}

/* movzx/movsx from a byte or word, movsxd from a dword, into a 32/64-bit register. */
static bool ext_ok(const struct insn *in)
{
	unsigned ss = in->op[1].size, ds = in->op[0].size;
	if (in->nops != 2 || !gpr_op(&in->op[0]))
		return false;
	if (in->mnemonic == ZYDIS_MNEMONIC_MOVSXD)
		return ss == 4 && ds == 8;
	return ss == 1 || ss == 2;
}

/* Forms with a memory operand (the other operand a 32/64-bit register or an immediate). */
static enum form mem_form_of(const struct insn *in)
{
	const struct opnd *o0 = &in->op[0], *o1 = &in->op[1];
	unsigned m = in->mnemonic;
	if (!mem_ok(in) || (o0->size != 1 && o0->size != 2 && o0->size != 4 && o0->size != 8))
		return F_CALL;
	if (in->nops == 1 && o0->kind == OPK_MEM &&
	    (m == ZYDIS_MNEMONIC_INC || m == ZYDIS_MNEMONIC_DEC || m == ZYDIS_MNEMONIC_NOT))
		return F_UNARY_M;
	if (in->nops != 2)
		return F_CALL;
	bool src_ok = (sized_reg(o1) && o1->size == o0->size) ||
		      (o1->kind == OPK_IMM && (o0->size != 8 || fits32((int64_t)in->imm)));
	if (o0->kind == OPK_MEM) {
		if (!src_ok)
			return F_CALL;
		if (m == ZYDIS_MNEMONIC_MOV)
			return F_STORE;
		return alu_opcode(m) ? F_ALU_MR : F_CALL;
	}
	if (!sized_reg(o0) || o1->kind != OPK_MEM || o1->size != o0->size)
		return F_CALL;
	if (m == ZYDIS_MNEMONIC_MOV)
		return F_LOAD;
	return alu_opcode(m) && m != ZYDIS_MNEMONIC_TEST ? F_ALU_RM : F_CALL;
}

static enum form form_of(const struct insn *in)
{
	const struct opnd *o0 = &in->op[0], *o1 = &in->op[1];
	if (in->prefix & (PFX_LOCK | PFX_REP | PFX_REPNE))
		return F_CALL;
	if (in->mnemonic == ZYDIS_MNEMONIC_NOP)
		return F_NOP; /* also the long forms: their memory operand is not accessed */
	if ((o0->kind == OPK_MEM || o1->kind == OPK_MEM) && in->mnemonic != ZYDIS_MNEMONIC_LEA) {
		if (in->mnemonic == ZYDIS_MNEMONIC_MOVZX || in->mnemonic == ZYDIS_MNEMONIC_MOVSX ||
		    in->mnemonic == ZYDIS_MNEMONIC_MOVSXD)
			return ext_ok(in) && mem_ok(in) ? F_EXT : F_CALL;
		return mem_form_of(in);
	}
	unsigned m = in->mnemonic;
	if (is_jcc(m))
		return in->osize == 8 && o0->kind == OPK_IMM ? F_JCC : F_CALL;
	if (m == ZYDIS_MNEMONIC_JMP)
		return in->osize == 8 && o0->kind == OPK_IMM && o0->size != in->osize + 2 ? F_JMP
											  : F_CALL;
	if (m == ZYDIS_MNEMONIC_CALL)
		return in->osize == 8 && o0->kind == OPK_IMM && o0->size != in->osize + 2 ? F_CALLR
											  : F_CALL;
	if (m == ZYDIS_MNEMONIC_RET) /* near: 64-bit operand size without REX.W (as sel_ret) */
		return in->osize == 8 && !(in->prefix & PFX_REX_W) && in->nops == 0 ? F_RET
										    : F_CALL;
	if ((m == ZYDIS_MNEMONIC_PUSH || m == ZYDIS_MNEMONIC_POP) && in->osize == 8 && gpr_op(o0) &&
	    o0->size == 8)
		return m == ZYDIS_MNEMONIC_PUSH ? F_PUSH : F_POP;
	if (sized_reg(o0) && in->nops == 2 && (m == ZYDIS_MNEMONIC_MOV || alu_opcode(m))) {
		/* mov and the ALU operations at every size */
		if (sized_reg(o1) && o1->size == o0->size)
			return m == ZYDIS_MNEMONIC_MOV ? F_MOV_RR : F_ALU_RR;
		if (o1->kind != OPK_IMM || o1->size > o0->size)
			return F_CALL;
		if (m == ZYDIS_MNEMONIC_MOV)
			return F_MOV_RI;
		return o0->size != 8 || fits32((int64_t)in->imm) ? F_ALU_RI : F_CALL;
	}
	if (!gpr_op(o0))
		return F_CALL;
	switch (m) {
	case ZYDIS_MNEMONIC_IMUL:
		if (in->nops == 2 && gpr_op(o1) && o1->size == o0->size)
			return F_IMUL;
		return in->nops == 3 && gpr_op(o1) && o1->size == o0->size &&
			       in->op[2].kind == OPK_IMM && fits32((int64_t)in->imm)
			   ? F_IMUL
			   : F_CALL;
	case ZYDIS_MNEMONIC_LEA:
		return in->nops == 2 && o1->kind == OPK_MEM && in->mem.asize == 8 &&
			       fits32(in->mem.disp) &&
			       (in->mem.base == GPR_NONE || in->mem.base % 8 == 0) &&
			       (in->mem.index == GPR_NONE || in->mem.index % 8 == 0)
			   ? F_LEA
			   : F_CALL;
	case ZYDIS_MNEMONIC_INC:
	case ZYDIS_MNEMONIC_DEC:
		return in->nops == 1 ? F_INCDEC : F_CALL;
	case ZYDIS_MNEMONIC_NOT:
		return in->nops == 1 ? F_NOT : F_CALL;
	case ZYDIS_MNEMONIC_MOVZX:
	case ZYDIS_MNEMONIC_MOVSX:
	case ZYDIS_MNEMONIC_MOVSXD:
		return o1->kind == OPK_REG && ext_ok(in) ? F_EXT : F_CALL;
	default:
		break;
	}
	int d = shift_digit(m);
	if (d >= 0 && in->nops == 2 && o1->kind == OPK_IMM &&
	    (in->imm & (o0->size == 8 ? 63u : 31u)) != 0)
		return d <= 1 ? F_ROT : F_SHIFT;
	return F_CALL;
}

/* ---- the instruction templates ----------------------------------------------------------- */

/* Sized moves between a host register (RAX, RCX or RDX) and memory at [base + disp]: base RBX
 * (a guest register, disp its offset) or the host pointer in RAX or RSI (disp 0). A load
 * zero-extends into the whole host register; a store of 4 bytes stores 8 when base is RBX
 * (a 32-bit register write zero-extends; the host register's upper half is zero then). */
static void sized_modrm(struct emit *e, unsigned reg, unsigned base, int32_t disp)
{
	if (base == RBX) {
		b1(e, 0x80u | (reg << 3) | RBX);
		b4(e, (uint32_t)disp);
	} else {
		b1(e, (reg << 3) | base);
	}
}

static void load_sz(struct emit *e, unsigned size, unsigned reg, unsigned base, int32_t disp)
{
	if (size <= 2)
		BYTES(e, 0x0f, size == 1 ? 0xb6 : 0xb7); /* movzx r32, byte/word */
	else
		BYTES(e, size == 8 ? 0x48 : 0x40, 0x8b); /* mov r32/r64 (REX 0x40: harmless) */
	sized_modrm(e, reg, base, disp);
}

static void store_sz(struct emit *e, unsigned size, unsigned reg, unsigned base, int32_t disp)
{
	if (size == 1)
		b1(e, 0x88);
	else if (size == 2)
		BYTES(e, 0x66, 0x89);
	else
		BYTES(e, size == 8 || base == RBX ? 0x48 : 0x40, 0x89);
	sized_modrm(e, reg, base, disp);
}

/* The immediate of op[1] at the operand size, into ECX/RCX (sign-extended for 64 bits). */
static void imm_to_rcx(struct emit *e, const struct insn *in, unsigned size)
{
	if (size == 8) {
		BYTES(e, 0x48, 0xc7, 0xc1); /* mov rcx, simm32 */
		b4(e, (uint32_t)in->imm);
	} else {
		b1(e, 0xb9); /* mov ecx, imm32 */
		b4(e, (uint32_t)(in->imm & size_mask(size)));
	}
}

/* The second operand of an ALU operation into RCX: register op[1] or the immediate. */
static void alu_src(struct emit *e, const struct insn *in, unsigned size)
{
	if (in->op[1].kind != OPK_IMM)
		load_sz(e, size, RCX, RBX, (int32_t)in->op[1].reg);
	else
		imm_to_rcx(e, in, size);
}

static bool alu_writes(unsigned m)
{
	return m != ZYDIS_MNEMONIC_CMP && m != ZYDIS_MNEMONIC_TEST;
}

static bool alu_arith(unsigned m)
{
	return m == ZYDIS_MNEMONIC_ADD || m == ZYDIS_MNEMONIC_SUB || m == ZYDIS_MNEMONIC_CMP;
}

/* RAX op= RCX at the operand size (RAX, RCX: the operands, zero-extended), leaving the host
 * flags as the guest's and, when live, the lazy record; RDX is clobbered. The result in RAX is
 * zero-extended too (a byte or word operation leaves the zero upper bits alone). The caller
 * stores it. */
static void alu_core(struct emit *e, unsigned m, unsigned size, bool live)
{
	bool arith = alu_arith(m);
	if (live && arith)
		BYTES(e, 0x48, 0x89, 0xc2); /* mov rdx, rax */
	if (size == 2)
		b1(e, 0x66);
	rex(e, size == 8, RCX, RAX);
	b1(e, alu_opcode(m) - (size == 1)); /* the r/m8 forms are one below */
	b1(e, 0xc8);                        /* op al/ax/eax/rax, cl/cx/ecx/rcx */
	if (live) {
		/* Stores only from here on: the host flags stay. */
		unsigned op = m == ZYDIS_MNEMONIC_ADD ? LF_ADD : arith ? LF_SUB : LF_LOGIC;
		store_imm32(e, OFF_LF_OP, op + size_index(size));
		store(e, true, RAX, OFF_LF_RES);
		if (arith) {
			store(e, true, RDX, OFF_LF_S1);
			store(e, true, RCX, OFF_LF_S2);
		}
	}
}

static void t_alu(struct emit *e, const struct insn *in, bool live)
{
	unsigned d = in->op[0].reg, size = in->op[0].size;
	load_sz(e, size, RAX, RBX, (int32_t)d);
	alu_src(e, in, size);
	alu_core(e, in->mnemonic, size, live);
	if (alu_writes(in->mnemonic))
		store_sz(e, size, RAX, RBX, (int32_t)d);
}

/* The guest-virtual address of the memory operand into RAX (as insn_addr computes it). */
static bool ea_to_rax(struct emit *e, const struct insn *in, int32_t off)
{
	const struct mem_ref *m = &in->mem;
	if (m->rip_rel) {
		int64_t disp = (int64_t)off + in->len + m->disp;
		if (!fits32(disp) || m->base != GPR_NONE || m->index != GPR_NONE)
			return false;
		lea_r12(e, RAX, (int32_t)disp);
	} else {
		bool base = m->base != GPR_NONE, index = m->index != GPR_NONE;
		if (base)
			load(e, true, RAX, (int32_t)m->base);
		if (index)
			load(e, true, RCX, (int32_t)m->index);
		b1(e, 0x48);
		if (base && index) {
			b1(e, 0x8d);
			b1(e, 0x84); /* lea rax, [rax + rcx*s + disp32] */
			b1(e, (m->scale << 6) | (RCX << 3) | RAX);
		} else if (base) {
			b1(e, 0x8d);
			b1(e, 0x80); /* lea rax, [rax + disp32] */
		} else if (index) {
			b1(e, 0x8d);
			b1(e, 0x04); /* lea rax, [rcx*s + disp32] */
			b1(e, (m->scale << 6) | (RCX << 3) | 5);
		} else {
			b1(e, 0xc7);
			b1(e, 0xc0); /* mov rax, simm32 */
		}
		b4(e, (uint32_t)m->disp);
	}
	if (m->seg == SEG_FS || m->seg == SEG_GS)
		rbx_mem(e, true, 0x03, RAX, OFF_SEGB(m->seg)); /* add rax, [seg.base] */
	return true;
}

/* The soft TLB's fast path, as soft_mem has it: the entry of RAX's page must carry the tag of
 * the access's last byte's page (so a page-crossing access misses too); then RAX becomes the
 * host pointer. Returns the jne to patch to the slow path. Clobbers RCX, RDX, RSI. */
static uint8_t *probe(struct emit *e, unsigned size, bool write)
{
	table_entry(e, 12, TLB_SIZE - 1, 5, TABLE_R13);
	BYTES(e, 0x48, 0x8d, 0x48, size - 1);               /* lea rcx, [rax + size - 1] */
	BYTES(e, 0x48, 0x81, 0xe1, 0x00, 0xf0, 0xff, 0xff); /* and rcx, -4096 */
	BYTES(e, 0x48, 0x3b, 0x4a, write ? 8 : 0);          /* cmp rcx, [rdx + tag] */
	uint8_t *slow = jump_fwd(e, 0x5);                   /* jne */
	b1(e, 0x48);
	b1(e, 0x03);
	b1(e, 0x42);
	b1(e, 24); /* add rax, [rdx + addend] */
	return slow;
}

/* The memory forms' fast paths (RAX = the host pointer after probe). */
static void t_mem_fast(struct emit *e, const struct insn *in, enum form f, bool live)
{
	unsigned m = in->mnemonic, size = in->op[0].size;
	switch (f) {
	case F_LOAD:
		load_sz(e, size, RAX, RAX, 0);
		store_sz(e, size, RAX, RBX, (int32_t)in->op[0].reg);
		break;
	case F_STORE:
		if (in->op[1].kind == OPK_IMM)
			imm_to_rcx(e, in, size);
		else
			load_sz(e, size, RCX, RBX, (int32_t)in->op[1].reg);
		store_sz(e, size, RCX, RAX, 0);
		break;
	case F_ALU_RM:
		load_sz(e, size, RCX, RAX, 0); /* the second operand */
		load_sz(e, size, RAX, RBX, (int32_t)in->op[0].reg);
		alu_core(e, m, size, live);
		if (alu_writes(m))
			store_sz(e, size, RAX, RBX, (int32_t)in->op[0].reg);
		break;
	case F_UNARY_M: {
		/* inc/dec (nothing reads their flags) or not, on [rax] */
		if (size == 2)
			b1(e, 0x66);
		rex(e, size == 8, 0, RAX);
		b1(e, m == ZYDIS_MNEMONIC_NOT ? 0xf6u + (size > 1) : 0xfeu + (size > 1));
		b1(e, m == ZYDIS_MNEMONIC_NOT ? 0x10u : m == ZYDIS_MNEMONIC_DEC ? 0x08u : 0x00u);
		break;
	}
	default:                            /* F_ALU_MR */
		BYTES(e, 0x48, 0x89, 0xc6); /* mov rsi, rax */
		alu_src(e, in, size);
		load_sz(e, size, RAX, RSI, 0);
		alu_core(e, m, size, live);
		if (alu_writes(m))
			store_sz(e, size, RAX, RSI, 0);
		break;
	}
}

/* movzx/movsx/movsxd from a register (any byte register: its byte offset) or from memory at
 * RAX (the host pointer). */
static void t_ext(struct emit *e, const struct insn *in, bool from_mem)
{
	unsigned m = in->mnemonic, ss = in->op[1].size;
	bool w = in->op[0].size == 8 && m != ZYDIS_MNEMONIC_MOVZX;
	rex(e, w, RAX, from_mem ? RAX : RBX);
	if (ss == 4) {
		b1(e, 0x63); /* movsxd rax, dword */
	} else {
		b1(e, 0x0f);
		b1(e, (m == ZYDIS_MNEMONIC_MOVZX ? 0xb6u : 0xbeu) + (ss == 2));
	}
	if (from_mem) {
		b1(e, 0x00); /* [rax] */
	} else {
		b1(e, 0x80u | RBX); /* [rbx + disp32] */
		b4(e, (uint32_t)in->op[1].reg);
	}
	store(e, true, RAX, (int32_t)in->op[0].reg);
}

static void t_mov(struct emit *e, const struct insn *in, bool imm)
{
	unsigned size = in->op[0].size;
	if (!imm) {
		load_sz(e, size, RAX, RBX, (int32_t)in->op[1].reg);
	} else if (size == 8) {
		BYTES(e, 0x48, 0xb8); /* mov rax, imm64 */
		b8(e, in->imm);
	} else {
		b1(e, 0xb8); /* mov eax, imm32 */
		b4(e, (uint32_t)(in->imm & size_mask(size)));
	}
	store_sz(e, size, RAX, RBX, (int32_t)in->op[0].reg);
}

static bool t_lea(struct emit *e, const struct insn *in, int32_t off)
{
	struct insn plain = *in;
	plain.mem.seg = SEG_DS; /* lea computes the offset: no segment base */
	if (!ea_to_rax(e, &plain, off))
		return false;
	if (in->op[0].size == 4) {
		b1(e, 0x89);
		b1(e, 0xc0); /* mov eax, eax */
	}
	store(e, true, RAX, (int32_t)in->op[0].reg);
	return true;
}

/* Shifts, rotates, inc/dec and not on a register, flags not recorded (nothing reads them). */
static void t_unary(struct emit *e, const struct insn *in, unsigned opcode, unsigned digit,
		    int count)
{
	bool w = in->op[0].size == 8;
	load(e, w, RAX, (int32_t)in->op[0].reg);
	rex(e, w, 0, RAX);
	b1(e, opcode);
	b1(e, 0xc0u | (digit << 3));
	if (count >= 0)
		b1(e, (unsigned)count);
	store(e, true, RAX, (int32_t)in->op[0].reg);
}

/* RAX non-canonical: jne (returned) to patch. */
static uint8_t *canonical_check(struct emit *e)
{
	BYTES(e, 0x48, 0x89, 0xc1);       /* mov rcx, rax */
	BYTES(e, 0x48, 0xc1, 0xe1, 0x10); /* shl rcx, 16 */
	BYTES(e, 0x48, 0xc1, 0xf9, 0x10); /* sar rcx, 16 */
	BYTES(e, 0x48, 0x39, 0xc1);       /* cmp rcx, rax */
	return jump_fwd(e, 0x5);          /* jne */
}

/* shl/shr/sar r, imm (count not 0): the host's flags are the guest's after it; when they are
 * live, the lazy record is the handlers' (the value before, the count). */
static void t_shift(struct emit *e, const struct insn *in, bool live)
{
	unsigned size = in->op[0].size, m = in->mnemonic;
	unsigned n = (unsigned)in->imm & (size == 8 ? 63u : 31u);
	load_sz(e, size, RAX, RBX, (int32_t)in->op[0].reg);
	if (live)
		BYTES(e, 0x48, 0x89, 0xc2); /* mov rdx, rax */
	rex(e, size == 8, 0, RAX);
	BYTES(e, 0xc1, 0xc0u | ((unsigned)shift_digit(m) << 3), n);
	store_sz(e, size, RAX, RBX, (int32_t)in->op[0].reg);
	if (live) {
		unsigned op = m == ZYDIS_MNEMONIC_SHL   ? LF_SHL
			      : m == ZYDIS_MNEMONIC_SHR ? LF_SHR
							: LF_SAR;
		store_imm32(e, OFF_LF_OP, op + size_index(size));
		store(e, true, RAX, OFF_LF_RES);
		store(e, true, RDX, OFF_LF_S1);
		rbx_mem(e, true, 0xc7, 0, OFF_LF_S2); /* mov qword [rbx + lf.src2], n */
		b4(e, n);
	}
}

/* CF for an inc/dec to keep, from whatever set the flags last (the lazy record's src3). */
static void jit_carry_in(struct soft_cpu *c)
{
	c->lf.src3 = soft_cond(c, 2);
}

/* Conditions that read CF: B, AE, BE, A. */
static bool cc_reads_cf(unsigned cc)
{
	cc &= 15;
	return cc == 2 || cc == 3 || cc == 6 || cc == 7;
}

/* inc/dec r: when its flags are live, the lazy record of exec_alu.c: the result and the CF it
 * keeps (already in src3 when the last record is an inc/dec's, else found now). */
static void t_incdec(struct emit *e, const struct insn *in, bool live)
{
	unsigned size = in->op[0].size;
	bool dec = in->mnemonic == ZYDIS_MNEMONIC_DEC;
	if (live) {
		/* The kept CF: already in src3 after an inc/dec, 0 after a logic operation (and
		 * a product that fit), bit 0 of rflags when the flags are materialized; anything
		 * else asks flags.c. */
		uint8_t *keep[4];
		load(e, false, RCX, OFF_LF_OP);
		BYTES(e, 0x83, 0xe1, 0xfc);   /* and ecx, ~3 */
		BYTES(e, 0x83, 0xf9, LF_INC); /* cmp ecx, LF_INC */
		keep[0] = jump_fwd(e, 0x4);   /* je */
		BYTES(e, 0x83, 0xf9, LF_DEC);
		keep[1] = jump_fwd(e, 0x4);
		BYTES(e, 0x83, 0xf9, LF_LOGIC);
		uint8_t *not_logic = jump_fwd(e, 0x5); /* jne */
		rbx_mem(e, true, 0xc7, 0, OFF_LF_S3);  /* mov qword [rbx + lf.src3], 0 */
		b4(e, 0);
		keep[2] = jump_fwd(e, -1);
		patch_here(e, not_logic);
		BYTES(e, 0x85, 0xc9);             /* test ecx, ecx (LF_NONE) */
		uint8_t *lazy = jump_fwd(e, 0x5); /* jnz */
		load(e, false, RCX, OFF_RFLAGS);
		BYTES(e, 0x83, 0xe1, 0x01); /* and ecx, 1 */
		store(e, true, RCX, OFF_LF_S3);
		keep[3] = jump_fwd(e, -1);
		patch_here(e, lazy);
		BYTES(e, 0x48, 0x89, 0xdf); /* mov rdi, rbx */
		BYTES(e, 0x48, 0xb8);       /* mov rax, imm64 */
		b8(e, (uint64_t)(uintptr_t)jit_carry_in);
		BYTES(e, 0xff, 0xd0); /* call rax */
		for (unsigned k = 0; k < 4; k++)
			patch_here(e, keep[k]);
	}
	load_sz(e, size, RAX, RBX, (int32_t)in->op[0].reg);
	rex(e, size == 8, 0, RAX);
	BYTES(e, 0xff, dec ? 0xc8 : 0xc0); /* inc/dec eax/rax */
	store_sz(e, size, RAX, RBX, (int32_t)in->op[0].reg);
	if (live) {
		store_imm32(e, OFF_LF_OP, (dec ? LF_DEC : LF_INC) + size_index(size));
		store(e, true, RAX, OFF_LF_RES);
	}
}

/* A product that overflowed: CF and OF set, SF/ZF/PF from the low half (exec_muldiv.c's rule
 * for the flags the SDM leaves undefined), AF clear. */
static void jit_mul_overflow(struct soft_cpu *c, uint64_t low, unsigned size)
{
	uint64_t f = FL_CF | FL_OF;
	if (parity8(low))
		f |= FL_PF;
	if ((low & size_mask(size)) == 0)
		f |= FL_ZF;
	if ((low >> (size * 8 - 1)) & 1)
		f |= FL_SF;
	soft_set_flags(c, f, FL_ARITH);
}

/* imul r, r and imul r, r, imm: the lazy record of exec_muldiv.c (a logic result when the
 * product fits, the flags set outright when it does not). */
static void t_imul(struct emit *e, const struct insn *in, bool live)
{
	unsigned size = in->op[0].size;
	bool w = size == 8;
	load_sz(e, size, RCX, RBX, (int32_t)in->op[1].reg);
	if (in->nops == 3) {
		rex(e, w, RAX, RCX);
		BYTES(e, 0x69, 0xc1); /* imul eax/rax, ecx/rcx, imm32 */
		b4(e, (uint32_t)in->imm);
	} else {
		load_sz(e, size, RAX, RBX, (int32_t)in->op[0].reg);
		rex(e, w, RAX, RCX);
		BYTES(e, 0x0f, 0xaf, 0xc1); /* imul eax/rax, ecx/rcx */
	}
	store_sz(e, size, RAX, RBX, (int32_t)in->op[0].reg);
	if (!live)
		return;
	uint8_t *ovf = jump_fwd(e, 0x0); /* jo */
	store_imm32(e, OFF_LF_OP, LF_LOGIC + size_index(size));
	store(e, true, RAX, OFF_LF_RES);
	store(e, true, RAX, OFF_LF_S1);
	rbx_mem(e, true, 0xc7, 0, OFF_LF_S2); /* mov qword [rbx + lf.src2], 0 */
	b4(e, 0);
	uint8_t *done = jump_fwd(e, -1);
	patch_here(e, ovf);
	BYTES(e, 0x48, 0x89, 0xdf); /* mov rdi, rbx */
	BYTES(e, 0x48, 0x89, 0xc6); /* mov rsi, rax */
	b1(e, 0xba);                /* mov edx, size */
	b4(e, size);
	BYTES(e, 0x48, 0xb8); /* mov rax, imm64 */
	b8(e, (uint64_t)(uintptr_t)jit_mul_overflow);
	BYTES(e, 0xff, 0xd0); /* call rax */
	patch_here(e, done);
}

/* A branch to this block's frame + disp: RIP, unless the target is not canonical (the handler
 * then raises the fault). */
static void branch_to(struct emit *e, const struct block *b, const struct insn *in, int32_t off,
		      int64_t disp)
{
	int64_t in_page = (int64_t)(b->gpa & 0xfff) + disp;
	if (in_page >= 0 && in_page < 0x1000) {
		exit_to(e, b, disp); /* in the page the block starts in: canonical */
		return;
	}
	lea_r12(e, RAX, (int32_t)disp);
	uint8_t *bad = canonical_check(e);
	store(e, true, RAX, OFF_RIP);
	chain(e);
	patch_here(e, bad);
	call_handler(e, in, off);
	leave(e, 0);
}

#define OFF_RSP ((int32_t)(GPR_RSP * 8))

/* RSP (less 8 for a push) into RAX, then the TLB probe of its 8 bytes. */
static uint8_t *stack_probe(struct emit *e, bool push)
{
	load(e, true, RAX, OFF_RSP);
	if (push)
		BYTES(e, 0x48, 0x83, 0xe8, 0x08); /* sub rax, 8 */
	return probe(e, 8, push);
}

/* add qword [rbx + rsp], imm8 (the host flags are not needed after a stack operation). */
static void rsp_add(struct emit *e, int8_t v)
{
	rbx_mem(e, true, 0x83, 0, OFF_RSP);
	b1(e, (uint8_t)v);
}

/* push r64 / pop r64 on the fast path (the slow one is the handler); push rsp pushes the value
 * before the push, pop rsp leaves the popped value. */
static uint8_t *t_push_pop(struct emit *e, const struct insn *in, bool push)
{
	uint8_t *slow = stack_probe(e, push);
	if (push) {
		load(e, true, RCX, (int32_t)in->op[0].reg);
		BYTES(e, 0x48, 0x89, 0x08); /* mov [rax], rcx */
		rsp_add(e, -8);
	} else {
		BYTES(e, 0x48, 0x8b, 0x08); /* mov rcx, [rax] */
		rsp_add(e, 8);
		store(e, true, RCX, (int32_t)in->op[0].reg);
	}
	return slow;
}

/* call rel32 and ret, the block's last instruction: the target is checked before anything
 * changes; a TLB miss or a bad target is the handler's (which does the whole instruction). */
static void t_call_ret(struct emit *e, const struct block *b, const struct insn *in, int32_t off,
		       bool call)
{
	uint8_t *slow[2];
	if (call) {
		int64_t target = (int64_t)off + in->len + (int64_t)in->imm;
		lea_r12(e, RAX, (int32_t)target);
		slow[0] = canonical_check(e);
		slow[1] = stack_probe(e, true);
		lea_r12(e, RCX, off + in->len);
		BYTES(e, 0x48, 0x89, 0x08); /* mov [rax], rcx: the return address */
		rsp_add(e, -8);
		exit_to(e, b, target);
	} else {
		slow[0] = stack_probe(e, false);
		BYTES(e, 0x48, 0x8b, 0x00); /* mov rax, [rax] */
		slow[1] = canonical_check(e);
		rsp_add(e, 8);
		store(e, true, RAX, OFF_RIP);
		chain(e);
	}
	for (unsigned k = 0; k < 2; k++)
		patch_here(e, slow[k]);
	call_handler(e, in, off);
	chain(e);
}

/* ---- blocks ---------------------------------------------------------------------------------- */

jit_fn soft_jit_translate(struct soft_jit *j, struct block *b)
{
	if (b->mode != SOFT_MODE_64 || b->n == 0 || b->n > BLOCK_MAX)
		return NULL;
	enum form f[BLOCK_MAX];
	bool live[BLOCK_MAX]; /* the flags after instruction i may be read */
	for (unsigned i = 0; i < b->n; i++)
		f[i] = form_of(&b->insns[i]);
	bool l = true; /* after the block: anything may read them */
	for (unsigned i = b->n; i-- > 0;) {
		live[i] = l;
		switch (f[i]) {
		case F_ALU_RR:
		case F_ALU_RI:
		case F_SHIFT:
		case F_IMUL:
			l = false; /* all six written, none read, no fault */
			break;
		case F_MOV_RR:
		case F_MOV_RI:
		case F_LEA:
		case F_NOT:
		case F_NOP:
			break;
		case F_EXT: /* from memory it may fault */
			if (b->insns[i].op[1].kind == OPK_MEM)
				l = true;
			break;
		case F_ROT:
			/* Host code only when nothing reads the flags after it (then neither
			 * before); otherwise the handler, which reads some. */
			if (l)
				f[i] = F_CALL;
			break;
		case F_INCDEC:
			break;  /* reads CF (to keep it) exactly when its own flags are live */
		case F_UNARY_M: /* likewise; and it may fault */
			if (l && b->insns[i].mnemonic != ZYDIS_MNEMONIC_NOT)
				f[i] = F_CALL;
			l = true;
			break;
		default:
			l = true;
			break;
		}
		if (f[i] == F_CALL || f[i] == F_JCC || f[i] == F_JMP)
			l = true;
	}

	struct emit e = {.p = j->base + j->used, .end = j->base + j->size, .block = b};
	uint8_t *start = e.p;
	/* The entry from the run loop (which did the block's bookkeeping). */
	BYTES(&e, 0x53, 0x41, 0x54, 0x41, 0x55); /* push rbx; push r12; push r13 (alignment) */
	BYTES(&e, 0x48, 0x89, 0xfb);             /* mov rbx, rdi */
	load(&e, true, R12, OFF_RIP);
	load(&e, true, R13, OFF_TLB);
	uint8_t *to_body = jump_fwd(&e, -1);
	/* The linked entry, from another block's exit (RAX = RIP = this block's address): the
	 * run loop's bookkeeping for a block, with this block's constants. */
	uint8_t *link = e.p;
	rbx_mem(&e, true, 0x81, 0, OFF_ICOUNT); /* add qword [rbx + icount], n */
	b4(&e, b->n);
	/* cur_end stays NULL (the whole block) and stop_block clear (no chaining otherwise);
	 * cur_block is set where a handler is called. */
	rbx_mem(&e, false, 0xc6, 0, OFF_SHADOW); /* mov byte [rbx + intr_shadow], 0 */
	b1(&e, 0);
	BYTES(&e, 0x49, 0x89, 0xc4); /* mov r12, rax */
	patch_here(&e, to_body);
	e.body = e.p;

	int32_t off = 0;
	bool host_flags = false; /* the host's flags are the guest's (the last one was an ALU op) */
	bool host_nocf = false;  /* ... except CF (it was inc/dec) */
	uint8_t *slow_join = NULL; /* the last memory access's slow path: joins the next one */
	bool ended = false;
	uint8_t *at[BLOCK_MAX + 1]; /* where each instruction's host code starts */
	unsigned emitted = 0;
	for (unsigned i = 0; i < b->n && !ended; off += b->insns[i].len, i++) {
		const struct insn *in = &b->insns[i];
		at[i] = e.p;
		emitted = i + 1;
		bool last = i + 1 == b->n;
		/* The host's flags serve a jcc right after the operation that set them; after
		 * inc/dec, whose host CF is not the guest's, only for conditions without CF. */
		bool flags_now =
		    host_flags && (f[i] != F_JCC || !host_nocf || !cc_reads_cf(in->cc));
		host_flags = false;
		host_nocf = false;
		if (f[i] != F_JCC || !flags_now) {
			patch_here(&e, slow_join);
			slow_join = NULL;
		}
		switch (f[i]) {
		case F_ALU_RR:
		case F_ALU_RI:
			t_alu(&e, in, live[i]);
			host_flags = true;
			break;
		case F_MOV_RR:
		case F_MOV_RI:
			t_mov(&e, in, f[i] == F_MOV_RI);
			break;
		case F_LEA:
			if (!t_lea(&e, in, off))
				goto handler;
			break;
		case F_SHIFT:
			t_shift(&e, in, live[i]);
			host_flags = true;
			break;
		case F_ROT: {
			unsigned mask = in->op[0].size == 8 ? 63u : 31u;
			t_unary(&e, in, 0xc1, (unsigned)shift_digit(in->mnemonic),
				(int)(in->imm & mask));
			break;
		}
		case F_NOP:
			break;
		case F_IMUL:
			t_imul(&e, in, live[i]);
			break;
		case F_INCDEC:
			t_incdec(&e, in, live[i]);
			host_flags = host_nocf = true;
			break;
		case F_NOT:
			t_unary(&e, in, 0xf7, 2, -1);
			break;
		case F_EXT:
			if (in->op[1].kind != OPK_MEM) {
				t_ext(&e, in, false);
				break;
			}
			/* fall through */
		case F_LOAD:
		case F_STORE:
		case F_ALU_RM:
		case F_ALU_MR:
		case F_UNARY_M: {
			/* The fast path when the TLB has the page; otherwise the handler (which
			 * fills the TLB, splits, reaches MMIO or faults). */
			if (!ea_to_rax(&e, in, off))
				goto handler;
			unsigned size =
			    in->op[f[i] == F_LOAD || f[i] == F_ALU_RM || f[i] == F_EXT].size;
			bool write = f[i] == F_STORE || f[i] == F_UNARY_M ||
				     (f[i] == F_ALU_MR && alu_writes(in->mnemonic));
			uint8_t *slow = probe(&e, size, write);
			if (f[i] == F_EXT)
				t_ext(&e, in, true);
			else
				t_mem_fast(&e, in, f[i], live[i]);
			host_flags = f[i] == F_ALU_RM || f[i] == F_ALU_MR;
			uint8_t *over = jump_fwd(&e, -1);
			patch_here(&e, slow);
			call_handler(&e, in, off);
			stop_check(&e, b->n - (i + 1));
			/* The slow path joins where the next instruction says: its host code,
			 * or, for a jcc that would test the host's flags, its handler. */
			slow_join = jump_fwd(&e, -1);
			patch_here(&e, over);
			break;
		}
		case F_PUSH:
		case F_POP: {
			uint8_t *slow = t_push_pop(&e, in, f[i] == F_PUSH);
			uint8_t *over = jump_fwd(&e, -1);
			patch_here(&e, slow);
			call_handler(&e, in, off);
			stop_check(&e, b->n - (i + 1));
			patch_here(&e, over);
			break;
		}
		case F_CALLR:
		case F_RET:
			if (!last ||
			    (f[i] == F_CALLR && !fits32((int64_t)off + in->len + (int64_t)in->imm)))
				goto handler;
			t_call_ret(&e, b, in, off, f[i] == F_CALLR);
			ended = true;
			break;
		case F_JCC:
		case F_JMP: {
			int64_t target = (int64_t)off + in->len + (int64_t)in->imm;
			if (!last || !fits32(target) || (f[i] == F_JCC && !flags_now)) {
				patch_here(&e, slow_join);
				slow_join = NULL;
				goto handler;
			}
			if (f[i] == F_JCC) {
				uint8_t *taken = jump_fwd(&e, in->cc & 15);
				exit_to(&e, b, off + in->len);
				patch_here(&e, taken);
				branch_to(&e, b, in, off, target);
				if (slow_join) {
					/* The operation before went the slow way: the host's flags
					 * are not the guest's, the handler decides. */
					patch_here(&e, slow_join);
					slow_join = NULL;
					call_handler(&e, in, off);
					chain(&e);
				}
			} else {
				branch_to(&e, b, in, off, target);
			}
			ended = true;
			break;
		}
		default:
		handler:
			call_handler(&e, in, off);
			if (last) {
				chain(&e);
				ended = true;
			} else {
				stop_check(&e, b->n - (i + 1));
			}
			break;
		}
		if (last && !ended) {
			patch_here(&e, slow_join);
			slow_join = NULL;
			exit_to(&e, b, off + in->len);
			ended = true;
		}
	}
	if (e.full)
		return NULL;
	b->jit_link = link;
	at[emitted] = e.p;
	if (j->perf_map) {
		static const char *const names[] = {
		    [F_CALL] = "call",       [F_ALU_RR] = "alu_rr", [F_ALU_RI] = "alu_ri",
		    [F_MOV_RR] = "mov_rr",   [F_MOV_RI] = "mov_ri", [F_LEA] = "lea",
		    [F_SHIFT] = "shift",     [F_ROT] = "rot",       [F_INCDEC] = "incdec",
		    [F_NOT] = "not",         [F_JCC] = "jcc",       [F_JMP] = "jmp",
		    [F_PUSH] = "push",       [F_POP] = "pop",       [F_CALLR] = "call_rel",
		    [F_RET] = "ret",         [F_EXT] = "ext",       [F_LOAD] = "load",
		    [F_STORE] = "store",     [F_ALU_RM] = "alu_rm", [F_ALU_MR] = "alu_mr",
		    [F_UNARY_M] = "unary_m", [F_NOP] = "nop",       [F_IMUL] = "imul"};
		for (unsigned i = 0; i < emitted; i++)
			fprintf(j->perf_map, "%lx %lx jit:%s:%s\n", (unsigned long)(uintptr_t)at[i],
				(unsigned long)(at[i + 1] - at[i]),
				soft_mnemonic_name(b->insns[i].mnemonic), names[f[i]]);
		fflush(j->perf_map);
	}
	j->used = (size_t)(e.p - j->base + 15) & ~(size_t)15;
	if (j->used > j->size)
		j->used = j->size;
	return (jit_fn)(void *)start;
}
