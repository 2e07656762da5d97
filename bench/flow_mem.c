/* flow_mem: flow state per flow, as the engine's allocator accounts it.
 *
 * The target is "flow state at most 512 bytes per flow plus the
 * out-of-order data it holds". This measures it without a capture: a flow
 * table with the default configuration, then N SYNs to port 25 from distinct
 * clients through flow_get(), reading mem.c's MEM_FLOW accounting (jemalloc's
 * real usable sizes, so size-class rounding is included) before and after.
 *
 *   per_flow  = (MEM_FLOW after N flows - MEM_FLOW of the empty table) / N
 *   table     = MEM_FLOW of the empty table (buckets), and that / max_flows
 *
 * No out-of-order data is held (SYNs carry none), and the SMTP session the
 * pipeline hangs on f->app is not part of flow state: it is its own stage's
 * memory (MEM_SMTP) and is counted there.
 *
 * Output: one key=value line on stdout (bench/run.sh parses it):
 *   flow_mem sizeof_flow=B per_flow=B table_bytes=B max_flows=N per_flow_at_max=B
 *
 * Usage: flow_mem [N]   (default 100000)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "flow.h"
#include "mem.h"

static void release_nothing(void *user, struct flow *f)
{
	(void)user;
	(void)f;
}

int main(int argc, char **argv)
{
	uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 100000;
	struct flow_ops ops = { .release = release_nothing };
	struct flow_config cfg;
	struct flow_table *ft;
	uint64_t before, empty, full;

	flow_config_default(&cfg);
	if (n == 0 || n > cfg.max_flows) {
		fprintf(stderr, "flow_mem: N must be 1..%" PRIu32 "\n", cfg.max_flows);
		return 2;
	}
	before = mem_in_use(MEM_FLOW);
	ft = flow_table_new(&cfg, &ops, NULL);
	if (!ft) {
		fprintf(stderr, "flow_mem: flow_table_new failed\n");
		return 1;
	}
	empty = mem_in_use(MEM_FLOW) - before;

	for (uint32_t i = 0; i < n; i++) {
		struct pkt p;
		bool created = false;
		int dir;

		memset(&p, 0, sizeof(p));
		p.ts_ns = 1000000000ull + i;
		p.ipver = 4;
		/* client 100.64.0.0/10 + i, server 192.0.2.25 */
		p.src[10] = p.src[11] = 0xff;
		p.src[12] = 100;
		p.src[13] = (uint8_t)(64 + ((i >> 16) & 0x3f));
		p.src[14] = (uint8_t)(i >> 8);
		p.src[15] = (uint8_t)i;
		p.dst[10] = p.dst[11] = 0xff;
		p.dst[12] = 192; p.dst[13] = 0; p.dst[14] = 2; p.dst[15] = 25;
		p.sport = (uint16_t)(1024 + i % 60000);
		p.dport = 25;
		p.tcp_flags = 0x02;   /* SYN */
		p.seq = i;
		p.wire_len = 74;
		if (!flow_get(ft, &p, p.ts_ns, &dir, &created) || !created) {
			fprintf(stderr, "flow_mem: flow %" PRIu32 " not created\n", i);
			return 1;
		}
	}
	full = mem_in_use(MEM_FLOW) - before;
	if (flow_table_validate(ft) < 0) {
		fprintf(stderr, "flow_mem: flow_table_validate failed\n");
		return 1;
	}
	flow_table_free(ft, FLOW_END_EOF);

	double per_flow = (double)(full - empty) / n;
	double per_flow_at_max = per_flow + (double)empty / cfg.max_flows;
	fprintf(stderr,
		"flow_mem: sizeof(struct flow) %zu B; %" PRIu32 " flows: %.1f B each as "
		"allocated (%s); empty table %" PRIu64 " B = %.1f B per flow at max_flows %"
		PRIu32 "; total at max %.1f B per flow (target <= 512)\n",
		sizeof(struct flow), n, per_flow, mem_allocator_name(), empty,
		(double)empty / cfg.max_flows, cfg.max_flows, per_flow_at_max);
	printf("flow_mem sizeof_flow=%zu per_flow=%.1f table_bytes=%" PRIu64
	       " max_flows=%" PRIu32 " per_flow_at_max=%.1f\n",
	       sizeof(struct flow), per_flow, empty, cfg.max_flows, per_flow_at_max);
	return 0;
}
