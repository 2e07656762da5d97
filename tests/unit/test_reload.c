/* unit: rule reload (reload.c) while two workers run, without root.
 *
 * A committed capture (argv[1]) is fed to two workers in bursts; between
 * two bursts the test polls the reload, as the receiving thread does.
 * - A reload of rules whose content rules changed and track rules did not
 *   is swapped in at a burst boundary, keeps the storm windows, and loses
 *   no frame and no record (the records equal a run without reload, once
 *   the rule that changed is left aside).
 * - A reload of a rule file with an error is refused: the running rules
 *   stay (same set), said with file:line.
 * - A reload whose track rules changed starts the windows anew.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "held_capture.h"
#include "reload.h"
#include "verdict.h"
#include "workers.h"

static char dir[] = "/tmp/bw-test-reload-XXXXXX";
static char rules_path[512];

static const char rules_a[] =
	"header T_SUBJ_A Subject =~ /./\n"
	"score T_SUBJ_A 1.0\n"
	"track T_CLIENT_COUNT count per client_ip over 10m > 5\n"
	"score T_CLIENT_COUNT 1.0\n";

/* content rule changed (another name and score), track rule the same */
static const char rules_b[] =
	"header T_SUBJ_B Subject =~ /./\n"
	"score T_SUBJ_B 2.0\n"
	"track T_CLIENT_COUNT count per client_ip over 10m > 5\n"
	"score T_CLIENT_COUNT 1.0\n";

/* the track rule's threshold changed */
static const char rules_c[] =
	"header T_SUBJ_B Subject =~ /./\n"
	"score T_SUBJ_B 2.0\n"
	"track T_CLIENT_COUNT count per client_ip over 10m > 6\n"
	"score T_CLIENT_COUNT 1.0\n";

static const char rules_bad[] = "header T_BROKEN Subject =~ /(/\n";

static void write_rules(const char *text)
{
	FILE *f = fopen(rules_path, "w");

	if (!f) {
		perror(rules_path);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
}

static int count_substr(const char *s, const char *needle)
{
	int n = 0;

	for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

static char *slurp(FILE *f)
{
	long n;
	char *b;

	fflush(f);
	n = ftell(f);
	b = calloc(1, (size_t)n + 1);
	rewind(f);
	if (fread(b, 1, (size_t)n, f) != (size_t)n)
		b[0] = '\0';
	return b;
}

/* Runs the capture through two workers under rules_a. When `reload_to` is
 * not NULL, the rule file is rewritten to it before the first burst and a
 * reload asked for; the reload is polled between bursts, and half way the
 * feed waits for it to end. Returns the records; *log gets the reload's
 * reports; *swapped and *refused its counts. */
static char *run(const struct held *h, const char *reload_to, char **log, unsigned *swapped,
		 unsigned *refused, bool *same_set)
{
	const char *dirs[1] = { rules_path };
	struct pipeline_config pcfg;
	struct workers_config cfg = { .n = 2, .linktype = h->link, .rx_cost = WORKER_RX_COST_RULES };
	struct reload r;
	struct workers *ws;
	struct verdict_set *v, *first;
	FILE *out = tmpfile(), *lf = tmpfile();
	char err[512], *recs;
	bool kept;
	uint64_t ran = 0;

	write_rules(rules_a);
	pipeline_config_default(&pcfg);
	cfg.pcfg = &pcfg;
	cfg.out = out;
	v = reload_load_rules(dirs, 1, err, sizeof(err));
	CHECK(v != NULL);
	ws = workers_new(&cfg, err, sizeof(err));
	CHECK(ws != NULL);
	if (!v || !ws)
		exit(1);
	CHECK_EQ_U64(workers_set_rules(ws, v, &kept), 0);
	CHECK(!kept);
	first = workers_rules(ws);
	CHECK_EQ_U64(workers_start(ws, err, sizeof(err)), 0);
	reload_init(&r, dirs, 1, lf);
	if (reload_to)
		write_rules(reload_to);
	for (unsigned i = 0; i < h->n;) {
		reload_poll(&r, ws, reload_to && i == 0);
		/* half way, the link goes quiet until the new rules are in:
		 * the swap falls between two bursts, with flows in flight */
		while (r.running && i >= h->n / 2) {
			usleep(1000);
			reload_poll(&r, ws, false);
		}
		i += held_dispatch(h, i, ws);
	}
	CHECK(!r.running);
	*same_set = workers_rules(ws) == first;
	workers_stop(ws, NULL);
	for (unsigned k = 0; k < 2; k++)
		ran += workers_worker(ws, k)->packets;
	CHECK_EQ_U64(ran, h->n);   /* no frame lost or doubled by the swap */
	*swapped = r.swapped;
	*refused = r.refused;
	reload_cancel(&r);
	workers_free(ws);
	recs = slurp(out);
	*log = slurp(lf);
	fclose(out);
	fclose(lf);
	return recs;
}

int main(int argc, char **argv)
{
	struct held h;
	char *base, *recs, *log, *cache;
	unsigned swapped, refused;
	bool same;
	int tx;

	if (argc < 2 || hold_capture(argv[1], &h) != 0) {
		fprintf(stderr, "usage: test_reload CAPTURE (a readable capture)\n");
		return 1;
	}
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(rules_path, sizeof(rules_path), "%s/10_test.cf", dir);
	/* compiled databases into the test's own directory */
	cache = malloc(strlen(dir) + 8);
	sprintf(cache, "%s/cache", dir);
	setenv("BW_CACHE_DIR", cache, 1);

	/* no reload: the reference */
	base = run(&h, NULL, &log, &swapped, &refused, &same);
	tx = count_substr(base, "\"event\":\"smtp\"");
	CHECK(tx > 0);
	CHECK_EQ_U64(count_substr(base, "T_SUBJ_A"), tx);
	CHECK(same);
	free(log);

	/* content rules changed: swapped, windows kept, every record there */
	recs = run(&h, rules_b, &log, &swapped, &refused, &same);
	CHECK_EQ_U64(swapped, 1);
	CHECK_EQ_U64(refused, 0);
	CHECK(!same);
	CHECK(strstr(log, "windows kept") != NULL);
	CHECK_EQ_U64(count_substr(recs, "\"event\":\"smtp\""), tx);
	/* every transaction scored by one set or the other, none by both */
	CHECK_EQ_U64(count_substr(recs, "T_SUBJ_A") + count_substr(recs, "T_SUBJ_B"), tx);
	/* the swap happened while traffic passed: the new rule scored some */
	CHECK(count_substr(recs, "T_SUBJ_B") > 0);
	/* the behaviour rule counted across the swap as without it */
	CHECK_EQ_U64(count_substr(recs, "T_CLIENT_COUNT"), count_substr(base, "T_CLIENT_COUNT"));
	free(recs);
	free(log);

	/* a rule error: refused, the running set stays, file:line said */
	recs = run(&h, rules_bad, &log, &swapped, &refused, &same);
	CHECK_EQ_U64(swapped, 0);
	CHECK_EQ_U64(refused, 1);
	CHECK(same);
	CHECK(strstr(log, "reload refused, the running rules stay") != NULL);
	CHECK(strstr(log, "10_test.cf:1") != NULL);
	CHECK_EQ_U64(count_substr(recs, "T_SUBJ_A"), tx);
	CHECK_EQ_U64(count_substr(recs, "T_CLIENT_COUNT"), count_substr(base, "T_CLIENT_COUNT"));
	free(recs);
	free(log);

	/* track rules changed: windows start anew */
	recs = run(&h, rules_c, &log, &swapped, &refused, &same);
	CHECK_EQ_U64(swapped, 1);
	CHECK(strstr(log, "windows start anew") != NULL);
	free(recs);
	free(log);

	free(base);
	held_free(&h);
	unlink(rules_path);
	{
		char cmd[600];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	}
	free(cache);
	return check_done();
}
