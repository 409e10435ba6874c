/* Tests for common/http_client.c against a hand-written server on loopback:
 * a response head split at every byte, chunked and content-length bodies
 * (also split at every byte), streamed bodies, a server that closes before
 * the head ends or mid-body, garbage instead of HTTP, a body past max_body,
 * a refused connect and a timeout. Errors are compared by pointer (err.h). */
#include "unit.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_client.h"
#include "log.h"
#include "loop.h"
#include "net.h"
#include "upstream.h"
#include "ws_test_util.h"

struct fixture {
    struct event_base *base;
    int lfd, port;
    int sfd; /* the server side of the current connection, -1 when none */
    struct upstream up;
    struct http_call *call;
    int done_calls;
    const char *err;
    char body[8192];
    size_t body_len;
    int data_calls;
};

static struct fixture fx;

static int setup(void **state)
{
    memset(&fx, 0, sizeof fx);
    fx.base = loop_init();
    fx.lfd = net_listen("127.0.0.1", 0, 16);
    assert_true(fx.lfd >= 0);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fx.lfd, (struct sockaddr *)&ss, &sl);
    char ip[64];
    net_peer_ip(&ss, ip, sizeof ip, &fx.port);
    fx.sfd = -1;
    assert_true(upstream_init(&fx.up, fx.base, "127.0.0.1", fx.port, 4, 30));
    fx.call = http_call_new(&fx.up, &fx);
    assert_non_null(fx.call);
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    http_call_free(fx.call);
    upstream_close_idle(&fx.up);
    if (fx.sfd >= 0)
        close(fx.sfd);
    close(fx.lfd);
    turn(fx.base, 2);
    loop_free();
    return 0;
}

static void on_done(struct http_call *c, const char *err)
{
    struct fixture *f = c->arg;
    f->done_calls++;
    f->err = err;
    size_t n = evbuffer_get_length(c->body);
    if (n > sizeof f->body - f->body_len)
        n = sizeof f->body - f->body_len;
    evbuffer_remove(c->body, f->body + f->body_len, n);
    f->body_len += n;
}

/* Streaming: consume everything as it comes. */
static void on_data(struct http_call *c)
{
    struct fixture *f = c->arg;
    f->data_calls++;
    size_t n = evbuffer_get_length(c->body);
    if (n > sizeof f->body - f->body_len)
        n = sizeof f->body - f->body_len;
    evbuffer_remove(c->body, f->body + f->body_len, n);
    f->body_len += n;
}

static void start(double timeout, http_call_data_cb data)
{
    static const char req[] = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
    fx.done_calls = 0;
    fx.err = NULL;
    fx.body_len = 0;
    fx.data_calls = 0;
    http_call_start(fx.call, req, sizeof req - 1, timeout, on_done, data);
}

/* Waits for the request head on whichever connection it comes (a new one
 * is accepted; a pooled one is reused). */
static void await_request(void)
{
    char buf[1024];
    size_t got = 0;
    for (int i = 0; i < 2000; i++) {
        turn(fx.base, 1);
        int nfd = accept4(fx.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (nfd >= 0) {
            if (fx.sfd >= 0)
                close(fx.sfd);
            fx.sfd = nfd;
            got = 0;
        }
        if (fx.sfd < 0)
            continue;
        ssize_t r = read(fx.sfd, buf + got, sizeof buf - 1 - got);
        if (r > 0) {
            got += (size_t)r;
            buf[got] = 0;
            if (strstr(buf, "\r\n\r\n"))
                return;
        }
    }
    fail_msg("no request arrived");
}

static void send_str(const char *s, size_t n)
{
    assert_true(write_all(fx.sfd, s, n));
}

static void send_text(const char *s)
{
    send_str(s, strlen(s));
}

static void await_done(int ms)
{
    for (int i = 0; i < ms && !fx.done_calls; i++)
        turn(fx.base, 1);
    assert_int_equal(fx.done_calls, 1);
}

/* A response in two writes split at `at`, with the loop turning between. */
static void answer_split(const char *resp, size_t len, size_t at)
{
    send_str(resp, at);
    turn(fx.base, 2);
    assert_int_equal(fx.done_calls, 0);
    send_str(resp + at, len - at);
}

static void test_head_split_at_every_byte(void **state)
{
    (void)state;
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                               "X-Long-Header: aaaaaaaaaaaaaaaa\r\nContent-Length: 5\r\n\r\nhello";
    size_t len = sizeof resp - 1;
    size_t head = strstr(resp, "\r\n\r\n") + 4 - resp;
    for (size_t at = 1; at < head; at++) {
        start(5, NULL);
        await_request();
        answer_split(resp, len, at);
        await_done(2000);
        assert_null(fx.err);
        assert_int_equal(fx.call->status, 200);
        assert_int_equal(fx.body_len, 5);
        assert_memory_equal(fx.body, "hello", 5);
    }
}

static void test_chunked_split_at_every_byte(void **state)
{
    (void)state;
    static const char resp[] = "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\n\r\n";
    size_t len = sizeof resp - 1;
    for (size_t at = 1; at < len; at++) {
        start(5, NULL);
        await_request();
        answer_split(resp, len, at);
        await_done(2000);
        assert_null(fx.err);
        assert_int_equal(fx.call->status, 201);
        assert_int_equal(fx.body_len, 12);
        assert_memory_equal(fx.body, "hello world!", 12);
    }
}

static void test_content_length_split_at_every_byte(void **state)
{
    (void)state;
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world";
    size_t len = sizeof resp - 1;
    for (size_t at = 1; at < len; at++) {
        start(5, NULL);
        await_request();
        answer_split(resp, len, at);
        await_done(2000);
        assert_null(fx.err);
        assert_int_equal(fx.body_len, 11);
        assert_memory_equal(fx.body, "hello world", 11);
    }
}

/* A streamed (on_data) chunked body: delivered as it arrives, unframed. */
static void test_streamed_chunks(void **state)
{
    (void)state;
    start(0, on_data);
    await_request();
    send_text("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nline");
    for (int i = 0; i < 500 && fx.body_len < 4; i++)
        turn(fx.base, 1);
    assert_int_equal(fx.body_len, 4);
    assert_int_equal(fx.done_calls, 0);
    send_text("\r\n5\r\nmore\n\r\n0\r\n\r\n");
    await_done(2000);
    assert_null(fx.err);
    assert_int_equal(fx.body_len, 9);
    assert_memory_equal(fx.body, "linemore\n", 9);
    assert_true(fx.data_calls >= 2);
}

/* A body read until EOF (neither length nor chunking) ends cleanly. */
static void test_body_until_eof(void **state)
{
    (void)state;
    start(5, NULL);
    await_request();
    send_text("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it");
    close(fx.sfd);
    fx.sfd = -1;
    await_done(2000);
    assert_null(fx.err);
    assert_int_equal(fx.body_len, 9);
}

static void test_close_mid_body(void **state)
{
    (void)state;
    /* Content-Length promised 10, 5 came. */
    start(5, NULL);
    await_request();
    send_text("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
    turn(fx.base, 3);
    close(fx.sfd);
    fx.sfd = -1;
    await_done(2000);
    assert_ptr_equal(fx.err, http_call_err_body_eof);
    assert_string_equal(fx.call->detail, "unexpected EOF");
    /* A chunked body cut inside a chunk. */
    start(5, NULL);
    await_request();
    send_text("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhel");
    turn(fx.base, 3);
    close(fx.sfd);
    fx.sfd = -1;
    await_done(2000);
    assert_ptr_equal(fx.err, http_call_err_body_eof);
}

static void test_close_mid_head(void **state)
{
    (void)state;
    start(5, NULL);
    await_request();
    send_text("HTTP/1.1 200 OK\r\nContent-Le");
    turn(fx.base, 3);
    close(fx.sfd);
    fx.sfd = -1;
    await_done(2000);
    assert_ptr_equal(fx.err, http_call_err_eof);
}

static void test_garbage(void **state)
{
    (void)state;
    start(5, NULL);
    await_request();
    send_text("SSH-2.0-OpenSSH_9.2\r\n\r\n");
    await_done(2000);
    assert_ptr_equal(fx.err, http_call_err_malformed);
    assert_non_null(strstr(fx.call->detail, "malformed HTTP response from 127.0.0.1:"));
    /* Bad chunk size. */
    start(5, NULL);
    await_request();
    send_text("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    await_done(2000);
    assert_ptr_equal(fx.err, http_call_err_malformed);
}

static void test_too_large(void **state)
{
    (void)state;
    fx.call->max_body = 8;
    start(5, NULL);
    await_request();
    send_text("HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n01234567890123456789");
    await_done(2000);
    assert_ptr_equal(fx.err, http_call_err_too_large);
}

static void test_timeout(void **state)
{
    (void)state;
    /* The server accepts and reads, never answers. */
    start(0.05, NULL);
    await_request();
    send_text("HTTP/1.1 200 OK\r\n"); /* half a head does not stop the clock */
    await_done(2000);
    assert_ptr_equal(fx.err, http_call_err_timeout);
    assert_non_null(strstr(fx.call->detail, "timeout awaiting response from 127.0.0.1:"));
    /* The next call on a fresh connection works. */
    start(5, NULL);
    await_request();
    send_text("HTTP/1.1 204 No Content\r\n\r\n");
    await_done(2000);
    assert_null(fx.err);
    assert_int_equal(fx.call->status, 204);
}

static void test_refused(void **state)
{
    (void)state;
    /* The listener goes away: the connect is refused. */
    close(fx.lfd);
    fx.lfd = net_listen("127.0.0.1", 0, 1); /* for teardown */
    start(5, NULL);
    await_done(2000);
    assert_ptr_equal(fx.err, http_call_err_connect);
    char want[96];
    snprintf(want, sizeof want, "dial tcp 127.0.0.1:%d: connect: connection refused", fx.port);
    assert_string_equal(fx.call->detail, want);
}

/* A keep-alive connection is pooled and serves the next call. */
static void test_reuse(void **state)
{
    (void)state;
    start(5, NULL);
    await_request();
    int first = fx.sfd;
    send_text("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na");
    await_done(2000);
    assert_int_equal(fx.up.nidle, 1);
    start(5, NULL);
    await_request();
    assert_int_equal(fx.sfd, first);
    send_text("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb");
    await_done(2000);
    assert_null(fx.err);
    assert_memory_equal(fx.body, "b", 1);
}

int main(void)
{
    log_init("test", NULL, NULL);
    log_set_level("error");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_head_split_at_every_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_split_at_every_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_content_length_split_at_every_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamed_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_until_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_mid_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_mid_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reuse, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
