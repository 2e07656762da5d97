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
	unsigned nb_mbufs = cfg->nb_mbufs ? cfg->nb_mbufs : DEFAULT_MBUFS;

	memset(c, 0, sizeof(*c));
	c->source = cfg->source;
	c->ts_offset = -1;
	c->linktype = DLT_EN10MB;

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
			snprintf(s_mem, sizeof(s_mem), "-m%u", 64 + nb_mbufs * 3 / 1024);
			argv[argc++] = s_mem;
		}
	}
	if (cfg->source == CAPTURE_PCAP) {
		add_pmd(argv, &argc, s_pmd[1], sizeof(s_pmd[1]), "librte_net_pcap.so");
		snprintf(s_vdev, sizeof(s_vdev), "--vdev=net_pcap0,rx_pcap=%s", cfg->pcap_path);
		argv[argc++] = s_vdev;
	} else if (cfg->source == CAPTURE_IFACE) {
		add_pmd(argv, &argc, s_pmd[2], sizeof(s_pmd[2]), "librte_net_af_packet.so");
		snprintf(s_vdev, sizeof(s_vdev), "--vdev=net_af_packet0,iface=%s,qpairs=1",
			 cfg->iface);
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
					  RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
	if (!c->pool) {
		set_err(err, errlen, "cannot create the mbuf pool: %s", rte_strerror(rte_errno));
		goto fail_eal;
	}

	memset(&port_conf, 0, sizeof(port_conf));
	if (rte_eth_dev_info_get(c->port, &info) == 0 &&
	    (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_TIMESTAMP))
		port_conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_TIMESTAMP;
	ret = rte_eth_dev_configure(c->port, 1, 1, &port_conf);
	if (ret < 0) {
		set_err(err, errlen, "cannot configure port %u: %s", c->port, rte_strerror(-ret));
		goto fail_pool;
	}
	ret = rte_eth_rx_queue_setup(c->port, 0, RX_DESC, rte_eth_dev_socket_id(c->port),
				     NULL, c->pool);
	if (ret < 0) {
		set_err(err, errlen, "cannot set up rx queue: %s", rte_strerror(-ret));
		goto fail_pool;
	}
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

bool capture_eof(struct capture *c)
{
	/* net_pcap reads the file with blocking reads: an empty burst means
	 * the file is exhausted, unless the pool ran dry (we free every mbuf
	 * after its burst, so that is transient). A few empty polls in a row
	 * settle it. */
	return c->source == CAPTURE_PCAP && c->empty_polls >= 4;
}

static uint64_t wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t capture_ts_ns(const struct capture *c, const struct rte_mbuf *m)
{
	if (c->ts_offset >= 0 && (m->ol_flags & c->ts_flag)) {
		uint64_t t = *RTE_MBUF_DYNFIELD(m, c->ts_offset, const rte_mbuf_timestamp_t *);

		return c->ts_nanos ? t : t * 1000;
	}
	return wall_ns();
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
