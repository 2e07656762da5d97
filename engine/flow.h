/* flow: the per-worker flow table (see flow-t.h for the layout).
 *
 * Bounded: at most max_flows flows; creating one more evicts the least
 * recently seen flow, closed ones first. Idle flows time out by state. Both
 * eviction and expiry hand the flow to ops.release() before it is freed, so
 * the pipeline can flush its streams and write its record. flow_expire() does
 * bounded work per call (like Redis's incremental rehash): call it once per
 * burst.
 */
#ifndef BW_FLOW_H
#define BW_FLOW_H

#include <stdbool.h>
#include <stdint.h>

#include "flow-t.h"

struct pkt;

#define FLOW_MAX_PORTS 16

struct flow_config {
	uint32_t max_flows;
	uint64_t timeout_ns[FLOW_STATE_MAX];   /* idle time before expiry, per state */
	uint16_t smtp_ports[FLOW_MAX_PORTS];   /* reassembled and parsed */
	unsigned n_smtp_ports;
	uint16_t tls_ports[FLOW_MAX_PORTS];    /* implicit TLS: counted only */
	unsigned n_tls_ports;
};

struct flow_stats {
	uint64_t created;
	uint64_t midstream;            /* created from a packet other than a SYN */
	uint64_t ended[FLOW_END_MAX];  /* by how they ended */
	uint64_t tls_implicit;         /* flows on an implicit-TLS port */
	uint64_t other_port_pkts;      /* TCP packets on ports we do not follow */
	uint64_t after_close_pkts;     /* packets of a closed flow (stragglers) */
	uint64_t alloc_fail;
	uint64_t active, peak;
};

struct flow_ops {
	/* The flow leaves the table (timeout, eviction, flush). f->end says why
	 * unless the pipeline already closed it. f is freed right after. */
	void (*release)(void *user, struct flow *f);
};

struct flow_table;

/* Defaults: 262,144 flows; timeouts new 30 s, established 300 s (RFC 5321's
 * SMTP timeouts are 5 minutes), closed 10 s; SMTP ports 25, 587, 2525;
 * implicit TLS 465. */
void flow_config_default(struct flow_config *cfg);

/* Parses a comma-separated port list ("25,587,2525") into ports/n.
 * Returns 0 or -1 (bad number, zero, or more than FLOW_MAX_PORTS). */
int flow_parse_ports(const char *s, uint16_t *ports, unsigned *n);

/* Returns a new empty table, or NULL (allocation failure). The caller owns
 * it and frees it with flow_table_free(). */
struct flow_table *flow_table_new(const struct flow_config *cfg,
				  const struct flow_ops *ops, void *user);

/* Releases every flow (with `why` as its end unless already ended), then
 * frees the table. */
void flow_table_free(struct flow_table *ft, enum flow_end why);

/* Releases every flow still in the table, giving `why` to the open ones. */
void flow_table_flush(struct flow_table *ft, enum flow_end why);

/* Finds the flow of TCP packet p, creating it when absent; *dir receives the
 * packet's direction. Returns NULL when neither port is followed (counted) or
 * when a new flow could not be allocated (counted). The flow is touched:
 * ts_last = now, moved to the tail of its LRU list. */
struct flow *flow_get(struct flow_table *ft, const struct pkt *p, uint64_t now, int *dir,
		      bool *created);

/* Moves f to another state's list (keeps its LRU position as "now"). */
void flow_set_state(struct flow_table *ft, struct flow *f, enum flow_state st);

/* Releases flows idle past their state's timeout, at most max_work of them.
 * Returns how many it released. */
unsigned flow_expire(struct flow_table *ft, uint64_t now, unsigned max_work);

const struct flow_stats *flow_table_stats(const struct flow_table *ft);

/* Client/server view of the key. */
static inline const uint8_t *flow_client_addr(const struct flow *f) { return f->client_is_a ? f->key.a : f->key.b; }
static inline const uint8_t *flow_server_addr(const struct flow *f) { return f->client_is_a ? f->key.b : f->key.a; }
static inline uint16_t flow_client_port(const struct flow *f) { return f->client_is_a ? f->key.pa : f->key.pb; }
static inline uint16_t flow_server_port(const struct flow *f) { return f->client_is_a ? f->key.pb : f->key.pa; }

const char *flow_end_name(enum flow_end e);

/* Checks the table's invariants (hash chains, list membership and order,
 * counts). Returns 0 or -1. For tests. */
/* Adds s's counters to ft's (the summary of several workers' tables; the
 * peak becomes the sum of the peaks, an upper bound). */
void flow_table_add_stats(struct flow_table *ft, const struct flow_stats *s);
int flow_table_validate(const struct flow_table *ft);

#endif
