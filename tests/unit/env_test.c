/* Tests for common/core/env.c and common/core/log.c escaping. */
#include "unit.h"

#include <stdlib.h>

#include "core/env.h"
#include "core/log.h"

static void test_require_collects_all(void **state)
{
    (void)state;
    struct env_missing m = {{0}, 0};
    setenv("CB_PRESENT", "", 1);
    unsetenv("CB_A");
    unsetenv("CB_B");
    assert_string_equal(env_require(&m, "CB_PRESENT"), ""); /* empty is fine */
    assert_null(env_require(&m, "CB_A"));
    assert_null(env_require(&m, "CB_B"));
    assert_int_equal(m.count, 2);
    assert_string_equal(m.names, "CB_A, CB_B");
}

static void test_parsers(void **state)
{
    (void)state;
    bool b;
    long l;
    double d;
    assert_true(parse_bool("True", &b) && b);
    assert_true(parse_bool("0", &b) && !b);
    assert_false(parse_bool("yes", &b));
    assert_true(parse_long("-12", &l) && l == -12);
    assert_false(parse_long("12x", &l));
    assert_true(parse_double("0.5", &d) && d == 0.5);
    setenv("CB_BAD", "zz", 1);
    bool ok = true;
    assert_int_equal(env_long("CB_BAD", 7, &ok), 7);
    assert_false(ok);
}

static void test_go_duration(void **state)
{
    (void)state;
    double d;
    assert_true(parse_go_duration("300ms", &d) && d > 0.2999 && d < 0.3001);
    assert_true(parse_go_duration("1m30s", &d) && d == 90);
    assert_true(parse_go_duration("1.5s", &d) && d == 1.5);
    assert_true(parse_go_duration("2h", &d) && d == 7200);
    assert_true(parse_go_duration("0", &d) && d == 0);
    assert_false(parse_go_duration("300", &d)); /* Go requires a unit */
    assert_false(parse_go_duration("3x", &d));
    assert_false(parse_go_duration("", &d));
}

static void test_json_escape(void **state)
{
    (void)state;
    char out[64];
    log_json_escape(out, sizeof out, "a\"b\\\n\x01", 6);
    assert_string_equal(out, "a\\\"b\\\\\\n\\u0001");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_require_collects_all),
        cmocka_unit_test(test_parsers),
        cmocka_unit_test(test_go_duration),
        cmocka_unit_test(test_json_escape),
    };
    return cmocka_run_group_tests_name("env", tests, NULL, NULL);
}
