/* transport.c — see transport.h. */
#include "transport/transport.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include "core/log.h"
#include "transport/tls_ctx.h"

/* One TLS record carries at most 16 KiB of plaintext. */
#define TLS_RECORD 16384

static enum io_status tls_read(struct transport *t, struct evbuffer *in, int fd)
{
    (void)fd;
    SSL *ssl = t->ssl;
    enum io_status st = IO_AGAIN;
    t->want_write = false;
    /* Bounded: a record is 16 KiB, and without read-ahead OpenSSL holds at
     * most one; the rest stays in the kernel where epoll sees it. (Read-ahead
     * would save the 5-byte header read(2) per record, but measured no
     * cheaper per request here, and it holds a 16 KiB buffer longer.) */
    for (int i = 0; i < 64; i++) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(in, IO_READ_CHUNK, &v, 1) < 1) {
            errno = ENOMEM;
            return IO_ERROR;
        }
        int r = SSL_read(ssl, v.iov_base, (int)v.iov_len);
        if (r > 0) {
            v.iov_len = (size_t)r;
            evbuffer_commit_space(in, &v, 1);
            st = IO_OK;
            if (!SSL_pending(ssl))
                break;
            continue;
        }
        int e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_WANT_WRITE) {
            t->want_write = true;
            break;
        }
        ERR_clear_error();
        if (e == SSL_ERROR_ZERO_RETURN) /* close_notify */
            return st == IO_OK ? IO_OK : IO_EOF;
        if (e == SSL_ERROR_SYSCALL && errno == 0)
            return st == IO_OK ? IO_OK : IO_EOF; /* FIN without close_notify: an EOF all the same */
        if (e != SSL_ERROR_SYSCALL)
            errno = EPROTO;
        return st == IO_OK ? IO_OK : IO_ERROR;
    }
    return st;
}

static enum io_status tls_write(struct transport *t, struct evbuffer *out, int fd)
{
    (void)fd;
    SSL *ssl = t->ssl;
    t->want_write = false;
    size_t left;
    while ((left = evbuffer_get_length(out))) {
        struct evbuffer_iovec v;
        evbuffer_peek(out, -1, NULL, &v, 1);
        size_t n = v.iov_len;
        const void *p = v.iov_base;
        if (n < TLS_RECORD && n < left) {
            /* Fragments: one full record rather than many small ones. */
            n = left < TLS_RECORD ? left : TLS_RECORD;
            p = evbuffer_pullup(out, (ev_ssize_t)n);
        } else if (n > TLS_RECORD) {
            n = TLS_RECORD;
        }
        /* A retry after WANT_WRITE passes the same bytes again (they stay at
         * the head until written), maybe more: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER. */
        int r = SSL_write(ssl, p, (int)n);
        if (r > 0) {
            evbuffer_drain(out, (size_t)r);
            continue;
        }
        int e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_WANT_WRITE) {
            t->want_write = true;
            return IO_AGAIN;
        }
        if (e == SSL_ERROR_WANT_READ)
            return IO_AGAIN;
        ERR_clear_error();
        if (e != SSL_ERROR_SYSCALL || errno == 0)
            errno = EPROTO;
        return IO_ERROR;
    }
    return IO_OK;
}

static int tls_handshake(struct transport *t, const char **why)
{
    SSL *ssl = t->ssl;
    int r = tls_ctx_handshake(ssl, why);
    t->want_write = r == 0 && SSL_want_write(ssl);
    if (r == 1)
        t->handshaking = false;
    return r;
}

static void tls_shutdown(struct transport *t, int fd)
{
    (void)fd;
    /* One close_notify, not waiting for the peer's (its FIN will do). */
    if (!t->handshaking)
        SSL_shutdown(t->ssl);
    ERR_clear_error();
}

static void tls_free(struct transport *t)
{
    SSL_free(t->ssl);
}

const struct transport_ops transport_tls_ops = {
    .read = tls_read,
    .write = tls_write,
    .handshake = tls_handshake,
    .shutdown = tls_shutdown,
    .free = tls_free,
};

void transport_tls_attach(struct transport *t, void *ssl)
{
    t->ops = &transport_tls_ops;
    t->ssl = ssl;
    t->want_write = false;
    t->handshaking = true;
    /* Writes retry from wherever the evbuffer's head is now, and a record
     * written is drained at once (partial writes report what went out). */
    SSL_set_mode(ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_RELEASE_BUFFERS);
}

void transport_shutdown(struct transport *t, int fd)
{
    if (t->ops)
        t->ops->shutdown(t, fd);
    shutdown(fd, SHUT_WR);
}

bool transport_alpn_h2(const struct transport *t)
{
    return t->ops && tls_ctx_alpn(t->ssl) == TLS_ALPN_H2;
}

bool transport_resumed(const struct transport *t)
{
    return t->ops && SSL_session_reused(t->ssl);
}
