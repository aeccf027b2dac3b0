/* ACPI fixed hardware, where the FADT (arch/x86/acpi.c) puts it, and the PC reset control
 * register:
 *   0x600 PM1a_STS  write 1 to clear. Only TMR_STS is ever set: ferry has no fixed power or
 *                   sleep button and no RTC wake (the FADT says so), and no sleep state to
 *                   wake from.
 *   0x602 PM1a_EN   the enable bits latch; TMR_EN with TMR_STS raises the SCI (IRQ 9, level,
 *                   active high as the MADT says).
 *   0x604 PM1a_CNT  SCI_EN always reads 1 (no SMI_CMD: ACPI mode is permanent). SLP_EN with
 *                   SLP_TYP 5 (the DSDT's \_S5) powers the machine off. ferry has no S1-S4:
 *                   any other sleep type is ignored (logged once) and the guest keeps running.
 *                   GBL_RLS is ignored, as there is no firmware to release the lock to.
 *   0x608 PM_TMR    32-bit counter at 3.579545 MHz from the host's CLOCK_MONOTONIC. When its
 *                   bit 31 changes TMR_STS is set; a timer thread wakes for that only while
 *                   TMR_EN is set and TMR_STS clear, otherwise it is noticed at the next access.
 *   0xcf9 RST_CNT   SYS_RST (bit 1) and FULL_RST (bit 3) are kept; setting RST_CPU (bit 2)
 *                   resets the machine. On a PC bits 1 and 3 choose a soft, hard or full
 *                   reset; ferry has one kind, rebuilding the VM, so every request resets.
 *                   RST_CPU itself is never stored, so every write with it set is a 0->1 edge.
 * Registers accept 1-, 2- and 4-byte accesses at any offset inside their block. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "arch/x86/acpi.h"
#include "util/log.h"
#include "vm/vm.h"

#define NS_PER_SEC 1000000000ull
#define TMR_MSB    31 /* TMR_STS follows changes of this counter bit */

#define EN_BITS                                                                                    \
	(ACPI_PM1_TMR | ACPI_PM1_GBL | ACPI_PM1_PWRBTN | ACPI_PM1_SLPBTN | ACPI_PM1_RTC |          \
	 ACPI_PM1_PCIEXP)
#define STS_BITS   ACPI_PM1_TMR /* the only status this hardware can raise */
#define CNT_STORED (ACPI_PM1_BM_RLD | ACPI_PM1_SLP_TYP)
#define CF9_STORED (ACPI_CF9_SYS_RST | ACPI_CF9_FULL_RST)

static const char acpi_pm_tag[8] = "acpipm";
#define ACPI_PM_STATE_VERSION 1

struct acpi_pm {
	pthread_mutex_t lock;
	struct vm *vm;
	struct device dev;

	uint16_t sts; /* PM1_STS (STS_BITS) */
	uint16_t en;  /* PM1_EN (EN_BITS) */
	uint16_t cnt; /* PM1_CNT's stored bits (CNT_STORED) */
	uint8_t cf9;  /* reset control (CF9_STORED) */

	/* The timer reads ticks since tmr_base (CLOCK_MONOTONIC ns; negative after loading a
	 * count larger than the host's uptime). tmr_half is the tick count >> TMR_MSB when last
	 * looked at: bit 31 has changed whenever it differs. */
	int64_t tmr_base;
	uint64_t tmr_half;

	int timer_fd, stop_fd;
	pthread_t thread;
	bool thread_started;
	int sci_level;     /* level last driven, -1 when unknown */
	bool sleep_warned; /* a log rate limit, not machine state */
};

/* ---- the timer --------------------------------------------------------------------------- */

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * (int64_t)NS_PER_SEC + ts.tv_nsec;
}

/* floor(ns * HZ / 1e9) without overflowing 64 bits for any uptime. */
static uint64_t ns_to_ticks(uint64_t ns)
{
	return ns / NS_PER_SEC * ACPI_PM_TMR_HZ + ns % NS_PER_SEC * ACPI_PM_TMR_HZ / NS_PER_SEC;
}

/* The first ns at which ns_to_ticks reaches t: ceil(t * 1e9 / HZ). */
static uint64_t ticks_to_ns(uint64_t t)
{
	return t / ACPI_PM_TMR_HZ * NS_PER_SEC +
	       (t % ACPI_PM_TMR_HZ * NS_PER_SEC + ACPI_PM_TMR_HZ - 1) / ACPI_PM_TMR_HZ;
}

/* The tick count now; sets TMR_STS if bit 31 changed since last looked at. Lock held. */
static uint64_t sample(struct acpi_pm *p)
{
	int64_t d = mono_ns() - p->tmr_base;
	uint64_t t = ns_to_ticks(d > 0 ? (uint64_t)d : 0);
	if (t >> TMR_MSB != p->tmr_half) {
		p->tmr_half = t >> TMR_MSB;
		p->sts |= ACPI_PM1_TMR;
	}
	return t;
}

/* Lock held. */
static void update_sci(struct acpi_pm *p)
{
	int level = (p->sts & p->en) != 0;
	if (level != p->sci_level) {
		p->sci_level = level;
		vm_irq_line(p->vm, ACPI_SCI_IRQ, level);
	}
}

/* Arms the timer thread for the next change of bit 31 when that would raise the SCI, and
 * disarms it otherwise. Lock held. */
static void rearm(struct acpi_pm *p)
{
	struct itimerspec its;
	memset(&its, 0, sizeof(its));
	if ((p->en & ACPI_PM1_TMR) && !(p->sts & ACPI_PM1_TMR)) {
		int64_t at = p->tmr_base + (int64_t)ticks_to_ns((p->tmr_half + 1) << TMR_MSB);
		if (at <= 0)
			at = 1; /* already due; 0 would disarm */
		its.it_value.tv_sec = (time_t)(at / (int64_t)NS_PER_SEC);
		its.it_value.tv_nsec = (long)(at % (int64_t)NS_PER_SEC);
	}
	timerfd_settime(p->timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void *acpi_pm_thread(void *arg)
{
	struct acpi_pm *p = arg;
	pthread_setname_np(pthread_self(), "acpi-pm");
	for (;;) {
		struct pollfd fds[2] = {{.fd = p->stop_fd, .events = POLLIN},
					{.fd = p->timer_fd, .events = POLLIN}};
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (fds[0].revents)
			break;
		if (fds[1].revents) {
			uint64_t n;
			if (read(p->timer_fd, &n, sizeof(n)) < 0) {
				/* EAGAIN: rearmed in between; nothing expired. */
			}
			pthread_mutex_lock(&p->lock);
			sample(p);
			update_sci(p);
			rearm(p);
			pthread_mutex_unlock(&p->lock);
		}
	}
	return NULL;
}

/* ---- registers --------------------------------------------------------------------------- */

static uint16_t le16(const uint8_t *b)
{
	return (uint16_t)(b[0] | b[1] << 8);
}

static void put_le16(uint8_t *b, uint16_t v)
{
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
}

/* Whether [offset, offset+size) lies in a block of len bytes; a read outside gets all ones.
 * The bus already guarantees it; this keeps the handlers safe on their own. */
static bool in_block(uint64_t offset, uint8_t *data, unsigned size, bool write, unsigned len)
{
	if (size >= 1 && offset <= len && size <= len - offset)
		return true;
	if (!write)
		memset(data, 0xff, size);
	return false;
}

/* Spreads a write of size bytes at offset over a block image: val gets the bytes written and
 * mask 0xff where a byte was written, 0 elsewhere. */
static void merge(const uint8_t *data, uint64_t offset, unsigned size, uint8_t *val, uint8_t *mask)
{
	for (unsigned i = 0; i < size; i++) {
		val[offset + i] = data[i];
		mask[offset + i] = 0xff;
	}
}

static void evt_io(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool write)
{
	struct acpi_pm *p = opaque;
	uint8_t val[ACPI_PM1_EVT_LEN] = {0}, mask[ACPI_PM1_EVT_LEN] = {0};
	if (!in_block(offset, data, size, write, ACPI_PM1_EVT_LEN))
		return;
	pthread_mutex_lock(&p->lock);
	sample(p);
	if (write) {
		merge(data, offset, size, val, mask);
		p->sts &= (uint16_t)~le16(val); /* unwritten bytes are 0 in val: untouched */
		uint16_t m = le16(mask + 2) & EN_BITS;
		p->en = (uint16_t)((p->en & ~m) | (le16(val + 2) & m));
		rearm(p);
	} else {
		put_le16(val, p->sts);
		put_le16(val + 2, p->en);
		memcpy(data, val + offset, size);
	}
	update_sci(p);
	pthread_mutex_unlock(&p->lock);
}

static void cnt_io(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool write)
{
	struct acpi_pm *p = opaque;
	uint8_t val[ACPI_PM1_CNT_LEN] = {0}, mask[ACPI_PM1_CNT_LEN] = {0};
	bool poweroff = false, warn = false;
	unsigned typ = 0;
	if (!in_block(offset, data, size, write, ACPI_PM1_CNT_LEN))
		return;
	pthread_mutex_lock(&p->lock);
	if (write) {
		merge(data, offset, size, val, mask);
		uint16_t v = le16(val), m = le16(mask);
		p->cnt = (uint16_t)((p->cnt & ~(m & CNT_STORED)) | (v & m & CNT_STORED));
		if (v & m & ACPI_PM1_SLP_EN) {
			typ = (p->cnt & ACPI_PM1_SLP_TYP) >> ACPI_PM1_SLP_TYP_SHIFT;
			if (typ == ACPI_SLP_TYP_S5) {
				poweroff = true;
			} else if (!p->sleep_warned) {
				p->sleep_warned = true;
				warn = true;
			}
		}
	} else {
		put_le16(val, (uint16_t)(p->cnt | ACPI_PM1_SCI_EN)); /* SLP_EN reads 0 */
		memcpy(data, val + offset, size);
	}
	pthread_mutex_unlock(&p->lock);
	if (warn)
		log_warn("acpi: the guest asked for sleep type %u: ignored, ferry has no sleep "
			 "state but soft-off (type %u)",
			 typ, ACPI_SLP_TYP_S5);
	if (poweroff)
		vm_stop(p->vm, VM_STOP_POWEROFF, FERRY_EXIT_OK, "guest powered off (ACPI S5)");
}

static void tmr_io(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool write)
{
	struct acpi_pm *p = opaque;
	if (!in_block(offset, data, size, write, ACPI_PM_TMR_LEN) || write)
		return; /* the counter is read-only */
	pthread_mutex_lock(&p->lock);
	uint32_t t = (uint32_t)sample(p);
	update_sci(p);
	pthread_mutex_unlock(&p->lock);
	uint8_t val[ACPI_PM_TMR_LEN] = {(uint8_t)t, (uint8_t)(t >> 8), (uint8_t)(t >> 16),
					(uint8_t)(t >> 24)};
	memcpy(data, val + offset, size);
}

static void cf9_io(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool write)
{
	struct acpi_pm *p = opaque;
	if (!in_block(offset, data, size, write, 1))
		return;
	pthread_mutex_lock(&p->lock);
	if (!write) {
		memset(data, 0, size);
		data[0] = p->cf9;
		pthread_mutex_unlock(&p->lock);
		return;
	}
	p->cf9 = data[0] & CF9_STORED;
	pthread_mutex_unlock(&p->lock);
	if (data[0] & ACPI_CF9_RST_CPU)
		vm_stop(p->vm, VM_STOP_RESET, 0, "guest reset through port 0xcf9");
}

/* ---- state ------------------------------------------------------------------------------- */

static void acpi_pm_save(void *opaque, struct state_writer *w)
{
	struct acpi_pm *p = opaque;
	pthread_mutex_lock(&p->lock);
	uint32_t t = (uint32_t)sample(p);
	update_sci(p); /* sample() may have just raised TMR_STS */
	sw_begin(w, acpi_pm_tag, ACPI_PM_STATE_VERSION);
	sw_u16(w, p->sts);
	sw_u16(w, p->en);
	sw_u16(w, p->cnt);
	sw_u8(w, p->cf9);
	sw_u32(w, t); /* the count; it continues from here after a load */
	pthread_mutex_unlock(&p->lock);
}

static int acpi_pm_load(void *opaque, struct state_reader *r)
{
	struct acpi_pm *p = opaque;
	sr_begin(r, acpi_pm_tag, ACPI_PM_STATE_VERSION);
	uint16_t sts = sr_u16(r);
	uint16_t en = sr_u16(r);
	uint16_t cnt = sr_u16(r);
	uint8_t cf9 = sr_u8(r);
	uint32_t t = sr_u32(r);
	sr_check(r, (sts & ~STS_BITS) == 0);
	sr_check(r, (en & ~EN_BITS) == 0);
	sr_check(r, (cnt & ~CNT_STORED) == 0);
	sr_check(r, (cf9 & ~CF9_STORED) == 0);
	if (r->err)
		return -1;
	pthread_mutex_lock(&p->lock);
	p->sts = sts;
	p->en = en;
	p->cnt = cnt;
	p->cf9 = cf9;
	p->tmr_base = mono_ns() - (int64_t)ticks_to_ns(t);
	p->tmr_half = t >> TMR_MSB;
	p->sci_level = -1; /* re-drive the line */
	update_sci(p);
	rearm(p);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

/* ---- life cycle -------------------------------------------------------------------------- */

static void acpi_pm_free(struct acpi_pm *p)
{
	if (p->timer_fd >= 0)
		close(p->timer_fd);
	if (p->stop_fd >= 0)
		close(p->stop_fd);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static void acpi_pm_destroy(void *opaque)
{
	struct acpi_pm *p = opaque;
	if (p->thread_started) {
		uint64_t one = 1;
		if (write(p->stop_fd, &one, sizeof(one)) < 0) {
			/* Counter overflow only: the thread wakes anyway. */
		}
		pthread_join(p->thread, NULL);
	}
	acpi_pm_free(p);
}

static int acpi_pm_create(struct vm *vm)
{
	struct acpi_pm *p = calloc(1, sizeof(*p));
	if (!p) {
		log_error("acpi: out of memory");
		return -1;
	}
	pthread_mutex_init(&p->lock, NULL);
	p->vm = vm;
	p->sci_level = -1;
	p->tmr_base = mono_ns(); /* the timer starts at 0 with the machine */
	p->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	p->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->timer_fd < 0 || p->stop_fd < 0) {
		log_error("acpi: cannot create the PM timer's timer: %s", strerror(errno));
		acpi_pm_free(p);
		return -1;
	}
	/* On failure vm_create gives up on the whole VM, so ranges already claimed are never
	 * dispatched to again. */
	if (bus_register(&vm->pio, ACPI_PM1A_EVT, ACPI_PM1_EVT_LEN, evt_io, p, "acpi-pm1-evt") <
		0 ||
	    bus_register(&vm->pio, ACPI_PM1A_CNT, ACPI_PM1_CNT_LEN, cnt_io, p, "acpi-pm1-cnt") <
		0 ||
	    bus_register(&vm->pio, ACPI_PM_TMR, ACPI_PM_TMR_LEN, tmr_io, p, "acpi-pm-tmr") < 0 ||
	    bus_register(&vm->pio, ACPI_RESET_PORT, 1, cf9_io, p, "reset-cf9") < 0) {
		log_error("acpi: ports 0x%x-0x%x or 0x%x are taken", ACPI_PM1A_EVT,
			  ACPI_PM_TMR + ACPI_PM_TMR_LEN - 1, ACPI_RESET_PORT);
		acpi_pm_free(p);
		return -1;
	}
	int e = pthread_create(&p->thread, NULL, acpi_pm_thread, p);
	if (e) {
		log_error("acpi: cannot start the PM timer's thread: %s", strerror(e));
		acpi_pm_free(p);
		return -1;
	}
	p->thread_started = true;
	p->dev = (struct device){
	    .name = "acpi_pm",
	    .opaque = p,
	    .save = acpi_pm_save,
	    .load = acpi_pm_load,
	    .destroy = acpi_pm_destroy,
	};
	vm_add_device(vm, &p->dev);
	pthread_mutex_lock(&p->lock);
	update_sci(p);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

static struct device_type acpi_pm_type = {.name = "acpi_pm", .order = 60, .create = acpi_pm_create};
DEVICE_REGISTER(acpi_pm_type)
