/* Tests for common/http/h2_server.c, in process: the server end of a socketpair
 * is an h2_conn; the client end is a real nghttp2 client session (or raw
 * bytes, for the attack shapes), and the loop is turned by hand. */
#include "unit.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <llhttp.h>
#include <nghttp2/nghttp2.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/h2_server.h"
#include "http/http_head.h"
#include "core/log.h"
#include "core/loop.h"

static struct event_base *base;
static struct h2_limits lim;

/* ---------------------------------------------------------------- the application */

enum app_mode { APP_ECHO, APP_HOLD, APP_STREAM_BODY };
static enum app_mode mode;
static struct h2_stream *held[16];
static int nheld, cancels, closes;
static char seen_method[16], seen_path[64], seen_host[64], seen_x[32];

static void on_cancel(struct h2_stream *s)
{
    (void)s;
    cancels++;
}

/* APP_STREAM_BODY: echo the request body as it arrives, trailers at the end. */
static void on_body(struct h2_stream *s)
{
    size_t n = h2_unread(s->in);
    if (n) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_remove_buffer(s->in, b, n);
        h2_stream_write(s, b);
        evbuffer_free(b);
        h2_stream_consumed(s, n);
    }
    if (s->in_done) {
        struct h2_header_out t[] = {{"grpc-status", "0", 11, 1}};
        h2_stream_end(s, t, 1);
    }
}

static void on_request(struct h2_stream *s, void *arg)
{
    (void)arg;
    struct http_head *h = s->head;
    snprintf(seen_method, sizeof seen_method, "%s", llhttp_method_name(h->method));
    snprintf(seen_path, sizeof seen_path, "%.*s", (int)h->url.len, http_str_ptr(h, h->url));
    size_t len;
    const char *v = http_head_get(h, "host", &len);
    snprintf(seen_host, sizeof seen_host, "%.*s", v ? (int)len : 0, v ? v : "");
    v = http_head_get(h, "x-a", &len);
    snprintf(seen_x, sizeof seen_x, "%.*s", v ? (int)len : 0, v ? v : "");
    switch (mode) {
    case APP_ECHO:
        h2_stream_reply(s, 200, "text/plain", seen_path, strlen(seen_path));
        break;
    case APP_HOLD:
        s->cancel = on_cancel;
        s->holder = s;
        if (nheld < 16)
            held[nheld++] = s;
        break;
    case APP_STREAM_BODY:
        s->cancel = on_cancel;
        s->on_input = on_body;
        s->holder = s;
        h2_stream_respond(s, 200, NULL, 0, false);
        on_body(s);
        break;
    }
}

static void on_conn_close(struct h2_conn *c, void *arg)
{
    (void)c, (void)arg;
    closes++;
}

static const struct h2_server_ops ops = {on_request, on_conn_close};

/* Lets the server side finish what it has (closes, deferred frees). */
static void pump_quiet(void)
{
    for (int i = 0; i < 20; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    loop_flush_deferred();
}

/* ---------------------------------------------------------------- the client */

struct client {
    int fd;
    nghttp2_session *s;
    int status[64];
    char body[64][256];
    size_t body_len[64];
    char trailer[64][32];
    uint32_t rst[64];
    bool closed[64];
    bool goaway;
    uint32_t goaway_code;
    int32_t goaway_last;
    bool eof;
};

static ssize_t c_send(nghttp2_session *s, const uint8_t *d, size_t n, int f, void *arg)
{
    (void)s, (void)f;
    struct client *c = arg;
    ssize_t w = write(c->fd, d, n);
    return w < 0 ? NGHTTP2_ERR_WOULDBLOCK : w;
}

static int c_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *n, size_t nl,
                    const uint8_t *v, size_t vl, uint8_t fl, void *arg)
{
    (void)s, (void)fl;
    struct client *c = arg;
    int id = f->hd.stream_id & 63;
    if (nl == 7 && !memcmp(n, ":status", 7))
        c->status[id] = atoi((const char *)v);
    if (nl == 11 && !memcmp(n, "grpc-status", 11))
        snprintf(c->trailer[id], sizeof c->trailer[id], "%.*s", (int)vl, v);
    return 0;
}

static int c_data(nghttp2_session *s, uint8_t fl, int32_t id, const uint8_t *d, size_t n, void *arg)
{
    (void)s, (void)fl;
    struct client *c = arg;
    id &= 63;
    size_t room = sizeof c->body[id] - 1 - c->body_len[id];
    memcpy(c->body[id] + c->body_len[id], d, n < room ? n : room);
    c->body_len[id] += n < room ? n : room;
    return 0;
}

static int c_close(nghttp2_session *s, int32_t id, uint32_t code, void *arg)
{
    (void)s;
    struct client *c = arg;
    c->closed[id & 63] = true;
    c->rst[id & 63] = code;
    return 0;
}

static int c_frame(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    (void)s;
    struct client *c = arg;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = true;
        c->goaway_code = f->goaway.error_code;
        c->goaway_last = f->goaway.last_stream_id;
    }
    return 0;
}

static struct client *client_new(int fd)
{
    struct client *c = calloc(1, sizeof *c);
    c->fd = fd;
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_send_callback(cb, c_send);
    nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_frame);
    nghttp2_session_client_new(&c->s, cb, c);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, NULL, 0);
    return c;
}

static void client_free(struct client *c)
{
    nghttp2_session_del(c->s);
    close(c->fd);
    free(c);
}

/* Turns both sides until `done` holds or the rounds run out. */
static void pump(struct client *c, bool (*done)(struct client *, int), int arg)
{
    for (int i = 0; i < 300; i++) {
        nghttp2_session_send(c->s);
        event_base_loop(base, EVLOOP_NONBLOCK);
        uint8_t buf[65536];
        ssize_t n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0)
            c->eof = true;
        if (n > 0)
            nghttp2_session_mem_recv(c->s, buf, (size_t)n);
        loop_flush_deferred();
        if (done && done(c, arg))
            return;
        if (c->eof && n <= 0)
            return;
    }
}

static bool stream_closed(struct client *c, int id)
{
    return c->closed[id & 63];
}

static int32_t request(struct client *c, const char *method, const char *path, bool end,
                       nghttp2_data_provider *body)
{
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nva[] = {NV(":method", method), NV(":scheme", "http"), NV(":path", path),
                        NV(":authority", "svc.example:8012"), NV("x-a", "b")};
#undef NV
    (void)end;
    return nghttp2_submit_request(c->s, NULL, nva, 5, body, NULL);
}

static struct h2_conn *server_side(int *client_fd)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    *client_fd = sv[1];
    struct h2_conn *c = h2_conn_new(base, sv[0], "test", 0, &lim, &ops, NULL, NULL);
    assert_non_null(c);
    return c;
}

static void reset_app(enum app_mode m)
{
    mode = m;
    nheld = cancels = closes = 0;
    seen_method[0] = seen_path[0] = seen_host[0] = seen_x[0] = 0;
}

/* ---------------------------------------------------------------- tests */

static void get_gets_a_semantic_head_and_an_answer(void **state)
{
    (void)state;
    reset_app(APP_ECHO);
    int fd;
    server_side(&fd);
    struct client *c = client_new(fd);
    int32_t id = request(c, "GET", "/hello?x=1", true, NULL);
    pump(c, stream_closed, id);
    assert_string_equal(seen_method, "GET");
    assert_string_equal(seen_path, "/hello?x=1");
    assert_string_equal(seen_host, "svc.example:8012"); /* :authority became Host */
    assert_string_equal(seen_x, "b");
    assert_int_equal(c->status[id], 200);
    assert_int_equal(c->body_len[id], 10);
    assert_memory_equal(c->body[id], "/hello?x=1", 10);
    assert_int_equal(c->rst[id], NGHTTP2_NO_ERROR);
    client_free(c);
    pump_quiet();
}

static const char *upload = "0123456789abcdef";
static size_t upload_off;
static ssize_t upload_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *fl,
                           nghttp2_data_source *src, void *arg)
{
    (void)s, (void)id, (void)src, (void)arg;
    size_t n = strlen(upload) - upload_off;
    if (n > len)
        n = len;
    if (n > 5)
        n = 5; /* several DATA frames */
    memcpy(buf, upload + upload_off, n);
    upload_off += n;
    if (upload_off == strlen(upload))
        *fl |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void body_streams_both_ways_with_trailers(void **state)
{
    (void)state;
    reset_app(APP_STREAM_BODY);
    int fd;
    server_side(&fd);
    struct client *c = client_new(fd);
    upload_off = 0;
    nghttp2_data_provider dp = {.read_callback = upload_read};
    int32_t id = request(c, "POST", "/echo", false, &dp);
    pump(c, stream_closed, id);
    assert_int_equal(c->status[id], 200);
    assert_int_equal(c->body_len[id], 16);
    assert_memory_equal(c->body[id], upload, 16);
    assert_string_equal(c->trailer[id], "0");
    assert_int_equal(c->rst[id], NGHTTP2_NO_ERROR);
    assert_int_equal(cancels, 0);
    client_free(c);
    pump_quiet();
}

static bool n_held(struct client *c, int n)
{
    (void)c;
    return nheld >= n;
}

static void client_reset_cancels_the_holder(void **state)
{
    (void)state;
    reset_app(APP_HOLD);
    int fd;
    server_side(&fd);
    struct client *c = client_new(fd);
    int32_t id = request(c, "GET", "/", true, NULL);
    pump(c, n_held, 1);
    assert_int_equal(nheld, 1);
    nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    pump(c, NULL, 0);
    assert_int_equal(cancels, 1);
    client_free(c);
    pump_quiet();
}

static void oversized_header_list_gets_431(void **state)
{
    (void)state;
    reset_app(APP_ECHO);
    int fd;
    server_side(&fd);
    struct client *c = client_new(fd);
    static char big[3000];
    memset(big, 'v', sizeof big - 1);
    nghttp2_nv nva[] = {
        {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, 0},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
        {(uint8_t *)":path", (uint8_t *)"/", 5, 1, 0},
        {(uint8_t *)":authority", (uint8_t *)"a", 10, 1, 0},
        {(uint8_t *)"x-big", (uint8_t *)big, 5, sizeof big - 1, 0},
    };
    int32_t id = nghttp2_submit_request(c->s, NULL, nva, 5, NULL, NULL);
    pump(c, stream_closed, id);
    assert_int_equal(c->status[id], 431);
    assert_string_equal(seen_path, ""); /* never reached the application */
    /* The connection lives on. */
    int32_t id2 = request(c, "GET", "/after", true, NULL);
    pump(c, stream_closed, id2);
    assert_int_equal(c->status[id2], 200);
    client_free(c);
    pump_quiet();
}

static void bad_preface_gets_goaway_and_close(void **state)
{
    (void)state;
    reset_app(APP_ECHO);
    int fd;
    server_side(&fd);
    const char junk[] = "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\ngarbage";
    assert_int_equal(write(fd, junk, sizeof junk - 1), (ssize_t)sizeof junk - 1);
    bool eof = false;
    for (int i = 0; i < 100 && !eof; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        eof = n == 0;
    }
    assert_true(eof);
    assert_int_equal(closes, 1);
    close(fd);
    pump_quiet();
}

static void streams_past_the_limit_are_refused(void **state)
{
    (void)state;
    reset_app(APP_HOLD);
    int fd;
    server_side(&fd);
    struct client *c = client_new(fd);
    pump(c, NULL, 0); /* settings exchanged: the client knows the limit of 4 */
    int32_t ids[6];
    for (int i = 0; i < 6; i++)
        ids[i] = request(c, "GET", "/", true, NULL);
    pump(c, n_held, 6);
    assert_int_equal(nheld, 4);
    /* nghttp2's client holds back streams over the peer's limit itself; what
     * matters is the server never holds more than 4. Now answer them all. */
    for (int i = 0; i < nheld; i++)
        h2_stream_reply(held[i], 204, NULL, "", 0);
    pump(c, stream_closed, ids[5]);
    assert_int_equal(nheld, 6);
    client_free(c);
    pump_quiet();
}

static void raw_streams_past_the_limit_get_refused_stream(void **state)
{
    (void)state;
    reset_app(APP_HOLD);
    int fd;
    server_side(&fd);
    /* A client that ignores SETTINGS_MAX_CONCURRENT_STREAMS: nghttp2's client
     * told the peer's limit is huge, so it sends all six at once. */
    struct client *c = client_new(fd);
    int32_t ids[6];
    for (int i = 0; i < 6; i++)
        ids[i] = request(c, "GET", "/", true, NULL);
    nghttp2_session_send(c->s); /* before the server's SETTINGS arrive */
    pump(c, stream_closed, ids[5]);
    assert_true(nheld <= 4);
    int refused = 0;
    for (int i = 0; i < 6; i++)
        refused += c->closed[ids[i]] && c->rst[ids[i]] == NGHTTP2_REFUSED_STREAM;
    assert_int_equal(refused, 6 - nheld);
    client_free(c);
    pump_quiet();
}

static void rapid_reset_gets_goaway(void **state)
{
    (void)state;
    reset_app(APP_HOLD);
    int fd;
    server_side(&fd);
    struct client *c = client_new(fd);
    pump(c, NULL, 0);
    for (int i = 0; i < 60 && !c->goaway; i++) {
        int32_t id = request(c, "GET", "/", true, NULL);
        nghttp2_session_send(c->s);
        nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
        pump(c, NULL, 0);
    }
    assert_true(c->goaway);
    /* nghttp2's rate limit answers INTERNAL_ERROR (as upstream's fix does). */
    assert_int_equal(c->goaway_code, NGHTTP2_INTERNAL_ERROR);
    client_free(c);
    pump_quiet();
}

static void shutdown_sends_goaway_and_lets_streams_finish(void **state)
{
    (void)state;
    reset_app(APP_HOLD);
    int fd;
    struct h2_conn *conn = server_side(&fd);
    struct client *c = client_new(fd);
    int32_t id = request(c, "GET", "/slow", true, NULL);
    pump(c, n_held, 1);
    h2_conn_shutdown(conn);
    pump(c, NULL, 0);
    assert_true(c->goaway);
    assert_int_equal(c->goaway_last, id);
    assert_int_equal(c->goaway_code, NGHTTP2_NO_ERROR);
    assert_int_equal(closes, 0); /* the stream in flight keeps it open */
    h2_stream_reply(held[0], 200, "text/plain", "done", 4);
    pump(c, NULL, 0);
    assert_int_equal(c->status[id], 200);
    assert_int_equal(closes, 1);
    assert_int_equal(cancels, 0);
    client_free(c);
    pump_quiet();
}

static void output_is_bounded_for_a_reader_that_never_reads(void **state)
{
    (void)state;
    reset_app(APP_HOLD);
    int fd;
    server_side(&fd);
    struct client *c = client_new(fd);
    int32_t id = request(c, "GET", "/", true, NULL);
    pump(c, n_held, 1);
    struct h2_stream *s = held[0];
    h2_stream_respond(s, 200, NULL, 0, false);
    /* The client's window is 64 KiB; the app writes until told the stream is full. */
    struct evbuffer *b = evbuffer_new();
    static char chunk[16384];
    int writes = 0;
    while (!h2_stream_output_full(s) && writes < 1000) {
        evbuffer_add(b, chunk, sizeof chunk);
        h2_stream_write(s, b);
        event_base_loop(base, EVLOOP_NONBLOCK);
        writes++;
    }
    evbuffer_free(b);
    assert_true(h2_stream_output_full(s));
    assert_true(writes < 20); /* 64 KiB window + the watermark, not more */
    (void)id;
    client_free(c);
    pump_quiet();
    assert_int_equal(cancels, 1); /* the connection went with the stream in flight */
}

/* ---------------------------------------------------------------- attack shapes on raw frames */

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static size_t frame(uint8_t *out, uint8_t type, uint8_t flags, uint32_t sid, const uint8_t *p,
                    size_t n)
{
    out[0] = (uint8_t)(n >> 16), out[1] = (uint8_t)(n >> 8), out[2] = (uint8_t)n;
    out[3] = type, out[4] = flags;
    out[5] = (uint8_t)(sid >> 24), out[6] = (uint8_t)(sid >> 16), out[7] = (uint8_t)(sid >> 8),
    out[8] = (uint8_t)sid;
    if (n)
        memcpy(out + 9, p, n);
    return 9 + n;
}

/* Sends raw bytes and turns the loop until the server closes; returns the
 * GOAWAY error code it sent (or -1 when none came). */
static long raw_until_goaway(int fd, const uint8_t *data, size_t n)
{
    size_t off = 0;
    uint8_t in[1 << 16];
    size_t have = 0;
    bool eof = false;
    for (int i = 0; i < 400 && !eof; i++) {
        if (off < n) {
            ssize_t w = write(fd, data + off, n - off);
            if (w > 0)
                off += (size_t)w;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        ssize_t r = recv(fd, in + have, sizeof in - have, MSG_DONTWAIT);
        if (r > 0)
            have += (size_t)r;
        eof = r == 0;
    }
    for (size_t i = 0; i + 9 <= have;) {
        size_t len = (size_t)in[i] << 16 | (size_t)in[i + 1] << 8 | in[i + 2];
        if (in[i + 3] == NGHTTP2_GOAWAY && i + 9 + 8 <= have)
            return (long)((uint32_t)in[i + 13] << 24 | (uint32_t)in[i + 14] << 16 |
                          (uint32_t)in[i + 15] << 8 | in[i + 16]);
        i += 9 + len;
    }
    return -1;
}

static uint8_t attack[1 << 20];

static size_t start_attack(void)
{
    memcpy(attack, preface, sizeof preface - 1);
    size_t n = sizeof preface - 1;
    return n + frame(attack + n, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
}

static void hpack_bomb_gets_goaway_enhance_your_calm(void **state)
{
    (void)state;
    reset_app(APP_ECHO);
    int fd;
    server_side(&fd);
    size_t n = start_attack();
    /* Stream 1 puts one 4,000-byte header into the HPACK table (and gets a
     * 431 for it); stream 3 refers to it 200 times in 203 bytes: 800 KB
     * decoded, past 4x the 2 KiB limit. */
    uint8_t block[8192];
    size_t b = 0;
    block[b++] = 0x82, block[b++] = 0x86, block[b++] = 0x84; /* GET http / */
    block[b++] = 0x40, block[b++] = 5;
    memcpy(block + b, "x-big", 5), b += 5;
    block[b++] = 0x7f, block[b++] = 0xa1, block[b++] = 0x1e; /* length 4000 */
    memset(block + b, 'v', 4000), b += 4000;
    n += frame(attack + n, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 1,
               block, b);
    b = 0;
    block[b++] = 0x82, block[b++] = 0x86, block[b++] = 0x84;
    for (int i = 0; i < 200; i++)
        block[b++] = 0xbe; /* indexed: dynamic entry 62, the 4,000-byte header */
    n += frame(attack + n, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 3,
               block, b);
    assert_int_equal(raw_until_goaway(fd, attack, n), NGHTTP2_ENHANCE_YOUR_CALM);
    assert_int_equal(closes, 1);
    assert_string_equal(seen_path, ""); /* neither reached the application */
    close(fd);
    pump_quiet();
}

static void continuation_flood_gets_goaway(void **state)
{
    (void)state;
    reset_app(APP_ECHO);
    int fd;
    server_side(&fd);
    size_t n = start_attack();
    uint8_t first[] = {0x82, 0x86, 0x84};
    n += frame(attack + n, NGHTTP2_HEADERS, 0, 1, first, sizeof first);
    uint8_t lit[] = {0x00, 1, 'x', 1, 'y'}; /* x: y, literal without indexing */
    for (int i = 0; i < 100; i++)
        n += frame(attack + n, NGHTTP2_CONTINUATION, 0, 1, lit, sizeof lit);
    /* Cut off with a GOAWAY after max_continuations (CVE-2024-27316). */
    assert_int_equal(raw_until_goaway(fd, attack, n), NGHTTP2_ENHANCE_YOUR_CALM);
    assert_int_equal(closes, 1);
    close(fd);
    pump_quiet();
}

static void settings_flood_gets_goaway(void **state)
{
    (void)state;
    reset_app(APP_ECHO);
    int fd;
    server_side(&fd);
    size_t n = start_attack();
    uint8_t entries[6 * 100];
    for (int i = 0; i < 100; i++) {
        uint8_t *e = entries + 6 * i;
        e[0] = 0, e[1] = NGHTTP2_SETTINGS_ENABLE_PUSH, e[2] = e[3] = e[4] = 0, e[5] = 0;
    }
    n += frame(attack + n, NGHTTP2_SETTINGS, 0, 0, entries, sizeof entries);
    assert_int_equal(raw_until_goaway(fd, attack, n), NGHTTP2_ENHANCE_YOUR_CALM);
    close(fd);
    pump_quiet();
}

static void frame_over_max_frame_size_gets_goaway(void **state)
{
    (void)state;
    reset_app(APP_ECHO);
    int fd;
    server_side(&fd);
    size_t n = start_attack();
    static uint8_t big[20000]; /* SETTINGS_MAX_FRAME_SIZE is 16,384 */
    n += frame(attack + n, NGHTTP2_DATA, 0, 1, big, sizeof big);
    assert_int_equal(raw_until_goaway(fd, attack, n), NGHTTP2_FRAME_SIZE_ERROR);
    assert_int_equal(closes, 1);
    close(fd);
    pump_quiet();
}

/* A client that sends PINGs and never reads their ACKs: the server's output
 * stops growing at the watermark (it stops reading), the ACKs nghttp2 holds
 * pass COLDBREW_H2_MAX_OUTBOUND_ACK, and the connection gets GOAWAY. */
static void ping_flood_without_reading_gets_goaway(void **state)
{
    (void)state;
    reset_app(APP_ECHO);
    int fd;
    server_side(&fd);
    size_t n = start_attack();
    uint8_t opaque[8] = {0};
    while (n + 17 < sizeof attack)
        n += frame(attack + n, NGHTTP2_PING, 0, 0, opaque, 8);
    /* Write all we can without reading. */
    size_t off = 0;
    for (int i = 0; i < 2000 && off < n; i++) {
        ssize_t w = write(fd, attack + off, n - off);
        if (w > 0)
            off += (size_t)w;
        else if (w < 0 && errno != EAGAIN)
            break; /* the server cut the connection */
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    /* Then read: somewhere after the ACKs comes a GOAWAY, then EOF. */
    uint8_t buf[1 << 16];
    size_t have = 0, scanned = 0;
    long code = -1;
    bool eof = false;
    for (int i = 0; i < 20000 && !eof && code < 0; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        ssize_t r = recv(fd, buf + have, sizeof buf - have, MSG_DONTWAIT);
        if (r == 0)
            eof = true;
        if (r > 0)
            have += (size_t)r;
        while (have - scanned >= 9) {
            size_t len =
                (size_t)buf[scanned] << 16 | (size_t)buf[scanned + 1] << 8 | buf[scanned + 2];
            if (have - scanned < 9 + len)
                break;
            if (buf[scanned + 3] == NGHTTP2_GOAWAY)
                code =
                    (long)((uint32_t)buf[scanned + 13] << 24 | (uint32_t)buf[scanned + 14] << 16 |
                           (uint32_t)buf[scanned + 15] << 8 | buf[scanned + 16]);
            scanned += 9 + len;
        }
        memmove(buf, buf + scanned, have - scanned);
        have -= scanned;
        scanned = 0;
    }
    assert_true(off < n); /* the server stopped reading: the flood did not all go in */
    assert_int_equal(code, NGHTTP2_ENHANCE_YOUR_CALM);
    close(fd);
    pump_quiet();
}

static int setup(void **state)
{
    (void)state;
    base = loop_init();
    signal(SIGPIPE, SIG_IGN); /* the attack tests write to connections the server cut */
    log_set_level("error");
    h2_limits_from_env(&lim, 2048, 50, 65536);
    lim.max_concurrent_streams = 4;
    lim.reset_burst = 10;
    lim.reset_rate = 1;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(get_gets_a_semantic_head_and_an_answer),
        cmocka_unit_test(body_streams_both_ways_with_trailers),
        cmocka_unit_test(client_reset_cancels_the_holder),
        cmocka_unit_test(oversized_header_list_gets_431),
        cmocka_unit_test(bad_preface_gets_goaway_and_close),
        cmocka_unit_test(streams_past_the_limit_are_refused),
        cmocka_unit_test(raw_streams_past_the_limit_get_refused_stream),
        cmocka_unit_test(rapid_reset_gets_goaway),
        cmocka_unit_test(shutdown_sends_goaway_and_lets_streams_finish),
        cmocka_unit_test(output_is_bounded_for_a_reader_that_never_reads),
        cmocka_unit_test(hpack_bomb_gets_goaway_enhance_your_calm),
        cmocka_unit_test(continuation_flood_gets_goaway),
        cmocka_unit_test(settings_flood_gets_goaway),
        cmocka_unit_test(frame_over_max_frame_size_gets_goaway),
        cmocka_unit_test(ping_flood_without_reading_gets_goaway),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
