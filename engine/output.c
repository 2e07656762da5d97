/* output: records and summary; see output.h. */
#include "output.h"

#include <inttypes.h>
#include <string.h>

#include "decode.h"
#include "flow.h"
#include "mem.h"
#include "message.h"
#include "pipeline.h"
#include "score.h"
#include "smtp.h"
#include "storm.h"
#include "verdict.h"

void output_init(struct output *o, FILE *f)
{
	memset(o, 0, sizeof(*o));
	o->f = f;
	json_init(&o->j);
}

void output_fini(struct output *o)
{
	if (o->f)
		fflush(o->f);
	json_free(&o->j);
}

static void emit(struct output *o)
{
	if (json_write(&o->j, o->f) == 0)
		o->records++;
	else
		o->write_errors++;
}

static void kv_addr(struct json *j, const char *k, const uint8_t a[16])
{
	char b[64];

	json_kv_cstr(j, k, decode_addr_str(a, b, sizeof(b)));
}

void output_flow_record(struct output *o, const struct flow *f)
{
	struct json *j = &o->j;
	static const char *const dn[2] = {"toserver", "toclient"};
	char k[32];

	json_begin(j);
	json_kv_cstr(j, "event", "flow");
	json_kv_u64(j, "flow_id", f->id);
	json_kv_ts(j, "ts_start", f->ts_first);
	json_kv_ts(j, "ts_end", f->ts_last);
	kv_addr(j, "src_ip", flow_client_addr(f));
	json_kv_u64(j, "src_port", flow_client_port(f));
	kv_addr(j, "dest_ip", flow_server_addr(f));
	json_kv_u64(j, "dest_port", flow_server_port(f));
	json_kv_cstr(j, "proto", "tcp");
	json_kv_cstr(j, "app", f->kind == FLOW_KIND_TLS_IMPLICIT ? "tls_implicit" : "smtp");
	json_kv_bool(j, "midstream", !f->seen_syn);
	for (int d = 0; d < 2; d++) {
		snprintf(k, sizeof(k), "pkts_%s", dn[d]);
		json_kv_u64(j, k, f->pkts[d]);
	}
	for (int d = 0; d < 2; d++) {
		snprintf(k, sizeof(k), "bytes_%s", dn[d]);
		json_kv_u64(j, k, f->bytes[d]);
	}
	for (int d = 0; d < 2; d++) {
		snprintf(k, sizeof(k), "reasm_%s", dn[d]);
		json_kv_u64(j, k, f->stream[d].delivered);
	}
	for (int d = 0; d < 2; d++) {
		snprintf(k, sizeof(k), "gaps_%s", dn[d]);
		json_kv_u64(j, k, f->stream[d].gaps);
	}
	for (int d = 0; d < 2; d++) {
		snprintf(k, sizeof(k), "gap_bytes_%s", dn[d]);
		json_kv_u64(j, k, f->stream[d].gap_bytes);
	}
	json_kv_cstr(j, "end", flow_end_name((enum flow_end)f->end));
	json_end(j);
	emit(o);
}

static void kv_field(struct json *j, const char *k, const struct message *m, enum message_field fld)
{
	json_kv_cstr(j, k, m ? message_field(m, fld) : NULL);
}

static void kv_reply(struct json *j, const char *k, uint16_t code, const char *text)
{
	char b[8];

	json_key(j, k);
	if (!code) {
		json_null(j);
		return;
	}
	/* "250 2.0.0 Ok: queued": the reply as the server wrote it */
	snprintf(b, sizeof(b), "%03u", code);
	if (text && *text) {
		size_t tl = strlen(text);
		char *tmp = mem_alloc(MEM_OUTPUT, tl + 5);

		if (tmp) {
			memcpy(tmp, b, 3);
			tmp[3] = ' ';
			memcpy(tmp + 4, text, tl + 1);
			json_str(j, tmp, tl + 4);
			mem_free(MEM_OUTPUT, tmp);
			return;
		}
	}
	json_str(j, b, 3);
}

void output_tx_record(struct output *o, const struct flow *f, const struct smtp_session *s,
		      const struct smtp_tx *tx, const struct message *m,
		      const struct score_report *r)
{
	const struct smtp_session_info *si = smtp_session_info(s);
	struct json *j = &o->j;
	uint64_t manom = m ? message_anomalies(m) : 0;
	const struct message_part *att;

	json_begin(j);
	json_kv_ts(j, "ts", tx->ts_begin ? tx->ts_begin : f->ts_first);
	json_kv_cstr(j, "event", "smtp");
	json_kv_u64(j, "flow_id", f->id);
	json_kv_u64(j, "tx", tx->index);
	kv_addr(j, "src_ip", flow_client_addr(f));
	json_kv_u64(j, "src_port", flow_client_port(f));
	kv_addr(j, "dest_ip", flow_server_addr(f));
	json_kv_u64(j, "dest_port", flow_server_port(f));
	json_kv_cstr(j, "helo", tx->helo);
	json_kv_cstr(j, "mail_from", tx->mail_from);
	json_key(j, "rcpt_to");
	json_open_array(j);
	for (uint32_t i = 0; i < tx->nrcpt; i++)
		json_cstr(j, tx->rcpts[i].addr);
	json_close_array(j);
	json_key(j, "rcpt_rejected");
	json_open_array(j);
	for (uint32_t i = 0; i < tx->nrcpt; i++)
		if (tx->rcpts[i].state == SMTP_RCPT_REJECTED)
			json_cstr(j, tx->rcpts[i].addr);
	json_close_array(j);
	json_key(j, "rcpt_replies");
	json_open_array(j);
	for (uint32_t i = 0; i < tx->nrcpt; i++) {
		if (tx->rcpts[i].reply_code)
			json_u64(j, tx->rcpts[i].reply_code);
		else
			json_null(j);
	}
	json_close_array(j);
	if (tx->rcpt_dropped)
		json_kv_u64(j, "rcpt_dropped", tx->rcpt_dropped);
	json_kv_cstr(j, "auth_user", tx->auth_user);
	json_kv_bool(j, "tls", si->tls || (tx->flags & SMTP_TX_TLS));
	kv_field(j, "from", m, MESSAGE_FIELD_FROM);
	kv_field(j, "to", m, MESSAGE_FIELD_TO);
	kv_field(j, "cc", m, MESSAGE_FIELD_CC);
	kv_field(j, "subject", m, MESSAGE_FIELD_SUBJECT);
	kv_field(j, "message_id", m, MESSAGE_FIELD_MESSAGE_ID);
	kv_field(j, "date", m, MESSAGE_FIELD_DATE);
	kv_field(j, "in_reply_to", m, MESSAGE_FIELD_IN_REPLY_TO);
	kv_field(j, "auto_submitted", m, MESSAGE_FIELD_AUTO_SUBMITTED);
	kv_field(j, "precedence", m, MESSAGE_FIELD_PRECEDENCE);
	kv_field(j, "list_id", m, MESSAGE_FIELD_LIST_ID);
	kv_field(j, "content_type", m, MESSAGE_FIELD_CONTENT_TYPE);
	json_key(j, "received_count");
	if (m)
		json_u64(j, message_received_count(m));
	else
		json_null(j);
	json_kv_cstr(j, "first_received", m ? message_first_received(m) : NULL);
	if (m) {
		json_kv_u64(j, "to_count", message_to_count(m));
		json_kv_u64(j, "cc_count", message_cc_count(m));
	}
	json_kv_u64(j, "size", tx->size);
	kv_reply(j, "last_reply", tx->last_reply.code, tx->last_reply.text);
	json_kv_cstr(j, "status", (tx->flags & SMTP_TX_COMPLETE) ? "complete" : "incomplete");
	json_kv_bool(j, "accepted", tx->flags & SMTP_TX_ACCEPTED);
	json_kv_bool(j, "bdat", tx->flags & SMTP_TX_BDAT);
	if (tx->mail_params && *tx->mail_params)
		json_kv_cstr(j, "mail_params", tx->mail_params);
	if (tx->auth_mech)
		json_kv_cstr(j, "auth_mech", tx->auth_mech);
	if (tx->xclient)
		json_kv_cstr(j, "xclient", tx->xclient);
	if (tx->xforward)
		json_kv_cstr(j, "xforward", tx->xforward);
	if (tx->gap_bytes)
		json_kv_u64(j, "gap_bytes", tx->gap_bytes);
	if (m && message_attachment(m, 0)) {
		json_key(j, "attachments");
		json_open_array(j);
		for (uint32_t i = 0; (att = message_attachment(m, i)); i++) {
			json_open_object(j);
			json_kv_cstr(j, "name", att->name);
			json_kv_cstr(j, "type", att->type);
			json_kv_u64(j, "size", att->decoded_size);
			json_close_object(j);
		}
		json_close_array(j);
	}
	if (r)
		output_score_json(j, r, false);
	json_key(j, "anomalies");
	json_open_array(j);
	for (int i = 0; i < SMTP_ANOM_MAX; i++)
		if (tx->anomalies & (1ull << i))
			json_cstr(j, smtp_anomaly_name((enum smtp_anomaly)i));
	for (int i = 0; i < MESSAGE_ANOM_MAX; i++)
		if (manom & (1ull << i))
			json_cstr(j, message_anomaly_name((enum message_anomaly)i));
	json_close_array(j);
	json_end(j);
	emit(o);
}

void output_score_json(struct json *j, const struct score_report *r, bool subhits)
{
	json_key(j, "score");
	json_double(j, r->score);
	json_kv_cstr(j, "action", r->action ? r->action : "pass");
	json_key(j, "hits");
	json_open_array(j);
	for (uint32_t i = 0; i < r->nhits; i++) {
		const struct score_hit *e = &r->hits[i];

		json_open_object(j);
		json_kv_cstr(j, "rule", e->rule);
		json_key(j, "score");
		json_double(j, e->score);
		if (e->behaviour) {
			/* the evidence: what was measured, over which window */
			json_key(j, "value");
			json_double(j, e->value);
			json_kv_u64(j, "window_s", e->window_ns / 1000000000ull);
		}
		json_close_object(j);
	}
	json_close_array(j);
	if (!subhits)
		return;
	json_key(j, "subhits");
	json_open_array(j);
	for (uint32_t i = 0; i < r->nsubhits; i++) {
		json_open_object(j);
		json_kv_cstr(j, "rule", r->subhits[i].rule);
		json_kv_u64(j, "count", r->subhits[i].count);
		json_close_object(j);
	}
	json_close_array(j);
}

void output_storm_record(void *user, const struct storm_event *ev)
{
	struct output *o = user;
	struct json *j = &o->j;

	json_begin(j);
	json_kv_ts(j, "ts", ev->ts_ns);
	json_kv_cstr(j, "event", "storm");
	json_kv_cstr(j, "rule", ev->rule_name);
	json_kv_cstr(j, "dir", ev->dir == STORM_UP ? "up" : "down");
	json_kv_cstr(j, "per", storm_field_name(ev->per));
	json_kv_cstr(j, "key", ev->key);
	json_key(j, "value");
	json_double(j, ev->value);
	if (ev->den) {
		json_kv_u64(j, "num", ev->num);
		json_kv_u64(j, "den", ev->den);
	}
	json_kv_u64(j, "window_s", ev->window_ns / 1000000000ull);
	json_kv_ts(j, "first_seen", ev->first_seen_ns);
	json_kv_ts(j, "last_seen", ev->last_seen_ns);
	json_end(j);
	emit(o);
}

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
		ANOM("rule_scan_errors", verdict_get_stats(pl->verdict)->scan_errors);
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

void output_summary(FILE *f, const struct pipeline *pl, const struct output *o,
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
		const struct verdict_stats *vs = verdict_get_stats(pl->verdict);

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

int output_summary_json(FILE *f, const struct pipeline *pl, const struct output *o,
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
	json_kv_u64(&j, "workers", 1);
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
		const struct verdict_stats *vs = verdict_get_stats(pl->verdict);

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
