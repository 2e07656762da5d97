/* match: compile rules into per-class Hyperscan databases, scan.
 * See match.h for the data layout and docs/rules.md for the semantics.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "match.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hs/hs.h>
#include <openssl/evp.h>
#include <pcre2.h>

#include "mem.h"

#define NONE UINT32_MAX

/* Hyperscan's multi-pattern compile grows much faster than linearly on
 * SpamAssassin's regexes (one body database of 500 took minutes; chunks of
 * 64 take seconds in all) and scanning shows no multi-pattern benefit for
 * them, so a class is split into databases of at most this many patterns.
 * Chunks also spread the compile over threads. */
#define MATCH_CHUNK_EXACT       64
#define MATCH_CHUNK_PREFILTER   16
/* Prefilter compiles of long patterns (SpamAssassin's FUZZY_* lookaheads over
 * byte alternations, 419 address lists) take seconds each and give huge
 * databases: above this length a pattern Hyperscan rejects goes to PCRE2
 * alone. */
#define MATCH_PREFILTER_MAX_LEN 256
/* Likewise for patterns Hyperscan accepts: the few very long ones (ReplaceTags
 * expansions of __FILL_THIS_FORM_*, 1-3 KB) cost 3-30 s each to compile. When
 * PCRE2 takes them they run there; otherwise Hyperscan still gets them. */
#define MATCH_HS_MAX_LEN        1000

struct match_entry {
	uint32_t rule;
	enum match_kind kind;
	unsigned hs_flags;
	bool negate;
	bool dead;              /* neither engine could take it: never hits */
	bool multiple;          /* count every non-overlapping match */
	bool nosubject;
	uint32_t maxhits;       /* 0 = unlimited */
	uint32_t absent_count;  /* header classes: matches when the field is unset
				 * (mimeheader: in a part without it) */
	pcre2_code *re;         /* confirm / PCRE-only / counting; else NULL */
	char *hs_pattern;       /* pattern as given to Hyperscan (MEM_RULES) */
};

/* One field class: a header key, a MIME-header key, body, rawbody, full or
 * uri. Entry i is Hyperscan expression id i. */
struct match_db {
	enum match_class cls;
	const char *field;      /* header name (borrowed from the rule set) */
	unsigned mods;          /* RULE_HDR_* extraction bits */
	bool isolated;          /* one costly pattern alone (see costly_repeat) */
	bool stream;            /* HS_MODE_STREAM: the full class's exact rules, fed
				 * the raw message as it arrives (match_stream_*) */
	bool prefilter;         /* holds prefilter (and PCRE-only) entries: kept
				 * apart because prefilter patterns are costly to
				 * compile together with exact ones */
	hs_database_t *hs;      /* NULL when every entry is PCRE only */
	struct match_entry *e;
	uint32_t n, cap;
	uint32_t *always;       /* entries checked after every text: PCRE only */
	uint32_t nalways;
	uint32_t *neg;          /* negated entries */
	uint32_t nneg;
	double compile_s;
	char hs_error[160];
	int hs_error_expr;      /* -1: whole-database failure */
	/* on-disk cache: set by the compile worker, summed by the builder */
	uint8_t cache_key[32];
	uint8_t cache_res;      /* enum cache_res bits */
};

struct match_set {
	struct rule_set *rules;
	struct match_db *dbs;
	uint32_t ndbs, cap_dbs;
	uint32_t *native;       /* rule ids of exists / count / eval tests */
	uint32_t nnative;
	uint32_t *rule_db;      /* per rule id: db index or NONE */
	uint32_t *rule_entry;   /* per rule id: entry index */
	uint32_t max_entries;
	hs_scratch_t *proto_scratch;    /* allocated for every db; cloned per lcore */
	pcre2_general_context *gctx;
	struct match_counts counts;
	/* streaming databases (full rules): indices into dbs and, per one,
	 * the offset of its entries in a stream's mark array */
	uint32_t *sdb;
	uint32_t *sdb_off;
	struct match_full_info full;
};

/* A message in flight through the streaming databases: one Hyperscan
 * stream per database and a mark per entry, in one MEM_MATCH block (the
 * Hyperscan stream states come from mem.h too: stream_alloc). */
struct match_stream {
	const struct match_set *ms;
	uint32_t n;             /* streams (= ms->full.stream_dbs) */
	bool failed;            /* a Hyperscan call failed: no more scanning */
	bool closed;
	size_t size;            /* bytes held, stream states included */
	hs_stream_t **hs;       /* per streaming database; NULL: none (all PCRE) */
	uint8_t *mark;          /* per entry: Hyperscan reported it */
};

struct match_scratch {
	const struct match_set *ms;
	hs_scratch_t *hs;
	pcre2_general_context *gctx;
	pcre2_match_context *mctx;
	pcre2_match_data *md;
	/* per text: entries Hyperscan reported */
	uint32_t *mark_gen;
	uint32_t *marked;
	uint32_t nmarked, gen;
	/* per database pass: hit counts accumulated over texts */
	uint32_t *acc;
	uint32_t *acc_gen;
	uint32_t *acc_list;
	uint32_t nacc, agen;
	bool first_wins;            /* the pass keeps each entry's first text's count */
	/* field text assembly */
	char *buf;
	size_t buflen, bufcap;
	bool buf_oom;
	struct match_scan_stats st;
};

/* ------------------------------------------------------------------ */
/* allocation glue: PCRE2 allocates through mem.h                       */

static void *pcre_alloc_rules(size_t n, void *ud)
{
	(void)ud;
	return mem_alloc(MEM_RULES, n);
}

static void pcre_free_rules(void *p, void *ud)
{
	(void)ud;
	mem_free(MEM_RULES, p);
}

static void *pcre_alloc_match(size_t n, void *ud)
{
	(void)ud;
	return mem_alloc(MEM_MATCH, n);
}

static void pcre_free_match(void *p, void *ud)
{
	(void)ud;
	mem_free(MEM_MATCH, p);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ */
/* flags                                                                */

unsigned match_hs_flags(unsigned re_flags, unsigned tflags)
{
	unsigned f = HS_FLAG_ALLOWEMPTY;   /* Perl: a regex that matches "" matches */

	if (re_flags & RULE_RE_CASELESS)
		f |= HS_FLAG_CASELESS;
	if (re_flags & RULE_RE_MULTILINE)
		f |= HS_FLAG_MULTILINE;
	if (re_flags & RULE_RE_DOTALL)
		f |= HS_FLAG_DOTALL;
	if (!(tflags & RULE_TF_MULTIPLE))
		f |= HS_FLAG_SINGLEMATCH;
	return f;
}

static uint32_t pcre_options(unsigned re_flags)
{
	uint32_t o = 0;

	if (re_flags & RULE_RE_CASELESS)
		o |= PCRE2_CASELESS;
	if (re_flags & RULE_RE_MULTILINE)
		o |= PCRE2_MULTILINE;
	if (re_flags & RULE_RE_DOTALL)
		o |= PCRE2_DOTALL;
	if (re_flags & RULE_RE_EXTENDED)
		o |= PCRE2_EXTENDED;
	return o;
}

/* ------------------------------------------------------------------ */
/* building                                                             */

static enum match_class class_of(enum rule_type t)
{
	switch (t) {
	case RULE_TYPE_HEADER: return MATCH_CLASS_HEADER;
	case RULE_TYPE_MIMEHEADER: return MATCH_CLASS_MIMEHEADER;
	case RULE_TYPE_BODY: return MATCH_CLASS_BODY;
	case RULE_TYPE_RAWBODY: return MATCH_CLASS_RAWBODY;
	case RULE_TYPE_FULL: return MATCH_CLASS_FULL;
	case RULE_TYPE_URI: return MATCH_CLASS_URI;
	default: return MATCH_CLASS_MAX;
	}
}

/* Special header names are case-sensitive in SpamAssassin (ALL, MESSAGEID),
 * ordinary ones are not. */
static bool field_eq(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0 && (strcmp(a, "ALL") == 0) == (strcmp(b, "ALL") == 0) &&
	       (strcmp(a, "MESSAGEID") == 0) == (strcmp(b, "MESSAGEID") == 0);
}

static int32_t db_get(struct match_set *ms, enum match_class cls, const char *field, unsigned mods,
		      bool prefilter, bool isolated)
{
	struct match_db *d;

	for (uint32_t i = 0; i < ms->ndbs && !isolated; i++) {
		d = &ms->dbs[i];
		if (d->cls != cls || d->prefilter != prefilter || d->isolated ||
		    d->n >= (prefilter ? MATCH_CHUNK_PREFILTER : MATCH_CHUNK_EXACT))
			continue;
		if (cls != MATCH_CLASS_HEADER && cls != MATCH_CLASS_MIMEHEADER)
			return (int32_t)i;
		if (d->mods == mods && field_eq(d->field, field))
			return (int32_t)i;
	}
	if (ms->ndbs == ms->cap_dbs) {
		uint32_t cap = ms->cap_dbs ? ms->cap_dbs * 2 : 64;
		struct match_db *nd = mem_realloc(MEM_RULES, ms->dbs, cap * sizeof(*nd));

		if (!nd)
			return -1;
		ms->dbs = nd;
		ms->cap_dbs = cap;
	}
	d = &ms->dbs[ms->ndbs];
	memset(d, 0, sizeof(*d));
	d->cls = cls;
	d->field = field;
	d->mods = mods;
	d->prefilter = prefilter;
	d->isolated = isolated;
	/* the full class's exact rules see the raw message as it arrives;
	 * what needs PCRE2 runs in block mode on the bounded copy */
	d->stream = cls == MATCH_CLASS_FULL && !prefilter;
	d->hs_error_expr = -1;
	return (int32_t)ms->ndbs++;
}

static struct match_entry *entry_add(struct match_db *d)
{
	if (d->n == d->cap) {
		uint32_t cap = d->cap ? d->cap * 2 : 16;
		struct match_entry *ne = mem_realloc(MEM_RULES, d->e, cap * sizeof(*ne));

		if (!ne)
			return NULL;
		d->e = ne;
		d->cap = cap;
	}
	memset(&d->e[d->n], 0, sizeof(d->e[0]));
	return &d->e[d->n++];
}

static pcre2_code *pcre_compile_rule(struct match_set *ms, const struct rule *r, char *err, size_t errlen,
				     int *code)
{
	pcre2_compile_context *cc = pcre2_compile_context_create(ms->gctx);
	pcre2_code *re;
	int ec;
	PCRE2_SIZE eo;

	if (!cc) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	re = pcre2_compile((PCRE2_SPTR)r->pattern, PCRE2_ZERO_TERMINATED, pcre_options(r->re_flags),
			   &ec, &eo, cc);
	pcre2_compile_context_free(cc);
	*code = re ? 0 : ec;
	if (!re) {
		PCRE2_UCHAR msg[120];

		pcre2_get_error_message(ec, msg, sizeof(msg));
		snprintf(err, errlen, "PCRE2: %s at offset %zu", (char *)msg, (size_t)eo);
		return NULL;
	}
	(void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);   /* interpreter if no JIT */
	return re;
}

/* Counts non-overlapping matches of re in text (Perl's /g), up to max
 * (0 = unlimited; 1 answers "does it match"). */
static uint32_t pcre_count(pcre2_code *re, pcre2_match_data *md, pcre2_match_context *mctx,
			   const char *p, size_t len, uint32_t max, struct match_scan_stats *st)
{
	uint32_t n = 0;
	size_t off = 0;

	if (len > MATCH_PCRE_MAX_BYTES) {
		len = MATCH_PCRE_MAX_BYTES;
		if (st)
			st->pcre_truncated++;
	}
	while (off <= len) {
		int rc = pcre2_match(re, (PCRE2_SPTR)(p ? p : ""), len, off, 0, md, mctx);
		PCRE2_SIZE *ov;

		if (st)
			st->pcre_runs++;
		if (rc < 0) {
			if (rc != PCRE2_ERROR_NOMATCH && st)
				st->pcre_limit++;
			break;
		}
		n++;
		if (max && n >= max)
			break;
		ov = pcre2_get_ovector_pointer(md);
		off = ov[1] > ov[0] ? ov[1] : ov[1] + 1;
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* on-disk cache of compiled Hyperscan databases                        */

/* Layout. One file per class database, named by the database's key:
 * <dir>/<64 hex digits>.hsdb. One file per database rather than one per
 * match set, because the key of a database covers only its own entries: an
 * operator who edits one rule recompiles that rule's chunk (a fraction of a
 * second) instead of the whole set (~10 s with the stock rules), and rule
 * sets that share databases (rules/ alone, rules/ plus the stock rules)
 * share files. The price is ~120 small files for the stock rules, which
 * read in milliseconds.
 *
 * key = SHA-256 over a domain string and MATCH_CACHE_VERSION, hs_version(),
 * the platform (hs_populate_platform's tune, cpu_features and reserved
 * words, pointer size, byte order), the mode (HS_MODE_BLOCK, or
 * HS_MODE_STREAM for the full class's streaming databases) and the entry
 * count, then per entry in database order (entry index = Hyperscan id): the
 * index, the kind before compiling, the Hyperscan flags, whether PCRE2 took
 * the regex (it decides compile_db's demotions) and the pattern's length and
 * bytes. Rule names, scores and global rule ids are not in it: renaming or
 * rescoring a rule still hits.
 *
 * file = struct cache_hdr, then one state byte per entry (the kind after
 * compile_db's demotions, plus CACHE_STATE_DEAD), then the bytes of
 * hs_serialize_database. The header's digest is a SHA-256 of everything
 * after the header, so a torn, truncated or bit-flipped file is detected;
 * that is why files are written without fsync: a temp file in the same
 * directory, then rename(2). Reading trusts no length from the file: the
 * header's counts must add up to the file's size, which is capped at
 * MATCH_CACHE_MAX_FILE. Any failed check is a miss (counted, compiled,
 * rewritten), never an error of the build.
 *
 * Growth. Files are written only for keys not present, i.e. when a
 * database's rules, Hyperscan or the CPU changed. A hit refreshes the file's
 * mtime (at most once a day). After a build that wrote files, one pass over
 * the directory (at most MATCH_CACHE_PRUNE_VISIT entries) removes .hsdb
 * files unused for MATCH_CACHE_MAX_AGE_DAYS and temp files older than a
 * day. The cache therefore holds the databases of the rule sets used in the
 * last 30 days: ~14 MiB per version of the stock rules. Operators may empty
 * the directory at any time; the next start recompiles. */
#define MATCH_CACHE_VERSION     1u
#define MATCH_CACHE_KEY_LEN     32u                 /* SHA-256 */
#define MATCH_CACHE_MAX_FILE    (1ull << 30)        /* larger: not ours */
#define MATCH_CACHE_MAX_AGE_DAYS 30
#define MATCH_CACHE_TMP_MAX_AGE (24 * 3600)         /* seconds */
#define MATCH_CACHE_PRUNE_VISIT 16384u              /* entries per pass */
#define MATCH_CACHE_SUFFIX      ".hsdb"
#define CACHE_STATE_DEAD        0x80u

static const char cache_magic[8] = { 'B', 'W', 'H', 'S', 'D', 'B', '\r', '\n' };

struct cache_hdr {
	char magic[8];
	uint32_t version;               /* MATCH_CACHE_VERSION */
	uint32_t hdr_len;               /* sizeof(struct cache_hdr) */
	uint8_t key[MATCH_CACHE_KEY_LEN];
	uint8_t digest[MATCH_CACHE_KEY_LEN];    /* SHA-256 of the rest */
	uint32_t nentries;              /* state bytes that follow */
	uint32_t reserved;
	uint64_t db_len;                /* serialized database bytes */
};
_Static_assert(sizeof(struct cache_hdr) == 96, "cache header has no padding");

/* What happened to one database (bits of match_db.cache_res). */
enum cache_res {
	CACHE_RES_HIT = 1,
	CACHE_RES_MISS = 2,
	CACHE_RES_INVALID = 4,
	CACHE_RES_WRITTEN = 8,
	CACHE_RES_ERROR = 16,
};

/* Shared read-only by the compile workers. */
struct cache_ctx {
	bool on;                        /* look up */
	bool writable;                  /* and store */
	char dir[PATH_MAX - 128];       /* room for "/." key ".XXXXXX" */
	hs_platform_info_t plat;
};

static bool digest_put(EVP_MD_CTX *c, const void *p, size_t n)
{
	return EVP_DigestUpdate(c, p, n) == 1;
}

static bool digest_u64(EVP_MD_CTX *c, uint64_t v)
{
	return digest_put(c, &v, sizeof(v));
}

/* SHA-256 of the two pieces a and b into out. Returns 0 or -EIO. */
static int sha256_2(const void *a, size_t alen, const void *b, size_t blen,
		    uint8_t out[MATCH_CACHE_KEY_LEN])
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	unsigned olen = 0;
	bool ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 && digest_put(c, a, alen) &&
		  digest_put(c, b, blen) && EVP_DigestFinal_ex(c, out, &olen) == 1 &&
		  olen == MATCH_CACHE_KEY_LEN;

	EVP_MD_CTX_free(c);
	return ok ? 0 : -EIO;
}

/* The key of d as it stands before compile_db (see the layout above).
 * Returns 0 or -EIO (the database is then compiled uncached). */
static int cache_key(const struct cache_ctx *cc, struct match_db *d)
{
	static const char domain[] = "breakwater hyperscan database";
	const char *ver = hs_version();
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	unsigned olen = 0;
	bool ok;

	ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
	     digest_put(c, domain, sizeof(domain)) && digest_u64(c, MATCH_CACHE_VERSION) &&
	     digest_u64(c, strlen(ver)) && digest_put(c, ver, strlen(ver)) &&
	     digest_u64(c, cc->plat.tune) && digest_u64(c, cc->plat.cpu_features) &&
	     digest_u64(c, cc->plat.reserved1) && digest_u64(c, cc->plat.reserved2) &&
	     digest_u64(c, sizeof(void *)) && digest_u64(c, 0x0102030405060708ull) &&
	     digest_u64(c, d->stream ? HS_MODE_STREAM : HS_MODE_BLOCK) && digest_u64(c, d->n);
	for (uint32_t i = 0; ok && i < d->n; i++) {
		const struct match_entry *e = &d->e[i];
		size_t len = e->hs_pattern ? strlen(e->hs_pattern) : 0;

		ok = digest_u64(c, i) && digest_u64(c, e->kind) && digest_u64(c, e->hs_flags) &&
		     digest_u64(c, e->re != NULL) && digest_u64(c, len) &&
		     digest_put(c, e->hs_pattern ? e->hs_pattern : "", len);
	}
	ok = ok && EVP_DigestFinal_ex(c, d->cache_key, &olen) == 1 && olen == MATCH_CACHE_KEY_LEN;
	EVP_MD_CTX_free(c);
	return ok ? 0 : -EIO;
}

static void key_hex(const uint8_t key[MATCH_CACHE_KEY_LEN], char hex[2 * MATCH_CACHE_KEY_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";

	for (unsigned i = 0; i < MATCH_CACHE_KEY_LEN; i++) {
		hex[2 * i] = digits[key[i] >> 4];
		hex[2 * i + 1] = digits[key[i] & 15];
	}
	hex[2 * MATCH_CACHE_KEY_LEN] = '\0';
}

static void cache_path(const struct cache_ctx *cc, const struct match_db *d, char *path, size_t len)
{
	char hex[2 * MATCH_CACHE_KEY_LEN + 1];

	key_hex(d->cache_key, hex);
	snprintf(path, len, "%s/%s" MATCH_CACHE_SUFFIX, cc->dir, hex);
}

static int read_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EINVAL;     /* shrank under us */
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Checks the entry states read from a file against d's entries: only the
 * demotions compile_db can make (exact -> prefilter -> PCRE only; dead only
 * where PCRE2 refused the regex), and entries left for Hyperscan exactly
 * when the file holds a database. Returns true when they are plausible. */
static bool cache_states_ok(const struct match_db *d, const uint8_t *st, bool has_db)
{
	uint32_t hs_left = 0;

	for (uint32_t i = 0; i < d->n; i++) {
		const struct match_entry *e = &d->e[i];
		unsigned k = st[i] & ~CACHE_STATE_DEAD;
		bool dead = st[i] & CACHE_STATE_DEAD;

		if (k < MATCH_KIND_EXACT || k > MATCH_KIND_PCRE || k < (unsigned)e->kind)
			return false;
		if (dead && (k != MATCH_KIND_PCRE || e->re))
			return false;
		if (k != (unsigned)e->kind && !dead && !e->re)
			return false;
		hs_left += k != MATCH_KIND_PCRE && e->hs_pattern;
	}
	return (hs_left > 0) == has_db;
}

/* Loads d's database from its cache file. Returns 0 with d->hs set and the
 * entries' kinds restored; -ENOENT when there is no file; -EINVAL when the
 * file is not a valid entry for this key (corrupt, truncated, other format,
 * other platform); another negative errno on an I/O error. d is untouched
 * unless 0 is returned. Runs on a compile worker: malloc, not mem.h. */
static int cache_load(const struct cache_ctx *cc, struct match_db *d)
{
	char path[PATH_MAX];
	struct cache_hdr h;
	struct stat st;
	uint8_t digest[MATCH_CACHE_KEY_LEN];
	uint8_t *body = NULL;
	size_t body_len;
	hs_database_t *db = NULL;
	int fd, rc;

	cache_path(cc, d, path, sizeof(path));
	/* O_NONBLOCK: a FIFO under our name must not hang the build */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out_close;
	}
	rc = -EINVAL;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < sizeof(h) ||
	    (uint64_t)st.st_size > MATCH_CACHE_MAX_FILE)
		goto out_close;
	if ((rc = read_all(fd, &h, sizeof(h))) < 0)
		goto out_close;
	rc = -EINVAL;
	body_len = (size_t)st.st_size - sizeof(h);
	if (memcmp(h.magic, cache_magic, sizeof(cache_magic)) != 0 ||
	    h.version != MATCH_CACHE_VERSION || h.hdr_len != sizeof(h) ||
	    memcmp(h.key, d->cache_key, sizeof(h.key)) != 0 || h.nentries != d->n ||
	    h.nentries > body_len || h.db_len != body_len - h.nentries)
		goto out_close;
	body = malloc(body_len + 1);   /* + 1: never malloc(0) */
	if (!body) {
		rc = -ENOMEM;
		goto out_close;
	}
	if ((rc = read_all(fd, body, body_len)) < 0)
		goto out_free;
	rc = -EINVAL;
	if (sha256_2(body, body_len, "", 0, digest) < 0 ||
	    memcmp(digest, h.digest, sizeof(digest)) != 0 || !cache_states_ok(d, body, h.db_len > 0))
		goto out_free;
	/* db_len 0: every entry was demoted, there is no Hyperscan database
	 * (cached too: such a database fails to compile slowly, ~5 s) */
	if (h.db_len && hs_deserialize_database((const char *)body + h.nentries, (size_t)h.db_len,
						&db) != HS_SUCCESS)
		goto out_free;
	for (uint32_t i = 0; i < d->n; i++) {
		d->e[i].kind = (enum match_kind)(body[i] & ~CACHE_STATE_DEAD);
		d->e[i].dead = (body[i] & CACHE_STATE_DEAD) != 0;
	}
	d->hs = db;
	/* in use: keep it from pruning (one metadata write a day at most) */
	if (time(NULL) - st.st_mtime > 24 * 3600)
		(void)futimens(fd, NULL);
	rc = 0;
out_free:
	free(body);
out_close:
	close(fd);
	return rc;
}

/* Writes d (compiled; d->hs NULL when every entry was demoted) to its cache
 * file: temp file, then rename. Returns 0 or a negative errno; the temp
 * file never outlives a failure. */
static int cache_store(const struct cache_ctx *cc, const struct match_db *d)
{
	char path[PATH_MAX], tmp[PATH_MAX], hex[2 * MATCH_CACHE_KEY_LEN + 1];
	struct cache_hdr h;
	char *bytes = NULL;
	uint8_t *st = NULL;
	size_t len = 0;
	int fd, rc;

	if (d->hs && hs_serialize_database(d->hs, &bytes, &len) != HS_SUCCESS)
		return -ENOMEM;
	st = malloc(d->n + 1);
	if (!st) {
		rc = -ENOMEM;
		goto out_free;
	}
	for (uint32_t i = 0; i < d->n; i++)
		st[i] = (uint8_t)(d->e[i].kind | (d->e[i].dead ? CACHE_STATE_DEAD : 0));
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, cache_magic, sizeof(h.magic));
	h.version = MATCH_CACHE_VERSION;
	h.hdr_len = sizeof(h);
	memcpy(h.key, d->cache_key, sizeof(h.key));
	h.nentries = d->n;
	h.db_len = len;
	if ((rc = sha256_2(st, d->n, bytes ? bytes : "", len, h.digest)) < 0)
		goto out_free;
	key_hex(d->cache_key, hex);
	snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", cc->dir, hex);
	fd = mkstemp(tmp);      /* 0600 */
	if (fd < 0) {
		rc = -errno;
		goto out_free;
	}
	rc = write_all(fd, &h, sizeof(h));
	if (rc == 0)
		rc = write_all(fd, st, d->n);
	if (rc == 0 && len)
		rc = write_all(fd, bytes, len);
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	cache_path(cc, d, path, sizeof(path));
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0)
		unlink(tmp);
out_free:
	free(st);
	free(bytes);    /* Hyperscan's misc allocator: malloc */
	return rc;
}

/* mkdir -p with mode 0700 for every directory it creates. */
static int mkdir_p(const char *dir)
{
	char p[PATH_MAX];
	size_t len = strlen(dir);
	struct stat st;

	if (len == 0 || len >= sizeof(p))
		return -ENAMETOOLONG;
	memcpy(p, dir, len + 1);
	for (char *s = p + 1; ; s++) {
		char c = *s;

		if (c != '/' && c != '\0')
			continue;
		*s = '\0';
		if (mkdir(p, 0700) < 0 && errno != EEXIST)
			return -errno;
		*s = c;
		if (c == '\0')
			break;
	}
	if (stat(dir, &st) < 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* Prepares the cache for one build: creates dir, checks that it can be
 * written. An unusable directory is one warning on stderr and one error
 * counted; a directory that cannot be created turns the cache off, one that
 * can be read but not written is still read. */
static void cache_open(struct cache_ctx *cc, const char *dir, struct match_counts *counts)
{
	int rc;

	memset(cc, 0, sizeof(*cc));
	if (!dir || !*dir)
		return;
	if (strlen(dir) >= sizeof(cc->dir)) {
		rc = -ENAMETOOLONG;
		goto fail;
	}
	if (hs_populate_platform(&cc->plat) != HS_SUCCESS) {
		rc = -EIO;
		goto fail;
	}
	snprintf(cc->dir, sizeof(cc->dir), "%s", dir);
	rc = mkdir_p(cc->dir);
	if (rc < 0)
		goto fail;
	cc->on = true;
	if (access(cc->dir, W_OK | X_OK) < 0) {
		rc = -errno;
		fprintf(stderr, "breakwater: warning: rule cache %s: %s: compiled databases will "
			"not be saved\n", cc->dir, strerror(-rc));
		counts->cache_errors++;
		return;
	}
	cc->writable = true;
	return;
fail:
	fprintf(stderr, "breakwater: warning: rule cache %s: %s: compiling without a cache\n",
		dir, strerror(-rc));
	counts->cache_errors++;
}

static bool is_hex_key(const char *p)
{
	for (unsigned i = 0; i < 2 * MATCH_CACHE_KEY_LEN; i++)
		if (!isxdigit((unsigned char)p[i]) || isupper((unsigned char)p[i]))
			return false;
	return true;
}

/* One bounded pass over the cache directory removing stale files (see the
 * layout above). Returns the number of files removed. */
static uint64_t cache_prune(const struct cache_ctx *cc)
{
	const size_t klen = 2 * MATCH_CACHE_KEY_LEN, slen = strlen(MATCH_CACHE_SUFFIX);
	DIR *dir = opendir(cc->dir);
	struct dirent *de;
	time_t now = time(NULL);
	uint64_t removed = 0;
	unsigned visited = 0;

	if (!dir)
		return 0;
	while (visited++ < MATCH_CACHE_PRUNE_VISIT && (de = readdir(dir)) != NULL) {
		const char *n = de->d_name;
		size_t len = strlen(n);
		struct stat st;
		time_t max_age;

		if (len == klen + slen && is_hex_key(n) && strcmp(n + klen, MATCH_CACHE_SUFFIX) == 0)
			max_age = (time_t)MATCH_CACHE_MAX_AGE_DAYS * 24 * 3600;
		else if (len == 1 + klen + 7 && n[0] == '.' && is_hex_key(n + 1) && n[1 + klen] == '.')
			max_age = MATCH_CACHE_TMP_MAX_AGE;      /* a writer that died */
		else
			continue;
		if (fstatat(dirfd(dir), n, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (now - st.st_mtime > max_age && unlinkat(dirfd(dir), n, 0) == 0)
			removed++;
	}
	closedir(dir);
	return removed;
}

int match_cache_default_dir(char *buf, size_t len)
{
	const char *e;
	int n;

	if ((e = getenv("BW_CACHE_DIR")) != NULL && *e)
		n = snprintf(buf, len, "%s", e);
	else if ((e = getenv("XDG_CACHE_HOME")) != NULL && e[0] == '/')
		n = snprintf(buf, len, "%s/breakwater", e);
	else if ((e = getenv("HOME")) != NULL && *e)
		n = snprintf(buf, len, "%s/.cache/breakwater", e);
	else
		n = snprintf(buf, len, "/var/cache/breakwater");
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* ------------------------------------------------------------------ */
/* compiling                                                            */

struct build_job {
	struct match_set *ms;
	const struct cache_ctx *cache;
	bool verbose;
	uint32_t next;
	pthread_mutex_t lock;
};

static bool db_has_hs_entries(const struct match_db *d)
{
	for (uint32_t i = 0; i < d->n; i++)
		if (d->e[i].kind != MATCH_KIND_PCRE && d->e[i].hs_pattern)
			return true;
	return false;
}

/* Hyperscan-compiles database d: exact and prefilter entries. An entry that
 * makes the multi-pattern compile fail is demoted (exact -> prefilter ->
 * PCRE only) and the compile retried. With cc on, the database is first
 * looked up in the on-disk cache (a hit restores the demotions too) and a
 * compiled one is stored there; the outcome goes to d->cache_res. Runs on a
 * worker thread: touches only d, the cache files and Hyperscan (no mem.h
 * counters here, they are not thread-safe). */
static void compile_db(struct match_db *d, const struct cache_ctx *cc, bool verbose)
{
	const char **pats = malloc(sizeof(char *) * (d->n + 1));
	unsigned *flags = malloc(sizeof(unsigned) * (d->n + 1));
	unsigned *ids = malloc(sizeof(unsigned) * (d->n + 1));
	double t0 = now_s();
	bool store = false;

	if (cc && cc->on && db_has_hs_entries(d)) {
		bool keyed = cache_key(cc, d) == 0;
		int rc = keyed ? cache_load(cc, d) : -EIO;

		if (rc == 0) {
			d->cache_res = CACHE_RES_HIT;
			goto out;
		}
		d->cache_res = CACHE_RES_MISS;
		if (rc == -EINVAL)
			d->cache_res |= CACHE_RES_INVALID;
		else if (rc != -ENOENT)
			d->cache_res |= CACHE_RES_ERROR;
		store = cc->writable && keyed;
	}
	if (!pats || !flags || !ids) {
		snprintf(d->hs_error, sizeof(d->hs_error), "out of memory");
		goto out;
	}
	for (int attempt = 0; attempt < 64; attempt++) {
		hs_compile_error_t *ce = NULL;
		unsigned n = 0;

		for (uint32_t i = 0; i < d->n; i++) {
			struct match_entry *e = &d->e[i];

			if (e->kind == MATCH_KIND_PCRE || !e->hs_pattern)
				continue;
			pats[n] = e->hs_pattern;
			flags[n] = e->hs_flags | (e->kind == MATCH_KIND_PREFILTER ? HS_FLAG_PREFILTER : 0);
			ids[n] = i;
			n++;
		}
		if (n == 0)
			break;
		if (hs_compile_multi(pats, flags, ids, n, d->stream ? HS_MODE_STREAM : HS_MODE_BLOCK,
				     NULL, &d->hs, &ce) == HS_SUCCESS)
			break;
		d->hs = NULL;
		if (ce && ce->expression >= 0 && (unsigned)ce->expression < n) {
			struct match_entry *e = &d->e[ids[ce->expression]];

			if (!e->re) {
				/* PCRE2 refused it too (too large, usually): the
				 * caller reports and counts it */
				e->dead = true;
				e->kind = MATCH_KIND_PCRE;
			} else {
				e->kind = e->kind == MATCH_KIND_EXACT ? MATCH_KIND_PREFILTER : MATCH_KIND_PCRE;
			}
			hs_free_compile_error(ce);
			continue;
		}
		snprintf(d->hs_error, sizeof(d->hs_error), "%s", ce ? ce->message : "unknown error");
		hs_free_compile_error(ce);
		break;
	}
	if (store && !d->hs_error[0])
		d->cache_res |= cache_store(cc, d) == 0 ? CACHE_RES_WRITTEN : CACHE_RES_ERROR;
out:
	d->compile_s = now_s() - t0;
	if (verbose)
		fprintf(stderr, "match: %s%s%s%s: %u entries, %.3f s%s (first: %s)\n",
			d->field ? d->field : "", d->cls == MATCH_CLASS_BODY ? "body" :
			d->cls == MATCH_CLASS_RAWBODY ? "rawbody" : d->cls == MATCH_CLASS_FULL ? "full" :
			d->cls == MATCH_CLASS_URI ? "uri" : "", d->prefilter ? " prefilter" : "",
			d->stream ? " stream" : "",
			d->n, d->compile_s, d->cache_res & CACHE_RES_HIT ? " (cache hit)" : "",
			d->n ? d->e[0].hs_pattern : "");
	free(pats);
	free(flags);
	free(ids);
}

static void *build_worker(void *arg)
{
	struct build_job *j = arg;

	for (;;) {
		uint32_t i;

		pthread_mutex_lock(&j->lock);
		i = j->next++;
		pthread_mutex_unlock(&j->lock);
		if (i >= j->ms->ndbs)
			return NULL;
		compile_db(&j->ms->dbs[i], j->cache, j->verbose);
	}
}

static int compile_all(struct match_set *ms, const struct cache_ctx *cc, unsigned nthreads,
		       bool verbose)
{
	struct build_job j = { .ms = ms, .cache = cc, .verbose = verbose, .next = 0 };
	pthread_t th[64];
	unsigned started = 0;

	pthread_mutex_init(&j.lock, NULL);
	if (nthreads > 64)
		nthreads = 64;
	/* biggest databases first so the threads finish together */
	for (uint32_t a = 1; a < ms->ndbs; a++)
		for (uint32_t b = a; b > 0 && ms->dbs[b - 1].n < ms->dbs[b].n; b--) {
			struct match_db t = ms->dbs[b];

			ms->dbs[b] = ms->dbs[b - 1];
			ms->dbs[b - 1] = t;
		}
	for (unsigned i = 1; i < nthreads; i++)
		if (pthread_create(&th[started], NULL, build_worker, &j) == 0)
			started++;
	build_worker(&j);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&j.lock);
	return 0;
}

static uint32_t absent_matches(const struct match_entry *e, const struct rule *r,
			       pcre2_match_data *md)
{
	/* mimeheader :raw reads "" in a part without the field (SpamAssassin's
	 * raw_header() answers '', which is defined: if-unset never applies) */
	const char *v = r->type == RULE_TYPE_MIMEHEADER && (r->mods & RULE_HDR_RAW) ? "" :
			r->if_unset ? r->if_unset : "";

	if (!e->re)
		return 0;
	return pcre_count(e->re, md, NULL, v, strlen(v), e->multiple ? e->maxhits : 1, NULL);
}

/* True when the pattern has a bounded repeat {m,n} with n >= 64 (as
 * <[^>]{1,1000}...): alone such a pattern compiles in a fraction of a second,
 * but put together with others Hyperscan's compile time explodes (a chunk of
 * 16 rawbody rules took 25 s). These get a database each. */
static bool costly_repeat(const char *p)
{
	for (; *p; p++) {
		if (*p == '\\' && p[1]) {
			p++;
			continue;
		}
		if (*p == '{') {
			const char *q = p + 1;
			unsigned long hi = 0;

			while (isdigit((unsigned char)*q))
				q++;
			if (*q == ',') {
				q++;
				if (!isdigit((unsigned char)*q))
					continue;   /* {m,} is unbounded: cheap */
			} else {
				q = p + 1;
			}
			hi = strtoul(q, NULL, 10);
			if (hi >= 64)
				return true;
		}
	}
	return false;
}

/* Hyperscan has no /x: copy pattern without the whitespace and #-comments
 * Perl's /x ignores (outside character classes, unescaped). Returns a
 * MEM_RULES string or NULL. */
static char *strip_extended(const char *p)
{
	char *out = mem_alloc(MEM_RULES, strlen(p) + 1), *w = out;
	bool cls = false;

	if (!out)
		return NULL;
	for (; *p; p++) {
		if (*p == '\\' && p[1]) {
			*w++ = *p++;
			*w++ = *p;
			continue;
		}
		if (cls) {
			if (*p == ']')
				cls = false;
			*w++ = *p;
			continue;
		}
		if (*p == '[') {
			cls = true;
			*w++ = *p;
			if (p[1] == '^')
				*w++ = *++p;
			if (p[1] == ']')
				*w++ = *++p;    /* a leading ] is literal */
			continue;
		}
		if (isspace((unsigned char)*p))
			continue;
		if (*p == '#') {
			while (p[1] && p[1] != '\n')
				p++;
			continue;
		}
		*w++ = *p;
	}
	*w = '\0';
	return out;
}

/* Adds one regex rule to its class database: PCRE2 compile (kept only where
 * needed), Hyperscan classification with hs_expression_info. */
static int add_regex_rule(struct match_set *ms, uint32_t id, pcre2_match_data *md)
{
	struct rule_set *rs = ms->rules;
	struct rule *r = &rs->rules[id];
	enum match_class cls = class_of(r->type);
	int32_t di;
	struct match_db *d;
	struct match_entry *e;
	char perr[200];
	int pcode = 0;
	hs_expr_info_t *info = NULL;
	hs_compile_error_t *ce = NULL;
	struct match_entry tmp = { 0 }, *t = &tmp;

	t->rule = id;
	t->negate = r->negate;
	t->multiple = (r->tflags & RULE_TF_MULTIPLE) != 0;
	t->maxhits = r->maxhits;
	t->nosubject = (r->tflags & RULE_TF_NOSUBJECT) != 0;
	t->hs_flags = match_hs_flags(r->re_flags, r->tflags);
	t->re = pcre_compile_rule(ms, r, perr, sizeof(perr), &pcode);
	t->hs_pattern = (r->re_flags & RULE_RE_EXTENDED) ? strip_extended(r->pattern) :
			 mem_strdup(MEM_RULES, r->pattern);
	if (!t->hs_pattern) {
		if (t->re)
			pcre2_code_free(t->re);
		return -ENOMEM;
	}
	if (t->re && strlen(t->hs_pattern) > MATCH_HS_MAX_LEN) {
		t->kind = MATCH_KIND_PCRE;
	} else if (hs_expression_info(t->hs_pattern, t->hs_flags, &info, &ce) == HS_SUCCESS) {
		t->kind = MATCH_KIND_EXACT;
	} else {
		hs_free_compile_error(ce);
		ce = NULL;
		if (t->re && strlen(t->hs_pattern) <= MATCH_PREFILTER_MAX_LEN &&
		    !costly_repeat(t->hs_pattern) &&
		    hs_expression_info(t->hs_pattern, t->hs_flags | HS_FLAG_PREFILTER,
						&info, &ce) == HS_SUCCESS) {
			t->kind = MATCH_KIND_PREFILTER;
		} else {
			hs_free_compile_error(ce);
			t->kind = MATCH_KIND_PCRE;
		}
	}
	free(info);   /* hs_expression_info allocates with Hyperscan's misc allocator (malloc) */
	di = db_get(ms, cls, r->field, r->mods, t->kind != MATCH_KIND_EXACT,
		    t->kind != MATCH_KIND_PCRE && costly_repeat(t->hs_pattern));
	if (di < 0 || !(e = entry_add(&ms->dbs[di]))) {
		if (t->re)
			pcre2_code_free(t->re);
		mem_free(MEM_RULES, t->hs_pattern);
		return -ENOMEM;
	}
	d = &ms->dbs[di];
	*e = tmp;
	if (!e->re && e->kind != MATCH_KIND_EXACT &&
	    (pcode == PCRE2_ERROR_PATTERN_TOO_LARGE || pcode == PCRE2_ERROR_PARENTHESES_NEST_TOO_DEEP)) {
		/* valid Perl, over both engines' size limits (ReplaceTags
		 * expansions of 50-200 KB): skipped and counted, not an error */
		mem_free(MEM_RULES, e->hs_pattern);
		d->n--;
		r->test = RULE_TEST_NONE;
		r->skip = RULE_SKIP_TOO_LARGE;
		rs->counts.skipped[RULE_SKIP_TOO_LARGE]++;
		ms->counts.regex_failed++;
		return 0;
	}
	if (!e->re && e->kind != MATCH_KIND_EXACT) {
		/* neither engine takes it: the load fails with file:line */
		char buf[320];
		struct rule_error *ne;

		if (rs->nerrors == rs->cap_errors) {
			uint32_t cap = rs->cap_errors ? rs->cap_errors * 2 : 16;

			ne = mem_realloc(MEM_RULES, rs->errors, cap * sizeof(*ne));
			if (!ne)
				return -ENOMEM;
			rs->errors = ne;
			rs->cap_errors = cap;
		}
		snprintf(buf, sizeof(buf), "rule %s: regex rejected by Hyperscan and %s", r->name, perr);
		rs->errors[rs->nerrors].file = r->file;
		rs->errors[rs->nerrors].line = r->line;
		rs->errors[rs->nerrors].reason = mem_strdup(MEM_RULES, buf);
		if (rs->errors[rs->nerrors].reason)
			rs->nerrors++;
		mem_free(MEM_RULES, e->hs_pattern);
		d->n--;
		r->test = RULE_TEST_NONE;
		r->skip = RULE_SKIP_REGEX;
		ms->counts.regex_failed++;
		return 0;
	}
	if (r->type == RULE_TYPE_HEADER || r->type == RULE_TYPE_MIMEHEADER)
		e->absent_count = absent_matches(e, r, md);
	return 0;
}

static int finalize_db(struct match_set *ms, struct match_db *d)
{
	for (uint32_t i = 0; i < d->n; i++) {
		struct match_entry *e = &d->e[i];

		if (e->dead) {
			if (e->re)
				pcre2_code_free(e->re);
			e->re = NULL;
			mem_free(MEM_RULES, e->hs_pattern);
			e->hs_pattern = NULL;
			continue;
		}
		ms->counts.kinds[e->kind]++;
		if (d->cls == MATCH_CLASS_FULL) {
			ms->full.rules++;
			/* PCRE2 on the raw copy: confirm, PCRE only, counting */
			if (e->kind != MATCH_KIND_EXACT || (e->multiple && e->re))
				ms->full.copy_rules++;
		}
		ms->rule_db[e->rule] = (uint32_t)(d - ms->dbs);
		ms->rule_entry[e->rule] = i;
		if (e->kind == MATCH_KIND_PCRE || e->negate) {
			uint32_t **list = e->kind == MATCH_KIND_PCRE ? &d->always : &d->neg;
			uint32_t *cnt = e->kind == MATCH_KIND_PCRE ? &d->nalways : &d->nneg;
			uint32_t *nl = mem_realloc(MEM_RULES, *list, (*cnt + 1) * sizeof(uint32_t));

			if (!nl)
				return -ENOMEM;
			*list = nl;
			(*list)[(*cnt)++] = i;
			if (e->kind == MATCH_KIND_PCRE && e->negate) {
				nl = mem_realloc(MEM_RULES, d->neg, (d->nneg + 1) * sizeof(uint32_t));
				if (!nl)
					return -ENOMEM;
				d->neg = nl;
				d->neg[d->nneg++] = i;
			}
		}
		/* PCRE2 code is needed for confirm, PCRE-only, counting and
		 * nothing else: free the rest */
		if (e->kind == MATCH_KIND_EXACT && !e->multiple && e->re) {
			pcre2_code_free(e->re);
			e->re = NULL;
		}
		mem_free(MEM_RULES, e->hs_pattern);
		e->hs_pattern = NULL;
	}
	if (d->hs) {
		size_t sz = 0;

		ms->counts.databases++;
		if (hs_database_size(d->hs, &sz) == HS_SUCCESS)
			ms->counts.db_bytes += sz;
		if (hs_alloc_scratch(d->hs, &ms->proto_scratch) != HS_SUCCESS)
			return -ENOMEM;
	}
	if (d->n > ms->max_entries)
		ms->max_entries = d->n;
	return 0;
}

/* Hyperscan allocates stream state through its stream allocator: point it
 * at mem.h so a message's streams are accounted (MEM_MATCH) like the rest.
 * Process-wide, set once; only full-message streams use it. */
static void *stream_alloc(size_t n)
{
	return mem_alloc(MEM_MATCH, n);
}

static void stream_free(void *p)
{
	mem_free(MEM_MATCH, p);
}

static pthread_once_t stream_alloc_once = PTHREAD_ONCE_INIT;

static void stream_alloc_init(void)
{
	(void)hs_set_stream_allocator(stream_alloc, stream_free);
}

/* The streaming databases, in their final order, and what one message's
 * streams cost. Returns 0 or -ENOMEM. */
static int full_setup(struct match_set *ms)
{
	uint32_t n = 0, off = 0;
	size_t bytes = 0;

	for (uint32_t i = 0; i < ms->ndbs; i++)
		n += ms->dbs[i].stream;
	ms->full.need_copy = ms->full.copy_rules > 0;
	if (!n)
		return 0;
	pthread_once(&stream_alloc_once, stream_alloc_init);
	ms->sdb = mem_alloc(MEM_RULES, n * sizeof(uint32_t));
	ms->sdb_off = mem_alloc(MEM_RULES, n * sizeof(uint32_t));
	if (!ms->sdb || !ms->sdb_off)
		return -ENOMEM;
	for (uint32_t i = 0; i < ms->ndbs; i++) {
		const struct match_db *d = &ms->dbs[i];
		size_t sz = 0;

		if (!d->stream)
			continue;
		ms->sdb[ms->full.stream_dbs] = i;
		ms->sdb_off[ms->full.stream_dbs++] = off;
		off += d->n;
		if (d->hs && hs_stream_size(d->hs, &sz) == HS_SUCCESS)
			bytes += sz;
	}
	ms->full.stream_entries = off;
	ms->full.stream_bytes = sizeof(struct match_stream) + n * sizeof(hs_stream_t *) + off +
				bytes;
	return 0;
}

struct match_set *match_set_build(struct rule_set *rules, const struct match_build_opts *opts,
				  char *errbuf, size_t errlen)
{
	struct match_set *ms;
	pcre2_match_data *md = NULL;
	unsigned nthreads = opts && opts->nthreads ? opts->nthreads : 1;
	double t0 = now_s();
	struct cache_ctx cache;

	ms = mem_calloc(MEM_RULES, 1, sizeof(*ms));
	if (!ms)
		goto fail_alloc;
	cache_open(&cache, opts ? opts->cache_dir : NULL, &ms->counts);
	ms->rules = rules;
	ms->gctx = pcre2_general_context_create(pcre_alloc_rules, pcre_free_rules, NULL);
	ms->rule_db = mem_alloc(MEM_RULES, (rules->nrules + 1) * sizeof(uint32_t));
	ms->rule_entry = mem_alloc(MEM_RULES, (rules->nrules + 1) * sizeof(uint32_t));
	ms->native = mem_alloc(MEM_RULES, (rules->nrules + 1) * sizeof(uint32_t));
	if (!ms->gctx || !ms->rule_db || !ms->rule_entry || !ms->native)
		goto fail_alloc;
	md = pcre2_match_data_create(1, ms->gctx);
	if (!md)
		goto fail_alloc;
	for (uint32_t id = 0; id < rules->nrules; id++) {
		struct rule *r = &rules->rules[id];

		ms->rule_db[id] = NONE;
		ms->rule_entry[id] = NONE;
		switch (r->test) {
		case RULE_TEST_REGEX:
			if (add_regex_rule(ms, id, md) < 0)
				goto fail_alloc;
			break;
		case RULE_TEST_EXISTS:
		case RULE_TEST_COUNT:
		case RULE_TEST_EVAL:
			ms->native[ms->nnative++] = id;
			ms->counts.native++;
			break;
		case RULE_TEST_META:
			ms->counts.metas++;
			break;
		case RULE_TEST_TRACK:
			ms->counts.tracks++;
			break;
		default:
			break;
		}
	}
	pcre2_match_data_free(md);
	md = NULL;
	ms->counts.prepare_seconds = now_s() - t0;
	compile_all(ms, &cache, nthreads, opts && opts->verbose);
	for (uint32_t i = 0; i < ms->ndbs; i++) {
		struct match_db *d = &ms->dbs[i];

		ms->counts.cache_hits += (d->cache_res & CACHE_RES_HIT) != 0;
		ms->counts.cache_misses += (d->cache_res & CACHE_RES_MISS) != 0;
		ms->counts.cache_invalid += (d->cache_res & CACHE_RES_INVALID) != 0;
		ms->counts.cache_writes += (d->cache_res & CACHE_RES_WRITTEN) != 0;
		ms->counts.cache_errors += (d->cache_res & CACHE_RES_ERROR) != 0;
	}
	/* files were added: the one moment the cache grew, so the moment to
	 * drop what has gone stale */
	if (ms->counts.cache_writes && cache.writable)
		ms->counts.cache_pruned = cache_prune(&cache);
	for (uint32_t i = 0; i < ms->ndbs; i++) {
		struct match_db *d = &ms->dbs[i];

		if (d->hs_error[0]) {
			snprintf(errbuf, errlen, "Hyperscan: %s database%s%s: %s",
				 d->cls == MATCH_CLASS_HEADER ? "header" : "class",
				 d->field ? " " : "", d->field ? d->field : "", d->hs_error);
			goto fail;
		}
		for (uint32_t k = 0; k < d->n; k++) {
			struct match_entry *e = &d->e[k];
			struct rule *r = &rules->rules[e->rule];

			/* rejected by Hyperscan in the multi-pattern compile and by
			 * PCRE2: skipped, counted, and named on stderr-bound
			 * output by rules_check (a resource limit, not a syntax
			 * error: Perl accepts it) */
			if (e->dead) {
				r->test = RULE_TEST_NONE;
				r->skip = RULE_SKIP_TOO_LARGE;
				rules->counts.skipped[RULE_SKIP_TOO_LARGE]++;
				ms->counts.regex_failed++;
			}
		}
		if (finalize_db(ms, d) < 0)
			goto fail_alloc;
	}
	/* databases were reordered by compile_all: rule_db was filled after */
	if (full_setup(ms) < 0)
		goto fail_alloc;
	ms->counts.compile_seconds = now_s() - t0;
	return ms;
fail_alloc:
	snprintf(errbuf, errlen, "out of memory");
fail:
	if (md)
		pcre2_match_data_free(md);
	match_set_free(ms);
	return NULL;
}

void match_set_free(struct match_set *ms)
{
	if (!ms)
		return;
	for (uint32_t i = 0; i < ms->ndbs; i++) {
		struct match_db *d = &ms->dbs[i];

		for (uint32_t k = 0; k < d->n; k++) {
			if (d->e[k].re)
				pcre2_code_free(d->e[k].re);
			mem_free(MEM_RULES, d->e[k].hs_pattern);
		}
		hs_free_database(d->hs);
		mem_free(MEM_RULES, d->e);
		mem_free(MEM_RULES, d->always);
		mem_free(MEM_RULES, d->neg);
	}
	hs_free_scratch(ms->proto_scratch);
	mem_free(MEM_RULES, ms->sdb);
	mem_free(MEM_RULES, ms->sdb_off);
	mem_free(MEM_RULES, ms->dbs);
	mem_free(MEM_RULES, ms->native);
	mem_free(MEM_RULES, ms->rule_db);
	mem_free(MEM_RULES, ms->rule_entry);
	if (ms->gctx)
		pcre2_general_context_free(ms->gctx);
	mem_free(MEM_RULES, ms);
}

const struct match_counts *match_set_counts(const struct match_set *ms)
{
	return &ms->counts;
}

const struct rule_set *match_set_rules(const struct match_set *ms)
{
	return ms->rules;
}

enum match_kind match_rule_kind(const struct match_set *ms, uint32_t rule)
{
	if (rule >= ms->rules->nrules || ms->rule_db[rule] == NONE)
		return (enum match_kind)0;
	return ms->dbs[ms->rule_db[rule]].e[ms->rule_entry[rule]].kind;
}

unsigned match_rule_hs_flags(const struct match_set *ms, uint32_t rule)
{
	const struct match_entry *e;

	if (rule >= ms->rules->nrules || ms->rule_db[rule] == NONE)
		return 0;
	e = &ms->dbs[ms->rule_db[rule]].e[ms->rule_entry[rule]];
	if (e->kind == MATCH_KIND_PCRE)
		return 0;
	return e->hs_flags | (e->kind == MATCH_KIND_PREFILTER ? HS_FLAG_PREFILTER : 0);
}

/* ------------------------------------------------------------------ */
/* scratch and hits                                                     */

static struct match_scratch *scratch_alloc(const struct match_set *ms)
{
	struct match_scratch *s = mem_calloc(MEM_MATCH, 1, sizeof(*s));
	uint32_t n = ms->max_entries + 1;

	if (!s)
		return NULL;
	s->ms = ms;
	s->gctx = pcre2_general_context_create(pcre_alloc_match, pcre_free_match, NULL);
	if (!s->gctx)
		goto fail;
	s->mctx = pcre2_match_context_create(s->gctx);
	s->md = pcre2_match_data_create(1, s->gctx);
	s->mark_gen = mem_calloc(MEM_MATCH, n, sizeof(uint32_t));
	s->marked = mem_alloc(MEM_MATCH, n * sizeof(uint32_t));
	s->acc = mem_calloc(MEM_MATCH, n, sizeof(uint32_t));
	s->acc_gen = mem_calloc(MEM_MATCH, n, sizeof(uint32_t));
	s->acc_list = mem_alloc(MEM_MATCH, n * sizeof(uint32_t));
	if (!s->mctx || !s->md || !s->mark_gen || !s->marked || !s->acc || !s->acc_gen || !s->acc_list)
		goto fail;
	pcre2_set_match_limit(s->mctx, MATCH_PCRE_MATCH_LIMIT);
	pcre2_set_depth_limit(s->mctx, MATCH_PCRE_DEPTH_LIMIT);
	return s;
fail:
	match_scratch_free(s);
	return NULL;
}

struct match_scratch *match_scratch_new(const struct match_set *ms)
{
	struct match_scratch *s = scratch_alloc(ms);

	if (s && ms->proto_scratch && hs_clone_scratch(ms->proto_scratch, &s->hs) != HS_SUCCESS) {
		match_scratch_free(s);
		return NULL;
	}
	return s;
}

struct match_scratch *match_scratch_clone(const struct match_scratch *proto)
{
	struct match_scratch *s = scratch_alloc(proto->ms);

	if (s && proto->hs && hs_clone_scratch(proto->hs, &s->hs) != HS_SUCCESS) {
		match_scratch_free(s);
		return NULL;
	}
	return s;
}

void match_scratch_free(struct match_scratch *s)
{
	if (!s)
		return;
	hs_free_scratch(s->hs);
	if (s->md)
		pcre2_match_data_free(s->md);
	if (s->mctx)
		pcre2_match_context_free(s->mctx);
	if (s->gctx)
		pcre2_general_context_free(s->gctx);
	mem_free(MEM_MATCH, s->mark_gen);
	mem_free(MEM_MATCH, s->marked);
	mem_free(MEM_MATCH, s->acc);
	mem_free(MEM_MATCH, s->acc_gen);
	mem_free(MEM_MATCH, s->acc_list);
	mem_free(MEM_MATCH, s->buf);
	mem_free(MEM_MATCH, s);
}

const struct match_scan_stats *match_scratch_stats(const struct match_scratch *s)
{
	return &s->st;
}

struct match_hits *match_hits_new(const struct match_set *ms)
{
	struct match_hits *h = mem_calloc(MEM_MATCH, 1, sizeof(*h));
	uint32_t n = ms->rules->nrules + 1;

	if (!h)
		return NULL;
	h->nrules = ms->rules->nrules;
	h->count = mem_calloc(MEM_MATCH, n, sizeof(uint32_t));
	h->list = mem_alloc(MEM_MATCH, n * sizeof(uint32_t));
	if (!h->count || !h->list) {
		match_hits_free(h);
		return NULL;
	}
	h->action = "pass";
	return h;
}

void match_hits_free(struct match_hits *h)
{
	if (!h)
		return;
	mem_free(MEM_MATCH, h->count);
	mem_free(MEM_MATCH, h->list);
	mem_free(MEM_MATCH, h);
}

void match_hits_reset(struct match_hits *h)
{
	for (uint32_t i = 0; i < h->nlist; i++)
		h->count[h->list[i]] = 0;
	h->nlist = 0;
	h->score = 0;
	h->action = "pass";
}

void match_hits_add(struct match_hits *h, uint32_t rule, uint32_t n)
{
	if (rule >= h->nrules || n == 0)
		return;
	if (h->count[rule] == 0)
		h->list[h->nlist++] = rule;
	h->count[rule] = h->count[rule] > UINT32_MAX - n ? UINT32_MAX : h->count[rule] + n;
}

/* ------------------------------------------------------------------ */
/* scanning                                                             */

struct scan_ctx {
	struct match_scratch *s;
	const struct match_db *d;
};

static int on_match(unsigned int id, unsigned long long from, unsigned long long to,
		    unsigned int flags, void *ctx)
{
	struct scan_ctx *c = ctx;
	struct match_scratch *s = c->s;

	(void)from; (void)to; (void)flags;
	if (s->mark_gen[id] != s->gen) {
		s->mark_gen[id] = s->gen;
		s->marked[s->nmarked++] = id;
	}
	return 0;
}

static void acc_add(struct match_scratch *s, uint32_t i, uint32_t n)
{
	if (s->acc_gen[i] != s->agen) {
		s->acc_gen[i] = s->agen;
		s->acc[i] = 0;
		s->acc_list[s->nacc++] = i;
	} else if (s->first_wins) {
		return;
	}
	s->acc[i] += n;
}

static void begin_pass(struct match_scratch *s)
{
	if (++s->agen == 0) {
		memset(s->acc_gen, 0, (s->ms->max_entries + 1) * sizeof(uint32_t));
		s->agen = 1;
	}
	s->nacc = 0;
}

/* Result of one entry on one text, given whether Hyperscan reported it. */
static void judge(struct match_scratch *s, const struct match_db *d, uint32_t i,
		  const char *p, size_t len)
{
	const struct match_entry *e = &d->e[i];
	uint32_t n;

	if ((e->kind == MATCH_KIND_EXACT && !e->multiple) || !e->re)
		n = 1;     /* no PCRE2 code (it rejected the regex): one hit */
	else
		n = pcre_count(e->re, s->md, s->mctx, p, len, e->multiple ? e->maxhits : 1, &s->st);
	if (n)
		acc_add(s, i, n);
}

/* Scans one text against d; results accumulate in the pass. */
static int scan_one(struct match_scratch *s, const struct match_db *d, const char *p, size_t len,
		    bool skip_nosubject)
{
	struct scan_ctx c = { .s = s, .d = d };
	int rc = 0;

	if (++s->gen == 0) {
		memset(s->mark_gen, 0, (s->ms->max_entries + 1) * sizeof(uint32_t));
		s->gen = 1;
	}
	s->nmarked = 0;
	if (d->hs) {
		hs_error_t err;

		if (len > UINT32_MAX)
			len = UINT32_MAX;
		s->st.scans++;
		s->st.bytes += len;
		err = hs_scan(d->hs, p ? p : "", (unsigned)len, 0, s->hs, on_match, &c);
		if (err != HS_SUCCESS) {
			s->st.hs_errors++;
			rc = -EIO;
		}
	}
	for (uint32_t k = 0; k < s->nmarked; k++) {
		uint32_t i = s->marked[k];

		if (skip_nosubject && d->e[i].nosubject)
			continue;
		judge(s, d, i, p, len);
	}
	for (uint32_t k = 0; k < d->nalways; k++) {
		uint32_t i = d->always[k];

		if (skip_nosubject && d->e[i].nosubject)
			continue;
		judge(s, d, i, p, len);
	}
	return rc;
}

/* Turns the pass's accumulated counts into hits (negations included). */
static void end_pass(struct match_scratch *s, const struct match_db *d, struct match_hits *h)
{
	for (uint32_t k = 0; k < s->nacc; k++) {
		uint32_t i = s->acc_list[k];
		const struct match_entry *e = &d->e[i];
		uint32_t n = s->acc[i];

		if (e->negate)
			continue;
		if (!e->multiple)
			n = 1;
		else if (e->maxhits && n > e->maxhits)
			n = e->maxhits;
		match_hits_add(h, e->rule, n);
	}
	for (uint32_t k = 0; k < d->nneg; k++) {
		uint32_t i = d->neg[k];

		if (s->acc_gen[i] != s->agen || s->acc[i] == 0)
			match_hits_add(h, d->e[i].rule, 1);
	}
}

int match_scan_texts(const struct match_set *ms, struct match_scratch *s, enum match_class cls,
		     const struct match_text *parts, uint32_t nparts, bool first_is_subject,
		     struct match_hits *h)
{
	int rc = 0;

	for (uint32_t i = 0; i < ms->ndbs; i++) {
		const struct match_db *d = &ms->dbs[i];

		if (d->cls != cls || d->stream)
			continue;
		begin_pass(s);
		for (uint32_t k = 0; k < nparts; k++)
			if (scan_one(s, d, parts[k].p, parts[k].len,
				     k == 0 && first_is_subject && cls == MATCH_CLASS_BODY) < 0)
				rc = -EIO;
		end_pass(s, d, h);
	}
	return rc;
}

/* --- full rules: streaming --- */

const struct match_full_info *match_set_full(const struct match_set *ms)
{
	return &ms->full;
}

struct match_stream *match_stream_open(const struct match_set *ms)
{
	uint32_t n = ms->full.stream_dbs;
	size_t sz = sizeof(struct match_stream) + n * sizeof(hs_stream_t *) + ms->full.stream_entries;
	struct match_stream *st;

	if (!n)
		return NULL;
	st = mem_calloc(MEM_MATCH, 1, sz);
	if (!st)
		return NULL;
	st->ms = ms;
	st->n = n;
	st->hs = (hs_stream_t **)(void *)(st + 1);
	st->mark = (uint8_t *)(st->hs + n);
	st->size = sz;
	for (uint32_t i = 0; i < n; i++) {
		const struct match_db *d = &ms->dbs[ms->sdb[i]];
		size_t ss = 0;

		if (!d->hs)
			continue;   /* every entry went to PCRE2: judged at close */
		if (hs_open_stream(d->hs, 0, &st->hs[i]) != HS_SUCCESS) {
			st->hs[i] = NULL;
			match_stream_free(st);
			return NULL;
		}
		if (hs_stream_size(d->hs, &ss) == HS_SUCCESS)
			st->size += ss;
	}
	return st;
}

static int on_stream_match(unsigned int id, unsigned long long from, unsigned long long to,
			   unsigned int flags, void *ctx)
{
	(void)from; (void)to; (void)flags;
	((uint8_t *)ctx)[id] = 1;
	return 0;
}

int match_stream_feed(const struct match_set *ms, struct match_scratch *s,
		      struct match_stream *st, const void *p, size_t n)
{
	if (!st || st->ms != ms || s->ms != ms)
		return -EINVAL;
	if (st->failed)
		return -EIO;
	if (st->closed || n == 0)
		return 0;
	for (uint32_t i = 0; i < st->n; i++) {
		const char *q = p;
		size_t left = n;

		if (!st->hs[i])
			continue;
		while (left) {
			unsigned k = left > UINT32_MAX ? UINT32_MAX : (unsigned)left;

			s->st.scans++;
			s->st.bytes += k;
			s->st.stream_bytes += k;
			if (hs_scan_stream(st->hs[i], q, k, 0, s->hs, on_stream_match,
					   st->mark + ms->sdb_off[i]) != HS_SUCCESS) {
				s->st.hs_errors++;
				st->failed = true;
				return -EIO;
			}
			q += k;
			left -= k;
		}
	}
	return 0;
}

/* Result of a streaming entry Hyperscan reported (or a PCRE-only one):
 * what needs PCRE2 runs on the raw copy. An exact rule stays a hit when the
 * copy (cut at max_full) no longer holds its match: Hyperscan saw it. */
static void judge_streamed(struct match_scratch *s, const struct match_db *d, uint32_t i,
			   const char *copy, size_t len)
{
	const struct match_entry *e = &d->e[i];
	uint32_t n;

	if (e->kind == MATCH_KIND_EXACT && (!e->multiple || !e->re))
		n = 1;
	else if (!copy || !e->re)
		n = e->kind == MATCH_KIND_EXACT;
	else
		n = pcre_count(e->re, s->md, s->mctx, copy, len, e->multiple ? e->maxhits : 1, &s->st);
	if (!n && e->kind == MATCH_KIND_EXACT)
		n = 1;
	if (n)
		acc_add(s, i, n);
}

int match_stream_close(const struct match_set *ms, struct match_scratch *s,
		       struct match_stream *st, const char *copy, size_t copy_len,
		       struct match_hits *h)
{
	bool failed;

	if (!st || st->ms != ms || s->ms != ms)
		return -EINVAL;
	if (st->closed)
		return 0;
	st->closed = true;
	s->st.streams++;
	/* end of data: anchored ends ($, \z) match now */
	for (uint32_t i = 0; i < st->n; i++) {
		if (!st->hs[i])
			continue;
		if (st->failed || hs_close_stream(st->hs[i], s->hs, on_stream_match,
						  st->mark + ms->sdb_off[i]) != HS_SUCCESS) {
			/* on an error Hyperscan keeps the stream: free it */
			if (!st->failed)
				s->st.hs_errors++;
			st->failed = true;
			(void)hs_close_stream(st->hs[i], NULL, NULL, NULL);
		}
		st->hs[i] = NULL;
	}
	failed = st->failed;
	/* what was found counts even after a failure (as in block mode) */
	for (uint32_t i = 0; i < st->n; i++) {
		const struct match_db *d = &ms->dbs[ms->sdb[i]];
		const uint8_t *mark = st->mark + ms->sdb_off[i];

		begin_pass(s);
		for (uint32_t k = 0; k < d->n; k++)
			if (mark[k] && !d->e[k].dead)
				judge_streamed(s, d, k, copy, copy_len);
		for (uint32_t k = 0; copy && k < d->nalways; k++)
			judge_streamed(s, d, d->always[k], copy, copy_len);
		end_pass(s, d, h);
	}
	return failed ? -EIO : 0;
}

void match_stream_free(struct match_stream *st)
{
	if (!st)
		return;
	for (uint32_t i = 0; i < st->n; i++)
		if (st->hs[i])
			(void)hs_close_stream(st->hs[i], NULL, NULL, NULL);
	mem_free(MEM_MATCH, st);
}

size_t match_stream_size(const struct match_stream *st)
{
	return st ? st->size : 0;
}

int match_scan_full(const struct match_set *ms, struct match_scratch *s,
		    const char *p, size_t len, struct match_hits *h)
{
	struct match_text t = { p, len };
	int rc = 0;

	if (ms->full.stream_dbs) {
		struct match_stream *st = match_stream_open(ms);

		if (!st) {
			rc = -ENOMEM;
		} else {
			if (match_stream_feed(ms, s, st, p, len) < 0)
				rc = -EIO;
			if (match_stream_close(ms, s, st, p, len, h) < 0)
				rc = -EIO;
			match_stream_free(st);
		}
	}
	if (match_scan_texts(ms, s, MATCH_CLASS_FULL, &t, 1, false, h) < 0)
		rc = -EIO;
	return rc;
}

/* --- header field extraction (SpamAssassin's PerMsgStatus::get) --- */

static void buf_add(struct match_scratch *s, const char *p, size_t n)
{
	if (s->buf_oom)
		return;
	if (s->buflen + n + 1 > s->bufcap) {
		size_t cap = (s->buflen + n + 1) * 2;
		char *nb = mem_realloc(MEM_MATCH, s->buf, cap < 4096 ? 4096 : cap);

		if (!nb) {
			s->buf_oom = true;
			return;
		}
		s->buf = nb;
		s->bufcap = cap < 4096 ? 4096 : cap;
	}
	memcpy(s->buf + s->buflen, p, n);
	s->buflen += n;
	s->buf[s->buflen] = '\0';
}

static bool hname_is(const struct match_header *hd, const char *name)
{
	size_t n = strlen(name);

	return hd->name_len == n && strncasecmp(hd->name, name, n) == 0;
}

/* The instances a field names, in message order, through a callback. */
typedef void (*value_fn)(void *ctx, const char *p, size_t n);

struct addr_item {
	const char *addr;
	size_t addr_len;
	const char *name;
	size_t name_len;
};

static void trim_left(const char **p, size_t *n)
{
	while (*n && isspace((unsigned char)**p)) {
		(*p)++;
		(*n)--;
	}
}

static void trim(const char **p, size_t *n)
{
	while (*n && isspace((unsigned char)**p)) {
		(*p)++;
		(*n)--;
	}
	while (*n && isspace((unsigned char)(*p)[*n - 1]))
		(*n)--;
}

/* Splits an address list (RFC 5322, forgiving): commas outside quotes,
 * <...> and (...) separate items; "Name <a@b>", "a@b (Name)", "a@b".
 * Calls fn for each item that has an address or a name. Returns the count
 * of items with an address. */
/* the bytes addr_split() acts on */
static const uint8_t addr_special[256] = {
	['\\'] = 1, ['"'] = 1, ['('] = 1, [')'] = 1, ['<'] = 1, ['>'] = 1, [','] = 1, [';'] = 1,
};

static uint32_t addr_split(const char *p, size_t len,
			   void (*fn)(void *, const struct addr_item *), void *ctx)
{
	uint32_t count = 0;
	size_t i = 0;

	while (i < len) {
		size_t start = i;
		int angle = 0, paren = 0;
		bool quote = false;
		const char *lt = NULL, *gt = NULL, *po = NULL, *pc = NULL;
		struct addr_item it = { 0 };

		for (; i < len; i++) {
			char ch;

			/* a byte none of the tests below looks at changes
			 * nothing, in any state: skip a run of them */
			while (i < len && !addr_special[(uint8_t)p[i]])
				i++;
			if (i == len)
				break;
			ch = p[i];
			if (ch == '\\' && i + 1 < len) { i++; continue; }
			if (quote) { if (ch == '"') quote = false; continue; }
			if (ch == '"' && !paren) { quote = true; continue; }
			if (ch == '(') { if (!paren++) po = p + i; continue; }
			if (ch == ')' && paren) { if (!--paren) pc = p + i; continue; }
			if (paren)
				continue;
			if (ch == '<') { angle++; if (!lt) lt = p + i; continue; }
			if (ch == '>' && angle) { angle--; if (!gt) gt = p + i; continue; }
			if ((ch == ',' || ch == ';') && !angle)
				break;
		}
		if (lt && gt && gt > lt) {
			it.addr = lt + 1;
			it.addr_len = (size_t)(gt - lt - 1);
			it.name = p + start;
			it.name_len = (size_t)(lt - (p + start));
		} else {
			/* bare address, maybe with a (comment) name */
			const char *a = p + start, *e = p + i;

			if (po && pc && pc > po) {
				it.name = po + 1;
				it.name_len = (size_t)(pc - po - 1);
				e = po;
			}
			it.addr = a;
			it.addr_len = (size_t)(e - a);
			trim(&it.addr, &it.addr_len);
			/* a bare word without @ is a group name or junk, not an address */
			if (!memchr(it.addr, '@', it.addr_len))
				it.addr_len = 0;
		}
		trim(&it.addr, &it.addr_len);
		trim(&it.name, &it.name_len);
		if (it.name_len >= 2 && it.name[0] == '"' && it.name[it.name_len - 1] == '"') {
			it.name++;
			it.name_len -= 2;
		}
		if (it.addr_len)
			count++;
		if ((it.addr_len || it.name_len) && fn)
			fn(ctx, &it);
		i++;
	}
	return count;
}

struct extract_ctx {
	struct match_scratch *s;
	unsigned mods;
	uint32_t nvalues;
};

static void emit_item(struct extract_ctx *x, const char *p, size_t n)
{
	struct match_scratch *s = x->s;

	/* items joined with "\n" (SpamAssassin joins values that lack one) */
	if (x->nvalues)
		buf_add(s, "\n", 1);
	buf_add(s, p, n);
	x->nvalues++;
}

/* host part: after the last '@' of an address, else the first dotted word */
static bool find_host(const char *p, size_t n, bool is_addr, const char **h, size_t *hl)
{
	const char *at = NULL;

	for (size_t i = 0; i < n; i++)
		if (p[i] == '@')
			at = p + i;
	if (at) {
		const char *e = at + 1;

		while (e < p + n && !isspace((unsigned char)*e) && *e != '>' && *e != ')')
			e++;
		*h = at + 1;
		*hl = (size_t)(e - *h);
		return *hl > 0;
	}
	if (is_addr)
		return false;
	for (size_t i = 0; i < n;) {
		size_t j = i;
		bool dot = false;

		while (j < n && (isalnum((unsigned char)p[j]) || p[j] == '-' || p[j] == '.')) {
			dot |= p[j] == '.';
			j++;
		}
		if (dot && j > i && p[j - 1] != '.' && isalpha((unsigned char)p[j - 1])) {
			*h = p + i;
			*hl = j - i;
			return true;
		}
		i = j + 1;
	}
	return false;
}

/* Registered domain, approximately: the last two labels, three when the
 * second-level label is a common public suffix part (co.uk, com.au). No
 * public suffix list: docs/rules.md says so. */
static void trim_domain(const char **h, size_t *hl)
{
	int dots = 0;
	size_t i = *hl, cut = 0;

	while (i > 0) {
		i--;
		if ((*h)[i] == '.') {
			dots++;
			if (dots == 2) {
				size_t l2 = 0;
				const char *sl = *h + i + 1;

				while (sl[l2] != '.')
					l2++;
				if (l2 <= 3 && *hl - (i + 1 + l2 + 1) == 2)
					continue;   /* co.uk style: keep one more label */
				cut = i + 1;
				break;
			}
			if (dots == 3) {
				cut = i + 1;
				break;
			}
		}
	}
	*h += cut;
	*hl -= cut;
}

static bool find_ipv4(const char *p, size_t n, const char **ip, size_t *il)
{
	for (size_t i = 0; i < n; i++) {
		size_t j = i;
		int parts = 0;

		if (!isdigit((unsigned char)p[i]) || (i > 0 && (isdigit((unsigned char)p[i - 1]) || p[i - 1] == '.')))
			continue;
		for (;;) {
			size_t d = 0;
			unsigned v = 0;

			while (j < n && isdigit((unsigned char)p[j]) && d < 4)
				v = v * 10 + (unsigned)(p[j++] - '0'), d++;
			if (d == 0 || d > 3 || v > 255)
				break;
			parts++;
			if (parts == 4 || j >= n || p[j] != '.')
				break;
			j++;
		}
		if (parts == 4 && (j >= n || (!isdigit((unsigned char)p[j]) && p[j] != '.'))) {
			*ip = p + i;
			*il = j - i;
			return true;
		}
	}
	return false;
}

static void emit_post(struct extract_ctx *x, const char *p, size_t n, bool is_addr)
{
	const char *h;
	size_t hl;

	if (x->mods & (RULE_HDR_HOST | RULE_HDR_DOMAIN)) {
		if (!find_host(p, n, is_addr, &h, &hl))
			return;
		if (x->mods & RULE_HDR_DOMAIN)
			trim_domain(&h, &hl);
		emit_item(x, h, hl);
		return;
	}
	if (x->mods & (RULE_HDR_IP | RULE_HDR_REVIP)) {
		char rev[16];

		if (!find_ipv4(p, n, &h, &hl))
			return;
		if (x->mods & RULE_HDR_REVIP) {
			/* a.b.c.d -> d.c.b.a */
			const char *oct[4];
			size_t ol[4];
			int k = 0;
			size_t st = 0;

			for (size_t i = 0; i <= hl && k < 4; i++)
				if (i == hl || h[i] == '.') {
					oct[k] = h + st;
					ol[k++] = i - st;
					st = i + 1;
				}
			snprintf(rev, sizeof(rev), "%.*s.%.*s.%.*s.%.*s", (int)ol[3], oct[3], (int)ol[2],
				 oct[2], (int)ol[1], oct[1], (int)ol[0], oct[0]);
			emit_item(x, rev, strlen(rev));
			return;
		}
		emit_item(x, h, hl);
		return;
	}
	emit_item(x, p, n);
}

static void addr_cb(void *ctx, const struct addr_item *it)
{
	struct extract_ctx *x = ctx;

	if (x->mods & RULE_HDR_ADDR) {
		if (it->addr_len)
			emit_post(x, it->addr, it->addr_len, true);
	} else if (it->name_len) {
		emit_post(x, it->name, it->name_len, false);
	}
}

/* One instance value: plain/raw values end with "\n" (Node::get_header);
 * :addr/:name/... items do not and are joined with "\n". */
static void extract_value(struct extract_ctx *x, const char *p, size_t n)
{
	if (x->mods & (RULE_HDR_ADDR | RULE_HDR_NAME)) {
		addr_split(p, n, addr_cb, x);
		return;
	}
	if (x->mods & (RULE_HDR_HOST | RULE_HDR_DOMAIN | RULE_HDR_IP | RULE_HDR_REVIP)) {
		emit_post(x, p, n, false);
		return;
	}
	buf_add(x->s, p, n);
	buf_add(x->s, "\n", 1);
	x->nvalues++;
}

/* The instance values of field (before first/last selection). */
static uint32_t field_values(const struct match_msg *msg, const struct match_header *hs, uint32_t nh,
			     const char *field, bool raw, struct match_text *out, uint32_t max)
{
	uint32_t n = 0;
	static const char *const msgid[] = { "X-Message-Id", "Resent-Message-Id",
					     "X-Original-Message-ID", "Message-Id" };

	if (strcasecmp(field, "ToCc") == 0) {
		for (int pass = 0; pass < 2; pass++)
			for (uint32_t i = 0; i < nh && n < max; i++)
				if (hname_is(&hs[i], pass ? "Cc" : "To")) {
					out[n].p = raw ? hs[i].raw : hs[i].value;
					out[n++].len = raw ? hs[i].raw_len : hs[i].value_len;
				}
		return n;
	}
	if (strcmp(field, "MESSAGEID") == 0) {
		for (int k = 0; k < 4; k++)
			for (uint32_t i = 0; i < nh && n < max; i++)
				if (hname_is(&hs[i], msgid[k]) && (raw ? hs[i].raw_len : hs[i].value_len)) {
					out[n].p = raw ? hs[i].raw : hs[i].value;
					out[n++].len = raw ? hs[i].raw_len : hs[i].value_len;
				}
		return n;
	}
	if (msg && strcasecmp(field, "EnvelopeFrom") == 0) {
		if (msg->envelope_from && max) {
			out[0].p = msg->envelope_from;
			out[0].len = msg->envelope_from_len;
			return 1;
		}
		/* SpamAssassin falls back to headers naming the envelope sender */
		static const char *const ef[] = { "X-Envelope-From", "Envelope-Sender", "Return-Path" };

		for (int k = 0; k < 3; k++)
			for (uint32_t i = 0; i < nh; i++)
				if (hname_is(&hs[i], ef[k]) && max) {
					out[0].p = hs[i].value;
					out[0].len = hs[i].value_len;
					return 1;
				}
		return 0;
	}
	for (uint32_t i = 0; i < nh && n < max; i++)
		if (hname_is(&hs[i], field)) {
			out[n].p = raw ? hs[i].raw : hs[i].value;
			out[n++].len = raw ? hs[i].raw_len : hs[i].value_len;
		}
	return n;
}

#define MATCH_MAX_INSTANCES 1024    /* instances of one header looked at */

/* Builds the text of (field, mods) into s->buf. Returns the number of values
 * (0: the field is unset for SpamAssassin, if-unset applies). */
static uint32_t build_field(struct match_scratch *s, const struct match_msg *msg,
			    const struct match_header *hs, uint32_t nh, const char *field,
			    unsigned mods)
{
	struct match_text vals[64];
	struct match_text *v = vals;
	uint32_t n, from = 0, to;
	struct extract_ctx x = { .s = s, .mods = mods };
	bool raw = mods & RULE_HDR_RAW;

	s->buflen = 0;
	s->buf_oom = false;
	buf_add(s, "", 0);
	if (strcmp(field, "ALL") == 0) {
		for (uint32_t i = 0; i < nh; i++) {
			buf_add(s, hs[i].name, hs[i].name_len);
			buf_add(s, ": ", 2);
			if (raw)
				buf_add(s, hs[i].raw, hs[i].raw_len);
			else
				buf_add(s, hs[i].value, hs[i].value_len);
			buf_add(s, "\n", 1);
		}
		return nh;
	}
	n = field_values(msg, hs, nh, field, raw, v, 64);
	if (n == 64) {
		/* many instances (Received on a loop): count them all */
		v = mem_alloc(MEM_MATCH, MATCH_MAX_INSTANCES * sizeof(*v));
		if (v)
			n = field_values(msg, hs, nh, field, raw, v, MATCH_MAX_INSTANCES);
		else
			v = vals;
	}
	to = n;
	if (n && (mods & RULE_HDR_FIRST))
		to = 1;
	else if (n && (mods & RULE_HDR_LAST))
		from = n - 1;
	for (uint32_t i = from; i < to; i++)
		extract_value(&x, v[i].p, v[i].len);
	if (v != vals)
		mem_free(MEM_MATCH, v);
	return x.nvalues;
}

static void absent_pass(const struct match_db *d, struct match_hits *h)
{
	for (uint32_t i = 0; i < d->n; i++) {
		const struct match_entry *e = &d->e[i];

		if (e->dead)
			continue;
		if (e->negate ? e->absent_count == 0 : e->absent_count > 0)
			match_hits_add(h, e->rule, e->negate || !e->multiple ? 1 : e->absent_count);
	}
}

/* SpamAssassin's MIMEHeader plugin: every MIME part, the message itself
 * first, in document order (find_parts). A part's text is its last
 * instance of the field, decoded, with "\n" (get_header in scalar
 * context); with :raw the raw value as stored, folds kept, leading blanks
 * removed for parts other than the message (its parser splits at ":\s*"),
 * with "\n" (raw_header); ALL is every header of the part. A part without
 * the field reads the if-unset text ("" with :raw): absent_count, computed
 * at build. A rule hits on the first part whose text matches, counted
 * (tflags multiple) in that part alone; a negated rule hits when no part's
 * text matches. */
static int scan_mimeheader(struct match_scratch *s, const struct match_db *d,
			   const struct match_msg *msg, struct match_hits *h)
{
	const struct match_header *mh = msg->mime_headers;
	uint32_t n = mh ? msg->nmime_headers : 0, nparts = msg->nparts, i = 0;
	bool all = strcmp(d->field, "ALL") == 0, raw = d->mods & RULE_HDR_RAW;
	bool plain = !(d->mods & ~(unsigned)(RULE_HDR_RAW | RULE_HDR_FIRST | RULE_HDR_LAST));
	int rc = 0;

	if (!nparts && n)
		nparts = mh[n - 1].part + 1;
	begin_pass(s);
	s->first_wins = true;
	for (uint32_t p = 0; p < nparts; p++) {
		uint32_t start = i;
		const struct match_header *last = NULL;
		uint32_t nv;

		while (i < n && mh[i].part == p)
			i++;
		s->buf_oom = false;
		if (all) {
			build_field(s, NULL, mh + start, i - start, "ALL", d->mods);
			if (!s->buf_oom && scan_one(s, d, s->buf, s->buflen, false) < 0)
				rc = -EIO;
			continue;
		}
		for (uint32_t k = start; k < i; k++)
			if (hname_is(&mh[k], d->field)) {
				last = &mh[k];
				if (d->mods & RULE_HDR_FIRST)
					break;  /* breakwater's :first: the first instance */
			}
		nv = 0;
		if (last && plain) {
			const char *v = raw ? last->raw : last->value;
			size_t vl = raw ? last->raw_len : last->value_len;

			if (raw && p > 0)
				trim_left(&v, &vl);
			s->buflen = 0;
			s->buf_oom = false;
			buf_add(s, v, vl);
			buf_add(s, "\n", 1);
			nv = 1;
		} else if (last) {
			/* breakwater's other modifiers, on the part's last instance */
			nv = build_field(s, NULL, last, 1, d->field, d->mods);
		}
		if (s->buf_oom)
			continue;       /* counted in mem_stats.alloc_fail */
		if (nv == 0) {
			for (uint32_t k = 0; k < d->n; k++) {
				const struct match_entry *e = &d->e[k];

				if (!e->dead && e->absent_count)
					acc_add(s, k, e->multiple ? e->absent_count : 1);
			}
			continue;
		}
		if (scan_one(s, d, s->buf, s->buflen, false) < 0)
			rc = -EIO;
	}
	s->first_wins = false;
	end_pass(s, d, h);
	return rc;
}

int match_scan_headers(const struct match_set *ms, struct match_scratch *s,
		       const struct match_msg *msg, struct match_hits *h)
{
	int rc = 0;

	for (uint32_t i = 0; i < ms->ndbs; i++) {
		const struct match_db *d = &ms->dbs[i];
		uint32_t nv;

		if (d->cls == MATCH_CLASS_HEADER) {
			nv = build_field(s, msg, msg->headers, msg->nheaders, d->field, d->mods);
			if (s->buf_oom)
				continue;   /* counted in mem_stats.alloc_fail */
			if (nv == 0) {
				absent_pass(d, h);
				continue;
			}
			begin_pass(s);
			if (scan_one(s, d, s->buf, s->buflen, false) < 0)
				rc = -EIO;
			end_pass(s, d, h);
		} else if (d->cls == MATCH_CLASS_MIMEHEADER) {
			if (scan_mimeheader(s, d, msg, h) < 0)
				rc = -EIO;
		}
	}
	return rc;
}

/* --- native tests --- */

static bool field_exists(const struct match_msg *msg, const char *field)
{
	struct match_text v[1];

	if (strcmp(field, "ALL") == 0)
		return msg->nheaders > 0;
	return field_values(msg, msg->headers, msg->nheaders, field, false, v, 1) > 0;
}

static bool cmp_holds(enum rule_cmp c, double a, double b)
{
	switch (c) {
	case RULE_CMP_GT: return a > b;
	case RULE_CMP_GE: return a >= b;
	case RULE_CMP_LT: return a < b;
	case RULE_CMP_LE: return a <= b;
	case RULE_CMP_EQ: return a == b;
	case RULE_CMP_NE: return a != b;
	}
	return false;
}

static bool subject_all_caps(struct match_scratch *s, const struct match_msg *msg)
{
	uint32_t n = build_field(s, msg, msg->headers, msg->nheaders, "Subject", 0);
	const char *p = s->buf;
	size_t len = s->buflen, letters = 0;
	bool ws = false;

	if (!n)
		return false;
	trim(&p, &len);
	/* strip reply/forward prefixes (Bug 6805) */
	for (bool again = true; again;) {
		static const char *const pre[] = { "Re", "Fwd", "Fw", "Aw", "Antwort", "WG", "SV", "VB", "VS", "VL" };

		again = false;
		for (size_t k = 0; k < sizeof(pre) / sizeof(pre[0]); k++) {
			size_t pl = strlen(pre[k]);

			if (len > pl && strncasecmp(p, pre[k], pl) == 0 && p[pl] == ':') {
				p += pl + 1;
				len -= pl + 1;
				trim(&p, &len);
				again = true;
			}
		}
	}
	for (size_t i = 0; i < len; i++)
		ws |= isspace((unsigned char)p[i]) != 0;
	if (!ws || len < 10)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (islower((unsigned char)p[i]))
			return false;
		letters += isupper((unsigned char)p[i]) != 0;
	}
	if (!letters)
		return false;
	/* charsets that false-positive as capitals (CHARSETS_LIKELY_TO_FP_AS_CAPS) */
	n = build_field(s, msg, msg->headers, msg->nheaders, "Subject", RULE_HDR_RAW);
	if (n) {
		static const char *const cs[] = { "koi", "jp", "jis", "euc", "gb", "big5", "isoir",
						  "cp1251", "windows-1251", "georgianps", "pt154", "tis" };

		for (const char *q = s->buf; (q = strstr(q, "=?")) != NULL; q += 2) {
			const char *e = strchr(q + 2, '?');

			if (!e)
				break;
			for (size_t k = 0; k < sizeof(cs) / sizeof(cs[0]); k++) {
				const char *f = strcasestr(q + 2, cs[k]);

				if (f && f < e)
					return false;
			}
		}
	}
	return true;
}

static bool illegal_chars(struct match_scratch *s, const struct match_msg *msg, const struct rule *r)
{
	double ratio = strtod(r->eval_args[1], NULL);
	unsigned long cnt = strtoul(r->eval_args[2], NULL, 10);
	bool subject = strcasecmp(r->eval_args[0], "Subject") == 0;
	size_t illegal = 0, exempt = 0, non_ascii = 0, ctl = 0, len;
	const uint8_t *p;

	if (!build_field(s, msg, msg->headers, msg->nheaders, r->eval_args[0], RULE_HDR_RAW))
		return false;
	p = (const uint8_t *)s->buf;
	len = s->buflen;
	{
		bool nonspace = false;

		for (size_t i = 0; i < len; i++)
			nonspace |= !isspace(p[i]);
		if (!nonspace)
			return false;
	}
	for (size_t i = 0; i < len; i++) {
		uint8_t ch = p[i];

		non_ascii += ch >= 0x80;
		if (ch <= 0x08 || ch == 0x0b || ch == 0x0c || (ch >= 0x0e && ch <= 0x1f))
			ctl++;
		if (ch <= 0x08 || ch == 0x0b || ch == 0x0c || (ch >= 0x0e && ch <= 0x1f) || ch >= 0x7f)
			illegal++;
		exempt += ch == 0xa2 || ch == 0xa3 || ch == 0xae;
	}
	if (non_ascii && !ctl) {
		/* valid UTF-8 without controls is fine (SMTPUTF8 mail) */
		size_t i = 0;
		bool valid = true;

		while (i < len && valid) {
			uint8_t ch = p[i];
			int extra = ch < 0x80 ? 0 : (ch & 0xe0) == 0xc0 ? 1 : (ch & 0xf0) == 0xe0 ? 2 :
				    (ch & 0xf8) == 0xf0 ? 3 : -1;

			if (extra < 0 || i + (size_t)extra >= len + (extra ? 0 : 1)) {
				valid = extra == 0;
				break;
			}
			for (int k = 1; k <= extra; k++)
				if (i + (size_t)k >= len || (p[i + k] & 0xc0) != 0x80)
					valid = false;
			i += (size_t)extra + 1;
		}
		if (valid)
			return false;
	}
	if (illegal > 0 && subject && exempt == 1)
		illegal--;
	return len && (double)illegal / (double)len >= ratio && illegal >= cnt;
}

static bool unresolved_template(struct match_scratch *s, const struct match_msg *msg)
{
	static const char *const ok[] = { "X-VMS-To", "X-UIDL", "X-Face", "To", "Cc", "From",
		"Subject", "References", "In-Reply-To", "Message-Id", "X-Message-Id",
		"Resent-Message-Id", "X-Original-Message-Id" };

	(void)s;
	for (uint32_t i = 0; i < msg->nheaders; i++) {
		const struct match_header *hd = &msg->headers[i];
		bool found = false, exempt = false;

		for (size_t k = 0; k + 2 < hd->value_len; k++)
			if (hd->value[k] == '%' && isupper((unsigned char)hd->value[k + 1]) &&
			    (isupper((unsigned char)hd->value[k + 2]) || hd->value[k + 2] == '_' ||
			     hd->value[k + 2] == '-'))
				found = true;
		if (!found)
			continue;
		for (size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++)
			exempt |= hname_is(hd, ok[k]);
		if (!exempt)
			return true;
	}
	return false;
}

static uint32_t native_test(struct match_scratch *s, const struct match_msg *msg, const struct rule *r)
{
	switch (r->test) {
	case RULE_TEST_EXISTS:
		return field_exists(msg, r->field);
	case RULE_TEST_COUNT: {
		double v;

		if (r->mods & RULE_HDR_COUNT) {
			struct match_text *tmp = mem_alloc(MEM_MATCH, MATCH_MAX_INSTANCES * sizeof(*tmp));

			if (!tmp)
				return 0;
			v = strcmp(r->field, "ALL") == 0 ? msg->nheaders :
			    field_values(msg, msg->headers, msg->nheaders, r->field, false, tmp,
					 MATCH_MAX_INSTANCES);
			mem_free(MEM_MATCH, tmp);
		} else {
			/* addresses in every instance */
			struct match_text *tmp = mem_alloc(MEM_MATCH, MATCH_MAX_INSTANCES * sizeof(*tmp));
			uint32_t n;

			if (!tmp)
				return 0;
			n = field_values(msg, msg->headers, msg->nheaders, r->field, false, tmp,
					 MATCH_MAX_INSTANCES);
			v = 0;
			for (uint32_t i = 0; i < n; i++)
				v += addr_split(tmp[i].p, tmp[i].len, NULL, NULL);
			mem_free(MEM_MATCH, tmp);
		}
		return cmp_holds(r->cmp, v, r->cmp_value);
	}
	case RULE_TEST_EVAL:
		switch (r->eval) {
		case RULE_EVAL_MISSING_TO_HEADER: {
			uint32_t n = build_field(s, msg, msg->headers, msg->nheaders, "To", 0);
			bool empty = true;

			for (size_t i = 0; n && i < s->buflen; i++)
				empty &= s->buf[i] == '\n';
			if (!empty)
				return 0;
			n = build_field(s, msg, msg->headers, msg->nheaders, "Apparently-To", 0);
			for (size_t i = 0; n && i < s->buflen; i++)
				empty &= s->buf[i] == '\n';
			return empty;
		}
		case RULE_EVAL_HEADER_COUNT_RANGE: {
			/* distinct values, like the Perl grep(!$uniq{$_}++) */
			struct match_text *tmp = mem_alloc(MEM_MATCH, MATCH_MAX_INSTANCES * sizeof(*tmp));
			uint32_t n, uniq = 0;
			long lo = strtol(r->eval_args[1], NULL, 10), hi = strtol(r->eval_args[2], NULL, 10);

			if (!tmp)
				return 0;
			n = field_values(msg, msg->headers, msg->nheaders, r->eval_args[0], false, tmp,
					 MATCH_MAX_INSTANCES);
			for (uint32_t i = 0; i < n; i++) {
				bool dup = false;

				for (uint32_t k = 0; k < i && !dup; k++)
					dup = tmp[k].len == tmp[i].len && memcmp(tmp[k].p, tmp[i].p, tmp[i].len) == 0;
				uniq += !dup;
			}
			mem_free(MEM_MATCH, tmp);
			return (long)uniq >= lo && (long)uniq <= hi;
		}
		case RULE_EVAL_SUBJECT_ALL_CAPS:
			return subject_all_caps(s, msg);
		case RULE_EVAL_BODY_LENGTH:
			return msg->body_length_known &&
			       msg->body_length <= strtoull(r->eval_args[0], NULL, 10);
		case RULE_EVAL_UNRESOLVED_TEMPLATE:
			return unresolved_template(s, msg);
		case RULE_EVAL_ILLEGAL_CHARS:
			return illegal_chars(s, msg, r);
		default:
			return 0;
		}
	default:
		return 0;
	}
}

int match_scan_msg(const struct match_set *ms, struct match_scratch *s,
		   const struct match_msg *msg, struct match_hits *h)
{
	int rc = 0;

	if (match_scan_headers(ms, s, msg, h) < 0)
		rc = -EIO;
	if (match_scan_texts(ms, s, MATCH_CLASS_BODY, msg->body, msg->nbody,
			     msg->body_starts_with_subject, h) < 0)
		rc = -EIO;
	if (match_scan_texts(ms, s, MATCH_CLASS_RAWBODY, msg->rawbody, msg->nrawbody, false, h) < 0)
		rc = -EIO;
	if (msg->full) {
		struct match_text full = { msg->full, msg->full_len };

		if (match_scan_texts(ms, s, MATCH_CLASS_FULL, &full, 1, false, h) < 0)
			rc = -EIO;
	}
	if (match_scan_texts(ms, s, MATCH_CLASS_URI, msg->uris, msg->nuris, false, h) < 0)
		rc = -EIO;
	for (uint32_t i = 0; i < ms->nnative; i++) {
		const struct rule *r = &ms->rules->rules[ms->native[i]];
		uint32_t n = native_test(s, msg, r);

		if (n)
			match_hits_add(h, ms->native[i], n);
	}
	return rc;
}

/* ------------------------------------------------------------------ */

int rules_check(const char **dirs, int ndirs, FILE *out)
{
	struct rule_set *rs = rule_set_new();
	struct match_set *ms = NULL;
	struct match_build_opts o = { .nthreads = 0 };
	char err[512] = "", cache_dir[PATH_MAX];
	double t0 = now_s(), t_parse;
	int rc = 0;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	if (!rs) {
		fprintf(out, "check-rules: out of memory\n");
		return 2;
	}
	o.nthreads = ncpu > 1 ? (unsigned)(ncpu > 16 ? 16 : ncpu) : 1;
	if (match_cache_default_dir(cache_dir, sizeof(cache_dir)) == 0)
		o.cache_dir = cache_dir;
	for (int i = 0; i < ndirs; i++)
		if (rules_load_path(rs, dirs[i]) < 0) {
			fprintf(out, "check-rules: out of memory reading %s\n", dirs[i]);
			rc = 2;
			goto out;
		}
	if (rules_finish(rs) < 0) {
		fprintf(out, "check-rules: out of memory\n");
		rc = 2;
		goto out;
	}
	t_parse = now_s() - t0;
	ms = match_set_build(rs, &o, err, sizeof(err));
	rules_print_counts(rs, out);
	fprintf(out, "parse time: %.3f s\n", t_parse);
	if (!ms) {
		fprintf(out, "compile failed: %s\n", err);
		rc = 2;
	} else {
		const struct match_counts *c = match_set_counts(ms);

		fprintf(out, "compiled: exact %" PRIu64 ", prefilter+confirm %" PRIu64
			", pcre2 only %" PRIu64 ", native %" PRIu64 ", meta %" PRIu64
			", track %" PRIu64 ", regex failed %" PRIu64 "\n",
			c->kinds[MATCH_KIND_EXACT], c->kinds[MATCH_KIND_PREFILTER],
			c->kinds[MATCH_KIND_PCRE], c->native, c->metas, c->tracks, c->regex_failed);
		fprintf(out, "databases: %" PRIu64 " (%.1f MiB), compile time: %.3f s (%u threads; "
			"PCRE2 and classification %.3f s)\n",
			c->databases, (double)c->db_bytes / 1048576.0, c->compile_seconds, o.nthreads,
			c->prepare_seconds);
		{
			const struct match_full_info *fi = match_set_full(ms);

			fprintf(out, "full rules: %u; streamed (exact) in %u streaming database%s, "
				"%zu bytes of stream state per message; %u on the raw copy (PCRE2)%s\n",
				fi->rules, fi->stream_dbs, fi->stream_dbs == 1 ? "" : "s",
				fi->stream_dbs ? fi->stream_bytes : (size_t)0, fi->copy_rules,
				fi->need_copy ? ": a bounded copy is kept" : "");
		}
		if (o.cache_dir)
			fprintf(out, "cache: %s: hits %" PRIu64 ", misses %" PRIu64 " (invalid %" PRIu64
				"), writes %" PRIu64 ", errors %" PRIu64 ", pruned %" PRIu64 "\n",
				o.cache_dir, c->cache_hits, c->cache_misses, c->cache_invalid,
				c->cache_writes, c->cache_errors, c->cache_pruned);
		else
			fprintf(out, "cache: off (cache directory path too long)\n");
	}
	for (uint32_t i = 0; i < rs->nerrors; i++)
		fprintf(out, "%s:%u: %s\n", rs->errors[i].file, rs->errors[i].line, rs->errors[i].reason);
	if (rs->nerrors && rc == 0)
		rc = 1;
	fprintf(out, "%s\n", rc == 0 ? "rules OK" : "rules have errors");
out:
	match_set_free(ms);
	rule_set_free(rs);
	return rc;
}
