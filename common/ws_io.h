/* ws_io.h — the socket side of a wslay event context, shared by the
 * WebSocket client (the activator's autoscaler link) and server (the
 * autoscaler's stats endpoint): wslay pulls frames through recv and pushes
 * them through send; both map EAGAIN to WSLAY_ERR_WOULDBLOCK, which is how
 * wslay learns to wait for the next readiness event. */
#ifndef COLDBREW_WS_IO_H
#define COLDBREW_WS_IO_H

#include <event2/buffer.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <wslay/wslay.h>

/* Bytes left over in `early` from the HTTP upgrade come first, then the socket. */
ssize_t ws_io_recv(wslay_event_context_ptr ctx, int fd, struct evbuffer *early, uint8_t *buf,
                   size_t len);
ssize_t ws_io_send(wslay_event_context_ptr ctx, int fd, const uint8_t *data, size_t len);

#endif
