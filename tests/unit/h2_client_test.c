/* Tests for common/http/h2_client.c, in process: the client connects over
 * loopback TCP to coldbrew's own HTTP/2 server codec (h2_server.c) whose
 * application echoes request bodies and ends with trailers, or holds,
 * resets and goes away on request. The loop is turned by hand. */
#include "unit.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/h2_client.h"
#include "proxy/h2_pool.h"
#include "http/h2_server.h"
#include "http/http_head.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/net.h"

static struct event_base *base;
static struct h2_limits lim;
static int lfd;
static struct net_addr addr;
static struct h2_conn *server_conn;
static struct h2_stream *held;

/* ---------------------------------------------------------------- the server's application */

static void echo_body(struct h2_stream *s)
{
    size_t n = h2_unread(s->in);
    if (n) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_remove_buffer(s->in, b, n);
        h2_stream_write(s, b);
        evbuffer_free(b);
        h2_stream_consumed(s, n);
    }
    if (s->in_done) {
        struct h2_header_out t[] = {{"grpc-status", "0", 11, 1}, {"grpc-message", "fine", 12, 4}};
        h2_stream_end(s, t, 2);
    }
}

static void on_cancel(struct h2_stream *s)
{
    (void)s;
    held = NULL;
}

static void on_request(struct h2_stream *s, void *arg)
{
    (void)arg;
    struct http_head *h = s->head;
    const char *path = http_str_ptr(h, h->url);
    if (h->url.len == 6 && !memcmp(path, "/reset", 6)) {
        h2_stream_reset(s, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    s->cancel = on_cancel;
    s->holder = s;
    if (h->url.len == 5 && !memcmp(path, "/hold", 5)) {
        held = s;
        return;
    }
    s->on_input = echo_body;
    struct h2_header_out hd[] = {{"content-type", "application/grpc", 12, 16}};
    h2_stream_respond(s, 200, hd, 1, false);
    echo_body(s);
}

static void on_server_close(struct h2_conn *c, void *arg)
{
    (void)c, (void)arg;
    server_conn = NULL;
}

static const struct h2_server_ops server_ops = {on_request, on_server_close};

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)what, (void)arg;
    int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd >= 0)
        server_conn = h2_conn_new(base, cfd, "client", 0, &lim, &server_ops, NULL, NULL);
}

/* ---------------------------------------------------------------- the client's holder */

struct result {
    int status, heads, ends, resets;
    uint32_t code;
    char body[4096];
    size_t len;
    char trailer[32];
};

static void c_head(struct h2c_stream *s, bool final)
{
    struct result *r = s->holder;
    if (final)
        r->status = s->head->status;
    r->heads++;
}

static void c_data(struct h2c_stream *s)
{
    struct result *r = s->holder;
    size_t n = h2_unread(s->in);
    size_t room = sizeof r->body - r->len;
    if (n) /* also called on the end alone, before any body (s->in NULL) */
        evbuffer_remove(s->in, r->body + r->len, n < room ? n : room);
    r->len += n < room ? n : room;
    h2c_stream_consumed(s, n);
}

static void c_end(struct h2c_stream *s)
{
    struct result *r = s->holder;
    r->ends++;
    if (s->trailers) {
        size_t len;
        const char *v = http_head_get(s->trailers, "grpc-status", &len);
        if (v)
            snprintf(r->trailer, sizeof r->trailer, "%.*s", (int)len, v);
    }
}

static void c_reset(struct h2c_stream *s, uint32_t code, const char *why)
{
    (void)why;
    struct result *r = s->holder;
    r->resets++;
    r->code = code;
}

static const struct h2c_stream_ops stream_ops = {c_head, c_data, c_end, c_reset, NULL};

static int states;
static void on_state(struct h2c_conn *c, void *arg)
{
    (void)c, (void)arg;
    states++;
}
static const struct h2c_conn_ops conn_ops = {on_state};

static void turn(bool (*done)(void *), void *arg)
{
    for (int i = 0; i < 500; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        loop_flush_deferred();
        if (done && done(arg))
            return;
        usleep(200);
    }
}

static bool finished(void *arg)
{
    struct result *r = arg;
    return r->ends + r->resets > 0;
}

static const struct h2_header_out grpc_hdrs[] = {{"content-type", "application/grpc", 12, 16},
                                                 {"te", "trailers", 2, 8}};

/* ---------------------------------------------------------------- tests */

static void request_body_trailers_round_trip(void **state)
{
    (void)state;
    struct h2c_conn *c = h2c_conn_new(base, &addr, &lim, &conn_ops, NULL);
    assert_non_null(c);
    struct result r = {0};
    struct h2c_stream *s = h2c_request(c, "POST", "http", "svc:80", "/echo.Echo/Unary", grpc_hdrs,
                                       2, false, &stream_ops, &r);
    assert_non_null(s);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "hello ", 6);
    h2c_stream_write(s, b);
    evbuffer_add(b, "world", 5);
    h2c_stream_write(s, b);
    struct h2_header_out t[] = {{"x-sum", "11", 5, 2}};
    h2c_stream_end(s, t, 1);
    evbuffer_free(b);
    turn(finished, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.ends, 1);
    assert_int_equal(r.resets, 0);
    assert_int_equal(r.len, 11);
    assert_memory_equal(r.body, "hello world", 11);
    assert_string_equal(r.trailer, "0");
    h2c_conn_free(c);
    turn(NULL, NULL);
}

static bool all_finished(void *arg)
{
    struct result *r = arg;
    for (int i = 0; i < 100; i++)
        if (r[i].ends + r[i].resets == 0)
            return false;
    return true;
}

static void hundred_streams_share_one_connection(void **state)
{
    (void)state;
    struct h2c_conn *c = h2c_conn_new(base, &addr, &lim, &conn_ops, NULL);
    static struct result r[100];
    memset(r, 0, sizeof r);
    int started = 0;
    for (int i = 0; i < 100; i++) {
        char path[32];
        snprintf(path, sizeof path, "/n/%d", i);
        struct h2c_stream *s =
            h2c_request(c, "POST", "http", "svc", path, grpc_hdrs, 2, false, &stream_ops, &r[i]);
        if (!s)
            continue;
        started++;
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "msg-%d", i);
        h2c_stream_write(s, b);
        evbuffer_free(b);
        h2c_stream_end(s, NULL, 0);
    }
    assert_int_equal(started, 100);
    turn(all_finished, r);
    for (int i = 0; i < 100; i++) {
        char want[16];
        int n = snprintf(want, sizeof want, "msg-%d", i);
        assert_int_equal(r[i].ends, 1);
        assert_int_equal(r[i].len, (size_t)n);
        assert_memory_equal(r[i].body, want, (size_t)n);
    }
    h2c_conn_free(c);
    turn(NULL, NULL);
}

static void upstream_reset_reaches_the_holder(void **state)
{
    (void)state;
    struct h2c_conn *c = h2c_conn_new(base, &addr, &lim, &conn_ops, NULL);
    struct result r = {0};
    h2c_request(c, "GET", "http", "svc", "/reset", NULL, 0, true, &stream_ops, &r);
    turn(finished, &r);
    assert_int_equal(r.resets, 1);
    assert_int_equal(r.code, NGHTTP2_INTERNAL_ERROR);
    /* The connection serves on. */
    struct result r2 = {0};
    h2c_request(c, "POST", "http", "svc", "/echo", NULL, 0, true, &stream_ops, &r2);
    turn(finished, &r2);
    assert_int_equal(r2.ends, 1);
    h2c_conn_free(c);
    turn(NULL, NULL);
}

static bool is_held(void *arg)
{
    (void)arg;
    return held != NULL;
}

static void upstream_dying_mid_stream_is_a_reset_not_an_end(void **state)
{
    (void)state;
    struct h2c_conn *c = h2c_conn_new(base, &addr, &lim, &conn_ops, NULL);
    struct result r = {0};
    h2c_request(c, "GET", "http", "svc", "/hold", NULL, 0, true, &stream_ops, &r);
    turn(is_held, NULL);
    assert_non_null(held);
    h2_stream_respond(held, 200, NULL, 0, false);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "partial", 7);
    h2_stream_write(held, b);
    evbuffer_free(b);
    turn(NULL, NULL);
    assert_int_equal(r.status, 200);
    /* The user container dies: its connection closes without END_STREAM. */
    shutdown(server_conn ? ((struct h2_wire *)server_conn)->fd : -1, SHUT_RDWR);
    turn(finished, &r);
    assert_int_equal(r.ends, 0);
    assert_int_equal(r.resets, 1);
    assert_true(h2c_conn_done(c));
    h2c_conn_free(c);
    turn(NULL, NULL);
}

static void graceful_goaway_finishes_in_flight_and_refuses_more(void **state)
{
    (void)state;
    struct h2c_conn *c = h2c_conn_new(base, &addr, &lim, &conn_ops, NULL);
    struct result r = {0};
    h2c_request(c, "GET", "http", "svc", "/hold", NULL, 0, true, &stream_ops, &r);
    turn(is_held, NULL);
    assert_true(h2c_conn_available(c));
    h2_conn_shutdown(server_conn);
    turn(NULL, NULL);
    assert_true(h2c_conn_done(c));
    assert_false(h2c_conn_available(c));
    assert_null(h2c_request(c, "GET", "http", "svc", "/x", NULL, 0, true, &stream_ops, &r));
    h2_stream_reply(held, 200, "text/plain", "bye", 3);
    turn(finished, &r);
    assert_int_equal(r.ends, 1);
    assert_memory_equal(r.body, "bye", 3);
    h2c_conn_free(c);
    turn(NULL, NULL);
}

static void connect_refused_resets_queued_streams(void **state)
{
    (void)state;
    struct net_addr nowhere;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    bind(s, (struct sockaddr *)&sin, sizeof sin);
    socklen_t sl = sizeof sin;
    getsockname(s, (struct sockaddr *)&sin, &sl);
    close(s); /* a port nobody listens on */
    net_addr_parse(&nowhere, "127.0.0.1", ntohs(sin.sin_port));
    struct h2c_conn *c = h2c_conn_new(base, &nowhere, &lim, &conn_ops, NULL);
    assert_non_null(c);
    struct result r = {0};
    h2c_request(c, "GET", "http", "svc", "/", NULL, 0, true, &stream_ops, &r);
    turn(finished, &r);
    assert_int_equal(r.resets, 1);
    assert_int_equal(r.code, NGHTTP2_CONNECT_ERROR);
    assert_true(h2c_conn_done(c));
    h2c_conn_free(c);
    turn(NULL, NULL);
}

static bool all_300(void *arg)
{
    struct result *r = arg;
    for (int i = 0; i < 300; i++)
        if (r[i].ends + r[i].resets == 0)
            return false;
    return true;
}

static bool pool_empty(void *arg)
{
    return h2_pool_conns(arg) == 0;
}

static void pool_spreads_streams_and_closes_idle_connections(void **state)
{
    (void)state;
    struct h2_pool *p = h2_pool_new(base, &addr, &lim, 3, 0.05);
    static struct result r[300];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 300; i++) {
        struct h2c_stream *s = h2_pool_request(p, "POST", "http", "svc", "/p", grpc_hdrs, 2, false,
                                               &stream_ops, &r[i]);
        assert_non_null(s);
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "%d", i);
        h2c_stream_write(s, b);
        evbuffer_free(b);
        h2c_stream_end(s, NULL, 0);
    }
    /* 100 streams a connection before the server's SETTINGS arrive (the
     * assumed limit): the 101st and 201st open connections. */
    assert_int_equal(h2_pool_conns(p), 3);
    turn(all_300, r);
    for (int i = 0; i < 300; i++)
        assert_int_equal(r[i].ends, 1);
    turn(pool_empty, p); /* idle for 50 ms: closed */
    assert_int_equal(h2_pool_conns(p), 0);
    /* And it opens again on demand. */
    struct result again = {0};
    h2_pool_request(p, "GET", "http", "svc", "/x", NULL, 0, true, &stream_ops, &again);
    turn(finished, &again);
    assert_int_equal(again.ends, 1);
    h2_pool_free(p);
    turn(NULL, NULL);
}

static int setup(void **state)
{
    (void)state;
    base = loop_init();
    log_set_level("fatal");
    h2_limits_from_env(&lim, 8192, 100, 65536);
    lfd = net_listen("127.0.0.1", 0, 64);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(lfd, (struct sockaddr *)&ss, &sl);
    char ip[64];
    int port;
    net_peer_ip(&ss, ip, sizeof ip, &port);
    net_addr_parse(&addr, "127.0.0.1", port);
    event_add(event_new(base, lfd, EV_READ | EV_PERSIST, on_accept, NULL), NULL);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_body_trailers_round_trip),
        cmocka_unit_test(hundred_streams_share_one_connection),
        cmocka_unit_test(upstream_reset_reaches_the_holder),
        cmocka_unit_test(upstream_dying_mid_stream_is_a_reset_not_an_end),
        cmocka_unit_test(graceful_goaway_finishes_in_flight_and_refuses_more),
        cmocka_unit_test(connect_refused_resets_queued_streams),
        cmocka_unit_test(pool_spreads_streams_and_closes_idle_connections),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
