/* proxy_codec.h — the seam between the proxy's exchange (proxy.c) and the
 * protocols on either side of it. Private to the proxy: proxy.c,
 * proxy_h1.c, proxy_h2.c.
 *
 *     client ── front codec ──► struct request ──► proxy exchange ──► back codec ── upstream
 *              (server.c,        semantic head,     (proxy.c: one      (proxy_h1.c: a pooled
 *               server_h2.c)     body events        state, one          connection; proxy_h2.c:
 *                                                   finish)             a stream on a shared one)
 *
 * Two tables, one per direction and protocol:
 *   - struct front_ops answers the client: response head, body bytes,
 *     the end (with trailers), a reset. HTTP/1 writes HTTP/1.1 text into
 *     the connection's output; HTTP/2 submits HEADERS and DATA on the
 *     client's stream. The exchange calls it; it never sees "\r\n" or a
 *     frame.
 *   - struct back_ops carries the request upstream on "a stream on a
 *     connection" from the upstream's pool (for HTTP/1 the stream is the
 *     whole connection) and turns the upstream's answer into the events
 *     below (px_head, px_data, px_end, px_fail), which the exchange passes
 *     to the front.
 *
 * Which back codec serves a request: the front's protocol (Knative's
 * protocol mirroring: HTTP/2 in, h2c up; HTTP/1 in, HTTP/1.1 up). Each
 * table speaks semantic heads (struct http_head) and body bytes, so another
 * pairing only needs its own framing rule; the one shortcut is HTTP/1 to
 * HTTP/1, whose body bytes keep their wire framing (chunked bodies go
 * through verbatim, validated by the parsers, never re-chunked: no copy on
 * the hot path). `framed` says which kind of bytes px_data carries.
 *
 * Lifetime: a back codec holds its stream only between open() and
 * release(); every event it raises goes through the exchange, and once the
 * exchange has finished (px_finish) it raises none. */
#ifndef COLDBREW_PROXY_CODEC_H
#define COLDBREW_PROXY_CODEC_H

#include <stdbool.h>
#include <stddef.h>

#include "proxy/proxy.h"

struct evbuffer;
struct http_head;

/* How the answer reaches the client. */
struct front_ops {
    /* The upstream's response head: interim (1xx) or final. Hop-by-hop
     * fields are dropped here, and the response's framing toward the client
     * decided; `extra` ("Name: value\r\n" lines, or NULL) is added (the
     * app's lines for this response: Server-Timing). `end`: no body
     * follows. False when the head cannot be written (too large); nothing
     * was. */
    bool (*head)(struct proxy_exchange *x, const struct http_head *h, bool end, const char *extra,
                 size_t extra_len);
    /* Body bytes the client can take now before its output is over the
     * watermark (0: wait for the request's on_drain). */
    size_t (*room)(struct proxy_exchange *x);
    /* Moves n body bytes from src (n may be 0) and pushes them out. */
    void (*data)(struct proxy_exchange *x, struct evbuffer *src, size_t n);
    /* The response is complete: trailers (or NULL) go out with the end. */
    void (*end)(struct proxy_exchange *x, const struct http_head *trailers);
};

/* Carrying the request upstream on one protocol. */
struct back_ops {
    /* Gets a stream for the exchange: at once, or later (the exchange is
     * then PX_WAITING and the codec calls px_ready or px_fail). */
    void (*open)(struct proxy_exchange *x);
    /* The client sent more of its body (or ended it). */
    void (*pump)(struct proxy_exchange *x);
    /* The client's output drained: the codec reads more of the response. */
    void (*resume)(struct proxy_exchange *x);
    /* Lets go of the stream: back to the pool when `reuse` and the codec
     * finds it clean, else closed (HTTP/1) or reset (HTTP/2). */
    void (*release)(struct proxy_exchange *x, bool reuse);
};

extern const struct front_ops h1_front, h2_front;
extern const struct back_ops h1_back, h2_back;

/* ---- events from the back codecs ---- */

/* No stream yet: the exchange waits (PX_WAITING) and the request's cancel
 * reaches the codec's release (which takes it off the queue). */
void px_wait(struct proxy_exchange *x);
/* The stream is open and the request head went upstream (PX_SENDING): the
 * client's body events now reach the codec's pump. */
void px_ready(struct proxy_exchange *x);
/* A response head: 1xx go to the client as they come (HTTP/1), the final
 * one starts the response (PX_STREAMING). `end`: no body follows. The
 * exchange may have finished under the call (an interim head's write can
 * find the client gone): the codec checks its stream afterwards. */
void px_head(struct proxy_exchange *x, const struct http_head *h, bool end);
/* n response body bytes at the head of src go to the client. */
void px_data(struct proxy_exchange *x, struct evbuffer *src, size_t n);
/* The response ended cleanly, with trailers or NULL. */
void px_end(struct proxy_exchange *x, const struct http_head *trailers);
/* The upstream failed. Before the response started: 502 with `why` as the
 * body (Go's error text); after: the client sees the response cut (closed
 * connection / RST_STREAM), never a clean end. */
void px_fail(struct proxy_exchange *x, const char *why);
/* Refused before anything went upstream (431 head too large, 414, 503
 * out of memory): `status` with `body`, as request_error() writes it. */
void px_refuse(struct proxy_exchange *x, int status, const char *body);
/* The client's request body was malformed: 400 (or a cut, once answering). */
void px_bad_body(struct proxy_exchange *x, const char *why);
/* The client went away, or a tunnel ended: everything ends, no answer. */
void px_close(struct proxy_exchange *x, bool abort);
/* Once more from the start, first in the upstream's queue: the backend
 * closed a reused connection before answering (proxy_h1.c decides when
 * that is safe). */
void px_retry(struct proxy_exchange *x);

/* "dial tcp 10.0.0.1:8080: connect: connection refused" (Go's text). */
void px_errno_text(char *buf, size_t cap, const struct upstream *u, const char *op, int err);

#endif
