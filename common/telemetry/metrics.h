/* metrics.h — Prometheus text exposition for the request metrics.
 *
 * Histograms are kept per status code (a small fixed table: a pod sees a
 * handful of codes) and rendered only when scraped; recording is O(buckets)
 * with no allocation. Names follow OTel's Prometheus translation
 * (UnderscoreEscapingWithSuffixes), as Knative's queue-proxy exports them. */
#ifndef COLDBREW_METRICS_H
#define COLDBREW_METRICS_H

#include <event2/buffer.h>
#include <stdint.h>

#define METRICS_MAX_BUCKETS 16
#define METRICS_MAX_CODES   32

struct metrics_hist_row {
    int code;
    uint64_t buckets[METRICS_MAX_BUCKETS]; /* non-cumulative */
    uint64_t count;
    double sum;
};

struct metrics_hist {
    const char *name; /* without suffix, e.g. "kn_serving_invocation_duration_seconds" */
    const char *help;
    const double *bounds;
    unsigned nbounds;
    unsigned nrows;
    struct metrics_hist_row rows[METRICS_MAX_CODES];
};

/* Knative's bucket list (seconds). */
extern const double metrics_duration_bounds[14];

void metrics_hist_init(struct metrics_hist *h, const char *name, const char *help);
void metrics_hist_observe(struct metrics_hist *h, int code, double value);
/* `labels` is a preformatted label list without braces ("a=\"x\",b=\"y\""). */
void metrics_hist_render(const struct metrics_hist *h, const char *labels, struct evbuffer *out);
void metrics_gauge_render(const char *name, const char *help, const char *labels, double value,
                          struct evbuffer *out);
/* Escapes a label value into buf. */
void metrics_label_escape(char *buf, size_t cap, const char *v);

#endif
