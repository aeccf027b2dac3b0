/* The CPL 3 workload of cpl3_test: a 64-bit xorshift/multiply hash over 10^7 steps. The build
 * also compiles it for the host (-DHOST_RUN) to produce the expected value. */
#include <stdint.h>

#define CPL3_ITERATIONS 10000000u

uint64_t cpl3_work(uint64_t seed);
uint64_t cpl3_work(uint64_t seed)
{
	uint64_t x = seed, h = 0xcbf29ce484222325ull;
	for (uint32_t i = 0; i < CPL3_ITERATIONS; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		h = (h ^ (x & 0xff)) * 0x100000001b3ull;
	}
	return h ^ x;
}

#ifdef HOST_RUN
#include <stdio.h>
int main(void)
{
	printf("#define CPL3_SEED 0x%llxull\n", 0x1234567887654321ull);
	printf("#define CPL3_EXPECTED 0x%llxull\n",
	       (unsigned long long)cpl3_work(0x1234567887654321ull));
	return 0;
}
#endif
