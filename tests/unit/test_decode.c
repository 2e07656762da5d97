/* unit: decode, one case per link and network type and per malformation.
 *
 * Frames are built here (with a checksum routine of the test's own, so the
 * engine's checksum code is checked against an independent one), then
 * decoded; each case states the result and, for good frames, the fields.
 * A last pass feeds random bytes of every link type: nothing may read out of
 * bounds (ASan) or crash.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "decode.h"

static uint16_t csum_fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static uint32_t csum_add(uint32_t s, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	return s;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v >> 16)); put16(p + 2, (uint16_t)v); }

/* TCP header + payload at p; returns its length. Checksum filled later. */
static size_t tcp_hdr(uint8_t *p, const char *payload, uint8_t doff_words)
{
	size_t pl = strlen(payload);

	memset(p, 0, 20);
	put16(p, 40001);
	put16(p + 2, 25);
	put32(p + 4, 0x11223344);
	put32(p + 8, 0x55667788);
	p[12] = (uint8_t)(doff_words << 4);
	p[13] = 0x18;
	put16(p + 14, 65535);
	memset(p + 20, 0x01, doff_words > 5 ? (doff_words - 5u) * 4u : 0);   /* NOP options */
	memcpy(p + (doff_words >= 5 ? doff_words * 4u : 20u), payload, pl);
	return (doff_words >= 5 ? doff_words * 4u : 20u) + pl;
}

/* IPv4 + TCP at p; returns the IP packet length. */
static size_t ipv4_tcp(uint8_t *p, const char *payload, uint8_t ihl, uint16_t frag, uint8_t proto)
{
	size_t hl = ihl * 4u, tl;
	uint8_t *t = p + hl;
	uint32_t s;

	memset(p, 0, hl);
	p[0] = (uint8_t)(0x40 | ihl);
	p[8] = 64;
	p[9] = proto;
	put16(p + 6, frag);
	p[12] = 198; p[13] = 18; p[14] = 0; p[15] = 1;
	p[16] = 198; p[17] = 18; p[18] = 0; p[19] = 2;
	for (size_t i = 20; i < hl; i++)
		p[i] = 1;   /* NOP options */
	tl = hl + tcp_hdr(t, payload, 5);
	put16(p + 2, (uint16_t)tl);
	put16(p + 10, csum_fold(csum_add(0, p, hl)));
	s = csum_add(0, p + 12, 8) + 6 + (uint32_t)(tl - hl);
	put16(t + 16, csum_fold(csum_add(s, t, tl - hl)));
	return tl;
}

static size_t ipv6_tcp(uint8_t *p, const char *payload, const uint8_t *ext, size_t extlen, uint8_t first_nh)
{
	size_t tl;
	uint8_t *t = p + 40 + extlen;
	uint32_t s;

	memset(p, 0, 40);
	p[0] = 0x60;
	p[6] = extlen ? first_nh : 6;
	p[7] = 64;
	p[8] = 0xfd; p[9] = 0x00; p[23] = 1;
	p[24] = 0xfd; p[25] = 0x00; p[39] = 2;
	if (extlen)
		memcpy(p + 40, ext, extlen);
	tl = tcp_hdr(t, payload, 5);
	put16(p + 4, (uint16_t)(extlen + tl));
	s = csum_add(0, p + 8, 32) + (uint32_t)tl + 6;
	put16(t + 16, csum_fold(csum_add(s, t, tl)));
	return 40 + extlen + tl;
}

static size_t eth(uint8_t *p, const uint16_t *types, int n)
{
	memset(p, 0xaa, 12);
	for (int i = 0; i < n; i++) {
		put16(p + 12 + 4 * i, types[i]);
		if (i + 1 < n)
			put16(p + 14 + 4 * i, 100 + (uint16_t)i);   /* VLAN TCI */
	}
	return 14 + 4 * (size_t)(n - 1);
}

struct expect {
	enum decode_anomaly result;
	enum decode_anomaly counted;   /* an extra counter that must be 1 */
	uint32_t payload_len;
	uint8_t ipver;
};

static void check_frame(const char *name, const uint8_t *f, size_t len, int link, struct expect e)
{
	struct decode_opts o = { .verify_checksums = true };
	struct decode_stats st;
	struct pkt p;
	enum decode_anomaly r;

	memset(&st, 0, sizeof(st));
	memset(&p, 0, sizeof(p));
	r = decode_packet(f, (uint32_t)len, link, &o, &p, &st);
	if (r != e.result)
		fprintf(stderr, "%s: got %s, want %s\n", name, decode_anomaly_name(r),
			decode_anomaly_name(e.result));
	CHECK(r == e.result);
	if (e.result != DECODE_OK) {
		CHECK_EQ_U64(st.anomalies[e.result], 1);
	} else {
		CHECK_EQ_U64(p.payload_len, e.payload_len);
		CHECK_EQ_U64(p.ipver, e.ipver);
		CHECK_EQ_U64(p.sport, 40001);
		CHECK_EQ_U64(p.dport, 25);
		CHECK_EQ_U64(p.seq, 0x11223344);
		CHECK_EQ_U64(p.ack, 0x55667788);
		CHECK_EQ_U64(p.tcp_flags, 0x18);
		if (e.payload_len)
			CHECK(memcmp(p.payload, "HELO", 4) == 0 || memcmp(p.payload, "EHLO", 4) == 0);
		if (e.counted == DECODE_OK)   /* clean frame: no checksum complaint */
			CHECK_EQ_U64(st.anomalies[DECODE_TCP_BAD_CSUM] + st.anomalies[DECODE_IPV4_BAD_CSUM], 0);
	}
	if (e.counted != DECODE_OK) {
		if (st.anomalies[e.counted] != 1)
			fprintf(stderr, "%s: counter %s = %llu\n", name, decode_anomaly_name(e.counted),
				(unsigned long long)st.anomalies[e.counted]);
		CHECK_EQ_U64(st.anomalies[e.counted], 1);
	}
}

#define OK4(n) ((struct expect){ DECODE_OK, DECODE_OK, (n), 4 })
#define OK6(n) ((struct expect){ DECODE_OK, DECODE_OK, (n), 6 })
#define BAD(a) ((struct expect){ (a), DECODE_OK, 0, 0 })

/* decode_csum_add/fold against this file's own 16-bit sum, for every
 * length 0..300 at every start alignment 0..7, on random bytes, on all
 * 0xff (where carries pile up most) and on a run whose last carry wraps,
 * split in two pieces at every even
 * offset as the pseudo header and segment are. */
static void check_csum(void)
{
	static uint8_t buf[320];
	uint32_t seed = 12345;
	int bad = 0;

	for (int fill = 0; fill < 3; fill++) {
		for (size_t i = 0; i < sizeof(buf); i++) {
			seed = seed * 1103515245u + 12345u;
			buf[i] = fill == 1 ? 0xff : (uint8_t)(seed >> 16);
			/* two all-ones words then 1: the last end-around
			 * carry is the one that wraps */
			if (fill == 2)
				buf[i] = i < 16 ? 0xff : i == 16 ? 1 : 0;
		}
		for (size_t al = 0; al < 8; al++) {
			for (size_t n = 0; n <= 300; n++) {
				const uint8_t *p = buf + al;
				uint16_t want = (uint16_t)~csum_fold(csum_add(0, p, n));
				uint16_t got = decode_csum_fold(decode_csum_add(p, n, 0));
				/* the folds differ only in the byte order of the
				 * 16-bit result: compare it swapped to network */
				uint16_t got_be = (uint16_t)(got << 8 | got >> 8);

				/* ones complement has two zeros: 0 and 0xffff */
				if (want == 0xffff)
					want = 0;
				if (got_be == 0xffff)
					got_be = 0;
				bad += want != got_be;
				for (size_t k = 0; k <= n && n <= 64; k += 2) {
					uint16_t two = decode_csum_fold(
						decode_csum_add(p + k, n - k, decode_csum_add(p, k, 0)));

					bad += two != got;
				}
			}
		}
	}
	CHECK_EQ_U64(bad, 0);
}

int main(void)
{
	uint8_t f[2048];
	size_t h, n;
	const char *pl = "HELO mx.example\r\n";   /* 17 bytes */

	check_csum();

	/* Ethernet, 802.1Q, QinQ, too deep */
	{
		uint16_t t1[] = {0x0800}, t2[] = {0x8100, 0x0800}, t3[] = {0x88a8, 0x8100, 0x0800};
		uint16_t t5[] = {0x8100, 0x8100, 0x8100, 0x8100, 0x8100, 0x0800};

		h = eth(f, t1, 1); n = ipv4_tcp(f + h, pl, 5, 0x4000, 6);
		check_frame("ethernet ipv4", f, h + n, DECODE_LINK_ETHERNET, OK4(17));
		h = eth(f, t2, 2); n = ipv4_tcp(f + h, pl, 5, 0, 6);
		check_frame("802.1Q", f, h + n, DECODE_LINK_ETHERNET, OK4(17));
		h = eth(f, t3, 3); n = ipv4_tcp(f + h, pl, 5, 0, 6);
		check_frame("QinQ", f, h + n, DECODE_LINK_ETHERNET, OK4(17));
		h = eth(f, t5, 6); n = ipv4_tcp(f + h, pl, 5, 0, 6);
		check_frame("vlan too deep", f, h + n, DECODE_LINK_ETHERNET, BAD(DECODE_VLAN_TOO_DEEP));

		h = eth(f, t1, 1); n = ipv4_tcp(f + h, pl, 7, 0, 6);
		check_frame("ipv4 options", f, h + n, DECODE_LINK_ETHERNET,
			    (struct expect){ DECODE_OK, DECODE_IPV4_OPTIONS, 17, 4 });
		n = ipv4_tcp(f + h, pl, 5, 0x2000, 6);
		check_frame("ipv4 MF", f, h + n, DECODE_LINK_ETHERNET, BAD(DECODE_IP_FRAGMENT));
		n = ipv4_tcp(f + h, pl, 5, 0x0010, 6);
		check_frame("ipv4 offset", f, h + n, DECODE_LINK_ETHERNET, BAD(DECODE_IP_FRAGMENT));
		n = ipv4_tcp(f + h, pl, 5, 0, 17);
		check_frame("udp", f, h + n, DECODE_LINK_ETHERNET, BAD(DECODE_NOT_TCP));
		check_frame("truncated ip", f, h + 10, DECODE_LINK_ETHERNET, BAD(DECODE_TRUNC_IP));
		check_frame("truncated link", f, 10, DECODE_LINK_ETHERNET, BAD(DECODE_TRUNC_LINK));
		n = ipv4_tcp(f + h, pl, 5, 0, 6);
		f[h] = 0x44;
		check_frame("ihl 4", f, h + n, DECODE_LINK_ETHERNET, BAD(DECODE_BAD_IP_HLEN));
		n = ipv4_tcp(f + h, pl, 5, 0, 6);
		f[h] = 0x65;
		check_frame("version 6 in ipv4 ethertype", f, h + n, DECODE_LINK_ETHERNET, BAD(DECODE_BAD_IP_VERSION));
		n = ipv4_tcp(f + h, pl, 5, 0, 6);
		put16(f + h + 2, 12);
		check_frame("total length < header", f, h + n, DECODE_LINK_ETHERNET, BAD(DECODE_BAD_IP_LEN));
		n = ipv4_tcp(f + h, pl, 5, 0, 6);
		f[h + 20 + 12] = 0x40;   /* data offset 4 words */
		check_frame("tcp doff 4", f, h + n, DECODE_LINK_ETHERNET, BAD(DECODE_BAD_TCP_HLEN));
		n = ipv4_tcp(f + h, pl, 5, 0, 6);
		f[h + 20 + 12] = 0xf0;   /* data offset 60 bytes > segment */
		check_frame("tcp doff past end", f, h + n, DECODE_LINK_ETHERNET, BAD(DECODE_BAD_TCP_HLEN));
		n = ipv4_tcp(f + h, pl, 5, 0, 6);
		check_frame("truncated tcp", f, h + 20 + 12, DECODE_LINK_ETHERNET,
			    (struct expect){ DECODE_TRUNC_TCP, DECODE_IP_TRUNCATED_CAPTURE, 0, 0 });
		n = ipv4_tcp(f + h, pl, 5, 0, 6);
		f[h + n - 1] ^= 0x20;    /* payload changed after checksumming */
		check_frame("bad tcp checksum still decodes", f, h + n, DECODE_LINK_ETHERNET,
			    (struct expect){ DECODE_OK, DECODE_TCP_BAD_CSUM, 17, 4 });
		n = ipv4_tcp(f + h, pl, 5, 0, 6);
		f[h + 8] = 1;            /* TTL changed: IP header checksum wrong */
		check_frame("bad ip checksum still decodes", f, h + n, DECODE_LINK_ETHERNET,
			    (struct expect){ DECODE_OK, DECODE_IPV4_BAD_CSUM, 17, 4 });
		n = ipv4_tcp(f + h, pl, 5, 0, 6);
		check_frame("snaplen cut", f, h + n - 7, DECODE_LINK_ETHERNET,
			    (struct expect){ DECODE_OK, DECODE_IP_TRUNCATED_CAPTURE, 10, 4 });
		n = ipv4_tcp(f + h, pl, 5, 0, 6);
		memset(f + h + n, 0, 8);
		check_frame("ethernet padding trimmed", f, h + n + 8, DECODE_LINK_ETHERNET, OK4(17));
		put16(f + 12, 0x0806);
		check_frame("arp", f, h + n, DECODE_LINK_ETHERNET, BAD(DECODE_NOT_IP));
	}
	/* IPv6 and its extension headers */
	{
		uint16_t t6[] = {0x86dd};
		uint8_t ext[24];

		h = eth(f, t6, 1);
		n = ipv6_tcp(f + h, pl, NULL, 0, 6);
		check_frame("ipv6", f, h + n, DECODE_LINK_ETHERNET, OK6(17));
		memset(ext, 0, sizeof(ext));
		ext[0] = 60; ext[1] = 0;          /* hop-by-hop, 8 bytes, next: dest opts */
		ext[8] = 6; ext[9] = 1;           /* dest opts, 16 bytes, next: TCP */
		n = ipv6_tcp(f + h, pl, ext, 24, 0);
		check_frame("ipv6 hop-by-hop + dest opts", f, h + n, DECODE_LINK_ETHERNET, OK6(17));
		memset(ext, 0, 8);
		ext[0] = 6;
		n = ipv6_tcp(f + h, pl, ext, 8, 44);
		check_frame("ipv6 fragment", f, h + n, DECODE_LINK_ETHERNET, BAD(DECODE_IP_FRAGMENT));
		ext[0] = 6; ext[1] = 200;         /* claims 1608 bytes */
		n = ipv6_tcp(f + h, pl, ext, 8, 0);
		check_frame("ipv6 ext past end", f, h + n, DECODE_LINK_ETHERNET, BAD(DECODE_IPV6_EXT_CHAIN));
		for (int i = 0; i < 12; i++) {    /* 12 chained dest opts: too long */
			uint8_t *e = f + h + 40 + 8 * i;

			memset(e, 0, 8);
			e[0] = 60;
		}
		f[h + 6] = 60;
		put16(f + h + 4, 96 + 20);
		check_frame("ipv6 ext chain too long", f, h + 40 + 96 + 20, DECODE_LINK_ETHERNET,
			    BAD(DECODE_IPV6_EXT_CHAIN));
	}
	/* other link types */
	{
		uint8_t ip[1500];
		size_t ipn = ipv4_tcp(ip, pl, 5, 0, 6), ip6n;
		uint8_t ip6[1500];

		ip6n = ipv6_tcp(ip6, pl, NULL, 0, 6);
		/* BSD loopback: family in the capturing host's order */
		f[0] = 2; f[1] = f[2] = f[3] = 0;
		memcpy(f + 4, ip, ipn);
		check_frame("null little-endian", f, 4 + ipn, DECODE_LINK_NULL, OK4(17));
		f[0] = f[1] = f[2] = 0; f[3] = 2;
		check_frame("null big-endian", f, 4 + ipn, DECODE_LINK_NULL, OK4(17));
		f[0] = 30; f[1] = f[2] = f[3] = 0;
		memcpy(f + 4, ip6, ip6n);
		check_frame("null ipv6 (macOS 30)", f, 4 + ip6n, DECODE_LINK_NULL, OK6(17));
		f[0] = f[1] = f[2] = 0; f[3] = 2;
		memcpy(f + 4, ip, ipn);
		check_frame("loop", f, 4 + ipn, DECODE_LINK_LOOP, OK4(17));
		f[3] = 7;
		check_frame("null unknown family", f, 4 + ipn, DECODE_LINK_NULL, BAD(DECODE_NOT_IP));
		/* Linux cooked v1: ethertype at 14 */
		memset(f, 0, 16);
		put16(f + 14, 0x0800);
		memcpy(f + 16, ip, ipn);
		check_frame("sll", f, 16 + ipn, DECODE_LINK_SLL, OK4(17));
		/* Linux cooked v2: ethertype at 0 */
		memset(f, 0, 20);
		put16(f, 0x86dd);
		memcpy(f + 20, ip6, ip6n);
		check_frame("sll2", f, 20 + ip6n, DECODE_LINK_SLL2, OK6(17));
		check_frame("raw", ip, ipn, DECODE_LINK_RAW, OK4(17));
		check_frame("raw as stored in files (101)", ip6, ip6n, 101, OK6(17));
		check_frame("unsupported link", ip, ipn, 105, BAD(DECODE_UNSUPPORTED_LINK));
	}
	/* addresses */
	{
		uint8_t a[16] = {0,0,0,0,0,0,0,0,0,0,0xff,0xff,198,18,0,1};
		uint8_t b[16] = {0xfd,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2};
		char buf[64];

		CHECK_STR(decode_addr_str(a, buf, sizeof(buf)), "198.18.0.1");
		CHECK_STR(decode_addr_str(b, buf, sizeof(buf)), "fd00::2");
	}
	/* random bytes of every link type: must not crash or read out of bounds */
	{
		static const int links[] = {0, 1, 12, 101, 108, 113, 276};
		struct decode_stats st;
		struct decode_opts o = { .verify_checksums = true };
		struct pkt p;
		unsigned ok = 0;

		memset(&st, 0, sizeof(st));
		srand(7);
		for (int i = 0; i < 200000; i++) {
			size_t len = (size_t)rand() % 200;
			uint8_t *buf = malloc(len ? len : 1);
			int link = links[rand() % 7];

			for (size_t k = 0; k < len; k++)
				buf[k] = (uint8_t)rand();
			if (len > 24 && rand() % 2) {   /* plausible headers to get deeper */
				if (link == 1) { buf[12] = 0x08; buf[13] = 0; buf[14] = 0x45; buf[23] = 6; }
				else if (link == 12 || link == 101) { buf[0] = 0x45; buf[9] = 6; }
			}
			if (decode_packet(buf, (uint32_t)len, link, &o, &p, &st) == DECODE_OK) {
				ok++;
				CHECK(p.payload + p.payload_len <= buf + len);
			}
			free(buf);
		}
		fprintf(stderr, "random frames decoded as TCP: %u of 200000\n", ok);
		CHECK(st.anomalies[DECODE_OK] == 0);
	}
	/* decode_flow_hash (software RSS): both directions of a flow agree,
	 * other flows spread, frames that are not TCP hash to 0 */
	{
		uint16_t t1[] = {0x0800};
		uint8_t g[256];
		uint32_t fwd, rev, seen[64];
		unsigned distinct = 0;

		h = eth(f, t1, 1);
		n = ipv4_tcp(f + h, pl, 5, 0, 6);
		fwd = decode_flow_hash(f, (uint32_t)(h + n), DECODE_LINK_ETHERNET);
		memcpy(g, f, h + n);
		memcpy(g + h + 12, f + h + 16, 4);       /* swap the addresses */
		memcpy(g + h + 16, f + h + 12, 4);
		memcpy(g + h + 20, f + h + 22, 2);       /* and the ports */
		memcpy(g + h + 22, f + h + 20, 2);
		rev = decode_flow_hash(g, (uint32_t)(h + n), DECODE_LINK_ETHERNET);
		CHECK_EQ_U64(fwd, rev);
		n = ipv6_tcp(f + h, pl, NULL, 0, 6);
		put16(f + 12, 0x86dd);
		fwd = decode_flow_hash(f, (uint32_t)(h + n), DECODE_LINK_ETHERNET);
		memcpy(g, f, h + n);
		memcpy(g + h + 8, f + h + 24, 16);
		memcpy(g + h + 24, f + h + 8, 16);
		memcpy(g + h + 40, f + h + 42, 2);
		memcpy(g + h + 42, f + h + 40, 2);
		rev = decode_flow_hash(g, (uint32_t)(h + n), DECODE_LINK_ETHERNET);
		CHECK_EQ_U64(fwd, rev);
		put16(f + 12, 0x0800);
		for (unsigned i = 0; i < 64; i++) {
			bool dup = false;
			uint32_t x;

			n = ipv4_tcp(f + h, pl, 5, 0, 6);
			put16(f + h + 20, (uint16_t)(40000 + i));   /* client port */
			x = decode_flow_hash(f, (uint32_t)(h + n), DECODE_LINK_ETHERNET);
			for (unsigned k = 0; k < distinct; k++)
				dup |= seen[k] == x;
			if (!dup)
				seen[distinct++] = x;
			/* the top bits pick the worker: they must vary too */
		}
		CHECK(distinct >= 63);
		{
			unsigned top[4] = {0};

			for (unsigned k = 0; k < distinct; k++)
				top[seen[k] >> 30]++;
			for (unsigned k = 0; k < 4; k++)
				CHECK(top[k] >= 4);   /* 64 flows over 4 quarters, none nearly empty */
		}
		n = ipv4_tcp(f + h, pl, 5, 0, 17);
		CHECK_EQ_U64(decode_flow_hash(f, (uint32_t)(h + n), DECODE_LINK_ETHERNET), 0);
		CHECK_EQ_U64(decode_flow_hash(f, 10, DECODE_LINK_ETHERNET), 0);
		/* the fixed-offset path (untagged IPv4, no options) and
		 * decode_packet()'s (a VLAN tag, IP options, link padding,
		 * a cut capture) give one flow one hash */
		{
			uint16_t t2[] = {0x8100, 0x0800};
			size_t h2;
			uint32_t plain;

			n = ipv4_tcp(f + h, pl, 5, 0, 6);
			plain = decode_flow_hash(f, (uint32_t)(h + n), DECODE_LINK_ETHERNET);
			CHECK(plain != 0);
			memset(f + h + n, 0, 8);
			CHECK_EQ_U64(decode_flow_hash(f, (uint32_t)(h + n + 8), DECODE_LINK_ETHERNET), plain);
			CHECK_EQ_U64(decode_flow_hash(f, (uint32_t)(h + n - 5), DECODE_LINK_ETHERNET), plain);
			h2 = eth(g, t2, 2);
			n = ipv4_tcp(g + h2, pl, 5, 0, 6);
			CHECK_EQ_U64(decode_flow_hash(g, (uint32_t)(h2 + n), DECODE_LINK_ETHERNET), plain);
			n = ipv4_tcp(f + h, pl, 7, 0, 6);
			CHECK_EQ_U64(decode_flow_hash(f, (uint32_t)(h + n), DECODE_LINK_ETHERNET), plain);
			/* a fragment is not sorted by its ports, on either path */
			n = ipv4_tcp(f + h, pl, 5, 0x2000, 6);
			CHECK_EQ_U64(decode_flow_hash(f, (uint32_t)(h + n), DECODE_LINK_ETHERNET), 0);
		}
	}
	return check_done();
}
