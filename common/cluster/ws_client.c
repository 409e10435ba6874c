/* ws_client.c — see ws_client.h.
 *
 * States: IDLE (waiting to retry) -> RESOLVING -> CONNECTING -> HANDSHAKE
 * (request sent, llhttp reading the 101 through h1_parser) -> OPEN. Any
 * failure goes through link_down(), the one place that tears the socket
 * down and schedules the retry. */
#include "cluster/ws_client.h"
#include "cluster/ws_io.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/util.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/env.h"
#include "core/err.h"
#include "http/h1_parser.h"
#include "http/http_head.h"
#include "core/io.h"
#include "core/log.h"
#include "core/net.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum ws_state { WS_IDLE, WS_RESOLVING, WS_CONNECTING, WS_HANDSHAKE, WS_OPEN };

struct ws_client {
    struct event_base *base;
    char host[256], path[256];
    int port;
    ws_state_cb on_state;
    void *arg;
    enum ws_state state;
    int fd;
    struct event *rev, *wev, *timer, *ping;
    struct evbuffer *in, *out;
    struct h1_parser parser; /* the 101's, while HANDSHAKE */
    struct http_head *head;  /* the 101 while HANDSHAKE; NULL otherwise */
    size_t head_bytes;       /* read while HANDSHAKE: the size limit counts them all */
    bool warned;             /* a bad handshake was logged since the last open */
    struct evdns_base *dns;
    struct evdns_getaddrinfo_request *dns_req;
    char key[32];
    wslay_event_context_ptr ctx;
    double backoff, ping_interval, read_timeout;
    uint64_t last_heard_ns;
    unsigned connects;
    bool reading, writing;
};

static void link_down(struct ws_client *ws, const char *why);
static void connect_to(struct ws_client *ws, const struct sockaddr *sa, socklen_t len);

/* ---------------------------------------------------------------- wslay glue */

static ssize_t on_wslay_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                             void *user)
{
    (void)flags;
    struct ws_client *ws = user;
    return ws_io_recv(ctx, ws->fd, ws->in, buf, len); /* bytes that came with the 101 first */
}

static ssize_t on_wslay_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                             int flags, void *user)
{
    (void)flags;
    struct ws_client *ws = user;
    return ws_io_send(ctx, ws->fd, data, len);
}

static int on_wslay_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    (void)ctx, (void)user;
    return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

static void on_wslay_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                         void *user)
{
    (void)ctx;
    struct ws_client *ws = user;
    ws->last_heard_ns = clock_now_ns();
    if (arg->opcode == WSLAY_CONNECTION_CLOSE)
        log_info("autoscaler link: server closed it (code %u)", arg->status_code);
    /* Pongs only refresh the deadline; the autoscaler sends no data to us. */
}

static const struct wslay_event_callbacks wslay_callbacks = {
    on_wslay_recv, on_wslay_send, on_wslay_genmask, NULL, NULL, NULL, on_wslay_msg};

/* Arms the events to what wslay wants; tears down when it is done. */
static void pump(struct ws_client *ws)
{
    if (ws->state != WS_OPEN)
        return;
    if (wslay_event_want_write(ws->ctx) && wslay_event_send(ws->ctx) != 0) {
        link_down(ws, "send failed");
        return;
    }
    if (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx)) {
        link_down(ws, "closed");
        return;
    }
    io_arm(ws->wev, &ws->writing, wslay_event_want_write(ws->ctx) != 0);
}

/* ---------------------------------------------------------------- handshake */

void ws_accept_value(const char *key, char *out /* >= 29 */)
{
    char buf[128];
    unsigned char sha[SHA_DIGEST_LENGTH];
    snprintf(buf, sizeof buf, "%s%s", key, WS_GUID);
    SHA1((const unsigned char *)buf, strlen(buf), sha);
    EVP_EncodeBlock((unsigned char *)out, sha, SHA_DIGEST_LENGTH);
}

/* False when the request cannot be queued (memory). */
static bool send_handshake(struct ws_client *ws)
{
    unsigned char raw[16];
    RAND_bytes(raw, sizeof raw);
    EVP_EncodeBlock((unsigned char *)ws->key, raw, sizeof raw);
    if (evbuffer_add_printf(ws->out,
                            "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n",
                            ws->path, ws->host, ws->port, ws->key) < 0)
        return false;
    if (ws->head)
        http_head_release(ws->head);
    ws->head = http_head_acquire();
    ws->head_bytes = 0;
    h1_parser_init(&ws->parser, false, ws_max_handshake_bytes(), HTTP_HEAD_MAX_HEADERS);
    h1_parser_begin(&ws->parser, ws->head);
    ws->state = WS_HANDSHAKE;
    return true;
}

/* A refused 101: worth a warning (a misconfigured URL or a proxy in the
 * way), once per run of failures, so a retry every few seconds does not
 * flood the log. */
static void handshake_failed(struct ws_client *ws, const char *why, unsigned status)
{
    if (!ws->warned && status)
        log_warn("autoscaler link: bad handshake from %s:%d (%s, status %u); retrying", ws->host,
                 ws->port, why, status);
    else if (!ws->warned)
        log_warn("autoscaler link: bad handshake from %s:%d (%s); retrying", ws->host, ws->port,
                 why);
    ws->warned = true;
    link_down(ws, why);
}

/* RFC 6455 4.1, the client's checks of the server's answer. NULL or a
 * static reason (err.h). */
static const char *check_response(const struct ws_client *ws, const struct http_head *h)
{
    char want[40] = "";
    if (h->status != 101)
        return "not 101 Switching Protocols";
    if (!ws_head_has_token(h, "upgrade", "websocket"))
        return "no 'websocket' token in Upgrade";
    if (!ws_head_has_token(h, "connection", "upgrade"))
        return "no 'upgrade' token in Connection";
    ws_accept_value(ws->key, want);
    if (!ws_head_value_is(h, "sec-websocket-accept", want))
        return "wrong Sec-WebSocket-Accept";
    /* We asked for neither: a server that picks one is not speaking to us. */
    if (http_head_find(h, "sec-websocket-extensions"))
        return "unrequested Sec-WebSocket-Extensions";
    if (http_head_find(h, "sec-websocket-protocol"))
        return "unrequested Sec-WebSocket-Protocol";
    return NULL;
}

static void read_handshake(struct ws_client *ws)
{
    switch (h1_parse_head(&ws->parser, ws->in)) {
    case H1_NEED_MORE:
        if (ws->head_bytes > ws_max_handshake_bytes())
            handshake_failed(ws, "response larger than COLDBREW_WS_MAX_HANDSHAKE_BYTES", 0);
        return;
    case H1_ERROR:
        handshake_failed(ws, ws->parser.err ? ws->parser.err : "malformed response", 0);
        return;
    default:
        break;
    }
    const char *bad = check_response(ws, ws->head);
    unsigned status = ws->head->status;
    http_head_release(ws->head);
    ws->head = NULL;
    if (bad) {
        handshake_failed(ws, bad, status);
        return;
    }
    if (wslay_event_context_client_init(&ws->ctx, &wslay_callbacks, ws) != 0) {
        log_error("autoscaler link: %s for the session; retrying", coldbrew_err_no_memory);
        link_down(ws, coldbrew_err_no_memory);
        return;
    }
    ws->state = WS_OPEN;
    ws->connects++;
    ws->backoff = 0.1;
    ws->warned = false;
    ws->last_heard_ns = clock_now_ns();
    struct timeval tv = clock_tv(ws->ping_interval);
    event_add(ws->ping, &tv);
    log_info("autoscaler link: connected to %s:%d", ws->host, ws->port);
    if (ws->on_state)
        ws->on_state(ws->arg, true);
    /* Frames that came in the same read as the 101 are still in ws->in. */
    if (ws->state == WS_OPEN && evbuffer_get_length(ws->in) && wslay_event_recv(ws->ctx) != 0) {
        link_down(ws, "read failed");
        return;
    }
    pump(ws);
}

/* ---------------------------------------------------------------- events */

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct ws_client *ws = arg;
    if (ws->state == WS_HANDSHAKE) {
        size_t before = evbuffer_get_length(ws->in);
        enum io_status st = io_read(ws->in, ws->fd);
        if (st == IO_EOF || st == IO_ERROR) {
            handshake_failed(ws, "closed during handshake", 0);
            return;
        }
        ws->head_bytes += evbuffer_get_length(ws->in) - before;
        read_handshake(ws);
        return;
    }
    if (ws->state != WS_OPEN)
        return;
    if (wslay_event_recv(ws->ctx) != 0) {
        link_down(ws, "read failed");
        return;
    }
    pump(ws);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct ws_client *ws = arg;
    if (ws->state == WS_CONNECTING) {
        int err = net_connect_result(ws->fd);
        if (err) {
            link_down(ws, strerror(err));
            return;
        }
        if (!send_handshake(ws)) {
            log_error("autoscaler link: %s for the handshake; retrying", coldbrew_err_no_memory);
            link_down(ws, coldbrew_err_no_memory);
            return;
        }
        io_arm(ws->rev, &ws->reading, true);
    }
    if (ws->state == WS_HANDSHAKE) {
        if (io_write(ws->out, ws->fd) == IO_ERROR) {
            link_down(ws, strerror(errno));
            return;
        }
        io_arm(ws->wev, &ws->writing, evbuffer_get_length(ws->out) > 0);
        return;
    }
    pump(ws);
}

static void on_ping(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct ws_client *ws = arg;
    if (ws->state != WS_OPEN)
        return;
    double quiet = (double)(clock_now_ns() - ws->last_heard_ns) / 1e9;
    if (quiet > ws->read_timeout) {
        link_down(ws, "no pong within the read deadline");
        return;
    }
    struct wslay_event_msg m = {WSLAY_PING, (const uint8_t *)"", 0};
    wslay_event_queue_msg(ws->ctx, &m);
    pump(ws);
    if (ws->state == WS_OPEN) {
        struct timeval tv = clock_tv(ws->ping_interval);
        event_add(ws->ping, &tv);
    }
}

static void on_dns(int result, struct evutil_addrinfo *res, void *arg)
{
    struct ws_client *ws = arg;
    ws->dns_req = NULL;
    if (result != 0 || !res) {
        link_down(ws, evutil_gai_strerror(result));
        return;
    }
    connect_to(ws, res->ai_addr, (socklen_t)res->ai_addrlen);
    evutil_freeaddrinfo(res);
}

static void dial(struct ws_client *ws)
{
    struct net_addr a;
    if (net_addr_parse(&a, ws->host, ws->port)) {
        connect_to(ws, (struct sockaddr *)&a.ss, a.len);
        return;
    }
    if (!ws->dns)
        ws->dns = evdns_base_new(ws->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!ws->dns) {
        log_error("autoscaler link: %s for a resolver; retrying", coldbrew_err_no_memory);
        link_down(ws, coldbrew_err_no_memory);
        return;
    }
    struct evutil_addrinfo hints = {0};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char port[16];
    snprintf(port, sizeof port, "%d", ws->port);
    ws->state = WS_RESOLVING;
    ws->dns_req = evdns_getaddrinfo(ws->dns, ws->host, port, &hints, on_dns, ws);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    dial(arg);
}

static void connect_to(struct ws_client *ws, const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || (connect(fd, sa, len) < 0 && errno != EINPROGRESS)) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        link_down(ws, strerror(e));
        return;
    }
    net_nodelay(fd);
    ws->fd = fd;
    ws->state = WS_CONNECTING;
    event_assign(ws->rev, ws->base, fd, EV_READ | EV_PERSIST, on_read, ws);
    event_assign(ws->wev, ws->base, fd, EV_WRITE | EV_PERSIST, on_write, ws);
    ws->reading = false;
    ws->writing = false;
    io_arm(ws->wev, &ws->writing, true);
}

static void link_down(struct ws_client *ws, const char *why)
{
    bool was_open = ws->state == WS_OPEN;
    if (ws->fd >= 0) {
        io_arm(ws->rev, &ws->reading, false);
        io_arm(ws->wev, &ws->writing, false);
        close(ws->fd);
        ws->fd = -1;
    }
    if (ws->ctx) {
        wslay_event_context_free(ws->ctx);
        ws->ctx = NULL;
    }
    if (ws->head) {
        http_head_release(ws->head);
        ws->head = NULL;
    }
    event_del(ws->ping);
    evbuffer_drain(ws->in, evbuffer_get_length(ws->in));
    evbuffer_drain(ws->out, evbuffer_get_length(ws->out));
    ws->state = WS_IDLE;
    /* Knative's backoff: 100 ms × 1.3 per try, ±50% jitter; capped at 5 s here. */
    double jitter = 0.5 + (double)(rand() % 1000) / 1000.0;
    struct timeval tv = clock_tv(ws->backoff * jitter);
    event_add(ws->timer, &tv);
    ws->backoff = ws->backoff * 1.3 > 5 ? 5 : ws->backoff * 1.3;
    if (was_open) {
        log_warn("autoscaler link: lost (%s); reconnecting", why);
        if (ws->on_state)
            ws->on_state(ws->arg, false);
    } else {
        log_debug("autoscaler link: connect to %s:%d failed (%s); retrying", ws->host, ws->port,
                  why);
    }
}

/* ---------------------------------------------------------------- API */

struct ws_client *ws_client_new(struct event_base *base, const char *url, ws_state_cb on_state,
                                void *arg, char *detail, size_t cap)
{
    struct ws_client *ws = xcalloc(1, sizeof *ws); /* start-up (alloc.h) */
    ws->port = 80;
    if (strncmp(url, "ws://", 5) || sscanf(url + 5, "%255[^:/]:%d", ws->host, &ws->port) < 1 ||
        ws->port <= 0 || ws->port > 65535) {
        snprintf(detail, cap, "not a ws:// URL: %s", url);
        free(ws);
        return NULL;
    }
    const char *slash = strchr(url + 5, '/');
    snprintf(ws->path, sizeof ws->path, "%s", slash ? slash : "/");
    ws->base = base;
    ws->on_state = on_state;
    ws->arg = arg;
    ws->fd = -1;
    ws->backoff = 0.1;
    ws->ping_interval = env_double("COLDBREW_WS_PING_SECONDS", 10.0 / 3, NULL);
    ws->read_timeout = env_double("COLDBREW_WS_READ_TIMEOUT_SECONDS", 10, NULL);
    ws->in = X_CHECK(evbuffer_new());
    ws->out = X_CHECK(evbuffer_new());
    ws->rev = X_CHECK(event_new(base, -1, 0, on_read, ws));
    ws->wev = X_CHECK(event_new(base, -1, 0, on_write, ws));
    ws->timer = X_CHECK(evtimer_new(base, on_retry, ws));
    ws->ping = X_CHECK(evtimer_new(base, on_ping, ws));
    return ws;
}

void ws_client_start(struct ws_client *ws)
{
    dial(ws);
}

bool ws_client_is_open(const struct ws_client *ws)
{
    return ws && ws->state == WS_OPEN;
}

unsigned ws_client_connects(const struct ws_client *ws)
{
    return ws->connects;
}

bool ws_client_send_binary(struct ws_client *ws, const uint8_t *data, size_t len)
{
    if (!ws_client_is_open(ws))
        return false;
    struct wslay_event_msg m = {WSLAY_BINARY_FRAME, data, len};
    if (wslay_event_queue_msg(ws->ctx, &m) != 0)
        return false;
    pump(ws);
    return true;
}

void ws_client_free(struct ws_client *ws)
{
    if (!ws)
        return;
    if (ws->state == WS_OPEN) {
        /* Say goodbye (1000, normal closure); best effort, we are exiting. */
        wslay_event_queue_close(ws->ctx, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
        wslay_event_send(ws->ctx);
    }
    if (ws->dns_req)
        evdns_getaddrinfo_cancel(ws->dns_req);
    if (ws->fd >= 0)
        close(ws->fd);
    if (ws->ctx)
        wslay_event_context_free(ws->ctx);
    if (ws->head)
        http_head_release(ws->head);
    event_free(ws->rev);
    event_free(ws->wev);
    event_free(ws->timer);
    event_free(ws->ping);
    evbuffer_free(ws->in);
    evbuffer_free(ws->out);
    if (ws->dns)
        evdns_base_free(ws->dns, 0);
    free(ws);
}
