/* tls.c — see tls.h. */
#include "transport/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "transport/tls_ctx.h"
#include "proxy/upstream.h"

static void *api_session(struct upstream_tls *t, struct upstream *u, int fd, bool h2)
{
    (void)u, (void)h2;
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl)
        return NULL;
    SSL_set_fd(ssl, fd);
    struct in6_addr a6;
    struct in_addr a4;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    if (inet_pton(AF_INET, t->server_name, &a4) == 1 ||
        inet_pton(AF_INET6, t->server_name, &a6) == 1) {
        X509_VERIFY_PARAM_set1_ip_asc(param, t->server_name);
    } else {
        SSL_set_tlsext_host_name(ssl, t->server_name);
        X509_VERIFY_PARAM_set1_host(param, t->server_name, 0);
    }
    SSL_set_connect_state(ssl);
    ERR_clear_error();
    return ssl;
}

static void *data_plane_session(struct upstream_tls *t, struct upstream *u, int fd, bool h2)
{
    SSL *ssl = tls_ctx_client_connect(t->client, fd, u->tls_ns, u->addr.text,
                                      h2 ? TLS_ALPN_H2 : TLS_ALPN_HTTP11);
    if (!ssl)
        log_warn("upstream %s: no TLS session (namespace \"%s\")", u->addr.text, u->tls_ns);
    return ssl;
}

struct upstream_tls *tls_client_new(const char *ca_file, const char *server_name, char *err,
                                    size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, cap, "tls: cannot create a context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        snprintf(err, cap, "tls: cannot load CA file %s", ca_file);
        SSL_CTX_free(ctx);
        ERR_clear_error();
        return NULL;
    }
    struct upstream_tls *t = calloc(1, sizeof *t);
    if (!t) {
        SSL_CTX_free(ctx);
        snprintf(err, cap, "tls: out of memory");
        return NULL;
    }
    t->ctx = ctx;
    snprintf(t->server_name, sizeof t->server_name, "%s", server_name);
    t->new_session = api_session;
    return t;
}

struct upstream_tls *tls_data_plane_new(struct tls_ctx_client *client)
{
    struct upstream_tls *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->client = client;
    snprintf(t->server_name, sizeof t->server_name, "%s", TLS_CTX_DATA_PLANE_NAME);
    t->new_session = data_plane_session;
    return t;
}

void tls_client_free(struct upstream_tls *t)
{
    if (!t)
        return;
    if (t->ctx)
        SSL_CTX_free(t->ctx);
    free(t);
}
