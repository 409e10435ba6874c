/* readiness.c — see readiness.h. */
#include "readiness.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/alloc.h"
#include "../common/clock.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../common/net.h"
#include "grpc_health.h"

#define AGGRESSIVE_INTERVAL 0.05
#define AGGRESSIVE_TIMEOUT  0.1
#define AGGRESSIVE_GIVE_UP  10.0

enum probe_kind { PROBE_TCP, PROBE_HTTP, PROBE_GRPC };

struct probe_spec {
    enum probe_kind kind;
    struct net_addr addr;
    char request[2048]; /* HTTP request bytes */
    size_t request_len;
    char service[200];  /* gRPC: the service to check ("" = the server) */
    char authority[96]; /* gRPC: host:port */
    double timeout;
};

struct probe_attempt {
    struct readiness *r;
    struct probe_spec *spec;
    int fd;
    struct event *io, *timer;
    bool connected;
    size_t sent;
    char resp[64];
    size_t resp_len;
    struct grpc_health *grpc;       /* gRPC: the check in flight once connected */
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
        int n = snprintf(s->request, sizeof s->request,
                         "GET %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: kube-probe//\r\n"
                         "Accept: */*\r\nConnection: close\r\n",
                         path[0] == '/' ? "" : "/", path, s->addr.text);
        json_t *hdrs = json_object_get(h, "httpHeaders");
        size_t i;
        json_t *hd;
        json_array_foreach(hdrs, i, hd)
        {
            const char *name = json_string_value(json_object_get(hd, "name"));
            const char *value = json_string_value(json_object_get(hd, "value"));
            if (name && value && n > 0 && (size_t)n < sizeof s->request)
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
                    int user_port, char *err, unsigned cap)
{
    memset(r, 0, sizeof *r);
    r->base = base;
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
    grpc_health_free(a->grpc);
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

/* One step of a gRPC health check; reading stays armed, writing only while
 * nghttp2 has bytes to send. */
static void grpc_step(struct probe_attempt *a, bool readable)
{
    enum grpc_health_result res = grpc_health_io(a->grpc, readable);
    if (res != GRPC_HEALTH_PENDING) {
        if (res != GRPC_HEALTH_SERVING)
            log_debug("gRPC readiness probe of %s: %s", a->spec->authority,
                      grpc_health_reason(a->grpc));
        attempt_end(a, res == GRPC_HEALTH_SERVING);
        return;
    }
    short want = EV_READ | EV_PERSIST | (grpc_health_wants_write(a->grpc) ? EV_WRITE : 0);
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
        if (a->spec->kind == PROBE_GRPC &&
            !(a->grpc = grpc_health_start(a->fd, a->spec->authority, a->spec->service))) {
            attempt_end(a, false);
            return;
        }
    }
    if (a->spec->kind == PROBE_GRPC) {
        grpc_step(a, what & EV_READ);
        return;
    }
    if (a->sent < a->spec->request_len && (what & EV_WRITE)) {
        ssize_t w = write(a->fd, a->spec->request + a->sent, a->spec->request_len - a->sent);
        if (w < 0 && errno != EAGAIN) {
            attempt_end(a, false);
            return;
        }
        if (w > 0)
            a->sent += (size_t)w;
        if (a->sent == a->spec->request_len) {
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
    LIST_INSERT_HEAD(&r->attempts, a, link);
    a->fd = net_connect_start(&s->addr);
    if (a->fd < 0) {
        attempt_end(a, false);
        return;
    }
    a->io = event_new(r->base, a->fd, EV_WRITE | EV_PERSIST, on_attempt_io, a);
    a->timer = evtimer_new(r->base, on_attempt_timeout, a);
    if (!a->io || !a->timer) {
        log_error("readiness probe: %s for an attempt", coldbrew_err_no_memory);
        attempt_end(a, false);
        return;
    }
    struct timeval tv = clock_tv(s->timeout);
    event_add(a->io, NULL);
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
