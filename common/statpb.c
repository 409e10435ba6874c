/* statpb.c — see statpb.h. */
#include "statpb.h"

#include <stdio.h>
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

int statpb_decode(const uint8_t *buf, size_t len, struct statpb *out, char *name_buf, size_t cap)
{
    Metrics__Stat *m = metrics__stat__unpack(NULL, len, buf);
    if (!m)
        return -1;
    snprintf(name_buf, cap, "%s", m->pod_name ? m->pod_name : "");
    out->pod_name = name_buf;
    out->average_concurrent_requests = m->average_concurrent_requests;
    out->average_proxied_concurrent_requests = m->average_proxied_concurrent_requests;
    out->request_count = m->request_count;
    out->proxied_request_count = m->proxied_request_count;
    out->process_uptime = m->process_uptime;
    out->timestamp = m->timestamp;
    metrics__stat__free_unpacked(m, NULL);
    return 0;
}
