/* config.h — the queue-proxy's environment contract (Knative v1.23 §1).
 *
 * config_load() reads every variable Knative's reconciler sets, exits 1
 * naming each required one that is absent (envconfig's behaviour), parses
 * OBSERVABILITY_CONFIG (JSON, invalid = fatal) on top of its defaults, and
 * honours the legacy (≤ v1.18) variables. coldbrew's own settings are
 * COLDBREW_* and the port overrides listed in the README. */
#ifndef QP_CONFIG_H
#define QP_CONFIG_H

#include <stdbool.h>

struct qp_config {
    const char *namespace_, *service, *configuration, *revision, *pod, *pod_ip;
    int serving_port, tls_port, user_port;
    int admin_port;          /* QUEUE_ADMIN_PORT, default 8022 */
    int stat_port;           /* QUEUE_METRICS_PORT, default 9090 */
    int prometheus_port;     /* METRICS_PROMETHEUS_PORT, default 9091 */
    const char *listen_host; /* COLDBREW_LISTEN_HOST, default all interfaces */
    long container_concurrency;
    double revision_timeout, response_start_timeout, idle_timeout;
    const char *readiness_probe; /* JSON or "" */
    bool multi_container_probes;
    bool autodetect_h2; /* ENABLE_HTTP2_AUTO_DETECTION */
    bool enable_request_log, enable_probe_request_log;
    bool custom_request_log_template;
    bool prometheus_enabled;
    double drain_quiet_seconds;   /* QUEUE_DRAIN_QUIET_SECONDS, default 30 */
    double aggressive_interval;   /* COLDBREW_AGGRESSIVE_PROBE_INTERVAL, default 50ms (Knative's) */
    double hijack_drain_seconds;  /* 60 */
    double upstream_idle_seconds; /* COLDBREW_UPSTREAM_IDLE_SECONDS, default 4 */
    const char *log_level;
};

/* Fills cfg from the environment; on a fatal problem writes `err` and returns false. */
bool config_load(struct qp_config *cfg, char *err, unsigned errcap);

#endif
