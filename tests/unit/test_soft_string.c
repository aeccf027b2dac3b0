/* The soft engine's string instructions against the host CPU: movs, stos, lods, cmps, scas in
 * every size, plain and repeated, both directions, both address sizes, with overlapping
 * buffers, page crossings and faults in the middle of a repeat; plus what only the soft CPU
 * can show (4 GiB wrap of 32-bit addresses, stopping and resuming a long repeat, speed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "soft_string_native.h"

#define FMASK (FL_ARITH | FL_DF)

/* Pages of the test mapping: data from page 2; page 40 inaccessible, page 41 read-only. */
#define PAGE(n)    SN_PAGE(n)
#define GUARD_PAGE SN_GUARD_PAGE
#define RO_PAGE    SN_RO_PAGE

static int setup(void **state)
{
	if (sn_group_setup(state) < 0)
		return -1;
	sn_protect(RO_PAGE, SN_RO);
	return 0;
}

/* The string opcodes: the byte form; the others add 1 (and 66h or REX.W pick the size). */
enum { OP_MOVS, OP_STOS, OP_LODS, OP_CMPS, OP_SCAS, OP_COUNT };
static const uint8_t opcode_b[OP_COUNT] = {0xa4, 0xaa, 0xac, 0xa6, 0xae};
static const char *const op_name[OP_COUNT] = {"movs", "stos", "lods", "cmps", "scas"};

/* Assembles [67] [66] [F3/F2] [REX.W] op. rep: 0 none, 1 F3, 2 F2. */
static size_t assemble(uint8_t *code, unsigned op, unsigned sz, unsigned rep, bool a32, uint8_t seg)
{
	size_t n = 0;
	if (seg)
		code[n++] = seg;
	if (a32)
		code[n++] = 0x67;
	if (sz == 2)
		code[n++] = 0x66;
	if (rep)
		code[n++] = rep == 1 ? 0xf3 : 0xf2;
	if (sz == 8)
		code[n++] = 0x48;
	code[n++] = (uint8_t)(opcode_b[op] + (sz > 1));
	return n;
}

static struct sn_regs regs_with(uint64_t rsi, uint64_t rdi, uint64_t rcx, uint64_t rax, bool down)
{
	struct sn_regs r;
	memset(&r, 0, sizeof(r));
	for (unsigned i = 0; i < 16; i++)
		r.gpr[i] = sn_rnd();
	r.gpr[GPR_RSP] = PAGE(60);
	r.gpr[GPR_RSI] = rsi;
	r.gpr[GPR_RDI] = rdi;
	r.gpr[GPR_RCX] = rcx;
	r.gpr[GPR_RAX] = rax;
	r.rflags = 0x202 | (sn_rnd() & FL_ARITH) | (down ? FL_DF : 0);
	return r;
}

/* Memory for the scans: words from a two-value alphabet so that equal and unequal elements
 * both occur, with long equal runs (mostly the same word). */
static void fill_scan_memory(unsigned p_same_of_16)
{
	for (unsigned p = 2; p < GUARD_PAGE; p++) {
		uint64_t *w = (uint64_t *)PAGE(p);
		for (unsigned i = 0; i < 512; i++)
			w[i] = (sn_rnd() & 15) < p_same_of_16 ? 0 : 0x0101010101010101ull;
	}
}

/* Like sn_check, but with memory from fill_scan_memory for both runs. */
static bool check_scan(const uint8_t *code, size_t len, const struct sn_regs *in, unsigned p_same,
		       const char *what)
{
	static uint8_t a[SN_DATA_SIZE], b[SN_DATA_SIZE];
	uint64_t seed = sn_rng;
	struct sn_regs n = *in, s = *in;
	fill_scan_memory(p_same);
	sn_run_native(&n, code, len);
	sn_snapshot(a);
	sn_rng = seed;
	fill_scan_memory(p_same);
	sn_run_soft(&s, code, len, NULL);
	sn_snapshot(b);
	return sn_same(&n, &s, FMASK, what) && memcmp(a, b, sizeof(a)) == 0;
}

/* One instruction form from two buffers with room for 5000 qwords either way. */
static void one_form(unsigned op, unsigned sz, unsigned rep, bool a32, bool down, uint64_t cnt)
{
	uint8_t code[8];
	char what[96];
	size_t len = assemble(code, op, sz, rep, a32, 0);
	uint64_t si = PAGE(2) + 40064 + sn_rnd() % 64;
	uint64_t di = si + 40064 + sn_rnd() % 64;
	if (sn_rnd() & 1) {
		uint64_t t = si;
		si = di;
		di = t;
	}
	/* The scans compare with the words of fill_scan_memory; stos stores any pattern. */
	bool scan = op == OP_CMPS || op == OP_SCAS;
	uint64_t acc = !scan ? sn_rnd() : sn_rnd() & 1 ? 0 : 0x0101010101010101ull;
	/* Upper halves that 67h must ignore. */
	uint64_t hi = a32 ? sn_rnd() << 32 : 0;
	struct sn_regs r = regs_with(si | hi, di | hi, cnt | (hi & ~(1ull << 63)), acc, down);
	snprintf(what, sizeof(what), "%s%u rep%u a32=%u df=%u cnt=%llu", op_name[op], sz, rep, a32,
		 down, (unsigned long long)cnt);
	if (scan)
		assert_true(check_scan(code, len, &r, rep == 2 ? 2 : 15, what));
	else
		assert_true(sn_check(code, len, &r, sn_rnd(), FMASK, NULL, what));
}

/* Every instruction, size, prefix, direction and address size over a few counts. */
static void test_all_forms(void **state)
{
	(void)state;
	static const uint64_t counts[] = {0, 1, 7, 300, 5000};
	for (unsigned op = 0; op < OP_COUNT; op++)
		for (unsigned sz = 1; sz <= 8; sz *= 2)
			for (unsigned rep = 0; rep < 3; rep++)
				for (unsigned form = 0; form < 4; form++)
					for (unsigned k = 0; k < (rep ? 5u : 2u); k++)
						one_form(op, sz, rep, form & 1, form & 2,
							 op == OP_LODS && counts[k] > 300
							     ? 300
							     : counts[k]);
}

/* movs where destination and source overlap by every small distance, both directions, all
 * sizes: the hardware's element order decides the result. */
static void test_overlap(void **state)
{
	(void)state;
	char what[96];
	for (unsigned sz = 1; sz <= 8; sz *= 2)
		for (unsigned down = 0; down < 2; down++)
			for (int dist = -20; dist <= 20; dist++) {
				if (abs(dist) > 9 && abs(dist) != 16 && abs(dist) != 17)
					continue;
				uint8_t code[8];
				size_t len = assemble(code, OP_MOVS, sz, 1, false, 0);
				uint64_t cnt = (sn_rnd() % 3000) + 1;
				uint64_t si = PAGE(10) + (sn_rnd() & 0xfff);
				if (down)
					si += cnt * sz; /* keep the range inside the data pages */
				uint64_t di = si + (uint64_t)(int64_t)dist;
				struct sn_regs r = regs_with(si, di, cnt, 0, down);
				snprintf(what, sizeof(what),
					 "overlap movs%u df=%u dist=%d cnt=%llu", sz, down, dist,
					 (unsigned long long)cnt);
				assert_true(sn_check(code, len, &r, sn_rnd(), FMASK, NULL, what));
			}
}

/* One repeat that runs into the inaccessible or the read-only page. which: 0 the destination
 * runs into the inaccessible page, 1 the source does, 2 the destination runs into the
 * read-only page, 3 the destination starts on it. mis: misaligned elements. Returns whether
 * the native run faulted. */
static bool one_fault(unsigned op, unsigned sz, bool down, unsigned which, bool mis)
{
	unsigned bad = which <= 1 ? GUARD_PAGE : RO_PAGE;
	uint64_t edge = down ? PAGE(bad + 1) : PAGE(bad);
	uint64_t off = 0x1800 + (mis ? 3 : 0);
	uint64_t near = which == 3 ? PAGE(RO_PAGE) + 0x100 : down ? edge + off : edge - off;
	uint64_t far = PAGE(20) + (mis ? 5 : 0);
	uint64_t si = which == 1 ? near : far, di = which == 1 ? far : near;
	if (op == OP_LODS)
		si = near; /* the one operand goes where the fault is */
	else if (op == OP_STOS || op == OP_SCAS)
		di = near;
	uint8_t code[8];
	char what[96];
	size_t len = assemble(code, op, sz, 1, false, 0);
	struct sn_regs r = regs_with(si, di, 0x2000, 0, down);
	snprintf(what, sizeof(what), "fault %s%u df=%u which=%u mis=%u", op_name[op], sz, down,
		 which, mis);
	if (op != OP_CMPS && op != OP_SCAS) {
		assert_true(sn_check(code, len, &r, sn_rnd(), FMASK, NULL, what));
		return sn_last.sig != 0;
	}
	/* The scans: all memory zero and RAX zero, so repe runs into the page. */
	static uint8_t a[SN_DATA_SIZE], b[SN_DATA_SIZE];
	struct sn_regs n = r, s = r;
	for (unsigned p = 2; p < SN_PAGES; p++)
		if (sn_prot[p] == SN_RW)
			memset((void *)PAGE(p), 0, 0x1000);
	sn_run_native(&n, code, len);
	sn_snapshot(a);
	sn_run_soft(&s, code, len, NULL);
	sn_snapshot(b);
	assert_true(sn_same(&n, &s, FMASK, what));
	assert_memory_equal(a, b, sizeof(a));
	return n.sig != 0;
}

/* Repeats that fault part-way, from either side, aligned or not: the fault, its address,
 * the registers at it (the elements before the faulting page done, RCX counting the rest) and
 * the memory. */
static void test_faults_midway(void **state)
{
	(void)state;
	unsigned faults = 0;
	for (unsigned op = 0; op < OP_COUNT; op++)
		for (unsigned sz = 1; sz <= 8; sz *= 2)
			for (unsigned down = 0; down < 2; down++)
				for (unsigned which = 0; which < 4; which++)
					for (unsigned mis = 0; mis < 2; mis++)
						faults += one_fault(op, sz, down, which, mis);
	assert_true(faults >= 200); /* the cases did reach the pages */
}

/* GS as the source segment: the host's GS base is set for the test (glibc does not use it). */
static uint64_t gs_base;

static void prep_gs(struct soft_cpu *c)
{
	c->seg[SEG_GS].base = gs_base;
}

static void test_segment_override(void **state)
{
	(void)state;
	gs_base = PAGE(12) + 0x123;
	if (syscall(SYS_arch_prctl, 0x1001 /* ARCH_SET_GS */, gs_base) != 0)
		skip();
	char what[96];
	for (unsigned op = 0; op < OP_COUNT; op++)
		for (unsigned a32 = 0; a32 < 2; a32++) {
			uint8_t code[8];
			size_t len = assemble(code, op, 4, op == OP_LODS ? 0 : 1, a32, 0x65);
			uint64_t hi = a32 ? 0xabcd00000000ull : 0;
			struct sn_regs r = regs_with(0x2000 | hi, PAGE(30) | hi, 300, 0, false);
			snprintf(what, sizeof(what), "gs %s a32=%u", op_name[op], a32);
			assert_true(sn_check(code, len, &r, sn_rnd(), FMASK, prep_gs, what));
		}
	syscall(SYS_arch_prctl, 0x1001, 0);

	/* FS on the soft CPU only (the host's FS is glibc's): fs lodsd reads FS.base + RSI. */
	static const uint8_t fs_lods[] = {0x64, 0xad};
	struct sn_regs r = regs_with(0x40, 0, 0, 0, false);
	*(uint32_t *)(PAGE(14) + 0x40) = 0xdeadbeef;
	struct soft_mem_ops ops = {.page_ptr = sn_page_ptr};
	struct soft_cpu *c = soft_cpu_create(&ops, true);
	memcpy((void *)SN_CODE, fs_lods, sizeof(fs_lods));
	memcpy((void *)(SN_CODE + sizeof(fs_lods)), "\x0f\x05", 2);
	memcpy(c->gpr, r.gpr, sizeof(c->gpr));
	c->seg[SEG_FS].base = PAGE(14);
	c->rip = SN_CODE;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(c->gpr[GPR_RAX], 0xdeadbeef);
	assert_int_equal(c->gpr[GPR_RSI], 0x44);
	soft_cpu_destroy(c);
}

/* 32-bit addresses wrap at 4 GiB. Guest pages 0xfffff000 and 0 are backed by two buffers. */
static uint8_t wrap_hi[4096] __attribute__((aligned(4096)));
static uint8_t wrap_lo[4096] __attribute__((aligned(4096)));

static void *wrap_page_ptr(void *opaque, uint64_t gpa, enum mem_access acc, bool *writable)
{
	if (gpa == 0xfffff000ull) {
		*writable = true;
		return wrap_hi;
	}
	if (gpa == 0) {
		*writable = true;
		return wrap_lo;
	}
	return sn_page_ptr(opaque, gpa, acc, writable);
}

static struct soft_cpu *wrap_cpu(const uint8_t *code, size_t len)
{
	memcpy((void *)SN_CODE, code, len);
	memcpy((void *)(SN_CODE + len), "\x0f\x05", 2);
	struct soft_mem_ops ops = {.page_ptr = wrap_page_ptr};
	struct soft_cpu *c = soft_cpu_create(&ops, true);
	assert_non_null(c);
	c->rip = SN_CODE;
	return c;
}

static void test_wrap_32bit(void **state)
{
	(void)state;
	for (unsigned i = 0; i < 4096; i++) {
		wrap_hi[i] = (uint8_t)i;
		wrap_lo[i] = (uint8_t)(0x80 + i);
	}
	/* Up: 67 rep movsb from ESI = 0xfffffff0 across 4 GiB, 32 bytes. */
	static const uint8_t up[] = {0x67, 0xf3, 0xa4};
	struct soft_cpu *c = wrap_cpu(up, sizeof(up));
	c->gpr[GPR_RSI] = 0x5500000000000000ull | 0xfffffff0u;
	c->gpr[GPR_RDI] = PAGE(3);
	c->gpr[GPR_RCX] = 32;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_memory_equal((void *)PAGE(3), wrap_hi + 0xff0, 16);
	assert_memory_equal((void *)(PAGE(3) + 16), wrap_lo, 16);
	assert_int_equal(c->gpr[GPR_RSI], 0x10);
	assert_int_equal(c->gpr[GPR_RDI], PAGE(3) + 32);
	assert_int_equal(c->gpr[GPR_RCX], 0);
	soft_cpu_destroy(c);

	/* Down: std; 67 rep stosd to EDI = 8, 6 dwords: 8, 4, 0, then 0xfffffffc.. */
	static const uint8_t down[] = {0xfd, 0x67, 0xf3, 0xab};
	c = wrap_cpu(down, sizeof(down));
	c->gpr[GPR_RDI] = 8;
	c->gpr[GPR_RCX] = 6;
	c->gpr[GPR_RAX] = 0x11223344;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(*(uint32_t *)(wrap_lo + 8), 0x11223344);
	assert_int_equal(*(uint32_t *)(wrap_lo + 0), 0x11223344);
	assert_int_equal(*(uint32_t *)(wrap_hi + 0xffc), 0x11223344);
	assert_int_equal(*(uint32_t *)(wrap_hi + 0xff4), 0x11223344);
	assert_int_equal(*(uint32_t *)(wrap_hi + 0xff0), 0xf3f2f1f0);
	assert_int_equal(c->gpr[GPR_RDI], 0xfffffff0u);
	soft_cpu_destroy(c);
}

/* A stop request during a long rep movs: the instruction stops between chunks with RIP on
 * it and the registers counting what is left; running again finishes it, with the same
 * result as one uninterrupted run. */
static struct soft_cpu *stop_cpu;
static uint64_t stop_at_page;

static void *stopping_page_ptr(void *opaque, uint64_t gpa, enum mem_access acc, bool *writable)
{
	if (gpa == stop_at_page && stop_cpu)
		stop_cpu->exit_request = 1;
	return sn_page_ptr(opaque, gpa, acc, writable);
}

static void test_interrupt_and_resume(void **state)
{
	(void)state;
	static const uint8_t code[] = {0xf3, 0xa4}; /* rep movsb */
	static uint8_t expect[SN_DATA_SIZE], got[SN_DATA_SIZE];
	const uint64_t n = 0x11000;
	struct sn_regs r = regs_with(PAGE(2), PAGE(21), n, 0, false);
	sn_fill(7);
	struct sn_regs ref = r;
	sn_run_soft(&ref, code, sizeof(code), NULL);
	sn_snapshot(expect);

	sn_fill(7);
	memcpy((void *)SN_CODE, code, sizeof(code));
	memcpy((void *)(SN_CODE + sizeof(code)), "\x0f\x05", 2);
	struct soft_mem_ops ops = {.page_ptr = stopping_page_ptr};
	struct soft_cpu *c = soft_cpu_create(&ops, true);
	memcpy(c->gpr, r.gpr, sizeof(c->gpr));
	c->rflags = r.rflags;
	c->rip = SN_CODE;
	stop_cpu = c;
	stop_at_page = PAGE(2) + 0x4000; /* the source's fifth page */
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_STOP);
	stop_cpu = NULL;
	assert_int_equal(c->rip, SN_CODE);
	uint64_t left = c->gpr[GPR_RCX];
	assert_true(left > 0 && left < n);
	assert_int_equal(c->gpr[GPR_RSI], PAGE(2) + (n - left));
	assert_int_equal(c->icount, 0);
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(c->icount, 2); /* and the syscall */
	sn_snapshot(got);
	assert_memory_equal(expect, got, sizeof(got));
	assert_memory_equal(c->gpr, ref.gpr, sizeof(ref.gpr));
	soft_cpu_destroy(c);
}

/* Source and destination 4 MiB apart share soft-TLB slots: the repeat must still run a page
 * at a time, not fall back to one element at a time. Guest pages from 4 MiB above the test
 * mapping alias it. */
static void *alias_page_ptr(void *opaque, uint64_t gpa, enum mem_access acc, bool *writable)
{
	if (gpa >= SN_BASE + 0x400000 && gpa < SN_BASE + 0x400000 + SN_SIZE)
		gpa -= 0x400000;
	return sn_page_ptr(opaque, gpa, acc, writable);
}

static void test_tlb_slot_collision(void **state)
{
	(void)state;
	static const uint8_t code[] = {0xf3, 0x48, 0xa5}; /* rep movsq */
	memcpy((void *)SN_CODE, code, sizeof(code));
	memcpy((void *)(SN_CODE + sizeof(code)), "\x0f\x05", 2);
	struct soft_mem_ops ops = {.page_ptr = alias_page_ptr};
	struct soft_cpu *c = soft_cpu_create(&ops, true);
	c->gpr[GPR_RSI] = PAGE(2);
	c->gpr[GPR_RDI] = PAGE(2) + 0x400000;
	c->gpr[GPR_RCX] = 0x10000 / 8;
	c->rip = SN_CODE;
	uint64_t misses = soft_stats.tlb_misses;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_true(soft_stats.tlb_misses - misses < 64);
	assert_int_equal(c->gpr[GPR_RCX], 0);
	soft_cpu_destroy(c);
}

/* rep movsb/stosb over a big buffer should run at memory speed. Printed, not asserted: the
 * sanitizer build is much slower. */
static void test_speed(void **state)
{
	(void)state;
	static const uint8_t code[] = {0xf3, 0xa4, 0x48, 0x89, 0xd6, 0x48, 0x89, 0xdf,
				       0x4c, 0x89, 0xc1, 0x49, 0xff, 0xc9, 0x75, 0xf0};
	/* L: rep movsb; mov rsi, rdx; mov rdi, rbx; mov rcx, r8; dec r9; jnz L */
	struct sn_regs r = regs_with(PAGE(2), PAGE(20), 0x10000, 0, false);
	r.gpr[GPR_RDX] = PAGE(2);
	r.gpr[GPR_RBX] = PAGE(20);
	r.gpr[GPR_R8] = 0x10000;
	r.gpr[GPR_R9] = 2000;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	sn_run_soft(&r, code, sizeof(code), NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
	assert_int_equal(r.sig, 0);
	printf("rep movsb: %.0f MB/s\n", 2000.0 * 0x10000 / s / 1e6);
}

int main(void)
{
	sn_rng = 0x9e3779b97f4a7c15ull;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_all_forms),          cmocka_unit_test(test_overlap),
	    cmocka_unit_test(test_faults_midway),      cmocka_unit_test(test_segment_override),
	    cmocka_unit_test(test_wrap_32bit),         cmocka_unit_test(test_interrupt_and_resume),
	    cmocka_unit_test(test_tlb_slot_collision), cmocka_unit_test(test_speed),
	};
	return cmocka_run_group_tests_name("soft_string", tests, setup, sn_group_teardown);
}
