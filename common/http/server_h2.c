/* server_h2.c — HTTP/2 exchanges on the server's listeners (see server.h).
 *
 * A listener speaks HTTP/1.1, h2c with prior knowledge and h2c by Upgrade
 * on one port, as Knative's does (pkgnet.NewServer wraps its handler in
 * h2c.NewHandler). server.c sniffs the first bytes of a connection: the
 * HTTP/2 preface hands the socket to h2_server.c (server_h2_adopt); an
 * HTTP/1.1 request with `Upgrade: h2c` and no body is answered 101 and the
 * request becomes stream 1 (server_h2_upgrade).
 *
 * Each stream becomes a struct request, the protocol-neutral exchange the
 * application sees for HTTP/1 too: the same on_request callback, breaker,
 * stats, timers, on_finish and logs. What differs is behind the request_*
 * calls: for an HTTP/2 exchange they answer through h2_stream_* (a HEADERS
 * and DATA frame instead of HTTP/1 text, RST_STREAM instead of a closed
 * connection), and request_end() gives the request back to a free list
 * instead of moving the connection to its next request.
 *
 * Ownership: the exchange is the stream's holder from on_request until
 * request_end(); the stream belongs to its connection. If the stream dies
 * first (client reset, connection gone), the exchange's holder is cancelled
 * and the exchange ends, as for an HTTP/1 client that vanished. */
#include <llhttp.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/freelist.h"
#include "http/h2_server.h"
#include "http/http_head.h"
#include "core/log.h"
#include "http/server.h"
#include "http/server_h2.h"

static struct freelist exchanges = FREELIST_INIT(struct request);

/* ---------------------------------------------------------------- stream -> exchange */

static void on_stream_cancel(struct h2_stream *st)
{
    struct request *req = st->holder;
    st->holder = NULL;
    if (!req || req->state == REQ_IDLE)
        return;
    log_debug("%s: stream %d from %s reset with its request in flight", req->srv->name, st->id,
              h2_stream_peer_ip(st));
    req->h2 = NULL; /* gone: nothing more is written to it */
    if (req->cancel)
        req->cancel(req);
    req->cancel = NULL;
    request_end(req, false);
}

static void on_stream_input(struct h2_stream *st)
{
    struct request *req = st->holder;
    if (!req)
        return;
    req->body_done = st->in_done && !h2_unread(st->in);
    if (req->on_input)
        req->on_input(req);
}

static void on_stream_drain(struct h2_stream *st)
{
    struct request *req = st->holder;
    if (req && req->on_drain)
        req->on_drain(req);
}

static void on_stream_request(struct h2_stream *st, void *arg)
{
    struct server *s = arg;
    struct request *req = freelist_get(&exchanges);
    memset(req, 0, sizeof *req);
    req->srv = s;
    req->h2 = st;
    req->head = st->head;
    req->state = REQ_HELD;
    req->start_ns = clock_now_ns();
    req->body_done = st->in_done && !h2_unread(st->in);
    event_assign(&req->timer, s->base, -1, 0, server_request_timer_cb, req);
    st->holder = req;
    st->cancel = on_stream_cancel;
    st->on_input = on_stream_input;
    st->on_drain = on_stream_drain;
    s->on_request(req, s->arg);
}

static void on_h2_close(struct h2_conn *c, void *arg)
{
    struct server *s = arg;
    for (unsigned i = 0; i < s->nh2; i++) {
        if (s->h2[i] == c) {
            s->h2[i] = s->h2[--s->nh2];
            break;
        }
    }
    server_conn_closed(s);
}

static const struct h2_server_ops h2_ops = {on_stream_request, on_h2_close};

static bool track(struct server *s, struct h2_conn *c)
{
    if (!c)
        return false;
    if (s->nh2 == s->h2cap) {
        unsigned cap = s->h2cap ? s->h2cap * 2 : 16;
        struct h2_conn **n = realloc(s->h2, cap * sizeof *n);
        if (!n) {
            log_error("%s: out of memory tracking HTTP/2 connections; closing one", s->name);
            h2_conn_shutdown(c);
            return false;
        }
        s->h2 = n;
        s->h2cap = cap;
    }
    s->h2[s->nh2++] = c;
    if (s->keepalive_off)
        h2_conn_shutdown(c); /* draining already: serve what comes, then go */
    return true;
}

void server_h2_adopt(struct server *s, int fd, struct transport *tp, const char *peer_ip,
                     int peer_port, struct evbuffer *preread)
{
    track(s, h2_conn_new_tp(s->base, fd, tp, peer_ip, peer_port, &s->lim->h2, &h2_ops, s, preread));
}

void server_h2_upgrade(struct server *s, int fd, const char *peer_ip, int peer_port,
                       struct evbuffer *preread, struct http_head *head, const char *settings,
                       size_t settings_len)
{
    track(s, h2_conn_upgrade(s->base, fd, peer_ip, peer_port, &s->lim->h2, &h2_ops, s, preread,
                             settings, settings_len, head));
}

void server_h2_shutdown_all(struct server *s)
{
    for (unsigned i = 0; i < s->nh2; i++)
        h2_conn_shutdown(s->h2[i]);
}

/* ---------------------------------------------------------------- exchange -> stream */

/* Header lines "Name: value\r\n" (request_reply's `extra`) as HTTP/2 fields,
 * names lower-cased into `arena`. */
static size_t fields_from_lines(const char *extra, struct h2_header_out *f, size_t max, char *arena,
                                size_t cap)
{
    size_t n = 0, used = 0;
    const char *p = extra, *stop = extra ? extra + strlen(extra) : NULL;
    while (p && p < stop && n < max) {
        const char *eol = memchr(p, '\n', (size_t)(stop - p));
        const char *colon = memchr(p, ':', (size_t)((eol ? eol : stop) - p));
        if (!eol || !colon)
            break;
        size_t nl = (size_t)(colon - p);
        if (used + nl > cap)
            break;
        for (size_t i = 0; i < nl; i++)
            arena[used + i] = (char)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32 : p[i]);
        const char *v = colon + 1, *ve = eol;
        while (v < ve && *v == ' ')
            v++;
        while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
            ve--;
        f[n++] = (struct h2_header_out){arena + used, v, nl, (size_t)(ve - v)};
        used += nl;
        p = eol + 1;
    }
    return n;
}

void server_h2_reply(struct request *req, int status, const char *content_type, const char *body,
                     size_t len, const char *extra)
{
    struct h2_stream *st = req->h2;
    if (st && st->state == H2S_OPEN) {
        struct h2_header_out f[16];
        char arena[512];
        size_t n = fields_from_lines(extra, f, 14, arena, sizeof arena);
        char clen[24];
        int cl = snprintf(clen, sizeof clen, "%zu", len);
        f[n++] = (struct h2_header_out){"content-length", clen, 14, (size_t)cl};
        if (content_type)
            f[n++] = (struct h2_header_out){"content-type", content_type, 12, strlen(content_type)};
        bool head_req = req->head->method == HTTP_HEAD;
        /* What the client still sends is not read; HTTP/2 tells it to stop
         * (RST_STREAM NO_ERROR after the answer), its lingering close. */
        h2_stream_respond(st, status, f, n, head_req || len == 0);
        if (!head_req && len) {
            struct evbuffer *b = evbuffer_new();
            if (b) {
                evbuffer_add(b, body, len);
                h2_stream_write(st, b);
                evbuffer_free(b);
            }
            h2_stream_end(st, NULL, 0);
        }
        h2_stream_discard_input(st);
    }
    req->status = status;
    req->resp_body_bytes = len;
    req->state = REQ_SENDING;
    req->last_write_ns = clock_now_ns();
    request_end(req, false);
}

/* A timeout after the response started: the stream is reset (HTTP/2 has
 * no way to end a body early that a client would take as complete). */
void server_h2_end(struct request *req, bool abort)
{
    struct h2_stream *st = req->h2;
    req->h2 = NULL;
    if (st) {
        st->holder = NULL;
        st->cancel = NULL, st->on_input = NULL, st->on_drain = NULL;
        if (abort || st->state == H2S_OPEN || st->state == H2S_ANSWERING)
            h2_stream_reset(st, NGHTTP2_INTERNAL_ERROR);
    }
    freelist_put(&exchanges, req);
}

bool server_h2_output_full(const struct request *req)
{
    return req->h2 && h2_stream_output_full(req->h2);
}

const char *server_h2_peer_ip(const struct request *req)
{
    return req->h2 ? h2_stream_peer_ip(req->h2) : "";
}

int server_h2_peer_port(const struct request *req)
{
    return req->h2 ? h2_stream_peer_port(req->h2) : 0;
}

void server_h2_trim(unsigned keep)
{
    freelist_trim(&exchanges, keep);
}
