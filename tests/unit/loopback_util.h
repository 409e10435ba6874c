/* loopback_util.h — what the unit tests that play a server on loopback
 * share: a listener on 127.0.0.1 on a free port, and waiting (the loop
 * turning) for a request head on whichever connection it comes. */
#ifndef LOOPBACK_UTIL_H
#define LOOPBACK_UTIL_H

#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "core/net.h"
#include "ws_test_util.h"

/* A listening socket on 127.0.0.1; its port in *port. -1 on failure. */
static inline int lo_listen(int backlog, int *port)
{
    int fd = net_listen("127.0.0.1", 0, backlog);
    if (fd < 0)
        return -1;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    char ip[64];
    net_peer_ip(&ss, ip, sizeof ip, port);
    return fd;
}

/* Turns the loop (1 ms a turn, at most `ms` turns) until a request head
 * ("\r\n\r\n") has come, on a new connection (accepted into *sfd, closing
 * the previous one) or on *sfd (a pooled one). The head goes into buf, NUL
 * terminated. */
static inline bool lo_await_head(struct event_base *base, int lfd, int *sfd, char *buf, size_t cap,
                                 int ms)
{
    size_t got = 0;
    buf[0] = 0;
    for (int i = 0; i < ms; i++) {
        turn(base, 1);
        int nfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (nfd >= 0) {
            if (*sfd >= 0)
                close(*sfd);
            *sfd = nfd;
            got = 0;
        }
        if (*sfd < 0)
            continue;
        ssize_t r = read(*sfd, buf + got, cap - 1 - got);
        if (r > 0) {
            got += (size_t)r;
            buf[got] = 0;
            if (strstr(buf, "\r\n\r\n"))
                return true;
        }
    }
    return false;
}

/* The end of a test: its sockets closed (sfd may be -1), the loop turned
 * so deferred frees run, and the loop freed. */
static inline void lo_teardown(struct event_base *base, int lfd, int sfd)
{
    if (sfd >= 0)
        close(sfd);
    close(lfd);
    turn(base, 2);
    loop_free();
}

#endif
