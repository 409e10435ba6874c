/* upstream.c — see upstream.h. */
#include "proxy/upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/env.h"
#include "proxy/h2_pool.h"
#include "core/io.h"
#include "core/log.h"
#include "core/loop.h"
#include "transport/tls.h"

void upconn_want_read(struct upconn *uc, bool on)
{
    if (uc->dead || (on && uc->connecting))
        return;
    io_arm(&uc->rev, &uc->reading, on);
}

void upconn_want_write(struct upconn *uc, bool on)
{
    if (!uc->dead)
        io_arm(&uc->wev, &uc->writing, on);
}

enum io_status upconn_read(struct upconn *uc)
{
    return transport_read(&uc->tp, uc->in, uc->fd);
}

enum io_status upconn_write(struct upconn *uc)
{
    return transport_write(&uc->tp, uc->out, uc->fd);
}

/* ---------------------------------------------------------------- settings */

#define DEFAULT_MAX_CONNECTING 8

static struct {
    bool loaded;
    unsigned max_connecting, max_conns;
} limits;

static void limits_load(void)
{
    if (limits.loaded)
        return;
    limits.loaded = true;
    bool ok = true;
    long v = env_long("COLDBREW_UPSTREAM_MAX_CONNECTING", DEFAULT_MAX_CONNECTING, &ok);
    if (!ok || v < 1) {
        log_warn("COLDBREW_UPSTREAM_MAX_CONNECTING must be a positive integer; using %d",
                 DEFAULT_MAX_CONNECTING);
        v = DEFAULT_MAX_CONNECTING;
    }
    limits.max_connecting = (unsigned)v;
    ok = true;
    v = env_long("COLDBREW_UPSTREAM_MAX_CONNS", 0, &ok);
    if (!ok || v < 0) {
        log_warn("COLDBREW_UPSTREAM_MAX_CONNS must be a non-negative integer; using 0 (no cap)");
        v = 0;
    }
    limits.max_conns = (unsigned)v;
}

/* ---------------------------------------------------------------- waiters */

static void waiter_unlink(struct upstream *u, struct upstream_waiter *w)
{
    TAILQ_REMOVE(&u->waiters, w, link);
    w->queued = false;
    if (--u->nwaiting == 0)
        u->capped_logged = false; /* the episode is over: log the next one */
}

void upstream_cancel(struct upstream *u, struct upstream_waiter *w)
{
    if (w->queued)
        waiter_unlink(u, w);
}

/* Attaches a usable connection to a holder. */
static void give(struct upconn *uc, const struct upconn_ops *ops, void *owner)
{
    uc->ops = ops;
    uc->owner = owner;
    uc->got_bytes = false;
}

/* Hands a usable, unattached connection to the head waiter. The caller must
 * not touch the upstream afterwards. */
static void hand_to_head(struct upconn *uc)
{
    struct upstream *u = uc->up;
    struct upstream_waiter *w = TAILQ_FIRST(&u->waiters);
    waiter_unlink(u, w);
    give(uc, w->ops, w->owner);
    w->on_ready(w, uc, 0);
}

/* ---------------------------------------------------------------- connects */

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);
static void on_idle_timeout(evutil_socket_t fd, short what, void *arg);

/* Starts one connect owned by the pool; false with errno when it cannot. */
static bool connect_start(struct upstream *u)
{
    int fd = net_connect_start(&u->addr);
    if (fd < 0)
        return false;
    struct upconn *uc = calloc(1, sizeof *uc);
    if (!uc) {
        close(fd);
        errno = ENOMEM;
        return false;
    }
    uc->up = u;
    uc->fd = fd;
    uc->in = evbuffer_new();
    uc->out = evbuffer_new();
    if (!uc->in || !uc->out) {
        /* The request path (alloc.h): the waiter gets the error, 502. */
        if (uc->in)
            evbuffer_free(uc->in);
        if (uc->out)
            evbuffer_free(uc->out);
        free(uc);
        close(fd);
        errno = ENOMEM;
        return false;
    }
    uc->connecting = true;
    event_assign(&uc->rev, u->base, fd, EV_READ | EV_PERSIST, on_read, uc);
    event_assign(&uc->wev, u->base, fd, EV_WRITE | EV_PERSIST, on_write, uc);
    event_assign(&uc->tev, u->base, -1, 0, on_idle_timeout, uc);
    /* Writable means connected (or failed): the connect completes there. */
    event_add(&uc->wev, NULL);
    uc->writing = true;
    h1_parser_init(&uc->parser, false, 1 << 20, HTTP_HEAD_MAX_HEADERS);
    TAILQ_INSERT_TAIL(&u->connecting, uc, link);
    u->nconnecting++;
    u->nconns++;
    return true;
}

/* May another connect start for the waiters? Logs the first time a cap
 * holds requests back in a queue episode. */
static bool connect_wanted(struct upstream *u)
{
    if (u->nconnecting >= u->nwaiting)
        return false; /* every waiter already has a connect coming */
    const char *cap = NULL;
    if (u->nconnecting >= u->max_connecting)
        cap = "COLDBREW_UPSTREAM_MAX_CONNECTING";
    else if (u->max_conns && u->nconns >= u->max_conns)
        cap = "COLDBREW_UPSTREAM_MAX_CONNS";
    if (!cap)
        return true;
    if (!u->capped_logged) {
        u->capped_logged = true;
        log_info("upstream %s: %u requests wait for a connection (%u open, %u connecting); %s "
                 "caps new connects",
                 u->addr.text, u->nwaiting, u->nconns, u->nconnecting, cap);
    }
    return false;
}

/* Deferred: start the connects the waiters need. A connect that cannot even
 * start fails the head waiter (as a failed connect does). */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct upstream *u = arg;
    u->kick_armed = false;
    while (connect_wanted(u)) {
        if (connect_start(u))
            continue;
        int err = errno;
        struct upstream_waiter *w = TAILQ_FIRST(&u->waiters);
        waiter_unlink(u, w);
        if (u->nwaiting) {
            event_active(&u->kick, 0, 0);
            u->kick_armed = true;
        }
        w->on_ready(w, NULL, err);
        return; /* the upstream may be gone */
    }
}

static void kick(struct upstream *u)
{
    if (u->kick_armed || !u->nwaiting)
        return;
    u->kick_armed = true;
    event_active(&u->kick, 0, 0);
}

/* The connect (or TLS handshake) failed: the head waiter gets the error. */
static void connect_failed(struct upconn *uc, int err)
{
    struct upstream *u = uc->up;
    log_debug("upstream %s: connect failed: %s", u->addr.text, strerror(err));
    upconn_close(uc);
    if (!u->nwaiting)
        return; /* nobody was waiting for it */
    struct upstream_waiter *w = TAILQ_FIRST(&u->waiters);
    waiter_unlink(u, w);
    kick(u); /* the others still need their connects */
    w->on_ready(w, NULL, err);
}

/* Idle in the pool: reading stays armed (EOF from the backend is noticed at
 * once), writing off, the idle timer running. */
static void pool_put(struct upconn *uc)
{
    struct upstream *u = uc->up;
    if (u->nidle >= u->max_idle) {
        upconn_close(uc);
        return;
    }
    if (!uc->reading) {
        event_add(&uc->rev, NULL);
        uc->reading = true;
    }
    if (uc->writing) {
        event_del(&uc->wev);
        uc->writing = false;
    }
    event_add(&uc->tev, &u->idle_tv);
    uc->idle = true;
    TAILQ_INSERT_HEAD(&u->idle, uc, link);
    u->nidle++;
}

/* The connection is established (and TLS done): the head waiter takes it,
 * else the pool keeps it. */
static void connect_usable(struct upconn *uc)
{
    struct upstream *u = uc->up;
    TAILQ_REMOVE(&u->connecting, uc, link);
    u->nconnecting--;
    io_arm(&uc->wev, &uc->writing, false);
    upconn_want_read(uc, true);
    if (!u->nwaiting) {
        pool_put(uc);
        return;
    }
    if (u->nwaiting > 1)
        kick(u); /* a connect slot came free: the others may need it */
    hand_to_head(uc);
}

/* Drives a connect: TCP result, then the TLS handshake. */
static void connect_step(struct upconn *uc)
{
    if (uc->connecting) {
        int err = net_connect_result(uc->fd);
        if (err) {
            connect_failed(uc, err);
            return;
        }
        uc->connecting = false;
        if (uc->up->tls) {
            void *ssl = uc->up->tls->new_session(uc->up->tls, uc->up, uc->fd, false);
            if (!ssl) {
                connect_failed(uc, ENOMEM);
                return;
            }
            transport_tls_attach(&uc->tp, ssl);
            uc->handshaking = true;
        }
    }
    if (uc->handshaking) {
        const char *why = NULL;
        int r = transport_handshake(&uc->tp, &why);
        if (r < 0) {
            /* Wrong SAN, expired, untrusted, no shared version: nothing is sent to it. */
            uc->up->tls_failures++;
            uc->up->tls_last_why = why ? why : "TLS handshake failed";
            log_warn("tls: handshake failed with %s: %s", uc->up->addr.text, why ? why : "failed");
            connect_failed(uc, EPROTO);
            return;
        }
        if (r == 0) {
            io_arm(&uc->rev, &uc->reading, !uc->tp.want_write);
            io_arm(&uc->wev, &uc->writing, uc->tp.want_write);
            return;
        }
        uc->handshaking = false;
        if (transport_resumed(&uc->tp))
            uc->up->tls_resumed++;
        else
            uc->up->tls_full++;
    }
    connect_usable(uc);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct upconn *uc = arg;
    if (uc->connecting || uc->handshaking) {
        connect_step(uc);
        return;
    }
    if (uc->ops) {
        uc->ops->on_readable(uc);
        return;
    }
    /* An idle pooled connection has nothing to say: EOF or stray bytes both end it. */
    if (transport_is_tls(&uc->tp)) {
        /* ...but TLS 1.3 peers send session tickets after the handshake:
         * read them (OpenSSL keeps them); only application bytes or EOF end it. */
        enum io_status st = transport_read(&uc->tp, uc->in, uc->fd);
        if (st == IO_AGAIN && !evbuffer_get_length(uc->in))
            return;
        upconn_close(uc);
        return;
    }
    char b[64];
    ssize_t r = read(uc->fd, b, sizeof b);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    upconn_close(uc);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct upconn *uc = arg;
    if (uc->connecting || uc->handshaking) {
        connect_step(uc);
        return;
    }
    if (uc->ops)
        uc->ops->on_writable(uc);
    else
        upconn_want_write(uc, false);
}

static void on_idle_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    upconn_close(arg);
}

bool upstream_init(struct upstream *u, struct event_base *base, const char *host, int port,
                   unsigned max_idle, double idle_seconds)
{
    memset(u, 0, sizeof *u);
    if (!net_addr_parse(&u->addr, host, port))
        return false;
    limits_load();
    u->base = base;
    snprintf(u->host, sizeof u->host, "%s", host);
    u->port = port;
    TAILQ_INIT(&u->idle);
    TAILQ_INIT(&u->connecting);
    TAILQ_INIT(&u->waiters);
    u->max_idle = max_idle ? max_idle : 1000;
    u->max_connecting = limits.max_connecting;
    u->max_conns = limits.max_conns;
    struct timeval tv = {(time_t)idle_seconds,
                         (suseconds_t)((idle_seconds - (double)(time_t)idle_seconds) * 1e6)};
    const struct timeval *common = event_base_init_common_timeout(base, &tv);
    u->idle_tv = common ? *common : tv;
    event_assign(&u->kick, base, -1, 0, on_kick, u);
    return true;
}

struct upconn *upstream_checkout(struct upstream *u, struct upstream_waiter *w, bool front)
{
    /* Idle connections exist only while nobody waits (see the invariants). */
    struct upconn *uc = TAILQ_FIRST(&u->idle);
    if (uc) {
        TAILQ_REMOVE(&u->idle, uc, link);
        u->nidle--;
        event_del(&uc->tev); /* a timer: no syscall */
        uc->idle = false;
        uc->reused = true;
        give(uc, w->ops, w->owner);
        return uc;
    }
    if (front)
        TAILQ_INSERT_HEAD(&u->waiters, w, link);
    else
        TAILQ_INSERT_TAIL(&u->waiters, w, link);
    w->queued = true;
    u->nwaiting++;
    if (connect_wanted(u) && !connect_start(u)) {
        /* Could not even start: this request fails now (a 502, as before);
         * the others keep waiting for the connections already coming. */
        int err = errno;
        waiter_unlink(u, w);
        errno = err;
    }
    return NULL;
}

void upstream_checkin(struct upconn *uc)
{
    struct upstream *u = uc->up;
    uc->ops = NULL;
    uc->owner = NULL;
    if (uc->head) {
        http_head_release(uc->head);
        uc->head = NULL;
    }
    if (uc->dead)
        return;
    if (uc->eof || evbuffer_get_length(uc->in) || evbuffer_get_length(uc->out)) {
        upconn_close(uc);
        return;
    }
    uc->reused = true;
    if (u->nwaiting) {
        /* Straight to the oldest waiter, watched for EOF like an idle one. */
        upconn_want_read(uc, true);
        io_arm(&uc->wev, &uc->writing, false);
        hand_to_head(uc);
        return;
    }
    pool_put(uc);
}

static void upconn_free(void *p)
{
    struct upconn *uc = p;
    evbuffer_free(uc->in);
    evbuffer_free(uc->out);
    free(uc);
}

void upconn_close(struct upconn *uc)
{
    if (uc->dead)
        return;
    uc->dead = true;
    struct upstream *u = uc->up;
    if (uc->idle) {
        TAILQ_REMOVE(&u->idle, uc, link);
        u->nidle--;
        uc->idle = false;
    }
    if (uc->connecting || uc->handshaking) {
        TAILQ_REMOVE(&u->connecting, uc, link);
        u->nconnecting--;
        uc->connecting = uc->handshaking = false;
    }
    if (uc->head) {
        http_head_release(uc->head);
        uc->head = NULL;
    }
    event_del(&uc->rev);
    event_del(&uc->wev);
    event_del(&uc->tev);
    transport_free(&uc->tp);
    close(uc->fd);
    uc->fd = -1;
    u->nconns--;
    loop_defer_free(uc, upconn_free);
    kick(u); /* a connection slot came free: waiters may need a connect */
}

void upstream_close_idle(struct upstream *u)
{
    struct upconn *uc;
    while ((uc = TAILQ_FIRST(&u->idle)))
        upconn_close(uc);
    if (!u->nwaiting)
        while ((uc = TAILQ_FIRST(&u->connecting)))
            upconn_close(uc);
    if (u->base) { /* initialised */
        event_del(&u->kick);
        u->kick_armed = false;
    }
}

void upstream_release_h2(struct upstream *u)
{
    h2_pool_free(u->h2);
    u->h2 = NULL;
}
