/* h2_client.c — see h2_client.h.
 *
 * Invariants (the socket side is h2_wire's; see h2_wire.h):
 *  - A stream is in `streams` from h2c_request() until nghttp2 closes it or
 *    the connection dies; its holder gets exactly one on_end or on_reset,
 *    unless it cancelled first.
 *  - A connection is `ready` once the upstream's SETTINGS arrived, and
 *    `done` once it can never take another stream (GOAWAY, failure,
 *    close); the pool hears of both changes through on_state. */
#include "http/h2_client.h"
#include "transport/tls.h"
#include "proxy/upstream.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/http_head.h"
#include "core/log.h"
#include "core/loop.h"

struct h2c_conn {
    struct h2_wire wire; /* first: nghttp2's user data is the connection, and the wire's */
    nghttp2_session *session;
    struct event_base *base;
    struct event cev; /* the connect's completion */
    const struct h2_limits *lim;
    const struct h2c_conn_ops *ops;
    void *arg;
    char addr[64];
    struct upstream *tls_up; /* TLS: the upstream whose connector makes the SSL */
    TAILQ_HEAD(, h2c_stream) streams;
    unsigned nstreams;
    bool connecting, ready, done, freed;
};

static void conn_fail(struct h2c_conn *c, uint32_t code, const char *why);

static void tell_state(struct h2c_conn *c)
{
    if (c->ops && c->ops->on_state && !c->freed)
        c->ops->on_state(c, c->arg);
}

/* ---------------------------------------------------------------- streams */

static struct h2c_stream *stream_of(nghttp2_session *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s, id);
}

static void stream_free(void *p)
{
    struct h2c_stream *st = p;
    if (st->head)
        http_head_release(st->head);
    if (st->trailers)
        http_head_release(st->trailers);
    if (st->in)
        evbuffer_free(st->in);
    h2_body_free(&st->body);
    free(st);
}

static void stream_release(struct h2c_conn *c, struct h2c_stream *st)
{
    TAILQ_REMOVE(&c->streams, st, link);
    c->nstreams--;
    if (st->id > 0 && !c->freed)
        nghttp2_session_set_stream_user_data(c->session, st->id, NULL);
    loop_defer_free(st, stream_free);
}

static void stream_reset(struct h2c_stream *st, uint32_t code, const char *why)
{
    if (st->finished)
        return;
    st->finished = true;
    if (st->ops && st->ops->on_reset)
        st->ops->on_reset(st, code, why);
}

static void stream_drained(struct h2_body_out *b)
{
    struct h2c_stream *st = (struct h2c_stream *)((char *)b - offsetof(struct h2c_stream, body));
    if (!st->finished && st->ops && st->ops->on_drain)
        st->ops->on_drain(st);
}

/* ---------------------------------------------------------------- nghttp2 callbacks */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    (void)arg;
    struct h2c_stream *st = stream_of(s, f->hd.stream_id);
    if (!st || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (f->headers.cat == NGHTTP2_HCAT_RESPONSE) {
        /* A fresh head per response block (a 1xx is followed by the final one). */
        if (st->head)
            http_head_release(st->head);
        st->head = http_head_acquire();
        st->head->major = 2;
        st->head->connection_idx = -1;
    } else if (f->headers.cat == NGHTTP2_HCAT_HEADERS && !st->trailers) {
        st->trailers = http_head_acquire();
    }
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    (void)flags;
    struct h2c_conn *c = arg;
    struct h2c_stream *st = stream_of(s, f->hd.stream_id);
    if (!st || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct http_head *h = f->headers.cat == NGHTTP2_HCAT_RESPONSE ? st->head : st->trailers;
    if (!h)
        return 0;
    if (name[0] == ':') {
        if (nlen == 7 && !memcmp(name, ":status", 7) && vlen == 3)
            h->status = (uint16_t)((value[0] - '0') * 100 + (value[1] - '0') * 10 + value[2] - '0');
        return 0;
    }
    if (h->nheaders >= c->lim->max_headers ||
        !h2_head_add(h, name, nlen, value, vlen, c->lim->max_header_bytes)) {
        log_warn("h2 upstream %s: response header list over the limits; resetting stream %d",
                 c->addr, st->id);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (h == st->head && nlen == 14 && !memcmp(name, "content-length", 14)) {
        h->has_content_length = true;
        h->content_length = strtoull((const char *)value, NULL, 10);
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct h2c_conn *c = arg;
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK) && !c->ready) {
        c->ready = true;
        tell_state(c);
        return 0;
    }
    if (f->hd.type == NGHTTP2_GOAWAY) {
        if (f->goaway.error_code != NGHTTP2_NO_ERROR)
            log_warn("h2 upstream %s: GOAWAY %s (last stream %d)", c->addr,
                     nghttp2_http2_strerror(f->goaway.error_code), f->goaway.last_stream_id);
        if (!c->done) {
            c->done = true;
            tell_state(c);
        }
        return 0;
    }
    struct h2c_stream *st = stream_of(s, f->hd.stream_id);
    if (!st || st->finished)
        return 0;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_RESPONSE) {
        bool final = st->head->status >= 200 || st->head->status == 101;
        if (end)
            st->in_done = true;
        if (st->ops->on_head)
            st->ops->on_head(st, final);
    } else if (f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) {
        if (end)
            st->in_done = true;
        if (st->ops->on_data && (f->hd.type == NGHTTP2_DATA || end))
            st->ops->on_data(st);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *arg)
{
    (void)flags, (void)arg;
    struct h2c_stream *st = stream_of(s, id);
    if (!st || st->finished) {
        nghttp2_session_consume(s, id, len);
        return 0;
    }
    h2_in_add(s, id, &st->in, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *arg)
{
    struct h2c_conn *c = arg;
    struct h2c_stream *st = stream_of(s, id);
    if (!st)
        return 0;
    if (code == NGHTTP2_NO_ERROR && st->in_done && !st->finished) {
        st->finished = true;
        if (st->ops->on_end)
            st->ops->on_end(st);
    } else if (code == NGHTTP2_REFUSED_STREAM) {
        stream_reset(st, code, "stream refused by the upstream (not processed)");
    } else {
        stream_reset(st, code ? code : NGHTTP2_INTERNAL_ERROR,
                     code ? nghttp2_http2_strerror(code)
                          : "stream closed before the response ended");
    }
    stream_release(c, st);
    if (!c->done)
        tell_state(c); /* a slot opened */
    return 0;
}

/* ---------------------------------------------------------------- the connection */

static void on_wire_done(struct h2_wire *w, const char *why)
{
    struct h2c_conn *c = (struct h2c_conn *)w;
    conn_fail(c, NGHTTP2_INTERNAL_ERROR, why ? why : "upstream connection closed");
}

static void conn_fail(struct h2c_conn *c, uint32_t code, const char *why)
{
    if (c->freed)
        return;
    bool was_done = c->done;
    c->done = true;
    c->wire.dead = true;
    struct h2c_stream *st;
    while ((st = TAILQ_FIRST(&c->streams))) {
        stream_reset(st, code, why);
        stream_release(c, st);
    }
    event_del(&c->cev);
    h2_wire_close(&c->wire);
    if (!was_done)
        tell_state(c);
}

/* TLS: one handshake step; the wire starts once it is done. */
static void on_handshake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct h2c_conn *c = arg;
    const char *why = NULL;
    int r = transport_handshake(&c->wire.tp, &why);
    if (r < 0) {
        c->tls_up->tls_failures++;
        c->tls_up->tls_last_why = why ? why : "TLS handshake failed";
        log_warn("h2 upstream %s: TLS handshake failed: %s", c->addr, why ? why : "failed");
        conn_fail(c, NGHTTP2_CONNECT_ERROR, "TLS handshake failed");
        return;
    }
    if (r == 0) {
        event_assign(&c->cev, c->base, c->wire.fd, c->wire.tp.want_write ? EV_WRITE : EV_READ,
                     on_handshake, c);
        event_add(&c->cev, NULL);
        return;
    }
    if (transport_resumed(&c->wire.tp))
        c->tls_up->tls_resumed++;
    else
        c->tls_up->tls_full++;
    c->connecting = false;
    h2_wire_start(&c->wire);
}

static void on_connected(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct h2c_conn *c = arg;
    int err = net_connect_result(fd);
    if (!err && c->tls_up) {
        void *ssl = c->tls_up->tls->new_session(c->tls_up->tls, c->tls_up, fd, true);
        if (!ssl) {
            conn_fail(c, NGHTTP2_CONNECT_ERROR, "no TLS session");
            return;
        }
        transport_tls_attach(&c->wire.tp, ssl);
        on_handshake(fd, what, c);
        return;
    }
    c->connecting = false;
    if (err) {
        char why[160];
        snprintf(why, sizeof why, "dial tcp %s: connect: %s", c->addr, strerror(err));
        log_warn("h2 upstream: %s", why);
        /* Static text for the streams: the detail went to the log. */
        conn_fail(c, NGHTTP2_CONNECT_ERROR, "connect failed");
        return;
    }
    h2_wire_start(&c->wire); /* the preface, SETTINGS and any requests queued meanwhile */
}

struct h2c_conn *h2c_conn_new(struct event_base *base, const struct net_addr *addr,
                              const struct h2_limits *lim, const struct h2c_conn_ops *ops,
                              void *arg)
{
    return h2c_conn_new_tls(base, addr, lim, ops, arg, NULL);
}

struct h2c_conn *h2c_conn_new_tls(struct event_base *base, const struct net_addr *addr,
                                  const struct h2_limits *lim, const struct h2c_conn_ops *ops,
                                  void *arg, struct upstream *tls_up)
{
    int fd = net_connect_start(addr);
    if (fd < 0)
        return NULL;
    struct h2c_conn *c = calloc(1, sizeof *c);
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = NULL;
    if (!c || nghttp2_session_callbacks_new(&cb) || nghttp2_option_new(&opt) ||
        !h2_wire_init(&c->wire, base, fd, lim->watermark, on_wire_done))
        goto fail;
    c->base = base;
    c->lim = lim;
    c->ops = ops;
    c->arg = arg;
    c->tls_up = tls_up && tls_up->tls ? tls_up : NULL;
    snprintf(c->addr, sizeof c->addr, "%s", addr->text);
    TAILQ_INIT(&c->streams);
    h2_wire_set_callbacks(cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_continuations(opt, lim->max_continuations);
    nghttp2_option_set_max_settings(opt, lim->max_settings);
    nghttp2_option_set_max_outbound_ack(opt, lim->max_outbound_ack);
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* Until the upstream's SETTINGS arrive, assume 100 (RFC 9113 §6.5.2's
     * recommended floor) rather than nghttp2's unlimited: a server that
     * allows fewer may treat the excess as a connection error (python-h2
     * does). nghttp2 queues streams over the limit until slots free. */
    nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
    if (nghttp2_session_client_new2(&c->session, cb, c, opt))
        goto fail;
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    cb = NULL, opt = NULL;
    c->wire.session = c->session;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, lim->stream_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)lim->max_header_bytes},
    };
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) ||
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)lim->conn_window))
        goto fail;
    c->connecting = true;
    event_assign(&c->cev, base, fd, EV_WRITE, on_connected, c);
    event_add(&c->cev, NULL);
    return c;

fail:
    if (cb)
        nghttp2_session_callbacks_del(cb);
    if (opt)
        nghttp2_option_del(opt);
    if (c) {
        if (c->session)
            nghttp2_session_del(c->session);
        h2_wire_free_buffers(&c->wire);
        free(c);
    }
    close(fd);
    errno = ENOMEM;
    return NULL;
}

bool h2c_conn_available(const struct h2c_conn *c)
{
    return !c->done && !c->freed &&
           c->nstreams < nghttp2_session_get_remote_settings(
                             c->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

bool h2c_conn_done(const struct h2c_conn *c)
{
    return c->done;
}

unsigned h2c_conn_streams(const struct h2c_conn *c)
{
    return c->nstreams;
}

static void conn_free_deferred(void *p)
{
    struct h2c_conn *c = p;
    nghttp2_session_del(c->session);
    h2_wire_free_buffers(&c->wire);
    free(c);
}

void h2c_conn_free(struct h2c_conn *c)
{
    if (!c)
        return;
    conn_fail(c, NGHTTP2_CANCEL, "upstream connection closed");
    c->freed = true;
    loop_defer_free(c, conn_free_deferred);
}

/* ---------------------------------------------------------------- requests */

struct h2c_stream *h2c_request(struct h2c_conn *c, const char *method, const char *scheme,
                               const char *authority, const char *path,
                               const struct h2_header_out *hdrs, size_t n, bool end,
                               const struct h2c_stream_ops *ops, void *holder)
{
    if (c->done || c->freed)
        return NULL;
    struct h2c_stream *st = calloc(1, sizeof *st);
    nghttp2_nv stack[64], *nva = n + 4 <= 64 ? stack : malloc((n + 4) * sizeof *nva);
    if (!st || !nva || !h2_body_init(&st->body, 0)) {
        free(st);
        if (nva && nva != stack)
            free(nva);
        return NULL;
    }
    st->conn = c;
    st->ops = ops;
    st->holder = holder;
    st->body.on_drain = stream_drained;
    st->out_done = end;
#define NV(nm, v) {(uint8_t *)(nm), (uint8_t *)(v), sizeof(nm) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    nva[0] = (nghttp2_nv)NV(":method", method);
    nva[1] = (nghttp2_nv)NV(":scheme", scheme);
    nva[2] = (nghttp2_nv)NV(":authority", authority);
    nva[3] = (nghttp2_nv)NV(":path", path);
#undef NV
    for (size_t i = 0; i < n; i++)
        h2_nv_from(&nva[i + 4], &hdrs[i]);
    nghttp2_data_provider body = h2_body_provider(&st->body);
    int32_t id = nghttp2_submit_request(c->session, NULL, nva, n + 4, end ? NULL : &body, st);
    if (nva != stack)
        free(nva);
    if (id < 0) {
        log_warn("h2 upstream %s: cannot submit a request: %s", c->addr, nghttp2_strerror(id));
        stream_free(st);
        return NULL;
    }
    st->id = id;
    st->body.stream = id;
    TAILQ_INSERT_TAIL(&c->streams, st, link);
    c->nstreams++;
    if (!c->connecting)
        h2_wire_kick(&c->wire);
    return st;
}

void h2c_stream_write(struct h2c_stream *s, struct evbuffer *data)
{
    if (s->out_done || s->finished) {
        evbuffer_drain(data, evbuffer_get_length(data));
        return;
    }
    h2_body_write(s->conn->session, &s->body, data);
    if (!s->conn->connecting)
        h2_wire_kick(&s->conn->wire);
}

void h2c_stream_end(struct h2c_stream *s, const struct h2_header_out *trailers, size_t n)
{
    if (s->out_done || s->finished)
        return;
    s->out_done = true;
    if (!h2_body_end(s->conn->session, &s->body, trailers, n)) {
        log_error("h2 upstream: out of memory for request trailers");
        nghttp2_submit_rst_stream(s->conn->session, NGHTTP2_FLAG_NONE, s->id,
                                  NGHTTP2_INTERNAL_ERROR);
    }
    if (!s->conn->connecting)
        h2_wire_kick(&s->conn->wire);
}

void h2c_stream_consumed(struct h2c_stream *s, size_t n)
{
    if (!n || s->conn->done)
        return;
    nghttp2_session_consume(s->conn->session, s->id, n);
    if (!s->conn->connecting)
        h2_wire_kick(&s->conn->wire);
}

void h2c_stream_cancel(struct h2c_stream *s)
{
    if (s->finished)
        return;
    s->finished = true; /* no callback follows */
    struct h2c_conn *c = s->conn;
    if (!c->done) {
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
        if (!c->connecting)
            h2_wire_kick(&c->wire);
    }
}

bool h2c_stream_output_full(const struct h2c_stream *s)
{
    return h2_body_pending(&s->body) >= s->conn->lim->watermark;
}
