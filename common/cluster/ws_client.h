/* ws_client.h — a persistent WebSocket client (RFC 6455): the activator's
 * link to the autoscaler (Knative §5.1).
 *
 * Framing is wslay's; the HTTP upgrade is ours (GET <path>, no subprotocol,
 * no compression, no Origin, as gorilla's Dialer sends it). The answer is
 * parsed by llhttp (h1_parser) and must be status 101 with "websocket" in
 * Upgrade, "upgrade" in Connection (token lists), the right
 * Sec-WebSocket-Accept and no extension or subprotocol we did not ask for;
 * its head is bounded by COLDBREW_WS_MAX_HANDSHAKE_BYTES (8 KiB). A refused
 * answer is logged (a warning with the reason, once per run of failures)
 * and retried like a failed connect. Once open, a ping goes out every
 * ping_interval (Knative: 10 s / 3) and the link is declared dead when
 * nothing (pong or data) arrived for read_timeout (10 s). A failed connect,
 * handshake, or link reconnects after an exponential backoff (100 ms × 1.3,
 * with jitter, capped at 5 s), forever.
 *
 * Host names are resolved asynchronously (libevent's evdns, from
 * /etc/resolv.conf); IP literals skip DNS.
 *
 * Ownership: the client owns its socket and buffers; messages passed to
 * ws_client_send_binary() are copied. on_state runs on every open/close transition. */
#ifndef COLDBREW_WS_CLIENT_H
#define COLDBREW_WS_CLIENT_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ws_client;

typedef void (*ws_state_cb)(void *arg, bool open);

/* url: ws://host:port[/path]. NULL with the reason in detail when it is not
 * one (its only failure: no static error to compare). Start-up: aborts when
 * memory is short (alloc.h); later, memory failures drop the link, which is
 * retried like any other failure. */
struct ws_client *ws_client_new(struct event_base *base, const char *url, ws_state_cb on_state,
                                void *arg, char *detail, size_t cap);
void ws_client_start(struct ws_client *ws);
bool ws_client_is_open(const struct ws_client *ws);
/* Queues one binary message; false (and nothing queued) when not open. */
bool ws_client_send_binary(struct ws_client *ws, const uint8_t *data, size_t len);
/* Counters for tests and metrics. */
unsigned ws_client_connects(const struct ws_client *ws);
void ws_client_free(struct ws_client *ws);

/* RFC 6455's Sec-WebSocket-Accept for a Sec-WebSocket-Key (out: >= 29 bytes). */
void ws_accept_value(const char *key, char *out);

#endif
