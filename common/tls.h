/* tls.h — TLS client connections for upstream pools (OpenSSL).
 *
 * A pool becomes TLS by pointing its `tls` at a struct upstream_tls; the pool
 * then runs the handshake after each TCP connect (non-blocking, driven by the
 * socket's events) and its holders read and write through upconn_read() /
 * upconn_write(), unchanged. Only binaries that call tls_client_new() link
 * OpenSSL: the queue-proxy has no TLS client and stays small.
 *
 * Verification: the peer's chain against `ca_file`, and its name (or IP
 * address, for an IP literal such as KUBERNETES_SERVICE_HOST) against the
 * pool's host. TLS 1.2 minimum. */
#ifndef COLDBREW_TLS_H
#define COLDBREW_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "io.h"

struct upconn;

struct upstream_tls {
    void *ctx; /* SSL_CTX */
    char server_name[256];
    /* Called by upstream.c: */
    bool (*start)(struct upconn *uc);    /* after the TCP connect */
    int (*handshake)(struct upconn *uc); /* 1 done, 0 again (see want_write), -1 failed */
    enum io_status (*read)(struct upconn *uc);
    enum io_status (*write)(struct upconn *uc);
    void (*end)(struct upconn *uc); /* free the session */
};

/* A TLS client configuration verifying peers against ca_file (PEM) and the
 * name or IP `server_name`. NULL with err set on failure. */
struct upstream_tls *tls_client_new(const char *ca_file, const char *server_name, char *err,
                                    size_t cap);
void tls_client_free(struct upstream_tls *t);

#endif
