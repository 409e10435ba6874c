/* stats.h — time-weighted request concurrency, as Knative's RequestStats.
 *
 * Every arrival and departure integrates the concurrency that held since
 * the previous event; a report divides the integral by the time covered and
 * resets the window (current concurrency carries over). O(1) per event.
 * "Proxied" requests (K-Proxy-Request: activator) count in both totals. */
#ifndef COLDBREW_STATS_H
#define COLDBREW_STATS_H

#include <stdbool.h>
#include <stdint.h>

struct stats {
    double concurrency, proxied_concurrency;
    double computed, proxied_computed, seconds_in_use;
    double request_count, proxied_count;
    uint64_t last_change_ns;
};

struct stats_report {
    double average_concurrency, average_proxied_concurrency;
    double request_count, proxied_request_count;
};

void stats_init(struct stats *s, uint64_t now_ns);
void stats_in(struct stats *s, uint64_t now_ns, bool proxied);
void stats_out(struct stats *s, uint64_t now_ns, bool proxied);
struct stats_report stats_report(struct stats *s, uint64_t now_ns);

#endif
