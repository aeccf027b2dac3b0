/* demo: what `make run` boots. A banner with the CPU count and RAM size from fw_cfg and the
 * multiboot command line, then a mini-shell on COM1 driven by UART receive interrupts through
 * the 8259 PIC (IRQ 4 -> vector 0x24); the CPU halts between keystrokes.
 * Command line "demo-exit": print the banner and power off at once (non-interactive runs).
 * poweroff/reboot both pulse the i8042 reset line: ferry exits 0 only with --no-reboot. */
#include "multiboot.h"
#include "rt.h"

static volatile uint8_t rxbuf[256];
static volatile uint8_t rx_head, rx_tail; /* written by the IRQ handler / the shell */
static char line[128];
static unsigned ncpus;
static uint64_t ram;
static const char *cmdline;

static void on_uart(struct irq_frame *f)
{
	while (inb(COM1 + 5) & 1) { /* data ready */
		uint8_t c = inb(COM1);
		if ((uint8_t)(rx_head + 1) != rx_tail)
			rxbuf[rx_head++] = c;
	}
	pic_eoi(4);
}

static int getc_wait(void)
{
	for (;;) {
		cli();
		if (rx_head != rx_tail) {
			int c = rxbuf[rx_tail++];
			sti();
			return c;
		}
		sti_hlt(); /* no race: an IRQ between the check and hlt is taken after sti's shadow */
	}
}

static unsigned readline(void)
{
	static int last;
	unsigned n = 0;
	for (;;) {
		int c = getc_wait();
		if (c == '\n' && last == '\r') { /* CR LF from a terminal: one line end */
			last = c;
			continue;
		}
		last = c;
		if (c == '\r' || c == '\n') {
			puts("\n");
			line[n] = 0;
			return n;
		}
		if (c == 0x7f || c == 8) {
			if (n) {
				n--;
				puts("\b \b");
			}
		} else if (c == 3) { /* ^C */
			puts("^C\n");
			n = 0;
			line[0] = 0;
			return 0;
		} else if (c >= ' ' && c < 0x7f && n < sizeof(line) - 1) {
			line[n++] = (char)c;
			putc((char)c);
		}
	}
}

static void info(void)
{
	printf("cpus: %u\nram: %lu MiB\ncmdline: %s\n", ncpus, ram >> 20, cmdline ? cmdline : "");
}

static void shell(void)
{
	for (;;) {
		puts("ferry> ");
		readline();
		char *cmd = line;
		while (*cmd == ' ')
			cmd++;
		if (!*cmd)
			continue;
		if (!strcmp(cmd, "help")) {
			puts(
			    "commands:\n"
			    "  help          this list\n"
			    "  info          CPU count, RAM size, kernel command line\n"
			    "  echo TEXT     print TEXT\n"
			    "  exit N        write N to the debug-exit port (ferry exits with "
			    "(N<<1)|1)\n"
			    "  reboot        reset through the i8042\n"
			    "  poweroff      the same reset; ferry run --no-reboot then exits 0\n");
		} else if (!strcmp(cmd, "info")) {
			info();
		} else if (!strncmp(cmd, "echo", 4) && (cmd[4] == ' ' || !cmd[4])) {
			printf("%s\n", cmd[4] ? cmd + 5 : "");
		} else if (!strncmp(cmd, "exit", 4) && (cmd[4] == ' ' || !cmd[4])) {
			unsigned v = (unsigned)parse_num(cmd[4] ? cmd + 5 : "0", NULL);
			printf("exit %u\n", v & 0xff);
			vm_exit((uint8_t)v);
		} else if (!strcmp(cmd, "reboot")) {
			puts("rebooting\n");
			i8042_reset();
		} else if (!strcmp(cmd, "poweroff")) {
			puts("powering off\n");
			i8042_reset();
		} else {
			printf("unknown command '%s' (try help)\n", cmd);
		}
	}
}

void kmain(uint32_t magic, uint64_t info_addr)
{
	cmdline = mb_cmdline(magic, info_addr);
	ncpus = fwcfg_ncpus();
	ram = fwcfg_ram_size();
	puts("\n  ferry demo guest\n  ----------------\n");
	info();
	if (cmdline && strstr(cmdline, "demo-exit")) {
		puts("demo-exit: powering off\n");
		i8042_reset();
	}
	puts("type 'help' for commands\n");

	idt_init();
	idt_set_handler(0x24, on_uart, 0);
	outb(COM1 + 3, 0x03); /* 8N1, DLAB off */
	outb(COM1 + 2, 0x07); /* FIFOs on and cleared, interrupt at 1 byte */
	outb(COM1 + 4, 0x0b); /* DTR, RTS, OUT2 (gates the IRQ line on a PC) */
	outb(COM1 + 1, 0x01); /* interrupt on received data */
	pic_init(1u << 4);
	while (inb(COM1 + 5) & 1) /* anything that came before the IRQ was enabled */
		rxbuf[rx_head++] = inb(COM1);
	sti();
	shell();
}
