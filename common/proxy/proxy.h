/* proxy.h — stream one request to an upstream and its response back.
 *
 * proxy_forward() takes a request that the server has parsed (state HELD)
 * and becomes its holder until the request ends. For HTTP/1.1:
 *   - the head is rewritten (hop-by-hop headers dropped, Host, X-Forwarded-For,
 *     the caller's extra headers) and written to a pooled connection;
 *   - the request body is moved evbuffer to evbuffer as it arrives, framing
 *     validated by the parser, never buffered whole; reading the client
 *     pauses while the upstream's output is above the watermark;
 *   - the response head is rewritten the same way and the body moved back,
 *     each byte written as soon as it arrives (so SSE and unknown-length
 *     streams flush per write, as Knative's FlushInterval=0 does);
 *   - 1xx responses are forwarded; a 101 whose Upgrade matches the request's
 *     turns both connections into a byte tunnel;
 *   - failures answer 502 with Go's error text while no response byte has
 *     gone out, and close the client connection after (never a short body
 *     that looks complete);
 *   - a reused pooled connection that the backend closed before answering is
 *     retried once, for idempotent requests without a body; the retry goes
 *     to the head of the upstream's wait queue (it already waited its turn);
 *   - with no idle connection, the request waits in the upstream's FIFO for
 *     the first connection that becomes usable (upstream.h); while it waits
 *     the server's cancel (client gone, timeout 504) takes it off the queue,
 *     and a connect that fails while it is at the head answers it 502.
 * For HTTP/2 (proxy_h2.c) the same exchange rides a stream on a shared h2c
 * connection: the head's fields are rewritten by the same rules, DATA moves
 * as it arrives under both sides' flow control, trailers pass, and an
 * upstream reset mid-response resets the client's stream.
 *
 * The exchange (proxy.c) is protocol-neutral: one state (enum px_state),
 * one finish; each protocol's codec sits behind the tables of
 * proxy_codec.h. */
#ifndef COLDBREW_PROXY_H
#define COLDBREW_PROXY_H

#include <stdbool.h>
#include <stddef.h>

#include "http/server.h"
#include "proxy/upstream.h"

/* What the caller changes on the way up. Must stay valid until the request
 * ends (the retry re-serialises the head): the app's per-request context,
 * which holds the exchange too, is its home. */
struct proxy_edit {
    const char *host; /* replaces Host when non-NULL */
    size_t host_len;
    const char *extra; /* preformatted "Name: value\r\n" lines to add, or NULL */
    size_t extra_len;
    const char *const *drop; /* further header names to drop (NULL-terminated), or NULL */
    bool append_xff;         /* append the peer IP to X-Forwarded-For */
};

/* Where an exchange is. Every path out of the last three goes through one
 * finish (proxy.c), which lets go of the upstream stream and answers or
 * ends the request, in that order. */
enum px_state {
    PX_IDLE,      /* not forwarding: before proxy_forward(), after the finish */
    PX_WAITING,   /* in the upstream's queue for a connection */
    PX_SENDING,   /* request head upstream, its body flowing; no response head yet */
    PX_STREAMING, /* the final response head went to the client; its body follows */
    PX_TUNNEL,    /* after a 101 (HTTP/1): raw bytes both ways */
};

struct front_ops;
struct back_ops;
struct h2c_stream;

/* The proxy's state for one request, embedded in the app's per-request
 * context: no allocation on the request path, for either protocol. Valid
 * from proxy_forward() until the request ends. */
struct proxy_exchange {
    struct upstream_waiter waiter; /* first: the pool hands it back (HTTP/1) */
    struct request *req;
    struct upstream *up;
    const struct proxy_edit *edit;
    const struct front_ops *front; /* answers the client (proxy_codec.h) */
    const struct back_ops *back;   /* carries the request upstream */
    enum px_state state;
    union {
        struct upconn *uc;     /* HTTP/1: the whole connection is the stream */
        struct h2c_stream *h2; /* HTTP/2: a stream on a pooled connection */
    } s;                       /* held between open and release */
    uint64_t body_sent;        /* request body bytes written upstream */
    bool retried;              /* the one retry on a fresh connection was used */
    bool dechunk;              /* HTTP/1: the client takes the body unframed (HTTP/1.0) */
};

/* Becomes the request's holder until it ends (see above). Either protocol:
 * a request that arrived over HTTP/2 goes upstream as an h2c stream
 * (Knative's protocol mirroring, proxy_h2.c), one over HTTP/1.1 as
 * HTTP/1.1 (proxy_h1.c); the exchange between them is proxy.c's. */
void proxy_forward(struct proxy_exchange *x, struct request *req, struct upstream *u,
                   const struct proxy_edit *edit);

/* Builds the upstream request head into buf; returns its length, or 0 when
 * it does not fit. Exposed for tests and the fuzz target. */
size_t proxy_build_request_head(const struct request *req, const struct proxy_edit *edit, char *buf,
                                size_t cap);

#endif
