/* diff-test: runs every instruction form on the host CPU and in the soft engine from the same
 * random states and compares the results.
 *
 *   diff-test [--cases N] [--seed S] [--form SUBSTRING] [--case K] [--show N] [--max-reports N]
 *             [--list] [--stats] [--dump]
 *
 * --show: reproducers printed per form (default 2); --max-reports: in all (default 60). The
 * summary lists every failing form with its first difference.
 *
 * --dump prints each case's input and what the host CPU changed (to check the harness).
 * --stats prints, per form, how often the host CPU raised which exception: a form whose cases
 * all fault natively is a harness bug, not a test.
 * Each case's seed derives from --seed, the form's name and the case number, so a reproducer's
 * command line reruns exactly that case. Ends with "N passed, N failed" over forms. */
#include <Zydis/Zydis.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diff.h"

static struct {
	unsigned cases;
	uint64_t seed;
	const char *form;
	long only_case;
	unsigned show, max_reports;
	bool list, stats, dump, exact;
} opt = {.cases = 200, .seed = 1, .only_case = -1, .show = 2, .max_reports = 60};

/* ---- comparing ---- */

struct diffs {
	char text[8192];
	size_t len;
	unsigned n;
};

__attribute__((format(printf, 2, 3))) static void dput(struct diffs *d, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(d->text + d->len, sizeof(d->text) - d->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		d->len +=
		    (size_t)n < sizeof(d->text) - d->len ? (size_t)n : sizeof(d->text) - d->len - 1;
	d->n++;
}

static const char *const gpr_name[16] = {"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
					 "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};

static const char *flag_str(uint64_t f, char *buf)
{
	static const struct {
		uint64_t bit;
		const char *name;
	} fl[] = {{F_CF, "CF"},  {F_PF, "PF"},     {F_AF, "AF"},   {F_ZF, "ZF"},
		  {F_SF, "SF"},  {F_DF, "DF"},     {F_OF, "OF"},   {0x100, "TF"},
		  {0x200, "IF"}, {0x3000, "IOPL"}, {0x4000, "NT"}, {0x40000, "AC"}};
	buf[0] = 0;
	for (size_t i = 0; i < sizeof(fl) / sizeof(fl[0]); i++)
		if (f & fl[i].bit) {
			strcat(buf, buf[0] ? " " : "");
			strcat(buf, fl[i].name);
		}
	return buf;
}

static const char *exc_str(const struct machine *m, char *buf)
{
	static const char *const names[32] = {
	    [0] = "#DE",  [1] = "#DB",  [3] = "#BP",  [4] = "#OF",  [5] = "#BR",  [6] = "#UD",
	    [7] = "#NM",  [8] = "#DF",  [10] = "#TS", [11] = "#NP", [12] = "#SS", [13] = "#GP",
	    [14] = "#PF", [16] = "#MF", [17] = "#AC", [18] = "#MC", [19] = "#XM"};
	if (m->vector < 0)
		return "none";
	const char *n = m->vector < 32 && names[m->vector] ? names[m->vector] : "#?";
	if (m->vector == 14)
		sprintf(buf, "%s(err 0x%x) at 0x%" PRIx64, n, m->error, m->addr);
	else
		sprintf(buf, "%s(vector %d, err 0x%x)", n, m->vector, m->error);
	return buf;
}

/* RFLAGS bits a user-mode instruction may leave behind: the arithmetic flags, DF, and bits that
 * must stay as they were (TF, IF, IOPL, NT, AC, bit 1). RF is left out: a fault sets it in the
 * saved image. */
#define RFL_CMP (F_CMPMASK | 0x2ull | 0x100 | 0x200 | 0x3000 | 0x4000 | 0x40000)

static void compare(const struct tcase *tc, const struct machine *n, const uint8_t *nmem,
		    const struct machine *s, const uint8_t *smem, struct diffs *d)
{
	char b1[96], b2[96];
	if (n->vector != s->vector ||
	    (n->vector == 14 && (n->addr != s->addr || (n->error & 0x1f) != (s->error & 0x1f))) ||
	    (n->vector >= 0 && n->vector != 14 && n->error != s->error)) {
		dput(d, "  %-12s %-30s %s\n", "exception", exc_str(n, b1), exc_str(s, b2));
		if (n->vector != s->vector)
			return; /* the rest differs as a consequence */
	}
	for (int i = 0; i < 16; i++)
		if (!(tc->undef_gpr & (1u << i)) && n->gpr[i] != s->gpr[i])
			dput(d, "  %-12s 0x%016" PRIx64 "             0x%016" PRIx64 "\n",
			     gpr_name[i], n->gpr[i], s->gpr[i]);
	if (n->rip != s->rip)
		dput(d, "  %-12s 0x%016" PRIx64 "             0x%016" PRIx64 "\n", "rip", n->rip,
		     s->rip);
	uint64_t fm = RFL_CMP & ~(uint64_t)tc->undef;
	if ((n->rflags ^ s->rflags) & fm) {
		char f1[64], f2[64];
		dput(d, "  %-12s 0x%04" PRIx64 " %-24s 0x%04" PRIx64 " %s (compared: %s)\n",
		     "rflags", n->rflags & fm, flag_str(n->rflags & fm, f1), s->rflags & fm,
		     flag_str(s->rflags & fm, f2), flag_str((n->rflags ^ s->rflags) & fm, b1));
	}
	uint32_t nm, sm;
	memcpy(&nm, n->fx + FX_MXCSR, 4);
	memcpy(&sm, s->fx + FX_MXCSR, 4);
	if (nm != sm)
		dput(d, "  %-12s 0x%08x                     0x%08x\n", "mxcsr", nm, sm);
	for (int i = 0; i < 16; i++) {
		if ((tc->xmm_undef & (1u << i)) ||
		    !memcmp(n->fx + FX_XMM(i), s->fx + FX_XMM(i), 16))
			continue;
		uint64_t a[2], b[2];
		memcpy(a, n->fx + FX_XMM(i), 16);
		memcpy(b, s->fx + FX_XMM(i), 16);
		dput(d, "  xmm%-9d %016" PRIx64 "_%016" PRIx64 "  %016" PRIx64 "_%016" PRIx64 "\n",
		     i, a[1], a[0], b[1], b[0]);
	}
	if (tc->f->fl & FF_CMPX87) {
		uint16_t nw, sw;
		memcpy(&nw, n->fx + FX_FCW, 2);
		memcpy(&sw, s->fx + FX_FCW, 2);
		if (nw != sw)
			dput(d, "  %-12s 0x%04x                         0x%04x\n", "fcw", nw, sw);
		memcpy(&nw, n->fx + FX_FSW, 2);
		memcpy(&sw, s->fx + FX_FSW, 2);
		uint16_t fsm = (uint16_t)~tc->fsw_undef;
		if ((nw ^ sw) & fsm)
			dput(d,
			     "  %-12s 0x%04x                         0x%04x (compared bits "
			     "0x%04x)\n",
			     "fsw", nw & fsm, sw & fsm, fsm);
		if (n->fx[FX_FTW] != s->fx[FX_FTW])
			dput(d, "  %-12s 0x%02x                           0x%02x\n",
			     "ftw (abridged)", n->fx[FX_FTW], s->fx[FX_FTW]);
		unsigned top = (n->fx[FX_FSW + 1] >> 3) & 7;
		for (int i = 0; i < 8 && !tc->skip_x87; i++) {
			bool valid = n->fx[FX_FTW] & (1u << ((top + i) & 7));
			if (!valid || !memcmp(n->fx + FX_ST(i), s->fx + FX_ST(i), 10))
				continue;
			uint64_t m1, m2;
			uint16_t e1, e2;
			memcpy(&m1, n->fx + FX_ST(i), 8);
			memcpy(&e1, n->fx + FX_ST(i) + 8, 2);
			memcpy(&m2, s->fx + FX_ST(i), 8);
			memcpy(&e2, s->fx + FX_ST(i) + 8, 2);
			dput(d, "  st%-10d %04x_%016" PRIx64 "        %04x_%016" PRIx64 "\n", i, e1,
			     m1, e2, m2);
		}
	}
	unsigned shown = 0;
	for (uint32_t i = 0; i < SCRATCH_SIZE;) {
		if (nmem[i] == smem[i] || (i >= tc->undef_mem_lo && i < tc->undef_mem_hi)) {
			i++;
			continue;
		}
		uint32_t j = i;
		while (j < SCRATCH_SIZE && j - i < 16 && nmem[j] != smem[j])
			j++;
		if (shown++ < 4) {
			char h1[48] = "", h2[48] = "";
			for (uint32_t k = i; k < j; k++) {
				sprintf(h1 + strlen(h1), "%02x", nmem[k]);
				sprintf(h2 + strlen(h2), "%02x", smem[k]);
			}
			dput(d, "  mem 0x%08" PRIx64 " %-30s %s\n", (uint64_t)(SCRATCH_BASE + i),
			     h1, h2);
		} else {
			d->n++;
		}
		i = j;
	}
}

/* ---- reporting ---- */

static void disasm(const struct tcase *tc, char *out, size_t len)
{
	ZydisDisassembledInstruction di;
	if (ZYAN_SUCCESS(ZydisDisassembleIntel(ZYDIS_MACHINE_MODE_LONG_64, INSN_ADDR, tc->insn,
					       tc->len, &di)))
		snprintf(out, len, "%s", di.text);
	else
		snprintf(out, len, "(not a valid instruction)");
}

static void print_input(const struct tcase *tc)
{
	char b[96];
	for (int i = 0; i < 16; i++)
		printf("%s%-3s=%016" PRIx64 "%s", i % 4 ? "  " : "    ", gpr_name[i], tc->in.gpr[i],
		       i % 4 == 3 ? "\n" : "");
	uint32_t mx;
	memcpy(&mx, tc->in.fx + FX_MXCSR, 4);
	printf("    rflags=0x%" PRIx64 " (%s)  mxcsr=0x%08x\n", tc->in.rflags,
	       flag_str(tc->in.rflags & F_CMPMASK, b), mx);
	if (tc->has_mem) {
		printf("    memory operand at 0x%" PRIx64 ":", tc->ea);
		unsigned n = tc->f->msize > 16 ? 16 : tc->f->msize ? tc->f->msize : 8, shown = 0;
		for (unsigned i = 0; i < n; i++)
			if (in_scratch(tc->ea + i, 1) && ++shown)
				printf(" %02x", tc->mem[tc->ea + i - SCRATCH_BASE]);
			else
				printf(" --");
		if (!shown)
			printf(" (outside the scratch area)");
		printf("\n");
	}
	if (tc->f->fl & FF_STACK && in_scratch(tc->in.gpr[4], 16)) {
		uint64_t a, c;
		memcpy(&a, tc->mem + (tc->in.gpr[4] - SCRATCH_BASE), 8);
		memcpy(&c, tc->mem + (tc->in.gpr[4] - SCRATCH_BASE) + 8, 8);
		printf("    stack [rsp]=%016" PRIx64 " [rsp+8]=%016" PRIx64 "\n", a, c);
	}
	int xr[3] = {-1, -1, -1};
	if (tc->f->regk == K_XMM)
		xr[0] = tc->reg;
	if (tc->f->rmk == K_XMM && !tc->has_mem)
		xr[1] = tc->rm;
	if (tc->f->lanes != L_INT || xr[0] >= 0 || xr[1] >= 0)
		xr[2] = 0; /* implicit in some forms */
	for (int k = 0; k < 3; k++) {
		if (xr[k] < 0 || (k && xr[k] == xr[0]) || (k == 2 && xr[2] == xr[1]))
			continue;
		uint64_t q[2];
		memcpy(q, tc->in.fx + FX_XMM(xr[k]), 16);
		printf("    xmm%d=%016" PRIx64 "_%016" PRIx64 "\n", xr[k], q[1], q[0]);
	}
	if (tc->f->fl & FF_CMPX87) {
		uint16_t cw, sw;
		memcpy(&cw, tc->in.fx + FX_FCW, 2);
		memcpy(&sw, tc->in.fx + FX_FSW, 2);
		unsigned top = (sw >> 11) & 7;
		printf("    fcw=0x%04x fsw=0x%04x (top %u) ftw=0x%02x", cw, sw, top,
		       tc->in.fx[FX_FTW]);
		for (int i = 0; i < 8; i++) {
			if (!(tc->in.fx[FX_FTW] & (1u << ((top + i) & 7))))
				continue;
			uint64_t m;
			uint16_t e;
			memcpy(&m, tc->in.fx + FX_ST(i), 8);
			memcpy(&e, tc->in.fx + FX_ST(i) + 8, 2);
			printf("%s st%d=%04x_%016" PRIx64, i % 2 ? "" : "\n   ", i, e, m);
		}
		printf("\n");
	}
}

static void report(const struct tcase *tc, unsigned k, const char *what, const struct diffs *d)
{
	const char *c1 = opt.dump ? "before" : "native", *c2 = opt.dump ? "after" : "soft";
	char dis[128];
	disasm(tc, dis, sizeof(dis));
	printf("\n%s: %s, case %u\n  bytes:", what, tc->f->name, k);
	for (unsigned i = 0; i < tc->len; i++)
		printf(" %02x", tc->insn[i]);
	printf("    %s\n", dis);
	printf("  rerun: build/diff-test --form '%s' --seed %" PRIu64 " --case %u\n", tc->f->name,
	       opt.seed, k);
	printf("  input:\n");
	print_input(tc);
	if (d) {
		printf("  %-12s %-30s %s\n", "differs", c1, c2);
		fputs(d->text, stdout);
		if (d->len >= sizeof(d->text) - 1)
			printf("  ...\n");
	}
}

/* ---- running ---- */

static uint64_t name_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;
	while (*s)
		h = (h ^ (uint8_t)*s++) * 0x100000001b3ull;
	return h;
}

enum verdict { V_PASS, V_FAIL, V_UNIMPL, V_SKIP };

struct outcome {
	enum verdict v;
	unsigned cases, bad, unimpl, gen_fail;
	char first[120]; /* the first difference seen, for the summary */
};

static unsigned reports;

/* Prints a reproducer unless this form or the whole run has shown enough. */
static void maybe_report(const struct tcase *t, unsigned k, const char *what, const struct diffs *d,
			 unsigned *shown, struct outcome *o)
{
	if (!o->first[0]) {
		const char *l = d ? d->text : what;
		while (*l == ' ')
			l++;
		size_t n = strcspn(l, "\n");
		snprintf(o->first, sizeof(o->first), "%.*s", (int)n, l);
	}
	if ((*shown)++ < opt.show && reports++ < opt.max_reports)
		report(t, k, what, d);
}

static struct tcase tc;
static struct machine nat, sft;
static uint8_t nmem[SCRATCH_SIZE], smem[SCRATCH_SIZE];

static struct outcome run_form(const struct form *f)
{
	struct outcome o = {.v = V_PASS};
	unsigned vec_count[33] = {0};
	uint64_t fseed = mix_seed(opt.seed, name_hash(f->name));
	unsigned shown = 0;
	for (unsigned k = 0; k < opt.cases; k++) {
		if (opt.only_case >= 0 && k != (unsigned long)opt.only_case)
			continue;
		if (!gen_case(&tc, f, mix_seed(fseed, k))) {
			if (!o.gen_fail++)
				maybe_report(&tc, k, "GENERATOR ERROR (not a valid encoding)", NULL,
					     &shown, &o);
			continue;
		}
		o.cases++;
		char why[256] = "";
		struct diffs d;
		d.len = 0;
		d.n = 0;
		d.text[0] = 0;
		if (native_run(&tc, &nat, nmem, why, sizeof(why))) {
			o.bad++;
			dput(&d, "  %s\n", why);
			maybe_report(&tc, k, "HARNESS ERROR", &d, &shown, &o);
			continue;
		}
		vec_count[nat.vector < 0 || nat.vector > 31 ? 32 : nat.vector]++;
		if (opt.dump) {
			struct machine before = tc.in;
			before.rip = INSN_ADDR;
			compare(&tc, &before, tc.mem, &nat, nmem, &d);
			report(&tc, k, "NATIVE (before / after)", &d);
			d.len = 0;
			d.n = 0;
			d.text[0] = 0;
		}
		/* Odd cases run the instruction as translated code, even ones in the handler
		 * loop: both paths meet the host CPU on every form. */
		bool translated = k & 1;
		if (soft_run_case(&tc, translated, &sft, smem, why, sizeof(why))) {
			o.bad++;
			char b[96];
			dput(&d, "  native: %s; soft: %s\n", exc_str(&nat, b), why);
			maybe_report(&tc, k, "MISMATCH", &d, &shown, &o);
			continue;
		}
		compare(&tc, &nat, nmem, &sft, smem, &d);
		if (!d.n)
			continue;
		if (sft.vector == 6 && nat.vector != 6) {
			o.unimpl++;
			continue;
		}
		o.bad++;
		maybe_report(&tc, k, translated ? "MISMATCH (translated)" : "MISMATCH", &d, &shown,
			     &o);
	}
	if (opt.stats) {
		printf("stats: %-40s %4u cases, native ok %u", f->name, o.cases, vec_count[32]);
		for (int v = 0; v < 32; v++)
			if (vec_count[v])
				printf(", vector %d: %u", v, vec_count[v]);
		printf("\n");
	}
	if (o.bad || o.gen_fail)
		o.v = V_FAIL;
	else if (o.unimpl)
		o.v = V_UNIMPL;
	return o;
}

static bool selected(const struct form *f)
{
	if (!opt.form)
		return true;
	return opt.exact ? !strcmp(f->name, opt.form) : strstr(f->name, opt.form) != NULL;
}

/* Appends a line to a growing list. */
static void append(char **list, size_t *len, const char *line)
{
	size_t n = strlen(line);
	char *p = realloc(*list, *len + n + 1);
	if (!p) {
		fprintf(stderr, "diff-test: out of memory\n");
		exit(2);
	}
	memcpy(p + *len, line, n + 1);
	*list = p;
	*len += n;
}

static void usage(void)
{
	fprintf(stderr, "usage: diff-test [--cases N] [--seed S] [--form SUBSTRING] [--case K] "
			"[--show N] [--max-reports N] [--list] [--stats] [--dump]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--list")) {
			opt.list = true;
		} else if (!strcmp(a, "--stats")) {
			opt.stats = true;
		} else if (!strcmp(a, "--dump")) {
			opt.dump = true;
		} else if (!v) {
			usage();
		} else if (!strcmp(a, "--cases")) {
			opt.cases = (unsigned)strtoul(v, NULL, 0);
			i++;
		} else if (!strcmp(a, "--seed")) {
			opt.seed = strtoull(v, NULL, 0);
			i++;
		} else if (!strcmp(a, "--form")) {
			opt.form = v;
			i++;
		} else if (!strcmp(a, "--case")) {
			opt.only_case = strtol(v, NULL, 0);
			i++;
		} else if (!strcmp(a, "--show")) {
			opt.show = (unsigned)strtoul(v, NULL, 0);
			i++;
		} else if (!strcmp(a, "--max-reports")) {
			opt.max_reports = (unsigned)strtoul(v, NULL, 0);
			i++;
		} else {
			usage();
		}
	}
	if (opt.only_case >= 0 && (unsigned long)opt.only_case >= opt.cases)
		opt.cases = (unsigned)opt.only_case + 1;

	forms_int();
	forms_ctl();
	forms_sse();
	forms_x87();
	if (!soft_init())
		return 2;
	/* A form's full name selects just that form (names can contain each other). */
	for (unsigned i = 0; opt.form && i < nforms; i++)
		if (!strcmp(forms[i].name, opt.form))
			opt.exact = true;
	if (opt.list) {
		for (unsigned i = 0; i < nforms; i++) {
			const struct form *f = &forms[i];
			if (!selected(f))
				continue;
			bool ok = soft_has_feat(f->feat) && host_has_feat(f->feat);
			printf("%4u  %s%s\n", i, f->name, ok ? "" : "  [not advertised: skipped]");
		}
		return 0;
	}
	/* The harness and its native child take turns: on one CPU each hand-over is a plain
	 * context switch instead of a cross-CPU wake-up (about twice as fast). */
	cpu_set_t one;
	CPU_ZERO(&one);
	int here = sched_getcpu();
	CPU_SET(here >= 0 ? here : 0, &one);
	sched_setaffinity(0, sizeof(one), &one);
	if (!native_init())
		return 2;

	unsigned npass = 0, nfail = 0, nunimpl = 0, nskip = 0, nrun = 0;
	uint64_t ncases = 0, nbad = 0;
	char *failed = calloc(1, 1), *unimpl = calloc(1, 1);
	size_t flen = 0, ulen = 0;
	time_t t0 = time(NULL);
	for (unsigned i = 0; i < nforms; i++) {
		const struct form *f = &forms[i];
		if (!selected(f))
			continue;
		if (!soft_has_feat(f->feat) || !host_has_feat(f->feat)) {
			nskip++;
			continue;
		}
		nrun++;
		struct outcome o = run_form(f);
		ncases += o.cases;
		nbad += o.bad;
		char line[320];
		switch (o.v) {
		case V_PASS:
			npass++;
			break;
		case V_UNIMPL:
			nunimpl++;
			snprintf(line, sizeof(line), "  %s\n", f->name);
			append(&unimpl, &ulen, line);
			break;
		default:
			nfail++;
			snprintf(line, sizeof(line), "  %s (%u of %u cases%s): %s\n", f->name,
				 o.bad, o.cases, o.gen_fail ? ", generator errors" : "", o.first);
			append(&failed, &flen, line);
			break;
		}
	}
	native_fini();
	printf("\n");
	if (nunimpl)
		printf(
		    "unimplemented in the soft engine (#UD where the CPU runs it), %u forms:\n%s",
		    nunimpl, unimpl);
	if (nfail)
		printf("mismatching forms, %u:\n%s", nfail, failed);
	printf("diff-test: %u forms run, %u skipped (not advertised), %" PRIu64 " cases, %" PRIu64
	       " mismatching cases, %u forms unimplemented, %ld s\n",
	       nrun, nskip, ncases, nbad, nunimpl, (long)(time(NULL) - t0));
	printf("%u passed, %u failed\n", npass, nfail + nunimpl);
	free(failed);
	free(unimpl);
	return nfail + nunimpl ? 1 : 0;
}
