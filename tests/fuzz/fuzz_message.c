/* libFuzzer harness for the message stage (engine/message.c, mime.c, html.c).
 *
 * The first input byte picks the limits (small ones, so caps and depth
 * limits are reached) and the piece sizes; the rest is the message, fed in
 * a few pieces of varying size with streaming callbacks installed, then
 * ended. message_validate() must hold after every feed and at the end, and
 * every accessor is read back. The decoders are also run directly on the
 * input.
 *
 * Build (from the repository root, with a meson build dir for bw-config.h):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I engine \
 *     -I BUILD tests/fuzz/fuzz_message.c engine/message.c engine/mime.c \
 *     engine/html.c engine/mem.c -o fuzz_message
 *   ./fuzz_message -max_total_time=60
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "html.h"
#include "message.h"
#include "mime.h"

static uint64_t sink_bytes;

static void on_header(void *u, const struct message_header *h)
{
	sink_bytes += h->name_len + h->decoded_len;
	if (h->name[h->name_len] != '\0')
		abort();
}

static void on_text(void *u, const struct message_part *part, enum message_view v,
		    const uint8_t *p, size_t n)
{
	if ((v == MESSAGE_VIEW_FULL) != (part == NULL) || n == 0)
		abort();
	sink_bytes += p[0] + p[n - 1];
}

static void on_uri(void *u, const struct message_part *part, const char *s, size_t n)
{
	if (n == 0)
		abort();
	sink_bytes += (uint8_t)s[0] + (uint8_t)s[n - 1];
}

static void on_part(void *u, const struct message_part *part)
{
	sink_bytes += part->index;
}

static const struct message_ops ops = {
	.on_header = on_header,
	.on_part_begin = on_part,
	.on_part_end = on_part,
	.on_text = on_text,
	.on_uri = on_uri,
};

static void check(const struct message *m)
{
	const char *why = NULL;

	if (message_validate(m, &why) != 0) {
		fprintf(stderr, "message_validate: %s\n", why);
		abort();
	}
}

static void sink(void *ctx, const uint8_t *p, size_t n)
{
	(void)ctx;
	sink_bytes += n ? p[0] : 0;
}

/* The building blocks on their own, on the raw input. */
static void fuzz_decoders(const uint8_t *data, size_t size)
{
	static uint8_t out[MIME_B64_OUT(4096) + MIME_QP_OUT(4096)];
	size_t n = size > 4096 ? 4096 : size;
	struct mime_b64 b;
	struct mime_qp q;
	struct mime_params mp;
	char dec[1024];
	int hard;
	static struct html h;

	mime_b64_init(&b);
	mime_b64_decode(&b, data, n, out);
	mime_b64_finish(&b, out);
	mime_qp_init(&q);
	mime_qp_decode(&q, data, n / 2, 0, out, &hard);
	mime_qp_decode(&q, data + n / 2, n - n / 2, 1, out, &hard);
	mime_qp_finish(&q, out);
	mime_decode_header((const char *)data, n, dec, sizeof(dec), NULL);
	mime_params_parse(&mp, (const char *)data, n);
	mime_params_filename(&mp, "filename", dec, sizeof(dec), NULL);
	mime_params_filename(&mp, "name", dec, sizeof(dec), NULL);
	html_init(&h, sink, sink, NULL);
	html_feed(&h, data, n);
	html_finish(&h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct message_limits lim;
	struct message *m;
	uint8_t sel;
	size_t off = 0, step;
	char anoms[512];

	if (size < 1)
		return 0;
	sel = data[0];
	data++;
	size--;
	message_limits_default(&lim);
	if (sel & 1) {
		lim.max_line = 80;
		lim.max_header_bytes = 200;
		lim.max_headers = 8;
		lim.max_header_store = 1024;
		lim.max_depth = 3;
		lim.max_parts = 6;
		lim.max_body = 512;
		lim.max_rawbody = 512;
		lim.max_uris = 4;
		lim.max_uri_len = 64;
	}
	if (sel & 2)
		lim.flags |= MESSAGE_F_NO_COPIES;
	m = message_new(&lim, (sel & 4) ? &ops : NULL, NULL);
	if (!m)
		return 0;
	step = 1 + (sel >> 3) * 7;
	while (off < size) {
		size_t k = size - off < step ? size - off : step;

		message_feed(m, data + off, k);
		check(m);
		off += k;
		step = step * 3 % 997 + 1;
	}
	message_end(m);
	check(m);

	for (uint32_t i = 0; i < message_header_count(m); i++) {
		const struct message_header *h = message_header_at(m, i);

		sink_bytes += strlen(h->name) + (message_header_next(m, h) != NULL);
	}
	for (int f = 0; f < MESSAGE_FIELD_MAX; f++) {
		const char *v = message_field(m, (enum message_field)f);

		sink_bytes += v ? strlen(v) : 0;
	}
	sink_bytes += message_header_value(m, "subject") != NULL;
	sink_bytes += message_first_received(m) != NULL;
	for (uint32_t i = 0; i < message_part_count(m); i++)
		sink_bytes += strlen(message_part_at(m, i)->name);
	for (uint32_t i = 0; message_attachment(m, i); i++)
		sink_bytes++;
	for (uint32_t i = 0; i < message_uri_count(m); i++) {
		size_t n;
		const char *u = message_uri_at(m, i, &n);

		if (u[n] != '\0')
			abort();
	}
	message_anomalies_format(message_anomalies(m), anoms, sizeof(anoms));
	message_anomalies_format(message_anomalies(m), anoms, 7);

	/* reuse after reset must behave like a fresh parser */
	if (sel & 8) {
		message_reset(m);
		message_feed(m, data, size);
		message_end(m);
		check(m);
	}
	message_free(m);
	fuzz_decoders(data, size);
	return 0;
}
