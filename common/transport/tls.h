/* tls.h — what makes an upstream pool TLS: a connector that gives each new
 * connection its SSL. The bytes then move through the connection's
 * transport (transport.h), like a server connection's; the pool runs the
 * non-blocking handshake after the TCP connect (upstream.c).
 *
 * Two connectors:
 *  - tls_client_new(): the Kubernetes API. The peer's chain against
 *    `ca_file`, its name (or IP address, for an IP literal such as
 *    KUBERNETES_SERVICE_HOST) against `server_name`. TLS 1.2 minimum.
 *  - tls_data_plane_new(): activator -> queue-proxy (Knative's
 *    system-internal-tls) on a tls_ctx_client: SNI and verified name
 *    data-plane.knative.dev, the SAN kn-user-<namespace> with the namespace
 *    taken from the pool (upstream.tls_ns), TLS sessions cached per
 *    (namespace, destination) and offered again on the next connect. */
#ifndef COLDBREW_TLS_H
#define COLDBREW_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct upstream;
struct tls_ctx_client;

struct upstream_tls {
    /* A new SSL in connect state on fd for a connection of u, offering h2
     * (an HTTP/2 pool's connection) or http/1.1 by ALPN; NULL on failure
     * (out of memory, no namespace for the data plane). */
    void *(*new_session)(struct upstream_tls *t, struct upstream *u, int fd, bool h2);
    void *ctx;                     /* SSL_CTX (Kubernetes API) */
    struct tls_ctx_client *client; /* data plane; borrowed */
    char server_name[256];
};

/* A TLS client configuration verifying peers against ca_file (PEM) and the
 * name or IP `server_name`. NULL with err set on failure. */
struct upstream_tls *tls_client_new(const char *ca_file, const char *server_name, char *err,
                                    size_t cap);
/* A data-plane connector on `client` (which must outlive it). */
struct upstream_tls *tls_data_plane_new(struct tls_ctx_client *client);
void tls_client_free(struct upstream_tls *t);

#endif
