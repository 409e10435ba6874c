/* alloc.c — see alloc.h. */
#include "core/alloc.h"
#include "core/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char coldbrew_err_no_memory[] = "out of memory";

void alloc_fail(size_t n, const char *file, int line)
{
    /* No log_*: the JSON logger may itself be what cannot be served. One
     * write(2), no allocation. */
    char msg[256];
    int len = n ? snprintf(msg, sizeof msg, "coldbrew: out of memory: %zu bytes at %s:%d\n", n,
                           file, line)
                : snprintf(msg, sizeof msg, "coldbrew: out of memory at %s:%d\n", file, line);
    if (len > 0)
        (void)!write(2, msg, (size_t)len < sizeof msg ? (size_t)len : sizeof msg - 1);
    abort();
}

void *alloc_x_malloc(size_t n, const char *file, int line)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        alloc_fail(n, file, line);
    return p;
}

void *alloc_x_calloc(size_t count, size_t size, const char *file, int line)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        alloc_fail(count * size, file, line);
    return p;
}

void *alloc_x_realloc(void *p, size_t n, const char *file, int line)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        alloc_fail(n, file, line);
    return q;
}

char *alloc_x_strdup(const char *s, const char *file, int line)
{
    size_t n = strlen(s) + 1;
    char *p = alloc_x_malloc(n, file, line);
    memcpy(p, s, n);
    return p;
}
