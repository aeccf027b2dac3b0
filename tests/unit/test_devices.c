/* The legacy PC devices driven through the port I/O bus exactly as a guest drives them: the
 * 16550A UART, the i8042, the CMOS RTC, the debug exit port and fw_cfg, plus their save/load
 * records. The only test double is the interrupt controller input (engine_ops.irq_line), which
 * records line levels. The serial console is the real "stdio" chardev with stdin and stdout
 * swapped for pipes, so input goes through the backend's own thread and backpressure. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend/chardev.h"
#include "vm/bus.h"
#include "vm/device.h"
#include "vm/mem.h"
#include "vm/state.h"
#include "vm/vm.h"

#include "test_vm.h"

#define NLINES 32

static atomic_int irq_level[NLINES];
static atomic_int irq_calls[NLINES];

static int test_irq_line(struct vm *vm, unsigned gsi, int level)
{
	(void)vm;
	if (gsi < NLINES) {
		atomic_store(&irq_level[gsi], level);
		atomic_fetch_add(&irq_calls[gsi], 1);
	}
	return 0;
}

static const struct engine_ops test_engine = {.name = "test", .irq_line = test_irq_line};

static const char *const my_devices[] = {"uart8250", "i8042", "rtc", "debugexit", "fw_cfg", NULL};

struct tvm {
	struct vm vm;
	struct vm_config cfg;
	int in_w;  /* write end of the pipe that is stdin */
	int out_r; /* read end of the pipe that is stdout */
	int saved_stdin, saved_stdout;
};

static struct tvm *tvm_new(uint64_t mem_size)
{
	struct tvm *t = calloc(1, sizeof(*t));
	char err[256];
	assert_non_null(t);
	for (int i = 0; i < NLINES; i++) {
		atomic_store(&irq_level[i], -1);
		atomic_store(&irq_calls[i], 0);
	}
	t->cfg.mem_size = mem_size;
	t->cfg.smp = 2;
	t->cfg.serial = "stdio";
	if (test_vm_init(&t->vm, &t->cfg, &test_engine) < 0) {
		free(t);
		return NULL;
	}

	/* stdin and stdout become pipes for the life of the VM. */
	int in[2], out[2];
	assert_int_equal(pipe(in), 0);
	assert_int_equal(pipe(out), 0);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	fflush(stdout);
	t->saved_stdin = dup(STDIN_FILENO);
	t->saved_stdout = dup(STDOUT_FILENO);
	dup2(in[0], STDIN_FILENO);
	dup2(out[1], STDOUT_FILENO);
	close(in[0]);
	close(out[1]);
	t->in_w = in[1];
	t->out_r = out[0];

	t->vm.serial = chardev_open("stdio", err, sizeof(err));
	assert_non_null(t->vm.serial);
	assert_int_equal(test_vm_add_devices(&t->vm, my_devices), 0);
	assert_int_equal(chardev_start(t->vm.serial), 0);
	return t;
}

static void tvm_free(struct tvm *t)
{
	test_vm_destroy(&t->vm);
	chardev_close(t->vm.serial);
	close(t->in_w);
	close(t->out_r);
	dup2(t->saved_stdin, STDIN_FILENO);
	dup2(t->saved_stdout, STDOUT_FILENO);
	close(t->saved_stdin);
	close(t->saved_stdout);
	free(t);
}

static int setup(void **state)
{
	*state = tvm_new(256ull << 20);
	return *state ? 0 : -1;
}

static int teardown(void **state)
{
	tvm_free(*state);
	return 0;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static void outb(struct tvm *t, uint16_t port, uint8_t v)
{
	assert_int_equal(bus_access(&t->vm.pio, port, &v, 1, true), 0);
}

static uint8_t inb(struct tvm *t, uint16_t port)
{
	uint8_t v = 0x5a;
	assert_int_equal(bus_access(&t->vm.pio, port, &v, 1, false), 0);
	return v;
}

static void outl(struct tvm *t, uint16_t port, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	assert_int_equal(bus_access(&t->vm.pio, port, b, 4, true), 0);
}

static void outw(struct tvm *t, uint16_t port, uint16_t v)
{
	uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
	assert_int_equal(bus_access(&t->vm.pio, port, b, 2, true), 0);
}

static int level(unsigned gsi)
{
	return atomic_load(&irq_level[gsi]);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* Polls a port until (value & mask) == want, or fails after timeout_ms. */
static uint8_t wait_port(struct tvm *t, uint16_t port, uint8_t mask, uint8_t want, int timeout_ms)
{
	uint8_t v = 0;
	for (int i = 0; i < timeout_ms; i++) {
		v = inb(t, port);
		if ((v & mask) == want)
			return v;
		sleep_ms(1);
	}
	fail_msg("port 0x%x stayed 0x%02x (mask 0x%02x, wanted 0x%02x)", port, v, mask, want);
	return v;
}

static void wait_level(unsigned gsi, int want, int timeout_ms)
{
	for (int i = 0; i < timeout_ms; i++) {
		if (level(gsi) == want)
			return;
		sleep_ms(1);
	}
	fail_msg("irq %u stayed at %d, wanted %d", gsi, level(gsi), want);
}

static size_t read_output(struct tvm *t, char *buf, size_t cap)
{
	ssize_t n = read(t->out_r, buf, cap);
	return n > 0 ? (size_t)n : 0;
}

static void type_input(struct tvm *t, const void *p, size_t n)
{
	assert_int_equal(write(t->in_w, p, n), (ssize_t)n);
}

static struct device *find_dev(struct tvm *t, const char *name)
{
	for (struct device *d = t->vm.devices; d; d = d->next)
		if (strcmp(d->name, name) == 0)
			return d;
	fail_msg("no device %s", name);
	return NULL;
}

static void clear_stop(struct tvm *t)
{
	atomic_store(&t->vm.stop_reason, VM_RUNNING);
	t->vm.exit_status = 0;
	t->vm.stop_msg[0] = 0;
}

/* ---- UART -------------------------------------------------------------------------------- */

#define COM1 0x3f8
#define THR  (COM1 + 0)
#define RBR  (COM1 + 0)
#define DLL  (COM1 + 0)
#define IER  (COM1 + 1)
#define DLM  (COM1 + 1)
#define IIR  (COM1 + 2)
#define FCR  (COM1 + 2)
#define LCR  (COM1 + 3)
#define MCR  (COM1 + 4)
#define LSR  (COM1 + 5)
#define MSR  (COM1 + 6)
#define SCR  (COM1 + 7)

static void test_uart_reset_state(void **state)
{
	struct tvm *t = *state;
	assert_int_equal(inb(t, IER), 0);
	assert_int_equal(inb(t, IIR), 0x01);
	assert_int_equal(inb(t, LSR), 0x60);        /* THRE | TEMT */
	assert_int_equal(inb(t, MSR) & 0xf0, 0xb0); /* DCD, DSR, CTS */
	assert_int_equal(level(4), 0);
}

static void test_uart_transmit(void **state)
{
	struct tvm *t = *state;
	const char *msg = "hello\r\n";
	for (const char *p = msg; *p; p++)
		outb(t, THR, (uint8_t)*p);
	char buf[64] = {0};
	assert_int_equal(read_output(t, buf, sizeof(buf)), strlen(msg));
	assert_string_equal(buf, msg);
	assert_int_equal(inb(t, LSR) & 0x60, 0x60);
}

static void test_uart_thre_interrupt(void **state)
{
	struct tvm *t = *state;
	outb(t, IER, 0x02); /* ETBEI while THR is empty: interrupt at once */
	assert_int_equal(level(4), 1);
	assert_int_equal(inb(t, IIR), 0x02);
	assert_int_equal(level(4), 0); /* reading IIR acknowledged it */
	assert_int_equal(inb(t, IIR), 0x01);
	outb(t, THR, 'x'); /* THR empties again: interrupt again */
	assert_int_equal(level(4), 1);
	outb(t, IER, 0x00);
	assert_int_equal(level(4), 0);
	outb(t, IER, 0x02);
	assert_int_equal(level(4), 1);
	outb(t, THR, 'y'); /* writing THR clears and re-raises: still pending */
	assert_int_equal(inb(t, IIR), 0x02);
	assert_int_equal(level(4), 0);
	/* Re-writing IER with ETBEI already set raises nothing new. */
	outb(t, IER, 0x02);
	assert_int_equal(level(4), 0);
	char buf[8];
	assert_int_equal(read_output(t, buf, sizeof(buf)), 2);
}

static void test_uart_loopback(void **state)
{
	struct tvm *t = *state;
	outb(t, MCR, 0x10 | 0x02 | 0x08);           /* loop, RTS, OUT2 */
	assert_int_equal(inb(t, MSR) & 0xf0, 0x90); /* CTS from RTS, DCD from OUT2 */
	outb(t, THR, 'A');
	assert_int_equal(inb(t, LSR) & 0x01, 0x01);
	assert_int_equal(inb(t, RBR), 'A');
	assert_int_equal(inb(t, LSR) & 0x01, 0x00);
	char buf[8];
	assert_int_equal(read_output(t, buf, sizeof(buf)), 0); /* nothing left the port */

	/* Without FIFOs a second byte overruns the first. */
	outb(t, IER, 0x04); /* line status interrupts */
	outb(t, THR, '1');
	outb(t, THR, '2');
	assert_int_equal(level(4), 1);
	assert_int_equal(inb(t, IIR), 0x06);
	assert_int_equal(inb(t, LSR) & 0x03, 0x03); /* DR | OE */
	assert_int_equal(inb(t, LSR) & 0x02, 0x00); /* reading LSR cleared OE */
	assert_int_equal(level(4), 0);
	assert_int_equal(inb(t, RBR), '2');

	/* Modem status deltas follow MCR changes in loopback. */
	inb(t, MSR);
	outb(t, IER, 0x08);
	outb(t, MCR, 0x10 | 0x01 | 0x04); /* DTR, OUT1: DSR, RI on; CTS, DCD off */
	assert_int_equal(level(4), 1);
	assert_int_equal(inb(t, IIR), 0x00);
	assert_int_equal(inb(t, MSR), 0x60 | 0x01 | 0x02 | 0x08);
	assert_int_equal(level(4), 0);
	outb(t, MCR, 0x10); /* RI falls: trailing edge */
	assert_int_equal(inb(t, MSR), 0x02 | 0x04);
	outb(t, MCR, 0x00); /* out of loopback: lines back to a live peer */
	assert_int_equal(inb(t, MSR) & 0xf0, 0xb0);
	outb(t, IER, 0);
}

static void test_uart_dlab_scratch_lcr(void **state)
{
	struct tvm *t = *state;
	outb(t, IER, 0x05);
	outb(t, LCR, 0x83);
	outb(t, DLL, 0x0c);
	outb(t, DLM, 0x01);
	assert_int_equal(inb(t, DLL), 0x0c);
	assert_int_equal(inb(t, DLM), 0x01);
	assert_int_equal(inb(t, LCR), 0x83);
	outb(t, LCR, 0x03);
	assert_int_equal(inb(t, IER), 0x05);
	outb(t, IER, 0xff);
	assert_int_equal(inb(t, IER), 0x0f); /* the upper IER bits do not exist */
	outb(t, IER, 0);
	char buf[8];
	assert_int_equal(read_output(t, buf, sizeof(buf)), 0); /* DLL writes are not data */
	outb(t, SCR, 0xa5);
	assert_int_equal(inb(t, SCR), 0xa5);
	outb(t, MCR, 0xff);
	assert_int_equal(inb(t, MCR), 0x1f);
	outb(t, MCR, 0);
}

static void test_uart_fifo_control(void **state)
{
	struct tvm *t = *state;
	outb(t, FCR, 0x01);
	assert_int_equal(inb(t, IIR) & 0xc0, 0xc0);
	outb(t, MCR, 0x10);
	for (int i = 0; i < 5; i++)
		outb(t, THR, (uint8_t)('a' + i));
	assert_int_equal(inb(t, LSR) & 0x03, 0x01); /* five bytes fit, no overrun */
	assert_int_equal(inb(t, RBR), 'a');
	outb(t, FCR, 0x03); /* clear the receive FIFO */
	assert_int_equal(inb(t, LSR) & 0x01, 0);
	/* A full FIFO loses the incoming byte. */
	for (int i = 0; i < 17; i++)
		outb(t, THR, (uint8_t)i);
	assert_int_equal(inb(t, LSR) & 0x03, 0x03);
	for (int i = 0; i < 16; i++)
		assert_int_equal(inb(t, RBR), i);
	assert_int_equal(inb(t, LSR) & 0x01, 0);
	/* Turning the FIFOs off empties them. */
	outb(t, THR, 'z');
	outb(t, FCR, 0x00);
	assert_int_equal(inb(t, IIR) & 0xc0, 0);
	assert_int_equal(inb(t, LSR) & 0x01, 0);
	outb(t, MCR, 0);
}

static void test_uart_receive_fifo(void **state)
{
	struct tvm *t = *state;
	outb(t, FCR, 0xc1); /* FIFOs on, trigger at 14 */
	outb(t, IER, 0x01);
	assert_int_equal(level(4), 0);
	uint8_t in[20];
	for (int i = 0; i < 20; i++)
		in[i] = (uint8_t)('A' + i);
	type_input(t, in, sizeof(in));
	/* The FIFO takes 16; at or above the trigger level IIR reports data available. */
	wait_port(t, IIR, 0x0f, 0x04, 2000);
	assert_int_equal(level(4), 1);
	for (int i = 0; i < 16; i++)
		assert_int_equal(inb(t, RBR), in[i]);
	/* Drained: the backend delivers the 4 it held; below the trigger it is a timeout. */
	wait_port(t, IIR, 0x0f, 0x0c, 2000);
	assert_int_equal(level(4), 1);
	for (int i = 16; i < 20; i++)
		assert_int_equal(inb(t, RBR), in[i]);
	assert_int_equal(inb(t, LSR) & 0x03, 0x00);
	assert_int_equal(inb(t, IIR), 0xc1);
	assert_int_equal(level(4), 0);
}

static void test_uart_receive_no_fifo(void **state)
{
	struct tvm *t = *state;
	outb(t, IER, 0x01);
	type_input(t, "xyz", 3);
	for (int i = 0; i < 3; i++) {
		wait_port(t, LSR, 0x01, 0x01, 2000);
		assert_int_equal(inb(t, IIR), 0x04);
		assert_int_equal(level(4), 1);
		/* One byte at a time: no overrun, the backend holds the rest. */
		assert_int_equal(inb(t, LSR) & 0x02, 0);
		assert_int_equal(inb(t, RBR), "xyz"[i]);
	}
	sleep_ms(20);
	assert_int_equal(inb(t, LSR) & 0x01, 0);
	assert_int_equal(level(4), 0);
}

static void test_uart_console_escapes(void **state)
{
	struct tvm *t = *state;
	/* C-a C-a sends one C-a; C-a b sends both; then C-a x quits. */
	type_input(t, "\x01\x01", 2);
	wait_port(t, LSR, 0x01, 0x01, 2000);
	assert_int_equal(inb(t, RBR), 0x01);
	type_input(t,
		   "\x01"
		   "b",
		   2);
	wait_port(t, LSR, 0x01, 0x01, 2000);
	assert_int_equal(inb(t, RBR), 0x01);
	wait_port(t, LSR, 0x01, 0x01, 2000);
	assert_int_equal(inb(t, RBR), 'b');
	assert_false(vm_stopping(&t->vm));
	type_input(t, "\x01x", 2);
	for (int i = 0; i < 2000 && !vm_stopping(&t->vm); i++)
		sleep_ms(1);
	assert_int_equal(atomic_load(&t->vm.stop_reason), VM_STOP_USER);
	assert_string_equal(t->vm.stop_msg, "quit from the console");
	assert_int_equal(inb(t, LSR) & 0x01, 0);
}

static void test_uart_eof_keeps_running(void **state)
{
	struct tvm *t = *state;
	type_input(t, "q", 1);
	close(t->in_w);
	t->in_w = open("/dev/null", O_WRONLY); /* keeps teardown's close() simple */
	wait_port(t, LSR, 0x01, 0x01, 2000);
	assert_int_equal(inb(t, RBR), 'q');
	sleep_ms(20);
	assert_false(vm_stopping(&t->vm));
}

/* ---- i8042 ------------------------------------------------------------------------------- */

static void test_i8042_controller(void **state)
{
	struct tvm *t = *state;
	uint8_t st = inb(t, 0x64);
	assert_int_equal(st & 0x01, 0); /* nothing to read */
	assert_int_equal(st & 0x02, 0); /* ready for input */

	outb(t, 0x64, 0xaa);
	assert_int_equal(inb(t, 0x64) & 0x0d, 0x0d); /* OBF, SYS, last write was a command */
	assert_int_equal(inb(t, 0x60), 0x55);
	assert_int_equal(inb(t, 0x64) & 0x01, 0);
	assert_int_equal(inb(t, 0x60), 0x55); /* nothing new: the last byte again */

	outb(t, 0x64, 0xab);
	assert_int_equal(inb(t, 0x60), 0x00);
	outb(t, 0x64, 0xa9);
	assert_int_equal(inb(t, 0x60), 0x00);

	/* Command byte: read, write, and the port enable/disable commands. */
	outb(t, 0x64, 0x60);
	outb(t, 0x60, 0x44);
	assert_int_equal(inb(t, 0x64) & 0x08, 0); /* last write was data */
	outb(t, 0x64, 0x20);
	assert_int_equal(inb(t, 0x60), 0x44);
	outb(t, 0x64, 0xad);
	outb(t, 0x64, 0xa7);
	outb(t, 0x64, 0x20);
	assert_int_equal(inb(t, 0x60), 0x74);
	outb(t, 0x64, 0xae);
	outb(t, 0x64, 0xa8);
	outb(t, 0x64, 0x20);
	assert_int_equal(inb(t, 0x60), 0x44);

	/* Output port: the reset line is not asserted. */
	outb(t, 0x64, 0xd0);
	assert_int_equal(inb(t, 0x60) & 0x01, 0x01);
	assert_false(vm_stopping(&t->vm));
}

static void test_i8042_no_devices(void **state)
{
	struct tvm *t = *state;
	outb(t, 0x64, 0x60);
	outb(t, 0x60, 0x47); /* keyboard and mouse interrupts on */
	assert_int_equal(level(1), 0);
	/* A keyboard command: nobody answers, the controller reports a timeout. */
	outb(t, 0x60, 0xff);
	uint8_t st = inb(t, 0x64);
	assert_int_equal(st & 0x61, 0x41); /* OBF | timeout, not mouse data */
	assert_int_equal(level(1), 1);
	assert_int_equal(inb(t, 0x60), 0xfe);
	assert_int_equal(level(1), 0);
	assert_int_equal(inb(t, 0x64) & 0x41, 0);

	/* Mouse command: the same, on IRQ 12. */
	outb(t, 0x64, 0xd4);
	outb(t, 0x60, 0xf2);
	assert_int_equal(inb(t, 0x64) & 0x61, 0x61);
	assert_int_equal(level(12), 1);
	assert_int_equal(inb(t, 0x60), 0xfe);
	assert_int_equal(level(12), 0);

	/* The AUX loopback the Linux driver probes with. */
	outb(t, 0x64, 0xd3);
	outb(t, 0x60, 0x5a);
	assert_int_equal(inb(t, 0x64) & 0x21, 0x21);
	assert_int_equal(level(12), 1);
	assert_int_equal(inb(t, 0x60), 0x5a);
	assert_int_equal(level(12), 0);

	/* Interrupts off: the buffer fills but the line stays low. */
	outb(t, 0x64, 0x60);
	outb(t, 0x60, 0x44);
	outb(t, 0x64, 0xaa);
	assert_int_equal(level(1), 0);
	assert_int_equal(inb(t, 0x60), 0x55);
}

static void test_i8042_resets(void **state)
{
	struct tvm *t = *state;
	outb(t, 0x64, 0xff); /* pulse nothing */
	assert_false(vm_stopping(&t->vm));
	outb(t, 0x64, 0xfe);
	assert_int_equal(atomic_load(&t->vm.stop_reason), VM_STOP_RESET);
	assert_int_equal(t->vm.exit_status, 0);
	assert_string_equal(t->vm.stop_msg, "guest reset through the i8042");

	clear_stop(t);
	outb(t, 0x64, 0xd1);
	outb(t, 0x60, 0x03); /* A20 on, reset line high: no reset */
	assert_false(vm_stopping(&t->vm));
	outb(t, 0x64, 0xd1);
	outb(t, 0x60, 0x02);
	assert_int_equal(atomic_load(&t->vm.stop_reason), VM_STOP_RESET);

	clear_stop(t);
	assert_int_equal(inb(t, 0x92), 0x02);
	outb(t, 0x92, 0x00); /* A20 off */
	assert_int_equal(inb(t, 0x92), 0x00);
	assert_false(vm_stopping(&t->vm));
	outb(t, 0x92, 0x03);
	assert_int_equal(atomic_load(&t->vm.stop_reason), VM_STOP_RESET);
	assert_int_equal(inb(t, 0x92), 0x02); /* the reset bit does not stick */
}

/* ---- RTC --------------------------------------------------------------------------------- */

static uint8_t cmos_read(struct tvm *t, uint8_t reg)
{
	outb(t, 0x70, reg);
	return inb(t, 0x71);
}

static void cmos_write(struct tvm *t, uint8_t reg, uint8_t v)
{
	outb(t, 0x70, reg);
	outb(t, 0x71, v);
}

static int bcd(uint8_t v)
{
	return (v >> 4) * 10 + (v & 15);
}

/* The RTC's time as seconds since the epoch; decode says how the registers are encoded. */
static int64_t rtc_epoch(struct tvm *t, bool binary)
{
	int f[7];
	static const uint8_t regs[7] = {0, 2, 4, 7, 8, 9, 0x32};
	for (int i = 0; i < 7; i++) {
		uint8_t v = cmos_read(t, regs[i]);
		f[i] = binary ? v : bcd(v);
	}
	struct tm tm = {.tm_sec = f[0],
			.tm_min = f[1],
			.tm_hour = f[2],
			.tm_mday = f[3],
			.tm_mon = f[4] - 1,
			.tm_year = f[6] * 100 + f[5] - 1900};
	return (int64_t)timegm(&tm);
}

static void test_rtc_time(void **state)
{
	struct tvm *t = *state;
	assert_int_equal(cmos_read(t, 0x0a), 0x26);
	assert_int_equal(cmos_read(t, 0x0b), 0x02);
	assert_int_equal(cmos_read(t, 0x0d), 0x80);
	assert_int_equal(cmos_read(t, 0x0c), 0x00);

	int64_t now = time(NULL);
	int64_t got = rtc_epoch(t, false);
	assert_true(got >= now - 1 && got <= now + 2);
	struct tm tm;
	time_t tt = (time_t)now;
	gmtime_r(&tt, &tm);
	assert_int_equal(bcd(cmos_read(t, 0x32)), (tm.tm_year + 1900) / 100);
	assert_in_range(bcd(cmos_read(t, 6)), 1, 7);

	/* Binary mode. */
	cmos_write(t, 0x0b, 0x06);
	got = rtc_epoch(t, true);
	assert_true(got >= now - 1 && got <= now + 2);

	/* 12-hour mode: hour 1-12 with bit 7 for PM. */
	cmos_write(t, 0x0b, 0x04);
	now = time(NULL);
	tt = (time_t)now;
	gmtime_r(&tt, &tm);
	uint8_t h = cmos_read(t, 4);
	int h12 = tm.tm_hour % 12 ? tm.tm_hour % 12 : 12;
	if ((h & 0x7f) != h12) /* the hour may have turned meanwhile */
		h12 = (tm.tm_hour + 1) % 12 ? (tm.tm_hour + 1) % 12 : 12;
	assert_int_equal(h & 0x7f, h12);
	cmos_write(t, 0x0b, 0x02);
}

static void test_rtc_set_time(void **state)
{
	struct tvm *t = *state;
	/* The usual way: SET, write the fields, clear SET. */
	cmos_write(t, 0x0b, 0x82);
	cmos_write(t, 0, 0x06);
	cmos_write(t, 2, 0x05);
	cmos_write(t, 4, 0x04);
	cmos_write(t, 7, 0x31); /* 31 March: writing the month first must not normalize */
	cmos_write(t, 8, 0x02);
	cmos_write(t, 8, 0x03);
	cmos_write(t, 9, 0x01);
	cmos_write(t, 0x32, 0x20);
	assert_int_equal(cmos_read(t, 0), 0x06); /* frozen while SET */
	assert_int_equal(cmos_read(t, 8), 0x03);
	sleep_ms(5);
	cmos_write(t, 0x0b, 0x02);
	struct tm want = {
	    .tm_sec = 6, .tm_min = 5, .tm_hour = 4, .tm_mday = 31, .tm_mon = 2, .tm_year = 101};
	int64_t target = (int64_t)timegm(&want);
	int64_t got = rtc_epoch(t, false);
	assert_true(got >= target && got <= target + 2);
	assert_int_equal(cmos_read(t, 6), 7); /* 31 March 2001 was a Saturday */

	/* The new time persists as an offset from host time. */
	sleep_ms(1100);
	got = rtc_epoch(t, false);
	assert_true(got >= target + 1 && got <= target + 3);

	/* One register on its own, SET clear: the year moves, the rest keeps running. */
	cmos_write(t, 9, 0x10);
	assert_int_equal(cmos_read(t, 9), 0x10);
	assert_int_equal(cmos_read(t, 8), 0x03);
}

static void test_rtc_memory_size(void **state)
{
	struct tvm *t = *state;
	/* 256 MiB */
	assert_int_equal(cmos_read(t, 0x15) | cmos_read(t, 0x16) << 8, 640);
	assert_int_equal(cmos_read(t, 0x17) | cmos_read(t, 0x18) << 8, 0xffff);
	assert_int_equal(cmos_read(t, 0x30) | cmos_read(t, 0x31) << 8, 0xffff);
	assert_int_equal(cmos_read(t, 0x34) | cmos_read(t, 0x35) << 8, (256 - 16) * 16);
	assert_int_equal(cmos_read(t, 0x5b) | cmos_read(t, 0x5c) << 8 | cmos_read(t, 0x5d) << 16,
			 0);
	/* Plain RAM elsewhere; the index wraps at 128 and bit 7 is the NMI mask. */
	cmos_write(t, 0x40, 0x99);
	assert_int_equal(cmos_read(t, 0x40), 0x99);
	assert_int_equal(cmos_read(t, 0xc0), 0x99);
}

static void test_rtc_memory_size_small_and_large(void **state)
{
	(void)state;
	/* 8 MiB: 7 MiB extended, nothing above 16 MiB. */
	struct tvm *t = tvm_new(8ull << 20);
	assert_non_null(t);
	assert_int_equal(cmos_read(t, 0x17) | cmos_read(t, 0x18) << 8, 7 * 1024);
	assert_int_equal(cmos_read(t, 0x30) | cmos_read(t, 0x31) << 8, 7 * 1024);
	assert_int_equal(cmos_read(t, 0x34) | cmos_read(t, 0x35) << 8, 0);
	tvm_free(t);

	/* 5 GiB: RAM ends at the 3 GiB hole, 2 GiB continue at 4 GiB (sparse memfd). */
	t = tvm_new(5ull << 30);
	if (!t) {
		skip();
		return;
	}
	assert_int_equal(cmos_read(t, 0x34) | cmos_read(t, 0x35) << 8, 0xbf00);
	assert_int_equal(cmos_read(t, 0x5b) | cmos_read(t, 0x5c) << 8 | cmos_read(t, 0x5d) << 16,
			 0x8000);
	tvm_free(t);
}

static void test_rtc_interrupts(void **state)
{
	struct tvm *t = *state;
	assert_int_equal(level(8), 0);
	/* Update-ended: within a second. */
	cmos_write(t, 0x0b, 0x12);
	wait_level(8, 1, 1500);
	assert_int_equal(cmos_read(t, 0x0c), 0x90);
	assert_int_equal(level(8), 0);
	assert_int_equal(cmos_read(t, 0x0c), 0x00);
	wait_level(8, 1, 1500); /* and the next second again */
	cmos_write(t, 0x0b, 0x02);
	assert_int_equal(level(8), 0); /* flag still set but no longer enabled */
	assert_int_equal(cmos_read(t, 0x0c) & 0x70, 0x10);

	/* Periodic at 1024 Hz. */
	cmos_write(t, 0x0b, 0x42);
	wait_level(8, 1, 200);
	assert_int_equal(cmos_read(t, 0x0c) & 0xc0, 0xc0);
	wait_level(8, 1, 200);
	cmos_write(t, 0x0a, 0x20); /* rate 0: periodic off */
	cmos_read(t, 0x0c);
	sleep_ms(20);
	assert_int_equal(level(8), 0);
	assert_int_equal(cmos_read(t, 0x0c), 0);
	cmos_write(t, 0x0a, 0x26);

	/* Alarm with every field "don't care": fires at the next second. */
	cmos_write(t, 0x0b, 0x22);
	cmos_write(t, 1, 0xc0);
	cmos_write(t, 3, 0xff);
	cmos_write(t, 5, 0xc0);
	cmos_read(t, 0x0c);
	wait_level(8, 1, 1500);
	assert_int_equal(cmos_read(t, 0x0c) & 0xa0, 0xa0);
	cmos_write(t, 0x0b, 0x02);
	cmos_read(t, 0x0c);
	assert_int_equal(level(8), 0);
}

/* ---- debug exit and fw_cfg --------------------------------------------------------------- */

static void test_debugexit(void **state)
{
	struct tvm *t = *state;
	assert_int_equal(inb(t, 0xf4), 0);
	assert_false(vm_stopping(&t->vm));
	outb(t, 0xf4, 0x10);
	assert_int_equal(atomic_load(&t->vm.stop_reason), VM_STOP_EXIT);
	assert_int_equal(t->vm.exit_status, 0x21);
	assert_string_equal(t->vm.stop_msg, "guest wrote 0x10 to the exit port");
	clear_stop(t);
	outb(t, 0xf4, 0x00);
	assert_int_equal(t->vm.exit_status, 1);
	clear_stop(t);
	outw(t, 0xf4, 0x0180);
	assert_int_equal(t->vm.exit_status, 0x01); /* (0x180 << 1 | 1) & 0xff */
	clear_stop(t);
	outl(t, 0xf4, 0x12345678);
	assert_int_equal(t->vm.exit_status, 0xf1);
	assert_string_equal(t->vm.stop_msg, "guest wrote 0x12345678 to the exit port");
}

static void fw_select(struct tvm *t, uint16_t key)
{
	outw(t, 0x510, key);
}

static void test_fwcfg(void **state)
{
	struct tvm *t = *state;
	char sig[5] = {0};
	fw_select(t, 0x0000);
	for (int i = 0; i < 4; i++)
		sig[i] = (char)inb(t, 0x511);
	assert_string_equal(sig, "QEMU");
	assert_int_equal(inb(t, 0x511), 0); /* past the end */
	fw_select(t, 0x0000);               /* selecting again starts over */
	assert_int_equal(inb(t, 0x511), 'Q');

	fw_select(t, 0x0001);
	uint32_t id = 0;
	for (int i = 0; i < 4; i++)
		id |= (uint32_t)inb(t, 0x511) << (8 * i);
	assert_int_equal(id, 1);

	fw_select(t, 0x0005);
	assert_int_equal(inb(t, 0x511), 2);
	assert_int_equal(inb(t, 0x511), 0);
	fw_select(t, 0x000f);
	assert_int_equal(inb(t, 0x511), 2);

	fw_select(t, 0x0003);
	uint64_t ram = 0;
	for (int i = 0; i < 8; i++)
		ram |= (uint64_t)inb(t, 0x511) << (8 * i);
	assert_int_equal(ram, 256ull << 20);

	fw_select(t, 0x0019);
	for (int i = 0; i < 4; i++)
		assert_int_equal(inb(t, 0x511), 0);

	fw_select(t, 0x1234);
	assert_int_equal(inb(t, 0x511), 0);
	fw_select(t, 0x8000);
	assert_int_equal(inb(t, 0x511), 0);
}

/* ---- save / load ------------------------------------------------------------------------- */

static void save_dev(struct device *d, struct state_writer *w)
{
	sw_init(w);
	d->save(d->opaque, w);
	assert_false(w->err);
}

static int load_dev(struct device *d, const void *buf, size_t len)
{
	struct state_reader r;
	sr_init(&r, buf, len);
	return d->load(d->opaque, &r);
}

/* Every record loads back to exactly the same state, and every truncation, a wrong tag and a
 * future version are refused without changing it. */
static void check_roundtrip(struct device *d)
{
	struct state_writer a, b;
	save_dev(d, &a);
	assert_true(a.len >= 12);
	assert_int_equal(load_dev(d, a.buf, a.len), 0);
	save_dev(d, &b);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.buf, b.buf, a.len);
	sw_free(&b);

	uint8_t *bad = malloc(a.len);
	assert_non_null(bad);
	for (size_t n = 0; n < a.len; n++)
		assert_int_equal(load_dev(d, a.buf, n), -1);
	memcpy(bad, a.buf, a.len);
	bad[0] ^= 0x20;
	assert_int_equal(load_dev(d, bad, a.len), -1);
	memcpy(bad, a.buf, a.len);
	bad[8] = 99; /* version */
	assert_int_equal(load_dev(d, bad, a.len), -1);
	free(bad);

	save_dev(d, &b);
	assert_memory_equal(a.buf, b.buf, a.len); /* refused loads changed nothing */
	sw_free(&b);
	sw_free(&a);
}

/* Saves, lets mutate() change the device, loads the saved record back and checks that the
 * device saves identically again. Returns the saved record for further garbling. */
static void check_restores(struct tvm *t, struct device *d, void (*mutate)(struct tvm *),
			   struct state_writer *saved)
{
	struct state_writer after;
	save_dev(d, saved);
	mutate(t);
	save_dev(d, &after);
	assert_true(after.len != saved->len || memcmp(after.buf, saved->buf, after.len) != 0);
	sw_free(&after);
	assert_int_equal(load_dev(d, saved->buf, saved->len), 0);
	save_dev(d, &after);
	assert_int_equal(after.len, saved->len);
	assert_memory_equal(after.buf, saved->buf, after.len);
	sw_free(&after);
}

static void mutate_uart(struct tvm *t)
{
	outb(t, SCR, 0x11);
	outb(t, FCR, 0x00);
	outb(t, MCR, 0x00);
	outb(t, IER, 0x00);
	outb(t, LCR, 0x80);
	outb(t, DLL, 0x01);
	outb(t, LCR, 0x00);
}

static void test_save_load_uart(void **state)
{
	struct tvm *t = *state;
	struct device *d = find_dev(t, "uart8250");
	/* A busy state: FIFOs with data wrapped around, overrun, deltas, divisor, THRE pending. */
	outb(t, FCR, 0x81);
	outb(t, MCR, 0x1b);
	for (int i = 0; i < 10; i++)
		outb(t, THR, (uint8_t)i);
	for (int i = 0; i < 10; i++)
		inb(t, RBR);
	for (int i = 0; i < 17; i++)
		outb(t, THR, (uint8_t)(0x40 + i));
	outb(t, LCR, 0x83);
	outb(t, DLL, 0x0c);
	outb(t, DLM, 0x02);
	outb(t, LCR, 0x03);
	outb(t, SCR, 0x77);
	outb(t, IER, 0x0f);
	check_roundtrip(d);

	struct state_writer saved;
	check_restores(t, d, mutate_uart, &saved);
	/* What the guest sees matches the record. */
	assert_int_equal(inb(t, SCR), 0x77);
	assert_int_equal(inb(t, IIR), 0xc6); /* overrun outranks the data */
	assert_int_equal(level(4), 1);
	assert_int_equal(inb(t, LSR) & 0x03, 0x03);
	for (int i = 0; i < 16; i++)
		assert_int_equal(inb(t, RBR), 0x40 + i);

	/* Out-of-range values: rx_count 17 (record offset 12 + 16 + 1), IER bits 4-7. */
	uint8_t *bad = malloc(saved.len);
	memcpy(bad, saved.buf, saved.len);
	bad[29] = 17;
	assert_int_equal(load_dev(d, bad, saved.len), -1);
	memcpy(bad, saved.buf, saved.len);
	bad[28] = 16; /* rx_head */
	assert_int_equal(load_dev(d, bad, saved.len), -1);
	memcpy(bad, saved.buf, saved.len);
	bad[30] = 0x1f;
	assert_int_equal(load_dev(d, bad, saved.len), -1);
	free(bad);
	sw_free(&saved);
}

static void mutate_i8042(struct tvm *t)
{
	outb(t, 0x60, 0x00); /* completes the pending command */
	inb(t, 0x60);
	outb(t, 0x92, 0x00);
}

static void test_save_load_i8042(void **state)
{
	struct tvm *t = *state;
	struct device *d = find_dev(t, "i8042");
	outb(t, 0x64, 0x60);
	outb(t, 0x60, 0x47);
	outb(t, 0x64, 0x7f);
	outb(t, 0x60, 0xab); /* RAM byte 31 */
	outb(t, 0x64, 0xd3);
	outb(t, 0x60, 0x12); /* mouse data waiting */
	outb(t, 0x64, 0xd1); /* a command waiting for its byte */
	check_roundtrip(d);
	struct state_writer saved;
	check_restores(t, d, mutate_i8042, &saved);
	assert_int_equal(level(12), 1);
	assert_int_equal(inb(t, 0x92), 0x02);
	outb(t, 0x60, 0x03); /* the restored pending 0xd1 takes it */
	outb(t, 0x64, 0xd0);
	assert_int_equal(inb(t, 0x60) & 0x03, 0x03);
	outb(t, 0x64, 0x3f);
	assert_int_equal(inb(t, 0x60), 0xab);

	uint8_t *bad = malloc(saved.len);
	memcpy(bad, saved.buf, saved.len);
	bad[12 + 1 + 32 + 2] = 0x42; /* pending: not a command that takes data */
	assert_int_equal(load_dev(d, bad, saved.len), -1);
	memcpy(bad, saved.buf, saved.len);
	bad[12] = 0x82; /* status: input buffer full, parity error */
	assert_int_equal(load_dev(d, bad, saved.len), -1);
	free(bad);
	sw_free(&saved);
}

static void mutate_rtc(struct tvm *t)
{
	cmos_write(t, 0x50, 0x00);
	cmos_write(t, 9, 0x99);
	cmos_write(t, 0x0b, 0x06);
	outb(t, 0x70, 0x11);
}

static void test_save_load_rtc(void **state)
{
	struct tvm *t = *state;
	struct device *d = find_dev(t, "rtc");
	cmos_write(t, 0x50, 0x5a);
	cmos_write(t, 9, 0x42);    /* an offset */
	cmos_write(t, 0x0b, 0x82); /* SET: frozen fields */
	cmos_write(t, 0, 0x33);
	outb(t, 0x70, 0x80 | 0x0b); /* NMI off, index B */
	check_roundtrip(d);
	struct state_writer saved;
	check_restores(t, d, mutate_rtc, &saved);
	assert_int_equal(inb(t, 0x71), 0x82);
	assert_int_equal(cmos_read(t, 0), 0x33);
	assert_int_equal(cmos_read(t, 9), 0x42);
	assert_int_equal(cmos_read(t, 0x50), 0x5a);

	uint8_t *bad = malloc(saved.len);
	memcpy(bad, saved.buf, saved.len);
	bad[12 + 128] = 0x80; /* index */
	assert_int_equal(load_dev(d, bad, saved.len), -1);
	memcpy(bad, saved.buf, saved.len);
	bad[12 + 128 + 2 + 7] = 0x40; /* offset far beyond any expressible time */
	assert_int_equal(load_dev(d, bad, saved.len), -1);
	memcpy(bad, saved.buf, saved.len);
	bad[12 + 0x0c] = 0x01; /* register C bits that do not exist */
	assert_int_equal(load_dev(d, bad, saved.len), -1);
	free(bad);
	sw_free(&saved);
}

static void mutate_fwcfg(struct tvm *t)
{
	fw_select(t, 0x0005);
}

static void test_save_load_fwcfg_debugexit(void **state)
{
	struct tvm *t = *state;
	struct device *d = find_dev(t, "fw_cfg");
	fw_select(t, 0x0003);
	inb(t, 0x511);
	inb(t, 0x511);
	check_roundtrip(d);
	struct state_writer saved;
	check_restores(t, d, mutate_fwcfg, &saved);
	uint64_t ram = 0;
	for (int i = 2; i < 8; i++)
		ram |= (uint64_t)inb(t, 0x511) << (8 * i);
	assert_int_equal(ram, (256ull << 20) & ~0xffffull);

	uint8_t *bad = malloc(saved.len);
	memcpy(bad, saved.buf, saved.len);
	bad[14] = 9; /* offset past the 8-byte item */
	assert_int_equal(load_dev(d, bad, saved.len), -1);
	free(bad);
	sw_free(&saved);

	check_roundtrip(find_dev(t, "debugexit"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_uart_reset_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uart_transmit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uart_thre_interrupt, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uart_loopback, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uart_dlab_scratch_lcr, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uart_fifo_control, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uart_receive_fifo, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uart_receive_no_fifo, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uart_console_escapes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uart_eof_keeps_running, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_i8042_controller, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_i8042_no_devices, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_i8042_resets, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rtc_time, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rtc_set_time, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rtc_memory_size, setup, teardown),
	    cmocka_unit_test(test_rtc_memory_size_small_and_large),
	    cmocka_unit_test_setup_teardown(test_rtc_interrupts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_debugexit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fwcfg, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_save_load_uart, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_save_load_i8042, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_save_load_rtc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_save_load_fwcfg_debugexit, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
