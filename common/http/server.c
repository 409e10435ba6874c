/* server.c — see server.h.
 *
 * Connection states are carried by `req.state` (IDLE/HELD/SENDING) and the
 * parser phase; sconn_process() is the one place that moves a connection
 * from one request to the next, and sconn_close() the one place that tears
 * it down (memory is reclaimed later by the loop's reaper).
 *
 * Closing after an answer goes one of two ways, decided in sconn_close_after():
 * with the request read whole, close once the output is out (close_after);
 * with input left unread, the lingering close (see server.h): SCONN_DISCARD
 * while the answer flushes, SCONN_LINGER after shutdown(SHUT_WR), both
 * reading into linger_scratch and bounded by the tev timer and a byte count.
 * sconn_flushed() is the one place that acts once the last answer is out. */
#include "http/server.h"

#include <errno.h>
#include <openssl/ssl.h>
#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/env.h"
#include "core/err.h"
#include "core/io.h"
#include "core/log.h"
#include "core/loop.h"
#include "http/server_h2.h"
#include "transport/tls_ctx.h"

/* A connection is one allocation: keep it within jemalloc's 1,024-byte
 * class (the next is 1,280; bench/RESULTS.md counts memory per connection). */
_Static_assert(sizeof(struct sconn) <= 1024, "struct sconn outgrew 1,024 bytes");

static void sconn_process(struct sconn *c);
static void sconn_close(struct sconn *c);
static void sconn_update_reading(struct sconn *c);

static void sconn_flushed(struct sconn *c);
static void linger_read(struct sconn *c);
static void linger_on_timer(struct sconn *c);

/* Lingering reads land here and are forgotten: one buffer for the process. */
#define LINGER_CHUNK 65536
/* Reads per wake-up (1 MiB): one fast sender cannot hold the loop. */
#define LINGER_READS 16
static char linger_scratch[LINGER_CHUNK];

void server_limits_from_env(struct server_limits *lim)
{
    lim->max_header_bytes = (size_t)env_long("COLDBREW_MAX_HEADER_BYTES", 65536, NULL);
    lim->max_headers = (unsigned)env_long("COLDBREW_MAX_HEADERS", 100, NULL);
    lim->header_timeout = env_double("COLDBREW_HEADER_TIMEOUT_SECONDS", 60, NULL);
    lim->watermark = (size_t)env_long("COLDBREW_BUFFER_BYTES", 65536, NULL);
    lim->max_conns = (unsigned)env_long("COLDBREW_MAX_CONNECTIONS", 10000, NULL);
    /* nginx's lingering_time and lingering_timeout. The byte cap is ours: 64 MiB
     * is three times the 20 MB upload of issue 9 and twice the largest HTTP/1
     * request Cloud Run takes (32 MiB), so an ordinary upload that gets an early
     * 4xx/5xx still reads it; past that a sender is a stream, and reading it for
     * 30 s would cost a link's worth of bytes for nothing. */
    lim->linger_time = env_double("COLDBREW_LINGERING_TIME_SECONDS", 30, NULL);
    lim->linger_timeout = env_double("COLDBREW_LINGERING_TIMEOUT_SECONDS", 5, NULL);
    long lb = env_long("COLDBREW_LINGERING_BYTES", 64L << 20, NULL);
    lim->linger_bytes = lb > 0 ? (uint64_t)lb : 0;
    h2_limits_from_env(&lim->h2, lim->max_header_bytes, lim->max_headers, lim->watermark);
    lim->tls_handshake_timeout = env_double("COLDBREW_TLS_HANDSHAKE_TIMEOUT_SECONDS", 10, NULL);
}

const char *http_date_now(void)
{
    static char buf[40];
    static time_t last;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return buf;
}

/* ---------------------------------------------------------------- I/O */

/* Pushes output to the socket now (saves a loop turn in the common case). */
static void sconn_write(struct sconn *c)
{
    if (c->dead || c->closing == SCONN_LINGER)
        return;
    if (transport_write(&c->tp, c->out, c->fd) == IO_ERROR) {
        log_debug("%s: write to %s failed: %s", c->srv->name, c->peer_ip, strerror(errno));
        sconn_close(c);
        return;
    }
    size_t left = evbuffer_get_length(c->out);
    io_arm(&c->wev, &c->writing, left > 0);
    if (!left && c->close_after && c->req.state == REQ_IDLE) {
        sconn_flushed(c);
        return;
    }
    if (left < c->srv->lim->watermark && c->req.on_drain)
        c->req.on_drain(&c->req);
}

static void sconn_handshake(struct sconn *c);
static void on_read(evutil_socket_t fd, short what, void *arg);

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    struct sconn *c = arg;
    if (__builtin_expect(c->tp.handshaking, 0)) {
        sconn_handshake(c);
        return;
    }
    sconn_write(c);
    if (!c->dead && c->tp.want_write && !evbuffer_get_length(c->out))
        on_read(fd, EV_READ, c); /* a TLS read waited for the socket to take its answer */
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct sconn *c = arg;
    if (__builtin_expect(c->tp.handshaking, 0)) {
        sconn_handshake(c);
        return;
    }
    if (c->closing != SCONN_OPEN) {
        linger_read(c);
        return;
    }
    if (!(what & EV_READ)) {
        /* Holding input (EV_CLOSED only): the peer hung up. */
        c->eof = true;
        io_arm(&c->rev, &c->reading, false);
        sconn_process(c);
        return;
    }
    switch (transport_read(&c->tp, c->in, c->fd)) {
    case IO_OK:
    case IO_AGAIN:
        if (__builtin_expect(c->tp.want_write, 0))
            io_arm(&c->wev, &c->writing, true);
        break;
    case IO_ERROR:
        log_debug("%s: read from %s failed: %s", c->srv->name, c->peer_ip, strerror(errno));
        c->eof = true; /* a reset peer is a gone peer */
        io_arm(&c->rev, &c->reading, false);
        break;
    case IO_EOF:
        c->eof = true;
        io_arm(&c->rev, &c->reading, false);
        break;
    }
    sconn_process(c);
}

static void sconn_update_reading(struct sconn *c)
{
    if (c->dead || c->eof || c->closing != SCONN_OPEN)
        return; /* a closing connection's reading is the linger code's */
    if (c->holding != c->rev_closed_only) {
        /* Switch between reading and only watching for the peer's hang-up
         * (EPOLLRDHUP): a held request's body stays in the kernel. */
        io_arm(&c->rev, &c->reading, false);
        event_assign(&c->rev, c->base, c->fd, (c->holding ? EV_CLOSED : EV_READ) | EV_PERSIST,
                     on_read, c);
        c->rev_closed_only = c->holding;
    }
    io_arm(&c->rev, &c->reading, c->holding || evbuffer_get_length(c->in) < c->srv->lim->watermark);
}

void request_hold_input(struct request *req, bool hold)
{
    struct sconn *c = req->conn;
    if (!c)
        return; /* HTTP/2: the stream's window holds its body (it opens only as it is read) */
    if (c->holding == hold)
        return;
    c->holding = hold;
    sconn_update_reading(c);
}

/* ---------------------------------------------------------------- teardown */

static void sconn_free(void *p)
{
    struct sconn *c = p;
    evbuffer_free(c->in);
    evbuffer_free(c->out);
    free(c);
}

static void sconn_close(struct sconn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    if (c->req.state != REQ_IDLE) {
        struct request *req = &c->req;
        if (req->cancel)
            req->cancel(req);
        req->cancel = NULL;
        request_end(req, false);
    }
    if (c->parser.head) {
        http_head_release(c->parser.head);
        c->parser.head = NULL;
    }
    event_del(&c->rev);
    event_del(&c->wev);
    event_del(&c->tev);
    transport_free(&c->tp);
    close(c->fd);
    c->fd = -1;
    LIST_REMOVE(c, link);
    struct server *s = c->srv;
    if (c->closing != SCONN_OPEN) {
        TAILQ_REMOVE(&s->lingering, c, linger_link);
        s->nlingering--;
    }
    server_conn_closed(s);
    loop_defer_free(c, sconn_free);
}

void server_conn_closed(struct server *s)
{
    s->nconns--;
    if (s->accepting && s->nconns + 1 == s->lim->max_conns)
        event_add(&s->accept_ev, NULL);
}

/* The socket goes to the HTTP/2 side (server_h2.c): the connection object
 * is retired without closing it, and keeps its place in nconns until the
 * HTTP/2 connection closes. */
static int sconn_hand_off(struct sconn *c, struct transport *tp)
{
    int fd = c->fd;
    *tp = c->tp;
    c->tp = (struct transport){0};
    c->dead = true;
    c->fd = -1;
    event_del(&c->rev);
    event_del(&c->wev);
    event_del(&c->tev);
    LIST_REMOVE(c, link);
    if (c->parser.head) {
        http_head_release(c->parser.head);
        c->parser.head = NULL;
    }
    loop_defer_free(c, sconn_free);
    return fd;
}

/* The connection speaks HTTP/2 (the preface, or h2 by ALPN; or an h2c
 * upgrade when `upgrade` is the request that asked for it): the socket, its
 * transport and what was read so far go to an HTTP/2 connection. */
static void sconn_to_h2(struct sconn *c, struct http_head *upgrade, const char *settings,
                        size_t settings_len)
{
    struct server *srv = c->srv;
    char ip[sizeof c->peer_ip];
    memcpy(ip, c->peer_ip, sizeof ip);
    struct evbuffer *in = c->in;
    int port = c->peer_port;
    struct transport tp;
    int fd = sconn_hand_off(c, &tp);
    if (upgrade) /* cleartext only: tp is plain */
        server_h2_upgrade(srv, fd, ip, port, in, upgrade, settings, settings_len);
    else
        server_h2_adopt(srv, fd, &tp, ip, port, in);
}

/* An HTTP/1.1 request asking for h2c (RFC 7540 §3.2): Upgrade: h2c with
 * HTTP2-Settings. Only a request without a body is upgraded, as the
 * upgrade makes it stream 1; one with a body is served over HTTP/1.1
 * (a server may ignore Upgrade). */
static bool wants_h2c(const struct http_head *h, bool body_done, const char **settings, size_t *len)
{
    if (!h->upgrade || !body_done)
        return false;
    size_t ul;
    const char *up = http_head_get(h, "upgrade", &ul);
    *settings = http_head_get(h, "http2-settings", len);
    return up && *settings && http_token_list_has(up, ul, "h2c");
}

/* ---------------------------------------------------------------- lingering close */

static double linger_elapsed(const struct sconn *c)
{
    return (double)(clock_now_ns() - c->linger_start_ns) / 1e9;
}

/* A bound ended the linger: say which, then close (unread bytes draw a reset now). */
static void linger_cut(struct sconn *c, const char *bound, double value)
{
    log_warn("%s: lingering close of %s:%d cut by %s=%g after %.1fs, %llu bytes discarded",
             c->srv->name, c->peer_ip, c->peer_port, bound, value, linger_elapsed(c),
             (unsigned long long)c->linger_bytes);
    sconn_close(c);
}

/* Arms tev for the next bound: the total time, and once the answer is out
 * the silence timeout, whichever comes first. */
static void linger_arm_timer(struct sconn *c)
{
    const struct server_limits *lim = c->srv->lim;
    double left = lim->linger_time - linger_elapsed(c);
    if (left <= 0) {
        linger_cut(c, "COLDBREW_LINGERING_TIME_SECONDS", lim->linger_time);
        return;
    }
    double t = left;
    if (c->closing == SCONN_LINGER && lim->linger_timeout > 0 && lim->linger_timeout < t)
        t = lim->linger_timeout;
    struct timeval tv = clock_tv(t);
    event_add(&c->tev, &tv);
}

/* The connection will close after its queued answer, and input was left
 * unread (a body, pipelined bytes, the rest of a bad head). Instead of
 * stopping reads, which leaves the client blocked on a full window and then
 * reset at close(), drop input from now on. */
static void linger_begin(struct sconn *c)
{
    struct server *s = c->srv;
    c->close_after = true;
    evbuffer_drain(c->in, evbuffer_get_length(c->in));
    if (c->closing != SCONN_OPEN)
        return;
    if (s->lim->linger_time <= 0) {
        /* Lingering off: stop reading; close() once the answer is out. */
        io_arm(&c->rev, &c->reading, false);
        c->eof = true;
        return;
    }
    c->closing = SCONN_DISCARD;
    c->linger_start_ns = clock_now_ns();
    c->linger_bytes = 0;
    TAILQ_INSERT_TAIL(&s->lingering, c, linger_link);
    s->nlingering++;
    /* Accepting paused at COLDBREW_MAX_CONNECTIONS: the next client may take its place. */
    if (s->accepting && s->nconns >= s->lim->max_conns)
        event_add(&s->accept_ev, NULL);
    /* eof from here on means read() returned 0; an earlier hang-up seen
     * through EPOLLRDHUP may still have the body queued in the kernel. */
    c->eof = false;
    c->holding = false;
    if (c->rev_closed_only) {
        io_arm(&c->rev, &c->reading, false);
        event_assign(&c->rev, c->base, c->fd, EV_READ | EV_PERSIST, on_read, c);
        c->rev_closed_only = false;
    }
    io_arm(&c->rev, &c->reading, true);
    event_del(&c->tev);
    linger_arm_timer(c);
}

/* The closing answer is out. */
static void linger_flushed(struct sconn *c)
{
    if (c->eof) {
        sconn_close(c); /* the client's FIN was read: nothing is left to reset */
        return;
    }
    if (transport_is_tls(&c->tp))
        transport_shutdown(&c->tp, c->fd); /* close_notify first (then SHUT_WR below) */
    if (shutdown(c->fd, SHUT_WR) < 0) {
        log_debug("%s: shutdown for %s: %s", c->srv->name, c->peer_ip, strerror(errno));
        sconn_close(c);
        return;
    }
    c->closing = SCONN_LINGER;
    io_arm(&c->wev, &c->writing, false);
    linger_arm_timer(c);
}

/* Reads and drops what the client still sends. */
static void linger_read(struct sconn *c)
{
    const struct server_limits *lim = c->srv->lim;
    bool got = false;
    for (int i = 0; i < LINGER_READS; i++) {
        ssize_t n = read(c->fd, linger_scratch, sizeof linger_scratch);
        if (n > 0) {
            got = true;
            c->linger_bytes += (uint64_t)n;
            if (c->linger_bytes > lim->linger_bytes) {
                linger_cut(c, "COLDBREW_LINGERING_BYTES", (double)lim->linger_bytes);
                return;
            }
            if ((size_t)n < sizeof linger_scratch)
                break; /* most likely drained: skip the read that would say EAGAIN */
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (n < 0 || c->closing == SCONN_LINGER || evbuffer_get_length(c->out) == 0) {
            /* The client finished (or vanished): the linger did its job. */
            log_debug("%s: lingering close of %s done: %llu bytes in %.3fs", c->srv->name,
                      c->peer_ip, (unsigned long long)c->linger_bytes, linger_elapsed(c));
            sconn_close(c);
            return;
        }
        /* FIN while the answer is still flushing: close once it is out. */
        c->eof = true;
        io_arm(&c->rev, &c->reading, false);
        return;
    }
    if (got && c->closing == SCONN_LINGER)
        linger_arm_timer(c); /* the silence timeout restarts */
    else if (linger_elapsed(c) >= lim->linger_time)
        linger_cut(c, "COLDBREW_LINGERING_TIME_SECONDS", lim->linger_time);
}

static void linger_on_timer(struct sconn *c)
{
    const struct server_limits *lim = c->srv->lim;
    if (linger_elapsed(c) >= lim->linger_time - 0.001)
        linger_cut(c, "COLDBREW_LINGERING_TIME_SECONDS", lim->linger_time);
    else if (c->closing == SCONN_LINGER)
        linger_cut(c, "COLDBREW_LINGERING_TIMEOUT_SECONDS", lim->linger_timeout);
    else
        linger_arm_timer(c); /* early by the timer's rounding */
}

/* The request on c ended and the connection will not carry another: close
 * after the queued output, lingering when input was left unread. */
static void sconn_close_after(struct sconn *c, bool unread)
{
    if (unread)
        linger_begin(c);
    else
        c->close_after = true;
    if (evbuffer_get_length(c->out) == 0)
        sconn_flushed(c);
}

/* close_after's output is out (the request is over). */
static void sconn_flushed(struct sconn *c)
{
    switch (c->closing) {
    case SCONN_OPEN:
        sconn_close(c);
        break;
    case SCONN_DISCARD:
        linger_flushed(c);
        break;
    case SCONN_LINGER:
        break; /* already lingering */
    }
}

unsigned server_lingering(const struct server *s)
{
    return s ? s->nlingering : 0;
}

/* ---------------------------------------------------------------- TLS handshake */

/* What Go's net/http answers plaintext HTTP on a TLS port with. */
static const char plain_refusal[] = "HTTP/1.0 400 Bad Request\r\n\r\n"
                                    "Client sent an HTTP request to an HTTPS server.\n";

/* A TLS connection's first bytes: a TLS record starts with 0x16 (handshake).
 * Anything that looks like an HTTP method gets Go's plain-text refusal. */
static bool refuse_plaintext(struct sconn *c)
{
    unsigned char b[8];
    ssize_t n = recv(c->fd, b, sizeof b, MSG_PEEK);
    if (n <= 0 || b[0] == 0x16)
        return false;
    bool letters = true;
    for (ssize_t i = 0; i < n && i < 3; i++)
        letters = letters && b[i] >= 'A' && b[i] <= 'Z';
    if (!letters)
        return false; /* not HTTP either: OpenSSL refuses it with an alert */
    log_warn("%s: plaintext HTTP from %s:%d on the TLS port; refused", c->srv->name, c->peer_ip,
             c->peer_port);
    ssize_t w = send(c->fd, plain_refusal, sizeof plain_refusal - 1, MSG_NOSIGNAL);
    (void)w;
    sconn_close(c);
    return true;
}

/* One step of the server handshake; when done, the connection is HTTP/1.1,
 * or goes to the HTTP/2 side when ALPN settled on h2. */
static void sconn_handshake(struct sconn *c)
{
    if (SSL_get_state(c->tp.ssl) == TLS_ST_BEFORE && refuse_plaintext(c))
        return;
    const char *why = NULL;
    int r = transport_handshake(&c->tp, &why);
    if (r < 0) {
        log_warn("%s: TLS handshake from %s:%d refused: %s", c->srv->name, c->peer_ip, c->peer_port,
                 why ? why : "failed");
        sconn_close(c);
        return;
    }
    if (r == 0) {
        io_arm(&c->rev, &c->reading, !c->tp.want_write);
        io_arm(&c->wev, &c->writing, c->tp.want_write);
        return;
    }
    event_del(&c->tev);
    io_arm(&c->wev, &c->writing, false);
    io_arm(&c->rev, &c->reading, true);
    if (transport_alpn_h2(&c->tp)) {
        sconn_to_h2(c, NULL, NULL, 0);
        return;
    }
    if (c->srv->lim->header_timeout > 0) {
        struct timeval tv = clock_tv(c->srv->lim->header_timeout);
        event_add(&c->tev, &tv);
    }
    /* The request may have come with the handshake's last flight. */
    on_read(c->fd, EV_READ, c);
}

/* ---------------------------------------------------------------- requests */

static void on_conn_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct sconn *c = arg;
    if (c->closing != SCONN_OPEN) {
        linger_on_timer(c);
        return;
    }
    if (c->tp.handshaking) {
        log_warn("%s: TLS handshake from %s:%d not finished in %.1fs "
                 "(COLDBREW_TLS_HANDSHAKE_TIMEOUT_SECONDS); closing",
                 c->srv->name, c->peer_ip, c->peer_port, c->srv->lim->tls_handshake_timeout);
        sconn_close(c);
        return;
    }
    /* The header timeout. */
    if (c->req.state != REQ_IDLE)
        return;
    if (c->parser.head && c->parser.head->len)
        log_warn("%s: header timeout from %s after %.1fs; closing", c->srv->name, c->peer_ip,
                 c->srv->lim->header_timeout);
    sconn_close(c);
}

static void write_simple(struct sconn *c, int status, const char *ctype, const char *body,
                         size_t len, const char *extra, bool close)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\n%s%s%sContent-Length: %zu\r\nDate: %s\r\n%s%s\r\n", status,
                     http_status_text(status), ctype ? "Content-Type: " : "", ctype ? ctype : "",
                     ctype ? "\r\n" : "", len, http_date_now(),
                     close ? "Connection: close\r\n" : "", extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof head) {
        evbuffer_add_printf(c->out, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s%s\r\n", status,
                            http_status_text(status), len, close ? "Connection: close\r\n" : "",
                            extra ? extra : "");
    } else {
        evbuffer_add(c->out, head, (size_t)n);
    }
    if (len)
        evbuffer_add(c->out, body, len);
}

/* Malformed input: Go answers 400/431 with a short text body and closes. */
static void reject_head(struct sconn *c)
{
    int status = c->parser.err_status ? c->parser.err_status : 400;
    log_warn("%s: bad request from %s: %s (%d)", c->srv->name, c->peer_ip,
             c->parser.err ? c->parser.err : "malformed", status);
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s", status, http_status_text(status));
    write_simple(c, status, "text/plain; charset=utf-8", body, (size_t)n, NULL, true);
    if (c->parser.head) {
        http_head_release(c->parser.head);
        c->parser.head = NULL;
    }
    /* Nothing after a bad request is served, but the client may still be
     * sending it (a body, the rest of an oversized head): linger. */
    linger_begin(c);
    sconn_write(c);
}

static void start_request(struct sconn *c)
{
    struct request *r = &c->req;
    struct http_head *h = c->parser.head;
    memset(r, 0, offsetof(struct request, timer));
    r->app_ptr = NULL;
    c->holding = false;
    r->conn = c;
    r->srv = c->srv;
    r->head = h;
    r->state = REQ_HELD;
    r->start_ns = clock_now_ns();
    /* A message without a body is complete as soon as its head is. */
    r->body_done = !h->chunked && !(h->has_content_length && h->content_length > 0);
    r->resp_close = !h->keep_alive || c->srv->keepalive_off;
    c->first = false;
    event_del(&c->tev);
}

static void sconn_process(struct sconn *c)
{
    if (c->busy || c->dead)
        return;
    c->busy = true;
    for (;;) {
        if (c->dead)
            break;
        struct request *r = &c->req;
        if (r->state != REQ_IDLE) {
            if (r->on_input && (evbuffer_get_length(c->in) || c->eof))
                r->on_input(r);
            if (c->dead)
                break;
            if (r->state != REQ_IDLE) {
                if (c->eof && !r->upgraded && evbuffer_get_length(c->in) == 0) {
                    /* The client went away with its request in flight. */
                    log_debug("%s: client %s closed with a request in flight", c->srv->name,
                              c->peer_ip);
                    sconn_close(c);
                }
                break;
            }
            continue; /* the request ended: look for the next one */
        }
        if (c->close_after)
            break;
        size_t avail = evbuffer_get_length(c->in);
        if (!avail) {
            if (c->eof)
                sconn_close(c);
            break;
        }
        if (c->first && !c->parser.head) {
            /* h2c with prior knowledge: the HTTP/2 preface instead of a request. */
            int pre = h2_is_preface(c->in);
            if (pre < 0 && !c->eof)
                break; /* a prefix of it: wait for more */
            if (pre > 0) {
                sconn_to_h2(c, NULL, NULL, 0);
                return;
            }
        }
        if (!c->parser.head) {
            h1_parser_begin(&c->parser, http_head_acquire());
            if (!c->first && c->srv->lim->header_timeout > 0) {
                struct timeval tv = clock_tv(c->srv->lim->header_timeout);
                event_add(&c->tev, &tv);
            }
        }
        enum h1_result res = h1_parse_head(&c->parser, c->in);
        if (res == H1_ERROR) {
            reject_head(c);
            break;
        }
        if (res == H1_NEED_MORE) {
            if (c->eof) {
                if (c->parser.head->len)
                    log_debug("%s: %s closed mid-head", c->srv->name, c->peer_ip);
                sconn_close(c);
            }
            break;
        }
        const char *settings;
        size_t slen;
        /* h2c is for cleartext only (RFC 9113 §3.1): over TLS, Upgrade is ignored. */
        if (!transport_is_tls(&c->tp) &&
            wants_h2c(c->parser.head,
                      !c->parser.head->chunked && !(c->parser.head->has_content_length &&
                                                    c->parser.head->content_length > 0),
                      &settings, &slen)) {
            struct http_head *h = c->parser.head;
            c->parser.head = NULL; /* the HTTP/2 connection's from now on */
            sconn_to_h2(c, h, settings, slen);
            return;
        }
        start_request(c);
        c->parser.head = NULL; /* now owned by the request */
        c->srv->on_request(r, c->srv->arg);
    }
    if (!c->dead) {
        c->busy = false;
        sconn_update_reading(c);
        if (evbuffer_get_length(c->out) == 0 && c->close_after && c->req.state == REQ_IDLE)
            sconn_flushed(c);
    }
}

void request_set_timeouts(struct request *req, double total, double start, double idle)
{
    req->t_total = total;
    req->t_start = start;
    req->t_idle = idle;
    double first = 0;
    if (total > 0)
        first = total;
    if (start > 0 && (first == 0 || start < first))
        first = start;
    if (idle > 0 && (first == 0 || idle < first))
        first = idle;
    if (first > 0) {
        /* Every request of a revision arms the same duration: a libevent
         * common timeout makes that an O(1) queue insert, not a heap one.
         * Armed microseconds after arrival; the callback re-checks exact times. */
        static double cached;
        static struct timeval cached_tv;
        if (first != cached) {
            struct timeval tv = clock_tv(first);
            const struct timeval *ct = event_base_init_common_timeout(req->srv->base, &tv);
            cached_tv = ct ? *ct : tv;
            cached = first;
        }
        event_add(&req->timer, &cached_tv);
    }
}

void server_request_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct request *req = arg;
    if (req->state == REQ_IDLE)
        return;
    uint64_t now = clock_now_ns();
    double el = (double)(now - req->start_ns) / 1e9;
    const char *which = NULL;
    double next = 0;
    if (req->t_total > 0 && el >= req->t_total)
        which = "Request timeout";
    else if (req->t_start > 0 && req->state == REQ_HELD && el >= req->t_start)
        which = "Response start timeout";
    else if (req->t_idle > 0) {
        uint64_t last = req->last_write_ns ? req->last_write_ns : req->start_ns;
        double gap = (double)(now - last) / 1e9;
        if (gap >= req->t_idle)
            which = "Idle timeout";
        else
            next = req->t_idle - gap;
    }
    if (!which) {
        if (req->t_total > 0 && (next == 0 || req->t_total - el < next))
            next = req->t_total - el;
        if (req->t_start > 0 && req->state == REQ_HELD && (next == 0 || req->t_start - el < next))
            next = req->t_start - el;
        struct timeval tv = clock_tv(next > 0.001 ? next : 0.001);
        event_add(&req->timer, &tv);
        return;
    }
    struct sconn *c = req->conn;
    log_warn("%s: %s: %s %.*s after %.3fs", req->srv->name, which,
             llhttp_method_name((llhttp_method_t)req->head->method), (int)req->head->url.len,
             http_str_ptr(req->head, req->head->url), el);
    bool at_boundary = req->resp_chunked && req->resp_at_boundary;
    if (req->cancel)
        req->cancel(req);
    req->cancel = NULL;
    req->on_input = NULL;
    req->on_drain = NULL;
    if (req->state == REQ_HELD) {
        const char *tb = req->srv->timeout_body;
        request_reply(req, 504, "text/plain; charset=utf-8", tb, strlen(tb), NULL);
    } else if (!c) {
        request_end(req, true); /* HTTP/2: the stream is reset */
    } else if (req->resp_chunked && at_boundary && !req->upgraded) {
        /* Go's TimeoutHandler appends its text to a streamed body and ends the response. */
        evbuffer_add_printf(c->out, "%zx\r\n%s\r\n0\r\n\r\n", strlen(c->srv->timeout_body),
                            c->srv->timeout_body);
        req->status = 504;
        request_end(req, false);
        sconn_write(c);
    } else {
        request_end(req, true);
    }
}

void request_reply(struct request *req, int status, const char *content_type, const char *body,
                   size_t len, const char *extra)
{
    struct sconn *c = req->conn;
    if (req->state != REQ_HELD)
        return;
    if (!c) {
        server_h2_reply(req, status, content_type, body, len, extra);
        return;
    }
    /* An unread request body cannot be skipped safely: close instead. */
    bool close = req->resp_close || !req->body_done || c->srv->keepalive_off;
    if (req->head && req->head->method == HTTP_HEAD)
        write_simple(c, status, content_type, NULL, 0, extra, close);
    else
        write_simple(c, status, content_type, body, len, extra, close);
    req->status = status;
    req->resp_body_bytes = len;
    req->resp_close = close;
    req->state = REQ_SENDING;
    req->last_write_ns = clock_now_ns();
    request_end(req, false);
    sconn_write(c);
}

void request_error(struct request *req, int status, const char *body)
{
    request_reply(req, status, "text/plain; charset=utf-8", body, strlen(body),
                  "X-Content-Type-Options: nosniff\r\n");
}

void request_response_started(struct request *req, int status)
{
    req->state = REQ_SENDING;
    req->status = status;
    req->last_write_ns = clock_now_ns();
}

void request_end(struct request *req, bool abort)
{
    struct sconn *c = req->conn;
    if (req->state == REQ_IDLE)
        return;
    event_del(&req->timer);
    if (req->on_finish)
        req->on_finish(req, req->finish_arg);
    req->on_finish = NULL;
    req->on_response_head = NULL;
    req->cancel = NULL;
    req->holder = NULL;
    req->on_input = NULL;
    req->on_drain = NULL;
    req->state = REQ_IDLE;
    if (!c) {
        server_h2_end(req, abort); /* the head is the stream's; the request goes back */
        return;
    }
    c->holding = false; /* the next request is read normally (see sconn_update_reading) */
    bool keep =
        !abort && req->body_done && !req->resp_close && !req->upgraded && !c->srv->keepalive_off;
    http_head_release(req->head);
    req->head = NULL;
    if (c->dead)
        return;
    if (abort) {
        sconn_close(c);
        return;
    }
    if (!keep) {
        /* Unread input: a body the request did not consume, or pipelined
         * bytes. A tunnel's leftovers are not a request: no linger. */
        sconn_close_after(c, !req->upgraded && (!req->body_done || evbuffer_get_length(c->in)));
        return;
    }
    if (!c->busy)
        sconn_process(c);
}

struct evbuffer *request_output(struct request *req)
{
    return req->conn->out;
}
struct evbuffer *request_input(struct request *req)
{
    return req->conn->in;
}

void request_flush(struct request *req)
{
    if (!req->conn)
        return; /* HTTP/2 output goes out once per loop turn (h2_wire.c) */
    req->last_write_ns = clock_now_ns();
    sconn_write(req->conn);
}

void request_input_consumed(struct request *req)
{
    sconn_update_reading(req->conn);
}

bool request_output_full(struct request *req)
{
    if (!req->conn)
        return server_h2_output_full(req);
    return evbuffer_get_length(req->conn->out) >= req->conn->srv->lim->watermark;
}

const char *request_peer_ip(const struct request *req)
{
    return req->conn ? req->conn->peer_ip : server_h2_peer_ip(req);
}

int request_peer_port(const struct request *req)
{
    return req->conn ? req->conn->peer_port : server_h2_peer_port(req);
}

double request_elapsed(const struct request *req)
{
    return (double)(clock_now_ns() - req->start_ns) / 1e9;
}

/* ---------------------------------------------------------------- accept */

/* No memory for a new connection (alloc.h, request path): a best-effort
 * 503 written straight to the socket (it fits any socket buffer), a log
 * line, and the server keeps serving the others. */
static void refuse_no_memory(struct server *s, int fd, struct sconn *c, struct evbuffer *in)
{
    static const char resp[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                               "Connection: close\r\n\r\n";
    log_error("%s: %s for a new connection; answered 503", s->name, coldbrew_err_no_memory);
    (void)!write(fd, resp, sizeof resp - 1);
    close(fd);
    if (in)
        evbuffer_free(in);
    free(c);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    struct server *s = arg;
    for (int i = 0; i < 64; i++) {
        if (s->nconns >= s->lim->max_conns) {
            struct sconn *old = TAILQ_FIRST(&s->lingering);
            if (old) {
                /* A lingering connection only waits for a client that was
                 * answered already: a new client comes first. */
                log_warn("%s: %u connections open (COLDBREW_MAX_CONNECTIONS); closing the oldest "
                         "lingering one, from %s:%d",
                         s->name, s->nconns, old->peer_ip, old->peer_port);
                sconn_close(old);
            } else {
                log_warn("%s: %u connections open (COLDBREW_MAX_CONNECTIONS); not accepting",
                         s->name, s->nconns);
                event_del(&s->accept_ev);
                return;
            }
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR)
                log_warn("%s: accept: %s", s->name, strerror(errno));
            return;
        }
        struct sconn *c = calloc(1, sizeof *c);
        struct evbuffer *in = c ? evbuffer_new() : NULL, *out = in ? evbuffer_new() : NULL;
        if (!out) {
            refuse_no_memory(s, fd, c, in);
            continue;
        }
        c->srv = s;
        c->base = s->base;
        c->fd = fd;
        c->first = true;
        net_nodelay(fd);
        net_peer_ip(&ss, c->peer_ip, sizeof c->peer_ip, &c->peer_port);
        c->in = in;
        c->out = out;
        h1_parser_init(&c->parser, true, s->lim->max_header_bytes, s->lim->max_headers);
        c->req.conn = c;
        event_assign(&c->rev, s->base, fd, EV_READ | EV_PERSIST, on_read, c);
        event_assign(&c->wev, s->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
        event_assign(&c->tev, s->base, -1, 0, on_conn_timer, c);
        event_assign(&c->req.timer, s->base, -1, 0, server_request_timer_cb, &c->req);
        event_add(&c->rev, NULL);
        c->reading = true;
        double first_timeout = s->lim->header_timeout;
        if (s->tls) {
            SSL *ssl = tls_ctx_server_accept(s->tls, fd);
            if (!ssl) {
                log_error("%s: out of memory for a TLS connection from %s; closing", s->name,
                          c->peer_ip);
                event_del(&c->rev);
                evbuffer_free(c->in);
                evbuffer_free(c->out);
                close(fd);
                free(c);
                continue;
            }
            transport_tls_attach(&c->tp, ssl);
            first_timeout = s->lim->tls_handshake_timeout;
        }
        if (first_timeout > 0) {
            struct timeval tv = clock_tv(first_timeout);
            event_add(&c->tev, &tv);
        }
        LIST_INSERT_HEAD(&s->conns, c, link);
        s->nconns++;
    }
}

struct server *server_open(struct event_base *base, const char *name, const char *host, int port,
                           const struct server_limits *lim, request_cb cb, void *arg,
                           const char **err)
{
    int fd = net_listen(host, port, 1024);
    if (fd < 0) {
        *err = strerror(errno);
        return NULL;
    }
    struct server *s = xcalloc(1, sizeof *s); /* start-up: aborts when memory is short */
    s->base = base;
    s->name = name;
    s->fd = fd;
    s->lim = lim;
    s->on_request = cb;
    s->arg = arg;
    s->timeout_body = "request timeout";
    LIST_INIT(&s->conns);
    TAILQ_INIT(&s->lingering);
    event_assign(&s->accept_ev, base, fd, EV_READ | EV_PERSIST, on_accept, s);
    event_add(&s->accept_ev, NULL);
    s->accepting = true;
    return s;
}

void server_set_tls(struct server *s, struct tls_ctx_server *tls)
{
    s->tls = tls;
}

void server_stop_accepting(struct server *s)
{
    if (!s->accepting)
        return;
    s->accepting = false;
    event_del(&s->accept_ev);
    close(s->fd);
    s->fd = -1;
}

void server_close_idle(struct server *s)
{
    s->keepalive_off = true;
    server_h2_shutdown_all(s); /* GOAWAY: streams in flight finish, new ones go elsewhere */
    struct sconn *c, *next;
    for (c = LIST_FIRST(&s->conns); c; c = next) {
        next = LIST_NEXT(c, link);
        if (c->closing != SCONN_OPEN)
            continue; /* lingering: it ends within its bounds */
        if (c->req.state == REQ_IDLE && evbuffer_get_length(c->in) == 0)
            sconn_close(c);
        else
            c->req.resp_close = true;
    }
}

void server_free(struct server *s)
{
    if (!s)
        return;
    server_stop_accepting(s);
    struct sconn *c;
    while ((c = LIST_FIRST(&s->conns)))
        sconn_close(c);
    while (s->nh2)
        h2_conn_close(s->h2[s->nh2 - 1]); /* on_close takes it out of the array */
    free(s->h2);
    server_h2_trim(0);
    free(s);
}
