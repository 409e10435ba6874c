/* handler.c — the serving port (Knative's handler chain, §3a).
 *
 * Order, as Knative's: the Drainer classifies probes first (health checks
 * by User-Agent, KIngress probes by K-Network-Probe: probe), everything else
 * goes through the TimeoutHandler (armed here, so queue wait counts), the
 * Forwarded shim, stats, the breaker, and the reverse proxy.
 *
 * Per-request state lives in a pooled `struct qp_ctx` (no allocation once
 * warm); it is released from on_finish, the request's one exit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/freelist.h"
#include "http/forwarded.h"
#include "http/knative.h"
#include "core/log.h"
#include "telemetry/server_span.h"
#include "qp.h"

/* Inline room for the Forwarded line (forwarded_bound's measure, so a
 * client, an ingress hop and the activator fit: about 150 B); longer ones
 * are allocated. Sized so the context is 504 B, in jemalloc's 512 class: it
 * is held by every open request. */
#define CTX_FORWARDED 160
#define TP_LINE       (13 + TRACE_PARENT_LEN + 2) /* "traceparent: " 55 chars CRLF */

struct qp_ctx {
    struct breaker_waiter waiter; /* first: the breaker hands it back */
    struct readiness_waiter ready;
    struct request *req;
    struct proxy_edit edit;
    struct proxy_exchange px; /* the proxy's state: its place in the upstream's queue */
    uint64_t proxy_start_ns;
    bool kubelet, probe, proxied, holds_slot, counted;
    bool traced; /* tracing is on: the spans below are live (recording or not) */
    bool waited; /* sp_wait was started (the breaker) */
    bool keep_tracestate;
    char *fwd_heap;                    /* extra lines too long for fwd[] */
    struct qp_trace *tr;               /* only while tracing: spans are big */
    char fwd[TP_LINE + CTX_FORWARDED]; /* traceparent, then Forwarded */
};
_Static_assert(sizeof(struct qp_ctx) <= 512, "a request's context stays in jemalloc's 512 B class");

/* Knative's spans (§3a): "queue" (otelhttp's server span), its child
 * kn.queueproxy.proxy, and that one's child kn.queueproxy.wait (the
 * breaker). The user container's traceparent names the proxy span. Pooled
 * apart from the context; span_start_* initialise them. */
struct qp_trace {
    struct span server, proxy, wait;
};

static struct freelist ctx_pool = FREELIST_INIT(struct qp_ctx);
static struct freelist trace_pool = FREELIST_INIT(struct qp_trace);

static struct qp_ctx *ctx_acquire(void)
{
    struct qp_ctx *c = freelist_get(&ctx_pool);
    memset(c, 0, offsetof(struct qp_ctx, fwd));
    return c;
}

static void ctx_release(struct qp_ctx *c)
{
    free(c->fwd_heap);
    c->fwd_heap = NULL;
    freelist_put(&ctx_pool, c);
}

void qp_ctx_pool_trim(unsigned keep)
{
    freelist_trim(&ctx_pool, keep);
    freelist_trim(&trace_pool, keep);
}

/* ---------------------------------------------------------------- request log */

/* Go's %v of a float64: shortest representation that reads back the same. */
static void go_float(char *buf, size_t cap, double v)
{
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, v);
        if (strstr(buf, "e+"))
            continue;
        if (strtod(buf, NULL) == v)
            return;
    }
    snprintf(buf, cap, "%.17g", v);
}

static void request_log(struct request *req)
{
    const struct http_head *h = req->head;
    char url[1024], ua[512], ref[512], remote[128], lat[40], peer[96];
    size_t len;
    const char *v;
    js_escape(url, sizeof url, http_str_ptr(h, h->url), h->url.len);
    v = http_head_get(h, "user-agent", &len);
    js_escape(ua, sizeof ua, v ? v : "", v ? len : 0);
    v = http_head_get(h, "referer", &len);
    js_escape(ref, sizeof ref, v ? v : "", v ? len : 0);
    const char *pip = request_peer_ip(req);
    snprintf(peer, sizeof peer, strchr(pip, ':') ? "[%s]:%d" : "%s:%d", pip,
             request_peer_port(req));
    js_escape(remote, sizeof remote, peer, strlen(peer));
    go_float(lat, sizeof lat, request_elapsed(req));
    long long size = h->has_content_length ? (long long)h->content_length : (h->chunked ? -1 : 0);
    /* traceparent: 00-<trace id>-<span id>-<flags> */
    char trace[64] = "";
    v = http_head_get(h, "traceparent", &len);
    if (v && len >= 35 && v[2] == '-')
        snprintf(trace, sizeof trace, "%.32s", v + 3);
    else if ((v = http_head_get(h, "x-b3-traceid", &len)))
        snprintf(trace, sizeof trace, "%.*s", (int)(len < 63 ? len : 63), v);
    printf("{\"httpRequest\": {\"requestMethod\": \"%s\", \"requestUrl\": \"%s\", \"requestSize\": "
           "\"%lld\", \"status\": %d, \"responseSize\": \"%llu\", \"userAgent\": \"%s\", "
           "\"remoteIp\": \"%s\", \"serverIp\": \"%s\", \"referer\": \"%s\", \"latency\": \"%ss\", "
           "\"protocol\": \"HTTP/%d.%d\"}, \"traceId\": \"%s\"}\n",
           llhttp_method_name((llhttp_method_t)h->method), url, size, req->status,
           (unsigned long long)req->resp_body_bytes, ua, remote, qp->cfg.pod_ip, ref, lat, h->major,
           h->minor, trace);
    fflush(stdout);
}

/* ---------------------------------------------------------------- tracing */

/* otelhttp's server span and Knative's proxy span (§3a). An invalid
 * traceparent (wrong length, not hex, version ff, all-zero ids) is no
 * parent: the span starts a new trace, sampled as the rate says. */
static void trace_start(struct request *req, struct qp_ctx *c, const struct kn_headers *q)
{
    const struct http_head *h = req->head;
    c->tr = freelist_get(&trace_pool);
    struct span *s = &c->tr->server;
    c->keep_tracestate = server_span_start(s, "queue", req, q->tp, q->ts, qp->sampling_rate);
    span_start_child(&c->tr->proxy, "kn.queueproxy.proxy", SPAN_KIND_INTERNAL, s);
    c->traced = true;
    if (!span_recording(s))
        return;
    span_set_str(s, "url.scheme", "http", 4);
    /* Knative's RouteTagHandler. */
    size_t tl, dl;
    const char *tag = http_header_value(h, q->tag, &tl);
    const char *def = http_header_value(h, q->defroute, &dl);
    if (!tl && !dl)
        span_set_str(s, "kn.route.tag", "kn:disabled", 11);
    else if (!tl)
        span_set_str(s, "kn.route.tag", "kn:default", 10);
    else if (dl == 4 && !memcmp(def, "true", 4))
        span_set_str(s, "kn.route.tag", "kn:undefined", 12);
    else
        span_set_str(s, "kn.route.tag", tag, tl);
}

/* Ends the spans (innermost first) and queues them for export: O(1), no
 * syscall (otlp_add_span copies into a bounded ring). */
static void trace_finish(struct request *req, struct qp_ctx *c)
{
    int st = req->status;
    if (c->waited) {
        if (!c->tr->wait.ended)
            span_set_status(&c->tr->wait, SPAN_STATUS_ERROR, "canceled");
        span_end(&c->tr->wait);
        otlp_add_span(qp->otlp, &c->tr->wait);
    }
    span_end(&c->tr->proxy);
    otlp_add_span(qp->otlp, &c->tr->proxy);
    server_span_end(&c->tr->server, st);
    otlp_add_span(qp->otlp, &c->tr->server);
    c->traced = false;
    freelist_put(&trace_pool, c->tr);
    c->tr = NULL;
}

/* ---------------------------------------------------------------- finish */

static void on_finish(struct request *req, void *arg)
{
    struct qp_ctx *c = arg;
    uint64_t now = clock_now_ns();
    if (c->waiter.queued)
        breaker_cancel(&qp->breaker, &c->waiter);
    if (c->holds_slot)
        breaker_release(&qp->breaker);
    if (c->ready.waiting)
        readiness_cancel(&qp->readiness, &c->ready);
    if (c->counted)
        stats_out(&qp->stats, now, c->proxied);
    if (c->traced)
        trace_finish(req, c);
    if (!c->probe && qp->m_server_dur)
        qp_telemetry_request(req->status ? req->status : 499, request_elapsed(req),
                             (double)(now - c->proxy_start_ns) / 1e9, c->proxy_start_ns != 0);
    if (qp->s_depth)
        otlp_series_set_int(qp->s_depth, qp->breaker.executing + qp->breaker.waiting);
    if (!c->probe && qp->cfg.prometheus_enabled) {
        int status = req->status ? req->status : 499;
        metrics_hist_observe(&qp->server_dur, status, request_elapsed(req));
        if (c->proxy_start_ns)
            metrics_hist_observe(&qp->invocation, status, (double)(now - c->proxy_start_ns) / 1e9);
    }
    if (qp->cfg.enable_request_log && (!c->probe || qp->cfg.enable_probe_request_log))
        request_log(req);
    qp->in_flight--;
    ctx_release(c);
    req->app_ptr = NULL;
    if (qp->drained)
        qp_check_exit();
}

/* ---------------------------------------------------------------- proxying */

static void run_proxy(struct qp_ctx *c)
{
    struct request *req = c->req;
    c->proxy_start_ns = clock_now_ns();
    proxy_forward(&c->px, req, &qp->user, &c->edit);
}

static void on_slot(struct breaker_waiter *w)
{
    struct qp_ctx *c = (struct qp_ctx *)w;
    c->holds_slot = true;
    if (c->waited)
        span_end(&c->tr->wait);
    c->req->cancel = NULL;
    c->req->holder = NULL;
    run_proxy(c);
}

static void cancel_wait(struct request *req)
{
    struct qp_ctx *c = req->app_ptr;
    breaker_cancel(&qp->breaker, &c->waiter);
}

static const char *const strip_headers[] = {"knative-serving-revision", "knative-serving-namespace",
                                            "k-original-host", NULL};
/* Tracing: the next hop gets our traceparent (and the caller's tracestate
 * only when its trace goes on). */
static const char *const strip_trace[] = {"knative-serving-revision",
                                          "knative-serving-namespace",
                                          "k-original-host",
                                          "traceparent",
                                          "tracestate",
                                          NULL};
static const char *const strip_traceparent[] = {"knative-serving-revision",
                                                "knative-serving-namespace", "k-original-host",
                                                "traceparent", NULL};

static void build_edit(struct request *req, struct qp_ctx *c, const struct kn_headers *q)
{
    const struct http_head *h = req->head;
    size_t len;
    /* K-Original-Host becomes Host; its value lives in the head for the whole request. */
    const char *v = http_header_value(h, q->orig_host, &len);
    c->edit.host = len && !c->kubelet ? v : NULL;
    c->edit.host_len = len;
    c->edit.drop = !c->traced           ? strip_headers
                   : c->keep_tracestate ? strip_traceparent
                                        : strip_trace;
    c->edit.append_xff = true;
    c->edit.extra = NULL;
    c->edit.extra_len = 0;
    /* Forwarded shim: only when absent and some X-Forwarded-* is present. */
    bool fwd = !q->forwarded && (q->xff || q->xfh || q->xfp);
    if (!fwd && !c->traced)
        return;
    size_t xffl, xfhl, xfpl;
    const char *xff = http_header_value(h, q->xff, &xffl),
               *xfh = http_header_value(h, q->xfh, &xfhl),
               *xfp = http_header_value(h, q->xfp, &xfpl);
    size_t need = TP_LINE + (fwd ? 11 + forwarded_bound(xff, xffl, xfhl, xfpl) + 2 : 0);
    char *buf = c->fwd;
    if (need > sizeof c->fwd) {
        if (!(c->fwd_heap = malloc(need)))
            return;
        buf = c->fwd_heap;
    }
    size_t n = 0;
    if (c->traced) {
        memcpy(buf, "traceparent: ", 13);
        span_traceparent(&c->tr->proxy, buf + 13);
        memcpy(buf + 13 + TRACE_PARENT_LEN, "\r\n", 2);
        n = TP_LINE;
    }
    if (fwd) {
        memcpy(buf + n, "Forwarded: ", 11);
        size_t m = forwarded_build(buf + n + 11, need - n - 13, xff, xffl, xfh, xfhl, xfp, xfpl);
        if (m) {
            memcpy(buf + n + 11 + m, "\r\n", 2);
            n += 11 + m + 2;
        }
    }
    c->edit.extra = n ? buf : NULL;
    c->edit.extra_len = n;
}

/* ---------------------------------------------------------------- probes */

static void on_ready(struct readiness_waiter *w, bool ok)
{
    struct qp_ctx *c = (struct qp_ctx *)((char *)w - offsetof(struct qp_ctx, ready));
    struct request *req = c->req;
    req->cancel = NULL;
    if (qp->draining)
        request_error(req, 503, "shutting down");
    else if (ok)
        request_reply(req, 200, "text/plain; charset=utf-8", "queue", 5, NULL);
    else
        request_reply(req, 503, NULL, NULL, 0, NULL);
}

static void cancel_ready(struct request *req)
{
    struct qp_ctx *c = req->app_ptr;
    readiness_cancel(&qp->readiness, &c->ready);
}

static bool is_health_ua(const struct http_head *h, const struct http_header *ua)
{
    return kn_value_prefix(h, ua, "kube-probe/") ||
           kn_value_prefix(h, ua, "Knative-Activator-Probe") ||
           kn_value_prefix(h, ua, "Knative-Autoscaling-Probe");
}

void qp_on_request(struct request *req, void *arg)
{
    (void)arg;
    const struct http_head *h = req->head;
    struct qp_ctx *c = ctx_acquire();
    c->req = req;
    req->app_ptr = c;
    req->on_finish = on_finish;
    req->finish_arg = c;
    qp->in_flight++;
    qp->requests_seen++;

    struct kn_headers q;
    kn_headers_find(h, &q);
    size_t knp_len;
    const char *knp = http_header_value(h, q.knp, &knp_len);
    c->kubelet = kn_value_prefix(h, q.ua, "kube-probe/") || (q.kkp && q.kkp->value.len);
    c->probe = c->kubelet || knp_len;

    if (is_health_ua(h, q.ua)) {
        if (qp->draining) {
            request_error(req, 503, "shutting down\n");
            return;
        }
        if (!knp || knp_len != 5 || memcmp(knp, "queue", 5)) {
            char body[300];
            snprintf(body, sizeof body, "unexpected probe header value: %.*s\n",
                     (int)(knp_len < 200 ? knp_len : 200), knp ? knp : "");
            request_error(req, 400, body);
            return;
        }
        c->ready.done = on_ready;
        req->cancel = cancel_ready;
        req->holder = c;
        readiness_check(&qp->readiness, &c->ready);
        return;
    }
    if (knp && knp_len == 5 && !memcmp(knp, "probe", 5)) {
        if (qp->draining) {
            request_error(req, 503, "shutting down\n");
            return;
        }
        kn_reply_network_probe(req, &q);
        return;
    }
    if (qp->draining)
        qp_drain_touch();

    request_set_timeouts(req, qp->cfg.revision_timeout, qp->cfg.response_start_timeout,
                         qp->cfg.idle_timeout);
    if (qp->tracing && !c->probe)
        trace_start(req, c, &q); /* probes are not traced (otelhttp's filter) */
    build_edit(req, c, &q);
    if (c->kubelet) {
        /* Kubelet probes that get this far bypass stats and the breaker. */
        run_proxy(c);
        return;
    }
    c->proxied = kn_value_is(h, q.proxy, "activator");
    stats_in(&qp->stats, clock_now_ns(), c->proxied);
    c->counted = true;
    if (!qp->has_breaker) {
        run_proxy(c);
        return;
    }
    c->waiter.run = on_slot;
    if (c->traced) {
        span_start_child(&c->tr->wait, "kn.queueproxy.wait", SPAN_KIND_INTERNAL, &c->tr->proxy);
        c->waited = true;
    }
    enum breaker_result br = breaker_acquire(&qp->breaker, &c->waiter);
    if (qp->s_depth)
        otlp_series_set_int(qp->s_depth, qp->breaker.executing + qp->breaker.waiting);
    switch (br) {
    case BREAKER_RUN:
        c->holds_slot = true;
        if (c->waited)
            span_end(&c->tr->wait);
        run_proxy(c);
        break;
    case BREAKER_QUEUED:
        req->cancel = cancel_wait;
        req->holder = c;
        break;
    case BREAKER_FULL:
        if (c->waited) {
            span_set_status(&c->tr->wait, SPAN_STATUS_ERROR, "pending request queue full");
            span_end(&c->tr->wait);
        }
        request_error(req, 503, "pending request queue full\n");
        break;
    }
}
