/* err.h — how coldbrew reports errors: one convention, h2o's.
 *
 *   - A function that can fail returns `const char *`: NULL when it worked,
 *     otherwise a static string saying what failed. Static means never freed,
 *     never built with snprintf, valid for the life of the process: a string
 *     literal, a named constant, or strerror()'s text for a known errno.
 *   - A caller that must tell failures apart compares the pointer (not the
 *     text) with a named constant the module's header declares:
 *         extern const char <module>_err_<what>[];
 *     e.g. `if (err == http_call_err_timeout)`. Everyone else just logs it.
 *   - A function that returns an object returns NULL on failure and, when
 *     the caller needs the reason, sets `const char **err` (only on failure).
 *   - Where a person needs dynamic detail (a manifest's `file:line: field:
 *     why`, the malformed value of a setting, the address a connect failed
 *     on), the function also takes a caller-provided `char *detail, size_t
 *     cap`, filled on failure only. The static error is still what callers
 *     test; the detail is what they print.
 *   - A predicate or parser whose failures no caller tells apart (it only
 *     prints them or stops) returns bool, false = failed, with the detail
 *     buffer when a person reads the reason:
 *     parse_long(), kpa_init() (memory), manifest_load() and
 *     rev_settings_parse() (`file:line: field: why`). env_long()'s `bool *ok`
 *     collects that one failure across a batch of settings.
 *   - Three kinds keep their native shape, because their callers branch on
 *     the code: system-call wrappers (net.c: -1 and errno, as POSIX),
 *     parsers that answer a status (h1_parser: H1_ERROR plus p->err, itself
 *     a static string from llhttp), and callbacks a library defines (wslay's
 *     recv/send in ws_io.c: -1 and wslay_event_set_error()).
 *
 * Where it is applied: http_client (http_call_err_*, call->detail), k8s
 * (k8s_err_*), statpb (statpb_err_malformed), ws_server/ws_client, server,
 * api, autoscaler (const char **err from their constructors).
 *
 * Names shared by several modules live here. */
#ifndef COLDBREW_ERR_H
#define COLDBREW_ERR_H

/* An allocation on the request path failed (see alloc.h). */
extern const char coldbrew_err_no_memory[];

#endif
