/* The storm tracker; see storm.h for the data layout, the window semantics
 * and the memory model. */
#include "storm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <roaring/roaring.h>

#include "intern.h"
#include "mem.h"

#define KEY_CHUNK 1024u
#define KEY_NONE UINT32_MAX
#define KEY_F_OVER 0x01
#define CAP_SAMPLES 5        /* keys compared per eviction (Redis-style sampled LRU) */
#define CAP_DRAWS 16         /* random draws to find them */
#define CAP_EVICT_MAX 4      /* evictions per new key */
/* Estimate of CRoaring 0.2.66 heap per bitmap and per container (struct,
 * arrays of keys/typecodes/pointers, container header, allocator rounding),
 * measured with mallinfo2 over 10^5 small bitmaps; members add 2 bytes each
 * (array containers). bench_storm prints the estimate against the allocator. */
#define BM_BYTES_BASE 48u
#define BM_BYTES_CONTAINER 84u
#define BM_BYTES_MEMBER 2u
/* Small member sets of distinct/overlap keys live inline in the key record
 * (see struct storm_key): at most this many members, fewer when the bucket
 * area is smaller (stride is sized for at least INL_MIN). */
#define INL_MAX 16u
#define INL_MIN 8u
#define RCPT_PREFETCH 64u    /* recipients hashed and prefetched ahead per tx */

/* One bucket of one key. */
union storm_bucket {
	struct {
		uint32_t num, den;  /* saturating */
	} c;
	roaring_bitmap_t *bm;       /* owned; NULL while empty */
};

/* One key of one rule: `stride` bytes in the key store (the bucket array
 * is sized for the largest bucket count among the rules, and for at least
 * INL_MIN inline members).
 *
 * Distinct and overlap keys have two representations of their window:
 *   - inline (uni == NULL): the area of b[] holds up to t->inl_cap members
 *     as uint32_t ids[inl_cap] followed by uint8_t slots[inl_cap]: member i
 *     is ids[i], in the bucket slots[i] of its newest occurrence; the
 *     window union is ids[0..num). No bitmap is allocated. Every key starts
 *     inline;
 *   - roaring (uni != NULL): b[s].bm and uni as described in storm.h. A key
 *     switches to it when an add would exceed inl_cap, and goes back to
 *     inline (all zero) when its window empties. */
struct storm_key {
	uint32_t key_id;            /* intern id, one reference held; KEY_NONE when free */
	uint16_t rule;
	uint8_t flags;
	uint8_t pad;
	uint32_t last_client;       /* overlap: client id that last fed it (ref held) or NONE */
	uint32_t next_free;
	uint64_t head;              /* newest bucket sequence rotated to */
	uint64_t queued;            /* newest bucket sequence queued for expiry */
	uint64_t first_ns, last_ns;
	uint64_t num, den;          /* window totals; distinct/overlap: union cardinality */
	double val;                 /* overlap: last Jaccard index */
	roaring_bitmap_t *uni;      /* owned; distinct/overlap window union, NULL while empty */
	union storm_bucket b[];
};

struct storm_qent {
	uint32_t key;               /* key store index */
	uint32_t seq;               /* bucket sequence, low 32 bits */
};

/* Per rule: (key, bucket) pairs that received data, in time order. */
struct storm_queue {
	struct storm_qent *e;       /* owned ring, cap a power of two */
	uint32_t cap, head, n;
};

struct storm_rule_rt {
	struct storm_rule r;        /* r.name points at name */
	char name[STORM_NAME_MAX];
	enum storm_field denom;
	uint32_t nb;                /* buckets */
	uint64_t width_ns;
	/* bucket of the tracker clock, kept so that updates divide once per
	 * bucket width and not per key (rule_seq) */
	uint64_t seq, seq_lo;
	uint32_t seq_slot;
	uint32_t krank;             /* among the rules with the same `per` (key_hash) */
	struct storm_queue q;
};

struct storm_kslot {
	uint32_t idx;               /* key store index, KEY_NONE: empty */
	uint32_t tag;
};

/* Identities of the transaction being observed, interned on first use. */
struct storm_txctx {
	const struct storm_tx_summary *tx;
	uint64_t ts, seq_ns;
	uint32_t id[STORM_F_MAX];
	uint64_t hash[STORM_F_MAX];     /* intern_hash() of the field, 0: not computed */
	uint8_t done[STORM_F_MAX];
	uint32_t n_rcpt;            /* looked at (<= max_rcpt) */
	bool rcpt_done;
	uint32_t *rcpt_id;          /* tracker scratch, max_rcpt */
	uint8_t *rcpt_st;
	uint32_t *cls[4];           /* ids per class: all, accepted, rejected, overquota */
	uint32_t n_cls[4];
	uint32_t n_rhash;           /* recipients hashed by tx_prefetch */
	uint64_t *rcpt_hash;        /* tracker scratch, RCPT_PREFETCH */
	bool tx_bm_done;
};

struct storm_tracker {
	struct storm_config cfg;
	struct storm_rule_rt *rules;  /* owned, n_rules */
	uint32_t n_rules;
	struct intern_table *intern;  /* owned */

	/* key store: chunks of KEY_CHUNK keys of `stride` bytes */
	uint8_t **kchunk;             /* owned, sized for max_keys */
	uint32_t n_kchunks;
	uint32_t max_keys;
	uint32_t n_kalloc;            /* high-water index */
	uint32_t kfree;               /* free list through next_free */
	size_t stride;
	uint32_t max_nb;
	uint32_t inl_cap;             /* inline members per distinct/overlap key */

	struct storm_kslot *kslots;   /* owned index, 2^k >= 2 * max_keys */
	uint64_t kmask;

	uint64_t now;                 /* tracker clock, ns */
	uint64_t rng;
	uint32_t adv_rule;            /* advance round-robin start */

	/* bitmap accounting for the estimate */
	uint64_t bm_count, bm_containers, bm_members;
	uint64_t queue_bytes;         /* ring capacity */
	uint64_t queue_used;          /* entries queued, all rules */

	/* per-tx scratch (owned) */
	uint32_t *rcpt_id;
	uint8_t *rcpt_st;
	uint32_t *cls_buf;
	uint32_t *hit_of_rule;        /* index into out->hit, valid when hit_gen matches */
	uint32_t *hit_gen;
	uint32_t gen;
	uint32_t key_of[STORM_RULES_MAX];  /* storm_observe: each rule's key this tx */
	uint32_t tx_fields;           /* 1 << field: identities tx_field() may intern */
	bool tx_rcpt;                 /* some rule reads the recipients */
	uint64_t *rcpt_hash;          /* RCPT_PREFETCH */
	roaring_bitmap_t *tx_bm;      /* owned; the tx's recipient set for overlap */

	struct storm_stats st;
	char keybuf[INTERN_MAX_LEN + 64];
};

/* ---- names ---------------------------------------------------------- */

static const char *const field_names[STORM_F_MAX] = {
	[STORM_F_NONE] = "none", [STORM_F_CLIENT_IP] = "client_ip",
	[STORM_F_CLIENT_NET] = "client_net", [STORM_F_MAIL_FROM] = "sender",
	[STORM_F_MAIL_FROM_DOMAIN] = "sender_domain", [STORM_F_HELO] = "helo",
	[STORM_F_RCPT] = "rcpt", [STORM_F_MESSAGE_ID] = "message_id",
	[STORM_F_BODY_HASH] = "fingerprint", [STORM_F_MESSAGE] = "message",
	[STORM_F_ACCEPTED_RCPT] = "accepted_rcpt", [STORM_F_REJECTED_RCPT] = "rejected_rcpt",
	[STORM_F_OVERQUOTA_RCPT] = "overquota_rcpt", [STORM_F_NULL_SENDER] = "null_sender",
	[STORM_F_AUTO_SUBMITTED] = "auto_submitted",
};

static const char *const kind_names[STORM_KIND_MAX] = {
	[STORM_KIND_NONE] = "none", [STORM_COUNT] = "count", [STORM_DISTINCT] = "distinct",
	[STORM_RATIO] = "ratio", [STORM_OVERLAP] = "overlap",
};

const char *storm_field_name(enum storm_field f)
{
	return (unsigned)f < STORM_F_MAX ? field_names[f] : "?";
}

enum storm_field storm_field_parse(const char *s)
{
	for (int f = STORM_F_NONE + 1; f < STORM_F_MAX; f++)
		if (strcmp(s, field_names[f]) == 0)
			return (enum storm_field)f;
	return STORM_F_NONE;
}

const char *storm_kind_name(enum storm_kind k)
{
	return (unsigned)k < STORM_KIND_MAX ? kind_names[k] : "?";
}

enum storm_kind storm_kind_parse(const char *s)
{
	for (int k = STORM_KIND_NONE + 1; k < STORM_KIND_MAX; k++)
		if (strcmp(s, kind_names[k]) == 0)
			return (enum storm_kind)k;
	return STORM_KIND_NONE;
}

static inline bool field_is_identity(enum storm_field f)
{
	return f >= STORM_F_CLIENT_IP && f <= STORM_F_BODY_HASH;
}

static inline bool field_is_rcpt_class(enum storm_field f)
{
	return f == STORM_F_RCPT || f == STORM_F_ACCEPTED_RCPT ||
	       f == STORM_F_REJECTED_RCPT || f == STORM_F_OVERQUOTA_RCPT;
}

/* Index into the per-class recipient arrays. */
static inline int rcpt_class(enum storm_field f)
{
	switch (f) {
	case STORM_F_ACCEPTED_RCPT: return 1;
	case STORM_F_REJECTED_RCPT: return 2;
	case STORM_F_OVERQUOTA_RCPT: return 3;
	default: return 0;
	}
}

static inline bool status_in_class(uint8_t st, int cls)
{
	switch (cls) {
	case 1: return st == STORM_RCPT_ACCEPTED;
	case 2: return st == STORM_RCPT_REJECTED_UNKNOWN;
	case 3: return st == STORM_RCPT_OVERQUOTA;
	default: return true;
	}
}

static enum storm_field default_denom(const struct storm_rule *r)
{
	if (r->denom != STORM_F_NONE)
		return r->denom;
	return field_is_rcpt_class(r->what) ? STORM_F_RCPT : STORM_F_MESSAGE;
}

int storm_rule_check(const struct storm_rule *r, char *err, size_t err_len)
{
	const char *why = NULL;
	uint32_t nb = r->buckets ? r->buckets : 10;

	if (!r->name || !r->name[0] || strlen(r->name) >= STORM_NAME_MAX)
		why = "rule name missing or too long";
	else if (r->kind <= STORM_KIND_NONE || r->kind >= STORM_KIND_MAX)
		why = "unknown kind (count, distinct, ratio, overlap)";
	else if (r->what <= STORM_F_NONE || r->what >= STORM_F_MAX)
		why = "unknown counted field";
	else if (!field_is_identity(r->per))
		why = "the per field must be an identity (client_ip, client_net, sender, "
		      "sender_domain, helo, rcpt, message_id, fingerprint)";
	else if (r->kind == STORM_DISTINCT && !field_is_identity(r->what) &&
		 !field_is_rcpt_class(r->what))
		why = "distinct needs an identity to count (e.g. rcpt, client_ip, mail_from)";
	else if (r->kind == STORM_DISTINCT && r->what == r->per)
		why = "distinct counts a field per itself";
	else if (r->kind == STORM_OVERLAP && !field_is_rcpt_class(r->what))
		why = "overlap compares recipient sets: what must be rcpt or a *_rcpt class";
	else if (r->kind == STORM_OVERLAP && (r->per == STORM_F_RCPT))
		why = "overlap per rcpt is meaningless";
	else if (r->kind == STORM_OVERLAP && (r->threshold < 0 || r->threshold > 1))
		why = "overlap threshold is a Jaccard index in [0, 1]";
	else if (r->kind == STORM_RATIO && (r->denom != STORM_F_NONE &&
		 (r->denom <= STORM_F_NONE || r->denom >= STORM_F_MAX)))
		why = "unknown ratio denominator";
	else if (r->kind != STORM_RATIO && r->denom != STORM_F_NONE)
		why = "only ratio rules take a denominator";
	else if (r->window_ns == 0)
		why = "window must be positive";
	else if (nb > STORM_BUCKETS_MAX)
		why = "too many buckets (at most 64)";
	else if (r->window_ns < nb)
		why = "window shorter than one ns per bucket";
	else if (!(r->threshold >= 0))
		why = "threshold must be a non-negative number";
	if (!why)
		return 0;
	if (err && err_len)
		snprintf(err, err_len, "%s: %s", r->name ? r->name : "(unnamed)", why);
	return -EINVAL;
}

/* ---- key store and index --------------------------------------------- */

static inline struct storm_key *key_at(const struct storm_tracker *t, uint32_t idx)
{
	return (struct storm_key *)(t->kchunk[idx / KEY_CHUNK] + (size_t)(idx % KEY_CHUNK) * t->stride);
}

/* The index hash of (rule, key_id): home slot in the low bits, tag in the
 * high 32. Rules keyed by the same field share one hash of (field, key_id)
 * and take consecutive home slots by their rank among those rules, so the
 * keys one identity has under several rules sit in one index line (one miss
 * for all, not one per rule). The tag differs by rank, so a neighbour of
 * another rule is not mistaken for the key.
 *
 * The tag's low bits (those of kmask) are the home itself, the rest are
 * other hash bits: a slot then tells its home without its record, so a
 * deletion that shifts a chain back reads the index only, not one random
 * record per slot it passes (kslot_home). Two keys are compared only when
 * their tags match, that is when they share a home and the other bits. */
static inline uint64_t key_hash(const struct storm_tracker *t, uint32_t rule, uint32_t key_id)
{
	const struct storm_rule_rt *r = &t->rules[rule];
	uint64_t x = ((uint64_t)r->r.per << 32) | key_id;
	uint32_t home, tag, kmask32 = (uint32_t)t->kmask;

	x = intern_fmix64(x);
	/* kmask < 2^32: the home needs no carry out of the low half */
	home = (uint32_t)x + r->krank;
	tag = ((uint32_t)(x >> 32) ^ (r->krank * 0x9e3779b1u)) & ~kmask32;
	return ((uint64_t)(tag | (home & kmask32)) << 32) | home;
}

/* The home slot of the key an occupied slot holds (see key_hash). */
static inline uint64_t kslot_home(const struct storm_tracker *t, const struct storm_kslot *s)
{
	return s->tag & t->kmask;
}

/* Slot position of (rule, key_id), or of the empty slot ending its chain. */
static uint64_t kindex_probe(const struct storm_tracker *t, uint32_t rule, uint32_t key_id,
			     bool *found)
{
	uint64_t h = key_hash(t, rule, key_id);
	uint32_t tag = (uint32_t)(h >> 32);
	uint64_t pos = h & t->kmask;

	for (;;) {
		const struct storm_kslot *s = &t->kslots[pos];

		if (s->idx == KEY_NONE) {
			*found = false;
			return pos;
		}
		if (s->tag == tag) {
			const struct storm_key *k = key_at(t, s->idx);

			if (k->key_id == key_id && k->rule == rule) {
				*found = true;
				return pos;
			}
		}
		pos = (pos + 1) & t->kmask;
	}
}

static void kindex_delete(struct storm_tracker *t, uint64_t hole)
{
	uint64_t j = hole;

	for (;;) {
		uint64_t home;

		j = (j + 1) & t->kmask;
		if (t->kslots[j].idx == KEY_NONE)
			break;
		home = kslot_home(t, &t->kslots[j]);
		if ((j > hole && (home <= hole || home > j)) || (j < hole && home <= hole && home > j)) {
			t->kslots[hole] = t->kslots[j];
			hole = j;
		}
	}
	t->kslots[hole].idx = KEY_NONE;
	t->kslots[hole].tag = 0;
}

/* Hints the cache with every line of the record at idx (a record spans two
 * or three lines, and an update reads the header and one bucket). */
static inline void key_prefetch(const struct storm_tracker *t, uint32_t idx)
{
	const uint8_t *p = (const uint8_t *)key_at(t, idx);
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)63, end = (uintptr_t)p + t->stride;

	for (; a < end; a += 64)
		__builtin_prefetch((const void *)a, 1);
}

/* Hints the record of (rule, key_id) if its home index slot holds it
 * (read: the slot line should be in cache by now). */
static inline void key_prefetch_slot(const struct storm_tracker *t, uint32_t rule, uint32_t key_id)
{
	uint64_t h = key_hash(t, rule, key_id);
	const struct storm_kslot *s = &t->kslots[h & t->kmask];

	if (s->idx != KEY_NONE && s->tag == (uint32_t)(h >> 32))
		key_prefetch(t, s->idx);
}

/* ---- bitmaps with accounting ------------------------------------------ */

static roaring_bitmap_t *bm_new(struct storm_tracker *t)
{
	roaring_bitmap_t *bm = roaring_bitmap_create();

	if (!bm) {
		t->st.alloc_fail++;
		return NULL;
	}
	t->bm_count++;
	return bm;
}

/* Frees bm whose cardinality n the caller knows (it is counted). */
static void bm_free_n(struct storm_tracker *t, roaring_bitmap_t *bm, uint64_t n)
{
	t->bm_containers -= (uint64_t)bm->high_low_container.size;
	t->bm_members -= n;
	t->bm_count--;
	roaring_bitmap_free(bm);
}

static void bm_free(struct storm_tracker *t, roaring_bitmap_t *bm)
{
	if (bm)
		bm_free_n(t, bm, roaring_bitmap_get_cardinality(bm));
}

static inline bool bm_add(struct storm_tracker *t, roaring_bitmap_t *bm, uint32_t v)
{
	int32_t c0 = bm->high_low_container.size;

	if (!roaring_bitmap_add_checked(bm, v))
		return false;
	t->bm_containers += (uint64_t)(bm->high_low_container.size - c0);
	t->bm_members++;
	return true;
}

static uint64_t bm_bytes(const struct storm_tracker *t)
{
	return t->bm_count * BM_BYTES_BASE + t->bm_containers * BM_BYTES_CONTAINER +
	       t->bm_members * BM_BYTES_MEMBER;
}

/* ---- inline member sets ------------------------------------------------ */

static inline uint32_t *inl_ids(struct storm_key *k)
{
	return (uint32_t *)(void *)k->b;
}

static inline uint8_t *inl_slots(const struct storm_tracker *t, struct storm_key *k)
{
	return (uint8_t *)(void *)k->b + (size_t)t->inl_cap * sizeof(uint32_t);
}

static inline const uint32_t *inl_ids_c(const struct storm_key *k)
{
	return (const uint32_t *)(const void *)k->b;
}

static inline const uint8_t *inl_slots_c(const struct storm_tracker *t, const struct storm_key *k)
{
	return (const uint8_t *)(const void *)k->b + (size_t)t->inl_cap * sizeof(uint32_t);
}

/* The bytes counted against mem_cap: the fixed indexes, the live keys (not
 * the chunk slack, at most one chunk), queue entries (not the ring slack, at
 * most 2x), bitmaps (estimate) and the referenced ids. Unreferenced ids are a cache bounded by max_ids and
 * intern_idle_ns, not by the cap; storm_stats.bytes adds them and the slack. */
static uint64_t tracker_bytes(const struct storm_tracker *t)
{
	struct intern_stats is;

	intern_get_stats(t->intern, &is);
	return sizeof(*t) + (t->kmask + 1) * sizeof(struct storm_kslot) +
	       t->st.keys * t->stride + t->queue_used * sizeof(struct storm_qent) +
	       bm_bytes(t) + is.index_bytes + is.referenced * (64 + 16);
}

static uint64_t tracker_bytes_all(const struct storm_tracker *t)
{
	struct intern_stats is;

	intern_get_stats(t->intern, &is);
	return sizeof(*t) + (t->kmask + 1) * sizeof(struct storm_kslot) +
	       (uint64_t)t->n_kchunks * KEY_CHUNK * t->stride +
	       t->queue_bytes + bm_bytes(t) + is.bytes;
}

/* ---- events ------------------------------------------------------------ */

static const char *key_text(struct storm_tracker *t, uint32_t key_id)
{
	enum intern_kind kind;
	size_t len;
	const uint8_t *p = intern_bytes(t->intern, key_id, &kind, &len);
	char *o = t->keybuf;
	uint64_t h;

	if (!p)
		return "";
	switch (kind) {
	case INTERN_IP4:
		inet_ntop(AF_INET, p, o, sizeof(t->keybuf));
		break;
	case INTERN_IP6:
		inet_ntop(AF_INET6, p, o, sizeof(t->keybuf));
		break;
	case INTERN_NET4:
		inet_ntop(AF_INET, p, o, sizeof(t->keybuf));
		snprintf(o + strlen(o), 8, "/%u", p[4]);
		break;
	case INTERN_NET6:
		inet_ntop(AF_INET6, p, o, sizeof(t->keybuf));
		snprintf(o + strlen(o), 8, "/%u", p[16]);
		break;
	case INTERN_BODY:
		memcpy(&h, p, 8);
		snprintf(o, sizeof(t->keybuf), "%016llx", (unsigned long long)h);
		break;
	default:
		memcpy(o, p, len);
		o[len] = '\0';
		break;
	}
	return o;
}

static double key_value(const struct storm_rule_rt *r, const struct storm_key *k)
{
	switch (r->r.kind) {
	case STORM_RATIO:
		return k->den ? (double)k->num / (double)k->den : 0.0;
	case STORM_OVERLAP:
		return k->val;
	default:
		return (double)k->num;
	}
}

/* Whether the key is over its rule's threshold, from its current totals.
 * Overlap keys keep the verdict of their last comparison while their window
 * holds recipients. */
static bool key_over_now(const struct storm_rule_rt *r, const struct storm_key *k)
{
	switch (r->r.kind) {
	case STORM_RATIO:
		return k->den >= r->r.min && k->den &&
		       (double)k->num > r->r.threshold * (double)k->den;
	case STORM_OVERLAP:
		return k->num && (k->flags & KEY_F_OVER);
	default:
		return (double)k->num > r->r.threshold;
	}
}

static void emit(struct storm_tracker *t, uint32_t ri, const struct storm_key *k,
		 enum storm_dir dir)
{
	const struct storm_rule_rt *r = &t->rules[ri];
	struct storm_event ev;

	if (dir == STORM_UP)
		t->st.events_up++;
	else
		t->st.events_down++;
	if (!t->cfg.on_event)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.dir = dir;
	ev.rule = ri;
	ev.rule_name = r->name;
	ev.per = r->r.per;
	ev.key = key_text(t, k->key_id);
	ev.value = key_value(r, k);
	ev.num = k->num;
	ev.den = r->r.kind == STORM_RATIO ? k->den : 0;
	ev.window_ns = r->r.window_ns;
	ev.first_seen_ns = k->first_ns;
	ev.last_seen_ns = k->last_ns;
	ev.ts_ns = t->now;
	t->cfg.on_event(t->cfg.user, &ev);
}

/* Re-evaluates the threshold after k changed; emits the crossing if any.
 * Returns true when this call crossed up. */
static bool key_settle(struct storm_tracker *t, uint32_t ri, struct storm_key *k, bool over)
{
	bool was = k->flags & KEY_F_OVER;

	if (over == was)
		return false;
	if (over) {
		k->flags |= KEY_F_OVER;
		t->st.keys_over++;
		emit(t, ri, k, STORM_UP);
		return true;
	}
	k->flags &= (uint8_t)~KEY_F_OVER;
	t->st.keys_over--;
	emit(t, ri, k, STORM_DOWN);
	return false;
}

/* ---- rotation ---------------------------------------------------------- */

static inline bool key_is_bitmap(const struct storm_rule_rt *r)
{
	return r->r.kind == STORM_DISTINCT || r->r.kind == STORM_OVERLAP;
}

/* Drops every member of the key's window (union and buckets). */
static bool unref_cb(uint32_t v, void *p)
{
	intern_unref(p, v);
	return true;
}

static void key_clear_window(struct storm_tracker *t, const struct storm_rule_rt *r,
			     struct storm_key *k)
{
	if (key_is_bitmap(r) && !k->uni) {
		uint32_t *ids = inl_ids(k);
		const uint8_t *sl = inl_slots(t, k);
		uint64_t seen = 0;

		for (uint64_t i = 0; i < k->num; i++)
			intern_prefetch_id(t->intern, ids[i]);
		for (uint64_t i = 0; i < k->num; i++) {
			seen |= 1ull << sl[i];
			intern_unref(t->intern, ids[i]);
		}
		t->st.buckets_expired += (uint64_t)__builtin_popcountll(seen);
		t->st.pairs -= k->num;
	} else if (key_is_bitmap(r)) {
		for (uint32_t s = 0; s < r->nb; s++) {
			if (k->b[s].bm) {
				bm_free(t, k->b[s].bm);
				k->b[s].bm = NULL;
				t->st.buckets_expired++;
			}
		}
		if (k->uni) {
			roaring_iterate(k->uni, unref_cb, t->intern);
			t->st.pairs -= k->num;
			bm_free_n(t, k->uni, k->num);   /* num is the union's cardinality */
			k->uni = NULL;
		}
	} else {
		for (uint32_t s = 0; s < r->nb; s++) {
			if (k->b[s].c.num || k->b[s].c.den)
				t->st.buckets_expired++;
			k->b[s].c.num = k->b[s].c.den = 0;
		}
	}
	k->num = k->den = 0;
}

/* Buckets of a key are disjoint: a member lives only in the bucket of its
 * newest occurrence (an add moves it there), so a bucket that leaves the
 * window takes exactly its own members out of the union, with no look at
 * the other buckets: one andnot over the union and one pass to drop the
 * references. */
static void bucket_expire(struct storm_tracker *t, const struct storm_rule_rt *r,
			  struct storm_key *k, uint32_t s)
{
	if (key_is_bitmap(r) && !k->uni) {
		uint32_t *ids = inl_ids(k);
		uint8_t *sl = inl_slots(t, k);
		uint64_t n = k->num, removed = 0;

		/* the members' intern entries are scattered: fetch them all
		 * before the unrefs below wait on each in turn */
		for (uint64_t i = 0; i < n; i++)
			if (sl[i] == s)
				intern_prefetch_id(t->intern, ids[i]);
		for (uint64_t i = 0; i < n;) {
			if (sl[i] != s) {
				i++;
				continue;
			}
			intern_unref(t->intern, ids[i]);
			n--;
			ids[i] = ids[n];
			sl[i] = sl[n];
			removed++;
		}
		if (!removed)
			return;
		k->num = n;
		t->st.pairs -= removed;
	} else if (key_is_bitmap(r)) {
		roaring_bitmap_t *e = k->b[s].bm;
		uint64_t n;
		int32_t c0;

		if (!e)
			return;
		k->b[s].bm = NULL;
		n = roaring_bitmap_get_cardinality(e);
		c0 = k->uni->high_low_container.size;
		roaring_bitmap_andnot_inplace(k->uni, e);
		t->bm_containers -= (uint64_t)(c0 - k->uni->high_low_container.size);
		t->bm_members -= n;
		k->num -= n;
		t->st.pairs -= n;
		roaring_iterate(e, unref_cb, t->intern);
		bm_free_n(t, e, n);
		if (k->num == 0) {
			bm_free_n(t, k->uni, 0);   /* the union held exactly the window */
			k->uni = NULL;
		}
	} else {
		if (!k->b[s].c.num && !k->b[s].c.den)
			return;
		k->num -= k->b[s].c.num;
		k->den -= k->b[s].c.den;
		k->b[s].c.num = k->b[s].c.den = 0;
	}
	t->st.buckets_expired++;
}

/* Rotates k to bucket seq: buckets (old head, seq] are recycled, which
 * expires sequences (old head - nb, seq - nb]. At most nb buckets. */
static void key_rotate(struct storm_tracker *t, const struct storm_rule_rt *r,
		       struct storm_key *k, uint64_t seq)
{
	uint64_t steps;

	if (seq <= k->head)
		return;
	steps = seq - k->head;
	if (steps >= r->nb) {
		key_clear_window(t, r, k);
	} else {
		uint32_t s = (uint32_t)((k->head + 1) % r->nb);

		for (uint64_t i = 1; i <= steps; i++) {
			bucket_expire(t, r, k, s);
			if (++s == r->nb)
				s = 0;
		}
	}
	k->head = seq;
}

/* The bucket sequence of now (now / width) and its ring slot. The clock moves in small steps, so the
 * two divisions are done once per bucket width, not once per key update;
 * the cache starts as bucket 0, [0, width). */
static inline uint64_t rule_seq(struct storm_rule_rt *r, uint64_t now, uint32_t *slot)
{
	if (now - r->seq_lo >= r->width_ns) {   /* unsigned: also when now < seq_lo */
		r->seq = now / r->width_ns;
		r->seq_lo = r->seq * r->width_ns;
		r->seq_slot = (uint32_t)(r->seq % r->nb);
	}
	if (slot)
		*slot = r->seq_slot;
	return r->seq;
}

/* ---- key life ---------------------------------------------------------- */

/* Frees the key at idx; pos is its index slot when the caller knows it
 * (UINT64_MAX: probe for it). */
static void key_release_at(struct storm_tracker *t, uint32_t idx, uint64_t pos)
{
	struct storm_key *k = key_at(t, idx);
	const struct storm_rule_rt *r = &t->rules[k->rule];
	bool found = true;

	if (pos == UINT64_MAX)
		pos = kindex_probe(t, k->rule, k->key_id, &found);
	if (found)
		kindex_delete(t, pos);
	key_clear_window(t, r, k);
	if (k->flags & KEY_F_OVER)
		t->st.keys_over--;
	intern_unref(t->intern, k->key_id);
	if (k->last_client != INTERN_ID_NONE)
		intern_unref(t->intern, k->last_client);
	k->key_id = KEY_NONE;
	k->flags = 0;
	k->next_free = t->kfree;
	t->kfree = idx;
	t->st.keys--;
}

static void key_release(struct storm_tracker *t, uint32_t idx)
{
	key_release_at(t, idx, UINT64_MAX);
}

static inline uint64_t rng_next(struct storm_tracker *t)
{
	uint64_t x = t->rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	t->rng = x;
	return x;
}

/* At the cap: evicts the least recently seen of a few sampled keys, those
 * under threshold first. Returns false when nothing could be evicted. */
static bool cap_evict_one(struct storm_tracker *t, uint32_t protect)
{
	uint32_t best = KEY_NONE;
	bool best_over = true;
	uint64_t best_ns = UINT64_MAX;
	unsigned got = 0;

	if (!t->n_kalloc)
		return false;
	for (unsigned d = 0; d < CAP_DRAWS && got < CAP_SAMPLES; d++) {
		uint32_t idx = (uint32_t)(rng_next(t) % t->n_kalloc);
		const struct storm_key *k = key_at(t, idx);
		bool over;

		if (k->key_id == KEY_NONE || idx == protect)
			continue;
		got++;
		over = k->flags & KEY_F_OVER;
		if ((best_over && !over) || (over == best_over && k->last_ns < best_ns)) {
			best = idx;
			best_over = over;
			best_ns = k->last_ns;
		}
	}
	if (best == KEY_NONE)
		return false;
	if (best_over) {
		struct storm_key *k = key_at(t, best);

		/* Tell the consumers the storm is no longer tracked. */
		t->st.evicted_over++;
		key_settle(t, k->rule, k, false);
	}
	key_release(t, best);
	t->st.evicted_cap++;
	return true;
}

static bool over_cap(const struct storm_tracker *t)
{
	return t->cfg.mem_cap && tracker_bytes(t) > t->cfg.mem_cap;
}

static uint32_t key_create(struct storm_tracker *t, uint32_t ri, uint32_t key_id, uint64_t pos)
{
	struct storm_rule_rt *r = &t->rules[ri];
	struct storm_key *k;
	uint32_t idx;
	bool found;

	if (over_cap(t) || t->st.keys >= t->max_keys) {
		bool ok = false;

		if (t->cfg.at_cap == STORM_CAP_EVICT) {
			for (unsigned n = 0; n < CAP_EVICT_MAX; n++) {
				if (!cap_evict_one(t, KEY_NONE))
					break;
				if (!over_cap(t) && t->st.keys < t->max_keys) {
					ok = true;
					break;
				}
			}
		}
		if (!ok) {
			if (t->st.keys >= t->max_keys)
				t->st.refused_keys++;
			else
				t->st.refused_cap++;
			return KEY_NONE;
		}
		/* Evictions shifted the index: find the insertion slot again. */
		pos = kindex_probe(t, ri, key_id, &found);
	}
	if (t->kfree != KEY_NONE) {
		idx = t->kfree;
		t->kfree = key_at(t, idx)->next_free;
		/* the next free record is a random line: have it when needed */
		if (t->kfree != KEY_NONE)
			__builtin_prefetch(key_at(t, t->kfree), 1);
	} else {
		if (t->n_kalloc / KEY_CHUNK >= t->n_kchunks) {
			uint8_t *c = mem_alloc(MEM_STORM, (size_t)KEY_CHUNK * t->stride);

			if (!c) {
				t->st.alloc_fail++;
				return KEY_NONE;
			}
			t->kchunk[t->n_kchunks++] = c;
		}
		idx = t->n_kalloc++;
	}
	k = key_at(t, idx);
	memset(k, 0, t->stride);
	k->key_id = key_id;
	k->rule = (uint16_t)ri;
	k->last_client = INTERN_ID_NONE;
	k->queued = UINT64_MAX;
	k->head = rule_seq(r, t->now, NULL);
	k->first_ns = k->last_ns = t->now;
	intern_ref(t->intern, key_id);
	t->kslots[pos].idx = idx;
	t->kslots[pos].tag = (uint32_t)(key_hash(t, ri, key_id) >> 32);
	t->st.keys++;
	return idx;
}

/* ---- queue ------------------------------------------------------------- */

static int queue_push(struct storm_tracker *t, struct storm_queue *q, uint32_t key, uint64_t seq)
{
	if (q->n == q->cap) {
		uint32_t ncap = q->cap ? q->cap * 2 : 64;
		struct storm_qent *e = mem_alloc(MEM_STORM, (size_t)ncap * sizeof(*e));

		if (!e) {
			t->st.alloc_fail++;
			return -ENOMEM;
		}
		for (uint32_t i = 0; i < q->n; i++)
			e[i] = q->e[(q->head + i) & (q->cap - 1)];
		mem_free(MEM_STORM, q->e);
		t->queue_bytes += (uint64_t)(ncap - q->cap) * sizeof(*e);
		q->e = e;
		q->cap = ncap;
		q->head = 0;
	}
	q->e[(q->head + q->n) & (q->cap - 1)] = (struct storm_qent){ key, (uint32_t)seq };
	q->n++;
	t->queue_used++;
	return 0;
}

/* Records that k holds data in bucket seq, once per (key, bucket). If the
 * queue cannot grow the key is not queued: it is still rotated lazily on
 * its next transaction (counted in alloc_fail). */
static void key_queue(struct storm_tracker *t, uint32_t ri, uint32_t idx, struct storm_key *k,
		      uint64_t seq)
{
	if (k->queued == seq)
		return;
	if (queue_push(t, &t->rules[ri].q, idx, seq) == 0)
		k->queued = seq;
}

/* ---- transaction identities ------------------------------------------- */

static size_t lower_copy(char *dst, const char *src, size_t cap)
{
	size_t n = 0;

	for (; src[n] && n < cap; n++) {
		char c = src[n];

		dst[n] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
	}
	return src[n] ? cap + 1 : n;   /* cap + 1: too long */
}

/* hash: intern_hash() of the lowercased bytes when the caller computed it
 * (to prefetch), else 0. */
static uint32_t intern_lower_h(struct storm_tracker *t, enum intern_kind kind, const char *s,
			       uint64_t hash)
{
	char buf[INTERN_MAX_LEN];
	size_t n;
	uint32_t id;

	if (!s || !s[0])
		return INTERN_ID_NONE;
	n = lower_copy(buf, s, sizeof(buf));
	if (n > sizeof(buf)) {
		t->st.too_long++;
		return INTERN_ID_NONE;
	}
	if (!hash)
		hash = intern_hash(kind, buf, n);
	id = intern_get_hashed(t->intern, hash, kind, buf, n, t->now);
	if (id == INTERN_ID_NONE)
		t->st.intern_full++;
	return id;
}

/* The intern_hash() of a lowercased string, or 0 when it is empty or too
 * long (the look-up then says so itself). */
static uint64_t lower_hash(enum intern_kind kind, const char *s)
{
	char buf[INTERN_MAX_LEN];
	size_t n;

	if (!s || !s[0])
		return 0;
	n = lower_copy(buf, s, sizeof(buf));
	if (n > sizeof(buf))
		return 0;
	return intern_hash(kind, buf, n);
}

/* The bytes and kind client_ip or client_net is interned as; 0 when the
 * transaction has no client address. */
static size_t ip_key(const struct storm_tracker *t, const struct storm_tx_summary *tx, bool net,
		     uint8_t b[17], enum intern_kind *kind)
{
	size_t n;
	unsigned prefix;

	if (tx->client_ip_version == 4) {
		n = 4;
		*kind = net ? INTERN_NET4 : INTERN_IP4;
		prefix = t->cfg.net4_prefix;
	} else if (tx->client_ip_version == 6) {
		n = 16;
		*kind = net ? INTERN_NET6 : INTERN_IP6;
		prefix = t->cfg.net6_prefix;
	} else {
		return 0;
	}
	memcpy(b, tx->client_ip, n);
	if (net) {
		for (unsigned i = 0; i < n; i++) {
			unsigned keep = prefix > i * 8 ? prefix - i * 8 : 0;

			if (keep < 8)
				b[i] &= (uint8_t)(0xff00u >> keep);
		}
		b[n++] = (uint8_t)prefix;
	}
	return n;
}

/* hash: as intern_lower_h(). */
static uint32_t intern_ip(struct storm_tracker *t, const struct storm_tx_summary *tx, bool net,
			  uint64_t hash)
{
	uint8_t b[17];
	enum intern_kind kind;
	size_t n = ip_key(t, tx, net, b, &kind);
	uint32_t id;

	if (!n)
		return INTERN_ID_NONE;
	if (!hash)
		hash = intern_hash(kind, b, n);
	id = intern_get_hashed(t->intern, hash, kind, b, n, t->now);
	if (id == INTERN_ID_NONE)
		t->st.intern_full++;
	return id;
}

static const char *sender_domain(const struct storm_tx_summary *tx)
{
	const char *at;

	if (tx->mail_from_domain)
		return tx->mail_from_domain;
	if (!tx->mail_from || !(at = strrchr(tx->mail_from, '@')))
		return NULL;
	return at + 1;
}

/* The interned id of a transaction-level identity field, or NONE. */
static uint32_t tx_field(struct storm_tracker *t, struct storm_txctx *c, enum storm_field f)
{
	const struct storm_tx_summary *tx = c->tx;
	uint32_t id = INTERN_ID_NONE;
	uint64_t h;

	if (c->done[f])
		return c->id[f];
	h = c->hash[f];
	switch (f) {
	case STORM_F_CLIENT_IP:
		id = intern_ip(t, tx, false, h);
		break;
	case STORM_F_CLIENT_NET:
		id = intern_ip(t, tx, true, h);
		break;
	case STORM_F_MAIL_FROM:
		id = intern_lower_h(t, INTERN_ADDR, tx->mail_from, h);
		break;
	case STORM_F_MAIL_FROM_DOMAIN:
		id = intern_lower_h(t, INTERN_DOMAIN, sender_domain(tx), h);
		break;
	case STORM_F_HELO:
		id = intern_lower_h(t, INTERN_HELO, tx->helo, h);
		break;
	case STORM_F_MESSAGE_ID:
		if (tx->message_id && tx->message_id[0]) {
			size_t len = strlen(tx->message_id);

			id = intern_get_hashed(t->intern, h ? h : intern_hash(INTERN_MSGID,
					       tx->message_id, len), INTERN_MSGID,
					       tx->message_id, len, t->now);
			if (id == INTERN_ID_NONE)
				t->st.intern_full++;
		}
		break;
	case STORM_F_BODY_HASH:
		if (tx->body_hash) {
			id = intern_get_hashed(t->intern, h ? h : intern_hash(INTERN_BODY,
					       &tx->body_hash, 8), INTERN_BODY,
					       &tx->body_hash, 8, t->now);
			if (id == INTERN_ID_NONE)
				t->st.intern_full++;
		}
		break;
	default:
		break;
	}
	c->done[f] = 1;
	c->id[f] = id;
	return id;
}

/* Interns the recipients (up to max_rcpt) and sorts them into classes. */
static void tx_rcpts(struct storm_tracker *t, struct storm_txctx *c)
{
	const struct storm_tx_summary *tx = c->tx;
	uint32_t n = tx->n_rcpt;

	if (c->rcpt_done)
		return;
	c->rcpt_done = true;
	if (n > t->cfg.max_rcpt) {
		t->st.rcpt_truncated += n - t->cfg.max_rcpt;
		n = t->cfg.max_rcpt;
	}
	/* The first RCPT_PREFETCH were hashed and their slots and entries
	 * prefetched by tx_prefetch(). */
	for (uint32_t i = 0; i < n; i++) {
		uint32_t id = intern_lower_h(t, INTERN_ADDR, tx->rcpts ? tx->rcpts[i] : NULL,
					     i < c->n_rhash ? c->rcpt_hash[i] : 0);
		uint8_t st = tx->rcpt_status ? tx->rcpt_status[i] : STORM_RCPT_NO_REPLY;

		if (id == INTERN_ID_NONE)
			continue;
		c->rcpt_id[c->n_rcpt] = id;
		c->rcpt_st[c->n_rcpt] = st;
		c->n_rcpt++;
		for (int cls = 0; cls < 4; cls++)
			if (status_in_class(st, cls))
				c->cls[cls][c->n_cls[cls]++] = id;
	}
}

/* Hashes the identities the rules may intern (all of them, though a rule
 * may not get to it: a hint costs less than a miss) and prefetches their
 * intern index slots, then their entries, so that the look-ups, done later
 * in the order the rules ask for them, find them in cache. Changes nothing
 * but the cache. */
static void tx_prefetch(struct storm_tracker *t, struct storm_txctx *c)
{
	const struct storm_tx_summary *tx = c->tx;
	uint32_t n = 0;

	for (int f = STORM_F_CLIENT_IP; f <= STORM_F_BODY_HASH; f++) {
		uint64_t h = 0;
		uint8_t b[17];
		enum intern_kind kind;
		size_t len;

		if (!(t->tx_fields & (1u << f)))
			continue;
		switch (f) {
		case STORM_F_CLIENT_IP:
		case STORM_F_CLIENT_NET:
			len = ip_key(t, tx, f == STORM_F_CLIENT_NET, b, &kind);
			if (len)
				h = intern_hash(kind, b, len);
			break;
		case STORM_F_MAIL_FROM:
			h = lower_hash(INTERN_ADDR, tx->mail_from);
			break;
		case STORM_F_MAIL_FROM_DOMAIN:
			h = lower_hash(INTERN_DOMAIN, sender_domain(tx));
			break;
		case STORM_F_HELO:
			h = lower_hash(INTERN_HELO, tx->helo);
			break;
		case STORM_F_MESSAGE_ID:
			if (tx->message_id && tx->message_id[0])
				h = intern_hash(INTERN_MSGID, tx->message_id, strlen(tx->message_id));
			break;
		case STORM_F_BODY_HASH:
			if (tx->body_hash)
				h = intern_hash(INTERN_BODY, &tx->body_hash, 8);
			break;
		default:
			break;
		}
		c->hash[f] = h;
		if (h)
			intern_prefetch(t->intern, h);
	}
	if (t->tx_rcpt && tx->rcpts) {
		n = tx->n_rcpt < t->cfg.max_rcpt ? tx->n_rcpt : t->cfg.max_rcpt;
		if (n > RCPT_PREFETCH)
			n = RCPT_PREFETCH;
		for (uint32_t i = 0; i < n; i++) {
			c->rcpt_hash[i] = lower_hash(INTERN_ADDR, tx->rcpts[i]);
			if (c->rcpt_hash[i])
				intern_prefetch(t->intern, c->rcpt_hash[i]);
		}
	}
	c->n_rhash = n;
	for (int f = STORM_F_CLIENT_IP; f <= STORM_F_BODY_HASH; f++)
		if (c->hash[f])
			intern_prefetch_entry(t->intern, c->hash[f]);
	for (uint32_t i = 0; i < n; i++)
		if (c->rcpt_hash[i])
			intern_prefetch_entry(t->intern, c->rcpt_hash[i]);
}

/* How many `f` this transaction brings, seen from one key: for a per-rcpt
 * key (rcpt_i >= 0) recipient classes look at that recipient only. */
static uint32_t tx_count(struct storm_tracker *t, struct storm_txctx *c, enum storm_field f,
			 int64_t rcpt_i)
{
	const struct storm_tx_summary *tx = c->tx;

	if (field_is_rcpt_class(f)) {
		if (rcpt_i >= 0)
			return status_in_class(c->rcpt_st[rcpt_i], rcpt_class(f)) ? 1 : 0;
		tx_rcpts(t, c);
		return c->n_cls[rcpt_class(f)];
	}
	switch (f) {
	case STORM_F_MESSAGE:
		return 1;
	case STORM_F_NULL_SENDER:
		return tx->mail_from && !tx->mail_from[0];
	case STORM_F_AUTO_SUBMITTED:
		return tx->auto_submitted;
	default:
		return tx_field(t, c, f) != INTERN_ID_NONE;
	}
}

/* The member ids `f` brings to one key (see tx_count). */
static const uint32_t *tx_members(struct storm_tracker *t, struct storm_txctx *c,
				  enum storm_field f, int64_t rcpt_i, uint32_t *n)
{
	if (field_is_rcpt_class(f)) {
		if (rcpt_i >= 0) {
			*n = status_in_class(c->rcpt_st[rcpt_i], rcpt_class(f)) ? 1 : 0;
			return &c->rcpt_id[rcpt_i];
		}
		tx_rcpts(t, c);
		*n = c->n_cls[rcpt_class(f)];
		return c->cls[rcpt_class(f)];
	}
	tx_field(t, c, f);
	*n = c->id[f] != INTERN_ID_NONE;
	return &c->id[f];
}

/* ---- the update -------------------------------------------------------- */

static void hit_add(struct storm_tracker *t, struct storm_hits *out, uint32_t ri,
		    const struct storm_key *k, bool crossed)
{
	const struct storm_rule_rt *r = &t->rules[ri];
	struct storm_hit *h;
	double v = key_value(r, k);

	if (!out)
		return;
	if (t->hit_gen[ri] == t->gen) {
		h = &out->hit[t->hit_of_rule[ri]];
		if (v > h->value) {
			h->value = v;
			h->num = k->num;
			h->den = r->r.kind == STORM_RATIO ? k->den : 0;
		}
		h->crossed |= crossed;
		return;
	}
	if (out->n >= STORM_HITS_MAX) {
		out->dropped++;
		t->st.hits_dropped++;
		return;
	}
	t->hit_gen[ri] = t->gen;
	t->hit_of_rule[ri] = out->n;
	h = &out->hit[out->n++];
	h->rule = ri;
	h->value = v;
	h->num = k->num;
	h->den = r->r.kind == STORM_RATIO ? k->den : 0;
	h->window_ns = r->r.window_ns;
	h->score = r->r.score;
	h->crossed = crossed;
}

/* Removes v from the older bucket holding it, newest first. */
static void key_unbucket(struct storm_tracker *t, const struct storm_rule_rt *r,
			 struct storm_key *k, uint32_t head_slot, uint32_t v)
{
	uint32_t s = head_slot;

	for (uint32_t j = 1; j < r->nb; j++) {
		roaring_bitmap_t *b;
		int32_t c0;

		s = s ? s - 1 : r->nb - 1;
		b = k->b[s].bm;
		if (!b)
			continue;
		c0 = b->high_low_container.size;
		if (!roaring_bitmap_remove_checked(b, v))
			continue;
		t->bm_members--;
		t->bm_containers -= (uint64_t)(c0 - b->high_low_container.size);
		if (roaring_bitmap_is_empty(b)) {
			bm_free(t, b);
			k->b[s].bm = NULL;
		}
		return;
	}
}

/* Moves an inline key (full) to roaring: one bitmap per non-empty bucket and
 * the union. False (counted) when an allocation fails: the key stays inline
 * and unchanged. */
static bool key_to_roaring(struct storm_tracker *t, const struct storm_rule_rt *r,
			   struct storm_key *k)
{
	roaring_bitmap_t *bm[STORM_BUCKETS_MAX] = { NULL };
	roaring_bitmap_t *uni;
	uint32_t ids[INL_MAX];
	uint8_t sl[INL_MAX];
	uint32_t n = (uint32_t)k->num;

	memcpy(ids, inl_ids(k), n * sizeof(*ids));
	memcpy(sl, inl_slots(t, k), n);
	uni = bm_new(t);
	if (!uni)
		return false;
	for (uint32_t i = 0; i < n; i++) {
		if (!bm[sl[i]] && !(bm[sl[i]] = bm_new(t))) {
			for (uint32_t s = 0; s < r->nb; s++)
				bm_free(t, bm[s]);
			bm_free(t, uni);
			return false;
		}
		bm_add(t, bm[sl[i]], ids[i]);
		bm_add(t, uni, ids[i]);
	}
	memset(k->b, 0, t->stride - sizeof(*k));
	for (uint32_t s = 0; s < r->nb; s++)
		k->b[s].bm = bm[s];
	k->uni = uni;
	return true;
}

/* Adds the tx's members to the head bucket `slot` of a distinct/overlap key
 * (buckets stay disjoint: a member already in the window moves there).
 * Returns false when an allocation failed (counted; the rest is not added). */
static bool key_add_members(struct storm_tracker *t, const struct storm_rule_rt *r,
			    struct storm_key *k, uint32_t slot, const uint32_t *mem,
			    uint32_t n_mem)
{
	for (uint32_t m = 0; m < n_mem; m++) {
		uint32_t v = mem[m];

		if (!k->uni) {
			uint32_t *ids = inl_ids(k);
			uint8_t *sl = inl_slots(t, k);
			uint32_t n = (uint32_t)k->num, i;

			for (i = 0; i < n && ids[i] != v; i++)
				;
			if (i < n) {
				sl[i] = (uint8_t)slot;   /* moved (or already) here */
				continue;
			}
			if (n < t->inl_cap) {
				ids[n] = v;
				sl[n] = (uint8_t)slot;
				k->num++;
				t->st.pairs++;
				intern_ref(t->intern, v);
				continue;
			}
			if (!key_to_roaring(t, r, k))
				return false;
		}
		if (!k->b[slot].bm && !(k->b[slot].bm = bm_new(t)))
			return false;
		if (!bm_add(t, k->b[slot].bm, v))
			continue;          /* already in the newest bucket */
		if (bm_add(t, k->uni, v)) {
			k->num++;          /* new to the window */
			t->st.pairs++;
			intern_ref(t->intern, v);
			continue;
		}
		/* In an older bucket: move it here (buckets stay disjoint). */
		key_unbucket(t, r, k, slot, v);
	}
	return true;
}

/* Jaccard index of the tx's member set (t->tx_bm, filled) with the key's
 * window union; as roaring_bitmap_jaccard_index: inter / (c1 + c2 - inter). */
static double key_jaccard(struct storm_tracker *t, struct storm_key *k)
{
	uint64_t c1, inter = 0;
	const uint32_t *ids;

	if (k->uni)
		return roaring_bitmap_jaccard_index(t->tx_bm, k->uni);
	c1 = roaring_bitmap_get_cardinality(t->tx_bm);
	ids = inl_ids(k);
	for (uint64_t i = 0; i < k->num; i++)
		inter += roaring_bitmap_contains(t->tx_bm, ids[i]);
	return (double)inter / (double)(c1 + k->num - inter);
}

static inline uint32_t sat_add32(uint32_t a, uint32_t b)
{
	return a + b < a ? UINT32_MAX : a + b;
}

/* Applies one transaction to one key of rule ri. */
static void rule_apply(struct storm_tracker *t, struct storm_txctx *c, uint32_t ri,
		       uint32_t key_id, int64_t rcpt_i, struct storm_hits *out)
{
	struct storm_rule_rt *r = &t->rules[ri];
	uint32_t slot;
	uint64_t seq = rule_seq(r, t->now, &slot);
	uint32_t n_num = 0, n_den = 0, n_mem = 0;
	const uint32_t *mem = NULL;
	struct storm_key *k;
	uint32_t idx;
	uint64_t pos;
	bool found, over = false, crossed;

	if (r->r.kind == STORM_COUNT || r->r.kind == STORM_RATIO) {
		n_num = tx_count(t, c, r->r.what, rcpt_i);
		if (r->r.kind == STORM_RATIO)
			n_den = tx_count(t, c, r->denom, rcpt_i);
	} else {
		mem = tx_members(t, c, r->r.what, rcpt_i, &n_mem);
	}
	pos = kindex_probe(t, ri, key_id, &found);
	if (found) {
		idx = t->kslots[pos].idx;
	} else {
		if (!n_num && !n_den && !n_mem)
			return;   /* nothing to add and nothing tracked */
		idx = key_create(t, ri, key_id, pos);
		if (idx == KEY_NONE)
			return;
	}
	k = key_at(t, idx);
	if (found && seq > k->head) {
		key_rotate(t, r, k, seq);
		/* Buckets that left the window may have taken the key below its
		 * threshold before this transaction arrived: emit that down now,
		 * with the rotated value, as a timely storm_advance would have.
		 * So the events do not depend on how often advance runs. */
		if (k->flags & KEY_F_OVER)
			key_settle(t, ri, k, key_over_now(r, k));
	} else {
		key_rotate(t, r, k, seq);
	}
	if (found && !k->num && !k->den && (n_num || n_den || n_mem))
		k->first_ns = t->now;   /* its window emptied: this activity starts now */
	t->st.updates++;

	switch (r->r.kind) {
	case STORM_COUNT:
	case STORM_RATIO:
		k->b[slot].c.num = sat_add32(k->b[slot].c.num, n_num);
		k->b[slot].c.den = sat_add32(k->b[slot].c.den, n_den);
		k->num += n_num;
		k->den += n_den;
		if (n_num || n_den)
			key_queue(t, ri, idx, k, seq);
		over = key_over_now(r, k);
		break;
	case STORM_OVERLAP:
		/* A window that emptied has no verdict left. */
		over = (k->flags & KEY_F_OVER) && k->num;
		if (k->num && n_mem >= (r->r.min ? r->r.min : 1)) {
			uint32_t client = tx_field(t, c, STORM_F_CLIENT_IP);

			if (k->last_client != client || client == INTERN_ID_NONE) {
				roaring_bitmap_clear(t->tx_bm);
				roaring_bitmap_add_many(t->tx_bm, n_mem, mem);
				k->val = key_jaccard(t, k);
				over = k->val > r->r.threshold;
			}
		}
		/* the tx's recipients join the window */
		__attribute__((fallthrough));
	case STORM_DISTINCT:
		if (n_mem && !key_add_members(t, r, k, slot, mem, n_mem)) {
			/* Allocation failed (counted): what was added stays (its
			 * bucket is queued below), keep no empty bitmap. */
			if (k->uni && k->b[slot].bm && roaring_bitmap_is_empty(k->b[slot].bm)) {
				bm_free(t, k->b[slot].bm);
				k->b[slot].bm = NULL;
			}
		}
		if (n_mem)
			key_queue(t, ri, idx, k, seq);
		if (r->r.kind == STORM_OVERLAP) {
			uint32_t client = tx_field(t, c, STORM_F_CLIENT_IP);

			if (n_mem && client != k->last_client) {
				if (k->last_client != INTERN_ID_NONE)
					intern_unref(t->intern, k->last_client);
				if (client != INTERN_ID_NONE)
					intern_ref(t->intern, client);
				k->last_client = client;
			}
			over = over && k->num;
		} else {
			over = key_over_now(r, k);
		}
		break;
	default:
		return;
	}
	if (n_num || n_den || n_mem)
		k->last_ns = t->now;
	crossed = key_settle(t, ri, k, over);
	if (k->flags & KEY_F_OVER)
		hit_add(t, out, ri, k, crossed);
	else if (!k->num && !k->den)
		key_release_at(t, idx, found ? pos : UINT64_MAX);   /* no eviction moved it */
}

void storm_observe(struct storm_tracker *t, const struct storm_tx_summary *tx,
		   struct storm_hits *out)
{
	struct storm_txctx c;

	if (out) {
		out->n = 0;
		out->dropped = 0;
	}
	if (tx->ts_ns < t->now)
		t->st.late++;
	else
		t->now = tx->ts_ns;
	t->st.observed++;
	if (++t->gen == 0) {
		memset(t->hit_gen, 0, t->n_rules * sizeof(*t->hit_gen));
		t->gen = 1;
	}
	intern_pin_next(t->intern);

	memset(&c, 0, sizeof(c));
	c.tx = tx;
	c.rcpt_id = t->rcpt_id;
	c.rcpt_st = t->rcpt_st;
	c.rcpt_hash = t->rcpt_hash;
	for (int i = 0; i < 4; i++)
		c.cls[i] = t->cls_buf + (size_t)i * t->cfg.max_rcpt;

	/* Every identity and every rule's key is a random place in a big
	 * table: look them all up first (the identities' index slots and
	 * entries, then the key index slots, then the key records, each pass
	 * only prefetching for the next), so the misses of one transaction
	 * overlap instead of queueing one behind the other. */
	tx_prefetch(t, &c);
	for (uint32_t ri = 0; ri < t->n_rules; ri++) {
		const struct storm_rule_rt *r = &t->rules[ri];

		if (r->r.per == STORM_F_RCPT) {
			tx_rcpts(t, &c);
			for (uint32_t i = 0; i < c.n_rcpt && i < RCPT_PREFETCH; i++)
				__builtin_prefetch(&t->kslots[key_hash(t, ri, c.rcpt_id[i]) & t->kmask]);
			t->key_of[ri] = INTERN_ID_NONE;
		} else {
			t->key_of[ri] = tx_field(t, &c, r->r.per);
			if (t->key_of[ri] != INTERN_ID_NONE)
				__builtin_prefetch(&t->kslots[key_hash(t, ri, t->key_of[ri]) & t->kmask]);
		}
	}
	for (uint32_t ri = 0; ri < t->n_rules; ri++) {
		if (t->rules[ri].r.per == STORM_F_RCPT) {
			for (uint32_t i = 0; i < c.n_rcpt && i < RCPT_PREFETCH; i++)
				key_prefetch_slot(t, ri, c.rcpt_id[i]);
		} else if (t->key_of[ri] != INTERN_ID_NONE) {
			key_prefetch_slot(t, ri, t->key_of[ri]);
		}
	}
	for (uint32_t ri = 0; ri < t->n_rules; ri++) {
		const struct storm_rule_rt *r = &t->rules[ri];

		if (r->r.per == STORM_F_RCPT) {
			for (uint32_t i = 0; i < c.n_rcpt; i++)
				rule_apply(t, &c, ri, c.rcpt_id[i], i, out);
		} else if (t->key_of[ri] != INTERN_ID_NONE) {
			rule_apply(t, &c, ri, t->key_of[ri], -1, out);
		}
	}
}

/* ---- housekeeping ------------------------------------------------------ */

/* Hints the cache with what expiring queue entry e will touch: the intern
 * entries of the members leaving (inline keys; their records hold them) and,
 * when the bucket leaving is all the key holds, so that the key will be
 * freed, its identity's intern entry and its index slot. A stale entry
 * only costs a useless hint. */
static void adv_prefetch(const struct storm_tracker *t, const struct storm_rule_rt *r,
			 uint32_t ri, struct storm_qent e)
{
	const struct storm_key *k = key_at(t, e.key);
	uint32_t s = e.seq % r->nb;
	bool empties;

	if (k->key_id == KEY_NONE || k->rule != ri)
		return;
	if (!key_is_bitmap(r)) {
		empties = k->b[s].c.num == k->num && k->b[s].c.den == k->den;
	} else if (!k->uni) {
		const uint32_t *ids = inl_ids_c(k);
		const uint8_t *sl = inl_slots_c(t, k);
		uint64_t n = 0;

		for (uint64_t i = 0; i < k->num; i++) {
			if (sl[i] == s) {
				intern_prefetch_id(t->intern, ids[i]);
				n++;
			}
		}
		empties = n == k->num;
	} else {
		return;
	}
	if (empties) {
		intern_prefetch_id(t->intern, k->key_id);
		__builtin_prefetch(&t->kslots[key_hash(t, ri, k->key_id) & t->kmask]);
	}
}

unsigned storm_advance(struct storm_tracker *t, uint64_t now_ns, unsigned max_work)
{
	unsigned work = 0;

	if (now_ns > t->now)
		t->now = now_ns;
	/* The last transaction's ids need no pinning any more. */
	intern_pin_next(t->intern);
	for (uint32_t n = 0; n < t->n_rules && work < max_work; n++) {
		uint32_t ri = (t->adv_rule + n) % t->n_rules;
		struct storm_rule_rt *r = &t->rules[ri];
		struct storm_queue *q = &r->q;
		uint64_t now_seq = rule_seq(r, t->now, NULL);
		unsigned here = 0;

		while (q->n && work < max_work) {
			struct storm_qent e = q->e[q->head];
			struct storm_key *k;

			/* Due when its bucket left the window; the distance is
			 * taken modulo 2^32 (see storm_qent). */
			if ((uint32_t)((uint32_t)now_seq - e.seq) < r->nb ||
			    (int32_t)((uint32_t)now_seq - e.seq) < 0)
				break;
			/* The entries are known ahead and their keys are
			 * scattered: fetch the records up to 8 entries on while
			 * this one is worked on (only hints; a stale entry is
			 * harmless), and 4 on, once that record had time to
			 * come, what its expiry will touch (adv_prefetch). */
			if (here == 0) {
				for (uint32_t j = 1; j <= 8 && j < q->n; j++)
					key_prefetch(t, q->e[(q->head + j) & (q->cap - 1)].key);
			} else if (q->n > 8) {
				key_prefetch(t, q->e[(q->head + 8) & (q->cap - 1)].key);
			}
			if (here >= 4 && q->n > 4)
				adv_prefetch(t, r, ri, q->e[(q->head + 4) & (q->cap - 1)]);
			here++;
			q->head = (q->head + 1) & (q->cap - 1);
			q->n--;
			t->queue_used--;
			work++;
			k = key_at(t, e.key);
			/* A key freed, or reused by another rule, since: skip.
			 * Reused by the same rule: rotating it to now is right
			 * whatever it holds. */
			if (k->key_id == KEY_NONE || k->rule != ri)
				continue;
			key_rotate(t, r, k, now_seq);
			key_settle(t, ri, k, key_over_now(r, k));
			if (!k->num && !k->den) {
				t->st.keys_freed++;
				key_release(t, e.key);
			}
		}
	}
	if (t->n_rules)
		t->adv_rule = (t->adv_rule + 1) % t->n_rules;
	/* What is left of the budget sweeps the intern table for idle ids. */
	if (work < max_work)
		intern_expire(t->intern, t->now, max_work - work);
	return work;
}

/* ---- construction ------------------------------------------------------ */

struct storm_tracker *storm_new(const struct storm_config *cfg,
				const struct storm_rule *rules, size_t n_rules)
{
	struct storm_tracker *t;
	struct intern_config icfg;
	uint64_t cap = 16;
	uint32_t max_nb = 1;

	if (!cfg || n_rules > STORM_RULES_MAX || (n_rules && !rules))
		return NULL;
	for (size_t i = 0; i < n_rules; i++) {
		if (storm_rule_check(&rules[i], NULL, 0) < 0)
			return NULL;
		if ((rules[i].buckets ? rules[i].buckets : 10) > max_nb)
			max_nb = rules[i].buckets ? rules[i].buckets : 10;
	}
	t = mem_calloc(MEM_STORM, 1, sizeof(*t));
	if (!t)
		goto fail_tracker;
	t->cfg = *cfg;
	if (!t->cfg.max_ids)
		t->cfg.max_ids = 1u << 20;
	if (!t->cfg.max_keys)
		t->cfg.max_keys = 1u << 20;
	if (!t->cfg.intern_idle_ns)
		t->cfg.intern_idle_ns = 60ull * 1000000000ull;
	if (!t->cfg.max_rcpt)
		t->cfg.max_rcpt = 1000;
	if (!t->cfg.net4_prefix || t->cfg.net4_prefix > 32)
		t->cfg.net4_prefix = 24;
	if (!t->cfg.net6_prefix || t->cfg.net6_prefix > 128)
		t->cfg.net6_prefix = 64;
	t->rng = t->cfg.seed ? t->cfg.seed : 0x2545f4914f6cdd1dULL;
	if (t->cfg.max_keys > (1u << 30))
		goto fail_rules;

	t->rules = mem_calloc(MEM_STORM, n_rules ? n_rules : 1, sizeof(*t->rules));
	if (!t->rules)
		goto fail_rules;
	t->n_rules = (uint32_t)n_rules;
	for (size_t i = 0; i < n_rules; i++) {
		struct storm_rule_rt *r = &t->rules[i];

		r->r = rules[i];
		snprintf(r->name, sizeof(r->name), "%s", rules[i].name);
		r->r.name = r->name;
		r->nb = rules[i].buckets ? rules[i].buckets : 10;
		r->r.buckets = r->nb;
		r->width_ns = r->r.window_ns / r->nb;
		r->denom = default_denom(&rules[i]);
		for (size_t j = 0; j < i; j++)
			r->krank += rules[j].per == rules[i].per;
		/* what tx_field() and tx_rcpts() may be asked for (tx_prefetch) */
		{
			enum storm_field fs[3] = { r->r.per, r->r.what, r->denom };

			for (int j = 0; j < 3; j++) {
				if (field_is_rcpt_class(fs[j]))
					t->tx_rcpt = true;
				else if (field_is_identity(fs[j]))
					t->tx_fields |= 1u << fs[j];
			}
			if (r->r.kind == STORM_OVERLAP)
				t->tx_fields |= 1u << STORM_F_CLIENT_IP;
		}
	}

	icfg = (struct intern_config){ .max_ids = t->cfg.max_ids,
				       .idle_ns = t->cfg.intern_idle_ns };
	t->intern = intern_new(&icfg);
	if (!t->intern)
		goto fail_intern;

	t->max_nb = max_nb;
	{
		size_t area = max_nb * sizeof(union storm_bucket);

		if (area < INL_MIN * (sizeof(uint32_t) + 1))
			area = INL_MIN * (sizeof(uint32_t) + 1);
		t->stride = (sizeof(struct storm_key) + area + 7) & ~(size_t)7;
		t->inl_cap = (uint32_t)((t->stride - sizeof(struct storm_key)) /
					(sizeof(uint32_t) + 1));
		if (t->inl_cap > INL_MAX)
			t->inl_cap = INL_MAX;
	}
	t->max_keys = t->cfg.max_keys;
	t->kchunk = mem_calloc(MEM_STORM, (t->max_keys + KEY_CHUNK - 1) / KEY_CHUNK,
			       sizeof(*t->kchunk));
	if (!t->kchunk)
		goto fail_kchunk;
	t->kfree = KEY_NONE;
	while (cap < 2 * (uint64_t)t->max_keys)
		cap <<= 1;
	t->kslots = mem_alloc(MEM_STORM, cap * sizeof(*t->kslots));
	if (!t->kslots)
		goto fail_kslots;
	memset(t->kslots, 0xff, cap * sizeof(*t->kslots));
	t->kmask = cap - 1;

	t->rcpt_id = mem_alloc(MEM_STORM, t->cfg.max_rcpt * sizeof(*t->rcpt_id));
	t->rcpt_st = mem_alloc(MEM_STORM, t->cfg.max_rcpt);
	t->cls_buf = mem_alloc(MEM_STORM, 4 * (size_t)t->cfg.max_rcpt * sizeof(*t->cls_buf));
	t->hit_of_rule = mem_calloc(MEM_STORM, n_rules ? n_rules : 1, sizeof(*t->hit_of_rule));
	t->hit_gen = mem_calloc(MEM_STORM, n_rules ? n_rules : 1, sizeof(*t->hit_gen));
	t->rcpt_hash = mem_alloc(MEM_STORM, RCPT_PREFETCH * sizeof(*t->rcpt_hash));
	if (!t->rcpt_id || !t->rcpt_st || !t->cls_buf || !t->hit_of_rule || !t->hit_gen ||
	    !t->rcpt_hash)
		goto fail_scratch;
	t->tx_bm = roaring_bitmap_create();
	if (!t->tx_bm)
		goto fail_scratch;
	return t;

fail_scratch:
	mem_free(MEM_STORM, t->rcpt_hash);
	mem_free(MEM_STORM, t->hit_gen);
	mem_free(MEM_STORM, t->hit_of_rule);
	mem_free(MEM_STORM, t->cls_buf);
	mem_free(MEM_STORM, t->rcpt_st);
	mem_free(MEM_STORM, t->rcpt_id);
	mem_free(MEM_STORM, t->kslots);
fail_kslots:
	mem_free(MEM_STORM, t->kchunk);
fail_kchunk:
	intern_free(t->intern);
fail_intern:
	mem_free(MEM_STORM, t->rules);
fail_rules:
	mem_free(MEM_STORM, t);
fail_tracker:
	return NULL;
}

void storm_free(struct storm_tracker *t)
{
	if (!t)
		return;
	for (uint32_t idx = 0; idx < t->n_kalloc; idx++) {
		struct storm_key *k = key_at(t, idx);

		if (k->key_id == KEY_NONE)
			continue;
		if (key_is_bitmap(&t->rules[k->rule]) && k->uni) {
			for (uint32_t s = 0; s < t->rules[k->rule].nb; s++)
				bm_free(t, k->b[s].bm);
			bm_free(t, k->uni);
		}
	}
	for (uint32_t c = 0; c < t->n_kchunks; c++)
		mem_free(MEM_STORM, t->kchunk[c]);
	for (uint32_t ri = 0; ri < t->n_rules; ri++)
		mem_free(MEM_STORM, t->rules[ri].q.e);
	roaring_bitmap_free(t->tx_bm);
	mem_free(MEM_STORM, t->rcpt_hash);
	mem_free(MEM_STORM, t->hit_gen);
	mem_free(MEM_STORM, t->hit_of_rule);
	mem_free(MEM_STORM, t->cls_buf);
	mem_free(MEM_STORM, t->rcpt_st);
	mem_free(MEM_STORM, t->rcpt_id);
	mem_free(MEM_STORM, t->kslots);
	mem_free(MEM_STORM, t->kchunk);
	intern_free(t->intern);
	mem_free(MEM_STORM, t->rules);
	mem_free(MEM_STORM, t);
}

/* ---- read-only look-ups ------------------------------------------------ */

/* Finds the key state for rule ri and the per-field bytes a caller gives. */
static const struct storm_key *key_lookup(const struct storm_tracker *t, uint32_t ri,
					  const void *key, size_t len)
{
	const struct storm_rule_rt *r;
	uint8_t b[INTERN_MAX_LEN];
	enum intern_kind kind;
	uint32_t id;
	uint64_t pos;
	bool found;

	if (ri >= t->n_rules || len > sizeof(b) - 1)
		return NULL;
	r = &t->rules[ri];
	memcpy(b, key, len);
	switch (r->r.per) {
	case STORM_F_CLIENT_IP:
	case STORM_F_CLIENT_NET:
		if (len != 4 && len != 16)
			return NULL;
		kind = len == 4 ? INTERN_IP4 : INTERN_IP6;
		if (r->r.per == STORM_F_CLIENT_NET) {
			unsigned prefix = len == 4 ? t->cfg.net4_prefix : t->cfg.net6_prefix;

			for (unsigned i = 0; i < len; i++) {
				unsigned keep = prefix > i * 8 ? prefix - i * 8 : 0;

				if (keep < 8)
					b[i] &= (uint8_t)(0xff00u >> keep);
			}
			b[len++] = (uint8_t)prefix;
			kind = kind == INTERN_IP4 ? INTERN_NET4 : INTERN_NET6;
		}
		break;
	case STORM_F_MAIL_FROM:
	case STORM_F_RCPT:
	case STORM_F_MAIL_FROM_DOMAIN:
	case STORM_F_HELO:
		kind = r->r.per == STORM_F_MAIL_FROM_DOMAIN ? INTERN_DOMAIN :
		       r->r.per == STORM_F_HELO ? INTERN_HELO : INTERN_ADDR;
		for (size_t i = 0; i < len; i++)
			if (b[i] >= 'A' && b[i] <= 'Z')
				b[i] = (uint8_t)(b[i] + 32);
		break;
	case STORM_F_MESSAGE_ID:
		kind = INTERN_MSGID;
		break;
	case STORM_F_BODY_HASH:
		kind = INTERN_BODY;
		break;
	default:
		return NULL;
	}
	id = intern_find(t->intern, kind, b, len);
	if (id == INTERN_ID_NONE)
		return NULL;
	pos = kindex_probe(t, ri, id, &found);
	return found ? key_at(t, t->kslots[pos].idx) : NULL;
}

bool storm_key_over(const struct storm_tracker *t, uint32_t rule, const void *key, size_t len)
{
	const struct storm_key *k = key_lookup(t, rule, key, len);

	return k && (k->flags & KEY_F_OVER);
}

double storm_key_value(const struct storm_tracker *t, uint32_t rule, const void *key, size_t len)
{
	const struct storm_key *k = key_lookup(t, rule, key, len);

	return k ? key_value(&t->rules[rule], k) : 0.0;
}

const struct intern_table *storm_intern(const struct storm_tracker *t)
{
	return t->intern;
}

void storm_get_stats(const struct storm_tracker *t, struct storm_stats *st)
{
	struct intern_stats is;

	*st = t->st;
	intern_get_stats(t->intern, &is);
	st->ids = is.ids;
	st->bitmaps = t->bm_count;
	st->bitmap_bytes = bm_bytes(t);
	st->bytes = tracker_bytes_all(t);
	st->capped_bytes = tracker_bytes(t);
	st->advance_pending = 0;
	for (uint32_t ri = 0; ri < t->n_rules; ri++)
		st->advance_pending += t->rules[ri].q.n;
}

/* ---- validation -------------------------------------------------------- */

#define VFAIL(...) do { fprintf(stderr, "storm_validate: " __VA_ARGS__); \
	fputc('\n', stderr); rc = -EINVAL; goto out; } while (0)

int storm_validate(const struct storm_tracker *t)
{
	struct intern_stats is;
	uint32_t *refs = NULL;
	roaring_bitmap_t *naive = NULL;
	uint64_t keys = 0, over = 0, pairs = 0, bms = 0, members = 0, containers = 0;
	int rc = 0;

	if (intern_validate(t->intern) < 0)
		return -EINVAL;
	intern_get_stats(t->intern, &is);
	refs = mem_calloc(MEM_STORM, is.max_ids, sizeof(*refs));
	naive = roaring_bitmap_create();
	if (!refs || !naive)
		VFAIL("out of memory");
	for (uint32_t idx = 0; idx < t->n_kalloc; idx++) {
		const struct storm_key *k = key_at(t, idx);
		const struct storm_rule_rt *r;
		uint64_t pos;
		bool found;

		if (k->key_id == KEY_NONE)
			continue;
		keys++;
		if (k->rule >= t->n_rules)
			VFAIL("key %u: rule %u out of range", idx, k->rule);
		r = &t->rules[k->rule];
		if (!intern_live(t->intern, k->key_id))
			VFAIL("key %u: key id %u is not live", idx, k->key_id);
		refs[k->key_id]++;
		pos = kindex_probe(t, k->rule, k->key_id, &found);
		if (!found || t->kslots[pos].idx != idx)
			VFAIL("key %u: not reachable through the index", idx);
		if (k->flags & KEY_F_OVER)
			over++;
		if (r->r.kind == STORM_OVERLAP) {
			if ((k->flags & KEY_F_OVER) && !k->num)
				VFAIL("key %u: overlap over with an empty window", idx);
		} else if (!!(k->flags & KEY_F_OVER) != key_over_now(r, k)) {
			VFAIL("key %u: over flag disagrees with value %g", idx, key_value(r, k));
		}
		if (k->last_client != INTERN_ID_NONE) {
			if (!intern_live(t->intern, k->last_client))
				VFAIL("key %u: last client id is not live", idx);
			refs[k->last_client]++;
		}
		if (!key_is_bitmap(r)) {
			uint64_t n = 0, d = 0;

			for (uint32_t s = 0; s < r->nb; s++) {
				n += k->b[s].c.num;
				d += k->b[s].c.den;
			}
			if (n != k->num || d != k->den)
				VFAIL("key %u: totals %llu/%llu, buckets sum to %llu/%llu", idx,
				      (unsigned long long)k->num, (unsigned long long)k->den,
				      (unsigned long long)n, (unsigned long long)d);
			continue;
		}
		if (!k->uni) {
			/* Inline: the buckets are the members grouped by slot;
			 * the naive recount ORs them, and must hold exactly
			 * the num members of the window union ids[0..num). */
			const uint32_t *ids = inl_ids_c(k);
			const uint8_t *sl = inl_slots_c(t, k);

			if (k->num > t->inl_cap)
				VFAIL("key %u: %llu inline members, capacity %u", idx,
				      (unsigned long long)k->num, t->inl_cap);
			roaring_bitmap_clear(naive);
			for (uint32_t s = 0; s < r->nb; s++) {

				for (uint64_t i = 0; i < k->num; i++) {
					if (sl[i] != s)
						continue;
					if (roaring_bitmap_contains(naive, ids[i]))
						VFAIL("key %u: inline member %u in two buckets or "
						      "twice", idx, ids[i]);
				}
				for (uint64_t i = 0; i < k->num; i++)
					if (sl[i] == s)
						roaring_bitmap_add(naive, ids[i]);
			}
			if (roaring_bitmap_get_cardinality(naive) != k->num)
				VFAIL("key %u: distinct %llu, naive recount of the inline "
				      "buckets %llu (slot out of range?)", idx,
				      (unsigned long long)k->num,
				      (unsigned long long)roaring_bitmap_get_cardinality(naive));
			for (uint64_t i = 0; i < k->num; i++) {
				if (!intern_live(t->intern, ids[i]))
					VFAIL("key %u: inline member %u is not a live id", idx,
					      ids[i]);
				refs[ids[i]]++;
			}
			pairs += k->num;
			continue;
		}
		/* The naive recount: OR of every live bucket. */
		roaring_bitmap_clear(naive);
		for (uint32_t s = 0; s < r->nb; s++) {
			const roaring_bitmap_t *b = k->b[s].bm;

			if (!b)
				continue;
			if (roaring_bitmap_is_empty(b))
				VFAIL("key %u: empty bucket bitmap kept", idx);
			bms++;
			members += roaring_bitmap_get_cardinality(b);
			containers += (uint64_t)b->high_low_container.size;
			if (roaring_bitmap_intersect(naive, b))
				VFAIL("key %u: bucket %u shares members with another bucket", idx, s);
			roaring_bitmap_or_inplace(naive, b);
		}
		if (k->uni) {
			bms++;
			members += roaring_bitmap_get_cardinality(k->uni);
			containers += (uint64_t)k->uni->high_low_container.size;
			if (!roaring_bitmap_equals(naive, k->uni))
				VFAIL("key %u: window union differs from the OR of its buckets", idx);
		} else if (!roaring_bitmap_is_empty(naive)) {
			VFAIL("key %u: buckets hold members but there is no union", idx);
		}
		if (roaring_bitmap_get_cardinality(naive) != k->num)
			VFAIL("key %u: distinct %llu, naive recount %llu", idx,
			      (unsigned long long)k->num,
			      (unsigned long long)roaring_bitmap_get_cardinality(naive));
		pairs += k->num;
		if (k->uni) {
			roaring_uint32_iterator_t *it = roaring_create_iterator(k->uni);

			for (; it->has_value; roaring_advance_uint32_iterator(it)) {
				if (!intern_live(t->intern, it->current_value)) {
					roaring_free_uint32_iterator(it);
					VFAIL("key %u: member %u is not a live id", idx,
					      it->current_value);
				}
				refs[it->current_value]++;
			}
			roaring_free_uint32_iterator(it);
		}
	}
	if (keys != t->st.keys || over != t->st.keys_over || pairs != t->st.pairs)
		VFAIL("counters: keys %llu/%llu over %llu/%llu pairs %llu/%llu",
		      (unsigned long long)keys, (unsigned long long)t->st.keys,
		      (unsigned long long)over, (unsigned long long)t->st.keys_over,
		      (unsigned long long)pairs, (unsigned long long)t->st.pairs);
	if (bms != t->bm_count || members != t->bm_members || containers != t->bm_containers)
		VFAIL("bitmap accounting: %llu bitmaps/%llu members/%llu containers, "
		      "counters say %llu/%llu/%llu", (unsigned long long)bms,
		      (unsigned long long)members, (unsigned long long)containers,
		      (unsigned long long)t->bm_count, (unsigned long long)t->bm_members,
		      (unsigned long long)t->bm_containers);
	for (uint32_t id = 0; id < is.max_ids; id++) {
		if (!intern_live(t->intern, id)) {
			if (refs[id])
				VFAIL("id %u is referenced but not live", id);
			continue;
		}
		if (intern_refs(t->intern, id) != refs[id])
			VFAIL("id %u: %u references held, %u found", id,
			      intern_refs(t->intern, id), refs[id]);
	}
	for (uint64_t pos = 0; pos <= t->kmask; pos++) {
		const struct storm_kslot *s = &t->kslots[pos];

		if (s->idx == KEY_NONE)
			continue;
		if (s->idx >= t->n_kalloc || key_at(t, s->idx)->key_id == KEY_NONE)
			VFAIL("index slot %llu points at a free key", (unsigned long long)pos);
		else if (s->tag != (uint32_t)(key_hash(t, key_at(t, s->idx)->rule,
							key_at(t, s->idx)->key_id) >> 32))
			VFAIL("index slot %llu: tag does not match its key", (unsigned long long)pos);
	}
out:
	if (naive)
		roaring_bitmap_free(naive);
	mem_free(MEM_STORM, refs);
	return rc;
}
