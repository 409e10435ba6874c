/* stats.c — see stats.h. */
#include "cluster/stats.h"

#include <string.h>

void stats_init(struct stats *s, uint64_t now_ns)
{
    memset(s, 0, sizeof *s);
    s->last_change_ns = now_ns;
}

static void compute(struct stats *s, uint64_t now_ns)
{
    if (now_ns <= s->last_change_ns)
        return;
    double dt = (double)(now_ns - s->last_change_ns) / 1e9;
    s->seconds_in_use += dt;
    s->computed += s->concurrency * dt;
    s->proxied_computed += s->proxied_concurrency * dt;
    s->last_change_ns = now_ns;
}

void stats_in(struct stats *s, uint64_t now_ns, bool proxied)
{
    compute(s, now_ns);
    if (proxied) {
        s->proxied_concurrency++;
        s->proxied_count++;
    }
    s->request_count++;
    s->concurrency++;
}

void stats_out(struct stats *s, uint64_t now_ns, bool proxied)
{
    compute(s, now_ns);
    if (proxied)
        s->proxied_concurrency--;
    s->concurrency--;
}

struct stats_report stats_report(struct stats *s, uint64_t now_ns)
{
    compute(s, now_ns);
    struct stats_report r = {0, 0, s->request_count, s->proxied_count};
    if (s->seconds_in_use > 0) {
        r.average_concurrency = s->computed / s->seconds_in_use;
        r.average_proxied_concurrency = s->proxied_computed / s->seconds_in_use;
    }
    s->seconds_in_use = s->computed = s->proxied_computed = 0;
    s->request_count = s->proxied_count = 0;
    return r;
}
