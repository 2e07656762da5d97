/* libFuzzer harness for the SMTP session parser (engine/smtp.c).
 *
 * Input: one config byte, then a script. 0xFF starts a directive, any other
 * byte is data for the current direction, fed when the next directive (or
 * the end) arrives:
 *   FF 00      what follows goes client -> server
 *   FF 01      what follows goes server -> client
 *   FF 02 n    a gap of n + 1 bytes in the current direction
 *   FF 03      split point: feed what we have now
 *   FF FF      a literal 0xFF data byte
 * So a plain SMTP transcript is a valid input (all client bytes), and seeds
 * are easy to write by hand. Config byte: bit 0 tiny limits (every limit
 * reachable), bit 1 feed one byte at a time, bit 2 start on the server side.
 *
 * After every call the session must pass smtp_session_validate(); the
 * callbacks read every string of every transaction (ASan catches a bad one).
 * Each input runs twice, in its own pieces and one byte at a time: the
 * records (a digest of every field and content byte, timestamps aside) must
 * be the same, since where the feeds split must not change what we parse.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I engine -I <build dir>
 *   tests/fuzz/fuzz_smtp.c engine/smtp.c engine/mem.c
 * Without libFuzzer, -DBW_FUZZ_MAIN gives a main() that runs files given
 * on the command line.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* FNV-1a over everything the records say. */
static void mix(uint64_t *h, const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		*h = (*h ^ b[i]) * 0x100000001b3ull;
}

static void mix_u64(uint64_t *h, uint64_t v)
{
	mix(h, &v, sizeof(v));
}

static void mix_str(uint64_t *h, const char *p)
{
	if (p)
		mix(h, p, strlen(p) + 1);     /* ASan checks it is a string */
	else
		mix_u64(h, 0x6e756c6cu);
}

static void on_begin(void *user, const struct smtp_tx *tx)
{
	mix_u64(user, 0xb0 + tx->index);
}

static void on_data(void *user, const struct smtp_tx *tx, const uint8_t *p, size_t n)
{
	(void)tx;
	if (n == 0)
		abort();
	mix(user, p, n);
}

static void on_gap(void *user, const struct smtp_tx *tx, uint64_t n)
{
	(void)tx;
	mix_u64(user, 0x9a9 + n);
}

static void on_end(void *user, const struct smtp_session *s, const struct smtp_tx *tx)
{
	unsigned both = SMTP_TX_COMPLETE | SMTP_TX_INCOMPLETE;
	uint64_t *h = user;

	(void)s;
	if ((tx->flags & both) == 0 || (tx->flags & both) == both)
		abort();
	mix_u64(h, tx->index);
	mix_u64(h, tx->flags);
	mix_u64(h, tx->anomalies);
	mix_u64(h, tx->size);
	mix_u64(h, tx->gap_bytes);
	mix_u64(h, tx->nrcpt);
	mix_u64(h, tx->nrcpt_rejected);
	mix_u64(h, tx->rcpt_dropped);
	mix_u64(h, ((uint64_t)tx->mail_code << 48) | ((uint64_t)tx->data_code << 32) |
		((uint64_t)tx->end_code << 16) | tx->auth_code);
	mix_u64(h, tx->last_reply.code);
	mix_str(h, tx->helo);
	mix_str(h, tx->mail_from);
	mix_str(h, tx->mail_params);
	mix_str(h, tx->auth_mech);
	mix_str(h, tx->auth_user);
	mix_str(h, tx->xclient);
	mix_str(h, tx->xforward);
	mix_str(h, tx->last_reply.text);
	for (uint32_t i = 0; i < tx->nrcpt; i++) {
		mix_str(h, tx->rcpts[i].addr);
		mix_str(h, tx->rcpts[i].reply_text);
		mix_u64(h, ((uint64_t)tx->rcpts[i].reply_code << 8) | tx->rcpts[i].state);
	}
}

static const struct smtp_ops ops = {
	.tx_data_begin = on_begin,
	.tx_data = on_data,
	.tx_gap = on_gap,
	.tx_end = on_end,
};

static void check(const struct smtp_session *s)
{
	const char *why = NULL;

	if (smtp_session_validate(s, &why) != 0) {
		fprintf(stderr, "smtp_session_validate: %s\n", why);
		abort();
	}
}

static void feed(struct smtp_session *s, int dir, const uint8_t *p, size_t n, int bytewise, uint64_t *ts)
{
	if (!n)
		return;
	if (!bytewise) {
		smtp_feed(s, dir, p, n, (*ts)++);
		check(s);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		smtp_feed(s, dir, p + i, 1, (*ts)++);
		check(s);
	}
}

/* Runs the script once; returns the digest of the records and session. */
static uint64_t run(const uint8_t *data, size_t size, int bytewise)
{
	static const struct smtp_limits tiny = {
		.max_line = 16, .max_rcpts = 2, .max_tx = 3, .max_pipeline = 2,
		.max_reply_text = 8, .max_stall = 1024, .max_addr = 8, .max_tx_mem = 1024,
	};
	const struct smtp_session_info *in;
	struct smtp_session *s;
	uint8_t *buf;
	size_t blen = 0, i = 1;
	int dir;
	uint64_t ts = 0, h = 0xcbf29ce484222325ull;
	uint8_t cfg = data[0];

	dir = (cfg & 4) ? SMTP_TOCLIENT : SMTP_TOSERVER;
	buf = malloc(size);
	if (!buf)
		return 0;
	s = smtp_session_new((cfg & 1) ? &tiny : NULL, &ops, &h);
	if (!s) {
		free(buf);
		return 0;
	}
	while (i < size) {
		uint8_t c = data[i++];

		if (c != 0xFF || i >= size) {
			buf[blen++] = c;
			continue;
		}
		c = data[i++];
		if (c == 0xFF) {
			buf[blen++] = c;
			continue;
		}
		feed(s, dir, buf, blen, bytewise, &ts);
		blen = 0;
		switch (c & 3) {
		case 0:
			dir = SMTP_TOSERVER;
			break;
		case 1:
			dir = SMTP_TOCLIENT;
			break;
		case 2:
			if (i < size) {
				smtp_gap(s, dir, (uint64_t)data[i++] + 1);
				check(s);
			}
			break;
		default:
			break;
		}
	}
	feed(s, dir, buf, blen, bytewise, &ts);
	smtp_end(s, ts);
	check(s);
	in = smtp_session_info(s);
	mix(&h, in->bytes, sizeof(in->bytes));
	mix(&h, in->lines, sizeof(in->lines));
	mix_u64(&h, in->anomalies);
	mix_u64(&h, ((uint64_t)in->caps << 32) | in->tx_count);
	mix_u64(&h, ((uint64_t)in->commands << 32) | in->replies);
	mix_u64(&h, ((uint64_t)in->greeting_code << 32) | ((uint64_t)in->tls << 8) | in->quit);
	smtp_session_free(s);
	free(buf);
	return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t a, b;

	if (size < 1)
		return 0;
	a = run(data, size, (data[0] & 2) != 0);
	b = run(data, size, 1);
	if (a != b) {
		fprintf(stderr, "records differ between pieces and bytes\n");
		abort();
	}
	return 0;
}

#ifdef BW_FUZZ_MAIN
int main(int argc, char **argv)
{
	for (int a = 1; a < argc; a++) {
		FILE *f = fopen(argv[a], "rb");
		uint8_t *p;
		long n;

		if (!f) {
			perror(argv[a]);
			return 1;
		}
		fseek(f, 0, SEEK_END);
		n = ftell(f);
		fseek(f, 0, SEEK_SET);
		p = malloc(n > 0 ? (size_t)n : 1);
		if (!p || fread(p, 1, (size_t)n, f) != (size_t)n) {
			fclose(f);
			free(p);
			return 1;
		}
		fclose(f);
		LLVMFuzzerTestOneInput(p, (size_t)n);
		free(p);
	}
	return 0;
}
#endif
