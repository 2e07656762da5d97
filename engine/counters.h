/* counters: adding up structs of uint64_t counters.
 *
 * Each worker keeps its own counters (STYLE.md: no shared counter on the
 * packet path); the summary adds the workers' structs up, field by field.
 * Only for structs made of uint64_t counters alone (a peak added this way
 * becomes an upper bound; a bit set is not a counter: fix it up after).
 */
#ifndef BW_COUNTERS_H
#define BW_COUNTERS_H

#include <stddef.h>
#include <stdint.h>

static inline void counters_add(void *dst, const void *src, size_t size)
{
	uint64_t *d = dst;
	const uint64_t *s = src;

	for (size_t i = 0; i < size / sizeof(uint64_t); i++)
		d[i] += s[i];
}

/* dst and src point to the same struct type, a multiple of 8 bytes. */
#define COUNTERS_ADD(dst, src) do { \
		_Static_assert(sizeof(*(dst)) % sizeof(uint64_t) == 0, "counters only"); \
		_Static_assert(sizeof(*(dst)) == sizeof(*(src)), "same struct"); \
		counters_add((dst), (src), sizeof(*(dst))); \
	} while (0)

#endif
