/* Local APIC, xAPIC mode: registers, priorities, IPIs, the timer. The model choices are listed in
 * lapic.h. */
#include "dev/lapic.h"

#include <stdlib.h>
#include <string.h>

#include "vm/state.h"

#define PAGE_SIZE       0x1000u

#define BASE_BSP        (1ull << 8)
#define BASE_X2APIC     (1ull << 10)
#define BASE_ENABLE     (1ull << 11)
#define BASE_DEFAULT    0xfee00000ull
#define BASE_PHYS_BITS  40
#define BASE_ADDR_MASK  (((1ull << BASE_PHYS_BITS) - 1) & ~0xfffull)
#define BASE_VALID_MASK (BASE_ADDR_MASK | BASE_ENABLE | BASE_BSP)

#define LAPIC_VERSION   0x00060014u /* max LVT entry 6 (7 LVTs), integrated APIC version 0x14 */

/* Register offsets in the page. */
enum {
	R_ID = 0x020,
	R_VERSION = 0x030,
	R_TPR = 0x080,
	R_APR = 0x090,
	R_PPR = 0x0a0,
	R_EOI = 0x0b0,
	R_RRD = 0x0c0,
	R_LDR = 0x0d0,
	R_DFR = 0x0e0,
	R_SVR = 0x0f0,
	R_ISR = 0x100, /* 8 registers each */
	R_TMR = 0x180,
	R_IRR = 0x200,
	R_ESR = 0x280,
	R_LVT_CMCI = 0x2f0,
	R_ICR_LO = 0x300,
	R_ICR_HI = 0x310,
	R_LVT_TIMER = 0x320, /* through R_LVT_ERROR = 0x370 */
	R_LVT_ERROR = 0x370,
	R_TMICT = 0x380,
	R_TMCCT = 0x390,
	R_TDCR = 0x3e0,
};

/* LVT indices, in register order starting with CMCI at 0x2f0. */
enum { LVT_CMCI, LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR, NLVT };

/* Writable bits of each LVT (vector, delivery mode, polarity, trigger, mask, timer mode). */
static const uint32_t lvt_writable[NLVT] = {
    [LVT_CMCI] = 0x000107ff,  [LVT_TIMER] = 0x000700ff, [LVT_THERMAL] = 0x000107ff,
    [LVT_PERF] = 0x000107ff,  [LVT_LINT0] = 0x0001a7ff, [LVT_LINT1] = 0x0001a7ff,
    [LVT_ERROR] = 0x000100ff,
};

#define LVT_MASKED       (1u << 16)
#define LVT_MODE(v)      (((v) >> 8) & 7)
#define LVT_TIMER_MODE   (3u << 17)
#define TIMER_ONESHOT    0u
#define TIMER_PERIODIC   1u
#define TIMER_DEADLINE   2u
#define TIMER_RESERVED   3u
#define DM_EXTINT        7u
#define SVR_ENABLE       (1u << 8)
#define SVR_WRITABLE     0x3ffu /* vector, software enable, focus checking */
#define DFR_FLAT         0xf0000000u
#define ICR_LO_WRITABLE  0x000ccfffu
#define ICR_LOGICAL      (1u << 11)
#define ICR_LEVEL        (1u << 14) /* assert */
#define ICR_TRIGGER      (1u << 15)
#define ICR_SH_SELF      1u
#define TDCR_WRITABLE    0xbu

#define ESR_SEND_ILLEGAL (1u << 5)
#define ESR_RECV_ILLEGAL (1u << 6)
#define ESR_ILLEGAL_REG  (1u << 7)
#define ESR_MODELLED     (ESR_SEND_ILLEGAL | ESR_RECV_ILLEGAL | ESR_ILLEGAL_REG)

struct lapic {
	struct lapic_host host;
	uint64_t tsc_hz;
	uint8_t initial_id;

	uint64_t base; /* IA32_APIC_BASE */
	uint32_t id, tpr, ldr, dfr, svr;
	uint32_t isr[8], tmr[8], irr[8];
	uint32_t esr;         /* what the guest reads */
	uint32_t esr_pending; /* logged since the last ESR write */
	uint32_t lvt[NLVT];
	uint32_t icr_lo, icr_hi;
	uint32_t tmict, tdcr;

	/* Timer. One-shot/periodic: counting while the count has been started from a non-zero
	   initial count (an expired one-shot keeps counting = true and reads 0); expire_ns is when
	   the count reaches 0. next_ns is the next expiry to fire in every mode (UINT64_MAX: none);
	   in periodic mode it equals expire_ns. TSC-deadline mode: tsc_deadline is the MSR (0
	   disarmed) and next_ns its time in ns. */
	bool counting;
	uint64_t expire_ns, next_ns, tsc_deadline;

	unsigned events;
	uint8_t sipi_vector;
};

/* ---- helpers ------------------------------------------------------------------------------ */

static bool vec_test(const uint32_t *a, unsigned v)
{
	return (a[v >> 5] >> (v & 31)) & 1;
}

static void vec_set(uint32_t *a, unsigned v)
{
	a[v >> 5] |= 1u << (v & 31);
}

static void vec_clear(uint32_t *a, unsigned v)
{
	a[v >> 5] &= ~(1u << (v & 31));
}

static int vec_highest(const uint32_t *a)
{
	for (int i = 7; i >= 0; i--)
		if (a[i])
			return i * 32 + 31 - __builtin_clz(a[i]);
	return -1;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static bool hw_enabled(const struct lapic *l)
{
	return (l->base & BASE_ENABLE) != 0;
}

static bool sw_enabled(const struct lapic *l)
{
	return (l->svr & SVR_ENABLE) != 0;
}

static uint32_t ppr(const struct lapic *l)
{
	int isrv = vec_highest(l->isr);
	uint32_t isr_class = isrv < 0 ? 0 : (uint32_t)isrv & 0xf0;
	return (l->tpr & 0xf0) >= isr_class ? l->tpr & 0xff : isr_class;
}

/* The arbitration priority as the P6 family defines it (the SDM's formula). */
static uint32_t apr(const struct lapic *l)
{
	int isrv = vec_highest(l->isr), irrv = vec_highest(l->irr);
	uint32_t tpr_class = l->tpr & 0xf0;
	uint32_t isr_class = isrv < 0 ? 0 : (uint32_t)isrv & 0xf0;
	uint32_t irr_class = irrv < 0 ? 0 : (uint32_t)irrv & 0xf0;
	if (tpr_class >= irr_class && tpr_class > isr_class)
		return l->tpr & 0xff;
	uint32_t m = tpr_class > isr_class ? tpr_class : isr_class;
	return m > irr_class ? m : irr_class;
}

static unsigned timer_mode(const struct lapic *l)
{
	return (l->lvt[LVT_TIMER] >> 17) & 3;
}

static uint64_t divider(const struct lapic *l)
{
	unsigned v = ((l->tdcr >> 1) & 4) | (l->tdcr & 3);
	return v == 7 ? 1 : 2ull << v;
}

static uint64_t period_ns(const struct lapic *l)
{
	uint64_t p = (uint64_t)l->tmict * divider(l);
	return p < LAPIC_MIN_PERIOD_NS ? LAPIC_MIN_PERIOD_NS : p;
}

static uint64_t tsc_to_ns(const struct lapic *l, uint64_t ticks)
{
	unsigned __int128 ns = ((unsigned __int128)ticks * 1000000000u + l->tsc_hz - 1) / l->tsc_hz;
	return ns > UINT64_MAX ? UINT64_MAX : (uint64_t)ns;
}

/* ---- errors and interrupt acceptance --------------------------------------------------------- */

static void set_irr(struct lapic *l, uint8_t vector, bool level)
{
	vec_set(l->irr, vector);
	if (level)
		vec_set(l->tmr, vector);
	else
		vec_clear(l->tmr, vector);
}

/* Logs an error; a newly logged one raises the error LVT. An illegal vector in the error LVT
   itself is logged without raising again, so errors cannot recurse. */
static void lapic_error(struct lapic *l, uint32_t bit)
{
	if (l->esr_pending & bit)
		return;
	l->esr_pending |= bit;
	uint32_t lvt = l->lvt[LVT_ERROR];
	if (lvt & LVT_MASKED)
		return;
	if ((lvt & 0xff) < 16)
		l->esr_pending |= ESR_RECV_ILLEGAL;
	else
		set_irr(l, (uint8_t)lvt, false);
}

static void accept_fixed(struct lapic *l, uint8_t vector, bool level)
{
	if (vector < 16) {
		lapic_error(l, ESR_RECV_ILLEGAL);
		return;
	}
	set_irr(l, vector, level);
}

/* ---- timer --------------------------------------------------------------------------------- */

static void timer_fire(struct lapic *l)
{
	uint32_t lvt = l->lvt[LVT_TIMER];
	if (!(lvt & LVT_MASKED))
		accept_fixed(l, (uint8_t)lvt, false);
}

/* Starts the count from the initial count (one-shot and periodic modes). */
static void timer_start(struct lapic *l, uint64_t now_ns)
{
	if (l->tmict == 0) {
		l->counting = false;
		l->next_ns = UINT64_MAX;
		return;
	}
	uint64_t len = timer_mode(l) == TIMER_PERIODIC ? period_ns(l) : l->tmict * divider(l);
	l->counting = true;
	l->expire_ns = l->next_ns = sat_add(now_ns, len);
}

static uint32_t ceil_ticks(uint64_t ns, uint64_t div, uint32_t max)
{
	uint64_t t = ns / div + (ns % div != 0);
	return t > max ? max : (uint32_t)t;
}

static uint32_t current_count(const struct lapic *l, uint64_t now_ns)
{
	if (!l->counting || timer_mode(l) == TIMER_DEADLINE)
		return 0;
	uint64_t div = divider(l);
	if (now_ns < l->expire_ns)
		return ceil_ticks(l->expire_ns - now_ns, div, l->tmict);
	if (timer_mode(l) != TIMER_PERIODIC || l->next_ns == UINT64_MAX)
		return 0;
	/* Periodic, expiries not yet polled: the position inside the current period. */
	uint64_t p = period_ns(l);
	return ceil_ticks(p - (now_ns - l->expire_ns) % p, div, l->tmict);
}

void lapic_timer_poll(struct lapic *l, uint64_t now_ns, uint64_t now_tsc)
{
	switch (timer_mode(l)) {
	case TIMER_DEADLINE:
		if (l->tsc_deadline == 0 || (now_tsc < l->tsc_deadline && now_ns < l->next_ns))
			return;
		l->tsc_deadline = 0; /* the timer disarms itself when it fires */
		l->next_ns = UINT64_MAX;
		timer_fire(l);
		return;
	case TIMER_PERIODIC: {
		if (l->next_ns == UINT64_MAX || now_ns < l->next_ns)
			return;
		/* One interrupt for all the periods missed; the next expiry is the first period
		   boundary after now, keeping the phase. */
		uint64_t p = period_ns(l), late = now_ns - l->next_ns;
		l->next_ns = l->expire_ns = sat_add(l->next_ns + (late - late % p), p);
		timer_fire(l);
		return;
	}
	case TIMER_ONESHOT:
		if (l->next_ns == UINT64_MAX || now_ns < l->next_ns)
			return;
		l->next_ns = UINT64_MAX;
		timer_fire(l);
		return;
	default:
		return;
	}
}

uint64_t lapic_timer_deadline(const struct lapic *l)
{
	if (timer_mode(l) == TIMER_PERIODIC && (l->lvt[LVT_TIMER] & LVT_MASKED))
		return UINT64_MAX;
	return l->next_ns;
}

uint64_t lapic_get_tsc_deadline(const struct lapic *l)
{
	return timer_mode(l) == TIMER_DEADLINE ? l->tsc_deadline : 0;
}

void lapic_set_tsc_deadline(struct lapic *l, uint64_t tsc, uint64_t now_ns, uint64_t now_tsc)
{
	if (timer_mode(l) != TIMER_DEADLINE)
		return;
	lapic_timer_poll(l, now_ns, now_tsc);
	l->tsc_deadline = tsc;
	if (tsc == 0)
		l->next_ns = UINT64_MAX;
	else if (tsc <= now_tsc)
		l->next_ns = now_ns; /* already due: fires at the next poll */
	else
		l->next_ns = sat_add(now_ns, tsc_to_ns(l, tsc - now_tsc));
}

static void write_lvt_timer(struct lapic *l, uint32_t v)
{
	unsigned old = timer_mode(l), mode = (v >> 17) & 3;
	if (mode == TIMER_RESERVED)
		mode = old;
	v = (v & lvt_writable[LVT_TIMER] & ~LVT_TIMER_MODE) | (mode << 17);
	if (!sw_enabled(l))
		v |= LVT_MASKED;
	l->lvt[LVT_TIMER] = v;
	if (mode == old)
		return;
	if (old == TIMER_DEADLINE || mode == TIMER_DEADLINE) {
		/* Switching into or out of TSC-deadline mode disarms the timer. */
		l->counting = false;
		l->next_ns = UINT64_MAX;
		l->tsc_deadline = 0;
	}
}

static void write_tdcr(struct lapic *l, uint32_t v, uint64_t now_ns)
{
	uint64_t old = divider(l);
	l->tdcr = v & TDCR_WRITABLE;
	/* A running count keeps its remaining ticks, now at the new rate. */
	if (l->counting && timer_mode(l) != TIMER_DEADLINE && l->next_ns != UINT64_MAX &&
	    now_ns < l->expire_ns) {
		uint64_t ticks = ceil_ticks(l->expire_ns - now_ns, old, UINT32_MAX);
		l->expire_ns = l->next_ns = sat_add(now_ns, ticks * divider(l));
	}
}

/* ---- registers ---------------------------------------------------------------------------- */

static void regs_reset(struct lapic *l)
{
	l->id = (uint32_t)l->initial_id << 24;
	l->tpr = l->ldr = 0;
	l->dfr = 0xffffffffu;
	l->svr = 0xff;
	memset(l->isr, 0, sizeof(l->isr));
	memset(l->tmr, 0, sizeof(l->tmr));
	memset(l->irr, 0, sizeof(l->irr));
	l->esr = l->esr_pending = 0;
	for (int i = 0; i < NLVT; i++)
		l->lvt[i] = LVT_MASKED;
	l->icr_lo = l->icr_hi = 0;
	l->tmict = l->tdcr = 0;
	l->counting = false;
	l->expire_ns = 0;
	l->next_ns = UINT64_MAX;
	l->tsc_deadline = 0;
	l->events = 0;
	l->sipi_vector = 0;
}

static void send_icr(struct lapic *l)
{
	uint32_t icr = l->icr_lo;
	unsigned mode = LVT_MODE(icr), sh = (icr >> 18) & 3;
	uint8_t vector = (uint8_t)icr;
	if (mode == 3 || mode == 7)
		return; /* reserved in the ICR */
	if (mode == 5 && !(icr & ICR_LEVEL) && (icr & ICR_TRIGGER))
		return; /* INIT level de-assert: no effect on xAPIC processors */
	if (mode <= 1 && vector < 16) {
		lapic_error(l, ESR_SEND_ILLEGAL);
		return;
	}
	if (sh == ICR_SH_SELF && mode != 0)
		return;
	if (l->host.send_ipi)
		l->host.send_ipi(l->host.opaque, l, (uint8_t)(l->icr_hi >> 24),
				 (icr & ICR_LOGICAL) != 0, sh, mode, vector,
				 (icr & ICR_TRIGGER) != 0);
}

static void write_eoi(struct lapic *l)
{
	int v = vec_highest(l->isr);
	if (v < 0)
		return;
	vec_clear(l->isr, (unsigned)v);
	if (vec_test(l->tmr, (unsigned)v) && l->host.eoi_level)
		l->host.eoi_level(l->host.opaque, (uint8_t)v);
}

/* Is reg (16-byte aligned) one of the registers? */
static bool reg_exists(uint32_t reg)
{
	switch (reg) {
	case R_ID:
	case R_VERSION:
	case R_TPR:
	case R_APR:
	case R_PPR:
	case R_EOI:
	case R_RRD:
	case R_LDR:
	case R_DFR:
	case R_SVR:
	case R_ESR:
	case R_ICR_LO:
	case R_ICR_HI:
	case R_TMICT:
	case R_TMCCT:
	case R_TDCR:
		return true;
	default:
		return (reg >= R_ISR && reg < R_IRR + 0x80) ||
		       (reg >= R_LVT_CMCI && reg <= R_LVT_ERROR);
	}
}

static uint32_t lvt_index(uint32_t reg)
{
	return reg == R_LVT_CMCI ? LVT_CMCI : LVT_TIMER + (reg - R_LVT_TIMER) / 16;
}

static uint32_t reg_read(struct lapic *l, uint32_t reg, uint64_t now_ns)
{
	if (!reg_exists(reg)) {
		lapic_error(l, ESR_ILLEGAL_REG);
		return 0;
	}
	if (reg >= R_ISR && reg < R_TMR)
		return l->isr[(reg - R_ISR) / 16];
	if (reg >= R_TMR && reg < R_IRR)
		return l->tmr[(reg - R_TMR) / 16];
	if (reg >= R_IRR && reg < R_IRR + 0x80)
		return l->irr[(reg - R_IRR) / 16];
	if ((reg >= R_LVT_TIMER && reg <= R_LVT_ERROR) || reg == R_LVT_CMCI)
		return l->lvt[lvt_index(reg)];
	switch (reg) {
	case R_ID:
		return l->id;
	case R_VERSION:
		return LAPIC_VERSION;
	case R_TPR:
		return l->tpr;
	case R_APR:
		return apr(l);
	case R_PPR:
		return ppr(l);
	case R_LDR:
		return l->ldr;
	case R_DFR:
		return l->dfr;
	case R_SVR:
		return l->svr;
	case R_ESR:
		return l->esr;
	case R_ICR_LO:
		return l->icr_lo; /* delivery status (bit 12) is never set: idle */
	case R_ICR_HI:
		return l->icr_hi;
	case R_TMICT:
		return l->tmict;
	case R_TMCCT:
		return current_count(l, now_ns);
	case R_TDCR:
		return l->tdcr;
	default:
		return 0; /* EOI (write-only), remote read */
	}
}

static void write_svr(struct lapic *l, uint32_t v)
{
	l->svr = v & SVR_WRITABLE;
	if (!sw_enabled(l))
		for (int i = 0; i < NLVT; i++)
			l->lvt[i] |= LVT_MASKED;
}

static void reg_write(struct lapic *l, uint32_t reg, uint32_t v, uint64_t now_ns, uint64_t now_tsc)
{
	if (!reg_exists(reg)) {
		lapic_error(l, ESR_ILLEGAL_REG);
		return;
	}
	if ((reg >= R_LVT_TIMER && reg <= R_LVT_ERROR) || reg == R_LVT_CMCI) {
		unsigned i = lvt_index(reg);
		if (i == LVT_TIMER) {
			/* Expiries due under the old setting happen first. */
			lapic_timer_poll(l, now_ns, now_tsc);
			write_lvt_timer(l, v);
			return;
		}
		v &= lvt_writable[i];
		if (!sw_enabled(l))
			v |= LVT_MASKED; /* cannot be unmasked while software-disabled */
		l->lvt[i] = v;
		return;
	}
	switch (reg) {
	case R_ID:
		l->id = v & 0xff000000u;
		break;
	case R_TPR:
		l->tpr = v & 0xff;
		break;
	case R_EOI:
		write_eoi(l);
		break;
	case R_LDR:
		l->ldr = v & 0xff000000u;
		break;
	case R_DFR:
		l->dfr = v | 0x0fffffffu;
		break;
	case R_SVR:
		write_svr(l, v);
		break;
	case R_ESR:
		l->esr = l->esr_pending;
		l->esr_pending = 0;
		break;
	case R_ICR_LO:
		l->icr_lo = v & ICR_LO_WRITABLE;
		send_icr(l);
		break;
	case R_ICR_HI:
		l->icr_hi = v & 0xff000000u;
		break;
	case R_TMICT:
		lapic_timer_poll(l, now_ns, now_tsc);
		if (timer_mode(l) == TIMER_DEADLINE)
			break;
		l->tmict = v;
		timer_start(l, now_ns);
		break;
	case R_TDCR:
		lapic_timer_poll(l, now_ns, now_tsc);
		write_tdcr(l, v, now_ns);
		break;
	default:
		break; /* read-only */
	}
}

void lapic_mmio(struct lapic *l, uint32_t offset, uint8_t *data, unsigned size, bool write,
		uint64_t now_ns, uint64_t now_tsc)
{
	if (!data)
		return;
	if ((size != 1 && size != 2 && size != 4 && size != 8) || !hw_enabled(l)) {
		if (!write)
			memset(data, 0, size);
		return;
	}
	if (write) {
		if (offset < PAGE_SIZE && (offset & 0xf) == 0 && size >= 4) {
			uint32_t v = (uint32_t)data[0] | (uint32_t)data[1] << 8 |
				     (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
			reg_write(l, offset, v, now_ns, now_tsc);
			return;
		}
		/* An ignored partial write still counts as touching a reserved register. */
		for (unsigned i = 0; i < size; i++) {
			uint64_t o = (uint64_t)offset + i;
			if (o < PAGE_SIZE && (o & 0xf) < 4 && !reg_exists((uint32_t)o & ~0xfu))
				lapic_error(l, ESR_ILLEGAL_REG);
		}
		return;
	}
	uint64_t slot = UINT64_MAX;
	uint32_t v = 0;
	for (unsigned i = 0; i < size; i++) {
		uint64_t o = (uint64_t)offset + i;
		uint8_t b = 0;
		if (o < PAGE_SIZE && (o & 0xf) < 4) {
			if ((o & ~0xfull) != slot) {
				slot = o & ~0xfull;
				v = reg_read(l, (uint32_t)slot, now_ns);
			}
			b = (uint8_t)(v >> (8 * (o & 3)));
		}
		data[i] = b;
	}
}

/* ---- public ------------------------------------------------------------------------------- */

struct lapic *lapic_create(uint8_t apic_id, uint64_t tsc_hz, const struct lapic_host *host)
{
	struct lapic *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	if (host)
		l->host = *host;
	l->tsc_hz = tsc_hz ? tsc_hz : 1000000000u;
	l->initial_id = apic_id;
	lapic_reset(l, false);
	return l;
}

void lapic_destroy(struct lapic *l)
{
	free(l);
}

void lapic_reset(struct lapic *l, bool bsp)
{
	l->base = BASE_DEFAULT | BASE_ENABLE | (bsp ? BASE_BSP : 0);
	regs_reset(l);
}

uint64_t lapic_get_base(const struct lapic *l)
{
	return l->base;
}

int lapic_set_base(struct lapic *l, uint64_t v)
{
	if (v & ~BASE_VALID_MASK)
		return -1; /* reserved bits, or x2APIC enable */
	if (hw_enabled(l) && !(v & BASE_ENABLE))
		regs_reset(l); /* a globally disabled APIC loses its state */
	l->base = v;
	return 0;
}

void lapic_deliver(struct lapic *l, unsigned mode, uint8_t vector, bool level_trig)
{
	if (!hw_enabled(l))
		return;
	switch (mode) {
	case 0:
	case 1:
		if (sw_enabled(l))
			accept_fixed(l, vector, level_trig);
		break;
	case 4:
		l->events |= LAPIC_EV_NMI;
		break;
	case 5:
		l->events |= LAPIC_EV_INIT;
		break;
	case 6:
		l->events |= LAPIC_EV_SIPI;
		l->sipi_vector = vector;
		break;
	default:
		break; /* SMI, reserved, ExtINT: see lapic.h */
	}
}

bool lapic_match_dest(const struct lapic *l, uint8_t dest, bool logical)
{
	if (!hw_enabled(l))
		return false;
	if (!logical)
		return dest == 0xff || dest == (uint8_t)(l->id >> 24);
	uint8_t ldr = (uint8_t)(l->ldr >> 24);
	if ((l->dfr & DFR_FLAT) == DFR_FLAT)
		return (ldr & dest) != 0;
	unsigned cluster = dest >> 4;
	return (cluster == 0xf || cluster == (unsigned)(ldr >> 4)) && (dest & ldr & 0xf) != 0;
}

int lapic_pending(const struct lapic *l)
{
	if (!hw_enabled(l) || !sw_enabled(l))
		return -1;
	int v = vec_highest(l->irr);
	if (v < 0 || ((uint32_t)v & 0xf0) <= (ppr(l) & 0xf0))
		return -1;
	return v;
}

void lapic_ack(struct lapic *l, uint8_t vector)
{
	if (!vec_test(l->irr, vector))
		return;
	vec_clear(l->irr, vector);
	vec_set(l->isr, vector);
}

unsigned lapic_take_events(struct lapic *l, uint8_t *sipi_vector)
{
	unsigned ev = l->events;
	l->events = 0;
	if (sipi_vector && (ev & LAPIC_EV_SIPI))
		*sipi_vector = l->sipi_vector;
	return ev;
}

bool lapic_accepts_pic(const struct lapic *l)
{
	uint32_t lint0 = l->lvt[LVT_LINT0];
	return !hw_enabled(l) || (!(lint0 & LVT_MASKED) && LVT_MODE(lint0) == DM_EXTINT);
}

/* ---- state -------------------------------------------------------------------------------- */

static const char lapic_tag[] = "lapic";
#define LAPIC_STATE_VERSION 1

void lapic_save(const struct lapic *l, struct state_writer *w)
{
	sw_begin(w, lapic_tag, LAPIC_STATE_VERSION);
	sw_u64(w, l->base);
	sw_u32(w, l->id);
	sw_u32(w, l->tpr);
	sw_u32(w, l->ldr);
	sw_u32(w, l->dfr);
	sw_u32(w, l->svr);
	for (int i = 0; i < 8; i++)
		sw_u32(w, l->isr[i]);
	for (int i = 0; i < 8; i++)
		sw_u32(w, l->tmr[i]);
	for (int i = 0; i < 8; i++)
		sw_u32(w, l->irr[i]);
	sw_u32(w, l->esr);
	sw_u32(w, l->esr_pending);
	for (int i = 0; i < NLVT; i++)
		sw_u32(w, l->lvt[i]);
	sw_u32(w, l->icr_lo);
	sw_u32(w, l->icr_hi);
	sw_u32(w, l->tmict);
	sw_u32(w, l->tdcr);
	sw_u8(w, l->counting);
	sw_u64(w, l->expire_ns);
	sw_u64(w, l->next_ns);
	sw_u64(w, l->tsc_deadline);
	sw_u8(w, (uint8_t)l->events);
	sw_u8(w, l->sipi_vector);
}

int lapic_load(struct lapic *l, struct state_reader *r)
{
	struct lapic n = *l; /* keeps host, tsc_hz, initial_id */
	sr_begin(r, lapic_tag, LAPIC_STATE_VERSION);
	n.base = sr_u64(r);
	n.id = sr_u32(r);
	n.tpr = sr_u32(r);
	n.ldr = sr_u32(r);
	n.dfr = sr_u32(r);
	n.svr = sr_u32(r);
	for (int i = 0; i < 8; i++)
		n.isr[i] = sr_u32(r);
	for (int i = 0; i < 8; i++)
		n.tmr[i] = sr_u32(r);
	for (int i = 0; i < 8; i++)
		n.irr[i] = sr_u32(r);
	n.esr = sr_u32(r);
	n.esr_pending = sr_u32(r);
	for (int i = 0; i < NLVT; i++)
		n.lvt[i] = sr_u32(r);
	n.icr_lo = sr_u32(r);
	n.icr_hi = sr_u32(r);
	n.tmict = sr_u32(r);
	n.tdcr = sr_u32(r);
	uint8_t counting = sr_u8(r);
	n.counting = counting != 0;
	n.expire_ns = sr_u64(r);
	n.next_ns = sr_u64(r);
	n.tsc_deadline = sr_u64(r);
	n.events = sr_u8(r);
	n.sipi_vector = sr_u8(r);
	if (r->err)
		return -1;

	sr_check(r, (n.base & ~BASE_VALID_MASK) == 0);
	sr_check(r, (n.id & 0x00ffffffu) == 0 && n.tpr <= 0xff && (n.ldr & 0x00ffffffu) == 0);
	sr_check(r, (n.dfr & 0x0fffffffu) == 0x0fffffffu && (n.svr & ~SVR_WRITABLE) == 0);
	/* Vectors 0-15 are never accepted. */
	sr_check(r,
		 (n.isr[0] & 0xffff) == 0 && (n.tmr[0] & 0xffff) == 0 && (n.irr[0] & 0xffff) == 0);
	sr_check(r, (n.esr & ~ESR_MODELLED) == 0 && (n.esr_pending & ~ESR_MODELLED) == 0);
	for (int i = 0; i < NLVT; i++) {
		sr_check(r, (n.lvt[i] & ~lvt_writable[i]) == 0);
		sr_check(r, sw_enabled(&n) || (n.lvt[i] & LVT_MASKED));
	}
	sr_check(r, hw_enabled(&n) || !sw_enabled(&n)); /* disabling resets the registers */
	sr_check(r, (n.icr_lo & ~ICR_LO_WRITABLE) == 0 && (n.icr_hi & 0x00ffffffu) == 0);
	sr_check(r, (n.tdcr & ~TDCR_WRITABLE) == 0 && counting <= 1);
	sr_check(r, (n.events & ~(LAPIC_EV_NMI | LAPIC_EV_INIT | LAPIC_EV_SIPI)) == 0);
	unsigned mode = timer_mode(&n);
	sr_check(r, mode != TIMER_RESERVED);
	if (mode == TIMER_DEADLINE) {
		sr_check(r, !n.counting && (n.tsc_deadline != 0 || n.next_ns == UINT64_MAX));
	} else {
		sr_check(r, n.tsc_deadline == 0);
		sr_check(r, n.counting ? n.tmict != 0 : n.next_ns == UINT64_MAX);
		sr_check(r, n.next_ns == UINT64_MAX || n.next_ns == n.expire_ns);
	}
	if (r->err)
		return -1;
	*l = n;
	return 0;
}
