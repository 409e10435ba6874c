/* knative.h — what both Knative hops read at the top of every request.
 *
 * The queue-proxy's handler chain (contract §3a) and the activator's
 * (activator §2, §3.6) start the same way: find a handful of headers
 * (probes, hops, routing, tracing), answer the ingress's network probe, and
 * go on. This module does those parts once for both:
 *
 *  - kn_headers_find(): one pass over the parsed head that dispatches on the
 *    name's first letter, so most headers a client sends cost one compare.
 *    Each field is the FIRST header of that name, or NULL; the pointers
 *    point into the head and live as long as it does (the request).
 *  - kn_reply_network_probe(): `K-Network-Probe: probe` is the ingress asking
 *    "are you there for this hash?"; both hops answer it the same way.
 *
 * Which hop reads which field is up to the hop: the queue-proxy ignores the
 * revision headers, the activator the X-Forwarded-* set. */
#ifndef COLDBREW_KNATIVE_H
#define COLDBREW_KNATIVE_H

#include <stdbool.h>
#include <string.h>

#include "http/http_head.h"

struct request;

struct kn_headers {
    /* the client's */
    const struct http_header *ua, *host, *forwarded, *xff, *xfh, *xfp;
    /* Knative's probes and hops: K-Network-Probe, K-Kubelet-Probe,
     * K-Network-Hash, K-Original-Host, K-Proxy-Request */
    const struct http_header *knp, *kkp, *hash, *orig_host, *proxy;
    /* routing: Knative-Serving-Revision/-Namespace/-Tag/-Default-Route */
    const struct http_header *rev, *ns, *tag, *defroute;
    /* traceparent, tracestate, and coldbrew's cold-start timing ask */
    const struct http_header *tp, *ts, *timing;
};

void kn_headers_find(const struct http_head *h, struct kn_headers *q);

/* Does the found header's value equal (start with) the literal? false for a
 * header that is not there. */
static inline bool kn_value_is(const struct http_head *h, const struct http_header *hd,
                               const char *want)
{
    size_t n = strlen(want);
    return hd && hd->value.len == n && !memcmp(h->buf + hd->value.off, want, n);
}

static inline bool kn_value_prefix(const struct http_head *h, const struct http_header *hd,
                                   const char *prefix)
{
    size_t n = strlen(prefix);
    return hd && hd->value.len >= n && !memcmp(h->buf + hd->value.off, prefix, n);
}

/* Answers the ingress's `K-Network-Probe: probe` (Knative's probe handler):
 * 200 echoing K-Network-Hash, or 400 when that header is missing or empty. */
void kn_reply_network_probe(struct request *req, const struct kn_headers *q);

#endif
