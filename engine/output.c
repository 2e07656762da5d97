/* output: records; see output.h. */
#include "output.h"

#include <inttypes.h>
#include <string.h>

#include "decode.h"
#include "flow.h"
#include "mem.h"
#include "message.h"
#include "match.h"
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
