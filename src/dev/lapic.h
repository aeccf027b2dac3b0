/* A local APIC in xAPIC mode (Intel SDM vol. 3, ch. 11): a pure model, one instance per vCPU. No
 * threads, locks or clocks: the caller passes the time (now_ns, a monotonic nanosecond clock, and
 * now_tsc, the vCPU's TSC) and serializes every call on one instance, including the re-entrant
 * calls its callbacks make.
 *
 * Model choices:
 * - Version register 0x00060014: an integrated APIC (0x14) with 7 LVT entries (max LVT 6: CMCI,
 *   timer, thermal, performance, LINT0, LINT1, error). No EOI-broadcast suppression, no x2APIC.
 * - MMIO: registers are 32 bits at 16-byte spacing. Reads may be 1, 2, 4 or 8 bytes at any
 *   offset; bytes 4..15 of every 16-byte slot read 0. A write takes effect only as a 4- or
 *   8-byte store at the slot's start (the upper half of an 8-byte store is ignored); narrower
 *   or misaligned writes are ignored, so a register with side effects (EOI, ICR) never sees a
 *   half value. An access to bytes 0..3 of a reserved slot reads 0, is ignored and logs ESR
 *   bit 7 (illegal register address); writes to read-only registers are ignored silently.
 *   While the APIC is globally disabled (IA32_APIC_BASE bit 11 clear) the page reads 0 and
 *   ignores writes, and disabling it returns every register to its power-on value.
 * - IA32_APIC_BASE: physical address bits up to 39 (the 40-bit MAXPHYADDR of the soft engine's
 *   CPUID); the BSP flag is writable (as the MSR is R/W); bits 0-7 and 9 are reserved.
 * - The timer counts a 1 GHz bus clock through the divider: one count per (divider) ns. A
 *   periodic period is at least LAPIC_MIN_PERIOD_NS (1 us), so a tiny initial count cannot make
 *   the next deadline fail to advance; missed periods are coalesced into one interrupt. Timer
 *   mode 3 (reserved) is refused: such an LVT write keeps the previous mode. In TSC-deadline
 *   mode the initial count ignores writes and the current count reads 0.
 * - Errors logged in the ESR: send illegal vector (an ICR fixed/lowest-priority IPI with
 *   vector < 16, which is then not sent), receive illegal vector (a fixed interrupt, local or
 *   delivered, with vector < 16, which is dropped), illegal register address. A newly logged
 *   error raises the LVT error interrupt when it is unmasked.
 * - ICR: delivery status always reads idle. Not sent: INIT level de-assert (bit 14 clear, bit 15
 *   set; no effect on xAPIC processors), the reserved modes 3 and 7, and the self shorthand with
 *   any mode but fixed (invalid per the SDM).
 * - lapic_deliver: lowest priority is taken as fixed; SMI is ignored (no SMM); ExtINT is ignored
 *   here (the 8259's INTR reaches the CPU through lapic_accepts_pic); fixed interrupts are dropped
 *   while the APIC is software-disabled; everything is dropped while it is globally disabled.
 *   INIT only posts LAPIC_EV_INIT: the glue resets the CPU and calls lapic_reset on taking it.
 * - LINT0/LINT1 pins, thermal, performance and CMCI sources are not modelled: their LVTs are
 *   registers only (remote IRR and delivery status read 0).
 * - Times in the saved state are in the caller's now_ns/now_tsc clocks. */
#ifndef FERRY_LAPIC_H
#define FERRY_LAPIC_H

#include <stdbool.h>
#include <stdint.h>

struct state_writer;
struct state_reader;

#define LAPIC_EV_NMI        1u
#define LAPIC_EV_INIT       2u
#define LAPIC_EV_SIPI       4u

#define LAPIC_MIN_PERIOD_NS 1000u

struct lapic;
struct lapic_host { /* supplied by the glue; any callback may be NULL */
	void *opaque;
	/* An IPI written to the ICR: the glue routes it to the destination lapics (it calls
	   lapic_deliver on them). dest is the 8-bit destination field, shorthand 0..3 as in ICR bits
	   18-19. */
	void (*send_ipi)(void *opaque, struct lapic *from, uint8_t dest, bool logical,
			 unsigned shorthand, unsigned mode, uint8_t vector, bool level_trig);
	/* EOI of a level-triggered interrupt (TMR bit set): the glue tells the I/O APIC. */
	void (*eoi_level)(void *opaque, uint8_t vector);
};

/* Created in the power-on state of an application processor (call lapic_reset(l, true) for the
 * BSP). host is copied; it may be NULL. A tsc_hz of 0 is taken as 1 GHz. NULL if out of memory. */
struct lapic *lapic_create(uint8_t apic_id, uint64_t tsc_hz, const struct lapic_host *host);
void lapic_destroy(struct lapic *l);
/* Power-on/INIT state; APIC_BASE = 0xfee00000 | enable | (bsp ? BSP flag : 0). */
void lapic_reset(struct lapic *l, bool bsp);
void lapic_mmio(struct lapic *l, uint32_t offset, uint8_t *data, unsigned size, bool write,
		uint64_t now_ns, uint64_t now_tsc);
uint64_t lapic_get_base(const struct lapic *l); /* IA32_APIC_BASE MSR */
/* -1 if reserved bits are set or x2APIC enable is requested: the caller raises #GP. */
int lapic_set_base(struct lapic *l, uint64_t v);
/* IA32_TSC_DEADLINE: reads 0 and ignores writes outside TSC-deadline mode; 0 disarms. */
uint64_t lapic_get_tsc_deadline(const struct lapic *l);
void lapic_set_tsc_deadline(struct lapic *l, uint64_t tsc, uint64_t now_ns, uint64_t now_tsc);
/* Interrupt delivery into this lapic: mode as in the ICR/redirection-entry delivery-mode field
   (0 fixed, 1 lowest priority treated as fixed, 2 SMI ignored, 4 NMI, 5 INIT, 6 SIPI, 7 ExtINT
   ignored). */
void lapic_deliver(struct lapic *l, unsigned mode, uint8_t vector, bool level_trig);
/* Would this lapic accept an interrupt for (dest, logical)? Physical: ID match or 0xff broadcast;
   logical: flat (DFR model 1111b: LDR & dest) or cluster (other models: cluster nibble equal or
   15, and a common bit in the low nibble). False while globally disabled. */
bool lapic_match_dest(const struct lapic *l, uint8_t dest, bool logical);
/* The CPU side: the highest-priority fixed interrupt deliverable now (IRR above PPR, APIC
   enabled globally and by software), or -1. */
int lapic_pending(const struct lapic *l);
void lapic_ack(struct lapic *l, uint8_t vector); /* INTA: IRR -> ISR; ignored if not in IRR */
/* Non-vectored events waiting for the CPU (LAPIC_EV_*); reading clears them; *sipi_vector
   (may be NULL) gets the last SIPI vector. */
unsigned lapic_take_events(struct lapic *l, uint8_t *sipi_vector);
/* True when the 8259's INTR may reach the CPU through this lapic: APIC globally disabled, or
   LVT LINT0 unmasked with delivery mode ExtINT. */
bool lapic_accepts_pic(const struct lapic *l);
/* Timer: the absolute ns time at which the timer fires next (one-shot, periodic or TSC-deadline
   mode), or UINT64_MAX. A masked periodic timer also gives UINT64_MAX: its expiries have no
   visible effect, and the periods it misses are accounted for at the next poll or timer write.
   lapic_timer_poll fires the timer if due (sets IRR from the LVT timer unless masked; rearms a
   periodic timer at the first period boundary after now_ns). */
uint64_t lapic_timer_deadline(const struct lapic *l);
void lapic_timer_poll(struct lapic *l, uint64_t now_ns, uint64_t now_tsc);
void lapic_save(const struct lapic *l, struct state_writer *w);
int lapic_load(struct lapic *l, struct state_reader *r); /* 0, or -1 (state unchanged) */

#endif
