/* The translator: host code for decoded blocks (64-bit guest code only). Internal to the soft
 * engine: cpu.c translates a block when it builds it and runs the host code instead of the
 * handler loop when the whole block may run.
 *
 * The common integer forms (mov, movzx/movsx, lea, add/sub/and/or/xor/cmp/test on registers
 * and memory, the shifts and rotates by an immediate, inc/dec/not) and the relative branches
 * become host instructions on the guest registers in struct soft_cpu, memory through an inline
 * soft-TLB probe whose miss calls the instruction's handler; every other instruction becomes a
 * call to its handler, with RIP and insn_start set as the handler loop sets them. Arithmetic
 * flags stay lazy, and an instruction whose flags nothing can read (a later instruction of the
 * block writes them all first, with nothing between that reads them or can fault) records
 * none. A conditional branch right after its flag-setting operation tests the host's own
 * flags. A block's end goes straight on into the next block's host code when the run loop
 * would do nothing in between. */
#ifndef FERRY_SOFT_JIT_H
#define FERRY_SOFT_JIT_H

#include "engine/soft/cache.h"

struct soft_jit;

/* NULL when the code space cannot be mapped (the engine then interprets everything). */
struct soft_jit *soft_jit_create(void);
void soft_jit_destroy(struct soft_jit *j);
/* Host code for b (also sets b->jit_link), or NULL when the code space is full (soft_jit_reset,
 * after every block translated so far was dropped, makes room) or when b is not 64-bit code. */
jit_fn soft_jit_translate(struct soft_jit *j, struct block *b);
void soft_jit_reset(struct soft_jit *j);

#endif
