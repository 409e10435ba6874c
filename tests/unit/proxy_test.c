/* Tests for the proxy (common/proxy/proxy.c and proxy_h1.c): the request head
 * rewrite (hop-by-hop, XFF, Host, drops, upgrade, Te: trailers), and the
 * HTTP/1 exchange in process: a real listener, a real upstream pool, a raw
 * client socket and a raw backend socket on loopback, the loop turned by
 * hand. The backend's answer is cut at every byte to show that no split
 * changes what the client gets. */
#include "unit.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "proxy/proxy.h"

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

/* ---------------------------------------------------------------- the exchange, in process */

static struct server_limits lim = {.max_header_bytes = 8192,
                                   .max_headers = 50,
                                   .header_timeout = 5,
                                   .watermark = 65536,
                                   .max_conns = 100};
static struct upstream up;
static struct proxy_exchange px;
static const struct proxy_edit no_edit = {.append_xff = false};

static void on_req(struct request *req, void *arg)
{
    (void)arg;
    proxy_forward(&px, req, &up, &no_edit);
}

struct rig {
    struct event_base *base;
    struct server *srv;
    int listen_fd; /* the backend's listener */
    int client;    /* the client's socket */
    int backend;   /* the accepted backend socket, -1 until one */
};

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    char ip[64];
    int port;
    net_peer_ip(&ss, ip, sizeof ip, &port);
    return port;
}

static int connect_to(int port)
{
    struct net_addr a;
    net_addr_parse(&a, "127.0.0.1", port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a.ss, a.len), 0);
    return fd;
}

static void turn(struct rig *r, int n)
{
    for (int i = 0; i < n; i++) {
        event_base_loop(r->base, EVLOOP_NONBLOCK);
        usleep(200);
    }
}

static void rig_up(struct rig *r)
{
    r->base = loop_init();
    const char *err;
    r->srv = server_open(r->base, "t", "127.0.0.1", 0, &lim, on_req, NULL, &err);
    assert_non_null(r->srv);
    r->listen_fd = net_listen("127.0.0.1", 0, 16);
    assert_true(r->listen_fd >= 0);
    assert_true(upstream_init(&up, r->base, "127.0.0.1", bound_port(r->listen_fd), 4, 30));
    r->client = connect_to(bound_port(r->srv->fd));
    r->backend = -1;
}

static void rig_down(struct rig *r)
{
    close(r->client);
    if (r->backend >= 0)
        close(r->backend);
    turn(r, 5);
    upstream_close_idle(&up);
    server_stop_accepting(r->srv);
    server_close_idle(r->srv);
    turn(r, 5);
    server_free(r->srv);
    close(r->listen_fd);
    loop_free();
}

/* Reads what the backend got until a blank line ends a head; accepts the
 * connection first when there is none. */
static void backend_read_head(struct rig *r, char *out, size_t cap)
{
    size_t got = 0;
    out[0] = 0;
    for (int i = 0; i < 2000 && !strstr(out, "\r\n\r\n"); i++) {
        turn(r, 1);
        if (r->backend < 0) {
            r->backend = accept(r->listen_fd, NULL, NULL);
            continue;
        }
        ssize_t n = recv(r->backend, out + got, cap - 1 - got, MSG_DONTWAIT);
        if (n > 0) {
            got += (size_t)n;
            out[got] = 0;
        }
    }
    assert_non_null(strstr(out, "\r\n\r\n"));
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        p += w, n -= (size_t)w;
    }
}

/* What the client received until `want` appears, or EOF (*eof set). */
static size_t client_read(struct rig *r, char *out, size_t cap, const char *want, int *eof)
{
    size_t got = 0;
    *eof = 0;
    out[0] = 0;
    for (int i = 0; i < 2000 && got < cap - 1; i++) {
        turn(r, 1);
        ssize_t n = recv(r->client, out + got, cap - 1 - got, MSG_DONTWAIT);
        if (n > 0) {
            got += (size_t)n;
            out[got] = 0;
            if (want && strstr(out, want))
                break;
        } else if (n == 0 || (n < 0 && errno != EAGAIN)) {
            *eof = 1;
            break;
        }
    }
    return got;
}

static const char *GET = "GET /a HTTP/1.1\r\nHost: svc\r\n\r\n";

/* The client asks, the backend reads the head and answers `resp` (or
 * nothing, when NULL). */
static void ask(struct rig *r, const char *request, const char *resp)
{
    char head[2048];
    send_all(r->client, request, strlen(request));
    backend_read_head(r, head, sizeof head);
    if (resp)
        send_all(r->backend, resp, strlen(resp));
}
static const char *OK200 = "HTTP/1.1 200 OK\r\n";

/* A response cut at every byte reaches the client whole and unchanged in
 * its framing, and the pooled connection is reused after each: what the
 * client gets starts with `first`, holds `has` and ends with `tail`. */
static void split_everywhere(const char *resp, const char *first, const char *has, const char *tail)
{
    struct rig r;
    rig_up(&r);
    size_t len = strlen(resp);
    char out[8192], req[2048];
    int eof;
    for (size_t k = 1; k < len; k++) {
        send_all(r.client, GET, strlen(GET));
        int before = r.backend;
        backend_read_head(&r, req, sizeof req);
        if (before >= 0)
            assert_int_equal(r.backend, before); /* the pooled connection again */
        assert_non_null(strstr(req, "GET /a HTTP/1.1\r\n"));
        send_all(r.backend, resp, k);
        turn(&r, 2);
        send_all(r.backend, resp + k, len - k);
        size_t n = client_read(&r, out, sizeof out, tail, &eof);
        assert_false(eof);
        assert_true(strncmp(out, first, strlen(first)) == 0);
        assert_non_null(strstr(out, has));
        /* Nothing more, nothing less. */
        assert_true(n >= strlen(tail) && !strcmp(out + n - strlen(tail), tail));
    }
    rig_down(&r);
}

static void test_content_length_split_at_every_byte(void **state)
{
    (void)state;
    split_everywhere("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello", OK200,
                     "\r\nContent-Length: 5\r\nX-A: b\r\nDate: ", "\r\n\r\nhello");
}

static void test_chunked_split_at_every_byte(void **state)
{
    (void)state;
    /* Chunked bodies go through verbatim, trailers included. */
    split_everywhere("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"
                     "5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
                     OK200, "Trailer: X-T\r\n",
                     "\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n");
}

static void test_interim_heads_forwarded(void **state)
{
    (void)state;
    split_everywhere("HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
                     "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                     "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\n",
                     "Content-Length: 2\r\n", "\r\n\r\nok");
    struct rig r;
    rig_up(&r);
    char out[4096];
    int eof;
    ask(&r, GET,
        "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
    client_read(&r, out, sizeof out, "204 No Content", &eof);
    char *early = strstr(out, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n");
    char *final = strstr(out, "HTTP/1.1 204 No Content\r\n");
    assert_true(early && final && early < final);
    rig_down(&r);
}

/* Bad answers from the backend: 502 with Go's text before any byte went
 * out; a cut connection (never a clean end) after. */
static void test_backend_failures(void **state)
{
    (void)state;
    struct rig r;
    rig_up(&r);
    char out[4096];
    int eof;
    /* A malformed head. */
    ask(&r, GET, "HTTP/9 nope\r\n\r\n");
    client_read(&r, out, sizeof out, "broken", &eof);
    assert_true(strncmp(out, "HTTP/1.1 502 Bad Gateway\r\n", 26) == 0);
    assert_non_null(strstr(out, "net/http: HTTP/1.x transport connection broken: "));
    rig_down(&r);

    /* EOF before any byte on a fresh connection: 502 "EOF". */
    rig_up(&r);
    ask(&r, GET, NULL);
    close(r.backend);
    r.backend = -1;
    client_read(&r, out, sizeof out, "EOF\n", &eof);
    assert_true(strncmp(out, "HTTP/1.1 502 Bad Gateway\r\n", 26) == 0);
    assert_non_null(strstr(out, "\r\n\r\nEOF\n"));
    rig_down(&r);

    /* Closed mid-body: the client's connection is cut after what arrived. */
    rig_up(&r);
    ask(&r, GET, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-this");
    turn(&r, 5);
    close(r.backend);
    r.backend = -1;
    size_t n = client_read(&r, out, sizeof out, NULL, &eof);
    assert_true(eof);
    assert_true(n > 0 && strstr(out, "only-this"));
    rig_down(&r);
}

/* A reused pooled connection that the backend closed as the request went
 * up: an idempotent request is tried once more on a new connection. */
static void test_retry_on_a_stale_pooled_connection(void **state)
{
    (void)state;
    struct rig r;
    rig_up(&r);
    char out[4096], req[2048];
    int eof;
    const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    ask(&r, GET, ok);
    client_read(&r, out, sizeof out, "\r\n\r\nok", &eof);
    /* The next request reuses the connection; the backend drops it unanswered. */
    ask(&r, GET, NULL);
    close(r.backend);
    r.backend = -1;
    backend_read_head(&r, req, sizeof req); /* the retry, on a new connection */
    send_all(r.backend, ok, strlen(ok));
    client_read(&r, out, sizeof out, "\r\n\r\nok", &eof);
    assert_true(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_false(eof);
    rig_down(&r);
}

/* An HTTP/1.0 client cannot take chunked: the body arrives unframed and the
 * connection closes to end it. */
static void test_http10_client_gets_the_body_unframed(void **state)
{
    (void)state;
    struct rig r;
    rig_up(&r);
    char out[4096];
    int eof;
    ask(&r, "GET /a HTTP/1.0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    client_read(&r, out, sizeof out, NULL, &eof);
    assert_true(eof);
    assert_null(strstr(out, "Transfer-Encoding"));
    assert_non_null(strstr(out, "Connection: close\r\n"));
    char *body = strstr(out, "\r\n\r\n");
    assert_non_null(body);
    assert_string_equal(body + 4, "hello world");
    rig_down(&r);
}

int main(void)
{
    log_set_level("fatal");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rewrite),
        cmocka_unit_test(test_upgrade_kept),
        cmocka_unit_test(test_content_length_split_at_every_byte),
        cmocka_unit_test(test_chunked_split_at_every_byte),
        cmocka_unit_test(test_interim_heads_forwarded),
        cmocka_unit_test(test_backend_failures),
        cmocka_unit_test(test_retry_on_a_stale_pooled_connection),
        cmocka_unit_test(test_http10_client_gets_the_body_unframed),
    };
    int r = cmocka_run_group_tests_name("proxy", tests, NULL, NULL);
    http_head_pool_drain();
    return r;
}
