/* MIME decoders and header-value helpers; see mime.h. */
#include "mime.h"

#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- base64 ------------------------------------------------------------ */

enum {
	B64_BAD = -1,
	B64_WS = -2,
	B64_PAD = -3,
};

/* value of each byte: 0..63, B64_BAD (-1), B64_WS (-2), B64_PAD (-3) */
static const int8_t b64_val[256] = {
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -2, -2, -2, -2, -2, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-2, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1, -1, 63,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -3, -1, -1,
	-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, -1,
	-1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

void mime_b64_init(struct mime_b64 *s)
{
	memset(s, 0, sizeof(*s));
}

size_t mime_b64_decode(struct mime_b64 *s, const uint8_t *in, size_t n, uint8_t *out)
{
	uint8_t *o = out;
	uint32_t acc = s->acc;
	unsigned k = s->n;

	for (size_t i = 0; i < n; i++) {
		int v = b64_val[in[i]];

		if (v >= 0) {
			acc = acc << 6 | (uint32_t)v;
			if (++k == 4) {
				o[0] = (uint8_t)(acc >> 16);
				o[1] = (uint8_t)(acc >> 8);
				o[2] = (uint8_t)acc;
				o += 3;
				k = 0;
				acc = 0;
			}
		} else if (v == B64_WS) {
			continue;
		} else if (v == B64_PAD) {
			/* "=" closes the quantum; a second "=" finds k == 0 */
			if (k == 2) {
				*o++ = (uint8_t)(acc >> 4);
			} else if (k == 3) {
				*o++ = (uint8_t)(acc >> 10);
				*o++ = (uint8_t)(acc >> 2);
			} else if (k == 1) {
				s->partial++;
			}
			k = 0;
			acc = 0;
		} else {
			s->bad++;
		}
	}
	s->acc = acc;
	s->n = (uint8_t)k;
	return (size_t)(o - out);
}

size_t mime_b64_finish(struct mime_b64 *s, uint8_t *out)
{
	size_t r = 0;

	if (s->n == 2) {
		out[0] = (uint8_t)(s->acc >> 4);
		r = 1;
	} else if (s->n == 3) {
		out[0] = (uint8_t)(s->acc >> 10);
		out[1] = (uint8_t)(s->acc >> 2);
		r = 2;
	}
	if (s->n)
		s->partial++;
	s->n = 0;
	s->acc = 0;
	return r;
}

/* ---- quoted-printable --------------------------------------------------- */

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

void mime_qp_init(struct mime_qp *s)
{
	memset(s, 0, sizeof(*s));
}

/* Writes the blanks held back in s (they were not trailing after all). */
static uint8_t *qp_blanks_out(struct mime_qp *s, uint8_t *o)
{
	memcpy(o, s->blank, s->nblank);
	o += s->nblank;
	s->nblank = 0;
	return o;
}

size_t mime_qp_decode(struct mime_qp *s, const uint8_t *in, size_t n, int eol,
		      uint8_t *out, int *hard_break)
{
	uint8_t *o = out;

	*hard_break = 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = in[i];
		int blank = c == ' ' || c == '\t';

		switch (s->state) {
		case 0:
			if (blank) {
				/* held until we know they are not trailing */
				if (s->nblank == sizeof(s->blank))
					o = qp_blanks_out(s, o);
				s->blank[s->nblank++] = c;
				break;
			}
			if (s->nblank)
				o = qp_blanks_out(s, o);
			if (c == '=') {
				s->state = 1;
			} else {
				/* a run of literal text at once, up to the next
				 * '=': blanks inside it are followed by a
				 * non-blank, so they come out as they are; only
				 * blanks ending the piece are left to the loop
				 * (held back, as above) */
				const uint8_t *q = memchr(in + i + 1, '=', n - i - 1);
				size_t j = q ? (size_t)(q - in) : n;

				if (!q)
					while (in[j - 1] == ' ' || in[j - 1] == '\t')
						j--;    /* stops at i: in[i] is no blank */
				memcpy(o, in + i, j - i);
				o += j - i;
				i = j - 1;
			}
			break;
		case 1:
			if (hexval(c) >= 0) {
				s->hex = c;
				s->state = 2;
			} else if (blank) {
				/* "=" then blanks: a soft break if the line ends */
				s->state = 3;
				s->blank[s->nblank++] = c;
			} else {
				s->bad++;
				*o++ = '=';
				s->state = 0;
				i--;     /* this byte again, as text */
			}
			break;
		case 3:
			if (blank && s->nblank < sizeof(s->blank)) {
				s->blank[s->nblank++] = c;
				break;
			}
			s->bad++;
			*o++ = '=';
			o = qp_blanks_out(s, o);
			s->state = 0;
			i--;
			break;
		default:
			if (hexval(c) >= 0) {
				*o++ = (uint8_t)(hexval(s->hex) << 4 | hexval(c));
				s->state = 0;
			} else {
				s->bad++;
				*o++ = '=';
				*o++ = s->hex;
				s->state = 0;
				i--;
			}
			break;
		}
	}
	if (eol) {
		s->nblank = 0;      /* trailing blanks are transport padding */
		if (s->state == 1 || s->state == 3) {
			s->state = 0;       /* soft line break */
		} else {
			if (s->state == 2) {
				s->bad++;
				*o++ = '=';
				*o++ = s->hex;
				s->state = 0;
			}
			*hard_break = 1;
		}
	}
	return (size_t)(o - out);
}

size_t mime_qp_finish(struct mime_qp *s, uint8_t *out)
{
	size_t r = 0;

	if (s->state == 1 || s->state == 3) {
		out[r++] = '=';
		s->bad++;
	} else if (s->state == 2) {
		out[r++] = '=';
		out[r++] = s->hex;
		s->bad++;
	}
	s->nblank = 0;
	s->state = 0;
	return r;
}

/* ---- charsets ------------------------------------------------------------ */

size_t mime_utf8_put(uint32_t cp, uint8_t *out)
{
	if (cp >= 0xd800 && cp <= 0xdfff)
		cp = 0xfffd;
	if (cp < 0x80) {
		out[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (uint8_t)(0xc0 | cp >> 6);
		out[1] = (uint8_t)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp > 0x10ffff)
		cp = 0xfffd;
	if (cp < 0x10000) {
		out[0] = (uint8_t)(0xe0 | cp >> 12);
		out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (uint8_t)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (uint8_t)(0xf0 | cp >> 18);
	out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (uint8_t)(0x80 | (cp & 0x3f));
	return 4;
}

/* windows-1252 0x80..0x9f; the five holes map to themselves as latin-1 does. */
static const uint16_t cp1252_hi[32] = {
	0x20ac, 0x0081, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021,
	0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008d, 0x017d, 0x008f,
	0x0090, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
	0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0x009d, 0x017e, 0x0178,
};

static int name_eq(const char *a, size_t n, const char *lower)
{
	size_t i;

	for (i = 0; i < n && lower[i]; i++) {
		char c = a[i];

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (c != lower[i])
			return 0;
	}
	return i == n && lower[i] == '\0';
}

enum mime_cs mime_charset_kind(const char *name, size_t n)
{
	static const char *const utf8[] = {
		"utf-8", "utf8", "us-ascii", "ascii", "ansi_x3.4-1968", "us", "",
		"unicode-1-1-utf-8", NULL };
	static const char *const latin1[] = {
		"iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1",
		"iso-ir-100", "cp819", NULL };
	static const char *const cp1252[] = {
		"windows-1252", "cp1252", "win-1252", "x-cp1252", NULL };

	while (n && (name[0] == ' ' || name[0] == '\t' || name[0] == '"')) {
		name++;
		n--;
	}
	while (n && (name[n - 1] == ' ' || name[n - 1] == '\t' || name[n - 1] == '"'))
		n--;
	for (int i = 0; utf8[i]; i++)
		if (name_eq(name, n, utf8[i]))
			return MIME_CS_UTF8;
	for (int i = 0; latin1[i]; i++)
		if (name_eq(name, n, latin1[i]))
			return MIME_CS_LATIN1;
	for (int i = 0; cp1252[i]; i++)
		if (name_eq(name, n, cp1252[i]))
			return MIME_CS_CP1252;
	return MIME_CS_ICONV;
}

/* iconv descriptors, kept open per thread. glibc's iconv_open() looks the
 * name up in the gconv configuration and dlopen()s the module; iconv_close()
 * dlclose()s it when its last user goes. Opened and closed per MIME part
 * and per encoded word, that load/unload was about a seventh of the whole
 * parse time on the SpamAssassin corpus (perf: _dl_map_object, _dl_close,
 * strcmp in ld.so, mmap/munmap). So descriptors go back to a small cache
 * on close, reset to their initial shift state when taken again, and names
 * iconv refused are remembered too (a hostile stream naming a new bogus
 * charset per part costs one failed iconv_open each, as before; a repeated
 * one costs a string compare). Least recently used slots are reused; a
 * slot in use is never taken, so nested converters get their own. */
#define CONV_CACHE_SLOTS 16

struct conv_slot {
	iconv_t cd;                 /* (iconv_t)-1: a name iconv refused */
	uint64_t used;              /* tick of the last open, 0: empty */
	uint8_t busy;
	char name[64];              /* lowercased */
};

static __thread struct conv_slot conv_cache[CONV_CACHE_SLOTS];
static __thread uint64_t conv_tick;

/* Returns the slot index + 1 holding an open descriptor for name (marked
 * busy, *cd set), 0 when not cacheable (every slot busy), or -1 when iconv
 * does not know the name. */
static int conv_cache_get(const char *name, iconv_t *cd)
{
	struct conv_slot *victim = NULL;

	conv_tick++;
	for (int i = 0; i < CONV_CACHE_SLOTS; i++) {
		struct conv_slot *s = &conv_cache[i];

		if (s->used && !s->busy && strcmp(s->name, name) == 0) {
			s->used = conv_tick;
			if (s->cd == (iconv_t)-1)
				return -1;
			iconv(s->cd, NULL, NULL, NULL, NULL);
			s->busy = 1;
			*cd = s->cd;
			return i + 1;
		}
		if (!s->busy && (!victim || s->used < victim->used))
			victim = s;
	}
	*cd = iconv_open("UTF-8", name);
	if (!victim)
		return *cd == (iconv_t)-1 ? -1 : 0;
	if (victim->used && victim->cd != (iconv_t)-1)
		iconv_close(victim->cd);
	victim->cd = *cd;
	victim->used = conv_tick;
	snprintf(victim->name, sizeof(victim->name), "%s", name);
	if (*cd == (iconv_t)-1)
		return -1;
	victim->busy = 1;
	return (int)(victim - conv_cache) + 1;
}

void mime_conv_cache_flush(void)
{
	for (int i = 0; i < CONV_CACHE_SLOTS; i++) {
		struct conv_slot *s = &conv_cache[i];

		if (!s->used || s->busy)
			continue;
		if (s->cd != (iconv_t)-1)
			iconv_close(s->cd);
		memset(s, 0, sizeof(*s));
	}
}

int mime_conv_open(struct mime_conv *c, const char *name, size_t n)
{
	char buf[64];
	iconv_t cd;
	int slot;

	memset(c, 0, sizeof(*c));
	c->cs = mime_charset_kind(name, n);
	if (c->cs != MIME_CS_ICONV)
		return 0;
	while (n && (name[0] == ' ' || name[0] == '"')) {
		name++;
		n--;
	}
	while (n && (name[n - 1] == ' ' || name[n - 1] == '"'))
		n--;
	if (n == 0 || n >= sizeof(buf))
		goto unknown;
	for (size_t i = 0; i < n; i++) {
		/* iconv names are plain tokens; refuse "//TRANSLIT"-style suffixes */
		if (name[i] == '/' || (uint8_t)name[i] <= ' ' || (uint8_t)name[i] >= 0x7f)
			goto unknown;
		buf[i] = name[i] >= 'A' && name[i] <= 'Z' ? (char)(name[i] - 'A' + 'a') : name[i];
	}
	buf[n] = '\0';
	{
		/* names mailers use that glibc does not know */
		static const char *const alias[][2] = {
			{ "unicode-1-1-utf-7", "UTF-7" },
			{ "ks_c_5601-1987", "CP949" },
			{ "x-sjis", "SHIFT_JIS" },
			{ "iso-8859-8-i", "ISO-8859-8" },
			{ "x-euc-jp", "EUC-JP" },
			{ "x-gbk", "GBK" },
			{ "x-mac-roman", "MACINTOSH" },
		};

		for (size_t i = 0; i < sizeof(alias) / sizeof(alias[0]); i++)
			if (name_eq(buf, n, alias[i][0])) {
				snprintf(buf, sizeof(buf), "%s", alias[i][1]);
				break;
			}
	}
	slot = conv_cache_get(buf, &cd);
	if (slot < 0)
		goto unknown;
	c->cd = cd;
	c->slot = (uint8_t)slot;
	return 0;
unknown:
	c->cs = MIME_CS_UNKNOWN;
	return -ENOENT;
}

static const uint8_t utf8_fffd[3] = { 0xef, 0xbf, 0xbd };

/* Length of the run of ASCII bytes (below 0x80) at the start of p[0..n). */
static size_t ascii_run(const uint8_t *p, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		if (w & 0x8080808080808080ull)
			break;
	}
	while (i < n && p[i] < 0x80)
		i++;
	return i;
}

/* Table conversion for latin-1 and windows-1252: each byte is one code
 * point. ASCII runs are copied in bulk (or handed on in place when nothing
 * converted is pending). */
static void conv_table(struct mime_conv *c, const uint8_t *p, size_t n,
		       mime_sink_fn sink, void *ctx)
{
	uint8_t out[1024];
	size_t o = 0, i = 0;

	while (i < n) {
		size_t k = ascii_run(p + i, n - i);

		if (k) {
			if (o == 0 && i + k == n) {
				sink(ctx, p + i, k);
				return;
			}
			while (k) {
				size_t room = sizeof(out) - o, t = k < room ? k : room;

				if (t == 0) {
					sink(ctx, out, o);
					o = 0;
					continue;
				}
				memcpy(out + o, p + i, t);
				o += t;
				i += t;
				k -= t;
			}
			if (i == n)
				break;
		}
		{
			uint32_t cp = p[i++];

			if (o + 4 > sizeof(out)) {
				sink(ctx, out, o);
				o = 0;
			}
			if (c->cs == MIME_CS_CP1252 && cp < 0xa0)
				cp = cp1252_hi[cp - 0x80];
			o += mime_utf8_put(cp, out + o);
		}
	}
	if (o)
		sink(ctx, out, o);
}

/* Runs iconv over *in until it is consumed or stops at an incomplete
 * sequence (left in *in and *inleft). Invalid bytes become U+FFFD. */
static void iconv_run(struct mime_conv *c, char **in, size_t *inleft,
		      mime_sink_fn sink, void *ctx)
{
	char out[2048];

	while (*inleft) {
		char *o = out;
		size_t oleft = sizeof(out);
		size_t r = iconv((iconv_t)c->cd, in, inleft, &o, &oleft);

		if (o > out)
			sink(ctx, (const uint8_t *)out, (size_t)(o - out));
		if (r != (size_t)-1)
			return;
		if (errno == E2BIG)
			continue;
		if (errno == EINVAL)
			return;
		/* EILSEQ, or anything else: skip one byte */
		c->bad++;
		sink(ctx, utf8_fffd, sizeof(utf8_fffd));
		(*in)++;
		(*inleft)--;
	}
}

void mime_conv_feed(struct mime_conv *c, const uint8_t *p, size_t n,
		    mime_sink_fn sink, void *ctx)
{
	char *in;
	size_t left;

	if (n == 0)
		return;
	switch (c->cs) {
	case MIME_CS_LATIN1:
	case MIME_CS_CP1252:
		conv_table(c, p, n, sink, ctx);
		return;
	case MIME_CS_ICONV:
		break;
	default:
		sink(ctx, p, n);
		return;
	}
	while (c->ncarry && n) {
		/* finish the held-back sequence with a few new bytes */
		size_t old = c->ncarry, k = sizeof(c->carry) - old, consumed;

		if (k > n)
			k = n;
		memcpy(c->carry + old, p, k);
		in = (char *)c->carry;
		left = old + k;
		iconv_run(c, &in, &left, sink, ctx);
		consumed = old + k - left;
		if (consumed > old) {
			p += consumed - old;
			n -= consumed - old;
			c->ncarry = 0;
			break;
		}
		if (consumed > 0) {
			memmove(c->carry, c->carry + consumed, old - consumed);
			c->ncarry = (uint8_t)(old - consumed);
			continue;
		}
		if (old + k < sizeof(c->carry)) {
			/* still incomplete and all input taken: wait for more */
			c->ncarry = (uint8_t)(old + k);
			return;
		}
		/* 16 bytes that never complete: drop one, retry */
		c->bad++;
		sink(ctx, utf8_fffd, sizeof(utf8_fffd));
		memmove(c->carry, c->carry + 1, old - 1);
		c->ncarry = (uint8_t)(old - 1);
	}
	in = (char *)(uintptr_t)p;
	left = n;
	iconv_run(c, &in, &left, sink, ctx);
	while (left > sizeof(c->carry)) {
		c->bad++;
		sink(ctx, utf8_fffd, sizeof(utf8_fffd));
		in++;
		left--;
		iconv_run(c, &in, &left, sink, ctx);
	}
	if (left) {
		memcpy(c->carry, in, left);
		c->ncarry = (uint8_t)left;
	}
}

void mime_conv_finish(struct mime_conv *c, mime_sink_fn sink, void *ctx)
{
	if (c->cs != MIME_CS_ICONV)
		return;
	if (c->ncarry) {
		c->bad++;
		sink(ctx, utf8_fffd, sizeof(utf8_fffd));
		c->ncarry = 0;
	}
	{
		char out[64], *o = out;
		size_t oleft = sizeof(out);

		iconv((iconv_t)c->cd, NULL, NULL, &o, &oleft);
		if (o > out)
			sink(ctx, (const uint8_t *)out, (size_t)(o - out));
	}
}

void mime_conv_close(struct mime_conv *c)
{
	if (c->slot)
		conv_cache[c->slot - 1].busy = 0;
	else if (c->cd)
		iconv_close((iconv_t)c->cd);
	c->cd = NULL;
	c->slot = 0;
	c->ncarry = 0;
}

/* ---- RFC 2047 ------------------------------------------------------------- */

struct out_buf {
	char *p;
	size_t len, cap;
	uint32_t truncated;
};

static void out_put(struct out_buf *o, const void *p, size_t n)
{
	if (n > o->cap - o->len) {
		n = o->cap - o->len;
		o->truncated = 1;
	}
	memcpy(o->p + o->len, p, n);
	o->len += n;
}

static void out_sink(void *ctx, const uint8_t *p, size_t n)
{
	out_put(ctx, p, n);
}

/* Converts run[0..n) from charset cs to UTF-8 into o. */
static void run_flush(struct out_buf *o, const char *cs, size_t csn,
		      const uint8_t *run, size_t n, struct mime_hdr_stats *st)
{
	struct mime_conv c;

	if (n == 0)
		return;
	if (mime_conv_open(&c, cs, csn) < 0)
		st->charset_unknown++;
	mime_conv_feed(&c, run, n, out_sink, o);
	mime_conv_finish(&c, out_sink, o);
	st->bad_seq += (uint32_t)c.bad;
	mime_conv_close(&c);
}

/* Parses an encoded word at s[0..n) (s starts with "=?"). On success sets
 * charset/encoding/text spans and returns the word's length, else 0. */
static size_t ew_parse(const char *s, size_t n, size_t *cs_len, char *enc,
		       size_t *text_off, size_t *text_len)
{
	size_t i = 2, cs_end, t;

	while (i < n && s[i] != '?' && (uint8_t)s[i] > ' ' && i < 2 + 64)
		i++;
	if (i >= n || s[i] != '?' || i == 2)
		return 0;
	cs_end = i;
	if (i + 2 >= n || s[i + 2] != '?')
		return 0;
	*enc = s[i + 1];
	if (*enc != 'B' && *enc != 'b' && *enc != 'Q' && *enc != 'q')
		return 0;
	t = i + 3;
	for (i = t; i + 1 < n; i++) {
		if (s[i] == '?' && s[i + 1] == '=')
			break;
		if (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')
			return 0;
	}
	if (i + 1 >= n)
		return 0;
	*cs_len = cs_end - 2;
	*text_off = t;
	*text_len = i - t;
	return i + 2;
}

size_t mime_decode_header(const char *in, size_t n, char *out, size_t cap,
			  struct mime_hdr_stats *stats)
{
	struct mime_hdr_stats dummy;
	struct out_buf o = { .p = out, .cap = cap };
	uint8_t run[1024];            /* decoded bytes of adjacent words, one charset */
	size_t run_len = 0;
	const char *run_cs = NULL;
	size_t run_csn = 0;
	size_t i = 0, lit = 0;        /* lit: start of pending literal text */

	if (!stats) {
		memset(&dummy, 0, sizeof(dummy));
		stats = &dummy;
	}
	while (i + 1 < n) {
		const char *q = memchr(in + i, '=', n - i - 1);
		size_t j, wl, csn, toff, tlen;
		char enc;

		if (!q)
			break;
		j = (size_t)(q - in);
		if (in[j + 1] != '?') {
			i = j + 1;
			continue;
		}
		wl = ew_parse(in + j, n - j, &csn, &enc, &toff, &tlen);
		if (!wl) {
			stats->bad_words++;
			i = j + 2;
			continue;
		}
		/* literal text lit..j: dropped when it is only whitespace
		 * between two encoded words */
		{
			int blank = 1;

			for (size_t k = lit; k < j; k++)
				if (in[k] != ' ' && in[k] != '\t' && in[k] != '\r' && in[k] != '\n')
					blank = 0;
			if (!(blank && run_cs)) {
				run_flush(&o, run_cs, run_csn, run, run_len, stats);
				run_len = 0;
				run_cs = NULL;
				out_put(&o, in + lit, j - lit);
			}
		}
		{
			const char *cs = in + j + 2;
			size_t star = 0;

			/* RFC 2231 language suffix: "utf-8*en" */
			while (star < csn && cs[star] != '*')
				star++;
			csn = star;
			if (run_cs && !(run_csn == csn && strncasecmp(run_cs, cs, csn) == 0)) {
				run_flush(&o, run_cs, run_csn, run, run_len, stats);
				run_len = 0;
			}
			run_cs = cs;
			run_csn = csn;
		}
		{
			const uint8_t *t = (const uint8_t *)in + j + toff;

			if (enc == 'B' || enc == 'b') {
				struct mime_b64 b;
				uint8_t tmp[MIME_B64_OUT(256)];
				size_t done = 0;

				mime_b64_init(&b);
				while (done < tlen) {
					size_t k = tlen - done > 256 ? 256 : tlen - done;
					size_t w = mime_b64_decode(&b, t + done, k, tmp);

					done += k;
					if (done == tlen)
						w += mime_b64_finish(&b, tmp + w);
					if (run_len + w > sizeof(run)) {
						run_flush(&o, run_cs, run_csn, run, run_len, stats);
						run_len = 0;
					}
					memcpy(run + run_len, tmp, w);
					run_len += w;
				}
				if (b.bad)
					stats->bad_words++;
			} else {
				for (size_t k = 0; k < tlen; k++) {
					uint8_t c = t[k];

					if (c == '_') {
						c = ' ';
					} else if (c == '=' && k + 2 < tlen &&
						   hexval(t[k + 1]) >= 0 && hexval(t[k + 2]) >= 0) {
						c = (uint8_t)(hexval(t[k + 1]) << 4 | hexval(t[k + 2]));
						k += 2;
					}
					if (run_len == sizeof(run)) {
						run_flush(&o, run_cs, run_csn, run, run_len, stats);
						run_len = 0;
					}
					run[run_len++] = c;
				}
			}
		}
		stats->words++;
		i = j + wl;
		lit = i;
	}
	run_flush(&o, run_cs, run_csn, run, run_len, stats);
	out_put(&o, in + lit, n - lit);
	if (o.truncated)
		stats->truncated++;
	return o.len;
}

/* ---- structured values and parameters --------------------------------------- */

static int is_tspecial_end(char c)
{
	return c == ';' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void skip_ws(const char *v, size_t n, size_t *i)
{
	while (*i < n && (v[*i] == ' ' || v[*i] == '\t' || v[*i] == '\r' || v[*i] == '\n'))
		(*i)++;
}

void mime_params_parse(struct mime_params *mp, const char *v, size_t n)
{
	size_t i = 0, k = 0;

	mp->value[0] = '\0';
	mp->n = 0;
	mp->dropped = 0;
	mp->buf_len = 0;
	skip_ws(v, n, &i);
	while (i < n && v[i] != ';') {
		char c = v[i++];

		if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '"')
			continue;
		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (k + 1 < sizeof(mp->value))
			mp->value[k++] = c;
	}
	mp->value[k] = '\0';
	while (i < n) {
		char attr[MIME_PARAM_ATTR_MAX];
		size_t an = 0, voff, vlen = 0;
		int over = 0;

		i++;            /* the ';' */
		skip_ws(v, n, &i);
		while (i < n && v[i] != '=' && v[i] != ';' && v[i] != ' ' && v[i] != '\t') {
			char c = v[i++];

			if (c >= 'A' && c <= 'Z')
				c = (char)(c - 'A' + 'a');
			if (an + 1 < sizeof(attr))
				attr[an++] = c;
			else
				over = 1;
		}
		attr[an] = '\0';
		skip_ws(v, n, &i);
		if (i >= n || v[i] != '=') {
			while (i < n && v[i] != ';')
				i++;
			continue;
		}
		i++;
		skip_ws(v, n, &i);
		voff = mp->buf_len;
		if (i < n && v[i] == '"') {
			i++;
			while (i < n && v[i] != '"') {
				char c = v[i];

				if (c == '\\' && i + 1 < n)
					c = v[++i];
				i++;
				if (c == '\r' || c == '\n')
					continue;
				if (voff + vlen < sizeof(mp->buf))
					mp->buf[voff + vlen++] = c;
				else
					over = 1;
			}
			if (i < n)
				i++;    /* closing quote */
			while (i < n && v[i] != ';')
				i++;
		} else {
			while (i < n && !is_tspecial_end(v[i])) {
				if (voff + vlen < sizeof(mp->buf))
					mp->buf[voff + vlen++] = v[i];
				else
					over = 1;
				i++;
			}
			/* tolerate unquoted values with spaces: "name=a b.pdf" */
			while (i < n && v[i] != ';') {
				if (voff + vlen < sizeof(mp->buf))
					mp->buf[voff + vlen++] = v[i];
				else
					over = 1;
				i++;
			}
			while (vlen && (mp->buf[voff + vlen - 1] == ' ' ||
					mp->buf[voff + vlen - 1] == '\t' ||
					mp->buf[voff + vlen - 1] == '\r' ||
					mp->buf[voff + vlen - 1] == '\n'))
				vlen--;
		}
		if (an == 0 || mp->n >= MIME_PARAMS_MAX || over) {
			mp->dropped++;
			if (an == 0 || mp->n >= MIME_PARAMS_MAX)
				continue;
		}
		memcpy(mp->p[mp->n].attr, attr, an + 1);
		mp->p[mp->n].off = (uint16_t)voff;
		mp->p[mp->n].len = (uint16_t)vlen;
		mp->n++;
		mp->buf_len = (uint32_t)(voff + vlen);
	}
}

const char *mime_param(const struct mime_params *mp, const char *attr, size_t *len)
{
	for (uint32_t i = 0; i < mp->n; i++)
		if (strcmp(mp->p[i].attr, attr) == 0) {
			*len = mp->p[i].len;
			return mp->buf + mp->p[i].off;
		}
	*len = 0;
	return NULL;
}

/* Percent-decodes s[0..n) appending to raw (cap rawcap); returns new length. */
static size_t pct_decode(const char *s, size_t n, uint8_t *raw, size_t len, size_t rawcap)
{
	for (size_t i = 0; i < n && len < rawcap; i++) {
		if (s[i] == '%' && i + 2 < n &&
		    hexval((uint8_t)s[i + 1]) >= 0 && hexval((uint8_t)s[i + 2]) >= 0) {
			raw[len++] = (uint8_t)(hexval((uint8_t)s[i + 1]) << 4 | hexval((uint8_t)s[i + 2]));
			i += 2;
		} else {
			raw[len++] = (uint8_t)s[i];
		}
	}
	return len;
}

size_t mime_params_filename(const struct mime_params *mp, const char *attr,
			    char *out, size_t cap, struct mime_hdr_stats *stats)
{
	char key[MIME_PARAM_ATTR_MAX + 8];
	uint8_t raw[1024];
	size_t raw_len = 0, len;
	const char *v, *cs = NULL;
	size_t csn = 0;
	struct out_buf o = { .p = out, .cap = cap ? cap - 1 : 0 };
	struct mime_hdr_stats dummy;

	if (!stats) {
		memset(&dummy, 0, sizeof(dummy));
		stats = &dummy;
	}
	if (cap == 0)
		return 0;
	out[0] = '\0';
	if (strlen(attr) > MIME_PARAM_ATTR_MAX - 6)
		return 0;
	{
		/* most parts have no such parameter: say so before the
		 * RFC 2231 key look-ups below (three snprintf()s each) */
		size_t an = strlen(attr);
		uint32_t i;

		for (i = 0; i < mp->n; i++)
			if (strncmp(mp->p[i].attr, attr, an) == 0 &&
			    (mp->p[i].attr[an] == '\0' || mp->p[i].attr[an] == '*'))
				break;
		if (i == mp->n)
			return 0;
	}
	/* attr*=charset'lang'pct-encoded */
	snprintf(key, sizeof(key), "%s*", attr);
	v = mime_param(mp, key, &len);
	if (v) {
		const char *q1 = memchr(v, '\'', len), *q2;

		if (q1 && (q2 = memchr(q1 + 1, '\'', len - (size_t)(q1 + 1 - v)))) {
			cs = v;
			csn = (size_t)(q1 - v);
			raw_len = pct_decode(q2 + 1, len - (size_t)(q2 + 1 - v), raw, 0, sizeof(raw));
		} else {
			raw_len = pct_decode(v, len, raw, 0, sizeof(raw));
		}
		goto convert;
	}
	/* attr*0, attr*1*, ...: continuations, in numeric order */
	for (unsigned seg = 0; seg < 64; seg++) {
		int ext = 0;

		snprintf(key, sizeof(key), "%s*%u", attr, seg);
		v = mime_param(mp, key, &len);
		if (!v) {
			snprintf(key, sizeof(key), "%s*%u*", attr, seg);
			v = mime_param(mp, key, &len);
			ext = 1;
		}
		if (!v)
			break;
		if (ext) {
			if (seg == 0) {
				const char *q1 = memchr(v, '\'', len), *q2 = NULL;

				if (q1)
					q2 = memchr(q1 + 1, '\'', len - (size_t)(q1 + 1 - v));
				if (q2) {
					cs = v;
					csn = (size_t)(q1 - v);
					len -= (size_t)(q2 + 1 - v);
					v = q2 + 1;
				}
			}
			raw_len = pct_decode(v, len, raw, raw_len, sizeof(raw));
		} else {
			size_t k = len < sizeof(raw) - raw_len ? len : sizeof(raw) - raw_len;

			memcpy(raw + raw_len, v, k);
			raw_len += k;
		}
	}
	if (raw_len) {
		if (!cs) {
			/* plain continuations may still carry RFC 2047 words */
			len = mime_decode_header((const char *)raw, raw_len, out, cap - 1, stats);
			out[len] = '\0';
			return len;
		}
		goto convert;
	}
	v = mime_param(mp, attr, &len);
	if (!v)
		return 0;
	len = mime_decode_header(v, len, out, cap - 1, stats);
	out[len] = '\0';
	return len;
convert:
	if (cs && csn) {
		struct mime_conv c;

		if (mime_conv_open(&c, cs, csn) < 0)
			stats->charset_unknown++;
		mime_conv_feed(&c, raw, raw_len, out_sink, &o);
		mime_conv_finish(&c, out_sink, &o);
		stats->bad_seq += (uint32_t)c.bad;
		mime_conv_close(&c);
	} else {
		out_put(&o, raw, raw_len);
	}
	if (o.truncated)
		stats->truncated++;
	out[o.len] = '\0';
	return o.len;
}
