/* config.c — the activator's environment (Knative §1.2).
 *
 * Required, as envconfig makes them: POD_NAME, POD_IP. coldbrew adds port
 * overrides (ACTIVATOR_HTTP_PORT, ACTIVATOR_H2C_PORT, METRICS_PROMETHEUS_PORT)
 * so several activators can share a host, KUBE_API_URL / AUTOSCALER_URL to
 * point at a plain-HTTP API and a given autoscaler, ACTIVATOR_DRAIN_SECONDS,
 * the caps on held requests (COLDBREW_MAX_WAITING_PER_REVISION,
 * COLDBREW_MAX_WAITING), and config-network's two mesh keys as env
 * (COLDBREW_MESH_COMPATIBILITY_MODE, COLDBREW_MESH_POD_ADDRESSABILITY):
 * Knative reads those from the config-network ConfigMap, which coldbrew does
 * not watch; the defaults are Knative's (auto, false). The same goes for
 * system-internal-tls (COLDBREW_SYSTEM_INTERNAL_TLS: enabled/disabled, any
 * case; Knative also reads it once at start): see internal_tls.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/env.h"
#include "activator.h"

/* Kubernetes' resolv.conf names the cluster domain: "search ns.svc.<domain> svc.<domain> <domain>".
 */
static const char *domain_from_resolv(void)
{
    static char domain[128];
    FILE *f = fopen("/etc/resolv.conf", "r");
    if (!f)
        return NULL;
    char line[512];
    const char *found = NULL;
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "search", 6))
            continue;
        for (char *tok = strtok(line + 6, " \t\n"); tok; tok = strtok(NULL, " \t\n"))
            if (!strncmp(tok, "svc.", 4) && tok[4]) {
                snprintf(domain, sizeof domain, "%s", tok + 4);
                found = domain;
                break;
            }
    }
    fclose(f);
    return found;
}

bool act_config_load(struct act_config *cfg, char *err, size_t cap)
{
    memset(cfg, 0, sizeof *cfg);
    struct env_missing m = {{0}, 0};
    cfg->pod_name = env_require(&m, "POD_NAME");
    cfg->pod_ip = env_require(&m, "POD_IP");
    if (m.count) {
        snprintf(err, cap, "required key%s %s missing value", m.count > 1 ? "s" : "", m.names);
        return false;
    }
    cfg->system_namespace = env_str("SYSTEM_NAMESPACE", "knative-serving");
    cfg->cluster_domain = env_str("CLUSTER_DOMAIN", NULL);
    if (!cfg->cluster_domain)
        cfg->cluster_domain = domain_from_resolv();
    if (!cfg->cluster_domain)
        cfg->cluster_domain = "cluster.local";
    bool ok = true;
    cfg->probe_timeout = env_duration("PROBE_TIMEOUT", 0.3, &ok);
    cfg->probe_frequency = env_duration("PROBE_FREQUENCY", 0.2, &ok);
    cfg->drain_seconds = env_double("ACTIVATOR_DRAIN_SECONDS", 45, &ok);
    cfg->max_idle_total = (unsigned)env_long("MAX_IDLE_PROXY_CONNS", 1000, &ok);
    cfg->max_idle_per_host = (unsigned)env_long("MAX_IDLE_PROXY_CONNS_PER_HOST", 100, &ok);
    cfg->http_port = (int)env_long("ACTIVATOR_HTTP_PORT", 8012, &ok);
    cfg->h2c_port = (int)env_long("ACTIVATOR_H2C_PORT", 8013, &ok);
    cfg->metrics_port = (int)env_long("METRICS_PROMETHEUS_PORT", 9090, &ok);
    cfg->max_waiting_per_revision =
        (unsigned)env_long("COLDBREW_MAX_WAITING_PER_REVISION", 10000, &ok);
    cfg->max_waiting_total = (unsigned)env_long("COLDBREW_MAX_WAITING", 100000, &ok);
    cfg->upstream_idle_seconds = env_double("COLDBREW_UPSTREAM_IDLE_SECONDS", 4, &ok);
    if (!ok) {
        snprintf(err, cap, "a duration, port or limit setting is malformed");
        return false;
    }
    const char *mm = env_str("COLDBREW_MESH_COMPATIBILITY_MODE", "auto");
    if (!strcmp(mm, "auto"))
        cfg->mesh_mode = MESH_AUTO;
    else if (!strcmp(mm, "enabled"))
        cfg->mesh_mode = MESH_ENABLED;
    else if (!strcmp(mm, "disabled"))
        cfg->mesh_mode = MESH_DISABLED;
    else {
        snprintf(err, cap, "COLDBREW_MESH_COMPATIBILITY_MODE: want auto, enabled or disabled");
        return false;
    }
    cfg->passthrough_lb = env_bool("COLDBREW_MESH_POD_ADDRESSABILITY", false);
    const char *it = env_str("COLDBREW_SYSTEM_INTERNAL_TLS", "disabled");
    if (!strcasecmp(it, "enabled") || !strcasecmp(it, "true"))
        cfg->internal_tls = true;
    else if (!strcasecmp(it, "disabled") || !strcasecmp(it, "false") || !*it)
        cfg->internal_tls = false;
    else {
        snprintf(err, cap, "COLDBREW_SYSTEM_INTERNAL_TLS: want enabled or disabled");
        return false;
    }
    bool pok = true;
    cfg->https_port = (int)env_long("ACTIVATOR_HTTPS_PORT", 8112, &pok);
    cfg->pod_tls_port = (int)env_long("COLDBREW_POD_TLS_PORT", 8112, &pok);
    cfg->cluster_tls_port = (int)env_long("COLDBREW_CLUSTER_TLS_PORT", 443, &pok);
    cfg->routing_secret = env_str("COLDBREW_ROUTING_SECRET", "routing-serving-certs");
    if (!pok) {
        snprintf(err, cap,
                 "ACTIVATOR_HTTPS_PORT, COLDBREW_POD_TLS_PORT or COLDBREW_CLUSTER_TLS_PORT "
                 "is not a number");
        return false;
    }
    cfg->ingress = env_bool("COLDBREW_INGRESS", false);
    cfg->listen_host = env_str("COLDBREW_LISTEN_HOST", NULL);
    static char url[320];
    const char *au = env_str("AUTOSCALER_URL", NULL);
    if (!au) {
        snprintf(url, sizeof url, "ws://autoscaler.%s.svc.%s:8080", cfg->system_namespace,
                 cfg->cluster_domain);
        au = url;
    }
    cfg->autoscaler_url = au;
    return true;
}
