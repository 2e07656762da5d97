/* capture: EAL bootstrap and one rx port; see capture.h. */
#include "capture.h"

#include <errno.h>
#include <stdarg.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <pcap/pcap.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>

#include "bw-config.h"
#include "clocks.h"
#include "decode.h"

#define EAL_ARGV_MAX 64
#define RX_DESC 1024
#define DEFAULT_MBUFS 8191
#define MBUF_CACHE 256

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int capture_file_linktype(const char *path, int *linktype, char *err, size_t errlen)
{
	char ebuf[PCAP_ERRBUF_SIZE];
	pcap_t *p;

	/* libpcap reads the header of pcap (µs and ns) and pcapng files alike;
	 * net_pcap replays whatever libpcap can open. */
	p = pcap_open_offline(path, ebuf);
	if (!p) {
		set_err(err, errlen, "cannot read capture %s: %s", path, ebuf);
		return -1;
	}
	*linktype = pcap_datalink(p);
	pcap_close(p);
	return 0;
}

/* Pool memory of one mbuf with this data room: the mempool's object header,
 * struct rte_mbuf and the room, in cache lines made odd as the mempool does
 * to spread objects over memory channels. An estimate made before the EAL
 * runs; the pool's real figure is read after it is made. */
uint64_t capture_mbuf_footprint(uint16_t data_room)
{
	uint64_t lines = (64 + sizeof(struct rte_mbuf) + data_room + 63) / 64;

	if (!(lines & 1))
		lines++;
	return lines * 64;
}

static bool have_hugepages(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[128];
	long free_pages = 0;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "HugePages_Free: %ld", &free_pages) == 1)
			break;
	fclose(f);
	return free_pages > 0;
}

/* "0@(0,1)": one EAL lcore allowed on every CPU this process may use, so
 * parallel runs on a small machine are not all pinned to CPU 0. */
static void lcore_arg(char *buf, size_t len)
{
	cpu_set_t set;
	size_t n = 0;
	bool first = true;

	n += (size_t)snprintf(buf, len, "--lcores=0@(");
	if (sched_getaffinity(0, sizeof(set), &set) == 0) {
		for (int c = 0; c < CPU_SETSIZE && n + 8 < len; c++) {
			if (!CPU_ISSET(c, &set))
				continue;
			n += (size_t)snprintf(buf + n, len - n, "%s%d", first ? "" : ",", c);
			first = false;
		}
	}
	if (first)
		n += (size_t)snprintf(buf + n, len - n, "0");
	snprintf(buf + n, len - n, ")");
}

static const char *pmd_dir(void)
{
	const char *env = getenv("BW_PMD_DIR");

	return env && *env ? env : BW_PMD_DIR;
}

static int add_pmd(char **argv, int *argc, char *store, size_t len, const char *name)
{
	struct stat st;

	snprintf(store, len, "%s/%s", pmd_dir(), name);
	if (stat(store, &st) != 0)
		return -1;   /* a static DPDK build has it linked in: nothing to load */
	argv[(*argc)++] = (char *)"-d";
	argv[(*argc)++] = store;
	return 0;
}

int capture_open(struct capture *c, const struct capture_config *cfg,
		 char *err, size_t errlen)
{
	static char s_lcores[256], s_vdev[4096], s_pmd[3][512], s_mem[32];
	static char *eal_copy;
	char *argv[EAL_ARGV_MAX];
	int argc = 0, ret;
	bool raw = cfg->source == CAPTURE_EAL;
	struct rte_eth_conf port_conf;
	struct rte_eth_dev_info info;
	uint16_t nb_ports;
	uint16_t nrxq = cfg->rx_queues > 1 ? cfg->rx_queues : 1;
	unsigned nb_mbufs = cfg->nb_mbufs ? cfg->nb_mbufs :
			    DEFAULT_MBUFS + cfg->extra_mbufs + (nrxq - 1u) * (RX_DESC + MBUF_CACHE);
	uint16_t room = cfg->mbuf_data_room ? cfg->mbuf_data_room : RTE_MBUF_DEFAULT_BUF_SIZE;

	memset(c, 0, sizeof(*c));
	c->source = cfg->source;
	c->ts_offset = -1;
	c->linktype = DLT_EN10MB;

	if (cfg->source == CAPTURE_PCAP && nrxq > 1) {
		set_err(err, errlen, "a capture file is read on one receive queue");
		return -1;
	}
	if (cfg->source == CAPTURE_PCAP) {
		struct stat st;

		if (stat(cfg->pcap_path, &st) != 0) {
			set_err(err, errlen, "cannot open %s: %s", cfg->pcap_path, strerror(errno));
			return -1;
		}
		if (strchr(cfg->pcap_path, ',')) {
			set_err(err, errlen, "capture path %s contains a comma, which DPDK device "
				"arguments cannot carry: rename or link it", cfg->pcap_path);
			return -1;
		}
		if (capture_file_linktype(cfg->pcap_path, &c->linktype, err, errlen) != 0)
			return -1;
		c->file_size = (uint64_t)st.st_size;
	} else if (cfg->source == CAPTURE_IFACE) {
		if (!if_nametoindex(cfg->iface)) {
			set_err(err, errlen, "no such interface: %s", cfg->iface);
			return -1;
		}
	}

	argv[argc++] = (char *)(cfg->prog ? cfg->prog : "breakwater");
	lcore_arg(s_lcores, sizeof(s_lcores));
	argv[argc++] = s_lcores;
	argv[argc++] = (char *)"--no-shconf";
	argv[argc++] = (char *)"--no-telemetry";
	argv[argc++] = (char *)(cfg->verbose > 0 ? "--log-level=info" : "--log-level=error");
	add_pmd(argv, &argc, s_pmd[0], sizeof(s_pmd[0]), "librte_mempool_ring.so");
	if (!raw) {
		argv[argc++] = (char *)"--no-pci";
		if (!have_hugepages()) {
			fprintf(stderr, "breakwater: no hugepages available: running DPDK with --no-huge\n");
			argv[argc++] = (char *)"--no-huge";
			if (!cfg->mbuf_data_room)
				snprintf(s_mem, sizeof(s_mem), "-m%u", 64 + nb_mbufs * 3 / 1024);
			else   /* a replay store: the pool, its ring, 1/8 slack */
				snprintf(s_mem, sizeof(s_mem), "-m%llu", 64 + (unsigned long long)nb_mbufs *
					 (capture_mbuf_footprint(room) + 16) / (1 << 20) * 9 / 8);
			argv[argc++] = s_mem;
		}
	}
	if (cfg->source == CAPTURE_PCAP) {
		add_pmd(argv, &argc, s_pmd[1], sizeof(s_pmd[1]), "librte_net_pcap.so");
		snprintf(s_vdev, sizeof(s_vdev), "--vdev=net_pcap0,rx_pcap=%s", cfg->pcap_path);
		argv[argc++] = s_vdev;
	} else if (cfg->source == CAPTURE_IFACE) {
		add_pmd(argv, &argc, s_pmd[2], sizeof(s_pmd[2]), "librte_net_af_packet.so");
		snprintf(s_vdev, sizeof(s_vdev), "--vdev=net_af_packet0,iface=%s,qpairs=%u",
			 cfg->iface, (unsigned)nrxq);
		argv[argc++] = s_vdev;
	} else {
		char *tok, *save = NULL;

		free(eal_copy);
		eal_copy = strdup(cfg->eal_args ? cfg->eal_args : "");
		if (!eal_copy) {
			set_err(err, errlen, "out of memory");
			return -1;
		}
		for (tok = strtok_r(eal_copy, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
			if (argc >= EAL_ARGV_MAX - 1) {
				set_err(err, errlen, "too many EAL arguments (at most %d)", EAL_ARGV_MAX - 12);
				return -1;
			}
			argv[argc++] = tok;
		}
	}
	argv[argc] = NULL;

	ret = rte_eal_init(argc, argv);
	if (ret < 0) {
		set_err(err, errlen, "DPDK EAL initialisation failed: %s", rte_strerror(rte_errno));
		return -1;
	}
	c->eal_up = true;

	nb_ports = rte_eth_dev_count_avail();
	if (nb_ports == 0) {
		set_err(err, errlen, "DPDK found no port (PMD plug-ins in %s?)", pmd_dir());
		goto fail_eal;
	}
	c->port = raw ? cfg->port_id : 0;
	if (!rte_eth_dev_is_valid_port(c->port)) {
		set_err(err, errlen, "no DPDK port %u (%u available)", c->port, nb_ports);
		goto fail_eal;
	}

	c->pool = rte_pktmbuf_pool_create("bw_rx", nb_mbufs, MBUF_CACHE, 0,
					  room, (int)rte_socket_id());
	if (!c->pool) {
		set_err(err, errlen, "cannot create the mbuf pool: %s", rte_strerror(rte_errno));
		goto fail_eal;
	}

	memset(&port_conf, 0, sizeof(port_conf));
	memset(&info, 0, sizeof(info));
	if (rte_eth_dev_info_get(c->port, &info) == 0 &&
	    (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_TIMESTAMP))
		port_conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_TIMESTAMP;
	if (nrxq > 1 && info.max_rx_queues < nrxq) {
		set_err(err, errlen, "port %u has %u receive queues, %u asked for: use fewer "
			"workers or --rx-queues 1 (flows sorted in software)", c->port,
			(unsigned)info.max_rx_queues, (unsigned)nrxq);
		goto fail_pool;
	}
	if (nrxq > 1 && raw) {
		/* RSS over the IP addresses and TCP ports with a key that makes
		 * the Toeplitz hash symmetric (0x6d5a repeated, as in "Scalable
		 * TCP Session Monitoring with Symmetric Receive-side Scaling",
		 * Woo and Park): both directions of a flow reach one queue */
		static uint8_t sym_key[64];
		uint64_t hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP) & info.flow_type_rss_offloads;

		for (size_t i = 0; i < sizeof(sym_key); i += 2) {
			sym_key[i] = 0x6d;
			sym_key[i + 1] = 0x5a;
		}
		if (!hf) {
			set_err(err, errlen, "port %u cannot spread TCP flows over queues (no RSS): "
				"use --rx-queues 1 (flows sorted in software)", c->port);
			goto fail_pool;
		}
		port_conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		port_conf.rx_adv_conf.rss_conf.rss_key = sym_key;
		/* the port's own key size (40 or 52 bytes on common NICs) */
		port_conf.rx_adv_conf.rss_conf.rss_key_len =
			info.hash_key_size && info.hash_key_size <= sizeof(sym_key) ?
			info.hash_key_size : 40;
		port_conf.rx_adv_conf.rss_conf.rss_hf = hf;
	}
	ret = rte_eth_dev_configure(c->port, nrxq, 1, &port_conf);
	if (ret < 0) {
		set_err(err, errlen, "cannot configure port %u: %s", c->port, rte_strerror(-ret));
		goto fail_pool;
	}
	for (uint16_t q = 0; q < nrxq; q++) {
		ret = rte_eth_rx_queue_setup(c->port, q, RX_DESC, rte_eth_dev_socket_id(c->port),
					     NULL, c->pool);
		if (ret < 0) {
			set_err(err, errlen, "cannot set up rx queue %u: %s", (unsigned)q,
				rte_strerror(-ret));
			goto fail_pool;
		}
	}
	c->nb_rxq = nrxq;
	ret = rte_eth_tx_queue_setup(c->port, 0, 64, rte_eth_dev_socket_id(c->port), NULL);
	if (ret < 0) {
		set_err(err, errlen, "cannot set up tx queue: %s", rte_strerror(-ret));
		goto fail_pool;
	}
	ret = rte_eth_dev_start(c->port);
	if (ret < 0) {
		set_err(err, errlen, "cannot start port %u: %s", c->port, rte_strerror(-ret));
		goto fail_pool;
	}
	if (cfg->source != CAPTURE_PCAP)
		rte_eth_promiscuous_enable(c->port);   /* not every PMD can: best effort */

	/* net_pcap stamps each mbuf with its pcap record time (µs) */
	c->ts_offset = rte_mbuf_dynfield_lookup(RTE_MBUF_DYNFIELD_TIMESTAMP_NAME, NULL);
	{
		int bit = rte_mbuf_dynflag_lookup(RTE_MBUF_DYNFLAG_RX_TIMESTAMP_NAME, NULL);

		c->ts_flag = bit >= 0 ? 1ull << bit : 0;
		if (bit < 0)
			c->ts_offset = -1;
	}
	c->ts_nanos = false;
	return 0;

fail_pool:
	rte_mempool_free(c->pool);
	c->pool = NULL;
fail_eal:
	rte_eal_cleanup();
	c->eal_up = false;
	return -1;
}

uint16_t capture_rx(struct capture *c, struct rte_mbuf **pkts, uint16_t n)
{
	uint16_t got = rte_eth_rx_burst(c->port, 0, pkts, n);

	if (got)
		c->empty_polls = 0;
	else
		c->empty_polls++;
	return got;
}

uint16_t capture_rx_queue(const struct capture *c, uint16_t q, struct rte_mbuf **pkts,
			  uint16_t n)
{
	return rte_eth_rx_burst(c->port, q, pkts, n);
}

bool capture_eof(struct capture *c)
{
	/* net_pcap reads the file with blocking reads: an empty burst means
	 * the file is exhausted, unless the pool ran dry (we free every mbuf
	 * after its burst, so that is transient). A few empty polls in a row
	 * settle it. */
	return c->source == CAPTURE_PCAP && c->empty_polls >= 4;
}

uint64_t capture_ts_ns(const struct capture *c, const struct rte_mbuf *m)
{
	if (c->ts_offset >= 0 && (m->ol_flags & c->ts_flag)) {
		uint64_t t = *RTE_MBUF_DYNFIELD(m, c->ts_offset, const rte_mbuf_timestamp_t *);

		return c->ts_nanos ? t : t * 1000;
	}
	return clock_wall_ns();
}

void capture_port_stats(const struct capture *c, uint64_t *ipackets,
			uint64_t *imissed, uint64_t *ierrors, uint64_t *nombuf)
{
	struct rte_eth_stats st;

	memset(&st, 0, sizeof(st));
	rte_eth_stats_get(c->port, &st);
	*ipackets = st.ipackets;
	*imissed = st.imissed;
	*ierrors = st.ierrors;
	*nombuf = st.rx_nombuf;
}

void capture_close(struct capture *c)
{
	if (!c->eal_up)
		return;
	rte_eth_dev_stop(c->port);
	rte_eth_dev_close(c->port);
	rte_mempool_free(c->pool);
	c->pool = NULL;
	rte_eal_cleanup();
	c->eal_up = false;
}
