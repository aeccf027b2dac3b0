/* Building the form table: shared by the forms_*.c files. */
#ifndef FERRY_DIFF_FORMS_H
#define FERRY_DIFF_FORMS_H

#include "diff.h"

/* Byte lists: B(0x0f, 0xaf) expands to a pointer and a count. */
#define B(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})
#define NOPFX  NULL, 0

/* Adds a form. osize: 0, 16 (66 prefix first) or 64 (REX.W). modrm: MR_NONE, MR_R or /digit.
 * mem: the ModRM.rm operand is memory (its size defaults to rmk's). */
struct form *add(unsigned osize, const uint8_t *pfx, size_t npfx, const uint8_t *opc, size_t nopc,
		 int modrm, unsigned regk, unsigned rmk, int mem, unsigned immsz, const char *fmt,
		 ...) __attribute__((format(printf, 11, 12)));

/* The general-register kind of an operand size in bits. */
unsigned gk(unsigned bits);
const char *rm_sfx(int mem); /* " (reg)" or " (mem)" */

#endif
