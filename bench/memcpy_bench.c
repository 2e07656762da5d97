/* memcpy_bench: the memory ceiling, memcpy bandwidth of one core.
 *
 * Copies between two page-aligned buffers with the C library's memcpy (what
 * net_pcap and reassembly use), for sizes that sit in L1, L2 and the LLC and
 * for buffers well beyond the LLC (DRAM). Buffers are written before timing so
 * no page fault is measured. Each size runs TRIALS trials of about
 * --trial-ms milliseconds; the median trial is reported (best and worst too).
 *
 * GB/s counts bytes copied (10^9 bytes per second); the memory traffic is
 * twice that (one read, one write) or more (write-allocate) for DRAM sizes.
 *
 * Output, one line per size on stdout (bench/run.sh parses it):
 *   memcpy size=BYTES label=L gbytes=G gbit=B best_gbytes=.. worst_gbytes=..
 *
 * Usage: memcpy_bench [--trial-ms MS] [--big MiB] [SIZE...]
 *        SIZE takes K/M/G suffixes; default sizes: 16K 256K 4M and --big (256M).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TRIALS 5
#define MAX_SIZES 16

/* Called through a volatile pointer so the compiler can neither inline nor
 * drop a copy whose result is never read. */
static void *(*volatile copy_fn)(void *, const void *, size_t) = memcpy;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t parse_size(const char *s)
{
	char *end;
	double v = strtod(s, &end);

	switch (*end) {
	case 'k': case 'K': v *= 1024; break;
	case 'm': case 'M': v *= 1024 * 1024; break;
	case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
	case '\0': break;
	default:
		fprintf(stderr, "memcpy_bench: bad size %s\n", s);
		exit(2);
	}
	return (size_t)v;
}

static const char *size_label(size_t size)
{
	/* Rough placement; the report shows the size, the label is a reading aid. */
	if (size <= 32 * 1024)
		return "L1";
	if (size <= 512 * 1024)
		return "L2";
	if (size <= 16 * 1024 * 1024)
		return "LLC";
	return "DRAM";
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Returns bytes per second for the median of TRIALS trials, and the best and
 * worst in *best and *worst; -1 if the buffers cannot be allocated. */
static double run_size(size_t size, double trial_s, double *best, double *worst)
{
	unsigned char *src = aligned_alloc(4096, (size + 4095) & ~(size_t)4095);
	unsigned char *dst = aligned_alloc(4096, (size + 4095) & ~(size_t)4095);
	double rate[TRIALS];
	uint64_t iters = 1;

	if (!src || !dst) {
		free(src);
		free(dst);
		return -1;
	}
	memset(src, 0x5a, size);
	memset(dst, 0xa5, size);

	/* Calibrate: double the iteration count until one run takes a tenth of
	 * a trial, then scale. */
	for (;;) {
		double t = now_s();
		for (uint64_t i = 0; i < iters; i++)
			copy_fn(dst, src, size);
		t = now_s() - t;
		if (t >= trial_s / 10 || iters >= (1ull << 40)) {
			double per = t / (double)iters;
			iters = per > 0 ? (uint64_t)(trial_s / per) : iters;
			if (iters == 0)
				iters = 1;
			break;
		}
		iters *= 2;
	}
	for (int k = 0; k < TRIALS; k++) {
		double t = now_s();
		for (uint64_t i = 0; i < iters; i++)
			copy_fn(dst, src, size);
		t = now_s() - t;
		rate[k] = (double)size * (double)iters / t;
	}
	if (dst[size / 2] != 0x5a)   /* the copy really happened */
		abort();
	free(src);
	free(dst);
	qsort(rate, TRIALS, sizeof(rate[0]), cmp_double);
	*best = rate[TRIALS - 1];
	*worst = rate[0];
	return rate[TRIALS / 2];
}

int main(int argc, char **argv)
{
	size_t sizes[MAX_SIZES];
	int nsizes = 0;
	double trial_ms = 200;
	size_t big = 256u << 20;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--trial-ms") && i + 1 < argc) {
			trial_ms = strtod(argv[++i], NULL);
		} else if (!strcmp(argv[i], "--big") && i + 1 < argc) {
			big = (size_t)strtoul(argv[++i], NULL, 10) << 20;
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "usage: %s [--trial-ms MS] [--big MiB] [SIZE...]\n",
				argv[0]);
			return 2;
		} else if (nsizes < MAX_SIZES) {
			sizes[nsizes++] = parse_size(argv[i]);
		}
	}
	if (nsizes == 0) {
		sizes[nsizes++] = 16 << 10;
		sizes[nsizes++] = 256 << 10;
		sizes[nsizes++] = 4 << 20;
		sizes[nsizes++] = big;
	}

	for (int i = 0; i < nsizes; i++) {
		double best, worst;
		double r = run_size(sizes[i], trial_ms / 1000, &best, &worst);

		if (r < 0) {
			fprintf(stderr, "memcpy_bench: cannot allocate 2 x %zu bytes\n", sizes[i]);
			return 1;
		}
		fprintf(stderr, "memcpy %10zu B (%s): %6.2f GB/s = %6.1f Gbit/s "
			"(best %.2f, worst %.2f GB/s)\n", sizes[i], size_label(sizes[i]),
			r / 1e9, r * 8 / 1e9, best / 1e9, worst / 1e9);
		printf("memcpy size=%zu label=%s gbytes=%.4f gbit=%.3f best_gbytes=%.4f "
		       "worst_gbytes=%.4f\n", sizes[i], size_label(sizes[i]), r / 1e9,
		       r * 8 / 1e9, best / 1e9, worst / 1e9);
	}
	return 0;
}
