/* Types of the flow table, for stages that read a flow on the fast path.
 *
 * A flow is one TCP connection, found by its bidirectional 5-tuple. The key
 * is normalised (the lower (address, port) endpoint first) so both directions
 * hash alike; `client_is_a` says which endpoint is the client. Direction 0
 * is client→server ("toserver"), 1 is server→client ("toclient").
 *
 * Every flow is on exactly one of three LRU lists, by state, each kept in
 * order of last packet (a touched flow moves to the tail), so expiry and
 * eviction look only at list heads: O(1) per flow, no scan of the table.
 * The struct stays under 512 bytes (a test checks); out-of-order data held by
 * its streams is accounted separately.
 */
#ifndef BW_FLOW_T_H
#define BW_FLOW_T_H

#include <stdbool.h>
#include <stdint.h>

#include "reassembly-t.h"

enum flow_dir {
	FLOW_TOSERVER = 0,
	FLOW_TOCLIENT = 1,
};

enum flow_state {
	FLOW_NEW = 0,            /* no data yet, handshake not complete */
	FLOW_ESTABLISHED,        /* data seen or handshake complete */
	FLOW_CLOSED,             /* ended (FIN both ways or RST): kept briefly for stragglers */
	FLOW_STATE_MAX
};

enum flow_end {
	FLOW_END_NONE = 0,
	FLOW_END_FIN,
	FLOW_END_RST,
	FLOW_END_TIMEOUT,
	FLOW_END_EVICTED,
	FLOW_END_EOF,            /* the capture ended while the flow was open */
	FLOW_END_MAX
};

enum flow_kind {
	FLOW_KIND_SMTP = 0,      /* reassembled and parsed */
	FLOW_KIND_TLS_IMPLICIT,  /* port 465: counted, not reassembled */
};

struct flow_key {
	uint8_t a[16], b[16];    /* addresses, IPv4-mapped for IPv4 */
	uint16_t pa, pb;         /* ports, host order */
};

struct flow {
	struct flow *hnext;              /* hash chain */
	struct flow *prev, *next;        /* LRU list of its state */
	struct flow_key key;
	uint32_t hash;
	uint64_t id;                     /* stable id for records (53 bits) */
	uint64_t ts_first, ts_last;      /* engine clock, ns */
	uint64_t pkts[2], bytes[2];      /* per direction, wire bytes */
	struct reasm_stream stream[2];   /* per direction */
	void *app;                       /* the SMTP session, owned by the pipeline */
	uint8_t client_is_a;             /* key.a is the client */
	uint8_t state;                   /* enum flow_state */
	uint8_t end;                     /* enum flow_end, once ended */
	uint8_t kind;                    /* enum flow_kind */
	uint8_t ipver;
	uint8_t seen_syn, seen_synack;
	uint8_t fin[2], rst;
};

#endif
