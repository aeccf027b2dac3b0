/* The soft engine's core: run loop, blocks and their invalidation, lazy flags, faults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <cmocka.h>

#include "engine/soft/soft.h"

#define BASE 0x10000000ull
#define SIZE 0x10000ull /* code at BASE, data from BASE + 0x8000 */
#define DATA (BASE + 0x8000)

static uint8_t *mem;

/* Identity guest-physical memory over one mapping; the page at BASE + 0x7000 is read-only. */
static void *page_ptr(void *opaque, uint64_t gpa, enum mem_access acc, bool *writable)
{
	(void)opaque;
	(void)acc;
	if (gpa < BASE || gpa >= BASE + SIZE)
		return NULL;
	*writable = (gpa & ~0xfffull) != BASE + 0x7000;
	return (void *)gpa;
}

static struct soft_cpu *new_cpu(const uint8_t *code, size_t len)
{
	memset(mem, 0, SIZE);
	memcpy(mem, code, len);
	struct soft_mem_ops ops = {.page_ptr = page_ptr};
	struct soft_cpu *c = soft_cpu_create(&ops, true);
	assert_non_null(c);
	c->rip = BASE;
	c->gpr[GPR_RSP] = BASE + SIZE;
	return c;
}

static int setup(void **state)
{
	(void)state;
	mem = mmap((void *)BASE, SIZE, PROT_READ | PROT_WRITE | PROT_EXEC,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	return mem == (void *)BASE ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	munmap(mem, SIZE);
	return 0;
}

/* mov rcx, n; L: dec rcx; jnz L; syscall */
static const uint8_t loop_code[] = {0x48, 0xb9, 0,    0,    0,    0,    0,    0,   0,
				    0,    0x48, 0xff, 0xc9, 0x75, 0xfb, 0x0f, 0x05};

static void test_loop_and_syscall_exit(void **state)
{
	(void)state;
	uint8_t code[sizeof(loop_code)];
	memcpy(code, loop_code, sizeof(code));
	uint64_t n = 1000;
	memcpy(code + 2, &n, 8);
	struct soft_cpu *c = new_cpu(code, sizeof(code));
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(c->rip, BASE + sizeof(code));
	assert_int_equal(c->gpr[GPR_RCX], 0);
	assert_int_equal(c->icount, 1 + 2 * n + 1);
	assert_true(soft_flags(c) & FL_ZF);
	soft_cpu_destroy(c);
}

static void test_budget_single_steps(void **state)
{
	(void)state;
	uint8_t code[sizeof(loop_code)];
	memcpy(code, loop_code, sizeof(code));
	uint64_t n = 3;
	memcpy(code + 2, &n, 8);
	struct soft_cpu *c = new_cpu(code, sizeof(code));
	c->insn_budget = 1;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_STOP);
	assert_int_equal(c->rip, BASE + 10);
	assert_int_equal(c->gpr[GPR_RCX], 3);
	c->insn_budget = 2;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_STOP);
	assert_int_equal(c->rip, BASE + 10); /* dec, jnz taken */
	assert_int_equal(c->gpr[GPR_RCX], 2);
	assert_int_equal(c->icount, 3);
	soft_cpu_destroy(c);
}

/* A store into code that was already decoded is seen by the next execution. */
static void test_self_modifying_code(void **state)
{
	(void)state;
	static const uint8_t code[] = {
	    0xb8, 0x01, 0x00, 0x00, 0x00,             /* mov eax, 1   (patched to mov eax, 2) */
	    0x0f, 0x05,                               /* syscall */
	    0xc6, 0x05, 0xf3, 0xff, 0xff, 0xff, 0x02, /* mov byte [rip - 13], 2: the imm above */
	    0xeb, 0xf0,                               /* jmp to the mov */
	};
	struct soft_cpu *c = new_cpu(code, sizeof(code));
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(c->gpr[GPR_RAX], 1);
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(c->gpr[GPR_RAX], 2);
	assert_true(soft_stats.block_invalidations > 0);
	soft_cpu_destroy(c);
}

/* Faults stop at the faulting instruction with the architectural details. */
static void test_faults(void **state)
{
	(void)state;
	static const uint8_t code[] = {
	    0x48, 0xc7, 0xc0, 0x00, 0x70, 0x00, 0x10, /* mov rax, BASE + 0x7000 (read-only) */
	    0x48, 0x8b, 0x18,                         /* mov rbx, [rax]: fine */
	    0x48, 0x89, 0x18,                         /* mov [rax], rbx: #PF, write */
	};
	struct soft_cpu *c = new_cpu(code, sizeof(code));
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_EXCEPTION);
	assert_int_equal(c->exc_vector, EXC_PF);
	assert_int_equal(c->exc_addr, BASE + 0x7000);
	assert_int_equal(c->exc_error, 0x7); /* present, write, user */
	assert_int_equal(c->rip, BASE + 10);
	assert_int_equal(c->icount, 2);
	soft_cpu_destroy(c);

	static const uint8_t ud[] = {0x0f, 0xff}; /* ud0 without operands: not an instruction */
	c = new_cpu(ud, sizeof(ud));
	c->gpr[GPR_RAX] = 0;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_EXCEPTION);
	assert_int_equal(c->exc_vector, EXC_UD);
	assert_int_equal(c->rip, BASE);
	soft_cpu_destroy(c);

	static const uint8_t wild[] = {0xff, 0xe0}; /* jmp rax, rax = 0: fetch fault */
	c = new_cpu(wild, sizeof(wild));
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_EXCEPTION);
	assert_int_equal(c->exc_vector, EXC_PF);
	assert_int_equal(c->exc_error & 0x10, 0x10);
	assert_int_equal(c->rip, 0);
	soft_cpu_destroy(c);
}

/* Lazy flags agree with the CPU for a few operations (the differential harness does this
 * exhaustively; this is the quick check). */
static void test_lazy_flags(void **state)
{
	(void)state;
	static const uint64_t vals[] = {0,
					1,
					0x7f,
					0x80,
					0xff,
					0x7fff,
					0x8000,
					0xffffffff,
					0x80000000,
					0x7fffffffffffffffull,
					0x8000000000000000ull,
					~0ull,
					0x123456789abcdefull};
	struct soft_cpu *c = new_cpu(loop_code, sizeof(loop_code));
	for (size_t i = 0; i < sizeof(vals) / 8; i++)
		for (size_t j = 0; j < sizeof(vals) / 8; j++) {
			uint64_t a = vals[i], b = vals[j], host_flags;
			__asm__ volatile("mov %1, %%rax; add %2, %%rax; pushfq; pop %0"
					 : "=r"(host_flags)
					 : "r"(a), "r"(b)
					 : "rax", "cc");
			lf_set(c, LF_ADD, 8, a + b, a, b);
			assert_int_equal(soft_flags(c) & FL_ARITH, host_flags & FL_ARITH);
			__asm__ volatile("mov %1, %%rax; sub %2, %%rax; pushfq; pop %0"
					 : "=r"(host_flags)
					 : "r"(a), "r"(b)
					 : "rax", "cc");
			lf_set(c, LF_SUB, 8, a - b, a, b);
			for (unsigned cc = 0; cc < 16; cc++) {
				lf_set(c, LF_SUB, 8, a - b, a, b);
				bool fast = soft_cond(c, cc);
				c->lf.op = LF_NONE;
				c->rflags = host_flags;
				assert_int_equal(fast, soft_cond(c, cc));
			}
			__asm__ volatile("mov %1, %%eax; sub %2, %%al; pushfq; pop %0"
					 : "=r"(host_flags)
					 : "r"((uint32_t)a), "q"((uint8_t)b)
					 : "rax", "cc");
			lf_set(c, LF_SUB, 1, (a - b) & 0xff, a & 0xff, b & 0xff);
			assert_int_equal(soft_flags(c) & FL_ARITH, host_flags & FL_ARITH);
		}
	soft_cpu_destroy(c);
}

/* Rotates keep SF/ZF/AF/PF from the operation before them, even several rotates later, and
 * set CF/OF themselves: the lazy rotate state against the host's flags. */
static void test_rotate_chains(void **state)
{
	(void)state;
	static const uint8_t code[] = {
	    0x48, 0x29, 0xd8,       /* sub rax, rbx */
	    0xc1, 0xc9, 0x03,       /* ror ecx, 3 */
	    0x48, 0xc1, 0xc2, 0x05, /* rol rdx, 5 */
	    0xd0, 0xce,             /* ror dh, 1 */
	    0x9c,                   /* pushfq */
	    0x41, 0x58,             /* pop r8 */
	    0x0f, 0x05,             /* syscall */
	};
	static const uint64_t vals[] = {0,
					1,
					0x80,
					0x7fffffff,
					0x80000000,
					0xffffffffffffffffull,
					0x123456789abcdef0ull,
					0x8000000000000000ull};
	for (size_t i = 0; i < sizeof(vals) / 8; i++)
		for (size_t j = 0; j < sizeof(vals) / 8; j++) {
			uint64_t a = vals[i], b = vals[j], cx = vals[j] ^ 0x5a5a, dx = vals[i] + 7;
			uint64_t ha = a, hc = cx, hd = dx, hf;
			__asm__ volatile("sub %4, %0\n\tror $3, %k1\n\trol $5, %2\n\t"
					 "ror $1, %h2\n\tpushfq\n\tpop %3"
					 : "+a"(ha), "+c"(hc), "+d"(hd), "=r"(hf)
					 : "r"(b)
					 : "cc");
			struct soft_cpu *c = new_cpu(code, sizeof(code));
			c->gpr[GPR_RAX] = a;
			c->gpr[GPR_RBX] = b;
			c->gpr[GPR_RCX] = cx;
			c->gpr[GPR_RDX] = dx;
			assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
			assert_int_equal(c->gpr[GPR_RCX], hc);
			assert_int_equal(c->gpr[GPR_RDX], hd);
			assert_int_equal(c->gpr[GPR_R8] & FL_ARITH, hf & FL_ARITH);
			soft_cpu_destroy(c);
		}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_loop_and_syscall_exit),
	    cmocka_unit_test(test_budget_single_steps),
	    cmocka_unit_test(test_self_modifying_code),
	    cmocka_unit_test(test_faults),
	    cmocka_unit_test(test_lazy_flags),
	    cmocka_unit_test(test_rotate_chains),
	};
	return cmocka_run_group_tests_name("soft_core", tests, setup, teardown);
}
