/* String instructions: movs, stos, lods, cmps and scas in all four sizes, with and without
 * rep/repe/repne, in both directions, with 64-, 32- (67h) and 16-bit address sizes and an
 * FS/GS override on the source.
 *
 * The repeated forms work a chunk at a time: as many elements as lie in the current page of
 * every operand, on host pointers (memmove, memset, a scan). After each chunk RSI/RDI/RCX are
 * written back, so a fault on the next page finds them as the hardware leaves them (the
 * elements before that page done, RCX counting the rest) and soft_fault's rewind to the
 * instruction restarts it with the rest. A page the soft TLB does not hold, memory-mapped I/O
 * and an element that crosses a page go one element at a time through soft_load/soft_store,
 * which take the slow path (fill, fault, MMIO) as any other access would. */
#include <Zydis/Zydis.h>
#include <string.h>

#include "engine/soft/exec_string.h"

#define RAX_REF ((gpr_ref)(GPR_RAX * 8))
#define RCX_REF ((gpr_ref)(GPR_RCX * 8))
#define RSI_REF ((gpr_ref)(GPR_RSI * 8))
#define RDI_REF ((gpr_ref)(GPR_RDI * 8))

/* A long repeat checks for a stop request after this many bytes, so soft_cpu_stop is heard
 * within microseconds even in a multi-gigabyte rep movs. */
#define BURST 0x10000u

/* ---- host pointers ------------------------------------------------------------------------ */

/* One operand's page, remembered across chunks. The two operands of movs and cmps may share a
 * soft-TLB slot, so the TLB alone would keep evicting one for the other. It is good while the
 * TLB is not flushed (epoch), as the entry it was taken from would be. */
struct page_cache {
	uint64_t page, gen;
	uint8_t *host; /* the page's first byte */
};

/* The host pointer for va if the TLB holds its page for acc (remembering it), else NULL. */
static inline uint8_t *cached_ptr(struct soft_cpu *c, struct page_cache *pc, uint64_t va,
				  enum mem_access acc)
{
	uint64_t page = va & ~0xfffull;
	if (pc->page != page || pc->gen != c->epoch) {
		const struct tlb_entry *e = &c->tlb[(va >> 12) & (TLB_SIZE - 1)];
		if ((acc == ACC_WRITE ? e->tag_write : e->tag_read) != page)
			return NULL;
		pc->page = page;
		pc->gen = c->epoch;
		pc->host = (uint8_t *)(page + e->addend);
	}
	return pc->host + (va & 0xfff);
}

static inline uint64_t load_host(const uint8_t *p, unsigned sz)
{
	uint64_t v = 0;
	memcpy(&v, p, sz);
	return v;
}

/* ---- chunking ----------------------------------------------------------------------------- */

/* Elements from the one at va on, in the direction of travel, that lie in va's page (0 when
 * that element itself crosses into the next page). */
static inline uint64_t page_elems(uint64_t va, unsigned sz, bool down)
{
	unsigned off = (unsigned)(va & 0xfff);
	if (off + sz > 0x1000)
		return 0;
	return down ? off / sz + 1 : (0x1000 - off) / sz;
}

/* Elements from the one at register value a on before the register wraps at the address size
 * (no limit for 64-bit addresses: the page check covers them). */
static inline uint64_t wrap_elems(uint64_t a, unsigned sz, bool down, const struct implicit_env *e)
{
	if (e->asize == 8)
		return ~0ull;
	if (a + sz - 1 > e->amask)
		return 0;
	return down ? a / sz + 1 : (e->amask - a + 1) / sz;
}

static inline uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* The lowest address of a chunk of n elements whose first (in the direction of travel) is at
 * va. */
static inline uint64_t chunk_low(uint64_t va, uint64_t n, unsigned sz, bool down)
{
	return down ? va - (n - 1) * sz : va;
}

/* A long rep is interruptible between iterations, as on hardware: it yields (and resumes from
 * its registers) when the run must stop, an interrupt or NMI may be due, or the run has an
 * instruction budget. */
static inline bool repeat_should_yield(const struct soft_cpu *c)
{
	return (c->exit_request | c->intr_request | c->nmi_request) || c->icount_limit;
}

/* A long repeat yields: leave the registers as they are (they count what is left) and put RIP
 * back on the instruction, which resumes it. It did not retire; under a budget each burst
 * costs one instruction of it, so a run with a budget ends however large the count. */
static void interrupt_repeat(struct soft_cpu *c)
{
	c->rip = c->insn_start;
	c->stop_block = true;
	c->icount--;
	if (c->icount_limit) {
		if (c->icount_limit > c->icount + 1)
			c->icount_limit--;
		else
			c->exit_request = 1; /* the run loop stops and clears it */
	}
}

/* ---- copying ------------------------------------------------------------------------------ */

/* The hardware moves one element after the other. When the destination starts inside the
 * source (above it going up, below it going down), later elements read what earlier ones
 * wrote, which memmove would not reproduce. With the distance at least one element, every
 * byte read is already final, so the result repeats the first `dist` bytes written: it is
 * built by copying ever larger blocks of what is already in place. */
static void copy_up_overlapping(uint8_t *d, const uint8_t *s, size_t n, unsigned sz)
{
	size_t dist = (size_t)(d - s);
	if (dist < sz) {
		for (size_t i = 0; i < n; i += sz) {
			uint64_t t;
			memcpy(&t, s + i, sz);
			memcpy(d + i, &t, sz);
		}
		return;
	}
	memcpy(d, s, dist); /* [s, d) is never written */
	size_t done = dist;
	while (done < n) {
		size_t blk = done / dist * dist;
		size_t m = min64(n - done, blk);
		memcpy(d + done, d + done - blk, m);
		done += m;
	}
}

/* d and s are the low ends of the n bytes; d < s < d + n. */
static void copy_down_overlapping(uint8_t *d, const uint8_t *s, size_t n, unsigned sz)
{
	size_t dist = (size_t)(s - d);
	if (dist < sz) {
		for (size_t i = n; i > 0; i -= sz) {
			uint64_t t;
			memcpy(&t, s + i - sz, sz);
			memcpy(d + i - sz, &t, sz);
		}
		return;
	}
	memcpy(d + n - dist, s + n - dist, dist); /* [d + n, s + n) is never written */
	size_t done = dist;
	while (done < n) {
		size_t blk = done / dist * dist;
		size_t m = min64(n - done, blk);
		memcpy(d + n - done - m, d + n - done - m + blk, m);
		done += m;
	}
}

/* n bytes between the low ends d and s, in the direction of travel. */
static void copy_chunk(uint8_t *d, const uint8_t *s, size_t n, unsigned sz, bool down)
{
	if (!down && d > s && d < s + n)
		copy_up_overlapping(d, s, n, sz);
	else if (down && d < s && s < d + n)
		copy_down_overlapping(d, s, n, sz);
	else
		memmove(d, s, n);
}

/* n bytes (a multiple of sz) of the sz-byte value v. */
static void fill_chunk(uint8_t *d, size_t n, uint64_t v, unsigned sz)
{
	if (sz == 1 || v == ((v & 0xff) * 0x0101010101010101ull & size_mask(sz))) {
		memset(d, (int)(v & 0xff), n);
		return;
	}
	memcpy(d, &v, sz);
	size_t done = sz;
	while (done < n) {
		size_t m = min64(n - done, done);
		memcpy(d + done, d, m);
		done += m;
	}
}

/* ---- the repeated forms ------------------------------------------------------------------- */

static inline bool direction_down(const struct soft_cpu *c)
{
	return (c->rflags & FL_DF) != 0;
}

static inline uint64_t advance(uint64_t a, uint64_t n, unsigned sz, bool down,
			       const struct implicit_env *e)
{
	return (down ? a - n * sz : a + n * sz) & e->amask;
}

static void rep_movs(struct soft_cpu *c, const struct implicit_env *e, unsigned sz)
{
	uint64_t cnt = gpr_read(c, RCX_REF, e->asize);
	if (!cnt)
		return;
	bool down = direction_down(c);
	uint64_t si = gpr_read(c, RSI_REF, e->asize), di = gpr_read(c, RDI_REF, e->asize);
	struct page_cache ps = {TLB_INVALID, 0, NULL}, pd = {TLB_INVALID, 0, NULL};
	uint64_t burst = 0;
	for (;;) {
		uint64_t src = e->base + si, dst = di;
		uint64_t n =
		    min64(min64(cnt, page_elems(src, sz, down)), page_elems(dst, sz, down));
		n = min64(min64(n, wrap_elems(si, sz, down, e)), wrap_elems(di, sz, down, e));
		uint8_t *hs = NULL, *hd = NULL;
		if (n) {
			hs = cached_ptr(c, &ps, chunk_low(src, n, sz, down), ACC_READ);
			hd = hs ? cached_ptr(c, &pd, chunk_low(dst, n, sz, down), ACC_WRITE) : NULL;
		}
		if (hd) {
			copy_chunk(hd, hs, n * sz, sz, down);
		} else {
			/* One element the slow way; then the pages it reached are remembered. */
			n = 1;
			uint64_t v = soft_load(c, src, sz);
			cached_ptr(c, &ps, src, ACC_READ);
			soft_store(c, dst, v, sz);
			cached_ptr(c, &pd, dst, ACC_WRITE);
		}
		si = advance(si, n, sz, down, e);
		di = advance(di, n, sz, down, e);
		cnt -= n;
		gpr_write(c, RSI_REF, si, e->asize);
		gpr_write(c, RDI_REF, di, e->asize);
		gpr_write(c, RCX_REF, cnt, e->asize);
		if (!cnt)
			return;
		burst += n * sz;
		if (burst >= BURST) {
			burst = 0;
			if (repeat_should_yield(c)) {
				interrupt_repeat(c);
				return;
			}
		}
	}
}

static void rep_stos(struct soft_cpu *c, const struct implicit_env *e, unsigned sz)
{
	uint64_t cnt = gpr_read(c, RCX_REF, e->asize);
	if (!cnt)
		return;
	bool down = direction_down(c);
	uint64_t v = gpr_read(c, RAX_REF, sz), di = gpr_read(c, RDI_REF, e->asize);
	struct page_cache pd = {TLB_INVALID, 0, NULL};
	uint64_t burst = 0;
	for (;;) {
		uint64_t n =
		    min64(min64(cnt, page_elems(di, sz, down)), wrap_elems(di, sz, down, e));
		uint8_t *hd = n ? cached_ptr(c, &pd, chunk_low(di, n, sz, down), ACC_WRITE) : NULL;
		if (hd) {
			fill_chunk(hd, n * sz, v, sz);
		} else {
			n = 1;
			soft_store(c, di, v, sz);
			cached_ptr(c, &pd, di, ACC_WRITE);
		}
		di = advance(di, n, sz, down, e);
		cnt -= n;
		gpr_write(c, RDI_REF, di, e->asize);
		gpr_write(c, RCX_REF, cnt, e->asize);
		if (!cnt)
			return;
		burst += n * sz;
		if (burst >= BURST) {
			burst = 0;
			if (repeat_should_yield(c)) {
				interrupt_repeat(c);
				return;
			}
		}
	}
}

/* rep lods is useless but legal: each element is loaded (and may fault); RAX keeps the last. */
static void rep_lods(struct soft_cpu *c, const struct implicit_env *e, unsigned sz)
{
	uint64_t cnt = gpr_read(c, RCX_REF, e->asize);
	bool down = direction_down(c);
	uint64_t si = gpr_read(c, RSI_REF, e->asize);
	for (uint64_t i = 1; cnt; i++) {
		gpr_write(c, RAX_REF, soft_load(c, e->base + si, sz), sz);
		si = advance(si, 1, sz, down, e);
		gpr_write(c, RSI_REF, si, e->asize);
		gpr_write(c, RCX_REF, --cnt, e->asize);
		if (cnt && (i * sz) % BURST == 0 && repeat_should_yield(c)) {
			interrupt_repeat(c);
			return;
		}
	}
}

/* repe/repne cmps and scas: compare element after element until RCX runs out or the
 * comparison ends the repeat (repe: unequal; repne: equal). The flags are those of the last
 * comparison; with RCX = 0 nothing is compared and they stay. scas compares the accumulator
 * with [RDI]; cmps compares [RSI] with [RDI]. */
static void rep_compare(struct soft_cpu *c, const struct implicit_env *e, unsigned sz, bool cmps,
			bool repne)
{
	uint64_t cnt = gpr_read(c, RCX_REF, e->asize);
	if (!cnt)
		return;
	bool down = direction_down(c);
	uint64_t si = gpr_read(c, RSI_REF, e->asize), di = gpr_read(c, RDI_REF, e->asize);
	uint64_t acc = gpr_read(c, RAX_REF, sz);
	struct page_cache ps = {TLB_INVALID, 0, NULL}, pd = {TLB_INVALID, 0, NULL};
	uint64_t burst = 0;
	for (;;) {
		uint64_t src = e->base + si;
		uint64_t n =
		    min64(min64(cnt, page_elems(di, sz, down)), wrap_elems(di, sz, down, e));
		if (cmps)
			n = min64(min64(n, page_elems(src, sz, down)), wrap_elems(si, sz, down, e));
		const uint8_t *hs = NULL, *hd = NULL;
		if (n) {
			hs =
			    cmps ? cached_ptr(c, &ps, chunk_low(src, n, sz, down), ACC_READ) : NULL;
			if (hs || !cmps)
				hd = cached_ptr(c, &pd, chunk_low(di, n, sz, down), ACC_READ);
		}
		uint64_t x = acc, y, done = 0;
		bool stop = false;
		if (hd && !cmps && !down && sz == 1 && repne) {
			/* repne scasb: memchr. */
			const uint8_t *hit = memchr(hd, (int)acc, n);
			done = hit ? (uint64_t)(hit - hd) + 1 : n;
			y = hd[done - 1];
			stop = hit != NULL;
		} else if (hd) {
			do {
				size_t off = down ? (size_t)(n - 1 - done) * sz : (size_t)done * sz;
				if (cmps)
					x = load_host(hs + off, sz);
				y = load_host(hd + off, sz);
				done++;
				stop = (x == y) == repne;
			} while (!stop && done < n);
		} else {
			if (cmps) {
				x = soft_load(c, src, sz);
				cached_ptr(c, &ps, src, ACC_READ);
			}
			y = soft_load(c, di, sz);
			cached_ptr(c, &pd, di, ACC_READ);
			done = 1;
			stop = (x == y) == repne;
		}
		lf_set(c, LF_SUB, sz, (x - y) & size_mask(sz), x, y);
		if (cmps) {
			si = advance(si, done, sz, down, e);
			gpr_write(c, RSI_REF, si, e->asize);
		}
		di = advance(di, done, sz, down, e);
		cnt -= done;
		gpr_write(c, RDI_REF, di, e->asize);
		gpr_write(c, RCX_REF, cnt, e->asize);
		if (stop || !cnt)
			return;
		burst += done * sz;
		if (burst >= BURST) {
			burst = 0;
			if (repeat_should_yield(c)) {
				interrupt_repeat(c);
				return;
			}
		}
	}
}

/* ---- handlers ----------------------------------------------------------------------------- */

/* Without prefixes every string instruction is one byte. */
static inline void env_of(struct soft_cpu *c, const struct insn *in, struct implicit_env *e)
{
	implicit_env(c, in, 1, e);
}

static inline uint64_t step(const struct soft_cpu *c, unsigned sz)
{
	return direction_down(c) ? -(uint64_t)sz : sz;
}

static void h_movs(struct soft_cpu *c, const struct insn *in)
{
	struct implicit_env e;
	env_of(c, in, &e);
	unsigned sz = in->osize;
	uint64_t si = gpr_read(c, RSI_REF, e.asize), di = gpr_read(c, RDI_REF, e.asize);
	soft_store(c, di, soft_load(c, e.base + si, sz), sz);
	gpr_write(c, RSI_REF, si + step(c, sz), e.asize);
	gpr_write(c, RDI_REF, di + step(c, sz), e.asize);
}

static void h_rep_movs(struct soft_cpu *c, const struct insn *in)
{
	struct implicit_env e;
	env_of(c, in, &e);
	rep_movs(c, &e, in->osize);
}

static void h_stos(struct soft_cpu *c, const struct insn *in)
{
	struct implicit_env e;
	env_of(c, in, &e);
	unsigned sz = in->osize;
	uint64_t di = gpr_read(c, RDI_REF, e.asize);
	soft_store(c, di, gpr_read(c, RAX_REF, sz), sz);
	gpr_write(c, RDI_REF, di + step(c, sz), e.asize);
}

static void h_rep_stos(struct soft_cpu *c, const struct insn *in)
{
	struct implicit_env e;
	env_of(c, in, &e);
	rep_stos(c, &e, in->osize);
}

static void h_lods(struct soft_cpu *c, const struct insn *in)
{
	struct implicit_env e;
	env_of(c, in, &e);
	unsigned sz = in->osize;
	uint64_t si = gpr_read(c, RSI_REF, e.asize);
	gpr_write(c, RAX_REF, soft_load(c, e.base + si, sz), sz);
	gpr_write(c, RSI_REF, si + step(c, sz), e.asize);
}

static void h_rep_lods(struct soft_cpu *c, const struct insn *in)
{
	struct implicit_env e;
	env_of(c, in, &e);
	rep_lods(c, &e, in->osize);
}

static void h_cmps(struct soft_cpu *c, const struct insn *in)
{
	struct implicit_env e;
	env_of(c, in, &e);
	unsigned sz = in->osize;
	uint64_t si = gpr_read(c, RSI_REF, e.asize), di = gpr_read(c, RDI_REF, e.asize);
	uint64_t x = soft_load(c, e.base + si, sz), y = soft_load(c, di, sz);
	lf_set(c, LF_SUB, sz, (x - y) & size_mask(sz), x, y);
	gpr_write(c, RSI_REF, si + step(c, sz), e.asize);
	gpr_write(c, RDI_REF, di + step(c, sz), e.asize);
}

static void h_repe_cmps(struct soft_cpu *c, const struct insn *in)
{
	struct implicit_env e;
	env_of(c, in, &e);
	rep_compare(c, &e, in->osize, true, false);
}

static void h_repne_cmps(struct soft_cpu *c, const struct insn *in)
{
	struct implicit_env e;
	env_of(c, in, &e);
	rep_compare(c, &e, in->osize, true, true);
}

static void h_scas(struct soft_cpu *c, const struct insn *in)
{
	struct implicit_env e;
	env_of(c, in, &e);
	unsigned sz = in->osize;
	uint64_t di = gpr_read(c, RDI_REF, e.asize);
	uint64_t x = gpr_read(c, RAX_REF, sz), y = soft_load(c, di, sz);
	lf_set(c, LF_SUB, sz, (x - y) & size_mask(sz), x, y);
	gpr_write(c, RDI_REF, di + step(c, sz), e.asize);
}

static void h_repe_scas(struct soft_cpu *c, const struct insn *in)
{
	struct implicit_env e;
	env_of(c, in, &e);
	rep_compare(c, &e, in->osize, false, false);
}

static void h_repne_scas(struct soft_cpu *c, const struct insn *in)
{
	struct implicit_env e;
	env_of(c, in, &e);
	rep_compare(c, &e, in->osize, false, true);
}

/* For movs, stos and lods F2 repeats as F3 does. */
static inline bool repeated(const struct insn *in)
{
	return (in->prefix & (PFX_REP | PFX_REPNE)) != 0;
}

static insn_fn sel_movs(const struct insn *in)
{
	return repeated(in) ? h_rep_movs : h_movs;
}

static insn_fn sel_stos(const struct insn *in)
{
	return repeated(in) ? h_rep_stos : h_stos;
}

static insn_fn sel_lods(const struct insn *in)
{
	return repeated(in) ? h_rep_lods : h_lods;
}

static insn_fn sel_cmps(const struct insn *in)
{
	return in->prefix & PFX_REPNE ? h_repne_cmps : in->prefix & PFX_REP ? h_repe_cmps : h_cmps;
}

static insn_fn sel_scas(const struct insn *in)
{
	return in->prefix & PFX_REPNE ? h_repne_scas : in->prefix & PFX_REP ? h_repe_scas : h_scas;
}

insn_fn soft_select_string(const struct insn *in)
{
	if (in->nops != 0)
		return NULL; /* the SSE2 movsd/cmpsd */
	switch (in->mnemonic) {
	case ZYDIS_MNEMONIC_MOVSB:
	case ZYDIS_MNEMONIC_MOVSW:
	case ZYDIS_MNEMONIC_MOVSD:
	case ZYDIS_MNEMONIC_MOVSQ:
		return sel_movs(in);
	case ZYDIS_MNEMONIC_STOSB:
	case ZYDIS_MNEMONIC_STOSW:
	case ZYDIS_MNEMONIC_STOSD:
	case ZYDIS_MNEMONIC_STOSQ:
		return sel_stos(in);
	case ZYDIS_MNEMONIC_LODSB:
	case ZYDIS_MNEMONIC_LODSW:
	case ZYDIS_MNEMONIC_LODSD:
	case ZYDIS_MNEMONIC_LODSQ:
		return sel_lods(in);
	case ZYDIS_MNEMONIC_CMPSB:
	case ZYDIS_MNEMONIC_CMPSW:
	case ZYDIS_MNEMONIC_CMPSD:
	case ZYDIS_MNEMONIC_CMPSQ:
		return sel_cmps(in);
	case ZYDIS_MNEMONIC_SCASB:
	case ZYDIS_MNEMONIC_SCASW:
	case ZYDIS_MNEMONIC_SCASD:
	case ZYDIS_MNEMONIC_SCASQ:
		return sel_scas(in);
	default:
		return NULL;
	}
}

void soft_register_string(void)
{
	static const unsigned mnemonics[] = {
	    ZYDIS_MNEMONIC_MOVSB, ZYDIS_MNEMONIC_MOVSW, ZYDIS_MNEMONIC_MOVSD, ZYDIS_MNEMONIC_MOVSQ,
	    ZYDIS_MNEMONIC_STOSB, ZYDIS_MNEMONIC_STOSW, ZYDIS_MNEMONIC_STOSD, ZYDIS_MNEMONIC_STOSQ,
	    ZYDIS_MNEMONIC_LODSB, ZYDIS_MNEMONIC_LODSW, ZYDIS_MNEMONIC_LODSD, ZYDIS_MNEMONIC_LODSQ,
	    ZYDIS_MNEMONIC_CMPSB, ZYDIS_MNEMONIC_CMPSW, ZYDIS_MNEMONIC_CMPSD, ZYDIS_MNEMONIC_CMPSQ,
	    ZYDIS_MNEMONIC_SCASB, ZYDIS_MNEMONIC_SCASW, ZYDIS_MNEMONIC_SCASD, ZYDIS_MNEMONIC_SCASQ,
	};
	for (unsigned i = 0; i < sizeof(mnemonics) / sizeof(mnemonics[0]); i++)
		soft_register(mnemonics[i], soft_select_string);
}
