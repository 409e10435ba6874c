/* grpc_health.h — one gRPC health check over h2c, for the readiness prober.
 *
 * Sends grpc.health.v1.Health/Check{service} on a connected, non-blocking
 * socket and reads the answer, as Knative's gRPC readiness probe does
 * (contract §4): insecure h2c with prior knowledge, User-Agent
 * "kube-probe//". nghttp2 does the framing, HPACK and flow control; the
 * messages are protobuf-c's (common/proto/health.proto).
 *
 * Ready means the call ended with grpc-status 0 and a HealthCheckResponse
 * whose status is SERVING; UNIMPLEMENTED, NOT_FOUND, NOT_SERVING, a reset
 * stream, a GOAWAY, a peer that is not HTTP/2 or a response message over
 * GRPC_HEALTH_MAX_MESSAGE bytes are all "not ready", each with a reason.
 *
 * Ownership: the caller owns the socket and the check; grpc_health_free()
 * releases the check and never closes the socket. The caller drives it from
 * its own event: grpc_health_io() after each readiness of the socket, then
 * re-arms writing while grpc_health_wants_write() says so. */
#ifndef QP_GRPC_HEALTH_H
#define QP_GRPC_HEALTH_H

#include <stdbool.h>

/* A HealthCheckResponse is two bytes; anything much larger is not one. */
#define GRPC_HEALTH_MAX_MESSAGE 1024

enum grpc_health_result {
    GRPC_HEALTH_PENDING,     /* still talking */
    GRPC_HEALTH_SERVING,     /* ready */
    GRPC_HEALTH_NOT_SERVING, /* answered, but not SERVING (see the reason) */
    GRPC_HEALTH_FAILED,      /* no usable answer: I/O, protocol or gRPC error */
};

struct grpc_health;

/* Starts a check of `service` on fd (connected). `authority` is host:port.
 * NULL when memory runs out. */
struct grpc_health *grpc_health_start(int fd, const char *authority, const char *service);
/* Reads what the socket holds (when readable) and writes what it can. */
enum grpc_health_result grpc_health_io(struct grpc_health *g, bool readable);
bool grpc_health_wants_write(const struct grpc_health *g);
/* Why the check ended as it did: a static string or the peer's grpc-message. */
const char *grpc_health_reason(const struct grpc_health *g);
void grpc_health_free(struct grpc_health *g);

#endif
