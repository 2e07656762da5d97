/* Compatibility: Debian's stock SpamAssassin rules (/usr/share/spamassassin,
 * package spamassassin) load without errors and compile; prints the counts
 * and the compile time. Exit 77 (skip) when the package is absent, and under
 * sanitizers, whose allocator makes Hyperscan's compile take minutes. */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "match.h"
#include "score.h"

#define STOCK_DIR "/usr/share/spamassassin"

#if defined(__SANITIZE_ADDRESS__)
#define BW_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BW_SANITIZED 1
#endif
#endif

int main(void)
{
	struct rule_set *rs;
	struct match_set *ms;
	struct match_build_opts o = { .nthreads = 0 };
	char err[512] = "";
	const struct match_counts *c;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

#ifdef BW_SANITIZED
	printf("SKIP: the stock-rule compile is too slow under sanitizers\n");
	return 77;
#endif
	if (access(STOCK_DIR "/50_scores.cf", R_OK) != 0) {
		printf("SKIP: %s absent (apt-get install spamassassin)\n", STOCK_DIR);
		return 77;
	}
	o.nthreads = ncpu > 1 ? (unsigned)(ncpu > 16 ? 16 : ncpu) : 1;
	rs = rule_set_new();
	CHECK_EQ_U64(rules_load_path(rs, STOCK_DIR), 0);
	CHECK_EQ_U64(rules_finish(rs), 0);
	CHECK_EQ_U64(rs->nerrors, 0);
	CHECK_EQ_U64(rule_set_validate(rs), 0);
	ms = match_set_build(rs, &o, err, sizeof(err));
	if (!ms)
		fprintf(stderr, "compile failed: %s\n", err);
	CHECK(ms != NULL);
	rules_print_counts(rs, stdout);
	CHECK_EQ_U64(rs->nerrors, 0);   /* compile adds none either */
	for (uint32_t i = 0; i < rs->nerrors; i++)
		fprintf(stderr, "%s:%u: %s\n", rs->errors[i].file, rs->errors[i].line, rs->errors[i].reason);
	if (ms) {
		struct match_scratch *s = match_scratch_new(ms);
		struct match_hits *h = match_hits_new(ms);
		static const struct match_header hs[] = {
			{ "Subject", 7, "Cheap V1AGRA, act now!", 22, "Cheap V1AGRA, act now!", 22, 0 },
			{ "From", 4, "x@example.com", 13, "x@example.com", 13, 0 },
		};
		static const struct match_text body[] = {
			{ "Cheap V1AGRA, act now!", 22 },
			{ "Dear friend, you have won the lottery. Click here to claim your prize.", 70 },
		};
		struct match_msg msg = { .headers = hs, .nheaders = 2, .body = body, .nbody = 2,
					 .body_starts_with_subject = true };

		c = match_set_counts(ms);
		printf("compiled: exact %lu, prefilter+confirm %lu, pcre2 only %lu, native %lu, meta %lu, "
		       "regex failed %lu\n",
		       (unsigned long)c->kinds[MATCH_KIND_EXACT], (unsigned long)c->kinds[MATCH_KIND_PREFILTER],
		       (unsigned long)c->kinds[MATCH_KIND_PCRE], (unsigned long)c->native,
		       (unsigned long)c->metas, (unsigned long)c->regex_failed);
		printf("databases: %lu (%.1f MiB), compile time %.2f s with %u threads\n",
		       (unsigned long)c->databases, (double)c->db_bytes / 1048576.0, c->compile_seconds,
		       o.nthreads);
		CHECK(c->kinds[MATCH_KIND_EXACT] > 1000);
		CHECK(s != NULL && h != NULL);
		if (s && h) {
			CHECK_EQ_U64(match_scan_msg(ms, s, &msg, h), 0);
			score_hits(rs, h);
			printf("sample: score %.2f action %s, %u hits:", h->score, h->action, h->nlist);
			for (uint32_t i = 0; i < h->nlist; i++)
				if (rs->rules[h->list[i]].scored)
					printf(" %s", rs->rules[h->list[i]].name);
			printf("\n");
			CHECK(h->nlist > 0);
		}
		match_hits_free(h);
		match_scratch_free(s);
	}
	match_set_free(ms);
	rule_set_free(rs);
	return check_done();
}
