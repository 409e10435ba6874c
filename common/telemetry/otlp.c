/* otlp.c — see otlp.h.
 *
 * Invariants:
 *  - the span ring holds `count` ended, sampled spans from `head` on; it is
 *    written only by otlp_add_span() and read only by a flush, which moves
 *    a batch out (the ring slots are free again at once) before encoding;
 *  - each signal has one sender with at most one export in flight
 *    (sender.in_flight); its completion runs sender_finish() exactly once,
 *    whatever happened (answer, timeout, reset, refused connect);
 *  - the request path only ever touches the ring and series counters: no
 *    syscall, no allocation; sockets, timers and logs live on the
 *    exporter's own events. */
#include "telemetry/otlp.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/clock.h"
#include "core/env.h"
#include "http/h2_client.h"
#include "cluster/http_client.h"
#include "http/http_head.h"
#include "core/log.h"
#include "otlp_metrics.pb-c.h"
#include "otlp_trace.pb-c.h"
#include "proxy/upstream.h"

#define DROP_LOG_INTERVAL_NS (60ull * 1000000000ull) /* drops are logged at most once a minute */
#define BACKOFF_MAX_S        60.0
#define RESPONSE_MAX         (64u << 10) /* an Export*ServiceResponse is a few bytes */
#define GRPC_TRACES_PATH     "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
#define GRPC_METRICS_PATH    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

/* ---------------------------------------------------------------- config */

static bool parse_port(const char *s, size_t n, int *out)
{
    if (!n || n > 5)
        return false;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return false;
    *out = v;
    return true;
}

const char *otlp_endpoint_parse(const char *protocol, const char *endpoint, bool metrics,
                                struct otlp_endpoint *out)
{
    memset(out, 0, sizeof *out);
    if (!protocol || !*protocol || !strcmp(protocol, "none")) {
        out->protocol = OTLP_NONE;
        return NULL;
    }
    snprintf(out->proto_name, sizeof out->proto_name, "%s", protocol);
    if (!strcmp(protocol, "grpc")) {
        out->protocol = OTLP_GRPC;
        out->port = 4317;
    } else if (!strcmp(protocol, "http/protobuf")) {
        out->protocol = OTLP_HTTP_PROTOBUF;
        out->port = 4318;
    } else if (!strcmp(protocol, "stdout") || !strcmp(protocol, "prometheus")) {
        /* Valid for Knative; not an OTLP push. The caller says so in a log. */
        out->protocol = OTLP_UNSUPPORTED;
        return NULL;
    } else {
        return "unknown protocol (want none, grpc or http/protobuf)";
    }
    /* OTel's default when no endpoint is given. */
    const char *p = endpoint && *endpoint ? endpoint : "localhost";
    if (!strncmp(p, "https://", 8))
        return "https endpoints are not supported (no TLS client for OTLP yet)";
    if (!strncmp(p, "http://", 7))
        p += 7;
    else if (strstr(p, "://"))
        return "endpoint scheme must be http://";
    const char *slash = strchr(p, '/');
    size_t hp = slash ? (size_t)(slash - p) : strlen(p);
    const char *host = p, *colon = NULL;
    size_t hlen;
    if (hp && p[0] == '[') { /* [v6]:port */
        const char *rb = memchr(p, ']', hp);
        if (!rb)
            return "endpoint has an unclosed '['";
        host = p + 1;
        hlen = (size_t)(rb - host);
        if (rb + 1 < p + hp) {
            if (rb[1] != ':')
                return "endpoint has garbage after ']'";
            colon = rb + 1;
        }
    } else {
        colon = memchr(p, ':', hp);
        if (colon && memchr(colon + 1, ':', hp - (size_t)(colon + 1 - p)))
            return "endpoint IPv6 addresses need [brackets]";
        hlen = colon ? (size_t)(colon - p) : hp;
    }
    if (!hlen || hlen >= sizeof out->host)
        return "endpoint has no host (or one too long)";
    memcpy(out->host, host, hlen);
    out->host[hlen] = 0;
    if (colon && !parse_port(colon + 1, (size_t)(p + hp - colon - 1), &out->port))
        return "endpoint port is not 1-65535";
    if (out->protocol == OTLP_HTTP_PROTOBUF) {
        /* A signal endpoint URL is used as is (OTel's WithEndpointURL);
         * without a path the signal's default path is appended. */
        const char *path = slash && strcmp(slash, "/") ? slash
                           : metrics                   ? "/v1/metrics"
                                                       : "/v1/traces";
        if (strlen(path) >= sizeof out->path)
            return "endpoint path is too long";
        for (const char *c = path; *c; c++)
            if (*c <= ' ' || *c == 0x7f)
                return "endpoint path has spaces or control characters";
        snprintf(out->path, sizeof out->path, "%s", path);
    }
    return NULL;
}

static const char *str_field(json_t *o, const char *key, const char **out, char *err, size_t cap)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        snprintf(err, cap, "%s must be a string", key);
        return err;
    }
    *out = json_string_value(v);
    return NULL;
}

/* An endpoint the config leaves empty comes from OTel's standard variables,
 * as OTel Go's exporters read them when no endpoint option is given: the
 * signal's own (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, used as is), else the
 * base OTEL_EXPORTER_OTLP_ENDPOINT (http/protobuf appends /v1/<signal>). */
static const char *env_endpoint(const char *proto, bool metrics, char *buf, size_t cap)
{
    const char *sig = getenv(metrics ? "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
                                     : "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    if (sig && *sig)
        return sig;
    const char *b = getenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    if (!b || !*b)
        return NULL;
    if (!proto || strcmp(proto, "http/protobuf"))
        return b;
    size_t n = strlen(b);
    while (n && b[n - 1] == '/')
        n--;
    snprintf(buf, cap, "%.*s%s", (int)n, b, metrics ? "/v1/metrics" : "/v1/traces");
    return buf;
}

const char *otlp_config_parse(const char *json, struct otlp_config *out, char *err, size_t cap)
{
    char envbuf[512];
    memset(out, 0, sizeof *out);
    out->metrics_interval = 60; /* OTel's default export interval */
    if (!json || !*json)
        return NULL;
    json_error_t je;
    json_t *root = json_loads(json, 0, &je);
    if (!root || !json_is_object(root)) {
        snprintf(err, cap, "OBSERVABILITY_CONFIG is not a JSON object: %s",
                 root ? "wrong type" : je.text);
        json_decref(root);
        return err;
    }
    const char *why = NULL, *proto, *ep;
    json_t *t = json_object_get(root, "tracing");
    if (json_is_object(t)) {
        if ((why = str_field(t, "protocol", &proto, err, cap)) ||
            (why = str_field(t, "endpoint", &ep, err, cap)))
            goto out;
        if (!ep || !*ep)
            ep = env_endpoint(proto, false, envbuf, sizeof envbuf);
        if ((why = otlp_endpoint_parse(proto, ep, false, &out->traces))) {
            snprintf(err, cap, "tracing: %s", why);
            why = err;
            goto out;
        }
        json_t *r = json_object_get(t, "samplingRate");
        if (r && !json_is_null(r)) {
            if (!json_is_number(r)) {
                why = "tracing.samplingRate must be a number";
                goto out;
            }
            out->sampling_rate = json_number_value(r);
        }
    }
    json_t *m = json_object_get(root, "requestMetrics");
    if (json_is_object(m)) {
        if ((why = str_field(m, "protocol", &proto, err, cap)) ||
            (why = str_field(m, "endpoint", &ep, err, cap)))
            goto out;
        if (!ep || !*ep)
            ep = env_endpoint(proto, true, envbuf, sizeof envbuf);
        if ((why = otlp_endpoint_parse(proto, ep, true, &out->metrics))) {
            snprintf(err, cap, "requestMetrics: %s", why);
            why = err;
            goto out;
        }
        json_t *iv = json_object_get(m, "exportInterval"); /* Go time.Duration: ns */
        if (json_is_integer(iv) && json_integer_value(iv) > 0)
            out->metrics_interval = (double)json_integer_value(iv) / 1e9;
    }
out:
    json_decref(root);
    return why;
}

static long env_range(const char *name, long def, long lo, long hi)
{
    bool ok = true;
    long v = env_long(name, def, &ok);
    if (!ok || v < lo || v > hi) {
        log_warn("%s: want an integer in %ld..%ld; using %ld", name, lo, hi, def);
        return def;
    }
    return v;
}

void otlp_settings_from_env(struct otlp_settings *s)
{
    s->queue_spans = (unsigned)env_range("COLDBREW_OTLP_QUEUE_SPANS", 2048, 1, 1 << 20);
    s->batch_spans = (unsigned)env_range("COLDBREW_OTLP_BATCH_SPANS", 512, 1, 1 << 20);
    if (s->batch_spans > s->queue_spans)
        s->batch_spans = s->queue_spans;
    s->batch_s = (double)env_range("COLDBREW_OTLP_BATCH_MS", 5000, 1, 3600000) / 1e3;
    s->timeout_s = (double)env_range("COLDBREW_OTLP_TIMEOUT_MS", 10000, 1, 3600000) / 1e3;
    s->max_series = (unsigned)env_range("COLDBREW_OTLP_MAX_SERIES", 1000, 1, 1 << 20);
    s->max_message = (size_t)env_range("COLDBREW_OTLP_MAX_MESSAGE_BYTES", 4 << 20, 4096, 1 << 30);
}

static bool set_(const char *s)
{
    return s && *s;
}

size_t otlp_knative_resource(const struct otlp_knative_ids *ids,
                             struct otlp_kv out[OTLP_KNATIVE_ATTRS])
{
    size_t n = 0;
#define ADD(k, v)                                                                                  \
    do {                                                                                           \
        if (set_(v))                                                                               \
            out[n++] = (struct otlp_kv){k, v};                                                     \
    } while (0)
    ADD("k8s.container.name", ids->container);
    ADD("k8s.namespace.name", ids->ns);
    ADD("k8s.pod.name", ids->pod);
    const char *name = set_(ids->otel_service_name) ? ids->otel_service_name
                       : set_(ids->service)         ? ids->service
                       : set_(ids->configuration)   ? ids->configuration
                       : set_(ids->revision)        ? ids->revision
                                                    : ids->pod;
    ADD("service.name", name);
    ADD("service.version", ids->version);
    ADD("service.instance.id", ids->pod);
    ADD("kn.service.name", ids->service);
    ADD("kn.configuration.name", ids->configuration);
    ADD("kn.revision.name", ids->revision);
#undef ADD
    return n;
}

/* ---------------------------------------------------------------- types */

struct otlp_series {
    struct otlp_metric *m;
    unsigned nattrs;
    char *keys[OTLP_SERIES_ATTRS], *values[OTLP_SERIES_ATTRS];
    bool has_value;
    int64_t i;      /* counters, int gauges */
    double d;       /* double gauges */
    uint64_t count; /* histograms */
    double sum, min, max;
    uint64_t buckets[OTLP_MAX_BOUNDS + 1];
    struct otlp_series *next;
};

struct otlp_metric {
    struct otlp_exporter *x;
    char *name, *desc, *unit;
    enum otlp_metric_kind kind;
    double bounds[OTLP_MAX_BOUNDS];
    size_t nbounds;
    struct otlp_series *series;
    unsigned nseries;
    struct otlp_metric *next;
};

struct sender;
typedef void (*sender_done_cb)(struct sender *sd, bool ok, const char *err, int64_t rejected);

/* One signal's way to the collector. */
struct sender {
    struct otlp_exporter *x;
    const char *signal; /* "traces" / "metrics", for logs */
    struct otlp_endpoint ep;
    bool on;
    char authority[300];
    const char *grpc_path;
    struct net_addr addr;
    /* http/protobuf */
    struct upstream up;
    struct http_call *call;
    /* grpc */
    struct h2c_conn *h2;
    struct h2c_stream *stream;
    struct evbuffer *resp;
    struct event timer; /* the gRPC call's deadline (http_call has its own) */
    int http_status;
    bool in_flight;
    sender_done_cb done;
    bool traces; /* which response message to decode */
    /* After a failure the next export waits: from the batch interval,
     * doubling to BACKOFF_MAX_S. Spans wait in the (bounded) ring meanwhile,
     * and a collector that is down costs one dial per backoff, not one per
     * batch (nor a log line per batch from the connection code). */
    double backoff_s;
    uint64_t next_try_ns; /* monotonic; 0: now */
    char err[256];
};

struct otlp_exporter {
    struct event_base *base;
    struct otlp_settings set;
    struct h2_limits lim;
    /* The resource and scope, copied. */
    size_t nres;
    char **res_keys, **res_values;
    char *scope;
    /* traces */
    struct sender tr;
    struct span *ring;
    unsigned head, count, cap;
    unsigned batch_n; /* spans in the export in flight */
    bool draining;    /* otlp_flush(): send partial batches back to back */
    struct event tick, kick;
    /* metrics */
    struct sender me;
    struct otlp_metric *metrics;
    unsigned nseries;
    double metrics_interval;
    struct event mtick;
    uint64_t start_ns; /* cumulative series start here */
    /* counters */
    struct otlp_stats st;
    uint64_t logged_full, logged_export, logged_mfail, logged_series;
    uint64_t last_log_ns;
};

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- drop log */

/* At most once a minute, from the exporter's timers: what was lost since
 * the last line and the last reason. */
static void maybe_log_drops(struct otlp_exporter *x)
{
    uint64_t full = x->st.spans_dropped_full - x->logged_full;
    uint64_t exp = x->st.spans_dropped_export - x->logged_export;
    uint64_t mf = x->st.metric_exports_failed - x->logged_mfail;
    uint64_t ser = x->st.series_dropped - x->logged_series;
    if (!full && !exp && !mf && !ser)
        return;
    uint64_t now = clock_now_ns();
    if (x->last_log_ns && now - x->last_log_ns < DROP_LOG_INTERVAL_NS)
        return;
    x->last_log_ns = now;
    log_warn("otlp: dropped %llu spans (queue full, COLDBREW_OTLP_QUEUE_SPANS=%u), %llu spans in "
             "failed exports, %llu failed metric exports, %llu series over "
             "COLDBREW_OTLP_MAX_SERIES=%u; last error: %s",
             (unsigned long long)full, x->set.queue_spans, (unsigned long long)exp,
             (unsigned long long)mf, (unsigned long long)ser, x->set.max_series,
             x->st.last_error ? x->st.last_error : "none");
    x->logged_full = x->st.spans_dropped_full;
    x->logged_export = x->st.spans_dropped_export;
    x->logged_mfail = x->st.metric_exports_failed;
    x->logged_series = x->st.series_dropped;
}

/* ---------------------------------------------------------------- senders */

static void sender_finish(struct sender *sd, bool ok, const char *err, int64_t rejected)
{
    if (!sd->in_flight)
        return;
    sd->in_flight = false;
    sd->x->st.in_flight--;
    event_del(&sd->timer);
    if (ok) {
        sd->backoff_s = 0;
        sd->next_try_ns = 0;
    } else {
        double b = sd->backoff_s ? sd->backoff_s * 2 : sd->x->set.batch_s;
        sd->backoff_s = b > BACKOFF_MAX_S ? BACKOFF_MAX_S : b;
        sd->next_try_ns = clock_now_ns() + (uint64_t)(sd->backoff_s * 1e9);
    }
    if (!ok) {
        if (err != sd->err)
            snprintf(sd->err, sizeof sd->err, "%s", err);
        sd->x->st.last_error = sd->err;
    }
    sd->done(sd, ok, ok ? NULL : sd->err, rejected);
}

/* partial_success.rejected_* from an Export*ServiceResponse (0 when absent
 * or not decodable: the status already said it was accepted). */
static int64_t rejected_of(const struct sender *sd, const uint8_t *b, size_t n)
{
    int64_t r = 0;
    if (!n)
        return 0;
    if (sd->traces) {
        Opentelemetry__Proto__Trace__V1__ExportTraceServiceResponse *m =
            opentelemetry__proto__trace__v1__export_trace_service_response__unpack(NULL, n, b);
        if (m && m->partial_success)
            r = m->partial_success->rejected_spans;
        if (m)
            opentelemetry__proto__trace__v1__export_trace_service_response__free_unpacked(m, NULL);
    } else {
        Opentelemetry__Proto__Metrics__V1__ExportMetricsServiceResponse *m =
            opentelemetry__proto__metrics__v1__export_metrics_service_response__unpack(NULL, n, b);
        if (m && m->partial_success)
            r = m->partial_success->rejected_data_points;
        if (m)
            opentelemetry__proto__metrics__v1__export_metrics_service_response__free_unpacked(m,
                                                                                              NULL);
    }
    return r > 0 ? r : 0;
}

static void on_http_done(struct http_call *c, const char *err)
{
    struct sender *sd = c->arg;
    if (err) {
        sender_finish(sd, false, err, 0);
        return;
    }
    if (c->status < 200 || c->status > 299) {
        snprintf(sd->err, sizeof sd->err, "%s collector answered HTTP %d", sd->signal, c->status);
        sender_finish(sd, false, sd->err, 0);
        return;
    }
    size_t n = evbuffer_get_length(c->body);
    int64_t rej = rejected_of(sd, evbuffer_pullup(c->body, (ssize_t)n), n);
    sender_finish(sd, true, NULL, rej);
}

static void http_send(struct sender *sd, uint8_t *msg, size_t len)
{
    char head[768];
    int h = snprintf(head, sizeof head,
                     "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: coldbrew-otlp\r\n"
                     "Content-Type: application/x-protobuf\r\nContent-Length: %zu\r\n\r\n",
                     sd->ep.path, sd->authority, len);
    char *req = malloc((size_t)h + len);
    if (!req) {
        sender_finish(sd, false, "out of memory", 0);
        return;
    }
    memcpy(req, head, (size_t)h);
    memcpy(req + h, msg, len);
    if (!sd->call) {
        sd->call = http_call_new(&sd->up, sd);
        sd->call->max_body = RESPONSE_MAX;
    }
    http_call_start(sd->call, req, (size_t)h + len, sd->x->set.timeout_s, on_http_done, NULL);
    free(req);
}

static void grpc_on_head(struct h2c_stream *s, bool final)
{
    struct sender *sd = s->holder;
    if (final)
        sd->http_status = s->head->status;
}

static void grpc_on_data(struct h2c_stream *s)
{
    struct sender *sd = s->holder;
    size_t n = h2_unread(s->in);
    if (evbuffer_get_length(sd->resp) + n > RESPONSE_MAX) {
        h2c_stream_cancel(s);
        sd->stream = NULL;
        sender_finish(sd, false, "collector response too large", 0);
        return;
    }
    if (!n) /* also called for the trailers alone, before any body */
        return;
    evbuffer_remove_buffer(s->in, sd->resp, n);
    h2c_stream_consumed(s, n);
}

static void grpc_on_end(struct h2c_stream *s)
{
    struct sender *sd = s->holder;
    sd->stream = NULL;
    /* grpc-status is in the trailers, or in the head of a trailers-only
     * answer (the usual shape of an error). */
    size_t vl = 0;
    const char *v = s->trailers ? http_head_get(s->trailers, "grpc-status", &vl) : NULL;
    const struct http_head *where = s->trailers;
    if (!v && s->head) {
        v = http_head_get(s->head, "grpc-status", &vl);
        where = s->head;
    }
    if (sd->http_status != 200) {
        snprintf(sd->err, sizeof sd->err, "%s collector answered HTTP %d", sd->signal,
                 sd->http_status);
        sender_finish(sd, false, sd->err, 0);
        return;
    }
    if (!v) {
        sender_finish(sd, false, "collector sent no grpc-status", 0);
        return;
    }
    int code = atoi(v);
    if (code != 0) {
        size_t ml = 0;
        const char *msg = http_head_get(where, "grpc-message", &ml);
        snprintf(sd->err, sizeof sd->err, "%s collector: grpc-status %d %.*s", sd->signal, code,
                 msg ? (int)(ml > 160 ? 160 : ml) : 0, msg ? msg : "");
        sender_finish(sd, false, sd->err, 0);
        return;
    }
    /* One length-prefixed, uncompressed message (or none). */
    size_t n = evbuffer_get_length(sd->resp);
    uint8_t *b = evbuffer_pullup(sd->resp, (ssize_t)n);
    int64_t rej = 0;
    if (n >= 5 && b[0] == 0) {
        uint32_t ml = (uint32_t)b[1] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 8 | b[4];
        if (ml <= n - 5)
            rej = rejected_of(sd, b + 5, ml);
    }
    sender_finish(sd, true, NULL, rej);
}

static void grpc_on_reset(struct h2c_stream *s, uint32_t code, const char *why)
{
    struct sender *sd = s->holder;
    sd->stream = NULL;
    snprintf(sd->err, sizeof sd->err, "%s collector %s: %s (h2 error %u)", sd->signal,
             sd->addr.text, why ? why : "stream reset", code);
    sender_finish(sd, false, sd->err, 0);
}

static const struct h2c_stream_ops grpc_ops = {
    .on_head = grpc_on_head,
    .on_data = grpc_on_data,
    .on_end = grpc_on_end,
    .on_reset = grpc_on_reset,
};

static void grpc_drop_conn(struct sender *sd)
{
    if (sd->stream) {
        h2c_stream_cancel(sd->stream);
        sd->stream = NULL;
    }
    if (sd->h2) {
        h2c_conn_free(sd->h2);
        sd->h2 = NULL;
    }
}

static void on_grpc_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct sender *sd = arg;
    /* A collector that hangs may hold the connection too: start afresh. */
    grpc_drop_conn(sd);
    snprintf(sd->err, sizeof sd->err, "%s collector %s: no answer within %.0f ms", sd->signal,
             sd->addr.text, sd->x->set.timeout_s * 1e3);
    sender_finish(sd, false, sd->err, 0);
}

static void grpc_send(struct sender *sd, uint8_t *msg, size_t len)
{
    if (sd->h2 && h2c_conn_done(sd->h2)) {
        h2c_conn_free(sd->h2);
        sd->h2 = NULL;
    }
    if (!sd->h2 && !(sd->h2 = h2c_conn_new(sd->x->base, &sd->addr, &sd->x->lim, NULL, sd))) {
        snprintf(sd->err, sizeof sd->err, "%s collector %s: connect: %s", sd->signal, sd->addr.text,
                 strerror(errno));
        sender_finish(sd, false, sd->err, 0);
        return;
    }
    static const struct h2_header_out hdrs[] = {
        {"content-type", "application/grpc", 12, 16},
        {"te", "trailers", 2, 8},
        {"user-agent", "coldbrew-otlp", 10, 13},
    };
    sd->http_status = 0;
    evbuffer_drain(sd->resp, evbuffer_get_length(sd->resp));
    sd->stream = h2c_request(sd->h2, "POST", "http", sd->authority, sd->grpc_path, hdrs, 3, false,
                             &grpc_ops, sd);
    if (!sd->stream) {
        grpc_drop_conn(sd);
        sender_finish(sd, false, "collector connection cannot take a stream", 0);
        return;
    }
    /* gRPC's message prefix: uncompressed, 4-byte big-endian length. */
    uint8_t pre[5] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                      (uint8_t)len};
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, pre, 5);
    evbuffer_add(b, msg, len);
    h2c_stream_write(sd->stream, b);
    evbuffer_free(b);
    if (sd->stream)
        h2c_stream_end(sd->stream, NULL, 0);
    struct timeval tv = clock_tv(sd->x->set.timeout_s);
    if (sd->in_flight)
        event_add(&sd->timer, &tv);
}

/* May this signal export now (nothing in flight, no backoff)? */
static bool sender_ready(const struct sender *sd)
{
    return sd->on && !sd->in_flight && (!sd->next_try_ns || clock_now_ns() >= sd->next_try_ns);
}

/* Sends one encoded message; sd->done runs once with the outcome. */
static void sender_send(struct sender *sd, uint8_t *msg, size_t len)
{
    sd->in_flight = true;
    sd->x->st.in_flight++;
    if (len > sd->x->set.max_message) {
        sender_finish(sd, false, "export message over COLDBREW_OTLP_MAX_MESSAGE_BYTES", 0);
        return;
    }
    if (sd->ep.protocol == OTLP_GRPC)
        grpc_send(sd, msg, len);
    else
        http_send(sd, msg, len);
}

static const char *sender_init(struct otlp_exporter *x, struct sender *sd, const char *signal,
                               const struct otlp_endpoint *ep, sender_done_cb done, bool traces)
{
    sd->x = x;
    sd->signal = signal;
    sd->ep = *ep;
    sd->done = done;
    sd->traces = traces;
    sd->grpc_path = traces ? GRPC_TRACES_PATH : GRPC_METRICS_PATH;
    event_assign(&sd->timer, x->base, -1, 0, on_grpc_timeout, sd);
    if (ep->protocol != OTLP_GRPC && ep->protocol != OTLP_HTTP_PROTOBUF)
        return NULL;
    bool v6 = strchr(ep->host, ':') != NULL;
    snprintf(sd->authority, sizeof sd->authority, v6 ? "[%s]:%d" : "%s:%d", ep->host, ep->port);
    /* Resolve once, at start-up. A collector Service's ClusterIP does not
     * change while it exists. */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char ip[64];
    if (getaddrinfo(ep->host, NULL, &hints, &ai) || !ai ||
        getnameinfo(ai->ai_addr, ai->ai_addrlen, ip, sizeof ip, NULL, 0, NI_NUMERICHOST)) {
        if (ai)
            freeaddrinfo(ai);
        snprintf(sd->err, sizeof sd->err, "%s endpoint host %.200s does not resolve", signal,
                 ep->host);
        return sd->err;
    }
    freeaddrinfo(ai);
    if (!net_addr_parse(&sd->addr, ip, ep->port)) {
        snprintf(sd->err, sizeof sd->err, "%s endpoint %s: bad address", signal, ip);
        return sd->err;
    }
    if (ep->protocol == OTLP_HTTP_PROTOBUF &&
        !upstream_init(&sd->up, x->base, ip, ep->port, 2, 30.0)) {
        snprintf(sd->err, sizeof sd->err, "%s endpoint %s: bad address", signal, ip);
        return sd->err;
    }
    sd->resp = evbuffer_new();
    sd->on = true;
    return NULL;
}

static void sender_free(struct sender *sd)
{
    if (sd->call) {
        http_call_free(sd->call); /* cancels without a callback */
        sd->call = NULL;
    }
    grpc_drop_conn(sd);
    if (sd->on && sd->ep.protocol == OTLP_HTTP_PROTOBUF)
        upstream_close_idle(&sd->up);
    if (sd->resp)
        evbuffer_free(sd->resp);
    sd->resp = NULL;
    if (event_initialized(&sd->timer))
        event_del(&sd->timer);
}

/* ---------------------------------------------------------------- encoding */

typedef Opentelemetry__Proto__Common__V1__KeyValue KeyValue;
typedef Opentelemetry__Proto__Common__V1__AnyValue AnyValue;

static const KeyValue kv_init = OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
static const AnyValue av_init = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;

static void kv_str(KeyValue *kv, AnyValue *av, const char *k, const char *v)
{
    *kv = kv_init;
    *av = av_init;
    kv->key = (char *)k;
    kv->value = av;
    av->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    av->string_value = (char *)v;
}

/* The encoder borrows memory from one arena per export: every protobuf-c
 * struct of a batch is carved from it and freed in one go. */
struct arena {
    char *p;
    size_t used, cap;
};

static void *arena_get(struct arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (a->used + n > a->cap)
        return NULL; /* sized up front: never happens */
    void *r = a->p + a->used;
    a->used += n;
    return r;
}

struct resource_bufs {
    Opentelemetry__Proto__Common__V1__Resource res;
    Opentelemetry__Proto__Common__V1__InstrumentationScope scope;
};

static bool resource_fill(struct otlp_exporter *x, struct arena *a, struct resource_bufs *rb)
{
    Opentelemetry__Proto__Common__V1__Resource r0 =
        OPENTELEMETRY__PROTO__COMMON__V1__RESOURCE__INIT;
    Opentelemetry__Proto__Common__V1__InstrumentationScope s0 =
        OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
    rb->res = r0;
    rb->scope = s0;
    rb->scope.name = x->scope;
    KeyValue **kvp = arena_get(a, x->nres * sizeof *kvp + 1);
    KeyValue *kv = arena_get(a, x->nres * sizeof *kv + 1);
    AnyValue *av = arena_get(a, x->nres * sizeof *av + 1);
    if (!kvp || !kv || !av)
        return false;
    for (size_t i = 0; i < x->nres; i++) {
        kv_str(&kv[i], &av[i], x->res_keys[i], x->res_values[i]);
        kvp[i] = &kv[i];
    }
    rb->res.n_attributes = x->nres;
    rb->res.attributes = kvp;
    return true;
}

static void attr_to_kv(const struct span_attr *sa, KeyValue *kv, AnyValue *av, char *sbuf)
{
    *kv = kv_init;
    *av = av_init;
    kv->key = (char *)sa->key;
    kv->value = av;
    switch (sa->type) {
    case SPAN_ATTR_STR:
        memcpy(sbuf, sa->s, sa->slen);
        sbuf[sa->slen] = 0;
        av->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
        av->string_value = sbuf;
        break;
    case SPAN_ATTR_INT:
        av->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
        av->int_value = sa->v.i;
        break;
    case SPAN_ATTR_DOUBLE:
        av->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE;
        av->double_value = sa->v.d;
        break;
    default:
        av->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
        av->bool_value = sa->v.b;
        break;
    }
}

/* The reference encoder: the ring's first n spans as an
 * ExportTraceServiceRequest built from protobuf-c's generated structs and
 * packed by protobuf-c; malloc'd bytes. The export path uses encode_spans()
 * below, which writes the same bytes (otlp_encode_test.c compares them) at
 * a twentieth of the cost. */
__attribute__((unused)) static uint8_t *encode_spans_pbc(struct otlp_exporter *x, size_t n,
                                                         size_t *len)
{
#define SPAN_AT(i) (&x->ring[(x->head + (i)) % x->cap])
    typedef Opentelemetry__Proto__Trace__V1__Span Span;
    typedef Opentelemetry__Proto__Trace__V1__Span__Event Event;
    typedef Opentelemetry__Proto__Trace__V1__Status Status;
    size_t nattrs = 0, nevents = 0;
    for (size_t i = 0; i < n; i++)
        nattrs += SPAN_AT(i)->nattrs, nevents += SPAN_AT(i)->nevents;
    struct arena a = {0};
    a.cap = 4096 + x->nres * (sizeof(KeyValue *) + sizeof(KeyValue) + sizeof(AnyValue) + 48) +
            n * (sizeof(Span *) + sizeof(Span) + sizeof(Status) + 64) +
            nattrs * (sizeof(KeyValue *) + sizeof(KeyValue) + sizeof(AnyValue) +
                      TRACE_ATTR_STR_MAX + 64) +
            nevents * (sizeof(Event *) + sizeof(Event) + 32);
    if (!(a.p = malloc(a.cap)))
        return NULL;
    struct resource_bufs rb;
    Opentelemetry__Proto__Trace__V1__ScopeSpans ss =
        OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
    Opentelemetry__Proto__Trace__V1__ResourceSpans rs =
        OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
    Opentelemetry__Proto__Trace__V1__ExportTraceServiceRequest req =
        OPENTELEMETRY__PROTO__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
    Opentelemetry__Proto__Trace__V1__ScopeSpans *ssp = &ss;
    Opentelemetry__Proto__Trace__V1__ResourceSpans *rsp = &rs;
    Span **sp = arena_get(&a, n * sizeof *sp);
    uint8_t *out = NULL;
    if (!sp || !resource_fill(x, &a, &rb))
        goto done;
    static const Span span_init = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__INIT;
    static const Event ev_init = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__EVENT__INIT;
    static const Status st_init = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__INIT;
    for (size_t i = 0; i < n; i++) {
        const struct span *s = SPAN_AT(i);
        Span *o = arena_get(&a, sizeof *o);
        *o = span_init;
        sp[i] = o;
        o->trace_id.data = (uint8_t *)s->trace_id;
        o->trace_id.len = TRACE_ID_LEN;
        o->span_id.data = (uint8_t *)s->span_id;
        o->span_id.len = TRACE_SPAN_ID_LEN;
        if (s->has_parent) {
            o->parent_span_id.data = (uint8_t *)s->parent_id;
            o->parent_span_id.len = TRACE_SPAN_ID_LEN;
        }
        /* W3C flags, plus "is the parent remote" known (bit 8) and its
         * answer (bit 9), as OTel Go sets them. */
        o->flags = (uint32_t)(s->flags & 0xff) | 0x100u | (s->parent_remote ? 0x200u : 0);
        o->name = (char *)s->name;
        o->kind = (Opentelemetry__Proto__Trace__V1__Span__SpanKind)s->kind;
        o->start_time_unix_nano = s->start_ns;
        o->end_time_unix_nano = s->end_ns;
        o->dropped_attributes_count = s->dropped_attrs;
        o->dropped_events_count = s->dropped_events;
        if (s->nattrs) {
            KeyValue **kvp = arena_get(&a, s->nattrs * sizeof *kvp);
            for (unsigned j = 0; j < s->nattrs; j++) {
                KeyValue *kv = arena_get(&a, sizeof *kv);
                AnyValue *av = arena_get(&a, sizeof *av);
                char *sbuf = arena_get(&a, TRACE_ATTR_STR_MAX + 1);
                attr_to_kv(&s->attrs[j], kv, av, sbuf);
                kvp[j] = kv;
            }
            o->n_attributes = s->nattrs;
            o->attributes = kvp;
        }
        if (s->nevents) {
            Event **evp = arena_get(&a, s->nevents * sizeof *evp);
            for (unsigned j = 0; j < s->nevents; j++) {
                Event *e = arena_get(&a, sizeof *e);
                *e = ev_init;
                e->name = (char *)s->events[j].name;
                e->time_unix_nano = s->events[j].time_ns;
                evp[j] = e;
            }
            o->n_events = s->nevents;
            o->events = evp;
        }
        if (s->status != SPAN_STATUS_UNSET) {
            Status *st = arena_get(&a, sizeof *st);
            *st = st_init;
            st->code = (Opentelemetry__Proto__Trace__V1__Status__StatusCode)s->status;
            st->message = (char *)(s->status_msg ? s->status_msg : "");
            o->status = st;
        }
    }
    ss.scope = &rb.scope;
    ss.n_spans = n;
    ss.spans = sp;
    rs.resource = &rb.res;
    rs.n_scope_spans = 1;
    rs.scope_spans = &ssp;
    req.n_resource_spans = 1;
    req.resource_spans = &rsp;
    *len = opentelemetry__proto__trace__v1__export_trace_service_request__get_packed_size(&req);
    if ((out = malloc(*len ? *len : 1)))
        opentelemetry__proto__trace__v1__export_trace_service_request__pack(&req, out);
done:
    free(a.p);
    return out;
#undef SPAN_AT
}

/* ------------------------------------------------------- fast span encoding
 *
 * protobuf-c packs by walking its descriptors field by field and sizes every
 * nested message again at each level; for a span with six attributes that
 * is ~5,000 instructions, most of the queue-proxy's user CPU at sampling
 * 1.0 (callgrind). Spans are the only hot message, and their shape is fixed
 * (struct span), so their bytes are written here directly, in protobuf-c's
 * order and with its rules (fields in number order; proto3 scalars, strings
 * and bytes left out when zero or empty; oneof members always written),
 * which makes the output byte-identical to encode_spans_pbc()
 * (tests/unit/otlp_encode_test.c checks it). The envelope's resource and
 * scope are still packed by protobuf-c. */

static size_t pb_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *pb_varint(uint8_t *w, uint64_t v)
{
    while (v >= 0x80) {
        *w++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *w++ = (uint8_t)v;
    return w;
}

static uint8_t *pb_fixed64(uint8_t *w, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        *w++ = (uint8_t)(v >> (8 * i));
    return w;
}

/* A length-delimited field (tag < 128) of n bytes. */
static size_t pb_ld_len(size_t n)
{
    return 1 + pb_varint_len(n) + n;
}

static uint8_t *pb_ld(uint8_t *w, uint8_t tag, const void *p, size_t n)
{
    *w++ = tag;
    w = pb_varint(w, n);
    memcpy(w, p, n);
    return w + n;
}

static size_t anyvalue_len(const struct span_attr *a)
{
    switch (a->type) {
    case SPAN_ATTR_STR:
        return pb_ld_len(a->slen);
    case SPAN_ATTR_INT:
        return 1 + pb_varint_len((uint64_t)a->v.i);
    case SPAN_ATTR_DOUBLE:
        return 9;
    default:
        return 2;
    }
}

static size_t keyvalue_len(const struct span_attr *a, size_t klen)
{
    return (klen ? pb_ld_len(klen) : 0) + pb_ld_len(anyvalue_len(a));
}

static size_t event_len(const struct span_event *e)
{
    size_t nl = e->name ? strlen(e->name) : 0;
    return (e->time_ns ? 9 : 0) + (nl ? pb_ld_len(nl) : 0);
}

static size_t status_len(const struct span *s)
{
    size_t ml = s->status_msg ? strlen(s->status_msg) : 0;
    return (ml ? pb_ld_len(ml) : 0) + 1 + pb_varint_len(s->status);
}

static size_t span_len(const struct span *s, size_t *klen)
{
    size_t n = pb_ld_len(TRACE_ID_LEN) + pb_ld_len(TRACE_SPAN_ID_LEN);
    if (s->has_parent)
        n += pb_ld_len(TRACE_SPAN_ID_LEN);
    size_t nl = strlen(s->name);
    if (nl)
        n += pb_ld_len(nl);
    if (s->kind)
        n += 1 + pb_varint_len(s->kind);
    if (s->start_ns)
        n += 9;
    if (s->end_ns)
        n += 9;
    for (unsigned j = 0; j < s->nattrs; j++) {
        klen[j] = strlen(s->attrs[j].key);
        n += pb_ld_len(keyvalue_len(&s->attrs[j], klen[j]));
    }
    if (s->dropped_attrs)
        n += 1 + pb_varint_len(s->dropped_attrs);
    for (unsigned j = 0; j < s->nevents; j++)
        n += pb_ld_len(event_len(&s->events[j]));
    if (s->dropped_events)
        n += 1 + pb_varint_len(s->dropped_events);
    if (s->status != SPAN_STATUS_UNSET)
        n += pb_ld_len(status_len(s));
    return n + 2 + 4; /* flags: field 16 (a 2-byte tag), fixed32, never 0 */
}

static uint8_t *span_write(uint8_t *w, const struct span *s, const size_t *klen)
{
    w = pb_ld(w, 0x0a, s->trace_id, TRACE_ID_LEN);
    w = pb_ld(w, 0x12, s->span_id, TRACE_SPAN_ID_LEN);
    if (s->has_parent)
        w = pb_ld(w, 0x22, s->parent_id, TRACE_SPAN_ID_LEN);
    size_t nl = strlen(s->name);
    if (nl)
        w = pb_ld(w, 0x2a, s->name, nl);
    if (s->kind) {
        *w++ = 0x30;
        w = pb_varint(w, s->kind);
    }
    if (s->start_ns) {
        *w++ = 0x39;
        w = pb_fixed64(w, s->start_ns);
    }
    if (s->end_ns) {
        *w++ = 0x41;
        w = pb_fixed64(w, s->end_ns);
    }
    for (unsigned j = 0; j < s->nattrs; j++) {
        const struct span_attr *a = &s->attrs[j];
        *w++ = 0x4a;
        w = pb_varint(w, keyvalue_len(a, klen[j]));
        if (klen[j])
            w = pb_ld(w, 0x0a, a->key, klen[j]);
        *w++ = 0x12;
        w = pb_varint(w, anyvalue_len(a));
        switch (a->type) {
        case SPAN_ATTR_STR:
            w = pb_ld(w, 0x0a, a->s, a->slen);
            break;
        case SPAN_ATTR_INT:
            *w++ = 0x18;
            w = pb_varint(w, (uint64_t)a->v.i);
            break;
        case SPAN_ATTR_DOUBLE: {
            uint64_t bits;
            memcpy(&bits, &a->v.d, 8);
            *w++ = 0x21;
            w = pb_fixed64(w, bits);
            break;
        }
        default:
            *w++ = 0x10;
            *w++ = a->v.b ? 1 : 0;
            break;
        }
    }
    if (s->dropped_attrs) {
        *w++ = 0x50;
        w = pb_varint(w, s->dropped_attrs);
    }
    for (unsigned j = 0; j < s->nevents; j++) {
        const struct span_event *e = &s->events[j];
        *w++ = 0x5a;
        w = pb_varint(w, event_len(e));
        if (e->time_ns) {
            *w++ = 0x09;
            w = pb_fixed64(w, e->time_ns);
        }
        size_t en = e->name ? strlen(e->name) : 0;
        if (en)
            w = pb_ld(w, 0x12, e->name, en);
    }
    if (s->dropped_events) {
        *w++ = 0x60;
        w = pb_varint(w, s->dropped_events);
    }
    if (s->status != SPAN_STATUS_UNSET) {
        *w++ = 0x7a;
        w = pb_varint(w, status_len(s));
        size_t ml = s->status_msg ? strlen(s->status_msg) : 0;
        if (ml)
            w = pb_ld(w, 0x12, s->status_msg, ml);
        *w++ = 0x18;
        w = pb_varint(w, s->status);
    }
    /* W3C flags, plus "is the parent remote" known (bit 8) and its answer
     * (bit 9), as OTel Go sets them. */
    uint32_t flags = (uint32_t)(s->flags & 0xff) | 0x100u | (s->parent_remote ? 0x200u : 0);
    *w++ = 0x85; /* field 16, wire type 5 */
    *w++ = 0x01;
    for (int i = 0; i < 4; i++)
        *w++ = (uint8_t)(flags >> (8 * i));
    return w;
}

/* The ring's first n spans as an ExportTraceServiceRequest; malloc'd bytes. */
static uint8_t *encode_spans(struct otlp_exporter *x, size_t n, size_t *len)
{
#define SPAN_AT(i) (&x->ring[(x->head + (i)) % x->cap])
    struct arena a = {0};
    a.cap = 4096 + x->nres * (sizeof(KeyValue *) + sizeof(KeyValue) + sizeof(AnyValue) + 48);
    if (!(a.p = malloc(a.cap)))
        return NULL;
    struct resource_bufs rb;
    uint8_t *out = NULL;
    size_t *slen = malloc((n ? n : 1) * sizeof *slen);
    size_t *klen = malloc((n ? n : 1) * TRACE_MAX_ATTRS * sizeof *klen);
    if (!slen || !klen || !resource_fill(x, &a, &rb))
        goto done;
    size_t spans = 0;
    for (size_t i = 0; i < n; i++) {
        slen[i] = span_len(SPAN_AT(i), klen + i * TRACE_MAX_ATTRS);
        spans += pb_ld_len(slen[i]); /* ScopeSpans.spans = 2 */
    }
    size_t scope_len =
        opentelemetry__proto__common__v1__instrumentation_scope__get_packed_size(&rb.scope);
    size_t res_len = opentelemetry__proto__common__v1__resource__get_packed_size(&rb.res);
    size_t ss_len = pb_ld_len(scope_len) + spans;           /* ScopeSpans.scope = 1 */
    size_t rs_len = pb_ld_len(res_len) + pb_ld_len(ss_len); /* .resource = 1, .scope_spans = 2 */
    *len = pb_ld_len(rs_len); /* ExportTraceServiceRequest.resource_spans = 1 */
    if (!(out = malloc(*len)))
        goto done;
    uint8_t *w = out;
    *w++ = 0x0a;
    w = pb_varint(w, rs_len);
    *w++ = 0x0a;
    w = pb_varint(w, res_len);
    w += opentelemetry__proto__common__v1__resource__pack(&rb.res, w);
    *w++ = 0x12;
    w = pb_varint(w, ss_len);
    *w++ = 0x0a;
    w = pb_varint(w, scope_len);
    w += opentelemetry__proto__common__v1__instrumentation_scope__pack(&rb.scope, w);
    for (size_t i = 0; i < n; i++) {
        *w++ = 0x12;
        w = pb_varint(w, slen[i]);
        w = span_write(w, SPAN_AT(i), klen + i * TRACE_MAX_ATTRS);
    }
    if ((size_t)(w - out) != *len) { /* a bug in the sizes above: never send garbage */
        log_error("otlp: span encoding wrote %zu bytes for %zu; batch dropped", (size_t)(w - out),
                  *len);
        free(out);
        out = NULL;
    }
done:
    free(klen);
    free(slen);
    free(a.p);
    return out;
#undef SPAN_AT
}

/* ---------------------------------------------------------------- traces */

static void flush_traces(struct otlp_exporter *x);

static void on_traces_done(struct sender *sd, bool ok, const char *err, int64_t rejected)
{
    struct otlp_exporter *x = sd->x;
    unsigned n = x->batch_n;
    x->batch_n = 0;
    if (ok) {
        uint64_t rej = (uint64_t)rejected > n ? n : (uint64_t)rejected;
        x->st.exports_ok++;
        x->st.spans_exported += n - rej;
        x->st.spans_rejected += rej;
    } else {
        x->st.exports_failed++;
        x->st.spans_dropped_export += n;
    }
    /* A full batch waiting goes at once; a partial one waits for the tick
     * (unless draining for a shutdown). */
    if (x->count >= x->set.batch_spans || (x->draining && x->count))
        event_active(&x->kick, EV_TIMEOUT, 0);
}

static void flush_traces(struct otlp_exporter *x)
{
    if (!x->count || !sender_ready(&x->tr))
        return;
    unsigned n = x->count < x->set.batch_spans ? x->count : x->set.batch_spans;
    /* Encoded straight from the ring; the slots are free again at once. */
    size_t len = 0;
    uint8_t *msg = encode_spans(x, n, &len);
    x->head = (x->head + n) % x->cap;
    x->count -= n;
    x->batch_n = n;
    if (!msg) {
        x->tr.in_flight = true;
        x->st.in_flight++;
        sender_finish(&x->tr, false, "out of memory encoding spans", 0);
        return;
    }
    sender_send(&x->tr, msg, len);
    free(msg);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct otlp_exporter *x = arg;
    flush_traces(x);
    maybe_log_drops(x);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    flush_traces(arg);
}

bool otlp_tracing(const struct otlp_exporter *x)
{
    return x && x->tr.on;
}

void otlp_add_span(struct otlp_exporter *x, const struct span *s)
{
    if (!x || !x->tr.on || !(s->flags & TRACE_FLAG_SAMPLED) || !s->ended)
        return;
    if (x->count == x->cap) {
        x->st.spans_dropped_full++;
        return;
    }
    struct span *d = &x->ring[(x->head + x->count) % x->cap];
    /* Only what is used: the header, then the filled attribute and event slots. */
    memcpy(d, s, offsetof(struct span, attrs));
    memcpy(d->attrs, s->attrs, s->nattrs * sizeof s->attrs[0]);
    memcpy(d->events, s->events, s->nevents * sizeof s->events[0]);
    x->count++;
    x->st.spans_queued++;
    if (x->count == x->set.batch_spans && !x->tr.in_flight)
        event_active(&x->kick, EV_TIMEOUT, 0); /* same thread: no syscall */
}

/* ---------------------------------------------------------------- metrics */

static char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

struct otlp_metric *otlp_metric_new(struct otlp_exporter *x, const char *name, const char *desc,
                                    const char *unit, enum otlp_metric_kind kind,
                                    const double *bounds, size_t nbounds)
{
    if (!x || !x->me.on || !name || nbounds > OTLP_MAX_BOUNDS)
        return NULL;
    for (size_t i = 1; i < nbounds; i++)
        if (!(bounds[i] > bounds[i - 1]))
            return NULL;
    struct otlp_metric *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->x = x;
    m->name = xstrdup(name);
    m->desc = xstrdup(desc);
    m->unit = xstrdup(unit);
    m->kind = kind;
    if (kind == OTLP_HISTOGRAM) {
        memcpy(m->bounds, bounds, nbounds * sizeof *bounds);
        m->nbounds = nbounds;
    }
    /* Kept in declaration order (append). */
    struct otlp_metric **pp = &x->metrics;
    while (*pp)
        pp = &(*pp)->next;
    *pp = m;
    return m;
}

struct otlp_series *otlp_series_get(struct otlp_metric *m, const struct otlp_kv *attrs, size_t n)
{
    if (!m || n > OTLP_SERIES_ATTRS)
        return NULL;
    for (struct otlp_series *s = m->series; s; s = s->next) {
        if (s->nattrs != n)
            continue;
        size_t i = 0;
        while (i < n && !strcmp(s->keys[i], attrs[i].key) && !strcmp(s->values[i], attrs[i].value))
            i++;
        if (i == n)
            return s;
    }
    struct otlp_exporter *x = m->x;
    if (x->nseries >= x->set.max_series) {
        x->st.series_dropped++;
        return NULL;
    }
    struct otlp_series *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->m = m;
    s->nattrs = (unsigned)n;
    for (size_t i = 0; i < n; i++) {
        s->keys[i] = xstrdup(attrs[i].key);
        s->values[i] = xstrdup(attrs[i].value);
    }
    struct otlp_series **pp = &m->series;
    while (*pp)
        pp = &(*pp)->next;
    *pp = s;
    m->nseries++;
    x->nseries++;
    return s;
}

void otlp_series_add(struct otlp_series *s, int64_t delta)
{
    if (!s || (s->m->kind != OTLP_COUNTER && s->m->kind != OTLP_UPDOWN_COUNTER))
        return;
    if (s->m->kind == OTLP_COUNTER && delta < 0)
        return; /* a monotonic sum only grows (OTel drops negative adds) */
    s->i += delta;
    s->has_value = true;
}

void otlp_series_set_int(struct otlp_series *s, int64_t v)
{
    if (!s || s->m->kind != OTLP_GAUGE_INT)
        return;
    s->i = v;
    s->has_value = true;
}

void otlp_series_set(struct otlp_series *s, double v)
{
    if (!s || s->m->kind != OTLP_GAUGE_DOUBLE)
        return;
    s->d = v;
    s->has_value = true;
}

void otlp_series_record(struct otlp_series *s, double v)
{
    if (!s || s->m->kind != OTLP_HISTOGRAM || isnan(v))
        return;
    const struct otlp_metric *m = s->m;
    /* OTel's explicit buckets are (bound[i-1], bound[i]]: upper-inclusive. */
    size_t b = 0;
    while (b < m->nbounds && v > m->bounds[b])
        b++;
    s->buckets[b]++;
    if (!s->count || v < s->min)
        s->min = v;
    if (!s->count || v > s->max)
        s->max = v;
    s->count++;
    s->sum += v;
    s->has_value = true;
}

static uint8_t *encode_metrics(struct otlp_exporter *x, size_t *len, size_t *npoints)
{
    typedef Opentelemetry__Proto__Metrics__V1__Metric Metric;
    typedef Opentelemetry__Proto__Metrics__V1__NumberDataPoint NumberDataPoint;
    typedef Opentelemetry__Proto__Metrics__V1__HistogramDataPoint HistogramDataPoint;
    size_t nm = 0, ns = 0;
    for (struct otlp_metric *m = x->metrics; m; m = m->next, nm++)
        ns += m->nseries;
    *npoints = 0;
    struct arena a = {0};
    a.cap =
        4096 + x->nres * (sizeof(KeyValue *) + sizeof(KeyValue) + sizeof(AnyValue) + 48) +
        nm * (sizeof(Metric *) + sizeof(Metric) + 256) +
        ns * (sizeof(void *) + sizeof(HistogramDataPoint) + sizeof(NumberDataPoint) + 64 +
              (OTLP_MAX_BOUNDS + 1) * 8 + OTLP_MAX_BOUNDS * 8 +
              OTLP_SERIES_ATTRS * (sizeof(KeyValue *) + sizeof(KeyValue) + sizeof(AnyValue) + 48));
    if (!(a.p = malloc(a.cap)))
        return NULL;
    struct resource_bufs rb;
    Opentelemetry__Proto__Metrics__V1__ScopeMetrics sm =
        OPENTELEMETRY__PROTO__METRICS__V1__SCOPE_METRICS__INIT;
    Opentelemetry__Proto__Metrics__V1__ResourceMetrics rm =
        OPENTELEMETRY__PROTO__METRICS__V1__RESOURCE_METRICS__INIT;
    Opentelemetry__Proto__Metrics__V1__ExportMetricsServiceRequest req =
        OPENTELEMETRY__PROTO__METRICS__V1__EXPORT_METRICS_SERVICE_REQUEST__INIT;
    Opentelemetry__Proto__Metrics__V1__ScopeMetrics *smp = &sm;
    Opentelemetry__Proto__Metrics__V1__ResourceMetrics *rmp = &rm;
    Metric **mp = arena_get(&a, nm * sizeof *mp + 1);
    uint8_t *out = NULL;
    if (!mp || !resource_fill(x, &a, &rb))
        goto done;
    uint64_t now = wall_ns();
    size_t k = 0;
    static const Metric m_init = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__INIT;
    static const NumberDataPoint nd_init =
        OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__INIT;
    static const HistogramDataPoint hd_init =
        OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT__INIT;
    static const Opentelemetry__Proto__Metrics__V1__Sum sum_init =
        OPENTELEMETRY__PROTO__METRICS__V1__SUM__INIT;
    static const Opentelemetry__Proto__Metrics__V1__Gauge gauge_init =
        OPENTELEMETRY__PROTO__METRICS__V1__GAUGE__INIT;
    static const Opentelemetry__Proto__Metrics__V1__Histogram hist_init =
        OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM__INIT;
    for (struct otlp_metric *m = x->metrics; m; m = m->next) {
        size_t np = 0;
        void **pts = arena_get(&a, m->nseries * sizeof(void *) + 1);
        for (struct otlp_series *s = m->series; s; s = s->next) {
            if (!s->has_value)
                continue;
            KeyValue **kvp = arena_get(&a, s->nattrs * sizeof *kvp + 1);
            for (unsigned j = 0; j < s->nattrs; j++) {
                KeyValue *kv = arena_get(&a, sizeof *kv);
                AnyValue *av = arena_get(&a, sizeof *av);
                kv_str(kv, av, s->keys[j], s->values[j]);
                kvp[j] = kv;
            }
            if (m->kind == OTLP_HISTOGRAM) {
                HistogramDataPoint *h = arena_get(&a, sizeof *h);
                *h = hd_init;
                h->n_attributes = s->nattrs;
                h->attributes = kvp;
                h->start_time_unix_nano = x->start_ns;
                h->time_unix_nano = now;
                h->count = s->count;
                h->_sum_case = OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___SUM_SUM;
                h->sum = s->sum;
                h->_min_case = OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___MIN_MIN;
                h->min = s->min;
                h->_max_case = OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___MAX_MAX;
                h->max = s->max;
                h->n_bucket_counts = m->nbounds + 1;
                h->bucket_counts = s->buckets;
                h->n_explicit_bounds = m->nbounds;
                h->explicit_bounds = m->bounds;
                pts[np++] = h;
            } else {
                NumberDataPoint *d = arena_get(&a, sizeof *d);
                *d = nd_init;
                d->n_attributes = s->nattrs;
                d->attributes = kvp;
                d->start_time_unix_nano = x->start_ns;
                d->time_unix_nano = now;
                if (m->kind == OTLP_GAUGE_DOUBLE) {
                    d->value_case =
                        OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_DOUBLE;
                    d->as_double = s->d;
                } else {
                    d->value_case =
                        OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_INT;
                    d->as_int = s->i;
                }
                pts[np++] = d;
            }
        }
        if (!np)
            continue;
        Metric *o = arena_get(&a, sizeof *o);
        *o = m_init;
        o->name = m->name;
        o->description = m->desc;
        o->unit = m->unit;
        if (m->kind == OTLP_HISTOGRAM) {
            Opentelemetry__Proto__Metrics__V1__Histogram *h = arena_get(&a, sizeof *h);
            *h = hist_init;
            h->n_data_points = np;
            h->data_points = (HistogramDataPoint **)pts;
            h->aggregation_temporality =
                OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE;
            o->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM;
            o->histogram = h;
        } else if (m->kind == OTLP_GAUGE_INT || m->kind == OTLP_GAUGE_DOUBLE) {
            Opentelemetry__Proto__Metrics__V1__Gauge *g = arena_get(&a, sizeof *g);
            *g = gauge_init;
            g->n_data_points = np;
            g->data_points = (NumberDataPoint **)pts;
            o->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE;
            o->gauge = g;
        } else {
            Opentelemetry__Proto__Metrics__V1__Sum *sm2 = arena_get(&a, sizeof *sm2);
            *sm2 = sum_init;
            sm2->n_data_points = np;
            sm2->data_points = (NumberDataPoint **)pts;
            sm2->aggregation_temporality =
                OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE;
            sm2->is_monotonic = m->kind == OTLP_COUNTER;
            o->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM;
            o->sum = sm2;
        }
        mp[k++] = o;
        *npoints += np;
    }
    sm.scope = &rb.scope;
    sm.n_metrics = k;
    sm.metrics = mp;
    rm.resource = &rb.res;
    rm.n_scope_metrics = 1;
    rm.scope_metrics = &smp;
    req.n_resource_metrics = 1;
    req.resource_metrics = &rmp;
    *len = opentelemetry__proto__metrics__v1__export_metrics_service_request__get_packed_size(&req);
    if ((out = malloc(*len ? *len : 1)))
        opentelemetry__proto__metrics__v1__export_metrics_service_request__pack(&req, out);
done:
    free(a.p);
    return out;
}

static void on_metrics_done(struct sender *sd, bool ok, const char *err, int64_t rejected)
{
    (void)err, (void)rejected;
    if (ok)
        sd->x->st.metric_exports_ok++;
    else
        sd->x->st.metric_exports_failed++;
}

static void flush_metrics(struct otlp_exporter *x)
{
    if (!x->metrics || !sender_ready(&x->me))
        return;
    size_t len = 0, np = 0;
    uint8_t *msg = encode_metrics(x, &len, &np);
    if (!msg || !np) {
        free(msg);
        return;
    }
    sender_send(&x->me, msg, len);
    free(msg);
}

static void on_mtick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct otlp_exporter *x = arg;
    flush_metrics(x);
    maybe_log_drops(x);
}

/* ---------------------------------------------------------------- life */

struct otlp_exporter *otlp_new(struct event_base *base, const struct otlp_config *cfg,
                               const struct otlp_settings *set, const struct otlp_kv *resource,
                               size_t nresource, const char *scope_name, const char **err)
{
    struct otlp_exporter *x = calloc(1, sizeof *x);
    static char why[300];
    *err = NULL;
    if (!x) {
        *err = "out of memory";
        return NULL;
    }
    x->base = base;
    x->set = *set;
    if (x->set.batch_spans > x->set.queue_spans)
        x->set.batch_spans = x->set.queue_spans;
    /* The exporter's HTTP/2 connection uses the codec's defaults; header
     * and buffer sizes fit a few-byte answer. */
    h2_limits_from_env(&x->lim, 16384, 64, 1 << 20);
    x->start_ns = wall_ns();
    x->nres = nresource;
    x->res_keys = calloc(nresource + 1, sizeof(char *));
    x->res_values = calloc(nresource + 1, sizeof(char *));
    for (size_t i = 0; i < nresource; i++) {
        x->res_keys[i] = xstrdup(resource[i].key);
        x->res_values[i] = xstrdup(resource[i].value);
    }
    x->scope = xstrdup(scope_name);
    event_assign(&x->tick, base, -1, EV_PERSIST, on_tick, x);
    event_assign(&x->kick, base, -1, 0, on_kick, x);
    event_assign(&x->mtick, base, -1, EV_PERSIST, on_mtick, x);
    const char *e;
    if ((e = sender_init(x, &x->tr, "traces", &cfg->traces, on_traces_done, true)) ||
        (e = sender_init(x, &x->me, "metrics", &cfg->metrics, on_metrics_done, false))) {
        snprintf(why, sizeof why, "%s", e);
        *err = why;
        otlp_free(x);
        return NULL;
    }
    if (x->tr.on) {
        x->cap = x->set.queue_spans;
        /* calloc'd pages are only touched as the ring fills. */
        x->ring = calloc(x->cap, sizeof *x->ring);
        if (!x->ring) {
            *err = "out of memory for the span ring";
            otlp_free(x);
            return NULL;
        }
        struct timeval tv = clock_tv(x->set.batch_s);
        event_add(&x->tick, &tv);
    }
    x->metrics_interval = cfg->metrics_interval > 0 ? cfg->metrics_interval : 60;
    if (x->me.on) {
        struct timeval tv = clock_tv(x->metrics_interval);
        event_add(&x->mtick, &tv);
    }
    x->st.queue_cap = x->cap;
    return x;
}

void otlp_flush(struct otlp_exporter *x)
{
    if (!x)
        return;
    x->draining = true;
    flush_traces(x);
    flush_metrics(x);
}

bool otlp_idle(const struct otlp_exporter *x)
{
    return !x || (!x->count && !x->tr.in_flight && !x->me.in_flight);
}

struct drain_poll {
    struct otlp_exporter *x;
    uint64_t deadline;
    struct event ev;
};

static void on_drain_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct drain_poll *d = arg;
    if (otlp_idle(d->x) || clock_now_ns() >= d->deadline) {
        event_base_loopbreak(d->x->base);
        return;
    }
    struct timeval tv = clock_tv(0.005);
    event_add(&d->ev, &tv);
}

bool otlp_drain(struct otlp_exporter *x, double max_s)
{
    if (!x)
        return true;
    otlp_flush(x);
    if (otlp_idle(x))
        return true;
    struct drain_poll d;
    memset(&d, 0, sizeof d);
    d.x = x;
    d.deadline = clock_now_ns() + (uint64_t)(max_s * 1e9);
    evtimer_assign(&d.ev, x->base, on_drain_poll, &d);
    struct timeval tv = clock_tv(0.005);
    event_add(&d.ev, &tv);
    event_base_dispatch(x->base);
    event_del(&d.ev);
    if (!otlp_idle(x))
        log_warn("otlp: %u spans still queued at exit after %gs; dropped", x->count, max_s);
    return otlp_idle(x);
}

void otlp_get_stats(const struct otlp_exporter *x, struct otlp_stats *out)
{
    *out = x->st;
    out->queue_len = x->count;
    out->queue_cap = x->cap;
}

void otlp_free(struct otlp_exporter *x)
{
    if (!x)
        return;
    sender_free(&x->tr);
    sender_free(&x->me);
    if (event_initialized(&x->tick))
        event_del(&x->tick);
    if (event_initialized(&x->kick))
        event_del(&x->kick);
    if (event_initialized(&x->mtick))
        event_del(&x->mtick);
    for (struct otlp_metric *m = x->metrics, *mn; m; m = mn) {
        mn = m->next;
        for (struct otlp_series *s = m->series, *sn; s; s = sn) {
            sn = s->next;
            for (unsigned i = 0; i < s->nattrs; i++) {
                free(s->keys[i]);
                free(s->values[i]);
            }
            free(s);
        }
        free(m->name);
        free(m->desc);
        free(m->unit);
        free(m);
    }
    for (size_t i = 0; i < x->nres; i++) {
        free(x->res_keys[i]);
        free(x->res_values[i]);
    }
    free(x->res_keys);
    free(x->res_values);
    free(x->scope);
    free(x->ring);
    free(x);
}
