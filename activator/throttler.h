/* throttler.h — the activator's per-revision admission and load balancing
 * (Knative §3: pkg/activator/net/throttler.go, lb_policy.go).
 *
 * Knative holds two levels of breakers (a revision breaker whose capacity is
 * the sum of the per-pod ones, and a breaker per pod) because many goroutines
 * race for them. coldbrew runs one loop, so the same admission is simpler to
 * state and to check: a request waits in its revision's FIFO and is
 * dispatched when the load-balancing policy can reserve a slot on one of the
 * pods assigned to this activator. With CC > 0 a pod takes at most CC
 * requests from this activator; with CC = 0 there is no per-pod limit and
 * requests wait only while there is no healthy pod.
 *
 * Pods are kept sorted by their "ip:port" string, and this activator's slice
 * of them follows Knative's rules exactly (string sort, integer division,
 * remnants to the first activators), so C and Go activators can share a
 * revision without double-booking or orphaning pods.
 *
 * Ownership: the throttler owns its pod trackers. A tracker that leaves the
 * healthy set while requests are on it is unlinked but freed only when its
 * last request releases it (tracker_release). */
#ifndef ACTIVATOR_THROTTLER_H
#define ACTIVATOR_THROTTLER_H

#include <stdbool.h>
#include <stdint.h>

#include "pods.h"

enum lb_policy {
    LB_RANDOM_CHOICE_2, /* CC = 0: the better of two random pods */
    LB_FIRST_AVAILABLE, /* CC 1-3: first pod (sorted) with a free slot */
    LB_ROUND_ROBIN,     /* CC >= 4: round robin over pods with a free slot */
};

struct pod_tracker {
    char dest[64];         /* "ip:port": the sort key */
    struct pod_pool *pool; /* keep-alive connections to this pod (a reference) */
    unsigned in_flight;    /* requests this activator has on the pod */
    unsigned refs;         /* 1 while in the throttler, +1 per request */
    bool linked;
};

struct throttler {
    char ns[64]; /* the revision's namespace: the SAN pods must carry under internal TLS */
    long cc;
    enum lb_policy policy;
    struct pod_tracker **pods; /* healthy pods, sorted by dest */
    unsigned npods, cap_pods;
    unsigned *assigned; /* indices into pods: this activator's slice */
    unsigned nassigned;
    int activator_index; /* -1 until this activator sees itself in the public endpoints */
    unsigned num_activators;
    unsigned rr_next;
    uint64_t rng;
    /* ClusterIP mode (§3.8): pods[0] is the private Service and the
     * revision's capacity is CC x ready pods / activators, balanced by
     * kube-proxy or the mesh behind it. */
    bool cluster_ip;
    bool cluster_ip_next; /* set_pods is called for the ClusterIP (TLS: its port 443) */
    unsigned cluster_backends;
};

enum lb_policy lb_policy_for(long cc);

/* Knative's pickIndices: the slice [*begin, *end) of num_pods sorted pods for
 * activator `index` of `num_activators`, and how many remnant pods exist. */
void throttler_pick_indices(unsigned num_pods, int index, unsigned num_activators, unsigned *begin,
                            unsigned *end, unsigned *remnants);
/* Knative's calculateCapacity (pod-direct when num_trackers > 0, else ClusterIP). */
long throttler_capacity(long cc, unsigned backends, unsigned num_trackers, unsigned num_activators);

void throttler_init(struct throttler *t, long cc, uint64_t seed);
void throttler_free(struct throttler *t);
/* This activator's place among the revision's activators (public endpoints). */
void throttler_set_activators(struct throttler *t, int index, unsigned count);
/* The healthy pods ("ip:port" each). Trackers of pods that stay keep their
 * counters and pools; new ones take a reference on the pod's pool when
 * `with_pools` (unit tests run without). */
void throttler_set_pods(struct throttler *t, const char *const *dests, unsigned n, bool with_pools);
/* Route everything to the private Service's ClusterIP ("ip:port") behind
 * which `ready` pods serve (Knative's podsAddressable = false). A later
 * throttler_set_pods goes back to pod-direct. */
void throttler_set_cluster_ip(struct throttler *t, const char *dest, unsigned ready,
                              bool with_pools);
/* A pod slot for one request, or NULL when none is free now. */
struct pod_tracker *throttler_pick(struct throttler *t);
/* The request is done with its pod. */
void tracker_release(struct pod_tracker *pt);
/* Capacity as Knative logs it (pod-direct). */
long throttler_current_capacity(const struct throttler *t);

#endif
