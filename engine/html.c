/* HTML to text; see html.h. */
#include "html.h"

#include <string.h>
#include <strings.h>

#include "mime.h"

void html_init(struct html *h, html_text_fn text, html_uri_fn uri, void *ctx)
{
	h->state = HTML_TEXT;
	h->quote = 0;
	h->ws_pending = 0;
	h->last = 0;
	h->raw_kind = 0;
	h->raw_match = 0;
	h->dashes = 0;
	h->ent_len = 0;
	h->tag_len = 0;
	h->out_len = 0;
	h->text = text;
	h->uri = uri;
	h->ctx = ctx;
	memset(&h->c, 0, sizeof(h->c));
}

static void out_flush(struct html *h)
{
	if (h->out_len && h->text)
		h->text(h->ctx, h->out, h->out_len);
	h->out_len = 0;
}

static inline void out_byte(struct html *h, uint8_t c)
{
	if (h->out_len == HTML_OUT_MAX)
		out_flush(h);
	h->out[h->out_len++] = c;
	h->last = c;
}

/* Writes visible text, preceded by one space when whitespace was pending. */
static void out_text(struct html *h, const uint8_t *p, size_t n)
{
	if (n == 0)
		return;
	if (h->ws_pending) {
		if (h->last && h->last != '\n' && h->last != ' ')
			out_byte(h, ' ');
		h->ws_pending = 0;
	}
	while (n) {
		size_t k;

		if (h->out_len == HTML_OUT_MAX)
			out_flush(h);
		k = HTML_OUT_MAX - h->out_len;
		if (k > n)
			k = n;
		memcpy(h->out + h->out_len, p, k);
		h->out_len += (uint32_t)k;
		p += k;
		n -= k;
	}
	h->last = h->out[h->out_len - 1];
}

static void out_newline(struct html *h)
{
	h->ws_pending = 0;
	if (h->last && h->last != '\n')
		out_byte(h, '\n');
}

struct entity {
	const char *name;
	uint32_t cp;
};

/* Common named entities; the rest are kept literally (and counted). */
static const struct entity entities[] = {
	{ "amp", '&' }, { "lt", '<' }, { "gt", '>' }, { "quot", '"' },
	{ "apos", '\'' }, { "nbsp", ' ' }, { "copy", 0xa9 }, { "reg", 0xae },
	{ "trade", 0x2122 }, { "hellip", 0x2026 }, { "mdash", 0x2014 },
	{ "ndash", 0x2013 }, { "lsquo", 0x2018 }, { "rsquo", 0x2019 },
	{ "ldquo", 0x201c }, { "rdquo", 0x201d }, { "bull", 0x2022 },
	{ "euro", 0x20ac }, { "pound", 0xa3 }, { "yen", 0xa5 }, { "cent", 0xa2 },
	{ "sect", 0xa7 }, { "deg", 0xb0 }, { "middot", 0xb7 }, { "laquo", 0xab },
	{ "raquo", 0xbb }, { "times", 0xd7 }, { "divide", 0xf7 },
	{ "eacute", 0xe9 }, { "egrave", 0xe8 }, { "agrave", 0xe0 },
	{ "aacute", 0xe1 }, { "ccedil", 0xe7 }, { "ouml", 0xf6 }, { "uuml", 0xfc },
	{ "auml", 0xe4 }, { "szlig", 0xdf }, { "ntilde", 0xf1 },
	{ "shy", 0 }, { "zwnj", 0 }, { "zwj", 0 }, { "lrm", 0 }, { "rlm", 0 },
	{ NULL, 0 },
};

int html_entity(const char *name, size_t n, uint8_t *out)
{
	if (n >= 2 && name[0] == '#') {
		uint32_t cp = 0;
		size_t i = 1;
		int hex = 0, digits = 0;

		if (name[1] == 'x' || name[1] == 'X') {
			hex = 1;
			i = 2;
		}
		for (; i < n; i++) {
			char c = name[i];
			int d;

			if (c >= '0' && c <= '9')
				d = c - '0';
			else if (hex && c >= 'a' && c <= 'f')
				d = c - 'a' + 10;
			else if (hex && c >= 'A' && c <= 'F')
				d = c - 'A' + 10;
			else
				return -1;
			if (cp < 0x110000)
				cp = cp * (hex ? 16 : 10) + (uint32_t)d;
			digits++;
		}
		if (!digits)
			return -1;
		if (cp == 0)
			cp = 0xfffd;
		/* invisible characters used to break up words render as nothing */
		if (cp == 0xad || cp == 0x200b || cp == 0x200c || cp == 0x200d ||
		    cp == 0x200e || cp == 0x200f || cp == 0xfeff)
			return 0;
		return (int)mime_utf8_put(cp, out);
	}
	if (n == 0)
		return -1;
	for (const struct entity *e = entities; e->name; e++)
		if (e->name[0] == name[0] && strlen(e->name) == n && memcmp(e->name, name, n) == 0) {
			if (e->cp == 0)
				return 0;
		return (int)mime_utf8_put(e->cp, out);
		}
	return -1;
}

/* Resolves the entity collected in h->ent; on failure writes it literally. */
static void entity_end(struct html *h, int semicolon)
{
	uint8_t u[4];
	int k;

	h->c.entities++;
	k = html_entity(h->ent, h->ent_len, u);
	if (k >= 0) {
		if (k == 1 && u[0] == ' ')
			h->ws_pending = 1;
		else
			out_text(h, u, (size_t)k);
		return;
	}
	h->c.entities_unknown++;
	out_text(h, (const uint8_t *)"&", 1);
	out_text(h, (const uint8_t *)h->ent, h->ent_len);
	if (semicolon)
		out_text(h, (const uint8_t *)";", 1);
}

/* Kinds of tag name (see tag_kind()). */
enum {
	NK_NONE = 0,
	NK_BLOCK,            /* a block tag: a line break in the text */
	NK_CELL,             /* td, th: a blank */
};

/* Whether low[0..n) is the lowercase s (a literal of length n). */
#define IS(s) (memcmp(low, s, sizeof(s) - 1) == 0)

/* The kind of tag name name[0..n) (any case): one switch on the length,
 * then a few fixed-size compares (the lists of the HTML 4/5 block tags and
 * td/th kept before are unchanged). */
static int tag_kind(const uint8_t *name, size_t n)
{
	char low[10];

	if (n == 0 || n > sizeof(low))
		return NK_NONE;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = name[i];

		low[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
	}
	switch (n) {
	case 1:
		return low[0] == 'p' ? NK_BLOCK : NK_NONE;
	case 2:
		if (IS("td") || IS("th"))
			return NK_CELL;
		if (IS("br") || IS("tr") || IS("li") || IS("hr") || IS("ul") ||
		    IS("ol") || IS("dl") || IS("dd") || IS("dt"))
			return NK_BLOCK;
		if (low[0] == 'h' && low[1] >= '1' && low[1] <= '6')
			return NK_BLOCK;
		return NK_NONE;
	case 3:
		return IS("div") || IS("pre") || IS("nav") ? NK_BLOCK : NK_NONE;
	case 4:
		return IS("body") || IS("html") || IS("head") || IS("form") ||
		       IS("main") ? NK_BLOCK : NK_NONE;
	case 5:
		return IS("table") || IS("title") || IS("aside") || IS("tbody") ||
		       IS("thead") || IS("tfoot") ? NK_BLOCK : NK_NONE;
	case 6:
		return IS("header") || IS("footer") || IS("center") ||
		       IS("figure") ? NK_BLOCK : NK_NONE;
	case 7:
		return IS("section") || IS("article") || IS("address") ||
		       IS("caption") ? NK_BLOCK : NK_NONE;
	case 10:
		return IS("blockquote") || IS("figcaption") ? NK_BLOCK : NK_NONE;
	default:
		return NK_NONE;
	}
}

/* Whether attribute name name[0..n) (any case) holds a URI: href, src,
 * action, background, lowsrc, cite, poster, formaction. */
static int attr_is_uri(const uint8_t *name, size_t n)
{
	char low[10];

	if (n < 3 || n > sizeof(low))
		return 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = name[i];

		low[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
	}
	switch (n) {
	case 3:
		return IS("src");
	case 4:
		return IS("href") || IS("cite");
	case 6:
		return IS("action") || IS("lowsrc") || IS("poster");
	case 10:
		return IS("background") || IS("formaction");
	default:
		return 0;
	}
}

#undef IS

/* Reports the URI in an attribute value: entities decoded, blanks trimmed. */
static void attr_uri(struct html *h, const uint8_t *v, size_t n)
{
	uint8_t buf[HTML_TAG_MAX];
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		if (v[i] == '&') {
			size_t j = i + 1;
			uint8_t u[4];
			int k;

			while (j < n && j - i < 12 && v[j] != ';' && v[j] != '&')
				j++;
			k = html_entity((const char *)v + i + 1, j - i - 1, u);
			if (k >= 0) {
				memcpy(buf + o, u, (size_t)k);
				o += (size_t)k;
				i = j < n && v[j] == ';' ? j : j - 1;
				continue;
			}
		}
		if (v[i] == '\n' || v[i] == '\r' || v[i] == '\t')
			continue;
		buf[o++] = v[i];
	}
	while (o && buf[o - 1] == ' ')
		o--;
	{
		size_t s = 0;

		while (s < o && buf[s] == ' ')
			s++;
		if (o - s && h->uri) {
			h->c.uris++;
			h->uri(h->ctx, buf + s, o - s);
		}
	}
}

/* Handles the tag collected in h->tag (without '<' and '>'). */
static void tag_end(struct html *h)
{
	const uint8_t *t = h->tag;
	size_t n = h->tag_len, i = 0, ns, nl;
	int closing = 0;

	h->c.tags++;
	h->state = HTML_TEXT;
	if (n == 0 || t[0] == '!' || t[0] == '?')
		return;
	if (t[0] == '/') {
		closing = 1;
		i = 1;
	}
	ns = i;
	while (i < n && ((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
			 (t[i] >= '0' && t[i] <= '9')))
		i++;
	nl = i - ns;
	switch (tag_kind(t + ns, nl)) {
	case NK_BLOCK:
		out_newline(h);
		break;
	case NK_CELL:
		h->ws_pending = 1;
		break;
	}
	if (closing)
		return;
	if (nl == 6 && strncasecmp((const char *)t + ns, "script", 6) == 0 && t[n - 1] != '/') {
		h->state = HTML_RAWTEXT;
		h->raw_kind = 1;
		h->raw_match = 0;
	} else if (nl == 5 && strncasecmp((const char *)t + ns, "style", 5) == 0 && t[n - 1] != '/') {
		h->state = HTML_RAWTEXT;
		h->raw_kind = 2;
		h->raw_match = 0;
	}
	/* attributes: name[=value] with value quoted or bare */
	while (i < n) {
		size_t as, al, vs = 0, vl = 0;

		while (i < n && (t[i] == ' ' || t[i] == '\t' || t[i] == '\r' ||
				 t[i] == '\n' || t[i] == '/'))
			i++;
		as = i;
		while (i < n && t[i] != '=' && t[i] != ' ' && t[i] != '\t' &&
		       t[i] != '\r' && t[i] != '\n' && t[i] != '/')
			i++;
		al = i - as;
		while (i < n && (t[i] == ' ' || t[i] == '\t' || t[i] == '\r' || t[i] == '\n'))
			i++;
		if (i < n && t[i] == '=') {
			i++;
			while (i < n && (t[i] == ' ' || t[i] == '\t' || t[i] == '\r' || t[i] == '\n'))
				i++;
			if (i < n && (t[i] == '"' || t[i] == '\'')) {
				uint8_t q = t[i++];

				vs = i;
				while (i < n && t[i] != q)
					i++;
				vl = i - vs;
				if (i < n)
					i++;
			} else {
				vs = i;
				while (i < n && t[i] != ' ' && t[i] != '\t' && t[i] != '\r' && t[i] != '\n')
					i++;
				vl = i - vs;
			}
			if (al && attr_is_uri(t + as, al))
				attr_uri(h, t + vs, vl);
		}
		if (al == 0 && i < n && t[i] != '=')
			i++;        /* a stray byte: step over it */
	}
}

static void tag_put(struct html *h, uint8_t c)
{
	if (h->tag_len < HTML_TAG_MAX) {
		h->tag[h->tag_len++] = c;
	} else if (h->tag_len == HTML_TAG_MAX) {
		h->c.tags_truncated++;
		h->tag_len++;       /* marks "already counted" */
	}
}

/* tag_put() of each byte of p[0..n). */
static void tag_put_n(struct html *h, const uint8_t *p, size_t n)
{
	if (h->tag_len < HTML_TAG_MAX) {
		size_t k = HTML_TAG_MAX - h->tag_len;

		if (k > n)
			k = n;
		memcpy(h->tag + h->tag_len, p, k);
		h->tag_len += (uint32_t)k;
		n -= k;
	}
	if (n && h->tag_len == HTML_TAG_MAX) {
		h->c.tags_truncated++;
		h->tag_len++;
	}
}

/* Bytes with a meaning in text (1): '<', '&' and whitespace. */
static const uint8_t text_special[256] = {
	['<'] = 1, ['&'] = 1, [' '] = 1, ['\t'] = 1, ['\r'] = 1, ['\n'] = 1, ['\f'] = 1,
};

/* Bytes with a meaning inside a tag outside quotes (1): '>' and quotes. */
static const uint8_t tag_special[256] = {
	['>'] = 1, ['"'] = 1, ['\''] = 1,
};

void html_feed(struct html *h, const uint8_t *p, size_t n)
{
	static const char script_end[] = "</script";
	static const char style_end[] = "</style";

	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];

		switch (h->state) {
		case HTML_TEXT:
			if (c == '<') {
				h->state = HTML_TAG_OPEN;
			} else if (c == '&') {
				h->state = HTML_ENTITY;
				h->ent_len = 0;
			} else if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f') {
				/* the whole run: each byte of it would only
				 * set ws_pending again */
				h->ws_pending = 1;
				while (i + 1 < n && (p[i + 1] == ' ' || p[i + 1] == '\t' ||
						     p[i + 1] == '\r' || p[i + 1] == '\n' ||
						     p[i + 1] == '\f'))
					i++;
			} else {
				/* a run of plain text at once; a single ' '
				 * between two plain bytes is part of it (it
				 * would come out as that ' ' anyway, unless the
				 * byte before it is a NUL: see out_text) */
				size_t j = i + 1;

				for (;;) {
					while (j < n && !text_special[p[j]])
						j++;
					if (j + 1 < n && p[j] == ' ' && p[j - 1] != 0 &&
					    !text_special[p[j + 1]]) {
						j += 2;
						continue;
					}
					break;
				}
				out_text(h, p + i, j - i);
				i = j - 1;
			}
			break;
		case HTML_TAG_OPEN:
			if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			    c == '/' || c == '!' || c == '?') {
				h->state = HTML_TAG;
				h->tag_len = 0;
				h->quote = 0;
				tag_put(h, c);
			} else {
				out_text(h, (const uint8_t *)"<", 1);
				h->state = HTML_TEXT;
				i--;
			}
			break;
		case HTML_TAG:
			if (h->quote) {
				if (c == h->quote) {
					h->quote = 0;
					tag_put(h, c);
				} else {
					/* up to the closing quote at once */
					const uint8_t *q = memchr(p + i, h->quote, n - i);
					size_t j = q ? (size_t)(q - p) : n;

					tag_put_n(h, p + i, j - i);
					i = j - 1;
				}
				break;
			}
			if (h->tag_len >= 3 && !tag_special[c]) {
				/* a run without '>' or quotes at once (the "!--"
				 * check below only matters at 3 bytes) */
				size_t j = i + 1;

				while (j < n && !tag_special[p[j]])
					j++;
				tag_put_n(h, p + i, j - i);
				i = j - 1;
				break;
			}
			if (c == '>') {
				if (h->tag_len > HTML_TAG_MAX)
					h->tag_len = HTML_TAG_MAX;
				tag_end(h);
				break;
			}
			if (c == '"' || c == '\'') {
				/* quotes only open an attribute value (after '=') */
				size_t k = h->tag_len < HTML_TAG_MAX ? h->tag_len : HTML_TAG_MAX;

				while (k && (h->tag[k - 1] == ' ' || h->tag[k - 1] == '\t' ||
					     h->tag[k - 1] == '\r' || h->tag[k - 1] == '\n'))
					k--;
				if (k && h->tag[k - 1] == '=')
					h->quote = c;
			}
			tag_put(h, c);
			if (h->tag_len == 3 && memcmp(h->tag, "!--", 3) == 0) {
				h->state = HTML_COMMENT;
				h->dashes = 0;
				h->c.comments++;
			}
			break;
		case HTML_COMMENT:
			if (c == '-') {
				if (h->dashes < 2)
					h->dashes++;
			} else if (c == '>' && h->dashes >= 2) {
				h->state = HTML_TEXT;
			} else {
				/* nothing before the next '-' can end the comment */
				const uint8_t *q = memchr(p + i + 1, '-', n - i - 1);

				h->dashes = 0;
				i = q ? (size_t)(q - p) - 1 : n - 1;
			}
			break;
		case HTML_ENTITY:
			if (c == ';') {
				entity_end(h, 1);
				h->state = HTML_TEXT;
			} else if (((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				    (c >= '0' && c <= '9') || (c == '#' && h->ent_len == 0)) &&
				   h->ent_len < sizeof(h->ent)) {
				h->ent[h->ent_len++] = (char)c;
			} else {
				if (h->ent_len)
					entity_end(h, 0);
				else
					out_text(h, (const uint8_t *)"&", 1);
				h->state = HTML_TEXT;
				i--;
			}
			break;
		case HTML_RAWTEXT: {
			const char *end = h->raw_kind == 1 ? script_end : style_end;
			size_t len = h->raw_kind == 1 ? sizeof(script_end) - 1 : sizeof(style_end) - 1;
			uint8_t lc = (c >= 'A' && c <= 'Z') ? (uint8_t)(c - 'A' + 'a') : c;

			if (lc == (uint8_t)end[h->raw_match]) {
				if (++h->raw_match == len) {
					/* continue as the closing tag "/script..." */
					h->state = HTML_TAG;
					h->quote = 0;
					h->tag_len = 0;
					for (size_t k = 1; k < len; k++)
						tag_put(h, (uint8_t)end[k]);
					h->raw_match = 0;
				}
			} else if (c == '<') {
				h->raw_match = 1;
			} else {
				/* nothing before the next '<' can match */
				const uint8_t *q = memchr(p + i + 1, '<', n - i - 1);

				h->raw_match = 0;
				i = q ? (size_t)(q - p) - 1 : n - 1;
			}
			break;
		}
		}
	}
	out_flush(h);
}

void html_finish(struct html *h)
{
	if (h->state == HTML_ENTITY) {
		if (h->ent_len)
			entity_end(h, 0);
		else
			out_text(h, (const uint8_t *)"&", 1);
	} else if (h->state == HTML_TAG_OPEN) {
		out_text(h, (const uint8_t *)"<", 1);
	}
	h->state = HTML_TEXT;
	out_flush(h);
}
