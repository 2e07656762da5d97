/* match: rule sets compiled into Hyperscan (PCRE2 where it must) and
 * scanning; score.h turns the hits into a score.
 *
 * Data layout. A struct match_set is built once from a finished rule_set and
 * is then shared read-only by every worker lcore. It holds one "class
 * database" (struct match_db, private) per field class: one per distinct
 * header key (field name + modifiers, e.g. "From:addr"), one per MIME-header
 * key, and one each for body, rawbody, full and uri. Each regex rule is one
 * entry of its class database, classified as
 *   exact       compiled into Hyperscan; a Hyperscan match is the answer
 *               (HS_FLAG_SINGLEMATCH unless tflags multiple);
 *   prefilter   Hyperscan compiled it with HS_FLAG_PREFILTER; PCRE2 confirms
 *               each candidate on the same text;
 *   pcre        Hyperscan rejects it outright; PCRE2 alone, on text capped
 *               at MATCH_PCRE_MAX_BYTES and with match/depth limits.
 * Rules counted with "tflags multiple" are found by Hyperscan and counted by
 * PCRE2 (Perl's non-overlapping /g semantics, capped by maxhits).
 *
 * Per-lcore state is struct match_scratch: the Hyperscan scratch (one, sized
 * for every database of the set; hs_clone_scratch for more lcores), PCRE2
 * match data and the per-scan marks. Per-message state is struct match_hits:
 * a hit count per rule id, cleared in O(hits) between messages.
 *
 * The text a message offers is described by struct match_msg; the message
 * stage fills it (borrowed pointers: match never keeps them past the call).
 * Memory: rule-set structures and PCRE2 code are MEM_RULES, scratch and hits
 * MEM_MATCH (PCRE2 through a general context on mem.h). Hyperscan's own
 * databases and scratch use its default allocator, because databases are
 * compiled on worker threads and mem.h's counters are not thread-safe; their
 * size is reported in match_counts.db_bytes instead.
 *
 * Modes. Every class is scanned in block mode on the texts the message
 * stage keeps, except the exact rules of the full class: they are compiled
 * in HS_MODE_STREAM databases, and the raw message is fed to one stream per
 * database as it arrives from the SMTP data path (struct match_stream, one
 * per message in flight, opened when the message's content begins and
 * closed when it ends: the raw message is never copied for them). The full
 * rules Hyperscan cannot take exactly (prefilter + confirm, PCRE2 only) and
 * the counting of tflags multiple run on a bounded raw copy the message
 * stage keeps only when the rule set has such rules (match_set_full()).
 *
 * On-disk cache. With match_build_opts.cache_dir set, each class database's
 * Hyperscan bytes (hs_serialize_database) are kept in one file per database,
 * named by a SHA-256 key over its patterns, flags, ids, mode, the Hyperscan
 * version, the platform and the mode (block or stream), so a streaming
 * database never answers for a block one; a warm build deserializes instead
 * of compiling.
 * The file format, the checks on reading and the pruning policy are
 * described in match.c ("on-disk cache"). PCRE2 code is always rebuilt.
 */
#ifndef BW_MATCH_H
#define BW_MATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "rules.h"

#define MATCH_PCRE_MAX_BYTES    (256u << 10)    /* PCRE2 never sees more */
#define MATCH_PCRE_MATCH_LIMIT  200000u         /* pcre2_set_match_limit */
#define MATCH_PCRE_DEPTH_LIMIT  10000u          /* pcre2_set_depth_limit */

enum match_class {
	MATCH_CLASS_HEADER = 1,
	MATCH_CLASS_MIMEHEADER,
	MATCH_CLASS_BODY,
	MATCH_CLASS_RAWBODY,
	MATCH_CLASS_FULL,
	MATCH_CLASS_URI,
	MATCH_CLASS_MAX
};

enum match_kind {
	MATCH_KIND_EXACT = 1,
	MATCH_KIND_PREFILTER,
	MATCH_KIND_PCRE,
	MATCH_KIND_MAX
};

/* One piece of text (a body paragraph, a URI, a MIME header value). */
struct match_text {
	const char *p;
	size_t len;
};

/* One header as the message stage saw it: name without the colon, value
 * decoded (RFC 2047) and unfolded, raw value as on the wire (folds kept). */
struct match_header {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
	const char *raw;
	size_t raw_len;
	uint32_t part;          /* mime_headers: the MIME part (0: the message) */
};

/* What a message offers to the rules; every pointer is borrowed. */
struct match_msg {
	const struct match_header *headers;     /* message order */
	uint32_t nheaders;
	const struct match_header *mime_headers;/* headers of every MIME part, the
						 * message's own (part 0) first, by
						 * nondecreasing part */
	uint32_t nmime_headers;
	uint32_t nparts;                        /* MIME parts; 0: the last part
						 * named in mime_headers + 1 */
	const struct match_text *body;          /* rendered paragraphs */
	uint32_t nbody;
	bool body_starts_with_subject;          /* body[0] is the Subject */
	const struct match_text *rawbody;       /* decoded text parts, lines */
	uint32_t nrawbody;
	const char *full;                       /* the kept raw copy (bounded; NULL:
						 * none): for the full rules that
						 * need PCRE2 */
	size_t full_len;
	const struct match_text *uris;
	uint32_t nuris;
	const char *envelope_from;              /* MAIL FROM, bare; NULL unknown */
	size_t envelope_from_len;
	uint64_t body_length;                   /* pristine body bytes */
	bool body_length_known;
};

struct match_build_opts {
	unsigned nthreads;      /* compile class databases in parallel; 0 = 1 */
	bool verbose;           /* per-database timing on stderr */
	const char *cache_dir;  /* compiled-database cache (created 0700 if
				 * missing); NULL: no cache. Borrowed for the
				 * duration of match_set_build() */
};

struct match_counts {
	uint64_t databases;                 /* Hyperscan databases built */
	uint64_t kinds[MATCH_KIND_MAX];     /* regex entries by kind */
	uint64_t native;                    /* exists, count and eval tests */
	uint64_t metas;
	uint64_t tracks;
	uint64_t regex_failed;              /* neither engine took it */
	uint64_t db_bytes;                  /* hs_database_size sum */
	double compile_seconds;
	/* on-disk cache (all 0 without cache_dir); one lookup per class
	 * database with patterns for Hyperscan, so hits + misses = databases
	 * plus the rare ones whose every pattern was demoted (cached as "no
	 * database": 2 with the stock rules, ~5 s each to find out) */
	uint64_t cache_hits;                /* deserialized, not compiled */
	uint64_t cache_misses;              /* compiled (includes invalid) */
	uint64_t cache_invalid;             /* misses whose file was corrupt,
					     * truncated or of another format */
	uint64_t cache_writes;              /* files written */
	uint64_t cache_errors;              /* I/O errors; an unusable
					     * directory counts once */
	uint64_t cache_pruned;              /* stale files removed */
	double prepare_seconds;             /* PCRE2 compile + classification */
};

struct match_set;       /* shared, read-only once built */
struct match_scratch;   /* one per lcore */
struct match_stream;    /* one per message in flight (full rules) */

/* What the full class needs of a message in flight. */
struct match_full_info {
	uint32_t rules;         /* full regex rules compiled */
	uint32_t stream_dbs;    /* streaming databases (0: no stream to open) */
	uint32_t stream_entries;
	uint32_t copy_rules;    /* rules that read the raw copy: prefilter +
				 * confirm, PCRE2 only, tflags multiple counts */
	bool need_copy;         /* copy_rules > 0: keep a bounded raw copy */
	size_t stream_bytes;    /* state of one message's streams (the
				 * Hyperscan stream states and marks) */
};

/* The outcome of one message. */
struct match_hits {
	uint32_t *count;        /* per rule id: hits (meta: 1 when true) */
	uint32_t *list;         /* rule ids with count > 0, in hit order */
	uint32_t nlist;
	uint32_t nrules;
	double score;           /* after score_hits() */
	const char *action;     /* after score_hits(): owned by the rule set */
};

/* The default cache directory for match_build_opts.cache_dir, written to
 * buf: $BW_CACHE_DIR, else $XDG_CACHE_HOME/breakwater (absolute values
 * only, as the XDG spec says), else $HOME/.cache/breakwater, else
 * /var/cache/breakwater (empty variables count as unset). Returns 0, or
 * -ENAMETOOLONG when it does not fit in len. Reads the environment: call at
 * start-up, not while another thread may setenv(). */
int match_cache_default_dir(char *buf, size_t len);

/* Compiles a finished rule set. Returns the match set or NULL; on NULL the
 * reason is in errbuf. Regexes that neither Hyperscan nor PCRE2 accept are
 * appended to rules->errors (file:line) and their rules never hit. The
 * match set borrows rules: keep rules alive until match_set_free(). */
struct match_set *match_set_build(struct rule_set *rules, const struct match_build_opts *opts,
				  char *errbuf, size_t errlen);
void match_set_free(struct match_set *ms);
const struct match_counts *match_set_counts(const struct match_set *ms);
const struct rule_set *match_set_rules(const struct match_set *ms);

/* Classification of one entry (tests, reports): kind of the regex rule id,
 * or 0 when the rule has no regex entry. */
enum match_kind match_rule_kind(const struct match_set *ms, uint32_t rule);
/* Hyperscan flags the rule was compiled with (0 for PCRE only). */
unsigned match_rule_hs_flags(const struct match_set *ms, uint32_t rule);
/* Perl flags (enum rule_re_flag) and tflags to Hyperscan flags. */
unsigned match_hs_flags(unsigned re_flags, unsigned tflags);

/* Per-lcore scratch for ms. match_scratch_clone() makes another for a
 * second lcore. NULL on failure. Free with match_scratch_free(). */
struct match_scratch *match_scratch_new(const struct match_set *ms);
struct match_scratch *match_scratch_clone(const struct match_scratch *proto);
void match_scratch_free(struct match_scratch *s);

/* Counters of one scratch (one lcore). */
struct match_scan_stats {
	uint64_t scans;                 /* Hyperscan calls */
	uint64_t hs_errors;             /* hs_scan returned an error */
	uint64_t pcre_runs;
	uint64_t pcre_limit;            /* PCRE2 hit its match/depth limit */
	uint64_t pcre_truncated;        /* text cut at MATCH_PCRE_MAX_BYTES */
	uint64_t bytes;
	uint64_t streams;               /* full-message streams opened */
	uint64_t stream_bytes;          /* raw bytes fed to them (once per stream db) */
};
const struct match_scan_stats *match_scratch_stats(const struct match_scratch *s);

struct match_hits *match_hits_new(const struct match_set *ms);
void match_hits_free(struct match_hits *h);
/* Clears the hits of the previous message (O(number of hits)). */
void match_hits_reset(struct match_hits *h);
/* Records n hits of rule id (behaviour rules from the storm stage use it). */
void match_hits_add(struct match_hits *h, uint32_t rule, uint32_t n);

/* Block-mode scans of one class; hits are added to h. Return 0, or -EIO
 * when Hyperscan failed (counted; the other classes still run). */
int match_scan_headers(const struct match_set *ms, struct match_scratch *s,
		       const struct match_msg *msg, struct match_hits *h);
int match_scan_texts(const struct match_set *ms, struct match_scratch *s,
		     enum match_class cls, const struct match_text *parts, uint32_t nparts,
		     bool first_is_subject, struct match_hits *h);
/* Every block-mode class of msg (the full rules' streaming databases are
 * not: see match_stream_*), plus the native tests (exists, :count, evals). */
int match_scan_msg(const struct match_set *ms, struct match_scratch *s,
		   const struct match_msg *msg, struct match_hits *h);

/* --- full rules: the raw message streamed as it arrives ---
 *
 * match_stream_open() allocates a message's stream state (MEM_MATCH, about
 * match_set_full()->stream_bytes; NULL when the set has no streaming
 * database, or out of memory). match_stream_feed() passes the next raw
 * bytes (dot-unstuffed, any split) through every streaming database on
 * this lcore's scratch. match_stream_close() reports the end-of-data
 * matches, judges what needs PCRE2 (confirm, counting) on copy (the kept
 * raw copy, NULL when none) and adds the hits to h; the state is then
 * spent but still owned by the caller. match_stream_free() frees a stream
 * in any state, without the match set (it may already be gone: a reload).
 * A stream must be fed and closed with the set that opened it (-EINVAL
 * otherwise). Feed and close return 0 or -EIO (Hyperscan failed: counted,
 * the stream scans no more). */
const struct match_full_info *match_set_full(const struct match_set *ms);
struct match_stream *match_stream_open(const struct match_set *ms);
int match_stream_feed(const struct match_set *ms, struct match_scratch *s,
		      struct match_stream *st, const void *p, size_t n);
int match_stream_close(const struct match_set *ms, struct match_scratch *s,
		       struct match_stream *st, const char *copy, size_t copy_len,
		       struct match_hits *h);
void match_stream_free(struct match_stream *st);
/* Bytes st holds (mem.h MEM_MATCH), the Hyperscan stream states included. */
size_t match_stream_size(const struct match_stream *st);
/* Every full rule on one whole raw message p (its streams opened, fed
 * once and closed; the block ones on p as the copy): for tests and tools
 * that hold the message whole. */
int match_scan_full(const struct match_set *ms, struct match_scratch *s,
		    const char *p, size_t len, struct match_hits *h);

/* `breakwater check-rules DIR...`: loads, compiles (through the cache in
 * match_cache_default_dir()), prints counts, cache counters, errors
 * (file:line: reason) and the compile time to out. Returns 0 when there are
 * no errors, 1 when there are, 2 when nothing could be built. */
int rules_check(const char **dirs, int ndirs, FILE *out);

#endif
