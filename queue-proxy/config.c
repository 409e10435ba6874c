/* config.c — see config.h. */
#include "config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/env.h"

static bool port_of(const char *name, const char *v, int *out, char *err, unsigned cap)
{
    long p;
    if (!parse_long(v, &p) || p < 1 || p > 65535) {
        snprintf(err, cap, "%s: invalid port %s", name, v ? v : "(empty)");
        return false;
    }
    *out = (int)p;
    return true;
}

static bool observability(struct qp_config *cfg, const char *js, char *err, unsigned cap)
{
    json_error_t je;
    json_t *root = json_loads(js, 0, &je);
    if (!root || !json_is_object(root)) {
        snprintf(err, cap, "failed to parse OBSERVABILITY_CONFIG: %s",
                 root ? "not an object" : je.text);
        json_decref(root);
        return false;
    }
    json_t *v;
    if ((v = json_object_get(root, "enableRequestLog")) && json_is_boolean(v))
        cfg->enable_request_log = json_is_true(v);
    if ((v = json_object_get(root, "enableProbeRequestLog")) && json_is_boolean(v))
        cfg->enable_probe_request_log = json_is_true(v);
    if ((v = json_object_get(root, "requestLogTemplate")) && json_is_string(v) &&
        json_string_length(v) > 0)
        cfg->custom_request_log_template = true;
    json_t *rm = json_object_get(root, "requestMetrics");
    if (rm && (v = json_object_get(rm, "protocol")) && json_is_string(v))
        cfg->prometheus_enabled = !strcmp(json_string_value(v), "prometheus");
    json_decref(root);
    return true;
}

bool config_load(struct qp_config *cfg, char *err, unsigned cap)
{
    memset(cfg, 0, sizeof *cfg);
    struct env_missing m = {{0}, 0};
    cfg->namespace_ = env_require(&m, "SERVING_NAMESPACE");
    cfg->service = env_str("SERVING_SERVICE", "");
    cfg->configuration = env_require(&m, "SERVING_CONFIGURATION");
    cfg->revision = env_require(&m, "SERVING_REVISION");
    cfg->pod = env_require(&m, "SERVING_POD");
    cfg->pod_ip = env_require(&m, "SERVING_POD_IP");
    const char *sp = env_require(&m, "QUEUE_SERVING_PORT");
    const char *tp = env_require(&m, "QUEUE_SERVING_TLS_PORT");
    const char *up = env_require(&m, "USER_PORT");
    const char *cc = env_require(&m, "CONTAINER_CONCURRENCY");
    const char *rt = env_require(&m, "REVISION_TIMEOUT_SECONDS");
    env_require(&m, "SERVING_LOGGING_CONFIG");
    cfg->log_level = env_require(&m, "SERVING_LOGGING_LEVEL");
    if (m.count) {
        snprintf(err, cap, "required key%s %s missing value", m.count > 1 ? "s" : "", m.names);
        return false;
    }
    if (!port_of("QUEUE_SERVING_PORT", sp, &cfg->serving_port, err, cap) ||
        !port_of("USER_PORT", up, &cfg->user_port, err, cap))
        return false;
    if (!*tp || !port_of("QUEUE_SERVING_TLS_PORT", tp, &cfg->tls_port, err, cap))
        cfg->tls_port = 0;
    if (!parse_long(cc, &cfg->container_concurrency) || cfg->container_concurrency < 0) {
        snprintf(err, cap, "CONTAINER_CONCURRENCY: invalid value %s", cc);
        return false;
    }
    long l;
    if (!parse_long(rt, &l)) {
        snprintf(err, cap, "REVISION_TIMEOUT_SECONDS: invalid value %s", rt);
        return false;
    }
    cfg->revision_timeout = (double)l;
    bool ok = true;
    cfg->response_start_timeout =
        (double)env_long("REVISION_RESPONSE_START_TIMEOUT_SECONDS", 0, &ok);
    cfg->idle_timeout = (double)env_long("REVISION_IDLE_TIMEOUT_SECONDS", 0, &ok);
    if (!ok) {
        snprintf(err, cap, "REVISION_*_TIMEOUT_SECONDS: invalid value");
        return false;
    }
    cfg->readiness_probe = env_str("SERVING_READINESS_PROBE", "");
    cfg->multi_container_probes = env_bool("ENABLE_MULTI_CONTAINER_PROBES", false);
    cfg->autodetect_h2 = env_bool("ENABLE_HTTP2_AUTO_DETECTION", false);

    /* Legacy (<= v1.18) observability variables first; OBSERVABILITY_CONFIG wins. */
    cfg->enable_request_log = env_bool("SERVING_ENABLE_REQUEST_LOG", false);
    cfg->enable_probe_request_log = env_bool("SERVING_ENABLE_PROBE_REQUEST_LOG", false);
    cfg->custom_request_log_template = *env_str("SERVING_REQUEST_LOG_TEMPLATE", "") != 0;
    cfg->prometheus_enabled = !strcmp(env_str("SERVING_REQUEST_METRICS_BACKEND", ""), "prometheus");
    const char *obs = getenv("OBSERVABILITY_CONFIG");
    if (obs && *obs && !observability(cfg, obs, err, cap))
        return false;

    ok = true;
    cfg->admin_port = (int)env_long("QUEUE_ADMIN_PORT", 8022, &ok);
    cfg->stat_port = (int)env_long("QUEUE_METRICS_PORT", 9090, &ok);
    cfg->prometheus_port = (int)env_long("METRICS_PROMETHEUS_PORT", 9091, &ok);
    cfg->listen_host = env_str("COLDBREW_LISTEN_HOST", NULL);
    cfg->drain_quiet_seconds = env_double("QUEUE_DRAIN_QUIET_SECONDS", 30, &ok);
    cfg->hijack_drain_seconds = env_double("COLDBREW_HIJACK_DRAIN_SECONDS", 60, &ok);
    cfg->upstream_idle_seconds = env_double("COLDBREW_UPSTREAM_IDLE_SECONDS", 4, &ok);
    /* The local platform polls a starting user process faster than Knative's
     * 50 ms so a cold start is not rounded up to the next poll. */
    cfg->aggressive_interval = env_duration("COLDBREW_AGGRESSIVE_PROBE_INTERVAL", 0.05, &ok);
    if (cfg->aggressive_interval <= 0)
        ok = false;
    if (!ok) {
        snprintf(err, cap, "a port or duration override is not a number");
        return false;
    }
    return true;
}
