/* smp_test: brings up the application processors the way an MP-spec OS does: a real-mode
 * trampoline below 1 MiB, INIT then SIPI twice to all-excluding-self through the xAPIC ICR.
 * Each AP goes real mode -> protected mode -> long mode (lm32.S), takes a spinlock, prints
 * "cpu N up" (N = its local APIC ID) and counts itself. The BSP waits, boundedly, for all
 * fw_cfg-reported CPUs, prints "all N cpus up" and writes 0 to the exit port (status 1).
 * It also prints how many enabled processors the MP table lists (the test compares).
 *
 * With "cpuid" on the command line every CPU, the BSP first, also checks the CPUID model a VMM
 * promises (ferry's is src/engine/kvm/kvm_cpuid.c) against what it can see for itself: its
 * local APIC ID in leaf 1 EBX[31:24] and leaf 0xB EDX, the fw_cfg CPU count in leaf 1
 * EBX[23:16], in leaf 0xB's core level and in leaf 4, leaf 0xB's levels, HTT set if there are
 * several CPUs, the hypervisor bit set, VMX and SVM clear, KVM's signature at 0x40000000, and
 * leaves 0 and 1 the same as on the BSP. Leaves above the maximum that leaf 0 (or 0x80000000)
 * reports are not checked. It prints "cpu N cpuid ok" or a FAIL line per difference; any
 * difference ends with 0x36 (status 109) once all CPUs are up. */
#include "multiboot.h"
#include "rt.h"

#define TRAMPOLINE 0x10000

extern const char trampoline_start[], trampoline_end[];
static volatile unsigned cpus_up = 1;
static volatile int lock;
static int check_cpuids;                   /* "cpuid" on the command line */
static unsigned ncpus;                     /* fw_cfg's count, read by the BSP */
static unsigned bsp_id;                    /* the BSP's local APIC ID */
static struct cpuid_regs bsp_l0, bsp_l1;   /* leaves 0 and 1 as the BSP sees them */
static volatile unsigned cpuid_mismatches; /* on all CPUs; updated under the lock */

static void spin_lock(void)
{
	while (__atomic_exchange_n(&lock, 1, __ATOMIC_ACQUIRE))
		while (lock)
			cpu_relax();
}
static void spin_unlock(void)
{
	__atomic_store_n(&lock, 0, __ATOMIC_RELEASE);
}

/* ---- the CPUID model ---- */
#define CPUID1_ECX_VMX        (1u << 5)
#define CPUID1_ECX_OSXSAVE    (1u << 27) /* mirrors CR4.OSXSAVE: state, not model */
#define CPUID1_ECX_HYPERVISOR (1u << 31)
#define CPUID1_EDX_APIC       (1u << 9)  /* mirrors the APIC base MSR's enable bit */
#define CPUID1_EDX_HTT        (1u << 28) /* with 1 CPU, some hosts set it anyway */
#define CPUID81_ECX_SVM       (1u << 2)
#define KVM_SIGNATURE_EBX     0x4b4d564b /* "KVMK" */
#define KVM_SIGNATURE_ECX     0x564b4d56 /* "VMKV" */
#define KVM_SIGNATURE_EDX     0x0000004d /* "M\0\0\0" */

static unsigned mismatch(unsigned cpu, const char *what, uint32_t got, uint32_t want)
{
	if (got == want)
		return 0;
	printf("FAIL: cpu %u cpuid %s is 0x%x, expected 0x%x\n", cpu, what, got, want);
	return 1;
}

/* Checks the calling CPU's CPUID against its local APIC ID and ncpus (see the top of the file);
 * prints "cpu N cpuid ok" or what differed. Returns the number of differences. */
static unsigned check_cpuid(unsigned id)
{
	struct cpuid_regs l0 = cpuid(0, 0), l1 = cpuid(1, 0), r;
	unsigned bad = 0;

	if (id != bsp_id) {
		bad += mismatch(id, "0 eax (max leaf)", l0.a, bsp_l0.a);
		bad += mismatch(id, "0 ebx (vendor)", l0.b, bsp_l0.b);
		bad += mismatch(id, "0 edx (vendor)", l0.d, bsp_l0.d);
		bad += mismatch(id, "0 ecx (vendor)", l0.c, bsp_l0.c);
		bad += mismatch(id, "1 eax (signature)", l1.a, bsp_l1.a);
		bad += mismatch(id, "1 ecx (features)", l1.c & ~CPUID1_ECX_OSXSAVE,
				bsp_l1.c & ~CPUID1_ECX_OSXSAVE);
		bad += mismatch(id, "1 edx (features)", l1.d & ~CPUID1_EDX_APIC,
				bsp_l1.d & ~CPUID1_EDX_APIC);
	}
	bad += mismatch(id, "1 ebx[31:24] (apic id)", l1.b >> 24, id);
	bad += mismatch(id, "1 ebx[23:16] (cpu count)", (l1.b >> 16) & 0xff, ncpus & 0xff);
	if (ncpus > 1) /* EBX[23:16] is valid only with HTT */
		bad += mismatch(id, "1 edx[28] (htt)", !!(l1.d & CPUID1_EDX_HTT), 1);
	bad += mismatch(id, "1 ecx[31] (hypervisor)", !!(l1.c & CPUID1_ECX_HYPERVISOR), 1);
	bad += mismatch(id, "1 ecx[5] (vmx)", !!(l1.c & CPUID1_ECX_VMX), 0);
	if (l0.a >= 4 && ((r = cpuid(4, 0)).a & 0x1f))
		bad += mismatch(id, "4.0 eax[31:26] (cores - 1)", r.a >> 26, (ncpus - 1) & 0x3f);
	if (l0.a >= 0xb) {
		unsigned shift = 0;
		while ((1u << shift) < ncpus)
			shift++;
		r = cpuid(0xb, 0);
		bad += mismatch(id, "0xb.0 edx (x2apic id)", r.d, id);
		bad += mismatch(id, "0xb.0 ebx (threads per core)", r.b, 1);
		bad += mismatch(id, "0xb.0 ecx (level type smt)", r.c, 0x100);
		r = cpuid(0xb, 1);
		bad += mismatch(id, "0xb.1 edx (x2apic id)", r.d, id);
		bad += mismatch(id, "0xb.1 ebx (cpus)", r.b, ncpus);
		bad += mismatch(id, "0xb.1 ecx (level type core)", r.c, 0x201);
		bad += mismatch(id, "0xb.1 eax (id shift)", r.a, shift);
	}
	if (cpuid(0x80000000, 0).a >= 0x80000001) {
		r = cpuid(0x80000001, 0);
		bad += mismatch(id, "0x80000001 ecx[2] (svm)", !!(r.c & CPUID81_ECX_SVM), 0);
	}
	r = cpuid(0x40000000, 0);
	bad += mismatch(id, "0x40000000 ebx (KVMK)", r.b, KVM_SIGNATURE_EBX);
	bad += mismatch(id, "0x40000000 ecx (VMKV)", r.c, KVM_SIGNATURE_ECX);
	bad += mismatch(id, "0x40000000 edx (M)", r.d, KVM_SIGNATURE_EDX);
	if (!bad)
		printf("cpu %u cpuid ok\n", id);
	return bad;
}

void ap_main(unsigned apic_id);
void ap_main(unsigned apic_id)
{
	spin_lock();
	printf("cpu %u up\n", apic_id);
	if (check_cpuids)
		cpuid_mismatches += check_cpuid(apic_id);
	__atomic_add_fetch(&cpus_up, 1, __ATOMIC_SEQ_CST);
	spin_unlock();
}

static void icr_send(uint32_t lo)
{
	mmio_write32(LAPIC + LAPIC_ICR_HI, 0);
	mmio_write32(LAPIC + LAPIC_ICR_LO, lo);
	for (int i = 0; i < 100 && (mmio_read32(LAPIC + LAPIC_ICR_LO) & (1u << 12)); i++)
		cpu_relax(); /* delivery status */
}

static void delay(unsigned n)
{
	for (volatile unsigned i = 0; i < n; i++)
		;
}

/* Counts the processor entries of the MP configuration table; -1 if there is none. */
static int mptable_cpus(void)
{
	for (uint64_t a = 0xf0000; a < 0x100000; a += 16) {
		const uint8_t *p = (const uint8_t *)a;
		if (p[0] != '_' || p[1] != 'M' || p[2] != 'P' || p[3] != '_')
			continue;
		const uint8_t *cfg = (const uint8_t *)(uint64_t) * (const uint32_t *)(p + 4);
		if (!cfg || cfg[0] != 'P' || cfg[1] != 'C' || cfg[2] != 'M' || cfg[3] != 'P')
			return -1;
		unsigned count = *(const uint16_t *)(cfg + 34), n = 0;
		const uint8_t *e = cfg + 44;
		for (unsigned i = 0; i < count; i++) {
			if (e[0] == 0) { /* processor: 20 bytes, flags bit 0 = enabled */
				n += e[3] & 1;
				e += 20;
			} else {
				e += 8;
			}
		}
		return (int)n;
	}
	return -1;
}

void kmain(uint32_t magic, uint64_t info)
{
	ncpus = fwcfg_ncpus();
	bsp_id = mmio_read32(LAPIC + LAPIC_ID) >> 24;
	printf("smp_test: %u cpus per fw_cfg, bsp apic id %u\n", ncpus, bsp_id);
	int mp = mptable_cpus();
	if (mp < 0)
		puts("no MP table\n");
	else
		printf("MP table: %d cpus\n", mp);

	const char *cmdline = mb_cmdline(magic, info);
	if (cmdline && strstr(cmdline, "cpuid")) {
		check_cpuids = 1;
		bsp_l0 = cpuid(0, 0);
		bsp_l1 = cpuid(1, 0);
		struct cpuid_regs hv = cpuid(0x40000000, 0);
		uint32_t vendor[4] = {bsp_l0.b, bsp_l0.d, bsp_l0.c, 0};
		uint32_t hv_sig[4] = {hv.b, hv.c, hv.d, 0};
		printf("cpuid: max leaf 0x%x, max extended leaf 0x%x, vendor '%s', hypervisor "
		       "'%s'\n",
		       bsp_l0.a, cpuid(0x80000000, 0).a, (const char *)vendor,
		       (const char *)hv_sig);
		cpuid_mismatches = check_cpuid(bsp_id);
	}

	memcpy((void *)TRAMPOLINE, trampoline_start, (size_t)(trampoline_end - trampoline_start));
	mmio_write32(LAPIC + LAPIC_SVR, 0x1ff); /* software-enable the local APIC */
	icr_send(0x000c4500);                   /* INIT, assert, all excluding self */
	delay(200);
	icr_send(0x000c4600 | (TRAMPOLINE >> 12)); /* STARTUP */
	delay(50);
	icr_send(0x000c4600 | (TRAMPOLINE >> 12));

	/* Wait about 10 s at most (at >= 1 GHz TSC), however fast the CPU is emulated. */
	uint64_t t0 = rdtsc();
	while (cpus_up < ncpus && rdtsc() - t0 < 10000000000ull)
		for (int i = 0; i < 1000 && cpus_up < ncpus; i++)
			cpu_relax();
	spin_lock();
	if (cpus_up == ncpus) {
		printf("all %u cpus up\n", ncpus);
		if (cpuid_mismatches) {
			printf("FAIL: %u cpuid differences\n", cpuid_mismatches);
			vm_exit(0x36);
		}
		vm_exit(0);
	}
	printf("FAIL: only %u of %u cpus came up\n", cpus_up, ncpus);
	vm_exit(0x35);
}
