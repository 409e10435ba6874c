/* h2_wire.c — see h2_wire.h. */
#include "http/h2_wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/h2_server.h"
#include "http/http_head.h"
#include "core/io.h"
#include "core/log.h"

static void wire_done(struct h2_wire *w, const char *why)
{
    if (w->dead)
        return;
    w->dead = true;
    w->on_done(w, why);
}

/* ---------------------------------------------------------------- nghttp2 callbacks */

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *arg)
{
    (void)s, (void)flags;
    struct h2_wire *w = arg; /* every owner's session user data starts with its wire */
    if (evbuffer_get_length(w->out) >= w->watermark)
        return NGHTTP2_ERR_WOULDBLOCK;
    evbuffer_add(w->out, data, len);
    return (ssize_t)len;
}

static int on_send_data(nghttp2_session *s, nghttp2_frame *f, const uint8_t *framehd, size_t len,
                        nghttp2_data_source *src, void *arg)
{
    (void)s, (void)f;
    struct h2_wire *w = arg;
    struct h2_body_out *b = src->ptr;
    if (evbuffer_get_length(w->out) >= w->watermark)
        return NGHTTP2_ERR_WOULDBLOCK;
    evbuffer_add(w->out, framehd, 9);
    size_t before = h2_body_pending(b);
    if (len)
        evbuffer_remove_buffer(b->buf, w->out, len);
    if (b->on_drain && before >= w->watermark && before - len < w->watermark)
        b->on_drain(b);
    return 0;
}

void h2_wire_set_callbacks(nghttp2_session_callbacks *cb)
{
    nghttp2_session_callbacks_set_send_callback(cb, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cb, on_send_data);
}

/* The data source: what was written, as the window allows; deferred while
 * there is nothing and the body is open; trailers behind the last DATA
 * (submitted any earlier, nghttp2 would send them ahead of the body). */
static ssize_t on_read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    (void)buf, (void)arg;
    struct h2_body_out *b = src->ptr;
    size_t have = h2_body_pending(b);
    size_t n = have < len ? have : len;
    if (n)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == have && b->ended) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (b->ntrailers && !nghttp2_submit_trailer(s, id, b->trailers, b->ntrailers))
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    } else if (!n) {
        b->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* ---------------------------------------------------------------- the socket */

static void update_events(struct h2_wire *w)
{
    if (w->dead)
        return;
    bool out_left = evbuffer_get_length(w->out) > 0;
    bool want_read = nghttp2_session_want_read(w->session);
    bool want_write = nghttp2_session_want_write(w->session);
    if (!out_left && !want_write && (!want_read || w->eof)) {
        wire_done(w, NULL);
        return;
    }
    /* TLS: a read that had to write (a TLS 1.3 key update answered) goes on
     * when the socket is writable. */
    io_arm(&w->wev, &w->writing, out_left || w->tp.want_write);
    /* Read while nghttp2 wants to and our output is not piling up (a peer
     * that does not read its answers is not given more to answer). */
    io_arm(&w->rev, &w->reading,
           !w->eof && want_read && evbuffer_get_length(w->out) < w->watermark);
}

static bool send_all(struct h2_wire *w)
{
    for (int round = 0; round < 8 && !w->dead; round++) {
        int rv = nghttp2_session_send(w->session);
        if (rv) {
            wire_done(w, nghttp2_strerror(rv));
            return false;
        }
        if (!evbuffer_get_length(w->out))
            break;
        enum io_status st = transport_write(&w->tp, w->out, w->fd);
        if (st == IO_ERROR) {
            wire_done(w, strerror(errno));
            return false;
        }
        if (st == IO_AGAIN || !nghttp2_session_want_write(w->session))
            break;
    }
    return !w->dead;
}

/* Feeds what was read to nghttp2; false (with nghttp2's error in *rv) when
 * the connection must go. */
static bool feed(struct h2_wire *w, const char **why, int *rv)
{
    struct evbuffer_iovec v[8];
    while (evbuffer_get_length(w->in) && !w->dead) {
        int n = evbuffer_peek(w->in, -1, NULL, v, 8);
        for (int i = 0; i < n && i < 8 && !w->dead; i++) {
            ssize_t used = nghttp2_session_mem_recv(w->session, v[i].iov_base, v[i].iov_len);
            if (used < 0) {
                *why = nghttp2_strerror((int)used);
                *rv = (int)used;
                evbuffer_drain(w->in, evbuffer_get_length(w->in));
                return false;
            }
            evbuffer_drain(w->in, (size_t)used);
        }
    }
    return !w->dead;
}

static void wire_io(struct h2_wire *w, bool readable)
{
    const char *why = NULL;
    int rv = 0;
    w->in_io = true;
    if (readable) {
        for (int i = 0; i < 4 && !w->eof; i++) {
            enum io_status r = transport_read(&w->tp, w->in, w->fd);
            if (r == IO_AGAIN)
                break;
            if (r == IO_EOF || r == IO_ERROR) {
                w->eof = true;
                break;
            }
        }
    }
    bool ok = !evbuffer_get_length(w->in) || feed(w, &why, &rv);
    if (!w->dead)
        send_all(w);
    w->in_io = false;
    if (w->dead)
        return;
    if (!ok) {
        /* A fatal error. For a flood (CONTINUATION, or frames nghttp2 will not
         * queue answers for) the peer is told ENHANCE_YOUR_CALM, for anything
         * else but a peer that never spoke HTTP/2 (a bad preface) a
         * PROTOCOL_ERROR; then what is queued goes out and the wire ends. */
        if (rv && rv != NGHTTP2_ERR_BAD_CLIENT_MAGIC)
            nghttp2_session_terminate_session(
                w->session, rv == NGHTTP2_ERR_FLOODED || rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
                                ? NGHTTP2_ENHANCE_YOUR_CALM
                                : NGHTTP2_PROTOCOL_ERROR);
        nghttp2_session_send(w->session);
        transport_write(&w->tp, w->out, w->fd);
        wire_done(w, why);
        return;
    }
    update_events(w);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    wire_io(arg, true);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct h2_wire *w = arg;
    wire_io(w, w->tp.want_write); /* a TLS read that waited for the socket to take its write */
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct h2_wire *w = arg;
    w->flush_pending = false;
    if (w->dead)
        return;
    w->in_io = true;
    send_all(w);
    w->in_io = false;
    update_events(w);
}

bool h2_wire_init(struct h2_wire *w, struct event_base *base, int fd, size_t watermark,
                  void (*on_done)(struct h2_wire *, const char *))
{
    w->fd = fd;
    w->watermark = watermark;
    w->on_done = on_done;
    w->in = evbuffer_new();
    w->out = evbuffer_new();
    if (!w->in || !w->out) {
        h2_wire_free_buffers(w);
        return false;
    }
    event_assign(&w->rev, base, fd, EV_READ | EV_PERSIST, on_readable, w);
    event_assign(&w->wev, base, fd, EV_WRITE | EV_PERSIST, on_writable, w);
    event_assign(&w->flush, base, -1, 0, on_flush, w);
    return true;
}

void h2_wire_start(struct h2_wire *w)
{
    wire_io(w, false);
}

void h2_wire_flush_now(struct h2_wire *w)
{
    if (w->dead || w->in_io)
        return;
    w->in_io = true;
    send_all(w);
    w->in_io = false;
}

void h2_wire_kick(struct h2_wire *w)
{
    if (w->in_io || w->dead || w->flush_pending)
        return;
    w->flush_pending = true;
    event_active(&w->flush, 0, 0);
}

void h2_wire_close(struct h2_wire *w)
{
    w->dead = true;
    event_del(&w->rev);
    event_del(&w->wev);
    event_del(&w->flush);
    w->reading = w->writing = false;
    transport_free(&w->tp);
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
}

void h2_wire_free_buffers(struct h2_wire *w)
{
    if (w->in)
        evbuffer_free(w->in);
    if (w->out)
        evbuffer_free(w->out);
    w->in = w->out = NULL;
}

/* ---------------------------------------------------------------- bodies */

void h2_in_add(nghttp2_session *s, int32_t id, struct evbuffer **in, const uint8_t *data,
               size_t len)
{
    if (!*in)
        *in = evbuffer_new();
    if (*in && evbuffer_add(*in, data, len) == 0)
        return;
    log_warn("h2: stream %d: no memory for %zu body bytes; resetting it", id, len);
    nghttp2_session_consume(s, id, len);
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
}

bool h2_body_init(struct h2_body_out *b, int32_t stream)
{
    memset(b, 0, sizeof *b);
    b->stream = stream;
    /* The buffer comes with the first bytes (h2_body_buf): a stream that
     * waits, with nothing to send yet, holds none. */
    return true;
}

void h2_body_free(struct h2_body_out *b)
{
    if (b->buf)
        evbuffer_free(b->buf);
    free(b->trailers);
    b->buf = NULL;
    b->trailers = NULL;
}

nghttp2_data_provider h2_body_provider(struct h2_body_out *b)
{
    return (nghttp2_data_provider){.source.ptr = b, .read_callback = on_read_body};
}

static void wake(nghttp2_session *s, struct h2_body_out *b)
{
    if (b->deferred && b->stream > 0) {
        b->deferred = false;
        nghttp2_session_resume_data(s, b->stream);
    }
}

void h2_body_write(nghttp2_session *s, struct h2_body_out *b, struct evbuffer *data)
{
    struct evbuffer *buf = h2_body_buf(b);
    if (!buf) {
        evbuffer_drain(data,
                       evbuffer_get_length(data)); /* out of memory: logged by the caller's reset */
        return;
    }
    evbuffer_add_buffer(buf, data);
    wake(s, b);
}

struct evbuffer *h2_body_buf(struct h2_body_out *b)
{
    if (!b->buf)
        b->buf = evbuffer_new();
    return b->buf;
}

void h2_nv_from(nghttp2_nv *nv, const struct h2_header_out *h)
{
    nv->name = (uint8_t *)h->name;
    nv->namelen = h->name_len;
    nv->value = (uint8_t *)h->value;
    nv->valuelen = h->value_len;
    nv->flags = NGHTTP2_NV_FLAG_NONE;
}

bool h2_body_end(nghttp2_session *s, struct h2_body_out *b, const struct h2_header_out *trailers,
                 size_t n)
{
    b->ended = true;
    if (n) {
        /* One block: the nv array, then the names and values it points at. */
        size_t bytes = n * sizeof(nghttp2_nv);
        for (size_t i = 0; i < n; i++)
            bytes += trailers[i].name_len + trailers[i].value_len;
        nghttp2_nv *nva = malloc(bytes);
        if (!nva)
            return false;
        char *p = (char *)(nva + n);
        for (size_t i = 0; i < n; i++) {
            struct h2_header_out h = trailers[i];
            memcpy(p, h.name, h.name_len);
            h.name = p, p += h.name_len;
            memcpy(p, h.value, h.value_len);
            h.value = p, p += h.value_len;
            h2_nv_from(&nva[i], &h);
        }
        free(b->trailers);
        b->trailers = nva;
        b->ntrailers = n;
    }
    wake(s, b);
    return true;
}

bool h2_head_add(struct http_head *h, const uint8_t *name, size_t nlen, const uint8_t *value,
                 size_t vlen, size_t limit)
{
    struct http_header *hd = http_head_add(h);
    if (!hd)
        return false;
    hd->name.off = h->len;
    hd->name.len = (uint32_t)nlen;
    if (!http_head_append(h, (const char *)name, nlen, limit))
        return false;
    hd->value.off = h->len;
    hd->value.len = (uint32_t)vlen;
    return http_head_append(h, (const char *)value, vlen, limit);
}
