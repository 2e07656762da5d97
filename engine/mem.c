/* Accounting allocation wrapper; see mem.h. */
#include "mem.h"

#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bw-config.h"

#if BW_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

struct mem_stats mem_stats;

static const char *const tag_names[MEM_TAG_MAX] = {
	[MEM_MISC] = "misc",
	[MEM_FLOW] = "flow",
	[MEM_REASM] = "reassembly",
	[MEM_SMTP] = "smtp",
	[MEM_MESSAGE] = "message",
	[MEM_RULES] = "rules",
	[MEM_MATCH] = "match",
	[MEM_STORM] = "storm",
	[MEM_OUTPUT] = "output",
};

/* Counters are updated with relaxed atomics: the packet worker allocates
 * while a rule reload compiles on another thread. A locked add costs a few
 * cycles per allocation; the hot paths allocate rarely (pools, reuse). */
static inline void stat_add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static inline void stat_sub(uint64_t *c, uint64_t n)
{
	__atomic_fetch_sub(c, n, __ATOMIC_RELAXED);
}

static inline void stat_peak(enum mem_tag tag)
{
	uint64_t now = __atomic_load_n(&mem_stats.in_use[tag], __ATOMIC_RELAXED);
	uint64_t peak = __atomic_load_n(&mem_stats.peak[tag], __ATOMIC_RELAXED);

	while (now > peak &&
	       !__atomic_compare_exchange_n(&mem_stats.peak[tag], &peak, now, true,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

/* The size the allocator really reserved for p. Binaries link jemalloc as
 * malloc(), so malloc_usable_size() answers for it as well as for libc. */
static inline size_t usable(void *p)
{
	return malloc_usable_size(p);
}

static inline void account_add(enum mem_tag tag, void *p)
{
	uint64_t n = usable(p);

	stat_add(&mem_stats.in_use[tag], n);
	stat_add(&mem_stats.allocs[tag], 1);
	stat_peak(tag);
}

void *mem_alloc(enum mem_tag tag, size_t size)
{
	void *p = malloc(size ? size : 1);

	if (!p) {
		stat_add(&mem_stats.alloc_fail[tag], 1);
		return NULL;
	}
	account_add(tag, p);
	return p;
}

void *mem_calloc(enum mem_tag tag, size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p) {
		stat_add(&mem_stats.alloc_fail[tag], 1);
		return NULL;
	}
	account_add(tag, p);
	return p;
}

void *mem_realloc(enum mem_tag tag, void *p, size_t size)
{
	size_t old = p ? usable(p) : 0;
	void *q = realloc(p, size ? size : 1);

	if (!q) {
		stat_add(&mem_stats.alloc_fail[tag], 1);
		return NULL;
	}
	stat_sub(&mem_stats.in_use[tag], old);
	if (!p)
		stat_add(&mem_stats.allocs[tag], 1);
	stat_add(&mem_stats.in_use[tag], usable(q));
	stat_peak(tag);
	return q;
}

int mem_grow(enum mem_tag tag, void **arr, uint32_t *cap, uint32_t need, size_t elem,
	     uint32_t first, uint32_t max)
{
	uint64_t nc = *cap ? *cap : (first ? first : 1);
	void *p;

	if (need <= *cap)
		return 0;
	if (max && need > max)
		return -1;
	while (nc < need)
		nc *= 2;
	if (max && nc > max)
		nc = max;
	if (nc > UINT32_MAX || nc * elem / elem != nc)
		return -1;
	p = mem_realloc(tag, *arr, (size_t)(nc * elem));
	if (!p)
		return -1;   /* mem_realloc counted it */
	*arr = p;
	*cap = (uint32_t)nc;
	return 1;
}

void mem_free(enum mem_tag tag, void *p)
{
	if (!p)
		return;
	stat_sub(&mem_stats.in_use[tag], usable(p));
	free(p);
}

char *mem_strndup(enum mem_tag tag, const char *s, size_t n)
{
	char *d = mem_alloc(tag, n + 1);

	if (!d)
		return NULL;
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

char *mem_strdup(enum mem_tag tag, const char *s)
{
	return mem_strndup(tag, s, strlen(s));
}

const char *mem_tag_name(enum mem_tag tag)
{
	return tag < MEM_TAG_MAX ? tag_names[tag] : "?";
}

uint64_t mem_in_use_total(void)
{
	uint64_t t = 0;

	for (int i = 0; i < MEM_TAG_MAX; i++)
		t += mem_stats.in_use[i];
	return t;
}

const char *mem_allocator_name(void)
{
#if BW_HAVE_JEMALLOC
	static char name[64];
	const char *v = NULL;
	size_t len = sizeof(v);

	if (name[0])
		return name;
	if (mallctl("version", &v, &len, NULL, 0) == 0 && v)
		snprintf(name, sizeof(name), "jemalloc %s", v);
	else
		snprintf(name, sizeof(name), "jemalloc");
	return name;
#else
	return "libc";
#endif
}
