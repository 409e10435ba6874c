/* coffee — the example user container: a small HTTP app that says which
 * version served you, and can be told to work a little per request.
 *
 *   PORT              port to listen on (Knative sets it; default 8080)
 *   COFFEE_VERSION    what to call itself (default "v1")
 *   K_REVISION        the revision name, when run by Knative or coldbrew
 *
 *   GET /                 "coffee v1 (revision coffee-00001): one espresso\n"
 *   GET /?sleep=MS        answer after MS milliseconds (without blocking others)
 *   GET /?work=MS         burn MS milliseconds of CPU first
 *   GET /healthz          "ok"
 *
 * On start it prints "coffee v1 listening on 127.0.0.1:PORT at <epoch ms, to the microsecond>" to
 * stderr.
 *
 * Built on libevent's evhttp so it serves keep-alive and many clients at once. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *version, *revision;
static struct event_base *base;

/* Requests parked on ?sleep= timers, so a SIGTERM can free them. */
struct delayed {
    struct evhttp_request *req;
    struct event *ev;
    struct delayed *prev, *next;
};
static struct delayed *parked;

static void unpark(struct delayed *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        parked = d->next;
    if (d->next)
        d->next->prev = d->prev;
}

static void reply(struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "coffee %s (revision %s): one espresso\n", version, revision);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

static void on_delay(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct delayed *d = arg;
    unpark(d);
    reply(d->req);
    event_free(d->ev);
    free(d);
}

static long query_ms(struct evhttp_request *req, const char *key)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
    if (!q)
        return 0;
    struct evkeyvalq params;
    long v = 0;
    if (evhttp_parse_query_str(q, &params) == 0) {
        const char *s = evhttp_find_header(&params, key);
        if (s)
            v = atol(s);
        evhttp_clear_headers(&params);
    }
    return v > 0 ? v : 0;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    (void)arg;
    const char *path = evhttp_request_get_uri(req);
    if (path && !strncmp(path, "/healthz", 8)) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add(b, "ok", 2);
        evhttp_send_reply(req, 200, "OK", b);
        evbuffer_free(b);
        return;
    }
    long work = query_ms(req, "work");
    if (work) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        volatile unsigned long x = 0;
        do {
            for (int i = 0; i < 10000; i++)
                x += (unsigned long)i * 2654435761u;
            clock_gettime(CLOCK_MONOTONIC, &t);
        } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < work);
    }
    long sleep_ms = query_ms(req, "sleep");
    if (sleep_ms) {
        struct delayed *d = calloc(1, sizeof *d);
        d->req = req;
        d->ev = evtimer_new(base, on_delay, d);
        d->next = parked;
        if (parked)
            parked->prev = d;
        parked = d;
        struct timeval tv = {sleep_ms / 1000, (sleep_ms % 1000) * 1000};
        evtimer_add(d->ev, &tv);
        return;
    }
    reply(req);
}

static void on_term(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what, (void)arg;
    event_base_loopexit(base, NULL);
}

int main(void)
{
    const char *port = getenv("PORT");
    version = getenv("COFFEE_VERSION");
    revision = getenv("K_REVISION");
    if (!port || !*port)
        port = "8080";
    if (!version || !*version)
        version = "v1";
    if (!revision || !*revision)
        revision = "local";
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    evhttp_set_gencb(http, on_request, NULL);
    if (evhttp_bind_socket(http, "127.0.0.1", (unsigned short)atoi(port)) != 0) {
        fprintf(stderr, "coffee: cannot listen on 127.0.0.1:%s\n", port);
        return 1;
    }
    struct event *term = evsignal_new(base, SIGTERM, on_term, NULL);
    event_add(term, NULL);
    /* The wall-clock stamp lets a cold-start measurement subtract this
     * process's own exec-to-listening time from the data plane's. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    fprintf(stderr, "coffee %s listening on 127.0.0.1:%s at %lld.%03ld ms\n", version, port,
            (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000, (now.tv_nsec / 1000) % 1000);
    event_base_dispatch(base);
    event_free(term);
    while (parked) {
        struct delayed *d = parked;
        unpark(d);
        event_free(d->ev);
        free(d);
    }
    evhttp_free(http);
    event_base_free(base);
    return 0;
}
