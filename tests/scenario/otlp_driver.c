/* otlp_driver — drives common/telemetry/otlp.c for the scenario tests, until the
 * queue-proxy and the activator wire spans into their request paths.
 *
 *   otlp_driver tree [TRACEPARENT]
 *       One request's span tree, as the queue-proxy would make it: a server
 *       span "queue" (child of TRACEPARENT when it parses), its children
 *       "kn.queueproxy.wait" and "kn.queueproxy.proxy", plus a counter and a
 *       histogram. Flushes, waits (bounded) until the exporter is idle,
 *       prints "TRACEPARENT <the next hop's traceparent>" and the stats.
 *   otlp_driver pace SECONDS RATE
 *       RATE span trees a second for SECONDS, from a timer on the loop, as
 *       a request path would add them. Prints the stats, how many trees were
 *       made against how many were due, the worst timer lateness, the
 *       slowest otlp_add_span() and the peak RSS.
 *   otlp_driver encode TREES
 *       Queues TREES span trees, then times one otlp_flush(): the encoding
 *       of a batch and the start of its export, the exporter's own cost on
 *       the loop.
 *
 * OBSERVABILITY_CONFIG and the COLDBREW_OTLP_* settings come from the
 * environment. Logs go to stderr; stdout has "STATS {json}". */
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/loop.h"
#include "telemetry/otlp.h"

static struct event_base *base;
static struct otlp_exporter *x;
static double rate;
static struct otlp_series *count_200, *dur_200;

/* pace */
static uint64_t made, start_ns, end_ns, max_lag_ns, max_add_ns, adds;
/* Each tree's add time: the median is robust to a preemption or two. */
#define MAX_SAMPLES (1u << 20)
static uint32_t *add_ns;
static struct event pace_ev;
static double pace_rate;

static void one_tree(const struct trace_ctx *parent, char *tp_out)
{
    struct span root, wait, proxy;
    span_start_root(&root, "queue", SPAN_KIND_SERVER, parent, rate);
    span_set_str(&root, "http.request.method", "GET", 3);
    span_set_str(&root, "url.path", "/coffee", 7);
    span_set_str(&root, "kn.route.tag", "kn:disabled", 11);
    span_start_child(&wait, "kn.queueproxy.wait", SPAN_KIND_INTERNAL, &root);
    span_add_event(&wait, "breaker.acquired");
    span_end(&wait);
    span_start_child(&proxy, "kn.queueproxy.proxy", SPAN_KIND_INTERNAL, &root);
    if (tp_out)
        span_traceparent(&proxy, tp_out);
    span_set_int(&proxy, "http.response.status_code", 200);
    span_set_double(&proxy, "coldbrew.cold_start_seconds", 1.5);
    span_set_bool(&proxy, "coldbrew.cold", true);
    span_end(&proxy);
    span_set_int(&root, "http.response.status_code", 200);
    span_set_status(&root, SPAN_STATUS_ERROR, "just testing");
    span_end(&root);
    uint64_t t0 = clock_now_ns();
    otlp_add_span(x, &wait);
    otlp_add_span(x, &proxy);
    otlp_add_span(x, &root);
    otlp_series_add(count_200, 1);
    otlp_series_record(dur_200, 0.042);
    uint64_t d = clock_now_ns() - t0;
    if (d > max_add_ns)
        max_add_ns = d;
    if (add_ns && adds < MAX_SAMPLES)
        add_ns[adds++] = (uint32_t)(d > UINT32_MAX ? UINT32_MAX : d);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void print_stats(const char *extra)
{
    struct otlp_stats st;
    otlp_get_stats(x, &st);
    /* VmHWM: this program's peak resident set (getrusage's ru_maxrss would
     * include the parent's before exec). */
    long hwm = -1;
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            hwm = atol(line + 6);
    if (f)
        fclose(f);
    printf("STATS {\"spans_queued\":%llu,\"spans_exported\":%llu,\"spans_dropped_full\":%llu,"
           "\"spans_dropped_export\":%llu,\"spans_rejected\":%llu,\"exports_ok\":%llu,"
           "\"exports_failed\":%llu,\"metric_exports_ok\":%llu,\"metric_exports_failed\":%llu,"
           "\"queue_len\":%u,\"queue_cap\":%u,\"in_flight\":%u,\"max_rss_kb\":%ld,"
           "\"span_bytes\":%zu%s}\n",
           (unsigned long long)st.spans_queued, (unsigned long long)st.spans_exported,
           (unsigned long long)st.spans_dropped_full, (unsigned long long)st.spans_dropped_export,
           (unsigned long long)st.spans_rejected, (unsigned long long)st.exports_ok,
           (unsigned long long)st.exports_failed, (unsigned long long)st.metric_exports_ok,
           (unsigned long long)st.metric_exports_failed, st.queue_len, st.queue_cap, st.in_flight,
           hwm, sizeof(struct span), extra);
    fflush(stdout);
}

/* Turns the loop until the exporter is idle or `seconds` pass. */
static void drain(double seconds)
{
    uint64_t end = clock_now_ns() + (uint64_t)(seconds * 1e9);
    otlp_flush(x);
    while (!otlp_idle(x) && clock_now_ns() < end) {
        struct timeval tv = clock_tv(0.01);
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
}

static void on_pace(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    static uint64_t last;
    uint64_t now = clock_now_ns();
    /* The tick is every millisecond: anything later is the loop stalling. */
    if (last && now - last > 1000000 && now - last - 1000000 > max_lag_ns)
        max_lag_ns = now - last - 1000000;
    last = now;
    if (now >= end_ns) {
        event_del(&pace_ev);
        event_base_loopbreak(base);
        return;
    }
    /* Catch up with the schedule: the trees due by now. */
    uint64_t due = (uint64_t)((double)(now - start_ns) / 1e9 * pace_rate);
    while (made < due) {
        one_tree(NULL, NULL);
        made++;
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: otlp_driver tree [TRACEPARENT] | pace SECONDS RATE\n");
        return 2;
    }
    log_init("otlp-driver", NULL, NULL);
    log_set_fd(2);
    base = loop_init();
    struct otlp_config cfg;
    char err[256];
    const char *why = otlp_config_parse(getenv("OBSERVABILITY_CONFIG"), &cfg, err, sizeof err);
    if (why) {
        fprintf(stderr, "OBSERVABILITY_CONFIG: %s\n", why);
        return 1;
    }
    rate = cfg.sampling_rate;
    struct otlp_settings set;
    otlp_settings_from_env(&set);
    /* Knative's resource attributes for a queue-proxy (contract §3e). */
    const struct otlp_knative_ids ids = {
        .container = "queue-proxy",
        .ns = "default",
        .pod = "hello-00001-deployment-xyz",
        .service = "hello",
        .configuration = "hello",
        .revision = "hello-00001",
        .version = "abc123",
        .otel_service_name = getenv("OTEL_SERVICE_NAME"),
    };
    struct otlp_kv res[OTLP_KNATIVE_ATTRS];
    size_t nres = otlp_knative_resource(&ids, res);
    x = otlp_new(base, &cfg, &set, res, nres, "knative.dev/serving", &why);
    if (!x) {
        fprintf(stderr, "otlp_new: %s\n", why);
        return 1;
    }
    static const double bounds[] = {0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
                                    0.5,   0.75, 1,     2.5,  5,     7.5, 10};
    struct otlp_metric *dur =
        otlp_metric_new(x, "kn.serving.invocation.duration", "The time it takes for a request", "s",
                        OTLP_HISTOGRAM, bounds, 14);
    struct otlp_metric *cnt =
        otlp_metric_new(x, "coldbrew.requests", "Requests", "{request}", OTLP_COUNTER, NULL, 0);
    struct otlp_kv ok[] = {{"http.response.status_code", "200"}};
    dur_200 = otlp_series_get(dur, ok, 1);
    count_200 = otlp_series_get(cnt, ok, 1);

    if (!strcmp(argv[1], "tree")) {
        struct trace_ctx parent = {0};
        if (argc > 2 && trace_parse_traceparent(argv[2], strlen(argv[2]), &parent))
            parent.valid = false;
        char tp[TRACE_PARENT_LEN + 1] = "";
        one_tree(&parent, tp);
        printf("TRACEPARENT %s\n", tp);
        drain(10);
        print_stats("");
    } else if (!strcmp(argv[1], "pace") && argc > 3) {
        double seconds = atof(argv[2]);
        pace_rate = atof(argv[3]);
        add_ns = calloc(MAX_SAMPLES, sizeof *add_ns);
        start_ns = clock_now_ns();
        end_ns = start_ns + (uint64_t)(seconds * 1e9);
        event_assign(&pace_ev, base, -1, EV_PERSIST, on_pace, NULL);
        struct timeval tv = clock_tv(0.001);
        event_add(&pace_ev, &tv);
        event_base_dispatch(base);
        uint64_t due = (uint64_t)(seconds * pace_rate);
        /* What is still queued may go if the collector answers soon. */
        drain(2);
        qsort(add_ns, adds, sizeof *add_ns, cmp_u32);
        double median = adds ? add_ns[adds / 2] / 1e3 : 0,
               p99 = adds ? add_ns[adds * 99 / 100] / 1e3 : 0;
        char extra[256];
        snprintf(extra, sizeof extra,
                 ",\"trees\":%llu,\"due\":%llu,\"max_lag_ms\":%.3f,\"max_add_us\":%.3f,"
                 "\"median_add_us\":%.3f,\"p99_add_us\":%.3f",
                 (unsigned long long)made, (unsigned long long)due, (double)max_lag_ns / 1e6,
                 (double)max_add_ns / 1e3, median, p99);
        print_stats(extra);
    } else if (!strcmp(argv[1], "encode") && argc > 2) {
        /* The exporter's own cost on the loop: N trees queued, then the
         * time otlp_flush() takes to encode a batch and start sending it. */
        long n = atol(argv[2]);
        for (long i = 0; i < n; i++)
            one_tree(NULL, NULL);
        uint64_t t0 = clock_now_ns();
        otlp_flush(x);
        uint64_t t1 = clock_now_ns();
        drain(10);
        char extra[128];
        snprintf(extra, sizeof extra, ",\"flush_us\":%.1f", (double)(t1 - t0) / 1e3);
        print_stats(extra);
    } else {
        fprintf(stderr, "otlp_driver: unknown mode %s\n", argv[1]);
        return 2;
    }
    otlp_free(x);
    loop_flush_deferred();
    return 0;
}
