/* The export path's span encoder (common/telemetry/otlp.c encode_spans) against the
 * reference, protobuf-c's packer over the generated structs
 * (encode_spans_pbc): byte for byte, for spans of every shape, and
 * decodable by protobuf-c. The .c is included to reach both statics. */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

#include "../../common/telemetry/otlp.c"
#include "core/loop.h"

static struct otlp_exporter *exporter(struct event_base *base)
{
    struct otlp_config cfg;
    char err[256];
    assert_null(otlp_config_parse("{\"tracing\":{\"protocol\":\"http/"
                                  "protobuf\",\"endpoint\":\"http://127.0.0.1:1/v1/traces\","
                                  "\"samplingRate\":1}}",
                                  &cfg, err, sizeof err));
    struct otlp_settings set;
    otlp_settings_from_env(&set);
    set.batch_s = 3600; /* nothing leaves on its own during the test */
    const struct otlp_kv res[] = {{"service.name", "hello"}, {"k8s.pod.name", "hello-abc"}};
    const char *why = NULL;
    struct otlp_exporter *x = otlp_new(base, &cfg, &set, res, 2, "knative.dev/serving", &why);
    assert_non_null(x);
    return x;
}

static void compare(struct otlp_exporter *x, const char *what)
{
    size_t n = x->count, l1 = 0, l2 = 0;
    uint8_t *fast = encode_spans(x, n, &l1);
    uint8_t *ref = encode_spans_pbc(x, n, &l2);
    assert_non_null(fast);
    assert_non_null(ref);
    if (l1 != l2 || memcmp(fast, ref, l1)) {
        size_t at = 0;
        while (at < l1 && at < l2 && fast[at] == ref[at])
            at++;
        fail_msg("%s: %zu spans: fast %zu bytes, protobuf-c %zu, first difference at %zu", what, n,
                 l1, l2, at);
    }
    Opentelemetry__Proto__Trace__V1__ExportTraceServiceRequest *req =
        opentelemetry__proto__trace__v1__export_trace_service_request__unpack(NULL, l1, fast);
    assert_non_null(req);
    assert_int_equal(req->resource_spans[0]->scope_spans[0]->n_spans, n);
    opentelemetry__proto__trace__v1__export_trace_service_request__free_unpacked(req, NULL);
    free(fast);
    free(ref);
}

static void test_byte_identical_to_protobuf_c(void **state)
{
    (void)state;
    log_set_fd(2);
    struct event_base *base = loop_init();
    struct otlp_exporter *x = exporter(base);
    trace_seed(42);

    /* A queue-proxy's request: a remote parent, Knative's attributes. */
    struct trace_ctx remote;
    const char *tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_null(trace_parse_traceparent(tp, strlen(tp), &remote));
    struct span root, child, wait;
    span_start_root(&root, "queue", SPAN_KIND_SERVER, &remote, 1);
    span_set_str(&root, "http.request.method", "GET", 3);
    span_set_str(&root, "url.path", "/coffee", 7);
    span_set_str(&root, "kn.route.tag", "kn:disabled", 11);
    span_set_str(&root, "empty", "", 0);
    span_set_int(&root, "http.response.status_code", 200);
    span_set_int(&root, "negative", -12345678901LL);
    span_set_int(&root, "zero", 0);
    span_set_double(&root, "ratio", 0.25);
    span_set_double(&root, "neg", -1e300);
    span_set_bool(&root, "cold", true);
    span_set_bool(&root, "warm", false);
    span_start_child(&child, "kn.queueproxy.proxy", SPAN_KIND_INTERNAL, &root);
    span_start_child(&wait, "kn.queueproxy.wait", SPAN_KIND_INTERNAL, &child);
    span_add_event(&wait, "breaker.acquired");
    span_set_status(&wait, SPAN_STATUS_ERROR, "pending request queue full");
    span_end(&wait);
    span_end(&child);
    span_set_status(&root, SPAN_STATUS_ERROR, NULL);
    span_end(&root);
    otlp_add_span(x, &wait);
    otlp_add_span(x, &child);
    otlp_add_span(x, &root);
    compare(x, "queue-proxy tree");

    /* A root without a parent, long strings, every attribute slot and more
     * (dropped counts), every event slot and more, status OK. */
    struct span big;
    span_start_root(&big,
                    "GET /a/very/long/path/that/is/cut/at/the/name/limit/xxxxxxxxxxxxxxxxxx"
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                    SPAN_KIND_CLIENT, NULL, 1);
    char longv[300];
    memset(longv, 'v', sizeof longv);
    static const char *keys[] = {"k0", "k1",  "k2",  "k3",  "k4",  "k5",  "k6",  "k7",  "k8",
                                 "k9", "k10", "k11", "k12", "k13", "k14", "k15", "k16", "k17"};
    for (int i = 0; i < 18; i++)
        span_set_str(&big, keys[i], longv, sizeof longv);
    for (int i = 0; i < TRACE_MAX_EVENTS + 2; i++)
        span_add_event(&big, "coldstart.poke_sent");
    span_set_status(&big, SPAN_STATUS_OK, "ignored unless an error");
    span_end(&big);
    otlp_add_span(x, &big);
    compare(x, "full span");

    /* Activator spans with past events, many of them (a batch). */
    for (int i = 0; i < 200; i++) {
        struct span h;
        span_start_root(&h, i % 2 ? "handle" : "", SPAN_KIND_SERVER, i % 3 ? &remote : NULL, 1);
        span_set_int(&h, "i", i * 1000003LL * (i % 2 ? -1 : 1));
        span_add_event_at(&h, "coldstart.endpoints", h.start_mono + (uint64_t)i * 1000);
        span_end(&h);
        otlp_add_span(x, &h);
    }
    compare(x, "a batch of 204");

    otlp_free(x);
    loop_free();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_byte_identical_to_protobuf_c),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
