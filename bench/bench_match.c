/* bench_match: the matching ceiling. Hyperscan (and the PCRE2 confirms and
 * native tests that go with it) alone, scanning the same message text with
 * the same databases as the engine, and nothing else.
 *
 * Rules are loaded as the engine loads them (rules_load_path, rules_finish,
 * match_set_build with the same thread count and the same on-disk cache
 * directory, match_cache_default_dir(): BW_CACHE_DIR). Messages: with
 * --truth, the transactions of a gen-smtp-pcap.py capture that carried a
 * message (data: true), each the corpus file it names (relative to --root),
 * in capture order, with its MAIL FROM as the envelope sender; or the files
 * given. Each distinct message is read once, made into what SMTP carries
 * (mbox From_ line dropped, CRLF line ends, as gen-smtp-pcap.py sends it),
 * fed to the message stage with the engine's default limits, and turned into
 * the match_msg views by verdict_build_views(), the function the engine's
 * verdict itself uses; the views are copied out, so parsing is done once and
 * not timed. The timed loop is then, per message: match_hits_reset,
 * match_scan_msg, score_hits, over the whole list, --passes times.
 *
 * Output (stdout), one line each, for bench/report.py:
 *   bench_match_load rules=LABEL seconds=S messages=N distinct=D
 *       message_bytes=B view_bytes=V prepare_seconds=P  (P: parse + views)
 *   bench_match_pass rules=LABEL pass=I seconds=S messages=N msgps=X
 *       scanned_bytes=B mbps=Y hs_scans=H pcre_runs=R pass_n=.. tag=.. block=..
 *       other=.. score_sum=..
 * scanned_bytes is match_scratch_stats()'s byte count (text Hyperscan
 * scanned); mbps is that over the pass, 10^6 bytes/s.
 *
 * Usage: bench_match [--rules DIR]... [--label L] [--passes N]
 *                    (--truth FILE --root DIR [--limit N] | FILE...)
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "match.h"
#include "message.h"
#include "rules.h"
#include "score.h"
#include "verdict.h"

struct view {                   /* one distinct message, views copied */
	struct match_msg mm;
	void *block;
	size_t msg_bytes;       /* as fed (CRLF) */
	size_t view_bytes;
};

struct scan {                   /* one transaction to scan */
	uint32_t view;
	char *mail_from;        /* NULL: unknown */
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, const char *a)
{
	fprintf(stderr, "bench_match: ");
	fprintf(stderr, fmt, a);
	fprintf(stderr, "\n");
	exit(1);
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0, r;

	if (!f)
		return NULL;
	do {
		if (n + 65536 > cap) {
			cap = cap ? cap * 2 : 262144;
			buf = realloc(buf, cap);
			if (!buf)
				die("%s", "out of memory");
		}
		r = fread(buf + n, 1, cap - n, f);
		n += r;
	} while (r > 0);
	fclose(f);
	*len = n;
	return buf;
}

/* gen-smtp-pcap.py's normalise(): From_ line dropped, CRLF line ends, a
 * final CRLF. Returns a new buffer. */
static char *smtp_form(const char *raw, size_t len, size_t *out_len)
{
	char *o = malloc(2 * len + 3);
	size_t i = 0, n = 0;

	if (!o)
		die("%s", "out of memory");
	if (len >= 5 && memcmp(raw, "From ", 5) == 0) {
		const char *nl = memchr(raw, '\n', len);

		i = nl ? (size_t)(nl - raw) + 1 : len;
	}
	for (; i < len; i++) {
		if (raw[i] == '\r' && i + 1 < len && raw[i + 1] == '\n')
			continue;       /* CRLF: the LF writes it */
		if (raw[i] == '\n')
			o[n++] = '\r';
		o[n++] = raw[i];
	}
	if (n && !(n >= 2 && o[n - 2] == '\r' && o[n - 1] == '\n')) {
		o[n++] = '\r';
		o[n++] = '\n';
	}
	*out_len = n;
	return o;
}

/* Copies mm (headers, body, rawbody, URIs; not the envelope) into one
 * block; every string gets a NUL after it, like the parser's. */
static void copy_views(const struct match_msg *in, struct view *out)
{
	size_t sz = 0, texts;
	char *b, *t;
	struct match_header *h;
	struct match_text *x;

	texts = (size_t)in->nbody + in->nrawbody + in->nuris;
	sz += sizeof(*h) * in->nheaders + sizeof(*x) * texts;
	for (uint32_t i = 0; i < in->nheaders; i++)
		sz += in->headers[i].name_len + in->headers[i].value_len +
		      in->headers[i].raw_len + 3;
	for (uint32_t i = 0; i < in->nbody; i++)
		sz += in->body[i].len + 1;
	for (uint32_t i = 0; i < in->nrawbody; i++)
		sz += in->rawbody[i].len + 1;
	for (uint32_t i = 0; i < in->nuris; i++)
		sz += in->uris[i].len + 1;
	b = malloc(sz ? sz : 1);
	if (!b)
		die("%s", "out of memory");
	h = (struct match_header *)b;
	x = (struct match_text *)(h + in->nheaders);
	t = (char *)(x + texts);
#define PUT(dst, src, n) do { \
		memcpy(t, (src), (n)); t[(n)] = '\0'; (dst) = t; t += (n) + 1; \
	} while (0)
	memset(&out->mm, 0, sizeof(out->mm));
	for (uint32_t i = 0; i < in->nheaders; i++) {
		const struct match_header *s = &in->headers[i];

		h[i] = *s;
		PUT(h[i].name, s->name, s->name_len);
		PUT(h[i].value, s->value, s->value_len);
		PUT(h[i].raw, s->raw, s->raw_len);
	}
	out->mm.headers = h;
	out->mm.nheaders = in->nheaders;
	out->mm.body = x;
	for (uint32_t i = 0; i < in->nbody; i++, x++) {
		x->len = in->body[i].len;
		PUT(x->p, in->body[i].p, x->len);
	}
	out->mm.nbody = in->nbody;
	out->mm.body_starts_with_subject = in->body_starts_with_subject;
	out->mm.rawbody = in->nrawbody ? x : NULL;
	for (uint32_t i = 0; i < in->nrawbody; i++, x++) {
		x->len = in->rawbody[i].len;
		PUT(x->p, in->rawbody[i].p, x->len);
	}
	out->mm.nrawbody = in->nrawbody;
	out->mm.uris = in->nuris ? x : NULL;
	for (uint32_t i = 0; i < in->nuris; i++, x++) {
		x->len = in->uris[i].len;
		PUT(x->p, in->uris[i].p, x->len);
	}
	out->mm.nuris = in->nuris;
#undef PUT
	out->mm.full = NULL;            /* the engine does not keep it either */
	out->mm.body_length = in->body_length;
	out->mm.body_length_known = in->body_length_known;
	out->block = b;
	out->view_bytes = sz;
}

/* The string value of "key": in one JSON line (simple escapes), or NULL. */
static char *json_str(const char *line, const char *key)
{
	char pat[64];
	const char *p;
	char *o, *q;

	snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	p = strstr(line, pat);
	if (!p)
		return NULL;
	p += strlen(pat);
	o = q = malloc(strlen(p) + 1);
	if (!o)
		die("%s", "out of memory");
	for (; *p && *p != '"'; p++) {
		if (*p == '\\' && p[1]) {
			p++;
			*q++ = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
		} else {
			*q++ = *p;
		}
	}
	*q = '\0';
	return o;
}

/* distinct file names -> view index (linear probing on a string hash) */
struct name_map {
	char **names;
	uint32_t *idx;
	size_t cap;
};

static uint32_t map_get(struct name_map *m, const char *name, uint32_t next, int *is_new)
{
	uint64_t h = 1469598103934665603ull;
	size_t i;

	for (const char *p = name; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	for (i = h & (m->cap - 1); m->names[i]; i = (i + 1) & (m->cap - 1))
		if (strcmp(m->names[i], name) == 0) {
			*is_new = 0;
			return m->idx[i];
		}
	m->names[i] = strdup(name);
	m->idx[i] = next;
	*is_new = 1;
	return next;
}

int main(int argc, char **argv)
{
	const char *dirs[16], *label = NULL, *truth = NULL, *root = NULL;
	int ndirs = 0, passes = 3;
	long limit = -1;
	char **files = NULL, err[512] = "", cache[PATH_MAX], path[PATH_MAX];
	size_t nfiles = 0;
	struct scan *scans = NULL;
	size_t nscans = 0, capscans = 0;
	struct view *views = NULL;
	uint32_t nviews = 0;
	struct name_map map = { 0 };
	struct rule_set *rs;
	struct match_set *ms;
	struct match_build_opts o = { .nthreads = 0 };
	struct match_scratch *s;
	struct match_hits *hits;
	struct verdict_set *vset;
	struct verdict *vb;
	struct message *m;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t msg_bytes = 0, view_bytes = 0;
	double t0, t_load, t_prep;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--rules") && i + 1 < argc) {
			if (ndirs == 16)
				die("%s", "too many --rules");
			dirs[ndirs++] = argv[++i];
		} else if (!strcmp(a, "--label") && i + 1 < argc) {
			label = argv[++i];
		} else if (!strcmp(a, "--passes") && i + 1 < argc) {
			passes = atoi(argv[++i]);
		} else if (!strcmp(a, "--truth") && i + 1 < argc) {
			truth = argv[++i];
		} else if (!strcmp(a, "--root") && i + 1 < argc) {
			root = argv[++i];
		} else if (!strcmp(a, "--limit") && i + 1 < argc) {
			limit = atol(argv[++i]);
		} else if (a[0] == '-') {
			fprintf(stderr, "usage: bench_match [--rules DIR]... [--label L] [--passes N]\n"
				"                   (--truth FILE --root DIR [--limit N] | FILE...)\n");
			return 2;
		} else {
			files = realloc(files, (nfiles + 1) * sizeof(*files));
			files[nfiles++] = argv[i];
		}
	}
	if (!ndirs) {
		const char *d = verdict_default_rules_dir();

		if (!d)
			die("%s", "no rule directory (give --rules DIR)");
		dirs[ndirs++] = d;
	}
	if (!label)
		label = dirs[0];
	if (passes < 1)
		passes = 1;
	if (!truth && !nfiles)
		die("%s", "give --truth FILE --root DIR or message files");
	if (truth && !root)
		die("%s", "--truth needs --root (the folder the truth's file names are relative to)");

	/* --- the rules, as verdict_new() loads them ----------------------- */
	t0 = now_s();
	rs = rule_set_new();
	if (!rs)
		die("%s", "out of memory");
	for (int i = 0; i < ndirs; i++)
		if (rules_load_path(rs, dirs[i]) < 0)
			die("out of memory loading %s", dirs[i]);
	if (rules_finish(rs) < 0)
		die("%s", "out of memory");
	if (rs->nerrors)
		die("the rules have errors (first: %s); see breakwater check-rules",
		    rs->errors[0].reason);
	o.nthreads = ncpu > 1 ? (unsigned)(ncpu > 16 ? 16 : ncpu) : 1;
	if (match_cache_default_dir(cache, sizeof(cache)) == 0)
		o.cache_dir = cache;
	ms = match_set_build(rs, &o, err, sizeof(err));
	if (!ms)
		die("cannot compile the rules: %s", err);
	s = match_scratch_new(ms);
	hits = match_hits_new(ms);
	if (!s || !hits)
		die("%s", "out of memory");
	t_load = now_s() - t0;

	/* --- the message list ----------------------------------------------- */
	map.cap = 1 << 16;
	map.names = calloc(map.cap, sizeof(*map.names));
	map.idx = calloc(map.cap, sizeof(*map.idx));
	if (truth) {
		FILE *f = fopen(truth, "r");
		char *line = NULL;
		size_t lcap = 0;

		if (!f)
			die("cannot read %s", truth);
		while (getline(&line, &lcap, f) > 0 && (limit < 0 || (long)nscans < limit)) {
			char *file, *from;
			int is_new;
			uint32_t v;

			if (!strstr(line, "\"data\":true"))
				continue;       /* no content: the engine scans nothing */
			file = json_str(line, "file");
			if (!file)
				continue;
			from = json_str(line, "mail_from");
			if (nviews * 2 >= map.cap)
				die("%s", "too many distinct messages");
			v = map_get(&map, file, nviews, &is_new);
			if (is_new) {
				files = realloc(files, (nfiles + 1) * sizeof(*files));
				snprintf(path, sizeof(path), "%s/%s", root, file);
				files[nfiles++] = strdup(path);
				nviews++;
			}
			free(file);
			if (nscans == capscans) {
				capscans = capscans ? capscans * 2 : 4096;
				scans = realloc(scans, capscans * sizeof(*scans));
			}
			scans[nscans].view = v;
			scans[nscans].mail_from = from;
			nscans++;
		}
		free(line);
		fclose(f);
	} else {
		scans = calloc(nfiles, sizeof(*scans));
		for (size_t i = 0; i < nfiles; i++)
			scans[i].view = (uint32_t)i;
		nscans = nfiles;
		nviews = (uint32_t)nfiles;
	}
	if (!nscans)
		die("%s", "no messages");

	/* --- parse once: message stage + the engine's views ---------------- */
	t0 = now_s();
	vset = verdict_set_new(NULL, 0, NULL, err, sizeof(err));   /* no rules: views only */
	if (!vset)
		die("cannot make the view builder: %s", err);
	vb = verdict_new(vset);
	if (!vb)
		die("%s", "out of memory");
	m = message_new(NULL, NULL, NULL);                    /* default limits */
	views = calloc(nviews, sizeof(*views));
	if (!m || !views)
		die("%s", "out of memory");
	for (uint32_t i = 0; i < nviews; i++) {
		size_t len = 0, wl = 0;
		char *raw = read_all(files[i], &len), *wire;
		struct match_msg mm;

		if (!raw)
			die("cannot read %s", files[i]);
		wire = smtp_form(raw, len, &wl);
		free(raw);
		message_reset(m);
		message_feed(m, (const uint8_t *)wire, wl);
		message_end(m);
		verdict_build_views(vb, m, NULL, &mm);
		copy_views(&mm, &views[i]);
		views[i].msg_bytes = wl;
		free(wire);
	}
	message_free(m);
	verdict_free(vb);
	verdict_set_free(vset);
	t_prep = now_s() - t0;
	for (size_t i = 0; i < nscans; i++) {
		msg_bytes += views[scans[i].view].msg_bytes;
		view_bytes += views[scans[i].view].view_bytes;
	}
	printf("bench_match_load rules=%s seconds=%.3f messages=%zu distinct=%u "
	       "message_bytes=%llu view_bytes=%llu prepare_seconds=%.3f rules_loaded=%u\n",
	       label, t_load, nscans, nviews, (unsigned long long)msg_bytes,
	       (unsigned long long)view_bytes, t_prep, rs->nrules);
	fflush(stdout);

	/* --- the timed passes ------------------------------------------------ */
	for (int p = 1; p <= passes; p++) {
		const struct match_scan_stats *st = match_scratch_stats(s);
		uint64_t b0 = st->bytes, sc0 = st->scans, pr0 = st->pcre_runs;
		uint64_t act[4] = { 0, 0, 0, 0 };
		double sum = 0, t;

		t0 = now_s();
		for (size_t i = 0; i < nscans; i++) {
			struct match_msg mm = views[scans[i].view].mm;

			if (scans[i].mail_from) {
				mm.envelope_from = scans[i].mail_from;
				mm.envelope_from_len = strlen(scans[i].mail_from);
			}
			match_hits_reset(hits);
			match_scan_msg(ms, s, &mm, hits);
			score_hits(rs, hits);
			sum += hits->score;
			if (!hits->action || !strcmp(hits->action, "pass"))
				act[0]++;
			else if (!strcmp(hits->action, "tag"))
				act[1]++;
			else if (!strcmp(hits->action, "block"))
				act[2]++;
			else
				act[3]++;
		}
		t = now_s() - t0;
		printf("bench_match_pass rules=%s pass=%d seconds=%.4f messages=%zu msgps=%.1f "
		       "scanned_bytes=%llu mbps=%.2f hs_scans=%llu pcre_runs=%llu "
		       "pass_n=%llu tag=%llu block=%llu other=%llu score_sum=%.2f\n",
		       label, p, t, nscans, nscans / t, (unsigned long long)(st->bytes - b0),
		       (st->bytes - b0) / t / 1e6, (unsigned long long)(st->scans - sc0),
		       (unsigned long long)(st->pcre_runs - pr0), (unsigned long long)act[0],
		       (unsigned long long)act[1], (unsigned long long)act[2],
		       (unsigned long long)act[3], sum);
		fflush(stdout);
	}

	for (uint32_t i = 0; i < nviews; i++)
		free(views[i].block);
	free(views);
	for (size_t i = 0; i < nscans; i++)
		free(scans[i].mail_from);
	free(scans);
	match_hits_free(hits);
	match_scratch_free(s);
	match_set_free(ms);
	rule_set_free(rs);
	return 0;
}
