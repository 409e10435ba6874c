/* main.c — activator start-up and lifetime (Knative §1.1, §7).
 *
 * Start-up: env contract (exit 1 naming what is missing), the Kubernetes
 * watches, and only once every watch has listed once, the listeners (as
 * Knative starts serving after its informers sync). Shutdown: the first
 * SIGTERM fails kubelet probes at once and keeps serving for the drain
 * period (ACTIVATOR_DRAIN_SECONDS, Knative's 45 s); then listeners close,
 * idle connections close, in-flight requests finish, exit 0. A second
 * signal exits 1 at once. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/alloc.h"
#include "core/log.h"
#include "proxy/proxy.h"
#include "core/loop.h"
#include "activator.h"

#ifdef COLDBREW_JEMALLOC
const char *malloc_conf = "narenas:1,background_thread:false,dirty_decay_ms:2000,muzzy_decay_ms:0";
#endif

static struct activator the_act;
struct activator *act = &the_act;

static void on_exit_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    act_check_exit();
}

void act_check_exit(void)
{
    if (!act->drained)
        return;
    /* Lingering connections (answered, the client still sending) end within
     * COLDBREW_LINGERING_TIME_SECONDS: waiting for them lets their answers land. */
    if (act->in_flight == 0 && !server_lingering(act->http) && !server_lingering(act->h2c) &&
        !server_lingering(act->https)) {
        log_info("Shutdown complete, exiting...");
        /* loopexit: this turn's active callbacks (deferred HTTP/2 sends) still run. */
        event_base_loopexit(act->base, NULL);
        return;
    }
    if (!event_pending(act->exit_timer, EV_TIMEOUT, NULL)) {
        struct timeval tv = clock_tv(0.5);
        event_add(act->exit_timer, &tv);
    }
}

static void on_drained(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    act->drained = true;
    struct server *all[] = {act->http, act->h2c, act->https};
    for (unsigned i = 0; i < 3; i++)
        if (all[i]) {
            server_stop_accepting(all[i]);
            server_close_idle(all[i]);
        }
    act_check_exit();
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what, (void)arg;
    if (act->sigterm) {
        log_warn("second signal (%d): exiting now", (int)sig);
        _exit(1);
    }
    act->sigterm = true;
    log_info("Received TERM signal; serving for %gs while endpoints update, then draining",
             act->cfg.drain_seconds);
    struct timeval tv = clock_tv(act->cfg.drain_seconds);
    event_add(act->drain_timer, &tv);
}

static struct server *listen_or_die(const char *name, int port)
{
    const char *err;
    struct server *s = server_open(act->base, name, act->cfg.listen_host, port, &act->lim,
                                   act_on_request, NULL, &err);
    if (!s) {
        log_error("%s listener failed on port %d: %s", name, port, err);
        exit(1);
    }
    s->timeout_body = "activator request timeout";
    return s;
}

/* Listen once every watch has synced (Knative waits for its informer caches). */
static void on_sync_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct event *self = arg;
    if (act->synced < act->watches || act->http) {
        if (!act->http) {
            struct timeval tv = clock_tv(0.02);
            event_add(self, &tv);
        }
        return;
    }
    act->http = listen_or_die("http", act->cfg.http_port);
    act->h2c = listen_or_die("h2c", act->cfg.h2c_port);
    act_tls_listen();
    log_info("activator serving on :%d and :%d (HTTP/1.1 and h2c on both)%s, autoscaler %s",
             act->cfg.http_port, act->cfg.h2c_port, act->https ? ", TLS on the https port" : "",
             act->cfg.autoscaler_url);
}

int main(void)
{
    char err[1200];
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!act_config_load(&act->cfg, err, sizeof err)) {
        log_init("activator", NULL, NULL);
        log_error("failed to process environment: %s", err);
        return 1;
    }
    log_init("activator", NULL, act->cfg.pod_name);
    act->base = loop_init();
    server_limits_from_env(&act->lim);
    pod_pools_init(act->base, act->cfg.max_idle_per_host, act->cfg.upstream_idle_seconds);
    if (k8s_client_init(&act->k8s, act->base, err, sizeof err)) {
        log_error("%s", err);
        return 1;
    }
    act->w_rev = k8s_watch_start(&act->k8s, "/apis/serving.knative.dev/v1/revisions", NULL,
                                 revisions_on_revision, NULL);
    act->w_private = k8s_watch_start(&act->k8s, "/api/v1/endpoints",
                                     "networking.internal.knative.dev/serviceType=Private",
                                     revisions_on_private_endpoints, NULL);
    act->w_public = k8s_watch_start(&act->k8s, "/api/v1/endpoints",
                                    "networking.internal.knative.dev/serviceType=Public",
                                    revisions_on_public_endpoints, NULL);
    /* Private Services: their ClusterIP, for the mesh fallback (§3.8). */
    act->w_services = k8s_watch_start(&act->k8s, "/api/v1/services",
                                      "networking.internal.knative.dev/serviceType=Private",
                                      revisions_on_private_service, NULL);
    act->watches = 4;
    act->watches += act_tls_start();
    if (act->cfg.ingress) {
        act->w_ingress =
            k8s_watch_start(&act->k8s, "/apis/networking.internal.knative.dev/v1alpha1/ingresses",
                            NULL, ingress_on_object, NULL);
        act->watches++;
    }
    act_metrics_start();
    act_telemetry_init();
    if (!reporter_start(err, sizeof err)) {
        log_error("AUTOSCALER_URL: %s", err);
        return 1;
    }
    /* Start-up (alloc.h): every timer the process needs, so that no
     * allocation can fail on the way out. */
    act->drain_timer = X_CHECK(evtimer_new(act->base, on_drained, NULL));
    act->exit_timer = X_CHECK(evtimer_new(act->base, on_exit_poll, NULL));
    struct event *sync_ev = X_CHECK(evtimer_new(act->base, on_sync_check, event_self_cbarg()));
    struct timeval now = {0, 0};
    event_add(sync_ev, &now);
    struct event *sigterm = X_CHECK(evsignal_new(act->base, SIGTERM, on_signal, NULL));
    struct event *sigint = X_CHECK(evsignal_new(act->base, SIGINT, on_signal, NULL));
    event_add(sigterm, NULL);
    event_add(sigint, NULL);

    event_base_dispatch(act->base);
    act_telemetry_free(); /* the last spans, bounded by COLDBREW_OTLP_TIMEOUT_MS */

    event_free(sync_ev);
    event_free(sigterm);
    event_free(sigint);
    if (act->drain_timer)
        event_free(act->drain_timer);
    if (act->exit_timer)
        event_free(act->exit_timer);
    server_free(act->http);
    server_free(act->h2c);
    server_free(act->https);
    act_metrics_stop();
    reporter_stop();
    loop_flush_deferred();
    k8s_watch_free(act->w_rev);
    k8s_watch_free(act->w_private);
    k8s_watch_free(act->w_public);
    k8s_watch_free(act->w_services);
    k8s_watch_free(act->w_ingress);
    ingress_free_all();
    revisions_free_all();
    loop_flush_deferred();
    act_tls_stop();
    k8s_client_free(&act->k8s);
    loop_free();
    http_head_pool_drain();
    act_ctx_pool_trim(0);
    return 0;
}
