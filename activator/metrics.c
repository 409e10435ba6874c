/* metrics.c — the activator's Prometheus endpoint (METRICS_PROMETHEUS_PORT,
 * 9090, GET /metrics), Knative §6.6's metrics under OTel's Prometheus names:
 *
 *   kn_revision_request_concurrency   gauge, per revision: requests in the
 *                                     activator (held + forwarded)
 *   kn_revision_request_queued        per revision: held, waiting for a pod
 *   kn_revision_request_active        per revision: forwarded, in flight
 *   kn_activator_stats_conn_reachable gauge {peer="autoscaler"}: 1 while the
 *                                     stats websocket is up
 *   kn_activator_stats_conn_errors_total counter {peer="autoscaler"}: times
 *                                     that link was lost
 *   http_server_request_duration_seconds histogram by status code, proxied
 *                                     requests only (probes are not counted)
 *
 * Revision labels: k8s_namespace_name, kn_service_name,
 * kn_configuration_name, kn_revision_name. Rendered only when scraped; the
 * request path does one histogram observation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "telemetry/metrics.h"
#include "transport/tls_ctx.h"
#include "telemetry/otlp.h"
#include "activator.h"
#include "pods.h"

static struct metrics_hist duration;

void act_metrics_observe(int status, double seconds)
{
    metrics_hist_observe(&duration, status, seconds);
}

static void on_metrics(struct request *req, void *arg)
{
    (void)arg;
    if (http_path_is(req->head, "/coldstarts")) {
        struct evbuffer *b = evbuffer_new();
        cold_render_json(b);
        size_t len = evbuffer_get_length(b);
        request_reply(req, 200, "application/json", (const char *)evbuffer_pullup(b, -1), len,
                      NULL);
        evbuffer_free(b);
        return;
    }
    if (!http_path_is(req->head, "/metrics")) {
        request_error(req, 404, "404 page not found\n");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        log_error("metrics: %s; answered 503", coldbrew_err_no_memory);
        request_error(req, 503, "out of memory\n");
        return;
    }
    static const struct {
        const char *name, *help;
    } g[3] = {
        {"kn_revision_request_concurrency", "Concurrent requests in the activator per revision"},
        {"kn_revision_request_queued", "Requests held in the activator waiting for capacity"},
        {"kn_revision_request_active", "Requests forwarded by the activator and in flight"},
    };
    for (int k = 0; k < 3; k++) {
        evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", g[k].name, g[k].help, g[k].name);
        struct revision *r, *tmp;
        HASH_ITER(hh, act->revisions, r, tmp)
        {
            if (!r->exists)
                continue;
            unsigned queued = r->nwaiting, active = r->active - r->nwaiting;
            unsigned v = k == 0 ? queued + active : k == 1 ? queued : active;
            evbuffer_add_printf(b,
                                "%s{k8s_namespace_name=\"%s\",kn_service_name=\"%s\","
                                "kn_configuration_name=\"%s\",kn_revision_name=\"%s\"} %u\n",
                                g[k].name, r->ns, r->service, r->configuration, r->name, v);
        }
    }
    metrics_gauge_render("kn_activator_stats_conn_reachable",
                         "Whether the stats connection to the autoscaler is up",
                         "peer=\"autoscaler\"", act->autoscaler_connected ? 1 : 0, b);
    evbuffer_add_printf(b,
                        "# HELP kn_activator_stats_conn_errors_total Times the stats connection "
                        "was lost\n# TYPE kn_activator_stats_conn_errors_total counter\n"
                        "kn_activator_stats_conn_errors_total{peer=\"autoscaler\"} %lu\n",
                        act->autoscaler_conn_errors);
    if (act->cfg.internal_tls) {
        unsigned long full, resumed, refused;
        pod_pools_tls_counts(&full, &resumed, &refused);
        evbuffer_add_printf(b,
                            "# HELP coldbrew_activator_tls_handshakes_total TLS handshakes to "
                            "pods\n# TYPE coldbrew_activator_tls_handshakes_total counter\n"
                            "coldbrew_activator_tls_handshakes_total{result=\"full\"} %lu\n"
                            "coldbrew_activator_tls_handshakes_total{result=\"resumed\"} %lu\n"
                            "coldbrew_activator_tls_handshakes_total{result=\"refused\"} %lu\n",
                            full, resumed, refused);
    }
    char labels[160];
    snprintf(labels, sizeof labels, "k8s_pod_name=\"%.120s\"", act->cfg.pod_name);
    metrics_hist_render(&duration, labels, b);
    cold_render_metrics(b);
    if (act_otlp) {
        /* The exporter's losses (a collector down, slow or refusing): also
         * logged at most once a minute. */
        struct otlp_stats os;
        otlp_get_stats(act_otlp, &os);
        evbuffer_add_printf(
            b,
            "# HELP coldbrew_otlp_spans_dropped_total Spans not exported, by reason\n"
            "# TYPE coldbrew_otlp_spans_dropped_total counter\n"
            "coldbrew_otlp_spans_dropped_total{reason=\"queue_full\"} %llu\n"
            "coldbrew_otlp_spans_dropped_total{reason=\"export_failed\"} %llu\n"
            "# HELP coldbrew_otlp_spans_exported_total Spans the collector accepted\n"
            "# TYPE coldbrew_otlp_spans_exported_total counter\n"
            "coldbrew_otlp_spans_exported_total %llu\n",
            (unsigned long long)os.spans_dropped_full, (unsigned long long)os.spans_dropped_export,
            (unsigned long long)os.spans_exported);
    }
    size_t len = evbuffer_get_length(b);
    request_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8",
                  (const char *)evbuffer_pullup(b, -1), len, NULL);
    evbuffer_free(b);
}

static struct tls_ctx_server *metrics_tls;

void act_metrics_start(void)
{
    metrics_hist_init(&duration, "http_server_request_duration_seconds",
                      "Duration of requests proxied by the activator");
    const char *err;
    act->metrics = server_open(act->base, "metrics", act->cfg.listen_host, act->cfg.metrics_port,
                               &act->lim, on_metrics, NULL, &err);
    if (!act->metrics) {
        /* Metrics are not worth refusing traffic over: say so and go on. */
        log_error("metrics listener failed on port %d: %s", act->cfg.metrics_port, err);
        return;
    }
    /* METRICS_PROMETHEUS_TLS_CERT/_KEY: the port over TLS (Knative §1.1). */
    bool configured = false;
    char e[512] = "";
    metrics_tls = tls_ctx_metrics_from_env(act->base, &configured, e, sizeof e);
    if (configured && !metrics_tls) {
        log_error("%s", e);
        exit(1);
    }
    if (metrics_tls) {
        server_set_tls(act->metrics, metrics_tls);
        log_info("metrics over TLS on :%d", act->cfg.metrics_port);
    }
}

void act_metrics_stop(void)
{
    if (act->metrics)
        server_free(act->metrics);
    act->metrics = NULL;
    tls_ctx_server_free(metrics_tls);
    metrics_tls = NULL;
}
