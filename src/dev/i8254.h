/* The 8254 programmable interval timer of a PC: three channels clocked at 1193182 Hz, ports
 * 0x40-0x43. A pure model: nothing ticks; every count and output level is computed from the
 * caller's monotonic clock (now_ns), passed to each call. No locks: the caller serializes. */
#ifndef FERRY_DEV_I8254_H
#define FERRY_DEV_I8254_H

#include <stdbool.h>
#include <stdint.h>

struct state_writer;
struct state_reader;

#define I8254_HZ 1193182u

struct i8254;

struct i8254 *i8254_create(void); /* NULL when out of memory; the timer starts reset at time 0 */
void i8254_destroy(struct i8254 *t);
/* Every channel in mode 3, LSB-then-MSB, binary, with no count loaded (OUT high, no IRQ 0
 * edges); gates of channels 0 and 1 high, channel 2's low (port 0x61 bit 0 clear). */
void i8254_reset(struct i8254 *t, uint64_t now_ns);
/* port 0..3 = 0x40..0x43. Port 3 reads 0xff (the control register is write-only); other ports
 * read 0xff and ignore writes. */
uint8_t i8254_read(struct i8254 *t, unsigned port, uint64_t now_ns);
void i8254_write(struct i8254 *t, unsigned port, uint8_t v, uint64_t now_ns);
/* Gate inputs (ch 0..2; others ignored / read false). Channels 0 and 1 are tied high on a PC;
 * channel 2's gate is port 0x61 bit 0, which the caller drives. */
void i8254_set_gate(struct i8254 *t, unsigned ch, bool gate, uint64_t now_ns);
bool i8254_get_gate(const struct i8254 *t, unsigned ch);
bool i8254_out(const struct i8254 *t, unsigned ch, uint64_t now_ns); /* the OUT pin level */
/* Channel 0 drives IRQ 0 (edge-triggered): the time (ns) of the next rising edge of OUT0
 * strictly after now_ns, or UINT64_MAX if none will come (mode 0 after terminal count, counter
 * not loaded, gate low...). Modes 2 and 3 run with a period of at least 2 ticks (a count of 1 is
 * illegal there and is treated as 2), so successive edges are at least 1.6 us apart. */
uint64_t i8254_next_irq0(const struct i8254 *t, uint64_t now_ns);
/* The complete state; saved times are absolute now_ns values. Load refuses (returns -1, state
 * unchanged) a short, unknown or inconsistent record. */
void i8254_save(const struct i8254 *t, struct state_writer *w);
int i8254_load(struct i8254 *t, struct state_reader *r);

#endif
