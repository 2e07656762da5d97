/* Unit tests for the rule-file parser (engine/rules.c): every directive,
 * every error message with file:line, meta evaluation, include and
 * directory order, ReplaceTags, if/ifplugin. Rule text goes to temp files
 * so file names and line numbers are real. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "rules.h"

static char tmpdir[256];

static void write_file(const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
}

/* Loads one file named t.cf with text, finished. */
static struct rule_set *load(const char *text)
{
	char path[512];
	struct rule_set *s = rule_set_new();

	write_file("t.cf", text);
	snprintf(path, sizeof(path), "%s/t.cf", tmpdir);
	CHECK(s != NULL);
	CHECK_EQ_U64(rules_load_path(s, path), 0);
	CHECK_EQ_U64(rules_finish(s), 0);
	CHECK_EQ_U64(rule_set_validate(s), 0);
	if (rule_set_validate(s) != 0)
		fprintf(stderr, "  invalid set from: %s\n", text);
	return s;
}

static const struct rule *get(const struct rule_set *s, const char *name)
{
	int32_t id = rules_find(s, name);

	return id < 0 ? NULL : &s->rules[id];
}

/* --- directives: one rule per case, fields checked ------------------- */

struct dcase {
	const char *text;
	const char *rule;
	enum rule_type type;
	enum rule_test test;
	enum rule_skip skip;
	const char *pattern;    /* NULL: not checked */
	unsigned re_flags;
	const char *field;      /* NULL: not checked */
	unsigned mods;
	bool negate;
	const char *if_unset;
	double score;
	unsigned tflags;
	uint32_t maxhits;
};

static const struct dcase dcases[] = {
	{ "header H1 Subject =~ /free/i\n", "H1", RULE_TYPE_HEADER, RULE_TEST_REGEX, 0,
	  "free", RULE_RE_CASELESS, "Subject", 0, false, NULL, 1.0, 0, 0 },
	{ "header H2 From:addr !~ m{\\@example\\.com$}ms\n", "H2", RULE_TYPE_HEADER, RULE_TEST_REGEX, 0,
	  "\\@example\\.com$", RULE_RE_MULTILINE | RULE_RE_DOTALL, "From", RULE_HDR_ADDR, true, NULL, 1.0, 0, 0 },
	{ "header H3 X-Foo =~ /^$/ [if-unset: UNSET]\n", "H3", RULE_TYPE_HEADER, RULE_TEST_REGEX, 0,
	  "^$", 0, "X-Foo", 0, false, "UNSET", 1.0, 0, 0 },
	{ "header H4 exists:List-Id\n", "H4", RULE_TYPE_HEADER, RULE_TEST_EXISTS, 0,
	  NULL, 0, "List-Id", 0, false, NULL, 1.0, 0, 0 },
	{ "header H5 ALL:raw =~ m!foo\\!bar!x\n", "H5", RULE_TYPE_HEADER, RULE_TEST_REGEX, 0,
	  "foo\\!bar", RULE_RE_EXTENDED, "ALL", RULE_HDR_RAW, false, NULL, 1.0, 0, 0 },
	{ "header H6 ToCc =~ /a/\n", "H6", RULE_TYPE_HEADER, RULE_TEST_REGEX, 0,
	  "a", 0, "ToCc", 0, false, NULL, 1.0, 0, 0 },
	{ "header H7 EnvelopeFrom:first:addr:host =~ /b/\n", "H7", RULE_TYPE_HEADER, RULE_TEST_REGEX, 0,
	  "b", 0, "EnvelopeFrom", RULE_HDR_FIRST | RULE_HDR_ADDR | RULE_HDR_HOST, false, NULL, 1.0, 0, 0 },
	{ "header H8 From:name:raw =~ /c/\n", "H8", RULE_TYPE_HEADER, RULE_TEST_REGEX, 0,
	  "c", 0, "From", RULE_HDR_NAME | RULE_HDR_RAW, false, NULL, 1.0, 0, 0 },
	{ "header H9 Received:count > 25\n", "H9", RULE_TYPE_HEADER, RULE_TEST_COUNT, 0,
	  NULL, 0, "Received", RULE_HDR_COUNT, false, NULL, 1.0, 0, 0 },
	{ "header H10 ToCc:addrcount >= 100\n", "H10", RULE_TYPE_HEADER, RULE_TEST_COUNT, 0,
	  NULL, 0, "ToCc", RULE_HDR_ADDRCOUNT, false, NULL, 1.0, 0, 0 },
	{ "header H11 eval:check_for_missing_to_header()\n", "H11", RULE_TYPE_HEADER, RULE_TEST_EVAL, 0,
	  NULL, 0, NULL, 0, false, NULL, 1.0, 0, 0 },
	{ "header H12 eval:check_rbl('x', 'zen.example.')\n", "H12", RULE_TYPE_HEADER, RULE_TEST_NONE,
	  RULE_SKIP_NET, NULL, 0, NULL, 0, false, NULL, 1.0, 0, 0 },
	{ "header H13 eval:check_something_else()\n", "H13", RULE_TYPE_HEADER, RULE_TEST_NONE,
	  RULE_SKIP_EVAL, NULL, 0, NULL, 0, false, NULL, 1.0, 0, 0 },
	{ "header H14 X-Spam-Relays-External =~ /x/\n", "H14", RULE_TYPE_HEADER, RULE_TEST_NONE,
	  RULE_SKIP_PSEUDO_HEADER, NULL, 0, NULL, 0, false, NULL, 1.0, 0, 0 },
	{ "body B1 /cheap\\s+pills/i\nscore B1 2.5 1 3 4\n", "B1", RULE_TYPE_BODY, RULE_TEST_REGEX, 0,
	  "cheap\\s+pills", RULE_RE_CASELESS, NULL, 0, false, NULL, 2.5, 0, 0 },
	{ "body B2 /x/\ntflags B2 multiple maxhits=3 nosubject\n", "B2", RULE_TYPE_BODY, RULE_TEST_REGEX, 0,
	  "x", 0, NULL, 0, false, NULL, 1.0, RULE_TF_MULTIPLE | RULE_TF_NOSUBJECT, 3 },
	{ "body B3 eval:check_bayes('0.99','1.00')\n", "B3", RULE_TYPE_BODY, RULE_TEST_NONE,
	  RULE_SKIP_BAYES, NULL, 0, NULL, 0, false, NULL, 1.0, 0, 0 },
	{ "body B4 eval:check_body_length('1024')\n", "B4", RULE_TYPE_BODY, RULE_TEST_EVAL, 0,
	  NULL, 0, NULL, 0, false, NULL, 1.0, 0, 0 },
	{ "rawbody R1 /<img/i\n", "R1", RULE_TYPE_RAWBODY, RULE_TEST_REGEX, 0,
	  "<img", RULE_RE_CASELESS, NULL, 0, false, NULL, 1.0, 0, 0 },
	{ "full F1 /^X-Mailer: bulk/m\n", "F1", RULE_TYPE_FULL, RULE_TEST_REGEX, 0,
	  "^X-Mailer: bulk", RULE_RE_MULTILINE, NULL, 0, false, NULL, 1.0, 0, 0 },
	{ "uri U1 m{^https?://bit\\.ly/}\n", "U1", RULE_TYPE_URI, RULE_TEST_REGEX, 0,
	  "^https?://bit\\.ly/", 0, NULL, 0, false, NULL, 1.0, 0, 0 },
	{ "mimeheader M1 Content-Type =~ /zip/\n", "M1", RULE_TYPE_MIMEHEADER, RULE_TEST_REGEX, 0,
	  "zip", 0, "Content-Type", 0, false, NULL, 1.0, 0, 0 },
	/* default scores: T_ 0.01, nice negates, explicit 0 disables */
	{ "body T_TEST /x/\n", "T_TEST", RULE_TYPE_BODY, RULE_TEST_REGEX, 0,
	  NULL, 0, NULL, 0, false, NULL, 0.01, 0, 0 },
	{ "body NICE /x/\ntflags NICE nice\n", "NICE", RULE_TYPE_BODY, RULE_TEST_REGEX, 0,
	  NULL, 0, NULL, 0, false, NULL, -1.0, RULE_TF_NICE, 0 },
	{ "body ZERO /x/\nscore ZERO 0\n", "ZERO", RULE_TYPE_BODY, RULE_TEST_NONE,
	  RULE_SKIP_ZERO_SCORE, NULL, 0, NULL, 0, false, NULL, 0, 0, 0 },
	{ "body NET /x/\ntflags NET net\n", "NET", RULE_TYPE_BODY, RULE_TEST_NONE,
	  RULE_SKIP_NET, NULL, 0, NULL, 0, false, NULL, 1.0, RULE_TF_NET, 0 },
	{ "body LEARN /x/\ntflags LEARN learn\n", "LEARN", RULE_TYPE_BODY, RULE_TEST_NONE,
	  RULE_SKIP_BAYES, NULL, 0, NULL, 0, false, NULL, 1.0, RULE_TF_LEARN, 0 },
	/* score before the definition, relative score after it */
	{ "score SB 3\nbody SB /x/\nscore SB (1.5)\n", "SB", RULE_TYPE_BODY, RULE_TEST_REGEX, 0,
	  NULL, 0, NULL, 0, false, NULL, 4.5, 0, 0 },
	/* comments: unescaped # ends the line, \# is a literal # */
	{ "body HASH /a\\#b/ # comment\n", "HASH", RULE_TYPE_BODY, RULE_TEST_REGEX, 0,
	  "a#b", 0, NULL, 0, false, NULL, 1.0, 0, 0 },
	/* a redefinition replaces the test */
	{ "body RD /one/\nbody RD /two/\n", "RD", RULE_TYPE_BODY, RULE_TEST_REGEX, 0,
	  "two", 0, NULL, 0, false, NULL, 1.0, 0, 0 },
	{ "body CAP /%{NAME}/\n", "CAP", RULE_TYPE_BODY, RULE_TEST_NONE, RULE_SKIP_CAPTURE,
	  NULL, 0, NULL, 0, false, NULL, 1.0, 0, 0 },
	{ "meta MT A && B\nbody A /a/\nbody B /b/\n", "MT", RULE_TYPE_META, RULE_TEST_META, 0,
	  NULL, 0, NULL, 0, false, NULL, 1.0, 0, 0 },
	{ "track TR distinct rcpt per client_ip over 10m > 1000\n", "TR", RULE_TYPE_TRACK,
	  RULE_TEST_TRACK, 0, NULL, 0, NULL, 0, false, NULL, 1.0, 0, 0 },
};

static void test_directives(void)
{
	for (size_t i = 0; i < sizeof(dcases) / sizeof(dcases[0]); i++) {
		const struct dcase *c = &dcases[i];
		struct rule_set *s = load(c->text);
		const struct rule *r = get(s, c->rule);

		if (!r) {
			fprintf(stderr, "case %zu: rule %s not found\n", i, c->rule);
			CHECK(r != NULL);
			rule_set_free(s);
			continue;
		}
		CHECK_EQ_U64(s->nerrors, 0);
		CHECK_EQ_U64(r->type, c->type);
		CHECK_EQ_U64(r->test, c->test);
		CHECK_EQ_U64(r->skip, c->skip);
		if (c->pattern)
			CHECK_STR(r->pattern, c->pattern);
		if (c->test == RULE_TEST_REGEX)
			CHECK_EQ_U64(r->re_flags, c->re_flags);
		if (c->field)
			CHECK_STR(r->field, c->field);
		CHECK_EQ_U64(r->mods, c->mods);
		CHECK_EQ_U64(r->negate, c->negate);
		if (c->if_unset)
			CHECK_STR(r->if_unset, c->if_unset);
		else
			CHECK(r->if_unset == NULL);
		CHECK(r->score == c->score || (r->score - c->score < 1e-9 && c->score - r->score < 1e-9));
		CHECK_EQ_U64(r->tflags & ~(unsigned)RULE_TF_OTHER, c->tflags);
		CHECK_EQ_U64(r->maxhits, c->maxhits);
		if (check_failed)
			fprintf(stderr, "  (after case %zu: %s)\n", i, c->rule);
		rule_set_free(s);
	}
}

static void test_misc_directives(void)
{
	struct rule_set *s = load(
		"describe D1 Says what D1 does\n"
		"body D1 /d1/\n"
		"priority D1 -200\n"
		"lang de describe D1 Sagt was\n"
		"loadplugin Mail::SpamAssassin::Plugin::Foo /x/Foo.pm\n"
		"ifplugin Mail::SpamAssassin::Plugin::Foo\n"
		"body D2 /d2/\n"
		"endif\n"
		"required_score 6\n"
		"freemail_domains example.com\n"
		"score UNDEFINED 3\n"
		"header __SUB Subject =~ /x/\n"
		"header  T_C   Received:count <= 2\n"
		"track TM count per message_id over 1h >= 3\n"
		"track TR ratio rejected_rcpt per client_ip over 10m > 0.5 min 50\n"
		"track TQ count overquota_rcpt per rcpt over 1h > 20\n"
		"track TB count null_sender per client_net over 1h > 100\n");
	const struct rule *r = get(s, "D1");

	CHECK_EQ_U64(s->nerrors, 0);
	CHECK(r && strcmp(r->describe, "Says what D1 does") == 0);
	CHECK(r && r->priority == -200);
	CHECK_EQ_U64(s->counts.lang_skipped, 1);
	CHECK_EQ_U64(s->nplugins_loaded, 1);
	CHECK(get(s, "D2") != NULL);
	CHECK(get(s, "UNDEFINED") == NULL);
	CHECK_EQ_U64(s->counts.scores_unused, 1);
	CHECK_EQ_U64(s->counts.settings_ignored, 1);
	CHECK(get(s, "__SUB") && !get(s, "__SUB")->scored);
	CHECK(get(s, "D1") && get(s, "D1")->scored);
	CHECK(get(s, "T_C") && get(s, "T_C")->cmp == RULE_CMP_LE && get(s, "T_C")->cmp_value == 2);
	/* required_score becomes the tag action when no action is given */
	CHECK_EQ_U64(s->nactions, 1);
	CHECK_STR(rules_action_for(s, 6.0), "tag");
	CHECK_STR(rules_action_for(s, 5.9), "pass");
	CHECK_EQ_U64(s->ntracks, 4);
	if (s->ntracks == 4) {
		/* count ITEM per KEY: what is counted is an item, not transactions */
		CHECK_EQ_U64(s->tracks[2].measure, TRACK_COUNT);
		CHECK_EQ_U64(s->tracks[2].item, TRACK_ITEM_OVERQUOTA_RCPT);
		CHECK_EQ_U64(s->tracks[2].key, TRACK_ITEM_RCPT);
		CHECK_EQ_U64(s->tracks[3].item, TRACK_ITEM_NULL_SENDER);
		CHECK_EQ_U64(s->tracks[3].key, TRACK_ITEM_CLIENT_NET);
	}
	if (s->ntracks >= 2) {
		const struct track_def *t = &s->tracks[0], *u = &s->tracks[1];

		CHECK_EQ_U64(t->measure, TRACK_COUNT);
		CHECK_EQ_U64(t->key, TRACK_ITEM_MESSAGE_ID);
		CHECK_EQ_U64(t->window_ms, 3600000);
		CHECK_EQ_U64(t->cmp, RULE_CMP_GE);
		CHECK(t->threshold == 3);
		CHECK_STR(s->rules[t->rule].name, "TM");
		CHECK_EQ_U64(u->measure, TRACK_RATIO);
		CHECK_EQ_U64(u->item, TRACK_ITEM_REJECTED_RCPT);
		CHECK_EQ_U64(u->key, TRACK_ITEM_CLIENT_IP);
		CHECK_EQ_U64(u->window_ms, 600000);
		CHECK(u->threshold == 0.5);
		CHECK_EQ_U64(u->min_events, 50);
	}
	rule_set_free(s);

	s = load("action tag 5\naction block 12\naction quarantine 8\naction tag 4\n");
	CHECK_EQ_U64(s->nactions, 3);
	CHECK_STR(rules_action_for(s, 3.9), "pass");
	CHECK_STR(rules_action_for(s, 4), "tag");
	CHECK_STR(rules_action_for(s, 8.5), "quarantine");
	CHECK_STR(rules_action_for(s, 100), "block");
	rule_set_free(s);
}

/* --- if / ifplugin / else ----------------------------------------------- */

struct ifcase {
	const char *cond;
	bool expect;
};

static const struct ifcase ifcases[] = {
	{ "if (version >= 3.004000)", true },
	{ "if (version >= 4.000000)", true },
	{ "if (version < 4.000000)", false },
	{ "if !((version >= 3.004000))", false },
	{ "if can(Mail::SpamAssassin::Conf::feature_bug6558_free)", true },
	{ "if can(Mail::SpamAssassin::Conf::feature_capture_rules)", false },
	{ "if !can(Mail::SpamAssassin::Conf::feature_capture_rules)", true },
	{ "if plugin(Mail::SpamAssassin::Plugin::ReplaceTags)", true },
	{ "if !plugin(Mail::SpamAssassin::Plugin::DKIM)", false },
	{ "if plugin(Mail::SpamAssassin::Plugin::NoSuchThing)", false },
	{ "if (version >= 3.3) && can(Mail::SpamAssassin::Conf::feature_bug6558_free)", true },
	{ "if plugin(Mail::SpamAssassin::Plugin::NoSuch) || (version > 1)", true },
	{ "ifplugin Mail::SpamAssassin::Plugin::MIMEHeader", true },
	{ "ifplugin Mail::SpamAssassin::Plugin::TxRep", false },
};

static void test_conditionals(void)
{
	for (size_t i = 0; i < sizeof(ifcases) / sizeof(ifcases[0]); i++) {
		char text[512];
		struct rule_set *s;

		snprintf(text, sizeof(text), "%s\nbody IN /x/\nelse\nbody OUT /y/\nendif\n", ifcases[i].cond);
		s = load(text);
		CHECK_EQ_U64(s->nerrors, 0);
		CHECK_EQ_U64(get(s, "IN") != NULL, ifcases[i].expect);
		CHECK_EQ_U64(get(s, "OUT") != NULL, !ifcases[i].expect);
		if (check_failed)
			fprintf(stderr, "  (after if case %zu: %s)\n", i, ifcases[i].cond);
		rule_set_free(s);
	}
	/* nesting: an inner true block inside a false one stays off */
	{
		struct rule_set *s = load("if (version < 1)\nif (version > 1)\nbody A /a/\nendif\nelse\nbody B /b/\nendif\n");

		CHECK(get(s, "A") == NULL);
		CHECK(get(s, "B") != NULL);
		rule_set_free(s);
	}
}

/* --- errors: every message, with file:line ----------------------------- */

struct ecase {
	const char *text;
	uint32_t line;
	const char *reason;     /* substring of the reason */
};

static const struct ecase ecases[] = {
	{ "body\n", 1, "body: missing rule name" },
	{ "\nheader\n", 2, "header: missing rule name" },
	{ "mimeheader\n", 1, "mimeheader: missing rule name" },
	{ "body B1 /unterminated\n", 1, "rule B1: unterminated regex" },
	{ "body B1 nope\n", 1, "rule B1: expected a regex" },
	{ "body B1 /x/q\n", 1, "rule B1: unsupported regex flag" },
	{ "body B1 /x/ junk\n", 1, "rule B1: trailing text after regex" },
	{ "body B-1 /x/\n", 1, "invalid rule name 'B-1'" },
	{ "header H1 Subject\n", 1, "rule H1: expected =~ or !~ after 'Subject'" },
	{ "header H1 Subject:bogus =~ /x/\n", 1, "rule H1: unknown header modifier ':bogus'" },
	{ "header H1 Subject =~ /x/ [if-unset x]\n", 1, "rule H1: bad [if-unset: ...] clause" },
	{ "header H1 Subject =~ /x/ extra\n", 1, "rule H1: trailing text after regex" },
	{ "header H1 exists:\n", 1, "rule H1: exists: needs a field name" },
	{ "header H1 Received:count 25\n", 1, "rule H1: Received:count needs a comparison and a number" },
	{ "header H1 To:count:addr > 3\n", 1, "rule H1: :count and :addrcount do not combine" },
	{ "meta\n", 1, "meta: needs a name and an expression" },
	{ "meta M1 (A && \nbody A /a/\n", 1, "meta M1:" },
	{ "meta M1 A && B)\nbody A /a/\nbody B /b/\n", 1, "meta M1: unexpected text" },
	{ "meta M1 A $ B\nbody A /a/\n", 1, "meta M1:" },
	{ "meta M1 foo(A)\nbody A /a/\n", 1, "meta M1: functions are not supported" },
	{ "meta M1 M2\nmeta M2 M1\n", 2, "meta M2: dependency loop through M1" },
	{ "score\n", 1, "score: missing rule name" },
	{ "score S1\n", 1, "score S1: missing score" },
	{ "score S1 abc\n", 1, "score S1: 'abc' is not a number" },
	{ "score S1 1 2 3 4 5\n", 1, "score S1: more than 4 scores" },
	{ "describe\n", 1, "describe: missing or invalid rule name" },
	{ "tflags\n", 1, "tflags: missing or invalid rule name" },
	{ "body T1 /x/\ntflags T1 maxhits=x\n", 2, "tflags T1: bad maxhits 'x'" },
	{ "priority P1\n", 1, "priority: needs a rule name and a number" },
	{ "priority P1 high\n", 1, "priority P1: 'high' is not an integer" },
	{ "action tag\n", 1, "action: expected 'action NAME THRESHOLD'" },
	{ "action Tag 5\n", 1, "action: bad name 'Tag'" },
	{ "action pass 1\n", 1, "action: 'pass' is what applies" },
	{ "action tag five\n", 1, "action tag: 'five' is not a number" },
	{ "track\n", 1, "track: missing rule name" },
	{ "track T1\n", 1, "track T1: missing measure" },
	{ "track T1 sum x per client_ip over 1m > 1\n", 1, "track T1: unknown measure" },
	{ "track T1 distinct nothing per client_ip over 1m > 1\n", 1, "track T1: unknown item" },
	{ "track T1 count by client_ip over 1m > 1\n", 1, "track T1: expected 'per KEY'" },
	{ "track T1 count global per rcpt over 1m > 1\n", 1, "track T1: expected 'per KEY'" },
	{ "track T1 count per nowhere over 1m > 1\n", 1, "track T1: unknown key" },
	{ "track T1 count per client_ip during 1m > 1\n", 1, "track T1: expected 'over DURATION'" },
	{ "track T1 count per client_ip over 1y > 1\n", 1, "track T1: bad duration" },
	{ "track T1 count per client_ip over 1m ~ 1\n", 1, "track T1: expected a comparison" },
	{ "track T1 count per client_ip over 1m > x\n", 1, "track T1: bad threshold" },
	{ "track T1 count per client_ip over 1m > 1 max 3\n", 1, "track T1: expected 'min N'" },
	{ "include\n", 1, "include: missing file name" },
	{ "include nonexistent.cf\n", 1, "include: cannot open" },
	{ "loadplugin\n", 1, "loadplugin: missing plugin name" },
	{ "replace_tag A\n", 1, "replace_tag: needs a name and a value" },
	{ "replace_start\n", 1, "replace_start: missing value" },
	{ "required_score x\n", 1, "required_score: needs a number" },
	{ "if (version >= )\nendif\n", 1, "if: syntax error" },
	{ "if frobnicate\nendif\n", 1, "if: unknown word" },
	{ "if (version\nendif\n", 1, "if: missing ')'" },
	{ "ifplugin\nendif\n", 1, "ifplugin: missing plugin name" },
	{ "else\n", 1, "else without if" },
	{ "endif\n", 1, "endif without if" },
	{ "if (version > 1)\nelse\nelse\nendif\n", 3, "else without if" },
	{ "\n\nif (version > 1)\nbody A /a/\n", 3, "if/ifplugin without endif" },
	{ "frobnicate on\n", 1, "unknown directive 'frobnicate'" },
};

static void test_errors(void)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/t.cf", tmpdir);
	for (size_t i = 0; i < sizeof(ecases) / sizeof(ecases[0]); i++) {
		const struct ecase *c = &ecases[i];
		struct rule_set *s = load(c->text);
		bool found = false;

		for (uint32_t k = 0; k < s->nerrors; k++)
			if (s->errors[k].line == c->line && strcmp(s->errors[k].file, path) == 0 &&
			    strstr(s->errors[k].reason, c->reason))
				found = true;
		if (!found) {
			fprintf(stderr, "error case %zu: want %s:%u: %s; got:\n", i, path, c->line, c->reason);
			for (uint32_t k = 0; k < s->nerrors; k++)
				fprintf(stderr, "  %s:%u: %s\n", s->errors[k].file, s->errors[k].line,
					s->errors[k].reason);
		}
		CHECK(found);
		rule_set_free(s);
	}
	/* hostile nesting in a meta: an error, not a stack overflow (30,000
	 * '(' recurse far past 8 MiB without the depth limit), and just
	 * inside the limit it parses */
	{
		static const char *const opens[] = { "(", "!", "- ", "A ? 1 : " };

		for (size_t o = 0; o < sizeof(opens) / sizeof(opens[0]); o++) {
			for (int deep = 0; deep < 2; deep++) {
				size_t ol = strlen(opens[o]);
				/* as deep as a line (64 KiB) allows, or just inside the limit */
				size_t reps = deep ? 60000 / (ol + (o == 0)) : RULES_MAX_EXPR_DEPTH - 2;
				char *t = malloc(reps * (ol + 1) + 64);
				size_t n = (size_t)sprintf(t, "body A /a/\nmeta M ");

				for (size_t k = 0; k < reps; k++, n += ol)
					memcpy(t + n, opens[o], ol);
				t[n++] = 'A';
				for (size_t k = 0; o == 0 && k < reps; k++)
					t[n++] = ')';
				memcpy(t + n, "\n", 2);
				{
					struct rule_set *s = load(t);
					bool nested = false;

					for (uint32_t k = 0; k < s->nerrors; k++)
						nested |= strstr(s->errors[k].reason, "nested too deeply") != NULL;
					if (nested != (bool)deep)
						fprintf(stderr, "nesting '%s' x %zu: %u errors\n", opens[o], reps,
							s->nerrors);
					CHECK(nested == (bool)deep);
					rule_set_free(s);
				}
				free(t);
			}
		}
	}
	/* the same for `if` lines */
	for (int o = 0; o < 2; o++) {
		for (int deep = 0; deep < 2; deep++) {
			size_t reps = deep ? (o ? 60000 : 30000) : RULES_MAX_EXPR_DEPTH - 2;
			char *t = malloc(2 * reps + 64);
			size_t n = (size_t)sprintf(t, "if ");
			struct rule_set *s;
			bool nested = false;

			memset(t + n, o ? '!' : '(', reps);
			n += reps;
			n += (size_t)sprintf(t + n, "1");
			if (!o) {
				memset(t + n, ')', reps);
				n += reps;
			}
			sprintf(t + n, "\nbody A /a/\nendif\n");
			s = load(t);
			for (uint32_t k = 0; k < s->nerrors; k++)
				nested |= strstr(s->errors[k].reason, "nested too deeply") != NULL;
			if (nested != (bool)deep)
				fprintf(stderr, "if nesting '%c' x %zu: %u errors, first: %s\n",
					o ? '!' : '(', reps, s->nerrors,
					s->nerrors ? s->errors[0].reason : "-");
			CHECK(nested == (bool)deep);
			if (!deep)   /* an even number of ! over 1 is true */
				CHECK(s->nerrors == 0 && get(s, "A") != NULL);
			rule_set_free(s);
			free(t);
		}
	}
	/* errors are collected, not just the first */
	{
		struct rule_set *s = load("body\nscore X y\nfrobnicate\nbody OK /fine/\n");

		CHECK_EQ_U64(s->nerrors, 3);
		CHECK(get(s, "OK") != NULL);
		rule_set_free(s);
	}
	/* a missing path is an error naming it */
	{
		struct rule_set *s = rule_set_new();

		CHECK_EQ_U64(rules_load_path(s, "/nonexistent/breakwater-rules"), 0);
		CHECK_EQ_U64(s->nerrors, 1);
		CHECK(s->nerrors && strstr(s->errors[0].file, "/nonexistent/breakwater-rules"));
		rule_set_free(s);
	}
}

/* --- directory order, include, ReplaceTags ---------------------------- */

static void test_dir_and_include(void)
{
	char dir[512], sub[512];
	struct rule_set *s;
	const struct rule *r;

	snprintf(sub, sizeof(sub), "%s/inc", tmpdir);
	mkdir(sub, 0700);
	write_file("inc/20_b.cf", "body ORDER /b/\nscore ORDER 2\ninclude extra.inc\n");
	write_file("inc/10_a.cf", "body ORDER /a/\nscore ORDER 1\n");
	write_file("inc/extra.inc", "body FROM_INCLUDE /inc/\n\nbody BAD /x/ junk\n");
	write_file("inc/README", "this is not a .cf file\n");
	snprintf(dir, sizeof(dir), "%s/inc", tmpdir);
	s = rule_set_new();
	CHECK_EQ_U64(rules_load_path(s, dir), 0);
	CHECK_EQ_U64(rules_finish(s), 0);
	r = get(s, "ORDER");
	CHECK(r && strcmp(r->pattern, "b") == 0 && r->score == 2);
	CHECK(get(s, "FROM_INCLUDE") != NULL);
	CHECK_EQ_U64(s->counts.files, 3);
	/* the error inside the included file names that file and its line */
	CHECK_EQ_U64(s->nerrors, 1);
	if (s->nerrors) {
		CHECK(strstr(s->errors[0].file, "inc/extra.inc") != NULL);
		CHECK_EQ_U64(s->errors[0].line, 3);
	}
	rule_set_free(s);

	/* include loop is bounded and reported */
	write_file("loop.cf", "include loop.cf\n");
	snprintf(dir, sizeof(dir), "%s/loop.cf", tmpdir);
	s = rule_set_new();
	CHECK_EQ_U64(rules_load_path(s, dir), 0);
	CHECK(s->nerrors >= 1 && strstr(s->errors[0].reason, "nested more than"));
	rule_set_free(s);
}

static void test_replace_tags(void)
{
	struct rule_set *s = load(
		"replace_tag   A  (?:a|4)\n"
		"replace_tag   B  b\n"
		"replace_tag   AB <A><B>\n"
		"replace_inter W1 \\W?\n"
		"replace_post  P2 {1,2}\n"
		"body RT1 /<A><B>/i\n"
		"body RT2 /<inter W1><A><B>/\n"
		"body RT3 /<post P2><A>x/\n"
		"body RT4 /<AB>/\n"
		"body RT5 /<A>/\n"
		"replace_rules RT1 RT2 RT3 RT4\n");

	CHECK_STR(get(s, "RT1")->pattern, "(?:a|4)b");
	CHECK_STR(get(s, "RT2")->pattern, "(?:a|4)\\W?b");
	CHECK_STR(get(s, "RT3")->pattern, "(?:a|4){1,2}x");
	CHECK_STR(get(s, "RT4")->pattern, "(?:a|4)b");
	CHECK_STR(get(s, "RT5")->pattern, "<A>");   /* not listed in replace_rules */
	CHECK_EQ_U64(s->counts.replace_tags_applied, 4);
	rule_set_free(s);
	/* listed twice, applied once: a second pass would expand the
	 * expansion (fuzz_rules found 577 bytes taking 34 s that way) */
	s = load("replace_tag D <D>x\n"
		 "body RT6 /<D>/\n"
		 "replace_rules RT6\nreplace_rules RT6 RT6\n");
	CHECK_EQ_U64(s->nerrors, 0);
	CHECK_STR(get(s, "RT6")->pattern, "<D>xxxxxx");   /* 6 passes, once */
	rule_set_free(s);
	/* a tag holding itself 16 times: 16^k copies; an error past
	 * RULES_MAX_PATTERN, naming the rule, and the others still load */
	s = load("replace_tag X <X><X><X><X><X><X><X><X><X><X><X><X><X><X><X><X>\n"
		 "body RT7 /<X>/\nbody RT8 /fine/\n"
		 "replace_rules RT7\n");
	CHECK_EQ_U64(s->nerrors, 1);
	CHECK(s->nerrors == 1 && strstr(s->errors[0].reason, "rule RT7: replace_tags make its pattern longer"));
	CHECK(get(s, "RT8") != NULL);
	rule_set_free(s);
}

/* --- meta evaluation ---------------------------------------------------- */

struct mcase {
	const char *expr;
	uint32_t a, b, c;       /* hit counts of A, B, C */
	double want;
};

static const struct mcase mcases[] = {
	{ "A && B", 1, 1, 0, 1 },
	{ "A && B", 1, 0, 0, 0 },
	{ "A || B", 0, 1, 0, 1 },
	{ "A || B", 0, 0, 0, 0 },
	{ "!A", 0, 0, 0, 1 },
	{ "!A", 2, 0, 0, 0 },
	{ "A && !B", 1, 0, 0, 1 },
	{ "A + B + C > 1", 1, 0, 1, 1 },
	{ "A + B + C > 1", 1, 0, 0, 0 },
	{ "A + B + C >= 2", 0, 1, 1, 1 },
	{ "(A + B) * 2 == 4", 1, 1, 0, 1 },
	{ "A - B < 0", 0, 1, 0, 1 },
	{ "A <= 1", 1, 0, 0, 1 },
	{ "A * 3", 2, 0, 0, 6 },        /* arithmetic value, hit counts of multiple rules */
	{ "A || B && C", 1, 0, 0, 1 },  /* && binds tighter than || */
	{ "(A || B) && C", 1, 0, 0, 0 },
	{ "A || B", 3, 1, 0, 3 },       /* Perl: || yields the first true value */
	{ "A && B", 1, 5, 0, 5 },       /* && yields the last value */
	{ "A > 1 ? B : C", 2, 7, 9, 7 },
	{ "A > 1 ? B : C", 1, 7, 9, 9 },
	{ "UNDEFINED_RULE || A", 0, 0, 0, 0 },  /* undefined reads 0 */
	{ "local_tests_only && A", 1, 0, 0, 1 },
	{ "A != B", 1, 2, 0, 1 },
	{ "-1 + A", 1, 0, 0, 0 },
	{ "A / 2", 1, 0, 0, 0.5 },
	{ "A / B", 1, 0, 0, 0 },        /* division by zero reads 0 */
	{ "A ^ B", 1, 1, 0, 0 },
	{ "!(A || B) || C", 0, 0, 0, 1 },
	{ "META2 && A", 1, 1, 0, 1 },   /* metas over metas: META2 = A && B */
	/* precedence and associativity, level by level (Perl's) */
	{ "A - B - C", 5, 1, 1, 3 },    /* left to right: (5-1)-1 */
	{ "A / B / C", 8, 2, 2, 2 },
	{ "A + B * C", 1, 2, 3, 7 },    /* * before + */
	{ "A - B * C", 9, 2, 3, 3 },
	{ "A * B - C", 2, 3, 1, 5 },
	{ "A + B > C", 1, 1, 2, 0 },    /* + before > */
	{ "A == B > C", 1, 2, 1, 1 },   /* > before == */
	{ "A != B >= C", 1, 2, 1, 0 },
	{ "A ^ B && C", 1, 1, 0, 0 },   /* ^ before && */
	{ "A && B ^ C", 0, 1, 1, 0 },
	{ "A || B && C || 0", 1, 0, 0, 1 },
	{ "A ? B : C ? 4 : 5", 1, 0, 0, 0 },   /* ?: to the right */
	{ "-A * B", 2, 3, 0, -6 },
	{ "!A + B", 0, 2, 0, 3 },       /* unary before binary */
};

static void test_meta_eval(void)
{
	for (size_t i = 0; i < sizeof(mcases) / sizeof(mcases[0]); i++) {
		const struct mcase *c = &mcases[i];
		char text[512];
		struct rule_set *s;
		uint32_t *hits;
		int32_t m, m2;
		double v;

		snprintf(text, sizeof(text), "body A /a/\nbody B /b/\nbody C /c/\nmeta META2 A && B\nmeta M %s\n",
			 c->expr);
		s = load(text);
		CHECK_EQ_U64(s->nerrors, 0);
		m = rules_find(s, "M");
		m2 = rules_find(s, "META2");
		CHECK(m >= 0 && m2 >= 0);
		if (m < 0 || m2 < 0) {
			rule_set_free(s);
			continue;
		}
		hits = calloc(s->nrules, sizeof(*hits));
		hits[rules_find(s, "A")] = c->a;
		hits[rules_find(s, "B")] = c->b;
		hits[rules_find(s, "C")] = c->c;
		/* evaluate in meta_order, as the scorer does */
		for (uint32_t k = 0; k < s->nmeta_order; k++)
			if ((int32_t)s->meta_order[k] != m)
				hits[s->meta_order[k]] = rules_meta_eval(s, s->meta_order[k], hits) != 0;
		v = rules_meta_eval(s, (uint32_t)m, hits);
		if (!(v > c->want - 1e-9 && v < c->want + 1e-9))
			fprintf(stderr, "meta case %zu '%s': got %g want %g\n", i, c->expr, v, c->want);
		CHECK(v > c->want - 1e-9 && v < c->want + 1e-9);
		free(hits);
		rule_set_free(s);
	}
	/* META2 is ordered before M that reads it */
	{
		struct rule_set *s = load("meta M X && Y\nmeta X A\nmeta Y X || A\nbody A /a/\n");
		uint32_t pos[4] = { 0 };

		for (uint32_t k = 0; k < s->nmeta_order; k++) {
			const char *n = s->rules[s->meta_order[k]].name;

			pos[n[0] == 'M' ? 0 : n[0] == 'X' ? 1 : 2] = k;
		}
		CHECK_EQ_U64(s->nmeta_order, 3);
		CHECK(pos[1] < pos[2] && pos[2] < pos[0]);
		rule_set_free(s);
	}
}

/* The stock SpamAssassin rules parse without errors (compile is in test_match). */
static void test_stock_parse(void)
{
	struct rule_set *s;

	if (access("/usr/share/spamassassin/50_scores.cf", R_OK) != 0) {
		printf("stock rules absent: skipped\n");
		return;
	}
	s = rule_set_new();
	CHECK_EQ_U64(rules_load_path(s, "/usr/share/spamassassin"), 0);
	CHECK_EQ_U64(rules_finish(s), 0);
	CHECK_EQ_U64(rule_set_validate(s), 0);
	CHECK_EQ_U64(s->nerrors, 0);
	CHECK(s->counts.rules > 2000);
	for (uint32_t i = 0; i < s->nerrors && i < 10; i++)
		fprintf(stderr, "%s:%u: %s\n", s->errors[i].file, s->errors[i].line, s->errors[i].reason);
	rules_print_counts(s, stdout);
	rule_set_free(s);
}

int main(void)
{
	const char *t = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/bw-rules-XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	test_directives();
	test_misc_directives();
	test_conditionals();
	test_errors();
	test_dir_and_include();
	test_replace_tags();
	test_meta_eval();
	test_stock_parse();
	{
		char cmd[600];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", tmpdir);
	}
	return check_done();
}
