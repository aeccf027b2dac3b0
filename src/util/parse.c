#include "util/parse.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static int parse_digits(const char **s, uint64_t *out)
{
	const char *p = *s;
	uint64_t v = 0;
	if (!isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++)
		if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *p - '0', &v))
			return -1;
	*s = p;
	*out = v;
	return 0;
}

int parse_uint(const char *s, uint64_t *out)
{
	return parse_digits(&s, out) < 0 || *s ? -1 : 0;
}

static int unit_shift(int c)
{
	switch (toupper(c)) {
	case 'B':
		return 0;
	case 'K':
		return 10;
	case 'M':
		return 20;
	case 'G':
		return 30;
	case 'T':
		return 40;
	default:
		return -1;
	}
}

int parse_size(const char *s, char default_unit, uint64_t *out)
{
	uint64_t v;
	if (parse_digits(&s, &v) < 0)
		return -1;
	int shift = unit_shift(*s ? (unsigned char)*s : (unsigned char)default_unit);
	if (shift < 0)
		return -1;
	if (*s) {
		s++;
		/* Accept 256M, 256MB, 256MiB; nothing else may follow. */
		if (*s && strcasecmp(s, "B") != 0 && strcasecmp(s, "iB") != 0)
			return -1;
	}
	if (shift && v > (UINT64_MAX >> shift))
		return -1;
	*out = v << shift;
	return 0;
}
