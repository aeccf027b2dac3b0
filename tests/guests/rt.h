/* ferry test guests: the tiny shared runtime (64-bit, freestanding).
 * Everything a guest needs to talk to the machine: port I/O, the COM1 UART, fw_cfg, the
 * isa-debug-exit port, the i8042 reset line, a small printf and string helpers, and (cpu.c)
 * an IDT with C handlers, a TSS, and the drop to CPL 3. Guest code runs at CPL 0, which the
 * development host emulates at ~2 us per instruction, so all of this is kept short. */
#ifndef GUEST_RT_H
#define GUEST_RT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* ---- port I/O ---- */
static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}
static inline void outw(uint16_t port, uint16_t v)
{
	__asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port));
}
static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline uint32_t mmio_read32(uint64_t addr)
{
	return *(volatile uint32_t *)addr;
}
static inline void mmio_write32(uint64_t addr, uint32_t v)
{
	*(volatile uint32_t *)addr = v;
}
static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}
static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

/* ---- machine ---- */
#define COM1             0x3f8
#define EXIT_PORT        0xf4 /* isa-debug-exit: status (v << 1) | 1 */
#define FW_CFG_SEL       0x510
#define FW_CFG_DATA      0x511
#define FW_CFG_SIGNATURE 0x00
#define FW_CFG_RAM_SIZE  0x03
#define FW_CFG_NB_CPUS   0x05

/* Local APIC (xAPIC, at its reset address) registers. */
#define LAPIC            0xfee00000ull
#define LAPIC_ID         0x20
#define LAPIC_EOI        0xb0
#define LAPIC_SVR        0xf0
#define LAPIC_ICR_LO     0x300
#define LAPIC_ICR_HI     0x310
#define LAPIC_LVT_TIMER  0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_DIV  0x3e0

void fwcfg_read(uint16_t key, void *buf, size_t len);
unsigned fwcfg_ncpus(void);
uint64_t fwcfg_ram_size(void);
int fwcfg_present(void); /* signature "QEMU" */
/* Reads a CMOS/RTC register (ports 0x70/0x71, NMI left enabled). */
unsigned cmos_read(uint8_t reg);

struct cpuid_regs {
	uint32_t a, b, c, d;
};
static inline struct cpuid_regs cpuid(uint32_t leaf, uint32_t subleaf)
{
	struct cpuid_regs r;
	__asm__ volatile("cpuid"
			 : "=a"(r.a), "=b"(r.b), "=c"(r.c), "=d"(r.d)
			 : "a"(leaf), "c"(subleaf));
	return r;
}

/* Writes v to the debug-exit port (the VMM ends with status (v << 1) | 1) and stops. */
__attribute__((noreturn)) void vm_exit(uint8_t v);
/* Pulses the reset line through the i8042 (0xFE to port 0x64); stops if nothing happens. */
__attribute__((noreturn)) void i8042_reset(void);
__attribute__((noreturn)) void halt_forever(void);

/* ---- console (COM1, polled output) ---- */
void putc(char c); /* '\n' goes out as "\r\n" */
void puts(const char *s);
/* %s %c %d %u %x %lx %lu %ld %p; l/ll are the same (64-bit); width/zero-pad for %x/%u/%d. */
void printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vprintf(const char *fmt, va_list ap);

/* ---- strings ---- */
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
const char *strstr(const char *h, const char *n);
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
/* Parses an unsigned decimal (or 0x hex) number; *end (optional) gets the first unused char. */
uint64_t parse_num(const char *s, const char **end);
/* Value of "exit=N" on a command line, or -1 when absent. */
int cmdline_exit_code(const char *cmdline);
/* Prints the first line (at most max chars) of a buffer. */
void print_first_line(const char *buf, uint64_t len, unsigned max);
/* Ends the test: writes N to the exit port if the cmdline says exit=N, else halts. */
__attribute__((noreturn)) void finish(const char *cmdline);

/* ---- cpu.c: interrupts, TSS, user mode ---- */
struct irq_frame {
	uint64_t r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
	uint64_t vec, err;
	uint64_t rip, cs, rflags, rsp, ss;
};
typedef void (*irq_handler_t)(struct irq_frame *f);
/* Loads an IDT whose vectors 0-63 and 0x80 go to C (0x20-0x2f: the PIC, after pic_init); a
 * vector without a handler is acknowledged and ignored if it is the PIC's, else printed, then
 * exit(0x7d). */
void idt_init(void);
void idt_set_handler(unsigned vec, irq_handler_t h, unsigned dpl);
/* Installs the TSS (RSP0 = kernel stack top for interrupts from CPL 3). */
void tss_init(uint64_t rsp0);
/* iretq to fn(arg) at CPL 3 with the given stack; interrupts stay off. */
__attribute__((noreturn)) void enter_user(void (*fn)(uint64_t), uint64_t arg, uint64_t user_rsp);
static inline void sti(void)
{
	__asm__ volatile("sti" ::: "memory");
}
static inline void cli(void)
{
	__asm__ volatile("cli" ::: "memory");
}
/* Enables interrupts and halts until one arrives (sti's shadow makes it race-free). */
static inline void sti_hlt(void)
{
	__asm__ volatile("sti; hlt" ::: "memory");
}

/* 8259 PIC pair remapped to vectors 0x20-0x2f, all lines masked except those in unmask. */
void pic_init(uint16_t unmask);
void pic_eoi(unsigned irq);

/* ---- entry ---- */
/* Each guest defines kmain. magic/info are what the boot protocol handed over:
 * multiboot: EAX, EBX; PVH: 0, EBX (hvm_start_info); bzImage: 0, RSI (boot_params). */
void kmain(uint32_t magic, uint64_t info);

#endif
