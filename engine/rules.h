/* rules: the rule-file parser and the parsed rule set.
 *
 * A rule set is read from one or more directories (each loads its *.cf files
 * in file-name order, like SpamAssassin's NN_name.cf) or single files. The
 * language is SpamAssassin's (header, body, rawbody, full, uri, mimeheader,
 * meta, score, describe, tflags, priority, include, if/ifplugin/else/endif,
 * ReplaceTags) plus breakwater's own directives (action, track, and the header
 * tests Field:count / Field:addrcount); docs/rules.md is the reference.
 *
 * Data layout: struct rule_set owns a flat array of struct rule, indexed by a
 * dense rule id (0 .. nrules-1) that the match stage uses for its hit vector,
 * plus an open-addressing name -> id table. Every string a rule points to is
 * owned by the rule set (MEM_RULES) and freed by rule_set_free(). Meta rules
 * are compiled to RPN (struct meta_op arrays) at the end of loading and
 * sorted so that a meta comes after every meta it depends on (meta_order).
 * Behaviour rules (track) are rules too, so metas and scores can name them;
 * their window definitions live in tracks[], which the storm stage consumes.
 *
 * Errors are collected, not fatal at the first: each names file:line and the
 * reason (struct rule_error). A set with errors must not be put in service
 * (reload refuses it) but is complete enough to print all of them.
 */
#ifndef BW_RULES_H
#define BW_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Hard limits: every one has a counter or an error when reached. */
#define RULES_MAX_LINE          65536   /* bytes per logical line */
#define RULES_MAX_INCLUDE_DEPTH 16
#define RULES_MAX_IF_DEPTH      64
#define RULES_MAX_META_OPS      4096    /* RPN length of one meta */
#define RULES_MAX_EXPR_DEPTH    200     /* nesting in one meta or if expression: (, !, -, ?: */
#define RULES_MAX_PATTERN       (1u << 20)  /* a pattern after replace_tags (stock: 224 KB) */
#define RULES_MAX_RULES         200000

/* What a rule tests. */
enum rule_type {
	RULE_TYPE_HEADER = 1,   /* a header field (or ALL, ToCc, ...) */
	RULE_TYPE_MIMEHEADER,   /* a header of any MIME part (MIMEHeader plugin) */
	RULE_TYPE_BODY,         /* decoded, rendered text, Subject first */
	RULE_TYPE_RAWBODY,      /* decoded text parts, not rendered */
	RULE_TYPE_FULL,         /* the raw message */
	RULE_TYPE_URI,          /* each URI found in the message */
	RULE_TYPE_META,         /* expression over other rules */
	RULE_TYPE_TRACK,        /* behaviour over windows (storm stage) */
	RULE_TYPE_MAX
};

/* How a rule is tested. */
enum rule_test {
	RULE_TEST_NONE = 0,     /* skipped (see rule.skip) */
	RULE_TEST_REGEX = 1,    /* Field =~ /re/ or !~ */
	RULE_TEST_EXISTS,       /* exists:Field */
	RULE_TEST_COUNT,        /* Field:count OP N, Field:addrcount OP N */
	RULE_TEST_EVAL,         /* an eval breakwater does natively */
	RULE_TEST_META,
	RULE_TEST_TRACK,
};

/* Why a rule does not run. Counted per reason in rule_set.skipped[]. */
enum rule_skip {
	RULE_SKIP_NONE = 0,
	RULE_SKIP_EVAL,         /* eval:... not implemented natively */
	RULE_SKIP_NET,          /* needs the network (tflags net, DNSBL, ...) */
	RULE_SKIP_BAYES,        /* needs Bayes (tflags learn, check_bayes) */
	RULE_SKIP_ZERO_SCORE,   /* score 0 disables a rule (SpamAssassin) */
	RULE_SKIP_PSEUDO_HEADER,/* X-Spam-Relays-* etc.: SpamAssassin-made */
	RULE_SKIP_CAPTURE,      /* %{NAME} capture templates (SA 4 feature) */
	RULE_SKIP_REGEX,        /* broken rule (its error is in the error list) */
	RULE_SKIP_TOO_LARGE,    /* regex too large for Hyperscan and PCRE2 (Perl takes it) */
	RULE_SKIP_MAX
};

/* Regex flags (Perl's /i /m /s /x). */
enum rule_re_flag {
	RULE_RE_CASELESS = 1u << 0,
	RULE_RE_MULTILINE = 1u << 1,
	RULE_RE_DOTALL = 1u << 2,
	RULE_RE_EXTENDED = 1u << 3,
};

/* tflags; the ones breakwater acts on, then the ones only recorded. */
enum rule_tflag {
	RULE_TF_MULTIPLE = 1u << 0,
	RULE_TF_NOSUBJECT = 1u << 1,
	RULE_TF_NET = 1u << 2,
	RULE_TF_NICE = 1u << 3,
	RULE_TF_LEARN = 1u << 4,
	RULE_TF_USERCONF = 1u << 5,
	RULE_TF_NOAUTOLEARN = 1u << 6,
	RULE_TF_PUBLISH = 1u << 7,
	RULE_TF_NOTRIM = 1u << 8,
	RULE_TF_DOMAINS_ONLY = 1u << 9,
	RULE_TF_OTHER = 1u << 15,   /* something else; text in tflags_text */
};

/* Header field modifiers, chained as in SpamAssassin (From:first:addr:host):
 * which instances (first/last), raw or decoded, then what to extract.
 * COUNT and ADDRCOUNT are breakwater's numeric tests (Received:count > 25). */
enum rule_hdr_mod {
	RULE_HDR_RAW = 1u << 0,
	RULE_HDR_ADDR = 1u << 1,
	RULE_HDR_NAME = 1u << 2,
	RULE_HDR_HOST = 1u << 3,
	RULE_HDR_DOMAIN = 1u << 4,
	RULE_HDR_IP = 1u << 5,
	RULE_HDR_REVIP = 1u << 6,
	RULE_HDR_FIRST = 1u << 7,
	RULE_HDR_LAST = 1u << 8,
	RULE_HDR_COUNT = 1u << 9,       /* number of instances of the field */
	RULE_HDR_ADDRCOUNT = 1u << 10,  /* number of addresses in all instances */
};

/* Comparison operators (meta, count tests, track thresholds). */
enum rule_cmp {
	RULE_CMP_GT = 1,
	RULE_CMP_GE,
	RULE_CMP_LT,
	RULE_CMP_LE,
	RULE_CMP_EQ,
	RULE_CMP_NE,
};

/* Evals done natively (docs/rules.md says what each one computes). */
enum rule_eval {
	RULE_EVAL_NONE = 0,
	RULE_EVAL_MISSING_TO_HEADER = 1,   /* check_for_missing_to_header() */
	RULE_EVAL_HEADER_COUNT_RANGE,      /* check_header_count_range(h, min, max) */
	RULE_EVAL_SUBJECT_ALL_CAPS,        /* subject_is_all_caps() */
	RULE_EVAL_BODY_LENGTH,             /* check_body_length(n) */
	RULE_EVAL_UNRESOLVED_TEMPLATE,     /* check_unresolved_template() */
	RULE_EVAL_ILLEGAL_CHARS,           /* check_illegal_chars(h, ratio, count) */
};

/* Meta expressions in RPN, evaluated on doubles with Perl's semantics
 * (a || b yields a when a is true; comparisons yield 1 or 0). */
enum meta_opcode {
	META_OP_RULE = 1,   /* push hit count of rule arg */
	META_OP_CONST,      /* push value */
	META_OP_NOT, META_OP_NEG,
	META_OP_AND, META_OP_OR, META_OP_XOR,
	META_OP_ADD, META_OP_SUB, META_OP_MUL, META_OP_DIV,
	META_OP_GT, META_OP_GE, META_OP_LT, META_OP_LE, META_OP_EQ, META_OP_NE,
	META_OP_COND,       /* a ? b : c */
};

struct meta_op {
	enum meta_opcode op;
	uint32_t rule;      /* META_OP_RULE */
	double value;       /* META_OP_CONST */
};

/* Behaviour rules: track NAME MEASURE per KEY over DURATION OP THRESHOLD [min N]. */
enum track_measure {
	TRACK_COUNT = 1,    /* transactions (or ITEMs: count ITEM per KEY) per key */
	TRACK_DISTINCT,     /* distinct items per key */
	TRACK_RATIO,        /* items / all recipients per key */
};

enum track_item {
	TRACK_ITEM_NONE = 0,
	TRACK_ITEM_RCPT = 1,
	TRACK_ITEM_SENDER,
	TRACK_ITEM_CLIENT_IP,
	TRACK_ITEM_MESSAGE_ID,
	TRACK_ITEM_HELO,
	TRACK_ITEM_FINGERPRINT,
	TRACK_ITEM_REJECTED_RCPT,
	TRACK_ITEM_SENDER_DOMAIN,
	TRACK_ITEM_RCPT_DOMAIN,
	TRACK_ITEM_AUTH_USER,
	TRACK_ITEM_GLOBAL,      /* key only: one window for all traffic */
	TRACK_ITEM_OVERQUOTA_RCPT,  /* recipients answered 452/552 (mailbox full) */
	TRACK_ITEM_NULL_SENDER,     /* transactions with MAIL FROM:<> (bounces) */
	TRACK_ITEM_ACCEPTED_RCPT,   /* recipients answered 2xx */
	TRACK_ITEM_AUTO_SUBMITTED,  /* Auto-Submitted not "no", Precedence bulk/junk/list */
	TRACK_ITEM_CLIENT_NET,      /* key: the client's /24 (IPv4) or /64 (IPv6) */
	TRACK_ITEM_MAX
};

struct track_def {
	uint32_t rule;              /* rule id of the track rule */
	enum track_measure measure;
	enum track_item item;       /* what is counted (TRACK_ITEM_NONE: transactions) */
	enum track_item key;        /* per what */
	uint64_t window_ms;
	enum rule_cmp cmp;
	double threshold;
	uint64_t min_events;        /* "min N": no verdict below N events */
};

struct rule {
	const char *name;
	enum rule_type type;
	enum rule_test test;
	enum rule_skip skip;

	/* RULE_TEST_REGEX */
	const char *pattern;        /* regex body, delimiters removed */
	unsigned re_flags;          /* enum rule_re_flag */
	bool negate;                /* !~ (and !exists: none in SA; kept false) */

	/* header / mimeheader: field name as written, or ALL / ToCc /
	 * EnvelopeFrom / MESSAGEID; if_unset is NULL when not given */
	const char *field;
	unsigned mods;              /* enum rule_hdr_mod bits */
	const char *if_unset;

	/* RULE_TEST_COUNT */
	enum rule_cmp cmp;
	double cmp_value;

	/* RULE_TEST_EVAL */
	enum rule_eval eval;
	const char *eval_text;      /* the whole eval:... text, for skips too */
	const char *eval_args[3];
	unsigned neval_args;

	/* RULE_TEST_META: RPN, meta_ops[0 .. nmeta_ops-1] */
	struct meta_op *meta_ops;
	uint32_t nmeta_ops;
	const char *meta_text;

	/* RULE_TEST_TRACK: index into rule_set.tracks */
	uint32_t track;

	double score;               /* resolved at the end of loading */
	bool score_given;
	bool scored;                /* false for __ sub-rules: not reported */
	const char *describe;
	unsigned tflags;            /* enum rule_tflag */
	uint32_t maxhits;           /* tflags maxhits=N, 0 = unlimited */
	const char *tflags_text;
	int priority;

	const char *file;           /* where it was (last) defined */
	uint32_t line;
};

struct rule_error {
	const char *file;
	uint32_t line;
	char *reason;
};

/* An action: a name (tag, block, ...) and the score from which it applies. */
struct rule_action {
	const char *name;
	double threshold;
};

struct rule_set_counts {
	uint64_t files;
	uint64_t lines;
	uint64_t rules_read;        /* rule definitions (re-definitions too) */
	uint64_t rules;             /* distinct rules in the set */
	uint64_t by_type[RULE_TYPE_MAX];
	uint64_t skipped[RULE_SKIP_MAX];
	uint64_t settings_ignored;  /* SpamAssassin settings with no meaning here */
	uint64_t lang_skipped;      /* lang xx ... lines */
	uint64_t blocks_skipped;    /* if/ifplugin blocks evaluated false */
	uint64_t scores_unused;     /* score lines for rules never defined */
	uint64_t meta_undefined_deps;   /* metas naming an undefined rule (it reads 0) */
	uint64_t replace_tags_applied;
};

struct rule_set {
	struct rule *rules;
	uint32_t nrules, cap_rules;

	uint32_t *name_table;       /* open addressing: rule id + 1, 0 = empty */
	uint32_t name_table_size;   /* power of two */

	uint32_t *meta_order;       /* ids of runnable metas, dependencies first */
	uint32_t nmeta_order;

	struct track_def *tracks;
	uint32_t ntracks;

	struct rule_action *actions;    /* sorted by threshold, ascending */
	uint32_t nactions;

	struct rule_error *errors;
	uint32_t nerrors, cap_errors;

	char **plugins_loaded;      /* loadplugin lines, recorded */
	uint32_t nplugins_loaded;

	double required_score;      /* SpamAssassin's; 0 when never set */

	struct rule_set_counts counts;

	/* Private parser state (strings, ReplaceTags, pending scores). */
	struct rules_parse_state *ps;
};

/* Creates an empty rule set. Returns NULL on allocation failure. The caller
 * owns it and frees it with rule_set_free(). */
struct rule_set *rule_set_new(void);

/* Reads a directory (its *.cf files in name order) or a single file into set.
 * Errors are appended to set->errors; returns 0, or -ENOMEM when the set
 * could not be built at all (then the set is still safe to free). Several
 * calls add to the same set (later definitions override earlier ones). */
int rules_load_path(struct rule_set *set, const char *path);

/* Parses rule text as if it were the file named file_label (no includes are
 * allowed relative to nothing: include resolves against file_label's dir).
 * Same return convention as rules_load_path(). */
int rules_load_text(struct rule_set *set, const char *file_label,
		    const char *text, size_t len);

/* Ends loading: applies ReplaceTags, resolves scores (defaults: 1.0, 0.01
 * for T_ rules, negated for tflags nice), marks zero-score and unsupported
 * rules skipped, compiles metas to RPN and orders them. Errors are appended.
 * Returns 0 or -ENOMEM. Call once, after the last load. */
int rules_finish(struct rule_set *set);

void rule_set_free(struct rule_set *set);

/* Rule id by name, or -1. */
int32_t rules_find(const struct rule_set *set, const char *name);

/* Meta evaluation: returns the value of meta rule id given per-rule hit
 * counts (hits[id] for every rule id; metas already evaluated must be set). */
double rules_meta_eval(const struct rule_set *set, uint32_t id,
		       const uint32_t *hits);

/* The action for a score: the name of the highest threshold <= score, or
 * "pass" below all of them. The string is owned by the set. */
const char *rules_action_for(const struct rule_set *set, double score);

/* Checks the internal invariants (name table, meta order, RPN stack depth).
 * Returns 0 or -EINVAL; tests call it after every load. */
int rule_set_validate(const struct rule_set *set);

const char *rule_type_name(enum rule_type t);
const char *rule_skip_name(enum rule_skip s);
const char *track_item_name(enum track_item it);

/* Prints the load counts (one "name: value" per line) to out. */
void rules_print_counts(const struct rule_set *set, FILE *out);

#endif
