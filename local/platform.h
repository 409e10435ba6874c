/* platform.h — the local platform (`coldbrew run`): Knative Serving's
 * control plane for one machine, driving the same data plane as a cluster.
 *
 *   manifest.c     Knative Service YAML -> checked JSON documents
 *   settings.c     a revision's template -> its settings (CC, timeouts, the
 *                  autoscaling.knative.dev annotations, the reserve)
 *   platform.c     services, revisions and traffic: what `run`/`apply` do,
 *                  the objects published for the activator (Revisions,
 *                  Endpoints, Ingresses), scaling decisions, the control API
 *   pods.c         a pod = the user process + a coldbrew queue-proxy, on
 *                  free loopback ports: start, readiness, Knative's
 *                  termination order, crash handling
 *   api.c          the Kubernetes-shaped API the activator watches
 *   cli.c          the client commands: apply, status, logs
 *   main.c         start-up: API, autoscaler (in-process), the activator
 *                  (a child process, ingress role), signals, shutdown
 *
 * One process, one event loop; every child is tracked by pid. Ownership:
 * the platform owns its services, a service its revisions (newest first),
 * a revision its pods. A pod is freed only once both its processes are
 * reaped. */
#ifndef LOCAL_PLATFORM_H
#define LOCAL_PLATFORM_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "../autoscaler/autoscaler.h"
#include "cluster/http_client.h"
#include "api.h"
#include "manifest.h"

/* ---------------------------------------------------------------- settings */

struct platform_config {
    int port;             /* COLDBREW_PORT: the ingress (the activator), 8080 */
    const char *domain;   /* COLDBREW_DOMAIN: "localhost" */
    int api_port;         /* COLDBREW_API_PORT: control + Kubernetes API, 8079 */
    const char *home;     /* COLDBREW_HOME: logs; $HOME/.coldbrew */
    double grace;         /* COLDBREW_SCALE_TO_ZERO_GRACE_SECONDS: 30 (Knative's) */
    double pod_drain;     /* COLDBREW_POD_DRAIN_SECONDS: queue-proxy quiet period, 1 */
    int port_lo, port_hi; /* COLDBREW_PORT_RANGE: pods' ports, "10000-19999" */
    const char *bin_dir;  /* where queue-proxy, activator (and coffee) are */
    bool internal_tls;    /* COLDBREW_INTERNAL_TLS=true, or config-network's system-internal-tls
                             in a manifest: a local CA, per-namespace certificates, the
                             activator -> pod hop over TLS */
    char tls_dir[600];    /* $COLDBREW_HOME/tls: ca/ and one directory per namespace */
};

bool platform_config_load(struct platform_config *c, char *err, size_t cap);

/* A revision's settings, from its template (settings.c). */
struct rev_settings {
    long cc;                                            /* containerConcurrency */
    long timeout, response_start_timeout, idle_timeout; /* seconds */
    int min_scale, max_scale, initial_scale;            /* max 0 = unlimited */
    double retention;   /* scale-to-zero-pod-retention-period, seconds */
    bool rps;           /* metric: rps (else concurrency) */
    bool reserve;       /* coldbrew.dev/reserve-instance: enable */
    int container_port; /* ports[0].containerPort, 8080 */
    bool h2c;           /* ports[0].name is h2c: pods are reached on their http2 port */
    struct kpa_config kpa;
};

/* False with err "field: what is wrong" (field is the template-relative path). */
bool rev_settings_parse(json_t *tmpl, struct rev_settings *s, char *err, size_t cap);

/* ---------------------------------------------------------------- objects */

struct platform;
struct service;
struct revision_l;

enum pod_phase { POD_STARTING, POD_READY, POD_TERMINATING };

struct pod {
    struct revision_l *rev;
    char name[224];
    enum pod_phase phase;
    bool reserved;          /* the reserved instance (nice 19) */
    pid_t user_pid, qp_pid; /* 0 once reaped */
    int user_port, qp_port, admin_port, stat_port, prom_port;
    int tls_port;             /* the queue-proxy's QUEUE_SERVING_TLS_PORT (internal TLS) */
    uint64_t spawn_wall_us;   /* when it was forked, for cold-start accounting */
    double started;           /* monotonic seconds */
    double user_listening;    /* when its user port first took a connection (0: not yet) */
    struct event listen_poll; /* polls the user port while starting (coldstart accounting) */
    bool listen_poll_set;
    struct upstream qp_up, admin_up;
    struct http_call *probe; /* kubelet-style readiness probe of the queue-proxy */
    struct http_call *drain; /* the preStop hook: GET /wait-for-drain */
    struct event *timer;     /* probe retry while starting; the grace period while terminating */
    char log_path[512];
    struct pod *next;
};

struct revision_l {
    struct service *svc;
    char name[190];
    int generation;
    json_t *template; /* owned */
    struct rev_settings set;
    struct as_rev *as;
    struct pod *pods;
    int decided;       /* the autoscaler's last desired (-1: none yet) */
    int want;          /* standard pods wanted now */
    double zero_since; /* when the decision first was 0 (0: not at zero) */
    bool panicking;
    double stable, panic; /* observed window averages */
    int ebc;              /* excess burst capacity (-1: activator always in path) */
    bool ready_once;      /* some pod of it became ready (it can take traffic) */
    char failed[256];     /* why it cannot run (503 with this), or "" */
    unsigned crashes;     /* consecutive pod failures; backoff grows with it */
    double next_start;    /* no pod starts before this (crash backoff) */
    struct event *retry;  /* reconcile again (grace period, crash backoff) */
    double retry_when;    /* when it fires, while pending */
    /* The last pod starts, as only the platform sees them (`coldbrew status`). */
#define POD_STARTS_KEPT 8
    struct pod_start {
        double at;                             /* unix seconds of the fork */
        double fork_to_listening, to_ready_ms; /* ms: fork -> user listening -> queue-proxy ready */
    } starts[POD_STARTS_KEPT];
    unsigned nstarts, next_start_slot;
    struct revision_l *next;
};

struct service {
    struct platform *p;
    char name[64], ns[64];
    char file[256];
    json_t *traffic;         /* spec.traffic as applied (owned), or NULL: 100% latest */
    json_t *lines;           /* field -> line of the document that set it (owned) */
    int generation;          /* revisions created */
    struct revision_l *revs; /* newest first */
    struct service *next;
};

struct platform {
    struct event_base *base;
    struct platform_config cfg;
    struct api *api;
    struct autoscaler *as;
    struct service *services;
    pid_t activator_pid;
    char activator_log[512];
    int activator_metrics_port; /* its Prometheus port, and GET /coldstarts (the ledger) */
    bool stopping;
    int next_port;
    void (*on_all_gone)(struct platform *p); /* shutdown: every pod reaped */
};

/* pods.c: the revision's last pod starts, newest first (status JSON). */
json_t *pod_starts_json(const struct revision_l *r);

/* platform.c */
struct platform *platform_new(struct event_base *base, const struct platform_config *cfg,
                              struct api *api, struct autoscaler *as);
/* Applies documents in order (each is one `kubectl apply`); all or nothing:
 * false with err naming file:line: field, and nothing changed. `summary`
 * says what changed. */
bool platform_apply(struct platform *p, struct svc_doc *docs, size_t n, char *summary, size_t scap,
                    char *err, size_t cap);
/* Re-derives a revision's pods from its decision; starts and stops pods. */
void revision_reconcile(struct revision_l *r);
/* Publishes the revision's Revision object / Endpoints / its service's Ingress. */
void revision_publish(struct revision_l *r);
void revision_publish_endpoints(struct revision_l *r);
void service_publish_ingress(struct service *s);
/* A pod of r became ready / failed; pods.c calls these. */
void revision_pod_ready(struct revision_l *r);
void revision_pod_failed(struct revision_l *r, const char *why, bool before_ready);
/* Stops everything: every pod in termination order; on_all_gone when done. */
void platform_shutdown(struct platform *p);
bool platform_idle(const struct platform *p); /* no pod left */
void platform_free(struct platform *p);
/* The control API: /coldbrew/status, /coldbrew/apply. */
void platform_control(struct request *req, void *arg);
/* What `coldbrew status` shows, as JSON (the caller owns it). */
json_t *platform_status_json(struct platform *p);
/* Every pid the platform started (for the final SIGKILL), into out. */
unsigned platform_pids(const struct platform *p, pid_t *out, unsigned cap);

/* pods.c */
struct pod *pod_start(struct revision_l *r, bool reserved, char *err, size_t cap);
void pod_terminate(struct pod *pod);
/* Releases a pod's memory (its processes must be reaped, or abandoned at exit). */
void pod_free(struct pod *pod);
void pod_set_reserved(struct pod *pod, bool reserved);
/* SIGCHLD: reaps every exited child and routes it to its pod. */
void pods_reap(struct platform *p);
int platform_free_port(struct platform *p);
/* Can a listener (SO_REUSEADDR, as net_listen binds) take 127.0.0.1:port now? */
bool port_free(int port);
/* Forks argv (searched on envp's PATH) in its own process group with
 * output to logfd; an exec failure is reported in err, not as a child. */
pid_t proc_spawn(char *const argv[], char *const envp[], const char *cwd, int logfd, int nice_to,
                 char *err, size_t cap);
/* Opens (creating its directories) a log file for appending. */
int proc_open_log(const char *path);

#endif
