/* env.c — see env.h. */
#include "core/env.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *env_require(struct env_missing *m, const char *name)
{
    const char *v = getenv(name);
    if (v)
        return v;
    size_t used = strlen(m->names);
    snprintf(m->names + used, sizeof m->names - used, "%s%s", m->count ? ", " : "", name);
    m->count++;
    return NULL;
}

const char *env_str(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

bool parse_long(const char *s, long *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

bool parse_double(const char *s, double *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* Go's strconv.ParseBool spellings. */
bool parse_bool(const char *s, bool *out)
{
    static const char *yes[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *no[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (unsigned i = 0; i < 6; i++) {
        if (!strcmp(s, yes[i])) {
            *out = true;
            return true;
        }
        if (!strcmp(s, no[i])) {
            *out = false;
            return true;
        }
    }
    return false;
}

long env_long(const char *name, long def, bool *ok)
{
    const char *v = getenv(name);
    long out;
    if (!v || !*v)
        return def;
    if (!parse_long(v, &out)) {
        if (ok)
            *ok = false;
        return def;
    }
    return out;
}

double env_double(const char *name, double def, bool *ok)
{
    const char *v = getenv(name);
    double out;
    if (!v || !*v)
        return def;
    if (!parse_double(v, &out)) {
        if (ok)
            *ok = false;
        return def;
    }
    return out;
}

bool env_bool(const char *name, bool def)
{
    const char *v = getenv(name);
    bool out;
    if (!v || !*v || !parse_bool(v, &out))
        return def;
    return out;
}

bool parse_go_duration(const char *s, double *seconds)
{
    static const struct {
        const char *unit;
        double scale;
    } units[] = {{"ns", 1e-9}, {"us", 1e-6}, {"\xc2\xb5s", 1e-6}, {"ms", 1e-3},
                 {"s", 1},     {"m", 60},    {"h", 3600}};
    if (!s || !*s)
        return false;
    double total = 0;
    bool neg = false;
    if (*s == '-' || *s == '+')
        neg = *s++ == '-';
    if (!strcmp(s, "0")) {
        *seconds = 0;
        return true;
    }
    while (*s) {
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (end == s || errno)
            return false;
        s = end;
        unsigned i, best = 0;
        size_t best_len = 0;
        for (i = 0; i < sizeof units / sizeof units[0]; i++) {
            size_t n = strlen(units[i].unit);
            if (!strncmp(s, units[i].unit, n) && n > best_len) {
                best = i;
                best_len = n;
            }
        }
        if (!best_len)
            return false;
        total += v * units[best].scale;
        s += best_len;
    }
    *seconds = neg ? -total : total;
    return true;
}

double env_duration(const char *name, double def, bool *ok)
{
    const char *v = getenv(name);
    double out;
    if (!v || !*v)
        return def;
    if (!parse_go_duration(v, &out)) {
        if (ok)
            *ok = false;
        return def;
    }
    return out;
}
