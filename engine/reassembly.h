/* reassembly: per-direction TCP byte streams for a consumer.
 *
 * The consumer (the SMTP stage, or the flow dumper) gets three events per
 * direction through struct reasm_ops: data (in order, no duplicates), gap (n
 * bytes are missing here: resynchronise and go on) and end (FIN reached, RST,
 * or the flow was flushed). Data pointers are borrowed: valid only during the
 * callback (they point into the packet or into a queued segment).
 *
 * Policy, fixed and tested:
 * - Overlaps: first wins. Bytes already delivered or already queued are kept;
 *   a later segment only fills bytes nobody has supplied yet. (Suricata's
 *   "first"/BSD-like favouring of original data; it defeats simple evasion by
 *   retransmitting different content.)
 * - Retransmissions of delivered data are counted and dropped.
 * - Sequence numbers compare in serial arithmetic (RFC 1982), so streams
 *   that wrap past 2^32 reassemble normally.
 * - Start: from the SYN (ISN + 1), else from the first segment that carries
 *   data or FIN ("mid-stream pickup", counted).
 * - Gaps: a hole is declared when (a) the peer acknowledges bytes we never
 *   saw (they were lost by the capture and will not be retransmitted), (b) the
 *   stream is flushed at the end of the flow, or (c) a memory cap is hit.
 * - Caps: per stream (flow_memcap bytes and max_segs segments held out of
 *   order) and in total (global_memcap). At a cap the oldest hole is declared
 *   a gap and the queued data after it is delivered ("memcap_flush"); if the
 *   queue is empty and the segment still does not fit, the hole before the
 *   segment is declared a gap and the segment delivered ("memcap_skip"). So a
 *   cap costs the bytes that were missing anyway, never bytes we received.
 *   An allocation failure is counted apart ("alloc_fail") and handled the same.
 */
#ifndef BW_REASSEMBLY_H
#define BW_REASSEMBLY_H

#include <stdbool.h>
#include <stdint.h>

#include "reassembly-t.h"

enum reasm_end {
	REASM_END_FIN = 1,       /* all bytes up to the FIN were delivered */
	REASM_END_RST,           /* the connection was reset */
	REASM_END_FLUSH,         /* the flow ended otherwise (timeout, eviction, end of capture) */
};

struct reasm_ops {
	void (*data)(void *user, void *owner, int dir, const uint8_t *p, uint32_t n);
	void (*gap)(void *user, void *owner, int dir, uint32_t n);
	void (*end)(void *user, void *owner, int dir, enum reasm_end why);
};

struct reasm_config {
	uint32_t flow_memcap;    /* bytes held out of order per stream */
	uint16_t max_segs;       /* segments held out of order per stream */
	uint64_t global_memcap;  /* bytes held out of order in total */
};

struct reasm_stats {
	uint64_t segments;       /* segments with data or FIN offered */
	uint64_t in_order;       /* segments delivered without queueing */
	uint64_t out_of_order;   /* segments (or pieces) queued */
	uint64_t dup_segments;   /* segments entirely old (retransmissions) */
	uint64_t dup_bytes;
	uint64_t overlap_bytes;  /* bytes dropped because another segment had them first */
	uint64_t gaps, gap_bytes;
	uint64_t gaps_by_ack;    /* holes closed because the peer acknowledged past them */
	uint64_t memcap_flush, memcap_skip;
	uint64_t alloc_fail;
	uint64_t midstream;      /* streams picked up without a SYN */
	uint64_t data_after_end; /* bytes arriving after FIN/RST was delivered */
	uint64_t delivered_bytes;
	uint64_t held_bytes;     /* now held out of order, all streams */
	uint64_t held_peak;
};

struct reasm_ctx {
	struct reasm_config cfg;
	struct reasm_ops ops;
	void *user;
	struct reasm_stats stats;
};

/* Sane defaults: 1 MiB and 2048 segments per stream, 256 MiB in total. */
void reasm_config_default(struct reasm_config *cfg);

/* Fills rc; cannot fail. */
void reasm_ctx_init(struct reasm_ctx *rc, const struct reasm_config *cfg,
		    const struct reasm_ops *ops, void *user);

/* Offers one TCP segment of direction dir to stream s. tcp_flags are the
 * wire flags (SYN and FIN are honoured here; RST is the caller's business:
 * call reasm_end(). payload is borrowed. owner is passed back to callbacks. */
void reasm_segment(struct reasm_ctx *rc, struct reasm_stream *s, void *owner, int dir,
		   uint32_t seq, uint8_t tcp_flags, const uint8_t *payload, uint32_t len);

/* The peer of stream s acknowledged everything before ack: holes before it
 * will never be filled, so they become gaps now. */
void reasm_ack(struct reasm_ctx *rc, struct reasm_stream *s, void *owner, int dir,
	       uint32_t ack);

/* Ends stream s: delivers what is queued (holes become gaps), then the end
 * event with why, unless the end was already delivered. Frees the queue. */
void reasm_end(struct reasm_ctx *rc, struct reasm_stream *s, void *owner, int dir,
	       enum reasm_end why);

/* Frees what s holds without delivering anything (for teardown paths). */
void reasm_stream_free(struct reasm_ctx *rc, struct reasm_stream *s);

/* Checks s's invariants (sorted, disjoint, accounted, ahead of next_seq).
 * Returns 0 or -1; used by tests after every step. */
int reasm_stream_validate(const struct reasm_stream *s);

static inline bool reasm_seq_lt(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }
static inline bool reasm_seq_leq(uint32_t a, uint32_t b) { return (int32_t)(a - b) <= 0; }

#endif
