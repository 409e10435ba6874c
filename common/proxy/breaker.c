/* breaker.c — see breaker.h. */
#include "proxy/breaker.h"

static void dispatch(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct breaker *b = arg;
    while (b->executing < b->capacity && !TAILQ_EMPTY(&b->queue)) {
        struct breaker_waiter *w = TAILQ_FIRST(&b->queue);
        TAILQ_REMOVE(&b->queue, w, link);
        w->queued = false;
        b->waiting--;
        b->executing++;
        w->run(w);
    }
}

static void schedule(struct breaker *b)
{
    if (!TAILQ_EMPTY(&b->queue) && b->executing < b->capacity &&
        !event_pending(&b->dispatch, EV_TIMEOUT, NULL))
        event_active(&b->dispatch, EV_TIMEOUT, 0);
}

void breaker_init(struct breaker *b, struct event_base *base, unsigned capacity, unsigned depth)
{
    b->capacity = capacity;
    b->queue_depth = depth;
    b->executing = b->waiting = 0;
    TAILQ_INIT(&b->queue);
    event_assign(&b->dispatch, base, -1, 0, dispatch, b);
}

enum breaker_result breaker_acquire(struct breaker *b, struct breaker_waiter *w)
{
    if (b->executing + b->waiting >= b->capacity + b->queue_depth)
        return BREAKER_FULL;
    if (b->executing < b->capacity && TAILQ_EMPTY(&b->queue)) {
        b->executing++;
        return BREAKER_RUN;
    }
    TAILQ_INSERT_TAIL(&b->queue, w, link);
    w->queued = true;
    b->waiting++;
    schedule(b);
    return BREAKER_QUEUED;
}

void breaker_cancel(struct breaker *b, struct breaker_waiter *w)
{
    if (!w->queued)
        return;
    TAILQ_REMOVE(&b->queue, w, link);
    w->queued = false;
    b->waiting--;
}

void breaker_release(struct breaker *b)
{
    if (b->executing)
        b->executing--;
    schedule(b);
}

void breaker_set_capacity(struct breaker *b, unsigned capacity)
{
    b->capacity = capacity;
    schedule(b);
}

void breaker_deinit(struct breaker *b)
{
    event_del(&b->dispatch);
}
