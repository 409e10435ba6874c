/* loop.h — the process's single libevent loop and deferred frees.
 *
 * coldbrew runs one event loop per process (a sidecar usually has less
 * than one CPU; one thread without locks is the design). Objects that may be
 * referenced further up the call stack when they die (connections, upstream
 * connections) are not freed in place: loop_defer_free() queues them and a
 * zero-timeout event frees them once the current callback has returned. */
#ifndef COLDBREW_LOOP_H
#define COLDBREW_LOOP_H

#include <event2/event.h>

struct event_base *loop_init(void);
struct event_base *loop_base(void);
/* fn(ptr) runs after the current callback unwinds. */
void loop_defer_free(void *ptr, void (*fn)(void *));
/* Runs pending deferred frees now (at exit). */
void loop_flush_deferred(void);
void loop_free(void);

#endif
