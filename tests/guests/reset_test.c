/* reset_test: prints "boot", then pulses the reset line through the i8042 (0xFE to port
 * 0x64). ferry --no-reboot must exit 0; without it the machine restarts and prints "boot"
 * again, over and over. */
#include "rt.h"

void kmain(uint32_t magic, uint64_t info)
{
	puts("boot\n");
	i8042_reset();
}
