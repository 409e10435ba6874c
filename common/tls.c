/* tls.c — see tls.h. */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "upstream.h"

static void log_ssl_error(const char *what, const struct upconn *uc)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    log_warn("tls: %s with %s: %s", what, uc->up->addr.text, e ? buf : "connection closed");
    ERR_clear_error();
}

static bool start(struct upconn *uc)
{
    struct upstream_tls *t = uc->up->tls;
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl)
        return false;
    SSL_set_fd(ssl, uc->fd);
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
    uc->tls_session = ssl;
    return true;
}

static int handshake(struct upconn *uc)
{
    SSL *ssl = uc->tls_session;
    int r = SSL_connect(ssl);
    if (r == 1)
        return 1;
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        uc->tls_want_write = e == SSL_ERROR_WANT_WRITE;
        return 0;
    }
    log_ssl_error("handshake failed", uc);
    return -1;
}

static enum io_status tls_read(struct upconn *uc)
{
    SSL *ssl = uc->tls_session;
    enum io_status st = IO_AGAIN;
    /* Drain what OpenSSL has decrypted too: epoll cannot see it. */
    for (int i = 0; i < 64; i++) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(uc->in, IO_READ_CHUNK, &v, 1) < 1)
            return IO_ERROR;
        int r = SSL_read(ssl, v.iov_base, (int)v.iov_len);
        if (r > 0) {
            v.iov_len = (size_t)r;
            evbuffer_commit_space(uc->in, &v, 1);
            st = IO_OK;
            if (!SSL_pending(ssl))
                break;
            continue;
        }
        int e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            break;
        if (e == SSL_ERROR_ZERO_RETURN)
            return st == IO_OK ? IO_OK : IO_EOF;
        log_ssl_error("read failed", uc);
        errno = EPROTO;
        return st == IO_OK ? IO_OK : IO_ERROR;
    }
    return st;
}

static enum io_status tls_write(struct upconn *uc)
{
    SSL *ssl = uc->tls_session;
    while (evbuffer_get_length(uc->out)) {
        size_t n = evbuffer_get_contiguous_space(uc->out);
        if (n > 65536)
            n = 65536;
        /* One TLS record per contiguous run; OpenSSL needs the same bytes on a retry. */
        int r = SSL_write(ssl, evbuffer_pullup(uc->out, (ev_ssize_t)n), (int)n);
        if (r > 0) {
            evbuffer_drain(uc->out, (size_t)r);
            continue;
        }
        int e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return IO_AGAIN;
        log_ssl_error("write failed", uc);
        errno = EPROTO;
        return IO_ERROR;
    }
    return IO_OK;
}

static void end(struct upconn *uc)
{
    if (uc->tls_session)
        SSL_free(uc->tls_session);
    uc->tls_session = NULL;
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
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        snprintf(err, cap, "tls: cannot load CA file %s", ca_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    struct upstream_tls *t = calloc(1, sizeof *t);
    t->ctx = ctx;
    snprintf(t->server_name, sizeof t->server_name, "%s", server_name);
    t->start = start;
    t->handshake = handshake;
    t->read = tls_read;
    t->write = tls_write;
    t->end = end;
    return t;
}

void tls_client_free(struct upstream_tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}
