/* The message stage: one mail's content, parsed incrementally.
 *
 * The SMTP stage feeds the DATA/BDAT bytes (dot-unstuffed; CRLF or bare LF
 * line ends) in order, in pieces split anywhere. The parser works one line
 * at a time: a line that crosses a feed boundary is copied into a line
 * buffer of max_line bytes; a longer line is handled in max_line pieces, so
 * nothing held grows with the message. What it produces:
 *
 * - the top-level header list: name, raw value, unfolded value and the
 *   RFC 2047-decoded UTF-8 value, all kept in one header store (bounded by
 *   max_headers and max_header_store); Received count and the first one;
 *   convenience fields (From, To, Subject, ...);
 * - the headers of the other MIME parts (inner messages of message/rfc822
 *   parts included), each with its part index, in a store of their own
 *   (bounded by max_part_headers and max_part_header_store): what
 *   SpamAssassin's mimeheader rules read;
 * - the MIME tree as a flat array of parts (root = part 0, each with its
 *   parent), bounded by max_depth and max_parts; leaf bodies are decoded
 *   (base64, quoted-printable), converted to UTF-8 and, for text/html,
 *   rendered to text. Non-text parts are only counted (decoded size):
 *   their content is never stored. Attachments are the parts with a name,
 *   an attachment disposition or a non-text type, and message/rfc822
 *   parts (a bounce's returned message: its size is the inner message's);
 * - the rule views, SpamAssassin style: "full" (the raw bytes), "rawbody"
 *   (decoded text parts, HTML left as is), "body" (the Subject, then the
 *   text parts with HTML rendered) and "uri" (from HTML attributes and
 *   from the text). They are streamed through message_ops as they are
 *   produced, and "body"/"rawbody"/"uri" are also kept in bounded copies
 *   (max_body, max_rawbody, max_uris) for block-mode matching. "full" is
 *   kept (max_full) only for a message whose tap asked for it (see
 *   message_attach(): the rules' full-message stream, and the copy the
 *   full rules that need PCRE2 run on);
 * - anomalies (a bitmask) and counters for every limit.
 *
 * Memory: struct message is a few KiB; buffers (line, pending header,
 * header stores, parts, body and full copies, URIs, HTML state) are allocated through
 * engine/mem.h (MEM_MESSAGE) on first need, grow geometrically up to their
 * limit, and are kept by message_reset() for reuse. The one other heap user
 * is glibc's iconv_open() for charsets without a table path.
 */
#ifndef BW_MESSAGE_H
#define BW_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MESSAGE_DEPTH_MAX 32          /* hard bound on limits.max_depth */

struct message_limits {
	uint32_t max_line;          /* bytes of one line held (longer: pieces) */
	uint32_t max_header_bytes;  /* one header, all folded lines together */
	uint32_t max_headers;       /* top-level headers stored */
	uint32_t max_header_store;  /* bytes of stored header text */
	uint32_t max_depth;         /* MIME nesting (root is depth 0) */
	uint32_t max_parts;         /* MIME parts recorded, root included */
	uint32_t max_body;          /* accumulated "body" view */
	uint32_t max_rawbody;       /* accumulated "rawbody" view */
	uint32_t max_uris;          /* distinct URIs kept */
	uint32_t max_uri_len;       /* longer URIs are cut (counted) */
	uint32_t max_full;          /* kept copy of the raw message (when asked for) */
	uint32_t max_part_headers;  /* headers of MIME parts other than the root */
	uint32_t max_part_header_store; /* bytes of stored part header text */
	uint32_t flags;             /* MESSAGE_F_* */
};

enum message_flags {
	MESSAGE_F_BODY_SUBJECT = 1 << 0,  /* "body" starts with "Subject\n" (SA) */
	MESSAGE_F_NO_COPIES = 1 << 1,     /* stream only: keep no body/rawbody copy */
};

/* Fills lim with the defaults: 8 KiB lines, 64 KiB per header, 1000
 * headers, 256 KiB header store, depth 16, 256 parts, 256 KiB body and
 * rawbody, 256 URIs of up to 2 KiB, 256 KiB of raw message kept when a tap
 * asks for it, 1000 part headers in 128 KiB, MESSAGE_F_BODY_SUBJECT.
 * message_new() also takes any 0 field in its limits as the default. */
void message_limits_default(struct message_limits *lim);

enum message_view {
	MESSAGE_VIEW_FULL = 1,      /* raw bytes as fed (kept only on request) */
	MESSAGE_VIEW_BODY,          /* decoded, UTF-8, HTML rendered */
	MESSAGE_VIEW_RAWBODY,       /* decoded, UTF-8, HTML as is */
};

enum message_cte {
	MESSAGE_CTE_7BIT = 0,       /* also 8bit, binary and absent */
	MESSAGE_CTE_QP,
	MESSAGE_CTE_BASE64,
	MESSAGE_CTE_UNKNOWN,        /* treated as 7bit, counted */
};

enum message_part_flags {
	MESSAGE_PART_MULTIPART = 1 << 0,
	MESSAGE_PART_RFC822 = 1 << 1,     /* message/rfc822: its child is the inner message */
	MESSAGE_PART_TEXT = 1 << 2,       /* delivered to body/rawbody */
	MESSAGE_PART_HTML = 1 << 3,
	MESSAGE_PART_ATTACHMENT = 1 << 4, /* disposition attachment, a name, not text, or
					   * message/rfc822 */
	MESSAGE_PART_OPAQUE = 1 << 5,     /* not descended into (depth or part limit) */
	MESSAGE_PART_CLOSED = 1 << 6,     /* multipart: its close delimiter was seen */
	MESSAGE_PART_ENDED = 1 << 7,      /* the part is complete */
};

#define MESSAGE_TYPE_MAX 64
#define MESSAGE_CHARSET_MAX 40
#define MESSAGE_NAME_MAX 256

struct message_part {
	uint32_t index;             /* position in the part array; 0 = the message */
	int32_t parent;             /* -1 for the root */
	uint16_t depth;
	uint16_t flags;             /* MESSAGE_PART_* */
	enum message_cte cte;
	uint32_t header_count;      /* headers of this entity */
	uint64_t raw_size;          /* body bytes as on the wire (line ends count 1);
				     * message/rfc822: the inner message's */
	uint64_t decoded_size;      /* after base64/quoted-printable (rfc822: raw_size) */
	char type[MESSAGE_TYPE_MAX];        /* lowercased "text/plain" */
	char charset[MESSAGE_CHARSET_MAX];  /* lowercased, "" when none */
	char name[MESSAGE_NAME_MAX];        /* UTF-8 file name, "" when none */
};

struct message_header {
	const char *name;           /* as written ("SUBJECT"), NUL-terminated */
	const char *raw;            /* after the colon, folding kept (LF line ends) */
	const char *value;          /* unfolded, outer blanks trimmed */
	const char *decoded;        /* value with RFC 2047 words decoded (UTF-8) */
	uint32_t name_len, raw_len, value_len, decoded_len;
};

enum message_field {
	MESSAGE_FIELD_FROM = 0,
	MESSAGE_FIELD_TO,
	MESSAGE_FIELD_CC,
	MESSAGE_FIELD_SUBJECT,
	MESSAGE_FIELD_MESSAGE_ID,
	MESSAGE_FIELD_DATE,
	MESSAGE_FIELD_IN_REPLY_TO,
	MESSAGE_FIELD_REFERENCES,
	MESSAGE_FIELD_AUTO_SUBMITTED,
	MESSAGE_FIELD_PRECEDENCE,
	MESSAGE_FIELD_LIST_ID,
	MESSAGE_FIELD_CONTENT_TYPE,
	MESSAGE_FIELD_RETURN_PATH,
	MESSAGE_FIELD_MIME_VERSION,
	MESSAGE_FIELD_REPLY_TO,
	MESSAGE_FIELD_SENDER,
	MESSAGE_FIELD_MAX
};

enum message_anomaly {
	MESSAGE_ANOM_HEADER_TOO_LONG = 0,   /* a header over max_header_bytes */
	MESSAGE_ANOM_TOO_MANY_HEADERS,      /* over max_headers (not stored) */
	MESSAGE_ANOM_HEADER_STORE_FULL,     /* over max_header_store (not stored) */
	MESSAGE_ANOM_BAD_HEADER_LINE,       /* not a header: the block ends there (or,
					     * after a header ending in ';', a fold
					     * without a blank, kept) */
	MESSAGE_ANOM_8BIT_IN_HEADER,
	MESSAGE_ANOM_NUL_BYTE,
	MESSAGE_ANOM_LONG_LINE,             /* a line over 998 bytes (RFC 5322) */
	MESSAGE_ANOM_MIME_DEPTH,
	MESSAGE_ANOM_TOO_MANY_PARTS,
	MESSAGE_ANOM_MISSING_BOUNDARY,      /* multipart without a usable boundary */
	MESSAGE_ANOM_MISSING_BOUNDARY_END,  /* multipart never closed */
	MESSAGE_ANOM_BAD_BASE64,
	MESSAGE_ANOM_BAD_QP,
	MESSAGE_ANOM_BAD_CTE,               /* unknown Content-Transfer-Encoding */
	MESSAGE_ANOM_CHARSET_UNKNOWN,
	MESSAGE_ANOM_BAD_CHARSET_DATA,      /* bytes invalid in their charset */
	MESSAGE_ANOM_BAD_ENCODED_WORD,
	MESSAGE_ANOM_BODY_TRUNCATED,        /* body or rawbody copy hit its cap */
	MESSAGE_ANOM_TOO_MANY_URIS,
	MESSAGE_ANOM_NO_HEADERS,            /* the message does not start with a header */
	MESSAGE_ANOM_HEADERS_UNTERMINATED,  /* ended inside the header block */
	MESSAGE_ANOM_BARE_CR_LF_MIX,        /* both CRLF and bare LF line ends */
	MESSAGE_ANOM_FULL_TRUNCATED,        /* the kept raw copy hit max_full */
	MESSAGE_ANOM_PART_HEADERS_CUT,      /* part headers over max_part_headers or
					     * max_part_header_store (not stored) */
	MESSAGE_ANOM_MAX
};

struct message_counters {
	uint64_t bytes;             /* fed */
	uint64_t lines;
	uint64_t line_pieces;       /* extra pieces of lines over max_line */
	uint64_t long_lines;        /* over 998 bytes */
	uint64_t headers;           /* top-level headers seen */
	uint64_t headers_dropped;   /* not stored: count or store cap */
	uint64_t header_bytes_cut;  /* bytes past max_header_bytes */
	uint64_t part_headers;      /* headers of MIME parts */
	uint64_t part_headers_dropped;  /* not stored: count or store cap */
	uint64_t received;
	uint64_t parts;             /* recorded */
	uint64_t parts_dropped;     /* over max_parts */
	uint64_t depth_hits;        /* containers not descended into */
	uint64_t unclosed_multiparts;
	uint64_t base64_bad_chars;
	uint64_t base64_partial;
	uint64_t qp_bad;
	uint64_t charset_unknown;
	uint64_t charset_bad_bytes;
	uint64_t encoded_words;
	uint64_t encoded_words_bad;
	uint64_t body_bytes;        /* "body" view produced (streamed) */
	uint64_t rawbody_bytes;
	uint64_t body_cut;          /* "body" bytes not kept in the copy */
	uint64_t rawbody_cut;
	uint64_t full_cut;          /* raw bytes not kept in the full copy */
	uint64_t uris;              /* distinct URIs reported */
	uint64_t uris_dropped;      /* over max_uris */
	uint64_t uris_cut;          /* URIs longer than max_uri_len */
	uint64_t html_tags;
	uint64_t html_tags_cut;
	uint64_t nul_bytes;
	uint64_t alloc_fail;        /* allocation failures (distinct from caps) */
};

struct message;

/* Streaming callbacks, all optional. Pointers passed in are valid only
 * during the call. part is NULL for MESSAGE_VIEW_FULL. */
struct message_ops {
	/* each top-level header, once complete */
	void (*on_header)(void *user, const struct message_header *h);
	/* the top-level header block ended: header accessors are final */
	void (*on_headers_end)(void *user, const struct message *m);
	/* a part's headers were read (the root's after on_headers_end) */
	void (*on_part_begin)(void *user, const struct message_part *part);
	void (*on_text)(void *user, const struct message_part *part,
			enum message_view view, const uint8_t *p, size_t n);
	void (*on_uri)(void *user, const struct message_part *part,
		       const char *uri, size_t n);
	void (*on_part_end)(void *user, const struct message_part *part);
};

/* Returns a parser owned by the caller (free with message_free()), or NULL
 * when the allocation fails. lim may be NULL (defaults) and is copied; ops
 * may be NULL and must outlive the parser; user is passed to the ops. */
struct message *message_new(const struct message_limits *lim,
			    const struct message_ops *ops, void *user);
/* Feeds the next n bytes. Cannot fail: refusals are counted. */
void message_feed(struct message *m, const uint8_t *p, size_t n);
/* Ends the message: flushes the last line, closes open parts (counting
 * unclosed multiparts) and decoders. Feeding after it is ignored. */
void message_end(struct message *m);
/* Forgets the message, keeping the buffers; limits, ops and user stay.
 * An attached tap object is released (see message_attach()). */
void message_reset(struct message *m);
void message_free(struct message *m);

/* Accessors. Header pointers stay valid until the next feed, reset or
 * free (final once the header block ended); the rest until reset/free. */
int message_headers_done(const struct message *m);
/* What the readers of a message (the rules) need kept of it; the message
 * stage does only that work. Every field is true by default (a message made
 * by message_new() keeps everything); a field off changes what is kept,
 * never what is counted, so the record, the counters and the anomalies do
 * not depend on it.
 *   uris          the URI list (message_uri_at()). Off, the text scanner and
 *                 HTML link extraction do not run and message_uri_count()
 *                 stays 0: for a rule set without uri rules.
 *   text          the text views (body, rawbody) and the URI list. Off,
 *                 leaves are still transfer-decoded (sizes, base64/QP
 *                 anomalies) and charset-converted (charset anomalies), but
 *                 the text goes nowhere: no HTML rendering, no kept copies,
 *                 no on_text/on_uri calls, body_bytes/rawbody_bytes stay 0.
 *                 For a rule set without body, rawbody or uri rules (or no
 *                 rules).
 *   part_headers  the headers of MIME parts other than the message itself
 *                 (message_part_header_at()). Off, they are parsed for the
 *                 part's own fields (type, charset, name) and counted
 *                 against the part header limits (so part_headers_cut does
 *                 not depend on it), not kept: for no mimeheader rules.
 *   headers       every top-level header (message_header_at()). Off, only
 *                 the headers the record reads are kept (the named fields,
 *                 the first Received line); the others are parsed (RFC 2047,
 *                 To/Cc counts) and counted against max_headers and
 *                 max_header_store as if kept: for no header or mimeheader
 *                 rules (or none). */
struct message_wants {
	bool uris;
	bool text;
	bool part_headers;
	bool headers;
};

/* Sets what m keeps (see struct message_wants; w is copied). Set before the
 * first feed; kept across message_reset(). */
void message_want(struct message *m, const struct message_wants *w);
/* Bytes of the message body (after the header block's blank line) fed so far,
 * line ends counted as one byte (SpamAssassin's pristine_body_length of the
 * message stored with LF line ends); 0 before the headers end. */
uint64_t message_body_length(const struct message *m);
int message_ended(const struct message *m);
uint32_t message_header_count(const struct message *m);
const struct message_header *message_header_at(const struct message *m, uint32_t i);
/* First header named name (case-insensitive), or NULL. */
const struct message_header *message_header(const struct message *m, const char *name);
/* The next header named like prev after it, or NULL. */
const struct message_header *message_header_next(const struct message *m,
						 const struct message_header *prev);
/* Decoded value of the first header named name, or NULL. */
const char *message_header_value(const struct message *m, const char *name);
/* Decoded value of a convenience field (first occurrence), or NULL. */
const char *message_field(const struct message *m, enum message_field f);
const char *message_field_name(enum message_field f);
/* Addresses in To and Cc (all occurrences; entries with an '@'). */
uint32_t message_to_count(const struct message *m);
uint32_t message_cc_count(const struct message *m);
uint32_t message_received_count(const struct message *m);
/* The first (topmost) Received header's unfolded value, or NULL. */
const char *message_first_received(const struct message *m);

/* Headers of the MIME parts other than the root (whose headers are the
 * top-level ones above), in message order, so by nondecreasing part index:
 * the i-th stored one, or NULL; *part (may be NULL) gets its part index. */
uint32_t message_part_header_count(const struct message *m);
const struct message_header *message_part_header_at(const struct message *m, uint32_t i,
						    uint32_t *part);

uint32_t message_part_count(const struct message *m);
const struct message_part *message_part_at(const struct message *m, uint32_t i);
/* Parts with MESSAGE_PART_ATTACHMENT, in order: i-th one, or NULL. */
const struct message_part *message_attachment(const struct message *m, uint32_t i);

/* The kept copy of MESSAGE_VIEW_BODY, MESSAGE_VIEW_RAWBODY or, when a tap
 * asked for it, MESSAGE_VIEW_FULL (not NUL-terminated; may be NULL with
 * *len 0). */
const uint8_t *message_view(const struct message *m, enum message_view v, size_t *len);
uint32_t message_uri_count(const struct message *m);
const char *message_uri_at(const struct message *m, uint32_t i, size_t *len);

uint64_t message_anomalies(const struct message *m);
const char *message_anomaly_name(enum message_anomaly a);
/* Writes the set anomalies of mask as "a,b,c" into buf (always
 * NUL-terminated when cap > 0); returns the length it needed. */
size_t message_anomalies_format(uint64_t mask, char *buf, size_t cap);
const struct message_counters *message_counters(const struct message *m);
/* Bytes this parser holds from mem.h now (struct and buffers). */
size_t message_memory(const struct message *m);
/* Number of mem_alloc/realloc calls this parser made since message_new. */
uint64_t message_allocations(const struct message *m);

/* A tap: an object that sees the raw bytes of the message being fed and
 * lives as long as that message does. The rules' full-message stream is
 * one (verdict.c): attached when a transaction's content begins, fed each
 * piece as message_feed() gets it (before parsing), and released by the
 * next message_reset() or message_free(), whichever path ends the message
 * (end of data, RSET, abort, gap, flow eviction), so it can never outlive
 * the message nor leak. */
struct message_tap {
	void (*feed)(void *obj, const uint8_t *p, size_t n);
	void (*release)(void *obj);     /* the tap's owner frees obj here */
};

/* Attaches obj (through tap, which must outlive the attachment) to m,
 * releasing any object attached before. Call before the first byte is
 * fed. keep_full: also keep the first max_full raw bytes
 * (MESSAGE_VIEW_FULL; beyond them the full_truncated anomaly and
 * counters.full_cut). */
void message_attach(struct message *m, const struct message_tap *tap, void *obj, int keep_full);
/* The object attached through tap, or NULL. */
void *message_attached(const struct message *m, const struct message_tap *tap);

/* Checks the internal invariants. Returns 0, or -EINVAL with *why (may be
 * NULL) naming the first one broken. */
int message_validate(const struct message *m, const char **why);

#endif
