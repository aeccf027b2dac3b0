/* System instructions: MSRs, control registers, descriptor-table registers, TLB and cache
 * control. Each checks privilege first (#GP(0) above CPL 0), as hardware does; at CPL 0 they do
 * what the SDM says, or fail closed where the soft engine does not model it yet (loading LDT
 * and TR, 32-bit paging modes). */
#include <Zydis/Zydis.h>
#include <string.h>
#include <time.h>

#include "engine/soft/exec_alu.h"
#include "engine/soft/soft.h"

static unsigned cpl(const struct soft_cpu *c)
{
	return c->seg[SEG_CS].dpl;
}

static void need_cpl0(struct soft_cpu *c)
{
	if (cpl(c) != 0)
		soft_fault(c, EXC_GP, 0);
}

/* ---- MSRs ------------------------------------------------------------------------------- */

#define EFER_WRITABLE           (EFER_SCE | EFER_LME | EFER_NXE)

#define MSR_IA32_UCODE_REV      0x8b
#define MSR_ARCH_CAPABILITIES   0x10a
#define MSR_KVM_WALL_CLOCK_NEW  0x4b564d00
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
/* ARCH_CAPABILITIES: the soft CPU does not speculate, so it is not vulnerable to the
 * speculative-execution and data-sampling attacks these bits deny (RDCL_NO spares the guest
 * the page-table-isolation CR3 switch on every kernel entry). */
#define ARCH_CAPS                                                                                  \
	((1ull << 0) | (1ull << 3) | (1ull << 4) | (1ull << 5) | (1ull << 6) | (1ull << 8) |       \
	 (1ull << 13) | (1ull << 14) | (1ull << 15) | (1ull << 20) | (1ull << 26) | (1ull << 27) | \
	 (1ull << 62))

/* ---- kvmclock (the paravirtual clock, Linux's Documentation/virt/kvm/x86/msr.rst) -------- */

/* Guest RAM at gpa for n bytes within one page, or NULL. */
static uint8_t *guest_phys(struct soft_cpu *c, uint64_t gpa, unsigned n)
{
	if ((gpa & 0xfff) + n > 0x1000)
		return NULL;
	bool writable = false;
	uint8_t *p = c->mem.page_ptr(c->mem.opaque, gpa & ~0xfffull, ACC_WRITE, &writable);
	return p && writable ? p + (gpa & 0xfff) : NULL;
}

/* The guest's system time is its TSC in nanoseconds (the TSC runs at 1 GHz): one record,
 * written when the guest enables it, stays valid because the TSC rate never changes. */
static bool kvmclock_system_time(struct soft_cpu *c, uint64_t v)
{
	c->kvm_system_time = v;
	if (!(v & 1))
		return true;
	uint8_t *p = guest_phys(c, v & ~1ull, 32);
	if (!p)
		return false;
	uint64_t tsc = soft_tsc(c);
	uint32_t version = le_get32(p);
	version = (version | 1) + 1; /* even: the record is consistent */
	memset(p + 4, 0, 28);
	le_put64(p + 8, tsc);          /* tsc_timestamp */
	le_put64(p + 16, tsc);         /* system_time (ns) */
	le_put32(p + 24, 0x80000000u); /* tsc_to_system_mul: ns = ((tsc << 1) * mul) >> 32 */
	p[28] = 1;                     /* tsc_shift */
	p[29] = 1;                     /* flags: PVCLOCK_TSC_STABLE_BIT */
	__atomic_store_n((uint32_t *)(void *)p, version, __ATOMIC_RELEASE);
	return true;
}

static bool kvmclock_wall_clock(struct soft_cpu *c, uint64_t gpa)
{
	c->kvm_wall_clock = gpa;
	uint8_t *p = guest_phys(c, gpa, 12);
	if (!p)
		return false;
	/* The wall-clock time at which the guest's system time was 0. */
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t boot_ns = (int64_t)now.tv_sec * 1000000000ll + now.tv_nsec - (int64_t)soft_tsc(c);
	uint32_t version = (le_get32(p) | 1) + 1;
	le_put32(p + 4, (uint32_t)(boot_ns / 1000000000ll));
	le_put32(p + 8, (uint32_t)(boot_ns % 1000000000ll));
	__atomic_store_n((uint32_t *)(void *)p, version, __ATOMIC_RELEASE);
	return true;
}

static bool msr_read(struct soft_cpu *c, uint32_t index, uint64_t *v)
{
	if (!c->user_mode) {
		int r = c->irq.msr ? c->irq.msr(c->irq.opaque, index, v, false) : 0;
		if (r)
			return r > 0;
		switch (index) {
		case MSR_IA32_UCODE_REV:
			*v = 1ull << 32;
			return true;
		case MSR_ARCH_CAPABILITIES:
			*v = ARCH_CAPS;
			return true;
		case MSR_KVM_WALL_CLOCK_NEW:
			*v = c->kvm_wall_clock;
			return true;
		case MSR_KVM_SYSTEM_TIME_NEW:
			*v = c->kvm_system_time;
			return true;
		default:
			break;
		}
	}
	switch (index) {
	case MSR_IA32_TSC:
		*v = soft_tsc(c);
		return true;
	case MSR_IA32_APIC_BASE:
		*v = c->apic_base;
		return true;
	case 0xc0000080: /* EFER */
		*v = c->efer;
		return true;
	case MSR_FS_BASE:
		*v = c->seg[SEG_FS].base;
		return true;
	case MSR_GS_BASE:
		*v = c->seg[SEG_GS].base;
		return true;
	case MSR_KERNEL_GS_BASE:
		*v = c->kernel_gs_base;
		return true;
	case MSR_STAR:
		*v = c->star;
		return true;
	case MSR_LSTAR:
		*v = c->lstar;
		return true;
	case MSR_CSTAR:
		*v = c->cstar;
		return true;
	case MSR_SFMASK:
		*v = c->sfmask;
		return true;
	case MSR_TSC_AUX:
		*v = c->tsc_aux;
		return true;
	case MSR_IA32_PAT:
		*v = c->pat;
		return true;
	case MSR_IA32_MISC_ENABLE:
		*v = c->misc_enable;
		return true;
	case MSR_IA32_SYSENTER_CS:
		*v = c->sysenter_cs;
		return true;
	case MSR_IA32_SYSENTER_ESP:
		*v = c->sysenter_esp;
		return true;
	case MSR_IA32_SYSENTER_EIP:
		*v = c->sysenter_eip;
		return true;
	default:
		return false;
	}
}

static bool msr_write(struct soft_cpu *c, uint32_t index, uint64_t v)
{
	if (!c->user_mode) {
		uint64_t val = v;
		int r = c->irq.msr ? c->irq.msr(c->irq.opaque, index, &val, true) : 0;
		if (r)
			return r > 0;
		switch (index) {
		case MSR_IA32_UCODE_REV:
			return true; /* the microcode-revision read protocol: write 0, cpuid, read */
		case MSR_KVM_WALL_CLOCK_NEW:
			return kvmclock_wall_clock(c, v);
		case MSR_KVM_SYSTEM_TIME_NEW:
			return kvmclock_system_time(c, v);
		default:
			break;
		}
	}
	switch (index) {
	case MSR_IA32_TSC:
		c->tsc_offset = v - soft_host_ns();
		return true;
	case 0xc0000080: /* EFER: LMA follows LME and CR0.PG; LME may not change with paging on */
		if (v & ~(EFER_WRITABLE | EFER_LMA))
			return false;
		if ((c->cr0 & CR0_PG) && ((v ^ c->efer) & EFER_LME))
			return false;
		c->efer = (v & EFER_WRITABLE) | (c->efer & EFER_LMA);
		soft_tlb_flush(c);
		return true;
	case MSR_FS_BASE:
	case MSR_GS_BASE:
	case MSR_KERNEL_GS_BASE:
	case MSR_LSTAR:
	case MSR_CSTAR:
	case MSR_IA32_SYSENTER_ESP:
	case MSR_IA32_SYSENTER_EIP:
		if (!soft_canonical(v))
			return false;
		if (index == MSR_FS_BASE)
			c->seg[SEG_FS].base = v;
		else if (index == MSR_GS_BASE)
			c->seg[SEG_GS].base = v;
		else if (index == MSR_KERNEL_GS_BASE)
			c->kernel_gs_base = v;
		else if (index == MSR_LSTAR)
			c->lstar = v;
		else if (index == MSR_CSTAR)
			c->cstar = v;
		else if (index == MSR_IA32_SYSENTER_ESP)
			c->sysenter_esp = v;
		else
			c->sysenter_eip = v;
		return true;
	case MSR_STAR:
		c->star = v;
		return true;
	case MSR_SFMASK:
		c->sfmask = v & 0xffffffffu;
		return true;
	case MSR_TSC_AUX:
		if (v >> 32)
			return false;
		c->tsc_aux = v;
		return true;
	case MSR_IA32_PAT:
		c->pat = v;
		return true;
	case MSR_IA32_SYSENTER_CS:
		c->sysenter_cs = v & 0xffff;
		return true;
	case MSR_IA32_MISC_ENABLE:
		c->misc_enable = v;
		return true;
	default:
		return false; /* an MSR this CPU does not have: #GP, as on hardware */
	}
}

static void h_rdmsr(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	need_cpl0(c);
	uint64_t v;
	if (!msr_read(c, (uint32_t)c->gpr[GPR_RCX], &v))
		soft_fault(c, EXC_GP, 0);
	c->gpr[GPR_RAX] = (uint32_t)v;
	c->gpr[GPR_RDX] = v >> 32;
}

static void h_wrmsr(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	need_cpl0(c);
	uint64_t v = (uint32_t)c->gpr[GPR_RAX] | c->gpr[GPR_RDX] << 32;
	if (!msr_write(c, (uint32_t)c->gpr[GPR_RCX], v))
		soft_fault(c, EXC_GP, 0);
}

/* ---- control registers ------------------------------------------------------------------- */

#define CR0_TS (1ull << 3)
#define CR0_CD (1ull << 30)
#define CR0_NW (1ull << 29)
#define CR0_AM (1ull << 18)
#define CR0_EM (1ull << 2)
#define CR0_VALID                                                                                  \
	(CR0_PE | CR0_MP | CR0_EM | CR0_TS | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_NW | CR0_CD | \
	 CR0_PG)
#define CR4_TSD (1ull << 2)
#define CR4_DE  (1ull << 3)
#define CR4_PSE (1ull << 4)
#define CR4_MCE (1ull << 6)
#define CR4_PCE (1ull << 8)
/* What this CPU's CR4 can hold: only features its CPUID admits to. */
#define CR4_VALID                                                                                  \
	(CR4_TSD | CR4_DE | CR4_PSE | CR4_PAE | CR4_MCE | CR4_PGE | CR4_PCE | CR4_OSFXSR |         \
	 CR4_OSXMMEXCPT)

static unsigned cr_index(const struct opnd *o)
{
	return (unsigned)(o->reg - ZYDIS_REGISTER_CR0);
}

static void write_cr0(struct soft_cpu *c, uint64_t v)
{
	if (v >> 32 || (v & ~CR0_VALID) || ((v & CR0_PG) && !(v & CR0_PE)) ||
	    ((v & CR0_NW) && !(v & CR0_CD)))
		soft_fault(c, EXC_GP, 0);
	if ((v & CR0_PG) && !(c->cr0 & CR0_PG) && (c->efer & EFER_LME)) {
		if (!(c->cr4 & CR4_PAE))
			soft_fault(c, EXC_GP, 0);
		c->efer |= EFER_LMA;
	} else if (!(v & CR0_PG) && (c->cr0 & CR0_PG)) {
		if (c->seg[SEG_CS].l && (c->efer & EFER_LMA))
			soft_fault(c, EXC_GP, 0); /* paging off from 64-bit code */
		c->efer &= ~EFER_LMA;
	}
	uint64_t changed = v ^ c->cr0;
	c->cr0 = v | CR0_ET;
	if (changed & (CR0_PG | CR0_WP | CR0_PE))
		soft_tlb_flush(c);
	c->stop_block = true; /* the mode may differ for the next instruction */
}

static void write_cr4(struct soft_cpu *c, uint64_t v)
{
	if (v & ~CR4_VALID)
		soft_fault(c, EXC_GP, 0);
	if ((c->efer & EFER_LMA) && !(v & CR4_PAE))
		soft_fault(c, EXC_GP, 0);
	if ((v ^ c->cr4) & (CR4_PAE | CR4_PGE | CR4_PSE))
		soft_tlb_flush(c);
	c->cr4 = v;
	c->stop_block = true;
}

static void h_mov_to_cr(struct soft_cpu *c, const struct insn *in)
{
	need_cpl0(c);
	uint64_t v = gpr_read(c, in->op[1].reg, 8);
	switch (cr_index(&in->op[0])) {
	case 0:
		write_cr0(c, v);
		break;
	case 2:
		c->cr2 = v;
		break;
	case 3:
		c->cr3 = v & 0x000ffffffffff000ull;
		soft_tlb_flush_nonglobal(c);
		c->stop_block = true;
		break;
	case 4:
		write_cr4(c, v);
		break;
	case 8:
		if (v & ~0xfull)
			soft_fault(c, EXC_GP, 0);
		c->cr8 = v;
		break;
	default:
		soft_fault(c, EXC_UD, 0);
	}
}

static void h_mov_from_cr(struct soft_cpu *c, const struct insn *in)
{
	need_cpl0(c);
	uint64_t v;
	switch (cr_index(&in->op[1])) {
	case 0:
		v = c->cr0;
		break;
	case 2:
		v = c->cr2;
		break;
	case 3:
		v = c->cr3;
		break;
	case 4:
		v = c->cr4;
		break;
	case 8:
		v = c->cr8;
		break;
	default:
		soft_fault(c, EXC_UD, 0);
	}
	gpr_write(c, in->op[0].reg, v, 8);
}

/* The debug registers hold their values; breakpoints are not modelled, so a DR7 that would
 * arm one (or general detect) stops the VM rather than be silently ignored. DR4/DR5 alias
 * DR6/DR7 unless CR4.DE. */
#define CR4_DE     (1ull << 3)
#define DR6_FIXED  0xffff0ff0ull
#define DR7_FIXED  0x400ull
#define DR7_ARMING 0x20ffull /* L0-3, G0-3 and GD */

static void h_mov_dr(struct soft_cpu *c, const struct insn *in)
{
	bool to = in->op[0].kind == OPK_OTHER;
	unsigned n = (unsigned)(in->op[to ? 0 : 1].reg - ZYDIS_REGISTER_DR0);
	need_cpl0(c);
	if (n == 4 || n == 5) {
		if (c->cr4 & CR4_DE)
			soft_fault(c, EXC_UD, 0);
		n += 2;
	}
	if (n > 7)
		soft_fault(c, EXC_UD, 0);
	if (!to) {
		uint64_t v = n < 4    ? c->dr[n]
			     : n == 6 ? (c->dr6 | DR6_FIXED)
				      : (c->dr7 | DR7_FIXED);
		gpr_write(c, in->op[0].reg, v, 8);
		return;
	}
	uint64_t v = gpr_read(c, in->op[1].reg, 8);
	if (n < 4) {
		c->dr[n] = v;
		return;
	}
	if (v >> 32)
		soft_fault(c, EXC_GP, 0);
	if (n == 6) {
		c->dr6 = v | DR6_FIXED;
		return;
	}
	if (v & DR7_ARMING)
		soft_fail(c,
			  "DR7 0x%llx arms a hardware breakpoint, which the soft engine does not "
			  "support",
			  (unsigned long long)v);
	c->dr7 = v | DR7_FIXED;
}

/* mov to or from a control or debug register (exec_alu.c's mov select defers to this). */
insn_fn soft_select_mov_crdr(const struct insn *in)
{
	bool to = in->op[0].kind == OPK_OTHER;
	const struct opnd *o = &in->op[to ? 0 : 1];
	if (o->kind != OPK_OTHER)
		return NULL;
	if (o->reg >= ZYDIS_REGISTER_CR0 && o->reg <= ZYDIS_REGISTER_CR15)
		return to ? h_mov_to_cr : h_mov_from_cr;
	if (o->reg >= ZYDIS_REGISTER_DR0 && o->reg <= ZYDIS_REGISTER_DR15)
		return h_mov_dr;
	return NULL;
}

static void h_clts(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	need_cpl0(c);
	c->cr0 &= ~CR0_TS;
}

static void h_cache_control(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	need_cpl0(c); /* invd, wbinvd: no caches to write back in an interpreter */
}

static void h_invlpg(struct soft_cpu *c, const struct insn *in)
{
	need_cpl0(c);
	soft_tlb_flush_page(c, insn_addr(c, in));
}

static void h_swapgs(struct soft_cpu *c, const struct insn *in)
{
	(void)in;
	need_cpl0(c);
	uint64_t t = c->seg[SEG_GS].base;
	c->seg[SEG_GS].base = c->kernel_gs_base;
	c->kernel_gs_base = t;
}

/* ---- descriptor-table registers ---------------------------------------------------------- */

/* In 64-bit mode the memory operand is a 2-byte limit and an 8-byte base; outside it the base
 * is 4 bytes (the high byte dropped with a 16-bit operand size). */
static unsigned dt_base_size(const struct soft_cpu *c)
{
	return (c->efer & EFER_LMA) && c->seg[SEG_CS].l ? 8 : 4;
}

static void load_dt(struct soft_cpu *c, const struct insn *in, struct cpu_dtable *dt)
{
	need_cpl0(c);
	uint64_t a = insn_addr(c, in);
	unsigned bs = dt_base_size(c);
	uint16_t limit = (uint16_t)soft_load(c, a, 2);
	uint64_t base = soft_load(c, a + 2, bs);
	if (bs == 4 && in->osize == 2)
		base &= 0xffffff;
	if (bs == 8 && !soft_canonical(base))
		soft_fault(c, EXC_GP, 0);
	dt->limit = limit;
	dt->base = base;
}

static void store_dt(struct soft_cpu *c, const struct insn *in, const struct cpu_dtable *dt)
{
	/* SGDT/SIDT are allowed at any CPL: UMIP is not advertised. */
	uint64_t a = insn_addr(c, in);
	uint8_t buf[10];
	unsigned bs = dt_base_size(c);
	for (unsigned i = 0; i < 2; i++)
		buf[i] = (uint8_t)(dt->limit >> (8 * i));
	for (unsigned i = 0; i < bs; i++)
		buf[2 + i] = (uint8_t)(dt->base >> (8 * i));
	soft_write_bytes(c, a, buf, 2 + bs);
}

static void h_lgdt(struct soft_cpu *c, const struct insn *in)
{
	load_dt(c, in, &c->gdt);
}

static void h_lidt(struct soft_cpu *c, const struct insn *in)
{
	load_dt(c, in, &c->idt);
}

static void h_sgdt(struct soft_cpu *c, const struct insn *in)
{
	store_dt(c, in, &c->gdt);
}

static void h_sidt(struct soft_cpu *c, const struct insn *in)
{
	store_dt(c, in, &c->idt);
}

/* SLDT, STR and SMSW store a selector or the low word of CR0: to a register (zero-extended to
 * its operand size) or as 16 bits to memory. */
static void store_word(struct soft_cpu *c, const struct insn *in, uint16_t v)
{
	if (in->op[0].kind == OPK_REG)
		gpr_write(c, in->op[0].reg, v, in->op[0].size);
	else
		soft_store(c, insn_addr(c, in), v, 2);
}

static void h_sldt(struct soft_cpu *c, const struct insn *in)
{
	store_word(c, in, c->seg[SEG_LDT].selector);
}

static void h_str(struct soft_cpu *c, const struct insn *in)
{
	store_word(c, in, c->seg[SEG_TR].selector);
}

static void h_smsw(struct soft_cpu *c, const struct insn *in)
{
	if (in->op[0].kind == OPK_REG)
		gpr_write(c, in->op[0].reg, c->cr0, in->op[0].size);
	else
		soft_store(c, insn_addr(c, in), (uint16_t)c->cr0, 2);
}

static void h_not_yet(struct soft_cpu *c, const struct insn *in)
{
	need_cpl0(c);
	soft_fail(c, "%s is not implemented by the soft engine yet",
		  soft_mnemonic_name(in->mnemonic));
}

void soft_register_system(void)
{
	soft_register_fn(ZYDIS_MNEMONIC_RDMSR, h_rdmsr);
	soft_register_fn(ZYDIS_MNEMONIC_WRMSR, h_wrmsr);
	soft_register_fn(ZYDIS_MNEMONIC_CLTS, h_clts);
	soft_register_fn(ZYDIS_MNEMONIC_INVD, h_cache_control);
	soft_register_fn(ZYDIS_MNEMONIC_WBINVD, h_cache_control);
	soft_register_fn(ZYDIS_MNEMONIC_INVLPG, h_invlpg);
	soft_register_fn(ZYDIS_MNEMONIC_SWAPGS, h_swapgs);
	soft_register_fn(ZYDIS_MNEMONIC_LGDT, h_lgdt);
	soft_register_fn(ZYDIS_MNEMONIC_LIDT, h_lidt);
	soft_register_fn(ZYDIS_MNEMONIC_SGDT, h_sgdt);
	soft_register_fn(ZYDIS_MNEMONIC_SIDT, h_sidt);
	soft_register_fn(ZYDIS_MNEMONIC_SLDT, h_sldt);
	soft_register_fn(ZYDIS_MNEMONIC_STR, h_str);
	soft_register_fn(ZYDIS_MNEMONIC_SMSW, h_smsw);
	soft_register_fn(ZYDIS_MNEMONIC_LMSW, h_not_yet);
	soft_register_fn(ZYDIS_MNEMONIC_INVPCID, h_not_yet);
}
