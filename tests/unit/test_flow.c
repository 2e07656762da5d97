/* unit: flow table: lookup both ways, client side, eviction at the cap,
 * expiry by state with bounded work, flow size, invariants after each step. */
#include <string.h>

#include "check.h"
#include "decode.h"
#include "flow.h"

static unsigned released;
static enum flow_end last_end;

static void on_release(void *user, struct flow *f)
{
	(void)user;
	released++;
	last_end = (enum flow_end)f->end;
}

static struct pkt mk(uint8_t client, uint16_t cport, uint16_t sport, bool toserver, uint8_t flags)
{
	struct pkt p;

	memset(&p, 0, sizeof(p));
	p.src[10] = p.src[11] = p.dst[10] = p.dst[11] = 0xff;
	p.src[12] = 198; p.src[13] = 18; p.src[15] = client;
	p.dst[12] = 198; p.dst[13] = 19; p.dst[15] = 1;
	p.sport = cport;
	p.dport = sport;
	if (!toserver) {
		uint8_t t[16];

		memcpy(t, p.src, 16); memcpy(p.src, p.dst, 16); memcpy(p.dst, t, 16);
		p.sport = sport; p.dport = cport;
	}
	p.tcp_flags = flags;
	p.ipver = 4;
	return p;
}

#define SEC 1000000000ull

int main(void)
{
	struct flow_config cfg;
	struct flow_ops ops = { .release = on_release };
	struct flow_table *ft;
	struct flow *f, *g;
	struct pkt p;
	bool created;
	int dir;

	CHECK(sizeof(struct flow) <= 512);
	fprintf(stderr, "sizeof(struct flow) = %zu\n", sizeof(struct flow));

	flow_config_default(&cfg);
	cfg.max_flows = 4;
	ft = flow_table_new(&cfg, &ops, NULL);
	CHECK(ft != NULL);

	/* both directions find one flow; the SYN sender is the client */
	p = mk(1, 40000, 25, true, TCPF_SYN);
	f = flow_get(ft, &p, 1 * SEC, &dir, &created);
	CHECK(f && created && dir == FLOW_TOSERVER);
	p = mk(1, 40000, 25, false, TCPF_SYN | TCPF_ACK);
	g = flow_get(ft, &p, 1 * SEC, &dir, &created);
	CHECK(g == f && !created && dir == FLOW_TOCLIENT);
	CHECK_EQ_U64(flow_client_port(f), 40000);
	CHECK_EQ_U64(flow_server_port(f), 25);
	CHECK(flow_table_validate(ft) == 0);

	/* mid-stream pickup: first packet from the server; the port decides */
	p = mk(2, 40001, 587, false, TCPF_ACK);
	f = flow_get(ft, &p, 2 * SEC, &dir, &created);
	CHECK(f && created && dir == FLOW_TOCLIENT);
	CHECK_EQ_U64(flow_client_port(f), 40001);
	CHECK_EQ_U64(flow_table_stats(ft)->midstream, 1);

	/* ports not followed; implicit TLS is a flow of its own kind */
	p = mk(3, 40002, 80, true, TCPF_SYN);
	CHECK(flow_get(ft, &p, 2 * SEC, &dir, &created) == NULL);
	CHECK_EQ_U64(flow_table_stats(ft)->other_port_pkts, 1);
	p = mk(3, 40002, 465, true, TCPF_SYN);
	f = flow_get(ft, &p, 2 * SEC, &dir, &created);
	CHECK(f && f->kind == FLOW_KIND_TLS_IMPLICIT);

	/* fill to the cap, then one more evicts the least recently seen */
	p = mk(4, 40003, 25, true, TCPF_SYN);
	CHECK(flow_get(ft, &p, 3 * SEC, &dir, &created) != NULL);
	CHECK_EQ_U64(flow_table_stats(ft)->active, 4);
	p = mk(1, 40000, 25, true, TCPF_ACK);        /* touch flow 1: now the newest */
	flow_get(ft, &p, 4 * SEC, &dir, &created);
	CHECK(flow_table_validate(ft) == 0);
	released = 0;
	p = mk(5, 40004, 25, true, TCPF_SYN);
	CHECK(flow_get(ft, &p, 5 * SEC, &dir, &created) != NULL);
	CHECK_EQ_U64(released, 1);
	CHECK(last_end == FLOW_END_EVICTED);
	CHECK_EQ_U64(flow_table_stats(ft)->active, 4);
	p = mk(2, 40001, 587, true, TCPF_ACK);       /* flow 2 was the oldest: gone */
	flow_get(ft, &p, 5 * SEC, &dir, &created);
	CHECK(created);
	CHECK(flow_table_validate(ft) == 0);

	/* closed flows are evicted before live ones */
	p = mk(1, 40000, 25, true, TCPF_ACK);
	f = flow_get(ft, &p, 6 * SEC, &dir, &created);
	f->end = FLOW_END_FIN;
	flow_set_state(ft, f, FLOW_CLOSED);
	released = 0;
	p = mk(6, 40005, 25, true, TCPF_SYN);
	flow_get(ft, &p, 7 * SEC, &dir, &created);
	CHECK(released == 1 && last_end == FLOW_END_FIN);
	CHECK(flow_table_validate(ft) == 0);

	/* expiry: new flows time out after 30 s, bounded work per call */
	released = 0;
	CHECK_EQ_U64(flow_expire(ft, 20 * SEC, 100), 0);
	CHECK_EQ_U64(flow_expire(ft, 100 * SEC, 1), 1);
	CHECK(last_end == FLOW_END_TIMEOUT);
	CHECK_EQ_U64(flow_expire(ft, 100 * SEC, 100), 3);
	CHECK_EQ_U64(flow_table_stats(ft)->active, 0);
	CHECK(flow_table_validate(ft) == 0);

	/* established flows live for 300 s */
	p = mk(7, 40006, 25, true, TCPF_ACK);
	f = flow_get(ft, &p, 200 * SEC, &dir, &created);
	flow_set_state(ft, f, FLOW_ESTABLISHED);
	CHECK_EQ_U64(flow_expire(ft, 400 * SEC, 100), 0);
	CHECK_EQ_U64(flow_expire(ft, 501 * SEC, 100), 1);
	CHECK_EQ_U64(flow_table_stats(ft)->ended[FLOW_END_TIMEOUT], 5);

	/* many flows through a small table: invariants hold throughout */
	for (unsigned i = 0; i < 5000; i++) {
		p = mk((uint8_t)(i % 250), (uint16_t)(1024 + i % 3000), 25, i % 3 != 0,
		       i % 7 ? TCPF_ACK : TCPF_SYN);
		flow_get(ft, &p, (600 + i) * SEC, &dir, &created);
		if (i % 500 == 0)
			CHECK(flow_table_validate(ft) == 0);
	}
	CHECK(flow_table_validate(ft) == 0);
	CHECK(flow_table_stats(ft)->active <= 4);

	/* port lists */
	{
		uint16_t ports[FLOW_MAX_PORTS];
		unsigned n;

		CHECK(flow_parse_ports("25,587,2525", ports, &n) == 0 && n == 3 && ports[2] == 2525);
		CHECK(flow_parse_ports("25,,26", ports, &n) != 0);
		CHECK(flow_parse_ports("0", ports, &n) != 0);
		CHECK(flow_parse_ports("70000", ports, &n) != 0);
		CHECK(flow_parse_ports("25x", ports, &n) != 0);
		CHECK(flow_parse_ports("", ports, &n) != 0);
	}

	released = 0;
	flow_table_free(ft, FLOW_END_EOF);
	CHECK(released == 4 && last_end == FLOW_END_EOF);
	return check_done();
}
