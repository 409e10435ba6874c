/* Tests for common/cluster/ws_client.c: the 101 read by llhttp (split at every
 * byte, refused when bad, then retried), frames that come with the 101,
 * frames in pieces both ways. The test plays the autoscaler: a listening
 * socket on loopback, written to by hand. */
#include "unit.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/h1_parser.h"
#include "http/http_head.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/net.h"
#include "cluster/ws_client.h"
#include "cluster/ws_io.h"
#include "ws_test_util.h"

struct fixture {
    struct event_base *base;
    int lfd, port;
    struct ws_client *ws;
    int opens, closes;
};

static void on_state(void *arg, bool open)
{
    struct fixture *f = arg;
    if (open)
        f->opens++;
    else
        f->closes++;
}

static int setup(void **state)
{
    static struct fixture f;
    memset(&f, 0, sizeof f);
    f.base = loop_init();
    f.lfd = net_listen("127.0.0.1", 0, 16);
    assert_true(f.lfd >= 0);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(f.lfd, (struct sockaddr *)&ss, &sl);
    char ip[64];
    net_peer_ip(&ss, ip, sizeof ip, &f.port);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    ws_client_free(f->ws);
    close(f->lfd);
    event_base_free(f->base);
    return 0;
}

static void start(struct fixture *f)
{
    char url[64], err[128];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/stats", f->port);
    f->ws = ws_client_new(f->base, url, on_state, f, err, sizeof err);
    assert_non_null(f->ws);
    ws_client_start(f->ws);
}

/* The client's next connection (the loop turns while waiting). */
static int accept_client(struct fixture *f, int ms)
{
    for (int i = 0; i < ms; i++) {
        int fd = accept4(f->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0)
            return fd;
        turn(f->base, 1);
    }
    return -1;
}

/* Reads the upgrade request, checks it with llhttp, and writes the 101's
 * head for its key into resp. Returns the head's length. */
static size_t read_request(struct fixture *f, int fd, char *resp, size_t cap)
{
    char buf[2048] = "";
    size_t got = 0;
    for (int i = 0; i < 2000 && !strstr(buf, "\r\n\r\n"); i++) {
        got += read_some(f->base, fd, buf + got, sizeof buf - 1 - got, 1, 1, NULL);
        buf[got] = 0;
    }
    struct h1_parser p;
    struct http_head *h = http_head_acquire();
    h1_parser_init(&p, true, 8192, 64);
    h1_parser_begin(&p, h);
    struct evbuffer *in = evbuffer_new();
    evbuffer_add(in, buf, got);
    assert_int_equal(h1_parse_head(&p, in), H1_HEAD);
    assert_int_equal(evbuffer_get_length(in), 0); /* nothing after the head */
    evbuffer_free(in);
    assert_int_equal(h->method, HTTP_GET);
    assert_int_equal(h->url.len, 6);
    assert_memory_equal(http_str_ptr(h, h->url), "/stats", 6);
    assert_true(ws_head_has_token(h, "upgrade", "websocket"));
    assert_true(ws_head_has_token(h, "connection", "upgrade"));
    assert_true(ws_head_value_is(h, "sec-websocket-version", "13"));
    size_t klen;
    const char *key = http_head_get(h, "sec-websocket-key", &klen);
    assert_non_null(key);
    assert_true(ws_key_is_valid(key, klen));
    char k[32], accept[40];
    snprintf(k, sizeof k, "%.*s", (int)klen, key);
    ws_accept_value(k, accept);
    http_head_release(h);
    return (size_t)snprintf(resp, cap,
                            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                            accept);
}

/* The 101 split at every byte, with a ping right behind it: the client opens
 * once the head is complete, not before, and answers the ping that came in
 * the same bytes as the head. */
static void test_handshake_split_at_every_byte(void **state)
{
    struct fixture *f = *state;
    char resp[512];
    for (size_t k = 0;; k++) {
        /* A fresh client each time: a dropped link would wait its backoff. */
        start(f);
        int fd = accept_client(f, 1000);
        assert_true(fd >= 0);
        size_t head = read_request(f, fd, resp, sizeof resp);
        size_t n = head + ws_frame((uint8_t *)resp + head, true, 9, false, "hi", 2);
        if (k > n) {
            close(fd);
            break;
        }
        int opens = f->opens;
        assert_true(write_all(fd, resp, k));
        turn(f->base, 2);
        if (ws_client_is_open(f->ws) != (k >= head))
            fail_msg("split at %zu of %zu: open %d", k, head, ws_client_is_open(f->ws));
        assert_true(write_all(fd, resp + k, n - k));
        turn(f->base, 2);
        assert_true(ws_client_is_open(f->ws));
        assert_int_equal(f->opens, opens + 1);
        assert_int_equal(ws_client_connects(f->ws), 1);
        /* The pong (masked, as from a client): 0x8a, 0x80|2, key, "hi" masked. */
        uint8_t got[16];
        assert_int_equal(read_some(f->base, fd, got, sizeof got, 8, 1000, NULL), 8);
        assert_int_equal(got[0], 0x8a);
        assert_int_equal(got[1], 0x82);
        assert_int_equal(got[6] ^ got[2], 'h');
        assert_int_equal(got[7] ^ got[3], 'i');
        /* Dropped: the link goes down. */
        shutdown(fd, SHUT_RDWR);
        for (int i = 0; i < 500 && ws_client_is_open(f->ws); i++)
            turn(f->base, 1);
        assert_false(ws_client_is_open(f->ws));
        assert_int_equal(f->closes, f->opens);
        close(fd);
        ws_client_free(f->ws);
        f->ws = NULL;
    }
    assert_true(f->opens > 100);
}

/* Frames in pieces, both ways: a ping written a byte at a time is answered
 * once, when complete; a message larger than the socket buffers goes out in
 * partial writes and arrives whole. */
static void test_partial_frames(void **state)
{
    struct fixture *f = *state;
    start(f);
    int fd = accept_client(f, 1000);
    char resp[512];
    size_t n = read_request(f, fd, resp, sizeof resp);
    assert_true(write_all(fd, resp, n));
    turn(f->base, 3);
    assert_true(ws_client_is_open(f->ws));
    uint8_t frame[32], got[65536];
    size_t fl = ws_frame(frame, true, 9, false, "abc", 3);
    for (size_t i = 0; i < fl; i++) {
        assert_true(write_all(fd, frame + i, 1));
        turn(f->base, 1);
        if (i + 1 < fl)
            assert_true(read(fd, got, sizeof got) < 0); /* no pong for part of a ping */
    }
    assert_int_equal(read_some(f->base, fd, got, sizeof got, 9, 1000, NULL), 9);
    assert_int_equal(got[0], 0x8a);
    /* 4 MiB out: far more than the loopback buffers take at once. */
    size_t big = 4u << 20;
    uint8_t *msg = malloc(big);
    for (size_t i = 0; i < big; i++)
        msg[i] = (uint8_t)(i * 7);
    assert_true(ws_client_send_binary(f->ws, msg, big));
    /* Read it back slowly, a piece at a time, while the loop turns. */
    uint8_t *all = malloc(big + 16);
    size_t have = 0;
    for (int i = 0; i < 20000 && have < big + 14; i++)
        have += read_some(f->base, fd, all + have,
                          big + 16 - have < 65536 ? big + 16 - have : 65536, 1, 1, NULL);
    assert_int_equal(have, big + 14); /* 2 + 8 (64-bit length) + 4 (mask) */
    assert_int_equal(all[0], 0x82);
    assert_int_equal(all[1], 0x80 | 127);
    const uint8_t *key = all + 10;
    for (size_t i = 0; i < big; i++)
        if ((all[14 + i] ^ key[i % 4]) != msg[i])
            fail_msg("byte %zu differs", i);
    free(msg);
    free(all);
    /* A close from the server: answered, and the link goes down. */
    fl = ws_frame(frame, true, 8, false, "\x03\xe8", 2);
    assert_true(write_all(fd, frame, fl));
    for (int i = 0; i < 500 && ws_client_is_open(f->ws); i++)
        turn(f->base, 1);
    assert_false(ws_client_is_open(f->ws));
    assert_int_equal(f->closes, 1);
    close(fd);
}

/* A bad 101 is refused (the link never opens) and the client dials again. */
static void test_bad_handshake_refused(void **state)
{
    struct fixture *f = *state;
    start(f);
    static const char *const bad[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        "%s\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: close\r\n"
        "Sec-WebSocket-Accept: %s\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        /* The right value inside another header must not do. */
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "X-Sec-WebSocket-Accept: %s\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: %sx\r\n\r\n",
        "SSH-2.0-OpenSSH_9.2\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nX-Big: %s%09000d\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n", /* then closed */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int fd = accept_client(f, 2000); /* the retry comes within its backoff */
        if (fd < 0)
            fail_msg("case %zu: no connection", i);
        char good[512], resp[12000];
        read_request(f, fd, good, sizeof good);
        const char *acc = strstr(good, "Accept: ") + 8;
        char a[40];
        snprintf(a, sizeof a, "%.28s", acc);
        int n = snprintf(resp, sizeof resp, bad[i], a, 0);
        assert_true(write_all(fd, resp, (size_t)n));
        if (i == sizeof bad / sizeof bad[0] - 1)
            shutdown(fd, SHUT_WR);
        bool eof = false;
        char sink[256];
        for (int j = 0; j < 10 && !eof; j++)
            read_some(f->base, fd, sink, sizeof sink, sizeof sink, 100, &eof);
        if (!eof)
            fail_msg("case %zu: the client kept the connection", i);
        assert_false(ws_client_is_open(f->ws));
        assert_int_equal(f->opens, 0);
        close(fd);
    }
    assert_int_equal(ws_client_connects(f->ws), 0);
}

int main(void)
{
    log_set_level("error");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_handshake_split_at_every_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_handshake_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
