/* Both engines through the engine seam, on the same tiny code snippets: what one engine does
 * the other must do too. Guest code runs at CPL 3 where it can (KVM runs it natively even on
 * nested hosts) and at CPL 0 only for a few instructions.
 *
 * Guest I/O reaches a test device the way it reaches real ones (vm_pio / vm_mmio, called by
 * this file for KVM's exits and by the soft engine itself); the device ends a run by kicking
 * the vCPU when the guest writes its "done" register. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "vm/vm.h"

#define CODE 0x100000ull
#define DATA 0x200000ull
#define PML4 0x1000ull
#define PDPT 0x2000ull
#define PD   0x3000ull
#define MMIO 0xd0000000ull

#define DONE 0xff8 /* offset of the test device's "done" register */

/* A test device on both buses: it records writes, answers reads from a table, and kicks the
 * vCPU when the guest writes DONE. */
struct testdev {
	struct vcpu *cpu;
	uint64_t written[512], to_read[512];
	unsigned nwrites;
};

struct fixture {
	const struct engine_ops *eng;
	struct vm_config cfg;
	struct vm vm;
	struct cpu_state st;
	struct testdev dev;
};

static void testdev_access(void *opaque, uint64_t off, uint8_t *data, unsigned size, bool write)
{
	struct testdev *d = opaque;
	uint64_t v = 0;
	if (write) {
		memcpy(&v, data, size);
		d->written[(off / 8) % 512] = v;
		d->nwrites++;
		if (off == DONE)
			d->cpu->vm->engine->kick(d->cpu);
	} else {
		v = d->to_read[(off / 8) % 512];
		memcpy(data, &v, size);
	}
}

static const struct engine_ops *engine_under_test;

static int setup(void **state)
{
	char why[256];
	const struct engine_ops *eng = engine_under_test;
	if (!eng->available(why, sizeof(why))) {
		print_message("skipping %s engine tests: %s\n", eng->name, why);
		*state = NULL;
		return 0;
	}
	struct fixture *f = calloc(1, sizeof(*f));
	f->eng = eng;
	f->cfg = (struct vm_config){.mem_size = 16 << 20, .smp = 1};
	f->vm.cfg = &f->cfg;
	f->vm.engine = eng;
	f->vm.nvcpus = 1;
	pthread_mutex_init(&f->vm.lock, NULL);
	pthread_cond_init(&f->vm.stopped_cond, NULL);
	bus_init(&f->vm.pio, "pio");
	bus_init(&f->vm.mmio, "mmio");
	assert_int_equal(gmem_init(&f->vm.mem, f->cfg.mem_size, why, sizeof(why)), 0);
	assert_int_equal(eng->vm_init(&f->vm), 0);
	f->vm.vcpus[0].vm = &f->vm;
	assert_int_equal(eng->vcpu_init(&f->vm.vcpus[0]), 0);
	f->dev.cpu = &f->vm.vcpus[0];
	assert_int_equal(bus_register(&f->vm.mmio, MMIO, 0x1000, testdev_access, &f->dev, "test"),
			 0);
	assert_int_equal(bus_register(&f->vm.pio, 0x3f8, 8, testdev_access, &f->dev, "test"), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	if (!f)
		return 0;
	/* Devices first, as vm_destroy does: the soft engine's interrupt controllers run a timer
	 * thread that notifies the vCPU. */
	while (f->vm.devices) {
		struct device *d = f->vm.devices;
		f->vm.devices = d->next;
		d->destroy(d->opaque);
	}
	f->eng->vcpu_destroy(&f->vm.vcpus[0]);
	f->eng->vm_destroy(&f->vm);
	gmem_destroy(&f->vm.mem);
	bus_destroy(&f->vm.pio);
	bus_destroy(&f->vm.mmio);
	pthread_mutex_destroy(&f->vm.lock);
	pthread_cond_destroy(&f->vm.stopped_cond);
	free(f);
	return 0;
}

#define NEED_ENGINE(f)                                                                             \
	do {                                                                                       \
		if (!(f))                                                                          \
			skip();                                                                    \
	} while (0)

static void put64(struct fixture *f, uint64_t gpa, uint64_t v)
{
	assert_int_equal(gmem_write(&f->vm.mem, gpa, &v, 8), 0);
}

/* Long mode with the first 4 GiB identity mapped by 2 MiB pages; user-accessible when cpl 3. */
static void enter_long_mode(struct fixture *f, int cpl, const void *code, size_t len)
{
	uint64_t u = cpl ? 4 : 0;
	put64(f, PML4, PDPT | 3 | u);
	for (uint64_t g = 0; g < 4; g++)
		put64(f, PDPT + g * 8, (PD + g * 0x1000) | 3 | u);
	for (uint64_t i = 0; i < 4 * 512; i++)
		put64(f, PD + i * 8, (i << 21) | 0x83 | u);
	assert_int_equal(gmem_write(&f->vm.mem, CODE, code, len), 0);

	struct cpu_state *st = &f->st;
	assert_int_equal(f->eng->get_state(&f->vm.vcpus[0], st), 0);
	st->cr0 = CR0_PE | CR0_PG | CR0_ET | CR0_NE;
	st->cr3 = PML4;
	st->cr4 = CR4_PAE | CR4_OSFXSR;
	st->efer = EFER_LME | EFER_LMA;
	struct cpu_segment code_seg = {.limit = 0xffffffff,
				       .selector = (uint16_t)(cpl ? 0x1b : 0x08),
				       .type = 0xb,
				       .s = 1,
				       .dpl = (uint8_t)cpl,
				       .present = 1,
				       .l = 1,
				       .g = 1};
	struct cpu_segment data_seg = {.limit = 0xffffffff,
				       .selector = (uint16_t)(cpl ? 0x23 : 0x10),
				       .type = 0x3,
				       .s = 1,
				       .dpl = (uint8_t)cpl,
				       .present = 1,
				       .db = 1,
				       .g = 1};
	st->seg[SEG_CS] = code_seg;
	st->seg[SEG_SS] = st->seg[SEG_DS] = st->seg[SEG_ES] = data_seg;
	st->seg[SEG_FS] = st->seg[SEG_GS] = data_seg;
	st->seg[SEG_TR] = (struct cpu_segment){.limit = 0x67, .type = 0xb, .present = 1};
	st->rip = CODE;
	st->gpr[GPR_RSP] = DATA + 0x1000;
	st->rflags = RFLAGS_FIXED;
	assert_int_equal(f->eng->set_state(&f->vm.vcpus[0], st), 0);
}

static struct vm_exit run_once(struct fixture *f)
{
	struct vm_exit ex;
	memset(&ex, 0, sizeof(ex));
	int rc = f->eng->vcpu_run(&f->vm.vcpus[0], &ex);
	if (rc < 0)
		print_message("%s: vcpu_run failed: %s\n", f->eng->name, ex.fail.msg);
	assert_int_equal(rc, 0);
	return ex;
}

/* Runs the guest, passing its I/O to the buses as the VM does, until the device says done. */
static void run_to_done(struct fixture *f)
{
	struct vcpu *cpu = &f->vm.vcpus[0];
	for (int i = 0; i < 1000; i++) {
		struct vm_exit ex = run_once(f);
		switch (ex.reason) {
		case VMEXIT_IO:
			for (uint32_t k = 0; k < ex.io.count; k++)
				vm_pio(cpu, ex.io.port, ex.io.data + k * ex.io.size, ex.io.size,
				       ex.io.write);
			break;
		case VMEXIT_MMIO:
			assert_int_equal(
			    vm_mmio(cpu, ex.mmio.addr, ex.mmio.data, ex.mmio.len, ex.mmio.write),
			    0);
			break;
		case VMEXIT_KICKED:
			return;
		default:
			fail_msg("%s: unexpected exit %d", f->eng->name, (int)ex.reason);
		}
	}
	fail_msg("%s: the guest never finished", f->eng->name);
}

/* Stores the guest's "done" signal: mov [MMIO + DONE], eax. */
#define GUEST_DONE 0xa3, 0xf8, 0x0f, 0x00, 0xd0, 0, 0, 0, 0

/* CPL 3: a store and a load to addresses without RAM reach the device; the value the device
 * answers for the load reaches the guest register. */
static void test_cpl3_mmio_write_and_read(void **state)
{
	struct fixture *f = *state;
	NEED_ENGINE(f);
	static const uint8_t code[] = {
	    0x48,       0xb8, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x08, /* mov rax, imm64 */
	    0x48,       0x01, 0xd8,                                           /* add rax, rbx */
	    0x48,       0xa3, 0x00, 0x00, 0x00, 0xd0, 0,    0,    0,    0,    /* mov [MMIO], rax */
	    0x48,       0xa1, 0x08, 0x00, 0x00, 0xd0, 0,    0,    0,    0, /* mov rax, [MMIO+8] */
	    0x48,       0xa3, 0x10, 0x00, 0x00, 0xd0, 0,    0,    0,    0, /* mov [MMIO+16], rax */
	    GUEST_DONE, 0xeb, 0xfe,                                        /* jmp $ */
	};
	enter_long_mode(f, 3, code, sizeof(code));
	f->st.gpr[GPR_RBX] = 1;
	assert_int_equal(f->eng->set_state(&f->vm.vcpus[0], &f->st), 0);
	f->dev.to_read[1] = 0xfeedfacecafebeefull;
	run_to_done(f);
	assert_int_equal(f->dev.written[0], 0x0877665544332212ull);
	assert_int_equal(f->dev.written[2], 0xfeedfacecafebeefull);
	assert_int_equal(f->dev.nwrites, 3);
}

/* CPL 0: OUT reaches the port device with its size and data; IN gets the device's answer. */
static void test_port_io(void **state)
{
	struct fixture *f = *state;
	NEED_ENGINE(f);
	static const uint8_t code[] = {
	    0xb0,       0x5a,             /* mov al, 0x5a */
	    0x66,       0xba, 0xf8, 0x03, /* mov dx, 0x3f8 */
	    0xee,                         /* out dx, al */
	    0x66,       0xba, 0xf9, 0x03, /* mov dx, 0x3f9: reads 0x1234 (to_read[0] at offset 1) */
	    0x66,       0xed,             /* in ax, dx */
	    0x66,       0xa3, 0x00, 0x00, 0x00, 0xd0, 0, 0, 0, 0, /* mov [MMIO], ax */
	    GUEST_DONE, 0xf4,                                     /* hlt: not reached */
	};
	enter_long_mode(f, 0, code, sizeof(code));
	f->dev.to_read[0] = 0x1234;
	run_to_done(f);
	/* Port writes land in written[0] (offset 0) before the MMIO write overwrote it: check
	 * the order through the count and the final value. */
	assert_int_equal(f->dev.nwrites, 3);
	assert_int_equal(f->dev.written[0], 0x1234);
}

/* The complete state survives a get/set round trip, and values written are the ones the
 * guest computes with. */
static void test_state_round_trip(void **state)
{
	struct fixture *f = *state;
	NEED_ENGINE(f);
	static const uint8_t code[] = {
	    0x4c,       0x89, 0xf8,                               /* mov rax, r15 */
	    0x48,       0xa3, 0x00, 0x00, 0x00, 0xd0, 0, 0, 0, 0, /* mov [MMIO], rax */
	    GUEST_DONE, 0xeb, 0xfe,
	};
	enter_long_mode(f, 3, code, sizeof(code));
	struct cpu_state *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
	assert_int_equal(f->eng->get_state(&f->vm.vcpus[0], a), 0);
	a->gpr[GPR_R15] = 0x0123456789abcdefull;
	assert_int_equal(cpu_state_set_msr(a, MSR_LSTAR, 0xffffffff81000000ull), 0);
	assert_int_equal(f->eng->set_state(&f->vm.vcpus[0], a), 0);
	assert_int_equal(f->eng->get_state(&f->vm.vcpus[0], b), 0);
	assert_memory_equal(a->gpr, b->gpr, sizeof(a->gpr));
	assert_int_equal(a->rip, b->rip);
	assert_int_equal(a->cr3, b->cr3);
	assert_int_equal(a->efer, b->efer);
	assert_memory_equal(&a->seg[SEG_CS], &b->seg[SEG_CS], sizeof(a->seg[SEG_CS]));
	assert_memory_equal(a->xsave, b->xsave, 512);
	uint64_t lstar = 0;
	assert_true(cpu_state_get_msr(b, MSR_LSTAR, &lstar));
	assert_int_equal(lstar, 0xffffffff81000000ull);
	assert_true(b->nmsrs >= 8);

	run_to_done(f);
	assert_int_equal(f->dev.written[0], 0x0123456789abcdefull);
	free(a);
	free(b);
}

/* Pages the guest writes show up in the dirty bitmap, once. */
static void test_dirty_pages(void **state)
{
	struct fixture *f = *state;
	NEED_ENGINE(f);
	static const uint8_t code[] = {
	    0x48,       0xc7, 0xc0, 0x00, 0x50, 0x20, 0x00, /* mov rax, 0x205000 */
	    0x48,       0x89, 0x00,                         /* mov [rax], rax */
	    0x48,       0x89, 0x80, 0x00, 0x30, 0x00, 0x00, /* mov [rax+0x3000], rax */
	    GUEST_DONE, 0xeb, 0xfe,
	};
	enter_long_mode(f, 3, code, sizeof(code));
	size_t words = (f->vm.mem.size / PAGE_SIZE + 63) / 64;
	uint64_t *bits = calloc(words, 8);
	assert_int_equal(f->eng->dirty_log(&f->vm, true), 0);
	assert_int_equal(f->eng->dirty_pages(&f->vm, bits), 0); /* clear */
	run_to_done(f);
	assert_int_equal(f->eng->dirty_pages(&f->vm, bits), 0);
	uint64_t p1 = 0x205000 / PAGE_SIZE, p2 = 0x208000 / PAGE_SIZE, other = 0x206000 / PAGE_SIZE;
	assert_true(bits[p1 / 64] >> (p1 % 64) & 1);
	assert_true(bits[p2 / 64] >> (p2 % 64) & 1);
	assert_false(bits[other / 64] >> (other % 64) & 1);
	assert_int_equal(f->eng->dirty_pages(&f->vm, bits), 0);
	assert_false(bits[p1 / 64] >> (p1 % 64) & 1);
	assert_int_equal(f->eng->dirty_log(&f->vm, false), 0);
	free(bits);
}

/* A fault with no usable IDT: KVM escalates to a triple fault (a shutdown exit); the soft
 * engine, which cannot deliver exceptions yet, stops with a message that says so. Neither
 * hangs. */
static void test_fault_without_idt(void **state)
{
	struct fixture *f = *state;
	NEED_ENGINE(f);
	static const uint8_t code[] = {0x0f, 0x0b}; /* ud2 */
	enter_long_mode(f, 0, code, sizeof(code));
	f->st.idt = (struct cpu_dtable){0, 0};
	assert_int_equal(f->eng->set_state(&f->vm.vcpus[0], &f->st), 0);
	struct vm_exit ex;
	memset(&ex, 0, sizeof(ex));
	/* #UD finds no IDT: #GP, which finds none either: #DF, and then a triple fault. */
	int rc = f->eng->vcpu_run(&f->vm.vcpus[0], &ex);
	assert_int_equal(rc, 0);
	assert_int_equal(ex.reason, VMEXIT_SHUTDOWN);
}

static void *kicker(void *arg)
{
	struct vcpu *cpu = arg;
	usleep(50 * 1000);
	cpu->vm->engine->kick(cpu);
	return NULL;
}

/* kick() makes a vCPU spinning in guest code return to the VMM. */
static void test_kick(void **state)
{
	struct fixture *f = *state;
	NEED_ENGINE(f);
	static const uint8_t code[] = {0xeb, 0xfe}; /* jmp $ at CPL 3 */
	enter_long_mode(f, 3, code, sizeof(code));
	struct vcpu *cpu = &f->vm.vcpus[0];
	cpu->thread = pthread_self();
	atomic_store(&cpu->thread_started, true);
	pthread_t t;
	pthread_create(&t, NULL, kicker, cpu);
	struct vm_exit ex = run_once(f);
	pthread_join(t, NULL);
	atomic_store(&cpu->thread_started, false);
	assert_int_equal(ex.reason, VMEXIT_KICKED);
}

/* KVM's in-kernel interrupt controller takes lines and MSIs; the soft engine has none yet and
 * says so (-1) instead of dropping them silently. */
static void test_interrupt_lines(void **state)
{
	struct fixture *f = *state;
	NEED_ENGINE(f);
	assert_int_equal(f->eng->irq_line(&f->vm, 4, 1), 0);
	assert_int_equal(f->eng->irq_line(&f->vm, 4, 0), 0);
	assert_int_equal(f->eng->msi(&f->vm, 0xfee00000, 0x30), 0);
}

static void test_engine_select(void **state)
{
	(void)state;
	char err[256];
	assert_ptr_equal(engine_select(ENGINE_KVM, err, sizeof(err)), &kvm_engine);
	assert_ptr_equal(engine_select(ENGINE_SOFT, err, sizeof(err)), &soft_engine);
}

#define ENGINE_TESTS                                                                               \
	cmocka_unit_test_setup_teardown(test_cpl3_mmio_write_and_read, setup, teardown),           \
	    cmocka_unit_test_setup_teardown(test_port_io, setup, teardown),                        \
	    cmocka_unit_test_setup_teardown(test_state_round_trip, setup, teardown),               \
	    cmocka_unit_test_setup_teardown(test_dirty_pages, setup, teardown),                    \
	    cmocka_unit_test_setup_teardown(test_fault_without_idt, setup, teardown),              \
	    cmocka_unit_test_setup_teardown(test_kick, setup, teardown),                           \
	    cmocka_unit_test_setup_teardown(test_interrupt_lines, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {ENGINE_TESTS, cmocka_unit_test(test_engine_select)};
	int failed = 0;
	engine_under_test = &kvm_engine;
	failed += cmocka_run_group_tests_name("engine kvm", tests, NULL, NULL);
	engine_under_test = &soft_engine;
	failed += cmocka_run_group_tests_name("engine soft", tests, NULL, NULL);
	return failed;
}
