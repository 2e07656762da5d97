/* rx_ceiling: the I/O ceiling of a pcap replay, DPDK receive and nothing else.
 *
 * Brings up the EAL and the port through capture_open(), exactly as the
 * breakwater binary does (same EAL flags, same net_pcap device, same mempool),
 * then receives bursts until the replay ends, reads the first cache line of
 * every packet (as decode must) and frees the mbufs. Whatever the engine does
 * beyond this is its own cost; this loop is what it cannot go below.
 *
 * The clock runs from the first rx call to the end of the replay, which is
 * how the engine reports its own "engine time"; EAL start-up is excluded.
 * Output: one human line on stderr and one key=value line on stdout, which
 * bench/run.sh parses:
 *   rx_ceiling packets=N bytes=B seconds=S gbps=G mpps=M
 * Bytes are frame bytes (Ethernet header included, no FCS), as the engine
 * counts them.
 *
 * With --sort N it is the ceiling of the engine's software sorting
 * (--workers N+1, where the receiving thread hands other workers their
 * flows), measured on the engine's own code: workers.c with N + 1
 * workers, worker 0 receiving and sorting only (a receiving cost of 1
 * leaves it no bucket), the others running a stand-in for the pipeline
 * that reads each frame's first byte and frees it. Hashing, the bucket
 * table, the rings and the wait for room are the engine's. The rate this
 * reaches is the most any number of workers can get from one receiving
 * core: the line adds "sort=N".
 *
 * Usage: rx_ceiling [--burst N] [--no-touch] [--sort N] FILE.pcap
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_pause.h>

#include "capture.h"
#include "decode.h"
#include "workers.h"

#define MAX_BURST 512
#define MAX_SORT (WORKERS_MAX - 1)

static uint64_t sort_sink[WORKERS_MAX];  /* each worker's touched bytes */

/* The pipeline's stand-in: the first byte of each frame, then the frees. */
static void touch_and_free(struct worker *w, const struct work_item *it, unsigned n)
{
	struct rte_mbuf *m[WORKER_BURST];

	for (unsigned k = 0; k < n; k++) {
		sort_sink[w->id] += *(const volatile uint8_t *)it[k].data;
		m[k] = it[k].m;
	}
	rte_pktmbuf_free_bulk(m, n);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s [--burst N] [--no-touch] [--sort N] FILE.pcap\n", prog);
	exit(2);
}

int main(int argc, char **argv)
{
	struct capture_config cfg = { .source = CAPTURE_PCAP, .prog = argv[0] };
	struct rte_mbuf *pkts[MAX_BURST];
	struct workers *ws = NULL;
	struct capture cap;
	char err[256];
	unsigned burst = 32, nsort = 0;
	int touch = 1;
	int i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--burst") && i + 1 < argc) {
			burst = (unsigned)strtoul(argv[++i], NULL, 10);
			if (burst == 0 || burst > MAX_BURST)
				usage(argv[0]);
		} else if (!strcmp(argv[i], "--no-touch")) {
			touch = 0;
		} else if (!strcmp(argv[i], "--sort") && i + 1 < argc) {
			nsort = (unsigned)strtoul(argv[++i], NULL, 10);
			if (nsort == 0 || nsort > MAX_SORT)
				usage(argv[0]);
		} else if (argv[i][0] == '-' || cfg.pcap_path) {
			usage(argv[0]);
		} else {
			cfg.pcap_path = argv[i];
		}
	}
	if (!cfg.pcap_path)
		usage(argv[0]);

	cfg.extra_mbufs = nsort * (WORKER_RING + WORKER_BURST + 256);
	memset(&cap, 0, sizeof(cap));
	if (capture_open(&cap, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "rx_ceiling: %s\n", err);
		return 1;
	}
	if (nsort) {
		struct workers_config wc = {
			.n = nsort + 1, .linktype = cap.linktype, .rx_cost = 1.0,
			.run = touch_and_free,
		};

		ws = workers_new(&wc, err, sizeof(err));
		if (!ws || workers_start(ws, err, sizeof(err)) != 0) {
			fprintf(stderr, "rx_ceiling: %s\n", err);
			return 1;
		}
	}

	uint64_t packets = 0, bytes = 0, sink = 0;
	double t0 = now_s();
	for (;;) {
		uint16_t n = capture_rx(&cap, pkts, (uint16_t)burst);

		if (n == 0) {
			if (capture_eof(&cap))
				break;
			continue;
		}
		packets += n;
		if (ws) {
			struct work_item it[MAX_BURST];

			workers_items_from_mbufs(&cap, pkts, it, n);
			for (uint16_t k = 0; k < n; k++)
				bytes += it[k].len;
			/* the engine's dispatch, WORKER_BURST frames at a time */
			for (uint16_t k = 0; k < n; k += WORKER_BURST)
				workers_dispatch(ws, it + k, n - k < WORKER_BURST ? n - k : WORKER_BURST);
			continue;
		}
		for (uint16_t k = 0; k < n; k++) {
			const struct rte_mbuf *m = pkts[k];

			bytes += m->pkt_len;
			if (touch)
				sink += *(const volatile uint8_t *)rte_pktmbuf_mtod(m, const uint8_t *);
		}
		rte_pktmbuf_free_bulk(pkts, n);
	}
	if (ws) {
		workers_stop(ws, NULL);
		for (unsigned k = 1; k <= nsort; k++) {
			sink += sort_sink[k];
			if (workers_worker(ws, k)->packets == 0)
				fprintf(stderr, "rx_ceiling: sorting consumer %u got no frames\n", k);
		}
	}
	double secs = now_s() - t0;

	uint64_t ipackets = 0, imissed = 0, ierrors = 0, nombuf = 0;
	capture_port_stats(&cap, &ipackets, &imissed, &ierrors, &nombuf);
	workers_free(ws);
	capture_close(&cap);

	double gbps = secs > 0 ? (double)bytes * 8 / secs / 1e9 : 0;
	double mpps = secs > 0 ? (double)packets / secs / 1e6 : 0;
	fprintf(stderr,
		"rx_ceiling: %" PRIu64 " packets, %" PRIu64 " bytes in %.3f s: "
		"%.2f Gbit/s, %.3f Mpps (burst %u%s%s; port: %" PRIu64 " in, %" PRIu64
		" missed, %" PRIu64 " nombuf; sink %" PRIu64 ")\n",
		packets, bytes, secs, gbps, mpps, burst, touch ? "" : ", no touch",
		nsort ? ", sorted to consumers" : "",
		ipackets, imissed, nombuf, sink & 0xff);
	printf("rx_ceiling packets=%" PRIu64 " bytes=%" PRIu64
	       " seconds=%.6f gbps=%.4f mpps=%.4f sort=%u\n",
	       packets, bytes, secs, gbps, mpps, nsort);
	return (imissed || ierrors || nombuf) ? 3 : 0;
}
