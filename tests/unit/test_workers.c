/* unit: the worker dispatch (workers.c), without the EAL and without root.
 *
 * - Every frame of a flow, both directions, reaches one worker, whatever
 *   the number of workers; frames that are not TCP go to worker 0; none is
 *   lost or run twice (a run function of the test's own records who ran
 *   what).
 * - Worker 0's share of the buckets follows the receiving cost, and a cost
 *   of 1 leaves it none (the receive bench's sorting ceiling).
 * - With pipelines: a committed capture (argv[1]) run by 1 and by 3
 *   workers gives the same records (sorted: workers interleave) and the
 *   same merged counters.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "held_capture.h"
#include "decode.h"
#include "summary.h"
#include "workers.h"

#define NFLOWS 200
#define FRAMES_PER_FLOW 7

/* What the test's run function saw: per worker, the frames, by flow. */
static uint64_t seen[WORKERS_MAX][NFLOWS + 1];

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* An Ethernet/IPv4/TCP frame of flow f (client 198.18.x.y:port to
 * 198.19.0.1:25), in the client's direction or the server's; the flow's
 * index rides in the IP id, so the run function can tell flows apart. */
static uint32_t tcp_frame(uint8_t *b, unsigned f, bool to_server)
{
	uint8_t cli[4] = {198, 18, (uint8_t)(f >> 8), (uint8_t)f}, srv[4] = {198, 19, 0, 1};
	uint16_t cport = (uint16_t)(1024 + f * 7), sport = 25;

	memset(b, 0, 54);
	put16(b + 12, 0x0800);
	b[14] = 0x45;
	put16(b + 16, 40);
	put16(b + 18, (uint16_t)f);
	b[22] = 64;
	b[23] = 6;
	memcpy(b + 26, to_server ? cli : srv, 4);
	memcpy(b + 30, to_server ? srv : cli, 4);
	put16(b + 34, to_server ? cport : sport);
	put16(b + 36, to_server ? sport : cport);
	b[46] = 0x50;
	b[47] = 0x10;
	return 54;
}

/* An ARP frame: not TCP. */
static uint32_t arp_frame(uint8_t *b)
{
	memset(b, 0, 42);
	put16(b + 12, 0x0806);
	return 42;
}

static void record_run(struct worker *w, const struct work_item *it, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *d = it[i].data;
		unsigned f = NFLOWS;   /* not TCP */

		if (it[i].len >= 54 && d[12] == 0x08 && d[13] == 0x00)
			f = (unsigned)(d[18] << 8 | d[19]);
		if (f <= NFLOWS)
			seen[w->id][f]++;
	}
}

static void test_one_worker_per_flow(unsigned nworkers)
{
	static uint8_t frames[NFLOWS * FRAMES_PER_FLOW + 16][64];
	static struct work_item items[NFLOWS * FRAMES_PER_FLOW + 16];
	struct workers_config cfg = {
		.n = nworkers, .linktype = DECODE_LINK_ETHERNET, .rx_cost = WORKER_RX_COST,
		.run = record_run,
	};
	struct workers *ws;
	unsigned ni = 0, handled = 0;
	char err[256];
	uint64_t total = 0, sent = 0;

	memset(seen, 0, sizeof(seen));
	/* the flows' frames interleaved, directions alternating, with ARP
	 * frames among them */
	for (unsigned k = 0; k < FRAMES_PER_FLOW; k++) {
		for (unsigned f = 0; f < NFLOWS; f++) {
			items[ni].len = tcp_frame(frames[ni], f, (k + f) % 2 == 0);
			items[ni].data = frames[ni];
			ni++;
		}
		items[ni].len = arp_frame(frames[ni]);
		items[ni].data = frames[ni];
		ni++;
	}
	ws = workers_new(&cfg, err, sizeof(err));
	CHECK(ws != NULL);
	if (!ws)
		return;
	CHECK_EQ_U64(workers_start(ws, err, sizeof(err)), 0);
	for (unsigned i = 0; i < ni; i += WORKER_BURST) {
		unsigned n = ni - i < WORKER_BURST ? ni - i : WORKER_BURST;

		handled += workers_dispatch(ws, items + i, n);
	}
	CHECK_EQ_U64(handled, ni);
	workers_drain(ws);
	for (unsigned k = 0; k < nworkers; k++)
		sent += workers_worker(ws, k)->packets;
	workers_stop(ws, NULL);
	/* each flow on one worker, all its frames (both directions) there */
	for (unsigned f = 0; f < NFLOWS; f++) {
		unsigned owners = 0;

		for (unsigned k = 0; k < nworkers; k++)
			if (seen[k][f]) {
				owners++;
				CHECK_EQ_U64(seen[k][f], FRAMES_PER_FLOW);
			}
		CHECK_EQ_U64(owners, 1);
	}
	/* not TCP: hash 0, worker 0 */
	CHECK_EQ_U64(seen[0][NFLOWS], FRAMES_PER_FLOW);
	for (unsigned k = 0; k < nworkers; k++)
		for (unsigned f = 0; f <= NFLOWS; f++)
			total += seen[k][f];
	CHECK_EQ_U64(total, ni);
	CHECK_EQ_U64(sent, ni);
	/* with several workers, the flows really are spread */
	if (nworkers > 1) {
		unsigned busy = 0;

		for (unsigned k = 0; k < nworkers; k++) {
			uint64_t s = 0;

			for (unsigned f = 0; f < NFLOWS; f++)
				s += seen[k][f];
			busy += s > 0;
		}
		CHECK_EQ_U64(busy, nworkers);
	}
	workers_free(ws);
}

/* Worker 0's buckets: fewer by the receiving cost; none at a cost of 1. */
static void test_buckets(void)
{
	struct workers_config cfg = { .n = 4, .linktype = DECODE_LINK_ETHERNET, .run = record_run };
	unsigned count[4];
	char err[256];

	for (int t = 0; t < 3; t++) {
		struct workers *ws;
		double cost = t == 0 ? 0 : t == 1 ? WORKER_RX_COST : 1.0;

		cfg.rx_cost = cost;
		ws = workers_new(&cfg, err, sizeof(err));
		CHECK(ws != NULL);
		if (!ws)
			return;
		memset(count, 0, sizeof(count));
		for (uint64_t b = 0; b < WORKER_BUCKETS; b++)
			count[workers_of_hash(ws, (uint32_t)(b * (UINT32_MAX / WORKER_BUCKETS + 1)))]++;
		if (t == 0) {
			for (int k = 0; k < 4; k++)
				CHECK_EQ_U64(count[k], WORKER_BUCKETS / 4);
		} else if (t == 1) {
			/* (1 - 3 * 0.3) / 4 of the buckets: 26 */
			CHECK_EQ_U64(count[0], 26);
			CHECK(count[1] + count[2] + count[3] == WORKER_BUCKETS - 26);
		} else {
			CHECK_EQ_U64(count[0], 0);
		}
		workers_free(ws);
	}
}

/* A refused configuration says why. */
static void test_config_errors(void)
{
	struct workers_config cfg = { .n = 0, .run = record_run };
	char err[256] = "";

	CHECK(workers_new(&cfg, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "between 1 and") != NULL);
	cfg.n = 2;
	cfg.run = NULL;
	CHECK(workers_new(&cfg, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "neither") != NULL);
}

static int cmp_lines(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The records of a run, sorted, as one string (caller frees). */
static char *sorted_records(FILE *f, unsigned *nlines)
{
	char *lines[4096], *buf = NULL, *out;
	size_t cap = 0, total = 0;
	unsigned n = 0;

	rewind(f);
	while (n < 4096 && getline(&buf, &cap, f) > 0) {
		lines[n] = strdup(buf);
		total += strlen(buf);
		n++;
	}
	free(buf);
	qsort(lines, n, sizeof(lines[0]), cmp_lines);
	out = malloc(total + 1);
	out[0] = '\0';
	for (unsigned i = 0; i < n; i++) {
		strcat(out, lines[i]);
		free(lines[i]);
	}
	*nlines = n;
	return out;
}

static char *run_pipelines(const struct held *h, unsigned nworkers, unsigned *nrec,
			   struct run_info *ri, uint64_t *flows, uint64_t *tx)
{
	struct pipeline_config pcfg;
	struct workers_config cfg = {
		.n = nworkers, .linktype = h->link, .rx_cost = WORKER_RX_COST, .pcfg = &pcfg,
	};
	struct workers *ws;
	FILE *f = tmpfile();
	char err[256], *recs;
	bool kept;

	pipeline_config_default(&pcfg);
	pcfg.flow_records = true;
	cfg.out = f;
	ws = workers_new(&cfg, err, sizeof(err));
	CHECK(ws != NULL);
	if (!ws) {
		fclose(f);
		return strdup("");
	}
	CHECK_EQ_U64(workers_set_rules(ws, NULL, &kept), 0);   /* no rules */
	CHECK_EQ_U64(workers_start(ws, err, sizeof(err)), 0);
	for (unsigned i = 0; i < h->n;)
		i += held_dispatch(h, i, ws);
	memset(ri, 0, sizeof(*ri));
	workers_stop(ws, ri);
	*flows = flow_table_stats(workers_worker(ws, 0)->pl->flows)->created;
	*tx = workers_worker(ws, 0)->out.records;
	workers_free(ws);
	recs = sorted_records(f, nrec);
	fclose(f);
	return recs;
}

static void test_pipelines(const char *path)
{
	struct held h;
	struct run_info r1, r3;
	unsigned n1 = 0, n3 = 0;
	uint64_t f1, f3, t1, t3, sum = 0;
	char *a, *b;

	if (hold_capture(path, &h) != 0) {
		fprintf(stderr, "cannot read %s\n", path);
		CHECK(0);
		return;
	}
	a = run_pipelines(&h, 1, &n1, &r1, &f1, &t1);
	b = run_pipelines(&h, 3, &n3, &r3, &f3, &t3);
	CHECK(n1 > 0);
	CHECK_EQ_U64(n3, n1);
	CHECK(strcmp(a, b) == 0);
	CHECK_EQ_U64(f3, f1);
	CHECK_EQ_U64(t3, t1);
	CHECK_EQ_U64(r3.workers, 3);
	for (unsigned k = 0; k < 3; k++)
		sum += r3.worker_packets[k];
	CHECK_EQ_U64(sum, h.n);
	CHECK_EQ_U64(r1.worker_packets[0], h.n);
	free(a);
	free(b);
	held_free(&h);
}

int main(int argc, char **argv)
{
	test_config_errors();
	test_buckets();
	for (unsigned n = 1; n <= 4; n++)
		test_one_worker_per_flow(n);
	if (argc > 1)
		test_pipelines(argv[1]);
	return check_done();
}
