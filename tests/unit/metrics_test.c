/* Tests for common/telemetry/metrics.c: cumulative buckets per status code. */
#include "unit.h"

#include <event2/buffer.h>
#include <stdlib.h>

#include "telemetry/metrics.h"

static void test_histogram_render(void **state)
{
    (void)state;
    struct metrics_hist *h = malloc(sizeof *h);
    metrics_hist_init(h, "x_seconds", "help text");
    metrics_hist_observe(h, 200, 0.004);
    metrics_hist_observe(h, 200, 0.02);
    metrics_hist_observe(h, 200, 20);
    metrics_hist_observe(h, 503, 0.001);
    struct evbuffer *b = evbuffer_new();
    metrics_hist_render(h, "a=\"1\"", b);
    evbuffer_add(b, "", 1);
    const char *t = (const char *)evbuffer_pullup(b, -1);
    assert_non_null(strstr(t, "# TYPE x_seconds histogram\n"));
    assert_non_null(
        strstr(t, "x_seconds_bucket{a=\"1\",http_response_status_code=\"200\",le=\"0.005\"} 1\n"));
    assert_non_null(
        strstr(t, "x_seconds_bucket{a=\"1\",http_response_status_code=\"200\",le=\"0.025\"} 2\n"));
    assert_non_null(
        strstr(t, "x_seconds_bucket{a=\"1\",http_response_status_code=\"200\",le=\"10\"} 2\n"));
    assert_non_null(
        strstr(t, "x_seconds_bucket{a=\"1\",http_response_status_code=\"200\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(t, "x_seconds_count{a=\"1\",http_response_status_code=\"503\"} 1\n"));
    evbuffer_free(b);
    free(h);
    char esc[32];
    metrics_label_escape(esc, sizeof esc, "a\"b\\c\n");
    assert_string_equal(esc, "a\\\"b\\\\c\\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_histogram_render)};
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
