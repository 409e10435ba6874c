/* upstream.h — connections to one destination: a keep-alive pool, and a
 * FIFO of requests waiting for a connection.
 *
 * An upstream is a destination (the user container for the queue-proxy; a
 * pod for the activator). upstream_checkout() hands out the most recently
 * used idle connection (LIFO keeps few connections warm) at once. With none
 * idle, the caller's waiter joins the upstream's FIFO and a connect starts
 * for it (within the caps below); the waiter's on_ready then runs with
 * whichever connection becomes usable first: a connection another request
 * checks in, or ANY connect that completes. A request never waits for "its
 * own" connect: onto a backend with a small listen backlog (Python's
 * http.server: 5) most connects of a burst sit in SYN retransmits (1 s,
 * 3 s, ...) while the few accepted connections serve the whole queue in
 * milliseconds (Go's transport does the same; HAProxy queues on maxconn).
 *
 * A connection in the pool is watched: if the backend closes it, or sends
 * anything unsolicited, it is dropped at once; an idle timer
 * (COLDBREW_UPSTREAM_IDLE_SECONDS, shorter than the usual backend keep-alive
 * timeouts of 5 s and more) drops it before the backend would.
 *
 * Limits (process-wide settings, read once from the environment):
 *   COLDBREW_UPSTREAM_MAX_CONNECTING  connects (TCP + TLS handshake) in flight
 *                                     per upstream; default 8
 *   COLDBREW_UPSTREAM_MAX_CONNS       open connections per upstream, busy or
 *                                     idle or connecting; default 0 = no cap
 * Past either, requests wait in the FIFO for a connection to come free.
 *
 * Invariants:
 *   - a waiter is queued only while no connection is idle (nwaiting > 0
 *     implies nidle == 0): checkin and connect completion hand a connection
 *     to the head waiter before the pool would keep it;
 *   - at most min(nwaiting, max_connecting) connects are started for
 *     waiters; a connect belongs to no request until it completes;
 *   - a connect that fails while requests wait fails the head waiter with
 *     its error (the proxy's 502, as when each request had its own connect),
 *     so failed connects never outnumber waiters, and a refusing backend
 *     cannot spin the loop; the rest keep waiting and a new connect starts
 *     for them;
 *   - nothing in this file touches the upstream after calling a holder's
 *     callback (the callback may end the last reference to the upstream).
 *
 * Ownership: an upconn is idle in the pool, connecting (owned by the pool),
 * or attached to one holder (a proxy exchange, an http_call) until it is
 * checked in or closed. A waiter is owned by its holder and embedded in its
 * state (no allocation per request); the holder removes it with
 * upstream_cancel() when it gives up (client gone, timeout). */
#ifndef COLDBREW_UPSTREAM_H
#define COLDBREW_UPSTREAM_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <sys/queue.h>

#include "http/h1_parser.h"
#include "core/io.h"
#include "core/net.h"
#include "transport/transport.h"

struct upconn;
struct upstream_tls;
struct upstream_waiter;

/* What the holder of a connection does with its events. A connection with no
 * ops is idle in the pool (or still connecting). */
struct upconn_ops {
    void (*on_readable)(struct upconn *uc);
    void (*on_writable)(struct upconn *uc);
};

/* A holder waiting for a connection. on_ready runs once: with a usable
 * connection (established, TLS done, attached to `ops`/`owner`), or with
 * uc NULL and the connect's errno. Either way the waiter is off the queue. */
struct upstream_waiter {
    TAILQ_ENTRY(upstream_waiter) link;
    void (*on_ready)(struct upstream_waiter *w, struct upconn *uc, int err);
    const struct upconn_ops *ops;
    void *owner;
    bool queued;
};

struct upstream {
    struct event_base *base;
    struct net_addr addr;
    char host[64]; /* numeric host as given, for error texts */
    int port;
    TAILQ_HEAD(, upconn) idle;
    unsigned nidle, max_idle;
    struct timeval idle_tv;                /* a libevent common timeout */
    unsigned nconns;                       /* open connections, idle or busy or connecting */
    TAILQ_HEAD(, upconn) connecting;       /* connects in flight (owned by the pool) */
    unsigned nconnecting, max_connecting;  /* COLDBREW_UPSTREAM_MAX_CONNECTING */
    unsigned max_conns;                    /* COLDBREW_UPSTREAM_MAX_CONNS; 0 = no cap */
    TAILQ_HEAD(, upstream_waiter) waiters; /* FIFO */
    unsigned nwaiting;
    bool capped_logged; /* a cap was hit during this queue episode */
    struct event kick;  /* deferred: start connects for waiters */
    bool kick_armed;
    struct upstream_tls *tls;   /* NULL: plain TCP (see tls.h) */
    char tls_ns[64];            /* data-plane TLS: the namespace whose SAN the peer carries */
    unsigned long tls_failures; /* handshakes that failed (logged each time) */
    const char *tls_last_why;   /* the last failure's reason (static), for an error body */
    unsigned long tls_full, tls_resumed; /* handshakes done, with a full exchange or resumed */
    struct h2_pool *h2; /* HTTP/2 streams to the same destination, made on first use
                           (proxy_h2.c, or with TLS by its owner: h2_pool_set_tls); freed
                           with upstream_release_h2() */
};

struct upconn {
    struct upstream *up;
    int fd;
    struct event rev, wev, tev;
    struct evbuffer *in, *out;
    /* The HTTP/1 back codec's state on this connection (proxy_h1.c,
     * http_client.c): one response at a time. */
    struct h1_parser parser;  /* response parser */
    struct http_head *head;   /* response head while attached */
    TAILQ_ENTRY(upconn) link; /* in idle or connecting */
    /* The socket events are assigned once at connect and never re-registered
     * (a pooled connection costs no epoll_ctl on reuse); they dispatch to the
     * holder's ops. */
    const struct upconn_ops *ops;
    void *owner; /* the holder's object (a proxy exchange, an http_call) */
    bool connecting, reused, reading, writing, eof, dead, idle;
    bool got_bytes;      /* any byte arrived since the holder took it */
    struct transport tp; /* plain, or TLS when the pool is */
    bool handshaking;
};

/* host must be an IP literal. max_idle 0 means 1000 (Knative's default for
 * CC=0). The connect caps come from the environment (see above); tests may
 * set max_connecting / max_conns after init. */
bool upstream_init(struct upstream *u, struct event_base *base, const char *host, int port,
                   unsigned max_idle, double idle_seconds);
/* Read into uc->in / write uc->out, through TLS when the pool has it. */
enum io_status upconn_read(struct upconn *uc);
enum io_status upconn_write(struct upconn *uc);
/* Arm or disarm reading / writing on an attached connection. */
void upconn_want_read(struct upconn *uc, bool on);
void upconn_want_write(struct upconn *uc, bool on);
/* An idle connection, attached to w->ops / w->owner, when one is ready now
 * (O(1), no syscall, no allocation). Otherwise NULL and either w->queued
 * (on_ready runs later; `front` queues it first, for a retry that already
 * waited its turn) or, when a connect could not even start, errno says why
 * and nothing waits. */
struct upconn *upstream_checkout(struct upstream *u, struct upstream_waiter *w, bool front);
/* Takes a queued waiter off the FIFO (on_ready will not run). Safe to call
 * on a waiter that is not queued. */
void upstream_cancel(struct upstream *u, struct upstream_waiter *w);
/* Back to the pool: to the head waiter if any, else idle; closes it instead
 * when it cannot be reused or the pool is full. */
void upstream_checkin(struct upconn *uc);
/* Closes now; memory is reclaimed after the current callback. */
void upconn_close(struct upconn *uc);
/* Closes every idle connection, and the connects nobody waits for
 * (shutdown). Call it before freeing an upstream (it also stops the pool's
 * deferred work); the upstream must then have no waiter and no connection
 * checked out. */
void upstream_close_idle(struct upstream *u);
/* Frees the HTTP/2 pool, resetting its streams (their holders are told). */
void upstream_release_h2(struct upstream *u);

#endif
