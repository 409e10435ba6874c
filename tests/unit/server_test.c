/* Tests for common/http/server.c, in process: a listener on loopback, a raw
 * client socket, and the loop turned by hand until the answer arrives. */
#include "unit.h"

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/loop.h"
#include "http/server.h"

/* Lingering off (0) unless a test turns it on. */
static struct server_limits lim = {.max_header_bytes = 8192,
                                   .max_headers = 50,
                                   .header_timeout = 5,
                                   .watermark = 65536,
                                   .max_conns = 100};
static int hold_next; /* 1: the handler keeps the request (to test timeouts) */

static void never(struct request *req)
{
    (void)req;
}

static void on_req(struct request *req, void *arg)
{
    (void)arg;
    if (hold_next) {
        req->cancel = never;
        req->holder = req;
        request_set_timeouts(req, 0.2, 0, 0);
        return;
    }
    char body[128];
    int n = snprintf(body, sizeof body, "%.*s", (int)req->head->url.len,
                     http_str_ptr(req->head, req->head->url));
    request_reply(req, 200, "text/plain", body, (size_t)n, NULL);
}

static int port_of(struct server *s)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(s->fd, (struct sockaddr *)&ss, &sl);
    char ip[64];
    int port;
    net_peer_ip(&ss, ip, sizeof ip, &port);
    return port;
}

/* Turns the loop until `want` appears in what the client received, or EOF. */
static size_t exchange(struct event_base *base, int fd, const char *send_, char *out, size_t cap,
                       const char *want, int *eof)
{
    if (send_)
        assert_int_equal(write(fd, send_, strlen(send_)), (ssize_t)strlen(send_));
    size_t got = 0;
    *eof = 0;
    for (int i = 0; i < 400 && got < cap - 1; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        ssize_t n = recv(fd, out + got, cap - 1 - got, MSG_DONTWAIT);
        if (n > 0) {
            got += (size_t)n;
            out[got] = 0;
            if (want && strstr(out, want))
                break;
        } else if (n == 0) {
            *eof = 1;
            break;
        } else {
            usleep(1000);
        }
    }
    out[got] = 0;
    return got;
}

static int client(int port)
{
    struct net_addr a;
    net_addr_parse(&a, "127.0.0.1", port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a.ss, a.len), 0);
    return fd;
}

static struct server *fixture(struct event_base **base, int *fd);

static void test_keepalive_and_pipelining(void **state)
{
    (void)state;
    struct event_base *base;
    int fd;
    struct server *s = fixture(&base, &fd);
    char out[4096];
    int eof;
    exchange(base, fd, "GET /one HTTP/1.1\r\nHost: x\r\n\r\n", out, sizeof out, "/one", &eof);
    assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(out, "Content-Length: 4\r\n"));
    assert_null(strstr(out, "Connection: close"));
    exchange(base, fd,
             "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\nConnection: "
             "close\r\n\r\n",
             out, sizeof out, NULL, &eof);
    char *a = strstr(out, "/a"), *b = strstr(out, "/b"), *c = strstr(out, "/c");
    assert_true(a && b && c && a < b && b < c);
    assert_true(eof); /* closed after Connection: close */
    close(fd);
    server_free(s);
    loop_free();
}

/* A loop, a listener on a free loopback port, and a client connected to it. */
static struct server *fixture(struct event_base **base, int *fd)
{
    *base = loop_init();
    const char *err;
    struct server *s = server_open(*base, "t", "127.0.0.1", 0, &lim, on_req, NULL, &err);
    assert_non_null(s);
    *fd = client(port_of(s));
    return s;
}

static void test_bad_request_closes(void **state)
{
    (void)state;
    struct event_base *base;
    int fd;
    struct server *s = fixture(&base, &fd);
    char out[4096];
    int eof;
    exchange(base, fd, "BAD\r\n\r\nGET / HTTP/1.1\r\n\r\n", out, sizeof out, NULL, &eof);
    assert_true(strncmp(out, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    assert_null(strstr(out + 10, "HTTP/1.1"));
    assert_true(eof);
    close(fd);
    server_free(s);
    loop_free();
}

static void test_request_timeout_504(void **state)
{
    (void)state;
    struct event_base *base;
    int fd;
    struct server *s = fixture(&base, &fd);
    char out[4096];
    int eof;
    hold_next = 1;
    exchange(base, fd, "GET /slow HTTP/1.1\r\n\r\n", out, sizeof out, "request timeout", &eof);
    hold_next = 0;
    assert_true(strncmp(out, "HTTP/1.1 504 Gateway Timeout\r\n", 30) == 0);
    assert_non_null(strstr(out, "\r\n\r\nrequest timeout"));
    /* The connection stays usable. */
    exchange(base, fd, "GET /after HTTP/1.1\r\n\r\n", out, sizeof out, "/after", &eof);
    assert_non_null(strstr(out, "200 OK"));
    close(fd);
    server_free(s);
    loop_free();
}

/* ---- lingering close: a client that writes its whole request before reading */

#define CLTE_HEAD                                                                                  \
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\nTransfer-Encoding: "                 \
    "chunked\r\n\r\n"

static struct server *linger_fixture(struct event_base **base, int *fd, double time, double timeout,
                                     uint64_t bytes)
{
    lim.linger_time = time;
    lim.linger_timeout = timeout;
    lim.linger_bytes = bytes;
    return fixture(base, fd);
}

static void linger_done(struct server *s, int fd)
{
    close(fd);
    server_free(s);
    loop_free();
    lim.linger_time = 0;
}

/* Writes `total` body bytes without reading, turning the loop between tries;
 * returns bytes written before an error (errno set) or all of them. */
static size_t write_body(struct event_base *base, int fd, size_t total, int pace_us, int *err)
{
    static char chunk[65536];
    size_t sent = 0;
    *err = 0;
    for (int i = 0; i < 20000 && sent < total; i++) {
        size_t want = total - sent < sizeof chunk ? total - sent : sizeof chunk;
        ssize_t n = send(fd, chunk, want, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0)
            sent += (size_t)n;
        else if (n < 0 && errno != EAGAIN) {
            *err = errno;
            break;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        if (pace_us)
            usleep((useconds_t)pace_us);
    }
    return sent;
}

/* Turns the loop until the server has no lingering connection (or ~2 s). */
static void until_no_linger(struct event_base *base, struct server *s)
{
    for (int i = 0; i < 2000 && server_lingering(s); i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
}

static void test_linger_answer_reaches_a_writing_client(void **state)
{
    (void)state;
    struct event_base *base;
    int fd;
    struct server *s = linger_fixture(&base, &fd, 30, 5, 64 << 20);
    assert_int_equal(write(fd, CLTE_HEAD, strlen(CLTE_HEAD)), (ssize_t)strlen(CLTE_HEAD));
    int err;
    /* 4 MiB is far more than both socket buffers: without the linger the
     * server's close() resets the connection and this write fails. */
    assert_int_equal(write_body(base, fd, 4 << 20, 0, &err), 4 << 20);
    assert_int_equal(err, 0);
    char out[4096];
    int eof;
    exchange(base, fd, NULL, out, sizeof out, NULL, &eof);
    assert_true(strncmp(out, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    assert_non_null(strstr(out, "Connection: close\r\n"));
    assert_true(eof); /* the server shut its side after the answer */
    assert_int_equal(server_lingering(s), 1);
    close(fd); /* the client's FIN ends the linger */
    fd = -1;
    until_no_linger(base, s);
    assert_int_equal(server_lingering(s), 0);
    assert_int_equal(s->nconns, 0);
    linger_done(s, fd);
}

static void test_linger_cut_at_lingering_time(void **state)
{
    (void)state;
    struct event_base *base;
    int fd;
    struct server *s = linger_fixture(&base, &fd, 0.3, 5, 1ull << 40);
    assert_int_equal(write(fd, CLTE_HEAD, strlen(CLTE_HEAD)), (ssize_t)strlen(CLTE_HEAD));
    uint64_t t0 = clock_now_ns();
    int err;
    write_body(base, fd, (size_t)1 << 40, 2000, &err); /* never stops on its own */
    double took = (double)(clock_now_ns() - t0) / 1e9;
    assert_true(err == ECONNRESET || err == EPIPE);
    assert_true(took > 0.25 && took < 2.0);
    assert_int_equal(server_lingering(s), 0);
    linger_done(s, fd);
}

static void test_linger_cut_at_silence_and_bytes(void **state)
{
    (void)state;
    struct event_base *base;
    int fd;
    /* Silent client: cut at the 0.1 s timeout, well before the 30 s total. */
    struct server *s = linger_fixture(&base, &fd, 30, 0.1, 64 << 20);
    assert_int_equal(write(fd, CLTE_HEAD "abc", strlen(CLTE_HEAD) + 3),
                     (ssize_t)strlen(CLTE_HEAD) + 3);
    char out[4096];
    int eof;
    exchange(base, fd, NULL, out, sizeof out, NULL, &eof);
    assert_true(eof);
    assert_int_equal(server_lingering(s), 1);
    until_no_linger(base, s);
    assert_int_equal(server_lingering(s), 0);
    linger_done(s, fd);
    /* Byte cap: cut after 64 KiB of a 4 MiB body. */
    s = linger_fixture(&base, &fd, 30, 5, 65536);
    assert_int_equal(write(fd, CLTE_HEAD, strlen(CLTE_HEAD)), (ssize_t)strlen(CLTE_HEAD));
    int err;
    size_t sent = write_body(base, fd, 4 << 20, 0, &err);
    assert_true(err == ECONNRESET || err == EPIPE);
    assert_true(sent < (4 << 20));
    assert_int_equal(server_lingering(s), 0);
    linger_done(s, fd);
}

int main(void)
{
    log_set_level("error");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keepalive_and_pipelining),
        cmocka_unit_test(test_bad_request_closes),
        cmocka_unit_test(test_request_timeout_504),
        cmocka_unit_test(test_linger_answer_reaches_a_writing_client),
        cmocka_unit_test(test_linger_cut_at_lingering_time),
        cmocka_unit_test(test_linger_cut_at_silence_and_bytes),
    };
    int r = cmocka_run_group_tests_name("server", tests, NULL, NULL);
    http_head_pool_drain();
    return r;
}
