/* Tests for common/http/http_head.c. */
#include "unit.h"

#include "http/http_head.h"

static void add(struct http_head *h, const char *name, const char *value)
{
    struct http_header *hd = http_head_add(h);
    hd->name.off = h->len;
    hd->name.len = (uint32_t)strlen(name);
    http_head_append(h, name, strlen(name), 1 << 20);
    hd->value.off = h->len;
    hd->value.len = (uint32_t)strlen(value);
    http_head_append(h, value, strlen(value), 1 << 20);
    if (h->connection_idx < 0 && http_header_is(h, hd, "connection"))
        h->connection_idx = (int16_t)(h->nheaders - 1); /* as the parser records it */
}

static void test_lookup_and_hop(void **state)
{
    (void)state;
    struct http_head *h = http_head_acquire();
    add(h, "Connection", "keep-alive, X-Custom");
    add(h, "X-Custom", "1");
    add(h, "X-Other", "2");
    add(h, "Keep-Alive", "timeout=5");
    add(h, "TE", "trailers");
    size_t len;
    assert_non_null(http_head_get(h, "x-other", &len));
    assert_int_equal(len, 1);
    assert_null(http_head_get(h, "missing", &len));
    assert_true(http_head_is_hop(h, &h->hdr[0]));
    assert_true(http_head_is_hop(h, &h->hdr[1])); /* named by Connection */
    assert_false(http_head_is_hop(h, &h->hdr[2]));
    assert_true(http_head_is_hop(h, &h->hdr[3]));
    assert_true(http_head_is_hop(h, &h->hdr[4]));
    http_head_release(h);
}

static void test_token_list(void **state)
{
    (void)state;
    const char *v = " gzip , Chunked,x";
    assert_true(http_token_list_has(v, strlen(v), "chunked"));
    assert_true(http_token_list_has(v, strlen(v), "x"));
    assert_false(http_token_list_has(v, strlen(v), "chunk"));
    assert_false(http_token_list_has("", 0, "x"));
}

static void test_arena_limit_and_pool(void **state)
{
    (void)state;
    struct http_head *h = http_head_acquire();
    char big[5000];
    memset(big, 'a', sizeof big);
    assert_true(http_head_append(h, big, sizeof big, 10000)); /* grows past the initial arena */
    assert_false(http_head_append(h, big, sizeof big, 9999));
    http_head_release(h);
    struct http_head *h2 = http_head_acquire();
    assert_int_equal(h2->len, 0);
    assert_int_equal(h2->nheaders, 0);
    http_head_release(h2);
    assert_string_equal(http_status_text(504), "Gateway Timeout");
    assert_string_equal(http_status_text(431), "Request Header Fields Too Large");
}

/* The name compare every per-header loop uses: case folds for letters only,
 * and a byte that is one OR away from '-', ':' or a digit does not match. */
static void test_name_eq(void **state)
{
    (void)state;
    assert_true(http_name_eq("K-Network-Probe", "k-network-probe", 15));
    assert_true(http_name_eq("X-FORWARDED-FOR", "x-forwarded-for", 15));
    assert_true(http_name_eq(":authority", ":authority", 10));
    assert_true(http_name_eq("TE", "te", 2));
    assert_false(http_name_eq("k\rnetwork", "k-network", 9)); /* '\r' | 0x20 is '-' */
    assert_false(http_name_eq("\x1a"
                              "authority",
                              ":authority", 10));     /* 0x1a | 0x20 is ':' */
    assert_false(http_name_eq("x-b\x13", "x-b3", 4)); /* 0x13 | 0x20 is '3' */
    assert_false(http_name_eq("hosu", "host", 4));
    assert_true(http_name_eq("anything", "", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_and_hop),
        cmocka_unit_test(test_token_list),
        cmocka_unit_test(test_arena_limit_and_pool),
        cmocka_unit_test(test_name_eq),
    };
    int r = cmocka_run_group_tests_name("http_head", tests, NULL, NULL);
    http_head_pool_drain();
    return r;
}
