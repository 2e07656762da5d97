/* Unit tests for engine/intern.c: exact interning, kinds as namespaces,
 * pinning, references, CLOCK eviction at the cap, idle expiry, id reuse. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "intern.h"

#define SEC 1000000000ull

static void test_roundtrip(void)
{
	static const struct {
		enum intern_kind kind;
		const char *bytes;
		size_t len;
	} cases[] = {
		{ INTERN_ADDR, "alice@example.org", 17 },
		{ INTERN_DOMAIN, "example.org", 11 },
		{ INTERN_HELO, "mx.example.org", 14 },
		{ INTERN_IP4, "\x0a\x00\x00\x01", 4 },
		{ INTERN_IP6, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16 },
		{ INTERN_NET4, "\x0a\x00\x00\x00\x18", 5 },
		{ INTERN_MSGID, "<a-rather-long-message-id-0123456789@host.example.org>", 54 },
		{ INTERN_BODY, "\x01\x02\x03\x04\x05\x06\x07\x08", 8 },
		{ INTERN_ADDR, "", 0 },
	};
	struct intern_config cfg = { .max_ids = 64 };
	struct intern_table *t = intern_new(&cfg);
	uint32_t ids[sizeof(cases) / sizeof(cases[0])];

	CHECK(t != NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum intern_kind kind;
		size_t len;
		const uint8_t *p;

		ids[i] = intern_get(t, cases[i].kind, cases[i].bytes, cases[i].len, 0);
		CHECK(ids[i] != INTERN_ID_NONE);
		CHECK_EQ_U64(intern_get(t, cases[i].kind, cases[i].bytes, cases[i].len, 0), ids[i]);
		CHECK_EQ_U64(intern_find(t, cases[i].kind, cases[i].bytes, cases[i].len), ids[i]);
		p = intern_bytes(t, ids[i], &kind, &len);
		CHECK(p != NULL);
		CHECK_EQ_U64(kind, cases[i].kind);
		CHECK_MEM(p, len, cases[i].bytes, cases[i].len);
		for (size_t j = 0; j < i; j++)
			CHECK(ids[j] != ids[i]);
	}
	/* Same bytes, another kind: another id. */
	CHECK(intern_get(t, INTERN_DOMAIN, "alice@example.org", 17, 0) != ids[0]);
	CHECK_EQ_U64(intern_find(t, INTERN_HELO, "nothere", 7), INTERN_ID_NONE);
	/* Too long: refused and counted. */
	{
		char *big = calloc(1, INTERN_MAX_LEN + 1);
		struct intern_stats st;

		CHECK_EQ_U64(intern_get(t, INTERN_MSGID, big, INTERN_MAX_LEN + 1, 0), INTERN_ID_NONE);
		CHECK(intern_get(t, INTERN_MSGID, big, INTERN_MAX_LEN, 0) != INTERN_ID_NONE);
		intern_get_stats(t, &st);
		CHECK_EQ_U64(st.too_long, 1);
		CHECK_EQ_U64(st.heap_keys, 2);
		free(big);
	}
	CHECK_EQ_U64(intern_validate(t), 0);
	intern_free(t);
}

/* Full table: pinned and referenced ids stay, the CLOCK hand gives a second
 * chance, evicted ids are reused for the new identity. */
static void test_eviction(void)
{
	struct intern_config cfg = { .max_ids = 4, .evict_scan = 16 };
	struct intern_table *t = intern_new(&cfg);
	struct intern_stats st;
	char name[32];
	uint32_t id[4], nid;

	for (int i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "u%d@x", i);
		id[i] = intern_get(t, INTERN_ADDR, name, strlen(name), 0);
		CHECK(id[i] != INTERN_ID_NONE);
	}
	/* All pinned (same pin period): nothing can go. */
	CHECK_EQ_U64(intern_get(t, INTERN_ADDR, "new@x", 5, 0), INTERN_ID_NONE);
	intern_get_stats(t, &st);
	CHECK_EQ_U64(st.full, 1);

	/* Referenced: nothing can go either. */
	intern_pin_next(t);
	for (int i = 0; i < 4; i++)
		intern_ref(t, id[i]);
	CHECK_EQ_U64(intern_get(t, INTERN_ADDR, "new@x", 5, 0), INTERN_ID_NONE);

	/* Release u2 only: the new identity gets its id; u2 is gone. */
	intern_unref(t, id[2]);
	nid = intern_get(t, INTERN_ADDR, "new@x", 5, 0);
	CHECK_EQ_U64(nid, id[2]);
	CHECK_EQ_U64(intern_find(t, INTERN_ADDR, "u2@x", 4), INTERN_ID_NONE);
	CHECK_EQ_U64(intern_find(t, INTERN_ADDR, "new@x", 5), nid);
	CHECK_EQ_U64(intern_refs(t, nid), 0);
	CHECK_EQ_U64(intern_validate(t), 0);

	intern_get_stats(t, &st);
	CHECK_EQ_U64(st.evicted_clock, 1);
	CHECK_EQ_U64(st.ids, 4);
	intern_free(t);

	/* Second chance: a, b, c fill the table; d's insert sweeps once,
	 * clearing every reference bit, and takes a. Then b is used again,
	 * so e's insert passes over b and takes c. */
	cfg.max_ids = 3;
	t = intern_new(&cfg);
	intern_get(t, INTERN_HELO, "a", 1, 0);
	intern_get(t, INTERN_HELO, "b", 1, 0);
	intern_get(t, INTERN_HELO, "c", 1, 0);
	intern_pin_next(t);
	CHECK(intern_get(t, INTERN_HELO, "d", 1, 0) != INTERN_ID_NONE);
	CHECK_EQ_U64(intern_find(t, INTERN_HELO, "a", 1), INTERN_ID_NONE);
	intern_pin_next(t);
	intern_get(t, INTERN_HELO, "b", 1, 0);
	intern_pin_next(t);
	CHECK(intern_get(t, INTERN_HELO, "e", 1, 0) != INTERN_ID_NONE);
	CHECK(intern_find(t, INTERN_HELO, "b", 1) != INTERN_ID_NONE);
	CHECK_EQ_U64(intern_find(t, INTERN_HELO, "c", 1), INTERN_ID_NONE);
	CHECK(intern_find(t, INTERN_HELO, "d", 1) != INTERN_ID_NONE);
	CHECK_EQ_U64(intern_validate(t), 0);
	intern_free(t);
}

/* Idle expiry frees only unreferenced, unpinned ids older than idle_ns,
 * with bounded work per call. */
static void test_expire(void)
{
	struct intern_config cfg = { .max_ids = 100, .idle_ns = 10 * SEC };
	struct intern_table *t = intern_new(&cfg);
	struct intern_stats st;
	char name[32];
	uint32_t keep;

	for (int i = 0; i < 50; i++) {
		snprintf(name, sizeof(name), "r%d@x", i);
		intern_get(t, INTERN_ADDR, name, strlen(name), 0);
	}
	keep = intern_find(t, INTERN_ADDR, "r7@x", 4);
	intern_ref(t, keep);
	intern_pin_next(t);
	CHECK_EQ_U64(intern_expire(t, 5 * SEC, 1000), 50);
	intern_get_stats(t, &st);
	CHECK_EQ_U64(st.ids, 50);
	/* Bounded: 10 entries a call. */
	CHECK_EQ_U64(intern_expire(t, 30 * SEC, 10), 10);
	intern_get_stats(t, &st);
	CHECK(st.ids <= 50 && st.ids >= 40);
	for (int i = 0; i < 10; i++)
		intern_expire(t, 30 * SEC, 10);
	intern_get_stats(t, &st);
	CHECK_EQ_U64(st.ids, 1);
	CHECK_EQ_U64(st.expired_idle, 49);
	CHECK_EQ_U64(intern_find(t, INTERN_ADDR, "r7@x", 4), keep);
	CHECK_EQ_U64(intern_validate(t), 0);
	/* Freed ids are reused. */
	for (int i = 0; i < 99; i++) {
		snprintf(name, sizeof(name), "s%d@x", i);
		CHECK(intern_get(t, INTERN_ADDR, name, strlen(name), 40 * SEC) < 100);
	}
	CHECK_EQ_U64(intern_validate(t), 0);
	intern_free(t);
}

/* Randomised: a model of which identity each referenced id stands for must
 * hold through eviction and reuse; validate after every step. */
static void test_random(void)
{
	enum { N_NAMES = 300, MAX_IDS = 64, STEPS = 20000 };
	struct intern_config cfg = { .max_ids = MAX_IDS, .idle_ns = SEC, .evict_scan = 8 };
	struct intern_table *t = intern_new(&cfg);
	uint32_t held[N_NAMES];   /* id held (referenced) for name i, or NONE */
	unsigned seed = 12345, bad = 0, vbad = 0;
	char name[48];

	for (int i = 0; i < N_NAMES; i++)
		held[i] = INTERN_ID_NONE;
	for (int step = 0; step < STEPS; step++) {
		int i = rand_r(&seed) % N_NAMES;
		int op = rand_r(&seed) % 10;
		uint64_t now = (uint64_t)step * (SEC / 100);
		uint32_t id;

		/* Long names exercise the heap path. */
		snprintf(name, sizeof(name), i % 3 ? "n%d@example.org" :
			 "a-long-name-to-go-on-the-heap-%d@example.org", i);
		if (step % 5 == 0)
			intern_pin_next(t);
		if (op < 6) {
			id = intern_get(t, INTERN_ADDR, name, strlen(name), now);
			if (held[i] != INTERN_ID_NONE && id != held[i])
				bad++;
			if (id != INTERN_ID_NONE && held[i] == INTERN_ID_NONE && op < 3) {
				intern_ref(t, id);
				held[i] = id;
			}
		} else if (op < 8) {
			if (held[i] != INTERN_ID_NONE) {
				intern_unref(t, held[i]);
				held[i] = INTERN_ID_NONE;
			}
		} else {
			intern_expire(t, now, 16);
		}
		/* Every held id still names its identity. */
		for (int j = 0; j < N_NAMES; j += 17) {
			if (held[j] == INTERN_ID_NONE)
				continue;
			snprintf(name, sizeof(name), j % 3 ? "n%d@example.org" :
				 "a-long-name-to-go-on-the-heap-%d@example.org", j);
			if (intern_find(t, INTERN_ADDR, name, strlen(name)) != held[j])
				bad++;
		}
		if (step % 50 == 0 && intern_validate(t) != 0)
			vbad++;
	}
	CHECK_EQ_U64(bad, 0);
	CHECK_EQ_U64(vbad, 0);
	CHECK_EQ_U64(intern_validate(t), 0);
	intern_free(t);
}

/* Backward-shift deletion places each later slot by the home its tag
 * carries: a chain that wraps past the end of a 16-slot index (homes 14, 14,
 * 15, 0) must close up around the freed head and stay findable. */
static void test_wrapped_chain(void)
{
	static const uint64_t want_home[] = { 14, 14, 15, 0 };
	struct intern_config cfg = { .max_ids = 8, .idle_ns = SEC };
	struct intern_table *t = intern_new(&cfg);
	char names[4][16];
	uint32_t ids[4];
	struct intern_stats st;
	int n = 0;

	CHECK(t != NULL);
	for (int i = 0; n < 4 && i < 100000; i++) {
		char name[16];

		snprintf(name, sizeof(name), "w%d@x", i);
		if ((intern_hash(INTERN_ADDR, name, strlen(name)) & 15) == want_home[n]) {
			memcpy(names[n], name, sizeof(name));
			n++;
		}
	}
	CHECK_EQ_U64(n, 4);
	for (int i = 0; i < 4; i++) {
		ids[i] = intern_get(t, INTERN_ADDR, names[i], strlen(names[i]), 0);
		CHECK(ids[i] != INTERN_ID_NONE);
		if (i)
			intern_ref(t, ids[i]);
	}
	CHECK_EQ_U64(intern_validate(t), 0);
	intern_pin_next(t);
	intern_expire(t, 10 * SEC, 100);   /* frees names[0], the chain's head */
	intern_get_stats(t, &st);
	CHECK_EQ_U64(st.expired_idle, 1);
	CHECK_EQ_U64(intern_find(t, INTERN_ADDR, names[0], strlen(names[0])), INTERN_ID_NONE);
	for (int i = 1; i < 4; i++)
		CHECK_EQ_U64(intern_find(t, INTERN_ADDR, names[i], strlen(names[i])), ids[i]);
	CHECK_EQ_U64(intern_validate(t), 0);
	intern_free(t);
}

static void test_config(void)
{
	struct intern_config zero = { .max_ids = 0 };

	CHECK(intern_new(&zero) == NULL);
	CHECK(intern_new(NULL) == NULL);
	CHECK_STR(intern_kind_name(INTERN_IP6), "ip6");
	CHECK(intern_hash(INTERN_ADDR, "a", 1) != intern_hash(INTERN_HELO, "a", 1));
}

int main(void)
{
	test_roundtrip();
	test_eviction();
	test_expire();
	test_random();
	test_wrapped_chain();
	test_config();
	return check_done();
}
