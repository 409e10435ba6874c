/* libFuzzer target: the autoscaler's stats WebSocket server (common/cluster/ws_server.c)
 * and what it hands on: the HTTP upgrade handshake, wslay's frame decoding
 * (masking, fragmentation, control frames, the message size cap) and the
 * protobuf WireStatMessages decode the autoscaler runs on every message.
 *
 * Input: byte 0 bit 0 set = a valid handshake is prepended (so the fuzzer
 * reaches the frames at once); the rest is what the client sends, then it
 * half-closes. The server runs on a socketpair in a real libevent loop until
 * it drops the connection or the loop goes quiet. */
#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "stat.pb-c.h"
#include "cluster/statpb.h"
#include "cluster/ws_server.h"

static const char hs[] = "GET / HTTP/1.1\r\nHost: autoscaler\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n";

static void on_message(void *arg, const uint8_t *data, size_t len)
{
    (void)arg;
    Metrics__WireStatMessages *m = metrics__wire_stat_messages__unpack(NULL, len, data);
    if (m)
        metrics__wire_stat_messages__free_unpacked(m, NULL);
    struct statpb s;
    char name[128];
    statpb_decode(data, len, &s, name, sizeof name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct event_base *base;
    if (!base) {
        base = event_base_new();
        log_set_level("error");
    }
    if (size < 1)
        return 0;
    bool prepend = data[0] & 1;
    data++, size--;
    const char *err = NULL;
    struct ws_server *s = ws_server_open(base, "127.0.0.1", 0, on_message, NULL, &err);
    if (!s)
        return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        ws_server_free(s);
        return 0;
    }
    ws_server_adopt(s, sv[0]);
    if (prepend && write(sv[1], hs, sizeof hs - 1) < 0) {
    }
    if (size && write(sv[1], data, size) < 0) {
    }
    shutdown(sv[1], SHUT_WR);
    char sink[65536];
    for (int i = 0; i < 64 && ws_server_clients(s); i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        while (read(sv[1], sink, sizeof sink) > 0) {
        }
    }
    ws_server_free(s);
    close(sv[1]);
    return 0;
}
