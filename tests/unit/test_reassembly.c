/* unit: TCP reassembly, table-driven (after Suricata's reassembly steps).
 *
 * Each case is a list of steps applied to one stream: a segment (sequence
 * offset from a base ISN, flags, payload) or an ACK from the peer or an end.
 * The consumer's view is rendered as text: data verbatim, a gap as
 * "[gap N]", the end as "[end fin|rst|flush]"; the case lists the text it
 * expects. reasm_stream_validate() runs after every step. Every case also
 * runs with the base ISN just below 2^32, so sequence numbers wrap inside it.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "reassembly.h"

enum step_kind { SEG = 1, ACK, END };

struct step {
	enum step_kind kind;
	uint32_t off;          /* seq or ack, relative to the base */
	uint8_t flags;         /* TCP flags for SEG */
	const char *data;      /* payload for SEG; "RST"/"FLUSH" for END */
};

struct tcase {
	const char *name;
	struct step steps[16];
	const char *expect;
	uint32_t flow_memcap;  /* 0: default */
	uint16_t max_segs;     /* 0: default */
	uint64_t expect_gaps;
};

#define S(o, f, d) { SEG, (o), (f), (d) }
#define A(o) { ACK, (o), 0, NULL }
#define E(w) { END, 0, 0, (w) }
#define SYN 0x02
#define FIN 0x01
#define P 0x18

static const struct tcase cases[] = {
	{ "in order", { S(0, SYN, ""), S(1, P, "HELO a\r\n"), S(9, P, "MAIL FROM:<>\r\n") },
	  "HELO a\r\nMAIL FROM:<>\r\n", 0, 0, 0 },
	{ "reversed", { S(0, SYN, ""), S(9, P, "efgh"), S(5, P, "abcd"), S(1, P, "0123") },
	  "0123abcdefgh", 0, 0, 0 },
	{ "duplicated", { S(0, SYN, ""), S(1, P, "abcd"), S(1, P, "abcd"), S(5, P, "efgh"), S(5, P, "efgh") },
	  "abcdefgh", 0, 0, 0 },
	{ "overlap: first wins (retransmission with other bytes)",
	  { S(0, SYN, ""), S(1, P, "abcd"), S(3, P, "XXYY"), S(7, P, "ZZ") },
	  "abcdYYZZ", 0, 0, 0 },
	{ "overlap: queued data wins over later in-order copy",
	  { S(0, SYN, ""), S(5, P, "efgh"), S(1, P, "abcdXXXXijkl") },
	  "abcdefghijkl", 0, 0, 0 },
	{ "overlap: new segment fills holes between queued ones",
	  { S(0, SYN, ""), S(3, P, "cd"), S(7, P, "gh"), S(2, P, "BCDEFGHI"), S(1, P, "a") },
	  "aBcdEFghI", 0, 0, 0 },
	{ "fin ends the stream after reordering",
	  { S(0, SYN, ""), S(5, P | FIN, "efgh"), S(1, P, "abcd") },
	  "abcdefgh[end fin]", 0, 0, 0 },
	{ "data after fin is not stream data",
	  { S(0, SYN, ""), S(1, P | FIN, "abcd"), S(6, P, "late") },
	  "abcd[end fin]", 0, 0, 0 },
	{ "gap found by the peer's ack",
	  { S(0, SYN, ""), S(1, P, "abcd"), S(9, P, "ijkl"), A(13), S(13, P, "mn") },
	  "abcd[gap 4]ijklmn", 0, 0, 1 },
	{ "ack past missing tail",
	  { S(0, SYN, ""), S(1, P, "abcd"), A(11), S(11, P, "kl") },
	  "abcd[gap 6]kl", 0, 0, 1 },
	{ "gap flushed at end",
	  { S(0, SYN, ""), S(1, P, "ab"), S(5, P, "ef"), S(9, P, "ij"), E("FLUSH") },
	  "ab[gap 2]ef[gap 2]ij[end flush]", 0, 0, 2 },
	{ "rst mid-stream delivers what is in order",
	  { S(0, SYN, ""), S(1, P, "abcd"), E("RST"), S(5, P, "efgh") },
	  "abcd[end rst]", 0, 0, 0 },
	{ "mid-stream pickup (no SYN)",
	  { S(1000, P, "250 ok\r\n"), S(1008, P, "354 go\r\n") },
	  "250 ok\r\n354 go\r\n", 0, 0, 0 },
	{ "old data before a mid-stream start is dropped",
	  { S(1000, P, "bbbb"), S(996, P, "aaaa"), S(1004, P, "cc") },
	  "bbbbcc", 0, 0, 0 },
	{ "per-stream memcap: oldest hole becomes a gap, data kept",
	  { S(0, SYN, ""), S(1, P, "ab"), S(5, P, "ef"), S(9, P, "ij"), S(13, P, "mn") },
	  "ab[gap 2]ef", 2 * (sizeof(struct reasm_seg) + 2), 0, 1 },
	{ "max segments: oldest hole becomes a gap",
	  { S(0, SYN, ""), S(3, P, "c"), S(5, P, "e"), S(7, P, "g") },
	  "[gap 2]c", 0, 2, 1 },
	{ "segment larger than the cap with an empty queue is delivered after its hole",
	  { S(0, SYN, ""), S(1, P, "ab"), S(9, P, "0123456789abcdef0123456789abcdef0123456789") },
	  "ab[gap 6]0123456789abcdef0123456789abcdef0123456789", 40, 0, 1 },
	{ "SYN with data (TFO)", { S(0, SYN, "hi"), S(3, P, "!") }, "hi!", 0, 0, 0 },
	{ "ack never makes a gap before data arrives in order",
	  { S(0, SYN, ""), A(1), S(1, P, "ab"), A(3), S(3, P, "cd") },
	  "abcd", 0, 0, 0 },
};

struct sink {
	char buf[4096];
	size_t len;
};

static void app(struct sink *k, const char *s, size_t n)
{
	if (k->len + n >= sizeof(k->buf))
		n = sizeof(k->buf) - k->len - 1;
	memcpy(k->buf + k->len, s, n);
	k->len += n;
	k->buf[k->len] = '\0';
}

static void on_data(void *user, void *owner, int dir, const uint8_t *p, uint32_t n)
{
	(void)owner; (void)dir;
	app(user, (const char *)p, n);
}

static void on_gap(void *user, void *owner, int dir, uint32_t n)
{
	char b[32];

	(void)owner; (void)dir;
	app(user, b, (size_t)snprintf(b, sizeof(b), "[gap %u]", n));
}

static void on_end(void *user, void *owner, int dir, enum reasm_end why)
{
	const char *w = why == REASM_END_FIN ? "[end fin]" : why == REASM_END_RST ? "[end rst]" : "[end flush]";

	(void)owner; (void)dir;
	app(user, w, strlen(w));
}

static void run_case(const struct tcase *tc, uint32_t base)
{
	static const struct reasm_ops ops = { on_data, on_gap, on_end };
	struct reasm_config cfg;
	struct reasm_ctx rc;
	struct reasm_stream s;
	struct sink k = { .len = 0 };

	reasm_config_default(&cfg);
	if (tc->flow_memcap)
		cfg.flow_memcap = tc->flow_memcap;
	if (tc->max_segs)
		cfg.max_segs = tc->max_segs;
	reasm_ctx_init(&rc, &cfg, &ops, &k);
	memset(&s, 0, sizeof(s));
	k.buf[0] = '\0';
	for (unsigned i = 0; i < 16 && tc->steps[i].kind; i++) {
		const struct step *st = &tc->steps[i];

		switch (st->kind) {
		case SEG:
			reasm_segment(&rc, &s, NULL, 0, base + st->off, st->flags,
				      (const uint8_t *)st->data, (uint32_t)strlen(st->data));
			break;
		case ACK:
			reasm_ack(&rc, &s, NULL, 0, base + st->off);
			break;
		case END:
			reasm_end(&rc, &s, NULL, 0, strcmp(st->data, "RST") == 0 ? REASM_END_RST
									: REASM_END_FLUSH);
			break;
		}
		if (reasm_stream_validate(&s) != 0) {
			fprintf(stderr, "case '%s' base %u: validate failed after step %u\n",
				tc->name, base, i);
			CHECK(0);
		}
	}
	if (strcmp(k.buf, tc->expect) != 0)
		fprintf(stderr, "case '%s' base %u:\n  want \"%s\"\n  got  \"%s\"\n",
			tc->name, base, tc->expect, k.buf);
	CHECK(strcmp(k.buf, tc->expect) == 0);
	CHECK_EQ_U64(s.gaps, tc->expect_gaps);
	reasm_stream_free(&rc, &s);
	CHECK_EQ_U64(rc.stats.held_bytes, 0);
}

/* Random permutations with duplicates of a long stream must always
 * reassemble to the original (no losses: every byte is offered once). */
static void shuffled_stream(uint32_t seed)
{
	static const struct reasm_ops ops = { on_data, on_gap, on_end };
	struct reasm_config cfg;
	struct reasm_ctx rc;
	struct reasm_stream s;
	struct sink k = { .len = 0 };
	char orig[2000];
	struct { uint32_t off, len; } segs[400];
	unsigned n = 0;
	uint32_t base = 0xffffff00u + seed;

	srand(seed);
	for (unsigned i = 0; i < sizeof(orig); i++)
		orig[i] = (char)('a' + rand() % 26);
	for (uint32_t off = 0; off < sizeof(orig) - 1 && n < 400; ) {
		uint32_t len = 1 + (uint32_t)rand() % 40;

		if (off + len > sizeof(orig) - 1)
			len = (uint32_t)sizeof(orig) - 1 - off;
		segs[n].off = off;
		segs[n].len = len;
		n++;
		off += len;
	}
	for (unsigned i = 0; i < n; i++) {   /* local shuffles, like a real network */
		unsigned j = i + (unsigned)rand() % 4;

		if (j < n) {
			uint32_t o = segs[i].off, l = segs[i].len;

			segs[i] = segs[j];
			segs[j].off = o;
			segs[j].len = l;
		}
	}
	reasm_config_default(&cfg);
	reasm_ctx_init(&rc, &cfg, &ops, &k);
	memset(&s, 0, sizeof(s));
	reasm_segment(&rc, &s, NULL, 0, base, SYN, NULL, 0);
	for (unsigned i = 0; i < n; i++) {
		reasm_segment(&rc, &s, NULL, 0, base + 1 + segs[i].off, P,
			      (const uint8_t *)orig + segs[i].off, segs[i].len);
		if (rand() % 5 == 0)   /* a duplicate */
			reasm_segment(&rc, &s, NULL, 0, base + 1 + segs[i].off, P,
				      (const uint8_t *)orig + segs[i].off, segs[i].len);
		CHECK(reasm_stream_validate(&s) == 0);
	}
	CHECK_MEM(k.buf, k.len, orig, sizeof(orig) - 1);
	CHECK_EQ_U64(s.gaps, 0);
	reasm_stream_free(&rc, &s);
}

int main(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		run_case(&cases[i], 1000);
		run_case(&cases[i], 0xfffffff8u);   /* wraps past 2^32 inside the case */
	}
	for (uint32_t seed = 1; seed <= 20; seed++)
		shuffled_stream(seed);
	return check_done();
}
