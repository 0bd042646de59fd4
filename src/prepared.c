/*
 * prepared.c - statements, client names and server caches (prepared.h).
 *
 * Three small chained hash tables that double when they hold as many
 * entries as chains; the server cache also keeps a doubly linked list in
 * order of use, so that eviction takes the least recently used id in O(1).
 */
#include "prepared.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct pstmt_name {
    struct pstmt_name *next;
    struct pstmt      *p;
    char               name[]; /* the client's name */
};

struct pstmt_slot {
    struct pstmt_slot *next; /* hash chain */
    struct pstmt_slot *older, *newer;
    uint64_t           id;
    uint32_t           seq;       /* its Parse went out before this Sync */
    bool               confirmed; /* ... and succeeded */
};

static atomic_uint_fast64_t next_id; /* process-wide: a server may move between workers */

static uint32_t hash_bytes(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint32_t       h = 2166136261u; /* FNV-1a */

    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static size_t slot_of_id(uint64_t id, size_t nb)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (nb - 1);
}

static size_t slot_of_pstmt(const struct pstmt *e, size_t nb)
{
    return e->hash & (nb - 1);
}

static size_t slot_of_name(const struct pstmt_name *e, size_t nb)
{
    return hash_bytes(e->name, strlen(e->name)) & (nb - 1);
}

static size_t slot_of_slot(const struct pstmt_slot *e, size_t nb)
{
    return slot_of_id(e->id, nb);
}

/* Doubles a table of T chains (nb a power of two, 16 to start). */
#define DEFINE_REHASH(fn, T, slot)                                                                                     \
    static bool fn(T ***b, size_t *nb)                                                                                 \
    {                                                                                                                  \
        size_t nnb = *nb ? *nb * 2 : 16;                                                                               \
        T    **nbk = calloc(nnb, sizeof(*nbk));                                                                        \
                                                                                                                       \
        if (nbk == NULL) return false;                                                                                 \
        for (size_t i = 0; i < *nb; i++) {                                                                             \
            for (T *e = (*b)[i], *next; e != NULL; e = next) {                                                         \
                size_t k = slot(e, nnb);                                                                               \
                                                                                                                       \
                next = e->next;                                                                                        \
                e->next = nbk[k];                                                                                      \
                nbk[k] = e;                                                                                            \
            }                                                                                                          \
        }                                                                                                              \
        free(*b);                                                                                                      \
        *b = nbk;                                                                                                      \
        *nb = nnb;                                                                                                     \
        return true;                                                                                                   \
    }

DEFINE_REHASH(rehash_pstmts, struct pstmt, slot_of_pstmt)
DEFINE_REHASH(rehash_names, struct pstmt_name, slot_of_name)
DEFINE_REHASH(rehash_slots, struct pstmt_slot, slot_of_slot)

/* ---- the registry ---- */

struct pstmt *pstmt_get(struct pstmt_registry *r, const uint8_t *body, size_t len)
{
    uint32_t      h = hash_bytes(body, len);
    struct pstmt *p;

    if (r->nb > 0) {
        for (p = r->b[h & (r->nb - 1)]; p != NULL; p = p->next) {
            if (p->hash == h && p->len == len && memcmp(p->body, body, len) == 0) {
                p->refs++;
                return p;
            }
        }
    }
    if (r->n >= r->nb && !rehash_pstmts(&r->b, &r->nb)) return NULL;
    if ((p = malloc(sizeof(*p) + len)) == NULL) return NULL;
    p->id = atomic_fetch_add(&next_id, 1) + 1;
    p->refs = 1;
    p->effects = 0;
    p->names = NULL;
    p->hash = h;
    p->len = len;
    memcpy(p->body, body, len);
    p->next = r->b[h & (r->nb - 1)];
    r->b[h & (r->nb - 1)] = p;
    r->n++;
    return p;
}

void pstmt_put(struct pstmt_registry *r, struct pstmt *p)
{
    struct pstmt **link;

    if (--p->refs > 0) return;
    for (link = &r->b[p->hash & (r->nb - 1)]; *link != p; link = &(*link)->next)
        ;
    *link = p->next;
    r->n--;
    free(p->names);
    free(p);
}

void pstmt_registry_deinit(struct pstmt_registry *r)
{
    for (size_t i = 0; i < r->nb; i++) {
        for (struct pstmt *p = r->b[i], *next; p != NULL; p = next) {
            next = p->next;
            free(p->names);
            free(p);
        }
    }
    free(r->b);
    memset(r, 0, sizeof(*r));
}

/* ---- a client's names ---- */

static struct pstmt_name **name_link(const struct pstmt_names *m, const char *name)
{
    struct pstmt_name **link;

    if (m->nb == 0) return NULL;
    link = &m->b[hash_bytes(name, strlen(name)) & (m->nb - 1)];
    while (*link != NULL && strcmp((*link)->name, name) != 0)
        link = &(*link)->next;
    return link;
}

struct pstmt *pstmt_name_find(const struct pstmt_names *m, const char *name)
{
    struct pstmt_name **link = name_link(m, name);

    return link && *link ? (*link)->p : NULL;
}

bool pstmt_name_add(struct pstmt_names *m, const char *name, struct pstmt *p)
{
    size_t             len = strlen(name);
    struct pstmt_name *n;
    size_t             k;

    if (m->n >= m->nb && !rehash_names(&m->b, &m->nb)) return false;
    if ((n = malloc(sizeof(*n) + len + 1)) == NULL) return false;
    memcpy(n->name, name, len + 1);
    n->p = p;
    k = hash_bytes(name, len) & (m->nb - 1);
    n->next = m->b[k];
    m->b[k] = n;
    m->n++;
    return true;
}

struct pstmt *pstmt_name_remove(struct pstmt_names *m, const char *name)
{
    struct pstmt_name **link = name_link(m, name), *n;
    struct pstmt       *p;

    if (link == NULL || *link == NULL) return NULL;
    n = *link;
    p = n->p;
    *link = n->next;
    m->n--;
    free(n);
    return p;
}

void pstmt_names_move(struct pstmt_names *dst, struct pstmt_names *src, struct pstmt_registry *r)
{
    for (size_t i = 0; i < src->nb; i++) {
        for (struct pstmt_name *n = src->b[i], *next; n != NULL; n = next) {
            next = n->next;
            if (pstmt_name_find(dst, n->name) != NULL || !pstmt_name_add(dst, n->name, n->p))
                pstmt_put(r, n->p); /* a newer name wins; out of memory loses the old one */
            free(n);
        }
    }
    free(src->b);
    memset(src, 0, sizeof(*src));
}

void pstmt_names_clear(struct pstmt_names *m, struct pstmt_registry *r)
{
    for (size_t i = 0; i < m->nb; i++) {
        for (struct pstmt_name *n = m->b[i], *next; n != NULL; n = next) {
            next = n->next;
            pstmt_put(r, n->p);
            free(n);
        }
    }
    free(m->b);
    memset(m, 0, sizeof(*m));
}

/* ---- a server's cache ---- */

static struct pstmt_slot **slot_link(const struct pstmt_cache *c, uint64_t id)
{
    struct pstmt_slot **link;

    if (c->nb == 0) return NULL;
    link = &c->b[slot_of_id(id, c->nb)];
    while (*link != NULL && (*link)->id != id)
        link = &(*link)->next;
    return link;
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
    struct pstmt_slot **link = slot_link(c, id);

    if (link == NULL || *link == NULL) return false;
    unlink_use(c, *link);
    link_newest(c, *link);
    return true;
}

bool pstmt_cache_add(struct pstmt_cache *c, uint64_t id, size_t max, uint64_t *evicted, bool *oom)
{
    struct pstmt_slot *s;
    size_t             k;

    *oom = false;
    if (pstmt_cache_use(c, id)) return false;
    if ((c->n >= c->nb && !rehash_slots(&c->b, &c->nb)) || (s = malloc(sizeof(*s))) == NULL) {
        *oom = true;
        return false;
    }
    s->id = id;
    s->seq = 0;
    s->confirmed = true; /* until pstmt_cache_sent says otherwise */
    k = slot_of_id(id, c->nb);
    s->next = c->b[k];
    c->b[k] = s;
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
    struct pstmt_slot **link = slot_link(c, id);

    if (link == NULL || *link == NULL) return;
    (*link)->seq = seq;
    (*link)->confirmed = false;
}

void pstmt_cache_confirm(struct pstmt_cache *c, uint64_t id)
{
    struct pstmt_slot **link = slot_link(c, id);

    if (link != NULL && *link != NULL) (*link)->confirmed = true;
}

bool pstmt_cache_settled(const struct pstmt_cache *c, uint64_t id, uint32_t seq)
{
    struct pstmt_slot **link = slot_link(c, id);

    return link != NULL && *link != NULL && ((*link)->confirmed || (*link)->seq == seq);
}

void pstmt_cache_remove(struct pstmt_cache *c, uint64_t id)
{
    struct pstmt_slot **link = slot_link(c, id), *s;

    if (link == NULL || *link == NULL) return;
    s = *link;
    *link = s->next;
    unlink_use(c, s);
    c->n--;
    free(s);
}

void pstmt_cache_clear(struct pstmt_cache *c)
{
    while (c->lru != NULL)
        pstmt_cache_remove(c, c->lru->id);
    free(c->b);
    memset(c, 0, sizeof(*c));
}
