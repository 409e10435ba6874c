/* proxy_h1.c — HTTP/1.1 on both sides of the exchange (proxy_codec.h).
 *
 * The back codec: the request goes up on a pooled connection (the whole
 * connection is the exchange's stream), its head serialised from the
 * semantic head with the caller's edits; the response is parsed with the
 * connection's h1_parser and raised as px_head / px_data / px_end.
 *
 * The front table: the response head as HTTP/1.1 text into the client
 * connection's output, the framing decided there (chunked verbatim,
 * unframed for an HTTP/1.0 client, delimited by close when the upstream
 * gave no length).
 *
 * The HTTP/1 fast path: body bytes keep their wire framing both ways and
 * move evbuffer to evbuffer (no copy), the parsers validating the framing
 * as the bytes pass. Features only HTTP/1 has live here: 1xx forwarding,
 * the 101 tunnel, the retry on a reused connection the backend closed. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/io.h"
#include "core/log.h"
#include "proxy/proxy_codec.h"
#include "http/server.h"
#include "proxy/upstream.h"

#define SCRATCH_BYTES (1 << 18)

static char scratch[SCRATCH_BYTES];

/* ---------------------------------------------------------------- heads */

struct out {
    char *p;
    size_t len, cap;
    bool overflow;
};

static inline void put(struct out *o, const char *s, size_t n)
{
    if (o->len + n > o->cap) {
        o->overflow = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static inline void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_header(struct out *o, const struct http_head *h, const struct http_header *hd)
{
    put(o, h->buf + hd->name.off, hd->name.len);
    put(o, ": ", 2);
    put(o, h->buf + hd->value.off, hd->value.len);
    put(o, "\r\n", 2);
}

static bool in_drop_list(const struct http_head *h, const struct http_header *hd,
                         const char *const *drop)
{
    if (!drop)
        return false;
    for (; *drop; drop++)
        if (http_header_is(h, hd, *drop))
            return true;
    return false;
}

size_t proxy_build_request_head(const struct request *req, const struct proxy_edit *e, char *buf,
                                size_t cap)
{
    const struct http_head *h = req->head;
    struct out o = {buf, 0, cap, false};
    puts_(&o, llhttp_method_name((llhttp_method_t)h->method));
    put(&o, " ", 1);
    put(&o, http_str_ptr(h, h->url), h->url.len);
    put(&o, " HTTP/1.1\r\n", 11);
    if (e->host) {
        put(&o, "Host: ", 6);
        put(&o, e->host, e->host_len);
        put(&o, "\r\n", 2);
    }
    bool te_trailers = false;
    unsigned nxff = 0;
    const struct http_header *upgrade = NULL;
    for (unsigned i = 0; i < h->nheaders; i++) {
        const struct http_header *hd = &h->hdr[i];
        if (http_header_is(h, hd, "host")) {
            if (!e->host)
                put_header(&o, h, hd);
            continue;
        }
        if (http_head_is_hop(h, hd)) {
            if (http_header_is(h, hd, "te") &&
                http_token_list_has(h->buf + hd->value.off, hd->value.len, "trailers"))
                te_trailers = true;
            if (http_header_is(h, hd, "upgrade"))
                upgrade = hd;
            continue;
        }
        if (in_drop_list(h, hd, e->drop))
            continue;
        if (e->append_xff && http_header_is(h, hd, "x-forwarded-for")) {
            nxff++;
            continue;
        }
        put_header(&o, h, hd);
    }
    if (te_trailers)
        puts_(&o, "Te: trailers\r\n");
    if (e->append_xff) {
        /* Go's ReverseProxy: prior values joined with ", ", then the peer. */
        put(&o, "X-Forwarded-For: ", 17);
        for (unsigned i = 0; nxff && i < h->nheaders; i++) {
            const struct http_header *hd = &h->hdr[i];
            if (!http_header_is(h, hd, "x-forwarded-for"))
                continue;
            put(&o, h->buf + hd->value.off, hd->value.len);
            put(&o, ", ", 2);
        }
        puts_(&o, request_peer_ip(req));
        put(&o, "\r\n", 2);
    }
    if (h->chunked)
        puts_(&o, "Transfer-Encoding: chunked\r\n");
    if (h->upgrade && upgrade) {
        puts_(&o, "Connection: Upgrade\r\nUpgrade: ");
        put(&o, h->buf + upgrade->value.off, upgrade->value.len);
        put(&o, "\r\n", 2);
    }
    if (e->extra)
        put(&o, e->extra, e->extra_len);
    put(&o, "\r\n", 2);
    return o.overflow ? 0 : o.len;
}

/* ---------------------------------------------------------------- front: answering an HTTP/1
 * client */

/* The response head: hop-by-hop headers dropped (Trailer is kept: chunked
 * bodies go through verbatim, trailers included), and the framing toward
 * the client chosen. */
static size_t build_response_head(struct proxy_exchange *x, const struct http_head *h,
                                  const char *extra, size_t extra_len, char *buf, size_t cap)
{
    struct request *req = x->req;
    struct out o = {buf, 0, cap, false};
    char line[16] = "HTTP/1.1 000 ";
    unsigned st = h->status % 1000;
    line[9] = (char)('0' + st / 100);
    line[10] = (char)('0' + st / 10 % 10);
    line[11] = (char)('0' + st % 10);
    put(&o, line, 13);
    if (h->reason.len)
        put(&o, http_str_ptr(h, h->reason), h->reason.len);
    else
        puts_(&o, http_status_text(h->status));
    put(&o, "\r\n", 2);
    bool has_date = false;
    const struct http_header *upgrade = NULL;
    for (unsigned i = 0; i < h->nheaders; i++) {
        const struct http_header *hd = &h->hdr[i];
        if (http_header_is(h, hd, "upgrade"))
            upgrade = hd;
        if (http_head_is_hop(h, hd) && !http_header_is(h, hd, "trailer"))
            continue;
        if (!has_date && http_header_is(h, hd, "date"))
            has_date = true;
        put_header(&o, h, hd);
    }
    if (h->status == 101 && upgrade) {
        puts_(&o, "Connection: Upgrade\r\nUpgrade: ");
        put(&o, h->buf + upgrade->value.off, upgrade->value.len);
        put(&o, "\r\n", 2);
    } else if (h->status >= 200) {
        bool head_req = req->head->method == HTTP_HEAD;
        bool bodyless = head_req || h->status == 204 || h->status == 304;
        if (h->chunked && !bodyless) {
            if (req->head->major == 1 && req->head->minor == 0) {
                /* HTTP/1.0 clients cannot take chunked: unframe and close. */
                x->dechunk = true;
                req->resp_close = true;
            } else {
                puts_(&o, "Transfer-Encoding: chunked\r\n");
                req->resp_chunked = true;
            }
        } else if (h->chunked && head_req) {
            puts_(&o, "Transfer-Encoding: chunked\r\n");
        } else if (!h->has_content_length && !bodyless) {
            req->resp_close = true; /* delimited by close, on both sides */
        }
        if (!has_date) {
            puts_(&o, "Date: ");
            puts_(&o, http_date_now());
            put(&o, "\r\n", 2);
        }
        if (req->resp_close)
            puts_(&o, "Connection: close\r\n");
    }
    if (extra)
        put(&o, extra, extra_len);
    put(&o, "\r\n", 2);
    return o.overflow ? 0 : o.len;
}

static bool front_head(struct proxy_exchange *x, const struct http_head *h, bool end,
                       const char *extra, size_t extra_len)
{
    (void)end; /* HTTP/1 framing says it */
    size_t n = build_response_head(x, h, extra, extra_len, scratch, sizeof scratch);
    if (!n)
        return false;
    evbuffer_add(request_output(x->req), scratch, n);
    if (h->status < 200 && h->status != 101)
        request_flush(x->req); /* interim heads go at once */
    return true;
}

static size_t front_room(struct proxy_exchange *x)
{
    struct request *req = x->req;
    size_t wm = req->srv->lim->watermark, queued = evbuffer_get_length(request_output(req));
    return queued < wm ? wm - queued : 0;
}

static void front_data(struct proxy_exchange *x, struct evbuffer *src, size_t n)
{
    if (src && n)
        evbuffer_remove_buffer(src, request_output(x->req), n);
    request_flush(x->req);
}

static void front_end(struct proxy_exchange *x, const struct http_head *trailers)
{
    /* Trailers of an HTTP/1 response went through verbatim with its last
     * chunk; a back codec that parses them (HTTP/2) is not paired with
     * this front (protocol mirroring). */
    (void)x, (void)trailers;
}

const struct front_ops h1_front = {front_head, front_room, front_data, front_end};

/* ---------------------------------------------------------------- back: the request */

static void on_up_readable(struct upconn *uc);
static void on_up_writable(struct upconn *uc);
static const struct upconn_ops up_ops = {on_up_readable, on_up_writable};
static void flush_up(struct proxy_exchange *x);

static bool idempotent(const struct request *req)
{
    switch (req->head->method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_TRACE:
        return true;
    default:
        return http_head_find(req->head, "idempotency-key") != NULL;
    }
}

/* Is the exchange still the holder of uc (an event may have finished it)? */
static inline bool holds(const struct proxy_exchange *x, const struct upconn *uc)
{
    return !uc->dead && uc->owner == x && x->s.uc == uc;
}

/* Moves up to the room left under the watermark; returns bytes moved. */
static size_t move_some(struct evbuffer *src, struct evbuffer *dst, size_t watermark, bool all)
{
    size_t have = evbuffer_get_length(src), queued = evbuffer_get_length(dst);
    size_t room = all ? have : (queued < watermark ? watermark - queued : 0);
    size_t n = have < room ? have : room;
    if (n)
        evbuffer_remove_buffer(src, dst, n);
    return n;
}

/* The client's body bytes, framing validated by its parser, go up verbatim. */
static void pump_body(struct proxy_exchange *x, struct upconn *uc)
{
    struct request *req = x->req;
    struct sconn *c = req->conn;
    size_t wm = req->srv->lim->watermark;
    if (x->state == PX_TUNNEL) {
        if (move_some(c->in, uc->out, wm, false))
            req->last_write_ns = clock_now_ns();
        request_input_consumed(req);
        return;
    }
    if (req->body_done)
        return;
    size_t queued = evbuffer_get_length(uc->out);
    if (queued >= wm)
        return;
    size_t n;
    enum h1_result r = h1_parse_body(&c->parser, c->in, wm - queued, &n);
    if (n) {
        evbuffer_remove_buffer(c->in, uc->out, n);
        x->body_sent += n;
    }
    if (r == H1_DONE) {
        req->body_done = true;
    } else if (r == H1_ERROR) {
        px_bad_body(x, c->parser.err);
        return;
    }
    request_input_consumed(req);
}

static void fail_errno(struct proxy_exchange *x, const char *op, int err)
{
    char msg[200];
    px_errno_text(msg, sizeof msg, x->up, op, err);
    px_fail(x, msg);
}

/* The upstream failed before or during the response. A reused pooled
 * connection that the backend closed as we reused it is tried once more,
 * first in the queue (the idle ones are the likeliest stale too, but the
 * backend closing them is noticed as they go). */
static void fail(struct proxy_exchange *x, struct upconn *uc, const char *what)
{
    struct request *req = x->req;
    if (!uc->got_bytes && req->state == REQ_HELD && uc->reused && !x->retried && req->body_done &&
        x->body_sent == 0 && idempotent(req)) {
        log_debug("upstream %s closed a reused connection (%s); retrying", x->up->addr.text, what);
        px_retry(x);
        return;
    }
    px_fail(x, what);
}

static void flush_up(struct proxy_exchange *x)
{
    struct upconn *uc = x->s.uc;
    for (int round = 0; round < 4; round++) {
        pump_body(x, uc);
        if (!holds(x, uc))
            return;
        size_t before = evbuffer_get_length(uc->out);
        if (upconn_write(uc) == IO_ERROR) {
            int err = errno;
            char msg[200];
            px_errno_text(msg, sizeof msg, x->up, "write", err);
            fail(x, uc, msg);
            return;
        }
        size_t left = evbuffer_get_length(uc->out);
        upconn_want_write(uc, left > 0);
        /* Keep going only while the client has more body for us and we made progress. */
        struct request *req = x->req;
        if (left || before == 0 || evbuffer_get_length(req->conn->in) == 0 ||
            (req->body_done && x->state != PX_TUNNEL))
            break;
    }
}

static void on_up_writable(struct upconn *uc)
{
    flush_up(uc->owner);
}

static void back_pump(struct proxy_exchange *x)
{
    struct upconn *uc = x->s.uc;
    struct sconn *c = x->req->conn;
    if (x->state == PX_TUNNEL && c->eof) {
        /* The client finished the tunnel: pass on what is left, then close both. */
        evbuffer_add_buffer(uc->out, c->in);
        upconn_write(uc);
        px_close(x, false);
        return;
    }
    flush_up(x);
}

/* ---------------------------------------------------------------- back: the response */

static void process(struct proxy_exchange *x, struct upconn *uc);

static void back_resume(struct proxy_exchange *x)
{
    struct upconn *uc = x->s.uc;
    if (!uc->reading)
        upconn_want_read(uc, true);
    if (evbuffer_get_length(uc->in) || uc->eof)
        process(x, uc);
}

static void start_tunnel(struct proxy_exchange *x, struct upconn *uc)
{
    struct request *req = x->req;
    req->upgraded = true;
    x->state = PX_TUNNEL;
    /* Bytes that came with the 101, and early client bytes, go through now. */
    evbuffer_add_buffer(request_output(req), uc->in);
    evbuffer_add_buffer(uc->out, req->conn->in);
    request_flush(req);
    if (req->state == REQ_IDLE || !holds(x, uc))
        return;
    flush_up(x);
}

static bool upgrade_matches(const struct request *req, const struct upconn *uc)
{
    size_t ql, rl;
    const char *q = http_head_get(req->head, "upgrade", &ql);
    const char *r = http_head_get(uc->head, "upgrade", &rl);
    return q && r && ql == rl && !strncasecmp(q, r, ql);
}

static bool tunnel_process(struct proxy_exchange *x, struct upconn *uc)
{
    struct request *req = x->req;
    size_t wm = req->srv->lim->watermark;
    if (move_some(uc->in, request_output(req), wm, uc->eof))
        request_flush(req);
    if (!holds(x, uc) || req->state == REQ_IDLE)
        return false;
    if (uc->eof) {
        px_close(x, false);
        return false;
    }
    upconn_want_read(uc, evbuffer_get_length(uc->in) < wm);
    return true;
}

/* Response heads: 1xx pass through as they come, a 101 with a matching
 * Upgrade starts the tunnel, the final one starts the body. False when
 * the exchange went on without this call (finished, tunnel, need more). */
static bool process_heads(struct proxy_exchange *x, struct upconn *uc)
{
    struct request *req = x->req;
    while (x->state == PX_SENDING) {
        enum h1_result r = h1_parse_head(&uc->parser, uc->in);
        if (r == H1_ERROR) {
            char msg[160];
            snprintf(msg, sizeof msg, "net/http: HTTP/1.x transport connection broken: %s",
                     uc->parser.err ? uc->parser.err : "malformed HTTP response");
            fail(x, uc, msg);
            return false;
        }
        if (r == H1_NEED_MORE) {
            if (uc->eof)
                fail(x, uc, "EOF");
            return false;
        }
        int status = uc->head->status;
        if (status == 101 && (!req->head->upgrade || !upgrade_matches(req, uc))) {
            fail(x, uc, "backend tried to switch protocol without a matching Upgrade");
            return false;
        }
        px_head(x, uc->head, false);
        if (!holds(x, uc) || req->state == REQ_IDLE)
            return false;
        if (status == 101) {
            start_tunnel(x, uc);
            return false;
        }
        if (status >= 100 && status < 200) {
            http_head_release(uc->head);
            uc->head = http_head_acquire();
            h1_parser_begin(&uc->parser, uc->head);
            continue;
        }
        if (x->dechunk)
            uc->parser.dechunk = request_output(req);
        if (req->head->method == HTTP_HEAD)
            h1_parser_skip_body(&uc->parser);
    }
    return true;
}

/* The body toward the client, as much as it takes now. False when the
 * exchange finished or went on elsewhere (nothing of it may be touched). */
static bool process_once(struct proxy_exchange *x, struct upconn *uc)
{
    if (x->state == PX_TUNNEL)
        return tunnel_process(x, uc);
    if (x->state == PX_SENDING && !process_heads(x, uc))
        return false;
    struct request *req = x->req;
    size_t room = x->front->room(x);
    size_t n = 0;
    enum h1_result r = H1_BODY;
    if (room || uc->parser.done)
        r = h1_parse_body(&uc->parser, uc->in, room, &n);
    req->resp_at_boundary = uc->parser.chunk_boundary;
    if (r == H1_ERROR) {
        char msg[160];
        snprintf(msg, sizeof msg, "malformed response body: %s",
                 uc->parser.err ? uc->parser.err : "?");
        px_fail(x, msg);
        return false;
    }
    bool eof_end = uc->eof && evbuffer_get_length(uc->in) == n;
    if (r == H1_DONE || (eof_end && h1_parser_eof_completes(&uc->parser))) {
        if (n && uc->parser.dechunk)
            evbuffer_drain(uc->in, n);
        else if (n)
            evbuffer_remove_buffer(uc->in, request_output(req), n);
        req->resp_body_bytes = uc->parser.body_bytes;
        px_end(x, NULL);
        return false;
    }
    if (n) {
        if (uc->parser.dechunk) {
            evbuffer_drain(uc->in, n); /* the parser wrote the unframed bytes */
            px_data(x, NULL, 0);
        } else {
            px_data(x, uc->in, n);
        }
        if (!holds(x, uc))
            return false;
    }
    if (eof_end) {
        char msg[160];
        snprintf(msg, sizeof msg, "upstream %s closed mid-response", x->up->addr.text);
        px_fail(x, msg);
        return false;
    }
    upconn_want_read(uc, !request_output_full(req) &&
                             evbuffer_get_length(uc->in) < req->srv->lim->watermark);
    return true;
}

/* Writing to the client can call its on_drain at once (server.c pushes
 * output as it is queued), which asks for more of this very response while
 * process_once() is in the middle of it. Such a call is noted and served by
 * the outer call once it is done, never nested. */
static struct upconn *processing;
static bool process_again;

static void process(struct proxy_exchange *x, struct upconn *uc)
{
    if (processing == uc) {
        process_again = true;
        return;
    }
    struct upconn *outer = processing;
    bool outer_again = process_again;
    processing = uc;
    for (int round = 0; round < 64; round++) {
        process_again = false;
        if (!process_once(x, uc) || !process_again)
            break;
    }
    processing = outer;
    process_again = outer_again;
}

static void on_up_readable(struct upconn *uc)
{
    struct proxy_exchange *x = uc->owner;
    switch (upconn_read(uc)) {
    case IO_OK:
        uc->got_bytes = true;
        break;
    case IO_AGAIN:
        return;
    case IO_ERROR:
        if (!uc->got_bytes || x->state == PX_SENDING) {
            fail_errno(x, "read", errno);
            return;
        }
        uc->eof = true; /* a reset after the head is a cut body */
        upconn_want_read(uc, false);
        break;
    case IO_EOF:
        uc->eof = true;
        upconn_want_read(uc, false);
        break;
    }
    process(x, uc);
}

/* ---------------------------------------------------------------- back: the stream */

/* A usable connection: the head goes up, then the body as it comes. */
static void go(struct proxy_exchange *x, struct upconn *uc)
{
    struct request *req = x->req;
    x->s.uc = uc;
    if (uc->head)
        http_head_release(uc->head);
    uc->head = http_head_acquire();
    h1_parser_begin(&uc->parser, uc->head);
    size_t n = proxy_build_request_head(req, x->edit, scratch, sizeof scratch);
    if (!n) {
        px_refuse(x, 431, "request header too large\n");
        return;
    }
    evbuffer_add(uc->out, scratch, n);
    px_ready(x);
    flush_up(x);
    /* A client that sent part of its body and hung up while the request
     * waited (for a connection, or in the breaker's queue) was not seen
     * going: the server notices EOF only when it hands input to a holder,
     * and nobody held the input then. Its body can never complete. */
    struct sconn *c = req->conn;
    if (holds(x, uc) && !req->body_done && c->eof && evbuffer_get_length(c->in) == 0) {
        log_debug("client %s left with its request body unfinished", c->peer_ip);
        px_close(x, true);
    }
}

static void on_conn_ready(struct upstream_waiter *w, struct upconn *uc, int err)
{
    struct proxy_exchange *x = (struct proxy_exchange *)w; /* the waiter is first */
    if (!uc) {
        fail_errno(x, "connect", err);
        return;
    }
    go(x, uc);
}

static void back_open(struct proxy_exchange *x)
{
    x->waiter.on_ready = on_conn_ready;
    x->waiter.ops = &up_ops;
    x->waiter.owner = x;
    struct upconn *uc = upstream_checkout(x->up, &x->waiter, x->retried);
    if (uc) {
        go(x, uc);
        return;
    }
    if (x->waiter.queued) {
        px_wait(x);
        return;
    }
    fail_errno(x, "connect", errno);
}

static void back_release(struct proxy_exchange *x, bool reuse)
{
    upstream_cancel(x->up, &x->waiter); /* when it still waits */
    struct upconn *uc = x->s.uc;
    if (!uc)
        return;
    x->s.uc = NULL;
    struct request *req = x->req;
    reuse = reuse && uc->head->keep_alive && req->body_done && !uc->eof && !req->upgraded &&
            evbuffer_get_length(uc->in) == 0;
    uc->parser.dechunk = NULL;
    uc->ops = NULL;
    uc->owner = NULL;
    if (reuse)
        upstream_checkin(uc);
    else
        upconn_close(uc);
}

const struct back_ops h1_back = {back_open, back_pump, back_resume, back_release};
