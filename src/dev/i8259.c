/* The cascaded 8259A pair of a PC, modelled from the 8259A datasheet, plus the PIIX/ICH ELCR.
 *
 * Each chip keeps IRR, ISR, IMR, its input pin levels and its programming. Priority is a
 * rotation: `prio` is the level that currently ranks highest (0 after initialization), and a
 * level's rank is its distance from it. A chip requests service when its best unmasked IRR bit
 * outranks its best ISR bit.
 *
 * Choices where the datasheet leaves room or the PC differs from a bare 8259A:
 * - The cascade is fixed wiring: the slave's INTR is the master's IR2 input. It is tracked as a
 *   level (master IRR bit 2 always equals the slave's INTR), so a slave request that is still
 *   pending after an auto-EOI acknowledge is not lost for want of a new edge.
 * - Edge mode latches a rising edge in IRR until acknowledged even if the line drops first
 *   (callers pulse lines); a bare 8259A would give a spurious IR7 then.
 * - As on the PIIX, edge/level comes from the ELCR only; ICW1's LTIM bit is kept but ignored.
 * - Only 8086 mode vectors are produced (ICW2 bits 7-3 + level); the slave ID in the slave's
 *   ICW3 and the buffered-mode bits of ICW4 are kept but do not change the fixed wiring.
 * - ICW1 also clears ISR, so a guest re-initializing a chip starts with nothing in service. */
#include "dev/i8259.h"

#include <stdlib.h>
#include <string.h>

#include "vm/state.h"

#define ICW1_IC4   0x01 /* ICW4 follows */
#define ICW1_SNGL  0x02 /* single chip: no ICW3 */
#define ICW1_LTIM  0x08
#define ICW1_INIT  0x10

#define ICW4_AEOI  0x02
#define ICW4_SFNM  0x10
#define ICW4_MASK  0x1f

#define OCW3_SEL   0x08 /* distinguishes OCW3 from OCW2 */
#define OCW3_RIS   0x01
#define OCW3_RR    0x02
#define OCW3_POLL  0x04
#define OCW3_SMM   0x20
#define OCW3_ESMM  0x40

#define CASCADE_IR 2

/* ELCR bits that may be set: IRQ 0, 1, 2 (master) and 8, 13 (slave) are always edge. */
static const uint8_t elcr_writable[2] = {0xf8, 0xde};

/* Init sequence position: which ICW the data port takes next (0 = none, operational). */
enum { INIT_DONE = 0, INIT_ICW2 = 2, INIT_ICW3 = 3, INIT_ICW4 = 4 };

enum { F_READ_ISR = 1, F_POLL = 2, F_SMM = 4, F_ROTATE_AEOI = 8, F_ALL = 15 };

struct pic_chip {
	uint8_t irr, isr, imr;
	uint8_t pins; /* input levels, for edge detection and level mode */
	uint8_t elcr;
	uint8_t icw1, icw2, icw3, icw4; /* icw2 keeps only the vector base, bits 7-3 */
	uint8_t init;                   /* INIT_* */
	uint8_t prio;                   /* level with the highest priority */
	uint8_t flags; /* F_*: OCW3 read select, poll pending, special mask, AEOI rotate */
};

struct i8259 {
	struct pic_chip c[2]; /* master, slave */
};

static const char i8259_tag[8] = "i8259";
#define I8259_STATE_VERSION 1

/* Rank (0 = highest priority) of the best level set in mask, or 8 when mask is empty. */
static unsigned top_rank(const struct pic_chip *c, uint8_t mask)
{
	for (unsigned r = 0; r < 8; r++)
		if (mask & (1u << ((c->prio + r) & 7)))
			return r;
	return 8;
}

static bool is_cascade_line(const struct pic_chip *c, bool master, unsigned level)
{
	return master && !(c->icw1 & ICW1_SNGL) && (c->icw3 & (1u << level));
}

/* The level this chip would present to the CPU now, or -1. */
static int chip_request(const struct pic_chip *c, bool master)
{
	uint8_t pending = c->irr & ~c->imr;
	unsigned want = top_rank(c, pending);
	if (want == 8)
		return -1;
	unsigned level = (c->prio + want) & 7;
	/* Special mask mode: a masked in-service level no longer holds back other levels. */
	uint8_t inservice = (c->flags & F_SMM) ? (uint8_t)(c->isr & ~c->imr) : c->isr;
	unsigned cur = top_rank(c, inservice);
	if (want < cur)
		return (int)level;
	/* Special fully nested mode: a slave's higher request passes its own in-service cascade. */
	if (want == cur && (c->icw4 & ICW4_SFNM) && is_cascade_line(c, master, level))
		return (int)level;
	return -1;
}

/* The master's IR2 input is the slave's INTR output. */
static void update_cascade(struct i8259 *p)
{
	uint8_t bit = 1u << CASCADE_IR;
	if (chip_request(&p->c[1], false) >= 0)
		p->c[0].irr |= bit;
	else
		p->c[0].irr &= (uint8_t)~bit;
}

/* The acknowledge of `level` (INTA or poll): in service unless auto-EOI; edge requests consumed. */
static void chip_ack(struct pic_chip *c, unsigned level)
{
	uint8_t bit = 1u << level;
	if (!(c->elcr & bit))
		c->irr &= (uint8_t)~bit;
	if (c->icw4 & ICW4_AEOI) {
		if (c->flags & F_ROTATE_AEOI)
			c->prio = (level + 1) & 7;
	} else {
		c->isr |= bit;
	}
}

static void chip_reset(struct pic_chip *c)
{
	memset(c, 0, sizeof(*c));
	c->imr = 0xff;
}

struct i8259 *i8259_create(void)
{
	struct i8259 *p = calloc(1, sizeof(*p));
	if (p)
		i8259_reset(p);
	return p;
}

void i8259_destroy(struct i8259 *p)
{
	free(p);
}

void i8259_reset(struct i8259 *p)
{
	chip_reset(&p->c[0]);
	chip_reset(&p->c[1]);
}

void i8259_set_irq(struct i8259 *p, unsigned irq, int level)
{
	if (irq > 15 || irq == CASCADE_IR)
		return;
	struct pic_chip *c = &p->c[irq >> 3];
	uint8_t bit = 1u << (irq & 7);
	bool was = c->pins & bit;
	if (level) {
		c->pins |= bit;
		if ((c->elcr & bit) || !was)
			c->irr |= bit;
	} else {
		c->pins &= (uint8_t)~bit;
		if (c->elcr & bit)
			c->irr &= (uint8_t)~bit;
	}
	update_cascade(p);
}

bool i8259_intr(const struct i8259 *p)
{
	return chip_request(&p->c[0], true) >= 0;
}

static uint8_t vector_base(const struct pic_chip *c)
{
	return c->icw2 & 0xf8;
}

uint8_t i8259_intack(struct i8259 *p)
{
	struct pic_chip *m = &p->c[0], *s = &p->c[1];
	int level = chip_request(m, true);
	if (level < 0)
		return vector_base(m) | 7;
	chip_ack(m, (unsigned)level);
	uint8_t vec;
	if (is_cascade_line(m, true, (unsigned)level)) {
		int sl = chip_request(s, false);
		if (sl < 0) {
			vec = vector_base(s) | 7; /* the slave's spurious IR7 */
		} else {
			chip_ack(s, (unsigned)sl);
			vec = vector_base(s) + (uint8_t)sl;
		}
	} else {
		vec = vector_base(m) + (uint8_t)level;
	}
	update_cascade(p);
	return vec;
}

/* A read after a poll command: acknowledges like INTA and reports 0x80 | level, or 0. */
static uint8_t chip_poll(struct i8259 *p, unsigned n)
{
	struct pic_chip *c = &p->c[n];
	c->flags &= (uint8_t)~F_POLL;
	int level = chip_request(c, n == 0);
	if (level < 0)
		return 0;
	chip_ack(c, (unsigned)level);
	update_cascade(p);
	return 0x80 | (uint8_t)level;
}

static void write_icw1(struct pic_chip *c, uint8_t v)
{
	c->icw1 = v;
	c->init = INIT_ICW2;
	/* Edge sense reset: latched edges are dropped and a high line must go low and high again;
	 * level requests keep following their lines. */
	c->irr &= c->elcr;
	c->isr = 0;
	c->imr = 0;
	c->prio = 0;
	c->flags = 0; /* IRR read select, no poll, special mask off, no AEOI rotation */
	c->icw3 = 0;
	c->icw4 = 0;
}

static void write_ocw2(struct pic_chip *c, uint8_t v)
{
	unsigned level = v & 7;
	switch (v >> 5) {
	case 1: /* non-specific EOI */
	case 5: /* rotate on non-specific EOI */
	{
		unsigned r = top_rank(c, c->isr);
		if (r == 8)
			break;
		unsigned top = (c->prio + r) & 7;
		c->isr &= (uint8_t) ~(1u << top);
		if (v >> 5 == 5)
			c->prio = (top + 1) & 7;
		break;
	}
	case 3: /* specific EOI */
		c->isr &= (uint8_t) ~(1u << level);
		break;
	case 7: /* rotate on specific EOI: the level becomes the lowest */
		c->isr &= (uint8_t) ~(1u << level);
		c->prio = (level + 1) & 7;
		break;
	case 6: /* set priority: the level becomes the lowest */
		c->prio = (level + 1) & 7;
		break;
	case 4: /* set rotate in auto-EOI mode */
		c->flags |= F_ROTATE_AEOI;
		break;
	case 0: /* clear rotate in auto-EOI mode */
		c->flags &= (uint8_t)~F_ROTATE_AEOI;
		break;
	default: /* 2: no operation */
		break;
	}
}

static void write_ocw3(struct pic_chip *c, uint8_t v)
{
	if (v & OCW3_ESMM)
		c->flags = (v & OCW3_SMM) ? (c->flags | F_SMM) : (c->flags & (uint8_t)~F_SMM);
	if (v & OCW3_RR)
		c->flags =
		    (v & OCW3_RIS) ? (c->flags | F_READ_ISR) : (c->flags & (uint8_t)~F_READ_ISR);
	if (v & OCW3_POLL)
		c->flags |= F_POLL;
}

static void write_data(struct pic_chip *c, uint8_t v)
{
	switch (c->init) {
	case INIT_ICW2:
		c->icw2 = v & 0xf8;
		if (!(c->icw1 & ICW1_SNGL))
			c->init = INIT_ICW3;
		else
			c->init = (c->icw1 & ICW1_IC4) ? INIT_ICW4 : INIT_DONE;
		break;
	case INIT_ICW3:
		c->icw3 = v;
		c->init = (c->icw1 & ICW1_IC4) ? INIT_ICW4 : INIT_DONE;
		break;
	case INIT_ICW4:
		c->icw4 = v & ICW4_MASK;
		c->init = INIT_DONE;
		break;
	default: /* OCW1 */
		c->imr = v;
		break;
	}
}

static void write_elcr(struct pic_chip *c, unsigned n, uint8_t v)
{
	uint8_t elcr = v & elcr_writable[n];
	uint8_t to_level = elcr & ~c->elcr;
	/* A line switched to level mode shows its current level; one switched to edge mode keeps
	 * whatever request it has until acknowledged. */
	c->irr = (uint8_t)((c->irr & ~to_level) | (c->pins & to_level));
	c->elcr = elcr;
}

uint8_t i8259_read(struct i8259 *p, uint16_t port)
{
	switch (port) {
	case I8259_MASTER_CMD:
	case I8259_MASTER_DATA:
	case I8259_SLAVE_CMD:
	case I8259_SLAVE_DATA: {
		unsigned n = port >= I8259_SLAVE_CMD;
		const struct pic_chip *c = &p->c[n];
		/* After a poll command the next read of either port is the poll. */
		if (c->flags & F_POLL)
			return chip_poll(p, n);
		if (port & 1)
			return c->imr;
		return (c->flags & F_READ_ISR) ? c->isr : c->irr;
	}
	case I8259_ELCR_MASTER:
		return p->c[0].elcr;
	case I8259_ELCR_SLAVE:
		return p->c[1].elcr;
	default:
		return 0xff;
	}
}

void i8259_write(struct i8259 *p, uint16_t port, uint8_t v)
{
	switch (port) {
	case I8259_MASTER_CMD:
	case I8259_MASTER_DATA:
	case I8259_SLAVE_CMD:
	case I8259_SLAVE_DATA: {
		struct pic_chip *c = &p->c[port >= I8259_SLAVE_CMD];
		if (port & 1)
			write_data(c, v);
		else if (v & ICW1_INIT)
			write_icw1(c, v);
		else if (v & OCW3_SEL)
			write_ocw3(c, v);
		else
			write_ocw2(c, v);
		break;
	}
	case I8259_ELCR_MASTER:
		write_elcr(&p->c[0], 0, v);
		break;
	case I8259_ELCR_SLAVE:
		write_elcr(&p->c[1], 1, v);
		break;
	default:
		return;
	}
	update_cascade(p);
}

void i8259_save(const struct i8259 *p, struct state_writer *w)
{
	sw_begin(w, i8259_tag, I8259_STATE_VERSION);
	for (unsigned n = 0; n < 2; n++) {
		const struct pic_chip *c = &p->c[n];
		sw_u8(w, c->irr);
		sw_u8(w, c->isr);
		sw_u8(w, c->imr);
		sw_u8(w, c->pins);
		sw_u8(w, c->elcr);
		sw_u8(w, c->icw1);
		sw_u8(w, c->icw2);
		sw_u8(w, c->icw3);
		sw_u8(w, c->icw4);
		sw_u8(w, c->init);
		sw_u8(w, c->prio);
		sw_u8(w, c->flags);
	}
}

int i8259_load(struct i8259 *p, struct state_reader *r)
{
	struct i8259 t = {0};
	sr_begin(r, i8259_tag, I8259_STATE_VERSION);
	for (unsigned n = 0; n < 2; n++) {
		struct pic_chip *c = &t.c[n];
		c->irr = sr_u8(r);
		c->isr = sr_u8(r);
		c->imr = sr_u8(r);
		c->pins = sr_u8(r);
		c->elcr = sr_u8(r);
		c->icw1 = sr_u8(r);
		c->icw2 = sr_u8(r);
		c->icw3 = sr_u8(r);
		c->icw4 = sr_u8(r);
		c->init = sr_u8(r);
		c->prio = sr_u8(r);
		c->flags = sr_u8(r);
		sr_check(r, (c->elcr & ~elcr_writable[n]) == 0);
		sr_check(r, (c->icw2 & 7) == 0 && (c->icw4 & ~ICW4_MASK) == 0);
		sr_check(r, c->prio < 8 && (c->flags & ~F_ALL) == 0);
		sr_check(r, c->init == INIT_DONE || c->init == INIT_ICW2 ||
				(c->init == INIT_ICW3 && !(c->icw1 & ICW1_SNGL)) ||
				(c->init == INIT_ICW4 && (c->icw1 & ICW1_IC4)));
		/* Level-mode requests are the line levels. */
		sr_check(r, ((c->irr ^ c->pins) & c->elcr) == 0);
	}
	sr_check(r, (t.c[0].pins & (1u << CASCADE_IR)) == 0);
	if (r->err)
		return -1;
	/* The master's IR2 request is the slave's output: it must agree with the slave's state. */
	uint8_t saved_ir2 = t.c[0].irr & (1u << CASCADE_IR);
	update_cascade(&t);
	sr_check(r, (t.c[0].irr & (1u << CASCADE_IR)) == saved_ir2);
	if (r->err)
		return -1;
	*p = t;
	return 0;
}
