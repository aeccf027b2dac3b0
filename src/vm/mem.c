#include "vm/mem.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/log.h"

int gmem_init(struct guest_mem *m, uint64_t size, char *err, size_t err_len)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (size < (1ull << 20) || size % PAGE_SIZE)
		return set_err(err, err_len,
			       "guest RAM must be at least 1 MiB and a multiple of 4 KiB");
	/* A memfd rather than anonymous memory: it can be shared with another process, written to a
	 * snapshot or sent for migration without copying through the VMM. */
	m->fd = memfd_create("ferry-ram", MFD_CLOEXEC);
	if (m->fd < 0)
		return set_err(err, err_len, "cannot create guest RAM: %s", strerror(errno));
	if (ftruncate(m->fd, (off_t)size) < 0) {
		set_err(err, err_len, "cannot size guest RAM to %llu bytes: %s",
			(unsigned long long)size, strerror(errno));
		goto fail;
	}
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->fd, 0);
	if (p == MAP_FAILED) {
		set_err(err, err_len, "cannot map %llu MiB of guest RAM: %s",
			(unsigned long long)(size >> 20), strerror(errno));
		goto fail;
	}
	m->host = p;
	m->size = size;
	uint64_t low = size < MEM_HOLE_START ? size : MEM_HOLE_START;
	m->region[m->nregions++] = (struct mem_region){.gpa = 0, .size = low, .offset = 0};
	if (size > low)
		m->region[m->nregions++] =
		    (struct mem_region){.gpa = MEM_4G, .size = size - low, .offset = low};
	return 0;
fail:
	close(m->fd);
	m->fd = -1;
	return -1;
}

void gmem_destroy(struct guest_mem *m)
{
	if (m->host)
		munmap(m->host, m->size);
	if (m->fd >= 0)
		close(m->fd);
	memset(m, 0, sizeof(*m));
	m->fd = -1;
}

void *gmem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < m->nregions; i++) {
		const struct mem_region *r = &m->region[i];
		/* Written so that no sum can overflow: gpa - r->gpa only when gpa >= r->gpa. */
		if (gpa < r->gpa || gpa - r->gpa > r->size || len > r->size - (gpa - r->gpa))
			continue;
		return m->host + r->offset + (gpa - r->gpa);
	}
	return NULL;
}

bool gmem_is_ram(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	return gmem_ptr(m, gpa, len) != NULL;
}

int gmem_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	void *p = gmem_ptr(m, gpa, len);
	if (!p)
		return -1;
	memcpy(p, src, len);
	return 0;
}

int gmem_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len)
{
	const void *p = gmem_ptr(m, gpa, len);
	if (!p)
		return -1;
	memcpy(dst, p, len);
	return 0;
}

uint64_t gmem_low_end(const struct guest_mem *m)
{
	return m->nregions ? m->region[0].size : 0;
}
