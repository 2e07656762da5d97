/* Interning: identities (addresses, domains, HELO names, client IPs and
 * networks, message fingerprints) to dense 32-bit ids, so the storm tracker
 * can keep them in Roaring bitmaps.
 *
 * Layout. An id is the index of a 64-byte entry (one cache line) held in
 * chunks of INTERN_CHUNK entries; the chunk pointer array is sized at
 * construction for max_ids, chunks are allocated as the table fills. An entry
 * keeps the full 64-bit hash, the kind, the length and the bytes: inline up to
 * INTERN_INLINE bytes, on the heap (MEM_STORM) beyond. Lookup goes through an
 * open-addressing index (linear probing, 8-byte slots holding the id and a
 * 32-bit tag: the slot's home and high hash bits, so that backward-shift
 * deletion, with no tombstones, reads no entry to place a slot).
 * The index is sized at construction for max_ids at load <= 1/2 and never
 * rehashes, so no call does unbounded work. Equality is exact (kind, length
 * and bytes compared), never by hash alone.
 *
 * Lifetime of an id, and why recycling is safe. Whoever stores an id beyond
 * the current call (the storm tracker, in a window bitmap or as the key of a
 * window) holds a reference (intern_ref/intern_unref). An id is only ever
 * evicted with no references, so no live bitmap, key state or pending work
 * can hold an id when it is handed to a different identity: a recycled id
 * can never inherit the old identity's window membership. Unreferenced ids
 * stay as a cache until either
 *   - intern_expire() finds them idle for idle_ns (bounded sweep), or
 *   - the table is full and intern_get() needs a slot: a CLOCK hand visits
 *     at most evict_scan entries and takes the first unreferenced one not
 *     used since the hand last passed ("LRU-ish").
 * Ids handed out since the last intern_pin_next() are pinned: neither path
 * evicts them, so every id a caller obtained while handling one transaction
 * stays valid until it starts the next one, referenced or not.
 * When no entry can be evicted within the bounded scan, intern_get() fails
 * (INTERN_ID_NONE) and counts it in intern_stats.full.
 *
 * Single-threaded: one owner (the storm tracker) calls everything.
 */
#ifndef BW_INTERN_H
#define BW_INTERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INTERN_ID_NONE UINT32_MAX
#define INTERN_CHUNK 1024u
#define INTERN_INLINE 40u     /* bytes kept inside the entry */
#define INTERN_MAX_LEN 1024u  /* longer identities are refused (counted) */

/* Namespaces: the same bytes in two kinds are two ids. Envelope senders and
 * recipients share INTERN_ADDR, so "a@b" is one id in both roles. */
enum intern_kind {
	INTERN_KIND_NONE = 0,
	INTERN_ADDR,     /* envelope address, lowercased by the caller */
	INTERN_DOMAIN,   /* sender domain */
	INTERN_HELO,     /* HELO/EHLO argument */
	INTERN_IP4,      /* 4 bytes */
	INTERN_IP6,      /* 16 bytes */
	INTERN_NET4,     /* 4 bytes masked + 1 byte prefix length */
	INTERN_NET6,     /* 16 bytes masked + 1 byte prefix length */
	INTERN_MSGID,    /* Message-ID as sent */
	INTERN_BODY,     /* 8-byte body hash */
	INTERN_KIND_MAX
};

struct intern_config {
	uint32_t max_ids;     /* hard cap on live ids (>= 1; at most 2^31) */
	uint64_t idle_ns;     /* unreferenced ids idle this long are expired; 0 = never
			       * (kept in units of 2^30 ns, so about 1 s granularity) */
	unsigned evict_scan;  /* entries the CLOCK hand visits per full-table insert (0 = 64) */
};

struct intern_stats {
	uint64_t ids;            /* live ids */
	uint64_t referenced;     /* of which with refs > 0 */
	uint64_t max_ids;
	uint64_t heap_keys;      /* ids whose bytes are on the heap (longer than INTERN_INLINE) */
	uint64_t bytes;          /* bytes this table holds (index, chunks, heap keys) */
	uint64_t index_bytes;    /* of which the index and the fixed arrays */
	uint64_t lookups, hits, inserts;
	uint64_t evicted_clock;  /* recycled by the CLOCK hand at the cap */
	uint64_t expired_idle;   /* freed by intern_expire() */
	uint64_t full;           /* intern_get() refused: cap reached, nothing evictable */
	uint64_t too_long;       /* refused: longer than INTERN_MAX_LEN */
	uint64_t alloc_fail;     /* refused: mem_alloc() failed */
};

struct intern_table;

/* Returns a new, empty table owned by the caller (free with intern_free), or
 * NULL on a bad config or allocation failure. */
struct intern_table *intern_new(const struct intern_config *cfg);
/* Frees t and every key it holds; ids become meaningless. NULL is fine. */
void intern_free(struct intern_table *t);

/* Starts a new pinning period (one transaction): ids handed out before are no
 * longer pinned. */
void intern_pin_next(struct intern_table *t);

/* The id of (kind, bytes[0..len)), inserting it if new; marks it used at
 * now_ns and pins it. Returns INTERN_ID_NONE (counted) when the table is full
 * with nothing evictable, when len > INTERN_MAX_LEN, or on allocation failure.
 * The bytes are copied; the caller keeps its buffer. */
uint32_t intern_get(struct intern_table *t, enum intern_kind kind,
		    const void *bytes, size_t len, uint64_t now_ns);
/* Same lookup with a precomputed intern_hash() (for callers that prefetch). */
uint32_t intern_get_hashed(struct intern_table *t, uint64_t hash, enum intern_kind kind,
			   const void *bytes, size_t len, uint64_t now_ns);
/* The id if present, else INTERN_ID_NONE; changes nothing (a read-only look-up). */
uint32_t intern_find(const struct intern_table *t, enum intern_kind kind,
		     const void *bytes, size_t len);

/* MurmurHash3's 64-bit finalizer: every input bit reaches every output bit.
 * The last step of intern_hash(); the storm tracker's key index and the
 * bench's ceiling mix with it too, so they hash as the tracker does. */
static inline uint64_t intern_fmix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

uint64_t intern_hash(enum intern_kind kind, const void *bytes, size_t len);
/* Hints the cache with the index slot a later lookup of hash will probe. */
void intern_prefetch(const struct intern_table *t, uint64_t hash);
/* Hints the cache with the entry a later lookup of hash will compare, found
 * through its index slot: call it after intern_prefetch(hash) has had time
 * to bring the slot, or it waits for the slot. Changes nothing. */
void intern_prefetch_entry(const struct intern_table *t, uint64_t hash);

/* References: an id with refs > 0 is never evicted. id must be live. */
void intern_ref(struct intern_table *t, uint32_t id);
void intern_unref(struct intern_table *t, uint32_t id);
/* A hint: id's entry will be ref'd or unref'd soon (prefetched for writing). */
void intern_prefetch_id(const struct intern_table *t, uint32_t id);
uint32_t intern_refs(const struct intern_table *t, uint32_t id);

/* The bytes of a live id (borrowed: valid until the id is evicted), with its
 * kind and length; NULL if id is not live. */
const uint8_t *intern_bytes(const struct intern_table *t, uint32_t id,
			    enum intern_kind *kind, size_t *len);
bool intern_live(const struct intern_table *t, uint32_t id);

/* Housekeeping: visits at most max_work entries, freeing unreferenced,
 * unpinned ids idle for idle_ns. Returns the number of entries visited. */
unsigned intern_expire(struct intern_table *t, uint64_t now_ns, unsigned max_work);

void intern_get_stats(const struct intern_table *t, struct intern_stats *st);
/* Checks every invariant (index <-> entries, counts, free list); returns 0 or
 * -EINVAL with a reason on stderr. O(max_ids): for tests. */
int intern_validate(const struct intern_table *t);
const char *intern_kind_name(enum intern_kind kind);

#endif
