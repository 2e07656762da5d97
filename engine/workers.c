/* workers: see workers.h. */
#include "workers.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_pause.h>
#include <rte_prefetch.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "capture.h"
#include "clocks.h"
#include "counters.h"
#include "decode.h"
#include "mime.h"
#include "smtp.h"
#include "summary.h"
#include "verdict.h"

struct workers {
	unsigned n;
	struct worker *w;
	const struct capture *cap;   /* per-queue mode: worker k polls queue k */
	int linktype;
	bool per_queue;              /* the port spreads flows (--rx-queues N): no rings */
	bool live;
	bool stage_times;
	void (*run)(struct worker *w, const struct work_item *it, unsigned n);
	struct verdict_set *rules;   /* the rule set in force (NULL: none) */
	int stop;                    /* atomic: no more frames; drain, finish, end */
	int pause;                   /* atomic: hold at the next burst (rule swap) */
	int paused;                  /* atomic: workers holding */
	bool stopped;
	struct output storm_out;     /* storm records when N > 1 (written under the storm lock) */
	uint8_t bucket[WORKER_BUCKETS];  /* the top bits of a flow hash -> worker */
};

/* Worker 0 owns fewer buckets, by what receiving costs it; the rest go
 * round-robin to the others. */
static void assign_buckets(struct workers *ws, double rx_cost)
{
	double s0 = (1.0 - (double)(ws->n - 1) * rx_cost) / (double)ws->n;
	unsigned n0 = ws->n == 1 ? WORKER_BUCKETS : s0 > 0 ? (unsigned)(s0 * WORKER_BUCKETS + 0.5) : 0;

	for (unsigned b = 0; b < WORKER_BUCKETS; b++)
		ws->bucket[b] = b < n0 ? 0 : (uint8_t)(1 + (b - n0) % (ws->n - 1));
}

unsigned workers_of_hash(const struct workers *ws, uint32_t h)
{
	return ws->bucket[h / (UINT32_MAX / WORKER_BUCKETS + 1)];
}

void workers_items_from_mbufs(const struct capture *cap, struct rte_mbuf **m,
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

/* The engine's work: a batch of frames through w's pipeline. */
static void run_pipeline(struct worker *w, const struct work_item *it, unsigned n)
{
	struct rte_mbuf *fm[WORKER_BURST];
	unsigned nf = 0;

	for (unsigned i = 0; i < n; i++) {
		const uint8_t *data = it[i].data;
		uint32_t len = it[i].len;

		if (it[i].segmented) {
			if (len > WORKER_LINEAR_MAX)
				len = WORKER_LINEAR_MAX;
			data = rte_pktmbuf_read(it[i].m, 0, len, w->linear);
		}
		if (i + 1 < n)
			rte_prefetch0(it[i + 1].data);
		pipeline_packet(w->pl, data, len, it[i].ts_ns);
		if (it[i].free_after)
			fm[nf++] = it[i].m;
	}
	if (nf)
		rte_pktmbuf_free_bulk(fm, nf);
}

static void worker_run(struct worker *w, const struct work_item *it, unsigned n)
{
	w->ws->run(w, it, n);
	w->packets += n;
}

/* Follows the wall clock on a live source, then the bounded housekeeping. */
static void worker_housekeeping(const struct workers *ws, struct worker *w, bool busy)
{
	if (!w->pl)
		return;
	if (ws->live && w->pl->now < clock_wall_ns())
		w->pl->now = clock_wall_ns();   /* idle flows still expire on a quiet link */
	if (busy || ws->live)
		pipeline_housekeeping(w->pl);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct workers *ws = w->ws;
	struct work_item it[WORKER_BURST];
	unsigned idle = 0;
	double cpu0 = clock_thread_cpu_s();

	/* an lcore id of its own: mempool caches for the mbufs it frees (and,
	 * per queue, receives); without one (all taken, or no EAL) it still
	 * works */
	(void)rte_thread_register();
	if (ws->stage_times)
		stage_clock_start();
	for (;;) {
		uint64_t t0 = rte_rdtsc();
		unsigned n;

		if (ws->per_queue) {
			struct rte_mbuf *m[WORKER_BURST];

			n = capture_rx_queue(ws->cap, (uint16_t)w->id, m, WORKER_BURST);
			workers_items_from_mbufs(ws->cap, m, it, n);
		} else {
			n = rte_ring_sc_dequeue_burst_elem(w->ring, it, sizeof(it[0]), WORKER_BURST, NULL);
		}

		if (n) {
			worker_run(w, it, n);
			__atomic_store_n(&w->done, w->done + n, __ATOMIC_RELEASE);
		}
		worker_housekeeping(ws, w, n != 0);
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
	if (w->pl)
		pipeline_finish(w->pl);
	stage_clock_pause();
	rte_thread_unregister();
	w->smtp = smtp_stats;
	w->clock = stage_clock;
	w->cpu_s = clock_thread_cpu_s() - cpu0;
	mime_conv_cache_flush();     /* this thread's converters */
	return NULL;
}

unsigned workers_dispatch(struct workers *ws, const struct work_item *it, unsigned n)
{
	struct worker *w0 = &ws->w[0];

	if (ws->n == 1 || ws->per_queue) {
		worker_run(w0, it, n);   /* the port sorted the flows */
		return n;
	}
	for (unsigned i = 0; i < n; i++) {
		uint32_t hl = it[i].segmented ? rte_pktmbuf_data_len(it[i].m) : it[i].len;
		struct worker *w = &ws->w[workers_of_hash(ws, decode_flow_hash(it[i].data, hl,
									      ws->linktype))];

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
	if (w0->nstage)
		worker_run(w0, w0->stage, w0->nstage);
	w0->nstage = 0;
	return n;
}

void workers_housekeeping(struct workers *ws)
{
	worker_housekeeping(ws, &ws->w[0], true);
}

void workers_drain(struct workers *ws)
{
	for (unsigned k = 1; k < ws->n; k++)
		while (__atomic_load_n(&ws->w[k].done, __ATOMIC_ACQUIRE) != ws->w[k].sent)
			rte_pause();
}

void workers_pause(struct workers *ws)
{
	int running = 0;

	for (unsigned k = 1; k < ws->n; k++)
		running += ws->w[k].started;
	__atomic_store_n(&ws->pause, 1, __ATOMIC_RELEASE);
	while (__atomic_load_n(&ws->paused, __ATOMIC_ACQUIRE) != running)
		rte_pause();
}

void workers_resume(struct workers *ws)
{
	__atomic_store_n(&ws->pause, 0, __ATOMIC_RELEASE);
}

/* Storm records, charged to the output stage (--stage-times). */
static void storm_sink(void *o, const struct storm_event *ev)
{
	unsigned prev = stage_enter(STAGE_OUTPUT);

	output_storm_record(o, ev);
	stage_enter(prev);
}

/* Gives each worker a context on the set s (NULL: none). Returns 0, or -1
 * when out of memory (nothing changed). */
static int make_contexts(struct workers *ws, struct verdict_set *s, struct verdict **out)
{
	for (unsigned k = 0; k < ws->n; k++) {
		out[k] = s ? verdict_new(s) : NULL;
		if (s && !out[k]) {
			while (k--)
				verdict_free(out[k]);
			return -1;
		}
	}
	return 0;
}

int workers_set_rules(struct workers *ws, struct verdict_set *s, bool *kept_windows)
{
	struct verdict *nw[WORKERS_MAX];
	struct verdict_set *old = ws->rules;

	*kept_windows = false;
	/* contexts are made while the old set's still scan: the new set has
	 * none of them, so its tracker is not shared yet */
	if (make_contexts(ws, s, nw) != 0)
		return -1;
	workers_pause(ws);
	if (old && s)
		*kept_windows = verdict_set_adopt_storm(s, old);
	if (s)
		verdict_set_event_sink(s, storm_sink, ws->n > 1 ? &ws->storm_out : &ws->w[0].out);
	for (unsigned k = 0; k < ws->n; k++) {
		struct verdict *prev = ws->w[k].v;

		ws->w[k].v = nw[k];
		if (ws->w[k].pl)
			ws->w[k].pl->verdict = nw[k];
		verdict_free(prev);   /* every context before its set */
	}
	verdict_set_free(old);
	ws->rules = s;
	workers_resume(ws);
	return 0;
}

struct verdict_set *workers_rules(const struct workers *ws)
{
	return ws->rules;
}

struct workers *workers_new(const struct workers_config *cfg, char *err, size_t errlen)
{
	struct pipeline_config pcfg;
	struct workers *ws;
	unsigned n = cfg->n;

	if (n < 1 || n > WORKERS_MAX) {
		snprintf(err, errlen, "workers: %u is not between 1 and %d", n, WORKERS_MAX);
		return NULL;
	}
	if (!cfg->pcfg && !cfg->run) {
		snprintf(err, errlen, "workers: neither a pipeline nor a run function");
		return NULL;
	}
	ws = calloc(1, sizeof(*ws));
	if (!ws)
		goto fail_oom;
	ws->n = n;
	ws->cap = cfg->cap;
	ws->per_queue = cfg->cap && cfg->cap->nb_rxq > 1;
	ws->linktype = cfg->linktype;
	ws->live = cfg->live;
	ws->stage_times = cfg->stage_times;
	ws->run = cfg->run ? cfg->run : run_pipeline;
	assign_buckets(ws, cfg->rx_cost);
	ws->w = aligned_alloc(64, n * sizeof(*ws->w));
	if (!ws->w)
		goto fail_oom;
	memset(ws->w, 0, n * sizeof(*ws->w));
	if (cfg->pcfg) {
		pcfg = *cfg->pcfg;
		/* the table-wide caps are split, so the whole stays within them */
		pcfg.flow.max_flows = (pcfg.flow.max_flows + n - 1) / n;
		pcfg.reasm.global_memcap /= n;
	}
	output_init(&ws->storm_out, cfg->out);
	for (unsigned k = 0; k < n; k++) {
		struct worker *w = &ws->w[k];

		w->id = k;
		w->ws = ws;
		output_init(&w->out, cfg->out);
		if (cfg->pcfg) {
			w->pl = pipeline_new(n > 1 ? &pcfg : cfg->pcfg, cfg->linktype, &w->out);
			w->linear = malloc(WORKER_LINEAR_MAX);
			if (!w->pl || !w->linear)
				goto fail_worker;
		}
		if (k && !ws->per_queue) {
			ssize_t sz = rte_ring_get_memsize_elem(sizeof(struct work_item), WORKER_RING);
			char name[32];

			if (sz < 0)
				goto fail_worker;
			w->ring = aligned_alloc(64, ((size_t)sz + 63) & ~(size_t)63);
			snprintf(name, sizeof(name), "bw_worker%u", k);
			if (!w->ring || rte_ring_init(w->ring, name, WORKER_RING,
						      RING_F_SP_ENQ | RING_F_SC_DEQ) != 0)
				goto fail_worker;
		}
	}
	return ws;

fail_worker:
	workers_free(ws);
	snprintf(err, errlen, "out of memory setting up %u workers", n);
	return NULL;
fail_oom:
	free(ws);
	snprintf(err, errlen, "out of memory setting up %u workers", n);
	return NULL;
}

int workers_start(struct workers *ws, char *err, size_t errlen)
{
	if (ws->stage_times)
		stage_clock_start();
	for (unsigned k = 1; k < ws->n; k++) {
		int rc = pthread_create(&ws->w[k].thread, NULL, worker_main, &ws->w[k]);

		if (rc != 0) {
			snprintf(err, errlen, "cannot start worker %u: %s", k, strerror(rc));
			return -1;
		}
		ws->w[k].started = true;
	}
	return 0;
}

/* After the workers ended: their counters added into worker 0's. */
static void merge(struct workers *ws)
{
	struct worker *w0 = &ws->w[0];

	for (unsigned k = 1; k < ws->n; k++) {
		struct worker *w = &ws->w[k];

		if (w0->pl && w->pl)
			pipeline_add_counters(w0->pl, w->pl);
		COUNTERS_ADD(&smtp_stats, &w->smtp);
		w0->out.records += w->out.records;
		w0->out.write_errors += w->out.write_errors;
		if (w0->v && w->v)
			verdict_merge_stats(w0->v, w->v);
		stage_clock_add(&stage_clock, &w->clock);
	}
	/* the storm event counts are the set's: verdict_get_stats() reads them */
	if (ws->n > 1) {
		w0->out.records += ws->storm_out.records;
		w0->out.write_errors += ws->storm_out.write_errors;
	}
}

void workers_stop(struct workers *ws, struct run_info *ri)
{
	if (ws->stopped)
		return;
	ws->stopped = true;
	__atomic_store_n(&ws->stop, 1, __ATOMIC_RELEASE);
	if (ws->w[0].pl)
		pipeline_finish(ws->w[0].pl);
	for (unsigned k = 1; k < ws->n; k++)
		if (ws->w[k].started) {
			pthread_join(ws->w[k].thread, NULL);
			ws->w[k].started = false;
			if (ri)
				ri->engine_cpu_s += ws->w[k].cpu_s;
		}
	stage_clock_pause();
	if (!ri)
		return;
	merge(ws);
	ri->workers = ws->n;
	for (unsigned k = 0; k < ws->n && k < RUN_INFO_WORKERS; k++) {
		uint64_t hz = rte_get_tsc_hz();   /* 0 without the EAL (unit tests) */

		ri->worker_packets[k] = ws->w[k].packets;
		ri->worker_wait_s[k] = hz ? (double)ws->w[k].wait_cycles / (double)hz : 0;
	}
}

struct worker *workers_worker(struct workers *ws, unsigned k)
{
	return &ws->w[k];
}

void workers_free(struct workers *ws)
{
	if (!ws)
		return;
	workers_stop(ws, NULL);
	for (unsigned k = 0; k < ws->n; k++) {
		struct worker *w = &ws->w[k];

		pipeline_free(w->pl);
		verdict_free(w->v);   /* every context before its set */
		output_fini(&w->out);
		free(w->ring);
		free(w->linear);
	}
	verdict_set_free(ws->rules);
	output_fini(&ws->storm_out);
	free(ws->w);
	free(ws);
}
