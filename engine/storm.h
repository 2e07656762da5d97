/* The storm tracker: sliding-window behaviour signals over SMTP transactions.
 *
 * Narrow interface: transaction summaries in (storm_observe), hits for that
 * transaction and storm events out, keys over threshold published for
 * look-ups (storm_key_over). It never sees packets, and time is the engine
 * clock passed by the caller (ns; pcap timestamps on replay), never the wall
 * clock, so a replay gives the same events whatever its speed.
 *
 * Data layout. Each rule (struct storm_rule, what a rule file's `track` line
 * parses into) owns a set of key states, one per distinct value of its `per`
 * field (a client IP, a recipient, a Message-ID...). Identities are interned
 * to 32-bit ids (intern.h). A key state is a ring of `buckets` time buckets
 * of width window/buckets on the engine clock; bucket sequence numbers are
 * absolute (ts / width), so the window at time t is the buckets
 * (seq(t) - buckets, seq(t)]: between window - width and window long.
 *   - count and ratio rules keep two counters per bucket and their window
 *     totals;
 *   - distinct and overlap rules keep one CRoaring bitmap of member ids per
 *     non-empty bucket and a "window union" bitmap, maintained incrementally.
 *     The buckets of a key are disjoint: a member lives in the bucket of its
 *     newest occurrence only. An add goes to the head bucket; if it is new
 *     there it goes to the union too, and if the union already had it, it
 *     is moved out of the older bucket that held it. So when a bucket leaves
 *     the window exactly its members leave the union (one andnot), without
 *     looking at the other buckets. The window distinct count is a counter
 *     beside the union. No path ORs every bucket (storm_validate does, as
 *     the naive recount).
 * Key states are found through one open-addressing index over (rule, key
 * id); the keys one identity has under the rules keyed by the same field
 * take consecutive slots, so one index line serves all of them; a slot's
 * tag carries its home, so a deletion reads the index only. A
 * transaction's identities, index slots and key records are looked up in
 * passes that each prefetch for the next, so their misses overlap.
 * Rotation is lazy per key (on observe) and driven by storm_advance(): every
 * (key, bucket) that received data is queued per rule in time order, and
 * advance pops the queue entries whose bucket has left the window, rotates
 * those keys and frees keys whose window became empty. So memory follows the
 * active (key, member) pairs, not time, and each advance call does at most
 * max_work units of work.
 *
 * Thresholds: a key is over when its value > threshold (ratio: and the
 * denominator >= min). Crossing up and crossing down each emit exactly one
 * storm event through the config callback; while a key stays over, every
 * transaction that touches it gets a hit (rule, value, window) in
 * storm_observe's output, including the transaction that crossed: counts are
 * exact, nothing is sampled.
 *
 * Memory: key states, bitmaps, queues and the intern table are counted
 * against mem_cap. CRoaring 0.2.66 has no allocator hook, so bitmap bytes are
 * an estimate from roaring_bitmap_portable_size_in_bytes() plus a fixed
 * per-bitmap and per-container overhead; everything else goes through
 * mem_alloc(MEM_STORM). At the cap a new key either evicts the least recently
 * seen of a few sampled keys that are not over threshold (STORM_CAP_EVICT) or
 * is refused (STORM_CAP_REFUSE); both are counted.
 *
 * Threading: single-threaded, one owner calls everything (the worker today;
 * a storm lcore fed by a ring of storm_tx_summary copies later). Events are
 * emitted from inside storm_observe/storm_advance on the caller's thread.
 */
#ifndef BW_STORM_H
#define BW_STORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORM_HITS_MAX 32          /* hits returned per transaction */
#define STORM_RULES_MAX 256
#define STORM_BUCKETS_MAX 64
#define STORM_NAME_MAX 64

enum storm_kind {
	STORM_KIND_NONE = 0,
	STORM_COUNT,      /* how many `what` per key in the window */
	STORM_DISTINCT,   /* how many distinct `what` per key in the window */
	STORM_RATIO,      /* count(what) / count(denom) per key, over when denom >= min */
	STORM_OVERLAP,    /* Jaccard index of this tx's recipients with the key's window
			     recipient set, when the key was last fed by another client */
	STORM_KIND_MAX
};

/* What is counted and what it is counted per. Identity fields (client_ip ...
 * body_hash) can be both; event fields (message, *_rcpt, null_sender,
 * auto_submitted) are counted only. The *_rcpt fields as members are the
 * recipient ids whose reply had that class. */
enum storm_field {
	STORM_F_NONE = 0,
	STORM_F_CLIENT_IP,
	STORM_F_CLIENT_NET,        /* /24 for IPv4, /64 for IPv6 (config) */
	STORM_F_MAIL_FROM,         /* envelope sender, lowercased; the null sender is no key */
	STORM_F_MAIL_FROM_DOMAIN,
	STORM_F_HELO,
	STORM_F_RCPT,              /* every RCPT TO, whatever the reply */
	STORM_F_MESSAGE_ID,
	STORM_F_BODY_HASH,
	STORM_F_MESSAGE,           /* one per transaction */
	STORM_F_ACCEPTED_RCPT,
	STORM_F_REJECTED_RCPT,     /* 550 user unknown class */
	STORM_F_OVERQUOTA_RCPT,    /* 452 / 552 over quota */
	STORM_F_NULL_SENDER,       /* transactions with MAIL FROM:<> */
	STORM_F_AUTO_SUBMITTED,    /* Auto-Submitted not "no", Precedence bulk/junk/list */
	STORM_F_MAX
};

enum storm_rcpt_status {
	STORM_RCPT_NO_REPLY = 0,     /* no reply seen (gap, pipelining cut short) */
	STORM_RCPT_ACCEPTED,         /* 2xx */
	STORM_RCPT_REJECTED_UNKNOWN, /* 550/551/553 user unknown, 5.1.x */
	STORM_RCPT_OVERQUOTA,        /* 452 / 552, 4.2.2 / 5.2.2 mailbox full */
	STORM_RCPT_OTHER,            /* any other 4xx/5xx */
};

/* One `track` rule. Plain data: the rules stage fills it; storm_new copies it
 * (name included), so the caller may free its own copy afterwards. */
struct storm_rule {
	const char *name;          /* borrowed until storm_new returns */
	enum storm_kind kind;
	enum storm_field what;
	enum storm_field denom;    /* ratio only; STORM_F_NONE: rcpt for *_rcpt, else message */
	enum storm_field per;
	uint64_t window_ns;
	uint32_t buckets;          /* 0: 10 */
	double threshold;          /* over when value > threshold */
	uint64_t min;              /* ratio: denominator floor; overlap: tx recipient floor */
	double score;              /* carried in hits for the scorer */
};

/* A crossing, up or down. Pointers are borrowed for the callback only. */
enum storm_dir {
	STORM_UP = 1,
	STORM_DOWN,
};

struct storm_event {
	enum storm_dir dir;
	uint32_t rule;             /* index in the rules given to storm_new */
	const char *rule_name;
	enum storm_field per;
	const char *key;           /* printable key: address, IP, "10.1.2.0/24", hex hash */
	double value;              /* at the crossing: count, distinct, ratio or Jaccard */
	uint64_t num, den;         /* ratio parts (count/distinct: num = value, den = 0) */
	uint64_t window_ns;
	uint64_t first_seen_ns;    /* first data of this key's current activity */
	uint64_t last_seen_ns;     /* last transaction that touched it */
	uint64_t ts_ns;            /* engine time of the crossing */
};

struct storm_hit {
	uint32_t rule;
	double value;              /* the largest value over the keys this tx touched */
	uint64_t num, den;
	uint64_t window_ns;
	double score;
	bool crossed;              /* this transaction made a key cross up */
};

struct storm_hits {
	unsigned n;
	unsigned dropped;          /* hits beyond STORM_HITS_MAX */
	struct storm_hit hit[STORM_HITS_MAX];
};

/* One transaction. Everything is borrowed for the duration of storm_observe. */
struct storm_tx_summary {
	uint64_t ts_ns;
	uint8_t client_ip[16];       /* IPv4 in the first 4 bytes */
	uint8_t client_ip_version;   /* 4 or 6; 0: unknown (no client keys) */
	const char *helo;            /* NULL or "": none */
	const char *mail_from;       /* "" = null sender; NULL = no MAIL FROM */
	const char *mail_from_domain;/* NULL: derived from mail_from */
	const char *const *rcpts;
	const uint8_t *rcpt_status;  /* enum storm_rcpt_status per rcpt; NULL: all NO_REPLY */
	uint32_t n_rcpt;
	const char *message_id;      /* NULL or "": none */
	uint64_t body_hash;          /* 0: none */
	int received_count;
	bool auto_submitted;
};

enum storm_cap_policy {
	STORM_CAP_EVICT = 0,         /* evict a sampled least-recently-seen key */
	STORM_CAP_REFUSE,            /* do not track new keys */
};

struct storm_config {
	uint64_t mem_cap;            /* bytes; 0: no cap */
	enum storm_cap_policy at_cap;
	uint32_t max_ids;            /* intern table cap (0: 1 << 20) */
	uint32_t max_keys;           /* key states, all rules together (0: 1 << 20) */
	uint64_t intern_idle_ns;     /* unreferenced ids kept this long (0: 60 s) */
	uint32_t max_rcpt;           /* recipients looked at per tx (0: 1000) */
	uint8_t net4_prefix;         /* client_net prefixes (0: 24 and 64) */
	uint8_t net6_prefix;
	uint64_t seed;               /* eviction sampling PRNG (deterministic) */
	void (*on_event)(void *user, const struct storm_event *ev);
	void *user;
};

struct storm_stats {
	uint64_t keys;               /* live key states */
	uint64_t keys_over;          /* of which over threshold */
	uint64_t bitmaps;            /* live bucket + union bitmaps */
	uint64_t pairs;              /* (key, member) pairs in window unions */
	uint64_t bytes;              /* all bytes held (estimate for bitmaps) */
	uint64_t capped_bytes;       /* of which counted against mem_cap (see storm.c) */
	uint64_t bitmap_bytes;       /* of which bitmaps (estimate) */
	uint64_t ids;                /* live interned ids */
	uint64_t observed;           /* transactions */
	uint64_t updates;            /* (rule, key) updates */
	uint64_t events_up, events_down;
	uint64_t buckets_expired;    /* non-empty buckets rotated out */
	uint64_t keys_freed;         /* keys whose window emptied */
	uint64_t evicted_cap;        /* keys evicted at mem_cap */
	uint64_t evicted_over;       /* of which over threshold (no other candidate) */
	uint64_t refused_cap;        /* new keys refused at mem_cap */
	uint64_t refused_keys;       /* new keys refused at max_keys */
	uint64_t alloc_fail;         /* allocations that failed (distinct from the caps) */
	uint64_t intern_full;        /* identities not tracked: intern table full */
	uint64_t too_long;           /* identities not tracked: longer than INTERN_MAX_LEN */
	uint64_t rcpt_truncated;     /* recipients beyond max_rcpt */
	uint64_t late;               /* summaries older than the tracker clock */
	uint64_t advance_pending;    /* queue entries not yet due or not yet processed */
	uint64_t hits_dropped;
};

struct storm_tracker;

/* Checks one rule; returns 0, or -EINVAL with a reason in err (for the rules
 * stage to print with the file and line). */
int storm_rule_check(const struct storm_rule *r, char *err, size_t err_len);

/* Returns a tracker owned by the caller (free with storm_free), or NULL on a
 * rule that fails storm_rule_check, a bad config or allocation failure.
 * rules are copied. */
struct storm_tracker *storm_new(const struct storm_config *cfg,
				const struct storm_rule *rules, size_t n_rules);
void storm_free(struct storm_tracker *t);

/* Feeds one transaction: updates every rule's windows, emits crossings via
 * on_event, and fills out (may be NULL) with the hits of this transaction.
 * The summary stays the caller's. */
void storm_observe(struct storm_tracker *t, const struct storm_tx_summary *tx,
		   struct storm_hits *out);

/* Moves the tracker clock to now_ns (never backwards) and rotates out
 * buckets that left their window: at most max_work queue entries, then what
 * is left of max_work sweeps the intern table for idle ids. Returns the
 * queue entries processed: when it returns max_work more may be due. */
unsigned storm_advance(struct storm_tracker *t, uint64_t now_ns, unsigned max_work);

/* Whether the key (bytes as given to the rule's `per` field: the address,
 * the 4/16-byte IP, the 8-byte body hash...) is over rule's threshold now.
 * Read-only. */
bool storm_key_over(const struct storm_tracker *t, uint32_t rule,
		    const void *key, size_t len);
/* The rule's current value for a key (0 when not tracked); read-only, so
 * buckets not yet rotated by storm_advance may still count. */
double storm_key_value(const struct storm_tracker *t, uint32_t rule,
		       const void *key, size_t len);

void storm_get_stats(const struct storm_tracker *t, struct storm_stats *st);
/* Checks every invariant, including each window union against a naive OR
 * of its live buckets and the intern references; 0 or -EINVAL. For tests. */
int storm_validate(const struct storm_tracker *t);

const char *storm_field_name(enum storm_field f);
/* Parses "client_ip", "rcpt", ...; STORM_F_NONE when unknown. */
enum storm_field storm_field_parse(const char *s);
const char *storm_kind_name(enum storm_kind k);
enum storm_kind storm_kind_parse(const char *s);
/* The intern table, for tests and the output stage (read-only use). */
const struct intern_table *storm_intern(const struct storm_tracker *t);

#endif
