/* score: a message's hits to a score and an action.
 *
 * Takes the hit vector the match stage (and the storm tracker, for track
 * rules) filled, evaluates the meta rules in dependency order, sums the
 * scores of the scored rules that hit, rounded as SpamAssassin reports them,
 * and picks the action of the highest threshold met. Everything it reads
 * belongs to the rule set (read-only, shared by every worker); the only state
 * it writes is the hit vector it is given.
 */
#ifndef BW_SCORE_H
#define BW_SCORE_H

struct match_hits;
struct rule_set;

/* How an action name is counted in summaries (verdict_stats.actions[]):
 * the three names the rule grammar documents, and any other one. */
enum score_action {
	SCORE_ACTION_PASS = 0,
	SCORE_ACTION_TAG,
	SCORE_ACTION_BLOCK,
	SCORE_ACTION_OTHER,
	SCORE_ACTION_NONE,        /* no action threshold met (action NULL) */
};

/* Evaluates rs's metas over h (dependencies first; a true meta is added to
 * h as one hit), sums the scores of the scored rules in h and picks the
 * action: h->score and h->action are set (action owned by rs, NULL when
 * no threshold is met). Call once, after every scan of the message. */
void score_hits(const struct rule_set *rs, struct match_hits *h);

/* The summary's slot for action (h->action after score_hits()). */
enum score_action score_action_kind(const char *action);

#endif
