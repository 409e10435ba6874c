/* log.c — see log.h. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Where lines go: stdout, unless log_set_fd moved them (the local platform's own log file). */
static int log_fd = STDOUT_FILENO;

void log_set_fd(int fd)
{
    log_fd = fd;
}

static const char *log_logger = "coldbrew";
static const char *log_key;
static const char *log_pod;
static enum log_level log_min = LOG_INFO;

void log_init(const char *logger, const char *key, const char *pod)
{
    log_logger = logger;
    log_key = key && *key ? key : NULL;
    log_pod = pod && *pod ? pod : NULL;
}

void log_set_level(const char *name)
{
    if (!name || !*name)
        return;
    if (!strcasecmp(name, "debug"))
        log_min = LOG_DEBUG;
    else if (!strcasecmp(name, "info"))
        log_min = LOG_INFO;
    else if (!strcasecmp(name, "warn") || !strcasecmp(name, "warning"))
        log_min = LOG_WARN;
    else if (!strcasecmp(name, "error") || !strcasecmp(name, "fatal") || !strcasecmp(name, "panic"))
        log_min = LOG_ERROR;
}

enum log_level log_get_level(void)
{
    return log_min;
}

unsigned log_json_escape(char *out, unsigned cap, const char *s, unsigned len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned o = 0;
    for (unsigned i = 0; i < len && o + 7 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c == '\t') {
            out[o++] = '\\';
            out[o++] = 't';
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
        } else {
            out[o++] = (char)c;
        }
    }
    if (cap)
        out[o < cap ? o : cap - 1] = 0;
    return o;
}

static void emit(enum log_level level, const char *file, int line, const char *fields,
                 const char *fmt, va_list ap)
{
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char msg[2048], esc[4096], out[5120];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    log_json_escape(esc, sizeof esc, msg, (unsigned)n);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);

    int len = snprintf(out, sizeof out,
                       "{\"severity\":\"%s\",\"timestamp\":\"%s.%03ldZ\",\"logger\":\"%s\","
                       "\"caller\":\"%s:%d\",\"message\":\"%s\"",
                       names[level], ts, (long)(tv.tv_usec / 1000), log_logger, file, line, esc);
    if (log_key && len < (int)sizeof out)
        len +=
            snprintf(out + len, sizeof out - (size_t)len, ",\"knative.dev/key\":\"%s\"", log_key);
    if (log_pod && len < (int)sizeof out)
        len +=
            snprintf(out + len, sizeof out - (size_t)len, ",\"knative.dev/pod\":\"%s\"", log_pod);
    if (fields && len < (int)sizeof out)
        len += snprintf(out + len, sizeof out - (size_t)len, ",%s", fields);
    if (len > (int)sizeof out - 3)
        len = (int)sizeof out - 3;
    out[len++] = '}';
    out[len++] = '\n';
    ssize_t w = write(log_fd, out, (size_t)len);
    (void)w;
}

void log_emit(enum log_level level, const char *file, int line, const char *fmt, ...)
{
    if (level < log_min)
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, file, line, NULL, fmt, ap);
    va_end(ap);
}

void log_emit_fields(enum log_level level, const char *file, int line, const char *fields,
                     const char *fmt, ...)
{
    if (level < log_min)
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, file, line, fields, fmt, ap);
    va_end(ap);
}
