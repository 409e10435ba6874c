/* Tests for common/cluster/statpb.c: byte-exact proto3 encoding of the Stat. */
#include "unit.h"

#include "cluster/statpb.h"

static void test_pod_only(void **state)
{
    (void)state;
    struct statpb s = {.pod_name = "pod-1"};
    uint8_t buf[64];
    size_t n = statpb_encode(&s, buf, sizeof buf);
    const uint8_t want[] = {0x0a, 0x05, 'p', 'o', 'd', '-', '1'};
    assert_int_equal(n, sizeof want);
    assert_memory_equal(buf, want, n);
}

static void test_fields_in_order_zero_omitted(void **state)
{
    (void)state;
    struct statpb s = {.pod_name = "p",
                       .average_concurrent_requests = 1.0,
                       .request_count = 1.0,
                       .process_uptime = 2.5};
    uint8_t buf[64];
    size_t n = statpb_encode(&s, buf, sizeof buf);
    const uint8_t want[] = {0x0a, 0x01, 'p', 0x11, 0, 0, 0, 0,    0,    0, 0xf0, 0x3f, /* 2: 1.0 */
                            0x21, 0,    0,   0,    0, 0, 0, 0xf0, 0x3f,                /* 4: 1.0 */
                            0x31, 0,    0,   0,    0, 0, 0, 0x04, 0x40};               /* 6: 2.5 */
    assert_int_equal(n, sizeof want);
    assert_memory_equal(buf, want, n);
    struct statpb back;
    char name[32];
    assert_null(statpb_decode(buf, n, &back, name, sizeof name));
    assert_string_equal(back.pod_name, "p");
    assert_float_equal(back.process_uptime, 2.5, 0);
    assert_int_equal(statpb_encode(&s, buf, 4), 0); /* too small */
    /* A field tag with a truncated length is not a Stat (compared by pointer). */
    static const uint8_t bad[] = {0x0a, 0x7f, 'x'};
    assert_ptr_equal(statpb_decode(bad, sizeof bad, &back, name, sizeof name),
                     statpb_err_malformed);
}

static void test_max_size_fits_scraper_limit(void **state)
{
    (void)state;
    char pod[254];
    memset(pod, 'x', 253);
    pod[253] = 0; /* a DNS-1123 name at its longest */
    struct statpb s = {pod, 1.1, 2.2, 3.3, 4.4, 5.5, 0};
    uint8_t buf[512];
    size_t n = statpb_encode(&s, buf, sizeof buf);
    assert_true(n > 0 && n <= 336);
}

/* The contract's worked example (§5.2): the poke for default/hello-00001
 * from pod activator-7d9f8-abcde, 67 bytes. */
static void test_wire_poke_matches_contract(void **state)
{
    (void)state;
    const uint8_t want[] = {0x0a, 0x41, 0x0a, 0x07, 'd', 'e',  'f', 'a', 'u',  'l',  't',  0x12,
                            0x0b, 'h',  'e',  'l',  'l', 'o',  '-', '0', '0',  '0',  '0',  '1',
                            0x1a, 0x29, 0x0a, 0x15, 'a', 'c',  't', 'i', 'v',  'a',  't',  'o',
                            'r',  '-',  '7',  'd',  '9', 'f',  '8', '-', 'a',  'b',  'c',  'd',
                            'e',  0x11, 0,    0,    0,   0,    0,   0,   0xf0, 0x3f, 0x21, 0,
                            0,    0,    0,    0,    0,   0xf0, 0x3f};
    struct statpb_wire m = {"default",
                            "hello-00001",
                            {.pod_name = "activator-7d9f8-abcde",
                             .average_concurrent_requests = 1,
                             .request_count = 1}};
    uint8_t buf[128];
    size_t n = statpb_encode_wire(&m, 1, buf, sizeof buf);
    assert_int_equal(n, 67);
    assert_int_equal(sizeof want, 67);
    assert_memory_equal(buf, want, 67);
    assert_int_equal(statpb_encode_wire(&m, 1, buf, 10), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pod_only),
        cmocka_unit_test(test_fields_in_order_zero_omitted),
        cmocka_unit_test(test_max_size_fits_scraper_limit),
        cmocka_unit_test(test_wire_poke_matches_contract),
    };
    return cmocka_run_group_tests_name("statpb", tests, NULL, NULL);
}
