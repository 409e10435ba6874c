/* upstream.c — see upstream.h. */
#include "upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loop.h"

void upconn_idle_readable(struct upconn *uc)
{
    char b[64];
    ssize_t r = read(uc->fd, b, sizeof b);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    upconn_close(uc);
}

static void on_idle_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    upconn_close(arg);
}

bool upstream_init(struct upstream *u, struct event_base *base, const char *host, int port,
                   unsigned max_idle, double idle_seconds, event_callback_fn on_read,
                   event_callback_fn on_write)
{
    memset(u, 0, sizeof *u);
    if (!net_addr_parse(&u->addr, host, port)) return false;
    u->base = base;
    snprintf(u->host, sizeof u->host, "%s", host);
    u->port = port;
    TAILQ_INIT(&u->idle);
    u->max_idle = max_idle ? max_idle : 1000;
    u->on_read = on_read;
    u->on_write = on_write;
    struct timeval tv = {(time_t)idle_seconds,
                         (suseconds_t)((idle_seconds - (double)(time_t)idle_seconds) * 1e6)};
    const struct timeval *common = event_base_init_common_timeout(base, &tv);
    u->idle_tv = common ? *common : tv;
    return true;
}

struct upconn *upstream_checkout(struct upstream *u, bool fresh)
{
    struct upconn *uc = fresh ? NULL : TAILQ_FIRST(&u->idle);
    if (uc) {
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
    if (fd < 0) return NULL;
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
    event_assign(&uc->rev, u->base, fd, EV_READ | EV_PERSIST, u->on_read, uc);
    event_assign(&uc->wev, u->base, fd, EV_WRITE | EV_PERSIST, u->on_write, uc);
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
    if (uc->head) {
        http_head_release(uc->head);
        uc->head = NULL;
    }
    if (uc->dead) return;
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
    if (uc->dead) return;
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
