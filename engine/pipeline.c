/* pipeline: see pipeline.h. */
#include "pipeline.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "counters.h"
#include "mem.h"
#include "message.h"
#include "mime.h"
#include "output.h"
#include "smtp.h"
#include "verdict.h"

/* What the pipeline keeps per flow, beside the flow itself: made at the
 * flow's first payload byte (or first dumped byte), so a flow that never
 * carries data costs only struct flow. The message parser exists only while
 * a transaction's content is passing; parsers are recycled through the
 * pipeline's small cache, so an idle session holds none. */
struct flow_app {
	struct pipeline *pl;
	struct flow *flow;
	struct smtp_session *smtp;
	struct message *msg;
	FILE *dump[2];
};

void pipeline_config_default(struct pipeline_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->decode.verify_checksums = true;
	flow_config_default(&cfg->flow);
	reasm_config_default(&cfg->reasm);
	cfg->smtp = true;
	cfg->tx_records = true;
	cfg->flow_records = false;
	cfg->expire_work = 64;
	smtp_limits_default(&cfg->smtp_limits);
	message_limits_default(&cfg->message_limits);
}

/* A message parser for a transaction's content: from the cache, else new. */
static struct message *msg_get(struct pipeline *pl)
{
	if (pl->n_msg_cache)
		return pl->msg_cache[--pl->n_msg_cache];
	return message_new(&pl->cfg.message_limits, NULL, NULL);
}

/* Gives m back: kept for reuse (reset) while the cache has room. */
static void msg_put(struct pipeline *pl, struct message *m)
{
	if (!m)
		return;
	if (pl->n_msg_cache < PIPELINE_MSG_CACHE) {
		message_reset(m);
		pl->msg_cache[pl->n_msg_cache++] = m;
	} else {
		message_free(m);
	}
}

/* What a message keeps when no rules read it: what the record needs alone. */
static const struct message_wants no_rules = { false, false, false, false };

static void tx_data_begin(void *user, const struct smtp_tx *tx)
{
	struct flow_app *a = user;
	unsigned prev = stage_enter(STAGE_MESSAGE);

	(void)tx;
	if (a->msg) {
		/* content starts again in the same transaction (DATA after BDAT,
		 * a protocol violation the tx is flagged for): the server reads
		 * the new content as the message, so do we */
		message_reset(a->msg);
	} else {
		a->msg = msg_get(a->pl);
		if (!a->msg)
			a->pl->stats.msg_alloc_fail++;
	}
	if (a->msg) {
		/* the URI list, the text views, the header lists only when the
		 * rules read them (records do not: with no rules, MIME is still
		 * decoded for the record, nothing more is kept) */
		message_want(a->msg, a->pl->verdict ? verdict_wants(a->pl->verdict) : &no_rules);
		/* full rules: the raw bytes reach the rules' streams as they
		 * arrive (released with the message, whichever way the
		 * transaction ends) */
		if (a->pl->verdict)
			verdict_begin(a->pl->verdict, a->msg);
	}
	stage_enter(prev);
}

static void tx_data(void *user, const struct smtp_tx *tx, const uint8_t *p, size_t n)
{
	struct flow_app *a = user;

	(void)tx;
	if (a->msg) {
		unsigned prev = stage_enter(STAGE_MESSAGE);

		message_feed(a->msg, p, n);
		stage_enter(prev);
	}
}

static void tx_end(void *user, const struct smtp_session *s, const struct smtp_tx *tx)
{
	struct flow_app *a = user;
	struct pipeline *pl = a->pl;
	struct message *m = a->msg;
	unsigned prev = stage_enter(STAGE_MESSAGE);

	if (m) {
		message_end(m);
		pl->stats.messages++;
		pl->stats.message_anomalies |= message_anomalies(m);
		for (int i = 0; i < MESSAGE_ANOM_MAX; i++)
			if (message_anomalies(m) & (1ull << i))
				pl->stats.message_anomaly_count[i]++;
	}
	if (pl->cfg.tx_records) {
		const struct score_report *r = NULL;

		if (pl->verdict) {
			/* verdict_tx() moves the clock to STORM for its tracking */
			stage_enter(STAGE_MATCH);
			r = verdict_tx(pl->verdict, m, tx, flow_client_addr(a->flow),
				       a->flow->ipver, pl->now);
		}
		stage_enter(STAGE_OUTPUT);
		output_tx_record(pl->out, a->flow, s, tx, m, r);
		stage_enter(STAGE_MESSAGE);
	}
	a->msg = NULL;
	msg_put(pl, m);
	stage_enter(prev);
}

static const struct smtp_ops smtp_ops = {
	.tx_data_begin = tx_data_begin,
	.tx_data = tx_data,
	.tx_end = tx_end,
};

/* The flow's app state, made on first use; NULL when it cannot be had
 * (allocation failure, counted). */
static struct flow_app *app_of(struct pipeline *pl, struct flow *f)
{
	struct flow_app *a = f->app;

	if (a)
		return a;
	a = mem_calloc(MEM_FLOW, 1, sizeof(*a));
	if (!a) {
		pl->stats.app_alloc_fail++;
		return NULL;
	}
	a->pl = pl;
	a->flow = f;
	if (pl->cfg.smtp && f->kind == FLOW_KIND_SMTP) {
		a->smtp = smtp_session_new(&pl->cfg.smtp_limits, &smtp_ops, a);
		if (!a->smtp)
			pl->stats.app_alloc_fail++;
	}
	f->app = a;
	return a;
}

static void dump_bytes(struct pipeline *pl, struct flow *f, int dir, const uint8_t *p, uint32_t n)
{
	struct flow_app *a = app_of(pl, f);
	char path[4096];

	if (!a) {
		pl->stats.dump_errors++;
		return;
	}
	if (!a->dump[dir]) {
		snprintf(path, sizeof(path), "%s/%llu.%s", pl->cfg.dump_dir,
			 (unsigned long long)f->id, dir == FLOW_TOSERVER ? "toserver" : "toclient");
		a->dump[dir] = fopen(path, "wb");
		if (!a->dump[dir]) {
			pl->stats.dump_errors++;
			return;
		}
	}
	if (n && fwrite(p, 1, n, a->dump[dir]) != n)
		pl->stats.dump_errors++;
}

static void on_data(void *user, void *owner, int dir, const uint8_t *p, uint32_t n)
{
	struct pipeline *pl = user;
	struct flow *f = owner;
	struct flow_app *a;
	unsigned prev;

	if (pl->cfg.dump_dir)
		dump_bytes(pl, f, dir, p, n);
	if (!pl->cfg.smtp)
		return;
	prev = stage_enter(STAGE_SMTP);
	a = app_of(pl, f);
	if (a && a->smtp)
		smtp_feed(a->smtp, dir, p, n, pl->now);
	stage_enter(prev);
}

static void on_gap(void *user, void *owner, int dir, uint32_t n)
{
	struct pipeline *pl = user;
	struct flow_app *a;
	unsigned prev;

	if (!pl->cfg.smtp)
		return;
	prev = stage_enter(STAGE_SMTP);
	/* app_of() makes the session if need be: a gap before any byte still tells */
	if ((a = app_of(pl, owner)) && a->smtp)
		smtp_gap(a->smtp, dir, n);
	stage_enter(prev);
}

/* Ends everything the flow feeds (streams, consumer), writes its record and
 * frees its app state. Leaves the flow in the table. */
static void flow_finish(struct pipeline *pl, struct flow *f, enum flow_end why)
{
	enum reasm_end rwhy = why == FLOW_END_RST ? REASM_END_RST : REASM_END_FLUSH;
	struct flow_app *a;
	unsigned prev = stage_enter(STAGE_REASM);

	if (f->end == FLOW_END_NONE)
		f->end = (uint8_t)why;
	if (f->kind == FLOW_KIND_SMTP) {
		reasm_end(&pl->reasm, &f->stream[FLOW_TOSERVER], f, FLOW_TOSERVER, rwhy);
		reasm_end(&pl->reasm, &f->stream[FLOW_TOCLIENT], f, FLOW_TOCLIENT, rwhy);
	}
	/* only now: flushing the streams (data, gaps) may have made the app
	 * state of a flow that had none */
	a = f->app;
	if (a && a->smtp) {
		stage_enter(STAGE_SMTP);
		smtp_end(a->smtp, pl->now);   /* reports open transactions */
		smtp_session_free(a->smtp);
		a->smtp = NULL;
	}
	if (pl->cfg.flow_records) {
		stage_enter(STAGE_OUTPUT);
		output_flow_record(pl->out, f);
	}
	stage_enter(STAGE_FLOW);
	if (a) {
		for (int d = 0; d < 2; d++)
			if (a->dump[d] && fclose(a->dump[d]) != 0)
				pl->stats.dump_errors++;
		msg_put(pl, a->msg);
		mem_free(MEM_FLOW, a);
		f->app = NULL;
	}
	stage_enter(prev);
}

/* flow table callback: the flow leaves the table */
static void on_release(void *user, struct flow *f)
{
	struct pipeline *pl = user;

	if (f->state != FLOW_CLOSED)
		flow_finish(pl, f, (enum flow_end)f->end);
}

static void flow_close(struct pipeline *pl, struct flow *f, enum flow_end why)
{
	f->end = (uint8_t)why;
	flow_finish(pl, f, why);
	flow_set_state(pl->flows, f, FLOW_CLOSED);
}

struct pipeline *pipeline_new(const struct pipeline_config *cfg, int linktype,
			      struct output *out)
{
	/* no end callback: a stream's end matters only with its flow's, which
	 * flow_finish() handles (smtp_end, the record) */
	static const struct reasm_ops rops = { on_data, on_gap, NULL };
	struct flow_ops fops = { .release = on_release };
	struct pipeline *pl;

	pl = mem_calloc(MEM_MISC, 1, sizeof(*pl));
	if (!pl)
		goto fail_alloc;
	pl->cfg = *cfg;
	pl->linktype = linktype;
	pl->out = out;
	pl->flows = flow_table_new(&cfg->flow, &fops, pl);
	if (!pl->flows)
		goto fail_flows;
	reasm_ctx_init(&pl->reasm, &cfg->reasm, &rops, pl);
	return pl;

fail_flows:
	mem_free(MEM_MISC, pl);
fail_alloc:
	return NULL;
}

static inline void packet_path(struct pipeline *pl, const uint8_t *frame, uint32_t len,
			       uint64_t ts_ns)
{
	struct pkt p;
	struct flow *f;
	struct reasm_stream *s;
	bool created;
	int dir;

	pl->stats.packets++;
	pl->stats.bytes += len;
	if (ts_ns > pl->now)
		pl->now = ts_ns;
	if (decode_packet(frame, len, pl->linktype, &pl->cfg.decode, &p, &pl->dstats) != DECODE_OK)
		return;
	pl->stats.tcp_packets++;
	p.ts_ns = pl->now;
	stage_enter(STAGE_FLOW);
	f = flow_get(pl->flows, &p, pl->now, &dir, &created);
	if (!f)
		return;
	pl->stats.flow_packets++;
	f->pkts[dir]++;
	f->bytes[dir] += len;
	if (f->state == FLOW_CLOSED)
		return;   /* stragglers of a closed flow: counted only */
	if ((p.tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN)
		f->seen_syn = 1;
	else if ((p.tcp_flags & (TCPF_SYN | TCPF_ACK)) == (TCPF_SYN | TCPF_ACK))
		f->seen_synack = 1;
	if (f->kind != FLOW_KIND_SMTP) {
		/* implicit TLS: counted, never reassembled; still ends properly */
		if (p.tcp_flags & TCPF_FIN)
			f->fin[dir] = 1;
		if (p.tcp_flags & TCPF_RST)
			flow_close(pl, f, FLOW_END_RST);
		else if (f->fin[0] && f->fin[1])
			flow_close(pl, f, FLOW_END_FIN);
		else if (f->state == FLOW_NEW && p.payload_len)
			flow_set_state(pl->flows, f, FLOW_ESTABLISHED);
		return;
	}

	stage_enter(STAGE_REASM);
	s = &f->stream[dir];
	if (p.payload_len || (p.tcp_flags & (TCPF_SYN | TCPF_FIN)))
		reasm_segment(&pl->reasm, s, f, dir, p.seq, p.tcp_flags, p.payload, p.payload_len);
	if (p.tcp_flags & TCPF_FIN)
		f->fin[dir] = 1;
	if (p.tcp_flags & TCPF_RST) {
		f->rst = 1;
		flow_close(pl, f, FLOW_END_RST);
		return;
	}
	if (p.tcp_flags & TCPF_ACK)
		reasm_ack(&pl->reasm, &f->stream[!dir], f, !dir, p.ack);

	if (f->state == FLOW_NEW && (p.payload_len || ((p.tcp_flags & TCPF_ACK) && f->seen_synack)))
		flow_set_state(pl->flows, f, FLOW_ESTABLISHED);
	if ((f->stream[0].flags & REASM_ENDED) && (f->stream[1].flags & REASM_ENDED))
		flow_close(pl, f, FLOW_END_FIN);
}

void pipeline_packet(struct pipeline *pl, const uint8_t *frame, uint32_t len, uint64_t ts_ns)
{
	unsigned prev = stage_enter(STAGE_DECODE);

	packet_path(pl, frame, len, ts_ns);
	stage_enter(prev);
}

void pipeline_housekeeping(struct pipeline *pl)
{
	unsigned prev = stage_enter(STAGE_FLOW);

	flow_expire(pl->flows, pl->now, pl->cfg.expire_work);
	if (pl->verdict) {
		stage_enter(STAGE_STORM);
		verdict_advance(pl->verdict, pl->now);
	}
	stage_enter(prev);
}

void pipeline_finish(struct pipeline *pl)
{
	unsigned prev = stage_enter(STAGE_FLOW);

	flow_table_flush(pl->flows, FLOW_END_EOF);
	stage_enter(prev);
}

void pipeline_free(struct pipeline *pl)
{
	if (!pl)
		return;
	flow_table_free(pl->flows, FLOW_END_EOF);
	while (pl->n_msg_cache)
		message_free(pl->msg_cache[--pl->n_msg_cache]);
	/* the parsers are gone: close the charset converters they kept open */
	mime_conv_cache_flush();
	mem_free(MEM_MISC, pl);
}

void pipeline_add_counters(struct pipeline *into, const struct pipeline *from)
{
	uint64_t bits = into->stats.message_anomalies | from->stats.message_anomalies;

	COUNTERS_ADD(&into->stats, &from->stats);
	into->stats.message_anomalies = bits;   /* a union of bits, not a count */
	COUNTERS_ADD(&into->dstats, &from->dstats);
	COUNTERS_ADD(&into->reasm.stats, &from->reasm.stats);
	flow_table_add_stats(into->flows, flow_table_stats(from->flows));
}
