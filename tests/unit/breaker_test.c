/* Tests for common/proxy/breaker.c: admission, queue bound, FIFO hand-off, cancel. */
#include "unit.h"

#include <event2/event.h>

#include "proxy/breaker.h"

static int order[64], norder;

static void run(struct breaker_waiter *w)
{
    order[norder++] = (int)(intptr_t)w->link.tqe_next == -1 ? -1 : 0;
}

struct tw {
    struct breaker_waiter w;
    int id;
};

static void run_tw(struct breaker_waiter *w)
{
    order[norder++] = ((struct tw *)w)->id;
}

static void test_admission_bounds(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct breaker b;
    breaker_init(&b, base, 2, 20);
    struct tw w[30];
    int run_now = 0, queued = 0, full = 0;
    for (int i = 0; i < 30; i++) {
        w[i].w.run = run_tw;
        w[i].id = i;
        switch (breaker_acquire(&b, &w[i].w)) {
        case BREAKER_RUN:
            run_now++;
            break;
        case BREAKER_QUEUED:
            queued++;
            break;
        case BREAKER_FULL:
            full++;
            break;
        }
    }
    assert_int_equal(run_now, 2);
    assert_int_equal(queued, 20);
    assert_int_equal(full, 8);
    assert_int_equal(breaker_in_flight(&b), 22);
    breaker_deinit(&b);
    event_base_free(base);
}

static void test_fifo_handoff_and_cancel(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct breaker b;
    breaker_init(&b, base, 1, 10);
    struct tw w[4];
    for (int i = 0; i < 4; i++) {
        w[i].w.run = run_tw;
        w[i].id = i;
    }
    norder = 0;
    assert_int_equal(breaker_acquire(&b, &w[0].w), BREAKER_RUN);
    assert_int_equal(breaker_acquire(&b, &w[1].w), BREAKER_QUEUED);
    assert_int_equal(breaker_acquire(&b, &w[2].w), BREAKER_QUEUED);
    assert_int_equal(breaker_acquire(&b, &w[3].w), BREAKER_QUEUED);
    breaker_cancel(&b, &w[2].w); /* client gone while waiting */
    assert_int_equal(breaker_in_flight(&b), 3);
    breaker_release(&b);
    /* The hand-off is deferred: nothing runs inside release. */
    assert_int_equal(norder, 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(norder, 1);
    assert_int_equal(order[0], 1);
    breaker_release(&b);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(norder, 2);
    assert_int_equal(order[1], 3);
    breaker_release(&b);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(breaker_in_flight(&b), 0);
    breaker_deinit(&b);
    event_base_free(base);
    (void)run;
}

static void test_capacity_change_releases_waiters(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct breaker b;
    breaker_init(&b, base, 0, 10);
    struct tw w[3];
    norder = 0;
    for (int i = 0; i < 3; i++) {
        w[i].w.run = run_tw;
        w[i].id = i;
        assert_int_equal(breaker_acquire(&b, &w[i].w), BREAKER_QUEUED);
    }
    breaker_set_capacity(&b, 2);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(norder, 2);
    assert_int_equal(b.executing, 2);
    assert_int_equal(b.waiting, 1);
    breaker_deinit(&b);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admission_bounds),
        cmocka_unit_test(test_fifo_handoff_and_cancel),
        cmocka_unit_test(test_capacity_change_releases_waiters),
    };
    return cmocka_run_group_tests_name("breaker", tests, NULL, NULL);
}
