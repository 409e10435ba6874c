/* freelist.h — recycling fixed-size objects (per-request contexts) so the
 * hot path does not allocate once warm. The link is stored in the object's
 * first bytes while it is free: a caller initialises what it uses on get.
 * freelist_trim() gives memory back after idle periods and at exit. */
#ifndef COLDBREW_FREELIST_H
#define COLDBREW_FREELIST_H

#include <stddef.h>

struct freelist {
    void *head;
    unsigned len;
    size_t size; /* object size, at least sizeof(void *) */
};

#define FREELIST_INIT(type)                                                                        \
    {                                                                                              \
        NULL, 0, sizeof(type) < sizeof(void *) ? sizeof(void *) : sizeof(type)                     \
    }

void *freelist_get(struct freelist *f); /* never NULL: aborts when memory is gone */
void freelist_put(struct freelist *f, void *obj);
void freelist_trim(struct freelist *f, unsigned keep);

#endif
