/* kpa.h — Knative's Pod Autoscaler decision (../shared/spec/knative-activator.md
 * §8.2, pkg/autoscaler/scaling/autoscaler.go), as a pure computation.
 *
 * Observations (concurrency or RPS, summed over every reporter) go into
 * one-second buckets; each decision averages the stable and panic windows,
 * turns them into pod counts against the per-pod target, applies the
 * scale-rate limits, activation scale, the panic rule and scale-down delay,
 * and computes the excess burst capacity. Time is passed in (seconds), so
 * unit tests drive it directly.
 *
 * Ownership: the caller owns the struct; kpa_init allocates the bucket ring
 * (kpa_free releases it). */
#ifndef AUTOSCALER_KPA_H
#define AUTOSCALER_KPA_H

#include <stdbool.h>
#include <stdint.h>

#define KPA_MAX_WINDOW_SECONDS 3600 /* Knative's stable-window ceiling (1 h) */
/* The scale-down delay window's bucket width: Knative records desired counts
 * at unix-seconds / tickInterval (2 s), so two decisions in the same 2 s
 * bucket count as one. */
#define KPA_DELAY_GRANULARITY 2

struct kpa_config {
    double target;                /* per pod, utilisation applied: max(0.01, total x util) */
    double total;                 /* per-pod capacity before utilisation (CC, 100, or annotation) */
    double panic_threshold;       /* ratio: 2.0 for 200% */
    unsigned stable_window;       /* seconds, 6..3600 (default 60) */
    unsigned panic_window;        /* seconds, >= 1 (default 10% of stable) */
    double max_scale_up_rate;     /* 1000 */
    double max_scale_down_rate;   /* 2 */
    int activation_scale;         /* <= 1: unset */
    unsigned scale_down_delay;    /* seconds, 0 = none */
    double target_burst_capacity; /* 211; -1 = activator always in path; 0 = only at zero */
    bool rps; /* metric rps: requests per second are recorded instead of concurrency */
};

/* Knative's defaults for a revision with containerConcurrency cc. */
void kpa_config_defaults(struct kpa_config *c, long cc);

struct kpa_decision {
    int desired;          /* pods wanted; -1 = no data yet */
    double stable, panic; /* the window averages used */
    bool panicking;
    int excess_burst_capacity; /* -1: activator always in path */
};

struct kpa {
    struct kpa_config cfg;
    double *value; /* ring: one bucket per second, KPA_MAX_WINDOW_SECONDS long */
    int64_t *sec;  /* the second each bucket holds */
    int64_t first; /* first second with data (when any) */
    bool any;
    /* Panic state, Knative's panicTime/maxPanicPods. An explicit flag, not a
     * zero time: a panic may well start at second 0 of a test clock. */
    bool panicking;
    double panic_time;  /* last decision that was over the threshold (valid while panicking) */
    int max_panic_pods; /* the count never falls below this while panicking */
    /* Scale-down delay: the maximum desired count per KPA_DELAY_GRANULARITY
     * bucket, over the last ceil(delay / granularity) buckets (Knative's
     * max.TimeWindow). */
    int64_t *delay_bucket; /* the bucket each slot holds, INT64_MIN = none */
    int *delay_val;
    unsigned delay_slots;
};

bool kpa_init(struct kpa *k, const struct kpa_config *cfg);
void kpa_free(struct kpa *k);
/* Adds an observation at time `now` (seconds) into its second's bucket. */
void kpa_record(struct kpa *k, double now, double value);
/* Window average ending at `now` over `window` seconds (partial windows
 * average over the seconds since the first observation). */
double kpa_window_average(const struct kpa *k, double now, unsigned window);
/* One decision on the windows ending at `now`: ready_pods as Kubernetes
 * counts them; reachable = the revision takes traffic (scale-down limited
 * otherwise). No data at or before `now`: desired -1. */
struct kpa_decision kpa_decide(struct kpa *k, double now, int ready_pods, bool reachable);
/* The decision itself on given window averages (Knative's Scale() once its
 * metric client answered): what kpa_decide runs after averaging. Exposed so
 * tests can drive it with the numbers Knative's own tests use. Updates the
 * panic state and the scale-down delay window. */
struct kpa_decision kpa_scale(struct kpa *k, double now, double stable, double panic,
                              int ready_pods, bool reachable);
/* Knative's newAutoscaler: an autoscaler that starts with more than one ready
 * pod starts panicking at `now`, holding that many pods until it has data for
 * a stable window (a restart loses the metric history; this keeps the scale
 * from dropping meanwhile). Call once, before the first decision. */
void kpa_start(struct kpa *k, double now, int ready_pods);

#endif
