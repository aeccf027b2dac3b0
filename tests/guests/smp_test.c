/* smp_test: brings up the application processors the way an MP-spec OS does: a real-mode
 * trampoline below 1 MiB, INIT then SIPI twice to all-excluding-self through the xAPIC ICR.
 * Each AP goes real mode -> protected mode -> long mode (lm32.S), takes a spinlock, prints
 * "cpu N up" (N = its local APIC ID) and counts itself. The BSP waits, boundedly, for all
 * fw_cfg-reported CPUs, prints "all N cpus up" and writes 0 to the exit port (status 1).
 * It also prints how many enabled processors the MP table lists (the test compares). */
#include "rt.h"

#define LAPIC        0xfee00000ull
#define LAPIC_ID     0x20
#define LAPIC_SVR    0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define TRAMPOLINE   0x10000

extern const char trampoline_start[], trampoline_end[];
static volatile unsigned cpus_up = 1;
static volatile int lock;

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

void ap_main(unsigned apic_id);
void ap_main(unsigned apic_id)
{
	spin_lock();
	printf("cpu %u up\n", apic_id);
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
	unsigned n = fwcfg_ncpus();
	unsigned bsp = mmio_read32(LAPIC + LAPIC_ID) >> 24;
	printf("smp_test: %u cpus per fw_cfg, bsp apic id %u\n", n, bsp);
	int mp = mptable_cpus();
	if (mp < 0)
		puts("no MP table\n");
	else
		printf("MP table: %d cpus\n", mp);

	memcpy((void *)TRAMPOLINE, trampoline_start, (size_t)(trampoline_end - trampoline_start));
	mmio_write32(LAPIC + LAPIC_SVR, 0x1ff); /* software-enable the local APIC */
	icr_send(0x000c4500);                   /* INIT, assert, all excluding self */
	delay(200);
	icr_send(0x000c4600 | (TRAMPOLINE >> 12)); /* STARTUP */
	delay(50);
	icr_send(0x000c4600 | (TRAMPOLINE >> 12));

	/* Wait about 10 s at most (at >= 1 GHz TSC), however fast the CPU is emulated. */
	uint64_t t0 = rdtsc();
	while (cpus_up < n && rdtsc() - t0 < 10000000000ull)
		for (int i = 0; i < 1000 && cpus_up < n; i++)
			cpu_relax();
	spin_lock();
	if (cpus_up == n) {
		printf("all %u cpus up\n", n);
		vm_exit(0);
	}
	printf("FAIL: only %u of %u cpus came up\n", cpus_up, n);
	vm_exit(0x35);
}
