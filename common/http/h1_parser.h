/* h1_parser.h — HTTP/1.x framing over an evbuffer, on llhttp.
 *
 * The parser runs in two phases per message:
 *   head: bytes are fed to llhttp and copied into an http_head arena; the
 *         consumed bytes are drained from the input. Parsing pauses right
 *         after the head so the caller can decide what to do with the body.
 *   body: bytes are validated by llhttp (chunk sizes, lengths) but NOT
 *         copied: the parser reports how many input bytes belong to the
 *         body, and the caller moves exactly those (evbuffer_remove_buffer),
 *         framing included. A chunked body is therefore forwarded verbatim,
 *         trailers and all; nothing past the end of the message is touched,
 *         so a pipelined next request stays in the buffer.
 *
 * Strictness: llhttp's lenient flags stay off, so Content-Length together
 * with Transfer-Encoding, duplicate Content-Length, a non-final chunked
 * coding, bad chunk sizes and bare LF are all errors (no request smuggling
 * shape reaches the upstream). */
#ifndef COLDBREW_H1_PARSER_H
#define COLDBREW_H1_PARSER_H

#include <event2/buffer.h>
#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/http_head.h"

enum h1_result {
    H1_NEED_MORE, /* everything available was consumed; wait for bytes */
    H1_HEAD,      /* head complete (head phase) */
    H1_BODY,      /* *n body bytes may be moved; the message is not complete */
    H1_DONE,      /* *n body bytes may be moved; then the message is complete */
    H1_ERROR,     /* malformed; see err / err_status */
};

struct h1_parser {
    llhttp_t ll;
    struct http_head *head; /* filled during the head phase; owned by the caller */
    const char *err;        /* static reason when H1_ERROR */
    int err_status;         /* 400 or 431 (requests) */
    size_t max_header_bytes;
    unsigned max_headers;
    bool in_body; /* head done, body phase */
    bool done;    /* message complete */
    bool in_field, in_value;
    bool chunk_boundary;      /* body phase of chunked: between chunks */
    bool upgrade;             /* llhttp saw a protocol switch at message end */
    struct evbuffer *dechunk; /* when set, body data is copied here unframed */
    uint64_t body_bytes;      /* payload bytes seen so far (framing excluded) */
};

void h1_parser_init(struct h1_parser *p, bool request, size_t max_header_bytes,
                    unsigned max_headers);
/* Start a new message; `head` receives it. */
void h1_parser_begin(struct h1_parser *p, struct http_head *head);
/* Head phase: consumes from `in`. Returns H1_NEED_MORE, H1_HEAD or H1_ERROR. */
enum h1_result h1_parse_head(struct h1_parser *p, struct evbuffer *in);
/* After H1_HEAD of a response to HEAD (or any message the caller knows has no
 * body), call this before the body phase. */
void h1_parser_skip_body(struct h1_parser *p);
/* Body phase: looks at up to `max` bytes of `in` without draining them; *n
 * is how many belong to this message. Returns H1_BODY, H1_DONE or H1_ERROR. */
enum h1_result h1_parse_body(struct h1_parser *p, struct evbuffer *in, size_t max, size_t *n);
/* The peer closed: true when that legitimately ends the message
 * (a response delimited by connection close). */
bool h1_parser_eof_completes(struct h1_parser *p);
/* True when the message body is delimited by connection close. */
bool h1_parser_body_until_eof(const struct h1_parser *p);

#endif
