/* output: JSON lines records.
 *
 * Records go to one stream (stdout by default), one JSON object per line;
 * everything meant for a person goes to stderr (the summary: summary.h). Field names of the
 * transaction record are fixed by DESIGN.md; the flow record is documented in
 * README.md.
 */
#ifndef BW_OUTPUT_H
#define BW_OUTPUT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "json.h"

struct flow;
struct message;
struct smtp_session;
struct score_report;
struct smtp_tx;
struct storm_event;

struct output {
	FILE *f;
	struct json j;
	uint64_t records;            /* written */
	uint64_t write_errors;       /* records lost to a write error or oom */
};

/* Sets up o to write to f (borrowed). Cannot fail. */
void output_init(struct output *o, FILE *f);
void output_fini(struct output *o);

/* One record for a flow that ended (f->end says how). */
void output_flow_record(struct output *o, const struct flow *f);

/* One record for an SMTP transaction (DESIGN.md's field names). m is the
 * parsed message of the transaction, or NULL when no content passed; r its
 * verdict (NULL: no rules, no score fields). All arguments are borrowed
 * for the call. */
void output_tx_record(struct output *o, const struct flow *f, const struct smtp_session *s,
		      const struct smtp_tx *tx, const struct message *m,
		      const struct score_report *r);

/* The one rendering of a verdict's hits, for transaction records and
 * `breakwater score --json` alike: writes r's fields into the JSON object
 * open in j: "score", "action" ("pass" when no threshold was met), "hits"
 * (each reported hit's "rule" and "score", and for a behaviour hit the
 * measured "value" and its "window_s"), and with subhits "subhits" (each
 * other hit's "rule" and "count"). r is borrowed for the call. */
void output_score_json(struct json *j, const struct score_report *r, bool subhits);

/* One record for a storm event: a key crossed a track rule's threshold
 * (dir up) or fell back under it (dir down). o is a struct output *. */
void output_storm_record(void *o, const struct storm_event *ev);

#endif
