/* libFuzzer harness for the whole packet path without DPDK:
 * decode → flow → reassembly → SMTP → message → records.
 *
 * The input is a sequence of frames, each prefixed by a 2-byte length and a
 * 1-byte clock step; frames are raw IPv4/IPv6 (DLT_RAW) so the fuzzer reaches
 * TCP quickly. Small flow and reassembly caps make eviction and memcap paths
 * reachable. Records go to /dev/null; the table and memory must stay sane.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "decode.h"
#include "mem.h"
#include "output.h"
#include "pipeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *devnull;
	struct pipeline_config cfg;
	struct output out;
	struct pipeline *pl;
	uint64_t ts = 1000000000ull;
	size_t off = 0;

	if (!devnull)
		devnull = fopen("/dev/null", "w");
	pipeline_config_default(&cfg);
	cfg.flow.max_flows = 8;
	cfg.reasm.flow_memcap = 4096;
	cfg.reasm.max_segs = 16;
	cfg.reasm.global_memcap = 16384;
	cfg.flow_records = true;
	output_init(&out, devnull);
	pl = pipeline_new(&cfg, DECODE_LINK_RAW, &out);
	if (!pl)
		return 0;
	while (off + 3 <= size) {
		size_t len = (size_t)data[off] << 8 | data[off + 1];
		uint8_t step = data[off + 2];

		off += 3;
		if (len > size - off)
			len = size - off;
		ts += (uint64_t)step * 100000000ull;   /* up to 25 s: timeouts fire */
		pipeline_packet(pl, data + off, (uint32_t)len, ts);
		pipeline_housekeeping(pl);
		off += len;
	}
	pipeline_finish(pl);
	if (flow_table_validate(pl->flows) != 0)
		__builtin_trap();
	pipeline_free(pl);
	output_fini(&out);
	if (mem_stats.in_use[MEM_REASM] != 0)
		__builtin_trap();   /* every out-of-order byte is released */
	return 0;
}
