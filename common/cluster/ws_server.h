/* ws_server.h — a WebSocket server for binary message streams (wslay).
 *
 * What Knative's autoscaler runs on :8080 for the activators' stat batches:
 * a client sends GET with Upgrade: websocket, gets 101, then binary
 * messages, each handed whole to on_message. Pings are answered with pongs
 * (wslay does it), a close is answered and the connection dropped. Nothing
 * is sent to clients besides pongs and the close.
 *
 * The upgrade request is parsed by llhttp (h1_parser) and checked as
 * gorilla/websocket's Upgrader does: Connection has the token "upgrade",
 * Upgrade has "websocket" (else 400), the method is GET (else 405),
 * Sec-WebSocket-Version is 13 (else 400 naming 13) and Sec-WebSocket-Key is
 * 16 base64 bytes (else 400). A refused handshake is answered, logged with
 * its reason, and closed.
 *
 * Limits (each logged when hit): handshake heads up to
 * COLDBREW_WS_MAX_HANDSHAKE_BYTES (8 KiB; beyond: 431), the
 * handshake within WS_SERVER_HANDSHAKE_SECONDS (else closed), at most
 * WS_SERVER_MAX_CONNS connections (more are closed at accept), messages up
 * to WS_SERVER_MAX_MESSAGE (beyond: closed with 1009).
 *
 * Ownership: the server owns its connections; on_message's bytes are
 * borrowed for the call. */
#ifndef COLDBREW_WS_SERVER_H
#define COLDBREW_WS_SERVER_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

#define WS_SERVER_MAX_MESSAGE       (4u << 20)
#define WS_SERVER_HANDSHAKE_SECONDS 10
#define WS_SERVER_MAX_CONNS         1024

struct ws_server;
typedef void (*ws_message_cb)(void *arg, const uint8_t *data, size_t len);

/* Listens on host:port (port 0: any free port, see ws_server_port). NULL
 * with *err set on failure. */
struct ws_server *ws_server_open(struct event_base *base, const char *host, int port,
                                 ws_message_cb on_message, void *arg, const char **err);
int ws_server_port(const struct ws_server *s);
/* Serves an already connected, non-blocking socket (the accept path; the fuzz target). */
void ws_server_adopt(struct ws_server *s, int fd);
unsigned ws_server_clients(const struct ws_server *s);
void ws_server_free(struct ws_server *s);

#endif
