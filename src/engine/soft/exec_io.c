/* Port I/O instructions: in and out, to the VM's port bus through soft_mem_ops.pio. */
#include <Zydis/Zydis.h>

#include "engine/soft/soft.h"

/* I/O is allowed when CPL <= IOPL. Above that, hardware consults the TSS I/O permission
 * bitmap; ferry does not read the TSS yet, so it answers as a bitmap that denies: #GP(0). */
static void check_io(struct soft_cpu *c)
{
	unsigned iopl = (unsigned)(c->rflags >> 12) & 3;
	if (c->user_mode || !c->mem.pio || c->seg[SEG_CS].dpl > iopl)
		soft_fault(c, EXC_GP, 0);
}

/* Operand 0 of IN and operand 1 of OUT is the accumulator; the other is imm8 or DX. */
static uint16_t port_of(const struct soft_cpu *c, const struct insn *in, unsigned i)
{
	return in->op[i].kind == OPK_IMM ? (uint16_t)(in->imm & 0xff) : (uint16_t)c->gpr[GPR_RDX];
}

static void h_in(struct soft_cpu *c, const struct insn *in)
{
	check_io(c);
	unsigned size = in->op[0].size;
	uint64_t v = 0;
	c->mem.pio(c->mem.opaque, port_of(c, in, 1), (uint8_t *)&v, size, false);
	gpr_write(c, in->op[0].reg, v, size);
	c->stop_block |= c->exit_request != 0;
}

static void h_out(struct soft_cpu *c, const struct insn *in)
{
	check_io(c);
	unsigned size = in->op[1].size;
	uint64_t v = gpr_read(c, in->op[1].reg, size);
	c->mem.pio(c->mem.opaque, port_of(c, in, 0), (uint8_t *)&v, size, true);
	/* A device may have asked the VM to stop (the exit port, a reset): stop right here. */
	c->stop_block |= c->exit_request != 0;
}

void soft_register_io(void)
{
	soft_register_fn(ZYDIS_MNEMONIC_IN, h_in);
	soft_register_fn(ZYDIS_MNEMONIC_OUT, h_out);
}
