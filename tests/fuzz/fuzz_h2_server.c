/* libFuzzer target: the HTTP/2 server path (common/http/h2_server.c): bytes in
 * -> nghttp2 (preface, frames, HPACK, flow control) -> streams with
 * semantic heads -> an application that answers each one, echoing the
 * request body and ending with trailers, or resetting it.
 *
 * Input: byte 0 bit 0 set = the client preface and an empty SETTINGS frame
 * are prepended (so the fuzzer reaches the frames at once); bit 1 = the
 * application answers at once instead of echoing the body. The rest is what
 * the client sends, in slices, then it half-closes; the loop runs until the
 * connection is gone or goes quiet. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/h2_server.h"
#include "http/http_head.h"
#include "core/log.h"
#include "core/loop.h"

static bool answer_at_once, gone;

static void on_body(struct h2_stream *s)
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
        struct h2_header_out t[] = {{"grpc-status", "0", 11, 1}};
        h2_stream_end(s, t, 1);
    }
}

static void on_cancel(struct h2_stream *s)
{
    (void)s;
}

static void on_request(struct h2_stream *s, void *arg)
{
    (void)arg;
    if (answer_at_once || s->head->url.len == 1) {
        h2_stream_reply(s, 200, "text/plain", "ok", 2);
        return;
    }
    if (s->head->url.len == 2) {
        h2_stream_reset(s, 2);
        return;
    }
    s->cancel = on_cancel;
    s->on_input = on_body;
    h2_stream_respond(s, 200, NULL, 0, false);
    on_body(s);
}

static void on_close(struct h2_conn *c, void *arg)
{
    (void)c, (void)arg;
    gone = true;
}

static const struct h2_server_ops ops = {on_request, on_close};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct event_base *base;
    static struct h2_limits lim;
    if (!base) {
        base = loop_init();
        log_set_level("fatal");
        h2_limits_from_env(&lim, 4096, 50, 65536);
    }
    if (size < 1)
        return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv))
        return 0;
    answer_at_once = data[0] & 2;
    bool preface = data[0] & 1;
    data++, size--;
    gone = false;
    struct evbuffer *pre = evbuffer_new();
    if (preface)
        evbuffer_add(pre, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\4\0\0\0\0\0", 33);
    h2_conn_new(base, sv[0], "fuzz", 0, &lim, &ops, NULL, pre);
    evbuffer_free(pre);
    size_t off = 0;
    for (int i = 0; i < 200 && !gone; i++) {
        char sink[65536];
        while (read(sv[1], sink, sizeof sink) > 0) /* a client that reads its answers */
            ;
        if (off < size) {
            size_t n = size - off < 1024 ? size - off : 1024;
            ssize_t w = write(sv[1], data + off, n);
            off += w > 0 ? (size_t)w : 0;
        } else if (off == size) {
            shutdown(sv[1], SHUT_WR);
            off++;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        loop_flush_deferred();
    }
    close(sv[1]);
    /* Whatever is left closes with the peer gone. */
    for (int i = 0; i < 20 && !gone; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    loop_flush_deferred();
    if (!gone)
        __builtin_trap(); /* a connection that outlives its peer leaks */
    return 0;
}
