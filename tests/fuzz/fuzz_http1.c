/* libFuzzer target: everything that reads network bytes on the HTTP/1.1 path.
 *
 * The first input byte picks the mode and where to split the rest into two
 * evbuffer chunks (so heads that straddle reads are covered):
 *   even: request head -> header rewrite (proxy_build_request_head) ->
 *         Forwarded shim -> body framing, to the end of input
 *   odd:  response head -> body framing -> EOF handling
 * Any crash, leak, or sanitizer report is a finding. */
#include <event2/buffer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/forwarded.h"
#include "http/h1_parser.h"
#include "proxy/proxy.h"

static void feed(struct evbuffer *b, const uint8_t *d, size_t n, size_t split)
{
    if (split > n)
        split = n;
    evbuffer_add(b, d, split);
    evbuffer_add(b, d + split, n - split);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    data++;
    size--;
    bool request = (ctl & 1) == 0;
    size_t split = size ? (size_t)(ctl >> 1) % (size + 1) : 0;

    struct h1_parser p;
    h1_parser_init(&p, request, 4096, 64);
    struct http_head *h = http_head_acquire();
    h1_parser_begin(&p, h);
    struct evbuffer *b = evbuffer_new();
    feed(b, data, size, split);
    enum h1_result r = h1_parse_head(&p, b);
    if (r == H1_HEAD) {
        if (request) {
            static struct sconn c;
            memset(&c, 0, sizeof c);
            strcpy(c.peer_ip, "127.0.0.1");
            c.req.conn = &c;
            c.req.head = h;
            static const char *const drop[] = {"knative-serving-revision", "k-original-host", NULL};
            size_t hl = 0;
            const char *host = http_head_get(h, "k-original-host", &hl);
            struct proxy_edit e = {.host = host, .host_len = hl, .drop = drop, .append_xff = true};
            char out[16384];
            proxy_build_request_head(&c.req, &e, out, sizeof out);
            size_t xl = 0, fl = 0, pl = 0;
            const char *xff = http_head_get(h, "x-forwarded-for", &xl);
            const char *xfh = http_head_get(h, "x-forwarded-host", &fl);
            const char *xfp = http_head_get(h, "x-forwarded-proto", &pl);
            /* The queue-proxy sizes the Forwarded line with forwarded_bound:
             * building into exactly that much (heap, so ASan sees a byte
             * over) must give what a roomy buffer gives. */
            size_t cap = forwarded_bound(xff, xl, fl, pl);
            char *roomy = malloc(2 * cap + 64), *exact = malloc(cap);
            if (roomy && exact) {
                size_t want = forwarded_build(roomy, 2 * cap + 64, xff, xl, xfh, fl, xfp, pl);
                size_t got = forwarded_build(exact, cap, xff, xl, xfh, fl, xfp, pl);
                if (got != want || (want && memcmp(roomy, exact, want + 1)))
                    __builtin_trap();
            }
            free(roomy);
            free(exact);
            char esc[256];
            js_escape(esc, sizeof esc, http_str_ptr(h, h->url), h->url.len < 64 ? h->url.len : 64);
        } else if (h->status == 204) {
            h1_parser_skip_body(&p);
        }
        for (int i = 0; i < 64; i++) {
            size_t n;
            r = h1_parse_body(&p, b, 97, &n);
            evbuffer_drain(b, n);
            if (r != H1_BODY || n == 0)
                break;
        }
        if (!request && r == H1_BODY)
            h1_parser_eof_completes(&p);
    }
    evbuffer_free(b);
    http_head_release(h);
    return 0;
}
