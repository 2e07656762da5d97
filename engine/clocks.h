/* clocks: the three clocks the driver reads, as plain numbers.
 *
 * mono_s() for durations (set-up, the packet loop), thread_cpu_s() for what
 * a thread's work cost on a shared machine beside its wall time, wall_ns()
 * for the engine clock of a live source (replay takes packet timestamps).
 */
#ifndef BW_CLOCKS_H
#define BW_CLOCKS_H

#include <stdint.h>
#include <time.h>

static inline double clock_mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline double clock_thread_cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline uint64_t clock_wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
