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
 * Usage: rx_ceiling [--burst N] [--no-touch] FILE.pcap
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_mbuf.h>

#include "capture.h"

#define MAX_BURST 512

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s [--burst N] [--no-touch] FILE.pcap\n", prog);
	exit(2);
}

int main(int argc, char **argv)
{
	struct capture_config cfg = { .source = CAPTURE_PCAP, .prog = argv[0] };
	struct rte_mbuf *pkts[MAX_BURST];
	struct capture cap;
	char err[256];
	unsigned burst = 32;
	int touch = 1;
	int i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--burst") && i + 1 < argc) {
			burst = (unsigned)strtoul(argv[++i], NULL, 10);
			if (burst == 0 || burst > MAX_BURST)
				usage(argv[0]);
		} else if (!strcmp(argv[i], "--no-touch")) {
			touch = 0;
		} else if (argv[i][0] == '-' || cfg.pcap_path) {
			usage(argv[0]);
		} else {
			cfg.pcap_path = argv[i];
		}
	}
	if (!cfg.pcap_path)
		usage(argv[0]);

	memset(&cap, 0, sizeof(cap));
	if (capture_open(&cap, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "rx_ceiling: %s\n", err);
		return 1;
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
		for (uint16_t k = 0; k < n; k++) {
			const struct rte_mbuf *m = pkts[k];

			bytes += m->pkt_len;
			if (touch)
				sink += *(const volatile uint8_t *)rte_pktmbuf_mtod(m, const uint8_t *);
		}
		packets += n;
		rte_pktmbuf_free_bulk(pkts, n);
	}
	double secs = now_s() - t0;

	uint64_t ipackets = 0, imissed = 0, ierrors = 0, nombuf = 0;
	capture_port_stats(&cap, &ipackets, &imissed, &ierrors, &nombuf);
	capture_close(&cap);

	double gbps = secs > 0 ? (double)bytes * 8 / secs / 1e9 : 0;
	double mpps = secs > 0 ? (double)packets / secs / 1e6 : 0;
	fprintf(stderr,
		"rx_ceiling: %" PRIu64 " packets, %" PRIu64 " bytes in %.3f s: "
		"%.2f Gbit/s, %.3f Mpps (burst %u%s; port: %" PRIu64 " in, %" PRIu64
		" missed, %" PRIu64 " nombuf; sink %" PRIu64 ")\n",
		packets, bytes, secs, gbps, mpps, burst, touch ? "" : ", no touch",
		ipackets, imissed, nombuf, sink & 0xff);
	printf("rx_ceiling packets=%" PRIu64 " bytes=%" PRIu64
	       " seconds=%.6f gbps=%.4f mpps=%.4f\n",
	       packets, bytes, secs, gbps, mpps);
	return (imissed || ierrors || nombuf) ? 3 : 0;
}
