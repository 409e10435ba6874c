/* ws_io.c — see ws_io.h. */
#include "cluster/ws_io.h"

#include <errno.h>
#include <openssl/evp.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/env.h"
#include "core/log.h"

size_t ws_max_handshake_bytes(void)
{
    static long v;
    if (!v) {
        bool ok = true;
        v = env_long("COLDBREW_WS_MAX_HANDSHAKE_BYTES", WS_MAX_HANDSHAKE_DEFAULT, &ok);
        if (!ok || v < 512 || v > (1 << 20)) {
            log_warn("COLDBREW_WS_MAX_HANDSHAKE_BYTES must be 512..1048576; using %d",
                     WS_MAX_HANDSHAKE_DEFAULT);
            v = WS_MAX_HANDSHAKE_DEFAULT;
        }
    }
    return (size_t)v;
}

static ssize_t failed(wslay_event_context_ptr ctx)
{
    wslay_event_set_error(ctx, errno == EAGAIN || errno == EINTR ? WSLAY_ERR_WOULDBLOCK
                                                                 : WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

ssize_t ws_io_recv(wslay_event_context_ptr ctx, int fd, struct evbuffer *early, uint8_t *buf,
                   size_t len)
{
    if (evbuffer_get_length(early))
        return evbuffer_remove(early, buf, len);
    ssize_t r = read(fd, buf, len);
    if (r > 0)
        return r;
    if (r == 0)
        errno = ECONNRESET; /* EOF: the peer is gone */
    return failed(ctx);
}

ssize_t ws_io_send(wslay_event_context_ptr ctx, int fd, const uint8_t *data, size_t len)
{
    ssize_t r = write(fd, data, len);
    return r >= 0 ? r : failed(ctx);
}

bool ws_head_has_token(const struct http_head *h, const char *name, const char *token)
{
    for (unsigned i = 0; i < h->nheaders; i++)
        if (http_header_is(h, &h->hdr[i], name) &&
            http_token_list_has(h->buf + h->hdr[i].value.off, h->hdr[i].value.len, token))
            return true;
    return false;
}

bool ws_head_value_is(const struct http_head *h, const char *name, const char *value)
{
    size_t len;
    const char *v = http_head_get(h, name, &len);
    return v && len == strlen(value) && !memcmp(v, value, len);
}

bool ws_key_is_valid(const char *key, size_t len)
{
    /* 16 bytes encode to 22 characters and "==". */
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    unsigned char raw[24];
    return EVP_DecodeBlock(raw, (const unsigned char *)key, 24) == 18; /* 16 + 2 padding */
}
