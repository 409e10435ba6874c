/* Tests for common/http/knative.c: the one-pass header finder both hops use
 * (first header of a name wins, names in any case, values untouched) and
 * the value helpers. The network probe's answer is tested end to end in the
 * scenario tests (test_queue_proxy.py, test_activator.py). */
#include "unit.h"

#include <event2/buffer.h>

#include "http/h1_parser.h"
#include "http/knative.h"

static struct http_head *parse(const char *s)
{
    struct h1_parser p;
    struct http_head *h = http_head_acquire();
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, s, strlen(s));
    h1_parser_init(&p, true, 8192, 100);
    h1_parser_begin(&p, h);
    assert_int_equal(h1_parse_head(&p, b), H1_HEAD);
    evbuffer_free(b);
    return h;
}

static void assert_value(const struct http_head *h, const struct http_header *hd, const char *want)
{
    assert_non_null(hd);
    size_t len;
    const char *v = http_header_value(h, hd, &len);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(v, want, len);
}

static void test_finds_every_field(void **state)
{
    (void)state;
    struct http_head *h =
        parse("GET / HTTP/1.1\r\n"
              "Host: h.example\r\n"
              "User-Agent: kube-probe/1.30\r\n"
              "Forwarded: for=1.2.3.4\r\n"
              "X-Forwarded-For: 1.2.3.4\r\n"
              "X-Forwarded-Host: fh\r\n"
              "X-Forwarded-Proto: https\r\n"
              "K-Network-Probe: probe\r\n"
              "K-Kubelet-Probe: 1\r\n"
              "K-Network-Hash: abc\r\n"
              "K-Original-Host: orig\r\n"
              "K-Proxy-Request: activator\r\n"
              "Knative-Serving-Revision: rev-1\r\n"
              "Knative-Serving-Namespace: ns\r\n"
              "Knative-Serving-Tag: t\r\n"
              "Knative-Serving-Default-Route: true\r\n"
              "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
              "tracestate: a=b\r\n"
              "Coldbrew-Server-Timing: 1\r\n"
              "\r\n");
    struct kn_headers q;
    kn_headers_find(h, &q);
    assert_value(h, q.host, "h.example");
    assert_value(h, q.ua, "kube-probe/1.30");
    assert_value(h, q.forwarded, "for=1.2.3.4");
    assert_value(h, q.xff, "1.2.3.4");
    assert_value(h, q.xfh, "fh");
    assert_value(h, q.xfp, "https");
    assert_value(h, q.knp, "probe");
    assert_value(h, q.kkp, "1");
    assert_value(h, q.hash, "abc");
    assert_value(h, q.orig_host, "orig");
    assert_value(h, q.proxy, "activator");
    assert_value(h, q.rev, "rev-1");
    assert_value(h, q.ns, "ns");
    assert_value(h, q.tag, "t");
    assert_value(h, q.defroute, "true");
    assert_value(h, q.tp, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_value(h, q.ts, "a=b");
    assert_value(h, q.timing, "1");
    assert_true(kn_value_prefix(h, q.ua, "kube-probe/"));
    assert_false(kn_value_prefix(h, q.ua, "kube-probe/1.30+"));
    assert_true(kn_value_is(h, q.proxy, "activator"));
    assert_false(kn_value_is(h, q.proxy, "activato"));
    http_head_release(h);
}

/* The first of a repeated name counts; names match in any case; a name that
 * only starts like one of ours (or is a prefix of one) is not it. */
static void test_first_wins_and_near_names_do_not_count(void **state)
{
    (void)state;
    struct http_head *h = parse("GET / HTTP/1.1\r\n"
                                "k-network-probe: first\r\n"
                                "K-NETWORK-PROBE: second\r\n"
                                "K-Network-Probes: not-it\r\n"
                                "K-Network: not-it\r\n"
                                "X-Forwarded-Fo: not-it\r\n"
                                "Hostname: not-it\r\n"
                                "\r\n");
    struct kn_headers q;
    kn_headers_find(h, &q);
    assert_value(h, q.knp, "first");
    assert_null(q.xff);
    assert_null(q.host);
    assert_null(q.ua);
    assert_null(q.hash);
    assert_false(kn_value_is(h, q.ua, ""));
    assert_false(kn_value_prefix(h, q.ua, ""));
    http_head_release(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_finds_every_field),
        cmocka_unit_test(test_first_wins_and_near_names_do_not_count),
    };
    return cmocka_run_group_tests_name("knative", tests, NULL, NULL);
}
