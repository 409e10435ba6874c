/* pods.c — a pod on one machine: the user process and a coldbrew
 * queue-proxy beside it, each in its own process group, on free loopback
 * ports, given the env Knative's revision reconciler gives them.
 *
 * Life of a pod:
 *  - start: both processes are forked at once (like containers of one pod);
 *    an exec failure comes back through a close-on-exec pipe as an errno.
 *    Each child gets PR_SET_PDEATHSIG(SIGKILL), so a platform that is
 *    killed outright leaves no process behind.
 *  - readiness: what kubelet does with the queue-proxy's readiness probe:
 *    GET / with `K-Network-Probe: queue` and a kube-probe User-Agent on the
 *    serving port. The queue-proxy holds it while it polls the user process
 *    (aggressive mode); 200 `queue` is ready. Refused connections (the
 *    queue-proxy not listening yet) are retried every POD_PROBE_RETRY.
 *  - termination, Knative's order: out of the Endpoints first, SIGTERM to
 *    the queue-proxy, the user container's preStop hook (GET
 *    /wait-for-drain on the admin port, which returns once the queue-proxy
 *    has drained), then SIGTERM to the user process; SIGKILL to both
 *    process groups when the grace period (the revision's timeoutSeconds,
 *    as Knative sets terminationGracePeriodSeconds) runs out.
 *  - a process that exits unexpectedly kills its pod (SIGKILL to the
 *    other); the revision replaces it with backoff.
 *
 * Logs: <home>/logs/<namespace>/<revision>/<pod>.log (the user process)
 * and <pod>.queue-proxy.log beside it. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "certs.h"
#include "platform.h"

#define POD_PROBE_RETRY    0.002 /* s between probes while the queue-proxy is not listening */
#define POD_READY_DEADLINE 600.0 /* s: Knative's progressDeadline */
/* The container's env plus what the platform adds (PATH, HOME..., PORT, K_*). */
#define MAX_ENV (MANIFEST_MAX_ENV + 32)

extern char **environ;

/* ---------------------------------------------------------------- ports */

bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int one = 1; /* a port in TIME_WAIT is free to a listener, which sets it too */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Ports rotate through the range so a port just released is not handed out
 * again at once (a TIME_WAIT or a slow exit elsewhere). */
int platform_free_port(struct platform *p)
{
    int span = p->cfg.port_hi - p->cfg.port_lo + 1;
    for (int i = 0; i < span; i++) {
        int port = p->cfg.port_lo + (p->next_port++ % span);
        if (port_free(port))
            return port;
    }
    return -1;
}

/* ---------------------------------------------------------------- processes */

struct envb {
    char *v[MAX_ENV + 1];
    int n;
    bool no_memory; /* a variable could not be added: the pod is not started */
};

static void env_add(struct envb *e, const char *name, const char *value)
{
    if (e->n == MAX_ENV || !value)
        return;
    size_t nl = strlen(name);
    for (int i = 0; i < e->n; i++) /* later wins, as in a container spec */
        if (!strncmp(e->v[i], name, nl) && e->v[i][nl] == '=') {
            free(e->v[i]);
            e->v[i] = e->v[--e->n];
        }
    char *s = malloc(nl + strlen(value) + 2);
    if (!s) {
        e->no_memory = true;
        return;
    }
    sprintf(s, "%s=%s", name, value);
    e->v[e->n++] = s;
    e->v[e->n] = NULL;
}

static void env_addi(struct envb *e, const char *name, long v)
{
    char b[32];
    snprintf(b, sizeof b, "%ld", v);
    env_add(e, name, b);
}

static void env_free(struct envb *e)
{
    for (int i = 0; i < e->n; i++)
        free(e->v[i]);
    e->n = 0;
}

/* Forks argv with envp, output to logfd, in its own process group. */
pid_t proc_spawn(char *const argv[], char *const envp[], const char *cwd, int logfd, int nice_to,
                 char *err, size_t cap)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(err, cap, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, cap, "fork: %s", strerror(errno));
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        if (nice_to)
            setpriority(PRIO_PROCESS, 0, nice_to);
        int e = 0;
        if (cwd && chdir(cwd) != 0)
            e = errno;
        if (!e) {
            environ = (char **)envp; /* execvp searches this PATH */
            execvp(argv[0], argv);
            e = errno;
        }
        ssize_t w = write(pipefd[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    close(pipefd[1]);
    int e = 0;
    ssize_t r;
    do
        r = read(pipefd[0], &e, sizeof e);
    while (r < 0 && errno == EINTR);
    close(pipefd[0]);
    if (r == (ssize_t)sizeof e) {
        waitpid(pid, NULL, 0);
        snprintf(err, cap, "exec %s: %s", argv[0], strerror(e));
        return -1;
    }
    return pid;
}

int proc_open_log(const char *path)
{
    /* mkdir -p of the directory part */
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    for (char *s = dir + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(dir, 0755);
            *s = '/';
        }
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

/* The last line of a log, for a failure's reason. */
static void last_line(const char *path, char *out, size_t cap)
{
    out[0] = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    char buf[4096];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    fseek(f, from, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = 0;
    char *nl = strrchr(buf, '\n');
    const char *last = nl ? nl + 1 : buf;
    size_t ll = strlen(last);
    if (ll >= cap)
        ll = cap - 1;
    memcpy(out, last, ll);
    out[ll] = 0;
}

/* ---------------------------------------------------------------- env */

static void user_env(struct pod *pod, struct envb *e)
{
    struct revision_l *r = pod->rev;
    struct platform *p = r->svc->p;
    /* A local process is not a container: it keeps the basics of the
     * user's environment, and finds coldbrew's binaries (coffee) on PATH. */
    static const char *keep[] = {"HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "TERM"};
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++)
        env_add(e, keep[i], getenv(keep[i]));
    const char *path = getenv("PATH");
    char pb[4096];
    snprintf(pb, sizeof pb, "%s:%s", p->cfg.bin_dir, path ? path : "/usr/local/bin:/usr/bin:/bin");
    env_add(e, "PATH", pb);
    size_t i;
    json_t *v;
    json_t *c0 =
        json_array_get(json_object_get(json_object_get(r->template, "spec"), "containers"), 0);
    json_array_foreach(json_object_get(c0, "env"), i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        json_t *val = json_object_get(v, "value");
        if (!name)
            continue;
        if (json_is_string(val))
            env_add(e, name, json_string_value(val));
        else if (json_is_integer(val))
            env_addi(e, name, (long)json_integer_value(val));
        else if (!val)
            env_add(e, name, "");
        else if (json_object_get(v, "valueFrom") == NULL) {
            char *s = json_dumps(val, JSON_ENCODE_ANY);
            env_add(e, name, s);
            free(s);
        }
    }
    /* What Knative sets (and a user's env cannot override). */
    env_addi(e, "PORT", pod->user_port);
    env_add(e, "K_SERVICE", r->svc->name);
    env_add(e, "K_CONFIGURATION", r->svc->name);
    env_add(e, "K_REVISION", r->name);
}

/* SERVING_READINESS_PROBE: the container's readinessProbe pointed at the
 * user port on loopback, or Knative's default TCP probe. */
static char *readiness_json(struct pod *pod)
{
    json_t *c0 = json_array_get(
        json_object_get(json_object_get(pod->rev->template, "spec"), "containers"), 0);
    json_t *rp = json_object_get(c0, "readinessProbe");
    json_t *out;
    if (json_is_object(rp) && (json_object_get(rp, "httpGet") || json_object_get(rp, "tcpSocket") ||
                               json_object_get(rp, "grpc"))) {
        out = json_deep_copy(rp);
        const char *kinds[] = {"httpGet", "tcpSocket", "grpc"};
        for (int k = 0; k < 3; k++) {
            json_t *h = json_object_get(out, kinds[k]);
            if (!h)
                continue;
            json_object_set_new(h, "port", json_integer(pod->user_port));
            if (k < 2)
                json_object_set_new(h, "host", json_string("127.0.0.1"));
        }
        if (!json_object_get(out, "successThreshold"))
            json_object_set_new(out, "successThreshold", json_integer(1));
    } else {
        out = json_pack("{s:{s:i,s:s},s:i}", "tcpSocket", "port", pod->user_port, "host",
                        "127.0.0.1", "successThreshold", 1);
    }
    char *s = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    return s;
}

static void qp_env(struct pod *pod, struct envb *e)
{
    struct revision_l *r = pod->rev;
    struct platform *p = r->svc->p;
    env_add(e, "PATH", getenv("PATH"));
    env_add(e, "SERVING_NAMESPACE", r->svc->ns);
    env_add(e, "SERVING_SERVICE", r->svc->name);
    env_add(e, "SERVING_CONFIGURATION", r->svc->name);
    env_add(e, "SERVING_REVISION", r->name);
    env_add(e, "SERVING_POD", pod->name);
    env_add(e, "SERVING_POD_IP", "127.0.0.1");
    env_addi(e, "QUEUE_SERVING_PORT", pod->qp_port);
    if (pod->tls_port) {
        /* Internal TLS: the namespace's certificate, served on its own port. */
        env_addi(e, "QUEUE_SERVING_TLS_PORT", pod->tls_port);
        char dir[700];
        snprintf(dir, sizeof dir, "%s/ns/%s", p->cfg.tls_dir, r->svc->ns);
        env_add(e, "COLDBREW_CERTS_DIR", dir);
    } else {
        env_add(e, "QUEUE_SERVING_TLS_PORT", "8112"); /* required; no certificates: not served */
    }
    env_addi(e, "USER_PORT", pod->user_port);
    env_addi(e, "CONTAINER_CONCURRENCY", r->set.cc);
    env_addi(e, "REVISION_TIMEOUT_SECONDS", r->set.timeout);
    env_addi(e, "REVISION_RESPONSE_START_TIMEOUT_SECONDS", r->set.response_start_timeout);
    env_addi(e, "REVISION_IDLE_TIMEOUT_SECONDS", r->set.idle_timeout);
    env_add(e, "SERVING_LOGGING_CONFIG", "");
    env_add(e, "SERVING_LOGGING_LEVEL", "info");
    char *rj = readiness_json(pod);
    env_add(e, "SERVING_READINESS_PROBE", rj);
    free(rj);
    env_add(e, "COLDBREW_LISTEN_HOST", "127.0.0.1");
    env_addi(e, "QUEUE_ADMIN_PORT", pod->admin_port);
    env_addi(e, "QUEUE_METRICS_PORT", pod->stat_port);
    env_addi(e, "METRICS_PROMETHEUS_PORT", pod->prom_port);
    char b[32];
    snprintf(b, sizeof b, "%g", p->cfg.pod_drain);
    env_add(e, "QUEUE_DRAIN_QUIET_SECONDS", b);
    env_add(e, "COLDBREW_AGGRESSIVE_PROBE_INTERVAL", "1ms");
    /* The platform's own OBSERVABILITY_CONFIG, when it has one, so the
     * local platform can be traced like a cluster (and COLDBREW_OTLP_*). */
    const char *obs = getenv("OBSERVABILITY_CONFIG");
    env_add(e, "OBSERVABILITY_CONFIG",
            obs && *obs ? obs : "{\"requestMetrics\":{\"protocol\":\"prometheus\"}}");
    static const char *const otlp_settings[] = {"COLDBREW_OTLP_QUEUE_SPANS",
                                                "COLDBREW_OTLP_BATCH_SPANS",
                                                "COLDBREW_OTLP_BATCH_MS",
                                                "COLDBREW_OTLP_TIMEOUT_MS",
                                                "COLDBREW_OTLP_MAX_MESSAGE_BYTES",
                                                "COLDBREW_OTLP_MAX_SERIES",
                                                NULL};
    for (const char *const *k = otlp_settings; *k; k++)
        if (getenv(*k))
            env_add(e, *k, getenv(*k));
}

/* ---------------------------------------------------------------- readiness */

static void probe_start(struct pod *pod);

/* Fork -> user process listening, which only the platform sees: while a pod
 * starts, its user port is tried every POD_LISTEN_POLL with a connect that
 * closes at once (what a tcpSocket probe does). On loopback a connect
 * completes or is refused at once, so this never blocks the loop. */
#define POD_LISTEN_POLL 0.0005

static bool user_port_listening(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    bool yes = rc == 0 || errno == EINPROGRESS;
    close(fd);
    return yes;
}

static void on_listen_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct pod *pod = arg;
    if (pod->phase != POD_STARTING || pod->user_listening)
        return;
    if (user_port_listening(pod->user_port)) {
        pod->user_listening = autoscaler_now();
        return;
    }
    struct timeval tv = clock_tv(POD_LISTEN_POLL);
    evtimer_add(&pod->listen_poll, &tv);
}

/* A pod became ready: its start goes into the revision's recent list. */
static void note_start(struct pod *pod)
{
    struct revision_l *r = pod->rev;
    double now = autoscaler_now();
    double listen = pod->user_listening ? pod->user_listening : now;
    struct pod_start *s = &r->starts[r->next_start_slot];
    s->at = (double)pod->spawn_wall_us / 1e6;
    s->fork_to_listening = (listen - pod->started) * 1e3;
    s->to_ready_ms = (now - listen) * 1e3;
    r->next_start_slot = (r->next_start_slot + 1) % POD_STARTS_KEPT;
    if (r->nstarts < POD_STARTS_KEPT)
        r->nstarts++;
}

json_t *pod_starts_json(const struct revision_l *r)
{
    json_t *a = json_array();
    for (unsigned k = 0; k < r->nstarts; k++) {
        const struct pod_start *s =
            &r->starts[(r->next_start_slot + POD_STARTS_KEPT - 1 - k) % POD_STARTS_KEPT];
        json_array_append_new(a, json_pack("{s:f,s:f,s:f}", "at", s->at, "fork_to_listening_ms",
                                           s->fork_to_listening, "listening_to_ready_ms",
                                           s->to_ready_ms));
    }
    return a;
}

static void on_probe_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct pod *pod = arg;
    if (pod->phase == POD_STARTING)
        probe_start(pod);
}

static void on_probe_done(struct http_call *c, const char *err)
{
    struct pod *pod = c->arg;
    if (pod->phase != POD_STARTING)
        return;
    if (!err && c->status == 200) {
        pod->phase = POD_READY;
        note_start(pod);
        log_info("pod %s ready after %.1f ms", pod->name, (autoscaler_now() - pod->started) * 1e3);
        revision_pod_ready(pod->rev);
        return;
    }
    if (autoscaler_now() - pod->started > POD_READY_DEADLINE) {
        revision_pod_failed(pod->rev, "did not become ready within the progress deadline", true);
        pod_terminate(pod);
        return;
    }
    struct timeval tv = clock_tv(POD_PROBE_RETRY);
    evtimer_add(pod->timer, &tv);
}

static void probe_start(struct pod *pod)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: kube-probe/1.30\r\n"
                              "K-Network-Probe: queue\r\nAccept: */*\r\n\r\n";
    if (!pod->probe)
        pod->probe = http_call_new(&pod->qp_up, pod);
    if (!pod->probe) {
        /* Memory short: probe again later, like a probe that failed. */
        log_error("pod %s: %s for a probe; retrying", pod->name, coldbrew_err_no_memory);
        struct timeval tv = clock_tv(POD_PROBE_RETRY);
        evtimer_add(pod->timer, &tv);
        return;
    }
    /* The queue-proxy gives up after 10 s of aggressive probing. */
    http_call_start(pod->probe, req, sizeof req - 1, 11.0, on_probe_done, NULL);
}

/* ---------------------------------------------------------------- start */

struct pod *pod_start(struct revision_l *r, bool reserved, char *err, size_t cap)
{
    struct platform *p = r->svc->p;
    /* A pod starts while the platform serves (alloc.h): memory short fails
     * this start, which the caller logs and retries like any other. */
    struct pod *pod = calloc(1, sizeof *pod);
    if (!pod) {
        snprintf(err, cap, "%s", coldbrew_err_no_memory);
        return NULL;
    }
    pod->rev = r;
    pod->reserved = reserved;
    static const char abc[] = "bcdfghjklmnpqrstvwxz2456789"; /* Kubernetes' name alphabet */
    char suffix[6];
    for (int i = 0; i < 5; i++)
        suffix[i] = abc[(unsigned)random() % (sizeof abc - 1)];
    suffix[5] = 0;
    snprintf(pod->name, sizeof pod->name, "%s-deployment-%s", r->name, suffix);
    int *ports[] = {&pod->user_port, &pod->qp_port, &pod->admin_port, &pod->stat_port,
                    &pod->prom_port};
    for (int i = 0; i < 5; i++)
        if ((*ports[i] = platform_free_port(p)) < 0) {
            snprintf(err, cap, "no free port in COLDBREW_PORT_RANGE");
            free(pod);
            return NULL;
        }
    if (p->cfg.internal_tls) {
        /* The namespace's certificate (SANs kn-user-<ns>, data-plane.knative.dev),
         * issued or renewed by the local CA before the queue-proxy reads it. */
        char ca[700], dir[700];
        snprintf(ca, sizeof ca, "%s/ca", p->cfg.tls_dir);
        snprintf(dir, sizeof dir, "%s/ns", p->cfg.tls_dir);
        mkdir(dir, 0700);
        snprintf(dir, sizeof dir, "%s/ns/%s", p->cfg.tls_dir, r->svc->ns);
        mkdir(dir, 0700);
        if ((pod->tls_port = platform_free_port(p)) < 0 ||
            !certs_ensure_pod(ca, dir, r->svc->ns, NULL, err, cap)) {
            if (pod->tls_port < 0)
                snprintf(err, cap, "no free port in COLDBREW_PORT_RANGE");
            free(pod);
            return NULL;
        }
    }
    snprintf(pod->log_path, sizeof pod->log_path, "%s/logs/%s/%s/%s.log", p->cfg.home, r->svc->ns,
             r->name, pod->name);
    char qlog[560];
    snprintf(qlog, sizeof qlog, "%s/logs/%s/%s/%s.queue-proxy.log", p->cfg.home, r->svc->ns,
             r->name, pod->name);
    int ufd = proc_open_log(pod->log_path), qfd = proc_open_log(qlog);
    if (ufd < 0 || qfd < 0) {
        snprintf(err, cap, "cannot write logs under %s/logs: %s", p->cfg.home, strerror(errno));
        if (ufd >= 0)
            close(ufd);
        if (qfd >= 0)
            close(qfd);
        free(pod);
        return NULL;
    }

    /* argv: command + args */
    json_t *c0 =
        json_array_get(json_object_get(json_object_get(r->template, "spec"), "containers"), 0);
    char *argv[MANIFEST_MAX_ARGS + 1]; /* the manifest check bounds command + args */
    int argc = 0;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(c0, "command"), i, v) argv[argc++] =
        (char *)json_string_value(v);
    json_array_foreach(json_object_get(c0, "args"), i, v) argv[argc++] =
        (char *)json_string_value(v);
    argv[argc] = NULL;
    /* The working directory: the container's workingDir, relative to the
     * manifest's directory, which is the default. */
    char cwd[512];
    snprintf(cwd, sizeof cwd, "%s", r->svc->file);
    char *slash = strrchr(cwd, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(cwd, sizeof cwd, ".");
    const char *wd = json_string_value(json_object_get(c0, "workingDir"));
    if (wd && wd[0] == '/')
        snprintf(cwd, sizeof cwd, "%s", wd);
    else if (wd) {
        size_t l = strlen(cwd);
        snprintf(cwd + l, sizeof cwd - l, "/%s", wd);
    }

    struct envb ue = {0}, qe = {0};
    user_env(pod, &ue);
    qp_env(pod, &qe);
    /* The one timer a pod has (probe, then grace), made before any process. */
    pod->timer = evtimer_new(p->base, on_probe_timer, pod);
    if (ue.no_memory || qe.no_memory || !pod->timer) {
        snprintf(err, cap, "%s", coldbrew_err_no_memory);
        env_free(&ue);
        env_free(&qe);
        close(ufd);
        close(qfd);
        if (pod->timer)
            event_free(pod->timer);
        free(pod);
        return NULL;
    }
    char qp_bin[600];
    snprintf(qp_bin, sizeof qp_bin, "%s/queue-proxy", p->cfg.bin_dir);
    char *qargv[] = {qp_bin, NULL};
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    pod->spawn_wall_us = (uint64_t)wall.tv_sec * 1000000 + (uint64_t)wall.tv_nsec / 1000;
    pod->started = autoscaler_now();
    int nice_to = reserved ? 19 : 0;
    pod->qp_pid = proc_spawn(qargv, qe.v, NULL, qfd, nice_to, err, cap);
    if (pod->qp_pid > 0)
        pod->user_pid = proc_spawn(argv, ue.v, cwd, ufd, nice_to, err, cap);
    env_free(&ue);
    env_free(&qe);
    close(ufd);
    close(qfd);
    if (pod->qp_pid <= 0 || pod->user_pid <= 0) {
        if (pod->qp_pid > 0) {
            kill(-pod->qp_pid, SIGKILL);
            waitpid(pod->qp_pid, NULL, 0);
        }
        event_free(pod->timer);
        free(pod);
        return NULL;
    }
    log_info("pod %s started (user pid %d on :%d, queue-proxy pid %d on :%d) at %llu.%03llu ms%s",
             pod->name, (int)pod->user_pid, pod->user_port, (int)pod->qp_pid, pod->qp_port,
             (unsigned long long)(pod->spawn_wall_us / 1000),
             (unsigned long long)(pod->spawn_wall_us % 1000),
             reserved ? " as the reserved instance" : "");
    upstream_init(&pod->qp_up, p->base, "127.0.0.1", pod->qp_port, 1, 4.0);
    upstream_init(&pod->admin_up, p->base, "127.0.0.1", pod->admin_port, 1, 4.0);
    evtimer_assign(&pod->listen_poll, p->base, on_listen_poll, pod); /* embedded: no allocation */
    pod->listen_poll_set = true;
    pod->next = r->pods;
    r->pods = pod;
    probe_start(pod);
    on_listen_poll(-1, 0, pod);
    return pod;
}

void pod_set_reserved(struct pod *pod, bool reserved)
{
    pod->reserved = reserved;
    /* The lowest CPU priority: it serves a first request, not a load. */
    if (pod->user_pid)
        setpriority(PRIO_PROCESS, (id_t)pod->user_pid, reserved ? 19 : 0);
    if (pod->qp_pid)
        setpriority(PRIO_PROCESS, (id_t)pod->qp_pid, reserved ? 19 : 0);
}

/* ---------------------------------------------------------------- termination */

static void kill_group(pid_t pid, int sig)
{
    if (pid > 0)
        kill(-pid, sig);
}

static void on_grace_over(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct pod *pod = arg;
    log_warn("pod %s: grace period over; SIGKILL", pod->name);
    kill_group(pod->qp_pid, SIGKILL);
    kill_group(pod->user_pid, SIGKILL);
}

static void term_user(struct pod *pod)
{
    kill_group(pod->user_pid, SIGTERM);
}

static void on_drained(struct http_call *c, const char *err)
{
    struct pod *pod = c->arg;
    (void)err;
    term_user(pod); /* preStop returned (or the queue-proxy is gone) */
}

void pod_terminate(struct pod *pod)
{
    if (pod->phase == POD_TERMINATING)
        return;
    bool was_ready = pod->phase == POD_READY;
    pod->phase = POD_TERMINATING;
    struct platform *p = pod->rev->svc->p;
    http_call_free(pod->probe);
    pod->probe = NULL;
    /* The same timer, re-pointed: no allocation on the way out. */
    event_del(pod->timer);
    event_assign(pod->timer, p->base, -1, 0, on_grace_over, pod);
    /* Knative's terminationGracePeriodSeconds is the revision timeout. */
    double grace = pod->rev->set.timeout > 0 ? (double)pod->rev->set.timeout : 300;
    struct timeval tv = clock_tv(grace);
    evtimer_add(pod->timer, &tv);
    revision_publish_endpoints(pod->rev); /* out of the Endpoints first */
    kill_group(pod->qp_pid, SIGTERM);
    if (was_ready && pod->qp_pid && pod->user_pid) {
        static const char req[] = "GET /wait-for-drain HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        pod->drain = http_call_new(&pod->admin_up, pod);
        if (pod->drain)
            http_call_start(pod->drain, req, sizeof req - 1, grace, on_drained, NULL);
        else
            term_user(pod); /* no memory to ask for a drain: straight to SIGTERM */
    } else {
        term_user(pod);
    }
}

void pod_free(struct pod *pod)
{
    http_call_free(pod->probe);
    http_call_free(pod->drain);
    if (pod->timer)
        event_free(pod->timer);
    if (pod->listen_poll_set)
        event_del(&pod->listen_poll);
    upstream_close_idle(&pod->qp_up);
    upstream_close_idle(&pod->admin_up);
    free(pod);
}

/* A process of a pod exited. */
static void on_exit_of(struct pod *pod, pid_t pid, int status)
{
    struct revision_l *r = pod->rev;
    bool user = pid == pod->user_pid;
    if (user)
        pod->user_pid = 0;
    else
        pod->qp_pid = 0;
    if (pod->phase != POD_TERMINATING) {
        char why[600], tail[200];
        if (WIFEXITED(status))
            snprintf(why, sizeof why, "%s exited with status %d",
                     user ? "the user process" : "the queue-proxy", WEXITSTATUS(status));
        else
            snprintf(why, sizeof why, "%s was killed by signal %d",
                     user ? "the user process" : "the queue-proxy", WTERMSIG(status));
        bool before_ready = pod->phase == POD_STARTING;
        if (before_ready && user) {
            last_line(pod->log_path, tail, sizeof tail);
            size_t l = strlen(why);
            snprintf(why + l, sizeof why - l, " before becoming ready%s%s", tail[0] ? ": " : "",
                     tail);
        }
        log_warn("pod %s: %s", pod->name, why);
        /* The pod is dead: the rest of it goes too. */
        pod->phase = POD_TERMINATING;
        http_call_free(pod->probe);
        pod->probe = NULL;
        kill_group(pod->qp_pid, SIGKILL);
        kill_group(pod->user_pid, SIGKILL);
        revision_publish_endpoints(r);
        revision_pod_failed(r, why, before_ready);
    } else if (!user && pod->user_pid && !pod->drain) {
        term_user(pod);
    }
    if (pod->user_pid || pod->qp_pid)
        return;
    struct pod **pp = &r->pods;
    while (*pp && *pp != pod)
        pp = &(*pp)->next;
    if (*pp)
        *pp = pod->next;
    log_info("pod %s gone", pod->name);
    pod_free(pod);
    revision_publish_endpoints(r);
    revision_reconcile(r);
}

void pods_reap(struct platform *p)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == p->activator_pid) {
            p->activator_pid = 0;
            if (!p->stopping)
                log_error("the activator exited (status %d); see %s", status, p->activator_log);
            continue;
        }
        struct pod *found = NULL;
        for (struct service *s = p->services; s && !found; s = s->next)
            for (struct revision_l *r = s->revs; r && !found; r = r->next)
                for (struct pod *pod = r->pods; pod && !found; pod = pod->next)
                    if (pod->user_pid == pid || pod->qp_pid == pid)
                        found = pod;
        if (found)
            on_exit_of(found, pid, status);
    }
    if (p->stopping && platform_idle(p) && p->on_all_gone)
        p->on_all_gone(p);
}
