/* A tiny table-friendly test harness for the unit suite.
 *
 * CHECK(cond) records a failure with file:line and goes on; CHECK_EQ_U64
 * prints both values. check_done() prints the closing "N passed, N failed"
 * line and returns the process exit status, so main() ends with
 * `return check_done();`.
 */
#ifndef BW_TEST_CHECK_H
#define BW_TEST_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static unsigned check_passed, check_failed;

#define CHECK(cond) do { \
	if (cond) { check_passed++; } else { check_failed++; \
		fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } \
} while (0)

#define CHECK_EQ_U64(a, b) do { \
	uint64_t check_a_ = (uint64_t)(a), check_b_ = (uint64_t)(b); \
	if (check_a_ == check_b_) { check_passed++; } else { check_failed++; \
		fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%" PRIu64 " != %" PRIu64 ")\n", \
			__FILE__, __LINE__, #a, #b, check_a_, check_b_); } \
} while (0)

#define CHECK_STR(a, b) do { \
	const char *check_a_ = (a), *check_b_ = (b); \
	if (check_a_ && check_b_ && strcmp(check_a_, check_b_) == 0) { check_passed++; } \
	else { check_failed++; fprintf(stderr, "%s:%d: CHECK failed: %s == \"%s\" (got \"%s\")\n", \
		__FILE__, __LINE__, #a, check_b_ ? check_b_ : "(null)", check_a_ ? check_a_ : "(null)"); } \
} while (0)

#define CHECK_MEM(a, alen, b, blen) do { \
	size_t check_al_ = (alen), check_bl_ = (blen); \
	if (check_al_ == check_bl_ && memcmp((a), (b), check_al_) == 0) { check_passed++; } \
	else { check_failed++; fprintf(stderr, "%s:%d: CHECK failed: %s equals %s (%zu vs %zu bytes)\n", \
		__FILE__, __LINE__, #a, #b, check_al_, check_bl_); } \
} while (0)

static inline int check_done(void)
{
	printf("%u passed, %u failed\n", check_passed, check_failed);
	return check_failed ? 1 : 0;
}

#endif
