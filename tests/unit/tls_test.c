/* Tests for common/transport/tls.c: an upstream pool made TLS by tls_client_new(),
 * used by an http_call, against an OpenSSL server the test drives on
 * loopback. A good handshake answers; handshakes that fail halfway (a
 * certificate for another name, one from an untrusted CA, a peer that
 * closes after the ClientHello or in the middle of its own flight, a peer
 * that answers in plain HTTP) fail the call with the connect error, and the
 * log says why. Certificates come from local/certs.c. */
#include "unit.h"

#include <event2/event.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../local/certs.h"
#include "cluster/http_client.h"
#include "core/log.h"
#include "core/loop.h"
#include "loopback_util.h"
#include "transport/tls.h"
#include "proxy/upstream.h"

enum server_mode {
    SERVE,             /* complete the handshake, answer the request */
    CLOSE_AFTER_HELLO, /* read the ClientHello, close */
    CLOSE_MID_FLIGHT,  /* write half of the server's first flight, close */
    PLAIN_HTTP,        /* answer the ClientHello in plain HTTP */
};

static char dir[64], ca_good[128], ca_other[128], log_path[128];
static SSL_CTX *server_ctx;

struct fixture {
    struct event_base *base;
    int lfd, port, sfd;
    SSL *ssl;
    struct upstream up;
    struct http_call *call;
    int done_calls;
    const char *err;
};
static struct fixture fx;

static void make(const char *cn, const char *const *dns, size_t ndns, bool ca, EVP_PKEY *ikey,
                 X509 *icrt, EVP_PKEY **key, X509 **crt)
{
    struct certs_spec spec = {cn, dns, ndns, ca, -60, 86400};
    char err[256];
    assert_true(certs_make(&spec, ikey, icrt, key, crt, err, sizeof err));
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/coldbrew-tls-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(ca_good, sizeof ca_good, "%s/ca.crt", dir);
    snprintf(ca_other, sizeof ca_other, "%s/other.crt", dir);
    snprintf(log_path, sizeof log_path, "%s/log", dir);
    EVP_PKEY *ca_key, *other_key, *leaf_key;
    X509 *ca, *other, *leaf;
    static const char *const dns[] = {"api.test"};
    make("test CA", NULL, 0, true, NULL, NULL, &ca_key, &ca);
    make("other CA", NULL, 0, true, NULL, NULL, &other_key, &other);
    make("api.test", dns, 1, false, ca_key, ca, &leaf_key, &leaf);
    char err[256];
    assert_true(certs_write_pem(ca_good, ca, NULL, err, sizeof err));
    assert_true(certs_write_pem(ca_other, other, NULL, err, sizeof err));
    server_ctx = SSL_CTX_new(TLS_server_method());
    assert_int_equal(SSL_CTX_use_certificate(server_ctx, leaf), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(server_ctx, leaf_key), 1);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(other_key);
    EVP_PKEY_free(leaf_key);
    X509_free(ca);
    X509_free(other);
    X509_free(leaf);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    SSL_CTX_free(server_ctx);
    unlink(ca_good);
    unlink(ca_other);
    unlink(log_path);
    rmdir(dir);
    return 0;
}

static int log_fd = -1;

static int setup(void **state)
{
    memset(&fx, 0, sizeof fx);
    fx.sfd = -1;
    fx.base = loop_init();
    fx.lfd = lo_listen(16, &fx.port);
    assert_true(fx.lfd >= 0);
    assert_true(upstream_init(&fx.up, fx.base, "127.0.0.1", fx.port, 4, 30));
    fx.call = http_call_new(&fx.up, &fx);
    assert_non_null(fx.call);
    /* The log goes to a file the test reads back. */
    log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(log_fd >= 0);
    log_set_fd(log_fd);
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    http_call_free(fx.call);
    upstream_close_idle(&fx.up);
    tls_client_free(fx.up.tls);
    if (fx.ssl)
        SSL_free(fx.ssl);
    lo_teardown(fx.base, fx.lfd, fx.sfd);
    log_set_fd(1);
    close(log_fd);
    return 0;
}

static bool log_has(const char *s)
{
    char buf[8192];
    int fd = open(log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    return strstr(buf, s) != NULL;
}

static void on_done(struct http_call *c, const char *err)
{
    struct fixture *f = c->arg;
    f->done_calls++;
    f->err = err;
}

/* Reads what the client sent so far (non-blocking). */
static size_t read_raw(uint8_t *buf, size_t cap)
{
    ssize_t r = read(fx.sfd, buf, cap);
    return r > 0 ? (size_t)r : 0;
}

/* The server's step for one loop turn; true once it has nothing more to do. */
static bool server_step(enum server_mode mode)
{
    static uint8_t hello[16384];
    static size_t hello_len;
    if (fx.sfd < 0) {
        fx.sfd = accept4(fx.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        hello_len = 0;
        if (fx.sfd < 0)
            return false;
        if (mode == SERVE) {
            fx.ssl = SSL_new(server_ctx);
            SSL_set_fd(fx.ssl, fx.sfd);
            SSL_set_accept_state(fx.ssl);
        }
    }
    switch (mode) {
    case SERVE: {
        if (!SSL_is_init_finished(fx.ssl)) {
            SSL_do_handshake(fx.ssl);
            ERR_clear_error();
            return false;
        }
        char req[1024];
        int r = SSL_read(fx.ssl, req, sizeof req - 1);
        ERR_clear_error();
        if (r <= 0)
            return false;
        static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_int_equal(SSL_write(fx.ssl, resp, sizeof resp - 1), (int)sizeof resp - 1);
        return true;
    }
    case CLOSE_AFTER_HELLO:
    case PLAIN_HTTP:
        hello_len += read_raw(hello + hello_len, sizeof hello - hello_len);
        if (hello_len < 5)
            return false;
        if (mode == PLAIN_HTTP) {
            static const char resp[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
            assert_true(write_all(fx.sfd, resp, sizeof resp - 1));
        }
        close(fx.sfd);
        fx.sfd = -1;
        return true;
    case CLOSE_MID_FLIGHT: {
        /* A real server SSL fed through memory: its whole first flight
         * (ServerHello ... Finished) is made, half of it is sent. */
        hello_len += read_raw(hello + hello_len, sizeof hello - hello_len);
        if (hello_len < 5 || hello_len < 5 + (size_t)((hello[3] << 8) | hello[4]))
            return false;
        SSL *s = SSL_new(server_ctx);
        BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
        SSL_set_bio(s, in, out);
        SSL_set_accept_state(s);
        BIO_write(in, hello, (int)hello_len);
        SSL_do_handshake(s);
        ERR_clear_error();
        char *flight;
        long n = BIO_get_mem_data(out, &flight);
        assert_true(n > 100);
        assert_true(write_all(fx.sfd, flight, (size_t)n / 2));
        SSL_free(s);
        turn(fx.base, 3);
        close(fx.sfd);
        fx.sfd = -1;
        return true;
    }
    }
    return true;
}

static void run(const char *ca, const char *name, enum server_mode mode)
{
    char err[256];
    fx.up.tls = tls_client_new(ca, name, err, sizeof err);
    assert_non_null(fx.up.tls);
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: api.test\r\n\r\n";
    http_call_start(fx.call, req, sizeof req - 1, 5, on_done, NULL);
    bool served = false;
    for (int i = 0; i < 3000 && !fx.done_calls; i++) {
        turn(fx.base, 1);
        if (!served)
            served = server_step(mode);
    }
    assert_int_equal(fx.done_calls, 1);
}

static void assert_handshake_failed(const char *why)
{
    assert_ptr_equal(fx.err, http_call_err_connect);
    assert_non_null(strstr(fx.call->detail, "connect: protocol error"));
    assert_true(log_has("tls: handshake failed with 127.0.0.1:"));
    if (why && !log_has(why)) {
        char buf[4096];
        int fd = open(log_path, O_RDONLY | O_CLOEXEC);
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        buf[n > 0 ? n : 0] = 0;
        fail_msg("log lacks \"%s\": %s", why, buf);
    }
    assert_int_equal(fx.up.nconns, 0); /* the failed connection is gone */
}

static void test_good_handshake(void **state)
{
    (void)state;
    run(ca_good, "api.test", SERVE);
    assert_null(fx.err);
    assert_int_equal(fx.call->status, 200);
    assert_int_equal(evbuffer_get_length(fx.call->body), 2);
}

/* Handshakes that fail halfway: the CA file and name the client trusts, what
 * the server does, and the reason the log gives (tls_ctx.c's classification
 * of OpenSSL's verify result and error queue). */
#define FAILING_HANDSHAKE(test, ca, name, mode, why)                                               \
    static void test(void **state)                                                                 \
    {                                                                                              \
        (void)state;                                                                               \
        run(ca, name, mode);                                                                       \
        assert_handshake_failed(why);                                                              \
    }
FAILING_HANDSHAKE(test_wrong_name, ca_good, "kubernetes.default", SERVE,
                  "peer certificate does not carry the server name")
/* An IP literal is checked against the certificate's IP SANs (it has none). */
FAILING_HANDSHAKE(test_wrong_ip, ca_good, "127.0.0.1", SERVE,
                  "peer certificate does not carry the server name")
FAILING_HANDSHAKE(test_untrusted_ca, ca_other, "api.test", SERVE,
                  "peer certificate not signed by a trusted CA")
FAILING_HANDSHAKE(test_close_after_hello, ca_good, "api.test", CLOSE_AFTER_HELLO,
                  "connection closed during the TLS handshake")
FAILING_HANDSHAKE(test_close_mid_flight, ca_good, "api.test", CLOSE_MID_FLIGHT,
                  "connection closed during the TLS handshake")
FAILING_HANDSHAKE(test_plain_http_peer, ca_good, "api.test", PLAIN_HTTP,
                  "the peer does not speak TLS")

static void test_bad_ca_file(void **state)
{
    (void)state;
    char err[256];
    assert_null(tls_client_new("/nonexistent/ca.crt", "api.test", err, sizeof err));
    assert_string_equal(err, "tls: cannot load CA file /nonexistent/ca.crt");
}

int main(void)
{
    log_init("test", NULL, NULL);
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_good_handshake),  T(test_wrong_name),        T(test_wrong_ip),
        T(test_untrusted_ca),    T(test_close_after_hello), T(test_close_mid_flight),
        T(test_plain_http_peer), T(test_bad_ca_file),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
