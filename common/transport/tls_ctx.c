/* tls_ctx.c — see tls_ctx.h. */
#include "transport/tls_ctx.h"

#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/env.h"
#include "core/log.h"

/* ---------------------------------------------------------------- reasons
 * Static strings, compared by identity in tests and logged as they are. */
static const char R_VERSION[] = "TLS version refused (the peer and we share no protocol version)";
static const char R_ALPN[] = "no common application protocol (ALPN)";
static const char R_EXPIRED[] = "peer certificate expired";
static const char R_NOT_YET[] = "peer certificate not yet valid";
static const char R_UNTRUSTED[] = "peer certificate not signed by a trusted CA";
static const char R_NAME[] = "peer certificate does not carry the server name";
static const char R_SAN[] = "peer certificate lacks the SAN kn-user-<namespace>";
static const char R_REJECTED[] = "peer certificate rejected";
static const char R_PEER_REFUSED[] = "the peer refused our certificate";
static const char R_NO_PEER_CERT[] = "the peer sent no certificate (one is required)";
static const char R_CERT_REQUIRED[] = "the peer requires a client certificate";
static const char R_CLOSED[] = "connection closed during the TLS handshake";
static const char R_NOT_TLS[] = "the peer does not speak TLS (wrong version number)";
static const char R_FAILED[] = "TLS handshake failed";

/* Knative's minimum for both the 8112 listeners and the activator's client. */
#define DEFAULT_MIN_VERSION TLS1_3_VERSION

bool tls_ctx_parse_version(const char *s, int *version)
{
    if (s && !strcmp(s, "1.2")) {
        *version = TLS1_2_VERSION;
        return true;
    }
    if (s && !strcmp(s, "1.3")) {
        *version = TLS1_3_VERSION;
        return true;
    }
    return false;
}

/* Go's cipher-suite names (crypto/tls CipherSuites and the AES ones of
 * InsecureCipherSuites) and OpenSSL's; NULL: a TLS 1.3 suite, which Go
 * accepts and ignores. RC4 and 3DES suites are not offered by OpenSSL 3's
 * default security level and are refused as unknown. */
static const struct {
    const char *go, *ossl;
} go_suites[] = {
    {"TLS_AES_128_GCM_SHA256", NULL},
    {"TLS_AES_256_GCM_SHA384", NULL},
    {"TLS_CHACHA20_POLY1305_SHA256", NULL},
    {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"},
    {"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"},
    {"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"},
    {"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"},
    {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "ECDHE-ECDSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "ECDHE-ECDSA-AES128-SHA"},
    {"TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "ECDHE-ECDSA-AES256-SHA"},
    {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"},
    {"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA"},
    {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "ECDHE-ECDSA-AES128-SHA256"},
    {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256"},
    {"TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"},
    {"TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384"},
    {"TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"},
    {"TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA"},
    {"TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256"},
};

static const struct {
    const char *go, *ossl;
} go_curves[] = {
    {"X25519", "X25519"}, {"CurveP256", "P-256"}, {"P-256", "P-256"}, {"CurveP384", "P-384"},
    {"P-384", "P-384"},   {"CurveP521", "P-521"}, {"P-521", "P-521"},
};

/* Whether the ':' list `list` already holds `tok` (OpenSSL refuses a group twice). */
static bool has_token(const char *list, const char *tok)
{
    size_t n = strlen(tok);
    for (const char *p = list; (p = strstr(p, tok)) != NULL; p += n)
        if ((p == list || p[-1] == ':') && (p[n] == ':' || p[n] == '\0'))
            return true;
    return false;
}

/* Translates a comma list through `map` into a ':' list in out. */
static bool translate(const char *var, const char *list, const void *map, size_t n, size_t stride,
                      char *out, size_t outcap, char *err, size_t cap)
{
    out[0] = '\0';
    size_t used = 0;
    while (list && *list) {
        const char *end = strchr(list, ',');
        size_t len = end ? (size_t)(end - list) : strlen(list);
        const char *a = list, *b = list + len;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        list = end ? end + 1 : NULL;
        if (a == b)
            continue;
        const char *ossl = NULL;
        bool found = false;
        for (size_t i = 0; i < n && !found; i++) {
            const char *const *row = (const char *const *)((const char *)map + i * stride);
            if (strlen(row[0]) == (size_t)(b - a) && !memcmp(row[0], a, (size_t)(b - a))) {
                found = true;
                ossl = row[1];
            }
        }
        if (!found) {
            snprintf(err, cap, "%s: unsupported name \"%.*s\"", var, (int)(b - a), a);
            return false;
        }
        if (!ossl || has_token(out, ossl))
            continue;
        int w = snprintf(out + used, outcap - used, "%s%s", used ? ":" : "", ossl);
        if (w < 0 || (size_t)w >= outcap - used) {
            snprintf(err, cap, "%s: too many names", var);
            return false;
        }
        used += (size_t)w;
    }
    return true;
}

bool tls_ctx_opts_from_env(const char *prefix, struct tls_ctx_server_opts *o,
                           struct tls_ctx_env *store, char *err, size_t cap)
{
    static const char *const keys[] = {"TLS_MIN_VERSION", "TLS_MAX_VERSION", "TLS_CIPHER_SUITES",
                                       "TLS_CURVE_PREFERENCES"};
    char var[4][96];
    const char *val[4];
    for (int i = 0; i < 4; i++) {
        snprintf(var[i], sizeof var[i], "%s%s", prefix ? prefix : "", keys[i]);
        val[i] = getenv(var[i]);
        if (val[i] && !*val[i])
            val[i] = NULL; /* Go's os.Getenv: empty is unset */
    }
    for (int i = 0; i < 2; i++) {
        int v = 0;
        if (val[i] && !tls_ctx_parse_version(val[i], &v)) {
            snprintf(err, cap, "%s: \"%s\" is not 1.2 or 1.3", var[i], val[i]);
            return false;
        }
        if (i == 0)
            o->min_version = v;
        else
            o->max_version = v;
    }
    if (!translate(var[2], val[2], go_suites, sizeof go_suites / sizeof go_suites[0],
                   sizeof go_suites[0], store->ciphers, sizeof store->ciphers, err, cap))
        return false;
    if (val[3] && strstr(val[3], "MLKEM")) {
        snprintf(err, cap, "%s: X25519MLKEM768 needs OpenSSL 3.5; this build has %s", var[3],
                 OpenSSL_version(OPENSSL_VERSION));
        return false;
    }
    if (!translate(var[3], val[3], go_curves, sizeof go_curves / sizeof go_curves[0],
                   sizeof go_curves[0], store->groups, sizeof store->groups, err, cap))
        return false;
    o->ciphers = store->ciphers[0] ? store->ciphers : NULL;
    o->groups = store->groups[0] ? store->groups : NULL;
    return true;
}

/* A positive size from the environment; def (and a warning) when malformed. */
static size_t env_size(const char *name, size_t def)
{
    bool ok = true;
    long v = env_long(name, (long)def, &ok);
    if (!ok || v <= 0) {
        log_warn("tls: %s=%s is not a positive number; using %zu", name, getenv(name), def);
        return def;
    }
    return (size_t)v;
}

/* ---------------------------------------------------------------- per-SSL client state */

/* What a client SSL expects of its peer, attached as ex_data and freed with
 * the SSL (OpenSSL calls on_peer_free from SSL_free). */
struct peer_expect {
    char san[sizeof TLS_CTX_USER_SAN_PREFIX + 63]; /* kn-user-<namespace> */
    char key[160];                                 /* session cache key: ns/dest, "" = none */
    uint64_t key_hash;
    unsigned trust_gen; /* the trust store this SSL verified against */
    const char *reason; /* set by on_verify when the SAN is missing */
};

static int peer_idx = -1;   /* SSL ex_data: struct peer_expect */
static int client_idx = -1; /* SSL_CTX ex_data: struct tls_ctx_client (NULL once freed) */

static void on_peer_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                         void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

static bool ex_indexes(void)
{
    if (peer_idx < 0)
        peer_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, on_peer_free);
    if (client_idx < 0)
        client_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    return peer_idx >= 0 && client_idx >= 0;
}

/* ---------------------------------------------------------------- handshake */

static const char *verify_reason(long v)
{
    switch (v) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return R_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return R_NOT_YET;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_CERT_UNTRUSTED:
        return R_UNTRUSTED;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return R_NAME;
    default:
        return R_REJECTED;
    }
}

static const char *classify(SSL *ssl, int err)
{
    struct peer_expect *p = peer_idx >= 0 ? SSL_get_ex_data(ssl, peer_idx) : NULL;
    if (p && p->reason)
        return p->reason;
    /* A client checks the server's certificate; a server asking for client
     * certificates checks the client's. */
    long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK)
        return verify_reason(v);
    unsigned long e;
    const char *why = NULL;
    while ((e = ERR_get_error()) != 0) {
        if (why || ERR_GET_LIB(e) != ERR_LIB_SSL)
            continue;
        switch (ERR_GET_REASON(e)) {
        case SSL_R_UNSUPPORTED_PROTOCOL:
        case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
        case SSL_R_NO_PROTOCOLS_AVAILABLE:
            why = R_VERSION;
            break;
        case SSL_R_WRONG_VERSION_NUMBER: /* a record header that is not TLS at all */
        case SSL_R_HTTP_REQUEST:
            why = R_NOT_TLS;
            break;
        case SSL_R_NO_APPLICATION_PROTOCOL:
        case SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL:
            why = R_ALPN;
            break;
        case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
        case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
            why = R_PEER_REFUSED;
            break;
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
            why = R_NO_PEER_CERT;
            break;
        case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
            why = R_CERT_REQUIRED;
            break;
        case SSL_R_UNEXPECTED_EOF_WHILE_READING:
            why = R_CLOSED;
            break;
        default:
            break;
        }
    }
    if (why)
        return why;
    if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN)
        return R_CLOSED;
    return R_FAILED;
}

int tls_ctx_handshake(SSL *ssl, const char **why)
{
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 1;
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    const char *w = classify(ssl, e);
    ERR_clear_error();
    if (why)
        *why = w;
    return -1;
}

enum tls_alpn tls_ctx_alpn(const SSL *ssl)
{
    const unsigned char *p;
    unsigned len;
    SSL_get0_alpn_selected(ssl, &p, &len);
    if (len == 2 && !memcmp(p, "h2", 2))
        return TLS_ALPN_H2;
    if (len == 8 && !memcmp(p, "http/1.1", 8))
        return TLS_ALPN_HTTP11;
    return TLS_ALPN_NONE;
}

/* ---------------------------------------------------------------- files */

/* Never prompt on a terminal for an encrypted key: refuse it. */
static int no_passphrase(char *buf, int size, int rw, void *u)
{
    (void)buf, (void)size, (void)rw, (void)u;
    return -1;
}

/* Reads a whole file of at most `max` bytes. NULL with *why on failure. */
static char *read_file(const char *path, size_t max, size_t *len, const char **why,
                       const char *cannot_read, const char *too_large)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *why = cannot_read;
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        *why = cannot_read;
        return NULL;
    }
    if ((size_t)st.st_size > max) {
        close(fd);
        *why = too_large;
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t n = 0;
    while (buf && n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (!buf || n != (size_t)st.st_size) {
        free(buf);
        *why = cannot_read;
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* ---------------------------------------------------------------- server */

struct tls_ctx_server {
    SSL_CTX *ctx; /* current; SSLs made from older ones hold their own reference */
    char *cert_file, *key_file, *ciphers, *groups, *client_ca_file;
    char *pem[2]; /* the pair as bytes (cert_pem/key_pem), else NULL: the files */
    size_t pem_len[2];
    enum tls_client_auth client_auth;
    int min_version, max_version;
    size_t max_pem_bytes;
    unsigned char hash[32];     /* SHA-256 of the bytes behind ctx */
    unsigned char bad_hash[32]; /* the last refused content, logged once */
    const char *bad_why;
    unsigned generation;
    double keys_born;          /* when ctx's ticket keys were made (monotonic seconds) */
    double ticket_key_seconds; /* COLDBREW_TLS_TICKET_KEY_LIFETIME */
    struct event *timer;
};

/* Server preference: h2 when the client offers it, else http/1.1. A client
 * offering neither gets a fatal no_application_protocol alert, as Go's
 * server does (crypto/tls negotiateALPN); no ALPN extension at all means
 * HTTP/1.1 and this is never called. */
static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned inlen, void *arg)
{
    (void)ssl, (void)arg;
    const unsigned char *h1 = NULL;
    for (unsigned i = 0; i < inlen;) {
        unsigned l = in[i];
        if (l == 0 || i + 1 + l > inlen)
            break;
        const unsigned char *p = in + i + 1;
        if (l == 2 && !memcmp(p, "h2", 2)) {
            *out = p;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        if (l == 8 && !memcmp(p, "http/1.1", 8))
            h1 = p;
        i += 1 + l;
    }
    if (h1) {
        *out = h1;
        *outlen = 8;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

bool tls_ctx_parse_client_auth(const char *s, enum tls_client_auth *out)
{
    char v[16];
    size_t n = 0;
    while (s && isspace((unsigned char)*s))
        s++;
    for (; s && *s && n < sizeof v - 1; s++)
        v[n++] = (char)tolower((unsigned char)*s);
    while (n && isspace((unsigned char)v[n - 1]))
        n--;
    v[n] = '\0';
    if (s && *s)
        return false; /* longer than any valid value */
    if (!strcmp(v, "") || !strcmp(v, "none"))
        *out = TLS_CLIENT_AUTH_NONE;
    else if (!strcmp(v, "optional"))
        *out = TLS_CLIENT_AUTH_OPTIONAL;
    else if (!strcmp(v, "require"))
        *out = TLS_CLIENT_AUTH_REQUIRE;
    else
        return false;
    return true;
}

/* One SHA-256 over every file, each prefixed by its length. */
static void hash_files(char *const *data, const size_t *len, int n, unsigned char out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned w = 32;
    bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    for (int i = 0; ok && i < n; i++) {
        uint64_t l = len[i];
        ok = EVP_DigestUpdate(md, &l, sizeof l) && EVP_DigestUpdate(md, data[i], len[i]);
    }
    if (!ok || !EVP_DigestFinal_ex(md, out, &w))
        memset(out, 0xff, 32); /* never equal to a real digest in practice */
    EVP_MD_CTX_free(md);
}

static SSL_CTX *server_ctx_new(const struct tls_ctx_server *s, const char **why)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        *why = "out of memory";
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, s->min_version) ||
        !SSL_CTX_set_max_proto_version(ctx, s->max_version)) {
        *why = "unsupported TLS version setting";
        goto fail;
    }
    if (s->ciphers && !SSL_CTX_set_cipher_list(ctx, s->ciphers)) {
        *why = "no usable cipher in the cipher list";
        goto fail;
    }
    if (s->groups && !SSL_CTX_set1_groups_list(ctx, s->groups)) {
        *why = "unknown curve in the curve list";
        goto fail;
    }
    /* Idle connections hold no 16 KiB record buffers. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Resumption by stateless tickets only: no per-client state on the
     * server, so memory does not grow with the number of clients. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, NULL);
    /* Resuming a session whose client certificate was verified needs one. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"coldbrew", 8);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}

/* Client-certificate verification from the CA file's bytes. */
static bool server_client_auth(const struct tls_ctx_server *s, SSL_CTX *ctx, const char *ca,
                               size_t calen, const char **why)
{
    BIO *b = BIO_new_mem_buf(ca, (int)calen);
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    X509_STORE *st = SSL_CTX_get_cert_store(ctx);
    int n = 0;
    X509 *x;
    while (b && names && (x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL)) != NULL) {
        if (X509_STORE_add_cert(st, x) == 1) {
            X509_NAME *nm = X509_NAME_dup(X509_get_subject_name(x));
            if (nm && !sk_X509_NAME_push(names, nm))
                X509_NAME_free(nm);
            n++;
        }
        X509_free(x);
    }
    BIO_free(b);
    if (!n) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        *why = "the client CA file holds no PEM certificate";
        return false;
    }
    /* The CertificateRequest names the CAs, as Go's ClientCAs does. */
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(
        ctx,
        SSL_VERIFY_PEER |
            (s->client_auth == TLS_CLIENT_AUTH_REQUIRE ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        NULL);
    return true;
}

/* A new context from the files' bytes, or NULL with *why. */
static SSL_CTX *server_ctx_build(const struct tls_ctx_server *s, const char *cert, size_t clen,
                                 const char *key, size_t klen, const char *ca, size_t calen,
                                 const char **why)
{
    SSL_CTX *ctx = NULL;
    X509 *leaf = NULL;
    EVP_PKEY *pk = NULL;
    BIO *cb = BIO_new_mem_buf(cert, (int)clen);
    BIO *kb = BIO_new_mem_buf(key, (int)klen);
    if (!cb || !kb) {
        *why = "out of memory";
        goto done;
    }
    leaf = PEM_read_bio_X509(cb, NULL, no_passphrase, NULL);
    if (!leaf) {
        *why = "the certificate file holds no PEM certificate";
        goto done;
    }
    /* An expired certificate would only make every client fail: keep the
     * one we have. A not-yet-valid one is accepted (Knative issues with
     * NotBefore = now, and clocks across nodes differ by a little). */
    if (X509_cmp_current_time(X509_get0_notAfter(leaf)) <= 0) {
        *why = "the certificate has expired";
        goto done;
    }
    pk = PEM_read_bio_PrivateKey(kb, NULL, no_passphrase, NULL);
    if (!pk) {
        *why = "the key file holds no (unencrypted) PEM private key";
        goto done;
    }
    if (X509_check_private_key(leaf, pk) != 1) {
        *why = "the key does not match the certificate";
        goto done;
    }
    ctx = server_ctx_new(s, why);
    if (!ctx)
        goto done;
    if (SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, pk) != 1) {
        *why = "OpenSSL refused the certificate or key (too weak?)";
        goto fail;
    }
    /* The rest of tls.crt is the chain sent after the leaf. */
    X509 *x;
    while ((x = PEM_read_bio_X509(cb, NULL, no_passphrase, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
            X509_free(x);
            *why = "OpenSSL refused a chain certificate";
            goto fail;
        }
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        *why = "the key does not match the certificate";
        goto fail;
    }
    if (s->client_auth != TLS_CLIENT_AUTH_NONE && !server_client_auth(s, ctx, ca, calen, why))
        goto fail;
    goto done;
fail:
    SSL_CTX_free(ctx);
    ctx = NULL;
done:
    ERR_clear_error();
    X509_free(leaf);
    EVP_PKEY_free(pk);
    BIO_free(cb);
    BIO_free(kb);
    return ctx;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Reads the files; on success the bytes' hash in `hash` and a new context
 * when the hash differs from the current one (*ctx NULL when unchanged). */
static bool server_load(struct tls_ctx_server *s, unsigned char hash[32], SSL_CTX **ctx, bool force,
                        const char **why)
{
    static const char *const cannot[] = {"cannot read the certificate file",
                                         "cannot read the key file",
                                         "cannot read the client CA file"};
    static const char *const large[] = {
        "the certificate file is larger than COLDBREW_TLS_MAX_PEM_BYTES",
        "the key file is larger than COLDBREW_TLS_MAX_PEM_BYTES",
        "the client CA file is larger than COLDBREW_TLS_MAX_PEM_BYTES"};
    const char *path[3] = {s->cert_file, s->key_file, s->client_ca_file};
    int n = s->client_auth != TLS_CLIENT_AUTH_NONE ? 3 : 2;
    char *data[3] = {NULL, NULL, NULL};
    size_t len[3] = {0, 0, 0};
    bool ok = true;
    *ctx = NULL;
    for (int i = 0; i < n && ok; i++) {
        if (i < 2 && s->pem[i]) {
            data[i] = malloc(s->pem_len[i] + 1);
            if (data[i]) {
                memcpy(data[i], s->pem[i], s->pem_len[i]);
                data[i][s->pem_len[i]] = 0;
                len[i] = s->pem_len[i];
            }
            ok = data[i] != NULL;
            if (!ok)
                *why = "out of memory";
            continue;
        }
        data[i] = path[i] ? read_file(path[i], s->max_pem_bytes, &len[i], why, cannot[i], large[i])
                          : NULL;
        if (!data[i] && !path[i])
            *why = "no client CA file for client certificates";
        ok = data[i] != NULL;
    }
    if (ok) {
        hash_files(data, len, n, hash);
        if (force || !s->ctx || memcmp(hash, s->hash, 32) != 0) {
            *ctx = server_ctx_build(s, data[0], len[0], data[1], len[1], data[2], len[2], why);
            ok = *ctx != NULL;
        }
    }
    if (data[1])
        OPENSSL_cleanse(data[1], len[1]);
    for (int i = 0; i < 3; i++)
        free(data[i]);
    return ok;
}

struct tls_ctx_server *tls_ctx_server_new(const struct tls_ctx_server_opts *o, const char **why)
{
    const char *w = NULL;
    struct tls_ctx_server *s = calloc(1, sizeof *s);
    if (!s || !ex_indexes()) {
        free(s);
        if (why)
            *why = "out of memory";
        return NULL;
    }
    s->cert_file = strdup(o && o->cert_file ? o->cert_file : TLS_CTX_DEFAULT_CERT_FILE);
    s->key_file = strdup(o && o->key_file ? o->key_file : TLS_CTX_DEFAULT_KEY_FILE);
    s->ciphers = dup_or_null(o ? o->ciphers : NULL);
    s->groups = dup_or_null(o ? o->groups : NULL);
    s->client_ca_file = dup_or_null(o ? o->client_ca_file : NULL);
    s->client_auth = o ? o->client_auth : TLS_CLIENT_AUTH_NONE;
    s->min_version = o && o->min_version ? o->min_version : DEFAULT_MIN_VERSION;
    s->max_version = o ? o->max_version : 0;
    s->max_pem_bytes = o && o->max_pem_bytes
                           ? o->max_pem_bytes
                           : env_size("COLDBREW_TLS_MAX_PEM_BYTES", TLS_CTX_MAX_PEM_BYTES);
    if (o && o->cert_pem && o->key_pem) {
        s->pem[0] = malloc(o->cert_pem_len + 1);
        s->pem[1] = malloc(o->key_pem_len + 1);
        if (s->pem[0] && s->pem[1]) {
            memcpy(s->pem[0], o->cert_pem, o->cert_pem_len);
            memcpy(s->pem[1], o->key_pem, o->key_pem_len);
            s->pem_len[0] = o->cert_pem_len;
            s->pem_len[1] = o->key_pem_len;
        }
    }
    unsigned char hash[32];
    SSL_CTX *ctx = NULL;
    if (!s->cert_file || !s->key_file || !server_load(s, hash, &ctx, false, &w)) {
        if (!w)
            w = "out of memory";
        log_error("tls: cannot serve TLS with %s and %s: %s", s->cert_file ? s->cert_file : "?",
                  s->key_file ? s->key_file : "?", w);
        tls_ctx_server_free(s);
        if (why)
            *why = w;
        return NULL;
    }
    s->ctx = ctx;
    memcpy(s->hash, hash, 32);
    s->keys_born = mono_now();
    bool ok = true;
    s->ticket_key_seconds = env_duration("COLDBREW_TLS_TICKET_KEY_LIFETIME", 86400, &ok);
    if (!ok || s->ticket_key_seconds <= 0) {
        log_warn("tls: COLDBREW_TLS_TICKET_KEY_LIFETIME=%s is not a positive duration; using 24h",
                 getenv("COLDBREW_TLS_TICKET_KEY_LIFETIME"));
        s->ticket_key_seconds = 86400;
    }
    log_info("tls: serving the certificate from %s (minimum TLS %s)", s->cert_file,
             s->min_version == TLS1_3_VERSION ? "1.3" : "1.2");
    return s;
}

SSL *tls_ctx_server_accept(struct tls_ctx_server *s, int fd)
{
    SSL *ssl = SSL_new(s->ctx);
    if (!ssl)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

SSL_CTX *tls_ctx_server_ctx(struct tls_ctx_server *s)
{
    return s->ctx;
}

unsigned tls_ctx_server_generation(const struct tls_ctx_server *s)
{
    return s->generation;
}

enum tls_ctx_reload tls_ctx_server_set_pem(struct tls_ctx_server *s, const char *crt, size_t clen,
                                           const char *key, size_t klen, const char **why)
{
    const char *src[2] = {crt, key};
    size_t len[2] = {clen, klen};
    for (int i = 0; i < 2; i++) {
        char *b = malloc(len[i] + 1);
        if (!b) {
            if (why)
                *why = "out of memory";
            return TLS_CTX_RELOAD_KEPT;
        }
        memcpy(b, src[i], len[i]);
        if (s->pem[i]) {
            OPENSSL_cleanse(s->pem[i], s->pem_len[i]);
            free(s->pem[i]);
        }
        s->pem[i] = b;
        s->pem_len[i] = len[i];
    }
    return tls_ctx_server_reload(s, why);
}

enum tls_ctx_reload tls_ctx_server_reload(struct tls_ctx_server *s, const char **why)
{
    unsigned char hash[32];
    SSL_CTX *ctx = NULL;
    const char *w = NULL;
    double now = mono_now();
    /* Ticket keys are carried across certificate rotations but not kept
     * forever: like Go's crypto/tls, a new key every day, so a leaked key
     * opens at most a day of tickets. */
    bool rotate = now - s->keys_born >= s->ticket_key_seconds;
    if (!server_load(s, hash, &ctx, rotate, &w)) {
        /* Log once per distinct refused content (and per read failure reason). */
        bool read_failed = !strncmp(w, "cannot read", 11) || strstr(w, "larger than") ||
                           !strncmp(w, "no client CA", 12);
        if (read_failed)
            memset(hash, 0, 32);
        if (w != s->bad_why || memcmp(hash, s->bad_hash, 32) != 0)
            log_warn("tls: keeping the current certificate, the new %s / %s is refused: %s",
                     s->cert_file, s->key_file, w);
        s->bad_why = w;
        memcpy(s->bad_hash, hash, 32);
        if (why)
            *why = w;
        return TLS_CTX_RELOAD_KEPT;
    }
    if (!ctx)
        return TLS_CTX_RELOAD_UNCHANGED;
    bool changed = memcmp(hash, s->hash, 32) != 0;
    if (rotate) {
        s->keys_born = now; /* the new context made its own keys */
    } else {
        /* Tickets issued under the old context keep resuming. */
        unsigned char keys[80];
        if (SSL_CTX_get_tlsext_ticket_keys(s->ctx, keys, sizeof keys) == 1)
            SSL_CTX_set_tlsext_ticket_keys(ctx, keys, sizeof keys);
        OPENSSL_cleanse(keys, sizeof keys);
        ERR_clear_error();
    }
    SSL_CTX_free(s->ctx); /* connections made from it hold their own reference */
    s->ctx = ctx;
    memcpy(s->hash, hash, 32);
    s->bad_why = NULL;
    if (!changed) {
        log_info("tls: new session ticket keys for new connections");
        return TLS_CTX_RELOAD_UNCHANGED;
    }
    s->generation++;
    log_info("tls: new certificate from %s in use for new connections (generation %u)",
             s->cert_file, s->generation);
    return TLS_CTX_RELOAD_SWAPPED;
}

static void on_reload_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    tls_ctx_server_reload(arg, NULL);
}

bool tls_ctx_server_watch(struct tls_ctx_server *s, struct event_base *base, unsigned interval_ms)
{
    if (!interval_ms) {
        bool ok = true;
        double sec =
            env_duration("COLDBREW_TLS_RELOAD_INTERVAL", TLS_CTX_RELOAD_INTERVAL_MS / 1e3, &ok);
        if (!ok || sec < 0.01 || sec > 86400) {
            log_warn("tls: COLDBREW_TLS_RELOAD_INTERVAL=%s is not a duration from 10ms to 24h; "
                     "checking every minute",
                     getenv("COLDBREW_TLS_RELOAD_INTERVAL"));
            sec = TLS_CTX_RELOAD_INTERVAL_MS / 1e3;
        }
        interval_ms = (unsigned)(sec * 1000);
    }
    if (s->timer)
        event_free(s->timer);
    s->timer = event_new(base, -1, EV_PERSIST, on_reload_tick, s);
    if (!s->timer)
        return false;
    struct timeval tv = {interval_ms / 1000, (interval_ms % 1000) * 1000};
    return event_add(s->timer, &tv) == 0;
}

void tls_ctx_server_free(struct tls_ctx_server *s)
{
    if (!s)
        return;
    if (s->timer)
        event_free(s->timer);
    SSL_CTX_free(s->ctx);
    for (int i = 0; i < 2; i++)
        if (s->pem[i]) {
            OPENSSL_cleanse(s->pem[i], s->pem_len[i]);
            free(s->pem[i]);
        }
    free(s->cert_file);
    free(s->key_file);
    free(s->ciphers);
    free(s->groups);
    free(s->client_ca_file);
    free(s);
}

struct tls_ctx_server *tls_ctx_metrics_from_env(struct event_base *base, bool *configured,
                                                char *err, size_t cap)
{
    const char *pc = getenv("METRICS_PROMETHEUS_TLS_CERT");
    const char *pk = getenv("METRICS_PROMETHEUS_TLS_KEY");
    *configured = pc && *pc && pk && *pk;
    if (!*configured)
        return NULL;
    static struct tls_ctx_env store;
    struct tls_ctx_server_opts o = {.cert_file = pc, .key_file = pk};
    if (!tls_ctx_opts_from_env("METRICS_PROMETHEUS_", &o, &store, err, cap))
        return NULL;
    const char *ca = getenv("METRICS_PROMETHEUS_TLS_CLIENT_AUTH");
    if (!tls_ctx_parse_client_auth(ca ? ca : "", &o.client_auth)) {
        snprintf(err, cap, "METRICS_PROMETHEUS_TLS_CLIENT_AUTH=%s: want none, optional or require",
                 ca);
        return NULL;
    }
    const char *caf = getenv("METRICS_PROMETHEUS_TLS_CLIENT_CA_FILE");
    o.client_ca_file = caf && *caf ? caf : NULL;
    const char *why = NULL;
    struct tls_ctx_server *s = tls_ctx_server_new(&o, &why);
    if (!s) {
        snprintf(err, cap, "METRICS_PROMETHEUS_TLS_CERT %s: %s", pc, why ? why : "refused");
        return NULL;
    }
    tls_ctx_server_watch(s, base, 0);
    return s;
}

/* ---------------------------------------------------------------- client */

struct session_slot {
    uint64_t hash; /* of key; 0 = empty */
    char key[sizeof((struct peer_expect *)0)->key];
    SSL_SESSION *sess;
};

struct tls_ctx_client {
    SSL_CTX *ctx;
    X509_STORE *store; /* current trust; each SSL holds its own reference */
    unsigned trust_gen;
    char *server_name;
    struct session_slot *slots;
    size_t nslots, cached;
    bool evict_logged;
};

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h ? h : 1;
}

static bool has_dns_san(X509 *x, const char *name)
{
    size_t nlen = strlen(name);
    bool found = false;
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !found; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS)
            continue;
        const ASN1_IA5STRING *d = g->d.dNSName;
        /* Exact, as Knative's verifySAN compares DNSNames with ==. */
        found =
            (size_t)ASN1_STRING_length(d) == nlen && !memcmp(ASN1_STRING_get0_data(d), name, nlen);
    }
    GENERAL_NAMES_free(gens);
    return found;
}

/* After OpenSSL's own checks (chain, validity, server name) pass for the
 * leaf, require kn-user-<namespace>. */
static int on_verify(int ok, X509_STORE_CTX *xs)
{
    if (!ok || X509_STORE_CTX_get_error_depth(xs) != 0)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct peer_expect *p = ssl ? SSL_get_ex_data(ssl, peer_idx) : NULL;
    if (!p)
        return ok;
    if (!has_dns_san(X509_STORE_CTX_get_current_cert(xs), p->san)) {
        p->reason = R_SAN;
        /* A name mismatch: OpenSSL sends the bad_certificate alert for it. */
        X509_STORE_CTX_set_error(xs, X509_V_ERR_HOSTNAME_MISMATCH);
        return 0;
    }
    return 1;
}

static void slot_clear(struct tls_ctx_client *c, struct session_slot *sl)
{
    if (sl->sess) {
        SSL_SESSION_free(sl->sess);
        c->cached--;
    }
    sl->sess = NULL;
    sl->hash = 0;
    sl->key[0] = '\0';
}

/* TLS 1.3 tickets arrive after the handshake: keep the newest per key. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_ctx_client *c = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), client_idx);
    struct peer_expect *p = SSL_get_ex_data(ssl, peer_idx);
    if (!c || !p || !p->key[0] || p->trust_gen != c->trust_gen || !SSL_SESSION_is_resumable(sess))
        return 0;
    /* A copy: OpenSSL marks the SSL's own session not resumable when the
     * SSL is freed without a close_notify (ssl_clear_bad_session), which is
     * how idle pooled connections usually end. */
    SSL_SESSION *copy = SSL_SESSION_dup(sess);
    if (!copy)
        return 0;
    struct session_slot *sl = &c->slots[p->key_hash % c->nslots];
    if (sl->sess && sl->hash != p->key_hash && !c->evict_logged) {
        /* Two destinations share a slot: one of them will do full handshakes. */
        log_warn("tls: the session cache (%zu slots, COLDBREW_TLS_SESSION_CACHE) replaced another "
                 "destination's session; logged once",
                 c->nslots);
        c->evict_logged = true;
    }
    slot_clear(c, sl);
    sl->hash = p->key_hash;
    memcpy(sl->key, p->key, sizeof sl->key);
    sl->sess = copy;
    c->cached++;
    return 0; /* OpenSSL keeps (and drops) its own reference */
}

struct tls_ctx_client *tls_ctx_client_new(const struct tls_ctx_client_opts *o, const char **why)
{
    const char *w = "out of memory";
    struct tls_ctx_client *c = calloc(1, sizeof *c);
    if (!c || !ex_indexes())
        goto fail;
    c->nslots = o && o->session_slots
                    ? o->session_slots
                    : env_size("COLDBREW_TLS_SESSION_CACHE", TLS_CTX_SESSION_CACHE_SLOTS);
    c->slots = calloc(c->nslots, sizeof *c->slots);
    c->server_name = strdup(o && o->server_name ? o->server_name : TLS_CTX_DATA_PLANE_NAME);
    c->store = X509_STORE_new();
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->slots || !c->server_name || !c->store || !c->ctx)
        goto fail;
    int min = o && o->min_version ? o->min_version : DEFAULT_MIN_VERSION;
    if (!SSL_CTX_set_min_proto_version(c->ctx, min) ||
        !SSL_CTX_set_max_proto_version(c->ctx, o ? o->max_version : 0)) {
        w = "unsupported TLS version setting";
        goto fail;
    }
    SSL_CTX_set_mode(c->ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, on_verify);
    /* Go's RootCAs treat every pooled certificate as an anchor, even an
     * intermediate; OpenSSL needs PARTIAL_CHAIN for that. */
    X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(c->ctx), X509_V_FLAG_PARTIAL_CHAIN);
    /* Go matches names without the CN fallback and with whole-label wildcards only. */
    X509_VERIFY_PARAM_set_hostflags(SSL_CTX_get0_param(c->ctx),
                                    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
                                        X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
    SSL_CTX_set_session_cache_mode(c->ctx,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c->ctx, on_new_session);
    SSL_CTX_set_ex_data(c->ctx, client_idx, c);
    return c;
fail:
    ERR_clear_error();
    tls_ctx_client_free(c);
    if (why)
        *why = w;
    return NULL;
}

void tls_ctx_client_flush_sessions(struct tls_ctx_client *c)
{
    for (size_t i = 0; i < c->nslots; i++)
        if (c->slots[i].sess)
            slot_clear(c, &c->slots[i]);
}

size_t tls_ctx_client_cached_sessions(const struct tls_ctx_client *c)
{
    return c->cached;
}

static int add_pem(X509_STORE *st, const struct tls_ctx_pem *src)
{
    BIO *b = BIO_new_mem_buf(src->data, (int)src->len);
    int n = 0;
    X509 *x;
    /* PEM_read skips blocks that are not certificates, like Go's AppendCertsFromPEM. */
    while (b && (x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL)) != NULL) {
        if (X509_STORE_add_cert(st, x) == 1)
            n++;
        X509_free(x);
    }
    BIO_free(b);
    ERR_clear_error();
    return n;
}

int tls_ctx_client_set_trust(struct tls_ctx_client *c, const struct tls_ctx_pem *srcs, size_t n,
                             const char **why)
{
    X509_STORE *st = X509_STORE_new();
    if (!st) {
        if (why)
            *why = "out of memory";
        return 0;
    }
    X509_STORE_set_flags(st, X509_V_FLAG_PARTIAL_CHAIN);
    int total = 0;
    for (size_t i = 0; i < n; i++) {
        int k = srcs[i].data && srcs[i].len <= INT32_MAX ? add_pem(st, &srcs[i]) : 0;
        if (!k)
            log_warn("tls: no CA certificate in %s; skipped",
                     srcs[i].origin ? srcs[i].origin : "a trust source");
        total += k;
    }
    if (!total) {
        X509_STORE_free(st);
        log_warn("tls: keeping the current trust store: the new sources hold no CA certificate");
        if (why)
            *why = "no CA certificate in any trust source";
        return 0;
    }
    X509_STORE_free(c->store); /* SSLs still verifying hold their own reference */
    c->store = st;
    c->trust_gen++;
    tls_ctx_client_flush_sessions(c);
    log_info("tls: trust store rebuilt with %d CA certificates from %zu sources", total, n);
    return total;
}

int tls_ctx_client_set_trust_files(struct tls_ctx_client *c, const char *const *files, size_t n,
                                   const char **why)
{
    struct tls_ctx_pem *srcs = calloc(n ? n : 1, sizeof *srcs);
    if (!srcs) {
        if (why)
            *why = "out of memory";
        return 0;
    }
    size_t max = env_size("COLDBREW_TLS_MAX_PEM_BYTES", TLS_CTX_MAX_PEM_BYTES);
    for (size_t i = 0; i < n; i++) {
        const char *w = NULL;
        srcs[i].data = read_file(files[i], max, &srcs[i].len, &w, "cannot read",
                                 "larger than COLDBREW_TLS_MAX_PEM_BYTES");
        srcs[i].origin = files[i];
        if (!srcs[i].data)
            log_warn("tls: trust file %s: %s", files[i], w);
    }
    int r = tls_ctx_client_set_trust(c, srcs, n, why);
    for (size_t i = 0; i < n; i++)
        free((char *)srcs[i].data);
    free(srcs);
    return r;
}

static bool session_usable(SSL_SESSION *sess)
{
    time_t now = time(NULL);
    if (SSL_SESSION_get_time(sess) + SSL_SESSION_get_timeout(sess) <= now)
        return false;
    /* A resumed handshake skips certificate verification: never resume
     * with a peer certificate that has expired since. */
    X509 *peer = SSL_SESSION_get0_peer(sess);
    return peer && X509_cmp_current_time(X509_get0_notAfter(peer)) > 0;
}

SSL *tls_ctx_client_connect(struct tls_ctx_client *c, int fd, const char *ns, const char *dest,
                            enum tls_alpn alpn)
{
    size_t nslen = ns ? strlen(ns) : 0;
    if (nslen == 0 || nslen > 63)
        return NULL;
    struct peer_expect *p = calloc(1, sizeof *p);
    SSL *ssl = SSL_new(c->ctx);
    if (!p || !ssl || SSL_set_ex_data(ssl, peer_idx, p) != 1) {
        free(p);
        SSL_free(ssl);
        return NULL;
    }
    /* Knative's DataPlaneUserSAN lower-cases the namespace. */
    memcpy(p->san, TLS_CTX_USER_SAN_PREFIX, sizeof TLS_CTX_USER_SAN_PREFIX - 1);
    for (size_t i = 0; i < nslen; i++)
        p->san[sizeof TLS_CTX_USER_SAN_PREFIX - 1 + i] = (char)tolower((unsigned char)ns[i]);
    p->trust_gen = c->trust_gen;
    if (dest && (size_t)snprintf(p->key, sizeof p->key, "%s/%s", ns, dest) < sizeof p->key)
        p->key_hash = fnv1a(p->key);
    else
        p->key[0] = '\0';

    static const unsigned char h2[] = "\x02h2", h1[] = "\x08http/1.1";
    int bad = SSL_set_fd(ssl, fd) != 1 || SSL_set1_verify_cert_store(ssl, c->store) != 1 ||
              SSL_set_tlsext_host_name(ssl, c->server_name) != 1 ||
              X509_VERIFY_PARAM_set1_host(SSL_get0_param(ssl), c->server_name, 0) != 1;
    if (!bad && alpn == TLS_ALPN_H2)
        bad = SSL_set_alpn_protos(ssl, h2, sizeof h2 - 1) != 0;
    else if (!bad && alpn == TLS_ALPN_HTTP11)
        bad = SSL_set_alpn_protos(ssl, h1, sizeof h1 - 1) != 0;
    if (bad) {
        ERR_clear_error();
        SSL_free(ssl);
        return NULL;
    }
    if (p->key[0]) {
        struct session_slot *sl = &c->slots[p->key_hash % c->nslots];
        if (sl->sess && sl->hash == p->key_hash && !strcmp(sl->key, p->key)) {
            if (session_usable(sl->sess))
                SSL_set_session(ssl, sl->sess);
            else
                slot_clear(c, sl);
        }
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

void tls_ctx_client_free(struct tls_ctx_client *c)
{
    if (!c)
        return;
    if (c->slots)
        tls_ctx_client_flush_sessions(c);
    free(c->slots);
    if (c->ctx) {
        /* SSLs still open keep the SSL_CTX alive: make its callbacks forget us. */
        SSL_CTX_set_ex_data(c->ctx, client_idx, NULL);
        SSL_CTX_free(c->ctx);
    }
    X509_STORE_free(c->store);
    free(c->server_name);
    free(c);
}
