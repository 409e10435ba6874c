/* server_h2.h — HTTP/2 exchanges on the server's listeners; server.c's side
 * of the HTTP/2 front codec (server_h2.c). Not for applications: they see
 * struct request and the request_* calls, whatever the protocol. */
#ifndef COLDBREW_SERVER_H2_H
#define COLDBREW_SERVER_H2_H

#include <event2/buffer.h>
#include <stdbool.h>
#include <stddef.h>

struct server;
struct request;
struct http_head;

/* The connection's first bytes are the HTTP/2 preface, or TLS settled on
 * ALPN h2: the socket (its transport, moved from *tp, NULL for plain, and
 * what was read from it) goes to an HTTP/2 connection. */
struct transport;
void server_h2_adopt(struct server *s, int fd, struct transport *tp, const char *peer_ip,
                     int peer_port, struct evbuffer *preread);
/* An HTTP/1.1 request asked for h2c (body-less, HTTP2-Settings given). */
void server_h2_upgrade(struct server *s, int fd, const char *peer_ip, int peer_port,
                       struct evbuffer *preread, struct http_head *head, const char *settings,
                       size_t settings_len);
/* Drain: GOAWAY on every HTTP/2 connection of the listener. */
void server_h2_shutdown_all(struct server *s);

/* The request_* calls for an HTTP/2 exchange. */
void server_h2_reply(struct request *req, int status, const char *content_type, const char *body,
                     size_t len, const char *extra);
void server_h2_end(struct request *req, bool abort);
bool server_h2_output_full(const struct request *req);
const char *server_h2_peer_ip(const struct request *req);
int server_h2_peer_port(const struct request *req);
/* Free-list trimming (idle periods, exit). */
void server_h2_trim(unsigned keep);

#endif
