/* rules: rule-file parser and rule set; see rules.h and docs/rules.md.
 *
 * Loading is two-phase. Phase one (rules_load_*) reads lines into rule
 * entries: any directive that names a rule (score, describe, tflags, ...)
 * creates the entry if needed, because SpamAssassin lets these come before
 * or after the definition (50_scores.cf follows 20_*.cf). Phase two
 * (rules_finish) drops entries that were never defined, resolves scores,
 * applies ReplaceTags and compiles metas, once every name is known.
 */
#include "rules.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mem.h"

#define RULES_MAX_FILE_SIZE (64u << 20)
#define ARENA_CHUNK 65536

/* The version breakwater answers to `if (version >= X)`: the SpamAssassin
 * rules it is compatible with (4.0.1). */
#define RULES_SA_VERSION 4.000001

/* ------------------------------------------------------------------ */
/* string arena: every string a rule set keeps; freed all at once       */

struct arena_chunk {
	struct arena_chunk *next;
	size_t used, size;
	char data[];
};

/* A ReplaceTags definition (replace_tag / _pre / _post / _inter). */
enum rtag_kind {
	RTAG_TAG = 1,
	RTAG_PRE,
	RTAG_POST,
	RTAG_INTER,
};

struct rtag {
	enum rtag_kind kind;
	const char *name;
	const char *value;
};

struct cond_frame {
	bool parent_active;     /* was the enclosing context active */
	bool cond;              /* value of the if/ifplugin test */
	bool seen_else;
	const char *file;
	uint32_t line;
};

struct rules_parse_state {
	struct arena_chunk *arena;
	struct rtag *rtags;
	uint32_t nrtags, cap_rtags;
	char **replace_rules;   /* names listed in replace_rules */
	uint32_t nreplace, cap_replace;
	const char *replace_start, *replace_end;
	bool finished;
	int include_depth;
	/* per-rule: score given as (relative) bits, kept out of struct rule */
	uint8_t *defined;       /* 1 when a definition line was seen */
	uint32_t cap_defined;
};

static char *arena_alloc(struct rule_set *set, size_t n)
{
	struct rules_parse_state *ps = set->ps;
	struct arena_chunk *c = ps->arena;

	if (!c || c->size - c->used < n) {
		size_t size = n > ARENA_CHUNK ? n : ARENA_CHUNK;

		c = mem_alloc(MEM_RULES, sizeof(*c) + size);
		if (!c)
			return NULL;
		c->next = ps->arena;
		c->used = 0;
		c->size = size;
		ps->arena = c;
	}
	c->used += n;
	return c->data + c->used - n;
}

static const char *arena_strndup(struct rule_set *set, const char *s, size_t n)
{
	char *p = arena_alloc(set, n + 1);

	if (!p)
		return NULL;
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static const char *arena_strdup(struct rule_set *set, const char *s)
{
	return arena_strndup(set, s, strlen(s));
}

/* ------------------------------------------------------------------ */
/* errors                                                               */

static void add_error(struct rule_set *set, const char *file, uint32_t line,
		      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void add_error(struct rule_set *set, const char *file, uint32_t line,
		      const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	if (set->nerrors == set->cap_errors) {
		uint32_t cap = set->cap_errors ? set->cap_errors * 2 : 16;
		struct rule_error *e = mem_realloc(MEM_RULES, set->errors, cap * sizeof(*e));

		if (!e)
			return;     /* counted in mem_stats.alloc_fail */
		set->errors = e;
		set->cap_errors = cap;
	}
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	set->errors[set->nerrors].file = file ? file : "(none)";
	set->errors[set->nerrors].line = line;
	set->errors[set->nerrors].reason = mem_strdup(MEM_RULES, buf);
	if (set->errors[set->nerrors].reason)
		set->nerrors++;
}

/* ------------------------------------------------------------------ */
/* names                                                                */

static uint32_t name_hash(const char *s)
{
	uint32_t h = 2166136261u;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 16777619u;
	return h;
}

static int name_table_grow(struct rule_set *set)
{
	uint32_t size = set->name_table_size ? set->name_table_size * 2 : 1024;
	uint32_t *t;

	while (size < (set->nrules + 1) * 2)
		size *= 2;
	t = mem_calloc(MEM_RULES, size, sizeof(*t));

	if (!t)
		return -ENOMEM;
	for (uint32_t id = 0; id < set->nrules; id++) {
		uint32_t i = name_hash(set->rules[id].name) & (size - 1);

		while (t[i])
			i = (i + 1) & (size - 1);
		t[i] = id + 1;
	}
	mem_free(MEM_RULES, set->name_table);
	set->name_table = t;
	set->name_table_size = size;
	return 0;
}

int32_t rules_find(const struct rule_set *set, const char *name)
{
	if (!set->name_table_size)
		return -1;
	for (uint32_t i = name_hash(name) & (set->name_table_size - 1);;
	     i = (i + 1) & (set->name_table_size - 1)) {
		uint32_t v = set->name_table[i];

		if (!v)
			return -1;
		if (strcmp(set->rules[v - 1].name, name) == 0)
			return (int32_t)(v - 1);
	}
}

/* Valid rule name: SpamAssassin's IS_RULENAME, [_a-zA-Z0-9]{1,100}. */
static bool valid_rule_name(const char *s, size_t n)
{
	if (n == 0 || n > 100)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return false;
	return true;
}

/* Finds or creates the entry for name. Returns the id or -1 (error added). */
static int32_t rule_get(struct rule_set *set, const char *name, const char *file,
			uint32_t line)
{
	int32_t id = rules_find(set, name);
	struct rule *r;

	if (id >= 0)
		return id;
	if (set->nrules >= RULES_MAX_RULES) {
		add_error(set, file, line, "too many rules (limit %u)", RULES_MAX_RULES);
		return -1;
	}
	if (set->nrules == set->cap_rules) {
		uint32_t cap = set->cap_rules ? set->cap_rules * 2 : 256;
		struct rule *nr = mem_realloc(MEM_RULES, set->rules, cap * sizeof(*nr));
		uint8_t *nd;

		if (!nr)
			goto fail_alloc;
		set->rules = nr;
		nd = mem_realloc(MEM_RULES, set->ps->defined, cap);
		if (!nd)
			goto fail_alloc;
		set->ps->defined = nd;
		set->cap_rules = cap;
	}
	if ((set->nrules + 1) * 2 > set->name_table_size && name_table_grow(set) < 0)
		goto fail_alloc;
	id = (int32_t)set->nrules;
	r = &set->rules[id];
	memset(r, 0, sizeof(*r));
	r->name = arena_strdup(set, name);
	if (!r->name)
		goto fail_alloc;
	r->file = file;
	r->line = line;
	set->ps->defined[id] = 0;
	set->nrules++;
	{
		uint32_t i = name_hash(name) & (set->name_table_size - 1);

		while (set->name_table[i])
			i = (i + 1) & (set->name_table_size - 1);
		set->name_table[i] = (uint32_t)id + 1;
	}
	return id;
fail_alloc:
	add_error(set, file, line, "out of memory");
	return -1;
}

/* ------------------------------------------------------------------ */
/* small lexing helpers                                                 */

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* Copies the next whitespace-delimited word into buf; returns the position
 * after it, or NULL if there is none or it does not fit. */
static const char *next_word(const char *p, char *buf, size_t bufsz)
{
	size_t n = 0;

	p = skip_ws(p);
	if (!*p)
		return NULL;
	while (*p && *p != ' ' && *p != '\t') {
		if (n + 1 >= bufsz)
			return NULL;
		buf[n++] = *p++;
	}
	buf[n] = '\0';
	return p;
}

static bool parse_double(const char *s, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	return end != s && *end == '\0' && errno == 0 && isfinite(*out);
}

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;

	if (!isdigit((unsigned char)*s))
		return false;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return *end == '\0' && errno == 0;
}

/* Parses a Perl regex literal at p: /re/flags or m<delim>re<delim>flags.
 * On success stores the pattern (arena) and flags and returns the position
 * after the flags; on failure returns NULL with *why set. */
static const char *parse_regex(struct rule_set *set, const char *p,
			       const char **pattern, unsigned *flags, const char **why)
{
	char open, close;
	int depth = 0;
	const char *start;

	p = skip_ws(p);
	if (*p == '/') {
		open = close = '/';
	} else if (*p == 'm' && p[1] && !isalnum((unsigned char)p[1]) &&
		   p[1] != '_' && p[1] != ' ' && p[1] != '\t') {
		open = *++p;
		switch (open) {
		case '{': close = '}'; break;
		case '(': close = ')'; break;
		case '[': close = ']'; break;
		case '<': close = '>'; break;
		default: close = open; break;
		}
	} else {
		*why = "expected a regex (/.../ or m{...})";
		return NULL;
	}
	start = ++p;
	for (;; p++) {
		if (!*p) {
			*why = "unterminated regex";
			return NULL;
		}
		if (*p == '\\' && p[1]) {
			p++;
			continue;
		}
		if (open != close && *p == open) {
			depth++;
		} else if (*p == close) {
			if (depth == 0)
				break;
			depth--;
		}
	}
	*pattern = arena_strndup(set, start, (size_t)(p - start));
	if (!*pattern) {
		*why = "out of memory";
		return NULL;
	}
	p++;
	*flags = 0;
	for (; isalpha((unsigned char)*p); p++) {
		switch (*p) {
		case 'i': *flags |= RULE_RE_CASELESS; break;
		case 'm': *flags |= RULE_RE_MULTILINE; break;
		case 's': *flags |= RULE_RE_DOTALL; break;
		case 'x': *flags |= RULE_RE_EXTENDED; break;
		case 'g': case 'o': break;   /* no meaning for a test */
		default:
			*why = "unsupported regex flag";
			return NULL;
		}
	}
	return p;
}

/* ------------------------------------------------------------------ */
/* plugins and if-expressions                                           */

/* Plugins breakwater treats as loaded: the ones Debian's SpamAssassin 4
 * loads by default (/etc/spamassassin/v*.pre). A loaded plugin's rules are
 * read; each is then compiled (regex), done natively (a few evals), or
 * skipped and counted by reason. So `ifplugin` blocks read like they do for
 * SpamAssassin run with network tests and Bayes off, and nothing is dropped
 * silently. Plugins named by loadplugin in rule files are loaded too. */
static const char *const default_plugins[] = {
	"URIDNSBL", "SPF", "Pyzor", "Razor2", "SpamCop", "AutoLearnThreshold",
	"WelcomeListSubject", "WhiteListSubject", "MIMEHeader", "ReplaceTags",
	"DKIM", "Check", "HTTPSMismatch", "URIDetail", "Bayes", "BodyEval",
	"DNSEval", "HTMLEval", "HeaderEval", "MIMEEval", "RelayEval", "URIEval",
	"WLBLEval", "VBounce", "ImageInfo", "FreeMail", "AskDNS", "HashBL",
	"DMARC",
};

/* can(...) features breakwater has (docs/rules.md explains each). */
static const char *const features[] = {
	"Mail::SpamAssassin::Conf::feature_bug6558_free",
	"Mail::SpamAssassin::Conf::feature_welcomelist_blocklist",
	"Mail::SpamAssassin::Conf::compat_welcomelist_blocklist",
	"Mail::SpamAssassin::Conf::perl_min_version_5010000",
	"Mail::SpamAssassin::Conf::feature_registryboundaries",
	"Mail::SpamAssassin::Conf::feature_yesno_takes_args",
	"Mail::SpamAssassin::Conf::feature_originating_ip_headers",
	"Mail::SpamAssassin::Conf::feature_dns_local_ports_permit_avoid",
	"Mail::SpamAssassin::Conf::feature_bayes_stopwords",
	"Mail::SpamAssassin::Conf::feature_dns_block_rule",
	"Mail::SpamAssassin::Plugin::BodyEval::has_check_body_length",
};

static bool plugin_loaded(const struct rule_set *set, const char *name, size_t n)
{
	static const char prefix[] = "Mail::SpamAssassin::Plugin::";
	size_t pl = sizeof(prefix) - 1;

	for (uint32_t i = 0; i < set->nplugins_loaded; i++)
		if (strlen(set->plugins_loaded[i]) == n &&
		    memcmp(set->plugins_loaded[i], name, n) == 0)
			return true;
	if (n <= pl || memcmp(name, prefix, pl) != 0)
		return false;
	for (size_t i = 0; i < sizeof(default_plugins) / sizeof(default_plugins[0]); i++)
		if (strlen(default_plugins[i]) == n - pl &&
		    memcmp(default_plugins[i], name + pl, n - pl) == 0)
			return true;
	return false;
}

static bool feature_present(const char *name, size_t n)
{
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		if (strlen(features[i]) == n && memcmp(features[i], name, n) == 0)
			return true;
	return false;
}

#define RULES_STR_(x) #x
#define RULES_STR(x) RULES_STR_(x)   /* a limit's value in an error message */

/* A tiny evaluator for `if` lines: ! && || ( ) comparisons, numbers,
 * `version`, plugin(NAME), can(NAME), perl_version. Values are doubles;
 * on a syntax error ifx.err is set. */
struct ifx {
	const struct rule_set *set;
	const char *p;
	const char *err;
	unsigned depth;              /* nesting of ! and (: recursion, bounded */
};

static double ifx_or(struct ifx *x);

static void ifx_ws(struct ifx *x)
{
	while (isspace((unsigned char)*x->p))
		x->p++;
}

static double ifx_primary(struct ifx *x)
{
	ifx_ws(x);
	if ((*x->p == '!' || *x->p == '(') && x->depth >= RULES_MAX_EXPR_DEPTH) {
		x->err = "if expression nested too deeply (more than "
			 RULES_STR(RULES_MAX_EXPR_DEPTH) " levels)";
		return 0;
	}
	if (*x->p == '!') {
		double v;

		x->p++;
		x->depth++;
		v = ifx_primary(x) == 0.0 ? 1.0 : 0.0;
		x->depth--;
		return v;
	}
	if (*x->p == '(') {
		double v;

		x->p++;
		x->depth++;
		v = ifx_or(x);
		x->depth--;
		if (x->err)
			return 0;   /* the innermost error stands */
		ifx_ws(x);
		if (*x->p != ')') {
			x->err = "missing ')'";
			return 0;
		}
		x->p++;
		return v;
	}
	if (isdigit((unsigned char)*x->p) || *x->p == '.') {
		char *end;
		double v = strtod(x->p, &end);

		x->p = end;
		return v;
	}
	if (isalpha((unsigned char)*x->p) || *x->p == '_') {
		const char *w = x->p;
		size_t n;

		while (isalnum((unsigned char)*x->p) || *x->p == '_')
			x->p++;
		n = (size_t)(x->p - w);
		if (n == 7 && memcmp(w, "version", 7) == 0)
			return RULES_SA_VERSION;
		if (n == 12 && memcmp(w, "perl_version", 12) == 0)
			return 5.036000;
		if ((n == 6 && memcmp(w, "plugin", 6) == 0) ||
		    (n == 3 && memcmp(w, "can", 3) == 0)) {
			const char *a;
			size_t an;
			bool is_plugin = n == 6;

			ifx_ws(x);
			if (*x->p != '(') {
				x->err = "expected '(' after plugin/can";
				return 0;
			}
			a = ++x->p;
			while (*x->p && *x->p != ')')
				x->p++;
			if (*x->p != ')') {
				x->err = "missing ')'";
				return 0;
			}
			an = (size_t)(x->p - a);
			x->p++;
			while (an && isspace((unsigned char)*a)) {
				a++;
				an--;
			}
			while (an && isspace((unsigned char)a[an - 1]))
				an--;
			if (is_plugin)
				return plugin_loaded(x->set, a, an) ? 1.0 : 0.0;
			return feature_present(a, an) ? 1.0 : 0.0;
		}
		x->err = "unknown word in if expression";
		return 0;
	}
	x->err = "syntax error in if expression";
	return 0;
}

static double ifx_cmp(struct ifx *x)
{
	double a = ifx_primary(x);

	for (;;) {
		double b;

		ifx_ws(x);
		if (x->err)
			return 0;
		if (x->p[0] == '>' && x->p[1] == '=') {
			x->p += 2; b = ifx_primary(x); a = a >= b;
		} else if (x->p[0] == '<' && x->p[1] == '=') {
			x->p += 2; b = ifx_primary(x); a = a <= b;
		} else if (x->p[0] == '=' && x->p[1] == '=') {
			x->p += 2; b = ifx_primary(x); a = a == b;
		} else if (x->p[0] == '!' && x->p[1] == '=') {
			x->p += 2; b = ifx_primary(x); a = a != b;
		} else if (x->p[0] == '>') {
			x->p += 1; b = ifx_primary(x); a = a > b;
		} else if (x->p[0] == '<') {
			x->p += 1; b = ifx_primary(x); a = a < b;
		} else {
			return a;
		}
	}
}

static double ifx_and(struct ifx *x)
{
	double a = ifx_cmp(x);

	for (;;) {
		ifx_ws(x);
		if (x->err || !(x->p[0] == '&' && x->p[1] == '&'))
			return a;
		x->p += 2;
		double b = ifx_cmp(x);

		a = (a != 0.0 && b != 0.0);
	}
}

static double ifx_or(struct ifx *x)
{
	double a = ifx_and(x);

	for (;;) {
		ifx_ws(x);
		if (x->err || !(x->p[0] == '|' && x->p[1] == '|'))
			return a;
		x->p += 2;
		double b = ifx_and(x);

		a = (a != 0.0 || b != 0.0);
	}
}

/* Returns 1/0 for the expression, or -1 with *why set. */
static int if_eval(const struct rule_set *set, const char *expr, const char **why)
{
	struct ifx x = { .set = set, .p = expr, .err = NULL };
	double v = ifx_or(&x);

	ifx_ws(&x);
	if (!x.err && *x.p)
		x.err = "trailing text in if expression";
	if (x.err) {
		*why = x.err;
		return -1;
	}
	return v != 0.0;
}

/* ------------------------------------------------------------------ */
/* directives                                                           */

struct parse_ctx {
	struct rule_set *set;
	const char *file;       /* arena copy */
	uint32_t line;
	struct cond_frame conds[RULES_MAX_IF_DEPTH];
	int nconds;
};

static bool ctx_active(const struct parse_ctx *c)
{
	if (c->nconds == 0)
		return true;
	const struct cond_frame *f = &c->conds[c->nconds - 1];

	return f->parent_active && (f->seen_else ? !f->cond : f->cond);
}

/* SpamAssassin settings that mean nothing to breakwater: accepted, counted
 * in counts.settings_ignored. */
static const char *const ignored_settings[] = {
	"def_whitelist_auth", "def_welcomelist_auth", "freemail_domains",
	"util_rb_2tld", "util_rb_3tld", "util_rb_tld", "clear_util_rb",
	"bayes_ignore_header", "reuse", "url_shortener", "url_shortener_get",
	"enlist_uri_host", "delist_uri_host", "def_whitelist_from_dkim",
	"def_welcomelist_from_dkim", "adsp_override", "uridnsbl_skip_domain",
	"enlist_addrlist", "delist_addrlist", "test", "dns_local_ports_avoid",
	"dns_local_ports_permit", "def_whitelist_from_spf",
	"def_welcomelist_from_spf", "require_version", "report", "unsafe_report",
	"redirector_pattern", "dns_block_rule", "add_header", "remove_header",
	"originating_ip_headers", "clear_originating_ip_headers", "report_safe",
	"report_contact", "ok_locales", "ok_languages", "fns_ignore_headers",
	"fns_ignore_dkim", "fns_check", "clear_report_template",
	"clear_unsafe_report_template", "clear_headers", "bayes_auto_learn",
	"bayes_auto_learn_threshold_spam", "bayes_auto_learn_threshold_nonspam",
	"asn_lookup", "asn_lookup_ipv6", "urirhssub", "urirhsbl", "uridnssub",
	"uridnsbl", "whitelist_from", "welcomelist_from", "blacklist_from",
	"blocklist_from", "whitelist_from_rcvd", "welcomelist_from_rcvd",
	"trusted_networks", "internal_networks", "msa_networks",
	"clear_trusted_networks", "clear_internal_networks", "use_bayes",
	"use_auto_whitelist", "use_auto_welcomelist", "skip_rbl_checks",
	"dns_available", "rewrite_header", "report_charset", "envelope_sender_header",
	"whitelist_to", "welcomelist_to", "more_spam_to", "all_spam_to",
	"bayes_stopword_en", "bayes_stopword_de", "bayes_stopword_fr",
	"bayes_stopword_es", "bayes_stopword_it", "bayes_stopword_nl",
	"bayes_stopword_pt", "bayes_stopword_ru", "bayes_stopword_se",
	"bayes_stopword_no", "bayes_stopword_dk", "bayes_stopword_fi",
	"bayes_stopword_hu", "bayes_stopword_gr", "bayes_stopword_tr",
	"bayes_stopword_pl", "util_rb_", "hashbl_ignore", "hashbl_acl",
	"freemail_whitelist", "freemail_welcomelist", "freemail_import_whitelist_auth",
	"whitelist_auth", "welcomelist_auth", "unwhitelist_auth", "unwelcomelist_auth",
	"score_set", "dcc_path", "razor_config", "pyzor_path", "uri_detail",
	"shortcircuit", "whitelist_bounce_relays", "welcomelist_bounce_relays",
	"url_shortener_cache_type", "textcat_max_languages", "dkim_minimum_key_bits",
};

static bool is_ignored_setting(const char *d)
{
	for (size_t i = 0; i < sizeof(ignored_settings) / sizeof(ignored_settings[0]); i++)
		if (strcmp(d, ignored_settings[i]) == 0)
			return true;
	return false;
}

/* Marks a rule entry as defined by this line; a later definition of the same
 * name replaces the test (SpamAssassin's behaviour) but keeps score,
 * describe and tflags, which are separate directives. */
static struct rule *define_rule(struct parse_ctx *c, const char *name, enum rule_type type)
{
	struct rule_set *set = c->set;
	int32_t id;
	struct rule *r;

	if (!valid_rule_name(name, strlen(name))) {
		add_error(set, c->file, c->line, "invalid rule name '%s'", name);
		return NULL;
	}
	id = rule_get(set, name, c->file, c->line);
	if (id < 0)
		return NULL;
	r = &set->rules[id];
	r->type = type;
	r->test = RULE_TEST_NONE;
	r->skip = RULE_SKIP_NONE;
	r->pattern = NULL;
	r->re_flags = 0;
	r->negate = false;
	r->field = NULL;
	r->mods = 0;
	r->if_unset = NULL;
	r->eval = RULE_EVAL_NONE;
	r->eval_text = NULL;
	r->neval_args = 0;
	r->meta_text = NULL;
	r->file = c->file;
	r->line = c->line;
	set->ps->defined[id] = 1;
	set->counts.rules_read++;
	return r;
}

/* Evals that need the network or Bayes, by name prefix. */
static const struct { const char *prefix; enum rule_skip why; } eval_reasons[] = {
	{ "check_rbl", RULE_SKIP_NET }, { "check_uridnsbl", RULE_SKIP_NET },
	{ "check_dns", RULE_SKIP_NET }, { "check_razor", RULE_SKIP_NET },
	{ "check_pyzor", RULE_SKIP_NET }, { "check_dcc", RULE_SKIP_NET },
	{ "check_spf", RULE_SKIP_NET }, { "check_dkim", RULE_SKIP_NET },
	{ "check_dmarc", RULE_SKIP_NET }, { "check_hashbl", RULE_SKIP_NET },
	{ "check_uri_host_listed", RULE_SKIP_NET }, { "check_asn", RULE_SKIP_NET },
	{ "check_for_spf", RULE_SKIP_NET }, { "check_bayes", RULE_SKIP_BAYES },
	{ "check_askdns", RULE_SKIP_NET }, { "short_url", RULE_SKIP_NET },
};

static const struct { const char *name; enum rule_eval ev; unsigned nargs; } native_evals[] = {
	{ "check_for_missing_to_header", RULE_EVAL_MISSING_TO_HEADER, 0 },
	{ "check_header_count_range", RULE_EVAL_HEADER_COUNT_RANGE, 3 },
	{ "subject_is_all_caps", RULE_EVAL_SUBJECT_ALL_CAPS, 0 },
	{ "check_body_length", RULE_EVAL_BODY_LENGTH, 1 },
	{ "check_unresolved_template", RULE_EVAL_UNRESOLVED_TEMPLATE, 0 },
	{ "check_illegal_chars", RULE_EVAL_ILLEGAL_CHARS, 3 },
};

/* eval:name(args): native, or skipped by reason. */
static void set_eval(struct parse_ctx *c, struct rule *r, const char *text)
{
	const char *fn = text + 5, *open = strchr(fn, '(');
	size_t fnlen = open ? (size_t)(open - fn) : strlen(fn);

	r->eval_text = arena_strdup(c->set, text);
	r->test = RULE_TEST_NONE;
	r->skip = RULE_SKIP_EVAL;
	for (size_t i = 0; i < sizeof(eval_reasons) / sizeof(eval_reasons[0]); i++)
		if (strncmp(fn, eval_reasons[i].prefix, strlen(eval_reasons[i].prefix)) == 0) {
			r->skip = eval_reasons[i].why;
			return;
		}
	for (size_t i = 0; i < sizeof(native_evals) / sizeof(native_evals[0]); i++) {
		const char *p;
		unsigned n = 0;

		if (strlen(native_evals[i].name) != fnlen ||
		    memcmp(native_evals[i].name, fn, fnlen) != 0 || !open)
			continue;
		/* arguments: 'a', "b", or bare words, comma separated */
		p = open + 1;
		for (;;) {
			const char *a;
			char q = 0;

			p = skip_ws(p);
			if (*p == ')')
				break;
			if (n == 3)
				return;    /* more than we know: leave it skipped */
			if (*p == '\'' || *p == '"')
				q = *p++;
			a = p;
			while (*p && (q ? *p != q : (*p != ',' && *p != ')' && *p != ' ')))
				p++;
			if (!*p)
				return;
			r->eval_args[n++] = arena_strndup(c->set, a, (size_t)(p - a));
			if (q)
				p++;
			p = skip_ws(p);
			if (*p == ',')
				p++;
		}
		/* check_body_length takes (undef, min) in Perl: one arg here */
		if (n != native_evals[i].nargs)
			return;
		r->neval_args = n;
		r->eval = native_evals[i].ev;
		r->test = RULE_TEST_EVAL;
		r->skip = RULE_SKIP_NONE;
		return;
	}
}

/* SpamAssassin-made pseudo headers breakwater does not synthesise. */
static bool pseudo_header(const char *f)
{
	return strncasecmp(f, "X-Spam-Relays-", 14) == 0 ||
	       strncasecmp(f, "ALL-TRUSTED", 11) == 0 ||
	       strncasecmp(f, "ALL-UNTRUSTED", 13) == 0 ||
	       strncasecmp(f, "ALL-INTERNAL", 12) == 0 ||
	       strncasecmp(f, "ALL-EXTERNAL", 12) == 0 ||
	       strncasecmp(f, "X-Spam-DKIM", 11) == 0 ||
	       strncasecmp(f, "X-Spam-Status", 13) == 0 ||
	       strncasecmp(f, "X-Spam-Level", 12) == 0;
}

static bool parse_cmp(const char **pp, enum rule_cmp *cmp)
{
	const char *p = skip_ws(*pp);

	if (p[0] == '>' && p[1] == '=') { *cmp = RULE_CMP_GE; p += 2; }
	else if (p[0] == '<' && p[1] == '=') { *cmp = RULE_CMP_LE; p += 2; }
	else if (p[0] == '=' && p[1] == '=') { *cmp = RULE_CMP_EQ; p += 2; }
	else if (p[0] == '!' && p[1] == '=') { *cmp = RULE_CMP_NE; p += 2; }
	else if (p[0] == '>') { *cmp = RULE_CMP_GT; p += 1; }
	else if (p[0] == '<') { *cmp = RULE_CMP_LT; p += 1; }
	else return false;
	*pp = p;
	return true;
}

/* header NAME ... and mimeheader NAME ... */
static void do_header(struct parse_ctx *c, const char *rest, enum rule_type type)
{
	char name[128], field[256];
	const char *p = next_word(rest, name, sizeof(name)), *why = NULL;
	struct rule *r;
	char *colon;

	if (!p) {
		add_error(c->set, c->file, c->line, "%s: missing rule name",
			  type == RULE_TYPE_HEADER ? "header" : "mimeheader");
		return;
	}
	r = define_rule(c, name, type);
	if (!r)
		return;
	p = skip_ws(p);
	if (strncmp(p, "eval:", 5) == 0) {
		set_eval(c, r, p);
		return;
	}
	if (strncmp(p, "rbleval:", 8) == 0) {
		r->eval_text = arena_strdup(c->set, p);
		r->skip = RULE_SKIP_NET;
		return;
	}
	if (strncmp(p, "exists:", 7) == 0) {
		if (!next_word(p + 7, field, sizeof(field))) {
			add_error(c->set, c->file, c->line, "rule %s: exists: needs a field name", name);
			r->skip = RULE_SKIP_REGEX;
			return;
		}
		r->field = arena_strdup(c->set, field);
		r->test = RULE_TEST_EXISTS;
		if (pseudo_header(field))
			r->skip = RULE_SKIP_PSEUDO_HEADER, r->test = RULE_TEST_NONE;
		return;
	}
	/* Field[:mod] op ... ; the field ends at whitespace or at =~ / !~ */
	{
		size_t n = 0;

		while (*p && *p != ' ' && *p != '\t' && !(p[0] == '=' && p[1] == '~') &&
		       !(p[0] == '!' && p[1] == '~') && !(p[0] == '>' || p[0] == '<') &&
		       n + 1 < sizeof(field))
			field[n++] = *p++;
		field[n] = '\0';
		if (n == 0) {
			add_error(c->set, c->file, c->line, "rule %s: missing header field", name);
			goto bad;
		}
	}
	r->mods = 0;
	colon = strchr(field, ':');
	if (colon) {
		static const struct { const char *n; unsigned bit; } mods[] = {
			{ "raw", RULE_HDR_RAW }, { "addr", RULE_HDR_ADDR }, { "name", RULE_HDR_NAME },
			{ "host", RULE_HDR_HOST }, { "domain", RULE_HDR_DOMAIN }, { "ip", RULE_HDR_IP },
			{ "revip", RULE_HDR_REVIP }, { "first", RULE_HDR_FIRST }, { "last", RULE_HDR_LAST },
			{ "count", RULE_HDR_COUNT }, { "addrcount", RULE_HDR_ADDRCOUNT },
		};
		char *m = colon;

		*colon = '\0';
		while (m) {
			char *next = strchr(m + 1, ':');
			bool found = false;

			if (next)
				*next = '\0';
			for (size_t i = 0; i < sizeof(mods) / sizeof(mods[0]); i++)
				if (strcasecmp(m + 1, mods[i].n) == 0) {
					r->mods |= mods[i].bit;
					found = true;
				}
			if (!found) {
				add_error(c->set, c->file, c->line, "rule %s: unknown header modifier ':%s'",
					  name, m + 1);
				goto bad;
			}
			m = next;
		}
		if ((r->mods & (RULE_HDR_COUNT | RULE_HDR_ADDRCOUNT)) &&
		    (r->mods & ~(unsigned)(RULE_HDR_COUNT | RULE_HDR_ADDRCOUNT | RULE_HDR_RAW))) {
			add_error(c->set, c->file, c->line,
				  "rule %s: :count and :addrcount do not combine with other modifiers", name);
			goto bad;
		}
	}
	r->field = arena_strdup(c->set, field);
	p = skip_ws(p);
	if (r->mods & (RULE_HDR_COUNT | RULE_HDR_ADDRCOUNT)) {
		char num[64];

		if (!parse_cmp(&p, &r->cmp) || !next_word(p, num, sizeof(num)) ||
		    !parse_double(num, &r->cmp_value)) {
			add_error(c->set, c->file, c->line,
				  "rule %s: %s:%s needs a comparison and a number (e.g. > 25)",
				  name, field, (r->mods & RULE_HDR_COUNT) ? "count" : "addrcount");
			goto bad;
		}
		r->test = RULE_TEST_COUNT;
		return;
	}
	if (p[0] == '=' && p[1] == '~') {
		r->negate = false;
	} else if (p[0] == '!' && p[1] == '~') {
		r->negate = true;
	} else {
		add_error(c->set, c->file, c->line, "rule %s: expected =~ or !~ after '%s'", name, field);
		goto bad;
	}
	p = parse_regex(c->set, p + 2, &r->pattern, &r->re_flags, &why);
	if (!p) {
		add_error(c->set, c->file, c->line, "rule %s: %s", name, why);
		goto bad;
	}
	p = skip_ws(p);
	if (*p == '[') {
		const char *end = strrchr(p, ']');

		if (strncasecmp(p, "[if-unset:", 10) != 0 || !end) {
			add_error(c->set, c->file, c->line, "rule %s: bad [if-unset: ...] clause", name);
			goto bad;
		}
		{
			const char *v = skip_ws(p + 10), *e = end;

			while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			r->if_unset = arena_strndup(c->set, v, (size_t)(e - v));
		}
		p = skip_ws(end + 1);
	}
	if (*p) {
		add_error(c->set, c->file, c->line, "rule %s: trailing text after regex: '%.40s'", name, p);
		goto bad;
	}
	r->test = RULE_TEST_REGEX;
	if (pseudo_header(field))
		r->test = RULE_TEST_NONE, r->skip = RULE_SKIP_PSEUDO_HEADER;
	else if (strstr(r->pattern, "%{"))
		r->test = RULE_TEST_NONE, r->skip = RULE_SKIP_CAPTURE;
	return;
bad:
	/* defined but broken: never runs; the error fails the load */
	r->test = RULE_TEST_NONE;
	r->skip = RULE_SKIP_REGEX;
}

/* body / rawbody / full / uri NAME /re/flags | eval:... */
static void do_text_rule(struct parse_ctx *c, const char *d, const char *rest,
			 enum rule_type type)
{
	char name[128];
	const char *p = next_word(rest, name, sizeof(name)), *why = NULL;
	struct rule *r;

	if (!p) {
		add_error(c->set, c->file, c->line, "%s: missing rule name", d);
		return;
	}
	r = define_rule(c, name, type);
	if (!r)
		return;
	p = skip_ws(p);
	if (strncmp(p, "eval:", 5) == 0) {
		set_eval(c, r, p);
		return;
	}
	p = parse_regex(c->set, p, &r->pattern, &r->re_flags, &why);
	if (!p) {
		add_error(c->set, c->file, c->line, "rule %s: %s", name, why);
		r->skip = RULE_SKIP_REGEX;
		return;
	}
	if (*skip_ws(p)) {
		add_error(c->set, c->file, c->line, "rule %s: trailing text after regex: '%.40s'",
			  name, skip_ws(p));
		r->skip = RULE_SKIP_REGEX;
		return;
	}
	r->test = RULE_TEST_REGEX;
	if (strstr(r->pattern, "%{"))
		r->test = RULE_TEST_NONE, r->skip = RULE_SKIP_CAPTURE;
}

static void do_meta(struct parse_ctx *c, const char *rest)
{
	char name[128];
	const char *p = next_word(rest, name, sizeof(name));
	struct rule *r;

	if (!p || !*skip_ws(p)) {
		add_error(c->set, c->file, c->line, "meta: needs a name and an expression");
		return;
	}
	r = define_rule(c, name, RULE_TYPE_META);
	if (!r)
		return;
	r->meta_text = arena_strdup(c->set, skip_ws(p));
	r->test = RULE_TEST_META;
}

/* score NAME s0 [s1 s2 s3]; "(n)" makes every score relative. We use set 0
 * (no network, no Bayes): the first number. */
static void do_score(struct parse_ctx *c, const char *rest)
{
	char name[128], w[64];
	const char *p = next_word(rest, name, sizeof(name));
	double v[4];
	int n = 0;
	bool relative = false;
	int32_t id;

	if (!p) {
		add_error(c->set, c->file, c->line, "score: missing rule name");
		return;
	}
	while ((p = next_word(p, w, sizeof(w))) != NULL) {
		char *s = w;
		size_t l = strlen(w);

		if (n == 4) {
			add_error(c->set, c->file, c->line, "score %s: more than 4 scores", name);
			return;
		}
		if (w[0] == '(' && l > 2 && w[l - 1] == ')') {
			relative = true;
			w[l - 1] = '\0';
			s = w + 1;
		}
		if (!parse_double(s, &v[n])) {
			add_error(c->set, c->file, c->line, "score %s: '%s' is not a number", name, w);
			return;
		}
		n++;
	}
	if (n == 0) {
		add_error(c->set, c->file, c->line, "score %s: missing score", name);
		return;
	}
	if (!valid_rule_name(name, strlen(name))) {
		add_error(c->set, c->file, c->line, "invalid rule name '%s'", name);
		return;
	}
	id = rule_get(c->set, name, c->file, c->line);
	if (id < 0)
		return;
	if (relative) {
		/* relative to what is set so far (SpamAssassin: to set 0's value;
		 * ignored when no score exists yet) */
		if (c->set->rules[id].score_given)
			c->set->rules[id].score += v[0];
		return;
	}
	c->set->rules[id].score = v[0];
	c->set->rules[id].score_given = true;
}

static void do_describe(struct parse_ctx *c, const char *rest)
{
	char name[128];
	const char *p = next_word(rest, name, sizeof(name));
	int32_t id;

	if (!p || !valid_rule_name(name, strlen(name))) {
		add_error(c->set, c->file, c->line, "describe: missing or invalid rule name");
		return;
	}
	id = rule_get(c->set, name, c->file, c->line);
	if (id >= 0)
		c->set->rules[id].describe = arena_strdup(c->set, skip_ws(p));
}

static void do_tflags(struct parse_ctx *c, const char *rest)
{
	static const struct { const char *name; unsigned bit; } known[] = {
		{ "multiple", RULE_TF_MULTIPLE }, { "nosubject", RULE_TF_NOSUBJECT },
		{ "net", RULE_TF_NET }, { "nice", RULE_TF_NICE }, { "learn", RULE_TF_LEARN },
		{ "userconf", RULE_TF_USERCONF }, { "noautolearn", RULE_TF_NOAUTOLEARN },
		{ "publish", RULE_TF_PUBLISH }, { "notrim", RULE_TF_NOTRIM },
		{ "domains_only", RULE_TF_DOMAINS_ONLY },
	};
	char name[128], w[128];
	const char *p = next_word(rest, name, sizeof(name));
	int32_t id;
	struct rule *r;

	if (!p || !valid_rule_name(name, strlen(name))) {
		add_error(c->set, c->file, c->line, "tflags: missing or invalid rule name");
		return;
	}
	id = rule_get(c->set, name, c->file, c->line);
	if (id < 0)
		return;
	r = &c->set->rules[id];
	/* tflags replaces earlier tflags for the rule, as in SpamAssassin */
	r->tflags = 0;
	r->maxhits = 0;
	r->tflags_text = arena_strdup(c->set, skip_ws(p));
	while ((p = next_word(p, w, sizeof(w))) != NULL) {
		bool found = false;
		uint64_t mh;

		if (strncmp(w, "maxhits=", 8) == 0) {
			if (!parse_u64(w + 8, &mh) || mh == 0 || mh > UINT32_MAX) {
				add_error(c->set, c->file, c->line, "tflags %s: bad maxhits '%s'", name, w + 8);
				continue;
			}
			r->maxhits = (uint32_t)mh;
			r->tflags |= RULE_TF_MULTIPLE;   /* maxhits implies counting */
			continue;
		}
		for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			if (strcmp(w, known[i].name) == 0) {
				r->tflags |= known[i].bit;
				found = true;
			}
		if (!found)
			r->tflags |= RULE_TF_OTHER;
	}
}

static void do_priority(struct parse_ctx *c, const char *rest)
{
	char name[128], w[64];
	const char *p = next_word(rest, name, sizeof(name));
	char *end;
	long v;
	int32_t id;

	if (!p || !next_word(p, w, sizeof(w))) {
		add_error(c->set, c->file, c->line, "priority: needs a rule name and a number");
		return;
	}
	errno = 0;
	v = strtol(w, &end, 10);
	if (*end || errno || v < -1000000 || v > 1000000) {
		add_error(c->set, c->file, c->line, "priority %s: '%s' is not an integer", name, w);
		return;
	}
	if (!valid_rule_name(name, strlen(name))) {
		add_error(c->set, c->file, c->line, "invalid rule name '%s'", name);
		return;
	}
	id = rule_get(c->set, name, c->file, c->line);
	if (id >= 0)
		c->set->rules[id].priority = (int)v;
}

static void do_action(struct parse_ctx *c, const char *rest)
{
	char name[64], w[64];
	const char *p = next_word(rest, name, sizeof(name));
	double t;
	struct rule_set *set = c->set;
	struct rule_action *a;
	uint32_t i;

	if (!p || !(p = next_word(p, w, sizeof(w))) || *skip_ws(p)) {
		add_error(set, c->file, c->line, "action: expected 'action NAME THRESHOLD'");
		return;
	}
	for (const char *s = name; *s; s++)
		if (!islower((unsigned char)*s) && *s != '_') {
			add_error(set, c->file, c->line, "action: bad name '%s' (lower case letters)", name);
			return;
		}
	if (strcmp(name, "pass") == 0) {
		add_error(set, c->file, c->line, "action: 'pass' is what applies below every threshold");
		return;
	}
	if (!parse_double(w, &t)) {
		add_error(set, c->file, c->line, "action %s: '%s' is not a number", name, w);
		return;
	}
	for (i = 0; i < set->nactions; i++)
		if (strcmp(set->actions[i].name, name) == 0)
			break;
	if (i == set->nactions) {
		a = mem_realloc(MEM_RULES, set->actions, (set->nactions + 1) * sizeof(*a));
		if (!a) {
			add_error(set, c->file, c->line, "out of memory");
			return;
		}
		set->actions = a;
		set->actions[i].name = arena_strdup(set, name);
		set->nactions++;
	}
	set->actions[i].threshold = t;
	/* keep sorted by threshold (insertion sort: a handful of actions) */
	for (uint32_t j = 1; j < set->nactions; j++)
		for (uint32_t k = j; k > 0 && set->actions[k - 1].threshold > set->actions[k].threshold; k--) {
			struct rule_action tmp = set->actions[k];

			set->actions[k] = set->actions[k - 1];
			set->actions[k - 1] = tmp;
		}
}

static const char *const track_item_names[TRACK_ITEM_MAX] = {
	[TRACK_ITEM_NONE] = "none", [TRACK_ITEM_RCPT] = "rcpt",
	[TRACK_ITEM_SENDER] = "sender", [TRACK_ITEM_CLIENT_IP] = "client_ip",
	[TRACK_ITEM_MESSAGE_ID] = "message_id", [TRACK_ITEM_HELO] = "helo",
	[TRACK_ITEM_FINGERPRINT] = "fingerprint", [TRACK_ITEM_REJECTED_RCPT] = "rejected_rcpt",
	[TRACK_ITEM_SENDER_DOMAIN] = "sender_domain", [TRACK_ITEM_RCPT_DOMAIN] = "rcpt_domain",
	[TRACK_ITEM_AUTH_USER] = "auth_user", [TRACK_ITEM_GLOBAL] = "global",
	[TRACK_ITEM_OVERQUOTA_RCPT] = "overquota_rcpt", [TRACK_ITEM_NULL_SENDER] = "null_sender",
	[TRACK_ITEM_ACCEPTED_RCPT] = "accepted_rcpt", [TRACK_ITEM_AUTO_SUBMITTED] = "auto_submitted",
	[TRACK_ITEM_CLIENT_NET] = "client_net",
};

const char *track_item_name(enum track_item it)
{
	return (unsigned)it < TRACK_ITEM_MAX ? track_item_names[it] : "?";
}

static enum track_item track_item_parse(const char *w)
{
	for (int i = 1; i < TRACK_ITEM_MAX; i++)
		if (strcmp(w, track_item_names[i]) == 0)
			return (enum track_item)i;
	return TRACK_ITEM_NONE;
}

static bool parse_duration(const char *w, uint64_t *ms)
{
	char *end;
	unsigned long long v;
	uint64_t mul;

	if (!isdigit((unsigned char)*w))
		return false;
	errno = 0;
	v = strtoull(w, &end, 10);
	if (errno || v == 0)
		return false;
	if (strcmp(end, "ms") == 0) mul = 1;
	else if (strcmp(end, "s") == 0 || *end == '\0') mul = 1000;
	else if (strcmp(end, "m") == 0) mul = 60000;
	else if (strcmp(end, "h") == 0) mul = 3600000;
	else if (strcmp(end, "d") == 0) mul = 86400000;
	else return false;
	if (v > UINT64_MAX / mul)
		return false;
	*ms = v * mul;
	return true;
}

/* track NAME (count | distinct ITEM | ratio ITEM) per KEY over DURATION
 *       OP NUMBER [min N] */
static void do_track(struct parse_ctx *c, const char *rest)
{
	struct rule_set *set = c->set;
	char name[128], w[64];
	const char *p = next_word(rest, name, sizeof(name));
	struct track_def t = { 0 };
	struct track_def *nt;
	struct rule *r;
	const char *err = NULL;

	if (!p) {
		add_error(set, c->file, c->line, "track: missing rule name");
		return;
	}
	if (!(p = next_word(p, w, sizeof(w)))) { err = "missing measure (count, distinct ITEM, ratio ITEM)"; goto bad; }
	if (strcmp(w, "count") == 0) {
		/* "count per KEY" counts transactions; "count ITEM per KEY" ITEMs */
		const char *q = next_word(p, w, sizeof(w));

		t.measure = TRACK_COUNT;
		if (q && strcmp(w, "per") != 0 && (t.item = track_item_parse(w)) != TRACK_ITEM_NONE &&
		    t.item != TRACK_ITEM_GLOBAL)
			p = q;
		else
			t.item = TRACK_ITEM_NONE;
	} else if (strcmp(w, "distinct") == 0 || strcmp(w, "ratio") == 0) {
		t.measure = w[0] == 'd' ? TRACK_DISTINCT : TRACK_RATIO;
		if (!(p = next_word(p, w, sizeof(w))) || (t.item = track_item_parse(w)) == TRACK_ITEM_NONE ||
		    t.item == TRACK_ITEM_GLOBAL) { err = "unknown item after distinct/ratio"; goto bad; }
	} else {
		err = "unknown measure (count, distinct ITEM, ratio ITEM)";
		goto bad;
	}
	if (!(p = next_word(p, w, sizeof(w))) || strcmp(w, "per") != 0) { err = "expected 'per KEY'"; goto bad; }
	if (!(p = next_word(p, w, sizeof(w))) || (t.key = track_item_parse(w)) == TRACK_ITEM_NONE) {
		err = "unknown key after 'per'";
		goto bad;
	}
	if (!(p = next_word(p, w, sizeof(w))) || strcmp(w, "over") != 0) { err = "expected 'over DURATION'"; goto bad; }
	if (!(p = next_word(p, w, sizeof(w))) || !parse_duration(w, &t.window_ms)) {
		err = "bad duration (e.g. 30s, 10m, 2h, 1d)";
		goto bad;
	}
	if (!parse_cmp(&p, &t.cmp)) { err = "expected a comparison (> >= < <= == !=)"; goto bad; }
	if (!(p = next_word(p, w, sizeof(w))) || !parse_double(w, &t.threshold)) { err = "bad threshold"; goto bad; }
	if ((p = next_word(p, w, sizeof(w))) != NULL) {
		if (strcmp(w, "min") != 0 || !(p = next_word(p, w, sizeof(w))) || !parse_u64(w, &t.min_events)) {
			err = "expected 'min N' or end of line";
			goto bad;
		}
		if (next_word(p, w, sizeof(w))) { err = "trailing text"; goto bad; }
	}
	r = define_rule(c, name, RULE_TYPE_TRACK);
	if (!r)
		return;
	/* a redefinition reuses its slot */
	for (uint32_t i = 0; i < set->ntracks; i++)
		if (set->tracks[i].rule == (uint32_t)(r - set->rules)) {
			t.rule = set->tracks[i].rule;
			set->tracks[i] = t;
			r->track = i;
			r->test = RULE_TEST_TRACK;
			return;
		}
	nt = mem_realloc(MEM_RULES, set->tracks, (set->ntracks + 1) * sizeof(*nt));
	if (!nt) {
		add_error(set, c->file, c->line, "out of memory");
		return;
	}
	set->tracks = nt;
	t.rule = (uint32_t)(r - set->rules);
	set->tracks[set->ntracks] = t;
	r->track = set->ntracks++;
	r->test = RULE_TEST_TRACK;
	return;
bad:
	add_error(set, c->file, c->line, "track %s: %s", name, err);
}

static void add_rtag(struct parse_ctx *c, enum rtag_kind kind, const char *rest, const char *d)
{
	struct rules_parse_state *ps = c->set->ps;
	char name[128];
	const char *p = next_word(rest, name, sizeof(name));

	if (!p || !*skip_ws(p)) {
		add_error(c->set, c->file, c->line, "%s: needs a name and a value", d);
		return;
	}
	if (ps->nrtags == ps->cap_rtags) {
		uint32_t cap = ps->cap_rtags ? ps->cap_rtags * 2 : 64;
		struct rtag *t = mem_realloc(MEM_RULES, ps->rtags, cap * sizeof(*t));

		if (!t) {
			add_error(c->set, c->file, c->line, "out of memory");
			return;
		}
		ps->rtags = t;
		ps->cap_rtags = cap;
	}
	ps->rtags[ps->nrtags].kind = kind;
	ps->rtags[ps->nrtags].name = arena_strdup(c->set, name);
	ps->rtags[ps->nrtags].value = arena_strdup(c->set, skip_ws(p));
	ps->nrtags++;
}

static void do_replace_rules(struct parse_ctx *c, const char *rest)
{
	struct rules_parse_state *ps = c->set->ps;
	char name[128];
	const char *p = rest;

	while ((p = next_word(p, name, sizeof(name))) != NULL) {
		if (ps->nreplace == ps->cap_replace) {
			uint32_t cap = ps->cap_replace ? ps->cap_replace * 2 : 64;
			char **n = mem_realloc(MEM_RULES, ps->replace_rules, cap * sizeof(*n));

			if (!n) {
				add_error(c->set, c->file, c->line, "out of memory");
				return;
			}
			ps->replace_rules = n;
			ps->cap_replace = cap;
		}
		ps->replace_rules[ps->nreplace++] = (char *)arena_strdup(c->set, name);
	}
}

static int load_file(struct rule_set *set, const char *path);

static void do_include(struct parse_ctx *c, const char *rest)
{
	char path[4096];
	const char *arg = skip_ws(rest);
	int n;

	if (!*arg) {
		add_error(c->set, c->file, c->line, "include: missing file name");
		return;
	}
	if (arg[0] == '/') {
		n = snprintf(path, sizeof(path), "%s", arg);
	} else {
		const char *slash = strrchr(c->file, '/');

		n = slash ? snprintf(path, sizeof(path), "%.*s/%s", (int)(slash - c->file), c->file, arg)
			  : snprintf(path, sizeof(path), "%s", arg);
	}
	if (n < 0 || (size_t)n >= sizeof(path)) {
		add_error(c->set, c->file, c->line, "include: path too long");
		return;
	}
	if (c->set->ps->include_depth >= RULES_MAX_INCLUDE_DEPTH) {
		add_error(c->set, c->file, c->line, "include: nested more than %d deep (a loop?)",
			  RULES_MAX_INCLUDE_DEPTH);
		return;
	}
	c->set->ps->include_depth++;
	if (load_file(c->set, path) == -ENOENT)
		add_error(c->set, c->file, c->line, "include: cannot open '%s'", path);
	c->set->ps->include_depth--;
}

static void do_loadplugin(struct parse_ctx *c, const char *rest)
{
	struct rule_set *set = c->set;
	char name[256];
	char **n;

	if (!next_word(rest, name, sizeof(name))) {
		add_error(set, c->file, c->line, "loadplugin: missing plugin name");
		return;
	}
	if (plugin_loaded(set, name, strlen(name)))
		return;
	n = mem_realloc(MEM_RULES, set->plugins_loaded, (set->nplugins_loaded + 1) * sizeof(*n));
	if (!n) {
		add_error(set, c->file, c->line, "out of memory");
		return;
	}
	set->plugins_loaded = n;
	set->plugins_loaded[set->nplugins_loaded++] = (char *)arena_strdup(set, name);
}

/* One logical line, comments already removed and trimmed. */
static void parse_line(struct parse_ctx *c, char *line)
{
	struct rule_set *set = c->set;
	char d[64];
	const char *rest;
	size_t dl = 0;

	while (line[dl] && line[dl] != ' ' && line[dl] != '\t') {
		if (dl + 1 >= sizeof(d)) {
			add_error(set, c->file, c->line, "unknown directive '%.40s...'", line);
			return;
		}
		d[dl] = (char)tolower((unsigned char)line[dl]);
		dl++;
	}
	d[dl] = '\0';
	rest = skip_ws(line + dl);

	/* conditionals are tracked even inside inactive blocks */
	if (strcmp(d, "if") == 0 || strcmp(d, "ifplugin") == 0) {
		struct cond_frame *f;
		bool active = ctx_active(c);
		int v = 0;

		if (c->nconds == RULES_MAX_IF_DEPTH) {
			add_error(set, c->file, c->line, "%s: nested more than %d deep", d, RULES_MAX_IF_DEPTH);
			return;
		}
		if (active) {
			const char *why = NULL;

			if (d[2] == 'p') {
				char pn[256];

				if (!next_word(rest, pn, sizeof(pn))) {
					add_error(set, c->file, c->line, "ifplugin: missing plugin name");
				} else {
					v = plugin_loaded(set, pn, strlen(pn));
				}
			} else if ((v = if_eval(set, rest, &why)) < 0) {
				add_error(set, c->file, c->line, "if: %s: '%s'", why, rest);
				v = 0;
			}
			if (!v)
				set->counts.blocks_skipped++;
		}
		f = &c->conds[c->nconds++];
		f->parent_active = active;
		f->cond = v;
		f->seen_else = false;
		f->file = c->file;
		f->line = c->line;
		return;
	}
	if (strcmp(d, "else") == 0) {
		if (c->nconds == 0 || c->conds[c->nconds - 1].seen_else) {
			add_error(set, c->file, c->line, "else without if");
			return;
		}
		c->conds[c->nconds - 1].seen_else = true;
		return;
	}
	if (strcmp(d, "endif") == 0) {
		if (c->nconds == 0) {
			add_error(set, c->file, c->line, "endif without if");
			return;
		}
		c->nconds--;
		return;
	}
	if (!ctx_active(c))
		return;

	if (strcmp(d, "header") == 0) do_header(c, rest, RULE_TYPE_HEADER);
	else if (strcmp(d, "mimeheader") == 0) do_header(c, rest, RULE_TYPE_MIMEHEADER);
	else if (strcmp(d, "body") == 0) do_text_rule(c, d, rest, RULE_TYPE_BODY);
	else if (strcmp(d, "rawbody") == 0) do_text_rule(c, d, rest, RULE_TYPE_RAWBODY);
	else if (strcmp(d, "full") == 0) do_text_rule(c, d, rest, RULE_TYPE_FULL);
	else if (strcmp(d, "uri") == 0) do_text_rule(c, d, rest, RULE_TYPE_URI);
	else if (strcmp(d, "meta") == 0) do_meta(c, rest);
	else if (strcmp(d, "score") == 0) do_score(c, rest);
	else if (strcmp(d, "describe") == 0) do_describe(c, rest);
	else if (strcmp(d, "tflags") == 0) do_tflags(c, rest);
	else if (strcmp(d, "priority") == 0) do_priority(c, rest);
	else if (strcmp(d, "include") == 0) do_include(c, rest);
	else if (strcmp(d, "action") == 0) do_action(c, rest);
	else if (strcmp(d, "track") == 0) do_track(c, rest);
	else if (strcmp(d, "loadplugin") == 0 || strcmp(d, "tryplugin") == 0) do_loadplugin(c, rest);
	else if (strcmp(d, "lang") == 0) set->counts.lang_skipped++;
	else if (strcmp(d, "replace_tag") == 0) add_rtag(c, RTAG_TAG, rest, d);
	else if (strcmp(d, "replace_pre") == 0) add_rtag(c, RTAG_PRE, rest, d);
	else if (strcmp(d, "replace_post") == 0) add_rtag(c, RTAG_POST, rest, d);
	else if (strcmp(d, "replace_inter") == 0) add_rtag(c, RTAG_INTER, rest, d);
	else if (strcmp(d, "replace_rules") == 0) do_replace_rules(c, rest);
	else if (strcmp(d, "replace_start") == 0 || strcmp(d, "replace_end") == 0) {
		char w[32];

		if (!next_word(rest, w, sizeof(w)))
			add_error(set, c->file, c->line, "%s: missing value", d);
		else if (d[8] == 's')
			set->ps->replace_start = arena_strdup(set, w);
		else
			set->ps->replace_end = arena_strdup(set, w);
	} else if (strcmp(d, "required_score") == 0 || strcmp(d, "required_hits") == 0) {
		char w[64];
		double v;

		if (!next_word(rest, w, sizeof(w)) || !parse_double(w, &v))
			add_error(set, c->file, c->line, "%s: needs a number", d);
		else
			set->required_score = v;
	} else if (strcmp(d, "askdns") == 0) {
		/* AskDNS defines a rule that queries DNS: defined, skipped (net) */
		char name[128];
		struct rule *r;

		if (next_word(rest, name, sizeof(name)) && (r = define_rule(c, name, RULE_TYPE_HEADER)))
			r->skip = RULE_SKIP_NET;
	} else if (is_ignored_setting(d) || strncmp(d, "util_rb_", 8) == 0 ||
		   strncmp(d, "bayes_", 6) == 0) {
		set->counts.settings_ignored++;
	} else {
		add_error(set, c->file, c->line, "unknown directive '%s'", d);
	}
}

/* Parses text (owned by the caller, modified in place: comments cut). */
static void parse_text(struct rule_set *set, const char *file, char *text, size_t len)
{
	struct parse_ctx c = { .set = set, .file = file, .line = 0, .nconds = 0 };
	char *p = text, *end = text + len;

	set->counts.files++;
	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		char *le = nl ? nl : end;
		char *s, *e, *w, *r;

		c.line++;
		set->counts.lines++;
		if ((size_t)(le - p) > RULES_MAX_LINE) {
			add_error(set, file, c.line, "line longer than %u bytes", RULES_MAX_LINE);
			p = nl ? nl + 1 : end;
			continue;
		}
		*le = '\0';
		/* SpamAssassin: cut at an unescaped '#', then unescape '\#' */
		for (s = p; *s; s++) {
			if (*s == '#' && (s == p || s[-1] != '\\')) {
				*s = '\0';
				break;
			}
		}
		for (w = r = p; *r; r++) {
			if (r[0] == '\\' && r[1] == '#')
				continue;
			*w++ = *r;
		}
		*w = '\0';
		s = p;
		while (*s == ' ' || *s == '\t' || *s == '\r')
			s++;
		e = s + strlen(s);
		while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
			*--e = '\0';
		if (*s)
			parse_line(&c, s);
		p = nl ? nl + 1 : end;
	}
	while (c.nconds > 0) {
		struct cond_frame *f = &c.conds[--c.nconds];

		add_error(set, f->file, f->line, "if/ifplugin without endif");
	}
}

static int load_file(struct rule_set *set, const char *path)
{
	FILE *f = fopen(path, "rb");
	const char *label;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	struct stat st;

	if (!f)
		return -ENOENT;
	label = arena_strdup(set, path);
	if (!label)
		goto fail_alloc;
	if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
		fclose(f);
		add_error(set, label, 0, "is a directory");
		return 0;
	}
	for (;;) {
		size_t n;

		if (cap - len < 65536) {
			char *nb;

			if (cap > RULES_MAX_FILE_SIZE) {
				add_error(set, label, 0, "file larger than %u bytes", RULES_MAX_FILE_SIZE);
				goto done;
			}
			cap = cap ? cap * 2 : 131072;
			nb = mem_realloc(MEM_RULES, buf, cap + 1);
			if (!nb)
				goto fail_alloc;
			buf = nb;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		add_error(set, label, 0, "read error");
		goto done;
	}
	buf[len] = '\0';
	parse_text(set, label, buf, len);
done:
	mem_free(MEM_RULES, buf);
	fclose(f);
	return 0;
fail_alloc:
	mem_free(MEM_RULES, buf);
	fclose(f);
	return -ENOMEM;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int rules_load_path(struct rule_set *set, const char *path)
{
	struct stat st;
	DIR *dir;
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	if (stat(path, &st) != 0) {
		add_error(set, arena_strdup(set, path), 0, "cannot open: %s", strerror(errno));
		return 0;
	}
	if (!S_ISDIR(st.st_mode)) {
		rc = load_file(set, path);
		if (rc == -ENOENT) {
			add_error(set, arena_strdup(set, path), 0, "cannot open");
			rc = 0;
		}
		return rc;
	}
	dir = opendir(path);
	if (!dir) {
		add_error(set, arena_strdup(set, path), 0, "cannot open directory: %s", strerror(errno));
		return 0;
	}
	while ((de = readdir(dir)) != NULL) {
		size_t l = strlen(de->d_name);

		if (l < 4 || strcmp(de->d_name + l - 3, ".cf") != 0 || de->d_name[0] == '.')
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			char **nn = mem_realloc(MEM_RULES, names, nc * sizeof(*nn));

			if (!nn) {
				rc = -ENOMEM;
				goto out;
			}
			names = nn;
			cap = nc;
		}
		names[n] = mem_alloc(MEM_RULES, strlen(path) + l + 2);
		if (!names[n]) {
			rc = -ENOMEM;
			goto out;
		}
		sprintf(names[n], "%s/%s", path, de->d_name);
		n++;
	}
	if (n)
		qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n && rc == 0; i++) {
		rc = load_file(set, names[i]);
		if (rc == -ENOENT) {
			add_error(set, arena_strdup(set, names[i]), 0, "cannot open");
			rc = 0;
		}
	}
out:
	for (size_t i = 0; i < n; i++)
		mem_free(MEM_RULES, names[i]);
	mem_free(MEM_RULES, names);
	closedir(dir);
	return rc;
}

int rules_load_text(struct rule_set *set, const char *file_label, const char *text, size_t len)
{
	const char *label = arena_strdup(set, file_label);
	char *copy = mem_alloc(MEM_RULES, len + 1);

	if (!label || !copy) {
		mem_free(MEM_RULES, copy);
		return -ENOMEM;
	}
	memcpy(copy, text, len);
	copy[len] = '\0';
	parse_text(set, label, copy, len);
	mem_free(MEM_RULES, copy);
	return 0;
}

/* ------------------------------------------------------------------ */
/* ReplaceTags                                                          */

static const struct rtag *rtag_find(const struct rules_parse_state *ps, enum rtag_kind k,
				    const char *name, size_t n)
{
	/* the last definition wins */
	for (uint32_t i = ps->nrtags; i-- > 0;)
		if (ps->rtags[i].kind == k && strlen(ps->rtags[i].name) == n &&
		    memcmp(ps->rtags[i].name, name, n) == 0)
			return &ps->rtags[i];
	return NULL;
}

/* A growable byte buffer for rewriting patterns. */
struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->len + n + 1) * 2;
		char *np = mem_realloc(MEM_RULES, b->p, cap);

		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

/* Removes the first "<KIND NAME>" (e.g. "<inter W3>") from *s and returns the
 * name (arena) or NULL. */
static const char *take_directive_tag(struct rule_set *set, struct sbuf *s, const char *kind,
				      const char *st, const char *en)
{
	char open[32];
	char *a, *b;
	const char *name;

	snprintf(open, sizeof(open), "%s%s ", st, kind);
	a = strstr(s->p, open);
	if (!a)
		return NULL;
	b = strstr(a + strlen(open), en);
	if (!b || b == a + strlen(open))
		return NULL;
	name = arena_strndup(set, a + strlen(open), (size_t)(b - a - strlen(open)));
	memmove(a, b + strlen(en), strlen(b + strlen(en)) + 1);
	s->len = strlen(s->p);
	return name;
}

/* Follows ReplaceTags.pm: <pre X>/<post X>/<inter X> choose decorations,
 * then the pattern is split at <TAG> pieces; empty pieces between two tags
 * get the inter text, each tag gets pre/post and its replacement; repeated
 * while a replacement introduces new tags (5 passes at most). A tag whose
 * value holds itself twice doubles the pattern each pass: past
 * RULES_MAX_PATTERN bytes the rule is an error (a 577-byte file took 34 s
 * before). */
static int apply_replace_tags(struct rule_set *set, struct rule *r)
{
	struct rules_parse_state *ps = set->ps;
	const char *st = ps->replace_start ? ps->replace_start : "<";
	const char *en = ps->replace_end ? ps->replace_end : ">";
	struct sbuf cur = { 0 };
	int passes = 0;
	bool again;

	if (!r->pattern)
		return 0;
	sb_add(&cur, r->pattern, strlen(r->pattern));
	do {
		const char *pre_n, *post_n, *inter_n;
		const struct rtag *pre = NULL, *post = NULL, *inter = NULL;
		struct sbuf out = { 0 };
		const char *p;
		bool prev_tag = false;

		again = false;
		if (cur.oom)
			break;
		pre_n = take_directive_tag(set, &cur, "pre", st, en);
		post_n = take_directive_tag(set, &cur, "post", st, en);
		inter_n = take_directive_tag(set, &cur, "inter", st, en);
		if (pre_n) pre = rtag_find(ps, RTAG_PRE, pre_n, strlen(pre_n));
		if (post_n) post = rtag_find(ps, RTAG_POST, post_n, strlen(post_n));
		if (inter_n) inter = rtag_find(ps, RTAG_INTER, inter_n, strlen(inter_n));
		sb_add(&out, "", 0);
		p = cur.p;
		/* bounded inside a pass too: one pass over a long pattern with
		 * a long value could otherwise take gigabytes */
		while (*p && out.len <= RULES_MAX_PATTERN) {
			/* a tag piece is <[^<>]+> (SpamAssassin's split) */
			const char *q = NULL;

			if (*p == '<') {
				q = p + 1;
				while (*q && *q != '<' && *q != '>')
					q++;
				if (*q != '>' || q == p + 1)
					q = NULL;
			}
			if (q) {
				const struct rtag *t = NULL;
				size_t sl = strlen(st), el = strlen(en);

				if (prev_tag && inter)
					sb_add(&out, inter->value, strlen(inter->value));
				if (pre)
					sb_add(&out, pre->value, strlen(pre->value));
				/* the tag name inside start/end markers */
				if ((size_t)(q + 1 - p) > sl + el && strncmp(p, st, sl) == 0)
					t = rtag_find(ps, RTAG_TAG, p + sl, (size_t)(q + 1 - p) - sl - el);
				if (t) {
					sb_add(&out, t->value, strlen(t->value));
					if (strchr(t->value, '<') && strchr(t->value, '>'))
						again = true;
				} else {
					sb_add(&out, p, (size_t)(q + 1 - p));
				}
				if (post)
					sb_add(&out, post->value, strlen(post->value));
				prev_tag = true;
				p = q + 1;
			} else {
				sb_add(&out, p, 1);
				prev_tag = false;
				p++;
			}
		}
		mem_free(MEM_RULES, cur.p);
		cur = out;
		passes++;
		if (cur.len > RULES_MAX_PATTERN) {
			add_error(set, r->file, r->line,
				  "rule %s: replace_tags make its pattern longer than %u bytes",
				  r->name, RULES_MAX_PATTERN);
			mem_free(MEM_RULES, cur.p);
			r->test = RULE_TEST_NONE;
			r->skip = RULE_SKIP_REGEX;
			return 0;
		}
	} while (again && passes <= 5);
	if (cur.oom) {
		mem_free(MEM_RULES, cur.p);
		return -ENOMEM;
	}
	if (strcmp(cur.p, r->pattern) != 0) {
		r->pattern = arena_strdup(set, cur.p);
		set->counts.replace_tags_applied++;
	}
	mem_free(MEM_RULES, cur.p);
	return r->pattern ? 0 : -ENOMEM;
}

/* ------------------------------------------------------------------ */
/* meta compilation: Perl precedence, RPN out                            */

struct mc {
	struct rule_set *set;
	struct rule *r;
	const char *p;
	struct meta_op *ops;
	uint32_t n, cap;
	const char *err;
	uint32_t undefined;
	unsigned depth;              /* nesting: (, !, unary -, ?: */
};

static void mc_emit(struct mc *m, enum meta_opcode op, uint32_t rule, double v)
{
	if (m->err)
		return;
	if (m->n == RULES_MAX_META_OPS) {
		m->err = "expression too long";
		return;
	}
	if (m->n == m->cap) {
		uint32_t cap = m->cap ? m->cap * 2 : 16;
		struct meta_op *o = mem_realloc(MEM_RULES, m->ops, cap * sizeof(*o));

		if (!o) {
			m->err = "out of memory";
			return;
		}
		m->ops = o;
		m->cap = cap;
	}
	m->ops[m->n].op = op;
	m->ops[m->n].rule = rule;
	m->ops[m->n].value = v;
	m->n++;
}

static void mc_ws(struct mc *m)
{
	while (isspace((unsigned char)*m->p))
		m->p++;
}

static void mc_cond(struct mc *m);

/* Nesting is recursion: a hostile line of 64 KiB of '(' or '!' would
 * otherwise overflow the stack. */
static int mc_nest(struct mc *m)
{
	if (m->depth >= RULES_MAX_EXPR_DEPTH) {
		if (!m->err)
			m->err = "nested too deeply (more than " RULES_STR(RULES_MAX_EXPR_DEPTH) " levels)";
		return 0;
	}
	m->depth++;
	return 1;
}

static void mc_unary(struct mc *m)
{
	mc_ws(m);
	if (m->err)
		return;
	if (*m->p == '!' && m->p[1] != '=') {
		m->p++;
		if (!mc_nest(m))
			return;
		mc_unary(m);
		m->depth--;
		mc_emit(m, META_OP_NOT, 0, 0);
		return;
	}
	if (*m->p == '-' && !isdigit((unsigned char)m->p[1])) {
		m->p++;
		if (!mc_nest(m))
			return;
		mc_unary(m);
		m->depth--;
		mc_emit(m, META_OP_NEG, 0, 0);
		return;
	}
	if (*m->p == '(') {
		m->p++;
		if (!mc_nest(m))
			return;
		mc_cond(m);
		m->depth--;
		mc_ws(m);
		if (!m->err && *m->p != ')')
			m->err = "missing ')'";
		else
			m->p++;
		return;
	}
	if (isdigit((unsigned char)*m->p) || *m->p == '.' ||
	    ((*m->p == '-' || *m->p == '+') && isdigit((unsigned char)m->p[1]))) {
		char *end;
		double v = strtod(m->p, &end);

		if (end == m->p) {
			m->err = "bad number";
			return;
		}
		m->p = end;
		mc_emit(m, META_OP_CONST, 0, v);
		return;
	}
	if (isalpha((unsigned char)*m->p) || *m->p == '_') {
		char name[128];
		size_t n = 0;
		int32_t id;

		while ((isalnum((unsigned char)*m->p) || *m->p == '_') && n + 1 < sizeof(name))
			name[n++] = *m->p++;
		name[n] = '\0';
		if (isalnum((unsigned char)*m->p) || *m->p == '_' || *m->p == ':') {
			m->err = "bad rule name";
			return;
		}
		if (strcmp(name, "local_tests_only") == 0) {
			mc_emit(m, META_OP_CONST, 0, 1);   /* breakwater never uses the network */
			return;
		}
		mc_ws(m);
		if (*m->p == '(') {
			m->err = "functions are not supported in meta expressions";
			return;
		}
		id = rules_find(m->set, name);
		if (id < 0 || !m->set->ps->defined[id]) {
			/* SpamAssassin: an undefined dependency reads as 0 */
			m->undefined++;
			mc_emit(m, META_OP_CONST, 0, 0);
		} else {
			mc_emit(m, META_OP_RULE, (uint32_t)id, 0);
		}
		return;
	}
	m->err = *m->p ? "unexpected character" : "unexpected end of expression";
}

/* The binary operators, loosest first, as in Perl: a level binds tighter
 * than the ones above it; within a level, left to right. Two-character
 * tokens come before the one-character ones they start with. */
static const struct mc_binop {
	char tok[3];
	uint8_t len, level;
	enum meta_opcode op;
} mc_binops[] = {
	{ "||", 2, 1, META_OP_OR },
	{ "&&", 2, 2, META_OP_AND },
	{ "^", 1, 3, META_OP_XOR },
	{ "==", 2, 4, META_OP_EQ }, { "!=", 2, 4, META_OP_NE },
	{ ">=", 2, 5, META_OP_GE }, { "<=", 2, 5, META_OP_LE },
	{ ">", 1, 5, META_OP_GT }, { "<", 1, 5, META_OP_LT },
	{ "+", 1, 6, META_OP_ADD }, { "-", 1, 6, META_OP_SUB },
	{ "*", 1, 7, META_OP_MUL }, { "/", 1, 7, META_OP_DIV },
};

/* Operands joined by operators of level `min` or tighter (precedence
 * climbing: one function for every level). */
static void mc_binary(struct mc *m, unsigned min)
{
	mc_unary(m);
	for (;;) {
		const struct mc_binop *b = NULL;

		mc_ws(m);
		if (m->err)
			return;
		for (size_t i = 0; i < sizeof(mc_binops) / sizeof(mc_binops[0]) && !b; i++)
			if (strncmp(m->p, mc_binops[i].tok, mc_binops[i].len) == 0)
				b = &mc_binops[i];
		if (!b || b->level < min)
			return;
		m->p += b->len;
		mc_binary(m, b->level + 1u);
		mc_emit(m, b->op, 0, 0);
	}
}

static void mc_cond(struct mc *m)
{
	mc_binary(m, 1);
	mc_ws(m);
	if (m->err || *m->p != '?' || !mc_nest(m))
		return;
	m->p++;
	mc_cond(m);
	mc_ws(m);
	if (!m->err && *m->p != ':') {
		m->err = "'?' without ':'";
		return;
	}
	m->p++;
	mc_cond(m);
	m->depth--;
	mc_emit(m, META_OP_COND, 0, 0);
}

/* Stack depth an RPN program needs, or -1 if it is malformed. */
static int rpn_depth(const struct meta_op *ops, uint32_t n)
{
	int d = 0, max = 0;

	for (uint32_t i = 0; i < n; i++) {
		switch (ops[i].op) {
		case META_OP_RULE: case META_OP_CONST: d++; break;
		case META_OP_NOT: case META_OP_NEG: if (d < 1) return -1; break;
		case META_OP_COND: if (d < 3) return -1; d -= 2; break;
		default: if (d < 2) return -1; d--; break;
		}
		if (d > max)
			max = d;
	}
	return d == 1 ? max : -1;
}

static int compile_meta(struct rule_set *set, struct rule *r)
{
	struct mc m = { .set = set, .r = r, .p = r->meta_text };

	mc_cond(&m);
	mc_ws(&m);
	if (!m.err && *m.p)
		m.err = "unexpected text";
	if (!m.err && rpn_depth(m.ops, m.n) < 0)
		m.err = "malformed expression";
	if (m.err) {
		bool oom = strcmp(m.err, "out of memory") == 0;

		add_error(set, r->file, r->line, "meta %s: %s at '%.30s'", r->name, m.err, m.p);
		mem_free(MEM_RULES, m.ops);
		r->test = RULE_TEST_NONE;
		r->skip = RULE_SKIP_REGEX;
		return oom ? -ENOMEM : 0;
	}
	if (m.undefined)
		set->counts.meta_undefined_deps++;
	r->meta_ops = m.ops;
	r->nmeta_ops = m.n;
	return 0;
}

double rules_meta_eval(const struct rule_set *set, uint32_t id, const uint32_t *hits)
{
	const struct rule *r = &set->rules[id];
	double st[RULES_MAX_META_OPS + 1];
	int sp = 0;

	for (uint32_t i = 0; i < r->nmeta_ops; i++) {
		const struct meta_op *o = &r->meta_ops[i];
		double a, b;

		switch (o->op) {
		case META_OP_RULE: st[sp++] = hits[o->rule]; continue;
		case META_OP_CONST: st[sp++] = o->value; continue;
		case META_OP_NOT: st[sp - 1] = st[sp - 1] == 0.0; continue;
		case META_OP_NEG: st[sp - 1] = -st[sp - 1]; continue;
		case META_OP_COND:
			sp -= 2;
			st[sp - 1] = st[sp - 1] != 0.0 ? st[sp] : st[sp + 1];
			continue;
		default:
			break;
		}
		b = st[--sp];
		a = st[sp - 1];
		switch (o->op) {
		case META_OP_AND: a = a != 0.0 ? b : a; break;   /* Perl: value of last operand */
		case META_OP_OR: a = a != 0.0 ? a : b; break;
		case META_OP_XOR: a = (double)((int64_t)a ^ (int64_t)b); break;
		case META_OP_ADD: a = a + b; break;
		case META_OP_SUB: a = a - b; break;
		case META_OP_MUL: a = a * b; break;
		case META_OP_DIV: a = b != 0.0 ? a / b : 0.0; break;
		case META_OP_GT: a = a > b; break;
		case META_OP_GE: a = a >= b; break;
		case META_OP_LT: a = a < b; break;
		case META_OP_LE: a = a <= b; break;
		case META_OP_EQ: a = a == b; break;
		case META_OP_NE: a = a != b; break;
		default: break;
		}
		st[sp - 1] = a;
	}
	return sp == 1 ? st[0] : 0.0;
}

/* Depth-first order of metas, dependencies first; cycles are errors.
 * state: 0 unvisited, 1 on the path, 2 done. */
static int order_metas(struct rule_set *set)
{
	uint8_t *state = mem_calloc(MEM_RULES, set->nrules ? set->nrules : 1, 1);
	uint32_t *stack = mem_alloc(MEM_RULES, (set->nrules + 1) * sizeof(uint32_t) * 2);
	int rc = 0;

	set->meta_order = mem_alloc(MEM_RULES, (set->nrules + 1) * sizeof(uint32_t));
	if (!state || !stack || !set->meta_order) {
		rc = -ENOMEM;
		goto out;
	}
	set->nmeta_order = 0;
	for (uint32_t root = 0; root < set->nrules; root++) {
		uint32_t sp = 0;

		if (set->rules[root].test != RULE_TEST_META || state[root])
			continue;
		/* explicit stack of (rule, next op index) */
		stack[sp++] = root;
		stack[sp++] = 0;
		state[root] = 1;
		while (sp) {
			uint32_t id = stack[sp - 2], *pos = &stack[sp - 1];
			struct rule *r = &set->rules[id];
			bool pushed = false;

			while (*pos < r->nmeta_ops) {
				const struct meta_op *o = &r->meta_ops[(*pos)++];
				struct rule *d;

				if (o->op != META_OP_RULE)
					continue;
				d = &set->rules[o->rule];
				if (d->test != RULE_TEST_META)
					continue;
				if (state[o->rule] == 1) {
					add_error(set, r->file, r->line, "meta %s: dependency loop through %s",
						  r->name, d->name);
					r->test = RULE_TEST_NONE;   /* never evaluated */
					r->skip = RULE_SKIP_REGEX;
					continue;
				}
				if (state[o->rule] == 2)
					continue;
				state[o->rule] = 1;
				stack[sp++] = o->rule;
				stack[sp++] = 0;
				pushed = true;
				break;
			}
			if (pushed)
				continue;
			state[id] = 2;
			set->meta_order[set->nmeta_order++] = id;
			sp -= 2;
		}
	}
out:
	mem_free(MEM_RULES, state);
	mem_free(MEM_RULES, stack);
	return rc;
}

/* Drops entries that were only named by score/describe/tflags/priority and
 * never defined, renumbering the rest densely. */
static int compact_rules(struct rule_set *set)
{
	uint32_t *remap = mem_alloc(MEM_RULES, (set->nrules + 1) * sizeof(uint32_t));
	uint32_t n = 0;

	if (!remap)
		return -ENOMEM;
	for (uint32_t id = 0; id < set->nrules; id++) {
		if (!set->ps->defined[id]) {
			if (set->rules[id].score_given)
				set->counts.scores_unused++;
			remap[id] = UINT32_MAX;
			continue;
		}
		remap[id] = n;
		set->rules[n] = set->rules[id];
		set->ps->defined[n] = 1;
		n++;
	}
	for (uint32_t i = 0; i < set->ntracks; i++)
		set->tracks[i].rule = remap[set->tracks[i].rule];
	set->nrules = n;
	mem_free(MEM_RULES, remap);
	mem_free(MEM_RULES, set->name_table);
	set->name_table = NULL;
	set->name_table_size = 0;
	return name_table_grow(set);
}

int rules_finish(struct rule_set *set)
{
	struct rules_parse_state *ps = set->ps;
	int rc;

	if (ps->finished)
		return 0;
	ps->finished = true;
	rc = compact_rules(set);
	if (rc < 0)
		return rc;
	/* ReplaceTags on the rules listed in replace_rules, once each however
	 * often listed (a second pass would expand the expansion) */
	if (ps->nreplace) {
		uint8_t *done = mem_calloc(MEM_RULES, set->nrules + 1, 1);

		if (!done)
			return -ENOMEM;
		for (uint32_t i = 0; i < ps->nreplace; i++) {
			int32_t id = rules_find(set, ps->replace_rules[i]);

			if (id < 0 || done[id] || set->rules[id].test != RULE_TEST_REGEX)
				continue;
			done[id] = 1;
			if (apply_replace_tags(set, &set->rules[id]) < 0) {
				mem_free(MEM_RULES, done);
				return -ENOMEM;
			}
		}
		mem_free(MEM_RULES, done);
	}
	for (uint32_t id = 0; id < set->nrules; id++) {
		struct rule *r = &set->rules[id];

		if (!r->score_given) {
			r->score = strncmp(r->name, "T_", 2) == 0 ? 0.01 : 1.0;
			if (r->tflags & RULE_TF_NICE)
				r->score = -r->score;
		}
		r->scored = strncmp(r->name, "__", 2) != 0;
		if (r->skip != RULE_SKIP_NONE)
			;   /* keep the first reason */
		else if (r->tflags & RULE_TF_NET)
			r->skip = RULE_SKIP_NET;
		else if (r->tflags & RULE_TF_LEARN)
			r->skip = RULE_SKIP_BAYES;
		else if (r->score == 0.0 && r->test != RULE_TEST_TRACK)
			r->skip = RULE_SKIP_ZERO_SCORE;
		if (r->skip != RULE_SKIP_NONE)
			r->test = RULE_TEST_NONE;
	}
	for (uint32_t id = 0; id < set->nrules; id++) {
		struct rule *r = &set->rules[id];

		if (r->test == RULE_TEST_META && (rc = compile_meta(set, r)) < 0)
			return rc;
	}
	rc = order_metas(set);
	if (rc < 0)
		return rc;
	memset(set->counts.by_type, 0, sizeof(set->counts.by_type));
	memset(set->counts.skipped, 0, sizeof(set->counts.skipped));
	set->counts.rules = set->nrules;
	for (uint32_t id = 0; id < set->nrules; id++) {
		set->counts.by_type[set->rules[id].type]++;
		set->counts.skipped[set->rules[id].skip]++;
	}
	/* SpamAssassin's required_score is the tag threshold when rule files
	 * name no actions of their own */
	if (set->nactions == 0 && set->required_score > 0) {
		set->actions = mem_alloc(MEM_RULES, sizeof(*set->actions));
		if (!set->actions)
			return -ENOMEM;
		set->actions[0].name = "tag";
		set->actions[0].threshold = set->required_score;
		set->nactions = 1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */

struct rule_set *rule_set_new(void)
{
	struct rule_set *set = mem_calloc(MEM_RULES, 1, sizeof(*set));

	if (!set)
		return NULL;
	set->ps = mem_calloc(MEM_RULES, 1, sizeof(*set->ps));
	if (!set->ps) {
		mem_free(MEM_RULES, set);
		return NULL;
	}
	return set;
}

void rule_set_free(struct rule_set *set)
{
	if (!set)
		return;
	for (uint32_t i = 0; i < set->nrules; i++)
		mem_free(MEM_RULES, set->rules[i].meta_ops);
	for (uint32_t i = 0; i < set->nerrors; i++)
		mem_free(MEM_RULES, set->errors[i].reason);
	mem_free(MEM_RULES, set->errors);
	mem_free(MEM_RULES, set->rules);
	mem_free(MEM_RULES, set->name_table);
	mem_free(MEM_RULES, set->meta_order);
	mem_free(MEM_RULES, set->tracks);
	mem_free(MEM_RULES, set->actions);
	mem_free(MEM_RULES, set->plugins_loaded);
	if (set->ps) {
		struct arena_chunk *c = set->ps->arena;

		while (c) {
			struct arena_chunk *next = c->next;

			mem_free(MEM_RULES, c);
			c = next;
		}
		mem_free(MEM_RULES, set->ps->rtags);
		mem_free(MEM_RULES, set->ps->replace_rules);
		mem_free(MEM_RULES, set->ps->defined);
		mem_free(MEM_RULES, set->ps);
	}
	mem_free(MEM_RULES, set);
}

const char *rules_action_for(const struct rule_set *set, double score)
{
	const char *a = "pass";

	for (uint32_t i = 0; i < set->nactions; i++)
		if (score >= set->actions[i].threshold)
			a = set->actions[i].name;
	return a;
}

int rule_set_validate(const struct rule_set *set)
{
	uint32_t used = 0;

	if (set->nrules > set->cap_rules && set->cap_rules)
		return -EINVAL;
	for (uint32_t i = 0; i < set->name_table_size; i++)
		if (set->name_table[i]) {
			if (set->name_table[i] > set->nrules)
				return -EINVAL;
			used++;
		}
	if (used != set->nrules)
		return -EINVAL;
	for (uint32_t id = 0; id < set->nrules; id++) {
		const struct rule *r = &set->rules[id];

		if (rules_find(set, r->name) != (int32_t)id)
			return -EINVAL;
		if (r->type < RULE_TYPE_HEADER || r->type >= RULE_TYPE_MAX)
			return set->ps->finished ? -EINVAL : 0;
		if (r->test == RULE_TEST_REGEX && !r->pattern)
			return -EINVAL;
		if (r->test != RULE_TEST_NONE && r->skip != RULE_SKIP_NONE)
			return -EINVAL;
		if (r->test == RULE_TEST_META && set->ps->finished) {
			if (rpn_depth(r->meta_ops, r->nmeta_ops) < 0)
				return -EINVAL;
			for (uint32_t i = 0; i < r->nmeta_ops; i++)
				if (r->meta_ops[i].op == META_OP_RULE && r->meta_ops[i].rule >= set->nrules)
					return -EINVAL;
		}
		if (r->test == RULE_TEST_TRACK &&
		    (r->track >= set->ntracks || set->tracks[r->track].rule != id))
			return -EINVAL;
	}
	if (set->ps->finished) {
		/* every meta appears after the metas it reads */
		uint32_t *pos = mem_alloc(MEM_RULES, (set->nrules + 1) * sizeof(uint32_t));
		int rc = 0;

		if (!pos)
			return -ENOMEM;
		for (uint32_t id = 0; id < set->nrules; id++)
			pos[id] = UINT32_MAX;
		for (uint32_t i = 0; i < set->nmeta_order; i++)
			pos[set->meta_order[i]] = i;
		for (uint32_t i = 0; i < set->nmeta_order && !rc; i++) {
			const struct rule *r = &set->rules[set->meta_order[i]];

			if (r->test != RULE_TEST_META)
				continue;   /* disabled (a loop): never evaluated */
			for (uint32_t k = 0; k < r->nmeta_ops; k++)
				if (r->meta_ops[k].op == META_OP_RULE &&
				    set->rules[r->meta_ops[k].rule].test == RULE_TEST_META &&
				    pos[r->meta_ops[k].rule] > i)
					rc = -EINVAL;
		}
		mem_free(MEM_RULES, pos);
		if (rc)
			return rc;
	}
	for (uint32_t i = 1; i < set->nactions; i++)
		if (set->actions[i - 1].threshold > set->actions[i].threshold)
			return -EINVAL;
	return 0;
}

const char *rule_type_name(enum rule_type t)
{
	static const char *const n[RULE_TYPE_MAX] = {
		[RULE_TYPE_HEADER] = "header", [RULE_TYPE_MIMEHEADER] = "mimeheader",
		[RULE_TYPE_BODY] = "body", [RULE_TYPE_RAWBODY] = "rawbody",
		[RULE_TYPE_FULL] = "full", [RULE_TYPE_URI] = "uri",
		[RULE_TYPE_META] = "meta", [RULE_TYPE_TRACK] = "track",
	};

	return (unsigned)t < RULE_TYPE_MAX && n[t] ? n[t] : "?";
}

const char *rule_skip_name(enum rule_skip s)
{
	static const char *const n[RULE_SKIP_MAX] = {
		[RULE_SKIP_NONE] = "none", [RULE_SKIP_EVAL] = "eval",
		[RULE_SKIP_NET] = "network", [RULE_SKIP_BAYES] = "bayes",
		[RULE_SKIP_ZERO_SCORE] = "score 0", [RULE_SKIP_PSEUDO_HEADER] = "pseudo-header",
		[RULE_SKIP_CAPTURE] = "capture template", [RULE_SKIP_REGEX] = "broken",
		[RULE_SKIP_TOO_LARGE] = "regex too large",
	};

	return (unsigned)s < RULE_SKIP_MAX ? n[s] : "?";
}

void rules_print_counts(const struct rule_set *set, FILE *out)
{
	const struct rule_set_counts *k = &set->counts;

	fprintf(out, "files: %" PRIu64 "\nlines: %" PRIu64 "\n", k->files, k->lines);
	fprintf(out, "rules read: %" PRIu64 " (%" PRIu64 " distinct)\n", k->rules_read, k->rules);
	for (int t = RULE_TYPE_HEADER; t < RULE_TYPE_MAX; t++)
		fprintf(out, "  %s: %" PRIu64 "\n", rule_type_name((enum rule_type)t), k->by_type[t]);
	fprintf(out, "skipped:");
	for (int s = RULE_SKIP_NONE + 1; s < RULE_SKIP_MAX; s++)
		fprintf(out, " %s %" PRIu64 "%s", rule_skip_name((enum rule_skip)s), k->skipped[s],
			s + 1 < RULE_SKIP_MAX ? "," : "\n");
	fprintf(out, "settings ignored: %" PRIu64 ", lang lines: %" PRIu64
		", blocks skipped: %" PRIu64 ", scores for undefined rules: %" PRIu64
		", metas with undefined deps: %" PRIu64 ", replace_tags applied: %" PRIu64 "\n",
		k->settings_ignored, k->lang_skipped, k->blocks_skipped, k->scores_unused,
		k->meta_undefined_deps, k->replace_tags_applied);
	fprintf(out, "actions:");
	if (!set->nactions)
		fprintf(out, " none");
	for (uint32_t i = 0; i < set->nactions; i++)
		fprintf(out, " %s>=%g", set->actions[i].name, set->actions[i].threshold);
	fprintf(out, "\ntracks: %" PRIu32 "\nerrors: %" PRIu32 "\n", set->ntracks, set->nerrors);
}
