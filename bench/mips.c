/* Register-only instruction throughput, for bench/soft.sh: two hot loops in inline asm that
 * touch no memory, each timed with CLOCK_MONOTONIC around the loop alone (so process start,
 * loading and the C library's setup are not in the figure).
 *
 *   dec-jnz  2 instructions an iteration: dec, jnz
 *   alu-mix  10 instructions an iteration: add, xor, shl, imul, add, ror, xor, imul, dec, jnz
 *
 * Usage: mips [DEC_ITERATIONS [MIX_ITERATIONS]]    (defaults 1e9 and 2e8)
 * Prints, per loop, "NAME INSTRUCTIONS SECONDS" (the instructions are the loop's own, counted
 * from the iterations), then "checksum HEX" (the alu-mix registers' final value; the same on
 * every engine that executes the loop correctly).
 *
 * Built static (gcc -static -O2) by bench/soft.sh; not part of ferry. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void dec_jnz(uint64_t n)
{
	if (n == 0)
		return;
	__asm__ volatile("1:\n\t"
			 "dec %0\n\t"
			 "jnz 1b"
			 : "+r"(n)
			 :
			 : "cc");
}

static uint64_t alu_mix(uint64_t n)
{
	uint64_t a = 0x0123456789abcdefULL, b = 0x9e3779b97f4a7c15ULL;
	if (n == 0)
		return a ^ b;
	__asm__ volatile("1:\n\t"
			 "add %1, %0\n\t"
			 "xor %0, %1\n\t"
			 "shl $3, %1\n\t"
			 "imul %1, %0\n\t"
			 "add $0x3b, %1\n\t"
			 "ror $7, %0\n\t"
			 "xor %2, %1\n\t"
			 "imul $0x2545, %1, %1\n\t"
			 "dec %2\n\t"
			 "jnz 1b"
			 : "+r"(a), "+r"(b), "+r"(n)
			 :
			 : "cc");
	return a ^ b;
}

int main(int argc, char **argv)
{
	uint64_t n1 = argc > 1 ? strtoull(argv[1], NULL, 0) : 1000000000ULL;
	uint64_t n2 = argc > 2 ? strtoull(argv[2], NULL, 0) : 200000000ULL;
	double t0 = now();
	dec_jnz(n1);
	double t1 = now();
	uint64_t sum = alu_mix(n2);
	double t2 = now();
	printf("dec-jnz %" PRIu64 " %.6f\n", 2 * n1, t1 - t0);
	printf("alu-mix %" PRIu64 " %.6f\n", 10 * n2, t2 - t1);
	printf("checksum %016" PRIx64 "\n", sum);
	return 0;
}
