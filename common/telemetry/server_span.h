/* server_span.h — the server span of one HTTP request, as OTel's otelhttp
 * handler makes it for Knative's queue-proxy ("queue") and activator
 * ("handle"), contract §3a and activator §6.6.
 *
 * server_span_start() continues the caller's trace when its traceparent is
 * valid (a malformed one is no parent: a new trace, sampled as the rate
 * says), backdates the span to when the request's head arrived, and, when
 * the span records, sets the request's method, path and protocol version.
 * It says whether the caller's tracestate may go on to the next hop: only
 * when its trace goes on and the list is well-formed.
 *
 * server_span_end() sets the response's status code and ends the span; no
 * answer (status 0) or a 5xx is an error, as otelhttp marks it. The caller
 * then hands the span to the exporter. The span lives in the caller's
 * request object (trace.h: spans are values). */
#ifndef COLDBREW_SERVER_SPAN_H
#define COLDBREW_SERVER_SPAN_H

#include <stdbool.h>

#include "http/http_head.h"
#include "telemetry/trace.h"

struct request;

/* tp, ts: the request's traceparent and tracestate headers, or NULL.
 * Returns whether the tracestate goes on with the trace. */
bool server_span_start(struct span *s, const char *name, const struct request *req,
                       const struct http_header *tp, const struct http_header *ts, double rate);

void server_span_end(struct span *s, int status);

#endif
