/* ws_test_util.h — what the WebSocket unit tests share: an event-loop turn,
 * frame builders (RFC 6455 5.2) and reads with a deadline. */
#ifndef WS_TEST_UTIL_H
#define WS_TEST_UTIL_H

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* Runs the loop `n` times without blocking, 1 ms apart. */
static inline void turn(struct event_base *base, int n)
{
    for (int i = 0; i < n; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
}

/* One frame, FIN set when `fin`; masked (as a client must) when `mask`.
 * Payloads up to 65535 bytes. Returns the frame's length. */
static inline size_t ws_frame(uint8_t *out, bool fin, int opcode, bool mask, const void *payload,
                              size_t len)
{
    const uint8_t *p = payload;
    static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    size_t n = 0;
    out[n++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    uint8_t m = mask ? 0x80 : 0;
    if (len < 126) {
        out[n++] = (uint8_t)(m | len);
    } else {
        out[n++] = m | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    }
    if (mask) {
        memcpy(out + n, key, 4);
        n += 4;
    }
    for (size_t i = 0; i < len; i++)
        out[n + i] = mask ? p[i] ^ key[i % 4] : p[i];
    return n + len;
}

/* Writes all of buf to a (possibly non-blocking) socket. */
static inline bool write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    for (int tries = 0; len && tries < 10000; tries++) {
        ssize_t r = write(fd, p, len);
        if (r > 0) {
            p += r;
            len -= (size_t)r;
        } else if (r < 0 && errno != EAGAIN && errno != EINTR) {
            return false;
        } else {
            struct pollfd pf = {fd, POLLOUT, 0};
            poll(&pf, 1, 10);
        }
    }
    return len == 0;
}

/* Reads what is there on a non-blocking socket into buf (at most cap) while
 * turning the loop, until `want` bytes or `ms` ms passed. Returns the bytes
 * read; *eof is set when the peer closed. */
static inline size_t read_some(struct event_base *base, int fd, void *buf, size_t cap, size_t want,
                               int ms, bool *eof)
{
    size_t got = 0;
    if (eof)
        *eof = false;
    for (int i = 0; i < ms && got < want; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        ssize_t r = read(fd, (char *)buf + got, cap - got);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r == 0) {
            if (eof)
                *eof = true;
            break;
        }
        usleep(1000);
    }
    return got;
}

#endif
