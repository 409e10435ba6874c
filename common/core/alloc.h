/* alloc.h — how coldbrew handles a failed allocation: one policy per kind.
 *
 * 1. Start-up and configuration (reading settings, opening listeners,
 *    creating the loop's timers, a module's constructor called from main):
 *    use xmalloc() / xcalloc() / xrealloc() / xstrdup() / X_CHECK(). A
 *    failure there means the process cannot be what it was asked to be, so
 *    it aborts at once with one clear line on stderr ("coldbrew: out of
 *    memory: N bytes at file:line"). Nothing half-started keeps running.
 *
 * 2. The request path (a connection accepted, a request, a WebSocket
 *    session, a watch event, a probe): plain malloc/calloc/evbuffer_new/
 *    event_new, each result checked. A failure answers the protocol's error
 *    (HTTP 503 Service Unavailable; a WebSocket connection is closed before
 *    the 101; an http_call ends with coldbrew_err_no_memory), is logged
 *    once with log_warn/log_error, and the process keeps serving everyone
 *    else. Whatever was allocated for that request is released.
 *
 * 3. The warm pools that every request draws from (freelist.c, http_head.c,
 *    loop.c's deferred queue) allocate only while warming up or growing, a
 *    few hundred bytes at a time; they use the x* helpers too. When the
 *    allocator cannot hand out one request head the process cannot answer
 *    503 either (that needs a head), and the orchestrator's restart is the
 *    recovery.
 *
 * Libraries' constructors (evbuffer_new, event_new, nghttp2_*_new,
 * wslay_event_context_*_init, SSL_new, json_*) follow the same kinds: at
 * start-up X_CHECK(ptr) them; on the request path check and fail the request.
 * With jemalloc a failure is rare, but a NULL dereference would take every
 * connection of the process down with the one request that hit it. */
#ifndef COLDBREW_ALLOC_H
#define COLDBREW_ALLOC_H

#include <stddef.h>

/* Prints "coldbrew: out of memory: <n> bytes at <file>:<line>" and aborts. */
__attribute__((noreturn)) void alloc_fail(size_t n, const char *file, int line);

void *alloc_x_malloc(size_t n, const char *file, int line);
void *alloc_x_calloc(size_t count, size_t size, const char *file, int line);
void *alloc_x_realloc(void *p, size_t n, const char *file, int line);
char *alloc_x_strdup(const char *s, const char *file, int line);

#define xmalloc(n)         alloc_x_malloc((n), __FILE__, __LINE__)
#define xcalloc(count, sz) alloc_x_calloc((count), (sz), __FILE__, __LINE__)
#define xrealloc(p, n)     alloc_x_realloc((p), (n), __FILE__, __LINE__)
#define xstrdup(s)         alloc_x_strdup((s), __FILE__, __LINE__)
/* For library constructors at start-up: evaluates to ptr, aborts when NULL. */
#define X_CHECK(ptr)                                                                               \
    ({                                                                                             \
        __typeof__(ptr) x_check_p_ = (ptr);                                                        \
        if (!x_check_p_)                                                                           \
            alloc_fail(0, __FILE__, __LINE__);                                                     \
        x_check_p_;                                                                                \
    })

#endif
