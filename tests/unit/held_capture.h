/* A capture's frames held in memory for unit tests that drive the workers
 * without DPDK: read with libpcap, one malloc'd buffer per frame, handed
 * to the workers a burst at a time. */
#ifndef BW_TEST_HELD_CAPTURE_H
#define BW_TEST_HELD_CAPTURE_H

#include <pcap/pcap.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "workers.h"

/* The capture's frames, read once. */
struct held {
	uint8_t **data;
	uint32_t *len;
	uint64_t *ts;
	unsigned n;
	int link;
};

static inline int hold_capture(const char *path, struct held *h)
{
	char ebuf[PCAP_ERRBUF_SIZE];
	struct pcap_pkthdr *ph;
	const u_char *d;
	pcap_t *p = pcap_open_offline(path, ebuf);
	unsigned cap = 0;

	memset(h, 0, sizeof(*h));
	if (!p)
		return -1;
	h->link = pcap_datalink(p);
	while (pcap_next_ex(p, &ph, &d) == 1) {
		if (h->n == cap) {
			cap = cap ? cap * 2 : 256;
			h->data = realloc(h->data, cap * sizeof(*h->data));
			h->len = realloc(h->len, cap * sizeof(*h->len));
			h->ts = realloc(h->ts, cap * sizeof(*h->ts));
		}
		h->data[h->n] = malloc(ph->caplen ? ph->caplen : 1);
		memcpy(h->data[h->n], d, ph->caplen);
		h->len[h->n] = ph->caplen;
		h->ts[h->n] = (uint64_t)ph->ts.tv_sec * 1000000000ull + (uint64_t)ph->ts.tv_usec * 1000;
		h->n++;
	}
	pcap_close(p);
	return 0;
}

/* Hands the frames from i on to the workers, one burst: plain buffers,
 * never freed by them. Returns how many frames it handed. */
static inline unsigned held_dispatch(const struct held *h, unsigned i, struct workers *ws)
{
	struct work_item it[WORKER_BURST];
	unsigned n = h->n - i < WORKER_BURST ? h->n - i : WORKER_BURST;

	memset(it, 0, sizeof(it));
	for (unsigned j = 0; j < n; j++) {
		it[j].data = h->data[i + j];
		it[j].len = h->len[i + j];
		it[j].ts_ns = h->ts[i + j];
	}
	workers_dispatch(ws, it, n);
	workers_housekeeping(ws);
	return n;
}

static inline void held_free(struct held *h)
{
	for (unsigned i = 0; i < h->n; i++)
		free(h->data[i]);
	free(h->data);
	free(h->len);
	free(h->ts);
}

#endif
