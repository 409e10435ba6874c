/* libFuzzer target: the local platform's parsers.
 *
 * byte 0 even: the input is a Knative Service manifest: YAML -> JSON with
 *   line numbers (local/manifest.c), then a revision's settings from each
 *   document's template (local/settings.c: annotations, durations, ranges).
 * byte 0 odd: the input is an HTTP request head as the platform's API server
 *   reads it from the network: the query parameters the list/watch handler
 *   reads (api_query: percent-decoding) and the label selector it matches
 *   objects with (api_selector_matches). */
#include <event2/buffer.h>
#include <jansson.h>
#include <stdint.h>
#include <string.h>

#include "../../local/api.h"
#include "../../local/manifest.h"
#include "../../local/platform.h"
#include "http/h1_parser.h"

static void yaml_case(const uint8_t *data, size_t size)
{
    json_t *docs[16], *lines[16];
    char err[512];
    int n = manifest_parse_yaml("fuzz.yaml", data, size, docs, lines, 16, err, sizeof err);
    for (int i = 0; i < n; i++) {
        json_t *tmpl = json_object_get(json_object_get(docs[i], "spec"), "template");
        struct rev_settings st;
        if (json_is_object(tmpl))
            rev_settings_parse(tmpl, &st, err, sizeof err);
        json_decref(docs[i]);
        json_decref(lines[i]);
    }
}

static void api_case(const uint8_t *data, size_t size)
{
    struct h1_parser p;
    h1_parser_init(&p, true, 8192, 64);
    struct http_head *h = http_head_acquire();
    h1_parser_begin(&p, h);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, data, size);
    if (h1_parse_head(&p, b) == H1_HEAD) {
        char sel[256], w[16], rv[32], file[1024];
        size_t plen = api_path_len(h);
        if (plen > h->url.len)
            __builtin_trap();
        api_query(h, "file", file, sizeof file);
        api_query(h, "watch", w, sizeof w);
        api_query(h, "resourceVersion", rv, sizeof rv);
        if (api_query(h, "labelSelector", sel, sizeof sel)) {
            json_t *obj =
                json_pack("{s:{s:{s:s,s:s}}}", "metadata", "labels", "serving.knative.dev/revision",
                          "coffee-00001", "networking.internal.knative.dev/serviceType", "Private");
            api_selector_matches(obj, sel);
            json_decref(obj);
        }
    }
    evbuffer_free(b);
    http_head_release(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1)
        api_case(data + 1, size - 1);
    else
        yaml_case(data + 1, size - 1);
    return 0;
}
