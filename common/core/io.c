/* io.c — see io.h. */
#include "core/io.h"

#include <errno.h>
#include <unistd.h>

enum io_status io_read(struct evbuffer *buf, int fd)
{
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(buf, IO_READ_CHUNK, &v, 1) < 1) {
        errno = ENOMEM;
        return IO_ERROR;
    }
    ssize_t r = read(fd, v.iov_base, v.iov_len);
    if (r > 0) {
        v.iov_len = (size_t)r;
        evbuffer_commit_space(buf, &v, 1);
        return IO_OK;
    }
    if (r == 0)
        return IO_EOF;
    return errno == EAGAIN || errno == EINTR ? IO_AGAIN : IO_ERROR;
}

enum io_status io_write(struct evbuffer *buf, int fd)
{
    while (evbuffer_get_length(buf)) {
        int n = evbuffer_write(buf, fd);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? IO_AGAIN : IO_ERROR;
        if (n == 0)
            return IO_AGAIN;
    }
    return IO_OK;
}
