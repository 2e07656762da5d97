/* Storm tracker cost: ns per message for all tracking (13 rules, the
 * signals of the storms issue) at 10^4, 10^6 and 10^7 tracked ids, memory
 * per tracked key (the tracker's estimate and the allocator's count), and
 * window rotation cost (ns per expired (key, bucket)).
 *
 * Workload: a population of identities (client IPs, senders, sender
 * domains, recipients) and a stream of messages, each with a fresh
 * Message-ID and body hash, 1-3 recipients (5% user unknown, 1% over
 * quota), 3% null senders. The engine clock advances so that one 10-minute
 * window holds ids/4 messages: live ids ~ population (ids/2) + two
 * fingerprints per message in the window (ids/2). "uniform" draws every
 * identity uniformly (worst case for caches); "skewed" draws 80% from the
 * hottest 1% (closer to real traffic).
 *
 * A run: warm up 1.5 windows of messages (untimed), then `reps` timed
 * batches; storm_advance(now, 64) runs every 8 messages inside the timed
 * loop, so rotation is included in the per-message cost. Then the clock
 * jumps past the window and the drain is timed on its own.
 *
 * Beside it, the memory ceiling (see "the memory ceiling" below): with the
 * tracker freed, loops over the same messages that do no tracking but
 * touch the random cache lines any tracker must touch, in tables sized
 * like the tracker's: lines per message, ns per message in order
 * (ceil_ns) and prefetched 16 messages at a time (ceil_pf). The tracker's
 * figure minus the ceiling is CPU work; the ceiling is the memory system.
 *
 * Usage: bench_storm [--ids 10000,1000000,10000000] [--batch N] [--reps R]
 *                    [--skew uniform|skewed|both]
 */
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bw-config.h"
#include "intern.h"
#include "mem.h"
#include "storm.h"

#if BW_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#define SEC 1000000000ull
#define WINDOW (600 * SEC)

/* Thread CPU time: the machine this runs on is shared, and time spent
 * descheduled is not the tracker's cost. Wall time is printed beside it. */
static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

/* Bytes the allocator has handed out: jemalloc's stats.allocated (after an
 * epoch refresh) when it is the allocator (mallinfo2 does not see it),
 * else glibc's mallinfo2. */
static uint64_t heap_bytes(void)
{
#if BW_HAVE_JEMALLOC
	uint64_t epoch = 1;
	size_t allocated = 0, len = sizeof(allocated), elen = sizeof(epoch);

	if (mallctl("epoch", &epoch, &elen, &epoch, elen) == 0 &&
	    mallctl("stats.allocated", &allocated, &len, NULL, 0) == 0)
		return allocated;
#endif
	{
		struct mallinfo2 mi = mallinfo2();

		return mi.uordblks + mi.hblkhd;
	}
}

static uint64_t rng_state = 88172645463325252ull;

static inline uint64_t rnd(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

struct pop {
	uint32_t n_client, n_sender, n_domain, n_rcpt;
	char (*sender)[32];
	char (*domain)[24];
	char (*rcpt)[32];
	bool skewed;
};

static inline uint32_t pick(const struct pop *p, uint32_t n)
{
	if (p->skewed && rnd() % 10 < 8)
		return (uint32_t)(rnd() % (n / 100 + 1));
	return (uint32_t)(rnd() % n);
}

/* One generated message; strings point into the population or msgid. */
struct msg {
	struct storm_tx_summary tx;
	const char *rcpt[3];
	uint8_t st[3];
	char msgid[40];
};

static void gen(const struct pop *p, struct msg *m, uint64_t ts, uint64_t seq)
{
	uint32_t c = pick(p, p->n_client), s = pick(p, p->n_sender);
	uint32_t nr = 1 + (uint32_t)(rnd() % 3);

	memset(&m->tx, 0, sizeof(m->tx));
	m->tx.ts_ns = ts;
	m->tx.client_ip_version = 4;
	m->tx.client_ip[0] = 10;
	m->tx.client_ip[1] = (uint8_t)(c >> 16);
	m->tx.client_ip[2] = (uint8_t)(c >> 8);
	m->tx.client_ip[3] = (uint8_t)c;
	m->tx.mail_from = rnd() % 100 < 3 ? "" : p->sender[s];
	m->tx.mail_from_domain = m->tx.mail_from[0] ? p->domain[s % p->n_domain] : NULL;
	for (uint32_t i = 0; i < nr; i++) {
		uint32_t r = (uint32_t)(rnd() % 100);

		m->rcpt[i] = p->rcpt[pick(p, p->n_rcpt)];
		m->st[i] = r < 5 ? STORM_RCPT_REJECTED_UNKNOWN : r < 6 ? STORM_RCPT_OVERQUOTA :
			   STORM_RCPT_ACCEPTED;
	}
	m->tx.rcpts = m->rcpt;
	m->tx.rcpt_status = m->st;
	m->tx.n_rcpt = nr;
	snprintf(m->msgid, sizeof(m->msgid), "<%016" PRIx64 ".%u@bench>", seq, c);
	m->tx.message_id = m->msgid;
	m->tx.body_hash = seq * 0x9e3779b97f4a7c15ull + 1;
}

#define RULE(n, k, w, p, thr, mn) { .name = n, .kind = k, .what = w, .per = p, \
	.window_ns = WINDOW, .buckets = 10, .threshold = thr, .min = mn, .score = 1 }

static const struct storm_rule rules[] = {
	RULE("FANOUT_CLIENT", STORM_DISTINCT, STORM_F_RCPT, STORM_F_CLIENT_IP, 1000, 0),
	RULE("FANOUT_FROM", STORM_DISTINCT, STORM_F_RCPT, STORM_F_MAIL_FROM, 1000, 0),
	RULE("FANOUT_DOMAIN", STORM_DISTINCT, STORM_F_RCPT, STORM_F_MAIL_FROM_DOMAIN, 5000, 0),
	RULE("FANIN_IPS", STORM_DISTINCT, STORM_F_CLIENT_IP, STORM_F_RCPT, 50, 0),
	RULE("FANIN_FROM", STORM_DISTINCT, STORM_F_MAIL_FROM, STORM_F_RCPT, 50, 0),
	RULE("DUP_MSGID", STORM_COUNT, STORM_F_MESSAGE, STORM_F_MESSAGE_ID, 3, 0),
	RULE("MSGID_IPS", STORM_DISTINCT, STORM_F_CLIENT_IP, STORM_F_MESSAGE_ID, 2, 0),
	RULE("DUP_BODY", STORM_COUNT, STORM_F_MESSAGE, STORM_F_BODY_HASH, 3, 0),
	RULE("RCPT_REJECTS", STORM_RATIO, STORM_F_REJECTED_RCPT, STORM_F_CLIENT_IP, 0.5, 50),
	RULE("OVERQUOTA", STORM_COUNT, STORM_F_OVERQUOTA_RCPT, STORM_F_RCPT, 20, 0),
	RULE("BOUNCES_RCPT", STORM_COUNT, STORM_F_NULL_SENDER, STORM_F_RCPT, 20, 0),
	RULE("BOUNCES_IP", STORM_COUNT, STORM_F_NULL_SENDER, STORM_F_CLIENT_IP, 100, 0),
	RULE("RESENT_LIST", STORM_OVERLAP, STORM_F_RCPT, STORM_F_MESSAGE_ID, 0.8, 2),
};
#define N_RULES (sizeof(rules) / sizeof(rules[0]))

static uint64_t n_events;

static void on_event(void *user, const struct storm_event *ev)
{
	(void)user;
	(void)ev;
	n_events++;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* ---- the memory ceiling -------------------------------------------------
 *
 * What any tracker must at least pay at this size: the random cache lines it
 * cannot avoid, with no tracking work. Per message, for every identity the
 * selected rules read (client ip, client net, sender, sender domain, helo,
 * each recipient, Message-ID, body hash; one look-up each, as the tracker
 * interns each once per message) one index-slot line and one entry line of
 * an intern-like table; for every (rule, key) the message touches (per
 * recipient: one key per recipient) a key-index slot, and one key-record
 * line when the message adds to that key (a count rule whose field this
 * message lacks only finds its key absent: slot only). The keys one
 * identity has under the rules keyed by the same field take consecutive
 * index slots, as in storm.c (key_hash), so they mostly share one slot
 * line: `lines` counts the distinct ones. A record is 160 bytes, so the
 * tracker touches two or three lines of it; the ceiling counts one.
 * The tables are sized like the tracker's at this size (index slots as
 * storm.c and intern.c size them from max_keys and max_ids; as many
 * entries and key records as the tracker held live ids and key states), and
 * filled so that a slot names a random entry or record: slot -> entry and
 * key slot -> record are dependent loads, as in a real hash table. The
 * identities are hashed exactly as the tracker hashes them (intern_hash of
 * the lowercased bytes), so hot identities (skewed) hit the same lines.
 * Entry and record lines are written (the tracker writes both).
 * The ceiling models storm.c (which fields a transaction counts: ceil_count
 * against tx_count; the key grouping of key_hash), whose helpers are
 * static: a change to either must be made to the model too.
 *
 * Two loops over the same messages as the tracker's last timed batch:
 *   ceil_ns  every look-up in order, message by message (out-of-order
 *            execution overlaps what it can);
 *   ceil_pf  CEIL_GROUP messages at a time in stages, each stage only
 *            prefetching for the next (hash and prefetch the slots, read
 *            them and prefetch the entries, hash the keys and prefetch
 *            their slots, read them and prefetch the records, then touch):
 *            the best a tracker could do with these tables.
 */
#define CEIL_GROUP 16
#define CEIL_IDS_MAX 12            /* identities per message: 8 fields, 3 recipients */
#define CEIL_KEYS_MAX (N_RULES * 3)
/* storm.c's key record: an 80-byte header and 10 buckets of 8 bytes */
#define CEIL_KEY_STRIDE (80 + 10 * 8)

struct ceil_slot {
	uint32_t id, tag;           /* intern.c's and storm.c's 8-byte index slots */
};

struct ceil_line {
	uint64_t w[8];
};

struct ceil {
	struct ceil_slot *islot;    /* intern index */
	uint64_t imask;
	struct ceil_line *ent;      /* intern entries */
	struct ceil_slot *kslot;    /* key index */
	uint64_t kmask;
	uint8_t *rec;               /* key records */
	const struct storm_rule *sel;
	size_t n_sel;
	uint32_t read;              /* 1 << storm_field: identities the rules read */
	uint8_t rank[N_RULES];      /* among the rules with the same `per` */
};

/* One message's look-ups: identity hashes, and keys as (rule, identity). */
struct ceil_plan {
	unsigned n_id, n_key;
	uint64_t pos[CEIL_IDS_MAX];          /* intern slot */
	uint32_t id[CEIL_IDS_MAX];           /* entry, once read */
	uint8_t key_rule[CEIL_KEYS_MAX];
	uint8_t key_ident[CEIL_KEYS_MAX];
	uint8_t key_adds[CEIL_KEYS_MAX];
	uint64_t kpos[CEIL_KEYS_MAX];
	uint32_t rec[CEIL_KEYS_MAX];
};


static inline bool field_rcptish(enum storm_field f)
{
	return f == STORM_F_RCPT || f == STORM_F_ACCEPTED_RCPT || f == STORM_F_REJECTED_RCPT ||
	       f == STORM_F_OVERQUOTA_RCPT;
}

static inline bool field_ident(enum storm_field f)
{
	return f >= STORM_F_CLIENT_IP && f <= STORM_F_BODY_HASH;
}

/* The identities a rule set reads: its keys, what it counts, and the client
 * of overlap rules (remembered per key). Recipient classes read the
 * recipients. */
static uint32_t ceil_fields(const struct storm_rule *sel, size_t n)
{
	uint32_t m = 0;

	for (size_t i = 0; i < n; i++) {
		enum storm_field fs[3] = { sel[i].per, sel[i].what, sel[i].denom };

		for (int j = 0; j < 3; j++) {
			if (field_rcptish(fs[j]))
				m |= 1u << STORM_F_RCPT;
			else if (field_ident(fs[j]))
				m |= 1u << fs[j];
		}
		if (sel[i].kind == STORM_RATIO && sel[i].denom == STORM_F_NONE &&
		    field_rcptish(sel[i].what))
			m |= 1u << STORM_F_RCPT;
		if (sel[i].kind == STORM_OVERLAP)
			m |= 1u << STORM_F_CLIENT_IP;
	}
	return m;
}

static uint64_t lower_hash(enum intern_kind kind, const char *s)
{
	char b[INTERN_MAX_LEN];
	size_t n = 0;

	if (!s || !s[0])
		return 0;
	for (; s[n] && n < sizeof(b); n++)
		b[n] = (s[n] >= 'A' && s[n] <= 'Z') ? (char)(s[n] + 32) : s[n];
	return intern_hash(kind, b, n);
}

/* The intern_hash() of field f of m as the tracker interns it; 0: absent. */
static uint64_t ceil_ident_hash(const struct msg *m, enum storm_field f)
{
	const struct storm_tx_summary *tx = &m->tx;
	uint8_t b[8];

	switch (f) {
	case STORM_F_CLIENT_IP:
		return intern_hash(INTERN_IP4, tx->client_ip, 4);
	case STORM_F_CLIENT_NET:
		memcpy(b, tx->client_ip, 4);
		b[3] = 0;
		b[4] = 24;
		return intern_hash(INTERN_NET4, b, 5);
	case STORM_F_MAIL_FROM:
		return lower_hash(INTERN_ADDR, tx->mail_from);
	case STORM_F_MAIL_FROM_DOMAIN:
		if (tx->mail_from_domain)
			return lower_hash(INTERN_DOMAIN, tx->mail_from_domain);
		return tx->mail_from && strrchr(tx->mail_from, '@') ?
		       lower_hash(INTERN_DOMAIN, strrchr(tx->mail_from, '@') + 1) : 0;
	case STORM_F_HELO:
		return lower_hash(INTERN_HELO, tx->helo);
	case STORM_F_MESSAGE_ID:
		return intern_hash(INTERN_MSGID, tx->message_id, strlen(tx->message_id));
	case STORM_F_BODY_HASH:
		return tx->body_hash ? intern_hash(INTERN_BODY, &tx->body_hash, 8) : 0;
	default:
		return 0;
	}
}

/* How many `f` message m brings to one key (rcpt_i >= 0: a per-recipient
 * key, recipient classes look at that recipient), as storm.c counts. */
static unsigned ceil_count(const struct msg *m, enum storm_field f, int rcpt_i)
{
	const struct storm_tx_summary *tx = &m->tx;
	unsigned n = 0;

	if (field_rcptish(f)) {
		for (uint32_t i = 0; i < tx->n_rcpt; i++) {
			uint8_t st = tx->rcpt_status[i];

			if (rcpt_i >= 0 && (int)i != rcpt_i)
				continue;
			n += f == STORM_F_RCPT ||
			     (f == STORM_F_ACCEPTED_RCPT && st == STORM_RCPT_ACCEPTED) ||
			     (f == STORM_F_REJECTED_RCPT && st == STORM_RCPT_REJECTED_UNKNOWN) ||
			     (f == STORM_F_OVERQUOTA_RCPT && st == STORM_RCPT_OVERQUOTA);
		}
		return n;
	}
	switch (f) {
	case STORM_F_MESSAGE:
		return 1;
	case STORM_F_NULL_SENDER:
		return tx->mail_from && !tx->mail_from[0];
	case STORM_F_AUTO_SUBMITTED:
		return tx->auto_submitted;
	default:
		return ceil_ident_hash(m, f) != 0;
	}
}

static bool ceil_adds(const struct storm_rule *r, const struct msg *m, int rcpt_i)
{
	if (ceil_count(m, r->what, rcpt_i))
		return true;
	if (r->kind != STORM_RATIO)
		return false;
	if (r->denom != STORM_F_NONE)
		return ceil_count(m, r->denom, rcpt_i) != 0;
	return ceil_count(m, field_rcptish(r->what) ? STORM_F_RCPT : STORM_F_MESSAGE, rcpt_i) != 0;
}

/* Hashes m's identities and lists its keys. */
static void ceil_plan(const struct ceil *c, const struct msg *m, struct ceil_plan *p)
{
	uint8_t of[STORM_F_MAX];
	uint8_t rcpt0 = 0;

	p->n_id = p->n_key = 0;
	memset(of, 0xff, sizeof(of));
	for (int f = STORM_F_CLIENT_IP; f <= STORM_F_BODY_HASH; f++) {
		uint64_t h;

		if (!(c->read & (1u << f)))
			continue;
		if (f == STORM_F_RCPT) {
			rcpt0 = (uint8_t)p->n_id;
			for (uint32_t i = 0; i < m->tx.n_rcpt; i++)
				p->pos[p->n_id++] = lower_hash(INTERN_ADDR, m->tx.rcpts[i]) & c->imask;
			continue;
		}
		h = ceil_ident_hash(m, (enum storm_field)f);
		if (!h)
			continue;
		of[f] = (uint8_t)p->n_id;
		p->pos[p->n_id++] = h & c->imask;
	}
	for (size_t ri = 0; ri < c->n_sel; ri++) {
		const struct storm_rule *r = &c->sel[ri];

		if (r->per == STORM_F_RCPT) {
			for (uint32_t i = 0; i < m->tx.n_rcpt; i++) {
				p->key_rule[p->n_key] = (uint8_t)ri;
				p->key_ident[p->n_key] = (uint8_t)(rcpt0 + i);
				p->key_adds[p->n_key++] = ceil_adds(r, m, (int)i);
			}
		} else if (of[r->per] != 0xff) {
			p->key_rule[p->n_key] = (uint8_t)ri;
			p->key_ident[p->n_key] = of[r->per];
			p->key_adds[p->n_key++] = ceil_adds(r, m, -1);
		}
	}
}

/* As storm.c's key_hash(): the keys of one identity under the rules keyed
 * by the same field take consecutive slots, so they share index lines. */
static inline uint64_t ceil_kpos(const struct ceil *c, const struct ceil_plan *p, unsigned k)
{
	const struct storm_rule *r = &c->sel[p->key_rule[k]];

	return (intern_fmix64(((uint64_t)r->per << 32) | p->id[p->key_ident[k]]) +
		c->rank[p->key_rule[k]]) & c->kmask;
}

static inline uint64_t ceil_touch_rec(const struct ceil *c, uint32_t rec)
{
	uint64_t *w = (uint64_t *)(void *)(c->rec + (size_t)rec * CEIL_KEY_STRIDE);

	return ++*w;
}

/* Every look-up of one message in order. Returns a sum (kept, so the loads
 * stay). */
static uint64_t ceil_msg(const struct ceil *c, const struct msg *m, struct ceil_plan *p)
{
	uint64_t sum = 0;

	ceil_plan(c, m, p);
	for (unsigned i = 0; i < p->n_id; i++) {
		p->id[i] = c->islot[p->pos[i]].id;
		sum += ++c->ent[p->id[i]].w[0];
	}
	for (unsigned k = 0; k < p->n_key; k++) {
		uint32_t rec = c->kslot[ceil_kpos(c, p, k)].id;

		if (p->key_adds[k])
			sum += ceil_touch_rec(c, rec);
		else
			sum += rec;
	}
	return sum;
}

/* CEIL_GROUP messages in stages, each prefetching for the next. */
static uint64_t ceil_group(const struct ceil *c, const struct msg *ms, unsigned n,
			   struct ceil_plan *p)
{
	uint64_t sum = 0;

	for (unsigned j = 0; j < n; j++) {
		ceil_plan(c, &ms[j], &p[j]);
		for (unsigned i = 0; i < p[j].n_id; i++)
			__builtin_prefetch(&c->islot[p[j].pos[i]]);
	}
	for (unsigned j = 0; j < n; j++)
		for (unsigned i = 0; i < p[j].n_id; i++) {
			p[j].id[i] = c->islot[p[j].pos[i]].id;
			__builtin_prefetch(&c->ent[p[j].id[i]], 1);
		}
	for (unsigned j = 0; j < n; j++)
		for (unsigned k = 0; k < p[j].n_key; k++) {
			p[j].kpos[k] = ceil_kpos(c, &p[j], k);
			__builtin_prefetch(&c->kslot[p[j].kpos[k]]);
		}
	for (unsigned j = 0; j < n; j++)
		for (unsigned k = 0; k < p[j].n_key; k++) {
			p[j].rec[k] = c->kslot[p[j].kpos[k]].id;
			if (p[j].key_adds[k])
				__builtin_prefetch(c->rec + (size_t)p[j].rec[k] * CEIL_KEY_STRIDE, 1);
		}
	for (unsigned j = 0; j < n; j++) {
		for (unsigned i = 0; i < p[j].n_id; i++)
			sum += ++c->ent[p[j].id[i]].w[0];
		for (unsigned k = 0; k < p[j].n_key; k++)
			sum += p[j].key_adds[k] ? ceil_touch_rec(c, p[j].rec[k]) : p[j].rec[k];
	}
	return sum;
}

static uint64_t pow2_at_least(uint64_t n)
{
	uint64_t cap = 16;

	while (cap < n)
		cap <<= 1;
	return cap;
}

static volatile uint64_t ceil_sink;

/* Times both loops over ms[0..n), reps times each; fills the medians (ns per
 * message) and the random lines per message. The tables live only for this
 * call. Returns -1 when they cannot be allocated. */
static int ceil_run(const struct storm_rule *sel, size_t n_sel, const struct storm_config *cfg,
		    uint64_t live_ids, uint64_t keys, const struct msg *ms, uint64_t n,
		    unsigned reps, uint64_t *ns_plain, uint64_t *ns_pf, double *lines)
{
	struct ceil c = { .sel = sel, .n_sel = n_sel, .read = ceil_fields(sel, n_sel) };
	uint64_t icap = pow2_at_least(2 * (uint64_t)cfg->max_ids);
	uint64_t kcap = pow2_at_least(2 * (uint64_t)cfg->max_keys);
	uint64_t plain[16], pf[16], n_lines = 0;
	struct ceil_plan p[CEIL_GROUP];
	int rc = -1;

	if (!live_ids)
		live_ids = 1;
	if (!keys)
		keys = 1;
	c.imask = icap - 1;
	c.kmask = kcap - 1;
	c.islot = aligned_alloc(64, icap * sizeof(*c.islot));
	c.kslot = aligned_alloc(64, kcap * sizeof(*c.kslot));
	c.ent = aligned_alloc(64, live_ids * sizeof(*c.ent));
	c.rec = aligned_alloc(64, (keys * CEIL_KEY_STRIDE + 63) & ~63ull);
	if (!c.islot || !c.kslot || !c.ent || !c.rec)
		goto out;
	/* Every page written before timing; a slot names a random entry. */
	for (uint64_t i = 0; i < icap; i++)
		c.islot[i] = (struct ceil_slot){
			(uint32_t)(((intern_fmix64(i) >> 32) * live_ids) >> 32), (uint32_t)i };
	for (uint64_t i = 0; i < kcap; i++)
		c.kslot[i] = (struct ceil_slot){
			(uint32_t)(((intern_fmix64(i ^ 0x5bd1e995ull) >> 32) * keys) >> 32), (uint32_t)i };
	memset(c.ent, 0, live_ids * sizeof(*c.ent));
	memset(c.rec, 0, keys * CEIL_KEY_STRIDE);

	for (size_t i = 0; i < n_sel; i++)
		for (size_t j = 0; j < i; j++)
			c.rank[i] += sel[j].per == sel[i].per;
	/* Lines per message: identity slot and entry (distinct identities
	 * may share a slot line; rarely, not counted), distinct key-index
	 * lines, records the message adds to. */
	for (uint64_t i = 0; i < n; i++) {
		uint64_t kl[CEIL_KEYS_MAX];
		unsigned nkl = 0;

		ceil_plan(&c, &ms[i], &p[0]);
		for (unsigned k = 0; k < p[0].n_id; k++)
			p[0].id[k] = c.islot[p[0].pos[k]].id;
		n_lines += 2 * p[0].n_id;
		for (unsigned k = 0; k < p[0].n_key; k++) {
			uint64_t line = ((uintptr_t)&c.kslot[ceil_kpos(&c, &p[0], k)]) >> 6;
			unsigned j;

			for (j = 0; j < nkl && kl[j] != line; j++)
				;
			if (j == nkl)
				kl[nkl++] = line;
			n_lines += p[0].key_adds[k];
		}
		n_lines += nkl;
	}
	*lines = (double)n_lines / (double)n;
	/* one untimed pass, as the tracker is timed warm */
	for (uint64_t i = 0; i < n; i++)
		ceil_sink += ceil_msg(&c, &ms[i], &p[0]);
	for (unsigned r = 0; r < reps; r++) {
		uint64_t sum = 0, t0 = now_ns();

		for (uint64_t i = 0; i < n; i++)
			sum += ceil_msg(&c, &ms[i], &p[0]);
		plain[r] = (now_ns() - t0) / n;
		t0 = now_ns();
		for (uint64_t i = 0; i < n; i += CEIL_GROUP)
			sum += ceil_group(&c, &ms[i], n - i < CEIL_GROUP ? (unsigned)(n - i) : CEIL_GROUP, p);
		pf[r] = (now_ns() - t0) / n;
		ceil_sink += sum;
	}
	qsort(plain, reps, sizeof(plain[0]), cmp_u64);
	qsort(pf, reps, sizeof(pf[0]), cmp_u64);
	*ns_plain = plain[reps / 2];
	*ns_pf = pf[reps / 2];
	rc = 0;
out:
	free(c.islot);
	free(c.kslot);
	free(c.ent);
	free(c.rec);
	return rc;
}

static void run(uint64_t ids, bool skewed, uint64_t batch, unsigned reps)
{
	struct pop p = { .skewed = skewed };
	uint64_t per_window = ids / 4, step_ns, ts = 0, seq = 0, warm;
	uint64_t heap0, heap1, t0, t1, ns[16], wall[16], w0, drained = 0, keys_before, adv_ns;
	struct storm_config cfg = {
		/* Caps above the workload's steady state: this measures
		 * tracking, not behaviour at the caps (the unit tests do). */
		.max_ids = (uint32_t)(ids * 2 + 1024),
		.max_keys = (uint32_t)(ids * 3 + 1024),
		.intern_idle_ns = 60 * SEC,
		.on_event = on_event,
	};
	struct storm_tracker *t;
	struct storm_stats st, st_end, sd;
	struct intern_stats is;
	struct msg *ms;
	static struct storm_rule sel[N_RULES];
	size_t n_sel = 0;
	uint64_t c_ns = 0, c_pf = 0;
	double c_lines = 0;

	p.n_client = (uint32_t)(ids / 20 + 1);
	p.n_sender = (uint32_t)(ids / 20 + 1);
	p.n_domain = (uint32_t)(ids / 200 + 1);
	p.n_rcpt = (uint32_t)(ids / 2 - ids / 10 - ids / 200 + 1);
	p.sender = malloc(p.n_sender * sizeof(*p.sender));
	p.domain = malloc(p.n_domain * sizeof(*p.domain));
	p.rcpt = malloc(p.n_rcpt * sizeof(*p.rcpt));
	for (uint32_t i = 0; i < p.n_sender; i++)
		snprintf(p.sender[i], sizeof(p.sender[i]), "s%u@d%u.example", i, i % p.n_domain);
	for (uint32_t i = 0; i < p.n_domain; i++)
		snprintf(p.domain[i], sizeof(p.domain[i]), "d%u.example", i);
	for (uint32_t i = 0; i < p.n_rcpt; i++)
		snprintf(p.rcpt[i], sizeof(p.rcpt[i]), "user%u@rcpt%u.example", i, i % 997);
	if (batch > per_window)
		batch = per_window;
	if (reps > 16)
		reps = 16;
	ms = malloc(batch * sizeof(*ms));
	step_ns = WINDOW / per_window;

	heap0 = heap_bytes();
	{
		/* BENCH_STORM_RULES=i,j,...: a subset, to see what each rule costs. */
		const char *e = getenv("BENCH_STORM_RULES");

		bool want[N_RULES];

		memset(want, !e, sizeof(want));
		for (const char *q = e; q && *q;) {
			char *end;
			unsigned long k = strtoul(q, &end, 10);

			if (end == q || k >= N_RULES || (*end && *end != ',')) {
				fprintf(stderr, "BENCH_STORM_RULES: want rule numbers 0-%d "
					"separated by commas\n", (int)N_RULES - 1);
				exit(2);
			}
			want[k] = true;
			q = *end ? end + 1 : end;
		}
		for (size_t i = 0; i < N_RULES; i++)
			if (want[i])
				sel[n_sel++] = rules[i];
		t = storm_new(&cfg, sel, n_sel);
	}
	if (!t) {
		fprintf(stderr, "storm_new failed\n");
		exit(1);
	}
	/* Warm up: 1.5 windows. */
	warm = per_window + per_window / 2;
	for (uint64_t i = 0; i < warm; i++) {
		struct msg m;

		gen(&p, &m, ts, seq++);
		storm_observe(t, &m.tx, NULL);
		if ((i & 7) == 0)
			storm_advance(t, ts, 256);
		ts += step_ns;
	}
	storm_get_stats(t, &st);
	/* Timed batches: messages are generated first, outside the clock. */
	for (unsigned r = 0; r < reps; r++) {
		uint64_t ts0 = ts;
		struct storm_hits hits;

		for (uint64_t i = 0; i < batch; i++) {
			gen(&p, &ms[i], ts, seq++);
			ts += step_ns;
		}
		ts = ts0;
		w0 = wall_ns();
		t0 = now_ns();
		for (uint64_t i = 0; i < batch; i++) {
			storm_observe(t, &ms[i].tx, &hits);
			if ((i & 7) == 0)
				storm_advance(t, ms[i].tx.ts_ns, 256);
		}
		t1 = now_ns();
		wall[r] = (wall_ns() - w0) / batch;
		ts = ts0 + batch * step_ns;
		ns[r] = (t1 - t0) / batch;
	}
	storm_get_stats(t, &st_end);
	intern_get_stats(storm_intern(t), &is);
	heap1 = heap_bytes();
	qsort(ns, reps, sizeof(ns[0]), cmp_u64);
	qsort(wall, reps, sizeof(wall[0]), cmp_u64);

	/* Rotation: jump past the window and drain. */
	keys_before = st_end.keys;
	ts += WINDOW + WINDOW / 10;
	t0 = now_ns();
	for (;;) {
		unsigned w = storm_advance(t, ts, 4096);

		drained += w;
		if (w < 4096)
			break;
	}
	adv_ns = now_ns() - t0;
	if (getenv("BENCH_STORM_DEBUG"))
		fprintf(stderr, "observed %" PRIu64 " updates %" PRIu64 " evicted %" PRIu64
			" refused %" PRIu64 "/%" PRIu64 " intern_full %" PRIu64 " clock %" PRIu64
			" expired %" PRIu64 " freed %" PRIu64 " buckets %" PRIu64 " up %" PRIu64 "\n",
			st_end.observed, st_end.updates, st_end.evicted_cap, st_end.refused_cap,
			st_end.refused_keys, st_end.intern_full, is.evicted_clock, is.expired_idle,
			st_end.keys_freed, st_end.buckets_expired, st_end.events_up);
	storm_get_stats(t, &sd);
	storm_free(t);
	/* The ceiling over the last timed batch, with tables sized like the
	 * tracker's, which is freed by now: the two never hold memory at once. */
	if (ceil_run(sel, n_sel, &cfg, is.ids, st_end.keys, ms, batch, reps, &c_ns, &c_pf,
		     &c_lines) < 0)
		fprintf(stderr, "ceiling: out of memory, not measured\n");
	printf("%-8s %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %10" PRIu64 " %6" PRIu64
	       " %6" PRIu64 " %6" PRIu64 " %7" PRIu64 " %9.1f %9.1f %9.1f %9.1f %7" PRIu64
	       " %6" PRIu64 " %6.1f %7" PRIu64 " %7" PRIu64 "\n",
	       skewed ? "skewed" : "uniform", ids, is.ids, st_end.keys, st_end.pairs,
	       ns[0], ns[reps / 2], ns[reps - 1], wall[reps / 2],
	       (double)st_end.bytes / (double)st_end.keys,
	       (double)(heap1 - heap0) / (double)st_end.keys,
	       (double)st_end.bytes / 1048576.0, (double)st.bytes / 1048576.0,
	       drained ? adv_ns / drained : 0, sd.keys, c_lines, c_ns, c_pf);
	(void)keys_before;
	fflush(stdout);
	free(ms);
	free(p.sender);
	free(p.domain);
	free(p.rcpt);
}

int main(int argc, char **argv)
{
	uint64_t idsv[8] = { 10000, 1000000, 10000000 };
	unsigned n_ids = 3, reps = 5;
	uint64_t batch = 200000;
	int skew = 2;   /* 0 uniform, 1 skewed, 2 both */

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--ids") && i + 1 < argc) {
			char *s = argv[++i], *e;

			n_ids = 0;
			while (*s && n_ids < 8) {
				idsv[n_ids++] = strtoull(s, &e, 10);
				s = *e ? e + 1 : e;
			}
		} else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
			batch = strtoull(argv[++i], NULL, 10);
		} else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			reps = (unsigned)atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--skew") && i + 1 < argc) {
			i++;
			skew = !strcmp(argv[i], "uniform") ? 0 : !strcmp(argv[i], "skewed") ? 1 : 2;
		} else {
			fprintf(stderr, "usage: %s [--ids N,N,...] [--batch N] [--reps R] "
				"[--skew uniform|skewed|both]\n", argv[0]);
			return 2;
		}
	}
	if (!reps)
		reps = 1;
	printf("# bench_storm: %zu rules, window 10 min x 10 buckets, allocator %s\n",
	       N_RULES, mem_allocator_name());
	printf("# ns/msg: all tracking per message incl. storm_advance every 8 messages, thread "
	       "CPU time (min/median/max of %u batches; wall_md: wall-clock median)\n", reps);
	printf("# ns/expd: window rotation, ns per expired (key, bucket) queue entry when the "
	       "clock jumps past the window; left: keys left after the drain\n");
	printf("# B/key: tracker estimate and allocator (jemalloc stats.allocated) heap per key state; "
	       "MiB: tracker bytes after the batches and after warm-up\n");
	printf("# ceiling: no tracking, only the random lines any tracker must touch per message "
	       "(lines) in tables sized like the tracker's, over its last batch; ceil_ns in order, "
	       "ceil_pf prefetched %u messages at a time (median ns per message)\n", CEIL_GROUP);
	printf("%-8s %9s %9s %9s %10s %6s %6s %6s %7s %9s %9s %9s %9s %7s %6s %6s %7s %7s\n",
	       "load", "ids_goal", "ids_live", "keys", "pairs", "ns_min", "ns_med", "ns_max",
	       "wall_md", "B/key_est", "B/key_heap", "MiB_end", "MiB_warm", "ns/expd", "left",
	       "lines", "ceil_ns", "ceil_pf");
	for (unsigned i = 0; i < n_ids; i++) {
		if (skew != 1)
			run(idsv[i], false, batch, reps);
		if (skew != 0)
			run(idsv[i], true, batch, reps);
	}
	printf("# events emitted: %" PRIu64 "\n", n_events);
	return 0;
}
