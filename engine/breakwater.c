/* breakwater: command line, the capture loop, the summary.
 *
 *   breakwater --pcap FILE [options]     replay a capture through DPDK net_pcap
 *   breakwater --iface IF [options]      read a live interface (net_af_packet)
 *   breakwater --eal "ARGS" --port N     real NICs: raw EAL arguments
 *
 * Records go to stdout (or --output), one JSON object per line; progress,
 * warnings and the summary go to stderr. Exit 0 on success, 1 with a one-line
 * reason on failure, 2 on a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include "bw-config.h"
#include "capture.h"
#include "counters.h"
#include "decode.h"
#include "flow.h"
#include "match.h"
#include "mem.h"
#include "message.h"
#include "mime.h"
#include "output.h"
#include "pipeline.h"
#include "score.h"
#include "smtp.h"
#include "verdict.h"

#define MAX_RULE_DIRS 16

#define BURST 32
#define LINEAR_MAX 65536 + 512
#define REPLAY_MAX_PASSES 100000
#define REPLAY_MEM_DEFAULT (2ull << 30)
#define REPLAY_POOL_SLACK 1024      /* mbufs beyond the frames: a receive burst, caches */
#define REPLAY_PREFETCH 4           /* frames ahead whose first bytes are prefetched */

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reload_requested;

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		reload_requested = 1;
	else
		stop_requested = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: breakwater --pcap FILE [options]\n"
"       breakwater --iface IF [options]\n"
"       breakwater --eal \"EAL ARGS\" [--port N] [options]\n"
"       breakwater check-rules [DIR...]      parse and compile rules, print counts\n"
"       breakwater score [--rules DIR] [--json] FILE.eml...\n"
"\n"
"Follows the SMTP sessions in the traffic and writes one JSON record per line\n"
"on stdout; progress, warnings and the summary go to stderr.\n"
"\n"
"source:\n"
"  --pcap FILE            replay a capture (pcap or pcapng) through DPDK's net_pcap;\n"
"                         packet timestamps drive the engine clock\n"
"  --iface IF             read a live interface through DPDK's net_af_packet\n"
"  --eal ARGS             raw DPDK EAL arguments (real NICs), e.g.\n"
"                         --eal \"-l 2 -a 0000:03:00.0 -d /usr/lib/.../pmds-23.0\"\n"
"  --port N               the DPDK port to read with --eal (default 0)\n"
"output:\n"
"  -o, --output FILE      write records to FILE instead of stdout\n"
"  --flows                also write one record per flow\n"
"  --no-flows             no flow records (the default unless --no-smtp)\n"
"  --no-smtp              do not parse SMTP: follow streams only (flow records on)\n"
"  --dump-streams DIR     write each flow's reassembled bytes to DIR/<flow_id>.toserver\n"
"                         and DIR/<flow_id>.toclient (gap bytes are left out)\n"
"  -q, --quiet            no summary, no progress\n"
"  -v, --verbose          DPDK logs at info level\n"
"  --summary-json FILE    also write the summary's figures to FILE as one JSON object\n"
"                         (written with -q too)\n"
"benchmark:\n"
"  --replay N             with --pcap: receive the whole capture into memory once, then\n"
"                         run N passes over it, each as new flows (addresses moved,\n"
"                         timestamps shifted); the summary times the passes only\n"
"  --replay-mem SIZE      refuse --replay when holding the capture needs more [2G]\n"
"  --stage-times          time each stage (decode, flow, reassembly, smtp, message,\n"
"                         match, storm, output) with the TSC; a stages line in the summary\n"
"                         (with --workers: their clocks added up, waiting counted as other)\n"
"rules:\n"
"  --rules DIR            rule directory (*.cf in name order) or file; may be repeated\n"
"                         [the rules/ shipped with breakwater]\n"
"  --no-rules             do not score (records carry no score, action, hits)\n"
"                         SIGHUP reloads the rules without stopping traffic; a rule\n"
"                         file with an error is refused and the running rules stay\n"
"tuning (defaults in brackets):\n"
"  --workers N            worker threads; flows are spread over them by a hash of their\n"
"                         endpoints, the receiving thread is worker 0; --max-flows and\n"
"                         --reasm-memcap are split between them [1]\n"
"  --rx-queues N          1: the receiving thread sorts flows to the workers; N (the\n"
"                         number of workers): each worker reads a queue of its own, the\n"
"                         port spreads flows (--eal: NIC RSS with a symmetric key;\n"
"                         --iface: af_packet's kernel fanout) [1]\n"
"  --smtp-ports LIST      ports whose TCP flows are followed [25,587,2525]\n"
"  --tls-ports LIST       implicit-TLS ports, counted only [465]\n"
"  --max-flows N          flow table size; the least recently seen flow is evicted [262144]\n"
"  --flow-timeout SECS    idle timeout of an established flow [300]\n"
"  --stream-memcap SIZE   out-of-order bytes held per stream [1M]\n"
"  --reasm-memcap SIZE    out-of-order bytes held in total [256M]\n"
"  --no-checksum          do not verify IPv4/TCP checksums (they are counted, never dropped)\n"
"  --version              print the version\n");
}

static void die_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "breakwater: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see breakwater --help)\n");
	exit(2);
}

static uint64_t parse_size(const char *s, const char *opt)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno || v < 0)
		die_usage("bad size for %s", opt);
	switch (*end) {
	case 'k': case 'K': v *= 1024; end++; break;
	case 'm': case 'M': v *= 1024 * 1024; end++; break;
	case 'g': case 'G': v *= 1024.0 * 1024 * 1024; end++; break;
	default: break;
	}
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end)
		die_usage("bad size for %s", opt);
	return (uint64_t)v;
}

static uint64_t parse_uint(const char *s, const char *opt, uint64_t max)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (end == s || *end || errno || v > max)
		die_usage("bad number for %s", opt);
	return v;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of this thread (the worker): what the loop cost when the machine
 * is shared, beside its wall time. */
static double thread_cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Loads the rules of dirs, or the default rule directory when none is given.
 * Returns the rule set (the caller's), or NULL with err set on a rule error
 * (each error printed on stderr with file:line), or NULL with err empty when
 * no default rules exist. */
static struct verdict_set *load_rules(const char **dirs, int ndirs, char *err, size_t errlen)
{
	const char *def;

	err[0] = '\0';
	if (!ndirs) {
		def = verdict_default_rules_dir();
		if (!def) {
			fprintf(stderr, "breakwater: no rule directory found (give --rules DIR): "
				"records carry no score\n");
			return NULL;
		}
		dirs = &def;
		ndirs = 1;
	}
	return verdict_set_new((const char *const *)dirs, ndirs, stderr, err, errlen);
}

/* breakwater check-rules [DIR...]: like nginx -t. */
static int cmd_check_rules(int argc, const char **argv)
{
	const char *def;

	if (argc > 0 && (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0)) {
		printf("usage: breakwater check-rules [DIR|FILE...]\n"
		       "Parses and compiles the rules (default: the shipped rules/), prints the\n"
		       "counts, and exits non-zero when any rule has an error (file:line: reason).\n");
		return 0;
	}
	if (argc == 0) {
		def = verdict_default_rules_dir();
		if (!def) {
			fprintf(stderr, "breakwater: no rule directory found: give one\n");
			return 2;
		}
		return rules_check(&def, 1, stdout);
	}
	return rules_check(argv, argc, stdout);
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0;

	if (!f)
		return NULL;
	for (;;) {
		if (n == cap) {
			char *nb;

			cap = cap ? cap * 2 : 65536;
			nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		size_t got = fread(buf + n, 1, cap - n, f);

		n += got;
		if (got == 0)
			break;
	}
	fclose(f);
	*len = n;
	return buf;
}

/* breakwater score [--rules DIR]... [--json] FILE.eml...: like spamassassin -t. */
static int cmd_score(int argc, char **argv)
{
	static const struct option sopts[] = {
		{"rules", required_argument, NULL, 'r'},
		{"json", no_argument, NULL, 'j'},
		{"all-hits", no_argument, NULL, 'a'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *dirs[MAX_RULE_DIRS];
	int ndirs = 0, json = 0, all_hits = 0, c, rc = 0;
	struct verdict_set *rs;
	struct verdict *v;
	struct message_limits lim;
	char err[512];

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", sopts, NULL)) != -1) {
		switch (c) {
		case 'r':
			if (ndirs == MAX_RULE_DIRS)
				die_usage("too many --rules (at most %s)", "16");
			dirs[ndirs++] = optarg;
			break;
		case 'j': json = 1; break;
		case 'a': all_hits = 1; break;
		case 'h':
			printf("usage: breakwater score [--rules DIR]... [--json [--all-hits]] FILE.eml...\n"
			       "Scores each message file and prints its hits with their description\n"
			       "and score; --json prints one object per message instead, and\n"
			       "--all-hits adds \"subhits\": the rules that hit without a score of\n"
			       "their own (__sub-rules, zero scores) with their hit counts.\n");
			return 0;
		default:
			return 2;
		}
	}
	if (optind >= argc)
		die_usage("%s", "score: give at least one message file");
	rs = load_rules(dirs, ndirs, err, sizeof(err));
	if (!rs) {
		fprintf(stderr, "breakwater: %s\n", err[0] ? err : "no rules to score with");
		return 1;
	}
	v = verdict_new(rs);
	if (!v) {
		fprintf(stderr, "breakwater: out of memory\n");
		verdict_set_free(rs);
		return 1;
	}
	message_limits_default(&lim);
	for (int i = optind; i < argc; i++) {
		size_t len = 0;
		char *buf = read_file(argv[i], &len);
		struct message *m;
		const struct score_report *r;

		if (!buf) {
			fprintf(stderr, "breakwater: cannot read %s: %s\n", argv[i], strerror(errno));
			rc = 1;
			continue;
		}
		m = message_new(&lim, NULL, NULL);
		if (!m) {
			free(buf);
			fprintf(stderr, "breakwater: out of memory\n");
			rc = 1;
			break;
		}
		verdict_begin(v, m);    /* full rules: the raw message streamed */
		message_feed(m, (const uint8_t *)buf, len);
		message_end(m);
		r = verdict_message(v, m, NULL);
		if (json) {
			struct json j;

			json_init(&j);
			json_begin(&j);
			json_kv_cstr(&j, "file", argv[i]);
			output_score_json(&j, r, all_hits);
			json_end(&j);
			json_write(&j, stdout);
			json_free(&j);
		} else {
			printf("%s: %.1f points, action %s\n", argv[i], r->score,
			       r->action ? r->action : "pass");
			printf("%6s %-28s %s\n", "pts", "rule name", "description");
			printf("%6s %-28s %s\n", "----", "----------------------", "--------------------------------");
			for (uint32_t k = 0; k < r->nhits; k++) {
				const struct score_hit *e = &r->hits[k];

				printf("%6.1f %-28s %s\n", e->score, e->rule,
				       e->describe ? e->describe : "");
			}
			printf("\n");
		}
		message_free(m);
		free(buf);
	}
	verdict_free(v);
	verdict_set_free(rs);
	return rc;
}

/* --workers N: software RSS over N workers, as DESIGN.md's "Scale inside a
 * box" draws it. The receiving thread is worker 0: it takes each burst,
 * hashes every frame's TCP endpoints (decode_flow_hash: the same for both
 * directions, so a flow stays on one worker), hands the other workers'
 * frames to them through one single-producer/single-consumer ring each,
 * then runs its own share. Every worker owns a whole pipeline (flow table,
 * reassembly, SMTP, message parsers, an output buffer) and a verdict context
 * of its own (Hyperscan scratch, hits); the rule set (compiled rules) is
 * shared read-only and its storm tracker under a lock (verdict_new). The
 * table-wide caps (--max-flows, --reasm-memcap) are split evenly, so the
 * whole stays within them. Records of different workers interleave in the
 * output (each record is one write, never torn); one worker's records keep
 * their order. With N = 1 nothing changes: no ring, no thread, no lock. */
#define WORKERS_MAX 64
#define WORKER_RING 4096             /* frames queued per worker, at most */
#define WORKER_BUCKETS 1024          /* flow hash buckets, each owned by one worker */

struct work_item {
	const uint8_t *data;         /* the first segment's bytes */
	struct rte_mbuf *m;          /* owner (read when segmented, freed when live) */
	uint64_t ts_ns;
	uint32_t len;                /* frame length, all segments */
	uint8_t segmented;           /* more than one segment: made contiguous first */
	uint8_t free_after;          /* live: the worker frees m; replay: held frames */
	uint16_t pad;
};

struct workers;

struct worker {
	unsigned id;
	struct workers *ws;
	struct pipeline *pl;
	struct output out;           /* records: its own buffer, the shared stream */
	struct verdict *v;           /* its verdict context (NULL: no rules) */
	struct rte_ring *ring;       /* its queue (workers 1..N-1) */
	pthread_t thread;
	bool started;
	uint64_t sent;               /* items queued to it (the receiving thread's count) */
	uint64_t done;               /* items it finished (written by it, atomically) */
	uint64_t packets;            /* frames it ran */
	uint64_t wait_cycles;        /* TSC cycles waiting: for work (1..N-1), for queue room (0) */
	uint8_t *linear;             /* a long frame made contiguous */
	struct work_item stage[BURST];  /* the receiving thread's batch for it */
	unsigned nstage;
	/* its thread's counters, saved when it ends, for the summary */
	struct smtp_stats smtp;
	struct stage_clock clock;
	double cpu_s;
} __rte_cache_aligned;

struct workers {
	unsigned n;
	struct worker *w;
	struct capture *cap;         /* per-queue mode: worker k polls queue k */
	bool per_queue;              /* the port spreads flows (--rx-queues N): no rings */
	bool live;
	bool stage_times;
	int stop;                    /* atomic: no more frames; drain, finish, end */
	int pause;                   /* atomic: hold at the next burst (rule swap) */
	int paused;                  /* atomic: workers holding */
	struct output storm_out;     /* storm records when N > 1 (written under the storm lock) */
	uint8_t bucket[WORKER_BUCKETS];  /* the top bits of a flow hash -> worker */
};

/* How much of a worker's packet work receiving and sorting a packet costs
 * the receiving thread (worker 0), as a share. Measured on the benchmark's
 * SMTP capture read through net_pcap, 2 workers: without rules the
 * summary's waiting times balance (neither waits) between 0.25 and 0.4
 * (--stage-times with one worker puts receiving, "other", at about a
 * quarter of the rest); with the shipped rules/, whose matching makes each
 * packet's work about 2.5 times longer, at about 0.15. Worker 0 gets that
 * much less of the flows, so it does not hold the others back; without
 * rules, from 5 workers on it only receives and sorts. Heavier rule sets
 * (the stock SpamAssassin rules) would want less: the share is fixed at
 * start, since moving a bucket would split the connections in it. */
#define WORKER_RX_COST 0.3
#define WORKER_RX_COST_RULES 0.15

static void workers_assign(struct workers *ws, double rx_cost)
{
	double s0 = (1.0 - (double)(ws->n - 1) * rx_cost) / (double)ws->n;
	unsigned n0 = ws->n == 1 ? WORKER_BUCKETS : s0 > 0 ? (unsigned)(s0 * WORKER_BUCKETS + 0.5) : 0;

	for (unsigned b = 0; b < WORKER_BUCKETS; b++)
		ws->bucket[b] = b < n0 ? 0 : (uint8_t)(1 + (b - n0) % (ws->n - 1));
}

/* Received mbufs as work items: freed by the worker that runs them. */
static void items_from_mbufs(const struct capture *cap, struct rte_mbuf **m,
			     struct work_item *it, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		it[i].data = rte_pktmbuf_mtod(m[i], const uint8_t *);
		it[i].m = m[i];
		it[i].ts_ns = capture_ts_ns(cap, m[i]);
		it[i].len = rte_pktmbuf_pkt_len(m[i]);
		/* a frame larger than one mbuf is made contiguous */
		it[i].segmented = m[i]->nb_segs > 1;
		it[i].free_after = 1;
	}
}

/* Runs a batch of frames through w's pipeline (on w's thread). */
static void worker_run(struct worker *w, const struct work_item *it, unsigned n)
{
	struct rte_mbuf *fm[BURST];
	unsigned nf = 0;

	for (unsigned i = 0; i < n; i++) {
		const uint8_t *data = it[i].data;
		uint32_t len = it[i].len;

		if (it[i].segmented) {
			if (len > LINEAR_MAX)
				len = LINEAR_MAX;
			data = rte_pktmbuf_read(it[i].m, 0, len, w->linear);
		}
		if (i + 1 < n)
			rte_prefetch0(it[i + 1].data);
		pipeline_packet(w->pl, data, len, it[i].ts_ns);
		if (it[i].free_after)
			fm[nf++] = it[i].m;
	}
	w->packets += n;
	if (nf)
		rte_pktmbuf_free_bulk(fm, nf);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct workers *ws = w->ws;
	struct work_item it[BURST];
	unsigned idle = 0;
	double cpu0 = thread_cpu_s();

	/* an lcore id of its own: mempool caches for the mbufs it frees (and,
	 * per queue, receives); without one (all taken) it still works */
	(void)rte_thread_register();
	if (ws->stage_times)
		stage_clock_start();
	for (;;) {
		uint64_t t0 = rte_rdtsc();
		unsigned n;

		if (ws->per_queue) {
			struct rte_mbuf *m[BURST];

			n = capture_rx_queue(ws->cap, (uint16_t)w->id, m, BURST);
			items_from_mbufs(ws->cap, m, it, n);
		} else {
			n = rte_ring_sc_dequeue_burst_elem(w->ring, it, sizeof(it[0]), BURST, NULL);
		}

		if (n) {
			worker_run(w, it, n);
			__atomic_store_n(&w->done, w->done + n, __ATOMIC_RELEASE);
		}
		if (ws->live && w->pl->now < wall_ns())
			w->pl->now = wall_ns();   /* idle flows still expire on a quiet link */
		if (n || ws->live)
			pipeline_housekeeping(w->pl);
		if (__atomic_load_n(&ws->pause, __ATOMIC_ACQUIRE)) {
			__atomic_add_fetch(&ws->paused, 1, __ATOMIC_ACQ_REL);
			while (__atomic_load_n(&ws->pause, __ATOMIC_ACQUIRE))
				rte_pause();
			__atomic_sub_fetch(&ws->paused, 1, __ATOMIC_ACQ_REL);
		}
		if (n) {
			idle = 0;
			continue;
		}
		if (__atomic_load_n(&ws->stop, __ATOMIC_ACQUIRE) &&
		    (ws->per_queue || rte_ring_empty(w->ring)))
			break;
		if (ws->live)
			usleep(50);
		else if (++idle < 1024)
			rte_pause();
		else
			sched_yield();   /* more workers than CPUs: let the others run */
		w->wait_cycles += rte_rdtsc() - t0;
	}
	pipeline_finish(w->pl);
	stage_clock_pause();
	rte_thread_unregister();
	w->smtp = smtp_stats;
	w->clock = stage_clock;
	w->cpu_s = thread_cpu_s() - cpu0;
	mime_conv_cache_flush();     /* this thread's converters */
	return NULL;
}

/* The worker of a frame: its flow hash's bucket's. */
static inline unsigned worker_of(const struct workers *ws, uint32_t h)
{
	return ws->bucket[h / (UINT32_MAX / WORKER_BUCKETS + 1)];
}

/* The receiving thread's part of a burst: sorts it by worker, queues the
 * other workers' frames (waiting for room: backpressure reaches the port,
 * which counts what it cannot hold) and runs worker 0's. */
static void dispatch(struct workers *ws, const struct work_item *it, unsigned n, int link)
{
	struct worker *w0 = &ws->w[0];

	if (ws->n == 1 || ws->per_queue) {
		worker_run(w0, it, n);   /* the port sorted the flows */
		return;
	}
	for (unsigned i = 0; i < n; i++) {
		uint32_t hl = it[i].segmented ? rte_pktmbuf_data_len(it[i].m) : it[i].len;
		struct worker *w = &ws->w[worker_of(ws, decode_flow_hash(it[i].data, hl, link))];

		w->stage[w->nstage++] = it[i];
	}
	for (unsigned k = 1; k < ws->n; k++) {
		struct worker *w = &ws->w[k];
		unsigned q = 0;

		while (q < w->nstage) {
			q += rte_ring_sp_enqueue_burst_elem(w->ring, w->stage + q, sizeof(w->stage[0]),
							    w->nstage - q, NULL);
			if (q < w->nstage) {
				uint64_t t0 = rte_rdtsc();

				rte_pause();
				w0->wait_cycles += rte_rdtsc() - t0;
			}
		}
		w->sent += w->nstage;
		w->nstage = 0;
	}
	worker_run(w0, w0->stage, w0->nstage);
	w0->nstage = 0;
}

/* Waits until every worker has finished what it was given (the end of a
 * replay pass). */
static void workers_drain(struct workers *ws)
{
	for (unsigned k = 1; k < ws->n; k++)
		while (__atomic_load_n(&ws->w[k].done, __ATOMIC_ACQUIRE) != ws->w[k].sent)
			rte_pause();
}

/* Holds every other worker at its next burst boundary (a rule swap), and
 * lets them go again. */
static void workers_pause(struct workers *ws)
{
	__atomic_store_n(&ws->pause, 1, __ATOMIC_RELEASE);
	while (__atomic_load_n(&ws->paused, __ATOMIC_ACQUIRE) != (int)ws->n - 1)
		rte_pause();
}

static void workers_resume(struct workers *ws)
{
	__atomic_store_n(&ws->pause, 0, __ATOMIC_RELEASE);
}

/* After the workers ended: their counters added into worker 0's (and this
 * thread's smtp_stats and stage clock), which the summary reads. Peaks are
 * summed: an upper bound of the whole's peak. */
static void workers_merge(struct workers *ws)
{
	struct worker *w0 = &ws->w[0];
	struct pipeline *p0 = w0->pl;

	for (unsigned k = 1; k < ws->n; k++) {
		struct worker *w = &ws->w[k];
		uint64_t bits = p0->stats.message_anomalies | w->pl->stats.message_anomalies;

		COUNTERS_ADD(&p0->stats, &w->pl->stats);
		p0->stats.message_anomalies = bits;   /* a union of bits, not a count */
		COUNTERS_ADD(&p0->dstats, &w->pl->dstats);
		COUNTERS_ADD(&p0->reasm.stats, &w->pl->reasm.stats);
		flow_table_add_stats(p0->flows, flow_table_stats(w->pl->flows));
		COUNTERS_ADD(&smtp_stats, &w->smtp);
		w0->out.records += w->out.records;
		w0->out.write_errors += w->out.write_errors;
		if (w0->v && w->v)
			verdict_merge_stats(w0->v, w->v);
		stage_clock_add(&stage_clock, &w->clock);
	}
	if (ws->n > 1) {
		w0->out.records += ws->storm_out.records;
		w0->out.write_errors += ws->storm_out.write_errors;
	}
}

/* A rule reload compiles on its own thread, off the packet path; the
 * receiving thread swaps the new rules in between two bursts and frees the
 * old ones. With one worker it is the only user, so no grace period is
 * needed; with several, the others are held at their next burst boundary
 * for the swap (workers_pause: a reload is rare, the hold is the time to
 * make N scratch spaces). A reload with any rule error is refused and the
 * running rules stay. */
struct reload {
	pthread_t thread;
	bool running;
	int done;                    /* set by the thread (atomic) */
	const char **dirs;
	int ndirs;
	struct verdict_set *result;
	char err[512];
};

static void *reload_main(void *arg)
{
	struct reload *r = arg;

	r->result = load_rules(r->dirs, r->ndirs, r->err, sizeof(r->err));
	__atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void reload_start(struct reload *r)
{
	r->done = 0;
	r->result = NULL;
	r->err[0] = '\0';
	if (pthread_create(&r->thread, NULL, reload_main, r) != 0) {
		fprintf(stderr, "breakwater: reload: cannot start a thread; the running rules stay\n");
		return;
	}
	r->running = true;
	fprintf(stderr, "breakwater: SIGHUP: reloading the rules\n");
}

/* Storm records, charged to the output stage (--stage-times). */
static void storm_sink(void *o, const struct storm_event *ev)
{
	unsigned prev = stage_enter(STAGE_OUTPUT);

	output_storm_record(o, ev);
	stage_enter(prev);
}

/* Where storm records go: worker 0's output with one worker; with
 * several, an output of their own (written under the tracker's lock). */
static struct output *storm_output(struct workers *ws)
{
	return ws->n > 1 ? &ws->storm_out : &ws->w[0].out;
}

/* Gives each worker a verdict context on the rule set s (no rules, s NULL:
 * NULL for all). Returns 0, or -1 when out of memory (nothing changed). */
static int workers_make_verdicts(struct workers *ws, struct verdict_set *s, struct verdict **out)
{
	if (!s) {
		for (unsigned k = 0; k < ws->n; k++)
			out[k] = NULL;
		return 0;
	}
	for (unsigned k = 0; k < ws->n; k++) {
		out[k] = verdict_new(s);
		if (!out[k]) {
			while (k--)
				verdict_free(out[k]);
			return -1;
		}
	}
	return 0;
}

/* Swaps in a finished reload's rules. Returns the rule set in force. */
static struct verdict_set *reload_finish(struct reload *r, struct workers *ws,
					 struct verdict_set *cur)
{
	struct verdict_set *nv;
	struct verdict *nw[WORKERS_MAX];

	if (!r->running || !__atomic_load_n(&r->done, __ATOMIC_ACQUIRE))
		return cur;
	pthread_join(r->thread, NULL);
	r->running = false;
	nv = r->result;
	if (!nv) {
		fprintf(stderr, "breakwater: reload refused, the running rules stay: %s\n",
			r->err[0] ? r->err : "no rules found");
		return cur;
	}
	if (workers_make_verdicts(ws, nv, nw) != 0) {
		fprintf(stderr, "breakwater: reload refused, the running rules stay: out of memory\n");
		verdict_set_free(nv);
		return cur;
	}
	if (ws->n > 1)
		workers_pause(ws);
	if (cur && verdict_set_adopt_storm(nv, cur))
		fprintf(stderr, "breakwater: rules reloaded (track rules unchanged: windows kept)\n");
	else
		fprintf(stderr, "breakwater: rules reloaded (track rules changed: windows start anew)\n");
	verdict_set_event_sink(nv, storm_sink, storm_output(ws));
	for (unsigned k = 0; k < ws->n; k++) {
		struct verdict *old = ws->w[k].v;

		ws->w[k].v = nw[k];
		ws->w[k].pl->verdict = nw[k];
		verdict_free(old);   /* its messages in flight lose their full rules */
	}
	verdict_set_free(cur);
	if (ws->n > 1)
		workers_resume(ws);
	return nv;
}

/* Between bursts: starts a reload SIGHUP asked for, swaps in one that is done. */
static struct verdict_set *reload_poll(struct reload *r, struct workers *ws,
				       struct verdict_set *cur)
{
	if (reload_requested && !r->running) {
		reload_requested = 0;
		reload_start(r);
	}
	if (r->running)
		cur = reload_finish(r, ws, cur);
	return cur;
}

/* --replay: the capture held in memory and what the passes took. */
struct replay {
	unsigned passes;             /* 0: not a replay */
	uint64_t mem_cap;
	struct capture_file_info fi;
	struct capture_store st;
	uint32_t stride;
	uint64_t shift_ns;
	double load_s, rewrite_s;
	double *pass_s;
	double cpu_s;                /* thread CPU time of the passes */
};

/* Runs rp->passes passes over the held frames. Pass k sees every address
 * moved by k strides (rewritten before the pass starts, outside its time)
 * and every timestamp shifted by k * (span + 1 s + the longest track window); each pass's time goes to
 * rp->pass_s. Returns the rule set in force (a reload may swap it). */
static struct verdict_set *replay_passes(struct replay *rp, struct workers *ws, int linktype,
					 struct verdict_set *verdict, struct reload *reload,
					 bool stage_times, bool progress)
{
	struct pipeline *pl = ws->w[0].pl;
	const struct capture_frame *fr = rp->st.f;
	uint64_t n = rp->st.n;
	double t_last_progress = 0;

	for (unsigned k = 0; k < rp->passes && !stop_requested; k++) {
		uint64_t ts_add = (uint64_t)k * rp->shift_ns;
		double t0;

		if (k) {
			t0 = mono_s();
			capture_store_shift(&rp->st, linktype, rp->stride);
			rp->rewrite_s += mono_s() - t0;
		}
		if (stage_times)
			stage_clock_resume();
		t0 = mono_s();
		rp->cpu_s -= thread_cpu_s();
		for (uint64_t i = 0; i < n && !stop_requested; i += BURST) {
			uint64_t end = i + BURST < n ? i + BURST : n;

			struct work_item it[BURST];

			verdict = reload_poll(reload, ws, verdict);
			for (uint64_t j = i; j < end; j++) {
				struct work_item *x = &it[j - i];

				x->data = fr[j].data;
				x->m = fr[j].m;
				x->ts_ns = fr[j].ts_ns + ts_add;
				x->len = fr[j].len;
				/* a frame larger than one mbuf is made contiguous */
				x->segmented = fr[j].seg_len < fr[j].len;
				x->free_after = 0;   /* held for the next pass */
				if (j + REPLAY_PREFETCH < n)
					rte_prefetch0(fr[j + REPLAY_PREFETCH].data);
			}
			dispatch(ws, it, (unsigned)(end - i), linktype);
			pipeline_housekeeping(pl);
			if (progress && (i & 0x3ff) == 0) {
				double t = mono_s();

				if (t - t_last_progress > 0.5) {
					t_last_progress = t;
					fprintf(stderr, "\r  pass %u/%u  %5.1f%%   ", k + 1,
						rp->passes, 100.0 * (double)i / (double)(n ? n : 1));
				}
			}
		}
		workers_drain(ws);   /* the pass ends when every worker is done with it */
		rp->pass_s[k] = mono_s() - t0;
		rp->cpu_s += thread_cpu_s();
		if (stage_times)
			stage_clock_pause();
	}
	if (progress && t_last_progress > 0)
		fprintf(stderr, "\r%60s\r", "");
	return verdict;
}

enum {
	OPT_PCAP = 256, OPT_IFACE, OPT_EAL, OPT_PORT, OPT_FLOWS, OPT_NO_FLOWS, OPT_DUMP,
	OPT_SMTP_PORTS, OPT_TLS_PORTS, OPT_MAX_FLOWS, OPT_FLOW_TIMEOUT, OPT_STREAM_MEMCAP,
	OPT_REASM_MEMCAP, OPT_NO_CSUM, OPT_VERSION, OPT_NO_SMTP, OPT_RULES, OPT_NO_RULES,
	OPT_REPLAY, OPT_REPLAY_MEM, OPT_STAGE_TIMES, OPT_SUMMARY_JSON, OPT_WORKERS,
	OPT_RX_QUEUES,
};

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"pcap", required_argument, NULL, OPT_PCAP},
		{"iface", required_argument, NULL, OPT_IFACE},
		{"eal", required_argument, NULL, OPT_EAL},
		{"port", required_argument, NULL, OPT_PORT},
		{"output", required_argument, NULL, 'o'},
		{"flows", no_argument, NULL, OPT_FLOWS},
		{"no-flows", no_argument, NULL, OPT_NO_FLOWS},
		{"no-smtp", no_argument, NULL, OPT_NO_SMTP},
		{"rules", required_argument, NULL, OPT_RULES},
		{"no-rules", no_argument, NULL, OPT_NO_RULES},
		{"dump-streams", required_argument, NULL, OPT_DUMP},
		{"quiet", no_argument, NULL, 'q'},
		{"verbose", no_argument, NULL, 'v'},
		{"smtp-ports", required_argument, NULL, OPT_SMTP_PORTS},
		{"tls-ports", required_argument, NULL, OPT_TLS_PORTS},
		{"max-flows", required_argument, NULL, OPT_MAX_FLOWS},
		{"flow-timeout", required_argument, NULL, OPT_FLOW_TIMEOUT},
		{"stream-memcap", required_argument, NULL, OPT_STREAM_MEMCAP},
		{"reasm-memcap", required_argument, NULL, OPT_REASM_MEMCAP},
		{"no-checksum", no_argument, NULL, OPT_NO_CSUM},
		{"replay", required_argument, NULL, OPT_REPLAY},
		{"replay-mem", required_argument, NULL, OPT_REPLAY_MEM},
		{"stage-times", no_argument, NULL, OPT_STAGE_TIMES},
		{"summary-json", required_argument, NULL, OPT_SUMMARY_JSON},
		{"workers", required_argument, NULL, OPT_WORKERS},
		{"rx-queues", required_argument, NULL, OPT_RX_QUEUES},
		{"version", no_argument, NULL, OPT_VERSION},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct capture_config ccfg = { .prog = argv[0] };
	struct pipeline_config pcfg;
	struct capture cap;
	struct pipeline *pl;
	struct workers ws = { .n = 1 };
	unsigned nworkers = 1, rx_queues = 1;
	struct verdict *wv[WORKERS_MAX];
	struct run_info ri;
	const char *out_path = NULL;
	FILE *out_f = stdout;
	char err[512];
	int c, quiet = 0, nsrc = 0, flows_opt = -1, nrule_dirs = 0, no_rules = 0;
	const char *rule_dirs[MAX_RULE_DIRS];
	struct verdict_set *verdict = NULL;
	struct reload reload = { .running = false };
	double t_start = mono_s(), t_loop, t_last_progress = 0, cpu_loop;
	uint64_t file_bytes = 0, rx_frames = 0, bursts = 0;
	bool progress, live, stage_times = false;
	struct replay rp = { .passes = 0, .mem_cap = REPLAY_MEM_DEFAULT };
	const char *json_path = NULL;
	FILE *json_f = NULL;
	double change_ns = 0;

	if (argc > 1 && strcmp(argv[1], "check-rules") == 0)
		return cmd_check_rules(argc - 2, (const char **)argv + 2);
	if (argc > 1 && strcmp(argv[1], "score") == 0)
		return cmd_score(argc - 1, argv + 1);
	pipeline_config_default(&pcfg);
	while ((c = getopt_long(argc, argv, "o:qvh", opts, NULL)) != -1) {
		switch (c) {
		case OPT_PCAP: ccfg.source = CAPTURE_PCAP; ccfg.pcap_path = optarg; nsrc++; break;
		case OPT_IFACE: ccfg.source = CAPTURE_IFACE; ccfg.iface = optarg; nsrc++; break;
		case OPT_EAL: ccfg.source = CAPTURE_EAL; ccfg.eal_args = optarg; nsrc++; break;
		case OPT_PORT: ccfg.port_id = (uint16_t)parse_uint(optarg, "--port", 65535); break;
		case 'o': out_path = optarg; break;
		case OPT_FLOWS: flows_opt = 1; break;
		case OPT_NO_FLOWS: flows_opt = 0; break;
		case OPT_NO_SMTP: pcfg.smtp = false; pcfg.tx_records = false; break;
		case OPT_RULES:
			if (nrule_dirs == MAX_RULE_DIRS)
				die_usage("too many --rules (at most %s)", "16");
			rule_dirs[nrule_dirs++] = optarg;
			break;
		case OPT_NO_RULES: no_rules = 1; break;
		case OPT_DUMP: pcfg.dump_dir = optarg; break;
		case 'q': quiet = 1; break;
		case 'v': ccfg.verbose++; break;
		case OPT_SMTP_PORTS:
			if (flow_parse_ports(optarg, pcfg.flow.smtp_ports, &pcfg.flow.n_smtp_ports))
				die_usage("bad port list for --smtp-ports: %s", optarg);
			break;
		case OPT_TLS_PORTS:
			if (flow_parse_ports(optarg, pcfg.flow.tls_ports, &pcfg.flow.n_tls_ports))
				die_usage("bad port list for --tls-ports: %s", optarg);
			break;
		case OPT_MAX_FLOWS:
			pcfg.flow.max_flows = (uint32_t)parse_uint(optarg, "--max-flows", 1u << 28);
			if (!pcfg.flow.max_flows)
				die_usage("%s must be at least 1", "--max-flows");
			break;
		case OPT_FLOW_TIMEOUT:
			pcfg.flow.timeout_ns[FLOW_ESTABLISHED] =
				parse_uint(optarg, "--flow-timeout", 86400) * 1000000000ull;
			break;
		case OPT_STREAM_MEMCAP:
			pcfg.reasm.flow_memcap = (uint32_t)parse_size(optarg, "--stream-memcap");
			break;
		case OPT_REASM_MEMCAP:
			pcfg.reasm.global_memcap = parse_size(optarg, "--reasm-memcap");
			break;
		case OPT_NO_CSUM: pcfg.decode.verify_checksums = false; break;
		case OPT_REPLAY:
			rp.passes = (unsigned)parse_uint(optarg, "--replay", REPLAY_MAX_PASSES);
			if (!rp.passes)
				die_usage("%s must be at least 1", "--replay");
			break;
		case OPT_REPLAY_MEM: rp.mem_cap = parse_size(optarg, "--replay-mem"); break;
		case OPT_STAGE_TIMES: stage_times = true; break;
		case OPT_SUMMARY_JSON: json_path = optarg; break;
		case OPT_RX_QUEUES:
			rx_queues = (unsigned)parse_uint(optarg, "--rx-queues", WORKERS_MAX);
			if (!rx_queues)
				die_usage("%s must be at least 1", "--rx-queues");
			break;
		case OPT_WORKERS:
			nworkers = (unsigned)parse_uint(optarg, "--workers", WORKERS_MAX);
			if (!nworkers)
				die_usage("%s must be at least 1", "--workers");
			break;
		case OPT_VERSION: printf("breakwater %s\n", BW_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc)
		die_usage("unexpected argument: %s", argv[optind]);
	pcfg.flow_records = flows_opt >= 0 ? flows_opt : !pcfg.smtp;
	if (nsrc != 1)
		die_usage("%s", nsrc ? "give only one of --pcap, --iface, --eal"
				     : "nothing to read: give --pcap FILE or --iface IF");
	if (rp.passes && ccfg.source != CAPTURE_PCAP)
		die_usage("%s", "--replay replays a capture file: give --pcap FILE");
	if (rx_queues > 1 && rx_queues != nworkers)
		die_usage("%s", "--rx-queues is 1 (flows sorted in software) or the number of --workers");
	if (rx_queues > 1 && ccfg.source == CAPTURE_PCAP)
		die_usage("%s", "--rx-queues: a capture file is read on one queue");
	ccfg.rx_queues = (uint16_t)rx_queues;
	if (rx_queues == 1 && !rp.passes)
		/* frames waiting in the workers' queues hold mbufs */
		ccfg.extra_mbufs = (nworkers - 1) * (WORKER_RING + BURST + 256);
	if (pcfg.dump_dir) {
		struct stat st;

		if (mkdir(pcfg.dump_dir, 0755) != 0 && errno != EEXIST) {
			fprintf(stderr, "breakwater: cannot create %s: %s\n", pcfg.dump_dir, strerror(errno));
			return 1;
		}
		if (stat(pcfg.dump_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
			fprintf(stderr, "breakwater: %s is not a directory\n", pcfg.dump_dir);
			return 1;
		}
	}
	if (out_path) {
		out_f = fopen(out_path, "w");
		if (!out_f) {
			fprintf(stderr, "breakwater: cannot write %s: %s\n", out_path, strerror(errno));
			return 1;
		}
	}
	setvbuf(out_f, NULL, _IOFBF, 1 << 20);
	if (json_path) {
		json_f = fopen(json_path, "w");
		if (!json_f) {
			fprintf(stderr, "breakwater: cannot write %s: %s\n", json_path, strerror(errno));
			return 1;
		}
	}
	if (rp.passes) {
		/* count the frames first, to size a pool that holds them all */
		uint16_t room;
		uint64_t mbufs, need;
		char b1[32], b2[32];

		if (capture_file_scan(ccfg.pcap_path, &rp.fi, err, sizeof(err)) != 0) {
			fprintf(stderr, "breakwater: %s\n", err);
			return 1;
		}
		capture_store_plan(&rp.fi, &room, &mbufs, &need);
		if (need > rp.mem_cap || mbufs + REPLAY_POOL_SLACK > UINT32_MAX) {
			snprintf(b1, sizeof(b1), "%.1f MiB", (double)need / (1 << 20));
			snprintf(b2, sizeof(b2), "%.1f MiB", (double)rp.mem_cap / (1 << 20));
			fprintf(stderr, "breakwater: --replay: %s does not fit in memory: its %llu frames "
				"need %llu mbufs of %u bytes, %s in all, more than --replay-mem %s "
				"(raise --replay-mem or use a smaller capture)\n", ccfg.pcap_path,
				(unsigned long long)rp.fi.frames, (unsigned long long)mbufs, room, b1, b2);
			return 1;
		}
		ccfg.nb_mbufs = (unsigned)(mbufs + REPLAY_POOL_SLACK);
		ccfg.mbuf_data_room = room;
		rp.pass_s = calloc(rp.passes, sizeof(*rp.pass_s));
		if (!rp.pass_s) {
			fprintf(stderr, "breakwater: out of memory\n");
			return 1;
		}
	}

	if (pcfg.smtp && pcfg.tx_records && !no_rules) {
		verdict = load_rules(rule_dirs, nrule_dirs, err, sizeof(err));
		if (!verdict && err[0]) {
			fprintf(stderr, "breakwater: %s\n", err);
			return 1;
		}
	}

	if (capture_open(&cap, &ccfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "breakwater: %s\n", err);
		return 1;
	}
	if (!decode_link_supported(cap.linktype)) {
		fprintf(stderr, "breakwater: %s: link type %d is not supported "
			"(Ethernet, Linux cooked v1/v2, BSD loopback and raw IP are)\n",
			ccfg.pcap_path ? ccfg.pcap_path : ccfg.iface, cap.linktype);
		capture_close(&cap);
		return 1;
	}
	ws.n = nworkers;
	ws.cap = &cap;
	ws.per_queue = cap.nb_rxq > 1;
	ws.live = ccfg.source != CAPTURE_PCAP;
	ws.stage_times = stage_times;
	workers_assign(&ws, verdict ? WORKER_RX_COST_RULES : WORKER_RX_COST);
	ws.w = rte_zmalloc("bw_workers", nworkers * sizeof(*ws.w), RTE_CACHE_LINE_SIZE);
	if (!ws.w || workers_make_verdicts(&ws, verdict, wv) != 0) {
		fprintf(stderr, "breakwater: out of memory setting up %u workers\n", nworkers);
		capture_close(&cap);
		return 1;
	}
	if (nworkers > 1) {
		/* the table-wide caps are split, so the whole stays within them */
		pcfg.flow.max_flows = (pcfg.flow.max_flows + nworkers - 1) / nworkers;
		pcfg.reasm.global_memcap /= nworkers;
		output_init(&ws.storm_out, out_f);
	}
	for (unsigned k = 0; k < nworkers; k++) {
		struct worker *w = &ws.w[k];
		char name[32];

		w->id = k;
		w->ws = &ws;
		w->v = wv[k];
		output_init(&w->out, out_f);
		w->pl = pipeline_new(&pcfg, cap.linktype, &w->out);
		w->linear = malloc(LINEAR_MAX);
		snprintf(name, sizeof(name), "bw_worker%u", k);
		if (k && !ws.per_queue)
			w->ring = rte_ring_create_elem(name, sizeof(struct work_item), WORKER_RING,
						       (int)rte_socket_id(), RING_F_SP_ENQ | RING_F_SC_DEQ);
		if (!w->pl || !w->linear || (k && !ws.per_queue && !w->ring)) {
			fprintf(stderr, "breakwater: out of memory setting up worker %u\n", k);
			capture_close(&cap);
			return 1;
		}
		w->pl->verdict = w->v;
	}
	pl = ws.w[0].pl;
	if (verdict)
		verdict_set_event_sink(verdict, storm_sink, storm_output(&ws));
	if (rp.passes) {
		double t0 = mono_s();

		if (capture_load(&cap, &rp.st, rp.fi.frames, err, sizeof(err)) != 0 ||
		    capture_store_stride(&rp.st, cap.linktype, rp.passes, &rp.stride) != 0) {
			fprintf(stderr, "breakwater: --replay: %s\n", err[0] ? err :
				"no address step keeps the passes apart");
			capture_store_free(&rp.st);
			pipeline_free(pl);
			capture_close(&cap);
			return 1;
		}
		rp.load_s = mono_s() - t0;
		/* Passes apart by more than the longest track window: each
		 * pass starts with the storm windows of the previous one
		 * expired, so passes are the same work, not one growing storm. */
		rp.shift_ns = rp.st.ts_max - rp.st.ts_min + 1000000000ull +
			      verdict_set_max_window_ns(verdict);
	}
	if (stage_times)
		change_ns = stage_clock_change_ns();
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (verdict)
		signal(SIGHUP, on_signal);
	reload.dirs = rule_dirs;
	reload.ndirs = nrule_dirs;
	live = ccfg.source != CAPTURE_PCAP;
	progress = !quiet && isatty(STDERR_FILENO);

	if (stage_times)
		stage_clock_start();
	for (unsigned k = 1; k < nworkers; k++) {
		if (pthread_create(&ws.w[k].thread, NULL, worker_main, &ws.w[k]) != 0) {
			fprintf(stderr, "breakwater: cannot start worker %u\n", k);
			return 1;
		}
		ws.w[k].started = true;
	}
	if (rp.passes) {
		stage_clock_pause();
		verdict = replay_passes(&rp, &ws, cap.linktype, verdict, &reload,
					stage_times, progress);
	}
	t_loop = mono_s();
	cpu_loop = thread_cpu_s();
	while (!stop_requested && !rp.passes) {
		struct rte_mbuf *m[BURST];
		struct work_item it[BURST];
		uint16_t n = capture_rx(&cap, m, BURST);

		verdict = reload_poll(&reload, &ws, verdict);

		items_from_mbufs(&cap, m, it, n);
		for (uint16_t i = 0; i < n; i++)
			file_bytes += it[i].len + 16;
		if (n)
			dispatch(&ws, it, n, cap.linktype);
		if (live && pl->now < wall_ns())
			pl->now = wall_ns();   /* idle flows still expire on a quiet link */
		pipeline_housekeeping(pl);
		if (!n) {
			if (capture_eof(&cap))
				break;
			if (live)
				usleep(50);
		}
		rx_frames += n;
		if (progress && (++bursts & 63) == 0) {
			double t = mono_s();

			if (t - t_last_progress > 0.5) {
				t_last_progress = t;
				/* what was received: with several workers some is still queued */
				if (cap.file_size)
					fprintf(stderr, "\r  %5.1f%%  %llu packets  %.2f Gbit/s   ",
						100.0 * (double)file_bytes / (double)cap.file_size,
						(unsigned long long)rx_frames,
						(double)(file_bytes - 16 * rx_frames) * 8 / (t - t_loop) / 1e9);
				else
					fprintf(stderr, "\r  %llu packets   ",
						(unsigned long long)rx_frames);
			}
		}
	}
	if (progress && t_last_progress > 0)
		fprintf(stderr, "\r%60s\r", "");
	if (reload.running) {
		/* let a reload in flight finish, so its thread and memory end cleanly */
		pthread_join(reload.thread, NULL);
		reload.running = false;
		verdict_set_free(reload.result);
	}
	if (rp.passes && stage_times)
		stage_clock_resume();
	__atomic_store_n(&ws.stop, 1, __ATOMIC_RELEASE);
	pipeline_finish(pl);
	memset(&ri, 0, sizeof(ri));
	for (unsigned k = 1; k < nworkers; k++)
		if (ws.w[k].started) {
			pthread_join(ws.w[k].thread, NULL);
			ri.engine_cpu_s += ws.w[k].cpu_s;
		}
	stage_clock_pause();
	workers_merge(&ws);
	ri.workers = nworkers;
	for (unsigned k = 0; k < nworkers && k < RUN_INFO_WORKERS; k++) {
		ri.worker_packets[k] = ws.w[k].packets;
		ri.worker_wait_s[k] = (double)ws.w[k].wait_cycles / (double)rte_get_tsc_hz();
	}
	ri.engine_s = mono_s() - t_loop;
	ri.engine_cpu_s += thread_cpu_s() - cpu_loop + rp.cpu_s;
	if (rp.passes) {
		ri.finish_s = ri.engine_s;
		for (unsigned k = 0; k < rp.passes; k++)
			ri.engine_s += rp.pass_s[k];
		ri.passes = rp.passes;
		ri.replay_frames = rp.st.n;
		ri.replay_bytes = rp.st.bytes;
		ri.replay_mbufs = rp.st.mbufs;
		ri.replay_pool_bytes = rp.st.pool_bytes;
		ri.load_s = rp.load_s;
		ri.rewrite_s = rp.rewrite_s;
		ri.pass_s = rp.pass_s;
		ri.replay_stride = rp.stride;
		ri.replay_shift_ns = rp.shift_ns;
	}
	if (stage_times) {
		ri.tsc_hz = rte_get_tsc_hz();
		ri.stage_change_ns = change_ns;
	}
	ri.source = ccfg.pcap_path ? ccfg.pcap_path : ccfg.iface ? ccfg.iface : "eal";
	{
		uint64_t ipk;

		capture_port_stats(&cap, &ipk, &ri.port_missed, &ri.port_errors, &ri.port_nombuf);
	}
	fflush(out_f);
	if (ferror(out_f)) {
		fprintf(stderr, "breakwater: writing records failed\n");
		return 1;
	}
	ri.wall_s = mono_s() - t_start;
	if (!quiet)
		output_summary(stderr, pl, &ws.w[0].out, &ri);
	if (json_f) {
		int jerr = output_summary_json(json_f, pl, &ws.w[0].out, &ri);

		if (fclose(json_f) != 0 || jerr) {
			fprintf(stderr, "breakwater: writing %s failed\n", json_path);
			return 1;
		}
	}
	for (unsigned k = 0; k < nworkers; k++) {
		struct worker *w = &ws.w[k];

		pipeline_free(w->pl);
		verdict_free(w->v);   /* every context before the set */
		output_fini(&w->out);
		rte_ring_free(w->ring);
		free(w->linear);
	}
	verdict_set_free(verdict);
	if (nworkers > 1)
		output_fini(&ws.storm_out);
	rte_free(ws.w);
	if (out_f != stdout)
		fclose(out_f);
	capture_store_free(&rp.st);
	free(rp.pass_s);
	capture_close(&cap);
	return 0;
}
