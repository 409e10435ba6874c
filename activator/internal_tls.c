/* internal_tls.c — Knative's system-internal-tls in the activator
 * (knative-activator.md §1.1, §1.3, §3.8, §6.2).
 *
 * With COLDBREW_SYSTEM_INTERNAL_TLS=enabled (config-network's
 * system-internal-tls, read once at start as Knative does):
 *  - requests go to pods over TLS on their 8112 (the Endpoints' port named
 *    "https" when there is one), to the private Service's 443 in ClusterIP
 *    mode; SNI and verified name data-plane.knative.dev, and the leaf must
 *    carry the SAN kn-user-<namespace> (tls_ctx.c). Probes stay plain HTTP
 *    on the Endpoints' http port;
 *  - trust is the routing secret's ca.crt plus every value of every
 *    ConfigMap labelled networking.knative.dev/trust-bundle=true in
 *    SYSTEM_NAMESPACE; both are watched, and each change rebuilds the trust
 *    store for new handshakes (connections already open keep theirs; the
 *    cached sessions are dropped, as they were verified under the old trust);
 *  - the activator serves TLS on ACTIVATOR_HTTPS_PORT (8112) with the
 *    secret's tls.crt/tls.key, once they are there; HTTP stays on. The pair
 *    goes to tls_ctx.c as bytes (the image's root is read-only: no files),
 *    which swaps the context when the bytes change and keeps the old one
 *    when the new bytes are no certificate.
 *
 * Secrets carry base64 in `data`; ConfigMaps carry text.
 *
 * Without a cluster (the local platform), COLDBREW_TLS_TRUST_FILES names the
 * CA files to trust instead (comma separated); they are re-read every
 * COLDBREW_TLS_RELOAD_INTERVAL (a minute) and the trust is rebuilt when
 * their bytes change. No secret is watched then, and no 8112 is served
 * (the platform's ingress is the activator's plain port). */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/env.h"
#include "core/log.h"
#include "transport/tls.h"
#include "transport/tls_ctx.h"
#include "activator.h"
#include "pods.h"

#define MAX_BUNDLES 64 /* trust-bundle ConfigMaps kept; more are logged and ignored */

static struct {
    struct tls_ctx_client *client;
    struct upstream_tls *conn;
    struct tls_ctx_server *server;
    char *crt, *key; /* the secret's pair for the 8112 listener (PEM) */
    size_t crt_len, key_len;
    char *ca; /* the secret's ca.crt (PEM) */
    size_t ca_len;
    json_t *bundles; /* ConfigMap name -> its data object */
    unsigned trusted;
    /* COLDBREW_TLS_TRUST_FILES mode */
    char files[8][512];
    const char *file_ptrs[8];
    size_t nfiles;
    unsigned char files_hash[32];
    struct event *files_timer;
} T;

unsigned act_tls_trusted(void)
{
    return T.trusted;
}

static void rebuild_trust(void)
{
    struct tls_ctx_pem src[MAX_BUNDLES * 4 + 1];
    size_t n = 0;
    if (T.ca)
        src[n++] = (struct tls_ctx_pem){T.ca, T.ca_len, "secret ca.crt"};
    const char *name;
    json_t *data;
    json_object_foreach(T.bundles, name, data)
    {
        const char *k;
        json_t *v;
        json_object_foreach(data, k, v)
        {
            if (n >= sizeof src / sizeof src[0])
                break;
            if (json_is_string(v))
                src[n++] = (struct tls_ctx_pem){json_string_value(v), json_string_length(v), name};
        }
    }
    const char *why = NULL;
    int got = n ? tls_ctx_client_set_trust(T.client, src, n, &why) : 0;
    if (got > 0) {
        T.trusted = (unsigned)got;
        log_info("internal TLS: trusting %d CA certificates from %zu sources", got, n);
    } else {
        log_warn("internal TLS: no CA certificate to trust yet (%s); pods cannot be reached "
                 "over TLS",
                 why ? why : "no sources");
    }
}

/* base64 (a Secret's data) -> malloc'd bytes; NULL if malformed. */
static char *b64(const char *s, size_t *out_len)
{
    size_t len = strlen(s);
    if (len % 4)
        return NULL;
    char *out = malloc(len / 4 * 3 + 1);
    if (!out)
        return NULL;
    int n = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)s, (int)len);
    if (n < 0) {
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    if (len && s[len - 1] == '=')
        n--;
    if (len > 1 && s[len - 2] == '=')
        n--;
    out[n] = 0;
    *out_len = (size_t)n;
    return out;
}

static void take_pair(json_t *data)
{
    const char *c64 = json_string_value(json_object_get(data, "tls.crt"));
    const char *k64 = json_string_value(json_object_get(data, "tls.key"));
    if (!c64 || !k64)
        return;
    size_t cl = 0, kl = 0;
    char *crt = b64(c64, &cl), *key = b64(k64, &kl);
    if (!crt || !key) {
        log_warn("internal TLS: secret %s: tls.crt or tls.key is not base64; keeping the "
                 "current certificate",
                 act->cfg.routing_secret);
        free(crt);
        if (key) {
            OPENSSL_cleanse(key, kl);
            free(key);
        }
        return;
    }
    if (T.key) {
        OPENSSL_cleanse(T.key, T.key_len);
        free(T.key);
    }
    free(T.crt);
    T.crt = crt;
    T.crt_len = cl;
    T.key = key;
    T.key_len = kl;
    if (T.server) {
        const char *why = NULL;
        if (tls_ctx_server_set_pem(T.server, T.crt, T.crt_len, T.key, T.key_len, &why) ==
            TLS_CTX_RELOAD_SWAPPED)
            log_info("internal TLS: serving the rotated certificate on :%d", act->cfg.https_port);
    }
}

static void on_secret(void *arg, enum k8s_event ev, json_t *obj)
{
    (void)arg;
    if (ev == K8S_SYNCED) {
        act->synced++;
        return;
    }
    const char *name = k8s_str(obj, "metadata.name");
    if (!name || strcmp(name, act->cfg.routing_secret))
        return;
    json_t *data = json_object_get(obj, "data");
    free(T.ca);
    T.ca = NULL;
    T.ca_len = 0;
    if (ev != K8S_DELETED) {
        const char *ca = json_string_value(json_object_get(data, "ca.crt"));
        if (ca) {
            T.ca = b64(ca, &T.ca_len);
            if (!T.ca)
                log_warn("internal TLS: secret %s: ca.crt is not base64; ignored", name);
        }
        take_pair(data);
    }
    rebuild_trust();
}

static void on_bundle(void *arg, enum k8s_event ev, json_t *obj)
{
    (void)arg;
    if (ev == K8S_SYNCED) {
        act->synced++;
        return;
    }
    const char *name = k8s_str(obj, "metadata.name");
    if (!name)
        return;
    if (ev == K8S_DELETED) {
        json_object_del(T.bundles, name);
    } else if (json_object_size(T.bundles) >= MAX_BUNDLES && !json_object_get(T.bundles, name)) {
        log_warn("internal TLS: more than %d trust-bundle ConfigMaps; %s ignored", MAX_BUNDLES,
                 name);
        return;
    } else {
        json_t *data = json_object_get(obj, "data");
        json_object_set(T.bundles, name, data ? data : json_object());
    }
    rebuild_trust();
}

/* The files' bytes, hashed: a rebuild only when they changed. */
static bool files_changed(void)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char h[32];
    unsigned hl = 0;
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    for (size_t i = 0; i < T.nfiles; i++) {
        FILE *f = fopen(T.files[i], "rb");
        char buf[4096];
        size_t n;
        EVP_DigestUpdate(md, T.files[i], strlen(T.files[i]) + 1);
        while (f && (n = fread(buf, 1, sizeof buf, f)) > 0)
            EVP_DigestUpdate(md, buf, n);
        if (f)
            fclose(f);
    }
    EVP_DigestFinal_ex(md, h, &hl);
    EVP_MD_CTX_free(md);
    bool changed = memcmp(h, T.files_hash, sizeof h) != 0;
    memcpy(T.files_hash, h, sizeof h);
    return changed;
}

static void load_trust_files(void)
{
    if (!files_changed())
        return;
    const char *why = NULL;
    int got = tls_ctx_client_set_trust_files(T.client, T.file_ptrs, T.nfiles, &why);
    if (got > 0) {
        T.trusted = (unsigned)got;
        log_info("internal TLS: trusting %d CA certificates from COLDBREW_TLS_TRUST_FILES", got);
    } else {
        log_warn("internal TLS: COLDBREW_TLS_TRUST_FILES gave no CA certificate (%s); keeping "
                 "the previous trust",
                 why ? why : "unreadable");
    }
}

static void on_files_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    load_trust_files();
}

static bool start_files_mode(const char *list)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", list);
    char *save = NULL;
    for (char *f = strtok_r(copy, ",", &save); f && T.nfiles < 8; f = strtok_r(NULL, ",", &save)) {
        while (*f == ' ')
            f++;
        if (!*f)
            continue;
        snprintf(T.files[T.nfiles], sizeof T.files[0], "%s", f);
        T.file_ptrs[T.nfiles] = T.files[T.nfiles];
        T.nfiles++;
    }
    if (!T.nfiles)
        return false;
    load_trust_files();
    double every = env_duration("COLDBREW_TLS_RELOAD_INTERVAL", 60, NULL);
    T.files_timer = event_new(act->base, -1, EV_PERSIST, on_files_tick, NULL);
    struct timeval tv = {(time_t)every, (suseconds_t)((every - (double)(time_t)every) * 1e6)};
    event_add(T.files_timer, &tv);
    return true;
}

unsigned act_tls_start(void)
{
    if (!act->cfg.internal_tls)
        return 0;
    const char *why = NULL;
    struct tls_ctx_client_opts co = {0};
    T.client = tls_ctx_client_new(&co, &why);
    T.conn = T.client ? tls_data_plane_new(T.client) : NULL;
    if (!T.conn) {
        log_error("internal TLS: cannot make the client context: %s", why ? why : "out of memory");
        exit(1);
    }
    T.bundles = json_object();
    pod_pools_set_tls(T.conn, act->cfg.pod_tls_port, act->cfg.cluster_tls_port, &act->lim.h2);
    const char *files = env_str("COLDBREW_TLS_TRUST_FILES", "");
    if (*files) {
        if (!start_files_mode(files)) {
            log_error("COLDBREW_TLS_TRUST_FILES names no file");
            exit(1);
        }
        log_info("internal TLS on: pods over TLS (SNI %s, SAN kn-user-<namespace>), trust from "
                 "%s",
                 TLS_CTX_DATA_PLANE_NAME, files);
        return 0;
    }
    char path[256];
    snprintf(path, sizeof path, "/api/v1/namespaces/%s/secrets", act->cfg.system_namespace);
    act->w_secret = k8s_watch_start(&act->k8s, path, NULL, on_secret, NULL);
    snprintf(path, sizeof path, "/api/v1/namespaces/%s/configmaps", act->cfg.system_namespace);
    act->w_bundles = k8s_watch_start(&act->k8s, path, "networking.knative.dev/trust-bundle=true",
                                     on_bundle, NULL);
    log_info("internal TLS on: pods over TLS (SNI %s, SAN kn-user-<namespace>), trust from "
             "secret %s and trust-bundle ConfigMaps of %s",
             TLS_CTX_DATA_PLANE_NAME, act->cfg.routing_secret, act->cfg.system_namespace);
    return 2;
}

void act_tls_listen(void)
{
    if (!act->cfg.internal_tls || act->https || T.nfiles)
        return;
    if (!T.crt) {
        log_warn("internal TLS: secret %s has no tls.crt/tls.key; not serving :%d",
                 act->cfg.routing_secret, act->cfg.https_port);
        return;
    }
    static struct tls_ctx_env envstore;
    char label[128];
    snprintf(label, sizeof label, "secret %s", act->cfg.routing_secret);
    struct tls_ctx_server_opts o = {.cert_file = label,
                                    .key_file = label,
                                    .cert_pem = T.crt,
                                    .cert_pem_len = T.crt_len,
                                    .key_pem = T.key,
                                    .key_pem_len = T.key_len};
    char err[256];
    if (!tls_ctx_opts_from_env("ACTIVATOR_", &o, &envstore, err, sizeof err)) {
        log_error("ACTIVATOR_TLS_*: %s", err);
        exit(1);
    }
    const char *why = NULL;
    T.server = tls_ctx_server_new(&o, &why);
    if (!T.server) {
        log_warn("internal TLS: secret %s: %s; not serving :%d", act->cfg.routing_secret, why,
                 act->cfg.https_port);
        return;
    }
    const char *e = NULL;
    act->https = server_open(act->base, "https", act->cfg.listen_host, act->cfg.https_port,
                             &act->lim, act_on_request, NULL, &e);
    if (!act->https) {
        log_error("https listener failed on port %d: %s", act->cfg.https_port, e);
        exit(1);
    }
    act->https->timeout_body = act->http->timeout_body;
    server_set_tls(act->https, T.server);
    log_info("activator serving TLS on :%d (HTTP/1.1 and h2 by ALPN)", act->cfg.https_port);
}

void act_tls_stop(void)
{
    if (!act->cfg.internal_tls)
        return;
    if (T.files_timer)
        event_free(T.files_timer);
    k8s_watch_free(act->w_secret);
    k8s_watch_free(act->w_bundles);
    act->w_secret = act->w_bundles = NULL;
    pod_pools_set_tls(NULL, 0, 0, NULL);
    tls_client_free(T.conn);
    tls_ctx_client_free(T.client);
    tls_ctx_server_free(T.server);
    json_decref(T.bundles);
    free(T.ca);
    free(T.crt);
    if (T.key) {
        OPENSSL_cleanse(T.key, T.key_len);
        free(T.key);
    }
    memset(&T, 0, sizeof T);
}
