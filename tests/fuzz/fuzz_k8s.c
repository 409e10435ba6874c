/* libFuzzer target: the activator's Kubernetes list-and-watch client
 * (common/cluster/k8s.c) reading what an API server sends: the LIST answer
 * (a JSON list, its items and continue token), the WATCH stream (one JSON
 * event per line: ADDED, MODIFIED, DELETED, BOOKMARK, ERROR with 410 Gone),
 * and the object store keyed by namespace/name that both feed, with the
 * HTTP framing of each answer (http_client.c) underneath.
 *
 * Input: byte 0 bit 0 clear = the rest is the LIST answer's body (sent with
 * its Content-Length); set = the LIST answer is a fixed list of two
 * Endpoints and the rest is the WATCH stream (one chunk, then the last
 * chunk, so the client sees a healthy end and asks again). The "API
 * server" is a loopback listener in this process; the client is the real
 * one, on a real libevent loop, driven for a bounded number of turns. What
 * comes after a retry timer (the relist after 410 Gone, with the deletions
 * it reports) is left to the scenario test
 * activator_survives_watch_drop_garbage_and_410: its first backoff is
 * 0.1 s, too slow for a fuzzer.
 *
 * The server side always closes with a reset (SO_LINGER 0), after the
 * client has had its turns: no connection ends in TIME_WAIT, so a long
 * fuzzing run does not use up loopback's ephemeral ports.
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/k8s.h"
#include "core/log.h"

#define TURNS 64 /* loop turns per input: every exchange here takes a few */

static struct event_base *base;
static int lfd = -1;

static const char list_two[] =
    "{\"kind\":\"EndpointsList\",\"metadata\":{\"resourceVersion\":\"10\"},\"items\":["
    "{\"metadata\":{\"namespace\":\"default\",\"name\":\"a\",\"resourceVersion\":\"9\"},"
    "\"subsets\":[{\"addresses\":[{\"ip\":\"10.0.0.1\"}],\"ports\":[{\"port\":8012}]}]},"
    "{\"metadata\":{\"namespace\":\"default\",\"name\":\"b\",\"resourceVersion\":\"10\"}}]}";

/* The callback walks a few paths of each object with k8s.h's helpers, as
 * the activator's callbacks do. (The activator's own Endpoints reading,
 * activator/revisions.c, is not part of the fuzz build; its inputs are
 * what this client hands on.) */
static void on_event(void *arg, enum k8s_event ev, json_t *obj)
{
    (void)arg;
    if (ev == K8S_SYNCED || !obj)
        return;
    char key[320];
    k8s_key(obj, key, sizeof key);
    k8s_str(obj, "metadata.resourceVersion");
    json_t *subsets = k8s_get(obj, "subsets");
    size_t i;
    json_t *s;
    json_array_foreach(subsets, i, s) k8s_get(s, "ports");
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return;
        p += w, n -= (size_t)w;
    }
}

static void reset_close(int fd)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!base) {
        base = event_base_new();
        log_set_level("error");
        lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof a;
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 16) ||
            getsockname(lfd, (struct sockaddr *)&a, &al))
            abort();
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(a.sin_port));
        setenv("KUBE_API_URL", url, 1);
        setenv("KUBE_TOKEN_FILE", "/nonexistent", 1);
    }
    if (size < 1)
        return 0;
    bool watch = data[0] & 1;
    data++, size--;

    /* The answers, in the order the client asks: the LIST, then the WATCH. */
    char list_head[96], *answers[2];
    size_t lens[2];
    const char *list = watch ? list_two : (const char *)data;
    size_t list_len = watch ? strlen(list) : size;
    int hl =
        snprintf(list_head, sizeof list_head,
                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                 list_len);
    answers[0] = malloc((size_t)hl + list_len);
    memcpy(answers[0], list_head, (size_t)hl);
    memcpy(answers[0] + hl, list, list_len);
    lens[0] = (size_t)hl + list_len;
    char watch_head[128];
    int wl = snprintf(watch_head, sizeof watch_head,
                      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n%zx\r\n",
                      size);
    answers[1] = malloc((size_t)wl + size + 7);
    memcpy(answers[1], watch_head, (size_t)wl);
    if (size)
        memcpy(answers[1] + wl, data, size);
    /* An empty input is the last chunk at once ("0\r\n" already written). */
    lens[1] = (size_t)wl + size;
    memcpy(answers[1] + lens[1], size ? "\r\n0\r\n\r\n" : "\r\n", size ? 7 : 2);
    lens[1] += size ? 7 : 2;
    int nanswers = watch ? 2 : 1;

    struct k8s_client k;
    char detail[256];
    if (k8s_client_init(&k, base, detail, sizeof detail))
        abort();
    struct k8s_watch *w = k8s_watch_start(&k, "/api/v1/endpoints", "a=b", on_event, NULL);

    /* The "API server": answer each request head in turn; a request past
     * the last answer waits for the end. */
    int conns[4] = {-1, -1, -1, -1};
    int next = 0;
    char buf[4096];
    size_t have[4] = {0};
    for (int turn = 0; turn < TURNS; turn++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        for (int i = 0; c >= 0 && i < 4; i++)
            if (conns[i] < 0) {
                conns[i] = c;
                c = -1;
            }
        if (c >= 0)
            close(c);
        for (int i = 0; i < 4; i++) {
            if (conns[i] < 0)
                continue;
            ssize_t r;
            while ((r = read(conns[i], buf, sizeof buf)) > 0) {
                /* Count request heads: the client's requests have no body. */
                for (ssize_t j = 0; j < r; j++) {
                    have[i] =
                        buf[j] == (have[i] % 2 ? '\n' : '\r') ? have[i] + 1 : (buf[j] == '\r');
                    if (have[i] == 4) {
                        have[i] = 0;
                        if (next < nanswers) {
                            send_all(conns[i], answers[next], lens[next]);
                            next++;
                        }
                    }
                }
            }
            if (r == 0) { /* the client closed this one */
                reset_close(conns[i]);
                conns[i] = -1;
                have[i] = 0;
            }
        }
    }
    for (int i = 0; i < 4; i++)
        if (conns[i] >= 0)
            reset_close(conns[i]);
    k8s_watch_free(w);
    k8s_client_free(&k);
    event_base_loop(base, EVLOOP_NONBLOCK);
    free(answers[0]);
    free(answers[1]);
    return 0;
}
