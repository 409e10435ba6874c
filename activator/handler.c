/* handler.c — the activator's data ports (Knative §2, §3.6, §6).
 *
 * Order, as Knative's chain: kubelet health (tied to the autoscaler link and
 * SIGTERM), the ingress probe (K-Network-Probe: probe), other
 * K-Network-Probe values (the KPA asking "is the activator in the path?"),
 * then revision lookup (headers, else the <rev>.<ns>.svc.<domain> Host),
 * the timeouts (504 "activator request timeout", queue time included), and
 * the throttler: the request waits in its revision's FIFO, its body left
 * unread in the kernel, until a pod slot is free; then it is forwarded.
 *
 * Per-request state is a pooled `struct act_ctx`, released from on_finish. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/freelist.h"
#include "core/log.h"
#include "http/knative.h"
#include "telemetry/otlp.h"
#include "proxy/proxy.h"
#include "telemetry/server_span.h"
#include "telemetry/trace.h"
#include "activator.h"

#define TP_LINE (13 + TRACE_PARENT_LEN + 2) /* "traceparent: " 55 chars CRLF */

struct act_ctx {
    TAILQ_ENTRY(act_ctx) link;
    struct request *req;
    struct revision *rev;
    struct pod_tracker *pt;
    struct proxy_edit edit;
    struct proxy_exchange px; /* the proxy's state: its place in the pod pool's queue */
    bool queued;
    bool cold;    /* held while the revision had no healthy pod: the ledger's */
    bool timing;  /* answer with the ledger as Server-Timing */
    bool traced;  /* tracing is on: the spans below are live (recording or not) */
    bool proxied; /* sp_proxy was started */
    bool keep_tracestate;
    struct cold_stamps stamps;
    struct act_trace *tr; /* only while tracing: spans are big, and 10,000 may be held */
    char extra[320 + TP_LINE];
};

/* Knative's spans (§6.6): "handle" (otelhttp's server span), its children
 * throttler_try (waiting for capacity) and activator_proxy (the next hop's
 * parent). Pooled apart from the context; span_start_* initialise them. */
struct act_trace {
    struct span handle, throttle, proxy;
};
static struct freelist trace_pool = FREELIST_INIT(struct act_trace);

static struct freelist ctx_pool = FREELIST_INIT(struct act_ctx);

static struct act_ctx *ctx_acquire(void)
{
    struct act_ctx *c = freelist_get(&ctx_pool);
    memset(c, 0, offsetof(struct act_ctx, extra));
    return c;
}

static void ctx_release(struct act_ctx *c)
{
    freelist_put(&ctx_pool, c);
}

void act_ctx_pool_trim(unsigned keep)
{
    freelist_trim(&ctx_pool, keep);
    freelist_trim(&trace_pool, keep);
}

static const char *const strip_headers[] = {"knative-serving-revision", "knative-serving-namespace",
                                            "k-network-hash",           "k-proxy-request",
                                            "coldbrew-server-timing",   NULL};
/* Tracing: the next hop gets our traceparent (and the caller's tracestate
 * only when its trace goes on). */
static const char *const strip_trace[] = {"knative-serving-revision",
                                          "knative-serving-namespace",
                                          "k-network-hash",
                                          "k-proxy-request",
                                          "coldbrew-server-timing",
                                          "traceparent",
                                          "tracestate",
                                          NULL};
static const char *const strip_traceparent[] = {"knative-serving-revision",
                                                "knative-serving-namespace",
                                                "k-network-hash",
                                                "k-proxy-request",
                                                "coldbrew-server-timing",
                                                "traceparent",
                                                NULL};

/* ---------------------------------------------------------------- tracing */

static void trace_finish(struct request *req, struct act_ctx *c)
{
    int st = req->status;
    if (!c->tr->throttle.ended) {
        span_set_status(&c->tr->throttle, SPAN_STATUS_ERROR,
                        "no capacity before the request ended");
        span_end(&c->tr->throttle);
    }
    otlp_add_span(act_otlp, &c->tr->throttle);
    if (c->proxied) {
        if (!st || st >= 500)
            span_set_status(&c->tr->proxy, SPAN_STATUS_ERROR, NULL);
        span_end(&c->tr->proxy);
        otlp_add_span(act_otlp, &c->tr->proxy);
    }
    server_span_end(&c->tr->handle, st);
    otlp_add_span(act_otlp, &c->tr->handle);
    c->traced = false;
    freelist_put(&trace_pool, c->tr);
    c->tr = NULL;
}

/* ---------------------------------------------------------------- the ledger */

static const char *const phase_events[COLD_PHASES] = {"coldstart.poke_sent", "coldstart.endpoints",
                                                      "coldstart.probe_ok", "coldstart.forwarded",
                                                      "coldstart.first_byte"};

/* The first response byte: a cold start's ledger is complete. */
static const char *on_response_head(struct request *req, size_t *len)
{
    struct act_ctx *c = req->app_ptr;
    if (!c || !c->cold)
        return NULL;
    c->stamps.first_byte = clock_now_ns();
    double ms[COLD_PHASES + 1];
    cold_record(c->rev, &c->stamps, ms);
    if (c->traced) {
        const uint64_t at[COLD_PHASES] = {c->stamps.poke, c->stamps.endpoints, c->stamps.probe,
                                          c->stamps.forwarded, c->stamps.first_byte};
        for (int i = 0; i < COLD_PHASES; i++)
            if (at[i])
                span_add_event_at(&c->tr->handle, phase_events[i], at[i]);
        span_set_bool(&c->tr->handle, "coldbrew.cold_start", true);
        span_set_double(&c->tr->handle, "coldbrew.cold_start_ms", ms[COLD_PHASES]);
    }
    if (!c->timing)
        return NULL;
    /* The server copies the lines into the head at once: one buffer will do. */
    static char hdr[640];
    size_t n = (size_t)snprintf(hdr, sizeof hdr, "Server-Timing: ");
    for (int i = 0; i <= COLD_PHASES && n < sizeof hdr; i++)
        n += (size_t)snprintf(hdr + n, sizeof hdr - n, "%s%s;dur=%.3f;desc=\"%s\"", i ? ", " : "",
                              cold_phase_names[i], ms[i], cold_phase_desc[i]);
    if (n + 2 >= sizeof hdr)
        return NULL; /* cannot happen with these names; never send half a header */
    memcpy(hdr + n, "\r\n", 2);
    *len = n + 2;
    return hdr;
}

/* ---------------------------------------------------------------- the wait queue */

/* Takes a held request out of its revision's FIFO (it was queued). */
static void unqueue(struct act_ctx *c)
{
    TAILQ_REMOVE(&c->rev->waiters, c, link);
    c->queued = false;
    c->rev->nwaiting--;
    act->waiting_total--;
}

/* The request is no longer held: nobody to cancel, and its body may be read. */
static void unhold(struct request *req)
{
    req->cancel = NULL;
    req->holder = NULL;
    request_hold_input(req, false);
}

/* ---------------------------------------------------------------- finish */

static void on_finish(struct request *req, void *arg)
{
    struct act_ctx *c = arg;
    struct revision *r = c->rev;
    if (c->queued)
        unqueue(c);
    if (c->traced)
        trace_finish(req, c);
    if (c->cold && !c->stamps.first_byte && r)
        cold_failed(r, &c->stamps, req->status, clock_now_ns());
    if (r) {
        reporter_request_out(r);
        r->active--;
        act_metrics_observe(req->status, request_elapsed(req));
    }
    if (c->pt) {
        tracker_release(c->pt);
        c->pt = NULL;
        if (r)
            revision_dispatch(r); /* a pod slot came free */
    }
    act->in_flight--;
    ctx_release(c);
    req->app_ptr = NULL;
    if (r)
        revision_maybe_free(r);
    if (act->drained)
        act_check_exit();
}

static void cancel_wait(struct request *req)
{
    struct act_ctx *c = req->app_ptr;
    if (c->queued)
        unqueue(c);
}

/* ---------------------------------------------------------------- forwarding */

static void forward(struct act_ctx *c, struct pod_tracker *pt)
{
    struct request *req = c->req;
    c->pt = pt;
    unhold(req);
    /* Host becomes the pod's ip:port (or the ClusterIP's); K-Original-Host
     * keeps the name. Passthrough LB names the private Service instead (§3.8). */
    const char *host = act->cfg.passthrough_lb ? c->rev->private_host : pt->dest;
    c->edit.host = host;
    c->edit.host_len = strlen(host);
    c->stamps.forwarded = clock_now_ns();
    if (c->traced) {
        span_end(&c->tr->throttle);
        span_start_child(&c->tr->proxy, "activator_proxy", SPAN_KIND_INTERNAL, &c->tr->handle);
        c->proxied = true;
        if (c->edit.extra_len + TP_LINE <= sizeof c->extra) {
            char *p = c->extra + c->edit.extra_len;
            memcpy(p, "traceparent: ", 13);
            span_traceparent(&c->tr->proxy, p + 13);
            memcpy(p + 13 + TRACE_PARENT_LEN, "\r\n", 2);
            c->edit.extra_len += TP_LINE;
        }
    }
    proxy_forward(&c->px, req, &pt->pool->up, &c->edit);
}

void revision_dispatch(struct revision *r)
{
    if (r->dispatching)
        return; /* the outer loop picks up whatever this call would have */
    if (r->thr.npods || r->thr.cluster_ip)
        cold_on_capacity(r); /* a cold start's probe succeeded (no-op otherwise) */
    r->dispatching = true;
    while (!TAILQ_EMPTY(&r->waiters)) {
        struct pod_tracker *pt = throttler_pick(&r->thr);
        if (!pt)
            break;
        if (!pt->pool) {
            tracker_release(pt);
            break;
        }
        struct act_ctx *c = TAILQ_FIRST(&r->waiters);
        unqueue(c);
        forward(c, pt);
    }
    r->dispatching = false;
}

/* 503 with the reason, the answer for a revision the platform marked failed. */
static void reply_failed(struct request *req, const struct revision *r)
{
    char body[600];
    snprintf(body, sizeof body, "revision %s failed: %s\n", r->key, r->failed);
    request_error(req, 503, body);
}

void revision_fail_waiting(struct revision *r)
{
    while (!TAILQ_EMPTY(&r->waiters)) {
        struct act_ctx *c = TAILQ_FIRST(&r->waiters);
        unqueue(c);
        unhold(c->req);
        reply_failed(c->req, r);
    }
}

static void build_edit(struct act_ctx *c, const struct http_head *h, const struct kn_headers *q)
{
    static const char kpr[] = "K-Proxy-Request: activator\r\nK-Original-Host: ";
    size_t hlen;
    const char *host = http_header_value(h, q->host, &hlen);
    size_t n = sizeof kpr - 1 - 17; /* just the K-Proxy-Request line */
    memcpy(c->extra, kpr, sizeof kpr - 1);
    if (!q->orig_host && hlen && hlen + sizeof kpr + 2 < sizeof c->extra) {
        /* K-Original-Host keeps the name; Host becomes the pod's ip:port. */
        n = sizeof kpr - 1;
        memcpy(c->extra + n, host, hlen);
        n += hlen;
        memcpy(c->extra + n, "\r\n", 2);
        n += 2;
    }
    static const char pt[] = "K-Passthrough-Lb: true\r\n";
    if (act->cfg.passthrough_lb && n + sizeof pt <= sizeof c->extra) {
        memcpy(c->extra + n, pt, sizeof pt - 1);
        n += sizeof pt - 1;
    }
    c->edit.extra = c->extra;
    c->edit.extra_len = n;
    c->edit.drop = !c->traced           ? strip_headers
                   : c->keep_tracestate ? strip_traceparent
                                        : strip_trace;
    c->edit.append_xff = true;
}

/* otelhttp's server span "handle" and throttler_try (Knative §6.6). */
static void trace_start(struct request *req, struct act_ctx *c, const struct kn_headers *q)
{
    c->tr = freelist_get(&trace_pool);
    struct span *s = &c->tr->handle;
    c->keep_tracestate = server_span_start(s, "handle", req, q->tp, q->ts, act_sampling_rate);
    span_start_child(&c->tr->throttle, "throttler_try", SPAN_KIND_INTERNAL, s);
    c->traced = true;
    if (!span_recording(s))
        return;
    /* Knative's TracingAttributeHandler: the revision's names. */
    const struct revision *r = c->rev;
    span_set_str(s, "kn.service.name", r->service, strlen(r->service));
    span_set_str(s, "kn.configuration.name", r->configuration, strlen(r->configuration));
    span_set_str(s, "kn.revision.name", r->name, strlen(r->name));
    span_set_str(s, "k8s.namespace.name", r->ns, strlen(r->ns));
}

/* ---------------------------------------------------------------- lookup */

/* "<rev>.<ns>.svc.<domain>[:port]" -> rev, ns (Knative's context handler). */
static bool revision_from_host(const char *host, size_t len, char *ns, size_t nscap, char *name,
                               size_t namecap)
{
    char h[256];
    if (len >= sizeof h)
        return false;
    memcpy(h, host, len);
    h[len] = 0;
    char *parts[4];
    int np = 0;
    char *p = h;
    while (np < 3) {
        char *dot = strchr(p, '.');
        if (!dot)
            break;
        *dot = 0;
        parts[np++] = p;
        p = dot + 1;
    }
    parts[np++] = p;
    if (np != 4 || strcmp(parts[2], "svc"))
        return false;
    char *colon = strrchr(parts[3], ':');
    if (colon)
        *colon = 0;
    if (strcmp(parts[3], act->cfg.cluster_domain))
        return false;
    snprintf(name, namecap, "%s", parts[0]);
    snprintf(ns, nscap, "%s", parts[1]);
    return true;
}

/* Go's %q of html.EscapeString(v), as Knative's probe handler writes it. */
static void quote_probe_value(char *out, size_t cap, const char *v, size_t len)
{
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < len && o + 8 < cap; i++) {
        const char *rep = NULL;
        char tmp[8];
        switch (v[i]) {
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '&':
            rep = "&amp;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        case '"':
            rep = "&#34;";
            break;
        case '\\':
            rep = "\\\\";
            break;
        default:
            if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f) {
                snprintf(tmp, sizeof tmp, "\\x%02x", (unsigned char)v[i]);
                rep = tmp;
            }
        }
        if (rep) {
            size_t n = strlen(rep);
            memcpy(out + o, rep, n);
            o += n;
        } else {
            out[o++] = v[i];
        }
    }
    out[o++] = '"';
    out[o] = 0;
}

void act_on_request(struct request *req, void *arg)
{
    (void)arg;
    const struct http_head *h = req->head;
    struct kn_headers q;
    kn_headers_find(h, &q);
    size_t knpl;
    const char *knp = http_header_value(h, q.knp, &knpl);

    /* 1. kubelet health: ready iff connected to the autoscaler and no SIGTERM. */
    if (kn_value_prefix(h, q.ua, "kube-probe/") || q.kkp) {
        if (act->sigterm)
            request_error(req, 500, "received SIGTERM from kubelet\n");
        else if (!act->autoscaler_connected)
            request_error(req, 500, "connection has not yet been established\n");
        else
            request_reply(req, 200, NULL, NULL, 0, NULL);
        return;
    }
    /* 2. the ingress's readiness probe */
    if (knpl == 5 && !memcmp(knp, "probe", 5)) {
        kn_reply_network_probe(req, &q);
        return;
    }
    /* 3. other probe values: the KPA asks whether the activator is in the path */
    if (knpl) {
        if (knpl == 9 && !memcmp(knp, "activator", 9)) {
            request_reply(req, 200, "text/plain; charset=utf-8", "activator", 9, NULL);
        } else {
            char q[600], body[700];
            quote_probe_value(q, sizeof q, knp, knpl < 100 ? knpl : 100);
            snprintf(body, sizeof body, "unexpected probe header value: %s\n", q);
            request_error(req, 400, body);
        }
        return;
    }

    /* Revision lookup: the ingress's headers, else the revision service Host. */
    char ns[64] = "", name[190] = "";
    size_t nsl, nml, hl;
    const char *vns = http_header_value(h, q.ns, &nsl);
    const char *vname = http_header_value(h, q.rev, &nml);
    struct revision *r = NULL;
    const struct ingress_split *split = NULL;
    if (nsl && nml && nsl < sizeof ns && nml < sizeof name) {
        r = revision_find_n(vns, nsl, vname, nml);
        memcpy(name, vname, nml); /* for the 404 text */
    } else {
        const char *host = http_header_value(h, q.host, &hl);
        if (host && act->cfg.ingress && (split = ingress_pick(host, hl))) {
            r = revision_find(split->ns, split->rev);
            if (!r || !r->exists)
                snprintf(name, sizeof name, "%s", split->rev); /* for the 404 text */
        } else if (host && revision_from_host(host, hl, ns, sizeof ns, name, sizeof name)) {
            r = revision_find(ns, name);
        } else if (act->cfg.ingress) {
            char body[400];
            snprintf(body, sizeof body, "no route for host \"%.*s\"\n", (int)(hl < 256 ? hl : 256),
                     host ? host : "");
            request_error(req, 404, body);
            return;
        }
    }
    if (r && r->failed[0]) {
        reply_failed(req, r);
        return;
    }
    if (!r || !r->exists) {
        char body[400];
        snprintf(body, sizeof body,
                 "Error getting active endpoint: revision.serving.knative.dev \"%s\" not found\n",
                 name);
        request_error(req, 404, body);
        return;
    }

    struct act_ctx *c = ctx_acquire();
    c->req = req;
    c->rev = r;
    req->app_ptr = c;
    req->on_finish = on_finish;
    req->finish_arg = c;
    act->in_flight++;
    r->active++;
    reporter_request_in(r);
    request_set_timeouts(req, r->timeout, r->response_start_timeout, r->idle_timeout);
    size_t tl;
    const char *tv = http_header_value(h, q.timing, &tl);
    c->timing = r->server_timing || (tl == 1 && tv[0] == '1');
    c->stamps.held = req->start_ns;
    if (act_tracing)
        trace_start(req, c, &q);
    build_edit(c, h, &q);
    if (split && split->extra[0]) {
        size_t el = strlen(split->extra);
        if (c->edit.extra_len + el <= sizeof c->extra) {
            memcpy(c->extra + c->edit.extra_len, split->extra, el);
            c->edit.extra_len += el;
        }
    }

    if (r->nwaiting >= act->cfg.max_waiting_per_revision ||
        act->waiting_total >= act->cfg.max_waiting_total) {
        log_warn("revision %s: %u requests waiting (%u in all): refusing", r->key, r->nwaiting,
                 act->waiting_total);
        request_error(req, 503, "pending request queue full\n");
        return;
    }
    TAILQ_INSERT_TAIL(&r->waiters, c, link);
    c->queued = true;
    r->nwaiting++;
    act->waiting_total++;
    req->cancel = cancel_wait;
    req->holder = c;
    revision_dispatch(r);
    if (c->queued) {
        request_hold_input(req, true); /* it waits: leave its body in the kernel */
        if (!r->thr.npods && !r->thr.cluster_ip) {
            c->cold = true; /* no healthy pod: a cold start */
            cold_hold(r, c->stamps.held);
            req->on_response_head = on_response_head;
        }
    }
}
