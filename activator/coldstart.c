/* coldstart.c — the cold-start ledger: where a held request's time went.
 *
 * A request is cold-started when the activator holds it while its revision
 * has no healthy pod. Its life then has five phases, ending at five moments:
 *
 *   poke       held -> the poke to the autoscaler sent (0 when the revision
 *              was already reporting: the autoscaler knew from the reports)
 *   endpoints  -> the first private Endpoints update naming a pod (Knative
 *              lists a starting pod under notReadyAddresses and the
 *              activator probes it itself, so this is the first pod it can
 *              probe, not the kubelet's "ready")
 *   probe      -> the activator's probe of a pod succeeded (capacity)
 *   forward    -> the request forwarded to the pod
 *   response   -> the first response byte (the head) back from the pod
 *
 * The revision-wide moments (poke, endpoints, probe) belong to an
 * *episode*: it opens when a request is held with no healthy pod and is
 * complete once a probe succeeded; the next request held with no healthy
 * pod after that opens a new one. A request that joins an episode late
 * (the pod was already listed when it arrived) has those phases at 0:
 * each moment is clamped to be no earlier than the one before, so the
 * phases always add up to the total exactly.
 *
 * Exposed (handler.c calls cold_record() at the first response byte):
 *  - a Server-Timing header, when asked for (handler.c);
 *  - Prometheus on the metrics port: coldbrew_coldstart_phase_seconds
 *    {revision labels, phase} histograms (the 5 phases and "total") and
 *    coldbrew_coldstart_requests_total;
 *  - one log line per cold start ("cold start", with the phases in ms);
 *  - the last COLD_RECENT cold starts per revision as JSON on
 *    GET /coldstarts (metrics port), which `coldbrew status` shows;
 *  - span events on the activator's span (handler.c).
 * A cold start that never gets a response from a pod (the activator answers
 * 503 or 504 or 502, or the client leaves) has no phases to record; it is
 * counted apart, by outcome: coldbrew_coldstart_failed_total{..., code},
 * "failed" in the JSON (and `coldbrew status`), and a warning log line with
 * how long the request was held. Those are the cold starts an operator most
 * needs to see, so they are never silently dropped from the ledger.
 * Nothing here allocates per request: a revision's ledger is made once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "core/clock.h"
#include "core/log.h"
#include "telemetry/metrics.h"
#include "activator.h"

#define COLD_RECENT 8 /* cold starts per revision kept for `coldbrew status` */
#define COLD_BUCKETS                                                                               \
    16 /* 0.5 ms .. 60 s: local cold starts are milliseconds, cluster ones seconds */
static const double bounds[COLD_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                            0.25,   0.5,   1,      2.5,   5,    10,    30,   60};

const char *const cold_phase_names[COLD_PHASES + 1] = {"poke",    "endpoints", "probe",
                                                       "forward", "response",  "total"};
const char *const cold_phase_desc[COLD_PHASES + 1] = {
    "held to poke sent",  "poke to Endpoints naming a pod",   "Endpoints to probe success",
    "probe to forwarded", "forwarded to first response byte", "held to first response byte",
};

/* The outcomes of a failed cold start, as the code label says them; a client
 * that left before any answer is nginx's 499, as Knative's metrics say it. */
#define COLD_FAIL_KINDS 5
static const int fail_codes[COLD_FAIL_KINDS - 1] = {499, 502, 503, 504};

static unsigned fail_kind(int status)
{
    if (!status)
        status = 499;
    for (unsigned i = 0; i < COLD_FAIL_KINDS - 1; i++)
        if (fail_codes[i] == status)
            return i;
    return COLD_FAIL_KINDS - 1; /* "other" */
}

struct cold_entry {
    uint64_t unix_ms; /* when it was held */
    double ms[COLD_PHASES + 1];
};

struct cold_ledger {
    /* the current episode */
    bool open;
    uint64_t poke, endpoints, probe;
    uint64_t last_poke; /* the last poke sent, episode or not */
    /* histograms, non-cumulative buckets (+Inf last) */
    uint64_t buckets[COLD_PHASES + 1][COLD_BUCKETS + 1];
    double sum[COLD_PHASES + 1];
    uint64_t count; /* cold-started requests (each phase has this count) */
    uint64_t failed[COLD_FAIL_KINDS], nfailed; /* ended with no response from a pod */
    struct cold_entry recent[COLD_RECENT];
    unsigned nrecent, next;
};

static struct cold_ledger *ledger(struct revision *r)
{
    if (!r->cold && !(r->cold = calloc(1, sizeof *r->cold)))
        log_error("out of memory for the cold-start ledger of %s", r->key);
    return r->cold;
}

void cold_free(struct revision *r)
{
    free(r->cold);
    r->cold = NULL;
}

void cold_on_poke(struct revision *r)
{
    struct cold_ledger *l = ledger(r);
    if (!l)
        return;
    l->last_poke = clock_now_ns();
    if (l->open && !l->poke)
        l->poke = l->last_poke;
}

void cold_on_endpoints(struct revision *r)
{
    struct cold_ledger *l = r->cold;
    if (l && l->open && !l->endpoints)
        l->endpoints = clock_now_ns();
}

void cold_on_capacity(struct revision *r)
{
    struct cold_ledger *l = r->cold;
    if (l && l->open && !l->probe)
        l->probe = clock_now_ns();
}

void cold_hold(struct revision *r, uint64_t held_ns)
{
    struct cold_ledger *l = ledger(r);
    if (!l)
        return;
    if (l->open && !l->probe)
        return; /* joins the episode under way */
    l->open = true;
    l->endpoints = l->probe = 0;
    /* The poke for this request went out just before it was queued. */
    l->poke = l->last_poke >= held_ns ? l->last_poke : 0;
}

void cold_record(struct revision *r, struct cold_stamps *s, double ms[COLD_PHASES + 1])
{
    struct cold_ledger *l = ledger(r);
    if (l) {
        s->poke = l->poke;
        s->endpoints = l->endpoints;
        s->probe = l->probe;
    }
    /* Each moment no earlier than the one before: the phases add up. */
    uint64_t t[COLD_PHASES + 1] = {s->held,  s->poke,      s->endpoints,
                                   s->probe, s->forwarded, s->first_byte};
    for (int i = 1; i <= COLD_PHASES; i++)
        if (t[i] < t[i - 1])
            t[i] = t[i - 1];
    for (int i = 0; i < COLD_PHASES; i++)
        ms[i] = (double)(t[i + 1] - t[i]) / 1e6;
    ms[COLD_PHASES] = (double)(t[COLD_PHASES] - t[0]) / 1e6;
    if (!l)
        return;
    l->count++;
    for (int i = 0; i <= COLD_PHASES; i++) {
        double sec = ms[i] / 1e3;
        unsigned b = 0;
        while (b < COLD_BUCKETS && sec > bounds[b])
            b++;
        l->buckets[i][b]++;
        l->sum[i] += sec;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    uint64_t now_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    struct cold_entry *e = &l->recent[l->next];
    e->unix_ms = now_ms - (uint64_t)(ms[COLD_PHASES] + 0.5);
    memcpy(e->ms, ms, sizeof e->ms);
    l->next = (l->next + 1) % COLD_RECENT;
    if (l->nrecent < COLD_RECENT)
        l->nrecent++;
    char fields[512];
    snprintf(fields, sizeof fields,
             "\"revision\":\"%s\",\"coldstart\":{\"poke_ms\":%.3f,\"endpoints_ms\":%.3f,"
             "\"probe_ms\":%.3f,\"forward_ms\":%.3f,\"response_ms\":%.3f,\"total_ms\":%.3f}",
             r->key, ms[0], ms[1], ms[2], ms[3], ms[4], ms[5]);
    log_info_fields(fields, "cold start of %s: %.3f ms", r->key, ms[COLD_PHASES]);
}

void cold_failed(struct revision *r, const struct cold_stamps *s, int status, uint64_t now_ns)
{
    struct cold_ledger *l = ledger(r);
    if (!l)
        return;
    l->failed[fail_kind(status)]++;
    l->nfailed++;
    double held_ms = now_ns > s->held ? (double)(now_ns - s->held) / 1e6 : 0;
    char fields[400];
    snprintf(fields, sizeof fields,
             "\"revision\":\"%s\",\"coldstart_failed\":{\"status\":%d,"
             "\"held_ms\":%.3f,\"pod_probed\":%s}",
             r->key, status ? status : 499, held_ms, l->probe ? "true" : "false");
    log_warn_fields(fields, "cold start of %s failed: %s after %.3f ms held%s", r->key,
                    status ? "answered" : "the client left", held_ms,
                    l->probe ? "" : ", no pod became ready");
}

void cold_render_metrics(struct evbuffer *b)
{
    evbuffer_add_printf(b, "# HELP coldbrew_coldstart_requests_total Requests the activator held "
                           "while their revision had no healthy pod, answered\n"
                           "# TYPE coldbrew_coldstart_requests_total counter\n");
    struct revision *r, *tmp;
    HASH_ITER(hh, act->revisions, r, tmp)
    {
        if (r->cold && r->cold->count)
            evbuffer_add_printf(b,
                                "coldbrew_coldstart_requests_total{k8s_namespace_name=\"%s\","
                                "kn_service_name=\"%s\",kn_configuration_name=\"%s\","
                                "kn_revision_name=\"%s\"} %llu\n",
                                r->ns, r->service, r->configuration, r->name,
                                (unsigned long long)r->cold->count);
    }
    evbuffer_add_printf(b, "# HELP coldbrew_coldstart_failed_total Requests the activator held "
                           "while their revision had no healthy pod, ended with no response "
                           "from a pod (code 499: the client left)\n"
                           "# TYPE coldbrew_coldstart_failed_total counter\n");
    HASH_ITER(hh, act->revisions, r, tmp)
    {
        if (!r->cold || !r->cold->nfailed)
            continue;
        for (unsigned k = 0; k < COLD_FAIL_KINDS; k++) {
            if (!r->cold->failed[k])
                continue;
            char code[8];
            if (k < COLD_FAIL_KINDS - 1)
                snprintf(code, sizeof code, "%d", fail_codes[k]);
            else
                snprintf(code, sizeof code, "other");
            evbuffer_add_printf(b,
                                "coldbrew_coldstart_failed_total{k8s_namespace_name=\"%s\","
                                "kn_service_name=\"%s\",kn_configuration_name=\"%s\","
                                "kn_revision_name=\"%s\",code=\"%s\"} %llu\n",
                                r->ns, r->service, r->configuration, r->name, code,
                                (unsigned long long)r->cold->failed[k]);
        }
    }
    evbuffer_add_printf(b, "# HELP coldbrew_coldstart_phase_seconds Where a cold-started "
                           "request's time went, per phase\n"
                           "# TYPE coldbrew_coldstart_phase_seconds histogram\n");
    HASH_ITER(hh, act->revisions, r, tmp)
    {
        const struct cold_ledger *l = r->cold;
        if (!l || !l->count)
            continue;
        char labels[600];
        snprintf(labels, sizeof labels,
                 "k8s_namespace_name=\"%s\",kn_service_name=\"%s\",kn_configuration_name=\"%s\","
                 "kn_revision_name=\"%s\"",
                 r->ns, r->service, r->configuration, r->name);
        for (int i = 0; i <= COLD_PHASES; i++) {
            uint64_t cum = 0;
            for (unsigned k = 0; k < COLD_BUCKETS; k++) {
                cum += l->buckets[i][k];
                evbuffer_add_printf(b,
                                    "coldbrew_coldstart_phase_seconds_bucket{%s,phase=\"%s\","
                                    "le=\"%g\"} %llu\n",
                                    labels, cold_phase_names[i], bounds[k],
                                    (unsigned long long)cum);
            }
            cum += l->buckets[i][COLD_BUCKETS];
            evbuffer_add_printf(
                b,
                "coldbrew_coldstart_phase_seconds_bucket{%s,phase=\"%s\",le=\"+Inf\"}"
                " %llu\n"
                "coldbrew_coldstart_phase_seconds_sum{%s,phase=\"%s\"} %.9g\n"
                "coldbrew_coldstart_phase_seconds_count{%s,phase=\"%s\"} %llu\n",
                labels, cold_phase_names[i], (unsigned long long)cum, labels, cold_phase_names[i],
                l->sum[i], labels, cold_phase_names[i], (unsigned long long)cum);
        }
    }
}

void cold_render_json(struct evbuffer *b)
{
    evbuffer_add_printf(b, "{\"revisions\":[");
    bool first = true;
    struct revision *r, *tmp;
    HASH_ITER(hh, act->revisions, r, tmp)
    {
        const struct cold_ledger *l = r->cold;
        if (!l || (!l->nrecent && !l->nfailed))
            continue;
        evbuffer_add_printf(b,
                            "%s{\"namespace\":\"%s\",\"name\":\"%s\",\"count\":%llu,"
                            "\"failed\":%llu,\"recent\":[",
                            first ? "" : ",", r->ns, r->name, (unsigned long long)l->count,
                            (unsigned long long)l->nfailed);
        first = false;
        /* newest first */
        for (unsigned k = 0; k < l->nrecent; k++) {
            const struct cold_entry *e = &l->recent[(l->next + COLD_RECENT - 1 - k) % COLD_RECENT];
            evbuffer_add_printf(b, "%s{\"at_ms\":%llu", k ? "," : "",
                                (unsigned long long)e->unix_ms);
            for (int i = 0; i <= COLD_PHASES; i++)
                evbuffer_add_printf(b, ",\"%s_ms\":%.3f", cold_phase_names[i], e->ms[i]);
            evbuffer_add_printf(b, "}");
        }
        evbuffer_add_printf(b, "]}");
    }
    evbuffer_add_printf(b, "]}\n");
}
