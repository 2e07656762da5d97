/* summary: the end-of-run summary; see summary.h. */
#include "summary.h"

#include <inttypes.h>
#include <string.h>

#include "decode.h"
#include "flow.h"
#include "json.h"
#include "mem.h"
#include "message.h"
#include "output.h"
#include "pipeline.h"
#include "smtp.h"
#include "stage_clock.h"
#include "verdict.h"

static void human_bytes(char *b, size_t n, double v)
{
	static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int i = 0;

	while (v >= 1024 && i < 4) {
		v /= 1024;
		i++;
	}
	snprintf(b, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

/* Every anomaly counter of a run that is not zero, by name, in the
 * summary's order. */
typedef void (*anomaly_fn)(void *user, const char *name, uint64_t v);

static void each_anomaly(const struct pipeline *pl, const struct output *o,
			 const struct run_info *ri, anomaly_fn fn, void *user)
{
	const struct pipeline_stats *ps = &pl->stats;
	const struct flow_stats *fs = flow_table_stats(pl->flows);
	const struct reasm_stats *rs = &pl->reasm.stats;
	const struct decode_stats *ds = &pl->dstats;
	char name[96];

	for (int a = 1; a < DECODE_ANOMALY_MAX; a++)
		if (ds->anomalies[a])
			fn(user, decode_anomaly_name((enum decode_anomaly)a), ds->anomalies[a]);
#define ANOM(n, v) do { if (v) fn(user, n, (uint64_t)(v)); } while (0)
	ANOM("other_port_packets", fs->other_port_pkts);
	ANOM("flow_alloc_fail", fs->alloc_fail);
	ANOM("reasm_memcap_flush", rs->memcap_flush);
	ANOM("reasm_memcap_skip", rs->memcap_skip);
	ANOM("reasm_alloc_fail", rs->alloc_fail);
	ANOM("data_after_end", rs->data_after_end);
	ANOM("port_missed", ri->port_missed);
	ANOM("port_errors", ri->port_errors);
	ANOM("port_nombuf", ri->port_nombuf);
	ANOM("record_write_errors", o->write_errors);
	ANOM("dump_errors", ps->dump_errors);
	for (int a = 0; a < SMTP_ANOM_MAX; a++)
		if (smtp_stats.anomalies[a]) {
			snprintf(name, sizeof(name), "smtp.%s", smtp_anomaly_name((enum smtp_anomaly)a));
			fn(user, name, smtp_stats.anomalies[a]);
		}
	for (int a = 0; a < SMTP_LIMIT_MAX; a++)
		if (smtp_stats.limit_hits[a]) {
			snprintf(name, sizeof(name), "smtp.limit.%s", smtp_limit_name((enum smtp_limit)a));
			fn(user, name, smtp_stats.limit_hits[a]);
		}
	for (int a = 0; a < MESSAGE_ANOM_MAX; a++)
		ANOM(message_anomaly_name((enum message_anomaly)a), ps->message_anomaly_count[a]);
	ANOM("smtp_alloc_fail", smtp_stats.alloc_fail + ps->app_alloc_fail);
	ANOM("message_alloc_fail", ps->msg_alloc_fail);
	if (pl->verdict)
		ANOM("rule_scan_errors", verdict_get_stats(pl->verdict).scan_errors);
#undef ANOM
}

struct anomaly_text {
	FILE *f;
	bool any;
};

static void anomaly_print(void *user, const char *name, uint64_t v)
{
	struct anomaly_text *t = user;

	fprintf(t->f, " %s=%" PRIu64, name, v);
	t->any = true;
}

static void anomaly_json(void *user, const char *name, uint64_t v)
{
	json_kv_u64(user, name, v);
}

/* The stage clock's figures, when it ran. */
static double stages_total_ns(const struct run_info *ri)
{
	uint64_t c = 0;

	for (int s = 0; s < STAGE_MAX; s++)
		c += stage_clock.cycles[s];
	return (double)c * 1e9 / (double)ri->tsc_hz;
}

static double stage_ns(const struct run_info *ri, int s)
{
	return (double)stage_clock.cycles[s] * 1e9 / (double)ri->tsc_hz;
}

void summary_print(FILE *f, const struct pipeline *pl, const struct output *o,
		    const struct run_info *ri)
{
	const struct pipeline_stats *ps = &pl->stats;
	const struct flow_stats *fs = flow_table_stats(pl->flows);
	const struct reasm_stats *rs = &pl->reasm.stats;
	double secs = ri->engine_s > 0 ? ri->engine_s : 1e-9;
	char b1[32], b2[32];
	struct anomaly_text at = { f, false };

	human_bytes(b1, sizeof(b1), (double)ps->bytes);
	fprintf(f, "breakwater summary: %s\n", ri->source ? ri->source : "");
	fprintf(f, "  packets:     %" PRIu64 " (%s), tcp %" PRIu64 ", in followed flows %" PRIu64 "\n",
		ps->packets, b1, ps->tcp_packets, ps->flow_packets);
	fprintf(f, "  flows:       %" PRIu64 " created (%" PRIu64 " mid-stream, %" PRIu64
		" implicit TLS); ended fin %" PRIu64 ", rst %" PRIu64 ", timeout %" PRIu64
		", evicted %" PRIu64 ", end of capture %" PRIu64 "; peak %" PRIu64 " open; %" PRIu64
		" packets after close (final ACKs, stragglers)\n",
		fs->created, fs->midstream, fs->tls_implicit, fs->ended[FLOW_END_FIN],
		fs->ended[FLOW_END_RST], fs->ended[FLOW_END_TIMEOUT], fs->ended[FLOW_END_EVICTED],
		fs->ended[FLOW_END_EOF], fs->peak, fs->after_close_pkts);
	human_bytes(b1, sizeof(b1), (double)rs->delivered_bytes);
	human_bytes(b2, sizeof(b2), (double)rs->held_peak);
	fprintf(f, "  reassembly:  %s delivered; %" PRIu64 " gaps (%" PRIu64 " bytes, %" PRIu64
		" found by ACK); %" PRIu64 " retransmitted segments; %" PRIu64 " overlap bytes; "
		"out-of-order peak %s\n",
		b1, rs->gaps, rs->gap_bytes, rs->gaps_by_ack, rs->dup_segments,
		rs->overlap_bytes, b2);
	{
		const struct smtp_stats *ss = &smtp_stats;

		human_bytes(b1, sizeof(b1), (double)ss->message_bytes);
		fprintf(f, "  smtp:        %" PRIu64 " sessions (%" PRIu64 " STARTTLS), %" PRIu64
			" transactions (%" PRIu64 " complete, %" PRIu64 " accepted), %" PRIu64
			" messages, %s of mail, %.0f messages/s\n",
			ss->sessions, ss->tls_sessions, ss->transactions, ss->tx_complete,
			ss->tx_accepted, ps->messages, b1, (double)ps->messages / secs);
	}
	if (pl->verdict) {
		const struct verdict_stats st = verdict_get_stats(pl->verdict), *vs = &st;

		verdict_print_counts(pl->verdict, f);
		fprintf(f, "  verdicts:    %" PRIu64 " messages scanned; transactions pass %" PRIu64
			", tag %" PRIu64 ", block %" PRIu64 "; %" PRIu64 " with behaviour hits; storm events %"
			PRIu64 " up, %" PRIu64 " down\n", vs->messages, vs->actions[0], vs->actions[1],
			vs->actions[2], vs->behaviour_hits, vs->storm_events_up, vs->storm_events_down);
	}
	fprintf(f, "  anomalies:  ");
	each_anomaly(pl, o, ri, anomaly_print, &at);
	fprintf(f, "%s\n", at.any ? "" : " none");
	fprintf(f, "  records:     %" PRIu64 "\n", o->records);
	human_bytes(b1, sizeof(b1), (double)mem_in_use_total());
	fprintf(f, "  memory:      %s in use at the end of the run (%s), flow peak %" PRIu64 " bytes\n",
		b1, mem_allocator_name(), mem_peak(MEM_FLOW));
	if (ri->passes) {
		human_bytes(b1, sizeof(b1), (double)ri->replay_bytes);
		human_bytes(b2, sizeof(b2), (double)ri->replay_pool_bytes);
		fprintf(f, "  replay:      %u passes from memory over %" PRIu64 " frames (%s in %" PRIu64
			" mbufs, pool %s), loaded in %.3f s; per pass addresses +%u.%u.%u.%u and "
			"timestamps +%.3f s, rewritten in %.3f s (untimed); passes",
			ri->passes, ri->replay_frames, b1, ri->replay_mbufs, b2, ri->load_s,
			ri->replay_stride >> 24, (ri->replay_stride >> 16) & 0xff,
			(ri->replay_stride >> 8) & 0xff, ri->replay_stride & 0xff,
			(double)ri->replay_shift_ns / 1e9, ri->rewrite_s);
		for (unsigned k = 0; k < ri->passes; k++)
			fprintf(f, " %.3f", ri->pass_s[k]);
		fprintf(f, " s, final flush %.3f s\n", ri->finish_s);
	}
	if (ri->workers > 1) {
		fprintf(f, "  workers:     %u; frames run by each", ri->workers);
		for (unsigned k = 0; k < ri->workers && k < RUN_INFO_WORKERS; k++)
			fprintf(f, "%s%" PRIu64, k ? " / " : " ", ri->worker_packets[k]);
		fprintf(f, "; seconds waiting (0: for queue room, others: for work)");
		for (unsigned k = 0; k < ri->workers && k < RUN_INFO_WORKERS; k++)
			fprintf(f, "%s%.3f", k ? " / " : " ", ri->worker_wait_s[k]);
		fprintf(f, "; CPU %.3f s\n", ri->engine_cpu_s);
	}
	fprintf(f, "  time:        %.3f s wall, %.3f s in the packet loop%s\n", ri->wall_s, ri->engine_s,
		ri->passes ? " (timed passes and the final flush)" : "");
	fprintf(f, "  throughput:  %.3f Gbit/s, %.3f Mpps (packet loop)\n",
		(double)ps->bytes * 8 / secs / 1e9, (double)ps->packets / secs / 1e6);
	if (ri->tsc_hz) {
		double total = stages_total_ns(ri);

		fprintf(f, "  stages:      ns per packet / per message / share of the loop:");
		for (int st = 1; st <= STAGE_MAX; st++) {
			int s = st % STAGE_MAX;   /* "other" last */
			double ns = stage_ns(ri, s);

			fprintf(f, " %s %.1f / ", stage_name((enum stage)s),
				ps->packets ? ns / (double)ps->packets : 0.0);
			if (ps->messages)
				fprintf(f, "%.0f", ns / (double)ps->messages);
			else
				fprintf(f, "-");
			fprintf(f, " / %.1f%%%s", total > 0 ? 100.0 * ns / total : 0.0,
				st < STAGE_MAX ? "," : ";");
		}
		fprintf(f, " %.3f s timed, %" PRIu64 " clock reads of about %.0f ns each (in the figures)\n",
			total / 1e9, stage_clock.changes, ri->stage_change_ns);
	}
}

int summary_json(FILE *f, const struct pipeline *pl, const struct output *o,
			const struct run_info *ri)
{
	const struct pipeline_stats *ps = &pl->stats;
	const struct flow_stats *fs = flow_table_stats(pl->flows);
	const struct reasm_stats *rs = &pl->reasm.stats;
	const struct smtp_stats *ss = &smtp_stats;
	double secs = ri->engine_s > 0 ? ri->engine_s : 1e-9;
	struct json j;
	int ret;

	json_init(&j);
	json_begin(&j);
	json_kv_cstr(&j, "source", ri->source);
	json_kv_u64(&j, "passes", ri->passes ? ri->passes : 1);
	json_kv_bool(&j, "from_memory", ri->passes > 0);
	json_kv_u64(&j, "packets", ps->packets);
	json_kv_u64(&j, "bytes", ps->bytes);
	json_kv_u64(&j, "tcp_packets", ps->tcp_packets);
	json_kv_u64(&j, "flow_packets", ps->flow_packets);
	json_key(&j, "flows");
	json_open_object(&j);
	json_kv_u64(&j, "created", fs->created);
	json_kv_u64(&j, "midstream", fs->midstream);
	json_kv_u64(&j, "tls_implicit", fs->tls_implicit);
	json_kv_u64(&j, "fin", fs->ended[FLOW_END_FIN]);
	json_kv_u64(&j, "rst", fs->ended[FLOW_END_RST]);
	json_kv_u64(&j, "timeout", fs->ended[FLOW_END_TIMEOUT]);
	json_kv_u64(&j, "evicted", fs->ended[FLOW_END_EVICTED]);
	json_kv_u64(&j, "eof", fs->ended[FLOW_END_EOF]);
	json_kv_u64(&j, "peak", fs->peak);
	json_kv_u64(&j, "after_close_packets", fs->after_close_pkts);
	json_close_object(&j);
	json_key(&j, "reassembly");
	json_open_object(&j);
	json_kv_u64(&j, "delivered_bytes", rs->delivered_bytes);
	json_kv_u64(&j, "gaps", rs->gaps);
	json_kv_u64(&j, "gap_bytes", rs->gap_bytes);
	json_kv_u64(&j, "gaps_by_ack", rs->gaps_by_ack);
	json_kv_u64(&j, "retransmitted_segments", rs->dup_segments);
	json_kv_u64(&j, "overlap_bytes", rs->overlap_bytes);
	json_kv_u64(&j, "out_of_order_peak_bytes", rs->held_peak);
	json_close_object(&j);
	json_key(&j, "smtp");
	json_open_object(&j);
	json_kv_u64(&j, "sessions", ss->sessions);
	json_kv_u64(&j, "tls_sessions", ss->tls_sessions);
	json_kv_u64(&j, "transactions", ss->transactions);
	json_kv_u64(&j, "complete", ss->tx_complete);
	json_kv_u64(&j, "accepted", ss->tx_accepted);
	json_kv_u64(&j, "messages", ps->messages);
	json_kv_u64(&j, "message_bytes", ss->message_bytes);
	json_close_object(&j);
	json_key(&j, "verdicts");
	if (pl->verdict) {
		const struct verdict_stats st = verdict_get_stats(pl->verdict), *vs = &st;

		json_open_object(&j);
		json_kv_u64(&j, "messages", vs->messages);
		json_kv_u64(&j, "pass", vs->actions[0]);
		json_kv_u64(&j, "tag", vs->actions[1]);
		json_kv_u64(&j, "block", vs->actions[2]);
		json_kv_u64(&j, "other", vs->actions[3]);
		json_kv_u64(&j, "behaviour_hits", vs->behaviour_hits);
		json_kv_u64(&j, "storm_events_up", vs->storm_events_up);
		json_kv_u64(&j, "storm_events_down", vs->storm_events_down);
		json_close_object(&j);
	} else {
		json_null(&j);
	}
	json_key(&j, "anomalies");
	json_open_object(&j);
	each_anomaly(pl, o, ri, anomaly_json, &j);
	json_close_object(&j);
	json_kv_u64(&j, "records", o->records);
	json_kv_u64(&j, "memory_bytes", mem_in_use_total());
	json_kv_u64(&j, "flow_memory_peak_bytes", mem_peak(MEM_FLOW));
	json_key(&j, "wall_s");
	json_double(&j, ri->wall_s);
	json_key(&j, "loop_s");
	json_double(&j, ri->engine_s);
	json_key(&j, "loop_cpu_s");
	json_double(&j, ri->engine_cpu_s);
	json_key(&j, "gbit_s");
	json_double(&j, (double)ps->bytes * 8 / secs / 1e9);
	json_key(&j, "mpps");
	json_double(&j, (double)ps->packets / secs / 1e6);
	json_key(&j, "messages_per_s");
	json_double(&j, (double)ps->messages / secs);
	json_key(&j, "ns_per_packet");
	json_double(&j, ps->packets ? ri->engine_s * 1e9 / (double)ps->packets : 0.0);
	json_key(&j, "ns_per_message");
	if (ps->messages)
		json_double(&j, ri->engine_s * 1e9 / (double)ps->messages);
	else
		json_null(&j);
	json_kv_u64(&j, "workers", ri->workers ? ri->workers : 1);
	json_key(&j, "worker_frames");
	json_open_array(&j);
	for (unsigned k = 0; k < ri->workers && k < RUN_INFO_WORKERS; k++)
		json_u64(&j, ri->worker_packets[k]);
	json_close_array(&j);
	json_key(&j, "worker_wait_s");
	json_open_array(&j);
	for (unsigned k = 0; k < ri->workers && k < RUN_INFO_WORKERS; k++)
		json_double(&j, ri->worker_wait_s[k]);
	json_close_array(&j);
	json_key(&j, "replay");
	if (ri->passes) {
		json_open_object(&j);
		json_kv_u64(&j, "frames", ri->replay_frames);
		json_kv_u64(&j, "frame_bytes", ri->replay_bytes);
		json_kv_u64(&j, "mbufs", ri->replay_mbufs);
		json_kv_u64(&j, "pool_bytes", ri->replay_pool_bytes);
		json_key(&j, "load_s");
		json_double(&j, ri->load_s);
		json_key(&j, "rewrite_s");
		json_double(&j, ri->rewrite_s);
		json_key(&j, "pass_s");
		json_open_array(&j);
		for (unsigned k = 0; k < ri->passes; k++)
			json_double(&j, ri->pass_s[k]);
		json_close_array(&j);
		json_key(&j, "finish_s");
		json_double(&j, ri->finish_s);
		json_kv_u64(&j, "addr_stride", ri->replay_stride);
		json_kv_u64(&j, "ts_shift_ns", ri->replay_shift_ns);
		json_close_object(&j);
	} else {
		json_null(&j);
	}
	json_key(&j, "stages");
	if (ri->tsc_hz) {
		double total = stages_total_ns(ri);

		json_open_object(&j);
		json_kv_u64(&j, "tsc_hz", ri->tsc_hz);
		json_kv_u64(&j, "clock_reads", stage_clock.changes);
		json_key(&j, "clock_read_ns");
		json_double(&j, ri->stage_change_ns);
		json_key(&j, "timed_s");
		json_double(&j, total / 1e9);
		for (int s = 0; s < STAGE_MAX; s++) {
			double ns = stage_ns(ri, s);

			json_key(&j, stage_name((enum stage)s));
			json_open_object(&j);
			json_key(&j, "s");
			json_double(&j, ns / 1e9);
			json_key(&j, "ns_per_packet");
			json_double(&j, ps->packets ? ns / (double)ps->packets : 0.0);
			json_key(&j, "ns_per_message");
			if (ps->messages)
				json_double(&j, ns / (double)ps->messages);
			else
				json_null(&j);
			json_key(&j, "share");
			json_double(&j, total > 0 ? ns / total : 0.0);
			json_close_object(&j);
		}
		json_close_object(&j);
	} else {
		json_null(&j);
	}
	json_end(&j);
	ret = json_write(&j, f);
	json_free(&j);
	return ret;
}
