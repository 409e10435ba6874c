/* env.h — reading the environment contract.
 *
 * Knative's Go binaries parse env with envconfig: a required variable that is
 * *absent* is fatal ("required key X missing value"); an empty one is fine.
 * env_require() collects every missing name so the process can say all of
 * them in one message before exiting 1. */
#ifndef COLDBREW_ENV_H
#define COLDBREW_ENV_H

#include <stdbool.h>

struct env_missing {
    char names[1024]; /* comma separated */
    int count;
};

/* Returns the value (possibly ""), or NULL after recording `name` as missing. */
const char *env_require(struct env_missing *m, const char *name);
/* Value or `def` when unset or empty. */
const char *env_str(const char *name, const char *def);
/* Integer/double/bool parsing; on a malformed value *ok is set false. */
long env_long(const char *name, long def, bool *ok);
double env_double(const char *name, double def, bool *ok);
bool env_bool(const char *name, bool def);
/* Parse helpers usable on any string. */
bool parse_long(const char *s, long *out);
bool parse_double(const char *s, double *out);
bool parse_bool(const char *s, bool *out);
/* Go's time.ParseDuration ("300ms", "1m30s", "2h", "1.5s"); bare numbers are rejected. */
bool parse_go_duration(const char *s, double *seconds);
/* An env var holding a Go duration; def when unset; *ok false when malformed. */
double env_duration(const char *name, double def, bool *ok);

#endif
