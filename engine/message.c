/* The message stage; see message.h for what it produces.
 *
 * Flow of one fed byte: message_feed() cuts the input into lines (or
 * max_line pieces) and line_in() routes each one. A line that matches an
 * open multipart boundary closes/opens parts (on_boundary()); otherwise it
 * belongs to the current entity: its header block (header_line()), the body
 * of a leaf (leaf_line()), or a preamble/epilogue/skipped part (dropped).
 *
 * Leaf body bytes go: transfer decoding (leaf_decoded()) -> charset to UTF-8
 * (mime_conv) -> CR LF to LF (text_out()) -> "rawbody", and either the HTML
 * renderer or nothing -> "body" (body_text()) -> text URI scanner.
 *
 * Open containers live on a frame stack (a multipart with its boundary, or a
 * message/rfc822 part around its inner message); at most one leaf is open at
 * a time, so one set of decoder states suffices.
 */
#include "message.h"

#include <errno.h>
#include <stdio.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <string.h>
#include <strings.h>

#include "html.h"
#include "mem.h"
#include "mime.h"

#define MESSAGE_BOUNDARY_MAX 200      /* RFC 2046 says 70; be generous */
#define RFC5322_LINE_MAX 998
#define ENT_CTYPE_MAX 1024
#define ENT_CTE_MAX 64

enum msg_state {
	ST_HEADERS = 1,      /* reading the header block of ent_part */
	ST_LEAF,             /* body of the leaf part m->leaf */
	ST_SKIP,             /* preamble, epilogue, or a part we do not record */
	ST_DONE,
};

enum leaf_mode {
	LEAF_COUNT = 1,      /* not text: decode only to count its size */
	LEAF_TEXT,
	LEAF_HTML,
	LEAF_OPAQUE,         /* not decoded at all (depth/part limits) */
};

enum frame_kind {
	FRAME_MULTIPART = 1,
	FRAME_RFC822,
};

struct frame {
	uint8_t kind;
	uint16_t blen;
	uint32_t part;
	uint64_t start;               /* FRAME_RFC822: m->pos where the inner message began */
	char boundary[MESSAGE_BOUNDARY_MAX];
};

struct message_buf {
	uint8_t *p;
	uint32_t len, cap, max;
};

struct hdr_slot {
	struct message_header h;
	uint32_t off_name, off_raw, off_value, off_decoded;
	uint32_t part;                /* MIME part the header belongs to */
};

/* A header store: the slots and the text they point into. */
struct hdr_table {
	struct message_buf store;
	struct hdr_slot *slots;
	uint32_t n, cap, max;
	/* not kept (nobody reads them), only counted against the limits, so
	 * a limit's anomaly does not depend on the rules loaded */
	uint32_t dry_n;
	size_t dry_len;
};

struct message {
	struct message_limits lim;
	const struct message_ops *ops;
	void *user;
	enum msg_state state;
	uint8_t ended;
	uint8_t headers_done;
	uint8_t line_cont;            /* the next piece continues a cut line */
	uint8_t at_start;             /* no line seen yet */
	uint8_t saw_crlf, saw_lf;
	uint8_t keep_full;            /* the tap asked for the raw copy */
	uint8_t no_uris;              /* no one reads the URI list: do not build it */
	uint8_t no_text;              /* no one reads the text views: produce none */
	uint8_t no_part_headers;      /* no one reads MIME parts' headers: count, do not keep */
	uint8_t no_headers;           /* no one reads the header list: keep only the fields */
	uint64_t cur_line_len;        /* of the logical line being cut */
	uint64_t pos;                 /* bytes of the lines routed so far (line ends 1) */
	uint64_t piece_len;           /* of the line being routed, its end included */
	uint64_t body_start;          /* pos of the message body's first byte (headers_done) */
	const struct message_tap *tap;
	void *tap_obj;

	struct message_buf line;      /* a line crossing feed calls */

	/* header block of the current entity */
	struct message_buf hdr;       /* "Name: value" of the header being read */
	uint8_t hdr_active;
	uint8_t hdr_cut;
	uint8_t hdr_folded;           /* the header being read has a continuation line */
	uint32_t hdr_colon;           /* offset of its name's colon in hdr */
	int32_t ent_part;             /* -1: not recorded */
	uint32_t ent_headers;
	uint16_t ent_ctype_len, ent_cte_len, ent_cdisp_len;
	uint8_t ent_have_ctype, ent_have_cte, ent_have_cdisp;
	char ent_ctype[ENT_CTYPE_MAX];
	char ent_cte[ENT_CTE_MAX];
	char ent_cdisp[ENT_CTYPE_MAX];

	/* top-level headers */
	struct message_buf hstore;
	struct message_buf scratch;   /* unfolded and decoded value of one header */
	struct hdr_slot *hdrs;
	uint32_t nhdrs, hdrs_cap;
	uint32_t hdrs_dry_n;          /* not kept (no_headers), counted against the limits */
	size_t hdrs_dry_len;
	int32_t field[MESSAGE_FIELD_MAX];
	int32_t first_received;
	uint32_t received;
	uint32_t to_count, cc_count;

	/* headers of the other MIME parts */
	struct hdr_table ph;

	/* MIME tree */
	struct message_part *parts;
	uint32_t nparts, parts_cap;
	uint32_t nframes;
	struct frame *frames;         /* max_depth of them, allocated on first need */

	/* the open leaf */
	int32_t leaf;
	enum leaf_mode leaf_mode;
	enum message_cte leaf_cte;
	uint8_t leaf_nl_pending;
	uint8_t leaf_cr_pending;
	uint8_t conv_open;
	struct mime_b64 b64;
	struct mime_qp qp;
	struct mime_conv conv;
	struct html *html;

	/* views */
	struct message_buf body, rawbody, full;
	uint8_t body_last, rawbody_last;
	struct message_buf tok;       /* text URI scanner token */
	uint8_t tok_cut;
	struct message_buf uristore;
	uint32_t *uri_off;            /* pairs: offset, length */
	uint32_t nuris, uris_cap;

	uint64_t anomalies;
	uint64_t allocs;
	struct message_counters c;
};

static const char *const anomaly_names[MESSAGE_ANOM_MAX] = {
	[MESSAGE_ANOM_HEADER_TOO_LONG] = "header_too_long",
	[MESSAGE_ANOM_TOO_MANY_HEADERS] = "too_many_headers",
	[MESSAGE_ANOM_HEADER_STORE_FULL] = "header_store_full",
	[MESSAGE_ANOM_BAD_HEADER_LINE] = "bad_header_line",
	[MESSAGE_ANOM_8BIT_IN_HEADER] = "8bit_in_header",
	[MESSAGE_ANOM_NUL_BYTE] = "nul_byte",
	[MESSAGE_ANOM_LONG_LINE] = "long_line",
	[MESSAGE_ANOM_MIME_DEPTH] = "mime_depth",
	[MESSAGE_ANOM_TOO_MANY_PARTS] = "too_many_parts",
	[MESSAGE_ANOM_MISSING_BOUNDARY] = "missing_boundary",
	[MESSAGE_ANOM_MISSING_BOUNDARY_END] = "missing_boundary_end",
	[MESSAGE_ANOM_BAD_BASE64] = "bad_base64",
	[MESSAGE_ANOM_BAD_QP] = "bad_qp",
	[MESSAGE_ANOM_BAD_CTE] = "bad_cte",
	[MESSAGE_ANOM_CHARSET_UNKNOWN] = "charset_unknown",
	[MESSAGE_ANOM_BAD_CHARSET_DATA] = "bad_charset_data",
	[MESSAGE_ANOM_BAD_ENCODED_WORD] = "bad_encoded_word",
	[MESSAGE_ANOM_BODY_TRUNCATED] = "body_truncated",
	[MESSAGE_ANOM_TOO_MANY_URIS] = "too_many_uris",
	[MESSAGE_ANOM_NO_HEADERS] = "no_headers",
	[MESSAGE_ANOM_HEADERS_UNTERMINATED] = "headers_unterminated",
	[MESSAGE_ANOM_BARE_CR_LF_MIX] = "crlf_lf_mix",
	[MESSAGE_ANOM_FULL_TRUNCATED] = "full_truncated",
	[MESSAGE_ANOM_PART_HEADERS_CUT] = "part_headers_cut",
};

static const char *const field_names[MESSAGE_FIELD_MAX] = {
	[MESSAGE_FIELD_FROM] = "from",
	[MESSAGE_FIELD_TO] = "to",
	[MESSAGE_FIELD_CC] = "cc",
	[MESSAGE_FIELD_SUBJECT] = "subject",
	[MESSAGE_FIELD_MESSAGE_ID] = "message-id",
	[MESSAGE_FIELD_DATE] = "date",
	[MESSAGE_FIELD_IN_REPLY_TO] = "in-reply-to",
	[MESSAGE_FIELD_REFERENCES] = "references",
	[MESSAGE_FIELD_AUTO_SUBMITTED] = "auto-submitted",
	[MESSAGE_FIELD_PRECEDENCE] = "precedence",
	[MESSAGE_FIELD_LIST_ID] = "list-id",
	[MESSAGE_FIELD_CONTENT_TYPE] = "content-type",
	[MESSAGE_FIELD_RETURN_PATH] = "return-path",
	[MESSAGE_FIELD_MIME_VERSION] = "mime-version",
	[MESSAGE_FIELD_REPLY_TO] = "reply-to",
	[MESSAGE_FIELD_SENDER] = "sender",
};

static void line_in(struct message *m, const uint8_t *p, size_t n, int eol, int cont);

static inline void anomaly(struct message *m, enum message_anomaly a)
{
	m->anomalies |= 1ull << a;
}

/* ---- bounded buffers -------------------------------------------------------- */

/* Makes b hold at least need bytes (need <= b->max). Returns 0, or -ENOMEM
 * (counted) leaving b as it was. */
static int buf_grow(struct message *m, struct message_buf *b, size_t need)
{
	size_t nc;
	uint8_t *p;

	if (need <= b->cap)
		return 0;
	nc = b->cap ? (size_t)b->cap * 2 : 256;
	while (nc < need)
		nc *= 2;
	if (nc > b->max)
		nc = b->max;
	if (nc < need)
		return -ENOMEM;
	p = mem_realloc(MEM_MESSAGE, b->p, nc);
	if (!p) {
		m->c.alloc_fail++;
		return -ENOMEM;
	}
	m->allocs++;
	b->p = p;
	b->cap = (uint32_t)nc;
	return 0;
}

/* Appends up to n bytes, as many as b->max allows; returns how many. */
static size_t buf_append(struct message *m, struct message_buf *b, const void *p, size_t n)
{
	size_t room = b->max - b->len;

	if (n > room)
		n = room;
	if (n == 0 || buf_grow(m, b, (size_t)b->len + n) < 0)
		return 0;
	memcpy(b->p + b->len, p, n);
	b->len += (uint32_t)n;
	return n;
}

static void buf_free(struct message_buf *b)
{
	mem_free(MEM_MESSAGE, b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* ---- limits ----------------------------------------------------------------- */

void message_limits_default(struct message_limits *lim)
{
	lim->max_line = 8192;
	lim->max_header_bytes = 64 * 1024;
	lim->max_headers = 1000;
	lim->max_header_store = 256 * 1024;
	lim->max_depth = 16;
	lim->max_parts = 256;
	lim->max_body = 256 * 1024;
	lim->max_rawbody = 256 * 1024;
	lim->max_uris = 256;
	lim->max_uri_len = 2048;
	lim->max_full = 256 * 1024;
	lim->max_part_headers = 1000;
	lim->max_part_header_store = 128 * 1024;
	lim->flags = MESSAGE_F_BODY_SUBJECT;
}

static void limits_fill(struct message_limits *l, const struct message_limits *in)
{
	struct message_limits d;

	message_limits_default(&d);
	if (!in) {
		*l = d;
		return;
	}
	*l = *in;
#define DEF(f) do { if (!l->f) l->f = d.f; } while (0)
	DEF(max_line);
	DEF(max_header_bytes);
	DEF(max_headers);
	DEF(max_header_store);
	DEF(max_depth);
	DEF(max_parts);
	DEF(max_body);
	DEF(max_rawbody);
	DEF(max_uris);
	DEF(max_uri_len);
	DEF(max_full);
	DEF(max_part_headers);
	DEF(max_part_header_store);
#undef DEF
	if (l->max_line < 80)
		l->max_line = 80;         /* a boundary line must fit */
	if (l->max_line > (1u << 24))
		l->max_line = 1u << 24;
	if (l->max_depth > MESSAGE_DEPTH_MAX)
		l->max_depth = MESSAGE_DEPTH_MAX;
	if (l->max_header_bytes > (1u << 24))
		l->max_header_bytes = 1u << 24;
	if (l->max_header_store > (1u << 28))
		l->max_header_store = 1u << 28;
	if (l->max_body > (1u << 30))
		l->max_body = 1u << 30;
	if (l->max_rawbody > (1u << 30))
		l->max_rawbody = 1u << 30;
	if (l->max_uri_len > (1u << 16))
		l->max_uri_len = 1u << 16;
	if (l->max_uris > (1u << 16))
		l->max_uris = 1u << 16;
	if (l->max_parts > (1u << 16))
		l->max_parts = 1u << 16;
	if (l->max_headers > (1u << 20))
		l->max_headers = 1u << 20;
	if (l->max_full > (1u << 30))
		l->max_full = 1u << 30;
	if (l->max_part_headers > (1u << 20))
		l->max_part_headers = 1u << 20;
	if (l->max_part_header_store > (1u << 28))
		l->max_part_header_store = 1u << 28;
}

/* ---- views -------------------------------------------------------------------- */

static const struct message_part *cur_part(const struct message *m)
{
	return m->leaf >= 0 ? &m->parts[m->leaf] : (m->nparts ? &m->parts[0] : NULL);
}

/* One piece of the body or rawbody view: streamed, then kept up to the cap. */
static void view_out(struct message *m, enum message_view v, const uint8_t *p, size_t n)
{
	struct message_buf *b = v == MESSAGE_VIEW_BODY ? &m->body : &m->rawbody;

	if (n == 0 || m->no_text)
		return;
	if (v == MESSAGE_VIEW_BODY) {
		m->c.body_bytes += n;
		m->body_last = p[n - 1];
	} else {
		m->c.rawbody_bytes += n;
		m->rawbody_last = p[n - 1];
	}
	if (m->ops && m->ops->on_text)
		m->ops->on_text(m->user, cur_part(m), v, p, n);
	if (m->lim.flags & MESSAGE_F_NO_COPIES)
		return;
	{
		size_t k = buf_append(m, b, p, n);

		if (k < n) {
			if (v == MESSAGE_VIEW_BODY)
				m->c.body_cut += n - k;
			else
				m->c.rawbody_cut += n - k;
			anomaly(m, MESSAGE_ANOM_BODY_TRUNCATED);
		}
	}
}

/* Adds a URI: cut to max_uri_len, de-duplicated against the kept ones,
 * reported through on_uri even when the list is full. */
static void uri_add(struct message *m, const uint8_t *p, size_t n)
{
	if (n == 0)
		return;
	if (n > m->lim.max_uri_len) {
		n = m->lim.max_uri_len;
		m->c.uris_cut++;
	}
	for (uint32_t i = 0; i < m->nuris; i++)
		if (m->uri_off[2 * i + 1] == n &&
		    memcmp(m->uristore.p + m->uri_off[2 * i], p, n) == 0)
			return;
	m->c.uris++;
	if (m->nuris >= m->lim.max_uris) {
		m->c.uris_dropped++;
		anomaly(m, MESSAGE_ANOM_TOO_MANY_URIS);
	} else {
		if (m->nuris == m->uris_cap) {
			uint32_t nc = m->uris_cap ? m->uris_cap * 2 : 8;
			uint32_t *q;

			if (nc > m->lim.max_uris)
				nc = m->lim.max_uris;
			q = mem_realloc(MEM_MESSAGE, m->uri_off, (size_t)nc * 2 * sizeof(*q));
			if (!q) {
				m->c.alloc_fail++;
				goto report;
			}
			m->allocs++;
			m->uri_off = q;
			m->uris_cap = nc;
		}
		if (buf_grow(m, &m->uristore, (size_t)m->uristore.len + n + 1) == 0) {
			m->uri_off[2 * m->nuris] = m->uristore.len;
			m->uri_off[2 * m->nuris + 1] = (uint32_t)n;
			memcpy(m->uristore.p + m->uristore.len, p, n);
			m->uristore.p[m->uristore.len + n] = '\0';
			m->uristore.len += (uint32_t)(n + 1);
			m->nuris++;
		}
	}
report:
	if (m->ops && m->ops->on_uri)
		m->ops->on_uri(m->user, cur_part(m), (const char *)p, n);
}

/* Whether p[0..n) holds a byte over 0x7f. */
static int has_high_bit(const uint8_t *p, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		if (w & 0x8080808080808080ull)
			return 1;
	}
	for (; i < n; i++)
		if (p[i] & 0x80)
			return 1;
	return 0;
}

static int ci_prefix(const uint8_t *p, size_t n, const char *lower, size_t k)
{
	if (n < k)
		return 0;
	for (size_t i = 0; i < k; i++) {
		uint8_t c = p[i];

		if (c >= 'A' && c <= 'Z')
			c = (uint8_t)(c - 'A' + 'a');
		if (c != (uint8_t)lower[i])
			return 0;
	}
	return 1;
}

/* Bytes that end the local part or the domain of a bare address in text
 * (SpamAssassin's tbirdenddelimemail, with '@' for the local part). */
static int mail_delim(uint8_t c)
{
	return c <= ' ' || c >= 0x7f || strchr("><\"`}]{[|,('", c) != NULL;
}

/* A bare e-mail address in text becomes a mailto: URI, as SpamAssassin's
 * get_uri_list linkifies it (after Thunderbird): the local part runs back
 * from the '@' to a delimiter, the domain forward to one; a ')' ends it;
 * trailing punctuation is dropped; "mail:"-like prefixes are stripped; the
 * domain needs a dot and a last label of letters only (SpamAssassin checks
 * its list of valid TLDs). */
static void tok_mail(struct message *m, const uint8_t *t, size_t n, int cut)
{
	const uint8_t *at = memchr(t, '@', n);
	size_t a, s, e, k, dot;
	uint8_t buf[7 + 512];

	if (!at)
		return;
	a = (size_t)(at - t);
	for (s = a; s > 0 && !mail_delim(t[s - 1]) && t[s - 1] != '@'; s--)
		;
	for (e = a + 1; e < n && !mail_delim(t[e]); e++)
		if (t[e] == ')')
			break;
	while (e > a + 1 && strchr("-~!@#^&*()_+=:;'?,.", t[e - 1]))
		e--;
	/* "mail:", "e-mail:", "skype:" and the like before the address */
	for (k = s; k < a && t[k] != ':'; k++)
		;
	if (k < a) {
		static const char *const pre[] = { "", "mail", "email", "e-mail", "emai", "skype" };
		size_t plen = k - s;

		for (size_t i = 0; i < sizeof(pre) / sizeof(pre[0]); i++)
			if (strlen(pre[i]) == plen && ci_prefix(t + s, plen, pre[i], plen)) {
				s = k;
				while (s < a && t[s] == ':')
					s++;
				break;
			}
	}
	if (s == a || e <= a + 1 || e - s > sizeof(buf) - 7)
		return;
	/* a dot after at least one domain byte, and a last label of letters */
	for (dot = e; dot > a + 2 && t[dot - 1] != '.'; dot--)
		;
	if (dot <= a + 2 || e - dot < 2)
		return;
	for (k = dot; k < e; k++)
		if (!((t[k] | 0x20) >= 'a' && (t[k] | 0x20) <= 'z'))
			return;
	memcpy(buf, "mailto:", 7);
	memcpy(buf + 7, t + s, e - s);
	if (cut)
		m->c.uris_cut++;
	uri_add(m, buf, 7 + e - s);
}

/* A token of the text URI scanner, t[0..n) (cut: it lost bytes past
 * max_uri_len): reports a URI in it. */
static void tok_match(struct message *m, const uint8_t *t, size_t n, int cut)
{
	static const struct { const char *s; size_t len; } schemes[] = {
		{ "http://", 7 }, { "https://", 8 }, { "ftp://", 6 },
		{ "mailto:", 7 }, { "www.", 4 },
	};

	/* most tokens are words: every candidate holds a ':' or a '.' */
	if (n < 5 || (!memchr(t, ':', n) && !memchr(t, '.', n)))
		return;
	for (size_t s = 0; s + 4 <= n; s++) {
		uint8_t c = t[s] | 0x20;

		if (c != 'h' && c != 'f' && c != 'm' && c != 'w')
			continue;
		for (int k = 0; k < 5; k++) {
			size_t sl = schemes[k].len, e = n;

			if (!ci_prefix(t + s, n - s, schemes[k].s, sl))
				continue;
			/* "www" must not be the tail of a word ("awww.") */
			if (k == 4 && s > 0 && ((t[s - 1] | 0x20) >= 'a' && (t[s - 1] | 0x20) <= 'z'))
				continue;
			while (e > s + sl && strchr(".,;:!?)]}'\"*", t[e - 1]))
				e--;
			if (e <= s + sl)
				continue;
			if (k == 3 && !memchr(t + s + sl, '@', e - s - sl))
				continue;
			if (k == 4 && !memchr(t + s + sl, '.', e - s - sl))
				continue;
			if (cut)
				m->c.uris_cut++;
			uri_add(m, t + s, e - s);
			return;
		}
	}
	tok_mail(m, t, n, cut);
}

/* The token collected by the text URI scanner ended: report a URI in it. */
static void tok_end(struct message *m)
{
	size_t n = m->tok.len;

	m->tok.len = 0;
	tok_match(m, m->tok.p, n, m->tok_cut);
	m->tok_cut = 0;
}

/* Bytes that end a token for the text URI scanner (1): controls, space and
 * <>"'`{}|\^ DEL; and the bytes a URI candidate needs (2): ':' and '.'. */
static const uint8_t uri_class[256] = {
	[0 ... 32] = 1, ['<'] = 1, ['>'] = 1, ['"'] = 1, ['\''] = 1, ['`'] = 1,
	['{'] = 1, ['}'] = 1, ['|'] = 1, ['\\'] = 1, ['^'] = 1, [0x7f] = 1,
	[':'] = 2, ['.'] = 2,
};

/* Appends p[0..n) to the token carried between pieces (up to max_uri_len:
 * the rest is cut). */
static void tok_push(struct message *m, const uint8_t *p, size_t n)
{
	size_t room = m->tok.max - m->tok.len, k = n < room ? n : room;

	if (k && (size_t)m->tok.len + k > m->tok.cap &&
	    buf_grow(m, &m->tok, (size_t)m->tok.len + k) < 0)
		k = m->tok.cap - m->tok.len;
	if (k) {
		memcpy(m->tok.p + m->tok.len, p, k);
		m->tok.len += (uint32_t)k;
	}
	if (k < n)
		m->tok_cut = 1;
}

/* Position of the first ':' or '.' (the bytes a URI candidate needs) in
 * p[i..n), or n. */
static size_t find_colon_dot(const uint8_t *p, size_t i, size_t n)
{
#if defined(__SSE2__)
	const __m128i colon = _mm_set1_epi8(':'), dot = _mm_set1_epi8('.');

	for (; i + 16 <= n; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
		unsigned mk = (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, colon),
								       _mm_cmpeq_epi8(v, dot)));

		if (mk)
			return i + (size_t)__builtin_ctz(mk);
	}
#endif
	for (; i < n; i++)
		if (p[i] == ':' || p[i] == '.')
			return i;
	return n;
}

/* Tokens inside the piece are looked at in place; only one running into
 * the piece's end is copied (into m->tok) to be continued. Only tokens
 * holding a ':' or a '.' can be URIs: the scan jumps from one such byte to
 * the next and finds the token around it, so words are never walked. */
static void uri_scan(struct message *m, const uint8_t *p, size_t n)
{
	size_t i = 0, first, tail, pos;
	int cut0, has_tail;

	if (n == 0)
		return;
	if (m->tok.len) {
		while (i < n && uri_class[p[i]] != 1)
			i++;
		tok_push(m, p, i);
		if (i == n)
			return;
		tok_end(m);
	}
	while (i < n && uri_class[p[i]] == 1)
		i++;
	if (i == n)
		return;
	first = i;
	/* the token running into the end (if any) starts at tail */
	has_tail = uri_class[p[n - 1]] != 1;
	tail = n;
	if (has_tail)
		while (tail > first && uri_class[p[tail - 1]] != 1)
			tail--;
	/* the first token takes the cut flag carried in; the others start
	 * afresh (as a token-by-token walk would) */
	cut0 = m->tok_cut;
	pos = first;
	while (pos < tail) {
		size_t c = find_colon_dot(p, pos, tail), s, e, len;
		int cut;

		if (c >= tail)
			break;
		s = c;
		while (s > pos && uri_class[p[s - 1]] != 1)
			s--;
		e = c + 1;
		while (uri_class[p[e]] != 1)
			e++;        /* p[tail - 1] ends every token before tail */
		len = e - s;
		cut = s == first ? cut0 : 0;
		if (len > m->tok.max) {
			len = m->tok.max;
			cut = 1;
		}
		if (len >= 5)
			tok_match(m, p + s, len, cut);
		pos = e;
	}
	if (has_tail) {
		m->tok_cut = tail == first ? cut0 : 0;
		tok_push(m, p + tail, n - tail);
	} else {
		m->tok_cut = 0;
	}
}

/* Rendered text: the body view, then the URI scanner. */
static void body_text(struct message *m, const uint8_t *p, size_t n)
{
	view_out(m, MESSAGE_VIEW_BODY, p, n);
	if (!m->no_uris)
		uri_scan(m, p, n);
}

static void html_text_cb(void *ctx, const uint8_t *p, size_t n)
{
	body_text(ctx, p, n);
}

static void html_uri_cb(void *ctx, const uint8_t *p, size_t n)
{
	struct message *m = ctx;

	if (!m->no_uris)
		uri_add(m, p, n);
}

/* UTF-8 text of a leaf with CR LF already folded to LF. */
static void text_route(struct message *m, const uint8_t *p, size_t n)
{
	if (n == 0 || m->no_text)
		return;
	view_out(m, MESSAGE_VIEW_RAWBODY, p, n);
	if (m->leaf_mode == LEAF_HTML)
		html_feed(m->html, p, n);
	else
		body_text(m, p, n);
}

/* Converted text of a leaf: folds CR LF to LF (a CR at the end of a piece
 * waits for the next one). */
static void text_out(void *ctx, const uint8_t *p, size_t n)
{
	struct message *m = ctx;
	size_t s = 0;

	if (n == 0)
		return;
	if (m->leaf_cr_pending) {
		m->leaf_cr_pending = 0;
		if (p[0] != '\n')
			text_route(m, (const uint8_t *)"\r", 1);
	}
	for (const uint8_t *q; s < n && (q = memchr(p + s, '\r', n - s)) != NULL;) {
		size_t i = (size_t)(q - p);

		text_route(m, p + s, i - s);
		s = i + 1;
		if (i + 1 == n)
			m->leaf_cr_pending = 1;
		else if (p[i + 1] != '\n')
			text_route(m, (const uint8_t *)"\r", 1);
	}
	text_route(m, p + s, n - s);
}

/* ---- leaves ------------------------------------------------------------------ */

static void part_end(struct message *m, uint32_t idx)
{
	/* an inner message is not transfer-encoded: its size is its bytes */
	if (m->parts[idx].flags & MESSAGE_PART_RFC822)
		m->parts[idx].decoded_size = m->parts[idx].raw_size;
	m->parts[idx].flags |= MESSAGE_PART_ENDED;
	if (m->ops && m->ops->on_part_end)
		m->ops->on_part_end(m->user, &m->parts[idx]);
}

/* Where converted text goes when no one reads the text views: the
 * conversion still runs, so its anomalies do not depend on the rules. */
static void text_drop(void *ctx, const uint8_t *p, size_t n)
{
	(void)ctx;
	(void)p;
	(void)n;
}

/* Transfer-decoded bytes of the open leaf. */
static void leaf_decoded(struct message *m, const uint8_t *p, size_t n)
{
	m->parts[m->leaf].decoded_size += n;
	if (m->leaf_mode != LEAF_TEXT && m->leaf_mode != LEAF_HTML)
		return;
	if (!m->no_text)
		mime_conv_feed(&m->conv, p, n, text_out, m);
	else if (m->conv.cs == MIME_CS_ICONV)
		/* only iconv can find bytes invalid in their charset (the
		 * UTF-8 pass-through and the latin-1/cp1252 tables cannot) */
		mime_conv_feed(&m->conv, p, n, text_drop, m);
}

/* Lines up to this long are handed on together with the newline pending
 * before them (copied after it), so each line takes one trip through the
 * charset, text and HTML stages instead of two. */
#define LEAF_JOIN_MAX 1024

/* One body line (or piece) of the open leaf. */
static void leaf_line(struct message *m, const uint8_t *p, size_t n, int eol)
{
	struct message_part *part = &m->parts[m->leaf];
	int nl;

	part->raw_size += n + (eol ? 1 : 0);
	if (m->leaf_mode == LEAF_OPAQUE)
		return;
	nl = m->leaf_nl_pending;
	m->leaf_nl_pending = 0;
	switch (m->leaf_cte) {
	case MESSAGE_CTE_BASE64: {
		uint8_t out[MIME_B64_OUT(1024)];

		if (nl)
			leaf_decoded(m, (const uint8_t *)"\n", 1);
		while (n) {
			size_t k = n > 1024 ? 1024 : n;
			size_t w = mime_b64_decode(&m->b64, p, k, out);

			leaf_decoded(m, out, w);
			p += k;
			n -= k;
		}
		break;
	}
	case MESSAGE_CTE_QP: {
		/* out[0] is for the pending newline */
		uint8_t out[1 + MIME_QP_OUT(1024)];
		int hard = 0;

		do {
			size_t k = n > 1024 ? 1024 : n;
			int last = k == n;
			size_t w = mime_qp_decode(&m->qp, p, k, eol && last, out + 1, &hard);

			if (nl) {
				out[0] = '\n';
				leaf_decoded(m, out, w + 1);
				nl = 0;
			} else {
				leaf_decoded(m, out + 1, w);
			}
			p += k;
			n -= k;
		} while (n);
		if (hard)
			m->leaf_nl_pending = 1;
		break;
	}
	default:
		if ((m->leaf_mode != LEAF_TEXT && m->leaf_mode != LEAF_HTML) ||
		    (m->no_text && m->conv.cs != MIME_CS_ICONV)) {
			/* the bytes go nowhere (leaf_decoded would only count
			 * them): count them here, without joining the newline */
			part->decoded_size += n + (nl ? 1 : 0);
		} else if (nl && n <= LEAF_JOIN_MAX) {
			uint8_t buf[1 + LEAF_JOIN_MAX];

			buf[0] = '\n';
			memcpy(buf + 1, p, n);
			leaf_decoded(m, buf, n + 1);
		} else {
			if (nl)
				leaf_decoded(m, (const uint8_t *)"\n", 1);
			leaf_decoded(m, p, n);
		}
		if (eol)
			m->leaf_nl_pending = 1;
		break;
	}
}

/* Closes the open leaf. at_boundary: the line end before a boundary belongs
 * to the boundary (RFC 2046), so a pending newline is dropped. */
static void leaf_end(struct message *m, int at_boundary)
{
	uint8_t out[4];
	size_t w;

	if (m->leaf < 0)
		return;
	if (m->leaf_mode != LEAF_OPAQUE) {
		if (m->leaf_nl_pending && !at_boundary)
			leaf_decoded(m, (const uint8_t *)"\n", 1);
		if (m->leaf_cte == MESSAGE_CTE_BASE64) {
			w = mime_b64_finish(&m->b64, out);
			leaf_decoded(m, out, w);
			m->c.base64_bad_chars += m->b64.bad;
			m->c.base64_partial += m->b64.partial;
			if (m->b64.bad || m->b64.partial)
				anomaly(m, MESSAGE_ANOM_BAD_BASE64);
		} else if (m->leaf_cte == MESSAGE_CTE_QP) {
			w = mime_qp_finish(&m->qp, out);
			leaf_decoded(m, out, w);
			m->c.qp_bad += m->qp.bad;
			if (m->qp.bad)
				anomaly(m, MESSAGE_ANOM_BAD_QP);
		}
	}
	m->leaf_nl_pending = 0;
	if (m->conv_open) {
		mime_conv_finish(&m->conv, m->no_text ? text_drop : text_out, m);
		m->c.charset_bad_bytes += m->conv.bad;
		if (m->conv.bad)
			anomaly(m, MESSAGE_ANOM_BAD_CHARSET_DATA);
		mime_conv_close(&m->conv);
		m->conv_open = 0;
	}
	if (m->leaf_cr_pending) {
		m->leaf_cr_pending = 0;
		text_route(m, (const uint8_t *)"\r", 1);
	}
	if (m->leaf_mode == LEAF_HTML) {
		html_finish(m->html);
		m->c.html_tags += m->html->c.tags;
		m->c.html_tags_cut += m->html->c.tags_truncated;
	}
	if (m->leaf_mode == LEAF_TEXT || m->leaf_mode == LEAF_HTML) {
		if (m->tok.len)
			tok_end(m);
		m->tok_cut = 0;
	}
	part_end(m, (uint32_t)m->leaf);
	m->leaf = -1;
	m->state = ST_SKIP;
}

/* Opens part idx as the leaf, in mode. */
static void leaf_begin(struct message *m, uint32_t idx, enum leaf_mode mode)
{
	struct message_part *part = &m->parts[idx];

	m->leaf = (int32_t)idx;
	m->leaf_mode = mode;
	m->leaf_cte = part->cte;
	m->leaf_nl_pending = 0;
	m->leaf_cr_pending = 0;
	m->state = ST_LEAF;
	mime_b64_init(&m->b64);
	mime_qp_init(&m->qp);
	if (mode != LEAF_TEXT && mode != LEAF_HTML)
		return;
	if (mode == LEAF_HTML) {
		if (!m->html) {
			m->html = mem_alloc(MEM_MESSAGE, sizeof(*m->html));
			if (!m->html) {
				m->c.alloc_fail++;
				m->leaf_mode = LEAF_TEXT;  /* degrade: tags stay in "body" */
			} else {
				m->allocs++;
			}
		}
		if (m->html)
			html_init(m->html, html_text_cb, html_uri_cb, m);
	}
	if (mime_conv_open(&m->conv, part->charset, strlen(part->charset)) < 0) {
		m->c.charset_unknown++;
		anomaly(m, MESSAGE_ANOM_CHARSET_UNKNOWN);
	}
	m->conv_open = 1;
	/* parts are separated by a line break in the text views */
	if (m->body_last && m->body_last != '\n')
		view_out(m, MESSAGE_VIEW_BODY, (const uint8_t *)"\n", 1);
	if (m->rawbody_last && m->rawbody_last != '\n')
		view_out(m, MESSAGE_VIEW_RAWBODY, (const uint8_t *)"\n", 1);
}

/* ---- entities and parts -------------------------------------------------------- */

/* Records a new part and makes it the entity whose headers come next; over
 * max_parts the entity is skipped (counted) up to the next boundary. */
static void entity_begin(struct message *m, int32_t parent, uint16_t depth)
{
	struct message_part *part;

	m->hdr_active = 0;
	m->hdr_cut = 0;
	m->ent_headers = 0;
	m->ent_have_ctype = m->ent_have_cte = m->ent_have_cdisp = 0;
	m->ent_ctype_len = m->ent_cte_len = m->ent_cdisp_len = 0;
	if (m->nparts >= m->lim.max_parts) {
		m->c.parts_dropped++;
		anomaly(m, MESSAGE_ANOM_TOO_MANY_PARTS);
		goto skip;
	}
	switch (mem_grow(MEM_MESSAGE, (void **)&m->parts, &m->parts_cap, m->nparts + 1,
			 sizeof(*m->parts), 4, m->lim.max_parts)) {
	case -1:
		m->c.alloc_fail++;
		goto skip;
	case 1:
		m->allocs++;
		break;
	}
	part = &m->parts[m->nparts];
	memset(part, 0, sizeof(*part));
	part->index = m->nparts;
	part->parent = parent;
	part->depth = depth;
	m->ent_part = (int32_t)m->nparts++;
	m->c.parts++;
	m->state = ST_HEADERS;
	return;
skip:
	m->ent_part = -1;
	m->state = ST_SKIP;
}

static void copy_lower(char *dst, size_t cap, const char *src, size_t n)
{
	size_t k = 0;

	for (size_t i = 0; i < n && k + 1 < cap; i++) {
		char c = src[i];

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		dst[k++] = c;
	}
	dst[k] = '\0';
}

static enum message_cte cte_parse(const char *v, size_t n)
{
	char t[ENT_CTE_MAX];
	size_t s = 0;

	while (s < n && (v[s] == ' ' || v[s] == '\t'))
		s++;
	while (n > s && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == ';'))
		n--;
	copy_lower(t, sizeof(t), v + s, n - s);
	if (t[0] == '\0' || strcmp(t, "7bit") == 0 || strcmp(t, "8bit") == 0 ||
	    strcmp(t, "binary") == 0)
		return MESSAGE_CTE_7BIT;
	if (strcmp(t, "quoted-printable") == 0)
		return MESSAGE_CTE_QP;
	if (strcmp(t, "base64") == 0)
		return MESSAGE_CTE_BASE64;
	return MESSAGE_CTE_UNKNOWN;
}

static void hdr_stats_add(struct message *m, const struct mime_hdr_stats *st)
{
	m->c.encoded_words += st->words;
	m->c.encoded_words_bad += st->bad_words;
	m->c.charset_unknown += st->charset_unknown;
	m->c.charset_bad_bytes += st->bad_seq;
	if (st->bad_words)
		anomaly(m, MESSAGE_ANOM_BAD_ENCODED_WORD);
	if (st->charset_unknown)
		anomaly(m, MESSAGE_ANOM_CHARSET_UNKNOWN);
	if (st->bad_seq)
		anomaly(m, MESSAGE_ANOM_BAD_CHARSET_DATA);
}

/* Makes sure the frame stack exists; returns 0 or -ENOMEM (counted). */
static int frames_ensure(struct message *m)
{
	if (m->frames)
		return 0;
	m->frames = mem_alloc(MEM_MESSAGE, (size_t)m->lim.max_depth * sizeof(*m->frames));
	if (!m->frames) {
		m->c.alloc_fail++;
		return -ENOMEM;
	}
	m->allocs++;
	return 0;
}

/* The header block of the current entity ended: decides what the entity is
 * (container, inner message, or leaf) and opens it. */
static void entity_headers_done(struct message *m)
{
	struct mime_params mp;
	struct mime_hdr_stats st;
	struct message_part *part;
	const char *v;
	size_t vl;
	int parent_digest = 0, text, attach;
	uint32_t idx;

	if (m->ent_part < 0) {
		m->state = ST_SKIP;
		return;
	}
	idx = (uint32_t)m->ent_part;
	part = &m->parts[idx];
	part->header_count = m->ent_headers;
	memset(&st, 0, sizeof(st));
	if (part->parent >= 0 &&
	    strcmp(m->parts[part->parent].type, "multipart/digest") == 0)
		parent_digest = 1;

	mime_params_parse(&mp, m->ent_ctype, m->ent_have_ctype ? m->ent_ctype_len : 0);
	if (m->ent_have_ctype && strchr(mp.value, '/') && mp.value[0] != '/')
		copy_lower(part->type, sizeof(part->type), mp.value, strlen(mp.value));
	else
		strcpy(part->type, parent_digest ? "message/rfc822" : "text/plain");
	v = mime_param(&mp, "charset", &vl);
	if (v)
		copy_lower(part->charset, sizeof(part->charset), v, vl);
	mime_params_filename(&mp, "name", part->name, sizeof(part->name), &st);
	if (m->ent_have_cte) {
		part->cte = cte_parse(m->ent_cte, m->ent_cte_len);
		if (part->cte == MESSAGE_CTE_UNKNOWN)
			anomaly(m, MESSAGE_ANOM_BAD_CTE);
	}

	if (strncmp(part->type, "multipart/", 10) == 0) {
		v = mime_param(&mp, "boundary", &vl);
		part->flags |= MESSAGE_PART_MULTIPART;
		if (!v || vl == 0 || vl > MESSAGE_BOUNDARY_MAX) {
			anomaly(m, MESSAGE_ANOM_MISSING_BOUNDARY);
			part->flags &= (uint16_t)~MESSAGE_PART_MULTIPART;
			part->flags |= MESSAGE_PART_TEXT;
			goto root_done;
		}
		if (part->depth + 1u > m->lim.max_depth) {
			anomaly(m, MESSAGE_ANOM_MIME_DEPTH);
			m->c.depth_hits++;
			part->flags |= MESSAGE_PART_OPAQUE;
			goto root_done;
		}
		if (frames_ensure(m) < 0) {
			part->flags |= MESSAGE_PART_OPAQUE;
			goto root_done;
		}
		{
			struct frame *f = &m->frames[m->nframes++];

			f->kind = FRAME_MULTIPART;
			f->part = idx;
			f->blen = (uint16_t)vl;
			memcpy(f->boundary, v, vl);
		}
		goto root_done;
	}
	/* the ctype parameters are done with: reuse mp for the disposition;
	 * its filename wins over the Content-Type name */
	mime_params_parse(&mp, m->ent_cdisp, m->ent_have_cdisp ? m->ent_cdisp_len : 0);
	attach = strcmp(mp.value, "attachment") == 0;
	{
		char fname[MESSAGE_NAME_MAX];

		if (mime_params_filename(&mp, "filename", fname, sizeof(fname), &st))
			memcpy(part->name, fname, sizeof(fname));
	}
	/* a message/rfc822 part is an inner message, unless encoded (then it
	 * is an attachment like any other). Either way it is listed as an
	 * attachment (a bounce's returned message), sized when it ends */
	if ((strcmp(part->type, "message/rfc822") == 0 ||
	     strcmp(part->type, "message/global") == 0) &&
	    (part->cte == MESSAGE_CTE_7BIT || part->cte == MESSAGE_CTE_UNKNOWN)) {
		part->flags |= MESSAGE_PART_RFC822 | MESSAGE_PART_ATTACHMENT;
		if (part->depth + 1u > m->lim.max_depth) {
			anomaly(m, MESSAGE_ANOM_MIME_DEPTH);
			m->c.depth_hits++;
			part->flags |= MESSAGE_PART_OPAQUE;
		} else if (frames_ensure(m) < 0) {
			part->flags |= MESSAGE_PART_OPAQUE;
		}
		goto root_done;
	}
	text = strncmp(part->type, "text/", 5) == 0;
	if (text)
		part->flags |= MESSAGE_PART_TEXT;
	if (strcmp(part->type, "text/html") == 0)
		part->flags |= MESSAGE_PART_HTML;
	if (attach || part->name[0] || !text)
		part->flags |= MESSAGE_PART_ATTACHMENT;
root_done:
	hdr_stats_add(m, &st);
	if (idx == 0) {
		m->headers_done = 1;
		/* called on the blank line (not yet counted in pos) or at the
		 * end of a message without a body */
		m->body_start = m->pos + m->piece_len;
		if (m->ops && m->ops->on_headers_end)
			m->ops->on_headers_end(m->user, m);
		if ((m->lim.flags & MESSAGE_F_BODY_SUBJECT) &&
		    m->field[MESSAGE_FIELD_SUBJECT] >= 0) {
			const struct message_header *h = &m->hdrs[m->field[MESSAGE_FIELD_SUBJECT]].h;

			view_out(m, MESSAGE_VIEW_BODY, (const uint8_t *)h->decoded, h->decoded_len);
			view_out(m, MESSAGE_VIEW_BODY, (const uint8_t *)"\n", 1);
		}
	}
	if (m->ops && m->ops->on_part_begin)
		m->ops->on_part_begin(m->user, part);
	if (part->flags & MESSAGE_PART_OPAQUE) {
		leaf_begin(m, idx, LEAF_OPAQUE);
	} else if (part->flags & MESSAGE_PART_MULTIPART) {
		m->state = ST_SKIP;               /* the preamble */
	} else if (part->flags & MESSAGE_PART_RFC822) {
		struct frame *f = &m->frames[m->nframes++];

		f->kind = FRAME_RFC822;
		f->part = idx;
		f->blen = 0;
		f->start = m->pos + m->piece_len;   /* the line after this one */
		entity_begin(m, (int32_t)idx, (uint16_t)(part->depth + 1));
	} else if (part->flags & MESSAGE_PART_HTML) {
		leaf_begin(m, idx, LEAF_HTML);
	} else if (part->flags & MESSAGE_PART_TEXT) {
		leaf_begin(m, idx, LEAF_TEXT);
	} else {
		leaf_begin(m, idx, LEAF_COUNT);
	}
}

/* ---- headers --------------------------------------------------------------------- */

static int field_of(const char *name, size_t n)
{
	static const uint8_t field_len[MESSAGE_FIELD_MAX] = {
		[MESSAGE_FIELD_FROM] = 4, [MESSAGE_FIELD_TO] = 2, [MESSAGE_FIELD_CC] = 2,
		[MESSAGE_FIELD_SUBJECT] = 7, [MESSAGE_FIELD_MESSAGE_ID] = 10,
		[MESSAGE_FIELD_DATE] = 4, [MESSAGE_FIELD_IN_REPLY_TO] = 11,
		[MESSAGE_FIELD_REFERENCES] = 10, [MESSAGE_FIELD_AUTO_SUBMITTED] = 14,
		[MESSAGE_FIELD_PRECEDENCE] = 10, [MESSAGE_FIELD_LIST_ID] = 7,
		[MESSAGE_FIELD_CONTENT_TYPE] = 12, [MESSAGE_FIELD_RETURN_PATH] = 11,
		[MESSAGE_FIELD_MIME_VERSION] = 12, [MESSAGE_FIELD_REPLY_TO] = 8,
		[MESSAGE_FIELD_SENDER] = 6,
	};
	uint8_t c0;

	if (n == 0 || n > 14)
		return -1;
	c0 = (uint8_t)name[0] | 0x20;
	for (int f = 0; f < MESSAGE_FIELD_MAX; f++)
		if (field_len[f] == n && (uint8_t)field_names[f][0] == c0 &&
		    strncasecmp(field_names[f], name, n) == 0)
			return f;
	return -1;
}

/* Whether v[0..n) holds "=?" (an RFC 2047 encoded word may start there). */
static int has_ew_start(const char *v, size_t n)
{
	const char *e = v + n, *q = v;

	while (e - q >= 2 && (q = memchr(q, '=', (size_t)(e - q) - 1)) != NULL) {
		if (q[1] == '?')
			return 1;
		q++;
	}
	return 0;
}

/* Entries of an address list holding an '@' (commas inside quotes, angle
 * brackets and comments do not split). */
static uint32_t count_addresses(const char *v, size_t n)
{
	uint32_t count = 0;
	int at = 0, quote = 0, angle = 0, paren = 0;

	for (size_t i = 0; i < n; i++) {
		char c = v[i];

		if (quote) {
			if (c == '\\' && i + 1 < n)
				i++;
			else if (c == '"')
				quote = 0;
			continue;
		}
		if (c == '"')
			quote = 1;
		else if (c == '(')
			paren++;
		else if (c == ')' && paren)
			paren--;
		else if (paren)
			continue;
		else if (c == '<')
			angle = 1;
		else if (c == '>')
			angle = 0;
		else if (c == '@')
			at = 1;
		else if ((c == ',' || c == ';') && !angle) {
			count += (uint32_t)at;
			at = 0;
		}
	}
	return count + (uint32_t)at;
}

/* Points the header slots at their store again after it moved. */
static void slots_rebase(const struct message_buf *store, struct hdr_slot *slots, uint32_t n)
{
	const char *b = (const char *)store->p;

	for (uint32_t i = 0; i < n; i++) {
		struct hdr_slot *s = &slots[i];

		s->h.name = b + s->off_name;
		s->h.raw = b + s->off_raw;
		s->h.value = b + s->off_value;
		s->h.decoded = b + s->off_decoded;
	}
}

enum { KEEP_OVER_COUNT = -1, KEEP_OVER_STORE = -2, KEEP_NO_MEMORY = -3, KEEP_COUNTED = -4 };

/* Keeps a copy of header h (of part) in a store: its slots (*slots, *n,
 * *cap, at most max) and their text (store, up to store->max). Inline: a
 * header only counted must not pay for a call. With keep
 * off the header is only counted against the same limits, in *dry_n and
 * *dry_len, which the limits always include: whether a header is refused
 * does not depend on which ones are kept. Returns the slot index,
 * KEEP_COUNTED, or KEEP_OVER_COUNT, KEEP_OVER_STORE or KEEP_NO_MEMORY
 * (counted in alloc_fail); the caller counts the refusal. */
static inline int32_t hdr_keep(struct message *m, struct message_buf *store,
			       struct hdr_slot **slots, uint32_t *n, uint32_t *cap, uint32_t max,
			       const struct message_header *h, uint32_t part, uint32_t *dry_n,
			       size_t *dry_len, int keep)
{
	size_t need = (size_t)h->name_len + h->raw_len + h->value_len + 3;
	int same = h->decoded == h->value ||   /* no encoded word: the same text */
		   (h->decoded_len == h->value_len &&
		    memcmp(h->decoded, h->value, h->value_len) == 0);
	struct hdr_slot *s;
	const char *b;
	uint8_t *old;

	if (!same)
		need += (size_t)h->decoded_len + 1;
	if (*n + *dry_n >= max)
		return KEEP_OVER_COUNT;
	if (need > (size_t)store->max - store->len - *dry_len)
		return KEEP_OVER_STORE;
	if (!keep) {
		(*dry_n)++;
		*dry_len += need;
		return KEEP_COUNTED;
	}

	switch (mem_grow(MEM_MESSAGE, (void **)slots, cap, *n + 1, sizeof(**slots), 16, max)) {
	case -1:
		m->c.alloc_fail++;
		return KEEP_NO_MEMORY;
	case 1:
		m->allocs++;
		break;
	}
	old = store->p;
	if (buf_grow(m, store, store->len + need) < 0)
		return KEEP_NO_MEMORY;
	if (store->p != old)
		slots_rebase(store, *slots, *n);
	s = &(*slots)[*n];
#define PUT(field, off) do { \
		s->off = store->len; \
		memcpy(store->p + store->len, h->field, h->field##_len); \
		store->len += h->field##_len; \
		store->p[store->len++] = '\0'; \
	} while (0)
	PUT(name, off_name);
	PUT(raw, off_raw);
	PUT(value, off_value);
	if (same)
		s->off_decoded = s->off_value;
	else
		PUT(decoded, off_decoded);
#undef PUT
	b = (const char *)store->p;
	s->h.name = b + s->off_name;
	s->h.raw = b + s->off_raw;
	s->h.value = b + s->off_value;
	s->h.decoded = b + s->off_decoded;
	s->h.name_len = h->name_len;
	s->h.raw_len = h->raw_len;
	s->h.value_len = h->value_len;
	s->h.decoded_len = h->decoded_len;
	s->part = part;
	return (int32_t)(*n)++;
}

/* Keeps a copy of top-level header h in the store. Returns its slot index,
 * -2 when it was only counted (no_headers and not needed: not kept, but
 * counted against the same limits, so the record and its anomalies do not
 * depend on the rules), or -1 (over max_headers or max_header_store, or
 * out of memory: counted). */
static int32_t hdr_store(struct message *m, const struct message_header *h, int needed)
{
	int32_t r = hdr_keep(m, &m->hstore, &m->hdrs, &m->nhdrs, &m->hdrs_cap, m->lim.max_headers,
			     h, 0, &m->hdrs_dry_n, &m->hdrs_dry_len, !m->no_headers || needed);

	if (r >= 0)
		return r;
	if (r == KEEP_COUNTED)
		return -2;
	if (r == KEEP_OVER_COUNT)
		anomaly(m, MESSAGE_ANOM_TOO_MANY_HEADERS);
	else if (r == KEEP_OVER_STORE)
		anomaly(m, MESSAGE_ANOM_HEADER_STORE_FULL);
	m->c.headers_dropped++;
	return -1;
}

/* Keeps a copy of header h of MIME part `part` (not the root). */
static void part_hdr_store(struct message *m, const struct message_header *h, uint32_t part)
{
	int32_t r = hdr_keep(m, &m->ph.store, &m->ph.slots, &m->ph.n, &m->ph.cap, m->ph.max, h,
			     part, &m->ph.dry_n, &m->ph.dry_len, !m->no_part_headers);

	if (r >= 0 || r == KEEP_COUNTED)
		return;
	if (r != KEEP_NO_MEMORY)
		anomaly(m, MESSAGE_ANOM_PART_HEADERS_CUT);
	m->c.part_headers_dropped++;
}

static void ent_keep(char *dst, uint16_t *len, uint8_t *have, size_t cap,
		     const char *v, size_t n)
{
	if (*have)
		return;       /* the first one counts */
	if (n > cap)
		n = cap;
	memcpy(dst, v, n);
	*len = (uint16_t)n;
	*have = 1;
}

/* The header being read is complete: unfold, decode, store (top level),
 * report, and note the MIME fields of the entity. */
static void hdr_finish(struct message *m)
{
	struct message_header h;
	struct mime_hdr_stats st;
	char *name, *raw, *val, *dec;
	size_t nl, rl, vl = 0, dcap, s = 0;
	int top;

	if (!m->hdr_active)
		return;
	m->hdr_active = 0;
	/* hdr.max keeps a byte for the NUL */
	if (!m->hdr.len || buf_grow(m, &m->hdr, (size_t)m->hdr.len + 1) < 0)
		return;
	name = (char *)m->hdr.p;
	m->hdr.p[m->hdr.len] = '\0';
	/* header_line() saw the colon (cut off only when the name alone
	 * passed max_header_bytes) */
	raw = m->hdr_colon < m->hdr.len ? name + m->hdr_colon : NULL;
	if (!raw)
		return;
	rl = m->hdr.len - (size_t)(raw - name) - 1;
	nl = (size_t)(raw - name);
	while (nl && (name[nl - 1] == ' ' || name[nl - 1] == '\t'))
		nl--;
	name[nl] = '\0';
	raw++;
	m->ent_headers++;
	top = m->ent_part == 0;

	/* scratch: unfolded value, NUL, decoded value, NUL */
	dcap = rl * 2 + 64;
	if (buf_grow(m, &m->scratch, rl + 1 + dcap + 1) < 0) {
		m->scratch.len = 0;
		if (top) {
			m->c.headers++;
			m->c.headers_dropped++;
		} else {
			m->c.part_headers++;
			m->c.part_headers_dropped++;
		}
		return;
	}
	val = (char *)m->scratch.p;
	while (s < rl && (raw[s] == ' ' || raw[s] == '\t' || raw[s] == '\r' || raw[s] == '\n'))
		s++;
	if (!m->hdr_folded && !memchr(raw + s, '\r', rl - s)) {
		/* one line (line_piece took its CR LF off): as it is */
		memcpy(val, raw + s, rl - s);
		vl = rl - s;
	} else if (!memchr(raw + s, '\r', rl - s)) {
		/* line ends are LF only: copy the runs between them */
		for (size_t i = s; i < rl;) {
			const char *q = memchr(raw + i, '\n', rl - i);
			size_t e = q ? (size_t)(q - raw) : rl;

			memcpy(val + vl, raw + i, e - i);
			vl += e - i;
			i = e + 1;
		}
	} else {
		for (size_t i = s; i < rl; i++)
			if (raw[i] != '\n' && raw[i] != '\r')
				val[vl++] = raw[i];
	}
	while (vl && (val[vl - 1] == ' ' || val[vl - 1] == '\t'))
		vl--;
	val[vl] = '\0';

	if (nl == 12 && strncasecmp(name, "content-type", 12) == 0)
		ent_keep(m->ent_ctype, &m->ent_ctype_len, &m->ent_have_ctype, ENT_CTYPE_MAX, val, vl);
	else if (nl == 25 && strncasecmp(name, "content-transfer-encoding", 25) == 0)
		ent_keep(m->ent_cte, &m->ent_cte_len, &m->ent_have_cte, ENT_CTE_MAX, val, vl);
	else if (nl == 19 && strncasecmp(name, "content-disposition", 19) == 0)
		ent_keep(m->ent_cdisp, &m->ent_cdisp_len, &m->ent_have_cdisp, ENT_CTYPE_MAX, val, vl);
	if (top)
		m->c.headers++;
	else
		m->c.part_headers++;
	dec = val + vl + 1;
	memset(&st, 0, sizeof(st));
	if (has_ew_start(val, vl)) {
		size_t dl = mime_decode_header(val, vl, dec, dcap, &st);

		dec[dl] = '\0';
		h.decoded_len = (uint32_t)dl;
		h.decoded = dec;
		/* part headers: their MIME parameters are counted where they are
		 * read (entity_headers_done), not twice */
		if (top)
			hdr_stats_add(m, &st);
	} else {
		h.decoded = val;
		h.decoded_len = (uint32_t)vl;
	}
	h.name = name;
	h.name_len = (uint32_t)nl;
	h.raw = raw;
	h.raw_len = (uint32_t)rl;
	h.value = val;
	h.value_len = (uint32_t)vl;
	if (!top) {
		/* what mimeheader rules read (only the stores are bounded) */
		part_hdr_store(m, &h, (uint32_t)m->ent_part);
		return;
	}
	{
		int f = field_of(name, nl);
		int rcvd = nl == 8 && strncasecmp(name, "received", 8) == 0;
		/* kept even when no one reads the list: the record's fields
		 * and the first Received line */
		int32_t slot = hdr_store(m, &h, f >= 0 || (rcvd && m->received == 0));

		if (rcvd) {
			m->received++;
			m->c.received++;
			if (m->received == 1)
				m->first_received = slot;
		}
		if (f >= 0 && m->field[f] < 0)
			m->field[f] = slot;
		if (f == MESSAGE_FIELD_TO)
			m->to_count += count_addresses(val, vl);
		else if (f == MESSAGE_FIELD_CC)
			m->cc_count += count_addresses(val, vl);
		if (m->ops && m->ops->on_header)
			m->ops->on_header(m->user, slot >= 0 ? &m->hdrs[slot].h : &h);
	}
}

static void hdr_append(struct message *m, const uint8_t *p, size_t n)
{
	size_t room = m->lim.max_header_bytes - m->hdr.len;

	if (has_high_bit(p, n))
		anomaly(m, MESSAGE_ANOM_8BIT_IN_HEADER);
	if (n > room) {
		m->c.header_bytes_cut += n - room;
		if (!m->hdr_cut) {
			m->hdr_cut = 1;
			anomaly(m, MESSAGE_ANOM_HEADER_TOO_LONG);
		}
		n = room;
	}
	if (n && buf_append(m, &m->hdr, p, n) < n)
		m->c.header_bytes_cut += n;
}

/* The header block ended (blank line, bad line, boundary or message end). */
static void headers_end(struct message *m)
{
	hdr_finish(m);
	if (m->ent_part == 0 && m->ent_headers == 0)
		anomaly(m, MESSAGE_ANOM_NO_HEADERS);
	entity_headers_done(m);
}

static int header_name_ok(const uint8_t *p, size_t n)
{
	while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (p[i] <= ' ' || p[i] >= 0x7f)
			return 0;
	return 1;
}

static int hdr_ends_with_semicolon(const struct message *m)
{
	uint32_t n = m->hdr.len;

	while (n && (m->hdr.p[n - 1] == ' ' || m->hdr.p[n - 1] == '\t' || m->hdr.p[n - 1] == '\r'))
		n--;
	return n && m->hdr.p[n - 1] == ';';
}

/* One line (or piece) of a header block. */
static void header_line(struct message *m, const uint8_t *p, size_t n, int eol, int cont)
{
	const uint8_t *colon;

	if (cont) {
		if (m->hdr_active) {
			m->hdr_folded = 1;   /* a piece of a long line: take the general path */
			hdr_append(m, p, n);
		}
		return;
	}
	if (n == 0 && eol) {
		headers_end(m);
		return;
	}
	if (n && (p[0] == ' ' || p[0] == '\t')) {
		if (m->hdr_active) {
			m->hdr_folded = 1;
			hdr_append(m, (const uint8_t *)"\n", 1);
			hdr_append(m, p, n);
		} else {
			anomaly(m, MESSAGE_ANOM_BAD_HEADER_LINE);
		}
		return;
	}
	colon = memchr(p, ':', n);
	if ((!colon || !header_name_ok(p, (size_t)(colon - p))) && m->hdr_active &&
	    hdr_ends_with_semicolon(m)) {
		/* "Content-Type: multipart/alternative;" then "boundary=..." on a
		 * line of its own, folded without a blank: seen in real mail
		 * (bounces quoting it); kept as a continuation, flagged */
		anomaly(m, MESSAGE_ANOM_BAD_HEADER_LINE);
		m->hdr_folded = 1;
		hdr_append(m, (const uint8_t *)"\n", 1);
		hdr_append(m, p, n);
		return;
	}
	hdr_finish(m);
	if (!colon || !header_name_ok(p, (size_t)(colon - p))) {
		if (m->at_start && n >= 5 && memcmp(p, "From ", 5) == 0)
			return;           /* an mbox separator */
		if (m->ent_part != 0 || m->ent_headers)
			anomaly(m, MESSAGE_ANOM_BAD_HEADER_LINE);
		headers_end(m);
		line_in(m, p, n, eol, 0);  /* the first body line */
		return;
	}
	m->hdr_active = 1;
	m->hdr_cut = 0;
	m->hdr_folded = 0;
	m->hdr.len = 0;
	m->hdr_colon = (uint32_t)(colon - p);
	hdr_append(m, p, n);
}

/* ---- boundaries -------------------------------------------------------------------- */

/* Returns the frame whose boundary line p[0..n) is (innermost first), or -1;
 * *close tells a close delimiter ("--b--"). */
static int boundary_match(const struct message *m, const uint8_t *p, size_t n, int *close)
{
	for (int f = (int)m->nframes - 1; f >= 0; f--) {
		const struct frame *fr = &m->frames[f];
		const uint8_t *r;
		size_t rn;

		if (fr->kind != FRAME_MULTIPART || n - 2 < fr->blen ||
		    memcmp(p + 2, fr->boundary, fr->blen) != 0)
			continue;
		r = p + 2 + fr->blen;
		rn = n - 2 - fr->blen;
		if (rn >= 2 && r[0] == '-' && r[1] == '-') {
			*close = 1;
			return f;
		}
		while (rn && (*r == ' ' || *r == '\t')) {
			r++;
			rn--;
		}
		if (rn == 0) {
			*close = 0;
			return f;
		}
	}
	return -1;
}

/* Closes the innermost open container (a multipart cut short, or an inner
 * message, whose size is the bytes routed since it began). */
static void frame_pop(struct message *m)
{
	struct frame *top = &m->frames[--m->nframes];

	if (top->kind == FRAME_MULTIPART) {
		anomaly(m, MESSAGE_ANOM_MISSING_BOUNDARY_END);
		m->c.unclosed_multiparts++;
	} else {
		m->parts[top->part].raw_size = m->pos > top->start ? m->pos - top->start : 0;
	}
	part_end(m, top->part);
}

/* A boundary of frame f: ends what is open inside it, then opens the next
 * part or closes the multipart. */
static void on_boundary(struct message *m, int f, int close)
{
	/* an entity cut short in its headers still gets its type decided */
	while (m->state == ST_HEADERS) {
		hdr_finish(m);
		entity_headers_done(m);
	}
	if (m->state == ST_LEAF)
		leaf_end(m, 1);
	while (m->nframes > (uint32_t)f + 1)
		frame_pop(m);
	if (close) {
		uint32_t idx = m->frames[f].part;

		m->parts[idx].flags |= MESSAGE_PART_CLOSED;
		m->nframes--;
		part_end(m, idx);
		m->state = ST_SKIP;       /* the epilogue */
	} else {
		uint32_t idx = m->frames[f].part;

		entity_begin(m, (int32_t)idx, (uint16_t)(m->parts[idx].depth + 1));
	}
}

/* ---- lines ---------------------------------------------------------------------------- */

/* Routes one line or piece (n <= max_line, line end removed). */
static void line_in(struct message *m, const uint8_t *p, size_t n, int eol, int cont)
{
	if (!cont && m->nframes && n >= 2 && p[0] == '-' && p[1] == '-') {
		int close = 0, f = boundary_match(m, p, n, &close);

		if (f >= 0) {
			on_boundary(m, f, close);
			return;
		}
	}
	switch (m->state) {
	case ST_HEADERS:
		header_line(m, p, n, eol, cont);
		break;
	case ST_LEAF:
		leaf_line(m, p, n, eol);
		break;
	default:
		break;
	}
}

/* The counters of one line or piece (CR LF kind, NUL bytes, lengths);
 * returns its length without the CR of a CR LF. nul_free: p[0..n) is known
 * to hold no NUL (the caller looked at a larger piece at once). */
static inline size_t line_account(struct message *m, const uint8_t *p, size_t n, int eol,
				  int nul_free)
{
	if (eol) {
		if (n && p[n - 1] == '\r') {
			n--;
			m->saw_crlf = 1;
		} else {
			m->saw_lf = 1;
		}
		if (m->saw_crlf && m->saw_lf)
			anomaly(m, MESSAGE_ANOM_BARE_CR_LF_MIX);
	}
	if (!nul_free && memchr(p, '\0', n)) {
		anomaly(m, MESSAGE_ANOM_NUL_BYTE);
		for (size_t i = 0; i < n; i++)
			m->c.nul_bytes += p[i] == '\0';
	}
	m->cur_line_len += n;
	if (eol)
		m->c.lines++;
	else
		m->c.line_pieces++;
	if (eol) {
		if (m->cur_line_len > RFC5322_LINE_MAX) {
			m->c.long_lines++;
			anomaly(m, MESSAGE_ANOM_LONG_LINE);
		}
		m->cur_line_len = 0;
	}
	m->line_cont = !eol;
	m->piece_len = n + (eol ? 1 : 0);
	return n;
}

/* Bookkeeping for one line or piece, then routing. */
static void line_piece(struct message *m, const uint8_t *p, size_t n, int eol, int nul_free)
{
	int cont = m->line_cont;

	n = line_account(m, p, n, eol, nul_free);
	line_in(m, p, n, eol, cont);
	m->pos += m->piece_len;
	m->at_start = 0;
}

/* Emits a piece of a line longer than max_line. A CR at the cut is kept
 * for the next piece, so CR LF is never split. Returns bytes consumed. */
static size_t line_cut(struct message *m, const uint8_t *p, int nul_free)
{
	size_t k = m->lim.max_line;

	if (p[k - 1] == '\r')
		k--;
	line_piece(m, p, k, 0, nul_free);
	return k;
}

/* Whether the open leaf's lines only feed counters: opaque, or neither
 * base64 nor QP and its bytes go nowhere (see leaf_line's default case). */
static inline int leaf_counts_only(const struct message *m)
{
	if (m->leaf_mode == LEAF_OPAQUE)
		return 1;
	if (m->leaf_cte == MESSAGE_CTE_BASE64 || m->leaf_cte == MESSAGE_CTE_QP)
		return 0;
	return (m->leaf_mode != LEAF_TEXT && m->leaf_mode != LEAF_HTML) ||
	       (m->no_text && m->conv.cs != MIME_CS_ICONV);
}

/* Whole lines of p (at most max bytes each) in a leaf no boundary can end
 * (no container open) whose lines only feed counters: line_piece(),
 * line_in() and leaf_line() do for each exactly this. Returns the bytes
 * used; what is left (a partial or over-long line) takes the general path. */
static size_t leaf_lines_fast(struct message *m, const uint8_t *p, size_t n, size_t max,
			      int nul_free)
{
	struct message_part *part = &m->parts[m->leaf];
	int opaque = m->leaf_mode == LEAF_OPAQUE;
	size_t used = 0;

	while (used < n) {
		const uint8_t *l = p + used;
		size_t look = n - used < max + 1 ? n - used : max + 1;
		const uint8_t *e = memchr(l, '\n', look);
		size_t k, len;

		if (!e)
			break;
		k = (size_t)(e - l);
		len = line_account(m, l, k, 1, nul_free);
		/* leaf_line() for a line that only feeds counters */
		part->raw_size += len + 1;
		if (!opaque) {
			part->decoded_size += len + (m->leaf_nl_pending ? 1 : 0);
			m->leaf_nl_pending = 1;
		}
		m->pos += len + 1;
		m->at_start = 0;
		used += k + 1;
	}
	return used;
}

void message_feed(struct message *m, const uint8_t *p, size_t n)
{
	size_t max = m->lim.max_line;
	int nul_free;

	if (m->ended || n == 0)
		return;
	/* one look for NUL over the whole piece spares one per line */
	nul_free = memchr(p, '\0', n) == NULL;
	m->c.bytes += n;
	if (m->ops && m->ops->on_text)
		m->ops->on_text(m->user, NULL, MESSAGE_VIEW_FULL, p, n);
	if (m->tap)
		m->tap->feed(m->tap_obj, p, n);
	if (m->keep_full) {
		size_t k = buf_append(m, &m->full, p, n);

		if (k < n) {
			m->c.full_cut += n - k;
			anomaly(m, MESSAGE_ANOM_FULL_TRUNCATED);
		}
	}
	while (n) {
		if (m->line.len == 0) {
			/* in place: no copy for lines inside this piece */
			size_t look, k0;
			const uint8_t *e;

			if (m->state == ST_LEAF && m->nframes == 0 && m->leaf >= 0 &&
			    leaf_counts_only(m)) {
				/* the rest of a single-part body that only
				 * feeds counters: no per-line calls */
				k0 = leaf_lines_fast(m, p, n, max, nul_free);
				p += k0;
				n -= k0;
				if (!n)
					return;
			}
			look = n < max + 1 ? n : max + 1;
			e = memchr(p, '\n', look);

			if (e) {
				size_t k = (size_t)(e - p);

				line_piece(m, p, k, 1, nul_free);
				p += k + 1;
				n -= k + 1;
				continue;
			}
			if (n > max) {
				size_t k = line_cut(m, p, nul_free);

				p += k;
				n -= k;
				continue;
			}
			if (buf_append(m, &m->line, p, n) < n) {
				/* out of memory: lose the partial line (counted) */
				m->line.len = 0;
			}
			return;
		} else {
			size_t look = max + 1 - m->line.len;
			const uint8_t *e;

			if (look > n)
				look = n;
			e = memchr(p, '\n', look);
			if (e) {
				size_t k = (size_t)(e - p);

				buf_append(m, &m->line, p, k);
				line_piece(m, m->line.p, m->line.len, 1, 0);
				m->line.len = 0;
				p += k + 1;
				n -= k + 1;
				continue;
			}
			buf_append(m, &m->line, p, look);
			p += look;
			n -= look;
			if (m->line.len == max + 1) {
				size_t k = line_cut(m, m->line.p, 0);

				memmove(m->line.p, m->line.p + k, m->line.len - k);
				m->line.len -= (uint32_t)k;
			}
		}
	}
}

void message_end(struct message *m)
{
	if (m->ended)
		return;
	if (m->line.len) {
		int cont = m->line_cont;

		m->cur_line_len += m->line.len;
		if (m->cur_line_len > RFC5322_LINE_MAX) {
			m->c.long_lines++;
			anomaly(m, MESSAGE_ANOM_LONG_LINE);
		}
		if (memchr(m->line.p, '\0', m->line.len))
			anomaly(m, MESSAGE_ANOM_NUL_BYTE);
		m->c.lines++;
		m->line_cont = 0;
		m->piece_len = m->line.len;
		line_in(m, m->line.p, m->line.len, 0, cont);
		m->pos += m->piece_len;
		m->line.len = 0;
	}
	m->piece_len = 0;
	if (m->state == ST_HEADERS && m->ent_part == 0)
		anomaly(m, MESSAGE_ANOM_HEADERS_UNTERMINATED);
	while (m->state == ST_HEADERS) {
		hdr_finish(m);
		if (m->ent_part == 0 && m->ent_headers == 0)
			anomaly(m, MESSAGE_ANOM_NO_HEADERS);
		entity_headers_done(m);
	}
	if (m->state == ST_LEAF)
		leaf_end(m, 0);
	while (m->nframes)
		frame_pop(m);
	m->state = ST_DONE;
	m->ended = 1;
}

/* ---- life cycle ------------------------------------------------------------------------- */

static void state_clear(struct message *m)
{
	m->state = ST_HEADERS;
	m->ended = 0;
	m->headers_done = 0;
	m->line_cont = 0;
	m->at_start = 1;
	m->saw_crlf = m->saw_lf = 0;
	m->cur_line_len = 0;
	m->pos = m->piece_len = m->body_start = 0;
	m->line.len = 0;
	m->hdr.len = 0;
	m->hdr_active = 0;
	m->hdr_cut = 0;
	m->hstore.len = 0;
	m->hdrs_dry_n = 0;
	m->hdrs_dry_len = 0;
	m->scratch.len = 0;
	m->nhdrs = 0;
	for (int f = 0; f < MESSAGE_FIELD_MAX; f++)
		m->field[f] = -1;
	m->first_received = -1;
	m->received = 0;
	m->to_count = m->cc_count = 0;
	m->ph.store.len = 0;
	m->ph.n = 0;
	m->ph.dry_n = 0;
	m->ph.dry_len = 0;
	m->nparts = 0;
	m->nframes = 0;
	m->leaf = -1;
	m->leaf_nl_pending = 0;
	m->leaf_cr_pending = 0;
	m->body.len = m->rawbody.len = m->full.len = 0;
	m->body_last = m->rawbody_last = 0;
	m->tok.len = 0;
	m->tok_cut = 0;
	m->uristore.len = 0;
	m->nuris = 0;
	m->anomalies = 0;
	memset(&m->c, 0, sizeof(m->c));
	entity_begin(m, -1, 0);
}

struct message *message_new(const struct message_limits *lim,
			    const struct message_ops *ops, void *user)
{
	struct message *m = mem_calloc(MEM_MESSAGE, 1, sizeof(*m));

	if (!m)
		return NULL;
	limits_fill(&m->lim, lim);
	m->ops = ops;
	m->user = user;
	m->allocs = 1;
	m->line.max = m->lim.max_line + 1;
	m->hdr.max = m->lim.max_header_bytes + 1;     /* + its NUL */
	m->scratch.max = m->lim.max_header_bytes * 3 + 66;
	m->hstore.max = m->lim.max_header_store;
	m->body.max = m->lim.max_body;
	m->rawbody.max = m->lim.max_rawbody;
	m->full.max = m->lim.max_full;
	m->ph.store.max = m->lim.max_part_header_store;
	m->ph.max = m->lim.max_part_headers;
	m->tok.max = m->lim.max_uri_len;
	{
		uint64_t u = (uint64_t)m->lim.max_uris * (m->lim.max_uri_len + 1);

		m->uristore.max = (uint32_t)(u < (1u << 26) ? u : (1u << 26));
	}
	state_clear(m);
	return m;
}

static void conv_drop(struct message *m)
{
	if (m->conv_open) {
		mime_conv_close(&m->conv);
		m->conv_open = 0;
	}
}

/* Hands the tap object back to its owner (the message it saw is over). */
static void tap_release(struct message *m)
{
	const struct message_tap *tap = m->tap;
	void *obj = m->tap_obj;

	m->tap = NULL;
	m->tap_obj = NULL;
	m->keep_full = 0;
	if (tap && tap->release)
		tap->release(obj);
}

void message_attach(struct message *m, const struct message_tap *tap, void *obj, int keep_full)
{
	tap_release(m);
	m->tap = tap;
	m->tap_obj = obj;
	m->keep_full = keep_full != 0;
}

void *message_attached(const struct message *m, const struct message_tap *tap)
{
	return tap && m->tap == tap ? m->tap_obj : NULL;
}

void message_reset(struct message *m)
{
	tap_release(m);
	conv_drop(m);
	state_clear(m);
}

void message_free(struct message *m)
{
	if (!m)
		return;
	tap_release(m);
	conv_drop(m);
	buf_free(&m->line);
	buf_free(&m->hdr);
	buf_free(&m->scratch);
	buf_free(&m->hstore);
	buf_free(&m->body);
	buf_free(&m->rawbody);
	buf_free(&m->full);
	buf_free(&m->ph.store);
	mem_free(MEM_MESSAGE, m->ph.slots);
	buf_free(&m->tok);
	buf_free(&m->uristore);
	mem_free(MEM_MESSAGE, m->hdrs);
	mem_free(MEM_MESSAGE, m->parts);
	mem_free(MEM_MESSAGE, m->uri_off);
	mem_free(MEM_MESSAGE, m->html);
	mem_free(MEM_MESSAGE, m->frames);
	mem_free(MEM_MESSAGE, m);
}

/* ---- accessors ---------------------------------------------------------------------------- */

void message_want(struct message *m, const struct message_wants *w)
{
	m->no_uris = !w->uris;
	m->no_text = !w->text;
	m->no_part_headers = !w->part_headers;
	m->no_headers = !w->headers;
}

uint64_t message_body_length(const struct message *m)
{
	if (!m->headers_done || m->pos < m->body_start)
		return 0;
	return m->pos - m->body_start;
}

int message_headers_done(const struct message *m)
{
	return m->headers_done;
}

int message_ended(const struct message *m)
{
	return m->ended;
}

uint32_t message_header_count(const struct message *m)
{
	return m->nhdrs;
}

const struct message_header *message_header_at(const struct message *m, uint32_t i)
{
	return i < m->nhdrs ? &m->hdrs[i].h : NULL;
}

static const struct message_header *header_from(const struct message *m, uint32_t i,
						const char *name, size_t n)
{
	for (; i < m->nhdrs; i++)
		if (m->hdrs[i].h.name_len == n && strncasecmp(m->hdrs[i].h.name, name, n) == 0)
			return &m->hdrs[i].h;
	return NULL;
}

const struct message_header *message_header(const struct message *m, const char *name)
{
	return header_from(m, 0, name, strlen(name));
}

const struct message_header *message_header_next(const struct message *m,
						 const struct message_header *prev)
{
	const struct hdr_slot *s = (const struct hdr_slot *)prev;

	if (!prev || s < m->hdrs || s >= m->hdrs + m->nhdrs)
		return NULL;
	return header_from(m, (uint32_t)(s - m->hdrs) + 1, prev->name, prev->name_len);
}

const char *message_header_value(const struct message *m, const char *name)
{
	const struct message_header *h = message_header(m, name);

	return h ? h->decoded : NULL;
}

const char *message_field(const struct message *m, enum message_field f)
{
	if ((unsigned)f >= MESSAGE_FIELD_MAX || m->field[f] < 0)
		return NULL;
	return m->hdrs[m->field[f]].h.decoded;
}

const char *message_field_name(enum message_field f)
{
	return (unsigned)f < MESSAGE_FIELD_MAX ? field_names[f] : "?";
}

uint32_t message_to_count(const struct message *m)
{
	return m->to_count;
}

uint32_t message_cc_count(const struct message *m)
{
	return m->cc_count;
}

uint32_t message_received_count(const struct message *m)
{
	return m->received;
}

const char *message_first_received(const struct message *m)
{
	return m->first_received >= 0 ? m->hdrs[m->first_received].h.value : NULL;
}

uint32_t message_part_header_count(const struct message *m)
{
	return m->ph.n;
}

const struct message_header *message_part_header_at(const struct message *m, uint32_t i,
						    uint32_t *part)
{
	if (i >= m->ph.n)
		return NULL;
	if (part)
		*part = m->ph.slots[i].part;
	return &m->ph.slots[i].h;
}

uint32_t message_part_count(const struct message *m)
{
	return m->nparts;
}

const struct message_part *message_part_at(const struct message *m, uint32_t i)
{
	return i < m->nparts ? &m->parts[i] : NULL;
}

const struct message_part *message_attachment(const struct message *m, uint32_t i)
{
	for (uint32_t k = 0; k < m->nparts; k++)
		if ((m->parts[k].flags & MESSAGE_PART_ATTACHMENT) && i-- == 0)
			return &m->parts[k];
	return NULL;
}

const uint8_t *message_view(const struct message *m, enum message_view v, size_t *len)
{
	const struct message_buf *b;

	if (v == MESSAGE_VIEW_BODY)
		b = &m->body;
	else if (v == MESSAGE_VIEW_RAWBODY)
		b = &m->rawbody;
	else if (v == MESSAGE_VIEW_FULL)
		b = &m->full;
	else {
		*len = 0;
		return NULL;
	}
	*len = b->len;
	return b->p;
}

uint32_t message_uri_count(const struct message *m)
{
	return m->nuris;
}

const char *message_uri_at(const struct message *m, uint32_t i, size_t *len)
{
	if (i >= m->nuris) {
		if (len)
			*len = 0;
		return NULL;
	}
	if (len)
		*len = m->uri_off[2 * i + 1];
	return (const char *)m->uristore.p + m->uri_off[2 * i];
}

uint64_t message_anomalies(const struct message *m)
{
	return m->anomalies;
}

const char *message_anomaly_name(enum message_anomaly a)
{
	return (unsigned)a < MESSAGE_ANOM_MAX ? anomaly_names[a] : "?";
}

size_t message_anomalies_format(uint64_t mask, char *buf, size_t cap)
{
	size_t len = 0;

	if (cap)
		buf[0] = '\0';
	for (int a = 0; a < MESSAGE_ANOM_MAX; a++) {
		const char *s;
		size_t k;

		if (!(mask & (1ull << a)))
			continue;
		s = anomaly_names[a];
		k = strlen(s);
		if (len && len + 1 < cap) {
			buf[len] = ',';
			buf[len + 1] = '\0';
		}
		if (len)
			len++;
		if (len + k < cap) {
			memcpy(buf + len, s, k + 1);
		}
		len += k;
	}
	return len;
}

const struct message_counters *message_counters(const struct message *m)
{
	return &m->c;
}

size_t message_memory(const struct message *m)
{
	return sizeof(*m) + m->line.cap + m->hdr.cap + m->scratch.cap + m->hstore.cap +
	       m->body.cap + m->rawbody.cap + m->full.cap + m->ph.store.cap + m->tok.cap +
	       m->uristore.cap + (size_t)m->hdrs_cap * sizeof(*m->hdrs) +
	       (size_t)m->ph.cap * sizeof(*m->ph.slots) +
	       (size_t)m->parts_cap * sizeof(*m->parts) +
	       (size_t)m->uris_cap * 2 * sizeof(*m->uri_off) +
	       (m->html ? sizeof(*m->html) : 0) +
	       (m->frames ? (size_t)m->lim.max_depth * sizeof(*m->frames) : 0);
}

uint64_t message_allocations(const struct message *m)
{
	return m->allocs;
}

/* ---- validation --------------------------------------------------------------------------- */

static int buf_ok(const struct message_buf *b)
{
	return b->len <= b->cap && b->cap <= b->max && (b->cap == 0 || b->p != NULL);
}

int message_validate(const struct message *m, const char **why)
{
	const char *w = NULL;

#define FAIL(msg) do { w = msg; goto bad; } while (0)
	if (!buf_ok(&m->line) || !buf_ok(&m->hdr) || !buf_ok(&m->scratch) ||
	    !buf_ok(&m->hstore) || !buf_ok(&m->body) || !buf_ok(&m->rawbody) ||
	    !buf_ok(&m->full) || !buf_ok(&m->ph.store) ||
	    !buf_ok(&m->tok) || !buf_ok(&m->uristore))
		FAIL("buffer over its cap");
	if (m->line.len > m->lim.max_line)
		FAIL("line buffer holds a full line");
	if (m->hdr.len > m->lim.max_header_bytes)
		FAIL("header over max_header_bytes");
	if (m->nhdrs > m->hdrs_cap || m->nhdrs > m->lim.max_headers)
		FAIL("header count");
	if (m->c.headers != m->nhdrs + m->hdrs_dry_n + m->c.headers_dropped)
		FAIL("headers seen != stored + dropped");
	for (uint32_t i = 0; i < m->nhdrs; i++) {
		const struct hdr_slot *s = &m->hdrs[i];
		const char *b = (const char *)m->hstore.p;

		if ((size_t)s->off_name + s->h.name_len >= m->hstore.len ||
		    (size_t)s->off_raw + s->h.raw_len >= m->hstore.len ||
		    (size_t)s->off_value + s->h.value_len >= m->hstore.len ||
		    (size_t)s->off_decoded + s->h.decoded_len >= m->hstore.len)
			FAIL("header outside the store");
		if (s->h.name != b + s->off_name || s->h.decoded != b + s->off_decoded ||
		    s->h.value != b + s->off_value || s->h.raw != b + s->off_raw)
			FAIL("header pointer not rebased");
		if (b[s->off_name + s->h.name_len] || b[s->off_value + s->h.value_len] ||
		    b[s->off_raw + s->h.raw_len] || b[s->off_decoded + s->h.decoded_len])
			FAIL("header not NUL-terminated");
		if (s->h.name_len == 0 || s->h.value_len > s->h.raw_len)
			FAIL("header lengths");
	}
	if (m->ph.n > m->ph.cap || m->ph.n > m->ph.max)
		FAIL("part header count");
	if (m->c.part_headers != m->ph.n + m->ph.dry_n + m->c.part_headers_dropped)
		FAIL("part headers seen != stored + dropped");
	for (uint32_t i = 0; i < m->ph.n; i++) {
		const struct hdr_slot *s = &m->ph.slots[i];
		const char *b = (const char *)m->ph.store.p;

		if ((size_t)s->off_name + s->h.name_len >= m->ph.store.len ||
		    (size_t)s->off_raw + s->h.raw_len >= m->ph.store.len ||
		    (size_t)s->off_value + s->h.value_len >= m->ph.store.len ||
		    (size_t)s->off_decoded + s->h.decoded_len >= m->ph.store.len)
			FAIL("part header outside the store");
		if (s->h.name != b + s->off_name || s->h.decoded != b + s->off_decoded ||
		    s->h.value != b + s->off_value || s->h.raw != b + s->off_raw)
			FAIL("part header pointer not rebased");
		if (s->part == 0 || s->part >= m->nparts ||
		    (i && s->part < m->ph.slots[i - 1].part))
			FAIL("part header's part");
	}
	if (m->full.len > m->c.bytes || (m->keep_full && m->c.bytes != m->full.len + m->c.full_cut))
		FAIL("full copy != fed - cut");
	for (int f = 0; f < MESSAGE_FIELD_MAX; f++)
		if (m->field[f] >= (int32_t)m->nhdrs)
			FAIL("field index");
	if (m->first_received >= (int32_t)m->nhdrs)
		FAIL("first received index");
	if (m->nparts > m->parts_cap || m->nparts > m->lim.max_parts)
		FAIL("part count");
	if (m->nparts == 0 && !(m->c.alloc_fail))
		FAIL("no root part");
	for (uint32_t i = 0; i < m->nparts; i++) {
		const struct message_part *p = &m->parts[i];

		if (p->index != i)
			FAIL("part index");
		if (i == 0 ? p->parent != -1 : (p->parent < 0 || (uint32_t)p->parent >= i))
			FAIL("part parent");
		if (i && p->depth != m->parts[p->parent].depth + 1)
			FAIL("part depth");
		if (p->depth > m->lim.max_depth)
			FAIL("part deeper than max_depth");
		if (i && !(m->parts[p->parent].flags & (MESSAGE_PART_MULTIPART | MESSAGE_PART_RFC822)))
			FAIL("parent is not a container");
		if (memchr(p->type, '\0', sizeof(p->type)) == NULL ||
		    memchr(p->charset, '\0', sizeof(p->charset)) == NULL ||
		    memchr(p->name, '\0', sizeof(p->name)) == NULL)
			FAIL("part string not terminated");
		if (p->cte == MESSAGE_CTE_7BIT && !(p->flags & MESSAGE_PART_OPAQUE) &&
		    p->decoded_size > p->raw_size)
			FAIL("7bit part decoded larger than raw");
		if (m->ended && !(p->flags & MESSAGE_PART_ENDED))
			FAIL("part left open");
	}
	if (m->nframes > m->lim.max_depth)
		FAIL("frame stack deeper than max_depth");
	for (uint32_t f = 0; f < m->nframes; f++) {
		const struct frame *fr = &m->frames[f];

		if (fr->part >= m->nparts)
			FAIL("frame part");
		if (f && fr->part <= m->frames[f - 1].part)
			FAIL("frames out of order");
		if (fr->kind == FRAME_MULTIPART &&
		    (!(m->parts[fr->part].flags & MESSAGE_PART_MULTIPART) ||
		     fr->blen == 0 || fr->blen > MESSAGE_BOUNDARY_MAX))
			FAIL("multipart frame");
		if (fr->kind == FRAME_RFC822 && !(m->parts[fr->part].flags & MESSAGE_PART_RFC822))
			FAIL("rfc822 frame");
		if (m->parts[fr->part].flags & MESSAGE_PART_ENDED)
			FAIL("open frame of an ended part");
	}
	if (m->state == ST_LEAF && (m->leaf < 0 || (uint32_t)m->leaf >= m->nparts))
		FAIL("leaf state without a leaf");
	if (m->state != ST_LEAF && m->leaf != -1)
		FAIL("leaf outside leaf state");
	if (m->state == ST_HEADERS && m->ent_part >= (int32_t)m->nparts)
		FAIL("entity part");
	if (m->ended && (m->nframes || m->leaf != -1 || m->state != ST_DONE))
		FAIL("ended with open parts");
	if (m->nuris > m->lim.max_uris || m->nuris > m->uris_cap)
		FAIL("uri count");
	for (uint32_t i = 0; i < m->nuris; i++)
		if ((size_t)m->uri_off[2 * i] + m->uri_off[2 * i + 1] >= m->uristore.len ||
		    m->uri_off[2 * i + 1] > m->lim.max_uri_len)
			FAIL("uri outside the store");
	if (m->c.body_bytes < m->body.len || m->c.rawbody_bytes < m->rawbody.len)
		FAIL("view copy larger than the view");
	if (!(m->lim.flags & MESSAGE_F_NO_COPIES) &&
	    (m->c.body_bytes != m->body.len + m->c.body_cut ||
	     m->c.rawbody_bytes != m->rawbody.len + m->c.rawbody_cut))
		FAIL("view bytes != kept + cut");
	if (m->anomalies >> MESSAGE_ANOM_MAX)
		FAIL("unknown anomaly bit");
#undef FAIL
	if (why)
		*why = NULL;
	return 0;
bad:
	if (why)
		*why = w;
	return -EINVAL;
}
