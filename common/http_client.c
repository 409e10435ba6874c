/* http_client.c — see http_client.h. */
#include "http_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "io.h"

#define DEFAULT_MAX_BODY (4u << 20)

static void on_readable(struct upconn *uc);
static void on_writable(struct upconn *uc);
static const struct upconn_ops client_ops = {on_readable, on_writable};

static void on_timeout(evutil_socket_t fd, short what, void *arg);

struct http_call *http_call_new(struct upstream *up, void *arg)
{
    struct http_call *c = calloc(1, sizeof *c);
    c->up = up;
    c->arg = arg;
    c->max_body = DEFAULT_MAX_BODY;
    c->body = evbuffer_new();
    event_assign(&c->timer, up->base, -1, 0, on_timeout, c);
    return c;
}

/* Drops the connection (closed, unless `reuse`) and stops the timer. */
static void release(struct http_call *c, bool reuse)
{
    struct upconn *uc = c->uc;
    c->uc = NULL;
    upstream_cancel(c->up, &c->waiter);
    event_del(&c->timer);
    c->running = false;
    if (!uc)
        return;
    uc->parser.dechunk = NULL;
    if (reuse)
        upstream_checkin(uc);
    else {
        uc->ops = NULL;
        upconn_close(uc);
    }
}

static void finish(struct http_call *c, const char *err, bool reuse)
{
    release(c, reuse && !err);
    if (err && err != c->err)
        snprintf(c->err, sizeof c->err, "%s", err);
    c->done(c, err ? c->err : NULL);
}

static void dial_error(struct http_call *c, int err)
{
    char e[96];
    snprintf(e, sizeof e, "%s", strerror(err));
    if (e[0] >= 'A' && e[0] <= 'Z')
        e[0] = (char)(e[0] - 'A' + 'a');
    snprintf(c->err, sizeof c->err, "dial tcp %s: connect: %s", c->up->addr.text, e);
}

/* A usable connection: send the request on it. */
static void send_request(struct http_call *c, struct upconn *uc)
{
    c->uc = uc;
    c->head_done = false;
    c->status = 0;
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
    if (uc->head)
        http_head_release(uc->head);
    uc->head = http_head_acquire();
    h1_parser_begin(&uc->parser, uc->head);
    uc->got_bytes = false;
    evbuffer_add(uc->out, c->req, c->req_len);
    on_writable(uc);
}

static void on_conn_ready(struct upstream_waiter *w, struct upconn *uc, int err)
{
    struct http_call *c = (struct http_call *)w; /* the waiter is first */
    if (!uc) {
        dial_error(c, err);
        finish(c, c->err, false);
        return;
    }
    send_request(c, uc);
}

/* false (c->err set) when no connection can be had. */
static bool send_on(struct http_call *c, bool front)
{
    c->waiter.on_ready = on_conn_ready;
    c->waiter.ops = &client_ops;
    c->waiter.owner = c;
    struct upconn *uc = upstream_checkout(c->up, &c->waiter, front);
    if (uc)
        send_request(c, uc);
    else if (!c->waiter.queued) {
        dial_error(c, errno);
        return false;
    }
    return true;
}

void http_call_start(struct http_call *c, const char *head, size_t len, double timeout,
                     http_call_done_cb done, http_call_data_cb on_data)
{
    free(c->req);
    c->req = malloc(len);
    memcpy(c->req, head, len);
    c->req_len = len;
    c->done = done;
    c->on_data = on_data;
    c->running = true;
    c->retried = false;
    c->failed = false;
    c->idempotent = len >= 4 && !memcmp(head, "GET ", 4);
    if (timeout > 0) {
        struct timeval tv = clock_tv(timeout);
        event_add(&c->timer, &tv);
    }
    if (!send_on(c, false))
        finish(c, c->err, false);
}

void http_call_fail(struct http_call *c, const char *why)
{
    snprintf(c->err, sizeof c->err, "%s", why);
    c->failed = true;
}

void http_call_free(struct http_call *c)
{
    if (!c)
        return;
    release(c, false);
    evbuffer_free(c->body);
    free(c->req);
    free(c);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct http_call *c = arg;
    snprintf(c->err, sizeof c->err, "timeout awaiting response from %s", c->up->addr.text);
    finish(c, c->err, false);
}

static void on_writable(struct upconn *uc)
{
    struct http_call *c = uc->owner;
    if (upconn_write(uc) == IO_ERROR) {
        snprintf(c->err, sizeof c->err, "write tcp %s: %s", c->up->addr.text, strerror(errno));
        finish(c, c->err, false);
        return;
    }
    upconn_want_write(uc, evbuffer_get_length(uc->out) > 0);
}

/* The pooled connection died before answering: once, on a fresh one. */
static bool retry(struct http_call *c)
{
    if (c->retried || !c->idempotent || !c->uc || !c->uc->reused || c->uc->got_bytes)
        return false;
    c->retried = true;
    release(c, false);
    c->running = true;
    return send_on(c, true);
}

static void on_readable(struct upconn *uc)
{
    struct http_call *c = uc->owner;
    enum io_status st = upconn_read(uc);
    if (st == IO_AGAIN)
        return;
    if (st == IO_OK)
        uc->got_bytes = true;
    bool eof = st != IO_OK;
    if (!c->head_done) {
        enum h1_result r = h1_parse_head(&uc->parser, uc->in);
        if (r == H1_ERROR) {
            finish(c, "malformed HTTP response", false);
            return;
        }
        if (r == H1_NEED_MORE) {
            if (eof && !retry(c))
                finish(c, "EOF", false);
            return;
        }
        c->status = uc->head->status;
        c->head_done = true;
        uc->parser.dechunk = c->body;
    }
    size_t n;
    enum h1_result r = h1_parse_body(&uc->parser, uc->in, evbuffer_get_length(uc->in), &n);
    evbuffer_drain(uc->in, n); /* the payload was copied into c->body, unframed */
    if (r == H1_ERROR) {
        finish(c, "malformed response body", false);
        return;
    }
    if (c->on_data && evbuffer_get_length(c->body)) {
        c->on_data(c);
        if (c->failed) {
            finish(c, c->err, false);
            return;
        }
    } else if (!c->on_data && evbuffer_get_length(c->body) > c->max_body) {
        finish(c, "response body too large", false);
        return;
    }
    if (r == H1_DONE) {
        bool reuse = uc->head->keep_alive && !eof && evbuffer_get_length(uc->in) == 0;
        finish(c, NULL, reuse);
        return;
    }
    if (eof) {
        if (h1_parser_eof_completes(&uc->parser))
            finish(c, NULL, false);
        else
            finish(c, "unexpected EOF", false);
    }
}
