/* Unit tests for the on-disk cache of compiled Hyperscan databases
 * (engine/match.c, "on-disk cache"): a cold build writes one file per
 * database, a warm build reads them all and scans exactly like a compiled
 * set, a changed rule misses only its own database, damaged files are
 * counted misses that get rewritten, stale files are pruned, an unusable
 * directory never fails the build, and the default directory follows
 * BW_CACHE_DIR / XDG_CACHE_HOME / HOME. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "match.h"
#include "score.h"

/* Several classes and kinds: header keys, body (exact, prefilter, PCRE2
 * only), rawbody, full, uri, mimeheader. No two databases hold the same
 * patterns, so each database has its own key (and file). */
static const char rules_a[] =
	"header  H_SUBJ      Subject =~ /\\bfree money\\b/i\n"
	"header  H_SUBJ2     Subject =~ /^re:/i\n"
	"header  H_FROM      From:addr =~ /\\@example\\.com$/\n"
	"header  H_XM        X-Mailer !~ /Outlook/\n"
	"body    B_PILLS     /cheap pills/\n"
	"body    B_MULTI     /pills/\n"
	"tflags  B_MULTI     multiple maxhits=3\n"
	"body    B_BACKREF   /(ab)\\1/\n"
	"body    B_COND      /\\Gfoo/\n"
	"rawbody R_BOLD      /<b>cheap/\n"
	"full    F_SUBJ      /^Subject: /m\n"
	"uri     U_BITLY     m{^https?://bit\\.ly/}i\n"
	"mimeheader M_ZIP    Content-Type =~ /application\\/zip/\n"
	"meta    META_1      B_PILLS && U_BITLY\n"
	"score   META_1      4\n"
	"score   B_PILLS     2.5\n"
	"action  tag 5\n";

/* rules_a with one body regex changed */
static const char rules_b[] =
	"header  H_SUBJ      Subject =~ /\\bfree money\\b/i\n"
	"header  H_SUBJ2     Subject =~ /^re:/i\n"
	"header  H_FROM      From:addr =~ /\\@example\\.com$/\n"
	"header  H_XM        X-Mailer !~ /Outlook/\n"
	"body    B_PILLS     /cheap (?:pills|meds)/\n"
	"body    B_MULTI     /pills/\n"
	"tflags  B_MULTI     multiple maxhits=3\n"
	"body    B_BACKREF   /(ab)\\1/\n"
	"body    B_COND      /\\Gfoo/\n"
	"rawbody R_BOLD      /<b>cheap/\n"
	"full    F_SUBJ      /^Subject: /m\n"
	"uri     U_BITLY     m{^https?://bit\\.ly/}i\n"
	"mimeheader M_ZIP    Content-Type =~ /application\\/zip/\n"
	"meta    META_1      B_PILLS && U_BITLY\n"
	"score   META_1      4\n"
	"score   B_PILLS     2.5\n"
	"action  tag 5\n";

#define HDR(n, v) { n, sizeof(n) - 1, v, sizeof(v) - 1, v, sizeof(v) - 1, 0 }

static const struct match_header sample_headers[] = {
	HDR("Received", "from a by b"),
	HDR("Subject", "Re: free money for you"),
	HDR("From", "Joe <joe@example.com>"),
	HDR("X-Mailer", "Mutt"),
};
static const struct match_text sample_body[] = {
	{ "Re: free money for you", 22 },
	{ "Buy cheap pills here, pills pills pills. abab foo", 49 },
};
static const struct match_text sample_raw[] = { { "<b>cheap</b> pills", 18 } };
static const struct match_text sample_uris[] = { { "https://BIT.LY/x", 16 } };
static const struct match_header sample_mime[] = { HDR("Content-Type", "application/zip") };
static const char sample_full[] = "Received: from a by b\nSubject: Re: free money for you\n\nbody\n";

static const struct match_msg sample = {
	.headers = sample_headers, .nheaders = 4,
	.mime_headers = sample_mime, .nmime_headers = 1,
	.body = sample_body, .nbody = 2, .body_starts_with_subject = true,
	.rawbody = sample_raw, .nrawbody = 1,
	.full = sample_full, .full_len = sizeof(sample_full) - 1,
	.uris = sample_uris, .nuris = 1,
};

/* One build and the scan of the sample message. */
struct run {
	struct rule_set *rs;
	struct match_set *ms;
	struct match_counts c;
	uint32_t *count;        /* hits per rule id (copy) */
	uint32_t nrules;
	double score;
};

static bool run_build(struct run *r, const char *text, const char *cache_dir)
{
	struct match_build_opts o = { .nthreads = 2, .cache_dir = cache_dir };
	struct match_scratch *s;
	struct match_hits *h;
	char err[256] = "";

	memset(r, 0, sizeof(*r));
	r->rs = rule_set_new();
	CHECK(r->rs != NULL);
	if (!r->rs)
		return false;
	CHECK_EQ_U64(rules_load_text(r->rs, "cache.cf", text, strlen(text)), 0);
	CHECK_EQ_U64(rules_finish(r->rs), 0);
	CHECK_EQ_U64(r->rs->nerrors, 0);
	r->ms = match_set_build(r->rs, &o, err, sizeof(err));
	if (!r->ms)
		fprintf(stderr, "build failed: %s\n", err);
	CHECK(r->ms != NULL);
	if (!r->ms)
		return false;
	r->c = *match_set_counts(r->ms);
	s = match_scratch_new(r->ms);
	h = match_hits_new(r->ms);
	CHECK(s != NULL && h != NULL);
	if (s && h) {
		CHECK_EQ_U64(match_scan_msg(r->ms, s, &sample, h), 0);
		/* the full rules' streaming databases, fed the raw message */
		CHECK_EQ_U64(match_scan_full(r->ms, s, sample.full, sample.full_len, h), 0);
		score_hits(r->rs, h);
		r->nrules = h->nrules;
		r->count = malloc(h->nrules * sizeof(uint32_t) + 1);
		if (r->count)
			memcpy(r->count, h->count, h->nrules * sizeof(uint32_t));
		r->score = h->score;
	}
	match_hits_free(h);
	match_scratch_free(s);
	return r->count != NULL;
}

static void run_free(struct run *r)
{
	free(r->count);
	match_set_free(r->ms);
	rule_set_free(r->rs);
	memset(r, 0, sizeof(*r));
}

/* Same kinds, Hyperscan flags, hits and score in both runs. */
static void check_same(const struct run *a, const struct run *b)
{
	uint32_t diff_kind = 0, diff_hits = 0;

	CHECK_EQ_U64(a->nrules, b->nrules);
	if (a->nrules != b->nrules || !a->count || !b->count)
		return;
	for (uint32_t i = 0; i < a->nrules; i++) {
		diff_kind += match_rule_kind(a->ms, i) != match_rule_kind(b->ms, i) ||
			     match_rule_hs_flags(a->ms, i) != match_rule_hs_flags(b->ms, i);
		diff_hits += a->count[i] != b->count[i];
	}
	CHECK_EQ_U64(diff_kind, 0);
	CHECK_EQ_U64(diff_hits, 0);
	CHECK(a->score == b->score);
	CHECK_EQ_U64(a->c.databases, b->c.databases);
	CHECK_EQ_U64(a->c.kinds[MATCH_KIND_EXACT], b->c.kinds[MATCH_KIND_EXACT]);
	CHECK_EQ_U64(a->c.kinds[MATCH_KIND_PREFILTER], b->c.kinds[MATCH_KIND_PREFILTER]);
	CHECK_EQ_U64(a->c.kinds[MATCH_KIND_PCRE], b->c.kinds[MATCH_KIND_PCRE]);
}

static uint32_t hits_of(const struct run *r, const char *name)
{
	int32_t id = rules_find(r->rs, name);

	return id < 0 || !r->count ? UINT32_MAX : r->count[id];
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names of the *.hsdb files in dir, sorted, into names (each malloc'd).
 * Returns how many. */
static unsigned list_cache(const char *dir, char **names, unsigned max)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	unsigned n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);

		if (len > 5 && strcmp(de->d_name + len - 5, ".hsdb") == 0 && n < max)
			names[n++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(names[0]), cmp_str);
	return n;
}

static void free_names(char **names, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		free(names[i]);
}

static unsigned count_cache(const char *dir)
{
	char *names[256];
	unsigned n = list_cache(dir, names, 256);

	free_names(names, n);
	return n;
}

static void path_of(char *out, size_t len, const char *dir, const char *name)
{
	snprintf(out, len, "%s/%s", dir, name);
}

static bool file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static void set_age(const char *path, time_t age)
{
	struct timespec ts[2];

	ts[0].tv_sec = ts[1].tv_sec = time(NULL) - age;
	ts[0].tv_nsec = ts[1].tv_nsec = 0;
	CHECK_EQ_U64(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static time_t mtime_of(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_mtime : 0;
}

static char tmpdir[64];

/* The mode is part of the key: the same pattern as a body rule (block mode)
 * and as a full rule (stream mode) are two databases, two files; a warm
 * streaming database streams. */
static void test_stream_mode_key(void)
{
	char dir[256];
	struct run blk, strm, warm;
	struct match_scratch *s;
	struct match_hits *h;

	snprintf(dir, sizeof(dir), "%s/mode", tmpdir);
	if (!run_build(&blk, "body X /abc[de]f/\n", dir))
		goto out_blk;
	CHECK_EQ_U64(blk.c.cache_writes, 1);
	if (!run_build(&strm, "full X /abc[de]f/\n", dir))
		goto out_strm;
	CHECK_EQ_U64(strm.c.cache_hits, 0);
	CHECK_EQ_U64(strm.c.cache_misses, 1);
	CHECK_EQ_U64(strm.c.cache_invalid, 0);
	CHECK_EQ_U64(count_cache(dir), 2);
	CHECK_EQ_U64(match_set_full(strm.ms)->stream_dbs, 1);
	if (!run_build(&warm, "full X /abc[de]f/\n", dir))
		goto out_warm;
	CHECK_EQ_U64(warm.c.cache_hits, 1);
	CHECK_EQ_U64(warm.c.cache_misses, 0);
	s = match_scratch_new(warm.ms);
	h = match_hits_new(warm.ms);
	CHECK(s && h);
	if (s && h) {
		struct match_stream *st = match_stream_open(warm.ms);

		CHECK(st != NULL);
		CHECK_EQ_U64(match_stream_feed(warm.ms, s, st, "xxab", 4), 0);
		CHECK_EQ_U64(match_stream_feed(warm.ms, s, st, "cef", 3), 0);
		CHECK_EQ_U64(match_stream_close(warm.ms, s, st, NULL, 0, h), 0);
		CHECK_EQ_U64(h->count[rules_find(warm.rs, "X")], 1);
		match_stream_free(st);
	}
	match_hits_free(h);
	match_scratch_free(s);
out_warm:
	run_free(&warm);
out_strm:
	run_free(&strm);
out_blk:
	run_free(&blk);
}

/* Cold, warm, and one changed rule. */
static void test_cold_warm_changed(void)
{
	char dir[256];
	struct run cold, warm, changed, back;
	struct stat st;

	/* the cache directory does not exist yet: created, 0700 */
	snprintf(dir, sizeof(dir), "%s/cwc/sub/dir", tmpdir);
	if (!run_build(&cold, rules_a, dir))
		goto out_cold;
	CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode));
	CHECK_EQ_U64(st.st_mode & 0777, 0700);
	CHECK(cold.c.databases >= 7);
	CHECK_EQ_U64(cold.c.cache_misses, cold.c.databases);
	CHECK_EQ_U64(cold.c.cache_writes, cold.c.databases);
	CHECK_EQ_U64(cold.c.cache_hits, 0);
	CHECK_EQ_U64(cold.c.cache_invalid, 0);
	CHECK_EQ_U64(cold.c.cache_errors, 0);
	CHECK_EQ_U64(count_cache(dir), cold.c.databases);
	/* the sample message hits what it should (so "identical" means something) */
	CHECK_EQ_U64(hits_of(&cold, "H_SUBJ"), 1);
	CHECK_EQ_U64(hits_of(&cold, "B_PILLS"), 1);
	CHECK_EQ_U64(hits_of(&cold, "B_MULTI"), 3);
	CHECK_EQ_U64(hits_of(&cold, "B_BACKREF"), 1);
	CHECK_EQ_U64(hits_of(&cold, "U_BITLY"), 1);
	CHECK_EQ_U64(hits_of(&cold, "M_ZIP"), 1);
	CHECK_EQ_U64(hits_of(&cold, "F_SUBJ"), 1);
	CHECK_EQ_U64(hits_of(&cold, "META_1"), 1);
	CHECK_EQ_U64(match_rule_kind(cold.ms, (uint32_t)rules_find(cold.rs, "B_BACKREF")),
		     MATCH_KIND_PREFILTER);
	CHECK_EQ_U64(match_rule_kind(cold.ms, (uint32_t)rules_find(cold.rs, "B_COND")),
		     MATCH_KIND_PCRE);

	if (!run_build(&warm, rules_a, dir))
		goto out_warm;
	CHECK_EQ_U64(warm.c.cache_hits, cold.c.databases);
	CHECK_EQ_U64(warm.c.cache_misses, 0);
	CHECK_EQ_U64(warm.c.cache_writes, 0);
	CHECK_EQ_U64(warm.c.cache_errors, 0);
	CHECK_EQ_U64(warm.c.db_bytes, cold.c.db_bytes);
	check_same(&cold, &warm);

	/* one body regex changed: its database misses, the others hit */
	if (!run_build(&changed, rules_b, dir))
		goto out_changed;
	CHECK_EQ_U64(changed.c.databases, cold.c.databases);
	CHECK_EQ_U64(changed.c.cache_misses, 1);
	CHECK_EQ_U64(changed.c.cache_writes, 1);
	CHECK_EQ_U64(changed.c.cache_hits, cold.c.databases - 1);
	CHECK_EQ_U64(count_cache(dir), cold.c.databases + 1);
	CHECK_EQ_U64(hits_of(&changed, "B_PILLS"), 1);

	/* and back: everything still there */
	if (run_build(&back, rules_a, dir)) {
		CHECK_EQ_U64(back.c.cache_hits, cold.c.databases);
		CHECK_EQ_U64(back.c.cache_misses, 0);
		check_same(&cold, &back);
	}
	run_free(&back);
	run_build(&back, rules_a, NULL);        /* and the same without a cache */
	CHECK_EQ_U64(back.c.cache_hits + back.c.cache_misses + back.c.cache_writes +
		     back.c.cache_errors, 0);
	check_same(&cold, &back);
	run_free(&back);
out_changed:
	run_free(&changed);
out_warm:
	run_free(&warm);
out_cold:
	run_free(&cold);
}

/* Offsets in the file header (match.c's struct cache_hdr). */
#define HDR_VERSION_OFF 8
#define HDR_SIZE        96

static void write_bytes(const char *path, const void *p, size_t len, bool truncate)
{
	int fd = open(path, O_WRONLY | (truncate ? O_TRUNC : 0));

	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK_EQ_U64(write(fd, p, len), len);
	close(fd);
}

static void patch_at(const char *path, off_t off, uint8_t xor_with)
{
	int fd = open(path, O_RDWR);
	uint8_t b = 0;

	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK_EQ_U64(pread(fd, &b, 1, off), 1);
	b ^= xor_with;
	CHECK_EQ_U64(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

static size_t read_whole(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, buf, cap);
	close(fd);
	return n > 0 ? (size_t)n : 0;
}

/* Damaged files: each a counted miss (invalid), recompiled and rewritten;
 * the build and its results never change. */
static void test_damaged(void)
{
	char dir[256], p[512], *names[256];
	static char other[1 << 20];
	struct run cold, bad, again;
	unsigned n, damaged = 0;
	uint32_t v = 99;
	size_t olen;
	struct stat st;

	snprintf(dir, sizeof(dir), "%s/damaged", tmpdir);
	if (!run_build(&cold, rules_a, dir))
		goto out_cold;
	n = list_cache(dir, names, 256);
	CHECK(n >= 7);
	if (n < 7)
		goto out_names;
	/* 0: shorter than a header */
	path_of(p, sizeof(p), dir, names[0]);
	CHECK_EQ_U64(truncate(p, 50), 0);
	damaged++;
	/* 1: last byte cut off */
	path_of(p, sizeof(p), dir, names[1]);
	CHECK(stat(p, &st) == 0);
	CHECK_EQ_U64(truncate(p, st.st_size - 1), 0);
	damaged++;
	/* 2: a future format version */
	path_of(p, sizeof(p), dir, names[2]);
	{
		int fd = open(p, O_WRONLY);

		CHECK(fd >= 0 && pwrite(fd, &v, sizeof(v), HDR_VERSION_OFF) == sizeof(v));
		if (fd >= 0)
			close(fd);
	}
	damaged++;
	/* 3: one bit flipped in the serialized database */
	path_of(p, sizeof(p), dir, names[3]);
	CHECK(stat(p, &st) == 0);
	patch_at(p, st.st_size - 20, 0x01);
	damaged++;
	/* 4: empty */
	path_of(p, sizeof(p), dir, names[4]);
	CHECK_EQ_U64(truncate(p, 0), 0);
	damaged++;
	/* 5: another database's (valid) file under this key's name */
	path_of(p, sizeof(p), dir, names[6]);
	olen = read_whole(p, other, sizeof(other));
	CHECK(olen > HDR_SIZE);
	path_of(p, sizeof(p), dir, names[5]);
	write_bytes(p, other, olen, true);
	damaged++;
	/* 6: a huge length in the header, the rest intact */
	path_of(p, sizeof(p), dir, names[6]);
	{
		uint64_t huge = UINT64_MAX - 5;
		int fd = open(p, O_WRONLY);

		CHECK(fd >= 0 && pwrite(fd, &huge, sizeof(huge), HDR_SIZE - 8) == sizeof(huge));
		if (fd >= 0)
			close(fd);
	}
	damaged++;

	if (run_build(&bad, rules_a, dir)) {
		CHECK_EQ_U64(bad.c.cache_misses, damaged);
		CHECK_EQ_U64(bad.c.cache_invalid, damaged);
		CHECK_EQ_U64(bad.c.cache_writes, damaged);
		CHECK_EQ_U64(bad.c.cache_hits, cold.c.databases - damaged);
		CHECK_EQ_U64(bad.c.cache_errors, 0);
		check_same(&cold, &bad);
	}
	run_free(&bad);
	/* rewritten: all hit now */
	if (run_build(&again, rules_a, dir)) {
		CHECK_EQ_U64(again.c.cache_hits, cold.c.databases);
		CHECK_EQ_U64(again.c.cache_misses, 0);
		check_same(&cold, &again);
	}
	run_free(&again);
out_names:
	free_names(names, n);
out_cold:
	run_free(&cold);
}

/* Stale files go after a build that wrote; files in use are kept because a
 * hit refreshes their mtime; other files are left alone. */
static void test_prune(void)
{
	char dir[256], p[512], stale[512], tmp[512], other[512];
	char *names[256];
	struct run r;
	unsigned n;
	const char *key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

	snprintf(dir, sizeof(dir), "%s/prune", tmpdir);
	if (!run_build(&r, rules_a, dir)) {
		run_free(&r);
		return;
	}
	run_free(&r);
	n = list_cache(dir, names, 256);
	CHECK(n > 0);
	if (n == 0)
		return;
	path_of(p, sizeof(p), dir, names[0]);
	snprintf(stale, sizeof(stale), "%s/%s.hsdb", dir, key);
	snprintf(tmp, sizeof(tmp), "%s/.%s.Ab12Cd", dir, key);
	snprintf(other, sizeof(other), "%s/README", dir);
	{
		FILE *f;

		f = fopen(stale, "w");
		CHECK(f != NULL);
		if (f)
			fclose(f);
		f = fopen(tmp, "w");
		CHECK(f != NULL);
		if (f)
			fclose(f);
		f = fopen(other, "w");
		CHECK(f != NULL);
		if (f)
			fclose(f);
	}
	set_age(stale, 40 * 86400);
	set_age(tmp, 2 * 86400);
	set_age(other, 400 * 86400);
	set_age(p, 40 * 86400);          /* old, but about to be used */
	/* all hits: nothing written, nothing pruned, the used file refreshed */
	if (run_build(&r, rules_a, dir)) {
		CHECK_EQ_U64(r.c.cache_misses, 0);
		CHECK_EQ_U64(r.c.cache_pruned, 0);
	}
	run_free(&r);
	CHECK(file_exists(stale));
	CHECK(time(NULL) - mtime_of(p) < 3600);
	/* a write: the pass runs */
	if (run_build(&r, rules_b, dir)) {
		CHECK_EQ_U64(r.c.cache_writes, 1);
		CHECK_EQ_U64(r.c.cache_pruned, 2);
	}
	run_free(&r);
	CHECK(!file_exists(stale));
	CHECK(!file_exists(tmp));
	CHECK(file_exists(other));
	CHECK(file_exists(p));
	free_names(names, n);
}

/* A cache directory that cannot be created or written never fails the
 * build: one warning, one error counted. */
static void test_unusable_dir(void)
{
	char file[256], dir[512];
	struct run r;
	FILE *f;

	snprintf(file, sizeof(file), "%s/a-file", tmpdir);
	f = fopen(file, "w");
	CHECK(f != NULL);
	if (f)
		fclose(f);
	snprintf(dir, sizeof(dir), "%s/sub", file);          /* parent is a file */
	if (run_build(&r, rules_a, dir)) {
		CHECK_EQ_U64(r.c.cache_errors, 1);
		CHECK_EQ_U64(r.c.cache_hits + r.c.cache_misses + r.c.cache_writes, 0);
		CHECK_EQ_U64(hits_of(&r, "B_PILLS"), 1);
	}
	run_free(&r);
	/* the file itself as the directory */
	if (run_build(&r, rules_a, file)) {
		CHECK_EQ_U64(r.c.cache_errors, 1);
		CHECK_EQ_U64(r.c.cache_writes, 0);
	}
	run_free(&r);
	/* a name longer than NAME_MAX cannot be created: off, counted */
	{
		char longdir[512];
		int n = snprintf(longdir, sizeof(longdir), "%s/", tmpdir);

		memset(longdir + n, 'x', 300);
		longdir[n + 300] = '\0';
		if (run_build(&r, rules_a, longdir))
			CHECK_EQ_U64(r.c.cache_errors, 1);
		run_free(&r);
	}
	/* read-only directory: still read, never written (root writes anyway) */
	if (geteuid() != 0) {
		snprintf(dir, sizeof(dir), "%s/readonly", tmpdir);
		if (run_build(&r, rules_a, dir))
			CHECK_EQ_U64(r.c.cache_writes, r.c.databases);
		run_free(&r);
		CHECK_EQ_U64(chmod(dir, 0500), 0);
		if (run_build(&r, rules_b, dir)) {
			CHECK_EQ_U64(r.c.cache_errors, 1);
			CHECK_EQ_U64(r.c.cache_writes, 0);
			CHECK_EQ_U64(r.c.cache_misses, 1);
			CHECK_EQ_U64(r.c.cache_hits, r.c.databases - 1);
		}
		run_free(&r);
		CHECK_EQ_U64(chmod(dir, 0700), 0);
	}
}

struct dcase {
	const char *bw, *xdg, *home;
	const char *want;
};

static const struct dcase dcases[] = {
	{ "/srv/bw", "/x", "/h", "/srv/bw" },
	{ "", "/x", "/h", "/x/breakwater" },
	{ NULL, "/x", "/h", "/x/breakwater" },
	{ NULL, "relative", "/h", "/h/.cache/breakwater" },  /* XDG: relative is invalid */
	{ NULL, "", "/h", "/h/.cache/breakwater" },
	{ NULL, NULL, "/h", "/h/.cache/breakwater" },
	{ NULL, NULL, NULL, "/var/cache/breakwater" },
	{ NULL, NULL, "", "/var/cache/breakwater" },
};

static void set_or_unset(const char *name, const char *v)
{
	if (v)
		setenv(name, v, 1);
	else
		unsetenv(name);
}

static void test_default_dir(void)
{
	char buf[PATH_MAX], small[8];
	char *saved[3];
	static const char *const vars[3] = { "BW_CACHE_DIR", "XDG_CACHE_HOME", "HOME" };

	for (int i = 0; i < 3; i++) {
		const char *v = getenv(vars[i]);

		saved[i] = v ? strdup(v) : NULL;
	}
	for (size_t i = 0; i < sizeof(dcases) / sizeof(dcases[0]); i++) {
		set_or_unset("BW_CACHE_DIR", dcases[i].bw);
		set_or_unset("XDG_CACHE_HOME", dcases[i].xdg);
		set_or_unset("HOME", dcases[i].home);
		CHECK_EQ_U64(match_cache_default_dir(buf, sizeof(buf)), 0);
		CHECK_STR(buf, dcases[i].want);
	}
	setenv("BW_CACHE_DIR", "/a/long/directory", 1);
	CHECK_EQ_U64(match_cache_default_dir(small, sizeof(small)), (uint64_t)-ENAMETOOLONG);
	for (int i = 0; i < 3; i++) {
		set_or_unset(vars[i], saved[i]);
		free(saved[i]);
	}
}

static void rm_rf(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	char p[PATH_MAX];

	if (!d) {
		unlink(path);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
		rm_rf(p);
	}
	closedir(d);
	rmdir(path);
}

int main(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/bw-test-cache-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	test_cold_warm_changed();
	test_stream_mode_key();
	test_damaged();
	test_prune();
	test_unusable_dir();
	test_default_dir();
	rm_rf(tmpdir);
	return check_done();
}
