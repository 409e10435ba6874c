/* k8s.h — a Kubernetes list-and-watch client (what client-go's informers do,
 * for the few resources the activator needs).
 *
 * A watch first LISTs (paginated, `limit`/`continue`), reports every object,
 * then WATCHes from the list's resourceVersion, keeping the newest version it
 * has seen (bookmarks included). When the watch ends it is re-opened from
 * that version; when the server says 410 Gone (the version is too old) it
 * relists and reports as DELETED every object that vanished meanwhile. A
 * failed call, a non-200 answer or a line that is not JSON is logged and
 * retried with exponential backoff (COLDBREW_K8S_BACKOFF_MAX_SECONDS, 5 s).
 *
 * Selectors are applied server side (labelSelector), so the activator holds
 * only the Endpoints it needs rather than the cluster's.
 *
 * Where the API is: KUBE_API_URL=http(s)://<ip>:<port> when set (plain HTTP
 * for the local platform and tests), else in-cluster: https to
 * KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT, verified against the
 * service account's CA (KUBE_CA_FILE overrides the path). A bearer token is
 * sent when KUBE_TOKEN_FILE (default: the service-account token) exists.
 *
 * Ownership: objects handed to the callback are borrowed (valid during the
 * call); keep a json_incref'd reference to hold one longer. */
#ifndef COLDBREW_K8S_H
#define COLDBREW_K8S_H

#include <jansson.h>
#include <stdbool.h>

#include "cluster/http_client.h"

enum k8s_event { K8S_ADDED, K8S_MODIFIED, K8S_DELETED, K8S_SYNCED };

typedef void (*k8s_event_cb)(void *arg, enum k8s_event ev, json_t *obj);

struct k8s_client {
    struct event_base *base;
    struct upstream api;
    char host[160];  /* Host header */
    char auth[2200]; /* "Authorization: Bearer ...\r\n" or "" */
    double backoff_max;
};

struct k8s_object;
struct k8s_watch;

/* Why k8s_client_init() failed (err.h); detail names the value at fault. */
extern const char k8s_err_no_api[];  /* neither KUBE_API_URL nor in-cluster */
extern const char k8s_err_bad_url[]; /* KUBE_API_URL or the host is not usable */
extern const char k8s_err_tls[];     /* the CA file cannot be loaded */

/* From KUBE_API_URL or the in-cluster environment. NULL when ready, else a
 * k8s_err_* with the human text in detail. Start-up only: aborts when
 * memory is short (alloc.h). */
const char *k8s_client_init(struct k8s_client *k, struct event_base *base, char *detail,
                            size_t cap);
void k8s_client_free(struct k8s_client *k);

/* path: "/apis/serving.knative.dev/v1/revisions", "/api/v1/endpoints", ...
 * selector: a label selector or NULL. Start-up: aborts when memory is short.
 * Later, an object that cannot be stored (memory) is logged and the watch
 * relists after its backoff, so no event is silently lost. */
struct k8s_watch *k8s_watch_start(struct k8s_client *k, const char *path, const char *selector,
                                  k8s_event_cb cb, void *arg);
void k8s_watch_free(struct k8s_watch *w);
/* The newest resourceVersion seen (for tests and logs). */
const char *k8s_watch_version(const struct k8s_watch *w);

/* Helpers for objects: metadata.namespace + "/" + metadata.name into buf. */
const char *k8s_key(json_t *obj, char *buf, size_t cap);
json_t *k8s_get(json_t *obj, const char *path);     /* dotted path, e.g. "spec.timeoutSeconds" */
const char *k8s_str(json_t *obj, const char *path); /* the same, when it is a string */

#endif
