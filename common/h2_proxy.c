/* h2_proxy.c — an HTTP/2 request forwarded as an HTTP/2 stream (see proxy.h).
 *
 * Protocol mirroring (Knative's autoTransport): a request that arrived as
 * HTTP/2 goes upstream as h2c with prior knowledge, over the upstream's
 * HTTP/2 pool; this file moves it stream to stream. The exchange (struct
 * request) is the same object the HTTP/1 path uses: the breaker admits it,
 * the stats count it, its timers time it, its on_finish logs it; only the
 * bytes go through the HTTP/2 codecs on both sides (h2_server.h,
 * h2_client.h), never through HTTP/1 syntax.
 *
 * The hop's life:
 *   proxy_forward_h2()  head rewritten (§3d with :authority for Host) and
 *                       submitted on a pooled stream; the body follows as
 *                       the client sends it, never faster than the upstream's
 *                       window takes it (the client's window opens as bytes
 *                       move on);
 *   on_up_head          the response head goes to the client at once;
 *   on_up_data          DATA moves on as it arrives (gRPC messages are not
 *                       held back), the upstream's window opening only as
 *                       the client's side drains;
 *   on_up_end           trailers (grpc-status) go out and the exchange ends;
 *   on_up_reset         before the head: 502 with the reason; after it: the
 *                       client's stream is reset, never a clean end.
 * One hop per exchange, from a free list (no allocation once warm). */
#include <errno.h>
#include <llhttp.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "freelist.h"
#include "h2_pool.h"
#include "h2_server.h"
#include "http_head.h"
#include "log.h"
#include "proxy.h"
#include "server.h"
#include "upstream.h"

/* Header fields sent upstream: at most the server's header limit, plus a
 * few the proxy adds. */
#define HOP_MAX_FIELDS (HTTP_HEAD_MAX_HEADERS + 8)

struct hop {
    struct request *req;
    struct h2_stream *front;
    struct h2c_stream *up;
    bool head_sent; /* the response head went to the client */
};

static struct freelist hops = FREELIST_INIT(struct hop);

static void hop_release(struct hop *h)
{
    struct request *req = h->req;
    if (req && req->holder == h) {
        req->holder = NULL;
        req->cancel = NULL;
        req->on_input = NULL;
        req->on_drain = NULL;
    }
    freelist_put(&hops, h);
}

/* ---------------------------------------------------------------- request body */

static void pump_request_body(struct hop *h)
{
    struct h2_stream *f = h->front;
    if (!h->up)
        return;
    size_t n = evbuffer_get_length(f->in);
    if (n && !h2c_stream_output_full(h->up)) {
        h2c_stream_write(h->up, f->in);
        h2_stream_consumed(f, n);
    }
    if (f->in_done && !evbuffer_get_length(f->in) && !h->up->out_done) {
        struct h2_header_out t[64];
        size_t nt = 0;
        const struct http_head *tr = f->trailers;
        for (unsigned i = 0; tr && i < tr->nheaders && nt < 64; i++)
            t[nt++] = (struct h2_header_out){tr->buf + tr->hdr[i].name.off,
                                             tr->buf + tr->hdr[i].value.off, tr->hdr[i].name.len,
                                             tr->hdr[i].value.len};
        h2c_stream_end(h->up, t, nt);
        h->req->body_done = true;
    }
}

static void on_client_input(struct request *req)
{
    pump_request_body(req->holder);
}

/* ---------------------------------------------------------------- response */

static void move_response_body(struct hop *h)
{
    struct h2c_stream *up = h->up;
    size_t n = evbuffer_get_length(up->in);
    if (!n || h2_stream_output_full(h->front))
        return; /* the upstream's window stays shut until the client drains */
    h->req->resp_body_bytes += n;
    h->req->last_write_ns = clock_now_ns();
    h2_stream_write(h->front, up->in);
    h2c_stream_consumed(up, n);
}

static void on_client_drain(struct request *req)
{
    struct hop *h = req->holder;
    if (h->up && h->head_sent)
        move_response_body(h);
}

static void on_up_head(struct h2c_stream *up, bool final)
{
    struct hop *h = up->holder;
    const struct http_head *rh = up->head;
    if (!final)
        return; /* 1xx: nothing the client waits for in HTTP/2 here */
    struct h2_header_out f[HOP_MAX_FIELDS];
    size_t n = 0;
    for (unsigned i = 0; i < rh->nheaders && n < HOP_MAX_FIELDS; i++) {
        const struct http_header *hd = &rh->hdr[i];
        if (http_head_is_hop(rh, hd))
            continue;
        f[n++] = (struct h2_header_out){rh->buf + hd->name.off, rh->buf + hd->value.off,
                                        hd->name.len, hd->value.len};
    }
    /* A trailers-only answer (a gRPC error) is one header block with END_STREAM. */
    bool end = up->in_done && !evbuffer_get_length(up->in);
    h->head_sent = true;
    h2_stream_respond(h->front, rh->status, f, n, end);
    request_response_started(h->req, rh->status);
}

static void on_up_data(struct h2c_stream *up)
{
    struct hop *h = up->holder;
    if (h->head_sent)
        move_response_body(h);
}

static void on_up_end(struct h2c_stream *up)
{
    struct hop *h = up->holder;
    struct request *req = h->req;
    move_response_body(h);
    if (evbuffer_get_length(up->in)) {
        /* The client's side is full: the rest goes with the end. */
        req->resp_body_bytes += evbuffer_get_length(up->in);
        h2_stream_write(h->front, up->in);
    }
    struct h2_header_out t[64];
    size_t nt = 0;
    const struct http_head *tr = up->trailers;
    for (unsigned i = 0; tr && i < tr->nheaders && nt < 64; i++)
        t[nt++] =
            (struct h2_header_out){tr->buf + tr->hdr[i].name.off, tr->buf + tr->hdr[i].value.off,
                                   tr->hdr[i].name.len, tr->hdr[i].value.len};
    if (h->front->state == H2S_ANSWERING)
        h2_stream_end(h->front, t, nt);
    h->up = NULL;
    hop_release(h);
    request_end(req, false);
}

static void on_up_reset(struct h2c_stream *up, uint32_t code, const char *why)
{
    struct hop *h = up->holder;
    struct request *req = h->req;
    h->up = NULL;
    bool started = h->head_sent;
    hop_release(h);
    if (!started) {
        char body[200];
        snprintf(body, sizeof body, "%s\n", why);
        log_error("error reverse proxying request: %s", why);
        request_error(req, 502, body);
    } else {
        /* The upstream died mid-stream: the client gets a stream error. */
        log_error("error reverse proxying request: upstream stream ended: %s (%u)", why, code);
        request_end(req, true);
    }
}

static void on_up_drain(struct h2c_stream *up)
{
    pump_request_body(up->holder);
}

static const struct h2c_stream_ops up_ops = {on_up_head, on_up_data, on_up_end, on_up_reset,
                                             on_up_drain};

static void proxy_cancel(struct request *req)
{
    struct hop *h = req->holder;
    if (h->up)
        h2c_stream_cancel(h->up);
    h->up = NULL;
    hop_release(h);
}

/* ---------------------------------------------------------------- the request head */

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
    /* The caller's extra lines, "Name: value\r\n"..., with names lower-cased. */
    const char *p = e->extra, *stop = e->extra ? e->extra + e->extra_len : NULL;
    while (p && p < stop && n < HOP_MAX_FIELDS) {
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
        const char *name = lower(&a, end, p, (size_t)(colon - p));
        if (!name)
            return 0;
        f[n++] = (struct h2_header_out){name, v, (size_t)(colon - p), (size_t)(ve - v)};
        p = eol + 1;
    }
    return n;
}

/* ---------------------------------------------------------------- entry */

void proxy_h2_trim(unsigned keep)
{
    freelist_trim(&hops, keep);
}

void proxy_forward_h2(struct request *req, struct upstream *u, const struct proxy_edit *edit)
{
    struct h2_stream *front = req->h2;
    if (!u->h2)
        u->h2 = h2_pool_new(u->base, &u->addr, &req->srv->lim->h2, 0,
                            u->idle_tv.tv_sec ? (double)u->idle_tv.tv_sec : 4.0);
    static struct h2_header_out fields[HOP_MAX_FIELDS];
    static char arena[8192];
    const char *authority;
    size_t alen;
    size_t n = build_fields(req, edit, fields, arena, sizeof arena, &authority, &alen);
    /* :authority and :path go to nghttp2 as C strings: bounded copies, and a
     * request whose target does not fit is refused, never truncated. */
    char auth[1024], path[8192];
    const struct http_head *h = req->head;
    if (!n && h->nheaders) {
        request_error(req, 431, "request header too large\n");
        return;
    }
    if (alen >= sizeof auth) {
        request_error(req, 431, "request header too large\n");
        return;
    }
    snprintf(auth, sizeof auth, "%.*s", (int)alen, authority ? authority : u->addr.text);
    if (h->url.len >= sizeof path) {
        request_error(req, 414, "request URI too long\n");
        return;
    }
    memcpy(path, http_str_ptr(h, h->url), h->url.len);
    path[h->url.len] = 0;
    if (!u->h2) {
        log_error("error reverse proxying request: no memory for an HTTP/2 upstream");
        request_error(req, 503, "out of memory\n");
        return;
    }
    struct hop *hp = freelist_get(&hops);
    *hp = (struct hop){.req = req, .front = front};
    bool end = front->in_done && !evbuffer_get_length(front->in);
    hp->up = h2_pool_request(u->h2, llhttp_method_name((llhttp_method_t)h->method), "http", auth,
                             path, fields, n, end, &up_ops, hp);
    if (!hp->up) {
        char msg[200];
        snprintf(msg, sizeof msg, "dial tcp %s: connect: %s\n", u->addr.text, strerror(errno));
        freelist_put(&hops, hp);
        log_error("error reverse proxying request: %.*s", (int)strlen(msg) - 1, msg);
        request_error(req, 502, msg);
        return;
    }
    if (end)
        req->body_done = true;
    req->holder = hp;
    req->cancel = proxy_cancel;
    req->on_input = on_client_input;
    req->on_drain = on_client_drain;
    pump_request_body(hp);
}
