/* h2_pool.c — see h2_pool.h. */
#include "proxy/h2_pool.h"

#include <errno.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/log.h"

struct pooled {
    struct h2c_conn *conn;
    struct h2_pool *pool;
    struct event *idle; /* armed while the connection has no stream */
};

struct h2_pool {
    struct event_base *base;
    struct net_addr addr;
    const struct h2_limits *lim;
    unsigned max_conns;
    double idle_seconds;
    struct upstream *tls_up;                /* TLS with this upstream's connector; NULL: h2c */
    struct pooled *slot[H2_POOL_MAX_CONNS]; /* dense: the first nconns are in use */
    unsigned nconns;
};

static void drop(struct pooled *s)
{
    struct h2_pool *p = s->pool;
    for (unsigned i = 0; i < p->nconns; i++) {
        if (p->slot[i] == s) {
            p->slot[i] = p->slot[--p->nconns]; /* keep the slots dense */
            p->slot[p->nconns] = NULL;
            break;
        }
    }
    event_free(s->idle);
    h2c_conn_free(s->conn); /* safe from its own callbacks: memory goes to the reaper */
    free(s);
}

static struct pooled *slot_of(struct h2_pool *p, struct h2c_conn *c)
{
    for (unsigned i = 0; i < p->nconns; i++)
        if (p->slot[i]->conn == c)
            return p->slot[i];
    return NULL;
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct pooled *s = arg;
    if (!h2c_conn_streams(s->conn))
        drop(s);
}

/* A connection's state changed (ready, a stream ended, GOAWAY, failure). */
static void on_state(struct h2c_conn *c, void *arg)
{
    struct h2_pool *p = arg;
    struct pooled *s = slot_of(p, c);
    if (!s)
        return;
    if (h2c_conn_streams(c))
        return;
    if (h2c_conn_done(c)) {
        drop(s);
        return;
    }
    struct timeval tv = clock_tv(p->idle_seconds);
    event_add(s->idle, &tv);
}

static const struct h2c_conn_ops pool_ops = {on_state};

struct h2_pool *h2_pool_new(struct event_base *base, const struct net_addr *addr,
                            const struct h2_limits *lim, unsigned max_conns, double idle_seconds)
{
    struct h2_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->base = base;
    p->addr = *addr;
    p->lim = lim;
    p->max_conns = max_conns ? max_conns : 4;
    if (p->max_conns > H2_POOL_MAX_CONNS)
        p->max_conns = H2_POOL_MAX_CONNS;
    p->idle_seconds = idle_seconds > 0 ? idle_seconds : 4;
    return p;
}

void h2_pool_set_tls(struct h2_pool *p, struct upstream *u)
{
    p->tls_up = u;
}

void h2_pool_free(struct h2_pool *p)
{
    if (!p)
        return;
    while (p->nconns)
        drop(p->slot[p->nconns - 1]);
    free(p);
}

unsigned h2_pool_conns(const struct h2_pool *p)
{
    return p->nconns;
}

static struct pooled *open_conn(struct h2_pool *p)
{
    struct pooled *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->pool = p;
    s->idle = evtimer_new(p->base, on_idle, s);
    s->conn = s->idle ? h2c_conn_new_tls(p->base, &p->addr, p->lim, &pool_ops, p, p->tls_up) : NULL;
    if (!s->conn) {
        if (s->idle)
            event_free(s->idle);
        free(s);
        return NULL;
    }
    p->slot[p->nconns++] = s;
    return s;
}

struct h2c_stream *h2_pool_request(struct h2_pool *p, const char *method, const char *scheme,
                                   const char *authority, const char *path,
                                   const struct h2_header_out *hdrs, size_t n, bool end,
                                   const struct h2c_stream_ops *ops, void *holder)
{
    /* The least busy connection that can take a stream now. */
    struct pooled *best = NULL;
    for (unsigned i = 0; i < p->nconns; i++) {
        struct pooled *s = p->slot[i];
        if (h2c_conn_available(s->conn) &&
            (!best || h2c_conn_streams(s->conn) < h2c_conn_streams(best->conn)))
            best = s;
    }
    if (!best && p->nconns < p->max_conns)
        best = open_conn(p);
    if (!best) {
        /* Over every limit: nghttp2 queues the stream, in order, on the
         * least busy connection that is not going away. */
        for (unsigned i = 0; i < p->nconns; i++) {
            struct pooled *s = p->slot[i];
            if (!h2c_conn_done(s->conn) &&
                (!best || h2c_conn_streams(s->conn) < h2c_conn_streams(best->conn)))
                best = s;
        }
    }
    if (!best) {
        if (!errno)
            errno = ECONNREFUSED;
        return NULL;
    }
    event_del(best->idle);
    errno = 0;
    struct h2c_stream *st =
        h2c_request(best->conn, method, scheme, authority, path, hdrs, n, end, ops, holder);
    if (!st && !errno)
        errno = ENOMEM;
    return st;
}
