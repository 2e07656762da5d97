/* unit: the accounting allocator wrapper and the JSON writer. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "json.h"
#include "mem.h"

int main(void)
{
	void *p, *q;
	char *s;
	struct json j;

	p = mem_alloc(MEM_FLOW, 100);
	CHECK(p != NULL);
	CHECK(mem_in_use(MEM_FLOW) >= 100);
	q = mem_realloc(MEM_FLOW, p, 5000);
	CHECK(q != NULL);
	CHECK(mem_in_use(MEM_FLOW) >= 5000);
	mem_free(MEM_FLOW, q);
	CHECK_EQ_U64(mem_in_use(MEM_FLOW), 0);
	CHECK(mem_peak(MEM_FLOW) >= 5000);
	s = mem_strndup(MEM_MISC, "hello world", 5);
	CHECK_STR(s, "hello");
	mem_free(MEM_MISC, s);
	CHECK_EQ_U64(mem_in_use_total(), 0);
	CHECK(mem_allocator_name()[0] != '\0');
	fprintf(stderr, "allocator: %s\n", mem_allocator_name());

	/* mem_grow: doubling from first, clamped to max, refusing past it */
	{
		uint32_t *arr = NULL, cap = 0;

		CHECK(mem_grow(MEM_MISC, (void **)&arr, &cap, 1, sizeof(*arr), 4, 10) == 1);
		CHECK_EQ_U64(cap, 4);
		CHECK(mem_grow(MEM_MISC, (void **)&arr, &cap, 4, sizeof(*arr), 4, 10) == 0);
		CHECK(mem_grow(MEM_MISC, (void **)&arr, &cap, 5, sizeof(*arr), 4, 10) == 1);
		CHECK_EQ_U64(cap, 8);
		CHECK(mem_grow(MEM_MISC, (void **)&arr, &cap, 9, sizeof(*arr), 4, 10) == 1);
		CHECK_EQ_U64(cap, 10);   /* 16 clamped to max */
		arr[9] = 7;
		CHECK(mem_grow(MEM_MISC, (void **)&arr, &cap, 11, sizeof(*arr), 4, 10) == -1);
		CHECK(cap == 10 && arr[9] == 7);   /* untouched on refusal */
		CHECK(mem_grow(MEM_MISC, (void **)&arr, &cap, 100, sizeof(*arr), 4, 0) == 1);
		CHECK_EQ_U64(cap, 160);
		mem_free(MEM_MISC, arr);
		CHECK_EQ_U64(mem_in_use_total(), 0);
	}

	json_init(&j);
	json_begin(&j);
	json_kv_cstr(&j, "a", "x\"y\\z\n\t\x01");
	json_kv_u64(&j, "n", 18446744073709551615ull);
	json_kv_bool(&j, "b", false);
	json_key(&j, "l");
	json_open_array(&j);
	json_cstr(&j, "p");
	json_u64(&j, 2);
	json_close_array(&j);
	json_kv_cstr(&j, "null", NULL);
	json_kv_str(&j, "bad", "\xff\xc3\xa9\xe2\x82", 5);   /* invalid, é, truncated */
	json_kv_ts(&j, "ts", 1254722767529046000ull);
	json_end(&j);
	{
		static const char want[] = "{\"a\":\"x\\\"y\\\\z\\n\\t\\u0001\",\"n\":18446744073709551615,\"b\":false,"
		  "\"l\":[\"p\",2],\"null\":null,\"bad\":\"\xef\xbf\xbd\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\","
		  "\"ts\":\"2009-10-05T06:06:07.529046Z\"}\n";

		CHECK_MEM(j.buf, j.len, want, sizeof(want) - 1);
	}
	json_free(&j);
	CHECK_EQ_U64(mem_in_use_total(), 0);
	return check_done();
}
