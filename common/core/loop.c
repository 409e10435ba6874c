/* loop.c — see loop.h. */
#include "core/loop.h"
#include "core/alloc.h"

#include <event2/event_struct.h>
#include <stdlib.h>

struct deferred {
    void *ptr;
    void (*fn)(void *);
};

static struct event_base *base;
static struct event reaper;
static struct deferred *dq;
static unsigned dq_len, dq_cap;

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    loop_flush_deferred();
}

struct event_base *loop_init(void)
{
    struct event_config *cfg = event_config_new();
    /* We never use libevent's locks or signal-safe notify machinery. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    X_CHECK(base); /* start-up */
    event_assign(&reaper, base, -1, 0, on_reap, NULL);
    return base;
}

struct event_base *loop_base(void)
{
    return base;
}

void loop_defer_free(void *ptr, void (*fn)(void *))
{
    if (dq_len == dq_cap) {
        dq_cap = dq_cap ? dq_cap * 2 : 64;
        dq = xrealloc(dq, dq_cap * sizeof *dq); /* a warm pool (alloc.h, kind 3) */
    }
    dq[dq_len++] = (struct deferred){ptr, fn};
    if (base && !event_pending(&reaper, EV_TIMEOUT, NULL))
        event_active(&reaper, EV_TIMEOUT, 0);
}

void loop_flush_deferred(void)
{
    /* fn may defer more; loop until empty. */
    while (dq_len) {
        struct deferred d = dq[--dq_len];
        d.fn(d.ptr);
    }
}

void loop_free(void)
{
    loop_flush_deferred();
    free(dq);
    dq = NULL;
    dq_cap = 0;
    if (base) {
        event_base_free(base);
        base = NULL;
    }
}
