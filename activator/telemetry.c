/* telemetry.c — the activator's OpenTelemetry tracing (Knative §6.6).
 *
 * Knative's activator reads config-observability; coldbrew's reads the
 * same settings as the queue-proxy does, from OBSERVABILITY_CONFIG (JSON,
 * contract §1c): "tracing" with protocol http/protobuf or grpc, endpoint,
 * samplingRate. "none" (the default) leaves tracing off, and an incoming
 * traceparent passes through untouched. A config the exporter cannot use
 * is logged and tracing stays off: traffic is not refused over it.
 * handler.c makes the spans; export never blocks a request (otlp.h). */
#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"
#include "telemetry/otlp.h"
#include "activator.h"

#ifndef COLDBREW_VERSION
#define COLDBREW_VERSION "dev"
#endif

struct otlp_exporter *act_otlp;
bool act_tracing;
double act_sampling_rate;
static double flush_timeout;

void act_telemetry_init(void)
{
    const char *js = getenv("OBSERVABILITY_CONFIG");
    struct otlp_config oc;
    char err[512];
    const char *why = otlp_config_parse(js, &oc, err, sizeof err);
    if (why) {
        log_error("OBSERVABILITY_CONFIG: %s; tracing is off", why);
        return;
    }
    oc.metrics.protocol = OTLP_NONE; /* the activator's metrics are Prometheus (metrics.c) */
    if (oc.traces.protocol == OTLP_UNSUPPORTED)
        log_warn("tracing protocol %s is not supported; tracing is off", oc.traces.proto_name);
    if (oc.traces.protocol != OTLP_GRPC && oc.traces.protocol != OTLP_HTTP_PROTOBUF)
        return;
    struct otlp_settings set;
    otlp_settings_from_env(&set);
    flush_timeout = set.timeout_s;
    const char *name = getenv("OTEL_SERVICE_NAME");
    const struct otlp_knative_ids ids = {
        .container = "activator",
        .ns = act->cfg.system_namespace,
        .pod = act->cfg.pod_name,
        .version = COLDBREW_VERSION,
        .otel_service_name = name && *name ? name : "activator",
    };
    struct otlp_kv res[OTLP_KNATIVE_ATTRS];
    size_t nres = otlp_knative_resource(&ids, res);
    act_otlp = otlp_new(act->base, &oc, &set, res, nres, "knative.dev/serving", &why);
    if (!act_otlp) {
        log_error("OpenTelemetry exporter: %s; tracing is off", why);
        return;
    }
    act_tracing = otlp_tracing(act_otlp);
    act_sampling_rate = oc.sampling_rate;
    log_info("OpenTelemetry: tracing %s to %s:%d (sampling %g)", oc.traces.proto_name,
             oc.traces.host, oc.traces.port, oc.sampling_rate);
}

void act_telemetry_free(void)
{
    if (!act_otlp)
        return;
    otlp_drain(act_otlp, flush_timeout);
    otlp_free(act_otlp);
    act_otlp = NULL;
    act_tracing = false;
}
