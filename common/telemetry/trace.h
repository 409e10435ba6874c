/* trace.h — W3C Trace Context and spans, without allocation.
 *
 * What Knative's queue-proxy and activator do through OTel's Go SDK
 * (contract §1c, §3a; activator §6.6), in the small:
 *
 *  - `traceparent` is parsed as the W3C Trace Context spec says (version
 *    00 is exactly 55 characters of lower-case hex and dashes; a higher
 *    version may be longer when a '-' follows the flags; version ff, an
 *    all-zero trace-id or parent-id, upper-case hex are invalid). An invalid
 *    header means "no parent": the request starts a new trace.
 *  - `tracestate` is carried verbatim when it looks like a list of
 *    key=value members; over TRACE_STATE_MAX bytes, or malformed, it is
 *    dropped with a reason (OTel Go drops an unparsable tracestate too).
 *  - Ids come from a xoshiro256** generator seeded from getrandom(2) once:
 *    no syscall per id, never all-zero.
 *  - Sampling is Knative's sampleFor(): rate >= 1 samples everything,
 *    rate <= 0 nothing, anything between is OTel's
 *    ParentBased(TraceIDRatioBased(rate)): a valid remote parent's sampled
 *    flag decides; a root is sampled when the trace id's low 8 bytes
 *    (big-endian, shifted right once) fall under rate * 2^63.
 *
 * A span is a fixed-size value (no pointers to free): the caller keeps the
 * live span inside its own request object, starts it, adds attributes and
 * events (bounded: past TRACE_MAX_ATTRS / TRACE_MAX_EVENTS they are counted
 * as dropped, as OTLP's dropped_*_count fields say), ends it, and hands it
 * to the exporter (otlp_add_span() copies it into the exporter's ring).
 * A span that is not sampled is "non-recording": it still has ids (the next
 * hop's traceparent needs them) but every add is a no-op and the exporter
 * ignores it.
 *
 * Ownership: attribute keys, event names and status messages are NOT
 * copied: they must be string literals (static storage), because the span
 * is exported long after the request is gone. Span names and string values
 * are copied (and truncated to TRACE_NAME_MAX / TRACE_ATTR_STR_MAX).
 * Everything here is single-threaded (one loop per process). */
#ifndef COLDBREW_TRACE_H
#define COLDBREW_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACE_ID_LEN        16
#define TRACE_SPAN_ID_LEN   8
#define TRACE_PARENT_LEN    55  /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define TRACE_STATE_MAX     512 /* W3C: vendors must propagate at least 512 bytes */
#define TRACE_STATE_MEMBERS 32  /* W3C: at most 32 list members */
#define TRACE_FLAG_SAMPLED  0x01
#define TRACE_NAME_MAX      96  /* span names ("GET /path/...") are truncated here */
#define TRACE_ATTR_STR_MAX  120 /* string attribute values are truncated here */
#define TRACE_MAX_ATTRS     16  /* otelhttp's server span sets about a dozen */
#define TRACE_MAX_EVENTS    8   /* the activator's span carries the 5 cold-start phases */

/* A span context: who the parent is (parsed from traceparent, or a local
 * span's own ids). valid is false for "no parent". */
struct trace_ctx {
    uint8_t trace_id[TRACE_ID_LEN];
    uint8_t span_id[TRACE_SPAN_ID_LEN];
    uint8_t flags; /* TRACE_FLAG_SAMPLED */
    bool valid;
    bool remote; /* came from a traceparent header */
};

/* Parses one traceparent value (len bytes, no NUL needed). NULL on success
 * (out->valid, out->remote set), else a static reason and out->valid false. */
const char *trace_parse_traceparent(const char *s, size_t len, struct trace_ctx *out);
/* "00-<trace-id>-<span-id>-<flags>" plus NUL into out; returns 55. */
size_t trace_format_traceparent(const struct trace_ctx *ctx, char out[TRACE_PARENT_LEN + 1]);

/* The tracestate of a request: one or more header fields, combined with
 * ',' (RFC 9110 list semantics). */
struct trace_state {
    uint16_t len;
    char buf[TRACE_STATE_MAX + 1]; /* NUL terminated */
    const char *dropped;           /* why the state was dropped, NULL while kept */
};
void trace_state_init(struct trace_state *ts);
/* Adds one header field's value. False when the whole state is now dropped
 * (ts->dropped says why: too long, too many members, malformed); later adds
 * are ignored. */
bool trace_state_add(struct trace_state *ts, const char *s, size_t len);

/* Would this single tracestate field be kept? NULL if so (pass the header
 * on verbatim), else why not. No copy. */
const char *trace_state_check(const char *s, size_t len);

/* Fresh ids, never all-zero. */
void trace_new_trace_id(uint8_t out[TRACE_ID_LEN]);
void trace_new_span_id(uint8_t out[TRACE_SPAN_ID_LEN]);
/* Reseeds the generator (tests: reproducible ids). Otherwise the first id
 * seeds it from getrandom(2). */
void trace_seed(uint64_t seed);

/* Knative's sampleFor() (see the top of this file). parent may be NULL. */
bool trace_should_sample(double rate, const struct trace_ctx *parent,
                         const uint8_t trace_id[TRACE_ID_LEN]);

/* OTLP's Span.SpanKind values. */
enum span_kind {
    SPAN_KIND_INTERNAL = 1,
    SPAN_KIND_SERVER = 2,
    SPAN_KIND_CLIENT = 3,
};
/* OTLP's Status.StatusCode values. */
enum span_status {
    SPAN_STATUS_UNSET = 0,
    SPAN_STATUS_OK = 1,
    SPAN_STATUS_ERROR = 2,
};

enum span_attr_type { SPAN_ATTR_STR, SPAN_ATTR_INT, SPAN_ATTR_DOUBLE, SPAN_ATTR_BOOL };

struct span_attr {
    const char *key; /* a string literal */
    uint8_t type;    /* enum span_attr_type */
    uint8_t slen;
    union {
        int64_t i;
        double d;
        bool b;
    } v;
    char s[TRACE_ATTR_STR_MAX];
};

struct span_event {
    const char *name; /* a string literal */
    uint64_t time_ns; /* unix ns */
};

struct span {
    uint8_t trace_id[TRACE_ID_LEN];
    uint8_t span_id[TRACE_SPAN_ID_LEN];
    uint8_t parent_id[TRACE_SPAN_ID_LEN]; /* all-zero for a root */
    uint8_t flags;                        /* TRACE_FLAG_SAMPLED: recording */
    bool has_parent, parent_remote, ended;
    uint8_t kind;   /* enum span_kind */
    uint8_t status; /* enum span_status */
    uint8_t nattrs, nevents;
    uint16_t dropped_attrs, dropped_events;
    const char *status_msg;    /* a string literal or NULL */
    uint64_t start_ns, end_ns; /* unix ns (OTLP's time base) */
    uint64_t start_mono;       /* monotonic ns: the duration never goes negative */
    char name[TRACE_NAME_MAX];
    struct span_attr attrs[TRACE_MAX_ATTRS];
    struct span_event events[TRACE_MAX_EVENTS];
};

/* Starts the first span of this process in a trace (a server span): child
 * of `remote` when remote->valid, else a new trace. Sampling per
 * trace_should_sample(rate, remote, ...). */
void span_start_root(struct span *s, const char *name, enum span_kind kind,
                     const struct trace_ctx *remote, double rate);
/* Starts a child of a local span; it inherits the sampling decision. */
void span_start_child(struct span *s, const char *name, enum span_kind kind,
                      const struct span *parent);
static inline bool span_recording(const struct span *s)
{
    return (s->flags & TRACE_FLAG_SAMPLED) && !s->ended;
}
/* The context a child or the next hop sees (its traceparent). */
void span_ctx(const struct span *s, struct trace_ctx *out);
/* The next hop's traceparent for a span (55 chars + NUL). */
size_t span_traceparent(const struct span *s, char out[TRACE_PARENT_LEN + 1]);

void span_set_str(struct span *s, const char *key, const char *v, size_t len);
void span_set_int(struct span *s, const char *key, int64_t v);
void span_set_double(struct span *s, const char *key, double v);
void span_set_bool(struct span *s, const char *key, bool v);
void span_add_event(struct span *s, const char *name);
/* An event at a past moment: mono is a CLOCK_MONOTONIC stamp in ns
 * (clock_now_ns()), placed on the span's wall-clock time line. */
void span_add_event_at(struct span *s, const char *name, uint64_t mono);
/* Starts a span at a past moment (CLOCK_MONOTONIC ns): the request's
 * arrival, when the span is made later. */
void span_backdate(struct span *s, uint64_t mono);
/* msg: a string literal or NULL. */
void span_set_status(struct span *s, enum span_status code, const char *msg);
/* Stamps the end time. Idempotent. */
void span_end(struct span *s);

/* Hex helpers (lower-case), for logs and tests. out gets 2*n chars + NUL. */
void trace_hex(const uint8_t *b, size_t n, char *out);

#endif
