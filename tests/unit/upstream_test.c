/* Tests for common/proxy/upstream.c: LIFO reuse, idle close on backend EOF, the
 * wait queue (FIFO, any connection serves, cancel, caps, failures). */
#include "unit.h"

#include <event2/event.h>
#include <sys/socket.h>
#include <errno.h>
#include <unistd.h>

#include "core/loop.h"
#include "loopback_util.h"
#include "proxy/upstream.h"

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
static const struct upconn_ops ops = {on_readable, on_writable};

/* A waiter that records what it got. */
struct rec {
    struct upstream_waiter w;
    struct upconn *uc;
    int err, calls, order;
};
static int ready_seq;
static void on_ready(struct upstream_waiter *w, struct upconn *uc, int err)
{
    struct rec *r = (struct rec *)w;
    r->uc = uc;
    r->err = err;
    r->calls++;
    r->order = ++ready_seq;
}
static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof *r);
    r->w.on_ready = on_ready;
    r->w.ops = &ops;
    r->w.owner = r;
}

static void test_pool(void **state)
{
    (void)state;
    struct event_base *base = loop_init();
    int port;
    int l = lo_listen(16, &port);
    struct upstream u;
    assert_true(upstream_init(&u, base, "127.0.0.1", port, 2, 5));
    struct rec ra, rb;
    rec_init(&ra);
    rec_init(&rb);
    /* Nothing idle: both wait, and a connect starts for each. */
    assert_null(upstream_checkout(&u, &ra.w, false));
    assert_null(upstream_checkout(&u, &rb.w, false));
    assert_true(ra.w.queued && rb.w.queued);
    assert_int_equal(u.nconnecting, 2);
    turn(base, 5);
    int pa = accept(l, NULL, NULL), pb = accept(l, NULL, NULL);
    assert_true(pa >= 0 && pb >= 0);
    assert_int_equal(ra.calls, 1);
    assert_int_equal(rb.calls, 1);
    assert_true(ra.order < rb.order); /* FIFO */
    struct upconn *a = ra.uc, *b = rb.uc;
    assert_non_null(a);
    assert_non_null(b);
    assert_false(a->reused);
    assert_false(a->connecting);
    assert_int_equal(u.nconns, 2);
    assert_int_equal(u.nconnecting, 0);
    assert_int_equal(writable_calls, 0); /* the holder writes when it gets the connection */
    upstream_checkin(a);
    upstream_checkin(b);
    assert_int_equal(u.nidle, 2);
    /* LIFO: the most recently returned comes out first, at once, marked reused. */
    struct rec rc;
    rec_init(&rc);
    struct upconn *c = upstream_checkout(&u, &rc.w, false);
    assert_ptr_equal(c, b);
    assert_true(c->reused);
    assert_false(rc.w.queued);
    assert_int_equal(rc.calls, 0);
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

static void turn_until(struct event_base *base, const int *calls)
{
    for (int i = 0; i < 200 && !*calls; i++)
        turn(base, 1);
}

/* Waiters are served in FIFO order by whichever connection is usable
 * first; the connecting cap holds back connects and a completed connect
 * starts the next; a checked-in connection goes to the oldest waiter, not
 * to the pool; a cancelled waiter loses its place. */
static void test_wait_queue(void **state)
{
    (void)state;
    struct event_base *base = loop_init();
    int port;
    int l = lo_listen(16, &port);
    struct upstream u;
    assert_true(upstream_init(&u, base, "127.0.0.1", port, 10, 5));
    u.max_connecting = 1;
    struct rec r[4];
    for (int i = 0; i < 4; i++) {
        rec_init(&r[i]);
        assert_null(upstream_checkout(&u, &r[i].w, false));
        assert_true(r[i].w.queued);
    }
    assert_int_equal(u.nwaiting, 4);
    assert_int_equal(u.nconnecting, 1); /* capped */
    upstream_cancel(&u, &r[1].w);       /* a client leaves: its place is freed */
    assert_false(r[1].w.queued);
    assert_int_equal(u.nwaiting, 3);
    upstream_cancel(&u, &r[1].w); /* twice is harmless */
    turn_until(base, &r[3].calls);
    assert_int_equal(r[1].calls, 0);
    assert_true(r[0].calls == 1 && r[2].calls == 1 && r[3].calls == 1);
    assert_true(r[0].order < r[2].order && r[2].order < r[3].order);
    assert_int_equal(u.nconns, 3);
    assert_int_equal(u.nwaiting, 0);
    for (int i = 0; i < 4; i++)
        if (r[i].uc)
            upstream_checkin(r[i].uc);
    assert_int_equal(u.nidle, 3);
    upstream_close_idle(&u);

    /* One connection in all (COLDBREW_UPSTREAM_MAX_CONNS=1): the second
     * request gets the first one's connection the moment it is checked in. */
    assert_true(upstream_init(&u, base, "127.0.0.1", port, 10, 5));
    u.max_conns = 1;
    struct rec a, b, c;
    rec_init(&a);
    rec_init(&b);
    rec_init(&c);
    assert_null(upstream_checkout(&u, &a.w, false));
    assert_null(upstream_checkout(&u, &b.w, false));
    assert_null(upstream_checkout(&u, &c.w, false));
    turn_until(base, &a.calls);
    turn(base, 3);
    assert_int_equal(u.nconns, 1);
    assert_int_equal(b.calls, 0);
    upstream_cancel(&u, &b.w);
    upstream_checkin(a.uc);
    assert_int_equal(c.calls, 1); /* b left: c is next */
    assert_ptr_equal(c.uc, a.uc);
    assert_true(c.uc->reused);
    assert_int_equal(u.nidle, 0);
    upstream_checkin(c.uc);
    assert_int_equal(u.nidle, 1);
    upstream_close_idle(&u);
    assert_int_equal(u.nconns, 0);
    int fd;
    while ((fd = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0)
        close(fd);
    close(l);
    loop_free();
}

/* A refused connect: the request that asked fails at once when the connect
 * cannot start; a connect that fails later fails the head waiter only. */
static void test_connect_failure(void **state)
{
    (void)state;
    struct event_base *base = loop_init();
    int port;
    int l = lo_listen(1, &port);
    close(l); /* nothing listens: connects are refused */
    struct upstream u;
    assert_true(upstream_init(&u, base, "127.0.0.1", port, 10, 5));
    struct rec r[3];
    for (int i = 0; i < 3; i++)
        rec_init(&r[i]);
    struct upconn *uc = upstream_checkout(&u, &r[0].w, false);
    assert_null(uc);
    if (!r[0].w.queued) {
        assert_int_equal(errno, ECONNREFUSED); /* refused synchronously (loopback) */
    } else {
        assert_null(upstream_checkout(&u, &r[1].w, false));
        turn(base, 10);
        assert_int_equal(r[0].calls, 1);
        assert_null(r[0].uc);
        assert_int_equal(r[0].err, ECONNREFUSED);
        assert_int_equal(r[1].calls, 1);
        assert_int_equal(r[1].err, ECONNREFUSED);
    }
    assert_int_equal(u.nwaiting, 0);
    assert_int_equal(u.nconns, 0);
    upstream_close_idle(&u);
    loop_free();
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_pool),
                                       cmocka_unit_test(test_wait_queue),
                                       cmocka_unit_test(test_connect_failure)};
    int r = cmocka_run_group_tests_name("upstream", tests, NULL, NULL);
    http_head_pool_drain();
    return r;
}
