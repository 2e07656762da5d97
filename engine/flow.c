/* flow: bounded flow table with per-state LRU lists; see flow.h. */
#include "flow.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <rte_hash_crc.h>

#include "counters.h"
#include "decode.h"
#include "mem.h"

struct flow_list {
	struct flow *head, *tail;   /* head: least recently seen */
	uint32_t count;
};

struct flow_table {
	struct flow_config cfg;
	struct flow_ops ops;
	void *user;
	struct flow **buckets;
	uint32_t mask;
	struct flow_list lists[FLOW_STATE_MAX];
	struct flow *free_list;     /* pool of recycled flows */
	uint32_t n_free;
	struct flow_stats stats;
};

static const char *const end_names[FLOW_END_MAX] = {
	[FLOW_END_NONE] = "none",
	[FLOW_END_FIN] = "fin",
	[FLOW_END_RST] = "rst",
	[FLOW_END_TIMEOUT] = "timeout",
	[FLOW_END_EVICTED] = "evicted",
	[FLOW_END_EOF] = "eof",
};

const char *flow_end_name(enum flow_end e)
{
	return (unsigned)e < FLOW_END_MAX ? end_names[e] : "?";
}

void flow_config_default(struct flow_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_flows = 262144;
	cfg->timeout_ns[FLOW_NEW] = 30ull * 1000000000;
	cfg->timeout_ns[FLOW_ESTABLISHED] = 300ull * 1000000000;
	cfg->timeout_ns[FLOW_CLOSED] = 10ull * 1000000000;
	cfg->smtp_ports[0] = 25;
	cfg->smtp_ports[1] = 587;
	cfg->smtp_ports[2] = 2525;
	cfg->n_smtp_ports = 3;
	cfg->tls_ports[0] = 465;
	cfg->n_tls_ports = 1;
}

int flow_parse_ports(const char *s, uint16_t *ports, unsigned *n)
{
	unsigned k = 0;

	while (*s) {
		char *end;
		unsigned long v;

		errno = 0;
		v = strtoul(s, &end, 10);
		if (end == s || errno || v == 0 || v > 65535 || k == FLOW_MAX_PORTS)
			return -1;
		ports[k++] = (uint16_t)v;
		if (*end == ',')
			end++;
		else if (*end)
			return -1;
		s = end;
	}
	*n = k;
	return k ? 0 : -1;
}

static inline bool port_in(const uint16_t *ports, unsigned n, uint16_t port)
{
	for (unsigned i = 0; i < n; i++)
		if (ports[i] == port)
			return true;
	return false;
}

static void list_append(struct flow_list *l, struct flow *f)
{
	f->next = NULL;
	f->prev = l->tail;
	if (l->tail)
		l->tail->next = f;
	else
		l->head = f;
	l->tail = f;
	l->count++;
}

static void list_remove(struct flow_list *l, struct flow *f)
{
	if (f->prev)
		f->prev->next = f->next;
	else
		l->head = f->next;
	if (f->next)
		f->next->prev = f->prev;
	else
		l->tail = f->prev;
	f->prev = f->next = NULL;
	l->count--;
}

struct flow_table *flow_table_new(const struct flow_config *cfg,
				  const struct flow_ops *ops, void *user)
{
	struct flow_table *ft;
	uint32_t nb = 1024;

	if (!cfg->max_flows)
		return NULL;
	ft = mem_calloc(MEM_FLOW, 1, sizeof(*ft));
	if (!ft)
		goto fail_table;
	ft->cfg = *cfg;
	if (ops)
		ft->ops = *ops;
	ft->user = user;
	/* one bucket per flow at most load: chains stay short, no rehash ever */
	while (nb < cfg->max_flows && nb < (1u << 30))
		nb <<= 1;
	ft->buckets = mem_calloc(MEM_FLOW, nb, sizeof(*ft->buckets));
	if (!ft->buckets)
		goto fail_buckets;
	ft->mask = nb - 1;
	return ft;

fail_buckets:
	mem_free(MEM_FLOW, ft);
fail_table:
	return NULL;
}

static void flow_unlink(struct flow_table *ft, struct flow *f)
{
	struct flow **pp = &ft->buckets[f->hash & ft->mask];

	while (*pp != f)
		pp = &(*pp)->hnext;
	*pp = f->hnext;
	list_remove(&ft->lists[f->state], f);
	ft->stats.active--;
}

/* Hands f to the pipeline, then returns it to the pool. */
static void flow_release(struct flow_table *ft, struct flow *f, enum flow_end why)
{
	flow_unlink(ft, f);
	if (f->end == FLOW_END_NONE)
		f->end = (uint8_t)why;
	if (f->state != FLOW_CLOSED)
		ft->stats.ended[f->end]++;
	if (ft->ops.release)
		ft->ops.release(ft->user, f);
	f->hnext = ft->free_list;
	ft->free_list = f;
	ft->n_free++;
}

void flow_table_flush(struct flow_table *ft, enum flow_end why)
{
	for (int st = 0; st < FLOW_STATE_MAX; st++)
		while (ft->lists[st].head)
			flow_release(ft, ft->lists[st].head, why);
}

void flow_table_free(struct flow_table *ft, enum flow_end why)
{
	if (!ft)
		return;
	flow_table_flush(ft, why);
	while (ft->free_list) {
		struct flow *f = ft->free_list;

		ft->free_list = f->hnext;
		mem_free(MEM_FLOW, f);
	}
	mem_free(MEM_FLOW, ft->buckets);
	mem_free(MEM_FLOW, ft);
}

static inline int ep_cmp(const uint8_t *a1, uint16_t p1, const uint8_t *a2, uint16_t p2)
{
	int c = memcmp(a1, a2, 16);

	if (c)
		return c;
	return (int)p1 - (int)p2;
}

static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

struct flow *flow_get(struct flow_table *ft, const struct pkt *p, uint64_t now, int *dir,
		      bool *created)
{
	struct flow_key key;
	struct flow *f;
	bool src_is_a, tls;
	uint32_t h;
	int srv;   /* 0: src is the server, 1: dst is the server, -1: neither port followed */

	*created = false;
	tls = false;
	if (port_in(ft->cfg.smtp_ports, ft->cfg.n_smtp_ports, p->dport))
		srv = 1;
	else if (port_in(ft->cfg.smtp_ports, ft->cfg.n_smtp_ports, p->sport))
		srv = 0;
	else if (port_in(ft->cfg.tls_ports, ft->cfg.n_tls_ports, p->dport))
		srv = 1, tls = true;
	else if (port_in(ft->cfg.tls_ports, ft->cfg.n_tls_ports, p->sport))
		srv = 0, tls = true;
	else
		srv = -1;
	if (srv < 0) {
		ft->stats.other_port_pkts++;
		return NULL;
	}

	src_is_a = ep_cmp(p->src, p->sport, p->dst, p->dport) <= 0;
	memset(&key, 0, sizeof(key));
	if (src_is_a) {
		memcpy(key.a, p->src, 16); key.pa = p->sport;
		memcpy(key.b, p->dst, 16); key.pb = p->dport;
	} else {
		memcpy(key.a, p->dst, 16); key.pa = p->dport;
		memcpy(key.b, p->src, 16); key.pb = p->sport;
	}
	h = rte_hash_crc(&key, sizeof(key), 0x62770a7e);

	for (f = ft->buckets[h & ft->mask]; f; f = f->hnext)
		if (f->hash == h && memcmp(&f->key, &key, sizeof(key)) == 0)
			break;

	if (!f) {
		bool src_is_client;

		/* make room first: closed flows go before live ones */
		if (ft->stats.active >= ft->cfg.max_flows) {
			struct flow *victim = ft->lists[FLOW_CLOSED].head;

			if (!victim)
				victim = ft->lists[FLOW_NEW].head;
			if (!victim)
				victim = ft->lists[FLOW_ESTABLISHED].head;
			flow_release(ft, victim, FLOW_END_EVICTED);
		}
		if (ft->free_list) {
			f = ft->free_list;
			ft->free_list = f->hnext;
			ft->n_free--;
		} else {
			f = mem_alloc(MEM_FLOW, sizeof(*f));
			if (!f) {
				ft->stats.alloc_fail++;
				return NULL;
			}
		}
		memset(f, 0, sizeof(*f));
		f->key = key;
		f->hash = h;
		f->ts_first = now;
		f->ipver = p->ipver;
		f->kind = tls ? FLOW_KIND_TLS_IMPLICIT : FLOW_KIND_SMTP;
		/* who is the client: the SYN says so; else the port does */
		if ((p->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN)
			src_is_client = true;
		else if ((p->tcp_flags & (TCPF_SYN | TCPF_ACK)) == (TCPF_SYN | TCPF_ACK))
			src_is_client = false;
		else
			src_is_client = srv == 1;
		if (!(p->tcp_flags & TCPF_SYN))
			ft->stats.midstream++;
		f->client_is_a = src_is_client == src_is_a;
		f->id = mix64(((uint64_t)h << 32) ^ now) &
			((1ull << 53) - 1);
		f->state = FLOW_NEW;
		f->hnext = ft->buckets[h & ft->mask];
		ft->buckets[h & ft->mask] = f;
		list_append(&ft->lists[FLOW_NEW], f);
		ft->stats.created++;
		if (tls)
			ft->stats.tls_implicit++;
		if (++ft->stats.active > ft->stats.peak)
			ft->stats.peak = ft->stats.active;
		*created = true;
	} else {
		/* touch: most recently seen goes to the tail */
		struct flow_list *l = &ft->lists[f->state];

		if (l->tail != f) {
			list_remove(l, f);
			list_append(l, f);
		}
	}
	if (now > f->ts_last)
		f->ts_last = now;
	*dir = ((f->client_is_a != 0) == src_is_a) ? FLOW_TOSERVER : FLOW_TOCLIENT;
	if (f->state == FLOW_CLOSED)
		ft->stats.after_close_pkts++;
	return f;
}

void flow_set_state(struct flow_table *ft, struct flow *f, enum flow_state st)
{
	if (f->state == st)
		return;
	list_remove(&ft->lists[f->state], f);
	f->state = (uint8_t)st;
	list_append(&ft->lists[st], f);
	if (st == FLOW_CLOSED && f->end != FLOW_END_NONE)
		ft->stats.ended[f->end]++;
}

unsigned flow_expire(struct flow_table *ft, uint64_t now, unsigned max_work)
{
	unsigned done = 0;

	for (int st = 0; st < FLOW_STATE_MAX && done < max_work; st++) {
		struct flow *f;

		while (done < max_work && (f = ft->lists[st].head) &&
		       f->ts_last + ft->cfg.timeout_ns[st] < now) {
			flow_release(ft, f, FLOW_END_TIMEOUT);
			done++;
		}
	}
	return done;
}

const struct flow_stats *flow_table_stats(const struct flow_table *ft)
{
	return &ft->stats;
}

void flow_table_add_stats(struct flow_table *ft, const struct flow_stats *s)
{
	COUNTERS_ADD(&ft->stats, s);
}

int flow_table_validate(const struct flow_table *ft)
{
	uint64_t in_lists = 0, in_buckets = 0;

	for (int st = 0; st < FLOW_STATE_MAX; st++) {
		const struct flow_list *l = &ft->lists[st];
		const struct flow *f, *prev = NULL;
		uint32_t n = 0;

		for (f = l->head; f; prev = f, f = f->next) {
			if (f->state != st || f->prev != prev)
				return -1;
			if (prev && prev->ts_last > f->ts_last)
				return -1;   /* LRU order */
			n++;
		}
		if (prev != l->tail || n != l->count)
			return -1;
		in_lists += n;
	}
	for (uint32_t i = 0; i <= ft->mask; i++)
		for (const struct flow *f = ft->buckets[i]; f; f = f->hnext) {
			if ((f->hash & ft->mask) != i)
				return -1;
			in_buckets++;
		}
	if (in_lists != ft->stats.active || in_buckets != ft->stats.active)
		return -1;
	if (ft->stats.active > ft->cfg.max_flows)
		return -1;
	return 0;
}
