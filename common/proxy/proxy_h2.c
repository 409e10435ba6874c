/* proxy_h2.c — HTTP/2 on both sides of the exchange (proxy_codec.h).
 *
 * Protocol mirroring (Knative's autoTransport): a request that arrived as
 * HTTP/2 goes upstream as h2c with prior knowledge, a stream on the
 * upstream's HTTP/2 pool (h2_pool.h). The exchange is the same object the
 * HTTP/1 path uses; only the bytes go through the HTTP/2 codecs
 * (h2_server.h, h2_client.h), never through HTTP/1 syntax.
 *
 * The back codec:
 *   open       the head rewritten (§3d with :authority for Host) and
 *              submitted on a pooled stream; the body follows as the client
 *              sends it (pump), never faster than the upstream's window
 *              takes it (the client's window opens as bytes move on);
 *   on_up_head the response head goes to the client at once (px_head);
 *   on_up_data DATA moves on as it arrives (gRPC messages are not held
 *              back), the upstream's window opening only as the client's
 *              side drains (resume);
 *   on_up_end  trailers (grpc-status) go out and the exchange ends;
 *   on_up_reset before the head: 502 with the reason; after it: the
 *              client's stream is reset, never a clean end.
 * The front table answers on the client's stream: HEADERS, DATA, trailers.
 * No allocation per exchange: the exchange is the app's, the streams the
 * codecs' (from their free lists). */
#include <errno.h>
#include <llhttp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "http/h2_client.h"
#include "proxy/h2_pool.h"
#include "http/h2_server.h"
#include "http/http_head.h"
#include "core/log.h"
#include "proxy/proxy_codec.h"
#include "http/server.h"
#include "proxy/upstream.h"

/* Header fields sent upstream: at most the server's header limit, plus a
 * few the proxy adds. */
#define HOP_MAX_FIELDS (HTTP_HEAD_MAX_HEADERS + 8)
#define MAX_TRAILERS   64

/* A trailer block as nghttp2 fields (they point into the head). */
static size_t trailer_fields(const struct http_head *tr, struct h2_header_out *t)
{
    size_t nt = 0;
    for (unsigned i = 0; tr && i < tr->nheaders && nt < MAX_TRAILERS; i++)
        t[nt++] =
            (struct h2_header_out){tr->buf + tr->hdr[i].name.off, tr->buf + tr->hdr[i].value.off,
                                   tr->hdr[i].name.len, tr->hdr[i].value.len};
    return nt;
}

/* Lower-cases `n` bytes into the scratch arena; NULL when it is full. */
static const char *lower(char **arena, char *end, const char *s, size_t n)
{
    if ((size_t)(end - *arena) < n)
        return NULL;
    char *out = *arena;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    *arena += n;
    return out;
}

/* "Name: value\r\n" lines (an app's extra headers) as fields after the
 * first n, names lower-cased into the arena; the new count (0 when the
 * arena is full). Values point into the lines. */
static size_t lines_to_fields(const char *lines, size_t len, struct h2_header_out *f, size_t n,
                              size_t max, char **arena, char *end)
{
    const char *p = lines, *stop = lines ? lines + len : NULL;
    while (p && p < stop && n < max) {
        const char *eol = memchr(p, '\n', (size_t)(stop - p));
        const char *colon = memchr(p, ':', (size_t)((eol ? eol : stop) - p));
        if (!eol || !colon)
            break;
        const char *v = colon + 1;
        while (v < eol && (*v == ' ' || *v == '\t'))
            v++;
        const char *ve = eol;
        while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
            ve--;
        const char *name = lower(arena, end, p, (size_t)(colon - p));
        if (!name)
            return 0;
        f[n++] = (struct h2_header_out){name, v, (size_t)(colon - p), (size_t)(ve - v)};
        p = eol + 1;
    }
    return n;
}

/* ---------------------------------------------------------------- front: answering on the client's
 * stream */

static bool front_head(struct proxy_exchange *x, const struct http_head *rh, bool end,
                       const char *extra, size_t extra_len)
{
    if (rh->status < 200)
        return true; /* 1xx: nothing an HTTP/2 client waits for here */
    struct h2_header_out f[HOP_MAX_FIELDS];
    size_t n = 0;
    for (unsigned i = 0; i < rh->nheaders && n < HOP_MAX_FIELDS - 8; i++) {
        const struct http_header *hd = &rh->hdr[i];
        if (http_head_is_hop(rh, hd))
            continue;
        f[n++] = (struct h2_header_out){rh->buf + hd->name.off, rh->buf + hd->value.off,
                                        hd->name.len, hd->value.len};
    }
    char arena[256], *a = arena;
    size_t with = lines_to_fields(extra, extra_len, f, n, HOP_MAX_FIELDS, &a, arena + sizeof arena);
    if (with)
        n = with;
    /* A trailers-only answer (a gRPC error) is one header block with END_STREAM. */
    h2_stream_respond(x->req->h2, rh->status, f, n, end);
    return true;
}

static size_t front_room(struct proxy_exchange *x)
{
    /* The stream's own buffer is bounded by its window (h2_server.h). */
    return h2_stream_output_full(x->req->h2) ? 0 : SIZE_MAX;
}

static void front_data(struct proxy_exchange *x, struct evbuffer *src, size_t n)
{
    struct request *req = x->req;
    if (!src || !n)
        return; /* HTTP/2 output goes out once per loop turn (h2_wire.c) */
    req->resp_body_bytes += n;
    req->last_write_ns = clock_now_ns();
    if (n == evbuffer_get_length(src)) {
        h2_stream_write(req->h2, src);
        return;
    }
    static struct evbuffer *part;
    if (!part && !(part = evbuffer_new())) {
        log_error("HTTP/2: no memory for a response body part");
        return;
    }
    evbuffer_remove_buffer(src, part, n);
    h2_stream_write(req->h2, part);
}

static void front_end(struct proxy_exchange *x, const struct http_head *trailers)
{
    struct h2_stream *st = x->req->h2;
    if (st->state != H2S_ANSWERING)
        return; /* ended with its head (trailers-only) */
    struct h2_header_out t[MAX_TRAILERS];
    h2_stream_end(st, t, trailer_fields(trailers, t));
}

const struct front_ops h2_front = {front_head, front_room, front_data, front_end};

/* ---------------------------------------------------------------- back: the request body */

static void back_pump(struct proxy_exchange *x)
{
    struct h2_stream *f = x->req->h2;
    struct h2c_stream *up = x->s.h2;
    if (!up)
        return;
    size_t n = h2_unread(f->in);
    if (n && !h2c_stream_output_full(up)) {
        h2c_stream_write(up, f->in);
        h2_stream_consumed(f, n);
        x->body_sent += n;
    }
    if (f->in_done && !h2_unread(f->in) && !up->out_done) {
        struct h2_header_out t[MAX_TRAILERS];
        h2c_stream_end(up, t, trailer_fields(f->trailers, t));
        x->req->body_done = true;
    }
}

/* ---------------------------------------------------------------- back: the response */

/* As much of the response body as the client's stream takes now. */
static void move_body(struct proxy_exchange *x)
{
    struct h2c_stream *up = x->s.h2;
    size_t n = h2_unread(up->in);
    if (n && x->front->room(x)) {
        px_data(x, up->in, n);
        h2c_stream_consumed(up, n); /* the upstream's window opens as the client takes it */
    }
}

static void back_resume(struct proxy_exchange *x)
{
    if (x->s.h2 && x->state == PX_STREAMING)
        move_body(x);
}

static void on_up_head(struct h2c_stream *up, bool final)
{
    struct proxy_exchange *x = up->holder;
    if (!final)
        return; /* 1xx: not forwarded over HTTP/2 */
    px_head(x, up->head, up->in_done && !h2_unread(up->in));
}

static void on_up_data(struct h2c_stream *up)
{
    struct proxy_exchange *x = up->holder;
    if (x->state == PX_STREAMING)
        move_body(x);
}

static void on_up_end(struct h2c_stream *up)
{
    struct proxy_exchange *x = up->holder;
    size_t n = h2_unread(up->in);
    if (n) /* the client's side is full: the rest goes with the end */
        px_data(x, up->in, n);
    x->s.h2 = NULL; /* finished: nothing to release */
    up->holder = NULL;
    px_end(x, up->trailers);
}

static void on_up_reset(struct h2c_stream *up, uint32_t code, const char *why)
{
    struct proxy_exchange *x = up->holder;
    x->s.h2 = NULL;
    up->holder = NULL;
    if (x->state == PX_STREAMING) {
        /* The upstream died mid-stream: the client gets a stream error. */
        char msg[200];
        snprintf(msg, sizeof msg, "upstream stream ended: %s (%u)", why, code);
        px_fail(x, msg);
        return;
    }
    px_fail(x, why);
}

static void on_up_drain(struct h2c_stream *up)
{
    back_pump(up->holder);
}

static const struct h2c_stream_ops up_ops = {on_up_head, on_up_data, on_up_end, on_up_reset,
                                             on_up_drain};

static void back_release(struct proxy_exchange *x, bool reuse)
{
    (void)reuse; /* the connection stays in its pool either way */
    struct h2c_stream *up = x->s.h2;
    if (!up)
        return;
    x->s.h2 = NULL;
    up->holder = NULL;
    h2c_stream_cancel(up);
}

/* ---------------------------------------------------------------- the request head */

/* The upstream request's fields (§3d, with :authority for Host): hop-by-hop
 * headers dropped (Te: trailers kept, as Go's ReverseProxy keeps it), the
 * caller's drops, X-Forwarded-For appended, the caller's extra lines. */
static size_t build_fields(const struct request *req, const struct proxy_edit *e,
                           struct h2_header_out *f, char *arena, size_t cap, const char **authority,
                           size_t *authority_len)
{
    const struct http_head *h = req->head;
    char *a = arena, *end = arena + cap;
    size_t n = 0;
    bool te_trailers = false;
    const struct http_header *xff[8];
    unsigned nxff = 0;
    *authority = e->host;
    *authority_len = e->host_len;
    for (unsigned i = 0; i < h->nheaders && n < HOP_MAX_FIELDS - 4; i++) {
        const struct http_header *hd = &h->hdr[i];
        if (HTTP_NAME_IS(h, hd, "host")) {
            if (!*authority) {
                *authority = h->buf + hd->value.off;
                *authority_len = hd->value.len;
            }
            continue;
        }
        if (http_head_is_hop(h, hd)) {
            if (HTTP_NAME_IS(h, hd, "te") &&
                http_token_list_has(h->buf + hd->value.off, hd->value.len, "trailers"))
                te_trailers = true;
            continue;
        }
        if (e->drop) {
            bool drop = false;
            for (const char *const *d = e->drop; *d && !drop; d++)
                drop = http_header_is(h, hd, *d);
            if (drop)
                continue;
        }
        if (e->append_xff && HTTP_NAME_IS(h, hd, "x-forwarded-for")) {
            if (nxff < 8)
                xff[nxff++] = hd;
            continue;
        }
        /* HTTP/2 names are lower-case; a head that came over HTTP/1 (an
         * h2c Upgrade) may not be. */
        const char *name = h->buf + hd->name.off;
        for (size_t k = 0; k < hd->name.len; k++) {
            if (name[k] >= 'A' && name[k] <= 'Z') {
                if (!(name = lower(&a, end, name, hd->name.len)))
                    return 0;
                break;
            }
        }
        f[n++] = (struct h2_header_out){name, h->buf + hd->value.off, hd->name.len, hd->value.len};
    }
    if (te_trailers)
        f[n++] = (struct h2_header_out){"te", "trailers", 2, 8};
    if (e->append_xff) {
        /* Go's ReverseProxy: prior values joined with ", ", then the peer. */
        char *v = a;
        for (unsigned i = 0; i < nxff; i++) {
            size_t len = xff[i]->value.len;
            if ((size_t)(end - a) < len + 2)
                return 0;
            memcpy(a, h->buf + xff[i]->value.off, len);
            a += len;
            memcpy(a, ", ", 2), a += 2;
        }
        const char *ip = request_peer_ip(req);
        size_t ipl = strlen(ip);
        if ((size_t)(end - a) < ipl)
            return 0;
        memcpy(a, ip, ipl), a += ipl;
        f[n++] = (struct h2_header_out){"x-forwarded-for", v, 15, (size_t)(a - v)};
    }
    /* The caller's extra lines, with names lower-cased. */
    return lines_to_fields(e->extra, e->extra_len, f, n, HOP_MAX_FIELDS, &a, end);
}

/* ---------------------------------------------------------------- back: the stream */

static void back_open(struct proxy_exchange *x)
{
    struct request *req = x->req;
    struct upstream *u = x->up;
    const struct http_head *h = req->head;
    if (!u->h2)
        u->h2 = h2_pool_new(u->base, &u->addr, &req->srv->lim->h2, 0,
                            u->idle_tv.tv_sec ? (double)u->idle_tv.tv_sec : 4.0);
    static struct h2_header_out fields[HOP_MAX_FIELDS];
    static char arena[8192];
    const char *authority;
    size_t alen;
    size_t n = build_fields(req, x->edit, fields, arena, sizeof arena, &authority, &alen);
    /* :authority and :path go to nghttp2 as C strings: bounded copies, and a
     * request whose target does not fit is refused, never truncated. */
    char auth[1024], path[8192];
    if ((!n && h->nheaders) || alen >= sizeof auth) {
        px_refuse(x, 431, "request header too large\n");
        return;
    }
    snprintf(auth, sizeof auth, "%.*s", (int)alen, authority ? authority : u->addr.text);
    if (h->url.len >= sizeof path) {
        px_refuse(x, 414, "request URI too long\n");
        return;
    }
    memcpy(path, http_str_ptr(h, h->url), h->url.len);
    path[h->url.len] = 0;
    if (!u->h2) {
        log_error("error reverse proxying request: no memory for an HTTP/2 upstream");
        px_refuse(x, 503, "out of memory\n");
        return;
    }
    struct h2_stream *front = req->h2;
    bool end = front->in_done && !h2_unread(front->in);
    struct h2c_stream *up =
        h2_pool_request(u->h2, llhttp_method_name((llhttp_method_t)h->method),
                        u->tls ? "https" : "http", auth, path, fields, n, end, &up_ops, x);
    if (!up) {
        char msg[200];
        px_errno_text(msg, sizeof msg, u, "connect", errno);
        px_fail(x, msg);
        return;
    }
    x->s.h2 = up;
    if (end)
        req->body_done = true;
    px_ready(x);
    back_pump(x);
}

const struct back_ops h2_back = {back_open, back_pump, back_resume, back_release};
