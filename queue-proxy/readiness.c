/* readiness.c — see readiness.h. */
#include "readiness.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/net.h"
#include "h2_probe.h"

#define AGGRESSIVE_INTERVAL 0.05
#define AGGRESSIVE_TIMEOUT  0.1
#define AGGRESSIVE_GIVE_UP  10.0

enum probe_kind { PROBE_TCP, PROBE_HTTP, PROBE_GRPC };

#define PROBE_MAX_HEADERS 16

struct probe_spec {
    enum probe_kind kind;
    struct net_addr addr;
    char request[2048]; /* HTTP/1.1 request bytes, with the probe's headers */
    size_t request_len;
    size_t plain_len; /* ...the same request without them: the head up to here, then CRLF */
    /* httpGet over h2c (ENABLE_HTTP2_AUTO_DETECTION): the same request as fields. */
    char path[1024];
    struct h2_probe_header hdrs[PROBE_MAX_HEADERS];
    size_t nhdrs;
    char hdrbuf[1024];  /* their names and values */
    char service[200];  /* gRPC: the service to check ("" = the server) */
    char authority[96]; /* h2c: host:port */
    double timeout;
};

/* What an attempt is sending now. Without auto-detection an httpGet probe
 * is one HTTP/1.1 GET with its headers. With it (Knative's
 * detectHTTPProtocolVersion, then HTTPProbe): an h2c GET without the
 * probe's headers; when that is ready, the h2c GET with them decides;
 * otherwise an HTTP/1.1 GET without them does. Each on a new connection,
 * all within the attempt's timeout. */
enum probe_phase {
    PHASE_H1,        /* HTTP/1.1 GET with the headers (or TCP, or the gRPC check) */
    PHASE_H2_DETECT, /* h2c GET without the headers */
    PHASE_H2,        /* h2c GET with the headers */
    PHASE_H1_DETECT, /* HTTP/1.1 GET without the headers */
};

struct probe_attempt {
    struct readiness *r;
    struct probe_spec *spec;
    enum probe_phase phase;
    int fd;
    struct event *io, *timer;
    bool connected;
    size_t sent;
    char resp[64];
    size_t resp_len;
    struct h2_probe *h2;            /* h2c (gRPC, or a GET): in flight once connected */
    LIST_ENTRY(probe_attempt) link; /* in r->attempts while in flight */
};

static int json_port(json_t *v, int def)
{
    if (json_is_integer(v))
        return (int)json_integer_value(v);
    if (json_is_string(v)) {
        int p = atoi(json_string_value(v));
        return p > 0 ? p : def;
    }
    return def;
}

static bool parse_one(struct readiness *r, json_t *p, struct probe_spec *s, int user_port,
                      char *err, unsigned cap)
{
    json_t *h;
    const char *host = "127.0.0.1";
    int port = user_port;
    memset(s, 0, sizeof *s);
    json_t *period = json_object_get(p, "periodSeconds");
    json_t *timeout = json_object_get(p, "timeoutSeconds");
    json_t *succ = json_object_get(p, "successThreshold");
    if (json_is_integer(period) && json_integer_value(period) > 0)
        r->aggressive = false;
    if (json_is_integer(succ) && json_integer_value(succ) > (json_int_t)r->success_threshold)
        r->success_threshold = (unsigned)json_integer_value(succ);
    s->timeout = r->aggressive ? AGGRESSIVE_TIMEOUT
                               : (json_is_integer(timeout) && json_integer_value(timeout) > 0
                                      ? (double)json_integer_value(timeout)
                                      : 1.0);
    if ((h = json_object_get(p, "tcpSocket"))) {
        s->kind = PROBE_TCP;
    } else if ((h = json_object_get(p, "httpGet"))) {
        s->kind = PROBE_HTTP;
    } else if ((h = json_object_get(p, "grpc"))) {
        s->kind = PROBE_GRPC;
    } else if ((h = json_object_get(p, "exec"))) {
        s->kind = PROBE_TCP; /* the reconciler rewrites exec to tcpSocket; be lenient */
        h = NULL;
    } else {
        snprintf(err, cap, "SERVING_READINESS_PROBE: no handler (tcpSocket, httpGet, grpc)");
        return false;
    }
    if (h) {
        json_t *v;
        if ((v = json_object_get(h, "host")) && json_is_string(v) && *json_string_value(v))
            host = json_string_value(v);
        port = json_port(json_object_get(h, "port"), user_port);
    }
    if (!net_addr_parse(&s->addr, host, port)) {
        snprintf(err, cap, "SERVING_READINESS_PROBE: host %s is not an IP address", host);
        return false;
    }
    if (s->kind == PROBE_GRPC) {
        json_t *v = json_object_get(h, "service");
        const char *svc = json_is_string(v) ? json_string_value(v) : "";
        if (strlen(svc) >= sizeof s->service) {
            snprintf(err, cap, "SERVING_READINESS_PROBE: grpc service name longer than %zu bytes",
                     sizeof s->service - 1);
            return false;
        }
        strcpy(s->service, svc);
        snprintf(s->authority, sizeof s->authority, "%s:%d", s->addr.text, port);
    }
    if (s->kind == PROBE_HTTP) {
        json_t *v = json_object_get(h, "path");
        const char *path = json_is_string(v) ? json_string_value(v) : "/";
        snprintf(s->authority, sizeof s->authority, "%s:%d", s->addr.text, port);
        if ((size_t)snprintf(s->path, sizeof s->path, "%s%s", path[0] == '/' ? "" : "/", path) >=
            sizeof s->path) {
            snprintf(err, cap, "SERVING_READINESS_PROBE: httpGet path longer than %zu bytes",
                     sizeof s->path - 1);
            return false;
        }
        int n = snprintf(s->request, sizeof s->request,
                         "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: kube-probe//\r\n"
                         "Accept: */*\r\nConnection: close\r\n",
                         s->path, s->addr.text);
        s->plain_len = n > 0 ? (size_t)n : 0;
        json_t *hdrs = json_object_get(h, "httpHeaders");
        size_t i, used = 0;
        json_t *hd;
        json_array_foreach(hdrs, i, hd)
        {
            const char *name = json_string_value(json_object_get(hd, "name"));
            const char *value = json_string_value(json_object_get(hd, "value"));
            if (!name || !value)
                continue;
            size_t nl = strlen(name) + 1, vl = strlen(value) + 1;
            if (s->nhdrs == PROBE_MAX_HEADERS || used + nl + vl > sizeof s->hdrbuf) {
                snprintf(err, cap, "SERVING_READINESS_PROBE: more httpHeaders than %d or %zu bytes",
                         PROBE_MAX_HEADERS, sizeof s->hdrbuf);
                return false;
            }
            s->hdrs[s->nhdrs].name = memcpy(s->hdrbuf + used, name, nl);
            s->hdrs[s->nhdrs++].value = memcpy(s->hdrbuf + used + nl, value, vl);
            used += nl + vl;
            if (n > 0 && (size_t)n < sizeof s->request)
                n += snprintf(s->request + n, sizeof s->request - (size_t)n, "%s: %s\r\n", name,
                              value);
        }
        if (n > 0 && (size_t)n + 2 < sizeof s->request) {
            memcpy(s->request + n, "\r\n", 2);
            s->request_len = (size_t)n + 2;
        } else {
            snprintf(err, cap, "SERVING_READINESS_PROBE: httpGet request too large");
            return false;
        }
    }
    return true;
}

bool readiness_init(struct readiness *r, struct event_base *base, const char *js, bool multi,
                    bool autodetect_h2, int user_port, char *err, unsigned cap)
{
    memset(r, 0, sizeof *r);
    r->base = base;
    r->autodetect_h2 = autodetect_h2;
    r->aggressive = true;
    r->interval = AGGRESSIVE_INTERVAL;
    r->success_threshold = 1;
    LIST_INIT(&r->waiters);
    LIST_INIT(&r->attempts);
    if (!js || !*js)
        return true; /* always ready */
    json_error_t je;
    json_t *root = json_loads(js, 0, &je);
    if (!root) {
        snprintf(err, cap, "SERVING_READINESS_PROBE: %s", je.text);
        return false;
    }
    size_t n = json_is_array(root) ? json_array_size(root) : 1;
    if (multi && !json_is_array(root))
        log_warn("ENABLE_MULTI_CONTAINER_PROBES is set but SERVING_READINESS_PROBE is one object");
    r->specs = xcalloc(n ? n : 1, sizeof *r->specs); /* start-up (alloc.h) */
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_is_array(root) ? json_array_get(root, i) : root;
        if (!json_is_object(p) || !parse_one(r, p, &r->specs[i], user_port, err, cap)) {
            if (!json_is_object(p))
                snprintf(err, cap, "SERVING_READINESS_PROBE: expected an object");
            json_decref(root);
            free(r->specs);
            r->specs = NULL;
            return false;
        }
    }
    r->nspecs = (unsigned)n;
    json_decref(root);
    return true;
}

static void finish_check(struct readiness *r, bool ok)
{
    r->running = false;
    struct readiness_waiter *w;
    while ((w = LIST_FIRST(&r->waiters))) {
        LIST_REMOVE(w, link);
        w->waiting = false;
        w->done(w, ok);
    }
}

static void start_round(struct readiness *r);

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    start_round(arg);
}

static void round_done(struct readiness *r)
{
    bool ok = r->round_ok;
    if (!r->aggressive) {
        finish_check(r, ok);
        return;
    }
    if (ok) {
        r->consecutive++;
        if (r->consecutive >= r->success_threshold) {
            r->failures = 0;
            finish_check(r, true);
            return;
        }
    } else {
        r->consecutive = 0;
        r->failures++;
    }
    double elapsed = (double)(clock_now_ns() - r->round_start_ns) / 1e9;
    if (elapsed + r->interval > AGGRESSIVE_GIVE_UP) {
        log_error("aggressive probe error (failed %u times): user container not ready",
                  r->failures);
        r->failures = 0;
        finish_check(r, false);
        return;
    }
    struct timeval tv = clock_tv(r->interval);
    event_add(r->retry, &tv);
}

static void attempt_release(struct probe_attempt *a)
{
    LIST_REMOVE(a, link);
    h2_probe_free(a->h2);
    if (a->io)
        event_free(a->io);
    if (a->timer)
        event_free(a->timer);
    if (a->fd >= 0)
        close(a->fd);
    free(a);
}

static void attempt_end(struct probe_attempt *a, bool ok)
{
    struct readiness *r = a->r;
    attempt_release(a);
    if (!ok)
        r->round_ok = false;
    if (--r->pending == 0)
        round_done(r);
}

static void on_attempt_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    attempt_end(arg, false);
}

static void on_attempt_io(evutil_socket_t fd, short what, void *arg);

static bool attempt_connect(struct probe_attempt *a);

/* The next phase of an auto-detecting httpGet attempt, on a new connection. */
static void next_phase(struct probe_attempt *a, enum probe_phase phase)
{
    h2_probe_free(a->h2);
    a->h2 = NULL;
    event_free(a->io);
    a->io = NULL;
    close(a->fd);
    a->fd = -1;
    a->phase = phase;
    a->connected = false;
    a->sent = a->resp_len = 0;
    if (!attempt_connect(a))
        attempt_end(a, false);
}

/* One step of an h2c probe; reading stays armed, writing only while
 * nghttp2 has bytes to send. */
static void h2_step(struct probe_attempt *a, bool readable)
{
    enum h2_probe_result res = h2_probe_io(a->h2, readable);
    if (res != H2_PROBE_PENDING) {
        bool ok = res == H2_PROBE_READY;
        if (!ok)
            log_debug("%s readiness probe of %s: %s", a->spec->kind == PROBE_GRPC ? "gRPC" : "h2c",
                      a->spec->authority, h2_probe_reason(a->h2));
        if (a->phase == PHASE_H2_DETECT) {
            /* Ready over h2c: the GET with the probe's headers decides.
             * Otherwise HTTP/2 may just not be spoken: HTTP/1.1 decides. */
            next_phase(a, ok ? PHASE_H2 : PHASE_H1_DETECT);
            return;
        }
        attempt_end(a, ok);
        return;
    }
    short want = EV_READ | EV_PERSIST | (h2_probe_wants_write(a->h2) ? EV_WRITE : 0);
    if (event_get_events(a->io) != want) {
        event_del(a->io);
        event_assign(a->io, a->r->base, a->fd, want, on_attempt_io, a);
        event_add(a->io, NULL);
    }
}

static void on_attempt_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct probe_attempt *a = arg;
    if (!a->connected) {
        if (net_connect_result(a->fd) != 0) {
            attempt_end(a, false);
            return;
        }
        a->connected = true;
        if (a->spec->kind == PROBE_TCP) {
            attempt_end(a, true);
            return;
        }
        const struct probe_spec *s = a->spec;
        if (s->kind == PROBE_GRPC)
            a->h2 = h2_probe_grpc(a->fd, s->authority, s->service);
        else if (a->phase == PHASE_H2_DETECT)
            a->h2 = h2_probe_get(a->fd, s->authority, s->path, NULL, 0);
        else if (a->phase == PHASE_H2)
            a->h2 = h2_probe_get(a->fd, s->authority, s->path, s->hdrs, s->nhdrs);
        if ((s->kind == PROBE_GRPC || a->phase == PHASE_H2_DETECT || a->phase == PHASE_H2) &&
            !a->h2) {
            attempt_end(a, false);
            return;
        }
    }
    if (a->h2) {
        h2_step(a, what & EV_READ);
        return;
    }
    /* HTTP/1.1: the request with its headers, or (detecting) without them. */
    const char *req = a->spec->request;
    size_t len = a->spec->request_len;
    char plain[sizeof a->spec->request];
    if (a->phase == PHASE_H1_DETECT) {
        memcpy(plain, req, a->spec->plain_len);
        memcpy(plain + a->spec->plain_len, "\r\n", 2);
        req = plain;
        len = a->spec->plain_len + 2;
    }
    if (a->sent < len && (what & EV_WRITE)) {
        ssize_t w = write(a->fd, req + a->sent, len - a->sent);
        if (w < 0 && errno != EAGAIN) {
            attempt_end(a, false);
            return;
        }
        if (w > 0)
            a->sent += (size_t)w;
        if (a->sent == len) {
            event_del(a->io);
            event_assign(a->io, a->r->base, a->fd, EV_READ | EV_PERSIST, on_attempt_io, a);
            event_add(a->io, NULL);
        }
        return;
    }
    if (what & EV_READ) {
        ssize_t n = read(a->fd, a->resp + a->resp_len, sizeof a->resp - 1 - a->resp_len);
        if (n < 0 && errno == EAGAIN)
            return;
        if (n > 0)
            a->resp_len += (size_t)n;
        a->resp[a->resp_len] = 0;
        /* "HTTP/1.1 200 ..." — the status is all we need. */
        if (a->resp_len >= 12 || n <= 0) {
            int code = 0;
            bool ok = sscanf(a->resp, "HTTP/%*d.%*d %d", &code) == 1 && code >= 200 && code < 400;
            attempt_end(a, ok);
        }
    }
}

/* A connect for the attempt's phase; false when it could not start. */
static bool attempt_connect(struct probe_attempt *a)
{
    a->fd = net_connect_start(&a->spec->addr);
    if (a->fd < 0)
        return false;
    a->io = event_new(a->r->base, a->fd, EV_WRITE | EV_PERSIST, on_attempt_io, a);
    if (!a->io)
        return false;
    event_add(a->io, NULL);
    return true;
}

static void start_attempt(struct readiness *r, struct probe_spec *s)
{
    struct probe_attempt *a = calloc(1, sizeof *a);
    if (!a) {
        /* Memory short (alloc.h): this attempt fails, the probe answers not ready. */
        log_error("readiness probe: %s for an attempt", coldbrew_err_no_memory);
        r->round_ok = false;
        if (--r->pending == 0)
            round_done(r);
        return;
    }
    a->r = r;
    a->spec = s;
    a->fd = -1;
    a->phase = s->kind == PROBE_HTTP && r->autodetect_h2 ? PHASE_H2_DETECT : PHASE_H1;
    LIST_INSERT_HEAD(&r->attempts, a, link);
    a->timer = evtimer_new(r->base, on_attempt_timeout, a);
    if (!a->timer || !attempt_connect(a)) {
        attempt_end(a, false);
        return;
    }
    struct timeval tv = clock_tv(s->timeout);
    event_add(a->timer, &tv);
}

static void start_round(struct readiness *r)
{
    r->pending = r->nspecs;
    r->round_ok = true;
    for (unsigned i = 0; i < r->nspecs; i++)
        start_attempt(r, &r->specs[i]);
}

void readiness_check(struct readiness *r, struct readiness_waiter *w)
{
    if (!r->nspecs) {
        w->done(w, true);
        return;
    }
    LIST_INSERT_HEAD(&r->waiters, w, link);
    w->waiting = true;
    if (r->running)
        return;
    r->running = true;
    r->round_start_ns = clock_now_ns();
    if (!r->retry)
        r->retry = evtimer_new(r->base, on_retry, r);
    if (!r->retry) {
        /* Memory short (alloc.h): this check fails now; the next one tries again. */
        log_error("readiness probe: %s for its timer", coldbrew_err_no_memory);
        finish_check(r, false);
        return;
    }
    start_round(r);
}

void readiness_cancel(struct readiness *r, struct readiness_waiter *w)
{
    (void)r;
    if (!w->waiting)
        return;
    LIST_REMOVE(w, link);
    w->waiting = false;
}

void readiness_free(struct readiness *r)
{
    /* Attempts still in flight at exit (a pod stopped while it starts). */
    while (!LIST_EMPTY(&r->attempts))
        attempt_release(LIST_FIRST(&r->attempts));
    if (r->retry)
        event_free(r->retry);
    free(r->specs);
}
