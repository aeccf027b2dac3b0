/* Decoding with libzydis into struct insn, once per instruction: the block cache keeps the
 * result. The handler is picked here from a table filled by the exec_*.c files, so an
 * instruction's form (register, memory, immediate operands; size) is resolved before it runs. */
#include <Zydis/Zydis.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "engine/soft/soft.h"
#include "util/log.h"

struct op_entry {
	insn_select_fn select;
	insn_fn fn;
};

static struct op_entry ops[ZYDIS_MNEMONIC_MAX_VALUE + 1];
static ZydisDecoder decoders[3]; /* indexed by decode mode */

void soft_register(unsigned mnemonic, insn_select_fn select)
{
	if (mnemonic <= ZYDIS_MNEMONIC_MAX_VALUE)
		ops[mnemonic].select = select;
}

void soft_register_fn(unsigned mnemonic, insn_fn fn)
{
	if (mnemonic <= ZYDIS_MNEMONIC_MAX_VALUE)
		ops[mnemonic].fn = fn;
}

void soft_decode_init(void)
{
	static atomic_flag done = ATOMIC_FLAG_INIT;
	if (atomic_flag_test_and_set(&done))
		return;
	ZydisDecoderInit(&decoders[SOFT_MODE_64], ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
	ZydisDecoderInit(&decoders[SOFT_MODE_32], ZYDIS_MACHINE_MODE_LEGACY_32,
			 ZYDIS_STACK_WIDTH_32);
	ZydisDecoderInit(&decoders[SOFT_MODE_16], ZYDIS_MACHINE_MODE_LEGACY_16,
			 ZYDIS_STACK_WIDTH_16);
	soft_register_alu();
	soft_register_control();
	soft_register_string();
	soft_register_bit();
	soft_register_muldiv();
	soft_register_misc();
	soft_register_sse();
	soft_register_x87();
	soft_register_io();
	soft_register_system();
	soft_register_segment();
	soft_register_interrupt();
}

const char *soft_mnemonic_name(unsigned mnemonic)
{
	const char *s = ZydisMnemonicGetString((ZydisMnemonic)mnemonic);
	return s ? s : "?";
}

/* A Zydis general register as a byte offset into soft_cpu.gpr, or GPR_NONE. */
static gpr_ref gpr_of(ZydisRegister r)
{
	if (r >= ZYDIS_REGISTER_AL && r <= ZYDIS_REGISTER_R15B) {
		unsigned i = r - ZYDIS_REGISTER_AL;
		if (i < 4)
			return (gpr_ref)(i * 8);
		if (i < 8)
			return (gpr_ref)((i - 4) * 8 + 1); /* AH, CH, DH, BH */
		return (gpr_ref)((i - 4) * 8);             /* SPL.. DIL, R8B.. R15B */
	}
	if (r >= ZYDIS_REGISTER_AX && r <= ZYDIS_REGISTER_R15W)
		return (gpr_ref)((r - ZYDIS_REGISTER_AX) * 8);
	if (r >= ZYDIS_REGISTER_EAX && r <= ZYDIS_REGISTER_R15D)
		return (gpr_ref)((r - ZYDIS_REGISTER_EAX) * 8);
	if (r >= ZYDIS_REGISTER_RAX && r <= ZYDIS_REGISTER_R15)
		return (gpr_ref)((r - ZYDIS_REGISTER_RAX) * 8);
	return GPR_NONE;
}

static uint8_t seg_of(ZydisRegister r)
{
	switch (r) {
	case ZYDIS_REGISTER_ES:
		return SEG_ES;
	case ZYDIS_REGISTER_CS:
		return SEG_CS;
	case ZYDIS_REGISTER_SS:
		return SEG_SS;
	case ZYDIS_REGISTER_FS:
		return SEG_FS;
	case ZYDIS_REGISTER_GS:
		return SEG_GS;
	default:
		return SEG_DS;
	}
}

static void fill_register(struct opnd *o, ZydisRegister r)
{
	switch (ZydisRegisterGetClass(r)) {
	case ZYDIS_REGCLASS_GPR8:
	case ZYDIS_REGCLASS_GPR16:
	case ZYDIS_REGCLASS_GPR32:
	case ZYDIS_REGCLASS_GPR64:
		o->kind = OPK_REG;
		o->reg = gpr_of(r);
		break;
	case ZYDIS_REGCLASS_XMM:
		o->kind = OPK_XMM;
		o->reg = (uint16_t)(r - ZYDIS_REGISTER_XMM0);
		break;
	case ZYDIS_REGCLASS_X87:
		o->kind = OPK_ST;
		o->reg = (uint16_t)(r - ZYDIS_REGISTER_ST0);
		break;
	case ZYDIS_REGCLASS_SEGMENT:
		o->kind = OPK_SEG;
		o->reg = seg_of(r);
		break;
	default:
		o->kind = OPK_OTHER;
		o->reg = (uint16_t)r;
		break;
	}
}

static void fill_memory(struct insn *in, const ZydisDecodedInstruction *zi,
			const ZydisDecodedOperand *zo)
{
	struct mem_ref *m = &in->mem;
	m->rip_rel = zo->mem.base == ZYDIS_REGISTER_RIP || zo->mem.base == ZYDIS_REGISTER_EIP;
	m->base = m->rip_rel ? GPR_NONE : gpr_of(zo->mem.base);
	m->index = gpr_of(zo->mem.index);
	m->scale = zo->mem.scale == 8 ? 3 : zo->mem.scale == 4 ? 2 : zo->mem.scale == 2 ? 1 : 0;
	m->seg = seg_of(zo->mem.segment);
	m->asize = (uint8_t)(zi->address_width / 8);
	m->disp = zo->mem.disp.has_displacement ? zo->mem.disp.value : 0;
	/* RIP-relative with a 32-bit address size wraps EIP; keep it simple and exact for the
	 * 64-bit form, which is what compilers emit. */
}

static void fill_operands(struct insn *in, const ZydisDecodedInstruction *zi,
			  const ZydisDecodedOperand *zo)
{
	unsigned nimm = 0;
	in->nops = (uint8_t)(zi->operand_count_visible < 4 ? zi->operand_count_visible : 4);
	for (unsigned i = 0; i < in->nops; i++) {
		struct opnd *o = &in->op[i];
		o->size = (uint8_t)(zo[i].size / 8);
		switch (zo[i].type) {
		case ZYDIS_OPERAND_TYPE_REGISTER:
			fill_register(o, zo[i].reg.value);
			break;
		case ZYDIS_OPERAND_TYPE_MEMORY:
			o->kind = OPK_MEM;
			fill_memory(in, zi, &zo[i]);
			break;
		case ZYDIS_OPERAND_TYPE_IMMEDIATE: {
			o->kind = OPK_IMM;
			uint64_t v =
			    zo[i].imm.is_signed ? (uint64_t)zo[i].imm.value.s : zo[i].imm.value.u;
			if (nimm++ == 0)
				in->imm = v;
			else
				in->imm2 = v;
			break;
		}
		case ZYDIS_OPERAND_TYPE_POINTER:
			o->kind = OPK_IMM;
			in->imm = zo[i].ptr.offset;
			in->imm2 = zo[i].ptr.segment;
			break;
		default:
			o->kind = OPK_NONE;
			break;
		}
	}
}

static void h_invalid(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	soft_fault(c, EXC_UD, 0);
}

static void h_unimplemented(struct soft_cpu *c, const struct insn *in)
{
	soft_unimplemented(c, in);
}

/* Condition code for jcc/setcc/cmovcc: the low nibble of their opcodes. */
static bool has_condition(const ZydisDecodedInstruction *zi)
{
	if (zi->opcode_map == ZYDIS_OPCODE_MAP_DEFAULT)
		return zi->opcode >= 0x70 && zi->opcode <= 0x7f;
	if (zi->opcode_map == ZYDIS_OPCODE_MAP_0F)
		return (zi->opcode >= 0x80 && zi->opcode <= 0x9f) ||
		       (zi->opcode >= 0x40 && zi->opcode <= 0x4f);
	return false;
}

static bool ends_block(const ZydisDecodedInstruction *zi)
{
	switch (zi->meta.category) {
	case ZYDIS_CATEGORY_COND_BR:
	case ZYDIS_CATEGORY_UNCOND_BR:
	case ZYDIS_CATEGORY_CALL:
	case ZYDIS_CATEGORY_RET:
	case ZYDIS_CATEGORY_SYSCALL:
	case ZYDIS_CATEGORY_SYSRET:
	case ZYDIS_CATEGORY_INTERRUPT:
	case ZYDIS_CATEGORY_SYSTEM:
	case ZYDIS_CATEGORY_SEGOP:
		return true;
	default:
		return false;
	}
}

int soft_decode(struct soft_cpu *c, uint64_t va, unsigned mode, struct insn *in, bool *end)
{
	uint8_t bytes[ZYDIS_MAX_INSTRUCTION_LENGTH];
	ZydisDecodedInstruction zi;
	ZydisDecodedOperand zo[ZYDIS_MAX_OPERAND_COUNT];
	size_t avail = 0x1000 - (va & 0xfff);
	if (avail > sizeof(bytes))
		avail = sizeof(bytes);
	memcpy(bytes, soft_mem(c, va, (unsigned)avail, ACC_EXEC), avail);
	ZyanStatus st = ZydisDecoderDecodeFull(&decoders[mode], bytes, avail, &zi, zo);
	if (st == ZYDIS_STATUS_NO_MORE_DATA && avail < sizeof(bytes)) {
		/* The instruction continues on the next page: fetch those bytes too (a fault
		 * there is the fetch's fault, as on hardware). */
		size_t rest = sizeof(bytes) - avail;
		memcpy(bytes + avail, soft_mem(c, va + avail, (unsigned)rest, ACC_EXEC), rest);
		avail = sizeof(bytes);
		st = ZydisDecoderDecodeFull(&decoders[mode], bytes, avail, &zi, zo);
	}
	memset(in, 0, sizeof(*in));
	soft_stats.insns_decoded++;
	if (!ZYAN_SUCCESS(st)) {
		/* Not an instruction (or a bad LOCK prefix): #UD when executed, as on hardware. */
		in->fn = h_invalid;
		in->len = 1;
		*end = true;
		return 1;
	}
	in->len = zi.length;
	in->osize = (uint8_t)(zi.operand_width / 8);
	in->mnemonic = (uint16_t)zi.mnemonic;
	if (zi.attributes & ZYDIS_ATTRIB_HAS_LOCK)
		in->prefix |= PFX_LOCK;
	if (zi.attributes & (ZYDIS_ATTRIB_HAS_REP | ZYDIS_ATTRIB_HAS_REPE))
		in->prefix |= PFX_REP;
	if (zi.attributes & ZYDIS_ATTRIB_HAS_REPNE)
		in->prefix |= PFX_REPNE;
	if (zi.attributes & ZYDIS_ATTRIB_HAS_OPERANDSIZE)
		in->prefix |= PFX_OPSIZE;
	if (zi.raw.rex.W)
		in->prefix |= PFX_REX_W;
	if (has_condition(&zi))
		in->cc = zi.opcode & 0xf;
	fill_operands(in, &zi, zo);
	for (unsigned i = zi.operand_count_visible; i < zi.operand_count; i++)
		if (zo[i].type == ZYDIS_OPERAND_TYPE_MEMORY &&
		    zo[i].mem.segment == ZYDIS_REGISTER_SS)
			in->prefix |= INSN_STACK;

	const struct op_entry *e = &ops[zi.mnemonic];
	in->fn = e->select ? e->select(in) : e->fn;
	if (!in->fn) {
		in->fn = h_unimplemented;
		*end = true;
	} else {
		*end = ends_block(&zi);
	}
	return in->len;
}
