/* Tests for common/cluster/ws_server.c: the upgrade request parsed by llhttp (split
 * at every byte, refused when bad, with gorilla's statuses), frames that
 * arrive with the head, in pieces, fragmented. The server runs in a real
 * libevent loop on one end of a socketpair; the test is the client. */
#include "unit.h"

#include <event2/event.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "cluster/ws_server.h"
#include "ws_test_util.h"

/* RFC 6455 1.3's example key and its accept value. */
#define KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static const char hs[] = "GET /stats HTTP/1.1\r\nHost: autoscaler\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: " KEY "\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n";

static int messages;
static char last[70000];
static size_t last_len;

static void on_message(void *arg, const uint8_t *data, size_t len)
{
    (void)arg;
    messages++;
    last_len = len < sizeof last ? len : sizeof last;
    memcpy(last, data, last_len);
}

struct fixture {
    struct event_base *base;
    struct ws_server *srv;
};

static int setup(void **state)
{
    static struct fixture f;
    f.base = loop_init();
    const char *err = NULL;
    f.srv = ws_server_open(f.base, "127.0.0.1", 0, on_message, NULL, &err);
    assert_non_null(f.srv);
    messages = 0;
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    ws_server_free(f->srv);
    event_base_free(f->base);
    return 0;
}

/* A connected client end, served by the server. */
static int client(struct fixture *f)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    ws_server_adopt(f->srv, sv[0]);
    return sv[1];
}

/* Reads the server's answer head (up to the blank line). */
static void read_head(struct fixture *f, int fd, char *buf, size_t cap)
{
    size_t got = 0;
    for (int i = 0; i < 2000 && !strstr(buf, "\r\n\r\n"); i++) {
        got += read_some(f->base, fd, buf + got, cap - 1 - got, 1, 1, NULL);
        buf[got] = 0;
    }
}

static void test_handshake_split_at_every_byte(void **state)
{
    struct fixture *f = *state;
    size_t n = sizeof hs - 1;
    uint8_t frame[64];
    size_t fl = ws_frame(frame, true, 2, true, "hello", 5);
    for (size_t k = 0; k <= n; k++) {
        messages = 0;
        int fd = client(f);
        assert_true(write_all(fd, hs, k));
        turn(f->base, 2);
        char buf[512] = "";
        if (k < n)
            assert_true(read(fd, buf, sizeof buf) < 0); /* nothing before the whole head */
        assert_int_equal(ws_server_clients(f->srv), 1);
        /* The rest of the head and a first frame in one write: the frame
         * waits in the input buffer and must not be lost. */
        uint8_t rest[512];
        memcpy(rest, hs + k, n - k);
        memcpy(rest + n - k, frame, fl);
        assert_true(write_all(fd, rest, n - k + fl));
        read_head(f, fd, buf, sizeof buf);
        if (strncmp(buf, "HTTP/1.1 101 ", 13) ||
            !strstr(buf, "\r\nSec-WebSocket-Accept: " ACCEPT "\r\n"))
            fail_msg("split at %zu: %s", k, buf);
        assert_non_null(strstr(buf, "\r\nUpgrade: websocket\r\n"));
        turn(f->base, 2);
        assert_int_equal(messages, 1);
        assert_int_equal(last_len, 5);
        assert_memory_equal(last, "hello", 5);
        close(fd);
        turn(f->base, 3);
        assert_int_equal(ws_server_clients(f->srv), 0);
    }
}

static int open_client(struct fixture *f)
{
    int fd = client(f);
    assert_true(write_all(fd, hs, sizeof hs - 1));
    char buf[512] = "";
    read_head(f, fd, buf, sizeof buf);
    assert_int_equal(strncmp(buf, "HTTP/1.1 101 ", 13), 0);
    return fd;
}

static void test_partial_frames(void **state)
{
    struct fixture *f = *state;
    int fd = open_client(f);
    /* A frame written one byte at a time: one message, once, when complete.
     * 300 bytes: the 16-bit length form, so the header itself is split. */
    char payload[300];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (char)('a' + i % 26);
    uint8_t frame[400];
    size_t fl = ws_frame(frame, true, 2, true, payload, sizeof payload);
    for (size_t i = 0; i < fl; i++) {
        assert_int_equal(messages, 0);
        assert_true(write_all(fd, frame + i, 1));
        turn(f->base, 1);
    }
    turn(f->base, 2);
    assert_int_equal(messages, 1);
    assert_int_equal(last_len, sizeof payload);
    assert_memory_equal(last, payload, sizeof payload);
    /* A fragmented message (text "ab" + continuation "cd") is one message. */
    uint8_t two[64];
    size_t a = ws_frame(two, false, 1, true, "ab", 2);
    a += ws_frame(two + a, true, 0, true, "cd", 2);
    assert_true(write_all(fd, two, a));
    turn(f->base, 3);
    assert_int_equal(messages, 2);
    assert_int_equal(last_len, 4);
    assert_memory_equal(last, "abcd", 4);
    /* Two whole frames in one write: two messages. */
    a = ws_frame(two, true, 2, true, "x", 1);
    a += ws_frame(two + a, true, 2, true, "yz", 2);
    assert_true(write_all(fd, two, a));
    turn(f->base, 3);
    assert_int_equal(messages, 4);
    assert_memory_equal(last, "yz", 2);
    /* A ping is answered with a pong carrying its payload. */
    a = ws_frame(two, true, 9, true, "p", 1);
    assert_true(write_all(fd, two, a));
    uint8_t got[16];
    size_t n = read_some(f->base, fd, got, sizeof got, 3, 500, NULL);
    assert_int_equal(n, 3);
    assert_int_equal(got[0], 0x8a);
    assert_int_equal(got[1], 1);
    assert_int_equal(got[2], 'p');
    /* A close is answered and the connection dropped. */
    a = ws_frame(two, true, 8, true, "\x03\xe8", 2);
    assert_true(write_all(fd, two, a));
    bool eof = false;
    n = read_some(f->base, fd, got, sizeof got, sizeof got, 1000, &eof);
    assert_true(n >= 2 && got[0] == 0x88);
    read_some(f->base, fd, got, sizeof got, sizeof got, 1000, &eof);
    assert_true(eof);
    assert_int_equal(ws_server_clients(f->srv), 0);
    close(fd);
}

/* A client frame without the mask bit is a protocol error (RFC 6455 5.1). */
static void test_unmasked_frame_closes(void **state)
{
    struct fixture *f = *state;
    int fd = open_client(f);
    uint8_t frame[16];
    size_t fl = ws_frame(frame, true, 2, false, "no", 2);
    assert_true(write_all(fd, frame, fl));
    bool eof = false;
    uint8_t got[64];
    for (int i = 0; i < 5 && !eof; i++)
        read_some(f->base, fd, got, sizeof got, sizeof got, 200, &eof);
    assert_true(eof);
    assert_int_equal(messages, 0);
    close(fd);
}

static void expect_status(struct fixture *f, const char *req, size_t len, const char *status,
                          const char *header)
{
    int fd = client(f);
    assert_true(write_all(fd, req, len));
    char buf[1024] = "";
    read_head(f, fd, buf, sizeof buf);
    if (strncmp(buf, status, strlen(status)))
        fail_msg("want %s for\n%.*s\ngot: %s", status, (int)(len > 300 ? 300 : len), req, buf);
    if (header && !strstr(buf, header))
        fail_msg("no %s in %s", header, buf);
    if (strncmp(status, "HTTP/1.1 101", 12)) {
        bool eof = false;
        char sink[256];
        for (int i = 0; i < 5 && !eof; i++)
            read_some(f->base, fd, sink, sizeof sink, sizeof sink, 200, &eof);
        assert_true(eof); /* refused: closed */
        assert_int_equal(ws_server_clients(f->srv), 0);
    }
    close(fd);
    turn(f->base, 3);
}

#define REQ(method, ver, extra) method " / HTTP/" ver "\r\nHost: a\r\n" extra "\r\n"
#define GOOD_HEADERS                                                                               \
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " KEY                         \
    "\r\nSec-WebSocket-Version: 13\r\n"

static void test_bad_handshake_refused(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *req, *status, *header;
    } t[] = {
        /* Accepted spellings: token lists, any case. */
        {REQ("GET", "1.1",
             "Upgrade: WebSocket\r\nConnection: keep-alive, upgrade\r\n"
             "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n"),
         "HTTP/1.1 101", NULL},
        {REQ("GET", "1.1",
             "Upgrade: websocket\r\nConnection: keep-alive\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n"),
         "HTTP/1.1 101", NULL},
        /* Refused. */
        {REQ("GET", "1.1",
             "Upgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Key: " KEY
             "\r\nSec-WebSocket-Version: 13\r\n"),
         "HTTP/1.1 400", NULL},
        {REQ("GET", "1.1",
             "Upgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " KEY
             "\r\nSec-WebSocket-Version: 13\r\n"),
         "HTTP/1.1 400", NULL},
        /* "websocket" only inside another header must not do. */
        {REQ("GET", "1.1",
             "X-Note: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " KEY
             "\r\nSec-WebSocket-Version: 13\r\n"),
         "HTTP/1.1 400", NULL},
        {REQ("POST", "1.1", GOOD_HEADERS), "HTTP/1.1 405", NULL},
        {REQ("GET", "1.0", GOOD_HEADERS), "HTTP/1.1 400", NULL},
        {REQ("GET", "1.1",
             "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " KEY
             "\r\nSec-WebSocket-Version: 12\r\n"),
         "HTTP/1.1 400", "\r\nSec-WebSocket-Version: 13\r\n"},
        {REQ("GET", "1.1",
             "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " KEY "\r\n"),
         "HTTP/1.1 400", "\r\nSec-WebSocket-Version: 13\r\n"},
        {REQ("GET", "1.1",
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Version: 13\r\n"),
         "HTTP/1.1 400", NULL},
        {REQ("GET", "1.1",
             "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: abc\r\n"
             "Sec-WebSocket-Version: 13\r\n"),
         "HTTP/1.1 400", NULL},
        {REQ("GET", "1.1", GOOD_HEADERS "Content-Length: 3\r\n"), "HTTP/1.1 400", NULL},
        {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n", "HTTP/1.1 400", NULL}, /* a TLS hello */
        {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "HTTP/1.1 400", NULL},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        expect_status(f, t[i].req, strlen(t[i].req), t[i].status, t[i].header);
    /* Heads past COLDBREW_WS_MAX_HANDSHAKE_BYTES (8 KiB): 431, whether the
     * parser holds the bytes (a long header) or not (a flood of blank-ish
     * folding), and whether or not the head ever ends. */
    char big[12000];
    int n =
        snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX-Big: %0*d\r\n" GOOD_HEADERS "\r\n", 9000, 0);
    expect_status(f, big, (size_t)n, "HTTP/1.1 431", NULL);
    n = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX-Big: %0*d", 9000, 0);
    expect_status(f, big, (size_t)n, "HTTP/1.1 431", NULL);
    n = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX-Big: a%*sb\r\n", 9000, "");
    expect_status(f, big, (size_t)n, "HTTP/1.1 431", NULL);
}

int main(void)
{
    log_set_level("error");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_handshake_split_at_every_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unmasked_frame_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_handshake_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
