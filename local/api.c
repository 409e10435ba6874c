/* api.c — see api.h. */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"

static const struct {
    const char *path, *list_kind, *api_version;
} kinds[API_KINDS] = {
    [API_REVISION] = {"/apis/serving.knative.dev/v1/revisions", "RevisionList",
                      "serving.knative.dev/v1"},
    [API_ENDPOINTS] = {"/api/v1/endpoints", "EndpointsList", "v1"},
    [API_SERVICE] = {"/api/v1/services", "ServiceList", "v1"},
    [API_INGRESS] = {"/apis/networking.internal.knative.dev/v1alpha1/ingresses", "IngressList",
                     "networking.internal.knative.dev/v1alpha1"},
};

struct event_rec {
    unsigned long rv;
    enum api_kind kind;
    const char *type;
    json_t *obj;
};

struct watcher {
    struct api *api;
    struct request *req;
    enum api_kind kind;
    char selector[256];
    LIST_ENTRY(watcher) link;
};

struct api {
    struct server *srv;
    json_t *objects[API_KINDS]; /* "ns/name" -> object */
    unsigned long rv;
    struct event_rec hist[API_HISTORY];
    unsigned hist_start, hist_len;
    LIST_HEAD(, watcher) watchers;
    request_cb control;
    void *control_arg;
    int port;
};

/* ---------------------------------------------------------------- helpers */

static int hexval(char c)
{
    return c >= '0' && c <= '9'                     ? c - '0'
           : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10
                                                    : -1;
}

bool api_query(const struct http_head *h, const char *name, char *buf, size_t cap)
{
    const char *u = http_str_ptr(h, h->url);
    size_t len = h->url.len;
    const char *q = memchr(u, '?', len);
    if (!q)
        return false;
    size_t nl = strlen(name);
    const char *p = q + 1, *end = u + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) >= nl && !memcmp(p, name, nl) && (p + nl == stop || p[nl] == '=')) {
            const char *v = p + nl + (p + nl < stop);
            size_t o = 0;
            while (v < stop && o + 1 < cap) {
                if (*v == '%' && stop - v >= 3 && hexval(v[1]) >= 0 && hexval(v[2]) >= 0) {
                    buf[o++] = (char)(hexval(v[1]) * 16 + hexval(v[2]));
                    v += 3;
                } else {
                    buf[o++] = *v == '+' ? ' ' : *v;
                    v++;
                }
            }
            buf[o] = 0;
            return true;
        }
        p = stop + 1;
    }
    return false;
}

size_t api_path_len(const struct http_head *h)
{
    /* The target is not NUL-terminated in the head arena. */
    const char *u = http_str_ptr(h, h->url);
    const char *qm = memchr(u, '?', h->url.len);
    return qm ? (size_t)(qm - u) : h->url.len;
}

/* Label selector terms "k=v", "k==v", "k!=v" and "k" (exists), comma-separated. */
bool api_selector_matches(json_t *obj, const char *selector)
{
    if (!selector || !*selector)
        return true;
    json_t *labels = json_object_get(json_object_get(obj, "metadata"), "labels");
    char sel[256];
    snprintf(sel, sizeof sel, "%s", selector);
    for (char *save, *t = strtok_r(sel, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        bool neg = eq && eq > t && eq[-1] == '!';
        if (!eq) {
            if (!json_object_get(labels, t))
                return false;
            continue;
        }
        char *key_end = neg ? eq - 1 : eq;
        *key_end = 0;
        const char *val = eq + 1 + (eq[1] == '=');
        const char *have = json_string_value(json_object_get(labels, t));
        bool same = have && !strcmp(have, val);
        if (same == neg)
            return false;
    }
    return true;
}

static void obj_key(json_t *obj, char *buf, size_t cap)
{
    json_t *md = json_object_get(obj, "metadata");
    const char *ns = json_string_value(json_object_get(md, "namespace"));
    const char *name = json_string_value(json_object_get(md, "name"));
    snprintf(buf, cap, "%s/%s", ns ? ns : "", name ? name : "");
}

/* ---------------------------------------------------------------- watch streams */

static void chunk(struct request *req, const char *s, size_t n)
{
    struct evbuffer *out = request_output(req);
    evbuffer_add_printf(out, "%zx\r\n", n);
    evbuffer_add(out, s, n);
    evbuffer_add(out, "\r\n", 2);
}

/* False when memory is short (alloc.h): the caller ends the watch, and the
 * client re-watches from its last version. */
static bool send_event(struct watcher *w, const char *type, json_t *obj)
{
    json_t *ev = json_pack("{s:s, s:O}", "type", type, "object", obj);
    char *s = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (!s) {
        log_error("api: %s for a watch event; ending the watch", coldbrew_err_no_memory);
        return false;
    }
    size_t n = strlen(s);
    struct evbuffer *out = request_output(w->req);
    evbuffer_add_printf(out, "%zx\r\n", n + 1);
    evbuffer_add(out, s, n);
    evbuffer_add(out, "\n\r\n", 3);
    free(s);
    request_flush(w->req);
    return true;
}

/* A request that cannot be served for want of memory: 503, logged. */
static void no_memory(struct request *req, const char *what)
{
    log_error("api: %s for %s; answered 503", coldbrew_err_no_memory, what);
    request_error(req, 503, "out of memory\n");
}

static void watcher_cancel(struct request *req)
{
    struct watcher *w = req->holder;
    LIST_REMOVE(w, link);
    free(w);
}

static void record(struct api *a, enum api_kind kind, const char *type, json_t *obj)
{
    if (a->hist_len == API_HISTORY) {
        json_decref(a->hist[a->hist_start].obj);
        a->hist_start = (a->hist_start + 1) % API_HISTORY;
        a->hist_len--;
    }
    unsigned i = (a->hist_start + a->hist_len) % API_HISTORY;
    a->hist[i] = (struct event_rec){a->rv, kind, type, json_incref(obj)};
    a->hist_len++;
    struct watcher *w, *next;
    for (w = LIST_FIRST(&a->watchers); w; w = next) {
        next = LIST_NEXT(w, link);
        if (w->kind == kind && api_selector_matches(obj, w->selector) && !send_event(w, type, obj))
            request_end(w->req, true); /* watcher_cancel() frees w */
    }
}

static void set_rv(struct api *a, json_t *obj)
{
    char rv[24];
    snprintf(rv, sizeof rv, "%lu", ++a->rv);
    json_t *md = json_object_get(obj, "metadata");
    if (!md) {
        md = json_object();
        json_object_set_new(obj, "metadata", md);
    }
    json_object_set_new(md, "resourceVersion", json_string(rv));
}

/* Is obj (no resourceVersion yet) what the store holds already? */
static bool unchanged(json_t *old, json_t *obj)
{
    json_t *md = json_object_get(old, "metadata");
    json_t *rv = json_incref(json_object_get(md, "resourceVersion"));
    json_object_del(md, "resourceVersion");
    bool same = json_equal(old, obj);
    json_object_set_new(md, "resourceVersion", rv);
    return same;
}

void api_put(struct api *a, enum api_kind kind, json_t *obj)
{
    char key[320];
    obj_key(obj, key, sizeof key);
    json_t *old = json_object_get(a->objects[kind], key);
    if (old && unchanged(old, obj)) {
        /* As Kubernetes: an update that changes nothing is no event. */
        json_decref(obj);
        return;
    }
    bool existed = old != NULL;
    set_rv(a, obj);
    json_object_set_new(a->objects[kind], key, obj);
    record(a, kind, existed ? "MODIFIED" : "ADDED", obj);
}

void api_delete(struct api *a, enum api_kind kind, const char *ns, const char *name)
{
    char key[320];
    snprintf(key, sizeof key, "%s/%s", ns, name);
    json_t *obj = json_object_get(a->objects[kind], key);
    if (!obj)
        return;
    json_incref(obj);
    json_object_del(a->objects[kind], key);
    set_rv(a, obj);
    record(a, kind, "DELETED", obj);
    json_decref(obj);
}

json_t *api_get(struct api *a, enum api_kind kind, const char *ns, const char *name)
{
    char key[320];
    snprintf(key, sizeof key, "%s/%s", ns, name);
    return json_object_get(a->objects[kind], key);
}

/* ---------------------------------------------------------------- requests */

static void list(struct api *a, struct request *req, enum api_kind kind, const char *selector)
{
    json_t *items = json_array();
    if (!items) {
        no_memory(req, "a list");
        return;
    }
    const char *k;
    json_t *obj;
    json_object_foreach(a->objects[kind], k, obj)
    {
        if (api_selector_matches(obj, selector))
            json_array_append(items, obj);
    }
    char rv[24];
    snprintf(rv, sizeof rv, "%lu", a->rv);
    json_t *resp =
        json_pack("{s:s, s:s, s:{s:s}, s:o}", "apiVersion", kinds[kind].api_version, "kind",
                  kinds[kind].list_kind, "metadata", "resourceVersion", rv, "items", items);
    char *s = resp ? json_dumps(resp, JSON_COMPACT) : NULL;
    json_decref(resp); /* also items' last reference */
    if (!s) {
        no_memory(req, "a list");
        return;
    }
    request_reply(req, 200, "application/json", s, strlen(s), NULL);
    free(s);
}

static void watch(struct api *a, struct request *req, enum api_kind kind, const char *selector,
                  unsigned long since)
{
    struct watcher *w = calloc(1, sizeof *w);
    if (!w) {
        no_memory(req, "a watch");
        return;
    }
    evbuffer_add_printf(request_output(req),
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        "Transfer-Encoding: chunked\r\nDate: %s\r\n\r\n",
                        http_date_now());
    request_response_started(req, 200);
    request_set_timeouts(req, 0, 0, 0);
    w->api = a;
    w->req = req;
    w->kind = kind;
    snprintf(w->selector, sizeof w->selector, "%s", selector ? selector : "");
    unsigned long oldest = a->hist_len ? a->hist[a->hist_start].rv : a->rv + 1;
    if (since && since + 1 < oldest) {
        /* History no longer reaches back there: the client must relist. */
        json_t *st = json_pack("{s:s,s:s,s:{},s:s,s:s,s:s,s:i}", "kind", "Status", "apiVersion",
                               "v1", "metadata", "status", "Failure", "message",
                               "too old resource version", "reason", "Expired", "code", 410);
        bool sent = st && send_event(w, "ERROR", st);
        json_decref(st);
        if (sent)
            chunk(req, "", 0);
        free(w);
        request_end(req, !sent);
        return;
    }
    for (unsigned j = 0; j < a->hist_len; j++) {
        struct event_rec *e = &a->hist[(a->hist_start + j) % API_HISTORY];
        if (e->rv > since && e->kind == kind && api_selector_matches(e->obj, w->selector) &&
            !send_event(w, e->type, e->obj)) {
            free(w);
            request_end(req, true);
            return;
        }
    }
    req->holder = w;
    req->cancel = watcher_cancel;
    LIST_INSERT_HEAD(&a->watchers, w, link);
}

static void on_request(struct request *req, void *arg)
{
    struct api *a = arg;
    const struct http_head *h = req->head;
    const char *u = http_str_ptr(h, h->url);
    size_t plen = api_path_len(h);
    if (plen >= 10 && !memcmp(u, "/coldbrew/", 10) && a->control) {
        a->control(req, a->control_arg);
        return;
    }
    for (int k = 0; k < API_KINDS; k++) {
        if (strlen(kinds[k].path) != plen || memcmp(u, kinds[k].path, plen))
            continue;
        if (h->method != HTTP_GET) {
            request_error(req, 405, "method not allowed\n");
            return;
        }
        char sel[256] = "", w[16] = "", rv[32] = "";
        api_query(h, "labelSelector", sel, sizeof sel);
        bool is_watch =
            api_query(h, "watch", w, sizeof w) && (!strcmp(w, "1") || !strcmp(w, "true"));
        if (is_watch) {
            api_query(h, "resourceVersion", rv, sizeof rv);
            watch(a, req, (enum api_kind)k, sel, strtoul(rv, NULL, 10));
        } else {
            list(a, req, (enum api_kind)k, sel);
        }
        return;
    }
    request_error(req, 404, "404 page not found\n");
}

struct api *api_open(struct event_base *base, const char *host, int port,
                     const struct server_limits *lim, const char **err)
{
    struct api *a = xcalloc(1, sizeof *a); /* start-up (alloc.h) */
    for (int k = 0; k < API_KINDS; k++)
        a->objects[k] = X_CHECK(json_object());
    LIST_INIT(&a->watchers);
    a->srv = server_open(base, "api", host, port, lim, on_request, a, err);
    if (!a->srv) {
        for (int k = 0; k < API_KINDS; k++)
            json_decref(a->objects[k]);
        free(a);
        return NULL;
    }
    a->port = port;
    return a;
}

int api_port(const struct api *a)
{
    return a->port;
}

void api_set_control(struct api *a, request_cb cb, void *arg)
{
    a->control = cb;
    a->control_arg = arg;
}

void api_free(struct api *a)
{
    if (!a)
        return;
    struct watcher *w;
    while ((w = LIST_FIRST(&a->watchers))) {
        LIST_REMOVE(w, link);
        struct request *req = w->req;
        req->holder = NULL;
        req->cancel = NULL;
        chunk(req, "", 0);
        free(w);
        request_end(req, false);
    }
    server_free(a->srv);
    for (unsigned j = 0; j < a->hist_len; j++)
        json_decref(a->hist[(a->hist_start + j) % API_HISTORY].obj);
    for (int k = 0; k < API_KINDS; k++)
        json_decref(a->objects[k]);
    free(a);
}
