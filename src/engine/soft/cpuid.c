/* The CPUID the soft CPU shows: one consistent Intel-style processor that advertises only what
 * the interpreter implements. Cache descriptors are filled in (leaves 2 and 4) because glibc
 * sizes its memcpy/memmove strategies from them and misbehaves when they read as zero. */
#include <string.h>

#include "engine/soft/soft.h"

/* Leaf 1 EDX */
#define F_FPU   (1u << 0)
#define F_PSE   (1u << 3)
#define F_APIC  (1u << 9)
#define F_PGE   (1u << 13)
#define F_PAT   (1u << 16)
#define F_TSC   (1u << 4)
#define F_MSR   (1u << 5)
#define F_PAE   (1u << 6)
#define F_CX8   (1u << 8)
#define F_CMOV  (1u << 15)
#define F_CLFSH (1u << 19)
#define F_FXSR  (1u << 24)
#define F_SSE   (1u << 25)
#define F_SSE2  (1u << 26)
/* Leaf 1 ECX */
#define F_CX16         (1u << 13)
#define F_POPCNT       (1u << 23)
#define F_TSC_DEADLINE (1u << 24)
#define F_HYPERVISOR   (1u << 31)
/* Leaf 7 */
#define F7B_ERMS      (1u << 9)
#define F7D_FSRM      (1u << 4)
#define F7D_ARCH_CAPS (1u << 29)
/* Leaf 0x80000001 */
#define FX_LAHF    (1u << 0)
#define FX_LZCNT   (1u << 5)
#define FX_SYSCALL (1u << 11)
#define FX_NX      (1u << 20)
#define FX_PAGE1GB (1u << 26)
#define FX_RDTSCP  (1u << 27)
#define FX_LM      (1u << 29)

static const char vendor[12] = "GenuineIntel";
static const char brand[48] = "ferry soft x86-64 CPU";

#define MAX_BASIC 0x16
/* The paravirtual leaves (system mode): KVM's signature and features, so Linux uses
 * kvm-clock and skips port-0x80 I/O delays. */
#define KVM_LEAF_MAX          0x40000001u
#define KVM_FEATURE_NOP_IO    (1u << 1)
#define KVM_FEATURE_CLOCK2    (1u << 3)
#define KVM_FEATURE_CLOCK_STB (1u << 24)
#define MAX_EXT               0x80000008u

/* Deterministic cache parameters (leaf 4): type, level, ways, line size, sets. */
static const struct {
	uint8_t type, level;
	uint16_t ways, line, sets;
} caches[] = {
    {1, 1, 8, 64, 64},    /* L1 data, 32 KiB */
    {2, 1, 8, 64, 64},    /* L1 instruction, 32 KiB */
    {3, 2, 16, 64, 1024}, /* L2 unified, 1 MiB */
    {3, 3, 16, 64, 8192}, /* L3 unified, 8 MiB */
};

/* System mode shows a whole PC processor: a local APIC with the TSC-deadline timer, global and
 * large pages, PAT, the hypervisor leaves, the TSC rate (leaves 0x15/0x16) and
 * ARCH_CAPABILITIES. ferry-user's processes see only the user-level model. */
void soft_cpuid(const struct soft_cpu *c, uint32_t leaf, uint32_t subleaf, uint32_t out[4])
{
	uint32_t a = 0, b = 0, cx = 0, d = 0;
	bool sys = !c->user_mode;
	if (sys && (leaf & 0xffff0000u) == 0x40000000u) {
		if (leaf == 0x40000000u) {
			out[0] = KVM_LEAF_MAX;
			memcpy(&out[1], "KVMK", 4);
			memcpy(&out[2], "VMKV", 4);
			memcpy(&out[3], "M\0\0\0", 4);
		} else if (leaf == 0x40000001u) {
			out[0] = KVM_FEATURE_NOP_IO | KVM_FEATURE_CLOCK2 | KVM_FEATURE_CLOCK_STB;
			out[1] = out[2] = out[3] = 0;
		} else {
			out[0] = out[1] = out[2] = out[3] = 0;
		}
		return;
	}
	if (leaf > MAX_BASIC && leaf < 0x80000000u)
		leaf = MAX_BASIC; /* out-of-range basic leaves answer as the highest one */
	switch (leaf) {
	case 0:
		a = MAX_BASIC;
		memcpy(&b, vendor, 4);
		memcpy(&d, vendor + 4, 4);
		memcpy(&cx, vendor + 8, 4);
		break;
	case 1:
		a = 0x000306a9;             /* family 6, model 0x3a, stepping 9 */
		b = (8u << 8) | (1u << 16); /* CLFLUSH line 64 bytes, one logical processor */
		cx = F_CX16 | F_POPCNT;
		d = F_FPU | F_TSC | F_MSR | F_PAE | F_CX8 | F_CMOV | F_CLFSH | F_FXSR | F_SSE |
		    F_SSE2;
		if (sys) {
			b |= c->apic_id << 24;
			cx |= F_TSC_DEADLINE | F_HYPERVISOR;
			d |= F_PSE | F_APIC | F_PGE | F_PAT;
		}
		break;
	case 2:
		/* One descriptor: 0xff, "use leaf 4". */
		a = 0x00ff0001;
		break;
	case 4:
		if (subleaf < sizeof(caches) / sizeof(caches[0])) {
			a = caches[subleaf].type | (uint32_t)caches[subleaf].level << 5 | 1u << 8;
			b = (uint32_t)(caches[subleaf].ways - 1) << 22 |
			    (uint32_t)(caches[subleaf].line - 1);
			cx = caches[subleaf].sets - 1u;
		}
		break;
	case 7:
		if (subleaf == 0) {
			b = F7B_ERMS;
			d = F7D_FSRM | (sys ? F7D_ARCH_CAPS : 0);
		}
		break;
	case 0xb:
		/* Topology (system mode): one thread per core, every vCPU a core of one package. */
		if (sys) {
			unsigned n = c->ncpus ? c->ncpus : 1, shift = 0;
			while ((1u << shift) < n)
				shift++;
			d = c->apic_id;
			cx = subleaf & 0xff;
			if (subleaf == 0) {
				b = 1;
				cx |= 1u << 8;
			} else if (subleaf == 1) {
				a = shift;
				b = n;
				cx |= 2u << 8;
			}
		}
		break;
	case 0x15:
		/* TSC = crystal * b / a: a 1 GHz crystal (also the local APIC timer's clock) and
		 * a TSC at the same rate. */
		a = 1;
		b = (uint32_t)(SOFT_TSC_HZ / 1000000000ull);
		cx = 1000000000u;
		break;
	case 0x16:
		a = b = (uint32_t)(SOFT_TSC_HZ / 1000000); /* base and maximum MHz */
		cx = 1000;                                 /* bus MHz */
		break;
	case 0x80000000u:
		a = MAX_EXT;
		break;
	case 0x80000001u:
		cx = FX_LAHF | FX_LZCNT;
		d = FX_SYSCALL | FX_NX | FX_RDTSCP | FX_LM | (sys ? FX_PAGE1GB : 0);
		break;
	case 0x80000002u:
	case 0x80000003u:
	case 0x80000004u: {
		const char *p = brand + (size_t)(leaf - 0x80000002u) * 16;
		memcpy(&a, p, 4);
		memcpy(&b, p + 4, 4);
		memcpy(&cx, p + 8, 4);
		memcpy(&d, p + 12, 4);
		break;
	}
	case 0x80000006u:
		cx = (1024u << 16) | (8u << 12) |
		     64u; /* L2: 1 MiB, 8-way (encoded), 64-byte lines */
		break;
	case 0x80000008u:
		a = (48u << 8) | 40u; /* 48-bit linear, 40-bit physical addresses */
		break;
	default:
		break;
	}
	out[0] = a;
	out[1] = b;
	out[2] = cx;
	out[3] = d;
}
