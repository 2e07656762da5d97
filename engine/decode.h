/* decode: a view of one packet, from link header to TCP payload.
 *
 * decode_packet() reads a frame (one contiguous buffer) of a given pcap link
 * type and fills a struct pkt that points into that buffer: nothing is
 * copied, so the view lives as long as the frame. Every frame that is not a
 * decodable TCP segment is counted once, by the first reason that stopped
 * it (enum decode_anomaly); anomalies that do not stop decoding (bad
 * checksums, IP options) are counted as well.
 *
 * Addresses are kept as 16 bytes: IPv4 as the IPv4-mapped IPv6 form
 * (::ffff:a.b.c.d), so one flow key fits both families.
 */
#ifndef BW_DECODE_H
#define BW_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Link types we decode, as pcap DLT_* values (see <pcap/dlt.h>). */
enum decode_link {
	DECODE_LINK_NULL = 0,        /* DLT_NULL: BSD loopback, 4-byte host-order family */
	DECODE_LINK_ETHERNET = 1,    /* DLT_EN10MB */
	DECODE_LINK_RAW = 12,        /* DLT_RAW (Linux value): bare IPv4/IPv6 */
	DECODE_LINK_LOOP = 108,      /* DLT_LOOP: like NULL, network order */
	DECODE_LINK_SLL = 113,       /* DLT_LINUX_SLL: Linux cooked v1 */
	DECODE_LINK_SLL2 = 276,      /* DLT_LINUX_SLL2: Linux cooked v2 */
};

enum decode_anomaly {
	DECODE_OK = 0,
	/* stopped the packet */
	DECODE_TRUNC_LINK,           /* shorter than its link header */
	DECODE_UNSUPPORTED_LINK,     /* link type we do not decode */
	DECODE_VLAN_TOO_DEEP,        /* more stacked VLAN tags than we follow */
	DECODE_NOT_IP,               /* ARP, LLDP, ...: not IPv4/IPv6 */
	DECODE_TRUNC_IP,             /* shorter than its IP header */
	DECODE_BAD_IP_VERSION,       /* version field disagrees with ethertype */
	DECODE_BAD_IP_HLEN,          /* IPv4 IHL < 5 or past the data */
	DECODE_BAD_IP_LEN,           /* IP total/payload length smaller than the header */
	DECODE_IP_FRAGMENT,          /* fragments are counted and skipped */
	DECODE_IPV6_EXT_CHAIN,       /* extension header chain too long or truncated */
	DECODE_NOT_TCP,              /* UDP, ICMP, ...: counted, skipped */
	DECODE_TRUNC_TCP,            /* shorter than the TCP header */
	DECODE_BAD_TCP_HLEN,         /* data offset < 5 or past the segment */
	/* counted, packet still decoded */
	DECODE_IP_TRUNCATED_CAPTURE, /* IP length says more than was captured (snaplen) */
	DECODE_IPV4_OPTIONS,
	DECODE_IPV4_BAD_CSUM,
	DECODE_TCP_BAD_CSUM,         /* often offloaded checksums: counted, not dropped */
	DECODE_ANOMALY_MAX
};

/* TCP flags as on the wire. */
enum {
	TCPF_FIN = 0x01, TCPF_SYN = 0x02, TCPF_RST = 0x04,
	TCPF_PSH = 0x08, TCPF_ACK = 0x10, TCPF_URG = 0x20,
};

struct pkt {
	uint64_t ts_ns;              /* engine clock: capture time */
	uint8_t src[16], dst[16];    /* IPv4 as ::ffff:a.b.c.d */
	uint16_t sport, dport;       /* host order */
	uint8_t ipver;               /* 4 or 6 */
	uint8_t tcp_flags;
	uint16_t win;
	uint32_t seq, ack;           /* host order */
	const uint8_t *payload;      /* TCP payload, points into the frame */
	uint32_t payload_len;        /* bytes of payload actually captured */
	uint32_t wire_len;           /* frame length on the wire */
};

struct decode_stats {
	uint64_t anomalies[DECODE_ANOMALY_MAX];
	uint64_t vlan;               /* frames with at least one VLAN tag */
	uint64_t ipv4, ipv6, tcp;
};

struct decode_opts {
	bool verify_checksums;       /* count bad IPv4/TCP checksums (costs a pass over the payload) */
};

/* Decodes frame[0..len) of link type `link` into *out. Returns DECODE_OK when
 * *out holds a TCP segment; otherwise the anomaly that stopped decoding, which
 * is also counted in *st. Never reads outside frame[0..len). */
enum decode_anomaly decode_packet(const uint8_t *frame, uint32_t len, int link,
				  const struct decode_opts *opts,
				  struct pkt *out, struct decode_stats *st);

/* The link layer alone: where the frame's network header starts and its
 * ethertype (0x0800 IPv4, 0x86dd IPv6; BSD loopback families and raw IP
 * mapped to them; anything else as the link says). Returns DECODE_OK, or
 * the anomaly that stops decode_packet() there (not counted). For code
 * that rewrites frames (replay) and must find what decode finds. */
enum decode_anomaly decode_link(const uint8_t *frame, uint32_t len, int link,
				uint32_t *l3_off, uint16_t *ethertype);

/* Which worker a frame belongs to (software RSS): a hash of its TCP
 * endpoints that is the same for both directions of a flow, so a flow's
 * packets all reach one worker. Frames that are not decodable TCP (the
 * worker counts them) hash to 0. Checksums are not verified; nothing is
 * counted. */
uint32_t decode_flow_hash(const uint8_t *frame, uint32_t len, int link);

/* Internet checksum (RFC 1071) helpers: decode_csum_add() adds p[0..n) to
 * a running ones-complement sum (each piece must start at an even offset of
 * the checksummed bytes, as the pseudo header and the segment do);
 * decode_csum_fold() folds it to 16 bits, not complemented: 0xffff when a
 * packet that carries its checksum is correct. */
uint64_t decode_csum_add(const void *p, size_t n, uint64_t sum);
uint16_t decode_csum_fold(uint64_t sum);

/* Short stable name of an anomaly ("ip_fragment"), for counters in output. */
const char *decode_anomaly_name(enum decode_anomaly a);

/* True when the link type is one decode_packet() understands. */
bool decode_link_supported(int link);

/* Formats a 16-byte address (IPv4-mapped shown as dotted quad) into buf. */
const char *decode_addr_str(const uint8_t addr[16], char *buf, unsigned buflen);

#endif
