/* throttler.c — see throttler.h. */
#include "throttler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"

#define CAPACITY_MAX 2147483647L /* Go's math.MaxInt32 */

enum lb_policy lb_policy_for(long cc)
{
    if (cc <= 0)
        return LB_RANDOM_CHOICE_2;
    if (cc <= 3)
        return LB_FIRST_AVAILABLE;
    return LB_ROUND_ROBIN;
}

void throttler_pick_indices(unsigned num_pods, int index, unsigned num_activators, unsigned *begin,
                            unsigned *end, unsigned *remnants)
{
    *remnants = 0;
    if (num_activators > num_pods) {
        /* Fewer pods than activators: activators share pods round robin. */
        *begin = (unsigned)index % num_pods;
        *end = *begin + 1;
        return;
    }
    unsigned size = num_pods / num_activators;
    *begin = (unsigned)index * size;
    *end = *begin + size;
    *remnants = num_pods % num_activators;
}

long throttler_capacity(long cc, unsigned backends, unsigned num_trackers, unsigned num_activators)
{
    long capacity;
    if (num_trackers > 0) {
        /* Pod-direct: the pods themselves are partitioned between activators. */
        capacity = cc * (long)num_trackers;
    } else {
        /* ClusterIP: kube-proxy spreads load, so divide by the activators. */
        capacity = cc * (long)backends;
        if (capacity > 0) {
            capacity /= (long)(num_activators > 1 ? num_activators : 1);
            if (capacity < 1)
                capacity = 1;
        }
    }
    if (backends > 0 && (cc == 0 || capacity > CAPACITY_MAX))
        capacity = CAPACITY_MAX;
    return capacity;
}

void throttler_init(struct throttler *t, long cc, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    t->cc = cc;
    t->policy = lb_policy_for(cc);
    t->activator_index = -1;
    t->num_activators = 1;
    t->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
}

static void tracker_unref(struct pod_tracker *pt)
{
    if (--pt->refs == 0) {
        pod_pool_put(pt->pool);
        free(pt);
    }
}

void tracker_release(struct pod_tracker *pt)
{
    if (pt->in_flight)
        pt->in_flight--;
    tracker_unref(pt);
}

void throttler_free(struct throttler *t)
{
    for (unsigned i = 0; i < t->npods; i++) {
        t->pods[i]->linked = false;
        tracker_unref(t->pods[i]);
    }
    free(t->pods);
    free(t->assigned);
    memset(t, 0, sizeof *t);
}

/* Knative's assignSlice over the sorted pods (CC = 0 always takes them all). */
static void assign_slice(struct throttler *t)
{
    unsigned n = t->npods;
    t->nassigned = 0;
    if (t->cc <= 0 || t->activator_index < 0 || n <= 1 || t->num_activators <= 1) {
        for (unsigned i = 0; i < n; i++)
            t->assigned[t->nassigned++] = i;
    } else {
        unsigned b, e, rem;
        throttler_pick_indices(n, t->activator_index, t->num_activators, &b, &e, &rem);
        for (unsigned i = b; i < e && i < n; i++)
            t->assigned[t->nassigned++] = i;
        if (rem > 0 && (unsigned)t->activator_index < rem)
            t->assigned[t->nassigned++] = n - rem + (unsigned)t->activator_index;
    }
    if (t->rr_next >= t->nassigned)
        t->rr_next = 0;
}

long throttler_current_capacity(const struct throttler *t)
{
    if (t->cluster_ip)
        return throttler_capacity(t->cc, t->cluster_backends, 0, t->num_activators);
    return throttler_capacity(t->cc, t->npods, t->nassigned, t->num_activators);
}

void throttler_set_activators(struct throttler *t, int index, unsigned count)
{
    if (t->activator_index == index && t->num_activators == count)
        return;
    t->activator_index = index;
    t->num_activators = count ? count : 1;
    assign_slice(t);
}

static int cmp_dest(const void *a, const void *b)
{
    return strcmp((*(struct pod_tracker *const *)a)->dest, (*(struct pod_tracker *const *)b)->dest);
}

void throttler_set_pods(struct throttler *t, const char *const *dests, unsigned n, bool with_pools)
{
    /* Memory short (alloc.h): the previous set stays, logged; the next
     * Endpoints update tries again. */
    struct pod_tracker **next = calloc(n ? n : 1, sizeof *next);
    unsigned *assigned = calloc(n ? n : 1, sizeof *assigned);
    if (!next || !assigned) {
        log_error("throttler: %s for %u pods; keeping the previous set", coldbrew_err_no_memory, n);
        free(next);
        free(assigned);
        return;
    }
    unsigned m = 0;
    for (unsigned i = 0; i < n; i++) {
        struct pod_tracker *found = NULL;
        for (unsigned j = 0; j < t->npods && !found; j++)
            if (t->pods[j] && !strcmp(t->pods[j]->dest, dests[i])) {
                found = t->pods[j];
                t->pods[j] = NULL; /* carried over */
            }
        for (unsigned j = 0; j < m && !found; j++)
            if (!strcmp(next[j]->dest, dests[i]))
                found = next[j], m--; /* duplicate in the input: keep one */
        if (!found) {
            found = calloc(1, sizeof *found);
            if (!found) {
                log_error("throttler: %s for pod %s; skipped", coldbrew_err_no_memory, dests[i]);
                continue;
            }
            snprintf(found->dest, sizeof found->dest, "%s", dests[i]);
            found->refs = 1;
            found->linked = true;
            if (with_pools)
                found->pool = pod_pool_for_requests(dests[i], t->ns, t->cluster_ip_next);
        }
        next[m++] = found;
    }
    /* Pods that left the healthy set: unlink; their last request frees them. */
    for (unsigned j = 0; j < t->npods; j++)
        if (t->pods[j]) {
            t->pods[j]->linked = false;
            tracker_unref(t->pods[j]);
        }
    free(t->pods);
    qsort(next, m, sizeof *next, cmp_dest);
    t->pods = next;
    t->npods = m;
    t->cluster_ip = false;
    free(t->assigned);
    t->assigned = assigned; /* m <= n slots */
    assign_slice(t);
}

void throttler_set_cluster_ip(struct throttler *t, const char *dest, unsigned ready,
                              bool with_pools)
{
    t->cluster_ip_next = true;
    throttler_set_pods(t, &dest, 1, with_pools);
    t->cluster_ip_next = false;
    t->cluster_ip = true;
    t->cluster_backends = ready;
}

static uint64_t rnd(struct throttler *t)
{
    /* xorshift64*: a cheap, seeded generator is all P2C needs. */
    t->rng ^= t->rng >> 12;
    t->rng ^= t->rng << 25;
    t->rng ^= t->rng >> 27;
    return t->rng * 2685821657736338717ull;
}

static struct pod_tracker *reserve(struct pod_tracker *pt)
{
    pt->in_flight++;
    pt->refs++;
    return pt;
}

struct pod_tracker *throttler_pick(struct throttler *t)
{
    if (t->cluster_ip) {
        long cap = throttler_current_capacity(t);
        if (t->npods == 1 && cap > 0 && (long)t->pods[0]->in_flight < cap)
            return reserve(t->pods[0]);
        return NULL;
    }
    unsigned n = t->nassigned;
    if (!n)
        return NULL;
    switch (t->policy) {
    case LB_RANDOM_CHOICE_2: {
        if (n == 1)
            return reserve(t->pods[t->assigned[0]]);
        unsigned a = (unsigned)(rnd(t) % n), b;
        if (n == 2)
            b = 1 - a;
        else
            do
                b = (unsigned)(rnd(t) % n);
            while (b == a);
        struct pod_tracker *pa = t->pods[t->assigned[a]], *pb = t->pods[t->assigned[b]];
        if (pa->in_flight == pb->in_flight)
            return reserve(rnd(t) & 1 ? pa : pb);
        return reserve(pa->in_flight < pb->in_flight ? pa : pb);
    }
    case LB_FIRST_AVAILABLE:
        for (unsigned i = 0; i < n; i++) {
            struct pod_tracker *pt = t->pods[t->assigned[i]];
            if (pt->in_flight < (unsigned long)t->cc)
                return reserve(pt);
        }
        return NULL;
    case LB_ROUND_ROBIN:
        if (t->rr_next >= n)
            t->rr_next = 0;
        for (unsigned k = 0; k < n; k++) {
            unsigned i = (t->rr_next + k) % n;
            struct pod_tracker *pt = t->pods[t->assigned[i]];
            if (pt->in_flight < (unsigned long)t->cc) {
                t->rr_next = i + 1;
                return reserve(pt);
            }
        }
        return NULL;
    }
    return NULL;
}
