/* server_span.c — otelhttp's server span for both hops (server_span.h). */
#include "telemetry/server_span.h"

#include <string.h>

#include "http/server.h"

bool server_span_start(struct span *s, const char *name, const struct request *req,
                       const struct http_header *tp, const struct http_header *ts, double rate)
{
    const struct http_head *h = req->head;
    struct trace_ctx remote = {0};
    size_t len;
    const char *v = http_header_value(h, tp, &len);
    if (v) /* a malformed one leaves remote invalid: no parent */
        trace_parse_traceparent(v, len, &remote);
    span_start_root(s, name, SPAN_KIND_SERVER, &remote, rate);
    span_backdate(s, req->start_ns);
    v = http_header_value(h, ts, &len);
    bool keep_tracestate = remote.valid && v && !trace_state_check(v, len);
    if (span_recording(s)) {
        const char *m = llhttp_method_name((llhttp_method_t)h->method);
        span_set_str(s, "http.request.method", m, strlen(m));
        const char *url = http_str_ptr(h, h->url);
        const char *qm = memchr(url, '?', h->url.len);
        span_set_str(s, "url.path", url, qm ? (size_t)(qm - url) : h->url.len);
        span_set_str(s, "network.protocol.version", request_is_h2(req) ? "2" : "1.1",
                     request_is_h2(req) ? 1 : 3);
    }
    return keep_tracestate;
}

void server_span_end(struct span *s, int status)
{
    if (status)
        span_set_int(s, "http.response.status_code", status);
    if (!status || status >= 500)
        span_set_status(s, SPAN_STATUS_ERROR, NULL);
    span_end(s);
}
