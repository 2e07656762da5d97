/* Unit tests for the verdict stage on the packet path: full rules streamed
 * from the SMTP data path, mimeheader rules on the parts' headers, and the
 * message/rfc822 attachment in the record.
 *
 * SMTP sessions are made here as bare IPv4/TCP frames (DLT_RAW) and fed to
 * pipeline_packet() with a verdict attached, so the real glue runs: DATA
 * (and BDAT) content goes to the message stage, whose tap feeds the rules'
 * Hyperscan streams piece by piece as the segments arrive. Each way a
 * transaction can end (the reply to the end of data, RSET after BDAT, a
 * reset mid-DATA, the end of the capture, a rule reload mid-message) must
 * hand every byte of stream state back: verdict_stream_bytes() is 0 and
 * mem.h's MEM_MATCH is where it was before the message.
 *
 * The rule set and its contexts: what a message keeps follows from the
 * rule classes of the set; two workers' contexts on one set scan alike
 * and share nothing but the set; a context freed with a message in flight
 * leaves it without full-rule hits (counted) and without a leak; the
 * storm tracker, its windows and its event counts are the set's.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "decode.h"
#include "match.h"
#include "mem.h"
#include "message.h"
#include "output.h"
#include "pipeline.h"
#include "score.h"
#include "smtp.h"
#include "storm.h"
#include "verdict.h"

static const char rules_text[] =
	"full       F_SPAN    /Subject: cheap pills/\n"        /* exact: streamed */
	"full       F_END     /bye\\r\\n\\z/\n"                 /* exact, at end of data */
	"full       F_BACKREF /(ab)\\1/\n"                       /* prefilter: the raw copy */
	"full       F_MULTI   /pill/\n"
	"tflags     F_MULTI   multiple maxhits=3\n"
	"meta       F_MULTI3  F_MULTI == 3\n"
	"mimeheader M_GIF     Content-Type =~ /^image\\/gif\\b/\n"
	"mimeheader M_RAW     Content-Type:raw =~ /^image\\/gif;\\n {8}name=\"x\\.gif\"$/s\n"
	"mimeheader M_ROOT    Content-Type =~ /^multipart\\/report/\n"
	"header     H_GIF     Content-Type =~ /gif/\n"
	"score F_SPAN 1\nscore F_END 1\nscore F_BACKREF 1\nscore F_MULTI3 1\n"
	"score M_GIF 1\nscore M_RAW 1\nscore M_ROOT 1\nscore H_GIF 1\n";

/* A bounce: the returned message (message/rfc822) carries an image/gif
 * part whose Content-Type is folded. */
static const char bounce[] =
	"From: MAILER-DAEMON@relay.example\r\n"
	"Subject: cheap pills\r\n"
	"Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"R\"\r\n"
	"\r\n"
	"--R\r\nContent-Type: text/plain\r\n\r\npill pill pill pill abab\r\n"
	"--R\r\nContent-Type: message/rfc822\r\n\r\n"
	"From: a@x.example\r\nSubject: returned\r\n"
	"Content-Type: multipart/mixed; boundary=\"I\"\r\n\r\n"
	"--I\r\nContent-Type: image/gif;\r\n        name=\"x.gif\"\r\n\r\nGIF89a\r\n--I--\r\n"
	"--R--\r\nbye\r\n";

/* ---- a TCP connection made of bare IPv4 frames ---------------------------- */

struct conn {
	struct pipeline *pl;
	uint32_t cseq, sseq;
	uint16_t cport;
	uint64_t ts;
};

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v >> 16)); put16(p + 2, (uint16_t)v); }

enum { F_FIN = 1, F_SYN = 2, F_RST = 4, F_PSH = 8, F_ACK = 16 };

static void pkt(struct conn *c, int toserver, uint8_t flags, const void *data, size_t n)
{
	uint8_t f[40 + 1500];
	uint8_t *ip = f, *tcp = f + 20;
	uint32_t *seq = toserver ? &c->cseq : &c->sseq, *ack = toserver ? &c->sseq : &c->cseq;

	memset(f, 0, 40);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(40 + n));
	ip[6] = 0x40;
	ip[8] = 64;
	ip[9] = 6;
	put32(ip + 12, toserver ? 0x0a000001 : 0x0a000002);
	put32(ip + 16, toserver ? 0x0a000002 : 0x0a000001);
	put16(tcp, toserver ? c->cport : 25);
	put16(tcp + 2, toserver ? 25 : c->cport);
	put32(tcp + 4, *seq);
	put32(tcp + 8, flags & F_ACK ? *ack : 0);
	tcp[12] = 5 << 4;
	tcp[13] = flags;
	put16(tcp + 14, 65535);
	if (n)
		memcpy(f + 40, data, n);
	pipeline_packet(c->pl, f, (uint32_t)(40 + n), c->ts);
	c->ts += 1000000;
	*seq += (uint32_t)n + ((flags & (F_SYN | F_FIN)) ? 1 : 0);
}

static void say(struct conn *c, int toserver, const char *s)
{
	pkt(c, toserver, F_PSH | F_ACK, s, strlen(s));
}

/* Sends p[0..n) from the client in segments of seg bytes. */
static void send_data(struct conn *c, const char *p, size_t n, size_t seg)
{
	for (size_t o = 0; o < n; o += seg)
		pkt(c, 1, F_PSH | F_ACK, p + o, n - o < seg ? n - o : seg);
}

/* The TCP handshake of a new connection from port. */
static void open_conn(struct conn *c, struct pipeline *pl, uint16_t port)
{
	memset(c, 0, sizeof(*c));
	c->pl = pl;
	c->cport = port;
	c->cseq = 1000;
	c->sseq = 5000;
	c->ts = 1700000000ull * 1000000000ull + port * 1000000000ull;
	pkt(c, 1, F_SYN, NULL, 0);
	pkt(c, 0, F_SYN | F_ACK, NULL, 0);
	pkt(c, 1, F_ACK, NULL, 0);
}

/* Handshake, greeting, EHLO, MAIL, RCPT. */
static void open_session(struct conn *c, struct pipeline *pl, uint16_t port)
{
	open_conn(c, pl, port);
	say(c, 0, "220 mx.example ESMTP\r\n");
	say(c, 1, "EHLO client.example\r\n");
	say(c, 0, "250-mx.example\r\n250 CHUNKING\r\n");
	say(c, 1, "MAIL FROM:<>\r\n");
	say(c, 0, "250 2.1.0 Ok\r\n");
	say(c, 1, "RCPT TO:<b@x.example>\r\n");
	say(c, 0, "250 2.1.5 Ok\r\n");
}

static void close_session(struct conn *c)
{
	say(c, 1, "QUIT\r\n");
	say(c, 0, "221 2.0.0 Bye\r\n");
	pkt(c, 1, F_FIN | F_ACK, NULL, 0);
	pkt(c, 0, F_FIN | F_ACK, NULL, 0);
	pkt(c, 1, F_ACK, NULL, 0);
}

/* Sends the bounce as DATA, dot-stuffed as it needs none, in seg-byte
 * segments, and its end. */
static void send_message(struct conn *c, size_t seg)
{
	say(c, 1, "DATA\r\n");
	say(c, 0, "354 End data with <CR><LF>.<CR><LF>\r\n");
	send_data(c, bounce, sizeof(bounce) - 1, seg);
	say(c, 1, ".\r\n");
	say(c, 0, "250 2.0.0 Ok: queued\r\n");
}

/* ---- the records ------------------------------------------------------------ */

static char *slurp(FILE *f)
{
	long n;
	char *b;

	fflush(f);
	n = ftell(f);
	b = malloc((size_t)n + 1);
	if (!b)
		return NULL;
	rewind(f);
	if (fread(b, 1, (size_t)n, f) != (size_t)n)
		n = 0;
	b[n] = '\0';
	fseek(f, 0, SEEK_END);
	return b;
}

/* The last transaction record written to f (a line of its own). */
static char *last_record(FILE *f)
{
	char *all = slurp(f), *last = NULL;

	if (!all)
		return NULL;
	for (char *line = all, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		if (!nl)
			break;
		*nl = '\0';
		if (strstr(line, "\"event\":\"smtp\""))
			last = line;
	}
	if (last)
		memmove(all, last, strlen(last) + 1);
	else
		all[0] = '\0';
	return all;
}

static bool has(const char *rec, const char *s)
{
	bool r = rec && strstr(rec, s) != NULL;

	if (!r)
		fprintf(stderr, "  record lacks %s: %s\n", s, rec ? rec : "(none)");
	return r;
}

static bool lacks(const char *rec, const char *s)
{
	bool r = rec && strstr(rec, s) == NULL;

	if (!r)
		fprintf(stderr, "  record has %s: %s\n", s, rec ? rec : "(none)");
	return r;
}

/* ---- the tests ---------------------------------------------------------------- */

static char dir[64];

static struct verdict_set *load(void)
{
	const char *dirs[1] = { dir };
	char err[512] = "";
	struct verdict_set *s = verdict_set_new(dirs, 1, stderr, err, sizeof(err));

	if (!s)
		fprintf(stderr, "verdict_set_new: %s\n", err);
	CHECK(s != NULL);
	return s;
}

/* A context on s, checked; NULL when s is. */
static struct verdict *context(struct verdict_set *s)
{
	struct verdict *v = s ? verdict_new(s) : NULL;

	CHECK(!s || v != NULL);
	return v;
}

static void test_path(void)
{
	struct pipeline_config cfg;
	struct output out;
	FILE *rec = tmpfile();
	struct verdict_set *s = load(), *s2;
	struct verdict *v = context(s), *v2;
	struct pipeline *pl;
	struct conn c;
	char *r;
	uint64_t base;

	CHECK(rec != NULL);
	if (!v || !rec)
		return;
	pipeline_config_default(&cfg);
	cfg.decode.verify_checksums = false;
	output_init(&out, rec);
	pl = pipeline_new(&cfg, DECODE_LINK_RAW, &out);
	CHECK(pl != NULL);
	if (!pl)
		return;
	pl->verdict = v;

	/* 1. a whole transaction, the message in 7-byte segments: F_SPAN
	 * crosses segments, F_END is found at the end of data, the rest on
	 * the raw copy; the mimeheader rules on the inner parts; the returned
	 * message listed as an attachment */
	open_session(&c, pl, 40001);
	send_message(&c, 7);
	r = last_record(rec);
	CHECK(has(r, "\"rule\":\"F_SPAN\""));
	CHECK(has(r, "\"rule\":\"F_END\""));
	CHECK(has(r, "\"rule\":\"F_BACKREF\""));
	CHECK(has(r, "\"rule\":\"F_MULTI3\""));
	CHECK(has(r, "\"rule\":\"M_GIF\""));
	CHECK(has(r, "\"rule\":\"M_RAW\""));
	CHECK(has(r, "\"rule\":\"M_ROOT\""));
	CHECK(lacks(r, "\"rule\":\"H_GIF\""));
	CHECK(has(r, "{\"name\":\"\",\"type\":\"message/rfc822\",\"size\":"));
	CHECK(has(r, "{\"name\":\"x.gif\",\"type\":\"image/gif\",\"size\":6}"));
	free(r);
	CHECK_EQ_U64(verdict_get_stats(v).full_streamed, 1);
	CHECK_EQ_U64(verdict_get_stats(v).full_skipped, 0);
	CHECK_EQ_U64(verdict_stream_bytes(v), 0);
	/* byte by byte: the same hits */
	say(&c, 1, "MAIL FROM:<>\r\n");
	say(&c, 0, "250 2.1.0 Ok\r\n");
	say(&c, 1, "RCPT TO:<b@x.example>\r\n");
	say(&c, 0, "250 2.1.5 Ok\r\n");
	send_message(&c, 1);
	r = last_record(rec);
	CHECK(has(r, "\"tx\":1"));
	CHECK(has(r, "\"rule\":\"F_SPAN\""));
	CHECK(has(r, "\"rule\":\"F_END\""));
	CHECK(has(r, "\"rule\":\"F_MULTI3\""));
	CHECK(has(r, "\"rule\":\"M_RAW\""));
	free(r);
	/* from here on MEM_MATCH holds only what lasts (scratch, hits) */
	base = mem_in_use(MEM_MATCH);

	/* 2. BDAT, then RSET: the transaction is abandoned, its stream freed */
	say(&c, 1, "MAIL FROM:<>\r\n");
	say(&c, 0, "250 2.1.0 Ok\r\n");
	say(&c, 1, "RCPT TO:<b@x.example>\r\n");
	say(&c, 0, "250 2.1.5 Ok\r\n");
	say(&c, 1, "BDAT 40\r\n");
	send_data(&c, bounce, 40, 40);
	CHECK(verdict_stream_bytes(v) > 0);
	CHECK(mem_in_use(MEM_MATCH) > base);
	say(&c, 0, "250 2.0.0 40 octets received\r\n");
	say(&c, 1, "RSET\r\n");
	say(&c, 0, "250 2.0.0 Ok\r\n");
	CHECK_EQ_U64(verdict_stream_bytes(v), 0);
	CHECK_EQ_U64(mem_in_use(MEM_MATCH), base);
	close_session(&c);
	CHECK_EQ_U64(mem_in_use(MEM_MATCH), base);

	/* 3. a reset in the middle of DATA */
	open_session(&c, pl, 40002);
	say(&c, 1, "DATA\r\n");
	say(&c, 0, "354 go ahead\r\n");
	send_data(&c, bounce, 100, 30);
	CHECK(verdict_stream_bytes(v) > 0);
	pkt(&c, 1, F_RST, NULL, 0);
	CHECK_EQ_U64(verdict_stream_bytes(v), 0);
	CHECK_EQ_U64(mem_in_use(MEM_MATCH), base);
	r = last_record(rec);
	CHECK(has(r, "\"status\":\"incomplete\""));
	free(r);

	/* 4. the capture ends in the middle of DATA */
	open_session(&c, pl, 40003);
	say(&c, 1, "DATA\r\n");
	say(&c, 0, "354 go ahead\r\n");
	send_data(&c, bounce, 100, 30);
	CHECK(verdict_stream_bytes(v) > 0);
	pipeline_finish(pl);
	CHECK_EQ_U64(verdict_stream_bytes(v), 0);
	CHECK_EQ_U64(mem_in_use(MEM_MATCH), base);

	/* 5. the rules reloaded in the middle of a message: the old rules'
	 * streams go with them, the message ends without full-rule hits
	 * (counted), nothing leaks, nothing is read after it was freed */
	open_session(&c, pl, 40004);
	say(&c, 1, "DATA\r\n");
	say(&c, 0, "354 go ahead\r\n");
	send_data(&c, bounce, 100, 30);
	s2 = load();
	v2 = context(s2);
	if (v2) {
		pl->verdict = v2;
		verdict_free(v);
		verdict_set_free(s);
		v = v2;
		s = s2;
	}
	send_data(&c, bounce + 100, sizeof(bounce) - 1 - 100, 30);
	say(&c, 1, ".\r\n");
	say(&c, 0, "250 2.0.0 Ok: queued\r\n");
	r = last_record(rec);
	CHECK(lacks(r, "\"rule\":\"F_SPAN\""));
	CHECK(has(r, "\"rule\":\"M_GIF\""));      /* the rest still scored */
	free(r);
	CHECK_EQ_U64(verdict_get_stats(v).full_skipped, 1);
	/* and the next message streams with the new rules */
	say(&c, 1, "MAIL FROM:<>\r\n");
	say(&c, 0, "250 2.1.0 Ok\r\n");
	say(&c, 1, "RCPT TO:<b@x.example>\r\n");
	say(&c, 0, "250 2.1.5 Ok\r\n");
	send_message(&c, 512);
	r = last_record(rec);
	CHECK(has(r, "\"rule\":\"F_SPAN\""));
	free(r);
	close_session(&c);
	CHECK_EQ_U64(verdict_stream_bytes(v), 0);

	pipeline_free(pl);
	output_fini(&out);
	verdict_free(v);
	verdict_set_free(s);
	fclose(rec);
}

/* Rules without full rules: no stream and no copy for any message. */
static void test_no_full_rules(void)
{
	const char *dirs[1];
	char d2[80], path[128], err[256] = "";
	struct verdict_set *s;
	struct verdict *v;
	struct message *m;
	FILE *f;
	size_t n = 0;
	uint64_t base;

	snprintf(d2, sizeof(d2), "%s/nofull", dir);
	snprintf(path, sizeof(path), "%s/10_test.cf", d2);
	CHECK(mkdir(d2, 0700) == 0);
	f = fopen(path, "w");
	CHECK(f != NULL);
	if (!f)
		return;
	fputs("body B /pills/\nscore B 1\n", f);
	fclose(f);
	dirs[0] = d2;
	s = verdict_set_new(dirs, 1, stderr, err, sizeof(err));
	CHECK(s != NULL);
	v = context(s);
	if (!v)
		return;
	m = message_new(NULL, NULL, NULL);
	base = mem_in_use(MEM_MATCH);
	verdict_begin(v, m);
	CHECK_EQ_U64(mem_in_use(MEM_MATCH), base);
	message_feed(m, (const uint8_t *)bounce, sizeof(bounce) - 1);
	message_end(m);
	(void)message_view(m, MESSAGE_VIEW_FULL, &n);
	CHECK_EQ_U64(n, 0);
	CHECK(verdict_message(v, m, NULL)->nhits > 0);
	CHECK_EQ_U64(verdict_get_stats(v).full_skipped, 0);
	message_free(m);
	verdict_free(v);
	verdict_set_free(s);
	unlink(path);
	rmdir(d2);
}

/* ---- the rule set and its contexts ------------------------------------------ */

/* A rule set of its own from text, through a directory under dir that is
 * removed again (the set keeps what it read); checked, NULL when it does
 * not load. */
static struct verdict_set *set_of(const char *name, const char *text)
{
	char d[128], path[160], err[512] = "";
	const char *dirs[1] = { d };
	struct verdict_set *s = NULL;
	FILE *f;

	snprintf(d, sizeof(d), "%s/%s", dir, name);
	snprintf(path, sizeof(path), "%s/10_test.cf", d);
	CHECK(mkdir(d, 0700) == 0);
	f = fopen(path, "w");
	CHECK(f != NULL);
	if (f) {
		fputs(text, f);
		fclose(f);
		s = verdict_set_new(dirs, 1, stderr, err, sizeof(err));
		if (!s)
			fprintf(stderr, "  %s: %s\n", name, err);
		CHECK(s != NULL);
		unlink(path);
	}
	rmdir(d);
	return s;
}

/* What a message keeps follows from the rule classes loaded, worked out
 * once per set: every context on it hands the pipeline the same answer. */
static const struct wants_case {
	const char *name;
	const char *rules;
	struct message_wants want;      /* uris, text, part_headers, headers */
} wants_cases[] = {
	{ "none", "", { false, false, false, false } },
	{ "body", "body B /pills/\n", { false, true, false, false } },
	{ "rawbody", "rawbody R /pills/\n", { false, true, false, false } },
	{ "uri", "uri U /example/\n", { true, true, false, false } },
	{ "header", "header H Subject =~ /pills/\n", { false, false, false, true } },
	{ "mimeheader", "mimeheader M Content-Type =~ /gif/\n", { false, false, true, true } },
	{ "full", "full F /pills/\n", { false, false, false, false } },
	{ "meta", "header __H Subject =~ /x/\nmeta M __H\n", { false, false, false, true } },
	{ "track", "track T count per client_ip over 10m > 5\n", { false, false, false, false } },
	{ "fingerprint", "track T count per fingerprint over 10m > 5\n",
	  { false, true, false, false } },
	{ "all", "body B /a/\nuri U /b/\nheader H From =~ /c/\nmimeheader M Content-Type =~ /d/\n",
	  { true, true, true, true } },
};

static void test_wants(void)
{
	for (size_t i = 0; i < sizeof(wants_cases) / sizeof(wants_cases[0]); i++) {
		const struct wants_case *c = &wants_cases[i];
		struct verdict_set *s = set_of(c->name, c->rules);
		struct verdict *a = context(s), *b = context(s);
		const struct message_wants *w;

		if (!a || !b) {
			verdict_free(a);
			verdict_free(b);
			verdict_set_free(s);
			continue;
		}
		w = verdict_wants(a);
		if (w->uris != c->want.uris || w->text != c->want.text ||
		    w->part_headers != c->want.part_headers || w->headers != c->want.headers) {
			fprintf(stderr, "  wants %s: uris %d text %d part_headers %d headers %d\n",
				c->name, w->uris, w->text, w->part_headers, w->headers);
			CHECK(0);
		}
		CHECK(verdict_wants(b) == w);   /* the set's, not asked again */
		verdict_free(a);
		verdict_free(b);
		verdict_set_free(s);
	}
}

/* Whether two reports say the same: score, action, every hit and subhit
 * with its score, count and measurement. */
static bool same_report(const struct score_report *a, const struct score_report *b)
{
	if (!a || !b || a->score != b->score || a->nhits != b->nhits ||
	    a->nsubhits != b->nsubhits || (a->action == NULL) != (b->action == NULL) ||
	    (a->action && strcmp(a->action, b->action) != 0))
		return false;
	for (uint32_t i = 0; i < a->nhits + a->nsubhits; i++) {
		const struct score_hit *x = i < a->nhits ? &a->hits[i] : &a->subhits[i - a->nhits];
		const struct score_hit *y = i < b->nhits ? &b->hits[i] : &b->subhits[i - b->nhits];

		if (strcmp(x->rule, y->rule) != 0 || x->score != y->score ||
		    x->count != y->count || x->behaviour != y->behaviour ||
		    x->value != y->value || x->window_ns != y->window_ns)
			return false;
	}
	return true;
}

/* Whether r lists rule name among its reported hits. */
static bool reports(const struct score_report *r, const char *name)
{
	for (uint32_t i = 0; r && i < r->nhits; i++)
		if (strcmp(r->hits[i].rule, name) == 0)
			return true;
	return false;
}

/* Two workers' contexts on one set, their messages in flight at once (the
 * bounce fed to both, piece by piece, interleaved): each has its own
 * streams and scratch, and both come to the same hits, full rules
 * included. */
static void test_two_contexts(void)
{
	char text[sizeof(rules_text) + 64];
	struct verdict_set *s;
	struct verdict *a, *b;
	struct message *ma = message_new(NULL, NULL, NULL), *mb = message_new(NULL, NULL, NULL);
	const struct score_report *ra, *rb;
	struct score_report copy;
	struct score_hit hits[64];
	size_t n = sizeof(bounce) - 1;

	/* the test's rules and a sub-rule, reported as a subhit only */
	snprintf(text, sizeof(text), "%sbody __B_PILL /pill/\n", rules_text);
	s = set_of("two", text);
	a = context(s);
	b = context(s);
	CHECK(ma != NULL && mb != NULL);
	if (!a || !b || !ma || !mb)
		goto out;
	verdict_begin(a, ma);
	verdict_begin(b, mb);
	CHECK(verdict_stream_bytes(a) > 0 && verdict_stream_bytes(b) > 0);
	for (size_t o = 0; o < n; o += 13) {
		size_t k = n - o < 13 ? n - o : 13;

		message_feed(ma, (const uint8_t *)bounce + o, k);
		message_feed(mb, (const uint8_t *)bounce + o, k);
	}
	message_end(ma);
	message_end(mb);
	ra = verdict_message(a, ma, NULL);
	CHECK(ra != NULL && ra->nhits + ra->nsubhits <= sizeof(hits) / sizeof(hits[0]));
	if (!ra || ra->nhits + ra->nsubhits > sizeof(hits) / sizeof(hits[0]))
		goto out;
	/* a's report, kept: b's scan must not change it (nothing shared) */
	memcpy(hits, ra->hits, (ra->nhits + ra->nsubhits) * sizeof(hits[0]));
	copy = *ra;
	copy.hits = hits;
	copy.subhits = hits + ra->nhits;
	rb = verdict_message(b, mb, NULL);
	CHECK(same_report(&copy, rb));
	CHECK(same_report(ra, rb));
	CHECK(reports(rb, "F_SPAN") && reports(rb, "F_END") && reports(rb, "F_MULTI3"));
	CHECK(reports(rb, "M_GIF") && !reports(rb, "H_GIF"));
	CHECK(rb && rb->nsubhits == 1 && strcmp(rb->subhits[0].rule, "__B_PILL") == 0 &&
	      rb->subhits[0].count == 1);
	CHECK_EQ_U64(verdict_get_stats(a).full_streamed, 1);
	CHECK_EQ_U64(verdict_get_stats(b).full_streamed, 1);
	CHECK_EQ_U64(verdict_get_stats(a).full_skipped, 0);
	CHECK_EQ_U64(verdict_get_stats(b).messages, 1);
	/* merged, a worker's counters add up; nothing else changes */
	verdict_merge_stats(a, b);
	CHECK_EQ_U64(verdict_get_stats(a).messages, 2);
	CHECK_EQ_U64(verdict_get_stats(a).full_streamed, 2);
	CHECK_EQ_U64(verdict_get_stats(b).messages, 1);
out:
	message_free(ma);
	message_free(mb);
	CHECK(!a || verdict_stream_bytes(a) == 0);
	CHECK(!b || verdict_stream_bytes(b) == 0);
	verdict_free(a);
	verdict_free(b);
	verdict_set_free(s);
}

/* A context freed while its message is in flight (a worker's context
 * replaced, the rule set staying): the message's streams go with the
 * context at once; the message ends on another context without full-rule
 * hits, counted as skipped there, with every other rule still scored, and
 * every byte comes back. */
static void test_context_freed_in_flight(void)
{
	uint64_t base = mem_in_use(MEM_MATCH);
	struct verdict_set *s = load();
	struct verdict *a = context(s), *b = NULL;
	struct message *m = message_new(NULL, NULL, NULL);
	const struct score_report *r;
	uint64_t held;

	CHECK(m != NULL);
	if (!a || !m)
		goto out;
	verdict_begin(a, m);
	message_feed(m, (const uint8_t *)bounce, 100);
	CHECK(verdict_stream_bytes(a) > 0);
	held = mem_in_use(MEM_MATCH);
	verdict_free(a);
	a = NULL;
	CHECK(mem_in_use(MEM_MATCH) < held);    /* the streams went with it */
	b = context(s);
	if (!b)
		goto out;
	message_feed(m, (const uint8_t *)bounce + 100, sizeof(bounce) - 1 - 100);
	message_end(m);
	r = verdict_message(b, m, NULL);
	CHECK(!reports(r, "F_SPAN") && !reports(r, "F_END"));
	CHECK(reports(r, "M_GIF") && reports(r, "M_ROOT"));
	CHECK_EQ_U64(verdict_get_stats(b).full_skipped, 1);
	CHECK_EQ_U64(verdict_get_stats(b).full_streamed, 0);
	CHECK_EQ_U64(verdict_stream_bytes(b), 0);
out:
	message_free(m);
	verdict_free(a);
	verdict_free(b);
	verdict_set_free(s);
	CHECK_EQ_U64(mem_in_use(MEM_MATCH), base);
}

static const char track_rules[] =
	"track T_COUNT count per client_ip over 10m > 1\n"
	"score T_COUNT 1\n"
	"action tag 1\n";

static void on_event(void *user, const struct storm_event *ev)
{
	(void)ev;
	(*(unsigned *)user)++;
}

/* One transaction from 10.0.0.1 to b@x.example, without content, at
 * second k of the test's clock. */
static const struct score_report *tx_at(struct verdict *v, unsigned k)
{
	static struct smtp_rcpt rc = { "b@x.example", "2.1.5 Ok", 250, 0 };
	static const uint8_t client[16] = { [12] = 10, [15] = 1 };
	struct smtp_tx tx;

	memset(&tx, 0, sizeof(tx));
	tx.helo = "client.example";
	tx.mail_from = "a@x.example";
	tx.rcpts = &rc;
	tx.nrcpt = 1;
	return verdict_tx(v, NULL, &tx, client, 4, 1700000000ull * 1000000000ull +
			  k * 1000000000ull);
}

/* The storm tracker is the set's: two contexts count into one window, a
 * storm event is the set's (each context's stats show it once, merging
 * does not double it), and a reload with the same track rules hands the
 * windows and the counts to the new set. */
static void test_shared_tracker(void)
{
	struct verdict_set *s = set_of("track", track_rules), *s2, *s3;
	struct verdict *a = context(s), *b = context(s), *c;
	const struct score_report *r;
	unsigned events = 0;

	if (!a || !b) {
		verdict_free(a);
		verdict_free(b);
		verdict_set_free(s);
		return;
	}
	verdict_set_event_sink(s, on_event, &events);
	r = tx_at(a, 1);
	CHECK(r && r->nhits == 0);
	r = tx_at(b, 2);                    /* the second from the client: over 1 */
	CHECK(r && r->nhits == 1 && reports(r, "T_COUNT"));
	if (r && r->nhits == 1) {
		CHECK(r->hits[0].behaviour);
		CHECK(r->hits[0].value == 2);
		CHECK_EQ_U64(r->hits[0].window_ns, 600ull * 1000000000ull);
	}
	CHECK_EQ_U64(events, 1);
	CHECK_EQ_U64(verdict_get_stats(a).storm_events_up, 1);
	CHECK_EQ_U64(verdict_get_stats(b).storm_events_up, 1);
	CHECK_EQ_U64(verdict_get_stats(a).behaviour_hits, 0);
	verdict_merge_stats(a, b);
	CHECK_EQ_U64(verdict_get_stats(a).storm_events_up, 1);
	CHECK_EQ_U64(verdict_get_stats(a).behaviour_hits, 1);
	CHECK_EQ_U64(verdict_get_stats(a).actions[SCORE_ACTION_PASS], 1);   /* a's */
	CHECK_EQ_U64(verdict_get_stats(a).actions[SCORE_ACTION_TAG], 1);    /* b's */
	CHECK_EQ_U64(verdict_set_max_window_ns(s), 600ull * 1000000000ull);
	CHECK_EQ_U64(verdict_set_max_window_ns(NULL), 0);

	/* a reload: the same track rule keeps its window and the counts... */
	s2 = set_of("track2", track_rules);
	CHECK(s2 && verdict_set_adopt_storm(s2, s));
	verdict_free(a);
	verdict_free(b);
	verdict_set_free(s);
	c = context(s2);
	if (c) {
		r = tx_at(c, 3);
		CHECK(r && r->nhits == 1 && r->hits[0].value == 3);
		CHECK_EQ_U64(verdict_get_stats(c).storm_events_up, 1);
		CHECK_EQ_U64(verdict_get_stats(c).behaviour_hits, 1);
	}
	/* ...another does not */
	s3 = set_of("track3", "track T_COUNT count per client_ip over 5m > 1\n");
	CHECK(s3 && s2 && !verdict_set_adopt_storm(s3, s2));
	verdict_free(c);
	verdict_set_free(s2);
	verdict_set_free(s3);
}

/* A flow whose only client bytes sit after a hole, then ends: flushing the
 * streams at the end reports the gap, which makes the SMTP session of a flow
 * that had none yet; it must be freed with the flow (found by fuzz_pipeline:
 * flow_finish read the flow's app state before the flush). And a segment
 * exactly 2^31 behind the stream (rel = INT32_MIN) is old data, not UB. */
static void test_gap_at_close(void)
{
	struct pipeline_config cfg;
	struct output out;
	FILE *rec = tmpfile();
	struct pipeline *pl;
	struct conn c;
	uint64_t smtp0 = mem_in_use(MEM_SMTP), flow0 = mem_in_use(MEM_FLOW);

	CHECK(rec != NULL);
	if (!rec)
		return;
	pipeline_config_default(&cfg);
	cfg.decode.verify_checksums = false;
	output_init(&out, rec);
	pl = pipeline_new(&cfg, DECODE_LINK_RAW, &out);
	CHECK(pl != NULL);
	if (!pl)
		return;
	open_conn(&c, pl, 40000);
	c.cseq += 100;                       /* a hole of 100 bytes */
	say(&c, 1, "EHLO after.a.hole\r\n");
	c.cseq = c.cseq - 100 - 20 + 0x80000000u;   /* 2^31 behind: old, dropped */
	say(&c, 1, "X");
	pipeline_finish(pl);
	pipeline_free(pl);
	output_fini(&out);
	fclose(rec);
	CHECK_EQ_U64(mem_in_use(MEM_SMTP), smtp0);
	CHECK_EQ_U64(mem_in_use(MEM_FLOW), flow0);
}

int main(void)
{
	char path[128], cache[96];
	FILE *f;

	snprintf(dir, sizeof(dir), "/tmp/bw-test-verdict-XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	/* compiled databases go to a cache of the test's own */
	snprintf(cache, sizeof(cache), "%s/cache", dir);
	setenv("BW_CACHE_DIR", cache, 1);
	snprintf(path, sizeof(path), "%s/10_test.cf", dir);
	f = fopen(path, "w");
	if (!f) {
		perror(path);
		return 1;
	}
	fputs(rules_text, f);
	fclose(f);
	test_path();
	test_no_full_rules();
	test_wants();
	test_two_contexts();
	test_context_freed_in_flight();
	test_shared_tracker();
	test_gap_at_close();
	unlink(path);
	{
		DIR *d = opendir(cache);
		struct dirent *de;

		while (d && (de = readdir(d)) != NULL) {
			char p[512];

			if (de->d_name[0] == '.' && (!de->d_name[1] || de->d_name[1] == '.'))
				continue;
			snprintf(p, sizeof(p), "%s/%s", cache, de->d_name);
			unlink(p);
		}
		if (d)
			closedir(d);
		rmdir(cache);
		rmdir(dir);
	}
	return check_done();
}
