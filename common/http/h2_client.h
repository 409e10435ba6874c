/* h2_client.h — HTTP/2 client connections (h2c, prior knowledge) on nghttp2.
 *
 * The HTTP/2 back codec: one connection to an upstream carries many
 * streams, each one request and its response. The application submits a
 * semantic request (method, target, authority, headers), writes the body
 * and ends it (with trailers when it has them); it is told of the response
 * head, body bytes, trailers and the end, or of a reset. nghttp2 owns the
 * framing, HPACK and flow control; this module owns the socket, the
 * buffers and the per-stream state. It is what the pool will hand out as
 * "a stream on a connection" for HTTP/2 upstreams (ARCHITECTURE-NOTES).
 *
 * Flow control: the response body is read no faster than the application
 * consumes it (h2c_stream_consumed() opens the window), so a stream holds at
 * most stream_window bytes of response body. Request bodies wait in the
 * stream's `out` until the upstream's window lets them go.
 *
 * Failure: a connection that fails (connect refused, reset, GOAWAY with an
 * error, a protocol error) fails each open stream with on_reset and the
 * reason; streams above a graceful GOAWAY's last stream id are reset with
 * REFUSED_STREAM (never processed upstream: safe to retry elsewhere).
 *
 * Ownership: the caller owns the connection and frees it with
 * h2c_conn_free() (open streams are reset first, their holders told). A
 * stream belongs to the connection; its holder gets exactly one of
 * on_end / on_reset and must not touch it afterwards. Memory is reclaimed
 * from the loop's deferred reaper, never inside a callback. */
#ifndef COLDBREW_H2_CLIENT_H
#define COLDBREW_H2_CLIENT_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "http/h2_server.h" /* struct h2_header_out */
#include "core/net.h"

struct http_head;
struct h2c_conn;
struct h2c_stream;

struct h2c_stream_ops {
    /* The final response head arrived (1xx heads are passed on too, with
     * final = false). */
    void (*on_head)(struct h2c_stream *s, bool final);
    /* Response body bytes are in s->in (or the response ended: s->in_done). */
    void (*on_data)(struct h2c_stream *s);
    /* The response ended cleanly; trailers, if any, are in s->trailers. */
    void (*on_end)(struct h2c_stream *s);
    /* The stream failed: reset by the upstream, or the connection is gone.
     * `code` is the HTTP/2 error code, `why` a static text. */
    void (*on_reset)(struct h2c_stream *s, uint32_t code, const char *why);
    /* The request body's buffer fell below the watermark. */
    void (*on_drain)(struct h2c_stream *s);
};

struct h2c_stream {
    struct h2c_conn *conn;
    int32_t id;
    const struct h2c_stream_ops *ops;
    void *holder;
    struct http_head *head;     /* the response head (status in head->status) */
    struct http_head *trailers; /* response trailers, or NULL */
    struct evbuffer *in;        /* response body bytes not yet consumed; NULL until the first
                                 * (read with h2_unread) */
    struct h2_body_out body;    /* the request body, waiting for the upstream's window */
    bool in_done;               /* the upstream ended its half */
    bool out_done;              /* the application ended the request */
    bool finished;              /* on_end or on_reset was delivered (or cancelled) */
    TAILQ_ENTRY(h2c_stream) link;
};

struct h2c_conn_ops {
    /* The connection can take streams (SETTINGS exchanged), or no longer can
     * (GOAWAY received, failed, closed). The pool decides from these. */
    void (*on_state)(struct h2c_conn *c, void *arg);
};

/* Starts connecting to addr. NULL with errno on failure. */
struct h2c_conn *h2c_conn_new(struct event_base *base, const struct net_addr *addr,
                              const struct h2_limits *lim, const struct h2c_conn_ops *ops,
                              void *arg);
/* The same over TLS (h2 by ALPN) when `tls_up` is an upstream with a TLS
 * connector (its SNI, verification and session cache); plain h2c when NULL. */
struct upstream;
struct h2c_conn *h2c_conn_new_tls(struct event_base *base, const struct net_addr *addr,
                                  const struct h2_limits *lim, const struct h2c_conn_ops *ops,
                                  void *arg, struct upstream *tls_up);
/* Can a new stream start here now (connected, not going away, under the
 * upstream's SETTINGS_MAX_CONCURRENT_STREAMS)? */
bool h2c_conn_available(const struct h2c_conn *c);
/* Has the connection failed or been told to go away (no new streams ever)? */
bool h2c_conn_done(const struct h2c_conn *c);
unsigned h2c_conn_streams(const struct h2c_conn *c);
void h2c_conn_free(struct h2c_conn *c);

/* A request. `hdrs` are regular headers (lower-case names, no hop-by-hop);
 * with end, there is no body. NULL when the connection cannot take it. */
struct h2c_stream *h2c_request(struct h2c_conn *c, const char *method, const char *scheme,
                               const char *authority, const char *path,
                               const struct h2_header_out *hdrs, size_t n, bool end,
                               const struct h2c_stream_ops *ops, void *holder);
/* Moves all of `data` into the request body. */
void h2c_stream_write(struct h2c_stream *s, struct evbuffer *data);
/* Ends the request body, with trailers when n > 0. */
void h2c_stream_end(struct h2c_stream *s, const struct h2_header_out *trailers, size_t n);
/* The holder moved n bytes of s->in on. */
void h2c_stream_consumed(struct h2c_stream *s, size_t n);
/* Abandons the stream (RST_STREAM CANCEL); no callback follows. */
void h2c_stream_cancel(struct h2c_stream *s);
bool h2c_stream_output_full(const struct h2c_stream *s);

#endif
