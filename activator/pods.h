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

#include "proxy/upstream.h"

struct pod_pool {
    char dest[160]; /* the hash key: "ip:port", or "tls/<ns>/ip:port" for a TLS pool */
    struct upstream up;
    unsigned refs;
    UT_hash_handle hh;
};

/* max_idle: MAX_IDLE_PROXY_CONNS_PER_HOST; idle_seconds: the pool's idle timeout. */
void pod_pools_init(struct event_base *base, unsigned max_idle, double idle_seconds);
struct pod_pool *pod_pool_get(const char *dest);
void pod_pool_put(struct pod_pool *p);
unsigned pod_pools_count(void);

/* Internal TLS (Knative §3.8): requests go to pods over TLS, probes stay
 * plain on the Endpoints' port. With a connector set, pod_pool_for_requests()
 * gives a pool to the pod's TLS port (the one pod_tls_port_note() learnt
 * from the Endpoints' or Service's "https" port, else `default_port`), whose
 * connections carry the SAN check of namespace `ns`. Without one it is
 * pod_pool_get(dest). */
struct upstream_tls;
struct h2_limits;
void pod_pools_set_tls(struct upstream_tls *t, int pod_port, int cluster_port,
                       const struct h2_limits *h2);
void pod_tls_port_note(const char *dest, int tls_port);
struct pod_pool *pod_pool_for_requests(const char *dest, const char *ns, bool cluster);
/* TLS handshakes to pods so far: full, resumed, refused (metrics, tests). */
void pod_pools_tls_counts(unsigned long *full, unsigned long *resumed, unsigned long *refused);

#endif
