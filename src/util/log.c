#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

int log_verbose;

static void vlog(const char *prefix, const char *fmt, va_list ap)
{
	char line[512];
	vsnprintf(line, sizeof(line), fmt, ap);
	/* On a terminal the console may be in raw mode, where \n alone does not return. */
	if (isatty(2))
		fprintf(stderr, "\rferry: %s%s\r\n", prefix, line);
	else
		fprintf(stderr, "ferry: %s%s\n", prefix, line);
}

void log_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog("", fmt, ap);
	va_end(ap);
}

void log_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog("warning: ", fmt, ap);
	va_end(ap);
}

void log_info(const char *fmt, ...)
{
	if (!log_verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	vlog("", fmt, ap);
	va_end(ap);
}

int set_err(char *err, size_t err_len, const char *fmt, ...)
{
	if (err && err_len) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
	}
	return -1;
}
