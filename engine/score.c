/* score: see score.h. */
#include "score.h"

#include <stdint.h>
#include <string.h>

#include "match.h"
#include "rules.h"

void score_hits(const struct rule_set *rs, struct match_hits *h)
{
	double score = 0;

	for (uint32_t i = 0; i < rs->nmeta_order; i++) {
		uint32_t id = rs->meta_order[i];

		if (rs->rules[id].test != RULE_TEST_META)
			continue;
		if (rules_meta_eval(rs, id, h->count) != 0.0)
			match_hits_add(h, id, 1);
	}
	for (uint32_t i = 0; i < h->nlist; i++) {
		const struct rule *r = &rs->rules[h->list[i]];

		if (r->scored && r->skip == RULE_SKIP_NONE)
			score += r->score;
	}
	/* round like SpamAssassin reports (to 0.001) so sums are stable */
	h->score = (double)(int64_t)(score * 1000.0 + (score < 0 ? -0.5 : 0.5)) / 1000.0;
	h->action = rules_action_for(rs, h->score);
}

enum score_action score_action_kind(const char *action)
{
	if (!action)
		return SCORE_ACTION_NONE;
	if (strcmp(action, "pass") == 0)
		return SCORE_ACTION_PASS;
	if (strcmp(action, "tag") == 0)
		return SCORE_ACTION_TAG;
	if (strcmp(action, "block") == 0)
		return SCORE_ACTION_BLOCK;
	return SCORE_ACTION_OTHER;
}

/* Whether hit id is reported (a record lists it): a scored rule with a
 * score; __sub-rules and zero scores only feed metas. */
static bool reported(const struct rule_set *rs, uint32_t id)
{
	return id < rs->nrules && rs->rules[id].scored && rs->rules[id].score != 0;
}

/* o: hit id of h as reports show it (not a behaviour hit). */
static void hit_fill(struct score_hit *o, const struct rule_set *rs,
		     const struct match_hits *h, uint32_t id)
{
	const struct rule *r = id < rs->nrules ? &rs->rules[id] : NULL;

	o->rule = r ? r->name : "?";
	o->describe = r ? r->describe : NULL;
	o->score = r ? r->score : 0;
	o->id = id;
	o->count = h->count[id];
	o->behaviour = false;
	o->value = 0;
	o->window_ns = 0;
}

void score_report_fill(struct score_report *r, struct score_hit *buf,
		       const struct rule_set *rs, const struct match_hits *h, bool subhits)
{
	uint32_t n = 0, ns = 0;

	for (uint32_t i = 0; i < h->nlist; i++)
		if (reported(rs, h->list[i]))
			hit_fill(&buf[n++], rs, h, h->list[i]);
	for (uint32_t i = 0; subhits && i < h->nlist; i++)
		if (!reported(rs, h->list[i]))
			hit_fill(&buf[n + ns++], rs, h, h->list[i]);
	r->score = h->score;
	r->action = h->action;
	r->hits = buf;
	r->nhits = n;
	r->subhits = buf + n;
	r->nsubhits = ns;
}
