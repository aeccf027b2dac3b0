/* The soft engine's integer group (exec_alu.c) against the host CPU. Each snippet runs natively
 * and on a soft CPU from the same registers, flags and memory; registers, the defined flags and
 * the data and stack pages must agree afterwards. Snippets are assembled by the compiler's
 * assembler into .rodata and copied to a fixed guest address, where both runs execute them
 * (guest-physical == host-virtual), so addresses and RIP-relative operands are the same.
 * Separate tests cover what cannot run natively at CPL 3 (cli/sti, privileged popf, faults),
 * locked operations across pages and between threads, and the speed of the hot forms. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <cmocka.h>

#include "engine/soft/exec_alu.h"
#include "engine/soft/soft.h"

#define BASE      0x30000000ull
#define SIZE      0x6000ull
#define CODE      BASE            /* the snippet, then a jump back to the native runner */
#define CMP_LO    (BASE + 0x1000) /* compared after each run: data pages and the stack page */
#define DATA      (BASE + 0x2000) /* rdi points here */
#define STACK_TOP (BASE + 0x3f00) /* rsp */
#define CMP_HI    (BASE + 0x4000)
#define RO_PAGE   (BASE + 0x4000) /* read-only for the soft CPU */
#define NO_PAGE   (BASE + 0x5000) /* not guest memory for the soft CPU */
#define CMP_SIZE  (CMP_HI - CMP_LO)

#define FLAG_NT   (1u << 14)
#define FLAG_AC   (1u << 18)
#define FLAG_ID   (1u << 21)
#define FLAG_IOPL (3u << 12)
#define FLAGS_CMP (FL_ARITH | FL_TF | FL_IF | FL_DF | FLAG_NT | FLAG_AC | FLAG_ID | FLAG_IOPL)
#define SNIP_MAX  256

#if defined(__SANITIZE_ADDRESS__)
#define ITERATIONS 10
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ITERATIONS 10
#endif
#endif
#ifndef ITERATIONS
#define ITERATIONS 48
#endif

static uint8_t *mem;

static void *page_ptr(void *opaque, uint64_t gpa, enum mem_access acc, bool *writable)
{
	(void)opaque;
	(void)acc;
	if (gpa < BASE || gpa >= NO_PAGE)
		return NULL;
	*writable = (gpa & ~0xfffull) != RO_PAGE;
	return (void *)gpa;
}

static struct soft_cpu *new_cpu(void)
{
	struct soft_mem_ops ops = {.page_ptr = page_ptr};
	struct soft_cpu *c = soft_cpu_create(&ops, true);
	assert_non_null(c);
	return c;
}

/* ---- the native runner ----------------------------------------------------------------------- */

struct regs {
	uint64_t gpr[16];
	uint64_t rflags;
};

/* native_run(regs, code): loads every register and the flags from regs (RSP too: snippets use
 * the guest stack), jumps to code, which ends with an indirect jump to native_return; that
 * stores everything back and returns to C with clean flags. */
__asm__(".pushsection .text\n"
	".globl native_run\n"
	".hidden native_run\n"
	".globl native_return\n"
	".hidden native_return\n"
	".p2align 4\n"
	"native_run:\n"
	"	push %rbx\n"
	"	push %rbp\n"
	"	push %r12\n"
	"	push %r13\n"
	"	push %r14\n"
	"	push %r15\n"
	"	mov %rsp, native_host_rsp(%rip)\n"
	"	mov %rdi, native_regs(%rip)\n"
	"	mov %rsi, native_code(%rip)\n"
	"	pushq 128(%rdi)\n"
	"	popfq\n"
	"	mov 0(%rdi), %rax\n"
	"	mov 8(%rdi), %rcx\n"
	"	mov 16(%rdi), %rdx\n"
	"	mov 24(%rdi), %rbx\n"
	"	mov 32(%rdi), %rsp\n"
	"	mov 40(%rdi), %rbp\n"
	"	mov 48(%rdi), %rsi\n"
	"	mov 64(%rdi), %r8\n"
	"	mov 72(%rdi), %r9\n"
	"	mov 80(%rdi), %r10\n"
	"	mov 88(%rdi), %r11\n"
	"	mov 96(%rdi), %r12\n"
	"	mov 104(%rdi), %r13\n"
	"	mov 112(%rdi), %r14\n"
	"	mov 120(%rdi), %r15\n"
	"	mov 56(%rdi), %rdi\n"
	"	jmp *native_code(%rip)\n"
	"native_return:\n"
	"	xchg %rdi, native_regs(%rip)\n"
	"	mov %rax, 0(%rdi)\n"
	"	mov %rcx, 8(%rdi)\n"
	"	mov %rdx, 16(%rdi)\n"
	"	mov %rbx, 24(%rdi)\n"
	"	mov %rsp, 32(%rdi)\n"
	"	mov %rbp, 40(%rdi)\n"
	"	mov %rsi, 48(%rdi)\n"
	"	mov %r8, 64(%rdi)\n"
	"	mov %r9, 72(%rdi)\n"
	"	mov %r10, 80(%rdi)\n"
	"	mov %r11, 88(%rdi)\n"
	"	mov %r12, 96(%rdi)\n"
	"	mov %r13, 104(%rdi)\n"
	"	mov %r14, 112(%rdi)\n"
	"	mov %r15, 120(%rdi)\n"
	"	mov native_regs(%rip), %rax\n"
	"	mov %rax, 56(%rdi)\n"
	"	mov native_host_rsp(%rip), %rsp\n"
	"	pushfq\n"
	"	popq 128(%rdi)\n"
	"	pushq $0x202\n"
	"	popfq\n"
	"	pop %r15\n"
	"	pop %r14\n"
	"	pop %r13\n"
	"	pop %r12\n"
	"	pop %rbp\n"
	"	pop %rbx\n"
	"	ret\n"
	".popsection\n"
	".pushsection .data\n"
	".p2align 3\n"
	"native_host_rsp: .quad 0\n"
	"native_regs: .quad 0\n"
	"native_code: .quad 0\n"
	".popsection\n");

__attribute__((visibility("hidden"))) void native_run(struct regs *r, const void *code);
__attribute__((visibility("hidden"))) extern const uint8_t native_return[];

/* ---- the snippets -------------------------------------------------------------------------- */

/* X(name, undefined flags, Intel-syntax text). Memory operands go through rdi (DATA) or
 * rip+0x18xx (the page before DATA); index registers are masked first. */
#define ALU_FORMS(X, op, U)                                                                        \
	X(op##_rr64, U, #op " rax, rbx")                                                           \
	X(op##_rr32, U, #op " eax, ebx")                                                           \
	X(op##_rr16, U, #op " ax, bx")                                                             \
	X(op##_rr8, U, #op " al, bl")                                                              \
	X(op##_rr8h, U, #op " ah, ch")                                                             \
	X(op##_rr8x, U, #op " sil, r9b")                                                           \
	X(op##_rr64x, U, #op " r10, r11")                                                          \
	X(op##_same32, U, #op " edx, edx")                                                         \
	X(op##_ri64s8, U, #op " rax, -3")                                                          \
	X(op##_ri64, U, #op " rbx, 0x7fff1234")                                                    \
	X(op##_ri64n, U, #op " rcx, -0x12345678")                                                  \
	X(op##_ri32, U, #op " ecx, 0x89abcdef")                                                    \
	X(op##_ri32s8, U, #op " edx, 5")                                                           \
	X(op##_ri16, U, #op " dx, 0x8001")                                                         \
	X(op##_ri16s8, U, #op " si, -1")                                                           \
	X(op##_ri8, U, #op " dl, 0x80")                                                            \
	X(op##_ri8h, U, #op " bh, 0x7f")                                                           \
	X(op##_acc64, U, #op " rax, 0x12345678")                                                   \
	X(op##_acc32, U, #op " eax, 0x80000000")                                                   \
	X(op##_acc16, U, #op " ax, 0x1234")                                                        \
	X(op##_acc8, U, #op " al, 0x7f")                                                           \
	X(op##_mr64, U, #op " qword ptr [rdi+8], rax")                                             \
	X(op##_mr32, U, #op " dword ptr [rdi+4], ecx")                                             \
	X(op##_mr16, U, #op " word ptr [rdi+2], dx")                                               \
	X(op##_mr8, U, #op " byte ptr [rdi+1], dh")                                                \
	X(op##_rm64, U, #op " rax, qword ptr [rdi+16]")                                            \
	X(op##_rm32, U, #op " ebx, dword ptr [rdi+20]")                                            \
	X(op##_rm16, U, #op " cx, word ptr [rdi+22]")                                              \
	X(op##_rm8, U, #op " ah, byte ptr [rdi+23]")                                               \
	X(op##_mi64, U, #op " qword ptr [rdi+24], -100")                                           \
	X(op##_mi64b, U, #op " qword ptr [rdi+24], 0x7edcba98")                                    \
	X(op##_mi32, U, #op " dword ptr [rdi+32], 0x12345678")                                     \
	X(op##_mi32s8, U, #op " dword ptr [rdi+32], -2")                                           \
	X(op##_mi16, U, #op " word ptr [rdi+36], 0x8000")                                          \
	X(op##_mi8, U, #op " byte ptr [rdi+38], 0x81")                                             \
	X(op##_sib, U, "and ecx, 0x1f\n" #op " rax, qword ptr [rdi+rcx*8+0x40]")                   \
	X(op##_rip, U, #op " rax, qword ptr [rip+0x1800]")                                         \
	X(op##_ripm, U, #op " dword ptr [rip+0x1804], 0x55")

/* The address forms of the specialized handlers at every size: [base + index * scale + disp],
 * [rip + disp], a 32-bit address (the generic address path), and operands that straddle the
 * page boundary at DATA (the TLB fast path must let them go the slow way). */
#define ALU_ADDR_FORMS(X, op, U)                                                                   \
	X(op##_mr8_sib, U, "and ecx, 0x1f\n" #op " byte ptr [rdi+rcx+0x40], ah")                   \
	X(op##_mr16_sib, U, "and ecx, 0x1f\n" #op " word ptr [rdi+rcx*2+0x40], dx")                \
	X(op##_mr32_sib, U, "and ecx, 0x1f\n" #op " dword ptr [rdi+rcx*4], ebx")                   \
	X(op##_mr64_sib, U, "and ecx, 0x1f\n" #op " qword ptr [rdi+rcx*8+8], rax")                 \
	X(op##_mi8_sib, U, "and ecx, 0x1f\n" #op " byte ptr [rdi+rcx*8+3], 0x80")                  \
	X(op##_mi16_sib, U, "and ecx, 0x1f\n" #op " word ptr [rdi+rcx*4+0x40], -3")                \
	X(op##_mi32_sib, U, "and ecx, 0x1f\n" #op " dword ptr [rdi+rcx*2+0x40], 0x7fff0001")       \
	X(op##_rm8_sib, U, "and ebx, 0x1f\n" #op " cl, byte ptr [rdi+rbx+0x40]")                   \
	X(op##_rm16_sib, U, "and ebx, 0x1f\n" #op " cx, word ptr [rdi+rbx*2]")                     \
	X(op##_rm32_sib, U, "and ebx, 0x1f\n" #op " edx, dword ptr [rdi+rbx*4+0x40]")              \
	X(op##_mr8_rip, U, #op " byte ptr [rip+0x1801], bl")                                       \
	X(op##_mi16_rip, U, #op " word ptr [rip+0x1802], 0x1234")                                  \
	X(op##_rm16_rip, U, #op " si, word ptr [rip+0x1806]")                                      \
	X(op##_rm8_rip, U, #op " bh, byte ptr [rip+0x1807]")                                       \
	X(op##_mi64_rip, U, #op " qword ptr [rip+0x1808], -0x80")                                  \
	X(op##_rm32_a32, U, #op " eax, dword ptr [edi+8]")                                         \
	X(op##_mr16_a32, U, #op " word ptr [edi+6], cx")                                           \
	X(op##_mr16_cross, U, #op " word ptr [rdi-1], dx")                                         \
	X(op##_rm64_cross, U, #op " rax, qword ptr [rdi-3]")                                       \
	X(op##_mi32_cross, U, #op " dword ptr [rdi-2], 5")

/* adc/sbb and inc/dec on memory after each producer of CF (the fast carry paths). */
#define CARRY_CHAINS(X, op)                                                                        \
	X(op##_m8_after_cmp, 0, "cmp eax, ebx\n" #op " byte ptr [rdi+1], cl")                      \
	X(op##_m16_after_sub, 0, "sub ax, bx\n" #op " word ptr [rdi+2], 7")                        \
	X(op##_m32_after_add, 0, "add rax, rbx\n" #op " dword ptr [rdi+4], edx")                   \
	X(op##_r64_after_test, FL_AF, "test al, bl\n" #op " rcx, qword ptr [rdi+8]")               \
	X(op##_m64_after_inc, 0, "inc cl\n" #op " qword ptr [rip+0x1808], rdx")                    \
	X(op##_r16_after_dec, 0, "dec rdx\n" #op " si, word ptr [rdi+6]")                          \
	X(op##_m8_after_neg, 0, "movzx ecx, cl\nneg ebx\n" #op " byte ptr [rdi+rcx+0x40], 3")      \
	X(op##_m32_loaded, 0, #op " dword ptr [rdi+12], ebx")

#define INCDEC_CHAINS(X, op)                                                                       \
	X(op##_m8_sib_adc, 0,                                                                      \
	  "movzx ecx, cl\ncmp rax, rbx\n" #op " byte ptr [rdi+rcx+0x40]\nadc edx, 0")              \
	X(op##_m16_rip_sbb, 0, "add eax, ebx\n" #op " word ptr [rip+0x1802]\nsbb edx, 0")          \
	X(op##_m32_bd_setc, 0, "sub al, bl\n" #op " dword ptr [rdi+4]\nsetc dl")                   \
	X(op##_m64_cross, 0, "xor eax, ebx\n" #op " qword ptr [rdi-4]\nadc rdx, rcx")              \
	X(op##_r8h_chain, 0, #op " ch\n" #op " ah\nsbb esi, esi")                                  \
	X(op##_r16_after_neg, 0, "neg rax\n" #op " dx\nadc esi, 0")

#define LOCK_FORMS(X, op)                                                                          \
	X(lock_##op##64, 0, "lock " #op " qword ptr [rdi+8], rax")                                 \
	X(lock_##op##32, 0, "lock " #op " dword ptr [rdi+12], 0x11")                               \
	X(lock_##op##16, 0, "lock " #op " word ptr [rdi+6], -2")                                   \
	X(lock_##op##8, 0, "lock " #op " byte ptr [rdi+3], cl")

#define UNARY_FORMS(X, op)                                                                         \
	X(op##_r64, 0, #op " rax")                                                                 \
	X(op##_r32, 0, #op " ecx")                                                                 \
	X(op##_r16, 0, #op " dx")                                                                  \
	X(op##_r8, 0, #op " bl")                                                                   \
	X(op##_r8h, 0, #op " bh")                                                                  \
	X(op##_r64x, 0, #op " r12")                                                                \
	X(op##_m64, 0, #op " qword ptr [rdi+8]")                                                   \
	X(op##_m32, 0, #op " dword ptr [rdi+12]")                                                  \
	X(op##_m16, 0, #op " word ptr [rdi+14]")                                                   \
	X(op##_m8, 0, #op " byte ptr [rdi+15]")                                                    \
	X(lock_##op##64, 0, "lock " #op " qword ptr [rdi+8]")                                      \
	X(lock_##op##32, 0, "lock " #op " dword ptr [rdi+12]")                                     \
	X(lock_##op##16, 0, "lock " #op " word ptr [rdi+14]")                                      \
	X(lock_##op##8, 0, "lock " #op " byte ptr [rdi+15]")

#define CMOV_FORMS(X, cc)                                                                          \
	X(cmov##cc##_cmp8, 0, "cmp al, bl\ncmov" #cc " rcx, rdx")                                  \
	X(cmov##cc##_cmpm16, 0, "cmp word ptr [rdi+2], bx\ncmov" #cc " ecx, edx")                  \
	X(cmov##cc##_dec16, 0, "dec ax\ncmov" #cc " rcx, rdx")                                     \
	X(cmov##cc##_sbb, 0, "sbb eax, ebx\ncmov" #cc " ecx, edx")                                 \
	X(cmov##cc##_or64, FL_AF, "or rax, rbx\ncmov" #cc " rcx, rdx")                             \
	X(cmov##cc##_rr64, 0, "cmov" #cc " rax, rbx")                                              \
	X(cmov##cc##_rr32, 0, "cmov" #cc " eax, ebx")                                              \
	X(cmov##cc##_rr16, 0, "cmov" #cc " ax, bx")                                                \
	X(cmov##cc##_rm64, 0, "cmov" #cc " rcx, qword ptr [rdi+8]")                                \
	X(cmov##cc##_rm32, 0, "cmov" #cc " ecx, dword ptr [rdi+8]")                                \
	X(cmov##cc##_rm16, 0, "cmov" #cc " cx, word ptr [rdi+8]")                                  \
	X(cmov##cc##_cmp64, 0, "cmp rax, rbx\ncmov" #cc " rcx, rdx")                               \
	X(cmov##cc##_cmp32, 0, "cmp eax, ebx\ncmov" #cc " ecx, edx")                               \
	X(cmov##cc##_sub8, 0, "sub al, bl\ncmov" #cc " ecx, edx")                                  \
	X(cmov##cc##_add16, 0, "add ax, bx\ncmov" #cc " rcx, rdx")                                 \
	X(cmov##cc##_test, FL_AF, "test eax, ebx\ncmov" #cc " ecx, edx")                           \
	X(cmov##cc##_inc, 0, "inc rbx\ncmov" #cc " ecx, edx")

#define SET_FORMS(X, cc)                                                                           \
	X(set##cc##_cmpm8, 0, "cmp byte ptr [rdi+1], al\nset" #cc " cl")                           \
	X(set##cc##_cmpm16, 0, "cmp dx, word ptr [rdi+2]\nset" #cc " cl")                          \
	X(set##cc##_and16, FL_AF, "and ax, bx\nset" #cc " cl")                                     \
	X(set##cc##_or8, FL_AF, "or al, bl\nset" #cc " byte ptr [rdi+5]")                          \
	X(set##cc##_inc8, 0, "inc bl\nset" #cc " cl")                                              \
	X(set##cc##_decm16, 0, "dec word ptr [rdi+2]\nset" #cc " cl")                              \
	X(set##cc##_adc8, 0, "adc al, bl\nset" #cc " ch")                                          \
	X(set##cc##_add64, 0, "add rax, rbx\nset" #cc " cl")                                       \
	X(set##cc##_shl1, FL_AF, "shl eax, 1\nset" #cc " cl")                                      \
	X(set##cc##_sar1, FL_AF, "sar al, 1\nset" #cc " cl")                                       \
	X(set##cc##_r, 0, "set" #cc " cl")                                                         \
	X(set##cc##_rh, 0, "set" #cc " ah")                                                        \
	X(set##cc##_m, 0, "set" #cc " byte ptr [rdi+5]")                                           \
	X(set##cc##_cmp64, 0, "cmp rax, rbx\nset" #cc " cl")                                       \
	X(set##cc##_cmp16, 0, "cmp ax, bx\nset" #cc " cl")                                         \
	X(set##cc##_cmp8, 0, "cmp al, 0x80\nset" #cc " cl")                                        \
	X(set##cc##_add, 0, "add eax, ebx\nset" #cc " cl")                                         \
	X(set##cc##_sbb, 0, "sbb rax, rbx\nset" #cc " cl")                                         \
	X(set##cc##_neg, 0, "neg edx\nset" #cc " cl")                                              \
	X(set##cc##_dec, 0, "dec ecx\nset" #cc " dl")                                              \
	X(set##cc##_xor, FL_AF, "xor rax, rbx\nset" #cc " dl")

#define FOR_CC(M, X)                                                                               \
	M(X, o)                                                                                    \
	M(X, no)                                                                                   \
	M(X, b)                                                                                    \
	M(X, nb)                                                                                   \
	M(X, z)                                                                                    \
	M(X, nz)                                                                                   \
	M(X, be)                                                                                   \
	M(X, nbe)                                                                                  \
	M(X, s)                                                                                    \
	M(X, ns)                                                                                   \
	M(X, p)                                                                                    \
	M(X, np)                                                                                   \
	M(X, l)                                                                                    \
	M(X, nl)                                                                                   \
	M(X, le)                                                                                   \
	M(X, nle)

#define CASES(X)                                                                                   \
	/* mov */                                                                                  \
	X(mov_rr64, 0, "mov rax, rbx")                                                             \
	X(mov_rr32, 0, "mov eax, ebx")                                                             \
	X(mov_rr16, 0, "mov ax, bx")                                                               \
	X(mov_rr8, 0, "mov al, bh")                                                                \
	X(mov_rr8h, 0, "mov ah, bl")                                                               \
	X(mov_rr8x, 0, "mov sil, r10b")                                                            \
	X(mov_ri64, 0, "mov rax, 0x123456789abcdef0")                                              \
	X(mov_ri64s, 0, "mov rax, -5")                                                             \
	X(mov_ri32, 0, "mov eax, -5")                                                              \
	X(mov_ri16, 0, "mov ax, 0x1234")                                                           \
	X(mov_ri8, 0, "mov al, 0x12")                                                              \
	X(mov_ri8h, 0, "mov ch, 0x99")                                                             \
	X(mov_rm64, 0, "mov rax, qword ptr [rdi+8]")                                               \
	X(mov_rm32, 0, "mov eax, dword ptr [rdi+12]")                                              \
	X(mov_rm16, 0, "mov ax, word ptr [rdi+2]")                                                 \
	X(mov_rm8, 0, "mov al, byte ptr [rdi+3]")                                                  \
	X(mov_rm8h, 0, "mov bh, byte ptr [rdi+5]")                                                 \
	X(mov_rm64_sib, 0, "and ecx, 0x1f\nmov rax, qword ptr [rdi+rcx*8+8]")                      \
	X(mov_rm32_sib, 0, "and ecx, 0x1f\nmov eax, dword ptr [rdi+rcx*4]")                        \
	X(mov_rm64_idx, 0, "and ecx, 0x1f\nmov rax, qword ptr [rcx*8+0x30002000]")                 \
	X(mov_rm64_rip, 0, "mov rax, qword ptr [rip+0x1800]")                                      \
	X(mov_rm32_rip, 0, "mov eax, dword ptr [rip+0x1804]")                                      \
	X(mov_rm32_a32, 0, "mov eax, dword ptr [edi+8]")                                           \
	X(mov_mr64, 0, "mov qword ptr [rdi+8], rax")                                               \
	X(mov_mr32, 0, "mov dword ptr [rdi+12], ecx")                                              \
	X(mov_mr16, 0, "mov word ptr [rdi+2], dx")                                                 \
	X(mov_mr8, 0, "mov byte ptr [rdi+3], bh")                                                  \
	X(mov_mr64_sib, 0, "and ecx, 0x1f\nmov qword ptr [rdi+rcx*8+8], rax")                      \
	X(mov_mr32_sib, 0, "and ecx, 0x1f\nmov dword ptr [rdi+rcx*4], ebx")                        \
	X(mov_mr64_rip, 0, "mov qword ptr [rip+0x1800], rbx")                                      \
	X(mov_mr32_rip, 0, "mov dword ptr [rip+0x1800], ebx")                                      \
	X(mov_mi64, 0, "mov qword ptr [rdi+8], -3")                                                \
	X(mov_mi64p, 0, "mov qword ptr [rdi+8], 0x7fffffff")                                       \
	X(mov_mi32, 0, "mov dword ptr [rdi], 0x80000000")                                          \
	X(mov_mi16, 0, "mov word ptr [rdi+2], 0x1234")                                             \
	X(mov_mi8, 0, "mov byte ptr [rdi+3], 0xab")                                                \
	X(mov_mi64_rip, 0, "mov qword ptr [rip+0x1800], -7")                                       \
	X(mov_mi32_sib, 0, "and ecx, 0x1f\nmov dword ptr [rdi+rcx*4+4], 0x5a5a5a5a")               \
	X(mov_rm8_sib, 0, "and ecx, 0x1f\nmov ah, byte ptr [rdi+rcx*8]")                           \
	X(mov_rm16_sib, 0, "and ecx, 0x1f\nmov dx, word ptr [rdi+rcx*2+0x40]")                     \
	X(mov_mr8_sib, 0, "and ecx, 0x1f\nmov byte ptr [rdi+rcx+0x40], ah")                        \
	X(mov_mr16_sib, 0, "and ecx, 0x1f\nmov word ptr [rdi+rcx*4+2], si")                        \
	X(mov_mi8_sib, 0, "and ecx, 0x1f\nmov byte ptr [rdi+rcx+0x41], 0x9c")                      \
	X(mov_mi16_sib, 0, "and ecx, 0x1f\nmov word ptr [rdi+rcx*2+0x40], -2")                     \
	X(mov_rm8_rip, 0, "mov bl, byte ptr [rip+0x1803]")                                         \
	X(mov_rm16_rip, 0, "mov cx, word ptr [rip+0x1806]")                                        \
	X(mov_mr8_rip, 0, "mov byte ptr [rip+0x1801], dh")                                         \
	X(mov_mi16_rip, 0, "mov word ptr [rip+0x1802], 0x4321")                                    \
	X(mov_rm16_a32, 0, "mov ax, word ptr [edi+6]")                                             \
	X(mov_mr8_a32, 0, "mov byte ptr [edi+7], cl")                                              \
	X(mov_rm16_cross, 0, "mov ax, word ptr [rdi-1]")                                           \
	X(mov_rm64_cross, 0, "mov rax, qword ptr [rdi-5]")                                         \
	X(mov_mr16_cross, 0, "mov word ptr [rdi-1], bx")                                           \
	X(mov_mr32_cross, 0, "mov dword ptr [rdi-3], ebx")                                         \
	X(mov_mi64_cross, 0, "mov qword ptr [rdi-7], -9")                                          \
	X(movabs_load64, 0, ".byte 0x48, 0xa1\n.quad 0x30002010")                                  \
	X(movabs_load8, 0, ".byte 0xa0\n.quad 0x30002011")                                         \
	X(movabs_store32, 0, ".byte 0xa3\n.quad 0x30002014")                                       \
	X(movabs_store16, 0, ".byte 0x66, 0xa3\n.quad 0x30002016")                                 \
	X(moffs_a32, 0, ".byte 0x67, 0xa1\n.long 0x30002018")                                      \
	X(mov_from_fs, 0, "mov eax, fs")                                                           \
	X(mov_from_gs64, 0, ".byte 0x48, 0x8c, 0xe8")                                              \
	X(mov_from_ss16, 0, "mov cx, ss")                                                          \
	X(mov_from_cs, 0, "mov edx, cs")                                                           \
	X(mov_from_ds_m, 0, "mov word ptr [rdi+2], ds")                                            \
	X(mov_ds_same, 0, "mov eax, ds\nmov ds, eax")                                              \
	X(mov_ss_same, 0, "mov eax, ss\nmov ss, eax")                                              \
	X(mov_es_null, 0, "xor eax, eax\nmov es, eax")                                             \
	/* movzx, movsx, movsxd */                                                                 \
	X(movzx_r32_r8, 0, "movzx eax, bl")                                                        \
	X(movzx_r32_r8h, 0, "movzx eax, bh")                                                       \
	X(movzx_r64_r16, 0, "movzx rax, cx")                                                       \
	X(movzx_r16_r8, 0, "movzx ax, dl")                                                         \
	X(movzx_r32_m8, 0, "movzx ecx, byte ptr [rdi+3]")                                          \
	X(movzx_r64_m16, 0, "movzx rcx, word ptr [rdi+6]")                                         \
	X(movzx_r16_m8, 0, "movzx cx, byte ptr [rdi+7]")                                           \
	X(movsx_r32_r8, 0, "movsx eax, bl")                                                        \
	X(movsx_r32_r8h, 0, "movsx eax, ch")                                                       \
	X(movsx_r64_m16, 0, "movsx rax, word ptr [rdi+2]")                                         \
	X(movsx_r16_m8, 0, "movsx ax, byte ptr [rdi+9]")                                           \
	X(movsx_r32_r16, 0, "movsx ecx, dx")                                                       \
	X(movsx_r16_r8, 0, "movsx cx, dl")                                                         \
	X(movsxd_r64_r32, 0, "movsxd rax, ebx")                                                    \
	X(movsxd_r64_m32, 0, "movsxd rax, dword ptr [rdi+4]")                                      \
	X(movzx_r32_m8_sib, 0, "and ecx, 0x1f\nmovzx eax, byte ptr [rdi+rcx+0x40]")                \
	X(movzx_r64_m16_sib, 0, "and ecx, 0x1f\nmovzx rax, word ptr [rdi+rcx*2+0x40]")             \
	X(movzx_r32_m16_rip, 0, "movzx edx, word ptr [rip+0x1802]")                                \
	X(movzx_r64_m8_rip, 0, "movzx rsi, byte ptr [rip+0x1805]")                                 \
	X(movzx_r32_m16_cross, 0, "movzx ebx, word ptr [rdi-1]")                                   \
	X(movzx_r32_m8_a32, 0, "movzx ebx, byte ptr [edi+9]")                                      \
	X(movzx_r64_r8, 0, "movzx r9, sil")                                                        \
	X(movsx_r32_m8_sib, 0, "and ecx, 0x1f\nmovsx eax, byte ptr [rdi+rcx*4+0x40]")              \
	X(movsx_r64_m8_sib, 0, "and ecx, 0x1f\nmovsx rax, byte ptr [rdi+rcx+0x41]")                \
	X(movsx_r32_m16_rip, 0, "movsx edx, word ptr [rip+0x1806]")                                \
	X(movsx_r64_m16_cross, 0, "movsx rbx, word ptr [rdi-1]")                                   \
	X(movsx_r64_r8, 0, "movsx rax, bl")                                                        \
	X(movsx_r64_r16, 0, "movsx rcx, dx")                                                       \
	X(movsx_r32_m16_a32, 0, "movsx ecx, word ptr [edi+6]")                                     \
	X(movsxd_r64_m32_sib, 0, "and ecx, 0x1f\nmovsxd rax, dword ptr [rdi+rcx*4+0x40]")          \
	X(movsxd_r64_m32_rip, 0, "movsxd rdx, dword ptr [rip+0x1804]")                             \
	X(movsxd_r64_m32_cross, 0, "movsxd rdx, dword ptr [rdi-2]")                                \
	X(movsxd_r32, 0, ".byte 0x63, 0xc3")                                                       \
	X(movsxd_r16, 0, ".byte 0x66, 0x63, 0xc3")                                                 \
	/* xchg, xadd, cmpxchg */                                                                  \
	X(xchg_rr64, 0, "xchg rax, rbx")                                                           \
	X(xchg_rr32, 0, "xchg ecx, edx")                                                           \
	X(xchg_rr16, 0, "xchg ax, dx")                                                             \
	X(xchg_rr8, 0, "xchg al, ah")                                                              \
	X(xchg_r8_rax, 0, ".byte 0x49, 0x90")                                                      \
	X(xchg_eax_eax, 0, ".byte 0x87, 0xc0")                                                     \
	X(xchg_m64, 0, "xchg qword ptr [rdi+8], rax")                                              \
	X(xchg_m32, 0, "xchg ecx, dword ptr [rdi+4]")                                              \
	X(xchg_m8, 0, "xchg byte ptr [rdi+1], dh")                                                 \
	X(xchg_lock16, 0, "lock xchg word ptr [rdi+2], bx")                                        \
	X(xadd_rr64, 0, "xadd rax, rbx")                                                           \
	X(xadd_rr32, 0, "xadd eax, ebx")                                                           \
	X(xadd_same, 0, "xadd eax, eax")                                                           \
	X(xadd_rr8, 0, "xadd al, ah")                                                              \
	X(xadd_m64, 0, "xadd qword ptr [rdi], rcx")                                                \
	X(xadd_lock32, 0, "lock xadd dword ptr [rdi+4], edx")                                      \
	X(xadd_lock16, 0, "lock xadd word ptr [rdi+2], bx")                                        \
	X(xadd_lock8, 0, "lock xadd byte ptr [rdi+1], cl")                                         \
	X(cmpxchg_r64, 0, "cmpxchg rbx, rcx")                                                      \
	X(cmpxchg_r64_eq, 0, "mov rax, rbx\ncmpxchg rbx, rcx")                                     \
	X(cmpxchg_r32, 0, "cmpxchg ebx, ecx")                                                      \
	X(cmpxchg_r32_eq, 0, "mov eax, ebx\ncmpxchg ebx, ecx")                                     \
	X(cmpxchg_r16_eq, 0, "mov ax, bx\ncmpxchg bx, cx")                                         \
	X(cmpxchg_r8, 0, "cmpxchg bl, ch")                                                         \
	X(cmpxchg_acc, 0, "cmpxchg eax, ecx")                                                      \
	X(cmpxchg_m64, 0, "cmpxchg qword ptr [rdi+8], rcx")                                        \
	X(cmpxchg_m64_eq, 0, "mov rax, qword ptr [rdi+8]\nlock cmpxchg qword ptr [rdi+8], rcx")    \
	X(cmpxchg_m32_eq, 0, "mov eax, dword ptr [rdi+8]\ncmpxchg dword ptr [rdi+8], ecx")         \
	X(cmpxchg_m16, 0, "lock cmpxchg word ptr [rdi+8], cx")                                     \
	X(cmpxchg_m8_eq, 0, "mov al, byte ptr [rdi+9]\nlock cmpxchg byte ptr [rdi+9], dl")         \
	X(cmpxchg8b_ne, 0, "cmpxchg8b qword ptr [rdi+8]")                                          \
	X(cmpxchg8b_eq, 0,                                                                         \
	  "mov dword ptr [rdi+8], eax\nmov dword ptr [rdi+12], edx\nlock cmpxchg8b qword ptr "     \
	  "[rdi+8]")                                                                               \
	X(cmpxchg16b_ne, 0, "cmpxchg16b [rdi+16]")                                                 \
	X(cmpxchg16b_eq, 0,                                                                        \
	  "mov qword ptr [rdi+16], rax\nmov qword ptr [rdi+24], rdx\nlock cmpxchg16b [rdi+16]")    \
	/* bswap, lea */                                                                           \
	X(bswap32, 0, "bswap eax")                                                                 \
	X(bswap64, 0, "bswap rax")                                                                 \
	X(bswap64x, 0, "bswap r9")                                                                 \
	X(bswap16, 0, ".byte 0x66, 0x0f, 0xcb")                                                    \
	X(lea_bisd64, 0, "lea rax, [rbx+rcx*4+0x12345]")                                           \
	X(lea_bisd32, 0, "lea eax, [rbx+rcx*8-1]")                                                 \
	X(lea_bisd16, 0, "lea ax, [rbx+rdx*2+7]")                                                  \
	X(lea_a32, 0, "lea eax, [ebx+ecx*2+5]")                                                    \
	X(lea_a32_r64, 0, "lea rax, [ebx+ecx*2-5]")                                                \
	X(lea_a32_r16, 0, "lea ax, [ebx+ecx]")                                                     \
	X(lea_rip, 0, "lea rax, [rip+0x100]")                                                      \
	X(lea_rip32, 0, "lea eax, [rip-8]")                                                        \
	X(lea_eip, 0, ".byte 0x67, 0x48, 0x8d, 0x05, 0x10, 0, 0, 0")                               \
	X(lea_id, 0, "lea rax, [rcx*8+0x10]")                                                      \
	X(lea_id32, 0, "lea edx, [rcx*2-0x10]")                                                    \
	X(lea_b, 0, "lea rax, [rbx]")                                                              \
	X(lea_bd32, 0, "lea ecx, [rdx+0x7fffffff]")                                                \
	X(lea_bi, 0, "lea r10, [r11+r12]")                                                         \
	X(lea_fs, 0, ".byte 0x64, 0x48, 0x8d, 0x03")                                               \
	/* add, adc, sub, sbb, and, or, xor, cmp, test */                                          \
	ALU_FORMS(X, add, 0)                                                                       \
	ALU_FORMS(X, adc, 0)                                                                       \
	ALU_FORMS(X, sub, 0)                                                                       \
	ALU_FORMS(X, sbb, 0)                                                                       \
	ALU_FORMS(X, and, FL_AF)                                                                   \
	ALU_FORMS(X, or, FL_AF)                                                                    \
	ALU_FORMS(X, xor, FL_AF)                                                                   \
	ALU_FORMS(X, cmp, 0)                                                                       \
	ALU_FORMS(X, test, FL_AF)                                                                  \
	ALU_ADDR_FORMS(X, add, 0)                                                                  \
	ALU_ADDR_FORMS(X, adc, 0)                                                                  \
	ALU_ADDR_FORMS(X, sub, 0)                                                                  \
	ALU_ADDR_FORMS(X, sbb, 0)                                                                  \
	ALU_ADDR_FORMS(X, and, FL_AF)                                                              \
	ALU_ADDR_FORMS(X, or, FL_AF)                                                               \
	ALU_ADDR_FORMS(X, xor, FL_AF)                                                              \
	ALU_ADDR_FORMS(X, cmp, 0)                                                                  \
	X(test_mr8_sib, FL_AF, "and ecx, 0x1f\ntest byte ptr [rdi+rcx+0x40], ah")                  \
	X(test_mr16_rip, FL_AF, "test word ptr [rip+0x1802], dx")                                  \
	X(test_mi32_sib, FL_AF, "and ecx, 0x1f\ntest dword ptr [rdi+rcx*4], 0x80000001")           \
	X(test_mi8_rip, FL_AF, "test byte ptr [rip+0x1801], 0x81")                                 \
	X(test_mr64_cross, FL_AF, "test qword ptr [rdi-6], rcx")                                   \
	X(test_mi16_a32, FL_AF, "test word ptr [edi+2], 0x8001")                                   \
	CARRY_CHAINS(X, adc)                                                                       \
	CARRY_CHAINS(X, sbb)                                                                       \
	INCDEC_CHAINS(X, inc)                                                                      \
	INCDEC_CHAINS(X, dec)                                                                      \
	LOCK_FORMS(X, add)                                                                         \
	LOCK_FORMS(X, adc)                                                                         \
	LOCK_FORMS(X, sub)                                                                         \
	LOCK_FORMS(X, sbb)                                                                         \
	LOCK_FORMS(X, and)                                                                         \
	LOCK_FORMS(X, or)                                                                          \
	LOCK_FORMS(X, xor)                                                                         \
	X(chain_cmp_adc, 0, "cmp rax, rbx\nadc rcx, rdx")                                          \
	X(chain_add_adc, 0, "add eax, ebx\nadc ecx, edx")                                          \
	X(chain_add_adc64, 0, "add rax, rbx\nadc rcx, rdx\nadc r8, r9")                            \
	X(chain_sub_sbb8, 0, "sub al, bl\nsbb cl, dl")                                             \
	X(chain_xor_adc, FL_AF, "xor eax, ebx\nadc ecx, edx")                                      \
	X(chain_inc_adc, 0, "inc rcx\ninc rcx\nadc rax, rbx")                                      \
	X(chain_dec_sbb, 0, "dec ecx\nsbb eax, ebx")                                               \
	X(chain_neg_sbb, 0, "neg rax\nsbb rcx, rcx")                                               \
	X(chain_sbb_sbb, 0, "sub rax, rbx\nsbb rcx, rdx\nsbb r8, r9")                              \
	X(chain_adc_inc, 0, "add rax, rbx\ninc rcx\nadc rdx, rsi")                                 \
	/* neg, not, inc, dec */                                                                   \
	UNARY_FORMS(X, neg)                                                                        \
	UNARY_FORMS(X, not )                                                                       \
	UNARY_FORMS(X, inc)                                                                        \
	UNARY_FORMS(X, dec)                                                                        \
	X(neg_r16x, 0, "neg r9w")                                                                  \
	X(not_r8x, 0, "not r10b")                                                                  \
	X(neg_m16_sib, 0, "and ecx, 0x1f\nneg word ptr [rdi+rcx*2+0x40]")                          \
	X(not_m32_rip, 0, "not dword ptr [rip+0x1804]")                                            \
	/* push, pop */                                                                            \
	X(push_pop_r64, 0, "push rax\npop rbx")                                                    \
	X(push_pop_r64x, 0, "push r15\npop r14")                                                   \
	X(push_rsp, 0, "push rsp\npop rax")                                                        \
	X(push_imm8, 0, "push 0x12\npop rax")                                                      \
	X(push_imm8n, 0, "push -1\npop rcx")                                                       \
	X(push_imm32, 0, "push 0x12345678\npop rdx")                                               \
	X(push_imm32n, 0, "push -0x12345678\npop rdx")                                             \
	X(push_imm16s8, 0, ".byte 0x66, 0x6a, 0xfe\npop ax")                                       \
	X(push_imm16, 0, ".byte 0x66, 0x68, 0x34, 0x12\npop cx")                                   \
	X(push_pop_r16, 0, "push ax\npop bx")                                                      \
	X(push_pop_m64, 0, "push qword ptr [rdi+8]\npop qword ptr [rdi+16]")                       \
	X(push_pop_m16, 0, "push word ptr [rdi+2]\npop word ptr [rdi+4]")                          \
	X(push_m_rsp, 0, "push qword ptr [rsp]\npop rax\npop rbx")                                 \
	X(pop_m_rsp, 0, "pop qword ptr [rsp]")                                                     \
	X(pop_m_rsp8, 0, "pop qword ptr [rsp+8]")                                                  \
	X(pop_m_rip, 0, "pop qword ptr [rip+0x1800]")                                              \
	X(pop_three, 0, "pop rax\npop rbx\npop rcx")                                               \
	X(pop_rsp, 0, "pop rsp")                                                                   \
	X(pop_sp, 0, ".byte 0x66, 0x5c")                                                           \
	X(push_fs, 0, "push fs\npop rax")                                                          \
	X(push_gs, 0, "push gs\npop rbx")                                                          \
	X(push_fs16, 0, ".byte 0x66, 0x0f, 0xa0\npop ax")                                          \
	/* flags */                                                                                \
	X(pushfq, 0, "pushfq\npop rax")                                                            \
	X(pushf16, 0, ".byte 0x66, 0x9c\npop ax")                                                  \
	X(pushf_lazy, 0, "cmp rax, rbx\npushfq\npop rcx")                                          \
	X(popfq, 0, "and rax, -0x4101\npush rax\npopfq\npushfq\npop rbx")                          \
	X(popf16, 0, "and eax, -0x4101\npush ax\n.byte 0x66, 0x9d\npushfq\npop rbx")               \
	X(lahf, 0, "lahf")                                                                         \
	X(lahf_lazy, 0, "sub eax, ebx\nlahf")                                                      \
	X(sahf, 0, "sahf")                                                                         \
	X(sahf_lazy, 0, "add rax, rbx\nsahf\nsetc cl")                                             \
	X(clc, 0, "clc")                                                                           \
	X(stc, 0, "stc")                                                                           \
	X(cmc, 0, "cmc")                                                                           \
	X(cmc_lazy, 0, "cmp ecx, edx\ncmc\nadc rax, rbx")                                          \
	X(stc_adc, 0, "add rax, rbx\nstc\nadc rcx, rdx")                                           \
	X(clc_sbb, 0, "sub rax, rbx\nclc\nsbb rcx, rdx")                                           \
	X(std_pushf, 0, "std\npushfq\npop rax")                                                    \
	X(cld_pushf, 0, "cld\npushfq\npop rax")                                                    \
	/* cbw family */                                                                           \
	X(cbw, 0, "cbw")                                                                           \
	X(cwde, 0, "cwde")                                                                         \
	X(cdqe, 0, "cdqe")                                                                         \
	X(cwd, 0, "cwd")                                                                           \
	X(cdq, 0, "cdq")                                                                           \
	X(cqo, 0, "cqo")                                                                           \
	/* cmovcc, setcc */                                                                        \
	FOR_CC(CMOV_FORMS, X)                                                                      \
	FOR_CC(SET_FORMS, X)                                                                       \
	/* xlat */                                                                                 \
	X(xlat, 0, "lea rbx, [rdi+0x100]\n.byte 0xd7")                                             \
	X(xlat_rexw, 0, "lea rbx, [rdi+0x100]\n.byte 0x48, 0xd7")                                  \
	X(xlat_a32, 0, "lea ebx, [rdi+0x100]\n.byte 0x67, 0xd7")                                   \
	/* the NOP family */                                                                       \
	X(nop, 0, "nop")                                                                           \
	X(nop66, 0, ".byte 0x66, 0x90")                                                            \
	X(nop_m, 0, ".byte 0x0f, 0x1f, 0x00")                                                      \
	X(nop_m8, 0, ".byte 0x0f, 0x1f, 0x84, 0x00, 0, 0, 0, 0")                                   \
	X(nop_m6, 0, ".byte 0x66, 0x0f, 0x1f, 0x44, 0, 0")                                         \
	X(nop_hint18, 0, ".byte 0x0f, 0x18, 0x20")                                                 \
	X(nop_hint19, 0, ".byte 0x0f, 0x19, 0x04, 0x24")                                           \
	X(nop_hint1e, 0, ".byte 0x0f, 0x1e, 0xfa")                                                 \
	X(nop_hint1d, 0, ".byte 0x0f, 0x1d, 0xc0")                                                 \
	X(endbr64, 0, "endbr64")                                                                   \
	X(endbr32, 0, ".byte 0xf3, 0x0f, 0x1e, 0xfb")                                              \
	X(rdsspq, 0, ".byte 0xf3, 0x48, 0x0f, 0x1e, 0xc8")                                         \
	X(bndmov, 0, ".byte 0x66, 0x0f, 0x1a, 0x00")                                               \
	X(bndcl, 0, ".byte 0xf3, 0x0f, 0x1a, 0x00")                                                \
	X(cldemote, 0, ".byte 0x0f, 0x1c, 0x00")

#define SNIP_ASM(name, undef, text)                                                                \
	__asm__(".pushsection .rodata\n"                                                           \
		".intel_syntax noprefix\n"                                                         \
		".globl snip_" #name "\n"                                                          \
		".hidden snip_" #name "\n"                                                         \
		".globl snip_" #name "_end\n"                                                      \
		".hidden snip_" #name "_end\n"                                                     \
		"snip_" #name ":\n" text "\n"                                                      \
		"snip_" #name "_end:\n"                                                            \
		".att_syntax prefix\n"                                                             \
		".popsection\n");
CASES(SNIP_ASM)

#define SNIP_DECL(name, undef, text)                                                               \
	__attribute__((visibility("hidden"))) extern const uint8_t snip_##name[],                  \
	    snip_##name##_end[];
CASES(SNIP_DECL)

struct tcase {
	const char *name;
	const uint8_t *begin, *end;
	uint64_t undef; /* flags the SDM leaves undefined after this snippet */
};

#define SNIP_ENTRY(name, undef, text) {#name, snip_##name, snip_##name##_end, undef},
static const struct tcase cases[] = {CASES(SNIP_ENTRY)};

/* ---- values -------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static const uint64_t edges[] = {
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x7fffffff,
    0x80000000,
    0xffffffff,
    0x100000000ull,
    0x7fffffffffffffffull,
    0x8000000000000000ull,
    0xffffffffffffffffull,
    0xfffffffffffffffeull,
    0xffffffff80000000ull,
    0x0000000f0000000full,
};

static uint64_t value(void)
{
	uint64_t r = rnd();
	switch (r & 7) {
	case 0:
	case 1:
	case 2:
		return edges[(r >> 8) % (sizeof(edges) / sizeof(edges[0]))];
	case 3: /* an edge value with a random byte here and there */
		return edges[(r >> 8) % (sizeof(edges) / sizeof(edges[0]))] ^ (rnd() & 0xff00ff);
	default:
		return rnd();
	}
}

/* Registers, flags and memory for one iteration: pointers in rdi and rsp, the rest random
 * with equal pairs now and then (so comparisons come out equal too). */
static void make_state(struct regs *r, uint8_t *image)
{
	for (unsigned i = 0; i < 16; i++)
		r->gpr[i] = value();
	if ((rnd() & 7) == 0)
		r->gpr[GPR_RBX] = r->gpr[GPR_RAX];
	if ((rnd() & 7) == 0)
		r->gpr[GPR_RDX] = r->gpr[GPR_RCX];
	r->gpr[GPR_RDI] = DATA;
	r->gpr[GPR_RSP] = STACK_TOP;
	r->rflags = (rnd() & (FL_ARITH | FL_DF)) | RFLAGS_FIXED | FL_IF;
	for (size_t i = 0; i < CMP_SIZE; i += 8) {
		uint64_t v = value();
		memcpy(image + i, &v, 8);
	}
	if ((rnd() & 3) == 0)
		memcpy(image + (DATA - CMP_LO) + 8, &r->gpr[GPR_RAX], 8);
}

/* ---- the differential run ------------------------------------------------------------------- */

static uint8_t image[CMP_SIZE], native_mem[CMP_SIZE];

static void host_selectors(uint16_t sel[6])
{
	__asm__ volatile("mov %%es, %0" : "=r"(sel[SEG_ES]));
	__asm__ volatile("mov %%cs, %0" : "=r"(sel[SEG_CS]));
	__asm__ volatile("mov %%ss, %0" : "=r"(sel[SEG_SS]));
	__asm__ volatile("mov %%ds, %0" : "=r"(sel[SEG_DS]));
	__asm__ volatile("mov %%fs, %0" : "=r"(sel[SEG_FS]));
	__asm__ volatile("mov %%gs, %0" : "=r"(sel[SEG_GS]));
}

static void print_regs(const char *what, const struct regs *r)
{
	fprintf(stderr, "  %s:", what);
	for (unsigned i = 0; i < 16; i++)
		fprintf(stderr, "%s r%u=%#llx", i % 4 ? "" : "\n   ", i,
			(unsigned long long)r->gpr[i]);
	fprintf(stderr, "\n    rflags=%#llx\n", (unsigned long long)r->rflags);
}

/* Copies a snippet to CODE so that it ends 8-byte aligned (RIP-relative operands of a last
 * instruction then land aligned, as do the stack slots), followed by an indirect jump to
 * native_return: back to the runner natively, a fetch fault on the soft CPU (native_return is
 * not guest memory), which ends its run. Returns the entry point. */
static uint64_t place_snippet(const struct tcase *t)
{
	size_t len = (size_t)(t->end - t->begin);
	assert_true(len + 32 <= SNIP_MAX);
	size_t pad = (8 - len % 8) % 8;
	uint8_t *code = (uint8_t *)CODE;
	memset(code, 0xcc, 0x1000);
	memcpy(code + pad, t->begin, len);
	/* jmp [rip+2]; two bytes of int3; .quad native_return (8-aligned) */
	static const uint8_t jmp[] = {0xff, 0x25, 2, 0, 0, 0, 0xcc, 0xcc};
	uint64_t ret = (uint64_t)(uintptr_t)native_return;
	memcpy(code + pad + len, jmp, sizeof(jmp));
	memcpy(code + pad + len + sizeof(jmp), &ret, 8);
	return CODE + pad;
}

/* Runs one case over many states; returns the number of mismatches (details on stderr). */
static unsigned run_case(const struct tcase *t)
{
	uint64_t entry = place_snippet(t);
	uint64_t ret = (uint64_t)(uintptr_t)native_return;
	struct soft_cpu *c = new_cpu();
	uint16_t sel[6];
	host_selectors(sel);
	for (unsigned s = 0; s < 6; s++)
		c->seg[s].selector = sel[s];
	unsigned bad = 0;
	for (unsigned it = 0; it < ITERATIONS && bad < 3; it++) {
		struct regs in, nat, soft;
		make_state(&in, image);
		memcpy((void *)CMP_LO, image, CMP_SIZE);
		nat = in;
		native_run(&nat, (const void *)entry);
		memcpy(native_mem, (void *)CMP_LO, CMP_SIZE);

		memcpy((void *)CMP_LO, image, CMP_SIZE);
		memcpy(c->gpr, in.gpr, sizeof(c->gpr));
		c->rflags = in.rflags;
		c->lf.op = LF_NONE;
		c->rip = entry;
		enum soft_exit ex = soft_cpu_run(c);
		memcpy(soft.gpr, c->gpr, sizeof(soft.gpr));
		soft.rflags = soft_flags(c);

		uint64_t mask = FLAGS_CMP & ~t->undef;
		bool ok = ex == SOFT_EXIT_EXCEPTION && c->exc_vector == EXC_PF && c->rip == ret;
		ok = ok && !memcmp(nat.gpr, soft.gpr, sizeof(nat.gpr));
		ok = ok && (nat.rflags & mask) == (soft.rflags & mask);
		bool mem_ok = !memcmp(native_mem, (void *)CMP_LO, CMP_SIZE);
		if (ok && mem_ok)
			continue;
		bad++;
		fprintf(stderr, "MISMATCH %s (iteration %u): exit %d vector %d rip %#llx\n",
			t->name, it, (int)ex, c->exc_vector, (unsigned long long)c->rip);
		print_regs("in", &in);
		print_regs("native", &nat);
		print_regs("soft", &soft);
		for (size_t i = 0; i < CMP_SIZE && !mem_ok; i++)
			if (native_mem[i] != ((uint8_t *)CMP_LO)[i])
				fprintf(stderr, "    memory %#llx: native %02x soft %02x\n",
					(unsigned long long)(CMP_LO + i), native_mem[i],
					((uint8_t *)CMP_LO)[i]);
	}
	soft_cpu_destroy(c);
	return bad;
}

static void test_differential(void **state)
{
	(void)state;
	unsigned failed = 0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (run_case(&cases[i]))
			failed++;
	if (failed)
		fprintf(stderr, "%u of %zu cases differ\n", failed,
			sizeof(cases) / sizeof(cases[0]));
	assert_int_equal(failed, 0);
}

/* ---- soft-only checks -------------------------------------------------------------------------- */

#define HAMMER  100000
#define STR_(x) #x
#define STR(x)  STR_(x)

/* Fills the TLB for the pages at r10 (a read) and r9 (a write of r8b, which is 0). */
#define WARM "mov r11b, byte ptr [r10]\nmov byte ptr [r9], r8b\n"

/* Programs for the soft CPU alone: X(name, text). */
#define PROGS(X)                                                                                   \
	X(p_cli, "cli\nsyscall")                                                                   \
	X(p_sti, "sti\nsyscall")                                                                   \
	X(p_popf_ones, "push -1\npopfq\npushfq\npop rax\nsyscall")                                 \
	X(p_popf_zero, "push 0\npopfq\npushfq\npop rax\nsyscall")                                  \
	X(p_popf16_zero, ".byte 0x66, 0x6a, 0\n.byte 0x66, 0x9d\npushfq\npop rax\nsyscall")        \
	X(p_lock_xadd_rbx, "lock xadd dword ptr [rbx], eax\nsyscall")                              \
	X(p_cmpxchg_rbx, "cmpxchg dword ptr [rbx], ecx\nsyscall")                                  \
	X(p_push, "push rax\nsyscall")                                                             \
	X(p_pop_rbx, "pop qword ptr [rbx]\nsyscall")                                               \
	X(p_popfq, "popfq\nsyscall")                                                               \
	X(p_cx16_rdi, "cmpxchg16b [rdi]\nsyscall")                                                 \
	X(p_add_rbx, "add dword ptr [rbx], eax\nsyscall")                                          \
	X(p_cmp_only, WARM "cmp eax, edx\nsyscall")                                                \
	X(p_f_add16, WARM "cmp eax, edx\nadd word ptr [rbx], ax\nsyscall")                         \
	X(p_f_xor64, WARM "cmp eax, edx\nxor qword ptr [rbx], rax\nsyscall")                       \
	X(p_f_adc8, WARM "cmp eax, edx\nadc byte ptr [rbx+rcx], 1\nsyscall")                       \
	X(p_f_sub32, WARM "cmp eax, edx\nsub dword ptr [rbx+rcx*4], edx\nsyscall")                 \
	X(p_f_inc8, WARM "cmp eax, edx\ninc byte ptr [rbx+rcx]\nsyscall")                          \
	X(p_f_dec16, WARM "cmp eax, edx\ndec word ptr [rbx]\nsyscall")                             \
	X(p_f_mov16, WARM "cmp eax, edx\nmov word ptr [rbx], 0x1234\nsyscall")                     \
	X(p_f_mov8, WARM "cmp eax, edx\nmov byte ptr [rbx+rcx*2], ah\nsyscall")                    \
	X(p_f_load16, WARM "cmp eax, edx\nmov ax, word ptr [rbx]\nsyscall")                        \
	X(p_f_zx16, WARM "cmp eax, edx\nmovzx eax, word ptr [rbx+rcx*2]\nsyscall")                 \
	X(p_f_sx8, WARM "cmp eax, edx\nmovsx rax, byte ptr [rbx]\nsyscall")                        \
	X(p_f_cmp16, WARM "cmp eax, edx\ncmp word ptr [rbx], 5\nsyscall")                          \
	X(p_f_or_load, WARM "cmp eax, edx\nor eax, dword ptr [rbx+rcx]\nsyscall")                  \
	X(p_f_test8, WARM "cmp eax, edx\ntest byte ptr [rbx], al\nsyscall")                        \
	X(p_xadd_rbx, "xadd dword ptr [rbx], eax\nsyscall")                                        \
	X(p_lock_add_q, "lock add qword ptr [rbx], rax\nsyscall")                                  \
	X(p_lock_xadd_d, "lock xadd dword ptr [rbx], ecx\nsyscall")                                \
	X(p_xchg_q, "xchg qword ptr [rbx], rdx\nsyscall")                                          \
	X(p_lock_cx8, "lock cmpxchg8b qword ptr [rbx]\nsyscall")                                   \
	X(p_lock_cx_q, "lock cmpxchg qword ptr [rbx], rcx\nsyscall")                               \
	X(p_lock_neg_w, "lock neg word ptr [rbx]\nsyscall")                                        \
	X(p_lock_sbb_d, "stc\nlock sbb dword ptr [rbx], 1\nsyscall")                               \
	X(p_mov_fs, "mov fs, eax\nsyscall")                                                        \
	X(p_mov_ss_null, "xor eax, eax\nmov ss, eax\nsyscall")                                     \
	X(p_mov_ds_null, "xor eax, eax\nmov ds, eax\nsyscall")                                     \
	X(p_fsrel, "mov rax, qword ptr fs:[rbx]\n.byte 0x64, 0xd7\n.byte 0x64, 0x48, 0x8d, 0x13\n" \
		   "push fs\nsyscall")                                                             \
	X(p_code32, ".code32\npushad\nxor eax, eax\nxor ebx, ebx\npopad\npush -2\n"                \
		    ".byte 0x66, 0x6a, 0x05\npop ax\npop ebx\n"                                    \
		    "mov eax, dword ptr ds:[0x30005000]\n.code64")                                 \
	X(p_mov_cr0, ".byte 0x0f, 0x20, 0xc0\nsyscall")                                            \
	X(p_hammer, "mov r8d, " STR(HAMMER) "\n"                                                   \
					    "1:\n"                                                 \
					    "lock add qword ptr [rdi], 1\n"                        \
					    "mov eax, 2\n"                                         \
					    "lock xadd qword ptr [rdi+8], rax\n"                   \
					    "lock inc dword ptr [rdi+16]\n"                        \
					    "2:\n"                                                 \
					    "mov rax, qword ptr [rdi+24]\n"                        \
					    "lea rdx, [rax+1]\n"                                   \
					    "lock cmpxchg qword ptr [rdi+24], rdx\n"               \
					    "jnz 2b\n"                                             \
					    "3:\n"                                                 \
					    "mov rax, qword ptr [rdi+32]\n"                        \
					    "mov rdx, qword ptr [rdi+40]\n"                        \
					    "lea rbx, [rax+1]\n"                                   \
					    "mov rcx, rdx\n"                                       \
					    "cmp rbx, 1\n"                                         \
					    "adc rcx, 0\n"                                         \
					    "lock cmpxchg16b [rdi+32]\n"                           \
					    "jnz 3b\n"                                             \
					    "lock xor byte ptr [rdi+48], 1\n"                      \
					    "dec r8d\n"                                            \
					    "jnz 1b\n"                                             \
					    "syscall")                                             \
	X(p_hot, "mov ecx, 1000000\n"                                                              \
		 "1:\n"                                                                            \
		 "add rax, rbx\n"                                                                  \
		 "sub rdx, 3\n"                                                                    \
		 "mov r8, qword ptr [rdi+8]\n"                                                     \
		 "mov qword ptr [rdi+16], r8\n"                                                    \
		 "lea r9, [rax+rbx*2]\n"                                                           \
		 "cmp rax, r9\n"                                                                   \
		 "cmovl r10, r11\n"                                                                \
		 "push rax\n"                                                                      \
		 "pop rax\n"                                                                       \
		 "xor r12d, r12d\n"                                                                \
		 "mov r13d, eax\n"                                                                 \
		 "test rax, rax\n"                                                                 \
		 "dec ecx\n"                                                                       \
		 "jnz 1b\n"                                                                        \
		 "syscall")

#define PROG_ASM(name, text)  SNIP_ASM(name, 0, text)
#define PROG_DECL(name, text) SNIP_DECL(name, 0, text)
PROGS(PROG_ASM)
PROGS(PROG_DECL)

#define PROG(name) snip_##name, (size_t)(snip_##name##_end - snip_##name)

/* A fresh CPU about to run a program (copied to CODE) over zeroed data; rdi = DATA. */
static struct soft_cpu *cpu_with(const uint8_t *bytes, size_t len)
{
	memset((void *)CODE, 0xcc, 0x1000);
	memcpy((void *)CODE, bytes, len);
	memset((void *)CMP_LO, 0, CMP_SIZE);
	struct soft_cpu *c = new_cpu();
	c->rip = CODE;
	c->gpr[GPR_RSP] = STACK_TOP;
	c->gpr[GPR_RDI] = DATA;
	return c;
}

static void expect_fault(struct soft_cpu *c, int vector, uint32_t error, uint64_t rip)
{
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_EXCEPTION);
	assert_int_equal(c->exc_vector, vector);
	assert_int_equal(c->exc_error, error);
	assert_int_equal(c->rip, rip);
}

static void test_cli_sti_popf_privilege(void **state)
{
	(void)state;
	/* CPL 3, IOPL 0: #GP(0). */
	struct soft_cpu *c = cpu_with(PROG(p_cli));
	expect_fault(c, EXC_GP, 0, CODE);
	assert_true(c->rflags & FL_IF);
	soft_cpu_destroy(c);
	c = cpu_with(PROG(p_sti));
	c->rflags &= ~(uint64_t)FL_IF;
	expect_fault(c, EXC_GP, 0, CODE);
	soft_cpu_destroy(c);
	/* IOPL 3 lets CPL 3 change IF; CPL 0 may anyway. */
	c = cpu_with(PROG(p_cli));
	c->rflags |= FLAG_IOPL;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_false(c->rflags & FL_IF);
	soft_cpu_destroy(c);
	c = cpu_with(PROG(p_sti));
	c->seg[SEG_CS].dpl = 0;
	c->rflags &= ~(uint64_t)FL_IF;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_true(c->rflags & FL_IF);
	soft_cpu_destroy(c);

	/* popfq of all ones at CPL 3, IOPL 0: IF and IOPL stay, RF/VM/VIF/VIP and the reserved
	 * bits stay clear, everything else is set. */
	c = cpu_with(PROG(p_popf_ones));
	c->rflags = RFLAGS_FIXED;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	uint64_t f = c->gpr[GPR_RAX];
	uint64_t writable = FL_ARITH | FL_TF | FL_DF | FLAG_NT | FLAG_AC | FLAG_ID;
	assert_int_equal(f, writable | RFLAGS_FIXED);
	soft_cpu_destroy(c);
	/* CPL 3 with IOPL 3: IF changes, IOPL does not. */
	c = cpu_with(PROG(p_popf_ones));
	c->rflags = RFLAGS_FIXED | FLAG_IOPL;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(c->gpr[GPR_RAX], writable | RFLAGS_FIXED | FL_IF | FLAG_IOPL);
	soft_cpu_destroy(c);
	c = cpu_with(PROG(p_popf_zero));
	c->rflags = RFLAGS_FIXED | FLAG_IOPL | FL_IF;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(c->gpr[GPR_RAX], RFLAGS_FIXED | FLAG_IOPL);
	soft_cpu_destroy(c);
	/* CPL 0: IOPL and IF both change. */
	c = cpu_with(PROG(p_popf_zero));
	c->seg[SEG_CS].dpl = 0;
	c->rflags = RFLAGS_FIXED | FLAG_IOPL | FL_IF;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(c->gpr[GPR_RAX], RFLAGS_FIXED);
	soft_cpu_destroy(c);
	/* A 16-bit popf leaves AC and ID alone. */
	c = cpu_with(PROG(p_popf16_zero));
	c->rflags = RFLAGS_FIXED | FLAG_AC | FLAG_ID | FL_CF | FL_IF;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(c->gpr[GPR_RAX], RFLAGS_FIXED | FLAG_AC | FLAG_ID | FL_IF);
	assert_int_equal(c->gpr[GPR_RSP], STACK_TOP);
	soft_cpu_destroy(c);
}

/* Faults leave registers, flags and memory as they were. */
static void test_faults(void **state)
{
	(void)state;
	struct soft_cpu *c = cpu_with(PROG(p_lock_xadd_rbx));
	c->gpr[GPR_RBX] = RO_PAGE + 8;
	c->gpr[GPR_RAX] = 0x1234;
	c->rflags |= FL_CF;
	expect_fault(c, EXC_PF, 0x7, CODE);
	assert_int_equal(c->gpr[GPR_RAX], 0x1234);
	assert_true(soft_flags(c) & FL_CF);
	soft_cpu_destroy(c);

	/* A cmpxchg that fails still writes: #PF on a read-only page. */
	c = cpu_with(PROG(p_cmpxchg_rbx));
	c->gpr[GPR_RBX] = RO_PAGE;
	c->gpr[GPR_RAX] = 0x55; /* memory holds 0 */
	expect_fault(c, EXC_PF, 0x7, CODE);
	assert_int_equal(c->gpr[GPR_RAX], 0x55);
	soft_cpu_destroy(c);

	c = cpu_with(PROG(p_push));
	c->gpr[GPR_RSP] = RO_PAGE + 0x100;
	expect_fault(c, EXC_PF, 0x7, CODE);
	assert_int_equal(c->gpr[GPR_RSP], RO_PAGE + 0x100);
	soft_cpu_destroy(c);

	c = cpu_with(PROG(p_pop_rbx));
	c->gpr[GPR_RBX] = RO_PAGE;
	expect_fault(c, EXC_PF, 0x7, CODE);
	assert_int_equal(c->gpr[GPR_RSP], STACK_TOP);
	soft_cpu_destroy(c);

	c = cpu_with(PROG(p_popfq));
	c->gpr[GPR_RSP] = NO_PAGE;
	c->rflags |= FL_ZF;
	expect_fault(c, EXC_PF, 0x4, CODE);
	assert_true(soft_flags(c) & FL_ZF);
	assert_int_equal(c->gpr[GPR_RSP], NO_PAGE);
	soft_cpu_destroy(c);

	/* A non-canonical stack address: #SS(0). */
	c = cpu_with(PROG(p_push));
	c->gpr[GPR_RSP] = 0x8000000000000100ull;
	expect_fault(c, EXC_SS, 0, CODE);
	soft_cpu_destroy(c);

	/* cmpxchg16b needs 16-byte alignment: #GP(0). */
	c = cpu_with(PROG(p_cx16_rdi));
	c->gpr[GPR_RDI] = DATA + 8;
	expect_fault(c, EXC_GP, 0, CODE);
	soft_cpu_destroy(c);

	/* A read-modify-write of a page that is not there: nothing written. */
	c = cpu_with(PROG(p_add_rbx));
	c->gpr[GPR_RBX] = NO_PAGE + 4;
	c->gpr[GPR_RAX] = 1;
	expect_fault(c, EXC_PF, 0x6, CODE);
	soft_cpu_destroy(c);
	c = cpu_with(PROG(p_xadd_rbx));
	c->gpr[GPR_RBX] = NO_PAGE + 4;
	c->gpr[GPR_RAX] = 1;
	expect_fault(c, EXC_PF, 0x6, CODE);
	assert_int_equal(c->gpr[GPR_RAX], 1);
	soft_cpu_destroy(c);
}

/* The specialized memory forms on a page that is read-only or not there, and straddling into
 * one: a write faults on write access before anything is read or written (also a compare that
 * only reads does not), reported with the address of the page that failed; registers, lazy
 * flags (of a cmp before the faulting instruction) and memory stay as they were. */
static void test_memory_form_faults(void **state)
{
	(void)state;
	const struct {
		const uint8_t *code;
		size_t len;
		uint64_t rbx, rcx;
		uint64_t at;      /* the first byte accessed */
		uint32_t error;   /* 0: no fault */
		uint64_t address; /* of the fault */
	} t[] = {
	    {PROG(p_f_add16), RO_PAGE + 2, 0, RO_PAGE + 2, 0x7, RO_PAGE + 2},
	    {PROG(p_f_add16), RO_PAGE - 1, 0, RO_PAGE - 1, 0x7, RO_PAGE},
	    {PROG(p_f_xor64), RO_PAGE - 4, 0, RO_PAGE - 4, 0x7, RO_PAGE},
	    {PROG(p_f_xor64), NO_PAGE - 8, 0, NO_PAGE - 8, 0x7, NO_PAGE - 8},
	    {PROG(p_f_adc8), RO_PAGE, 9, RO_PAGE + 9, 0x7, RO_PAGE + 9},
	    {PROG(p_f_sub32), NO_PAGE, 3, NO_PAGE + 12, 0x6, NO_PAGE + 12},
	    {PROG(p_f_sub32), RO_PAGE - 14, 3, RO_PAGE - 2, 0x7, RO_PAGE},
	    {PROG(p_f_sub32), NO_PAGE - 14, 3, NO_PAGE - 2, 0x7, NO_PAGE - 2},
	    {PROG(p_f_inc8), RO_PAGE + 0x100, 1, RO_PAGE + 0x101, 0x7, RO_PAGE + 0x101},
	    {PROG(p_f_dec16), RO_PAGE - 1, 0, RO_PAGE - 1, 0x7, RO_PAGE},
	    {PROG(p_f_mov16), RO_PAGE - 1, 0, RO_PAGE - 1, 0x7, RO_PAGE},
	    {PROG(p_f_mov8), NO_PAGE, 2, NO_PAGE + 4, 0x6, NO_PAGE + 4},
	    {PROG(p_f_load16), NO_PAGE - 1, 0, NO_PAGE - 1, 0x4, NO_PAGE},
	    {PROG(p_f_load16), NO_PAGE + 6, 0, NO_PAGE + 6, 0x4, NO_PAGE + 6},
	    {PROG(p_f_zx16), NO_PAGE - 3, 1, NO_PAGE - 1, 0x4, NO_PAGE},
	    {PROG(p_f_sx8), NO_PAGE, 0, NO_PAGE, 0x4, NO_PAGE},
	    {PROG(p_f_cmp16), NO_PAGE - 1, 0, NO_PAGE - 1, 0x4, NO_PAGE},
	    {PROG(p_f_or_load), NO_PAGE - 2, 0, NO_PAGE - 2, 0x4, NO_PAGE},
	    {PROG(p_f_test8), NO_PAGE + 0x800, 0, NO_PAGE + 0x800, 0x4, NO_PAGE + 0x800},
	    /* Reads of the read-only page are fine. */
	    {PROG(p_f_cmp16), RO_PAGE - 1, 0, RO_PAGE - 1, 0, 0},
	    {PROG(p_f_load16), RO_PAGE + 0xffe, 0, RO_PAGE + 0xffe, 0, 0},
	    {PROG(p_f_test8), RO_PAGE, 0, RO_PAGE, 0, 0},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		uint64_t page = t[i].at & ~0xfffull;
		uint64_t gpr[16];
		for (unsigned r = 0; r < 16; r++)
			gpr[r] = r == GPR_RSP ? STACK_TOP : r == GPR_RDI ? DATA : value();
		gpr[GPR_RBX] = t[i].rbx;
		gpr[GPR_RCX] = t[i].rcx;
		/* The TLB holds the page of the first byte for reading, and for writing where it
		 * is writable, as after earlier accesses. */
		gpr[GPR_R10] = page < NO_PAGE ? page : DATA;
		gpr[GPR_R9] = page < RO_PAGE ? page : DATA;
		gpr[GPR_R8] = 0;
		/* The registers and flags after the instructions before the one that faults. */
		struct soft_cpu *c = cpu_with(PROG(p_cmp_only));
		memcpy(c->gpr, gpr, sizeof(gpr));
		assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
		uint64_t flags = soft_flags(c) & FL_ARITH;
		memcpy(gpr, c->gpr, sizeof(gpr));
		soft_cpu_destroy(c);
		c = cpu_with(t[i].code, t[i].len);
		memcpy(c->gpr, gpr, sizeof(gpr));
		if (!t[i].error) {
			assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
		} else {
			expect_fault(c, EXC_PF, t[i].error, CODE + 8);
			assert_int_equal(c->exc_addr, t[i].address);
			assert_memory_equal(c->gpr, gpr, sizeof(gpr));
			assert_int_equal(soft_flags(c) & FL_ARITH, flags);
		}
		for (size_t k = 0; k < CMP_SIZE; k++)
			assert_int_equal(((const uint8_t *)CMP_LO)[k], 0);
		soft_cpu_destroy(c);
	}
}

static uint64_t get64(uint64_t va)
{
	uint64_t v;
	memcpy(&v, (void *)va, 8);
	return v;
}

static void put64(uint64_t va, uint64_t v)
{
	memcpy((void *)va, &v, 8);
}

/* Locked operations that cross a page (the mutex path) compute the same as any other. */
static void test_locked_across_pages(void **state)
{
	(void)state;
	const uint64_t at = DATA - 2; /* straddles the page boundary at DATA */
	const uint64_t m0 = 0x0123456789abcdefull;
	struct soft_cpu *c = cpu_with(PROG(p_lock_add_q));
	put64(at, m0);
	c->gpr[GPR_RBX] = at;
	c->gpr[GPR_RAX] = 0x1111111111111111ull;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(get64(at), m0 + 0x1111111111111111ull);
	soft_cpu_destroy(c);

	c = cpu_with(PROG(p_lock_xadd_d));
	put64(at, 0xfffffff0u);
	c->gpr[GPR_RBX] = at;
	c->gpr[GPR_RCX] = 0x20;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(get64(at), 0x10);
	assert_int_equal(c->gpr[GPR_RCX], 0xfffffff0u);
	assert_true(soft_flags(c) & FL_CF);
	soft_cpu_destroy(c);

	c = cpu_with(PROG(p_xchg_q));
	put64(at, 42);
	c->gpr[GPR_RBX] = at;
	c->gpr[GPR_RDX] = 7;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(get64(at), 7);
	assert_int_equal(c->gpr[GPR_RDX], 42);
	soft_cpu_destroy(c);

	/* cmpxchg8b that fails: the old value lands in EDX:EAX; then one that succeeds. */
	c = cpu_with(PROG(p_lock_cx8));
	put64(at, 0xaabbccdd00112233ull);
	c->gpr[GPR_RBX] = at;
	c->gpr[GPR_RAX] = 0xffffffff00000001ull;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(c->gpr[GPR_RAX], 0x00112233);
	assert_int_equal(c->gpr[GPR_RDX], 0xaabbccdd);
	assert_false(soft_flags(c) & FL_ZF);
	soft_cpu_destroy(c);
	c = cpu_with(PROG(p_lock_cx8));
	put64(at, 0xaabbccdd00112233ull);
	c->gpr[GPR_RBX] = at;
	c->gpr[GPR_RAX] = 0x00112233;
	c->gpr[GPR_RDX] = 0xaabbccdd;
	c->gpr[GPR_RCX] = 0x44444444;
	c->gpr[GPR_RBX] = at; /* also the low half of the new value: the address's low bits */
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(get64(at), (0x44444444ull << 32) | (uint32_t)at);
	assert_true(soft_flags(c) & FL_ZF);
	soft_cpu_destroy(c);

	c = cpu_with(PROG(p_lock_cx_q));
	put64(at, m0);
	c->gpr[GPR_RBX] = at;
	c->gpr[GPR_RAX] = m0;
	c->gpr[GPR_RCX] = 0x5555;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(get64(at), 0x5555);
	assert_true(soft_flags(c) & FL_ZF);
	soft_cpu_destroy(c);

	/* Operations without a host atomic of their own (compare-exchange loops normally). */
	const uint64_t at2 = DATA - 1;
	c = cpu_with(PROG(p_lock_neg_w));
	put64(at2, 0x0001);
	c->gpr[GPR_RBX] = at2;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(get64(at2) & 0xffff, 0xffff);
	assert_true(soft_flags(c) & FL_CF);
	soft_cpu_destroy(c);
	c = cpu_with(PROG(p_lock_sbb_d));
	put64(at2, 5);
	c->gpr[GPR_RBX] = at2;
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(get64(at2) & 0xffffffff, 3);
	soft_cpu_destroy(c);
}

/* Two soft CPUs on two threads hammer the same counters with locked instructions; nothing may
 * be lost. */
struct hammer {
	pthread_t thread;
	struct soft_cpu *cpu;
	enum soft_exit exit;
};

static void *hammer_thread(void *arg)
{
	struct hammer *h = arg;
	h->exit = soft_cpu_run(h->cpu);
	return NULL;
}

static void test_locked_threads(void **state)
{
	(void)state;
	struct hammer h[2];
	memset((void *)CODE, 0xcc, 0x1000);
	memcpy((void *)CODE, snip_p_hammer, (size_t)(snip_p_hammer_end - snip_p_hammer));
	memset((void *)CMP_LO, 0, CMP_SIZE);
	for (unsigned i = 0; i < 2; i++) {
		h[i].cpu = new_cpu();
		h[i].cpu->rip = CODE;
		h[i].cpu->gpr[GPR_RDI] = DATA;
		h[i].cpu->gpr[GPR_RSP] = STACK_TOP;
	}
	for (unsigned i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&h[i].thread, NULL, hammer_thread, &h[i]), 0);
	for (unsigned i = 0; i < 2; i++)
		pthread_join(h[i].thread, NULL);
	for (unsigned i = 0; i < 2; i++) {
		assert_int_equal(h[i].exit, SOFT_EXIT_SYSCALL);
		soft_cpu_destroy(h[i].cpu);
	}
	assert_int_equal(get64(DATA), 2 * HAMMER);
	assert_int_equal(get64(DATA + 8), 4 * HAMMER);
	assert_int_equal(get64(DATA + 16), 2 * HAMMER);
	assert_int_equal(get64(DATA + 24), 2 * HAMMER);
	assert_int_equal(get64(DATA + 32), 2 * HAMMER);
	assert_int_equal(get64(DATA + 40), 0);
	assert_int_equal(*(uint8_t *)(DATA + 48), 0); /* an even number of flips */
}

/* Segment loads, FS-relative operands and xlat with an override, 32-bit stack code. */
static void test_segments_and_modes(void **state)
{
	(void)state;
	/* mov fs in 64-bit user mode needs a descriptor: unimplemented, #UD. */
	struct soft_cpu *c = cpu_with(PROG(p_mov_fs));
	expect_fault(c, EXC_UD, 0, CODE);
	soft_cpu_destroy(c);
	/* A null SS at CPL 3: #GP(0). */
	c = cpu_with(PROG(p_mov_ss_null));
	expect_fault(c, EXC_GP, 0, CODE + 2);
	soft_cpu_destroy(c);
	/* A null DS is fine. */
	c = cpu_with(PROG(p_mov_ds_null));
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(c->seg[SEG_DS].selector, 0);
	soft_cpu_destroy(c);

	/* mov rax, fs:[rbx]; fs xlat; lea rdx, fs:[rbx] (no base); push fs. */
	c = cpu_with(PROG(p_fsrel));
	c->seg[SEG_FS].base = DATA - 0x1000;
	c->seg[SEG_FS].selector = 0x1234;
	c->gpr[GPR_RBX] = 0x1000;
	for (unsigned i = 0; i < 256; i++)
		((uint8_t *)DATA)[i] = (uint8_t)(i * 7 + 3);
	uint64_t q = get64(DATA);
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	assert_int_equal(c->gpr[GPR_RAX], (q & ~0xffull) | (uint8_t)((q & 0xff) * 7 + 3));
	assert_int_equal(c->gpr[GPR_RDX], 0x1000);
	assert_int_equal(get64(STACK_TOP - 8), 0x1234);
	soft_cpu_destroy(c);

	/* 32-bit code (compatibility mode): pushad/popad round trip, push imm, 16-bit push. It
	 * ends with a load from a page that is not there. */
	c = cpu_with(PROG(p_code32));
	c->seg[SEG_CS].l = 0;
	c->seg[SEG_CS].db = 1;
	for (unsigned r = 0; r < 8; r++)
		if (r != GPR_RSP)
			c->gpr[r] = 0x11111111u * (r + 1);
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_EXCEPTION);
	assert_int_equal(c->exc_vector, EXC_PF);
	assert_int_equal(c->exc_addr, NO_PAGE);
	assert_int_equal(c->gpr[GPR_RAX], 0x11110005);
	assert_int_equal(c->gpr[GPR_RBX], 0xfffffffe);
	assert_int_equal(c->gpr[GPR_RCX], 0x22222222);
	assert_int_equal(c->gpr[GPR_RDI], 0x88888888);
	assert_int_equal(c->gpr[GPR_RSP], STACK_TOP);
	uint32_t saved_esp;
	memcpy(&saved_esp, (void *)(STACK_TOP - 20), 4);
	assert_int_equal(saved_esp, (uint32_t)STACK_TOP);
	soft_cpu_destroy(c);
}

/* MOV to and from control registers is not this group's: the MOV selector hands it to the
 * system group, where CPL 3 gets #GP(0). */
static void test_mov_cr_hook(void **state)
{
	(void)state;
	struct soft_cpu *c = cpu_with(PROG(p_mov_cr0));
	expect_fault(c, EXC_GP, 0, CODE);
	soft_cpu_destroy(c);
}

/* Speed of the hot forms: a loop of register, immediate and simple memory operations. Printed,
 * not asserted: the machine running the test decides the number. */
static void test_hot_loop_speed(void **state)
{
	(void)state;
	struct soft_cpu *c = cpu_with(PROG(p_hot));
	c->gpr[GPR_RBX] = 3;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(soft_cpu_run(c), SOFT_EXIT_SYSCALL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(c->icount, 1 + 14 * 1000000ull + 1);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
	fprintf(stderr, "soft alu: hot loop %.0f M instructions/s\n", (double)c->icount / s / 1e6);
	soft_cpu_destroy(c);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_differential),
	    cmocka_unit_test(test_cli_sti_popf_privilege),
	    cmocka_unit_test(test_faults),
	    cmocka_unit_test(test_memory_form_faults),
	    cmocka_unit_test(test_locked_across_pages),
	    cmocka_unit_test(test_locked_threads),
	    cmocka_unit_test(test_segments_and_modes),
	    cmocka_unit_test(test_mov_cr_hook),
	    cmocka_unit_test(test_hot_loop_speed),
	};
	return cmocka_run_group_tests_name("soft_alu", tests, setup, teardown);
}
