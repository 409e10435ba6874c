/* kpa_test.c — the KPA decision (spec §8.2, §8.3) on worked numbers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

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

/* ---------------------------------------------------------------- Knative's edge cases
 *
 * Each of these once differed from pkg/autoscaler/scaling/autoscaler.go. */

/* Knative's test spec: panic 200%, rates x10 both ways, 60 s stable window,
 * 75% utilisation (total = target / 0.75). */
static void kn_config(struct kpa_config *c, double target, double tbc)
{
    kpa_config_defaults(c, 0);
    c->target = target;
    c->total = target / 0.75;
    c->target_burst_capacity = tbc;
    c->max_scale_up_rate = 10;
    c->max_scale_down_rate = 10;
}

/* The panic threshold is tested on the raw ceil(panic / target), before
 * the scale-up clamp: 20 pods wanted on 5 ready is 4x, a panic, even though
 * the rate limit lets only 6 be asked for. */
static void test_panic_threshold_before_the_rate_clamp(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 1, 211);
    c.max_scale_up_rate = 1.1;
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    struct kpa_decision d = kpa_scale(&k, 100, 20, 20, 5, true);
    assert_true(d.panicking);
    assert_int_equal(d.desired, 6); /* ceil(1.1 x 5) */
    kpa_free(&k);
    /* The same through recorded observations and the window averages. */
    assert_true(kpa_init(&k, &c));
    feed(&k, 0, 60, 20);
    d = kpa_decide(&k, 59.5, 5, true);
    assert_true(d.panicking);
    assert_int_equal(d.desired, 6);
    kpa_free(&k);
}

/* ...and before activation scale: 1 request on a target of 10 wants 1 pod;
 * activation scale 3 raises the count to 3 but that is no panic. */
static void test_panic_threshold_before_activation_scale(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 211);
    c.activation_scale = 3;
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    struct kpa_decision d = kpa_scale(&k, 100, 1, 1, 0, true);
    assert_false(d.panicking);
    assert_int_equal(d.desired, 3);
    kpa_free(&k);
}

/* Activation scale lifts only a count the load asked for: with no load the
 * scale-down floor keeps 2 of 4 pods, and that 2 stays 2. */
static void test_activation_scale_ignores_the_floor(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 211);
    c.activation_scale = 3;
    c.max_scale_down_rate = 2;
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    struct kpa_decision d = kpa_scale(&k, 100, 0, 0, 4, true);
    assert_false(d.panicking);
    assert_int_equal(d.desired, 2);
    kpa_free(&k);
}

/* Panic ends only on a decision strictly later than panic time + stable
 * window: at exactly +60 s the panic pods are still held. */
static void test_panic_ends_strictly_after_the_stable_window(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 211);
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    struct kpa_decision d = kpa_scale(&k, 1000, 100, 1000, 10, true);
    assert_true(d.panicking);
    assert_int_equal(d.desired, 100);
    d = kpa_scale(&k, 1060, 1, 1, 10, true);
    assert_true(d.panicking);
    assert_int_equal(d.desired, 100);
    d = kpa_scale(&k, 1060.5, 1, 1, 10, true);
    assert_false(d.panicking);
    assert_int_equal(d.desired, 1);
    kpa_free(&k);
}

/* A panic that starts at second 0 of the clock is a panic (time 0 is not
 * "not panicking"). */
static void test_panic_at_time_zero(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 211);
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    assert_true(kpa_scale(&k, 0, 100, 100, 1, true).panicking); /* 10 on 1: 10x */
    struct kpa_decision d = kpa_scale(&k, 1, 1, 1, 10, true);
    assert_true(d.panicking);
    assert_int_equal(d.desired, 10); /* held: never down while panicking */
    kpa_free(&k);
}

/* Unreachable revisions skip the scale-down delay (Knative records and
 * applies it only when reachable). */
static void test_delay_only_when_reachable(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 211);
    c.panic_threshold = 100;
    c.scale_down_delay = 300;
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    assert_int_equal(kpa_scale(&k, 2, 40, 40, 0, true).desired, 4);
    assert_int_equal(kpa_scale(&k, 60, 0, 0, 0, true).desired, 4);
    assert_int_equal(kpa_scale(&k, 62, 0, 0, 0, false).desired, 0);
    kpa_free(&k);
}

/* ---------------------------------------------------------------- Knative's tests
 *
 * pkg/autoscaler/scaling/autoscaler_test.go, translated: its fake metric
 * client's (stable, panic) pair goes straight into kpa_scale, its fake pod
 * counter's ready count is ready_pods, time.Now() is a test clock. Knative
 * compares the excess burst capacity with a tolerance of 1; so do we (a
 * signed compare: cmocka's assert_in_range is unsigned). */

/* Knative's expectedEBC: total / 0.75 x pods - TBC - observed panic, floored. */
static int kn_ebc(double target, double tbc, double panic, double pods)
{
    return (int)floor(target / 0.75 * pods - tbc - panic);
}

#define EXPECT_SCALE(k, now, stable, panic, ready, reachable, want_desired, want_ebc)              \
    do {                                                                                           \
        struct kpa_decision d_ = kpa_scale(k, now, stable, panic, ready, reachable);               \
        assert_int_equal(d_.desired, want_desired);                                                \
        assert_true(abs(d_.excess_burst_capacity - (want_ebc)) <= 1);                              \
    } while (0)

static void kn_scale_down_delay(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 0);
    c.panic_threshold = 100;
    c.scale_down_delay = 300;
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    /* "simple" */
    EXPECT_SCALE(&k, 2, 40, 40, 0, true, 4, 0);
    EXPECT_SCALE(&k, 300, 0, 0, 0, true, 4, 0); /* less than the delay: no scale-down */
    EXPECT_SCALE(&k, 302, 0, 0, 0, true, 0, 0);
    /* "gradual" */
    EXPECT_SCALE(&k, 540, 40, 40, 0, true, 4, 0);
    EXPECT_SCALE(&k, 600, 30, 30, 0, true, 4, 0); /* 4 still dominates */
    EXPECT_SCALE(&k, 660, 0, 0, 0, true, 4, 0);
    EXPECT_SCALE(&k, 840, 0, 0, 0, true, 3, 0); /* 4 scrolls out */
    EXPECT_SCALE(&k, 900, 0, 0, 0, true, 0, 0); /* everything scrolled out */
    kpa_free(&k);
}

static void kn_scale_down_delay_not_reachable(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 0);
    c.panic_threshold = 100;
    c.scale_down_delay = 300;
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    EXPECT_SCALE(&k, 2, 40, 40, 0, true, 4, 0);
    EXPECT_SCALE(&k, 60, 0, 0, 0, true, 4, 0);
    EXPECT_SCALE(&k, 2, 0, 0, 0, false, 0, 0); /* another revision took the traffic */
    kpa_free(&k);
}

static void kn_scale_down_delay_zero(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 0);
    c.panic_threshold = 100;
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    EXPECT_SCALE(&k, 0, 40, 40, 0, true, 4, 0);
    EXPECT_SCALE(&k, 0.5, 20, 20, 0, true, 2, 0); /* no delay: down at once */
    kpa_free(&k);
}

static void kn_no_data_no_autoscale(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 100);
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    assert_int_equal(kpa_decide(&k, 1000, 1, true).desired, -1); /* Knative: invalid result */
    kpa_free(&k);
}

/* TestAutoscalerMetrics, TestAutoscalerMetricsWithRPS: the decision part
 * (the metrics themselves are the caller's). */
static void kn_metrics(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 100);
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    struct kpa_decision d = kpa_scale(&k, 1000, 50, 50, 1, true);
    assert_int_equal(d.desired, 5);
    assert_true(abs(d.excess_burst_capacity - kn_ebc(10, 100, 50, 1)) <= 1);
    assert_true(d.panicking && d.stable == 50 && d.panic == 50);
    kpa_free(&k);
    c.rps = true;
    assert_true(kpa_init(&k, &c));
    d = kpa_scale(&k, 1061, 100, 99, 1, true);
    assert_int_equal(d.desired, 10);
    assert_true(d.panicking);
    assert_true(abs(d.excess_burst_capacity - kn_ebc(10, 100, 99, 1)) <= 1);
    kpa_free(&k);
}

static void kn_stable_mode_increase(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 101);
    struct kpa k;
    assert_true(kpa_init(&k, &c)); /* ...WithConcurrencyDefault */
    EXPECT_SCALE(&k, 1000, 50, 10, 1, true, 5, kn_ebc(10, 101, 10, 1));
    EXPECT_SCALE(&k, 1000.1, 100, 10, 1, true, 10, kn_ebc(10, 101, 10, 1));
    kpa_free(&k);
    c.rps = true; /* ...WithRPS */
    assert_true(kpa_init(&k, &c));
    EXPECT_SCALE(&k, 1000, 50, 50, 1, true, 5, kn_ebc(10, 101, 50, 1));
    EXPECT_SCALE(&k, 1000.1, 100, 99, 1, true, 10, kn_ebc(10, 101, 99, 1));
    kpa_free(&k);
}

static void kn_unpanic_after_slow_increase(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 1, 98);
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    double start = 1000;
    EXPECT_SCALE(&k, start, 11, 25, 10, true, 25, kn_ebc(1, 98, 25, 10));
    assert_true(k.panicking && k.panic_time == start);
    /* Half the stable window later, +1 pod per cycle: 40 ready. */
    EXPECT_SCALE(&k, start + 30, 30, 41, 40, true, 41, kn_ebc(1, 98, 41, 40));
    assert_true(k.panic_time == start); /* 41 on 40 is no panic: the time stays */
    /* The end: panic over, and the stable count decides. */
    EXPECT_SCALE(&k, start + 30 + 32, 50, 56, 55, true, 50, kn_ebc(1, 98, 56, 55));
    assert_false(k.panicking);
    kpa_free(&k);
}

static void kn_extend_panic_window(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 1, 98);
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    EXPECT_SCALE(&k, 1000, 11, 25, 10, true, 25, kn_ebc(1, 98, 25, 10));
    assert_true(k.panic_time == 1000);
    EXPECT_SCALE(&k, 1030, 30, 80, 40, true, 80, kn_ebc(1, 98, 80, 40));
    assert_true(k.panic_time == 1030); /* still surging: extended */
    kpa_free(&k);
}

static void kn_stable_mode_decrease_and_to_zero(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 98);
    struct kpa k;
    assert_true(kpa_init(&k, &c)); /* TestAutoscalerStableModeDecrease */
    EXPECT_SCALE(&k, 1000, 100, 100, 8, true, 10, kn_ebc(10, 98, 100, 8));
    EXPECT_SCALE(&k, 1000.1, 50, 50, 8, true, 5, kn_ebc(10, 98, 50, 8));
    kpa_free(&k);
    kn_config(&c, 10, 75); /* ...NoTrafficScaleToZero */
    assert_true(kpa_init(&k, &c));
    EXPECT_SCALE(&k, 1000, 1, 0, 1, true, 1, kn_ebc(10, 75, 0, 1));
    EXPECT_SCALE(&k, 1000.1, 0, 0, 1, true, 0, kn_ebc(10, 75, 0, 1));
    kpa_free(&k);
    c.activation_scale = 2; /* TestAutoscalerActivationScale */
    assert_true(kpa_init(&k, &c));
    EXPECT_SCALE(&k, 1000, 0, 0, 1, true, 0, kn_ebc(10, 75, 0, 1));
    EXPECT_SCALE(&k, 1000.1, 1, 0, 1, true, 2, kn_ebc(10, 75, 0, 1));
    kpa_free(&k);
}

static void kn_panic_exponential_track_and_stabilize(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 1, 101);
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    EXPECT_SCALE(&k, 1000, 6, 6, 1, true, 6, kn_ebc(1, 101, 6, 1));
    double tm = 1000.01;
    EXPECT_SCALE(&k, tm, 36, 36, 6, true, 36, kn_ebc(1, 101, 36, 6));
    assert_true(k.panic_time == tm);
    tm += 1;
    EXPECT_SCALE(&k, tm, 216, 216, 36, true, 216, kn_ebc(1, 101, 216, 36));
    assert_true(k.panic_time == tm);
    EXPECT_SCALE(&k, tm, 1296, 1296, 216, true, 1296, kn_ebc(1, 101, 1296, 216));
    assert_true(k.panic_time == tm);
    tm += 1;
    EXPECT_SCALE(&k, tm, 1296, 1296, 1296, true, 1296, kn_ebc(1, 101, 1296, 1296));
    kpa_free(&k);
}

/* TestAutoscalerScale's table. */
static void kn_scale_table(void **state)
{
    (void)state;
    static const struct {
        const char *label;
        double target, tbc, stable, panic;
        int ready;
        bool prep_panic; /* panicking since 5 s ago, holding 5 pods */
        double up, down; /* 0: Knative's test default (10) */
        bool unreachable;
        int want;
        int want_ebc; /* INT32_MIN: kn_ebc(target, tbc, panic, ready) */
    } t[] = {
        {"NoDataAtZeroNoAutoscale", 10, 100, 0, 0, 1, false, 0, 0, false, 0, INT32_MIN},
        {"StableModeUnlimitedTBC", 181, -1, 21, 26, 1, false, 0, 0, false, 1, -1},
        {"0TBC", 10, 0, 50, 49, 1, false, 0, 0, false, 5, 0},
        {"StableModeNoChange", 10, 100, 50, 50, 1, false, 0, 0, false, 5, INT32_MIN},
        {"PanicStableLargerThanPanic", 1, 100, 50, 30, 5, true, 0, 0, false, 50, INT32_MIN},
        {"PanicStableLessThanPanic", 1, 100, 20, 30, 5, true, 0, 0, false, 30, INT32_MIN},
        {"StableModeNoChangeAlreadyScaled", 10, 100, 50, 50, 5, false, 0, 0, false, 5, INT32_MIN},
        {"StableModeIncreaseWithSmallScaleUpRate", 1, 1982, 3, 3.1, 2, false, 1.1, 0, false, 3,
         INT32_MIN},
        {"StableModeDecreaseWithSmallScaleDownRate", 10, 1982, 1, 1, 100, false, 0, 1.1, false, 90,
         INT32_MIN},
        {"StableModeDecreaseNonReachable", 10, 1982, 1, 1, 100, false, 0, 1.1, true, 1, INT32_MIN},
        {"PanicModeDoublePodCount", 10, 84, 50, 100, 1, false, 0, 0, false, 10, INT32_MIN},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct kpa_config c;
        kn_config(&c, t[i].target, t[i].tbc);
        if (t[i].up)
            c.max_scale_up_rate = t[i].up;
        if (t[i].down)
            c.max_scale_down_rate = t[i].down;
        struct kpa k;
        assert_true(kpa_init(&k, &c));
        double now = 1000;
        if (t[i].prep_panic) {
            k.panicking = true;
            k.panic_time = now - 5;
            k.max_panic_pods = 5;
        }
        struct kpa_decision d =
            kpa_scale(&k, now, t[i].stable, t[i].panic, t[i].ready, !t[i].unreachable);
        int ebc = t[i].want_ebc != INT32_MIN
                      ? t[i].want_ebc
                      : kn_ebc(t[i].target, t[i].tbc, t[i].panic, t[i].ready);
        if (d.desired != t[i].want || d.excess_burst_capacity < ebc - 1 ||
            d.excess_burst_capacity > ebc + 1)
            fail_msg("%s: desired %d (want %d), ebc %d (want %d)", t[i].label, d.desired, t[i].want,
                     d.excess_burst_capacity, ebc);
        kpa_free(&k);
    }
}

static void kn_panic_then_unpanic_scale_down(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 93);
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    EXPECT_SCALE(&k, 999, 100, 100, 1, true, 10, kn_ebc(10, 93, 100, 1));
    double panic_time = 1000;
    EXPECT_SCALE(&k, panic_time, 100, 1000, 10, true, 100, kn_ebc(10, 93, 1000, 10));
    /* Traffic dropped off; still panicking, the scale stays. */
    EXPECT_SCALE(&k, panic_time + 30, 1, 1, 10, true, 100, kn_ebc(10, 93, 1, 10));
    /* Down after the stable window. */
    EXPECT_SCALE(&k, panic_time + 61, 1, 1, 10, true, 1, kn_ebc(10, 93, 1, 10));
    kpa_free(&k);
}

static void kn_rate_limits(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 61);
    struct kpa k;
    assert_true(kpa_init(&k, &c)); /* TestAutoscalerRateLimitScaleUp */
    EXPECT_SCALE(&k, 1000, 1000, 1001, 1, true, 10, kn_ebc(10, 61, 1001, 1)); /* x10 only */
    EXPECT_SCALE(&k, 1000.1, 1000, 1001, 10, true, 100, kn_ebc(10, 61, 1001, 10));
    kpa_free(&k);
    assert_true(kpa_init(&k, &c)); /* TestAutoscalerRateLimitScaleDown */
    EXPECT_SCALE(&k, 1000, 1, 1, 100, true, 10, kn_ebc(10, 61, 1, 100)); /* /10 only */
    EXPECT_SCALE(&k, 1000.1, 1, 1, 10, true, 1, kn_ebc(10, 61, 1, 10));
    kpa_free(&k);
}

static void kn_one_pod_minimum_and_update_target(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 10, 81);
    struct kpa k;
    assert_true(kpa_init(&k, &c)); /* ...UseOnePodAsMinimumIfEndpointsNotFound */
    EXPECT_SCALE(&k, 1000, 1000, 888, 0, true, 10, kn_ebc(10, 81, 888, 0));
    kpa_free(&k);
    kn_config(&c, 10, 77); /* TestAutoscalerUpdateTarget */
    assert_true(kpa_init(&k, &c));
    EXPECT_SCALE(&k, 1000, 100, 101, 1, true, 10, kn_ebc(10, 77, 101, 1));
    k.cfg.target = 1; /* Knative's Update(): a new spec, same windows */
    k.cfg.total = 1 / 0.75;
    k.cfg.target_burst_capacity = 71;
    EXPECT_SCALE(&k, 1000.1, 100, 101, 10, true, 100, kn_ebc(1, 71, 101, 10));
    kpa_free(&k);
}

static void kn_start_in_panic_mode(void **state)
{
    (void)state;
    struct kpa_config c;
    kn_config(&c, 100, 11);
    c.total = 120;
    c.panic_threshold = 2.2;
    for (int i = 0; i < 2; i++) {
        struct kpa k;
        assert_true(kpa_init(&k, &c));
        kpa_start(&k, 1000, i);
        assert_false(k.panicking);
        assert_int_equal(k.max_panic_pods, i);
        kpa_free(&k);
    }
    struct kpa k;
    assert_true(kpa_init(&k, &c));
    kpa_start(&k, 1000, 2);
    assert_true(k.panicking);
    assert_int_equal(k.max_panic_pods, 2);
    /* staticMetricClient (10): the 2 pods are held while the panic lasts. */
    EXPECT_SCALE(&k, 1001, 10, 10, 2, true, 2, (int)floor(2 * 120 - 11 - 10.0));
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
        cmocka_unit_test(test_panic_threshold_before_the_rate_clamp),
        cmocka_unit_test(test_panic_threshold_before_activation_scale),
        cmocka_unit_test(test_activation_scale_ignores_the_floor),
        cmocka_unit_test(test_panic_ends_strictly_after_the_stable_window),
        cmocka_unit_test(test_panic_at_time_zero),
        cmocka_unit_test(test_delay_only_when_reachable),
        cmocka_unit_test(kn_scale_down_delay),
        cmocka_unit_test(kn_scale_down_delay_not_reachable),
        cmocka_unit_test(kn_scale_down_delay_zero),
        cmocka_unit_test(kn_no_data_no_autoscale),
        cmocka_unit_test(kn_metrics),
        cmocka_unit_test(kn_stable_mode_increase),
        cmocka_unit_test(kn_unpanic_after_slow_increase),
        cmocka_unit_test(kn_extend_panic_window),
        cmocka_unit_test(kn_stable_mode_decrease_and_to_zero),
        cmocka_unit_test(kn_panic_exponential_track_and_stabilize),
        cmocka_unit_test(kn_scale_table),
        cmocka_unit_test(kn_panic_then_unpanic_scale_down),
        cmocka_unit_test(kn_rate_limits),
        cmocka_unit_test(kn_one_pod_minimum_and_update_target),
        cmocka_unit_test(kn_start_in_panic_mode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
