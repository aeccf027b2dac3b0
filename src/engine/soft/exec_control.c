/* Control transfer: jmp, jcc, and the system call instruction. */
#include <Zydis/Zydis.h>

#include "engine/soft/soft.h"

static void h_jcc(struct soft_cpu *c, const struct insn *in)
{
	if (soft_cond(c, in->cc))
		c->rip += in->imm;
}

/* jz/jnz: after nearly every flag-setting operation ZF is just res == 0. */
static void h_jz(struct soft_cpu *c, const struct insn *in)
{
	unsigned op = c->lf.op;
	bool z = op != LF_NONE && op < LF_COUNT ? (c->lf.res & size_mask(1u << (op & 3))) == 0
						: soft_cond(c, 4);
	if (z)
		c->rip += in->imm;
}

static void h_jnz(struct soft_cpu *c, const struct insn *in)
{
	unsigned op = c->lf.op;
	bool z = op != LF_NONE && op < LF_COUNT ? (c->lf.res & size_mask(1u << (op & 3))) == 0
						: soft_cond(c, 4);
	if (!z)
		c->rip += in->imm;
}

static insn_fn sel_jcc(const struct insn *in)
{
	return in->cc == 4 ? h_jz : in->cc == 5 ? h_jnz : h_jcc;
}

static void h_jmp_rel(struct soft_cpu *c, const struct insn *in)
{
	c->rip += in->imm;
}

static void h_jmp_indirect(struct soft_cpu *c, const struct insn *in)
{
	c->rip = opnd_read(c, in, 0);
}

static insn_fn sel_jmp(const struct insn *in)
{
	if (in->op[0].kind == OPK_IMM)
		return h_jmp_rel;
	if (in->op[0].kind == OPK_REG || in->op[0].kind == OPK_MEM)
		return h_jmp_indirect;
	return NULL; /* far jumps: not yet */
}

static void h_syscall(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	if (c->user_mode)
		soft_exit(c, SOFT_EXIT_SYSCALL);
	soft_fail(c, "syscall in system mode is not implemented yet");
}

static void h_nop(struct soft_cpu *c, const struct insn *in)
{
	(void)c;
	(void)in;
}

static void h_hlt(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	if (c->seg[SEG_CS].dpl != 0)
		soft_fault(c, EXC_GP, 0);
	soft_exit(c, SOFT_EXIT_HLT);
}

void soft_register_control(void)
{
	static const unsigned jcc[] = {
	    ZYDIS_MNEMONIC_JO, ZYDIS_MNEMONIC_JNO, ZYDIS_MNEMONIC_JB,  ZYDIS_MNEMONIC_JNB,
	    ZYDIS_MNEMONIC_JZ, ZYDIS_MNEMONIC_JNZ, ZYDIS_MNEMONIC_JBE, ZYDIS_MNEMONIC_JNBE,
	    ZYDIS_MNEMONIC_JS, ZYDIS_MNEMONIC_JNS, ZYDIS_MNEMONIC_JP,  ZYDIS_MNEMONIC_JNP,
	    ZYDIS_MNEMONIC_JL, ZYDIS_MNEMONIC_JNL, ZYDIS_MNEMONIC_JLE, ZYDIS_MNEMONIC_JNLE,
	};
	for (unsigned i = 0; i < sizeof(jcc) / sizeof(jcc[0]); i++)
		soft_register(jcc[i], sel_jcc);
	soft_register(ZYDIS_MNEMONIC_JMP, sel_jmp);
	soft_register_fn(ZYDIS_MNEMONIC_SYSCALL, h_syscall);
	soft_register_fn(ZYDIS_MNEMONIC_NOP, h_nop);
	soft_register_fn(ZYDIS_MNEMONIC_HLT, h_hlt);
}
