/* telemetry.c — the queue-proxy's OpenTelemetry export (contract §1c, §3a, §3e).
 *
 * OBSERVABILITY_CONFIG's "tracing" block turns spans on (http/protobuf or
 * grpc; "none", the default, leaves them off and the request path does no
 * tracing work at all: an incoming traceparent then passes through
 * untouched, as Knative's noop provider leaves it). Its "requestMetrics"
 * block with http/protobuf or grpc exports Knative's request metrics
 * (kn.serving.invocation.duration, http.server.request.duration, by status
 * code; kn.serving.queue.depth when containerConcurrency > 0); "prometheus"
 * keeps the existing :9091 endpoint (admin.c).
 *
 * Everything here runs at start-up and exit; handler.c does the per-request
 * part with the handles kept in `struct qp`. Export never blocks a request
 * (common/telemetry/otlp.h: a bounded ring, batches, drops counted and logged once a
 * minute). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "qp.h"

#ifndef COLDBREW_VERSION
#define COLDBREW_VERSION "dev" /* Knative's changeset; service.version */
#endif

/* Knative's request duration buckets (pkg/queue/request_metric.go). */
static const double duration_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
                                         0.5,   0.75, 1,     2.5,  5,     7.5, 10};

void qp_telemetry_init(void)
{
    struct otlp_config oc;
    char err[512];
    const char *why = otlp_config_parse(getenv("OBSERVABILITY_CONFIG"), &oc, err, sizeof err);
    if (why) {
        /* config.c already refused JSON that does not parse; this is an
         * endpoint or protocol the exporter cannot use: serve without it. */
        log_error("OBSERVABILITY_CONFIG: %s; OpenTelemetry export is off", why);
        return;
    }
    if (oc.traces.protocol == OTLP_UNSUPPORTED)
        log_warn("tracing protocol %s is not supported; tracing is off", oc.traces.proto_name);
    if (oc.traces.protocol != OTLP_GRPC && oc.traces.protocol != OTLP_HTTP_PROTOBUF)
        oc.traces.protocol = OTLP_NONE;
    if (oc.metrics.protocol != OTLP_GRPC && oc.metrics.protocol != OTLP_HTTP_PROTOBUF)
        oc.metrics.protocol = OTLP_NONE; /* "prometheus" is served on :9091 instead */
    if (oc.traces.protocol == OTLP_NONE && oc.metrics.protocol == OTLP_NONE)
        return;
    struct otlp_settings set;
    otlp_settings_from_env(&set);
    qp->otlp_timeout = set.timeout_s;
    const struct otlp_knative_ids ids = {
        .container = "queue-proxy",
        .ns = qp->cfg.namespace_,
        .pod = qp->cfg.pod,
        .service = qp->cfg.service,
        .configuration = qp->cfg.configuration,
        .revision = qp->cfg.revision,
        .version = COLDBREW_VERSION,
        .otel_service_name = getenv("OTEL_SERVICE_NAME"),
    };
    struct otlp_kv res[OTLP_KNATIVE_ATTRS];
    size_t nres = otlp_knative_resource(&ids, res);
    qp->otlp = otlp_new(qp->base, &oc, &set, res, nres, "knative.dev/serving", &why);
    if (!qp->otlp) {
        log_error("OpenTelemetry exporter: %s; export is off", why);
        return;
    }
    qp->tracing = otlp_tracing(qp->otlp);
    qp->sampling_rate = oc.sampling_rate;
    if (oc.metrics.protocol != OTLP_NONE) {
        qp->m_invocation = otlp_metric_new(qp->otlp, "kn.serving.invocation.duration",
                                           "The time it takes for a request", "s", OTLP_HISTOGRAM,
                                           duration_bounds, 14);
        qp->m_server_dur = otlp_metric_new(qp->otlp, "http.server.request.duration",
                                           "Duration of HTTP server requests.", "s", OTLP_HISTOGRAM,
                                           duration_bounds, 14);
        if (qp->has_breaker) {
            struct otlp_metric *m = otlp_metric_new(qp->otlp, "kn.serving.queue.depth",
                                                    "Number of current items in the queue",
                                                    "{request}", OTLP_GAUGE_INT, NULL, 0);
            qp->s_depth = otlp_series_get(m, NULL, 0);
        }
    }
    log_info("OpenTelemetry: tracing %s%s%s (sampling %g), request metrics %s%s%s",
             oc.traces.protocol ? oc.traces.proto_name : "off", oc.traces.protocol ? " to " : "",
             oc.traces.protocol ? oc.traces.host : "", oc.sampling_rate,
             oc.metrics.protocol ? oc.metrics.proto_name : "off", oc.metrics.protocol ? " to " : "",
             oc.metrics.protocol ? oc.metrics.host : "");
}

/* The series of a status code, looked up once per code and kept. */
static struct otlp_series *series_for(struct otlp_metric *m, struct otlp_series **cache, int status)
{
    if (!m || status < 100 || status > 599)
        return NULL;
    struct otlp_series **slot = &cache[status - 100];
    if (!*slot) {
        char code[8];
        snprintf(code, sizeof code, "%d", status);
        const struct otlp_kv attrs[] = {{"http.response.status_code", code}};
        *slot = otlp_series_get(m, attrs, 1);
    }
    return *slot;
}

void qp_telemetry_request(int status, double total_s, double invocation_s, bool invoked)
{
    otlp_series_record(series_for(qp->m_server_dur, qp->s_server_dur, status), total_s);
    if (invoked)
        otlp_series_record(series_for(qp->m_invocation, qp->s_invocation, status), invocation_s);
}

void qp_telemetry_free(void)
{
    if (!qp->otlp)
        return;
    otlp_drain(qp->otlp, qp->otlp_timeout);
    otlp_free(qp->otlp);
    qp->otlp = NULL;
}
