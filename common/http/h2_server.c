/* h2_server.c — see h2_server.h.
 *
 * Invariants (the socket side is h2_wire's; see h2_wire.h):
 *  - A stream's holder is told exactly once that the stream died under it
 *    (`cancel`), and only while it still holds it (not after it ended its
 *    answer or reset the stream itself). */
#include "http/h2_server.h"

#include <errno.h>
#include <stddef.h>
#include <llhttp.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/env.h"
#include "http/http_head.h"
#include "core/io.h"
#include "core/log.h"
#include "core/loop.h"

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct h2_conn {
    struct h2_wire wire; /* first: nghttp2's user data is the connection, and the wire's */
    nghttp2_session *session;
    struct event tev;
    const struct h2_limits *lim;
    const struct h2_server_ops *ops;
    void *arg;
    char peer_ip[48];
    int peer_port;
    TAILQ_HEAD(, h2_stream) streams;
    unsigned nstreams;
    bool dead;
};

static void conn_close(struct h2_conn *c, const char *why);

/* A numeric setting within [lo, hi]; outside it, the default with a warning. */
static long env_int(const char *name, long def, long lo, long hi)
{
    bool ok = true;
    long v = env_long(name, def, &ok);
    if (!ok || v < lo || v > hi) {
        log_warn("%s must be a number from %ld to %ld; using %ld", name, lo, hi, def);
        return def;
    }
    return v;
}

void h2_limits_from_env(struct h2_limits *lim, size_t max_header_bytes, unsigned max_headers,
                        size_t watermark)
{
    lim->max_concurrent_streams =
        (uint32_t)env_int("COLDBREW_H2_MAX_CONCURRENT_STREAMS", 1000, 1, 1 << 20);
    lim->stream_window =
        (uint32_t)env_int("COLDBREW_H2_STREAM_WINDOW_BYTES", 256 << 10, 65535, 0x7fffffff);
    lim->conn_window =
        (uint32_t)env_int("COLDBREW_H2_CONN_WINDOW_BYTES", 1 << 20, 65535, 0x7fffffff);
    lim->max_frame_size =
        (uint32_t)env_int("COLDBREW_H2_MAX_FRAME_BYTES", 16384, 16384, (1 << 24) - 1);
    lim->reset_burst = (uint64_t)env_int("COLDBREW_H2_RESET_BURST", 200, 1, 1 << 30);
    lim->reset_rate = (uint64_t)env_int("COLDBREW_H2_RESET_RATE", 33, 1, 1 << 30);
    lim->max_continuations = (size_t)env_int("COLDBREW_H2_MAX_CONTINUATIONS", 8, 1, 1 << 20);
    lim->max_settings = (size_t)env_int("COLDBREW_H2_MAX_SETTINGS", 32, 1, 1 << 20);
    lim->max_outbound_ack = (size_t)env_int("COLDBREW_H2_MAX_OUTBOUND_ACK", 1000, 1, 1 << 20);
    lim->idle_seconds = (double)env_int("COLDBREW_H2_IDLE_SECONDS", 300, 1, 86400);
    lim->max_header_bytes = max_header_bytes;
    lim->max_headers = max_headers;
    lim->watermark = watermark;
}

int h2_is_preface(struct evbuffer *buf)
{
    size_t have = evbuffer_get_length(buf), n = sizeof preface - 1;
    size_t cmp = have < n ? have : n;
    unsigned char *p = evbuffer_pullup(buf, (ssize_t)cmp);
    if (cmp && memcmp(p, preface, cmp))
        return 0;
    return have >= n ? 1 : -1;
}

/* ---------------------------------------------------------------- streams */

static struct h2_stream *stream_of(nghttp2_session *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s, id);
}

static void stream_free(void *p)
{
    struct h2_stream *st = p;
    if (st->head)
        http_head_release(st->head);
    if (st->trailers)
        http_head_release(st->trailers);
    if (st->in)
        evbuffer_free(st->in);
    h2_body_free(&st->out);
    free(st);
}

/* The stream is over for the holder: tell it if it still holds the stream. */
static void stream_gone(struct h2_stream *st)
{
    bool held = st->state == H2S_OPEN || st->state == H2S_ANSWERING;
    st->state = H2S_CLOSED;
    void (*cancel)(struct h2_stream *) = st->cancel;
    st->cancel = NULL, st->on_input = NULL, st->on_drain = NULL;
    if (held && cancel)
        cancel(st);
}

static void stream_release(struct h2_conn *c, struct h2_stream *st)
{
    TAILQ_REMOVE(&c->streams, st, link);
    c->nstreams--;
    loop_defer_free(st, stream_free);
    if (!c->nstreams && !c->dead) {
        struct timeval tv = clock_tv(c->lim->idle_seconds);
        event_add(&c->tev, &tv);
    }
}

/* Adds a header to a head's arena; false past the arena's or the slots' limits. */

/* llhttp's method number for a :method value; -1 for one HTTP does not know. */
static int method_of(const uint8_t *v, size_t len)
{
#define XX(num, name, string)                                                                      \
    if (len == sizeof #string - 1 && !memcmp(v, #string, len))                                     \
        return num;
    HTTP_METHOD_MAP(XX)
#undef XX
    return -1;
}

static void stream_drained(struct h2_body_out *b)
{
    struct h2_stream *st = (struct h2_stream *)((char *)b - offsetof(struct h2_stream, out));
    if (st->on_drain)
        st->on_drain(st);
}

/* A stream for `id` with its request head (owned by the stream from now). */
static struct h2_stream *stream_new(struct h2_conn *c, int32_t id, struct http_head *head)
{
    struct h2_stream *st = calloc(1, sizeof *st);
    if (!st || !h2_body_init(&st->out, id)) {
        free(st);
        http_head_release(head);
        return NULL;
    }
    st->conn = c;
    st->id = id;
    st->head = head;
    head->major = 2;
    head->minor = 0;
    head->keep_alive = true;
    st->out.on_drain = stream_drained;
    TAILQ_INSERT_TAIL(&c->streams, st, link);
    c->nstreams++;
    event_del(&c->tev);
    nghttp2_session_set_stream_user_data(c->session, id, st);
    return st;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct h2_conn *c = arg;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2_stream *st = stream_of(s, f->hd.stream_id);
    if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        struct http_head *h = http_head_acquire();
        h->connection_idx = -1;
        if (!stream_new(c, f->hd.stream_id, h))
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM for this one */
    } else if (st && !st->trailers) {
        st->trailers = http_head_acquire();
        st->header_bytes = 0;
    }
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    (void)flags;
    struct h2_conn *c = arg;
    struct h2_stream *st = stream_of(s, f->hd.stream_id);
    if (!st || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    /* RFC 9113 §6.5.2: a field's size is its name, its value and 32. */
    st->header_bytes += nlen + vlen + 32;
    if (st->header_bytes > c->lim->max_header_bytes * H2_HEADER_HARD_FACTOR) {
        log_warn("h2: header list from %s decodes past %zu bytes (HPACK bomb?); GOAWAY", c->peer_ip,
                 c->lim->max_header_bytes * H2_HEADER_HARD_FACTOR);
        nghttp2_session_terminate_session(s, NGHTTP2_ENHANCE_YOUR_CALM);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (st->head_too_large)
        return 0;
    struct http_head *h = f->headers.cat == NGHTTP2_HCAT_REQUEST ? st->head : st->trailers;
    if (!h)
        return 0;
    bool over = st->header_bytes > c->lim->max_header_bytes;
    if (!over && name[0] == ':' && h == st->head) {
        if (nlen == 7 && !memcmp(name, ":method", 7)) {
            int m = method_of(value, vlen);
            if (m < 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* unknown method: reset */
            h->method = (uint8_t)m;
        } else if (nlen == 5 && !memcmp(name, ":path", 5)) {
            h->url.off = h->len;
            h->url.len = (uint32_t)vlen;
            over = !http_head_append(h, (const char *)value, vlen, c->lim->max_header_bytes);
        } else if (nlen == 10 && !memcmp(name, ":authority", 10)) {
            /* Kept as a header of its own name; finish_head() turns it
             * into Host when the request has none. */
            over = !h2_head_add(h, name, nlen, value, vlen, c->lim->max_header_bytes);
        }
        /* :scheme and :protocol are not kept: the proxy speaks http upstream. */
    } else if (!over) {
        over = h->nheaders >= c->lim->max_headers ||
               !h2_head_add(h, name, nlen, value, vlen, c->lim->max_header_bytes);
        if (!over && h == st->head && nlen == 14 && !memcmp(name, "content-length", 14)) {
            h->has_content_length = true;
            h->content_length = strtoull((const char *)value, NULL, 10);
        }
    }
    if (over) {
        st->head_too_large = true;
        log_warn("h2: request header list from %s over the limits (%zu bytes, %u headers): 431",
                 c->peer_ip, c->lim->max_header_bytes, c->lim->max_headers);
    }
    return 0;
}

/* The request head is complete: :authority becomes Host where none was sent. */
static void finish_head(struct h2_stream *st)
{
    struct http_head *h = st->head;
    int authority = -1;
    bool host = false;
    for (unsigned i = 0; i < h->nheaders; i++) {
        if (HTTP_NAME_IS(h, &h->hdr[i], ":authority"))
            authority = (int)i;
        else if (HTTP_NAME_IS(h, &h->hdr[i], "host"))
            host = true;
    }
    if (authority >= 0) {
        struct http_header *hd = &h->hdr[authority];
        if (host) {
            /* Both: Host wins (RFC 9113 §8.3.1 asks they agree); drop :authority. */
            memmove(hd, hd + 1, (h->nheaders - (unsigned)authority - 1) * sizeof *hd);
            h->nheaders--;
        } else {
            /* Rename in place: ":authority" is longer than "host", so the
             * arena bytes can be overwritten. */
            memcpy(h->buf + hd->name.off, "host", 4);
            hd->name.len = 4;
        }
    }
}

static void stream_input(struct h2_stream *st)
{
    if (st->on_input)
        st->on_input(st);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct h2_conn *c = arg;
    struct h2_stream *st = stream_of(s, f->hd.stream_id);
    if (!st)
        return 0;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            st->in_done = end;
            if (st->head_too_large) {
                h2_stream_reply(st, 431, "text/plain; charset=utf-8",
                                "431 Request Header Fields Too Large", 35);
                return 0;
            }
            finish_head(st);
            http_head_shrink(st->head);
            c->ops->on_request(st, c->arg);
            return 0;
        }
        if (end) {
            st->in_done = true;
            stream_input(st);
        }
        return 0;
    case NGHTTP2_DATA:
        if (end)
            st->in_done = true;
        stream_input(st);
        return 0;
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *arg)
{
    (void)flags, (void)arg;
    struct h2_stream *st = stream_of(s, id);
    if (!st)
        return 0;
    if (st->state != H2S_OPEN && st->state != H2S_ANSWERING) {
        /* Nobody reads it any more: open the window at once. */
        nghttp2_session_consume(s, id, len);
        return 0;
    }
    h2_in_add(s, id, &st->in, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *arg)
{
    struct h2_conn *c = arg;
    struct h2_stream *st = stream_of(s, id);
    if (!st)
        return 0;
    st->reset_code = code;
    stream_gone(st);
    stream_release(c, st);
    return 0;
}

/* After our answer's last frame: if the client is still sending, tell it to
 * stop (RST_STREAM NO_ERROR, RFC 9113 §8.1), HTTP/2's lingering close. */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct h2_conn *c = arg;
    if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR)
        /* nghttp2's own limits (rapid reset, floods, CONTINUATION) end here too. */
        log_warn("h2: GOAWAY %s to %s (last stream %d)",
                 nghttp2_http2_strerror(f->goaway.error_code), c->peer_ip,
                 f->goaway.last_stream_id);
    struct h2_stream *st = stream_of(s, f->hd.stream_id);
    if (st && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && !st->in_done &&
        (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA))
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_invalid_frame(nghttp2_session *s, const nghttp2_frame *f, int err, void *arg)
{
    (void)s;
    struct h2_conn *c = arg;
    log_warn("h2: invalid frame (type %u) from %s on stream %d: %s", f->hd.type, c->peer_ip,
             f->hd.stream_id, nghttp2_strerror(err));
    return 0;
}

/* ---------------------------------------------------------------- the connection */

static void conn_kick(struct h2_conn *c)
{
    h2_wire_kick(&c->wire);
}

static void on_wire_done(struct h2_wire *w, const char *why)
{
    struct h2_conn *c = (struct h2_conn *)w;
    conn_close(c, why);
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct h2_conn *c = arg;
    if (c->nstreams)
        return;
    nghttp2_session_terminate_session(c->session, NGHTTP2_NO_ERROR);
    conn_kick(c); /* sends the GOAWAY; the wire ends once nothing is left */
}

static void conn_free(void *p)
{
    struct h2_conn *c = p;
    nghttp2_session_del(c->session);
    h2_wire_free_buffers(&c->wire);
    free(c);
}

static void conn_close(struct h2_conn *c, const char *why)
{
    if (c->dead)
        return;
    c->dead = true;
    if (why)
        log_warn("h2: closing connection from %s: %s", c->peer_ip, why);
    /* Streams still open die with the connection; nghttp2_session_del does
     * not call back, so their holders are told here. */
    struct h2_stream *st;
    while ((st = TAILQ_FIRST(&c->streams))) {
        nghttp2_session_set_stream_user_data(c->session, st->id, NULL);
        st->reset_code = NGHTTP2_CANCEL;
        stream_gone(st);
        stream_release(c, st);
    }
    event_del(&c->tev);
    h2_wire_close(&c->wire);
    if (c->ops->on_close)
        c->ops->on_close(c, c->arg);
    loop_defer_free(c, conn_free);
}

/* A connection with its session, not started yet; NULL (socket closed) on failure. */
static struct h2_conn *conn_create(struct event_base *base, int fd, struct transport *tp,
                                   const char *peer_ip, int peer_port, const struct h2_limits *lim,
                                   const struct h2_server_ops *ops, void *arg,
                                   struct evbuffer *preread)
{
    struct h2_conn *c = calloc(1, sizeof *c);
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = NULL;
    if (!c || nghttp2_session_callbacks_new(&cb) || nghttp2_option_new(&opt) ||
        !h2_wire_init(&c->wire, base, fd, lim->watermark, on_wire_done))
        goto fail;
    if (tp) {
        c->wire.tp = *tp; /* the connection owns the TLS state from now on */
        *tp = (struct transport){0};
    }
    c->lim = lim;
    c->ops = ops;
    c->arg = arg;
    snprintf(c->peer_ip, sizeof c->peer_ip, "%s", peer_ip ? peer_ip : "?");
    c->peer_port = peer_port;
    TAILQ_INIT(&c->streams);
    if (preread)
        evbuffer_add_buffer(c->wire.in, preread);

    h2_wire_set_callbacks(cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame);
    /* The window opens as the application consumes bodies, not as they arrive. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_stream_reset_rate_limit(opt, lim->reset_burst, lim->reset_rate);
    nghttp2_option_set_max_continuations(opt, lim->max_continuations);
    nghttp2_option_set_max_settings(opt, lim->max_settings);
    nghttp2_option_set_max_outbound_ack(opt, lim->max_outbound_ack);
    /* Closed streams are not kept for priority bookkeeping: memory stays per open stream. */
    nghttp2_option_set_no_closed_streams(opt, 1);
    if (nghttp2_session_server_new2(&c->session, cb, c, opt))
        goto fail;
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    cb = NULL, opt = NULL;

    c->wire.session = c->session;
    event_assign(&c->tev, base, -1, 0, on_idle, c);
    struct timeval tv = clock_tv(c->lim->idle_seconds);
    event_add(&c->tev, &tv);
    return c;

fail:
    log_error("h2: out of memory setting up a connection from %s", peer_ip ? peer_ip : "?");
    if (cb)
        nghttp2_session_callbacks_del(cb);
    if (opt)
        nghttp2_option_del(opt);
    if (c) {
        if (c->session)
            nghttp2_session_del(c->session);
        h2_wire_free_buffers(&c->wire);
        transport_free(&c->wire.tp);
        free(c);
    }
    if (tp)
        transport_free(tp);
    close(fd);
    return NULL;
}

/* Our SETTINGS and the connection window, then the first read's bytes. */
static struct h2_conn *conn_start(struct h2_conn *c)
{
    const struct h2_limits *lim = c->lim;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, lim->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, lim->stream_window},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, lim->max_frame_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)lim->max_header_bytes},
    };
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) ||
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)lim->conn_window)) {
        conn_close(c, "out of memory");
        return NULL;
    }
    h2_wire_start(&c->wire);
    return c->dead ? NULL : c;
}

struct h2_conn *h2_conn_new(struct event_base *base, int fd, const char *peer_ip, int peer_port,
                            const struct h2_limits *lim, const struct h2_server_ops *ops, void *arg,
                            struct evbuffer *preread)
{
    return h2_conn_new_tp(base, fd, NULL, peer_ip, peer_port, lim, ops, arg, preread);
}

struct h2_conn *h2_conn_new_tp(struct event_base *base, int fd, struct transport *tp,
                               const char *peer_ip, int peer_port, const struct h2_limits *lim,
                               const struct h2_server_ops *ops, void *arg, struct evbuffer *preread)
{
    struct h2_conn *c = conn_create(base, fd, tp, peer_ip, peer_port, lim, ops, arg, preread);
    return c ? conn_start(c) : NULL;
}

/* base64url (RFC 4648 §5, no padding) as HTTP2-Settings carries it; -1 on a
 * bad character or when it does not fit. */
static ssize_t base64url_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        int v = ch >= 'A' && ch <= 'Z'   ? ch - 'A'
                : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26
                : ch >= '0' && ch <= '9' ? ch - '0' + 52
                : ch == '-' || ch == '+' ? 62
                : ch == '_' || ch == '/' ? 63
                : ch == '='              ? -2
                                         : -1;
        if (v == -2)
            break;
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                return -1;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return (ssize_t)n;
}

struct h2_conn *h2_conn_upgrade(struct event_base *base, int fd, const char *peer_ip, int peer_port,
                                const struct h2_limits *lim, const struct h2_server_ops *ops,
                                void *arg, struct evbuffer *preread, const char *settings,
                                size_t settings_len, struct http_head *head)
{
    uint8_t payload[256];
    ssize_t plen = base64url_decode(settings, settings_len, payload, sizeof payload);
    struct h2_conn *c = conn_create(base, fd, NULL, peer_ip, peer_port, lim, ops, arg, preread);
    if (!c) {
        http_head_release(head);
        return NULL;
    }
    static const char switching[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                                    "Upgrade: h2c\r\n\r\n";
    evbuffer_add(c->wire.out, switching, sizeof switching - 1);
    struct h2_stream *st = stream_new(c, 1, head);
    int rv = plen < 0 ? NGHTTP2_ERR_INVALID_ARGUMENT
             : !st    ? NGHTTP2_ERR_NOMEM
                      : nghttp2_session_upgrade2(c->session, payload, (size_t)plen,
                                                 head->method == HTTP_HEAD, st);
    if (rv) {
        log_warn("h2: h2c upgrade from %s refused: %s", c->peer_ip,
                 plen < 0 ? "HTTP2-Settings is not base64url" : nghttp2_strerror(rv));
        conn_close(c, NULL);
        return NULL;
    }
    st->in_done = true; /* only requests without a body are upgraded */
    if (!conn_start(c))
        return NULL;
    c->ops->on_request(st, c->arg);
    return c->dead ? NULL : c;
}

void h2_conn_close(struct h2_conn *c)
{
    h2_wire_flush_now(&c->wire); /* answers already given go out first */
    conn_close(c, NULL);
}

void h2_conn_shutdown(struct h2_conn *c)
{
    if (c->dead)
        return;
    nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(c->session), NGHTTP2_NO_ERROR,
                          NULL, 0);
    conn_kick(c);
}

unsigned h2_conn_streams(const struct h2_conn *c)
{
    return c->nstreams;
}

/* ---------------------------------------------------------------- answering */

bool h2_stream_respond(struct h2_stream *s, int status, const struct h2_header_out *hdrs, size_t n,
                       bool end)
{
    if (s->state != H2S_OPEN)
        return false;
    char code[8];
    snprintf(code, sizeof code, "%03u", (unsigned)status % 1000);
    nghttp2_nv stack[64], *nva = n + 1 <= 64 ? stack : malloc((n + 1) * sizeof *nva);
    if (!nva)
        return false;
    nva[0] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; i < n; i++)
        h2_nv_from(&nva[i + 1], &hdrs[i]);
    nghttp2_data_provider body = h2_body_provider(&s->out);
    s->state = end ? H2S_ENDED : H2S_ANSWERING;
    int rv = nghttp2_submit_response(s->conn->session, s->id, nva, n + 1, end ? NULL : &body);
    if (nva != stack)
        free(nva);
    conn_kick(s->conn);
    return rv == 0;
}

void h2_stream_write(struct h2_stream *s, struct evbuffer *data)
{
    if (s->state != H2S_ANSWERING) {
        evbuffer_drain(data, evbuffer_get_length(data));
        return;
    }
    h2_body_write(s->conn->session, &s->out, data);
    conn_kick(s->conn);
}

void h2_stream_end(struct h2_stream *s, const struct h2_header_out *trailers, size_t n)
{
    if (s->state != H2S_ANSWERING)
        return;
    s->state = H2S_ENDED;
    if (!h2_body_end(s->conn->session, &s->out, trailers, n)) {
        log_error("h2: out of memory for trailers; resetting stream %d", s->id);
        h2_stream_reset(s, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    conn_kick(s->conn);
}

void h2_stream_reset(struct h2_stream *s, uint32_t code)
{
    if (s->state == H2S_CLOSED)
        return;
    s->state = H2S_ENDED; /* the holder let go: no cancel for this one */
    s->cancel = NULL, s->on_input = NULL, s->on_drain = NULL;
    nghttp2_submit_rst_stream(s->conn->session, NGHTTP2_FLAG_NONE, s->id, code);
    conn_kick(s->conn);
}

void h2_stream_consumed(struct h2_stream *s, size_t n)
{
    if (!n || s->state == H2S_CLOSED)
        return;
    nghttp2_session_consume(s->conn->session, s->id, n);
    conn_kick(s->conn);
}

bool h2_stream_output_full(const struct h2_stream *s)
{
    return h2_body_pending(&s->out) >= s->conn->lim->watermark;
}

void h2_stream_reply(struct h2_stream *s, int status, const char *content_type, const char *body,
                     size_t len)
{
    char clen[24];
    int cl = snprintf(clen, sizeof clen, "%zu", len);
    struct h2_header_out h[2] = {
        {"content-length", clen, 14, (size_t)cl},
        {"content-type", content_type ? content_type : "", 12,
         content_type ? strlen(content_type) : 0},
    };
    /* What the client still sends is not read: the window opens for it. */
    h2_stream_discard_input(s);
    s->cancel = NULL, s->on_input = NULL, s->on_drain = NULL;
    if (!h2_stream_respond(s, status, h, content_type ? 2 : 1, len == 0))
        return;
    if (len) {
        struct evbuffer *buf = h2_body_buf(&s->out);
        if (!buf) {
            h2_stream_reset(s, NGHTTP2_INTERNAL_ERROR);
            return;
        }
        evbuffer_add(buf, body, len);
        h2_stream_end(s, NULL, 0);
    }
}

const char *h2_stream_peer_ip(const struct h2_stream *s)
{
    return s->conn->peer_ip;
}

int h2_stream_peer_port(const struct h2_stream *s)
{
    return s->conn->peer_port;
}

void h2_stream_discard_input(struct h2_stream *s)
{
    size_t unread = h2_unread(s->in);
    if (unread)
        evbuffer_drain(s->in, unread);
    if (unread && s->state != H2S_CLOSED)
        nghttp2_session_consume(s->conn->session, s->id, unread);
}
