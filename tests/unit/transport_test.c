/* Tests for common/transport/transport.c: the plain and TLS transports over a
 * socketpair, in process — bytes through both, a record bigger than one
 * read, handshakes that fail halfway (the peer vanishes, the peer sends
 * garbage after the first flight, a TLS 1.2-only peer), and that a failed
 * or abandoned transport frees everything (ASan/LSan in SANITIZE=1). */
#include "unit.h"

#include <errno.h>
#include <event2/buffer.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../local/certs.h"
#include "core/log.h"
#include "transport/tls_ctx.h"
#include "transport/transport.h"

static char dir[64], crt[128], key[128];
static struct tls_ctx_server *srv;
static struct tls_ctx_client *cli;

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/transport_test.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(crt, sizeof crt, "%s/tls.crt", dir);
    snprintf(key, sizeof key, "%s/tls.key", dir);
    char err[256];
    EVP_PKEY *cak, *lk;
    X509 *cac, *lc;
    struct certs_spec cas = {"ca", NULL, 0, true, -60, 86400};
    assert_true(certs_make(&cas, NULL, NULL, &cak, &cac, err, sizeof err));
    static const char *const dns[] = {"kn-user-ns1", "data-plane.knative.dev"};
    struct certs_spec ls = {"leaf", dns, 2, false, -60, 86400};
    assert_true(certs_make(&ls, cak, cac, &lk, &lc, err, sizeof err));
    assert_true(certs_write_pem(key, NULL, lk, err, sizeof err));
    assert_true(certs_write_pem(crt, lc, NULL, err, sizeof err));
    struct tls_ctx_server_opts o = {.cert_file = crt, .key_file = key};
    const char *why = NULL;
    srv = tls_ctx_server_new(&o, &why);
    assert_non_null(srv);
    cli = tls_ctx_client_new(NULL, &why);
    assert_non_null(cli);
    /* Trust the CA: write it next to the pair. */
    char ca[128];
    snprintf(ca, sizeof ca, "%s/ca.crt", dir);
    assert_true(certs_write_pem(ca, cac, NULL, err, sizeof err));
    const char *tf[] = {ca};
    assert_int_equal(tls_ctx_client_set_trust_files(cli, tf, 1, &why), 1);
    EVP_PKEY_free(cak);
    EVP_PKEY_free(lk);
    X509_free(cac);
    X509_free(lc);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tls_ctx_server_free(srv);
    tls_ctx_client_free(cli);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

struct pair {
    int fd[2];
    struct transport s, c;
    int src, crc;
    const char *swhy, *cwhy;
};

static void open_pair(struct pair *p, bool tls)
{
    memset(p, 0, sizeof *p);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fd), 0);
    if (tls) {
        transport_tls_attach(&p->s, tls_ctx_server_accept(srv, p->fd[0]));
        transport_tls_attach(&p->c,
                             tls_ctx_client_connect(cli, p->fd[1], "ns1", "x:1", TLS_ALPN_HTTP11));
    }
}

static void drive(struct pair *p)
{
    for (int i = 0; i < 50 && (p->src == 0 || p->crc == 0); i++) {
        if (p->crc == 0)
            p->crc = transport_handshake(&p->c, &p->cwhy);
        if (p->src == 0)
            p->src = transport_handshake(&p->s, &p->swhy);
    }
}

static void close_pair(struct pair *p)
{
    transport_free(&p->s);
    transport_free(&p->c);
    if (p->fd[0] >= 0)
        close(p->fd[0]);
    if (p->fd[1] >= 0)
        close(p->fd[1]);
}

/* Moves `n` bytes from one side to the other through the transports. */
static void roundtrip(struct pair *p, size_t n)
{
    struct evbuffer *out = evbuffer_new(), *in = evbuffer_new();
    char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (char)(i * 7);
    evbuffer_add(out, data, n);
    for (int i = 0; i < 2000 && evbuffer_get_length(in) < n; i++) {
        if (evbuffer_get_length(out))
            assert_int_not_equal(transport_write(&p->c, out, p->fd[1]), IO_ERROR);
        enum io_status st = transport_read(&p->s, in, p->fd[0]);
        assert_true(st == IO_OK || st == IO_AGAIN);
    }
    assert_int_equal(evbuffer_get_length(in), n);
    assert_memory_equal(evbuffer_pullup(in, -1), data, n);
    free(data);
    evbuffer_free(out);
    evbuffer_free(in);
}

static void test_plain(void **state)
{
    (void)state;
    struct pair p;
    open_pair(&p, false);
    assert_false(transport_is_tls(&p.s));
    assert_int_equal(transport_handshake(&p.s, NULL), 1);
    roundtrip(&p, 100000);
    close_pair(&p);
}

static void test_tls_roundtrip(void **state)
{
    (void)state;
    struct pair p;
    open_pair(&p, true);
    drive(&p);
    assert_int_equal(p.src, 1);
    assert_int_equal(p.crc, 1);
    assert_false(transport_alpn_h2(&p.s));
    roundtrip(&p, 5);
    roundtrip(&p, 300000); /* many records; the reader drains what OpenSSL holds */
    /* EOF: a close_notify reads as the end. */
    transport_shutdown(&p.c, p.fd[1]);
    struct evbuffer *in = evbuffer_new();
    enum io_status st = IO_AGAIN;
    for (int i = 0; i < 10 && st != IO_EOF; i++)
        st = transport_read(&p.s, in, p.fd[0]);
    assert_int_equal(st, IO_EOF);
    evbuffer_free(in);
    close_pair(&p);
}

/* The client sent its hello and vanished: the server's handshake fails
 * with a reason, and freeing the transport frees the SSL. */
static void test_peer_vanishes_mid_handshake(void **state)
{
    (void)state;
    struct pair p;
    open_pair(&p, true);
    assert_int_equal(transport_handshake(&p.c, &p.cwhy), 0); /* ClientHello out */
    assert_int_equal(transport_handshake(&p.s, &p.swhy), 0); /* ServerHello..Finished out */
    close(p.fd[1]);
    p.fd[1] = -1;
    char b[65536];
    while (recv(p.fd[0], b, sizeof b, MSG_DONTWAIT) > 0)
        ;
    int r = transport_handshake(&p.s, &p.swhy);
    assert_int_equal(r, -1);
    assert_non_null(p.swhy);
    assert_non_null(strstr(p.swhy, "closed"));
    assert_int_equal(ERR_peek_error(), 0); /* nothing left for the next connection */
    close_pair(&p);
}

/* Garbage where the client's Finished should be. */
static void test_garbage_mid_handshake(void **state)
{
    (void)state;
    struct pair p;
    open_pair(&p, true);
    assert_int_equal(transport_handshake(&p.c, &p.cwhy), 0);
    assert_int_equal(transport_handshake(&p.s, &p.swhy), 0);
    transport_free(&p.c); /* the client is replaced by noise */
    static const char junk[] = "\x17\x03\x03\x00\x10garbagegarbage!!";
    assert_int_equal(write(p.fd[1], junk, sizeof junk - 1), (ssize_t)(sizeof junk - 1));
    int r = 0;
    for (int i = 0; i < 5 && r == 0; i++)
        r = transport_handshake(&p.s, &p.swhy);
    assert_int_equal(r, -1);
    assert_non_null(p.swhy);
    assert_int_equal(ERR_peek_error(), 0);
    close_pair(&p);
}

/* A TLS 1.2-only client: refused, the reason says so. */
static void test_tls12_client(void **state)
{
    (void)state;
    struct pair p;
    open_pair(&p, false);
    transport_tls_attach(&p.s, tls_ctx_server_accept(srv, p.fd[0]));
    SSL_CTX *old = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_max_proto_version(old, TLS1_2_VERSION);
    SSL *c = SSL_new(old);
    SSL_set_fd(c, p.fd[1]);
    SSL_set_connect_state(c);
    transport_tls_attach(&p.c, c);
    SSL_CTX_free(old); /* the SSL keeps its reference */
    drive(&p);
    assert_int_equal(p.src, -1);
    assert_non_null(strstr(p.swhy, "version"));
    close_pair(&p);
}

/* Reading before the handshake finished is not an error on a non-blocking socket. */
static void test_read_before_data(void **state)
{
    (void)state;
    struct pair p;
    open_pair(&p, true);
    drive(&p);
    struct evbuffer *in = evbuffer_new();
    enum io_status st = transport_read(&p.s, in, p.fd[0]);
    assert_int_equal(st, IO_AGAIN);
    evbuffer_free(in);
    close_pair(&p);
}

int main(void)
{
    log_init("test", NULL, NULL);
    log_set_level("error");
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_tls_roundtrip),
        cmocka_unit_test(test_peer_vanishes_mid_handshake),
        cmocka_unit_test(test_garbage_mid_handshake),
        cmocka_unit_test(test_tls12_client),
        cmocka_unit_test(test_read_before_data),
    };
    return cmocka_run_group_tests_name("transport", tests, setup, teardown);
}
