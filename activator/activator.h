/* activator.h — the activator process: its state and its rooms.
 *
 *   main.c       start-up, env contract, watches, listeners, signals and drain
 *   config.c     environment (Knative §1.2 plus coldbrew's port and API overrides)
 *   revisions.c  the revision registry fed by the Kubernetes watches; backends
 *                (private Endpoints -> probed pods) and this activator's slice
 *                (public Endpoints)
 *   handler.c    the data ports: probes, revision lookup, holding, throttling,
 *                forwarding
 *   throttler.c  per-revision admission and load balancing
 *   pods.c       per-pod keep-alive pools shared by probes and requests
 *   metrics.c    Prometheus metrics on METRICS_PROMETHEUS_PORT (9090)
 *   ingress.c    the optional ingress role: Host -> Knative Ingress splits
 *
 * One process-wide `struct activator`, reached through `act`. */
#ifndef ACTIVATOR_ACTIVATOR_H
#define ACTIVATOR_ACTIVATOR_H

#include <stdbool.h>
#include <sys/queue.h>
#include <uthash.h>

#include "cluster/http_client.h"
#include "cluster/k8s.h"
#include "http/server.h"
#include "cluster/stats.h"
#include "throttler.h"

/* config-network's mesh-compatibility-mode (Knative §3.8). */
enum mesh_mode { MESH_AUTO, MESH_ENABLED, MESH_DISABLED };

struct act_config {
    const char *pod_name, *pod_ip, *system_namespace, *cluster_domain;
    double probe_timeout, probe_frequency;
    unsigned max_idle_per_host, max_idle_total;
    int http_port, h2c_port, metrics_port;
    const char *listen_host;
    const char *autoscaler_url;
    double drain_seconds;
    unsigned max_waiting_per_revision, max_waiting_total;
    double upstream_idle_seconds;
    enum mesh_mode mesh_mode; /* COLDBREW_MESH_COMPATIBILITY_MODE: auto|enabled|disabled */
    bool passthrough_lb;      /* COLDBREW_MESH_POD_ADDRESSABILITY: Knative's passthrough LB */
    bool ingress;             /* COLDBREW_INGRESS: route by Host from Knative Ingress objects */
    /* config-network system-internal-tls (internal_tls.c). */
    bool internal_tls;          /* COLDBREW_SYSTEM_INTERNAL_TLS=enabled */
    int https_port;             /* ACTIVATOR_HTTPS_PORT: our TLS listener, 8112 */
    int pod_tls_port;           /* COLDBREW_POD_TLS_PORT: pods' TLS port when the Endpoints
                                   name no "https" port, 8112 */
    int cluster_tls_port;       /* COLDBREW_CLUSTER_TLS_PORT: the private Service's, 443 */
    const char *routing_secret; /* COLDBREW_ROUTING_SECRET: routing-serving-certs */
};

bool act_config_load(struct act_config *cfg, char *err, size_t cap);

struct act_ctx;

/* A pod address from a revision's private Endpoints, and what probing it said. */
struct backend {
    char dest[64];
    bool ready;   /* Kubernetes lists it under addresses (else notReadyAddresses) */
    bool healthy; /* answered 200 "queue" to our probe */
    bool seen;    /* still in the latest Endpoints (update bookkeeping) */
    bool nonmesh; /* its last probe got a status other than 502/503 (§3.8) */
    struct pod_pool *pool;
    struct http_call *probe;
    struct revision *rev;
};

struct revision {
    char key[256]; /* "namespace/name" */
    char ns[64], name[190];
    char service[64], configuration[64]; /* from the Revision's labels, for metrics */
    char failed[256]; /* ingress role: the Revision's Ready=False message (503 at once) */
    UT_hash_handle hh;
    bool exists; /* the Revision object is known */
    long cc;
    double timeout, response_start_timeout, idle_timeout;
    bool h2c;
    struct throttler thr;
    TAILQ_HEAD(, act_ctx) waiters;
    unsigned nwaiting;
    bool dispatching;
    struct backend *backends;
    unsigned nbackends;
    struct event *probe_tick;
    /* The private Service's ClusterIP fallback (§3.8): "ip:port" of its
     * http (or http2) port, the probe of it, and whether requests go there
     * (sticky until the private Endpoints are deleted, as in Knative). */
    char cluster_dest[64];
    struct pod_pool *cluster_pool;
    struct http_call *cluster_probe;
    bool cluster_mode;
    char private_host[256]; /* "<rev>-private.<ns>": Host in passthrough mode */
    unsigned active;        /* requests referencing this revision */
    struct stats stats;
    bool reporting;           /* has an entry in the autoscaler reports (reporter.c) */
    bool poked;               /* the next report subtracts the poke */
    struct cold_ledger *cold; /* coldstart.c; made at its first poke or cold start */
    bool server_timing;       /* annotation coldbrew.dev/server-timing: "enabled" */
};

struct activator {
    struct act_config cfg;
    struct event_base *base;
    struct server_limits lim;
    struct server *http, *h2c, *metrics;
    struct k8s_client k8s;
    struct k8s_watch *w_rev, *w_private, *w_public, *w_services, *w_ingress;
    struct k8s_watch *w_secret, *w_bundles; /* internal TLS: routing secret, trust bundles */
    struct server *https;                   /* ACTIVATOR_HTTPS_PORT, with internal TLS */
    unsigned watches;                       /* started; the activator listens once all synced */
    unsigned synced;                        /* watches that completed their first list */
    struct revision *revisions;
    unsigned waiting_total;
    unsigned in_flight;
    bool autoscaler_connected;
    unsigned long autoscaler_conn_errors; /* times the link was lost */
    bool sigterm, drained;
    struct event *drain_timer, *exit_timer;
};

extern struct activator *act;

/* revisions.c */
struct revision *revision_find(const char *ns, const char *name);
struct revision *revision_find_n(const char *ns, size_t nsl, const char *name, size_t nl);
void revisions_on_revision(void *arg, enum k8s_event ev, json_t *obj);
void revisions_on_private_endpoints(void *arg, enum k8s_event ev, json_t *obj);
void revisions_on_public_endpoints(void *arg, enum k8s_event ev, json_t *obj);
void revisions_on_private_service(void *arg, enum k8s_event ev, json_t *obj);

/* ingress.c */
#define INGRESS_MAX_SPLITS 16
struct ingress_split {
    unsigned percent;
    char ns[64], rev[190];
    char extra[256]; /* other appendHeaders, as header lines */
};
void ingress_on_object(void *arg, enum k8s_event ev, json_t *obj);
/* A split drawn by percentage for this Host, or NULL when no rule has it. */
const struct ingress_split *ingress_pick(const char *host, size_t len);
void ingress_free_all(void);
void revision_dispatch(struct revision *r);
/* Answers every held request of a failed revision with 503 and the reason. */
void revision_fail_waiting(struct revision *r);
void revision_maybe_free(struct revision *r);
void revisions_free_all(void);

/* reporter.c */
bool reporter_start(char *err, size_t cap);
void reporter_stop(void);
void reporter_request_in(struct revision *r);
void reporter_request_out(struct revision *r);

/* metrics.c */
void act_metrics_start(void);
void act_metrics_stop(void);
void act_metrics_observe(int status, double seconds);

/* internal_tls.c: Knative's system-internal-tls (§1.1, §1.3, §3.8). */
/* Starts the watches of the routing secret and the trust bundles and makes
 * the pod pools TLS; the number of watches started (0 when TLS is off). */
unsigned act_tls_start(void);
/* Opens ACTIVATOR_HTTPS_PORT once the secret gave a certificate (at sync). */
void act_tls_listen(void);
void act_tls_stop(void);
/* For `coldbrew status` and logs: trusted CA count, handshakes refused. */
unsigned act_tls_trusted(void);

struct evbuffer;
/* coldstart.c: the cold-start ledger (see there) */
#define COLD_PHASES 5 /* poke, endpoints, probe, forward, response; then the total */
/* One held request's moments (CLOCK_MONOTONIC ns; 0: did not happen). */
struct cold_stamps {
    uint64_t held, poke, endpoints, probe, forwarded, first_byte;
};
void cold_on_poke(struct revision *r);
void cold_on_endpoints(struct revision *r); /* an Endpoints update naming a pod */
void cold_on_capacity(struct revision *r);  /* dispatch with a healthy pod (or ClusterIP) */
/* A request is held and the revision has no healthy pod: it joins the
 * current episode (opening one). */
void cold_hold(struct revision *r, uint64_t held_ns);
/* Its first response byte: fills the revision's moments into s, records the
 * phases (histogram, recent list, log line) into ms[COLD_PHASES + 1]. */
void cold_record(struct revision *r, struct cold_stamps *s, double ms[COLD_PHASES + 1]);
/* A cold-started request that ended with no response from a pod: answered
 * by the activator (503, 504, 502...) or left by its client (status 0). */
void cold_failed(struct revision *r, const struct cold_stamps *s, int status, uint64_t now_ns);
extern const char *const cold_phase_names[COLD_PHASES + 1];
extern const char *const cold_phase_desc[COLD_PHASES + 1];
void cold_render_metrics(struct evbuffer *b);
void cold_render_json(struct evbuffer *b); /* GET /coldstarts on the metrics port */
void cold_free(struct revision *r);

/* telemetry.c: OBSERVABILITY_CONFIG's tracing (spans over OTLP) */
struct otlp_exporter;
extern struct otlp_exporter *act_otlp;
extern bool act_tracing;
extern double act_sampling_rate;
void act_telemetry_init(void);
void act_telemetry_free(void);

/* handler.c */
void act_on_request(struct request *req, void *arg);
void act_ctx_pool_trim(unsigned keep);
void act_check_exit(void);

#endif
