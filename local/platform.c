/* platform.c — services, revisions and traffic (see platform.h).
 *
 * What a Knative cluster's controllers do, for one machine:
 *  - apply (the configuration and route reconcilers): each document is one
 *    apply of a Service; a template that differs from the latest revision's
 *    makes a new revision (<service>-00001, -00002, ..., or the template's
 *    metadata.name). Everything is checked first; one bad document changes
 *    nothing.
 *  - route: spec.traffic becomes one Knative Ingress per service: the host
 *    <service>.<namespace>.<domain> split by percent, and
 *    <tag>-<service>.<namespace>.<domain> per tag. latestRevision follows
 *    the newest revision that is ready (one that has had a ready pod; one
 *    with initial-scale 0 counts as ready at once, since it can only start
 *    on a request), so traffic moves only once the new revision can serve.
 *  - the KPA reconciler: the autoscaler's decision, bounded by min-scale and
 *    max-scale, held at one pod for max(scale-to-zero grace, pod retention)
 *    before the last pod goes; the reserved instance.
 *  - the Endpoints controller: each pod is a subset of <rev>-private
 *    (notReadyAddresses until ready), and <rev> (public) lists the
 *    activator, so the activator is always in the path (it is the ingress
 *    here; in Serve mode a cluster would route around it).
 *
 * Decision: a revision whose pods fail before becoming ready is marked
 * failed (Ready=False with the reason: the activator answers 503 with it);
 * pods are retried with backoff (0.25 s doubling to 10 s) while pods are
 * wanted; the mark clears when a pod becomes ready. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "platform.h"

#define BACKOFF_FIRST 0.25
#define BACKOFF_MAX   10.0

static void on_decide(struct as_rev *ar, const struct kpa_decision *d, bool poke, void *arg);

struct platform *platform_new(struct event_base *base, const struct platform_config *cfg,
                              struct api *api, struct autoscaler *as)
{
    struct platform *p = calloc(1, sizeof *p);
    p->base = base;
    p->cfg = *cfg;
    p->api = api;
    p->as = as;
    return p;
}

static struct service *service_find(struct platform *p, const char *ns, const char *name)
{
    for (struct service *s = p->services; s; s = s->next)
        if (!strcmp(s->ns, ns) && !strcmp(s->name, name))
            return s;
    return NULL;
}

static struct revision_l *revision_by_name(struct service *s, const char *name)
{
    for (struct revision_l *r = s->revs; r; r = r->next)
        if (!strcmp(r->name, name))
            return r;
    return NULL;
}

/* Standard (not reserved) pods: starting or ready, or ready only. */
static int standard_pods(const struct revision_l *r, bool ready_only)
{
    int n = 0;
    for (const struct pod *pod = r->pods; pod; pod = pod->next)
        if (!pod->reserved &&
            (ready_only ? pod->phase == POD_READY : pod->phase != POD_TERMINATING))
            n++;
    return n;
}

static struct pod *reserved_pod(const struct revision_l *r)
{
    for (struct pod *pod = r->pods; pod; pod = pod->next)
        if (pod->reserved && pod->phase != POD_TERMINATING)
            return pod;
    return NULL;
}

/* ---------------------------------------------------------------- published objects */

static json_t *meta(const char *ns, const char *name, json_t *labels)
{
    return json_pack("{s:s,s:s,s:o}", "namespace", ns, "name", name, "labels",
                     labels ? labels : json_object());
}

void revision_publish(struct revision_l *r)
{
    struct service *s = r->svc;
    char gen[16];
    snprintf(gen, sizeof gen, "%d", r->generation);
    json_t *labels = json_pack("{s:s,s:s,s:s}", "serving.knative.dev/service", s->name,
                               "serving.knative.dev/configuration", s->name,
                               "serving.knative.dev/configurationGeneration", gen);
    json_t *spec = json_deep_copy(json_object_get(r->template, "spec"));
    json_object_set_new(spec, "containerConcurrency", json_integer(r->set.cc));
    json_object_set_new(spec, "timeoutSeconds", json_integer(r->set.timeout));
    json_t *cond = json_pack("{s:s,s:s}", "type", "Ready", "status",
                             r->failed[0]    ? "False"
                             : r->ready_once ? "True"
                                             : "Unknown");
    if (r->failed[0]) {
        json_object_set_new(cond, "reason", json_string("RevisionFailed"));
        json_object_set_new(cond, "message", json_string(r->failed));
    }
    json_t *obj = json_pack("{s:s,s:s,s:o,s:o,s:{s:[o]}}", "apiVersion", "serving.knative.dev/v1",
                            "kind", "Revision", "metadata", meta(s->ns, r->name, labels), "spec",
                            spec, "status", "conditions", cond);
    json_t *ann = json_object_get(json_object_get(r->template, "metadata"), "annotations");
    if (ann)
        json_object_set(json_object_get(obj, "metadata"), "annotations", ann);
    api_put(s->p->api, API_REVISION, obj);
}

/* The Endpoints port the activator looks for: Knative names it after the
 * revision's protocol (http, or http2 for h2c revisions). */
static const char *port_name(const struct revision_l *r)
{
    return r->set.h2c ? "http2" : "http";
}

static json_t *endpoint_labels(const struct revision_l *r, const char *type)
{
    return json_pack("{s:s,s:s,s:s}", "serving.knative.dev/revision", r->name,
                     "serving.knative.dev/service", r->svc->name,
                     "networking.internal.knative.dev/serviceType", type);
}

void revision_publish_endpoints(struct revision_l *r)
{
    struct platform *p = r->svc->p;
    json_t *subsets = json_array();
    const char *stat_addrs[AS_MAX_PODS];
    char addrs[AS_MAX_PODS][32];
    unsigned nstat = 0;
    int ready = 0;
    for (struct pod *pod = r->pods; pod; pod = pod->next) {
        if (pod->phase == POD_TERMINATING)
            continue;
        /* One subset per pod: every pod has its own port on 127.0.0.1. */
        json_t *addr = json_pack("[{s:s,s:{s:s,s:s,s:s}}]", "ip", "127.0.0.1", "targetRef", "kind",
                                 "Pod", "name", pod->name, "namespace", r->svc->ns);
        json_t *ports = json_pack("[{s:s,s:i,s:s}]", "name", port_name(r), "port", pod->qp_port,
                                  "protocol", "TCP");
        if (pod->tls_port > 0) /* internal TLS: where the activator reaches the pod */
            json_array_append_new(ports, json_pack("{s:s,s:i,s:s}", "name", "https", "port",
                                                   pod->tls_port, "protocol", "TCP"));
        json_array_append_new(subsets,
                              json_pack("{s:o,s:o}",
                                        pod->phase == POD_READY ? "addresses" : "notReadyAddresses",
                                        addr, "ports", ports));
        if (pod->phase == POD_READY && !pod->reserved)
            ready++;
        if (nstat < AS_MAX_PODS) {
            snprintf(addrs[nstat], sizeof addrs[nstat], "127.0.0.1:%d", pod->stat_port);
            stat_addrs[nstat] = addrs[nstat];
            nstat++;
        } else if (nstat == AS_MAX_PODS) {
            log_warn("revision %s has more than %d pods; the autoscaler scrapes the first %d",
                     r->name, AS_MAX_PODS, AS_MAX_PODS);
            nstat++; /* warn once per publish */
        }
    }
    char name[220];
    snprintf(name, sizeof name, "%s-private", r->name);
    api_put(p->api, API_ENDPOINTS,
            json_pack("{s:s,s:s,s:o,s:o}", "apiVersion", "v1", "kind", "Endpoints", "metadata",
                      meta(r->svc->ns, name, endpoint_labels(r, "Private")), "subsets", subsets));
    if (r->as)
        autoscaler_set_pods(r->as, stat_addrs, nstat < AS_MAX_PODS ? nstat : AS_MAX_PODS, ready);
}

static void publish_public_endpoints(struct revision_l *r)
{
    struct platform *p = r->svc->p;
    json_t *subsets = json_pack("[{s:[{s:s}],s:[{s:s,s:i}]}]", "addresses", "ip", "127.0.0.1",
                                "ports", "name", port_name(r), "port", p->cfg.port);
    api_put(p->api, API_ENDPOINTS,
            json_pack("{s:s,s:s,s:o,s:o}", "apiVersion", "v1", "kind", "Endpoints", "metadata",
                      meta(r->svc->ns, r->name, endpoint_labels(r, "Public")), "subsets", subsets));
}

/* The newest revision that can take traffic, else the newest. */
static struct revision_l *latest_ready(struct service *s)
{
    for (struct revision_l *r = s->revs; r; r = r->next)
        if (r->ready_once || (r->set.initial_scale == 0 && !r->failed[0]))
            return r;
    return s->revs;
}

static struct revision_l *target_of(struct service *s, json_t *t)
{
    if (json_is_true(json_object_get(t, "latestRevision")))
        return latest_ready(s);
    const char *rn = json_string_value(json_object_get(t, "revisionName"));
    return rn ? revision_by_name(s, rn) : latest_ready(s);
}

static json_t *split(struct service *s, struct revision_l *r, long percent)
{
    return json_pack("{s:s,s:s,s:i,s:i,s:{s:s,s:s}}", "serviceName", r->name, "serviceNamespace",
                     s->ns, "servicePort", 80, "percent", (json_int_t)percent, "appendHeaders",
                     "Knative-Serving-Revision", r->name, "Knative-Serving-Namespace", s->ns);
}

static json_t *rule(const char *host, json_t *splits)
{
    return json_pack("{s:[s],s:s,s:{s:[{s:o}]}}", "hosts", host, "visibility", "ExternalIP", "http",
                     "paths", "splits", splits);
}

static json_t *traffic_of(struct service *s)
{
    return s->traffic ? json_incref(s->traffic)
                      : json_pack("[{s:b,s:i}]", "latestRevision", 1, "percent", 100);
}

void service_publish_ingress(struct service *s)
{
    struct platform *p = s->p;
    json_t *traffic = traffic_of(s);
    json_t *splits = json_array(), *rules = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(traffic, i, t)
    {
        struct revision_l *r = target_of(s, t);
        json_t *pct = json_object_get(t, "percent");
        long percent = json_is_integer(pct) ? (long)json_integer_value(pct) : 0;
        if (!r)
            continue;
        if (percent > 0) {
            /* Targets naming the same revision share one split, as Knative merges them. */
            bool merged = false;
            size_t j;
            json_t *sp;
            json_array_foreach(splits, j, sp)
            {
                if (!strcmp(json_string_value(json_object_get(sp, "serviceName")), r->name)) {
                    json_object_set_new(
                        sp, "percent",
                        json_integer(json_integer_value(json_object_get(sp, "percent")) + percent));
                    merged = true;
                }
            }
            if (!merged)
                json_array_append_new(splits, split(s, r, percent));
        }
        const char *tag = json_string_value(json_object_get(t, "tag"));
        if (tag) {
            char host[300];
            snprintf(host, sizeof host, "%s-%s.%s.%s", tag, s->name, s->ns, p->cfg.domain);
            json_array_append_new(rules, rule(host, json_pack("[o]", split(s, r, 100))));
        }
    }
    char host[300];
    snprintf(host, sizeof host, "%s.%s.%s", s->name, s->ns, p->cfg.domain);
    json_array_insert_new(rules, 0, rule(host, splits));
    json_decref(traffic);
    api_put(
        p->api, API_INGRESS,
        json_pack("{s:s,s:s,s:o,s:{s:o}}", "apiVersion", "networking.internal.knative.dev/v1alpha1",
                  "kind", "Ingress", "metadata",
                  meta(s->ns, s->name, json_pack("{s:s}", "serving.knative.dev/service", s->name)),
                  "spec", "rules", rules));
}

/* ---------------------------------------------------------------- scaling */

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    revision_reconcile(arg);
}

/* Reconcile again at `when` (monotonic s). One timer serves the grace period
 * and the crash backoff, so it keeps whichever deadline comes first. */
static void retry_at(struct revision_l *r, double when)
{
    if (evtimer_pending(r->retry, NULL) && r->retry_when <= when)
        return;
    r->retry_when = when;
    struct timeval tv = clock_tv(when - autoscaler_now());
    evtimer_add(r->retry, &tv);
}

/* A pod failed to start or died: the next one waits 0.25 s, doubling to 10 s. */
static void backoff(struct revision_l *r)
{
    r->crashes++;
    r->next_start = autoscaler_now() + fmin(BACKOFF_MAX, BACKOFF_FIRST * pow(2, r->crashes - 1));
}

static void mark_failed(struct revision_l *r, const char *why)
{
    if (!strcmp(r->failed, why))
        return;
    snprintf(r->failed, sizeof r->failed, "%s", why);
    log_error("revision %s/%s failed: %s", r->svc->ns, r->name, why);
    revision_publish(r);
    service_publish_ingress(r->svc);
}

void revision_reconcile(struct revision_l *r)
{
    struct platform *p = r->svc->p;
    if (p->stopping)
        return;
    double now = autoscaler_now();
    int live = standard_pods(r, false);
    int want = r->decided >= 0 ? r->decided : r->want;
    if (want < r->set.min_scale)
        want = r->set.min_scale;
    if (r->set.max_scale && want > r->set.max_scale)
        want = r->set.max_scale;
    if (want == 0) {
        /* The last pod stays for the grace period (and the retention). */
        if (!r->zero_since)
            r->zero_since = now;
        double hold = fmax(p->cfg.grace, r->set.retention);
        if (live > 0 && now - r->zero_since < hold) {
            want = 1;
            retry_at(r, r->zero_since + hold + 0.01);
        }
    } else {
        r->zero_since = 0;
    }
    r->want = want;

    struct pod *reserved = reserved_pod(r);
    if (live < want) {
        if (now < r->next_start) {
            retry_at(r, r->next_start);
        } else {
            char err[400];
            for (int i = live; i < want; i++) {
                if (!pod_start(r, false, err, sizeof err)) {
                    mark_failed(r, err);
                    backoff(r);
                    retry_at(r, r->next_start);
                    break;
                }
            }
            revision_publish_endpoints(r);
        }
    } else if (live > want) {
        /* Starting pods go first, then the newest ready ones. */
        int excess = live - want;
        for (int pass = 0; pass < 2 && excess > 0; pass++)
            for (struct pod *pod = r->pods; pod && excess > 0; pod = pod->next) {
                if (pod->reserved || pod->phase != (pass ? POD_READY : POD_STARTING))
                    continue;
                if (want == 0 && r->set.reserve && !reserved && pod->phase == POD_READY) {
                    /* Scaling to zero keeps this one as the reserved instance. */
                    log_info("pod %s kept as the reserved instance of %s", pod->name, r->name);
                    pod_set_reserved(pod, true);
                    reserved = pod;
                } else {
                    pod_terminate(pod);
                }
                excess--;
            }
    }
    if (r->set.reserve && want == 0 && !reserved && live == 0 && !r->failed[0]) {
        if (now < r->next_start) {
            retry_at(r, r->next_start); /* a reserved instance that crashed comes back */
        } else {
            char err[400];
            if (!pod_start(r, true, err, sizeof err)) {
                mark_failed(r, err);
                backoff(r);
                retry_at(r, r->next_start);
            }
            revision_publish_endpoints(r);
        }
    }
    /* The reserved instance is released once a standard pod is ready. */
    if (reserved && standard_pods(r, true) > 0) {
        log_info("releasing the reserved instance %s of %s", reserved->name, r->name);
        pod_terminate(reserved);
    }
}

static void on_decide(struct as_rev *ar, const struct kpa_decision *d, bool poke, void *arg)
{
    struct revision_l *r = arg;
    (void)ar;
    if (poke)
        log_info("revision %s poked: desired %d", r->name, d->desired);
    if (d->desired < 0)
        return; /* no data yet: keep the initial scale */
    r->decided = d->desired;
    r->panicking = d->panicking;
    r->stable = d->stable;
    r->panic = d->panic;
    r->ebc = d->excess_burst_capacity;
    revision_reconcile(r);
}

void revision_pod_ready(struct revision_l *r)
{
    r->crashes = 0;
    r->next_start = 0;
    bool changed = !r->ready_once || r->failed[0];
    r->ready_once = true;
    r->failed[0] = 0;
    if (changed) {
        revision_publish(r);
        service_publish_ingress(r->svc);
    }
    revision_publish_endpoints(r);
    revision_reconcile(r);
}

void revision_pod_failed(struct revision_l *r, const char *why, bool before_ready)
{
    backoff(r);
    if (before_ready)
        mark_failed(r, why);
}

/* ---------------------------------------------------------------- apply */

static struct revision_l *revision_new(struct service *s, const char *name, json_t *tmpl,
                                       const struct rev_settings *set)
{
    struct platform *p = s->p;
    struct revision_l *r = calloc(1, sizeof *r);
    r->svc = s;
    r->generation = ++s->generation;
    snprintf(r->name, sizeof r->name, "%s", name);
    r->template = json_incref(tmpl);
    r->set = *set;
    r->decided = -1;
    r->want = set->initial_scale;
    r->retry = evtimer_new(p->base, on_retry, r);
    r->next = s->revs;
    s->revs = r;
    r->as = autoscaler_add(p->as, s->ns, r->name, &r->set.kpa, on_decide, r);
    revision_publish(r);
    publish_public_endpoints(r);
    revision_publish_endpoints(r);
    log_info("revision %s/%s created (generation %d)", s->ns, r->name, r->generation);
    return r;
}

/* Templates compare without metadata.name (which only names the revision). */
static bool same_template(json_t *a, json_t *b)
{
    json_t *ca = json_deep_copy(a), *cb = json_deep_copy(b);
    json_object_del(json_object_get(ca, "metadata"), "name");
    json_object_del(json_object_get(cb, "metadata"), "name");
    bool same = json_equal(ca, cb);
    json_decref(ca);
    json_decref(cb);
    return same;
}

/* What one document does, worked out without doing it. */
struct plan {
    struct svc_doc *doc;
    char rev[190]; /* the revision it creates, or "" */
    struct rev_settings set;
};

/* The simulated state of one service while a batch is planned. */
struct sim {
    char ns[64], name[64];
    json_t *latest; /* borrowed */
    int generation;
    json_t *names;     /* revision names (owned) */
    json_t *templates; /* their templates, same order (owned array) */
};

/* Is a later document of the batch about the same service? Then this one
 * is history (a file that keeps a service's past applies, like
 * examples/coffee.yaml): it makes a revision only if no revision of the
 * service has its template yet, so applying the file again is a no-op. */
static bool superseded(const struct svc_doc *docs, size_t n, size_t i)
{
    for (size_t j = i + 1; j < n; j++)
        if (!strcmp(docs[j].ns, docs[i].ns) && !strcmp(docs[j].name, docs[i].name))
            return true;
    return false;
}

static bool known_template(const struct sim *sm, json_t *tmpl)
{
    size_t k;
    json_t *t;
    json_array_foreach(sm->templates, k, t) if (same_template(t, tmpl)) return true;
    return false;
}

static bool plan_fail(const struct svc_doc *d, const char *path, const char *what, char *err,
                      size_t cap)
{
    snprintf(err, cap, "%s:%d: %s: %s", d->file, manifest_line(d, path), path, what);
    return false;
}

static bool plan_all(struct platform *p, struct svc_doc *docs, size_t n, struct plan *plans,
                     char *err, size_t cap)
{
    struct sim *sims = calloc(n ? n : 1, sizeof *sims);
    size_t nsims = 0;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        struct svc_doc *d = &docs[i];
        struct plan *pl = &plans[i];
        memset(pl, 0, sizeof *pl);
        pl->doc = d;
        struct sim *sm = NULL;
        for (size_t k = 0; k < nsims; k++)
            if (!strcmp(sims[k].ns, d->ns) && !strcmp(sims[k].name, d->name))
                sm = &sims[k];
        if (!sm) {
            sm = &sims[nsims++];
            snprintf(sm->ns, sizeof sm->ns, "%s", d->ns);
            snprintf(sm->name, sizeof sm->name, "%s", d->name);
            sm->names = json_array();
            sm->templates = json_array();
            struct service *s = service_find(p, d->ns, d->name);
            if (s) {
                sm->generation = s->generation;
                sm->latest = s->revs ? s->revs->template : NULL;
                for (struct revision_l *r = s->revs; r; r = r->next) {
                    json_array_append_new(sm->names, json_string(r->name));
                    json_array_append(sm->templates, r->template);
                }
            }
        }
        char why[300];
        if (!rev_settings_parse(d->template, &pl->set, why, sizeof why)) {
            char path[400];
            char *colon = strstr(why, ": ");
            *colon = 0;
            snprintf(path, sizeof path, "spec.template.%s", why);
            ok = plan_fail(d, path, colon + 2, err, cap);
            break;
        }
        bool history = superseded(docs, n, i) && known_template(sm, d->template);
        if (!history && (!sm->latest || !same_template(sm->latest, d->template))) {
            const char *given = json_string_value(
                json_object_get(json_object_get(d->template, "metadata"), "name"));
            if (given)
                snprintf(pl->rev, sizeof pl->rev, "%s", given);
            else
                snprintf(pl->rev, sizeof pl->rev, "%s-%05d", d->name, sm->generation + 1);
            size_t j;
            json_t *v;
            json_array_foreach(sm->names, j, v) if (!strcmp(json_string_value(v), pl->rev))
            {
                ok = plan_fail(d, "spec.template.metadata.name",
                               "a revision of that name exists with another template (revisions "
                               "are immutable)",
                               err, cap);
                break;
            }
            if (!ok)
                break;
            json_array_append_new(sm->names, json_string(pl->rev));
            json_array_append(sm->templates, d->template);
            sm->generation++;
            sm->latest = d->template;
        }
        size_t j;
        json_t *t;
        json_array_foreach(d->traffic, j, t)
        {
            const char *rn = json_string_value(json_object_get(t, "revisionName"));
            bool found = !rn;
            size_t k;
            json_t *v;
            json_array_foreach(sm->names, k, v) found |= rn && !strcmp(json_string_value(v), rn);
            if (!found) {
                char path[64], what[300];
                snprintf(path, sizeof path, "spec.traffic[%zu].revisionName", j);
                snprintf(what, sizeof what, "revision %s does not exist", rn);
                ok = plan_fail(d, path, what, err, cap);
                break;
            }
        }
    }
    for (size_t k = 0; k < nsims; k++) {
        json_decref(sims[k].names);
        json_decref(sims[k].templates);
    }
    free(sims);
    return ok;
}

bool platform_apply(struct platform *p, struct svc_doc *docs, size_t n, char *summary, size_t scap,
                    char *err, size_t cap)
{
    struct plan *plans = calloc(n ? n : 1, sizeof *plans);
    if (!plan_all(p, docs, n, plans, err, cap)) {
        free(plans);
        return false;
    }
    size_t used = 0;
    summary[0] = 0;
    for (size_t i = 0; i < n; i++) {
        struct svc_doc *d = &docs[i];
        struct service *s = service_find(p, d->ns, d->name);
        if (!s) {
            s = calloc(1, sizeof *s);
            s->p = p;
            snprintf(s->ns, sizeof s->ns, "%s", d->ns);
            snprintf(s->name, sizeof s->name, "%s", d->name);
            s->next = p->services;
            p->services = s;
        }
        snprintf(s->file, sizeof s->file, "%s", d->file);
        json_decref(s->traffic);
        s->traffic = d->traffic ? json_incref(d->traffic) : NULL;
        json_decref(s->lines);
        s->lines = json_incref(d->lines);
        struct revision_l *created = NULL;
        if (plans[i].rev[0])
            created = revision_new(s, plans[i].rev, d->template, &plans[i].set);
        int w = snprintf(summary + used, scap - used, "%s%s/%s: %s", used ? "; " : "", s->ns,
                         s->name, created ? "created revision " : "template unchanged");
        if (w > 0 && (size_t)w < scap - used)
            used += (size_t)w;
        if (created) {
            w = snprintf(summary + used, scap - used, "%s", created->name);
            if (w > 0 && (size_t)w < scap - used)
                used += (size_t)w;
        }
        service_publish_ingress(s);
        if (created)
            revision_reconcile(created);
    }
    free(plans);
    return true;
}

/* ---------------------------------------------------------------- shutdown */

bool platform_idle(const struct platform *p)
{
    for (struct service *s = p->services; s; s = s->next)
        for (struct revision_l *r = s->revs; r; r = r->next)
            if (r->pods)
                return false;
    return true;
}

void platform_shutdown(struct platform *p)
{
    p->stopping = true;
    for (struct service *s = p->services; s; s = s->next)
        for (struct revision_l *r = s->revs; r; r = r->next) {
            evtimer_del(r->retry);
            for (struct pod *pod = r->pods; pod; pod = pod->next)
                pod_terminate(pod);
        }
    if (platform_idle(p) && p->on_all_gone)
        p->on_all_gone(p);
}

unsigned platform_pids(const struct platform *p, pid_t *out, unsigned cap)
{
    unsigned n = 0;
    for (struct service *s = p->services; s; s = s->next)
        for (struct revision_l *r = s->revs; r; r = r->next)
            for (struct pod *pod = r->pods; pod; pod = pod->next) {
                if (pod->user_pid && n < cap)
                    out[n++] = pod->user_pid;
                if (pod->qp_pid && n < cap)
                    out[n++] = pod->qp_pid;
            }
    if (p->activator_pid && n < cap)
        out[n++] = p->activator_pid;
    return n;
}

void platform_free(struct platform *p)
{
    while (p->services) {
        struct service *s = p->services;
        p->services = s->next;
        while (s->revs) {
            struct revision_l *r = s->revs;
            s->revs = r->next;
            /* Pods are gone by now (shutdown waited for them). */
            while (r->pods) {
                struct pod *pod = r->pods;
                r->pods = pod->next;
                pod_free(pod);
            }
            autoscaler_remove(r->as);
            event_free(r->retry);
            json_decref(r->template);
            free(r);
        }
        json_decref(s->traffic);
        json_decref(s->lines);
        free(s);
    }
    free(p);
}

/* ---------------------------------------------------------------- control API */

static const char *phase_name(enum pod_phase ph)
{
    return ph == POD_STARTING ? "Starting" : ph == POD_READY ? "Ready" : "Terminating";
}

json_t *platform_status_json(struct platform *p)
{
    json_t *svcs = json_array();
    double now = autoscaler_now();
    for (struct service *s = p->services; s; s = s->next) {
        char url[400];
        snprintf(url, sizeof url, "http://%s.%s.%s:%d", s->name, s->ns, p->cfg.domain, p->cfg.port);
        json_t *traffic = json_array();
        json_t *tr = traffic_of(s);
        size_t i;
        json_t *t;
        json_array_foreach(tr, i, t)
        {
            struct revision_l *r = target_of(s, t);
            json_t *o = json_pack("{s:s,s:I,s:b}", "revision", r ? r->name : "", "percent",
                                  json_integer_value(json_object_get(t, "percent")), "latest",
                                  json_is_true(json_object_get(t, "latestRevision")));
            const char *tag = json_string_value(json_object_get(t, "tag"));
            if (tag) {
                char tu[400];
                snprintf(tu, sizeof tu, "http://%s-%s.%s.%s:%d", tag, s->name, s->ns, p->cfg.domain,
                         p->cfg.port);
                json_object_set_new(o, "tag", json_string(tag));
                json_object_set_new(o, "url", json_string(tu));
            }
            json_array_append_new(traffic, o);
        }
        json_decref(tr);
        json_t *revs = json_array();
        for (struct revision_l *r = s->revs; r; r = r->next) {
            json_t *pods = json_array();
            for (struct pod *pod = r->pods; pod; pod = pod->next)
                json_array_append_new(
                    pods,
                    json_pack("{s:s,s:s,s:b,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:s}", "name", pod->name,
                              "phase", phase_name(pod->phase), "reserved", pod->reserved,
                              "user_pid", (int)pod->user_pid, "qp_pid", (int)pod->qp_pid, "port",
                              pod->qp_port, "tls_port", pod->tls_port, "user_port", pod->user_port,
                              "prometheus_port", pod->prom_port, "age", now - pod->started, "log",
                              pod->log_path));
            json_array_append_new(
                revs, json_pack("{s:s,s:i,s:s,s:i,s:i,s:b,s:f,s:f,s:f,s:s,s:o}", "name", r->name,
                                "generation", r->generation, "ready",
                                r->failed[0]    ? "False"
                                : r->ready_once ? "True"
                                                : "Unknown",
                                "desired", r->decided, "want", r->want, "panic", r->panicking,
                                "stable_concurrency", r->stable, "panic_concurrency", r->panic,
                                "target", r->set.kpa.target, "failed", r->failed, "pods", pods));
            /* Knative's SKS mode (§8.4): Serve only with pods wanted and burst
             * capacity to spare. Here the activator is the ingress either way. */
            json_t *rj = json_array_get(revs, json_array_size(revs) - 1);
            json_object_set_new(rj, "excess_burst_capacity", json_integer(r->ebc));
            json_object_set_new(rj, "protocol", json_string(r->set.h2c ? "h2c" : "http1"));
            json_object_set_new(rj, "mode",
                                json_string(r->want > 0 && r->ebc >= 0 ? "Serve" : "Proxy"));
            json_object_set_new(rj, "metric", json_string(r->set.rps ? "rps" : "concurrency"));
            json_object_set_new(rj, "pod_starts", pod_starts_json(r));
        }
        json_array_append_new(svcs, json_pack("{s:s,s:s,s:s,s:s,s:o,s:o}", "name", s->name,
                                              "namespace", s->ns, "url", url, "file", s->file,
                                              "traffic", traffic, "revisions", revs));
    }
    char ca[700];
    snprintf(ca, sizeof ca, "%s/ca/ca.crt", p->cfg.tls_dir);
    json_t *tls = p->cfg.internal_tls ? json_pack("{s:b,s:s}", "enabled", 1, "ca", ca)
                                      : json_pack("{s:b}", "enabled", 0);
    return json_pack("{s:s,s:s,s:i,s:s,s:i,s:o,s:o}", "home", p->cfg.home, "domain", p->cfg.domain,
                     "port", p->cfg.port, "activator_log", p->activator_log,
                     "activator_metrics_port", p->activator_metrics_port, "internal_tls", tls,
                     "services", svcs);
}

void platform_control(struct request *req, void *arg)
{
    struct platform *p = arg;
    const struct http_head *h = req->head;
    const char *u = http_str_ptr(h, h->url);
    size_t plen = api_path_len(h);
    if (plen == 16 && !memcmp(u, "/coldbrew/status", 16)) {
        json_t *st = platform_status_json(p);
        char *s = json_dumps(st, JSON_COMPACT);
        request_reply(req, 200, "application/json", s, strlen(s), NULL);
        free(s);
        json_decref(st);
        return;
    }
    if (plen == 15 && !memcmp(u, "/coldbrew/apply", 15)) {
        char file[1024];
        if (h->method != HTTP_POST) {
            request_error(req, 405, "POST /coldbrew/apply?file=PATH\n");
            return;
        }
        if (!api_query(h, "file", file, sizeof file) || file[0] != '/') {
            request_error(req, 400, "apply: file=ABSOLUTE_PATH is required\n");
            return;
        }
        if (p->stopping) {
            request_error(req, 503, "shutting down\n");
            return;
        }
        struct svc_doc *docs;
        size_t n;
        char err[1024], summary[2048];
        const char *files[] = {file};
        bool loaded = manifest_load(files, 1, &docs, &n, err, sizeof err);
        bool ok = loaded && platform_apply(p, docs, n, summary, sizeof summary, err, sizeof err);
        if (loaded && !ok)
            manifest_free(docs, n);
        if (!ok) {
            if (strlen(err) + 1 < sizeof err)
                strcat(err, "\n");
            request_error(req, 400, err);
            return;
        }
        manifest_free(docs, n);
        log_info("applied %s: %s", file, summary);
        strcat(summary, "\n");
        request_reply(req, 200, "text/plain; charset=utf-8", summary, strlen(summary), NULL);
        return;
    }
    request_error(req, 404, "404 page not found\n");
}
