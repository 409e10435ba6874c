/* revisions.c — the revision registry and each revision's backends.
 *
 * Three watches feed it (Knative §4.1, §3.4), and objects may arrive in any
 * order: a revision's Endpoints before the Revision itself creates the entry
 * (exists = false) and fills it in later.
 *   Revisions            -> exists, containerConcurrency, timeouts, h2c
 *   private Endpoints    -> backends: every address (ready or not) is probed
 *                           with GET /healthz (K-Network-Probe: queue, UA
 *                           Knative-Activator-Probe); healthy on 200 "queue".
 *                           A healthy pod is not probed again unless it moves
 *                           from ready to not-ready. Unhealthy ones are
 *                           re-probed every PROBE_FREQUENCY.
 *   public Endpoints     -> this activator's index and count (sorted IPs)
 *   private Services     -> the ClusterIP of the revision's http(2) port
 * The healthy set goes to the throttler, and waiting requests are dispatched.
 *
 * Probing a not-ready address and trusting its answer is Knative's "probe
 * optimisation" (the main cold-start shortcut); coldbrew always does it (the
 * exec-probe and startup-probe exceptions are not modelled yet).
 *
 * Meshes (§3.8). With mesh-compatibility-mode auto (the default), when no
 * pod probe succeeded, none answered with a status other than 502/503 (what
 * a sidecar proxy refusing the activator looks like; transport errors count
 * too) and no pod probe is still running, the private Service's ClusterIP is
 * probed the same way; once it answers, the revision routes everything to
 * the ClusterIP until its private Endpoints are deleted, with capacity
 * CC x ready pods / activators. `enabled` always routes to the ClusterIP (no
 * pod probes); `disabled` trusts Kubernetes' ready addresses without
 * probing and never falls back. Passthrough LB (mesh pod addressability)
 * probes and sends to pods with Host "<rev>-private.<ns>" and
 * K-Passthrough-Lb: true, and never falls back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "activator.h"

#define KEY_MAX 256
/* Addresses taken from one Endpoints object; beyond these, the rest are
 * ignored with a warning (README: "Limits"). */
#define MAX_POD_ADDRESSES       1024
#define MAX_ACTIVATOR_ADDRESSES 256

/* "ns/name" into key (KEY_MAX); false when it does not fit. No printf: this runs per request. */
static bool make_key(char *key, const char *ns, size_t nsl, const char *name, size_t nl)
{
    if (nsl + nl + 2 > KEY_MAX)
        return false;
    memcpy(key, ns, nsl);
    key[nsl] = '/';
    memcpy(key + nsl + 1, name, nl);
    key[nsl + 1 + nl] = 0;
    return true;
}

struct revision *revision_find_n(const char *ns, size_t nsl, const char *name, size_t nl)
{
    char key[KEY_MAX];
    if (!make_key(key, ns, nsl, name, nl))
        return NULL;
    struct revision *r;
    HASH_FIND(hh, act->revisions, key, nsl + 1 + nl, r);
    return r;
}

struct revision *revision_find(const char *ns, const char *name)
{
    return revision_find_n(ns, strlen(ns), name, strlen(name));
}

static void on_probe_tick(evutil_socket_t fd, short what, void *arg);

static struct revision *revision_get(const char *ns, const char *name)
{
    struct revision *r = revision_find(ns, name);
    if (r)
        return r;
    r = calloc(1, sizeof *r);
    snprintf(r->key, sizeof r->key, "%s/%s", ns, name);
    snprintf(r->ns, sizeof r->ns, "%s", ns);
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->private_host, sizeof r->private_host, "%.180s-private.%.63s", name, ns);
    r->timeout = 300;
    TAILQ_INIT(&r->waiters);
    throttler_init(&r->thr, 0, (uint64_t)(uintptr_t)r ^ clock_now_ns());
    snprintf(r->thr.ns, sizeof r->thr.ns, "%s", ns);
    r->probe_tick = evtimer_new(act->base, on_probe_tick, r);
    stats_init(&r->stats, clock_now_ns());
    HASH_ADD_STR(act->revisions, key, r);
    return r;
}

static void cluster_drop(struct revision *r)
{
    http_call_free(r->cluster_probe);
    r->cluster_probe = NULL;
    pod_pool_put(r->cluster_pool);
    r->cluster_pool = NULL;
}

static void backend_drop(struct backend *b)
{
    http_call_free(b->probe);
    b->probe = NULL;
    pod_pool_put(b->pool);
    b->pool = NULL;
}

void revision_maybe_free(struct revision *r)
{
    if (r->exists || r->nbackends || r->nwaiting || r->active || r->reporting || r->cluster_dest[0])
        return;
    HASH_DEL(act->revisions, r);
    cluster_drop(r);
    event_free(r->probe_tick);
    throttler_free(&r->thr);
    free(r->backends);
    cold_free(r);
    free(r);
}

void revisions_free_all(void)
{
    struct revision *r, *tmp;
    HASH_ITER(hh, act->revisions, r, tmp)
    {
        for (unsigned i = 0; i < r->nbackends; i++)
            backend_drop(&r->backends[i]);
        r->nbackends = 0;
        r->cluster_dest[0] = 0;
        r->exists = false;
        r->nwaiting = r->active = 0;
        r->reporting = false;
        revision_maybe_free(r);
    }
}

/* ---------------------------------------------------------------- Revisions */

static long json_long(json_t *o, const char *path, long def)
{
    json_t *v = k8s_get(o, path);
    return json_is_integer(v) ? (long)json_integer_value(v) : def;
}

void revisions_on_revision(void *arg, enum k8s_event ev, json_t *obj)
{
    (void)arg;
    if (ev == K8S_SYNCED) {
        act->synced++;
        return;
    }
    const char *ns = k8s_str(obj, "metadata.namespace"), *name = k8s_str(obj, "metadata.name");
    if (!ns || !name)
        return;
    if (ev == K8S_DELETED) {
        struct revision *r = revision_find(ns, name);
        if (r) {
            r->exists = false;
            revision_maybe_free(r);
        }
        return;
    }
    struct revision *r = revision_get(ns, name);
    bool was = r->exists;
    r->exists = true;
    json_t *labels = k8s_get(obj, "metadata.labels");
    const char *svc = json_string_value(json_object_get(labels, "serving.knative.dev/service"));
    const char *cfg =
        json_string_value(json_object_get(labels, "serving.knative.dev/configuration"));
    snprintf(r->service, sizeof r->service, "%s", svc ? svc : "");
    snprintf(r->configuration, sizeof r->configuration, "%s", cfg ? cfg : "");
    /* A revision the platform marked failed (ingress role: the local
     * platform) is answered 503 with its reason instead of held. */
    r->failed[0] = 0;
    size_t ci;
    json_t *cond;
    if (act->cfg.ingress)
        json_array_foreach(k8s_get(obj, "status.conditions"), ci, cond)
        {
            const char *type = json_string_value(json_object_get(cond, "type"));
            const char *st = json_string_value(json_object_get(cond, "status"));
            const char *msg = json_string_value(json_object_get(cond, "message"));
            if (type && st && !strcmp(type, "Ready") && !strcmp(st, "False"))
                snprintf(r->failed, sizeof r->failed, "%s", msg ? msg : "revision failed");
        }
    if (r->failed[0])
        revision_fail_waiting(r); /* held requests get the reason now, not at the timeout */
    r->timeout = (double)json_long(obj, "spec.timeoutSeconds", 300);
    r->response_start_timeout = (double)json_long(obj, "spec.responseStartTimeoutSeconds", 0);
    r->idle_timeout = (double)json_long(obj, "spec.idleTimeoutSeconds", 0);
    const char *st = json_string_value(
        json_object_get(k8s_get(obj, "metadata.annotations"), "coldbrew.dev/server-timing"));
    r->server_timing = st && !strcmp(st, "enabled"); /* the cold-start ledger's header */
    json_t *c0 = json_array_get(json_object_get(json_object_get(obj, "spec"), "containers"), 0);
    json_t *p0 = json_array_get(json_object_get(c0, "ports"), 0);
    const char *pname = json_string_value(json_object_get(p0, "name"));
    r->h2c = pname && !strcmp(pname, "h2c");
    long cc = json_long(obj, "spec.containerConcurrency", 0);
    if (!was || cc != r->thr.cc) {
        /* containerConcurrency is immutable in a revision; read it once (a
         * revision first seen through its Endpoints gets it now). */
        r->thr.cc = cc;
        r->thr.policy = lb_policy_for(cc);
        throttler_set_activators(&r->thr, r->thr.activator_index, r->thr.num_activators);
        log_info("revision %s: containerConcurrency %ld, timeout %gs", r->key, cc, r->timeout);
        revision_dispatch(r);
    }
}

/* ---------------------------------------------------------------- backends */

static unsigned count_ready(const struct revision *r)
{
    unsigned n = 0;
    for (unsigned i = 0; i < r->nbackends; i++)
        n += r->backends[i].ready;
    return n;
}

static void publish_healthy(struct revision *r)
{
    if (r->cluster_mode) {
        long before = throttler_current_capacity(&r->thr);
        throttler_set_cluster_ip(&r->thr, r->cluster_dest, count_ready(r), true);
        if (before != throttler_current_capacity(&r->thr))
            log_info("Set capacity to %ld (ClusterIP %s, ready pods: %u) for %s",
                     throttler_current_capacity(&r->thr), r->cluster_dest, count_ready(r), r->key);
        revision_dispatch(r);
        return;
    }
    const char *dests[r->nbackends ? r->nbackends : 1];
    unsigned n = 0;
    for (unsigned i = 0; i < r->nbackends; i++)
        if (r->backends[i].healthy)
            dests[n++] = r->backends[i].dest;
    unsigned before = r->thr.npods;
    bool was_cluster = r->thr.cluster_ip;
    throttler_set_pods(&r->thr, dests, n, true);
    if (before != r->thr.npods || was_cluster)
        log_info("Set capacity to %ld (backends: %u, index: %d/%u) for %s",
                 throttler_current_capacity(&r->thr), n, r->thr.activator_index,
                 r->thr.num_activators, r->key);
    revision_dispatch(r);
}

static void schedule_probes(struct revision *r);

/* Knative's probe verdict: 200 with the body "queue". */
static bool probe_ok(struct http_call *c, const char *err)
{
    return !err && c->status == 200 && evbuffer_get_length(c->body) == 5 &&
           !memcmp(evbuffer_pullup(c->body, -1), "queue", 5);
}

static void start_probe(struct http_call *c, const char *host, http_call_done_cb done)
{
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /healthz HTTP/1.1\r\nHost: %s\r\nK-Network-Probe: queue\r\n"
                     "User-Agent: Knative-Activator-Probe\r\n%s\r\n",
                     host, act->cfg.passthrough_lb ? "K-Passthrough-Lb: true\r\n" : "");
    http_call_start(c, req, (size_t)n, act->cfg.probe_timeout, done, NULL);
}

static void on_cluster_probe_done(struct http_call *c, const char *err)
{
    struct revision *r = c->arg;
    if (probe_ok(c, err) && !r->cluster_mode) {
        r->cluster_mode = true;
        log_info("revision %s: pods not addressable, routing to the private Service's "
                 "ClusterIP %s",
                 r->key, r->cluster_dest);
        publish_healthy(r);
    } else if (!r->cluster_mode) {
        log_debug("probe ClusterIP %s (%s): %s", r->cluster_dest, r->key, err ? err : "not ready");
    }
    schedule_probes(r);
}

static void probe_cluster(struct revision *r)
{
    if (!r->cluster_dest[0] || r->cluster_mode)
        return;
    if (!r->cluster_pool)
        r->cluster_pool = pod_pool_get(r->cluster_dest);
    if (!r->cluster_pool)
        return;
    if (!r->cluster_probe)
        r->cluster_probe = http_call_new(&r->cluster_pool->up, r);
    if (!r->cluster_probe->running)
        start_probe(r->cluster_probe, r->cluster_dest, on_cluster_probe_done);
}

/* Mesh auto: fall back to the ClusterIP once a probe round found no pod
 * healthy and nothing but mesh-shaped failures (§3.8). */
static void maybe_fall_back(struct revision *r)
{
    if (act->cfg.mesh_mode != MESH_AUTO || act->cfg.passthrough_lb || r->cluster_mode ||
        !r->cluster_dest[0] || !r->nbackends)
        return;
    for (unsigned i = 0; i < r->nbackends; i++) {
        struct backend *b = &r->backends[i];
        if (b->healthy || b->nonmesh || (b->probe && b->probe->running))
            return;
    }
    probe_cluster(r);
}

static void on_probe_done(struct http_call *c, const char *err)
{
    struct backend *b = c->arg;
    struct revision *r = b->rev;
    bool ok = probe_ok(c, err);
    /* A status other than 502/503 means the pod itself answered: no mesh. */
    b->nonmesh = !ok && !err && c->status != 502 && c->status != 503;
    if (!ok)
        log_debug("probe %s (%s): %s", b->dest, r->key, err ? err : "not ready");
    if (ok && !b->healthy) {
        b->healthy = true;
        publish_healthy(r);
    }
    if (!ok)
        maybe_fall_back(r);
    schedule_probes(r);
}

static void probe(struct backend *b)
{
    if (!b->pool)
        return;
    if (!b->probe)
        b->probe = http_call_new(&b->pool->up, b);
    if (!b->probe->running)
        start_probe(b->probe, act->cfg.passthrough_lb ? b->rev->private_host : b->dest,
                    on_probe_done);
}

/* Whether the PROBE_FREQUENCY ticker should run: while some address is not
 * yet healthy (pods), or while the ClusterIP has not answered (enabled). */
static bool wants_probing(const struct revision *r)
{
    if (r->cluster_mode || act->cfg.mesh_mode == MESH_DISABLED)
        return false;
    if (act->cfg.mesh_mode == MESH_ENABLED)
        return r->nbackends > 0 && r->cluster_dest[0];
    for (unsigned i = 0; i < r->nbackends; i++)
        if (!r->backends[i].healthy)
            return true;
    return false;
}

static void schedule_probes(struct revision *r)
{
    if (wants_probing(r) && !event_pending(r->probe_tick, EV_TIMEOUT, NULL)) {
        struct timeval tv = clock_tv(act->cfg.probe_frequency);
        event_add(r->probe_tick, &tv);
    }
}

/* Probe what this revision's mode asks for now. */
static void probe_round(struct revision *r)
{
    if (r->cluster_mode)
        return;
    switch (act->cfg.mesh_mode) {
    case MESH_ENABLED:
        if (r->nbackends)
            probe_cluster(r);
        break;
    case MESH_DISABLED:
        break;
    case MESH_AUTO:
        for (unsigned i = 0; i < r->nbackends; i++)
            if (!r->backends[i].healthy)
                probe(&r->backends[i]);
        maybe_fall_back(r);
        break;
    }
    schedule_probes(r);
}

static void on_probe_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    probe_round(arg);
}

/* Addresses "ip:port" from subsets whose port is named http (or http2). */
static unsigned collect(json_t *obj, bool h2c, const char *which, char out[][64], bool *ready,
                        unsigned max, unsigned n, bool is_ready)
{
    size_t i, j, k;
    json_t *subset, *addr, *port;
    json_array_foreach(json_object_get(obj, "subsets"), i, subset)
    {
        long pnum = -1, tls = -1;
        json_array_foreach(json_object_get(subset, "ports"), k, port)
        {
            const char *pn = json_string_value(json_object_get(port, "name"));
            if (pn && !strcmp(pn, h2c ? "http2" : "http"))
                pnum = (long)json_integer_value(json_object_get(port, "port"));
            if (pn && !strcmp(pn, "https")) /* internal TLS: the pod's 8112 */
                tls = (long)json_integer_value(json_object_get(port, "port"));
        }
        if (pnum <= 0)
            continue;
        json_array_foreach(json_object_get(subset, which), j, addr)
        {
            const char *ip = json_string_value(json_object_get(addr, "ip"));
            if (!ip)
                continue;
            if (n >= max) {
                log_warn("Endpoints %s lists more than %u addresses; the rest are ignored",
                         k8s_str(obj, "metadata.name"), max);
                return n;
            }
            snprintf(out[n], 64, strchr(ip, ':') ? "[%.45s]:%ld" : "%.45s:%ld", ip, pnum);
            pod_tls_port_note(out[n], (int)tls);
            ready[n++] = is_ready;
        }
    }
    return n;
}

static const char *revision_label(json_t *obj)
{
    json_t *labels = json_object_get(json_object_get(obj, "metadata"), "labels");
    return json_string_value(json_object_get(labels, "serving.knative.dev/revision"));
}

void revisions_on_private_endpoints(void *arg, enum k8s_event ev, json_t *obj)
{
    (void)arg;
    if (ev == K8S_SYNCED) {
        act->synced++;
        return;
    }
    const char *ns = k8s_str(obj, "metadata.namespace"), *name = revision_label(obj);
    if (!ns || !name)
        return;
    struct revision *r = ev == K8S_DELETED ? revision_find(ns, name) : revision_get(ns, name);
    if (!r)
        return;
    static char addrs[MAX_POD_ADDRESSES][64];
    static bool ready[MAX_POD_ADDRESSES];
    unsigned n = 0;
    if (ev != K8S_DELETED) {
        n = collect(obj, r->h2c, "addresses", addrs, ready, MAX_POD_ADDRESSES, 0, true);
        n = collect(obj, r->h2c, "notReadyAddresses", addrs, ready, MAX_POD_ADDRESSES, n, false);
    }
    /* Merge: keep what stays (and its health), add the new, drop the gone. */
    struct backend *next = calloc(n ? n : 1, sizeof *next);
    bool changed = false;
    for (unsigned i = 0; i < n; i++) {
        struct backend *old = NULL;
        for (unsigned j = 0; j < r->nbackends && !old; j++)
            if (!r->backends[j].seen && !strcmp(r->backends[j].dest, addrs[i]))
                old = &r->backends[j];
        if (old) {
            next[i] = *old;
            old->seen = true;
            old->probe = NULL;
            old->pool = NULL;
            if (old->ready && !ready[i] && next[i].healthy) {
                next[i].healthy = false; /* ready -> not ready: probe again */
                changed = true;
            }
            changed |= old->ready != ready[i] && r->cluster_mode; /* capacity follows ready */
        } else {
            memcpy(next[i].dest, addrs[i], sizeof next[i].dest);
            next[i].pool = pod_pool_get(addrs[i]);
        }
        next[i].ready = ready[i];
        next[i].seen = false;
        next[i].rev = r;
        if (next[i].probe)
            next[i].probe->arg = &next[i];
    }
    for (unsigned j = 0; j < r->nbackends; j++) {
        if (!r->backends[j].seen) {
            changed |= r->backends[j].healthy;
            backend_drop(&r->backends[j]);
        }
    }
    if (act->cfg.mesh_mode == MESH_DISABLED) {
        /* Kubernetes' readiness is trusted as is (§4.3). */
        for (unsigned i = 0; i < n; i++) {
            changed |= next[i].healthy != next[i].ready;
            next[i].healthy = next[i].ready;
        }
    }
    changed |= r->cluster_mode && n != r->nbackends;
    free(r->backends);
    r->backends = next;
    r->nbackends = n;
    if (ev == K8S_DELETED && r->cluster_mode) {
        r->cluster_mode = false; /* the revision watcher's life ends here (§3.8) */
        changed = true;
    }
    if (n)
        cold_on_endpoints(r);
    if (changed || n == 0)
        publish_healthy(r);
    probe_round(r);
    if (n == 0)
        revision_maybe_free(r);
}

void revisions_on_public_endpoints(void *arg, enum k8s_event ev, json_t *obj)
{
    (void)arg;
    if (ev == K8S_SYNCED) {
        act->synced++;
        return;
    }
    if (ev == K8S_DELETED)
        return;
    const char *ns = k8s_str(obj, "metadata.namespace"), *name = revision_label(obj);
    if (!ns || !name)
        return;
    struct revision *r = revision_find(ns, name);
    if (!r)
        return;
    static char ips[MAX_ACTIVATOR_ADDRESSES][64];
    static bool unused[MAX_ACTIVATOR_ADDRESSES];
    unsigned n = collect(obj, r->h2c, "addresses", ips, unused, MAX_ACTIVATOR_ADDRESSES, 0, true);
    /* Sort the IPs as strings (Knative's inferIndex) and find ourselves. */
    for (unsigned i = 0; i < n; i++) {
        char *colon = strrchr(ips[i], ':');
        if (colon)
            *colon = 0;
    }
    qsort(ips, n, sizeof ips[0], (int (*)(const void *, const void *))strcmp);
    for (unsigned i = 0; i < n; i++)
        if (!strcmp(ips[i], act->cfg.pod_ip)) {
            throttler_set_activators(&r->thr, (int)i, n);
            revision_dispatch(r);
            return;
        }
    /* Not in the set: keep the previous values. */
}

/* ---------------------------------------------------------------- private Services */

void revisions_on_private_service(void *arg, enum k8s_event ev, json_t *obj)
{
    (void)arg;
    if (ev == K8S_SYNCED) {
        act->synced++;
        return;
    }
    const char *ns = k8s_str(obj, "metadata.namespace"), *name = revision_label(obj);
    if (!ns || !name)
        return;
    struct revision *r = ev == K8S_DELETED ? revision_find(ns, name) : revision_get(ns, name);
    if (!r)
        return;
    char dest[64] = "";
    long tls = -1;
    const char *ip = k8s_str(obj, "spec.clusterIP");
    if (ev != K8S_DELETED && ip && *ip && strcmp(ip, "None")) {
        size_t i;
        json_t *port;
        json_array_foreach(k8s_get(obj, "spec.ports"), i, port)
        {
            const char *pn = json_string_value(json_object_get(port, "name"));
            long num = (long)json_integer_value(json_object_get(port, "port"));
            if (pn && !strcmp(pn, r->h2c ? "http2" : "http") && num > 0)
                snprintf(dest, sizeof dest, strchr(ip, ':') ? "[%.45s]:%ld" : "%.45s:%ld", ip, num);
            if (pn && !strcmp(pn, "https") && num > 0)
                tls = num; /* internal TLS: 443 */
        }
        if (*dest)
            pod_tls_port_note(dest, (int)tls);
    }
    if (!strcmp(dest, r->cluster_dest))
        return;
    cluster_drop(r);
    memcpy(r->cluster_dest, dest, sizeof dest);
    if (r->cluster_mode) {
        /* The Service moved or went: back to pods until a fallback proves it again. */
        r->cluster_mode = false;
        publish_healthy(r);
    }
    probe_round(r);
    revision_maybe_free(r);
}
