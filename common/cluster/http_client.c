/* http_client.c — see http_client.h. */
#include "cluster/http_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/io.h"

#define DEFAULT_MAX_BODY (4u << 20)

static void on_readable(struct upconn *uc);
static void on_writable(struct upconn *uc);
static const struct upconn_ops client_ops = {on_readable, on_writable};

static void on_timeout(evutil_socket_t fd, short what, void *arg);

const char http_call_err_connect[] = "connect failed";
const char http_call_err_write[] = "write failed";
const char http_call_err_timeout[] = "timeout awaiting response";
const char http_call_err_eof[] = "EOF";
const char http_call_err_body_eof[] = "unexpected EOF";
const char http_call_err_malformed[] = "malformed HTTP response";
const char http_call_err_too_large[] = "response body too large";

struct http_call *http_call_new(struct upstream *up, void *arg)
{
    struct http_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->body = evbuffer_new();
    if (!c->body) {
        free(c);
        return NULL;
    }
    c->up = up;
    c->arg = arg;
    c->max_body = DEFAULT_MAX_BODY;
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

/* err: static (see http_client.h); c->detail is set already or gets err. */
static void finish(struct http_call *c, const char *err, bool reuse)
{
    release(c, reuse && !err);
    if (err && !c->detail[0])
        snprintf(c->detail, sizeof c->detail, "%s", err);
    c->done(c, err);
}

static void dial_error(struct http_call *c, int err)
{
    char e[96];
    snprintf(e, sizeof e, "%s", strerror(err));
    if (e[0] >= 'A' && e[0] <= 'Z')
        e[0] = (char)(e[0] - 'A' + 'a');
    snprintf(c->detail, sizeof c->detail, "dial tcp %s: connect: %s", c->up->addr.text, e);
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
        finish(c, http_call_err_connect, false);
        return;
    }
    send_request(c, uc);
}

/* false (c->detail set) when no connection can be had. */
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
    c->done = done;
    c->on_data = on_data;
    c->running = true;
    c->retried = false;
    c->failed = false;
    c->detail[0] = 0;
    free(c->req);
    c->req = malloc(len ? len : 1);
    c->req_len = len;
    if (!c->req) {
        c->req_len = 0;
        finish(c, coldbrew_err_no_memory, false);
        return;
    }
    memcpy(c->req, head, len);
    c->idempotent = len >= 4 && !memcmp(head, "GET ", 4);
    if (timeout > 0) {
        struct timeval tv = clock_tv(timeout);
        event_add(&c->timer, &tv);
    }
    if (!send_on(c, false))
        finish(c, http_call_err_connect, false);
}

void http_call_fail(struct http_call *c, const char *why)
{
    c->fail_why = why;
    snprintf(c->detail, sizeof c->detail, "%s", why);
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
    snprintf(c->detail, sizeof c->detail, "timeout awaiting response from %s", c->up->addr.text);
    finish(c, http_call_err_timeout, false);
}

static void on_writable(struct upconn *uc)
{
    struct http_call *c = uc->owner;
    if (upconn_write(uc) == IO_ERROR) {
        snprintf(c->detail, sizeof c->detail, "write tcp %s: %s", c->up->addr.text,
                 strerror(errno));
        finish(c, http_call_err_write, false);
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
            snprintf(c->detail, sizeof c->detail, "malformed HTTP response from %s: %s",
                     c->up->addr.text, uc->parser.err ? uc->parser.err : "?");
            finish(c, http_call_err_malformed, false);
            return;
        }
        if (r == H1_NEED_MORE) {
            if (eof && !retry(c))
                finish(c, http_call_err_eof, false);
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
        snprintf(c->detail, sizeof c->detail, "malformed response body");
        finish(c, http_call_err_malformed, false);
        return;
    }
    if (c->on_data && evbuffer_get_length(c->body)) {
        c->on_data(c);
        if (c->failed) {
            finish(c, c->fail_why, false);
            return;
        }
    } else if (!c->on_data && evbuffer_get_length(c->body) > c->max_body) {
        finish(c, http_call_err_too_large, false);
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
            finish(c, http_call_err_body_eof, false);
    }
}
