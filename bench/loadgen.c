/* loadgen — an open-loop, fixed-rate HTTP/1.1 load generator for latency
 * under a given rate (what wrk, being closed-loop, cannot measure without
 * coordinated omission).
 *
 *   loadgen -p PORT -r RATE -d SECONDS [-c CONNS] [-H "Name: value"]... [PATH]
 *
 * Requests are scheduled every 1/RATE s regardless of responses, over a
 * pool of keep-alive connections (one request in flight per connection; a
 * request whose slot is busy waits, and its latency counts from its
 * scheduled time). Prints: sent, ok, errors, p50/p90/p99/p99.9/max in ms.
 * Loopback only (127.0.0.1). Part of bench/, not of coldbrew. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    struct event *ev;
    struct evbuffer *in;
    double sched; /* scheduled time of the request in flight, or 0 */
};

static struct event_base *base;
static struct conn *conns;
static int nconns = 50, port = 8080;
static double rate = 1000, duration = 10, t_start;
static char req[4096];
static size_t req_len;
static double *lat;
static size_t nlat, sent, errors, pending_cap = 1 << 20;
static double *pending; /* scheduled times waiting for a free connection */
static size_t p_head, p_tail;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void send_on(struct conn *c, double sched)
{
    c->sched = sched;
    if (write(c->fd, req, req_len) != (ssize_t)req_len) {
        errors++;
        c->sched = 0;
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *c = arg;
    int n = evbuffer_read(c->in, fd, 65536);
    if (n <= 0) {
        fprintf(stderr, "loadgen: connection closed\n");
        errors++;
        event_del(c->ev);
        return;
    }
    /* Responses are small with Content-Length: complete when head + length arrived. */
    for (;;) {
        size_t len = evbuffer_get_length(c->in);
        struct evbuffer_ptr end = evbuffer_search(c->in, "\r\n\r\n", 4, NULL);
        if (end.pos < 0)
            return;
        char head[2048];
        size_t hl = (size_t)end.pos + 4 < sizeof head - 1 ? (size_t)end.pos + 4 : sizeof head - 1;
        evbuffer_copyout(c->in, head, hl);
        head[hl] = 0;
        char *cl = strcasestr(head, "\r\nContent-Length:");
        size_t body = cl ? (size_t)atol(cl + 17) : 0;
        if (len < (size_t)end.pos + 4 + body)
            return;
        bool okst = !strncmp(head + 9, "200", 3);
        evbuffer_drain(c->in, (size_t)end.pos + 4 + body);
        if (c->sched > 0) {
            if (okst)
                lat[nlat++] = now() - c->sched;
            else
                errors++;
            c->sched = 0;
        }
        if (p_head != p_tail)
            send_on(c, pending[p_head++ % pending_cap]);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    double t = now();
    double due_until = t - t_start;
    if (due_until > duration)
        due_until = duration;
    size_t due = (size_t)(due_until * rate);
    while (sent < due) {
        double sched = t_start + (double)sent / rate;
        sent++;
        struct conn *free_c = NULL;
        for (int i = 0; i < nconns && !free_c; i++)
            if (conns[i].sched == 0 && conns[i].fd >= 0)
                free_c = &conns[i];
        if (free_c)
            send_on(free_c, sched);
        else if (p_tail - p_head < pending_cap)
            pending[p_tail++ % pending_cap] = sched;
    }
    if (t - t_start > duration + 5)
        event_base_loopbreak(base);
    bool idle = p_head == p_tail;
    for (int i = 0; i < nconns && idle; i++)
        idle = conns[i].sched == 0;
    if (t - t_start > duration && idle)
        event_base_loopbreak(base);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    char headers[2048] = "";
    const char *path = "/";
    int opt;
    while ((opt = getopt(argc, argv, "p:r:d:c:H:")) != -1) {
        switch (opt) {
        case 'p':
            port = atoi(optarg);
            break;
        case 'r':
            rate = atof(optarg);
            break;
        case 'd':
            duration = atof(optarg);
            break;
        case 'c':
            nconns = atoi(optarg);
            break;
        case 'H':
            strncat(headers, optarg, sizeof headers - strlen(headers) - 3);
            strcat(headers, "\r\n");
            break;
        default:
            fprintf(stderr,
                    "usage: loadgen -p PORT -r RATE -d SECONDS [-c CONNS] [-H header]... [PATH]\n");
            return 2;
        }
    }
    if (optind < argc)
        path = argv[optind];
    req_len = (size_t)snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n",
                               path, port, headers);
    /* timerfd-backed timers: a plain epoll timeout rounds the 0.2 ms send
     * tick up to the kernel's timer granularity and sends in late bursts. */
    struct event_config *cfg = event_config_new();
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    lat = calloc((size_t)(rate * duration) + 16, sizeof *lat);
    pending = calloc(pending_cap, sizeof *pending);
    conns = calloc((size_t)nconns, sizeof *conns);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    for (int i = 0; i < nconns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            perror("loadgen: connect");
            return 1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, O_NONBLOCK);
        conns[i].fd = fd;
        conns[i].in = evbuffer_new();
        conns[i].ev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, &conns[i]);
        event_add(conns[i].ev, NULL);
    }
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 200}; /* 0.2 ms: fine enough for 1,000-10,000 req/s */
    event_add(tick, &tv);
    t_start = now();
    event_base_dispatch(base);
    qsort(lat, nlat, sizeof *lat, cmp);
#define PCT(p) (nlat ? lat[(size_t)((double)(nlat - 1) * (p))] * 1000 : 0)
    printf("sent %zu ok %zu errors %zu p50 %.3f p90 %.3f p99 %.3f p999 %.3f max %.3f ms\n", sent,
           nlat, errors, PCT(0.5), PCT(0.9), PCT(0.99), PCT(0.999),
           nlat ? lat[nlat - 1] * 1000 : 0);
    return 0;
}
