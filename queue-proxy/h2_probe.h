/* h2_probe.h — one readiness request over h2c, for the readiness prober.
 *
 * Two kinds, both as Knative's prober sends them (contract §4): insecure
 * h2c with prior knowledge, User-Agent "kube-probe//", on a connected,
 * non-blocking socket of the caller's:
 *   - a gRPC health check: grpc.health.v1.Health/Check{service}. Ready
 *     means the call ended with grpc-status 0 and a HealthCheckResponse
 *     whose status is SERVING; UNIMPLEMENTED, NOT_FOUND, NOT_SERVING, a
 *     reset stream, a GOAWAY, a peer that is not HTTP/2 or a response
 *     message over H2_PROBE_MAX_MESSAGE bytes are all "not ready", each with
 *     a reason (the messages are protobuf-c's, common/proto/health.proto);
 *   - a GET of an httpGet probe's path (ENABLE_HTTP2_AUTO_DETECTION): ready
 *     on a :status of 200-399, as Go's prober decides; the body is read and
 *     dropped.
 * nghttp2 does the framing, HPACK and flow control.
 *
 * Ownership: the caller owns the socket and the probe; h2_probe_free()
 * releases the probe and never closes the socket. The caller drives it from
 * its own event: h2_probe_io() after each readiness of the socket, then
 * re-arms writing while h2_probe_wants_write() says so. */
#ifndef QP_H2_PROBE_H
#define QP_H2_PROBE_H

#include <stdbool.h>
#include <stddef.h>

/* A HealthCheckResponse is two bytes; anything much larger is not one. */
#define H2_PROBE_MAX_MESSAGE 1024

enum h2_probe_result {
    H2_PROBE_PENDING,   /* still talking */
    H2_PROBE_READY,     /* SERVING (gRPC) or 200-399 (GET) */
    H2_PROBE_NOT_READY, /* answered, but not ready (see the reason) */
    H2_PROBE_FAILED,    /* no usable answer: I/O, protocol or gRPC error */
};

struct h2_probe;

/* An extra request header of an httpGet probe (httpHeaders). */
struct h2_probe_header {
    const char *name, *value;
};

/* Starts a gRPC health check of `service` on fd (connected). `authority` is
 * host:port. NULL when memory runs out or the service name is too long. */
struct h2_probe *h2_probe_grpc(int fd, const char *authority, const char *service);
/* Starts a GET of `path` with the extra headers (names as given; HTTP/2
 * wants them lower-case, so they are lower-cased). NULL when memory runs out
 * or the request does not fit H2_PROBE_MAX_FIELDS. */
#define H2_PROBE_MAX_FIELDS 64
struct h2_probe *h2_probe_get(int fd, const char *authority, const char *path,
                              const struct h2_probe_header *hdrs, size_t n);
/* Reads what the socket holds (when readable) and writes what it can. */
enum h2_probe_result h2_probe_io(struct h2_probe *p, bool readable);
bool h2_probe_wants_write(const struct h2_probe *p);
/* Why the probe ended as it did: a static string or the peer's grpc-message. */
const char *h2_probe_reason(const struct h2_probe *p);
/* The :status that arrived (0 before one did). */
int h2_probe_status(const struct h2_probe *p);
void h2_probe_free(struct h2_probe *p);

#endif
