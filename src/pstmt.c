/*
 * pstmt.c - statements, client names and server caches (pstmt.h): the data.
 *
 * Three uthash tables: the registry by statement body, a client's names by
 * name, a server's cache by id. The server cache also keeps a doubly linked
 * list in order of use, so that eviction takes the least recently used id in
 * O(1). uthash's default hash (Jenkins') reads twelve bytes a round, so long
 * SQL texts hash well without a hash function of our own.
 *
 * uthash frees a table when its last entry goes and allocates it again with
 * the next. A client that prepares and closes one statement per query would
 * pay for that on every Parse, so each table's first entry is an anchor: it
 * has a key length no lookup uses (none matches it), it is added before the
 * first real entry and it goes only with the whole table.
 */
#include "pstmt.h"

#include <assert.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct pstmt_name {
    UT_hash_handle hh;
    struct pstmt  *p;
    char           name[]; /* the client's name */
};

struct pstmt_slot {
    UT_hash_handle     hh;
    struct pstmt_slot *older, *newer;
    uint64_t           id;
    uint32_t           seq;       /* its Parse went out before this Sync */
    bool               confirmed; /* ... and succeeded */
};

#define ANCHOR_KEYLEN UINT_MAX /* no body, name or id is that long */

static atomic_uint_fast64_t next_id; /* process-wide: a server may move between workers */

/* fn(&tab): adds the anchor when tab is still NULL. false: out of memory. */
#define DEFINE_OPEN(fn, T, extra)                                                                                      \
    static bool fn(T **tab)                                                                                            \
    {                                                                                                                  \
        T *a;                                                                                                          \
                                                                                                                       \
        if (*tab != NULL) return true;                                                                                 \
        if ((a = calloc(1, sizeof(*a) + (extra))) == NULL) return false;                                               \
        /* Its key is never read: uthash compares hash and key length first. */                                        \
        HASH_ADD_KEYPTR_BYHASHVALUE(hh, *tab, NULL, ANCHOR_KEYLEN, 0, a);                                              \
        if (a->hh.tbl == NULL) {                                                                                       \
            free(a);                                                                                                   \
            return false;                                                                                              \
        }                                                                                                              \
        return true;                                                                                                   \
    }

DEFINE_OPEN(open_registry, struct pstmt, 0)
DEFINE_OPEN(open_names, struct pstmt_name, 1) /* an empty name */
DEFINE_OPEN(open_cache, struct pstmt_slot, 0)

/* ---- the registry ---- */

struct pstmt *pstmt_get(struct pstmt_registry *r, const uint8_t *body, size_t len)
{
    struct pstmt *p;

    assert(len < ANCHOR_KEYLEN);
    HASH_FIND(hh, r->tab, body, len, p);
    if (p != NULL) {
        p->refs++;
        return p;
    }
    if (!open_registry(&r->tab) || (p = malloc(sizeof(*p) + len)) == NULL) return NULL;
    p->id = atomic_fetch_add(&next_id, 1) + 1;
    p->refs = 1;
    p->effects = 0;
    p->names = NULL;
    p->len = len;
    memcpy(p->body, body, len);
    HASH_ADD_KEYPTR(hh, r->tab, p->body, len, p);
    if (p->hh.tbl == NULL) {
        free(p);
        return NULL;
    }
    r->n++;
    return p;
}

void pstmt_put(struct pstmt_registry *r, struct pstmt *p)
{
    if (--p->refs > 0) return;
    HASH_DELETE(hh, r->tab, p);
    r->n--;
    free(p->names);
    free(p);
}

void pstmt_registry_deinit(struct pstmt_registry *r)
{
    struct pstmt *anchor = r->tab;

    if (anchor == NULL) return;
    for (struct pstmt *p = anchor->hh.next, *next; p != NULL; p = next) {
        next = p->hh.next;
        free(p->names);
        free(p);
    }
    HASH_CLEAR(hh, r->tab);
    free(anchor);
    memset(r, 0, sizeof(*r));
}

/* ---- a client's names ---- */

static struct pstmt_name *name_entry(const struct pstmt_names *m, const char *name)
{
    struct pstmt_name *n;

    HASH_FIND(hh, m->tab, name, strlen(name), n);
    return n;
}

struct pstmt *pstmt_name_find(const struct pstmt_names *m, const char *name)
{
    struct pstmt_name *n = name_entry(m, name);

    return n ? n->p : NULL;
}

bool pstmt_name_add(struct pstmt_names *m, const char *name, struct pstmt *p)
{
    size_t             len = strlen(name);
    struct pstmt_name *n;

    if (!open_names(&m->tab) || (n = malloc(sizeof(*n) + len + 1)) == NULL) return false;
    memcpy(n->name, name, len + 1);
    n->p = p;
    HASH_ADD_KEYPTR(hh, m->tab, n->name, len, n);
    if (n->hh.tbl == NULL) {
        free(n);
        return false;
    }
    m->n++;
    return true;
}

struct pstmt *pstmt_name_remove(struct pstmt_names *m, const char *name)
{
    struct pstmt_name *n = name_entry(m, name);
    struct pstmt      *p;

    if (n == NULL) return NULL;
    p = n->p;
    HASH_DELETE(hh, m->tab, n);
    m->n--;
    free(n);
    return p;
}

/* Frees the table and its anchor; the entries must have been freed. */
static void names_close(struct pstmt_names *m)
{
    struct pstmt_name *anchor = m->tab;

    HASH_CLEAR(hh, m->tab);
    free(anchor);
    memset(m, 0, sizeof(*m));
}

void pstmt_names_move(struct pstmt_names *dst, struct pstmt_names *src, struct pstmt_registry *r)
{
    if (src->tab == NULL) return;
    for (struct pstmt_name *n = src->tab->hh.next, *next; n != NULL; n = next) {
        next = n->hh.next;
        if (pstmt_name_find(dst, n->name) != NULL || !pstmt_name_add(dst, n->name, n->p))
            pstmt_put(r, n->p); /* a newer name wins; out of memory loses the old one */
        free(n);
    }
    names_close(src);
}

void pstmt_names_clear(struct pstmt_names *m, struct pstmt_registry *r)
{
    if (m->tab == NULL) return;
    for (struct pstmt_name *n = m->tab->hh.next, *next; n != NULL; n = next) {
        next = n->hh.next;
        pstmt_put(r, n->p);
        free(n);
    }
    names_close(m);
}

/* ---- a server's cache ---- */

static struct pstmt_slot *slot_of(const struct pstmt_cache *c, uint64_t id)
{
    struct pstmt_slot *s;

    HASH_FIND(hh, c->tab, &id, sizeof(id), s);
    return s;
}

static void unlink_use(struct pstmt_cache *c, struct pstmt_slot *s)
{
    if (s->older)
        s->older->newer = s->newer;
    else
        c->lru = s->newer;
    if (s->newer)
        s->newer->older = s->older;
    else
        c->mru = s->older;
    s->older = s->newer = NULL;
}

static void link_newest(struct pstmt_cache *c, struct pstmt_slot *s)
{
    s->older = c->mru;
    s->newer = NULL;
    if (c->mru)
        c->mru->newer = s;
    else
        c->lru = s;
    c->mru = s;
}

bool pstmt_cache_use(struct pstmt_cache *c, uint64_t id)
{
    struct pstmt_slot *s = slot_of(c, id);

    if (s == NULL) return false;
    unlink_use(c, s);
    link_newest(c, s);
    return true;
}

bool pstmt_cache_add(struct pstmt_cache *c, uint64_t id, size_t max, uint64_t *evicted, bool *oom)
{
    struct pstmt_slot *s;

    *oom = false;
    if (pstmt_cache_use(c, id)) return false;
    if (!open_cache(&c->tab) || (s = malloc(sizeof(*s))) == NULL) {
        *oom = true;
        return false;
    }
    s->id = id;
    s->seq = 0;
    s->confirmed = true; /* until pstmt_cache_sent says otherwise */
    HASH_ADD(hh, c->tab, id, sizeof(s->id), s);
    if (s->hh.tbl == NULL) {
        free(s);
        *oom = true;
        return false;
    }
    c->n++;
    link_newest(c, s);
    return pstmt_cache_trim(c, max, evicted);
}

bool pstmt_cache_trim(struct pstmt_cache *c, size_t max, uint64_t *evicted)
{
    if (c->n <= max || c->lru == c->mru) return false;
    *evicted = c->lru->id;
    pstmt_cache_remove(c, *evicted);
    return true;
}

void pstmt_cache_sent(struct pstmt_cache *c, uint64_t id, uint32_t seq)
{
    struct pstmt_slot *s = slot_of(c, id);

    if (s == NULL) return;
    s->seq = seq;
    s->confirmed = false;
}

void pstmt_cache_confirm(struct pstmt_cache *c, uint64_t id)
{
    struct pstmt_slot *s = slot_of(c, id);

    if (s != NULL) s->confirmed = true;
}

bool pstmt_cache_settled(const struct pstmt_cache *c, uint64_t id, uint32_t seq)
{
    struct pstmt_slot *s = slot_of(c, id);

    return s != NULL && (s->confirmed || s->seq == seq);
}

void pstmt_cache_remove(struct pstmt_cache *c, uint64_t id)
{
    struct pstmt_slot *s = slot_of(c, id);

    if (s == NULL) return;
    HASH_DELETE(hh, c->tab, s);
    unlink_use(c, s);
    c->n--;
    free(s);
}

void pstmt_cache_clear(struct pstmt_cache *c)
{
    struct pstmt_slot *anchor = c->tab;

    for (struct pstmt_slot *s = c->lru, *next; s != NULL; s = next) {
        next = s->newer;
        free(s);
    }
    HASH_CLEAR(hh, c->tab);
    free(anchor);
    memset(c, 0, sizeof(*c));
}
