/* workers: flows spread over worker threads (--workers N), as DESIGN.md's
 * "Scale inside a box" draws it.
 *
 * The receiving thread is worker 0. With software sorting (one receive
 * queue) it takes each burst, hashes every frame's TCP endpoints
 * (decode_flow_hash: the same for both directions, so a connection stays
 * on one worker) into one of WORKER_BUCKETS buckets, each owned by one
 * worker, hands the other workers' frames to them through one
 * single-producer/single-consumer ring each, then runs its own share. With
 * several receive queues (--rx-queues N) the port spreads the flows and
 * worker k polls queue k: nobody sorts.
 *
 * Every worker owns a whole pipeline (flow table, reassembly, SMTP, message
 * parsers, an output buffer) and a verdict of its own (Hyperscan scratch,
 * hits) on the rule set in force (struct verdict_set: the compiled rules,
 * shared read-only, and the storm tracker, shared under a lock once a set
 * has several contexts). The table-wide caps
 * (--max-flows, --reasm-memcap) are split evenly, so the whole stays within
 * them. Records of different workers interleave in the output (each record
 * is one write, never torn); one worker's records keep their order. With
 * N = 1 nothing changes: no ring, no thread, no lock.
 *
 * A work item borrows its frame: the worker that runs it frees the mbuf
 * when free_after is set (live traffic), and leaves it when not (frames a
 * replay holds for its next pass, or a test's plain buffers).
 *
 * Nothing here needs the EAL's memory: rings and worker structs come from
 * the C heap, so the unit tests drive workers without DPDK set up.
 */
#ifndef BW_WORKERS_H
#define BW_WORKERS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "output.h"
#include "pipeline.h"
#include "stage_clock.h"

struct capture;
struct rte_mbuf;
struct rte_ring;
struct run_info;
struct verdict;
struct verdict_set;

#define WORKERS_MAX 64
#define WORKER_RING 4096             /* frames queued per worker, at most */
#define WORKER_BUCKETS 1024          /* flow hash buckets, each owned by one worker */
#define WORKER_BURST 32              /* frames a worker takes at once */
#define WORKER_LINEAR_MAX (65536 + 512)  /* a segmented frame made contiguous, at most */

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
 * start, since moving a bucket would split the connections in it. A cost
 * of 1 or more leaves worker 0 no flows at all (the receive bench). */
#define WORKER_RX_COST 0.3
#define WORKER_RX_COST_RULES 0.15

struct work_item {
	const uint8_t *data;         /* the first segment's bytes */
	struct rte_mbuf *m;          /* owner (read when segmented, freed when free_after) */
	uint64_t ts_ns;
	uint32_t len;                /* frame length, all segments */
	uint8_t segmented;           /* more than one segment: made contiguous first */
	uint8_t free_after;          /* live: the worker frees m; replay: held frames */
	uint16_t pad;
};

struct workers;
struct worker;

struct workers_config {
	unsigned n;                  /* workers, 1..WORKERS_MAX */
	int linktype;                /* of the frames (decode_flow_hash) */
	bool live;                   /* a live port: the engine clock follows the wall
				      * clock when idle, and idle workers sleep */
	bool stage_times;            /* each worker runs its stage clock */
	double rx_cost;              /* worker 0's share is smaller by this (see above) */
	const struct capture *cap;   /* with several receive queues, worker k polls
				      * queue k; otherwise NULL or ignored */
	const struct pipeline_config *pcfg;  /* each worker's pipeline (caps split); NULL:
				      * no pipelines, run must be given */
	FILE *out;                   /* where records go (borrowed) */
	/* what a worker does with a batch of frames, on its own thread;
	 * NULL: each frame through the worker's pipeline */
	void (*run)(struct worker *w, const struct work_item *it, unsigned n);
};

struct worker {
	unsigned id;
	struct workers *ws;
	struct pipeline *pl;         /* NULL without pcfg */
	struct output out;           /* records: its own buffer, the shared stream */
	struct verdict *v;           /* its context on the rule set in force (NULL: none) */
	struct rte_ring *ring;       /* its queue (workers 1..N-1, software sorting) */
	pthread_t thread;
	bool started;
	uint64_t sent;               /* items queued to it (the receiving thread's count) */
	uint64_t done;               /* items it finished (written by it, atomically) */
	uint64_t packets;            /* frames it ran */
	uint64_t wait_cycles;        /* TSC cycles waiting: for work (1..N-1), for queue room (0) */
	uint8_t *linear;             /* a long frame made contiguous */
	struct work_item stage[WORKER_BURST];  /* the receiving thread's batch for it */
	unsigned nstage;
	/* its thread's counters, saved when it ends, for the summary */
	struct smtp_stats smtp;
	struct stage_clock clock;
	double cpu_s;
} __attribute__((aligned(64)));

/* Sets up cfg->n workers: pipelines (when cfg->pcfg), outputs, rings, no
 * thread yet and no rules. Returns the workers, or NULL with the reason in
 * err. The caller frees them with workers_free(). */
struct workers *workers_new(const struct workers_config *cfg, char *err, size_t errlen);

/* Puts the rule set s (from verdict_set_new(), or NULL: no scoring) in
 * force: each worker gets a context of its own on it (verdict_new), storm
 * events go to the workers' output, and, when the track rules are
 * unchanged, the running set's storm windows carry over (*kept_windows
 * true). Running workers are held at a burst boundary for the swap. The
 * workers own s after a success and free the set it replaces, with its
 * contexts. Returns 0, or -1 when out of memory (nothing changed, s still
 * the caller's). Call from the receiving thread. */
int workers_set_rules(struct workers *ws, struct verdict_set *s, bool *kept_windows);

/* The rule set in force (NULL: none). */
struct verdict_set *workers_rules(const struct workers *ws);

/* Starts the threads of workers 1..N-1. Returns 0, or -1 with the reason in
 * err (the workers already started stay; workers_stop ends them). */
int workers_start(struct workers *ws, char *err, size_t errlen);

/* Received mbufs as work items, freed by the worker that runs them. */
void workers_items_from_mbufs(const struct capture *cap, struct rte_mbuf **m,
			      struct work_item *it, unsigned n);

/* The receiving thread's part of a burst: sorts it by worker, queues the
 * other workers' frames (waiting for room: backpressure reaches the port,
 * which counts what it cannot hold) and runs worker 0's. With one worker or
 * per-queue receive, worker 0 runs them all. Returns how many frames it
 * handled (today all n: it waits for room rather than drop). */
unsigned workers_dispatch(struct workers *ws, const struct work_item *it, unsigned n);

/* Worker 0's housekeeping between bursts (flow expiry, storm windows); a
 * live source's idle flows expire on the wall clock. */
void workers_housekeeping(struct workers *ws);

/* Waits until every worker has finished what it was given (the end of a
 * replay pass). */
void workers_drain(struct workers *ws);

/* Holds every other running worker at its next burst boundary, and lets
 * them go again (a rule swap). */
void workers_pause(struct workers *ws);
void workers_resume(struct workers *ws);

/* Ends the run: no more frames; worker 0 flushes its flows, the other
 * workers drain their queues, flush theirs and end. Then their counters are
 * added into worker 0's pipeline and output, into this thread's smtp_stats
 * and stage clock, which the summary reads (peaks are summed: an upper
 * bound of the whole's peak), and ri gets the per-worker figures and the
 * workers' CPU time. */
void workers_stop(struct workers *ws, struct run_info *ri);

/* Worker k (k < N). */
struct worker *workers_worker(struct workers *ws, unsigned k);

/* The worker of a flow hash: its bucket's. */
unsigned workers_of_hash(const struct workers *ws, uint32_t h);

/* Frees everything, the rules in force included. Stops running workers
 * first (without a summary). NULL is fine. */
void workers_free(struct workers *ws);

#endif
