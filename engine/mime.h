/* MIME building blocks for the message stage: streaming decoders and
 * header-value helpers, none of which allocate on the heap.
 *
 * - mime_b64 / mime_qp: Content-Transfer-Encoding decoders that keep their
 *   state between calls, so a message may be fed in pieces split anywhere
 *   (inside a base64 quantum, between "=" and its hex digits).
 * - mime_conv: charset to UTF-8. utf-8, us-ascii, iso-8859-1 and
 *   windows-1252 take a table path; anything else goes through glibc iconv
 *   (whose handle glibc allocates: the one heap use outside engine/mem.h).
 *   Bytes that do not convert become U+FFFD and are counted.
 * - mime_decode_header(): RFC 2047 encoded words ("=?charset?B|Q?...?=") to
 *   UTF-8, joining adjacent words and dropping the whitespace between them.
 * - mime_params: a structured header value ("text/plain; charset=x",
 *   "attachment; filename*=utf-8''a%20b") parsed into its main value and
 *   parameters, with RFC 2231 continuations and RFC 2047 names resolved by
 *   mime_params_filename().
 */
#ifndef BW_MIME_H
#define BW_MIME_H

#include <stddef.h>
#include <stdint.h>

/* ---- base64 ------------------------------------------------------------ */

struct mime_b64 {
	uint32_t acc;        /* bits of the current quantum */
	uint8_t n;           /* sextets in acc (0..3) */
	uint64_t bad;        /* characters outside the alphabet, skipped */
	uint64_t partial;    /* quanta cut short (one lone sextet, missing pad) */
};

void mime_b64_init(struct mime_b64 *s);
/* Decodes n bytes of base64 text; whitespace is skipped silently, other
 * non-alphabet bytes are skipped and counted in s->bad, "=" ends a quantum
 * (data after it starts a new one: concatenated base64 is tolerated).
 * out must hold MIME_B64_OUT(n) bytes; returns the bytes written. */
#define MIME_B64_OUT(n) ((n) / 4 * 3 + 3)
size_t mime_b64_decode(struct mime_b64 *s, const uint8_t *in, size_t n, uint8_t *out);
/* Flushes a quantum left without padding (up to 2 bytes into out). */
size_t mime_b64_finish(struct mime_b64 *s, uint8_t *out);

/* ---- quoted-printable --------------------------------------------------- */

struct mime_qp {
	uint8_t state;       /* 0 text, 1 after '=', 2 after '=' and one hex
			      * digit, 3 after '=' and blanks */
	uint8_t hex;         /* the first hex digit in state 2 */
	uint8_t nblank;      /* blanks held back: trailing ones are dropped */
	uint8_t blank[16];
	uint64_t bad;        /* '=' not followed by two hex digits (kept literally) */
};

void mime_qp_init(struct mime_qp *s);
/* Decodes one piece of a body line (without its line end). eol says the
 * piece ends the line: trailing blanks are dropped and *hard_break tells
 * whether the line ends with a real line break (1) or a soft "=" break (0);
 * without eol *hard_break is 0. Blanks are held back between pieces, so a
 * line may be cut anywhere. out must hold MIME_QP_OUT(n) bytes; returns
 * the bytes written. */
#define MIME_QP_OUT(n) ((n) + 20)
size_t mime_qp_decode(struct mime_qp *s, const uint8_t *in, size_t n, int eol,
		      uint8_t *out, int *hard_break);
/* Flushes a dangling '=' (into out, up to 2 bytes). */
size_t mime_qp_finish(struct mime_qp *s, uint8_t *out);

/* ---- charsets ------------------------------------------------------------ */

enum mime_cs {
	MIME_CS_UTF8 = 1,    /* passed through (us-ascii too: 8-bit bytes kept) */
	MIME_CS_LATIN1,
	MIME_CS_CP1252,
	MIME_CS_ICONV,
	MIME_CS_UNKNOWN,     /* iconv does not know it: bytes passed through */
};

typedef void (*mime_sink_fn)(void *ctx, const uint8_t *p, size_t n);

struct mime_conv {
	enum mime_cs cs;
	void *cd;            /* iconv_t for MIME_CS_ICONV, else NULL */
	uint8_t slot;        /* 1 + the thread's descriptor cache slot, 0: none */
	uint8_t ncarry;      /* an incomplete multibyte sequence held back */
	uint8_t carry[16];
	uint64_t bad;        /* sequences replaced by U+FFFD */
};

/* Maps a charset name (any case, may be empty: us-ascii) to its kind. */
enum mime_cs mime_charset_kind(const char *name, size_t n);
/* Opens a converter for charset name (n bytes). Returns 0, or -ENOENT when
 * the charset is unknown: the converter is still usable and passes bytes
 * through unchanged. Either way mime_conv_close() must be called. */
int mime_conv_open(struct mime_conv *c, const char *name, size_t n);
/* Converts p[0..n) and hands UTF-8 to sink in pieces. */
void mime_conv_feed(struct mime_conv *c, const uint8_t *p, size_t n,
		    mime_sink_fn sink, void *ctx);
/* Flushes held-back bytes (as U+FFFD) and any shift state. */
void mime_conv_finish(struct mime_conv *c, mime_sink_fn sink, void *ctx);
/* Gives the descriptor back to this thread's cache (kept open for the
 * next converter of that charset) or closes it. */
void mime_conv_close(struct mime_conv *c);
/* Closes this thread's cached descriptors that are not in use (at exit, so
 * leak checkers see nothing held). */
void mime_conv_cache_flush(void);

/* Writes the UTF-8 form of code point cp (U+FFFD for invalid ones) into
 * out[4]; returns its length. */
size_t mime_utf8_put(uint32_t cp, uint8_t *out);

/* ---- header values --------------------------------------------------------- */

struct mime_hdr_stats {
	uint32_t words;           /* encoded words decoded */
	uint32_t bad_words;       /* "=?" that did not parse (kept literally) */
	uint32_t charset_unknown; /* words in a charset we cannot convert */
	uint32_t bad_seq;         /* bytes replaced by U+FFFD */
	uint32_t truncated;       /* output did not fit in cap */
};

/* Decodes the RFC 2047 encoded words of an unfolded header value into out
 * (at most cap bytes, not NUL-terminated). Whitespace between two adjacent
 * encoded words is dropped; other text is copied as is. Returns the length
 * written; stats (may be NULL) is added to. */
size_t mime_decode_header(const char *in, size_t n, char *out, size_t cap,
			  struct mime_hdr_stats *stats);

#define MIME_PARAMS_MAX 32
#define MIME_PARAM_ATTR_MAX 40
#define MIME_PARAMS_BUF 4096

struct mime_params {
	char value[128];     /* main value, lowercased ("text/html", "attachment") */
	uint32_t n;          /* parameters kept */
	uint32_t dropped;    /* parameters over MIME_PARAMS_MAX or MIME_PARAMS_BUF */
	struct {
		char attr[MIME_PARAM_ATTR_MAX];  /* lowercased */
		uint16_t off, len;               /* value in buf, unquoted */
	} p[MIME_PARAMS_MAX];
	uint32_t buf_len;
	char buf[MIME_PARAMS_BUF];
};

/* Parses a structured header value. Never fails: malformed input gives
 * whatever parsed (possibly nothing). */
void mime_params_parse(struct mime_params *mp, const char *v, size_t n);
/* The value of parameter attr (lowercase), or NULL; *len gets its length. */
const char *mime_param(const struct mime_params *mp, const char *attr, size_t *len);
/* Resolves parameter attr ("filename" or "name") to UTF-8 in out (cap
 * bytes, NUL-terminated), following RFC 2231 (attr*, attr*0, attr*1*,...)
 * and RFC 2047 inside plain values. Returns the length, 0 when absent. */
size_t mime_params_filename(const struct mime_params *mp, const char *attr,
			    char *out, size_t cap, struct mime_hdr_stats *stats);

#endif
