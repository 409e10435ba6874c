/* Tests for common/transport/tls_ctx.c: real handshakes between a server SSL and a
 * client SSL over a socketpair, in process. Certificates come from
 * local/certs.c, so the generator is exercised too. */
#include "unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../local/certs.h"
#include "core/log.h"
#include "transport/tls_ctx.h"

static long long live_bytes;
#ifndef __SANITIZE_ADDRESS__
/* ---------------------------------------------------------------- counting allocator
 * Installed before OpenSSL allocates anything, so live_bytes is what
 * OpenSSL holds right now (for the bytes-per-idle-connection figure). */
struct hdr {
    size_t n;
    size_t pad; /* keeps 16-byte alignment */
};
static void *count_malloc(size_t n, const char *f, int l)
{
    (void)f, (void)l;
    struct hdr *h = malloc(sizeof *h + n);
    if (!h)
        return NULL;
    h->n = n;
    live_bytes += (long long)n;
    return h + 1;
}
static void count_free(void *p, const char *f, int l)
{
    (void)f, (void)l;
    if (!p)
        return;
    struct hdr *h = (struct hdr *)p - 1;
    live_bytes -= (long long)h->n;
    free(h);
}
static void *count_realloc(void *p, size_t n, const char *f, int l)
{
    if (!p)
        return count_malloc(n, f, l);
    if (!n) {
        count_free(p, f, l);
        return NULL;
    }
    struct hdr *h = (struct hdr *)p - 1;
    size_t old = h->n;
    struct hdr *g = realloc(h, sizeof *g + n);
    if (!g)
        return NULL;
    g->n = n;
    live_bytes += (long long)n - (long long)old;
    return g + 1;
}

#endif

/* ---------------------------------------------------------------- fixtures */

static char dir[64];
static char path_crt[128], path_key[128], path_log[128];

struct pki {
    EVP_PKEY *key;
    X509 *crt;
};

static struct pki make(const char *cn, const char *const *dns, size_t ndns, bool ca,
                       long not_before, long not_after, struct pki *issuer)
{
    struct certs_spec spec = {cn, dns, ndns, ca, not_before, not_after};
    struct pki p;
    char err[256];
    assert_true(certs_make(&spec, issuer ? issuer->key : NULL, issuer ? issuer->crt : NULL, &p.key,
                           &p.crt, err, sizeof err));
    return p;
}

static void drop(struct pki *p)
{
    EVP_PKEY_free(p->key);
    X509_free(p->crt);
    p->key = NULL;
    p->crt = NULL;
}

static struct pki make_ca(void)
{
    return make("test CA", NULL, 0, true, -60, 86400, NULL);
}

static const char *const good_dns[] = {"kn-user-ns1", "data-plane.knative.dev"};

static struct pki make_leaf(struct pki *ca, const char *const *dns, size_t n, long nb, long na)
{
    return make("leaf", dns, n, false, nb, na, ca);
}

static void write_pair(struct pki *p)
{
    char err[256];
    assert_true(certs_write_pem(path_key, NULL, p->key, err, sizeof err));
    assert_true(certs_write_pem(path_crt, p->crt, NULL, err, sizeof err));
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *pem_of(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *out = strndup(data, (size_t)n);
    BIO_free(b);
    return out;
}

static void trust(struct tls_ctx_client *c, X509 *ca)
{
    char *pem = pem_of(ca);
    struct tls_ctx_pem src = {pem, strlen(pem), "test ca.crt"};
    const char *why = NULL;
    assert_int_equal(tls_ctx_client_set_trust(c, &src, 1, &why), 1);
    free(pem);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/tls_ctx_test.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path_crt, sizeof path_crt, "%s/tls.crt", dir);
    snprintf(path_key, sizeof path_key, "%s/tls.key", dir);
    snprintf(path_log, sizeof path_log, "%s/log", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

/* ---------------------------------------------------------------- handshake harness */

struct conn {
    int fds[2];
    SSL *srv, *cli;
    int srv_rc, cli_rc; /* 1 done, -1 failed, 0 not yet */
    const char *srv_why, *cli_why;
};

static void pair_open(struct conn *k, struct tls_ctx_server *s, struct tls_ctx_client *c,
                      const char *ns, const char *dest, enum tls_alpn alpn)
{
    memset(k, 0, sizeof *k);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, k->fds), 0);
    k->srv = tls_ctx_server_accept(s, k->fds[0]);
    k->cli = tls_ctx_client_connect(c, k->fds[1], ns, dest, alpn);
    assert_non_null(k->srv);
    assert_non_null(k->cli);
}

/* Alternates the two sides until both are done or failed; bounded. */
static void pair_drive(struct conn *k)
{
    for (int i = 0; i < 50 && (k->srv_rc == 0 || k->cli_rc == 0); i++) {
        if (k->cli_rc == 0)
            k->cli_rc = tls_ctx_handshake(k->cli, &k->cli_why);
        if (k->srv_rc == 0)
            k->srv_rc = tls_ctx_handshake(k->srv, &k->srv_why);
    }
}

/* The client reads what the server sent after the handshake (TLS 1.3 tickets). */
static void pair_settle(struct conn *k)
{
    char b[16];
    for (int i = 0; i < 4; i++)
        if (SSL_read(k->cli, b, sizeof b) <= 0)
            ERR_clear_error();
}

static void pair_close(struct conn *k)
{
    SSL_free(k->srv);
    SSL_free(k->cli);
    close(k->fds[0]);
    close(k->fds[1]);
}

/* One full handshake; returns the client's result. */
static int handshake(struct tls_ctx_server *s, struct tls_ctx_client *c, const char *ns,
                     const char **cli_why, const char **srv_why)
{
    struct conn k;
    pair_open(&k, s, c, ns, NULL, TLS_ALPN_HTTP11);
    pair_drive(&k);
    if (cli_why)
        *cli_why = k.cli_why;
    if (srv_why)
        *srv_why = k.srv_why;
    int rc = k.cli_rc;
    if (rc == 1)
        assert_int_equal(k.srv_rc, 1);
    pair_close(&k);
    return rc;
}

static struct tls_ctx_server *server_on(struct pki *leaf)
{
    write_pair(leaf);
    struct tls_ctx_server_opts o = {.cert_file = path_crt, .key_file = path_key};
    const char *why = NULL;
    struct tls_ctx_server *s = tls_ctx_server_new(&o, &why);
    assert_non_null(s);
    return s;
}

static struct tls_ctx_client *client_trusting(X509 *ca)
{
    const char *why = NULL;
    struct tls_ctx_client *c = tls_ctx_client_new(NULL, &why);
    assert_non_null(c);
    if (ca)
        trust(c, ca);
    return c;
}

/* A server SSL_CTX that serves whatever it is given (tls_ctx_server refuses
 * expired certificates, but a peer may still present one). */
static SSL_CTX *raw_server(struct pki *leaf)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_int_equal(SSL_CTX_use_certificate(ctx, leaf->crt), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, leaf->key), 1);
    return ctx;
}

static int raw_handshake(SSL_CTX *sctx, struct tls_ctx_client *c, const char *ns,
                         const char **cli_why)
{
    struct conn k;
    memset(&k, 0, sizeof k);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, k.fds), 0);
    k.srv = SSL_new(sctx);
    SSL_set_fd(k.srv, k.fds[0]);
    SSL_set_accept_state(k.srv);
    k.cli = tls_ctx_client_connect(c, k.fds[1], ns, NULL, TLS_ALPN_NONE);
    pair_drive(&k);
    *cli_why = k.cli_why;
    int rc = k.cli_rc;
    pair_close(&k);
    return rc;
}

/* The serial number of the certificate a finished client saw. */
static long peer_serial_low(SSL *cli)
{
    X509 *x = SSL_get0_peer_certificate(cli);
    assert_non_null(x);
    const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
    const unsigned char *d = ASN1_STRING_get0_data(sn);
    int n = ASN1_STRING_length(sn);
    return (long)d[n - 1] | (long)d[n - 2] << 8 | (long)d[n - 3] << 16;
}

static long serial_low(X509 *x)
{
    const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
    const unsigned char *d = ASN1_STRING_get0_data(sn);
    int n = ASN1_STRING_length(sn);
    return (long)d[n - 1] | (long)d[n - 2] << 8 | (long)d[n - 3] << 16;
}

static void log_to_file(void)
{
    int fd = open(path_log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    assert_true(fd >= 0);
    log_set_fd(fd);
}

static char *log_text(void)
{
    static char buf[16384];
    FILE *f = fopen(path_log, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
    return buf;
}

/* ---------------------------------------------------------------- tests */

static void test_tls12_client_refused(void **state)
{
    (void)state;
    struct pki ca = make_ca(), leaf = make_leaf(&ca, good_dns, 2, -60, 3600);
    struct tls_ctx_server *s = server_on(&leaf);
    struct tls_ctx_client_opts o = {.min_version = TLS1_2_VERSION, .max_version = TLS1_2_VERSION};
    const char *why = NULL, *cwhy = NULL, *swhy = NULL;
    struct tls_ctx_client *c = tls_ctx_client_new(&o, &why);
    assert_non_null(c);
    trust(c, ca.crt);
    assert_int_equal(handshake(s, c, "ns1", &cwhy, &swhy), -1);
    assert_non_null(swhy);
    assert_non_null(strstr(swhy, "TLS version refused"));
    assert_non_null(strstr(cwhy, "TLS version refused"));
    tls_ctx_client_free(c);

    /* Files above COLDBREW_TLS_MAX_PEM_BYTES are refused. */
    setenv("COLDBREW_TLS_MAX_PEM_BYTES", "100", 1);
    struct tls_ctx_server_opts small = {.cert_file = path_crt, .key_file = path_key};
    assert_null(tls_ctx_server_new(&small, &why));
    assert_string_equal(why, "the certificate file is larger than COLDBREW_TLS_MAX_PEM_BYTES");
    unsetenv("COLDBREW_TLS_MAX_PEM_BYTES");

    /* The same server with TLS 1.2 allowed (QUEUE_PROXY_TLS_MIN_VERSION=1.2) accepts it. */
    int v = 0;
    assert_true(tls_ctx_parse_version("1.2", &v));
    assert_false(tls_ctx_parse_version("1.1", &v));
    struct tls_ctx_server_opts so = {.cert_file = path_crt, .key_file = path_key, .min_version = v};
    struct tls_ctx_server *s12 = tls_ctx_server_new(&so, &why);
    c = tls_ctx_client_new(&o, &why);
    trust(c, ca.crt);
    assert_int_equal(handshake(s12, c, "ns1", &cwhy, NULL), 1);
    tls_ctx_client_free(c);
    tls_ctx_server_free(s12);
    tls_ctx_server_free(s);
    drop(&ca);
    drop(&leaf);
}

static void test_env_settings(void **state)
{
    (void)state;
    struct tls_ctx_server_opts o = {.cert_file = path_crt, .key_file = path_key};
    struct tls_ctx_env store;
    char err[256];
    setenv("QP_TLS_MIN_VERSION", "1.2", 1);
    setenv("QP_TLS_CIPHER_SUITES",
           " TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256 ,, TLS_AES_128_GCM_SHA256,"
           "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
           1);
    setenv("QP_TLS_CURVE_PREFERENCES", "X25519,CurveP256,P-256", 1);
    assert_true(tls_ctx_opts_from_env("QP_", &o, &store, err, sizeof err));
    assert_int_equal(o.min_version, TLS1_2_VERSION);
    assert_int_equal(o.max_version, 0);
    assert_string_equal(o.ciphers, "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA");
    assert_string_equal(o.groups, "X25519:P-256");

    /* A TLS 1.2 client gets the configured suite. */
    struct pki ca = make_ca(), leaf = make_leaf(&ca, good_dns, 2, -60, 3600);
    write_pair(&leaf);
    const char *why = NULL;
    struct tls_ctx_server *s = tls_ctx_server_new(&o, &why);
    assert_non_null(s);
    struct tls_ctx_client_opts co = {.min_version = TLS1_2_VERSION, .max_version = TLS1_2_VERSION};
    struct tls_ctx_client *c = tls_ctx_client_new(&co, &why);
    trust(c, ca.crt);
    struct conn k;
    pair_open(&k, s, c, "ns1", NULL, TLS_ALPN_NONE);
    pair_drive(&k);
    assert_int_equal(k.cli_rc, 1);
    assert_string_equal(SSL_get_cipher_name(k.cli), "ECDHE-ECDSA-AES128-SHA256");
    pair_close(&k);
    tls_ctx_client_free(c);
    tls_ctx_server_free(s);
    drop(&ca);
    drop(&leaf);

    setenv("QP_TLS_CURVE_PREFERENCES", "X25519MLKEM768", 1);
    assert_false(tls_ctx_opts_from_env("QP_", &o, &store, err, sizeof err));
    assert_non_null(strstr(err, "QP_TLS_CURVE_PREFERENCES"));
    setenv("QP_TLS_CURVE_PREFERENCES", "CurveP128", 1);
    assert_false(tls_ctx_opts_from_env("QP_", &o, &store, err, sizeof err));
    assert_string_equal(err, "QP_TLS_CURVE_PREFERENCES: unsupported name \"CurveP128\"");
    unsetenv("QP_TLS_CURVE_PREFERENCES");
    setenv("QP_TLS_CIPHER_SUITES", "NOT_A_REAL_CIPHER", 1);
    assert_false(tls_ctx_opts_from_env("QP_", &o, &store, err, sizeof err));
    unsetenv("QP_TLS_CIPHER_SUITES");
    setenv("QP_TLS_MIN_VERSION", "1.2 ", 1);
    assert_false(tls_ctx_opts_from_env("QP_", &o, &store, err, sizeof err));
    assert_string_equal(err, "QP_TLS_MIN_VERSION: \"1.2 \" is not 1.2 or 1.3");
    unsetenv("QP_TLS_MIN_VERSION");
    /* Nothing set: TLS 1.3 minimum, OpenSSL's lists. */
    struct tls_ctx_server_opts d = {0};
    assert_true(tls_ctx_opts_from_env("QP_", &d, &store, err, sizeof err));
    assert_int_equal(d.min_version, 0);
    assert_null(d.ciphers);
    assert_null(d.groups);
}

/* METRICS_PROMETHEUS_TLS_CLIENT_AUTH: optional / require with a client CA file. */
static void test_client_auth(void **state)
{
    (void)state;
    enum tls_client_auth a;
    assert_true(tls_ctx_parse_client_auth(" Require ", &a));
    assert_int_equal(a, TLS_CLIENT_AUTH_REQUIRE);
    assert_true(tls_ctx_parse_client_auth("", &a));
    assert_int_equal(a, TLS_CLIENT_AUTH_NONE);
    assert_true(tls_ctx_parse_client_auth("optional", &a));
    assert_int_equal(a, TLS_CLIENT_AUTH_OPTIONAL);
    assert_false(tls_ctx_parse_client_auth("verify", &a));

    struct pki ca = make_ca(), other = make_ca();
    struct pki leaf = make_leaf(&ca, good_dns, 2, -60, 3600);
    static const char *const client_dns[] = {"prometheus"};
    struct pki good = make_leaf(&ca, client_dns, 1, -60, 3600);
    struct pki bad = make_leaf(&other, client_dns, 1, -60, 3600);
    write_pair(&leaf);
    char cafile[160], err[256];
    snprintf(cafile, sizeof cafile, "%s/client-ca.crt", dir);
    assert_true(certs_write_pem(cafile, ca.crt, NULL, err, sizeof err));
    struct tls_ctx_server_opts o = {.cert_file = path_crt,
                                    .key_file = path_key,
                                    .client_auth = TLS_CLIENT_AUTH_REQUIRE,
                                    .client_ca_file = cafile};
    const char *why = NULL;
    struct tls_ctx_server *s = tls_ctx_server_new(&o, &why);
    assert_non_null(s);
    struct tls_ctx_client *c = client_trusting(ca.crt);
    struct pki *who[] = {NULL, &good, &bad};
    const char *want[] = {"the peer sent no certificate (one is required)", NULL,
                          "peer certificate not signed by a trusted CA"};
    for (int i = 0; i < 3; i++) {
        struct conn k;
        pair_open(&k, s, c, "ns1", NULL, TLS_ALPN_NONE);
        if (who[i]) {
            assert_int_equal(SSL_use_certificate(k.cli, who[i]->crt), 1);
            assert_int_equal(SSL_use_PrivateKey(k.cli, who[i]->key), 1);
        }
        pair_drive(&k);
        if (want[i]) {
            assert_int_equal(k.srv_rc, -1);
            assert_string_equal(k.srv_why, want[i]);
        } else {
            assert_int_equal(k.srv_rc, 1);
        }
        pair_close(&k);
    }
    tls_ctx_server_free(s);
    /* optional: no certificate is fine, a bad one is not. */
    o.client_auth = TLS_CLIENT_AUTH_OPTIONAL;
    s = tls_ctx_server_new(&o, &why);
    assert_int_equal(handshake(s, c, "ns1", NULL, NULL), 1);
    tls_ctx_server_free(s);
    /* A missing CA file refuses to start. */
    o.client_ca_file = NULL;
    assert_null(tls_ctx_server_new(&o, &why));
    assert_string_equal(why, "no client CA file for client certificates");
    tls_ctx_client_free(c);
    drop(&ca);
    drop(&other);
    drop(&leaf);
    drop(&good);
    drop(&bad);
}

static void test_alpn(void **state)
{
    (void)state;
    struct pki ca = make_ca(), leaf = make_leaf(&ca, good_dns, 2, -60, 3600);
    struct tls_ctx_server *s = server_on(&leaf);
    struct tls_ctx_client *c = client_trusting(ca.crt);
    static const struct {
        enum tls_alpn offer;
        const char *raw; /* overrides offer when set */
        unsigned rawlen;
        enum tls_alpn want;
    } cases[] = {
        {TLS_ALPN_H2, NULL, 0, TLS_ALPN_H2},
        {TLS_ALPN_HTTP11, NULL, 0, TLS_ALPN_HTTP11},
        {TLS_ALPN_NONE, NULL, 0, TLS_ALPN_NONE},
        /* a browser-like offer: http/1.1 first, h2 still wins (server preference) */
        {TLS_ALPN_NONE, "\x08http/1.1\x02h2", 12, TLS_ALPN_H2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct conn k;
        pair_open(&k, s, c, "ns1", NULL, cases[i].offer);
        if (cases[i].raw)
            SSL_set_alpn_protos(k.cli, (const unsigned char *)cases[i].raw, cases[i].rawlen);
        pair_drive(&k);
        assert_int_equal(k.cli_rc, 1);
        assert_int_equal(k.srv_rc, 1);
        assert_int_equal(tls_ctx_alpn(k.srv), cases[i].want);
        assert_int_equal(tls_ctx_alpn(k.cli), cases[i].want);
        pair_close(&k);
    }
    /* Only unknown protocols: refused with no_application_protocol. */
    struct conn k;
    pair_open(&k, s, c, "ns1", NULL, TLS_ALPN_NONE);
    SSL_set_alpn_protos(k.cli, (const unsigned char *)"\x06spdy/3", 7);
    pair_drive(&k);
    assert_int_equal(k.srv_rc, -1);
    assert_int_equal(k.cli_rc, -1);
    assert_non_null(strstr(k.srv_why, "ALPN"));
    assert_non_null(strstr(k.cli_why, "ALPN"));
    pair_close(&k);
    tls_ctx_client_free(c);
    tls_ctx_server_free(s);
    drop(&ca);
    drop(&leaf);
}

static void test_verification(void **state)
{
    (void)state;
    /* The real issuance path: local/certs.c's CA and pod certificate. */
    char ca_dir[128], pod_dir[128], err[256];
    snprintf(ca_dir, sizeof ca_dir, "%s/ca", dir);
    snprintf(pod_dir, sizeof pod_dir, "%s/pod", dir);
    assert_true(certs_ensure_pod(ca_dir, pod_dir, "NS1", NULL, err, sizeof err));
    char crt[160], key[160], cafile[160];
    snprintf(crt, sizeof crt, "%s/tls.crt", pod_dir);
    snprintf(key, sizeof key, "%s/tls.key", pod_dir);
    snprintf(cafile, sizeof cafile, "%s/ca.crt", pod_dir);
    struct tls_ctx_server_opts so = {.cert_file = crt, .key_file = key};
    const char *why = NULL, *cwhy = NULL, *swhy = NULL;
    struct tls_ctx_server *s = tls_ctx_server_new(&so, &why);
    assert_non_null(s);
    struct tls_ctx_client *c = tls_ctx_client_new(NULL, &why);
    const char *files[] = {cafile};
    assert_int_equal(tls_ctx_client_set_trust_files(c, files, 1, &why), 1);

    /* Right SAN (the namespace is lower-cased on both sides). */
    assert_int_equal(handshake(s, c, "ns1", &cwhy, NULL), 1);
    assert_int_equal(handshake(s, c, "Ns1", &cwhy, NULL), 1);
    /* Wrong namespace. */
    assert_int_equal(handshake(s, c, "other", &cwhy, &swhy), -1);
    assert_string_equal(cwhy, "peer certificate lacks the SAN kn-user-<namespace>");
    assert_string_equal(swhy, "the peer refused our certificate");
    tls_ctx_server_free(s);
    tls_ctx_client_free(c);

    /* Untrusted CA: the client trusts another one. */
    struct pki ca = make_ca(), other = make_ca();
    struct pki leaf = make_leaf(&ca, good_dns, 2, -60, 3600);
    s = server_on(&leaf);
    c = client_trusting(other.crt);
    assert_int_equal(handshake(s, c, "ns1", &cwhy, NULL), -1);
    assert_string_equal(cwhy, "peer certificate not signed by a trusted CA");
    tls_ctx_client_free(c);
    /* No trust at all (before the first set_trust): the same. */
    c = client_trusting(NULL);
    assert_int_equal(handshake(s, c, "ns1", &cwhy, NULL), -1);
    assert_string_equal(cwhy, "peer certificate not signed by a trusted CA");
    tls_ctx_client_free(c);
    tls_ctx_server_free(s);

    /* Without data-plane.knative.dev: the server name does not verify. */
    static const char *const only_user[] = {"kn-user-ns1"};
    struct pki noname = make_leaf(&ca, only_user, 1, -60, 3600);
    s = server_on(&noname);
    c = client_trusting(ca.crt);
    assert_int_equal(handshake(s, c, "ns1", &cwhy, NULL), -1);
    assert_string_equal(cwhy, "peer certificate does not carry the server name");
    tls_ctx_server_free(s);

    /* Expired: tls_ctx_server refuses to load it, a raw peer presents it. */
    struct pki old = make_leaf(&ca, good_dns, 2, -7200, -3600);
    write_pair(&old);
    struct tls_ctx_server_opts o = {.cert_file = path_crt, .key_file = path_key};
    assert_null(tls_ctx_server_new(&o, &why));
    assert_string_equal(why, "the certificate has expired");
    SSL_CTX *raw = raw_server(&old);
    assert_int_equal(raw_handshake(raw, c, "ns1", &cwhy), -1);
    assert_string_equal(cwhy, "peer certificate expired");
    SSL_CTX_free(raw);
    /* Not yet valid. */
    struct pki future = make_leaf(&ca, good_dns, 2, 3600, 7200);
    raw = raw_server(&future);
    assert_int_equal(raw_handshake(raw, c, "ns1", &cwhy), -1);
    assert_string_equal(cwhy, "peer certificate not yet valid");
    SSL_CTX_free(raw);
    tls_ctx_client_free(c);
    drop(&ca);
    drop(&other);
    drop(&leaf);
    drop(&noname);
    drop(&old);
    drop(&future);
}

static void test_reload(void **state)
{
    (void)state;
    log_to_file();
    struct pki ca = make_ca();
    struct pki a = make_leaf(&ca, good_dns, 2, -60, 3600);
    struct pki b = make_leaf(&ca, good_dns, 2, -60, 3600);
    struct tls_ctx_server *s = server_on(&a);
    struct tls_ctx_client *c = client_trusting(ca.crt);
    const char *why = NULL;

    /* A connection made on A, kept open across the reload. */
    struct conn old;
    pair_open(&old, s, c, "ns1", NULL, TLS_ALPN_HTTP11);
    pair_drive(&old);
    assert_int_equal(old.cli_rc, 1);
    assert_int_equal(peer_serial_low(old.cli), serial_low(a.crt));

    assert_int_equal(tls_ctx_server_reload(s, &why), TLS_CTX_RELOAD_UNCHANGED);
    write_pair(&b);
    assert_int_equal(tls_ctx_server_reload(s, &why), TLS_CTX_RELOAD_SWAPPED);
    assert_int_equal(tls_ctx_server_generation(s), 1);
    struct conn k;
    pair_open(&k, s, c, "ns1", NULL, TLS_ALPN_HTTP11);
    pair_drive(&k);
    assert_int_equal(k.cli_rc, 1);
    assert_int_equal(peer_serial_low(k.cli), serial_low(b.crt));
    pair_close(&k);

    /* The old connection still works on its (released) context. */
    char buf[8];
    assert_int_equal(SSL_write(old.cli, "ping", 4), 4);
    assert_int_equal(SSL_read(old.srv, buf, sizeof buf), 4);
    assert_memory_equal(buf, "ping", 4);
    pair_close(&old);

    /* Garbage: the old context stays and a log line says why (once). */
    write_text(path_crt, "not a certificate\n");
    assert_int_equal(tls_ctx_server_reload(s, &why), TLS_CTX_RELOAD_KEPT);
    assert_string_equal(why, "the certificate file holds no PEM certificate");
    assert_int_equal(tls_ctx_server_reload(s, &why), TLS_CTX_RELOAD_KEPT);
    char *logs = log_text();
    const char *hit = strstr(logs, "the certificate file holds no PEM certificate");
    assert_non_null(hit);
    assert_null(strstr(hit + 1, "the certificate file holds no PEM certificate"));
    assert_non_null(strstr(logs, "keeping the current certificate"));
    pair_open(&k, s, c, "ns1", NULL, TLS_ALPN_HTTP11);
    pair_drive(&k);
    assert_int_equal(k.cli_rc, 1);
    assert_int_equal(peer_serial_low(k.cli), serial_low(b.crt));
    pair_close(&k);

    /* A key that does not match, an expired pair, a missing file: kept. */
    char err[256];
    assert_true(certs_write_pem(path_crt, a.crt, NULL, err, sizeof err));
    assert_true(certs_write_pem(path_key, NULL, b.key, err, sizeof err));
    assert_int_equal(tls_ctx_server_reload(s, &why), TLS_CTX_RELOAD_KEPT);
    assert_string_equal(why, "the key does not match the certificate");
    struct pki exp = make_leaf(&ca, good_dns, 2, -7200, -60);
    write_pair(&exp);
    assert_int_equal(tls_ctx_server_reload(s, &why), TLS_CTX_RELOAD_KEPT);
    assert_string_equal(why, "the certificate has expired");
    unlink(path_key);
    assert_int_equal(tls_ctx_server_reload(s, &why), TLS_CTX_RELOAD_KEPT);
    assert_string_equal(why, "cannot read the key file");
    assert_non_null(strstr(log_text(), "the key does not match the certificate"));
    assert_int_equal(tls_ctx_server_generation(s), 1);

    /* The timer: a valid pair again is picked up by the watch. */
    struct event_base *base = event_base_new();
    setenv("COLDBREW_TLS_RELOAD_INTERVAL", "20ms", 1);
    assert_true(tls_ctx_server_watch(s, base, 0));
    unsetenv("COLDBREW_TLS_RELOAD_INTERVAL");
    write_pair(&a);
    for (int i = 0; i < 50 && tls_ctx_server_generation(s) == 1; i++)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(tls_ctx_server_generation(s), 2);
    pair_open(&k, s, c, "ns1", NULL, TLS_ALPN_HTTP11);
    pair_drive(&k);
    assert_int_equal(k.cli_rc, 1);
    assert_int_equal(peer_serial_low(k.cli), serial_low(a.crt));
    pair_close(&k);
    tls_ctx_server_free(s); /* frees the timer before the base */
    event_base_free(base);
    tls_ctx_client_free(c);
    log_set_fd(1);
    drop(&ca);
    drop(&a);
    drop(&b);
    drop(&exp);
}

static void test_trust_rebuild(void **state)
{
    (void)state;
    struct pki ca1 = make_ca(), ca2 = make_ca();
    struct pki leaf = make_leaf(&ca2, good_dns, 2, -60, 3600);
    struct tls_ctx_server *s = server_on(&leaf);
    struct tls_ctx_client *c = client_trusting(ca1.crt);
    const char *cwhy = NULL, *why = NULL;
    assert_int_equal(handshake(s, c, "ns1", &cwhy, NULL), -1);
    assert_string_equal(cwhy, "peer certificate not signed by a trusted CA");

    /* A connection started under the old store keeps it; new ones use the new one. */
    struct conn k;
    pair_open(&k, s, c, "ns1", NULL, TLS_ALPN_NONE);

    /* ca.crt (ca1) plus a trust bundle holding ca2 and some noise. */
    char *p1 = pem_of(ca1.crt), *p2 = pem_of(ca2.crt);
    char bundle[8192];
    snprintf(bundle, sizeof bundle, "# a comment\n%s", p2);
    struct tls_ctx_pem srcs[] = {
        {p1, strlen(p1), "secret ca.crt"},
        {"garbage", 7, "configmap junk"},
        {bundle, strlen(bundle), "configmap bundle"},
    };
    assert_int_equal(tls_ctx_client_set_trust(c, srcs, 3, &why), 2);
    assert_int_equal(handshake(s, c, "ns1", &cwhy, NULL), 1);
    pair_drive(&k);
    assert_int_equal(k.cli_rc, -1);
    pair_close(&k);

    /* Only garbage: refused, the previous store stays. */
    struct tls_ctx_pem junk = {"junk", 4, "junk"};
    assert_int_equal(tls_ctx_client_set_trust(c, &junk, 1, &why), 0);
    assert_string_equal(why, "no CA certificate in any trust source");
    assert_int_equal(handshake(s, c, "ns1", &cwhy, NULL), 1);

    /* Rotation away from ca2. */
    assert_int_equal(tls_ctx_client_set_trust(c, srcs, 1, &why), 1);
    assert_int_equal(handshake(s, c, "ns1", &cwhy, NULL), -1);
    free(p1);
    free(p2);
    tls_ctx_client_free(c);
    tls_ctx_server_free(s);
    drop(&ca1);
    drop(&ca2);
    drop(&leaf);
}

static int resumed(struct tls_ctx_server *s, struct tls_ctx_client *c, const char *ns,
                   const char *dest)
{
    struct conn k;
    pair_open(&k, s, c, ns, dest, TLS_ALPN_HTTP11);
    pair_drive(&k);
    assert_int_equal(k.cli_rc, 1);
    pair_settle(&k);
    int r = SSL_session_reused(k.cli);
    pair_close(&k);
    return r;
}

static void test_session_resumption(void **state)
{
    (void)state;
    struct pki ca = make_ca(), a = make_leaf(&ca, good_dns, 2, -60, 3600);
    struct pki b = make_leaf(&ca, good_dns, 2, -60, 3600);
    struct tls_ctx_server *s = server_on(&a);
    struct tls_ctx_client_opts o = {.session_slots = 8};
    const char *why = NULL;
    struct tls_ctx_client *c = tls_ctx_client_new(&o, &why);
    trust(c, ca.crt);

    assert_int_equal(resumed(s, c, "ns1", "10.0.0.1:8112"), 0);
    assert_int_equal(tls_ctx_client_cached_sessions(c), 1);
    assert_int_equal(resumed(s, c, "ns1", "10.0.0.1:8112"), 1);
    /* Another destination, or the same address for another namespace: full handshakes. */
    assert_int_equal(resumed(s, c, "ns1", "10.0.0.2:8112"), 0);
    /* No destination: never cached. */
    size_t before = tls_ctx_client_cached_sessions(c);
    struct conn k;
    pair_open(&k, s, c, "ns1", NULL, TLS_ALPN_HTTP11);
    pair_drive(&k);
    pair_settle(&k);
    pair_close(&k);
    assert_int_equal(tls_ctx_client_cached_sessions(c), before);

    /* Tickets survive a certificate rotation on the server (keys carried over). */
    write_pair(&b);
    assert_int_equal(tls_ctx_server_reload(s, &why), TLS_CTX_RELOAD_SWAPPED);
    assert_int_equal(resumed(s, c, "ns1", "10.0.0.1:8112"), 1);

    /* Ticket keys older than COLDBREW_TLS_TICKET_KEY_LIFETIME are replaced:
     * old tickets stop resuming, the certificate generation stays. */
    setenv("COLDBREW_TLS_TICKET_KEY_LIFETIME", "10ms", 1);
    struct tls_ctx_server *s2 = server_on(&b);
    unsetenv("COLDBREW_TLS_TICKET_KEY_LIFETIME");
    assert_int_equal(resumed(s2, c, "ns1", "10.0.0.3:8112"), 0);
    assert_int_equal(resumed(s2, c, "ns1", "10.0.0.3:8112"), 1);
    usleep(20000);
    assert_int_equal(tls_ctx_server_reload(s2, &why), TLS_CTX_RELOAD_UNCHANGED);
    assert_int_equal(tls_ctx_server_generation(s2), 0);
    assert_int_equal(resumed(s2, c, "ns1", "10.0.0.3:8112"), 0);
    assert_int_equal(resumed(s2, c, "ns1", "10.0.0.3:8112"), 1);
    tls_ctx_server_free(s2);

    /* One slot: a second destination replaces the first, and a log line says so once. */
    log_to_file();
    struct tls_ctx_client_opts one = {.session_slots = 1};
    struct tls_ctx_client *c1 = tls_ctx_client_new(&one, &why);
    trust(c1, ca.crt);
    assert_int_equal(resumed(s, c1, "ns1", "10.0.0.1:8112"), 0);
    assert_int_equal(resumed(s, c1, "ns1", "10.0.0.2:8112"), 0);
    assert_int_equal(resumed(s, c1, "ns1", "10.0.0.1:8112"), 0);
    assert_int_equal(resumed(s, c1, "ns1", "10.0.0.1:8112"), 1);
    assert_int_equal(tls_ctx_client_cached_sessions(c1), 1);
    assert_non_null(strstr(log_text(), "COLDBREW_TLS_SESSION_CACHE"));
    tls_ctx_client_free(c1);
    log_set_fd(1);

    /* A trust rebuild forgets every session. */
    trust(c, ca.crt);
    assert_int_equal(tls_ctx_client_cached_sessions(c), 0);
    assert_int_equal(resumed(s, c, "ns1", "10.0.0.1:8112"), 0);
    tls_ctx_client_free(c);
    tls_ctx_server_free(s);
    drop(&ca);
    drop(&a);
    drop(&b);
}

/* Handshakes abandoned halfway, on either side, and objects freed in any
 * order: ASan (make SANITIZE=1) reports any leak or use after free. */
static void test_half_handshake_frees(void **state)
{
    (void)state;
    struct pki ca = make_ca(), leaf = make_leaf(&ca, good_dns, 2, -60, 3600);
    struct tls_ctx_server *s = server_on(&leaf);
    struct tls_ctx_client *c = client_trusting(ca.crt);
    const char *why;
    for (int stop = 0; stop < 4; stop++) {
        struct conn k;
        pair_open(&k, s, c, "ns1", "10.0.0.9:8112", TLS_ALPN_H2);
        for (int i = 0; i < stop; i++) {
            tls_ctx_handshake(k.cli, &why);
            tls_ctx_handshake(k.srv, &why);
        }
        /* The peer goes away: the other side fails cleanly. */
        close(k.fds[1]);
        k.fds[1] = -1;
        int rc = 0;
        for (int i = 0; i < 4 && rc == 0; i++)
            rc = tls_ctx_handshake(k.srv, &why);
        assert_true(rc != 0 || stop > 2); /* after the server's last flight it may be done */
        SSL_free(k.srv);
        SSL_free(k.cli);
        close(k.fds[0]);
    }
    /* The client and server go away while SSLs made from them are alive. */
    struct conn k;
    pair_open(&k, s, c, "ns1", "10.0.0.9:8112", TLS_ALPN_H2);
    tls_ctx_handshake(k.cli, &why);
    tls_ctx_client_free(c);
    tls_ctx_server_free(s);
    pair_drive(&k);
    assert_int_equal(k.cli_rc, 1);
    pair_settle(&k); /* the ticket arrives after the client was freed: ignored */
    pair_close(&k);
    drop(&ca);
    drop(&leaf);
}

/* ---------------------------------------------------------------- a real client: curl */

struct curl_run {
    int rc;          /* server handshake result */
    const char *why; /* its reason on failure */
    enum tls_alpn alpn;
    char out[16384]; /* curl -v output */
};

/* Runs curl against one connection served by s on a loopback listener. */
static void curl_once(struct tls_ctx_server *s, const char *cafile, const char *extra,
                      struct curl_run *r)
{
    memset(r, 0, sizeof *r);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(ls, 4), 0);
    assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &alen), 0);
    int port = ntohs(a.sin_port);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "curl -sv --max-time 5 --cacert %s --resolve data-plane.knative.dev:%d:127.0.0.1 %s "
             "https://data-plane.knative.dev:%d/ 2>&1",
             cafile, port, extra, port);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    struct pollfd pfd = {ls, POLLIN, 0};
    assert_int_equal(poll(&pfd, 1, 5000), 1);
    int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    assert_true(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    SSL *ssl = tls_ctx_server_accept(s, fd);
    r->rc = tls_ctx_handshake(ssl, &r->why); /* blocking socket: runs to the end */
    if (r->rc == 1) {
        r->alpn = tls_ctx_alpn(ssl);
        char req[2048];
        int n = SSL_read(ssl, req, sizeof req - 1);
        if (n > 0 && r->alpn != TLS_ALPN_H2) {
            static const char resp[] =
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nserved-ok";
            assert_int_equal(SSL_write(ssl, resp, sizeof resp - 1), (int)sizeof resp - 1);
            SSL_shutdown(ssl);
        }
    }
    SSL_free(ssl);
    ERR_clear_error();
    close(fd);
    close(ls);
    size_t got = fread(r->out, 1, sizeof r->out - 1, p);
    r->out[got] = '\0';
    pclose(p);
}

static void test_curl(void **state)
{
    (void)state;
    if (system("command -v curl >/dev/null 2>&1") != 0) {
        skip(); /* curl is in the Makefile's TEST_PKGS */
    }
    char ca_dir[128], pod_dir[128], err[256], crt[160], key[160], cafile[160];
    snprintf(ca_dir, sizeof ca_dir, "%s/ca", dir);
    snprintf(pod_dir, sizeof pod_dir, "%s/pod", dir);
    assert_true(certs_ensure_pod(ca_dir, pod_dir, "default", NULL, err, sizeof err));
    snprintf(crt, sizeof crt, "%s/tls.crt", pod_dir);
    snprintf(key, sizeof key, "%s/tls.key", pod_dir);
    snprintf(cafile, sizeof cafile, "%s/ca.crt", pod_dir);
    struct tls_ctx_server_opts o = {.cert_file = crt, .key_file = key};
    const char *why = NULL;
    struct tls_ctx_server *s = tls_ctx_server_new(&o, &why);
    assert_non_null(s);
    static struct curl_run r;

    curl_once(s, cafile, "--http1.1", &r);
    assert_int_equal(r.rc, 1);
    assert_int_equal(r.alpn, TLS_ALPN_HTTP11);
    assert_non_null(strstr(r.out, "SSL connection using TLSv1.3"));
    assert_non_null(strstr(r.out, "served-ok"));

    curl_once(s, cafile, "--http2", &r);
    assert_int_equal(r.rc, 1);
    assert_int_equal(r.alpn, TLS_ALPN_H2);
    assert_non_null(strstr(r.out, "ALPN: server accepted h2"));

    curl_once(s, cafile, "--http1.1 --tlsv1.2 --tls-max 1.2", &r);
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.why, "TLS version refused"));
    assert_null(strstr(r.out, "served-ok"));

    tls_ctx_server_free(s);
}

/* What OpenSSL keeps per idle server-side TLS connection (handshake done,
 * tickets sent, no data in flight), with SSL_MODE_RELEASE_BUFFERS. */
static void test_idle_memory(void **state)
{
    (void)state;
    enum { N = 64 };
    struct pki ca = make_ca(), leaf = make_leaf(&ca, good_dns, 2, -60, 3600);
    struct tls_ctx_server *s = server_on(&leaf);
    struct tls_ctx_client *c = client_trusting(ca.crt);
    static struct conn k[N];
    for (int i = 0; i < N; i++) {
        pair_open(&k[i], s, c, "ns1", NULL, TLS_ALPN_H2);
        pair_drive(&k[i]);
        assert_int_equal(k[i].srv_rc, 1);
        pair_settle(&k[i]);
    }
    /* Also one request/response each, so buffers were used and released. */
    char buf[64];
    for (int i = 0; i < N; i++) {
        assert_int_equal(SSL_write(k[i].cli, "GET / HTTP/1.1\r\n\r\n", 18), 18);
        assert_int_equal(SSL_read(k[i].srv, buf, sizeof buf), 18);
        assert_int_equal(SSL_write(k[i].srv, "HTTP/1.1 200 OK\r\n\r\n", 19), 19);
        assert_int_equal(SSL_read(k[i].cli, buf, sizeof buf), 19);
    }
    long long with = live_bytes;
    for (int i = 0; i < N; i++) {
        SSL_free(k[i].cli);
        close(k[i].fds[1]);
    }
    long long servers_only = live_bytes;
    for (int i = 0; i < N; i++) {
        SSL_free(k[i].srv);
        close(k[i].fds[0]);
    }
    long long none = live_bytes;
    long long per_server = (servers_only - none) / N;
    long long per_client = (with - servers_only) / N;
    if (live_bytes == 0 && servers_only == 0) {
        printf("tls_ctx: memory per connection not measured under ASan\n");
    } else
        printf("tls_ctx: OpenSSL holds %lld bytes per idle server connection, %lld per idle client "
               "connection (RELEASE_BUFFERS, TLS 1.3, P-256)\n",
               per_server, per_client);
    /* OpenSSL 3.0's floor is about 11.8 KB: the SSL object itself is 7.6 KB,
     * the two AES-GCM contexts 1.9 KB, session 0.9 KB, CERT 0.5 KB, locks
     * 0.4 KB. A regression guard, not the 8 KiB target (not reachable with
     * this OpenSSL; see the README). */
    if (live_bytes > 0) /* the allocator was installed: the figure is real */
        assert_true(per_server <= 16384);
    tls_ctx_client_free(c);
    tls_ctx_server_free(s);
    drop(&ca);
    drop(&leaf);
}

int main(void)
{
    /* Before OpenSSL allocates anything; ASan builds keep their own allocator. */
#ifndef __SANITIZE_ADDRESS__
    CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free);
#endif
    log_init("test", NULL, NULL);
    log_set_level("warn");
    /* Writes to a closed socketpair end: EPIPE, not a signal (the binaries ignore SIGPIPE too). */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tls12_client_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alpn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verification, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trust_rebuild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_resumption, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_handshake_frees, setup, teardown),
        cmocka_unit_test_setup_teardown(test_curl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_memory, setup, teardown),
    };
    return cmocka_run_group_tests_name("tls_ctx", tests, NULL, NULL);
}
