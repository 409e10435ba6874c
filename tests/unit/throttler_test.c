/* Tests for activator/throttler.c: Knative's slicing vectors (TestPickIndices,
 * TestAssignSlice in pkg/activator/net/throttler_test.go, and the contract's
 * 10-pods/3-activators example), capacity, and each LB policy. */
#include "unit.h"

#include <stdio.h>

#include "../../activator/throttler.h"

static void test_pick_indices(void **state)
{
    (void)state;
    struct {
        unsigned pods;
        int idx;
        unsigned acts, b, e, rem;
    } v[] = {
        {1, 0, 1, 0, 1, 0},  {1, 0, 2, 0, 1, 0},  {1, 1, 2, 0, 1, 0},  {2, 0, 3, 0, 1, 0},
        {2, 1, 3, 1, 2, 0},  {2, 2, 3, 0, 1, 0},  {2, 1, 2, 1, 2, 0},  {3, 0, 2, 0, 1, 1},
        {3, 1, 2, 1, 2, 1},  {10, 0, 3, 0, 3, 1}, {10, 1, 3, 3, 6, 1}, {10, 2, 3, 6, 9, 1},
        {11, 2, 3, 6, 9, 2}, {5, 4, 5, 4, 5, 0},  {3, 5, 5, 2, 3, 0},
    };
    for (unsigned i = 0; i < sizeof v / sizeof v[0]; i++) {
        unsigned b, e, rem;
        throttler_pick_indices(v[i].pods, v[i].idx, v[i].acts, &b, &e, &rem);
        if (b != v[i].b || e != v[i].e || rem != v[i].rem)
            fail_msg("pods %u idx %d acts %u: got [%u,%u) rem %u", v[i].pods, v[i].idx, v[i].acts,
                     b, e, rem);
    }
}

static char names[16][32];
static const char *dests[16];

static void make_dests(unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "10.0.0.%u:8012", i + 10); /* sorts as strings */
        dests[i] = names[i];
    }
}

static void test_assign_slice_ten_pods_three_activators(void **state)
{
    (void)state;
    make_dests(10);
    unsigned want_count[3] = {4, 3, 3};
    for (int idx = 0; idx < 3; idx++) {
        struct throttler t;
        throttler_init(&t, 2, 1);
        throttler_set_pods(&t, dests, 10, false);
        throttler_set_activators(&t, idx, 3);
        assert_int_equal(t.nassigned, want_count[idx]);
        assert_int_equal(t.assigned[0], (unsigned)idx * 3);
        if (idx == 0)
            assert_int_equal(t.assigned[3], 9); /* the remnant goes to activator 0 */
        assert_int_equal(throttler_current_capacity(&t), 2 * (long)want_count[idx]);
        throttler_free(&t);
    }
    /* Unassigned (index -1) and CC = 0 take every pod. */
    struct throttler t;
    throttler_init(&t, 0, 1);
    throttler_set_pods(&t, dests, 10, false);
    throttler_set_activators(&t, 1, 3);
    assert_int_equal(t.nassigned, 10);
    throttler_free(&t);
}

static void test_capacity(void **state)
{
    (void)state;
    assert_int_equal(throttler_capacity(10, 3, 3, 2), 30);         /* pod-direct */
    assert_int_equal(throttler_capacity(10, 3, 0, 2), 15);         /* ClusterIP */
    assert_int_equal(throttler_capacity(1, 1, 0, 3), 1);           /* at least 1 */
    assert_int_equal(throttler_capacity(0, 2, 2, 1), 2147483647L); /* CC 0: unlimited */
    assert_int_equal(throttler_capacity(0, 0, 0, 1), 0);           /* no backends */
}

static void test_first_available(void **state)
{
    (void)state;
    make_dests(3);
    struct throttler t;
    throttler_init(&t, 1, 1);
    assert_int_equal(t.policy, LB_FIRST_AVAILABLE);
    assert_null(throttler_pick(&t)); /* no pods: wait */
    throttler_set_pods(&t, dests, 3, false);
    struct pod_tracker *a = throttler_pick(&t), *b = throttler_pick(&t), *c = throttler_pick(&t);
    assert_string_equal(a->dest, "10.0.0.10:8012");
    assert_string_equal(b->dest, "10.0.0.11:8012");
    assert_string_equal(c->dest, "10.0.0.12:8012");
    assert_null(throttler_pick(&t)); /* every pod at CC */
    tracker_release(b);
    assert_ptr_equal(throttler_pick(&t), b);
    tracker_release(a);
    tracker_release(b);
    tracker_release(c);
    throttler_free(&t);
}

static void test_round_robin_and_removed_pod(void **state)
{
    (void)state;
    make_dests(3);
    struct throttler t;
    throttler_init(&t, 4, 1);
    assert_int_equal(t.policy, LB_ROUND_ROBIN);
    throttler_set_pods(&t, dests, 3, false);
    struct pod_tracker *p[6];
    for (int i = 0; i < 6; i++)
        p[i] = throttler_pick(&t);
    assert_ptr_equal(p[0], p[3]);
    assert_ptr_equal(p[1], p[4]);
    assert_true(p[0] != p[1] && p[1] != p[2]);
    /* The first pod leaves while it has requests: unlinked, freed on release. */
    throttler_set_pods(&t, dests + 1, 2, false);
    assert_int_equal(t.npods, 2);
    assert_false(p[0]->linked);
    tracker_release(p[0]);
    tracker_release(p[3]); /* last reference: freed (ASan would see a leak otherwise) */
    for (int i = 1; i < 6; i++)
        if (i != 3)
            tracker_release(p[i]);
    throttler_free(&t);
}

static void test_random_choice_2_prefers_less_loaded(void **state)
{
    (void)state;
    make_dests(2);
    struct throttler t;
    throttler_init(&t, 0, 42);
    throttler_set_pods(&t, dests, 2, false);
    struct pod_tracker *first = throttler_pick(&t);
    for (int i = 0; i < 10; i++) {
        struct pod_tracker *p = throttler_pick(&t);
        assert_true(p != first); /* the other one has fewer in flight */
        tracker_release(p);
    }
    tracker_release(first);
    throttler_free(&t);
}

/* ClusterIP mode (§3.8): one destination, capacity CC x ready / activators. */
static void test_cluster_ip_capacity(void **state)
{
    (void)state;
    struct throttler t;
    throttler_init(&t, 1, 42);
    throttler_set_cluster_ip(&t, "10.0.0.9:80", 2, false);
    assert_int_equal(throttler_current_capacity(&t), 2);
    struct pod_tracker *a = throttler_pick(&t), *b = throttler_pick(&t);
    assert_non_null(a);
    assert_ptr_equal(a, b);
    assert_string_equal(a->dest, "10.0.0.9:80");
    assert_null(throttler_pick(&t));
    tracker_release(a);
    throttler_set_activators(&t, 0, 2); /* 1 x 2 / 2 activators */
    assert_int_equal(throttler_current_capacity(&t), 1);
    assert_null(throttler_pick(&t));
    tracker_release(b);
    struct pod_tracker *c = throttler_pick(&t);
    assert_non_null(c);
    tracker_release(c);
    throttler_set_cluster_ip(&t, "10.0.0.9:80", 0, false); /* no ready pod behind it */
    assert_null(throttler_pick(&t));
    const char *pods[] = {"10.1.0.1:8012"};
    throttler_set_pods(&t, pods, 1, false); /* back to pod-direct */
    assert_false(t.cluster_ip);
    struct pod_tracker *d = throttler_pick(&t);
    assert_string_equal(d->dest, "10.1.0.1:8012");
    tracker_release(d);
    throttler_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pick_indices),
        cmocka_unit_test(test_assign_slice_ten_pods_three_activators),
        cmocka_unit_test(test_capacity),
        cmocka_unit_test(test_first_available),
        cmocka_unit_test(test_round_robin_and_removed_pod),
        cmocka_unit_test(test_random_choice_2_prefers_less_loaded),
        cmocka_unit_test(test_cluster_ip_capacity),
    };
    return cmocka_run_group_tests_name("throttler", tests, NULL, NULL);
}
