/* certs.c — see certs.h. */
#include "certs.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"

#define DATA_PLANE_NAME "data-plane.knative.dev"

static bool fail(char *err, size_t cap, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[160] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, cap, "%s%s%s", what, e ? ": " : "", buf);
    ERR_clear_error();
    return false;
}

static bool add_ext(X509 *crt, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer ? issuer : crt, crt, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext)
        return false;
    int ok = X509_add_ext(crt, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1;
}

/* 127 random bits: positive and at most 16 bytes (RFC 5280 allows 20). */
static bool random_serial(X509 *crt)
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        return false;
    b[0] &= 0x7f;
    b[0] |= 0x40; /* never a short (leading-zero) serial */
    BIGNUM *bn = BN_bin2bn(b, sizeof b, NULL);
    bool ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(crt)) != NULL;
    BN_free(bn);
    return ok;
}

bool certs_make(const struct certs_spec *spec, EVP_PKEY *issuer_key, X509 *issuer, EVP_PKEY **key,
                X509 **crt, char *err, size_t cap)
{
    *key = NULL;
    *crt = NULL;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    if (!k || !x) {
        EVP_PKEY_free(k);
        X509_free(x);
        return fail(err, cap, "cannot make a P-256 key");
    }
    X509_NAME *name = X509_get_subject_name(x);
    bool ok = X509_set_version(x, 2) == 1 && random_serial(x) &&
              X509_gmtime_adj(X509_getm_notBefore(x), spec->not_before) &&
              X509_gmtime_adj(X509_getm_notAfter(x), spec->not_after) &&
              X509_NAME_add_entry_by_txt(
                  name, "O", MBSTRING_UTF8,
                  (const unsigned char *)(spec->ca ? "coldbrew" : "knative.dev"), -1, -1, 0) == 1 &&
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)spec->cn,
                                         -1, -1, 0) == 1 &&
              X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) == 1 &&
              X509_set_pubkey(x, k) == 1;
    if (ok && spec->ca) {
        ok = add_ext(x, NULL, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
             add_ext(x, NULL, NID_key_usage, "critical,keyCertSign,cRLSign") &&
             add_ext(x, NULL, NID_subject_key_identifier, "hash");
    } else if (ok) {
        char san[1024] = "";
        size_t used = 0;
        for (size_t i = 0; i < spec->ndns && used < sizeof san; i++)
            used += (size_t)snprintf(san + used, sizeof san - used, "%sDNS:%s", i ? "," : "",
                                     spec->dns[i]);
        ok = used < sizeof san && add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE") &&
             add_ext(x, issuer, NID_key_usage, "critical,digitalSignature") &&
             add_ext(x, issuer, NID_ext_key_usage, "serverAuth,clientAuth") &&
             (!spec->ndns || add_ext(x, issuer, NID_subject_alt_name, san)) &&
             (!issuer || add_ext(x, issuer, NID_authority_key_identifier, "keyid:always"));
    }
    if (ok)
        ok = X509_sign(x, issuer_key ? issuer_key : k, EVP_sha256()) > 0;
    if (!ok) {
        EVP_PKEY_free(k);
        X509_free(x);
        return fail(err, cap, "cannot build the certificate");
    }
    *key = k;
    *crt = x;
    return true;
}

bool certs_write_pem(const char *path, X509 *crt, EVP_PKEY *key, char *err, size_t cap)
{
    char tmp[600];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        snprintf(err, cap, "path too long: %s", path);
        return false;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, key ? 0600 : 0644);
    if (fd < 0) {
        snprintf(err, cap, "cannot write %s: %s", tmp, strerror(errno));
        return false;
    }
    BIO *b = BIO_new_fd(fd, BIO_CLOSE);
    if (!b) {
        close(fd);
        unlink(tmp);
        return fail(err, cap, "out of memory");
    }
    bool ok = key ? PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) == 1
                  : PEM_write_bio_X509(b, crt) == 1;
    ok = ok && BIO_flush(b) == 1 && fsync(fd) == 0;
    BIO_free(b);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        if (ok)
            snprintf(err, cap, "cannot rename %s: %s", tmp, strerror(errno));
        else
            fail(err, cap, "cannot write PEM");
        return false;
    }
    return true;
}

static X509 *read_crt(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    ERR_clear_error();
    return x;
}

static int no_passphrase(char *buf, int size, int rw, void *u)
{
    (void)buf, (void)size, (void)rw, (void)u;
    return -1;
}

static EVP_PKEY *read_key(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
    fclose(f);
    ERR_clear_error();
    return k;
}

/* True when x is still valid `margin` seconds from now. */
static bool valid_for(X509 *x, long margin)
{
    time_t t = time(NULL) + margin;
    return X509_cmp_time(X509_get0_notAfter(x), &t) > 0;
}

static bool join(char *out, size_t cap, const char *dir, const char *name, char *err, size_t ecap)
{
    if ((size_t)snprintf(out, cap, "%s/%s", dir, name) < cap)
        return true;
    snprintf(err, ecap, "path too long: %s/%s", dir, name);
    return false;
}

static bool mkdir_p(const char *dir, mode_t mode, char *err, size_t cap)
{
    char buf[512];
    if ((size_t)snprintf(buf, sizeof buf, "%s", dir) >= sizeof buf) {
        snprintf(err, cap, "path too long: %s", dir);
        return false;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        mkdir(buf, 0755);
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST) {
        snprintf(err, cap, "cannot create %s: %s", dir, strerror(errno));
        return false;
    }
    return true;
}

bool certs_ensure_ca(const char *dir, EVP_PKEY **key_out, X509 **crt_out, char *err, size_t cap)
{
    char crt_path[512], key_path[512], prev_path[512];
    if (!join(crt_path, sizeof crt_path, dir, "ca.crt", err, cap) ||
        !join(key_path, sizeof key_path, dir, "ca.key", err, cap) ||
        !join(prev_path, sizeof prev_path, dir, "ca.previous.crt", err, cap) ||
        !mkdir_p(dir, 0700, err, cap))
        return false;
    X509 *crt = read_crt(crt_path);
    EVP_PKEY *key = read_key(key_path);
    bool good = crt && key && X509_check_private_key(crt, key) == 1 &&
                valid_for(crt, CERTS_CA_RENEW_SECONDS);
    ERR_clear_error();
    if (!good) {
        if (crt) {
            /* Kept for trust while certificates it signed are still out there. */
            rename(crt_path, prev_path);
            log_info("certs: renewing the local CA in %s", dir);
        }
        X509_free(crt);
        EVP_PKEY_free(key);
        struct certs_spec spec = {.cn = "coldbrew local internal-TLS CA",
                                  .ca = true,
                                  .not_before = -60,
                                  .not_after = CERTS_CA_SECONDS};
        if (!certs_make(&spec, NULL, NULL, &key, &crt, err, cap))
            return false;
        /* The key first: a crash between the two leaves a CA that fails the
         * key check above and is made again, never a cert without its key. */
        if (!certs_write_pem(key_path, NULL, key, err, cap) ||
            !certs_write_pem(crt_path, crt, NULL, err, cap)) {
            X509_free(crt);
            EVP_PKEY_free(key);
            return false;
        }
    }
    if (key_out)
        *key_out = key;
    else
        EVP_PKEY_free(key);
    if (crt_out)
        *crt_out = crt;
    else
        X509_free(crt);
    return true;
}

static bool has_dns(X509 *x, const char *name)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    bool found = false;
    size_t n = strlen(name);
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !found; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        found = g->type == GEN_DNS && (size_t)ASN1_STRING_length(g->d.dNSName) == n &&
                !memcmp(ASN1_STRING_get0_data(g->d.dNSName), name, n);
    }
    GENERAL_NAMES_free(gens);
    return found;
}

bool certs_ensure_pod(const char *ca_dir, const char *pod_dir, const char *ns, bool *issued,
                      char *err, size_t cap)
{
    if (issued)
        *issued = false;
    size_t nslen = strlen(ns);
    if (!nslen || nslen > 63) {
        snprintf(err, cap, "namespace must be 1 to 63 bytes: \"%s\"", ns);
        return false;
    }
    char san[80] = "kn-user-";
    for (size_t i = 0; i < nslen; i++)
        san[8 + i] = (char)tolower((unsigned char)ns[i]);
    char crt_path[512], key_path[512], ca_path[512];
    if (!join(crt_path, sizeof crt_path, pod_dir, "tls.crt", err, cap) ||
        !join(key_path, sizeof key_path, pod_dir, "tls.key", err, cap) ||
        !join(ca_path, sizeof ca_path, pod_dir, "ca.crt", err, cap) ||
        !mkdir_p(pod_dir, 0700, err, cap))
        return false;
    EVP_PKEY *ca_key = NULL;
    X509 *ca = NULL;
    if (!certs_ensure_ca(ca_dir, &ca_key, &ca, err, cap))
        return false;

    X509 *crt = read_crt(crt_path);
    EVP_PKEY *key = read_key(key_path);
    X509 *pod_ca = read_crt(ca_path);
    bool good = crt && key && pod_ca && X509_cmp(pod_ca, ca) == 0 &&
                X509_check_private_key(crt, key) == 1 &&
                X509_verify(crt, X509_get0_pubkey(ca)) == 1 &&
                valid_for(crt, CERTS_LEAF_RENEW_SECONDS) && has_dns(crt, san) &&
                has_dns(crt, DATA_PLANE_NAME);
    ERR_clear_error();
    X509_free(crt);
    EVP_PKEY_free(key);
    X509_free(pod_ca);
    crt = NULL;
    key = NULL;
    bool ok = true;
    if (!good) {
        const char *dns[] = {san, DATA_PLANE_NAME};
        struct certs_spec spec = {
            .cn = san, .dns = dns, .ndns = 2, .not_before = -60, .not_after = CERTS_LEAF_SECONDS};
        /* The key first, then the certificate: a queue-proxy reading in
         * between sees a mismatch, keeps its current context and picks up
         * the pair on its next check. */
        ok = certs_make(&spec, ca_key, ca, &key, &crt, err, cap) &&
             certs_write_pem(key_path, NULL, key, err, cap) &&
             certs_write_pem(crt_path, crt, NULL, err, cap) &&
             certs_write_pem(ca_path, ca, NULL, err, cap);
        if (ok && issued)
            *issued = true;
        if (ok)
            log_info("certs: issued %s for %s in %s", san, ns, pod_dir);
    }
    X509_free(crt);
    EVP_PKEY_free(key);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    return ok;
}

size_t certs_trust_files(const char *dir, char out[][512], size_t max)
{
    size_t n = 0;
    static const char *const names[] = {"ca.crt", "ca.previous.crt"};
    for (size_t i = 0; i < 2 && n < max; i++) {
        if ((size_t)snprintf(out[n], 512, "%s/%s", dir, names[i]) >= 512)
            continue;
        X509 *x = read_crt(out[n]);
        if (x && valid_for(x, 0))
            n++;
        X509_free(x);
    }
    return n;
}
