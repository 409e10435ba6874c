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
        cmocka_unit_test(test_js_escape),
    };
    return cmocka_run_group_tests_name("forwarded", tests, NULL, NULL);
}
