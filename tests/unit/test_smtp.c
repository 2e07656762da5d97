/* Unit tests for the SMTP session parser (engine/smtp.c).
 *
 * Table-driven: each case is a transcript (client and server pieces in
 * arrival order, gaps) and the expected record text. Every case runs four
 * ways: each piece whole, one byte at a time, in 7-byte and in 3-byte
 * pieces; all must print the same records, and smtp_session_validate()
 * must hold after every call. Transcripts follow what Postfix 3.x says.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mem.h"
#include "smtp.h"

/* ---- the recorder: tx records as text ---------------------------------- */

#define REC_OUT 16384
#define REC_SLOTS 8
#define REC_DATA 1024

struct rec {
	char out[REC_OUT];
	size_t len;
	char data[REC_SLOTS][REC_DATA];   /* content per tx, by index % slots */
	size_t dlen[REC_SLOTS];
	unsigned begun[REC_SLOTS];
	uint64_t gap[REC_SLOTS];
	unsigned errors;                  /* callback misuse seen */
};

static void rec_printf(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#include <stdarg.h>
static void rec_printf(struct rec *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(r->out + r->len, REC_OUT - r->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		r->len += (size_t)n < REC_OUT - r->len ? (size_t)n : REC_OUT - r->len - 1;
}

/* Prints p[0..n) with CR, LF and non-printables escaped. */
static void rec_esc(struct rec *r, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c == '\r')
			rec_printf(r, "\\r");
		else if (c == '\n')
			rec_printf(r, "\\n");
		else if (c < 32 || c > 126)
			rec_printf(r, "\\x%02x", c);
		else
			rec_printf(r, "%c", c);
	}
}

static void on_begin(void *user, const struct smtp_tx *tx)
{
	struct rec *r = user;
	unsigned k = tx->index % REC_SLOTS;

	if (r->begun[k] || tx->size)
		r->errors++;
	r->begun[k]++;
}

static void on_data(void *user, const struct smtp_tx *tx, const uint8_t *p, size_t n)
{
	struct rec *r = user;
	unsigned k = tx->index % REC_SLOTS;

	if (!r->begun[k] || n == 0)
		r->errors++;
	for (size_t i = 0; i < n && r->dlen[k] < REC_DATA; i++)
		r->data[k][r->dlen[k]++] = (char)p[i];
}

static void on_gap(void *user, const struct smtp_tx *tx, uint64_t n)
{
	struct rec *r = user;

	r->gap[tx->index % REC_SLOTS] += n;
}

static void rec_bits(struct rec *r, const char *label, uint64_t bits, unsigned count,
		     const char *(*name)(unsigned))
{
	const char *sep = "";

	if (!bits)
		return;
	rec_printf(r, " %s=", label);
	for (unsigned i = 0; i < count; i++)
		if (bits & (1ull << i)) {
			rec_printf(r, "%s%s", sep, name(i));
			sep = ",";
		}
}

static const char *anom_name(unsigned i)
{
	return smtp_anomaly_name((enum smtp_anomaly)i);
}

static void on_end(void *user, const struct smtp_session *s, const struct smtp_tx *tx)
{
	struct rec *r = user;
	unsigned k = tx->index % REC_SLOTS;

	(void)s;
	rec_printf(r, "tx%u", tx->index);
	if (tx->helo)
		rec_printf(r, " helo=%s", tx->helo);
	if (tx->mail_from)
		rec_printf(r, " from=<%s>", tx->mail_from);
	if (tx->mail_params[0])
		rec_printf(r, " params='%s'", tx->mail_params);
	for (uint32_t i = 0; i < tx->nrcpt; i++) {
		const struct smtp_rcpt *rc = &tx->rcpts[i];

		rec_printf(r, " rcpt=<%s>%u%s", rc->addr, rc->reply_code,
			   rc->state == SMTP_RCPT_ACCEPTED ? "+" :
			   rc->state == SMTP_RCPT_REJECTED ? "-" : "?");
		if (rc->state == SMTP_RCPT_REJECTED)
			rec_printf(r, "'%s'", rc->reply_text);
	}
	if (tx->rcpt_dropped)
		rec_printf(r, " dropped=%u", tx->rcpt_dropped);
	if (tx->auth_mech)
		rec_printf(r, " auth=%s/%s/%u", tx->auth_mech, tx->auth_user ? tx->auth_user : "-",
			   tx->auth_code);
	if (tx->xclient)
		rec_printf(r, " xclient='%s'", tx->xclient);
	if (tx->xforward)
		rec_printf(r, " xforward='%s'", tx->xforward);
	if (tx->mail_code || tx->data_code || tx->end_code)
		rec_printf(r, " codes=%u/%u/%u", tx->mail_code, tx->data_code, tx->end_code);
	if (tx->last_reply.code)
		rec_printf(r, " last=%u'%s'", tx->last_reply.code, tx->last_reply.text);
	rec_bits(r, "flags", tx->flags, SMTP_TX_FLAG_COUNT, smtp_tx_flag_name);
	rec_bits(r, "anom", tx->anomalies, SMTP_ANOM_MAX, anom_name);
	if (tx->size != r->dlen[k] && r->dlen[k] < REC_DATA)
		r->errors++;
	if (tx->gap_bytes != r->gap[k])
		r->errors++;
	if (tx->flags & SMTP_TX_DATA) {
		rec_printf(r, " size=%llu", (unsigned long long)tx->size);
		if (tx->gap_bytes)
			rec_printf(r, " gap=%llu", (unsigned long long)tx->gap_bytes);
		rec_printf(r, " data='");
		rec_esc(r, r->data[k], r->dlen[k] < 200 ? r->dlen[k] : 200);
		rec_printf(r, "'");
	}
	rec_printf(r, "\n");
	r->dlen[k] = 0;
	r->begun[k] = 0;
	r->gap[k] = 0;
}

static const char *cap_name(unsigned i)
{
	return smtp_cap_name(i);
}

static void rec_session(struct rec *r, const struct smtp_session *s)
{
	const struct smtp_session_info *in = smtp_session_info(s);

	rec_printf(r, "S tx=%u cmds=%u replies=%u greet=%u", in->tx_count, in->commands,
		   in->replies, in->greeting_code);
	rec_bits(r, "caps", in->caps, 14, cap_name);
	if (in->tls)
		rec_printf(r, " tls");
	if (in->quit)
		rec_printf(r, " quit");
	rec_bits(r, "anom", in->anomalies, SMTP_ANOM_MAX, anom_name);
	rec_printf(r, " bytes=%llu/%llu lines=%llu/%llu",
		   (unsigned long long)in->bytes[0], (unsigned long long)in->bytes[1],
		   (unsigned long long)in->lines[0], (unsigned long long)in->lines[1]);
	if (in->gap_bytes[0] || in->gap_bytes[1])
		rec_printf(r, " gaps=%llu/%llu", (unsigned long long)in->gap_bytes[0],
			   (unsigned long long)in->gap_bytes[1]);
	rec_printf(r, "\n");
}

static const struct smtp_ops rec_ops = {
	.tx_data_begin = on_begin,
	.tx_data = on_data,
	.tx_gap = on_gap,
	.tx_end = on_end,
};

/* ---- transcripts ------------------------------------------------------- */

struct step {
	int dir;              /* SMTP_TOSERVER / SMTP_TOCLIENT */
	const char *p;        /* NULL: a gap of gap bytes */
	size_t n;
	uint64_t gap;
	unsigned rep;         /* feed p this many times (0: once) */
};

#define C(x) { SMTP_TOSERVER, x, sizeof(x) - 1, 0, 0 }
#define S(x) { SMTP_TOCLIENT, x, sizeof(x) - 1, 0, 0 }
#define CREP(x, r) { SMTP_TOSERVER, x, sizeof(x) - 1, 0, r }
#define GAP(d, g) { d, NULL, 0, g, 0 }
#define END { -1, NULL, 0, 0, 0 }

/* Postfix's usual lines. */
#define GREET "220 mx.example.net ESMTP Postfix (Debian/GNU)\r\n"
#define EHLO_REPLY "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n" \
	"250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n" \
	"250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
#define OK_MAIL "250 2.1.0 Ok\r\n"
#define OK_RCPT "250 2.1.5 Ok\r\n"
#define GO_DATA "354 End data with <CR><LF>.<CR><LF>\r\n"
#define QUEUED "250 2.0.0 Ok: queued as 4Xk2Lq1x3Bz9\r\n"
#define BYE "221 2.0.0 Bye\r\n"
#define MSG "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nHello Bob\r\n"
#define MSG_ESC "From: Alice <alice@example.org>\\r\\nTo: bob@example.net\\r\\nSubject: hi\\r\\n\\r\\nHello Bob\\r\\n"

struct tcase {
	const char *name;
	const struct smtp_limits *lim;
	const struct step *steps;
	const char *expect;
};

static const struct step t_basic[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<alice@example.org> SIZE=120\r\n"), S(OK_MAIL),
	C("RCPT TO:<bob@example.net>\r\n"), S(OK_RCPT),
	C("DATA\r\n"), S(GO_DATA),
	C(MSG), C(".\r\n"), S(QUEUED),
	C("QUIT\r\n"), S(BYE),
	END
};

/* Several commands in one segment, the replies in one segment. */
static const struct step t_pipelining[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n"
	  "RCPT TO:<nobody@example.net>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n"),
	S(OK_MAIL OK_RCPT
	  "550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown in local recipient table\r\n"
	  "450 4.2.0 <carol@example.net>: Recipient address rejected: Greylisted\r\n"
	  GO_DATA),
	C(MSG ".\r\nQUIT\r\n"), S(QUEUED BYE),
	END
};

/* Every recipient refused: DATA gets 554 and no content follows. */
static const struct step t_data_rejected[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<spam@example.biz>\r\nRCPT TO:<nobody@example.net>\r\nDATA\r\n"),
	S(OK_MAIL "550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown\r\n"
	  "554 5.5.1 Error: no valid recipients\r\n"),
	C("RSET\r\n"), S("250 2.0.0 Ok\r\n"),
	C("QUIT\r\n"), S(BYE),
	END
};

/* A broken client sends content right after DATA; the 554 means those
 * lines are commands (unknown ones), never message content. */
static const struct step t_data_rejected_eager[] = {
	S(GREET),
	C("HELO bot\r\n"), S("250 mx.example.net\r\n"),
	C("MAIL FROM:<spam@example.biz>\r\n"), S(OK_MAIL),
	C("RCPT TO:<nobody@example.net>\r\n"),
	S("550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown\r\n"),
	C("DATA\r\nSubject: buy\r\n\r\n.\r\nQUIT\r\n"),
	S("554 5.5.1 Error: no valid recipients\r\n"
	  "502 5.5.2 Error: command not recognized\r\n"
	  "500 5.5.2 Error: bad syntax\r\n"
	  "502 5.5.2 Error: command not recognized\r\n" BYE),
	END
};

/* Client bytes of the content arrive before the 354 (arrival order between
 * directions): held, then read as content once the 354 is seen. */
static const struct step t_data_before_354[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<alice@example.org>\r\n"), S(OK_MAIL),
	C("RCPT TO:<bob@example.net>\r\n"), S(OK_RCPT),
	C("DATA\r\n"), C("Subject: early\r\n\r\nbody\r\n.\r\nQUIT\r\n"),
	S(GO_DATA QUEUED BYE),
	END
};

static const struct step t_dots[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<alice@example.org>\r\n"), S(OK_MAIL),
	C("RCPT TO:<bob@example.net>\r\n"), S(OK_RCPT),
	C("DATA\r\n"), S(GO_DATA),
	C("Subject: dots\r\n\r\n..leading\r\n...\r\n.x\r\nmid.dle\r\n..\r\n.\r"), C("\n"),
	S(QUEUED),
	C("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n"),
	S(OK_MAIL OK_RCPT GO_DATA),
	/* ".\r\n" split over three feeds, empty message */
	C("."), C("\r"), C("\n"),
	S(QUEUED),
	END
};

/* "\r\n.\n" and "\n.\r\n" end DATA for some MTAs (SMTP smuggling): not
 * for us, but marked. */
static const struct step t_smuggling[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<alice@example.org>\r\n"), S(OK_MAIL),
	C("RCPT TO:<bob@example.net>\r\n"), S(OK_RCPT),
	C("DATA\r\n"), S(GO_DATA),
	C("Subject: a\r\n\r\nx\r\n.\nMAIL FROM:<admin@example.net>\r\nbare\n.\r\ny\r\n.\r\n"),
	S(QUEUED),
	END
};

static const struct step t_bdat[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<alice@example.org> BODY=BINARYMIME\r\n"), S(OK_MAIL),
	C("RCPT TO:<bob@example.net>\r\n"), S(OK_RCPT),
	/* a chunk holding "\r\n.\r\n": ends nothing */
	C("BDAT 20\r\nSubject: b\r\n\r\n.\r\nabc"), S("250 2.0.0 Ok: 20 bytes\r\n"),
	C("BDAT 0 LAST\r\n"), S(QUEUED),
	/* one chunk over three feeds, LAST, pipelined with QUIT */
	C("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nBDAT 12 LAST\r\n1234"),
	C("5678"), C("9\r\n.QUIT\r\n"),
	S(OK_MAIL OK_RCPT QUEUED BYE),
	END
};

/* BDAT refused, bad sizes, BDAT without MAIL. */
static const struct step t_bdat_odd[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nBDAT 3 LAST\r\nabc"),
	S(OK_MAIL OK_RCPT "552 5.3.4 Message size exceeds fixed limit\r\n"),
	C("BDAT x\r\nBDAT 99999999999999999999999 LAST\r\nBDAT 1 FIRST\r\n"),
	S("501 5.5.4 Syntax: BDAT count [LAST]\r\n501 5.5.4 Syntax: BDAT count [LAST]\r\n"
	  "501 5.5.4 Syntax: BDAT count [LAST]\r\n"),
	C("RSET\r\n"), S("250 2.0.0 Ok\r\n"),
	END
};

static const struct step t_rset_ehlo[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<alice@example.org>\r\n"), S(OK_MAIL),
	C("RCPT TO:<bob@example.net>\r\n"), S(OK_RCPT),
	C("RSET\r\n"), S("250 2.0.0 Ok\r\n"),
	C("MAIL FROM:<alice@example.org>\r\n"), S(OK_MAIL),
	C("RCPT TO:<carol@example.net>\r\n"), S(OK_RCPT),
	C("EHLO other.example.org\r\n"), S("250-mx.example.net\r\n250 PIPELINING\r\n"),
	C("MAIL FROM:<alice@example.org>\r\n"), S(OK_MAIL),
	C("MAIL FROM:<mallory@example.org>\r\n"), S("503 5.5.1 Error: nested MAIL command\r\n"),
	C("QUIT\r\n"), S(BYE),
	END
};

static const struct step t_starttls[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("STARTTLS\r\n"), S("220 2.0.0 Ready to start TLS\r\n"),
	C("\x16\x03\x01\x00\x05hello\r\nMAIL FROM:<x@y>\r\n"),
	S("\x16\x03\x03\x00\x02hi\r\n250 fake\r\n"),
	END
};

/* "STARTTLS\r\nRSET\r\n" in one segment: plaintext injected after
 * STARTTLS (CVE-2011-0411). */
static const struct step t_starttls_injection[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("STARTTLS\r\nRSET\r\n"), S("220 2.0.0 Ready to start TLS\r\n"),
	END
};

static const struct step t_starttls_refused[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("STARTTLS\r\nMAIL FROM:<alice@example.org>\r\n"),
	S("454 4.7.0 TLS not available due to local problem\r\n" OK_MAIL),
	C("RCPT TO:<bob@example.net>\r\n"), S(OK_RCPT),
	END
};

static const struct step t_auth_plain[] = {
	S("220 smtp.example.net ESMTP\r\n"),
	C("EHLO laptop\r\n"), S("250-smtp.example.net\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"),
	/* \0joe@example.com\0secret */
	C("AUTH PLAIN AGpvZUBleGFtcGxlLmNvbQBzZWNyZXQ=\r\nMAIL FROM:<joe@example.com>\r\n"),
	S("235 2.7.0 Authentication successful\r\n" OK_MAIL),
	C("RCPT TO:<bob@example.net>\r\n"), S(OK_RCPT),
	C("QUIT\r\n"), S(BYE),
	END
};

static const struct step t_auth_login[] = {
	S("220 smtp.example.net ESMTP\r\n"),
	C("EHLO laptop\r\n"), S("250-smtp.example.net\r\n250 AUTH LOGIN\r\n"),
	C("AUTH LOGIN\r\n"), S("334 VXNlcm5hbWU6\r\n"),
	C("am9l\r\n"), S("334 UGFzc3dvcmQ6\r\n"),
	C("c2VjcmV0\r\n"), S("235 2.7.0 Authentication successful\r\n"),
	C("MAIL FROM:<joe@example.com>\r\n"), S(OK_MAIL),
	C("RSET\r\n"), S("250 2.0.0 Ok\r\n"),
	/* AUTH PLAIN without initial response, failing */
	C("AUTH PLAIN\r\n"), S("334 \r\n"),
	C("AGV2ZQBndWVzcw==\r\n"),
	S("535 5.7.8 Error: authentication failed: authentication failure\r\n"),
	C("MAIL FROM:<eve@example.com>\r\n"), S(OK_MAIL),
	END
};

static const struct step t_null_sender[] = {
	S(GREET),
	C("EHLO bounce.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<> SIZE=2048 BODY=8BITMIME SMTPUTF8\r\n"), S(OK_MAIL),
	C("RCPT TO:<@relay1.example,@relay2.example:bob@example.net> NOTIFY=NEVER\r\n"), S(OK_RCPT),
	C("RCPT TO:<\"john doe\"@example.net>\r\n"), S(OK_RCPT),
	C("rcpt to: <carol@example.net>\r\n"), S(OK_RCPT),
	C("DATA\r\n"), S(GO_DATA), C("\r\n.\r\n"), S(QUEUED),
	END
};

static const struct smtp_limits lim_small = {
	.max_line = 48, .max_rcpts = 2, .max_tx = 2, .max_pipeline = 3,
	.max_reply_text = 24, .max_stall = 1024, .max_addr = 24, .max_tx_mem = 4096,
};

#define A50 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const struct step t_limits[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S("250-mx.example.net\r\n250 PIPELINING\r\n"),
	C("MAIL FROM:<" A50 A50 "@example.org>\r\n"), S(OK_MAIL),
	C("RCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\n"),
	S(OK_RCPT "550 5.1.1 <b@example.net>: Recipient address rejected: User unknown\r\n"
	  "452 4.5.3 Error: too many recipients\r\n"),
	C("NOOP " A50 A50 A50 A50 "\r\nNOOP\r\n"),
	S("250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"),
	C("RSET\r\n"), S("250 2.0.0 Ok\r\n"),
	C("MAIL FROM:<b@example.org>\r\n"), S(OK_MAIL),
	C("RSET\r\nMAIL FROM:<c@example.org>\r\n"), S("250 2.0.0 Ok\r\n" OK_MAIL),
	END
};

/* Five commands pipelined with room for three: the replies still match. */
static const struct step t_pipeline_overflow[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S("250-mx.example.net\r\n250 PIPELINING\r\n"),
	C("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nNOOP\r\nNOOP\r\nNOOP\r\n"),
	S(OK_MAIL "550 5.1.1 <b@example.net>: Recipient address rejected\r\n"
	  "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"),
	C("RCPT TO:<c@example.net>\r\n"), S(OK_RCPT),
	END
};

/* The server stays silent after DATA while the client sends more than
 * max_stall: assume the 354 and read on. */
static const struct step t_stall_overflow[] = {
	S(GREET),
	C("HELO client.example.org\r\n"), S("250 mx.example.net\r\n"),
	C("MAIL FROM:<a@example.org>\r\n"), S(OK_MAIL),
	C("RCPT TO:<b@example.net>\r\n"), S(OK_RCPT),
	C("DATA\r\n"), CREP("0123456789012345678901234567890123456789012345678\r\n", 25),
	C(".\r\n"),
	S(GO_DATA QUEUED),
	END
};

static const struct step t_gaps[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<alice@exa"), GAP(SMTP_TOSERVER, 10), C("ple.org>\r\nRCPT TO:<bob@example.net>\r\n"),
	S("501 5.1.7 Bad sender address syntax\r\n"), S(OK_RCPT),
	C("DATA\r\n"), S(GO_DATA),
	C("Subject: g\r\n\r\nbefore"), GAP(SMTP_TOSERVER, 100), C("after\r\n.\r\n"),
	S("250 2.0.0 Ok: que"), GAP(SMTP_TOCLIENT, 20), S("d as X\r\n"),
	C("QUIT\r\n"), S(BYE),
	END
};

/* Regression (zeek's smtp-bdat-gap trace): a client gap that ends exactly at
 * a line start must not cost the command after it. */
static const struct step t_gap_line_start[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<alice@example.org>\r\n"), GAP(SMTP_TOSERVER, 6),
	C("RCPT TO:<bob@example.net>\r\n"), S(OK_MAIL), S(OK_RCPT),
	C("DATA\r\n"), S(GO_DATA), C(MSG), C(".\r\n"), S(QUEUED),
	END
};

/* Regression (mangled-wrap capture): the EHLO reply lost whole in a server
 * gap; the 354 can only answer DATA, so replies line up again there. */
static const struct step t_lost_reply[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), GAP(SMTP_TOCLIENT, sizeof(EHLO_REPLY) - 1),
	C("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n"),
	S(OK_MAIL), S(GO_DATA), C(MSG), C(".\r\n"), S(QUEUED),
	END
};

/* A gap inside a BDAT chunk, and one running past its end. */
static const struct step t_gap_bdat[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nBDAT 10\r\nabc"),
	GAP(SMTP_TOSERVER, 4), C("def"),
	C("BDAT 5 LAST\r\nxy"), GAP(SMTP_TOSERVER, 9), C("T TO:<c@example.net>\r\nQUIT\r\n"),
	S(OK_MAIL OK_RCPT "250 2.0.0 Ok: 10 bytes\r\n" QUEUED BYE),
	END
};

/* Client direction only: transactions still come out. */
static const struct step t_one_sided[] = {
	C("EHLO client.example.org\r\n"),
	C("AUTH LOGIN\r\nam9l\r\nc2VjcmV0\r\n"),
	C("MAIL FROM:<joe@example.com>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n"),
	C("Subject: one\r\n\r\nside\r\n.\r\n"),
	C("MAIL FROM:<joe@example.com>\r\nRCPT TO:<bob@example.net>\r\nBDAT 4 LAST\r\nabcd"),
	C("MAIL FROM:<joe@example.com>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\ncut off"),
	END
};

static const struct step t_one_sided_tls[] = {
	C("EHLO client.example.org\r\nSTARTTLS\r\n\x16\x03\x01"),
	END
};

static const struct step t_misc[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("VRFY root\r\nEXPN staff\r\nHELP\r\nNOOP\r\nWIBBLE\r\n\r\n"),
	S("252 2.0.0 root\r\n502 5.5.2 Error: command not recognized\r\n"
	  "214 2.0.0 Ok\r\n250 2.0.0 Ok\r\n502 5.5.2 Error: command not recognized\r\n"
	  "500 5.5.2 Error: bad syntax\r\n"),
	S("250 surplus\r\n"), S("garbage line\r\n"), S("250x odd\r\n"),
	C("XCLIENT NAME=spike.porcupine.org ADDR=168.100.189.2\r\n"), S("220 mx.example.net ESMTP\r\n"),
	C("EHLO spike.porcupine.org\r\n"), S("250-mx.example.net\r\n251 PIPELINING\r\n"),
	C("XFORWARD NAME=a.example ADDR=192.0.2.1\r\nXFORWARD PROTO=ESMTP HELO=a.example\r\n"),
	S("250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"),
	C("MAIL FROM:<a@example.org>\n"), S(OK_MAIL),
	C("RCPT TO:<b@example.net>\r\nRCPT <c@example.net>\r\n"),
	S("250-2.1.5 Ok\r\n250-second line\r\n250 third\r\n501 5.5.4 Syntax: RCPT TO:<address>\r\n"),
	C("QUIT\r\n"), S(BYE), C("NOOP\r\n"),
	END
};

/* smtp_end() in the middle of content. */
static const struct step t_cut_in_data[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<a@example.org>\r\n"), S(OK_MAIL),
	C("RCPT TO:<b@example.net>\r\n"), S(OK_RCPT),
	C("DATA\r\n"), S(GO_DATA),
	C("Subject: cut\r\n\r\npart"),
	END
};

/* The last reply never comes. */
static const struct step t_no_reply[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"),
	S(OK_MAIL OK_RCPT),
	C("Subject: s\r\n\r\nt\r\n.\r\n"),
	END
};

/* Two BDAT transactions pipelined before any reply: both wait for their
 * replies, then come out in order. */
static const struct step t_bdat_pipelined[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nBDAT 3 LAST\r\nabc"
	  "MAIL FROM:<c@example.org>\r\nRCPT TO:<d@example.net>\r\nBDAT 3 LAST\r\ndef"),
	S(OK_MAIL OK_RCPT QUEUED OK_MAIL),
	S("550 5.1.1 <d@example.net>: Recipient address rejected: User unknown\r\n"
	  "554 5.5.1 Error: no valid recipients\r\n"),
	END
};

/* STARTTLS and then nothing from the server: assumed at the end. */
static const struct step t_starttls_silent[] = {
	S(GREET),
	C("EHLO client.example.org\r\n"), S(EHLO_REPLY),
	C("STARTTLS\r\n"), C("\x16\x03\x01\x02\x00"),
	END
};

static const struct tcase cases[] = {
	{ "basic", NULL, t_basic,
	  "tx0 helo=client.example.org from=<alice@example.org> params='SIZE=120' rcpt=<bob@example.net>250+ codes=250/354/250 last=250'2.0.0 Ok: queued as 4Xk2Lq1x3Bz9' flags=complete,data,data_end,accepted size=80 data='From: Alice <alice@example.org>\\r\\nTo: bob@example.net\\r\\nSubject: hi\\r\\n\\r\\nHello Bob\\r\\n'\n"
	  "S tx=1 cmds=5 replies=7 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN quit bytes=187/330 lines=11/17\n" },
	{ "pipelining", NULL, t_pipelining,
	  "tx0 helo=client.example.org from=<alice@example.org> rcpt=<bob@example.net>250+ rcpt=<nobody@example.net>550-'5.1.1 <nobody@example.net>: Recipient address rejected: User unknown in local recipient table' rcpt=<carol@example.net>450-'4.2.0 <carol@example.net>: Recipient address rejected: Greylisted' codes=250/354/250 last=250'2.0.0 Ok: queued as 4Xk2Lq1x3Bz9' flags=complete,data,data_end,accepted size=80 data='From: Alice <alice@example.org>\\r\\nTo: bob@example.net\\r\\nSubject: hi\\r\\n\\r\\nHello Bob\\r\\n'\n"
	  "S tx=1 cmds=7 replies=9 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN quit bytes=237/500 lines=13/19\n" },
	{ "data_rejected", NULL, t_data_rejected,
	  "tx0 helo=client.example.org from=<spam@example.biz> rcpt=<nobody@example.net>550-'5.1.1 <nobody@example.net>: Recipient address rejected: User unknown' codes=250/554/0 last=554'5.5.1 Error: no valid recipients' flags=incomplete,data_rejected,rset\n"
	  "S tx=1 cmds=6 replies=7 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN quit bytes=103/367 lines=6/17\n" },
	{ "data_rejected_eager", NULL, t_data_rejected_eager,
	  "tx0 helo=bot from=<spam@example.biz> rcpt=<nobody@example.net>550-'5.1.1 <nobody@example.net>: Recipient address rejected: User unknown' codes=250/554/0 last=554'5.5.1 Error: no valid recipients' flags=incomplete,data_rejected,quit anom=unknown_command\n"
	  "S tx=1 cmds=8 replies=9 greet=220 quit anom=unknown_command bytes=101/319 lines=8/9\n" },
	{ "data_before_354", NULL, t_data_before_354,
	  "tx0 helo=client.example.org from=<alice@example.org> rcpt=<bob@example.net>250+ codes=250/354/250 last=250'2.0.0 Ok: queued as 4Xk2Lq1x3Bz9' flags=complete,data,data_end,accepted size=24 data='Subject: early\\r\\n\\r\\nbody\\r\\n'\n"
	  "S tx=1 cmds=5 replies=7 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN quit bytes=122/330 lines=9/17\n" },
	{ "dots", NULL, t_dots,
	  "tx0 helo=client.example.org from=<alice@example.org> rcpt=<bob@example.net>250+ codes=250/354/250 last=250'2.0.0 Ok: queued as 4Xk2Lq1x3Bz9' flags=complete,data,data_end,accepted size=46 data='Subject: dots\\r\\n\\r\\n.leading\\r\\n..\\r\\nx\\r\\nmid.dle\\r\\n.\\r\\n'\n"
	  "tx1 helo=client.example.org from=<alice@example.org> rcpt=<bob@example.net>250+ codes=250/354/250 last=250'2.0.0 Ok: queued as 4Xk2Lq1x3Bz9' flags=complete,data,data_end,accepted size=0 data=''\n"
	  "S tx=2 cmds=7 replies=10 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN bytes=209/418 lines=16/20\n" },
	{ "smuggling", NULL, t_smuggling,
	  "tx0 helo=client.example.org from=<alice@example.org> rcpt=<bob@example.net>250+ codes=250/354/250 last=250'2.0.0 Ok: queued as 4Xk2Lq1x3Bz9' flags=complete,data,data_end,accepted anom=bare_lf,data_end_ambiguous size=59 data='Subject: a\\r\\n\\r\\nx\\r\\n\\nMAIL FROM:<admin@example.net>\\r\\nbare\\n\\r\\ny\\r\\n'\n"
	  "S tx=1 cmds=4 replies=6 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN anom=bare_lf,data_end_ambiguous bytes=153/315 lines=13/16\n" },
	{ "bdat", NULL, t_bdat,
	  "tx0 helo=client.example.org from=<alice@example.org> params='BODY=BINARYMIME' rcpt=<bob@example.net>250+ codes=250/250/250 last=250'2.0.0 Ok: queued as 4Xk2Lq1x3Bz9' flags=complete,data,data_end,accepted,bdat size=20 data='Subject: b\\r\\n\\r\\n.\\r\\nabc'\n"
	  "tx1 helo=client.example.org from=<alice@example.org> rcpt=<bob@example.net>250+ codes=250/250/250 last=250'2.0.0 Ok: queued as 4Xk2Lq1x3Bz9' flags=complete,data,data_end,accepted,bdat size=12 data='123456789\\r\\n.'\n"
	  "S tx=2 cmds=9 replies=10 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN quit bytes=231/383 lines=9/20\n" },
	{ "bdat_odd", NULL, t_bdat_odd,
	  "tx0 helo=client.example.org from=<alice@example.org> rcpt=<bob@example.net>250+ codes=250/552/552 last=552'5.3.4 Message size exceeds fixed limit' flags=complete,data,data_end,data_rejected,bdat size=3 data='abc'\n"
	  "tx1 helo=client.example.org codes=0/501/0 last=501'5.5.4 Syntax: BDAT count [LAST]' flags=incomplete,data_rejected,rset anom=invalid_command,no_mail\n"
	  "S tx=2 cmds=8 replies=9 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN anom=invalid_command,no_mail bytes=162/409 lines=8/19\n" },
	{ "rset_ehlo", NULL, t_rset_ehlo,
	  "tx0 helo=client.example.org from=<alice@example.org> rcpt=<bob@example.net>250+ codes=250/0/0 last=250'2.1.5 Ok' flags=incomplete,rset\n"
	  "tx1 helo=client.example.org from=<alice@example.org> rcpt=<carol@example.net>250+ codes=250/0/0 last=250'2.1.5 Ok' flags=incomplete,helo_reset\n"
	  "tx2 helo=other.example.org from=<alice@example.org> codes=250/0/0 last=250'2.1.0 Ok' flags=incomplete anom=nested_mail\n"
	  "tx3 helo=other.example.org from=<mallory@example.org> codes=503/0/0 last=503'5.5.1 Error: nested MAIL command' flags=incomplete,mail_rejected,quit\n"
	  "S tx=4 cmds=10 replies=11 greet=220 caps=PIPELINING quit anom=nested_mail bytes=243/385 lines=10/22\n" },
	{ "starttls", NULL, t_starttls,
	  "tx0 helo=client.example.org last=220'2.0.0 Ready to start TLS' flags=incomplete,tls,session_end\n"
	  "S tx=1 cmds=2 replies=3 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN tls bytes=64/261 lines=2/13\n" },
	{ "starttls_injection", NULL, t_starttls_injection,
	  "tx0 helo=client.example.org last=220'2.0.0 Ready to start TLS' flags=incomplete,tls,session_end anom=starttls_injection\n"
	  "S tx=1 cmds=2 replies=3 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN tls anom=starttls_injection bytes=41/242 lines=2/13\n" },
	{ "starttls_refused", NULL, t_starttls_refused,
	  "tx0 helo=client.example.org from=<alice@example.org> rcpt=<bob@example.net>250+ codes=250/0/0 last=250'2.1.5 Ok' flags=incomplete,session_end\n"
	  "S tx=1 cmds=4 replies=5 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN bytes=93/290 lines=4/15\n" },
	{ "auth_plain", NULL, t_auth_plain,
	  "tx0 helo=laptop from=<joe@example.com> rcpt=<bob@example.net>250+ auth=PLAIN/joe@example.com/235 codes=250/0/0 last=250'2.1.5 Ok' flags=incomplete,quit\n"
	  "S tx=1 cmds=5 replies=6 greet=220 caps=AUTH,8BITMIME quit bytes=120/166 lines=5/8\n" },
	{ "auth_login", NULL, t_auth_login,
	  "tx0 helo=laptop from=<joe@example.com> auth=LOGIN/joe/235 codes=250/0/0 last=250'2.1.0 Ok' flags=incomplete,rset\n"
	  "tx1 helo=laptop from=<eve@example.com> auth=PLAIN/eve/535 codes=250/0/0 last=250'2.1.0 Ok' flags=incomplete,session_end\n"
	  "S tx=2 cmds=6 replies=10 greet=220 caps=AUTH bytes=135/251 lines=9/11\n" },
	{ "null_sender", NULL, t_null_sender,
	  "tx0 helo=bounce.example.org from=<> params='SIZE=2048 BODY=8BITMIME SMTPUTF8' rcpt=<bob@example.net>250+ rcpt=<\"john doe\"@example.net>250+ rcpt=<carol@example.net>250+ codes=250/354/250 last=250'2.0.0 Ok: queued as 4Xk2Lq1x3Bz9' flags=complete,data,data_end,accepted size=2 data='\\r\\n'\n"
	  "S tx=1 cmds=6 replies=8 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN bytes=219/343 lines=8/18\n" },
	{ "limits", &lim_small, t_limits,
	  "tx0 helo=client.example.org from=<aaaaaaaaaaaaaaaaaaaaaaaa> rcpt=<a@example.net>250+ rcpt=<b@example.net>550-'5.1.1 <b@example.net>: R' dropped=1 codes=250/0/0 last=452'4.5.3 Error: too many re' flags=incomplete,rset anom=line_too_long,too_many_rcpts,invalid_command,addr_too_long\n"
	  "tx1 helo=client.example.org from=<b@example.org> codes=250/0/0 last=250'2.1.0 Ok' flags=incomplete,rset\n"
	  "S tx=2 cmds=11 replies=12 greet=220 caps=PIPELINING anom=line_too_long,too_many_rcpts,too_many_tx,invalid_command,addr_too_long bytes=505/302 lines=11/13\n" },
	{ "pipeline_overflow", &lim_small, t_pipeline_overflow,
	  "tx0 helo=client.example.org from=<a@example.org> rcpt=<b@example.net>550-'5.1.1 <b@example.net>: R' rcpt=<c@example.net>250+ codes=250/0/0 last=250'2.1.5 Ok' flags=incomplete,session_end anom=line_too_long,pipelining_overflow\n"
	  "S tx=1 cmds=7 replies=8 greet=220 caps=PIPELINING anom=line_too_long,pipelining_overflow bytes=120/208 lines=7/9\n" },
	{ "stall_overflow", &lim_small, t_stall_overflow,
	  "tx0 helo=client.example.org from=<a@example.org> rcpt=<b@example.net>250+ codes=250/354/250 last=250'2.0.0 Ok: queued as 4Xk2' flags=complete,data,data_end,accepted anom=data_before_354,stall_overflow size=1275 data='0123456789012345678901234567890123456789012345678\\r\\n0123456789012345678901234567890123456789012345678\\r\\n0123456789012345678901234567890123456789012345678\\r\\n01234567890123456789012345678901234567890123456'\n"
	  "S tx=1 cmds=4 replies=6 greet=220 anom=data_before_354,stall_overflow bytes=1361/170 lines=30/6\n" },
	{ "gaps", NULL, t_gaps,
	  "tx0 helo=client.example.org rcpt=<bob@example.net>250+ codes=0/354/250 last=250'2.0.0 Ok: que' flags=complete,data,data_end,accepted anom=gap,no_mail size=27 gap=100 data='Subject: g\\r\\n\\r\\nbeforeafter\\r\\n'\n"
	  "S tx=1 cmds=5 replies=7 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN quit anom=gap,no_mail bytes=124/340 lines=9/17 gaps=110/20\n" },
	{ "gap_line_start", NULL, t_gap_line_start,
	  "tx0 helo=client.example.org from=<alice@example.org> rcpt=<bob@example.net>250+ codes=250/354/250 last=250'2.0.0 Ok: queued as 4Xk2Lq1x3Bz9' flags=complete,data,data_end,accepted anom=gap size=80 data='" MSG_ESC "'\n"
	  "S tx=1 cmds=4 replies=6 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN anom=gap bytes=172/315 lines=10/16 gaps=6/0\n" },
	/* the MAIL's 250 went to the EHLO; at the 354 the MAIL and RCPT are
	 * given up as unanswered: the transaction still ends right */
	{ "lost_reply", NULL, t_lost_reply,
	  "tx0 helo=client.example.org from=<alice@example.org> rcpt=<bob@example.net>0? codes=0/354/250 last=250'2.0.0 Ok: queued as 4Xk2Lq1x3Bz9' flags=complete,data,data_end,accepted anom=no_reply size=80 data='" MSG_ESC "'\n"
	  "S tx=1 cmds=4 replies=4 greet=220 anom=gap,no_reply bytes=172/136 lines=10/4 gaps=0/165\n" },
	{ "gap_bdat", NULL, t_gap_bdat,
	  "tx0 helo=client.example.org from=<a@example.org> rcpt=<b@example.net>250+ codes=250/250/250 last=250'2.0.0 Ok: queued as 4Xk2Lq1x3Bz9' flags=complete,data,data_end,accepted,bdat anom=gap size=8 gap=7 data='abcdefxy'\n"
	  "S tx=1 cmds=6 replies=7 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN quit anom=gap bytes=135/317 lines=7/17 gaps=13/0\n" },
	{ "one_sided", NULL, t_one_sided,
	  "tx0 helo=client.example.org from=<joe@example.com> rcpt=<bob@example.net>0? auth=LOGIN/joe/0 flags=complete,data,data_end anom=no_server size=22 data='Subject: one\\r\\n\\r\\nside\\r\\n'\n"
	  "tx1 helo=client.example.org from=<joe@example.com> rcpt=<bob@example.net>0? auth=LOGIN/joe/0 flags=complete,data,data_end,bdat anom=no_server size=4 data='abcd'\n"
	  "tx2 helo=client.example.org from=<joe@example.com> rcpt=<bob@example.net>0? auth=LOGIN/joe/0 flags=incomplete,data,session_end anom=no_server size=7 data='cut off'\n"
	  "S tx=3 cmds=11 replies=0 greet=0 anom=no_server bytes=282/0 lines=17/0\n" },
	{ "one_sided_tls", NULL, t_one_sided_tls,
	  "tx0 helo=client.example.org flags=incomplete,tls,session_end anom=no_server\n"
	  "S tx=1 cmds=2 replies=0 greet=0 tls anom=no_server bytes=38/0 lines=2/0\n" },
	{ "misc", NULL, t_misc,
	  "tx0 helo=spike.porcupine.org from=<a@example.org> rcpt=<b@example.net>250+ rcpt=<c@example.net>501-'5.5.4 Syntax: RCPT TO:<address>' xclient='NAME=spike.porcupine.org ADDR=168.100.189.2' xforward='NAME=a.example ADDR=192.0.2.1 PROTO=ESMTP HELO=a.example' codes=250/0/0 last=501'5.5.4 Syntax: RCPT TO:<address>' flags=incomplete,quit anom=invalid_command,bare_lf\n"
	  "S tx=1 cmds=16 replies=18 greet=220 caps=PIPELINING quit anom=reply_without_command,unknown_command,invalid_command,bare_lf,invalid_reply,no_reply,after_quit bytes=311/602 lines=16/32\n" },
	{ "cut_in_data", NULL, t_cut_in_data,
	  "tx0 helo=client.example.org from=<a@example.org> rcpt=<b@example.net>250+ codes=250/354/0 last=354'End data with <CR><LF>.<CR><LF>' flags=incomplete,data,session_end size=20 data='Subject: cut\\r\\n\\r\\npart'\n"
	  "S tx=1 cmds=4 replies=5 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN bytes=103/277 lines=6/15\n" },
	{ "bdat_pipelined", NULL, t_bdat_pipelined,
	  "tx0 helo=client.example.org from=<a@example.org> rcpt=<b@example.net>250+ codes=250/250/250 last=250'2.0.0 Ok: queued as 4Xk2Lq1x3Bz9' flags=complete,data,data_end,accepted,bdat size=3 data='abc'\n"
	  "tx1 helo=client.example.org from=<c@example.org> rcpt=<d@example.net>550-'5.1.1 <d@example.net>: Recipient address rejected: User unknown' codes=250/554/554 last=554'5.5.1 Error: no valid recipients' flags=complete,data,data_end,data_rejected,bdat size=3 data='def'\n"
	  "S tx=2 cmds=7 replies=8 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN bytes=161/399 lines=7/18\n" },
	{ "starttls_silent", NULL, t_starttls_silent,
	  "tx0 helo=client.example.org flags=incomplete,tls,session_end\n"
	  "S tx=1 cmds=2 replies=2 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN tls anom=no_reply bytes=40/212 lines=2/12\n" },
	{ "no_reply", NULL, t_no_reply,
	  "tx0 helo=client.example.org from=<a@example.org> rcpt=<b@example.net>250+ codes=250/0/0 last=250'2.1.5 Ok' flags=complete,data,data_end anom=data_before_354,no_reply size=17 data='Subject: s\\r\\n\\r\\nt\\r\\n'\n"
	  "S tx=1 cmds=4 replies=4 greet=220 caps=PIPELINING,CHUNKING,STARTTLS,SIZE,8BITMIME,SMTPUTF8,DSN,ENHANCEDSTATUSCODES,VRFY,ETRN anom=data_before_354,no_reply bytes=103/240 lines=8/14\n" },
};

/* ---- running ----------------------------------------------------------- */

enum feed_mode {
	FEED_WHOLE = 0,
	FEED_BYTES,
	FEED_7,
	FEED_3,
	FEED_RANDOM,     /* pieces of 1..17 bytes, a fixed pseudo-random sequence */
	FEED_MODES
};

static const char *const mode_names[FEED_MODES] = { "whole", "bytes", "7", "3", "random" };

/* Runs one transcript in one mode into r. Returns validate failures. */
static unsigned run_case(const struct tcase *tc, enum feed_mode mode, struct rec *r)
{
	struct smtp_session *s;
	unsigned bad = 0;
	uint64_t ts = 1000;
	const char *why = NULL;
	size_t piece = mode == FEED_BYTES ? 1 : mode == FEED_7 ? 7 : mode == FEED_3 ? 3 : SIZE_MAX;
	uint32_t rnd = 12345;

	memset(r, 0, sizeof(*r));
	s = smtp_session_new(tc->lim, &rec_ops, r);
	if (!s)
		return 1;
	for (const struct step *st = tc->steps; st->dir >= 0; st++) {
		if (!st->p) {
			smtp_gap(s, st->dir, st->gap);
			bad += smtp_session_validate(s, &why) != 0;
			continue;
		}
		for (unsigned rep = 0; rep < (st->rep ? st->rep : 1); rep++)
			for (size_t off = 0; off < st->n; ) {
				size_t k;

				if (mode == FEED_RANDOM) {
					rnd = rnd * 1103515245u + 12345u;
					piece = 1 + (rnd >> 16) % 17;
				}
				k = st->n - off < piece ? st->n - off : piece;

				smtp_feed(s, st->dir, (const uint8_t *)st->p + off, k, ts++);
				off += k;
				if (smtp_session_validate(s, &why) != 0) {
					if (!bad)
						fprintf(stderr, "%s/%s: validate: %s\n", tc->name,
							mode_names[mode], why);
					bad++;
				}
			}
	}
	smtp_end(s, ts);
	bad += smtp_session_validate(s, &why) != 0;
	rec_session(r, s);
	smtp_session_free(s);
	return bad + r->errors;
}

static void test_transcripts(int print)
{
	static struct rec r;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tcase *tc = &cases[i];

		for (int m = 0; m < FEED_MODES; m++) {
			unsigned bad = run_case(tc, (enum feed_mode)m, &r);

			CHECK_EQ_U64(bad, 0);
			if (print && m == 0)
				printf("== %s\n%s", tc->name, r.out);
			if (strcmp(r.out, tc->expect) != 0) {
				fprintf(stderr, "case %s, %s feed:\n-- expected\n%s-- got\n%s",
					tc->name, mode_names[m], tc->expect, r.out);
				CHECK(0);
			} else {
				CHECK(1);
			}
		}
	}
}

/* ---- single transactions: the first tx of a session, captured -------- */

struct cap {
	unsigned ntx;
	char from[128], params[128], rcpt[128], text[128];
	int has_from;
	unsigned code, nrcpt, flags;
	uint64_t anom, size;
};

static void cap_end(void *user, const struct smtp_session *s, const struct smtp_tx *tx)
{
	struct cap *c = user;

	(void)s;
	if (c->ntx++)
		return;
	c->has_from = tx->mail_from != NULL;
	snprintf(c->from, sizeof(c->from), "%s", tx->mail_from ? tx->mail_from : "");
	snprintf(c->params, sizeof(c->params), "%s", tx->mail_params);
	snprintf(c->rcpt, sizeof(c->rcpt), "%s", tx->nrcpt ? tx->rcpts[0].addr : "");
	snprintf(c->text, sizeof(c->text), "%s", tx->last_reply.text);
	c->code = tx->last_reply.code;
	c->nrcpt = tx->nrcpt;
	c->flags = tx->flags;
	c->anom = tx->anomalies;
	c->size = tx->size;
}

static const struct smtp_ops cap_ops = { .tx_end = cap_end };

/* Runs NUL-terminated pieces, alternating server/client starting with the
 * server (NULL ends), whole and byte by byte; both runs must agree. */
static void cap_run(struct cap *c, const struct smtp_limits *lim, const char *const *pieces)
{
	struct cap twin;

	for (int bytewise = 0; bytewise < 2; bytewise++) {
		struct cap *o = bytewise ? &twin : c;
		struct smtp_session *s;

		memset(o, 0, sizeof(*o));
		s = smtp_session_new(lim, &cap_ops, o);
		for (int i = 0; pieces[i]; i++) {
			int dir = i % 2 ? SMTP_TOSERVER : SMTP_TOCLIENT;
			size_t n = strlen(pieces[i]);

			if (!bytewise) {
				smtp_feed(s, dir, (const uint8_t *)pieces[i], n, 1);
			} else {
				for (size_t k = 0; k < n; k++)
					smtp_feed(s, dir, (const uint8_t *)pieces[i] + k, 1, 1);
			}
			CHECK(smtp_session_validate(s, NULL) == 0);
		}
		smtp_end(s, 2);
		smtp_session_free(s);
	}
	CHECK(memcmp(c, &twin, sizeof(twin)) == 0);
}

#define AN(a) (1ull << SMTP_ANOM_##a)

static void test_mail_rcpt_table(void)
{
	static const struct {
		const char *line;
		const char *from, *params, *rcpt;
		uint64_t anom;
	} rows[] = {
		{ "MAIL FROM:<alice@example.org>\r\n", "alice@example.org", "", "", 0 },
		{ "MAIL FROM:<alice@example.org> SIZE=1000 BODY=8BITMIME\r\n", "alice@example.org",
		  "SIZE=1000 BODY=8BITMIME", "", 0 },
		{ "mail from:<Alice@Example.ORG>\r\n", "Alice@Example.ORG", "", "", 0 },
		{ "MAIL FROM: <a@b.example>\r\n", "a@b.example", "", "", 0 },
		{ "MAIL FROM:<>\r\n", "", "", "", 0 },
		{ "MAIL FROM:<> BODY=8BITMIME\r\n", "", "BODY=8BITMIME", "", 0 },
		{ "MAIL FROM:a@b.example\r\n", "a@b.example", "", "", 0 },
		{ "MAIL FROM:<a@b.example\r\n", "a@b.example", "", "", AN(INVALID_COMMAND) },
		{ "MAIL FROM:<@r1.example,@r2.example:a@b.example>\r\n", "a@b.example", "", "", 0 },
		{ "MAIL FROM:<\"a> b\"@c.example> SIZE=5\r\n", "\"a> b\"@c.example", "SIZE=5", "", 0 },
		{ "MAIL <a@b.example>\r\n", "a@b.example", "", "", AN(INVALID_COMMAND) },
		{ "MAIL FROM:<a@b.example>   \r\n", "a@b.example", "", "", 0 },
		{ "MAIL FROM:<\xce\xb4@\xe4\xbe\x8b.jp> SMTPUTF8\r\n", "\xce\xb4@\xe4\xbe\x8b.jp",
		  "SMTPUTF8", "", 0 },
		{ "MAIL FROM:<a@b.example>\n", "a@b.example", "", "", AN(BARE_LF) },
		{ "RCPT TO:<bob@example.net>\r\n", NULL, "", "bob@example.net", AN(NO_MAIL) },
		{ "RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.net\r\n",
		  NULL, "", "bob@example.net", AN(NO_MAIL) },
		{ "rcpt to:<postmaster>\r\n", NULL, "", "postmaster", AN(NO_MAIL) },
		{ "RCPT FROM:<bob@example.net>\r\n", NULL, "", "FROM:<bob@example.net>",
		  AN(NO_MAIL) | AN(INVALID_COMMAND) },
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const char *const pieces[] = { "220 mx.example.net ESMTP\r\n", rows[i].line,
			"250 2.1.0 Ok\r\n", NULL };
		struct cap c;

		cap_run(&c, NULL, pieces);
		CHECK_EQ_U64(c.ntx, 1);
		CHECK_EQ_U64(c.has_from, rows[i].from != NULL);
		CHECK_STR(c.from, rows[i].from ? rows[i].from : "");
		CHECK_STR(c.params, rows[i].params);
		CHECK_STR(c.rcpt, rows[i].rcpt);
		CHECK_EQ_U64(c.anom, rows[i].anom);
		if (c.anom != rows[i].anom)
			fprintf(stderr, "  row %zu: %s", i, rows[i].line);
	}
}

static void test_reply_table(void)
{
	static const struct {
		const char *replies;
		unsigned code;
		const char *text;
		uint64_t anom;
		unsigned flags;     /* expected among tx flags */
	} rows[] = {
		{ "250 2.1.0 Ok\r\n", 250, "2.1.0 Ok", 0, 0 },
		{ "250-first\r\n250-second\r\n250 third\r\n", 250, "first second third", 0, 0 },
		{ "250\r\n", 250, "", 0, 0 },
		{ "250 \r\n", 250, "", 0, 0 },
		{ "553 5.7.1 <a@b.example>: Sender address rejected: not owned by user\r\n", 553,
		  "5.7.1 <a@b.example>: Sender address rejected: not owned by user", 0,
		  SMTP_TX_MAIL_REJECTED },
		{ "451 4.3.0 Temporary lookup failure\r\n", 451, "4.3.0 Temporary lookup failure", 0,
		  SMTP_TX_MAIL_REJECTED },
		{ "250-a\r\n251 b\r\n", 250, "a b", AN(INVALID_REPLY), 0 },
		{ "2500 x\r\n", 250, " x", AN(INVALID_REPLY), 0 },
		{ "xyz\r\n250 ok\r\n", 250, "ok", AN(INVALID_REPLY), 0 },
		{ "250 ok\n", 250, "ok", AN(BARE_LF), 0 },
		{ "250 ok\r\n250 extra\r\n", 250, "ok", AN(REPLY_WITHOUT_COMMAND), 0 },
		/* with lim_small: 48-byte lines, 24 bytes of text */
		{ "250-" A50 A50 A50 A50 "\r\n250 end\r\n", 250,
		  "aaaaaaaaaaaaaaaaaaaaaaaa", AN(LINE_TOO_LONG), 0 },
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const char *const pieces[] = { "220 mx.example.net ESMTP\r\n",
			"MAIL FROM:<a@b.example>\r\n", rows[i].replies, NULL };
		struct cap c;

		cap_run(&c, i == sizeof(rows) / sizeof(rows[0]) - 1 ? &lim_small : NULL, pieces);
		CHECK_EQ_U64(c.ntx, 1);
		CHECK_EQ_U64(c.code, rows[i].code);
		CHECK_STR(c.text, rows[i].text);
		CHECK_EQ_U64(c.anom, rows[i].anom);
		CHECK_EQ_U64(c.flags & rows[i].flags, rows[i].flags);
		if (c.anom != rows[i].anom)
			fprintf(stderr, "  row %zu: %s", i, rows[i].replies);
	}
}

/* The summary counters: by verb, by reply class, limits. */
static void test_counters(void)
{
	static struct rec r;

	memset(&smtp_stats, 0, sizeof(smtp_stats));
	CHECK_EQ_U64(run_case(&cases[0], FEED_WHOLE, &r), 0);
	CHECK_EQ_U64(smtp_stats.sessions, 1);
	CHECK_EQ_U64(smtp_stats.transactions, 1);
	CHECK_EQ_U64(smtp_stats.tx_complete, 1);
	CHECK_EQ_U64(smtp_stats.tx_accepted, 1);
	CHECK_EQ_U64(smtp_stats.commands[SMTP_VERB_EHLO], 1);
	CHECK_EQ_U64(smtp_stats.commands[SMTP_VERB_MAIL], 1);
	CHECK_EQ_U64(smtp_stats.commands[SMTP_VERB_RCPT], 1);
	CHECK_EQ_U64(smtp_stats.commands[SMTP_VERB_DATA], 1);
	CHECK_EQ_U64(smtp_stats.commands[SMTP_VERB_QUIT], 1);
	CHECK_EQ_U64(smtp_stats.commands[SMTP_VERB_UNKNOWN], 0);
	CHECK_EQ_U64(smtp_stats.replies[2], 6);
	CHECK_EQ_U64(smtp_stats.replies[3], 1);
	CHECK_EQ_U64(smtp_stats.message_bytes, 80);
	CHECK_EQ_U64(smtp_stats.bytes[SMTP_TOSERVER], 187);
	for (int a = 0; a < SMTP_ANOM_MAX; a++)
		CHECK_EQ_U64(smtp_stats.anomalies[a], 0);

	memset(&smtp_stats, 0, sizeof(smtp_stats));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (strcmp(cases[i].name, "limits") == 0)
			CHECK_EQ_U64(run_case(&cases[i], FEED_WHOLE, &r), 0);
	CHECK_EQ_U64(smtp_stats.limit_hits[SMTP_LIMIT_RCPTS], 1);
	CHECK_EQ_U64(smtp_stats.limit_hits[SMTP_LIMIT_TX], 1);
	CHECK_EQ_U64(smtp_stats.limit_hits[SMTP_LIMIT_LINE], 3);   /* 2 commands, 1 reply */
	CHECK(smtp_stats.limit_hits[SMTP_LIMIT_REPLY_TEXT] >= 2);
	CHECK_EQ_U64(smtp_stats.limit_hits[SMTP_LIMIT_ADDR], 1);
	CHECK_EQ_U64(smtp_stats.anomalies[SMTP_ANOM_TOO_MANY_TX], 1);
	CHECK_EQ_U64(smtp_stats.commands[SMTP_VERB_NOOP], 2);
	CHECK_EQ_U64(smtp_stats.commands[SMTP_VERB_RCPT], 3);
	CHECK_EQ_U64(smtp_stats.alloc_fail, 0);

	/* every name table is complete */
	for (int v = 0; v < SMTP_VERB_MAX; v++)
		CHECK(strcmp(smtp_verb_name((enum smtp_verb)v), "?") != 0);
	for (int a = 0; a < SMTP_ANOM_MAX; a++)
		CHECK(smtp_anomaly_name((enum smtp_anomaly)a) != NULL &&
		      strcmp(smtp_anomaly_name((enum smtp_anomaly)a), "?") != 0);
	for (int l = 0; l < SMTP_LIMIT_MAX; l++)
		CHECK(strcmp(smtp_limit_name((enum smtp_limit)l), "?") != 0);
	for (unsigned b = 0; b < SMTP_TX_FLAG_COUNT; b++)
		CHECK(strcmp(smtp_tx_flag_name(b), "?") != 0);
	CHECK_STR(smtp_anomaly_name(SMTP_ANOM_MAX), "?");
}

static uint64_t smtp_mem(void)
{
	return mem_in_use(MEM_SMTP);
}

static void feed_str(struct smtp_session *s, int dir, const char *p)
{
	smtp_feed(s, dir, (const uint8_t *)p, strlen(p), 1);
}

/* What a session costs, and that hostile input cannot make it grow past
 * its limits. */
static void test_memory(int print)
{
	static uint8_t big[64 * 1024];
	uint64_t base = smtp_mem(), fresh, used;
	struct smtp_limits lim;
	struct smtp_session *s;
	struct cap c;

	smtp_limits_default(&lim);
	s = smtp_session_new(NULL, NULL, NULL);
	CHECK(s != NULL);
	fresh = smtp_mem() - base;
	if (print)
		printf("sizeof(struct smtp_session) = %zu, fresh session allocation = %llu\n",
		       smtp_session_sizeof(), (unsigned long long)fresh);
	CHECK(smtp_session_sizeof() <= 512);
	CHECK(fresh < 1024);
	/* after a whole transaction, idle between commands */
	feed_str(s, 1, GREET);
	feed_str(s, 0, "EHLO client.example.org\r\n");
	feed_str(s, 1, EHLO_REPLY);
	feed_str(s, 0, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
	feed_str(s, 1, OK_MAIL OK_RCPT GO_DATA);
	feed_str(s, 0, MSG ".\r\n");
	feed_str(s, 1, QUEUED);
	used = smtp_mem() - base;
	if (print)
		printf("idle session after a transaction = %llu\n", (unsigned long long)used);
	CHECK(used < 4096);
	CHECK(smtp_session_validate(s, NULL) == 0);
	smtp_end(s, 1);
	smtp_session_free(s);
	CHECK_EQ_U64(smtp_mem(), base);

	/* a 4 MiB line: at most max_line + 1 bytes kept */
	memset(big, 'a', sizeof(big));
	s = smtp_session_new(NULL, &cap_ops, &c);
	memset(&c, 0, sizeof(c));
	feed_str(s, 1, GREET);
	feed_str(s, 0, "MAIL FROM:<");
	for (int i = 0; i < 64; i++)
		smtp_feed(s, 0, big, sizeof(big), 1);
	/* allocator rounding (jemalloc size classes) allowed for */
	CHECK(smtp_mem() - base < 1024 + 2 * (lim.max_line + 1));
	feed_str(s, 0, ">\r\n");
	feed_str(s, 1, OK_MAIL);
	CHECK(smtp_session_validate(s, NULL) == 0);
	smtp_end(s, 1);
	CHECK_EQ_U64(c.ntx, 1);
	CHECK_EQ_U64(strlen(c.from) + 1, sizeof(c.from));    /* cut (to max_addr, then by cap) */
	CHECK(c.anom & AN(LINE_TOO_LONG));
	CHECK(c.anom & AN(ADDR_TOO_LONG));
	smtp_session_free(s);
	CHECK_EQ_U64(smtp_mem(), base);

	/* a BDAT size from the wire is only counted down */
	s = smtp_session_new(NULL, &cap_ops, &c);
	memset(&c, 0, sizeof(c));
	feed_str(s, 1, GREET);
	feed_str(s, 0, "MAIL FROM:<a@example.org>\r\nBDAT 18446744073709551615 LAST\r\n");
	for (int i = 0; i < 16; i++)
		smtp_feed(s, 0, big, sizeof(big), 1);
	CHECK(smtp_mem() - base < 4096);
	feed_str(s, 0, "BDAT 1\r\n");     /* still chunk bytes */
	smtp_end(s, 1);
	CHECK_EQ_U64(c.size, 16 * sizeof(big) + 8);
	CHECK(c.flags & SMTP_TX_INCOMPLETE);
	smtp_session_free(s);

	/* a silent server: the queue stays bounded, the replies still match */
	s = smtp_session_new(NULL, &cap_ops, &c);
	memset(&c, 0, sizeof(c));
	feed_str(s, 1, GREET);
	feed_str(s, 0, "MAIL FROM:<a@example.org>\r\n");
	for (int i = 0; i < 10000; i++)
		feed_str(s, 0, "NOOP\r\n");
	CHECK(smtp_mem() - base < 8192);
	feed_str(s, 1, OK_MAIL);
	for (int i = 0; i < 10000; i++)
		feed_str(s, 1, "250 2.0.0 Ok\r\n");
	feed_str(s, 0, "RCPT TO:<b@example.net>\r\n");
	feed_str(s, 1, "550 5.1.1 no\r\n");
	CHECK(smtp_session_validate(s, NULL) == 0);
	smtp_end(s, 1);
	CHECK_EQ_U64(c.code, 550);
	CHECK(c.anom & AN(PIPELINING_OVERFLOW));
	smtp_session_free(s);

	/* DATA, then a silent server and a megabyte: stall capped, then read */
	s = smtp_session_new(NULL, &cap_ops, &c);
	memset(&c, 0, sizeof(c));
	feed_str(s, 1, GREET);
	feed_str(s, 0, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
	for (int i = 0; i < 16; i++) {
		smtp_feed(s, 0, big, sizeof(big), 1);
		CHECK(smtp_mem() - base < lim.max_stall + 4096);
	}
	feed_str(s, 0, "\r\n.\r\n");
	smtp_end(s, 1);
	CHECK_EQ_U64(c.size, 16 * sizeof(big) + 2);
	CHECK(c.anom & AN(STALL_OVERFLOW));
	CHECK(c.flags & SMTP_TX_COMPLETE);
	smtp_session_free(s);

	/* strings per tx are capped by max_tx_mem */
	lim.max_tx_mem = 1024;
	s = smtp_session_new(&lim, &cap_ops, &c);
	memset(&c, 0, sizeof(c));
	feed_str(s, 0, "MAIL FROM:<a@example.org>\r\n");
	for (int i = 0; i < 40; i++)
		feed_str(s, 0, "RCPT TO:<abcdefghijabcdefghij@example.net>\r\n");
	smtp_end(s, 1);
	CHECK_EQ_U64(c.nrcpt, 40);
	CHECK(c.anom & AN(TX_MEM));
	smtp_session_free(s);
	CHECK_EQ_U64(smtp_mem(), base);
}

int main(int argc, char **argv)
{
	int print = argc > 1 && strcmp(argv[1], "-v") == 0;

	test_transcripts(print);
	test_mail_rcpt_table();
	test_reply_table();
	test_counters();
	test_memory(print);
	return check_done();
}
