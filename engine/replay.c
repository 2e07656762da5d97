/* replay: see replay.h. */
#include "replay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pcap/pcap.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_prefetch.h>

#include "capture.h"
#include "clocks.h"
#include "decode.h"
#include "stage_clock.h"
#include "summary.h"
#include "workers.h"

#define REPLAY_POOL_SLACK 1024      /* mbufs beyond the frames: a receive burst, caches */
#define REPLAY_PREFETCH 4           /* frames ahead whose first bytes are prefetched */

int replay_file_scan(const char *path, struct replay_file_info *fi,
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
		snprintf(err, errlen, "cannot read capture %s: %s", path, ebuf);
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
		snprintf(err, errlen, "cannot read capture %s: %s", path, pcap_geterr(p));
		pcap_close(p);
		return -1;
	}
	pcap_close(p);
	return 0;
}

void replay_plan(const struct replay_file_info *fi, uint16_t *data_room,
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
	*mem_bytes = *mbufs * capture_mbuf_footprint(*data_room) +
		     fi->frames * sizeof(struct replay_frame);
}

int replay_load(struct capture *c, struct replay_store *st, uint64_t expect_frames,
		 char *err, size_t errlen)
{
	uint64_t cap = expect_frames ? expect_frames : 1;

	memset(st, 0, sizeof(*st));
	st->ts_min = UINT64_MAX;
	st->f = malloc(cap * sizeof(*st->f));
	if (!st->f) {
		snprintf(err, errlen, "out of memory for the index of %llu frames",
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
			struct replay_frame *fr;

			if (st->n == cap) {
				/* more than counted (the file grew?): refuse rather than grow */
				rte_pktmbuf_free_bulk(m + i, n - i);
				snprintf(err, errlen, "the capture holds more frames than the %llu "
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
		snprintf(err, errlen, "received %llu of the capture's %llu frames into memory "
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

void replay_store_free(struct replay_store *st)
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

/* Finds the IP header with decode's own link parser, so replay rewrites
 * exactly the frames decode reads. */
static void locate(uint8_t *f, uint32_t len, int link, struct ip_loc *l)
{
	uint32_t off, avail;
	uint16_t et;
	uint8_t *ip, nh;

	memset(l, 0, sizeof(*l));
	if (decode_link(f, len, link, &off, &et) != DECODE_OK)
		return;
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

int replay_frame_shift(uint8_t *frame, uint32_t len, int linktype, uint32_t delta)
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

void replay_shift(struct replay_store *st, int linktype, uint32_t delta)
{
	for (uint64_t i = 0; i < st->n; i++)
		replay_frame_shift(st->f[i].data, st->f[i].seg_len, linktype, delta);
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

int replay_stride(const struct replay_store *st, int linktype, unsigned passes,
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


int replay_prepare(struct replay *rp, const char *path, unsigned *nb_mbufs,
		   uint16_t *data_room, char *err, size_t errlen)
{
	uint64_t mbufs, need;

	rp->path = path;
	if (replay_file_scan(path, &rp->fi, err, errlen) != 0)
		return -1;
	replay_plan(&rp->fi, data_room, &mbufs, &need);
	if (need > rp->mem_cap || mbufs + REPLAY_POOL_SLACK > UINT32_MAX) {
		snprintf(err, errlen, "--replay: %s does not fit in memory: its %llu frames "
			"need %llu mbufs of %u bytes, %.1f MiB in all, more than --replay-mem "
			"%.1f MiB (raise --replay-mem or use a smaller capture)", path,
			(unsigned long long)rp->fi.frames, (unsigned long long)mbufs, *data_room,
			(double)need / (1 << 20), (double)rp->mem_cap / (1 << 20));
		return -1;
	}
	*nb_mbufs = (unsigned)(mbufs + REPLAY_POOL_SLACK);
	rp->pass_s = calloc(rp->passes, sizeof(*rp->pass_s));
	if (!rp->pass_s) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

int replay_hold(struct replay *rp, struct capture *c, int linktype, uint64_t max_window_ns,
		char *err, size_t errlen)
{
	double t0 = clock_mono_s();

	err[0] = '\0';
	if (replay_load(c, &rp->st, rp->fi.frames, err, errlen) != 0 ||
	    replay_stride(&rp->st, linktype, rp->passes, &rp->stride) != 0) {
		if (!err[0])
			snprintf(err, errlen, "no address step keeps the passes apart");
		return -1;
	}
	rp->load_s = clock_mono_s() - t0;
	/* Passes apart by more than the longest track window: each pass
	 * starts with the storm windows of the previous one expired, so
	 * passes are the same work, not one growing storm. */
	rp->shift_ns = rp->st.ts_max - rp->st.ts_min + 1000000000ull + max_window_ns;
	return 0;
}

void replay_run(struct replay *rp, struct workers *ws, int linktype,
		bool (*between)(void *user), void *user, bool stage_times, bool progress)
{
	const struct replay_frame *fr = rp->st.f;
	uint64_t n = rp->st.n;
	double t_last_progress = 0;
	bool go = true;

	for (unsigned k = 0; k < rp->passes && go; k++) {
		uint64_t ts_add = (uint64_t)k * rp->shift_ns;
		double t0;

		if (k) {
			t0 = clock_mono_s();
			replay_shift(&rp->st, linktype, rp->stride);
			rp->rewrite_s += clock_mono_s() - t0;
		}
		if (stage_times)
			stage_clock_resume();
		t0 = clock_mono_s();
		rp->cpu_s -= clock_thread_cpu_s();
		for (uint64_t i = 0; i < n; i += WORKER_BURST) {
			uint64_t end = i + WORKER_BURST < n ? i + WORKER_BURST : n;
			struct work_item it[WORKER_BURST];

			go = between(user);
			if (!go)
				break;
			for (uint64_t j = i; j < end; j++) {
				struct work_item *x = &it[j - i];

				x->data = fr[j].data;
				x->m = fr[j].m;
				x->ts_ns = fr[j].ts_ns + ts_add;
				x->len = fr[j].len;
				/* a frame larger than one mbuf is made contiguous */
				x->segmented = fr[j].seg_len < fr[j].len;
				x->free_after = 0;   /* held for the next pass */
				if (j + REPLAY_PREFETCH < n)
					rte_prefetch0(fr[j + REPLAY_PREFETCH].data);
			}
			workers_dispatch(ws, it, (unsigned)(end - i));
			workers_housekeeping(ws);
			if (progress && (i & 0x3ff) == 0) {
				double t = clock_mono_s();

				if (t - t_last_progress > 0.5) {
					t_last_progress = t;
					fprintf(stderr, "\r  pass %u/%u  %5.1f%%   ", k + 1,
						rp->passes, 100.0 * (double)i / (double)(n ? n : 1));
				}
			}
		}
		workers_drain(ws);   /* the pass ends when every worker is done with it */
		rp->pass_s[k] = clock_mono_s() - t0;
		rp->cpu_s += clock_thread_cpu_s();
		if (stage_times)
			stage_clock_pause();
	}
	if (progress && t_last_progress > 0)
		fprintf(stderr, "\r%60s\r", "");
}

void replay_run_info(const struct replay *rp, struct run_info *ri)
{
	if (!rp->passes)
		return;
	ri->engine_cpu_s += rp->cpu_s;
	ri->finish_s = ri->engine_s;
	for (unsigned k = 0; k < rp->passes; k++)
		ri->engine_s += rp->pass_s[k];
	ri->passes = rp->passes;
	ri->replay_frames = rp->st.n;
	ri->replay_bytes = rp->st.bytes;
	ri->replay_mbufs = rp->st.mbufs;
	ri->replay_pool_bytes = rp->st.pool_bytes;
	ri->load_s = rp->load_s;
	ri->rewrite_s = rp->rewrite_s;
	ri->pass_s = rp->pass_s;
	ri->replay_stride = rp->stride;
	ri->replay_shift_ns = rp->shift_ns;
}

void replay_free(struct replay *rp)
{
	replay_store_free(&rp->st);
	free(rp->pass_s);
	rp->pass_s = NULL;
}
