/* Miscellaneous user-mode instructions: cpuid, rdtsc/rdtscp, rdpmc, pause, the fences, the
 * prefetches, clflush/clflushopt. (The hint NOPs, endbr32/endbr64, rdssp and xlat are the integer
 * group's, in exec_alu.c.)
 *
 * Not here, because the CPUID model does not advertise them, so they stay #UD (unregistered):
 * rdrand, rdseed, rdpid, xgetbv (no OSXSAVE), the FS/GS-base instructions, monitor/mwait. */
#include <Zydis/Zydis.h>

#include "engine/soft/soft.h"

#ifndef CR4_TSD
#define CR4_TSD (1ull << 2) /* rdtsc/rdtscp only at CPL 0 */
#endif

/* cpuid: the model in cpuid.c; the results zero-extend into RAX..RDX. */
static void h_cpuid(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	uint32_t out[4];
	soft_cpuid(c, (uint32_t)c->gpr[GPR_RAX], (uint32_t)c->gpr[GPR_RCX], out);
	c->gpr[GPR_RAX] = out[0];
	c->gpr[GPR_RBX] = out[1];
	c->gpr[GPR_RCX] = out[2];
	c->gpr[GPR_RDX] = out[3];
}

/* The guest's TSC (soft.h: a fixed 1 GHz). CR4.TSD restricts it to CPL 0. */
static uint64_t read_tsc(struct soft_cpu *c)
{
	if ((c->cr4 & CR4_TSD) && c->seg[SEG_CS].dpl != 0)
		soft_fault(c, EXC_GP, 0);
	return soft_tsc(c);
}

static void h_rdtsc(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	uint64_t t = read_tsc(c);
	c->gpr[GPR_RAX] = (uint32_t)t;
	c->gpr[GPR_RDX] = t >> 32;
}

static void h_rdtscp(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	uint64_t t = read_tsc(c);
	c->gpr[GPR_RAX] = (uint32_t)t;
	c->gpr[GPR_RDX] = t >> 32;
	c->gpr[GPR_RCX] = (uint32_t)c->tsc_aux;
}

/* rdpmc: the model has no performance counters (no CPUID leaf 0xA), so every counter index is
 * invalid: #GP(0), as it is at CPL > 0 without CR4.PCE. */
static void h_rdpmc(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	soft_fault(c, EXC_GP, 0);
}

/* pause: a spin-wait hint; the host's own pause eases a guest spinning on another vCPU. */
static void h_pause(struct soft_cpu *c, const struct insn *in)
{
	(void)c;
	(void)in;
	__builtin_ia32_pause();
}

/* Guest memory is host memory: the host's fences order it for other vCPUs and devices. */
static void h_lfence(struct soft_cpu *c, const struct insn *in)
{
	(void)c;
	(void)in;
	__builtin_ia32_lfence();
}

static void h_mfence(struct soft_cpu *c, const struct insn *in)
{
	(void)c;
	(void)in;
	__builtin_ia32_mfence();
}

static void h_sfence(struct soft_cpu *c, const struct insn *in)
{
	(void)c;
	(void)in;
	__builtin_ia32_sfence();
}

/* Prefetches are hints that never fault; 0F 0D (prefetch, prefetchw, prefetchwt1) executes as
 * a NOP on Intel processors that do not advertise it, as this model does not. */
static void h_hint(struct soft_cpu *c, const struct insn *in)
{
	(void)c;
	(void)in;
}

/* clflush/clflushopt: there is no cache to flush, but the hardware checks the address like
 * a one-byte read (an unmapped line faults). clflushopt is not advertised: 66 0F AE /7 then
 * executes as clflush, which is what it is on processors without it. Where memory-mapped I/O
 * exists the check is skipped: probing through soft_mem would stop the engine on an MMIO line
 * and a read would reach the device. */
static void h_clflush(struct soft_cpu *c, const struct insn *in)
{
	if (c->user_mode || !c->mem.mmio)
		soft_mem(c, insn_addr(c, in), 1, ACC_READ);
}

void soft_register_misc(void)
{
	soft_register_fn(ZYDIS_MNEMONIC_CPUID, h_cpuid);
	soft_register_fn(ZYDIS_MNEMONIC_RDTSC, h_rdtsc);
	soft_register_fn(ZYDIS_MNEMONIC_RDTSCP, h_rdtscp);
	soft_register_fn(ZYDIS_MNEMONIC_RDPMC, h_rdpmc);
	soft_register_fn(ZYDIS_MNEMONIC_PAUSE, h_pause);
	soft_register_fn(ZYDIS_MNEMONIC_LFENCE, h_lfence);
	soft_register_fn(ZYDIS_MNEMONIC_MFENCE, h_mfence);
	soft_register_fn(ZYDIS_MNEMONIC_SFENCE, h_sfence);
	static const unsigned hints[] = {
	    ZYDIS_MNEMONIC_PREFETCHNTA, ZYDIS_MNEMONIC_PREFETCHT0, ZYDIS_MNEMONIC_PREFETCHT1,
	    ZYDIS_MNEMONIC_PREFETCHT2,  ZYDIS_MNEMONIC_PREFETCH,   ZYDIS_MNEMONIC_PREFETCHW,
	    ZYDIS_MNEMONIC_PREFETCHWT1,
	};
	for (unsigned i = 0; i < sizeof(hints) / sizeof(hints[0]); i++)
		soft_register_fn(hints[i], h_hint);
	soft_register_fn(ZYDIS_MNEMONIC_CLFLUSH, h_clflush);
	soft_register_fn(ZYDIS_MNEMONIC_CLFLUSHOPT, h_clflush);
}
