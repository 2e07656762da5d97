/* score: a message's hits to a score, an action and the explanation.
 *
 * Takes the hit vector the match stage (and the storm tracker, for track
 * rules) filled, evaluates the meta rules in dependency order, sums the
 * scores of the scored rules that hit, rounded as SpamAssassin reports them,
 * and picks the action of the highest threshold met. Everything it reads
 * belongs to the rule set (read-only, shared by every worker); the only state
 * it writes is the hit vector it is given.
 *
 * The explanation is a struct score_report: the score, the action and the
 * hits as a record shows them, each with what the record prints (name,
 * score, and for a behaviour rule the measured value and window) copied out
 * of the rule set once per message. Whoever renders it (output.c) needs
 * nothing else, and calls back into no one.
 */
#ifndef BW_SCORE_H
#define BW_SCORE_H

#include <stdbool.h>
#include <stdint.h>

struct match_hits;
struct rule_set;

/* One hit of a message, as reports show it. The strings belong to the rule
 * set and live as long as it. */
struct score_hit {
	const char *rule;           /* the rule's name */
	const char *describe;       /* its describe text, or NULL */
	double score;               /* the rule's score */
	uint32_t id;                /* its rule id */
	uint32_t count;             /* its hits in the message (a true meta: 1) */
	bool behaviour;             /* a track rule's hit: value and window_ns are set */
	double value;               /* what the tracker measured */
	uint64_t window_ns;         /* over which window */
};

/* A scored message. hits and subhits point into the buffer given to
 * score_report_fill(). */
struct score_report {
	double score;
	const char *action;         /* owned by the rule set; NULL: no threshold met */
	const struct score_hit *hits;     /* reported: scored rules with a score, hit order */
	uint32_t nhits;
	const struct score_hit *subhits;  /* the others (__sub-rules, zero scores), hit
					   * order; only when asked for */
	uint32_t nsubhits;
};

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

/* Fills r from h, scored by score_hits() with rs: its score, its action,
 * and its hits in buf, which has room for h->nlist entries (the rule
 * count always does): the reported ones (scored rules with a non-zero
 * score; __sub-rules and zero scores only feed metas) first, then, with
 * subhits, the others. Entries are not behaviour hits (behaviour false):
 * the tracker's measurements are the caller's to add. r points into buf
 * until buf is filled again. */
void score_report_fill(struct score_report *r, struct score_hit *buf,
		       const struct rule_set *rs, const struct match_hits *h, bool subhits);

#endif
