/* Tests for common/telemetry/trace.c: W3C traceparent/tracestate, ids, sampling, spans. */
#include "unit.h"

#include <stdio.h>

#include "telemetry/trace.h"

#define GOOD "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

static const char *parse(const char *s, struct trace_ctx *c)
{
    return trace_parse_traceparent(s, strlen(s), c);
}

static void test_traceparent_valid(void **state)
{
    (void)state;
    struct trace_ctx c;
    assert_null(parse(GOOD, &c));
    assert_true(c.valid);
    assert_true(c.remote);
    assert_int_equal(c.flags, TRACE_FLAG_SAMPLED);
    char hex[40];
    trace_hex(c.trace_id, TRACE_ID_LEN, hex);
    assert_string_equal(hex, "0af7651916cd43dd8448eb211c80319c");
    trace_hex(c.span_id, TRACE_SPAN_ID_LEN, hex);
    assert_string_equal(hex, "b7ad6b7169203331");
    /* Not sampled. */
    assert_null(parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", &c));
    assert_int_equal(c.flags, 0);
    /* Unknown flag bits are accepted and not propagated. */
    assert_null(parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff", &c));
    assert_int_equal(c.flags, TRACE_FLAG_SAMPLED);
    /* A future version may carry more fields after a '-'. */
    assert_null(parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-ever", &c));
    assert_true(c.valid);
    assert_null(parse("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &c));
    /* Surrounding OWS is tolerated. */
    assert_null(parse(" " GOOD "\t", &c));
}

static void test_traceparent_malformed(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "00",
        /* wrong length */
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-011",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
        "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
        /* non-hex */
        "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333z-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0x",
        "0x-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd 448eb211c80319c-b7ad6b7169203331-01",
        /* upper case is invalid per the spec */
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-B7AD6B7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0A",
        "0A-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        /* version ff */
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        /* all-zero ids */
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        /* separators */
        "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331_01",
        /* a future version's extra fields must follow a '-' */
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct trace_ctx c;
        const char *why = parse(bad[i], &c);
        if (!why)
            fail_msg("accepted: \"%s\"", bad[i]);
        assert_false(c.valid);
    }
}

static void test_traceparent_round_trip(void **state)
{
    (void)state;
    struct trace_ctx c, d;
    assert_null(parse(GOOD, &c));
    char out[TRACE_PARENT_LEN + 1];
    assert_int_equal(trace_format_traceparent(&c, out), TRACE_PARENT_LEN);
    assert_string_equal(out, GOOD);
    /* A child for the next hop: same trace, our span id, the flags. */
    struct span s;
    span_start_root(&s, "queue", SPAN_KIND_SERVER, &c, 0.5);
    span_traceparent(&s, out);
    assert_null(parse(out, &d));
    assert_memory_equal(d.trace_id, c.trace_id, TRACE_ID_LEN);
    assert_memory_equal(d.span_id, s.span_id, TRACE_SPAN_ID_LEN);
    assert_memory_not_equal(d.span_id, c.span_id, TRACE_SPAN_ID_LEN);
    assert_int_equal(d.flags, TRACE_FLAG_SAMPLED);
    assert_memory_equal(s.parent_id, c.span_id, TRACE_SPAN_ID_LEN);
    assert_true(s.parent_remote);
}

static void test_tracestate(void **state)
{
    (void)state;
    struct trace_state ts;
    trace_state_init(&ts);
    assert_true(trace_state_add(&ts, "rojo=00f067aa0ba902b7", 21));
    assert_true(trace_state_add(&ts, " congo=t61rcWkgMzE ", 19));
    assert_string_equal(ts.buf, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    assert_null(ts.dropped);
    /* Vendor keys and empty members. */
    trace_state_init(&ts);
    const char *v = "acme@vendor=1,, a-b_c*d/e=x y";
    assert_true(trace_state_add(&ts, v, strlen(v)));
    assert_string_equal(ts.buf, v);
    /* Malformed: no '=', upper-case key, ',' or '=' in a value. */
    static const char *bad[] = {"novalue", "Key=1", "k=", "=v", "k=a=b", "k=\x01"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        trace_state_init(&ts);
        assert_false(trace_state_add(&ts, bad[i], strlen(bad[i])));
        assert_non_null(ts.dropped);
        assert_int_equal(ts.len, 0);
    }
    /* Over 512 bytes: dropped with a reason, and later fields are ignored. */
    char big[600];
    trace_state_init(&ts);
    snprintf(big, sizeof big, "a=%0200d,b=%0200d", 1, 2);
    assert_true(trace_state_add(&ts, big, strlen(big)));
    snprintf(big, sizeof big, "c=%0200d", 3);
    assert_false(trace_state_add(&ts, big, strlen(big)));
    assert_string_equal(ts.dropped, "tracestate is longer than 512 bytes");
    assert_false(trace_state_add(&ts, "a=1", 3));
    assert_int_equal(ts.len, 0);
    /* Exactly 512 is kept (values are at most 256 characters). */
    trace_state_init(&ts);
    snprintf(big, sizeof big, "a=%0254d,b=%0253d", 1, 2);
    assert_int_equal(strlen(big), 512);
    assert_true(trace_state_add(&ts, big, 512));
    assert_int_equal(ts.len, 512);
    /* A value over 256 characters is malformed. */
    trace_state_init(&ts);
    snprintf(big, sizeof big, "a=%0257d", 1);
    assert_false(trace_state_add(&ts, big, strlen(big)));
    /* The no-copy check says the same. */
    assert_null(trace_state_check("rojo=00f067aa0ba902b7", 21));
    assert_string_equal(trace_state_check("Key=1", 5), "tracestate is malformed");
    /* 33 members are too many. */
    trace_state_init(&ts);
    char many[400] = "";
    for (int i = 0; i < 33; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%sk%d=v", i ? "," : "", i);
    assert_false(trace_state_add(&ts, many, strlen(many)));
    assert_string_equal(ts.dropped, "tracestate has more than 32 members");
}

static void test_ids_never_zero_and_differ(void **state)
{
    (void)state;
    trace_seed(0);
    uint8_t a[TRACE_ID_LEN], b[TRACE_ID_LEN], z[TRACE_ID_LEN] = {0};
    trace_new_trace_id(a);
    for (int i = 0; i < 10000; i++) {
        trace_new_trace_id(b);
        assert_memory_not_equal(b, z, TRACE_ID_LEN);
        assert_memory_not_equal(a, b, TRACE_ID_LEN);
        uint8_t s[TRACE_SPAN_ID_LEN];
        trace_new_span_id(s);
        assert_memory_not_equal(s, z, TRACE_SPAN_ID_LEN);
    }
}

/* How many of n fresh roots are sampled at `rate`. */
static unsigned sampled_of(double rate, unsigned n)
{
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++) {
        uint8_t id[TRACE_ID_LEN];
        trace_new_trace_id(id);
        k += trace_should_sample(rate, NULL, id);
    }
    return k;
}

static void test_sampling_ratio(void **state)
{
    (void)state;
    trace_seed(42);
    const unsigned n = 100000;
    assert_int_equal(sampled_of(0, n), 0);
    assert_int_equal(sampled_of(1, n), n);
    assert_int_equal(sampled_of(-1, n), 0);
    assert_int_equal(sampled_of(2, n), n);
    /* Binomial(n, 0.5): sd = 158; 5 sd either side. */
    unsigned half = sampled_of(0.5, n);
    assert_in_range(half, n / 2 - 800, n / 2 + 800);
    unsigned tenth = sampled_of(0.1, n);
    assert_in_range(tenth, n / 10 - 500, n / 10 + 500);
    /* The decision is the trace id's: low 8 bytes >> 1 against rate * 2^63. */
    uint8_t id[TRACE_ID_LEN] = {0};
    id[0] = 0xff;
    id[8] = 0x7f; /* x >> 1 = 0x3f80... < 0.5 * 2^63 = 0x4000... */
    assert_true(trace_should_sample(0.5, NULL, id));
    id[8] = 0x80; /* 0x4000... is not below the bound */
    assert_false(trace_should_sample(0.5, NULL, id));
}

static void test_sampling_parent_based(void **state)
{
    (void)state;
    struct trace_ctx yes, no;
    assert_null(parse(GOOD, &yes));
    assert_null(parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", &no));
    /* Between the edges, the parent decides whatever the id says. */
    for (int i = 0; i < 1000; i++) {
        uint8_t id[TRACE_ID_LEN];
        trace_new_trace_id(id);
        assert_true(trace_should_sample(0.01, &yes, id));
        assert_false(trace_should_sample(0.99, &no, id));
    }
    /* The edges are AlwaysSample / NeverSample (Knative's sampleFor). */
    assert_true(trace_should_sample(1, &no, yes.trace_id));
    assert_false(trace_should_sample(0, &yes, yes.trace_id));
    /* An invalid parent is no parent. */
    struct trace_ctx bad;
    assert_non_null(parse("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &bad));
    uint8_t low[TRACE_ID_LEN] = {1};
    assert_true(trace_should_sample(0.5, &bad, low));
}

static void test_span_tree_and_bounds(void **state)
{
    (void)state;
    struct span root, child;
    span_start_root(&root, "queue", SPAN_KIND_SERVER, NULL, 1);
    assert_true(span_recording(&root));
    assert_false(root.has_parent);
    span_start_child(&child, "kn.queueproxy.proxy", SPAN_KIND_INTERNAL, &root);
    assert_memory_equal(child.trace_id, root.trace_id, TRACE_ID_LEN);
    assert_memory_equal(child.parent_id, root.span_id, TRACE_SPAN_ID_LEN);
    assert_true(child.has_parent);
    assert_false(child.parent_remote);
    /* Attributes: a key set twice is overwritten; past the limit, counted. */
    span_set_int(&root, "http.response.status_code", 500);
    span_set_int(&root, "http.response.status_code", 200);
    assert_int_equal(root.nattrs, 1);
    assert_int_equal(root.attrs[0].v.i, 200);
    static const char *keys[] = {"k0", "k1",  "k2",  "k3",  "k4",  "k5",  "k6",  "k7",  "k8",
                                 "k9", "k10", "k11", "k12", "k13", "k14", "k15", "k16", "k17"};
    for (int i = 0; i < 18; i++)
        span_set_str(&root, keys[i], "v", 1);
    assert_int_equal(root.nattrs, TRACE_MAX_ATTRS);
    assert_int_equal(root.dropped_attrs, 18 - (TRACE_MAX_ATTRS - 1));
    /* Long strings are truncated, not overflowing. */
    char longv[500];
    memset(longv, 'x', sizeof longv);
    span_set_str(&child, "url.path", longv, sizeof longv);
    assert_int_equal(child.attrs[0].slen, TRACE_ATTR_STR_MAX);
    for (int i = 0; i < TRACE_MAX_EVENTS + 3; i++)
        span_add_event(&child, "e");
    assert_int_equal(child.nevents, TRACE_MAX_EVENTS);
    assert_int_equal(child.dropped_events, 3);
    span_set_status(&child, SPAN_STATUS_ERROR, "boom");
    span_end(&child);
    span_end(&root);
    assert_true(root.end_ns >= root.start_ns);
    assert_true(child.end_ns >= child.start_ns);
    /* An ended span records nothing more. */
    span_set_int(&child, "late", 1);
    assert_int_equal(child.nattrs, 1);
    /* Long names are truncated. */
    span_start_root(&root,
                    longv[0] ? "GET /a/very/long/path/that/goes/on/and/on/and/on/and/on/"
                               "and/on/and/on/and/on/and/on/and/on/and/on/and/on"
                             : "",
                    SPAN_KIND_SERVER, NULL, 1);
    assert_int_equal(strlen(root.name), TRACE_NAME_MAX - 1);
}

/* The activator's span is started when the request is looked up, after it
 * arrived; its cold-start phases are events at moments it stamped earlier. */
static void test_backdate_and_events_at(void **state)
{
    (void)state;
    struct span s;
    span_start_root(&s, "handle", SPAN_KIND_SERVER, NULL, 1);
    uint64_t start = s.start_ns, mono = s.start_mono;
    span_backdate(&s, mono - 5000000); /* 5 ms before */
    assert_true(s.start_ns == start - 5000000);
    span_backdate(&s, mono); /* later than the start: no change */
    assert_true(s.start_ns == start - 5000000);
    span_add_event_at(&s, "coldstart.poke_sent", mono - 4000000);
    span_add_event_at(&s, "coldstart.first_byte", mono + 1000000);
    assert_int_equal(s.nevents, 2);
    assert_true(s.events[0].time_ns == start - 4000000);
    assert_true(s.events[1].time_ns == start + 1000000);
    assert_string_equal(s.events[0].name, "coldstart.poke_sent");
    for (int i = 0; i < TRACE_MAX_EVENTS; i++)
        span_add_event_at(&s, "e", mono);
    assert_int_equal(s.nevents, TRACE_MAX_EVENTS);
    assert_int_equal(s.dropped_events, 2);
    span_end(&s);
    assert_true(s.end_ns >= s.start_ns);
    /* Not recording: nothing. */
    struct span n;
    span_start_root(&n, "handle", SPAN_KIND_SERVER, NULL, 0);
    span_add_event_at(&n, "e", mono);
    assert_int_equal(n.nevents, 0);
}

static void test_unsampled_span_is_non_recording(void **state)
{
    (void)state;
    struct trace_ctx no;
    assert_null(parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", &no));
    struct span s, c;
    span_start_root(&s, "queue", SPAN_KIND_SERVER, &no, 0.5);
    assert_false(span_recording(&s));
    span_set_int(&s, "a", 1);
    span_add_event(&s, "e");
    assert_int_equal(s.nattrs, 0);
    assert_int_equal(s.nevents, 0);
    /* It still has a new id for the next hop, with the flag off. */
    char out[TRACE_PARENT_LEN + 1];
    span_traceparent(&s, out);
    assert_memory_equal(out, "00-0af7651916cd43dd8448eb211c80319c-", 36);
    assert_string_equal(out + 52, "-00");
    span_start_child(&c, "child", SPAN_KIND_CLIENT, &s);
    assert_false(span_recording(&c));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traceparent_valid),
        cmocka_unit_test(test_traceparent_malformed),
        cmocka_unit_test(test_traceparent_round_trip),
        cmocka_unit_test(test_tracestate),
        cmocka_unit_test(test_ids_never_zero_and_differ),
        cmocka_unit_test(test_sampling_ratio),
        cmocka_unit_test(test_sampling_parent_based),
        cmocka_unit_test(test_span_tree_and_bounds),
        cmocka_unit_test(test_unsampled_span_is_non_recording),
        cmocka_unit_test(test_backdate_and_events_at),
    };
    return cmocka_run_group_tests_name("trace", tests, NULL, NULL);
}
