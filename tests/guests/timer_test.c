/* timer_test: the 8254 PIT's channel 0 the way a PC OS uses it: mode 2 (rate generator) at
 * 100 Hz, IRQ 0 through the 8259 PIC (remapped, every other line masked) to vector 0x20, the CPU
 * halted between ticks. It counts 20 tick intervals, prints "timer: 20 ticks" and the TSC cycles
 * per tick; the integration test checks the wall time of the whole run (at least 0.2 s of ticks).
 * With "rtc" on the command line it then counts the ticks between two changes of the CMOS RTC's
 * seconds register (an RTC second is a host second under ferry) and wants 100 +- 25 %.
 * A one-shot local APIC timer (vector 0x30, about 4 s) is the watchdog: if it fires before the
 * ticks have come, the test fails.
 * Exit: 0 (status 1) ok; 0x3a (status 117) the watchdog fired; 0x3b (status 119) wrong rate. */
#include "multiboot.h"
#include "rt.h"

#define PIT_HZ      1193182
#define TICK_HZ     100
#define PIT_DIVISOR ((PIT_HZ + TICK_HZ / 2) / TICK_HZ)
#define TICKS       20
#define TICK_VEC    0x20 /* IRQ 0 after pic_init */
#define WDOG_VEC    0x30
#define WDOG_COUNT  0xf0000000u /* ~4 s of a 1 GHz APIC bus clock (KVM's and QEMU's) */

static volatile unsigned ticks;
static volatile uint64_t tick_tsc[TICKS + 1]; /* TSC at interrupts 0..TICKS */
static volatile int wdog_fired;

static void on_tick(struct irq_frame *f)
{
	if (ticks <= TICKS)
		tick_tsc[ticks] = rdtsc();
	ticks++;
	pic_eoi(0);
}

static void on_watchdog(struct irq_frame *f)
{
	wdog_fired = 1;
	mmio_write32(LAPIC + LAPIC_EOI, 0);
}

static void watchdog_arm(void)
{
	mmio_write32(LAPIC + LAPIC_SVR, 0x1ff);     /* software-enabled, as firmware leaves it */
	mmio_write32(LAPIC + LAPIC_TIMER_DIV, 0xb); /* divide by 1 */
	mmio_write32(LAPIC + LAPIC_LVT_TIMER, WDOG_VEC); /* one-shot, unmasked */
	mmio_write32(LAPIC + LAPIC_TIMER_INIT, WDOG_COUNT);
}

/* Halts until n ticks have been counted (1) or the watchdog fired (0); returns with interrupts
 * off. The check runs with interrupts off and sti's shadow covers hlt, so no tick is missed. */
static int wait_ticks(unsigned n)
{
	for (;;) {
		cli();
		if (ticks >= n)
			return 1;
		if (wdog_fired)
			return 0;
		sti_hlt();
	}
}

__attribute__((noreturn)) static void watchdog_fail(const char *what)
{
	printf("FAIL: %s: only %u PIT interrupts within the ~4 s watchdog\n", what, ticks);
	vm_exit(0x3a);
}

/* Counts the ticks from one change of the RTC's seconds register to the next, checking the
 * register once per tick. */
static void check_rtc_second(void)
{
	unsigned s0 = cmos_read(0x00), s1, t0;
	watchdog_arm();
	while ((s1 = cmos_read(0x00)) == s0)
		if (!wait_ticks(ticks + 1))
			watchdog_fail("rtc");
	t0 = ticks;
	uint64_t c0 = rdtsc();
	while (cmos_read(0x00) == s1)
		if (!wait_ticks(ticks + 1))
			watchdog_fail("rtc");
	unsigned n = ticks - t0;
	printf("rtc: %u ticks in one RTC second (%lu TSC cycles)\n", n, rdtsc() - c0);
	if (n < TICK_HZ * 3 / 4 || n > TICK_HZ * 5 / 4) {
		printf("FAIL: expected %u +- 25%% ticks per RTC second\n", TICK_HZ);
		vm_exit(0x3b);
	}
}

void kmain(uint32_t magic, uint64_t info)
{
	const char *cmdline = mb_cmdline(magic, info);
	printf("timer_test: PIT channel 0, mode 2, divisor %u (%u Hz), IRQ 0 via the 8259\n",
	       PIT_DIVISOR, TICK_HZ);
	idt_init();
	idt_set_handler(TICK_VEC, on_tick, 0);
	idt_set_handler(WDOG_VEC, on_watchdog, 0);
	pic_init(1u << 0);
	outb(0x43, 0x34); /* channel 0, lobyte/hibyte, mode 2, binary */
	outb(0x40, PIT_DIVISOR & 0xff);
	outb(0x40, PIT_DIVISOR >> 8);
	watchdog_arm();

	if (!wait_ticks(TICKS + 1))
		watchdog_fail("pit");
	uint64_t min = ~0ull, max = 0;
	for (int i = 0; i < TICKS; i++) {
		uint64_t d = tick_tsc[i + 1] - tick_tsc[i];
		min = d < min ? d : min;
		max = d > max ? d : max;
	}
	printf("timer: %u ticks\n", TICKS);
	printf("tsc per tick: %lu (min %lu, max %lu)\n", (tick_tsc[TICKS] - tick_tsc[0]) / TICKS,
	       min, max);
	if (cmdline && strstr(cmdline, "rtc"))
		check_rtc_second();
	puts("timer_test ok\n");
	vm_exit(0);
}
