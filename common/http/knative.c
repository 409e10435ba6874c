/* knative.c — the headers both Knative hops read, and the network probe's
 * answer (knative.h). */
#include "http/knative.h"

#include <stdio.h>

#include "http/server.h"

void kn_headers_find(const struct http_head *h, struct kn_headers *q)
{
    memset(q, 0, sizeof *q);
    for (unsigned i = 0; i < h->nheaders; i++) {
        const struct http_header *hd = &h->hdr[i];
        switch (h->buf[hd->name.off] | 0x20) {
        case 'c':
            if (!q->timing && HTTP_NAME_IS(h, hd, "coldbrew-server-timing"))
                q->timing = hd;
            break;
        case 'f':
            if (!q->forwarded && HTTP_NAME_IS(h, hd, "forwarded"))
                q->forwarded = hd;
            break;
        case 'h':
            if (!q->host && HTTP_NAME_IS(h, hd, "host"))
                q->host = hd;
            break;
        case 'k':
            if (!q->knp && HTTP_NAME_IS(h, hd, "k-network-probe"))
                q->knp = hd;
            else if (!q->kkp && HTTP_NAME_IS(h, hd, "k-kubelet-probe"))
                q->kkp = hd;
            else if (!q->hash && HTTP_NAME_IS(h, hd, "k-network-hash"))
                q->hash = hd;
            else if (!q->orig_host && HTTP_NAME_IS(h, hd, "k-original-host"))
                q->orig_host = hd;
            else if (!q->proxy && HTTP_NAME_IS(h, hd, "k-proxy-request"))
                q->proxy = hd;
            else if (!q->rev && HTTP_NAME_IS(h, hd, "knative-serving-revision"))
                q->rev = hd;
            else if (!q->ns && HTTP_NAME_IS(h, hd, "knative-serving-namespace"))
                q->ns = hd;
            else if (!q->tag && HTTP_NAME_IS(h, hd, "knative-serving-tag"))
                q->tag = hd;
            else if (!q->defroute && HTTP_NAME_IS(h, hd, "knative-serving-default-route"))
                q->defroute = hd;
            break;
        case 't':
            if (!q->tp && HTTP_NAME_IS(h, hd, "traceparent"))
                q->tp = hd;
            else if (!q->ts && HTTP_NAME_IS(h, hd, "tracestate"))
                q->ts = hd;
            break;
        case 'u':
            if (!q->ua && HTTP_NAME_IS(h, hd, "user-agent"))
                q->ua = hd;
            break;
        case 'x':
            if (!q->xff && HTTP_NAME_IS(h, hd, "x-forwarded-for"))
                q->xff = hd;
            else if (!q->xfh && HTTP_NAME_IS(h, hd, "x-forwarded-host"))
                q->xfh = hd;
            else if (!q->xfp && HTTP_NAME_IS(h, hd, "x-forwarded-proto"))
                q->xfp = hd;
            break;
        }
    }
}

void kn_reply_network_probe(struct request *req, const struct kn_headers *q)
{
    size_t hl;
    const char *hash = http_header_value(req->head, q->hash, &hl);
    if (!hl) {
        request_error(req, 400,
                      "a probe request must contain a non-empty \"K-Network-Hash\" header\n");
        return;
    }
    /* The echo is bounded: a hash is a short hex string, anything longer is cut. */
    char extra[300];
    snprintf(extra, sizeof extra, "K-Network-Hash: %.*s\r\n", (int)(hl < 256 ? hl : 256), hash);
    request_reply(req, 200, NULL, NULL, 0, extra);
}
