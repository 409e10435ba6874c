/* cli.c — see cli.h. Blocking sockets: these are one-shot commands. */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/env.h"
#include "manifest.h"

#define CLI_TIMEOUT_SECONDS 30
#define CLI_MAX_RESPONSE    (16u << 20)

static int api_port(void)
{
    bool ok = true;
    long p = env_long("COLDBREW_API_PORT", 8079, &ok);
    return ok ? (int)p : 8079;
}

/* One request; the status code, or -1 with errno (no platform there). */
static int http_do_port(int port, const char *method, const char *target, char **body)
{
    *body = NULL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {CLI_TIMEOUT_SECONDS, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n",
                     method, target);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t cap = 65536, len = 0;
    char *buf = xmalloc(cap + 1); /* a command: memory short ends it (alloc.h) */
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len)) > 0) {
        len += (size_t)r;
        if (len == cap) {
            if (cap >= CLI_MAX_RESPONSE)
                break;
            cap *= 2;
            buf = xrealloc(buf, cap + 1);
        }
    }
    close(fd);
    buf[len] = 0;
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        free(buf);
        errno = EPROTO;
        return -1;
    }
    char *b = strstr(buf, "\r\n\r\n");
    *body = xstrdup(b ? b + 4 : "");
    free(buf);
    return status;
}

static int http_do(const char *method, const char *target, char **body)
{
    return http_do_port(api_port(), method, target, body);
}

static int no_platform(void)
{
    fprintf(stderr,
            "coldbrew: no platform answers on 127.0.0.1:%d (%s); start one with `coldbrew run "
            "FILE`\n",
            api_port(), strerror(errno));
    return 1;
}

static void url_encode(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    for (; *s && o + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("/-_.~", c))
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, cap - o, "%%%02X", c);
    }
    out[o] = 0;
}

int cli_apply(int argc, char **argv)
{
    if (argc < 1) {
        fprintf(stderr, "usage: coldbrew apply FILE...\n");
        return 2;
    }
    int rc = 0;
    for (int i = 0; i < argc; i++) {
        char *abs = realpath(argv[i], NULL);
        if (!abs) {
            fprintf(stderr, "coldbrew: %s: %s\n", argv[i], strerror(errno));
            return 2;
        }
        /* Checked here first, so a bad file is reported even with no platform. */
        struct svc_doc *docs;
        size_t n;
        char err[1024];
        const char *files[] = {abs};
        if (!manifest_load(files, 1, &docs, &n, err, sizeof err)) {
            fprintf(stderr, "coldbrew: %s\n", err);
            free(abs);
            return 2;
        }
        manifest_free(docs, n);
        char enc[3 * PATH_MAX], target[3 * PATH_MAX + 64];
        url_encode(abs, enc, sizeof enc);
        snprintf(target, sizeof target, "/coldbrew/apply?file=%s", enc);
        free(abs);
        char *body;
        int st = http_do("POST", target, &body);
        if (st < 0)
            return no_platform();
        fprintf(st == 200 ? stdout : stderr, "%s%s", st == 200 ? "" : "coldbrew: ", body);
        if (st != 200)
            rc = st == 400 ? 2 : 1;
        free(body);
        if (rc)
            break;
    }
    return rc;
}

void cli_print_traffic(FILE *f, json_t *svc)
{
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(svc, "traffic"), i, t)
    {
        const char *tag = json_string_value(json_object_get(t, "tag"));
        fprintf(f, "  %3lld%% -> %s%s",
                (long long)json_integer_value(json_object_get(t, "percent")),
                json_string_value(json_object_get(t, "revision")),
                json_is_true(json_object_get(t, "latest")) ? " (latest)" : "");
        if (tag)
            fprintf(f, "   tag %s: %s", tag, json_string_value(json_object_get(t, "url")));
        fputc('\n', f);
    }
}

/* The last cold starts: the activator's ledger (held -> first byte) and the
 * platform's pod starts (fork -> user listening -> queue-proxy ready). */
static void render_coldstarts(FILE *f, json_t *r)
{
    json_t *cs = json_object_get(r, "coldstarts"), *ps = json_object_get(r, "pod_starts");
    size_t k;
    json_t *e;
    long long failed = json_integer_value(json_object_get(r, "coldstart_failed"));
    if (failed)
        fprintf(f,
                "    cold starts that got no response from a pod: %lld (activator logs say why)\n",
                failed);
    if (json_array_size(cs)) {
        fprintf(f,
                "    cold starts (%lld; newest first, ms): poke / endpoints / probe / forward / "
                "response = total\n",
                (long long)json_integer_value(json_object_get(r, "coldstart_count")));
        json_array_foreach(cs, k, e)
        {
            if (k == 3)
                break;
            time_t at = (time_t)(json_integer_value(json_object_get(e, "at_ms")) / 1000);
            char when[16];
            strftime(when, sizeof when, "%H:%M:%S", localtime(&at));
            fprintf(f, "      %s  %.2f / %.2f / %.2f / %.2f / %.2f = %.2f\n", when,
                    json_real_value(json_object_get(e, "poke_ms")),
                    json_real_value(json_object_get(e, "endpoints_ms")),
                    json_real_value(json_object_get(e, "probe_ms")),
                    json_real_value(json_object_get(e, "forward_ms")),
                    json_real_value(json_object_get(e, "response_ms")),
                    json_real_value(json_object_get(e, "total_ms")));
        }
    }
    if (json_array_size(ps)) {
        fprintf(f,
                "    pod starts (newest first, ms): fork -> user listening -> queue-proxy ready\n");
        json_array_foreach(ps, k, e)
        {
            if (k == 3)
                break;
            time_t at = (time_t)json_real_value(json_object_get(e, "at"));
            char when[16];
            strftime(when, sizeof when, "%H:%M:%S", localtime(&at));
            fprintf(f, "      %s  %.2f -> %.2f\n", when,
                    json_real_value(json_object_get(e, "fork_to_listening_ms")),
                    json_real_value(json_object_get(e, "listening_to_ready_ms")));
        }
    }
}

static void render(FILE *f, json_t *st)
{
    size_t i, j, k;
    json_t *s, *r, *pod;
    json_t *tls = json_object_get(st, "internal_tls");
    if (tls)
        fprintf(f, "INTERNAL TLS %s\n",
                json_is_true(json_object_get(tls, "enabled"))
                    ? "on (activator -> pods over TLS 1.3, local CA)"
                    : "off");
    json_array_foreach(json_object_get(st, "services"), i, s)
    {
        fprintf(f, "SERVICE %s/%s  %s\n", json_string_value(json_object_get(s, "namespace")),
                json_string_value(json_object_get(s, "name")),
                json_string_value(json_object_get(s, "url")));
        cli_print_traffic(f, s);
        fprintf(f, "  %-22s %-8s %5s %7s %5s  %-21s %6s  %s\n", "REVISION", "READY", "PODS",
                "DESIRED", "WANT", "OBSERVED stable/panic", "TARGET", "MODE (SKS)");
        json_array_foreach(json_object_get(s, "revisions"), j, r)
        {
            int ready = 0, total = 0;
            json_array_foreach(json_object_get(r, "pods"), k, pod)
            {
                total++;
                ready += !strcmp(json_string_value(json_object_get(pod, "phase")), "Ready");
            }
            char pods[32], conc[64];
            snprintf(pods, sizeof pods, "%d/%d", ready, total);
            snprintf(conc, sizeof conc, "%.2f / %.2f",
                     json_real_value(json_object_get(r, "stable_concurrency")),
                     json_real_value(json_object_get(r, "panic_concurrency")));
            long long desired = json_integer_value(json_object_get(r, "desired"));
            char ds[24];
            if (desired < 0)
                snprintf(ds, sizeof ds, "-");
            else
                snprintf(ds, sizeof ds, "%lld", desired);
            char mode[64];
            const char *proto = json_string_value(json_object_get(r, "protocol"));
            snprintf(mode, sizeof mode, "%s %s%s",
                     json_is_true(json_object_get(r, "panic")) ? "PANIC" : "stable",
                     json_string_value(json_object_get(r, "mode")),
                     proto && !strcmp(proto, "h2c") ? " h2c" : "");
            fprintf(f, "  %-22s %-8s %5s %7s %5lld  %-21s %6.1f  %s\n",
                    json_string_value(json_object_get(r, "name")),
                    json_string_value(json_object_get(r, "ready")), pods, ds,
                    (long long)json_integer_value(json_object_get(r, "want")), conc,
                    json_real_value(json_object_get(r, "target")), mode);
            const char *failed = json_string_value(json_object_get(r, "failed"));
            if (failed && *failed)
                fprintf(f, "    failed: %s\n", failed);
            render_coldstarts(f, r);
            json_array_foreach(json_object_get(r, "pods"), k, pod)
            {
                fprintf(f, "    %-40s %-11s :%-5lld %6.1fs%s\n",
                        json_string_value(json_object_get(pod, "name")),
                        json_string_value(json_object_get(pod, "phase")),
                        (long long)json_integer_value(json_object_get(pod, "port")),
                        json_real_value(json_object_get(pod, "age")),
                        json_is_true(json_object_get(pod, "reserved")) ? "  reserved (nice 19)"
                                                                       : "");
            }
        }
        fputc('\n', f);
    }
}

/* The activator's cold-start ledger (GET /coldstarts on its metrics port)
 * goes into each revision as "coldstarts" (newest first) and
 * "coldstart_count". Best effort: an activator restarting shows none. */
static void add_coldstarts(json_t *st)
{
    int port = st ? (int)json_integer_value(json_object_get(st, "activator_metrics_port")) : 0;
    char *body;
    if (!st || port <= 0)
        return;
    if (http_do_port(port, "GET", "/coldstarts", &body) != 200) {
        free(body);
        return;
    }
    json_t *cj = json_loads(body, 0, NULL);
    free(body);
    size_t i, j, k;
    json_t *s, *r, *c;
    json_array_foreach(json_object_get(st, "services"), i, s)
    {
        const char *ns = json_string_value(json_object_get(s, "namespace"));
        json_array_foreach(json_object_get(s, "revisions"), j, r)
        {
            const char *name = json_string_value(json_object_get(r, "name"));
            json_array_foreach(json_object_get(cj, "revisions"), k, c)
            {
                if (ns && name &&
                    !strcmp(ns, json_string_value(json_object_get(c, "namespace")) ?: "") &&
                    !strcmp(name, json_string_value(json_object_get(c, "name")) ?: "")) {
                    json_object_set(r, "coldstarts", json_object_get(c, "recent"));
                    json_object_set(r, "coldstart_count", json_object_get(c, "count"));
                    json_object_set(r, "coldstart_failed", json_object_get(c, "failed"));
                }
            }
        }
    }
    json_decref(cj);
}

static json_t *fetch_status(void)
{
    char *body;
    int st = http_do("GET", "/coldbrew/status", &body);
    if (st != 200) {
        free(body);
        return NULL;
    }
    json_t *j = json_loads(body, 0, NULL);
    free(body);
    add_coldstarts(j);
    return j;
}

int cli_status(int argc, char **argv)
{
    bool once = !isatty(1);
    bool as_json = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--once"))
            once = true;
        else if (!strcmp(argv[i], "--json"))
            as_json = once = true;
        else {
            fprintf(stderr, "usage: coldbrew status [--once] [--json]\n");
            return 2;
        }
    }
    for (;;) {
        json_t *st = fetch_status();
        if (!st)
            return no_platform();
        if (as_json) {
            char *s = json_dumps(st, JSON_INDENT(2));
            puts(s);
            free(s);
        } else {
            if (!once)
                fputs("\033[H\033[J", stdout); /* redraw in place */
            render(stdout, st);
            if (!once)
                fputs("(refreshing every second; Ctrl-C to leave)\n", stdout);
        }
        json_decref(st);
        fflush(stdout);
        if (once)
            return 0;
        sleep(1);
    }
}

/* Every log file of the revision's pods, past and present, in name order:
 * the callback gets each path and its label ("rev/pod user-container"). */
static int each_log(const char *home, const char *ns, const char *rev,
                    void (*fn)(const char *path, const char *label, void *arg), void *arg)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/logs/%s/%s", home, ns, rev);
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    if (n < 0)
        return 0;
    int shown = 0;
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        size_t l = strlen(nm);
        if (l > 4 && !strcmp(nm + l - 4, ".log")) {
            char path[PATH_MAX + 256], label[512];
            snprintf(path, sizeof path, "%s/%s", dir, nm);
            bool qp = l > 16 && !strcmp(nm + l - 16, ".queue-proxy.log");
            snprintf(label, sizeof label, "%s/%.*s %s", rev, (int)(l - (qp ? 16 : 4)), nm,
                     qp ? "queue-proxy" : "user-container");
            fn(path, label, arg);
            shown++;
        }
        free(names[i]);
    }
    free(names);
    return shown;
}

/* What -f has printed of each file so far. */
struct followed {
    char path[PATH_MAX + 256];
    long offset;
};
struct follow {
    struct followed *files;
    size_t n;
    char last[512];
};

static void show_new(const char *path, const char *label, void *arg)
{
    struct follow *fw = arg;
    struct followed *f = NULL;
    for (size_t i = 0; i < fw->n && !f; i++)
        if (!strcmp(fw->files[i].path, path))
            f = &fw->files[i];
    if (!f) {
        fw->files = xrealloc(fw->files, (fw->n + 1) * sizeof *fw->files);
        f = &fw->files[fw->n++];
        snprintf(f->path, sizeof f->path, "%s", path);
        f->offset = 0;
    }
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return;
    if (fseek(fp, f->offset, SEEK_SET) == 0) {
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, fp)) > 0) {
            if (strcmp(fw->last, label)) {
                printf("==> %s <==\n", label);
                snprintf(fw->last, sizeof fw->last, "%s", label);
            }
            fwrite(buf, 1, n, stdout);
            f->offset += (long)n;
        }
    }
    fclose(fp);
}

#define FOLLOW_POLL_US 250000 /* -f looks for new output four times a second */

int cli_logs(int argc, char **argv)
{
    bool follow = false;
    const char *svc = NULL, *rev = NULL;
    int extra = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--follow"))
            follow = true;
        else if (!svc)
            svc = argv[i];
        else if (!rev)
            rev = argv[i];
        else
            extra++;
    }
    if (!svc || extra) {
        fprintf(stderr, "usage: coldbrew logs SERVICE [REVISION] [-f]\n");
        return 2;
    }
    struct follow fw = {0};
    for (;;) {
        /* Asked again each round, so -f picks up new revisions and pods. */
        json_t *st = fetch_status();
        if (!st) {
            free(fw.files);
            return fw.n ? 0 : no_platform(); /* with -f: the platform stopped */
        }
        const char *home = json_string_value(json_object_get(st, "home"));
        size_t i, j;
        json_t *s, *r;
        bool found = false;
        json_array_foreach(json_object_get(st, "services"), i, s)
        {
            if (strcmp(json_string_value(json_object_get(s, "name")), svc))
                continue;
            found = true;
            const char *ns = json_string_value(json_object_get(s, "namespace"));
            json_array_foreach(json_object_get(s, "revisions"), j, r)
            {
                const char *rn = json_string_value(json_object_get(r, "name"));
                if (!rev || !strcmp(rn, rev))
                    each_log(home, ns, rn, show_new, &fw);
            }
        }
        json_decref(st);
        fflush(stdout);
        if (!found) {
            fprintf(stderr, "coldbrew: no service %s\n", svc);
            free(fw.files);
            return 1;
        }
        if (!follow) {
            free(fw.files);
            return 0;
        }
        usleep(FOLLOW_POLL_US);
    }
}
