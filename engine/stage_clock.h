/* stage_clock: where a worker's time goes, stage by stage (--stage-times).
 *
 * TSC cycles spent in each pipeline stage, exclusive (a stage called from
 * another, e.g. SMTP from reassembly's data callback, is charged to itself,
 * not to its caller). One clock per thread: each worker charges its own,
 * and the summary adds them up. Each stage change reads the TSC once; while
 * the clock is off a change costs one predictable branch. STAGE_OTHER is
 * everything outside the pipeline's calls (receive, freeing mbufs, the loop
 * itself).
 *
 * A header of its own, below every stage: decode, reassembly, SMTP,
 * message, verdict and output all charge it, and none of them needs the
 * pipeline for that.
 */
#ifndef BW_STAGE_CLOCK_H
#define BW_STAGE_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include <rte_cycles.h>

enum stage {
	STAGE_OTHER,
	STAGE_DECODE,
	STAGE_FLOW,                  /* lookup, creation, expiry, ends */
	STAGE_REASM,                 /* TCP reassembly */
	STAGE_SMTP,                  /* session parsing */
	STAGE_MESSAGE,               /* message (MIME) parsing */
	STAGE_MATCH,                 /* content rules: views, scans, scoring */
	STAGE_STORM,                 /* behaviour tracking (track rules) */
	STAGE_OUTPUT,                /* records formatted and written */
	STAGE_MAX
};

struct stage_clock {
	bool on;
	uint8_t cur;                 /* stage being charged */
	uint64_t mark;               /* TSC at the last change */
	uint64_t cycles[STAGE_MAX];
	uint64_t changes;            /* stage changes while on (TSC reads) */
};

extern __thread struct stage_clock stage_clock;

/* Charges the time since the last change to the current stage and makes s
 * current. Returns the stage that was current, to go back to it. */
static inline unsigned stage_enter(unsigned s)
{
	struct stage_clock *c = &stage_clock;
	unsigned prev;
	uint64_t t;

	if (__builtin_expect(!c->on, 1))
		return STAGE_OTHER;
	t = rte_rdtsc();
	prev = c->cur;
	c->cycles[prev] += t - c->mark;
	c->mark = t;
	c->cur = (uint8_t)s;
	c->changes++;
	return prev;
}

/* Zeroes this thread's clock and starts it in STAGE_OTHER. */
void stage_clock_start(void);
/* Stops charging (the time since the last change goes to the current
 * stage), e.g. around untimed work; resume restarts from now. */
void stage_clock_pause(void);
void stage_clock_resume(void);
/* Adds from's cycles and changes into into (several workers' clocks). */
void stage_clock_add(struct stage_clock *into, const struct stage_clock *from);
/* The cost of one stage change with the clock on (a TSC read and the
 * bookkeeping), in ns: the best of a few short batches, so a preemption
 * does not count. Restarts this thread's clock and leaves it stopped. */
double stage_clock_change_ns(void);
/* Short stable name of a stage ("decode"), for the summary. */
const char *stage_name(enum stage s);

#endif
