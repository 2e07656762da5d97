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
static uint64_t mbuf_footprint(uint16_t data_room)
{
	uint64_t lines = (64 + sizeof(struct rte_mbuf) + data_room + 63) / 64;

	if (!(lines & 1))
		lines++;
	return lines * 64;
}

int capture_file_scan(const char *path, struct capture_file_info *fi,
		      char *err, size_t errlen)
{
	char ebuf[PCAP_ERRBUF_SIZE];
	struct pcap_pkthdr *h;
	const u_char *data;
	pcap_t *p;
	int ret;

	memset(fi, 0, sizeof(*fi));
	p = pcap_open_offline(path, ebuf);
	if (!p) {
		set_err(err, errlen, "cannot read capture %s: %s", path, ebuf);
		return -1;
	}
	while ((ret = pcap_next_ex(p, &h, &data)) == 1) {
		fi->frames++;
		fi->bytes += h->caplen;
		if (h->caplen > fi->max_caplen)
			fi->max_caplen = h->caplen;
		fi->mbufs_2k += h->caplen ? (h->caplen + RTE_MBUF_DEFAULT_DATAROOM - 1) /
					    RTE_MBUF_DEFAULT_DATAROOM : 1;
	}
	if (ret == -1) {
		set_err(err, errlen, "cannot read capture %s: %s", path, pcap_geterr(p));
		pcap_close(p);
		return -1;
	}
	pcap_close(p);
	return 0;
}

void capture_store_plan(const struct capture_file_info *fi, uint16_t *data_room,
			uint64_t *mbufs, uint64_t *mem_bytes)
{
	if (fi->max_caplen <= RTE_MBUF_DEFAULT_DATAROOM) {
		/* one mbuf per frame, no bigger than the biggest frame needs */
		uint32_t r = (fi->max_caplen + 63) & ~63u;

		*data_room = (uint16_t)(RTE_PKTMBUF_HEADROOM + (r ? r : 64));
		*mbufs = fi->frames;
	} else {
		*data_room = RTE_MBUF_DEFAULT_BUF_SIZE;
		*mbufs = fi->mbufs_2k;
	}
	*mem_bytes = *mbufs * mbuf_footprint(*data_room) +
		     fi->frames * sizeof(struct capture_frame);
}

int capture_load(struct capture *c, struct capture_store *st, uint64_t expect_frames,
		 char *err, size_t errlen)
{
	uint64_t cap = expect_frames ? expect_frames : 1;

	memset(st, 0, sizeof(*st));
	st->ts_min = UINT64_MAX;
	st->f = malloc(cap * sizeof(*st->f));
	if (!st->f) {
		set_err(err, errlen, "out of memory for the index of %llu frames",
			(unsigned long long)cap);
		return -1;
	}
	for (;;) {
		struct rte_mbuf *m[32];
		uint16_t n = capture_rx(c, m, 32);

		if (!n) {
			if (capture_eof(c))
				break;
			continue;
		}
		for (uint16_t i = 0; i < n; i++) {
			struct capture_frame *fr;

			if (st->n == cap) {
				/* more than counted (the file grew?): refuse rather than grow */
				rte_pktmbuf_free_bulk(m + i, n - i);
				set_err(err, errlen, "the capture holds more frames than the %llu "
					"counted before loading", (unsigned long long)expect_frames);
				return -1;
			}
			fr = &st->f[st->n++];
			fr->m = m[i];
			fr->data = rte_pktmbuf_mtod(m[i], uint8_t *);
			fr->len = rte_pktmbuf_pkt_len(m[i]);
			fr->seg_len = rte_pktmbuf_data_len(m[i]);
			fr->ts_ns = capture_ts_ns(c, m[i]);
			st->bytes += fr->len;
			st->mbufs += m[i]->nb_segs;
			if (fr->ts_ns < st->ts_min)
				st->ts_min = fr->ts_ns;
			if (fr->ts_ns > st->ts_max)
				st->ts_max = fr->ts_ns;
		}
	}
	if (st->n != expect_frames) {
		uint64_t ipk, missed, errs, nombuf;

		capture_port_stats(c, &ipk, &missed, &errs, &nombuf);
		set_err(err, errlen, "received %llu of the capture's %llu frames into memory "
			"(%llu mbuf allocation failures, %llu errors)",
			(unsigned long long)st->n, (unsigned long long)expect_frames,
			(unsigned long long)nombuf, (unsigned long long)errs);
		return -1;
	}
	if (!st->n)
		st->ts_min = 0;
	st->pool_bytes = (uint64_t)(c->pool->header_size + c->pool->elt_size +
				    c->pool->trailer_size) * c->pool->size;
	return 0;
}

void capture_store_free(struct capture_store *st)
{
	for (uint64_t i = 0; i < st->n; i++)
		rte_pktmbuf_free(st->f[i].m);
	free(st->f);
	memset(st, 0, sizeof(*st));
}

/* Address rewriting between replay passes. Fields are read and written
 * byte-wise: frames start anywhere. */
static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m') for the 32-bit field old -> new,
 * on the checksum at c. The one's complement sum the receiver computes is
 * unchanged, so a right checksum stays right and a wrong one stays wrong. */
static void csum_update32(uint8_t *c, uint32_t old, uint32_t new)
{
	uint32_t s = (uint16_t)~rd16(c);

	s += (uint16_t)~(old >> 16) + (new >> 16);
	s += (uint16_t)~(old & 0xffff) + (new & 0xffff);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	wr16(c, (uint16_t)~s);
}

/* Where a frame's IP header and transport checksum are. */
struct ip_loc {
	uint8_t *ip;
	int ver;                     /* 4 or 6; 0: not IP, or not rewritten */
	uint8_t *l4csum;             /* transport checksum covering the addresses, or NULL */
	bool udp;                    /* 0 means "no checksum" there */
};

static void locate(uint8_t *f, uint32_t len, int link, struct ip_loc *l)
{
	uint32_t off, avail, fam;
	uint16_t et = 0;
	uint8_t *ip, nh;

	memset(l, 0, sizeof(*l));
	switch (link) {
	case DECODE_LINK_ETHERNET:
		if (len < 14)
			return;
		et = rd16(f + 12);
		off = 14;
		for (int d = 0; et == 0x8100 || et == 0x88a8 || et == 0x9100; d++) {
			if (d == 8 || off + 4 > len)
				return;
			et = rd16(f + off + 2);
			off += 4;
		}
		break;
	case DECODE_LINK_NULL:
	case DECODE_LINK_LOOP:
		if (len < 4)
			return;
		if (link == DECODE_LINK_LOOP) {
			fam = rd32(f);
		} else {
			memcpy(&fam, f, 4);
			if (fam > 0xffff)
				fam = __builtin_bswap32(fam);
		}
		if (fam == 2)
			et = 0x0800;
		else if (fam == 24 || fam == 28 || fam == 30)
			et = 0x86dd;
		else
			return;
		off = 4;
		break;
	case DECODE_LINK_SLL:
		if (len < 16)
			return;
		et = rd16(f + 14);
		off = 16;
		while (et == 0x8100 || et == 0x88a8) {
			if (off + 4 > len)
				return;
			et = rd16(f + off + 2);
			off += 4;
		}
		break;
	case DECODE_LINK_SLL2:
		if (len < 20)
			return;
		et = rd16(f);
		off = 20;
		break;
	case DECODE_LINK_RAW:
	case 14:
	case 101:
		if (len < 1)
			return;
		et = (f[0] >> 4) == 4 ? 0x0800 : (f[0] >> 4) == 6 ? 0x86dd : 0;
		off = 0;
		break;
	default:
		return;
	}
	if (off >= len)
		return;
	ip = f + off;
	avail = len - off;
	if (et == 0x0800) {
		uint32_t hlen;

		if (avail < 20 || (ip[0] >> 4) != 4)
			return;
		hlen = (uint32_t)(ip[0] & 0x0f) * 4;
		if (hlen < 20 || hlen > avail)
			return;
		l->ip = ip;
		l->ver = 4;
		if (rd16(ip + 6) & 0x1fff)
			return;   /* not the first fragment: no transport header */
		if (ip[9] == 6 && avail >= hlen + 18)
			l->l4csum = ip + hlen + 16;
		else if (ip[9] == 17 && avail >= hlen + 8) {
			l->l4csum = ip + hlen + 6;
			l->udp = true;
		}
		return;
	}
	if (et != 0x86dd || avail < 40 || (ip[0] >> 4) != 6)
		return;
	nh = ip[6];
	off = 40;
	for (int i = 0; i < 8; i++) {
		switch (nh) {
		case 6:
			l->l4csum = avail >= off + 18 ? ip + off + 16 : NULL;
			break;
		case 17:
			l->l4csum = avail >= off + 8 ? ip + off + 6 : NULL;
			l->udp = true;
			break;
		case 58:
			l->l4csum = avail >= off + 4 ? ip + off + 2 : NULL;
			break;
		case 43:
			/* a routing header: the transport checksum covers its final
			 * address, which is not moved; leave the frame as it is */
			return;
		case 0: case 60: case 135: case 51: case 44:
			if (avail < off + 8)
				break;
			if (nh == 44 && (rd16(ip + off + 2) & 0xfff8))
				break;   /* not the first fragment */
			{
				uint32_t elen = nh == 51 ? ((uint32_t)ip[off + 1] + 2) * 4 :
						nh == 44 ? 8 : ((uint32_t)ip[off + 1] + 1) * 8;

				nh = ip[off];
				off += elen;
			}
			continue;
		default:
			break;
		}
		break;
	}
	l->ip = ip;
	l->ver = 6;
}

int capture_frame_shift(uint8_t *frame, uint32_t len, int linktype, uint32_t delta)
{
	struct ip_loc l;
	unsigned a_off[2];
	uint8_t *l4c;

	locate(frame, len, linktype, &l);
	if (!l.ver)
		return 0;
	/* a UDP checksum of 0 means none was computed: it stays 0 */
	l4c = l.l4csum && !(l.udp && rd16(l.l4csum) == 0) ? l.l4csum : NULL;
	a_off[0] = l.ver == 4 ? 12 : 8;    /* source: the address, or its first 32 bits */
	a_off[1] = l.ver == 4 ? 16 : 24;   /* destination */
	for (int k = 0; k < 2; k++) {
		uint8_t *a = l.ip + a_off[k];
		uint32_t old = rd32(a), new = old + delta;

		wr32(a, new);
		if (l.ver == 4)
			csum_update32(l.ip + 10, old, new);
		if (l4c)
			csum_update32(l4c, old, new);
	}
	if (l4c && l.udp && rd16(l4c) == 0)
		wr16(l4c, 0xffff);   /* UDP sends a computed 0 as all ones */
	return l.ver;
}

void capture_store_shift(struct capture_store *st, int linktype, uint32_t delta)
{
	for (uint64_t i = 0; i < st->n; i++)
		capture_frame_shift(st->f[i].data, st->f[i].seg_len, linktype, delta);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_a16(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

int capture_store_stride(const struct capture_store *st, int linktype, unsigned passes,
			 uint32_t *stride)
{
	uint32_t *v4 = malloc((st->n * 2 + 1) * sizeof(*v4));
	uint8_t (*v6)[16] = malloc((st->n * 2 + 1) * 16);
	uint64_t n4 = 0, n6 = 0, u4 = 0, u6 = 0;
	int ret = -1;

	if (!v4 || !v6)
		goto out;
	for (uint64_t i = 0; i < st->n; i++) {
		struct ip_loc l;

		locate(st->f[i].data, st->f[i].seg_len, linktype, &l);
		if (l.ver == 4) {
			v4[n4++] = rd32(l.ip + 12);
			v4[n4++] = rd32(l.ip + 16);
		} else if (l.ver == 6) {
			memcpy(v6[n6++], l.ip + 8, 16);
			memcpy(v6[n6++], l.ip + 24, 16);
		}
	}
	qsort(v4, n4, sizeof(*v4), cmp_u32);
	qsort(v6, n6, 16, cmp_a16);
	for (uint64_t i = 0; i < n4; i++)
		if (!u4 || v4[u4 - 1] != v4[i])
			v4[u4++] = v4[i];
	for (uint64_t i = 0; i < n6; i++)
		if (!u6 || memcmp(v6[u6 - 1], v6[i], 16) != 0)
			memmove(v6[u6++], v6[i], 16);
	/* pass j's addresses are pass 0's plus j * stride: no two passes share
	 * an address when no a + j * stride (0 < j < passes) is a pass-0 address */
	for (uint32_t c = 0; c < 4096; c++) {
		uint32_t s = (1u << 24) + c;
		bool ok = true;

		for (unsigned j = 1; j < passes && ok; j++) {
			uint32_t d = s * j;

			for (uint64_t i = 0; i < u4 && ok; i++) {
				uint32_t a = v4[i] + d;

				ok = !bsearch(&a, v4, u4, sizeof(*v4), cmp_u32);
			}
			for (uint64_t i = 0; i < u6 && ok; i++) {
				uint8_t a[16];

				memcpy(a, v6[i], 16);
				wr32(a, rd32(a) + d);
				ok = !bsearch(a, v6, u6, 16, cmp_a16);
			}
		}
		if (ok) {
			*stride = s;
			ret = 0;
			break;
		}
	}
out:
	free(v4);
	free(v6);
	return ret;
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
					 (mbuf_footprint(room) + 16) / (1 << 20) * 9 / 8);
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
