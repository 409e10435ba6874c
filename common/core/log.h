/* log.h — structured JSON logs in the shape Knative's components emit (zap):
 *
 *   {"severity":"INFO","timestamp":"2026-11-25T16:00:00.123Z","logger":"queueproxy",
 *    "caller":"queue-proxy/main.c:42","message":"...","knative.dev/key":"ns/rev",
 *    "knative.dev/pod":"pod-1"}
 *
 * One line per call, written to stdout with a single write(2) so lines from
 * one process never interleave. The identity (logger, key, pod) is set once
 * at start-up with log_init(); nothing here allocates. */
#ifndef COLDBREW_LOG_H
#define COLDBREW_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* logger: "queueproxy", "activator", ...; key and pod may be NULL. */
void log_init(const char *logger, const char *key, const char *pod);
/* Messages below `level` are dropped. Accepts zap's names: debug, info, warn, error.
 * Anything else is ignored, not an error: Knative's NewLogger does the same. */
void log_set_level(const char *name);
enum log_level log_get_level(void);
/* Lines go to fd instead of stdout (the local platform keeps its terminal for people). */
void log_set_fd(int fd);

void log_emit(enum log_level level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The same line with more top-level keys: `fields` is preformatted JSON
 * members without braces ("\"a\":1,\"b\":\"x\""), written after the identity
 * keys. A line too long for the buffer is cut, so keep them short. */
void log_emit_fields(enum log_level level, const char *file, int line, const char *fields,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
#define log_info_fields(fields, ...)                                                               \
    log_emit_fields(LOG_INFO, __FILE__, __LINE__, fields, __VA_ARGS__)
#define log_warn_fields(fields, ...)                                                               \
    log_emit_fields(LOG_WARN, __FILE__, __LINE__, fields, __VA_ARGS__)

/* Append `s` (len bytes) to out as JSON string content (no quotes); returns
 * bytes written, never more than cap-1; out is NUL terminated. */
unsigned log_json_escape(char *out, unsigned cap, const char *s, unsigned len);

#define log_debug(...) log_emit(LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define log_info(...)  log_emit(LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define log_warn(...)  log_emit(LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define log_error(...) log_emit(LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)

#endif
