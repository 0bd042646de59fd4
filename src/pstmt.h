/*
 * pstmt.h - the bookkeeping of protocol-level prepared statements.
 *
 *   client name "s1" --\
 *   client name "q7" ---+--> struct pstmt (text + parameter types, id 42) <-- server caches: {42, ...}
 *   (another client) --/                                  prepared there as "pgbun_42"
 *
 * A worker's registry holds each distinct statement (the Parse body after
 * its name) once, with a process-wide id. Each client maps its own names
 * to registry entries. Each server remembers which ids it has prepared,
 * least recently used first, up to max_prepared_statements.
 * pstmt_fwd.c does the forwarding: see docs/SESSION_STATE.md, section 2.
 */
#ifndef PGBUN_PSTMT_H
#define PGBUN_PSTMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hashtab.h"

struct pstmt {
    uint64_t       id;      /* the server-side name is pgbun_<id> */
    uint32_t       refs;    /* client names that point at it */
    unsigned       effects; /* what running it may do to the session (scan.h flags), set by its user */
    char          *names;  /* ... the settings it names, each NUL-terminated, an empty one last; or NULL (freed here) */
    UT_hash_handle hh;     /* in the registry, keyed by body */
    size_t         len;    /* bytes of body */
    uint8_t        body[]; /* Parse after the name: query, NUL, int16 count, int32 type OIDs */
};

/*
 * Each table below is a uthash table, NULL until its first entry. Its head
 * is an anchor entry that no lookup matches (pstmt.c), so that the table
 * stays allocated while its entries come and go.
 */
struct pstmt_registry {
    struct pstmt *tab; /* by body */
    size_t        n;   /* statements, the anchor not counted */
};

/* A client's names. */
struct pstmt_names {
    struct pstmt_name *tab; /* by name */
    size_t             n;
};

/* The ids prepared on one server, least recently used first. */
struct pstmt_cache {
    struct pstmt_slot *tab; /* by id */
    size_t             n;
    struct pstmt_slot *lru, *mru; /* the use order */
};

/* The registry's entry for body (found, or added with a new id), one reference more. NULL: out of memory. */
struct pstmt *pstmt_get(struct pstmt_registry *r, const uint8_t *body, size_t len);
/* One reference less; the entry goes with the last. */
void pstmt_put(struct pstmt_registry *r, struct pstmt *p);
void pstmt_registry_deinit(struct pstmt_registry *r);

/* The statement a client calls name, or NULL. */
struct pstmt *pstmt_name_find(const struct pstmt_names *m, const char *name);
/* Adds name -> p (the caller holds a reference for it); false: out of memory. name must be new. */
bool pstmt_name_add(struct pstmt_names *m, const char *name, struct pstmt *p) __attribute__((warn_unused_result));
/* Removes name; returns its statement (the caller puts the reference) or NULL. */
struct pstmt *pstmt_name_remove(struct pstmt_names *m, const char *name);
/* Moves every name of src into dst, but for those dst has already (their references go back to r). */
void pstmt_names_move(struct pstmt_names *dst, struct pstmt_names *src, struct pstmt_registry *r);
/* Removes every name, putting each reference back into r. */
void pstmt_names_clear(struct pstmt_names *m, struct pstmt_registry *r);

/* Whether the server has id, marking it used now. */
bool pstmt_cache_use(struct pstmt_cache *c, uint64_t id);
/*
 * Notes id as prepared on the server. When that makes more than max, the
 * least recently used id is evicted into *evicted (the caller closes it on
 * the server) and true is returned. *oom on out of memory.
 */
bool pstmt_cache_add(struct pstmt_cache *c, uint64_t id, size_t max, uint64_t *evicted, bool *oom);
/*
 * When c holds more than max ids (max_prepared_statements was lowered), evicts
 * the least recently used one into *evicted and returns true; the most
 * recently used id always stays. Called until false, it brings c down to max.
 */
bool pstmt_cache_trim(struct pstmt_cache *c, size_t max, uint64_t *evicted);
/*
 * The Parse of id (in the cache) went out before the seq-th Sync; its
 * outcome is unknown until pstmt_cache_confirm. Whether the server may be
 * counted on to hold id for a request sent before the seq-th Sync: its
 * Parse succeeded, or went out in the same stretch (so that its failure
 * would make PostgreSQL skip that request too).
 */
void pstmt_cache_sent(struct pstmt_cache *c, uint64_t id, uint32_t seq);
void pstmt_cache_confirm(struct pstmt_cache *c, uint64_t id);
bool pstmt_cache_settled(const struct pstmt_cache *c, uint64_t id, uint32_t seq);
/* Forgets id (its Parse failed), or everything (DISCARD ALL, a reset). */
void pstmt_cache_remove(struct pstmt_cache *c, uint64_t id);
void pstmt_cache_clear(struct pstmt_cache *c);

#endif
