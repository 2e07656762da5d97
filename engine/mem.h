/* The one allocation wrapper (after Redis's zmalloc).
 *
 * Every heap byte breakwater keeps goes through mem_alloc()/mem_free() with a
 * tag naming the stage that owns it, so the summary and the caps can say who
 * holds what. Under jemalloc (the default allocator) the accounted size is the
 * usable size jemalloc really reserved; under sanitizers it is the libc
 * allocator's usable size. Counters are kept per thread (each worker
 * writes its own, unlocked) and added up when read: mem_stats_read() and the
 * helpers below. A peak is the sum of the threads' peaks: exact with one
 * thread, an upper bound with several.
 *
 * mem_alloc() returns NULL on failure and counts it in mem_stats.alloc_fail
 * for the tag; callers count their own "refused at the cap" separately, as
 * STYLE.md asks.
 */
#ifndef BW_MEM_H
#define BW_MEM_H

#include <stddef.h>
#include <stdint.h>

enum mem_tag {
	MEM_MISC = 0,
	MEM_FLOW,       /* flow table and flow pool */
	MEM_REASM,      /* out-of-order segments held by reassembly */
	MEM_SMTP,       /* SMTP sessions and transactions */
	MEM_MESSAGE,    /* message parser buffers, MIME parts */
	MEM_RULES,      /* parsed rules, compiled databases */
	MEM_MATCH,      /* per-lcore scratch, stream state */
	MEM_STORM,      /* storm tracker windows and interning */
	MEM_OUTPUT,     /* output buffers */
	MEM_TAG_MAX
};

struct mem_stats {
	uint64_t in_use[MEM_TAG_MAX];   /* bytes now allocated */
	uint64_t peak[MEM_TAG_MAX];     /* high-water mark of in_use */
	uint64_t allocs[MEM_TAG_MAX];   /* successful allocations */
	uint64_t alloc_fail[MEM_TAG_MAX];
};

/* The counters of every thread added up (takes a lock: not for hot paths). */
void mem_stats_read(struct mem_stats *out);
uint64_t mem_in_use(enum mem_tag tag);
uint64_t mem_peak(enum mem_tag tag);
uint64_t mem_alloc_fails(enum mem_tag tag);
/* Starts tag's peak again from what is in use now (a benchmark's phase). */
void mem_peak_reset(enum mem_tag tag);

/* Returns size bytes (uninitialised) owned by the caller, or NULL. */
void *mem_alloc(enum mem_tag tag, size_t size);
/* Same, zeroed. */
void *mem_calloc(enum mem_tag tag, size_t n, size_t size);
/* Like realloc(); on failure the old block stays valid and owned by the caller. */
void *mem_realloc(enum mem_tag tag, void *p, size_t size);
/* Frees p (NULL is fine); tag must be the one it was allocated with. */
void mem_free(enum mem_tag tag, void *p);
/* Makes room for `need` elements of `elem` bytes in the array *arr whose
 * capacity is *cap: when *cap < need, the capacity doubles (from `first`
 * when the array is empty) until it holds need, clamped to `max` (0: no
 * bound). Returns 1 when it reallocated, 0 when there was room already, -1
 * when need is over max or the allocation failed (counted in mem_stats);
 * *arr and *cap are unchanged then and the old array stays valid. */
int mem_grow(enum mem_tag tag, void **arr, uint32_t *cap, uint32_t need, size_t elem,
	     uint32_t first, uint32_t max);
/* Copies a NUL-terminated string (or the first n bytes for mem_strndup). */
char *mem_strdup(enum mem_tag tag, const char *s);
char *mem_strndup(enum mem_tag tag, const char *s, size_t n);

const char *mem_tag_name(enum mem_tag tag);
uint64_t mem_in_use_total(void);
/* Name of the allocator in use ("jemalloc 5.3.0" or "libc"). */
const char *mem_allocator_name(void);

#endif
