/* SMTP session parser; see smtp.h for the model.
 *
 * Client side, by state (enum smtp_cstate):
 *   CMD   lines are commands; AUTH lines are SASL responses;
 *   DATA  message bytes, dot-unstuffed by a small byte state machine
 *         (enum smtp_dstate) that looks at the bytes after each LF only,
 *         so the body of a line costs one memchr;
 *   BDAT  chunk bytes, counted down (never buffered);
 *   TLS   after STARTTLS: bytes counted only.
 * DATA, STARTTLS and AUTH change how the client's next bytes read, and
 * what the server answers decides it. Both directions arrive in pieces
 * ordered only by arrival, so after such a command the client side stalls:
 * its bytes wait in the stall buffer until the reply is seen. If the reply
 * never comes (one-sided capture, cap, gap, end) we assume success, say so
 * in the anomalies, and stop stalling for the rest of the session (so a
 * silent server cannot make us copy the same bytes again and again).
 *
 * Server side: reply lines, multiline joined, matched FIFO to the queue of
 * commands awaiting replies (struct smtp_pending). The queue holds at most
 * max_pipeline real entries plus one "phantom" run that stands for the
 * commands that did not fit, so replies stay matched to the right commands
 * after an overflow.
 *
 * Transactions are reported in order when closed (the client moved on) and
 * answered (no queued command refers to them any more).
 */
#include "smtp.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "mem.h"

__thread struct smtp_stats smtp_stats;

enum smtp_cstate {
	CS_CMD = 1,
	CS_AUTH,        /* lines are SASL responses */
	CS_DATA,
	CS_BDAT,
	CS_TLS,
	CS_END,         /* smtp_end() was called */
};

enum smtp_sstate {
	SS_REPLY = 1,
	SS_TLS,
};

enum smtp_stall {
	STALL_NONE = 0,
	STALL_DATA,
	STALL_STARTTLS,
	STALL_AUTH,
};

/* Where we are in message content, as far as dot-stuffing cares. "CRLF"
 * and "LF" say how the previous line ended (only CRLF "." CRLF ends). */
enum smtp_dstate {
	DS_BOL_CRLF = 1,   /* at the start of a line (also: start of content) */
	DS_BOL_LF,
	DS_MID,            /* inside a line */
	DS_DOT_CRLF,       /* "." at line start, dropped */
	DS_DOT_LF,
	DS_DOTCR_CRLF,     /* ".\r": the CR held back */
	DS_DOTCR_LF,
};

enum smtp_auth_kind {
	AUTH_OTHER = 1,
	AUTH_PLAIN,
	AUTH_LOGIN,
	AUTH_CRAM,
	AUTH_XOAUTH2,
};

/* Queue entry kinds beyond the verbs. */
enum {
	CMD_EOD = SMTP_VERB_MAX,   /* end of DATA content: its reply ends the tx */
	CMD_PHANTOM,               /* arg commands that did not fit the queue */
};

enum {
	PF_LAST = 1u << 0,         /* BDAT ... LAST */
	PF_ASSUMED = 1u << 1,      /* stall resolved without this reply */
};

#define RCPT_NONE UINT32_MAX
#define TX_INLINE 256          /* arena bytes inside the tx allocation */
#define STALL_MIN 1024
#define LINE_MIN 128
#define QUEUE_MIN 8
#define AUTH_MECH_MAX 32
#define B64_MAX 768            /* decoded bytes of a SASL response we look at */

struct smtp_pending {
	struct smtp_txi *tx;       /* tx the command belongs to, or NULL */
	uint32_t arg;              /* RCPT: recipient index; PHANTOM: count */
	uint8_t cmd;               /* enum smtp_verb, CMD_EOD, CMD_PHANTOM */
	uint8_t flags;             /* PF_* */
};

struct smtp_arena_blk {
	struct smtp_arena_blk *next;
	uint32_t used, cap;
	char data[];
};

/* A transaction and its private state; tx comes first so a txi pointer is
 * a tx pointer. */
struct smtp_txi {
	struct smtp_tx tx;
	struct smtp_txi *next;     /* not yet reported, in creation order */
	uint32_t pending;          /* queue entries pointing here */
	uint32_t rcpt_cap;
	uint32_t mem;              /* arena bytes used, against max_tx_mem */
	uint32_t inl_used;
	uint8_t closed;            /* the client moved on */
	struct smtp_arena_blk *blks;
	char inl[TX_INLINE];
};

struct smtp_linebuf {
	uint8_t *buf;              /* only when a line straddles feeds */
	uint32_t len, cap;         /* kept bytes; at most max_line + 1 (the CR) */
	uint64_t total;            /* raw bytes of the line so far, kept or not */
	uint8_t last_cr;           /* the last byte appended (kept or not) was CR */
	uint8_t resync;            /* after a gap: 2 = probing, 1 = drop up to the next LF */
	uint8_t probe_len;
	uint8_t probe[9];          /* first bytes after a gap, until they tell a line start */
};

struct smtp_session {
	struct smtp_limits lim;
	const struct smtp_ops *ops;
	void *user;
	struct smtp_session_info info;
	struct smtp_linebuf line[2];
	uint64_t ts;

	/* client side */
	uint8_t cstate, dstate, stall;
	uint8_t data_cr;           /* DS_MID: the byte before this feed was CR */
	uint8_t bdat_last;
	uint8_t no_stall;          /* a stall was forced once: assume from now on */
	uint8_t tls_check;         /* look at the first client byte after STARTTLS */
	uint8_t auth_kind, auth_step, auth_expect, auth_counting, auth_ir;
	uint64_t bdat_left;
	struct smtp_txi *data_tx;  /* receives DATA/BDAT bytes; NULL drops them */
	uint8_t *stall_buf;
	uint32_t stall_len, stall_cap;

	/* server side */
	uint8_t sstate, in_reply, reply_ehlo, greeted;
	uint16_t reply_code;
	uint32_t reply_len, reply_lines, reply_caps;
	char *reply_text;          /* max_reply_text + 1, made at the first reply */

	/* commands awaiting replies: a ring */
	struct smtp_pending *q;
	uint32_t q_head, q_len, q_cap;

	/* session strings (MEM_SMTP), copied into each new tx */
	char *helo, *auth_mech, *auth_user, *xclient, *xforward;

	/* transactions not yet reported; cur is the open one */
	struct smtp_txi *tx_head, *tx_tail, *cur;
};

/* ---- names ------------------------------------------------------------- */

static const char *const verb_names[SMTP_VERB_MAX] = {
	[SMTP_VERB_UNKNOWN] = "unknown",
	[SMTP_VERB_HELO] = "helo",
	[SMTP_VERB_EHLO] = "ehlo",
	[SMTP_VERB_MAIL] = "mail",
	[SMTP_VERB_RCPT] = "rcpt",
	[SMTP_VERB_DATA] = "data",
	[SMTP_VERB_BDAT] = "bdat",
	[SMTP_VERB_RSET] = "rset",
	[SMTP_VERB_QUIT] = "quit",
	[SMTP_VERB_NOOP] = "noop",
	[SMTP_VERB_VRFY] = "vrfy",
	[SMTP_VERB_EXPN] = "expn",
	[SMTP_VERB_HELP] = "help",
	[SMTP_VERB_AUTH] = "auth",
	[SMTP_VERB_STARTTLS] = "starttls",
	[SMTP_VERB_XCLIENT] = "xclient",
	[SMTP_VERB_XFORWARD] = "xforward",
};

static const char *const anomaly_names[SMTP_ANOM_MAX] = {
	[SMTP_ANOM_LINE_TOO_LONG] = "line_too_long",
	[SMTP_ANOM_TOO_MANY_RCPTS] = "too_many_rcpts",
	[SMTP_ANOM_TOO_MANY_TX] = "too_many_tx",
	[SMTP_ANOM_GAP] = "gap",
	[SMTP_ANOM_REPLY_WITHOUT_COMMAND] = "reply_without_command",
	[SMTP_ANOM_UNKNOWN_COMMAND] = "unknown_command",
	[SMTP_ANOM_INVALID_COMMAND] = "invalid_command",
	[SMTP_ANOM_DATA_BEFORE_354] = "data_before_354",
	[SMTP_ANOM_BARE_LF] = "bare_lf",
	[SMTP_ANOM_INVALID_REPLY] = "invalid_reply",
	[SMTP_ANOM_PIPELINING_OVERFLOW] = "pipelining_overflow",
	[SMTP_ANOM_STARTTLS_INJECTION] = "starttls_injection",
	[SMTP_ANOM_STALL_OVERFLOW] = "stall_overflow",
	[SMTP_ANOM_NO_SERVER] = "no_server",
	[SMTP_ANOM_NO_REPLY] = "no_reply",
	[SMTP_ANOM_NESTED_MAIL] = "nested_mail",
	[SMTP_ANOM_NO_MAIL] = "no_mail",
	[SMTP_ANOM_DATA_END_AMBIGUOUS] = "data_end_ambiguous",
	[SMTP_ANOM_BDAT_AND_DATA] = "bdat_and_data",
	[SMTP_ANOM_AFTER_QUIT] = "after_quit",
	[SMTP_ANOM_TX_MEM] = "tx_mem",
	[SMTP_ANOM_ADDR_TOO_LONG] = "addr_too_long",
};

static const char *const limit_names[SMTP_LIMIT_MAX] = {
	[SMTP_LIMIT_LINE] = "max_line",
	[SMTP_LIMIT_RCPTS] = "max_rcpts",
	[SMTP_LIMIT_TX] = "max_tx",
	[SMTP_LIMIT_PIPELINE] = "max_pipeline",
	[SMTP_LIMIT_REPLY_TEXT] = "max_reply_text",
	[SMTP_LIMIT_STALL] = "max_stall",
	[SMTP_LIMIT_ADDR] = "max_addr",
	[SMTP_LIMIT_TX_MEM] = "max_tx_mem",
};

static const char *const tx_flag_names[SMTP_TX_FLAG_COUNT] = {
	"complete", "incomplete", "data", "data_end", "accepted", "data_rejected",
	"mail_rejected", "bdat", "tls", "rset", "helo_reset", "quit", "session_end",
};

/* EHLO keywords, in enum smtp_cap bit order. */
static const char *const cap_names[] = {
	"PIPELINING", "CHUNKING", "STARTTLS", "AUTH", "SIZE", "8BITMIME",
	"SMTPUTF8", "BINARYMIME", "DSN", "ENHANCEDSTATUSCODES", "XCLIENT",
	"XFORWARD", "VRFY", "ETRN",
};
#define CAP_COUNT (sizeof(cap_names) / sizeof(cap_names[0]))

const char *smtp_verb_name(enum smtp_verb v)
{
	return (unsigned)v < SMTP_VERB_MAX ? verb_names[v] : "?";
}

const char *smtp_anomaly_name(enum smtp_anomaly a)
{
	return (unsigned)a < SMTP_ANOM_MAX ? anomaly_names[a] : "?";
}

const char *smtp_limit_name(enum smtp_limit l)
{
	return (unsigned)l < SMTP_LIMIT_MAX ? limit_names[l] : "?";
}

const char *smtp_tx_flag_name(unsigned bit)
{
	return bit < SMTP_TX_FLAG_COUNT ? tx_flag_names[bit] : "?";
}

const char *smtp_cap_name(unsigned bit)
{
	return bit < CAP_COUNT ? cap_names[bit] : "?";
}

/* ---- small helpers ----------------------------------------------------- */

static inline size_t min_sz(size_t a, size_t b)
{
	return a < b ? a : b;
}

static inline uint8_t lower(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

/* p[0..n) equals the literal ignoring ASCII case. */
static bool ci_eq(const uint8_t *p, size_t n, const char *lit)
{
	size_t l = strlen(lit);

	if (n != l)
		return false;
	for (size_t i = 0; i < n; i++)
		if (lower(p[i]) != lower((uint8_t)lit[i]))
			return false;
	return true;
}

/* p[0..n) starts with the literal ignoring ASCII case. */
static bool ci_prefix(const uint8_t *p, size_t n, const char *lit)
{
	size_t l = strlen(lit);

	return n >= l && ci_eq(p, l, lit);
}

/* Zeroes memory the compiler may not elide (SASL secrets). */
static void wipe(void *p, size_t n)
{
	volatile uint8_t *v = p;

	while (n--)
		*v++ = 0;
}

static void anomaly(struct smtp_session *s, struct smtp_txi *t, enum smtp_anomaly a)
{
	smtp_stats.anomalies[a]++;
	s->info.anomalies |= 1ull << a;
	if (t)
		t->tx.anomalies |= 1ull << a;
}

static inline void limit_hit(enum smtp_limit l)
{
	smtp_stats.limit_hits[l]++;
}

/* ---- limits ------------------------------------------------------------ */

void smtp_limits_default(struct smtp_limits *lim)
{
	lim->max_line = 2048;        /* Postfix line_length_limit */
	lim->max_rcpts = 1000;       /* Postfix smtpd_recipient_limit */
	lim->max_tx = 1000;
	lim->max_pipeline = 128;
	lim->max_reply_text = 256;
	lim->max_stall = 64 * 1024;
	lim->max_addr = 320;         /* RFC 5321: 64 local + 255 domain + '@' */
	lim->max_tx_mem = 128 * 1024;
}

/* Copies lim with zero fields defaulted and every field brought into a range
 * the parser relies on (max_stall >= 1 KiB, max_tx_mem >= 1 KiB, ...). */
static void limits_normalise(struct smtp_limits *out, const struct smtp_limits *lim)
{
	struct smtp_limits d;

	smtp_limits_default(&d);
	*out = lim ? *lim : d;
#define FIX(f, lo, hi) do { \
	if (!out->f) out->f = d.f; \
	if (out->f < (lo)) out->f = (lo); \
	if (out->f > (hi)) out->f = (hi); \
} while (0)
	FIX(max_line, 16, 1u << 20);
	FIX(max_rcpts, 1, 1u << 20);
	FIX(max_tx, 1, UINT32_MAX - 1);
	FIX(max_pipeline, 1, 1u << 16);
	FIX(max_reply_text, 8, 1u << 16);
	FIX(max_stall, 1024, 1u << 26);
	FIX(max_addr, 8, 1u << 16);
	FIX(max_tx_mem, 1024, 1u << 28);
#undef FIX
}

/* ---- transactions ------------------------------------------------------ */

/* Copies p[0..n) NUL-terminated into t's arena. Returns the copy, or ""
 * when max_tx_mem is reached (counted, anomaly) or allocation fails. The
 * arena lives until the tx is freed. */
static const char *tx_str(struct smtp_session *s, struct smtp_txi *t, const void *p, size_t n)
{
	char *d;

	if (n == 0)
		return "";
	if ((uint64_t)t->mem + n + 1 > s->lim.max_tx_mem) {
		limit_hit(SMTP_LIMIT_TX_MEM);
		anomaly(s, t, SMTP_ANOM_TX_MEM);
		return "";
	}
	if (t->inl_used + n + 1 <= TX_INLINE) {
		d = t->inl + t->inl_used;
		t->inl_used += (uint32_t)(n + 1);
	} else {
		struct smtp_arena_blk *b = t->blks;

		if (!b || b->used + n + 1 > b->cap) {
			uint32_t cap = (uint32_t)(n + 1 > 1024 ? n + 1 : 1024);

			b = mem_alloc(MEM_SMTP, sizeof(*b) + cap);
			if (!b) {
				smtp_stats.alloc_fail++;
				return "";
			}
			b->cap = cap;
			b->used = 0;
			b->next = t->blks;
			t->blks = b;
		}
		d = b->data + b->used;
		b->used += (uint32_t)(n + 1);
	}
	t->mem += (uint32_t)(n + 1);
	memcpy(d, p, n);
	d[n] = '\0';
	return d;
}

/* tx_str of a NUL-terminated string, NULL staying NULL. */
static const char *tx_cstr(struct smtp_session *s, struct smtp_txi *t, const char *p)
{
	return p ? tx_str(s, t, p, strlen(p)) : NULL;
}

static void tx_free(struct smtp_txi *t)
{
	struct smtp_arena_blk *b, *nb;

	for (b = t->blks; b; b = nb) {
		nb = b->next;
		mem_free(MEM_SMTP, b);
	}
	mem_free(MEM_SMTP, t->tx.rcpts);
	mem_free(MEM_SMTP, t);
}

/* Opens a transaction as the session's current one, with the session's
 * HELO, AUTH and XCLIENT/XFORWARD state copied in. Returns NULL (counted)
 * past max_tx or when allocation fails; the session owns the tx. */
static struct smtp_txi *tx_new(struct smtp_session *s)
{
	struct smtp_txi *t;

	if (s->info.tx_count >= s->lim.max_tx) {
		limit_hit(SMTP_LIMIT_TX);
		anomaly(s, NULL, SMTP_ANOM_TOO_MANY_TX);
		return NULL;
	}
	t = mem_calloc(MEM_SMTP, 1, sizeof(*t));
	if (!t) {
		smtp_stats.alloc_fail++;
		return NULL;
	}
	t->tx.index = s->info.tx_count++;
	t->tx.ts_begin = s->ts;
	t->tx.mail_params = "";
	t->tx.last_reply.text = "";
	t->tx.helo = tx_cstr(s, t, s->helo);
	t->tx.auth_mech = tx_cstr(s, t, s->auth_mech);
	t->tx.auth_user = tx_cstr(s, t, s->auth_user);
	t->tx.auth_code = s->info.auth_code;
	t->tx.xclient = tx_cstr(s, t, s->xclient);
	t->tx.xforward = tx_cstr(s, t, s->xforward);
	/* Postfix forgets XFORWARD attributes after each transaction. */
	mem_free(MEM_SMTP, s->xforward);
	s->xforward = NULL;
	if (!s->info.server_seen)
		anomaly(s, t, SMTP_ANOM_NO_SERVER);
	if (s->tx_tail)
		s->tx_tail->next = t;
	else
		s->tx_head = t;
	s->tx_tail = t;
	s->cur = t;
	smtp_stats.transactions++;
	return t;
}

/* Reports (tx_end) and frees, in order, the transactions at the head of the
 * list that are closed and have no command waiting for a reply. */
static void tx_emit_ready(struct smtp_session *s)
{
	struct smtp_txi *t;

	while ((t = s->tx_head) && t->closed && t->pending == 0) {
		s->tx_head = t->next;
		if (!s->tx_head)
			s->tx_tail = NULL;
		t->tx.ts_end = s->ts;
		if (t->tx.flags & SMTP_TX_DATA_END) {
			t->tx.flags |= SMTP_TX_COMPLETE;
			smtp_stats.tx_complete++;
		} else {
			t->tx.flags |= SMTP_TX_INCOMPLETE;
		}
		if (t->tx.flags & SMTP_TX_ACCEPTED)
			smtp_stats.tx_accepted++;
		if (s->ops && s->ops->tx_end)
			s->ops->tx_end(s->user, s, &t->tx);
		tx_free(t);
	}
}

/* The client is done with t (why: an SMTP_TX_* flag naming what ended it,
 * kept only if the message was not complete). It is reported once its
 * outstanding replies are in. */
static void tx_close(struct smtp_session *s, struct smtp_txi *t, uint32_t why)
{
	if (!t || t->closed)
		return;
	t->closed = 1;
	if (!(t->tx.flags & SMTP_TX_DATA_END))
		t->tx.flags |= why;
	if (s->cur == t)
		s->cur = NULL;
	tx_emit_ready(s);
}

/* The current tx, or one made up for a RCPT/DATA/BDAT that came without
 * MAIL (mid-stream pickup or a broken client). NULL past max_tx. */
static struct smtp_txi *tx_current(struct smtp_session *s)
{
	struct smtp_txi *t = s->cur;

	if (t)
		return t;
	t = tx_new(s);
	if (t)
		anomaly(s, t, SMTP_ANOM_NO_MAIL);
	return t;
}

/* ---- the queue of commands awaiting replies ---------------------------- */

static inline struct smtp_pending *q_at(struct smtp_session *s, uint32_t i)
{
	return &s->q[(s->q_head + i) % s->q_cap];
}

/* Grows the ring to hold one more entry. Returns false when it cannot. */
static bool q_grow(struct smtp_session *s)
{
	uint32_t max = s->lim.max_pipeline + 1;
	uint32_t cap = s->q_cap ? s->q_cap * 2 : QUEUE_MIN;
	struct smtp_pending *nq;

	if (cap > max)
		cap = max;
	if (cap <= s->q_cap)
		return false;
	nq = mem_alloc(MEM_SMTP, cap * sizeof(*nq));
	if (!nq) {
		smtp_stats.alloc_fail++;
		return false;
	}
	for (uint32_t i = 0; i < s->q_len; i++)
		nq[i] = *q_at(s, i);
	mem_free(MEM_SMTP, s->q);
	s->q = nq;
	s->q_cap = cap;
	s->q_head = 0;
	return true;
}

/* Queues a command for reply matching. Returns its entry (valid until the
 * next queue change), or NULL when it is not tracked: no server seen
 * (one-sided: nobody will answer) or past max_pipeline (then it joins the
 * phantom run so later replies still match their commands). */
static struct smtp_pending *q_push(struct smtp_session *s, uint8_t cmd, struct smtp_txi *t,
				   uint32_t arg, uint8_t flags)
{
	struct smtp_pending *e;

	if (!s->info.server_seen)
		return NULL;
	if (s->q_len >= s->lim.max_pipeline) {
		limit_hit(SMTP_LIMIT_PIPELINE);
		anomaly(s, t ? t : s->cur, SMTP_ANOM_PIPELINING_OVERFLOW);
		e = s->q_len ? q_at(s, s->q_len - 1) : NULL;
		if (e && e->cmd == CMD_PHANTOM) {
			e->arg++;
			return NULL;
		}
		cmd = CMD_PHANTOM;
		t = NULL;
		arg = 1;
		flags = 0;
	}
	if (s->q_len == s->q_cap && !q_grow(s)) {
		/* Allocation failed: this command's reply will be taken for the
		 * next one's. Counted in alloc_fail. */
		return NULL;
	}
	e = q_at(s, s->q_len++);
	e->cmd = cmd;
	e->tx = t;
	e->arg = arg;
	e->flags = flags;
	if (t)
		t->pending++;
	return cmd == CMD_PHANTOM ? NULL : e;
}

static struct smtp_pending q_pop(struct smtp_session *s)
{
	struct smtp_pending e = *q_at(s, 0);

	s->q_head = (s->q_head + 1) % s->q_cap;
	s->q_len--;
	return e;
}

/* Drops every queued command (their replies will not be read), marking the
 * transactions they belonged to with a. */
static void q_clear(struct smtp_session *s, enum smtp_anomaly a)
{
	while (s->q_len) {
		struct smtp_pending e = q_pop(s);

		if (e.cmd == CMD_PHANTOM)
			continue;
		anomaly(s, e.tx, a);
		if (e.tx)
			e.tx->pending--;
	}
	s->q_head = 0;
}

/* A reply that can answer only one verb (354: DATA, 221: QUIT) while
 * another command heads the queue means replies were lost (a gap in the
 * server stream swallowed whole lines): line up again by dropping the queued
 * commands before that verb, marking their transactions no_reply. Nothing is
 * dropped when the verb is not queued at all. */
static void q_skip_to(struct smtp_session *s, uint8_t verb)
{
	uint32_t i;

	for (i = 0; i < s->q_len; i++)
		if (q_at(s, i)->cmd == verb)
			break;
	if (i == s->q_len)
		return;
	while (i--) {
		struct smtp_pending e = q_pop(s);

		if (e.cmd == CMD_PHANTOM)
			continue;
		anomaly(s, e.tx, SMTP_ANOM_NO_REPLY);
		if (e.tx)
			e.tx->pending--;
	}
}

/* ---- lines ------------------------------------------------------------- */

enum {
	LT_BARE_LF = 1u << 0,
	LT_TRUNC = 1u << 1,
};

/* Appends to the direction's line buffer, keeping at most max_line + 1
 * bytes (room for the CR); the rest is only counted. */
static void line_append(struct smtp_session *s, struct smtp_linebuf *lb, const uint8_t *p, size_t n)
{
	uint32_t limit = s->lim.max_line + 1;
	size_t take;

	if (n == 0)
		return;
	lb->total += n;
	lb->last_cr = p[n - 1] == '\r';
	if (lb->len >= limit)
		return;
	take = min_sz(n, limit - lb->len);
	if (lb->len + take > lb->cap) {
		uint32_t cap = lb->cap ? lb->cap : LINE_MIN;
		uint8_t *nb;

		while (cap < lb->len + take)
			cap *= 2;
		if (cap > limit)
			cap = limit;
		nb = mem_realloc(MEM_SMTP, lb->buf, cap);
		if (!nb) {
			smtp_stats.alloc_fail++;
			take = lb->cap - lb->len;
		} else {
			lb->buf = nb;
			lb->cap = cap;
		}
	}
	if (take) {
		memcpy(lb->buf + lb->len, p, take);
		lb->len += (uint32_t)take;
	}
}

static void line_reset(struct smtp_linebuf *lb)
{
	lb->len = 0;
	lb->total = 0;
	lb->last_cr = 0;
	lb->probe_len = 0;
}

static uint8_t verb_lookup(const uint8_t *p, size_t n);

/* After a gap we do not know where lines begin, but a capture loses whole
 * segments, so a gap usually ends on a line boundary. When the first bytes
 * after it read as a line start (a known verb followed by a space or the
 * line end; a reply code followed by ' ', '-' or the line end), that line
 * is parsed instead of dropped. Anything else is skipped to the next LF. */
static bool looks_like_line_start(int dir, const uint8_t *p, size_t n, bool lf_next)
{
	size_t i = 0;

	if (dir == SMTP_TOCLIENT)
		return n >= 3 && p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9' &&
		       p[2] >= '0' && p[2] <= '9' &&
		       (n == 3 ? lf_next : (p[3] == ' ' || p[3] == '-' || p[3] == '\r'));
	while (i < n && p[i] != ' ' && p[i] != '\r')
		i++;
	if (i == n && !lf_next)
		return false;   /* the verb's end is not in view */
	return verb_lookup(p, i) != SMTP_VERB_UNKNOWN;
}

/* The first bytes after a gap are gathered in lb->probe (a few bytes, so
 * the decision does not depend on how the stream was cut into feeds) until
 * they tell whether a line starts there. Returns the bytes of p it took. */
static size_t gap_probe(struct smtp_session *s, struct smtp_linebuf *lb, int dir,
			const uint8_t *p, size_t n)
{
	size_t want = dir == SMTP_TOCLIENT ? 4 : sizeof(lb->probe), i = 0;
	bool lf_next = false, told = false;

	while (i < n && lb->probe_len < want) {
		if (p[i] == '\n') {
			lf_next = told = true;
			break;
		}
		lb->probe[lb->probe_len++] = p[i++];
		if (dir == SMTP_TOSERVER && (p[i - 1] == ' ' || p[i - 1] == '\r')) {
			told = true;
			break;
		}
	}
	if (!told && lb->probe_len < want)
		return i;         /* not enough yet: keep probing with the next feed */
	if (looks_like_line_start(dir, lb->probe, lb->probe_len, lf_next)) {
		lb->resync = 0;
		line_append(s, lb, lb->probe, lb->probe_len);
	} else {
		lb->resync = 1;
	}
	lb->probe_len = 0;
	return i;
}

/* Takes the bytes of direction dir up to and including the next LF.
 * Returns how many of p[0..n) it used. When a line completed, *out and
 * *outlen give it without CR LF and cut to max_line, pointing into p (the
 * usual case: the whole line in one feed) or into the line buffer, valid
 * until the next call; *lflags gets LT_*. Otherwise *out is NULL. */
static size_t line_take(struct smtp_session *s, int dir, const uint8_t *p, size_t n,
			const uint8_t **out, size_t *outlen, unsigned *lflags)
{
	struct smtp_linebuf *lb = &s->line[dir];
	const uint8_t *lf = memchr(p, '\n', n);
	size_t k = lf ? (size_t)(lf - p) : n;
	const uint8_t *line;
	uint64_t raw, content;
	bool cr;

	*out = NULL;
	*lflags = 0;
	if (lb->resync == 2) {   /* first bytes after a gap */
		size_t used = gap_probe(s, lb, dir, p, n);

		if (used || lb->resync == 2)
			return used;
		/* decided on an LF at p[0]: go on with the line state set */
	}
	if (!lf) {
		if (!lb->resync)
			line_append(s, lb, p, n);
		return n;
	}
	s->info.lines[dir]++;
	smtp_stats.lines[dir]++;
	if (lb->resync) {
		lb->resync = 0;
		return k + 1;
	}
	if (lb->total == 0) {
		line = p;
		raw = k;
		cr = k > 0 && p[k - 1] == '\r';
	} else {
		line_append(s, lb, p, k);
		line = lb->buf ? lb->buf : (const uint8_t *)"";
		raw = lb->total;
		cr = lb->last_cr;
	}
	content = raw - cr;
	if (!cr)
		*lflags |= LT_BARE_LF;
	if (content > s->lim.max_line) {
		*lflags |= LT_TRUNC;
		limit_hit(SMTP_LIMIT_LINE);
		content = s->lim.max_line;
	}
	if (lb->total && content > lb->len)
		content = lb->len;     /* allocation failed on the way */
	*out = line;
	*outlen = (size_t)content;
	line_reset(lb);
	return k + 1;
}

/* ---- parsing helpers --------------------------------------------------- */

static int b64_val(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decodes base64 in[0..n) into out[0..cap), stopping at '=' or when out is
 * full. Returns the bytes written, or -1 on a character outside the
 * alphabet. */
static long b64_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;

	for (size_t i = 0; i < n && o < cap; i++) {
		int v;

		if (in[i] == '=')
			break;
		v = b64_val(in[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	return (long)o;
}

/* Parses an SMTP path ("<a@b>", "<@r1,@r2:a@b>", "<>", or a bare token) at
 * the start of p[0..n), spaces allowed before it. Sets the bare address
 * span (quotes kept, source route dropped) and *bad when the '<' is not
 * closed. Returns the offset just past the path. */
static size_t path_parse(const uint8_t *p, size_t n, const uint8_t **addr, size_t *alen, bool *bad)
{
	size_t i = 0, start, end;

	while (i < n && p[i] == ' ')
		i++;
	if (i < n && p[i] == '<') {
		bool q = false;

		start = ++i;
		for (; i < n; i++) {
			if (q) {
				if (p[i] == '\\' && i + 1 < n)
					i++;
				else if (p[i] == '"')
					q = false;
			} else if (p[i] == '"') {
				q = true;
			} else if (p[i] == '>') {
				break;
			}
		}
		end = i;
		if (i < n)
			i++;
		else
			*bad = true;
		if (end > start && p[start] == '@') {
			const uint8_t *c = memchr(p + start, ':', end - start);

			if (c)
				start = (size_t)(c - p) + 1;
		}
	} else {
		start = i;
		while (i < n && p[i] != ' ')
			i++;
		end = i;
	}
	*addr = p + start;
	*alen = end - start;
	return i;
}

/* Copies a client-chosen string into the tx, cut to max_addr (counted). */
static const char *tx_addr(struct smtp_session *s, struct smtp_txi *t, const uint8_t *p, size_t n)
{
	if (n > s->lim.max_addr) {
		limit_hit(SMTP_LIMIT_ADDR);
		anomaly(s, t, SMTP_ANOM_ADDR_TOO_LONG);
		n = s->lim.max_addr;
	}
	return tx_str(s, t, p, n);
}

/* Replaces a session string with p[0..n) cut to max (counted when cut).
 * On allocation failure the old value is dropped (counted). */
static void sess_str_set(struct smtp_session *s, char **slot, const void *p, size_t n, size_t max)
{
	mem_free(MEM_SMTP, *slot);
	*slot = NULL;
	if (n > max) {
		limit_hit(SMTP_LIMIT_ADDR);
		anomaly(s, s->cur, SMTP_ANOM_ADDR_TOO_LONG);
		n = max;
	}
	*slot = mem_strndup(MEM_SMTP, p, n);
	if (!*slot)
		smtp_stats.alloc_fail++;
}

static void trim(const uint8_t **p, size_t *n)
{
	while (*n && (**p == ' ' || **p == '\t')) {
		(*p)++;
		(*n)--;
	}
	while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
		(*n)--;
}

/* ---- client: stall ----------------------------------------------------- */

static size_t client_input(struct smtp_session *s, const uint8_t *p, size_t n);
static void tls_begin(struct smtp_session *s, enum smtp_anomaly leftover);

static void data_begin(struct smtp_session *s, struct smtp_txi *t)
{
	s->cstate = CS_DATA;
	s->dstate = DS_BOL_CRLF;
	s->data_cr = 0;
	s->data_tx = t;
	if (t) {
		t->tx.flags |= SMTP_TX_DATA;
		if (s->ops && s->ops->tx_data_begin)
			s->ops->tx_data_begin(s->user, &t->tx);
	}
}

/* SASL responses expected after AUTH mech, the initial response included,
 * for reading AUTH without the server's 334s. */
static uint8_t auth_total(uint8_t kind)
{
	return kind == AUTH_LOGIN ? 2 : 1;
}

/* Reads the rest of an AUTH exchange by counting responses (no server). */
static void auth_count(struct smtp_session *s)
{
	uint8_t total = auth_total(s->auth_kind);

	s->auth_counting = 1;
	s->auth_expect = s->auth_step < total ? (uint8_t)(total - s->auth_step) : 0;
	s->cstate = s->auth_expect ? CS_AUTH : CS_CMD;
}

/* Assumes the command we stalled on (reason) succeeded: its reply is not
 * coming, or not visible. e is its queue entry if any (marked so that a
 * late reply does not act twice), t its tx, a the anomaly saying why. Does
 * not drain the stall buffer: the caller does. */
static void stall_assume(struct smtp_session *s, uint8_t reason, struct smtp_pending *e,
			 struct smtp_txi *t, enum smtp_anomaly a)
{
	if (e)
		e->flags |= PF_ASSUMED;
	anomaly(s, t, a);
	s->stall = STALL_NONE;
	switch (reason) {
	case STALL_DATA:
		data_begin(s, t);
		break;
	case STALL_STARTTLS:
		tls_begin(s, SMTP_ANOM_NO_REPLY);
		break;
	case STALL_AUTH:
		auth_count(s);
		break;
	}
}

/* After a command whose reply decides how the next client bytes read: stall
 * the client side until the reply (e: its entry) is seen, or assume success
 * now when no reply can be waited for. */
static void stall_begin(struct smtp_session *s, uint8_t reason, struct smtp_pending *e,
			struct smtp_txi *t)
{
	if (!s->info.server_seen)
		stall_assume(s, reason, e, t, SMTP_ANOM_NO_SERVER);
	else if (!e || s->no_stall)
		stall_assume(s, reason, e, t, SMTP_ANOM_STALL_OVERFLOW);
	else
		s->stall = reason;
}

/* Feeds the stall buffer to the client parser after the stall ended; what
 * a new stall leaves unread moves to the front. Consumed bytes are wiped
 * (they may hold SASL secrets). */
static void stall_drain(struct smtp_session *s)
{
	size_t c, rest;

	if (!s->stall_len || s->stall)
		return;
	c = client_input(s, s->stall_buf, s->stall_len);
	rest = s->stall_len - c;
	memmove(s->stall_buf, s->stall_buf + c, rest);
	wipe(s->stall_buf + rest, c);
	s->stall_len = (uint32_t)rest;
}

/* The stalled-on reply will not be seen in time (a: why): assume success,
 * stop stalling for this session, and read what was held. */
static void stall_force(struct smtp_session *s, enum smtp_anomaly a)
{
	struct smtp_pending *e = s->q_len ? q_at(s, s->q_len - 1) : NULL;
	struct smtp_txi *t = e ? e->tx : s->cur;
	uint8_t reason = s->stall;

	if (!reason)
		return;
	/* Nothing is queued while stalled, so the tail is the command we
	 * stalled on; check anyway. */
	if (e && e->cmd != (reason == STALL_DATA ? SMTP_VERB_DATA :
			    reason == STALL_STARTTLS ? SMTP_VERB_STARTTLS : SMTP_VERB_AUTH))
		e = NULL;
	s->no_stall = 1;
	if (reason == STALL_DATA && s->stall_len)
		anomaly(s, t, SMTP_ANOM_DATA_BEFORE_354);
	stall_assume(s, reason, e, t, a);
	stall_drain(s);
}

static bool stall_reserve(struct smtp_session *s, size_t need)
{
	uint32_t cap = s->stall_cap ? s->stall_cap : STALL_MIN;
	uint8_t *nb;

	if (need <= s->stall_cap)
		return true;
	while (cap < need)
		cap *= 2;
	if (cap > s->lim.max_stall)
		cap = s->lim.max_stall;
	nb = mem_realloc(MEM_SMTP, s->stall_buf, cap);
	if (!nb) {
		smtp_stats.alloc_fail++;
		return false;
	}
	s->stall_buf = nb;
	s->stall_cap = cap;
	return true;
}

/* All client bytes go through here: parsed, or held while stalled. */
static void client_bytes(struct smtp_session *s, const uint8_t *p, size_t n)
{
	while (n) {
		size_t take;

		if (!s->stall) {
			size_t c = client_input(s, p, n);

			p += c;
			n -= c;
			continue;
		}
		if (s->stall_len >= s->lim.max_stall) {
			limit_hit(SMTP_LIMIT_STALL);
			stall_force(s, SMTP_ANOM_STALL_OVERFLOW);
			continue;
		}
		take = min_sz(n, s->lim.max_stall - s->stall_len);
		if (!stall_reserve(s, s->stall_len + take)) {
			stall_force(s, SMTP_ANOM_STALL_OVERFLOW);
			continue;
		}
		memcpy(s->stall_buf + s->stall_len, p, take);
		s->stall_len += (uint32_t)take;
		p += take;
		n -= take;
	}
}

/* ---- client: commands -------------------------------------------------- */

static const struct {
	const char *name;
	uint8_t verb;
} verb_table[] = {
	{ "HELO", SMTP_VERB_HELO }, { "EHLO", SMTP_VERB_EHLO },
	{ "MAIL", SMTP_VERB_MAIL }, { "RCPT", SMTP_VERB_RCPT },
	{ "DATA", SMTP_VERB_DATA }, { "BDAT", SMTP_VERB_BDAT },
	{ "RSET", SMTP_VERB_RSET }, { "QUIT", SMTP_VERB_QUIT },
	{ "NOOP", SMTP_VERB_NOOP }, { "VRFY", SMTP_VERB_VRFY },
	{ "EXPN", SMTP_VERB_EXPN }, { "HELP", SMTP_VERB_HELP },
	{ "AUTH", SMTP_VERB_AUTH }, { "STARTTLS", SMTP_VERB_STARTTLS },
	{ "XCLIENT", SMTP_VERB_XCLIENT }, { "XFORWARD", SMTP_VERB_XFORWARD },
};

static uint8_t verb_lookup(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < sizeof(verb_table) / sizeof(verb_table[0]); i++)
		if (ci_eq(p, n, verb_table[i].name))
			return verb_table[i].verb;
	return SMTP_VERB_UNKNOWN;
}

/* Takes the user name out of one SASL response (base64 in p[0..n)); the
 * password never leaves the stack buffer, which is wiped. */
static void auth_response(struct smtp_session *s, const uint8_t *p, size_t n)
{
	uint8_t buf[B64_MAX];
	const uint8_t *u = NULL;
	size_t ulen = 0;
	long dn;
	uint8_t step = s->auth_step;

	if (s->auth_step < UINT8_MAX)
		s->auth_step++;
	if (step != 0 || (n == 1 && p[0] == '*'))
		return;          /* only the first response names the user; '*' cancels */
	if (s->auth_kind == AUTH_OTHER)
		return;
	dn = b64_decode(p, n, buf, sizeof(buf));
	if (dn < 0) {
		anomaly(s, s->cur, SMTP_ANOM_INVALID_COMMAND);
		return;
	}
	switch (s->auth_kind) {
	case AUTH_PLAIN: {
		/* authzid NUL authcid NUL passwd: the user is authcid */
		const uint8_t *z1 = memchr(buf, 0, (size_t)dn), *z2;

		if (!z1)
			break;
		u = z1 + 1;
		z2 = memchr(u, 0, (size_t)(buf + dn - u));
		ulen = z2 ? (size_t)(z2 - u) : 0;    /* no second NUL: malformed */
		break;
	}
	case AUTH_LOGIN:
		u = buf;
		ulen = (size_t)dn;
		break;
	case AUTH_CRAM: {
		/* "user hexdigest" */
		const uint8_t *sp = NULL;

		for (long i = dn - 1; i >= 0; i--)
			if (buf[i] == ' ') {
				sp = buf + i;
				break;
			}
		u = buf;
		ulen = sp ? (size_t)(sp - buf) : 0;
		break;
	}
	case AUTH_XOAUTH2: {
		/* "user=" user ^A "auth=Bearer " token ^A ^A */
		const uint8_t *a;

		if (dn < 5 || memcmp(buf, "user=", 5) != 0)
			break;
		u = buf + 5;
		a = memchr(u, 1, (size_t)(dn - 5));
		ulen = a ? (size_t)(a - u) : (size_t)(dn - 5);
		break;
	}
	}
	if (u && ulen)
		sess_str_set(s, &s->auth_user, u, ulen, s->lim.max_addr);
	wipe(buf, sizeof(buf));
}

static void cmd_auth(struct smtp_session *s, const uint8_t *a, size_t n)
{
	size_t i = 0, ml;
	uint8_t mech[AUTH_MECH_MAX];
	struct smtp_pending *e;

	while (i < n && a[i] != ' ')
		i++;
	ml = min_sz(i, sizeof(mech));
	for (size_t k = 0; k < ml; k++)
		mech[k] = (uint8_t)(a[k] >= 'a' && a[k] <= 'z' ? a[k] - 32 : a[k]);
	if (ml == 0)
		anomaly(s, s->cur, SMTP_ANOM_INVALID_COMMAND);
	sess_str_set(s, &s->auth_mech, mech, ml, AUTH_MECH_MAX);
	mem_free(MEM_SMTP, s->auth_user);
	s->auth_user = NULL;
	s->auth_kind = ci_eq(a, i, "PLAIN") ? AUTH_PLAIN :
		ci_eq(a, i, "LOGIN") ? AUTH_LOGIN :
		ci_eq(a, i, "CRAM-MD5") ? AUTH_CRAM :
		ci_eq(a, i, "XOAUTH2") ? AUTH_XOAUTH2 : AUTH_OTHER;
	s->auth_step = 0;
	s->auth_counting = 0;
	s->auth_expect = 0;
	while (i < n && a[i] == ' ')
		i++;
	s->auth_ir = i < n;
	if (i < n)
		auth_response(s, a + i, n - i);
	e = q_push(s, SMTP_VERB_AUTH, NULL, 0, 0);
	s->cstate = CS_CMD;
	stall_begin(s, STALL_AUTH, e, NULL);
}

static void cmd_mail(struct smtp_session *s, const uint8_t *a, size_t n)
{
	struct smtp_txi *old = s->cur, *t;
	const uint8_t *addr;
	size_t alen, off;
	bool bad = false;

	if (old) {
		/* A MAIL after a refused MAIL starts over; anything else is a
		 * nested MAIL the server will likely refuse: we still follow the
		 * client, the reply tells the record. */
		if (!(old->tx.flags & SMTP_TX_MAIL_REJECTED) && old->tx.mail_from)
			anomaly(s, old, SMTP_ANOM_NESTED_MAIL);
		tx_close(s, old, 0);
	}
	t = tx_new(s);
	if (ci_prefix(a, n, "FROM:")) {
		a += 5;
		n -= 5;
	} else {
		bad = true;
	}
	off = path_parse(a, n, &addr, &alen, &bad);
	if (t) {
		const uint8_t *pp = a + off;
		size_t pn = n - off;

		trim(&pp, &pn);
		t->tx.mail_from = tx_addr(s, t, addr, alen);
		t->tx.mail_params = tx_addr(s, t, pp, pn);
		if (bad)
			anomaly(s, t, SMTP_ANOM_INVALID_COMMAND);
	}
	q_push(s, SMTP_VERB_MAIL, t, 0, 0);
}

/* Adds a recipient slot to t. Returns its index, or RCPT_NONE past
 * max_rcpts (counted) or on allocation failure. */
static uint32_t rcpt_add(struct smtp_session *s, struct smtp_txi *t, const uint8_t *addr, size_t alen)
{
	struct smtp_rcpt *r;

	if (t->tx.nrcpt >= s->lim.max_rcpts) {
		limit_hit(SMTP_LIMIT_RCPTS);
		anomaly(s, t, SMTP_ANOM_TOO_MANY_RCPTS);
		t->tx.rcpt_dropped++;
		return RCPT_NONE;
	}
	if (t->tx.nrcpt == t->rcpt_cap) {
		uint32_t cap = t->rcpt_cap ? t->rcpt_cap * 2 : 4;
		struct smtp_rcpt *nr;

		if (cap > s->lim.max_rcpts)
			cap = s->lim.max_rcpts;
		nr = mem_realloc(MEM_SMTP, t->tx.rcpts, cap * sizeof(*nr));
		if (!nr) {
			smtp_stats.alloc_fail++;
			t->tx.rcpt_dropped++;
			return RCPT_NONE;
		}
		t->tx.rcpts = nr;
		t->rcpt_cap = cap;
	}
	r = &t->tx.rcpts[t->tx.nrcpt];
	r->addr = tx_addr(s, t, addr, alen);
	r->reply_text = "";
	r->reply_code = 0;
	r->state = SMTP_RCPT_PENDING;
	return t->tx.nrcpt++;
}

static void cmd_rcpt(struct smtp_session *s, const uint8_t *a, size_t n)
{
	struct smtp_txi *t = tx_current(s);
	const uint8_t *addr;
	size_t alen;
	bool bad = false;
	uint32_t idx = RCPT_NONE;

	if (ci_prefix(a, n, "TO:")) {
		a += 3;
		n -= 3;
	} else {
		bad = true;
	}
	path_parse(a, n, &addr, &alen, &bad);
	if (bad)
		anomaly(s, t, SMTP_ANOM_INVALID_COMMAND);
	if (t)
		idx = rcpt_add(s, t, addr, alen);
	q_push(s, SMTP_VERB_RCPT, t, idx, 0);
}

static void cmd_data(struct smtp_session *s)
{
	struct smtp_txi *t = tx_current(s);
	struct smtp_pending *e;

	if (t && (t->tx.flags & SMTP_TX_BDAT))
		anomaly(s, t, SMTP_ANOM_BDAT_AND_DATA);
	e = q_push(s, SMTP_VERB_DATA, t, 0, 0);
	stall_begin(s, STALL_DATA, e, t);
}

static void bdat_done(struct smtp_session *s)
{
	struct smtp_txi *t = s->data_tx;

	s->cstate = CS_CMD;
	s->data_tx = NULL;
	if (s->bdat_last && t) {
		t->tx.flags |= SMTP_TX_DATA_END;
		tx_close(s, t, 0);
	}
}

static void cmd_bdat(struct smtp_session *s, const uint8_t *a, size_t n)
{
	uint64_t size = 0;
	size_t i = 0;
	bool last = false;
	struct smtp_txi *t;

	while (i < n && a[i] >= '0' && a[i] <= '9') {
		uint64_t d = (uint64_t)(a[i] - '0');

		if (size > (UINT64_MAX - d) / 10)
			break;
		size = size * 10 + d;
		i++;
	}
	if (i > 0 && i < n && a[i] == ' ') {
		const uint8_t *r = a + i;
		size_t rn = n - i;

		trim(&r, &rn);
		last = ci_eq(r, rn, "LAST");
		if (!last)
			i = 0;
	} else if (i < n) {
		i = 0;
	}
	t = tx_current(s);
	if (i == 0) {
		/* No size we can trust: the server refuses it; we resync on lines. */
		anomaly(s, t, SMTP_ANOM_INVALID_COMMAND);
		q_push(s, SMTP_VERB_BDAT, t, 0, 0);
		return;
	}
	if (t) {
		if ((t->tx.flags & SMTP_TX_DATA) && !(t->tx.flags & SMTP_TX_BDAT))
			anomaly(s, t, SMTP_ANOM_BDAT_AND_DATA);
		if (!(t->tx.flags & SMTP_TX_BDAT)) {
			t->tx.flags |= SMTP_TX_BDAT | SMTP_TX_DATA;
			if (s->ops && s->ops->tx_data_begin)
				s->ops->tx_data_begin(s->user, &t->tx);
		}
	}
	q_push(s, SMTP_VERB_BDAT, t, 0, last ? PF_LAST : 0);
	s->data_tx = t;
	s->bdat_left = size;
	s->bdat_last = last;
	if (size)
		s->cstate = CS_BDAT;
	else
		bdat_done(s);
}

/* One client line in command mode. */
static void client_command(struct smtp_session *s, const uint8_t *l, size_t n, unsigned lflags)
{
	size_t i = 0;
	uint8_t verb;
	const uint8_t *a;
	size_t an;

	while (i < n && l[i] != ' ')
		i++;
	verb = verb_lookup(l, i);
	a = l + i;
	an = n - i;
	trim(&a, &an);
	s->info.commands++;
	smtp_stats.commands[verb]++;
	if (s->info.quit)
		anomaly(s, s->cur, SMTP_ANOM_AFTER_QUIT);

	switch (verb) {
	case SMTP_VERB_HELO:
	case SMTP_VERB_EHLO:
		if (an == 0)
			anomaly(s, s->cur, SMTP_ANOM_INVALID_COMMAND);
		sess_str_set(s, &s->helo, a, an, s->lim.max_addr);
		s->info.helo = s->helo;
		tx_close(s, s->cur, SMTP_TX_HELO_RESET);
		q_push(s, verb, NULL, 0, 0);
		break;
	case SMTP_VERB_MAIL:
		cmd_mail(s, a, an);
		break;
	case SMTP_VERB_RCPT:
		cmd_rcpt(s, a, an);
		break;
	case SMTP_VERB_DATA:
		cmd_data(s);
		break;
	case SMTP_VERB_BDAT:
		cmd_bdat(s, a, an);
		break;
	case SMTP_VERB_RSET:
		tx_close(s, s->cur, SMTP_TX_RSET);
		q_push(s, verb, NULL, 0, 0);
		break;
	case SMTP_VERB_QUIT:
		s->info.quit = 1;
		tx_close(s, s->cur, SMTP_TX_QUIT);
		q_push(s, verb, NULL, 0, 0);
		break;
	case SMTP_VERB_AUTH:
		cmd_auth(s, a, an);
		/* The initial response may hold a password. */
		if (s->line[SMTP_TOSERVER].buf)
			wipe(s->line[SMTP_TOSERVER].buf, s->line[SMTP_TOSERVER].cap);
		break;
	case SMTP_VERB_STARTTLS:
		stall_begin(s, STALL_STARTTLS, q_push(s, verb, NULL, 0, 0), s->cur);
		break;
	case SMTP_VERB_XCLIENT:
		/* Postfix: XCLIENT starts the session over (new 220, new HELO). */
		sess_str_set(s, &s->xclient, a, an, s->lim.max_addr);
		tx_close(s, s->cur, SMTP_TX_HELO_RESET);
		q_push(s, verb, NULL, 0, 0);
		break;
	case SMTP_VERB_XFORWARD: {
		/* Attributes add up over several commands, until the next tx. */
		size_t old = s->xforward ? strlen(s->xforward) : 0;
		size_t tot = old + (old ? 1 : 0) + an;
		char *nx = mem_alloc(MEM_SMTP, tot + 1);

		if (!nx) {
			smtp_stats.alloc_fail++;
		} else {
			if (old) {
				memcpy(nx, s->xforward, old);
				nx[old] = ' ';
			}
			memcpy(nx + tot - an, a, an);
			sess_str_set(s, &s->xforward, nx, tot, s->lim.max_addr);
			mem_free(MEM_SMTP, nx);
		}
		q_push(s, verb, NULL, 0, 0);
		break;
	}
	case SMTP_VERB_NOOP:
	case SMTP_VERB_VRFY:
	case SMTP_VERB_EXPN:
	case SMTP_VERB_HELP:
		q_push(s, verb, NULL, 0, 0);
		break;
	default:
		anomaly(s, s->cur, SMTP_ANOM_UNKNOWN_COMMAND);
		q_push(s, SMTP_VERB_UNKNOWN, NULL, 0, 0);
		break;
	}
	/* After the command, so a MAIL's line marks the tx it opened. */
	if (lflags & LT_BARE_LF)
		anomaly(s, s->cur, SMTP_ANOM_BARE_LF);
	if (lflags & LT_TRUNC)
		anomaly(s, s->cur, SMTP_ANOM_LINE_TOO_LONG);
}

/* A gap cut the client's command line held in the line buffer. When its
 * verb is certain (a known verb and a space), the server still answers it:
 * queue a stand-in with no effect on the transaction, so later replies stay
 * matched. Verbs that change how the next bytes read (DATA, BDAT, AUTH,
 * STARTTLS) are not guessed at. */
static void client_gap_command(struct smtp_session *s)
{
	struct smtp_linebuf *lb = &s->line[SMTP_TOSERVER];
	const uint8_t *sp = lb->len ? memchr(lb->buf, ' ', lb->len) : NULL;
	uint8_t verb;

	if (!sp)
		return;
	verb = verb_lookup(lb->buf, (size_t)(sp - lb->buf));
	switch (verb) {
	case SMTP_VERB_MAIL:
	case SMTP_VERB_HELO:
	case SMTP_VERB_EHLO:
	case SMTP_VERB_XCLIENT:
		tx_close(s, s->cur, verb == SMTP_VERB_MAIL ? 0 : SMTP_TX_HELO_RESET);
		/* fall through */
	case SMTP_VERB_RCPT:
	case SMTP_VERB_VRFY:
	case SMTP_VERB_EXPN:
	case SMTP_VERB_HELP:
	case SMTP_VERB_NOOP:
	case SMTP_VERB_XFORWARD:
		s->info.commands++;
		smtp_stats.commands[verb]++;
		q_push(s, verb, NULL, RCPT_NONE, 0);
		break;
	default:
		break;
	}
}

/* One client line in AUTH mode: a SASL response. */
static void client_auth_line(struct smtp_session *s, const uint8_t *l, size_t n)
{
	auth_response(s, l, n);
	wipe(s->line[SMTP_TOSERVER].buf, s->line[SMTP_TOSERVER].cap);
	if (s->auth_counting) {
		if (s->auth_expect)
			s->auth_expect--;
		if (!s->auth_expect)
			s->cstate = CS_CMD;
		return;
	}
	/* Wait for the next challenge or the verdict. */
	s->stall = STALL_AUTH;
}

/* ---- client: message content ------------------------------------------- */

static inline void data_emit(struct smtp_session *s, struct smtp_txi *t, const uint8_t *p, size_t n)
{
	if (!n || !t)
		return;
	t->tx.size += n;
	smtp_stats.message_bytes += n;
	if (s->ops && s->ops->tx_data)
		s->ops->tx_data(s->user, &t->tx, p, n);
}

/* The ".\r\n" ending the content was seen. */
static void data_end(struct smtp_session *s)
{
	struct smtp_txi *t = s->data_tx;

	s->cstate = CS_CMD;
	s->data_tx = NULL;
	if (!t)
		return;
	t->tx.flags |= SMTP_TX_DATA_END;
	q_push(s, CMD_EOD, t, 0, 0);
	tx_close(s, t, 0);
}

static void data_bare_lf(struct smtp_session *s, struct smtp_txi *t)
{
	/* Once per tx: a LF-only message would count every line. */
	if (!t || !(t->tx.anomalies & (1ull << SMTP_ANOM_BARE_LF)))
		anomaly(s, t, SMTP_ANOM_BARE_LF);
}

/* Message content: passes bytes to tx_data dot-unstuffed, in runs taken
 * straight from p. Returns the bytes used: all of them, or up to the end
 * of the terminating ".\r\n". */
static size_t data_input(struct smtp_session *s, const uint8_t *p, size_t n)
{
	struct smtp_txi *t = s->data_tx;
	size_t i = 0, run = 0;

	while (i < n) {
		switch (s->dstate) {
		case DS_MID: {
			/* line after line while none starts with '.': the
			 * line-start states are only entered for a dot (to
			 * unstuff, or the end) or at the end of p */
			uint64_t lines = 0;

			for (;;) {
				const uint8_t *lf = memchr(p + i, '\n', n - i);
				size_t j;
				bool cr;

				if (!lf) {
					s->data_cr = p[n - 1] == '\r';
					i = n;
					break;
				}
				j = (size_t)(lf - p);
				cr = j > i ? p[j - 1] == '\r' : s->data_cr;
				if (!cr)
					data_bare_lf(s, t);
				lines++;
				i = j + 1;
				if (i < n && p[i] != '.') {
					s->data_cr = 0;   /* the next line's "byte before" is this LF */
					continue;
				}
				s->dstate = cr ? DS_BOL_CRLF : DS_BOL_LF;
				break;
			}
			s->info.lines[SMTP_TOSERVER] += lines;
			smtp_stats.lines[SMTP_TOSERVER] += lines;
			break;
		}
		case DS_BOL_CRLF:
		case DS_BOL_LF:
			if (p[i] == '.') {
				data_emit(s, t, p + run, i - run);
				s->dstate = s->dstate == DS_BOL_CRLF ? DS_DOT_CRLF : DS_DOT_LF;
				run = ++i;
			} else {
				s->dstate = DS_MID;
				s->data_cr = 0;
			}
			break;
		case DS_DOT_CRLF:
		case DS_DOT_LF:
			if (p[i] == '\r') {
				/* Hold the CR: ".\r\n" must not reach tx_data. */
				data_emit(s, t, p + run, i - run);
				s->dstate = s->dstate == DS_DOT_CRLF ? DS_DOTCR_CRLF : DS_DOTCR_LF;
				run = ++i;
			} else {
				if (p[i] == '\n')   /* ".\n": some MTAs end here */
					anomaly(s, t, SMTP_ANOM_DATA_END_AMBIGUOUS);
				s->dstate = DS_MID;
				s->data_cr = 0;
			}
			break;
		case DS_DOTCR_CRLF:
		case DS_DOTCR_LF:
			if (p[i] == '\n' && s->dstate == DS_DOTCR_CRLF) {
				data_emit(s, t, p + run, i - run);
				s->info.lines[SMTP_TOSERVER]++;
				smtp_stats.lines[SMTP_TOSERVER]++;
				data_end(s);
				return i + 1;
			}
			if (p[i] == '\n')   /* "\n.\r\n" */
				anomaly(s, t, SMTP_ANOM_DATA_END_AMBIGUOUS);
			/* Not the end: give back the held CR, go on after it. */
			data_emit(s, t, p + run, i - run);
			data_emit(s, t, (const uint8_t *)"\r", 1);
			run = i;
			s->dstate = DS_MID;
			s->data_cr = 1;
			break;
		}
	}
	data_emit(s, t, p + run, n - run);
	return n;
}

static size_t bdat_input(struct smtp_session *s, const uint8_t *p, size_t n)
{
	size_t k = (size_t)(n < s->bdat_left ? n : s->bdat_left);

	data_emit(s, s->data_tx, p, k);
	s->bdat_left -= k;
	if (s->bdat_left == 0)
		bdat_done(s);
	return k;
}

/* Parses client bytes until they run out or the client side stalls.
 * Returns the bytes used. */
static size_t client_input(struct smtp_session *s, const uint8_t *p, size_t n)
{
	size_t off = 0;

	while (off < n && !s->stall) {
		switch (s->cstate) {
		case CS_CMD:
		case CS_AUTH: {
			const uint8_t *l;
			size_t ln;
			unsigned lf;

			off += line_take(s, SMTP_TOSERVER, p + off, n - off, &l, &ln, &lf);
			if (!l)
				break;
			if (s->cstate == CS_AUTH)
				client_auth_line(s, l, ln);
			else
				client_command(s, l, ln, lf);
			break;
		}
		case CS_DATA:
			off += data_input(s, p + off, n - off);
			break;
		case CS_BDAT:
			off += bdat_input(s, p + off, n - off);
			break;
		case CS_TLS:
			/* A TLS record starts 0x16 (handshake); plaintext here
			 * is a command injected after STARTTLS (CVE-2011-0411). */
			if (s->tls_check && p[off] != 0x16)
				anomaly(s, s->cur, SMTP_ANOM_STARTTLS_INJECTION);
			s->tls_check = 0;
			off = n;
			break;
		default:
			off = n;
			break;
		}
	}
	return off;
}

/* ---- STARTTLS ---------------------------------------------------------- */

/* STARTTLS was accepted (or assumed): from here both directions are only
 * counted. Commands still queued get anomaly leftover. A placeholder tx
 * flagged SMTP_TX_TLS stays open until smtp_end() so the record shows the
 * encrypted session. */
static void tls_begin(struct smtp_session *s, enum smtp_anomaly leftover)
{
	struct smtp_txi *t;

	s->info.tls = 1;
	smtp_stats.tls_sessions++;
	s->cstate = CS_TLS;
	s->sstate = SS_TLS;
	s->tls_check = 1;
	s->stall = STALL_NONE;
	s->in_reply = 0;
	q_clear(s, leftover);
	line_reset(&s->line[0]);
	line_reset(&s->line[1]);
	tx_close(s, s->cur, SMTP_TX_HELO_RESET);
	t = tx_new(s);
	if (t)
		t->tx.flags |= SMTP_TX_TLS;
	tx_emit_ready(s);
}

/* ---- server: replies --------------------------------------------------- */

static uint32_t cap_lookup(const uint8_t *p, size_t n)
{
	size_t k = 0;

	while (k < n && p[k] != ' ' && p[k] != '=')
		k++;
	for (unsigned i = 0; i < CAP_COUNT; i++)
		if (ci_eq(p, k, cap_names[i]))
			return 1u << i;
	return 0;
}

/* Reply text for a tx: the previous recipient's copy when equal (a
 * thousand "2.1.5 Ok" cost one string). */
static const char *reply_copy(struct smtp_session *s, struct smtp_txi *t)
{
	const char *prev = t->tx.last_reply.text;

	if (!s->reply_text)
		return "";       /* its allocation failed (counted) */
	if (prev && strlen(prev) == s->reply_len && memcmp(prev, s->reply_text, s->reply_len) == 0)
		return prev;
	return tx_str(s, t, s->reply_text, s->reply_len);
}

/* A whole reply (code, text in s->reply_text) for the command at the head
 * of the queue. */
static void reply_dispatch(struct smtp_session *s)
{
	uint16_t code = s->reply_code;
	unsigned cls = code / 100;
	bool ok = cls == 2, need_drain = false;
	struct smtp_pending *h, e;
	struct smtp_txi *t;

	s->info.replies++;
	smtp_stats.replies[cls >= 1 && cls <= 5 ? cls : 0]++;
	if (!s->greeted) {
		s->greeted = 1;
		if (code == 220 || s->q_len == 0) {
			s->info.greeting_code = code;
			return;
		}
	}
	if (s->q_len == 0) {
		if (code != 421)     /* 421 may come unasked: shutting down */
			anomaly(s, s->cur, SMTP_ANOM_REPLY_WITHOUT_COMMAND);
		return;
	}
	h = q_at(s, 0);
	if (h->cmd == CMD_PHANTOM) {
		if (--h->arg == 0)
			q_pop(s);
		return;
	}
	if (h->cmd == SMTP_VERB_AUTH && code == 334) {
		/* A challenge: the client sends one response line next. */
		if (!(h->flags & PF_ASSUMED) && s->stall == STALL_AUTH) {
			s->stall = STALL_NONE;
			s->cstate = CS_AUTH;
			stall_drain(s);
		}
		return;
	}
	if ((code == 354 && h->cmd != SMTP_VERB_DATA) || (code == 221 && h->cmd != SMTP_VERB_QUIT))
		q_skip_to(s, code == 354 ? SMTP_VERB_DATA : SMTP_VERB_QUIT);
	e = q_pop(s);
	t = e.tx;

	switch (e.cmd) {
	case SMTP_VERB_MAIL:
		if (t) {
			t->tx.mail_code = code;
			if (!ok)
				t->tx.flags |= SMTP_TX_MAIL_REJECTED;
		}
		break;
	case SMTP_VERB_RCPT:
		if (t && e.arg != RCPT_NONE) {
			struct smtp_rcpt *r = &t->tx.rcpts[e.arg];

			r->reply_code = code;
			r->reply_text = reply_copy(s, t);
			r->state = ok ? SMTP_RCPT_ACCEPTED : SMTP_RCPT_REJECTED;
			if (!ok)
				t->tx.nrcpt_rejected++;
			t->tx.last_reply.code = code;
			t->tx.last_reply.text = r->reply_text;
			t = NULL;        /* last_reply done */
		}
		break;
	case SMTP_VERB_DATA:
		if (e.tx)
			e.tx->tx.data_code = code;
		if (e.flags & PF_ASSUMED) {
			/* We read content the server (maybe) refused. */
			if (code != 354 && e.tx)
				e.tx->tx.flags |= SMTP_TX_DATA_REJECTED;
		} else if (s->stall == STALL_DATA) {
			s->stall = STALL_NONE;
			if (code == 354)
				data_begin(s, e.tx);
			else if (e.tx)
				e.tx->tx.flags |= SMTP_TX_DATA_REJECTED;
			need_drain = true;
		}
		break;
	case CMD_EOD:
		if (t) {
			t->tx.end_code = code;
			t->tx.flags |= ok ? SMTP_TX_ACCEPTED : SMTP_TX_DATA_REJECTED;
		}
		break;
	case SMTP_VERB_BDAT:
		if (t) {
			if (!t->tx.data_code)
				t->tx.data_code = code;
			if (!ok)
				t->tx.flags |= SMTP_TX_DATA_REJECTED;
			if (e.flags & PF_LAST) {
				t->tx.end_code = code;
				if (ok && !(t->tx.flags & SMTP_TX_DATA_REJECTED))
					t->tx.flags |= SMTP_TX_ACCEPTED;
			}
		}
		break;
	case SMTP_VERB_EHLO:
		if (ok)
			s->info.caps = s->reply_caps;
		break;
	case SMTP_VERB_AUTH:
		s->info.auth_code = code;
		if (!(e.flags & PF_ASSUMED)) {
			s->cstate = CS_CMD;
			if (s->stall == STALL_AUTH) {
				s->stall = STALL_NONE;
				need_drain = true;
			}
		}
		break;
	case SMTP_VERB_STARTTLS:
		if (e.flags & PF_ASSUMED)
			break;
		if (code == 220) {
			tls_begin(s, SMTP_ANOM_STARTTLS_INJECTION);
			if (s->cur && (s->cur->tx.flags & SMTP_TX_TLS)) {
				/* the record of the encrypted session shows the
				 * reply that started it */
				s->cur->tx.last_reply.code = code;
				s->cur->tx.last_reply.text = reply_copy(s, s->cur);
			}
			need_drain = true;
		} else if (s->stall == STALL_STARTTLS) {
			s->stall = STALL_NONE;
			need_drain = true;
		}
		break;
	default:
		break;
	}
	if (t) {
		t->tx.last_reply.code = code;
		t->tx.last_reply.text = reply_copy(s, t);
	}
	if (e.tx) {
		e.tx->pending--;
		tx_emit_ready(s);
	}
	if (need_drain)
		stall_drain(s);
}

static void reply_text_add(struct smtp_session *s, const uint8_t *p, size_t n)
{
	uint32_t max = s->lim.max_reply_text;

	if (!s->reply_text) {
		s->reply_text = mem_alloc(MEM_SMTP, max + 1);
		if (!s->reply_text) {
			smtp_stats.alloc_fail++;
			return;
		}
		s->reply_text[0] = '\0';
	}
	if (s->reply_lines > 0 && s->reply_len < max && n)
		s->reply_text[s->reply_len++] = ' ';
	if (n > max - s->reply_len) {
		limit_hit(SMTP_LIMIT_REPLY_TEXT);
		n = max - s->reply_len;
	}
	memcpy(s->reply_text + s->reply_len, p, n);
	s->reply_len += (uint32_t)n;
	s->reply_text[s->reply_len] = '\0';
}

/* One server line: "ddd text" ends a reply, "ddd-text" continues it. */
static void reply_line(struct smtp_session *s, const uint8_t *l, size_t n, unsigned lflags)
{
	unsigned code;
	uint8_t sep = ' ';
	const uint8_t *text = n > 4 ? l + 4 : l + n;
	size_t tn = n > 4 ? n - 4 : 0;

	if (lflags & LT_BARE_LF)
		anomaly(s, s->cur, SMTP_ANOM_BARE_LF);
	if (lflags & LT_TRUNC)
		anomaly(s, s->cur, SMTP_ANOM_LINE_TOO_LONG);
	if (n < 3 || l[0] < '0' || l[0] > '9' || l[1] < '0' || l[1] > '9' ||
	    l[2] < '0' || l[2] > '9') {
		anomaly(s, s->cur, SMTP_ANOM_INVALID_REPLY);
		smtp_stats.replies[0]++;
		return;
	}
	code = (unsigned)(l[0] - '0') * 100 + (unsigned)(l[1] - '0') * 10 + (unsigned)(l[2] - '0');
	if (n > 3)
		sep = l[3];
	if (sep != ' ' && sep != '-') {
		anomaly(s, s->cur, SMTP_ANOM_INVALID_REPLY);
		sep = ' ';
	}
	if (!s->in_reply) {
		s->in_reply = 1;
		s->reply_code = (uint16_t)code;
		s->reply_len = 0;
		s->reply_lines = 0;
		s->reply_caps = 0;
		s->reply_ehlo = s->q_len && q_at(s, 0)->cmd == SMTP_VERB_EHLO &&
			(s->greeted || code != 220);
		if (s->reply_text)
			s->reply_text[0] = '\0';
	} else if (code != s->reply_code) {
		anomaly(s, s->cur, SMTP_ANOM_INVALID_REPLY);
	}
	if (s->reply_ehlo && s->reply_lines > 0)
		s->reply_caps |= cap_lookup(text, tn);
	reply_text_add(s, text, tn);
	s->reply_lines++;
	if (sep == '-')
		return;
	s->in_reply = 0;
	reply_dispatch(s);
}

static void server_input(struct smtp_session *s, const uint8_t *p, size_t n)
{
	size_t off = 0;

	while (off < n && s->sstate == SS_REPLY) {
		const uint8_t *l;
		size_t ln;
		unsigned lf;

		off += line_take(s, SMTP_TOCLIENT, p + off, n - off, &l, &ln, &lf);
		if (l)
			reply_line(s, l, ln, lf);
	}
}

/* ---- public ------------------------------------------------------------ */

struct smtp_session *smtp_session_new(const struct smtp_limits *lim,
				      const struct smtp_ops *ops, void *user)
{
	struct smtp_session *s = mem_calloc(MEM_SMTP, 1, sizeof(*s));

	if (!s) {
		smtp_stats.alloc_fail++;
		return NULL;
	}
	limits_normalise(&s->lim, lim);
	s->ops = ops;
	s->user = user;
	s->cstate = CS_CMD;
	s->sstate = SS_REPLY;
	smtp_stats.sessions++;
	return s;
}

void smtp_feed(struct smtp_session *s, int dir, const uint8_t *data, size_t len, uint64_t ts_ns)
{
	if (!s || !len)
		return;
	dir = dir ? SMTP_TOCLIENT : SMTP_TOSERVER;
	s->ts = ts_ns;
	s->info.bytes[dir] += len;
	smtp_stats.bytes[dir] += len;
	if (s->info.ended)
		return;
	if (dir == SMTP_TOCLIENT) {
		s->info.server_seen = 1;
		server_input(s, data, len);
	} else {
		client_bytes(s, data, len);
	}
}

void smtp_gap(struct smtp_session *s, int dir, uint64_t n)
{
	struct smtp_txi *t;

	if (!s || !n)
		return;
	dir = dir ? SMTP_TOCLIENT : SMTP_TOSERVER;
	s->info.gap_bytes[dir] += n;
	if (s->info.ended)
		return;
	if (dir == SMTP_TOCLIENT) {
		s->info.server_seen = 1;
		if (s->sstate == SS_TLS)
			return;
		struct smtp_linebuf *lb = &s->line[dir];

		anomaly(s, s->cur, SMTP_ANOM_GAP);
		/* A cut reply line whose code we hold ("250 2.0.0 Ok: que"):
		 * its command still got its reply; take it, text cut short. */
		if (lb->len >= 4 && lb->buf[0] >= '0' && lb->buf[0] <= '9' &&
		    lb->buf[1] >= '0' && lb->buf[1] <= '9' && lb->buf[2] >= '0' &&
		    lb->buf[2] <= '9' && (lb->buf[3] == ' ' || lb->buf[3] == '-')) {
			size_t ln = lb->len > s->lim.max_line ? s->lim.max_line : lb->len;

			if (lb->buf[ln - 1] == '\r')
				ln--;
			reply_line(s, lb->buf, ln, 0);
		}
		line_reset(lb);
		lb->resync = 2;
		return;
	}
	if (s->stall)
		stall_force(s, SMTP_ANOM_GAP);
	t = s->data_tx;
	switch (s->cstate) {
	case CS_TLS:
		return;
	case CS_DATA:
		anomaly(s, t, SMTP_ANOM_GAP);
		if (t) {
			t->tx.gap_bytes += n;
			if (s->ops && s->ops->tx_gap)
				s->ops->tx_gap(s->user, &t->tx, n);
		}
		/* Line start unknown: only a later CRLF "." CRLF ends it. */
		s->dstate = DS_MID;
		s->data_cr = 0;
		return;
	case CS_BDAT: {
		uint64_t k = n < s->bdat_left ? n : s->bdat_left;

		anomaly(s, t, SMTP_ANOM_GAP);
		if (t) {
			t->tx.gap_bytes += k;
			if (s->ops && s->ops->tx_gap)
				s->ops->tx_gap(s->user, &t->tx, k);
		}
		s->bdat_left -= k;
		if (s->bdat_left)
			return;
		bdat_done(s);
		if (k == n)
			return;      /* the gap ended with the chunk */
		break;
	}
	case CS_CMD:
		anomaly(s, s->cur, SMTP_ANOM_GAP);
		client_gap_command(s);
		break;
	default:
		anomaly(s, s->cur, SMTP_ANOM_GAP);
		break;
	}
	line_reset(&s->line[dir]);
	s->line[dir].resync = 2;
}

void smtp_end(struct smtp_session *s, uint64_t ts_ns)
{
	struct smtp_txi *t;

	if (!s || s->info.ended)
		return;
	s->ts = ts_ns;
	if (s->stall)
		stall_force(s, SMTP_ANOM_NO_REPLY);
	if (s->cstate == CS_DATA || s->cstate == CS_BDAT)
		tx_close(s, s->data_tx, SMTP_TX_SESSION_END);
	s->data_tx = NULL;
	s->cstate = CS_END;
	q_clear(s, SMTP_ANOM_NO_REPLY);
	for (t = s->tx_head; t; t = t->next)
		if (!t->closed) {
			t->closed = 1;
			if (!(t->tx.flags & SMTP_TX_DATA_END))
				t->tx.flags |= SMTP_TX_SESSION_END;
		}
	s->cur = NULL;
	tx_emit_ready(s);
	s->info.ended = 1;
}

void smtp_session_free(struct smtp_session *s)
{
	struct smtp_txi *t, *nt;

	if (!s)
		return;
	for (t = s->tx_head; t; t = nt) {
		nt = t->next;
		tx_free(t);
	}
	for (int d = 0; d < 2; d++) {
		if (s->line[d].buf)
			wipe(s->line[d].buf, s->line[d].cap);
		mem_free(MEM_SMTP, s->line[d].buf);
	}
	if (s->stall_buf)
		wipe(s->stall_buf, s->stall_cap);
	mem_free(MEM_SMTP, s->stall_buf);
	mem_free(MEM_SMTP, s->reply_text);
	mem_free(MEM_SMTP, s->q);
	mem_free(MEM_SMTP, s->helo);
	mem_free(MEM_SMTP, s->auth_mech);
	mem_free(MEM_SMTP, s->auth_user);
	mem_free(MEM_SMTP, s->xclient);
	mem_free(MEM_SMTP, s->xforward);
	mem_free(MEM_SMTP, s);
}

const struct smtp_session_info *smtp_session_info(const struct smtp_session *s)
{
	return &s->info;
}

size_t smtp_session_sizeof(void)
{
	return sizeof(struct smtp_session);
}

int smtp_session_validate(const struct smtp_session *s, const char **why)
{
	const char *w = NULL;
	const struct smtp_txi *t;
	uint32_t open = 0;

#define BAD(msg) do { w = (msg); goto fail; } while (0)
	for (int d = 0; d < 2; d++) {
		const struct smtp_linebuf *lb = &s->line[d];

		if (lb->len > lb->cap || lb->cap > s->lim.max_line + 1)
			BAD("line buffer over its cap");
		if (!lb->buf && lb->cap)
			BAD("line buffer cap without buffer");
		if (lb->len > lb->total)
			BAD("line buffer holds more than it was given");
	}
	if (s->stall_len > s->stall_cap || s->stall_cap > s->lim.max_stall)
		BAD("stall buffer over its cap");
	if (s->stall_len && !s->stall)
		BAD("stall bytes held while not stalled");
	if (s->q_len > s->q_cap || s->q_len > s->lim.max_pipeline + 1 ||
	    (s->q_cap && s->q_head >= s->q_cap))
		BAD("queue bounds");
	if (s->q_len == s->lim.max_pipeline + 1 &&
	    s->q[(s->q_head + s->q_len - 1) % s->q_cap].cmd != CMD_PHANTOM)
		BAD("queue over max_pipeline without a phantom tail");
	if (s->reply_len > s->lim.max_reply_text)
		BAD("reply text over its cap");
	if (s->cstate < CS_CMD || s->cstate > CS_END)
		BAD("client state");
	if (s->cstate == CS_BDAT && s->bdat_left == 0)
		BAD("BDAT state without bytes left");
	if (s->cstate == CS_DATA && (s->dstate < DS_BOL_CRLF || s->dstate > DS_DOTCR_LF))
		BAD("data state");
	if (s->cstate != CS_DATA && s->cstate != CS_BDAT && s->data_tx)
		BAD("data tx outside content");
	if (s->data_tx && s->data_tx != s->cur)
		BAD("data tx is not the current tx");
	for (t = s->tx_head; t; t = t->next) {
		uint32_t refs = 0, rej = 0;

		for (uint32_t i = 0; i < s->q_len; i++) {
			const struct smtp_pending *e = &s->q[(s->q_head + i) % s->q_cap];

			if (e->tx == t)
				refs++;
			if (e->tx == t && e->cmd == SMTP_VERB_RCPT && e->arg != RCPT_NONE &&
			    e->arg >= t->tx.nrcpt)
				BAD("queued RCPT points past the recipients");
		}
		if (refs != t->pending)
			BAD("tx pending count differs from the queue");
		if (t->tx.nrcpt > t->rcpt_cap || t->rcpt_cap > s->lim.max_rcpts)
			BAD("recipient array bounds");
		for (uint32_t i = 0; i < t->tx.nrcpt; i++) {
			if (!t->tx.rcpts[i].addr || !t->tx.rcpts[i].reply_text)
				BAD("recipient without strings");
			rej += t->tx.rcpts[i].state == SMTP_RCPT_REJECTED;
		}
		if (rej != t->tx.nrcpt_rejected)
			BAD("rejected count");
		if (t->mem > s->lim.max_tx_mem || t->inl_used > TX_INLINE)
			BAD("tx arena over its cap");
		if (!t->closed) {
			open++;
			if (t != s->cur)
				BAD("open tx that is not current");
		}
		if (t->next && t->next->tx.index <= t->tx.index)
			BAD("tx list out of order");
		if (!t->next && t != s->tx_tail)
			BAD("tx tail");
	}
	if (open > 1 || (s->cur && s->cur->closed))
		BAD("more than one open tx");
	if (s->cur && s->cur != s->tx_tail)
		BAD("current tx is not the last");
	if (s->info.ended && (s->tx_head || s->q_len))
		BAD("ended session still holds transactions");
	if (why)
		*why = NULL;
	return 0;
fail:
	if (why)
		*why = w;
	return -EINVAL;
#undef BAD
}
