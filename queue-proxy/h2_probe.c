/* h2_probe.c — see h2_probe.h. */
#include "h2_probe.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "health.pb-c.h"

enum h2_probe_kind { KIND_GRPC, KIND_GET };

struct h2_probe {
    enum h2_probe_kind kind;
    int fd;
    nghttp2_session *h2;
    int32_t stream;
    enum h2_probe_result result;
    const char *reason;
    /* The request: the 5-byte gRPC message prefix and the encoded
     * HealthCheckRequest, sent as the stream's only DATA. */
    uint8_t req[5 + 256];
    size_t req_len, req_sent;
    /* The response message, collected up to H2_PROBE_MAX_MESSAGE. */
    uint8_t msg[5 + H2_PROBE_MAX_MESSAGE];
    size_t msg_len;
    int http_status;
    int grpc_status; /* -1 until a grpc-status field arrives */
    char grpc_message[128];
};

static void end(struct h2_probe *g, enum h2_probe_result r, const char *why)
{
    if (g->result != H2_PROBE_PENDING)
        return;
    g->result = r;
    g->reason = why;
}

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *arg)
{
    (void)s, (void)flags;
    struct h2_probe *g = arg;
    ssize_t n = write(g->fd, data, len);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? NGHTTP2_ERR_WOULDBLOCK
                                                 : NGHTTP2_ERR_CALLBACK_FAILURE;
    return n;
}

static ssize_t on_read_body(nghttp2_session *s, int32_t stream, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    (void)s, (void)stream, (void)src;
    struct h2_probe *g = arg;
    size_t n = g->req_len - g->req_sent;
    if (n > len)
        n = len;
    memcpy(buf, g->req + g->req_sent, n);
    g->req_sent += n;
    if (g->req_sent == g->req_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    (void)s, (void)flags;
    struct h2_probe *g = arg;
    if (f->hd.stream_id != g->stream)
        return 0;
    /* Headers and trailers alike: a trailers-only answer carries grpc-status
     * in its one header block. */
    if (nlen == 7 && !memcmp(name, ":status", 7)) {
        g->http_status = atoi((const char *)value);
    } else if (nlen == 11 && !memcmp(name, "grpc-status", 11)) {
        g->grpc_status = atoi((const char *)value);
    } else if (nlen == 12 && !memcmp(name, "grpc-message", 12)) {
        size_t n = vlen < sizeof g->grpc_message - 1 ? vlen : sizeof g->grpc_message - 1;
        memcpy(g->grpc_message, value, n);
        g->grpc_message[n] = 0;
    }
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t stream, const uint8_t *data,
                   size_t len, void *arg)
{
    (void)s, (void)flags;
    struct h2_probe *g = arg;
    if (stream != g->stream || g->kind == KIND_GET)
        return 0; /* a GET's body is read and dropped */
    if (len > sizeof g->msg - g->msg_len) {
        end(g, H2_PROBE_FAILED, "response message too large");
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    memcpy(g->msg + g->msg_len, data, len);
    g->msg_len += len;
    return 0;
}

/* The stream is over: decide from what arrived. */
static void decide(struct h2_probe *g)
{
    if (g->kind == KIND_GET) {
        /* Go's isHTTPProbeReady: 200-399. */
        if (g->http_status >= 200 && g->http_status < 400)
            end(g, H2_PROBE_READY, "ready");
        else
            end(g, H2_PROBE_NOT_READY,
                g->http_status ? "HTTP status not in 200-399" : "no :status");
        return;
    }
    if (g->http_status != 200) {
        end(g, H2_PROBE_FAILED, "HTTP status is not 200");
        return;
    }
    if (g->grpc_status != 0) {
        end(g, H2_PROBE_FAILED,
            g->grpc_status < 0     ? "no grpc-status"
            : g->grpc_status == 12 ? "UNIMPLEMENTED: the container has no grpc.health.v1.Health"
            : g->grpc_message[0]   ? g->grpc_message
                                   : "grpc-status is not OK");
        return;
    }
    if (g->msg_len < 5 || g->msg[0] != 0) {
        end(g, H2_PROBE_FAILED, "no uncompressed response message");
        return;
    }
    uint32_t mlen = (uint32_t)g->msg[1] << 24 | (uint32_t)g->msg[2] << 16 |
                    (uint32_t)g->msg[3] << 8 | g->msg[4];
    if (mlen != g->msg_len - 5) {
        end(g, H2_PROBE_FAILED, "response message length does not match");
        return;
    }
    Grpc__Health__V1__HealthCheckResponse *resp =
        grpc__health__v1__health_check_response__unpack(NULL, mlen, g->msg + 5);
    if (!resp) {
        end(g, H2_PROBE_FAILED, "response is not a HealthCheckResponse");
        return;
    }
    bool serving = resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
    if (serving)
        end(g, H2_PROBE_READY, "SERVING");
    else
        end(g, H2_PROBE_NOT_READY, "status is not SERVING");
}

static int on_stream_close(nghttp2_session *s, int32_t stream, uint32_t code, void *arg)
{
    (void)s;
    struct h2_probe *g = arg;
    if (stream != g->stream)
        return 0;
    if (code != NGHTTP2_NO_ERROR)
        end(g, H2_PROBE_FAILED, "stream reset by the peer");
    else
        decide(g);
    return 0;
}

/* A client session on fd; NULL when memory runs out. */
static struct h2_probe *session_new(int fd, enum h2_probe_kind kind)
{
    struct h2_probe *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->kind = kind;
    g->fd = fd;
    g->grpc_status = -1;
    g->result = H2_PROBE_PENDING;
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb)) {
        free(g);
        return NULL;
    }
    nghttp2_session_callbacks_set_send_callback(cb, on_send);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int rv = nghttp2_session_client_new(&g->h2, cb, g);
    nghttp2_session_callbacks_del(cb);
    if (rv || nghttp2_submit_settings(g->h2, NGHTTP2_FLAG_NONE, NULL, 0)) {
        h2_probe_free(g);
        return NULL;
    }
    return g;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE             \
    }

struct h2_probe *h2_probe_grpc(int fd, const char *authority, const char *service)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    size_t n = grpc__health__v1__health_check_request__get_packed_size(&req);
    if (n > sizeof((struct h2_probe *)0)->req - 5)
        return NULL; /* the service name is bounded where the probe spec is parsed */
    struct h2_probe *g = session_new(fd, KIND_GRPC);
    if (!g)
        return NULL;
    grpc__health__v1__health_check_request__pack(&req, g->req + 5);
    g->req[1] = (uint8_t)(n >> 24), g->req[2] = (uint8_t)(n >> 16);
    g->req[3] = (uint8_t)(n >> 8), g->req[4] = (uint8_t)n;
    g->req_len = 5 + n;
    const nghttp2_nv nva[] = {
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":path", "/grpc.health.v1.Health/Check"),
        NV(":authority", authority),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "kube-probe//"),
    };
    nghttp2_data_provider body = {.read_callback = on_read_body};
    g->stream = nghttp2_submit_request(g->h2, NULL, nva, sizeof nva / sizeof nva[0], &body, NULL);
    if (g->stream < 0) {
        h2_probe_free(g);
        return NULL;
    }
    return g;
}

struct h2_probe *h2_probe_get(int fd, const char *authority, const char *path,
                              const struct h2_probe_header *hdrs, size_t n)
{
    if (n > H2_PROBE_MAX_FIELDS - 5)
        return NULL;
    struct h2_probe *g = session_new(fd, KIND_GET);
    if (!g)
        return NULL;
    nghttp2_nv nva[H2_PROBE_MAX_FIELDS] = {
        NV(":method", "GET"),
        NV(":scheme", "http"),
        NV(":path", path),
        NV(":authority", authority),
        NV("user-agent", "kube-probe//"),
    };
    size_t nv = 5;
    /* Names lower-cased into one arena (HTTP/2 refuses upper case). */
    char names[2048];
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(hdrs[i].name);
        if (used + nl > sizeof names) {
            h2_probe_free(g);
            return NULL;
        }
        for (size_t k = 0; k < nl; k++) {
            char c = hdrs[i].name[k];
            names[used + k] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        nva[nv++] = (nghttp2_nv){(uint8_t *)names + used, (uint8_t *)hdrs[i].value, nl,
                                 strlen(hdrs[i].value), NGHTTP2_NV_FLAG_NONE};
        used += nl;
    }
    /* nghttp2 copies the fields when the request is submitted. */
    g->stream = nghttp2_submit_request(g->h2, NULL, nva, nv, NULL, NULL);
    if (g->stream < 0) {
        h2_probe_free(g);
        return NULL;
    }
    return g;
}
#undef NV

enum h2_probe_result h2_probe_io(struct h2_probe *g, bool readable)
{
    while (readable && g->result == H2_PROBE_PENDING) {
        uint8_t buf[4096];
        ssize_t n = read(g->fd, buf, sizeof buf);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (n <= 0) {
            end(g, H2_PROBE_FAILED, n == 0 ? "connection closed" : "read failed");
            break;
        }
        if (nghttp2_session_mem_recv(g->h2, buf, (size_t)n) < 0)
            end(g, H2_PROBE_FAILED, "not an HTTP/2 answer");
        if ((size_t)n < sizeof buf)
            break;
    }
    if (g->result == H2_PROBE_PENDING && nghttp2_session_send(g->h2))
        end(g, H2_PROBE_FAILED, "write failed");
    if (g->result == H2_PROBE_PENDING && !nghttp2_session_want_read(g->h2) &&
        !nghttp2_session_want_write(g->h2))
        end(g, H2_PROBE_FAILED, "connection ended before the answer (GOAWAY)");
    return g->result;
}

bool h2_probe_wants_write(const struct h2_probe *g)
{
    return nghttp2_session_want_write(g->h2);
}

const char *h2_probe_reason(const struct h2_probe *g)
{
    return g->reason ? g->reason : "pending";
}

int h2_probe_status(const struct h2_probe *g)
{
    return g->http_status;
}

void h2_probe_free(struct h2_probe *g)
{
    if (!g)
        return;
    nghttp2_session_del(g->h2);
    free(g);
}
