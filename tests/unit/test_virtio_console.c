/* virtio-console (src/virtio/console.c) driven as a guest driver drives it: found on the PCI bus
 * through configuration mechanism #1, set up through the virtio capabilities of BAR 0, with split
 * rings in guest RAM and notifications that follow the suppression rules (the event index or
 * VRING_USED_F_NO_NOTIFY), so a device that forgets to ask for them stalls the test. The
 * chardev is the real "stdio" backend with stdin and stdout swapped for pipes (as in
 * test_devices.c): input goes through its thread, its backpressure and its Ctrl-A escapes. The
 * only test double is the engine's interrupt line input, which records INTx levels. */
#include <errno.h>
#include <fcntl.h>
#include <linux/virtio_config.h>
#include <linux/virtio_console.h>
#include <linux/virtio_pci.h>
#include <linux/virtio_ring.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend/chardev.h"
#include "dev/pci.h"
#include "vm/bus.h"
#include "vm/device.h"
#include "vm/mem.h"
#include "vm/state.h"
#include "vm/vm.h"

#include "test_vm.h"

#define NLINES     32
#define RXQ        0
#define TXQ        1
#define QSIZE      8
#define RING_BASE  0x100000ull /* queue q's rings at RING_BASE + q * 0x10000 */
#define BUF_BASE   0x200000ull /* queue q's buffers at BUF_BASE + q * 0x100000, 4 KiB per desc */
#define BUF_STRIDE 0x1000u
#define TIMEOUT_MS 5000

static atomic_int irq_level[NLINES];

static int test_irq_line(struct vm *vm, unsigned gsi, int level)
{
	(void)vm;
	if (gsi < NLINES)
		atomic_store(&irq_level[gsi], level);
	return 0;
}

static const struct engine_ops test_engine = {.name = "test", .irq_line = test_irq_line};

struct tq {
	uint64_t desc, avail, used;
	uint16_t avail_idx; /* the driver's next avail index */
	uint16_t used_seen; /* used entries the driver has consumed */
	uint16_t next_desc;
};

struct tvm {
	struct vm vm;
	struct vm_config cfg;
	int in_w, out_r;
	int saved_stdin, saved_stdout;
	unsigned slot;
	uint64_t bar;
	uint32_t common, isr, device, notify, notify_mult;
	bool event_idx;
	struct tq q[2];
};

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* ---- port I/O, PCI configuration, BAR 0 ---------------------------------------------------- */

static uint32_t cfg_rd(struct tvm *t, unsigned slot, unsigned reg, unsigned size)
{
	return test_cfg_rd(&t->vm, slot, 0, reg, size);
}

static void cfg_wr(struct tvm *t, unsigned slot, unsigned reg, uint32_t v, unsigned size)
{
	test_cfg_wr(&t->vm, slot, 0, reg, v, size);
}

static uint32_t rd(struct tvm *t, uint32_t off, unsigned size)
{
	return (uint32_t)test_bus_rd(&t->vm.mmio, t->bar + off, size);
}

static void wr(struct tvm *t, uint32_t off, uint32_t v, unsigned size)
{
	test_bus_wr(&t->vm.mmio, t->bar + off, v, size);
}

static uint8_t status(struct tvm *t)
{
	return (uint8_t)rd(t, t->common + VIRTIO_PCI_COMMON_STATUS, 1);
}

static void set_status(struct tvm *t, uint8_t s)
{
	wr(t, t->common + VIRTIO_PCI_COMMON_STATUS, s, 1);
}

/* Walks the vendor capabilities as a driver does and records where the regions are. */
static void find_caps(struct tvm *t)
{
	assert_true(cfg_rd(t, t->slot, 0x06, 2) & 0x10); /* capability list */
	unsigned found = 0;
	for (unsigned c = cfg_rd(t, t->slot, 0x34, 1) & 0xfc; c; c = cfg_rd(t, t->slot, c + 1, 1)) {
		if (cfg_rd(t, t->slot, c, 1) != 0x09)
			continue;
		unsigned type = cfg_rd(t, t->slot, c + VIRTIO_PCI_CAP_CFG_TYPE, 1);
		uint32_t off = cfg_rd(t, t->slot, c + VIRTIO_PCI_CAP_OFFSET, 4);
		if (type != VIRTIO_PCI_CAP_PCI_CFG)
			assert_int_equal(cfg_rd(t, t->slot, c + VIRTIO_PCI_CAP_BAR, 1), 0);
		switch (type) {
		case VIRTIO_PCI_CAP_COMMON_CFG:
			t->common = off;
			break;
		case VIRTIO_PCI_CAP_ISR_CFG:
			t->isr = off;
			break;
		case VIRTIO_PCI_CAP_DEVICE_CFG:
			t->device = off;
			assert_true(cfg_rd(t, t->slot, c + VIRTIO_PCI_CAP_LENGTH, 4) >=
				    sizeof(struct virtio_console_config));
			break;
		case VIRTIO_PCI_CAP_NOTIFY_CFG:
			t->notify = off;
			t->notify_mult = cfg_rd(t, t->slot, c + 16, 4);
			break;
		default:
			continue;
		}
		found |= 1u << type;
	}
	assert_int_equal(found, 0x1e); /* common, notify, ISR, device */
}

/* ---- the VM --------------------------------------------------------------------------------- */

static struct tvm *tvm_new(bool virtio_console)
{
	struct tvm *t = calloc(1, sizeof(*t));
	char err[256];
	assert_non_null(t);
	for (int i = 0; i < NLINES; i++)
		atomic_store(&irq_level[i], -1);
	t->cfg.mem_size = 64ull << 20;
	t->cfg.smp = 1;
	t->cfg.serial = "stdio";
	t->cfg.virtio_console = virtio_console;
	assert_int_equal(test_vm_init(&t->vm, &t->cfg, &test_engine), 0);

	int in[2], out[2];
	assert_int_equal(pipe(in), 0);
	assert_int_equal(pipe(out), 0);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	fflush(stdout);
	t->saved_stdin = dup(STDIN_FILENO);
	t->saved_stdout = dup(STDOUT_FILENO);
	dup2(in[0], STDIN_FILENO);
	dup2(out[1], STDOUT_FILENO);
	close(in[0]);
	close(out[1]);
	t->in_w = in[1];
	t->out_r = out[0];

	t->vm.serial = chardev_open("stdio", err, sizeof(err));
	assert_non_null(t->vm.serial);
	static const char *const mine[] = {"uart8250", "pci", "virtio-console", NULL};
	assert_int_equal(test_vm_add_devices(&t->vm, mine), 0);
	assert_int_equal(chardev_start(t->vm.serial), 0);
	if (!virtio_console)
		return t;

	for (t->slot = 1; t->slot < PCI_SLOTS; t->slot++)
		if (cfg_rd(t, t->slot, 0, 2) == 0x1af4)
			break;
	assert_true(t->slot < PCI_SLOTS);
	uint32_t bar = cfg_rd(t, t->slot, 0x10, 4);
	assert_int_equal(bar & 1, 0); /* a memory BAR */
	t->bar = bar & ~0xfu;
	cfg_wr(t, t->slot, 0x04, cfg_rd(t, t->slot, 0x04, 2) | 0x6, 2); /* memory, bus master */
	find_caps(t);
	return t;
}

static void tvm_free(struct tvm *t)
{
	test_vm_destroy(&t->vm);
	chardev_close(t->vm.serial);
	close(t->in_w);
	close(t->out_r);
	dup2(t->saved_stdin, STDIN_FILENO);
	dup2(t->saved_stdout, STDOUT_FILENO);
	close(t->saved_stdin);
	close(t->saved_stdout);
	free(t);
}

static int setup(void **state)
{
	*state = tvm_new(true);
	return 0;
}

static int setup_uart(void **state)
{
	*state = tvm_new(false);
	return 0;
}

static int teardown(void **state)
{
	tvm_free(*state);
	return 0;
}

static void type_input(struct tvm *t, const void *p, size_t n)
{
	assert_int_equal(write(t->in_w, p, n), (ssize_t)n);
}

static size_t read_output(struct tvm *t, char *buf, size_t cap)
{
	ssize_t n = read(t->out_r, buf, cap);
	return n > 0 ? (size_t)n : 0;
}

static void *host(struct tvm *t, uint64_t gpa, uint64_t len)
{
	return test_ram(&t->vm, gpa, len);
}

/* ---- the driver ----------------------------------------------------------------------------- */

/* Reset, feature negotiation (VERSION_1, and the event index if asked), both queues of QSIZE
 * entries, DRIVER_OK: the sequence of virtio spec 3.1.1. */
static void driver_init(struct tvm *t, bool event_idx)
{
	uint32_t c = t->common;
	set_status(t, 0);
	assert_int_equal(status(t), 0);
	set_status(t, VIRTIO_CONFIG_S_ACKNOWLEDGE);
	set_status(t, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
	wr(t, c + VIRTIO_PCI_COMMON_DFSELECT, 0, 4);
	uint64_t f = rd(t, c + VIRTIO_PCI_COMMON_DF, 4);
	wr(t, c + VIRTIO_PCI_COMMON_DFSELECT, 1, 4);
	f |= (uint64_t)rd(t, c + VIRTIO_PCI_COMMON_DF, 4) << 32;
	assert_true(f & (1ull << VIRTIO_F_VERSION_1));
	assert_true(f & (1ull << VIRTIO_RING_F_EVENT_IDX));
	/* One port, no size, no emergency write: nothing the driver must look at. */
	assert_false(f & (1ull << VIRTIO_CONSOLE_F_MULTIPORT));
	assert_false(f & (1ull << VIRTIO_CONSOLE_F_SIZE));
	assert_false(f & (1ull << VIRTIO_CONSOLE_F_EMERG_WRITE));
	uint64_t want = 1ull << VIRTIO_F_VERSION_1;
	if (event_idx)
		want |= 1ull << VIRTIO_RING_F_EVENT_IDX;
	t->event_idx = event_idx;
	wr(t, c + VIRTIO_PCI_COMMON_GFSELECT, 0, 4);
	wr(t, c + VIRTIO_PCI_COMMON_GF, (uint32_t)want, 4);
	wr(t, c + VIRTIO_PCI_COMMON_GFSELECT, 1, 4);
	wr(t, c + VIRTIO_PCI_COMMON_GF, (uint32_t)(want >> 32), 4);
	uint8_t s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
	set_status(t, s | VIRTIO_CONFIG_S_FEATURES_OK);
	assert_int_equal(status(t), s | VIRTIO_CONFIG_S_FEATURES_OK);
	s |= VIRTIO_CONFIG_S_FEATURES_OK;
	assert_int_equal(rd(t, c + VIRTIO_PCI_COMMON_NUMQ, 2), 2);
	for (unsigned q = 0; q < 2; q++) {
		struct tq *tq = &t->q[q];
		uint64_t base = RING_BASE + q * 0x10000ull;
		memset(host(t, base, 0x3000), 0, 0x3000);
		*tq = (struct tq){.desc = base, .avail = base + 0x1000, .used = base + 0x2000};
		wr(t, c + VIRTIO_PCI_COMMON_Q_SELECT, q, 2);
		assert_int_equal(rd(t, c + VIRTIO_PCI_COMMON_Q_SIZE, 2), 64);
		wr(t, c + VIRTIO_PCI_COMMON_Q_SIZE, QSIZE, 2);
		wr(t, c + VIRTIO_PCI_COMMON_Q_MSIX, VIRTIO_MSI_NO_VECTOR, 2);
		wr(t, c + VIRTIO_PCI_COMMON_Q_DESCLO, (uint32_t)tq->desc, 4);
		wr(t, c + VIRTIO_PCI_COMMON_Q_DESCHI, 0, 4);
		wr(t, c + VIRTIO_PCI_COMMON_Q_AVAILLO, (uint32_t)tq->avail, 4);
		wr(t, c + VIRTIO_PCI_COMMON_Q_AVAILHI, 0, 4);
		wr(t, c + VIRTIO_PCI_COMMON_Q_USEDLO, (uint32_t)tq->used, 4);
		wr(t, c + VIRTIO_PCI_COMMON_Q_USEDHI, 0, 4);
		wr(t, c + VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
	}
	set_status(t, s | VIRTIO_CONFIG_S_DRIVER_OK);
	assert_int_equal(status(t), s | VIRTIO_CONFIG_S_DRIVER_OK);
}

struct buf {
	const void *data; /* device-readable contents, or NULL for a writable buffer */
	uint32_t len;
};

static uint16_t *avail_ring(struct tvm *t, unsigned q)
{
	return host(t, t->q[q].avail, 4 + 2 * QSIZE + 2);
}

static uint16_t *used_hdr(struct tvm *t, unsigned q)
{
	return host(t, t->q[q].used, 4 + 8 * QSIZE + 2);
}

/* Makes a chain of n buffers available on queue q and notifies the device when the suppression
 * rules say so. Each descriptor's buffer is its own 4 KiB slot. */
static void add_chain(struct tvm *t, unsigned q, const struct buf *b, unsigned n)
{
	struct tq *tq = &t->q[q];
	struct vring_desc *d = host(t, tq->desc, sizeof(*d) * QSIZE);
	uint16_t head = tq->next_desc;
	for (unsigned i = 0; i < n; i++) {
		uint16_t k = (uint16_t)((head + i) % QSIZE);
		uint64_t gpa = BUF_BASE + q * 0x100000ull + (uint64_t)k * BUF_STRIDE;
		assert_true(b[i].len <= BUF_STRIDE);
		d[k].addr = gpa;
		d[k].len = b[i].len;
		d[k].flags = b[i].data ? 0 : VRING_DESC_F_WRITE;
		if (i + 1 < n) {
			d[k].flags |= VRING_DESC_F_NEXT;
			d[k].next = (uint16_t)((k + 1) % QSIZE);
		}
		if (b[i].data)
			memcpy(host(t, gpa, b[i].len), b[i].data, b[i].len);
		else
			memset(host(t, gpa, b[i].len), 0xee, b[i].len);
	}
	tq->next_desc = (uint16_t)((head + n) % QSIZE);
	uint16_t *av = avail_ring(t, q);
	uint16_t old = tq->avail_idx;
	av[2 + old % QSIZE] = head;
	tq->avail_idx++;
	__atomic_store_n(&av[1], tq->avail_idx, __ATOMIC_SEQ_CST);
	uint16_t *u = used_hdr(t, q);
	bool kick;
	if (t->event_idx) {
		uint16_t ev = __atomic_load_n(&u[2 + 4 * QSIZE], __ATOMIC_SEQ_CST);
		kick = (uint16_t)(tq->avail_idx - ev - 1) < (uint16_t)(tq->avail_idx - old);
	} else {
		kick = !(__atomic_load_n(&u[0], __ATOMIC_SEQ_CST) & VRING_USED_F_NO_NOTIFY);
	}
	if (kick)
		wr(t, t->notify + q * t->notify_mult, q, 2);
}

static uint16_t used_idx(struct tvm *t, unsigned q)
{
	return __atomic_load_n(&used_hdr(t, q)[1], __ATOMIC_SEQ_CST);
}

/* Waits until the device has used more chains of queue q than the driver consumed. */
static bool wait_used(struct tvm *t, unsigned q, int timeout_ms)
{
	for (int i = 0; i < timeout_ms; i++) {
		if (used_idx(t, q) != t->q[q].used_seen)
			return true;
		sleep_ms(1);
	}
	return used_idx(t, q) != t->q[q].used_seen;
}

/* Consumes the next used entry of queue q: its head and length. */
static struct vring_used_elem take_used(struct tvm *t, unsigned q)
{
	struct tq *tq = &t->q[q];
	assert_true(used_idx(t, q) != tq->used_seen);
	struct vring_used_elem e;
	memcpy(&e, (uint8_t *)used_hdr(t, q) + 4 + 8 * (size_t)(tq->used_seen % QSIZE), sizeof(e));
	tq->used_seen++;
	return e;
}

/* Keeps one-descriptor receive buffers of bufsize bytes posted and collects what the device
 * writes into them until want bytes came; fails when nothing arrives for TIMEOUT_MS. */
static void receive(struct tvm *t, uint8_t *out, size_t want, uint32_t bufsize)
{
	size_t got = 0;
	struct tq *tq = &t->q[RXQ];
	while (got < want) {
		while ((uint16_t)(tq->avail_idx - tq->used_seen) < QSIZE) {
			struct buf b = {NULL, bufsize};
			add_chain(t, RXQ, &b, 1);
		}
		if (!wait_used(t, RXQ, TIMEOUT_MS))
			fail_msg("receive stalled after %zu of %zu bytes", got, want);
		while (used_idx(t, RXQ) != tq->used_seen) {
			struct vring_used_elem e = take_used(t, RXQ);
			assert_true(e.id < QSIZE);
			assert_true(e.len >= 1 && e.len <= bufsize);
			assert_true(got + e.len <= want);
			uint64_t gpa = BUF_BASE + (uint64_t)e.id * BUF_STRIDE;
			memcpy(out + got, host(t, gpa, e.len), e.len);
			got += e.len;
		}
	}
}

static void wait_status(struct tvm *t, uint8_t mask, int timeout_ms)
{
	for (int i = 0; i < timeout_ms && !(status(t) & mask); i++)
		sleep_ms(1);
	assert_true(status(t) & mask);
}

static struct device *find_dev(struct tvm *t, const char *name)
{
	for (struct device *d = t->vm.devices; d; d = d->next)
		if (strcmp(d->name, name) == 0)
			return d;
	fail_msg("no device %s", name);
	return NULL;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_identity(void **state)
{
	struct tvm *t = *state;
	assert_int_equal(cfg_rd(t, t->slot, 0x02, 2), 0x1040 + 3); /* modern virtio-console */
	assert_int_equal(cfg_rd(t, t->slot, 0x09, 1), 0x00);
	assert_int_equal(cfg_rd(t, t->slot, 0x0a, 2), 0x0780); /* communication, other */
	struct virtio_console_config cc;
	uint8_t *p = (uint8_t *)&cc;
	for (unsigned i = 0; i < sizeof(cc); i++)
		p[i] = (uint8_t)rd(t, t->device + i, 1);
	assert_int_equal(cc.cols, 0);
	assert_int_equal(cc.rows, 0);
	driver_init(t, false);
	/* Under --console virtio the UART has no line: what the guest sends there goes nowhere. */
	test_bus_wr(&t->vm.pio, 0x3f8, 'U', 1);
	char buf[8];
	assert_int_equal(read_output(t, buf, sizeof(buf)), 0);
}

static void test_transmit(void **state)
{
	struct tvm *t = *state;
	driver_init(t, false);
	struct buf b[2] = {{"hello, ", 7}, {"virtio\n", 7}};
	add_chain(t, TXQ, b, 2);
	assert_true(wait_used(t, TXQ, TIMEOUT_MS));
	struct vring_used_elem e = take_used(t, TXQ);
	assert_int_equal(e.id, 0);
	assert_int_equal(e.len, 0); /* the device writes nothing into output buffers */
	char out[32] = {0};
	assert_int_equal(read_output(t, out, sizeof(out) - 1), 14);
	assert_string_equal(out, "hello, virtio\n");
	/* The driver asked for interrupts: INTx, acknowledged by reading ISR. */
	unsigned gsi = PCI_INTX_GSI(t->slot, 0);
	assert_int_equal(atomic_load(&irq_level[gsi]), 1);
	assert_int_equal(rd(t, t->isr, 1) & 1, 1);
	assert_int_equal(atomic_load(&irq_level[gsi]), 0);

	/* Many in a row, with the event index: in order, nothing lost. */
	driver_init(t, true);
	char want[QSIZE * 4 * 8 + 1], got[sizeof(want)];
	size_t n = 0, have = 0;
	for (unsigned i = 0; i < QSIZE * 4; i++) {
		char line[9];
		snprintf(line, sizeof(line), "line%03u\n", i);
		memcpy(want + n, line, 8);
		n += 8;
		struct buf one = {want + n - 8, 8};
		add_chain(t, TXQ, &one, 1);
		if ((uint16_t)(t->q[TXQ].avail_idx - t->q[TXQ].used_seen) == QSIZE)
			while (t->q[TXQ].avail_idx != t->q[TXQ].used_seen) {
				assert_true(wait_used(t, TXQ, TIMEOUT_MS));
				take_used(t, TXQ);
			}
	}
	while (t->q[TXQ].avail_idx != t->q[TXQ].used_seen) {
		assert_true(wait_used(t, TXQ, TIMEOUT_MS));
		take_used(t, TXQ);
	}
	for (int i = 0; i < TIMEOUT_MS && have < n; i++) {
		have += read_output(t, got + have, n - have);
		if (have < n)
			sleep_ms(1);
	}
	assert_int_equal(have, n);
	assert_memory_equal(got, want, n);
}

static void test_receive(void **state)
{
	struct tvm *t = *state;
	driver_init(t, false);
	type_input(t, "hello world", 11);
	uint8_t got[16];
	receive(t, got, 11, 4); /* buffers smaller than the input: it is split over them */
	assert_memory_equal(got, "hello world", 11);
	assert_int_equal(atomic_load(&irq_level[PCI_INTX_GSI(t->slot, 0)]), 1);
}

static void test_receive_backpressure(void **state)
{
	struct tvm *t = *state;
	/* Input comes while the guest has no buffers (here: no driver at all yet). The device
	 * holds some, the chardev the rest; a pipe is then not read, so nothing is lost. */
	enum { N = 20000 };
	uint8_t *in = malloc(N), *got = malloc(N);
	assert_non_null(in);
	assert_non_null(got);
	for (unsigned i = 0; i < N; i++)
		in[i] = (uint8_t)(i * 7 + i / 251);
	type_input(t, in, N);
	sleep_ms(50);
	driver_init(t, true);
	/* The device must ask to be notified of new buffers while input waits. */
	receive(t, got, N, 1000);
	assert_memory_equal(got, in, N);
	/* And again on a new driver without the event index, the input typed while it runs. */
	driver_init(t, false);
	type_input(t, in, N);
	receive(t, got, N, 3000);
	assert_memory_equal(got, in, N);
	free(in);
	free(got);
}

static void test_console_keys(void **state)
{
	struct tvm *t = *state;
	driver_init(t, false);
	/* C-a C-a sends one C-a, C-a with another key sends both; C-a x quits. */
	type_input(t, "\x01\x01z\x01q", 5);
	uint8_t got[4];
	receive(t, got, 4, 64);
	assert_memory_equal(got, "\x01z\x01q", 4);
	assert_false(vm_stopping(&t->vm));
	type_input(t, "\x01x", 2);
	for (int i = 0; i < TIMEOUT_MS && !vm_stopping(&t->vm); i++)
		sleep_ms(1);
	assert_int_equal(atomic_load(&t->vm.stop_reason), VM_STOP_USER);
	assert_string_equal(t->vm.stop_msg, "quit from the console");
	assert_int_equal(t->vm.exit_status, 0);
}

static void test_bad_receive_buffer(void **state)
{
	struct tvm *t = *state;
	driver_init(t, false);
	/* A receive chain the device cannot write into: the driver broke a rule. */
	struct buf b = {"ro", 2};
	add_chain(t, RXQ, &b, 1);
	type_input(t, "k", 1);
	wait_status(t, VIRTIO_CONFIG_S_NEEDS_RESET, TIMEOUT_MS);
	assert_int_equal(used_idx(t, RXQ), 0);
	/* A reset recovers the device; the input is still there for the new driver. */
	driver_init(t, false);
	uint8_t got[1];
	receive(t, got, 1, 16);
	assert_int_equal(got[0], 'k');
	assert_false(status(t) & VIRTIO_CONFIG_S_NEEDS_RESET);
}

static void save_dev(struct device *d, struct state_writer *w)
{
	sw_init(w);
	d->save(d->opaque, w);
}

static int load_dev(struct device *d, const void *buf, size_t len)
{
	struct state_reader r;
	sr_init(&r, buf, len);
	return d->load(d->opaque, &r);
}

static void test_save_load(void **state)
{
	struct tvm *t = *state;
	struct device *d = find_dev(t, "virtio-console");
	/* Input waiting for a driver is part of the device's state. */
	type_input(t, "saved", 5);
	struct state_writer w;
	for (int i = 0; i < TIMEOUT_MS; i++) {
		save_dev(d, &w);
		if (w.len >= 5 && memcmp(w.buf + w.len - 5, "saved", 5) == 0)
			break;
		sw_free(&w);
		sleep_ms(1);
	}
	assert_non_null(w.buf);
	uint8_t got[8];
	driver_init(t, false);
	receive(t, got, 5, 16);
	assert_memory_equal(got, "saved", 5);

	/* A record with more input than the device can hold is refused: the same record with
	 * 5000 bytes in place of the 5 (the length, little-endian, comes just before them). */
	size_t head = w.len - 5, blen = head + 5000;
	uint8_t *bad = calloc(1, blen);
	assert_non_null(bad);
	memcpy(bad, w.buf, head);
	bad[head - 4] = (uint8_t)5000;
	bad[head - 3] = (uint8_t)(5000 >> 8);
	bad[head - 2] = bad[head - 1] = 0;
	assert_int_equal(load_dev(d, bad, blen), -1);
	free(bad);

	/* Back to the record: the input is there again for the next driver. */
	assert_int_equal(load_dev(d, w.buf, w.len), 0);
	struct state_writer again;
	save_dev(d, &again);
	assert_int_equal(again.len, w.len);
	assert_memory_equal(again.buf, w.buf, w.len);
	sw_free(&again);
	sw_free(&w);
	driver_init(t, true);
	receive(t, got, 5, 16);
	assert_memory_equal(got, "saved", 5);
}

static void test_uart_console(void **state)
{
	struct tvm *t = *state;
	/* Without --console virtio there is no virtio-console, and the UART has the line. */
	for (unsigned s = 1; s < PCI_SLOTS; s++)
		assert_int_equal(cfg_rd(t, s, 0, 2), 0xffff);
	test_bus_wr(&t->vm.pio, 0x3f8, 'U', 1);
	char buf[8];
	assert_int_equal(read_output(t, buf, sizeof(buf)), 1);
	assert_int_equal(buf[0], 'U');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_identity, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transmit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_receive, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_receive_backpressure, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_console_keys, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_receive_buffer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_save_load, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uart_console, setup_uart, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
