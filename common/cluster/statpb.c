/* statpb.c — see statpb.h. */
#include "cluster/statpb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stat.pb-c.h"

static void to_msg(const struct statpb *s, Metrics__Stat *m)
{
    metrics__stat__init(m);
    m->pod_name = (char *)(s->pod_name ? s->pod_name : "");
    m->average_concurrent_requests = s->average_concurrent_requests;
    m->average_proxied_concurrent_requests = s->average_proxied_concurrent_requests;
    m->request_count = s->request_count;
    m->proxied_request_count = s->proxied_request_count;
    m->process_uptime = s->process_uptime;
    m->timestamp = s->timestamp;
}

size_t statpb_encode(const struct statpb *s, uint8_t *buf, size_t cap)
{
    Metrics__Stat m;
    to_msg(s, &m);
    size_t n = metrics__stat__get_packed_size(&m);
    if (n > cap)
        return 0;
    return metrics__stat__pack(&m, buf);
}

const char statpb_err_malformed[] = "not a Stat message";

const char *statpb_decode(const uint8_t *buf, size_t len, struct statpb *out, char *name_buf,
                          size_t cap)
{
    /* protobuf-c says NULL for bad bytes and for no memory alike. */
    Metrics__Stat *m = metrics__stat__unpack(NULL, len, buf);
    if (!m)
        return statpb_err_malformed;
    snprintf(name_buf, cap, "%s", m->pod_name ? m->pod_name : "");
    out->pod_name = name_buf;
    out->average_concurrent_requests = m->average_concurrent_requests;
    out->average_proxied_concurrent_requests = m->average_proxied_concurrent_requests;
    out->request_count = m->request_count;
    out->proxied_request_count = m->proxied_request_count;
    out->process_uptime = m->process_uptime;
    out->timestamp = m->timestamp;
    metrics__stat__free_unpacked(m, NULL);
    return NULL;
}

size_t statpb_encode_wire(const struct statpb_wire *msgs, size_t n, uint8_t *buf, size_t cap)
{
    Metrics__WireStatMessage *items = calloc(n ? n : 1, sizeof *items);
    Metrics__WireStatMessage **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    Metrics__Stat *stats = calloc(n ? n : 1, sizeof *stats);
    if (!items || !ptrs || !stats) {
        /* Memory short (alloc.h): nothing encoded, as when cap is too small. */
        free(stats);
        free(ptrs);
        free(items);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        metrics__wire_stat_message__init(&items[i]);
        items[i].namespace_ = (char *)msgs[i].namespace_;
        items[i].name = (char *)msgs[i].name;
        to_msg(&msgs[i].stat, &stats[i]);
        items[i].stat = &stats[i];
        ptrs[i] = &items[i];
    }
    Metrics__WireStatMessages batch;
    metrics__wire_stat_messages__init(&batch);
    batch.n_messages = n;
    batch.messages = ptrs;
    size_t len = metrics__wire_stat_messages__get_packed_size(&batch);
    if (len <= cap)
        len = metrics__wire_stat_messages__pack(&batch, buf);
    else
        len = 0;
    free(stats);
    free(ptrs);
    free(items);
    return len;
}
