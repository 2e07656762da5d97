/* breakwater: the command line, its subcommands, and a run's set-up and
 * tear-down.
 *
 *   breakwater --pcap FILE [options]     replay a capture through DPDK net_pcap
 *   breakwater --iface IF [options]      read a live interface (net_af_packet)
 *   breakwater --eal "ARGS" --port N     real NICs: raw EAL arguments
 *   breakwater check-rules [DIR...]      parse and compile rules
 *   breakwater score [--rules DIR] FILE.eml...
 *
 * The work is in the engine's modules: capture (EAL, port, receive),
 * workers (flows spread over threads, each with a pipeline), reload (rules
 * swapped while traffic flows), replay (a capture held in memory, run many
 * times) and summary. Records go to stdout (or --output), one JSON object
 * per line; progress, warnings and the summary go to stderr. Exit 0 on
 * success, 1 with a one-line reason on failure, 2 on a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_mbuf.h>

#include "bw-config.h"
#include "capture.h"
#include "clocks.h"
#include "decode.h"
#include "flow.h"
#include "json.h"
#include "match.h"
#include "message.h"
#include "output.h"
#include "pipeline.h"
#include "reload.h"
#include "replay.h"
#include "score.h"
#include "stage_clock.h"
#include "summary.h"
#include "verdict.h"
#include "workers.h"

#define MAX_RULE_DIRS RELOAD_MAX_DIRS

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reload_requested;

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		reload_requested = 1;
	else
		stop_requested = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: breakwater --pcap FILE [options]\n"
"       breakwater --iface IF [options]\n"
"       breakwater --eal \"EAL ARGS\" [--port N] [options]\n"
"       breakwater check-rules [DIR...]      parse and compile rules, print counts\n"
"       breakwater score [--rules DIR] [--json] FILE.eml...\n"
"\n"
"Follows the SMTP sessions in the traffic and writes one JSON record per line\n"
"on stdout; progress, warnings and the summary go to stderr.\n"
"\n"
"source:\n"
"  --pcap FILE            replay a capture (pcap or pcapng) through DPDK's net_pcap;\n"
"                         packet timestamps drive the engine clock\n"
"  --iface IF             read a live interface through DPDK's net_af_packet\n"
"  --eal ARGS             raw DPDK EAL arguments (real NICs), e.g.\n"
"                         --eal \"-l 2 -a 0000:03:00.0 -d /usr/lib/.../pmds-23.0\"\n"
"  --port N               the DPDK port to read with --eal (default 0)\n"
"output:\n"
"  -o, --output FILE      write records to FILE instead of stdout\n"
"  --flows                also write one record per flow\n"
"  --no-flows             no flow records (the default unless --no-smtp)\n"
"  --no-smtp              do not parse SMTP: follow streams only (flow records on)\n"
"  --dump-streams DIR     write each flow's reassembled bytes to DIR/<flow_id>.toserver\n"
"                         and DIR/<flow_id>.toclient (gap bytes are left out)\n"
"  -q, --quiet            no summary, no progress\n"
"  -v, --verbose          DPDK logs at info level\n"
"  --summary-json FILE    also write the summary's figures to FILE as one JSON object\n"
"                         (written with -q too)\n"
"benchmark:\n"
"  --replay N             with --pcap: receive the whole capture into memory once, then\n"
"                         run N passes over it, each as new flows (addresses moved,\n"
"                         timestamps shifted); the summary times the passes only\n"
"  --replay-mem SIZE      refuse --replay when holding the capture needs more [2G]\n"
"  --stage-times          time each stage (decode, flow, reassembly, smtp, message,\n"
"                         match, storm, output) with the TSC; a stages line in the summary\n"
"                         (with --workers: their clocks added up, waiting counted as other)\n"
"rules:\n"
"  --rules DIR            rule directory (*.cf in name order) or file; may be repeated\n"
"                         [the rules/ shipped with breakwater]\n"
"  --no-rules             do not score (records carry no score, action, hits)\n"
"                         SIGHUP reloads the rules without stopping traffic; a rule\n"
"                         file with an error is refused and the running rules stay\n"
"tuning (defaults in brackets):\n"
"  --workers N            worker threads; flows are spread over them by a hash of their\n"
"                         endpoints, the receiving thread is worker 0; --max-flows and\n"
"                         --reasm-memcap are split between them [1]\n"
"  --rx-queues N          1: the receiving thread sorts flows to the workers; N (the\n"
"                         number of workers): each worker reads a queue of its own, the\n"
"                         port spreads flows (--eal: NIC RSS with a symmetric key;\n"
"                         --iface: af_packet's kernel fanout) [1]\n"
"  --smtp-ports LIST      ports whose TCP flows are followed [25,587,2525]\n"
"  --tls-ports LIST       implicit-TLS ports, counted only [465]\n"
"  --max-flows N          flow table size; the least recently seen flow is evicted [262144]\n"
"  --flow-timeout SECS    idle timeout of an established flow [300]\n"
"  --stream-memcap SIZE   out-of-order bytes held per stream [1M]\n"
"  --reasm-memcap SIZE    out-of-order bytes held in total [256M]\n"
"  --no-checksum          do not verify IPv4/TCP checksums (they are counted, never dropped)\n"
"  --version              print the version\n");
}

static void die_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "breakwater: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see breakwater --help)\n");
	exit(2);
}

static uint64_t parse_size(const char *s, const char *opt)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno || v < 0)
		die_usage("bad size for %s", opt);
	switch (*end) {
	case 'k': case 'K': v *= 1024; end++; break;
	case 'm': case 'M': v *= 1024 * 1024; end++; break;
	case 'g': case 'G': v *= 1024.0 * 1024 * 1024; end++; break;
	default: break;
	}
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end)
		die_usage("bad size for %s", opt);
	return (uint64_t)v;
}

static uint64_t parse_uint(const char *s, const char *opt, uint64_t max)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (end == s || *end || errno || v > max)
		die_usage("bad number for %s", opt);
	return v;
}

/* breakwater check-rules [DIR...]: like nginx -t. */
static int cmd_check_rules(int argc, const char **argv)
{
	const char *def;

	if (argc > 0 && (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0)) {
		printf("usage: breakwater check-rules [DIR|FILE...]\n"
		       "Parses and compiles the rules (default: the shipped rules/), prints the\n"
		       "counts, and exits non-zero when any rule has an error (file:line: reason).\n");
		return 0;
	}
	if (argc == 0) {
		def = verdict_default_rules_dir();
		if (!def) {
			fprintf(stderr, "breakwater: no rule directory found: give one\n");
			return 2;
		}
		return rules_check(&def, 1, stdout);
	}
	return rules_check(argv, argc, stdout);
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0;

	if (!f)
		return NULL;
	for (;;) {
		if (n == cap) {
			char *nb;

			cap = cap ? cap * 2 : 65536;
			nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		size_t got = fread(buf + n, 1, cap - n, f);

		n += got;
		if (got == 0)
			break;
	}
	fclose(f);
	*len = n;
	return buf;
}

/* breakwater score [--rules DIR]... [--json] FILE.eml...: like spamassassin -t. */
static int cmd_score(int argc, char **argv)
{
	static const struct option sopts[] = {
		{"rules", required_argument, NULL, 'r'},
		{"json", no_argument, NULL, 'j'},
		{"all-hits", no_argument, NULL, 'a'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *dirs[MAX_RULE_DIRS];
	int ndirs = 0, json = 0, all_hits = 0, c, rc = 0;
	struct verdict_set *rs;
	struct verdict *v;
	struct message_limits lim;
	char err[512];

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", sopts, NULL)) != -1) {
		switch (c) {
		case 'r':
			if (ndirs == MAX_RULE_DIRS)
				die_usage("too many --rules (at most %s)", "16");
			dirs[ndirs++] = optarg;
			break;
		case 'j': json = 1; break;
		case 'a': all_hits = 1; break;
		case 'h':
			printf("usage: breakwater score [--rules DIR]... [--json [--all-hits]] FILE.eml...\n"
			       "Scores each message file and prints its hits with their description\n"
			       "and score; --json prints one object per message instead, and\n"
			       "--all-hits adds \"subhits\": the rules that hit without a score of\n"
			       "their own (__sub-rules, zero scores) with their hit counts.\n");
			return 0;
		default:
			return 2;
		}
	}
	if (optind >= argc)
		die_usage("%s", "score: give at least one message file");
	rs = reload_load_rules(dirs, ndirs, err, sizeof(err));
	if (!rs) {
		fprintf(stderr, "breakwater: %s\n", err[0] ? err : "no rules to score with");
		return 1;
	}
	v = verdict_new(rs);
	if (!v) {
		fprintf(stderr, "breakwater: out of memory\n");
		verdict_set_free(rs);
		return 1;
	}
	message_limits_default(&lim);
	for (int i = optind; i < argc; i++) {
		size_t len = 0;
		char *buf = read_file(argv[i], &len);
		struct message *m;
		const struct score_report *r;

		if (!buf) {
			fprintf(stderr, "breakwater: cannot read %s: %s\n", argv[i], strerror(errno));
			rc = 1;
			continue;
		}
		m = message_new(&lim, NULL, NULL);
		if (!m) {
			free(buf);
			fprintf(stderr, "breakwater: out of memory\n");
			rc = 1;
			break;
		}
		verdict_begin(v, m);    /* full rules: the raw message streamed */
		message_feed(m, (const uint8_t *)buf, len);
		message_end(m);
		r = verdict_message(v, m, NULL);
		if (json) {
			struct json j;

			json_init(&j);
			json_begin(&j);
			json_kv_cstr(&j, "file", argv[i]);
			output_score_json(&j, r, all_hits);
			json_end(&j);
			json_write(&j, stdout);
			json_free(&j);
		} else {
			printf("%s: %.1f points, action %s\n", argv[i], r->score,
			       r->action ? r->action : "pass");
			printf("%6s %-28s %s\n", "pts", "rule name", "description");
			printf("%6s %-28s %s\n", "----", "----------------------", "--------------------------------");
			for (uint32_t k = 0; k < r->nhits; k++) {
				const struct score_hit *e = &r->hits[k];

				printf("%6.1f %-28s %s\n", e->score, e->rule,
				       e->describe ? e->describe : "");
			}
			printf("\n");
		}
		message_free(m);
		free(buf);
	}
	verdict_free(v);
	verdict_set_free(rs);
	return rc;
}

/* Everything the command line sets for a run. */
struct options {
	struct capture_config ccfg;
	struct pipeline_config pcfg;
	unsigned workers, rx_queues;
	unsigned replay_passes;
	uint64_t replay_mem;
	const char *out_path;
	const char *json_path;
	const char *rule_dirs[MAX_RULE_DIRS];
	int nrule_dirs;
	bool quiet, no_rules, stage_times;
};

enum {
	OPT_PCAP = 256, OPT_IFACE, OPT_EAL, OPT_PORT, OPT_FLOWS, OPT_NO_FLOWS, OPT_DUMP,
	OPT_SMTP_PORTS, OPT_TLS_PORTS, OPT_MAX_FLOWS, OPT_FLOW_TIMEOUT, OPT_STREAM_MEMCAP,
	OPT_REASM_MEMCAP, OPT_NO_CSUM, OPT_VERSION, OPT_NO_SMTP, OPT_RULES, OPT_NO_RULES,
	OPT_REPLAY, OPT_REPLAY_MEM, OPT_STAGE_TIMES, OPT_SUMMARY_JSON, OPT_WORKERS,
	OPT_RX_QUEUES,
};

/* Reads the options of a run into o. A usage error exits with status 2,
 * --help and --version with 0. */
static void parse_options(int argc, char **argv, struct options *o)
{
	static const struct option opts[] = {
		{"pcap", required_argument, NULL, OPT_PCAP},
		{"iface", required_argument, NULL, OPT_IFACE},
		{"eal", required_argument, NULL, OPT_EAL},
		{"port", required_argument, NULL, OPT_PORT},
		{"output", required_argument, NULL, 'o'},
		{"flows", no_argument, NULL, OPT_FLOWS},
		{"no-flows", no_argument, NULL, OPT_NO_FLOWS},
		{"no-smtp", no_argument, NULL, OPT_NO_SMTP},
		{"rules", required_argument, NULL, OPT_RULES},
		{"no-rules", no_argument, NULL, OPT_NO_RULES},
		{"dump-streams", required_argument, NULL, OPT_DUMP},
		{"quiet", no_argument, NULL, 'q'},
		{"verbose", no_argument, NULL, 'v'},
		{"smtp-ports", required_argument, NULL, OPT_SMTP_PORTS},
		{"tls-ports", required_argument, NULL, OPT_TLS_PORTS},
		{"max-flows", required_argument, NULL, OPT_MAX_FLOWS},
		{"flow-timeout", required_argument, NULL, OPT_FLOW_TIMEOUT},
		{"stream-memcap", required_argument, NULL, OPT_STREAM_MEMCAP},
		{"reasm-memcap", required_argument, NULL, OPT_REASM_MEMCAP},
		{"no-checksum", no_argument, NULL, OPT_NO_CSUM},
		{"replay", required_argument, NULL, OPT_REPLAY},
		{"replay-mem", required_argument, NULL, OPT_REPLAY_MEM},
		{"stage-times", no_argument, NULL, OPT_STAGE_TIMES},
		{"summary-json", required_argument, NULL, OPT_SUMMARY_JSON},
		{"workers", required_argument, NULL, OPT_WORKERS},
		{"rx-queues", required_argument, NULL, OPT_RX_QUEUES},
		{"version", no_argument, NULL, OPT_VERSION},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, nsrc = 0, flows_opt = -1;

	memset(o, 0, sizeof(*o));
	o->ccfg.prog = argv[0];
	o->workers = 1;
	o->rx_queues = 1;
	o->replay_mem = REPLAY_MEM_DEFAULT;
	pipeline_config_default(&o->pcfg);
	while ((c = getopt_long(argc, argv, "o:qvh", opts, NULL)) != -1) {
		switch (c) {
		case OPT_PCAP: o->ccfg.source = CAPTURE_PCAP; o->ccfg.pcap_path = optarg; nsrc++; break;
		case OPT_IFACE: o->ccfg.source = CAPTURE_IFACE; o->ccfg.iface = optarg; nsrc++; break;
		case OPT_EAL: o->ccfg.source = CAPTURE_EAL; o->ccfg.eal_args = optarg; nsrc++; break;
		case OPT_PORT: o->ccfg.port_id = (uint16_t)parse_uint(optarg, "--port", 65535); break;
		case 'o': o->out_path = optarg; break;
		case OPT_FLOWS: flows_opt = 1; break;
		case OPT_NO_FLOWS: flows_opt = 0; break;
		case OPT_NO_SMTP: o->pcfg.smtp = false; o->pcfg.tx_records = false; break;
		case OPT_RULES:
			if (o->nrule_dirs == MAX_RULE_DIRS)
				die_usage("too many --rules (at most %s)", "16");
			o->rule_dirs[o->nrule_dirs++] = optarg;
			break;
		case OPT_NO_RULES: o->no_rules = true; break;
		case OPT_DUMP: o->pcfg.dump_dir = optarg; break;
		case 'q': o->quiet = true; break;
		case 'v': o->ccfg.verbose++; break;
		case OPT_SMTP_PORTS:
			if (flow_parse_ports(optarg, o->pcfg.flow.smtp_ports, &o->pcfg.flow.n_smtp_ports))
				die_usage("bad port list for --smtp-ports: %s", optarg);
			break;
		case OPT_TLS_PORTS:
			if (flow_parse_ports(optarg, o->pcfg.flow.tls_ports, &o->pcfg.flow.n_tls_ports))
				die_usage("bad port list for --tls-ports: %s", optarg);
			break;
		case OPT_MAX_FLOWS:
			o->pcfg.flow.max_flows = (uint32_t)parse_uint(optarg, "--max-flows", 1u << 28);
			if (!o->pcfg.flow.max_flows)
				die_usage("%s must be at least 1", "--max-flows");
			break;
		case OPT_FLOW_TIMEOUT:
			o->pcfg.flow.timeout_ns[FLOW_ESTABLISHED] =
				parse_uint(optarg, "--flow-timeout", 86400) * 1000000000ull;
			break;
		case OPT_STREAM_MEMCAP:
			o->pcfg.reasm.flow_memcap = (uint32_t)parse_size(optarg, "--stream-memcap");
			break;
		case OPT_REASM_MEMCAP:
			o->pcfg.reasm.global_memcap = parse_size(optarg, "--reasm-memcap");
			break;
		case OPT_NO_CSUM: o->pcfg.decode.verify_checksums = false; break;
		case OPT_REPLAY:
			o->replay_passes = (unsigned)parse_uint(optarg, "--replay", REPLAY_MAX_PASSES);
			if (!o->replay_passes)
				die_usage("%s must be at least 1", "--replay");
			break;
		case OPT_REPLAY_MEM: o->replay_mem = parse_size(optarg, "--replay-mem"); break;
		case OPT_STAGE_TIMES: o->stage_times = true; break;
		case OPT_SUMMARY_JSON: o->json_path = optarg; break;
		case OPT_RX_QUEUES:
			o->rx_queues = (unsigned)parse_uint(optarg, "--rx-queues", WORKERS_MAX);
			if (!o->rx_queues)
				die_usage("%s must be at least 1", "--rx-queues");
			break;
		case OPT_WORKERS:
			o->workers = (unsigned)parse_uint(optarg, "--workers", WORKERS_MAX);
			if (!o->workers)
				die_usage("%s must be at least 1", "--workers");
			break;
		case OPT_VERSION: printf("breakwater %s\n", BW_VERSION); exit(0);
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (optind < argc)
		die_usage("unexpected argument: %s", argv[optind]);
	o->pcfg.flow_records = flows_opt >= 0 ? flows_opt : !o->pcfg.smtp;
	if (nsrc != 1)
		die_usage("%s", nsrc ? "give only one of --pcap, --iface, --eal"
				     : "nothing to read: give --pcap FILE or --iface IF");
	if (o->replay_passes && o->ccfg.source != CAPTURE_PCAP)
		die_usage("%s", "--replay replays a capture file: give --pcap FILE");
	if (o->rx_queues > 1 && o->rx_queues != o->workers)
		die_usage("%s", "--rx-queues is 1 (flows sorted in software) or the number of --workers");
	if (o->rx_queues > 1 && o->ccfg.source == CAPTURE_PCAP)
		die_usage("%s", "--rx-queues: a capture file is read on one queue");
	o->ccfg.rx_queues = (uint16_t)o->rx_queues;
	if (o->rx_queues == 1 && !o->replay_passes)
		/* frames waiting in the workers' queues hold mbufs */
		o->ccfg.extra_mbufs = (o->workers - 1) * (WORKER_RING + WORKER_BURST + 256);
}

/* --dump-streams DIR: made when missing. Returns 0, or -1 (said on stderr). */
static int make_dump_dir(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "breakwater: cannot create %s: %s\n", dir, strerror(errno));
		return -1;
	}
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "breakwater: %s is not a directory\n", dir);
		return -1;
	}
	return 0;
}

/* A run's moving parts, for the loops below. */
struct run {
	struct capture *cap;
	struct workers *ws;
	struct reload reload;
	bool live, progress;
	uint64_t rx_frames;          /* received (not counting a replay's passes) */
};

/* Before every burst: false once a signal asked to stop; a reload that
 * SIGHUP asked for starts, and one that finished is swapped in. */
static bool between_bursts(void *user)
{
	struct run *r = user;
	bool asked = reload_requested && !r->reload.running;

	if (stop_requested)
		return false;
	if (asked)
		reload_requested = 0;
	reload_poll(&r->reload, r->ws, asked);
	return true;
}

/* Receives until the capture ends or a signal asks to stop; worker 0 runs
 * its share of each burst and hands the rest on. */
static void rx_loop(struct run *r)
{
	struct capture *cap = r->cap;
	uint64_t file_bytes = 0, bursts = 0;
	double t0 = clock_mono_s(), t_last_progress = 0;

	while (between_bursts(r)) {
		struct rte_mbuf *m[WORKER_BURST];
		struct work_item it[WORKER_BURST];
		uint16_t n = capture_rx(cap, m, WORKER_BURST);

		workers_items_from_mbufs(cap, m, it, n);
		for (uint16_t i = 0; i < n; i++)
			file_bytes += it[i].len + 16;
		if (n)
			workers_dispatch(r->ws, it, n);
		workers_housekeeping(r->ws);
		if (!n) {
			if (capture_eof(cap))
				break;
			if (r->live)
				usleep(50);
		}
		r->rx_frames += n;
		if (r->progress && (++bursts & 63) == 0) {
			double t = clock_mono_s();

			if (t - t_last_progress > 0.5) {
				t_last_progress = t;
				/* what was received: with several workers some is still queued */
				if (cap->file_size)
					fprintf(stderr, "\r  %5.1f%%  %llu packets  %.2f Gbit/s   ",
						100.0 * (double)file_bytes / (double)cap->file_size,
						(unsigned long long)r->rx_frames,
						(double)(file_bytes - 16 * r->rx_frames) * 8 / (t - t0) / 1e9);
				else
					fprintf(stderr, "\r  %llu packets   ",
						(unsigned long long)r->rx_frames);
			}
		}
	}
	if (r->progress && t_last_progress > 0)
		fprintf(stderr, "\r%60s\r", "");
}

int main(int argc, char **argv)
{
	struct options o;
	struct capture cap;
	struct replay rp = { .passes = 0 };
	struct run r = { .cap = &cap };
	struct workers_config wcfg;
	struct run_info ri;
	struct verdict_set *rules = NULL;
	FILE *out_f = stdout, *json_f = NULL;
	char err[512];
	double t_start = clock_mono_s(), t_loop, cpu_loop, change_ns = 0;
	bool kept;
	int rc = 1;

	if (argc > 1 && strcmp(argv[1], "check-rules") == 0)
		return cmd_check_rules(argc - 2, (const char **)argv + 2);
	if (argc > 1 && strcmp(argv[1], "score") == 0)
		return cmd_score(argc - 1, argv + 1);
	parse_options(argc, argv, &o);
	if (o.pcfg.dump_dir && make_dump_dir(o.pcfg.dump_dir) != 0)
		return 1;
	if (o.out_path) {
		out_f = fopen(o.out_path, "w");
		if (!out_f) {
			fprintf(stderr, "breakwater: cannot write %s: %s\n", o.out_path, strerror(errno));
			return 1;
		}
	}
	setvbuf(out_f, NULL, _IOFBF, 1 << 20);
	if (o.json_path) {
		json_f = fopen(o.json_path, "w");
		if (!json_f) {
			fprintf(stderr, "breakwater: cannot write %s: %s\n", o.json_path, strerror(errno));
			goto fail_json;
		}
	}
	if (o.replay_passes) {
		/* count the frames first, to size a pool that holds them all */
		rp.passes = o.replay_passes;
		rp.mem_cap = o.replay_mem;
		if (replay_prepare(&rp, o.ccfg.pcap_path, &o.ccfg.nb_mbufs, &o.ccfg.mbuf_data_room,
				   err, sizeof(err)) != 0) {
			fprintf(stderr, "breakwater: %s\n", err);
			goto fail_replay;
		}
	}
	if (o.pcfg.smtp && o.pcfg.tx_records && !o.no_rules) {
		rules = reload_load_rules(o.rule_dirs, o.nrule_dirs, err, sizeof(err));
		if (!rules && err[0]) {
			fprintf(stderr, "breakwater: %s\n", err);
			goto fail_rules;
		}
	}
	if (capture_open(&cap, &o.ccfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "breakwater: %s\n", err);
		goto fail_capture;
	}
	if (!decode_link_supported(cap.linktype)) {
		fprintf(stderr, "breakwater: %s: link type %d is not supported "
			"(Ethernet, Linux cooked v1/v2, BSD loopback and raw IP are)\n",
			o.ccfg.pcap_path ? o.ccfg.pcap_path : o.ccfg.iface, cap.linktype);
		goto fail_workers;
	}
	memset(&wcfg, 0, sizeof(wcfg));
	wcfg.n = o.workers;
	wcfg.linktype = cap.linktype;
	r.live = o.ccfg.source != CAPTURE_PCAP;
	wcfg.live = r.live;
	wcfg.stage_times = o.stage_times;
	wcfg.rx_cost = rules ? WORKER_RX_COST_RULES : WORKER_RX_COST;
	wcfg.cap = &cap;
	wcfg.pcfg = &o.pcfg;
	wcfg.out = out_f;
	r.ws = workers_new(&wcfg, err, sizeof(err));
	if (!r.ws) {
		fprintf(stderr, "breakwater: %s\n", err);
		goto fail_workers;
	}
	if (workers_set_rules(r.ws, rules, &kept) != 0) {
		fprintf(stderr, "breakwater: out of memory setting up %u workers\n", o.workers);
		goto fail_set_rules;
	}
	rules = NULL;   /* the workers' now */
	if (rp.passes && replay_hold(&rp, &cap, cap.linktype,
				     verdict_set_max_window_ns(workers_rules(r.ws)),
				     err, sizeof(err)) != 0) {
		fprintf(stderr, "breakwater: --replay: %s\n", err);
		goto fail_run;
	}
	if (o.stage_times)
		change_ns = stage_clock_change_ns();
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (workers_rules(r.ws))
		signal(SIGHUP, on_signal);
	reload_init(&r.reload, o.rule_dirs, o.nrule_dirs, stderr);
	r.progress = !o.quiet && isatty(STDERR_FILENO);

	if (workers_start(r.ws, err, sizeof(err)) != 0) {
		fprintf(stderr, "breakwater: %s\n", err);
		goto fail_run;
	}
	if (rp.passes) {
		stage_clock_pause();
		replay_run(&rp, r.ws, cap.linktype, between_bursts, &r, o.stage_times, r.progress);
	}
	t_loop = clock_mono_s();
	cpu_loop = clock_thread_cpu_s();
	if (!rp.passes)
		rx_loop(&r);
	/* let a reload in flight finish, so its thread and memory end cleanly */
	reload_cancel(&r.reload);
	if (rp.passes && o.stage_times)
		stage_clock_resume();
	memset(&ri, 0, sizeof(ri));
	workers_stop(r.ws, &ri);
	ri.engine_s = clock_mono_s() - t_loop;
	ri.engine_cpu_s += clock_thread_cpu_s() - cpu_loop;
	replay_run_info(&rp, &ri);
	if (o.stage_times) {
		ri.tsc_hz = rte_get_tsc_hz();
		ri.stage_change_ns = change_ns;
	}
	ri.source = o.ccfg.pcap_path ? o.ccfg.pcap_path : o.ccfg.iface ? o.ccfg.iface : "eal";
	{
		uint64_t ipk;

		capture_port_stats(&cap, &ipk, &ri.port_missed, &ri.port_errors, &ri.port_nombuf);
	}
	fflush(out_f);
	if (ferror(out_f)) {
		fprintf(stderr, "breakwater: writing records failed\n");
		goto fail_run;
	}
	ri.wall_s = clock_mono_s() - t_start;
	{
		struct worker *w0 = workers_worker(r.ws, 0);

		if (!o.quiet)
			summary_print(stderr, w0->pl, &w0->out, &ri);
		if (json_f) {
			int jerr = summary_json(json_f, w0->pl, &w0->out, &ri);

			if (fclose(json_f) != 0 || jerr) {
				json_f = NULL;
				fprintf(stderr, "breakwater: writing %s failed\n", o.json_path);
				goto fail_run;
			}
			json_f = NULL;
		}
	}
	rc = 0;

fail_run:
	reload_cancel(&r.reload);
fail_set_rules:
	workers_free(r.ws);
fail_workers:
	replay_store_free(&rp.st);   /* its mbufs go back to the pool first */
	capture_close(&cap);
fail_capture:
	verdict_set_free(rules);
fail_rules:
	replay_free(&rp);
fail_replay:
	if (json_f)
		fclose(json_f);
fail_json:
	if (out_f != stdout)
		fclose(out_f);
	return rc;
}
