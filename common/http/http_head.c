/* http_head.c — see http_head.h. */
#include "http/http_head.h"
#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HEAD_ARENA_INITIAL 1024 /* a typical request head is 200-500 bytes; it grows on demand */
#define HEAD_POOL_MAX      256

static struct http_head *head_pool;
static unsigned head_pool_len;

struct http_head *http_head_acquire(void)
{
    struct http_head *h = head_pool;
    if (h) {
        head_pool = h->next_free;
        head_pool_len--;
    } else {
        /* A warm pool (alloc.h, kind 3): aborts when memory is gone. */
        h = xmalloc(sizeof *h);
        h->buf = xmalloc(HEAD_ARENA_INITIAL);
        h->hdr = xmalloc(HTTP_HEAD_INITIAL_HEADERS * sizeof *h->hdr);
        h->cap = HEAD_ARENA_INITIAL;
        h->hdr_cap = HTTP_HEAD_INITIAL_HEADERS;
    }
    char *buf = h->buf;
    uint32_t cap = h->cap;
    struct http_header *hdr = h->hdr;
    uint16_t hdr_cap = h->hdr_cap;
    /* Header slots are written before they are read: clear the rest only. */
    memset(h, 0, sizeof *h);
    h->buf = buf;
    h->cap = cap;
    h->hdr = hdr;
    h->hdr_cap = hdr_cap;
    h->connection_idx = -1;
    return h;
}

void http_head_release(struct http_head *h)
{
    if (!h)
        return;
    /* Shrunk heads (HTTP/2 streams, http_head_shrink) are not pooled: the
     * pool hands out heads that hold a typical request without growing. */
    if (head_pool_len >= HEAD_POOL_MAX || h->cap > 4 * HEAD_ARENA_INITIAL ||
        h->hdr_cap > 4 * HTTP_HEAD_INITIAL_HEADERS || h->cap < HEAD_ARENA_INITIAL ||
        h->hdr_cap < HTTP_HEAD_INITIAL_HEADERS) {
        free(h->buf);
        free(h->hdr);
        free(h);
        return;
    }
    h->next_free = head_pool;
    head_pool = h;
    head_pool_len++;
}

void http_head_shrink(struct http_head *h)
{
    uint32_t cap = h->len ? h->len : 1;
    char *b = realloc(h->buf, cap);
    if (b) {
        h->buf = b;
        h->cap = cap;
    }
    uint16_t slots = h->nheaders ? h->nheaders : 1;
    struct http_header *n = realloc(h->hdr, slots * sizeof *n);
    if (n) {
        h->hdr = n;
        h->hdr_cap = slots;
    }
}

void http_head_pool_trim(unsigned keep)
{
    while (head_pool && head_pool_len > keep) {
        struct http_head *h = head_pool;
        head_pool = h->next_free;
        head_pool_len--;
        free(h->buf);
        free(h->hdr);
        free(h);
    }
}

struct http_header *http_head_add(struct http_head *h)
{
    if (h->nheaders == h->hdr_cap) {
        if (h->hdr_cap >= HTTP_HEAD_MAX_HEADERS)
            return NULL;
        unsigned cap = h->hdr_cap * 2u;
        struct http_header *n = realloc(h->hdr, cap * sizeof *n);
        if (!n)
            return NULL;
        h->hdr = n;
        h->hdr_cap = (uint16_t)cap;
    }
    return &h->hdr[h->nheaders++];
}

bool http_head_append(struct http_head *h, const char *p, size_t n, size_t limit)
{
    if (h->len + n > limit)
        return false;
    if (h->len + n > h->cap) {
        size_t cap = h->cap;
        while (cap < h->len + n)
            cap *= 2;
        char *nb = realloc(h->buf, cap);
        if (!nb)
            return false;
        h->buf = nb;
        h->cap = (uint32_t)cap;
    }
    memcpy(h->buf + h->len, p, n);
    h->len += (uint32_t)n;
    return true;
}

const struct http_header *http_head_find(const struct http_head *h, const char *name)
{
    for (unsigned i = 0; i < h->nheaders; i++)
        if (http_header_is(h, &h->hdr[i], name))
            return &h->hdr[i];
    return NULL;
}

const char *http_head_get(const struct http_head *h, const char *name, size_t *len)
{
    const struct http_header *hd = http_head_find(h, name);
    if (!hd)
        return NULL;
    if (len)
        *len = hd->value.len;
    return h->buf + hd->value.off;
}

bool http_token_list_has(const char *v, size_t len, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tl && !strncasecmp(v + start, token, tl))
            return true;
    }
    return false;
}

bool http_head_is_hop(const struct http_head *h, const struct http_header *hd)
{
    static const struct {
        const char *name;
        uint32_t len;
    } hop[] = {{"connection", 10},
               {"proxy-connection", 16},
               {"keep-alive", 10},
               {"proxy-authenticate", 18},
               {"proxy-authorization", 19},
               {"te", 2},
               {"trailer", 7},
               {"transfer-encoding", 17},
               {"upgrade", 7}};
    const char *name = h->buf + hd->name.off;
    for (unsigned i = 0; i < sizeof hop / sizeof hop[0]; i++)
        if (hd->name.len == hop[i].len && http_name_eq(name, hop[i].name, hop[i].len))
            return true;
    /* Headers named by Connection are hop-by-hop too (found once, at parse time). */
    if (h->connection_idx < 0 || hd->name.len >= 64)
        return false;
    const struct http_header *c = &h->hdr[h->connection_idx];
    char lower[64];
    memcpy(lower, name, hd->name.len);
    lower[hd->name.len] = 0;
    return http_token_list_has(h->buf + c->value.off, c->value.len, lower);
}

const char *http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 103:
        return "Early Hints";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 413:
        return "Request Entity Too Large";
    case 414:
        return "Request URI Too Long";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 200   ? "Informational"
               : status < 300 ? "Success"
               : status < 400 ? "Redirect"
               : status < 500 ? "Client Error"
                              : "Server Error";
    }
}
