/* The PS/2 (8042) keyboard controller at ports 0x60 (data) and 0x64 (status / command), and
 * System Control Port A at 0x92. No keyboard or mouse is attached: the controller answers its
 * own commands like a real one, and every byte sent to a device gets 0xFE with the status
 * timeout bit -- what a controller reports for an empty socket -- so a guest's PS/2 drivers find
 * no devices quickly instead of waiting. Both the controller and port 0x92 can reset the
 * machine, which is how many guests reboot. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "vm/vm.h"

#define I8042_DATA 0x60
#define I8042_CMD  0x64
#define PORT92     0x92
#define KBD_IRQ    1
#define AUX_IRQ    12

/* Status register */
#define ST_OBF     0x01 /* output buffer full */
#define ST_SYS     0x04 /* system flag: self-test passed */
#define ST_CMD     0x08 /* last write was to the command port */
#define ST_UNLOCK  0x10 /* keyboard not inhibited */
#define ST_AUXOBF  0x20 /* output buffer holds mouse data */
#define ST_TIMEOUT 0x40 /* the device did not answer */
#define ST_STORED  (ST_OBF | ST_SYS | ST_CMD | ST_AUXOBF | ST_TIMEOUT)

/* Command byte (internal RAM byte 0) */
#define CB_KBDINT  0x01
#define CB_AUXINT  0x02
#define CB_SYS     0x04
#define CB_KBDDIS  0x10
#define CB_AUXDIS  0x20
#define CB_XLATE   0x40
#define CB_DEFAULT (CB_KBDINT | CB_SYS | CB_AUXDIS | CB_XLATE)

/* Output port */
#define OP_RESET   0x01 /* 0 holds the CPU in reset */
#define OP_A20     0x02
#define OP_KBDOBF  0x10
#define OP_AUXOBF  0x20
#define OP_DEFAULT (OP_RESET | OP_A20)

/* Port 0x92 */
#define P92_RESET 0x01
#define P92_A20   0x02

/* Controller commands */
#define C_READ_RAM       0x20 /* 0x20-0x3f */
#define C_WRITE_RAM      0x60 /* 0x60-0x7f, take a data byte */
#define C_AUX_DISABLE    0xa7
#define C_AUX_ENABLE     0xa8
#define C_AUX_TEST       0xa9
#define C_SELF_TEST      0xaa
#define C_KBD_TEST       0xab
#define C_KBD_DISABLE    0xad
#define C_KBD_ENABLE     0xae
#define C_READ_INPUT     0xc0
#define C_READ_OUTPUT    0xd0
#define C_WRITE_OUTPUT   0xd1
#define C_WRITE_KBD_OBUF 0xd2
#define C_WRITE_AUX_OBUF 0xd3
#define C_WRITE_AUX      0xd4
#define C_A20_OFF        0xdd
#define C_A20_ON         0xdf
#define C_PULSE          0xf0 /* 0xf0-0xff: pulse output port bits 0-3 that are 0 in the command */

#define DEV_NAK          0xfe

static const char i8042_tag[8] = "i8042";
#define I8042_STATE_VERSION 1

struct i8042 {
	pthread_mutex_t lock;
	struct vm *vm;
	struct device dev;

	uint8_t status;  /* ST_STORED bits */
	uint8_t ram[32]; /* internal RAM; ram[0] is the command byte */
	uint8_t outb;    /* output buffer: what a data port read returns */
	uint8_t outport;
	uint8_t pending; /* a command waiting for its data byte, or 0 */
	uint8_t port92;  /* P92_A20 and the bits above; the reset bit is never stored */

	int irq_kbd, irq_aux; /* levels last driven, -1 when unknown */
};

static bool takes_data(uint8_t cmd)
{
	return (cmd >= C_WRITE_RAM && cmd <= C_WRITE_RAM + 0x1f) ||
	       (cmd >= C_WRITE_OUTPUT && cmd <= C_WRITE_AUX);
}

static void set_line(struct vm *vm, unsigned gsi, int *cur, int level)
{
	if (*cur != level) {
		*cur = level;
		vm_irq_line(vm, gsi, level);
	}
}

/* IRQ 1 / IRQ 12 follow a full output buffer holding keyboard / mouse data when the command
 * byte enables them. */
static void update_irq(struct i8042 *k)
{
	bool full = k->status & ST_OBF, aux = k->status & ST_AUXOBF;
	set_line(k->vm, KBD_IRQ, &k->irq_kbd, full && !aux && (k->ram[0] & CB_KBDINT));
	set_line(k->vm, AUX_IRQ, &k->irq_aux, full && aux && (k->ram[0] & CB_AUXINT));
}

static void queue(struct i8042 *k, uint8_t v, bool aux, bool timeout)
{
	k->outb = v;
	k->status &= (uint8_t) ~(ST_AUXOBF | ST_TIMEOUT);
	k->status |= ST_OBF;
	if (aux)
		k->status |= ST_AUXOBF;
	if (timeout)
		k->status |= ST_TIMEOUT;
}

static uint8_t output_port(const struct i8042 *k)
{
	uint8_t v = k->outport & (uint8_t) ~(OP_KBDOBF | OP_AUXOBF);
	if (k->status & ST_OBF)
		v |= (k->status & ST_AUXOBF) ? OP_AUXOBF : OP_KBDOBF;
	return v;
}

/* Returns true when the guest asked for a reset. */
static bool command(struct i8042 *k, uint8_t cmd)
{
	k->pending = 0;
	if (cmd >= C_READ_RAM && cmd <= C_READ_RAM + 0x1f) {
		queue(k, k->ram[cmd & 0x1f], false, false);
		return false;
	}
	if (takes_data(cmd)) {
		k->pending = cmd;
		return false;
	}
	if (cmd >= C_PULSE)
		return !(cmd & OP_RESET); /* 0xfe pulses the reset line; 0xff is a no-op */
	switch (cmd) {
	case C_AUX_DISABLE:
		k->ram[0] |= CB_AUXDIS;
		break;
	case C_AUX_ENABLE:
		k->ram[0] &= (uint8_t)~CB_AUXDIS;
		break;
	case C_AUX_TEST:
	case C_KBD_TEST:
		queue(k, 0x00, false, false); /* interface test passed */
		break;
	case C_SELF_TEST:
		k->status |= ST_SYS;
		queue(k, 0x55, false, false);
		break;
	case C_KBD_DISABLE:
		k->ram[0] |= CB_KBDDIS;
		break;
	case C_KBD_ENABLE:
		k->ram[0] &= (uint8_t)~CB_KBDDIS;
		break;
	case C_READ_INPUT:
		queue(k, 0x80, false, false); /* keyboard not inhibited */
		break;
	case C_READ_OUTPUT:
		queue(k, output_port(k), false, false);
		break;
	case C_A20_OFF:
		k->outport &= (uint8_t)~OP_A20;
		break;
	case C_A20_ON:
		k->outport |= OP_A20;
		break;
	default:
		break; /* vendor commands: ignored */
	}
	return false;
}

/* A byte written to the data port. Returns true when the guest asked for a reset. */
static bool data(struct i8042 *k, uint8_t v)
{
	uint8_t cmd = k->pending;
	k->pending = 0;
	switch (cmd) {
	case 0:
		/* For the keyboard, which is absent. */
		queue(k, DEV_NAK, false, true);
		return false;
	case C_WRITE_OUTPUT:
		k->outport = v & (uint8_t) ~(OP_KBDOBF | OP_AUXOBF);
		return !(v & OP_RESET);
	case C_WRITE_KBD_OBUF:
		queue(k, v, false, false);
		return false;
	case C_WRITE_AUX_OBUF:
		queue(k, v, true, false);
		return false;
	case C_WRITE_AUX:
		/* For the mouse, which is absent. */
		queue(k, DEV_NAK, true, true);
		return false;
	default: /* C_WRITE_RAM range */
		k->ram[cmd & 0x1f] = v;
		if (cmd == C_WRITE_RAM) {
			if (v & CB_SYS)
				k->status |= ST_SYS;
			else
				k->status &= (uint8_t)~ST_SYS;
		}
		return false;
	}
}

static void i8042_port(struct i8042 *k, bool cmd_port, uint8_t *buf, unsigned size, bool write)
{
	bool reset = false;
	pthread_mutex_lock(&k->lock);
	if (write) {
		if (cmd_port) {
			k->status |= ST_CMD;
			reset = command(k, buf[0]);
		} else {
			k->status &= (uint8_t)~ST_CMD;
			reset = data(k, buf[0]);
		}
	} else {
		memset(buf, 0, size);
		if (cmd_port) {
			buf[0] = k->status | ST_UNLOCK;
		} else {
			/* With nothing queued this returns the last byte again, like the chip. */
			buf[0] = k->outb;
			k->status &= (uint8_t) ~(ST_OBF | ST_TIMEOUT);
		}
	}
	update_irq(k);
	pthread_mutex_unlock(&k->lock);
	if (reset)
		vm_stop(k->vm, VM_STOP_RESET, 0, "guest reset through the i8042");
}

static void i8042_data_io(void *opaque, uint64_t offset, uint8_t *buf, unsigned size, bool write)
{
	(void)offset;
	i8042_port(opaque, false, buf, size, write);
}

static void i8042_cmd_io(void *opaque, uint64_t offset, uint8_t *buf, unsigned size, bool write)
{
	(void)offset;
	i8042_port(opaque, true, buf, size, write);
}

static void port92_io(void *opaque, uint64_t offset, uint8_t *buf, unsigned size, bool write)
{
	struct i8042 *k = opaque;
	(void)offset;
	if (!write) {
		memset(buf, 0, size);
		pthread_mutex_lock(&k->lock);
		buf[0] = k->port92;
		pthread_mutex_unlock(&k->lock);
		return;
	}
	pthread_mutex_lock(&k->lock);
	k->port92 = buf[0] & (uint8_t)~P92_RESET;
	pthread_mutex_unlock(&k->lock);
	if (buf[0] & P92_RESET)
		vm_stop(k->vm, VM_STOP_RESET, 0, "guest reset through port 0x92 (fast reset)");
}

static void i8042_save(void *opaque, struct state_writer *w)
{
	struct i8042 *k = opaque;
	pthread_mutex_lock(&k->lock);
	sw_begin(w, i8042_tag, I8042_STATE_VERSION);
	sw_u8(w, k->status);
	sw_bytes(w, k->ram, sizeof(k->ram));
	sw_u8(w, k->outb);
	sw_u8(w, k->outport);
	sw_u8(w, k->pending);
	sw_u8(w, k->port92);
	pthread_mutex_unlock(&k->lock);
}

static int i8042_load(void *opaque, struct state_reader *r)
{
	struct i8042 *k = opaque;
	uint8_t ram[32];
	sr_begin(r, i8042_tag, I8042_STATE_VERSION);
	uint8_t status = sr_u8(r);
	sr_bytes(r, ram, sizeof(ram));
	uint8_t outb = sr_u8(r);
	uint8_t outport = sr_u8(r);
	uint8_t pending = sr_u8(r);
	uint8_t port92 = sr_u8(r);
	sr_check(r, (status & ~ST_STORED) == 0);
	sr_check(r, (outport & (OP_KBDOBF | OP_AUXOBF)) == 0);
	sr_check(r, pending == 0 || takes_data(pending));
	sr_check(r, (port92 & P92_RESET) == 0);
	if (r->err)
		return -1;
	pthread_mutex_lock(&k->lock);
	k->status = status;
	memcpy(k->ram, ram, sizeof(ram));
	k->outb = outb;
	k->outport = outport;
	k->pending = pending;
	k->port92 = port92;
	k->irq_kbd = k->irq_aux = -1; /* re-drive both lines */
	update_irq(k);
	pthread_mutex_unlock(&k->lock);
	return 0;
}

static void i8042_destroy(void *opaque)
{
	struct i8042 *k = opaque;
	pthread_mutex_destroy(&k->lock);
	free(k);
}

static int i8042_create(struct vm *vm)
{
	struct i8042 *k = calloc(1, sizeof(*k));
	if (!k) {
		log_error("i8042: out of memory");
		return -1;
	}
	pthread_mutex_init(&k->lock, NULL);
	k->vm = vm;
	k->status = ST_SYS; /* as the firmware would leave it after its self-test */
	k->ram[0] = CB_DEFAULT;
	k->outport = OP_DEFAULT;
	k->port92 = P92_A20;
	k->irq_kbd = k->irq_aux = -1;
	/* On failure vm_create gives up on the whole VM, so ranges already claimed are never
	 * dispatched to again. */
	if (bus_register(&vm->pio, I8042_DATA, 1, i8042_data_io, k, "i8042-data") < 0 ||
	    bus_register(&vm->pio, I8042_CMD, 1, i8042_cmd_io, k, "i8042-cmd") < 0 ||
	    bus_register(&vm->pio, PORT92, 1, port92_io, k, "port92") < 0) {
		log_error("i8042: ports 0x60, 0x64 or 0x92 are taken");
		pthread_mutex_destroy(&k->lock);
		free(k);
		return -1;
	}
	k->dev = (struct device){
	    .name = "i8042",
	    .opaque = k,
	    .save = i8042_save,
	    .load = i8042_load,
	    .destroy = i8042_destroy,
	};
	vm_add_device(vm, &k->dev);
	pthread_mutex_lock(&k->lock);
	update_irq(k);
	pthread_mutex_unlock(&k->lock);
	return 0;
}

static struct device_type i8042_type = {.name = "i8042", .order = 30, .create = i8042_create};
DEVICE_REGISTER(i8042_type)
