/* pods.c — see pods.h. */
#include "pods.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/log.h"

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

struct pod_pool *pod_pool_get(const char *dest)
{
    struct pod_pool *p;
    HASH_FIND_STR(pools, dest, p);
    if (p) {
        p->refs++;
        return p;
    }
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
    p = calloc(1, sizeof *p);
    if (!p) {
        log_error("pod pool %s: %s", dest, coldbrew_err_no_memory);
        return NULL; /* as for an address that cannot be used: the pod is skipped */
    }
    if (!pools_base || !upstream_init(&p->up, pools_base, ip, port, pools_max_idle, pools_idle)) {
        log_warn("pod address %s is not an IP:port; ignored", dest);
        free(p);
        return NULL;
    }
    snprintf(p->dest, sizeof p->dest, "%s", dest);
    p->refs = 1;
    HASH_ADD_STR(pools, dest, p);
    return p;
}

void pod_pool_put(struct pod_pool *p)
{
    if (!p || --p->refs)
        return;
    HASH_DEL(pools, p);
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
