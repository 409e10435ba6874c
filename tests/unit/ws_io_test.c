/* Tests for common/cluster/ws_io.c: the socket side of a wslay context (bytes left
 * over from the upgrade come first, EAGAIN means wait, EOF means gone,
 * partial writes resume) and the handshake checks on llhttp-parsed heads. */
#include "unit.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/h1_parser.h"
#include "http/http_head.h"
#include "cluster/ws_io.h"
#include "ws_test_util.h"

/* A wslay server context on one end of a socketpair, `early` in front. */
struct pipe_ctx {
    int fd, peer;
    struct evbuffer *early;
    wslay_event_context_ptr ctx;
    int messages;
    size_t last_len;
    uint8_t last[16];
};

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    struct pipe_ctx *p = user;
    return ws_io_recv(ctx, p->fd, p->early, buf, len);
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    (void)flags;
    struct pipe_ctx *p = user;
    return ws_io_send(ctx, p->fd, data, len);
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    (void)ctx;
    struct pipe_ctx *p = user;
    if (arg->opcode != WSLAY_BINARY_FRAME)
        return;
    p->messages++;
    p->last_len = arg->msg_length < sizeof p->last ? arg->msg_length : sizeof p->last;
    memcpy(p->last, arg->msg, p->last_len);
}

static const struct wslay_event_callbacks callbacks = {on_recv, on_send, NULL,  NULL,
                                                       NULL,    NULL,    on_msg};

static void pipe_open(struct pipe_ctx *p)
{
    memset(p, 0, sizeof *p);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    p->fd = sv[0];
    p->peer = sv[1];
    p->early = evbuffer_new();
    assert_int_equal(wslay_event_context_server_init(&p->ctx, &callbacks, p), 0);
}

static void pipe_close(struct pipe_ctx *p)
{
    wslay_event_context_free(p->ctx);
    evbuffer_free(p->early);
    close(p->fd);
    if (p->peer >= 0)
        close(p->peer);
}

/* Half a frame left over from the handshake, the rest on the socket: one
 * message; an empty socket is "would block", not an error. */
static void test_early_bytes_first_then_socket(void **state)
{
    (void)state;
    struct pipe_ctx p;
    pipe_open(&p);
    uint8_t frame[32];
    size_t fl = ws_frame(frame, true, 2, true, "hello", 5);
    evbuffer_add(p.early, frame, 3);
    assert_int_equal(wslay_event_recv(p.ctx), 0);
    assert_int_equal(p.messages, 0);
    assert_int_equal(evbuffer_get_length(p.early), 0);
    assert_true(write_all(p.peer, frame + 3, fl - 3));
    assert_int_equal(wslay_event_recv(p.ctx), 0);
    assert_int_equal(p.messages, 1);
    assert_memory_equal(p.last, "hello", 5);
    /* Nothing more: wslay hears WOULDBLOCK and stays ready to read. */
    assert_int_equal(wslay_event_recv(p.ctx), 0);
    assert_true(wslay_event_want_read(p.ctx));
    /* One byte at a time from the socket, a recv per byte. */
    for (size_t i = 0; i < fl; i++) {
        assert_int_equal(p.messages, 1);
        assert_true(write_all(p.peer, frame + i, 1));
        assert_int_equal(wslay_event_recv(p.ctx), 0);
    }
    assert_int_equal(p.messages, 2);
    /* The peer gone: an error, so the owner tears the link down. */
    close(p.peer);
    p.peer = -1;
    assert_int_equal(wslay_event_recv(p.ctx), WSLAY_ERR_CALLBACK_FAILURE);
    pipe_close(&p);
}

/* A message larger than the socket buffer goes out in partial writes:
 * wslay_event_send stops at EAGAIN, wants to write again, and resumes where
 * it stopped. */
static void test_partial_writes_resume(void **state)
{
    (void)state;
    struct pipe_ctx p;
    pipe_open(&p);
    int small = 4096;
    setsockopt(p.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    size_t big = 1u << 20;
    uint8_t *msg = malloc(big), *got = malloc(big + 16);
    for (size_t i = 0; i < big; i++)
        msg[i] = (uint8_t)(i * 13);
    struct wslay_event_msg m = {WSLAY_BINARY_FRAME, msg, big};
    assert_int_equal(wslay_event_queue_msg(p.ctx, &m), 0);
    size_t have = 0;
    int rounds = 0;
    for (; rounds < 100000 && have < big + 10; rounds++) {
        assert_int_equal(wslay_event_send(p.ctx), 0);
        ssize_t r = read(p.peer, got + have, big + 16 - have);
        if (r > 0)
            have += (size_t)r;
    }
    assert_int_equal(have, big + 10); /* 2 + 8 (64-bit length), unmasked from a server */
    assert_true(rounds > 2);          /* it did take several partial writes */
    assert_false(wslay_event_want_write(p.ctx));
    assert_int_equal(got[0], 0x82);
    assert_memory_equal(got + 10, msg, big);
    free(msg);
    free(got);
    pipe_close(&p);
}

static struct http_head *parse(const char *text, bool request)
{
    struct h1_parser p;
    struct http_head *h = http_head_acquire();
    h1_parser_init(&p, request, 8192, 64);
    h1_parser_begin(&p, h);
    struct evbuffer *in = evbuffer_new();
    evbuffer_add(in, text, strlen(text));
    assert_int_equal(h1_parse_head(&p, in), H1_HEAD);
    evbuffer_free(in);
    return h;
}

static void test_head_checks(void **state)
{
    (void)state;
    struct http_head *h = parse("GET / HTTP/1.1\r\nConnection: keep-alive\r\nUpgrade: foo, "
                                "WebSocket\r\nconnection:  Upgrade \r\nX: 13\r\n"
                                "Sec-WebSocket-Version: 13 \r\n\r\n",
                                true);
    assert_true(ws_head_has_token(h, "connection", "upgrade")); /* in the second header */
    assert_true(ws_head_has_token(h, "upgrade", "websocket"));
    assert_false(ws_head_has_token(h, "upgrade", "web"));
    assert_false(ws_head_has_token(h, "x-missing", "upgrade"));
    assert_true(ws_head_value_is(h, "sec-websocket-version", "13")); /* trailing space trimmed */
    assert_false(ws_head_value_is(h, "sec-websocket-version", "1"));
    assert_false(ws_head_value_is(h, "sec-websocket-key", ""));
    http_head_release(h);
    h = parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
              false);
    assert_int_equal(h->status, 101);
    assert_true(ws_head_value_is(h, "Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    http_head_release(h);
    assert_true(ws_key_is_valid("dGhlIHNhbXBsZSBub25jZQ==", 24));
    assert_false(ws_key_is_valid("dGhlIHNhbXBsZSBub25jZQ=", 23));
    assert_false(ws_key_is_valid("dGhlIHNhbXBsZSBub25jZQ==x", 25));
    assert_false(ws_key_is_valid("dGhlIHNhbXBsZSBub25jZ*==", 24));
    assert_false(ws_key_is_valid("dGhlIHNhbXBsZSBub25jZQAA", 24)); /* 18 bytes, not 16 */
}

/* The head limit is a setting; read once. */
static void test_max_handshake_setting(void **state)
{
    (void)state;
    setenv("COLDBREW_WS_MAX_HANDSHAKE_BYTES", "4096", 1);
    assert_int_equal(ws_max_handshake_bytes(), 4096);
    setenv("COLDBREW_WS_MAX_HANDSHAKE_BYTES", "100000", 1);
    assert_int_equal(ws_max_handshake_bytes(), 4096);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_early_bytes_first_then_socket),
        cmocka_unit_test(test_partial_writes_resume),
        cmocka_unit_test(test_head_checks),
        cmocka_unit_test(test_max_handshake_setting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
