/* certs.h — the local platform's certificates for internal TLS
 * (COLDBREW_INTERNAL_TLS=true).
 *
 * What Knative's certificate reconciler (knative.dev/networking
 * pkg/certificates) issues, made with OpenSSL instead of a cluster:
 *   - one CA, kept in <dir>/ca.crt and <dir>/ca.key (0600), where <dir> is
 *     under the platform's home ($COLDBREW_HOME/tls);
 *   - per namespace, a serving certificate whose DNS SANs are exactly
 *     kn-user-<namespace> (lower-cased) and data-plane.knative.dev, key usage
 *     digitalSignature, extended key usage serverAuth + clientAuth, written as
 *     tls.crt / tls.key / ca.crt into the directory handed to a queue-proxy
 *     (it serves them on 8112 and re-reads them every minute).
 *
 * Keys are EC P-256 (Knative uses RSA 2048; P-256 handshakes are cheaper and
 * every TLS 1.3 client supports it).
 *
 * Validity (decision):
 *   - serving certificates: 30 days, renewed when less than 24 h remain
 *     (Knative's expirationInterval and rotationThreshold);
 *   - the CA: 365 days, renewed when less than 31 days remain. Knative gives
 *     its CA 10 years; a local CA's key sits in a home directory, so a year
 *     bounds what a leaked key can sign while a developer never sees a
 *     rotation mid-session. Renewing 31 days early means no serving
 *     certificate (30 days) ever outlives the CA that signed it. The old CA
 *     moves to ca.previous.crt, still listed by certs_trust_files() until it
 *     expires, so pods not yet re-issued keep verifying during a rotation.
 *
 * Files are written to a temporary name and renamed, so a reader sees the
 * old or the new bytes of each file, never a mix. Not thread-safe; the
 * platform calls it from its loop. */
#ifndef COLDBREW_LOCAL_CERTS_H
#define COLDBREW_LOCAL_CERTS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/types.h>

#define CERTS_LEAF_SECONDS       (30L * 86400)
#define CERTS_LEAF_RENEW_SECONDS (24L * 3600)
#define CERTS_CA_SECONDS         (365L * 86400)
#define CERTS_CA_RENEW_SECONDS   (31L * 86400)

/* One certificate to make. Times are seconds from now (negative: past). */
struct certs_spec {
    const char *cn;
    const char *const *dns; /* DNS SANs */
    size_t ndns;
    bool ca;
    long not_before;
    long not_after;
};

/* A new P-256 key and a certificate for it, signed by issuer_key/issuer
 * (both NULL: self-signed). The caller frees *key (EVP_PKEY_free) and *crt
 * (X509_free). False with err on failure. */
bool certs_make(const struct certs_spec *spec, EVP_PKEY *issuer_key, X509 *issuer, EVP_PKEY **key,
                X509 **crt, char *err, size_t cap);

/* Writes exactly one of crt / key as PEM to path (keys 0600, certificates
 * 0644) through a temporary file and rename(2). */
bool certs_write_pem(const char *path, X509 *crt, EVP_PKEY *key, char *err, size_t cap);

/* Loads <dir>/ca.{crt,key}, creating or renewing the CA when missing,
 * unreadable or within CERTS_CA_RENEW_SECONDS of expiry. The caller frees
 * *key and *crt; pass NULL for either to not receive it. */
bool certs_ensure_ca(const char *dir, EVP_PKEY **key, X509 **crt, char *err, size_t cap);

/* Makes sure pod_dir holds tls.crt / tls.key / ca.crt for namespace `ns`
 * signed by the CA in ca_dir: reissued when missing, not signed by the
 * current CA, without the SANs, within CERTS_LEAF_RENEW_SECONDS of expiry,
 * or when the key does not match. *issued (may be NULL) says whether new
 * files were written. */
bool certs_ensure_pod(const char *ca_dir, const char *pod_dir, const char *ns, bool *issued,
                      char *err, size_t cap);

/* The CA files the activator should trust: <dir>/ca.crt, plus
 * <dir>/ca.previous.crt while it is still valid. Returns how many paths
 * were written into out (each `len` bytes). */
size_t certs_trust_files(const char *dir, char out[][512], size_t max);

#endif
