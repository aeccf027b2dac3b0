/* The 8259A pair and the 8254 PIT as pure models, driven the way Linux 6.1 drives them: ports
 * written and read byte by byte, interrupt lines pulsed, time passed in as now_ns. PIT edge
 * times are checked against the OUT pin around each edge as well as against the tick formula. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dev/i8254.h"
#include "dev/i8259.h"
#include "vm/state.h"

/* ---- 8259A ---------------------------------------------------------------------------------- */

static void pic_out(struct i8259 *p, uint16_t port, uint8_t v)
{
	i8259_write(p, port, v);
}

/* Linux's init_8259A: mask all, ICW1 edge/cascade/ICW4, vector bases, cascade on IR2, ICW4. */
static void linux_init(struct i8259 *p, uint8_t base, bool aeoi)
{
	pic_out(p, 0x21, 0xff);
	pic_out(p, 0xa1, 0xff);
	pic_out(p, 0x20, 0x11);
	pic_out(p, 0x21, base);
	pic_out(p, 0x21, 0x04);
	pic_out(p, 0x21, aeoi ? 0x03 : 0x01);
	pic_out(p, 0xa0, 0x11);
	pic_out(p, 0xa1, (uint8_t)(base + 8));
	pic_out(p, 0xa1, 0x02);
	pic_out(p, 0xa1, 0x01);
	pic_out(p, 0x21, 0xfb); /* everything masked but the cascade */
	pic_out(p, 0xa1, 0xff);
}

static void pulse(struct i8259 *p, unsigned irq)
{
	i8259_set_irq(p, irq, 1);
	i8259_set_irq(p, irq, 0);
}

static uint8_t read_isr(struct i8259 *p, uint16_t cmd)
{
	pic_out(p, cmd, 0x0b);
	uint8_t v = i8259_read(p, cmd);
	pic_out(p, cmd, 0x0a);
	return v;
}

static uint8_t read_irr(struct i8259 *p, uint16_t cmd)
{
	pic_out(p, cmd, 0x0a);
	return i8259_read(p, cmd);
}

static void unmask(struct i8259 *p, unsigned irq)
{
	uint16_t port = irq < 8 ? 0x21 : 0xa1;
	pic_out(p, port, (uint8_t)(i8259_read(p, port) & ~(1u << (irq & 7))));
}

static void test_pic_linux_init_and_delivery(void **state)
{
	(void)state;
	struct i8259 *p = i8259_create();
	assert_non_null(p);
	/* Linux's probe: write 0xff to the mask, read it back. */
	pic_out(p, 0x21, 0xff);
	assert_int_equal(i8259_read(p, 0x21), 0xff);
	linux_init(p, 0x30, false);
	assert_int_equal(i8259_read(p, 0x21), 0xfb);
	assert_int_equal(i8259_read(p, 0xa1), 0xff);
	assert_false(i8259_intr(p));

	/* IRQ 0 on the master. */
	unmask(p, 0);
	pulse(p, 0);
	assert_true(i8259_intr(p));
	assert_int_equal(read_irr(p, 0x20), 0x01);
	assert_int_equal(i8259_intack(p), 0x30);
	assert_false(i8259_intr(p));
	assert_int_equal(read_isr(p, 0x20), 0x01);
	assert_int_equal(read_irr(p, 0x20), 0x00);
	pic_out(p, 0x20, 0x60); /* specific EOI, IR0 */
	assert_int_equal(read_isr(p, 0x20), 0x00);

	/* IRQ 8 and 12 through the slave, acknowledged and EOIed as Linux does. */
	unmask(p, 8);
	unmask(p, 12);
	pulse(p, 8);
	assert_true(i8259_intr(p));
	assert_int_equal(read_irr(p, 0x20), 0x04); /* the slave's INTR on IR2 */
	assert_int_equal(i8259_intack(p), 0x38);
	assert_false(i8259_intr(p));
	assert_int_equal(read_isr(p, 0x20), 0x04);
	assert_int_equal(read_isr(p, 0xa0), 0x01);
	pic_out(p, 0xa0, 0x60);
	pic_out(p, 0x20, 0x62);
	assert_int_equal(read_isr(p, 0x20), 0);
	assert_int_equal(read_isr(p, 0xa0), 0);

	pulse(p, 12);
	assert_true(i8259_intr(p));
	assert_int_equal(i8259_intack(p), 0x3c);
	assert_int_equal(read_isr(p, 0xa0), 0x10);
	pic_out(p, 0xa0, 0x20); /* non-specific EOI */
	pic_out(p, 0x20, 0x20);
	assert_int_equal(read_isr(p, 0xa0), 0);
	assert_int_equal(read_isr(p, 0x20), 0);
	assert_false(i8259_intr(p));

	/* Vectors at 0x20 too. */
	linux_init(p, 0x20, false);
	unmask(p, 1);
	pulse(p, 1);
	assert_int_equal(i8259_intack(p), 0x21);
	i8259_destroy(p);
}

static void test_pic_priority(void **state)
{
	(void)state;
	struct i8259 *p = i8259_create();
	linux_init(p, 0x30, false);
	pic_out(p, 0x21, 0x00);
	pic_out(p, 0xa1, 0x00);
	pulse(p, 3);
	pulse(p, 9);
	pulse(p, 1);
	/* IR1 first, then the slave on IR2, then IR3. */
	assert_int_equal(i8259_intack(p), 0x31);
	/* Fully nested: nothing lower interrupts IR1's handler. */
	assert_false(i8259_intr(p));
	pic_out(p, 0x20, 0x20);
	assert_int_equal(i8259_intack(p), 0x39);
	assert_false(i8259_intr(p));
	/* A higher request preempts what is in service. */
	pulse(p, 0);
	assert_true(i8259_intr(p));
	assert_int_equal(i8259_intack(p), 0x30);
	assert_int_equal(read_isr(p, 0x20), 0x05);
	/* Non-specific EOI ends the highest in service: IR0, then IR2. */
	pic_out(p, 0x20, 0x20);
	assert_int_equal(read_isr(p, 0x20), 0x04);
	assert_false(i8259_intr(p));
	pic_out(p, 0xa0, 0x20);
	pic_out(p, 0x20, 0x20);
	assert_int_equal(read_isr(p, 0x20), 0x00);
	assert_int_equal(i8259_intack(p), 0x33);
	/* A specific EOI for a level not in service changes nothing else. */
	pic_out(p, 0x20, 0x65);
	assert_int_equal(read_isr(p, 0x20), 0x08);
	pic_out(p, 0x20, 0x63);
	assert_int_equal(read_isr(p, 0x20), 0x00);
	i8259_destroy(p);
}

static void test_pic_rotation(void **state)
{
	(void)state;
	struct i8259 *p = i8259_create();
	linux_init(p, 0x30, false);
	pic_out(p, 0x21, 0x00);
	/* Set priority: IR3 lowest, so IR4 ranks highest and outranks IR0. */
	pic_out(p, 0x20, 0xc3);
	pulse(p, 0);
	pulse(p, 4);
	assert_int_equal(i8259_intack(p), 0x34);
	/* Rotate on non-specific EOI: IR4 becomes lowest, IR5 highest; IR0 next. */
	pic_out(p, 0x20, 0xa0);
	pulse(p, 4);
	assert_int_equal(i8259_intack(p), 0x30);
	pic_out(p, 0x20, 0xe0); /* rotate on specific EOI of IR0: IR1 highest */
	assert_int_equal(read_isr(p, 0x20), 0x00);
	pulse(p, 0);
	assert_int_equal(i8259_intack(p), 0x34); /* IR4 still outranks IR0 */
	pic_out(p, 0x20, 0x20);
	assert_int_equal(i8259_intack(p), 0x30);
	pic_out(p, 0x20, 0x20);
	/* Rotate in auto-EOI mode: each acknowledged level becomes the lowest. */
	linux_init(p, 0x30, true);
	pic_out(p, 0x21, 0x00);
	pic_out(p, 0x20, 0x80);
	pulse(p, 1);
	pulse(p, 6);
	assert_int_equal(i8259_intack(p), 0x31);
	pulse(p, 1);
	assert_int_equal(i8259_intack(p), 0x36); /* IR1 is now lowest */
	assert_int_equal(i8259_intack(p), 0x31);
	assert_int_equal(read_isr(p, 0x20), 0x00);
	i8259_destroy(p);
}

static void test_pic_auto_eoi(void **state)
{
	(void)state;
	struct i8259 *p = i8259_create();
	linux_init(p, 0x30, true);
	pic_out(p, 0x21, 0x00);
	pic_out(p, 0xa1, 0x00);
	pulse(p, 5);
	assert_int_equal(i8259_intack(p), 0x35);
	assert_int_equal(read_isr(p, 0x20), 0x00);
	/* With nothing in service the same line can come again at once. */
	pulse(p, 5);
	assert_true(i8259_intr(p));
	assert_int_equal(i8259_intack(p), 0x35);
	/* The slave's ICW4 without AEOI: the master's IR2 auto-EOIs, the slave holds IR0. */
	pulse(p, 8);
	assert_int_equal(i8259_intack(p), 0x38);
	assert_int_equal(read_isr(p, 0x20), 0x00);
	assert_int_equal(read_isr(p, 0xa0), 0x01);
	pic_out(p, 0xa0, 0x20);
	/* Both in auto-EOI: two slave requests pending together both arrive with no EOI. */
	pic_out(p, 0xa0, 0x11);
	pic_out(p, 0xa1, 0x38);
	pic_out(p, 0xa1, 0x02);
	pic_out(p, 0xa1, 0x03);
	pulse(p, 12);
	pulse(p, 9);
	assert_int_equal(i8259_intack(p), 0x39);
	assert_true(i8259_intr(p));
	assert_int_equal(i8259_intack(p), 0x3c);
	assert_false(i8259_intr(p));
	i8259_destroy(p);
}

static void test_pic_masking(void **state)
{
	(void)state;
	struct i8259 *p = i8259_create();
	/* Reset state: nothing delivered before the guest programs the chips. */
	pulse(p, 0);
	assert_false(i8259_intr(p));
	linux_init(p, 0x30, false);
	pulse(p, 6);
	assert_false(i8259_intr(p));
	assert_int_equal(read_irr(p, 0x20), 0x40); /* requested, but masked */
	unmask(p, 6);
	assert_true(i8259_intr(p));
	pic_out(p, 0x21, 0xff);
	assert_false(i8259_intr(p));
	pic_out(p, 0x21, 0xfb);
	/* The slave's line reaches the CPU only while the master's IR2 is unmasked too. */
	unmask(p, 14);
	pulse(p, 14);
	assert_true(i8259_intr(p));
	pic_out(p, 0x21, 0xff);
	assert_false(i8259_intr(p));
	assert_int_equal(read_irr(p, 0x20) & 0x04, 0x04);
	pic_out(p, 0x21, 0x00);
	assert_int_equal(i8259_intack(p), 0x3e); /* IR2 outranks IR6 */
	pic_out(p, 0xa0, 0x20);
	pic_out(p, 0x20, 0x20);
	assert_int_equal(i8259_intack(p), 0x36);
	/* A slave masked again after the request: its INTR drops, the master's IR2 with it. */
	pulse(p, 15);
	pic_out(p, 0xa1, 0xff);
	assert_int_equal(read_irr(p, 0x20) & 0x04, 0x00);
	i8259_destroy(p);
}

static void test_pic_edge_level(void **state)
{
	(void)state;
	struct i8259 *p = i8259_create();
	linux_init(p, 0x30, false);
	pic_out(p, 0x21, 0x00);
	pic_out(p, 0xa1, 0x00);
	/* ELCR: IRQ 0, 1, 2, 8 and 13 cannot be level-triggered. */
	i8259_write(p, 0x4d0, 0xff);
	i8259_write(p, 0x4d1, 0xff);
	assert_int_equal(i8259_read(p, 0x4d0), 0xf8);
	assert_int_equal(i8259_read(p, 0x4d1), 0xde);
	i8259_write(p, 0x4d0, 0x00);
	i8259_write(p, 0x4d1, 0x04); /* IRQ 10 level */
	assert_int_equal(i8259_read(p, 0x4d1), 0x04);

	/* Level: the request follows the line; still high after EOI means another interrupt. */
	i8259_set_irq(p, 10, 1);
	assert_int_equal(i8259_intack(p), 0x3a);
	assert_int_equal(read_irr(p, 0xa0), 0x04); /* not consumed by the acknowledge */
	pic_out(p, 0xa0, 0x20);
	pic_out(p, 0x20, 0x20);
	assert_true(i8259_intr(p));
	assert_int_equal(i8259_intack(p), 0x3a);
	pic_out(p, 0xa0, 0x20);
	pic_out(p, 0x20, 0x20);
	i8259_set_irq(p, 10, 0);
	assert_false(i8259_intr(p));
	assert_int_equal(read_irr(p, 0xa0), 0x00);
	/* A level request that drops before the acknowledge is gone: spurious IR7. */
	i8259_set_irq(p, 10, 1);
	assert_true(i8259_intr(p));
	i8259_set_irq(p, 10, 0);
	assert_false(i8259_intr(p));
	assert_int_equal(i8259_intack(p), 0x37);

	/* Edge: one interrupt per rising edge, latched after the line drops. */
	i8259_set_irq(p, 4, 1);
	assert_int_equal(i8259_intack(p), 0x34);
	pic_out(p, 0x20, 0x20);
	assert_false(i8259_intr(p)); /* still high, but no new edge */
	i8259_set_irq(p, 4, 1);
	assert_false(i8259_intr(p));
	pulse(p, 4); /* the line was already high: only the drop counts */
	assert_false(i8259_intr(p));
	i8259_set_irq(p, 4, 1);
	assert_true(i8259_intr(p));
	assert_int_equal(i8259_intack(p), 0x34);
	pic_out(p, 0x20, 0x20);

	/* Switching a high line to level mode makes it a request; ICW1 drops edge requests. */
	i8259_set_irq(p, 11, 1);
	i8259_write(p, 0x4d1, 0x0c);
	assert_int_equal(read_irr(p, 0xa0), 0x08);
	pulse(p, 5);
	pic_out(p, 0x20, 0x11);
	assert_int_equal(read_irr(p, 0x20) & 0x20, 0x00);
	i8259_destroy(p);
}

static void test_pic_spurious(void **state)
{
	(void)state;
	struct i8259 *p = i8259_create();
	linux_init(p, 0x30, false);
	pic_out(p, 0x21, 0x00);
	/* Nothing pending: the master's IR7 vector, and nothing goes in service. */
	assert_int_equal(i8259_intack(p), 0x37);
	assert_int_equal(read_isr(p, 0x20), 0x00);
	/* A request masked between INTR and the acknowledge. */
	pulse(p, 3);
	assert_true(i8259_intr(p));
	pic_out(p, 0x21, 0x08);
	assert_int_equal(i8259_intack(p), 0x37);
	assert_int_equal(read_isr(p, 0x20), 0x00);
	/* A real IR7 does go in service (how Linux tells the two apart). */
	pulse(p, 7);
	assert_int_equal(i8259_intack(p), 0x37);
	assert_int_equal(read_isr(p, 0x20), 0x80);
	i8259_destroy(p);
}

static void test_pic_poll_and_reads(void **state)
{
	(void)state;
	struct i8259 *p = i8259_create();
	linux_init(p, 0x30, false);
	pic_out(p, 0x21, 0x00);
	pic_out(p, 0xa1, 0x00);
	/* Poll with nothing pending reads 0. */
	pic_out(p, 0x20, 0x0c);
	assert_int_equal(i8259_read(p, 0x20), 0x00);
	pulse(p, 5);
	pulse(p, 6);
	pic_out(p, 0x20, 0x0c);
	assert_int_equal(i8259_read(p, 0x21), 0x85); /* either port: the poll acknowledges */
	assert_int_equal(read_isr(p, 0x20), 0x20);
	assert_int_equal(i8259_read(p, 0x21), 0x00); /* IMR again */
	pic_out(p, 0x20, 0x20);
	/* The slave polled on its own. */
	pulse(p, 11);
	pic_out(p, 0xa0, 0x0c);
	assert_int_equal(i8259_read(p, 0xa0), 0x83);
	assert_int_equal(read_isr(p, 0xa0), 0x08);
	pic_out(p, 0xa0, 0x20);
	/* OCW3 read select persists: ISR until IRR is selected again. */
	pic_out(p, 0x20, 0x0b);
	assert_int_equal(i8259_read(p, 0x20), 0x00);
	assert_int_equal(i8259_read(p, 0x20), 0x00);
	pic_out(p, 0x20, 0x08); /* OCW3 with RR clear: no change of select */
	assert_int_equal(i8259_read(p, 0x20), 0x00);
	pic_out(p, 0x20, 0x0a);
	assert_int_equal(i8259_read(p, 0x20), 0x40);

	/* Special mask mode: IR6 in service, masked, lets the lower IR7 through. */
	assert_int_equal(i8259_intack(p), 0x36);
	pulse(p, 7);
	assert_false(i8259_intr(p));
	pic_out(p, 0x21, 0x40);
	assert_false(i8259_intr(p));
	pic_out(p, 0x20, 0x68); /* set special mask */
	assert_true(i8259_intr(p));
	assert_int_equal(i8259_intack(p), 0x37);
	pic_out(p, 0x20, 0x67);
	pic_out(p, 0x20, 0x48); /* reset special mask */
	pic_out(p, 0x21, 0x00);
	pulse(p, 7);
	assert_false(i8259_intr(p)); /* IR6 is in service again blocks IR7 */
	pic_out(p, 0x20, 0x66);
	assert_true(i8259_intr(p));

	/* Ports that are not the PIC's. */
	assert_int_equal(i8259_read(p, 0x22), 0xff);
	assert_int_equal(i8259_read(p, 0x4d2), 0xff);
	i8259_write(p, 0x22, 0x00);
	i8259_write(p, 0xa2, 0x11);
	assert_int_equal(i8259_read(p, 0x21), 0x00);
	/* Lines that do not exist, and the cascade input, are ignored. */
	i8259_set_irq(p, 16, 1);
	i8259_set_irq(p, 0xffffffffu, 1);
	i8259_set_irq(p, 2, 1);
	assert_int_equal(i8259_intack(p), 0x37);
	pic_out(p, 0x20, 0x20);
	assert_false(i8259_intr(p));
	i8259_destroy(p);
}

static void test_pic_sfnm_and_single(void **state)
{
	(void)state;
	struct i8259 *p = i8259_create();
	linux_init(p, 0x30, false);
	pic_out(p, 0x21, 0x00);
	pic_out(p, 0xa1, 0x00);
	pulse(p, 12);
	assert_int_equal(i8259_intack(p), 0x3c);
	pulse(p, 9); /* higher on the slave, but the master's IR2 is in service */
	assert_false(i8259_intr(p));
	/* Special fully nested master: the slave's higher request passes the cascade. */
	pic_out(p, 0x20, 0x11);
	pic_out(p, 0x21, 0x30);
	pic_out(p, 0x21, 0x04);
	pic_out(p, 0x21, 0x11);
	pic_out(p, 0x21, 0x00);
	pulse(p, 12);
	assert_int_equal(i8259_intack(p), 0x39);
	pulse(p, 8);
	assert_true(i8259_intr(p));
	assert_int_equal(i8259_intack(p), 0x38);
	pulse(p, 3); /* but lower master levels still wait */
	assert_false(i8259_intr(p));

	/* Single mode, no ICW4: ICW2 ends the sequence; IR2 gets the master's own vector. */
	pic_out(p, 0xa0, 0x20); /* the slave's IR0, IR1, IR4 all end */
	pic_out(p, 0xa0, 0x20);
	pic_out(p, 0xa0, 0x20);
	assert_int_equal(read_isr(p, 0xa0), 0x00);
	pulse(p, 12);
	pic_out(p, 0x20, 0x12);
	pic_out(p, 0x21, 0x48);
	pic_out(p, 0x21, 0x00); /* OCW1, not an ICW */
	assert_int_equal(i8259_read(p, 0x21), 0x00);
	assert_true(i8259_intr(p)); /* the slave still asks on IR2 */
	assert_int_equal(i8259_intack(p), 0x4a);
	i8259_destroy(p);
}

static void save_pic(const struct i8259 *p, struct state_writer *w)
{
	sw_init(w);
	i8259_save(p, w);
	assert_false(w->err);
}

static int load_pic(struct i8259 *p, const uint8_t *buf, size_t len)
{
	struct state_reader r;
	sr_init(&r, buf, len);
	return i8259_load(p, &r);
}

/* The record with one byte replaced must be refused and leave the state as it was. */
static void pic_refuses(struct i8259 *p, const struct state_writer *good, size_t at, uint8_t v)
{
	uint8_t *bad = malloc(good->len);
	struct state_writer before, after;
	memcpy(bad, good->buf, good->len);
	bad[at] = v;
	save_pic(p, &before);
	assert_int_equal(load_pic(p, bad, good->len), -1);
	save_pic(p, &after);
	assert_int_equal(before.len, after.len);
	assert_memory_equal(before.buf, after.buf, before.len);
	sw_free(&before);
	sw_free(&after);
	free(bad);
}

static void test_pic_save_load(void **state)
{
	(void)state;
	struct i8259 *p = i8259_create(), *q = i8259_create();
	linux_init(p, 0x30, false);
	pic_out(p, 0x21, 0x00);
	pic_out(p, 0xa1, 0x00);
	i8259_write(p, 0x4d1, 0x04);
	i8259_set_irq(p, 10, 1);
	pulse(p, 3);
	pulse(p, 1);
	assert_int_equal(i8259_intack(p), 0x31);
	pic_out(p, 0x20, 0xc5); /* rotation state */
	pic_out(p, 0xa0, 0x0b); /* ISR selected on the slave */
	pic_out(p, 0x20, 0x11); /* master mid-initialization, waiting for ICW2 */
	pic_out(p, 0x21, 0x30);
	struct state_writer w, w2;
	save_pic(p, &w);
	assert_int_equal(load_pic(q, w.buf, w.len), 0);
	save_pic(q, &w2);
	assert_int_equal(w.len, w2.len);
	assert_memory_equal(w.buf, w2.buf, w.len);
	sw_free(&w2);
	/* Both carry on the same way. */
	for (int k = 0; k < 2; k++) {
		struct i8259 *x = k ? q : p;
		pic_out(x, 0x21, 0x04);
		pic_out(x, 0x21, 0x01);
		pic_out(x, 0x21, 0x00);
		assert_int_equal(i8259_read(x, 0xa0), 0x00);
		assert_int_equal(i8259_intack(x), 0x3a);
		assert_int_equal(i8259_read(x, 0xa0), 0x04);
		assert_int_equal(i8259_read(x, 0x4d1), 0x04);
	}

	/* Truncated, wrong tag, future version. */
	for (size_t len = 0; len < w.len; len++)
		assert_int_equal(load_pic(q, w.buf, len), -1);
	pic_refuses(q, &w, 0, 'x');
	pic_refuses(q, &w, 8, 2);
	/* Master at 12, slave at 24: irr isr imr pins elcr icw1 icw2 icw3 icw4 init prio flags. */
	pic_refuses(q, &w, 12 + 4, 0x01);  /* ELCR bit of IRQ 0 */
	pic_refuses(q, &w, 24 + 4, 0x24);  /* ELCR bit of IRQ 13 */
	pic_refuses(q, &w, 24 + 6, 0x39);  /* vector base with low bits */
	pic_refuses(q, &w, 12 + 8, 0x21);  /* unknown ICW4 bit */
	pic_refuses(q, &w, 12 + 9, 1);     /* no such init step */
	pic_refuses(q, &w, 12 + 10, 8);    /* priority level */
	pic_refuses(q, &w, 12 + 11, 0x10); /* unknown flag */
	pic_refuses(q, &w, 24 + 3, 0x00);  /* level IRQ 10 requested with its line low */
	pic_refuses(q, &w, 12 + 3, 0x04);  /* a level on the cascade input */
	pic_refuses(q, &w, 12 + 0, 0x00);  /* master's IR2 disagreeing with the slave */
	pic_refuses(q, &w, 12 + 5, 0x13);  /* ICW1 with IC4 and SNGL, init waiting for ICW3 */
	sw_free(&w);
	i8259_destroy(p);
	i8259_destroy(q);
}

/* ---- 8254 ----------------------------------------------------------------------------------- */

#define T0 1000000000ull /* an arbitrary start time */

/* The first ns at which `ticks` PIT clocks have passed since t0. */
static uint64_t tick_ns(uint64_t t0, uint64_t ticks)
{
	return t0 + (uint64_t)(((unsigned __int128)ticks * 1000000000u + I8254_HZ - 1) / I8254_HZ);
}

static void pit_count(struct i8254 *t, unsigned ch, uint16_t count, uint64_t now)
{
	i8254_write(t, ch, (uint8_t)count, now);
	i8254_write(t, ch, (uint8_t)(count >> 8), now);
}

static uint16_t pit_read16(struct i8254 *t, unsigned ch, uint64_t now)
{
	uint16_t lo = i8254_read(t, ch, now);
	return (uint16_t)(lo | i8254_read(t, ch, now) << 8);
}

/* OUT0 rises exactly at `edge`: low just before it, high at it. */
static void rises_at(const struct i8254 *t, uint64_t edge)
{
	assert_false(i8254_out(t, 0, edge - 1));
	assert_true(i8254_out(t, 0, edge));
}

static void test_pit_mode0_one_shot(void **state)
{
	(void)state;
	struct i8254 *t = i8254_create();
	assert_non_null(t);
	i8254_reset(t, T0);
	assert_int_equal(i8254_next_irq0(t, T0), UINT64_MAX); /* nothing loaded */
	i8254_write(t, 3, 0x30, T0);                          /* ch 0, LSB then MSB, mode 0 */
	assert_false(i8254_out(t, 0, T0));
	i8254_write(t, 0, 0xe8, T0); /* 1000 */
	assert_int_equal(i8254_next_irq0(t, T0), UINT64_MAX);
	i8254_write(t, 0, 0x03, T0);
	uint64_t edge = tick_ns(T0, 1000);
	assert_int_equal(i8254_next_irq0(t, T0), edge);
	assert_int_equal(i8254_next_irq0(t, edge - 1), edge);
	rises_at(t, edge);
	assert_int_equal(i8254_next_irq0(t, edge), UINT64_MAX);
	assert_true(i8254_out(t, 0, edge + 1000000000ull));
	/* The count keeps going down after terminal count, wrapping. */
	assert_int_equal(pit_read16(t, 0, tick_ns(T0, 400)), 600);
	assert_int_equal(pit_read16(t, 0, tick_ns(T0, 1010)), 0xfff6);
	/* A new count restarts the one-shot, OUT low again. */
	uint64_t t1 = edge + 5000;
	pit_count(t, 0, 2, t1);
	assert_false(i8254_out(t, 0, t1));
	assert_int_equal(i8254_next_irq0(t, t1), tick_ns(t1, 2));
	/* The first byte of a new count stops counting. */
	uint64_t t2 = t1 + 100000;
	i8254_write(t, 0, 0x10, t2);
	assert_false(i8254_out(t, 0, t2 + 10000000));
	assert_int_equal(i8254_next_irq0(t, t2), UINT64_MAX);
	i8254_write(t, 0, 0x00, t2 + 500);
	assert_int_equal(i8254_next_irq0(t, t2 + 500), tick_ns(t2 + 500, 16));
	/* Count 0 is 65536. */
	pit_count(t, 0, 0, T0);
	assert_int_equal(i8254_next_irq0(t, T0), tick_ns(T0, 65536));
	i8254_destroy(t);
}

static void test_pit_mode2_periodic(void **state)
{
	(void)state;
	struct i8254 *t = i8254_create();
	i8254_reset(t, 0);
	i8254_write(t, 3, 0x34, T0); /* ch 0, LSB then MSB, mode 2: Linux's periodic tick */
	assert_true(i8254_out(t, 0, T0));
	const uint16_t n = 11932; /* 100 Hz */
	pit_count(t, 0, n, T0);
	uint64_t now = T0;
	for (uint64_t k = 1; k <= 200; k++) {
		uint64_t edge = tick_ns(T0, k * n);
		assert_int_equal(i8254_next_irq0(t, now), edge);
		rises_at(t, edge);
		/* OUT is low for exactly one tick before the edge. */
		assert_true(i8254_out(t, 0, tick_ns(T0, k * n - 1) - 1));
		assert_false(i8254_out(t, 0, tick_ns(T0, k * n - 1)));
		now = edge;
	}
	/* A glue that is late skips to the next edge still to come. */
	assert_int_equal(i8254_next_irq0(t, tick_ns(T0, 500 * (uint64_t)n + 7)),
			 tick_ns(T0, 501 * (uint64_t)n));
	/* The count reads down from n to 1 within each period. */
	assert_int_equal(pit_read16(t, 0, tick_ns(T0, 3 * (uint64_t)n)), n);
	assert_int_equal(pit_read16(t, 0, tick_ns(T0, 3 * (uint64_t)n + 100)), n - 100);
	assert_int_equal(pit_read16(t, 0, tick_ns(T0, 4 * (uint64_t)n - 1)), 1);
	/* A new count takes over when the current period ends. */
	uint64_t tw = tick_ns(T0, 10 * (uint64_t)n + 50);
	pit_count(t, 0, 1000, tw);
	assert_int_equal(i8254_next_irq0(t, tw), tick_ns(T0, 11 * (uint64_t)n));
	assert_int_equal(i8254_next_irq0(t, tick_ns(T0, 11 * (uint64_t)n)),
			 tick_ns(T0, 11 * (uint64_t)n + 1000));
	assert_int_equal(pit_read16(t, 0, tick_ns(T0, 11 * (uint64_t)n + 10)), 990);
	i8254_destroy(t);
}

static void test_pit_mode3_square_wave(void **state)
{
	(void)state;
	struct i8254 *t = i8254_create();
	i8254_reset(t, 0);
	i8254_write(t, 3, 0x36, T0); /* mode 3 */
	pit_count(t, 0, 100, T0);
	uint64_t now = T0;
	for (uint64_t k = 1; k <= 50; k++) {
		uint64_t edge = tick_ns(T0, k * 100);
		assert_int_equal(i8254_next_irq0(t, now), edge);
		rises_at(t, edge);
		/* High for the first half, low for the second. */
		assert_true(i8254_out(t, 0, tick_ns(T0, k * 100 + 49)));
		assert_false(i8254_out(t, 0, tick_ns(T0, k * 100 + 50)));
		now = edge + 1;
	}
	/* Decrements by two. */
	assert_int_equal(pit_read16(t, 0, tick_ns(T0, 10)), 80);
	assert_int_equal(pit_read16(t, 0, tick_ns(T0, 60)), 80);
	/* Odd count: high one tick longer than low. */
	i8254_write(t, 3, 0x36, T0);
	pit_count(t, 0, 5, T0);
	assert_true(i8254_out(t, 0, tick_ns(T0, 2)));
	assert_false(i8254_out(t, 0, tick_ns(T0, 3)));
	assert_false(i8254_out(t, 0, tick_ns(T0, 4)));
	assert_int_equal(i8254_next_irq0(t, T0), tick_ns(T0, 5));
	i8254_destroy(t);
}

/* Guest-chosen tiny counts can never make the deadline stand still. */
static void test_pit_tiny_counts(void **state)
{
	(void)state;
	/* Modes 2, 3, 6 (an alias of 2), 0 and 4. */
	static const uint8_t modes[] = {0x34, 0x36, 0x3c, 0x30, 0x38};
	struct i8254 *t = i8254_create();
	for (size_t m = 0; m < sizeof(modes); m++) {
		for (uint16_t count = 0; count <= 3; count++) {
			i8254_reset(t, 0);
			i8254_write(t, 3, modes[m], T0);
			pit_count(t, 0, count == 3 ? 1 : count, T0);
			bool periodic = m < 3;
			uint64_t now = T0, prev = T0;
			int edges = 0;
			for (int i = 0; i < 2000; i++) {
				uint64_t next = i8254_next_irq0(t, now);
				if (next == UINT64_MAX)
					break;
				assert_true(next > now);
				/* Periodic edges at least 2 ticks apart. */
				assert_true(!periodic || i == 0 || next - prev >= 1676);
				prev = next;
				now = next;
				edges++;
			}
			/* Periodic modes go on; one-shots give exactly one edge. */
			assert_int_equal(edges, periodic ? 2000 : 1);
		}
	}
	/* Mode 2 with a count of 1 runs as a count of 2. */
	i8254_reset(t, 0);
	i8254_write(t, 3, 0x34, T0);
	pit_count(t, 0, 1, T0);
	assert_int_equal(i8254_next_irq0(t, T0), tick_ns(T0, 2));
	assert_int_equal(i8254_next_irq0(t, tick_ns(T0, 2)), tick_ns(T0, 4));
	i8254_destroy(t);
}

static void test_pit_mode4_mode1_mode5(void **state)
{
	(void)state;
	struct i8254 *t = i8254_create();
	i8254_reset(t, 0);
	/* Mode 4: OUT low for one tick at terminal count, the edge one tick later. */
	i8254_write(t, 3, 0x38, T0);
	pit_count(t, 0, 50, T0);
	assert_true(i8254_out(t, 0, T0));
	assert_false(i8254_out(t, 0, tick_ns(T0, 50)));
	assert_int_equal(i8254_next_irq0(t, T0), tick_ns(T0, 51));
	rises_at(t, tick_ns(T0, 51));
	assert_int_equal(i8254_next_irq0(t, tick_ns(T0, 51)), UINT64_MAX);

	/* Mode 1 on channel 2: nothing until the gate rises, retriggerable. */
	i8254_write(t, 3, 0xb2, T0);
	pit_count(t, 2, 100, T0);
	assert_true(i8254_out(t, 2, T0 + 1000000));
	uint64_t g = T0 + 2000000;
	i8254_set_gate(t, 2, true, g);
	assert_false(i8254_out(t, 2, g));
	assert_false(i8254_out(t, 2, tick_ns(g, 99)));
	assert_true(i8254_out(t, 2, tick_ns(g, 100)));
	/* Gate low does not stop a triggered one-shot; a new rise restarts it. */
	i8254_set_gate(t, 2, false, tick_ns(g, 10));
	assert_int_equal(pit_read16(t, 2, tick_ns(g, 20)), 80);
	uint64_t g2 = tick_ns(g, 200);
	i8254_set_gate(t, 2, true, g2);
	assert_false(i8254_out(t, 2, g2));
	assert_true(i8254_out(t, 2, tick_ns(g2, 100)));

	/* Mode 5: a strobe after the trigger. */
	i8254_write(t, 3, 0xba, g2);
	pit_count(t, 2, 10, g2);
	i8254_set_gate(t, 2, false, g2);
	assert_true(i8254_out(t, 2, tick_ns(g2, 10)));
	uint64_t g3 = g2 + 100000;
	i8254_set_gate(t, 2, true, g3);
	assert_false(i8254_out(t, 2, tick_ns(g3, 10)));
	assert_true(i8254_out(t, 2, tick_ns(g3, 11)));
	i8254_destroy(t);
}

static void test_pit_latch_and_access(void **state)
{
	(void)state;
	struct i8254 *t = i8254_create();
	i8254_reset(t, 0);
	i8254_write(t, 3, 0x34, T0);
	pit_count(t, 0, 0, T0); /* 65536 */
	uint64_t tl = tick_ns(T0, 1234);
	i8254_write(t, 3, 0x00, tl);                /* latch channel 0 */
	i8254_write(t, 3, 0x00, tick_ns(T0, 2000)); /* a second latch is ignored */
	assert_int_equal(pit_read16(t, 0, tick_ns(T0, 5000)), 65536 - 1234);
	/* The latch is released after both bytes: live again. */
	assert_int_equal(pit_read16(t, 0, tick_ns(T0, 5000)), 65536 - 5000);
	/* The read and write byte flip-flops are separate. */
	assert_int_equal(i8254_read(t, 0, tick_ns(T0, 6000)), (65536 - 6000) & 0xff);
	i8254_write(t, 3, 0x00, tick_ns(T0, 6000));
	assert_int_equal(i8254_read(t, 0, tick_ns(T0, 9000)), (65536 - 6000) >> 8);
	assert_int_equal(i8254_read(t, 0, tick_ns(T0, 9000)), (65536 - 9000) & 0xff);

	/* LSB only: count = byte; reads give the low byte. */
	i8254_write(t, 3, 0x10, T0); /* ch 0, LSB, mode 0 */
	i8254_write(t, 0, 0x34, T0);
	assert_int_equal(i8254_next_irq0(t, T0), tick_ns(T0, 0x34));
	assert_int_equal(i8254_read(t, 0, tick_ns(T0, 4)), 0x30);
	assert_int_equal(i8254_read(t, 0, tick_ns(T0, 4)), 0x30);
	/* MSB only: count = byte << 8; reads give the high byte. */
	i8254_write(t, 3, 0x20, T0);
	i8254_write(t, 0, 0x12, T0);
	assert_int_equal(i8254_next_irq0(t, T0), tick_ns(T0, 0x1200));
	assert_int_equal(i8254_read(t, 0, tick_ns(T0, 0x101)), 0x10);
	/* BCD: 0x0100 is 100 ticks; the count reads in BCD. */
	i8254_write(t, 3, 0x31, T0);
	pit_count(t, 0, 0x0100, T0);
	assert_int_equal(i8254_next_irq0(t, T0), tick_ns(T0, 100));
	assert_int_equal(pit_read16(t, 0, tick_ns(T0, 13)), 0x0087);
	pit_count(t, 0, 0, T0); /* 10000 in BCD */
	assert_int_equal(i8254_next_irq0(t, T0), tick_ns(T0, 10000));
	assert_int_equal(pit_read16(t, 0, tick_ns(T0, 1)), 0x9999);

	/* Ports that do not exist. */
	assert_int_equal(i8254_read(t, 3, T0), 0xff);
	assert_int_equal(i8254_read(t, 4, T0), 0xff);
	i8254_write(t, 4, 0x30, T0);
	i8254_write(t, 0xffffffffu, 0x30, T0);
	i8254_set_gate(t, 3, true, T0);
	assert_false(i8254_get_gate(t, 3));
	assert_false(i8254_out(t, 7, T0));
	i8254_destroy(t);
}

static void test_pit_read_back(void **state)
{
	(void)state;
	struct i8254 *t = i8254_create();
	i8254_reset(t, 0);
	i8254_write(t, 3, 0x34, T0);
	/* Status before a count: OUT high, null count, RW 3, mode 2, binary. */
	i8254_write(t, 3, 0xe2, T0); /* read-back status, channel 0 */
	assert_int_equal(i8254_read(t, 0, T0), 0xc0 | 0x34);
	pit_count(t, 0, 1000, T0);
	/* Status and count together: status first, then the count bytes. */
	uint64_t tr = tick_ns(T0, 300);
	i8254_write(t, 3, 0xc2, tr);
	assert_int_equal(i8254_read(t, 0, tr + 50000), 0x80 | 0x34);
	assert_int_equal(pit_read16(t, 0, tr + 50000), 700);
	/* Count only, several channels: channel 2 in mode 0 after terminal count, OUT high. */
	i8254_write(t, 3, 0xb0, T0);
	i8254_set_gate(t, 2, true, T0);
	pit_count(t, 2, 10, T0);
	i8254_write(t, 3, 0xea, tick_ns(T0, 5)); /* status of channels 0 and 2 */
	assert_int_equal(i8254_read(t, 2, tick_ns(T0, 20)), 0x30);
	i8254_write(t, 3, 0xe8, tick_ns(T0, 20));
	assert_int_equal(i8254_read(t, 2, tick_ns(T0, 20)), 0x80 | 0x30);
	assert_int_equal(i8254_read(t, 0, tick_ns(T0, 20)), 0x80 | 0x34);
	i8254_write(t, 3, 0xd8, tick_ns(T0, 12)); /* count of channel 2 latched */
	assert_int_equal(pit_read16(t, 2, tick_ns(T0, 40)), 0xfffe);
	/* A pending new count in mode 2 shows null count until it is loaded. */
	pit_count(t, 0, 50, tick_ns(T0, 1010));
	i8254_write(t, 3, 0xe2, tick_ns(T0, 1010));
	assert_int_equal(i8254_read(t, 0, tick_ns(T0, 1010)) & 0x40, 0x40);
	i8254_write(t, 3, 0xe2, tick_ns(T0, 2000));
	assert_int_equal(i8254_read(t, 0, tick_ns(T0, 2000)) & 0x40, 0x00);
	i8254_destroy(t);
}

/* Linux's PIT calibration: port 0x61 gate on, channel 2 mode 0 with 0xffff, poll OUT2. */
static void test_pit_channel2_calibration(void **state)
{
	(void)state;
	struct i8254 *t = i8254_create();
	i8254_reset(t, 0);
	assert_true(i8254_get_gate(t, 0));
	assert_true(i8254_get_gate(t, 1));
	assert_false(i8254_get_gate(t, 2));
	i8254_set_gate(t, 2, true, T0);
	assert_true(i8254_get_gate(t, 2));
	i8254_write(t, 3, 0xb0, T0);
	i8254_write(t, 2, 0xff, T0);
	i8254_write(t, 2, 0xff, T0);
	uint64_t end = tick_ns(T0, 0xffff); /* about 54.9 ms */
	assert_true(end > T0 + 54900000 && end < T0 + 55000000);
	uint64_t now = T0;
	unsigned polls = 0;
	uint16_t last = 0xffff;
	while (!i8254_out(t, 2, now)) {
		/* The MSB Linux reads in quick_pit_calibrate goes down with time. */
		uint16_t v = pit_read16(t, 2, now);
		assert_true(v <= last);
		last = v;
		now += 10000;
		polls++;
	}
	assert_true(now >= end && now < end + 10000);
	assert_true(polls > 5000);
	/* Channel 0 does not see channel 2's gate. */
	assert_int_equal(i8254_next_irq0(t, T0), UINT64_MAX);

	/* Gate low holds a mode 0 count, gate high resumes it. */
	i8254_write(t, 3, 0xb0, T0);
	pit_count(t, 2, 1000, T0);
	i8254_set_gate(t, 2, false, tick_ns(T0, 100));
	assert_int_equal(pit_read16(t, 2, tick_ns(T0, 5000)), 900);
	assert_false(i8254_out(t, 2, tick_ns(T0, 5000)));
	uint64_t g = tick_ns(T0, 5000);
	i8254_set_gate(t, 2, true, g);
	assert_false(i8254_out(t, 2, tick_ns(g, 899)));
	assert_true(i8254_out(t, 2, tick_ns(g, 900)));

	/* Mode 2 on channel 2: gate low forces OUT high and holds; gate high restarts the count. */
	i8254_write(t, 3, 0xb4, T0);
	pit_count(t, 2, 100, T0);
	assert_false(i8254_out(t, 2, tick_ns(g, 99)));
	i8254_set_gate(t, 2, false, tick_ns(g, 99));
	assert_true(i8254_out(t, 2, tick_ns(g, 99)));
	uint64_t g2 = tick_ns(g, 150);
	i8254_set_gate(t, 2, true, g2);
	assert_int_equal(pit_read16(t, 2, tick_ns(g2, 30)), 70);
	assert_false(i8254_out(t, 2, tick_ns(g2, 99)));
	i8254_destroy(t);
}

static void save_pit(const struct i8254 *t, struct state_writer *w)
{
	sw_init(w);
	i8254_save(t, w);
	assert_false(w->err);
}

static int load_pit(struct i8254 *t, const uint8_t *buf, size_t len)
{
	struct state_reader r;
	sr_init(&r, buf, len);
	return i8254_load(t, &r);
}

/* The record with `n` bytes at `at` replaced must be refused and leave the state as it was. */
static void pit_refuses(struct i8254 *t, const struct state_writer *good, size_t at,
			const void *bytes, size_t n)
{
	uint8_t *bad = malloc(good->len);
	struct state_writer before, after;
	memcpy(bad, good->buf, good->len);
	memcpy(bad + at, bytes, n);
	save_pit(t, &before);
	if (load_pit(t, bad, good->len) != -1)
		fail_msg("record patched at %zu loaded", at);
	save_pit(t, &after);
	assert_int_equal(before.len, after.len);
	assert_memory_equal(before.buf, after.buf, before.len);
	sw_free(&before);
	sw_free(&after);
	free(bad);
}

static void test_pit_save_load(void **state)
{
	(void)state;
	struct i8254 *t = i8254_create(), *u = i8254_create();
	i8254_reset(t, 0);
	/* Mid-count everywhere: ch 0 mode 2 with a pending count, ch 1 latched and half read,
	 * ch 2 mode 0 held by a low gate. */
	i8254_write(t, 3, 0x34, T0);
	pit_count(t, 0, 5000, T0);
	uint64_t ts = tick_ns(T0, 12345);
	pit_count(t, 0, 300, ts);
	i8254_write(t, 3, 0x74, T0);
	pit_count(t, 1, 40000, T0);
	i8254_write(t, 3, 0x40, tick_ns(T0, 100));
	assert_int_equal(i8254_read(t, 1, ts), (40000 - 100) & 0xff);
	i8254_set_gate(t, 2, true, T0);
	i8254_write(t, 3, 0xb0, T0);
	pit_count(t, 2, 7000, T0);
	i8254_set_gate(t, 2, false, tick_ns(T0, 2500));
	i8254_write(t, 3, 0xe8, ts); /* channel 2 status latched */

	struct state_writer w, w2;
	save_pit(t, &w);
	assert_int_equal(load_pit(u, w.buf, w.len), 0);
	save_pit(u, &w2);
	assert_int_equal(w.len, w2.len);
	assert_memory_equal(w.buf, w2.buf, w.len);
	sw_free(&w2);
	/* Both continue identically. */
	uint64_t later = tick_ns(T0, 15000) + 77;
	for (int k = 0; k < 2; k++) {
		struct i8254 *x = k ? u : t;
		assert_int_equal(i8254_next_irq0(x, ts), tick_ns(T0, 15000));
		assert_int_equal(i8254_next_irq0(x, later), tick_ns(T0, 15300));
		assert_int_equal(i8254_read(x, 1, later), (40000 - 100) >> 8);
		assert_int_equal(i8254_read(x, 2, later), 0x30);
		assert_int_equal(pit_read16(x, 2, later), 4500);
		i8254_set_gate(x, 2, true, later);
		assert_true(i8254_out(x, 2, tick_ns(later, 4500)));
		assert_false(i8254_out(x, 2, tick_ns(later, 4499)));
	}

	for (size_t len = 0; len < w.len; len++)
		assert_int_equal(load_pit(u, w.buf, len), -1);
	/* Header 12 bytes, then per channel (47 bytes): ctrl cr_lsb cr latch hold status flags(2)
	 * n(4) base(8) off(8) start(8) switch_at(8). */
	const size_t ch0 = 12, ch2 = 12 + 2 * 47;
	const uint8_t zero4[4] = {0}, big4[4] = {0x01, 0x00, 0x01, 0x00}, one4[4] = {1, 0, 0, 0};
	const uint8_t huge8[8] = {0, 0, 0, 0, 0, 0, 0, 0x40};
	const uint8_t badflags[2] = {0x00, 0x02}, pending_mode0[2] = {0x80 | 0x08, 0x01};
	pit_refuses(u, &w, 0, "y", 1);
	pit_refuses(u, &w, 8, "\x02", 1);
	pit_refuses(u, &w, ch0, "\x04", 1); /* RW 0 */
	pit_refuses(u, &w, ch0, "\x74", 1); /* a bit outside the control fields */
	pit_refuses(u, &w, ch0 + 9, badflags, 2);
	pit_refuses(u, &w, ch0 + 11, zero4, 4); /* n = 0 */
	pit_refuses(u, &w, ch0 + 11, big4, 4);  /* n > 65536 */
	pit_refuses(u, &w, ch0 + 11, one4, 4);  /* n = 1 in mode 2 */
	pit_refuses(u, &w, ch2 + 9, pending_mode0, 2);
	pit_refuses(u, &w, ch2 + 23, huge8, 8);      /* off out of range */
	pit_refuses(u, &w, ch2 + 31, huge8, 8);      /* start out of range */
	pit_refuses(u, &w, ch2 + 31, "\xff\xff", 2); /* held count started after where it is held */
	pit_refuses(u, &w, ch0 + 39, zero4, 4);      /* pending switch before the count's start */
	sw_free(&w);
	i8254_destroy(t);
	i8254_destroy(u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pic_linux_init_and_delivery),
	    cmocka_unit_test(test_pic_priority),
	    cmocka_unit_test(test_pic_rotation),
	    cmocka_unit_test(test_pic_auto_eoi),
	    cmocka_unit_test(test_pic_masking),
	    cmocka_unit_test(test_pic_edge_level),
	    cmocka_unit_test(test_pic_spurious),
	    cmocka_unit_test(test_pic_poll_and_reads),
	    cmocka_unit_test(test_pic_sfnm_and_single),
	    cmocka_unit_test(test_pic_save_load),
	    cmocka_unit_test(test_pit_mode0_one_shot),
	    cmocka_unit_test(test_pit_mode2_periodic),
	    cmocka_unit_test(test_pit_mode3_square_wave),
	    cmocka_unit_test(test_pit_tiny_counts),
	    cmocka_unit_test(test_pit_mode4_mode1_mode5),
	    cmocka_unit_test(test_pit_latch_and_access),
	    cmocka_unit_test(test_pit_read_back),
	    cmocka_unit_test(test_pit_channel2_calibration),
	    cmocka_unit_test(test_pit_save_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
