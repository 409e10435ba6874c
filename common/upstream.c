/* upstream.c — see upstream.h. */
#include "upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h2_pool.h"
#include "io.h"
#include "loop.h"
#include "tls.h"

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
    return uc->up->tls ? uc->up->tls->read(uc) : io_read(uc->in, uc->fd);
}

enum io_status upconn_write(struct upconn *uc)
{
    return uc->up->tls ? uc->up->tls->write(uc) : io_write(uc->out, uc->fd);
}

static void connect_failed(struct upconn *uc, int err)
{
    if (uc->ops && uc->ops->on_connect_failed)
        uc->ops->on_connect_failed(uc, err);
    else
        upconn_close(uc);
}

/* Drives the TLS handshake; true once it is done (the connection is usable). */
static bool tls_step(struct upconn *uc)
{
    int r = uc->up->tls->handshake(uc);
    if (r < 0) {
        connect_failed(uc, EPROTO);
        return false;
    }
    if (r == 0) {
        io_arm(&uc->rev, &uc->reading, !uc->tls_want_write);
        io_arm(&uc->wev, &uc->writing, uc->tls_want_write);
        return false;
    }
    uc->handshaking = false;
    io_arm(&uc->wev, &uc->writing, false);
    upconn_want_read(uc, true);
    return true;
}

/* The connect finished (writable, or an error reported as readable). */
static bool connect_done(struct upconn *uc)
{
    int err = net_connect_result(uc->fd);
    if (err) {
        connect_failed(uc, err);
        return false;
    }
    uc->connecting = false;
    if (uc->up->tls) {
        if (!uc->up->tls->start(uc)) {
            connect_failed(uc, ENOMEM);
            return false;
        }
        uc->handshaking = true;
        return tls_step(uc);
    }
    upconn_want_read(uc, true);
    return true;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct upconn *uc = arg;
    if (uc->connecting && !connect_done(uc))
        return;
    if (uc->handshaking) {
        if (tls_step(uc) && uc->ops)
            uc->ops->on_writable(uc); /* now the request can go */
        return;
    }
    if (uc->ops) {
        uc->ops->on_readable(uc);
        return;
    }
    /* An idle pooled connection has nothing to say: EOF or stray bytes both end it. */
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
    if (uc->connecting && !connect_done(uc))
        return;
    if (uc->handshaking && !tls_step(uc))
        return;
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
    u->base = base;
    snprintf(u->host, sizeof u->host, "%s", host);
    u->port = port;
    TAILQ_INIT(&u->idle);
    u->max_idle = max_idle ? max_idle : 1000;
    struct timeval tv = {(time_t)idle_seconds,
                         (suseconds_t)((idle_seconds - (double)(time_t)idle_seconds) * 1e6)};
    const struct timeval *common = event_base_init_common_timeout(base, &tv);
    u->idle_tv = common ? *common : tv;
    return true;
}

struct upconn *upstream_checkout(struct upstream *u, bool fresh, const struct upconn_ops *ops,
                                 void *owner)
{
    struct upconn *uc = fresh ? NULL : TAILQ_FIRST(&u->idle);
    if (uc) {
        uc->ops = ops;
        uc->owner = owner;
        TAILQ_REMOVE(&u->idle, uc, link);
        u->nidle--;
        event_del(&uc->tev); /* a timer: no syscall */
        uc->idle = false;
        uc->reused = true;
        uc->connecting = false;
        uc->got_bytes = uc->resp_head_done = uc->tunnel = uc->retried = false;
        uc->body_sent = 0;
        return uc;
    }
    int fd = net_connect_start(&u->addr);
    if (fd < 0)
        return NULL;
    uc = calloc(1, sizeof *uc);
    if (!uc) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    uc->up = u;
    uc->fd = fd;
    uc->in = evbuffer_new();
    uc->out = evbuffer_new();
    uc->connecting = true;
    uc->ops = ops;
    uc->owner = owner;
    event_assign(&uc->rev, u->base, fd, EV_READ | EV_PERSIST, on_read, uc);
    event_assign(&uc->wev, u->base, fd, EV_WRITE | EV_PERSIST, on_write, uc);
    event_assign(&uc->tev, u->base, -1, 0, on_idle_timeout, uc);
    /* Writable means connected (or failed): the connect completes there. */
    event_add(&uc->wev, NULL);
    uc->writing = true;
    h1_parser_init(&uc->parser, false, 1 << 20, HTTP_HEAD_MAX_HEADERS);
    u->nconns++;
    return uc;
}

void upstream_checkin(struct upconn *uc)
{
    struct upstream *u = uc->up;
    uc->req = NULL;
    uc->ops = NULL;
    uc->owner = NULL;
    if (uc->head) {
        http_head_release(uc->head);
        uc->head = NULL;
    }
    if (uc->dead)
        return;
    if (u->nidle >= u->max_idle || uc->eof || evbuffer_get_length(uc->in) ||
        evbuffer_get_length(uc->out)) {
        upconn_close(uc);
        return;
    }
    /* Reading stays armed (EOF from the backend is noticed at once); writing
     * is already off since the output is empty. */
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
    if (uc->head) {
        http_head_release(uc->head);
        uc->head = NULL;
    }
    event_del(&uc->rev);
    event_del(&uc->wev);
    event_del(&uc->tev);
    if (uc->tls_session)
        u->tls->end(uc);
    close(uc->fd);
    uc->fd = -1;
    u->nconns--;
    loop_defer_free(uc, upconn_free);
}

void upstream_close_idle(struct upstream *u)
{
    struct upconn *uc;
    while ((uc = TAILQ_FIRST(&u->idle)))
        upconn_close(uc);
}

void upstream_release_h2(struct upstream *u)
{
    h2_pool_free(u->h2);
    u->h2 = NULL;
}
