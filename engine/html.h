/* HTML to text for body rules, streaming and allocation-free.
 *
 * A struct html is a small state machine fed UTF-8 HTML in arbitrary
 * pieces. It drops tags and comments, skips <script> and <style> content,
 * decodes entities (named common ones and numeric), collapses whitespace,
 * turns block tags into line breaks and hands URIs found in href/src-like
 * attributes to a callback. Rendered text is batched in an internal buffer
 * of HTML_OUT_MAX bytes and handed to the text callback when it fills, at
 * the end of each html_feed() and at html_finish(). A tag longer than
 * HTML_TAG_MAX is cut (counted): its trailing attributes are lost.
 */
#ifndef BW_HTML_H
#define BW_HTML_H

#include <stddef.h>
#include <stdint.h>

#define HTML_TAG_MAX 2048
#define HTML_OUT_MAX 512

typedef void (*html_text_fn)(void *ctx, const uint8_t *p, size_t n);
typedef void (*html_uri_fn)(void *ctx, const uint8_t *p, size_t n);

enum html_state {
	HTML_TEXT = 1,
	HTML_TAG_OPEN,       /* after '<' */
	HTML_TAG,            /* inside a tag, collecting it */
	HTML_ENTITY,         /* after '&' */
	HTML_COMMENT,        /* inside <!-- --> */
	HTML_RAWTEXT,        /* inside <script> or <style> */
};

struct html_counters {
	uint64_t tags;
	uint64_t tags_truncated;   /* tags over HTML_TAG_MAX */
	uint64_t entities;
	uint64_t entities_unknown; /* kept literally */
	uint64_t uris;
	uint64_t comments;
};

struct html {
	enum html_state state;
	uint8_t quote;             /* open quote char inside a tag, or 0 */
	uint8_t ws_pending;        /* whitespace seen, not yet written */
	uint8_t last;              /* last byte written (0 at the start) */
	uint8_t raw_kind;          /* 1 script, 2 style */
	uint8_t raw_match;         /* bytes of "</script" matched */
	uint8_t dashes;            /* '-' run inside a comment */
	uint8_t ent_len;
	char ent[14];
	uint32_t tag_len;
	uint32_t out_len;
	html_text_fn text;
	html_uri_fn uri;
	void *ctx;
	struct html_counters c;
	uint8_t tag[HTML_TAG_MAX];
	uint8_t out[HTML_OUT_MAX];
};

/* Prepares h; text and uri (either may be NULL) get ctx. */
void html_init(struct html *h, html_text_fn text, html_uri_fn uri, void *ctx);
void html_feed(struct html *h, const uint8_t *p, size_t n);
/* Flushes what is pending (an unterminated entity or '<' as text). h may
 * be reused after html_init(). */
void html_finish(struct html *h);
/* Decodes entity name (without '&' and ';': "#65", "#x41", "amp") into
 * UTF-8 in out[4]; returns its length, 0 for the invisible ones (soft
 * hyphen, zero-width space and joiners), -1 when unknown. */
int html_entity(const char *name, size_t n, uint8_t *out);

#endif
