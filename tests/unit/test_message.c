/* Unit tests for the message stage (engine/message.c, mime.c, html.c).
 *
 * Decoder tables (base64, quoted-printable, RFC 2047, RFC 2231 names, HTML)
 * run each input whole, split at every offset and byte by byte. Message
 * cases are a table of raw messages, each with expectations written as
 * "key=value" strings (see expect_one()); every case is parsed whole, byte
 * by byte, split in two at every offset and in three pieces, and the
 * complete result (a fingerprint of headers, parts, views, URIs,
 * anomalies) must be identical in all of them, with message_validate()
 * holding after every feed. Then limits, memory figures, and, when
 * ../shared/corpora/bounces exists, every .eml file in it.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bw-config.h"
#include "check.h"
#include "html.h"
#include "mem.h"
#include "message.h"
#include "mime.h"

#ifndef BW_SOURCE_ROOT
#define BW_SOURCE_ROOT "."
#endif

/* ---- decoder tables ------------------------------------------------------------ */

/* What m keeps (message_want()): what the flags leave on. */
static void keep_only(struct message *m, bool uris, bool text, bool part_headers, bool headers)
{
	const struct message_wants w = { uris, text, part_headers, headers };

	message_want(m, &w);
}

struct b64_case {
	const char *in;
	const char *out;
	size_t out_len;
	uint64_t bad;
};

static const struct b64_case b64_cases[] = {
	{ "", "", 0, 0 },
	{ "Zg==", "f", 1, 0 },
	{ "Zm8=", "fo", 2, 0 },
	{ "Zm9v", "foo", 3, 0 },
	{ "Zm9vYg==", "foob", 4, 0 },
	{ "Zm9vYmE=", "fooba", 5, 0 },
	{ "Zm9vYmFy", "foobar", 6, 0 },
	{ "Zm9v\r\nYmFy\r\n", "foobar", 6, 0 },
	{ " Zm 9v\tYm Fy ", "foobar", 6, 0 },
	{ "Zm9v!YmFy", "foobar", 6, 1 },
	{ "Zm9v*#YmFy~", "foobar", 6, 3 },
	{ "Zm9vYg", "foob", 4, 0 },            /* missing padding: tolerated */
	{ "Zg==Zg==", "ff", 2, 0 },            /* concatenated */
	{ "AAEC/w==", "\x00\x01\x02\xff", 4, 0 },
	{ "+/+/", "\xfb\xff\xbf", 3, 0 },
};

static size_t b64_run(const char *in, size_t n, size_t split, int bytewise,
		      uint8_t *out, uint64_t *bad)
{
	struct mime_b64 s;
	size_t o = 0;

	mime_b64_init(&s);
	if (bytewise) {
		for (size_t i = 0; i < n; i++)
			o += mime_b64_decode(&s, (const uint8_t *)in + i, 1, out + o);
	} else {
		o += mime_b64_decode(&s, (const uint8_t *)in, split, out + o);
		o += mime_b64_decode(&s, (const uint8_t *)in + split, n - split, out + o);
	}
	o += mime_b64_finish(&s, out + o);
	*bad = s.bad;
	return o;
}

static void test_base64(void)
{
	for (size_t c = 0; c < sizeof(b64_cases) / sizeof(b64_cases[0]); c++) {
		const struct b64_case *t = &b64_cases[c];
		size_t n = strlen(t->in);
		uint8_t out[64];
		uint64_t bad;

		for (size_t split = 0; split <= n; split++) {
			size_t o = b64_run(t->in, n, split, 0, out, &bad);

			CHECK_MEM(out, o, t->out, t->out_len);
			CHECK_EQ_U64(bad, t->bad);
		}
		{
			size_t o = b64_run(t->in, n, 0, 1, out, &bad);

			CHECK_MEM(out, o, t->out, t->out_len);
			CHECK_EQ_U64(bad, t->bad);
		}
	}
}

struct qp_case {
	const char *in;          /* one line, without its line end */
	const char *out;
	int hard;                /* ends with a hard line break */
	uint64_t bad;
};

static const struct qp_case qp_cases[] = {
	{ "plain", "plain", 1, 0 },
	{ "a=3Db", "a=b", 1, 0 },
	{ "a=3db", "a=b", 1, 0 },              /* lowercase hex tolerated */
	{ "soft=", "soft", 0, 0 },
	{ "soft=  ", "soft", 0, 0 },           /* blanks after the '=' */
	{ "trail  \t", "trail", 1, 0 },
	{ "Caf=C3=A9", "Caf\xc3\xa9", 1, 0 },
	{ "=4", "=4", 1, 1 },
	{ "=zz", "=zz", 1, 1 },
	{ "=4g", "=4g", 1, 1 },
	{ "x==41", "x=A", 1, 1 },
	{ "", "", 1, 0 },
	{ "=", "", 0, 0 },
	{ "= x", "= x", 1, 1 },
};

static void test_qp(void)
{
	for (size_t c = 0; c < sizeof(qp_cases) / sizeof(qp_cases[0]); c++) {
		const struct qp_case *t = &qp_cases[c];
		size_t n = strlen(t->in);

		for (size_t split = 0; split <= n; split++) {
			struct mime_qp s;
			uint8_t out[64];
			size_t o = 0;
			int hard = -1;

			mime_qp_init(&s);
			o += mime_qp_decode(&s, (const uint8_t *)t->in, split, 0, out + o, &hard);
			CHECK(hard == 0);
			o += mime_qp_decode(&s, (const uint8_t *)t->in + split, n - split, 1,
					    out + o, &hard);
			CHECK_MEM(out, o, t->out, strlen(t->out));
			CHECK_EQ_U64(hard, t->hard);
			CHECK_EQ_U64(s.bad, t->bad);
		}
	}
}

struct ew_case {
	const char *in;
	const char *out;
	uint32_t words, bad, unknown;
};

static const struct ew_case ew_cases[] = {
	{ "plain text", "plain text", 0, 0, 0 },
	{ "=?UTF-8?B?SGVsbG8gV29ybGQ=?=", "Hello World", 1, 0, 0 },
	{ "=?iso-8859-1?Q?Caf=E9_au_lait?=", "Caf\xc3\xa9 au lait", 1, 0, 0 },
	{ "=?utf-8?q?a?= =?utf-8?q?b?=", "ab", 2, 0, 0 },
	{ "=?utf-8?q?a?=\t  =?utf-8?q?b?=", "ab", 2, 0, 0 },
	{ "x =?utf-8?q?a?= y", "x a y", 1, 0, 0 },
	{ "=?utf-8?q?a?= b =?utf-8?q?c?=", "a b c", 2, 0, 0 },
	/* one UTF-8 character split over two words */
	{ "=?utf-8?B?ww==?= =?utf-8?B?qQ==?=", "\xc3\xa9", 2, 0, 0 },
	/* different charsets side by side */
	{ "=?iso-8859-1?q?=E9?= =?utf-8?q?=C3=A9?=", "\xc3\xa9\xc3\xa9", 2, 0, 0 },
	{ "=?windows-1252?q?=93hi=94?=", "\xe2\x80\x9chi\xe2\x80\x9d", 1, 0, 0 },
	{ "=?koi8-r?b?8NLJ18XU?=", "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82", 1, 0, 0 },
	{ "=?utf-8*en?q?lang?=", "lang", 1, 0, 0 },
	{ "=?x-no-such-cs?q?abc?=", "abc", 1, 0, 1 },
	{ "=?utf-8?x?abc?=", "=?utf-8?x?abc?=", 0, 1, 0 },
	{ "=?utf-8?q?no end", "=?utf-8?q?no end", 0, 1, 0 },
	{ "a=?b", "a=?b", 0, 1, 0 },
	{ "=?utf-8?q?x?==?utf-8?q?y?=", "xy", 2, 0, 0 },
};

static void test_rfc2047(void)
{
	for (size_t c = 0; c < sizeof(ew_cases) / sizeof(ew_cases[0]); c++) {
		const struct ew_case *t = &ew_cases[c];
		struct mime_hdr_stats st;
		char out[256];
		size_t o;

		memset(&st, 0, sizeof(st));
		o = mime_decode_header(t->in, strlen(t->in), out, sizeof(out) - 1, &st);
		out[o] = '\0';
		CHECK_STR(out, t->out);
		CHECK_EQ_U64(st.words, t->words);
		CHECK_EQ_U64(st.bad_words, t->bad);
		CHECK_EQ_U64(st.charset_unknown, t->unknown);
	}
	/* the output cap holds */
	{
		char out[4];
		struct mime_hdr_stats st;
		size_t o;

		memset(&st, 0, sizeof(st));
		o = mime_decode_header("=?utf-8?q?abcdef?=", 18, out, sizeof(out), &st);
		CHECK_EQ_U64(o, 4);
		CHECK_EQ_U64(st.truncated, 1);
	}
}

struct name_case {
	const char *value;       /* a Content-Disposition or Content-Type value */
	const char *attr;
	const char *main;
	const char *out;
};

static const struct name_case name_cases[] = {
	{ "attachment; filename=\"report.pdf\"", "filename", "attachment", "report.pdf" },
	{ "attachment; filename=plain.txt", "filename", "attachment", "plain.txt" },
	{ "ATTACHMENT; FILENAME=\"a \\\"q\\\" b.txt\"", "filename", "attachment", "a \"q\" b.txt" },
	{ "attachment; filename*=utf-8''%E2%82%AC%20rates.pdf", "filename", "attachment",
	  "\xe2\x82\xac rates.pdf" },
	{ "attachment; filename*=iso-8859-1'fr'caf%E9.doc", "filename", "attachment",
	  "caf\xc3\xa9.doc" },
	{ "attachment; filename*0=\"long\"; filename*1=\"name.txt\"", "filename", "attachment",
	  "longname.txt" },
	{ "attachment; filename*1=\"b.txt\"; filename*0=\"a\"", "filename", "attachment",
	  "ab.txt" },
	{ "attachment; filename*0*=utf-8''%C3%A9; filename*1=\".txt\"", "filename", "attachment",
	  "\xc3\xa9.txt" },
	{ "attachment; filename=\"=?utf-8?B?w6kudHh0?=\"", "filename", "attachment", "\xc3\xa9.txt" },
	{ "application/pdf; name=\"x.pdf\"", "name", "application/pdf", "x.pdf" },
	{ "Text/HTML ; charset=\"utf-8\"", "name", "text/html", "" },
	{ "inline", "filename", "inline", "" },
	{ "attachment; filename=", "filename", "attachment", "" },
	{ "attachment; =x; ;; filename=\"ok\"", "filename", "attachment", "ok" },
	{ "attachment; filename=\"unterminated", "filename", "attachment", "unterminated" },
};

static void test_names(void)
{
	for (size_t c = 0; c < sizeof(name_cases) / sizeof(name_cases[0]); c++) {
		const struct name_case *t = &name_cases[c];
		struct mime_params mp;
		char out[MESSAGE_NAME_MAX];

		mime_params_parse(&mp, t->value, strlen(t->value));
		CHECK_STR(mp.value, t->main);
		mime_params_filename(&mp, t->attr, out, sizeof(out), NULL);
		CHECK_STR(out, t->out);
	}
	{
		struct mime_params mp;
		const char *v;
		size_t n;

		mime_params_parse(&mp, "multipart/mixed; boundary=\"=_a b;c\"; x=1",
				  strlen("multipart/mixed; boundary=\"=_a b;c\"; x=1"));
		v = mime_param(&mp, "boundary", &n);
		CHECK(v && n == 7 && memcmp(v, "=_a b;c", 7) == 0);
		v = mime_param(&mp, "x", &n);
		CHECK(v && n == 1 && v[0] == '1');
	}
}

struct html_case {
	const char *in;
	const char *text;
	const char *uris;        /* URIs joined by '|' */
};

static const struct html_case html_cases[] = {
	{ "<p>Hello <b>world</b></p>", "Hello world\n", "" },
	{ "a&amp;b &lt;x&gt; &quot;q&quot; &#65;&#x42;&#x63;", "a&b <x> \"q\" ABc", "" },
	{ "&eacute;t&eacute; &euro;5 &nbsp;x", "\xc3\xa9t\xc3\xa9 \xe2\x82\xac" "5 x", "" },
	{ "un&shy;seen&#8203;word", "unseenword", "" },
	{ "&bogus; &amp &#xZZ;", "&bogus; & &#xZZ;", "" },
	{ "<style>p { x: '<p>' }</style>visible", "visible", "" },
	{ "<script>if (a<b) document.write('</p>')</script>ok</SCRIPT>more", "okmore", "" },
	{ "<SCRIPT type=x>a</ScRiPt >b", "b", "" },
	{ "x<!-- <p> hidden > still -->y", "xy", "" },
	{ "a <br> b<br/>c", "a\nb\nc", "" },
	{ "<td>a</td><td>b</td>", "a b", "" },
	{ "<a href=\"http://x.example/a?b=1&amp;c=2\">link</a>", "link",
	  "http://x.example/a?b=1&c=2" },
	{ "<a HREF='https://y.example/'>y</a><img src=http://i.example/p.png alt=\"a > b\">",
	  "y", "https://y.example/|http://i.example/p.png" },
	{ "<form action=\" http://f.example/post \"></form>", "", "http://f.example/post" },
	{ "1 < 2 and 3 <4", "1 < 2 and 3 <4", "" },
	{ "  lots   of \n\n space  ", "lots of space", "" },
	{ "<!DOCTYPE html><html><head><title>T</title></head><body>B</body></html>",
	  "T\nB\n", "" },
	{ "<div title=\"a>b\">x</div>", "x\n", "" },
	{ "<p>x<p>", "x\n", "" },
	{ "tail &amp", "tail &", "" },
	{ "tail <", "tail <", "" },
};

struct collect {
	char text[1024];
	size_t tlen;
	char uris[1024];
	size_t ulen;
};

static void col_text(void *ctx, const uint8_t *p, size_t n)
{
	struct collect *c = ctx;

	if (c->tlen + n < sizeof(c->text)) {
		memcpy(c->text + c->tlen, p, n);
		c->tlen += n;
	}
	c->text[c->tlen] = '\0';
}

static void col_uri(void *ctx, const uint8_t *p, size_t n)
{
	struct collect *c = ctx;

	if (c->ulen + n + 1 < sizeof(c->uris)) {
		if (c->ulen)
			c->uris[c->ulen++] = '|';
		memcpy(c->uris + c->ulen, p, n);
		c->ulen += n;
	}
	c->uris[c->ulen] = '\0';
}

static void test_html(void)
{
	static struct html h;

	for (size_t c = 0; c < sizeof(html_cases) / sizeof(html_cases[0]); c++) {
		const struct html_case *t = &html_cases[c];
		size_t n = strlen(t->in);

		for (int mode = 0; mode < 2; mode++) {
			struct collect col;

			memset(&col, 0, sizeof(col));
			html_init(&h, col_text, col_uri, &col);
			if (mode == 0)
				html_feed(&h, (const uint8_t *)t->in, n);
			else
				for (size_t i = 0; i < n; i++)
					html_feed(&h, (const uint8_t *)t->in + i, 1);
			html_finish(&h);
			CHECK_STR(col.text, t->text);
			CHECK_STR(col.uris, t->uris);
		}
	}
	/* a tag over HTML_TAG_MAX is cut and counted, text after it survives */
	{
		static char big[HTML_TAG_MAX * 2 + 64];
		struct collect col;
		size_t n = 0;

		n += (size_t)sprintf(big, "<a title=\"");
		memset(big + n, 'x', HTML_TAG_MAX + 10);
		n += HTML_TAG_MAX + 10;
		n += (size_t)sprintf(big + n, "\" href=\"http://lost/\">after");
		memset(&col, 0, sizeof(col));
		html_init(&h, col_text, col_uri, &col);
		html_feed(&h, (const uint8_t *)big, n);
		html_finish(&h);
		CHECK_STR(col.text, "after");
		CHECK_EQ_U64(h.c.tags_truncated, 1);
	}
}

static void test_charsets(void)
{
	static const struct {
		const char *cs;
		const char *in;
		const char *out;
		int unknown;
	} t[] = {
		{ "utf-8", "caf\xc3\xa9", "caf\xc3\xa9", 0 },
		{ "US-ASCII", "plain", "plain", 0 },
		{ "iso-8859-1", "caf\xe9", "caf\xc3\xa9", 0 },
		{ "windows-1252", "\x93q\x94 \x80", "\xe2\x80\x9cq\xe2\x80\x9d \xe2\x82\xac", 0 },
		{ "koi8-r", "\xf0\xd2\xc9\xd7\xc5\xd4",
		  "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82", 0 },
		{ "shift_jis", "\x82\xa0\x82\xa2", "\xe3\x81\x82\xe3\x81\x84", 0 },
		{ "utf-16le", "h\0i\0", "hi", 0 },
		{ "iso-2022-jp", "\x1b$B$\"\x1b(B", "\xe3\x81\x82", 0 },
		{ "unicode-1-1-utf-7", "+AOk-t+AOk-", "\xc3\xa9t\xc3\xa9", 0 },
		{ "x-unknown", "abc\xff", "abc\xff", 1 },
		{ "utf-8//translit", "abc", "abc", 1 },
	};

	for (size_t c = 0; c < sizeof(t) / sizeof(t[0]); c++) {
		size_t n = strlen(t[c].in);

		if (strcmp(t[c].cs, "utf-16le") == 0)
			n = 4;
		for (size_t split = 0; split <= n; split++) {
			struct mime_conv cv;
			struct collect col;
			int r = mime_conv_open(&cv, t[c].cs, strlen(t[c].cs));

			memset(&col, 0, sizeof(col));
			CHECK(r == (t[c].unknown ? -ENOENT : 0));
			mime_conv_feed(&cv, (const uint8_t *)t[c].in, split, col_text, &col);
			mime_conv_feed(&cv, (const uint8_t *)t[c].in + split, n - split, col_text, &col);
			mime_conv_finish(&cv, col_text, &col);
			mime_conv_close(&cv);
			CHECK_STR(col.text, t[c].out);
			CHECK_EQ_U64(cv.bad, 0);
		}
	}
	/* invalid bytes become U+FFFD and are counted */
	{
		struct mime_conv cv;
		struct collect col;

		memset(&col, 0, sizeof(col));
		mime_conv_open(&cv, "shift_jis", 9);
		mime_conv_feed(&cv, (const uint8_t *)"a\x82", 2, col_text, &col);
		mime_conv_finish(&cv, col_text, &col);
		mime_conv_close(&cv);
		CHECK_STR(col.text, "a\xef\xbf\xbd");
		CHECK_EQ_U64(cv.bad, 1);
	}
	/* Descriptors are cached per thread and reused: one left in a shifted
	 * state (ISO-2022-JP in JIS X 0208, never finished) must come back
	 * reset; two of one charset open at once are two descriptors; a name
	 * iconv refused is refused again; after a flush all still works. */
	for (int round = 0; round < 3; round++) {
		struct mime_conv a, b;
		struct collect ca, cb;

		memset(&ca, 0, sizeof(ca));
		memset(&cb, 0, sizeof(cb));
		CHECK(mime_conv_open(&a, "ISO-2022-JP", 11) == 0);
		mime_conv_feed(&a, (const uint8_t *)"\x1b$B$\"", 5, col_text, &ca);
		CHECK(mime_conv_open(&b, "iso-2022-jp", 11) == 0);
		CHECK(a.cd != b.cd);
		mime_conv_feed(&b, (const uint8_t *)"ab", 2, col_text, &cb);
		mime_conv_close(&a);       /* left shifted: no finish */
		mime_conv_finish(&b, col_text, &cb);
		mime_conv_close(&b);
		CHECK_STR(ca.text, "\xe3\x81\x82");
		CHECK_STR(cb.text, "ab");
		memset(&ca, 0, sizeof(ca));
		CHECK(mime_conv_open(&a, "iso-2022-jp", 11) == 0);
		mime_conv_feed(&a, (const uint8_t *)"$\"", 2, col_text, &ca);
		mime_conv_finish(&a, col_text, &ca);
		mime_conv_close(&a);
		CHECK_STR(ca.text, "$\"");  /* ASCII again, not JIS */
		CHECK(mime_conv_open(&a, "x-no-such-charset", 17) == -ENOENT);
		CHECK(a.cs == MIME_CS_UNKNOWN);
		mime_conv_close(&a);
		if (round == 1)
			mime_conv_cache_flush();
	}
	/* more charsets than cache slots, several open at once: each still
	 * converts (the ones past the busy slots are not cached) */
	{
		static const char *const cs[] = {
			"koi8-r", "iso-8859-2", "iso-8859-5", "iso-8859-7", "iso-8859-9",
			"iso-8859-15", "windows-1250", "windows-1251", "windows-1253",
			"windows-1254", "windows-1257", "cp850", "cp437", "koi8-u",
			"iso-8859-3", "iso-8859-4", "iso-8859-13", "macintosh", "gb2312",
			"big5",
		};
		struct mime_conv cv[sizeof(cs) / sizeof(cs[0])];

		for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++)
			CHECK(mime_conv_open(&cv[i], cs[i], strlen(cs[i])) == 0);
		for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++) {
			struct collect col;

			memset(&col, 0, sizeof(col));
			mime_conv_feed(&cv[i], (const uint8_t *)"plain", 5, col_text, &col);
			mime_conv_finish(&cv[i], col_text, &col);
			mime_conv_close(&cv[i]);
			CHECK_STR(col.text, "plain");
		}
		mime_conv_cache_flush();
	}
}

/* ---- message cases ---------------------------------------------------------------- */

struct lim_override {
	uint32_t max_line, max_header_bytes, max_headers, max_depth, max_parts;
	uint32_t max_body, max_uris, max_header_store;
	uint32_t max_part_headers, max_part_header_store;
};

struct msg_case {
	const char *name;
	const char *msg;
	size_t len;                 /* 0: strlen(msg) */
	struct lim_override lim;
	const char *expect[24];
};

#define MB "Content-Type: multipart/mixed; boundary=\"b1\"\n"

static const struct msg_case msg_cases[] = {
	{ "simple CRLF",
	  "Subject: Hello\r\nFrom: a@b.example\r\nTo: c@d.example\r\n\r\nBody line\r\nsecond\r\n", 0, {0},
	  { "field:subject=Hello", "field:from=a@b.example", "body=Hello\nBody line\nsecond\n",
	    "rawbody=Body line\nsecond\n", "parts=1", "part:0.type=text/plain", "anoms=",
	    "headers=3", "to_count=1", "part:0.raw=17", NULL } },
	{ "unfold CRLF",
	  "Subject: a\r\n b\r\n\tc\r\nX-A: 1\r\n\r\n", 0, {0},
	  { "val:subject=a b\tc", "raw:subject= a\n b\n\tc", "val:x-a=1", "anoms=", NULL } },
	{ "unfold LF",
	  "Subject: a\n b\n\tc\nX-A:1\n\n", 0, {0},
	  { "val:subject=a b\tc", "raw:x-a=1", "val:x-a=1", NULL } },
	{ "case-insensitive and repeated",
	  "SUBJECT: x\nsubject: y\nX-Y : z\n\n", 0, {0},
	  { "hdr:Subject=x", "hdr:SuBjEcT=x", "count:subject=2", "nth:subject.1=y",
	    "field:subject=x", "hdr:x-y=z", NULL } },
	{ "RFC 2047 in headers",
	  "Subject: =?UTF-8?B?SGVsbG8=?= =?utf-8?Q?_W=C3=B6rld?=\n"
	  "From: =?iso-8859-1?q?Andr=E9?= <a@b.example>\n"
	  "To: =?x-bogus?q?who?= <w@x.example>\n\n", 0, {0},
	  { "field:subject=Hello W\xc3\xb6rld", "field:from=Andr\xc3\xa9 <a@b.example>",
	    "val:from==?iso-8859-1?q?Andr=E9?= <a@b.example>", "field:to=who <w@x.example>",
	    "anom=charset_unknown", "body=Hello W\xc3\xb6rld\n", NULL } },
	{ "received counting",
	  "Received: from a by b;\n Mon, 1 Jan 2024 00:00:00 +0000\nReceived: from c by d\n"
	  "X: y\nreceived: from e by f\n\nx\n", 0, {0},
	  { "received=3", "first_received=from a by b; Mon, 1 Jan 2024 00:00:00 +0000",
	    "count:received=3", NULL } },
	{ "base64 body",
	  "Content-Transfer-Encoding: base64\n\nSGVsbG8s\nIHdvcmxk\nIQ==\n", 0, {0},
	  { "rawbody=Hello, world!", "part:0.size=13", "anoms=", "body=Hello, world!", NULL } },
	{ "base64 with bad characters",
	  "Content-Transfer-Encoding: BASE64\n\nSGV*sbG8=\n", 0, {0},
	  { "rawbody=Hello", "anom=bad_base64", NULL } },
	{ "base64 CRLF text folded to LF",
	  "Content-Transfer-Encoding: base64\n\nYQ0KYg0KDQpj\n", 0, {0},
	  { "rawbody=a\nb\n\nc", NULL } },
	{ "quoted-printable body",
	  "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
	  "Caf=C3=A9 soft=\nbreak\nline2  \n=ZZ\n", 0, {0},
	  { "rawbody=Caf\xc3\xa9 softbreak\nline2\n=ZZ\n", "anom=bad_qp", NULL } },
	{ "iso-8859-1 and windows-1252 bodies",
	  "Content-Type: multipart/mixed; boundary=x\n\n--x\n"
	  "Content-Type: text/plain; charset=ISO-8859-1\n\ncaf\xe9\n--x\n"
	  "Content-Type: text/plain; charset=\"windows-1252\"\n\n\x93q\x94\n--x--\n", 0, {0},
	  { "rawbody=caf\xc3\xa9\n\xe2\x80\x9cq\xe2\x80\x9d", "anoms=", "part:1.charset=iso-8859-1",
	    NULL } },
	{ "iconv body and unknown charset",
	  "Content-Type: multipart/mixed; boundary=x\n\n--x\n"
	  "Content-Type: text/plain; charset=koi8-r\n\n\xf0\xd2\xc9\xd7\xc5\xd4\n--x\n"
	  "Content-Type: text/plain; charset=x-nope\n\nraw\xff\n--x--\n", 0, {0},
	  { "rawbody=\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82\nraw\xff",
	    "anoms=charset_unknown", NULL } },
	{ "multipart alternative",
	  "Subject: alt\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"=_b\"\n\n"
	  "This is the preamble.\n--=_b\nContent-Type: text/plain\n\nplain text\n"
	  "--=_b\nContent-Type: text/html; charset=utf-8\n\n"
	  "<p>Hi <a href=\"http://h.example/x\">there</a></p>\n--=_b--\nepilogue\n", 0, {0},
	  { "parts=3", "part:0.type=multipart/alternative", "part:1.type=text/plain",
	    "part:2.type=text/html", "part:2.parent=0", "part:2.depth=1",
	    "body=alt\nplain text\nHi there\n",
	    "rawbody=plain text\n<p>Hi <a href=\"http://h.example/x\">there</a></p>",
	    "uris=1", "uri:0=http://h.example/x", "attachments=0", "anoms=", NULL } },
	{ "nested multipart with attachment",
	  MB "\n--b1\nContent-Type: multipart/alternative; boundary=b2\n\n"
	  "--b2\nContent-Type: text/plain\n\ninner\n--b2\nContent-Type: text/html\n\n<b>x</b>\n--b2--\n"
	  "--b1\nContent-Type: application/pdf; name=\"ignored.pdf\"\n"
	  "Content-Disposition: attachment; filename=\"report.pdf\"\n"
	  "Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\nJSVFT0YK\n--b1--\n", 0, {0},
	  { "parts=5", "part:1.type=multipart/alternative", "part:2.parent=1", "part:2.depth=2",
	    "part:4.parent=0", "attachments=1", "attach:0.name=report.pdf",
	    "attach:0.type=application/pdf", "attach:0.size=15", "part:4.raw=22",
	    "rawbody=inner\n<b>x</b>", "body=inner\nx", "anoms=", NULL } },
	{ "depth limit",
	  "Content-Type: multipart/mixed; boundary=d0\n\n--d0\n"
	  "Content-Type: multipart/mixed; boundary=d1\n\n--d1\n"
	  "Content-Type: multipart/mixed; boundary=d2\n\n--d2\n"
	  "Content-Type: text/plain\n\ndeep\n--d2--\n--d1--\n--d0\nContent-Type: text/plain\n\nshallow\n--d0--\n",
	  0, { .max_depth = 2 },
	  { "anom=mime_depth", "parts=4", "part:2.type=multipart/mixed", "part:2.depth=2",
	    "part:2.opaque=1", "part:3.depth=1", "rawbody=shallow", "!anom=missing_boundary_end",
	    NULL } },
	{ "part count limit",
	  MB "\n--b1\n\none\n--b1\n\ntwo\n--b1\n\nthree\n--b1\n\nfour\n--b1--\n", 0, { .max_parts = 3 },
	  { "anom=too_many_parts", "parts=3", "rawbody=one\ntwo", "counter:parts_dropped=2", NULL } },
	{ "boundary is a prefix of the inner one",
	  "Content-Type: multipart/mixed; boundary=abc\n\n--abc\n"
	  "Content-Type: multipart/alternative; boundary=abcdef\n\n--abcdef\n\nin1\n"
	  "--abcdef\n\nin2\n--abcdef--\n--abc\n\nout\n--abc--\n", 0, {0},
	  { "parts=5", "rawbody=in1\nin2\nout", "part:2.parent=1", "part:4.parent=0", "anoms=", NULL } },
	{ "inner boundary is a prefix of the outer one",
	  "Content-Type: multipart/mixed; boundary=abcdef\n\n--abcdef\n"
	  "Content-Type: multipart/alternative; boundary=abc\n\n--abc\n\nin1\n"
	  "--abc\n\nin2\n--abc--\n--abcdef\n\nout\n--abcdef--\n", 0, {0},
	  { "parts=5", "rawbody=in1\nin2\nout", "anoms=", NULL } },
	{ "boundary with trailing blanks and look-alikes",
	  MB "\n--b1  \n\nx\n--b1x\n--b1 y\n---b1\n--b1--trailer\nepi\n", 0, {0},
	  { "parts=2", "rawbody=x\n--b1x\n--b1 y\n---b1", "anoms=", NULL } },
	{ "missing close delimiter",
	  MB "\n--b1\nContent-Type: text/plain\n\nunclosed\n", 0, {0},
	  { "anom=missing_boundary_end", "rawbody=unclosed\n", "parts=2",
	    "counter:unclosed_multiparts=1", NULL } },
	{ "inner multipart closed by the outer boundary",
	  MB "\n--b1\nContent-Type: multipart/mixed; boundary=b2\n\n--b2\n\ninner\n--b1\n\nnext\n--b1--\n", 0, {0},
	  { "anom=missing_boundary_end", "parts=4", "rawbody=inner\nnext", "part:3.parent=0", NULL } },
	{ "multipart without boundary",
	  "Content-Type: multipart/mixed\n\nbody as text\n", 0, {0},
	  { "anom=missing_boundary", "rawbody=body as text\n", "parts=1", NULL } },
	{ "headers only part before boundary",
	  MB "\n--b1\nContent-Type: text/plain\n--b1\n\nsecond\n--b1--\n", 0, {0},
	  { "parts=3", "rawbody=second", NULL } },
	{ "message/rfc822",
	  "Subject: outer\n" MB "\n--b1\nContent-Type: text/plain\n\nouter text\n"
	  "--b1\nContent-Type: message/rfc822\n\nSubject: inner\nFrom: x@y.example\n\ninner text\n"
	  "--b1--\n", 0, {0},
	  { "parts=4", "part:2.type=message/rfc822", "part:2.rfc822=1", "part:3.parent=2",
	    "part:3.depth=2", "part:3.type=text/plain", "part:3.headers=2", "field:subject=outer",
	    "count:subject=1", "rawbody=outer text\ninner text",
	    /* the inner message is listed, sized as its lines (line ends 1) */
	    "attachments=1", "attach:0.type=message/rfc822", "attach:0.name=", "attach:0.size=45",
	    "part:2.raw=45", "part_headers=4", "phdr:2=3|Subject|inner",
	    "phdr:3=3|From|x@y.example", "anoms=", NULL } },
	{ "bounce: multipart/report with the returned message",
	  "From: MAILER-DAEMON@relay.example\r\nSubject: Undelivered Mail\r\n"
	  "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	  "\tboundary=\"R\"\r\n\r\n--R\r\nContent-Type: text/plain\r\n\r\nThe message bounced.\r\n"
	  "--R\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; b@x.example\r\n"
	  "Status: 5.1.1\r\n\r\n--R\r\nContent-Type: message/rfc822\r\n"
	  "Content-Disposition: attachment; filename=\"returned.eml\"\r\n\r\n"
	  "From: a@x.example\r\nSubject: =?utf-8?q?r=C3=A9sum=C3=A9?=\r\n"
	  "Content-Type: text/plain;\r\n        charset=\"us-ascii\"\r\n\r\nhello\r\n--R--\r\n", 0, {0},
	  { "parts=5", "attachments=2", "attach:0.type=message/delivery-status",
	    "attach:1.type=message/rfc822", "attach:1.name=returned.eml", "attach:1.size=116",
	    "part:4.parent=3", "part:4.type=text/plain", "part_headers=7",
	    "phdr:2=3|Content-Type|message/rfc822", "phdr:4=4|From|a@x.example",
	    "phdr:5=4|Subject|r\xc3\xa9sum\xc3\xa9", "phraw:6= text/plain;\n        charset=\"us-ascii\"",
	    "phdr:6=4|Content-Type|text/plain;        charset=\"us-ascii\"",
	    "rawbody=The message bounced.\nhello", "anoms=", NULL } },
	{ "part headers over their limits",
	  MB "\n--b1\nContent-Type: text/plain\nX-A: 1\nX-B: 2\n\na\n--b1\nX-C: 3\n\nb\n--b1--\n", 0,
	  { .max_part_headers = 2 },
	  { "anom=part_headers_cut", "part_headers=2", "phdr:0=1|Content-Type|text/plain",
	    "phdr:1=1|X-A|1", "counter:part_headers_dropped=2", "rawbody=a\nb", NULL } },
	{ "part header store full",
	  MB "\n--b1\nX-Long: 0123456789012345678901234567890123456789\nX-Short: 1\n\na\n--b1--\n", 0,
	  { .max_part_header_store = 40 },
	  { "anom=part_headers_cut", "part_headers=1", "phdr:0=1|X-Short|1",
	    "counter:part_headers_dropped=1", NULL } },
	{ "message/rfc822 with a multipart inside",
	  MB "\n--b1\nContent-Type: message/rfc822\n\nContent-Type: multipart/mixed; boundary=b2\n\n"
	  "--b2\n\ninner\n--b2--\n--b1--\n", 0, {0},
	  { "parts=4", "part:2.type=multipart/mixed", "part:3.depth=3", "rawbody=inner",
	    "attachments=1", "attach:0.type=message/rfc822", "attach:0.size=63", "anoms=", NULL } },
	{ "multipart/digest default type",
	  "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: in\n\ndigest text\n--d--\n", 0, {0},
	  { "parts=3", "part:1.type=message/rfc822", "part:2.type=text/plain",
	    "rawbody=digest text", "attachments=1", "attach:0.size=25", NULL } },
	{ "attachment names",
	  MB "\n--b1\nContent-Type: application/octet-stream\n"
	  "Content-Disposition: attachment;\n filename*=utf-8''%E2%82%AC%20rates.pdf\n\nx\n"
	  "--b1\nContent-Type: application/octet-stream;\n name=\"=?utf-8?B?w6kudHh0?=\"\n\ny\n"
	  "--b1\nContent-Type: text/plain\nContent-Disposition: attachment; filename*0=\"long\";\n"
	  " filename*1=\"name.txt\"\n\ntext attachment\n"
	  "--b1\nContent-Type: image/png\n\npng\n--b1--\n", 0, {0},
	  { "attachments=4", "attach:0.name=\xe2\x82\xac rates.pdf", "attach:1.name=\xc3\xa9.txt",
	    "attach:2.name=longname.txt", "attach:2.type=text/plain", "attach:3.name=",
	    "attach:3.type=image/png", "attach:3.size=3", "rawbody=text attachment", NULL } },
	{ "html body",
	  "Content-Type: text/html\n\n<html><head><style>p{}</style><script>var a='<p>';</script>"
	  "</head><body><p>Hello&nbsp;&amp; <b>world</b></p>\n"
	  "<a href=\"http://x.example/a?b=1&amp;c=2\">link</a><br>&#233;&#x41;"
	  "<!-- comment > --> end</body></html>\n", 0, {0},
	  { "body=Hello & world\nlink\n\xc3\xa9" "A end\n", "uris=1",
	    "uri:0=http://x.example/a?b=1&c=2", "part:0.html=1", NULL } },
	{ "text URIs",
	  "\nsee http://a.example/x, and www.b.example. mail mailto:c@d.example or\n"
	  "(https://e.example/p?q=1) awww.not and http:// and HTTP://F.EXAMPLE/\n"
	  "dup http://a.example/x\n", 0, {0},
	  { "uris=5", "uri:0=http://a.example/x", "uri:1=www.b.example", "uri:2=mailto:c@d.example",
	    "uri:3=https://e.example/p?q=1", "uri:4=HTTP://F.EXAMPLE/", "anoms=no_headers", NULL } },
	{ "bare addresses become mailto: URIs (as SpamAssassin links them)",
	  "\nwrite to John.Doe@example.com, or e-mail:info@shop.example. not Vi@gra,\n"
	  "a@b.c1 or (sales@corp.example) or mailto:x@y.example\n", 0, {0},
	  { "uris=4", "uri:0=mailto:John.Doe@example.com", "uri:1=mailto:info@shop.example",
	    "uri:2=mailto:sales@corp.example", "uri:3=mailto:x@y.example", "anoms=no_headers",
	    NULL } },
	{ "NUL byte and 8-bit header",
	  "Subject: caf\xc3\xa9\n\na\0b\n", 20, {0},
	  { "anom=8bit_in_header", "anom=nul_byte", "field:subject=caf\xc3\xa9", NULL } },
	{ "header too long",
	  "Subject: 0123456789012345678901234567890123456789012345678901234567890123456789\n"
	  " continued\n\nx\n", 0, { .max_header_bytes = 40 },
	  { "anom=header_too_long", "val:subject=0123456789012345678901234567890",
	    "counter:header_bytes_cut=50", NULL } },
	{ "too many headers",
	  "A: 1\nB: 2\nC: 3\nSubject: s\nE: 5\n\nbody\n", 0, { .max_headers = 3 },
	  { "anom=too_many_headers", "headers=3", "counter:headers=5", "counter:headers_dropped=2",
	    "body=body\n", NULL } },
	{ "header store full",
	  "A: 1111111111\nB: 2222222222\nC: 3\n\nbody\n", 0, { .max_header_store = 40 },
	  { "anom=header_store_full", "headers=2", "hdr:a=1111111111", "hdr:c=3",
	    "counter:headers_dropped=1", NULL } },
	{ "body copy truncated",
	  "\n0123456789abcdefghij\n", 0, { .max_body = 8 },
	  { "anom=body_truncated", "body=01234567", "counter:body_cut=13", NULL } },
	{ "long base64 line in pieces",
	  "Content-Transfer-Encoding: base64\n\n"
	  "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
	  "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
	  "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\n",
	  0, { .max_line = 80 },
	  { "part:0.size=171", "counter:line_pieces=2", "anoms=", NULL } },
	{ "long header line in pieces",
	  "Subject: 0123456789012345678901234567890123456789012345678901234567890123456789"
	  "0123456789012345678901234567890123456789\r\n\r\nx\r\n", 0, { .max_line = 80 },
	  { "val:subject=01234567890123456789012345678901234567890123456789012345678901234567890"
	    "123456789012345678901234567890123456789", "body~=\nx", NULL } },
	{ "line over 998 bytes", NULL, 0, {0}, { "anom=long_line", NULL } },
	{ "no headers", "just text\n", 0, {0},
	  { "anoms=no_headers", "rawbody=just text\n", "headers=0", NULL } },
	{ "blank first line", "\nbody\n", 0, {0}, { "anoms=no_headers", "rawbody=body\n", NULL } },
	{ "mbox From line",
	  "From someone@example Mon Jan  1 00:00:00 2024\nSubject: s\n\nb\n", 0, {0},
	  { "field:subject=s", "headers=1", "anoms=", NULL } },
	{ "headers unterminated", "Subject: x", 0, {0},
	  { "field:subject=x", "anom=headers_unterminated", "body=x\n", NULL } },
	{ "empty message", "", 0, {0}, { "parts=1", "headers=0", "anoms=no_headers,headers_unterminated", NULL } },
	{ "bad header line ends the block",
	  "Subject: s\nthis is not a header\nmore\n", 0, {0},
	  { "anom=bad_header_line", "rawbody=this is not a header\nmore\n", NULL } },
	{ "parameter folded without a blank",
	  "Content-Type: multipart/alternative;\nboundary=\"q\"\nSubject: s\n\n--q\n\nin\n--q--\n", 0, {0},
	  { "anom=bad_header_line", "parts=2", "rawbody=in", "field:subject=s",
	    "val:content-type=multipart/alternative;boundary=\"q\"", NULL } },
	{ "CRLF and LF mixed", "Subject: s\r\n\nx\n", 0, {0}, { "anom=crlf_lf_mix", NULL } },
	{ "unknown transfer encoding", "Content-Transfer-Encoding: x-uue\n\nabc\n", 0, {0},
	  { "anom=bad_cte", "rawbody=abc\n", NULL } },
	{ "To and Cc counts",
	  "To: a@x.example, \"Last, First\" <b@x.example>,\n c@x.example\nCc: (x,y) d@x.example; e\n"
	  "To: f@x.example\n\n", 0, {0},
	  { "to_count=4", "cc_count=1", "count:to=2", NULL } },
	{ "uri limit",
	  "\nhttp://a.example/1 http://a.example/2 http://a.example/3\n", 0, { .max_uris = 2 },
	  { "uris=2", "anom=too_many_uris", "counter:uris=3", NULL } },
};

/* ---- running a case --------------------------------------------------------------- */

struct stream {
	char body[8192];
	size_t body_len;
	size_t full_len;
	uint32_t headers, part_begins, part_ends, uris;
	int headers_end;
};

static void st_header(void *user, const struct message_header *h)
{
	struct stream *s = user;

	s->headers++;
	CHECK(h->name && h->name_len && h->decoded);
}

static void st_headers_end(void *user, const struct message *m)
{
	struct stream *s = user;

	s->headers_end++;
	CHECK(message_headers_done(m));
}

static void st_part_begin(void *user, const struct message_part *p)
{
	((struct stream *)user)->part_begins++;
	(void)p;
}

static void st_part_end(void *user, const struct message_part *p)
{
	((struct stream *)user)->part_ends++;
	CHECK(p->flags & MESSAGE_PART_ENDED);
}

static void st_text(void *user, const struct message_part *part, enum message_view v,
		    const uint8_t *p, size_t n)
{
	struct stream *s = user;

	if (v == MESSAGE_VIEW_FULL) {
		CHECK(part == NULL);
		s->full_len += n;
		return;
	}
	CHECK(part != NULL);
	if (v == MESSAGE_VIEW_BODY && s->body_len + n < sizeof(s->body)) {
		memcpy(s->body + s->body_len, p, n);
		s->body_len += n;
	}
}

static void st_uri(void *user, const struct message_part *part, const char *u, size_t n)
{
	((struct stream *)user)->uris++;
	CHECK(n > 0 && u != NULL);
}

static const struct message_ops stream_ops = {
	.on_header = st_header,
	.on_headers_end = st_headers_end,
	.on_part_begin = st_part_begin,
	.on_part_end = st_part_end,
	.on_text = st_text,
	.on_uri = st_uri,
};

static void lim_apply(struct message_limits *l, const struct lim_override *o)
{
	message_limits_default(l);
#define O(f) do { if (o->f) l->f = o->f; } while (0)
	O(max_line);
	O(max_header_bytes);
	O(max_headers);
	O(max_depth);
	O(max_parts);
	O(max_body);
	O(max_uris);
	O(max_header_store);
	O(max_part_headers);
	O(max_part_header_store);
#undef O
}

static char fpbuf[1 << 20];

static void fp_put(size_t *o, const char *fmt, const char *s, size_t n)
{
	int k = snprintf(fpbuf + *o, sizeof(fpbuf) - *o, fmt, (int)n, s);

	if (k > 0 && *o + (size_t)k < sizeof(fpbuf))
		*o += (size_t)k;
}

/* Everything a later stage can read, as one string. */
static const char *fingerprint(const struct message *m)
{
	size_t o = 0, n;
	const uint8_t *v;
	char num[256];

	for (uint32_t i = 0; i < message_header_count(m); i++) {
		const struct message_header *h = message_header_at(m, i);

		fp_put(&o, "H[%.*s]", h->name, h->name_len);
		fp_put(&o, "[%.*s]", h->raw, h->raw_len);
		fp_put(&o, "[%.*s]", h->value, h->value_len);
		fp_put(&o, "[%.*s]\n", h->decoded, h->decoded_len);
	}
	for (uint32_t i = 0; i < message_part_header_count(m); i++) {
		uint32_t part = 0;
		const struct message_header *h = message_part_header_at(m, i, &part);

		snprintf(num, sizeof(num), "PH%u", part);
		fp_put(&o, "%.*s", num, strlen(num));
		fp_put(&o, "[%.*s]", h->name, h->name_len);
		fp_put(&o, "[%.*s]", h->raw, h->raw_len);
		fp_put(&o, "[%.*s]", h->value, h->value_len);
		fp_put(&o, "[%.*s]\n", h->decoded, h->decoded_len);
	}
	for (uint32_t i = 0; i < message_part_count(m); i++) {
		const struct message_part *p = message_part_at(m, i);

		snprintf(num, sizeof(num), "P%u %d %u %x %d %llu %llu %s|%s|", p->index, p->parent,
			 p->depth, p->flags, (int)p->cte, (unsigned long long)p->raw_size,
			 (unsigned long long)p->decoded_size, p->type, p->charset);
		fp_put(&o, "%.*s", num, strlen(num));
		fp_put(&o, "%.*s\n", p->name, strlen(p->name));
	}
	v = message_view(m, MESSAGE_VIEW_BODY, &n);
	fp_put(&o, "B[%.*s]\n", (const char *)v, n);
	v = message_view(m, MESSAGE_VIEW_RAWBODY, &n);
	fp_put(&o, "R[%.*s]\n", (const char *)v, n);
	for (uint32_t i = 0; i < message_uri_count(m); i++) {
		const char *u = message_uri_at(m, i, &n);

		fp_put(&o, "U[%.*s]\n", u, n);
	}
	snprintf(num, sizeof(num), "A%llx rc%u to%u cc%u",
		 (unsigned long long)message_anomalies(m), message_received_count(m),
		 message_to_count(m), message_cc_count(m));
	fp_put(&o, "%.*s\n", num, strlen(num));
	{
		const struct message_counters *c = message_counters(m);

		snprintf(num, sizeof(num), "C%llu %llu %llu %llu %llu %llu %llu %llu %llu",
			 (unsigned long long)c->headers, (unsigned long long)c->headers_dropped,
			 (unsigned long long)c->parts_dropped, (unsigned long long)c->body_bytes,
			 (unsigned long long)c->rawbody_bytes, (unsigned long long)c->uris,
			 (unsigned long long)c->base64_bad_chars, (unsigned long long)c->qp_bad,
			 (unsigned long long)c->line_pieces);
		fp_put(&o, "%.*s\n", num, strlen(num));
	}
	return fpbuf;
}

static int validate_ok(const struct message *m, const char *name)
{
	const char *why = NULL;

	if (message_validate(m, &why) == 0)
		return 1;
	fprintf(stderr, "validate failed (%s): %s\n", name, why ? why : "?");
	return 0;
}

/* Parses msg fed as the pieces cut at cuts[0..ncuts) (offsets, increasing),
 * or byte by byte when bytewise. Returns the parser; validates throughout. */
static struct message *run_msg(const struct msg_case *t, const char *msg, size_t len,
			       const size_t *cuts, size_t ncuts, int bytewise,
			       struct stream *st)
{
	struct message_limits lim;
	struct message *m;
	int ok = 1;

	lim_apply(&lim, &t->lim);
	memset(st, 0, sizeof(*st));
	m = message_new(&lim, &stream_ops, st);
	if (!m)
		return NULL;
	if (bytewise) {
		for (size_t i = 0; i < len; i++) {
			message_feed(m, (const uint8_t *)msg + i, 1);
			if (ok && (len < 2048 || i % 97 == 0))
				ok = validate_ok(m, t->name);
		}
	} else {
		size_t prev = 0;

		for (size_t k = 0; k <= ncuts; k++) {
			size_t end = k < ncuts ? cuts[k] : len;

			message_feed(m, (const uint8_t *)msg + prev, end - prev);
			if (ok)
				ok = validate_ok(m, t->name);
			prev = end;
		}
	}
	message_end(m);
	if (ok)
		ok = validate_ok(m, t->name);
	CHECK(ok);
	return m;
}

static const struct message_part *nth_attachment(const struct message *m, long i)
{
	return message_attachment(m, (uint32_t)i);
}

/* Checks one "key=value" expectation; returns 1 when it holds. */
static int expect_one(const struct message *m, const char *e)
{
	const char *eq = strchr(e, '=');
	char key[128];
	const char *val;
	size_t kl, n;
	int neg = 0;

	if (e[0] == '!') {
		neg = 1;
		e++;
		eq = strchr(e, '=');
	}
	if (!eq)
		return 0;
	kl = (size_t)(eq - e);
	if (kl >= sizeof(key))
		return 0;
	memcpy(key, e, kl);
	key[kl] = '\0';
	val = eq + 1;
	if (strcmp(key, "anom") == 0) {
		for (int a = 0; a < MESSAGE_ANOM_MAX; a++)
			if (strcmp(message_anomaly_name((enum message_anomaly)a), val) == 0)
				return !!(message_anomalies(m) & (1ull << a)) != neg;
		return 0;
	}
	if (strcmp(key, "anoms") == 0) {
		char buf[512];

		message_anomalies_format(message_anomalies(m), buf, sizeof(buf));
		return (strcmp(buf, val) == 0) != neg;
	}
	if (strcmp(key, "body") == 0 || strcmp(key, "rawbody") == 0 || strcmp(key, "body~") == 0) {
		const uint8_t *v = message_view(m, key[0] == 'r' ? MESSAGE_VIEW_RAWBODY :
						MESSAGE_VIEW_BODY, &n);
		int r;

		if (key[4] == '~')
			r = v && memmem(v, n, val, strlen(val)) != NULL;
		else
			r = n == strlen(val) && (n == 0 || memcmp(v, val, n) == 0);
		if (!r && !neg)
			fprintf(stderr, "  %s got [%.*s]\n", key, (int)n, v ? (const char *)v : "");
		return r != neg;
	}
	if (strncmp(key, "field:", 6) == 0) {
		for (int f = 0; f < MESSAGE_FIELD_MAX; f++)
			if (strcmp(message_field_name((enum message_field)f), key + 6) == 0) {
				const char *v = message_field(m, (enum message_field)f);

				if (!v || strcmp(v, val) != 0)
					fprintf(stderr, "  %s got [%s]\n", key, v ? v : "(null)");
				return (v && strcmp(v, val) == 0) != neg;
			}
		return 0;
	}
	if (strncmp(key, "hdr:", 4) == 0 || strncmp(key, "val:", 4) == 0 ||
	    strncmp(key, "raw:", 4) == 0) {
		const struct message_header *h = message_header(m, key + 4);
		const char *v = !h ? NULL : key[0] == 'h' ? h->decoded : key[0] == 'v' ? h->value : h->raw;

		if (!v || strcmp(v, val) != 0)
			fprintf(stderr, "  %s got [%s]\n", key, v ? v : "(null)");
		return (v && strcmp(v, val) == 0) != neg;
	}
	if (strncmp(key, "phdr:", 5) == 0 || strncmp(key, "phraw:", 6) == 0) {
		/* the i-th part header as "part|name|decoded", or its raw value */
		uint32_t part = 0;
		const struct message_header *h =
			message_part_header_at(m, (uint32_t)strtoul(strchr(key, ':') + 1, NULL, 10), &part);
		char got[1024] = "(none)";

		if (h && key[2] == 'd')
			snprintf(got, sizeof(got), "%u|%s|%s", part, h->name, h->decoded);
		else if (h)
			snprintf(got, sizeof(got), "%s", h->raw);
		if (strcmp(got, val) != 0)
			fprintf(stderr, "  %s got [%s]\n", key, got);
		return (strcmp(got, val) == 0) != neg;
	}
	if (strncmp(key, "count:", 6) == 0) {
		long c = 0;

		for (const struct message_header *h = message_header(m, key + 6); h;
		     h = message_header_next(m, h))
			c++;
		return (c == strtol(val, NULL, 10)) != neg;
	}
	if (strncmp(key, "nth:", 4) == 0) {
		char *dot = strrchr(key, '.');
		const struct message_header *h;
		long i;

		if (!dot)
			return 0;
		*dot = '\0';
		i = strtol(dot + 1, NULL, 10);
		for (h = message_header(m, key + 4); h && i > 0; i--)
			h = message_header_next(m, h);
		return (h && strcmp(h->decoded, val) == 0) != neg;
	}
	if (strncmp(key, "counter:", 8) == 0) {
		const struct message_counters *c = message_counters(m);
		static const struct { const char *n; size_t off; } cn[] = {
#define CN(f) { #f, offsetof(struct message_counters, f) }
			CN(headers), CN(headers_dropped), CN(header_bytes_cut), CN(parts_dropped),
			CN(unclosed_multiparts), CN(body_cut), CN(uris), CN(line_pieces),
			CN(part_headers_dropped), CN(full_cut),
#undef CN
		};

		for (size_t i = 0; i < sizeof(cn) / sizeof(cn[0]); i++)
			if (strcmp(cn[i].n, key + 8) == 0) {
				uint64_t v = *(const uint64_t *)((const char *)c + cn[i].off);

				if (v != strtoull(val, NULL, 10))
					fprintf(stderr, "  %s got %llu\n", key, (unsigned long long)v);
				return (v == strtoull(val, NULL, 10)) != neg;
			}
		return 0;
	}
	if (strncmp(key, "part:", 5) == 0 || strncmp(key, "attach:", 7) == 0) {
		int att = key[0] == 'a';
		char *p = key + (att ? 7 : 5), *dot = strchr(p, '.');
		const struct message_part *part;
		char got[MESSAGE_NAME_MAX + 32];
		const char *f;

		if (!dot)
			return 0;
		*dot = '\0';
		f = dot + 1;
		part = att ? nth_attachment(m, strtol(p, NULL, 10)) :
			     message_part_at(m, (uint32_t)strtol(p, NULL, 10));
		if (!part)
			return neg;
		got[0] = '\0';
		if (strcmp(f, "type") == 0)
			snprintf(got, sizeof(got), "%s", part->type);
		else if (strcmp(f, "charset") == 0)
			snprintf(got, sizeof(got), "%s", part->charset);
		else if (strcmp(f, "name") == 0)
			snprintf(got, sizeof(got), "%s", part->name);
		else if (strcmp(f, "size") == 0)
			snprintf(got, sizeof(got), "%llu", (unsigned long long)part->decoded_size);
		else if (strcmp(f, "raw") == 0)
			snprintf(got, sizeof(got), "%llu", (unsigned long long)part->raw_size);
		else if (strcmp(f, "parent") == 0)
			snprintf(got, sizeof(got), "%d", part->parent);
		else if (strcmp(f, "depth") == 0)
			snprintf(got, sizeof(got), "%u", part->depth);
		else if (strcmp(f, "headers") == 0)
			snprintf(got, sizeof(got), "%u", part->header_count);
		else if (strcmp(f, "opaque") == 0)
			snprintf(got, sizeof(got), "%d", !!(part->flags & MESSAGE_PART_OPAQUE));
		else if (strcmp(f, "rfc822") == 0)
			snprintf(got, sizeof(got), "%d", !!(part->flags & MESSAGE_PART_RFC822));
		else if (strcmp(f, "html") == 0)
			snprintf(got, sizeof(got), "%d", !!(part->flags & MESSAGE_PART_HTML));
		else
			return 0;
		if (strcmp(got, val) != 0)
			fprintf(stderr, "  %s.%s got [%s]\n", key, f, got);
		return (strcmp(got, val) == 0) != neg;
	}
	if (strncmp(key, "uri:", 4) == 0) {
		const char *u = message_uri_at(m, (uint32_t)strtol(key + 4, NULL, 10), &n);

		if (!u || n != strlen(val) || memcmp(u, val, n) != 0)
			fprintf(stderr, "  %s got [%.*s]\n", key, (int)n, u ? u : "");
		return (u && n == strlen(val) && memcmp(u, val, n) == 0) != neg;
	}
	{
		uint64_t got;

		if (strcmp(key, "parts") == 0)
			got = message_part_count(m);
		else if (strcmp(key, "headers") == 0)
			got = message_header_count(m);
		else if (strcmp(key, "part_headers") == 0)
			got = message_part_header_count(m);
		else if (strcmp(key, "received") == 0)
			got = message_received_count(m);
		else if (strcmp(key, "to_count") == 0)
			got = message_to_count(m);
		else if (strcmp(key, "cc_count") == 0)
			got = message_cc_count(m);
		else if (strcmp(key, "uris") == 0)
			got = message_uri_count(m);
		else if (strcmp(key, "attachments") == 0) {
			got = 0;
			while (message_attachment(m, (uint32_t)got))
				got++;
		} else if (strcmp(key, "first_received") == 0) {
			const char *r = message_first_received(m);

			return (r && strcmp(r, val) == 0) != neg;
		} else {
			return 0;
		}
		if (got != strtoull(val, NULL, 10))
			fprintf(stderr, "  %s got %llu\n", key, (unsigned long long)got);
		return (got == strtoull(val, NULL, 10)) != neg;
	}
}

static char long_line_msg[4096];

static void test_message_cases(void)
{
	static char whole[1 << 20];
	size_t ncases = sizeof(msg_cases) / sizeof(msg_cases[0]);

	{
		size_t o = (size_t)sprintf(long_line_msg, "Subject: long\n\n");

		memset(long_line_msg + o, 'x', 1200);
		o += 1200;
		long_line_msg[o++] = '\n';
		long_line_msg[o] = '\0';
	}
	for (size_t c = 0; c < ncases; c++) {
		const struct msg_case *t = &msg_cases[c];
		const char *msg = t->msg ? t->msg : long_line_msg;
		size_t len = t->len ? t->len : strlen(msg);
		struct stream st;
		struct message *m;
		unsigned before = check_failed;

		m = run_msg(t, msg, len, NULL, 0, 0, &st);
		CHECK(m != NULL);
		if (!m)
			continue;
		for (int i = 0; t->expect[i]; i++) {
			int ok = expect_one(m, t->expect[i]);

			CHECK(ok);
			if (!ok)
				fprintf(stderr, "  case \"%s\": expectation \"%s\"\n", t->name, t->expect[i]);
		}
		/* the streamed views equal the kept copies (when not cut) */
		{
			size_t n;
			const uint8_t *b = message_view(m, MESSAGE_VIEW_BODY, &n);

			if (!message_counters(m)->body_cut)
				CHECK_MEM(st.body, st.body_len, b ? (const char *)b : "", n);
			CHECK_EQ_U64(st.full_len, len);
			CHECK_EQ_U64(st.part_begins, message_part_count(m));
			CHECK_EQ_U64(st.part_ends, message_part_count(m));
			CHECK_EQ_U64(st.headers, message_counters(m)->headers);
			CHECK_EQ_U64(st.uris, message_counters(m)->uris);
			CHECK_EQ_U64(st.headers_end, message_part_count(m) ? 1 : 0);
		}
		snprintf(whole, sizeof(whole), "%s", fingerprint(m));
		message_free(m);

		/* byte by byte */
		m = run_msg(t, msg, len, NULL, 0, 1, &st);
		if (m) {
			const char *fp = fingerprint(m);

			CHECK_STR(fp, whole);
			message_free(m);
		}
		/* two pieces, split at every offset */
		for (size_t cut = 1; cut < len; cut++) {
			m = run_msg(t, msg, len, &cut, 1, 0, &st);
			if (!m)
				continue;
			if (strcmp(fingerprint(m), whole) != 0) {
				CHECK_STR(fingerprint(m), whole);
				fprintf(stderr, "  case \"%s\" split at %zu\n", t->name, cut);
				message_free(m);
				break;
			}
			check_passed++;
			message_free(m);
		}
		/* three pieces */
		for (size_t a = 1; a + 1 < len; a += 7) {
			size_t cuts[2] = { a, a + 1 + (a * 13) % (len - a - 1) };

			m = run_msg(t, msg, len, cuts, 2, 0, &st);
			if (!m)
				continue;
			CHECK_STR(fingerprint(m), whole);
			message_free(m);
		}
		if (check_failed != before)
			fprintf(stderr, "  (in case \"%s\")\n", t->name);
	}
}

/* ---- reuse, limits, memory ---------------------------------------------------------- */

static void test_reset_and_memory(void)
{
	static const char small[] =
		"Received: from a.example by b.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
		"From: Alice <alice@a.example>\r\nTo: bob@b.example\r\nSubject: hello\r\n"
		"Message-ID: <1@a.example>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n"
		"Hi Bob,\r\nsee http://a.example/x\r\n-- \r\nAlice\r\n";
	uint64_t in_use0 = mem_in_use(MEM_MESSAGE);
	struct message *m = message_new(NULL, NULL, NULL);
	size_t n, fresh;
	char fp1[8192];

	CHECK(m != NULL);
	if (!m)
		return;
	fresh = message_memory(m);
	CHECK_EQ_U64(message_allocations(m), 2);
	/* fed as an SMTP stage would: packet-sized pieces */
	for (size_t o = 0; o < sizeof(small) - 1; o += 100)
		message_feed(m, (const uint8_t *)small + o,
			     sizeof(small) - 1 - o < 100 ? sizeof(small) - 1 - o : 100);
	message_end(m);
	CHECK(validate_ok(m, "small"));
	CHECK_STR(message_field(m, MESSAGE_FIELD_MESSAGE_ID), "<1@a.example>");
	/* SpamAssassin's pristine body length: the body with LF line ends */
	CHECK_EQ_U64(message_body_length(m), 41);
	CHECK_EQ_U64(message_uri_count(m), 1);
	printf("memory: small message (%zu bytes, 6 headers, 1 URI): %zu bytes held, "
	       "%llu allocations, MEM_MESSAGE in use %llu (struct message and root part: %zu)\n",
	       sizeof(small) - 1, message_memory(m), (unsigned long long)message_allocations(m),
	       (unsigned long long)(mem_in_use(MEM_MESSAGE) - in_use0), fresh);
	snprintf(fp1, sizeof(fp1), "%s", fingerprint(m));

	/* reset and reuse: same result, no new allocation */
	{
		uint64_t allocs = message_allocations(m);

		message_reset(m);
		CHECK(validate_ok(m, "reset"));
		CHECK_EQ_U64(message_header_count(m), 0);
		message_feed(m, (const uint8_t *)small, sizeof(small) - 1);
		message_end(m);
		CHECK_STR(fingerprint(m), fp1);
		CHECK_EQ_U64(message_allocations(m), allocs);
		CHECK_EQ_U64(message_body_length(m), 41);
	}
	/* feeding after the end is ignored */
	message_feed(m, (const uint8_t *)"more\n", 5);
	CHECK_EQ_U64(message_counters(m)->bytes, sizeof(small) - 1);
	(void)message_view(m, MESSAGE_VIEW_FULL, &n);
	CHECK_EQ_U64(n, 0);
	message_free(m);
	CHECK_EQ_U64(mem_in_use(MEM_MESSAGE), in_use0);
}

/* The body length (check_body_length) of a multipart message fed one byte at
 * a time equals the body's bytes with CR LF counted as one, and is 0 for a
 * message that ends inside its headers. */
static void test_body_length(void)
{
	static const char mp[] =
		"From: a@a.example\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
		"preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
		"--b1\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--b1--\r\nepilogue";
	const char *body = strstr(mp, "\r\n\r\n") + 4;
	uint64_t want = strlen(body);
	struct message *m = message_new(NULL, NULL, NULL);

	for (const char *q = body; (q = strstr(q, "\r\n")); q += 2)
		want--;
	CHECK(m != NULL);
	if (!m)
		return;
	for (size_t i = 0; i < sizeof(mp) - 1; i++)
		message_feed(m, (const uint8_t *)mp + i, 1);
	message_end(m);
	CHECK_EQ_U64(message_body_length(m), want);
	/* without the URI list (no uri rules): the same body, no URIs, and
	 * the choice survives a reset */
	{
		static const char u[] = "Content-Type: text/html\r\n\r\n<a href=\"http://a.example/\">x</a> "
					"see http://b.example/ or c@d.example\r\n";
		size_t b1 = 0, b2 = 0;
		const uint8_t *v1;
		char body1[256];

		message_reset(m);
		message_feed(m, (const uint8_t *)u, sizeof(u) - 1);
		message_end(m);
		CHECK_EQ_U64(message_uri_count(m), 3);
		v1 = message_view(m, MESSAGE_VIEW_BODY, &b1);
		CHECK(v1 != NULL && b1 > 0 && b1 <= sizeof(body1));
		if (b1 > sizeof(body1))
			b1 = sizeof(body1);
		if (v1)
			memcpy(body1, v1, b1);
		keep_only(m, false, true, true, true);
		message_reset(m);
		message_feed(m, (const uint8_t *)u, sizeof(u) - 1);
		message_end(m);
		CHECK_EQ_U64(message_uri_count(m), 0);
		CHECK(message_view(m, MESSAGE_VIEW_BODY, &b2) != NULL && b2 == b1 &&
		      memcmp(message_view(m, MESSAGE_VIEW_BODY, &b2), body1, b1) == 0);
		keep_only(m, true, true, true, true);
	}
	/* without the text views (no body, rawbody or uri rules): no views,
	 * no URIs, but the same parts, sizes and anomalies (the decoders and
	 * the charset converter still run), and the choice survives a reset */
	{
		static const char u[] =
			"Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
			"--b\r\nContent-Type: text/html; charset=shift_jis\r\n"
			"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
			"<a href=3D\"http://a.example/\">x=82</a> =ZZ\r\n"
			"--b\r\nContent-Type: application/pdf; name=a.pdf\r\n"
			"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0x*\r\n--b--\r\n";
		uint64_t anom[2];
		uint32_t parts[2];
		uint64_t dsz[2];
		size_t len;

		for (int wt = 1; wt >= 0; wt--) {
			keep_only(m, true, wt, true, true);
			message_reset(m);
			message_feed(m, (const uint8_t *)u, sizeof(u) - 1);
			message_end(m);
			anom[wt] = message_anomalies(m);
			parts[wt] = message_part_count(m);
			dsz[wt] = message_part_count(m) > 2 ? message_part_at(m, 2)->decoded_size : 0;
			if (wt) {
				CHECK(message_view(m, MESSAGE_VIEW_BODY, &len) && len > 0);
				CHECK_EQ_U64(message_uri_count(m), 1);
			} else {
				CHECK(message_view(m, MESSAGE_VIEW_BODY, &len) == NULL || len == 0);
				CHECK(message_view(m, MESSAGE_VIEW_RAWBODY, &len) == NULL || len == 0);
				CHECK_EQ_U64(message_uri_count(m), 0);
				CHECK_EQ_U64(message_counters(m)->body_bytes, 0);
			}
		}
		CHECK_EQ_U64(anom[0], anom[1]);
		CHECK(anom[0] & (1ull << MESSAGE_ANOM_BAD_QP));
		CHECK(anom[0] & (1ull << MESSAGE_ANOM_BAD_CHARSET_DATA));
		CHECK(anom[0] & (1ull << MESSAGE_ANOM_BAD_BASE64));
		CHECK_EQ_U64(parts[0], parts[1]);
		CHECK_EQ_U64(parts[0], 3);
		CHECK_EQ_U64(dsz[0], dsz[1]);
		CHECK_EQ_U64(dsz[0], 6);
		message_reset(m);
		message_feed(m, (const uint8_t *)u, sizeof(u) - 1);
		message_end(m);
		CHECK_EQ_U64(message_uri_count(m), 0);
		keep_only(m, true, true, true, true);
	}
	/* MIME parts' headers not kept (no mimeheader rules): the same parts
	 * and part fields, the same counters, the same part_headers_cut at the
	 * same limit; only the kept list is empty */
	{
		static const char u[] =
			"Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
			"--b\r\nContent-Type: text/plain; charset=us-ascii\r\nX-A: 1\r\n\r\nhi\r\n"
			"--b\r\nContent-Type: application/pdf; name=a.pdf\r\nX-B: =?utf-8?q?=C3=A9?=\r\n"
			"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0x\r\n--b--\r\n";
		struct message_limits lim;
		struct message *pm;
		uint64_t anom[2], ph[2], phd[2];
		uint32_t parts[2], kept[2];
		char name[2][256];
		const char *why = NULL;

		message_limits_default(&lim);
		lim.max_part_headers = 3;        /* 5 part headers: 2 over */
		pm = message_new(&lim, NULL, NULL);
		CHECK(pm != NULL);
		for (int keep = 1; pm && keep >= 0; keep--) {
			keep_only(pm, true, true, keep, true);
			message_reset(pm);
			message_feed(pm, (const uint8_t *)u, sizeof(u) - 1);
			message_end(pm);
			CHECK(message_validate(pm, &why) == 0);
			anom[keep] = message_anomalies(pm);
			ph[keep] = message_counters(pm)->part_headers;
			phd[keep] = message_counters(pm)->part_headers_dropped;
			parts[keep] = message_part_count(pm);
			kept[keep] = message_part_header_count(pm);
			snprintf(name[keep], sizeof(name[keep]), "%s",
				 parts[keep] > 2 ? message_part_at(pm, 2)->name : "");
		}
		CHECK_EQ_U64(anom[0], anom[1]);
		CHECK(anom[0] & (1ull << MESSAGE_ANOM_PART_HEADERS_CUT));
		CHECK_EQ_U64(ph[0], ph[1]);
		CHECK_EQ_U64(ph[0], 5);
		CHECK_EQ_U64(phd[0], phd[1]);
		CHECK_EQ_U64(phd[0], 2);
		CHECK_EQ_U64(parts[0], parts[1]);
		CHECK_EQ_U64(kept[1], 3);
		CHECK_EQ_U64(kept[0], 0);
		CHECK(strcmp(name[0], "a.pdf") == 0 && strcmp(name[1], "a.pdf") == 0);
		message_free(pm);
	}
	/* the header list not kept (no header rules): the same fields, first
	 * Received, counts and anomalies, at a header-count limit that cuts
	 * the Cc; only the list holds fewer */
	{
		static const char u[] =
			"Received: from a\r\nReceived: from b\r\nX-Spam: =?utf-8?q?=C3=A9?=\r\n"
			"From: Al <al@a.example>\r\nX-Other: 1\r\nTo: b@b.example, c@c.example\r\n"
			"Subject: =?iso-8859-1?q?caf=E9?=\r\nX-More: 2\r\nCc: d@d.example\r\n\r\nbody\r\n";
		struct message_limits lim;
		struct message *hm;
		uint64_t anom[2], hdrs[2], drop[2], rcv[2];
		uint32_t kept[2], to[2], cc[2];
		char subj[2][64], from[2][64], first[2][64];
		const char *why = NULL;

		message_limits_default(&lim);
		lim.max_headers = 8;             /* 9 headers: the Cc is cut */
		hm = message_new(&lim, NULL, NULL);
		CHECK(hm != NULL);
		for (int keep = 1; hm && keep >= 0; keep--) {
			const char *v;

			keep_only(hm, true, true, true, keep);
			message_reset(hm);
			message_feed(hm, (const uint8_t *)u, sizeof(u) - 1);
			message_end(hm);
			CHECK(message_validate(hm, &why) == 0);
			anom[keep] = message_anomalies(hm);
			hdrs[keep] = message_counters(hm)->headers;
			drop[keep] = message_counters(hm)->headers_dropped;
			rcv[keep] = message_received_count(hm);
			kept[keep] = message_header_count(hm);
			to[keep] = message_to_count(hm);
			cc[keep] = message_cc_count(hm);
			v = message_field(hm, MESSAGE_FIELD_SUBJECT);
			snprintf(subj[keep], sizeof(subj[keep]), "%s", v ? v : "(none)");
			v = message_field(hm, MESSAGE_FIELD_FROM);
			snprintf(from[keep], sizeof(from[keep]), "%s", v ? v : "(none)");
			v = message_first_received(hm);
			snprintf(first[keep], sizeof(first[keep]), "%s", v ? v : "(none)");
		}
		CHECK_EQ_U64(anom[0], anom[1]);
		CHECK(anom[0] & (1ull << MESSAGE_ANOM_TOO_MANY_HEADERS));
		CHECK_EQ_U64(hdrs[0], hdrs[1]);
		CHECK_EQ_U64(hdrs[0], 9);
		CHECK_EQ_U64(drop[0], drop[1]);
		CHECK_EQ_U64(drop[0], 1);
		CHECK_EQ_U64(rcv[0], rcv[1]);
		CHECK_EQ_U64(rcv[0], 2);
		CHECK_EQ_U64(to[0], to[1]);
		CHECK_EQ_U64(to[0], 2);
		CHECK_EQ_U64(cc[0], cc[1]);
		CHECK_EQ_U64(kept[1], 8);
		CHECK_EQ_U64(kept[0], 4);        /* first Received, From, To, Subject */
		CHECK(strcmp(subj[0], subj[1]) == 0 && strcmp(subj[0], "caf\xc3\xa9") == 0);
		CHECK(strcmp(from[0], from[1]) == 0);
		CHECK(strcmp(first[0], first[1]) == 0 && strcmp(first[0], "from a") == 0);
		message_free(hm);
	}
	message_reset(m);
	message_feed(m, (const uint8_t *)"Subject: x\r\nFrom: y", strlen("Subject: x\r\nFrom: y"));
	message_end(m);
	CHECK_EQ_U64(message_body_length(m), 0);
	message_free(m);
}

/* A tap sees every raw byte as fed and is released with the message; the
 * raw copy is kept only when the tap asks for it, up to max_full. */
struct tap_probe {
	char buf[1024];
	size_t len;
	int released;
};

static void probe_feed(void *obj, const uint8_t *p, size_t n)
{
	struct tap_probe *t = obj;

	if (t->len + n <= sizeof(t->buf))
		memcpy(t->buf + t->len, p, n);
	t->len += n;
}

static void probe_release(void *obj)
{
	((struct tap_probe *)obj)->released++;
}

static const struct message_tap probe_tap = { probe_feed, probe_release };
static const struct message_tap other_tap = { probe_feed, probe_release };

static void test_tap_and_full_copy(void)
{
	static const char msg[] =
		"Subject: tap\r\nFrom: a@b.example\r\n\r\nfirst line\r\n.dot kept\r\n"
		"a line long enough to go past the copy's limit of sixty-four bytes\r\n";
	size_t len = sizeof(msg) - 1, n;
	uint64_t in_use0 = mem_in_use(MEM_MESSAGE);
	struct message_limits lim;
	struct tap_probe a = { .len = 0 }, b = { .len = 0 }, c = { .len = 0 };
	struct message *m;
	const uint8_t *v;

	message_limits_default(&lim);
	lim.max_full = 64;
	m = message_new(&lim, NULL, NULL);
	CHECK(m != NULL);
	if (!m)
		return;
	message_attach(m, &probe_tap, &a, 1);
	CHECK(message_attached(m, &probe_tap) == &a);
	CHECK(message_attached(m, &other_tap) == NULL);
	for (size_t i = 0; i < len; i++) {
		message_feed(m, (const uint8_t *)msg + i, 1);
		if (i % 17 == 0)
			CHECK(validate_ok(m, "tap"));
	}
	message_end(m);
	CHECK(validate_ok(m, "tap"));
	CHECK_MEM(a.buf, a.len, msg, len);
	v = message_view(m, MESSAGE_VIEW_FULL, &n);
	CHECK_MEM((const char *)v, n, msg, 64);
	CHECK(message_anomalies(m) & (1ull << MESSAGE_ANOM_FULL_TRUNCATED));
	CHECK_EQ_U64(message_counters(m)->full_cut, len - 64);
	CHECK_EQ_U64(a.released, 0);
	/* reset: released once, copy gone, nothing attached */
	message_reset(m);
	CHECK_EQ_U64(a.released, 1);
	CHECK(message_attached(m, &probe_tap) == NULL);
	(void)message_view(m, MESSAGE_VIEW_FULL, &n);
	CHECK_EQ_U64(n, 0);
	/* without a tap: no copy, no anomaly */
	message_feed(m, (const uint8_t *)msg, len);
	message_end(m);
	(void)message_view(m, MESSAGE_VIEW_FULL, &n);
	CHECK_EQ_U64(n, 0);
	CHECK_EQ_U64(message_anomalies(m), 0);
	CHECK_EQ_U64(a.len, len);
	message_reset(m);
	CHECK_EQ_U64(a.released, 1);
	/* a tap without the copy; attaching another releases the first */
	message_attach(m, &probe_tap, &b, 0);
	message_attach(m, &other_tap, &c, 1);
	CHECK_EQ_U64(b.released, 1);
	message_feed(m, (const uint8_t *)msg, 40);
	CHECK_EQ_U64(b.len, 0);
	CHECK_EQ_U64(c.len, 40);
	(void)message_view(m, MESSAGE_VIEW_FULL, &n);
	CHECK_EQ_U64(n, 40);
	CHECK(validate_ok(m, "tap 2"));
	/* free: the last one released too, every byte given back */
	message_free(m);
	CHECK_EQ_U64(c.released, 1);
	CHECK_EQ_U64(mem_in_use(MEM_MESSAGE), in_use0);
}

/* A big base64 attachment costs counters, not memory. */
static void test_big_attachment(void)
{
	static const char head[] =
		"Subject: big\nContent-Type: multipart/mixed; boundary=z\n\n--z\n"
		"Content-Type: text/plain\n\nsee attached\n--z\n"
		"Content-Type: application/zip; name=big.zip\nContent-Transfer-Encoding: base64\n\n";
	static const char tail[] = "--z--\n";
	char line[77];
	struct message *m = message_new(NULL, NULL, NULL);
	size_t mem_after_head, lines = 20 * 1024 * 1024 / 76;
	uint64_t peak0 = mem_peak(MEM_MESSAGE);

	CHECK(m != NULL);
	if (!m)
		return;
	memset(line, 'Q', 76);
	line[76] = '\n';
	message_feed(m, (const uint8_t *)head, sizeof(head) - 1);
	mem_after_head = message_memory(m);
	for (size_t i = 0; i < lines; i++)
		message_feed(m, (const uint8_t *)line, sizeof(line));
	message_feed(m, (const uint8_t *)tail, sizeof(tail) - 1);
	message_end(m);
	CHECK(validate_ok(m, "big attachment"));
	CHECK_EQ_U64(message_memory(m), mem_after_head);
	CHECK_EQ_U64(message_part_at(m, 2)->decoded_size, lines * 57);
	CHECK_STR(message_attachment(m, 0)->name, "big.zip");
	CHECK_EQ_U64(message_anomalies(m), 0);
	printf("big attachment: %zu MB base64 fed, %zu bytes held, peak MEM_MESSAGE %llu\n",
	       lines * 77 >> 20, message_memory(m),
	       (unsigned long long)(mem_peak(MEM_MESSAGE) > peak0 ?
				    mem_peak(MEM_MESSAGE) : peak0));
	message_free(m);
}

/* Nesting far past the limit, and a part flood: bounded work and memory. */
static void test_hostile(void)
{
	static char buf[1 << 16];
	size_t o = 0;
	struct message_limits lim;
	struct message *m;

	for (int d = 0; d < 200; d++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o,
				      "Content-Type: multipart/mixed; boundary=\"n%d\"\n\n--n%d\n", d, d);
	o += (size_t)snprintf(buf + o, sizeof(buf) - o, "\ndeep\n");
	m = message_new(NULL, NULL, NULL);
	CHECK(m != NULL);
	if (!m)
		return;
	message_feed(m, (const uint8_t *)buf, o);
	message_end(m);
	CHECK(validate_ok(m, "deep"));
	CHECK(message_anomalies(m) & (1ull << MESSAGE_ANOM_MIME_DEPTH));
	CHECK_EQ_U64(message_part_count(m), 17);
	message_free(m);

	o = (size_t)snprintf(buf, sizeof(buf), "Content-Type: multipart/mixed; boundary=p\n\n");
	while (o + 16 < sizeof(buf))
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, "--p\n\nx\n");
	message_limits_default(&lim);
	lim.max_parts = 10;
	m = message_new(&lim, NULL, NULL);
	CHECK(m != NULL);
	if (!m)
		return;
	message_feed(m, (const uint8_t *)buf, o);
	message_end(m);
	CHECK(validate_ok(m, "flood"));
	CHECK_EQ_U64(message_part_count(m), 10);
	CHECK(message_counters(m)->parts_dropped > 1000);
	message_free(m);
}

/* ---- corpus ----------------------------------------------------------------------------- */

static int corpus_file(const char *path, uint64_t *anoms, uint64_t *parts, uint64_t *rcvd,
		       uint64_t *hist)
{
	static uint8_t data[4 << 20];
	FILE *f = fopen(path, "rb");
	size_t n;
	struct message *m;
	const char *why = NULL;
	int ok;

	if (!f)
		return -1;
	n = fread(data, 1, sizeof(data), f);
	fclose(f);
	m = message_new(NULL, NULL, NULL);
	if (!m)
		return -1;
	/* uneven pieces, like packets */
	for (size_t o = 0, k = 1; o < n; o += k, k = k * 7 % 1461 + 1)
		message_feed(m, data + o, o + k <= n ? k : n - o);
	message_end(m);
	ok = message_validate(m, &why) == 0;
	if (!ok)
		fprintf(stderr, "corpus: %s: validate: %s\n", path, why);
	*anoms |= message_anomalies(m);
	*parts += message_part_count(m);
	*rcvd += message_received_count(m);
	for (int a = 0; a < MESSAGE_ANOM_MAX; a++)
		if (message_anomalies(m) & (1ull << a))
			hist[a]++;
	message_free(m);
	return ok ? 0 : 1;
}

static void test_corpus(void)
{
	char dir[1024], path[2048];
	const char *env = getenv("BW_CORPORA");
	static const char *const subs[] = { "bsd", "not" };
	uint64_t files = 0, bad = 0, anoms = 0, parts = 0, rcvd = 0, hist[MESSAGE_ANOM_MAX] = { 0 };

	for (int s = 0; s < 2; s++) {
		DIR *d;
		struct dirent *e;

		snprintf(dir, sizeof(dir), "%s/bounces/%s",
			 env ? env : BW_SOURCE_ROOT "/../shared/corpora", subs[s]);
		d = opendir(dir);
		if (!d)
			continue;
		while ((e = readdir(d))) {
			size_t l = strlen(e->d_name);

			if (l < 5 || strcmp(e->d_name + l - 4, ".eml") != 0)
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			files++;
			if (corpus_file(path, &anoms, &parts, &rcvd, hist) != 0)
				bad++;
		}
		closedir(d);
	}
	if (!files) {
		printf("corpus: skipped (no bounces corpus; set BW_CORPORA)\n");
		return;
	}
	CHECK_EQ_U64(bad, 0);
	printf("corpus: %llu messages, %llu parts, %llu Received headers, %llu failed\n",
	       (unsigned long long)files, (unsigned long long)parts, (unsigned long long)rcvd,
	       (unsigned long long)bad);
	for (int a = 0; a < MESSAGE_ANOM_MAX; a++)
		if (hist[a])
			printf("corpus:   %-22s %llu\n", message_anomaly_name((enum message_anomaly)a),
			       (unsigned long long)hist[a]);
}

int main(void)
{
	test_base64();
	test_qp();
	test_rfc2047();
	test_names();
	test_html();
	test_charsets();
	test_message_cases();
	test_body_length();
	test_reset_and_memory();
	test_tap_and_full_copy();
	test_big_attachment();
	test_hostile();
	test_corpus();
	return check_done();
}
