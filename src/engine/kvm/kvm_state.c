/* Moving the architectural state (engine/cpu_state.h) in and out of a KVM vCPU. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "engine/kvm/kvm.h"
#include "util/log.h"
#include "vm/vm.h"

/* The MSRs that belong to a vCPU's state, beyond those KVM keeps in sregs (EFER, APIC base). */
static const uint32_t state_msrs[] = {
    MSR_IA32_TSC,
    MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_ESP,
    MSR_IA32_SYSENTER_EIP,
    MSR_IA32_MISC_ENABLE,
    MSR_IA32_PAT,
    MSR_STAR,
    MSR_LSTAR,
    MSR_CSTAR,
    MSR_SFMASK,
    MSR_KERNEL_GS_BASE,
    MSR_TSC_AUX,
    0x6e0,      /* IA32_TSC_DEADLINE */
    0x3b,       /* IA32_TSC_ADJUST */
    0x4b564d00, /* kvmclock wall clock */
    0x4b564d01, /* kvmclock system time */
    0x4b564d02, /* async page fault */
    0x4b564d03, /* steal time */
    0x4b564d04, /* paravirtual EOI */
};

int kvm_msr_list_init(struct kvm_vm *kv)
{
	struct kvm_msr_list probe = {.nmsrs = 0};
	/* The first call fails with E2BIG and reports how many indices there are. */
	if (ioctl(kv->sys_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		goto fail;
	struct kvm_msr_list *list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
	if (!list)
		goto fail;
	list->nmsrs = probe.nmsrs;
	if (ioctl(kv->sys_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		free(list);
		goto fail;
	}
	kv->msr_list = calloc(sizeof(state_msrs) / sizeof(state_msrs[0]), sizeof(uint32_t));
	for (size_t i = 0; kv->msr_list && i < sizeof(state_msrs) / sizeof(state_msrs[0]); i++)
		for (uint32_t j = 0; j < list->nmsrs; j++)
			if (list->indices[j] == state_msrs[i]) {
				kv->msr_list[kv->nmsrs++] = state_msrs[i];
				break;
			}
	free(list);
	return kv->msr_list ? 0 : -1;
fail:
	log_error("KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
	return -1;
}

static void seg_from_kvm(struct cpu_segment *d, const struct kvm_segment *s)
{
	*d = (struct cpu_segment){.base = s->base,
				  .limit = s->limit,
				  .selector = s->selector,
				  .type = s->type,
				  .s = s->s,
				  .dpl = s->dpl,
				  .present = s->present,
				  .avl = s->avl,
				  .l = s->l,
				  .db = s->db,
				  .g = s->g,
				  .unusable = s->unusable};
}

static void seg_to_kvm(struct kvm_segment *d, const struct cpu_segment *s)
{
	*d = (struct kvm_segment){.base = s->base,
				  .limit = s->limit,
				  .selector = s->selector,
				  .type = s->type,
				  .s = s->s,
				  .dpl = s->dpl,
				  .present = s->present,
				  .avl = s->avl,
				  .l = s->l,
				  .db = s->db,
				  .g = s->g,
				  .unusable = s->unusable};
}

/* KVM's regs order differs from the SDM encoding order that cpu_state uses. */
#define REGS_MAP(X)                                                                                \
	X(RAX, rax)                                                                                \
	X(RCX, rcx)                                                                                \
	X(RDX, rdx)                                                                                \
	X(RBX, rbx)                                                                                \
	X(RSP, rsp)                                                                                \
	X(RBP, rbp)                                                                                \
	X(RSI, rsi)                                                                                \
	X(RDI, rdi)                                                                                \
	X(R8, r8)                                                                                  \
	X(R9, r9)                                                                                  \
	X(R10, r10)                                                                                \
	X(R11, r11)                                                                                \
	X(R12, r12)                                                                                \
	X(R13, r13)                                                                                \
	X(R14, r14)                                                                                \
	X(R15, r15)

static struct kvm_segment *sregs_seg(struct kvm_sregs *s, int i)
{
	struct kvm_segment *segs[SEG_COUNT] = {
	    [SEG_ES] = &s->es, [SEG_CS] = &s->cs, [SEG_SS] = &s->ss,   [SEG_DS] = &s->ds,
	    [SEG_FS] = &s->fs, [SEG_GS] = &s->gs, [SEG_LDT] = &s->ldt, [SEG_TR] = &s->tr,
	};
	return segs[i];
}

static int get_msrs(int fd, const struct kvm_vm *kv, struct cpu_state *st)
{
	struct kvm_msrs *m = calloc(1, sizeof(*m) + kv->nmsrs * sizeof(m->entries[0]));
	if (!m)
		return -1;
	m->nmsrs = kv->nmsrs;
	for (unsigned i = 0; i < kv->nmsrs; i++)
		m->entries[i].index = kv->msr_list[i];
	int n = ioctl(fd, KVM_GET_MSRS, m);
	st->nmsrs = 0;
	for (int i = 0; i < n && i < CPU_STATE_MAX_MSRS; i++)
		cpu_state_set_msr(st, m->entries[i].index, m->entries[i].data);
	free(m);
	return n == (int)kv->nmsrs ? 0 : -1;
}

int kvm_put_msrs(int fd, const struct cpu_msr *msrs, uint32_t n)
{
	struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(m->entries[0]));
	if (!m)
		return -1;
	m->nmsrs = n;
	for (uint32_t i = 0; i < n; i++)
		m->entries[i] =
		    (struct kvm_msr_entry){.index = msrs[i].index, .data = msrs[i].value};
	int done = ioctl(fd, KVM_SET_MSRS, m);
	if (done >= 0 && done < (int)n)
		log_error("KVM refused MSR 0x%x", m->entries[done].index);
	free(m);
	return done == (int)n ? 0 : -1;
}

static int set_msrs(int fd, const struct cpu_state *st)
{
	return kvm_put_msrs(fd, st->msrs,
			    st->nmsrs < CPU_STATE_MAX_MSRS ? st->nmsrs : CPU_STATE_MAX_MSRS);
}

int kvm_get_state(struct vcpu *cpu, struct cpu_state *st)
{
	struct kvm_vcpu *kc = cpu->engine_data;
	const struct kvm_vm *kv = cpu->vm->engine_data;
	struct kvm_regs r;
	struct kvm_sregs s;
	struct kvm_xsave xs;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs dbg;
	struct kvm_vcpu_events ev;
	struct kvm_mp_state mp;
	struct kvm_lapic_state lapic;

	memset(st, 0, sizeof(*st));
	if (ioctl(kc->fd, KVM_GET_REGS, &r) < 0 || ioctl(kc->fd, KVM_GET_SREGS, &s) < 0 ||
	    ioctl(kc->fd, KVM_GET_XSAVE, &xs) < 0 || ioctl(kc->fd, KVM_GET_XCRS, &xcrs) < 0 ||
	    ioctl(kc->fd, KVM_GET_DEBUGREGS, &dbg) < 0 ||
	    ioctl(kc->fd, KVM_GET_VCPU_EVENTS, &ev) < 0 ||
	    ioctl(kc->fd, KVM_GET_MP_STATE, &mp) < 0 || ioctl(kc->fd, KVM_GET_LAPIC, &lapic) < 0) {
		log_error("vcpu %u: cannot read state from KVM: %s", cpu->id, strerror(errno));
		return -1;
	}
#define GET(idx, name) st->gpr[GPR_##idx] = r.name;
	REGS_MAP(GET)
#undef GET
	st->rip = r.rip;
	st->rflags = r.rflags;
	for (int i = 0; i < SEG_COUNT; i++)
		seg_from_kvm(&st->seg[i], sregs_seg(&s, i));
	st->gdt = (struct cpu_dtable){s.gdt.base, s.gdt.limit};
	st->idt = (struct cpu_dtable){s.idt.base, s.idt.limit};
	st->cr0 = s.cr0;
	st->cr2 = s.cr2;
	st->cr3 = s.cr3;
	st->cr4 = s.cr4;
	st->cr8 = s.cr8;
	st->efer = s.efer;
	st->apic_base = s.apic_base;
	memcpy(st->dr, dbg.db, sizeof(st->dr));
	st->dr6 = dbg.dr6;
	st->dr7 = dbg.dr7;
	_Static_assert(sizeof(xs.region) == CPU_XSAVE_SIZE, "XSAVE area size");
	memcpy(st->xsave, xs.region, CPU_XSAVE_SIZE);
	for (uint32_t i = 0; i < xcrs.nr_xcrs && i < KVM_MAX_XCRS; i++)
		if (xcrs.xcrs[i].xcr == 0)
			st->xcr0 = xcrs.xcrs[i].value;
	st->events = (struct cpu_events){
	    .exception_injected = ev.exception.injected,
	    .exception_vector = ev.exception.nr,
	    .exception_has_error = ev.exception.has_error_code,
	    .exception_error = ev.exception.error_code,
	    .interrupt_injected = ev.interrupt.injected,
	    .interrupt_vector = ev.interrupt.nr,
	    .interrupt_soft = ev.interrupt.soft,
	    .interrupt_shadow = ev.interrupt.shadow,
	    .nmi_injected = ev.nmi.injected,
	    .nmi_pending = ev.nmi.pending,
	    .nmi_masked = ev.nmi.masked,
	};
	st->mp_state =
	    mp.mp_state == KVM_MP_STATE_UNINITIALIZED || mp.mp_state == KVM_MP_STATE_INIT_RECEIVED
		? MP_WAIT_FOR_SIPI
	    : mp.mp_state == KVM_MP_STATE_HALTED ? MP_HALTED
						 : MP_RUNNABLE;
	_Static_assert(sizeof(lapic.regs) == CPU_LAPIC_SIZE, "local APIC page size");
	memcpy(st->lapic, lapic.regs, CPU_LAPIC_SIZE);
	if (get_msrs(kc->fd, kv, st) < 0) {
		log_error("vcpu %u: cannot read MSRs from KVM", cpu->id);
		return -1;
	}
	return 0;
}

int kvm_set_state(struct vcpu *cpu, const struct cpu_state *st)
{
	struct kvm_vcpu *kc = cpu->engine_data;
	struct kvm_regs r = {.rip = st->rip, .rflags = st->rflags};
	struct kvm_sregs s;
	struct kvm_xsave xs;
	struct kvm_xcrs xcrs = {.nr_xcrs = 1, .xcrs = {{.xcr = 0, .value = st->xcr0}}};
	struct kvm_debugregs dbg = {.dr6 = st->dr6, .dr7 = st->dr7};
	struct kvm_mp_state mp = {.mp_state = st->mp_state == MP_WAIT_FOR_SIPI
						  ? KVM_MP_STATE_INIT_RECEIVED
					      : st->mp_state == MP_HALTED ? KVM_MP_STATE_HALTED
									  : KVM_MP_STATE_RUNNABLE};
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	const char *what = "registers";

#define SET(idx, name) r.name = st->gpr[GPR_##idx];
	REGS_MAP(SET)
#undef SET
	/* Read-modify-write so the pending-interrupt bitmap KVM keeps in sregs is preserved. */
	if (ioctl(kc->fd, KVM_GET_SREGS, &s) < 0)
		goto fail;
	for (int i = 0; i < SEG_COUNT; i++)
		seg_to_kvm(sregs_seg(&s, i), &st->seg[i]);
	s.gdt = (struct kvm_dtable){.base = st->gdt.base, .limit = st->gdt.limit};
	s.idt = (struct kvm_dtable){.base = st->idt.base, .limit = st->idt.limit};
	s.cr0 = st->cr0;
	s.cr2 = st->cr2;
	s.cr3 = st->cr3;
	s.cr4 = st->cr4;
	s.cr8 = st->cr8;
	s.efer = st->efer;
	s.apic_base = st->apic_base;
	memset(s.interrupt_bitmap, 0, sizeof(s.interrupt_bitmap));
	memcpy(dbg.db, st->dr, sizeof(dbg.db));
	memcpy(xs.region, st->xsave, CPU_XSAVE_SIZE);
	memcpy(lapic.regs, st->lapic, CPU_LAPIC_SIZE);
	memset(&ev, 0, sizeof(ev));
	ev.exception.injected = st->events.exception_injected;
	ev.exception.nr = st->events.exception_vector;
	ev.exception.has_error_code = st->events.exception_has_error;
	ev.exception.error_code = st->events.exception_error;
	ev.interrupt.injected = st->events.interrupt_injected;
	ev.interrupt.nr = st->events.interrupt_vector;
	ev.interrupt.soft = st->events.interrupt_soft;
	ev.interrupt.shadow = st->events.interrupt_shadow;
	ev.nmi.injected = st->events.nmi_injected;
	ev.nmi.pending = st->events.nmi_pending;
	ev.nmi.masked = st->events.nmi_masked;
	ev.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW;

	/* Order matters: control registers before MSRs that depend on them, the APIC base
	 * before the APIC page, events last. */
	if (ioctl(kc->fd, KVM_SET_REGS, &r) < 0)
		goto fail;
	what = "XSAVE area";
	if (ioctl(kc->fd, KVM_SET_XSAVE, &xs) < 0 || ioctl(kc->fd, KVM_SET_XCRS, &xcrs) < 0)
		goto fail;
	what = "system registers";
	if (ioctl(kc->fd, KVM_SET_SREGS, &s) < 0)
		goto fail;
	what = "MSRs";
	if (set_msrs(kc->fd, st) < 0)
		goto fail;
	what = "multiprocessor state";
	if (ioctl(kc->fd, KVM_SET_MP_STATE, &mp) < 0)
		goto fail;
	what = "local APIC";
	if (ioctl(kc->fd, KVM_SET_LAPIC, &lapic) < 0)
		goto fail;
	what = "events";
	if (ioctl(kc->fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
		goto fail;
	what = "debug registers";
	if (ioctl(kc->fd, KVM_SET_DEBUGREGS, &dbg) < 0)
		goto fail;
	return 0;
fail:
	log_error("vcpu %u: KVM refused the %s: %s", cpu->id, what, strerror(errno));
	return -1;
}
