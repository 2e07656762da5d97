/* session_mem: what an SMTP session and a message cost in memory, as mem.c
 * accounts it (jemalloc's real usable sizes, size-class rounding included).
 *
 * Issue 3's targets: "an idle session costs at most 4 KB" and "a message's
 * memory is bounded by its limits, not by its size".
 *
 * 1. Sessions: N sessions (default 100,000) through smtp_session_new() with
 *    the default limits, held at once; each is fed a Postfix-like greeting,
 *    EHLO and the multiline EHLO reply, then one whole pipelined transaction
 *    (MAIL, RCPT, DATA, 354, a short message, ".", 250 queued). MEM_SMTP in
 *    use divided by N after each step: fresh, idle after EHLO, idle after a
 *    transaction. The sessions are then ended and freed; what stays in use
 *    is reported as leak (should be 0). Not included: the pipeline's small
 *    per-flow glue (struct flow_app, MEM_FLOW) and the flow itself
 *    (bench/flow_mem).
 *
 * 2. Messages: one session carries a message of M bytes (default 5 MiB and
 *    50 MiB): multipart/mixed with a text/plain part (a share of lines start
 *    with '.', so they are dot-stuffed on the wire), a text/html part with
 *    links, and a base64 attachment, about a third each. The wire bytes go
 *    through smtp_feed() in 1448-byte pieces; the session's tx_data callback
 *    feeds a message parser made with the default limits (as the pipeline
 *    does). Reported: message_memory() when the parser is new, after the
 *    headers, at the end; the MEM_MESSAGE high-water mark over the message
 *    (mem_stats.peak, reset before it) and MEM_SMTP's; the parser's
 *    allocation count; the seconds the feed took (information only).
 *
 * Output, one key=value line per measurement on stdout (bench/run.sh):
 *   session_mem sessions=N sizeof_session=B fresh=B idle_ehlo=B idle_tx=B leak=B
 *   message_mem bytes=B wire=B before=B headers=B after=B peak=B smtp_peak=B
 *               allocations=N parts=N seconds=S
 * and a readable summary on stderr.
 *
 * Usage: session_mem [N [MESSAGE_MB...]]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mem.h"
#include "message.h"
#include "smtp.h"

static const char GREET[] = "220 mx1.example.net ESMTP Postfix\r\n";
static const char EHLO[] = "EHLO host1.client.example.com\r\n";
static const char EHLO_REPLY[] =
	"250-mx1.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n"
	"250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n"
	"250-SMTPUTF8\r\n250 CHUNKING\r\n";
static const char TX_CMDS[] =
	"MAIL FROM:<alice@example.org> SIZE=300\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n";
static const char TX_REPLIES[] =
	"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n";
static const char TX_MSG[] =
	"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n"
	"Subject: lunch\r\nMessage-ID: <1@example.org>\r\n\r\nAt noon?\r\n.\r\n";
static const char QUEUED[] = "250 2.0.0 Ok: queued as 4C1A22E0F3\r\n";

static void feed(struct smtp_session *s, int dir, const char *p, size_t n)
{
	smtp_feed(s, dir, (const uint8_t *)p, n, 1);
}
#define FEED(s, dir, lit) feed((s), (dir), (lit), sizeof(lit) - 1)

static uint64_t smtp_in_use(void)
{
	return mem_in_use(MEM_SMTP);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int sessions(uint32_t n)
{
	struct smtp_session **ss = calloc(n, sizeof(*ss));
	uint64_t base = smtp_in_use(), fresh, idle_ehlo, idle_tx, leak;

	if (!ss) {
		fprintf(stderr, "session_mem: out of memory\n");
		return 1;
	}
	for (uint32_t i = 0; i < n; i++) {
		ss[i] = smtp_session_new(NULL, NULL, NULL);
		if (!ss[i]) {
			fprintf(stderr, "session_mem: smtp_session_new failed at %" PRIu32 "\n", i);
			return 1;
		}
	}
	fresh = smtp_in_use() - base;
	for (uint32_t i = 0; i < n; i++) {
		FEED(ss[i], SMTP_TOCLIENT, GREET);
		FEED(ss[i], SMTP_TOSERVER, EHLO);
		FEED(ss[i], SMTP_TOCLIENT, EHLO_REPLY);
	}
	idle_ehlo = smtp_in_use() - base;
	for (uint32_t i = 0; i < n; i++) {
		FEED(ss[i], SMTP_TOSERVER, TX_CMDS);
		FEED(ss[i], SMTP_TOCLIENT, TX_REPLIES);
		FEED(ss[i], SMTP_TOSERVER, TX_MSG);
		FEED(ss[i], SMTP_TOCLIENT, QUEUED);
	}
	idle_tx = smtp_in_use() - base;
	for (uint32_t i = 0; i < n; i++) {
		const char *why = NULL;

		if (smtp_session_validate(ss[i], &why) < 0) {
			fprintf(stderr, "session_mem: session %" PRIu32 " invalid: %s\n", i,
				why ? why : "?");
			return 1;
		}
		smtp_end(ss[i], 2);
		smtp_session_free(ss[i]);
	}
	leak = smtp_in_use() - base;
	free(ss);
	fprintf(stderr,
		"session_mem: %" PRIu32 " SMTP sessions, sizeof(struct smtp_session) %zu B; "
		"per session as allocated (%s): new %.1f B, idle after greeting+EHLO %.1f B, "
		"idle after one transaction %.1f B (target <= 4096); %" PRIu64
		" B left after freeing all\n",
		n, smtp_session_sizeof(), mem_allocator_name(), (double)fresh / n,
		(double)idle_ehlo / n, (double)idle_tx / n, leak);
	printf("session_mem sessions=%" PRIu32 " sizeof_session=%zu fresh=%.1f idle_ehlo=%.1f "
	       "idle_tx=%.1f leak=%" PRIu64 "\n", n, smtp_session_sizeof(),
	       (double)fresh / n, (double)idle_ehlo / n, (double)idle_tx / n, leak);
	return 0;
}

/* --- one big message ---------------------------------------------------------- */

struct buf {
	char *p;
	size_t n, cap;
};

static void put(struct buf *b, const char *s, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2;
		b->p = realloc(b->p, b->cap);
		if (!b->p) {
			fprintf(stderr, "session_mem: out of memory\n");
			exit(1);
		}
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
}
#define PUTS(b, s) put((b), (s), strlen(s))

/* A multipart message of about size bytes, CRLF line ends (not stuffed). */
static void make_message(struct buf *b, size_t size)
{
	static const char *words[] = { "offer", "invoice", "meeting", "report", "free",
		"click", "account", "update", "security", "quarter", "budget", "review" };
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char line[256];
	uint32_t x = 12345;
	size_t third = size / 3, start;

	PUTS(b, "Received: from host1.client.example.com (host1.client.example.com "
		"[198.18.1.1])\r\n\tby mx1.example.net (Postfix) with ESMTP id 4C1A22E0F3\r\n"
		"\tfor <bob@example.net>; Tue, 14 Nov 2023 22:13:20 +0000 (UTC)\r\n"
		"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n"
		"Subject: =?UTF-8?Q?quarterly_r=C3=A9port?=\r\n"
		"Message-ID: <big.1@example.org>\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
		"MIME-Version: 1.0\r\n"
		"Content-Type: multipart/mixed; boundary=\"=_b1\"\r\n\r\n"
		"--=_b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n");
	start = b->n;
	while (b->n - start < third) {
		size_t k = 0;

		x = x * 1103515245u + 12345u;
		if ((x >> 16) % 20 == 0)
			line[k++] = '.';              /* dot-stuffed on the wire */
		for (int w = 0; w < 12; w++) {
			const char *s = words[(x >> (w % 16)) % 12];

			k += (size_t)snprintf(line + k, sizeof(line) - k, "%s%s", w ? " " : "", s);
		}
		line[k++] = '\r';
		line[k++] = '\n';
		put(b, line, k);
	}
	PUTS(b, "--=_b1\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<html><body>\r\n");
	start = b->n;
	for (uint32_t i = 0; b->n - start < third; i++) {
		int k = snprintf(line, sizeof(line),
				 "<p>Dear customer, <b>%s</b> %s <a href=\"http://promo%" PRIu32
				 ".example.com/c?id=%" PRIu32 "\">here</a></p>\r\n",
				 words[i % 12], words[(i / 12) % 12], i % 1000, i);
		put(b, line, (size_t)k);
	}
	PUTS(b, "</body></html>\r\n--=_b1\r\nContent-Type: application/octet-stream; "
		"name=\"data.bin\"\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\n"
		"Content-Transfer-Encoding: base64\r\n\r\n");
	start = b->n;
	while (b->n - start < third) {
		for (int k = 0; k < 76; k++) {
			x = x * 1103515245u + 12345u;
			line[k] = b64[(x >> 16) & 63];
		}
		line[76] = '\r';
		line[77] = '\n';
		put(b, line, 78);
	}
	PUTS(b, "--=_b1--\r\n");
}

/* Dot-stuffs msg into wire and adds ".\r\n". */
static void stuff(struct buf *wire, const struct buf *msg)
{
	size_t i = 0;

	while (i < msg->n) {
		const char *nl = memchr(msg->p + i, '\n', msg->n - i);
		size_t end = nl ? (size_t)(nl - msg->p) + 1 : msg->n;

		if (msg->p[i] == '.')
			put(wire, ".", 1);
		put(wire, msg->p + i, end - i);
		i = end;
	}
	PUTS(wire, ".\r\n");
}

struct msg_ctx {
	struct message *m;
	size_t headers_mem;
	int ended;
};

static void on_begin(void *user, const struct smtp_tx *tx)
{
	(void)tx;
	message_reset(((struct msg_ctx *)user)->m);
}

static void on_data(void *user, const struct smtp_tx *tx, const uint8_t *p, size_t n)
{
	struct msg_ctx *c = user;

	(void)tx;
	message_feed(c->m, p, n);
	if (!c->headers_mem && message_headers_done(c->m))
		c->headers_mem = message_memory(c->m);
}

static void on_end(void *user, const struct smtp_session *s, const struct smtp_tx *tx)
{
	struct msg_ctx *c = user;

	(void)s;
	(void)tx;
	message_end(c->m);
	c->ended = 1;
}

static const struct smtp_ops msg_ops = {
	.tx_data_begin = on_begin,
	.tx_data = on_data,
	.tx_end = on_end,
};

static int big_message(size_t size)
{
	struct buf msg = { 0 }, wire = { 0 };
	struct msg_ctx c = { 0 };
	struct smtp_session *s;
	uint64_t mbase, sbase, mpeak, speak;
	size_t before, after;
	double t0, secs;

	make_message(&msg, size);
	stuff(&wire, &msg);
	c.m = message_new(NULL, NULL, NULL);
	s = smtp_session_new(NULL, &msg_ops, &c);
	if (!c.m || !s) {
		fprintf(stderr, "session_mem: allocation failed\n");
		return 1;
	}
	before = message_memory(c.m);
	FEED(s, SMTP_TOCLIENT, GREET);
	FEED(s, SMTP_TOSERVER, EHLO);
	FEED(s, SMTP_TOCLIENT, EHLO_REPLY);
	FEED(s, SMTP_TOSERVER, TX_CMDS);
	FEED(s, SMTP_TOCLIENT, TX_REPLIES);
	mbase = mem_in_use(MEM_MESSAGE);
	sbase = mem_in_use(MEM_SMTP);
	mem_peak_reset(MEM_MESSAGE);
	mem_peak_reset(MEM_SMTP);
	t0 = now_s();
	for (size_t off = 0; off < wire.n; off += 1448) {
		size_t n = wire.n - off < 1448 ? wire.n - off : 1448;

		smtp_feed(s, SMTP_TOSERVER, (const uint8_t *)wire.p + off, n, 1);
	}
	FEED(s, SMTP_TOCLIENT, QUEUED);
	secs = now_s() - t0;
	mpeak = mem_peak(MEM_MESSAGE);
	speak = mem_peak(MEM_SMTP);
	if (!c.ended) {
		fprintf(stderr, "session_mem: the message did not end\n");
		return 1;
	}
	after = message_memory(c.m);
	fprintf(stderr,
		"message_mem: %zu-byte message (%zu on the wire, %" PRIu32 " MIME parts): "
		"message_memory() %zu B new, %zu B after the headers, %zu B at the end; "
		"MEM_MESSAGE peak %" PRIu64 " B above the parser's own; MEM_SMTP peak +%" PRIu64
		" B; %" PRIu64 " allocations; fed in %.3f s (%.0f MB/s, smtp + message)\n",
		msg.n, wire.n, message_part_count(c.m), before, c.headers_mem, after,
		mpeak - mbase, speak - sbase, message_allocations(c.m), secs,
		wire.n / secs / 1e6);
	printf("message_mem bytes=%zu wire=%zu before=%zu headers=%zu after=%zu peak=%" PRIu64
	       " smtp_peak=%" PRIu64 " allocations=%" PRIu64 " parts=%" PRIu32
	       " seconds=%.4f\n", msg.n, wire.n, before, c.headers_mem, after,
	       mpeak - mbase + before, speak - sbase, message_allocations(c.m),
	       message_part_count(c.m), secs);
	smtp_end(s, 2);
	smtp_session_free(s);
	message_free(c.m);
	free(msg.p);
	free(wire.p);
	return 0;
}

int main(int argc, char **argv)
{
	uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 100000;
	int rc;

	if (n == 0) {
		fprintf(stderr, "usage: session_mem [N [MESSAGE_MB...]]\n");
		return 2;
	}
	rc = sessions(n);
	if (argc > 2) {
		for (int i = 2; i < argc && !rc; i++)
			rc = big_message((size_t)(strtod(argv[i], NULL) * (1 << 20)));
	} else {
		rc = big_message(5u << 20);
		if (!rc)
			rc = big_message(50u << 20);
	}
	return rc;
}
