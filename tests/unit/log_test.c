/* Tests for common/core/log.c: one JSON object per line in zap's shape. */
#include "unit.h"

#include <jansson.h>
#include <stdio.h>
#include <unistd.h>

#include "core/log.h"

static void test_shape(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    int saved = dup(STDOUT_FILENO);
    dup2(p[1], STDOUT_FILENO);
    log_init("queueproxy", "default/hello-00001", "hello-pod");
    log_set_level("info");
    log_debug("hidden");
    log_warn("a \"quoted\" message %d", 42);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(p[1]);
    char buf[4096];
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    close(p[0]);
    assert_true(n > 0);
    buf[n] = 0;
    assert_non_null(strchr(buf, '\n'));
    assert_null(strchr(strchr(buf, '\n') + 1, '\n')); /* one line: debug was dropped */
    json_error_t e;
    json_t *j = json_loads(buf, 0, &e);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "severity")), "WARN");
    assert_string_equal(json_string_value(json_object_get(j, "logger")), "queueproxy");
    assert_string_equal(json_string_value(json_object_get(j, "message")),
                        "a \"quoted\" message 42");
    assert_string_equal(json_string_value(json_object_get(j, "knative.dev/key")),
                        "default/hello-00001");
    assert_string_equal(json_string_value(json_object_get(j, "knative.dev/pod")), "hello-pod");
    assert_non_null(json_object_get(j, "timestamp"));
    assert_non_null(json_object_get(j, "caller"));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_shape)};
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
