/* Tests for common/cluster/stats.c with Knative's time-weighted arithmetic. */
#include "unit.h"

#include "cluster/stats.h"

#define S 1000000000ull

static void test_time_weighted_average(void **state)
{
    (void)state;
    struct stats s;
    stats_init(&s, 0);
    stats_in(&s, 0, false);    /* 1 for the first half second */
    stats_in(&s, S / 2, true); /* 2 for the second half, one proxied */
    struct stats_report r = stats_report(&s, S);
    assert_float_equal(r.average_concurrency, 1.5, 1e-9);
    assert_float_equal(r.average_proxied_concurrency, 0.5, 1e-9);
    assert_float_equal(r.request_count, 2, 0);
    assert_float_equal(r.proxied_request_count, 1, 0);
    /* Window reset; concurrency carries over: 2 for the whole next second. */
    r = stats_report(&s, 2 * S);
    assert_float_equal(r.average_concurrency, 2.0, 1e-9);
    assert_float_equal(r.request_count, 0, 0);
    stats_out(&s, 2 * S + S / 4, true);
    stats_out(&s, 2 * S + S / 2, false);
    r = stats_report(&s, 3 * S);
    /* 2 for 0.25 s, 1 for 0.25 s, 0 for 0.5 s */
    assert_float_equal(r.average_concurrency, 0.75, 1e-9);
    assert_float_equal(r.average_proxied_concurrency, 0.25, 1e-9);
}

static void test_idle_window_is_zero(void **state)
{
    (void)state;
    struct stats s;
    stats_init(&s, 5 * S);
    struct stats_report r = stats_report(&s, 6 * S);
    assert_float_equal(r.average_concurrency, 0, 0);
    assert_float_equal(r.request_count, 0, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_weighted_average),
        cmocka_unit_test(test_idle_window_is_zero),
    };
    return cmocka_run_group_tests_name("stats", tests, NULL, NULL);
}
