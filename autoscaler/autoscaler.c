/* autoscaler.c — see autoscaler.h. */
#include "autoscaler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "cluster/http_client.h"
#include "core/log.h"
#include "cluster/statpb.h"
#include "cluster/ws_server.h"
#include "stat.pb-c.h"

struct as_pod {
    char addr[64];
    struct upstream up;
    struct http_call *call;
    struct as_rev *rev;
};

struct autoscaler {
    struct event_base *base;
    struct ws_server *ws;
    struct event *tick, *scrape;
    struct as_rev *revs;
};

double autoscaler_now(void)
{
    return (double)clock_now_ns() / 1e9;
}

static struct as_rev *find(struct autoscaler *as, const char *ns, const char *name)
{
    for (struct as_rev *r = as->revs; r; r = r->next)
        if (!strcmp(r->ns, ns) && !strcmp(r->name, name))
            return r;
    return NULL;
}

/* A tick decides on the windows ending at the last *complete* second: the
 * current second's bucket is still filling (scrapes and activator reports
 * arrive once a second each), and counting it as a whole second halves a
 * 2 s panic window's average. A poke decides at once on the current second,
 * where the poke's own stat was just recorded. */
static void decide(struct as_rev *r, bool poke)
{
    double at = autoscaler_now() - (poke ? 0.0 : 1.0);
    struct kpa_decision d = kpa_decide(&r->kpa, at, r->ready_pods, true);
    r->last = d;
    if (r->cb)
        r->cb(r, &d, poke, r->arg);
}

/* ---------------------------------------------------------------- activator stats */

static void on_stats(void *arg, const uint8_t *data, size_t len)
{
    struct autoscaler *as = arg;
    Metrics__WireStatMessages *m = metrics__wire_stat_messages__unpack(NULL, len, data);
    if (!m) {
        log_warn("autoscaler: a stats message that is not WireStatMessages (%zu bytes)", len);
        return;
    }
    double now = autoscaler_now();
    for (size_t i = 0; i < m->n_messages; i++) {
        Metrics__WireStatMessage *w = m->messages[i];
        if (!w->namespace_ || !w->name || !w->stat)
            continue;
        struct as_rev *r = find(as, w->namespace_, w->name);
        if (!r)
            continue;
        double c = w->stat->average_concurrent_requests;
        kpa_record(&r->kpa, now, r->kpa.cfg.rps ? w->stat->request_count : c);
        r->last_activator_stat = now;
        /* The poke (Knative's Poke): scaled to zero and a request is waiting. */
        if (c > 0 && r->last.desired <= 0 && r->ready_pods == 0)
            decide(r, true);
    }
    metrics__wire_stat_messages__free_unpacked(m, NULL);
}

/* ---------------------------------------------------------------- pod scraping */

static void on_scraped(struct http_call *c, const char *err)
{
    struct as_pod *p = c->arg;
    if (err || c->status != 200) {
        log_debug("autoscaler: scrape %s: %s", p->addr, err ? c->detail : "not 200");
        return;
    }
    struct statpb s;
    char name[128];
    size_t len = evbuffer_get_length(c->body);
    if (statpb_decode(evbuffer_pullup(c->body, -1), len, &s, name, sizeof name)) {
        log_warn("autoscaler: %s answered something that is not a Stat", p->addr);
        return;
    }
    /* What came through an activator was counted there (Knative's collector
     * subtracts it the same way). */
    double v = p->rev->kpa.cfg.rps
                   ? s.request_count - s.proxied_request_count
                   : s.average_concurrent_requests - s.average_proxied_concurrent_requests;
    kpa_record(&p->rev->kpa, autoscaler_now(), v > 0 ? v : 0);
}

static void on_scrape(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct autoscaler *as = arg;
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: autoscaler\r\n"
                              "Accept: application/protobuf\r\n\r\n";
    for (struct as_rev *r = as->revs; r; r = r->next)
        for (unsigned i = 0; i < r->npods; i++) {
            struct as_pod *p = &r->pods[i];
            if (!p->call)
                p->call = http_call_new(&p->up, p);
            if (!p->call) {
                /* Memory short (alloc.h): this scrape is skipped, the next tries again. */
                log_error("autoscaler: %s to scrape %s", coldbrew_err_no_memory, p->addr);
                continue;
            }
            if (!p->call->running)
                http_call_start(p->call, req, sizeof req - 1, 0.8, on_scraped, NULL);
        }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct autoscaler *as = arg;
    for (struct as_rev *r = as->revs; r; r = r->next)
        decide(r, false);
}

/* ---------------------------------------------------------------- registry */

static void pods_free(struct as_rev *r)
{
    for (unsigned i = 0; i < r->npods; i++) {
        http_call_free(r->pods[i].call);
        upstream_close_idle(&r->pods[i].up);
    }
    free(r->pods);
    r->pods = NULL;
    r->npods = 0;
}

void autoscaler_set_pods(struct as_rev *r, const char *const *addrs, unsigned n, int ready)
{
    r->ready_pods = ready;
    if (n > AS_MAX_PODS) {
        log_warn("autoscaler: %s/%s has %u pods; scraping the first %u", r->ns, r->name, n,
                 AS_MAX_PODS);
        n = AS_MAX_PODS;
    }
    bool same = n == r->npods;
    for (unsigned i = 0; same && i < n; i++)
        same = !strcmp(addrs[i], r->pods[i].addr);
    if (same)
        return;
    pods_free(r);
    r->pods = calloc(n ? n : 1, sizeof *r->pods);
    if (!r->pods) {
        /* Memory short (alloc.h): no pods scraped until the next update. */
        log_error("autoscaler: %s for the pods of %s/%s", coldbrew_err_no_memory, r->ns, r->name);
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        struct as_pod *p = &r->pods[r->npods];
        char host[64];
        snprintf(host, sizeof host, "%s", addrs[i]);
        char *colon = strrchr(host, ':');
        if (!colon)
            continue;
        *colon = 0;
        if (!upstream_init(&p->up, r->as->base, host, atoi(colon + 1), 1, 4))
            continue;
        snprintf(p->addr, sizeof p->addr, "%s", addrs[i]);
        p->rev = r;
        r->npods++;
    }
}

struct as_rev *autoscaler_add(struct autoscaler *as, const char *ns, const char *name,
                              const struct kpa_config *cfg, as_decide_cb cb, void *arg)
{
    /* Configuration (a revision applied): memory short aborts (alloc.h). */
    struct as_rev *r = xcalloc(1, sizeof *r);
    snprintf(r->ns, sizeof r->ns, "%s", ns);
    snprintf(r->name, sizeof r->name, "%s", name);
    if (!kpa_init(&r->kpa, cfg))
        alloc_fail(0, __FILE__, __LINE__);
    r->last.desired = -1;
    r->cb = cb;
    r->arg = arg;
    r->as = as;
    r->next = as->revs;
    as->revs = r;
    return r;
}

void autoscaler_remove(struct as_rev *r)
{
    struct as_rev **pp = &r->as->revs;
    while (*pp && *pp != r)
        pp = &(*pp)->next;
    if (*pp)
        *pp = r->next;
    pods_free(r);
    kpa_free(&r->kpa);
    free(r);
}

struct autoscaler *autoscaler_start(struct event_base *base, const char *host, int port,
                                    const char **err)
{
    struct autoscaler *as = xcalloc(1, sizeof *as); /* start-up (alloc.h) */
    as->base = base;
    as->ws = ws_server_open(base, host, port, on_stats, as, err);
    if (!as->ws) {
        free(as);
        return NULL;
    }
    as->tick = X_CHECK(event_new(base, -1, EV_PERSIST, on_tick, as));
    as->scrape = X_CHECK(event_new(base, -1, EV_PERSIST, on_scrape, as));
    struct timeval t = clock_tv(AS_TICK_SECONDS), s = clock_tv(AS_SCRAPE_SECONDS);
    event_add(as->tick, &t);
    event_add(as->scrape, &s);
    return as;
}

int autoscaler_port(const struct autoscaler *as)
{
    return ws_server_port(as->ws);
}

void autoscaler_free(struct autoscaler *as)
{
    if (!as)
        return;
    while (as->revs)
        autoscaler_remove(as->revs);
    event_free(as->tick);
    event_free(as->scrape);
    ws_server_free(as->ws);
    free(as);
}
