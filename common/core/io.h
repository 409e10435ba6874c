/* io.h — moving bytes between a socket and an evbuffer.
 *
 * Reads go straight into space reserved in the evbuffer (no bounce buffer,
 * and no FIONREAD ioctl as evbuffer_read() would do per call); writes hand
 * the whole chain to writev via evbuffer_write. Both are one syscall in the
 * common case. io_arm() keeps an event's registration in step with what we
 * want, so epoll_ctl happens only on a real change. */
#ifndef COLDBREW_IO_H
#define COLDBREW_IO_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#define IO_READ_CHUNK 16384

enum io_status {
    IO_OK,    /* read: bytes arrived; write: everything was written */
    IO_AGAIN, /* read: nothing yet; write: bytes remain (the socket is full) */
    IO_EOF,   /* read: the peer closed its side */
    IO_ERROR, /* errno tells */
};

enum io_status io_read(struct evbuffer *buf, int fd);
enum io_status io_write(struct evbuffer *buf, int fd);

static inline void io_arm(struct event *ev, bool *armed, bool want)
{
    if (want == *armed)
        return;
    if (want)
        event_add(ev, NULL);
    else
        event_del(ev);
    *armed = want;
}

#endif
