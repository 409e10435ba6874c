/* libFuzzer target: the queue-proxy's gRPC readiness probe
 * (queue-proxy/grpc_health.c) reading what a user container answers:
 * nghttp2's frame and HPACK decoding, the gRPC message framing, the
 * trailers and the protobuf HealthCheckResponse decode.
 *
 * Input: what the "server" sends on a socketpair, then it half-closes. The
 * check runs until it ends or its input is used up. Byte 0 bit 0 set = a
 * valid server preface (an empty SETTINGS frame) is prepended, so the
 * fuzzer reaches the response frames at once. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../queue-proxy/grpc_health.h"

static const uint8_t settings[] = {0, 0, 0, 4, 0, 0, 0, 0, 0};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (size < 1 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv))
        return 0;
    bool preface = data[0] & 1;
    data++, size--;
    struct grpc_health *g = grpc_health_start(sv[0], "127.0.0.1:8080", "");
    if (g) {
        grpc_health_io(g, false); /* the client's preface and request */
        if (preface)
            (void)!write(sv[1], settings, sizeof settings);
        /* Feed in slices so reads split frames at arbitrary points. */
        size_t off = 0;
        for (int i = 0; i < 64 && grpc_health_io(g, true) == GRPC_HEALTH_PENDING; i++) {
            char sink[65536];
            while (read(sv[1], sink, sizeof sink) > 0) /* keep the client's writes flowing */
                ;
            if (off < size) {
                size_t n = size - off < 512 ? size - off : 512;
                ssize_t w = write(sv[1], data + off, n);
                off += w > 0 ? (size_t)w : 0;
            } else {
                shutdown(sv[1], SHUT_WR);
            }
        }
        grpc_health_reason(g);
        grpc_health_free(g);
    }
    close(sv[0]);
    close(sv[1]);
    return 0;
}
