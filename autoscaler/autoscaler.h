/* autoscaler.h — the KPA autoscaler's runtime: where its numbers come from
 * and when it decides (../shared/spec/knative-activator.md §8.1).
 *
 *  - Scrapes every registered pod's queue-proxy Stat (GET /metrics on the
 *    pod's 9090, protobuf) once a second and records its concurrency less
 *    the proxied part (the activator reports that itself, §8.1).
 *  - Serves the activators' websocket (`ws://…:8080` in a cluster; any port
 *    here): binary WireStatMessages batches, recorded per revision. A stat
 *    with concurrency for a revision whose last decision was 0 is a poke:
 *    it decides at once instead of at the next tick.
 *  - Decides every revision every 2 s (Knative's tick) and hands the
 *    decision to the revision's callback; the owner (the local platform)
 *    scales.
 *
 * Ownership: the autoscaler owns its revisions (as_rev) from autoscaler_add
 * to autoscaler_remove. */
#ifndef AUTOSCALER_AUTOSCALER_H
#define AUTOSCALER_AUTOSCALER_H

#include <event2/event.h>
#include <stdbool.h>

#include "kpa.h"

#define AS_TICK_SECONDS   2.0
#define AS_SCRAPE_SECONDS 1.0
#define AS_MAX_PODS       256 /* scraped per revision; more are ignored with a warning */

struct autoscaler;
struct as_rev;
typedef void (*as_decide_cb)(struct as_rev *r, const struct kpa_decision *d, bool poke, void *arg);

struct as_rev {
    char ns[64], name[190];
    struct kpa kpa;
    struct kpa_decision last;
    double last_activator_stat; /* when the activator last reported it (monotonic s) */
    as_decide_cb cb;
    void *arg;
    int ready_pods;
    struct as_pod *pods;
    unsigned npods;
    struct autoscaler *as;
    struct as_rev *next;
};

/* Listens for activators on host:port (0: a free port). NULL with err set. */
struct autoscaler *autoscaler_start(struct event_base *base, const char *host, int port,
                                    const char **err);
int autoscaler_port(const struct autoscaler *as);
struct as_rev *autoscaler_add(struct autoscaler *as, const char *ns, const char *name,
                              const struct kpa_config *cfg, as_decide_cb cb, void *arg);
void autoscaler_remove(struct as_rev *r);
/* The revision's pods: their queue-proxy stat addresses "ip:port", and how
 * many of them are ready (the KPA's readyPods). */
void autoscaler_set_pods(struct as_rev *r, const char *const *stat_addrs, unsigned n, int ready);
void autoscaler_free(struct autoscaler *as);
/* Monotonic seconds, the clock the KPA is fed with. */
double autoscaler_now(void);

#endif
