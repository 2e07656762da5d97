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
 * Usage: bench_storm [--ids 10000,1000000,10000000] [--batch N] [--reps R]
 *                    [--skew uniform|skewed|both]
 */
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "intern.h"
#include "mem.h"
#include "storm.h"

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

static uint64_t heap_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
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
	struct storm_stats st, st_end;
	struct intern_stats is;
	struct msg *ms;

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
		static struct storm_rule sel[N_RULES];
		size_t n_sel = 0;
		const char *e = getenv("BENCH_STORM_RULES");

		for (size_t i = 0; i < N_RULES; i++) {
			char tok[8];

			snprintf(tok, sizeof(tok), "%zu", i);
			if (!e || strstr(e, tok))
				sel[n_sel++] = rules[i];
		}
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
	{
		struct storm_stats sd;

		storm_get_stats(t, &sd);
		printf("%-8s %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %10" PRIu64 " %6" PRIu64
		       " %6" PRIu64 " %6" PRIu64 " %7" PRIu64 " %9.1f %9.1f %9.1f %9.1f %7" PRIu64
		       " %6" PRIu64 "\n",
		       skewed ? "skewed" : "uniform", ids, is.ids, st_end.keys, st_end.pairs,
		       ns[0], ns[reps / 2], ns[reps - 1], wall[reps / 2],
		       (double)st_end.bytes / (double)st_end.keys,
		       (double)(heap1 - heap0) / (double)st_end.keys,
		       (double)st_end.bytes / 1048576.0, (double)st.bytes / 1048576.0,
		       drained ? adv_ns / drained : 0, sd.keys);
		(void)keys_before;
	}
	fflush(stdout);
	storm_free(t);
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
	printf("# B/key: tracker estimate and allocator (mallinfo2) heap per key state; "
	       "MiB: tracker bytes after the batches and after warm-up\n");
	printf("%-8s %9s %9s %9s %10s %6s %6s %6s %7s %9s %9s %9s %9s %7s %6s\n",
	       "load", "ids_goal", "ids_live", "keys", "pairs", "ns_min", "ns_med", "ns_max",
	       "wall_md", "B/key_est", "B/key_heap", "MiB_end", "MiB_warm", "ns/expd", "left");
	for (unsigned i = 0; i < n_ids; i++) {
		if (skew != 1)
			run(idsv[i], false, batch, reps);
		if (skew != 0)
			run(idsv[i], true, batch, reps);
	}
	printf("# events emitted: %" PRIu64 "\n", n_events);
	return 0;
}
