/* Unit tests for engine/match.c: Perl flag -> Hyperscan flag mapping,
 * classification (exact / prefilter+confirm / PCRE2 only), scanning a small
 * message per class, header field extraction, native tests, meta scoring
 * and actions, scratch cloning. The stock SpamAssassin rules compile in
 * test_match_stock (slow, skipped under sanitizers). */
#include <errno.h>
#include <hs/hs.h>
#include <stdlib.h>
#include <string.h>

#include "bw-config.h"
#include "check.h"
#include "match.h"
#include "mem.h"
#include "score.h"

/* --- flag mapping --------------------------------------------------- */

struct fcase {
	unsigned re_flags, tflags, want;
};

static const struct fcase fcases[] = {
	{ 0, 0, HS_FLAG_ALLOWEMPTY | HS_FLAG_SINGLEMATCH },
	{ RULE_RE_CASELESS, 0, HS_FLAG_ALLOWEMPTY | HS_FLAG_SINGLEMATCH | HS_FLAG_CASELESS },
	{ RULE_RE_MULTILINE, 0, HS_FLAG_ALLOWEMPTY | HS_FLAG_SINGLEMATCH | HS_FLAG_MULTILINE },
	{ RULE_RE_DOTALL, 0, HS_FLAG_ALLOWEMPTY | HS_FLAG_SINGLEMATCH | HS_FLAG_DOTALL },
	{ RULE_RE_CASELESS | RULE_RE_MULTILINE | RULE_RE_DOTALL, 0,
	  HS_FLAG_ALLOWEMPTY | HS_FLAG_SINGLEMATCH | HS_FLAG_CASELESS | HS_FLAG_MULTILINE | HS_FLAG_DOTALL },
	{ RULE_RE_EXTENDED, 0, HS_FLAG_ALLOWEMPTY | HS_FLAG_SINGLEMATCH },  /* /x: pattern rewritten */
	{ 0, RULE_TF_MULTIPLE, HS_FLAG_ALLOWEMPTY },                        /* every match wanted */
	{ RULE_RE_CASELESS, RULE_TF_MULTIPLE | RULE_TF_NOSUBJECT, HS_FLAG_ALLOWEMPTY | HS_FLAG_CASELESS },
};

static void test_flags(void)
{
	for (size_t i = 0; i < sizeof(fcases) / sizeof(fcases[0]); i++)
		CHECK_EQ_U64(match_hs_flags(fcases[i].re_flags, fcases[i].tflags), fcases[i].want);
}

/* --- build helpers ---------------------------------------------------- */

struct built {
	struct rule_set *rs;
	struct match_set *ms;
	struct match_scratch *s;
	struct match_hits *h;
};

static bool build(struct built *b, const char *text)
{
	char err[256] = "";
	struct match_build_opts o = { .nthreads = 2 };

	memset(b, 0, sizeof(*b));
	b->rs = rule_set_new();
	CHECK(b->rs != NULL);
	CHECK_EQ_U64(rules_load_text(b->rs, "test.cf", text, strlen(text)), 0);
	CHECK_EQ_U64(rules_finish(b->rs), 0);
	CHECK_EQ_U64(b->rs->nerrors, 0);
	for (uint32_t i = 0; i < b->rs->nerrors; i++)
		fprintf(stderr, "%s:%u: %s\n", b->rs->errors[i].file, b->rs->errors[i].line,
			b->rs->errors[i].reason);
	b->ms = match_set_build(b->rs, &o, err, sizeof(err));
	if (!b->ms)
		fprintf(stderr, "build failed: %s\n", err);
	CHECK(b->ms != NULL);
	if (!b->ms)
		return false;
	b->s = match_scratch_new(b->ms);
	b->h = match_hits_new(b->ms);
	CHECK(b->s != NULL && b->h != NULL);
	return b->s && b->h;
}

static void unbuild(struct built *b)
{
	match_hits_free(b->h);
	match_scratch_free(b->s);
	match_set_free(b->ms);
	rule_set_free(b->rs);
}

static uint32_t hits_of(const struct built *b, const char *name)
{
	int32_t id = rules_find(b->rs, name);

	return id < 0 ? UINT32_MAX : b->h->count[id];
}

/* --- classification --------------------------------------------------- */

struct ccase {
	const char *rule;
	enum match_kind want;
};

static const char ctext[] =
	"body C_LITERAL /hello world/i\n"
	"body C_BACKREF /(ab)\\1/\n"              /* Hyperscan: no backreferences */
	"body C_LOOKBEHIND /(?<!foo)bar/\n"      /* no lookbehind */
	"body C_LOOKAHEAD /foo(?=bar)/\n"
	"body C_COND /\\Gfoo/\n"                 /* \G: not even prefilter */
	"body C_RECURSE /\\((?:[^()]|(?R))*\\)/\n"
	"body C_EXTENDED /h e l l o/x\n"
	"body C_POSSESSIVE /a++b/\n"
	"body C_LONG_REPEAT_BACKREF /(x)[^<]{0,2048}\\1/\n";  /* costly prefilter: PCRE2 */

static const struct ccase ccases[] = {
	{ "C_LITERAL", MATCH_KIND_EXACT },
	{ "C_BACKREF", MATCH_KIND_PREFILTER },
	{ "C_LOOKBEHIND", MATCH_KIND_PREFILTER },
	{ "C_LOOKAHEAD", MATCH_KIND_PREFILTER },
	{ "C_COND", MATCH_KIND_PCRE },
	{ "C_RECURSE", MATCH_KIND_PCRE },
	{ "C_EXTENDED", MATCH_KIND_EXACT },
	{ "C_POSSESSIVE", MATCH_KIND_PREFILTER },
	{ "C_LONG_REPEAT_BACKREF", MATCH_KIND_PCRE },
};

static void test_classify(void)
{
	struct built b;
	struct match_text parts[2];
	const struct match_counts *c;

	if (!build(&b, ctext))
		goto out;
	for (size_t i = 0; i < sizeof(ccases) / sizeof(ccases[0]); i++) {
		int32_t id = rules_find(b.rs, ccases[i].rule);

		CHECK(id >= 0);
		if (id < 0)
			continue;
		if (match_rule_kind(b.ms, (uint32_t)id) != ccases[i].want)
			fprintf(stderr, "%s: kind %d, want %d\n", ccases[i].rule,
				match_rule_kind(b.ms, (uint32_t)id), ccases[i].want);
		CHECK_EQ_U64(match_rule_kind(b.ms, (uint32_t)id), ccases[i].want);
	}
	c = match_set_counts(b.ms);
	CHECK_EQ_U64(c->kinds[MATCH_KIND_EXACT] + c->kinds[MATCH_KIND_PREFILTER] + c->kinds[MATCH_KIND_PCRE], 9);
	CHECK(match_rule_hs_flags(b.ms, (uint32_t)rules_find(b.rs, "C_BACKREF")) & HS_FLAG_PREFILTER);
	/* prefilter candidates are confirmed by PCRE2: "abxy" passes Hyperscan's
	 * approximation of (ab)\1 but not the real regex */
	parts[0] = (struct match_text){ "abab foobar xbar", 16 };
	parts[1] = (struct match_text){ "HELLO  (x(y)) aaab xyzx", 23 };
	CHECK_EQ_U64(match_scan_texts(b.ms, b.s, MATCH_CLASS_BODY, parts, 2, false, b.h), 0);
	CHECK_EQ_U64(hits_of(&b, "C_BACKREF"), 1);
	CHECK_EQ_U64(hits_of(&b, "C_LOOKBEHIND"), 1);   /* xbar */
	CHECK_EQ_U64(hits_of(&b, "C_LOOKAHEAD"), 1);
	CHECK_EQ_U64(hits_of(&b, "C_RECURSE"), 1);
	CHECK_EQ_U64(hits_of(&b, "C_EXTENDED"), 0);      /* "HELLO" is not "hello" without /i */
	CHECK_EQ_U64(hits_of(&b, "C_POSSESSIVE"), 1);
	CHECK_EQ_U64(hits_of(&b, "C_LONG_REPEAT_BACKREF"), 1);
	CHECK_EQ_U64(hits_of(&b, "C_LITERAL"), 0);
	match_hits_reset(b.h);
	parts[0] = (struct match_text){ "abxy hello world", 16 };
	CHECK_EQ_U64(match_scan_texts(b.ms, b.s, MATCH_CLASS_BODY, parts, 1, false, b.h), 0);
	CHECK_EQ_U64(hits_of(&b, "C_BACKREF"), 0);
	CHECK_EQ_U64(hits_of(&b, "C_LITERAL"), 1);
	CHECK_EQ_U64(hits_of(&b, "C_EXTENDED"), 1);      /* /x: "hello" */
	CHECK_EQ_U64(hits_of(&b, "C_LOOKBEHIND"), 0);
out:
	unbuild(&b);
}

/* --- scanning a message ------------------------------------------------ */

static const char mtext[] =
	"header  S_SUBJ      Subject =~ /\\bfree money\\b/i\n"
	"header  S_SUBJ_RAW  Subject:raw =~ /=\\?utf-8\\?/i\n"
	"header  S_FROM_ADDR From:addr =~ /^spam\\@example\\.com$/\n"
	"header  S_FROM_NAME From:name =~ /^Spammer Joe$/\n"
	"header  S_FROM_HOST From:addr:host =~ /^example\\.com$/\n"
	"header  S_FROM_DOM  From:addr:domain =~ /^example\\.co\\.uk$/\n"
	"header  S_NO_XM     X-Mailer !~ /Outlook/\n"
	"header  S_UNSET     X-Absent =~ /^UNSET$/ [if-unset: UNSET]\n"
	"header  S_EMPTY     X-Absent =~ /^$/\n"
	"header  S_NEG_ABS   X-Absent !~ /x/\n"
	"header  S_TOCC      ToCc =~ /carol\\@/\n"
	"header  S_ALL       ALL =~ /^Received: from a/m\n"
	"header  S_MSGID     MESSAGEID =~ /<abc\\@x>/\n"
	"header  S_ENV       EnvelopeFrom =~ /bounce\\@/\n"
	"header  S_RCVD_LAST Received:last =~ /from c/\n"
	"header  S_RCVD_FIRST Received:first =~ /from c/\n"
	"header  S_EXISTS    exists:List-Id\n"
	"header  S_NOT_EXISTS exists:X-Nothing\n"
	"header  S_RCVD3     Received:count >= 3\n"
	"header  S_RCVD4     Received:count > 3\n"
	"header  S_ADDRS     ToCc:addrcount == 4\n"
	"header  S_MISSING_TO eval:check_for_missing_to_header()\n"
	"header  S_CAPS      eval:subject_is_all_caps()\n"
	"header  S_RANGE     eval:check_header_count_range('Received','2','5')\n"
	"header  S_TEMPLATE  eval:check_unresolved_template()\n"
	"body    S_BODY      /cheap pills/\n"
	"body    S_BODY_MULTI /pills/\n"
	"tflags  S_BODY_MULTI multiple maxhits=3\n"
	"body    S_NOSUBJ    /free money/i\n"
	"tflags  S_NOSUBJ    nosubject\n"
	"body    S_SUBJ_BODY /free money/i\n"
	"body    S_LEN       eval:check_body_length('100')\n"
	"rawbody S_RAW       /<b>cheap/\n"
	"full    S_FULL      /^Subject: /m\n"
	"uri     S_URI       m{^https?://bit\\.ly/}i\n"
	"mimeheader S_MIME   Content-Type =~ /application\\/zip/\n"
	"meta    S_META      S_BODY && S_URI\n"
	"meta    S_META_NO   S_BODY && !S_URI\n"
	"meta    S_META_SUM  S_BODY_MULTI > 2\n"
	"meta    __S_SUB     S_BODY\n"
	"score   S_META      4\n"
	"score   S_BODY      2.5\n"
	"action  tag 5\n"
	"action  block 100\n";

#define HDR(n, v) { n, sizeof(n) - 1, v, sizeof(v) - 1, v, sizeof(v) - 1, 0 }

static const struct match_header mheaders[] = {
	HDR("Received", "from a by b"),
	HDR("Received", "from b by c"),
	HDR("Received", "from c by d"),
	{ "Subject", 7, "FREE MONEY NOW FOR YOU", 22, "=?utf-8?q?FREE_MONEY_NOW_FOR_YOU?=", 34, 0 },
	HDR("From", "\"Spammer Joe\" <spam@example.com>"),
	HDR("To", "alice@a.example, Bob <bob@b.example>"),
	HDR("Cc", "carol@c.example, dave@d.example (Dave)"),
	HDR("Message-Id", "<abc@x>"),
	HDR("List-Id", "<list.example>"),
	HDR("X-Mailer", "Mutt"),
};

struct hcase {
	const char *rule;
	uint32_t want;
};

static const struct hcase hcases[] = {
	{ "S_SUBJ", 1 }, { "S_SUBJ_RAW", 1 }, { "S_FROM_ADDR", 1 }, { "S_FROM_NAME", 1 },
	{ "S_FROM_HOST", 1 }, { "S_FROM_DOM", 0 }, { "S_NO_XM", 1 }, { "S_UNSET", 1 },
	{ "S_EMPTY", 1 }, { "S_NEG_ABS", 1 }, { "S_TOCC", 1 }, { "S_ALL", 1 }, { "S_MSGID", 1 },
	{ "S_ENV", 1 }, { "S_RCVD_LAST", 1 }, { "S_RCVD_FIRST", 0 }, { "S_EXISTS", 1 },
	{ "S_NOT_EXISTS", 0 }, { "S_RCVD3", 1 }, { "S_RCVD4", 0 }, { "S_ADDRS", 1 },
	{ "S_MISSING_TO", 0 }, { "S_CAPS", 1 }, { "S_RANGE", 1 }, { "S_TEMPLATE", 0 },
	{ "S_BODY", 1 }, { "S_BODY_MULTI", 3 }, { "S_NOSUBJ", 0 }, { "S_SUBJ_BODY", 1 },
	{ "S_LEN", 1 }, { "S_RAW", 1 }, { "S_FULL", 1 }, { "S_URI", 1 }, { "S_MIME", 1 },
	{ "S_META", 1 }, { "S_META_NO", 0 }, { "S_META_SUM", 1 }, { "__S_SUB", 1 },
};

static void test_scan_message(void)
{
	static const struct match_text body[] = {
		{ "FREE MONEY NOW FOR YOU", 22 },           /* the Subject, first */
		{ "Buy cheap pills here.", 21 },
		{ "pills pills pills pills", 23 },
	};
	static const struct match_text raw[] = { { "<b>cheap</b> pills", 18 } };
	static const struct match_text uris[] = { { "http://example.org/", 19 }, { "https://BIT.LY/x", 16 } };
	static const struct match_header mime[] = { HDR("Content-Type", "application/zip; name=x.zip") };
	static const char full[] = "Received: from a by b\nSubject: FREE MONEY\n\nbody\n";
	struct match_msg msg = {
		.headers = mheaders, .nheaders = sizeof(mheaders) / sizeof(mheaders[0]),
		.mime_headers = mime, .nmime_headers = 1,
		.body = body, .nbody = 3, .body_starts_with_subject = true,
		.rawbody = raw, .nrawbody = 1,
		.full = full, .full_len = sizeof(full) - 1,
		.uris = uris, .nuris = 2,
		.envelope_from = "bounce@example.net", .envelope_from_len = 18,
		.body_length = 60, .body_length_known = true,
	};
	struct built b;
	double want_score = 0;

	if (!build(&b, mtext))
		goto out;
	CHECK_EQ_U64(match_scan_msg(b.ms, b.s, &msg, b.h), 0);
	/* S_FULL is exact: a streaming database, not scanned by match_scan_msg */
	CHECK_EQ_U64(hits_of(&b, "S_FULL"), 0);
	CHECK_EQ_U64(match_scan_full(b.ms, b.s, full, sizeof(full) - 1, b.h), 0);
	score_hits(b.rs, b.h);
	for (size_t i = 0; i < sizeof(hcases) / sizeof(hcases[0]); i++) {
		uint32_t got = hits_of(&b, hcases[i].rule);

		if (got != hcases[i].want)
			fprintf(stderr, "%s: %u hits, want %u\n", hcases[i].rule, got, hcases[i].want);
		CHECK_EQ_U64(got, hcases[i].want);
	}
	/* the score is the sum over scored rules that hit (__ rules excluded) */
	for (uint32_t i = 0; i < b.h->nlist; i++) {
		const struct rule *r = &b.rs->rules[b.h->list[i]];

		if (r->scored)
			want_score += r->score;
	}
	CHECK(b.h->score > want_score - 0.001 && b.h->score < want_score + 0.001);
	CHECK(b.h->score > 5);
	CHECK_STR(b.h->action, "tag");

	/* reset, then an empty message: only absent-field rules hit */
	match_hits_reset(b.h);
	CHECK_EQ_U64(b.h->nlist, 0);
	{
		struct match_msg empty = { 0 };

		CHECK_EQ_U64(match_scan_msg(b.ms, b.s, &empty, b.h), 0);
		score_hits(b.rs, b.h);
		CHECK_EQ_U64(hits_of(&b, "S_MISSING_TO"), 1);
		CHECK_EQ_U64(hits_of(&b, "S_UNSET"), 1);
		CHECK_EQ_U64(hits_of(&b, "S_NO_XM"), 1);
		CHECK_EQ_U64(hits_of(&b, "S_BODY"), 0);
		CHECK_EQ_U64(hits_of(&b, "S_LEN"), 0);     /* length unknown */
		CHECK_EQ_U64(hits_of(&b, "S_META"), 0);
	}

	/* a cloned scratch gives the same answers */
	{
		struct match_scratch *s2 = match_scratch_clone(b.s);

		CHECK(s2 != NULL);
		match_hits_reset(b.h);
		CHECK_EQ_U64(match_scan_msg(b.ms, s2, &msg, b.h), 0);
		CHECK_EQ_U64(match_scan_full(b.ms, s2, full, sizeof(full) - 1, b.h), 0);
		CHECK_EQ_U64(hits_of(&b, "S_FULL"), 1);
		score_hits(b.rs, b.h);
		CHECK_EQ_U64(hits_of(&b, "S_META"), 1);
		CHECK(match_scratch_stats(s2)->scans > 0);
		CHECK_EQ_U64(match_scratch_stats(s2)->hs_errors, 0);
		match_scratch_free(s2);
	}
	/* behaviour hits from the storm stage feed metas like any other */
	match_hits_add(b.h, (uint32_t)rules_find(b.rs, "S_NOT_EXISTS"), 2);
	match_hits_add(b.h, (uint32_t)rules_find(b.rs, "S_NOT_EXISTS"), 0);
	CHECK_EQ_U64(hits_of(&b, "S_NOT_EXISTS"), 2);
out:
	unbuild(&b);
}

/* --- full rules: streaming ------------------------------------------------ */

static const char ftext[] =
	"full F_SPAN    /Subject: cheap pills/\n"           /* crosses chunk boundaries */
	"full F_NUL     /\\x00/\n"
	"full F_END     /bye\\s*\\z/\n"                      /* reported at end of data */
	"full F_MULTI   /pill/\n"
	"tflags F_MULTI multiple maxhits=3\n"
	"full F_MULTI9  /pill/\n"
	"tflags F_MULTI9 multiple\n"
	"full F_EMPTY   /x*/\n"                             /* matches \"\": always */
	"full F_LONG    /^[^\\r\\n]{70}/m\n"                 /* a costly repeat: a db alone */
	"full F_MISS    /never here/\n"
	"full F_BACKREF /(ab)\\1/\n"                         /* prefilter: on the copy */
	"full F_LOOK    /^From:\\s+(\\S+)\\s(?=.{1,200}^\\1\\r?$)/sm\n"
	"full F_PCRE    /\\((?:[^()]|(?R))*\\)/\n"          /* PCRE2 only: on the copy */
	"body B_PILLS   /pills/\n";

static const char fmsg[] =
	"From: Joe <joe@x.example>\r\nSubject: cheap pills\r\n\r\n"
	"pill pill pill pill pill\r\n"
	"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"
	"abab (a(b)c)\r\nJoe\r\nnul\0here\r\nbye\r\n";

struct fwant {
	const char *rule;
	uint32_t whole, cut40;     /* whole copy; copy cut to the first 40 bytes */
};

static const struct fwant fwants[] = {
	{ "F_SPAN", 1, 1 }, { "F_NUL", 1, 1 }, { "F_END", 1, 1 }, { "F_MULTI", 3, 1 },
	{ "F_MULTI9", 6, 1 }, { "F_EMPTY", 1, 1 }, { "F_LONG", 1, 1 }, { "F_MISS", 0, 0 },
	{ "F_BACKREF", 1, 0 }, { "F_LOOK", 1, 0 }, { "F_PCRE", 1, 0 }, { "B_PILLS", 0, 0 },
};

/* Streams msg through b's full rules in the pieces cut at cuts[0..ncuts),
 * or a byte at a time; the rules that need PCRE2 read copy[0..copy_len). */
static bool stream_run(struct built *b, const char *msg, size_t len, const size_t *cuts,
		       size_t ncuts, bool bytewise, const char *copy, size_t copy_len)
{
	struct match_stream *st = match_stream_open(b->ms);
	struct match_text t = { copy, copy_len };
	size_t prev = 0;
	bool ok = true;

	match_hits_reset(b->h);
	if (!st)
		return false;
	if (bytewise) {
		for (size_t i = 0; i < len; i++)
			ok &= match_stream_feed(b->ms, b->s, st, msg + i, 1) == 0;
	} else {
		for (size_t k = 0; k <= ncuts; k++) {
			size_t end = k < ncuts ? cuts[k] : len;

			ok &= match_stream_feed(b->ms, b->s, st, msg + prev, end - prev) == 0;
			prev = end;
		}
	}
	ok &= match_stream_close(b->ms, b->s, st, copy, copy_len, b->h) == 0;
	/* the block-mode full databases, as match_scan_msg runs them on the copy */
	ok &= match_scan_texts(b->ms, b->s, MATCH_CLASS_FULL, &t, 1, false, b->h) == 0;
	match_stream_free(st);
	return ok;
}

static bool fwants_hold(const struct built *b, bool cut, const char *how)
{
	bool all = true;

	for (size_t i = 0; i < sizeof(fwants) / sizeof(fwants[0]); i++) {
		uint32_t got = hits_of(b, fwants[i].rule), want = cut ? fwants[i].cut40 : fwants[i].whole;

		if (got != want) {
			fprintf(stderr, "%s: %s: %u hits, want %u\n", how, fwants[i].rule, got, want);
			all = false;
		}
	}
	return all;
}

static void test_full_stream(void)
{
	size_t len = sizeof(fmsg) - 1;
	const struct match_full_info *fi;
	struct built b, b2;
	uint64_t in_use0;
	struct match_stream *st;

	if (!build(&b, ftext))
		goto out;
	fi = match_set_full(b.ms);
	CHECK_EQ_U64(fi->rules, 11);
	CHECK(fi->stream_dbs >= 2);         /* F_LONG has one of its own */
	CHECK_EQ_U64(fi->copy_rules, 5);    /* 3 by kind, 2 counted */
	CHECK(fi->need_copy);
	CHECK_EQ_U64(match_rule_kind(b.ms, (uint32_t)rules_find(b.rs, "F_SPAN")), MATCH_KIND_EXACT);
	CHECK_EQ_U64(match_rule_kind(b.ms, (uint32_t)rules_find(b.rs, "F_BACKREF")),
		     MATCH_KIND_PREFILTER);
	/* whole, as one piece */
	CHECK_EQ_U64(match_scan_full(b.ms, b.s, fmsg, len, b.h), 0);
	CHECK(fwants_hold(&b, false, "whole"));
	/* a byte at a time equals whole */
	CHECK(stream_run(&b, fmsg, len, NULL, 0, true, fmsg, len));
	CHECK(fwants_hold(&b, false, "byte by byte"));
	/* two pieces, split at every offset (F_SPAN crosses the cut) */
	for (size_t cut = 1; cut < len; cut++) {
		if (!stream_run(&b, fmsg, len, &cut, 1, false, fmsg, len) ||
		    !fwants_hold(&b, false, "split")) {
			fprintf(stderr, "  split at %zu\n", cut);
			CHECK(false);
			break;
		}
		check_passed++;
	}
	/* the copy cut short (max_full): the streams still saw every byte;
	 * what needs PCRE2 sees only the copy; counts come from the copy, at
	 * least 1 for an exact rule Hyperscan reported */
	CHECK(stream_run(&b, fmsg, len, NULL, 0, false, fmsg, 40));
	CHECK(fwants_hold(&b, true, "copy cut"));
	/* no copy at all (the set did not ask for one): exact rules only */
	CHECK(stream_run(&b, fmsg, len, NULL, 0, false, NULL, 0));
	CHECK_EQ_U64(hits_of(&b, "F_SPAN"), 1);
	CHECK_EQ_U64(hits_of(&b, "F_MULTI"), 1);
	CHECK_EQ_U64(hits_of(&b, "F_LOOK"), 0);
	/* stream state is MEM_MATCH, all of it given back: after a close, and
	 * when a message is abandoned midway (RSET, abort: freed unclosed) */
	in_use0 = mem_in_use(MEM_MATCH);
	st = match_stream_open(b.ms);
	CHECK(st != NULL);
	CHECK(mem_in_use(MEM_MATCH) > in_use0);
	CHECK(match_stream_size(st) >= fi->stream_bytes);
	CHECK_EQ_U64(match_stream_feed(b.ms, b.s, st, fmsg, 30), 0);
	match_stream_free(st);
	CHECK_EQ_U64(mem_in_use(MEM_MATCH), in_use0);
	st = match_stream_open(b.ms);
	CHECK_EQ_U64(match_stream_feed(b.ms, b.s, st, fmsg, len), 0);
	match_hits_reset(b.h);
	CHECK_EQ_U64(match_stream_close(b.ms, b.s, st, NULL, 0, b.h), 0);
	CHECK_EQ_U64(hits_of(&b, "F_END"), 1);
	CHECK_EQ_U64(match_stream_feed(b.ms, b.s, st, "more", 4), 0);     /* spent: ignored */
	match_stream_free(st);
	CHECK_EQ_U64(mem_in_use(MEM_MATCH), in_use0);
	CHECK(match_scratch_stats(b.s)->streams > 0);
	CHECK_EQ_U64(match_scratch_stats(b.s)->hs_errors, 0);
	/* a stream belongs to the set that opened it */
	if (build(&b2, ftext)) {
		st = match_stream_open(b.ms);
		CHECK_EQ_U64(match_stream_feed(b2.ms, b2.s, st, fmsg, 10), (uint64_t)-EINVAL);
		CHECK_EQ_U64(match_stream_close(b2.ms, b2.s, st, NULL, 0, b2.h), (uint64_t)-EINVAL);
		match_stream_free(st);
	}
	unbuild(&b2);
	/* no full rules: nothing to open, no copy; exact ones only: no copy */
	{
		struct built c;

		if (build(&c, "body B /x/\n")) {
			CHECK_EQ_U64(match_set_full(c.ms)->stream_dbs, 0);
			CHECK(match_stream_open(c.ms) == NULL);
			CHECK(!match_set_full(c.ms)->need_copy);
		}
		unbuild(&c);
		if (build(&c, "full F /abc/\nfull G /d[ef]g/i\n")) {
			CHECK_EQ_U64(match_set_full(c.ms)->stream_dbs, 1);
			CHECK(!match_set_full(c.ms)->need_copy);
		}
		unbuild(&c);
	}
out:
	unbuild(&b);
}

/* --- mimeheader ----------------------------------------------------------- */

static const char mhtext[] =
	"mimeheader M_CT     Content-Type =~ /^image\\/gif\\b/i\n"
	"mimeheader M_RAW    Content-Type:raw =~ /^image\\/gif;\\n {8}name=\\\".+?\\\"$/s\n"
	"mimeheader M_ROOT   Content-Type =~ /^multipart\\/mixed/\n"
	"mimeheader M_UNSET  X-None =~ /^$/\n"
	"mimeheader M_UNSET2 X-None =~ /^none$/ [if-unset: none]\n"
	"mimeheader M_RAWUN  X-None:raw =~ /^none$/ [if-unset: none]\n"
	"mimeheader M_NEG    Content-Type !~ /zip/\n"
	"mimeheader M_NEG2   Content-Type !~ /gif/\n"
	"mimeheader M_FIRST  Content-Id =~ /^<first>$/\n"
	"mimeheader M_LAST   Content-Id =~ /^<second>$/\n"
	"mimeheader M_MULTI  Content-Type =~ /e/\n"
	"tflags     M_MULTI  multiple\n"
	"mimeheader M_ALL    ALL =~ /^Content-Id: <second>$/m\n"
	"mimeheader M_DEC    Content-Description =~ /r\\xc3\\xa9sum\\xc3\\xa9/\n"
	"mimeheader M_LOOK   Content-Id =~ /<(s)e\\w*(?=d>)/\n"      /* prefilter + confirm */
	"header     H_CT     Content-Type =~ /image/\n";

#define PHDR(n, v, r, part) { n, sizeof(n) - 1, v, sizeof(v) - 1, r, sizeof(r) - 1, part }

static void test_mimeheader(void)
{
	static const struct match_header top[] = {
		PHDR("Content-Type", "multipart/mixed; boundary=\"b\"", " multipart/mixed; boundary=\"b\"", 0),
	};
	static const struct match_header mh[] = {
		PHDR("Content-Type", "multipart/mixed; boundary=\"b\"", " multipart/mixed; boundary=\"b\"", 0),
		PHDR("Content-Type", "text/plain", " text/plain", 1),
		PHDR("Content-Type", "image/gif;        name=\"x.gif\"",
		     " image/gif;\n        name=\"x.gif\"", 3),
		PHDR("Content-Id", "<first>", " <first>", 3),
		PHDR("Content-Id", "<second>", " <second>", 3),
		PHDR("Content-Description", "r\xc3\xa9sum\xc3\xa9", " =?utf-8?q?r=C3=A9sum=C3=A9?=", 3),
	};
	static const struct { const char *rule; uint32_t want; } want[] = {
		{ "M_CT", 1 }, { "M_RAW", 1 }, { "M_ROOT", 1 }, { "M_UNSET", 1 }, { "M_UNSET2", 1 },
		{ "M_RAWUN", 0 },   /* :raw reads "" in a part without it: no if-unset */
		{ "M_NEG", 1 }, { "M_NEG2", 0 },
		{ "M_FIRST", 0 },   /* a part's value is its last instance */
		{ "M_LAST", 1 },
		{ "M_MULTI", 1 },   /* counted in the first part that matches (root: "mixed") */
		{ "M_ALL", 1 }, { "M_DEC", 1 }, { "M_LOOK", 1 },
		{ "H_CT", 0 },      /* header rules read the message's own headers only */
	};
	/* part 2 (between 1 and 3) has no header at all */
	struct match_msg msg = { .headers = top, .nheaders = 1, .mime_headers = mh,
				 .nmime_headers = 6, .nparts = 4 };
	struct built b;

	if (!build(&b, mhtext))
		goto out;
	CHECK_EQ_U64(match_scan_msg(b.ms, b.s, &msg, b.h), 0);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		uint32_t got = hits_of(&b, want[i].rule);

		if (got != want[i].want)
			fprintf(stderr, "%s: %u hits, want %u\n", want[i].rule, got, want[i].want);
		CHECK_EQ_U64(got, want[i].want);
	}
	/* no MIME headers at all: only what reads an absent field hits */
	match_hits_reset(b.h);
	msg.mime_headers = NULL;
	msg.nmime_headers = 0;
	msg.nparts = 1;
	CHECK_EQ_U64(match_scan_msg(b.ms, b.s, &msg, b.h), 0);
	CHECK_EQ_U64(hits_of(&b, "M_CT"), 0);
	CHECK_EQ_U64(hits_of(&b, "M_UNSET"), 1);
	CHECK_EQ_U64(hits_of(&b, "M_NEG"), 1);
out:
	unbuild(&b);
}

/* An address list: the items of a To: header, counted and extracted. */
static void test_addresses(void)
{
	static const char text[] =
		"header A2 To:addrcount == 3\n"
		"header A_Q To:addr =~ /^\"a,b\"\\@x\\.example$/m\n"
		"header A_N To:name =~ /^Smith, John$/m\n"
		"header A_IP Received:ip =~ /^192\\.0\\.2\\.7$/\n"
		"header A_REV Received:revip =~ /^7\\.2\\.0\\.192$/\n"
		"header A_DOM From:addr:domain =~ /^example\\.co\\.uk$/\n";
	static const struct match_header hs[] = {
		HDR("To", "\"Smith, John\" <\"a,b\"@x.example>, group: ; c@y.example (C), junk, <d@z.example>"),
		HDR("Received", "from mx (mx [192.0.2.7]) by us"),
		HDR("From", "news@mail.example.co.uk"),
	};
	struct match_msg msg = { .headers = hs, .nheaders = 3 };
	struct built b;

	if (!build(&b, text))
		goto out;
	CHECK_EQ_U64(match_scan_msg(b.ms, b.s, &msg, b.h), 0);
	CHECK_EQ_U64(hits_of(&b, "A2"), 1);
	CHECK_EQ_U64(hits_of(&b, "A_Q"), 1);
	CHECK_EQ_U64(hits_of(&b, "A_N"), 1);
	CHECK_EQ_U64(hits_of(&b, "A_IP"), 1);
	CHECK_EQ_U64(hits_of(&b, "A_REV"), 1);
	CHECK_EQ_U64(hits_of(&b, "A_DOM"), 1);
out:
	unbuild(&b);
}

/* rules/ (breakwater's defaults) compile and score a loop-like message */
static void test_default_rules(void)
{
	struct rule_set *rs = rule_set_new();
	struct match_set *ms;
	struct match_scratch *s;
	struct match_hits *h;
	char err[256];
	struct match_header hs[40];
	char to[8000];
	size_t tl = 0;
	struct match_msg msg = { 0 };
	struct match_build_opts o = { .nthreads = 2 };

	CHECK_EQ_U64(rules_load_path(rs, BW_SOURCE_ROOT "/rules"), 0);
	CHECK_EQ_U64(rules_finish(rs), 0);
	CHECK_EQ_U64(rs->nerrors, 0);
	for (uint32_t i = 0; i < rs->nerrors; i++)
		fprintf(stderr, "%s:%u: %s\n", rs->errors[i].file, rs->errors[i].line, rs->errors[i].reason);
	/* every scored rule has a describe line */
	for (uint32_t i = 0; i < rs->nrules; i++)
		if (rs->rules[i].scored && !rs->rules[i].describe) {
			fprintf(stderr, "%s has no describe\n", rs->rules[i].name);
			CHECK(rs->rules[i].describe != NULL);
		}
	ms = match_set_build(rs, &o, err, sizeof(err));
	CHECK(ms != NULL);
	if (!ms) {
		rule_set_free(rs);
		return;
	}
	s = match_scratch_new(ms);
	h = match_hits_new(ms);
	for (int i = 0; i < 30; i++)
		hs[i] = (struct match_header){ "Received", 8, "from x by y", 11, "from x by y", 11, 0 };
	for (int i = 0; i < 150; i++)
		tl += (size_t)snprintf(to + tl, sizeof(to) - tl, "%suser%d@example.net", i ? ", " : "", i);
	hs[30] = (struct match_header){ "To", 2, to, tl, to, tl, 0 };
	hs[31] = (struct match_header){ "Auto-Submitted", 14, "auto-replied", 12, "auto-replied", 12, 0 };
	msg.headers = hs;
	msg.nheaders = 32;
	CHECK_EQ_U64(match_scan_msg(ms, s, &msg, h), 0);
	score_hits(rs, h);
	CHECK(h->count[rules_find(rs, "BW_TOCC_OVER_100")] == 1);
	CHECK(h->count[rules_find(rs, "BW_RCVD_OVER_25")] == 1);
	CHECK(h->count[rules_find(rs, "BW_AUTOREPLY")] == 1);
	CHECK(h->count[rules_find(rs, "BW_AUTOREPLY_LOOP")] == 1);
	CHECK(h->score >= 12);
	CHECK_STR(h->action, "block");
	/* a plain small message from an unknown sender scores nothing */
	match_hits_reset(h);
	msg.nheaders = 1;
	hs[0] = (struct match_header){ "From", 4, "new@tiny.example", 16, "new@tiny.example", 16, 0 };
	CHECK_EQ_U64(match_scan_msg(ms, s, &msg, h), 0);
	score_hits(rs, h);
	CHECK(h->score == 0);
	CHECK_STR(h->action, "pass");
	match_hits_free(h);
	match_scratch_free(s);
	match_set_free(ms);
	rule_set_free(rs);
}

int main(void)
{
	test_flags();
	test_classify();
	test_scan_message();
	test_full_stream();
	test_mimeheader();
	test_addresses();
	test_default_rules();
	return check_done();
}
