/* decode: link header → IPv4/IPv6 → TCP; see decode.h.
 *
 * Fields are read byte-wise (be16/be32) because frames can start at any
 * offset (link headers of 4, 14, 16, 18, 20 ... bytes), so no header struct
 * is ever dereferenced at a possibly unaligned address.
 */
#include "decode.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>


#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_IPV6 0x86dd
#define ETHERTYPE_VLAN 0x8100
#define ETHERTYPE_QINQ 0x88a8
#define ETHERTYPE_QINQ_OLD 0x9100
#define VLAN_MAX_DEPTH 4
#define IPV6_EXT_MAX 8

static const char *const anomaly_names[DECODE_ANOMALY_MAX] = {
	[DECODE_OK] = "ok",
	[DECODE_TRUNC_LINK] = "truncated_link",
	[DECODE_UNSUPPORTED_LINK] = "unsupported_link",
	[DECODE_VLAN_TOO_DEEP] = "vlan_too_deep",
	[DECODE_NOT_IP] = "not_ip",
	[DECODE_TRUNC_IP] = "truncated_ip",
	[DECODE_BAD_IP_VERSION] = "bad_ip_version",
	[DECODE_BAD_IP_HLEN] = "bad_ip_header_len",
	[DECODE_BAD_IP_LEN] = "bad_ip_len",
	[DECODE_IP_FRAGMENT] = "ip_fragment",
	[DECODE_IPV6_EXT_CHAIN] = "ipv6_ext_chain",
	[DECODE_NOT_TCP] = "not_tcp",
	[DECODE_TRUNC_TCP] = "truncated_tcp",
	[DECODE_BAD_TCP_HLEN] = "bad_tcp_header_len",
	[DECODE_IP_TRUNCATED_CAPTURE] = "ip_truncated_capture",
	[DECODE_IPV4_OPTIONS] = "ipv4_options",
	[DECODE_IPV4_BAD_CSUM] = "ipv4_bad_checksum",
	[DECODE_TCP_BAD_CSUM] = "tcp_bad_checksum",
};

const char *decode_anomaly_name(enum decode_anomaly a)
{
	return (unsigned)a < DECODE_ANOMALY_MAX ? anomaly_names[a] : "?";
}

static inline uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

bool decode_link_supported(int link)
{
	switch (link) {
	case DECODE_LINK_NULL:
	case DECODE_LINK_ETHERNET:
	case DECODE_LINK_RAW:
	case 14:  /* DLT_RAW on OpenBSD */
	case 101: /* LINKTYPE_RAW as stored in files */
	case DECODE_LINK_LOOP:
	case DECODE_LINK_SLL:
	case DECODE_LINK_SLL2:
		return true;
	default:
		return false;
	}
}

static inline enum decode_anomaly fail(struct decode_stats *st, enum decode_anomaly a)
{
	st->anomalies[a]++;
	return a;
}

/* The ones-complement sum of p[0..n), 8 bytes a step with the carries
 * added back (RFC 1071: the sum of wider words folds to the same 16-bit
 * sum, in either byte order). DPDK 22.11's __rte_raw_cksum adds 2 bytes a
 * step; GCC vectorises that at -O3, so the gain is small (about an eighth
 * of decode's instructions), but the checksum runs over every byte of
 * every segment. test_decode checks it against a plain 16-bit sum for
 * every length and alignment. */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "decode_csum_add() places tail bytes for a little-endian machine"
#endif
uint64_t decode_csum_add(const void *buf, size_t n, uint64_t sum)
{
	const uint8_t *p = buf;
	uint64_t carry = 0, w;

	for (; n >= 32; p += 32, n -= 32) {
		uint64_t a, b, c, d;

		memcpy(&a, p, 8);
		memcpy(&b, p + 8, 8);
		memcpy(&c, p + 16, 8);
		memcpy(&d, p + 24, 8);
		carry += __builtin_add_overflow(sum, a, &sum);
		carry += __builtin_add_overflow(sum, b, &sum);
		carry += __builtin_add_overflow(sum, c, &sum);
		carry += __builtin_add_overflow(sum, d, &sum);
	}
	for (; n >= 8; p += 8, n -= 8) {
		memcpy(&w, p, 8);
		carry += __builtin_add_overflow(sum, w, &sum);
	}
	if (n) {
		/* the last 1..7 bytes at their places in a little-endian word */
		uint32_t v4 = 0;
		uint16_t v2 = 0;
		unsigned off = 0;

		if (n & 4) {
			memcpy(&v4, p, 4);
			off = 4;
		}
		w = v4;
		if (n & 2) {
			memcpy(&v2, p + off, 2);
			w |= (uint64_t)v2 << (off * 8);
			off += 2;
		}
		if (n & 1)
			w |= (uint64_t)p[off] << (off * 8);
		carry += __builtin_add_overflow(sum, w, &sum);
	}
	/* end-around: once wrapped, sum is below carry, so + 1 cannot wrap */
	if (__builtin_add_overflow(sum, carry, &sum))
		sum++;
	return sum;
}

/* A 64-bit ones-complement sum folded to the 16-bit checksum (not
 * complemented), as __rte_raw_cksum_reduce does for 32 bits. */
uint16_t decode_csum_fold(uint64_t sum)
{
	uint32_t s;

	sum = (sum & 0xffffffffu) + (sum >> 32);
	sum = (sum & 0xffffffffu) + (sum >> 32);
	s = (uint32_t)sum;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

/* The ones-complement sum over the TCP pseudo header and segment, folded. */
static bool tcp_csum_ok(const struct pkt *p, const uint8_t *tcp, uint32_t tcp_len)
{
	uint64_t sum;
	uint8_t ph[40];
	unsigned phlen;

	if (p->ipver == 4) {
		memcpy(ph, p->src + 12, 4);
		memcpy(ph + 4, p->dst + 12, 4);
		ph[8] = 0;
		ph[9] = 6;
		ph[10] = (uint8_t)(tcp_len >> 8);
		ph[11] = (uint8_t)tcp_len;
		phlen = 12;
	} else {
		memcpy(ph, p->src, 16);
		memcpy(ph + 16, p->dst, 16);
		ph[32] = (uint8_t)(tcp_len >> 24);
		ph[33] = (uint8_t)(tcp_len >> 16);
		ph[34] = (uint8_t)(tcp_len >> 8);
		ph[35] = (uint8_t)tcp_len;
		ph[36] = ph[37] = ph[38] = 0;
		ph[39] = 6;
		phlen = 40;
	}
	sum = decode_csum_add(ph, phlen, 0);
	sum = decode_csum_add(tcp, tcp_len, sum);
	return decode_csum_fold(sum) == 0xffff;
}

static enum decode_anomaly decode_tcp(const uint8_t *l4, uint32_t l4_len,
				      uint32_t l4_wire_len, bool whole,
				      const struct decode_opts *opts,
				      struct pkt *out, struct decode_stats *st)
{
	uint32_t doff;

	if (l4_len < 20)
		return fail(st, DECODE_TRUNC_TCP);
	doff = (uint32_t)(l4[12] >> 4) * 4;
	if (doff < 20 || doff > l4_wire_len)
		return fail(st, DECODE_BAD_TCP_HLEN);
	if (doff > l4_len)
		return fail(st, DECODE_TRUNC_TCP);
	out->sport = be16(l4);
	out->dport = be16(l4 + 2);
	out->seq = be32(l4 + 4);
	out->ack = be32(l4 + 8);
	out->tcp_flags = l4[13];
	out->win = be16(l4 + 14);
	out->payload = l4 + doff;
	out->payload_len = l4_len - doff;
	st->tcp++;
	if (opts && opts->verify_checksums && whole && !tcp_csum_ok(out, l4, l4_len))
		st->anomalies[DECODE_TCP_BAD_CSUM]++;
	return DECODE_OK;
}

static enum decode_anomaly decode_ipv4(const uint8_t *ip, uint32_t len,
				       const struct decode_opts *opts,
				       struct pkt *out, struct decode_stats *st)
{
	uint32_t hlen, tot;
	uint16_t frag;
	bool whole = true;

	if (len < 20)
		return fail(st, DECODE_TRUNC_IP);
	if ((ip[0] >> 4) != 4)
		return fail(st, DECODE_BAD_IP_VERSION);
	hlen = (uint32_t)(ip[0] & 0x0f) * 4;
	if (hlen < 20 || hlen > len)
		return fail(st, DECODE_BAD_IP_HLEN);
	tot = be16(ip + 2);
	if (tot < hlen)
		return fail(st, DECODE_BAD_IP_LEN);
	if (tot > len) {
		/* snaplen cut the packet: decode what is there, skip checksums */
		st->anomalies[DECODE_IP_TRUNCATED_CAPTURE]++;
		whole = false;
	} else {
		len = tot;   /* drop link padding (short Ethernet frames) */
	}
	st->ipv4++;
	if (hlen > 20)
		st->anomalies[DECODE_IPV4_OPTIONS]++;
	if (opts && opts->verify_checksums &&
	    decode_csum_fold(decode_csum_add(ip, hlen, 0)) != 0xffff)
		st->anomalies[DECODE_IPV4_BAD_CSUM]++;
	frag = be16(ip + 6);
	if (frag & 0x3fff)   /* MF set or offset non-zero */
		return fail(st, DECODE_IP_FRAGMENT);
	if (ip[9] != 6)
		return fail(st, DECODE_NOT_TCP);
	memset(out->src, 0, 10);
	out->src[10] = out->src[11] = 0xff;
	memcpy(out->src + 12, ip + 12, 4);
	memset(out->dst, 0, 10);
	out->dst[10] = out->dst[11] = 0xff;
	memcpy(out->dst + 12, ip + 16, 4);
	out->ipver = 4;
	return decode_tcp(ip + hlen, len - hlen, tot - hlen, whole, opts, out, st);
}

static enum decode_anomaly decode_ipv6(const uint8_t *ip, uint32_t len,
				       const struct decode_opts *opts,
				       struct pkt *out, struct decode_stats *st)
{
	uint32_t plen, off = 40, l4_wire;
	uint8_t nh;
	bool whole = true;

	if (len < 40)
		return fail(st, DECODE_TRUNC_IP);
	if ((ip[0] >> 4) != 6)
		return fail(st, DECODE_BAD_IP_VERSION);
	plen = be16(ip + 4);
	if (plen == 0)   /* jumbogram or broken: we do not follow hop-by-hop jumbo */
		return fail(st, DECODE_BAD_IP_LEN);
	if (40 + plen > len) {
		st->anomalies[DECODE_IP_TRUNCATED_CAPTURE]++;
		whole = false;
	} else {
		len = 40 + plen;
	}
	st->ipv6++;
	memcpy(out->src, ip + 8, 16);
	memcpy(out->dst, ip + 24, 16);
	out->ipver = 6;
	nh = ip[6];
	for (int i = 0; ; i++) {
		uint32_t elen;

		switch (nh) {
		case 6:
			l4_wire = 40 + plen > off ? 40 + plen - off : 0;
			return decode_tcp(ip + off, len - off, l4_wire, whole, opts, out, st);
		case 0:    /* hop-by-hop */
		case 43:   /* routing */
		case 60:   /* destination options */
		case 135:  /* mobility */
			if (i >= IPV6_EXT_MAX || off + 8 > len)
				return fail(st, DECODE_IPV6_EXT_CHAIN);
			elen = ((uint32_t)ip[off + 1] + 1) * 8;
			nh = ip[off];
			off += elen;
			if (off > len)
				return fail(st, DECODE_IPV6_EXT_CHAIN);
			break;
		case 51:   /* AH: length in 4-byte units, minus 2 */
			if (i >= IPV6_EXT_MAX || off + 8 > len)
				return fail(st, DECODE_IPV6_EXT_CHAIN);
			elen = ((uint32_t)ip[off + 1] + 2) * 4;
			nh = ip[off];
			off += elen;
			if (off > len)
				return fail(st, DECODE_IPV6_EXT_CHAIN);
			break;
		case 44:   /* fragment */
			return fail(st, DECODE_IP_FRAGMENT);
		default:   /* ESP, no next header, UDP, ICMPv6 ... */
			return fail(st, DECODE_NOT_TCP);
		}
	}
}

static enum decode_anomaly decode_l3(uint16_t ethertype, const uint8_t *p, uint32_t len,
				     const struct decode_opts *opts,
				     struct pkt *out, struct decode_stats *st)
{
	switch (ethertype) {
	case ETHERTYPE_IPV4:
		return decode_ipv4(p, len, opts, out, st);
	case ETHERTYPE_IPV6:
		return decode_ipv6(p, len, opts, out, st);
	default:
		return fail(st, DECODE_NOT_IP);
	}
}

/* The link layer of a frame: the network header's offset and ethertype
 * (the BSD loopback family and the raw-IP version nibble mapped to one).
 * Returns DECODE_OK, or the anomaly that stopped it (not counted here).
 * One parser for decode_packet() and replay's address rewriting. */
static inline enum decode_anomaly link_l3(const uint8_t *frame, uint32_t len, int link,
					  uint32_t *l3_off, uint16_t *ethertype,
					  unsigned *vlan_tags)
{
	uint32_t off, fam;
	uint16_t et;

	*vlan_tags = 0;
	switch (link) {
	case DECODE_LINK_ETHERNET:
		if (len < 14)
			return DECODE_TRUNC_LINK;
		et = be16(frame + 12);
		off = 14;
		for (int depth = 0; et == ETHERTYPE_VLAN || et == ETHERTYPE_QINQ ||
				    et == ETHERTYPE_QINQ_OLD; depth++) {
			if (depth == VLAN_MAX_DEPTH)
				return DECODE_VLAN_TOO_DEEP;
			if (off + 4 > len)
				return DECODE_TRUNC_LINK;
			(*vlan_tags)++;
			et = be16(frame + off + 2);
			off += 4;
		}
		break;
	case DECODE_LINK_NULL:
	case DECODE_LINK_LOOP:
		if (len < 4)
			return DECODE_TRUNC_LINK;
		if (link == DECODE_LINK_LOOP) {
			fam = be32(frame);
		} else {
			/* host order of the capturing machine: accept either */
			memcpy(&fam, frame, 4);
			if (fam > 0xffff)
				fam = __builtin_bswap32(fam);
		}
		/* IPv6's family differs by OS (24 NetBSD/OpenBSD, 28 FreeBSD,
		 * 30 macOS); 2 is IPv4 everywhere */
		et = fam == 2 ? ETHERTYPE_IPV4 :
		     fam == 24 || fam == 28 || fam == 30 ? ETHERTYPE_IPV6 : 0;
		off = 4;
		break;
	case DECODE_LINK_SLL:
		if (len < 16)
			return DECODE_TRUNC_LINK;
		et = be16(frame + 14);
		off = 16;
		/* a VLAN tag may follow when the kernel did not strip it */
		while (et == ETHERTYPE_VLAN || et == ETHERTYPE_QINQ) {
			if (off + 4 > len)
				return DECODE_TRUNC_LINK;
			et = be16(frame + off + 2);
			off += 4;
		}
		break;
	case DECODE_LINK_SLL2:
		if (len < 20)
			return DECODE_TRUNC_LINK;
		et = be16(frame);
		off = 20;
		break;
	case DECODE_LINK_RAW:
	case 14:
	case 101:
		if (len < 1)
			return DECODE_TRUNC_IP;
		if ((frame[0] >> 4) == 4)
			et = ETHERTYPE_IPV4;
		else if ((frame[0] >> 4) == 6)
			et = ETHERTYPE_IPV6;
		else
			return DECODE_BAD_IP_VERSION;
		off = 0;
		break;
	default:
		return DECODE_UNSUPPORTED_LINK;
	}
	*l3_off = off;
	*ethertype = et;
	return DECODE_OK;
}

enum decode_anomaly decode_link(const uint8_t *frame, uint32_t len, int link,
				uint32_t *l3_off, uint16_t *ethertype)
{
	unsigned tags;

	return link_l3(frame, len, link, l3_off, ethertype, &tags);
}

enum decode_anomaly decode_packet(const uint8_t *frame, uint32_t len, int link,
				  const struct decode_opts *opts,
				  struct pkt *out, struct decode_stats *st)
{
	uint32_t off = 0;
	uint16_t et = 0;
	unsigned tags;
	enum decode_anomaly a;

	out->wire_len = len;
	a = link_l3(frame, len, link, &off, &et, &tags);
	if (tags)
		st->vlan++;
	if (a != DECODE_OK)
		return fail(st, a);
	return decode_l3(et, frame + off, len - off, opts, out, st);
}

static inline uint64_t hash_end(const uint8_t a[16], uint16_t port)
{
	uint64_t x, y;

	memcpy(&x, a, 8);
	memcpy(&y, a + 8, 8);
	x ^= y * 0x9e3779b97f4a7c15ull ^ port;
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

/* The two ends hashed alone and added: symmetric by construction. */
static inline uint32_t flow_hash_ends(const uint8_t src[16], uint16_t sport,
				      const uint8_t dst[16], uint16_t dport)
{
	uint64_t h = hash_end(src, sport) + hash_end(dst, dport);

	h ^= h >> 29;
	h *= 0xc4ceb9fe1a85ec53ull;
	return (uint32_t)(h >> 32);
}

uint32_t decode_flow_hash(const uint8_t *frame, uint32_t len, int link)
{
	struct decode_opts o = { .verify_checksums = false };
	struct decode_stats st;      /* thrown away: the worker counts */
	struct pkt p;

	/* the common frame, Ethernet + IPv4 without options + TCP, whole and
	 * not a fragment, read at fixed offsets: what decode_packet() would
	 * find, at a third of its cost on the receiving thread (which sorts
	 * every frame). Anything else takes decode_packet(); test_decode
	 * checks that both give a flow the same hash. */
	if (link == DECODE_LINK_ETHERNET && len >= 14 + 20 + 20 && be16(frame + 12) == 0x0800 &&
	    frame[14] == 0x45 && frame[14 + 9] == 6 && (be16(frame + 14 + 6) & 0x3fff) == 0) {
		const uint8_t *ip = frame + 14, *tcp = ip + 20;
		uint32_t tot = be16(ip + 2), doff = (uint32_t)(tcp[12] >> 4) * 4;

		if (tot <= len - 14 && tot >= 40 && doff >= 20 && doff <= tot - 20) {
			uint8_t a[16] = {0,0,0,0,0,0,0,0,0,0,0xff,0xff}, b[16];

			memcpy(b, a, 12);
			memcpy(a + 12, ip + 12, 4);
			memcpy(b + 12, ip + 16, 4);
			return flow_hash_ends(a, be16(tcp), b, be16(tcp + 2));
		}
	}
	memset(&st, 0, sizeof(st));
	if (decode_packet(frame, len, link, &o, &p, &st) != DECODE_OK)
		return 0;
	return flow_hash_ends(p.src, p.sport, p.dst, p.dport);
}

const char *decode_addr_str(const uint8_t a[16], char *buf, unsigned buflen)
{
	static const uint8_t v4mapped[12] = {0,0,0,0,0,0,0,0,0,0,0xff,0xff};

	if (memcmp(a, v4mapped, 12) == 0 && buflen >= 16) {
		char *p = buf;

		for (int i = 12; i < 16; i++) {
			unsigned v = a[i];

			if (v >= 100)
				*p++ = (char)('0' + v / 100);
			if (v >= 10)
				*p++ = (char)('0' + v / 10 % 10);
			*p++ = (char)('0' + v % 10);
			*p++ = i < 15 ? '.' : '\0';
		}
		return buf;
	}
	if (!inet_ntop(AF_INET6, a, buf, buflen) && buflen)
		buf[0] = '\0';
	return buf;
}
