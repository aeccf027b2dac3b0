/* Whole-file reads for kernels and initrds, with the checks and messages users need. */
#ifndef FERRY_FILE_H
#define FERRY_FILE_H

#include <stddef.h>
#include <stdint.h>

#define FILE_MAX_SIZE (2ull << 30) /* nothing ferry boots from is larger than 2 GiB */

struct file_buf {
	uint8_t *data;
	size_t len;
};

/* Reads path; on failure returns -1 with one line in err ("cannot open X: reason", ...). */
int file_read_all(const char *path, struct file_buf *out, char *err, size_t err_len);
void file_buf_free(struct file_buf *f);

#endif
