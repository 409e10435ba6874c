/* h2_wire.h — what both HTTP/2 codecs share: a socket driven by one
 * nghttp2 session, and the outgoing body of a stream.
 *
 * The server side (h2_server.c) and the client side (h2_client.c) differ in
 * who opens streams and what a stream means to the application; how bytes
 * move between the socket, nghttp2 and the buffers is the same, and lives
 * here:
 *  - reads go into `in` and are fed to nghttp2 in place (no copy);
 *  - frames other than DATA are copied into `out` by the send callback;
 *    DATA payloads are moved from the stream's body buffer into `out`
 *    (NGHTTP2_DATA_FLAG_NO_COPY), never copied;
 *  - `out` is bounded by the watermark: past it nghttp2 is told WOULDBLOCK
 *    and reading pauses, so a peer that does not read cannot make us queue;
 *  - nghttp2_session_send() is never called from nghttp2's own callbacks:
 *    `in_io` is set while the wire runs nghttp2, and a kick from the
 *    application inside a callback is left to the running loop.
 * The owner supplies the session (with h2_wire_set_callbacks() applied to
 * its callbacks) and is told when the wire is finished (`on_done`). */
#ifndef COLDBREW_H2_WIRE_H
#define COLDBREW_H2_WIRE_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>

#include "transport/transport.h"

/* A header field to send (lower-case name), not NUL-terminated. */
struct h2_header_out {
    const char *name, *value;
    size_t name_len, value_len;
};

/* A stream's outgoing body (a response for the server, a request for the
 * client). nghttp2's data source points at it. */
struct h2_body_out {
    struct evbuffer *buf; /* bytes waiting for the peer's window */
    nghttp2_nv *trailers; /* copied at h2_body_end(); sent behind the last DATA */
    size_t ntrailers;
    bool ended;    /* no more bytes will be added */
    bool deferred; /* nghttp2 paused the source for want of bytes */
    int32_t stream;
    /* Called when the buffer falls below the wire's watermark (the holder
     * may feed it again). Optional. */
    void (*on_drain)(struct h2_body_out *b);
};

struct h2_wire {
    int fd;
    struct transport tp; /* plain (zeroed) or TLS; freed by h2_wire_close */
    nghttp2_session *session;
    struct event rev, wev;
    struct event flush; /* a deferred send: kicks within one loop turn coalesce */
    struct evbuffer *in, *out;
    size_t watermark;
    bool reading, writing, in_io, eof, dead, flush_pending;
    /* The wire cannot go on (peer closed, I/O error, protocol error, or
     * nghttp2 has nothing left to read or write). `why` is NULL for an
     * orderly end, else a short text. Called at most once. */
    void (*on_done)(struct h2_wire *w, const char *why);
};

/* Installs the wire's send and send-data callbacks. */
void h2_wire_set_callbacks(nghttp2_session_callbacks *cb);
/* fd must be non-blocking; the events start once h2_wire_kick() runs. */
bool h2_wire_init(struct h2_wire *w, struct event_base *base, int fd, size_t watermark,
                  void (*on_done)(struct h2_wire *, const char *));
/* Sends what nghttp2 has queued now, as far as the socket takes it (exit). */
void h2_wire_flush_now(struct h2_wire *w);
/* Stops the events and closes the socket; the session is the owner's. */
void h2_wire_close(struct h2_wire *w);
void h2_wire_free_buffers(struct h2_wire *w);
/* Processes what is already in `in` (a preface read by the HTTP/1 side)
 * and sends what nghttp2 has queued (our SETTINGS); arms the events. */
void h2_wire_start(struct h2_wire *w);
/* After the application submitted frames: send them once the current
 * callbacks are done (every kick of one loop turn is one send and one
 * write), or from the running I/O if nghttp2 is running now. */
void h2_wire_kick(struct h2_wire *w);

/* Bytes received and not yet consumed in a stream's `in` buffer. That buffer
 * is made with the stream's first DATA byte, so NULL means none: most
 * requests (GETs) carry no body, and an idle open stream should not hold an
 * empty evbuffer (136 B) on each side of the proxy. */
static inline size_t h2_unread(const struct evbuffer *in)
{
    return in ? evbuffer_get_length(in) : 0;
}
/* Appends a DATA payload to stream `id`'s `in` buffer, made on first use.
 * Without memory for it the stream is reset and its window given back (for
 * nghttp2's data callback, which must return 0: a non-fatal error code there
 * is ignored and the bytes would be lost). */
void h2_in_add(nghttp2_session *s, int32_t id, struct evbuffer **in, const uint8_t *data,
               size_t len);

/* Body sources. */
/* false when out of memory. */
bool h2_body_init(struct h2_body_out *b, int32_t stream);
void h2_body_free(struct h2_body_out *b);
nghttp2_data_provider h2_body_provider(struct h2_body_out *b);
/* Bytes waiting, and the buffer (made on first use; NULL without memory). */
static inline size_t h2_body_pending(const struct h2_body_out *b)
{
    return b->buf ? evbuffer_get_length(b->buf) : 0;
}
struct evbuffer *h2_body_buf(struct h2_body_out *b);
/* Moves `data` in and wakes the source. */
void h2_body_write(nghttp2_session *s, struct h2_body_out *b, struct evbuffer *data);
/* Ends the body, keeping a copy of the trailers; false when out of memory. */
bool h2_body_end(nghttp2_session *s, struct h2_body_out *b, const struct h2_header_out *trailers,
                 size_t n);

struct http_head;
/* Adds a decoded header field to a head's arena; false past `limit` bytes
 * or the head's slots. */
bool h2_head_add(struct http_head *h, const uint8_t *name, size_t nlen, const uint8_t *value,
                 size_t vlen, size_t limit);

/* Header fields for nghttp2 from the codecs' h2_header_out. */
void h2_nv_from(nghttp2_nv *nv, const struct h2_header_out *h);

#endif
