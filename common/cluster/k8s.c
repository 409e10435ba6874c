/* k8s.c — see k8s.h. */
#include "cluster/k8s.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/env.h"
#include "core/err.h"
#include "core/log.h"
#include "transport/tls.h"

#define PAGE_LIMIT    500
#define BACKOFF_START 0.1
/* A list page of 500 large objects can pass the HTTP client's 4 MiB default. */
#define LIST_MAX_BODY (64u << 20)

const char k8s_err_no_api[] = "no Kubernetes API configured";
const char k8s_err_bad_url[] = "bad Kubernetes API address";
const char k8s_err_tls[] = "cannot set up TLS to the Kubernetes API";
/* Why a watch call was ended from its data callback (http_call_fail). */
static const char err_bad_line[] = "bad event line";
static const char err_watch_error[] = "watch error event";

struct k8s_object {
    char key[320];
    json_t *obj;
    bool seen; /* in the current relist */
    UT_hash_handle hh;
};

struct k8s_watch {
    struct k8s_client *k;
    char path[256];
    char selector[512]; /* url-encoded */
    k8s_event_cb cb;
    void *arg;
    char rv[64];
    char cont[1024]; /* list continue token */
    bool listing;
    bool synced_once;
    double backoff;
    struct http_call *call;
    struct event *retry;
    struct k8s_object *known;
};

json_t *k8s_get(json_t *obj, const char *path)
{
    char part[64];
    const char *p = path;
    json_t *cur = obj;
    while (cur && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof part)
            return NULL;
        memcpy(part, p, n);
        part[n] = 0;
        cur = json_object_get(cur, part);
        p = dot ? dot + 1 : p + n;
    }
    return cur;
}

const char *k8s_str(json_t *obj, const char *path)
{
    json_t *v = k8s_get(obj, path);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

const char *k8s_key(json_t *obj, char *buf, size_t cap)
{
    const char *ns = k8s_str(obj, "metadata.namespace");
    const char *name = k8s_str(obj, "metadata.name");
    snprintf(buf, cap, "%s/%s", ns ? ns : "", name ? name : "");
    return buf;
}

static void url_encode(char *out, size_t cap, const char *in)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *in && o + 4 < cap; in++) {
        unsigned char ch = (unsigned char)*in;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = 0;
}

const char *k8s_client_init(struct k8s_client *k, struct event_base *base, char *detail, size_t cap)
{
    memset(k, 0, sizeof *k);
    k->base = base;
    k->backoff_max = env_double("COLDBREW_K8S_BACKOFF_MAX_SECONDS", 5, NULL);
    char host[128];
    int port = 443;
    bool tls;
    const char *url = getenv("KUBE_API_URL");
    if (url && *url) {
        tls = !strncmp(url, "https://", 8);
        port = tls ? 443 : 80;
        const char *rest = url + (tls ? 8 : 7);
        if ((!tls && strncmp(url, "http://", 7)) || sscanf(rest, "%127[^:/]:%d", host, &port) < 1) {
            snprintf(detail, cap, "KUBE_API_URL must be http(s)://<ip>:<port>, got %s", url);
            return k8s_err_bad_url;
        }
    } else if (getenv("KUBERNETES_SERVICE_HOST")) {
        /* In-cluster: the API's service IP, its CA and our service-account token. */
        tls = true;
        snprintf(host, sizeof host, "%s", getenv("KUBERNETES_SERVICE_HOST"));
        port = (int)env_long("KUBERNETES_SERVICE_PORT", 443, NULL);
    } else {
        snprintf(detail, cap,
                 "no Kubernetes API: not in a cluster (KUBERNETES_SERVICE_HOST) and no "
                 "KUBE_API_URL=http(s)://host:port");
        return k8s_err_no_api;
    }
    if (!upstream_init(&k->api, base, host, port, 16, 30)) {
        snprintf(detail, cap, "the Kubernetes API host must be an IP address, got %s", host);
        return k8s_err_bad_url;
    }
    if (tls) {
        const char *ca =
            env_str("KUBE_CA_FILE", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt");
        k->api.tls = tls_client_new(ca, host, detail, cap);
        if (!k->api.tls)
            return k8s_err_tls;
    }
    snprintf(k->host, sizeof k->host, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    const char *tf =
        env_str("KUBE_TOKEN_FILE", "/var/run/secrets/kubernetes.io/serviceaccount/token");
    FILE *f = fopen(tf, "r");
    if (f) {
        char tok[2048];
        size_t n = fread(tok, 1, sizeof tok - 1, f);
        fclose(f);
        while (n && (tok[n - 1] == '\n' || tok[n - 1] == ' '))
            n--;
        tok[n] = 0;
        if (n)
            snprintf(k->auth, sizeof k->auth, "Authorization: Bearer %s\r\n", tok);
    }
    return NULL;
}

void k8s_client_free(struct k8s_client *k)
{
    upstream_close_idle(&k->api);
    tls_client_free(k->api.tls);
    k->api.tls = NULL;
}

const char *k8s_watch_version(const struct k8s_watch *w)
{
    return w->rv;
}

static void start_list(struct k8s_watch *w);
static void start_watch(struct k8s_watch *w);

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct k8s_watch *w = arg;
    if (w->listing)
        start_list(w);
    else
        start_watch(w);
}

static void retry_later(struct k8s_watch *w, bool relist)
{
    if (relist) {
        w->listing = true;
        w->cont[0] = 0;
    }
    struct timeval tv = clock_tv(w->backoff);
    event_add(w->retry, &tv);
    w->backoff = w->backoff * 2 > w->k->backoff_max ? w->k->backoff_max : w->backoff * 2;
}

static void send_get(struct k8s_watch *w, const char *query, http_call_done_cb done,
                     http_call_data_cb data)
{
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "GET %s?%s%s%s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n"
                     "User-Agent: coldbrew\r\n%s\r\n",
                     w->path, query, w->selector[0] ? "&labelSelector=" : "", w->selector,
                     w->k->host, w->k->auth);
    if (!w->call) {
        w->call = http_call_new(&w->k->api, w);
        if (!w->call) {
            log_error("k8s: %s %s: %s; retrying in %.1fs", w->listing ? "list" : "watch", w->path,
                      coldbrew_err_no_memory, w->backoff);
            retry_later(w, w->listing);
            return;
        }
        w->call->max_body = LIST_MAX_BODY;
    }
    http_call_start(w->call, req, (size_t)n, 0, done, data);
}

static void note_version(struct k8s_watch *w, json_t *obj)
{
    const char *rv = k8s_str(obj, "metadata.resourceVersion");
    if (rv)
        snprintf(w->rv, sizeof w->rv, "%s", rv);
}

/* False when the object could not be stored (memory): the caller relists. */
static bool deliver(struct k8s_watch *w, enum k8s_event ev, json_t *obj)
{
    char key[320];
    k8s_key(obj, key, sizeof key);
    struct k8s_object *o;
    HASH_FIND_STR(w->known, key, o);
    if (ev == K8S_DELETED) {
        if (o) {
            HASH_DEL(w->known, o);
            json_decref(o->obj);
            free(o);
        }
        w->cb(w->arg, K8S_DELETED, obj);
        return true;
    }
    if (!o) {
        o = calloc(1, sizeof *o);
        if (!o) {
            log_error("k8s: %s %s: %s; relisting", w->path, key, coldbrew_err_no_memory);
            return false;
        }
        snprintf(o->key, sizeof o->key, "%s", key);
        HASH_ADD_STR(w->known, key, o);
        ev = K8S_ADDED;
    } else {
        json_decref(o->obj);
        ev = K8S_MODIFIED;
    }
    o->obj = json_incref(obj);
    o->seen = true;
    w->cb(w->arg, ev, obj);
    return true;
}

/* ---------------------------------------------------------------- list */

static void on_list_done(struct http_call *c, const char *err)
{
    struct k8s_watch *w = c->arg;
    if (err || c->status != 200) {
        log_warn("k8s: list %s failed: %s (status %d); retrying in %.1fs", w->path,
                 err ? c->detail : "unexpected status", c->status, w->backoff);
        retry_later(w, true);
        return;
    }
    size_t len = evbuffer_get_length(c->body);
    json_error_t je;
    json_t *root = json_loadb((const char *)evbuffer_pullup(c->body, -1), len, 0, &je);
    json_t *items = root ? json_object_get(root, "items") : NULL;
    if (!root || !json_is_array(items)) {
        log_warn("k8s: list %s: not a list (%s); retrying", w->path, root ? "no items" : je.text);
        json_decref(root);
        retry_later(w, true);
        return;
    }
    if (!w->cont[0]) {
        /* First page of a (re)list: nothing is confirmed yet. */
        struct k8s_object *o, *tmp;
        HASH_ITER(hh, w->known, o, tmp) o->seen = false;
    }
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item)
    {
        if (!deliver(w, K8S_MODIFIED, item)) {
            json_decref(root);
            retry_later(w, true);
            return;
        }
    }
    const char *cont = k8s_str(root, "metadata.continue");
    if (cont && *cont) {
        url_encode(w->cont, sizeof w->cont, cont);
        json_decref(root);
        char q[1200];
        snprintf(q, sizeof q, "limit=%d&continue=%s", PAGE_LIMIT, w->cont);
        send_get(w, q, on_list_done, NULL);
        return;
    }
    const char *rv = k8s_str(root, "metadata.resourceVersion");
    snprintf(w->rv, sizeof w->rv, "%s", rv ? rv : "");
    json_decref(root);
    /* Whatever the relist did not see is gone. */
    struct k8s_object *o, *tmp;
    HASH_ITER(hh, w->known, o, tmp)
    {
        if (o->seen)
            continue;
        json_t *gone = json_incref(o->obj);
        deliver(w, K8S_DELETED, gone);
        json_decref(gone);
    }
    w->cont[0] = 0;
    w->listing = false;
    w->backoff = BACKOFF_START;
    w->cb(w->arg, K8S_SYNCED, NULL);
    start_watch(w);
}

static void start_list(struct k8s_watch *w)
{
    w->listing = true;
    char q[64];
    snprintf(q, sizeof q, "limit=%d", PAGE_LIMIT);
    send_get(w, q, on_list_done, NULL);
}

/* ---------------------------------------------------------------- watch */

static void on_watch_data(struct http_call *c)
{
    struct k8s_watch *w = c->arg;
    if (c->status != 200)
        return; /* collected; judged when the call ends */
    size_t n;
    char *line;
    while ((line = evbuffer_readln(c->body, &n, EVBUFFER_EOL_LF))) {
        json_error_t je;
        json_t *ev = n ? json_loadb(line, n, 0, &je) : NULL;
        free(line);
        if (!n)
            continue;
        const char *type = ev ? json_string_value(json_object_get(ev, "type")) : NULL;
        json_t *obj = ev ? json_object_get(ev, "object") : NULL;
        if (!type || !json_is_object(obj)) {
            log_warn("k8s: watch %s: bad event line; re-watching from %s", w->path, w->rv);
            json_decref(ev);
            http_call_fail(c, err_bad_line);
            return;
        }
        if (!strcmp(type, "ERROR")) {
            json_int_t code = json_integer_value(json_object_get(obj, "code"));
            log_info("k8s: watch %s: error %d (%s); %s", w->path, (int)code,
                     k8s_str(obj, "message") ? k8s_str(obj, "message") : "",
                     code == 410 ? "relisting" : "re-watching");
            json_decref(ev);
            if (code == 410)
                w->listing = true;
            http_call_fail(c, err_watch_error);
            return;
        }
        bool stored = true;
        if (!strcmp(type, "ADDED") || !strcmp(type, "MODIFIED"))
            stored = deliver(w, K8S_MODIFIED, obj);
        else if (!strcmp(type, "DELETED"))
            stored = deliver(w, K8S_DELETED, obj);
        /* BOOKMARK: the version is all it carries. */
        if (!stored) {
            /* The event is not recorded: a relist brings it back. */
            json_decref(ev);
            w->listing = true;
            http_call_fail(c, coldbrew_err_no_memory);
            return;
        }
        note_version(w, obj);
        json_decref(ev);
        w->backoff = BACKOFF_START;
    }
}

static void on_watch_done(struct http_call *c, const char *err)
{
    struct k8s_watch *w = c->arg;
    if (c->status == 410 || w->listing) {
        retry_later(w, true);
        return;
    }
    if (err || c->status != 200) {
        log_warn("k8s: watch %s ended: %s (status %d); re-watching from %s", w->path,
                 err ? c->detail : "unexpected status", c->status, w->rv);
        retry_later(w, false);
        return;
    }
    /* The server closed a healthy watch (its timeout): open the next one now. */
    start_watch(w);
}

static void start_watch(struct k8s_watch *w)
{
    char q[256];
    snprintf(q, sizeof q, "watch=1&allowWatchBookmarks=true&resourceVersion=%s", w->rv);
    send_get(w, q, on_watch_done, on_watch_data);
}

struct k8s_watch *k8s_watch_start(struct k8s_client *k, const char *path, const char *selector,
                                  k8s_event_cb cb, void *arg)
{
    struct k8s_watch *w = xcalloc(1, sizeof *w);
    w->k = k;
    snprintf(w->path, sizeof w->path, "%s", path);
    if (selector)
        url_encode(w->selector, sizeof w->selector, selector);
    w->cb = cb;
    w->arg = arg;
    w->backoff = BACKOFF_START;
    w->retry = X_CHECK(evtimer_new(k->base, on_retry, w));
    start_list(w);
    return w;
}

void k8s_watch_free(struct k8s_watch *w)
{
    if (!w)
        return;
    http_call_free(w->call);
    event_free(w->retry);
    struct k8s_object *o, *tmp;
    HASH_ITER(hh, w->known, o, tmp)
    {
        HASH_DEL(w->known, o);
        json_decref(o->obj);
        free(o);
    }
    free(w);
}
