/* pods.c — see pods.h. */
#include "pods.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "proxy/h2_pool.h"
#include "core/log.h"

static struct pod_pool *pools;
static struct event_base *pools_base;
static unsigned pools_max_idle = 100;
static double pools_idle = 4;

void pod_pools_init(struct event_base *base, unsigned max_idle, double idle_seconds)
{
    pools_base = base;
    pools_max_idle = max_idle;
    pools_idle = idle_seconds;
}

static struct upstream_tls *pools_tls;
static int pools_tls_pod_port = 8112, pools_tls_cluster_port = 443;
static const struct h2_limits *pools_h2_lim;
static unsigned long released_tls_failures, released_tls_full, released_tls_resumed;

/* dest -> the TLS port its Endpoints (or Service) named "https". */
struct tls_port {
    char dest[64];
    int port;
    UT_hash_handle hh;
};
static struct tls_port *tls_ports;

static struct pod_pool *pool_new(const char *key, const char *dest)
{
    char host[64];
    snprintf(host, sizeof host, "%s", dest);
    char *colon = strrchr(host, ':');
    int port = 80;
    if (colon) {
        *colon = 0;
        port = atoi(colon + 1);
    }
    char *ip = host;
    if (ip[0] == '[') {
        ip++;
        ip[strlen(ip) - 1] = 0;
    }
    struct pod_pool *p = calloc(1, sizeof *p);
    if (!p) {
        log_error("pod pool %s: %s", dest, coldbrew_err_no_memory);
        return NULL; /* as for an address that cannot be used: the pod is skipped */
    }
    if (!pools_base || !upstream_init(&p->up, pools_base, ip, port, pools_max_idle, pools_idle)) {
        log_warn("pod address %s is not an IP:port; ignored", dest);
        free(p);
        return NULL;
    }
    snprintf(p->dest, sizeof p->dest, "%s", key);
    p->refs = 1;
    HASH_ADD_STR(pools, dest, p);
    return p;
}

struct pod_pool *pod_pool_get(const char *dest)
{
    struct pod_pool *p;
    HASH_FIND_STR(pools, dest, p);
    if (p) {
        p->refs++;
        return p;
    }
    return pool_new(dest, dest);
}

void pod_pools_set_tls(struct upstream_tls *t, int pod_port, int cluster_port,
                       const struct h2_limits *h2)
{
    pools_tls = t;
    pools_h2_lim = h2;
    pools_tls_pod_port = pod_port;
    pools_tls_cluster_port = cluster_port;
}

void pod_tls_port_note(const char *dest, int tls_port)
{
    struct tls_port *tp;
    HASH_FIND_STR(tls_ports, dest, tp);
    if (tls_port <= 0) {
        if (tp) {
            HASH_DEL(tls_ports, tp);
            free(tp);
        }
        return;
    }
    if (!tp) {
        tp = calloc(1, sizeof *tp);
        if (!tp)
            return;
        snprintf(tp->dest, sizeof tp->dest, "%s", dest);
        HASH_ADD_STR(tls_ports, dest, tp);
    }
    tp->port = tls_port;
}

struct pod_pool *pod_pool_for_requests(const char *dest, const char *ns, bool cluster)
{
    if (!pools_tls)
        return pod_pool_get(dest);
    /* Knative's useSecurePort: the same address, port 8112 (443 for the ClusterIP). */
    struct tls_port *tp;
    HASH_FIND_STR(tls_ports, dest, tp);
    int port = tp ? tp->port : cluster ? pools_tls_cluster_port : pools_tls_pod_port;
    char tdest[64];
    snprintf(tdest, sizeof tdest, "%s", dest);
    char *colon = strrchr(tdest, ':');
    if (colon)
        snprintf(colon, sizeof tdest - (size_t)(colon - tdest), ":%d", port);
    char key[160];
    snprintf(key, sizeof key, "tls/%s/%s", ns, tdest);
    struct pod_pool *p;
    HASH_FIND_STR(pools, key, p);
    if (p) {
        p->refs++;
        return p;
    }
    p = pool_new(key, tdest);
    if (p) {
        p->up.tls = pools_tls;
        snprintf(p->up.tls_ns, sizeof p->up.tls_ns, "%s", ns);
        /* HTTP/2 requests (protocol mirroring) go over TLS too, h2 by ALPN:
         * the pool is made here so that it knows (the proxy makes a plain
         * h2c one on first use otherwise). */
        p->up.h2 = h2_pool_new(pools_base, &p->up.addr, pools_h2_lim, 0, pools_idle);
        if (p->up.h2)
            h2_pool_set_tls(p->up.h2, &p->up);
    }
    return p;
}

void pod_pools_tls_counts(unsigned long *full, unsigned long *resumed, unsigned long *refused)
{
    *full = released_tls_full;
    *resumed = released_tls_resumed;
    *refused = released_tls_failures;
    struct pod_pool *p, *tmp;
    HASH_ITER(hh, pools, p, tmp)
    {
        *full += p->up.tls_full;
        *resumed += p->up.tls_resumed;
        *refused += p->up.tls_failures;
    }
}

void pod_pool_put(struct pod_pool *p)
{
    if (!p || --p->refs)
        return;
    HASH_DEL(pools, p);
    released_tls_failures += p->up.tls_failures;
    released_tls_full += p->up.tls_full;
    released_tls_resumed += p->up.tls_resumed;
    /* Every request holds its tracker and every tracker and probe holds the
     * pool, so nothing is using a connection now: the idle ones are all. */
    upstream_close_idle(&p->up);
    upstream_release_h2(&p->up);
    if (p->up.nconns)
        log_error("pod pool %s released with %u busy connections", p->dest, p->up.nconns);
    free(p);
}

unsigned pod_pools_count(void)
{
    return HASH_COUNT(pools);
}
