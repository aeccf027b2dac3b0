/* Parsing numbers from the command line, strictly: no trailing junk, no overflow. */
#ifndef FERRY_PARSE_H
#define FERRY_PARSE_H

#include <stdint.h>

/* Decimal unsigned integer. Returns -1 on anything else. */
int parse_uint(const char *s, uint64_t *out);
/* A size: a decimal number with an optional binary suffix K, M, G or T (case-insensitive,
 * optionally followed by "iB" or "B"); with no suffix the number counts default_unit.
 * Returns -1 on junk or overflow. */
int parse_size(const char *s, char default_unit, uint64_t *out);

#endif
