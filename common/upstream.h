/* upstream.h — connections to one destination, with a keep-alive pool.
 *
 * An upstream is a destination (the user container for the queue-proxy; a
 * pod for the activator). upstream_checkout() hands out the most recently
 * used idle connection (LIFO keeps few connections warm) or starts a new
 * non-blocking connect. A connection in the pool is watched: if the backend
 * closes it, or sends anything unsolicited, it is dropped at once; an idle
 * timer (COLDBREW_UPSTREAM_IDLE_SECONDS, shorter than the usual backend
 * keep-alive timeouts of 5 s and more) drops it before the backend would.
 *
 * Ownership: an upconn is either in its upstream's idle list (owned by the
 * pool) or attached to one request (owned by the proxy, proxy.c). */
#ifndef COLDBREW_UPSTREAM_H
#define COLDBREW_UPSTREAM_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <sys/queue.h>

#include "h1_parser.h"
#include "io.h"
#include "net.h"

struct request;
struct proxy_edit;
struct upconn;
struct upstream_tls;

/* What the holder of a connection does with its events. A connection with no
 * ops is idle in the pool. */
struct upconn_ops {
    void (*on_readable)(struct upconn *uc);
    void (*on_writable)(struct upconn *uc); /* also called once when a connect completes */
    void (*on_connect_failed)(struct upconn *uc, int err);
};

struct upstream {
    struct event_base *base;
    struct net_addr addr;
    char host[64]; /* numeric host as given, for error texts */
    int port;
    TAILQ_HEAD(, upconn) idle;
    unsigned nidle, max_idle;
    struct timeval idle_tv;   /* a libevent common timeout */
    unsigned nconns;          /* open connections, idle or busy */
    struct upstream_tls *tls; /* NULL: plain TCP (see tls.h) */
    struct h2_pool *h2;       /* HTTP/2 streams to the same destination, made on first use
                                 (h2_proxy.c); freed with upstream_release_h2() */
};

struct upconn {
    struct upstream *up;
    int fd;
    struct event rev, wev, tev;
    struct evbuffer *in, *out;
    struct h1_parser parser; /* response parser */
    struct http_head *head;  /* response head while attached */
    TAILQ_ENTRY(upconn) link;
    /* The socket events are assigned once at connect and never re-registered
     * (a pooled connection costs no epoll_ctl on reuse); they dispatch to the
     * holder's ops. */
    const struct upconn_ops *ops;
    void *owner; /* the holder's object (proxy: unused, see req) */
    /* proxy state while attached (see proxy.c) */
    struct request *req;
    const struct proxy_edit *edit;
    uint64_t body_sent; /* request body bytes written upstream */
    bool connecting, reused, reading, writing, eof, dead, idle;
    bool got_bytes;      /* any response byte arrived */
    bool resp_head_done; /* final (non-1xx) response head forwarded */
    bool tunnel;
    bool retried;
    void *tls_session; /* SSL, when the pool is TLS */
    bool handshaking, tls_want_write;
};

/* host must be an IP literal. max_idle 0 means 1000 (Knative's default for CC=0). */
bool upstream_init(struct upstream *u, struct event_base *base, const char *host, int port,
                   unsigned max_idle, double idle_seconds);
/* Read into uc->in / write uc->out, through TLS when the pool has it. */
enum io_status upconn_read(struct upconn *uc);
enum io_status upconn_write(struct upconn *uc);
/* Arm or disarm reading / writing on an attached connection. */
void upconn_want_read(struct upconn *uc, bool on);
void upconn_want_write(struct upconn *uc, bool on);
/* A connection to use (idle or connecting), attached to `ops`; NULL with
 * errno on failure. `fresh` skips the pool. */
struct upconn *upstream_checkout(struct upstream *u, bool fresh, const struct upconn_ops *ops,
                                 void *owner);
/* Back to the pool; closes it instead when the pool is full. */
void upstream_checkin(struct upconn *uc);
/* Closes now; memory is reclaimed after the current callback. */
void upconn_close(struct upconn *uc);
/* Closes every idle connection (shutdown). */
void upstream_close_idle(struct upstream *u);
/* Frees the HTTP/2 pool, resetting its streams (their holders are told). */
void upstream_release_h2(struct upstream *u);

#endif
