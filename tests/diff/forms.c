/* The form table and its builder. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forms.h"

struct form *forms;
unsigned nforms;
static unsigned cap;

struct form *form_new(void)
{
	if (nforms == cap) {
		cap = cap ? cap * 2 : 1024;
		forms = realloc(forms, cap * sizeof(*forms));
		if (!forms) {
			fprintf(stderr, "diff-test: out of memory\n");
			exit(2);
		}
	}
	struct form *f = &forms[nforms++];
	memset(f, 0, sizeof(*f));
	f->modrm = MR_NONE;
	return f;
}

struct form *add(unsigned osize, const uint8_t *pfx, size_t npfx, const uint8_t *opc, size_t nopc,
		 int modrm, unsigned regk, unsigned rmk, int mem, unsigned immsz, const char *fmt,
		 ...)
{
	struct form *f = form_new();
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->name, sizeof(f->name), fmt, ap);
	va_end(ap);
	if (osize == 16)
		f->pfx[f->npfx++] = 0x66;
	if (osize == 64)
		f->rexw = 1;
	for (size_t i = 0; i < npfx && f->npfx < sizeof(f->pfx); i++)
		f->pfx[f->npfx++] = pfx[i];
	memcpy(f->opc, opc, nopc);
	f->nopc = (uint8_t)nopc;
	f->modrm = (int8_t)modrm;
	f->regk = (uint8_t)regk;
	f->rmk = (uint8_t)rmk;
	f->mem = mem != 0;
	f->msize = (uint8_t)(mem ? kind_bytes(rmk) : 0);
	f->immsz = (uint8_t)immsz;
	return f;
}

unsigned gk(unsigned bits)
{
	return bits == 8 ? K_G8 : bits == 16 ? K_G16 : bits == 32 ? K_G32 : K_G64;
}

const char *rm_sfx(int mem)
{
	return mem ? " (mem)" : " (reg)";
}
