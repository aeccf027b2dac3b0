/* ferry test guests: IDT, TSS, 8259 PIC and the drop to CPL 3 (see rt.h). */
#include "rt.h"

struct idt_gate {
	uint16_t off0, sel;
	uint8_t ist, type;
	uint16_t off1;
	uint32_t off2, zero;
} __attribute__((packed));

extern const uint64_t isr_table[65]; /* vectors 0-63, then 0x80 */
extern uint64_t gdt[];

static struct idt_gate idt[256] __attribute__((aligned(16)));
static irq_handler_t handlers[256];
static struct {
	uint32_t rsv0;
	uint64_t rsp[3];
	uint64_t rsv1, ist[7], rsv2;
	uint16_t rsv3, iomap;
} __attribute__((packed)) tss;

static void set_gate(unsigned vec, uint64_t fn, unsigned dpl)
{
	idt[vec] = (struct idt_gate){
	    .off0 = (uint16_t)fn,
	    .sel = 0x08,
	    .type = (uint8_t)(0x8e | (dpl << 5)), /* present, 64-bit interrupt gate */
	    .off1 = (uint16_t)(fn >> 16),
	    .off2 = (uint32_t)(fn >> 32),
	};
}

void idt_init(void)
{
	for (unsigned v = 0; v < 64; v++)
		set_gate(v, isr_table[v], 0);
	set_gate(0x80, isr_table[64], 0);
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) d = {sizeof(idt) - 1, (uint64_t)idt};
	__asm__ volatile("lidt %0" ::"m"(d));
}

void idt_set_handler(unsigned vec, irq_handler_t h, unsigned dpl)
{
	handlers[vec] = h;
	set_gate(vec, isr_table[vec == 0x80 ? 64 : vec], dpl);
}

void isr_dispatch(struct irq_frame *f);
void isr_dispatch(struct irq_frame *f)
{
	if (handlers[f->vec & 0xff]) {
		handlers[f->vec & 0xff](f);
		return;
	}
	if (f->vec >= 32 && f->vec < 48) { /* stray IRQ: acknowledge and ignore */
		if ((f->vec & 7) != 7)
			pic_eoi((unsigned)f->vec - 32);
		return;
	}
	uint64_t cr2;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	printf("\nunexpected exception %lu err 0x%lx at rip 0x%lx cs 0x%lx cr2 0x%lx\n", f->vec,
	       f->err, f->rip, f->cs, cr2);
	vm_exit(0x7d);
}

void tss_init(uint64_t rsp0)
{
	uint64_t b = (uint64_t)&tss, lim = sizeof(tss) - 1;
	tss.rsp[0] = rsp0;
	tss.iomap = sizeof(tss);
	gdt[6] = (lim & 0xffff) | ((b & 0xffffff) << 16) | (0x89ull << 40) |
		 (((lim >> 16) & 0xf) << 48) | (((b >> 24) & 0xff) << 56);
	gdt[7] = b >> 32;
	__asm__ volatile("ltr %w0" ::"r"(0x30));
}

void enter_user(void (*fn)(uint64_t), uint64_t arg, uint64_t user_rsp)
{
	__asm__ volatile("push $0x23\n\t" /* SS */
			 "push %0\n\t"    /* RSP */
			 "push $0x2\n\t"  /* RFLAGS: IF off, IOPL 0 */
			 "push $0x2b\n\t" /* CS */
			 "push %1\n\t"    /* RIP */
			 "mov $0x23, %%eax\n\t"
			 "mov %%eax, %%ds\n\t"
			 "mov %%eax, %%es\n\t"
			 "iretq" ::"r"(user_rsp),
			 "r"((uint64_t)fn), "D"(arg)
			 : "rax", "memory");
	__builtin_unreachable();
}

void pic_init(uint16_t unmask)
{
	outb(0x20, 0x11); /* ICW1: edge, cascade, ICW4 */
	outb(0xa0, 0x11);
	outb(0x21, 0x20); /* ICW2: vectors 0x20 / 0x28 */
	outb(0xa1, 0x28);
	outb(0x21, 0x04); /* ICW3: slave on IRQ2 */
	outb(0xa1, 0x02);
	outb(0x21, 0x01); /* ICW4: 8086 mode */
	outb(0xa1, 0x01);
	outb(0x21, (uint8_t) ~(unmask | (unmask >> 8 ? 4 : 0)));
	outb(0xa1, (uint8_t) ~(unmask >> 8));
}

void pic_eoi(unsigned irq)
{
	if (irq >= 8)
		outb(0xa0, 0x20);
	outb(0x20, 0x20);
}
