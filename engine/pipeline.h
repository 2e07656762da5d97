/* pipeline: one worker's run-to-completion path for a packet:
 * decode → flow → reassembly → SMTP sessions and messages (or, with SMTP
 * off, byte counts and stream dumps) → verdict → records.
 *
 * The pipeline takes frames as plain bytes with a timestamp, so tests and
 * fuzzers drive it without DPDK; the workers (workers.c) hand it each
 * mbuf's data and free the mbuf after the burst (frames are borrowed).
 *
 * The engine clock is the newest packet timestamp seen (never going back),
 * so a replay gives the same results at any replay speed.
 */
#ifndef BW_PIPELINE_H
#define BW_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "decode.h"
#include "flow.h"
#include "message.h"
#include "reassembly.h"
#include "smtp.h"
#include "stage_clock.h"

struct output;
struct verdict;

struct pipeline_config {
	struct decode_opts decode;
	struct flow_config flow;
	struct reasm_config reasm;
	struct smtp_limits smtp_limits;
	struct message_limits message_limits;
	const char *dump_dir;        /* write reassembled streams here (NULL: off) */
	bool smtp;                   /* parse SMTP sessions (else streams only) */
	bool tx_records;             /* one record per SMTP transaction */
	bool flow_records;           /* one record per flow */
	unsigned expire_work;        /* flows expired at most per housekeeping call */
};

struct pipeline_stats {
	uint64_t packets, bytes;     /* frames offered, wire bytes */
	uint64_t tcp_packets;        /* decoded as TCP */
	uint64_t flow_packets;       /* belonged to a followed flow */
	uint64_t dump_errors;
	uint64_t messages;           /* transactions whose content was parsed */
	uint64_t message_anomalies;  /* union of message anomaly bits */
	uint64_t message_anomaly_count[MESSAGE_ANOM_MAX];  /* messages with each */
	uint64_t app_alloc_fail;     /* flow app state or SMTP session not allocated */
	uint64_t msg_alloc_fail;     /* message parser not allocated: content skipped */
};

#define PIPELINE_MSG_CACHE 16

struct pipeline {
	struct pipeline_config cfg;
	int linktype;
	uint64_t now;                /* engine clock, ns */
	struct decode_stats dstats;
	struct flow_table *flows;
	struct reasm_ctx reasm;
	struct output *out;
	struct verdict *verdict;     /* its verdict context (borrowed; NULL: no rules) */
	struct pipeline_stats stats;
	struct message *msg_cache[PIPELINE_MSG_CACHE];  /* idle parsers kept for reuse */
	unsigned n_msg_cache;
};

void pipeline_config_default(struct pipeline_config *cfg);

/* Returns a pipeline for frames of the given pcap link type writing records
 * to out (borrowed: must outlive the pipeline), or NULL. */
struct pipeline *pipeline_new(const struct pipeline_config *cfg, int linktype,
			      struct output *out);

/* Processes one frame (borrowed, contiguous) captured at ts_ns. */
void pipeline_packet(struct pipeline *pl, const uint8_t *frame, uint32_t len, uint64_t ts_ns);

/* Bounded housekeeping (flow expiry); call once per burst. */
void pipeline_housekeeping(struct pipeline *pl);

/* Ends every open flow (end of capture): records are written. */
void pipeline_finish(struct pipeline *pl);

/* Adds from's counters (packets, decode, reassembly, flows, messages) into
 * into's: several workers' pipelines summed for the summary. Peaks add up
 * to an upper bound of the whole's peak. */
void pipeline_add_counters(struct pipeline *into, const struct pipeline *from);

/* Frees the pipeline (flows still open are flushed first). */
void pipeline_free(struct pipeline *pl);


#endif
