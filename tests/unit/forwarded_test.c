/* Tests for common/http/forwarded.c: Knative's Forwarded shim and Go's JSEscape. */
#include "unit.h"

#include "http/forwarded.h"

static const char *fwd(const char *xff, const char *xfh, const char *xfp)
{
    static char buf[256];
    size_t n = forwarded_build(buf, sizeof buf, xff, xff ? strlen(xff) : 0, xfh,
                               xfh ? strlen(xfh) : 0, xfp, xfp ? strlen(xfp) : 0);
    return n ? buf : "";
}

static void test_forwarded(void **state)
{
    (void)state;
    assert_string_equal(fwd("1.2.3.4, 5.6.7.8", NULL, "https"),
                        "for=1.2.3.4;proto=https, for=5.6.7.8");
    assert_string_equal(fwd("1.2.3.4", "example.com", "http"),
                        "for=1.2.3.4;host=example.com;proto=http");
    assert_string_equal(fwd("2001:db8::1", NULL, NULL), "for=\"[2001:db8::1]\"");
    assert_string_equal(fwd(NULL, "h", NULL), "host=h");
    assert_string_equal(fwd(NULL, NULL, NULL), "");
}

/* forwarded_bound is enough for any input: the worst shapes are many tiny
 * elements and IPv6 nodes, which gain the most bytes each. */
static void test_forwarded_bound(void **state)
{
    (void)state;
    static const char *const xffs[] = {
        NULL,
        "1.2.3.4",
        "1.2.3.4, 5.6.7.8",
        "a,b,c,d,e,f,g,h",
        ":,:,:,:,:",
        "::,::,::",
        "2001:db8::1, 2001:db8::2",
        ",,,,",
        " , a ,  b ",
        "[::1]",
        "\"[::1]\"",
        "",
        "x",
    };
    static const char *const hosts[] = {NULL, "", "h", "example.com"};
    static const char *const protos[] = {NULL, "http", "https"};
    for (size_t i = 0; i < sizeof xffs / sizeof *xffs; i++)
        for (size_t j = 0; j < sizeof hosts / sizeof *hosts; j++)
            for (size_t k = 0; k < sizeof protos / sizeof *protos; k++) {
                const char *x = xffs[i], *h = hosts[j], *p = protos[k];
                size_t xl = x ? strlen(x) : 0, hl = h ? strlen(h) : 0, pl = p ? strlen(p) : 0;
                char big[512], exact[512];
                size_t want = forwarded_build(big, sizeof big, x, xl, h, hl, p, pl);
                size_t cap = forwarded_bound(x, xl, hl, pl);
                assert_true(cap <= sizeof exact);
                size_t got = forwarded_build(exact, cap, x, xl, h, hl, p, pl);
                assert_int_equal(got, want);
                if (want)
                    assert_memory_equal(exact, big, want + 1);
            }
}

static void test_js_escape(void **state)
{
    (void)state;
    char buf[128];
    js_escape(buf, sizeof buf, "a<b>&='\"\\\n", 10);
    assert_string_equal(buf, "a\\u003Cb\\u003E\\u0026\\u003D\\'\\\"\\\\\\u000A");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forwarded),
        cmocka_unit_test(test_forwarded_bound),
        cmocka_unit_test(test_js_escape),
    };
    return cmocka_run_group_tests_name("forwarded", tests, NULL, NULL);
}
