/* Tests for common/core/loop.c: deferred frees run after the current callback. */
#include "unit.h"

#include <event2/event.h>

#include "core/loop.h"

static int freed[8], nfreed;
static void note(void *p)
{
    freed[nfreed++] = (int)(intptr_t)p;
}

static void cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    loop_defer_free((void *)(intptr_t)1, note);
    loop_defer_free((void *)(intptr_t)2, note);
    assert_int_equal(nfreed, 0); /* not inside the callback */
}

static void test_deferred(void **state)
{
    (void)state;
    struct event_base *base = loop_init();
    struct event *ev = event_new(base, -1, 0, cb, NULL);
    event_active(ev, EV_TIMEOUT, 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(nfreed, 2);
    loop_defer_free((void *)(intptr_t)3, note);
    event_free(ev);
    loop_free(); /* flushes what is pending */
    assert_int_equal(nfreed, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_deferred)};
    return cmocka_run_group_tests_name("loop", tests, NULL, NULL);
}
