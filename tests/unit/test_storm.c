/* Unit tests for engine/storm.c: bucket rotation and expiry, the maintained
 * window union against a naive recount after every step of a seeded random
 * sequence, each signal, threshold crossings up and down (one event each),
 * id recycling under churn, the memory cap, rule checks. */
#include <arpa/inet.h>
#include <stdlib.h>

#include "check.h"
#include "intern.h"
#include "storm.h"

#define SEC 1000000000ull
#define MIN (60 * SEC)

/* ---- helpers ----------------------------------------------------------- */

struct ev_log {
	unsigned n;
	struct {
		struct storm_event ev;
		char key[128];
		char rule[64];
	} e[64];
};

static void on_event(void *user, const struct storm_event *ev)
{
	struct ev_log *l = user;

	if (l->n >= 64)
		return;
	l->e[l->n].ev = *ev;
	snprintf(l->e[l->n].key, sizeof(l->e[l->n].key), "%s", ev->key);
	snprintf(l->e[l->n].rule, sizeof(l->e[l->n].rule), "%s", ev->rule_name);
	l->n++;
}

/* A transaction built from short strings: ip "10.0.0.1" (or "2001:db8::1"),
 * rcpts "a@x,b@x", status per rcpt "A" accepted, "U" user unknown, "Q"
 * over quota, "O" other. */
struct txb {
	struct storm_tx_summary tx;
	char buf[1024];
	const char *rcpt[64];
	uint8_t st[64];
};

static struct storm_tx_summary *mk(struct txb *b, uint64_t ts, const char *ip, const char *from,
				   const char *rcpts, const char *status)
{
	char *p = b->buf;

	memset(&b->tx, 0, sizeof(b->tx));
	b->tx.ts_ns = ts;
	if (ip && strchr(ip, ':')) {
		inet_pton(AF_INET6, ip, b->tx.client_ip);
		b->tx.client_ip_version = 6;
	} else if (ip) {
		inet_pton(AF_INET, ip, b->tx.client_ip);
		b->tx.client_ip_version = 4;
	}
	b->tx.mail_from = from;
	snprintf(b->buf, sizeof(b->buf), "%s", rcpts ? rcpts : "");
	while (p && *p && b->tx.n_rcpt < 64) {
		char *c = strchr(p, ',');

		if (c)
			*c = '\0';
		b->rcpt[b->tx.n_rcpt] = p;
		b->st[b->tx.n_rcpt] = STORM_RCPT_ACCEPTED;
		if (status && status[b->tx.n_rcpt]) {
			switch (status[b->tx.n_rcpt]) {
			case 'U': b->st[b->tx.n_rcpt] = STORM_RCPT_REJECTED_UNKNOWN; break;
			case 'Q': b->st[b->tx.n_rcpt] = STORM_RCPT_OVERQUOTA; break;
			case 'O': b->st[b->tx.n_rcpt] = STORM_RCPT_OTHER; break;
			default: break;
			}
		}
		b->tx.n_rcpt++;
		p = c ? c + 1 : NULL;
	}
	b->tx.rcpts = b->rcpt;
	b->tx.rcpt_status = b->st;
	return &b->tx;
}

static const struct storm_hit *hit_of(const struct storm_hits *h, uint32_t rule)
{
	for (unsigned i = 0; i < h->n; i++)
		if (h->hit[i].rule == rule)
			return &h->hit[i];
	return NULL;
}

static struct storm_rule rule(const char *name, enum storm_kind kind, enum storm_field what,
			      enum storm_field per, uint64_t window, uint32_t buckets, double thr)
{
	struct storm_rule r = {
		.name = name, .kind = kind, .what = what, .per = per,
		.window_ns = window, .buckets = buckets, .threshold = thr, .score = 1.0,
	};
	return r;
}

/* ---- rotation and expiry ------------------------------------------------- */

static void test_rotation(void)
{
	struct storm_rule r = rule("CNT", STORM_COUNT, STORM_F_MESSAGE, STORM_F_CLIENT_IP,
				   10 * SEC, 10, 1000);
	struct storm_config cfg = { .max_ids = 4096, .max_keys = 1024 };
	struct storm_tracker *t = storm_new(&cfg, &r, 1);
	struct storm_stats st;
	struct txb b;
	const uint8_t ip[4] = { 10, 0, 0, 1 };
	/* Step table: time of a message (or 0 for none) and the window count
	 * expected just after, with advance(now) run first. */
	static const struct {
		uint64_t ts;
		bool msg;
		uint64_t expect;
	} steps[] = {
		{ 0, true, 1 }, { SEC / 2, true, 2 }, { SEC, true, 3 },
		{ 5 * SEC, true, 4 },
		{ 9 * SEC + SEC / 2, true, 5 },     /* bucket 9: the window is buckets 0..9 */
		{ 10 * SEC, true, 4 },              /* bucket 10: bucket 0 (2 msgs) left, +1 */
		{ 11 * SEC, false, 3 },             /* bucket 11: bucket 1 left */
		{ 15 * SEC, false, 2 },             /* bucket 5 left */
		{ 19 * SEC, false, 1 },             /* 9.5 s still in */
		{ 20 * SEC, false, 0 },             /* everything left but the 10 s one */
	};

	CHECK(t != NULL);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		while (storm_advance(t, steps[i].ts, 4) == 4)
			;
		if (steps[i].msg)
			storm_observe(t, mk(&b, steps[i].ts, "10.0.0.1", "s@x", "r@x", NULL), NULL);
		if (i == 9) {
			/* The 10 s bucket is still live at 20 s? No: 20 s is
			 * bucket 20, window (10, 20]: bucket 10 has left. */
			CHECK_EQ_U64(storm_key_value(t, 0, ip, 4), 0);
		} else {
			CHECK_EQ_U64(storm_key_value(t, 0, ip, 4), steps[i].expect);
		}
		CHECK_EQ_U64(storm_validate(t), 0);
	}
	/* The emptied key is freed: memory follows active keys. */
	storm_get_stats(t, &st);
	CHECK_EQ_U64(st.keys, 0);
	CHECK(st.buckets_expired >= 5);
	CHECK_EQ_U64(st.keys_freed, 1);
	CHECK_EQ_U64(st.advance_pending, 0);
	storm_free(t);
}

/* A clock jump past the whole window clears everything lazily, without
 * storm_advance, and a late summary is counted and taken as "now". */
static void test_lazy_and_late(void)
{
	struct storm_rule r = rule("D", STORM_DISTINCT, STORM_F_RCPT, STORM_F_CLIENT_IP,
				   10 * SEC, 5, 1000);
	struct storm_config cfg = { .max_ids = 4096, .max_keys = 1024 };
	struct storm_tracker *t = storm_new(&cfg, &r, 1);
	struct storm_stats st;
	struct txb b;
	const uint8_t ip[4] = { 10, 0, 0, 1 };

	storm_observe(t, mk(&b, 100 * SEC, "10.0.0.1", "s@x", "a@x,b@x,c@x", NULL), NULL);
	CHECK_EQ_U64(storm_key_value(t, 0, ip, 4), 3);
	storm_observe(t, mk(&b, 50 * SEC, "10.0.0.1", "s@x", "d@x", NULL), NULL);
	CHECK_EQ_U64(storm_key_value(t, 0, ip, 4), 4);
	storm_observe(t, mk(&b, 1000 * SEC, "10.0.0.1", "s@x", "a@x", NULL), NULL);
	CHECK_EQ_U64(storm_key_value(t, 0, ip, 4), 1);
	storm_get_stats(t, &st);
	CHECK_EQ_U64(st.late, 1);
	CHECK_EQ_U64(st.pairs, 1);
	CHECK_EQ_U64(storm_validate(t), 0);
	/* An identity too long to intern is skipped and counted. */
	{
		char *big = malloc(INTERN_MAX_LEN + 10);

		memset(big, 'a', INTERN_MAX_LEN + 9);
		big[INTERN_MAX_LEN + 9] = '\0';
		mk(&b, 1000 * SEC, "10.0.0.1", "s@x", "z@x", NULL);
		b.rcpt[0] = big;
		storm_observe(t, &b.tx, NULL);
		storm_get_stats(t, &st);
		CHECK_EQ_U64(st.too_long, 1);
		CHECK_EQ_U64(storm_key_value(t, 0, ip, 4), 1);
		free(big);
	}
	storm_free(t);
}

/* ---- randomized: maintained union vs naive recount ------------------------ */

struct rec {
	uint64_t ts;
	int client, member;
};

/* members: the recipient population per client. 70 keeps most windows
 * above the inline capacity (roaring), 8 keeps every window inline (at
 * least 8 fit), 20
 * makes keys cross between the two representations all the time. */
static void test_random_union_n(int MEMBERS, unsigned seed0)
{
	enum { CLIENTS = 6, STEPS = 3000, NB = 6, MEMBERS_MAX = 128 };
	const uint64_t window = 6 * SEC, width = window / NB;
	struct storm_rule rules[2] = {
		rule("FAN", STORM_DISTINCT, STORM_F_RCPT, STORM_F_CLIENT_IP, window, NB, 1e9),
		rule("CNT", STORM_COUNT, STORM_F_RCPT, STORM_F_CLIENT_IP, window, NB, 1e9),
	};
	struct storm_config cfg = { .max_ids = 4096, .max_keys = 1024, .intern_idle_ns = SEC };
	struct storm_tracker *t = storm_new(&cfg, rules, 2);
	struct rec *hist = calloc(STEPS * 8, sizeof(*hist));
	size_t nh = 0;
	unsigned seed = seed0, bad_distinct = 0, bad_count = 0, bad_valid = 0, bad_other = 0;
	uint64_t now = 0, max_bitmaps = 0;
	struct txb b;

	for (int step = 0; step < STEPS; step++) {
		int client = rand_r(&seed) % CLIENTS;
		int n = 1 + rand_r(&seed) % 5;
		char ip[32], rc[512] = "";
		uint8_t ipb[4] = { 10, 0, 0, (uint8_t)(client + 1) };
		uint64_t s_now, naive_d = 0, naive_c = 0;
		uint8_t seen[MEMBERS_MAX] = { 0 };

		now += (uint64_t)(rand_r(&seed) % 400) * (SEC / 1000);
		if (rand_r(&seed) % 50 == 0)
			now += window;   /* an idle gap */
		snprintf(ip, sizeof(ip), "10.0.0.%d", client + 1);
		for (int i = 0; i < n; i++) {
			int m = rand_r(&seed) % MEMBERS;
			char one[32];

			snprintf(one, sizeof(one), "%sm%d@rcpt.example", i ? "," : "", m);
			strcat(rc, one);
			hist[nh++] = (struct rec){ now, client, m };
		}
		if (rand_r(&seed) % 3 == 0)
			storm_advance(t, now, 1 + rand_r(&seed) % 4);
		storm_observe(t, mk(&b, now, ip, "s@x", rc, NULL), NULL);

		/* Naive: members of this client in buckets (S - NB, S]. */
		s_now = now / width;
		for (size_t i = 0; i < nh; i++) {
			uint64_t s = hist[i].ts / width;

			if (hist[i].client != client || s + NB <= s_now)
				continue;
			naive_c++;
			if (!seen[hist[i].member]) {
				seen[hist[i].member] = 1;
				naive_d++;
			}
		}
		if ((uint64_t)storm_key_value(t, 0, ipb, 4) != naive_d)
			bad_distinct++;
		if ((uint64_t)storm_key_value(t, 1, ipb, 4) != naive_c)
			bad_count++;
		if (storm_validate(t) != 0)
			bad_valid++;
		{
			struct storm_stats st1;

			storm_get_stats(t, &st1);
			if (st1.bitmaps > max_bitmaps)
				max_bitmaps = st1.bitmaps;
		}
		/* After a full advance every key is exact. */
		if (step % 97 == 0) {
			while (storm_advance(t, now, 64) == 64)
				;
			for (int c2 = 0; c2 < CLIENTS; c2++) {
				uint8_t ip2[4] = { 10, 0, 0, (uint8_t)(c2 + 1) };
				uint64_t d = 0;
				uint8_t seen2[MEMBERS_MAX] = { 0 };

				for (size_t i = 0; i < nh; i++) {
					uint64_t s = hist[i].ts / width;

					if (hist[i].client != c2 || s + NB <= s_now)
						continue;
					if (!seen2[hist[i].member]) {
						seen2[hist[i].member] = 1;
						d++;
					}
				}
				if ((uint64_t)storm_key_value(t, 0, ip2, 4) != d)
					bad_other++;
			}
		}
	}
	CHECK_EQ_U64(bad_distinct, 0);
	CHECK_EQ_U64(bad_count, 0);
	CHECK_EQ_U64(bad_valid, 0);
	CHECK_EQ_U64(bad_other, 0);
	/* Small windows stay inline (no bitmap); large ones went to roaring. */
	if (MEMBERS <= 8)
		CHECK_EQ_U64(max_bitmaps, 0);
	else
		CHECK(max_bitmaps > 0);
	/* Long after: nothing left but the intern cache, which idles out. */
	now += 10 * window;
	while (storm_advance(t, now, 64) == 64)
		;
	for (int i = 0; i < 100; i++)   /* the intern sweep */
		storm_advance(t, now, 64);
	{
		struct storm_stats st;

		storm_get_stats(t, &st);
		CHECK_EQ_U64(st.keys, 0);
		CHECK_EQ_U64(st.pairs, 0);
		CHECK_EQ_U64(st.bitmaps, 0);
		CHECK_EQ_U64(st.ids, 0);
	}
	CHECK_EQ_U64(storm_validate(t), 0);
	free(hist);
	storm_free(t);
}

/* ---- each signal ----------------------------------------------------------- */

/* One rule, a sequence of transactions, and for each the expected hit
 * value (-1: no hit) and whether it is the crossing. */
struct sig_step {
	uint64_t ts;
	const char *ip, *from, *rcpts, *status, *msgid;
	uint64_t body;
	bool autosub;
	double hit;
	bool crossed;
};

struct sig_case {
	const char *what;
	struct storm_rule r;
	struct sig_step s[8];
};

#define R(n, k, w, p, thr) rule(n, k, w, p, 10 * MIN, 10, thr)

static void test_signals(void)
{
	struct sig_case cases[] = {
		{ "distinct rcpt per client_ip (fan-out)",
		  R("FANOUT", STORM_DISTINCT, STORM_F_RCPT, STORM_F_CLIENT_IP, 3),
		  { { 1, "10.0.0.1", "s@x", "a@x,b@x", NULL, NULL, 0, 0, -1, 0 },
		    { 2, "10.0.0.2", "s@x", "c@x,d@x", NULL, NULL, 0, 0, -1, 0 },
		    { 3, "10.0.0.1", "s@x", "A@X,c@x", NULL, NULL, 0, 0, -1, 0 },
		    { 4, "10.0.0.1", "s@x", "d@x", NULL, NULL, 0, 0, 4, 1 },
		    { 5, "10.0.0.1", "s@x", "a@x", NULL, NULL, 0, 0, 4, 0 },
		    { 0 } } },
		{ "distinct rcpt per mail_from",
		  R("FANOUT_FROM", STORM_DISTINCT, STORM_F_RCPT, STORM_F_MAIL_FROM, 2),
		  { { 1, "10.0.0.1", "Bulk@x", "a@x", NULL, NULL, 0, 0, -1, 0 },
		    { 2, "10.0.0.2", "bulk@x", "b@x", NULL, NULL, 0, 0, -1, 0 },
		    { 3, "10.0.0.3", "bulk@x", "c@x", NULL, NULL, 0, 0, 3, 1 },
		    { 4, "10.0.0.3", "", "d@x", NULL, NULL, 0, 0, -1, 0 },
		    { 0 } } },
		{ "distinct rcpt per mail_from_domain",
		  R("FANOUT_DOM", STORM_DISTINCT, STORM_F_RCPT, STORM_F_MAIL_FROM_DOMAIN, 2),
		  { { 1, "10.0.0.1", "a@dom.example", "a@x", NULL, NULL, 0, 0, -1, 0 },
		    { 2, "10.0.0.2", "b@DOM.example", "b@x", NULL, NULL, 0, 0, -1, 0 },
		    { 3, "10.0.0.3", "c@dom.example", "c@x", NULL, NULL, 0, 0, 3, 1 },
		    { 0 } } },
		{ "distinct rcpt per client_net (/24)",
		  R("FANOUT_NET", STORM_DISTINCT, STORM_F_RCPT, STORM_F_CLIENT_NET, 2),
		  { { 1, "10.0.0.1", "s@x", "a@x", NULL, NULL, 0, 0, -1, 0 },
		    { 2, "10.0.0.77", "s@x", "b@x", NULL, NULL, 0, 0, -1, 0 },
		    { 3, "10.0.1.1", "s@x", "c@x", NULL, NULL, 0, 0, -1, 0 },
		    { 4, "10.0.0.200", "s@x", "c@x", NULL, NULL, 0, 0, 3, 1 },
		    { 0 } } },
		{ "distinct client_ip per rcpt (fan-in)",
		  R("FANIN", STORM_DISTINCT, STORM_F_CLIENT_IP, STORM_F_RCPT, 2),
		  { { 1, "10.0.0.1", "s@x", "victim@x", NULL, NULL, 0, 0, -1, 0 },
		    { 2, "10.0.0.2", "s@x", "victim@x,other@x", NULL, NULL, 0, 0, -1, 0 },
		    { 3, "10.0.0.2", "s@x", "victim@x", NULL, NULL, 0, 0, -1, 0 },
		    { 4, "2001:db8::1", "s@x", "other@x,victim@x", NULL, NULL, 0, 0, 3, 1 },
		    { 0 } } },
		{ "distinct mail_from per rcpt",
		  R("FANIN_FROM", STORM_DISTINCT, STORM_F_MAIL_FROM, STORM_F_RCPT, 1),
		  { { 1, "10.0.0.1", "a@x", "v@x", NULL, NULL, 0, 0, -1, 0 },
		    { 2, "10.0.0.1", "b@x", "v@x", NULL, NULL, 0, 0, 2, 1 },
		    { 0 } } },
		{ "count message per message_id (repeats)",
		  R("DUP_MSGID", STORM_COUNT, STORM_F_MESSAGE, STORM_F_MESSAGE_ID, 3),
		  { { 1, "10.0.0.1", "s@x", "a@x", NULL, "<m1@x>", 0, 0, -1, 0 },
		    { 2, "10.0.0.1", "s@x", "b@x", NULL, "<m1@x>", 0, 0, -1, 0 },
		    { 3, "10.0.0.2", "s@x", "c@x", NULL, "<m2@x>", 0, 0, -1, 0 },
		    { 4, "10.0.0.2", "s@x", "c@x", NULL, "<m1@x>", 0, 0, -1, 0 },
		    { 5, "10.0.0.2", "s@x", "c@x", NULL, "<m1@x>", 0, 0, 4, 1 },
		    { 0 } } },
		{ "count message per body_hash",
		  R("DUP_BODY", STORM_COUNT, STORM_F_MESSAGE, STORM_F_BODY_HASH, 1),
		  { { 1, "10.0.0.1", "s@x", "a@x", NULL, NULL, 0xabc, 0, -1, 0 },
		    { 2, "10.0.0.1", "s@x", "a@x", NULL, NULL, 0, 0, -1, 0 },
		    { 3, "10.0.0.2", "s@x", "b@x", NULL, NULL, 0xabc, 0, 2, 1 },
		    { 0 } } },
		{ "distinct client_ip per message_id",
		  R("MSGID_IPS", STORM_DISTINCT, STORM_F_CLIENT_IP, STORM_F_MESSAGE_ID, 1),
		  { { 1, "10.0.0.1", "s@x", "a@x", NULL, "<m@x>", 0, 0, -1, 0 },
		    { 2, "10.0.0.1", "s@x", "a@x", NULL, "<m@x>", 0, 0, -1, 0 },
		    { 3, "10.0.0.9", "s@x", "a@x", NULL, "<m@x>", 0, 0, 2, 1 },
		    { 0 } } },
		{ "ratio rejected_rcpt per client_ip min 4 (dictionary attack)",
		  { .name = "RCPT_REJECTS", .kind = STORM_RATIO, .what = STORM_F_REJECTED_RCPT,
		    .per = STORM_F_CLIENT_IP, .window_ns = 10 * MIN, .threshold = 0.5, .min = 4 },
		  { { 1, "10.0.0.1", "s@x", "a@x,b@x", "UU", NULL, 0, 0, -1, 0 },
		    { 2, "10.0.0.1", "s@x", "c@x,d@x", "UA", NULL, 0, 0, 0.75, 1 },
		    { 3, "10.0.0.1", "s@x", "e@x,f@x", "AA", NULL, 0, 0, -1, 0 },
		    { 4, "10.0.0.1", "s@x", "g@x,h@x,i@x", "UUU", NULL, 0, 0, 6.0 / 9, 1 },
		    { 0 } } },
		{ "count overquota_rcpt per rcpt (target overwhelmed)",
		  R("OVERQUOTA", STORM_COUNT, STORM_F_OVERQUOTA_RCPT, STORM_F_RCPT, 2),
		  { { 1, "10.0.0.1", "s@x", "full@x,ok@x", "QA", NULL, 0, 0, -1, 0 },
		    { 2, "10.0.0.2", "t@x", "full@x", "Q", NULL, 0, 0, -1, 0 },
		    { 3, "10.0.0.3", "u@x", "ok@x", "A", NULL, 0, 0, -1, 0 },
		    { 4, "10.0.0.3", "u@x", "ok@x,full@x", "AQ", NULL, 0, 0, 3, 1 },
		    { 5, "10.0.0.3", "u@x", "full@x", "A", NULL, 0, 0, 3, 0 },
		    { 0 } } },
		{ "count null_sender per rcpt (backscatter)",
		  R("BOUNCES_RCPT", STORM_COUNT, STORM_F_NULL_SENDER, STORM_F_RCPT, 1),
		  { { 1, "10.0.0.1", "", "forged@x", NULL, NULL, 0, 0, -1, 0 },
		    { 2, "10.0.0.2", "real@y", "forged@x", NULL, NULL, 0, 0, -1, 0 },
		    { 3, "10.0.0.3", "", "forged@x", NULL, NULL, 0, 0, 2, 1 },
		    { 0 } } },
		{ "count null_sender per client_ip",
		  R("BOUNCES_IP", STORM_COUNT, STORM_F_NULL_SENDER, STORM_F_CLIENT_IP, 1),
		  { { 1, "10.0.0.1", "", "a@x", NULL, NULL, 0, 0, -1, 0 },
		    { 2, "10.0.0.1", "", "b@x", NULL, NULL, 0, 0, 2, 1 },
		    { 0 } } },
		{ "count auto_submitted per mail_from (auto-reply loop)",
		  R("AUTOREPLY", STORM_COUNT, STORM_F_AUTO_SUBMITTED, STORM_F_MAIL_FROM, 1),
		  { { 1, "10.0.0.1", "bot@x", "a@x", NULL, NULL, 0, 1, -1, 0 },
		    { 2, "10.0.0.1", "bot@x", "a@x", NULL, NULL, 0, 0, -1, 0 },
		    { 3, "10.0.0.1", "bot@x", "a@x", NULL, NULL, 0, 1, 2, 1 },
		    { 0 } } },
		{ "distinct helo per client_ip (random HELOs)",
		  R("HELOS", STORM_DISTINCT, STORM_F_HELO, STORM_F_CLIENT_IP, 1),
		  { { 1, "10.0.0.1", "s@x", "a@x", "h1", NULL, 0, 0, -1, 0 },
		    { 2, "10.0.0.1", "s@x", "a@x", "H1", NULL, 0, 0, -1, 0 },
		    { 3, "10.0.0.1", "s@x", "a@x", "h2", NULL, 0, 0, 2, 1 },
		    { 0 } } },
		{ "overlap rcpt per message_id (list re-sent from elsewhere)",
		  { .name = "RESENT", .kind = STORM_OVERLAP, .what = STORM_F_RCPT,
		    .per = STORM_F_MESSAGE_ID, .window_ns = 10 * MIN, .threshold = 0.7, .min = 3 },
		  { { 1, "10.0.0.1", "s@x", "a@x,b@x,c@x,d@x", NULL, "<l@x>", 0, 0, -1, 0 },
		    /* Same client again: not compared. */
		    { 2, "10.0.0.1", "s@x", "a@x,b@x,c@x,d@x", NULL, "<l@x>", 0, 0, -1, 0 },
		    /* Another client, 3 of 4 recipients: J = 3/4. */
		    { 3, "10.0.0.2", "s@x", "a@x,b@x,c@x", NULL, "<l@x>", 0, 0, 0.75, 1 },
		    /* Another client, disjoint list: J = 0 → down. */
		    { 4, "10.0.0.1", "s@x", "w@x,x@x,y@x,z@x", NULL, "<l@x>", 0, 0, -1, 0 },
		    { 0 } } },
	};

	for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
		struct sig_case *sc = &cases[ci];
		struct ev_log log = { 0 };
		struct storm_config cfg = { .max_ids = 4096, .max_keys = 1024,
				     .on_event = on_event, .user = &log };
		struct storm_tracker *t = storm_new(&cfg, &sc->r, 1);
		unsigned ups = 0, crossings = 0;

		if (!t) {
			fprintf(stderr, "case %zu (%s): storm_new failed\n", ci, sc->what);
			CHECK(t != NULL);
			continue;
		}
		for (int si = 0; si < 8 && sc->s[si].ts; si++) {
			const struct sig_step *s = &sc->s[si];
			struct storm_hits hits;
			struct txb b;
			struct storm_tx_summary *tx = mk(&b, s->ts * SEC, s->ip, s->from, s->rcpts,
							 sc->r.per == STORM_F_CLIENT_IP &&
							 sc->r.what == STORM_F_HELO ? NULL : s->status);
			const struct storm_hit *h;

			if (sc->r.what == STORM_F_HELO)
				tx->helo = s->status;
			tx->message_id = s->msgid;
			tx->body_hash = s->body;
			tx->auto_submitted = s->autosub;
			storm_observe(t, tx, &hits);
			h = hit_of(&hits, 0);
			if (s->hit < 0) {
				if (h)
					fprintf(stderr, "case %zu (%s) step %d: unexpected hit %g\n",
						ci, sc->what, si, h->value);
				CHECK(h == NULL);
			} else {
				if (!h || h->value < s->hit - 1e-9 || h->value > s->hit + 1e-9 ||
				    h->crossed != s->crossed)
					fprintf(stderr, "case %zu (%s) step %d: hit %g crossed %d, "
						"want %g crossed %d\n", ci, sc->what, si,
						h ? h->value : -1.0, h ? h->crossed : -1, s->hit,
						s->crossed);
				CHECK(h != NULL && h->value > s->hit - 1e-9 && h->value < s->hit + 1e-9);
				CHECK(h != NULL && h->crossed == s->crossed);
				CHECK(h != NULL && h->window_ns == sc->r.window_ns);
			}
			crossings += s->crossed;
			CHECK_EQ_U64(storm_validate(t), 0);
		}
		for (unsigned i = 0; i < log.n; i++)
			ups += log.e[i].ev.dir == STORM_UP;
		CHECK_EQ_U64(ups, crossings);
		storm_free(t);
	}
}

/* ---- thresholds up and down, event fields ---------------------------- */

static void test_crossings(void)
{
	struct storm_rule r = rule("FANOUT_CLIENT", STORM_DISTINCT, STORM_F_RCPT,
				   STORM_F_CLIENT_IP, 10 * SEC, 10, 3);
	struct ev_log log = { 0 };
	struct storm_config cfg = { .max_ids = 4096, .max_keys = 1024,
				     .on_event = on_event, .user = &log };
	struct storm_tracker *t = storm_new(&cfg, &r, 1);
	struct storm_hits hits;
	struct storm_stats st;
	const uint8_t ip[4] = { 192, 0, 2, 7 };
	struct txb b;
	char rc[32];

	/* 1 rcpt a second: the 4th crosses up at 3 s. */
	for (int i = 0; i < 8; i++) {
		snprintf(rc, sizeof(rc), "r%d@x", i);
		storm_observe(t, mk(&b, (uint64_t)i * SEC, "192.0.2.7", "s@x", rc, NULL), &hits);
		CHECK_EQ_U64(hits.n, i >= 3 ? 1 : 0);
	}
	CHECK_EQ_U64(log.n, 1);
	CHECK_EQ_U64(log.e[0].ev.dir, STORM_UP);
	CHECK_STR(log.e[0].rule, "FANOUT_CLIENT");
	CHECK_STR(log.e[0].key, "192.0.2.7");
	CHECK_EQ_U64(log.e[0].ev.value, 4);
	CHECK_EQ_U64(log.e[0].ev.window_ns, 10 * SEC);
	CHECK_EQ_U64(log.e[0].ev.first_seen_ns, 0);
	CHECK_EQ_U64(log.e[0].ev.last_seen_ns, 3 * SEC);
	CHECK_EQ_U64(log.e[0].ev.ts_ns, 3 * SEC);
	CHECK(storm_key_over(t, 0, ip, 4));
	/* Quiet: at 14 s buckets 0..4 have left, 3 remain (5, 6, 7): down. */
	for (uint64_t s = 8; s <= 20; s++)
		storm_advance(t, s * SEC, 1000);
	CHECK_EQ_U64(log.n, 2);
	CHECK_EQ_U64(log.e[1].ev.dir, STORM_DOWN);
	CHECK_EQ_U64(log.e[1].ev.value, 3);
	CHECK_EQ_U64(log.e[1].ev.ts_ns, 14 * SEC);
	CHECK_EQ_U64(log.e[1].ev.last_seen_ns, 7 * SEC);
	CHECK(!storm_key_over(t, 0, ip, 4));
	storm_get_stats(t, &st);
	CHECK_EQ_U64(st.events_up, 1);
	CHECK_EQ_U64(st.events_down, 1);
	CHECK_EQ_U64(st.keys, 0);
	CHECK_EQ_U64(storm_validate(t), 0);
	storm_free(t);
}

/* A key whose window rotated below its threshold while no advance ran: the
 * next transaction on it first gets the down event with the rotated value
 * (not its own count added), then an up if its data crosses again. The
 * events are the same whether or not storm_advance ran in between. */
static void test_down_before_update(void)
{
	struct storm_rule r = rule("DUP", STORM_COUNT, STORM_F_MESSAGE,
				   STORM_F_CLIENT_IP, 10 * SEC, 10, 3);
	for (int with_advance = 0; with_advance < 2; with_advance++) {
		struct ev_log log = { 0 };
		struct storm_config cfg = { .max_ids = 4096, .max_keys = 1024,
					     .on_event = on_event, .user = &log };
		struct storm_tracker *t = storm_new(&cfg, &r, 1);
		struct storm_hits hits;
		struct txb b;

		/* 4 messages at 0..3 s: over (4 > 3) at 3 s. */
		for (int i = 0; i < 4; i++)
			storm_observe(t, mk(&b, (uint64_t)i * SEC, "10.9.0.1", "s@x", "r@x", NULL),
				      &hits);
		CHECK_EQ_U64(log.n, 1);
		/* At 11.5 s buckets 0 and 1 have left: 2 remain, below. */
		if (with_advance)
			storm_advance(t, 11 * SEC + SEC / 2, 1000);
		storm_observe(t, mk(&b, 11 * SEC + SEC / 2, "10.9.0.1", "s@x", "r@x", NULL), &hits);
		CHECK_EQ_U64(log.n, 2);
		CHECK_EQ_U64(log.e[1].ev.dir, STORM_DOWN);
		CHECK_EQ_U64(log.e[1].ev.value, 2);
		CHECK_EQ_U64(log.e[1].ev.ts_ns, 11 * SEC + SEC / 2);
		CHECK_EQ_U64(hits.n, 0);   /* 3 in the window now: not over */
		/* One more in the same bucket crosses up again, at 4. */
		storm_observe(t, mk(&b, 11 * SEC + 9 * SEC / 10, "10.9.0.1", "s@x", "r@x", NULL), &hits);
		CHECK_EQ_U64(log.n, 3);
		CHECK_EQ_U64(log.e[2].ev.dir, STORM_UP);
		CHECK_EQ_U64(log.e[2].ev.value, 4);
		CHECK_EQ_U64(hits.n, 1);
		CHECK_EQ_U64(storm_validate(t), 0);
		storm_free(t);
	}
}

/* ---- id recycling under churn --------------------------------------- */

static void test_churn(void)
{
	struct storm_rule rules[3] = {
		rule("FAN", STORM_DISTINCT, STORM_F_RCPT, STORM_F_CLIENT_IP, 4 * SEC, 4, 5),
		rule("FANIN", STORM_DISTINCT, STORM_F_CLIENT_IP, STORM_F_RCPT, 4 * SEC, 4, 3),
		{ .name = "LIST", .kind = STORM_OVERLAP, .what = STORM_F_RCPT,
		  .per = STORM_F_MESSAGE_ID, .window_ns = 4 * SEC, .threshold = 0.5, .min = 2 },
	};
	/* A table far too small for the identities: ids churn constantly. */
	struct storm_config cfg = { .max_ids = 96, .max_keys = 1024, .intern_idle_ns = SEC };
	struct storm_tracker *t = storm_new(&cfg, rules, 3);
	struct storm_stats st;
	struct intern_stats is;
	unsigned seed = 7, bad = 0;
	struct txb b;

	for (int step = 0; step < 2000; step++) {
		char ip[32], rc[256] = "", mid[32];
		int n = 1 + rand_r(&seed) % 4;

		snprintf(ip, sizeof(ip), "10.1.%d.%d", rand_r(&seed) % 4, rand_r(&seed) % 50);
		for (int i = 0; i < n; i++) {
			char one[32];

			snprintf(one, sizeof(one), "%sr%d@x", i ? "," : "", rand_r(&seed) % 200);
			strcat(rc, one);
		}
		snprintf(mid, sizeof(mid), "<%d@x>", rand_r(&seed) % 30);
		mk(&b, (uint64_t)step * (SEC / 20), ip, "s@x", rc, NULL)->message_id = mid;
		storm_observe(t, &b.tx, NULL);
		if (step % 4 == 0)
			storm_advance(t, (uint64_t)step * (SEC / 20), 8);
		if (storm_validate(t) != 0)
			bad++;
	}
	CHECK_EQ_U64(bad, 0);
	storm_get_stats(t, &st);
	intern_get_stats(storm_intern(t), &is);
	CHECK(is.evicted_clock + is.expired_idle > 0);
	CHECK(st.intern_full > 0);   /* counted, never silent */
	storm_free(t);
}

/* ---- memory cap ------------------------------------------------------------- */

static void test_mem_cap(void)
{
	struct storm_rule r = rule("FAN", STORM_DISTINCT, STORM_F_RCPT, STORM_F_CLIENT_IP,
				   10 * MIN, 10, 2);
	struct storm_config cfg = { .max_ids = 1 << 14, .max_keys = 1 << 12 };
	struct storm_tracker *t;
	struct storm_stats st, st0;
	uint8_t hot[4] = { 172, 16, 0, 1 };
	struct txb b;

	/* Baseline: an empty tracker's own bytes, then a cap 64 KiB above. */
	t = storm_new(&cfg, &r, 1);
	storm_get_stats(t, &st0);
	storm_free(t);
	for (int policy = STORM_CAP_EVICT; policy <= STORM_CAP_REFUSE; policy++) {
		cfg.mem_cap = st0.capped_bytes + 256 * 1024;
		cfg.at_cap = policy;
		t = storm_new(&cfg, &r, 1);
		/* A key over threshold first: eviction prefers the others. */
		storm_observe(t, mk(&b, 0, "172.16.0.1", "s@x", "a@x,b@x,c@x", NULL), NULL);
		CHECK(storm_key_over(t, 0, hot, 4));
		for (int i = 0; i < 3000; i++) {
			char ip[32];

			snprintf(ip, sizeof(ip), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
			storm_observe(t, mk(&b, (uint64_t)i * 1000, ip, "s@x", "a@x", NULL), NULL);
		}
		storm_get_stats(t, &st);
		/* Over by at most what one transaction adds. */
		CHECK(st.capped_bytes <= cfg.mem_cap + 4096);
		CHECK(st.keys > 100);
		if (policy == STORM_CAP_EVICT) {
			CHECK(st.evicted_cap > 0);
			CHECK_EQ_U64(st.refused_cap, 0);
			CHECK(storm_key_over(t, 0, hot, 4));
		} else {
			CHECK(st.refused_cap > 0);
			CHECK_EQ_U64(st.evicted_cap, 0);
		}
		CHECK_EQ_U64(st.evicted_over, 0);
		CHECK_EQ_U64(storm_validate(t), 0);
		storm_free(t);
	}
	/* max_keys is a cap too. */
	cfg.mem_cap = 0;
	cfg.max_keys = 10;
	cfg.at_cap = STORM_CAP_REFUSE;
	t = storm_new(&cfg, &r, 1);
	for (int i = 0; i < 20; i++) {
		char ip[32];

		snprintf(ip, sizeof(ip), "10.0.0.%d", i);
		storm_observe(t, mk(&b, 0, ip, "s@x", "a@x", NULL), NULL);
	}
	storm_get_stats(t, &st);
	CHECK_EQ_U64(st.keys, 10);
	CHECK_EQ_U64(st.refused_keys, 10);
	storm_free(t);
}

/* ---- rule checks and names ------------------------------------------- */

static void test_rule_check(void)
{
	static const struct {
		struct storm_rule r;
		int ok;
	} cases[] = {
		{ { .name = "OK", .kind = STORM_COUNT, .what = STORM_F_MESSAGE,
		    .per = STORM_F_MESSAGE_ID, .window_ns = SEC, .threshold = 3 }, 1 },
		{ { .name = "NOKIND", .what = STORM_F_MESSAGE, .per = STORM_F_CLIENT_IP,
		    .window_ns = SEC }, 0 },
		{ { .name = "PER_EVENT", .kind = STORM_COUNT, .what = STORM_F_MESSAGE,
		    .per = STORM_F_NULL_SENDER, .window_ns = SEC }, 0 },
		{ { .name = "DIST_EVENT", .kind = STORM_DISTINCT, .what = STORM_F_NULL_SENDER,
		    .per = STORM_F_CLIENT_IP, .window_ns = SEC }, 0 },
		{ { .name = "DIST_SELF", .kind = STORM_DISTINCT, .what = STORM_F_RCPT,
		    .per = STORM_F_RCPT, .window_ns = SEC }, 0 },
		{ { .name = "NOWIN", .kind = STORM_COUNT, .what = STORM_F_RCPT,
		    .per = STORM_F_CLIENT_IP }, 0 },
		{ { .name = "BUCKETS", .kind = STORM_COUNT, .what = STORM_F_RCPT,
		    .per = STORM_F_CLIENT_IP, .window_ns = SEC, .buckets = 65 }, 0 },
		{ { .name = "OVL", .kind = STORM_OVERLAP, .what = STORM_F_CLIENT_IP,
		    .per = STORM_F_MESSAGE_ID, .window_ns = SEC, .threshold = 0.5 }, 0 },
		{ { .name = "OVL_THR", .kind = STORM_OVERLAP, .what = STORM_F_RCPT,
		    .per = STORM_F_MESSAGE_ID, .window_ns = SEC, .threshold = 2 }, 0 },
		{ { .name = "DENOM", .kind = STORM_COUNT, .what = STORM_F_RCPT,
		    .denom = STORM_F_MESSAGE, .per = STORM_F_CLIENT_IP, .window_ns = SEC }, 0 },
		{ { .name = "RATIO", .kind = STORM_RATIO, .what = STORM_F_NULL_SENDER,
		    .per = STORM_F_RCPT, .window_ns = SEC, .threshold = 0.5, .min = 10 }, 1 },
		{ { .name = NULL, .kind = STORM_COUNT, .what = STORM_F_RCPT,
		    .per = STORM_F_CLIENT_IP, .window_ns = SEC }, 0 },
	};
	struct storm_config cfg = { .max_ids = 4096, .max_keys = 1024 };
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = storm_rule_check(&cases[i].r, err, sizeof(err));

		CHECK_EQ_U64(rc == 0, cases[i].ok);
		if (!cases[i].ok)
			CHECK(strlen(err) > 0);
		if (cases[i].ok) {
			struct storm_tracker *t = storm_new(&cfg, &cases[i].r, 1);

			CHECK(t != NULL);
			storm_free(t);
		}
	}
	for (int f = STORM_F_NONE + 1; f < STORM_F_MAX; f++)
		CHECK_EQ_U64(storm_field_parse(storm_field_name(f)), f);
	for (int k = STORM_KIND_NONE + 1; k < STORM_KIND_MAX; k++)
		CHECK_EQ_U64(storm_kind_parse(storm_kind_name(k)), k);
	CHECK_EQ_U64(storm_field_parse("nonsense"), STORM_F_NONE);
	CHECK(storm_new(&cfg, &cases[1].r, 1) == NULL);
}

int main(void)
{
	test_rotation();
	test_lazy_and_late();
	test_random_union_n(70, 42);
	test_random_union_n(8, 7);
	test_random_union_n(20, 9);
	test_signals();
	test_crossings();
	test_down_before_update();
	test_churn();
	test_mem_cap();
	test_rule_check();
	return check_done();
}
