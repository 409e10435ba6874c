/* Tests for common/telemetry/otlp.c: OBSERVABILITY_CONFIG parsing, batching, bounds.
 *
 * A small HTTP/1.1 collector runs in the test's own loop (libevent
 * bufferevents on loopback); what it receives is decoded with the same
 * protobuf-c messages. The scenario test (tests/scenario/test_otlp.py) checks
 * the wire against an independent decoder and gRPC. */
#include "unit.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/loop.h"
#include "core/net.h"
#include "telemetry/otlp.h"
#include "otlp_metrics.pb-c.h"
#include "otlp_trace.pb-c.h"

static struct event_base *base;

/* ---------------------------------------------------------------- config */

static void test_endpoint_forms(void **state)
{
    (void)state;
    struct otlp_endpoint e;
    assert_null(
        otlp_endpoint_parse("http/protobuf", "http://collector.obs:4318/v1/traces", false, &e));
    assert_int_equal(e.protocol, OTLP_HTTP_PROTOBUF);
    assert_string_equal(e.host, "collector.obs");
    assert_int_equal(e.port, 4318);
    assert_string_equal(e.path, "/v1/traces");
    /* No path: the signal's; no port: 4318. */
    assert_null(otlp_endpoint_parse("http/protobuf", "http://10.0.0.1", true, &e));
    assert_string_equal(e.path, "/v1/metrics");
    assert_int_equal(e.port, 4318);
    assert_null(otlp_endpoint_parse("http/protobuf", "127.0.0.1:9999/", false, &e));
    assert_string_equal(e.path, "/v1/traces");
    assert_int_equal(e.port, 9999);
    assert_null(otlp_endpoint_parse("http/protobuf", "http://h:1/custom/path", false, &e));
    assert_string_equal(e.path, "/custom/path");
    /* gRPC: host:port, or with http:// */
    assert_null(otlp_endpoint_parse("grpc", "otel-collector.observability:4317", false, &e));
    assert_int_equal(e.protocol, OTLP_GRPC);
    assert_string_equal(e.host, "otel-collector.observability");
    assert_int_equal(e.port, 4317);
    assert_null(otlp_endpoint_parse("grpc", "http://[::1]:5000", false, &e));
    assert_string_equal(e.host, "::1");
    assert_int_equal(e.port, 5000);
    assert_null(otlp_endpoint_parse("grpc", "", false, &e));
    assert_string_equal(e.host, "localhost");
    assert_int_equal(e.port, 4317);
    /* Off, or not OTLP. */
    assert_null(otlp_endpoint_parse("none", "x:1", false, &e));
    assert_int_equal(e.protocol, OTLP_NONE);
    assert_null(otlp_endpoint_parse(NULL, NULL, false, &e));
    assert_int_equal(e.protocol, OTLP_NONE);
    assert_null(otlp_endpoint_parse("stdout", NULL, false, &e));
    assert_int_equal(e.protocol, OTLP_UNSUPPORTED);
    /* Refused. */
    assert_non_null(otlp_endpoint_parse("zipkin", "x:1", false, &e));
    assert_non_null(otlp_endpoint_parse("grpc", "https://x:4317", false, &e));
    assert_non_null(otlp_endpoint_parse("grpc", "ftp://x:4317", false, &e));
    assert_non_null(otlp_endpoint_parse("grpc", "x:0", false, &e));
    assert_non_null(otlp_endpoint_parse("grpc", "x:65536", false, &e));
    assert_non_null(otlp_endpoint_parse("grpc", "x:port", false, &e));
    assert_non_null(otlp_endpoint_parse("grpc", "::1:4317", false, &e));
    assert_non_null(otlp_endpoint_parse("grpc", "[::1:4317", false, &e));
    assert_non_null(otlp_endpoint_parse("http/protobuf", "http://:4318/v1/traces", false, &e));
}

static void test_observability_config(void **state)
{
    (void)state;
    struct otlp_config c;
    char err[256];
    /* Knative's default env value. */
    assert_null(
        otlp_config_parse("{\"tracing\":{},\"metrics\":{},\"runtime\":{},\"requestMetrics\":{}}",
                          &c, err, sizeof err));
    assert_int_equal(c.traces.protocol, OTLP_NONE);
    assert_int_equal(c.metrics.protocol, OTLP_NONE);
    assert_true(c.metrics_interval == 60);
    assert_null(otlp_config_parse(NULL, &c, err, sizeof err));
    assert_null(otlp_config_parse(
        "{\"tracing\":{\"protocol\":\"grpc\",\"endpoint\":\"otel:4317\",\"samplingRate\":0.25},"
        "\"requestMetrics\":{\"protocol\":\"http/protobuf\",\"endpoint\":\"http://otel:4318\","
        "\"exportInterval\":15000000000}}",
        &c, err, sizeof err));
    assert_int_equal(c.traces.protocol, OTLP_GRPC);
    assert_true(c.sampling_rate == 0.25);
    assert_int_equal(c.metrics.protocol, OTLP_HTTP_PROTOBUF);
    assert_string_equal(c.metrics.path, "/v1/metrics");
    assert_true(c.metrics_interval == 15);
    /* Integer sampling rate. */
    assert_null(otlp_config_parse(
        "{\"tracing\":{\"protocol\":\"http/protobuf\",\"samplingRate\":1}}", &c, err, sizeof err));
    assert_true(c.sampling_rate == 1);
    /* An empty endpoint: OTel's variables. */
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/otel/", 1);
    assert_null(otlp_config_parse("{\"tracing\":{\"protocol\":\"http/protobuf\"},"
                                  "\"requestMetrics\":{\"protocol\":\"grpc\"}}",
                                  &c, err, sizeof err));
    assert_string_equal(c.traces.host, "base");
    assert_string_equal(c.traces.path, "/otel/v1/traces");
    assert_string_equal(c.metrics.host, "base");
    assert_int_equal(c.metrics.port, 4318);
    setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://sig:9/x", 1);
    assert_null(otlp_config_parse(
        "{\"tracing\":{\"protocol\":\"http/protobuf\",\"endpoint\":\"\"}}", &c, err, sizeof err));
    assert_string_equal(c.traces.host, "sig");
    assert_string_equal(c.traces.path, "/x");
    /* The config's own endpoint wins. */
    assert_null(otlp_config_parse("{\"tracing\":{\"protocol\":\"grpc\",\"endpoint\":\"mine:1\"}}",
                                  &c, err, sizeof err));
    assert_string_equal(c.traces.host, "mine");
    unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    unsetenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    /* Invalid: fatal in Knative. */
    assert_non_null(otlp_config_parse("{", &c, err, sizeof err));
    assert_non_null(otlp_config_parse("[]", &c, err, sizeof err));
    assert_non_null(otlp_config_parse("{\"tracing\":{\"protocol\":7}}", &c, err, sizeof err));
    assert_non_null(
        otlp_config_parse("{\"tracing\":{\"protocol\":\"carrier-pigeon\"}}", &c, err, sizeof err));
    assert_non_null(
        otlp_config_parse("{\"tracing\":{\"samplingRate\":\"half\"}}", &c, err, sizeof err));
}

static void test_knative_resource(void **state)
{
    (void)state;
    struct otlp_kv kv[OTLP_KNATIVE_ATTRS];
    struct otlp_knative_ids qp = {"queue-proxy", "default", "hello-00001-deployment-abc",
                                  "hello",       "hello",   "hello-00001",
                                  "v1",          NULL};
    size_t n = otlp_knative_resource(&qp, kv);
    assert_int_equal(n, 9);
    assert_string_equal(kv[0].key, "k8s.container.name");
    assert_string_equal(kv[3].key, "service.name");
    assert_string_equal(kv[3].value, "hello");
    assert_string_equal(kv[5].key, "service.instance.id");
    assert_string_equal(kv[5].value, "hello-00001-deployment-abc");
    assert_string_equal(kv[8].key, "kn.revision.name");
    /* service.name: OTEL_SERVICE_NAME first; without a service, the configuration... */
    qp.otel_service_name = "override";
    otlp_knative_resource(&qp, kv);
    assert_string_equal(kv[3].value, "override");
    qp.otel_service_name = NULL;
    qp.service = "";
    n = otlp_knative_resource(&qp, kv);
    assert_int_equal(n, 8); /* no kn.service.name */
    assert_string_equal(kv[3].value, "hello");
    qp.configuration = NULL;
    otlp_knative_resource(&qp, kv);
    assert_string_equal(kv[3].value, "hello-00001");
    struct otlp_knative_ids act = {
        .container = "activator", .ns = "knative-serving", .pod = "activator-xyz"};
    n = otlp_knative_resource(&act, kv);
    assert_int_equal(n, 5);
    assert_string_equal(kv[3].key, "service.name");
    assert_string_equal(kv[3].value, "activator-xyz");
}

/* ---------------------------------------------------------------- a collector */

struct collector {
    struct evconnlistener *l;
    int port;
    int status; /* what to answer */
    bool hang;  /* answer nothing */
    unsigned requests, in_flight, max_in_flight;
    char last_path[64];
    /* Decoded traces: span counts per request, and every span. */
    unsigned batch[64], nbatch;
    Opentelemetry__Proto__Trace__V1__ExportTraceServiceRequest *treq[64];
    Opentelemetry__Proto__Metrics__V1__ExportMetricsServiceRequest *mreq[16];
    unsigned ntreq, nmreq;
};

static struct collector col;

static void on_conn_read(struct bufferevent *bev, void *arg)
{
    struct collector *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t n = evbuffer_get_length(in);
        struct evbuffer_ptr p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (p.pos < 0)
            return;
        char *head = malloc((size_t)p.pos + 1);
        evbuffer_copyout(in, head, (size_t)p.pos);
        head[p.pos] = 0;
        char *cl = strcasestr(head, "content-length:");
        size_t blen = cl ? strtoul(cl + 15, NULL, 10) : 0;
        size_t total = (size_t)p.pos + 4 + blen;
        if (n < total) {
            free(head);
            return;
        }
        sscanf(head, "POST %63s", c->last_path);
        free(head);
        evbuffer_drain(in, (size_t)p.pos + 4);
        uint8_t *body = malloc(blen + 1);
        evbuffer_remove(in, body, blen);
        c->requests++;
        if (!strcmp(c->last_path, "/v1/traces") && c->ntreq < 64) {
            Opentelemetry__Proto__Trace__V1__ExportTraceServiceRequest *r =
                opentelemetry__proto__trace__v1__export_trace_service_request__unpack(NULL, blen,
                                                                                      body);
            assert_non_null(r);
            c->treq[c->ntreq++] = r;
            c->batch[c->nbatch++] = (unsigned)r->resource_spans[0]->scope_spans[0]->n_spans;
        } else if (!strcmp(c->last_path, "/v1/metrics") && c->nmreq < 16) {
            Opentelemetry__Proto__Metrics__V1__ExportMetricsServiceRequest *r =
                opentelemetry__proto__metrics__v1__export_metrics_service_request__unpack(
                    NULL, blen, body);
            assert_non_null(r);
            c->mreq[c->nmreq++] = r;
        }
        free(body);
        if (c->hang)
            continue;
        evbuffer_add_printf(bufferevent_get_output(bev),
                            "HTTP/1.1 %d X\r\nContent-Type: application/x-protobuf\r\n"
                            "Content-Length: 0\r\n\r\n",
                            c->status);
    }
}

static void on_conn_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what, (void)arg;
    bufferevent_free(bev);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    (void)l, (void)sa, (void)len;
    struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(bev, on_conn_read, NULL, on_conn_event, arg);
    bufferevent_enable(bev, EV_READ);
}

static void collector_start(struct collector *c)
{
    for (unsigned i = 0; i < c->ntreq; i++)
        opentelemetry__proto__trace__v1__export_trace_service_request__free_unpacked(c->treq[i],
                                                                                     NULL);
    for (unsigned i = 0; i < c->nmreq; i++)
        opentelemetry__proto__metrics__v1__export_metrics_service_request__free_unpacked(c->mreq[i],
                                                                                         NULL);
    if (c->l)
        evconnlistener_free(c->l);
    memset(c, 0, sizeof *c);
    c->status = 200;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    c->l = evconnlistener_new_bind(base, on_accept, c, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                   16, (struct sockaddr *)&sin, sizeof sin);
    assert_non_null(c->l);
    struct sockaddr_in got;
    socklen_t gl = sizeof got;
    getsockname(evconnlistener_get_fd(c->l), (struct sockaddr *)&got, &gl);
    c->port = ntohs(got.sin_port);
}

/* Runs the loop until cond() or `seconds` pass. */
static void turn_until(bool (*cond)(struct otlp_exporter *), struct otlp_exporter *x,
                       double seconds)
{
    uint64_t end = clock_now_ns() + (uint64_t)(seconds * 1e9);
    while (clock_now_ns() < end) {
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        if (cond && cond(x))
            return;
        usleep(1000);
    }
}

static bool idle(struct otlp_exporter *x)
{
    return otlp_idle(x);
}

static struct otlp_exporter *exporter(int port, const char *proto, unsigned queue, unsigned batch,
                                      unsigned batch_ms, unsigned timeout_ms)
{
    struct otlp_config cfg;
    char err[256], json[512];
    snprintf(json, sizeof json,
             "{\"tracing\":{\"protocol\":\"%s\",\"endpoint\":\"http://127.0.0.1:%d\","
             "\"samplingRate\":1},\"requestMetrics\":{\"protocol\":\"%s\",\"endpoint\":"
             "\"http://127.0.0.1:%d\",\"exportInterval\":100000000}}",
             proto, port, proto, port);
    assert_null(otlp_config_parse(json, &cfg, err, sizeof err));
    struct otlp_settings set;
    otlp_settings_from_env(&set);
    set.queue_spans = queue;
    set.batch_spans = batch;
    set.batch_s = batch_ms / 1e3;
    set.timeout_s = timeout_ms / 1e3;
    set.max_series = 4;
    static const struct otlp_kv res[] = {{"service.name", "hello"},
                                         {"k8s.container.name", "queue-proxy"}};
    const char *why = NULL;
    struct otlp_exporter *x = otlp_new(base, &cfg, &set, res, 2, "coldbrew", &why);
    if (!x)
        fail_msg("otlp_new: %s", why);
    return x;
}

static void add_spans(struct otlp_exporter *x, int n, const char *name)
{
    for (int i = 0; i < n; i++) {
        struct span s;
        span_start_root(&s, name, SPAN_KIND_SERVER, NULL, 1);
        span_set_int(&s, "i", i);
        span_end(&s);
        otlp_add_span(x, &s);
    }
}

/* ---------------------------------------------------------------- tests */

static void test_batches_and_contents(void **state)
{
    (void)state;
    collector_start(&col);
    struct otlp_exporter *x = exporter(col.port, "http/protobuf", 64, 4, 50, 2000);
    assert_true(otlp_tracing(x));
    /* A tree: server span, child, grandchild with attributes and an event. */
    struct trace_ctx parent;
    const char *tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_null(trace_parse_traceparent(tp, strlen(tp), &parent));
    struct span root, wait, proxy;
    span_start_root(&root, "queue", SPAN_KIND_SERVER, &parent, 0.5);
    span_start_child(&wait, "kn.queueproxy.wait", SPAN_KIND_INTERNAL, &root);
    span_end(&wait);
    span_start_child(&proxy, "kn.queueproxy.proxy", SPAN_KIND_INTERNAL, &root);
    span_set_str(&proxy, "http.request.method", "GET", 3);
    span_set_int(&proxy, "http.response.status_code", 503);
    span_set_double(&proxy, "ratio", 0.5);
    span_set_bool(&proxy, "cold", true);
    span_add_event(&proxy, "upstream.ready");
    span_set_status(&proxy, SPAN_STATUS_ERROR, "no pod");
    span_end(&proxy);
    span_end(&root);
    otlp_add_span(x, &wait);
    otlp_add_span(x, &proxy);
    otlp_add_span(x, &root);
    /* Unended and unsampled spans are not queued. */
    struct span loose;
    span_start_root(&loose, "loose", SPAN_KIND_SERVER, NULL, 1);
    otlp_add_span(x, &loose);
    span_start_root(&loose, "unsampled", SPAN_KIND_SERVER, NULL, 0);
    span_end(&loose);
    otlp_add_span(x, &loose);
    struct otlp_stats st;
    otlp_get_stats(x, &st);
    assert_int_equal(st.spans_queued, 3);
    turn_until(idle, x, 3);
    assert_int_equal(col.nbatch, 1);
    assert_string_equal(col.last_path, "/v1/traces");
    Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = col.treq[0]->resource_spans[0];
    assert_int_equal(rs->resource->n_attributes, 2);
    assert_string_equal(rs->resource->attributes[0]->key, "service.name");
    assert_string_equal(rs->resource->attributes[0]->value->string_value, "hello");
    assert_string_equal(rs->scope_spans[0]->scope->name, "coldbrew");
    Opentelemetry__Proto__Trace__V1__Span **sp = rs->scope_spans[0]->spans;
    assert_string_equal(sp[0]->name, "kn.queueproxy.wait");
    assert_string_equal(sp[1]->name, "kn.queueproxy.proxy");
    assert_string_equal(sp[2]->name, "queue");
    assert_memory_equal(sp[2]->trace_id.data, parent.trace_id, 16);
    assert_memory_equal(sp[2]->parent_span_id.data, parent.span_id, 8);
    assert_memory_equal(sp[1]->parent_span_id.data, sp[2]->span_id.data, 8);
    assert_int_equal(sp[2]->kind, 2);
    assert_int_equal(sp[2]->flags, 0x301); /* sampled, parent is remote */
    assert_int_equal(sp[1]->flags, 0x101);
    assert_int_equal(sp[1]->n_attributes, 4);
    assert_string_equal(sp[1]->attributes[0]->value->string_value, "GET");
    assert_int_equal(sp[1]->attributes[1]->value->int_value, 503);
    assert_true(sp[1]->attributes[2]->value->double_value == 0.5);
    assert_true(sp[1]->attributes[3]->value->bool_value);
    assert_int_equal(sp[1]->n_events, 1);
    assert_string_equal(sp[1]->events[0]->name, "upstream.ready");
    assert_int_equal(sp[1]->status->code, 2);
    assert_string_equal(sp[1]->status->message, "no pod");
    assert_null(sp[2]->status);
    assert_true(sp[2]->end_time_unix_nano >= sp[2]->start_time_unix_nano);

    /* 10 more: a full batch of 4 goes at once, one export at a time. */
    add_spans(x, 10, "batch");
    turn_until(idle, x, 3);
    otlp_get_stats(x, &st);
    assert_int_equal(st.spans_exported, 13);
    assert_int_equal(st.spans_dropped_full, 0);
    assert_int_equal(col.nbatch, 4);
    assert_int_equal(col.batch[1], 4);
    assert_int_equal(col.batch[2], 4);
    assert_int_equal(col.batch[3], 2);
    assert_int_equal(st.exports_ok, 4);
    otlp_free(x);
}

static void test_ring_overflow_counts_drops(void **state)
{
    (void)state;
    collector_start(&col);
    /* A queue of 8, batches of 4, a long interval. */
    struct otlp_exporter *x = exporter(col.port, "http/protobuf", 8, 4, 60000, 2000);
    /* Without the loop turning, nothing leaves: 8 fit, 12 are dropped. */
    add_spans(x, 20, "flood");
    struct otlp_stats st;
    otlp_get_stats(x, &st);
    assert_int_equal(st.spans_queued, 8);
    assert_int_equal(st.spans_dropped_full, 12);
    assert_int_equal(st.queue_len, 8);
    assert_int_equal(st.queue_cap, 8);
    /* The loop sends the full batches (one in flight at a time). */
    turn_until(idle, x, 3);
    otlp_get_stats(x, &st);
    assert_int_equal(st.spans_exported, 8);
    assert_int_equal(col.nbatch, 2);
    otlp_free(x);
}

static void test_ring_wraps_in_order(void **state)
{
    (void)state;
    collector_start(&col);
    /* A queue of 6 and batches of 4: the second batch wraps the ring. */
    struct otlp_exporter *x = exporter(col.port, "http/protobuf", 6, 4, 20, 2000);
    add_spans(x, 4, "first");
    turn_until(idle, x, 3);
    add_spans(x, 6, "second");
    turn_until(idle, x, 3);
    struct otlp_stats st;
    otlp_get_stats(x, &st);
    assert_int_equal(st.spans_exported, 10);
    assert_int_equal(col.nbatch, 3);
    assert_int_equal(col.batch[1], 4);
    assert_int_equal(col.batch[2], 2);
    /* In the order they were added: i = 0..5 across the wrap. */
    int64_t want = 0;
    for (unsigned b = 1; b < 3; b++) {
        Opentelemetry__Proto__Trace__V1__ScopeSpans *ss =
            col.treq[b]->resource_spans[0]->scope_spans[0];
        for (size_t i = 0; i < ss->n_spans; i++) {
            assert_string_equal(ss->spans[i]->name, "second");
            assert_int_equal(ss->spans[i]->attributes[0]->value->int_value, want++);
        }
    }
    otlp_free(x);
}

static void test_refused_and_hung_collectors_drop_and_count(void **state)
{
    (void)state;
    /* Refusing (503): the batch is dropped and counted, not retried. */
    collector_start(&col);
    col.status = 503;
    struct otlp_exporter *x = exporter(col.port, "http/protobuf", 16, 4, 20, 300);
    add_spans(x, 6, "refused");
    turn_until(idle, x, 3);
    struct otlp_stats st;
    otlp_get_stats(x, &st);
    assert_int_equal(st.spans_dropped_export, 6);
    assert_int_equal(st.exports_failed, 2);
    assert_int_equal(st.spans_exported, 0);
    assert_non_null(strstr(st.last_error, "503"));
    otlp_free(x);

    /* Hanging: the timeout ends the export; spans added meanwhile wait in
     * the ring (bounded) and the next export goes after the failure. */
    collector_start(&col);
    col.hang = true;
    x = exporter(col.port, "http/protobuf", 8, 4, 20, 200);
    add_spans(x, 4, "hung");
    turn_until(NULL, x, 0.05);
    otlp_get_stats(x, &st);
    assert_int_equal(st.in_flight, 1);
    add_spans(x, 20, "meanwhile");
    otlp_get_stats(x, &st);
    assert_int_equal(st.spans_dropped_full, 12);
    turn_until(idle, x, 3);
    otlp_get_stats(x, &st);
    assert_int_equal(st.exports_failed, 3);
    assert_int_equal(st.spans_dropped_export, 12);
    assert_non_null(strstr(st.last_error, "timeout"));
    otlp_free(x);

    /* Down: nothing listens. */
    int port = col.port;
    evconnlistener_free(col.l);
    col.l = NULL;
    x = exporter(port, "grpc", 8, 4, 20, 200);
    add_spans(x, 4, "down");
    turn_until(idle, x, 3);
    otlp_get_stats(x, &st);
    assert_int_equal(st.spans_dropped_export, 4);
    assert_int_equal(st.exports_failed, 1);
    otlp_free(x);
}

static void test_metrics_series(void **state)
{
    (void)state;
    collector_start(&col);
    struct otlp_exporter *x = exporter(col.port, "http/protobuf", 8, 4, 60000, 2000);
    static const double bounds[] = {0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
                                    0.5,   0.75, 1,     2.5,  5,     7.5, 10};
    struct otlp_metric *h =
        otlp_metric_new(x, "kn.serving.invocation.duration", "d", "s", OTLP_HISTOGRAM, bounds, 14);
    struct otlp_metric *g =
        otlp_metric_new(x, "kn.serving.queue.depth", "", "{request}", OTLP_GAUGE_INT, NULL, 0);
    struct otlp_metric *c = otlp_metric_new(x, "requests", "", "{request}", OTLP_COUNTER, NULL, 0);
    assert_non_null(h);
    struct otlp_kv ok[] = {{"http.response.status_code", "200"}};
    struct otlp_kv bad[] = {{"http.response.status_code", "500"}};
    struct otlp_series *s200 = otlp_series_get(h, ok, 1), *s500 = otlp_series_get(h, bad, 1);
    assert_ptr_equal(otlp_series_get(h, ok, 1), s200);
    otlp_series_record(s200, 0.004);
    otlp_series_record(s200, 0.01); /* upper-inclusive: bucket 1 */
    otlp_series_record(s200, 11);   /* overflow bucket */
    otlp_series_record(s500, 0.3);
    otlp_series_set_int(otlp_series_get(g, NULL, 0), 7);
    struct otlp_series *cs = otlp_series_get(c, NULL, 0);
    otlp_series_add(cs, 5);
    otlp_series_add(cs, -1); /* monotonic: ignored */
    /* The fifth series is over COLDBREW_OTLP_MAX_SERIES (4 here). */
    struct otlp_kv other[] = {{"k", "v"}};
    assert_null(otlp_series_get(c, other, 1));
    struct otlp_stats st;
    otlp_get_stats(x, &st);
    assert_int_equal(st.series_dropped, 1);
    turn_until(NULL, x, 0.3); /* exportInterval 100 ms */
    assert_true(col.nmreq >= 1);
    assert_string_equal(col.last_path, "/v1/metrics");
    Opentelemetry__Proto__Metrics__V1__ScopeMetrics *sm =
        col.mreq[0]->resource_metrics[0]->scope_metrics[0];
    assert_int_equal(sm->n_metrics, 3);
    Opentelemetry__Proto__Metrics__V1__Metric *m = sm->metrics[0];
    assert_string_equal(m->name, "kn.serving.invocation.duration");
    assert_string_equal(m->unit, "s");
    assert_int_equal(m->data_case, OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM);
    assert_int_equal(m->histogram->aggregation_temporality, 2);
    Opentelemetry__Proto__Metrics__V1__HistogramDataPoint *p = m->histogram->data_points[0];
    assert_int_equal(p->count, 3);
    assert_int_equal(p->n_bucket_counts, 15);
    assert_int_equal(p->bucket_counts[0], 1);
    assert_int_equal(p->bucket_counts[1], 1);
    assert_int_equal(p->bucket_counts[14], 1);
    assert_true(p->min == 0.004 && p->max == 11);
    assert_int_equal(p->n_explicit_bounds, 14);
    assert_string_equal(p->attributes[0]->value->string_value, "200");
    assert_int_equal(sm->metrics[1]->gauge->data_points[0]->as_int, 7);
    assert_int_equal(sm->metrics[2]->sum->data_points[0]->as_int, 5);
    assert_true(sm->metrics[2]->sum->is_monotonic);
    otlp_free(x);
}

static int setup(void **state)
{
    (void)state;
    base = loop_init();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (col.l)
        evconnlistener_free(col.l);
    loop_flush_deferred();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoint_forms),
        cmocka_unit_test(test_observability_config),
        cmocka_unit_test(test_knative_resource),
        cmocka_unit_test(test_batches_and_contents),
        cmocka_unit_test(test_ring_overflow_counts_drops),
        cmocka_unit_test(test_ring_wraps_in_order),
        cmocka_unit_test(test_refused_and_hung_collectors_drop_and_count),
        cmocka_unit_test(test_metrics_series),
    };
    return cmocka_run_group_tests_name("otlp", tests, setup, teardown);
}
