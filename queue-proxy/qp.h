/* qp.h — the queue-proxy process: its state and the rooms it is built from.
 *
 *   main.c       start-up: env contract, listeners, signals, the 1 s stat tick
 *   handler.c    the serving port: probe table, breaker, proxy to the user container
 *   admin.c      admin (8022 /wait-for-drain), Stat (9090), Prometheus (9091), drain
 *   readiness.c  user-container readiness probing
 *
 * One process-wide `struct qp` lives in main.c; every room reaches it through
 * the `qp` pointer. */
#ifndef QP_QP_H
#define QP_QP_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy/breaker.h"
#include "telemetry/metrics.h"
#include "telemetry/otlp.h"
#include "proxy/proxy.h"
#include "http/server.h"
#include "cluster/stats.h"
#include "proxy/upstream.h"
#include "config.h"
#include "readiness.h"

struct tls_ctx_server;

struct qp {
    struct qp_config cfg;
    struct event_base *base;
    struct server_limits lim;
    struct server *main_srv, *admin_srv, *stat_srv, *prom_srv;
    struct server *tls_srv;                /* QUEUE_SERVING_TLS_PORT, when the certs exist */
    struct tls_ctx_server *tls, *prom_tls; /* 8112's and the Prometheus port's certificates */
    struct upstream user;
    struct breaker breaker;
    bool has_breaker;
    struct stats stats;
    struct readiness readiness;
    uint64_t start_ns;

    /* The last Stat, encoded; refreshed by the 1 s tick. */
    uint8_t stat_pb[512];
    size_t stat_len;

    /* Prometheus */
    struct metrics_hist invocation; /* kn_serving_invocation_duration_seconds */
    struct metrics_hist server_dur; /* http_server_request_duration_seconds */
    char labels[2048];

    /* OpenTelemetry (telemetry.c); all NULL/false when OBSERVABILITY_CONFIG exports nothing. */
    struct otlp_exporter *otlp;
    bool tracing; /* spans are made and exported */
    double sampling_rate;
    double otlp_timeout; /* the exit flush waits at most this (COLDBREW_OTLP_TIMEOUT_MS) */
    struct otlp_metric *m_invocation, *m_server_dur;
    struct otlp_series *s_invocation[500], *s_server_dur[500]; /* by status 100..599 */
    struct otlp_series *s_depth;                               /* kn.serving.queue.depth */

    /* Drain */
    bool draining; /* SIGTERM (or /wait-for-drain) seen: probes fail */
    bool drained;  /* quiet period over: listeners closed */
    bool sigterm;
    uint64_t drained_ns;
    struct event *quiet_timer, *exit_timer;
    unsigned in_flight;        /* requests on the serving port not yet finished */
    uint64_t requests_seen;    /* serving-port requests since start */
    uint64_t requests_at_tick; /* ... as of the previous idle check */
    bool trimmed;              /* pools trimmed since the last traffic */
};

extern struct qp *qp;

/* handler.c */
void qp_on_request(struct request *req, void *arg);
void qp_ctx_pool_trim(unsigned keep);

/* telemetry.c */
void qp_telemetry_init(void);
void qp_telemetry_request(int status, double total_s, double invocation_s, bool invoked);
void qp_telemetry_free(void);

/* admin.c */
void qp_admin_request(struct request *req, void *arg);
void qp_stat_request(struct request *req, void *arg);
void qp_prom_request(struct request *req, void *arg);
void qp_drain_start(bool from_signal);
void qp_drain_touch(void); /* a non-probe request arrived while draining */
void qp_check_exit(void);

#endif
