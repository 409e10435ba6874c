/* server.h — HTTP/1.1 server connections and the request object.
 *
 * One listener accepts connections (struct sconn); each connection parses one
 * request at a time (pipelined requests wait, unparsed, in the input buffer
 * so responses go out in order). A parsed request is handed to the
 * listener's on_request callback, which answers it locally
 * (request_reply) or hands it on (the breaker queue, the proxy).
 *
 * Ownership and lifetime
 *  - The request is embedded in its connection: at most one exists per
 *    connection, so there is no per-request allocation. Whoever the request
 *    is handed to becomes its *holder* and registers `cancel`, which the
 *    server calls when the request dies under it (client gone, timeout).
 *  - Every request ends exactly once, in request_end(): timers stop, the
 *    app's on_finish runs (stats, breaker release, metrics, log), the head
 *    returns to its pool, and the connection either moves to the next
 *    request or closes.
 *  - Connections are freed only from a deferred reaper event, never inside a
 *    callback, so a callback may close a connection and return safely; code
 *    that calls out must check `dead` afterwards.
 *
 * Lingering close (nginx's lingering_close): a connection that closes after
 * an answer while its request was not read whole (a 400/431, a 503 from the
 * breaker, a 404 from the activator, a 502/504 before the body went up) must
 * not close() with unread input: the kernel would answer the client's next
 * bytes with a reset, and a client still writing its body (curl uploading a
 * file, Python's http.client) would fail its write and never read the
 * answer. So the connection discards input while the answer flushes, then
 * shuts its write side (the client reads the answer and EOF) and reads and
 * drops what the client still sends until its FIN, or until a bound: a total
 * time, a silence, a byte count (server_limits). Discarded bytes go to one
 * shared scratch buffer, never to memory per connection. A lingering
 * connection has no request: it counts for nothing but its descriptor, gives
 * way to a new client at COLDBREW_MAX_CONNECTIONS, and keeps a drained
 * process alive only within its bounds (server_lingering()).
 *
 * Timeouts (Knative's TimeoutHandler): per request, a total duration, a
 * response-start limit and an idle (gap between writes) limit, all measured
 * from the request's arrival, queue wait included. When one fires before
 * the response started, the holder is cancelled and 504 `request timeout`
 * is written; after, see server_request_timer_cb() in server.c. */
#ifndef COLDBREW_SERVER_H
#define COLDBREW_SERVER_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "http/h1_parser.h"
#include "http/h2_server.h"
#include "core/net.h"
#include "transport/transport.h"

struct request;
struct sconn;

/* Limits shared by every listener of a process; each is a documented setting. */
struct server_limits {
    size_t max_header_bytes; /* COLDBREW_MAX_HEADER_BYTES: request line + headers; 431 beyond */
    unsigned max_headers;    /* COLDBREW_MAX_HEADERS: 431 beyond */
    double header_timeout;   /* COLDBREW_HEADER_TIMEOUT_SECONDS: head must arrive in this */
    size_t watermark;        /* COLDBREW_BUFFER_BYTES: stop reading a side whose peer's
                                output holds more than this */
    unsigned max_conns;      /* COLDBREW_MAX_CONNECTIONS per listener; accept pauses beyond */
    /* Lingering close (nginx's lingering_time, lingering_timeout), counted from
     * the moment the closing answer is queued. */
    double linger_time;           /* COLDBREW_LINGERING_TIME_SECONDS: at most this long; 0 turns
                                     lingering off (close at once, as before) */
    double linger_timeout;        /* COLDBREW_LINGERING_TIMEOUT_SECONDS: at most this long without a
                                     byte from the client once the answer is out; 0: no such bound */
    uint64_t linger_bytes;        /* COLDBREW_LINGERING_BYTES: at most this many bytes dropped */
    struct h2_limits h2;          /* HTTP/2 connections (h2_server.h) */
    double tls_handshake_timeout; /* COLDBREW_TLS_HANDSHAKE_TIMEOUT_SECONDS: a TLS listener cuts a
                                     handshake not finished in this (Go's net/http: 10 s) */
};

void server_limits_from_env(struct server_limits *lim);

typedef void (*request_cb)(struct request *req, void *arg);

struct server {
    struct event_base *base;
    const char *name; /* "main", "admin", ... for logs */
    int fd;
    struct event accept_ev;
    const struct server_limits *lim;
    request_cb on_request;
    void *arg;
    LIST_HEAD(, sconn) conns;
    unsigned nconns;
    bool accepting;
    bool keepalive_off;            /* draining: answer with Connection: close */
    TAILQ_HEAD(, sconn) lingering; /* connections closing (SCONN_DISCARD/LINGER), oldest first */
    unsigned nlingering;
    const char *timeout_body; /* 504 body: "request timeout" (queue-proxy), or the activator's */
    /* HTTP/2 connections (server_h2.c): counted in nconns like the rest. */
    struct h2_conn **h2;
    unsigned nh2, h2cap;
    /* TLS listener (server_set_tls): every connection first runs the
     * handshake; ALPN h2 goes to the HTTP/2 side, anything else is HTTP/1.1.
     * Borrowed: the owner keeps the context (and its reload timer). */
    struct tls_ctx_server *tls;
};

enum request_state {
    REQ_IDLE,    /* no request on the connection */
    REQ_HELD,    /* parsed and handed on; no response byte written yet */
    REQ_SENDING, /* response head written; body may still be streaming */
};

/* The exchange: one request and its response, whatever the protocol. An
 * HTTP/1.1 request is embedded in its connection (conn); an HTTP/2 one is
 * a stream's (h2, conn NULL; server_h2.c). The request_* calls below work
 * for both; request_output/input/input_consumed are the HTTP/1 proxy's and
 * take HTTP/1 requests only (request_flush is a no-op for HTTP/2). */
struct request {
    struct sconn *conn;   /* HTTP/1.1: the connection; NULL for HTTP/2 */
    struct h2_stream *h2; /* HTTP/2: the stream, until it ends or dies */
    struct server *srv;
    struct http_head *head;
    enum request_state state;
    uint64_t start_ns;

    /* Holder (breaker queue, proxy): called when the request dies under it. */
    void (*cancel)(struct request *req);
    void *holder;
    /* The client sent more bytes (request body); the holder consumes them. */
    void (*on_input)(struct request *req);
    /* The client's output fell below the watermark. */
    void (*on_drain)(struct request *req);
    /* Called once from request_end(). */
    void (*on_finish)(struct request *req, void *arg);
    void *finish_arg;
    /* Called once by the proxy as a proxied response head goes out (its
     * first byte: the cold-start ledger's end, the span's status). It may
     * return header lines ("Name: value\r\n"...) that the head carries, in
     * either protocol (proxy.c's px_head, then the front table), or NULL. */
    const char *(*on_response_head)(struct request *req, size_t *len);

    /* Request body bookkeeping (the holder moves it via the parser). */
    bool body_done;
    bool upgraded; /* tunnel mode: the connection carries raw bytes */

    /* Response bookkeeping for stats, logs and timeouts. */
    int status;
    uint64_t resp_body_bytes;
    bool resp_chunked;     /* response body framed chunked, verbatim */
    bool resp_at_boundary; /* ...and the last byte forwarded ended a chunk */
    bool resp_close;       /* connection must close after this response */

    /* Timeouts (seconds; 0 disables). */
    double t_total, t_start, t_idle;
    uint64_t last_write_ns;
    struct event timer;

    /* The application's per-request context (set in on_request). */
    void *app_ptr;
};

enum sconn_closing {
    SCONN_OPEN,    /* serving requests (or closing plainly once close_after's output is out) */
    SCONN_DISCARD, /* the last answer is queued and input was left unread: input is read and
                      dropped while the answer flushes; in srv->lingering */
    SCONN_LINGER,  /* the answer is out and the write side shut down: input is read and dropped
                      until the client's FIN or a bound; in srv->lingering */
};

/* Its size is watched: 1,024 bytes is a jemalloc size class, and one byte
 * more costs 256 per connection (the next class is 1,280). */
struct sconn {
    struct server *srv;
    struct event_base *base;
    struct transport tp; /* plain, or TLS on a TLS listener */
    struct event rev, wev, tev;
    struct evbuffer *in, *out;
    struct h1_parser parser;
    struct request req;
    char peer_ip[48];
    int peer_port;
    int fd;
    bool reading;         /* read event armed */
    bool holding;         /* request_hold_input: only watch for the peer's hang-up */
    bool rev_closed_only; /* rev is currently assigned EV_CLOSED, not EV_READ */
    bool writing;         /* write event armed */
    bool eof;             /* peer sent FIN */
    bool close_after;     /* close once output is flushed */
    bool dead;            /* closed; memory freed by the reaper */
    bool busy;            /* inside sconn_process */
    bool first;           /* still waiting for its first request */
    enum sconn_closing closing;
    uint64_t linger_start_ns; /* when the closing answer was queued */
    uint64_t linger_bytes;    /* bytes dropped since */
    TAILQ_ENTRY(sconn) linger_link;
    LIST_ENTRY(sconn) link;
    struct sconn *next_dead;
};

/* Opens a listener; NULL with *err set on failure. */
struct server *server_open(struct event_base *base, const char *name, const char *host, int port,
                           const struct server_limits *lim, request_cb cb, void *arg,
                           const char **err);
/* Makes the listener TLS (before it accepts anything): see struct server. */
struct tls_ctx_server;
void server_set_tls(struct server *s, struct tls_ctx_server *tls);
/* Stops accepting and closes the listening socket; live connections go on. */
void server_stop_accepting(struct server *s);
/* Closes every connection that has no request in progress; the rest close
 * after their response (keep-alive turned off). */
void server_close_idle(struct server *s);
/* Connections in a lingering close (they hold no request). A drained
 * process waits for them too: each ends within the lingering bounds. */
unsigned server_lingering(const struct server *s);
/* Frees the server; it must have no connections left. */
void server_free(struct server *s);

/* ---- requests (called by the app and the proxy) ---- */

/* A complete local response. `extra` is preformatted header lines
 * ("Name: value\r\n"...), or NULL. Ends the request. */
void request_reply(struct request *req, int status, const char *content_type, const char *body,
                   size_t len, const char *extra);
/* Text/plain error body, the way Go's http.Error writes it. Ends the request. */
void request_error(struct request *req, int status, const char *body);
/* Arms the three timeouts (any 0 is off). */
void request_set_timeouts(struct request *req, double total, double start, double idle);
/* The response has begun: status and head are in request_output(). */
void request_response_started(struct request *req, int status);
/* Ends the request (response complete or aborted). With `abort` the
 * connection is closed without further bytes. */
void request_end(struct request *req, bool abort);
/* Client output buffer, and a push of its contents to the socket. */
struct evbuffer *request_output(struct request *req);
struct evbuffer *request_input(struct request *req);
void request_flush(struct request *req);
/* While a request waits (the activator holding it for a pod), stop reading
 * its connection so its body stays in the kernel; a hang-up is still seen. */
void request_hold_input(struct request *req, bool hold);
/* Re-arm reading after the holder consumed input. */
void request_input_consumed(struct request *req);
/* Is the client's output above the watermark? */
bool request_output_full(struct request *req);
/* Latency so far in seconds. */
double request_elapsed(const struct request *req);
/* Did it arrive over HTTP/2 (then it goes upstream as h2c, Knative's
 * protocol mirroring)? */
static inline bool request_is_h2(const struct request *req)
{
    return req->conn == NULL;
}
/* The client's address (for X-Forwarded-For and logs). */
const char *request_peer_ip(const struct request *req);
int request_peer_port(const struct request *req);

/* ---- for the HTTP/2 side (server_h2.c, proxy_h2.c) ---- */
void server_request_timer_cb(evutil_socket_t fd, short what, void *arg);
/* A connection (HTTP/2) of the listener closed: the count, and accepting again. */
void server_conn_closed(struct server *s);

/* Current Date header value ("Wed, 25 Nov 2026 16:00:00 GMT"), cached per second. */
const char *http_date_now(void);

#endif
