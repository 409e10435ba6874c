/* main.c — queue-proxy start-up and the process's lifetime.
 *
 * A drop-in for Knative's queue-proxy: no flags, configuration from the
 * environment the revision reconciler sets (config.c), exit 1 on bad
 * configuration or a listener that cannot open, exit 0 after a graceful
 * drain, exit 1 at once on a second signal. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/env.h"
#include "cluster/statpb.h"
#include "transport/tls_ctx.h"
#include "qp.h"

#ifdef COLDBREW_JEMALLOC
#include <jemalloc/jemalloc.h>
/* One arena (one thread), and return freed memory to the OS promptly: a
 * sidecar in every pod should idle small. */
const char *malloc_conf = "narenas:1,background_thread:false,dirty_decay_ms:2000,muzzy_decay_ms:0";
#endif

static struct qp the_qp;
struct qp *qp = &the_qp;

static void refresh_stat(uint64_t now)
{
    struct statpb s = {0};
    s.pod_name = qp->cfg.pod;
    if (now) {
        struct stats_report r = stats_report(&qp->stats, now);
        s.average_concurrent_requests = r.average_concurrency;
        s.average_proxied_concurrent_requests = r.average_proxied_concurrency;
        s.request_count = r.request_count; /* per 1 s period */
        s.proxied_request_count = r.proxied_request_count;
        s.process_uptime = (double)(now - qp->start_ns) / 1e9;
    }
    qp->stat_len = statpb_encode(&s, qp->stat_pb, sizeof qp->stat_pb);
}

/* After a second with no traffic, give memory back: a sidecar runs in
 * every pod and most of them idle most of the time. Pools keep a few objects
 * so the next burst starts warm; jemalloc returns freed pages to the OS. */
static void trim_when_idle(void)
{
    bool quiet = qp->requests_seen == qp->requests_at_tick && qp->in_flight == 0;
    qp->requests_at_tick = qp->requests_seen;
    if (!quiet) {
        qp->trimmed = false;
        return;
    }
    if (qp->trimmed)
        return;
    http_head_pool_trim(8);
    qp_ctx_pool_trim(8);
#ifdef COLDBREW_JEMALLOC
    mallctl("thread.tcache.flush", NULL, NULL, NULL, 0);
    mallctl("arena.0.purge", NULL, NULL, NULL, 0);
#endif
    qp->trimmed = true;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    refresh_stat(clock_now_ns());
    trim_when_idle();
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what, (void)arg;
    if (qp->sigterm) {
        log_warn("second signal (%d): exiting now", (int)sig);
        _exit(1);
    }
    log_info("Received TERM signal, attempting to gracefully shutdown servers.");
    qp_drain_start(true);
}

static struct server *open_or_die(const char *name, int port, request_cb cb)
{
    const char *err = NULL;
    struct server *s =
        server_open(qp->base, name, qp->cfg.listen_host, port, &qp->lim, cb, NULL, &err);
    if (!s) {
        log_error("%s server failed to listen on port %d: %s", name, port, err);
        log_error("Failed to bring up queue-proxy, shutting down.");
        exit(1);
    }
    return s;
}

static void make_labels(void)
{
    char ns[256], svc[256], cfgn[256], rev[256], pod[256];
    metrics_label_escape(ns, sizeof ns, qp->cfg.namespace_);
    metrics_label_escape(svc, sizeof svc, qp->cfg.service);
    metrics_label_escape(cfgn, sizeof cfgn, qp->cfg.configuration);
    metrics_label_escape(rev, sizeof rev, qp->cfg.revision);
    metrics_label_escape(pod, sizeof pod, qp->cfg.pod);
    snprintf(qp->labels, sizeof qp->labels,
             "k8s_namespace_name=\"%s\",kn_service_name=\"%s\",kn_configuration_name=\"%s\","
             "kn_revision_name=\"%s\",k8s_pod_name=\"%s\",k8s_container_name=\"queue-proxy\"",
             ns, svc, cfgn, rev, pod);
}

static bool file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* QUEUE_SERVING_TLS_PORT (Knative §2): only when both files exist; the
 * same handler as the plain port, which stays up. The certificate is
 * re-read every minute (COLDBREW_TLS_RELOAD_INTERVAL) and swapped when its
 * bytes change; connections already open keep theirs. */
static void start_tls(void)
{
    const char *dir = env_str("COLDBREW_CERTS_DIR", "/var/lib/knative/certs");
    static char crt[512], key[512];
    snprintf(crt, sizeof crt, "%s/tls.crt", dir);
    snprintf(key, sizeof key, "%s/tls.key", dir);
    if (qp->cfg.tls_port && file_exists(crt) && file_exists(key)) {
        static struct tls_ctx_env envstore;
        struct tls_ctx_server_opts o = {.cert_file = crt, .key_file = key};
        char err[256];
        if (!tls_ctx_opts_from_env("QUEUE_PROXY_", &o, &envstore, err, sizeof err)) {
            log_error("TLS settings: %s", err);
            exit(1);
        }
        const char *why = NULL;
        qp->tls = tls_ctx_server_new(&o, &why);
        if (!qp->tls) {
            log_error("TLS on port %d: %s: %s", qp->cfg.tls_port, crt, why);
            exit(1);
        }
        tls_ctx_server_watch(qp->tls, qp->base, 0);
        qp->tls_srv = open_or_die("tls", qp->cfg.tls_port, qp_on_request);
        server_set_tls(qp->tls_srv, qp->tls);
        log_info("serving TLS on :%d (HTTP/1.1 and h2 by ALPN)", qp->cfg.tls_port);
    } else if (qp->cfg.tls_port) {
        log_debug("no %s and %s: no TLS listener on %d", crt, key, qp->cfg.tls_port);
    }
    /* METRICS_PROMETHEUS_TLS_CERT/_KEY: the Prometheus port over TLS. */
    if (qp->prom_srv) {
        bool configured = false;
        char err[512] = "";
        qp->prom_tls = tls_ctx_metrics_from_env(qp->base, &configured, err, sizeof err);
        if (configured && !qp->prom_tls) {
            log_error("%s", err);
            exit(1);
        }
        if (qp->prom_tls) {
            server_set_tls(qp->prom_srv, qp->prom_tls);
            log_info("prometheus metrics over TLS on :%d", qp->cfg.prometheus_port);
        }
    }
}

int main(void)
{
    char err[1200];
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!config_load(&qp->cfg, err, sizeof err)) {
        log_init("queueproxy", NULL, NULL);
        log_error("failed to process environment: %s", err);
        return 1;
    }
    static char key[512];
    snprintf(key, sizeof key, "%s/%s", qp->cfg.namespace_, qp->cfg.revision);
    log_init("queueproxy", key, qp->cfg.pod);
    log_set_level(qp->cfg.log_level);
    if (qp->cfg.custom_request_log_template)
        log_warn(
            "custom request log templates are not supported; using Knative's default template");

    qp->base = loop_init();
    qp->start_ns = clock_now_ns();
    server_limits_from_env(&qp->lim);
    unsigned pool =
        qp->cfg.container_concurrency > 0 ? (unsigned)qp->cfg.container_concurrency : 1000;
    if (!upstream_init(&qp->user, qp->base, "127.0.0.1", qp->cfg.user_port, pool,
                       qp->cfg.upstream_idle_seconds)) {
        log_error("bad upstream address");
        return 1;
    }
    if (qp->cfg.container_concurrency > 0) {
        unsigned cc = (unsigned)qp->cfg.container_concurrency;
        breaker_init(&qp->breaker, qp->base, cc, 10 * cc);
        qp->has_breaker = true;
    }
    stats_init(&qp->stats, qp->start_ns);
    if (!readiness_init(&qp->readiness, qp->base, qp->cfg.readiness_probe,
                        qp->cfg.multi_container_probes, qp->cfg.autodetect_h2, qp->cfg.user_port,
                        err, sizeof err)) {
        log_error("failed to parse readiness probe: %s", err);
        return 1;
    }
    qp->readiness.interval = qp->cfg.aggressive_interval;
    metrics_hist_init(&qp->invocation, "kn_serving_invocation_duration_seconds",
                      "The duration of task execution.");
    metrics_hist_init(&qp->server_dur, "http_server_request_duration_seconds",
                      "Duration of HTTP server requests.");
    make_labels();
    refresh_stat(0);
    qp_telemetry_init();

    qp->main_srv = open_or_die("main", qp->cfg.serving_port, qp_on_request);
    qp->admin_srv = open_or_die("admin", qp->cfg.admin_port, qp_admin_request);
    qp->stat_srv = open_or_die("metrics", qp->cfg.stat_port, qp_stat_request);
    if (qp->cfg.prometheus_enabled)
        qp->prom_srv = open_or_die("prometheus", qp->cfg.prometheus_port, qp_prom_request);
    start_tls();

    struct event *tick = event_new(qp->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval one = {1, 0};
    event_add(tick, &one);
    struct event *sigterm = evsignal_new(qp->base, SIGTERM, on_signal, NULL);
    struct event *sigint = evsignal_new(qp->base, SIGINT, on_signal, NULL);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);

    log_info("queue-proxy serving on :%d -> 127.0.0.1:%d (containerConcurrency %ld), admin :%d, "
             "stats :%d%s",
             qp->cfg.serving_port, qp->cfg.user_port, qp->cfg.container_concurrency,
             qp->cfg.admin_port, qp->cfg.stat_port,
             qp->cfg.prometheus_enabled ? ", prometheus on" : "");

    event_base_dispatch(qp->base);
    qp_telemetry_free(); /* the last spans and metrics, bounded by COLDBREW_OTLP_TIMEOUT_MS */

    /* Orderly teardown so leak checkers see a clean heap. */
    event_free(tick);
    event_free(sigterm);
    event_free(sigint);
    if (qp->quiet_timer)
        event_free(qp->quiet_timer);
    if (qp->exit_timer)
        event_free(qp->exit_timer);
    server_free(qp->main_srv);
    server_free(qp->admin_srv);
    server_free(qp->stat_srv);
    server_free(qp->prom_srv);
    server_free(qp->tls_srv);
    tls_ctx_server_free(qp->tls);
    tls_ctx_server_free(qp->prom_tls);
    upstream_release_h2(&qp->user);
    loop_flush_deferred();
    upstream_close_idle(&qp->user);
    if (qp->has_breaker)
        breaker_deinit(&qp->breaker);
    readiness_free(&qp->readiness);
    loop_free();
    http_head_pool_drain();
    qp_ctx_pool_trim(0);
    return 0;
}
