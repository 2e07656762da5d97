/* json: see json.h. */
#include "json.h"

#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "mem.h"

void json_init(struct json *j)
{
	memset(j, 0, sizeof(*j));
}

void json_free(struct json *j)
{
	mem_free(MEM_OUTPUT, j->buf);
	memset(j, 0, sizeof(*j));
}

static bool reserve(struct json *j, size_t more)
{
	size_t cap;
	char *b;

	if (j->len + more <= j->cap)
		return true;
	cap = j->cap ? j->cap : 1024;
	while (cap < j->len + more)
		cap *= 2;
	b = mem_realloc(MEM_OUTPUT, j->buf, cap);
	if (!b) {
		j->oom = true;
		return false;
	}
	j->buf = b;
	j->cap = cap;
	return true;
}

static void put(struct json *j, const char *s, size_t n)
{
	if (!reserve(j, n))
		return;
	memcpy(j->buf + j->len, s, n);
	j->len += n;
}

static inline void putc1(struct json *j, char c)
{
	if (j->len < j->cap || reserve(j, 1))
		j->buf[j->len++] = c;
}

static void sep(struct json *j)
{
	if (j->need_comma)
		putc1(j, ',');
	j->need_comma = true;
}

void json_begin(struct json *j)
{
	j->len = 0;
	j->oom = false;
	j->need_comma = false;
	putc1(j, '{');
}

void json_end(struct json *j)
{
	put(j, "}\n", 2);
	j->need_comma = false;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t utf8_len(const uint8_t *s, size_t n)
{
	uint8_t c = s[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
			return 0;
		if (c == 0xe0 && s[1] < 0xa0)
			return 0;   /* overlong */
		if (c == 0xed && s[1] >= 0xa0)
			return 0;   /* surrogates */
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 ||
		    (s[3] & 0xc0) != 0x80)
			return 0;
		if (c == 0xf0 && s[1] < 0x90)
			return 0;
		if (c == 0xf4 && s[1] >= 0x90)
			return 0;
		return 4;
	}
	return 0;
}

/* Whether none of the 8 bytes of w needs escaping or checking: below 0x20,
 * '"', '\\' or over 0x7f. (A borrow only starts at a byte that is itself
 * below 0x20 or equal to '"' or '\\', so a word reported clean is clean.) */
static inline int word_plain(uint64_t w)
{
	const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
	uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
	uint64_t t = ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b) | w;

	return (t & high) == 0;
}

static inline int byte_plain(uint8_t c)
{
	return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

static void escape(struct json *j, const char *str, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *s = (const uint8_t *)str;
	size_t i = 0;

	putc1(j, '"');
	while (i < n) {
		size_t run = i;

		/* copy plain printable ASCII and valid UTF-8 in one go */
		for (;;) {
			size_t l;

			while (run + 8 <= n) {
				uint64_t w;

				memcpy(&w, s + run, 8);
				if (!word_plain(w))
					break;
				run += 8;
			}
			while (run < n && byte_plain(s[run]))
				run++;
			if (run == n || s[run] < 0x80)
				break;
			l = utf8_len(s + run, n - run);
			if (!l)
				break;
			run += l;
		}
		if (run > i) {
			put(j, (const char *)s + i, run - i);
			i = run;
			continue;
		}
		if (s[i] >= 0x80) {
			/* not valid UTF-8 (a valid sequence is part of a run) */
			put(j, "\xef\xbf\xbd", 3);   /* U+FFFD */
			i++;
			continue;
		}
		switch (s[i]) {
		case '"': put(j, "\\\"", 2); break;
		case '\\': put(j, "\\\\", 2); break;
		case '\n': put(j, "\\n", 2); break;
		case '\r': put(j, "\\r", 2); break;
		case '\t': put(j, "\\t", 2); break;
		default: {
			char u[6] = {'\\', 'u', '0', '0', hex[s[i] >> 4], hex[s[i] & 15]};

			put(j, u, 6);
		}
		}
		i++;
	}
	putc1(j, '"');
}

void json_key_any(struct json *j, const char *key)
{
	size_t n = strlen(key), i = 0;

	sep(j);
	while (i + 8 <= n) {
		uint64_t w;

		memcpy(&w, key + i, 8);
		if (!word_plain(w))
			break;
		i += 8;
	}
	while (i < n && byte_plain((uint8_t)key[i]))
		i++;
	if (i == n && reserve(j, n + 3)) {
		/* the usual key, plain ASCII: as escape() would write it */
		char *b = j->buf + j->len;

		b[0] = '"';
		memcpy(b + 1, key, n);
		b[n + 1] = '"';
		b[n + 2] = ':';
		j->len += n + 3;
	} else {
		escape(j, key, n);
		putc1(j, ':');
	}
	j->need_comma = false;
}

void json_str(struct json *j, const char *s, size_t n)
{
	sep(j);
	escape(j, s ? s : "", s ? n : 0);
}

void json_cstr(struct json *j, const char *s)
{
	if (!s) {
		json_null(j);
		return;
	}
	json_str(j, s, strlen(s));
}

/* Decimal digits of v, right-aligned in b[24]; returns the first digit.
 * (printf costs ~10x this per number, and records are mostly numbers.) */
static char *fmt_u64(char b[24], uint64_t v)
{
	char *p = b + 24;

	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return p;
}

void json_u64(struct json *j, uint64_t v)
{
	char b[24], *p = fmt_u64(b, v);

	sep(j);
	put(j, p, (size_t)(b + 24 - p));
}

void json_i64(struct json *j, int64_t v)
{
	char b[24];
	int n = snprintf(b, sizeof(b), "%" PRId64, v);

	sep(j);
	put(j, b, (size_t)n);
}

void json_double(struct json *j, double v)
{
	char b[32];
	int n;

	if (v != v || v > 1e300 || v < -1e300) {   /* NaN and infinities are not JSON */
		json_null(j);
		return;
	}
	n = snprintf(b, sizeof(b), "%.6g", v);
	sep(j);
	put(j, b, (size_t)n);
}

void json_bool(struct json *j, bool v)
{
	sep(j);
	put(j, v ? "true" : "false", v ? 4 : 5);
}

void json_null(struct json *j)
{
	sep(j);
	put(j, "null", 4);
}

void json_open_array(struct json *j)
{
	sep(j);
	putc1(j, '[');
	j->need_comma = false;
}

void json_close_array(struct json *j)
{
	putc1(j, ']');
	j->need_comma = true;
}

void json_open_object(struct json *j)
{
	sep(j);
	putc1(j, '{');
	j->need_comma = false;
}

void json_close_object(struct json *j)
{
	putc1(j, '}');
	j->need_comma = true;
}

void json_ts(struct json *j, uint64_t ns)
{
	/* the date part changes once a second: format it only then */
	static __thread time_t last_sec = -1;
	static __thread char prefix[32];
	static __thread size_t prefix_len;
	time_t t = (time_t)(ns / 1000000000ull);
	unsigned us = (unsigned)((ns % 1000000000ull) / 1000);
	char b[48];

	if (t != last_sec) {
		struct tm tm;

		gmtime_r(&t, &tm);
		prefix_len = strftime(prefix, sizeof(prefix), "%Y-%m-%dT%H:%M:%S.", &tm);
		last_sec = t;
	}
	memcpy(b, prefix, prefix_len);
	for (int i = 5; i >= 0; i--) {
		b[prefix_len + (size_t)i] = (char)('0' + us % 10);
		us /= 10;
	}
	b[prefix_len + 6] = 'Z';
	sep(j);
	put(j, "\"", 1);
	put(j, b, prefix_len + 7);
	put(j, "\"", 1);
}

int json_write(const struct json *j, FILE *f)
{
	if (j->oom)
		return -1;
	return fwrite(j->buf, 1, j->len, f) == j->len ? 0 : -1;
}
