/* json: a small append-only JSON object writer for output records.
 *
 * Records are built in a growable buffer owned by struct json (one per
 * writer, reused for every record: no allocation per record once warm) and
 * written out whole. Strings are escaped per RFC 8259 and always come out as
 * valid UTF-8: bytes that are not valid UTF-8 (wire data often is not) become
 * U+FFFD, so every line parses.
 */
#ifndef BW_JSON_H
#define BW_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct json {
	char *buf;
	size_t len, cap;
	bool need_comma;
	bool oom;            /* an append failed: the record is dropped, counted by the caller */
};

void json_init(struct json *j);
void json_free(struct json *j);
/* Starts a new record ("{"), discarding any previous content. */
void json_begin(struct json *j);
/* Ends the record ("}\n"). */
void json_end(struct json *j);
/* "key": (then a value). Any key is escaped like a string; see json_key() below
 * for the fast path of literal keys. */
void json_key_any(struct json *j, const char *key);
void json_str(struct json *j, const char *s, size_t n);  /* a string value */
void json_cstr(struct json *j, const char *s);           /* NUL-terminated; NULL → null */
void json_u64(struct json *j, uint64_t v);
void json_i64(struct json *j, int64_t v);
void json_double(struct json *j, double v);
void json_bool(struct json *j, bool v);
void json_null(struct json *j);
void json_open_array(struct json *j);
void json_close_array(struct json *j);
void json_open_object(struct json *j);
void json_close_object(struct json *j);
/* ISO 8601 UTC with microseconds, as a string value. */
void json_ts(struct json *j, uint64_t ns);

/* "key": (then a value). A key whose length the compiler knows (a string
 * literal, after inlining) is copied as it is, its length folded: no strlen,
 * no scan (a record has ~40 keys; json_key_any took ~115 instructions each).
 * Literal keys must be plain printable ASCII without '"' or '\\': breakwater's
 * are; the unit test checks the output parses. */
static inline void json_key(struct json *j, const char *key)
{
	if (__builtin_constant_p(__builtin_strlen(key))) {
		size_t n = __builtin_strlen(key);

		if (j->len + n + 4 <= j->cap) {
			char *b = j->buf + j->len;

			if (j->need_comma)
				*b++ = ',';
			*b++ = '"';
			__builtin_memcpy(b, key, n);
			b += n;
			*b++ = '"';
			*b++ = ':';
			j->len = (size_t)(b - j->buf);
			j->need_comma = false;
			return;
		}
	}
	json_key_any(j, key);
}

/* Convenience: key + value. */
static inline void json_kv_str(struct json *j, const char *k, const char *s, size_t n) { json_key(j, k); json_str(j, s, n); }
static inline void json_kv_cstr(struct json *j, const char *k, const char *s) { json_key(j, k); json_cstr(j, s); }
static inline void json_kv_u64(struct json *j, const char *k, uint64_t v) { json_key(j, k); json_u64(j, v); }
static inline void json_kv_bool(struct json *j, const char *k, bool v) { json_key(j, k); json_bool(j, v); }
static inline void json_kv_ts(struct json *j, const char *k, uint64_t ns) { json_key(j, k); json_ts(j, ns); }

/* Writes the record to f. Returns 0, or -1 (write error or oom). */
int json_write(const struct json *j, FILE *f);

#endif
