/* main.c — the `coldbrew` command.
 *
 *   coldbrew run FILE...            run Knative Services on this machine
 *   coldbrew apply FILE...          update a running platform
 *   coldbrew status [--once]        services, revisions, traffic, pods, scale
 *   coldbrew logs SERVICE [REVISION] [-f]
 *
 * `run` is the platform (platform.h): it serves the Kubernetes-shaped API
 * and the control calls on 127.0.0.1:COLDBREW_API_PORT, runs the KPA
 * autoscaler in-process, and starts coldbrew's activator, unchanged, as a
 * child in its ingress role on COLDBREW_PORT. Its own log (JSON lines) goes
 * to <home>/coldbrew.log; the terminal gets what a person needs. */
#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/env.h"
#include "core/log.h"
#include "core/loop.h"
#include "cli.h"
#include "certs.h"
#include "platform.h"

#define ACTIVATOR_START_SECONDS 15.0 /* the activator must listen within this */

static struct platform *P;
static struct event *ready_ev, *restart_ev;
static double ready_deadline;
static unsigned signals_seen;

/* ---------------------------------------------------------------- config */

bool platform_config_load(struct platform_config *c, char *err, size_t cap)
{
    bool ok = true;
    memset(c, 0, sizeof *c);
    c->port = (int)env_long("COLDBREW_PORT", 8080, &ok);
    c->api_port = (int)env_long("COLDBREW_API_PORT", 8079, &ok);
    c->domain = env_str("COLDBREW_DOMAIN", "localhost");
    c->grace = env_double("COLDBREW_SCALE_TO_ZERO_GRACE_SECONDS", 30, &ok);
    c->pod_drain = env_double("COLDBREW_POD_DRAIN_SECONDS", 1, &ok);
    if (!ok) {
        snprintf(err, cap,
                 "COLDBREW_PORT, COLDBREW_API_PORT and the *_SECONDS settings are numbers");
        return false;
    }
    const char *range = env_str("COLDBREW_PORT_RANGE", "10000-19999");
    if (sscanf(range, "%d-%d", &c->port_lo, &c->port_hi) != 2 || c->port_lo < 1 ||
        c->port_hi > 65535 || c->port_hi - c->port_lo < 16) {
        snprintf(err, cap, "COLDBREW_PORT_RANGE: LOW-HIGH with at least 16 ports, not %s", range);
        return false;
    }
    static char home[PATH_MAX];
    const char *h = env_str("COLDBREW_HOME", NULL);
    if (h)
        snprintf(home, sizeof home, "%s", h);
    else
        snprintf(home, sizeof home, "%s/.coldbrew", env_str("HOME", "/tmp"));
    c->home = home;
    static char bin[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", bin, sizeof bin - 1);
    if (n <= 0) {
        snprintf(err, cap, "cannot find my own binary: %s", strerror(errno));
        return false;
    }
    bin[n] = 0;
    char *slash = strrchr(bin, '/');
    *slash = 0;
    c->bin_dir = bin;
    c->internal_tls = env_bool("COLDBREW_INTERNAL_TLS", false);
    snprintf(c->tls_dir, sizeof c->tls_dir, "%.590s/tls", home);
    return true;
}

/* Internal TLS: the local CA (made or renewed now), under tls_dir/ca. */
static bool tls_setup(struct platform_config *c, char *err, size_t cap)
{
    char ca[700];
    mkdir(c->tls_dir, 0700);
    snprintf(ca, sizeof ca, "%s/ca", c->tls_dir);
    mkdir(ca, 0700);
    return certs_ensure_ca(ca, NULL, NULL, err, cap);
}

/* ---------------------------------------------------------------- the activator */

static bool start_activator(struct platform *p, char *err, size_t cap)
{
    char v[17][1100];
    int n = 0;
#define SETV(...) snprintf(v[n++], sizeof v[0], __VA_ARGS__)
    SETV("PATH=%s", env_str("PATH", "/usr/bin:/bin"));
    SETV("POD_NAME=activator-local");
    SETV("POD_IP=127.0.0.1");
    SETV("SYSTEM_NAMESPACE=knative-serving");
    SETV("CLUSTER_DOMAIN=cluster.local");
    SETV("KUBE_API_URL=http://127.0.0.1:%d", p->cfg.api_port);
    SETV("AUTOSCALER_URL=ws://127.0.0.1:%d", autoscaler_port(p->as));
    SETV("ACTIVATOR_HTTP_PORT=%d", p->cfg.port);
    SETV("ACTIVATOR_H2C_PORT=%d", platform_free_port(p));
    p->activator_metrics_port = platform_free_port(p);
    SETV("METRICS_PROMETHEUS_PORT=%d", p->activator_metrics_port);
    SETV("COLDBREW_INGRESS=true");
    SETV("COLDBREW_LISTEN_HOST=127.0.0.1");
    /* A starting pod is probed every 2 ms, not Knative's 200 ms: on one
     * machine a cold start is milliseconds, and this is most of them. */
    SETV("PROBE_FREQUENCY=2ms");
    SETV("ACTIVATOR_DRAIN_SECONDS=0");
    if (p->cfg.internal_tls) {
        /* activator -> pod over TLS, trusting the local CA (and the previous
         * one while it is valid: a CA renewal never strands a pod). */
        SETV("COLDBREW_SYSTEM_INTERNAL_TLS=enabled");
        char ca[700], trust[2][512];
        snprintf(ca, sizeof ca, "%s/ca", p->cfg.tls_dir);
        size_t nt = certs_trust_files(ca, trust, 2);
        SETV("COLDBREW_TLS_TRUST_FILES=%s%s%s", nt > 0 ? trust[0] : "", nt > 1 ? "," : "",
             nt > 1 ? trust[1] : "");
    }
#undef SETV
    char *envp[32];
    for (int i = 0; i < n; i++)
        envp[i] = v[i];
    /* The platform's own tracing settings (OBSERVABILITY_CONFIG, COLDBREW_OTLP_*):
     * passed as they are, from the platform's environment. */
    static const char *const pass[] = {"OBSERVABILITY_CONFIG",
                                       "COLDBREW_OTLP_QUEUE_SPANS",
                                       "COLDBREW_OTLP_BATCH_SPANS",
                                       "COLDBREW_OTLP_BATCH_MS",
                                       "COLDBREW_OTLP_TIMEOUT_MS",
                                       "OTEL_SERVICE_NAME",
                                       NULL};
    static char passed[6][4096];
    int np = 0;
    for (const char *const *k = pass; *k; k++)
        if (getenv(*k) && *getenv(*k)) {
            snprintf(passed[np], sizeof passed[np], "%s=%s", *k, getenv(*k));
            envp[n++] = passed[np++];
        }
    envp[n] = NULL;
    char bin[PATH_MAX + 16];
    snprintf(bin, sizeof bin, "%s/activator", p->cfg.bin_dir);
    char *argv[] = {bin, NULL};
    int fd = proc_open_log(p->activator_log);
    if (fd < 0) {
        snprintf(err, cap, "%s: %s", p->activator_log, strerror(errno));
        return false;
    }
    p->activator_pid = proc_spawn(argv, envp, NULL, fd, 0, err, cap);
    close(fd);
    return p->activator_pid > 0;
}

static void on_restart(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    char err[300];
    if (!P->stopping && !P->activator_pid && !start_activator(P, err, sizeof err))
        log_error("restarting the activator: %s", err);
}

/* ---------------------------------------------------------------- start-up report */

static void print_ready(void)
{
    json_t *st = platform_status_json(P);
    size_t n = json_array_size(json_object_get(st, "services"));
    printf("coldbrew: %zu service%s on port %d (API and control on 127.0.0.1:%d; logs in %s)\n", n,
           n == 1 ? "" : "s", P->cfg.port, P->cfg.api_port, P->cfg.home);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(st, "services"), i, s)
    {
        int pods = 0;
        size_t j;
        json_t *r;
        json_array_foreach(json_object_get(s, "revisions"), j, r) pods +=
            (int)json_array_size(json_object_get(r, "pods"));
        char scale[40];
        if (pods)
            snprintf(scale, sizeof scale, "%d pod%s starting", pods, pods == 1 ? "" : "s");
        else
            snprintf(scale, sizeof scale, "scaled to zero");
        printf("%s ready at %s (%s)\n", json_string_value(json_object_get(s, "name")),
               json_string_value(json_object_get(s, "url")), scale);
        cli_print_traffic(stdout, s);
    }
    json_decref(st);
    printf("`coldbrew status` shows pods and scale; Ctrl-C drains every pod and stops.\n");
    fflush(stdout);
}

static void on_ready_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    if (!P->activator_pid) {
        fprintf(stderr, "coldbrew: the activator exited at start-up; its log: %s\n",
                P->activator_log);
        platform_shutdown(P);
        return;
    }
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)P->cfg.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool up = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    if (up) {
        print_ready();
        return;
    }
    if (autoscaler_now() > ready_deadline) {
        fprintf(stderr,
                "coldbrew: the activator did not listen on :%d within %.0f s; its log: %s\n",
                P->cfg.port, ACTIVATOR_START_SECONDS, P->activator_log);
        platform_shutdown(P);
        return;
    }
    struct timeval tv = clock_tv(0.01);
    evtimer_add(ready_ev, &tv);
}

/* ---------------------------------------------------------------- signals and shutdown */

static void maybe_exit(void)
{
    if (P->stopping && platform_idle(P) && !P->activator_pid)
        event_base_loopbreak(P->base);
}

static void on_all_gone(struct platform *p)
{
    if (p->activator_pid)
        kill(p->activator_pid, SIGTERM);
    maybe_exit();
}

static void on_sigchld(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    pid_t before = P->activator_pid;
    pods_reap(P);
    if (before && !P->activator_pid && !P->stopping) {
        struct timeval tv = clock_tv(1.0);
        evtimer_add(restart_ev, &tv);
    }
    maybe_exit();
}

static void on_stop(evutil_socket_t sig, short what, void *arg)
{
    (void)what, (void)arg;
    if (++signals_seen > 1) {
        pid_t pids[4096];
        unsigned n = platform_pids(P, pids, 4096);
        fprintf(stderr, "coldbrew: second signal; killing %u processes\n", n);
        for (unsigned i = 0; i < n; i++)
            kill(-pids[i], SIGKILL);
        exit(1);
    }
    fprintf(stderr, "\ncoldbrew: %s: draining every pod, then stopping\n",
            sig == SIGINT ? "interrupt" : "terminated");
    platform_shutdown(P);
}

/* ---------------------------------------------------------------- run */

static int cmd_run(int argc, char **argv)
{
    if (argc < 1) {
        fprintf(stderr, "usage: coldbrew run FILE...\n");
        return 2;
    }
    struct platform_config cfg;
    char err[1024];
    if (!platform_config_load(&cfg, err, sizeof err)) {
        fprintf(stderr, "coldbrew: %s\n", err);
        return 2;
    }
    /* Everything below is released on every way out (the sanitizer build
     * checks for leaks at exit, the error exits included). */
    int rc = 0;
    char **files = xcalloc((size_t)argc, sizeof *files); /* start-up (alloc.h) */
    struct svc_doc *docs = NULL;
    size_t ndocs = 0;
    int logfd = -1;
    struct event_base *base = NULL;
    struct api *api = NULL;
    struct autoscaler *as = NULL;
    struct event *sigchld = NULL, *sigint = NULL, *sigterm = NULL;

    /* Absolute paths: working directories and `apply` refer to them. */
    for (int i = 0; i < argc; i++) {
        files[i] = realpath(argv[i], NULL);
        if (!files[i]) {
            fprintf(stderr, "coldbrew: %s: %s\n", argv[i], strerror(errno));
            rc = 2;
            goto out;
        }
    }
    if (!manifest_load((const char *const *)files, (size_t)argc, &docs, &ndocs, err, sizeof err)) {
        fprintf(stderr, "coldbrew: %s\n", err);
        docs = NULL;
        rc = 2;
        goto out;
    }
    mkdir(cfg.home, 0755);
    if (manifest_internal_tls)
        cfg.internal_tls = true;
    if (cfg.internal_tls && !tls_setup(&cfg, err, sizeof err)) {
        fprintf(stderr, "coldbrew: internal TLS: %s\n", err);
        rc = 1;
        goto out;
    }
    char logp[PATH_MAX + 32];
    snprintf(logp, sizeof logp, "%s/coldbrew.log", cfg.home);
    logfd = proc_open_log(logp);
    if (logfd < 0) {
        fprintf(stderr, "coldbrew: %s: %s\n", logp, strerror(errno));
        rc = 1;
        goto out;
    }
    log_set_fd(logfd);
    log_init("coldbrew", NULL, NULL);
    signal(SIGPIPE, SIG_IGN);
    base = loop_init();
    struct server_limits lim;
    server_limits_from_env(&lim);
    const char *e = NULL;
    api = api_open(base, "127.0.0.1", cfg.api_port, &lim, &e);
    if (!api) {
        fprintf(stderr,
                "coldbrew: cannot listen on 127.0.0.1:%d (%s): is another `coldbrew run` "
                "running? (`coldbrew status` asks it; COLDBREW_API_PORT moves this one)\n",
                cfg.api_port, e ? e : "in use");
        rc = 1;
        goto out;
    }
    if (!port_free(cfg.port)) {
        fprintf(stderr, "coldbrew: port %d is taken; COLDBREW_PORT moves the ingress\n", cfg.port);
        rc = 1;
        goto out;
    }
    as = autoscaler_start(base, "127.0.0.1", 0, &e);
    if (!as) {
        fprintf(stderr, "coldbrew: autoscaler: %s\n", e ? e : "cannot listen");
        rc = 1;
        goto out;
    }
    P = platform_new(base, &cfg, api, as);
    P->next_port = (int)(getpid() % 997); /* two platforms do not walk the range in step */
    struct timespec seed;
    clock_gettime(CLOCK_REALTIME, &seed);
    srandom((unsigned)(seed.tv_nsec ^ getpid())); /* pod name suffixes */
    snprintf(P->activator_log, sizeof P->activator_log, "%s/logs/activator.log", cfg.home);
    P->on_all_gone = on_all_gone;
    api_set_control(api, platform_control, P);

    sigchld = X_CHECK(evsignal_new(base, SIGCHLD, on_sigchld, NULL));
    sigint = X_CHECK(evsignal_new(base, SIGINT, on_stop, NULL));
    sigterm = X_CHECK(evsignal_new(base, SIGTERM, on_stop, NULL));
    event_add(sigchld, NULL);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);
    restart_ev = X_CHECK(evtimer_new(base, on_restart, NULL));

    char summary[2048];
    if (!platform_apply(P, docs, ndocs, summary, sizeof summary, err, sizeof err)) {
        fprintf(stderr, "coldbrew: %s\n", err);
        rc = 2;
        goto out;
    }
    log_info("applied: %s", summary);
    if (!start_activator(P, err, sizeof err)) {
        fprintf(stderr, "coldbrew: activator: %s\n", err);
        rc = 1;
        platform_shutdown(P);
    } else {
        ready_deadline = autoscaler_now() + ACTIVATOR_START_SECONDS;
        ready_ev = X_CHECK(evtimer_new(base, on_ready_check, NULL));
        struct timeval tv = clock_tv(0.01);
        evtimer_add(ready_ev, &tv);
    }
    if (!(P->stopping && platform_idle(P) && !P->activator_pid))
        event_base_dispatch(base);
    if (signals_seen == 0 && rc == 0)
        rc = 1; /* stopped by itself: the activator failed at start-up */
    fprintf(stderr, "coldbrew: stopped\n");

out:
    if (ready_ev)
        event_free(ready_ev);
    if (restart_ev)
        event_free(restart_ev);
    if (sigchld) {
        event_free(sigchld);
        event_free(sigint);
        event_free(sigterm);
    }
    if (P)
        platform_free(P);
    autoscaler_free(as);
    api_free(api);
    if (base) {
        loop_flush_deferred();
        loop_free();
    }
    if (docs)
        manifest_free(docs, ndocs);
    for (int i = 0; i < argc; i++)
        free(files[i]);
    free(files);
    if (logfd >= 0)
        close(logfd);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f, "usage:\n"
               "  coldbrew run FILE...              run the Knative Services in FILE(s)\n"
               "  coldbrew apply FILE...            update the running platform\n"
               "  coldbrew status [--once]          services, revisions, traffic, pods, scale\n"
               "  coldbrew logs SERVICE [REVISION] [-f]  the pods' output (-f: follow)\n"
               "settings (env): COLDBREW_PORT (8080), COLDBREW_DOMAIN (localhost),\n"
               "  COLDBREW_API_PORT (8079), COLDBREW_HOME ($HOME/.coldbrew), COLDBREW_PORT_RANGE\n"
               "  (10000-19999), COLDBREW_SCALE_TO_ZERO_GRACE_SECONDS (30),\n"
               "  COLDBREW_POD_DRAIN_SECONDS (1)\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "run"))
        return cmd_run(argc - 2, argv + 2);
    if (!strcmp(cmd, "apply"))
        return cli_apply(argc - 2, argv + 2);
    if (!strcmp(cmd, "status"))
        return cli_status(argc - 2, argv + 2);
    if (!strcmp(cmd, "logs"))
        return cli_logs(argc - 2, argv + 2);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "coldbrew: unknown command %s\n", cmd);
    usage(stderr);
    return 2;
}
