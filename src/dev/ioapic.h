/* An 82093AA-style I/O APIC with 24 pins: a pure model (no threads, locks or bus registration;
 * the caller serializes every call, including the re-entrant ones its deliver callback makes).
 *
 * MMIO window: IOREGSEL at 0x00 (bits 0-7), IOWIN at 0x10, EOI register at 0x40 (write-only;
 * version 0x20 parts have it). Registers are 32 bits at 16-byte spacing: reads may be 1, 2, 4 or
 * 8 bytes anywhere (bytes 4..15 of a slot and unknown slots read 0); a write takes effect only
 * as a 4- or 8-byte store at the slot's start (the upper half of an 8-byte store is ignored),
 * other writes are ignored.
 *
 * Indirect registers: 0x00 ID (bits 24-27; 0 after reset), 0x01 version 0x00170020, 0x02
 * arbitration (reads the ID), 0x10 + 2n / 0x11 + 2n the low / high half of redirection entry n.
 * Unknown indices read 0 and ignore writes. Entry bits 12 (delivery status, always 0: delivery
 * is immediate) and 14 (remote IRR) are read-only, reserved bits read 0.
 *
 * Semantics: an edge entry delivers on a rising edge of its input while
 * unmasked; edges while masked are lost. A level entry in fixed or lowest-priority mode
 * delivers while its input is asserted, unmasked and remote IRR is clear, and sets remote IRR;
 * an EOI for its vector (ioapic_eoi, or the EOI register) clears remote IRR and re-delivers if
 * the input is still asserted. Unmasking an asserted level entry delivers. Inputs are logical
 * (1 = asserted): the polarity bit is stored for the guest and does not invert them, as in KVM. Entries in SMI, NMI, INIT or ExtINT mode always behave as edge-triggered (the
 * datasheet requires edge for them) and the reserved modes 3 and 6 deliver nothing. Writing an
 * entry as edge-triggered (or to a non-fixed mode) clears its remote IRR. Input line levels are
 * the devices' and survive ioapic_reset. */
#ifndef FERRY_IOAPIC_H
#define FERRY_IOAPIC_H

#include <stdbool.h>
#include <stdint.h>

struct state_writer;
struct state_reader;

#define IOAPIC_NPINS 24

struct ioapic;
/* NULL if out of memory. deliver may be NULL (nothing is delivered). */
struct ioapic *ioapic_create(void (*deliver)(void *opaque, uint8_t dest, bool logical,
					     unsigned mode, uint8_t vector, bool level_trig),
			     void *opaque);
void ioapic_destroy(struct ioapic *io);
void ioapic_reset(struct ioapic *io); /* all entries masked */
void ioapic_mmio(struct ioapic *io, uint32_t offset, uint8_t *data, unsigned size, bool write);
void ioapic_set_irq(struct ioapic *io, unsigned pin, int level); /* pin >= 24 ignored */
/* Clears remote IRR of level entries with this vector; re-delivers if the line is still high. */
void ioapic_eoi(struct ioapic *io, uint8_t vector);
void ioapic_save(const struct ioapic *io, struct state_writer *w);
int ioapic_load(struct ioapic *io, struct state_reader *r); /* 0, or -1 (state unchanged) */

#endif
