/*
 * test_pstmt.c - the statement registry, a client's names and a
 * server's cache: sharing, references, growth past many entries, and
 * least-recently-used eviction.
 */
#include <stdio.h>
#include <string.h>

#include "pstmt.h"
#include "tap.h"

/* A Parse body: query, NUL, no parameter types. */
static size_t body_of(char *buf, const char *query)
{
    size_t n = strlen(query) + 1;

    memcpy(buf, query, n);
    buf[n] = buf[n + 1] = 0;
    return n + 2;
}

static void registry(void)
{
    struct pstmt_registry r = {0};
    char                  b[64];
    size_t                n = body_of(b, "SELECT 1");
    struct pstmt         *a = pstmt_get(&r, (uint8_t *)b, n), *a2 = pstmt_get(&r, (uint8_t *)b, n);
    struct pstmt         *c = pstmt_get(&r, (uint8_t *)b, body_of(b, "SELECT 2"));

    ok(a != NULL && a == a2 && a->refs == 2, "the same text is one statement, referenced twice");
    ok(c != NULL && c != a && c->id != a->id, "another text is another statement, with its own id");
    pstmt_put(&r, a2);
    ok(r.n == 2 && a->refs == 1, "a reference put back: the statement stays");
    pstmt_put(&r, a);
    is_int(r.n, 1, "the last reference put back: the statement goes");
    for (int i = 0; i < 1000; i++) {
        char q[32];

        snprintf(q, sizeof(q), "SELECT %d", i);
        (void)pstmt_get(&r, (uint8_t *)b, body_of(b, q));
    }
    is_int(r.n, 1000, "1000 texts (SELECT 2 among them): the table grows");
    ok(pstmt_get(&r, (uint8_t *)b, body_of(b, "SELECT 999"))->refs == 2, "... and finds each again");
    pstmt_registry_deinit(&r);
}

static void names(void)
{
    struct pstmt_registry r = {0};
    struct pstmt_names    m = {0};
    char                  b[64];
    struct pstmt         *p = pstmt_get(&r, (uint8_t *)b, body_of(b, "SELECT $1"));
    int                   found = 0;

    ok(pstmt_name_find(&m, "s1") == NULL, "an empty map finds nothing");
    ok(pstmt_name_add(&m, "s1", p), "s1 added");
    ok(pstmt_name_find(&m, "s1") == p && pstmt_name_find(&m, "s2") == NULL, "s1 found, s2 not");
    for (int i = 0; i < 500; i++) {
        char n[16];

        snprintf(n, sizeof(n), "q%d", i);
        p->refs++;
        if (!pstmt_name_add(&m, n, p)) break;
    }
    for (int i = 0; i < 500; i++) {
        char n[16];

        snprintf(n, sizeof(n), "q%d", i);
        found += pstmt_name_find(&m, n) == p;
    }
    is_int(found, 500, "500 more names: each found after the table grew");
    ok(pstmt_name_remove(&m, "s1") == p && pstmt_name_find(&m, "s1") == NULL, "s1 removed");
    pstmt_put(&r, p);
    ok(pstmt_name_remove(&m, "s1") == NULL, "removing it again finds nothing");
    pstmt_names_clear(&m, &r);
    is_int(r.n, 0, "clearing the names puts every reference back: the statement goes");
    pstmt_registry_deinit(&r);
}

static void cache(void)
{
    struct pstmt_cache c = {0};
    uint64_t           evicted = 0;
    bool               oom;
    int                kept = 0;

    ok(!pstmt_cache_use(&c, 1), "an empty cache has nothing");
    ok(!pstmt_cache_add(&c, 1, 3, &evicted, &oom) && !pstmt_cache_add(&c, 2, 3, &evicted, &oom) &&
           !pstmt_cache_add(&c, 3, 3, &evicted, &oom),
       "three ids under a limit of 3: nothing evicted");
    ok(pstmt_cache_use(&c, 1), "id 1 used: now the most recent");
    ok(pstmt_cache_add(&c, 4, 3, &evicted, &oom) && evicted == 2, "a fourth id evicts the least recently used, 2");
    ok(!pstmt_cache_use(&c, 2) && pstmt_cache_use(&c, 3) && pstmt_cache_use(&c, 4), "2 is gone, 3 and 4 stay");
    ok(!pstmt_cache_add(&c, 4, 3, &evicted, &oom), "adding an id it has evicts nothing");
    pstmt_cache_remove(&c, 3);
    ok(!pstmt_cache_use(&c, 3) && c.n == 2, "a removed id is gone");
    for (uint64_t id = 100; id < 400; id++)
        (void)pstmt_cache_add(&c, id, 200, &evicted, &oom);
    for (uint64_t id = 100; id < 400; id++)
        kept += pstmt_cache_use(&c, id);
    ok(c.n == 200 && kept == 200 && !pstmt_cache_use(&c, 199) && pstmt_cache_use(&c, 200),
       "300 ids through a limit of 200: the last 200 stay");
    ok(!pstmt_cache_add(&c, 7, 0, &evicted, &oom) || evicted != 7, "a limit of 0 never evicts the id just added");
    pstmt_cache_clear(&c);

    /* max_prepared_statements lowered under a full cache: trimming takes it down to the new limit, oldest first. */
    for (uint64_t id = 1; id <= 10; id++)
        (void)pstmt_cache_add(&c, id, 10, &evicted, &oom);
    {
        uint64_t gone[16];
        int      n = 0;
        bool     in_order = true;

        ok(pstmt_cache_add(&c, 11, 4, &evicted, &oom) && evicted == 1, "an add under a lowered limit evicts one");
        while (n < 16 && pstmt_cache_trim(&c, 4, &gone[n]))
            n++;
        for (int i = 0; i < n; i++)
            in_order = in_order && gone[i] == (uint64_t)i + 2;
        ok(n == 6 && in_order && c.n == 4, "trimming evicts 2..7, least recently used first, down to 4");
        ok(pstmt_cache_use(&c, 11) && pstmt_cache_use(&c, 8) && !pstmt_cache_use(&c, 7), "the newest four stay");
        ok(!pstmt_cache_trim(&c, 4, &evicted), "at the limit, nothing more to trim");
        ok(pstmt_cache_trim(&c, 0, &evicted) && pstmt_cache_trim(&c, 0, &evicted) &&
               pstmt_cache_trim(&c, 0, &evicted) && !pstmt_cache_trim(&c, 0, &evicted) && c.n == 1,
           "a limit of 0 trims all but the most recently used");
    }
    pstmt_cache_clear(&c);
    ok(c.n == 0 && !pstmt_cache_use(&c, 250), "cleared");
}

/* Tables that empty and fill again keep working, and keep their table meanwhile (no allocation but the entry's). */
static void emptied_tables(void)
{
    struct pstmt_registry r = {0};
    struct pstmt_names    m = {0}, dst = {0};
    struct pstmt_cache    c = {0};
    static char           big[2][8192];
    char                  b[64];
    struct pstmt         *p, *q;
    uint64_t              first, evicted = 0;
    bool                  oom, same = true;
    void                 *tab;

    p = pstmt_get(&r, (uint8_t *)b, body_of(b, "SELECT 1"));
    first = p->id;
    tab = r.tab;
    pstmt_put(&r, p);
    ok(r.n == 0 && r.tab == tab, "the registry's last statement goes, its table stays");
    p = pstmt_get(&r, (uint8_t *)b, body_of(b, "SELECT 1"));
    ok(p->id != first && p->refs == 1 && r.n == 1 && r.tab == tab, "the same text again: a new entry, a new id");

    for (int i = 0; i < 1000 && same; i++) {
        p->refs++;
        if (!pstmt_name_add(&m, "s", p)) break;
        tab = i == 0 ? (void *)m.tab : tab;
        same = pstmt_name_remove(&m, "s") == p && m.n == 0 && m.tab == tab && pstmt_name_find(&m, "s") == NULL;
        pstmt_put(&r, p);
    }
    ok(same && m.tab != NULL && p->refs == 1, "a name added and removed 1000 times: the names' table stays");
    p->refs += 3;
    ok(pstmt_name_add(&m, "a", p) && pstmt_name_add(&m, "b", p) && pstmt_name_add(&dst, "a", p), "a, b and a");
    pstmt_names_move(&dst, &m, &r);
    ok(m.tab == NULL && m.n == 0 && dst.n == 2 && pstmt_name_find(&dst, "b") == p && p->refs == 3,
       "names moved: the one dst has already gives its reference back");
    pstmt_names_clear(&dst, &r);
    pstmt_names_clear(&m, &r);
    is_int(p->refs, 1, "clearing the names gave their references back");

    /* Long texts that differ only at their end: two statements; the same text: one. */
    memset(big, 'x', sizeof(big));
    big[0][sizeof(big[0]) - 1] = 'a';
    big[1][sizeof(big[1]) - 1] = 'b';
    q = pstmt_get(&r, (uint8_t *)big[0], sizeof(big[0]));
    ok(q != pstmt_get(&r, (uint8_t *)big[1], sizeof(big[1])) && q == pstmt_get(&r, (uint8_t *)big[0], sizeof(big[0])) &&
           q->refs == 2 && r.n == 3,
       "8 KB texts differing in their last byte are two statements; the same one is shared");
    pstmt_registry_deinit(&r);
    ok(r.tab == NULL && r.n == 0, "the registry freed");

    ok(!pstmt_cache_add(&c, 5, 3, &evicted, &oom) && !oom, "an id cached");
    tab = c.tab;
    pstmt_cache_remove(&c, 5);
    ok(c.n == 0 && c.tab == tab && c.lru == NULL && c.mru == NULL && !pstmt_cache_use(&c, 5),
       "its removal empties the cache, which keeps its table");
    ok(!pstmt_cache_add(&c, 6, 1, &evicted, &oom) && pstmt_cache_add(&c, 7, 1, &evicted, &oom) && evicted == 6 &&
           c.tab == tab,
       "filled again, it evicts as before");
    pstmt_cache_clear(&c);
}

int main(void)
{
    registry();
    names();
    cache();
    emptied_tables();
    return done_testing();
}
