/* verdict: a transaction against the rules: hits, score, action.
 *
 * Two structs. struct verdict_set is one loaded rule set, shared by every
 * worker: the rules and their compiled match set, what a message must keep
 * for them (struct message_wants, worked out once when the set is built),
 * and the storm tracker that measures the rule files' `track` rules
 * (behaviour over sliding windows) with its lock, its event sink and its
 * event counts. It is read-only once verdict_set_new() returns, except the
 * tracker. struct verdict is one worker's context on a set (verdict_new()):
 * its Hyperscan scratch and hit vector, the views it builds of a message,
 * the full-rule streams of its messages in flight, the storm hits of its
 * last transaction and its counters. A tool that scores files makes one.
 *
 * Every transaction, with or without content, is summarised into the
 * tracker, and the behaviour rules it meets count as hits beside the
 * content rules (metas can combine both). verdict_message() turns the
 * message stage's results into SpamAssassin's views (header list, the
 * headers of every MIME part, body paragraphs with the Subject first,
 * rawbody, URIs, the envelope sender) and scans them.
 *
 * The tracker is the one thing contexts write in common. While a set has
 * one context (one worker) the tracker is that context's alone and no lock
 * is taken; with several, each transaction's tracker work takes the set's
 * lock once, and the window housekeeping (verdict_advance()) trylocks:
 * whoever finds it free does a bounded share. So make and free a set's
 * contexts only while none of them is scanning (before the workers start,
 * or with them held), and free every context of a set before the set.
 *
 * `full` rules see the raw message as it arrives: verdict_begin() attaches
 * a full-rule state to a message about to be fed (a tap of the message
 * stage: the Hyperscan streams of the rules' streaming databases, and the
 * request for a bounded raw copy when some full rule needs PCRE2). The
 * state lives exactly as long as the message's content (released by
 * message_reset()/message_free(): end of data, RSET, abort, gap, flow
 * eviction) and is accounted in mem.h (MEM_MATCH); the streams of one
 * context's messages in flight are capped at VERDICT_STREAM_MEMCAP. A
 * context freed with messages in flight (a reload) releases their streams
 * at once; the messages keep a small state object of their own until they
 * end. A message that was not attached (or whose context has been freed
 * since, or was refused at the cap) gets no full-rule hits:
 * verdict_stats.full_skipped, counted by the context that ends it.
 */
#ifndef BW_VERDICT_H
#define BW_VERDICT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct match_msg;
struct message;
struct message_wants;
struct score_report;
struct smtp_tx;
struct storm_event;
struct verdict;
struct verdict_set;

/* Stream state of one context's messages in flight, at most (then
 * full_capped). */
#define VERDICT_STREAM_MEMCAP (64ull << 20)

struct verdict_stats {
	uint64_t messages;           /* scanned */
	uint64_t scan_errors;        /* a scan that failed (Hyperscan or PCRE2 error) */
	uint64_t full_streamed;      /* messages whose full rules ran (streamed) */
	uint64_t full_skipped;       /* messages whose full rules could not run */
	uint64_t full_capped;        /* of those: refused at VERDICT_STREAM_MEMCAP */
	uint64_t full_alloc_fail;    /* of those: out of memory */
	uint64_t actions[4];         /* pass, tag, block, other: enum score_action */
	uint64_t behaviour_hits;     /* transactions with at least one track rule hit */
	uint64_t storm_events_up, storm_events_down;  /* the set's: see verdict_get_stats() */
};

/* --- the rule set ------------------------------------------------------- */

/* Loads the rule files of dirs (each a directory of *.cf, read in name
 * order, or one file), then compiles them and sets up the storm tracker for
 * their track rules. Returns the set, or NULL with the reason in err: the
 * first rule error as "file:line: reason" (all errors are printed to errf
 * when it is not NULL). The caller owns the result and frees it with
 * verdict_set_free(), after every context made on it. */
struct verdict_set *verdict_set_new(const char *const *dirs, int ndirs, FILE *errf,
				    char *err, size_t errlen);
/* Frees s (NULL is fine): rules, match set, tracker. Its contexts must be
 * freed already. */
void verdict_set_free(struct verdict_set *s);

/* Where storm events (a key crossing a track rule's threshold, up or down)
 * go; ev is borrowed for the call, which comes from the thread of the
 * context in the tracker (under the set's lock when it has several). Without
 * a sink they are only counted. Set it with no context of s scanning. */
void verdict_set_event_sink(struct verdict_set *s,
			    void (*on_event)(void *user, const struct storm_event *ev),
			    void *user);

/* Reload support: hands old's storm tracker, with every window and its
 * event counts, to ns when both define the same track rules (names and
 * parameters, in order), so a reload that changes only content rules or
 * scores loses no window state; ns's fresh tracker goes to old, to be freed
 * with it. Returns false (nothing moves) otherwise. Call with no context of
 * either set scanning. */
bool verdict_set_adopt_storm(struct verdict_set *ns, struct verdict_set *old);

/* The longest window of s's track rules (0: none, or s NULL). */
uint64_t verdict_set_max_window_ns(const struct verdict_set *s);

/* --- a worker's context ------------------------------------------------- */

/* A context on s for one worker (or one tool): scratch, hit vector, views,
 * streams, counters of its own; s is borrowed and must outlive it. Returns
 * NULL when out of memory. The caller owns the result and frees it with
 * verdict_free(). See above for when contexts may be made. */
struct verdict *verdict_new(struct verdict_set *s);
/* Frees v (NULL is fine); its messages in flight lose their streams (see
 * above). */
void verdict_free(struct verdict *v);

/* What a message must keep for v's rules (struct message_wants: the URI
 * list for uri rules; the text views for body, rawbody and uri rules and
 * the body fingerprint of a track rule; the header list for header and
 * mimeheader rules; MIME parts' headers for mimeheader rules), worked out
 * once when the set was built. Owned by the set; pass it to message_want()
 * before a message's first byte. */
const struct message_wants *verdict_wants(const struct verdict *v);

/* A message's content is about to be fed to m: attaches the full rules'
 * state (see above) when the rules have full rules; nothing otherwise.
 * Call before the first byte. */
void verdict_begin(struct verdict *v, struct message *m);
/* Bytes of stream state held now by v's messages in flight. */
uint64_t verdict_stream_bytes(const struct verdict *v);

/* Scans m (ended) of transaction tx and scores it. Returns the report
 * (score.h: score, action, the reported hits and the subhits), owned by v
 * and valid until the next scan on v; NULL when m is NULL. Used for
 * messages read from files: no behaviour rules. */
const struct score_report *verdict_message(struct verdict *v, const struct message *m,
					   const struct smtp_tx *tx);

/* The views verdict_message() and verdict_tx() scan m (ended) with, as
 * they build them: headers, body paragraphs (Subject first), rawbody, URIs,
 * tx's envelope sender (tx may be NULL). Fills *mm; its pointers go into m
 * and into v's buffers, valid until the next call on v or a change to m.
 * Scans nothing (bench/bench_match.c times match_scan_msg on them). */
void verdict_build_views(struct verdict *v, const struct message *m,
			 const struct smtp_tx *tx, struct match_msg *mm);

/* A transaction seen on the wire: m (NULL when no content passed) scanned
 * as above, and the transaction (client, envelope, each recipient's reply,
 * fingerprints) observed by the storm tracker at engine time now. Returns
 * the report of the hits of both kinds, scored, each behaviour hit with
 * the value the tracker measured and its window (no subhits); owned by v
 * until the next scan on v. */
const struct score_report *verdict_tx(struct verdict *v, const struct message *m,
				      const struct smtp_tx *tx, const uint8_t client[16],
				      uint8_t ipver, uint64_t now);

/* Bounded window housekeeping on the engine clock; call once per burst. */
void verdict_advance(struct verdict *v, uint64_t now);

/* A copy of v's counters, with the storm event counts of its set (one
 * tracker for every context: its events are the set's, not one worker's).
 * Read after the workers have ended, and merged first
 * (verdict_merge_stats()) for a summary of several. */
struct verdict_stats verdict_get_stats(const struct verdict *v);
/* Adds from's own counters to into's (the summary of several workers;
 * the storm event counts, the set's, are not added). */
void verdict_merge_stats(struct verdict *into, const struct verdict *from);
/* The summary's lines on the rules: counts, and v's full-rule counters. */
void verdict_print_counts(const struct verdict *v, FILE *f);

/* The default rule directory: $BW_RULES_DIR, else the installed data
 * directory next to the binary, else the source tree's rules/ when run from
 * a build directory. NULL when none exists. */
const char *verdict_default_rules_dir(void);

#endif
