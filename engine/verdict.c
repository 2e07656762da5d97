/* verdict: see verdict.h. */
#include "verdict.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "bw-config.h"
#include "counters.h"
#include "match.h"
#include "mem.h"
#include "message.h"
#include "stage_clock.h"
#include "rules.h"
#include "score.h"
#include "smtp.h"
#include "storm.h"

#define VERDICT_MAX_PARAS 4096
#define VERDICT_MAX_RCPT 1000

/* One loaded rule set, shared by every context made on it. Read-only once
 * verdict_set_new() returns, except the tracker group at the end, which
 * the contexts write under storm_mu when there are several (nctx > 1). */
struct verdict_set {
	struct rule_set *rules;
	struct match_set *ms;
	struct message_wants wants;      /* what a message must keep for these rules */
	struct storm_rule *srules;       /* as given to storm_new (names borrowed from rules) */
	uint32_t *storm_rule_id;         /* storm rule index -> rule id */
	uint32_t n_storm;
	bool need_body_hash;             /* a track rule counts or keys on fingerprint */
	unsigned nctx;                   /* contexts made on the set and not yet freed */
	void (*on_event)(void *user, const struct storm_event *ev);
	void *event_user;
	/* the tracker group: last, away from what every message reads */
	pthread_mutex_t storm_mu;        /* held around the tracker when nctx > 1 */
	struct storm_tracker *storm;     /* NULL when the rules have no track rule */
	struct storm_sink *sink;         /* the tracker's callback target, moves with it */
	/* the tracker's events, whichever context was in it; they move with
	 * the tracker when a reload adopts it */
	uint64_t storm_events_up, storm_events_down;
};

/* One worker's context on a set: everything it writes while scanning. */
struct verdict {
	struct verdict_set *set;         /* borrowed: outlives the context */
	/* the set's, copied: read on every message and every piece of a
	 * streamed one, from the worker's own cache lines */
	struct rule_set *rules;
	struct match_set *ms;
	struct match_scratch *scratch;
	struct match_hits *hits;
	struct match_header *hdrs;
	uint32_t cap_hdrs;
	struct match_header *mhdrs;      /* every MIME part's headers (mimeheader) */
	uint32_t cap_mhdrs;
	struct verdict_stream *streams;  /* full-rule states of messages in flight */
	uint64_t stream_bytes;           /* their stream state, against the cap */
	struct match_text *paras;
	uint32_t cap_paras;
	char *norm;                      /* the body view, normalised (see body_paragraphs) */
	uint32_t cap_norm;
	struct match_text *uris;
	uint32_t cap_uris;
	struct match_text raw;           /* the rawbody view of the last message */
	struct storm_hits shits;         /* of the last verdict_tx() */
	struct score_report report;      /* of the last message or transaction */
	struct score_hit *report_buf;    /* its hits: room for every rule */
	const char *rcpt_ptrs[VERDICT_MAX_RCPT];
	uint8_t rcpt_status[VERDICT_MAX_RCPT];
	struct verdict_stats stats;      /* its own; storm event counts stay 0 here */
};

/* A message in flight's full-rule state: the message stage's tap object,
 * freed by the message (vstream_release). */
struct verdict_stream {
	struct verdict *v;               /* NULL once its context is gone (reload) */
	struct verdict_stream *prev, *next;
	struct match_stream *st;         /* NULL: no stream (none needed, capped, oom) */
	size_t bytes;                    /* st's size, counted in v->stream_bytes */
};

/* The track grammar's words (rules.c) mapped to the tracker's fields. One
 * vocabulary in two enums is a debt: the parser should use storm_field. */
static enum storm_field track_field(enum track_item it, bool as_key)
{
	switch (it) {
	case TRACK_ITEM_NONE: return as_key ? STORM_F_NONE : STORM_F_MESSAGE;
	case TRACK_ITEM_RCPT: return STORM_F_RCPT;
	case TRACK_ITEM_SENDER: return STORM_F_MAIL_FROM;
	case TRACK_ITEM_CLIENT_IP: return STORM_F_CLIENT_IP;
	case TRACK_ITEM_MESSAGE_ID: return STORM_F_MESSAGE_ID;
	case TRACK_ITEM_HELO: return STORM_F_HELO;
	case TRACK_ITEM_FINGERPRINT: return STORM_F_BODY_HASH;
	case TRACK_ITEM_REJECTED_RCPT: return STORM_F_REJECTED_RCPT;
	case TRACK_ITEM_SENDER_DOMAIN: return STORM_F_MAIL_FROM_DOMAIN;
	case TRACK_ITEM_OVERQUOTA_RCPT: return STORM_F_OVERQUOTA_RCPT;
	case TRACK_ITEM_NULL_SENDER: return STORM_F_NULL_SENDER;
	case TRACK_ITEM_ACCEPTED_RCPT: return STORM_F_ACCEPTED_RCPT;
	case TRACK_ITEM_AUTO_SUBMITTED: return STORM_F_AUTO_SUBMITTED;
	case TRACK_ITEM_CLIENT_NET: return STORM_F_CLIENT_NET;
	default: return STORM_F_NONE;   /* rcpt_domain, auth_user, global: not tracked yet */
	}
}

/* The tracker calls back through this, not the set itself, so that a
 * reload can hand the tracker (and its windows) to the new set. */
struct storm_sink {
	struct verdict_set *s;
};

/* Runs on the thread of the context in the tracker (under storm_mu when
 * the set has several contexts). */
static void on_storm_event(void *user, const struct storm_event *ev)
{
	struct verdict_set *s = ((struct storm_sink *)user)->s;

	if (ev->dir == STORM_UP)
		s->storm_events_up++;
	else
		s->storm_events_down++;
	if (s->on_event)
		s->on_event(s->event_user, ev);
}

/* Builds the storm tracker from the set's track rules. Returns 0, or -1
 * with the reason (naming the rule's file:line) in err. */
static int storm_setup(struct verdict_set *s, char *err, size_t errlen)
{
	struct rule_set *rs = s->rules;
	struct storm_rule *sr;
	struct storm_config cfg;

	if (!rs->ntracks)
		return 0;
	sr = mem_calloc(MEM_STORM, rs->ntracks, sizeof(*sr));
	s->storm_rule_id = mem_calloc(MEM_STORM, rs->ntracks, sizeof(*s->storm_rule_id));
	if (!sr || !s->storm_rule_id) {
		mem_free(MEM_STORM, sr);
		snprintf(err, errlen, "out of memory setting up the storm tracker");
		return -1;
	}
	for (uint32_t i = 0; i < rs->ntracks; i++) {
		const struct track_def *td = &rs->tracks[i];
		const struct rule *r = &rs->rules[td->rule];
		struct storm_rule *o = &sr[s->n_storm];
		char why[256];

		o->name = r->name;
		o->kind = td->measure == TRACK_COUNT ? STORM_COUNT :
			  td->measure == TRACK_DISTINCT ? STORM_DISTINCT : STORM_RATIO;
		o->what = track_field(td->item, false);   /* count without ITEM: transactions */
		o->per = track_field(td->key, true);
		o->window_ns = td->window_ms * 1000000ull;
		o->threshold = td->threshold;
		o->min = td->min_events;
		o->score = r->score;
		if (td->cmp != RULE_CMP_GT) {
			snprintf(err, errlen, "%s:%u: track %s: only '>' thresholds are measured",
				 r->file, r->line, r->name);
			goto fail;
		}
		if (o->what == STORM_F_NONE || o->per == STORM_F_NONE) {
			snprintf(err, errlen, "%s:%u: track %s: %s is not tracked yet",
				 r->file, r->line, r->name,
				 o->per == STORM_F_NONE ? track_item_name(td->key)
							: track_item_name(td->item));
			goto fail;
		}
		if (storm_rule_check(o, why, sizeof(why)) != 0) {
			snprintf(err, errlen, "%s:%u: track %s: %s", r->file, r->line, r->name, why);
			goto fail;
		}
		if (o->what == STORM_F_BODY_HASH || o->per == STORM_F_BODY_HASH)
			s->need_body_hash = true;
		s->storm_rule_id[s->n_storm++] = td->rule;
	}
	s->sink = mem_calloc(MEM_STORM, 1, sizeof(*s->sink));
	if (!s->sink) {
		snprintf(err, errlen, "out of memory setting up the storm tracker");
		goto fail;
	}
	s->sink->s = s;
	memset(&cfg, 0, sizeof(cfg));
	cfg.mem_cap = 512ull << 20;
	cfg.at_cap = STORM_CAP_EVICT;
	cfg.on_event = on_storm_event;
	cfg.user = s->sink;
	s->srules = sr;
	s->storm = storm_new(&cfg, sr, s->n_storm);
	if (!s->storm) {
		snprintf(err, errlen, "cannot set up the storm tracker");
		return -1;
	}
	return 0;
fail:
	mem_free(MEM_STORM, sr);
	return -1;
}

/* What a message must keep for these rules (the message stage does only
 * that work): the URI list for uri rules; the text views for body, rawbody
 * and uri rules and for a track rule on the body fingerprint; the header
 * list for header and mimeheader rules; MIME parts' headers for mimeheader
 * rules. Asked once per rule set, not per message. */
static void wants_setup(struct verdict_set *s)
{
	const uint64_t *t = s->rules->counts.by_type;

	s->wants.uris = t[RULE_TYPE_URI] > 0;
	s->wants.text = t[RULE_TYPE_BODY] || t[RULE_TYPE_RAWBODY] || t[RULE_TYPE_URI] ||
			s->need_body_hash;
	s->wants.part_headers = t[RULE_TYPE_MIMEHEADER] > 0;
	s->wants.headers = t[RULE_TYPE_HEADER] > 0 || t[RULE_TYPE_MIMEHEADER] > 0;
}

struct verdict_set *verdict_set_new(const char *const *dirs, int ndirs, FILE *errf,
				    char *err, size_t errlen)
{
	struct verdict_set *s = mem_calloc(MEM_RULES, 1, sizeof(*s));
	char cerr[512] = "";

	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&s->storm_mu, NULL);
	s->rules = rule_set_new();
	if (!s->rules)
		goto fail_oom;
	for (int i = 0; i < ndirs; i++) {
		struct stat st;

		if (stat(dirs[i], &st) != 0) {
			snprintf(err, errlen, "cannot read rules %s: %s", dirs[i], strerror(errno));
			goto fail;
		}
		if (rules_load_path(s->rules, dirs[i]) < 0)
			goto fail_oom;
	}
	if (rules_finish(s->rules) < 0)
		goto fail_oom;
	if (s->rules->nerrors)
		goto fail_rules;
	{
		struct match_build_opts o = { .nthreads = 0 };
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		char cache[PATH_MAX];

		o.nthreads = ncpu > 1 ? (unsigned)(ncpu > 16 ? 16 : ncpu) : 1;
		/* compiled databases are cached on disk: a warm start does not
		 * recompile (BW_CACHE_DIR="" would still pick a default; the
		 * cache is off only when no directory can be named) */
		if (match_cache_default_dir(cache, sizeof(cache)) == 0)
			o.cache_dir = cache;
		s->ms = match_set_build(s->rules, &o, cerr, sizeof(cerr));
	}
	if (!s->ms) {
		snprintf(err, errlen, "cannot compile the rules: %s", cerr);
		goto fail;
	}
	if (s->rules->nerrors)
		goto fail_rules;
	if (storm_setup(s, err, errlen) != 0)
		goto fail;
	wants_setup(s);
	return s;

fail_rules:
	{
		const struct rule_error *e = &s->rules->errors[0];

		if (errf)
			for (uint32_t i = 0; i < s->rules->nerrors; i++)
				fprintf(errf, "%s:%u: %s\n", s->rules->errors[i].file,
					s->rules->errors[i].line, s->rules->errors[i].reason);
		snprintf(err, errlen, "%u error(s) in the rules, first: %s:%u: %s",
			 s->rules->nerrors, e->file, e->line, e->reason);
	}
	goto fail;
fail_oom:
	snprintf(err, errlen, "out of memory loading the rules");
fail:
	verdict_set_free(s);
	return NULL;
}

void verdict_set_free(struct verdict_set *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->storm_mu);
	storm_free(s->storm);
	mem_free(MEM_STORM, s->sink);
	mem_free(MEM_STORM, s->srules);
	mem_free(MEM_STORM, s->storm_rule_id);
	match_set_free(s->ms);
	rule_set_free(s->rules);
	mem_free(MEM_RULES, s);
}

struct verdict *verdict_new(struct verdict_set *s)
{
	struct verdict *v = mem_calloc(MEM_RULES, 1, sizeof(*v));

	if (!v)
		return NULL;
	v->set = s;
	v->rules = s->rules;
	v->ms = s->ms;
	v->scratch = match_scratch_new(v->ms);
	v->hits = match_hits_new(v->ms);
	/* a message hits each rule once at most: room for all of them, so a
	 * report is never cut (touched only as far as a message's hits go) */
	v->report_buf = mem_alloc(MEM_MATCH, (v->rules->nrules ? v->rules->nrules : 1) *
				  sizeof(*v->report_buf));
	s->nctx++;
	if (!v->scratch || !v->hits || !v->report_buf) {
		verdict_free(v);
		return NULL;
	}
	return v;
}

void verdict_merge_stats(struct verdict *into, const struct verdict *from)
{
	COUNTERS_ADD(&into->stats, &from->stats);
}

void verdict_free(struct verdict *v)
{
	if (!v)
		return;
	/* messages still in flight (a reload) keep their state objects, which
	 * their message frees; the streams, tied to these rules, go now */
	while (v->streams) {
		struct verdict_stream *vs = v->streams;

		v->streams = vs->next;
		match_stream_free(vs->st);
		vs->st = NULL;
		vs->v = NULL;
		vs->prev = vs->next = NULL;
	}
	v->set->nctx--;
	mem_free(MEM_MATCH, v->report_buf);
	if (v->hits)
		match_hits_free(v->hits);
	if (v->scratch)
		match_scratch_free(v->scratch);
	mem_free(MEM_RULES, v->hdrs);
	mem_free(MEM_RULES, v->mhdrs);
	mem_free(MEM_RULES, v->paras);
	mem_free(MEM_RULES, v->norm);
	mem_free(MEM_RULES, v->uris);
	mem_free(MEM_RULES, v);
}

/* --- full rules ---------------------------------------------------------- */

static void vstream_feed(void *obj, const uint8_t *p, size_t n)
{
	struct verdict_stream *vs = obj;
	unsigned prev;

	if (!vs->v || !vs->st)
		return;
	prev = stage_enter(STAGE_MATCH);   /* --stage-times */
	/* a failure is counted (scratch stats) and reported at the close */
	(void)match_stream_feed(vs->v->ms, vs->v->scratch, vs->st, p, n);
	stage_enter(prev);
}

static void vstream_release(void *obj)
{
	struct verdict_stream *vs = obj;

	if (vs->v) {
		if (vs->prev)
			vs->prev->next = vs->next;
		else
			vs->v->streams = vs->next;
		if (vs->next)
			vs->next->prev = vs->prev;
		vs->v->stream_bytes -= vs->bytes;
	}
	match_stream_free(vs->st);
	mem_free(MEM_MATCH, vs);
}

static const struct message_tap vstream_tap = { vstream_feed, vstream_release };

void verdict_begin(struct verdict *v, struct message *m)
{
	const struct match_full_info *fi = match_set_full(v->ms);
	struct verdict_stream *vs;

	if (!fi->rules)
		return;
	vs = mem_calloc(MEM_MATCH, 1, sizeof(*vs));
	if (!vs) {
		v->stats.full_alloc_fail++;
		return;     /* no state: counted as skipped at the end */
	}
	if (fi->stream_dbs) {
		if (v->stream_bytes + fi->stream_bytes > VERDICT_STREAM_MEMCAP) {
			v->stats.full_capped++;
			mem_free(MEM_MATCH, vs);
			return;
		}
		vs->st = match_stream_open(v->ms);
		if (!vs->st) {
			v->stats.full_alloc_fail++;
			mem_free(MEM_MATCH, vs);
			return;
		}
		vs->bytes = match_stream_size(vs->st);
		v->stream_bytes += vs->bytes;
	}
	vs->v = v;
	vs->next = v->streams;
	if (v->streams)
		v->streams->prev = vs;
	v->streams = vs;
	message_attach(m, &vstream_tap, vs, fi->need_copy);
}

uint64_t verdict_stream_bytes(const struct verdict *v)
{
	return v->stream_bytes;
}

/* Ends m's full-rule state: the streams' end-of-data matches and what
 * needs PCRE2 on the raw copy join v's hits. */
static void full_end(struct verdict *v, const struct message *m, const struct match_msg *mm)
{
	const struct match_full_info *fi = match_set_full(v->ms);
	struct verdict_stream *vs = message_attached(m, &vstream_tap);

	if (!fi->rules)
		return;
	if (!vs || vs->v != v || (fi->stream_dbs && !vs->st)) {
		v->stats.full_skipped++;
		return;
	}
	v->stats.full_streamed++;
	if (vs->st && match_stream_close(v->ms, v->scratch, vs->st, mm->full, mm->full_len,
					 v->hits) < 0)
		v->stats.scan_errors++;
}

static inline bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/* SpamAssassin's body array: the Subject as an element of its own (empty
 * when there is none), then the text's paragraphs, split at blank lines (a
 * line holding only whitespace is blank) with every whitespace run inside a
 * paragraph, line breaks included, squeezed to one space. Rules are matched
 * paragraph by paragraph, so a rule's .* never runs from one into the next.
 * The normalised text goes to v->norm; paragraphs point into it. */
static uint32_t body_paragraphs(struct verdict *v, const struct message *m,
				const char *p, size_t len)
{
	const char *subj = message_field(m, MESSAGE_FIELD_SUBJECT);
	size_t sl = subj ? strlen(subj) : 0, i = 0, o = 0;
	uint32_t n = 0;
	char *out;

	if (mem_grow(MEM_RULES, (void **)&v->norm, &v->cap_norm, (uint32_t)(len + 2), 1, 32, 0) < 0 ||
	    mem_grow(MEM_RULES, (void **)&v->paras, &v->cap_paras, 1, sizeof(*v->paras), 32, 0) < 0)
		return 0;
	out = v->norm;
	/* element 0: the Subject, which the message stage wrote first */
	v->paras[n].p = out;
	v->paras[n].len = 0;
	if (subj && len > sl && memcmp(p, subj, sl) == 0 && p[sl] == '\n') {
		for (size_t k = 0; k < sl; k++) {
			char c = is_ws(p[k]) || p[k] == '\n' ? ' ' : p[k];

			if (c == ' ' && o && out[o - 1] == ' ')
				continue;
			out[o++] = c;
		}
		v->paras[n].len = o;
		i = sl + 1;
	}
	n++;
	while (i < len && n < VERDICT_MAX_PARAS) {
		size_t start = o;
		bool any = false;

		/* one paragraph: lines until a blank one */
		while (i < len) {
			const char *nl = memchr(p + i, '\n', len - i);
			size_t ls = i, le = nl ? (size_t)(nl - p) : len, k = ls;

			i = nl ? le + 1 : len;   /* past the LF */
			while (k < le && is_ws(p[k]))
				k++;
			if (k == le) {   /* blank */
				if (any)
					break;   /* end of the paragraph */
				continue;    /* blank lines before it */
			}
			if (any && out[o - 1] != ' ')
				out[o++] = ' ';   /* the line break */
			/* every whitespace run squeezed to one space (none
			 * right after a space: the break's, or the paragraph
			 * begun with one). o <= k holds throughout (one byte
			 * out per byte in, the break's space in place of the
			 * previous LF), so 16 bytes stored at out + o stay
			 * below len. */
			k = ls;
			while (k < le) {
				size_t stop;
#if defined(__SSE2__)
				/* 16 bytes at once while no whitespace byte in
				 * them is dropped: each becomes a space */
				unsigned prev = o > start && out[o - 1] == ' ';

				while (k + 16 <= le) {
					__m128i x = _mm_loadu_si128((const __m128i *)(const void *)(p + k));
					__m128i w = _mm_or_si128(
						_mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8(' ')),
							     _mm_cmpeq_epi8(x, _mm_set1_epi8('\t'))),
						_mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('\r')),
							     _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('\f')),
									  _mm_cmpeq_epi8(x, _mm_set1_epi8('\v')))));
					unsigned mk = (unsigned)_mm_movemask_epi8(w);

					if (mk & ((mk << 1) | prev))
						break;
					x = _mm_or_si128(_mm_andnot_si128(w, x),
							 _mm_and_si128(w, _mm_set1_epi8(' ')));
					_mm_storeu_si128((__m128i *)(void *)(out + o), x);
					o += 16;
					k += 16;
					prev = (mk >> 15) & 1;
				}
#endif
				/* byte by byte: one block, or the line's tail */
				stop = le - k > 16 ? k + 16 : le;
				for (; k < stop; k++) {
					if (!is_ws(p[k]))
						out[o++] = p[k];
					else if (!(o > start && out[o - 1] == ' '))
						out[o++] = ' ';
				}
			}
			any = true;
		}
		if (!any)
			break;
		if (mem_grow(MEM_RULES, (void **)&v->paras, &v->cap_paras, n + 1,
			     sizeof(*v->paras), 32, 0) < 0)
			break;
		v->paras[n].p = out + start;
		v->paras[n].len = o - start;
		n++;
	}
	if (n == VERDICT_MAX_PARAS && i < len) {
		/* the rest joins the last paragraph: nothing goes unscanned */
		size_t start = (size_t)(v->paras[n - 1].p - out);

		for (; i < len; i++) {
			char c = is_ws(p[i]) || p[i] == '\n' ? ' ' : p[i];

			if (c == ' ' && o > start && out[o - 1] == ' ')
				continue;
			out[o++] = c;
		}
		v->paras[n - 1].len = o - start;
	}
	return n;
}

void verdict_build_views(struct verdict *v, const struct message *m, const struct smtp_tx *tx,
			 struct match_msg *out)
{
	struct match_msg mm;
	struct match_text *raw = &v->raw;
	uint32_t nh, nu;
	size_t blen = 0, rlen = 0;
	const uint8_t *body, *rawbody;

	memset(&mm, 0, sizeof(mm));
	nh = message_header_count(m);
	if (mem_grow(MEM_RULES, (void **)&v->hdrs, &v->cap_hdrs, nh ? nh : 1,
		     sizeof(*v->hdrs), 32, 0) >= 0) {
		for (uint32_t i = 0; i < nh; i++) {
			const struct message_header *h = message_header_at(m, i);

			v->hdrs[i].name = h->name;
			v->hdrs[i].name_len = h->name_len;
			v->hdrs[i].value = h->decoded;
			v->hdrs[i].value_len = h->decoded_len;
			v->hdrs[i].raw = h->raw;
			v->hdrs[i].raw_len = h->raw_len;
			v->hdrs[i].part = 0;
		}
		mm.headers = v->hdrs;
		mm.nheaders = nh;
	}
	body = message_view(m, MESSAGE_VIEW_BODY, &blen);
	mm.nbody = body_paragraphs(v, m, body ? (const char *)body : "", body ? blen : 0);
	mm.body = v->paras;
	mm.body_length = message_body_length(m);
	mm.body_length_known = message_headers_done(m) != 0;
	mm.body_starts_with_subject = true;
	rawbody = message_view(m, MESSAGE_VIEW_RAWBODY, &rlen);
	raw->p = (const char *)rawbody;
	raw->len = rlen;
	mm.rawbody = rawbody ? raw : NULL;
	mm.nrawbody = rawbody ? 1 : 0;
	nu = message_uri_count(m);
	if (nu && mem_grow(MEM_RULES, (void **)&v->uris, &v->cap_uris, nu,
			   sizeof(*v->uris), 32, 0) >= 0) {
		for (uint32_t i = 0; i < nu; i++) {
			size_t ul = 0;

			v->uris[i].p = message_uri_at(m, i, &ul);
			v->uris[i].len = ul;
		}
		mm.uris = v->uris;
		mm.nuris = nu;
	}
	/* mimeheader: the message's own headers are part 0's, then every
	 * other part's (message order, so by part); only for mimeheader rules */
	if (v->set->wants.part_headers) {
		uint32_t np = message_part_header_count(m), n = 0;

		if (mem_grow(MEM_RULES, (void **)&v->mhdrs, &v->cap_mhdrs, nh + np ? nh + np : 1,
			     sizeof(*v->mhdrs), 32, 0) >= 0) {
			if (mm.headers) {
				memcpy(v->mhdrs, mm.headers, nh * sizeof(*v->mhdrs));
				n = nh;
			}
			for (uint32_t i = 0; i < np; i++) {
				uint32_t part = 0;
				const struct message_header *h = message_part_header_at(m, i, &part);
				struct match_header *o = &v->mhdrs[n++];

				o->name = h->name;
				o->name_len = h->name_len;
				o->value = h->decoded;
				o->value_len = h->decoded_len;
				o->raw = h->raw;
				o->raw_len = h->raw_len;
				o->part = part;
			}
			mm.mime_headers = v->mhdrs;
			mm.nmime_headers = n;
			mm.nparts = message_part_count(m);
		}
	}
	/* the raw copy, kept when the rules asked for it (full rules that
	 * need PCRE2) */
	{
		size_t fl = 0;
		const uint8_t *f = message_view(m, MESSAGE_VIEW_FULL, &fl);

		if (f && fl) {
			mm.full = (const char *)f;
			mm.full_len = fl;
		}
	}
	if (tx && tx->mail_from) {
		mm.envelope_from = tx->mail_from;
		mm.envelope_from_len = strlen(tx->mail_from);
	}
	*out = mm;
}

/* Fills the hit vector with the content rules m meets (no scoring). */
static void scan_content(struct verdict *v, const struct message *m, const struct smtp_tx *tx)
{
	struct match_msg mm;

	verdict_build_views(v, m, tx, &mm);
	if (match_scan_msg(v->ms, v->scratch, &mm, v->hits) < 0)
		v->stats.scan_errors++;
	full_end(v, m, &mm);
	v->stats.messages++;
}

/* The tracker's measurements on the report's behaviour hits: for each
 * track rule that hit, the value and window of its first storm hit (the
 * tracker gives one per rule). */
static void report_behaviour(struct verdict *v)
{
	for (unsigned i = 0; i < v->shits.n; i++) {
		uint32_t id = v->set->storm_rule_id[v->shits.hit[i].rule];

		for (uint32_t k = 0; k < v->report.nhits; k++) {
			struct score_hit *e = &v->report_buf[k];

			if (e->id == id) {
				if (!e->behaviour) {
					e->behaviour = true;
					e->value = v->shits.hit[i].value;
					e->window_ns = v->shits.hit[i].window_ns;
				}
				break;
			}
		}
	}
}

/* Scores v's hits, counts the action and fills v's report (with the
 * subhits when asked). Returns the report, owned by v. */
static const struct score_report *score(struct verdict *v, bool subhits)
{
	enum score_action k;

	score_hits(v->rules, v->hits);
	k = score_action_kind(v->hits->action);
	if (k != SCORE_ACTION_NONE)
		v->stats.actions[k]++;
	score_report_fill(&v->report, v->report_buf, v->rules, v->hits, subhits);
	if (v->shits.n)
		report_behaviour(v);
	return &v->report;
}

const struct score_report *verdict_message(struct verdict *v, const struct message *m,
					   const struct smtp_tx *tx)
{
	if (!m)
		return NULL;
	match_hits_reset(v->hits);
	v->shits.n = 0;
	scan_content(v, m, tx);
	return score(v, true);
}

/* How the server answered a recipient, in the tracker's terms. */
static uint8_t rcpt_status(const struct smtp_rcpt *r)
{
	const char *t = r->reply_text ? r->reply_text : "";

	if (!r->reply_code)
		return STORM_RCPT_NO_REPLY;
	if (r->reply_code / 100 == 2)
		return STORM_RCPT_ACCEPTED;
	if (r->reply_code == 452 || r->reply_code == 552 || strncmp(t, "4.2.2", 5) == 0 ||
	    strncmp(t, "5.2.2", 5) == 0)
		return STORM_RCPT_OVERQUOTA;
	if (r->reply_code == 550 || r->reply_code == 551 || r->reply_code == 553 ||
	    strncmp(t, "5.1.", 4) == 0)
		return STORM_RCPT_REJECTED_UNKNOWN;
	return STORM_RCPT_OTHER;
}

/* A 64-bit fingerprint of the decoded body (0: no body): XXH3 over the kept
 * body view, so two copies of a message hash alike whatever their headers.
 * (A byte-serial FNV-1a cost ~4 cycles a byte here, most of the storm
 * stage; XXH3 reads 32 bytes a step.) */
static uint64_t body_hash(const struct message *m)
{
	size_t len = 0;
	const uint8_t *p = m ? message_view(m, MESSAGE_VIEW_RAWBODY, &len) : NULL;
	uint64_t h;

	if (!p || !len)
		return 0;
	h = XXH3_64bits(p, len);
	return h ? h : 1;
}

static bool is_auto(const struct message *m)
{
	const char *as = m ? message_field(m, MESSAGE_FIELD_AUTO_SUBMITTED) : NULL;
	const char *pr = m ? message_field(m, MESSAGE_FIELD_PRECEDENCE) : NULL;

	if (as && strncasecmp(as, "no", 2) != 0)
		return true;
	return pr && (strncasecmp(pr, "bulk", 4) == 0 || strncasecmp(pr, "junk", 4) == 0 ||
		      strncasecmp(pr, "list", 4) == 0 || strncasecmp(pr, "auto_reply", 10) == 0);
}

const struct score_report *verdict_tx(struct verdict *v, const struct message *m,
				      const struct smtp_tx *tx, const uint8_t client[16],
				      uint8_t ipver, uint64_t now)
{
	struct verdict_set *s = v->set;

	match_hits_reset(v->hits);
	v->shits.n = 0;
	if (m)
		scan_content(v, m, tx);
	stage_enter(STAGE_STORM);   /* --stage-times */
	if (s->storm && tx) {
		bool shared = s->nctx > 1;   /* other workers' contexts use the tracker */
		struct storm_tx_summary sum;
		uint32_t n = tx->nrcpt < VERDICT_MAX_RCPT ? tx->nrcpt : VERDICT_MAX_RCPT;

		memset(&sum, 0, sizeof(sum));
		sum.ts_ns = now;
		if (ipver == 4) {
			memcpy(sum.client_ip, client + 12, 4);
			sum.client_ip_version = 4;
		} else if (ipver == 6) {
			memcpy(sum.client_ip, client, 16);
			sum.client_ip_version = 6;
		}
		sum.helo = tx->helo;
		sum.mail_from = tx->mail_from;
		for (uint32_t i = 0; i < n; i++) {
			v->rcpt_ptrs[i] = tx->rcpts[i].addr;
			v->rcpt_status[i] = rcpt_status(&tx->rcpts[i]);
		}
		sum.rcpts = v->rcpt_ptrs;
		sum.rcpt_status = v->rcpt_status;
		sum.n_rcpt = n;
		sum.message_id = m ? message_field(m, MESSAGE_FIELD_MESSAGE_ID) : NULL;
		sum.body_hash = s->need_body_hash ? body_hash(m) : 0;
		sum.received_count = m ? (int)message_received_count(m) : 0;
		sum.auto_submitted = is_auto(m);
		if (shared)
			pthread_mutex_lock(&s->storm_mu);
		storm_observe(s->storm, &sum, &v->shits);
		if (shared)
			pthread_mutex_unlock(&s->storm_mu);
		for (unsigned i = 0; i < v->shits.n; i++)
			match_hits_add(v->hits, s->storm_rule_id[v->shits.hit[i].rule], 1);
		if (v->shits.n)
			v->stats.behaviour_hits++;
	}
	stage_enter(STAGE_MATCH);
	return score(v, false);
}

void verdict_advance(struct verdict *v, uint64_t now)
{
	struct verdict_set *s = v->set;

	if (!s->storm)
		return;
	if (s->nctx == 1) {   /* one worker: the tracker is its context's alone */
		storm_advance(s->storm, now, 256);
		return;
	}
	/* workers share the housekeeping: whoever finds the tracker free does
	 * a share; one busy means another is in it, and the next burst comes */
	if (pthread_mutex_trylock(&s->storm_mu) == 0) {
		storm_advance(s->storm, now, 256);
		pthread_mutex_unlock(&s->storm_mu);
	}
}

static bool same_track(const struct storm_rule *a, const struct storm_rule *b)
{
	return strcmp(a->name, b->name) == 0 && a->kind == b->kind && a->what == b->what &&
	       a->denom == b->denom && a->per == b->per && a->window_ns == b->window_ns &&
	       a->buckets == b->buckets && a->threshold == b->threshold && a->min == b->min;
}

bool verdict_set_adopt_storm(struct verdict_set *nv, struct verdict_set *old)
{
	struct storm_tracker *t;
	struct storm_sink *k;

	if (!old->storm || !nv->storm || nv->n_storm != old->n_storm)
		return false;
	for (uint32_t i = 0; i < nv->n_storm; i++)
		if (!same_track(&nv->srules[i], &old->srules[i]))
			return false;
	/* swap trackers: the new set's fresh one goes away with the old set */
	t = nv->storm;
	nv->storm = old->storm;
	old->storm = t;
	k = nv->sink;
	nv->sink = old->sink;
	old->sink = k;
	nv->sink->s = nv;
	old->sink->s = old;
	nv->storm_events_up = old->storm_events_up;
	nv->storm_events_down = old->storm_events_down;
	return true;
}

void verdict_set_event_sink(struct verdict_set *s,
			    void (*on_event)(void *user, const struct storm_event *ev),
			    void *user)
{
	s->on_event = on_event;
	s->event_user = user;
}

const struct message_wants *verdict_wants(const struct verdict *v)
{
	return &v->set->wants;
}

uint64_t verdict_set_max_window_ns(const struct verdict_set *s)
{
	uint64_t w = 0;

	for (uint32_t i = 0; s && i < s->n_storm; i++)
		if (s->srules[i].window_ns > w)
			w = s->srules[i].window_ns;
	return w;
}

struct verdict_stats verdict_get_stats(const struct verdict *v)
{
	struct verdict_stats st = v->stats;

	st.storm_events_up = v->set->storm_events_up;
	st.storm_events_down = v->set->storm_events_down;
	return st;
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
	{
		const struct match_full_info *fi = match_set_full(v->ms);

		if (fi->rules)
			fprintf(f, "  full rules:  %u (%u streaming database%s, %zu bytes of stream state "
				"per message%s); %llu messages streamed, %llu skipped (%llu at the "
				"stream memcap, %llu out of memory)\n", fi->rules, fi->stream_dbs,
				fi->stream_dbs == 1 ? "" : "s", fi->stream_dbs ? fi->stream_bytes : (size_t)0,
				fi->need_copy ? "; a raw copy kept for the ones that need PCRE2" : "",
				(unsigned long long)v->stats.full_streamed,
				(unsigned long long)v->stats.full_skipped,
				(unsigned long long)v->stats.full_capped,
				(unsigned long long)v->stats.full_alloc_fail);
	}
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
