#include "engine/engine.h"

#include <stdio.h>
#include <string.h>

#include "util/log.h"

bool engine_host_has_hw_virt(void)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[4096];
	bool found = false;
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		if (!strncmp(line, "flags", 5))
			found = strstr(line, " vmx") || strstr(line, " svm");
	fclose(f);
	return found;
}

const struct engine_ops *engine_select(enum engine_choice choice, char *err, size_t err_len)
{
	if (choice == ENGINE_AUTO) {
		/* Nested or paravirtual /dev/kvm without vmx/svm in the host flags runs guest kernel
		 * code through the host's instruction emulator: the soft engine is the right choice. */
		choice = engine_host_has_hw_virt() ? ENGINE_KVM : ENGINE_SOFT;
		log_info("engine auto: host CPU %s hardware virtualization, choosing %s",
			 choice == ENGINE_KVM ? "has" : "lacks",
			 choice == ENGINE_KVM ? "kvm" : "soft");
	}
	/* Both engines are always built: err is for engines a build may leave out. */
	(void)err;
	(void)err_len;
	if (choice == ENGINE_SOFT)
		return &soft_engine;
	/* Whether /dev/kvm can be used is found out when the VM is created, after the kernel and
	 * initrd were checked: bad input is reported as such on any host. */
	return &kvm_engine;
}
