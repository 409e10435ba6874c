/* Tests for local/certs.c: the local CA and per-namespace serving
 * certificates, checked with OpenSSL's own parser and verifier. */
#include "unit.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../local/certs.h"
#include "core/log.h"

static char dir[64], ca_dir[128], pod_dir[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/certs_test.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(ca_dir, sizeof ca_dir, "%s/home/tls", dir);
    snprintf(pod_dir, sizeof pod_dir, "%s/pods/p1/certs", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

static X509 *load(const char *d, const char *name)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", d, name);
    FILE *f = fopen(p, "r");
    if (!f)
        return NULL;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    return x;
}

static mode_t mode_of(const char *d, const char *name)
{
    char p[256];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", d, name);
    assert_int_equal(stat(p, &st), 0);
    return st.st_mode & 0777;
}

/* The DNS SANs of x joined with ',' in certificate order. */
static void dns_sans(X509 *x, char *out, size_t cap)
{
    out[0] = '\0';
    GENERAL_NAMES *g = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; g && i < sk_GENERAL_NAME_num(g); i++) {
        const GENERAL_NAME *n = sk_GENERAL_NAME_value(g, i);
        assert_int_equal(n->type, GEN_DNS);
        size_t l = strlen(out);
        snprintf(out + l, cap - l, "%s%.*s", l ? "," : "", ASN1_STRING_length(n->d.dNSName),
                 (const char *)ASN1_STRING_get0_data(n->d.dNSName));
    }
    GENERAL_NAMES_free(g);
}

static long days_left(X509 *x)
{
    int days = 0, secs = 0;
    assert_int_equal(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)), 1);
    return days;
}

static void test_pod_certificate(void **state)
{
    (void)state;
    char err[256];
    bool issued = false;
    assert_true(certs_ensure_pod(ca_dir, pod_dir, "Team-A", &issued, err, sizeof err));
    assert_true(issued);
    X509 *crt = load(pod_dir, "tls.crt"), *ca = load(pod_dir, "ca.crt"),
         *home_ca = load(ca_dir, "ca.crt");
    assert_non_null(crt);
    assert_non_null(ca);
    assert_int_equal(X509_cmp(ca, home_ca), 0);
    assert_int_equal(mode_of(pod_dir, "tls.key"), 0600);
    assert_int_equal(mode_of(ca_dir, "ca.key"), 0600);

    /* What Knative's reconciler puts in a data-plane-user certificate. */
    char sans[256];
    dns_sans(crt, sans, sizeof sans);
    assert_string_equal(sans, "kn-user-team-a,data-plane.knative.dev");
    assert_true(X509_get_extended_key_usage(crt) & XKU_SSL_SERVER);
    assert_true(X509_get_extended_key_usage(crt) & XKU_SSL_CLIENT);
    assert_true(X509_get_key_usage(crt) & KU_DIGITAL_SIGNATURE);
    assert_int_equal(X509_check_ca(crt), 0);
    assert_int_equal(X509_check_ca(ca), 1);
    long left = days_left(crt);
    assert_true(left >= 29 && left <= 30);
    left = days_left(ca);
    assert_true(left >= 364 && left <= 365);
    assert_int_equal(EVP_PKEY_get_base_id(X509_get0_pubkey(crt)), EVP_PKEY_EC);

    /* It verifies against the CA, with the server name Knative uses. */
    X509_STORE *st = X509_STORE_new();
    X509_STORE_add_cert(st, ca);
    X509_STORE_CTX *xs = X509_STORE_CTX_new();
    X509_STORE_CTX_init(xs, st, crt, NULL);
    X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(xs), "data-plane.knative.dev", 0);
    X509_VERIFY_PARAM_set_purpose(X509_STORE_CTX_get0_param(xs), X509_PURPOSE_SSL_SERVER);
    assert_int_equal(X509_verify_cert(xs), 1);
    X509_STORE_CTX_free(xs);
    X509_STORE_free(st);

    /* Nothing to do the second time. */
    assert_true(certs_ensure_pod(ca_dir, pod_dir, "Team-A", &issued, err, sizeof err));
    assert_false(issued);
    /* Another namespace in the same directory: reissued with its SAN. */
    assert_true(certs_ensure_pod(ca_dir, pod_dir, "b", &issued, err, sizeof err));
    assert_true(issued);
    X509 *b = load(pod_dir, "tls.crt");
    dns_sans(b, sans, sizeof sans);
    assert_string_equal(sans, "kn-user-b,data-plane.knative.dev");
    /* Bad names refused. */
    assert_false(certs_ensure_pod(ca_dir, pod_dir, "", &issued, err, sizeof err));
    X509_free(b);
    X509_free(crt);
    X509_free(ca);
    X509_free(home_ca);
}

static void test_renewal(void **state)
{
    (void)state;
    char err[256], p[256];
    bool issued;
    EVP_PKEY *ca_key;
    X509 *ca;
    assert_true(certs_ensure_ca(ca_dir, &ca_key, &ca, err, sizeof err));

    /* A pod certificate near expiry (less than 24 h left) is reissued. */
    const char *dns[] = {"kn-user-ns", "data-plane.knative.dev"};
    struct certs_spec spec = {"near", dns, 2, false, -86400, 3600};
    EVP_PKEY *k;
    X509 *x;
    assert_true(certs_make(&spec, ca_key, ca, &k, &x, err, sizeof err));
    assert_true(certs_ensure_pod(ca_dir, pod_dir, "ns", &issued, err, sizeof err));
    snprintf(p, sizeof p, "%s/tls.crt", pod_dir);
    assert_true(certs_write_pem(p, x, NULL, err, sizeof err));
    snprintf(p, sizeof p, "%s/tls.key", pod_dir);
    assert_true(certs_write_pem(p, NULL, k, err, sizeof err));
    assert_true(certs_ensure_pod(ca_dir, pod_dir, "ns", &issued, err, sizeof err));
    assert_true(issued);
    X509_free(x);
    EVP_PKEY_free(k);
    /* Garbage in place of the key: reissued. */
    FILE *f = fopen(p, "w");
    fputs("garbage", f);
    fclose(f);
    assert_true(certs_ensure_pod(ca_dir, pod_dir, "ns", &issued, err, sizeof err));
    assert_true(issued);

    /* A CA within 31 days of its end is renewed; the old one stays trusted
     * (ca.previous.crt) and pods are reissued under the new one. */
    struct certs_spec ca_spec = {"old CA", NULL, 0, true, -86400, 10 * 86400};
    EVP_PKEY *ok_key;
    X509 *old_ca;
    assert_true(certs_make(&ca_spec, NULL, NULL, &ok_key, &old_ca, err, sizeof err));
    snprintf(p, sizeof p, "%s/ca.crt", ca_dir);
    assert_true(certs_write_pem(p, old_ca, NULL, err, sizeof err));
    snprintf(p, sizeof p, "%s/ca.key", ca_dir);
    assert_true(certs_write_pem(p, NULL, ok_key, err, sizeof err));
    char files[4][512];
    assert_int_equal(certs_trust_files(ca_dir, files, 4), 1);
    assert_true(certs_ensure_pod(ca_dir, pod_dir, "ns", &issued, err, sizeof err));
    assert_true(issued);
    X509 *now_ca = load(ca_dir, "ca.crt"), *prev = load(ca_dir, "ca.previous.crt");
    assert_int_equal(X509_cmp(prev, old_ca), 0);
    assert_int_not_equal(X509_cmp(now_ca, old_ca), 0);
    assert_true(days_left(now_ca) >= 364);
    assert_int_equal(certs_trust_files(ca_dir, files, 4), 2);
    X509 *crt = load(pod_dir, "tls.crt");
    assert_int_equal(X509_verify(crt, X509_get0_pubkey(now_ca)), 1);
    X509_free(crt);
    X509_free(now_ca);
    X509_free(prev);
    X509_free(old_ca);
    EVP_PKEY_free(ok_key);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
}

int main(void)
{
    log_init("test", NULL, NULL);
    log_set_level("warn");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pod_certificate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renewal, setup, teardown),
    };
    return cmocka_run_group_tests_name("certs", tests, NULL, NULL);
}
