/* otlp.h — exporting spans and metrics to an OpenTelemetry collector (OTLP).
 *
 * What Knative's OTel SDK setup does for the queue-proxy and the activator
 * (contract §1c: OBSERVABILITY_CONFIG's "tracing" and "requestMetrics"
 * blocks), without slowing the request path:
 *
 *  - otlp_add_span() copies an ended, sampled span into a bounded ring
 *    (COLDBREW_OTLP_QUEUE_SPANS): O(1), no syscall, no allocation. When the
 *    ring is full the span is dropped and counted.
 *  - A batch (up to COLDBREW_OTLP_BATCH_SPANS) leaves every
 *    COLDBREW_OTLP_BATCH_MS, or at once when a full batch is waiting,
 *    encoded as an ExportTraceServiceRequest. At most one export per signal
 *    is in flight; a batch that fails (refused, non-2xx / grpc-status not
 *    OK, timeout after COLDBREW_OTLP_TIMEOUT_MS, reset, collector down) is
 *    dropped and counted, never retried: memory stays bounded by the ring.
 *    After a failure the signal backs off (the batch interval, doubling up
 *    to 60 s; reset by a success): spans wait in the ring, the overflow is
 *    counted, and a sick collector costs one connection attempt per backoff.
 *  - Drops are logged at most once a minute (with the counts since the
 *    last line), from the exporter's timer, never from the request path.
 *  - Metrics are cumulative series (a name, a kind, up to OTLP_SERIES_ATTRS
 *    attributes), at most COLDBREW_OTLP_MAX_SERIES of them; each export
 *    interval sends every series as Sum, Gauge or Histogram points. A
 *    failed metrics export loses nothing (the next one carries the totals).
 *  - Protocols: "http/protobuf" (POST, Content-Type application/x-protobuf,
 *    over http_client.c) and "grpc" (a unary call over h2c with
 *    h2_client.c: 5-byte message prefix, grpc-status checked).
 *
 * Ownership: the caller owns the exporter (otlp_free). Spans are copied in;
 * the caller's span may be reused at once. Metric and series handles
 * belong to the exporter and live until otlp_free(); callers keep them
 * (look a series up once, then add to it: O(1)).
 * Single-threaded: every call runs on the exporter's event loop. */
#ifndef COLDBREW_OTLP_H
#define COLDBREW_OTLP_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "telemetry/trace.h"

enum otlp_protocol {
    OTLP_NONE,          /* "none" (Knative's default), or unset */
    OTLP_GRPC,          /* "grpc" */
    OTLP_HTTP_PROTOBUF, /* "http/protobuf" */
    OTLP_UNSUPPORTED,   /* "stdout", "prometheus": valid in Knative, not exported here */
};

/* Where one signal goes. */
struct otlp_endpoint {
    enum otlp_protocol protocol;
    char proto_name[16]; /* as configured, for logs */
    char host[256];      /* as configured (a name or an IP literal) */
    int port;
    char path[256]; /* http/protobuf: the request path */
};

/* OBSERVABILITY_CONFIG, the parts the exporter reads. */
struct otlp_config {
    struct otlp_endpoint traces;  /* "tracing" */
    double sampling_rate;         /* tracing.samplingRate */
    struct otlp_endpoint metrics; /* "requestMetrics" */
    double metrics_interval;      /* requestMetrics.exportInterval, seconds */
};

/* Parses OBSERVABILITY_CONFIG (JSON; NULL or "" means the defaults: all
 * "none"). NULL on success, else why (a static text or err). Endpoint forms:
 * http/protobuf "http://host:4318/v1/traces" (no path: "/v1/traces" or
 * "/v1/metrics"; no port: 4318; no scheme: http), grpc "host:4317" or
 * "http://host:4317" (no port: 4317). "https://" is refused: the exporter
 * has no TLS client yet. An empty endpoint falls back to OTel's
 * OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT (as is), then
 * OTEL_EXPORTER_OTLP_ENDPOINT (a base: http/protobuf appends /v1/traces or
 * /v1/metrics), then OTel's default, localhost. */
const char *otlp_config_parse(const char *json, struct otlp_config *out, char *err, size_t cap);
/* One endpoint string for `protocol` (exposed for tests). */
const char *otlp_endpoint_parse(const char *protocol, const char *endpoint, bool metrics,
                                struct otlp_endpoint *out);

/* The named settings (README), read by otlp_settings_from_env(). */
struct otlp_settings {
    unsigned queue_spans; /* COLDBREW_OTLP_QUEUE_SPANS (2048, OTel's max queue size) */
    unsigned batch_spans; /* COLDBREW_OTLP_BATCH_SPANS (512, OTel's max export batch) */
    double batch_s;       /* COLDBREW_OTLP_BATCH_MS (5000, OTel's schedule delay) */
    double timeout_s;     /* COLDBREW_OTLP_TIMEOUT_MS (10000, OTel's export timeout) */
    unsigned max_series;  /* COLDBREW_OTLP_MAX_SERIES (1000) */
    size_t max_message;   /* COLDBREW_OTLP_MAX_MESSAGE_BYTES (4 MiB, gRPC's default limit) */
};
void otlp_settings_from_env(struct otlp_settings *s);

/* A resource attribute (Knative's: service.name, k8s.pod.name, ...). */
struct otlp_kv {
    const char *key, *value;
};

/* Knative's resource attributes for its data plane (contract §3e,
 * pkg/queue/sharedmain/otel.go): k8s.container.name, k8s.namespace.name,
 * k8s.pod.name, service.name (OTEL_SERVICE_NAME, else the service, the
 * configuration, the revision, the pod: the first one not empty),
 * service.version, service.instance.id (the pod), kn.service.name,
 * kn.configuration.name, kn.revision.name. NULL or empty inputs are left
 * out (the activator has no revision of its own). */
struct otlp_knative_ids {
    const char *container; /* "queue-proxy", "activator" */
    const char *ns, *pod, *service, *configuration, *revision;
    const char *version;           /* Knative's changeset: coldbrew's version */
    const char *otel_service_name; /* OTEL_SERVICE_NAME */
};
#define OTLP_KNATIVE_ATTRS 10
/* Fills out (pointers into ids' strings); returns how many. */
size_t otlp_knative_resource(const struct otlp_knative_ids *ids,
                             struct otlp_kv out[OTLP_KNATIVE_ATTRS]);

struct otlp_exporter;

/* Starts an exporter (traces and/or metrics; an endpoint with protocol
 * OTLP_NONE turns its signal off). Host names are resolved here, once
 * (getaddrinfo: this is start-up, not the request path). The resource
 * attributes and scope name are copied. NULL with *err on failure. */
struct otlp_exporter *otlp_new(struct event_base *base, const struct otlp_config *cfg,
                               const struct otlp_settings *set, const struct otlp_kv *resource,
                               size_t nresource, const char *scope_name, const char **err);
void otlp_free(struct otlp_exporter *x);

/* Is the traces signal on (spans are worth recording)? */
bool otlp_tracing(const struct otlp_exporter *x);
/* Queues an ended span (copied). Unsampled or unended spans are ignored.
 * O(1); drops (counted) when the ring is full. x may be NULL. */
void otlp_add_span(struct otlp_exporter *x, const struct span *s);
/* Starts exports of whatever is queued now, and from then on sends partial
 * batches back to back (shutdown: call once, then wait for otlp_idle()). */
void otlp_flush(struct otlp_exporter *x);
/* Nothing queued and nothing in flight (a shutdown waits for this, bounded). */
bool otlp_idle(const struct otlp_exporter *x);
/* At exit, after the process's own loop has ended: flushes, then runs the
 * loop until the exporter is idle or max_s passed (Knative flushes for at
 * most 10 s). Whatever is left is logged and dropped. True when idle. */
bool otlp_drain(struct otlp_exporter *x, double max_s);

struct otlp_stats {
    uint64_t spans_queued;         /* accepted into the ring */
    uint64_t spans_exported;       /* in batches the collector accepted */
    uint64_t spans_dropped_full;   /* the ring was full */
    uint64_t spans_dropped_export; /* their batch failed */
    uint64_t spans_rejected;       /* partial success: the collector refused them */
    uint64_t exports_ok, exports_failed;
    uint64_t metric_exports_ok, metric_exports_failed;
    uint64_t series_dropped; /* a new series past COLDBREW_OTLP_MAX_SERIES */
    unsigned queue_len, queue_cap;
    unsigned in_flight;     /* exports in flight, all signals (0..2) */
    const char *last_error; /* the last failure's reason, or NULL */
};
void otlp_get_stats(const struct otlp_exporter *x, struct otlp_stats *out);

/* ---------------------------------------------------------------- metrics */

#define OTLP_SERIES_ATTRS 4  /* attributes per series */
#define OTLP_MAX_BOUNDS   24 /* histogram bucket bounds */

enum otlp_metric_kind {
    OTLP_COUNTER,        /* monotonic Sum of int64 */
    OTLP_UPDOWN_COUNTER, /* non-monotonic Sum of int64 */
    OTLP_GAUGE_INT,      /* Gauge, last int64 value */
    OTLP_GAUGE_DOUBLE,   /* Gauge, last double value */
    OTLP_HISTOGRAM,      /* explicit-bucket Histogram of doubles */
};

struct otlp_metric;
struct otlp_series;

/* Declares a metric (name, description, unit are copied). bounds: the
 * histogram's bucket bounds (ascending, at most OTLP_MAX_BOUNDS). NULL when
 * metrics are off or on bad arguments. */
struct otlp_metric *otlp_metric_new(struct otlp_exporter *x, const char *name, const char *desc,
                                    const char *unit, enum otlp_metric_kind kind,
                                    const double *bounds, size_t nbounds);
/* The series with these attributes (found or made; copied). NULL when the
 * series limit is reached (counted) or metric is NULL. */
struct otlp_series *otlp_series_get(struct otlp_metric *m, const struct otlp_kv *attrs, size_t n);
/* O(1), no syscall. Each is a no-op on NULL or on the wrong kind. */
void otlp_series_add(struct otlp_series *s, int64_t delta); /* counters */
void otlp_series_set_int(struct otlp_series *s, int64_t v); /* OTLP_GAUGE_INT */
void otlp_series_set(struct otlp_series *s, double v);      /* OTLP_GAUGE_DOUBLE */
void otlp_series_record(struct otlp_series *s, double v);   /* histograms */

#endif
