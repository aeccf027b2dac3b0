/* A 16550A UART on COM1 (ports 0x3f8-0x3ff, IRQ 4).
 *
 * Transmission is instantaneous: a byte written to THR goes straight to the serial chardev, so
 * THR and the transmitter are always empty (LSR.THRE and LSR.TEMT always read 1). Received
 * bytes come from the chardev's input thread through uart_receive(), which takes only what fits
 * in the receive FIFO; the chardev holds the rest until the guest drains the FIFO.
 *
 * The interrupt output drives the line level directly (high while an enabled interrupt is
 * pending). It is not gated by MCR.OUT2: guests that never set OUT2 still get interrupts.
 *
 * Under --console virtio the chardev is the virtio-console's: the UART is still there for the
 * guest, but with no line attached (output goes nowhere, no input arrives). */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/chardev.h"
#include "util/log.h"
#include "vm/vm.h"

#define UART_BASE 0x3f8
#define UART_IRQ  4
#define FIFO_SIZE 16

/* IER */
#define IER_ERBFI 0x01 /* received data available */
#define IER_ETBEI 0x02 /* THR empty */
#define IER_ELSI  0x04 /* receiver line status */
#define IER_EDSSI 0x08 /* modem status */

/* IIR */
#define IIR_NONE    0x01
#define IIR_MSR     0x00
#define IIR_THRE    0x02
#define IIR_RDA     0x04
#define IIR_RLS     0x06
#define IIR_TIMEOUT 0x0c
#define IIR_FIFO    0xc0

/* FCR */
#define FCR_ENABLE   0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04
#define FCR_KEEP     0xc9 /* enable, DMA mode, trigger level: the bits that stick */

/* LCR */
#define LCR_DLAB 0x80

/* MCR */
#define MCR_DTR  0x01
#define MCR_RTS  0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MCR_MASK 0x1f

/* LSR */
#define LSR_DR     0x01
#define LSR_OE     0x02
#define LSR_ERRORS 0x1e /* OE, PE, FE, BI: cleared by reading LSR */
#define LSR_THRE   0x20
#define LSR_TEMT   0x40

/* MSR */
#define MSR_DCTS   0x01
#define MSR_DDSR   0x02
#define MSR_TERI   0x04
#define MSR_DDCD   0x08
#define MSR_DELTAS 0x0f
#define MSR_CTS    0x10
#define MSR_DSR    0x20
#define MSR_RI     0x40
#define MSR_DCD    0x80

static const char uart_tag[8] = "uart8250";
#define UART_STATE_VERSION 1

struct uart {
	pthread_mutex_t lock;
	struct vm *vm;
	struct device dev;

	uint8_t rx[FIFO_SIZE]; /* receive FIFO (one slot used when FIFOs are off) */
	uint8_t rx_head, rx_count;
	uint8_t ier, lcr, mcr, fcr, scr, dll, dlm;
	uint8_t lsr_err;   /* latched LSR error bits */
	uint8_t msr_delta; /* MSR delta bits; the line bits are derived from MCR */
	bool thr_ipending; /* THR-empty interrupt pending (until IIR read or THR write) */

	/* Not guest state: bookkeeping with the chardev and the interrupt line. */
	struct chardev *cd; /* the serial chardev, or NULL when it is not the UART's */
	bool rx_blocked;    /* the chardev holds bytes that did not fit */
	int irq_level;      /* level last driven, -1 when unknown */
};

static unsigned rx_capacity(const struct uart *u)
{
	return (u->fcr & FCR_ENABLE) ? FIFO_SIZE : 1;
}

static unsigned rx_trigger(const struct uart *u)
{
	static const uint8_t levels[4] = {1, 4, 8, 14};
	return levels[u->fcr >> 6];
}

/* Modem status lines: in loopback they follow MCR's outputs; otherwise the port looks like it
 * has a live peer (carrier, data set ready, clear to send), so guests do not wait for one. */
static uint8_t msr_lines(uint8_t mcr)
{
	if (!(mcr & MCR_LOOP))
		return MSR_DCD | MSR_DSR | MSR_CTS;
	uint8_t v = 0;
	if (mcr & MCR_RTS)
		v |= MSR_CTS;
	if (mcr & MCR_DTR)
		v |= MSR_DSR;
	if (mcr & MCR_OUT1)
		v |= MSR_RI;
	if (mcr & MCR_OUT2)
		v |= MSR_DCD;
	return v;
}

/* The highest-priority enabled pending interrupt, as IIR bits 0-3. */
static uint8_t pending_id(const struct uart *u)
{
	if ((u->ier & IER_ELSI) && (u->lsr_err & LSR_ERRORS))
		return IIR_RLS;
	/* Data below the trigger level is reported as a character timeout straight away: the
	 * guest reads everything there is either way. */
	if ((u->ier & IER_ERBFI) && u->rx_count)
		return ((u->fcr & FCR_ENABLE) && u->rx_count < rx_trigger(u)) ? IIR_TIMEOUT
									      : IIR_RDA;
	if ((u->ier & IER_ETBEI) && u->thr_ipending)
		return IIR_THRE;
	if ((u->ier & IER_EDSSI) && (u->msr_delta & MSR_DELTAS))
		return IIR_MSR;
	return IIR_NONE;
}

static void update_irq(struct uart *u)
{
	int level = pending_id(u) != IIR_NONE;
	if (level != u->irq_level) {
		u->irq_level = level;
		vm_irq_line(u->vm, UART_IRQ, level);
	}
}

static void rx_clear(struct uart *u)
{
	u->rx_head = 0;
	u->rx_count = 0;
}

/* Appends a byte arriving on the receive line. On overrun the 16550 loses the incoming byte
 * with FIFOs on, and overwrites the holding register with them off. */
static void rx_push(struct uart *u, uint8_t b)
{
	if (u->rx_count >= rx_capacity(u)) {
		u->lsr_err |= LSR_OE;
		if (!(u->fcr & FCR_ENABLE))
			u->rx[u->rx_head] = b;
		return;
	}
	u->rx[(u->rx_head + u->rx_count) % FIFO_SIZE] = b;
	u->rx_count++;
}

static uint8_t rx_pop(struct uart *u)
{
	if (!u->rx_count)
		return 0;
	uint8_t b = u->rx[u->rx_head];
	u->rx_head = (uint8_t)((u->rx_head + 1) % FIFO_SIZE);
	u->rx_count--;
	return b;
}

/* True when the chardev holds input and the FIFO is now empty: time to let it retry. Called
 * under the lock; the caller wakes the chardev after unlocking. */
static bool take_drained(struct uart *u)
{
	if (u->rx_blocked && u->rx_count == 0) {
		u->rx_blocked = false;
		return true;
	}
	return false;
}

static void write_reg(struct uart *u, unsigned reg, uint8_t v)
{
	switch (reg) {
	case 0:
		if (u->lcr & LCR_DLAB) {
			u->dll = v;
		} else {
			if (u->mcr & MCR_LOOP)
				rx_push(u, v);
			else
				chardev_write(u->cd, &v, 1);
			/* The byte left THR at once: THR is empty again. */
			u->thr_ipending = true;
		}
		break;
	case 1:
		if (u->lcr & LCR_DLAB) {
			u->dlm = v;
		} else {
			v &= 0x0f;
			/* Enabling the THRE interrupt while THR is empty raises it. */
			if ((v & IER_ETBEI) && !(u->ier & IER_ETBEI))
				u->thr_ipending = true;
			u->ier = v;
		}
		break;
	case 2:
		/* Switching the FIFOs on or off empties them. */
		if ((v ^ u->fcr) & FCR_ENABLE)
			rx_clear(u);
		if (v & FCR_ENABLE) {
			if (v & FCR_CLEAR_RX)
				rx_clear(u);
			/* FCR_CLEAR_TX: the transmitter is always empty. */
			u->fcr = v & FCR_KEEP;
		} else {
			u->fcr = 0; /* the other bits only take with the FIFO enable bit */
		}
		break;
	case 3:
		u->lcr = v;
		break;
	case 4: {
		uint8_t old = msr_lines(u->mcr);
		u->mcr = v & MCR_MASK;
		uint8_t now = msr_lines(u->mcr);
		uint8_t changed = old ^ now;
		if (changed & MSR_CTS)
			u->msr_delta |= MSR_DCTS;
		if (changed & MSR_DSR)
			u->msr_delta |= MSR_DDSR;
		if (changed & MSR_DCD)
			u->msr_delta |= MSR_DDCD;
		if ((old & MSR_RI) && !(now & MSR_RI))
			u->msr_delta |= MSR_TERI; /* trailing edge only */
		break;
	}
	case 5:
	case 6:
		break; /* LSR and MSR writes are for factory testing: ignored */
	case 7:
		u->scr = v;
		break;
	}
}

static uint8_t read_reg(struct uart *u, unsigned reg)
{
	switch (reg) {
	case 0:
		return (u->lcr & LCR_DLAB) ? u->dll : rx_pop(u);
	case 1:
		return (u->lcr & LCR_DLAB) ? u->dlm : u->ier;
	case 2: {
		uint8_t id = pending_id(u);
		/* Reading IIR acknowledges a THRE interrupt, if that is what it reports. */
		if (id == IIR_THRE)
			u->thr_ipending = false;
		return (uint8_t)(id | ((u->fcr & FCR_ENABLE) ? IIR_FIFO : 0));
	}
	case 3:
		return u->lcr;
	case 4:
		return u->mcr;
	case 5: {
		uint8_t v =
		    (uint8_t)(LSR_THRE | LSR_TEMT | u->lsr_err | (u->rx_count ? LSR_DR : 0));
		u->lsr_err = 0;
		return v;
	}
	case 6: {
		uint8_t v = (uint8_t)(msr_lines(u->mcr) | u->msr_delta);
		u->msr_delta = 0;
		return v;
	}
	case 7:
		return u->scr;
	}
	return 0xff;
}

static void uart_io(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool write)
{
	struct uart *u = opaque;
	bool wake;
	pthread_mutex_lock(&u->lock);
	/* A wider access acts as byte accesses to consecutive registers, as on the ISA bus. The
	 * bus guarantees offset + size <= 8. */
	for (unsigned i = 0; i < size; i++) {
		unsigned reg = (unsigned)(offset + i) & 7;
		if (write)
			write_reg(u, reg, data[i]);
		else
			data[i] = read_reg(u, reg);
	}
	update_irq(u);
	wake = take_drained(u);
	pthread_mutex_unlock(&u->lock);
	if (wake)
		chardev_accept_input(u->cd);
}

/* Input thread: bytes typed at the console. */
static size_t uart_receive(void *opaque, const uint8_t *buf, size_t len)
{
	struct uart *u = opaque;
	size_t n = 0;
	pthread_mutex_lock(&u->lock);
	if (u->mcr & MCR_LOOP) {
		/* In loopback the receiver is cut off from the line: what arrives is lost. */
		n = len;
	} else {
		while (n < len && u->rx_count < rx_capacity(u))
			rx_push(u, buf[n++]);
		if (n < len)
			u->rx_blocked = true;
	}
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
	return n;
}

static void uart_quit(void *opaque)
{
	struct uart *u = opaque;
	vm_stop(u->vm, VM_STOP_USER, 0, "quit from the console");
}

static void uart_save(void *opaque, struct state_writer *w)
{
	struct uart *u = opaque;
	pthread_mutex_lock(&u->lock);
	sw_begin(w, uart_tag, UART_STATE_VERSION);
	sw_bytes(w, u->rx, sizeof(u->rx));
	sw_u8(w, u->rx_head);
	sw_u8(w, u->rx_count);
	sw_u8(w, u->ier);
	sw_u8(w, u->lcr);
	sw_u8(w, u->mcr);
	sw_u8(w, u->fcr);
	sw_u8(w, u->scr);
	sw_u8(w, u->dll);
	sw_u8(w, u->dlm);
	sw_u8(w, u->lsr_err);
	sw_u8(w, u->msr_delta);
	sw_u8(w, u->thr_ipending);
	pthread_mutex_unlock(&u->lock);
}

static int uart_load(void *opaque, struct state_reader *r)
{
	struct uart *u = opaque;
	struct uart t;
	memset(&t, 0, sizeof(t));
	sr_begin(r, uart_tag, UART_STATE_VERSION);
	sr_bytes(r, t.rx, sizeof(t.rx));
	t.rx_head = sr_u8(r);
	t.rx_count = sr_u8(r);
	t.ier = sr_u8(r);
	t.lcr = sr_u8(r);
	t.mcr = sr_u8(r);
	t.fcr = sr_u8(r);
	t.scr = sr_u8(r);
	t.dll = sr_u8(r);
	t.dlm = sr_u8(r);
	t.lsr_err = sr_u8(r);
	t.msr_delta = sr_u8(r);
	uint8_t thr = sr_u8(r);
	sr_check(r, (t.fcr & ~FCR_KEEP) == 0);
	sr_check(r, t.rx_head < FIFO_SIZE && t.rx_count <= rx_capacity(&t));
	sr_check(r, (t.ier & ~0x0f) == 0 && (t.mcr & ~MCR_MASK) == 0);
	sr_check(r, (t.lsr_err & ~LSR_ERRORS) == 0 && (t.msr_delta & ~MSR_DELTAS) == 0);
	sr_check(r, thr <= 1);
	if (r->err)
		return -1;

	pthread_mutex_lock(&u->lock);
	memcpy(u->rx, t.rx, sizeof(u->rx));
	u->rx_head = t.rx_head;
	u->rx_count = t.rx_count;
	u->ier = t.ier;
	u->lcr = t.lcr;
	u->mcr = t.mcr;
	u->fcr = t.fcr;
	u->scr = t.scr;
	u->dll = t.dll;
	u->dlm = t.dlm;
	u->lsr_err = t.lsr_err;
	u->msr_delta = t.msr_delta;
	u->thr_ipending = thr;
	/* The chardev may hold input from before the load: let it retry once the FIFO has
	 * drained, and re-drive the line whatever level it had. */
	u->rx_blocked = true;
	u->irq_level = -1;
	update_irq(u);
	bool wake = take_drained(u);
	pthread_mutex_unlock(&u->lock);
	if (wake)
		chardev_accept_input(u->cd);
	return 0;
}

static void uart_destroy(void *opaque)
{
	struct uart *u = opaque;
	/* Waits for a receive callback in flight; none can start after this. */
	chardev_set_handlers(u->cd, NULL, NULL, NULL);
	pthread_mutex_destroy(&u->lock);
	free(u);
}

static int uart_create(struct vm *vm)
{
	struct uart *u = calloc(1, sizeof(*u));
	if (!u) {
		log_error("uart: out of memory");
		return -1;
	}
	pthread_mutex_init(&u->lock, NULL);
	u->vm = vm;
	u->irq_level = -1;
	u->cd = vm->cfg->virtio_console ? NULL : vm->serial;
	/* Power-on state: everything zero except the derived LSR/MSR bits; THR starts empty but
	 * no THRE interrupt is pending until the guest enables it. */
	if (bus_register(&vm->pio, UART_BASE, 8, uart_io, u, "uart8250") < 0) {
		log_error("uart: ports 0x%x-0x%x are taken", UART_BASE, UART_BASE + 7);
		pthread_mutex_destroy(&u->lock);
		free(u);
		return -1;
	}
	u->dev = (struct device){
	    .name = "uart8250",
	    .opaque = u,
	    .save = uart_save,
	    .load = uart_load,
	    .destroy = uart_destroy,
	};
	vm_add_device(vm, &u->dev);
	pthread_mutex_lock(&u->lock);
	update_irq(u); /* the line starts low */
	pthread_mutex_unlock(&u->lock);
	chardev_set_handlers(u->cd, uart_receive, uart_quit, u);
	return 0;
}

static struct device_type uart_type = {.name = "uart8250", .order = 10, .create = uart_create};
DEVICE_REGISTER(uart_type)
