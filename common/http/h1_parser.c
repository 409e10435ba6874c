/* h1_parser.c — see h1_parser.h.
 *
 * llhttp needs contiguous memory; an evbuffer is a chain of chunks, so we
 * feed it extent by extent (evbuffer_peek). Callbacks see spans inside the
 * current extent; header spans are copied to the arena at once, so a header
 * split across two extents is simply appended in two pieces. */
#include "http/h1_parser.h"

#include <string.h>
#include <strings.h>

#define P(ll) ((struct h1_parser *)(ll)->data)

static int fail(llhttp_t *ll, const char *why, int status)
{
    P(ll)->err = why;
    P(ll)->err_status = status;
    return HPE_USER;
}

static int on_message_begin(llhttp_t *ll)
{
    (void)ll;
    return 0;
}

static int append(llhttp_t *ll, const char *at, size_t n)
{
    struct h1_parser *p = P(ll);
    if (!http_head_append(p->head, at, n, p->max_header_bytes))
        return fail(ll, "header too large", 431);
    return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t n)
{
    struct http_head *h = P(ll)->head;
    if (h->url.len == 0)
        h->url.off = h->len;
    h->url.len += (uint32_t)n;
    return append(ll, at, n);
}

static int on_status(llhttp_t *ll, const char *at, size_t n)
{
    struct http_head *h = P(ll)->head;
    if (h->reason.len == 0)
        h->reason.off = h->len;
    h->reason.len += (uint32_t)n;
    return append(ll, at, n);
}

static int on_header_field(llhttp_t *ll, const char *at, size_t n)
{
    struct h1_parser *p = P(ll);
    struct http_head *h = p->head;
    if (p->in_body) /* trailers are forwarded verbatim, not recorded */
        return 0;
    if (!p->in_field) {
        struct http_header *hd;
        if (h->nheaders >= p->max_headers || !(hd = http_head_add(h)))
            return fail(ll, "too many headers", 431);
        hd->name.off = h->len;
        hd->name.len = 0;
        hd->value.off = 0;
        hd->value.len = 0;
        p->in_field = true;
    }
    h->hdr[h->nheaders - 1].name.len += (uint32_t)n;
    return append(ll, at, n);
}

static int on_header_field_complete(llhttp_t *ll)
{
    struct h1_parser *p = P(ll);
    if (p->in_body)
        return 0;
    p->in_field = false;
    struct http_header *hd = &p->head->hdr[p->head->nheaders - 1];
    /* "Name : v" — RFC 9112 5.1: whitespace before the colon must be rejected. */
    char last = hd->name.len ? p->head->buf[hd->name.off + hd->name.len - 1] : 0;
    if (last == ' ' || last == '\t' || !hd->name.len)
        return fail(ll, "whitespace in header name", 400);
    hd->value.off = p->head->len;
    return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t n)
{
    struct h1_parser *p = P(ll);
    struct http_head *h = p->head;
    if (p->in_body)
        return 0;
    p->in_value = true;
    h->hdr[h->nheaders - 1].value.len += (uint32_t)n;
    return append(ll, at, n);
}

static int on_header_value_complete(llhttp_t *ll)
{
    struct h1_parser *p = P(ll);
    struct http_head *h = p->head;
    if (p->in_body)
        return 0;
    struct http_header *hd = &h->hdr[h->nheaders - 1];
    /* llhttp keeps trailing white space in the value; RFC 7230 says it is not part of it. */
    while (hd->value.len && (h->buf[hd->value.off + hd->value.len - 1] == ' ' ||
                             h->buf[hd->value.off + hd->value.len - 1] == '\t'))
        hd->value.len--;
    if (h->connection_idx < 0 && http_header_is(h, hd, "connection"))
        h->connection_idx = (int16_t)(h->nheaders - 1);
    p->in_value = false;
    return 0;
}

static int on_headers_complete(llhttp_t *ll)
{
    struct h1_parser *p = P(ll);
    struct http_head *h = p->head;
    if (p->in_body) /* trailers of a chunked body: nothing to record */
        return 0;
    /* llhttp rejects a request whose Transfer-Encoding does not end in
     * chunked only after this callback; we pause here, so check now: such a
     * request has no knowable length and must never be forwarded (RFC 9112 6.3). */
    if (ll->type == HTTP_REQUEST && (ll->flags & F_TRANSFER_ENCODING) && !(ll->flags & F_CHUNKED))
        return fail(ll, "invalid transfer-encoding", 400);
    h->method = ll->method;
    h->major = ll->http_major;
    h->minor = ll->http_minor;
    h->status = ll->status_code;
    h->chunked = (ll->flags & F_CHUNKED) != 0;
    h->has_content_length = (ll->flags & F_CONTENT_LENGTH) != 0;
    h->content_length = ll->content_length;
    h->upgrade = (ll->flags & F_UPGRADE) && (ll->flags & F_CONNECTION_UPGRADE);
    h->keep_alive = llhttp_should_keep_alive(ll);
    size_t elen;
    const char *e = http_head_get(h, "expect", &elen);
    h->expect_continue = e && elen == 12 && !strncasecmp(e, "100-continue", 12);
    p->in_body = true;
    return HPE_PAUSED;
}

static int on_chunk_header(llhttp_t *ll)
{
    P(ll)->chunk_boundary = false;
    return 0;
}

static int on_chunk_complete(llhttp_t *ll)
{
    P(ll)->chunk_boundary = true;
    return 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t n)
{
    struct h1_parser *p = P(ll);
    p->body_bytes += n;
    if (p->dechunk)
        evbuffer_add(p->dechunk, at, n);
    return 0;
}

static int on_message_complete(llhttp_t *ll)
{
    struct h1_parser *p = P(ll);
    p->done = true;
    p->upgrade = llhttp_get_upgrade(ll) != 0;
    return HPE_PAUSED;
}

static llhttp_settings_t settings_request, settings_response;
static bool settings_ready;

static void settings_init(void)
{
    llhttp_settings_t *all[] = {&settings_request, &settings_response};
    for (int i = 0; i < 2; i++) {
        llhttp_settings_t *s = all[i];
        llhttp_settings_init(s);
        s->on_message_begin = on_message_begin;
        s->on_header_field = on_header_field;
        s->on_header_field_complete = on_header_field_complete;
        s->on_header_value = on_header_value;
        s->on_header_value_complete = on_header_value_complete;
        s->on_headers_complete = on_headers_complete;
        s->on_chunk_header = on_chunk_header;
        s->on_chunk_complete = on_chunk_complete;
        s->on_body = on_body;
        s->on_message_complete = on_message_complete;
    }
    settings_request.on_url = on_url;
    settings_response.on_status = on_status;
    settings_ready = true;
}

void h1_parser_init(struct h1_parser *p, bool request, size_t max_header_bytes,
                    unsigned max_headers)
{
    if (!settings_ready)
        settings_init();
    memset(p, 0, sizeof *p);
    llhttp_init(&p->ll, request ? HTTP_REQUEST : HTTP_RESPONSE,
                request ? &settings_request : &settings_response);
    p->ll.data = p;
    p->max_header_bytes = max_header_bytes;
    p->max_headers = max_headers > HTTP_HEAD_MAX_HEADERS ? HTTP_HEAD_MAX_HEADERS : max_headers;
}

void h1_parser_begin(struct h1_parser *p, struct http_head *head)
{
    llhttp_reset(&p->ll);
    p->ll.data = p;
    p->head = head;
    p->err = NULL;
    p->err_status = 0;
    p->in_body = p->done = p->in_field = p->in_value = p->upgrade = false;
    p->chunk_boundary = true;
    p->dechunk = NULL;
    p->body_bytes = 0;
}

void h1_parser_skip_body(struct h1_parser *p)
{
    p->ll.flags |= F_SKIPBODY;
}

bool h1_parser_body_until_eof(const struct h1_parser *p)
{
    return p->in_body && !p->done && llhttp_message_needs_eof(&p->ll) &&
           !(p->ll.flags & (F_CHUNKED | F_CONTENT_LENGTH));
}

bool h1_parser_eof_completes(struct h1_parser *p)
{
    if (p->done)
        return true;
    if (!p->in_body)
        return false;
    if (llhttp_finish(&p->ll) != HPE_OK && !p->done)
        return false;
    return p->done;
}

/* Map an llhttp error to a reason; header limits were set by our callbacks. */
static enum h1_result parse_error(struct h1_parser *p, llhttp_errno_t e)
{
    /* Our callbacks' reasons win: llhttp reports a failing *_complete
     * callback as HPE_CB_* ("callback error"), not HPE_USER. */
    if (!p->err) {
        p->err = llhttp_get_error_reason(&p->ll);
        if (!p->err)
            p->err = llhttp_errno_name(e);
        p->err_status = 400;
    }
    return H1_ERROR;
}

/* Feed up to `max` bytes; returns what execute ended with and the number of
 * bytes llhttp consumed. */
static llhttp_errno_t feed(struct h1_parser *p, struct evbuffer *in, size_t max, size_t *consumed)
{
    struct evbuffer_iovec vec[16];
    *consumed = 0;
    llhttp_errno_t e = HPE_OK;
    while (*consumed < max) {
        struct evbuffer_ptr pos;
        evbuffer_ptr_set(in, &pos, *consumed, EVBUFFER_PTR_SET);
        int nv = evbuffer_peek(in, (ev_ssize_t)(max - *consumed), &pos, vec, 16);
        if (nv <= 0)
            break;
        if (nv > 16)
            nv = 16;
        for (int i = 0; i < nv && *consumed < max; i++) {
            size_t len = vec[i].iov_len;
            if (len > max - *consumed)
                len = max - *consumed;
            const char *base = vec[i].iov_base;
            if (p->ll.error == HPE_PAUSED)
                llhttp_resume(&p->ll);
            e = llhttp_execute(&p->ll, base, len);
            if (e != HPE_OK) {
                const char *at = llhttp_get_error_pos(&p->ll);
                *consumed += at && at >= base && at <= base + len ? (size_t)(at - base) : 0;
                return e;
            }
            *consumed += len;
        }
    }
    return e;
}

enum h1_result h1_parse_head(struct h1_parser *p, struct evbuffer *in)
{
    size_t avail = evbuffer_get_length(in), used;
    if (!avail)
        return H1_NEED_MORE;
    llhttp_errno_t e = feed(p, in, avail, &used);
    evbuffer_drain(in, used);
    if (e == HPE_PAUSED && p->in_body)
        return H1_HEAD;
    if (e != HPE_OK)
        return parse_error(p, e);
    /* Everything so far is head bytes; enforce the limit on what is buffered too. */
    return H1_NEED_MORE;
}

enum h1_result h1_parse_body(struct h1_parser *p, struct evbuffer *in, size_t max, size_t *n)
{
    *n = 0;
    if (p->done)
        return H1_DONE;
    size_t avail = evbuffer_get_length(in);
    if (max > avail)
        max = avail;
    llhttp_errno_t e = HPE_OK;
    if (max)
        e = feed(p, in, max, n);
    else if (p->ll.error == HPE_PAUSED) {
        /* A body-less message completes without any further byte. */
        llhttp_resume(&p->ll);
        e = llhttp_execute(&p->ll, "", 0);
    }
    if (p->done)
        return H1_DONE;
    if (e == HPE_OK || e == HPE_PAUSED)
        return H1_BODY;
    if (e == HPE_PAUSED_UPGRADE) {
        p->done = p->upgrade = true;
        return H1_DONE;
    }
    return parse_error(p, e);
}
