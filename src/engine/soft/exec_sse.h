/* What the SSE group (exec_sse.c) and the x87 group (exec_x87.c) share: availability checks,
 * MXCSR and FSW bits, and the x87 pieces of the FXSAVE image. */
#ifndef FERRY_SOFT_EXEC_SSE_H
#define FERRY_SOFT_EXEC_SSE_H

#include <stdint.h>

#include "engine/soft/soft.h"

#define CR0_EM (1ull << 2)
#define CR0_TS (1ull << 3)

/* MXCSR: exception flags (0-5), DAZ, masks (7-12, same order as the flags), RC, FTZ. */
#define MX_IE    0x0001u
#define MX_DE    0x0002u
#define MX_ZE    0x0004u
#define MX_OE    0x0008u
#define MX_UE    0x0010u
#define MX_PE    0x0020u
#define MX_FLAGS 0x003fu
#define MX_DAZ   0x0040u
#define MX_MASKS 0x1f80u
#define MX_RC    0x6000u
#define MX_FTZ   0x8000u
/* The MXCSR bits this CPU implements (FXSAVE's MXCSR_MASK): all of the low 16, DAZ included.
 * Setting any other bit is #GP. */
#define MXCSR_SUPPORTED 0xffffu

/* x87 status word: exception flags (0-5, the same order as in MXCSR), stack fault, error
 * summary, condition codes, TOP, busy. */
#define FSW_IE    0x0001u
#define FSW_EXC   0x003fu /* the six exception flags, masked by FCW bits 0-5 */
#define FSW_SF    0x0040u
#define FSW_ES    0x0080u
#define FSW_C0    0x0100u
#define FSW_C1    0x0200u
#define FSW_C2    0x0400u
#define FSW_TOP   0x3800u
#define FSW_C3    0x4000u
#define FSW_B     0x8000u
#define FSW_FLAGS 0x007fu /* the six exceptions and SF */
#define FSW_CC    (FSW_C0 | FSW_C1 | FSW_C2 | FSW_C3)

/* The status word as software sees it: TOP is kept apart in struct x87 (top). */
uint16_t soft_x87_status(const struct x87 *f);
/* Loads a status word (TOP included); ES and B follow the unmasked flags, as hardware derives
 * them when the word is loaded. */
void soft_x87_load_status(struct x87 *f, uint16_t sw);
/* Control word as FLDCW stores it (reserved bits fixed). */
uint16_t soft_x87_control(uint16_t cw);
/* ES and B from the flags and the masks. */
void soft_x87_update_es(struct x87 *f);
/* The tag of an 80-bit value (0 valid, 1 zero, 2 special) as FSTENV/FSAVE compute it. */
unsigned soft_x87_tag_of(const void *reg80);
/* The FXSAVE abridged tag byte (bit i: physical register i is not empty) and its inverse. */
uint8_t soft_x87_abridged_tags(const struct x87 *f);
void soft_x87_load_abridged_tags(struct x87 *f, uint8_t tags);

#endif
