/* breaker.h — container-concurrency admission (Knative's queue.Breaker).
 *
 * A breaker admits `capacity` requests at once and lets up to `queue_depth`
 * more wait; the next arrival is refused at once. Waiters are served FIFO
 * (Knative's channel wake-ups are only roughly FIFO; strict order is the
 * fairer reading). A released slot is handed to the next waiter from a
 * deferred event, never from inside the releasing request's teardown, so
 * teardown never recurses into another request's start.
 *
 * Ownership: waiters are embedded in their requests' contexts; the breaker
 * only links them. breaker_cancel() unlinks a waiter whose request died. */
#ifndef COLDBREW_BREAKER_H
#define COLDBREW_BREAKER_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <sys/queue.h>

struct breaker_waiter {
    TAILQ_ENTRY(breaker_waiter) link;
    void (*run)(struct breaker_waiter *w); /* called when a slot is granted */
    bool queued;
};

struct breaker {
    unsigned capacity;    /* concurrent executions allowed */
    unsigned queue_depth; /* waiting requests allowed on top */
    unsigned executing;
    unsigned waiting;
    TAILQ_HEAD(, breaker_waiter) queue;
    struct event dispatch;
};

enum breaker_result { BREAKER_RUN, BREAKER_QUEUED, BREAKER_FULL };

void breaker_init(struct breaker *b, struct event_base *base, unsigned capacity, unsigned depth);
enum breaker_result breaker_acquire(struct breaker *b, struct breaker_waiter *w);
/* A waiter gives up its place (client gone, timeout). */
void breaker_cancel(struct breaker *b, struct breaker_waiter *w);
/* An executing request finished. */
void breaker_release(struct breaker *b);
/* Changes capacity (the activator follows pod counts); waiters may start. */
void breaker_set_capacity(struct breaker *b, unsigned capacity);
/* Executing plus waiting: Knative's InFlight(). */
static inline unsigned breaker_in_flight(const struct breaker *b)
{
    return b->executing + b->waiting;
}
void breaker_deinit(struct breaker *b);

#endif
