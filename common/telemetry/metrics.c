/* metrics.c — see metrics.h. */
#include "telemetry/metrics.h"

#include <stdio.h>
#include <string.h>

const double metrics_duration_bounds[14] = {0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
                                            0.5,   0.75, 1,     2.5,  5,     7.5, 10};

void metrics_hist_init(struct metrics_hist *h, const char *name, const char *help)
{
    memset(h, 0, sizeof *h);
    h->name = name;
    h->help = help;
    h->bounds = metrics_duration_bounds;
    h->nbounds = 14;
}

void metrics_hist_observe(struct metrics_hist *h, int code, double value)
{
    struct metrics_hist_row *row = NULL;
    for (unsigned i = 0; i < h->nrows; i++)
        if (h->rows[i].code == code) {
            row = &h->rows[i];
            break;
        }
    if (!row) {
        /* Past the table, odd codes share the last row (labelled as it was first). */
        row = h->nrows < METRICS_MAX_CODES ? &h->rows[h->nrows++] : &h->rows[METRICS_MAX_CODES - 1];
        if (!row->count)
            row->code = code;
    }
    unsigned b = 0;
    while (b < h->nbounds && value > h->bounds[b])
        b++;
    if (b < h->nbounds)
        row->buckets[b]++;
    row->count++;
    row->sum += value;
}

void metrics_hist_render(const struct metrics_hist *h, const char *labels, struct evbuffer *out)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", h->name, h->help, h->name);
    for (unsigned r = 0; r < h->nrows; r++) {
        const struct metrics_hist_row *row = &h->rows[r];
        uint64_t cum = 0;
        for (unsigned b = 0; b < h->nbounds; b++) {
            cum += row->buckets[b];
            evbuffer_add_printf(out,
                                "%s_bucket{%s,http_response_status_code=\"%d\",le=\"%g\"} %llu\n",
                                h->name, labels, row->code, h->bounds[b], (unsigned long long)cum);
        }
        evbuffer_add_printf(out,
                            "%s_bucket{%s,http_response_status_code=\"%d\",le=\"+Inf\"} %llu\n",
                            h->name, labels, row->code, (unsigned long long)row->count);
        evbuffer_add_printf(out, "%s_sum{%s,http_response_status_code=\"%d\"} %.9g\n", h->name,
                            labels, row->code, row->sum);
        evbuffer_add_printf(out, "%s_count{%s,http_response_status_code=\"%d\"} %llu\n", h->name,
                            labels, row->code, (unsigned long long)row->count);
    }
}

void metrics_gauge_render(const char *name, const char *help, const char *labels, double value,
                          struct evbuffer *out)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s gauge\n%s{%s} %.17g\n", name, help, name,
                        name, labels, value);
}

void metrics_label_escape(char *buf, size_t cap, const char *v)
{
    size_t o = 0;
    for (; *v && o + 3 < cap; v++) {
        if (*v == '\\' || *v == '"') {
            buf[o++] = '\\';
            buf[o++] = *v;
        } else if (*v == '\n') {
            buf[o++] = '\\';
            buf[o++] = 'n';
        } else {
            buf[o++] = *v;
        }
    }
    buf[o] = 0;
}
