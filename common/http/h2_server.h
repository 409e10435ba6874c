/* h2_server.h — HTTP/2 server connections (h2c) on nghttp2.
 *
 * The HTTP/2 front codec: one nghttp2 server session per connection turns
 * frames into streams, each stream a request with a semantic head (the same
 * struct http_head the HTTP/1 parser fills) and body events, and turns the
 * application's answers (head, data, trailers, end, reset) back into frames.
 * nghttp2 owns framing, HPACK, flow control and the protocol's state
 * machine; this module owns the socket, the buffers and the limits. It is
 * the piece the protocol-neutral exchange (ARCHITECTURE-NOTES, "Two
 * protocols, one exchange") attaches to for HTTP/2; it knows nothing of
 * proxies, breakers or Knative.
 *
 * The head: pseudo-headers become the head's method, target (`:path`) and
 * version 2.0; `:authority` becomes a `host` header when the request has
 * none, so code that reads Host works for both protocols. Header names
 * arrive lower-case (HTTP/2 requires it; nghttp2 rejects the rest).
 *
 * Bad input (each answered with the protocol's error; the process and every
 * other connection go on):
 *  - a bad client preface, a frame over SETTINGS_MAX_FRAME_SIZE, a
 *    malformed header block: GOAWAY (nghttp2);
 *  - a header list over the server's COLDBREW_MAX_HEADER_BYTES or
 *    COLDBREW_MAX_HEADERS: 431 on that stream; past H2_HEADER_HARD_FACTOR
 *    times the limit (the HPACK-bomb shape: a small block that decodes to a
 *    huge list) the connection gets GOAWAY ENHANCE_YOUR_CALM;
 *  - streams beyond max_concurrent_streams: RST_STREAM REFUSED_STREAM;
 *  - rapid reset (CVE-2023-44487): more than reset_burst streams reset by
 *    the client, refilled at reset_rate a second: GOAWAY;
 *  - CONTINUATION flood (CVE-2024-27316): more than max_continuations
 *    CONTINUATION frames in one header block: GOAWAY;
 *  - SETTINGS and PING floods: more than max_settings entries, or more than
 *    max_outbound_ack unsent ACKs (a peer that sends but never reads):
 *    GOAWAY.
 * Every one of these logs one line naming the peer and the reason.
 *
 * Memory: request bodies are read no faster than the application consumes
 * them (automatic WINDOW_UPDATEs are off; h2_stream_consumed() opens the
 * window), so a stream holds at most stream_window bytes of request body
 * and a connection at most conn_window. Response bodies wait in the
 * stream's `out` until the peer's window lets them go; the application
 * stops feeding a stream whose h2_stream_output_full() says so.
 *
 * Ownership: the connection owns its streams and its socket. A stream
 * lives from on_request until the stream closes; the application holding
 * it is told through `cancel` when it dies under it (peer reset, connection
 * gone) and must not touch it afterwards. Connections and streams are freed
 * from the loop's deferred reaper, never inside a callback. */
#ifndef COLDBREW_H2_SERVER_H
#define COLDBREW_H2_SERVER_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "http/h2_wire.h"

struct http_head;
struct h2_conn;
struct h2_stream;

/* Past this multiple of the header-list limit a header block is an attack,
 * not a mistake: the connection goes. */
#define H2_HEADER_HARD_FACTOR 4

/* Each is a documented setting (README); h2_limits_from_env() reads them. */
struct h2_limits {
    uint32_t max_concurrent_streams; /* COLDBREW_H2_MAX_CONCURRENT_STREAMS (1000; Go's is 250,
                                        but an activator holds a cold start's whole burst,
                                        which one client connection may carry) */
    uint32_t stream_window;          /* COLDBREW_H2_STREAM_WINDOW_BYTES (256 KiB) */
    uint32_t conn_window;            /* COLDBREW_H2_CONN_WINDOW_BYTES (1 MiB) */
    uint32_t max_frame_size;         /* COLDBREW_H2_MAX_FRAME_BYTES (16 KiB, the minimum) */
    uint64_t reset_burst;            /* COLDBREW_H2_RESET_BURST (200) */
    uint64_t reset_rate;             /* COLDBREW_H2_RESET_RATE per second (33) */
    size_t max_continuations;        /* COLDBREW_H2_MAX_CONTINUATIONS (8) */
    size_t max_settings;             /* COLDBREW_H2_MAX_SETTINGS entries per frame (32) */
    size_t max_outbound_ack;         /* COLDBREW_H2_MAX_OUTBOUND_ACK (1000) */
    double idle_seconds;             /* COLDBREW_H2_IDLE_SECONDS (300): a connection with no
                                        stream this long gets GOAWAY and is closed */
    size_t max_header_bytes;         /* the server's COLDBREW_MAX_HEADER_BYTES */
    unsigned max_headers;            /* the server's COLDBREW_MAX_HEADERS */
    size_t watermark; /* the server's COLDBREW_BUFFER_BYTES: output above it is full */
};

void h2_limits_from_env(struct h2_limits *lim, size_t max_header_bytes, unsigned max_headers,
                        size_t watermark);

/* What the connection tells its application. */
struct h2_server_ops {
    /* A request's head is complete. The application becomes the stream's
     * holder: it sets the stream's callbacks and answers it, now or later. */
    void (*on_request)(struct h2_stream *s, void *arg);
    /* The connection is gone (peer closed, protocol error, shutdown done). */
    void (*on_close)(struct h2_conn *c, void *arg);
};

enum h2_stream_state {
    H2S_OPEN,      /* head received; the application answers it */
    H2S_ANSWERING, /* response head submitted; body and trailers may follow */
    H2S_ENDED,     /* the application ended its answer; frames may still be queued */
    H2S_CLOSED,    /* nghttp2 closed the stream; the holder has been told */
};

struct h2_stream {
    struct h2_conn *conn;
    int32_t id;
    enum h2_stream_state state;
    struct http_head *head;     /* the request head, owned by the stream */
    struct evbuffer *in;        /* request body bytes not yet consumed; NULL until the first
                                 * (read with h2_unread) */
    struct h2_body_out out;     /* the response body, waiting for the peer's window */
    bool in_done;               /* the client ended its half (END_STREAM) */
    bool head_too_large;        /* over the header limits: answered 431 */
    size_t header_bytes;        /* decoded header list size so far (RFC 9113 §6.5.2 rule) */
    struct http_head *trailers; /* request trailers, when the client sent some */
    uint32_t reset_code;        /* why the stream closed (NO_ERROR = 0 when it ended) */

    /* The holder (the exchange): called when the stream dies under it. */
    void (*cancel)(struct h2_stream *s);
    /* More request body arrived, or the client ended its half. */
    void (*on_input)(struct h2_stream *s);
    /* The stream's output fell below the watermark. */
    void (*on_drain)(struct h2_stream *s);
    void *holder;

    TAILQ_ENTRY(h2_stream) link;
};

/* Takes over a connected socket whose first bytes (the client preface, and
 * whatever followed) may already sit in `preread`, which is moved from.
 * NULL when memory runs out (the socket is then closed). */
struct h2_conn *h2_conn_new(struct event_base *base, int fd, const char *peer_ip, int peer_port,
                            const struct h2_limits *lim, const struct h2_server_ops *ops, void *arg,
                            struct evbuffer *preread);
/* The same over a transport (TLS after an ALPN "h2"), moved from *tp;
 * tp NULL is plain. */
struct transport;
struct h2_conn *h2_conn_new_tp(struct event_base *base, int fd, struct transport *tp,
                               const char *peer_ip, int peer_port, const struct h2_limits *lim,
                               const struct h2_server_ops *ops, void *arg,
                               struct evbuffer *preread);

/* Takes over a connection whose HTTP/1.1 request asked to upgrade to h2c
 * (Upgrade: h2c, HTTP2-Settings: `settings`, base64url). The request,
 * `head` (owned by the connection from now on, body-less), becomes stream 1
 * and goes to on_request once 101 Switching Protocols and our SETTINGS are
 * queued. NULL when the upgrade is refused or memory runs out: the socket
 * is then closed. */
struct h2_conn *h2_conn_upgrade(struct event_base *base, int fd, const char *peer_ip, int peer_port,
                                const struct h2_limits *lim, const struct h2_server_ops *ops,
                                void *arg, struct evbuffer *preread, const char *settings,
                                size_t settings_len, struct http_head *head);

/* Answering a stream. Header names must be lower-case (h2_header_out is in h2_wire.h). */
/* The response head (status plus headers); with end, there is no body. */
bool h2_stream_respond(struct h2_stream *s, int status, const struct h2_header_out *hdrs, size_t n,
                       bool end);
/* Moves all of `data` into the stream's output and lets it go as the window allows. */
void h2_stream_write(struct h2_stream *s, struct evbuffer *data);
/* Ends the answer, with trailers when n > 0. */
void h2_stream_end(struct h2_stream *s, const struct h2_header_out *trailers, size_t n);
/* Resets the stream (RST_STREAM with `code`, e.g. NGHTTP2_INTERNAL_ERROR). */
void h2_stream_reset(struct h2_stream *s, uint32_t code);
/* The holder moved n bytes of s->in on: the client may send that much more. */
void h2_stream_consumed(struct h2_stream *s, size_t n);
/* Is the stream's output at or above the watermark? */
bool h2_stream_output_full(const struct h2_stream *s);
/* A simple complete answer (like request_error for HTTP/1). */
void h2_stream_reply(struct h2_stream *s, int status, const char *content_type, const char *body,
                     size_t len);

/* The client's address, for logs and X-Forwarded-For. */
const char *h2_stream_peer_ip(const struct h2_stream *s);
int h2_stream_peer_port(const struct h2_stream *s);
/* Drops the unread request body and opens the window for it; what arrives
 * later is dropped too once the answer is complete. */
void h2_stream_discard_input(struct h2_stream *s);

/* Closes at once (exit): open streams' holders are cancelled. */
void h2_conn_close(struct h2_conn *c);
/* Graceful shutdown (drain): GOAWAY naming the last stream that will be
 * served; streams in flight finish, new ones are refused, and the
 * connection closes once the last stream is done. */
void h2_conn_shutdown(struct h2_conn *c);
/* Open streams (for drain and metrics). */
unsigned h2_conn_streams(const struct h2_conn *c);

/* Does `buf` start with the HTTP/2 client preface? 1 yes, 0 no, -1 too
 * short to tell (a prefix of it). */
int h2_is_preface(struct evbuffer *buf);

#endif
