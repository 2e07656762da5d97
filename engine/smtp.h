/* smtp: one SMTP session, both directions, as transactions.
 *
 * TCP reassembly feeds each direction of a connection as an in-order byte
 * stream, in pieces split anywhere, plus gap events for bytes the capture
 * lost. The session turns that into transactions (struct smtp_tx): MAIL FROM,
 * the recipients with the server's reply to each, the message bytes (given to
 * the message stage through struct smtp_ops as they pass, never buffered
 * here), and how the transaction ended.
 *
 * Layout. A session is one small struct (see smtp_session_sizeof()) plus
 * buffers made only when needed: a line buffer per direction (only when a line
 * straddles two feeds; a line inside one feed is parsed in place), the queue
 * of commands waiting for their reply (PIPELINING matches replies to commands
 * in order), the text of the reply being read, and a stall buffer for client
 * bytes that arrive before the reply that says how to read them (after DATA,
 * STARTTLS and AUTH). Each transaction is one allocation holding its strings in
 * a small arena (more blocks if it grows) plus the recipient array; it is
 * freed right after smtp_ops.tx_end returns.
 *
 * Every buffer is bounded by struct smtp_limits, every limit hit is counted
 * in smtp_stats.limit_hits[] and, where it changes what a record says, marked
 * in the transaction's anomalies. Lengths from the wire (BDAT) are only ever
 * counted down, never used to size an allocation.
 *
 * Message bytes (smtp_ops.tx_data): for DATA, dot-unstuffed, CRLFs kept, the
 * terminating ".\r\n" removed; the CRLF before it ends the last line and is
 * part of the message (RFC 5321 4.1.1.4), so an empty message is 0 bytes. For
 * BDAT, the chunk bytes as they are.
 *
 * Threading: a session belongs to one worker. smtp_stats is one set per
 * thread (each worker counts its own sessions; breakwater.c adds the
 * workers' sets up for the summary).
 * Callbacks must not call back into the session they come from.
 */
#ifndef BW_SMTP_H
#define BW_SMTP_H

#include <stddef.h>
#include <stdint.h>

enum smtp_dir {
	SMTP_TOSERVER = 0,      /* client -> server: commands, message bytes */
	SMTP_TOCLIENT = 1,      /* server -> client: replies */
};

/* Commands, counted by verb. SMTP_VERB_UNKNOWN also counts empty lines. */
enum smtp_verb {
	SMTP_VERB_UNKNOWN = 0,
	SMTP_VERB_HELO,
	SMTP_VERB_EHLO,
	SMTP_VERB_MAIL,
	SMTP_VERB_RCPT,
	SMTP_VERB_DATA,
	SMTP_VERB_BDAT,
	SMTP_VERB_RSET,
	SMTP_VERB_QUIT,
	SMTP_VERB_NOOP,
	SMTP_VERB_VRFY,
	SMTP_VERB_EXPN,
	SMTP_VERB_HELP,
	SMTP_VERB_AUTH,
	SMTP_VERB_STARTTLS,
	SMTP_VERB_XCLIENT,
	SMTP_VERB_XFORWARD,
	SMTP_VERB_MAX
};

/* Anomalies: bit n of smtp_tx.anomalies / smtp_session_info.anomalies is
 * enum value n; smtp_stats.anomalies[n] counts occurrences. */
enum smtp_anomaly {
	SMTP_ANOM_LINE_TOO_LONG = 0,  /* a line over max_line: first max_line bytes kept */
	SMTP_ANOM_TOO_MANY_RCPTS,     /* RCPT past max_rcpts: not kept, reply ignored */
	SMTP_ANOM_TOO_MANY_TX,        /* MAIL past max_tx: no transaction made */
	SMTP_ANOM_GAP,                /* bytes lost by the capture */
	SMTP_ANOM_REPLY_WITHOUT_COMMAND, /* a reply with no command waiting for one */
	SMTP_ANOM_UNKNOWN_COMMAND,
	SMTP_ANOM_INVALID_COMMAND,    /* known verb, bad arguments (MAIL without FROM:, BDAT size...) */
	SMTP_ANOM_DATA_BEFORE_354,    /* message bytes taken without having seen the 354 */
	SMTP_ANOM_BARE_LF,            /* a line ended by LF alone */
	SMTP_ANOM_INVALID_REPLY,      /* not "ddd[ -]text", or a multiline reply changing code */
	SMTP_ANOM_PIPELINING_OVERFLOW, /* more than max_pipeline commands awaiting replies */
	SMTP_ANOM_STARTTLS_INJECTION, /* plaintext sent after STARTTLS before/without the handshake */
	SMTP_ANOM_STALL_OVERFLOW,     /* reply to DATA/STARTTLS/AUTH not seen within max_stall client bytes */
	SMTP_ANOM_NO_SERVER,          /* one-sided capture: replies never seen, outcome assumed */
	SMTP_ANOM_NO_REPLY,           /* session ended with commands still waiting for replies */
	SMTP_ANOM_NESTED_MAIL,        /* MAIL inside an open transaction */
	SMTP_ANOM_NO_MAIL,            /* RCPT/DATA/BDAT without MAIL: transaction made up */
	SMTP_ANOM_DATA_END_AMBIGUOUS, /* "\n.\n", "\r\n.\n" or "\n.\r\n" in DATA: ends it for some MTAs (SMTP smuggling) */
	SMTP_ANOM_BDAT_AND_DATA,      /* BDAT and DATA mixed in one transaction */
	SMTP_ANOM_AFTER_QUIT,         /* commands after QUIT */
	SMTP_ANOM_TX_MEM,             /* a transaction's strings hit max_tx_mem: later ones dropped */
	SMTP_ANOM_ADDR_TOO_LONG,      /* an address or HELO over max_addr: truncated */
	SMTP_ANOM_MAX
};

/* Limits, counted in smtp_stats.limit_hits[] each time one is hit. */
enum smtp_limit {
	SMTP_LIMIT_LINE = 0,
	SMTP_LIMIT_RCPTS,
	SMTP_LIMIT_TX,
	SMTP_LIMIT_PIPELINE,
	SMTP_LIMIT_REPLY_TEXT,
	SMTP_LIMIT_STALL,
	SMTP_LIMIT_ADDR,
	SMTP_LIMIT_TX_MEM,
	SMTP_LIMIT_MAX
};

/* ESMTP capabilities seen in the EHLO reply (smtp_session_info.caps). */
enum smtp_cap {
	SMTP_CAP_PIPELINING = 1u << 0,
	SMTP_CAP_CHUNKING = 1u << 1,
	SMTP_CAP_STARTTLS = 1u << 2,
	SMTP_CAP_AUTH = 1u << 3,
	SMTP_CAP_SIZE = 1u << 4,
	SMTP_CAP_8BITMIME = 1u << 5,
	SMTP_CAP_SMTPUTF8 = 1u << 6,
	SMTP_CAP_BINARYMIME = 1u << 7,
	SMTP_CAP_DSN = 1u << 8,
	SMTP_CAP_ENHANCEDSTATUSCODES = 1u << 9,
	SMTP_CAP_XCLIENT = 1u << 10,
	SMTP_CAP_XFORWARD = 1u << 11,
	SMTP_CAP_VRFY = 1u << 12,
	SMTP_CAP_ETRN = 1u << 13,
};

/* smtp_tx.flags. At tx_end exactly one of COMPLETE and INCOMPLETE is set.
 * COMPLETE says the whole message went over the wire (end of content
 * seen); whether the server took it is ACCEPTED / DATA_REJECTED / end_code
 * (0 when its reply was never seen: anomaly no_reply or no_server). */
enum smtp_tx_flag {
	SMTP_TX_COMPLETE = 1u << 0,      /* the whole message was sent */
	SMTP_TX_INCOMPLETE = 1u << 1,    /* anything else: reset, aborted, cut off, refused before content */
	SMTP_TX_DATA = 1u << 2,          /* message content started (354, or the first BDAT) */
	SMTP_TX_DATA_END = 1u << 3,      /* end of content seen (".\r\n" or the LAST chunk) */
	SMTP_TX_ACCEPTED = 1u << 4,      /* 2xx to the end of data: the server took the message */
	SMTP_TX_DATA_REJECTED = 1u << 5, /* 4xx/5xx to DATA, to a BDAT or to the end of data */
	SMTP_TX_MAIL_REJECTED = 1u << 6, /* 4xx/5xx to MAIL FROM */
	SMTP_TX_BDAT = 1u << 7,          /* content came as BDAT chunks */
	SMTP_TX_TLS = 1u << 8,           /* placeholder for the encrypted rest of the session */
	SMTP_TX_RSET = 1u << 9,          /* ended by RSET */
	SMTP_TX_HELO_RESET = 1u << 10,   /* ended by HELO/EHLO/XCLIENT/STARTTLS */
	SMTP_TX_QUIT = 1u << 11,         /* ended by QUIT before completing */
	SMTP_TX_SESSION_END = 1u << 12,  /* ended by smtp_end() before completing */
};
#define SMTP_TX_FLAG_COUNT 13

enum smtp_rcpt_state {
	SMTP_RCPT_PENDING = 0,  /* no reply seen (yet, or never: one-sided, cut off) */
	SMTP_RCPT_ACCEPTED,     /* 2xx */
	SMTP_RCPT_REJECTED,     /* 4xx/5xx (or anything else) */
};

struct smtp_limits {
	uint32_t max_line;        /* bytes of a command/reply line kept; rest skipped to the LF */
	uint32_t max_rcpts;       /* recipients kept per transaction */
	uint32_t max_tx;          /* transactions per session */
	uint32_t max_pipeline;    /* commands awaiting a reply */
	uint32_t max_reply_text;  /* bytes of reply text kept (multiline joined by ' ') */
	uint32_t max_stall;       /* client bytes held while waiting for a DATA/STARTTLS/AUTH reply */
	uint32_t max_addr;        /* bytes of an address, HELO or ESMTP parameter string kept */
	uint32_t max_tx_mem;      /* bytes of strings per transaction */
};

struct smtp_rcpt {
	const char *addr;         /* bare address, NUL-terminated */
	const char *reply_text;   /* "" until a reply is seen; at most max_reply_text bytes */
	uint16_t reply_code;      /* 0 until a reply is seen */
	uint8_t state;            /* enum smtp_rcpt_state */
};

struct smtp_reply {
	uint16_t code;            /* 0: none seen */
	const char *text;         /* "" when none */
};

/* A transaction as the output stage reads it in smtp_ops.tx_end. Strings are
 * NUL-terminated, owned by the session, valid during the callback only;
 * NULL means "never seen" where noted. */
struct smtp_tx {
	uint32_t index;           /* 0, 1, ... in the session */
	uint32_t flags;           /* enum smtp_tx_flag */
	uint64_t anomalies;       /* 1 << enum smtp_anomaly */
	uint64_t ts_begin;        /* ns: MAIL FROM (or what opened the tx) */
	uint64_t ts_end;          /* ns: what ended it */
	const char *helo;         /* HELO/EHLO argument then current; NULL if none */
	const char *mail_from;    /* bare address, "" for <>; NULL when no MAIL was seen */
	const char *mail_params;  /* ESMTP parameters as sent ("SIZE=123 BODY=8BITMIME"), or "" */
	struct smtp_rcpt *rcpts;  /* nrcpt entries in RCPT order */
	uint32_t nrcpt;
	uint32_t nrcpt_rejected;  /* rcpts in state SMTP_RCPT_REJECTED */
	uint32_t rcpt_dropped;    /* RCPTs past max_rcpts, not kept */
	const char *auth_mech;    /* AUTH mechanism of the session, NULL if none */
	const char *auth_user;    /* user name when visible in clear, NULL if not */
	uint16_t auth_code;       /* final reply to AUTH, 0 if none */
	uint16_t mail_code;       /* reply to MAIL FROM */
	uint16_t data_code;       /* reply to DATA (354 or the refusal), or to the first BDAT */
	uint16_t end_code;        /* reply to the end of data / BDAT LAST */
	const char *xclient;      /* XCLIENT attributes as sent, NULL if none */
	const char *xforward;     /* XFORWARD attributes as sent (joined), NULL if none */
	struct smtp_reply last_reply; /* last server reply matched to this tx */
	uint64_t size;            /* message bytes given to tx_data */
	uint64_t gap_bytes;       /* message bytes lost in capture gaps */
};

struct smtp_session;

/* Callbacks; user is smtp_session_new()'s. tx is owned by the session and
 * valid only during the call. tx_data gets message bytes in order, in
 * pieces of any size (possibly pointing into the caller's feed buffer).
 * Every callback may be NULL. */
struct smtp_ops {
	void (*tx_data_begin)(void *user, const struct smtp_tx *tx);
	void (*tx_data)(void *user, const struct smtp_tx *tx, const uint8_t *p, size_t n);
	/* n message bytes lost in a capture gap (the tx is marked SMTP_ANOM_GAP) */
	void (*tx_gap)(void *user, const struct smtp_tx *tx, uint64_t n);
	void (*tx_end)(void *user, const struct smtp_session *s, const struct smtp_tx *tx);
};

/* Session-level facts, read with smtp_session_info(). */
struct smtp_session_info {
	uint64_t bytes[2];        /* per enum smtp_dir, everything fed (TLS included) */
	uint64_t lines[2];        /* lines seen in clear */
	uint64_t gap_bytes[2];
	uint64_t anomalies;       /* union of every anomaly in the session */
	uint32_t caps;            /* enum smtp_cap, from the last EHLO reply */
	uint32_t tx_count;        /* transactions made */
	uint32_t commands;
	uint32_t replies;
	uint16_t greeting_code;   /* 0 if no greeting seen */
	uint16_t auth_code;       /* final reply to the last AUTH */
	uint8_t tls;              /* STARTTLS accepted: the rest was counted only */
	uint8_t quit;             /* QUIT seen */
	uint8_t server_seen;      /* any byte or gap from the server */
	uint8_t ended;            /* smtp_end() called */
	const char *helo;         /* current HELO/EHLO argument, NULL if none */
};

/* Counters for the summary, over all sessions (see "Threading" above). */
struct smtp_stats {
	uint64_t sessions;
	uint64_t transactions;
	uint64_t tx_complete;
	uint64_t tx_accepted;
	uint64_t commands[SMTP_VERB_MAX];
	uint64_t replies[6];      /* [1..5]: 1xx..5xx; [0]: unparsable */
	uint64_t anomalies[SMTP_ANOM_MAX];
	uint64_t limit_hits[SMTP_LIMIT_MAX];
	uint64_t alloc_fail;      /* allocations refused by the allocator (not by a limit) */
	uint64_t bytes[2];
	uint64_t lines[2];
	uint64_t message_bytes;
	uint64_t tls_sessions;
};

extern __thread struct smtp_stats smtp_stats;

/* Fills lim with the defaults (Postfix-like: 2048-byte lines, 1000 rcpts). */
void smtp_limits_default(struct smtp_limits *lim);

/* Makes a session. lim is copied (NULL: defaults; zero fields: default);
 * ops must outlive the session (NULL: no callbacks). Returns NULL when the
 * allocation fails (counted). The caller owns the session and frees it with
 * smtp_session_free(). */
struct smtp_session *smtp_session_new(const struct smtp_limits *lim,
				      const struct smtp_ops *ops, void *user);

/* Feeds len bytes of direction dir (enum smtp_dir), in stream order.
 * data is borrowed for the call. Callbacks fire from inside. */
void smtp_feed(struct smtp_session *s, int dir, const uint8_t *data, size_t len,
	       uint64_t ts_ns);

/* missing_bytes of direction dir were lost: the parser drops the rest of
 * the current line and resyncs at the next one; in message content it keeps
 * counting (tx.gap_bytes) and marks the transaction. */
void smtp_gap(struct smtp_session *s, int dir, uint64_t missing_bytes);

/* End of the session: assumes what still waits for a reply, reports every
 * open transaction (flagged incomplete where it was). Further feeds are
 * counted and ignored. Idempotent. */
void smtp_end(struct smtp_session *s, uint64_t ts_ns);

/* Frees the session and anything it holds; transactions not yet reported
 * are dropped without tx_end (call smtp_end() first). NULL is fine. */
void smtp_session_free(struct smtp_session *s);

const struct smtp_session_info *smtp_session_info(const struct smtp_session *s);

/* Checks the session's internal invariants. Returns 0, or -EINVAL with
 * *why (if why) naming the broken one. For tests and fuzzers. */
int smtp_session_validate(const struct smtp_session *s, const char **why);

/* sizeof(struct smtp_session), for the memory budget. */
size_t smtp_session_sizeof(void);

/* Names, for JSON and the summary; "?" when out of range. */
const char *smtp_verb_name(enum smtp_verb v);
const char *smtp_anomaly_name(enum smtp_anomaly a);
const char *smtp_limit_name(enum smtp_limit l);
const char *smtp_tx_flag_name(unsigned bit);   /* bit index, 0..SMTP_TX_FLAG_COUNT-1 */
const char *smtp_cap_name(unsigned bit);       /* bit index of enum smtp_cap */

#endif
