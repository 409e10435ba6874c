/* Tests for common/proxy.c's request head rewrite (hop-by-hop, XFF, Host,
 * drops, upgrade, Te: trailers). */
#include "unit.h"

#include <event2/buffer.h>
#include <stdio.h>

#include "proxy.h"

static struct request *make(const char *raw, struct sconn *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->peer_ip, "10.0.0.9");
    struct h1_parser p;
    h1_parser_init(&p, true, 65536, 100);
    struct http_head *h = http_head_acquire();
    h1_parser_begin(&p, h);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, raw, strlen(raw));
    assert_int_equal(h1_parse_head(&p, b), H1_HEAD);
    evbuffer_free(b);
    c->req.conn = c;
    c->req.head = h;
    return &c->req;
}

static void test_rewrite(void **state)
{
    (void)state;
    static struct sconn c;
    struct request *req =
        make("POST /x HTTP/1.1\r\nHost: orig\r\nConnection: keep-alive, X-Hop\r\n"
             "X-Hop: 1\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n"
             "Te: trailers, deflate\r\nKnative-Serving-Revision: r\r\n"
             "Transfer-Encoding: chunked\r\nX-Keep: yes\r\n\r\n",
             &c);
    static const char *const drop[] = {"knative-serving-revision", NULL};
    struct proxy_edit e = {.host = "new.example",
                           .host_len = 11,
                           .drop = drop,
                           .append_xff = true,
                           .extra = "K-Extra: 1\r\n",
                           .extra_len = 12};
    char buf[2048];
    size_t n = proxy_build_request_head(req, &e, buf, sizeof buf);
    assert_true(n > 0);
    buf[n] = 0;
    assert_string_equal(buf,
                        "POST /x HTTP/1.1\r\nHost: new.example\r\nX-Keep: yes\r\nTe: trailers\r\n"
                        "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\n"
                        "Transfer-Encoding: chunked\r\nK-Extra: 1\r\n\r\n");
    assert_int_equal(proxy_build_request_head(req, &e, buf, 20), 0); /* does not fit */
    http_head_release(req->head);
}

static void test_upgrade_kept(void **state)
{
    (void)state;
    static struct sconn c;
    struct request *req =
        make("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
             "Sec-WebSocket-Key: k\r\n\r\n",
             &c);
    struct proxy_edit e = {0};
    char buf[1024];
    size_t n = proxy_build_request_head(req, &e, buf, sizeof buf);
    buf[n] = 0;
    assert_string_equal(buf, "GET /ws HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k\r\n"
                             "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    http_head_release(req->head);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rewrite),
        cmocka_unit_test(test_upgrade_kept),
    };
    int r = cmocka_run_group_tests_name("proxy", tests, NULL, NULL);
    http_head_pool_drain();
    return r;
}
