/* Types of the reassembly stage, for stages that embed a stream (the flow
 * table) without calling reassembly functions.
 *
 * One struct reasm_stream per direction of a TCP connection. In-order bytes
 * are never stored: they go straight from the packet to the consumer. Only
 * segments that arrive ahead of a hole are copied, into a list of
 * struct reasm_seg sorted by sequence number and never overlapping (overlaps
 * are trimmed on insert: "first wins", see reassembly.h).
 */
#ifndef BW_REASSEMBLY_T_H
#define BW_REASSEMBLY_T_H

#include <stdint.h>

struct reasm_seg {
	struct reasm_seg *next;
	uint32_t seq;          /* first byte's sequence number */
	uint32_t len;          /* bytes in data[] */
	uint8_t data[];
};

enum reasm_stream_flag {
	REASM_INIT = 0x01,       /* next_seq is known */
	REASM_SYN = 0x02,        /* initialised from a SYN */
	REASM_MIDSTREAM = 0x04,  /* initialised from data, no SYN seen */
	REASM_FIN = 0x08,        /* a FIN was seen; fin_seq is valid */
	REASM_ENDED = 0x10,      /* end delivered to the consumer; nothing more is */
};

struct reasm_stream {
	struct reasm_seg *segs;  /* out-of-order data, sorted, disjoint */
	uint32_t next_seq;       /* sequence number of the next byte to deliver */
	uint32_t fin_seq;        /* sequence number the FIN occupies */
	uint32_t ooo_bytes;      /* memory held in segs (headers + data) */
	uint16_t nsegs;
	uint8_t flags;           /* enum reasm_stream_flag */
	uint8_t pad_;
	uint64_t delivered;      /* bytes handed to the consumer */
	uint64_t gap_bytes;      /* bytes declared missing */
	uint32_t gaps;           /* number of gap events */
};

#endif
