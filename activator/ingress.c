/* ingress.c — the activator's ingress role (coldbrew's, off by default;
 * COLDBREW_INGRESS=true): what Kourier or Istio do in a cluster, for the
 * local platform where the activator is the front door.
 *
 * It watches Knative's Ingress objects (networking.internal.knative.dev/
 * v1alpha1) and keeps, per host of every rule, the first path's splits:
 * percent, the revision named by the split's appendHeaders
 * (Knative-Serving-Revision / -Namespace, as Knative's route reconciler
 * writes them) and any other appendHeaders to add. A request without
 * revision headers is routed by its Host (port and case ignored): a split
 * is drawn by percentage, and then the request is handled as any other.
 *
 * Hosts are unique across Ingresses; the newest object wins a conflict. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "activator.h"

struct route {
    char host[256];
    char owner[256]; /* the Ingress "ns/name" this rule came from */
    unsigned nsplits;
    struct ingress_split splits[INGRESS_MAX_SPLITS];
    UT_hash_handle hh;
};

static struct route *routes;
static uint64_t rng = 0x2545f4914f6cdd1dull;

static void lower_host(char *dst, size_t cap, const char *src, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < cap && src[i] != ':'; i++)
        dst[n++] = (char)tolower((unsigned char)src[i]);
    dst[n] = 0;
}

static void drop_owner(const char *owner)
{
    struct route *r, *tmp;
    HASH_ITER(hh, routes, r, tmp)
    {
        if (!strcmp(r->owner, owner)) {
            HASH_DEL(routes, r);
            free(r);
        }
    }
}

static bool parse_split(json_t *js, struct ingress_split *s)
{
    memset(s, 0, sizeof *s);
    json_t *pct = json_object_get(js, "percent");
    s->percent = json_is_integer(pct) ? (unsigned)json_integer_value(pct) : 100;
    const char *k;
    json_t *v;
    size_t n = 0;
    json_object_foreach(json_object_get(js, "appendHeaders"), k, v)
    {
        const char *val = json_string_value(v);
        if (!val)
            continue;
        if (!strcasecmp(k, "Knative-Serving-Revision"))
            snprintf(s->rev, sizeof s->rev, "%s", val);
        else if (!strcasecmp(k, "Knative-Serving-Namespace"))
            snprintf(s->ns, sizeof s->ns, "%s", val);
        else {
            int w = snprintf(s->extra + n, sizeof s->extra - n, "%s: %s\r\n", k, val);
            if (w > 0 && (size_t)w < sizeof s->extra - n)
                n += (size_t)w;
        }
    }
    if (!s->ns[0]) /* Knative names the namespace in serviceNamespace too */
        snprintf(s->ns, sizeof s->ns, "%s",
                 json_string_value(json_object_get(js, "serviceNamespace"))
                     ? json_string_value(json_object_get(js, "serviceNamespace"))
                     : "");
    return s->rev[0] && s->ns[0];
}

void ingress_on_object(void *arg, enum k8s_event ev, json_t *obj)
{
    (void)arg;
    if (ev == K8S_SYNCED) {
        act->synced++;
        return;
    }
    char owner[256];
    k8s_key(obj, owner, sizeof owner);
    drop_owner(owner);
    if (ev == K8S_DELETED)
        return;
    size_t i, j;
    json_t *rule, *host;
    json_array_foreach(k8s_get(obj, "spec.rules"), i, rule)
    {
        json_t *path0 = json_array_get(k8s_get(rule, "http.paths"), 0);
        struct route tmp = {0};
        size_t k;
        json_t *js;
        json_array_foreach(json_object_get(path0, "splits"), k, js)
        {
            if (tmp.nsplits == INGRESS_MAX_SPLITS) {
                log_warn("Ingress %s: more than %d splits in a rule; the rest are ignored", owner,
                         INGRESS_MAX_SPLITS);
                break;
            }
            if (parse_split(js, &tmp.splits[tmp.nsplits]))
                tmp.nsplits++;
            else
                log_warn("Ingress %s: a split without Knative-Serving-Revision/-Namespace "
                         "headers is ignored",
                         owner);
        }
        json_array_foreach(json_object_get(rule, "hosts"), j, host)
        {
            const char *hs = json_string_value(host);
            if (!hs)
                continue;
            struct route *r;
            char lh[256];
            lower_host(lh, sizeof lh, hs, strlen(hs));
            HASH_FIND_STR(routes, lh, r);
            if (r) {
                log_warn("host %s is claimed by Ingress %s and %s; %s wins", lh, r->owner, owner,
                         owner);
                HASH_DEL(routes, r);
                free(r);
            }
            r = malloc(sizeof *r);
            if (!r) {
                log_error("ingress: %s for host %s; not routed", coldbrew_err_no_memory, lh);
                continue;
            }
            *r = tmp;
            snprintf(r->host, sizeof r->host, "%s", lh);
            snprintf(r->owner, sizeof r->owner, "%s", owner);
            HASH_ADD_STR(routes, host, r);
        }
    }
}

const struct ingress_split *ingress_pick(const char *host, size_t len)
{
    char lh[256];
    lower_host(lh, sizeof lh, host, len);
    struct route *r;
    HASH_FIND_STR(routes, lh, r);
    if (!r || !r->nsplits)
        return NULL;
    unsigned total = 0;
    for (unsigned i = 0; i < r->nsplits; i++)
        total += r->splits[i].percent;
    if (!total)
        return NULL;
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    unsigned x = (unsigned)((rng * 2685821657736338717ull) >> 33) % total;
    for (unsigned i = 0; i < r->nsplits; i++) {
        if (x < r->splits[i].percent)
            return &r->splits[i];
        x -= r->splits[i].percent;
    }
    return &r->splits[r->nsplits - 1];
}

void ingress_free_all(void)
{
    struct route *r, *tmp;
    HASH_ITER(hh, routes, r, tmp)
    {
        HASH_DEL(routes, r);
        free(r);
    }
}
