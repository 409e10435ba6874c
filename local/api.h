/* api.h — the part of the Kubernetes API that coldbrew's activator watches,
 * served by the local platform on loopback from an in-memory store.
 *
 *   GET <collection>[?labelSelector=k=v,k2]              a List of every object
 *   GET <collection>?watch=1&resourceVersion=RV[&labelSelector=...]
 *        chunked stream of {"type":"ADDED|MODIFIED|DELETED","object":{...}}
 *        lines: first what happened after RV, then live; RV older than the
 *        retained history gets an ERROR event with a 410 Status (relist)
 *
 * Collections: /apis/serving.knative.dev/v1/revisions, /api/v1/endpoints,
 * /api/v1/services, /apis/networking.internal.knative.dev/v1alpha1/ingresses.
 * Lists are not paginated (a server may ignore `limit`; client-go and
 * coldbrew's client both accept that).
 *
 * Paths under /coldbrew/ go to the control callback (the CLI's status,
 * apply and logs calls).
 *
 * An api_put that changes nothing is not an event (and keeps the resourceVersion).
 *
 * Ownership: api_put steals the object's reference; objects handed out are
 * borrowed. The store keeps API_HISTORY events for watch resumption. */
#ifndef LOCAL_API_H
#define LOCAL_API_H

#include <jansson.h>

#include "http/server.h"

enum api_kind { API_REVISION, API_ENDPOINTS, API_SERVICE, API_INGRESS, API_KINDS };

#define API_HISTORY 4096

struct api;

struct api *api_open(struct event_base *base, const char *host, int port,
                     const struct server_limits *lim, const char **err);
int api_port(const struct api *a);
void api_set_control(struct api *a, request_cb cb, void *arg);
/* Create or replace (metadata.namespace/name), stealing obj. */
void api_put(struct api *a, enum api_kind kind, json_t *obj);
void api_delete(struct api *a, enum api_kind kind, const char *ns, const char *name);
json_t *api_get(struct api *a, enum api_kind kind, const char *ns, const char *name);
/* Ends every watch stream (shutdown) and frees the store. */
void api_free(struct api *a);

/* The value of query parameter `name` of the request target (percent-decoded)
 * into buf; false when absent. */
/* Does obj's metadata.labels satisfy a label selector (k=v, k==v, k!=v, k; comma-separated)? */
bool api_selector_matches(json_t *obj, const char *selector);
/* The length of the request target's path (before any '?'). */
size_t api_path_len(const struct http_head *h);
bool api_query(const struct http_head *h, const char *name, char *buf, size_t cap);

#endif
