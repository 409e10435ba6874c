/* statpb.h — the autoscaler's Stat message on the wire (protobuf-c).
 *
 * Encoding is proto3 as gogo marshals it: ascending tags, zero fields
 * omitted, doubles as fixed64 little-endian. protobuf-c generates exactly
 * that for proto3 scalars without presence. */
#ifndef COLDBREW_STATPB_H
#define COLDBREW_STATPB_H

#include <stddef.h>
#include <stdint.h>

struct statpb {
    const char *pod_name;
    double average_concurrent_requests;
    double average_proxied_concurrent_requests;
    double request_count;
    double proxied_request_count;
    double process_uptime;
    int64_t timestamp;
};

/* Encodes into buf; returns the length, or 0 if cap is too small. */
size_t statpb_encode(const struct statpb *s, uint8_t *buf, size_t cap);
/* One revision's stat in a WireStatMessages batch (the activator's reports). */
struct statpb_wire {
    const char *namespace_, *name;
    struct statpb stat;
};
/* Encodes a WireStatMessages batch; returns the length, 0 if cap is too
 * small or memory is short. */
size_t statpb_encode_wire(const struct statpb_wire *msgs, size_t n, uint8_t *buf, size_t cap);
/* Decodes (tests, the autoscaler); pod name copied into name_buf. NULL, or
 * statpb_err_malformed (err.h). */
extern const char statpb_err_malformed[];
const char *statpb_decode(const uint8_t *buf, size_t len, struct statpb *out, char *name_buf,
                          size_t cap);

#endif
