/* libFuzzer target: the queue-proxy's h2c readiness probes
 * (queue-proxy/h2_probe.c) reading what a user container answers:
 * nghttp2's frame and HPACK decoding, the gRPC message framing, the
 * trailers and the protobuf HealthCheckResponse decode; or, for the
 * httpGet probe over h2c, the :status and a dropped body.
 *
 * Input: what the "server" sends on a socketpair, then it half-closes. The
 * check runs until it ends or its input is used up. Byte 0 bit 0 set = a
 * valid server preface (an empty SETTINGS frame) is prepended, so the
 * fuzzer reaches the response frames at once; bit 1 set = the GET probe
 * (with one extra header) instead of the gRPC check. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../queue-proxy/h2_probe.h"

static const uint8_t settings[] = {0, 0, 0, 4, 0, 0, 0, 0, 0};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (size < 1 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv))
        return 0;
    bool preface = data[0] & 1, get = data[0] & 2;
    data++, size--;
    static const struct h2_probe_header hdr = {"K-Kubelet-Probe", "queue"};
    struct h2_probe *g = get ? h2_probe_get(sv[0], "127.0.0.1:8080", "/healthz", &hdr, 1)
                             : h2_probe_grpc(sv[0], "127.0.0.1:8080", "");
    if (g) {
        h2_probe_io(g, false); /* the client's preface and request */
        if (preface)
            (void)!write(sv[1], settings, sizeof settings);
        /* Feed in slices so reads split frames at arbitrary points. */
        size_t off = 0;
        for (int i = 0; i < 64 && h2_probe_io(g, true) == H2_PROBE_PENDING; i++) {
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
        h2_probe_reason(g);
        h2_probe_free(g);
    }
    close(sv[0]);
    close(sv[1]);
    return 0;
}
