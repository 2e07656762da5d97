/* capture: the DPDK side of breakwater (EAL bootstrap, one port, one mempool).
 *
 * Three sources, one interface:
 *   --pcap FILE   net_pcap virtual device replaying FILE (packet timestamps
 *                 drive the engine clock; end of file ends the run)
 *   --iface IF    net_af_packet virtual device on a live interface
 *   --eal ARGS    raw EAL arguments for real NICs; --port N picks the port
 *
 * The EAL is brought up so that it works on a plain machine: no hugepages →
 * --no-huge (said once on stderr), --no-pci unless raw EAL arguments ask for
 * real ports, --no-shconf so parallel runs do not collide, and the PMD
 * plug-ins of a shared DPDK build (net_pcap, net_af_packet, mempool_ring)
 * loaded with -d from BW_PMD_DIR.
 *
 * Mbufs returned by capture_rx() are owned by the caller, who frees them
 * (rte_pktmbuf_free_bulk) once the burst is processed; the pipeline never keeps
 * an mbuf past its burst (reassembly copies what it must hold).
 */
#ifndef BW_CAPTURE_H
#define BW_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;

enum capture_source {
	CAPTURE_PCAP = 1,
	CAPTURE_IFACE,
	CAPTURE_EAL,
};

struct capture_config {
	enum capture_source source;
	const char *pcap_path;       /* CAPTURE_PCAP */
	const char *iface;           /* CAPTURE_IFACE */
	const char *eal_args;        /* CAPTURE_EAL: space-separated EAL arguments */
	uint16_t port_id;            /* CAPTURE_EAL: which port to read */
	unsigned nb_mbufs;           /* 0: default */
	unsigned extra_mbufs;        /* added to the default: mbufs held in worker queues */
	uint16_t rx_queues;          /* receive queues (0, 1: one). CAPTURE_EAL: spread by the
				      * NIC's RSS with a symmetric key (both directions of a
				      * flow on one queue); CAPTURE_IFACE: af_packet qpairs
				      * (the kernel's fanout hash); CAPTURE_PCAP: one only */
	uint16_t mbuf_data_room;     /* bytes per mbuf, headroom included; 0: DPDK's default */
	int verbose;                 /* >0: let the EAL log at info level */
	const char *prog;            /* argv[0], for the EAL */
};

struct capture {
	enum capture_source source;
	uint16_t port;
	uint16_t nb_rxq;             /* receive queues set up */
	struct rte_mempool *pool;
	int linktype;                /* a DLT_* value from <pcap/dlt.h> */
	int ts_offset;               /* mbuf dynfield offset of the rx timestamp, or -1 */
	uint64_t ts_flag;            /* ol_flags bit set when the timestamp is valid */
	bool ts_nanos;               /* timestamp unit: ns (true) or us */
	uint64_t file_size;          /* CAPTURE_PCAP: bytes in the file, for progress */
	unsigned empty_polls;        /* consecutive empty bursts (replay end detection) */
	bool eal_up;
};

/* Brings up the EAL and the port for cfg. Returns 0, or -1 with a one-line
 * reason in err. On failure nothing stays allocated except the EAL itself,
 * which DPDK cannot tear down and re-init in one process. */
int capture_open(struct capture *c, const struct capture_config *cfg,
		 char *err, size_t errlen);

/* Receives up to n packets of queue 0 into pkts; the caller owns and frees
 * them. */
uint16_t capture_rx(struct capture *c, struct rte_mbuf **pkts, uint16_t n);

/* The same for queue q (< nb_rxq), from the thread that polls q (one thread
 * per queue); counts nothing in c. */
uint16_t capture_rx_queue(const struct capture *c, uint16_t q, struct rte_mbuf **pkts,
			  uint16_t n);

/* True once a replay has delivered its whole file (checked after a burst
 * that returned 0 packets). Live sources never end by themselves. */
bool capture_eof(struct capture *c);

/* The packet's capture time in ns since the epoch: from the pcap record in
 * replay, from the clock at receive time live. */
uint64_t capture_ts_ns(const struct capture *c, const struct rte_mbuf *m);

/* Port counters: packets the device dropped or could not buffer. */
void capture_port_stats(const struct capture *c, uint64_t *ipackets,
			uint64_t *imissed, uint64_t *ierrors, uint64_t *nombuf);

/* Stops the port and frees the pool, then the EAL. */
void capture_close(struct capture *c);

/* Pool memory of one mbuf with this data room, headers included (an
 * estimate made before the EAL runs, as the mempool lays objects out). */
uint64_t capture_mbuf_footprint(uint16_t data_room);

/* Reads the link type of a capture file (pcap or pcapng) into *linktype.
 * Returns 0, or -1 with a one-line reason in err. Exposed for tests. */
int capture_file_linktype(const char *path, int *linktype, char *err, size_t errlen);

#endif
