/* reporter.c — concurrency reports to the autoscaler (Knative §5.3).
 *
 * Each revision with traffic has an entry (its time-weighted stats). The
 * first request for a revision without an entry sends a "poke" at once:
 * {pod_name, average_concurrent_requests: 1, request_count: 1}, the 0->1
 * signal the autoscaler acts on when the revision is at zero. Every second
 * one WireStatMessages batch reports every entry; the first report after a
 * poke subtracts what the poke already said (max(avg-1, 0), count-1). An
 * entry whose average was 0 and that no request still references is dropped
 * after its (zero) report, so the next request pokes again.
 *
 * Sends are fire-and-forget: when the link is down the batch is logged and
 * dropped, as Knative does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "cluster/statpb.h"
#include "cluster/ws_client.h"
#include "activator.h"

static struct ws_client *link;
static struct event *tick;
static uint8_t *frame;
static size_t frame_cap;

static void send_batch(const struct statpb_wire *m, size_t n)
{
    size_t need = 64 + n * 512;
    if (need > frame_cap) {
        free(frame);
        frame = malloc(need);
        frame_cap = frame ? need : 0;
        if (!frame) {
            /* Memory short (alloc.h): this report is dropped; the next tick sends. */
            log_error("reporter: %s for a stats frame", coldbrew_err_no_memory);
            return;
        }
    }
    size_t len = statpb_encode_wire(m, n, frame, frame_cap);
    if (!len || !ws_client_send_binary(link, frame, len))
        log_debug("Autoscaler is not reachable from activator. Stats were not sent.");
}

void reporter_request_in(struct revision *r)
{
    stats_in(&r->stats, clock_now_ns(), false);
    if (r->reporting)
        return;
    r->reporting = true;
    r->poked = true;
    struct statpb_wire m = {
        r->ns,
        r->name,
        {.pod_name = act->cfg.pod_name, .average_concurrent_requests = 1, .request_count = 1}};
    send_batch(&m, 1);
    cold_on_poke(r);
}

void reporter_request_out(struct revision *r)
{
    stats_out(&r->stats, clock_now_ns(), false);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    uint64_t now = clock_now_ns();
    unsigned n = HASH_COUNT(act->revisions), k = 0;
    if (!n)
        return;
    struct statpb_wire *m = calloc(n, sizeof *m);
    if (!m) {
        log_error("reporter: %s for a stats batch; skipped", coldbrew_err_no_memory);
        return;
    }
    struct revision *r, *tmp;
    HASH_ITER(hh, act->revisions, r, tmp)
    {
        if (!r->reporting)
            continue;
        struct stats_report rep = stats_report(&r->stats, now);
        double avg = rep.average_concurrency, count = rep.request_count;
        if (r->poked) {
            avg = avg - 1 > 0 ? avg - 1 : 0;
            count = count - 1 > 0 ? count - 1 : 0;
            r->poked = false;
        }
        m[k].namespace_ = r->ns;
        m[k].name = r->name;
        m[k].stat.pod_name = act->cfg.pod_name;
        m[k].stat.average_concurrent_requests = avg;
        m[k].stat.request_count = count;
        k++;
        if (rep.average_concurrency == 0 && r->active == 0)
            r->reporting = false; /* reported its zero; the next request pokes again */
    }
    if (k)
        send_batch(m, k);
    free(m);
    HASH_ITER(hh, act->revisions, r, tmp) revision_maybe_free(r);
}

static void on_link(void *arg, bool open)
{
    (void)arg;
    if (act->autoscaler_connected && !open)
        act->autoscaler_conn_errors++;
    act->autoscaler_connected = open;
}

bool reporter_start(char *err, size_t cap)
{
    link = ws_client_new(act->base, act->cfg.autoscaler_url, on_link, NULL, err, cap);
    if (!link)
        return false;
    ws_client_start(link);
    tick = X_CHECK(event_new(act->base, -1, EV_PERSIST, on_tick, NULL)); /* start-up */
    struct timeval one = {1, 0};
    event_add(tick, &one);
    return true;
}

void reporter_stop(void)
{
    if (tick)
        event_free(tick);
    ws_client_free(link);
    free(frame);
    tick = NULL;
    link = NULL;
    frame = NULL;
}
