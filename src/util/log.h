/* Messages to the user: one line each, prefixed "ferry: ". */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <stddef.h>

extern int log_verbose;

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* only with -v */
/* snprintf into err, never overflowing; returns -1 so callers can `return set_err(...)`. */
int set_err(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
