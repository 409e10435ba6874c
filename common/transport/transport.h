/* transport.h — how a connection moves bytes: plain TCP or TLS.
 *
 * Every connection (the HTTP/1 server's sconn, both HTTP/2 sides' h2_wire,
 * an upstream's upconn) reads and writes through a struct transport. It is
 * a table of five operations (read, write, handshake, shutdown, free) and
 * the state one connection needs (the SSL).
 *
 * The plain transport is the NULL table: transport_read()/transport_write()
 * are inline and test one pointer, a branch that is always predicted right
 * on a plain listener, then call io_read()/io_write() directly. Plain
 * HTTP/1 pays no indirect call and no copy for the seam.
 *
 * The TLS transport (OpenSSL, an SSL made by tls_ctx.c or tls.c):
 *  - read decrypts into space reserved in the evbuffer (no bounce buffer)
 *    and drains what OpenSSL already holds decrypted (SSL_pending): epoll
 *    cannot see those bytes, so a read leaves none behind;
 *  - write sends the evbuffer's head one record (at most 16 KiB) per
 *    SSL_write; a small head is pulled up to a full record first (the only
 *    copy, and only of fragments);
 *  - a read or write that needs the other direction (a renegotiation-free
 *    TLS 1.3 still sends tickets and key updates) sets want_write, and the
 *    caller arms the write event;
 *  - handshake is one non-blocking step: 1 done, 0 again (want_write says
 *    which event), -1 failed with a static reason.
 * Errors leave OpenSSL's error queue empty (one connection's failure never
 * shows up as another's). */
#ifndef COLDBREW_TRANSPORT_H
#define COLDBREW_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/io.h"

struct transport;

struct transport_ops {
    enum io_status (*read)(struct transport *t, struct evbuffer *in, int fd);
    enum io_status (*write)(struct transport *t, struct evbuffer *out, int fd);
    int (*handshake)(struct transport *t, const char **why);
    void (*shutdown)(struct transport *t, int fd); /* orderly end of our sending side */
    void (*free)(struct transport *t);
};

struct transport {
    const struct transport_ops *ops; /* NULL: plain TCP */
    void *ssl;                       /* TLS: the SSL (owned) */
    bool want_write;                 /* TLS: the last step wants the socket writable */
    bool handshaking;                /* TLS: the handshake is not done yet */
};

extern const struct transport_ops transport_tls_ops;

static inline bool transport_is_tls(const struct transport *t)
{
    return t->ops != NULL;
}

static inline enum io_status transport_read(struct transport *t, struct evbuffer *in, int fd)
{
    if (__builtin_expect(t->ops == NULL, 1))
        return io_read(in, fd);
    return t->ops->read(t, in, fd);
}

static inline enum io_status transport_write(struct transport *t, struct evbuffer *out, int fd)
{
    if (__builtin_expect(t->ops == NULL, 1))
        return io_write(out, fd);
    return t->ops->write(t, out, fd);
}

/* 1 done (always for plain), 0 call again when the socket is readable (or
 * writable if t->want_write), -1 failed: *why says why. */
static inline int transport_handshake(struct transport *t, const char **why)
{
    return t->ops ? t->ops->handshake(t, why) : 1;
}

/* Plain: shutdown(SHUT_WR). TLS: a close_notify, then the same. */
void transport_shutdown(struct transport *t, int fd);

/* Releases the TLS state (not the socket); the transport is plain again. */
static inline void transport_free(struct transport *t)
{
    if (t->ops)
        t->ops->free(t);
    t->ops = NULL;
    t->ssl = NULL;
    t->want_write = t->handshaking = false;
}

/* Takes ownership of an SSL (its fd set, accept or connect state chosen):
 * the transport is TLS, its handshake to run. */
void transport_tls_attach(struct transport *t, void *ssl);

/* The negotiated ALPN protocol is h2 (after the handshake). */
bool transport_alpn_h2(const struct transport *t);

/* TLS: was the session resumed (after the handshake)? */
bool transport_resumed(const struct transport *t);

#endif
