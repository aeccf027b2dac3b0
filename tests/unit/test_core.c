/* The VM's building blocks: guest memory range checks, bus decoding, state records, parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine/cpu_state.h"
#include "util/parse.h"
#include "vm/bus.h"
#include "vm/mem.h"
#include "vm/state.h"

static void test_mem_layout_and_bounds(void **state)
{
	(void)state;
	struct guest_mem m;
	char err[128];
	assert_int_equal(gmem_init(&m, 64 << 20, err, sizeof(err)), 0);
	assert_int_equal(m.nregions, 1);
	assert_int_equal(gmem_low_end(&m), 64 << 20);
	assert_non_null(gmem_ptr(&m, 0, 64 << 20));
	assert_non_null(gmem_ptr(&m, (64 << 20) - 1, 1));
	assert_null(gmem_ptr(&m, (64 << 20) - 1, 2));
	assert_null(gmem_ptr(&m, 64 << 20, 0 + 1));
	assert_null(gmem_ptr(&m, UINT64_MAX, 2));
	assert_null(gmem_ptr(&m, 1, UINT64_MAX));
	assert_null(gmem_ptr(&m, UINT64_MAX - 10, 20));
	uint32_t v = 0xdeadbeef, r = 0;
	assert_int_equal(gmem_write(&m, 0x1000, &v, 4), 0);
	assert_int_equal(gmem_read(&m, 0x1000, &r, 4), 0);
	assert_int_equal(r, v);
	assert_int_equal(gmem_write(&m, (64 << 20) - 2, &v, 4), -1);
	gmem_destroy(&m);
}

static void test_mem_above_hole(void **state)
{
	(void)state;
	struct guest_mem m;
	char err[128];
	/* 4 GiB of RAM: 3 GiB below the hole, 1 GiB from 4 GiB (MAP_NORESERVE: nothing touched). */
	assert_int_equal(gmem_init(&m, 4ull << 30, err, sizeof(err)), 0);
	assert_int_equal(m.nregions, 2);
	assert_int_equal(gmem_low_end(&m), MEM_HOLE_START);
	assert_null(gmem_ptr(&m, MEM_HOLE_START, 1));
	assert_null(gmem_ptr(&m, MEM_HOLE_START - 4, 8)); /* straddles the hole */
	uint8_t *a = gmem_ptr(&m, MEM_4G, 1), *b = gmem_ptr(&m, MEM_HOLE_START - 1, 1);
	assert_ptr_equal(a, b + 1); /* one memfd, contiguous host mapping */
	assert_non_null(gmem_ptr(&m, MEM_4G + (1ull << 30) - 1, 1));
	assert_null(gmem_ptr(&m, MEM_4G + (1ull << 30), 1));
	gmem_destroy(&m);
}

static void test_mem_bad_sizes(void **state)
{
	(void)state;
	struct guest_mem m;
	char err[128];
	assert_int_equal(gmem_init(&m, 4096, err, sizeof(err)), -1);
	assert_int_equal(gmem_init(&m, (2 << 20) + 1, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "multiple of 4 KiB"));
}

struct hits {
	uint64_t off;
	unsigned size, count;
	bool write;
};

static void handler(void *opaque, uint64_t off, uint8_t *data, unsigned size, bool write)
{
	struct hits *h = opaque;
	h->off = off;
	h->size = size;
	h->write = write;
	h->count++;
	if (!write)
		memset(data, 0xab, size);
}

static void test_bus(void **state)
{
	(void)state;
	struct bus b;
	struct hits h1 = {0}, h2 = {0};
	uint8_t d[4] = {0};
	bus_init(&b, "pio");
	assert_int_equal(bus_register(&b, 0x3f8, 8, handler, &h1, "uart"), 0);
	assert_int_equal(bus_register(&b, 0x60, 1, handler, &h2, "kbd"), 0);
	assert_int_equal(bus_register(&b, 0x3f0, 9, handler, &h2, "overlap-low"), -1);
	assert_int_equal(bus_register(&b, 0x3ff, 1, handler, &h2, "overlap-high"), -1);
	assert_int_equal(bus_register(&b, 0x3f9, 2, handler, &h2, "inside"), -1);
	assert_int_equal(bus_register(&b, 0x3f0, 0x100, handler, &h2, "around"), -1);
	assert_int_equal(bus_register(&b, UINT64_MAX, 2, handler, &h2, "wraps"), -1);
	assert_int_equal(bus_register(&b, 0x10, 0, handler, &h2, "empty"), -1);
	assert_int_equal(bus_register(&b, 0x400, 4, handler, &h2, "adjacent"), 0);

	assert_int_equal(bus_access(&b, 0x3fd, d, 1, false), 0);
	assert_int_equal(h1.off, 5);
	assert_int_equal(d[0], 0xab);
	assert_int_equal(bus_access(&b, 0x3fe, d, 2, true), 0); /* last two bytes */
	assert_true(h1.write);
	assert_int_equal(bus_access(&b, 0x3ff, d, 2, true), -1); /* runs past the range */
	assert_int_equal(bus_access(&b, 0x3f7, d, 1, true), -1);
	assert_int_equal(bus_access(&b, 0x61, d, 1, true), -1);
	assert_int_equal(bus_access(&b, 0x60, d, 1, true), 0);
	assert_int_equal(bus_access(&b, 0x403, d, 1, false), 0);
	assert_int_equal(bus_access(&b, 0x404, d, 1, false), -1);
	assert_int_equal(h1.count, 2);
	assert_int_equal(h2.count, 2);
	assert_non_null(bus_find(&b, 0x3f8));
	assert_null(bus_find(&b, 0));
	bus_destroy(&b);
}

static void test_state_records(void **state)
{
	(void)state;
	struct state_writer w;
	sw_init(&w);
	sw_begin(&w, "uart", 2);
	sw_u8(&w, 0x12);
	sw_u16(&w, 0x3456);
	sw_u32(&w, 0x789abcde);
	sw_u64(&w, 0x0102030405060708ull);
	assert_false(w.err);
	assert_int_equal(w.len, 8 + 4 + 1 + 2 + 4 + 8);

	struct state_reader r;
	sr_init(&r, w.buf, w.len);
	assert_int_equal(sr_begin(&r, "uart", 2), 2);
	assert_int_equal(sr_u8(&r), 0x12);
	assert_int_equal(sr_u16(&r), 0x3456);
	assert_int_equal(sr_u32(&r), 0x789abcde);
	assert_int_equal(sr_u64(&r), 0x0102030405060708ull);
	assert_false(r.err);
	assert_int_equal(sr_u8(&r), 0); /* past the end: zero and a sticky error */
	assert_true(r.err);

	sr_init(&r, w.buf, w.len);
	assert_int_equal(sr_begin(&r, "uart", 1), 0); /* newer than this reader knows */
	assert_true(r.err);
	sr_init(&r, w.buf, w.len);
	assert_int_equal(sr_begin(&r, "rtc", 9), 0); /* someone else's record */
	sr_init(&r, w.buf, 5);
	assert_int_equal(sr_begin(&r, "uart", 2), 0); /* truncated */
	sw_free(&w);
}

static void test_parse(void **state)
{
	(void)state;
	uint64_t v;
	assert_int_equal(parse_size("256M", 'M', &v), 0);
	assert_int_equal(v, 256ull << 20);
	assert_int_equal(parse_size("2G", 'M', &v), 0);
	assert_int_equal(v, 2ull << 30);
	assert_int_equal(parse_size("512", 'M', &v), 0);
	assert_int_equal(v, 512ull << 20);
	assert_int_equal(parse_size("64MiB", 'M', &v), 0);
	assert_int_equal(parse_size("1k", 'M', &v), 0);
	assert_int_equal(v, 1024);
	assert_int_equal(parse_size("abc", 'M', &v), -1);
	assert_int_equal(parse_size("", 'M', &v), -1);
	assert_int_equal(parse_size("-1", 'M', &v), -1);
	assert_int_equal(parse_size("12X", 'M', &v), -1);
	assert_int_equal(parse_size("12Mx", 'M', &v), -1);
	assert_int_equal(parse_size("99999999999999999999", 'M', &v), -1);
	assert_int_equal(parse_size("99999999999T", 'M', &v), -1);
	assert_int_equal(parse_uint("4", &v), 0);
	assert_int_equal(v, 4);
	assert_int_equal(parse_uint("4x", &v), -1);
	assert_int_equal(parse_uint("", &v), -1);
}

static void test_cpu_state_reset_and_msrs(void **state)
{
	(void)state;
	static struct cpu_state st;
	cpu_state_reset(&st, true);
	assert_int_equal(st.rip, 0xfff0);
	assert_int_equal(st.seg[SEG_CS].base, 0xffff0000);
	assert_int_equal(st.seg[SEG_CS].selector, 0xf000);
	assert_true(st.apic_base & APIC_BASE_BSP);
	assert_int_equal(st.mp_state, MP_RUNNABLE);
	cpu_state_reset(&st, false);
	assert_false(st.apic_base & APIC_BASE_BSP);
	assert_int_equal(st.mp_state, MP_WAIT_FOR_SIPI);
	uint64_t v;
	assert_false(cpu_state_get_msr(&st, MSR_LSTAR, &v));
	assert_int_equal(cpu_state_set_msr(&st, MSR_LSTAR, 5), 0);
	assert_int_equal(cpu_state_set_msr(&st, MSR_LSTAR, 6), 0);
	assert_int_equal(st.nmsrs, 1);
	assert_true(cpu_state_get_msr(&st, MSR_LSTAR, &v));
	assert_int_equal(v, 6);
	for (uint32_t i = 1; i < CPU_STATE_MAX_MSRS; i++)
		assert_int_equal(cpu_state_set_msr(&st, 0x1000 + i, i), 0);
	assert_int_equal(cpu_state_set_msr(&st, 0x2000, 1), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mem_layout_and_bounds),
	    cmocka_unit_test(test_mem_above_hole),
	    cmocka_unit_test(test_mem_bad_sizes),
	    cmocka_unit_test(test_bus),
	    cmocka_unit_test(test_state_records),
	    cmocka_unit_test(test_parse),
	    cmocka_unit_test(test_cpu_state_reset_and_msrs),
	};
	return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
