/* Tests for common/cluster/http_client.c against a hand-written server on loopback:
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

#include "core/err.h"
#include "cluster/http_client.h"
#include "core/log.h"
#include "core/loop.h"
#include "loopback_util.h"
#include "proxy/upstream.h"

/* Under ASan a request the allocator cannot serve returns NULL, as it does
 * with jemalloc and glibc, instead of aborting: the no-memory path is real. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

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
    fx.lfd = lo_listen(16, &fx.port);
    assert_true(fx.lfd >= 0);
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
    lo_teardown(fx.base, fx.lfd, fx.sfd);
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
    assert_true(lo_await_head(fx.base, fx.lfd, &fx.sfd, buf, sizeof buf, 2000));
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

/* The response in two writes cut at every byte in [from, to): each time the
 * call ends well with `status` and `body`. */
static void split_each(const char *resp, size_t from, size_t to, int status, const char *body)
{
    size_t len = strlen(resp), blen = strlen(body);
    for (size_t at = from; at < to; at++) {
        start(5, NULL);
        await_request();
        answer_split(resp, len, at);
        await_done(2000);
        assert_null(fx.err);
        assert_int_equal(fx.call->status, status);
        assert_int_equal(fx.body_len, blen);
        assert_memory_equal(fx.body, body, blen);
    }
}

static void test_head_split_at_every_byte(void **state)
{
    (void)state;
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                               "X-Long-Header: aaaaaaaaaaaaaaaa\r\nContent-Length: 5\r\n\r\nhello";
    split_each(resp, 1, (size_t)(strstr(resp, "\r\n\r\n") + 4 - resp), 200, "hello");
}

static void test_chunked_split_at_every_byte(void **state)
{
    (void)state;
    static const char resp[] = "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\n\r\n";
    split_each(resp, 1, sizeof resp - 1, 201, "hello world!");
}

static void test_content_length_split_at_every_byte(void **state)
{
    (void)state;
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world";
    split_each(resp, 1, sizeof resp - 1, 200, "hello world");
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

/* The server sends `text`, then closes: the call ends with `want`. */
static void answer_then_close(const char *text, const char *want)
{
    start(5, NULL);
    await_request();
    send_text(text);
    turn(fx.base, 3);
    close(fx.sfd);
    fx.sfd = -1;
    await_done(2000);
    assert_ptr_equal(fx.err, want);
}

static void test_close_mid_body(void **state)
{
    (void)state;
    /* Content-Length promised 10, 5 came. */
    answer_then_close("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", http_call_err_body_eof);
    assert_string_equal(fx.call->detail, "unexpected EOF");
    /* A chunked body cut inside a chunk. */
    answer_then_close("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhel",
                      http_call_err_body_eof);
}

static void test_close_mid_head(void **state)
{
    (void)state;
    answer_then_close("HTTP/1.1 200 OK\r\nContent-Le", http_call_err_eof);
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
    fx.lfd = lo_listen(16, &(int){0}); /* for teardown */
    start(5, NULL);
    await_done(2000);
    assert_ptr_equal(fx.err, http_call_err_connect);
    char want[96];
    snprintf(want, sizeof want, "dial tcp 127.0.0.1:%d: connect: connection refused", fx.port);
    assert_string_equal(fx.call->detail, want);
}

/* A request that cannot be copied (no memory): done runs at once with
 * coldbrew_err_no_memory, nothing is dialled, and the call is reusable. */
static void test_no_memory(void **state)
{
    (void)state;
    static const char req[] = "GET / HTTP/1.1\r\n\r\n";
    volatile size_t huge = SIZE_MAX / 2; /* no allocator hands this out */
    http_call_start(fx.call, req, huge, 5, on_done, NULL);
    assert_int_equal(fx.done_calls, 1);
    assert_ptr_equal(fx.err, coldbrew_err_no_memory);
    assert_false(fx.call->running);
    assert_int_equal(fx.up.nconns, 0);
    start(5, NULL);
    await_request();
    send_text("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    await_done(2000);
    assert_null(fx.err);
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
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_head_split_at_every_byte),
        T(test_chunked_split_at_every_byte),
        T(test_content_length_split_at_every_byte),
        T(test_streamed_chunks),
        T(test_body_until_eof),
        T(test_close_mid_body),
        T(test_close_mid_head),
        T(test_garbage),
        T(test_too_large),
        T(test_timeout),
        T(test_refused),
        T(test_reuse),
        T(test_no_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
