/* ws_io.c — see ws_io.h. */
#include "ws_io.h"

#include <errno.h>
#include <unistd.h>

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
