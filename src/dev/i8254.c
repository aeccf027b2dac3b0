/* The 8254 PIT, modelled from the 8254 datasheet, with time supplied by the caller.
 *
 * A loaded counting element is described by when it started and how far it has counted:
 * e = off + ticks(base_ns, now) while the channel advances (off alone while a low gate holds it),
 * where ticks() turns nanoseconds into 1193182 Hz clock periods with 128-bit arithmetic. The
 * current count started at tick `start`; the count value and OUT are functions of e - start and
 * the mode. Ticks are integers on one fixed base, so periods never drift from rounding.
 *
 * Simplifications, none visible to a guest that waits for the counter rather than for exact
 * CLK edges:
 * - The load of CR into the counting element happens at the write (or gate trigger) itself, not
 *   on the next CLK pulse, so NULL COUNT clears at once and mode 0's OUT rises N ticks (not N+1)
 *   after the count is written.
 * - In modes 2 and 3 a count of 1 counts as 2 (the datasheet makes 1 illegal there), and a new
 *   count written while counting takes over at the end of the current full period (mode 3's
 *   datasheet says half-cycle).
 * - A counter with no count loaded reads the value it held when it stopped. */
#include "dev/i8254.h"

#include <stdlib.h>
#include <string.h>

#include "vm/state.h"

#define NS_PER_S  1000000000u
#define NCH       3
#define CTRL_BCD  0x01
#define CTRL_MASK 0x3f /* RW, mode and BCD bits of a control word, as the status byte shows them */
#define RW_LSB    1
#define RW_MSB    2
#define RW_WORD   3
#define ST_OUT    0x80
#define ST_NULL   0x40
/* Loaded tick counts stay far below this, so sums of them and of a period never wrap. */
#define TICK_LIMIT (1ull << 62)

enum {
	F_GATE = 1,
	F_WRITE_MSB = 2,   /* LSB-then-MSB: the next write is the MSB */
	F_READ_MSB = 4,    /* LSB-then-MSB: the next read is the MSB */
	F_CR_VALID = 8,    /* a complete count was written since the control word */
	F_NULL_COUNT = 16, /* CR written but not yet moved into the counting element */
	F_COUNT_LATCHED = 32,
	F_STATUS_LATCHED = 64,
	F_LOADED = 128,  /* the counting element holds a count and the mode's cycle is under way */
	F_PENDING = 256, /* modes 2/3: a new CR takes over at tick switch_at */
	F_ALL = 511,
};

struct pit_channel {
	uint8_t ctrl;     /* CTRL_MASK bits of the last control word */
	uint8_t cr_lsb;   /* first byte of an LSB-then-MSB count being written */
	uint16_t cr;      /* count register */
	uint16_t latch;   /* latched count (register form) */
	uint16_t hold;    /* counting element (register form) while no count is loaded */
	uint8_t status;   /* latched status byte */
	uint16_t flags;   /* F_* */
	uint32_t n;       /* current count / period in ticks, 1..65536 (2.. in modes 2/3) */
	uint64_t base_ns; /* while advancing, e = off + ticks(base_ns, now) */
	uint64_t off;
	uint64_t start;     /* e at which the current count began */
	uint64_t switch_at; /* F_PENDING: e at which the new count begins */
};

struct i8254 {
	struct pit_channel ch[NCH];
};

static const char i8254_tag[8] = "i8254";
#define I8254_STATE_VERSION 1

/* ---- time ---------------------------------------------------------------------------------- */

static uint64_t ticks_since(uint64_t base_ns, uint64_t now_ns)
{
	if (now_ns <= base_ns)
		return 0;
	return (uint64_t)((unsigned __int128)(now_ns - base_ns) * I8254_HZ / NS_PER_S);
}

/* ---- channel helpers ------------------------------------------------------------------------ */

static unsigned ch_mode(const struct pit_channel *c)
{
	unsigned m = (c->ctrl >> 1) & 7;
	return m > 5 ? m - 4 : m; /* 6 and 7 are aliases of 2 and 3 */
}

static unsigned ch_rw(const struct pit_channel *c)
{
	return (c->ctrl >> 4) & 3;
}

static bool ch_bcd(const struct pit_channel *c)
{
	return c->ctrl & CTRL_BCD;
}

static bool has(const struct pit_channel *c, unsigned f)
{
	return (c->flags & f) != 0;
}

static void set(struct pit_channel *c, unsigned f, bool on)
{
	c->flags = on ? (uint16_t)(c->flags | f) : (uint16_t)(c->flags & ~f);
}

/* Modes 1 and 5 count whatever the gate does once triggered; the others stop while it is low. */
static bool advancing(const struct pit_channel *c)
{
	if (!has(c, F_LOADED))
		return false;
	unsigned m = ch_mode(c);
	return m == 1 || m == 5 || has(c, F_GATE);
}

static uint64_t elapsed(const struct pit_channel *c, uint64_t now_ns)
{
	return advancing(c) ? c->off + ticks_since(c->base_ns, now_ns) : c->off;
}

/* Ticks counted in the current count (0 if a loaded record puts its start in the future). */
static uint64_t rel(const struct pit_channel *c, uint64_t now_ns)
{
	uint64_t e = elapsed(c, now_ns);
	return e > c->start ? e - c->start : 0;
}

static uint32_t modulus(const struct pit_channel *c)
{
	return ch_bcd(c) ? 10000 : 65536;
}

/* CR as a number of ticks: 0 is the largest count, 65536 or (BCD) 10000. Digits above 9 in a
 * BCD count are taken at face value, which keeps the count in range. */
static uint32_t cr_ticks(const struct pit_channel *c)
{
	uint32_t v = c->cr;
	if (ch_bcd(c))
		v = ((v >> 12) & 15) * 1000 + ((v >> 8) & 15) * 100 + ((v >> 4) & 15) * 10 +
		    (v & 15);
	if (v == 0)
		v = modulus(c);
	unsigned m = ch_mode(c);
	if ((m == 2 || m == 3) && v < 2)
		v = 2;
	return v;
}

static uint16_t to_reg(const struct pit_channel *c, uint32_t v)
{
	v %= modulus(c);
	if (!ch_bcd(c))
		return (uint16_t)v;
	return (uint16_t)((v / 1000) << 12 | (v / 100 % 10) << 8 | (v / 10 % 10) << 4 | (v % 10));
}

/* A pending count (modes 2/3) takes over once its period boundary has passed. */
static void sync(struct pit_channel *c, uint64_t now_ns)
{
	if (has(c, F_PENDING) && elapsed(c, now_ns) >= c->switch_at) {
		c->start = c->switch_at;
		c->n = cr_ticks(c);
		set(c, F_PENDING | F_NULL_COUNT, false);
	}
}

/* The counting element's value, register form (binary or BCD). */
static uint16_t count_value(const struct pit_channel *c, uint64_t now_ns)
{
	if (!has(c, F_LOADED))
		return c->hold;
	uint64_t e = rel(c, now_ns);
	uint32_t n = c->n, m = modulus(c), v;
	switch (ch_mode(c)) {
	case 2:
		v = n - (uint32_t)(e % n);
		break;
	case 3: {
		/* Counts down by two: even n from n in both halves; odd n from n - 1, with the high
		 * half one tick longer. */
		uint32_t p = (uint32_t)(e % n), high = (n + 1) / 2;
		uint32_t h = p < high ? p : p - high;
		v = (n & 1) ? n - 1 - 2 * h : n - 2 * h;
		break;
	}
	default: /* 0, 1, 4, 5: one count down, then wrapping on */
		v = (n + m - (uint32_t)(e % m)) % m;
		break;
	}
	return to_reg(c, v);
}

static bool out_level(const struct pit_channel *c, uint64_t now_ns)
{
	unsigned m = ch_mode(c);
	if (!has(c, F_LOADED))
		return m != 0; /* mode 0 starts low, the others high */
	if ((m == 2 || m == 3) && !has(c, F_GATE))
		return true;
	uint64_t e = rel(c, now_ns), n = c->n;
	switch (m) {
	case 0:
	case 1:
		return e >= n;
	case 2:
		return e % n != n - 1;
	case 3:
		return e % n < (n + 1) / 2;
	default: /* 4, 5: low for the one tick at terminal count */
		return e != n;
	}
}

/* Moves CR into the counting element now and starts the mode's cycle from its beginning. */
static void start_count(struct pit_channel *c, uint64_t now_ns)
{
	c->n = cr_ticks(c);
	c->base_ns = now_ns;
	c->off = 0;
	c->start = 0;
	c->switch_at = 0;
	set(c, F_PENDING | F_NULL_COUNT, false);
	set(c, F_LOADED, true);
}

static uint8_t status_byte(const struct pit_channel *c, uint64_t now_ns)
{
	return (uint8_t)((out_level(c, now_ns) ? ST_OUT : 0) |
			 (has(c, F_NULL_COUNT) ? ST_NULL : 0) | c->ctrl);
}

/* ---- register interface ----------------------------------------------------------------- */

static void reset_channel(struct pit_channel *c, unsigned i, uint64_t now_ns)
{
	memset(c, 0, sizeof(*c));
	c->ctrl = RW_WORD << 4 | 3 << 1; /* mode 3, LSB then MSB, binary */
	c->base_ns = now_ns;
	c->n = 1;
	set(c, F_GATE, i != 2);
	set(c, F_NULL_COUNT, true);
}

struct i8254 *i8254_create(void)
{
	struct i8254 *t = calloc(1, sizeof(*t));
	if (t)
		i8254_reset(t, 0);
	return t;
}

void i8254_destroy(struct i8254 *t)
{
	free(t);
}

void i8254_reset(struct i8254 *t, uint64_t now_ns)
{
	for (unsigned i = 0; i < NCH; i++)
		reset_channel(&t->ch[i], i, now_ns);
}

static void latch_count(struct pit_channel *c, uint64_t now_ns)
{
	if (has(c, F_COUNT_LATCHED))
		return; /* a second latch before the first is read is ignored */
	c->latch = count_value(c, now_ns);
	set(c, F_COUNT_LATCHED, true);
}

static void latch_status(struct pit_channel *c, uint64_t now_ns)
{
	if (has(c, F_STATUS_LATCHED))
		return;
	c->status = status_byte(c, now_ns);
	set(c, F_STATUS_LATCHED, true);
}

static void write_control(struct i8254 *t, uint8_t v, uint64_t now_ns)
{
	unsigned sc = v >> 6;
	if (sc == 3) { /* read-back: bit 5 clear latches counts, bit 4 clear latches status */
		for (unsigned i = 0; i < NCH; i++) {
			struct pit_channel *c = &t->ch[i];
			if (!(v & (2u << i)))
				continue;
			sync(c, now_ns);
			if (!(v & 0x20))
				latch_count(c, now_ns);
			if (!(v & 0x10))
				latch_status(c, now_ns);
		}
		return;
	}
	struct pit_channel *c = &t->ch[sc];
	sync(c, now_ns);
	if (((v >> 4) & 3) == 0) { /* counter latch command */
		latch_count(c, now_ns);
		return;
	}
	/* A control word resets the channel's logic: counting stops until a new count arrives. */
	c->hold = count_value(c, now_ns);
	c->ctrl = v & CTRL_MASK;
	bool gate = has(c, F_GATE);
	c->flags = F_NULL_COUNT;
	set(c, F_GATE, gate);
	c->off = 0;
	c->start = 0;
	c->switch_at = 0;
}

/* A complete new count is in CR: what happens to the counting depends on the mode. */
static void count_written(struct pit_channel *c, uint64_t now_ns)
{
	set(c, F_CR_VALID | F_NULL_COUNT, true);
	switch (ch_mode(c)) {
	case 0:
	case 4:
		start_count(c, now_ns);
		break;
	case 2:
	case 3:
		if (!has(c, F_LOADED)) {
			start_count(c, now_ns);
		} else {
			/* The current period runs out first. */
			uint64_t e = rel(c, now_ns);
			c->switch_at = c->start + (e / c->n + 1) * c->n;
			set(c, F_PENDING, true);
		}
		break;
	default: /* 1, 5: the next gate trigger loads it */
		break;
	}
}

static void write_counter(struct pit_channel *c, uint8_t v, uint64_t now_ns)
{
	sync(c, now_ns);
	switch (ch_rw(c)) {
	case RW_LSB:
		c->cr = v;
		break;
	case RW_MSB:
		c->cr = (uint16_t)(v << 8);
		break;
	default:
		if (!has(c, F_WRITE_MSB)) {
			c->cr_lsb = v;
			set(c, F_WRITE_MSB, true);
			/* Mode 0: the first byte stops counting and drops OUT at once. */
			if (ch_mode(c) == 0 && has(c, F_LOADED)) {
				c->hold = count_value(c, now_ns);
				set(c, F_LOADED | F_PENDING, false);
			}
			return;
		}
		c->cr = (uint16_t)(c->cr_lsb | v << 8);
		set(c, F_WRITE_MSB, false);
		break;
	}
	count_written(c, now_ns);
}

static uint8_t read_counter(struct pit_channel *c, uint64_t now_ns)
{
	sync(c, now_ns);
	if (has(c, F_STATUS_LATCHED)) {
		set(c, F_STATUS_LATCHED, false);
		return c->status;
	}
	bool latched = has(c, F_COUNT_LATCHED);
	uint16_t v = latched ? c->latch : count_value(c, now_ns);
	switch (ch_rw(c)) {
	case RW_LSB:
		set(c, F_COUNT_LATCHED, false);
		return (uint8_t)v;
	case RW_MSB:
		set(c, F_COUNT_LATCHED, false);
		return (uint8_t)(v >> 8);
	default:
		if (!has(c, F_READ_MSB)) {
			set(c, F_READ_MSB, true);
			return (uint8_t)v;
		}
		set(c, F_READ_MSB | F_COUNT_LATCHED, false);
		return (uint8_t)(v >> 8);
	}
}

uint8_t i8254_read(struct i8254 *t, unsigned port, uint64_t now_ns)
{
	if (port >= NCH)
		return 0xff;
	return read_counter(&t->ch[port], now_ns);
}

void i8254_write(struct i8254 *t, unsigned port, uint8_t v, uint64_t now_ns)
{
	if (port < NCH)
		write_counter(&t->ch[port], v, now_ns);
	else if (port == NCH)
		write_control(t, v, now_ns);
}

void i8254_set_gate(struct i8254 *t, unsigned ch, bool gate, uint64_t now_ns)
{
	if (ch >= NCH)
		return;
	struct pit_channel *c = &t->ch[ch];
	sync(c, now_ns);
	if (gate == has(c, F_GATE))
		return;
	unsigned m = ch_mode(c);
	if (!gate) {
		/* Modes 0, 2, 3, 4 hold the count where it is (2 and 3 also force OUT high); a
		 * triggered mode 1 or 5 count runs on. */
		if (m != 1 && m != 5)
			c->off = elapsed(c, now_ns);
		set(c, F_GATE, false);
		return;
	}
	set(c, F_GATE, true);
	if (m == 0 || m == 4) {
		c->base_ns = now_ns; /* counting resumes from the held count */
	} else if (has(c, F_CR_VALID)) {
		start_count(c, now_ns); /* 1, 5: trigger; 2, 3: restart from CR */
	}
}

bool i8254_get_gate(const struct i8254 *t, unsigned ch)
{
	return ch < NCH && has(&t->ch[ch], F_GATE);
}

bool i8254_out(const struct i8254 *t, unsigned ch, uint64_t now_ns)
{
	if (ch >= NCH)
		return false;
	struct pit_channel c = t->ch[ch];
	sync(&c, now_ns);
	return out_level(&c, now_ns);
}

uint64_t i8254_next_irq0(const struct i8254 *t, uint64_t now_ns)
{
	struct pit_channel c = t->ch[0];
	sync(&c, now_ns);
	if (!advancing(&c))
		return UINT64_MAX; /* nothing loaded, or held by a low gate */
	uint64_t e = rel(&c, now_ns), n = c.n, edge;
	switch (ch_mode(&c)) {
	case 0:
	case 1: /* OUT rises at terminal count, once */
		if (e >= n)
			return UINT64_MAX;
		edge = n;
		break;
	case 2: /* OUT rises as each period ends (after its low tick), and so does mode 3's */
	case 3:
		edge = (e / n + 1) * n;
		break;
	default: /* 4, 5: OUT rises one tick after terminal count */
		if (e >= n + 1)
			return UINT64_MAX;
		edge = n + 1;
		break;
	}
	/* The first instant at which the tick count reaches start + edge: strictly after now_ns
	 * because the count at now_ns is below it. */
	uint64_t target = c.start + edge;
	if (target <= c.off)
		return UINT64_MAX; /* only for a loaded record with its start in the future */
	unsigned __int128 ns =
	    ((unsigned __int128)(target - c.off) * NS_PER_S + I8254_HZ - 1) / I8254_HZ;
	ns += c.base_ns;
	return ns > UINT64_MAX ? UINT64_MAX : (uint64_t)ns;
}

/* ---- state --------------------------------------------------------------------------------- */

void i8254_save(const struct i8254 *t, struct state_writer *w)
{
	sw_begin(w, i8254_tag, I8254_STATE_VERSION);
	for (unsigned i = 0; i < NCH; i++) {
		const struct pit_channel *c = &t->ch[i];
		sw_u8(w, c->ctrl);
		sw_u8(w, c->cr_lsb);
		sw_u16(w, c->cr);
		sw_u16(w, c->latch);
		sw_u16(w, c->hold);
		sw_u8(w, c->status);
		sw_u16(w, c->flags);
		sw_u32(w, c->n);
		sw_u64(w, c->base_ns);
		sw_u64(w, c->off);
		sw_u64(w, c->start);
		sw_u64(w, c->switch_at);
	}
}

int i8254_load(struct i8254 *t, struct state_reader *r)
{
	struct i8254 tmp = {0};
	sr_begin(r, i8254_tag, I8254_STATE_VERSION);
	for (unsigned i = 0; i < NCH; i++) {
		struct pit_channel *c = &tmp.ch[i];
		c->ctrl = sr_u8(r);
		c->cr_lsb = sr_u8(r);
		c->cr = sr_u16(r);
		c->latch = sr_u16(r);
		c->hold = sr_u16(r);
		c->status = sr_u8(r);
		c->flags = sr_u16(r);
		c->n = sr_u32(r);
		c->base_ns = sr_u64(r);
		c->off = sr_u64(r);
		c->start = sr_u64(r);
		c->switch_at = sr_u64(r);
		if (r->err)
			return -1;
		unsigned m = ch_mode(c);
		bool loaded = has(c, F_LOADED), pending = has(c, F_PENDING);
		sr_check(r, (c->ctrl & ~CTRL_MASK) == 0 && ch_rw(c) != 0);
		sr_check(r, (c->flags & ~F_ALL) == 0);
		/* Byte-order flip-flops only exist for LSB-then-MSB access. */
		sr_check(r, ch_rw(c) == RW_WORD || !has(c, F_WRITE_MSB | F_READ_MSB));
		sr_check(r, c->n >= 1 && c->n <= 65536 &&
				(!(m == 2 || m == 3) || !loaded || c->n >= 2));
		sr_check(r, !loaded || has(c, F_CR_VALID));
		sr_check(r, !pending || (loaded && (m == 2 || m == 3) && c->switch_at > c->start));
		sr_check(r,
			 c->off < TICK_LIMIT && c->start < TICK_LIMIT && c->switch_at < TICK_LIMIT);
		/* A held count started no later than where it is held. */
		sr_check(r, advancing(c) || c->start <= c->off);
	}
	if (r->err)
		return -1;
	*t = tmp;
	return 0;
}
