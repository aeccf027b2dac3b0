/* The KVM engine through the engine seam, on tiny code snippets. Guest code runs at CPL 3
 * where it can (native speed on nested hosts) and at CPL 0 only for a few instructions. */
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

struct fixture {
	struct vm_config cfg;
	struct vm vm;
	struct cpu_state st;
};

static int setup(void **state)
{
	char why[256];
	if (!kvm_engine.available(why, sizeof(why))) {
		print_message("skipping KVM engine tests: %s\n", why);
		*state = NULL;
		return 0;
	}
	struct fixture *f = calloc(1, sizeof(*f));
	f->cfg = (struct vm_config){.mem_size = 16 << 20, .smp = 1};
	f->vm.cfg = &f->cfg;
	f->vm.engine = &kvm_engine;
	f->vm.nvcpus = 1;
	bus_init(&f->vm.pio, "pio");
	bus_init(&f->vm.mmio, "mmio");
	assert_int_equal(gmem_init(&f->vm.mem, f->cfg.mem_size, why, sizeof(why)), 0);
	assert_int_equal(kvm_engine.vm_init(&f->vm), 0);
	f->vm.vcpus[0].vm = &f->vm;
	assert_int_equal(kvm_engine.vcpu_init(&f->vm.vcpus[0]), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	if (!f)
		return 0;
	kvm_engine.vcpu_destroy(&f->vm.vcpus[0]);
	kvm_engine.vm_destroy(&f->vm);
	gmem_destroy(&f->vm.mem);
	bus_destroy(&f->vm.pio);
	bus_destroy(&f->vm.mmio);
	free(f);
	return 0;
}

#define NEED_KVM(f)                                                                                \
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
	assert_int_equal(kvm_engine.get_state(&f->vm.vcpus[0], st), 0);
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
	assert_int_equal(kvm_engine.set_state(&f->vm.vcpus[0], st), 0);
}

static struct vm_exit run(struct fixture *f)
{
	struct vm_exit ex;
	memset(&ex, 0, sizeof(ex));
	int rc = kvm_engine.vcpu_run(&f->vm.vcpus[0], &ex);
	if (rc < 0)
		print_message("vcpu_run failed: %s\n", ex.fail.msg);
	assert_int_equal(rc, 0);
	return ex;
}

/* CPL 3: a store and a load to addresses without RAM exit as MMIO; the value the VMM
 * supplies for the load reaches the guest register. */
static void test_cpl3_mmio_write_and_read(void **state)
{
	struct fixture *f = *state;
	NEED_KVM(f);
	static const uint8_t code[] = {
	    0x48, 0xb8, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x08, /* mov rax, imm64 */
	    0x48, 0x01, 0xd8,                                           /* add rax, rbx */
	    0x48, 0xa3, 0x00, 0x00, 0x00, 0xd0, 0,    0,    0,    0,    /* mov [MMIO], rax */
	    0x48, 0xa1, 0x08, 0x00, 0x00, 0xd0, 0,    0,    0,    0,    /* mov rax, [MMIO+8] */
	    0x48, 0xa3, 0x10, 0x00, 0x00, 0xd0, 0,    0,    0,    0,    /* mov [MMIO+16], rax */
	    0xeb, 0xfe,                                                 /* jmp $ */
	};
	enter_long_mode(f, 3, code, sizeof(code));
	f->st.gpr[GPR_RBX] = 1;
	assert_int_equal(kvm_engine.set_state(&f->vm.vcpus[0], &f->st), 0);

	struct vm_exit ex = run(f);
	assert_int_equal(ex.reason, VMEXIT_MMIO);
	assert_true(ex.mmio.write);
	assert_int_equal(ex.mmio.addr, MMIO);
	assert_int_equal(ex.mmio.len, 8);
	uint64_t v;
	memcpy(&v, ex.mmio.data, 8);
	assert_int_equal(v, 0x0877665544332212ull);

	ex = run(f);
	assert_int_equal(ex.reason, VMEXIT_MMIO);
	assert_false(ex.mmio.write);
	assert_int_equal(ex.mmio.addr, MMIO + 8);
	v = 0xfeedfacecafebeefull;
	memcpy(ex.mmio.data, &v, 8);

	ex = run(f);
	assert_int_equal(ex.reason, VMEXIT_MMIO);
	assert_int_equal(ex.mmio.addr, MMIO + 16);
	memcpy(&v, ex.mmio.data, 8);
	assert_int_equal(v, 0xfeedfacecafebeefull);
}

/* CPL 0: OUT exits with port, size, direction and data; IN completes with VMM data. */
static void test_port_io(void **state)
{
	struct fixture *f = *state;
	NEED_KVM(f);
	static const uint8_t code[] = {
	    0xb0, 0x5a,             /* mov al, 0x5a */
	    0x66, 0xba, 0xff, 0x03, /* mov dx, 0x3ff */
	    0xee,                   /* out dx, al */
	    0x66, 0xed,             /* in ax, dx */
	    0x66, 0xba, 0xf4, 0x00, /* mov dx, 0xf4 */
	    0x66, 0xef,             /* out dx, ax */
	    0xf4,                   /* hlt */
	};
	enter_long_mode(f, 0, code, sizeof(code));
	struct vm_exit ex = run(f);
	assert_int_equal(ex.reason, VMEXIT_IO);
	assert_true(ex.io.write);
	assert_int_equal(ex.io.port, 0x3ff);
	assert_int_equal(ex.io.size, 1);
	assert_int_equal(ex.io.count, 1);
	assert_int_equal(ex.io.data[0], 0x5a);

	ex = run(f);
	assert_int_equal(ex.reason, VMEXIT_IO);
	assert_false(ex.io.write);
	assert_int_equal(ex.io.size, 2);
	ex.io.data[0] = 0x34;
	ex.io.data[1] = 0x12;

	ex = run(f);
	assert_int_equal(ex.reason, VMEXIT_IO);
	assert_int_equal(ex.io.port, 0xf4);
	assert_int_equal(ex.io.data[0] | ex.io.data[1] << 8, 0x1234);
}

/* The complete state survives a get/set round trip, and values written are the ones the
 * guest computes with. */
static void test_state_round_trip(void **state)
{
	struct fixture *f = *state;
	NEED_KVM(f);
	static const uint8_t code[] = {
	    0x4c, 0x89, 0xf8,                               /* mov rax, r15 */
	    0x48, 0xa3, 0x00, 0x00, 0x00, 0xd0, 0, 0, 0, 0, /* mov [MMIO], rax */
	    0xeb, 0xfe,
	};
	enter_long_mode(f, 3, code, sizeof(code));
	struct cpu_state *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
	assert_int_equal(kvm_engine.get_state(&f->vm.vcpus[0], a), 0);
	a->gpr[GPR_R15] = 0x0123456789abcdefull;
	assert_int_equal(cpu_state_set_msr(a, MSR_LSTAR, 0xffffffff81000000ull), 0);
	assert_int_equal(kvm_engine.set_state(&f->vm.vcpus[0], a), 0);
	assert_int_equal(kvm_engine.get_state(&f->vm.vcpus[0], b), 0);
	assert_memory_equal(a->gpr, b->gpr, sizeof(a->gpr));
	assert_int_equal(a->rip, b->rip);
	assert_int_equal(a->cr3, b->cr3);
	assert_int_equal(a->efer, b->efer);
	assert_memory_equal(&a->seg[SEG_CS], &b->seg[SEG_CS], sizeof(a->seg[SEG_CS]));
	assert_memory_equal(a->xsave, b->xsave, 512);
	assert_memory_equal(a->lapic, b->lapic, CPU_LAPIC_SIZE);
	uint64_t lstar = 0;
	assert_true(cpu_state_get_msr(b, MSR_LSTAR, &lstar));
	assert_int_equal(lstar, 0xffffffff81000000ull);
	assert_true(b->nmsrs >= 8);

	struct vm_exit ex = run(f);
	assert_int_equal(ex.reason, VMEXIT_MMIO);
	uint64_t v;
	memcpy(&v, ex.mmio.data, 8);
	assert_int_equal(v, 0x0123456789abcdefull);
	free(a);
	free(b);
}

/* Pages the guest writes show up in the dirty bitmap, once. */
static void test_dirty_pages(void **state)
{
	struct fixture *f = *state;
	NEED_KVM(f);
	static const uint8_t code[] = {
	    0x48, 0xc7, 0xc0, 0x00, 0x50, 0x20, 0x00, /* mov rax, 0x205000 */
	    0x48, 0x89, 0x00,                         /* mov [rax], rax */
	    0x48, 0x89, 0x80, 0x00, 0x30, 0x00, 0x00, /* mov [rax+0x3000], rax */
	    0x48, 0xa3, 0x00, 0x00, 0x00, 0xd0, 0,    0, 0, 0, 0xeb, 0xfe,
	};
	enter_long_mode(f, 3, code, sizeof(code));
	size_t words = (f->vm.mem.size / PAGE_SIZE + 63) / 64;
	uint64_t *bits = calloc(words, 8);
	assert_int_equal(kvm_engine.dirty_log(&f->vm, true), 0);
	assert_int_equal(kvm_engine.dirty_pages(&f->vm, bits), 0); /* clear */
	struct vm_exit ex = run(f);
	assert_int_equal(ex.reason, VMEXIT_MMIO);
	assert_int_equal(kvm_engine.dirty_pages(&f->vm, bits), 0);
	uint64_t p1 = 0x205000 / PAGE_SIZE, p2 = 0x208000 / PAGE_SIZE, other = 0x206000 / PAGE_SIZE;
	assert_true(bits[p1 / 64] >> (p1 % 64) & 1);
	assert_true(bits[p2 / 64] >> (p2 % 64) & 1);
	assert_false(bits[other / 64] >> (other % 64) & 1);
	assert_int_equal(kvm_engine.dirty_pages(&f->vm, bits), 0);
	assert_false(bits[p1 / 64] >> (p1 % 64) & 1);
	assert_int_equal(kvm_engine.dirty_log(&f->vm, false), 0);
	free(bits);
}

/* A fault with no usable IDT escalates to a triple fault: a shutdown exit, not a hang. */
static void test_triple_fault(void **state)
{
	struct fixture *f = *state;
	NEED_KVM(f);
	static const uint8_t code[] = {0x0f, 0x0b}; /* ud2 */
	enter_long_mode(f, 0, code, sizeof(code));
	f->st.idt = (struct cpu_dtable){0, 0};
	assert_int_equal(kvm_engine.set_state(&f->vm.vcpus[0], &f->st), 0);
	struct vm_exit ex = run(f);
	assert_int_equal(ex.reason, VMEXIT_SHUTDOWN);
}

static void *kicker(void *arg)
{
	struct vcpu *cpu = arg;
	usleep(50 * 1000);
	kvm_engine.kick(cpu);
	return NULL;
}

/* kick() makes a vCPU spinning in guest code return to the VMM. */
static void test_kick(void **state)
{
	struct fixture *f = *state;
	NEED_KVM(f);
	static const uint8_t code[] = {0xeb, 0xfe}; /* jmp $ at CPL 3 */
	enter_long_mode(f, 3, code, sizeof(code));
	struct vcpu *cpu = &f->vm.vcpus[0];
	cpu->thread = pthread_self();
	atomic_store(&cpu->thread_started, true);
	pthread_t t;
	pthread_create(&t, NULL, kicker, cpu);
	struct vm_exit ex = run(f);
	pthread_join(t, NULL);
	atomic_store(&cpu->thread_started, false);
	assert_int_equal(ex.reason, VMEXIT_KICKED);
}

static void test_interrupt_lines(void **state)
{
	struct fixture *f = *state;
	NEED_KVM(f);
	assert_int_equal(kvm_engine.irq_line(&f->vm, 4, 1), 0);
	assert_int_equal(kvm_engine.irq_line(&f->vm, 4, 0), 0);
	assert_int_equal(kvm_engine.msi(&f->vm, 0xfee00000, 0x30), 0);
}

static void test_engine_select(void **state)
{
	(void)state;
	char err[256];
	assert_null(engine_select(ENGINE_SOFT, err, sizeof(err)));
	assert_non_null(strstr(err, "not built yet"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_cpl3_mmio_write_and_read, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_port_io, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_state_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dirty_pages, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_triple_fault, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kick, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_interrupt_lines, setup, teardown),
	    cmocka_unit_test(test_engine_select),
	};
	return cmocka_run_group_tests_name("kvm_engine", tests, NULL, NULL);
}
