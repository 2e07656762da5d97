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
