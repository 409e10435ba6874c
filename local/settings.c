/* settings.c — a revision template's settings: containerConcurrency, the
 * three timeouts, the container port and the autoscaling.knative.dev
 * annotations, with Knative's defaults (../shared/spec/knative-activator.md
 * §8.3) and ranges. Knative's config-autoscaler keys that have no
 * annotation keep their defaults here (max-scale-up-rate 1000,
 * max-scale-down-rate 2); scale-to-zero-grace-period is
 * COLDBREW_SCALE_TO_ZERO_GRACE_SECONDS.
 *
 * Decision: initial-scale may be 0 (Knative needs allow-zero-initial-scale
 * in config-autoscaler for that; on one machine starting at zero is the
 * point, so it is allowed). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/env.h"
#include "platform.h"

#define ANN "autoscaling.knative.dev/"

static const char *ann(json_t *tmpl, const char *key)
{
    json_t *a = json_object_get(json_object_get(tmpl, "metadata"), "annotations");
    return json_string_value(json_object_get(a, key));
}

static long num(json_t *o, const char *key, long def)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (long)json_integer_value(v) : def;
}

/* An annotation that is a number in [lo, hi] (a whole one with `whole`);
 * *out untouched when absent. */
static bool ann_number(json_t *tmpl, const char *key, double lo, double hi, bool whole, double *out,
                       char *err, size_t cap)
{
    const char *v = ann(tmpl, key);
    if (!v)
        return true;
    long l = 0;
    double d = 0;
    bool ok = whole ? parse_long(v, &l) : parse_double(v, &d);
    if (whole)
        d = (double)l;
    if (!ok || d < lo || d > hi) {
        snprintf(err, cap, "metadata.annotations.%s: must be a %s from %g to %g", key,
                 whole ? "whole number" : "number", lo, hi);
        return false;
    }
    *out = d;
    return true;
}

static bool ann_double(json_t *tmpl, const char *key, double lo, double hi, double *out, char *err,
                       size_t cap)
{
    return ann_number(tmpl, key, lo, hi, false, out, err, cap);
}

static bool ann_int(json_t *tmpl, const char *key, long lo, long hi, int *out, char *err,
                    size_t cap)
{
    double d = *out;
    bool ok = ann_number(tmpl, key, (double)lo, (double)hi, true, &d, err, cap);
    *out = (int)d;
    return ok;
}

/* Go durations ("60s", "1m30s"); Knative also takes these as plain seconds. */
static bool ann_duration(json_t *tmpl, const char *key, double lo, double hi, double *out,
                         char *err, size_t cap)
{
    const char *v = ann(tmpl, key);
    if (!v)
        return true;
    double d;
    if ((!parse_go_duration(v, &d) && !parse_double(v, &d)) || d < lo || d > hi) {
        snprintf(err, cap, "metadata.annotations.%s: must be a duration from %gs to %gs", key, lo,
                 hi);
        return false;
    }
    *out = d;
    return true;
}

bool rev_settings_parse(json_t *tmpl, struct rev_settings *s, char *err, size_t cap)
{
    memset(s, 0, sizeof *s);
    json_t *spec = json_object_get(tmpl, "spec");
    json_t *c0 = json_array_get(json_object_get(spec, "containers"), 0);
    s->cc = num(spec, "containerConcurrency", 0);
    s->timeout = num(spec, "timeoutSeconds", 300);
    s->response_start_timeout = num(spec, "responseStartTimeoutSeconds", 0);
    s->idle_timeout = num(spec, "idleTimeoutSeconds", 0);
    json_t *port0 = json_array_get(json_object_get(c0, "ports"), 0);
    s->container_port = (int)num(port0, "containerPort", 8080);
    /* Knative's GetProtocol: a port named h2c makes the revision HTTP/2
     * cleartext; "http1" or no name is HTTP/1. */
    const char *pname = json_string_value(json_object_get(port0, "name"));
    if (pname && *pname && strcmp(pname, "h2c") && strcmp(pname, "http1")) {
        snprintf(err, cap,
                 "spec.containers[0].ports[0].name: must be h2c or http1 (Knative's port names)");
        return false;
    }
    s->h2c = pname && !strcmp(pname, "h2c");
    s->initial_scale = 1;

    const char *cls = ann(tmpl, ANN "class");
    if (cls && strcmp(cls, "kpa.autoscaling.knative.dev")) {
        snprintf(err, cap,
                 "metadata.annotations." ANN "class: only kpa.autoscaling.knative.dev runs "
                 "locally (no HPA here)");
        return false;
    }
    const char *metric = ann(tmpl, ANN "metric");
    if (metric && strcmp(metric, "concurrency") && strcmp(metric, "rps")) {
        snprintf(err, cap, "metadata.annotations." ANN "metric: must be concurrency or rps");
        return false;
    }
    s->rps = metric && !strcmp(metric, "rps");
    const char *rsv = ann(tmpl, "coldbrew.dev/reserve-instance");
    if (rsv && strcmp(rsv, "enable") && strcmp(rsv, "disable")) {
        snprintf(err, cap,
                 "metadata.annotations.coldbrew.dev/reserve-instance: must be enable "
                 "or disable");
        return false;
    }
    s->reserve = rsv && !strcmp(rsv, "enable");

    struct kpa_config *k = &s->kpa;
    kpa_config_defaults(k, s->cc);
    k->rps = s->rps;
    /* total: CC, or the metric's default; a target annotation overrides it
     * (soft: never above CC). */
    double total = s->cc > 0 ? (double)s->cc : s->rps ? 200.0 : 100.0;
    double target = total;
    if (!ann_double(tmpl, ANN "target", 0.01, 1e9, &target, err, cap))
        return false;
    if (s->cc > 0 && target > (double)s->cc)
        target = (double)s->cc;
    double util = 70;
    if (!ann_double(tmpl, ANN "target-utilization-percentage", 0.01, 100, &util, err, cap))
        return false;
    if (util > 1)
        util /= 100; /* values <= 1.0 are read as a fraction, as Knative does */
    k->total = target;
    k->target = fmax(0.01, target * util);

    double window = 60;
    if (!ann_duration(tmpl, ANN "window", 6, 3600, &window, err, cap))
        return false;
    k->stable_window = (unsigned)window;
    double ppct = 10;
    if (!ann_double(tmpl, ANN "panic-window-percentage", 1, 100, &ppct, err, cap))
        return false;
    k->panic_window = (unsigned)lround(window * ppct / 100);
    if (k->panic_window < 1)
        k->panic_window = 1;
    double pth = 200;
    if (!ann_double(tmpl, ANN "panic-threshold-percentage", 110, 1000, &pth, err, cap))
        return false;
    k->panic_threshold = pth / 100;
    double delay = 0;
    if (!ann_duration(tmpl, ANN "scale-down-delay", 0, 3600, &delay, err, cap))
        return false;
    k->scale_down_delay = (unsigned)delay;
    if (!ann_duration(tmpl, ANN "scale-to-zero-pod-retention-period", 0, 3600, &s->retention, err,
                      cap))
        return false;
    int act_scale = 0;
    if (!ann_int(tmpl, ANN "activation-scale", 1, 1000, &act_scale, err, cap))
        return false;
    k->activation_scale = act_scale;
    double tbc = 211;
    if (!ann_double(tmpl, ANN "target-burst-capacity", -1, 1e9, &tbc, err, cap))
        return false;
    if (tbc < 0 && tbc != -1) {
        snprintf(err, cap, "metadata.annotations." ANN "target-burst-capacity: -1 or >= 0");
        return false;
    }
    k->target_burst_capacity = tbc;

    if (!ann_int(tmpl, ANN "min-scale", 0, 1000, &s->min_scale, err, cap) ||
        !ann_int(tmpl, ANN "max-scale", 0, 1000, &s->max_scale, err, cap) ||
        !ann_int(tmpl, ANN "initial-scale", 0, 1000, &s->initial_scale, err, cap))
        return false;
    if (s->max_scale && s->min_scale > s->max_scale) {
        snprintf(err, cap, "metadata.annotations." ANN "min-scale: larger than max-scale");
        return false;
    }
    return true;
}
