#include "engine/cpu_state.h"

#include <string.h>

static void seg_set(struct cpu_segment *s, uint16_t sel, uint64_t base, uint32_t limit,
		    uint8_t type, uint8_t is_code_data)
{
	*s = (struct cpu_segment){.base = base,
				  .limit = limit,
				  .selector = sel,
				  .type = type,
				  .s = is_code_data,
				  .present = 1};
}

void cpu_state_reset(struct cpu_state *st, bool bsp)
{
	memset(st, 0, sizeof(*st));
	/* Intel SDM vol. 3, table "IA-32 and Intel 64 Processor States Following Power-up, Reset,
	 * or INIT": real mode, executing at F000:FFF0 with CS base FFFF0000. */
	st->rip = 0xfff0;
	st->rflags = RFLAGS_FIXED;
	st->cr0 = 0x60000010; /* CD, NW, ET */
	st->gpr[GPR_RDX] = 0x600;
	seg_set(&st->seg[SEG_CS], 0xf000, 0xffff0000, 0xffff, 0xb, 1);
	for (int i = 0; i < SEG_COUNT; i++)
		if (i != SEG_CS && i != SEG_LDT && i != SEG_TR)
			seg_set(&st->seg[i], 0, 0, 0xffff, 0x3, 1);
	seg_set(&st->seg[SEG_LDT], 0, 0, 0xffff, 0x2, 0);
	seg_set(&st->seg[SEG_TR], 0, 0, 0xffff, 0xb, 0);
	st->gdt.limit = 0xffff;
	st->idt.limit = 0xffff;
	st->dr6 = 0xffff0ff0;
	st->dr7 = 0x400;
	st->xcr0 = 1;
	st->apic_base = APIC_DEFAULT_BASE | APIC_BASE_ENABLE | (bsp ? APIC_BASE_BSP : 0);
	/* FXSAVE image of the x87 reset state: FCW 0x037f, MXCSR 0x1f80 (FNINIT/reset values). */
	st->xsave[0] = 0x7f;
	st->xsave[1] = 0x03;
	uint32_t mxcsr = 0x1f80, mxcsr_mask = 0xffff;
	memcpy(&st->xsave[24], &mxcsr, 4);
	memcpy(&st->xsave[28], &mxcsr_mask, 4);
	st->mp_state = bsp ? MP_RUNNABLE : MP_WAIT_FOR_SIPI;
}

int cpu_state_set_msr(struct cpu_state *st, uint32_t index, uint64_t value)
{
	for (uint32_t i = 0; i < st->nmsrs; i++) {
		if (st->msrs[i].index == index) {
			st->msrs[i].value = value;
			return 0;
		}
	}
	if (st->nmsrs >= CPU_STATE_MAX_MSRS)
		return -1;
	st->msrs[st->nmsrs++] = (struct cpu_msr){.index = index, .value = value};
	return 0;
}

bool cpu_state_get_msr(const struct cpu_state *st, uint32_t index, uint64_t *value)
{
	for (uint32_t i = 0; i < st->nmsrs && i < CPU_STATE_MAX_MSRS; i++) {
		if (st->msrs[i].index == index) {
			*value = st->msrs[i].value;
			return true;
		}
	}
	return false;
}
