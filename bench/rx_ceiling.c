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
 * flows): each frame's flow hash is computed with the engine's own
 * decode_flow_hash(), and the frame goes as a 32-byte item (the size of the
 * engine's work item) through an SP/SC ring to one of N consumer threads,
 * picked by the hash as the engine picks a worker, which read its first
 * byte and free it. The receiving thread waits for room as the engine's
 * does. The rate this reaches is the most any number of workers can get
 * from one receiving core: the line adds "sort=N".
 *
 * Usage: rx_ceiling [--burst N] [--no-touch] [--sort N] FILE.pcap
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_pause.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "capture.h"
#include "decode.h"

#define MAX_BURST 512
#define MAX_SORT 64
#define SORT_RING 4096               /* as the engine's WORKER_RING */

/* The engine's work item, field for field in size (32 bytes). */
struct item {
	const uint8_t *data;
	struct rte_mbuf *m;
	uint64_t ts_ns;
	uint32_t len;
	uint32_t flags;
};

struct consumer {
	struct rte_ring *ring;
	pthread_t thread;
	uint64_t frames;
	uint64_t sink;
} __rte_cache_aligned;

static int sort_stop;                /* atomic: the receiving side is done */

static void *consume(void *arg)
{
	struct consumer *c = arg;
	struct item it[MAX_BURST];
	struct rte_mbuf *m[MAX_BURST];

	(void)rte_thread_register();   /* a mempool cache for the frees */
	for (;;) {
		unsigned n = rte_ring_sc_dequeue_burst_elem(c->ring, it, sizeof(it[0]), 32, NULL);

		if (!n) {
			if (__atomic_load_n(&sort_stop, __ATOMIC_ACQUIRE) && rte_ring_empty(c->ring))
				break;
			rte_pause();
			continue;
		}
		for (unsigned k = 0; k < n; k++) {
			c->sink += *(const volatile uint8_t *)it[k].data;
			m[k] = it[k].m;
		}
		c->frames += n;
		rte_pktmbuf_free_bulk(m, n);
	}
	rte_thread_unregister();
	return NULL;
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
	static struct consumer cons[MAX_SORT];
	static struct item stage[MAX_SORT][MAX_BURST];
	unsigned nstage[MAX_SORT] = { 0 };
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

	cfg.extra_mbufs = nsort * SORT_RING;
	memset(&cap, 0, sizeof(cap));
	if (capture_open(&cap, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "rx_ceiling: %s\n", err);
		return 1;
	}
	for (unsigned k = 0; k < nsort; k++) {
		char name[32];

		snprintf(name, sizeof(name), "rx_sort_%u", k);
		cons[k].ring = rte_ring_create_elem(name, sizeof(struct item), SORT_RING, SOCKET_ID_ANY,
						    RING_F_SP_ENQ | RING_F_SC_DEQ);
		if (!cons[k].ring || pthread_create(&cons[k].thread, NULL, consume, &cons[k]) != 0) {
			fprintf(stderr, "rx_ceiling: cannot start sorting consumer %u\n", k);
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
		if (nsort) {
			/* the engine's dispatch(): hash, stage per worker, queue */
			for (uint16_t k = 0; k < n; k++) {
				struct rte_mbuf *m = pkts[k];
				const uint8_t *d = rte_pktmbuf_mtod(m, const uint8_t *);
				uint32_t h = decode_flow_hash(d, rte_pktmbuf_data_len(m), cap.linktype);
				unsigned c = (unsigned)(((uint64_t)h * nsort) >> 32);

				bytes += m->pkt_len;
				stage[c][nstage[c]++] = (struct item){ d, m, 0, m->pkt_len, 0 };
			}
			for (unsigned c = 0; c < nsort; c++) {
				unsigned q = 0;

				while (q < nstage[c]) {
					q += rte_ring_sp_enqueue_burst_elem(cons[c].ring, stage[c] + q,
									    sizeof(struct item),
									    nstage[c] - q, NULL);
					if (q < nstage[c])
						rte_pause();
				}
				nstage[c] = 0;
			}
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
	__atomic_store_n(&sort_stop, 1, __ATOMIC_RELEASE);
	for (unsigned k = 0; k < nsort; k++) {
		pthread_join(cons[k].thread, NULL);
		sink += cons[k].sink;
		if (cons[k].frames == 0)
			fprintf(stderr, "rx_ceiling: sorting consumer %u got no frames\n", k);
	}
	double secs = now_s() - t0;

	uint64_t ipackets = 0, imissed = 0, ierrors = 0, nombuf = 0;
	capture_port_stats(&cap, &ipackets, &imissed, &ierrors, &nombuf);
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
