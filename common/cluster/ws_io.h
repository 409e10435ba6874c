/* ws_io.h — what the WebSocket client (the activator's autoscaler link) and
 * server (the autoscaler's stats endpoint) share:
 *
 *  - the socket side of a wslay event context: wslay pulls frames through
 *    recv and pushes them through send; both map EAGAIN to
 *    WSLAY_ERR_WOULDBLOCK, which is how wslay learns to wait for the next
 *    readiness event;
 *  - the handshake's checks on a head parsed by h1_parser (llhttp): header
 *    token lists, the Sec-WebSocket-Key shape, and the head size limit. */
#ifndef COLDBREW_WS_IO_H
#define COLDBREW_WS_IO_H

#include <event2/buffer.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <wslay/wslay.h>

#include "http/http_head.h"

/* Handshake heads (request or 101 response) larger than this are refused:
 * COLDBREW_WS_MAX_HANDSHAKE_BYTES, default 8 KiB (what the handshake of
 * Knative's gorilla peers needs many times over). */
#define WS_MAX_HANDSHAKE_DEFAULT 8192
size_t ws_max_handshake_bytes(void);

/* Bytes left over in `early` from the HTTP upgrade come first, then the socket. */
ssize_t ws_io_recv(wslay_event_context_ptr ctx, int fd, struct evbuffer *early, uint8_t *buf,
                   size_t len);
ssize_t ws_io_send(wslay_event_context_ptr ctx, int fd, const uint8_t *data, size_t len);

/* Does any `name` header of the head hold `token` in its comma-separated
 * list (case-insensitive; "Connection: keep-alive, Upgrade" has "upgrade")? */
bool ws_head_has_token(const struct http_head *h, const char *name, const char *token);
/* Is the first `name` header exactly `value` (after the parser's trimming)? */
bool ws_head_value_is(const struct http_head *h, const char *name, const char *value);
/* RFC 6455 4.1: a Sec-WebSocket-Key is 16 random bytes in base64 (24 chars). */
bool ws_key_is_valid(const char *key, size_t len);

#endif
