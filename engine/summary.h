/* summary: the end-of-run figures, for a person (stderr) and for scripts
 * (--summary-json).
 *
 * It reads the counters where they live: worker 0's pipeline and output,
 * into which the other workers' were added when they ended (workers_stop),
 * its verdict's, this thread's SMTP counters and stage clock; struct
 * run_info carries what only the driver knows (times, the source, the
 * workers' shares, the replay's passes).
 */
#ifndef BW_SUMMARY_H
#define BW_SUMMARY_H

#include <stdint.h>
#include <stdio.h>

struct output;
struct pipeline;

struct run_info {
	const char *source;          /* file or interface */
	double wall_s;               /* whole run, set-up included */
	double engine_s;             /* time spent in the packet loop */
	double engine_cpu_s;         /* the workers' CPU time in it, all added */
	unsigned workers;            /* --workers (counters are their sums) */
#define RUN_INFO_WORKERS 64
	uint64_t worker_packets[RUN_INFO_WORKERS];  /* frames each worker ran */
	double worker_wait_s[RUN_INFO_WORKERS];     /* waiting: 0 for queue room, the others for work */
	uint64_t port_missed, port_errors, port_nombuf;
	/* --stage-times: stage_clock holds the cycles (0: no stage figures) */
	uint64_t tsc_hz;
	double stage_change_ns;      /* measured cost of one stage change (a TSC read) */
	/* --replay: passes over the capture held in memory (0: not a replay) */
	unsigned passes;
	uint64_t replay_frames, replay_bytes, replay_mbufs, replay_pool_bytes;
	double load_s;               /* receiving the capture into memory */
	double rewrite_s;            /* address rewriting between passes (untimed) */
	const double *pass_s;        /* each pass's packet loop time */
	double finish_s;             /* the end-of-run flush, part of engine_s */
	uint32_t replay_stride;      /* added to addresses per pass */
	uint64_t replay_shift_ns;    /* added to timestamps per pass */
};

/* Writes the human summary of a run to f (stderr). */
void summary_print(FILE *f, const struct pipeline *pl, const struct output *o,
		   const struct run_info *ri);

/* The same figures as one JSON object (--summary-json), for scripts.
 * Returns 0, or -1 on a write error. */
int summary_json(FILE *f, const struct pipeline *pl, const struct output *o,
		 const struct run_info *ri);

#endif
