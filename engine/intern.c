/* Interning identities to dense 32-bit ids; see intern.h for the layout and
 * the rules on eviction and id reuse. */
#include "intern.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mem.h"

#define INTERN_F_USED 0x01   /* CLOCK reference bit, set on every get */
#define INTERN_F_HEAP 0x02   /* bytes live in b.heap */

struct intern_entry {
	uint64_t hash;
	uint32_t refs;       /* live: references held; free: next free id */
	uint32_t pin;        /* pin period of the last get */
	uint32_t last_s;     /* engine time of the last get, in 2^30 ns units */
	uint16_t len;
	uint8_t kind;        /* INTERN_KIND_NONE when the entry is free */
	uint8_t flags;
	union {
		uint8_t inl[INTERN_INLINE];
		uint8_t *heap;   /* owned, MEM_STORM */
	} b;
};
_Static_assert(sizeof(struct intern_entry) == 64, "one cache line per id");

struct intern_slot {
	uint32_t id;         /* INTERN_ID_NONE: empty */
	uint32_t tag;        /* tag_of(hash): the home and more hash bits */
};

struct intern_table {
	struct intern_slot *slots;   /* owned; index, 2^k >= 2 * max_ids */
	uint64_t mask;
	struct intern_entry **chunk; /* owned; aligned views of chunk_raw */
	void **chunk_raw;            /* owned; what mem_alloc returned */
	uint32_t n_chunks;           /* allocated */
	uint32_t max_ids;
	uint32_t n_alloc;            /* ids below this have an entry */
	uint32_t free_head;          /* free list through refs */
	uint32_t hand;               /* CLOCK hand */
	uint32_t sweep;              /* intern_expire() cursor */
	uint32_t pin;                /* current pin period (never 0) */
	unsigned evict_scan;
	uint64_t idle_units;         /* idle_ns in 2^30 ns units, 0 = never */
	uint64_t heap_bytes;
	struct intern_stats st;
};

static const char *const kind_names[INTERN_KIND_MAX] = {
	[INTERN_KIND_NONE] = "none", [INTERN_ADDR] = "addr", [INTERN_DOMAIN] = "domain",
	[INTERN_HELO] = "helo", [INTERN_IP4] = "ip4", [INTERN_IP6] = "ip6",
	[INTERN_NET4] = "net4", [INTERN_NET6] = "net6", [INTERN_MSGID] = "msgid",
	[INTERN_BODY] = "body",
};

const char *intern_kind_name(enum intern_kind kind)
{
	return (unsigned)kind < INTERN_KIND_MAX ? kind_names[kind] : "?";
}

static inline struct intern_entry *entry(const struct intern_table *t, uint32_t id)
{
	return &t->chunk[id / INTERN_CHUNK][id % INTERN_CHUNK];
}

static inline uint64_t rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}


/* Eight bytes a step, then a murmur3 finaliser: short keys (addresses, IPs)
 * are what we hash, so setup cost matters more than bulk speed. */
uint64_t intern_hash(enum intern_kind kind, const void *bytes, size_t len)
{
	const uint8_t *p = bytes;
	uint64_t h = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)kind << 56) ^ (uint64_t)len;
	uint64_t v;

	while (len >= 8) {
		memcpy(&v, p, 8);
		h = rotl64(h ^ (v * 0x87c37b91114253d5ULL), 31) * 0x4cf5ad432745937fULL;
		p += 8;
		len -= 8;
	}
	if (len) {
		v = 0;
		memcpy(&v, p, len);
		h = rotl64(h ^ (v * 0x87c37b91114253d5ULL), 31) * 0x4cf5ad432745937fULL;
	}
	return intern_fmix64(h);
}

static inline uint64_t home_of(const struct intern_table *t, uint64_t hash)
{
	return hash & t->mask;
}

/* A slot's tag: the home itself in the bits of mask (mask < 2^32, as max_ids
 * <= 2^31), the high hash bits above. A slot so tells its home without its
 * entry, and the backward shift of a deletion reads the index only, not one
 * random entry per slot it passes. Entries are compared only when the tags
 * match, that is when they share a home and the other bits. */
static inline uint32_t tag_of(const struct intern_table *t, uint64_t hash)
{
	return ((uint32_t)(hash >> 32) & ~(uint32_t)t->mask) | (uint32_t)(hash & t->mask);
}

static inline const uint8_t *entry_bytes(const struct intern_entry *e)
{
	return (e->flags & INTERN_F_HEAP) ? e->b.heap : e->b.inl;
}

static inline bool entry_is(const struct intern_entry *e, uint64_t hash,
			    enum intern_kind kind, const void *bytes, size_t len)
{
	return e->hash == hash && e->kind == kind && e->len == len &&
	       memcmp(entry_bytes(e), bytes, len) == 0;
}

/* Probes for (hash, kind, bytes). Returns the slot position holding it, or
 * the first empty position of its probe chain with *found false. */
static uint64_t probe(const struct intern_table *t, uint64_t hash, enum intern_kind kind,
		      const void *bytes, size_t len, bool *found)
{
	uint32_t tag = tag_of(t, hash);
	uint64_t pos = home_of(t, hash);

	for (;;) {
		const struct intern_slot *s = &t->slots[pos];

		if (s->id == INTERN_ID_NONE) {
			*found = false;
			return pos;
		}
		if (s->tag == tag && entry_is(entry(t, s->id), hash, kind, bytes, len)) {
			*found = true;
			return pos;
		}
		pos = (pos + 1) & t->mask;
	}
}

static uint64_t slot_of_id(const struct intern_table *t, uint32_t id)
{
	uint64_t pos = home_of(t, entry(t, id)->hash);

	while (t->slots[pos].id != id)
		pos = (pos + 1) & t->mask;
	return pos;
}

/* Backward-shift deletion: moves later members of the chain into the hole
 * so that every chain stays contiguous from its home. */
static void index_delete(struct intern_table *t, uint64_t hole)
{
	uint64_t j = hole;

	for (;;) {
		uint64_t k;

		j = (j + 1) & t->mask;
		if (t->slots[j].id == INTERN_ID_NONE)
			break;
		k = t->slots[j].tag & t->mask;
		/* The element at j may move to hole only if its home is not
		 * cyclically within (hole, j]. */
		if ((j > hole && (k <= hole || k > j)) || (j < hole && k <= hole && k > j)) {
			t->slots[hole] = t->slots[j];
			hole = j;
		}
	}
	t->slots[hole].id = INTERN_ID_NONE;
	t->slots[hole].tag = 0;
}

/* Unindexes and frees a live id; it goes to the free list. */
static void entry_release(struct intern_table *t, uint32_t id)
{
	struct intern_entry *e = entry(t, id);

	index_delete(t, slot_of_id(t, id));
	if (e->flags & INTERN_F_HEAP) {
		t->heap_bytes -= e->len;
		t->st.heap_keys--;
		mem_free(MEM_STORM, e->b.heap);
	}
	e->kind = INTERN_KIND_NONE;
	e->flags = 0;
	e->len = 0;
	e->refs = t->free_head;
	t->free_head = id;
	t->st.ids--;
}

static inline bool evictable(const struct intern_table *t, const struct intern_entry *e)
{
	return e->kind != INTERN_KIND_NONE && e->refs == 0 && e->pin != t->pin;
}

/* CLOCK: at most evict_scan entries; an unreferenced, unpinned entry gets
 * a second chance if it was used since the hand last passed. */
static uint32_t clock_evict(struct intern_table *t)
{
	for (unsigned n = 0; n < t->evict_scan && t->n_alloc; n++) {
		uint32_t id = t->hand;
		struct intern_entry *e = entry(t, id);

		t->hand = (t->hand + 1 == t->n_alloc) ? 0 : t->hand + 1;
		if (!evictable(t, e))
			continue;
		if (e->flags & INTERN_F_USED) {
			e->flags &= (uint8_t)~INTERN_F_USED;
			continue;
		}
		entry_release(t, id);
		t->st.evicted_clock++;
		return id;
	}
	return INTERN_ID_NONE;
}

static int chunk_add(struct intern_table *t)
{
	size_t sz = (size_t)INTERN_CHUNK * sizeof(struct intern_entry);
	void *raw = mem_alloc(MEM_STORM, sz + 64);

	if (!raw)
		return -ENOMEM;
	t->chunk_raw[t->n_chunks] = raw;
	t->chunk[t->n_chunks] = (struct intern_entry *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
	t->n_chunks++;
	return 0;
}

/* Takes a free id: the free list, then fresh entries, then the CLOCK hand. */
static uint32_t id_alloc(struct intern_table *t)
{
	uint32_t id;

	if (t->free_head != INTERN_ID_NONE) {
		id = t->free_head;
		t->free_head = entry(t, id)->refs;
		/* the next free entry is a random line, read at the next insert */
		if (t->free_head != INTERN_ID_NONE)
			__builtin_prefetch(entry(t, t->free_head), 1);
		return id;
	}
	if (t->n_alloc < t->max_ids) {
		if (t->n_alloc / INTERN_CHUNK >= t->n_chunks && chunk_add(t) < 0) {
			t->st.alloc_fail++;
			return INTERN_ID_NONE;
		}
		return t->n_alloc++;
	}
	id = clock_evict(t);
	if (id == INTERN_ID_NONE) {
		t->st.full++;
		return id;
	}
	/* clock_evict() pushed it on the free list: take it back. */
	t->free_head = entry(t, id)->refs;
	return id;
}

struct intern_table *intern_new(const struct intern_config *cfg)
{
	struct intern_table *t;
	uint64_t cap = 16;
	uint32_t n_chunks;

	if (!cfg || cfg->max_ids == 0 || cfg->max_ids > (1u << 31))
		return NULL;
	t = mem_calloc(MEM_STORM, 1, sizeof(*t));
	if (!t)
		goto fail_table;
	while (cap < 2 * (uint64_t)cfg->max_ids)
		cap <<= 1;
	t->slots = mem_alloc(MEM_STORM, cap * sizeof(*t->slots));
	if (!t->slots)
		goto fail_slots;
	memset(t->slots, 0xff, cap * sizeof(*t->slots));
	t->mask = cap - 1;
	n_chunks = (cfg->max_ids + INTERN_CHUNK - 1) / INTERN_CHUNK;
	t->chunk = mem_calloc(MEM_STORM, n_chunks, sizeof(*t->chunk));
	if (!t->chunk)
		goto fail_chunk;
	t->chunk_raw = mem_calloc(MEM_STORM, n_chunks, sizeof(*t->chunk_raw));
	if (!t->chunk_raw)
		goto fail_chunk_raw;
	t->max_ids = cfg->max_ids;
	t->free_head = INTERN_ID_NONE;
	t->pin = 1;
	t->evict_scan = cfg->evict_scan ? cfg->evict_scan : 64;
	t->idle_units = cfg->idle_ns ? (cfg->idle_ns >> 30) + 1 : 0;
	t->st.max_ids = cfg->max_ids;
	return t;

fail_chunk_raw:
	mem_free(MEM_STORM, t->chunk);
fail_chunk:
	mem_free(MEM_STORM, t->slots);
fail_slots:
	mem_free(MEM_STORM, t);
fail_table:
	return NULL;
}

void intern_free(struct intern_table *t)
{
	if (!t)
		return;
	for (uint32_t id = 0; id < t->n_alloc; id++) {
		struct intern_entry *e = entry(t, id);

		if (e->kind != INTERN_KIND_NONE && (e->flags & INTERN_F_HEAP))
			mem_free(MEM_STORM, e->b.heap);
	}
	for (uint32_t c = 0; c < t->n_chunks; c++)
		mem_free(MEM_STORM, t->chunk_raw[c]);
	mem_free(MEM_STORM, t->chunk_raw);
	mem_free(MEM_STORM, t->chunk);
	mem_free(MEM_STORM, t->slots);
	mem_free(MEM_STORM, t);
}

void intern_pin_next(struct intern_table *t)
{
	if (++t->pin == 0)
		t->pin = 1;
}

static inline void touch(struct intern_table *t, struct intern_entry *e, uint64_t now_ns)
{
	e->pin = t->pin;
	e->last_s = (uint32_t)(now_ns >> 30);
	e->flags |= INTERN_F_USED;
}

void intern_prefetch(const struct intern_table *t, uint64_t hash)
{
	__builtin_prefetch(&t->slots[home_of(t, hash)]);
}

/* Only the first few slots of the chain: at load <= 1/2 chains are short,
 * and this is a hint, so a long chain just goes unhinted. */
void intern_prefetch_entry(const struct intern_table *t, uint64_t hash)
{
	uint32_t tag = tag_of(t, hash);
	uint64_t pos = home_of(t, hash);

	for (unsigned n = 0; n < 4; n++) {
		const struct intern_slot *s = &t->slots[pos];

		if (s->id == INTERN_ID_NONE)
			return;
		if (s->tag == tag) {
			__builtin_prefetch(entry(t, s->id), 1);
			return;
		}
		pos = (pos + 1) & t->mask;
	}
}

uint32_t intern_get_hashed(struct intern_table *t, uint64_t hash, enum intern_kind kind,
			   const void *bytes, size_t len, uint64_t now_ns)
{
	struct intern_entry *e;
	uint64_t pos;
	uint32_t id;
	bool found;

	if (len > INTERN_MAX_LEN) {
		t->st.too_long++;
		return INTERN_ID_NONE;
	}
	t->st.lookups++;
	pos = probe(t, hash, kind, bytes, len, &found);
	if (found) {
		id = t->slots[pos].id;
		touch(t, entry(t, id), now_ns);
		t->st.hits++;
		return id;
	}
	id = id_alloc(t);
	if (id == INTERN_ID_NONE)
		return id;
	e = entry(t, id);
	if (len > INTERN_INLINE) {
		e->b.heap = mem_alloc(MEM_STORM, len);
		if (!e->b.heap) {
			e->kind = INTERN_KIND_NONE;
			e->refs = t->free_head;
			t->free_head = id;
			t->st.alloc_fail++;
			return INTERN_ID_NONE;
		}
		memcpy(e->b.heap, bytes, len);
		e->flags = INTERN_F_HEAP;
		t->heap_bytes += len;
		t->st.heap_keys++;
	} else {
		memcpy(e->b.inl, bytes, len);
		e->flags = 0;
	}
	e->hash = hash;
	e->kind = (uint8_t)kind;
	e->len = (uint16_t)len;
	e->refs = 0;
	touch(t, e, now_ns);
	/* An eviction in id_alloc() may have shifted the chain: probe again
	 * for the first empty slot. */
	pos = home_of(t, hash);
	while (t->slots[pos].id != INTERN_ID_NONE)
		pos = (pos + 1) & t->mask;
	t->slots[pos].id = id;
	t->slots[pos].tag = tag_of(t, hash);
	t->st.ids++;
	t->st.inserts++;
	return id;
}

uint32_t intern_get(struct intern_table *t, enum intern_kind kind,
		    const void *bytes, size_t len, uint64_t now_ns)
{
	return intern_get_hashed(t, intern_hash(kind, bytes, len), kind, bytes, len, now_ns);
}

uint32_t intern_find(const struct intern_table *t, enum intern_kind kind,
		     const void *bytes, size_t len)
{
	bool found;
	uint64_t pos;

	if (len > INTERN_MAX_LEN)
		return INTERN_ID_NONE;
	pos = probe(t, intern_hash(kind, bytes, len), kind, bytes, len, &found);
	return found ? t->slots[pos].id : INTERN_ID_NONE;
}

bool intern_live(const struct intern_table *t, uint32_t id)
{
	return id < t->n_alloc && entry(t, id)->kind != INTERN_KIND_NONE;
}

void intern_ref(struct intern_table *t, uint32_t id)
{
	if (entry(t, id)->refs++ == 0)
		t->st.referenced++;
}

void intern_prefetch_id(const struct intern_table *t, uint32_t id)
{
	__builtin_prefetch(entry(t, id), 1);
}

void intern_unref(struct intern_table *t, uint32_t id)
{
	struct intern_entry *e = entry(t, id);

	if (e->refs && --e->refs == 0)
		t->st.referenced--;
}

uint32_t intern_refs(const struct intern_table *t, uint32_t id)
{
	return intern_live(t, id) ? entry(t, id)->refs : 0;
}

const uint8_t *intern_bytes(const struct intern_table *t, uint32_t id,
			    enum intern_kind *kind, size_t *len)
{
	const struct intern_entry *e;

	if (!intern_live(t, id))
		return NULL;
	e = entry(t, id);
	if (kind)
		*kind = (enum intern_kind)e->kind;
	if (len)
		*len = e->len;
	return entry_bytes(e);
}

unsigned intern_expire(struct intern_table *t, uint64_t now_ns, unsigned max_work)
{
	uint64_t now_u = now_ns >> 30;
	unsigned n;

	if (!t->idle_units || !t->n_alloc)
		return 0;
	for (n = 0; n < max_work && n < t->n_alloc; n++) {
		uint32_t id = t->sweep;
		struct intern_entry *e = entry(t, id);

		t->sweep = (t->sweep + 1 >= t->n_alloc) ? 0 : t->sweep + 1;
		if (evictable(t, e) && now_u >= e->last_s && now_u - e->last_s >= t->idle_units) {
			entry_release(t, id);
			t->st.expired_idle++;
		}
	}
	return n;
}

void intern_get_stats(const struct intern_table *t, struct intern_stats *st)
{
	*st = t->st;
	st->index_bytes = (t->mask + 1) * sizeof(struct intern_slot) + sizeof(*t) +
			  (uint64_t)((t->max_ids + INTERN_CHUNK - 1) / INTERN_CHUNK) * 2 * sizeof(void *);
	st->bytes = (t->mask + 1) * sizeof(struct intern_slot) +
		    (uint64_t)t->n_chunks * (INTERN_CHUNK * sizeof(struct intern_entry) + 64) +
		    t->heap_bytes + sizeof(*t);
}

#define FAIL(...) do { fprintf(stderr, "intern_validate: " __VA_ARGS__); \
	fputc('\n', stderr); return -EINVAL; } while (0)

int intern_validate(const struct intern_table *t)
{
	uint64_t live = 0, in_index = 0, free_n = 0, heap = 0, referenced = 0;

	for (uint32_t id = 0; id < t->n_alloc; id++) {
		const struct intern_entry *e = entry(t, id);
		bool found;
		uint64_t pos;

		if (e->kind == INTERN_KIND_NONE)
			continue;
		live++;
		if (e->kind >= INTERN_KIND_MAX)
			FAIL("id %u has kind %u", id, e->kind);
		if (e->hash != intern_hash((enum intern_kind)e->kind, entry_bytes(e), e->len))
			FAIL("id %u: stored hash does not match its bytes", id);
		if (!!(e->flags & INTERN_F_HEAP) != (e->len > INTERN_INLINE))
			FAIL("id %u: heap flag disagrees with length %u", id, e->len);
		if (e->flags & INTERN_F_HEAP)
			heap++;
		if (e->refs)
			referenced++;
		pos = probe(t, e->hash, (enum intern_kind)e->kind, entry_bytes(e), e->len, &found);
		if (!found || t->slots[pos].id != id)
			FAIL("id %u is not reachable from its home slot", id);
	}
	for (uint64_t pos = 0; pos <= t->mask; pos++) {
		const struct intern_slot *s = &t->slots[pos];
		uint64_t p;

		if (s->id == INTERN_ID_NONE)
			continue;
		in_index++;
		if (!intern_live(t, s->id))
			FAIL("slot %llu holds free id %u", (unsigned long long)pos, s->id);
		if (s->tag != tag_of(t, entry(t, s->id)->hash))
			FAIL("slot %llu: tag mismatch", (unsigned long long)pos);
		/* No hole between the home and the position. */
		for (p = home_of(t, entry(t, s->id)->hash); p != pos; p = (p + 1) & t->mask)
			if (t->slots[p].id == INTERN_ID_NONE)
				FAIL("slot %llu: hole in its probe chain", (unsigned long long)pos);
	}
	for (uint32_t id = t->free_head; id != INTERN_ID_NONE; id = entry(t, id)->refs) {
		if (id >= t->n_alloc || entry(t, id)->kind != INTERN_KIND_NONE)
			FAIL("free list holds id %u which is live or out of range", id);
		if (++free_n > t->n_alloc)
			FAIL("free list loops");
	}
	if (live != t->st.ids || in_index != live)
		FAIL("counts: %llu live entries, %llu indexed, stats say %llu",
		     (unsigned long long)live, (unsigned long long)in_index,
		     (unsigned long long)t->st.ids);
	if (live + free_n != t->n_alloc)
		FAIL("%llu live + %llu free != %u allocated", (unsigned long long)live,
		     (unsigned long long)free_n, t->n_alloc);
	if (referenced != t->st.referenced)
		FAIL("%llu referenced ids, stats say %llu", (unsigned long long)referenced,
		     (unsigned long long)t->st.referenced);
	if (heap != t->st.heap_keys)
		FAIL("heap keys %llu, stats say %llu", (unsigned long long)heap,
		     (unsigned long long)t->st.heap_keys);
	if (t->n_alloc > t->max_ids || t->st.ids > t->max_ids)
		FAIL("more ids than max_ids");
	return 0;
}
