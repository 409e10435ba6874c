/* clock.h — monotonic time in nanoseconds and seconds.
 *
 * Everything that measures durations (timeouts, latency, time-weighted
 * concurrency) uses CLOCK_MONOTONIC through the vDSO: no syscall, immune to
 * wall-clock steps. Wall time is only used for log timestamps (log.c). */
#ifndef COLDBREW_CLOCK_H
#define COLDBREW_CLOCK_H

#include <stdint.h>
#include <sys/time.h>
#include <time.h>

static inline uint64_t clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A duration in seconds (fractions allowed) as a libevent timeval. */
static inline struct timeval clock_tv(double seconds)
{
    struct timeval tv;
    if (seconds < 0)
        seconds = 0;
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    return tv;
}

#endif
