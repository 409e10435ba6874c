/* Tests for common/server.c, in process: a listener on loopback, a raw
 * client socket, and the loop turned by hand until the answer arrives. */
#include "unit.h"

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "server.h"

static struct server_limits lim = {8192, 50, 5, 65536, 100};
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

int main(void)
{
    log_set_level("error");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keepalive_and_pipelining),
        cmocka_unit_test(test_bad_request_closes),
        cmocka_unit_test(test_request_timeout_504),
    };
    int r = cmocka_run_group_tests_name("server", tests, NULL, NULL);
    http_head_pool_drain();
    return r;
}
