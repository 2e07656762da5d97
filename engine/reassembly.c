/* reassembly: see reassembly.h for the policy this file implements. */
#include "reassembly.h"

#include <string.h>

#include "mem.h"

void reasm_config_default(struct reasm_config *cfg)
{
	cfg->flow_memcap = 1u << 20;
	cfg->max_segs = 2048;
	cfg->global_memcap = 256ull << 20;
}

void reasm_ctx_init(struct reasm_ctx *rc, const struct reasm_config *cfg,
		    const struct reasm_ops *ops, void *user)
{
	memset(rc, 0, sizeof(*rc));
	rc->cfg = *cfg;
	rc->ops = *ops;
	rc->user = user;
}

static inline uint32_t seg_cost(uint32_t len)
{
	return (uint32_t)sizeof(struct reasm_seg) + len;
}

static void deliver(struct reasm_ctx *rc, struct reasm_stream *s, void *owner, int dir,
		    const uint8_t *p, uint32_t n)
{
	if (!n)
		return;
	s->next_seq += n;
	s->delivered += n;
	rc->stats.delivered_bytes += n;
	if (rc->ops.data)
		rc->ops.data(rc->user, owner, dir, p, n);
}

static void declare_gap(struct reasm_ctx *rc, struct reasm_stream *s, void *owner, int dir,
			uint32_t n)
{
	if (!n)
		return;
	s->next_seq += n;
	s->gaps++;
	s->gap_bytes += n;
	rc->stats.gaps++;
	rc->stats.gap_bytes += n;
	if (rc->ops.gap)
		rc->ops.gap(rc->user, owner, dir, n);
}

static void seg_free(struct reasm_ctx *rc, struct reasm_stream *s, struct reasm_seg *g)
{
	uint32_t c = seg_cost(g->len);

	s->ooo_bytes -= c;
	s->nsegs--;
	rc->stats.held_bytes -= c;
	mem_free(MEM_REASM, g);
}

/* Delivers queued segments that start at or before next_seq (trimming what
 * was already delivered), then the end event if the FIN is reached. */
static void drain(struct reasm_ctx *rc, struct reasm_stream *s, void *owner, int dir)
{
	struct reasm_seg *g;

	while ((g = s->segs) && reasm_seq_leq(g->seq, s->next_seq)) {
		uint32_t skip = s->next_seq - g->seq;

		s->segs = g->next;
		if (skip < g->len)
			deliver(rc, s, owner, dir, g->data + skip, g->len - skip);
		else
			rc->stats.overlap_bytes += g->len;
		seg_free(rc, s, g);
	}
	if ((s->flags & (REASM_FIN | REASM_ENDED)) == REASM_FIN &&
	    !reasm_seq_lt(s->next_seq, s->fin_seq)) {
		/* anything still queued lies past the FIN: not part of the stream */
		while ((g = s->segs)) {
			s->segs = g->next;
			rc->stats.data_after_end += g->len;
			seg_free(rc, s, g);
		}
		s->flags |= REASM_ENDED;
		if (rc->ops.end)
			rc->ops.end(rc->user, owner, dir, REASM_END_FIN);
	}
}

/* Declares the hole before the first queued segment a gap and delivers the
 * contiguous data after it. Returns false when nothing was queued. */
static bool skip_first_hole(struct reasm_ctx *rc, struct reasm_stream *s, void *owner, int dir)
{
	if (!s->segs)
		return false;
	declare_gap(rc, s, owner, dir, s->segs->seq - s->next_seq);
	drain(rc, s, owner, dir);
	return true;
}

/* Delivers an in-order segment (seq == next_seq) while respecting data that
 * was queued first: where a queued segment covers part of this one, the
 * queued bytes are delivered and this segment's copy is dropped. */
static void deliver_in_order(struct reasm_ctx *rc, struct reasm_stream *s, void *owner, int dir,
			     const uint8_t *p, uint32_t len)
{
	while (len && !(s->flags & REASM_ENDED)) {
		struct reasm_seg *g = s->segs;
		uint32_t upto, start, skip;

		if (!g || !reasm_seq_lt(g->seq, s->next_seq + len)) {
			deliver(rc, s, owner, dir, p, len);
			return;
		}
		upto = g->seq - s->next_seq;           /* bytes before the queued segment */
		deliver(rc, s, owner, dir, p, upto);
		p += upto;
		len -= upto;
		start = s->next_seq;                    /* p starts here, as does g */
		drain(rc, s, owner, dir);               /* delivers g and what follows it */
		skip = s->next_seq - start;             /* those bytes came from the queue */
		if (skip >= len) {
			rc->stats.overlap_bytes += len;
			return;
		}
		rc->stats.overlap_bytes += skip;
		p += skip;
		len -= skip;
	}
}

/* Queues [seq, seq+len) except the bytes already queued (first wins).
 * Returns -1 when a cap or allocation refused a piece (nothing is queued from
 * that piece on), 0 otherwise. */
static int queue_ooo(struct reasm_ctx *rc, struct reasm_stream *s,
		     uint32_t seq, const uint8_t *p, uint32_t len)
{
	struct reasm_seg **link = &s->segs;
	uint32_t cur = seq, end = seq + len;

	while (reasm_seq_lt(cur, end)) {
		struct reasm_seg *e = *link, *g;
		uint32_t piece_end, n;

		/* skip queued segments wholly before cur */
		if (e && reasm_seq_leq(e->seq + e->len, cur)) {
			link = &e->next;
			continue;
		}
		if (e && reasm_seq_leq(e->seq, cur)) {
			/* cur lies inside e: those bytes were there first */
			uint32_t covered = e->seq + e->len - cur;

			if (reasm_seq_lt(end, e->seq + e->len))
				covered = end - cur;
			rc->stats.overlap_bytes += covered;
			cur += covered;
			link = &e->next;
			continue;
		}
		piece_end = end;
		if (e && reasm_seq_lt(e->seq, end))
			piece_end = e->seq;
		n = piece_end - cur;
		if (s->nsegs >= rc->cfg.max_segs ||
		    s->ooo_bytes + seg_cost(n) > rc->cfg.flow_memcap ||
		    rc->stats.held_bytes + seg_cost(n) > rc->cfg.global_memcap)
			return -1;
		g = mem_alloc(MEM_REASM, seg_cost(n));
		if (!g) {
			rc->stats.alloc_fail++;
			return -1;
		}
		g->seq = cur;
		g->len = n;
		memcpy(g->data, p + (cur - seq), n);
		g->next = e;
		*link = g;
		link = &g->next;
		s->nsegs++;
		s->ooo_bytes += seg_cost(n);
		rc->stats.held_bytes += seg_cost(n);
		if (rc->stats.held_bytes > rc->stats.held_peak)
			rc->stats.held_peak = rc->stats.held_bytes;
		rc->stats.out_of_order++;
		cur = piece_end;
	}
	return 0;
}

/* Places data [seq, seq+len) into the stream: deliver, trim, or queue. */
static void place(struct reasm_ctx *rc, struct reasm_stream *s, void *owner, int dir,
		  uint32_t seq, const uint8_t *p, uint32_t len)
{
	for (;;) {
		int32_t rel = (int32_t)(seq - s->next_seq);

		if (!len)
			return;
		if (rel < 0) {
			/* unsigned: rel may be INT32_MIN, whose negation overflows */
			uint32_t old = s->next_seq - seq;

			if (old >= len) {
				rc->stats.dup_segments++;
				rc->stats.dup_bytes += len;
				return;
			}
			rc->stats.dup_bytes += old;
			seq += old;
			p += old;
			len -= old;
			rel = 0;
		}
		if (rel == 0) {
			rc->stats.in_order++;
			deliver_in_order(rc, s, owner, dir, p, len);
			return;
		}
		if (queue_ooo(rc, s, seq, p, len) == 0)
			return;
		/* at a cap: give up the oldest hole, then try again */
		if (skip_first_hole(rc, s, owner, dir)) {
			rc->stats.memcap_flush++;
			continue;
		}
		rc->stats.memcap_skip++;
		declare_gap(rc, s, owner, dir, (uint32_t)rel);
	}
}

void reasm_segment(struct reasm_ctx *rc, struct reasm_stream *s, void *owner, int dir,
		   uint32_t seq, uint8_t tcp_flags, const uint8_t *payload, uint32_t len)
{
	bool syn = tcp_flags & 0x02, fin = tcp_flags & 0x01;

	if (syn) {
		if (!(s->flags & REASM_INIT) ||
		    ((s->flags & REASM_MIDSTREAM) && s->delivered == 0 && !s->segs)) {
			s->next_seq = seq + 1;
			s->flags = (uint8_t)((s->flags & ~REASM_MIDSTREAM) | REASM_INIT | REASM_SYN);
		}
		seq += 1;    /* the SYN occupies one sequence number */
	}
	if (!len && !fin)
		return;
	rc->stats.segments++;
	if (!(s->flags & REASM_INIT)) {
		s->next_seq = seq;
		s->flags |= REASM_INIT | REASM_MIDSTREAM;
		rc->stats.midstream++;
	}
	if (s->flags & REASM_ENDED) {
		/* retransmissions of the last bytes are normal; new bytes are not */
		if (len && reasm_seq_lt(s->next_seq, seq + len))
			rc->stats.data_after_end += len;
		return;
	}
	if (fin) {
		if (!(s->flags & REASM_FIN)) {
			s->fin_seq = seq + len;
			s->flags |= REASM_FIN;
		}
	}
	if (s->flags & REASM_FIN && reasm_seq_lt(s->fin_seq, seq + len)) {
		/* bytes past the FIN are not part of the stream */
		uint32_t past = seq + len - s->fin_seq;

		rc->stats.data_after_end += past < len ? past : len;
		len = past < len ? len - past : 0;
	}
	place(rc, s, owner, dir, seq, payload, len);
	drain(rc, s, owner, dir);
}

void reasm_ack(struct reasm_ctx *rc, struct reasm_stream *s, void *owner, int dir,
	       uint32_t ack)
{
	uint32_t limit = ack;

	if (!(s->flags & REASM_INIT) || (s->flags & REASM_ENDED))
		return;
	if ((s->flags & REASM_FIN) && reasm_seq_lt(s->fin_seq, limit))
		limit = s->fin_seq;   /* the FIN's own sequence number is not data */
	/* an ACK more than 1 GiB ahead is noise (or an attack), not a hole */
	if ((uint32_t)(limit - s->next_seq) > (1u << 30))
		return;
	while (reasm_seq_lt(s->next_seq, limit)) {
		uint32_t upto = limit;

		if (s->segs && reasm_seq_lt(s->segs->seq, upto))
			upto = s->segs->seq;
		rc->stats.gaps_by_ack++;
		declare_gap(rc, s, owner, dir, upto - s->next_seq);
		drain(rc, s, owner, dir);
		if (s->flags & REASM_ENDED)
			break;
	}
}

void reasm_end(struct reasm_ctx *rc, struct reasm_stream *s, void *owner, int dir,
	       enum reasm_end why)
{
	while (!(s->flags & REASM_ENDED) && skip_first_hole(rc, s, owner, dir))
		;
	if (!(s->flags & REASM_ENDED)) {
		s->flags |= REASM_ENDED;
		if (rc->ops.end)
			rc->ops.end(rc->user, owner, dir, why);
	}
	reasm_stream_free(rc, s);
}

void reasm_stream_free(struct reasm_ctx *rc, struct reasm_stream *s)
{
	while (s->segs) {
		struct reasm_seg *g = s->segs;

		s->segs = g->next;
		seg_free(rc, s, g);
	}
}

int reasm_stream_validate(const struct reasm_stream *s)
{
	uint32_t bytes = 0, n = 0;
	const struct reasm_seg *g, *prev = NULL;

	for (g = s->segs; g; prev = g, g = g->next) {
		if (g->len == 0)
			return -1;
		if (!reasm_seq_lt(s->next_seq, g->seq))
			return -1;   /* queued data must lie ahead of a hole */
		if (prev && reasm_seq_lt(g->seq, prev->seq + prev->len))
			return -1;   /* sorted and disjoint */
		bytes += seg_cost(g->len);
		n++;
	}
	if (bytes != s->ooo_bytes || n != s->nsegs)
		return -1;
	if (s->segs && !(s->flags & REASM_INIT))
		return -1;
	return 0;
}
