/* net.h — socket helpers: listeners, non-blocking connects, addresses.
 * All sockets returned are non-blocking and close-on-exec. */
#ifndef COLDBREW_NET_H
#define COLDBREW_NET_H

#include <netinet/in.h>
#include <stdbool.h>
#include <sys/socket.h>

/* A resolved TCP destination (numeric only: loopback and pod IPs). */
struct net_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[64]; /* "127.0.0.1:8080" or "[::1]:8080" */
};

/* host may be NULL/"" for all interfaces. Returns fd or -1 with errno set. */
int net_listen(const char *host, int port, int backlog);
/* Numeric host + port into *out; false if host is not an IP literal. */
bool net_addr_parse(struct net_addr *out, const char *host, int port);
/* Starts a non-blocking connect; returns fd (connect may still be in
 * progress: wait for writability, then net_connect_result). -1 on failure. */
int net_connect_start(const struct net_addr *to);
/* 0 when the connect completed, else the errno it failed with. */
int net_connect_result(int fd);
/* The peer's IP (no port) as text into buf; "" when unknown. */
void net_peer_ip(const struct sockaddr_storage *ss, char *buf, size_t cap, int *port);
/* TCP_NODELAY on; errors ignored (not a TCP socket in tests, say). */
void net_nodelay(int fd);

#endif
