/* Tests for activator/coldstart.c, the cold-start ledger: the phases add up
 * whatever order the moments came in, an episode ends once a probe
 * succeeded, the histogram counts each cold-started request once, the
 * recent list keeps the newest. The .c is included to reach its statics
 * (h2o's way); `act` is this test's. */
#include "unit.h"

#include <event2/buffer.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../activator/coldstart.c"

static struct activator test_act;
struct activator *act = &test_act;

static struct revision *new_revision(void)
{
    struct revision *r = calloc(1, sizeof *r);
    snprintf(r->key, sizeof r->key, "default/hello-00001");
    snprintf(r->ns, sizeof r->ns, "default");
    snprintf(r->name, sizeof r->name, "hello-00001");
    snprintf(r->service, sizeof r->service, "hello");
    snprintf(r->configuration, sizeof r->configuration, "hello");
    HASH_ADD_STR(act->revisions, key, r);
    return r;
}

static void drop_revision(struct revision *r)
{
    HASH_DEL(act->revisions, r);
    cold_free(r);
    free(r);
}

#define MS 1000000ull

static void test_phases_add_up_in_order(void **state)
{
    (void)state;
    log_set_fd(open("/dev/null", O_WRONLY));
    struct revision *r = new_revision();
    cold_hold(r, 1000 * MS);
    r->cold->poke = 1001 * MS;
    r->cold->endpoints = 1300 * MS;
    r->cold->probe = 1305 * MS;
    struct cold_stamps s = {
        .held = 1000 * MS, .forwarded = 1305 * MS + MS / 2, .first_byte = 1306 * MS};
    double ms[COLD_PHASES + 1];
    cold_record(r, &s, ms);
    assert_true(ms[0] == 1.0);
    assert_true(ms[1] == 299.0);
    assert_true(ms[2] == 5.0);
    assert_true(ms[3] == 0.5);
    assert_true(ms[4] == 0.5);
    assert_true(ms[5] == 306.0);
    assert_int_equal(r->cold->count, 1);
    drop_revision(r);
}

/* A request that joins late (the pod listed before it arrived) or moments
 * missing (no poke: the revision was reporting) give phases of 0, never
 * negative ones, and the sum is still the total. */
static void test_late_joiner_and_missing_moments_clamp(void **state)
{
    (void)state;
    struct revision *r = new_revision();
    cold_hold(r, 1000 * MS);
    r->cold->poke = 0;
    r->cold->endpoints = 900 * MS; /* before it was held */
    r->cold->probe = 1010 * MS;
    struct cold_stamps s = {.held = 1000 * MS,
                            .forwarded = 1005 * MS, /* before the probe?! */
                            .first_byte = 1020 * MS};
    double ms[COLD_PHASES + 1];
    cold_record(r, &s, ms);
    double sum = 0;
    for (int i = 0; i < COLD_PHASES; i++) {
        assert_true(ms[i] >= 0);
        sum += ms[i];
    }
    assert_true(ms[0] == 0 && ms[1] == 0);
    assert_true(ms[2] == 10.0);
    assert_true(ms[3] == 0);
    assert_true(ms[4] == 10.0);
    assert_true(sum == ms[COLD_PHASES]);
    assert_true(ms[COLD_PHASES] == 20.0);
    drop_revision(r);
}

static void test_episode_opens_joins_and_ends_with_a_probe(void **state)
{
    (void)state;
    struct revision *r = new_revision();
    cold_on_poke(r); /* the first request's poke goes out before it is held */
    uint64_t poke = r->cold->last_poke;
    cold_hold(r, poke - 1);
    assert_true(r->cold->open);
    assert_true(r->cold->poke == poke);
    cold_on_endpoints(r);
    uint64_t ep = r->cold->endpoints;
    assert_true(ep >= poke);
    cold_on_endpoints(r); /* the first update counts */
    assert_true(r->cold->endpoints == ep);
    cold_hold(r, ep); /* a second request joins: nothing resets */
    assert_true(r->cold->endpoints == ep && r->cold->poke == poke);
    cold_on_capacity(r);
    assert_true(r->cold->probe >= ep);
    /* Back at zero later: the next cold request opens a new episode, and a
     * poke from long ago is not its poke. */
    cold_hold(r, r->cold->probe + 1000 * MS);
    assert_true(r->cold->open);
    assert_true(r->cold->endpoints == 0 && r->cold->probe == 0 && r->cold->poke == 0);
    /* Moments outside any episode are not stamped. */
    struct revision *q = new_revision();
    snprintf(q->key, sizeof q->key, "default/other");
    cold_on_endpoints(q);
    cold_on_capacity(q);
    assert_null(q->cold);
    HASH_DEL(act->revisions, q);
    free(q);
    drop_revision(r);
}

static void test_histogram_recent_and_json(void **state)
{
    (void)state;
    struct revision *r = new_revision();
    double ms[COLD_PHASES + 1];
    for (int i = 0; i < 10; i++) {
        cold_hold(r, 1000 * MS);
        r->cold->poke = r->cold->endpoints = r->cold->probe = 0;
        struct cold_stamps s = {
            .held = 1000 * MS, .forwarded = 1000 * MS, .first_byte = (1000 + (uint64_t)i + 1) * MS};
        cold_record(r, &s, ms);
        r->cold->probe = 1; /* the episode ended */
    }
    assert_int_equal(r->cold->count, 10);
    assert_int_equal(r->cold->nrecent, COLD_RECENT);
    struct evbuffer *b = evbuffer_new();
    cold_render_metrics(b);
    evbuffer_add(b, "", 1);
    const char *text = (const char *)evbuffer_pullup(b, -1);
    assert_non_null(strstr(text, "coldbrew_coldstart_requests_total{k8s_namespace_name=\"default\","
                                 "kn_service_name=\"hello\",kn_configuration_name=\"hello\","
                                 "kn_revision_name=\"hello-00001\"} 10\n"));
    /* 1..10 ms: le 0.01 holds all ten, le 0.005 five. */
    assert_non_null(strstr(text, "phase=\"total\",le=\"0.005\"} 5\n"));
    assert_non_null(strstr(text, "phase=\"total\",le=\"0.01\"} 10\n"));
    assert_non_null(strstr(text, "phase=\"response\",le=\"+Inf\"} 10\n"));
    assert_non_null(strstr(text,
                           "coldbrew_coldstart_phase_seconds_count{k8s_namespace_name="
                           "\"default\",kn_service_name=\"hello\",kn_configuration_name="
                           "\"hello\",kn_revision_name=\"hello-00001\",phase=\"poke\"} 10\n"));
    assert_non_null(strstr(text, "phase=\"total\"} 0.055\n")); /* sum: 1+...+10 ms */
    evbuffer_free(b);
    b = evbuffer_new();
    cold_render_json(b);
    evbuffer_add(b, "", 1);
    text = (const char *)evbuffer_pullup(b, -1);
    /* newest first: the tenth (10 ms), then the ninth */
    const char *first = strstr(text, "\"total_ms\":10.000");
    const char *second = strstr(text, "\"total_ms\":9.000");
    assert_non_null(first);
    assert_non_null(second);
    assert_true(first < second);
    assert_null(strstr(text, "\"total_ms\":2.000")); /* only the last 8 */
    assert_non_null(strstr(text, "\"count\":10"));
    evbuffer_free(b);
    drop_revision(r);
}

/* Cold starts that end with no response from a pod are counted by outcome
 * (the client leaving is 499), shown in the JSON, and record no phases. */
static void test_failed_cold_starts_counted_by_outcome(void **state)
{
    (void)state;
    struct revision *r = new_revision();
    struct cold_stamps s = {.held = 1000 * MS};
    cold_hold(r, s.held);
    cold_failed(r, &s, 504, 1600 * MS);
    cold_failed(r, &s, 504, 1700 * MS);
    cold_failed(r, &s, 0, 1100 * MS);
    cold_failed(r, &s, 418, 1100 * MS);
    assert_int_equal(r->cold->nfailed, 4);
    assert_int_equal(r->cold->count, 0); /* no phases: nothing in the histogram */
    struct evbuffer *b = evbuffer_new();
    cold_render_metrics(b);
    evbuffer_add(b, "", 1);
    const char *text = (const char *)evbuffer_pullup(b, -1);
    const char *labels = "coldbrew_coldstart_failed_total{k8s_namespace_name=\"default\","
                         "kn_service_name=\"hello\",kn_configuration_name=\"hello\","
                         "kn_revision_name=\"hello-00001\",";
    char want[512];
    snprintf(want, sizeof want, "%scode=\"504\"} 2\n", labels);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "%scode=\"499\"} 1\n", labels);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "%scode=\"other\"} 1\n", labels);
    assert_non_null(strstr(text, want));
    assert_null(strstr(text, "code=\"503\""));
    assert_null(strstr(text, "coldbrew_coldstart_phase_seconds_bucket"));
    evbuffer_free(b);
    b = evbuffer_new();
    cold_render_json(b);
    evbuffer_add(b, "", 1);
    text = (const char *)evbuffer_pullup(b, -1);
    assert_non_null(strstr(text, "\"count\":0,\"failed\":4,\"recent\":[]"));
    evbuffer_free(b);
    drop_revision(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phases_add_up_in_order),
        cmocka_unit_test(test_late_joiner_and_missing_moments_clamp),
        cmocka_unit_test(test_episode_opens_joins_and_ends_with_a_probe),
        cmocka_unit_test(test_histogram_recent_and_json),
        cmocka_unit_test(test_failed_cold_starts_counted_by_outcome),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
