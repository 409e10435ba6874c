/* Tests for common/upstream.c: LIFO reuse, idle close on backend EOF. */
#include "unit.h"

#include <event2/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop.h"
#include "upstream.h"

static int writable_calls;
static void on_readable(struct upconn *uc)
{
    (void)uc;
}
static void on_writable(struct upconn *uc)
{
    writable_calls++;
    upconn_want_write(uc, false);
}
static const struct upconn_ops ops = {on_readable, on_writable, NULL};

static void turn(struct event_base *base, int n)
{
    for (int i = 0; i < n; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
}

static void test_pool(void **state)
{
    (void)state;
    struct event_base *base = loop_init();
    int l = net_listen("127.0.0.1", 0, 16);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(l, (struct sockaddr *)&ss, &sl);
    char ip[64];
    int port;
    net_peer_ip(&ss, ip, sizeof ip, &port);
    struct upstream u;
    assert_true(upstream_init(&u, base, "127.0.0.1", port, 2, 5));
    struct upconn *a = upstream_checkout(&u, false, &ops, NULL);
    struct upconn *b = upstream_checkout(&u, false, &ops, NULL);
    assert_non_null(a);
    assert_non_null(b);
    assert_false(a->reused);
    turn(base, 5);
    int pa = accept(l, NULL, NULL), pb = accept(l, NULL, NULL);
    assert_true(pa >= 0 && pb >= 0);
    assert_int_equal(writable_calls, 2); /* each holder learns its connect completed */
    assert_false(a->connecting);
    assert_int_equal(u.nconns, 2);
    upstream_checkin(a);
    upstream_checkin(b);
    assert_int_equal(u.nidle, 2);
    /* LIFO: the most recently returned comes out first, marked reused. */
    struct upconn *c = upstream_checkout(&u, false, &ops, NULL);
    assert_ptr_equal(c, b);
    assert_true(c->reused);
    upstream_checkin(c);
    /* The backend closes one idle connection: the pool notices and drops it. */
    close(pa);
    turn(base, 20);
    assert_int_equal(u.nidle, 1);
    assert_int_equal(u.nconns, 1);
    upstream_close_idle(&u);
    assert_int_equal(u.nconns, 0);
    close(pb);
    close(l);
    loop_free();
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_pool)};
    int r = cmocka_run_group_tests_name("upstream", tests, NULL, NULL);
    http_head_pool_drain();
    return r;
}
