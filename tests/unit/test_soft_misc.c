/* The soft engine's miscellaneous instructions: cpuid against the model, rdtsc/rdtscp (offset,
 * TSC_AUX, CR4.TSD), the hints and fences against the host (they change nothing, even on an
 * unmapped address), clflush faults, and the unadvertised instructions that must stay #UD.
 * xlat and the CET NOPs belong to the integer group (exec_alu.c) but are checked here too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "soft_string_native.h"

#define FMASK      (FL_ARITH | FL_DF)
#define PAGE(n)    SN_PAGE(n)
#define GUARD_PAGE SN_GUARD_PAGE

/* A soft CPU that runs code (followed by syscall) from regs. */
static struct soft_cpu *soft_with(const uint8_t *code, size_t len, const struct sn_regs *r)
{
	memcpy((void *)SN_CODE, code, len);
	memcpy((void *)(SN_CODE + len), "\x0f\x05", 2);
	struct soft_mem_ops ops = {.page_ptr = sn_page_ptr};
	struct soft_cpu *c = soft_cpu_create(&ops, true);
	assert_non_null(c);
	memcpy(c->gpr, r->gpr, sizeof(c->gpr));
	c->rip = SN_CODE;
	return c;
}

static void test_cpuid(void **state)
{
	(void)state;
	static const uint32_t leaves[] = {0,           1,           2,           4,
					  7,           0xd,         0x20,        0x80000000u,
					  0x80000001u, 0x80000002u, 0x80000004u, 0x80000008u};
	static const uint8_t code[] = {0x0f, 0xa2};
	for (unsigned i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++)
		for (uint32_t sub = 0; sub < 3; sub++) {
			struct sn_regs r = sn_random_regs();
			r.gpr[GPR_RAX] = (sn_rnd() << 32) | leaves[i];
			r.gpr[GPR_RCX] = (sn_rnd() << 32) | sub;
			struct soft_cpu *c = soft_with(code, sizeof(code), &r);
			uint32_t want[4];
			soft_cpuid(c, leaves[i], sub, want);
			assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
			assert_int_equal(c->gpr[GPR_RAX], want[0]);
			assert_int_equal(c->gpr[GPR_RBX], want[1]);
			assert_int_equal(c->gpr[GPR_RCX], want[2]);
			assert_int_equal(c->gpr[GPR_RDX], want[3]);
			assert_int_equal(c->gpr[GPR_RSI], r.gpr[GPR_RSI]);
			soft_cpu_destroy(c);
		}
}

static void test_rdtsc(void **state)
{
	(void)state;
	static const uint8_t rdtsc[] = {0x0f, 0x31}, rdtscp[] = {0x0f, 0x01, 0xf9};
	for (unsigned p = 0; p < 2; p++) {
		struct sn_regs r = sn_random_regs();
		struct soft_cpu *c =
		    p ? soft_with(rdtscp, sizeof(rdtscp), &r) : soft_with(rdtsc, sizeof(rdtsc), &r);
		c->tsc_offset = 1ull << 50;
		c->tsc_aux = 0xabcdef0123ull;
		uint64_t before = soft_host_ns() + c->tsc_offset;
		assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
		uint64_t after = soft_host_ns() + c->tsc_offset;
		uint64_t t = c->gpr[GPR_RDX] << 32 | c->gpr[GPR_RAX];
		assert_true(c->gpr[GPR_RAX] <= 0xffffffffu && c->gpr[GPR_RDX] <= 0xffffffffu);
		assert_true(t >= before && t <= after);
		assert_int_equal(c->gpr[GPR_RCX], p ? 0xcdef0123u : r.gpr[GPR_RCX]);
		soft_cpu_destroy(c);

		/* CR4.TSD at CPL 3: #GP on the instruction. */
		c = p ? soft_with(rdtscp, sizeof(rdtscp), &r) : soft_with(rdtsc, sizeof(rdtsc), &r);
		c->cr4 |= 1u << 2;
		assert_int_equal(soft_cpu_run(c), SOFT_EXIT_EXCEPTION);
		assert_int_equal(c->exc_vector, EXC_GP);
		assert_int_equal(c->rip, SN_CODE);
		assert_int_equal(c->gpr[GPR_RAX], r.gpr[GPR_RAX]);
		soft_cpu_destroy(c);
	}
}

/* Hints, fences and NOP-space instructions change nothing, even pointed at an unmapped page;
 * clflush of an unmapped line faults. All against the host. */
static void test_hints_and_fences(void **state)
{
	(void)state;
	static const struct {
		uint8_t code[6];
		size_t len;
		const char *what;
	} forms[] = {
	    {{0xf3, 0x90}, 2, "pause"},
	    {{0x0f, 0xae, 0xe8}, 3, "lfence"},
	    {{0x0f, 0xae, 0xf0}, 3, "mfence"},
	    {{0x0f, 0xae, 0xf8}, 3, "sfence"},
	    {{0x0f, 0x18, 0x00}, 3, "prefetchnta [rax]"},
	    {{0x0f, 0x18, 0x08}, 3, "prefetcht0 [rax]"},
	    {{0x0f, 0x18, 0x10}, 3, "prefetcht1 [rax]"},
	    {{0x0f, 0x18, 0x18}, 3, "prefetcht2 [rax]"},
	    {{0x0f, 0x0d, 0x08}, 3, "prefetchw [rax]"},
	    {{0x0f, 0x0d, 0x00}, 3, "prefetch [rax]"},
	    {{0x0f, 0x18, 0x20}, 3, "hint nop 0f 18 /4"},
	    {{0x0f, 0x1f, 0x00}, 3, "nop [rax]"},
	    {{0x0f, 0x1f, 0x44, 0x00, 0x00}, 5, "nop [rax + rax]"},
	    {{0xf3, 0x0f, 0x1e, 0xfa}, 4, "endbr64"},
	    {{0xf3, 0x0f, 0x1e, 0xfb}, 4, "endbr32"},
	    {{0xf3, 0x48, 0x0f, 0x1e, 0xc8}, 5, "rdsspq rax"},
	    {{0x0f, 0xae, 0x38}, 3, "clflush [rax]"},
	    {{0x66, 0x0f, 0xae, 0x38}, 4, "clflushopt [rax]"},
	};
	for (unsigned f = 0; f < sizeof(forms) / sizeof(forms[0]); f++)
		for (unsigned bad = 0; bad < 2; bad++) {
			struct sn_regs r = sn_random_regs();
			r.gpr[GPR_RAX] = bad ? PAGE(GUARD_PAGE) + 0x80 : PAGE(5) + 0x40;
			assert_true(sn_check(forms[f].code, forms[f].len, &r, sn_rnd(), FMASK, NULL,
					     forms[f].what));
			bool flush = forms[f].len >= 3 && forms[f].code[forms[f].len - 2] == 0xae &&
				     forms[f].code[forms[f].len - 1] == 0x38;
			assert_int_equal(sn_last.sig != 0, bad && flush);
		}
}

/* xlat: AL = [RBX + AL], with 67h (EBX + AL) and a GS override. */
static uint64_t gs_base;

static void prep_gs(struct soft_cpu *c)
{
	c->seg[SEG_GS].base = gs_base;
}

static void test_xlat(void **state)
{
	(void)state;
	gs_base = PAGE(12);
	bool have_gs = syscall(SYS_arch_prctl, 0x1001 /* ARCH_SET_GS */, gs_base) == 0;
	static const struct {
		uint8_t code[3];
		size_t len;
		bool gs;
	} forms[] = {
	    {{0xd7}, 1, false},      {{0x48, 0xd7}, 2, false},      {{0x67, 0xd7}, 2, false},
	    {{0x65, 0xd7}, 2, true}, {{0x65, 0x67, 0xd7}, 3, true},
	};
	for (unsigned f = 0; f < sizeof(forms) / sizeof(forms[0]); f++)
		for (unsigned i = 0; i < 20; i++) {
			if (forms[f].gs && !have_gs)
				continue;
			struct sn_regs r = sn_random_regs();
			r.gpr[GPR_RBX] = (forms[f].gs ? 0x1000 : PAGE(6)) + (sn_rnd() & 0xfff);
			if (forms[f].len >= 2 && forms[f].code[forms[f].len - 2] == 0x67)
				r.gpr[GPR_RBX] |= sn_rnd() << 32;
			assert_true(sn_check(forms[f].code, forms[f].len, &r, sn_rnd(), FMASK,
					     forms[f].gs ? prep_gs : NULL, "xlat"));
		}
	if (have_gs)
		syscall(SYS_arch_prctl, 0x1001, 0);
}

/* rdpmc (no counters), and instructions of extensions the model does not advertise. */
static void test_ud_and_gp(void **state)
{
	(void)state;
	static const struct {
		uint8_t code[5];
		size_t len;
		int vector;
	} forms[] = {
	    {{0x0f, 0x33}, 2, EXC_GP},             /* rdpmc */
	    {{0x0f, 0xc7, 0xf0}, 3, EXC_UD},       /* rdrand eax */
	    {{0x0f, 0xc7, 0xf8}, 3, EXC_UD},       /* rdseed eax */
	    {{0xf3, 0x0f, 0xc7, 0xf8}, 4, EXC_UD}, /* rdpid rax */
	    {{0x0f, 0x01, 0xd0}, 3, EXC_UD},       /* xgetbv */
	};
	for (unsigned f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
		struct sn_regs r = sn_random_regs();
		struct soft_cpu *c = soft_with(forms[f].code, forms[f].len, &r);
		assert_int_equal(soft_cpu_run(c), SOFT_EXIT_EXCEPTION);
		assert_int_equal(c->exc_vector, forms[f].vector);
		assert_int_equal(c->rip, SN_CODE);
		soft_cpu_destroy(c);
	}
}

int main(void)
{
	sn_rng = 0x5851f42d4c957f2dull;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cpuid),
	    cmocka_unit_test(test_rdtsc),
	    cmocka_unit_test(test_hints_and_fences),
	    cmocka_unit_test(test_xlat),
	    cmocka_unit_test(test_ud_and_gp),
	};
	return cmocka_run_group_tests_name("soft_misc", tests, sn_group_setup, sn_group_teardown);
}
