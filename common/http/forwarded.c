/* forwarded.c — see forwarded.h. */
#include "http/forwarded.h"

#include <string.h>

static int app(char *buf, size_t cap, size_t *o, const char *s, size_t n)
{
    if (*o + n >= cap)
        return -1;
    memcpy(buf + *o, s, n);
    *o += n;
    return 0;
}

static int node(char *buf, size_t cap, size_t *o, const char *s, size_t n)
{
    /* An IPv6 address has a colon and is not already bracketed. */
    if (memchr(s, ':', n) && n && s[0] != '[' && s[0] != '"') {
        if (app(buf, cap, o, "\"[", 2) || app(buf, cap, o, s, n) || app(buf, cap, o, "]\"", 2))
            return -1;
        return 0;
    }
    return app(buf, cap, o, s, n);
}

size_t forwarded_build(char *buf, size_t cap, const char *xff, size_t xff_len, const char *xfh,
                       size_t xfh_len, const char *xfp, size_t xfp_len)
{
    if (!xff)
        xff_len = 0;
    if (!xfh)
        xfh_len = 0;
    if (!xfp)
        xfp_len = 0;
    if (!xff_len && !xfh_len && !xfp_len)
        return 0;
    size_t o = 0;
    size_t i = 0;
    int first = 1;
    /* First node carries host and proto. */
    do {
        while (i < xff_len && (xff[i] == ' ' || xff[i] == ','))
            i++;
        size_t start = i;
        while (i < xff_len && xff[i] != ',')
            i++;
        size_t end = i;
        while (end > start && xff[end - 1] == ' ')
            end--;
        if (!first && end == start)
            break;
        if (!first && app(buf, cap, &o, ", ", 2))
            return 0;
        if (end > start) {
            if (app(buf, cap, &o, "for=", 4) || node(buf, cap, &o, xff + start, end - start))
                return 0;
        }
        if (first) {
            if (xfh_len) {
                if ((o && app(buf, cap, &o, ";", 1)) || app(buf, cap, &o, "host=", 5) ||
                    app(buf, cap, &o, xfh, xfh_len))
                    return 0;
            }
            if (xfp_len) {
                if ((o && app(buf, cap, &o, ";", 1)) || app(buf, cap, &o, "proto=", 6) ||
                    app(buf, cap, &o, xfp, xfp_len))
                    return 0;
            }
        }
        first = 0;
    } while (i < xff_len);
    buf[o] = 0;
    return o;
}

size_t forwarded_bound(const char *xff, size_t xff_len, size_t xfh_len, size_t xfp_len)
{
    size_t elements = 1;
    if (!xff)
        xff_len = 0; /* and no arithmetic on NULL, not even + 0 (UBSan) */
    else
        for (const char *p = xff, *end = xff + xff_len; (p = memchr(p, ',', (size_t)(end - p)));
             p++)
            elements++;
    return xff_len + 10 * elements + sizeof ";host=" - 1 + xfh_len + sizeof ";proto=" - 1 +
           xfp_len + 1;
}

size_t js_escape(char *buf, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *rep = NULL;
        char tmp[8];
        switch (c) {
        case '\\':
            rep = "\\\\";
            break;
        case '\'':
            rep = "\\'";
            break;
        case '"':
            rep = "\\\"";
            break;
        case '<':
            rep = "\\u003C";
            break;
        case '>':
            rep = "\\u003E";
            break;
        case '&':
            rep = "\\u0026";
            break;
        case '=':
            rep = "\\u003D";
            break;
        default:
            if (c < ' ' || c == 0x7f) {
                memcpy(tmp, "\\u00", 4);
                tmp[4] = hex[c >> 4];
                tmp[5] = hex[c & 15];
                tmp[6] = 0;
                rep = tmp;
            }
        }
        size_t n = rep ? strlen(rep) : 1;
        if (o + n >= cap)
            break;
        if (rep)
            memcpy(buf + o, rep, n);
        else
            buf[o] = (char)c;
        o += n;
    }
    if (cap)
        buf[o] = 0;
    return o;
}
