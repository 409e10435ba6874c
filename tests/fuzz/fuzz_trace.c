/* libFuzzer target: the W3C Trace Context parsers (common/telemetry/trace.c) on what
 * a client may send as `traceparent` and `tracestate`, plus the
 * OBSERVABILITY_CONFIG endpoint parser (common/telemetry/otlp.c).
 *
 * Input: byte 0 picks the parser; the rest is the header value. Checks
 * beyond "no crash": a traceparent that parses formats back to the same 55
 * lower-case characters (version 00) with the flags reduced to the sampled
 * bit, and never carries an all-zero id; a kept tracestate is at most 512
 * bytes and is the trimmed fields joined by ','. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "telemetry/otlp.h"
#include "telemetry/trace.h"

static void check_traceparent(const char *s, size_t n)
{
    struct trace_ctx c;
    if (trace_parse_traceparent(s, n, &c)) {
        if (c.valid)
            abort();
        return;
    }
    if (!c.valid || (c.flags & ~TRACE_FLAG_SAMPLED))
        abort();
    static const uint8_t zero[TRACE_ID_LEN];
    if (!memcmp(c.trace_id, zero, TRACE_ID_LEN) || !memcmp(c.span_id, zero, TRACE_SPAN_ID_LEN))
        abort();
    char out[TRACE_PARENT_LEN + 1];
    trace_format_traceparent(&c, out);
    struct trace_ctx d;
    if (trace_parse_traceparent(out, TRACE_PARENT_LEN, &d) || memcmp(&c, &d, sizeof c))
        abort();
    /* The ids survive verbatim: compare to the input (after OWS). */
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    if (memcmp(out + 3, s + 3, 49))
        abort();
}

static void check_tracestate(const char *s, size_t n)
{
    struct trace_state ts;
    trace_state_init(&ts);
    /* Split the input on '\n' into several header fields. */
    const char *p = s, *end = s + n;
    while (p <= end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        trace_state_add(&ts, p, (size_t)(e - p));
        if (ts.len > TRACE_STATE_MAX || strlen(ts.buf) != ts.len)
            abort();
        if (ts.dropped && ts.len)
            abort();
        p = e + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = 0;
    switch (data[0] % 3) {
    case 0:
        check_traceparent(s, size - 1);
        break;
    case 1:
        check_tracestate(s, size - 1);
        break;
    default: {
        struct otlp_endpoint e;
        /* NUL-terminated: the config strings are C strings. */
        if (!otlp_endpoint_parse(data[0] & 4 ? "grpc" : "http/protobuf", s, data[0] & 8, &e)) {
            if (e.protocol != OTLP_NONE && (e.port < 1 || e.port > 65535 || !e.host[0]))
                abort();
        }
        break;
    }
    }
    free(s);
    return 0;
}
