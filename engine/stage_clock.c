/* stage_clock: see stage_clock.h. */
#include "stage_clock.h"

#include <string.h>

__thread struct stage_clock stage_clock;

static const char *const stage_names[STAGE_MAX] = {
	[STAGE_OTHER] = "other",
	[STAGE_DECODE] = "decode",
	[STAGE_FLOW] = "flow",
	[STAGE_REASM] = "reassembly",
	[STAGE_SMTP] = "smtp",
	[STAGE_MESSAGE] = "message",
	[STAGE_MATCH] = "match",
	[STAGE_STORM] = "storm",
	[STAGE_OUTPUT] = "output",
};

const char *stage_name(enum stage s)
{
	return (unsigned)s < STAGE_MAX ? stage_names[s] : "?";
}

void stage_clock_start(void)
{
	memset(&stage_clock, 0, sizeof(stage_clock));
	stage_clock.cur = STAGE_OTHER;
	stage_clock.mark = rte_rdtsc();
	stage_clock.on = true;
}

void stage_clock_pause(void)
{
	if (!stage_clock.on)
		return;
	stage_enter(stage_clock.cur);
	stage_clock.changes--;   /* not a stage change */
	stage_clock.on = false;
}

void stage_clock_resume(void)
{
	stage_clock.mark = rte_rdtsc();
	stage_clock.on = true;
}

void stage_clock_add(struct stage_clock *into, const struct stage_clock *from)
{
	for (int s = 0; s < STAGE_MAX; s++)
		into->cycles[s] += from->cycles[s];
	into->changes += from->changes;
}

double stage_clock_change_ns(void)
{
	enum { N = 2000, BATCHES = 16 };
	uint64_t best = UINT64_MAX;

	stage_clock_start();
	for (int b = 0; b < BATCHES; b++) {
		uint64_t t0 = rte_rdtsc(), t1;

		for (int i = 0; i < N; i++)
			stage_enter(i & 1 ? STAGE_DECODE : STAGE_OTHER);
		t1 = rte_rdtsc();
		if (t1 - t0 < best)
			best = t1 - t0;
	}
	stage_clock_pause();
	return (double)best * 1e9 / (double)rte_get_tsc_hz() / N;
}
