/* ws_server.c — see ws_server.h.
 *
 * A connection is HANDSHAKE (head != NULL: llhttp, through h1_parser, reads
 * the upgrade request) then OPEN (ctx != NULL: wslay drives the socket
 * directly). Every failure goes through conn_close(); a bad handshake
 * through reject(), which answers the status gorilla/websocket's Upgrader
 * (Knative's autoscaler) would and logs why. */
#include "cluster/ws_server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "core/alloc.h"
#include "core/err.h"
#include "http/h1_parser.h"
#include "http/http_head.h"
#include "core/io.h"
#include "core/log.h"
#include "core/net.h"
#include "cluster/ws_client.h"
#include "cluster/ws_io.h"

struct ws_conn {
    struct ws_server *srv;
    int fd;
    struct event *rev, *wev;
    struct event *deadline; /* the handshake must arrive within WS_SERVER_HANDSHAKE_SECONDS */
    struct evbuffer *in, *out;
    struct h1_parser parser;     /* the upgrade request's; unused once open */
    struct http_head *head;      /* the upgrade request while HANDSHAKE; NULL after */
    size_t head_bytes;           /* read while HANDSHAKE: the size limit counts them all */
    wslay_event_context_ptr ctx; /* NULL until the 101 went out */
    bool writing;
    struct ws_conn *prev, *next;
};

struct ws_server {
    struct event_base *base;
    int fd, port;
    struct event *accept_ev;
    ws_message_cb on_message;
    void *arg;
    struct ws_conn *conns;
    unsigned nconns;
};

static void conn_close(struct ws_conn *c, const char *why)
{
    if (why)
        log_debug("stats websocket: connection closed (%s)", why);
    struct ws_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    event_free(c->rev);
    event_free(c->wev);
    event_free(c->deadline);
    evbuffer_free(c->in);
    evbuffer_free(c->out);
    if (c->head)
        http_head_release(c->head);
    if (c->ctx)
        wslay_event_context_free(c->ctx);
    close(c->fd);
    free(c);
}

/* ---------------------------------------------------------------- wslay glue */

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    struct ws_conn *c = user;
    return ws_io_recv(ctx, c->fd, c->in, buf, len); /* frames that came with the handshake first */
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    (void)flags;
    struct ws_conn *c = user;
    return ws_io_send(ctx, c->fd, data, len);
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    (void)ctx;
    struct ws_conn *c = user;
    if (arg->opcode == WSLAY_BINARY_FRAME || arg->opcode == WSLAY_TEXT_FRAME)
        c->srv->on_message(c->srv->arg, arg->msg, arg->msg_length);
}

static const struct wslay_event_callbacks callbacks = {on_recv, on_send, NULL,  NULL,
                                                       NULL,    NULL,    on_msg};

/* Arms the events to what wslay wants; closes when it wants nothing. */
static void pump(struct ws_conn *c)
{
    if (wslay_event_want_write(c->ctx) && wslay_event_send(c->ctx) != 0) {
        conn_close(c, "send failed");
        return;
    }
    if (!wslay_event_want_read(c->ctx) && !wslay_event_want_write(c->ctx)) {
        conn_close(c, "closed");
        return;
    }
    io_arm(c->wev, &c->writing, wslay_event_want_write(c->ctx) != 0);
}

/* ---------------------------------------------------------------- handshake */

/* Answers a bad handshake and closes. `extra` is more header lines (each
 * ending in CRLF) or "". */
static void reject(struct ws_conn *c, int status, const char *why, const char *extra)
{
    char resp[256];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n", status,
                     http_status_text(status), extra);
    /* Best effort: a fresh socket's buffer takes this, and we close anyway. */
    (void)!write(c->fd, resp, (size_t)n);
    log_warn("stats websocket: refused a handshake with %d (%s)", status, why);
    conn_close(c, NULL);
}

/* The checks of RFC 6455 4.2.1, in gorilla's order and with its statuses. */
static bool handshake_ok(struct ws_conn *c, const struct http_head *h)
{
    size_t klen;
    const char *key = http_head_get(h, "sec-websocket-key", &klen);
    if (!ws_head_has_token(h, "connection", "upgrade"))
        reject(c, 400, "no 'upgrade' token in Connection", "");
    else if (!ws_head_has_token(h, "upgrade", "websocket"))
        reject(c, 400, "no 'websocket' token in Upgrade", "");
    else if (h->method != HTTP_GET)
        reject(c, 405, "method is not GET", "");
    else if (h->major != 1 || h->minor < 1)
        reject(c, 400, "not HTTP/1.1", "");
    else if (!ws_head_value_is(h, "sec-websocket-version", "13"))
        reject(c, 400, "Sec-WebSocket-Version is not 13", "Sec-WebSocket-Version: 13\r\n");
    else if (!key || !ws_key_is_valid(key, klen))
        reject(c, 400, "missing or malformed Sec-WebSocket-Key", "");
    else if (h->chunked || (h->has_content_length && h->content_length))
        /* A body would be read as frames: nothing legitimate sends one. */
        reject(c, 400, "upgrade request with a body", "");
    else
        return true;
    return false;
}

static void read_handshake(struct ws_conn *c)
{
    switch (h1_parse_head(&c->parser, c->in)) {
    case H1_NEED_MORE:
        /* Everything read so far is head; the parser's own limit counts
         * only the parts it keeps, this one every byte. */
        if (c->head_bytes > ws_max_handshake_bytes())
            reject(c, 431, "handshake larger than COLDBREW_WS_MAX_HANDSHAKE_BYTES", "");
        return;
    case H1_ERROR:
        reject(c, c->parser.err_status == 431 ? 431 : 400, c->parser.err, "");
        return;
    default:
        break;
    }
    if (!handshake_ok(c, c->head))
        return;
    size_t klen;
    const char *key = http_head_get(c->head, "sec-websocket-key", &klen);
    char k[32], accept[40];
    snprintf(k, sizeof k, "%.*s", (int)klen, key);
    ws_accept_value(k, accept);
    http_head_release(c->head);
    c->head = NULL;
    /* The session before the 101, so that no memory can still be answered
     * with a 503 (alloc.h). */
    if (wslay_event_context_server_init(&c->ctx, &callbacks, c) != 0 ||
        evbuffer_add_printf(c->out,
                            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                            accept) < 0) {
        reject(c, 503, coldbrew_err_no_memory, "");
        return;
    }
    if (io_write(c->out, c->fd) != IO_OK) {
        /* A fresh socket's buffer always takes a 101. */
        conn_close(c, "could not send the 101");
        return;
    }
    evtimer_del(c->deadline);
    wslay_event_config_set_max_recv_msg_length(c->ctx, WS_SERVER_MAX_MESSAGE);
    /* Frames that came in the same read as the head are still in c->in. */
    if (evbuffer_get_length(c->in) && wslay_event_recv(c->ctx) != 0) {
        conn_close(c, "read failed");
        return;
    }
    pump(c);
}

/* ---------------------------------------------------------------- events */

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct ws_conn *c = arg;
    if (!c->ctx) {
        size_t before = evbuffer_get_length(c->in);
        enum io_status st = io_read(c->in, c->fd);
        if (st == IO_EOF || st == IO_ERROR) {
            conn_close(c, "closed during handshake");
            return;
        }
        c->head_bytes += evbuffer_get_length(c->in) - before;
        read_handshake(c);
        return;
    }
    if (wslay_event_recv(c->ctx) != 0) {
        conn_close(c, "read failed");
        return;
    }
    pump(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct ws_conn *c = arg;
    if (c->ctx)
        pump(c);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct ws_conn *c = arg;
    log_warn("stats websocket: no handshake within %d s; closing", WS_SERVER_HANDSHAKE_SECONDS);
    conn_close(c, NULL);
}

/* A connection that could not be set up (memory, alloc.h): a best-effort
 * 503 before any 101, a log line, and what was made is freed. */
static void refuse_no_memory(struct ws_conn *c, int fd)
{
    static const char resp[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                               "Connection: close\r\n\r\n";
    log_error("stats websocket: %s for a new connection; answered 503", coldbrew_err_no_memory);
    (void)!write(fd, resp, sizeof resp - 1);
    close(fd);
    if (!c)
        return;
    if (c->rev)
        event_free(c->rev);
    if (c->wev)
        event_free(c->wev);
    if (c->in)
        evbuffer_free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    free(c);
}

void ws_server_adopt(struct ws_server *s, int fd)
{
    if (s->nconns >= WS_SERVER_MAX_CONNS) {
        log_warn("stats websocket: %u connections open (WS_SERVER_MAX_CONNS); refusing one",
                 s->nconns);
        close(fd);
        return;
    }
    net_nodelay(fd);
    struct ws_conn *c = calloc(1, sizeof *c);
    if (!c || !(c->in = evbuffer_new()) || !(c->out = evbuffer_new()) ||
        !(c->rev = event_new(s->base, fd, EV_READ | EV_PERSIST, on_read, c)) ||
        !(c->wev = event_new(s->base, fd, EV_WRITE | EV_PERSIST, on_write, c)) ||
        !(c->deadline = evtimer_new(s->base, on_deadline, c))) {
        refuse_no_memory(c, fd);
        return;
    }
    c->srv = s;
    c->fd = fd;
    c->head = http_head_acquire();
    h1_parser_init(&c->parser, true, ws_max_handshake_bytes(), HTTP_HEAD_MAX_HEADERS);
    h1_parser_begin(&c->parser, c->head);
    struct timeval tv = {WS_SERVER_HANDSHAKE_SECONDS, 0};
    evtimer_add(c->deadline, &tv);
    event_add(c->rev, NULL);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    struct ws_server *s = arg;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        ws_server_adopt(s, fd);
    }
}

struct ws_server *ws_server_open(struct event_base *base, const char *host, int port,
                                 ws_message_cb on_message, void *arg, const char **err)
{
    int fd = net_listen(host, port, 128);
    if (fd < 0) {
        *err = strerror(errno); /* static for a known errno (err.h) */
        return NULL;
    }
    struct ws_server *s = xcalloc(1, sizeof *s); /* start-up (alloc.h) */
    s->base = base;
    s->fd = fd;
    s->on_message = on_message;
    s->arg = arg;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    s->accept_ev = X_CHECK(event_new(base, fd, EV_READ | EV_PERSIST, on_accept, s));
    event_add(s->accept_ev, NULL);
    return s;
}

int ws_server_port(const struct ws_server *s)
{
    return s->port;
}

unsigned ws_server_clients(const struct ws_server *s)
{
    return s->nconns;
}

void ws_server_free(struct ws_server *s)
{
    if (!s)
        return;
    while (s->conns)
        conn_close(s->conns, NULL);
    event_free(s->accept_ev);
    close(s->fd);
    free(s);
}
