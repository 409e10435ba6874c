/* pods.h — one keep-alive connection pool per pod ("ip:port"), shared by the
 * prober and the throttler so that a probe's connection serves the pod's
 * first request (as Knative's shared transport does).
 *
 * Ownership: reference counted; pod_pool_get() adds a reference (creating the
 * pool on first use), pod_pool_put() drops one and closes the pool's idle
 * connections with the last. */
#ifndef ACTIVATOR_PODS_H
#define ACTIVATOR_PODS_H

#include <event2/event.h>
#include <uthash.h>

#include "../common/upstream.h"

struct pod_pool {
    char dest[64];
    struct upstream up;
    unsigned refs;
    UT_hash_handle hh;
};

/* max_idle: MAX_IDLE_PROXY_CONNS_PER_HOST; idle_seconds: the pool's idle timeout. */
void pod_pools_init(struct event_base *base, unsigned max_idle, double idle_seconds);
struct pod_pool *pod_pool_get(const char *dest);
void pod_pool_put(struct pod_pool *p);
unsigned pod_pools_count(void);

#endif
