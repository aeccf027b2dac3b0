#include "util/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"

int file_read_all(const char *path, struct file_buf *out, char *err, size_t err_len)
{
	struct stat sb;
	out->data = NULL;
	out->len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return set_err(err, err_len, "cannot open %s: %s", path, strerror(errno));
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return set_err(err, err_len, "%s is not a regular file", path);
	}
	if (sb.st_size == 0 || (uint64_t)sb.st_size > FILE_MAX_SIZE) {
		close(fd);
		return set_err(err, err_len, "%s: size %lld is %s", path, (long long)sb.st_size,
			       sb.st_size ? "over the 2 GiB limit" : "empty");
	}
	size_t len = (size_t)sb.st_size;
	uint8_t *buf = malloc(len);
	if (!buf) {
		close(fd);
		return set_err(err, err_len, "%s: out of memory reading %zu bytes", path, len);
	}
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			set_err(err, err_len, "cannot read %s: %s", path,
				n < 0 ? strerror(errno) : "file shrank while reading");
			free(buf);
			close(fd);
			return -1;
		}
		got += (size_t)n;
	}
	close(fd);
	out->data = buf;
	out->len = len;
	return 0;
}

void file_buf_free(struct file_buf *f)
{
	free(f->data);
	f->data = NULL;
	f->len = 0;
}
