/* trace.c — see trace.h.
 *
 * Invariants:
 *  - a span's ids are set at start and never change; a recording span has
 *    TRACE_FLAG_SAMPLED and is not ended;
 *  - nattrs <= TRACE_MAX_ATTRS, nevents <= TRACE_MAX_EVENTS; what did not fit
 *    is counted in dropped_attrs / dropped_events;
 *  - the id generator is seeded once (getrandom, or trace_seed) and never
 *    yields an all-zero id. */
#include "telemetry/trace.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ---------------------------------------------------------------- ids */

/* xoshiro256** (Blackman and Vigna, public domain): fast, good enough for
 * ids that only need to be unique, not secret. */
static uint64_t rng[4];
static bool seeded;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void trace_seed(uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        rng[i] = splitmix64(&seed);
    seeded = true;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next64(void)
{
    if (!seeded) {
        uint64_t seed = 0;
        /* getrandom on a fresh boot may block briefly; GRND_NONBLOCK falls
         * back to the clock rather than stall a request. */
        if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != sizeof seed) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            seed = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        }
        trace_seed(seed);
    }
    uint64_t r = rotl(rng[1] * 5, 7) * 9;
    uint64_t t = rng[1] << 17;
    rng[2] ^= rng[0];
    rng[3] ^= rng[1];
    rng[1] ^= rng[2];
    rng[0] ^= rng[3];
    rng[2] ^= t;
    rng[3] = rotl(rng[3], 45);
    return r;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

void trace_new_trace_id(uint8_t out[TRACE_ID_LEN])
{
    uint64_t hi, lo;
    do {
        hi = next64();
        lo = next64();
    } while (!hi && !lo);
    put64(out, hi);
    put64(out + 8, lo);
}

void trace_new_span_id(uint8_t out[TRACE_SPAN_ID_LEN])
{
    uint64_t v;
    do
        v = next64();
    while (!v);
    put64(out, v);
}

/* ---------------------------------------------------------------- traceparent */

static const char hexdig[] = "0123456789abcdef";

void trace_hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[b[i] >> 4];
        out[2 * i + 1] = hexdig[b[i] & 15];
    }
    out[2 * n] = 0;
}

/* Lower-case hex only: the spec says upper case is invalid. */
static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool unhex(const char *s, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int a = hexval(s[2 * i]), b = hexval(s[2 * i + 1]);
        if (a < 0 || b < 0)
            return false;
        out[i] = (uint8_t)(a << 4 | b);
    }
    return true;
}

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

const char *trace_parse_traceparent(const char *s, size_t len, struct trace_ctx *out)
{
    memset(out, 0, sizeof *out);
    /* Optional whitespace around a header value is the parser's job, but
     * be lenient to the OWS a list-joined header may carry. */
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len < TRACE_PARENT_LEN)
        return "traceparent is too short";
    uint8_t version;
    if (!unhex(s, 1, &version) || s[2] != '-')
        return "traceparent version is not two lower-case hex digits";
    if (version == 0xff)
        return "traceparent version ff is invalid";
    /* Version 00 has exactly this length; a later version may append
     * fields after a '-' (W3C: parse it as 00 and ignore the rest). */
    if (version == 0 && len != TRACE_PARENT_LEN)
        return "traceparent version 00 must be 55 characters";
    if (version != 0 && len > TRACE_PARENT_LEN && s[TRACE_PARENT_LEN] != '-')
        return "traceparent has garbage after the flags";
    if (s[35] != '-' || s[52] != '-')
        return "traceparent fields are not separated by '-'";
    if (!unhex(s + 3, TRACE_ID_LEN, out->trace_id))
        return "traceparent trace-id is not lower-case hex";
    if (!unhex(s + 36, TRACE_SPAN_ID_LEN, out->span_id))
        return "traceparent parent-id is not lower-case hex";
    if (!unhex(s + 53, 1, &out->flags))
        return "traceparent flags are not lower-case hex";
    if (all_zero(out->trace_id, TRACE_ID_LEN))
        return "traceparent trace-id is all zeros";
    if (all_zero(out->span_id, TRACE_SPAN_ID_LEN))
        return "traceparent parent-id is all zeros";
    /* Only the sampled bit is defined; others are not propagated (OTel Go
     * keeps the sampled bit only as well). */
    out->flags &= TRACE_FLAG_SAMPLED;
    out->valid = true;
    out->remote = true;
    return NULL;
}

size_t trace_format_traceparent(const struct trace_ctx *ctx, char out[TRACE_PARENT_LEN + 1])
{
    out[0] = '0', out[1] = '0', out[2] = '-';
    trace_hex(ctx->trace_id, TRACE_ID_LEN, out + 3);
    out[35] = '-';
    trace_hex(ctx->span_id, TRACE_SPAN_ID_LEN, out + 36);
    out[52] = '-';
    uint8_t f = ctx->flags & TRACE_FLAG_SAMPLED;
    trace_hex(&f, 1, out + 53);
    return TRACE_PARENT_LEN;
}

/* ---------------------------------------------------------------- tracestate */

void trace_state_init(struct trace_state *ts)
{
    ts->len = 0;
    ts->buf[0] = 0;
    ts->dropped = NULL;
}

static bool drop_state(struct trace_state *ts, const char *why)
{
    ts->dropped = why;
    ts->len = 0;
    ts->buf[0] = 0;
    return false;
}

/* W3C list members: key "=" value, key of lcalpha / digits / "_-*" "/"
 * with an optional "@" vendor part; value of printable ASCII but ',' and
 * '=' (and no trailing space). Empty members (",,") are allowed. */
static bool member_ok(const char *m, size_t n)
{
    while (n && (*m == ' ' || *m == '\t'))
        m++, n--;
    while (n && (m[n - 1] == ' ' || m[n - 1] == '\t'))
        n--;
    if (!n)
        return true; /* empty member */
    const char *eq = memchr(m, '=', n);
    if (!eq || eq == m)
        return false;
    size_t klen = (size_t)(eq - m), vlen = n - klen - 1;
    if (klen > 256 || vlen == 0 || vlen > 256)
        return false;
    bool at = false;
    for (size_t i = 0; i < klen; i++) {
        char c = m[i];
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '*' ||
            c == '/')
            continue;
        if (c == '@' && !at && i > 0 && i + 1 < klen) {
            at = true;
            continue;
        }
        return false;
    }
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)eq[1 + i];
        if (c < 0x20 || c > 0x7e || c == ',' || c == '=')
            return false;
    }
    return true;
}

bool trace_state_add(struct trace_state *ts, const char *s, size_t len)
{
    if (ts->dropped)
        return false;
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (!len)
        return true; /* an empty field adds nothing */
    size_t need = len + (ts->len ? 1 : 0);
    if (ts->len + need > TRACE_STATE_MAX)
        return drop_state(ts, "tracestate is longer than 512 bytes");
    /* Check the members of this field before keeping it. */
    unsigned members = 0;
    for (size_t i = 0; i < ts->len; i++)
        members += ts->buf[i] == ',';
    members += ts->len ? 1 : 0;
    const char *p = s, *end = s + len;
    while (p <= end) {
        const char *c = memchr(p, ',', (size_t)(end - p));
        const char *e = c ? c : end;
        if (!member_ok(p, (size_t)(e - p)))
            return drop_state(ts, "tracestate is malformed");
        if (++members > TRACE_STATE_MEMBERS)
            return drop_state(ts, "tracestate has more than 32 members");
        p = e + 1;
    }
    if (ts->len)
        ts->buf[ts->len++] = ',';
    memcpy(ts->buf + ts->len, s, len);
    ts->len = (uint16_t)(ts->len + len);
    ts->buf[ts->len] = 0;
    return true;
}

const char *trace_state_check(const char *s, size_t len)
{
    struct trace_state ts;
    trace_state_init(&ts);
    trace_state_add(&ts, s, len);
    return ts.dropped;
}

/* ---------------------------------------------------------------- sampling */

bool trace_should_sample(double rate, const struct trace_ctx *parent,
                         const uint8_t trace_id[TRACE_ID_LEN])
{
    /* Knative's sampleFor(): the edges are AlwaysSample / NeverSample, which
     * ignore the parent; only the ratio in between is parent-based. */
    if (rate >= 1)
        return true;
    if (!(rate > 0)) /* also NaN */
        return false;
    if (parent && parent->valid)
        return parent->flags & TRACE_FLAG_SAMPLED;
    /* OTel's TraceIDRatioBased: the low 8 bytes, big-endian, shifted right
     * once, against rate * 2^63. */
    uint64_t x = 0;
    for (int i = 8; i < 16; i++)
        x = x << 8 | trace_id[i];
    uint64_t bound = (uint64_t)(rate * 9223372036854775808.0);
    return (x >> 1) < bound;
}

/* ---------------------------------------------------------------- spans */

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void span_begin(struct span *s, const char *name, enum span_kind kind)
{
    /* Only the header fields: the arrays are written as they fill. */
    s->nattrs = s->nevents = 0;
    s->dropped_attrs = s->dropped_events = 0;
    s->status = SPAN_STATUS_UNSET;
    s->status_msg = NULL;
    s->ended = false;
    s->kind = (uint8_t)kind;
    size_t n = name ? strlen(name) : 0;
    if (n >= sizeof s->name)
        n = sizeof s->name - 1;
    memcpy(s->name, name ? name : "", n);
    s->name[n] = 0;
    trace_new_span_id(s->span_id);
    s->start_ns = wall_ns();
    s->start_mono = mono_ns();
    s->end_ns = 0;
}

void span_start_root(struct span *s, const char *name, enum span_kind kind,
                     const struct trace_ctx *remote, double rate)
{
    span_begin(s, name, kind);
    if (remote && remote->valid) {
        memcpy(s->trace_id, remote->trace_id, TRACE_ID_LEN);
        memcpy(s->parent_id, remote->span_id, TRACE_SPAN_ID_LEN);
        s->has_parent = true;
        s->parent_remote = remote->remote;
    } else {
        trace_new_trace_id(s->trace_id);
        memset(s->parent_id, 0, TRACE_SPAN_ID_LEN);
        s->has_parent = s->parent_remote = false;
    }
    s->flags = trace_should_sample(rate, remote, s->trace_id) ? TRACE_FLAG_SAMPLED : 0;
}

void span_start_child(struct span *s, const char *name, enum span_kind kind,
                      const struct span *parent)
{
    span_begin(s, name, kind);
    memcpy(s->trace_id, parent->trace_id, TRACE_ID_LEN);
    memcpy(s->parent_id, parent->span_id, TRACE_SPAN_ID_LEN);
    s->has_parent = true;
    s->parent_remote = false;
    s->flags = parent->flags & TRACE_FLAG_SAMPLED;
}

void span_ctx(const struct span *s, struct trace_ctx *out)
{
    memcpy(out->trace_id, s->trace_id, TRACE_ID_LEN);
    memcpy(out->span_id, s->span_id, TRACE_SPAN_ID_LEN);
    out->flags = s->flags & TRACE_FLAG_SAMPLED;
    out->valid = true;
    out->remote = false;
}

size_t span_traceparent(const struct span *s, char out[TRACE_PARENT_LEN + 1])
{
    struct trace_ctx c;
    span_ctx(s, &c);
    return trace_format_traceparent(&c, out);
}

/* The slot for `key`: the existing one (OTel overwrites a key set twice)
 * or a new one; NULL when full (counted). */
static struct span_attr *attr_slot(struct span *s, const char *key)
{
    for (unsigned i = 0; i < s->nattrs; i++)
        if (s->attrs[i].key == key || !strcmp(s->attrs[i].key, key))
            return &s->attrs[i];
    if (s->nattrs == TRACE_MAX_ATTRS) {
        s->dropped_attrs++;
        return NULL;
    }
    struct span_attr *a = &s->attrs[s->nattrs++];
    a->key = key;
    return a;
}

void span_set_str(struct span *s, const char *key, const char *v, size_t len)
{
    struct span_attr *a;
    if (!span_recording(s) || !(a = attr_slot(s, key)))
        return;
    if (len > sizeof a->s)
        len = sizeof a->s;
    a->type = SPAN_ATTR_STR;
    a->slen = (uint8_t)len;
    memcpy(a->s, v, len);
}

void span_set_int(struct span *s, const char *key, int64_t v)
{
    struct span_attr *a;
    if (!span_recording(s) || !(a = attr_slot(s, key)))
        return;
    a->type = SPAN_ATTR_INT;
    a->v.i = v;
}

void span_set_double(struct span *s, const char *key, double v)
{
    struct span_attr *a;
    if (!span_recording(s) || !(a = attr_slot(s, key)))
        return;
    a->type = SPAN_ATTR_DOUBLE;
    a->v.d = v;
}

void span_set_bool(struct span *s, const char *key, bool v)
{
    struct span_attr *a;
    if (!span_recording(s) || !(a = attr_slot(s, key)))
        return;
    a->type = SPAN_ATTR_BOOL;
    a->v.b = v;
}

void span_add_event(struct span *s, const char *name)
{
    if (!span_recording(s))
        return;
    if (s->nevents == TRACE_MAX_EVENTS) {
        s->dropped_events++;
        return;
    }
    struct span_event *e = &s->events[s->nevents++];
    e->name = name;
    e->time_ns = s->start_ns + (mono_ns() - s->start_mono);
}

void span_add_event_at(struct span *s, const char *name, uint64_t mono)
{
    if (!span_recording(s))
        return;
    if (s->nevents == TRACE_MAX_EVENTS) {
        s->dropped_events++;
        return;
    }
    struct span_event *e = &s->events[s->nevents++];
    e->name = name;
    e->time_ns = s->start_ns + (mono - s->start_mono); /* unsigned: an earlier stamp goes back */
}

void span_backdate(struct span *s, uint64_t mono)
{
    if (mono >= s->start_mono)
        return;
    s->start_ns -= s->start_mono - mono;
    s->start_mono = mono;
}

void span_set_status(struct span *s, enum span_status code, const char *msg)
{
    if (!span_recording(s))
        return;
    s->status = (uint8_t)code;
    /* OTLP: the message only goes with an error. */
    s->status_msg = code == SPAN_STATUS_ERROR ? msg : NULL;
}

void span_end(struct span *s)
{
    if (s->ended)
        return;
    s->end_ns = s->start_ns + (mono_ns() - s->start_mono);
    s->ended = true;
}
