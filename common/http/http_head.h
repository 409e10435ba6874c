/* http_head.h — one parsed HTTP/1.x message head (request or response).
 *
 * Strings live in the head's own arena (`buf`), referenced by offset, so a
 * head is one object that can be pooled and reused without per-header
 * allocations. The arena is filled by the parser (h1_parser.c) and stays
 * valid until the head is released with http_head_release().
 *
 * Ownership: a head belongs to whoever acquired it (the server connection for
 * requests, the upstream connection for responses); it is never shared. */
#ifndef COLDBREW_HTTP_HEAD_H
#define COLDBREW_HTTP_HEAD_H

#include <stdbool.h>
#include <string.h>
#include <stddef.h>
#include <stdint.h>
#include <strings.h>

#define HTTP_HEAD_MAX_HEADERS     1024 /* hard ceiling; the configured limit may be lower */
#define HTTP_HEAD_INITIAL_HEADERS 24   /* header slots before the first growth */

struct http_str {
    uint32_t off, len;
};

struct http_header {
    struct http_str name, value;
};

struct http_head {
    char *buf; /* arena */
    uint32_t len, cap;
    uint16_t nheaders;
    uint8_t method;       /* llhttp_method_t, requests */
    uint8_t major, minor; /* HTTP version */
    uint16_t status;      /* responses */
    struct http_str url;  /* request target */
    struct http_str reason;
    uint64_t content_length; /* valid when has_content_length */
    bool has_content_length, chunked, upgrade, keep_alive, expect_continue;
    int16_t connection_idx; /* index of the Connection header, -1 when absent */
    uint16_t hdr_cap;
    struct http_head *next_free;
    struct http_header *hdr; /* hdr_cap slots, grown on demand */
};

/* Pooled allocation: returns a cleared head whose arena has at least a few KiB. */
struct http_head *http_head_acquire(void);
void http_head_release(struct http_head *h);
/* Drop pooled heads beyond `keep` (idle trimming; 0 at exit so leak
 * checkers see a clean heap). */
void http_head_pool_trim(unsigned keep);
static inline void http_head_pool_drain(void)
{
    http_head_pool_trim(0);
}
/* Gives back the arena and header slots a finished head does not use (a
 * head that lives long, such as an HTTP/2 stream's held request; memory
 * per open stream). The head still grows if something is added. Shrunk
 * heads are freed on release, not pooled. */
void http_head_shrink(struct http_head *h);
/* A new header slot, or NULL past HTTP_HEAD_MAX_HEADERS. */
struct http_header *http_head_add(struct http_head *h);

/* Arena helpers used by the parser; false when the arena would pass `limit`. */
bool http_head_append(struct http_head *h, const char *p, size_t n, size_t limit);

static inline const char *http_str_ptr(const struct http_head *h, struct http_str s)
{
    return h->buf + s.off;
}

/* Does a header name equal `lower` (n bytes, lower case), ignoring case?
 * Exact for any bytes: a byte matches when it is the same, or when `lower`
 * has a letter there and the byte is that letter in upper case. Cheaper
 * than strncasecmp() (a libc call through the locale) on the short names
 * here, and these run for every header of every request. */
static inline bool http_name_eq(const char *name, const char *lower, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = name[i], l = lower[i];
        if (c != l && ((c | 0x20) != l || (unsigned char)(l - 'a') > 'z' - 'a'))
            return false;
    }
    return true;
}

/* Case-insensitive name comparison against a lower-case name. Inline so
 * that strlen() of a literal folds to a constant. */
static inline bool http_header_is(const struct http_head *h, const struct http_header *hd,
                                  const char *name)
{
    size_t n = __builtin_strlen(name);
    return hd->name.len == n && http_name_eq(h->buf + hd->name.off, name, n);
}
/* Name check against a lower-case string literal (its length is known at
 * compile time). */
#define HTTP_NAME_IS(h, hd, lit)                                                                   \
    ((hd)->name.len == sizeof(lit) - 1 &&                                                          \
     http_name_eq((h)->buf + (hd)->name.off, lit, sizeof(lit) - 1))

/* A found header's value and length; NULL and 0 for a header that is not there. */
static inline const char *http_header_value(const struct http_head *h, const struct http_header *hd,
                                            size_t *len)
{
    *len = hd ? hd->value.len : 0;
    return hd ? h->buf + hd->value.off : NULL;
}

/* First header with that name, or NULL. */
const struct http_header *http_head_find(const struct http_head *h, const char *name);
/* Value of the first header with that name into *len, or NULL. */
const char *http_head_get(const struct http_head *h, const char *name, size_t *len);

/* Is this header hop-by-hop for a proxy (RFC 7230 6.1 plus Go's list:
 * Connection, Proxy-Connection, Keep-Alive, Proxy-Authenticate,
 * Proxy-Authorization, Te, Trailer, Transfer-Encoding, Upgrade), or named
 * by a token of the message's Connection header? */
bool http_head_is_hop(const struct http_head *h, const struct http_header *hd);

/* Does a comma-separated header value contain `token` (case-insensitive)? */
bool http_token_list_has(const char *v, size_t len, const char *token);

/* Reason phrase for a status code ("OK", "Bad Gateway", ...). */
const char *http_status_text(int status);

/* Is the request's path (query string ignored) exactly `path`? For the
 * small admin routes (/metrics, /wait-for-drain). */
static inline bool http_path_is(const struct http_head *h, const char *path)
{
    size_t n = strlen(path);
    const char *u = http_str_ptr(h, h->url);
    return h->url.len >= n && !memcmp(u, path, n) && (h->url.len == n || u[n] == '?');
}

#endif
