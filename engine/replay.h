/* replay: a capture held in memory and run over many times (--replay N).
 *
 * The capture is received once through the port (net_pcap, as a normal run
 * receives it) into mbufs that are kept; then the workers run over the held
 * frames as many passes as asked. Between passes every IPv4 and IPv6
 * address is moved (replay_shift), and timestamps are shifted by more than
 * the capture's span plus the longest track window, so each pass is new
 * flows and new storm keys, and starts with the previous pass's windows
 * expired: every pass is the same work. Rewriting happens between passes,
 * outside the timed loop. Frames are found with decode's own link parser
 * (decode_link), so replay rewrites exactly the frames decode reads.
 */
#ifndef BW_REPLAY_H
#define BW_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct capture;
struct rte_mbuf;
struct run_info;
struct workers;

#define REPLAY_MAX_PASSES 100000
#define REPLAY_MEM_DEFAULT (2ull << 30)

/* What a capture file holds, read with libpcap before the EAL starts, to
 * size the mbuf pool. */
struct replay_file_info {
	uint64_t frames;
	uint64_t bytes;              /* captured bytes (caplen) */
	uint32_t max_caplen;
	uint64_t mbufs_2k;           /* mbufs needed with 2048-byte data rooms */
};

int replay_file_scan(const char *path, struct replay_file_info *fi,
		     char *err, size_t errlen);

/* The mbuf data room (headroom included) and mbuf count that hold the whole
 * capture fi with one mbuf per frame when frames are at most 2 KiB, and
 * the pool memory that takes (mbufs, mempool headers, the frame index). */
void replay_plan(const struct replay_file_info *fi, uint16_t *data_room,
		 uint64_t *mbufs, uint64_t *mem_bytes);

struct replay_frame {
	uint8_t *data;               /* first segment's bytes (in the mbuf) */
	uint32_t len;                /* frame length (all segments) */
	uint32_t seg_len;            /* bytes in the first segment */
	uint64_t ts_ns;              /* capture time, as capture_ts_ns() gives it */
	struct rte_mbuf *m;          /* owner; m->nb_segs > 1 for long frames */
};

struct replay_store {
	struct replay_frame *f;
	uint64_t n;                  /* frames held */
	uint64_t bytes;              /* frame bytes */
	uint64_t mbufs;              /* mbufs held (segments) */
	uint64_t pool_bytes;         /* the pool's memory */
	uint64_t ts_min, ts_max;     /* capture time span */
};

/* Receives the whole capture of a CAPTURE_PCAP port into st; every mbuf is
 * kept. expect_frames is replay_file_scan()'s count: fewer frames (the pool
 * ran dry) is an error. Returns 0, or -1 with a one-line reason in err. */
int replay_load(struct capture *c, struct replay_store *st, uint64_t expect_frames,
		char *err, size_t errlen);

/* Gives the mbufs back and frees the index. */
void replay_store_free(struct replay_store *st);

/* The per-pass address step: the value added, as a 32-bit number, to every
 * IPv4 address and to the first 32 bits of every IPv6 address, once per
 * pass (2^24: the first byte +1, when no two passes can then share an
 * address; otherwise the first step from 2^24 + 1 on that keeps all
 * `passes` passes' addresses apart). Returns 0, or -1 when none is found. */
int replay_stride(const struct replay_store *st, int linktype, unsigned passes,
		  uint32_t *stride);

/* Adds delta to the addresses of every frame (see above), in place, fixing
 * the IPv4 header checksum and the TCP, UDP and ICMPv6 checksums
 * incrementally (RFC 1624): a checksum that was right stays right, a wrong
 * one stays wrong. */
void replay_shift(struct replay_store *st, int linktype, uint32_t delta);

/* The same on one frame of len bytes. Returns the IP version rewritten (4
 * or 6), or 0 when the frame is not IP. Exposed for tests. */
int replay_frame_shift(uint8_t *frame, uint32_t len, int linktype, uint32_t delta);

/* A replay run: the capture held and what the passes took. */
struct replay {
	unsigned passes;             /* 0: not a replay */
	uint64_t mem_cap;            /* refuse when holding the capture takes more */
	const char *path;
	struct replay_file_info fi;
	struct replay_store st;
	uint32_t stride;
	uint64_t shift_ns;
	double load_s, rewrite_s;
	double *pass_s;              /* each pass's packet loop time */
	double cpu_s;                /* thread CPU time of the passes */
};

/* Before the EAL: reads path's frames and plans a pool that holds them all
 * (*nb_mbufs, *data_room for capture_open). Returns 0, or -1 with the
 * reason in err (the capture does not fit in rp->mem_cap, cannot be read,
 * out of memory). */
int replay_prepare(struct replay *rp, const char *path, unsigned *nb_mbufs,
		   uint16_t *data_room, char *err, size_t errlen);

/* Once the port is up: receives the capture into memory and picks the
 * address step and the time shift (the capture's span + 1 s + the longest
 * track window, max_window_ns). Returns 0, or -1 with the reason in err. */
int replay_hold(struct replay *rp, struct capture *c, int linktype, uint64_t max_window_ns,
		char *err, size_t errlen);

/* Runs rp->passes passes of the held frames through the workers. Pass k
 * sees every address moved by k strides (rewritten before the pass starts,
 * outside its time) and every timestamp shifted by k * shift_ns; each pass
 * ends when every worker is done with it, and its time goes to rp->pass_s.
 * between(user) runs before every burst (a rule reload); when it returns
 * false the run stops. progress: a line on stderr now and then. */
void replay_run(struct replay *rp, struct workers *ws, int linktype,
		bool (*between)(void *user), void *user, bool stage_times, bool progress);

/* The replay's figures for the summary (the passes' times join engine_s). */
void replay_run_info(const struct replay *rp, struct run_info *ri);

/* Frees what rp holds (the mbufs, the index, the pass times). */
void replay_free(struct replay *rp);

#endif
