/* kpa.c — see kpa.h. */
#include "kpa.h"

#include <math.h>
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
    unsigned d = k->cfg.scale_down_delay ? k->cfg.scale_down_delay : 1;
    k->delay_sec = calloc(d, sizeof *k->delay_sec);
    k->delay_val = calloc(d, sizeof *k->delay_val);
    for (unsigned i = 0; i < n; i++)
        k->sec[i] = -1;
    for (unsigned i = 0; i < d; i++)
        k->delay_sec[i] = -1;
    return k->value && k->sec && k->delay_sec && k->delay_val;
}

void kpa_free(struct kpa *k)
{
    free(k->value);
    free(k->sec);
    free(k->delay_sec);
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

static int clamp(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

struct kpa_decision kpa_decide(struct kpa *k, double now, int ready_pods, bool reachable)
{
    struct kpa_decision d = {-1, 0, 0, false, 0};
    const struct kpa_config *c = &k->cfg;
    int64_t s = (int64_t)floor(now);
    if (!k->any || s < k->first)
        return d; /* no complete second of data yet */
    d.stable = kpa_window_average(k, now, c->stable_window);
    d.panic = kpa_window_average(k, now, c->panic_window);
    double ready = ready_pods > 0 ? ready_pods : 1;
    int max_up = (int)ceil(c->max_scale_up_rate * ready);
    int max_down = reachable ? (int)floor(ready / c->max_scale_down_rate) : 0;
    int dspc = clamp((int)ceil(d.stable / c->target), max_down, max_up);
    int dppc = clamp((int)ceil(d.panic / c->target), max_down, max_up);
    if (c->activation_scale > 1) {
        if (dspc > 0 && dspc < c->activation_scale)
            dspc = c->activation_scale;
        if (dppc > 0 && dppc < c->activation_scale)
            dppc = c->activation_scale;
    }
    bool over = (double)dppc / ready >= c->panic_threshold;
    if (over) {
        /* Start, or refresh, the panic. */
        k->panic_since = s;
    } else if (k->panic_since && s - k->panic_since >= (int64_t)c->stable_window) {
        k->panic_since = 0;
        k->max_panic_pods = 0;
    }
    int desired = dspc;
    if (k->panic_since) {
        d.panicking = true;
        desired = dspc > dppc ? dspc : dppc;
        if (desired < k->max_panic_pods)
            desired = k->max_panic_pods; /* never scale down while panicking */
        k->max_panic_pods = desired;
    }
    if (c->scale_down_delay) {
        /* The most wanted over the delay window. */
        unsigned n = c->scale_down_delay;
        unsigned i = (unsigned)(s % n);
        if (k->delay_sec[i] != s || k->delay_val[i] < desired) {
            k->delay_sec[i] = s;
            k->delay_val[i] = desired;
        }
        for (unsigned j = 0; j < n; j++)
            if (k->delay_sec[j] > s - (int64_t)n && k->delay_val[j] > desired)
                desired = k->delay_val[j];
    }
    d.desired = desired;
    if (c->target_burst_capacity == 0)
        d.excess_burst_capacity = 0;
    else if (c->target_burst_capacity < 0)
        d.excess_burst_capacity = -1;
    else
        d.excess_burst_capacity =
            (int)floor((double)ready_pods * c->total - c->target_burst_capacity - d.panic);
    return d;
}
