/* reload: see reload.h. */
#include "reload.h"

#include <string.h>

#include "verdict.h"
#include "workers.h"

struct verdict_set *reload_load_rules(const char *const *dirs, int ndirs, char *err, size_t errlen)
{
	const char *def;

	err[0] = '\0';
	if (!ndirs) {
		def = verdict_default_rules_dir();
		if (!def) {
			fprintf(stderr, "breakwater: no rule directory found (give --rules DIR): "
				"records carry no score\n");
			return NULL;
		}
		dirs = &def;
		ndirs = 1;
	}
	return verdict_set_new(dirs, ndirs, stderr, err, errlen);
}

void reload_init(struct reload *r, const char *const *dirs, int ndirs, FILE *log)
{
	memset(r, 0, sizeof(*r));
	r->dirs = dirs;
	r->ndirs = ndirs;
	r->log = log;
}

static void *reload_main(void *arg)
{
	struct reload *r = arg;

	r->result = reload_load_rules(r->dirs, r->ndirs, r->err, sizeof(r->err));
	__atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void start(struct reload *r)
{
	r->done = 0;
	r->result = NULL;
	r->err[0] = '\0';
	if (pthread_create(&r->thread, NULL, reload_main, r) != 0) {
		fprintf(r->log, "breakwater: reload: cannot start a thread; the running rules stay\n");
		r->refused++;
		return;
	}
	r->running = true;
	fprintf(r->log, "breakwater: SIGHUP: reloading the rules\n");
}

/* Swaps in a finished reload's rules. Returns true when it did. */
static bool finish(struct reload *r, struct workers *ws)
{
	struct verdict_set *nv;
	bool kept;

	if (!__atomic_load_n(&r->done, __ATOMIC_ACQUIRE))
		return false;
	pthread_join(r->thread, NULL);
	r->running = false;
	nv = r->result;
	r->result = NULL;
	if (!nv) {
		fprintf(r->log, "breakwater: reload refused, the running rules stay: %s\n",
			r->err[0] ? r->err : "no rules found");
		r->refused++;
		return false;
	}
	if (workers_set_rules(ws, nv, &kept) != 0) {
		fprintf(r->log, "breakwater: reload refused, the running rules stay: out of memory\n");
		verdict_set_free(nv);
		r->refused++;
		return false;
	}
	fprintf(r->log, "breakwater: rules reloaded (track rules %s)\n",
		kept ? "unchanged: windows kept" : "changed: windows start anew");
	r->swapped++;
	return true;
}

bool reload_poll(struct reload *r, struct workers *ws, bool asked)
{
	if (asked && !r->running)
		start(r);
	return r->running && finish(r, ws);
}

void reload_cancel(struct reload *r)
{
	if (!r->running)
		return;
	pthread_join(r->thread, NULL);
	r->running = false;
	verdict_set_free(r->result);
	r->result = NULL;
}
