/* The PC's cascaded pair of 8259A programmable interrupt controllers, slave on the master's IR2,
 * with the PIIX/ICH edge/level control registers (ELCR) at 0x4d0/0x4d1. A pure model: no locks,
 * no threads, no bus registration -- the caller serializes calls and routes ports and lines. */
#ifndef FERRY_DEV_I8259_H
#define FERRY_DEV_I8259_H

#include <stdbool.h>
#include <stdint.h>

struct state_writer;
struct state_reader;

#define I8259_MASTER_CMD  0x20
#define I8259_MASTER_DATA 0x21
#define I8259_SLAVE_CMD   0xa0
#define I8259_SLAVE_DATA  0xa1
#define I8259_ELCR_MASTER 0x4d0
#define I8259_ELCR_SLAVE  0x4d1

struct i8259;

struct i8259 *i8259_create(void); /* NULL when out of memory; the pair starts reset */
void i8259_destroy(struct i8259 *p);
/* Power-on state: both chips uninitialized, every line masked (IMR 0xff), vector base 0, all
 * lines edge-triggered, input levels low. Nothing reaches the CPU until the guest programs it. */
void i8259_reset(struct i8259 *p);
/* Input pin irq 0..15 at level 0/1 (any non-zero level is 1). Edge mode (ELCR bit clear) latches
 * a rising edge into IRR, which stays set when the line drops again (the caller may pulse a line);
 * level mode (ELCR bit set) makes IRR follow the level. IRQ 2 is the cascade input, driven by the
 * slave's INTR, and irq > 15 does not exist: both are ignored. */
void i8259_set_irq(struct i8259 *p, unsigned irq, int level);
/* The master's INTR output: true when an unmasked request outranks what is in service. */
bool i8259_intr(const struct i8259 *p);
/* The CPU's interrupt-acknowledge cycle: returns the vector (ICW2 base + line; through the slave
 * for IR2), moves IRR->ISR (or not, in auto-EOI), clears edge IRR; returns the spurious vector
 * (IR7 of the chip) when nothing is pending any more, changing nothing. */
uint8_t i8259_intack(struct i8259 *p);
/* Port access: 0x20/0x21 master, 0xa0/0xa1 slave (command/data), 0x4d0/0x4d1 ELCR (IRQ 0, 1, 2,
 * 8 and 13 read as 0 and cannot be set). Single bytes. Any other port reads 0xff, writes are
 * ignored. */
uint8_t i8259_read(struct i8259 *p, uint16_t port);
void i8259_write(struct i8259 *p, uint16_t port, uint8_t v);
/* The complete state as one record; load refuses (returns -1, state unchanged) a short, unknown
 * or inconsistent record. */
void i8259_save(const struct i8259 *p, struct state_writer *w);
int i8259_load(struct i8259 *p, struct state_reader *r);

#endif
