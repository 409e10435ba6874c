/* kpa.c — see kpa.h.
 *
 * The decision follows pkg/autoscaler/scaling/autoscaler.go step by step;
 * the points where a reading of it is easy to get wrong:
 *  - the panic threshold is tested on the RAW panic pod count
 *    ceil(panic / target) over max(1, ready), before the scale-rate clamp
 *    and activation scale;
 *  - activation scale lifts a clamped count only when the raw count is
 *    above 0 (a count that only the scale-down floor made positive stays);
 *  - panic ends on a decision under the threshold strictly later than
 *    panic_time + stable window;
 *  - the scale-down delay applies only to reachable revisions, and an
 *    unreachable decision is not recorded in its window. */
#include "kpa.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void kpa_config_defaults(struct kpa_config *c, long cc)
{
    memset(c, 0, sizeof *c);
    c->total = cc > 0 ? (double)cc : 100.0;
    c->target = fmax(0.01, c->total * 0.7);
    c->panic_threshold = 2.0;
    c->stable_window = 60;
    c->panic_window = 6;
    c->max_scale_up_rate = 1000;
    c->max_scale_down_rate = 2;
    c->target_burst_capacity = 211;
}

bool kpa_init(struct kpa *k, const struct kpa_config *cfg)
{
    memset(k, 0, sizeof *k);
    k->cfg = *cfg;
    if (k->cfg.stable_window < 1)
        k->cfg.stable_window = 1;
    if (k->cfg.stable_window > KPA_MAX_WINDOW_SECONDS)
        k->cfg.stable_window = KPA_MAX_WINDOW_SECONDS;
    if (k->cfg.panic_window < 1)
        k->cfg.panic_window = 1;
    if (k->cfg.panic_window > k->cfg.stable_window)
        k->cfg.panic_window = k->cfg.stable_window;
    if (k->cfg.scale_down_delay > KPA_MAX_WINDOW_SECONDS)
        k->cfg.scale_down_delay = KPA_MAX_WINDOW_SECONDS;
    unsigned n = k->cfg.stable_window;
    k->value = calloc(n, sizeof *k->value);
    k->sec = calloc(n, sizeof *k->sec);
    /* At least one slot, so the ring is valid even without a delay. */
    k->delay_slots = (k->cfg.scale_down_delay + KPA_DELAY_GRANULARITY - 1) / KPA_DELAY_GRANULARITY;
    if (k->delay_slots < 1)
        k->delay_slots = 1;
    k->delay_bucket = calloc(k->delay_slots, sizeof *k->delay_bucket);
    k->delay_val = calloc(k->delay_slots, sizeof *k->delay_val);
    for (unsigned i = 0; k->sec && i < n; i++)
        k->sec[i] = -1;
    for (unsigned i = 0; k->delay_bucket && i < k->delay_slots; i++)
        k->delay_bucket[i] = INT64_MIN; /* empty */
    return k->value && k->sec && k->delay_bucket && k->delay_val;
}

void kpa_free(struct kpa *k)
{
    free(k->value);
    free(k->sec);
    free(k->delay_bucket);
    free(k->delay_val);
    memset(k, 0, sizeof *k);
}

void kpa_record(struct kpa *k, double now, double value)
{
    int64_t s = (int64_t)floor(now);
    unsigned i = (unsigned)(s % k->cfg.stable_window);
    if (k->sec[i] != s) {
        k->sec[i] = s;
        k->value[i] = 0;
    }
    k->value[i] += value;
    if (!k->any) {
        k->first = s;
        k->any = true;
    }
}

double kpa_window_average(const struct kpa *k, double now, unsigned window)
{
    if (!k->any)
        return 0;
    if (window > k->cfg.stable_window)
        window = k->cfg.stable_window;
    int64_t s = (int64_t)floor(now);
    double sum = 0;
    for (unsigned j = 0; j < window; j++) {
        int64_t want = s - (int64_t)j;
        unsigned i = (unsigned)(((want % k->cfg.stable_window) + k->cfg.stable_window) %
                                k->cfg.stable_window);
        if (k->sec[i] == want)
            sum += k->value[i];
    }
    int64_t have = s - k->first + 1;
    double div = (double)window;
    if (have > 0 && have < (int64_t)window)
        div = (double)have;
    return sum / div;
}

void kpa_start(struct kpa *k, double now, int ready_pods)
{
    if (ready_pods > 1) {
        k->panicking = true;
        k->panic_time = now;
    }
    k->max_panic_pods = ready_pods > 0 ? ready_pods : 0;
}

/* Records `desired` in the delay window and returns the window's maximum. */
static int delay_window(struct kpa *k, double now, int desired)
{
    int64_t b = (int64_t)floor(now) / KPA_DELAY_GRANULARITY;
    unsigned n = k->delay_slots;
    unsigned i = (unsigned)(((b % n) + n) % n);
    if (k->delay_bucket[i] != b || k->delay_val[i] < desired) {
        k->delay_bucket[i] = b;
        k->delay_val[i] = desired;
    }
    int best = desired;
    for (unsigned j = 0; j < n; j++)
        if (k->delay_bucket[j] > b - (int64_t)n && k->delay_bucket[j] <= b &&
            k->delay_val[j] > best)
            best = k->delay_val[j];
    return best;
}

struct kpa_decision kpa_scale(struct kpa *k, double now, double stable, double panic,
                              int ready_pods, bool reachable)
{
    const struct kpa_config *c = &k->cfg;
    struct kpa_decision d = {-1, stable, panic, false, 0};
    double ready = ready_pods > 0 ? ready_pods : 1; /* Knative: max(1, ready) */
    double max_up = ceil(c->max_scale_up_rate * ready);
    double max_down = reachable ? floor(ready / c->max_scale_down_rate) : 0;
    double dspc = ceil(stable / c->target); /* raw counts, before any limit */
    double dppc = ceil(panic / c->target);
    int stable_pods = (int)fmin(fmax(dspc, max_down), max_up);
    int panic_pods = (int)fmin(fmax(dppc, max_down), max_up);
    if (c->activation_scale > 1) {
        if (dspc > 0 && stable_pods < c->activation_scale)
            stable_pods = c->activation_scale;
        if (dppc > 0 && panic_pods < c->activation_scale)
            panic_pods = c->activation_scale;
    }
    bool over = dppc / ready >= c->panic_threshold;
    if (over) {
        /* Start, or extend, the panic. */
        k->panicking = true;
        k->panic_time = now;
    } else if (k->panicking && k->panic_time + (double)c->stable_window < now) {
        /* The surge has made its way into the stable window. */
        k->panicking = false;
        k->max_panic_pods = 0;
    }
    int desired = stable_pods;
    if (k->panicking) {
        d.panicking = true;
        if (desired < panic_pods)
            desired = panic_pods;
        if (desired > k->max_panic_pods)
            k->max_panic_pods = desired;
        desired = k->max_panic_pods; /* never scale down while panicking */
    }
    if (c->scale_down_delay && reachable)
        desired = delay_window(k, now, desired);
    d.desired = desired;
    if (c->target_burst_capacity == 0)
        d.excess_burst_capacity = 0;
    else if (c->target_burst_capacity < 0)
        d.excess_burst_capacity = -1;
    else
        d.excess_burst_capacity =
            (int)floor((double)ready_pods * c->total - c->target_burst_capacity - panic);
    return d;
}

struct kpa_decision kpa_decide(struct kpa *k, double now, int ready_pods, bool reachable)
{
    struct kpa_decision d = {-1, 0, 0, false, 0};
    const struct kpa_config *c = &k->cfg;
    int64_t s = (int64_t)floor(now);
    if (!k->any || s < k->first)
        return d; /* no complete second of data yet */
    return kpa_scale(k, now, kpa_window_average(k, now, c->stable_window),
                     kpa_window_average(k, now, c->panic_window), ready_pods, reachable);
}
