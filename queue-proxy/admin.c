/* admin.c — the side ports and the drain sequence (Knative §2, §5).
 *
 * Drain: the first SIGTERM (or a /wait-for-drain call) starts draining:
 * probes answer 503 "shutting down", traffic keeps flowing, and every
 * non-probe request re-arms the quiet period (QUEUE_DRAIN_QUIET_SECONDS,
 * Knative's 30 s). When it passes, /wait-for-drain callers get 200, the
 * listeners close, idle keep-alive connections close, in-flight requests
 * finish, and the process exits 0 (upgraded connections are waited for at
 * most COLDBREW_HIJACK_DRAIN_SECONDS, Knative's 60 s). A /wait-for-drain
 * that sees no SIGTERM within 1 s resets the drain and returns. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "qp.h"

#define WAIT_RESET_SECONDS 1.0

/* Requests parked on /wait-for-drain. */
struct drain_waiter {
    struct request *req;
    struct event *reset; /* the 1 s "no SIGTERM" check */
    struct drain_waiter *next;
};
static struct drain_waiter *drain_waiters;

static bool path_is(const struct request *req, const char *path)
{
    return http_path_is(req->head, path);
}

static void not_found(struct request *req)
{
    request_error(req, 404, "404 page not found\n");
}

static void waiter_unlink(struct drain_waiter *w)
{
    for (struct drain_waiter **p = &drain_waiters; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    if (w->reset)
        event_free(w->reset);
    free(w);
}

static void waiter_cancel(struct request *req)
{
    struct drain_waiter *w = req->holder;
    waiter_unlink(w);
}

static void waiter_answer(struct drain_waiter *w)
{
    struct request *req = w->req;
    req->cancel = NULL;
    req->holder = NULL;
    waiter_unlink(w);
    request_reply(req, 200, NULL, NULL, 0, NULL);
}

static void on_quiet_over(evutil_socket_t fd, short what, void *arg);

static void on_wait_reset(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct drain_waiter *w = arg;
    if (qp->sigterm)
        return; /* a real shutdown: wait for the drain to finish */
    /* Kubelet restarting the user container, not deleting the pod: undo. */
    log_info("no TERM signal within 1s of /wait-for-drain; resetting the drain");
    qp->draining = false;
    event_del(qp->quiet_timer);
    waiter_answer(w);
}

void qp_admin_request(struct request *req, void *arg)
{
    (void)arg;
    if (!path_is(req, "/wait-for-drain")) {
        not_found(req);
        return;
    }
    if (qp->drained) {
        request_reply(req, 200, NULL, NULL, 0, NULL);
        return;
    }
    struct drain_waiter *w = calloc(1, sizeof *w);
    if (!w) {
        log_error("admin: %s for a drain waiter; answered 503", coldbrew_err_no_memory);
        request_error(req, 503, "out of memory\n");
        return;
    }
    w->req = req;
    w->next = drain_waiters;
    drain_waiters = w;
    req->holder = w;
    req->cancel = waiter_cancel;
    qp_drain_start(false);
    if (!qp->sigterm) {
        w->reset = evtimer_new(qp->base, on_wait_reset, w);
        struct timeval tv = clock_tv(WAIT_RESET_SECONDS);
        if (w->reset)
            event_add(w->reset, &tv);
        else /* memory short: this waiter is not reset, it waits for the drain */
            log_error("admin: %s for a drain waiter's timer", coldbrew_err_no_memory);
    }
}

void qp_stat_request(struct request *req, void *arg)
{
    (void)arg;
    if (!path_is(req, "/metrics")) {
        not_found(req);
        return;
    }
    request_reply(req, 200, "application/protobuf", (const char *)qp->stat_pb, qp->stat_len, NULL);
}

void qp_prom_request(struct request *req, void *arg)
{
    (void)arg;
    if (!path_is(req, "/metrics")) {
        not_found(req);
        return;
    }
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        log_error("metrics: %s; answered 503", coldbrew_err_no_memory);
        request_error(req, 503, "out of memory\n");
        return;
    }
    metrics_hist_render(&qp->invocation, qp->labels, b);
    metrics_hist_render(&qp->server_dur, qp->labels, b);
    if (qp->has_breaker)
        metrics_gauge_render("kn_serving_queue_depth", "Depth of the queue-proxy's request queue",
                             qp->labels, (double)breaker_in_flight(&qp->breaker), b);
    size_t len = evbuffer_get_length(b);
    request_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8",
                  (const char *)evbuffer_pullup(b, -1), len, NULL);
    evbuffer_free(b);
}

void qp_drain_start(bool from_signal)
{
    if (from_signal)
        qp->sigterm = true;
    if (qp->draining)
        return;
    qp->draining = true;
    struct timeval tv = clock_tv(qp->cfg.drain_quiet_seconds);
    if (!qp->quiet_timer)
        qp->quiet_timer = X_CHECK(evtimer_new(qp->base, on_quiet_over, NULL)); /* lifecycle */
    event_add(qp->quiet_timer, &tv);
    if (from_signal)
        log_info("Sleeping %gs to allow K8s propagation of non-ready state",
                 qp->cfg.drain_quiet_seconds);
}

void qp_drain_touch(void)
{
    if (qp->draining && !qp->drained && qp->quiet_timer &&
        event_pending(qp->quiet_timer, EV_TIMEOUT, NULL)) {
        struct timeval tv = clock_tv(qp->cfg.drain_quiet_seconds);
        event_add(qp->quiet_timer, &tv);
    }
}

static void on_exit_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    qp_check_exit();
}

static unsigned open_tunnels(void)
{
    unsigned n = 0;
    struct sconn *c;
    LIST_FOREACH(c, &qp->main_srv->conns, link)
    if (c->req.state != REQ_IDLE && c->req.upgraded)
        n++;
    if (qp->tls_srv)
        LIST_FOREACH(c, &qp->tls_srv->conns, link)
    if (c->req.state != REQ_IDLE && c->req.upgraded)
        n++;
    return n;
}

void qp_check_exit(void)
{
    if (!qp->drained)
        return;
    unsigned tunnels = open_tunnels();
    double since = (double)(clock_now_ns() - qp->drained_ns) / 1e9;
    /* Lingering connections (answered, the client still sending) end within
     * COLDBREW_LINGERING_TIME_SECONDS: waiting for them lets their answers land. */
    bool lingering = server_lingering(qp->main_srv) + server_lingering(qp->tls_srv) > 0;
    if ((qp->in_flight == 0 && !lingering) ||
        (qp->in_flight == tunnels && since >= qp->cfg.hijack_drain_seconds)) {
        log_info("Shutdown complete, exiting...");
        /* loopexit, not loopbreak: callbacks already active this turn (an
         * HTTP/2 connection's deferred send of the last answer) still run. */
        event_base_loopexit(qp->base, NULL);
        return;
    }
    if (!qp->exit_timer)
        qp->exit_timer = X_CHECK(evtimer_new(qp->base, on_exit_poll, NULL)); /* lifecycle */
    if (!event_pending(qp->exit_timer, EV_TIMEOUT, NULL)) {
        struct timeval tv = clock_tv(tunnels ? 1.0 : 0.5);
        event_add(qp->exit_timer, &tv);
    }
}

static void on_quiet_over(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    if (!qp->sigterm) {
        /* Only a /wait-for-drain started this and SIGTERM never came: the 1 s
         * reset already undid it; nothing to do. */
        return;
    }
    qp->drained = true;
    qp->drained_ns = clock_now_ns();
    while (drain_waiters)
        waiter_answer(drain_waiters);
    struct server *all[] = {qp->main_srv, qp->admin_srv, qp->stat_srv, qp->prom_srv, qp->tls_srv};
    for (unsigned i = 0; i < 5; i++)
        if (all[i]) {
            server_stop_accepting(all[i]);
            server_close_idle(all[i]);
        }
    upstream_close_idle(&qp->user);
    qp_check_exit();
}
