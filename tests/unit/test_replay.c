/* unit: the address rewriting of --replay (replay_frame_shift,
 * replay_stride).
 *
 * Frames of every link type the engine decodes are built here with
 * checksums of the test's own, moved by a few deltas, and checked: the
 * addresses moved by exactly the delta (IPv4: the whole address; IPv6: its
 * first 32 bits), nothing else changed but the checksums, a right checksum
 * is still right (independent recompute, and decode_packet() counts no bad
 * checksum) and a wrong one is still wrong by the same amount. No DPDK EAL.
 */
#include <stdlib.h>
#include <string.h>

#include "capture.h"
#include "check.h"
#include "decode.h"
#include "replay.h"

static uint32_t csum_add(uint32_t s, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	return s;
}

static uint16_t csum_fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }

/* The transport checksum a sender would write for l4[0..n) over ip. */
static uint16_t l4_csum(const uint8_t *ip, int ver, uint8_t proto, const uint8_t *l4, size_t n)
{
	uint32_t s = 0;

	if (ver == 4) {
		s = csum_add(s, ip + 12, 8);
	} else {
		s = csum_add(s, ip + 8, 32);
		s += (uint32_t)(n >> 16);
	}
	s += proto;
	s += (uint32_t)(n & 0xffff);
	return csum_fold(csum_add(s, l4, n));
}

/* Builds an IP packet at p: IPv4 (ver 4) or IPv6 with optional hop-by-hop
 * options (hbh), carrying proto (6 TCP, 17 UDP, 58 ICMPv6) with a payload.
 * Checksums right. Returns the length. */
static size_t ip_packet(uint8_t *p, int ver, uint8_t proto, bool hbh, const char *payload)
{
	size_t pl = strlen(payload), l4len, off;
	uint8_t *l4;

	l4len = (proto == 6 ? 20 : proto == 17 ? 8 : 8) + pl;
	if (ver == 4) {
		memset(p, 0, 20);
		p[0] = 0x45;
		put16(p + 2, (uint16_t)(20 + l4len));
		p[8] = 64;
		p[9] = proto;
		memcpy(p + 12, "\x0a\x0a\x01\x04", 4);          /* 10.10.1.4 */
		memcpy(p + 16, "\x4a\x35\x8c\x99", 4);          /* 74.53.140.153 */
		put16(p + 10, csum_fold(csum_add(0, p, 20)));
		off = 20;
	} else {
		static const uint8_t src[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
		static const uint8_t dst[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};

		memset(p, 0, 40);
		p[0] = 0x60;
		put16(p + 4, (uint16_t)(l4len + (hbh ? 8 : 0)));
		p[6] = hbh ? 0 : proto;
		p[7] = 64;
		memcpy(p + 8, src, 16);
		memcpy(p + 24, dst, 16);
		off = 40;
		if (hbh) {
			memset(p + 40, 0, 8);
			p[40] = proto;
			p[42] = 1;   /* PadN */
			p[43] = 4;
			off = 48;
		}
	}
	l4 = p + off;
	memset(l4, 0, l4len - pl);
	if (proto == 6) {
		put16(l4, 40001);
		put16(l4 + 2, 25);
		l4[12] = 5 << 4;
		l4[13] = 0x18;
		memcpy(l4 + 20, payload, pl);
		put16(l4 + 16, l4_csum(p, ver, proto, l4, l4len));
	} else if (proto == 17) {
		put16(l4, 5353);
		put16(l4 + 2, 53);
		put16(l4 + 4, (uint16_t)l4len);
		memcpy(l4 + 8, payload, pl);
		put16(l4 + 6, l4_csum(p, ver, proto, l4, l4len));
	} else {
		l4[0] = 128;   /* echo request */
		memcpy(l4 + 8, payload, pl);
		put16(l4 + 2, l4_csum(p, ver, proto, l4, l4len));
	}
	return off + l4len;
}

/* Link header for link type `link` and IP version ver at f; returns its length. */
static size_t link_hdr(uint8_t *f, int link, int ver, int vlans)
{
	uint16_t et = ver == 4 ? 0x0800 : 0x86dd;
	size_t n = 0;

	switch (link) {
	case DECODE_LINK_ETHERNET:
		memset(f, 0x11, 12);
		n = 12;
		for (int v = 0; v < vlans; v++) {
			put16(f + n, v ? 0x8100 : 0x88a8);
			put16(f + n + 2, 100);
			n += 4;
		}
		put16(f + n, et);
		return n + 2;
	case DECODE_LINK_NULL:
		f[0] = ver == 4 ? 2 : 30;   /* little-endian host order */
		f[1] = f[2] = f[3] = 0;
		return 4;
	case DECODE_LINK_LOOP:
		f[0] = f[1] = f[2] = 0;
		f[3] = ver == 4 ? 2 : 24;
		return 4;
	case DECODE_LINK_SLL:
		memset(f, 0, 16);
		put16(f + 14, et);
		return 16;
	case DECODE_LINK_SLL2:
		memset(f, 0, 20);
		put16(f, et);
		return 20;
	default:
		return 0;
	}
}

/* Where the IP header is in frame (built by link_hdr). */
static size_t ip_off(int link, int vlans)
{
	switch (link) {
	case DECODE_LINK_ETHERNET: return 14 + 4 * (size_t)vlans;
	case DECODE_LINK_NULL: case DECODE_LINK_LOOP: return 4;
	case DECODE_LINK_SLL: return 16;
	case DECODE_LINK_SLL2: return 20;
	default: return 0;
	}
}

/* The checksum field of the transport header of an IP packet built above. */
static uint8_t *l4_csum_field(uint8_t *ip, int ver, uint8_t proto, bool hbh)
{
	uint8_t *l4 = ip + (ver == 4 ? 20 : hbh ? 48 : 40);

	return l4 + (proto == 6 ? 16 : proto == 17 ? 6 : 2);
}

static bool l4_ok(const uint8_t *ip, int ver, uint8_t proto, bool hbh, size_t iplen)
{
	size_t off = ver == 4 ? 20 : hbh ? 48 : 40;
	uint32_t s;

	if (ver == 4)
		s = csum_add(0, ip + 12, 8);
	else
		s = csum_add(0, ip + 8, 32) + (uint32_t)((iplen - off) >> 16);
	s += proto;
	s += (uint32_t)((iplen - off) & 0xffff);
	return csum_fold(csum_add(s, ip + off, iplen - off)) == 0;
}

static void case_frame(int link, int vlans, int ver, uint8_t proto, bool hbh, bool bad_l4,
		       bool bad_ip, uint32_t delta)
{
	uint8_t f[512], orig[512], *ip;
	size_t lh = link_hdr(f, link, ver, vlans), len;
	struct decode_opts o = { .verify_checksums = true };
	struct decode_stats st;
	struct pkt p;
	uint32_t s0[4], d0[4];

	CHECK_EQ_U64(lh, ip_off(link, vlans));
	len = lh + ip_packet(f + lh, ver, proto, hbh, "EHLO client.example\r\n");
	ip = f + lh;
	if (bad_l4)
		put16(l4_csum_field(ip, ver, proto, hbh), get16(l4_csum_field(ip, ver, proto, hbh)) ^ 0x1234);
	if (bad_ip && ver == 4)
		put16(ip + 10, get16(ip + 10) ^ 0x0f0f);
	memcpy(orig, f, len);
	for (int k = 0; k < 4; k++) {
		s0[k] = get32(ip + (ver == 4 ? 12 : 8) + 4 * k);
		d0[k] = get32(ip + (ver == 4 ? 16 : 24) + 4 * k);
	}

	CHECK_EQ_U64(replay_frame_shift(f, (uint32_t)len, link, delta), ver);

	/* the addresses moved, by delta, and nothing else but checksums */
	if (ver == 4) {
		CHECK_EQ_U64(get32(ip + 12), s0[0] + delta);
		CHECK_EQ_U64(get32(ip + 16), d0[0] + delta);
	} else {
		CHECK_EQ_U64(get32(ip + 8), s0[0] + delta);
		CHECK_EQ_U64(get32(ip + 24), d0[0] + delta);
		for (int k = 1; k < 4; k++) {
			CHECK_EQ_U64(get32(ip + 8 + 4 * k), s0[k]);
			CHECK_EQ_U64(get32(ip + 24 + 4 * k), d0[k]);
		}
	}
	{
		size_t diff = 0;
		size_t csl4 = (size_t)(l4_csum_field(ip, ver, proto, hbh) - f);

		for (size_t i = 0; i < len; i++) {
			bool addr = ver == 4 ? (i >= lh + 12 && i < lh + 20)
					     : ((i >= lh + 8 && i < lh + 12) || (i >= lh + 24 && i < lh + 28));
			bool csum = i == csl4 || i == csl4 + 1 ||
				    (ver == 4 && (i == lh + 10 || i == lh + 11));

			if (f[i] != orig[i] && !addr && !csum)
				diff++;
		}
		CHECK_EQ_U64(diff, 0);
	}
	/* checksums: right ones right, wrong ones wrong */
	if (ver == 4)
		CHECK(((csum_fold(csum_add(0, ip, 20)) == 0)) == !bad_ip);
	CHECK(l4_ok(ip, ver, proto, hbh, len - lh) == !bad_l4);
	if (proto == 6) {
		memset(&st, 0, sizeof(st));
		CHECK_EQ_U64(decode_packet(f, (uint32_t)len, link, &o, &p, &st), DECODE_OK);
		CHECK_EQ_U64(st.anomalies[DECODE_TCP_BAD_CSUM], bad_l4);
		CHECK_EQ_U64(st.anomalies[DECODE_IPV4_BAD_CSUM], bad_ip && ver == 4);
	}
	/* and back: the frame is the original again */
	replay_frame_shift(f, (uint32_t)len, link, (uint32_t)-delta);
	CHECK_MEM(f, len, orig, len);
}

static void test_frames(void)
{
	static const int links[] = { DECODE_LINK_ETHERNET, DECODE_LINK_NULL, DECODE_LINK_LOOP,
				     DECODE_LINK_SLL, DECODE_LINK_SLL2, DECODE_LINK_RAW };
	static const uint32_t deltas[] = { 1u << 24, 3u << 24, (1u << 24) + 1, 0xff000000u, 0x00ffffffu };

	for (size_t l = 0; l < sizeof(links) / sizeof(links[0]); l++)
		for (int ver = 4; ver <= 6; ver += 2)
			for (size_t d = 0; d < sizeof(deltas) / sizeof(deltas[0]); d++) {
				case_frame(links[l], 0, ver, 6, false, false, false, deltas[d]);
				case_frame(links[l], 0, ver, 6, false, true, false, deltas[d]);
				case_frame(links[l], 0, ver, 6, false, false, true, deltas[d]);
				case_frame(links[l], 0, ver, 17, false, false, false, deltas[d]);
				if (ver == 6) {
					case_frame(links[l], 0, ver, 6, true, false, false, deltas[d]);
					case_frame(links[l], 0, ver, 58, false, false, false, deltas[d]);
				}
			}
	for (int vlans = 1; vlans <= 2; vlans++) {
		case_frame(DECODE_LINK_ETHERNET, vlans, 4, 6, false, false, false, 1u << 24);
		case_frame(DECODE_LINK_ETHERNET, vlans, 6, 6, false, true, false, 1u << 24);
	}
}

/* A UDP checksum of 0 (none) stays 0; a non-first fragment has only its
 * IPv4 header fixed; a frame that is not IP is left alone. */
static void test_special(void)
{
	uint8_t f[256], orig[256];
	size_t len;

	len = 14 + ip_packet(f + link_hdr(f, DECODE_LINK_ETHERNET, 4, 0), 4, 17, false, "x");
	put16(f + 14 + 20 + 6, 0);
	CHECK_EQ_U64(replay_frame_shift(f, (uint32_t)len, DECODE_LINK_ETHERNET, 1u << 24), 4);
	CHECK_EQ_U64(get16(f + 14 + 20 + 6), 0);
	CHECK_EQ_U64(csum_fold(csum_add(0, f + 14, 20)), 0);

	len = 14 + ip_packet(f + link_hdr(f, DECODE_LINK_ETHERNET, 4, 0), 4, 6, false, "data");
	put16(f + 14 + 6, 0x00b9);   /* fragment offset 185 * 8 */
	put16(f + 14 + 10, 0);
	put16(f + 14 + 10, csum_fold(csum_add(0, f + 14, 20)));
	memcpy(orig, f, len);
	CHECK_EQ_U64(replay_frame_shift(f, (uint32_t)len, DECODE_LINK_ETHERNET, 1u << 24), 4);
	CHECK_EQ_U64(csum_fold(csum_add(0, f + 14, 20)), 0);
	CHECK_MEM(f + 34, len - 34, orig + 34, len - 34);   /* no TCP header there: untouched */

	memset(f, 0x22, 60);
	put16(f + 12, 0x0806);   /* ARP */
	memcpy(orig, f, 60);
	CHECK_EQ_U64(replay_frame_shift(f, 60, DECODE_LINK_ETHERNET, 1u << 24), 0);
	CHECK_MEM(f, 60, orig, 60);

	/* truncated: shorter than an IPv4 header */
	len = 14 + ip_packet(f + link_hdr(f, DECODE_LINK_ETHERNET, 4, 0), 4, 6, false, "x");
	memcpy(orig, f, len);
	CHECK_EQ_U64(replay_frame_shift(f, 14 + 19, DECODE_LINK_ETHERNET, 1u << 24), 0);
	CHECK_MEM(f, len, orig, len);
	CHECK_EQ_U64(replay_frame_shift(f, 14 + 10, DECODE_LINK_ETHERNET, 1u << 24), 0);
	CHECK_EQ_U64(replay_frame_shift(f, 5, DECODE_LINK_ETHERNET, 1u << 24), 0);
}

/* The stride keeps every pass's addresses apart. */
static void test_stride(void)
{
	static uint8_t bufs[3][128];
	struct replay_frame fr[3];
	struct replay_store st;
	uint32_t s = 0;
	static const uint8_t addrs[3][8] = {
		{10, 0, 0, 1, 74, 53, 140, 153},
		{10, 0, 0, 2, 74, 53, 140, 153},
		{11, 0, 0, 1, 74, 53, 140, 153},   /* 10.0.0.1 + 2^24 */
	};

	memset(&st, 0, sizeof(st));
	st.f = fr;
	for (int i = 0; i < 3; i++) {
		size_t len = ip_packet(bufs[i], 4, 6, false, "x");

		memcpy(bufs[i] + 12, addrs[i], 8);
		fr[i].data = bufs[i];
		fr[i].len = fr[i].seg_len = (uint32_t)len;
	}
	st.n = 2;
	CHECK_EQ_U64(replay_stride(&st, DECODE_LINK_RAW, 1, &s), 0);
	CHECK_EQ_U64(s, 1u << 24);
	CHECK_EQ_U64(replay_stride(&st, DECODE_LINK_RAW, 3, &s), 0);
	CHECK_EQ_U64(s, 1u << 24);
	/* 256 passes of +1.0.0.0 come back to pass 0's addresses */
	CHECK_EQ_U64(replay_stride(&st, DECODE_LINK_RAW, 257, &s), 0);
	CHECK(s != 1u << 24);
	st.n = 3;   /* now 11.0.0.1 is pass 1's 10.0.0.1 */
	CHECK_EQ_U64(replay_stride(&st, DECODE_LINK_RAW, 2, &s), 0);
	CHECK(s != 1u << 24);
	for (uint32_t j = 1; j < 2; j++)
		for (int a = 0; a < 3; a++)
			for (int b = 0; b < 3; b++) {
				CHECK(get32(addrs[a]) + j * s != get32(addrs[b]));
				CHECK(get32(addrs[a]) + j * s != get32(addrs[b] + 4));
				CHECK(get32(addrs[a] + 4) + j * s != get32(addrs[b]));
			}
}

int main(void)
{
	test_frames();
	test_special();
	test_stride();
	return check_done();
}
