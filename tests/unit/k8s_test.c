/* Tests for common/cluster/k8s.c against a hand-written API server on loopback
 * (KUBE_API_URL=http://127.0.0.1:<port>): list then watch, a watch event
 * split across reads at every byte, a watch that drops (cleanly or not) and
 * is re-opened from the newest version, 410 Gone (as a status and as an
 * ERROR event) that relists and reports what vanished as DELETED, garbage
 * lines, a list that is not JSON, and k8s_client_init's errors. */
#include "unit.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/k8s.h"
#include "core/log.h"
#include "core/loop.h"
#include "loopback_util.h"

struct seen {
    enum k8s_event ev;
    char key[64];
    char rv[32];
};

struct fixture {
    struct event_base *base;
    int lfd, port;
    int sfd;
    char req[2048]; /* the last request's head */
    struct k8s_client k;
    struct k8s_watch *w;
    struct seen ev[64];
    int nev;
};

static struct fixture fx;

static void on_event(void *arg, enum k8s_event ev, json_t *obj)
{
    (void)arg;
    if (fx.nev >= 64)
        return;
    struct seen *s = &fx.ev[fx.nev++];
    s->ev = ev;
    s->key[0] = s->rv[0] = 0;
    if (obj) {
        k8s_key(obj, s->key, sizeof s->key);
        const char *rv = k8s_str(obj, "metadata.resourceVersion");
        snprintf(s->rv, sizeof s->rv, "%s", rv ? rv : "");
    }
}

static int setup(void **state)
{
    memset(&fx, 0, sizeof fx);
    fx.base = loop_init();
    fx.lfd = lo_listen(16, &fx.port);
    assert_true(fx.lfd >= 0);
    char url[64];
    fx.sfd = -1;
    snprintf(url, sizeof url, "http://127.0.0.1:%d", fx.port);
    setenv("KUBE_API_URL", url, 1);
    setenv("KUBE_TOKEN_FILE", "/nonexistent/token", 1);
    setenv("COLDBREW_K8S_BACKOFF_MAX_SECONDS", "0.05", 1);
    char detail[256];
    assert_null(k8s_client_init(&fx.k, fx.base, detail, sizeof detail));
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    k8s_watch_free(fx.w);
    k8s_client_free(&fx.k);
    lo_teardown(fx.base, fx.lfd, fx.sfd);
    return 0;
}

/* Waits for the next request head (new connection or pooled one). */
static void await_request(void)
{
    assert_true(lo_await_head(fx.base, fx.lfd, &fx.sfd, fx.req, sizeof fx.req, 3000));
}

static void send_text(const char *s)
{
    assert_true(write_all(fx.sfd, s, strlen(s)));
}

/* A complete JSON answer with Content-Length. */
static void answer_json(int status, const char *json)
{
    char head[256];
    snprintf(head, sizeof head,
             "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n",
             status, strlen(json));
    send_text(head);
    send_text(json);
}

/* One chunk holding `s`. */
static void send_chunk(const char *s)
{
    char head[32];
    snprintf(head, sizeof head, "%zx\r\n", strlen(s));
    send_text(head);
    send_text(s);
    send_text("\r\n");
}

/* A MODIFIED event line for ns/a at version rv. */
static void modified_line(char *line, size_t cap, int rv)
{
    snprintf(line, cap,
             "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"namespace\":\"ns\","
             "\"name\":\"a\",\"resourceVersion\":\"%d\"}}}\n",
             rv);
}

/* ...sent as one chunk. */
static void send_modified(int rv)
{
    char line[256];
    modified_line(line, sizeof line, rv);
    send_chunk(line);
}

/* The i-th event recorded is ev for key (NULL: no object). */
static void assert_event(int i, enum k8s_event ev, const char *key)
{
    assert_int_equal(fx.ev[i].ev, ev);
    assert_string_equal(fx.ev[i].key, key ? key : "");
}

static void turn_until_events(int n)
{
    for (int i = 0; i < 2000 && fx.nev < n; i++)
        turn(fx.base, 1);
    assert_int_equal(fx.nev, n);
}

static const char list_ab[] =
    "{\"kind\":\"List\",\"metadata\":{\"resourceVersion\":\"10\"},\"items\":["
    "{\"metadata\":{\"namespace\":\"ns\",\"name\":\"a\",\"resourceVersion\":\"8\"}},"
    "{\"metadata\":{\"namespace\":\"ns\",\"name\":\"b\",\"resourceVersion\":\"9\"}}]}";

/* Starts the watch and serves its first list (a, b at version 10), then
 * waits for the watch request and answers its head (chunked stream). */
static void list_then_watch(void)
{
    fx.w = k8s_watch_start(&fx.k, "/api/v1/endpoints", "app=x,tier in (a)", on_event, NULL);
    await_request();
    assert_non_null(strstr(fx.req, "GET /api/v1/endpoints?limit=500&labelSelector=app%3Dx%2Ctier"
                                   "%20in%20%28a%29 HTTP/1.1\r\n"));
    answer_json(200, list_ab);
    turn_until_events(3);
    assert_event(0, K8S_ADDED, "ns/a");
    assert_event(1, K8S_ADDED, "ns/b");
    assert_event(2, K8S_SYNCED, NULL);
    assert_string_equal(k8s_watch_version(fx.w), "10");
    await_request();
    assert_non_null(strstr(fx.req, "watch=1&allowWatchBookmarks=true&resourceVersion=10&"));
    send_text("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              "Transfer-Encoding: chunked\r\n\r\n");
    fx.nev = 0;
}

static void test_event_split_at_every_byte(void **state)
{
    (void)state;
    list_then_watch();
    /* Each event is one chunk, written in two pieces cut at byte `at`: the
     * cut falls in the chunk size, its CRLF, the JSON and the newline. */
    for (int at = 1;; at++) {
        char line[256], chunk[300];
        modified_line(line, sizeof line, 100 + at);
        int n = snprintf(chunk, sizeof chunk, "%zx\r\n%s\r\n", strlen(line), line);
        if (at >= n)
            break;
        assert_true(write_all(fx.sfd, chunk, (size_t)at));
        turn(fx.base, 2);
        /* Nothing before the line's newline (the chunk's CRLF follows it). */
        if (at < n - 2)
            assert_int_equal(fx.nev, 0);
        assert_true(write_all(fx.sfd, chunk + at, (size_t)(n - at)));
        turn_until_events(1);
        assert_event(0, K8S_MODIFIED, "ns/a");
        char rv[16];
        snprintf(rv, sizeof rv, "%d", 100 + at);
        assert_string_equal(fx.ev[0].rv, rv);
        assert_string_equal(k8s_watch_version(fx.w), rv);
        fx.nev = 0;
    }
    /* Two events in one chunk, one event across two chunks; empty lines skipped. */
    send_chunk(
        "\n{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"namespace\":\"ns\",\"name\":\"c\","
        "\"resourceVersion\":\"500\"}}}\n{\"type\":\"DELETED\",\"object\":{\"metadata\":"
        "{\"namespace\":\"ns\",\"name\":\"b\",\"resourceVersion\":\"501\"}}}\n\n");
    send_chunk("{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":");
    turn(fx.base, 3);
    send_chunk("{\"resourceVersion\":\"502\"}}}\n");
    turn_until_events(2);
    assert_event(0, K8S_ADDED, "ns/c");
    assert_event(1, K8S_DELETED, "ns/b");
    for (int i = 0; i < 500 && strcmp(k8s_watch_version(fx.w), "502"); i++)
        turn(fx.base, 1);
    assert_string_equal(k8s_watch_version(fx.w), "502");
    assert_int_equal(fx.nev, 2); /* a bookmark is no event */
}

static void test_watch_drops(void **state)
{
    (void)state;
    list_then_watch();
    send_modified(11);
    turn_until_events(1);
    /* The server ends the watch cleanly (its timeout): re-opened at once from 11. */
    send_text("0\r\n\r\n");
    await_request();
    assert_non_null(strstr(fx.req, "watch=1&allowWatchBookmarks=true&resourceVersion=11&"));
    send_text("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    send_modified(12);
    turn_until_events(2);
    /* The connection drops mid-stream (half an event): re-watched from 12,
     * no relist, and the half event is not delivered. */
    send_text("20\r\n{\"type\":\"MODIFIED\",");
    turn(fx.base, 3);
    close(fx.sfd);
    fx.sfd = -1;
    await_request();
    assert_non_null(strstr(fx.req, "watch=1&allowWatchBookmarks=true&resourceVersion=12&"));
    assert_int_equal(fx.nev, 2);
    /* A watch answered 500: retried after a backoff, still from 12. */
    answer_json(500, "{}");
    await_request();
    assert_non_null(strstr(fx.req, "resourceVersion=12&"));
}

static void test_gone_relists(void **state)
{
    (void)state;
    list_then_watch();
    /* 410 as an ERROR event in the stream. */
    send_chunk("{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,"
               "\"message\":\"too old resource version\"}}\n");
    await_request();
    assert_non_null(strstr(fx.req, "GET /api/v1/endpoints?limit=500&"));
    assert_null(strstr(fx.req, "watch=1"));
    /* The relist no longer has b: b is reported DELETED, a MODIFIED. */
    answer_json(200, "{\"metadata\":{\"resourceVersion\":\"20\"},\"items\":[{\"metadata\":"
                     "{\"namespace\":\"ns\",\"name\":\"a\",\"resourceVersion\":\"19\"}}]}");
    turn_until_events(3);
    assert_event(0, K8S_MODIFIED, "ns/a");
    assert_event(1, K8S_DELETED, "ns/b");
    assert_event(2, K8S_SYNCED, NULL);
    await_request();
    assert_non_null(strstr(fx.req, "resourceVersion=20&"));
    /* 410 as the watch's HTTP status: relist too. */
    answer_json(410, "{\"kind\":\"Status\",\"code\":410}");
    await_request();
    assert_non_null(strstr(fx.req, "?limit=500&"));
    assert_null(strstr(fx.req, "watch=1"));
}

static void test_garbage_lines(void **state)
{
    (void)state;
    list_then_watch();
    send_modified(11);
    turn_until_events(1);
    /* Not JSON: the watch ends and is re-opened from 11 (no relist). */
    send_chunk("this is not json\n");
    await_request();
    assert_non_null(strstr(fx.req, "watch=1&allowWatchBookmarks=true&resourceVersion=11&"));
    send_text("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    /* JSON without type/object: the same. */
    send_chunk("{\"type\":\"MODIFIED\",\"object\":\"a string\"}\n");
    await_request();
    assert_non_null(strstr(fx.req, "resourceVersion=11&"));
    send_text("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    /* Garbage HTTP in answer to the watch: re-watched. */
    close(fx.sfd);
    fx.sfd = -1;
    await_request();
    send_text("NOT HTTP AT ALL\r\n\r\n");
    await_request();
    assert_non_null(strstr(fx.req, "resourceVersion=11&"));
    assert_int_equal(fx.nev, 1);
}

static void test_list_not_json(void **state)
{
    (void)state;
    fx.w = k8s_watch_start(&fx.k, "/api/v1/endpoints", NULL, on_event, NULL);
    await_request();
    answer_json(200, "{\"items\": [ truncated");
    await_request(); /* listed again after the backoff */
    assert_non_null(strstr(fx.req, "GET /api/v1/endpoints?limit=500 HTTP/1.1\r\n"));
    answer_json(200, "{\"metadata\":{},\"kind\":\"no items\"}");
    await_request();
    assert_non_null(strstr(fx.req, "?limit=500 "));
    /* Paginated: the continue token is sent back, url-encoded. */
    answer_json(200, "{\"metadata\":{\"continue\":\"tok/1=\"},\"items\":[{\"metadata\":"
                     "{\"namespace\":\"ns\",\"name\":\"a\",\"resourceVersion\":\"1\"}}]}");
    await_request();
    assert_non_null(strstr(fx.req, "?limit=500&continue=tok%2F1%3D HTTP/1.1"));
    answer_json(200, "{\"metadata\":{\"resourceVersion\":\"7\"},\"items\":[]}");
    turn_until_events(2);
    assert_int_equal(fx.ev[0].ev, K8S_ADDED);
    assert_event(1, K8S_SYNCED, NULL);
    await_request();
    assert_non_null(strstr(fx.req, "resourceVersion=7 "));
}

static void test_init_errors(void **state)
{
    (void)state;
    struct k8s_client k;
    char detail[256];
    setenv("KUBE_API_URL", "ftp://x", 1);
    assert_ptr_equal(k8s_client_init(&k, fx.base, detail, sizeof detail), k8s_err_bad_url);
    assert_non_null(strstr(detail, "KUBE_API_URL must be http(s)://"));
    setenv("KUBE_API_URL", "http://kubernetes.default:443", 1);
    assert_ptr_equal(k8s_client_init(&k, fx.base, detail, sizeof detail), k8s_err_bad_url);
    setenv("KUBE_API_URL", "https://127.0.0.1:6443", 1);
    setenv("KUBE_CA_FILE", "/nonexistent/ca.crt", 1);
    assert_ptr_equal(k8s_client_init(&k, fx.base, detail, sizeof detail), k8s_err_tls);
    unsetenv("KUBE_API_URL");
    unsetenv("KUBERNETES_SERVICE_HOST");
    assert_ptr_equal(k8s_client_init(&k, fx.base, detail, sizeof detail), k8s_err_no_api);
    assert_null(k8s_get(NULL, "a.b"));
}

int main(void)
{
    log_init("test", NULL, NULL);
    log_set_level("error");
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_event_split_at_every_byte),
        T(test_watch_drops),
        T(test_gone_relists),
        T(test_garbage_lines),
        T(test_list_not_json),
        T(test_init_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
