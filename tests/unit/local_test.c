/* local_test.c — the local platform's pure parts: YAML -> JSON with line
 * numbers (local/manifest.c) and a template's settings (local/settings.c),
 * against Knative's defaults and rules (spec §8.3). */
#include "unit.h"

#include <jansson.h>
#include <math.h>

#include "../../local/manifest.h"
#include "../../local/platform.h"

static json_t *yaml1(const char *text, json_t **lines)
{
    json_t *docs[4], *ls[4];
    char err[256];
    int n = manifest_parse_yaml("t.yaml", (const unsigned char *)text, strlen(text), docs, ls, 4,
                                err, sizeof err);
    assert_int_equal(n, 1);
    if (lines)
        *lines = ls[0];
    else
        json_decref(ls[0]);
    return docs[0];
}

static void test_yaml_scalars_and_lines(void **state)
{
    (void)state;
    json_t *lines;
    json_t *d = yaml1("a: 1\nb: \"1\"\nc: true\nd: 1.5\ne: ~\nf:\n  - x\n  - y: 2\n", &lines);
    assert_true(json_is_integer(json_object_get(d, "a")));
    assert_true(json_is_string(json_object_get(d, "b"))); /* quoted stays a string */
    assert_true(json_is_true(json_object_get(d, "c")));
    assert_true(json_real_value(json_object_get(d, "d")) == 1.5);
    assert_true(json_is_null(json_object_get(d, "e")));
    assert_int_equal(json_integer_value(json_object_get(lines, "f[1].y")), 8);
    assert_int_equal(json_integer_value(json_object_get(lines, "c")), 3);
    json_decref(d);
    json_decref(lines);
}

static void test_yaml_error_names_the_line(void **state)
{
    (void)state;
    json_t *docs[4], *ls[4];
    char err[256];
    const char *text = "a: 1\nb: [1, 2\nc: 3\n";
    int n = manifest_parse_yaml("bad.yaml", (const unsigned char *)text, strlen(text), docs, ls, 4,
                                err, sizeof err);
    assert_int_equal(n, -1);
    assert_non_null(strstr(err, "bad.yaml:"));
    assert_non_null(strstr(err, "YAML"));
}

static json_t *tmpl(const char *annotations, long cc)
{
    char text[2048];
    snprintf(text, sizeof text,
             "metadata:\n  annotations:\n%s\nspec:\n  containerConcurrency: %ld\n"
             "  containers:\n    - command: [x]\n",
             annotations, cc);
    return yaml1(text, NULL);
}

static void test_settings_defaults(void **state)
{
    (void)state;
    struct rev_settings s;
    char err[256];
    json_t *t = tmpl("    x: \"y\"", 10);
    assert_true(rev_settings_parse(t, &s, err, sizeof err));
    assert_int_equal(s.cc, 10);
    assert_int_equal(s.timeout, 300);
    assert_int_equal(s.initial_scale, 1);
    assert_int_equal(s.container_port, 8080);
    assert_true(fabs(s.kpa.target - 7.0) < 1e-9); /* CC 10 x 70% */
    assert_int_equal(s.kpa.stable_window, 60);
    assert_int_equal(s.kpa.panic_window, 6);
    assert_true(s.kpa.panic_threshold == 2.0);
    assert_true(s.kpa.target_burst_capacity == 211);
    assert_false(s.rps);
    json_decref(t);
}

static void test_settings_annotations(void **state)
{
    (void)state;
    struct rev_settings s;
    char err[256];
    json_t *t = tmpl("    autoscaling.knative.dev/metric: \"rps\"\n"
                     "    autoscaling.knative.dev/target-utilization-percentage: \"0.5\"\n"
                     "    autoscaling.knative.dev/window: \"1m30s\"\n"
                     "    autoscaling.knative.dev/panic-window-percentage: \"25\"\n"
                     "    autoscaling.knative.dev/panic-threshold-percentage: \"150\"\n"
                     "    autoscaling.knative.dev/min-scale: \"1\"\n"
                     "    autoscaling.knative.dev/max-scale: \"5\"\n"
                     "    autoscaling.knative.dev/initial-scale: \"0\"\n"
                     "    autoscaling.knative.dev/target-burst-capacity: \"-1\"\n"
                     "    autoscaling.knative.dev/scale-to-zero-pod-retention-period: \"5s\"\n"
                     "    coldbrew.dev/reserve-instance: \"enable\"",
                     0);
    assert_true(rev_settings_parse(t, &s, err, sizeof err));
    assert_true(s.rps && s.kpa.rps);
    assert_true(fabs(s.kpa.target - 100.0) < 1e-9); /* rps default 200, utilisation read as 50% */
    assert_int_equal(s.kpa.stable_window, 90);
    assert_int_equal(s.kpa.panic_window, 23); /* 25% of 90 s, rounded */
    assert_true(fabs(s.kpa.panic_threshold - 1.5) < 1e-9);
    assert_int_equal(s.min_scale, 1);
    assert_int_equal(s.max_scale, 5);
    assert_int_equal(s.initial_scale, 0);
    assert_true(s.kpa.target_burst_capacity == -1);
    assert_true(s.retention == 5.0);
    assert_true(s.reserve);
    json_decref(t);
    /* A target above CC is capped at CC (a soft target). */
    t = tmpl("    autoscaling.knative.dev/target: \"50\"", 10);
    assert_true(rev_settings_parse(t, &s, err, sizeof err));
    assert_true(fabs(s.kpa.target - 7.0) < 1e-9);
    json_decref(t);
}

static void test_settings_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *ann, *want;
    } cases[] = {
        {"    autoscaling.knative.dev/class: \"hpa.autoscaling.knative.dev\"", "class"},
        {"    autoscaling.knative.dev/metric: \"cpu\"", "metric: must be"},
        {"    autoscaling.knative.dev/window: \"5s\"", "window: must be a duration from 6s"},
        {"    autoscaling.knative.dev/min-scale: \"3\"\n    autoscaling.knative.dev/max-scale: "
         "\"2\"",
         "min-scale: larger than max-scale"},
        {"    autoscaling.knative.dev/target-burst-capacity: \"-2\"", "target-burst-capacity"},
        {"    coldbrew.dev/reserve-instance: \"yes\"", "reserve-instance"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct rev_settings s;
        char err[256] = "";
        json_t *t = tmpl(cases[i].ann, 0);
        assert_false(rev_settings_parse(t, &s, err, sizeof err));
        assert_non_null(strstr(err, cases[i].want));
        assert_non_null(strstr(err, "metadata.annotations."));
        json_decref(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_yaml_scalars_and_lines),
        cmocka_unit_test(test_yaml_error_names_the_line),
        cmocka_unit_test(test_settings_defaults),
        cmocka_unit_test(test_settings_annotations),
        cmocka_unit_test(test_settings_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
