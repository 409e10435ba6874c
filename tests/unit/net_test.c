/* Tests for common/core/net.c: numeric addresses, listen, non-blocking connect. */
#include "unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include "core/net.h"

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    int port;
    char ip[64];
    net_peer_ip(&ss, ip, sizeof ip, &port);
    return port;
}

static void test_addr_parse(void **state)
{
    (void)state;
    struct net_addr a;
    assert_true(net_addr_parse(&a, "127.0.0.1", 8080));
    assert_string_equal(a.text, "127.0.0.1:8080");
    assert_true(net_addr_parse(&a, "::1", 9));
    assert_string_equal(a.text, "[::1]:9");
    assert_false(net_addr_parse(&a, "localhost", 80)); /* numeric only */
}

static void test_listen_connect(void **state)
{
    (void)state;
    int l = net_listen("127.0.0.1", 0, 16);
    assert_true(l >= 0);
    struct net_addr a;
    net_addr_parse(&a, "127.0.0.1", bound_port(l));
    int c = net_connect_start(&a);
    assert_true(c >= 0);
    struct pollfd p = {c, POLLOUT, 0};
    assert_int_equal(poll(&p, 1, 2000), 1);
    assert_int_equal(net_connect_result(c), 0);
    close(c);
    /* Refused: nothing listens on the port once closed. */
    int port = bound_port(l);
    close(l);
    net_addr_parse(&a, "127.0.0.1", port);
    c = net_connect_start(&a);
    if (c >= 0) {
        p.fd = c;
        poll(&p, 1, 2000);
        assert_int_equal(net_connect_result(c), ECONNREFUSED);
        close(c);
    } else {
        assert_int_equal(errno, ECONNREFUSED);
    }
}

static void test_peer_ip_v4_mapped(void **state)
{
    (void)state;
    struct sockaddr_in6 v6 = {0};
    v6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:10.1.2.3", &v6.sin6_addr);
    v6.sin6_port = htons(4242);
    struct sockaddr_storage ss;
    memcpy(&ss, &v6, sizeof v6);
    char ip[64];
    int port;
    net_peer_ip(&ss, ip, sizeof ip, &port);
    assert_string_equal(ip, "10.1.2.3");
    assert_int_equal(port, 4242);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_parse),
        cmocka_unit_test(test_listen_connect),
        cmocka_unit_test(test_peer_ip_v4_mapped),
    };
    return cmocka_run_group_tests_name("net", tests, NULL, NULL);
}
