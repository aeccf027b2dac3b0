/* Kernel loaders: synthetic bzImage (also with an XZ-compressed ELF payload, for the direct
 * entry), PVH ELF and multiboot images built here, loaded into 64 MiB of guest RAM; then the boot
 * structures, the initial CPU state, and the rejection of malformed images with an error message
 * and no crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lzma.h>

#include "arch/x86/boot.h"
#include "arch/x86/xz.h"
#include "dev/pci.h"
#include "engine/cpu_state.h"
#include "vm/mem.h"

#define RAM_SIZE (64ull << 20)
#define MIB      (1ull << 20)

struct fixture {
	struct guest_mem mem;
	struct cpu_state st;
	char err[256];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f || gmem_init(&f->mem, RAM_SIZE, f->err, sizeof(f->err)) < 0)
		return -1;
	cpu_state_reset(&f->st, true);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	gmem_destroy(&f->mem);
	free(f);
	return 0;
}

/* ---- little-endian helpers ------------------------------------------------------------- */

static void w16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}

static void w32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void w64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static uint16_t r16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return v;
}

static uint32_t r32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static uint64_t r64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static const uint8_t *gp(struct fixture *f, uint64_t gpa, uint64_t len)
{
	const uint8_t *p = gmem_ptr(&f->mem, gpa, len);
	assert_non_null(p);
	return p;
}

static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 7 + 3);
}

/* ---- image builders --------------------------------------------------------------------- */

struct bz_opts {
	uint8_t setup_sects;
	uint16_t version;
	uint8_t loadflags;
	uint16_t xloadflags;
	uint8_t relocatable;
	uint32_t align, init_size, cmdline_size, initrd_addr_max;
	uint64_t pref;
	size_t pm_len;
	uint32_t syssize_adjust; /* added to the honest syssize, to describe a cut-short file */
	uint8_t hdr_len_byte;
};

static struct bz_opts bz_default(void)
{
	return (struct bz_opts){.setup_sects = 1,
				.version = 0x020f,
				.loadflags = 0x01,
				.xloadflags = 0x3,
				.relocatable = 1,
				.align = 0x200000,
				.init_size = 0x400000,
				.cmdline_size = 2047,
				.initrd_addr_max = 0x7fffffff,
				.pref = 0x1000000,
				.pm_len = 0x3000,
				.hdr_len_byte = 0x6a};
}

static uint8_t *make_bzimage(const struct bz_opts *o, size_t *len)
{
	size_t setup = ((size_t)(o->setup_sects ? o->setup_sects : 4) + 1) * 512;
	*len = setup + o->pm_len;
	uint8_t *p = calloc(1, *len < 0x400 ? 0x400 : *len);
	assert_non_null(p);
	p[0x1f1] = o->setup_sects;
	w32(p + 0x1f4, (uint32_t)((o->pm_len + 15) / 16) + o->syssize_adjust);
	w16(p + 0x1fe, 0xaa55);
	p[0x200] = 0xeb;
	p[0x201] = o->hdr_len_byte;
	memcpy(p + 0x202, "HdrS", 4);
	w16(p + 0x206, o->version);
	p[0x211] = o->loadflags;
	w32(p + 0x22c, o->initrd_addr_max);
	w32(p + 0x230, o->align);
	p[0x234] = o->relocatable;
	w16(p + 0x236, o->xloadflags);
	w32(p + 0x238, o->cmdline_size);
	w64(p + 0x250, 0xdeadbeef); /* setup_data the loader must clear */
	w64(p + 0x258, o->pref);
	w32(p + 0x260, o->init_size);
	for (size_t i = setup; i < *len; i++)
		p[i] = pattern(i - setup);
	return p;
}

struct seg {
	uint32_t type;
	uint64_t offset, paddr, filesz, memsz, align;
};

/* An ELF executable: header, program headers at 0x40 (or 0x34), raw bytes elsewhere. */
static uint8_t *make_elf(int is64, uint64_t entry, const struct seg *segs, unsigned n, size_t len)
{
	uint8_t *p = calloc(1, len);
	assert_non_null(p);
	memcpy(p, "\177ELF", 4);
	p[4] = is64 ? 2 : 1;
	p[5] = 1;
	p[6] = 1;
	w16(p + 16, 2);
	w16(p + 18, is64 ? 62 : 3);
	w32(p + 20, 1);
	size_t ph = is64 ? 64 : 52, phsz = is64 ? 56 : 32;
	if (is64) {
		w64(p + 24, entry);
		w64(p + 32, ph);
		w16(p + 52, 64);
		w16(p + 54, (uint16_t)phsz);
		w16(p + 56, (uint16_t)n);
	} else {
		w32(p + 24, (uint32_t)entry);
		w32(p + 28, (uint32_t)ph);
		w16(p + 40, 52);
		w16(p + 42, (uint16_t)phsz);
		w16(p + 44, (uint16_t)n);
	}
	for (unsigned i = 0; i < n; i++) {
		uint8_t *q = p + ph + i * phsz;
		w32(q, segs[i].type);
		if (is64) {
			w64(q + 8, segs[i].offset);
			w64(q + 16, segs[i].paddr);
			w64(q + 24, segs[i].paddr);
			w64(q + 32, segs[i].filesz);
			w64(q + 40, segs[i].memsz);
			w64(q + 48, segs[i].align);
		} else {
			w32(q + 4, (uint32_t)segs[i].offset);
			w32(q + 8, (uint32_t)segs[i].paddr);
			w32(q + 12, (uint32_t)segs[i].paddr);
			w32(q + 16, (uint32_t)segs[i].filesz);
			w32(q + 20, (uint32_t)segs[i].memsz);
			w32(q + 28, (uint32_t)segs[i].align);
		}
	}
	return p;
}

/* A PVH kernel: one PT_LOAD of 0x2000 file bytes + 0x1000 bss at 16 MiB, a Xen entry note. */
#define PVH_PADDR    0x1000000ull
#define PVH_ENTRY    (PVH_PADDR + 0x10)
#define PVH_LEN      0x3000
#define PVH_NOTE_OFF 0x200
#define PVH_DATA_OFF 0x1000

static void put_xen_note(uint8_t *p, uint32_t descsz, uint64_t entry)
{
	w32(p, 4);
	w32(p + 4, descsz);
	w32(p + 8, 18);
	memcpy(p + 12, "Xen", 4);
	if (descsz == 8)
		w64(p + 16, entry);
	else
		w32(p + 16, (uint32_t)entry);
}

static uint8_t *make_pvh_segs(struct seg *load, uint32_t descsz, size_t *len)
{
	struct seg segs[2] = {*load, {4, PVH_NOTE_OFF, 0, 16 + descsz, 16 + descsz, 4}};
	uint8_t *p = make_elf(1, 0, segs, 2, PVH_LEN);
	put_xen_note(p + PVH_NOTE_OFF, descsz, PVH_ENTRY);
	for (size_t i = PVH_DATA_OFF; i < PVH_LEN; i++)
		p[i] = pattern(i);
	*len = PVH_LEN;
	return p;
}

static struct seg pvh_load_seg(void)
{
	return (struct seg){1, PVH_DATA_OFF, PVH_PADDR, 0x2000, 0x3000, 0x1000};
}

static uint8_t *make_pvh(size_t *len)
{
	struct seg s = pvh_load_seg();
	return make_pvh_segs(&s, 4, len);
}

/* A multiboot header at off; flags and the five address fields. */
#define MB_MAGIC 0x1badb002u
static void put_mb_header(uint8_t *p, uint32_t flags, const uint32_t addr[5])
{
	w32(p, MB_MAGIC);
	w32(p + 4, flags);
	w32(p + 8, (uint32_t) - (MB_MAGIC + flags));
	for (int i = 0; addr && i < 5; i++)
		w32(p + 12 + 4 * i, addr[i]);
}

/* A multiboot ELF32: one PT_LOAD at 1 MiB with a bss page, header at 0x100. */
#define MB_ELF_LEN 0x2000
static uint8_t *make_mb_elf(int is64, size_t *len)
{
	struct seg s = {1, 0x1000, 0x100000, 0x1000, 0x2000, 0x1000};
	uint8_t *p = make_elf(is64, 0x100000, &s, 1, MB_ELF_LEN);
	put_mb_header(p + 0x100, 0x3, NULL);
	for (size_t i = 0x1000; i < MB_ELF_LEN; i++)
		p[i] = pattern(i);
	*len = MB_ELF_LEN;
	return p;
}

/* A raw multiboot image placed by the header's address fields: header at 0x40, image loaded
 * from file offset 0 at 2 MiB. */
#define MB_RAW_LEN  0x800
#define MB_RAW_ADDR 0x200000u
static uint8_t *make_mb_raw(const uint32_t *addr_override, size_t *len)
{
	uint8_t *p = calloc(1, MB_RAW_LEN);
	assert_non_null(p);
	for (size_t i = 0; i < MB_RAW_LEN; i++)
		p[i] = pattern(i);
	uint32_t addr[5] = {MB_RAW_ADDR + 0x40, MB_RAW_ADDR, 0, MB_RAW_ADDR + 0x1800,
			    MB_RAW_ADDR + 0x100};
	put_mb_header(p + 0x40, 0x10003, addr_override ? addr_override : addr);
	*len = MB_RAW_LEN;
	return p;
}

/* ---- load helpers ----------------------------------------------------------------------- */

static int load(struct fixture *f, const uint8_t *img, size_t len, const uint8_t *initrd,
		size_t initrd_len, const char *cmdline)
{
	struct boot_params_in in = {img, len, initrd, initrd_len, cmdline, 1};
	f->err[0] = 0;
	return boot_load(&f->mem, &in, &f->st, f->err, sizeof(f->err));
}

/* Loading fails with a message containing want. */
static void expect_reject(struct fixture *f, const uint8_t *img, size_t len, const char *want)
{
	int rc = load(f, img, len, NULL, 0, "console=ttyS0");
	if (rc != -1 || !strstr(f->err, want))
		fail_msg("expected an error with \"%s\", got rc %d: \"%s\"", want, rc, f->err);
}

static void check_e820(const uint8_t *p, unsigned n, size_t stride, size_t type_off)
{
	static const struct {
		uint64_t addr, size;
		uint32_t type;
	} want[] = {
	    {0, 0x9fc00, 1},
	    {0x9fc00, 0x400, 2},
	    {0xf0000, 0x10000, 2},
	    {0x100000, RAM_SIZE - 0x100000, 1},
	};
	assert_int_equal(n, 4);
	for (unsigned i = 0; i < 4; i++) {
		assert_int_equal(r64(p + i * stride), want[i].addr);
		assert_int_equal(r64(p + i * stride + 8), want[i].size);
		assert_int_equal(r32(p + i * stride + type_off), want[i].type);
	}
}

static void check_flat32(const struct cpu_state *st)
{
	assert_int_equal(st->cr0 & (CR0_PE | CR0_PG), CR0_PE);
	assert_int_equal(st->efer, 0);
	assert_int_equal(st->cr4, 0);
	assert_int_equal(st->rflags, 0x2);
	const struct cpu_segment *cs = &st->seg[SEG_CS], *ds = &st->seg[SEG_DS];
	assert_int_equal(cs->base, 0);
	assert_int_equal(cs->limit, 0xffffffff);
	assert_int_equal(cs->type, 0xb);
	assert_true(cs->s && cs->present && cs->db && cs->g && !cs->l);
	assert_int_equal(ds->type, 0x3);
	assert_true(ds->db && ds->present && ds->limit == 0xffffffff);
	assert_int_equal(st->seg[SEG_SS].selector, ds->selector);
	assert_int_equal(st->seg[SEG_TR].type, 0xb);
	assert_true(st->seg[SEG_TR].present);
}

/* ---- detection -------------------------------------------------------------------------- */

static void test_detect(void **state)
{
	(void)state;
	size_t len;
	struct bz_opts o = bz_default();
	uint8_t *bz = make_bzimage(&o, &len);
	assert_int_equal(boot_detect(bz, len), BOOT_FMT_BZIMAGE);
	assert_int_equal(boot_detect(bz, 0x205), BOOT_FMT_UNKNOWN);
	free(bz);

	uint8_t *pvh = make_pvh(&len);
	assert_int_equal(boot_detect(pvh, len), BOOT_FMT_PVH);
	/* The note cut off: no longer a PVH kernel. */
	assert_int_equal(boot_detect(pvh, PVH_NOTE_OFF + 10), BOOT_FMT_UNKNOWN);
	free(pvh);

	uint8_t *mb = make_mb_elf(0, &len);
	assert_int_equal(boot_detect(mb, len), BOOT_FMT_MULTIBOOT);
	w32(mb + 0x108, 0); /* checksum */
	assert_int_equal(boot_detect(mb, len), BOOT_FMT_UNKNOWN);
	free(mb);

	mb = make_mb_raw(NULL, &len);
	assert_int_equal(boot_detect(mb, len), BOOT_FMT_MULTIBOOT);
	/* A header beyond the first 8 KiB does not count. */
	uint8_t *far = calloc(1, 0x3000);
	put_mb_header(far + 0x2000, 0x10000, NULL);
	assert_int_equal(boot_detect(far, 0x3000), BOOT_FMT_UNKNOWN);
	free(far);
	free(mb);

	uint8_t junk[4096];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = pattern(i);
	assert_int_equal(boot_detect(junk, sizeof(junk)), BOOT_FMT_UNKNOWN);
	assert_int_equal(boot_detect(junk, 0), BOOT_FMT_UNKNOWN);
	assert_int_equal(boot_detect(NULL, 0), BOOT_FMT_UNKNOWN);

	assert_string_equal(boot_format_name(BOOT_FMT_BZIMAGE), "Linux bzImage");
	assert_string_equal(boot_format_name(BOOT_FMT_PVH), "PVH ELF");
	assert_string_equal(boot_format_name(BOOT_FMT_MULTIBOOT), "multiboot");
	assert_string_equal(boot_format_name(BOOT_FMT_UNKNOWN), "unknown");
}

static void test_unknown_file(void **state)
{
	struct fixture *f = *state;
	uint8_t junk[1024] = {1, 2, 3};
	expect_reject(f, junk, sizeof(junk), "not a kernel ferry can boot");
	expect_reject(f, junk, 0, "not a kernel ferry can boot");
}

/* ---- bzImage ---------------------------------------------------------------------------- */

static void test_bzimage_load(void **state)
{
	struct fixture *f = *state;
	size_t len, initrd_len = 2 * PAGE_SIZE + 123;
	struct bz_opts o = bz_default();
	uint8_t *img = make_bzimage(&o, &len), *initrd = malloc(initrd_len);
	for (size_t i = 0; i < initrd_len; i++)
		initrd[i] = (uint8_t)~pattern(i);
	const char *cmdline = "console=ttyS0 root=/dev/vda";

	assert_int_equal(load(f, img, len, initrd, initrd_len, cmdline), 0);

	/* The protected-mode kernel at 1 MiB. */
	assert_memory_equal(gp(f, BOOT_KERNEL_ADDR, o.pm_len), img + 1024, o.pm_len);
	/* boot_params. */
	const uint8_t *bp = gp(f, BOOT_INFO_ADDR, 4096);
	assert_memory_equal(bp + 0x202, "HdrS", 4);
	assert_int_equal(r16(bp + 0x206), 0x020f);
	assert_int_equal(bp[0x210], 0xff);
	assert_int_equal(bp[0x211], 0x81);
	assert_int_equal(r32(bp + 0x228), BOOT_CMDLINE_ADDR);
	assert_int_equal(r64(bp + 0x250), 0);
	assert_int_equal(r32(bp + 0x260), o.init_size);      /* copied header */
	assert_memory_equal(bp, (uint8_t[0x1e8]){0}, 0x1e8); /* nothing before the e820 count */
	assert_string_equal((const char *)gp(f, BOOT_CMDLINE_ADDR, 64), cmdline);
	check_e820(bp + 0x2d0, bp[0x1e8], 20, 16);
	/* The initrd: page-aligned, as high as RAM allows, above the kernel. */
	uint32_t rd = r32(bp + 0x218);
	assert_int_equal(rd, (RAM_SIZE - initrd_len) & ~(PAGE_SIZE - 1));
	assert_int_equal(r32(bp + 0x21c), initrd_len);
	assert_int_equal(r32(bp + 0xc0), 0);
	assert_int_equal(r32(bp + 0xc4), 0);
	assert_memory_equal(gp(f, rd, initrd_len), initrd, initrd_len);

	/* 64-bit entry. */
	const struct cpu_state *st = &f->st;
	assert_int_equal(st->rip, BOOT_KERNEL_ADDR + 0x200);
	assert_int_equal(st->gpr[GPR_RSI], BOOT_INFO_ADDR);
	assert_int_equal(st->gpr[GPR_RSP], BOOT_STACK_TOP);
	assert_int_equal(st->rflags, 0x2);
	assert_int_equal(st->cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
	assert_int_equal(st->cr4 & CR4_PAE, CR4_PAE);
	assert_int_equal(st->efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
	assert_int_equal(st->cr3, BOOT_PT_ADDR);
	assert_int_equal(st->seg[SEG_CS].selector, 0x10);
	assert_true(st->seg[SEG_CS].l && !st->seg[SEG_CS].db);
	assert_int_equal(st->seg[SEG_DS].selector, 0x18);
	assert_int_equal(st->gdt.base, BOOT_GDT_ADDR);
	assert_int_equal(r64(gp(f, BOOT_GDT_ADDR + 0x10, 8)), 0x00af9b000000ffffull);
	assert_int_equal(r64(gp(f, BOOT_GDT_ADDR + 0x18, 8)), 0x00cf93000000ffffull);
	free(img);
	free(initrd);
}

static void test_bzimage_no_initrd_no_cmdline(void **state)
{
	struct fixture *f = *state;
	size_t len;
	struct bz_opts o = bz_default();
	o.setup_sects = 0; /* means 4 */
	uint8_t *img = make_bzimage(&o, &len);
	assert_int_equal(load(f, img, len, NULL, 0, NULL), 0);
	const uint8_t *bp = gp(f, BOOT_INFO_ADDR, 4096);
	assert_int_equal(r32(bp + 0x218), 0);
	assert_int_equal(r32(bp + 0x21c), 0);
	assert_int_equal(*gp(f, BOOT_CMDLINE_ADDR, 1), 0);
	assert_memory_equal(gp(f, BOOT_KERNEL_ADDR, o.pm_len), img + 5 * 512, o.pm_len);
	free(img);
}

static void test_bzimage_initrd_limits(void **state)
{
	struct fixture *f = *state;
	size_t len;
	struct bz_opts o = bz_default();
	o.initrd_addr_max = 0x1ffffff; /* 32 MiB - 1 */
	uint8_t *img = make_bzimage(&o, &len), *initrd = calloc(1, 0x10000);
	assert_int_equal(load(f, img, len, initrd, 0x10000, ""), 0);
	const uint8_t *bp = gp(f, BOOT_INFO_ADDR, 4096);
	assert_int_equal(r32(bp + 0x218), 0x2000000 - 0x10000);

	/* Room only inside the kernel's init_size area (16 MiB + 4 MiB) is refused. */
	o.initrd_addr_max = 0x13fffff;
	free(img);
	img = make_bzimage(&o, &len);
	assert_int_equal(load(f, img, len, initrd, 0x10000, ""), -1);
	assert_non_null(strstr(f->err, "initrd"));

	/* An initrd bigger than RAM. */
	free(initrd);
	o = bz_default();
	free(img);
	img = make_bzimage(&o, &len);
	size_t big = RAM_SIZE - 8 * MIB;
	initrd = calloc(1, big);
	assert_non_null(initrd);
	assert_int_equal(load(f, img, len, initrd, big, ""), -1);
	assert_non_null(strstr(f->err, "initrd"));
	free(initrd);
	free(img);
}

static void test_bzimage_rejects(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *img;
	struct bz_opts o;

#define REJECT(mod, want)                                                                          \
	do {                                                                                       \
		o = bz_default();                                                                  \
		mod;                                                                               \
		img = make_bzimage(&o, &len);                                                      \
		expect_reject(f, img, len, want);                                                  \
		free(img);                                                                         \
	} while (0)

	REJECT(o.version = 0x020b, "too old");
	REJECT(o.xloadflags = 0x2, "64-bit");
	REJECT(o.loadflags = 0, "zImage");
	REJECT(o.init_size = 0xfffff000, "init_size");
	REJECT(o.pref = 0x8000000, "init_size"); /* 128 MiB: past RAM */
	REJECT((o.relocatable = 0, o.pref = 0x80000), "below 1 MiB");
	REJECT((o.relocatable = 0, o.pref = UINT64_MAX - 16), "pref_address");
	REJECT(o.align = 0x300000, "power of two");
	REJECT(o.hdr_len_byte = 0x20, "header length");
	REJECT(o.syssize_adjust = 1, "truncated");           /* one paragraph missing */
	REJECT(o.syssize_adjust = 0xf0000000u, "truncated"); /* absurd size: no overflow */
	REJECT(o.pm_len = 70 * MIB, "init_size"); /* protected-mode part larger than RAM */
#undef REJECT

	/* setup_sects pointing past the end of the file. */
	o = bz_default();
	o.setup_sects = 200;
	o.pm_len = 0;
	img = make_bzimage(&o, &len);
	expect_reject(f, img, 0x1000, "past the end");
	free(img);

	/* Truncated files: header cut at every length up to the protected-mode part. */
	o = bz_default();
	img = make_bzimage(&o, &len);
	for (size_t l = 0x206; l <= 1024; l += 2) {
		assert_int_equal(load(f, img, l, NULL, 0, NULL), -1);
		assert_true(f->err[0]);
	}
	/* Directly, on a file that is not a bzImage. */
	struct boot_params_in in = {img, 0x100, NULL, 0, NULL, 1};
	assert_int_equal(boot_load_bzimage(&f->mem, &in, &f->st, f->err, sizeof(f->err)), -1);
	assert_non_null(strstr(f->err, "no Linux boot header"));

	/* Command line longer than the kernel's cmdline_size. */
	free(img);
	o.cmdline_size = 8;
	img = make_bzimage(&o, &len);
	assert_int_equal(load(f, img, len, NULL, 0, "12345678"), 0);
	assert_int_equal(load(f, img, len, NULL, 0, "123456789"), -1);
	assert_non_null(strstr(f->err, "command line"));
	free(img);
}

/* ---- bzImage, direct entry (XZ payload decompressed on the host) ------------------------ */

/* The ELF kernel inside: text at 16 MiB entered at +0x40, data with bss at 20 MiB. */
#define DK_TEXT      0x1000000ull
#define DK_DATA      0x1400000ull
#define DK_ENTRY     (DK_TEXT + 0x40)
#define DK_TEXT_OFF  0x1000
#define DK_TEXT_SIZE 0x2000
#define DK_DATA_OFF  0x3000
#define DK_DATA_FILE 0x800
#define DK_DATA_MEM  0x3000
#define DK_LEN       (DK_DATA_OFF + DK_DATA_FILE)
#define DK_PAYLOAD   0x200 /* payload_offset: after some decompressor code */
#define KVIRT        0xffffffff80000000ull

static void dk_segs(struct seg s[2])
{
	s[0] = (struct seg){1, DK_TEXT_OFF, DK_TEXT, DK_TEXT_SIZE, DK_TEXT_SIZE, 0x200000};
	s[1] = (struct seg){1, DK_DATA_OFF, DK_DATA, DK_DATA_FILE, DK_DATA_MEM, 0x200000};
}

static uint8_t *make_dk_elf(const struct seg *segs, unsigned n, uint64_t entry)
{
	uint8_t *p = make_elf(1, entry, segs, n, DK_LEN);
	for (size_t i = DK_TEXT_OFF; i < DK_LEN; i++)
		p[i] = pattern(i);
	return p;
}

/* Sets program header i's p_vaddr (make_elf makes it equal to p_paddr). */
static void set_vaddr(uint8_t *elf, unsigned i, uint64_t vaddr)
{
	w64(elf + 64 + i * 56 + 16, vaddr);
}

/* XZ as Linux builds its payload: x86 BCJ + LZMA2, CRC32 check, the uncompressed size appended
 * (little-endian, 4 bytes). */
static uint8_t *xz_payload(const uint8_t *data, size_t len, size_t *out_len)
{
	lzma_options_lzma opt;
	assert_false(lzma_lzma_preset(&opt, 1));
	lzma_filter filters[] = {
	    {LZMA_FILTER_X86, NULL}, {LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, NULL}};
	size_t cap = lzma_stream_buffer_bound(len), pos = 0;
	uint8_t *out = malloc(cap + 4);
	assert_non_null(out);
	assert_int_equal(
	    lzma_stream_buffer_encode(filters, LZMA_CHECK_CRC32, NULL, data, len, out, &pos, cap),
	    LZMA_OK);
	w32(out + pos, (uint32_t)len);
	*out_len = pos + 4;
	return out;
}

/* A bzImage whose protected-mode part holds the payload at DK_PAYLOAD. */
static uint8_t *make_direct_bz(const uint8_t *payload, size_t plen, size_t *len)
{
	struct bz_opts o = bz_default();
	o.pm_len = (DK_PAYLOAD + plen + 15) & ~(size_t)15;
	uint8_t *p = make_bzimage(&o, len);
	memcpy(p + 1024 + DK_PAYLOAD, payload, plen);
	w32(p + 0x248, DK_PAYLOAD);
	w32(p + 0x24c, (uint32_t)plen);
	return p;
}

/* The whole chain: ELF -> XZ payload -> bzImage. */
static uint8_t *make_direct_from_elf(const uint8_t *elf, size_t elf_len, size_t *len)
{
	size_t plen;
	uint8_t *payload = xz_payload(elf, elf_len, &plen);
	uint8_t *bz = make_direct_bz(payload, plen, len);
	free(payload);
	return bz;
}

static uint8_t *make_direct(uint64_t entry, size_t *len)
{
	struct seg s[2];
	dk_segs(s);
	uint8_t *elf = make_dk_elf(s, 2, entry);
	uint8_t *bz = make_direct_from_elf(elf, DK_LEN, len);
	free(elf);
	return bz;
}

static int load_dir(struct fixture *f, const uint8_t *img, size_t len, const uint8_t *initrd,
		    size_t initrd_len, const char *cmdline)
{
	struct boot_params_in in = {img, len, initrd, initrd_len, cmdline, 1, true};
	f->err[0] = 0;
	return boot_load(&f->mem, &in, &f->st, f->err, sizeof(f->err));
}

static void expect_direct_reject(struct fixture *f, const uint8_t *img, size_t len,
				 const char *want)
{
	int rc = load_dir(f, img, len, NULL, 0, "console=ttyS0");
	if (rc != -1 || !strstr(f->err, want))
		fail_msg("expected an error with \"%s\", got rc %d: \"%s\"", want, rc, f->err);
}

static void test_direct_load(void **state)
{
	struct fixture *f = *state;
	size_t len, initrd_len = PAGE_SIZE + 77;
	uint8_t *img = make_direct(DK_ENTRY, &len), *initrd = malloc(initrd_len);
	for (size_t i = 0; i < initrd_len; i++)
		initrd[i] = (uint8_t)~pattern(i);
	/* Garbage where the kernel goes: the bss must come out zeroed, 1 MiB stay untouched. */
	memset(gmem_ptr(&f->mem, BOOT_KERNEL_ADDR, 24 * MIB), 0xcc, 24 * MIB);

	assert_int_equal(load_dir(f, img, len, initrd, initrd_len, "console=ttyS0 quiet"), 0);

	struct seg s[2];
	dk_segs(s);
	uint8_t *elf = make_dk_elf(s, 2, DK_ENTRY);
	assert_memory_equal(gp(f, DK_TEXT, DK_TEXT_SIZE), elf + DK_TEXT_OFF, DK_TEXT_SIZE);
	assert_memory_equal(gp(f, DK_DATA, DK_DATA_FILE), elf + DK_DATA_OFF, DK_DATA_FILE);
	const uint8_t *bss = gp(f, DK_DATA + DK_DATA_FILE, DK_DATA_MEM - DK_DATA_FILE);
	for (size_t i = 0; i < DK_DATA_MEM - DK_DATA_FILE; i++)
		assert_int_equal(bss[i], 0);
	assert_int_equal(*gp(f, DK_DATA + DK_DATA_MEM, 1), 0xcc); /* nothing past memsz */
	assert_int_equal(*gp(f, BOOT_KERNEL_ADDR, 1), 0xcc);      /* no bzImage at 1 MiB */
	assert_int_equal(*gp(f, DK_TEXT - 1, 1), 0xcc);

	/* The same boot_params as the decompressor entry, plus KASLR_FLAG. */
	const uint8_t *bp = gp(f, BOOT_INFO_ADDR, 4096);
	assert_memory_equal(bp + 0x202, "HdrS", 4);
	assert_int_equal(bp[0x210], 0xff);
	assert_int_equal(bp[0x211], 0x83);
	assert_int_equal(r32(bp + 0x228), BOOT_CMDLINE_ADDR);
	assert_int_equal(r64(bp + 0x250), 0);
	assert_int_equal(r32(bp + 0x260), 0x400000); /* init_size, from the header */
	assert_int_equal(r32(bp + 0x248), DK_PAYLOAD);
	assert_string_equal((const char *)gp(f, BOOT_CMDLINE_ADDR, 32), "console=ttyS0 quiet");
	check_e820(bp + 0x2d0, bp[0x1e8], 20, 16);
	uint32_t rd = r32(bp + 0x218);
	assert_int_equal(rd, (RAM_SIZE - initrd_len) & ~(PAGE_SIZE - 1));
	assert_int_equal(r32(bp + 0x21c), initrd_len);
	assert_memory_equal(gp(f, rd, initrd_len), initrd, initrd_len);

	/* 64-bit entry at the ELF's entry point. */
	const struct cpu_state *st = &f->st;
	assert_int_equal(st->rip, DK_ENTRY);
	assert_int_equal(st->gpr[GPR_RSI], BOOT_INFO_ADDR);
	assert_int_equal(st->gpr[GPR_RSP], BOOT_STACK_TOP);
	assert_int_equal(st->cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
	assert_int_equal(st->cr4 & CR4_PAE, CR4_PAE);
	assert_int_equal(st->efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
	assert_int_equal(st->cr3, BOOT_PT_ADDR);
	assert_true(st->seg[SEG_CS].l && !st->seg[SEG_CS].db);
	assert_int_equal(st->seg[SEG_CS].selector, 0x10);

	/* The initrd stays clear of every segment: under initrd_addr_max just past the data
	 * segment, it goes below that segment. */
	w32(img + 0x22c, (uint32_t)(DK_DATA + DK_DATA_MEM + PAGE_SIZE - 1));
	assert_int_equal(load_dir(f, img, len, initrd, initrd_len, NULL), 0);
	assert_int_equal(r32(bp + 0x218), DK_DATA - 2 * PAGE_SIZE);
	assert_memory_equal(gp(f, DK_DATA, DK_DATA_FILE), elf + DK_DATA_OFF, DK_DATA_FILE);
	w32(img + 0x22c, 0x7fffffff);

	/* "nokaslr" as a whole option leaves KASLR_FLAG clear; as part of a word it does not. */
	assert_int_equal(load_dir(f, img, len, NULL, 0, "console=ttyS0 nokaslr"), 0);
	assert_int_equal(bp[0x211], 0x81);
	assert_int_equal(load_dir(f, img, len, NULL, 0, "nokaslr\tquiet"), 0);
	assert_int_equal(bp[0x211], 0x81);
	assert_int_equal(load_dir(f, img, len, NULL, 0, "nokaslrx xnokaslr"), 0);
	assert_int_equal(bp[0x211], 0x83);
	assert_int_equal(load_dir(f, img, len, NULL, 0, NULL), 0);
	assert_int_equal(bp[0x211], 0x83);

	/* Without linux_direct the same image goes through its decompressor, KASLR_FLAG clear. */
	assert_int_equal(load(f, img, len, NULL, 0, NULL), 0);
	assert_int_equal(f->st.rip, BOOT_KERNEL_ADDR + 0x200);
	assert_int_equal(bp[0x211], 0x81);
	free(elf);
	free(img);
	free(initrd);
}

static void test_direct_virtual_entry(void **state)
{
	struct fixture *f = *state;
	struct seg s[2];
	dk_segs(s);
	size_t len;
	/* Linux's layout: p_vaddr in the kernel's mapping, p_paddr physical. */
	uint8_t *elf = make_dk_elf(s, 2, KVIRT + DK_DATA + 0x10);
	set_vaddr(elf, 0, KVIRT + DK_TEXT);
	set_vaddr(elf, 1, KVIRT + DK_DATA);
	uint8_t *img = make_direct_from_elf(elf, DK_LEN, &len);
	assert_int_equal(load_dir(f, img, len, NULL, 0, NULL), 0);
	assert_int_equal(f->st.rip, DK_DATA + 0x10);
	free(img);

	/* A physical entry is taken as it is, whatever the segments' virtual addresses. */
	w64(elf + 24, DK_ENTRY);
	img = make_direct_from_elf(elf, DK_LEN, &len);
	assert_int_equal(load_dir(f, img, len, NULL, 0, NULL), 0);
	assert_int_equal(f->st.rip, DK_ENTRY);
	free(img);

	/* A virtual entry no segment maps, one past the end of a segment, a physical one outside
	 * the loaded segments. */
	static const uint64_t bad[] = {KVIRT + 0x100000, KVIRT + DK_DATA + DK_DATA_MEM,
				       DK_TEXT + DK_TEXT_SIZE, 0};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		w64(elf + 24, bad[i]);
		img = make_direct_from_elf(elf, DK_LEN, &len);
		expect_direct_reject(f, img, len, "entry point");
		free(img);
	}
	free(elf);
}

static void test_direct_fallback(void **state)
{
	struct fixture *f = *state;
	size_t len, plen;
	/* A gzip payload: the decompressor entry. */
	uint8_t gz[64] = {0x1f, 0x8b, 8};
	uint8_t *img = make_direct_bz(gz, sizeof(gz), &len);
	assert_int_equal(load_dir(f, img, len, NULL, 0, NULL), 0);
	assert_int_equal(f->st.rip, BOOT_KERNEL_ADDR + 0x200);
	assert_int_equal(*gp(f, BOOT_INFO_ADDR + 0x211, 1), 0x81);
	assert_memory_equal(gp(f, BOOT_KERNEL_ADDR, len - 1024), img + 1024, len - 1024);
	free(img);

	/* XZ, but what it holds is not an ELF file. */
	uint8_t raw[4096];
	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = pattern(i);
	uint8_t *payload = xz_payload(raw, sizeof(raw), &plen);
	img = make_direct_bz(payload, plen, &len);
	assert_int_equal(load_dir(f, img, len, NULL, 0, NULL), 0);
	assert_int_equal(f->st.rip, BOOT_KERNEL_ADDR + 0x200);
	free(payload);
	free(img);
}

static void test_direct_rejects_payload(void **state)
{
	struct fixture *f = *state;
	struct seg s[2];
	dk_segs(s);
	uint8_t *elf = make_dk_elf(s, 2, DK_ENTRY);
	size_t plen, len;
	uint8_t *payload = xz_payload(elf, DK_LEN, &plen);
	uint8_t *img = make_direct_bz(payload, plen, &len), *pl = img + 1024 + DK_PAYLOAD;
	assert_int_equal(load_dir(f, img, len, NULL, 0, NULL), 0);

	/* Corrupt compressed data (the CRC32 check catches it), corrupt block header. */
	size_t data_at = 12 + ((size_t)pl[12] + 1) * 4 + 8; /* inside the first LZMA2 chunk */
	pl[data_at] ^= 0x40;
	expect_direct_reject(f, img, len, "corrupt");
	pl[data_at] ^= 0x40;
	pl[13] ^= 1;
	expect_direct_reject(f, img, len, "corrupt");
	pl[13] ^= 1;

	/* Truncated: payload_length cut short at every length; each fails, none crashes. */
	for (uint32_t l = 6; l < plen - 4; l++) {
		w32(img + 0x24c, l);
		assert_int_equal(load_dir(f, img, len, NULL, 0, NULL), -1);
		assert_non_null(strstr(f->err, "XZ stream"));
	}
	w32(img + 0x24c, (uint32_t)(plen / 2));
	expect_direct_reject(f, img, len, "truncated");
	/* Shorter than the XZ magic: not XZ at all, so the decompressor entry. */
	w32(img + 0x24c, 5);
	assert_int_equal(load_dir(f, img, len, NULL, 0, NULL), 0);
	assert_int_equal(f->st.rip, BOOT_KERNEL_ADDR + 0x200);

	/* payload_offset / payload_length outside the protected-mode part. */
	size_t pm_len = len - 1024;
	static const struct {
		uint32_t off, len;
	} out[] = {{0xffffffff, 0x10}, {0x10, 0xfffffff8}, {0, 0xffffffff}};
	for (size_t i = 0; i < sizeof(out) / sizeof(out[0]); i++) {
		w32(img + 0x248, out[i].off);
		w32(img + 0x24c, out[i].len);
		expect_direct_reject(f, img, len, "outside");
	}
	/* No payload named at all: the kernel's own 64-bit entry. */
	w32(img + 0x248, 0);
	w32(img + 0x24c, 0);
	assert_int_equal(load_dir(f, img, len, NULL, 0, NULL), 0);
	assert_int_equal(f->st.rip, BOOT_KERNEL_ADDR + 0x200);
	w32(img + 0x248, (uint32_t)pm_len - 8);
	w32(img + 0x24c, 9);
	expect_direct_reject(f, img, len, "outside");
	w32(img + 0x248, (uint32_t)pm_len - 8);
	w32(img + 0x24c, 8); /* inside, but not XZ */
	assert_int_equal(load_dir(f, img, len, NULL, 0, NULL), 0);
	free(img);

	/* A stream that asks liblzma for a 1 GiB dictionary: refused by the memory limit. Patch the
	 * LZMA2 properties in the block header (after the stream header) and fix its CRC32. */
	uint8_t *h = payload + 12;
	size_t hsize = ((size_t)h[0] + 1) * 4, i = 2;
	unsigned nfilters = (h[1] & 3) + 1;
	for (unsigned k = 0; k < (unsigned)!!(h[1] & 0x40) + !!(h[1] & 0x80); k++)
		while (h[i++] & 0x80) /* skip the compressed/uncompressed size varints */
			;
	for (unsigned k = 0; k < nfilters; k++) {
		uint8_t id = h[i++], psize = h[i++];
		if (id == 0x21) {
			assert_int_equal(psize, 1);
			h[i] = 36; /* dictionary 2 << (36 / 2 + 11) = 1 GiB */
		}
		i += psize;
	}
	w32(h + hsize - 4, lzma_crc32(h, hsize - 4, 0));
	img = make_direct_bz(payload, plen, &len);
	expect_direct_reject(f, img, len, "MiB to decompress");
	free(img);
	free(payload);
	free(elf);
}

static void test_direct_rejects_elf(void **state)
{
	struct fixture *f = *state;
	struct seg s[2];
	size_t len;
	uint8_t *elf, *img;

#define REJECT_ELF(mod, want)                                                                      \
	do {                                                                                       \
		dk_segs(s);                                                                        \
		elf = make_dk_elf(s, 2, DK_ENTRY);                                                 \
		mod;                                                                               \
		img = make_direct_from_elf(elf, DK_LEN, &len);                                     \
		expect_direct_reject(f, img, len, want);                                           \
		free(img);                                                                         \
		free(elf);                                                                         \
	} while (0)

	REJECT_ELF(elf[4] = 1, "not an x86-64 ELF");                           /* ELFCLASS32 */
	REJECT_ELF(w16(elf + 18, 3), "not an x86-64 ELF");                     /* EM_386 */
	REJECT_ELF(w16(elf + 16, 3), "not an executable");                     /* ET_DYN */
	REJECT_ELF(elf[5] = 2, "little-endian");                               /* big-endian */
	REJECT_ELF(w16(elf + 56, 0), "program headers");                       /* none */
	REJECT_ELF(w64(elf + 32, DK_LEN - 8), "outside the file");             /* phdr table */
	REJECT_ELF(w64(elf + 64 + 8, DK_LEN - 0x10), "outside the file");      /* p_offset */
	REJECT_ELF(w64(elf + 64 + 8, UINT64_MAX - 0x100), "outside the file"); /* wraps */
	REJECT_ELF(w64(elf + 64 + 32, DK_TEXT_SIZE + 1), "larger than its memory size");
	REJECT_ELF(w64(elf + 64 + 24, 0x10000000), "outside the guest's RAM"); /* 256 MiB */
	REJECT_ELF(w64(elf + 64 + 24, UINT64_MAX - 0xfff), "outside the guest's RAM");
	REJECT_ELF(w64(elf + 64 + 40, UINT64_MAX), "outside the guest's RAM"); /* memsz wraps */
	REJECT_ELF(w64(elf + 120 + 24, RAM_SIZE - 0x1000), "outside the guest's RAM"); /* bss */
	REJECT_ELF(w64(elf + 64 + 24, 0x8000), "overlaps the loader's area");
	REJECT_ELF((w32(elf + 64, 4), w32(elf + 120, 4)), "no loadable segment");
#undef REJECT_ELF

	/* An ELF header cut short inside the payload. */
	dk_segs(s);
	elf = make_dk_elf(s, 2, DK_ENTRY);
	img = make_direct_from_elf(elf, 40, &len);
	expect_direct_reject(f, img, len, "truncated");
	free(img);
	free(elf);
}

/* More than guest RAM: refused before anything is loaded. */
static void test_direct_too_big(void **state)
{
	(void)state;
	struct guest_mem small;
	struct cpu_state st;
	char err[256];
	assert_int_equal(gmem_init(&small, 4 * MIB, err, sizeof(err)), 0);
	size_t big = 4 * MIB + 1, len;
	uint8_t *data = calloc(1, big);
	assert_non_null(data);
	memcpy(data, "\177ELF", 4);
	uint8_t *img = make_direct_from_elf(data, big, &len);
	struct boot_params_in in = {img, len, NULL, 0, NULL, 1, true};
	cpu_state_reset(&st, true);
	assert_int_equal(boot_load(&small, &in, &st, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "too big"));
	assert_non_null(strstr(err, "guest's RAM"));
	free(img);

	/* Exactly RAM-sized is decompressed (and then fails as an ELF file, not for its size). */
	img = make_direct_from_elf(data, 4 * MIB, &len);
	in.kernel = img;
	in.kernel_len = len;
	assert_int_equal(boot_load(&small, &in, &st, err, sizeof(err)), -1);
	assert_null(strstr(err, "too big"));
	free(img);
	free(data);
	gmem_destroy(&small);
}

/* xz_decompress itself: the output bound, trailing bytes, a hint that lies. */
static void test_xz_decompress(void **state)
{
	(void)state;
	uint8_t data[10000], *out;
	size_t plen, out_len;
	char err[128];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = pattern(i * i);
	uint8_t *xz = xz_payload(data, sizeof(data), &plen); /* 4 trailing size bytes */
	assert_true(xz_is_xz(xz, plen));
	assert_false(xz_is_xz(xz, 5));
	assert_false(xz_is_xz(NULL, 0));
	static const size_t hints[] = {0, 1, sizeof(data), sizeof(data) - 1, 1u << 30};
	for (size_t h = 0; h < sizeof(hints) / sizeof(hints[0]); h++) {
		assert_int_equal(xz_decompress(xz, plen, sizeof(data), hints[h], &out, &out_len,
					       err, sizeof(err)),
				 0);
		assert_int_equal(out_len, sizeof(data));
		assert_memory_equal(out, data, sizeof(data));
		free(out);
	}
	assert_int_equal(
	    xz_decompress(xz, plen, sizeof(data) - 1, 0, &out, &out_len, err, sizeof(err)),
	    XZ_TOO_BIG);
	assert_null(out);
	/* Cut inside the index, with the output exactly full: truncated, not too big. */
	for (size_t cut = 5; cut < 12; cut++) {
		assert_int_equal(xz_decompress(xz, plen - cut, sizeof(data), sizeof(data), &out,
					       &out_len, err, sizeof(err)),
				 -1);
		assert_non_null(strstr(err, "truncated"));
	}
	assert_int_equal(
	    xz_decompress(data, sizeof(data), 1 << 20, 0, &out, &out_len, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not an XZ stream"));
	assert_int_equal(xz_decompress(xz, plen, 0, 0, &out, &out_len, err, sizeof(err)), -1);
	free(xz);
}

/* ---- PVH -------------------------------------------------------------------------------- */

struct hvm_start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
	uint32_t memmap_entries, reserved;
};

static void test_pvh_load(void **state)
{
	struct fixture *f = *state;
	size_t len, initrd_len = 5000;
	uint8_t *img = make_pvh(&len), *initrd = malloc(initrd_len);
	memset(initrd, 0x5a, initrd_len);
	/* Dirty the bss so the test sees the loader clear it. */
	memset(gmem_ptr(&f->mem, PVH_PADDR + 0x2000, 0x1000), 0xcc, 0x1000);

	assert_int_equal(load(f, img, len, initrd, initrd_len, "pvh cmdline"), 0);
	assert_memory_equal(gp(f, PVH_PADDR, 0x2000), img + PVH_DATA_OFF, 0x2000);
	assert_memory_equal(gp(f, PVH_PADDR + 0x2000, 0x1000), (uint8_t[0x1000]){0}, 0x1000);

	struct hvm_start_info si;
	memcpy(&si, gp(f, BOOT_INFO_ADDR, sizeof(si)), sizeof(si));
	assert_int_equal(si.magic, 0x336ec578);
	assert_int_equal(si.version, 1);
	assert_int_equal(si.cmdline_paddr, BOOT_CMDLINE_ADDR);
	assert_string_equal((const char *)gp(f, si.cmdline_paddr, 12), "pvh cmdline");
	assert_int_equal(si.rsdp_paddr, 0);
	assert_int_equal(si.nr_modules, 1);
	const uint8_t *mod = gp(f, si.modlist_paddr, 32);
	uint64_t rd = r64(mod);
	assert_int_equal(rd, (RAM_SIZE - initrd_len) & ~(PAGE_SIZE - 1));
	assert_int_equal(r64(mod + 8), initrd_len);
	assert_memory_equal(gp(f, rd, initrd_len), initrd, initrd_len);
	check_e820(gp(f, si.memmap_paddr, 4 * 24), si.memmap_entries, 24, 16);

	assert_int_equal(f->st.rip, PVH_ENTRY);
	assert_int_equal(f->st.gpr[GPR_RBX], BOOT_INFO_ADDR);
	check_flat32(&f->st);
	/* The GDT the flat selectors name is in memory. */
	assert_int_equal(f->st.gdt.base, BOOT_GDT_ADDR);
	assert_int_equal(r64(gp(f, BOOT_GDT_ADDR + f->st.seg[SEG_CS].selector, 8)),
			 0x00cf9b000000ffffull);
	assert_int_equal(r64(gp(f, BOOT_GDT_ADDR + f->st.seg[SEG_DS].selector, 8)),
			 0x00cf93000000ffffull);
	free(img);
	free(initrd);
}

static void test_pvh_note_forms(void **state)
{
	struct fixture *f = *state;
	size_t len;
	struct seg s = pvh_load_seg();
	/* An 8-byte descriptor, as some kernels write it. */
	uint8_t *img = make_pvh_segs(&s, 8, &len);
	assert_int_equal(boot_detect(img, len), BOOT_FMT_PVH);
	assert_int_equal(load(f, img, len, NULL, 0, NULL), 0);
	assert_int_equal(f->st.rip, PVH_ENTRY);
	assert_int_equal(r32(gp(f, BOOT_INFO_ADDR + 12, 4)), 0); /* no modules */
	/* An 8-byte entry above 4 GiB is not a usable PVH entry. */
	w64(img + PVH_NOTE_OFF + 16, 1ull << 32);
	assert_int_equal(boot_detect(img, len), BOOT_FMT_UNKNOWN);
	struct boot_params_in in = {img, len, NULL, 0, NULL, 1};
	assert_int_equal(boot_load_pvh(&f->mem, &in, &f->st, f->err, sizeof(f->err)), -1);
	assert_non_null(strstr(f->err, "PVH entry note"));
	free(img);
	/* A note preceded by another, with an odd-sized name that needs padding. */
	img = make_pvh(&len);
	uint8_t *n = img + PVH_NOTE_OFF;
	w32(n, 5);
	w32(n + 4, 3);
	w32(n + 8, 1);
	memcpy(n + 12, "GNU1", 5);
	put_xen_note(n + 12 + 8 + 4, 4, PVH_ENTRY);
	w64(img + 64 + 56 + 32, 24 + 20); /* PT_NOTE p_filesz */
	assert_int_equal(boot_detect(img, len), BOOT_FMT_PVH);
	free(img);
}

static void test_pvh_initrd_below_segment(void **state)
{
	struct fixture *f = *state;
	size_t len;
	/* A segment at the very top of RAM pushes the initrd below it. */
	struct seg s = {1, PVH_DATA_OFF, RAM_SIZE - 0x3000, 0x2000, 0x3000, 0x1000};
	uint8_t *img = make_pvh_segs(&s, 4, &len);
	put_xen_note(img + PVH_NOTE_OFF, 4, RAM_SIZE - 0x3000);
	uint8_t initrd[100] = {1};
	assert_int_equal(load(f, img, len, initrd, sizeof(initrd), NULL), 0);
	const uint8_t *mod = gp(f, BOOT_INFO_ADDR + 0x40, 32);
	assert_int_equal(r64(mod), RAM_SIZE - 0x4000);
	free(img);
}

static void test_pvh_rejects(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *img;
	struct seg s;

#define REJECT(mod, want)                                                                          \
	do {                                                                                       \
		s = pvh_load_seg();                                                                \
		mod;                                                                               \
		img = make_pvh_segs(&s, 4, &len);                                                  \
		expect_reject(f, img, len, want);                                                  \
		free(img);                                                                         \
	} while (0)

	REJECT(s.filesz = 0x2001 + 0x1000, "larger than its memory size");
	REJECT(s.memsz = s.filesz = 0x2001 + 0x1000, "outside the file");
	REJECT(s.offset = UINT64_MAX - 0x10, "outside the file");
	REJECT(s.paddr = 0x10000000, "outside the guest's RAM");
	REJECT(s.paddr = RAM_SIZE - 0x1000, "outside the guest's RAM");
	REJECT(s.paddr = UINT64_MAX - 0x1000, "outside the guest's RAM");
	REJECT(s.memsz = UINT64_MAX, "outside the guest's RAM");
	REJECT(s.paddr = BOOT_INFO_ADDR, "overlaps the loader's area");
	REJECT(s.paddr = BOOT_CMDLINE_ADDR - 0x1000, "overlaps the loader's area");
	REJECT(s.paddr = 0xf0000, "overlaps the loader's area");
	REJECT(s.paddr = 0x2000000, "not in a loaded segment");
	REJECT(s.type = 6, "no loadable segment");
#undef REJECT

	/* Broken ELF headers on an otherwise valid image. */
	img = make_pvh(&len);
	struct boot_params_in in = {img, len, NULL, 0, NULL, 1};
	struct {
		size_t off, size;
		uint64_t val;
		const char *want;
	} bad[] = {
	    {32, 8, UINT64_MAX - 8, "program headers"}, /* e_phoff */
	    {32, 8, PVH_LEN - 56, "program headers"},
	    {56, 2, 0, "program headers"}, /* e_phnum */
	    {56, 2, 0xffff, "program headers"},
	    {54, 2, 16, "program header size"}, /* e_phentsize */
	    {16, 2, 1, "not an executable"},    /* e_type */
	    {18, 2, 40, "not for x86"},         /* e_machine */
	    {4, 1, 7, "unknown class"},
	    {5, 1, 2, "little-endian"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t save[8];
		memcpy(save, img + bad[i].off, bad[i].size);
		memcpy(img + bad[i].off, &bad[i].val, bad[i].size);
		assert_int_equal(boot_load_pvh(&f->mem, &in, &f->st, f->err, sizeof(f->err)), -1);
		if (!strstr(f->err, bad[i].want))
			fail_msg("case %zu: \"%s\"", i, f->err);
		memcpy(img + bad[i].off, save, bad[i].size);
	}
	/* Truncations anywhere must fail cleanly (most no longer look like PVH at all). */
	for (size_t l = 0; l < PVH_DATA_OFF + 0x2000; l += 61) {
		assert_int_equal(load(f, img, l, NULL, 0, NULL), -1);
		assert_true(f->err[0]);
	}
	/* A note whose sizes run past its segment. */
	w32(img + PVH_NOTE_OFF + 4, 0xfffffff0);
	assert_int_equal(boot_detect(img, len), BOOT_FMT_UNKNOWN);
	w32(img + PVH_NOTE_OFF + 4, 4);
	w32(img + PVH_NOTE_OFF, 0xffffffff);
	assert_int_equal(boot_detect(img, len), BOOT_FMT_UNKNOWN);
	w32(img + PVH_NOTE_OFF, 4);
	/* Command line too long, and one of the maximal length. */
	char *cl = malloc(BOOT_CMDLINE_MAX + 1);
	memset(cl, 'x', BOOT_CMDLINE_MAX);
	cl[BOOT_CMDLINE_MAX] = 0;
	assert_int_equal(load(f, img, len, NULL, 0, cl), -1);
	assert_non_null(strstr(f->err, "command line"));
	cl[BOOT_CMDLINE_MAX - 1] = 0;
	assert_int_equal(load(f, img, len, NULL, 0, cl), 0);
	free(cl);
	/* An initrd that cannot fit beside the kernel. */
	size_t big = RAM_SIZE - 2 * MIB;
	uint8_t *initrd = calloc(1, big);
	assert_int_equal(load(f, img, len, initrd, big, NULL), -1);
	assert_non_null(strstr(f->err, "initrd"));
	free(initrd);
	free(img);
}

/* ---- multiboot -------------------------------------------------------------------------- */

static void check_mb_info(struct fixture *f, uint64_t initrd_len)
{
	const uint8_t *mbi = gp(f, BOOT_INFO_ADDR, 88);
	uint32_t flags = r32(mbi);
	assert_int_equal(flags & 0x24d, 0x24d); /* MEM, CMDLINE, MODS, MMAP, LOADER_NAME */
	assert_int_equal(r32(mbi + 4), 639);
	assert_int_equal(r32(mbi + 8), (RAM_SIZE - MIB) / 1024);
	assert_int_equal(r32(mbi + 16), BOOT_CMDLINE_ADDR);
	assert_int_equal(r32(mbi + 20), initrd_len ? 1 : 0);
	if (initrd_len) {
		const uint8_t *mod = gp(f, r32(mbi + 24), 16);
		uint32_t start = r32(mod);
		assert_int_equal(start % PAGE_SIZE, 0);
		assert_int_equal(r32(mod + 4), start + initrd_len);
		assert_string_equal((const char *)gp(f, r32(mod + 8), 7), "initrd");
	}
	uint32_t mmap_len = r32(mbi + 44);
	assert_int_equal(mmap_len, 4 * 24);
	const uint8_t *mm = gp(f, r32(mbi + 48), mmap_len);
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(r32(mm + 24 * i), 20);
	check_e820(mm + 4, mmap_len / 24, 24, 16);
	assert_string_equal((const char *)gp(f, r32(mbi + 64), 6), "ferry");
	assert_int_equal(f->st.gpr[GPR_RAX], 0x2badb002);
	assert_int_equal(f->st.gpr[GPR_RBX], BOOT_INFO_ADDR);
	check_flat32(&f->st);
}

static void test_multiboot_elf(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *img = make_mb_elf(0, &len), initrd[3000];
	memset(initrd, 0x77, sizeof(initrd));
	memset(gmem_ptr(&f->mem, 0x101000, 0x1000), 0xcc, 0x1000);
	assert_int_equal(load(f, img, len, initrd, sizeof(initrd), "mb args"), 0);
	assert_memory_equal(gp(f, 0x100000, 0x1000), img + 0x1000, 0x1000);
	assert_memory_equal(gp(f, 0x101000, 0x1000), (uint8_t[0x1000]){0}, 0x1000);
	assert_string_equal((const char *)gp(f, BOOT_CMDLINE_ADDR, 8), "mb args");
	assert_int_equal(f->st.rip, 0x100000);
	check_mb_info(f, sizeof(initrd));
	const uint8_t *mod = gp(f, BOOT_INFO_ADDR + 0x80, 16);
	assert_memory_equal(gp(f, r32(mod), sizeof(initrd)), initrd, sizeof(initrd));
	free(img);
}

static void test_multiboot_address_fields(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *img = make_mb_raw(NULL, &len);
	memset(gmem_ptr(&f->mem, MB_RAW_ADDR + MB_RAW_LEN, 0x1000), 0xcc, 0x1000);
	assert_int_equal(load(f, img, len, NULL, 0, NULL), 0);
	assert_memory_equal(gp(f, MB_RAW_ADDR, len), img, len);
	assert_memory_equal(gp(f, MB_RAW_ADDR + len, 0x1800 - len), (uint8_t[0x1000]){0},
			    0x1800 - len);
	assert_int_equal(f->st.rip, MB_RAW_ADDR + 0x100);
	check_mb_info(f, 0);
	free(img);

	/* load_end_addr set: only part of the file is loaded. A 64-bit ELF may still use the
	 * address fields. */
	uint32_t addr[5] = {MB_RAW_ADDR + 0x40, MB_RAW_ADDR, MB_RAW_ADDR + 0x400, 0,
			    MB_RAW_ADDR + 0x40};
	img = make_mb_raw(addr, &len);
	assert_int_equal(load(f, img, len, NULL, 0, NULL), 0);
	free(img);
}

static void test_multiboot_rejects(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *img = make_mb_elf(0, &len);
	w32(img + 0x108, 0x12345678);
	expect_reject(f, img, len, "bad checksum");
	free(img);

	img = make_mb_elf(1, &len);
	expect_reject(f, img, len, "64-bit ELF");
	free(img);

	img = make_mb_elf(0, &len);
	put_mb_header(img + 0x100, 0x7 | (1u << 3), NULL);
	expect_reject(f, img, len, "features");
	free(img);

	/* No address fields and not ELF. */
	img = make_mb_raw(NULL, &len);
	put_mb_header(img + 0x40, 0x3, NULL);
	expect_reject(f, img, len, "not ELF");
	free(img);

	/* The address-field header cut by the end of the file. */
	img = make_mb_raw(NULL, &len);
	put_mb_header(img + len - 16, 0x10000, NULL);
	put_mb_header(img + 0x40, 0, NULL);
	w32(img + 0x40, 0);
	expect_reject(f, img, len, "truncated");
	free(img);

	const struct {
		uint32_t addr[5];
		const char *want;
	} bad[] = {
	    /* header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr */
	    {{MB_RAW_ADDR, MB_RAW_ADDR + 4, 0, 0, MB_RAW_ADDR + 4}, "outside the file"},
	    {{MB_RAW_ADDR + 0x1000, MB_RAW_ADDR, 0, 0, MB_RAW_ADDR}, "outside the file"},
	    {{MB_RAW_ADDR + 0x40, MB_RAW_ADDR, MB_RAW_ADDR + 0x801, 0, MB_RAW_ADDR},
	     "load_end_addr"},
	    {{MB_RAW_ADDR + 0x40, MB_RAW_ADDR, MB_RAW_ADDR - 1, 0, MB_RAW_ADDR}, "load_end_addr"},
	    {{MB_RAW_ADDR + 0x40, MB_RAW_ADDR, 0, MB_RAW_ADDR + 0x10, MB_RAW_ADDR}, "bss_end_addr"},
	    {{0xfffff040, 0xfffff000, 0, 0, 0xfffff000}, "outside the guest's RAM"},
	    {{0x10000040, 0x10000000, 0, 0xffffffff, 0x10000000}, "outside the guest's RAM"},
	    {{0x7040, 0x7000, 0, 0, 0x7000}, "overlaps the loader's area"},
	    {{MB_RAW_ADDR + 0x40, MB_RAW_ADDR, 0, 0, MB_RAW_ADDR + 0x800}, "entry point"},
	    {{0x40, 0, 0x40, 0, 0}, "overlaps the loader's area"},
	    {{MB_RAW_ADDR + 0x40, MB_RAW_ADDR + 0x40, MB_RAW_ADDR + 0x40, 0, MB_RAW_ADDR}, "empty"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		img = make_mb_raw(bad[i].addr, &len);
		int rc = load(f, img, len, NULL, 0, NULL);
		if (rc != -1 || !strstr(f->err, bad[i].want))
			fail_msg("case %zu: rc %d \"%s\"", i, rc, f->err);
		free(img);
	}

	/* Calling the multiboot loader on something else. */
	uint8_t junk[64] = {0};
	struct boot_params_in in = {junk, sizeof(junk), NULL, 0, NULL, 1};
	assert_int_equal(boot_load_multiboot(&f->mem, &in, &f->st, f->err, sizeof(f->err)), -1);
	assert_non_null(strstr(f->err, "no multiboot header"));

	/* An initrd too big for RAM. */
	img = make_mb_elf(0, &len);
	size_t big = RAM_SIZE;
	uint8_t *initrd = calloc(1, big);
	assert_int_equal(load(f, img, len, initrd, big, NULL), -1);
	assert_non_null(strstr(f->err, "initrd"));
	free(initrd);
	free(img);
}

/* ---- e820, page tables, MP table ------------------------------------------------------- */

static void test_e820(void **state)
{
	struct fixture *f = *state;
	struct e820_entry map[E820_MAX];
	unsigned n = e820_build(&f->mem, map, E820_MAX);
	check_e820((const uint8_t *)map, n, sizeof(map[0]), 16);
	assert_int_equal(e820_build(&f->mem, map, 2), 2);

	struct guest_mem big;
	char err[128];
	assert_int_equal(gmem_init(&big, 4ull << 30, err, sizeof(err)), 0);
	n = e820_build(&big, map, E820_MAX);
	assert_int_equal(n, 5);
	assert_int_equal(map[3].addr + map[3].size, MEM_HOLE_START);
	assert_int_equal(map[4].addr, MEM_4G);
	assert_int_equal(map[4].size, (4ull << 30) - MEM_HOLE_START);
	assert_int_equal(map[4].type, E820_RAM);
	gmem_destroy(&big);
}

static void test_long64_page_tables(void **state)
{
	struct fixture *f = *state;
	struct cpu_state st;
	cpu_state_reset(&st, true);
	assert_int_equal(x86_setup_long64(&f->mem, &st, BOOT_PT_ADDR, BOOT_GDT_ADDR), 0);
	const uint8_t *pt = gp(f, BOOT_PT_ADDR, 6 * PAGE_SIZE);
	assert_int_equal(r64(pt), (BOOT_PT_ADDR + 0x1000) | 3);
	assert_int_equal(r64(pt + 8), 0);
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(r64(pt + 0x1000 + 8 * i),
				 (BOOT_PT_ADDR + 0x2000 + 0x1000 * i) | 3);
	assert_int_equal(r64(pt + 0x1000 + 8 * 4), 0);
	assert_int_equal(r64(pt + 0x2000), 0x83);
	assert_int_equal(r64(pt + 0x2000 + 8), 0x200083);
	assert_int_equal(r64(pt + 0x5000 + 511 * 8), 0xffe00083ull);
	assert_int_equal(st.cr3, BOOT_PT_ADDR);
	assert_int_equal(st.rflags, 0x2);
	/* Tables that would not be RAM, or not aligned. */
	assert_int_equal(x86_setup_long64(&f->mem, &st, RAM_SIZE - PAGE_SIZE, BOOT_GDT_ADDR), -1);
	assert_int_equal(x86_setup_long64(&f->mem, &st, BOOT_PT_ADDR + 8, BOOT_GDT_ADDR), -1);
	assert_int_equal(x86_setup_long64(&f->mem, &st, BOOT_PT_ADDR, UINT64_MAX - 8), -1);
}

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	while (n--)
		s += *p++;
	return s;
}

static void test_mptable(void **state)
{
	struct fixture *f = *state;
	const unsigned ncpus = 3;
	assert_int_equal(mptable_write(&f->mem, ncpus, f->err, sizeof(f->err)), 0);
	const uint8_t *fps = gp(f, BOOT_MPTABLE_ADDR, 16);
	assert_memory_equal(fps, "_MP_", 4);
	assert_int_equal(fps[8], 1);
	assert_int_equal(fps[9], 4);
	assert_int_equal(sum(fps, 16), 0);
	uint32_t cfg = r32(fps + 4);
	assert_true(cfg >= 0xf0000 && cfg < 0x100000);
	const uint8_t *hdr = gp(f, cfg, 44);
	assert_memory_equal(hdr, "PCMP", 4);
	uint16_t len = r16(hdr + 4), count = r16(hdr + 34);
	assert_int_equal(sum(gp(f, cfg, len), len), 0);
	assert_memory_equal(hdr + 8, "FERRY", 5);
	assert_int_equal(r32(hdr + 36), 0xfee00000);
	assert_int_equal(count, ncpus + 2 + 1 + 15 + 31 * 4 + 2);
	assert_int_equal(len, 44 + 20 * ncpus + 8 * (count - ncpus));

	/* Walk the entries. */
	const uint8_t *e = hdr + 44;
	unsigned cpus = 0, irqs = 0, pci_irqs = 0, lints = 0, buses = 0;
	for (unsigned i = 0; i < count; i++) {
		switch (e[0]) {
		case 0:
			assert_int_equal(e[1], cpus);
			assert_int_equal(e[3], cpus == 0 ? 3 : 1);
			cpus++;
			e += 20;
			continue;
		case 1: /* PCI is bus 0 (Linux matches MP bus IDs to PCI bus numbers), ISA bus 1 */
			assert_int_equal(e[1], buses);
			assert_memory_equal(e + 2, buses == 0 ? "PCI   " : "ISA   ", 6);
			buses++;
			break;
		case 2:
			assert_int_equal(e[1], ncpus);
			assert_int_equal(e[2], 0x11);
			assert_int_equal(r32(e + 4), 0xfec00000);
			break;
		case 3:
			assert_int_equal(e[6], ncpus);
			if (e[4] == 0) { /* PCI: (slot << 2) | pin, level, active low */
				unsigned slot = e[5] >> 2, pin = e[5] & 3;
				assert_true(slot >= 1 && slot < PCI_SLOTS);
				assert_int_equal(r16(e + 2), 0x000f);
				assert_int_equal(e[7], PCI_INTX_GSI(slot, pin));
				pci_irqs++;
				break;
			}
			assert_int_equal(e[4], 1);
			assert_int_not_equal(e[5], 2);
			assert_int_equal(e[7], e[5] == 0 ? 2 : e[5]);
			irqs++;
			break;
		case 4:
			assert_int_equal(e[7], lints);
			assert_int_equal(e[1], lints == 0 ? 3 : 1);
			lints++;
			break;
		default:
			fail_msg("unknown MP entry type %u", e[0]);
		}
		e += 8;
	}
	assert_int_equal(cpus, ncpus);
	assert_int_equal(irqs, 15);
	assert_int_equal(pci_irqs, 31 * 4);
	assert_int_equal(buses, 2);
	assert_int_equal(lints, 2);

	assert_int_equal(mptable_write(&f->mem, 0, f->err, sizeof(f->err)), -1);
	assert_int_equal(mptable_write(&f->mem, 255, f->err, sizeof(f->err)), -1);
	assert_int_equal(mptable_write(&f->mem, 254, f->err, sizeof(f->err)), 0);
}

static void test_small_error_buffer(void **state)
{
	struct fixture *f = *state;
	uint8_t junk[16] = {0};
	struct boot_params_in in = {junk, sizeof(junk), NULL, 0, NULL, 1};
	char err[8];
	assert_int_equal(boot_load(&f->mem, &in, &f->st, err, sizeof(err)), -1);
	assert_int_equal(strlen(err), 7);
	assert_int_equal(boot_load(&f->mem, &in, &f->st, NULL, 0), -1);
	in.initrd_len = 5; /* and no initrd pointer */
	assert_int_equal(boot_load(&f->mem, &in, &f->st, err, sizeof(err)), -1);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_detect),
	    T(test_unknown_file),
	    T(test_bzimage_load),
	    T(test_bzimage_no_initrd_no_cmdline),
	    T(test_bzimage_initrd_limits),
	    T(test_bzimage_rejects),
	    T(test_direct_load),
	    T(test_direct_virtual_entry),
	    T(test_direct_fallback),
	    T(test_direct_rejects_payload),
	    T(test_direct_rejects_elf),
	    T(test_direct_too_big),
	    T(test_xz_decompress),
	    T(test_pvh_load),
	    T(test_pvh_note_forms),
	    T(test_pvh_initrd_below_segment),
	    T(test_pvh_rejects),
	    T(test_multiboot_elf),
	    T(test_multiboot_address_fields),
	    T(test_multiboot_rejects),
	    T(test_e820),
	    T(test_long64_page_tables),
	    T(test_mptable),
	    T(test_small_error_buffer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
