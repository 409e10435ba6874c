/* freelist.c — see freelist.h. */
#include "core/freelist.h"
#include "core/alloc.h"

#include <stdlib.h>

void *freelist_get(struct freelist *f)
{
    void *p = f->head;
    if (p) {
        f->head = *(void **)p;
        f->len--;
        return p;
    }
    return xmalloc(f->size); /* a warm pool (alloc.h, kind 3) */
}

void freelist_put(struct freelist *f, void *obj)
{
    *(void **)obj = f->head;
    f->head = obj;
    f->len++;
}

void freelist_trim(struct freelist *f, unsigned keep)
{
    while (f->head && f->len > keep) {
        void *p = f->head;
        f->head = *(void **)p;
        f->len--;
        free(p);
    }
}
