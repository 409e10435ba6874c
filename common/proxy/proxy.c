/* proxy.c — the exchange: one request forwarded and its answer returned,
 * whatever the protocols (see proxy.h, and proxy_codec.h for the seam).
 *
 * States (enum px_state):
 *   PX_WAITING    the back codec waits for a stream (HTTP/1: in the
 *                 upstream's FIFO); the request's cancel takes it off
 *   PX_SENDING    the request head went up; the body follows as the client
 *                 sends it (on_input -> back->pump)
 *   PX_STREAMING  the final response head went to the client; the body
 *                 follows as the client takes it (on_drain -> back->resume)
 *   PX_TUNNEL     HTTP/1 after a 101: bytes both ways
 *
 * One finish for every way out: it takes the exchange off the request
 * (no callback reaches it afterwards), lets go of the back stream (back to
 * the pool only after a clean end), and then answers or ends the request.
 * Whoever calls a px_* event that can finish returns at once after it: the
 * request's end may start the connection's next request, and the
 * exchange's memory with it. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "proxy/proxy_codec.h"
#include "http/server.h"
#include "proxy/upstream.h"

enum px_way_out {
    OUT_DONE,   /* the response is complete: keep what can be kept */
    OUT_ANSWER, /* nothing went to the client yet: answer `status` with `body` */
    OUT_CUT,    /* the response broke after it started: never a clean end */
    OUT_CLOSE,  /* a tunnel ended (abort false) or the client is gone (true) */
    OUT_CANCEL, /* the server ends the request itself (client gone, timeout) */
};

static void on_cancel(struct request *req);
static void on_input(struct request *req);
static void on_drain(struct request *req);

/* The exchange becomes the request's holder: the server's cancel reaches it
 * from now on, and the client's body events too once `body` (the request
 * is upstream). */
static void hold(struct proxy_exchange *x, bool body)
{
    struct request *req = x->req;
    req->holder = x;
    req->cancel = on_cancel;
    req->on_input = body ? on_input : NULL;
    req->on_drain = body ? on_drain : NULL;
}

/* ...and stops being it: no callback of the request reaches it again. */
static void let_go(struct proxy_exchange *x)
{
    struct request *req = x->req;
    if (req->holder != x)
        return;
    req->holder = NULL;
    req->cancel = NULL;
    req->on_input = NULL;
    req->on_drain = NULL;
}

static void finish(struct proxy_exchange *x, enum px_way_out how, int status, const char *body)
{
    struct request *req = x->req;
    enum px_state was = x->state;
    if (was == PX_IDLE)
        return;
    x->state = PX_IDLE;
    let_go(x);
    x->back->release(x, how == OUT_DONE);
    switch (how) {
    case OUT_DONE:
        if (!req->body_done)
            req->resp_close = true; /* answered before the body was read: no keep-alive */
        request_flush(req);
        if (req->state != REQ_IDLE)
            request_end(req, false);
        break;
    case OUT_ANSWER:
        if (req->state == REQ_HELD) {
            request_error(req, status, body);
            break;
        }
        /* The response had started: cut it. */
        __attribute__((fallthrough));
    case OUT_CUT:
        request_flush(req);
        if (req->state != REQ_IDLE)
            request_end(req, true);
        break;
    case OUT_CLOSE:
        if (req->state != REQ_IDLE)
            request_end(req, status != 0);
        break;
    case OUT_CANCEL:
        break;
    }
}

/* ---------------------------------------------------------------- the client's side */

static void on_cancel(struct request *req)
{
    finish(req->holder, OUT_CANCEL, 0, NULL);
}

static void on_input(struct request *req)
{
    struct proxy_exchange *x = req->holder;
    x->back->pump(x);
}

static void on_drain(struct request *req)
{
    struct proxy_exchange *x = req->holder;
    x->back->resume(x);
}

/* ---------------------------------------------------------------- events from the back */

void px_ready(struct proxy_exchange *x)
{
    x->state = PX_SENDING;
    hold(x, true);
}

void px_head(struct proxy_exchange *x, const struct http_head *h, bool end)
{
    int status = h->status;
    bool interim = status >= 100 && status < 200 && status != 101;
    const char *extra = NULL;
    size_t extra_len = 0;
    if (!interim) {
        x->state = PX_STREAMING;
        /* The app's last word on the head (the activator's Server-Timing,
         * the cold-start ledger's first byte): asked once, as it goes out. */
        struct request *req = x->req;
        const char *(*hook)(struct request *, size_t *) = req->on_response_head;
        req->on_response_head = NULL;
        if (hook)
            extra = hook(req, &extra_len);
    }
    if (!x->front->head(x, h, end, extra, extra_len)) {
        px_fail(x, "response head too large");
        return;
    }
    if (!interim)
        request_response_started(x->req, status);
}

void px_data(struct proxy_exchange *x, struct evbuffer *src, size_t n)
{
    x->front->data(x, src, n);
}

void px_end(struct proxy_exchange *x, const struct http_head *trailers)
{
    x->front->end(x, trailers);
    finish(x, OUT_DONE, 0, NULL);
}

void px_fail(struct proxy_exchange *x, const char *why)
{
    log_error("error reverse proxying request: %s", why);
    char body[256];
    snprintf(body, sizeof body, "%s\n", why);
    finish(x, OUT_ANSWER, 502, body);
}

void px_refuse(struct proxy_exchange *x, int status, const char *body)
{
    finish(x, OUT_ANSWER, status, body);
}

void px_bad_body(struct proxy_exchange *x, const char *why)
{
    log_warn("bad request body from %s: %s", request_peer_ip(x->req), why);
    finish(x, OUT_ANSWER, 400, "malformed request body\n");
}

void px_close(struct proxy_exchange *x, bool abort)
{
    finish(x, OUT_CLOSE, abort, NULL);
}

void px_retry(struct proxy_exchange *x)
{
    x->back->release(x, false);
    let_go(x);
    x->retried = true;
    x->body_sent = 0;
    x->state = PX_WAITING;
    x->back->open(x);
}

void px_wait(struct proxy_exchange *x)
{
    x->state = PX_WAITING;
    hold(x, false);
}

/* Go's error strings: "dial tcp 127.0.0.1:8080: connect: connection refused". */
void px_errno_text(char *buf, size_t cap, const struct upstream *u, const char *op, int err)
{
    char e[96];
    snprintf(e, sizeof e, "%s", strerror(err));
    if (e[0] >= 'A' && e[0] <= 'Z')
        e[0] = (char)(e[0] - 'A' + 'a');
    if (err == EPROTO && u->tls && u->tls_last_why)
        /* The TLS handshake was refused (wrong SAN, expired, untrusted):
         * nothing was sent to the pod; say why. */
        snprintf(buf, cap, "tls: handshake with %s failed: %s", u->addr.text, u->tls_last_why);
    else if (!strcmp(op, "connect"))
        snprintf(buf, cap, "dial tcp %s: connect: %s", u->addr.text, e);
    else
        snprintf(buf, cap, "%s tcp %s: %s: %s", op, u->addr.text, op, e);
}

/* ---------------------------------------------------------------- entry */

void proxy_forward(struct proxy_exchange *x, struct request *req, struct upstream *u,
                   const struct proxy_edit *edit)
{
    bool h2 = request_is_h2(req);
    x->req = req;
    x->up = u;
    x->edit = edit;
    x->front = h2 ? &h2_front : &h1_front;
    x->back = h2 ? &h2_back : &h1_back;
    x->s.uc = NULL;
    x->s.h2 = NULL;
    x->body_sent = 0;
    x->retried = false;
    x->dechunk = false;
    x->waiter.queued = false;
    x->state = PX_WAITING;
    x->back->open(x);
}
