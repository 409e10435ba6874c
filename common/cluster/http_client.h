/* http_client.h — coldbrew's own HTTP/1.1 requests over an upstream pool:
 * the activator's pod probes (whose connection then serves the first real
 * request, as Knative's shared transport does) and the Kubernetes client's
 * list and watch calls (streamed: a watch never ends by itself).
 *
 * The response body is delivered unframed (chunking removed) into
 * call->body. Without an on_data callback the whole body is collected, up to
 * max_body; with one, on_data runs as bytes arrive and consumes what it can.
 *
 * Ownership: the caller owns the call. `done` runs exactly once per start
 * (success or failure) and may free the call; http_call_free() on a running
 * call cancels it without calling `done`. A connection whose response ended
 * cleanly goes back to the pool. on_data must not free the call (stop it
 * from `done` or from outside the callback).
 *
 * Errors (err.h): `done` gets NULL or one of the static http_call_err_*
 * below (or the static string given to http_call_fail()); compare by
 * pointer. call->detail holds the human text for logs, in Go's shape
 * ("dial tcp 10.0.0.1:8012: connect: connection refused").
 *
 * Allocation (alloc.h): http_call_new() returns NULL when memory is short
 * (calls are made on the request path: probes, scrapes, watches); a start
 * whose request cannot be copied ends with coldbrew_err_no_memory. */
#ifndef COLDBREW_HTTP_CLIENT_H
#define COLDBREW_HTTP_CLIENT_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>

#include "proxy/upstream.h"

struct http_call;
typedef void (*http_call_done_cb)(struct http_call *call, const char *err);
typedef void (*http_call_data_cb)(struct http_call *call);

struct http_call {
    struct upstream_waiter waiter; /* while no connection is usable yet */
    struct upstream *up;
    struct upconn *uc;
    int status;
    struct evbuffer *body;
    http_call_done_cb done;
    http_call_data_cb on_data;
    void *arg;
    size_t max_body; /* collected bodies past this fail the call; default 4 MiB */
    bool running;
    bool head_done;
    bool retried;
    bool idempotent;
    bool failed;          /* set by http_call_fail() from on_data */
    const char *fail_why; /* ...with this static reason */
    char *req;            /* the serialized request, kept for one retry */
    size_t req_len;
    struct event timer;
    char detail[256]; /* the last failure, for people (see above) */
};

/* What `done` gets (besides NULL). */
extern const char http_call_err_connect[];   /* no connection to the upstream */
extern const char http_call_err_write[];     /* writing the request failed */
extern const char http_call_err_timeout[];   /* no complete answer within the timeout */
extern const char http_call_err_eof[];       /* the peer closed before the head ended */
extern const char http_call_err_body_eof[];  /* the peer closed before the body ended */
extern const char http_call_err_malformed[]; /* not HTTP/1.x, or bad chunking */
extern const char http_call_err_too_large[]; /* a collected body past max_body */

/* NULL when memory is short. */
struct http_call *http_call_new(struct upstream *up, void *arg);
/* `head` is a complete request head (and body, if any). timeout 0 = none. */
void http_call_start(struct http_call *c, const char *head, size_t len, double timeout,
                     http_call_done_cb done, http_call_data_cb on_data);
void http_call_free(struct http_call *c);
/* From on_data: end the call with `why`, a static string (done gets it once
 * on_data returns). */
void http_call_fail(struct http_call *c, const char *why);

#endif
