/* Accounting allocation wrapper; see mem.h. */
#include "mem.h"

#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bw-config.h"

#if BW_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

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

/* Counters are per thread: each worker adds to a block of its own with
 * plain (relaxed, unlocked) stores, so workers allocating at the same time
 * never share a cache line; readers add the blocks up. A block outlives its
 * thread (memory a thread allocated may be freed by another, so a block's
 * in_use can go below zero, and the sum stays right): a thread that ends
 * leaves its block for the next new thread to carry on. */
struct mem_block {
	int64_t in_use[MEM_TAG_MAX];
	int64_t peak[MEM_TAG_MAX];      /* of this block's in_use */
	uint64_t allocs[MEM_TAG_MAX];
	uint64_t alloc_fail[MEM_TAG_MAX];
	struct mem_block *next;         /* every block */
	struct mem_block *next_free;    /* blocks whose thread ended */
	bool free;
} __attribute__((aligned(64)));

static struct mem_block first_block;   /* the first thread's: no allocation */
static struct mem_block *blocks = &first_block;
static struct mem_block *free_blocks;
static bool first_taken;
static pthread_mutex_t blocks_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t block_key;
static pthread_once_t block_key_once = PTHREAD_ONCE_INIT;
static __thread struct mem_block *my_block;

static void block_release(void *p)
{
	struct mem_block *b = p;

	pthread_mutex_lock(&blocks_mu);
	b->free = true;
	b->next_free = free_blocks;
	free_blocks = b;
	pthread_mutex_unlock(&blocks_mu);
}

static void block_key_make(void)
{
	(void)pthread_key_create(&block_key, block_release);
}

static __attribute__((noinline)) struct mem_block *block_take(void)
{
	struct mem_block *b;

	pthread_once(&block_key_once, block_key_make);
	pthread_mutex_lock(&blocks_mu);
	if (!first_taken) {
		first_taken = true;
		b = &first_block;
	} else if (free_blocks) {
		b = free_blocks;
		free_blocks = b->next_free;
		b->free = false;
	} else {
		b = aligned_alloc(64, sizeof(*b));   /* bookkeeping, not accounted */
		if (b) {
			memset(b, 0, sizeof(*b));
			b->next = blocks->next;
			blocks->next = b;   /* after first_block, which stays the head */
		} else {
			b = &first_block;   /* out of memory: share the first (racy counts) */
		}
	}
	pthread_mutex_unlock(&blocks_mu);
	if (b != &first_block)
		(void)pthread_setspecific(block_key, b);
	my_block = b;
	return b;
}

static inline struct mem_block *block(void)
{
	struct mem_block *b = my_block;

	return __builtin_expect(b != NULL, 1) ? b : block_take();
}

/* Only this thread writes its block: a relaxed load and store, no lock
 * prefix; readers on other threads see whole values. */
static inline void bump_u(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline void in_use_add(struct mem_block *b, enum mem_tag tag, int64_t n)
{
	int64_t v = __atomic_load_n(&b->in_use[tag], __ATOMIC_RELAXED) + n;

	__atomic_store_n(&b->in_use[tag], v, __ATOMIC_RELAXED);
	if (v > __atomic_load_n(&b->peak[tag], __ATOMIC_RELAXED))
		__atomic_store_n(&b->peak[tag], v, __ATOMIC_RELAXED);
}

void mem_stats_read(struct mem_stats *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&blocks_mu);
	for (const struct mem_block *b = blocks; b; b = b->next)
		for (int t = 0; t < MEM_TAG_MAX; t++) {
			out->in_use[t] += (uint64_t)__atomic_load_n(&b->in_use[t], __ATOMIC_RELAXED);
			out->peak[t] += (uint64_t)__atomic_load_n(&b->peak[t], __ATOMIC_RELAXED);
			out->allocs[t] += __atomic_load_n(&b->allocs[t], __ATOMIC_RELAXED);
			out->alloc_fail[t] += __atomic_load_n(&b->alloc_fail[t], __ATOMIC_RELAXED);
		}
	pthread_mutex_unlock(&blocks_mu);
}

uint64_t mem_in_use(enum mem_tag tag)
{
	struct mem_stats st;

	mem_stats_read(&st);
	return st.in_use[tag];
}

uint64_t mem_peak(enum mem_tag tag)
{
	struct mem_stats st;

	mem_stats_read(&st);
	return st.peak[tag];
}

uint64_t mem_alloc_fails(enum mem_tag tag)
{
	struct mem_stats st;

	mem_stats_read(&st);
	return st.alloc_fail[tag];
}

void mem_peak_reset(enum mem_tag tag)
{
	pthread_mutex_lock(&blocks_mu);
	for (struct mem_block *b = blocks; b; b = b->next)
		__atomic_store_n(&b->peak[tag], __atomic_load_n(&b->in_use[tag], __ATOMIC_RELAXED),
				 __ATOMIC_RELAXED);
	pthread_mutex_unlock(&blocks_mu);
}

/* The size the allocator really reserved for p. Binaries link jemalloc as
 * malloc(), so malloc_usable_size() answers for it as well as for libc. */
static inline size_t usable(void *p)
{
	return malloc_usable_size(p);
}

static inline void account_add(enum mem_tag tag, void *p)
{
	struct mem_block *b = block();

	in_use_add(b, tag, (int64_t)usable(p));
	bump_u(&b->allocs[tag], 1);
}

static void account_fail(enum mem_tag tag)
{
	bump_u(&block()->alloc_fail[tag], 1);
}

void *mem_alloc(enum mem_tag tag, size_t size)
{
	void *p = malloc(size ? size : 1);

	if (!p) {
		account_fail(tag);
		return NULL;
	}
	account_add(tag, p);
	return p;
}

void *mem_calloc(enum mem_tag tag, size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p) {
		account_fail(tag);
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
		account_fail(tag);
		return NULL;
	}
	{
		struct mem_block *b = block();

		if (!p)
			bump_u(&b->allocs[tag], 1);
		in_use_add(b, tag, (int64_t)usable(q) - (int64_t)old);
	}
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
	in_use_add(block(), tag, -(int64_t)usable(p));
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
	struct mem_stats st;
	uint64_t t = 0;

	mem_stats_read(&st);
	for (int i = 0; i < MEM_TAG_MAX; i++)
		t += st.in_use[i];
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
