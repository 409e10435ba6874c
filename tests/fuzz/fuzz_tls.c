/* libFuzzer target: the bytes a TLS listener (8112) and the trust store read.
 *
 * The first input byte picks the mode:
 *   even: the rest is what a client sends to tls_ctx's server context
 *         (ClientHello with ALPN and the records after it), fed over a
 *         socketpair and driven through tls_ctx_handshake and SSL_read;
 *   odd:  the rest is a trust-bundle ConfigMap value handed to
 *         tls_ctx_client_set_trust.
 * Any crash, leak, or sanitizer report is a finding. */
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../local/certs.h"
#include "core/log.h"
#include "transport/tls_ctx.h"

static struct tls_ctx_server *srv;
static struct tls_ctx_client *cli;

/* A CA and a serving certificate made once, in a temporary directory. */
static void init(void)
{
    char dir[] = "/tmp/fuzz_tls.XXXXXX", ca[64], pod[64], crt[80], key[80], err[256];
    if (!mkdtemp(dir))
        abort();
    snprintf(ca, sizeof ca, "%s/ca", dir);
    snprintf(pod, sizeof pod, "%s/pod", dir);
    log_set_level("error");
    if (!certs_ensure_pod(ca, pod, "fuzz", NULL, err, sizeof err))
        abort();
    snprintf(crt, sizeof crt, "%s/tls.crt", pod);
    snprintf(key, sizeof key, "%s/tls.key", pod);
    struct tls_ctx_server_opts o = {
        .cert_file = crt, .key_file = key, .min_version = TLS1_2_VERSION};
    const char *why;
    srv = tls_ctx_server_new(&o, &why);
    cli = tls_ctx_client_new(NULL, &why);
    if (!srv || !cli)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv)
        init();
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    if (mode & 1) {
        struct tls_ctx_pem src = {(const char *)data, size, "fuzz"};
        const char *why;
        tls_ctx_client_set_trust(cli, &src, 1, &why);
        return 0;
    }
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) != 0)
        return 0;
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fds[1], data + off, size - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    shutdown(fds[1], SHUT_WR);
    SSL *ssl = tls_ctx_server_accept(srv, fds[0]);
    const char *why;
    int rc = 0;
    for (int i = 0; i < 8 && rc == 0; i++)
        rc = tls_ctx_handshake(ssl, &why);
    if (rc == 1) {
        char buf[512];
        for (int i = 0; i < 8 && SSL_read(ssl, buf, sizeof buf) > 0; i++)
            ;
        tls_ctx_alpn(ssl);
    }
    SSL_free(ssl);
    close(fds[0]);
    close(fds[1]);
    return 0;
}
