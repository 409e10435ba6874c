/* readiness.h — probing the user container (Knative §4).
 *
 * SERVING_READINESS_PROBE holds a corev1.Probe as JSON (or an array when
 * ENABLE_MULTI_CONTAINER_PROBES=true). Each health request from kubelet or
 * the activator runs a fresh probe; concurrent checks join the one in
 * flight (single-flight) and share its result. All probes run in parallel
 * and all must pass.
 *
 * Modes: periodSeconds == 0 is "aggressive": try now and every 50 ms, 100 ms
 * per attempt, until successThreshold consecutive successes (the count
 * persists across checks and resets on failure) or 10 s. periodSeconds > 0
 * is one attempt with timeoutSeconds.
 *
 * Handlers: tcpSocket (connect), httpGet (GET with the probe's headers and
 * User-Agent "kube-probe//", ready on 200-399; redirects are not followed: a
 * 3xx is ready, as it is within Go's accepted range), and grpc
 * (grpc.health.v1.Health/Check over h2c, ready on SERVING; h2_probe.h).
 *
 * ENABLE_HTTP2_AUTO_DETECTION (Knative's autodetect-http2 feature): an
 * httpGet probe first sends an h2c GET without the probe's headers; if that
 * is ready, an h2c GET with them decides, otherwise an HTTP/1.1 GET without
 * them does (Knative's detectHTTPProtocolVersion and HTTPProbe, v1.23).
 * Nothing is cached: every attempt detects again, as Knative's does. */
#ifndef QP_READINESS_H
#define QP_READINESS_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

struct readiness_waiter {
    LIST_ENTRY(readiness_waiter) link;
    void (*done)(struct readiness_waiter *w, bool ready);
    bool waiting;
};

struct probe_spec;
struct probe_attempt;

struct readiness {
    struct event_base *base;
    struct probe_spec *specs;
    unsigned nspecs;
    bool aggressive;
    bool autodetect_h2; /* ENABLE_HTTP2_AUTO_DETECTION: httpGet probes try h2c first */
    double interval;    /* aggressive mode's poll interval (50 ms, or the override) */
    unsigned success_threshold;
    unsigned consecutive;
    bool running;
    uint64_t round_start_ns;
    unsigned pending;
    bool round_ok;
    unsigned failures;
    struct event *retry;
    LIST_HEAD(, readiness_waiter) waiters;
    LIST_HEAD(, probe_attempt) attempts; /* in flight, freed by readiness_free */
};

/* Parses the env value; false with err filled when the JSON is invalid. */
bool readiness_init(struct readiness *r, struct event_base *base, const char *json, bool multi,
                    bool autodetect_h2, int user_port, char *err, unsigned errcap);
void readiness_check(struct readiness *r, struct readiness_waiter *w);
void readiness_cancel(struct readiness *r, struct readiness_waiter *w);
void readiness_free(struct readiness *r);

#endif
