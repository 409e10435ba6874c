/* h2_pool.h — HTTP/2 connections to one destination, handing out streams.
 *
 * The HTTP/2 side of an upstream (the user container for the queue-proxy,
 * a pod for the activator): requests go out as streams multiplexed over
 * few h2c connections. h2_pool_request() puts a stream on the least busy
 * connection that can take one (connected or still connecting: nghttp2
 * queues the request until the connection is up), opens another connection
 * when every one is at the upstream's SETTINGS_MAX_CONCURRENT_STREAMS, and
 * beyond max_conns queues on the least busy one (nghttp2 holds streams over
 * the peer's limit until a slot frees, in order).
 *
 * A connection that failed or was told to go away takes no new streams and
 * is freed once its last stream ends; one with no stream for idle_seconds
 * is closed (shorter than the usual backend keep-alive, like the HTTP/1
 * pool's COLDBREW_UPSTREAM_IDLE_SECONDS).
 *
 * Ownership: the pool owns its connections; streams belong to their
 * connection (h2_client.h). h2_pool_free() resets every open stream (their
 * holders are told) and frees the connections. */
#ifndef COLDBREW_H2_POOL_H
#define COLDBREW_H2_POOL_H

#include <event2/event.h>
#include <stdbool.h>

#include "http/h2_client.h"
#include "core/net.h"

#define H2_POOL_MAX_CONNS 16

struct h2_pool;

/* max_conns 0 means 4; at most H2_POOL_MAX_CONNS. */
struct h2_pool *h2_pool_new(struct event_base *base, const struct net_addr *addr,
                            const struct h2_limits *lim, unsigned max_conns, double idle_seconds);
void h2_pool_free(struct h2_pool *p);
/* Connections of the pool go over TLS with the upstream's connector (h2 by
 * ALPN), e.g. activator -> pod under internal TLS. */
struct upstream;
void h2_pool_set_tls(struct h2_pool *p, struct upstream *u);

/* As h2c_request(), on a connection of the pool. NULL with errno when no
 * connection can be had (the connect could not start, or memory). */
struct h2c_stream *h2_pool_request(struct h2_pool *p, const char *method, const char *scheme,
                                   const char *authority, const char *path,
                                   const struct h2_header_out *hdrs, size_t n, bool end,
                                   const struct h2c_stream_ops *ops, void *holder);
/* Open connections (for tests and metrics). */
unsigned h2_pool_conns(const struct h2_pool *p);

#endif
