/* verdict: see verdict.h. */
#include "verdict.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bw-config.h"
#include "match.h"
#include "mem.h"
#include "message.h"
#include "rules.h"
#include "smtp.h"

#define VERDICT_MAX_PARAS 4096

struct verdict {
	struct rule_set *rules;
	struct match_set *ms;
	struct match_scratch *scratch;
	struct match_hits *hits;
	struct match_header *hdrs;
	uint32_t cap_hdrs;
	struct match_text *paras;
	uint32_t cap_paras;
	struct match_text *uris;
	uint32_t cap_uris;
	struct verdict_stats stats;
};

struct verdict *verdict_new(const char *const *dirs, int ndirs, FILE *errf,
			    char *err, size_t errlen)
{
	struct verdict *v = mem_calloc(MEM_RULES, 1, sizeof(*v));
	char cerr[512] = "";

	if (!v) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	v->rules = rule_set_new();
	if (!v->rules)
		goto fail_oom;
	for (int i = 0; i < ndirs; i++) {
		struct stat st;

		if (stat(dirs[i], &st) != 0) {
			snprintf(err, errlen, "cannot read rules %s: %s", dirs[i], strerror(errno));
			goto fail;
		}
		if (rules_load_path(v->rules, dirs[i]) < 0)
			goto fail_oom;
	}
	if (rules_finish(v->rules) < 0)
		goto fail_oom;
	if (v->rules->nerrors)
		goto fail_rules;
	{
		struct match_build_opts o = { .nthreads = 0 };
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		o.nthreads = ncpu > 1 ? (unsigned)(ncpu > 16 ? 16 : ncpu) : 1;
		v->ms = match_set_build(v->rules, &o, cerr, sizeof(cerr));
	}
	if (!v->ms) {
		snprintf(err, errlen, "cannot compile the rules: %s", cerr);
		goto fail;
	}
	if (v->rules->nerrors)
		goto fail_rules;
	v->scratch = match_scratch_new(v->ms);
	v->hits = match_hits_new(v->ms);
	if (!v->scratch || !v->hits)
		goto fail_oom;
	return v;

fail_rules:
	{
		const struct rule_error *e = &v->rules->errors[0];

		if (errf)
			for (uint32_t i = 0; i < v->rules->nerrors; i++)
				fprintf(errf, "%s:%u: %s\n", v->rules->errors[i].file,
					v->rules->errors[i].line, v->rules->errors[i].reason);
		snprintf(err, errlen, "%u error(s) in the rules, first: %s:%u: %s",
			 v->rules->nerrors, e->file, e->line, e->reason);
	}
	goto fail;
fail_oom:
	snprintf(err, errlen, "out of memory loading the rules");
fail:
	verdict_free(v);
	return NULL;
}

void verdict_free(struct verdict *v)
{
	if (!v)
		return;
	if (v->hits)
		match_hits_free(v->hits);
	if (v->scratch)
		match_scratch_free(v->scratch);
	match_set_free(v->ms);
	rule_set_free(v->rules);
	mem_free(MEM_RULES, v->hdrs);
	mem_free(MEM_RULES, v->paras);
	mem_free(MEM_RULES, v->uris);
	mem_free(MEM_RULES, v);
}

static bool grow(void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
	uint32_t c = *cap ? *cap : 32;
	void *p;

	if (need <= *cap)
		return true;
	while (c < need)
		c *= 2;
	p = mem_realloc(MEM_RULES, *arr, (size_t)c * elem);
	if (!p)
		return false;
	*arr = p;
	*cap = c;
	return true;
}

/* Splits the body view into paragraphs at blank lines, as SpamAssassin
 * matches body rules paragraph by paragraph (so a rule's .* never runs
 * from one paragraph into the next). The first paragraph is the Subject. */
static uint32_t split_paragraphs(struct verdict *v, const char *p, size_t len)
{
	uint32_t n = 0;
	size_t start = 0;

	while (start < len && n < VERDICT_MAX_PARAS) {
		const char *b = memmem(p + start, len - start, "\n\n", 2);
		size_t end = b ? (size_t)(b - p) : len;

		if (end > start) {
			if (!grow((void **)&v->paras, &v->cap_paras, n + 1, sizeof(*v->paras)))
				break;
			v->paras[n].p = p + start;
			v->paras[n].len = end - start;
			n++;
		}
		if (!b)
			break;
		start = end + 2;
		while (start < len && p[start] == '\n')
			start++;
	}
	if (n == VERDICT_MAX_PARAS && start < len) {
		/* the rest as one last paragraph: nothing goes unscanned */
		v->paras[n - 1].len = len - (size_t)(v->paras[n - 1].p - p);
	}
	return n;
}

const struct match_hits *verdict_message(struct verdict *v, const struct message *m,
					 const struct smtp_tx *tx)
{
	struct match_msg mm;
	struct match_text raw;
	uint32_t nh, nu;
	size_t blen = 0, rlen = 0;
	const uint8_t *body, *rawbody;

	if (!m)
		return NULL;
	memset(&mm, 0, sizeof(mm));
	nh = message_header_count(m);
	if (grow((void **)&v->hdrs, &v->cap_hdrs, nh ? nh : 1, sizeof(*v->hdrs))) {
		for (uint32_t i = 0; i < nh; i++) {
			const struct message_header *h = message_header_at(m, i);

			v->hdrs[i].name = h->name;
			v->hdrs[i].name_len = h->name_len;
			v->hdrs[i].value = h->decoded;
			v->hdrs[i].value_len = h->decoded_len;
			v->hdrs[i].raw = h->raw;
			v->hdrs[i].raw_len = h->raw_len;
		}
		mm.headers = v->hdrs;
		mm.nheaders = nh;
	}
	body = message_view(m, MESSAGE_VIEW_BODY, &blen);
	mm.body = v->paras;
	mm.nbody = body ? split_paragraphs(v, (const char *)body, blen) : 0;
	mm.body = v->paras;
	mm.body_starts_with_subject = true;
	rawbody = message_view(m, MESSAGE_VIEW_RAWBODY, &rlen);
	raw.p = (const char *)rawbody;
	raw.len = rlen;
	mm.rawbody = rawbody ? &raw : NULL;
	mm.nrawbody = rawbody ? 1 : 0;
	nu = message_uri_count(m);
	if (nu && grow((void **)&v->uris, &v->cap_uris, nu, sizeof(*v->uris))) {
		for (uint32_t i = 0; i < nu; i++) {
			size_t ul = 0;

			v->uris[i].p = message_uri_at(m, i, &ul);
			v->uris[i].len = ul;
		}
		mm.uris = v->uris;
		mm.nuris = nu;
	}
	if (tx && tx->mail_from) {
		mm.envelope_from = tx->mail_from;
		mm.envelope_from_len = strlen(tx->mail_from);
	}
	v->stats.full_skipped++;
	match_hits_reset(v->hits);
	if (match_scan_msg(v->ms, v->scratch, &mm, v->hits) < 0)
		v->stats.scan_errors++;
	match_score(v->ms, v->hits);
	v->stats.messages++;
	if (v->hits->action) {
		if (strcmp(v->hits->action, "pass") == 0)
			v->stats.actions[0]++;
		else if (strcmp(v->hits->action, "tag") == 0)
			v->stats.actions[1]++;
		else if (strcmp(v->hits->action, "block") == 0)
			v->stats.actions[2]++;
		else
			v->stats.actions[3]++;
	}
	return v->hits;
}

const char *verdict_rule_name(const struct verdict *v, uint32_t id)
{
	return id < v->rules->nrules ? v->rules->rules[id].name : "?";
}

double verdict_rule_score(const struct verdict *v, uint32_t id)
{
	return id < v->rules->nrules ? v->rules->rules[id].score : 0;
}

bool verdict_rule_reported(const struct verdict *v, uint32_t id)
{
	return id < v->rules->nrules && v->rules->rules[id].scored &&
	       v->rules->rules[id].score != 0;
}

const char *verdict_rule_describe(const struct verdict *v, uint32_t id)
{
	return id < v->rules->nrules ? v->rules->rules[id].describe : NULL;
}

const struct verdict_stats *verdict_get_stats(const struct verdict *v)
{
	return &v->stats;
}

void verdict_print_counts(const struct verdict *v, FILE *f)
{
	const struct match_counts *c = match_set_counts(v->ms);

	fprintf(f, "  rules:       %u loaded; %llu Hyperscan exact, %llu prefilter+PCRE2, %llu PCRE2 only, "
		"%llu native, %llu meta; compiled in %.2f s\n",
		v->rules->nrules, (unsigned long long)c->kinds[MATCH_KIND_EXACT],
		(unsigned long long)c->kinds[MATCH_KIND_PREFILTER],
		(unsigned long long)c->kinds[MATCH_KIND_PCRE], (unsigned long long)c->native,
		(unsigned long long)c->metas, c->compile_seconds);
}

const char *verdict_default_rules_dir(void)
{
	static char path[PATH_MAX];
	const char *env = getenv("BW_RULES_DIR");
	struct stat st;
	char exe[PATH_MAX - 64];
	ssize_t n;

	if (env && *env)
		return env;
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		char *slash;

		exe[n] = '\0';
		slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			snprintf(path, sizeof(path), "%s/../share/breakwater/rules", exe);
			if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
				return path;
		}
	}
	if (stat(BW_RULES_INSTALL_DIR, &st) == 0 && S_ISDIR(st.st_mode))
		return BW_RULES_INSTALL_DIR;
	snprintf(path, sizeof(path), "%s/rules", BW_SOURCE_ROOT);
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return path;
	return NULL;
}
