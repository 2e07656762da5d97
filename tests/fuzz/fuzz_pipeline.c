/* libFuzzer harness for the whole packet path without DPDK:
 * decode → flow → reassembly → SMTP → message → verdict → records.
 *
 * The input is a sequence of frames, each prefixed by a 2-byte length and a
 * 1-byte clock step; frames are raw IPv4/IPv6 (DLT_RAW) so the fuzzer reaches
 * TCP quickly. Small flow and reassembly caps make eviction and memcap paths
 * reachable. Records go to /dev/null; the table and memory must stay sane.
 *
 * One verdict lives across inputs, as in the engine, with a small rule set
 * of every class: header, body, rawbody, uri, mimeheader, full (streamed
 * exact and PCRE2 on the bounded copy), meta and track rules. Its rules and
 * compiled-database cache are written to a temporary directory once. After
 * every input no full-rule stream state may be left. Each input's clock
 * starts two hours after the previous one's, so storm windows expire.
 */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "mem.h"
#include "output.h"
#include "pipeline.h"
#include "verdict.h"

static const char fuzz_rules[] =
	"header FZ_SUBJ Subject =~ /viagra|free/i\n"
	"header FZ_FROM From:addr =~ /\\@example\\./i\n"
	"body FZ_BODY /click here/i\n"
	"rawbody FZ_RAW /<a\\s+href/i\n"
	"uri FZ_URI /example\\.(?:com|test)/i\n"
	"mimeheader FZ_MIME Content-Type =~ /octet-stream/i\n"
	"full FZ_FULL /^Received: /m\n"
	"full FZ_FULL_PCRE /(\\w)\\1{5}/\n"
	"tflags FZ_FULL_PCRE multiple maxhits=3\n"
	"meta FZ_META FZ_SUBJ && (FZ_BODY || FZ_FULL)\n"
	"track FZ_COUNT count per client_ip over 10m > 3\n"
	"track FZ_FAN distinct rcpt per sender over 10m > 2\n"
	"track FZ_REJ ratio rejected_rcpt per client_ip over 10m > 0.5 min 2\n"
	"score FZ_SUBJ 1\nscore FZ_BODY 1\nscore FZ_FULL 1\nscore FZ_META 3\n"
	"score FZ_COUNT 2\nscore FZ_FAN 2\nscore FZ_REJ 2\n"
	"action tag 2\naction block 6\n";

static char fuzz_dir[] = "/tmp/bw-fuzz-pipeline.XXXXXX";

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* The rules and the cache go when the fuzzer exits. */
static void fuzz_cleanup(void)
{
	nftw(fuzz_dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

/* The verdict context shared by every input, on a rule set made once (the
 * rules not loading is a harness bug: trap). */
static struct verdict *fuzz_verdict(void)
{
	static struct verdict_set *s;
	static struct verdict *v;
	char *dir = fuzz_dir;
	char path[128], err[256];
	const char *dirs[1] = { path };
	FILE *f;

	if (v)
		return v;
	if (!mkdtemp(dir))
		__builtin_trap();
	atexit(fuzz_cleanup);
	snprintf(path, sizeof(path), "%s/cache", dir);
	setenv("BW_CACHE_DIR", path, 1);
	snprintf(path, sizeof(path), "%s/fuzz.cf", dir);
	f = fopen(path, "w");
	if (!f)
		__builtin_trap();
	fputs(fuzz_rules, f);
	fclose(f);
	s = verdict_set_new(dirs, 1, stderr, err, sizeof(err));
	if (!s) {
		fprintf(stderr, "fuzz_pipeline: rules: %s\n", err);
		__builtin_trap();
	}
	v = verdict_new(s);
	if (!v)
		__builtin_trap();
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *devnull;
	struct pipeline_config cfg;
	struct output out;
	struct pipeline *pl;
	struct verdict *v = fuzz_verdict();
	static uint64_t base = 1000000000ull;
	uint64_t ts;
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
	pl->verdict = v;
	base += 7200000000000ull;   /* two hours: every window of the rules expires */
	ts = base;
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
	if (verdict_stream_bytes(v) != 0)
		__builtin_trap();   /* every message's full-rule stream is released */
	if (mem_in_use(MEM_REASM) != 0)
		__builtin_trap();   /* every out-of-order byte is released */
	return 0;
}
