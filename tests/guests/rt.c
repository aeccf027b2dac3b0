/* ferry test guests: shared runtime (see rt.h). */
#include "rt.h"

/* ---- machine ---- */
void fwcfg_read(uint16_t key, void *buf, size_t len)
{
	uint8_t *p = buf;
	outw(FW_CFG_SEL, key);
	for (size_t i = 0; i < len; i++)
		p[i] = inb(FW_CFG_DATA);
}

int fwcfg_present(void)
{
	char sig[4];
	fwcfg_read(FW_CFG_SIGNATURE, sig, 4);
	return sig[0] == 'Q' && sig[1] == 'E' && sig[2] == 'M' && sig[3] == 'U';
}

unsigned fwcfg_ncpus(void)
{
	uint16_t n = 0;
	fwcfg_read(FW_CFG_NB_CPUS, &n, 2);
	return n;
}

uint64_t fwcfg_ram_size(void)
{
	uint64_t n = 0;
	fwcfg_read(FW_CFG_RAM_SIZE, &n, 8);
	return n;
}

unsigned cmos_read(uint8_t reg)
{
	outb(0x70, reg);
	return inb(0x71);
}

void halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

void vm_exit(uint8_t v)
{
	outb(EXIT_PORT, v);
	halt_forever();
}

void i8042_reset(void)
{
	outb(0x64, 0xfe);
	halt_forever();
}

/* ---- console ---- */
static void uart_tx(char c)
{
	/* Wait (boundedly) for THR empty: an emulated UART normally reports it at once. */
	for (int i = 0; i < 1000 && !(inb(COM1 + 5) & 0x20); i++)
		cpu_relax();
	outb(COM1, (uint8_t)c);
}

void putc(char c)
{
	if (c == '\n')
		uart_tx('\r');
	uart_tx(c);
}

void puts(const char *s)
{
	while (*s)
		putc(*s++);
}

static void put_u(uint64_t v, unsigned base, int width, char pad)
{
	char buf[24];
	int n = 0;
	do {
		buf[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	while (width-- > n)
		putc(pad);
	while (n)
		putc(buf[--n]);
}

void vprintf(const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			putc(*fmt);
			continue;
		}
		char pad = ' ';
		int width = 0, lng = 0;
		fmt++;
		if (*fmt == '0')
			pad = '0';
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l')
			lng = 1, fmt++;
		switch (*fmt) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			puts(s ? s : "(null)");
			break;
		}
		case 'c':
			putc((char)va_arg(ap, int));
			break;
		case 'd': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			if (v < 0) {
				putc('-');
				v = -v;
			}
			put_u((uint64_t)v, 10, width, pad);
			break;
		}
		case 'u':
			put_u(lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, width, pad);
			break;
		case 'x':
			put_u(lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, width, pad);
			break;
		case 'p':
			puts("0x");
			put_u((uint64_t)va_arg(ap, void *), 16, width, pad);
			break;
		case '%':
			putc('%');
			break;
		case 0:
			return;
		default:
			putc('?');
		}
	}
}

void printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

/* ---- strings ---- */
size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (unsigned char)*a - (unsigned char)*b;
		if (!*a)
			break;
	}
	return 0;
}

int strcmp(const char *a, const char *b)
{
	return strncmp(a, b, (size_t)-1);
}

const char *strstr(const char *h, const char *n)
{
	size_t l = strlen(n);
	for (; *h; h++)
		if (!strncmp(h, n, l))
			return h;
	return l ? NULL : h;
}

void *memcpy(void *d, const void *s, size_t n)
{
	void *r = d;
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n)::"memory");
	return r;
}

void *memset(void *d, int c, size_t n)
{
	void *r = d;
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return r;
}

uint64_t parse_num(const char *s, const char **end)
{
	uint64_t v = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		for (s += 2;; s++) {
			char c = *s;
			unsigned d;
			if (c >= '0' && c <= '9')
				d = c - '0';
			else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
				d = (c | 0x20) - 'a' + 10;
			else
				break;
			v = v * 16 + d;
		}
	} else {
		while (*s >= '0' && *s <= '9')
			v = v * 10 + (*s++ - '0');
	}
	if (end)
		*end = s;
	return v;
}

int cmdline_exit_code(const char *cmdline)
{
	if (!cmdline)
		return -1;
	for (const char *p = cmdline; (p = strstr(p, "exit=")); p++)
		if (p == cmdline || p[-1] == ' ')
			return (int)(parse_num(p + 5, NULL) & 0xff);
	return -1;
}

void print_first_line(const char *buf, uint64_t len, unsigned max)
{
	for (uint64_t i = 0; i < len && i < max && buf[i] != '\n' && buf[i]; i++)
		putc(buf[i]);
}

void finish(const char *cmdline)
{
	int code = cmdline_exit_code(cmdline);
	if (code >= 0) {
		printf("exiting with %d\n", code);
		vm_exit((uint8_t)code);
	}
	puts("done (no exit= on the command line): halting\n");
	halt_forever();
}
