/* proxy.c — see proxy.h.
 *
 * One exchange = one request + (once one is usable) one attached upconn. Its states:
 *   waiting         x->waiter.queued; req->holder is the exchange, no upconn
 *   sending         head (and body as it comes) flowing upstream
 *   awaiting head   !uc->resp_head_done; 1xx heads are forwarded as they come
 *   streaming body  uc->resp_head_done; bytes moved upstream -> client
 *   tunnel          uc->tunnel after a 101: raw bytes both ways
 * Every path out goes through finish(), fail() or proxy_cancel(), which
 * detach the two sides before anything else so that a callback further up
 * never sees a half-torn exchange. */
#include "proxy.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "io.h"
#include "log.h"

#define READ_CHUNK    16384
#define SCRATCH_BYTES (1 << 18)

static char scratch[SCRATCH_BYTES];

static void up_process(struct upconn *uc);
static void up_flush(struct upconn *uc);

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
        puts_(&o, req->conn->peer_ip);
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

/* Response head to the client: hop-by-hop headers dropped (Trailer is kept:
 * chunked bodies go through verbatim, trailers included). */
static size_t build_response_head(struct upconn *uc, struct request *req, char *buf, size_t cap)
{
    const struct http_head *h = uc->head;
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
                uc->parser.dechunk = request_output(req);
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
    put(&o, "\r\n", 2);
    return o.overflow ? 0 : o.len;
}

/* ---------------------------------------------------------------- attach/detach */

static void on_up_readable(struct upconn *uc);
static void on_up_writable(struct upconn *uc);
static const struct upconn_ops proxy_ops = {on_up_readable, on_up_writable};
static void proxy_cancel(struct request *req);
static void on_client_input(struct request *req);
static void on_client_drain(struct request *req);

static void set_reading(struct upconn *uc, bool on)
{
    upconn_want_read(uc, on);
}

static void detach(struct upconn *uc)
{
    struct request *req = uc->req;
    uc->ops = NULL;
    if (req && req->holder == uc) {
        req->holder = NULL;
        req->cancel = NULL;
        req->on_input = NULL;
        req->on_drain = NULL;
        if (uc->parser.dechunk)
            uc->parser.dechunk = NULL;
    }
    uc->req = NULL;
}

static bool attach(struct request *req, struct upconn *uc, const struct proxy_edit *edit)
{
    uc->req = req;
    uc->edit = edit;
    req->holder = uc;
    req->cancel = proxy_cancel;
    req->on_input = on_client_input;
    req->on_drain = on_client_drain;
    if (uc->head)
        http_head_release(uc->head);
    uc->head = http_head_acquire();
    h1_parser_begin(&uc->parser, uc->head);
    size_t n = proxy_build_request_head(req, edit, scratch, sizeof scratch);
    if (!n)
        return false;
    evbuffer_add(uc->out, scratch, n);
    return true;
}

/* ---------------------------------------------------------------- endings */

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

static void start(struct proxy_exchange *x, bool front);

/* Go's error strings: "dial tcp 127.0.0.1:8080: connect: connection refused". */
static void errno_text(char *buf, size_t cap, int err)
{
    snprintf(buf, cap, "%s", strerror(err));
    if (buf[0] >= 'A' && buf[0] <= 'Z')
        buf[0] = (char)(buf[0] - 'A' + 'a');
}

/* The upstream failed before or during the response. */
static void fail(struct upconn *uc, const char *what)
{
    struct request *req = uc->req;
    struct upstream *u = uc->up;
    if (!req) {
        upconn_close(uc);
        return;
    }
    bool before_response = !uc->got_bytes && req->state == REQ_HELD;
    if (before_response && uc->reused && !uc->retried && req->body_done && uc->body_sent == 0 &&
        idempotent(req)) {
        /* The backend closed a pooled connection as we reused it: try once
         * more, first in the queue (the idle ones are the likeliest stale
         * too, but the backend closing them is noticed as they go). */
        struct proxy_exchange *x = uc->owner;
        log_debug("upstream %s closed a reused connection (%s); retrying", u->addr.text, what);
        detach(uc);
        upconn_close(uc);
        x->retried = true;
        start(x, true);
        return;
    }
    log_error("error reverse proxying request: %s", what);
    detach(uc);
    upconn_close(uc);
    if (req->state == REQ_HELD) {
        char body[256];
        snprintf(body, sizeof body, "%s\n", what);
        request_error(req, 502, body);
    } else {
        request_end(req, true);
    }
}

static void fail_errno(struct upconn *uc, const char *op, int err)
{
    char e[96], msg[200];
    errno_text(e, sizeof e, err);
    if (!strcmp(op, "connect"))
        snprintf(msg, sizeof msg, "dial tcp %s: connect: %s", uc->up->addr.text, e);
    else
        snprintf(msg, sizeof msg, "%s tcp %s: %s: %s", op, uc->up->addr.text, op, e);
    fail(uc, msg);
}

/* The exchange completed normally. */
static void finish(struct upconn *uc)
{
    struct request *req = uc->req;
    bool reuse = uc->head->keep_alive && req->body_done && !uc->eof && !uc->tunnel &&
                 evbuffer_get_length(uc->in) == 0;
    if (!req->body_done)
        req->resp_close = true; /* answered before the body was read: cannot reuse */
    req->resp_body_bytes = uc->parser.body_bytes;
    detach(uc);
    if (reuse)
        upstream_checkin(uc);
    else
        upconn_close(uc);
    request_flush(req);
    if (req->state != REQ_IDLE)
        request_end(req, false);
}

static void proxy_cancel(struct request *req)
{
    struct upconn *uc = req->holder;
    if (!uc)
        return;
    detach(uc);
    upconn_close(uc);
}

/* ---------------------------------------------------------------- moving bytes */

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

static void pump_request_body(struct upconn *uc)
{
    struct request *req = uc->req;
    struct sconn *c = req->conn;
    size_t wm = c->srv->lim->watermark;
    if (uc->tunnel) {
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
        uc->body_sent += n;
    }
    if (r == H1_DONE) {
        req->body_done = true;
    } else if (r == H1_ERROR) {
        log_warn("bad request body from %s: %s", c->peer_ip, c->parser.err);
        detach(uc);
        upconn_close(uc);
        if (req->state == REQ_HELD)
            request_error(req, 400, "malformed request body\n");
        else
            request_end(req, true);
        return;
    }
    request_input_consumed(req);
}

static void up_flush(struct upconn *uc)
{
    for (int round = 0; round < 4 && !uc->dead && uc->req; round++) {
        pump_request_body(uc);
        if (uc->dead || !uc->req)
            return;
        size_t before = evbuffer_get_length(uc->out);
        if (upconn_write(uc) == IO_ERROR) {
            fail_errno(uc, "write", errno);
            return;
        }
        size_t left = evbuffer_get_length(uc->out);
        io_arm(&uc->wev, &uc->writing, left > 0);
        /* Keep going only while the client has more body for us and we made progress. */
        struct request *req = uc->req;
        if (left || before == 0 || evbuffer_get_length(req->conn->in) == 0 ||
            (req->body_done && !uc->tunnel))
            break;
    }
}

static void on_up_writable(struct upconn *uc)
{
    up_flush(uc);
}

static void on_client_input(struct request *req)
{
    struct upconn *uc = req->holder;
    struct sconn *c = req->conn;
    if (uc->tunnel && c->eof) {
        /* Client finished the tunnel: pass on what is left, then close both. */
        evbuffer_add_buffer(uc->out, c->in);
        evbuffer_write(uc->out, uc->fd);
        detach(uc);
        upconn_close(uc);
        request_end(req, false);
        return;
    }
    up_flush(uc);
}

static void on_client_drain(struct request *req)
{
    struct upconn *uc = req->holder;
    if (!uc->reading)
        set_reading(uc, true);
    if (evbuffer_get_length(uc->in) || uc->eof)
        up_process(uc);
}

/* ---------------------------------------------------------------- response */

static void start_tunnel(struct upconn *uc)
{
    struct request *req = uc->req;
    struct sconn *c = req->conn;
    req->upgraded = true;
    uc->tunnel = true;
    /* Bytes that came with the 101, and early client bytes, go through now. */
    evbuffer_add_buffer(request_output(req), uc->in);
    evbuffer_add_buffer(uc->out, c->in);
    request_flush(req);
    if (req->state == REQ_IDLE || uc->dead)
        return;
    up_flush(uc);
}

static void forward_head(struct upconn *uc)
{
    struct request *req = uc->req;
    size_t n = build_response_head(uc, req, scratch, sizeof scratch);
    if (!n) {
        fail(uc, "response head too large");
        return;
    }
    evbuffer_add(request_output(req), scratch, n);
}

static bool upgrade_matches(struct upconn *uc)
{
    size_t ql, rl;
    const char *q = http_head_get(uc->req->head, "upgrade", &ql);
    const char *r = http_head_get(uc->head, "upgrade", &rl);
    return q && r && ql == rl && !strncasecmp(q, r, ql);
}

/* The response broke after it started: send what we have, then close the
 * client connection, never a short body that looks complete. */
static void cut_off(struct upconn *uc)
{
    struct request *req = uc->req;
    detach(uc);
    upconn_close(uc);
    request_flush(req);
    if (req->state != REQ_IDLE)
        request_end(req, true);
}

static void up_process(struct upconn *uc)
{
    struct request *req = uc->req;
    if (!req)
        return;
    struct sconn *c = req->conn;
    size_t wm = c->srv->lim->watermark;
    struct evbuffer *cout = request_output(req);

    if (uc->tunnel) {
        if (move_some(uc->in, cout, wm, uc->eof))
            request_flush(req);
        if (uc->dead || req->state == REQ_IDLE)
            return;
        if (uc->eof) {
            detach(uc);
            upconn_close(uc);
            request_end(req, false);
            return;
        }
        set_reading(uc, evbuffer_get_length(uc->in) < wm);
        return;
    }

    while (!uc->resp_head_done) {
        enum h1_result r = h1_parse_head(&uc->parser, uc->in);
        if (r == H1_ERROR) {
            char msg[160];
            snprintf(msg, sizeof msg, "net/http: HTTP/1.x transport connection broken: %s",
                     uc->parser.err ? uc->parser.err : "malformed HTTP response");
            fail(uc, msg);
            return;
        }
        if (r == H1_NEED_MORE) {
            if (uc->eof)
                fail(uc, "EOF");
            return;
        }
        int status = uc->head->status;
        if (status >= 100 && status < 200 && status != 101) {
            /* Interim responses (100 Continue, 103 Early Hints) pass straight through. */
            forward_head(uc);
            if (uc->dead)
                return;
            request_flush(req);
            if (uc->dead || req->state == REQ_IDLE)
                return;
            http_head_release(uc->head);
            uc->head = http_head_acquire();
            h1_parser_begin(&uc->parser, uc->head);
            continue;
        }
        if (status == 101) {
            if (!req->head->upgrade || !upgrade_matches(uc)) {
                fail(uc, "backend tried to switch protocol without a matching Upgrade");
                return;
            }
            forward_head(uc);
            request_response_started(req, 101);
            start_tunnel(uc);
            return;
        }
        forward_head(uc);
        if (uc->dead)
            return;
        uc->resp_head_done = true;
        request_response_started(req, status);
        if (req->head->method == HTTP_HEAD)
            h1_parser_skip_body(&uc->parser);
    }

    size_t queued = evbuffer_get_length(cout);
    size_t room = queued < wm ? wm - queued : 0;
    size_t n = 0;
    enum h1_result r = H1_BODY;
    if (room || uc->parser.done)
        r = h1_parse_body(&uc->parser, uc->in, room, &n);
    if (n) {
        if (uc->parser.dechunk)
            evbuffer_drain(uc->in, n);
        else
            evbuffer_remove_buffer(uc->in, cout, n);
    }
    req->resp_at_boundary = uc->parser.chunk_boundary;
    if (r == H1_ERROR) {
        log_error("error reverse proxying request: malformed response body: %s",
                  uc->parser.err ? uc->parser.err : "?");
        cut_off(uc);
        return;
    }
    if (r == H1_DONE) {
        finish(uc);
        return;
    }
    if (uc->eof && evbuffer_get_length(uc->in) == 0) {
        if (h1_parser_eof_completes(&uc->parser)) {
            finish(uc);
            return;
        }
        log_error("error reverse proxying request: upstream %s closed mid-response",
                  uc->up->addr.text);
        cut_off(uc);
        return;
    }
    if (n)
        request_flush(req);
    if (uc->dead || !uc->req)
        return;
    set_reading(uc, !request_output_full(req) && evbuffer_get_length(uc->in) < wm);
}

static void on_up_readable(struct upconn *uc)
{
    switch (upconn_read(uc)) {
    case IO_OK:
        uc->got_bytes = true;
        break;
    case IO_AGAIN:
        return;
    case IO_ERROR:
        if (!uc->got_bytes || !uc->resp_head_done) {
            fail_errno(uc, "read", errno);
            return;
        }
        uc->eof = true; /* a reset after the head is a cut body */
        set_reading(uc, false);
        break;
    case IO_EOF:
        uc->eof = true;
        set_reading(uc, false);
        break;
    }
    up_process(uc);
}

/* ---------------------------------------------------------------- entry */

/* No connection could be had: Go's dial error, 502. */
static void dial_failed(struct request *req, struct upstream *u, int err)
{
    char e[96], msg[200];
    errno_text(e, sizeof e, err);
    snprintf(msg, sizeof msg, "dial tcp %s: connect: %s", u->addr.text, e);
    log_error("error reverse proxying request: %s", msg);
    char body[220];
    snprintf(body, sizeof body, "%s\n", msg);
    request_error(req, 502, body);
}

/* A usable connection for the exchange: send the request. */
static void go(struct proxy_exchange *x, struct upconn *uc)
{
    struct request *req = x->req;
    uc->retried = x->retried;
    if (!attach(req, uc, x->edit)) {
        detach(uc);
        upconn_close(uc);
        request_error(req, 431, "request header too large\n");
        return;
    }
    up_flush(uc);
    /* A client that sent part of its body and hung up while the request
     * waited (for a connection, or in the breaker's queue) was not seen
     * going: the server notices EOF only when it hands input to a holder,
     * and nobody held the input then. Its body can never complete. */
    struct sconn *c = req->conn;
    if (uc->req == req && !uc->dead && !req->body_done && c->eof &&
        evbuffer_get_length(c->in) == 0) {
        log_debug("client %s left with its request body unfinished", c->peer_ip);
        detach(uc);
        upconn_close(uc);
        request_end(req, true);
    }
}

static void on_conn_ready(struct upstream_waiter *w, struct upconn *uc, int err)
{
    struct proxy_exchange *x = (struct proxy_exchange *)w; /* the waiter is first */
    struct request *req = x->req;
    req->holder = NULL;
    req->cancel = NULL;
    if (!uc) {
        dial_failed(req, x->up, err);
        return;
    }
    go(x, uc);
}

/* The client left or its timeout fired while it waited: free its place. */
static void cancel_wait(struct request *req)
{
    struct proxy_exchange *x = req->holder;
    upstream_cancel(x->up, &x->waiter);
}

static void start(struct proxy_exchange *x, bool front)
{
    struct upconn *uc = upstream_checkout(x->up, &x->waiter, front);
    if (uc) {
        go(x, uc);
        return;
    }
    struct request *req = x->req;
    if (x->waiter.queued) {
        req->holder = x;
        req->cancel = cancel_wait;
        return;
    }
    dial_failed(req, x->up, errno);
}

void proxy_forward(struct proxy_exchange *x, struct request *req, struct upstream *u,
                   const struct proxy_edit *edit)
{
    if (request_is_h2(req)) {
        proxy_forward_h2(req, u, edit);
        return;
    }
    x->waiter.on_ready = on_conn_ready;
    x->waiter.ops = &proxy_ops;
    x->waiter.owner = x;
    x->waiter.queued = false;
    x->req = req;
    x->up = u;
    x->edit = edit;
    x->retried = false;
    start(x, false);
}
