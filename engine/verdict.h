/* verdict: a transaction's message against the rules: hits, score, action.
 *
 * Owns the loaded rule set and its compiled match set (shared, read-only once
 * built) and this worker's scratch and hit vector. verdict_message() turns
 * the message stage's results into SpamAssassin's views (header list, body
 * paragraphs with the Subject first, rawbody, URIs, the envelope sender) and
 * scans them; the full raw message is not kept by the message stage, so
 * `full` rules never hit here (counted: verdict_stats.full_skipped).
 */
#ifndef BW_VERDICT_H
#define BW_VERDICT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct match_hits;
struct message;
struct smtp_tx;
struct verdict;

struct verdict_stats {
	uint64_t messages;           /* scanned */
	uint64_t scan_errors;        /* a scan that failed (Hyperscan or PCRE2 error) */
	uint64_t full_skipped;       /* messages whose full rules could not run */
	uint64_t actions[4];         /* pass, tag, block, other */
};

/* Loads the rule files of dirs (each a directory of *.cf, read in name
 * order, or one file), then compiles them. Returns the verdict state, or
 * NULL with the reason in err: the first rule error as "file:line: reason"
 * (all errors are printed to errf when it is not NULL). The caller owns the
 * result and frees it with verdict_free(). */
struct verdict *verdict_new(const char *const *dirs, int ndirs, FILE *errf,
			    char *err, size_t errlen);
void verdict_free(struct verdict *v);

/* Scans m (ended) of transaction tx. Returns the hits with score and action
 * set, owned by v and valid until the next call; NULL when m is NULL. */
const struct match_hits *verdict_message(struct verdict *v, const struct message *m,
					 const struct smtp_tx *tx);

/* Name, score and describe text of rule id (for records and reports). */
const char *verdict_rule_name(const struct verdict *v, uint32_t id);
double verdict_rule_score(const struct verdict *v, uint32_t id);
bool verdict_rule_reported(const struct verdict *v, uint32_t id);
const char *verdict_rule_describe(const struct verdict *v, uint32_t id);

const struct verdict_stats *verdict_get_stats(const struct verdict *v);
/* One line for the summary: rule counts. */
void verdict_print_counts(const struct verdict *v, FILE *f);

/* The default rule directory: $BW_RULES_DIR, else the installed data
 * directory next to the binary, else the source tree's rules/ when run from
 * a build directory. NULL when none exists. */
const char *verdict_default_rules_dir(void);

#endif
