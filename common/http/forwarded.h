/* forwarded.h — RFC 7239 Forwarded header from X-Forwarded-* (Knative's
 * ForwardedShimHandler), and Go's text/template `js` escaping for request
 * logs. Pure functions over strings; no allocation. */
#ifndef COLDBREW_FORWARDED_H
#define COLDBREW_FORWARDED_H

#include <stddef.h>

/* Builds the Forwarded value from the X-Forwarded-For list, -Host and
 * -Proto (any may be NULL/empty). Returns its length, 0 when there is
 * nothing to build or it does not fit in cap. IPv6 nodes are quoted
 * "[addr]", as Knative does. */
size_t forwarded_build(char *buf, size_t cap, const char *xff, size_t xff_len, const char *xfh,
                       size_t xfh_len, const char *xfp, size_t xfp_len);

/* The room forwarded_build needs at most for these inputs (its NUL
 * included), so a caller can size the buffer once: each X-Forwarded-For
 * element grows by at most 10 bytes (for=, the quoted brackets of an IPv6
 * node, the ", " after it), host and proto by their keys. */
size_t forwarded_bound(const char *xff, size_t xff_len, size_t xfh_len, size_t xfp_len);

/* Go's template.JSEscape of s into buf; returns the length written. */
size_t js_escape(char *buf, size_t cap, const char *s, size_t len);

#endif
