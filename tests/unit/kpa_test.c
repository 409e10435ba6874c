/* kpa_test.c — the KPA decision (spec §8.2, §8.3) on worked numbers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../../autoscaler/kpa.h"

static void feed(struct kpa *k, int from, int to, double v)
{
    for (int t = from; t < to; t++)
        kpa_record(k, t + 0.5, v);
}

static void test_defaults(void **state)
{
    (void)state;
    struct kpa_config c;
    kpa_config_defaults(&c, 10);
    assert_true(c.target == 7.0); /* 10 x 70% */
    kpa_config_defaults(&c, 0);
    assert_true(c.target == 70.0); /* 100 x 70% */
    assert_int_equal(c.stable_window, 60);
    assert_int_equal(c.panic_window, 6);
    assert_true(c.target_burst_capacity == 211);
}

static void test_stable_then_panic_then_hold(void **state)
{
    (void)state;
    struct kpa_config c;
    kpa_config_defaults(&c, 10);
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    assert_int_equal(kpa_decide(&k, 1000, 0, true).desired, -1); /* no data yet */
    feed(&k, 1000, 1060, 14);
    struct kpa_decision d = kpa_decide(&k, 1059.9, 2, true);
    assert_true(d.stable == 14 && d.panic == 14);
    assert_int_equal(d.desired, 2);
    assert_false(d.panicking);
    /* A burst: 70 over the 6 s panic window -> 10 pods, 5x the ready 2: panic. */
    feed(&k, 1060, 1066, 70);
    d = kpa_decide(&k, 1065.9, 2, true);
    assert_true(d.panicking);
    assert_int_equal(d.desired, 10);
    /* Load gone: while panicking the count never decreases. */
    feed(&k, 1066, 1072, 0);
    d = kpa_decide(&k, 1071.9, 10, true);
    assert_true(d.panicking);
    assert_int_equal(d.desired, 10);
    /* A full stable window under the threshold ends the panic; then the
     * scale-down rate limits the fall to half the ready pods. */
    feed(&k, 1072, 1130, 0);
    d = kpa_decide(&k, 1129.9, 10, true);
    assert_false(d.panicking);
    assert_int_equal(d.desired, 5);
    kpa_free(&k);
}

static void test_scale_to_zero_and_partial_window(void **state)
{
    (void)state;
    struct kpa_config c;
    kpa_config_defaults(&c, 10);
    struct kpa k;
    kpa_init(&k, &c);
    /* One request's worth of concurrency in the first second: the partial
     * window averages over what exists, so one pod is wanted at once. */
    kpa_record(&k, 0.2, 1);
    struct kpa_decision d = kpa_decide(&k, 0.3, 0, true);
    assert_true(d.stable == 1.0);
    assert_int_equal(d.desired, 1);
    /* Nothing for a whole stable window: zero. */
    feed(&k, 1, 62, 0);
    d = kpa_decide(&k, 61.5, 1, true);
    assert_int_equal(d.desired, 0);
    /* Unreachable revisions cannot scale down below what the rate allows (0). */
    d = kpa_decide(&k, 61.5, 4, false);
    assert_int_equal(d.desired, 0);
    kpa_free(&k);
}

static void test_activation_scale_and_delay(void **state)
{
    (void)state;
    struct kpa_config c;
    kpa_config_defaults(&c, 10);
    c.activation_scale = 3;
    c.scale_down_delay = 10;
    struct kpa k;
    kpa_init(&k, &c);
    feed(&k, 100, 160, 7);                                       /* one pod's worth */
    assert_int_equal(kpa_decide(&k, 159.5, 1, true).desired, 3); /* raised to activation-scale */
    feed(&k, 160, 161, 700);
    int peak = kpa_decide(&k, 160.5, 3, true).desired;
    assert_true(peak >= 3);
    /* Within the delay window the peak holds even if the rest would fall. */
    assert_int_equal(kpa_decide(&k, 165.5, 3, true).desired >= peak, 1);
    kpa_free(&k);
}

static void test_excess_burst_capacity(void **state)
{
    (void)state;
    struct kpa_config c;
    kpa_config_defaults(&c, 0); /* total 100, TBC 211 */
    struct kpa k;
    kpa_init(&k, &c);
    feed(&k, 0, 6, 0);
    kpa_record(&k, 6.5, 0);
    assert_int_equal(kpa_decide(&k, 6.5, 3, true).excess_burst_capacity, 89); /* 300-211 */
    assert_int_equal(kpa_decide(&k, 6.5, 2, true).excess_burst_capacity, -11);
    kpa_free(&k);
    c.target_burst_capacity = -1;
    kpa_init(&k, &c);
    kpa_record(&k, 1, 0);
    assert_int_equal(kpa_decide(&k, 1, 5, true).excess_burst_capacity, -1);
    kpa_free(&k);
}

/* Why the autoscaler decides ticks on the last complete second: the current
 * second's bucket is empty until its reporters come in. */
static void test_current_second_is_still_filling(void **state)
{
    (void)state;
    struct kpa_config c;
    kpa_config_defaults(&c, 10); /* target 7 */
    c.stable_window = 20;
    c.panic_window = 2;
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    assert_int_equal(kpa_decide(&k, 4.9, 1, true).desired, -1); /* nothing yet */
    feed(&k, 5, 15, 11.0);                                      /* seconds 5..14 hold 11 */
    struct kpa_decision filling = kpa_decide(&k, 15.2, 1, true);
    assert_true(filling.panic == 5.5); /* second 15 has no report yet: half the truth */
    struct kpa_decision complete = kpa_decide(&k, 14.2, 1, true);
    assert_true(complete.panic == 11.0);
    assert_int_equal(complete.desired, 2); /* ceil(11 / 7), in panic (2 / 1 >= 2) */
    assert_true(complete.panicking);
    kpa_free(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_stable_then_panic_then_hold),
        cmocka_unit_test(test_scale_to_zero_and_partial_window),
        cmocka_unit_test(test_activation_scale_and_delay),
        cmocka_unit_test(test_excess_burst_capacity),
        cmocka_unit_test(test_current_second_is_still_filling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
