/*
 * pstmt_fwd.c - a client's prepared statements forwarded to borrowed servers (pstmt_fwd.h).
 *
 *   client:  P "s1" text   B "s1"    C "s1"        (any server)
 *   server:  P "pgbun_42"  B "pgbun_42"            (answered by pgbun)
 *
 * A Parse the current server already holds is answered here (ParseComplete
 * in its turn); one it lacks goes out under pgbun's name. A Bind or
 * Describe of a statement the server lacks gets that Parse in front, its
 * reply hidden. Names the client never prepared pass through unchanged,
 * so PostgreSQL itself reports them missing.
 */
#include "pstmt_fwd.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "pgbun.h"
#include "pstmt.h"
#include "proto.h"
#include "scan.h"
#include "server.h"
#include "worker.h"

#define SERVER_NAME_LEN 32 /* "pgbun_" and 20 digits, NUL included */

static void server_name(char out[SERVER_NAME_LEN], uint64_t id)
{
    snprintf(out, SERVER_NAME_LEN, "pgbun_%llu", (unsigned long long)id);
}

bool pstmt_fwd_tracked(const struct client *c)
{
    return c->stmts != NULL || c->pool->track_prepared;
}

/* Offset just past the k-th NUL after a message's header, within its first `have` bytes; 0: not there. */
static size_t names_end(struct evbuffer *in, size_t have, int k)
{
    struct evbuffer_ptr pos, end;

    if (evbuffer_ptr_set(in, &pos, 5, EVBUFFER_PTR_SET) < 0 || evbuffer_ptr_set(in, &end, have, EVBUFFER_PTR_SET) < 0)
        return 0;
    while (k-- > 0) {
        pos = evbuffer_search_range(in, "", 1, &pos, &end);
        if (pos.pos < 0 || evbuffer_ptr_set(in, &pos, 1, EVBUFFER_PTR_ADD) < 0) return 0;
    }
    return (size_t)pos.pos;
}

static size_t whole_or(size_t avail, uint32_t len)
{
    return avail < (size_t)len + 1 ? avail : (size_t)len + 1;
}

bool pstmt_fwd_ready(struct evbuffer *in, uint8_t type, uint32_t len, size_t avail)
{
    if (avail >= (size_t)len + 1) return true;
    /* A Bind may be large (COPY-sized parameters): its two names are enough. */
    return type == 'B' && names_end(in, avail, 2) != 0;
}

static enum pstmt_fwd_step out_of_memory(struct client *c)
{
    client_close(c, "53200", "out of memory keeping prepared statements");
    return PSTMT_CLOSED;
}

static enum pstmt_fwd_step queued(struct client *c, struct server *s, const struct replyq_entry *e)
{
    return replyq_push(&s->rq, e) ? PSTMT_DONE : out_of_memory(c);
}

/*
 * Whether s may be counted on to hold p for a request sent now (the cache
 * marked used). An id whose Parse went out before a Sync not yet answered
 * may have failed, and a request after that Sync would not be skipped with
 * it: such an id is forgotten, to be closed and prepared again.
 */
static bool holds(struct server *s, const struct pstmt *p, bool *unsure)
{
    *unsure = false;
    if (pstmt_cache_use(&s->stmts, p->id)) {
        if (pstmt_cache_settled(&s->stmts, p->id, s->rq.syncs)) {
            s->pool->stats.stmt_hits++;
            return true;
        }
        pstmt_cache_remove(&s->stmts, p->id);
        *unsure = true;
    }
    s->pool->stats.stmt_misses++;
    return false;
}

/*
 * Sends p's Parse to s under pgbun's name, making room in the server's
 * cache first, and closing the name first when the server may have it
 * (`unsure`, or a client's text dropped statements); queues e (its id
 * set) for the reply. false: c was closed.
 */
static bool prepare_on(struct client *c, struct server *s, const struct pstmt *p, struct replyq_entry *e, bool unsure)
{
    char     name[SERVER_NAME_LEN];
    uint64_t evicted;
    size_t   max = (size_t)pgbun.cfg->max_prepared_statements;
    bool     oom, evict;

    /* One eviction makes room; more follow when max_prepared_statements was lowered since the server filled up. */
    for (evict = pstmt_cache_add(&s->stmts, p->id, max, &evicted, &oom); evict && !oom;
         evict = pstmt_cache_trim(&s->stmts, max, &evicted)) {
        /* Its id: should PostgreSQL skip the Close (an error before it), the server keeps the name. */
        struct replyq_entry close = {.type = 'C', .action = REPLYQ_DROP, .id = evicted};

        server_name(name, evicted);
        proto_add_statement_request(s->out, 'C', name);
        if (!replyq_push(&s->rq, &close)) oom = true;
    }
    if (oom) {
        free(e->name);
        out_of_memory(c);
        return false;
    }
    pstmt_cache_sent(&s->stmts, p->id, s->rq.syncs);
    server_name(name, p->id);
    if (s->stmts_dirty || unsure) {
        /* The client's text may have left the name behind (a DEALLOCATE that failed): close it first. */
        proto_add_statement_request(s->out, 'C', name);
        if (!replyq_push_simple(&s->rq, 'C', REPLYQ_DROP)) {
            free(e->name);
            out_of_memory(c);
            return false;
        }
    }
    proto_add_parse(s->out, name, (const char *)p->body, p->body + strlen((const char *)p->body) + 1,
                    p->len - strlen((const char *)p->body) - 1);
    c->pool->stats.server_parse_count++;
    e->id = p->id;
    if (!replyq_push(&s->rq, e)) {
        out_of_memory(c);
        return false;
    }
    return true;
}

/* Prepares p on s unless s has it. false: c was closed. */
static bool ensure_on(struct client *c, struct server *s, const struct pstmt *p)
{
    struct replyq_entry e = {.type = 'P', .action = REPLYQ_DROP};
    bool                unsure;

    return holds(s, p, &unsure) || prepare_on(c, s, p, &e, unsure);
}

/* A Parse body after the name: query, NUL, int16 count, count int32 OIDs. */
static bool parse_body_valid(const uint8_t *b, size_t len)
{
    const uint8_t *nul = memchr(b, 0, len);
    size_t         rest;

    if (nul == NULL) return false;
    rest = len - (size_t)(nul + 1 - b);
    return rest >= 2 && rest == 2 + 4 * (size_t)((uint16_t)(nul[1] << 8 | nul[2]));
}

/*
 * What running p may do to the session, from its text (scan.h), kept with
 * it: its Parse is scanned once, but each Bind runs it again, on whichever
 * server. false: out of memory.
 */
static bool learn_effects(struct pstmt *p, const struct server *s)
{
    struct scan_effects fx;
    size_t              len = 1;
    char               *d;

    scan_init(&fx);
    scan_sql((const char *)p->body, strlen((const char *)p->body), s->std_strings, SCAN_READBACK | SCAN_PIN | SCAN_CALL,
             &fx);
    p->effects = fx.flags;
    if (fx.nnames == 0) return true;
    for (int i = 0; i < fx.nnames; i++)
        len += strlen(fx.names[i]) + 1;
    if ((d = p->names = malloc(len)) == NULL) return false;
    for (int i = 0; i < fx.nnames; i++)
        d = stpcpy(d, fx.names[i]) + 1;
    *d = '\0';
    return true;
}

/* A Bind of p: what it may do to the session is noted on the server, as for the text of a Query. */
static bool note_effects(struct client *c, const struct pstmt *p, struct server *s)
{
    s->scan_pending |= p->effects;
    pstmt_fwd_text_dropped(c, s, p->effects);
    for (const char *n = p->names; n != NULL && *n != '\0'; n += strlen(n) + 1)
        if (!varlist_set(&s->scan_names, n, "")) return false;
    return true;
}

static enum pstmt_fwd_step on_parse(struct client *c, struct server *s, uint32_t len)
{
    const uint8_t      *m = evbuffer_pullup(c->in, (ev_ssize_t)len + 1);
    struct proto_reader r;
    const char         *name;
    struct pstmt       *p;
    struct replyq_entry e = {.type = 'P'};
    bool                unsure;

    proto_reader_init(&r, m + 5, len - 4);
    name = proto_get_str(&r);
    if (r.bad || name[0] == '\0') return PSTMT_PASS; /* the unnamed statement lives within one transaction */
    if (!parse_body_valid(r.p, r.left)) {
        client_close(c, "08P01", "invalid Parse message for statement \"%.64s\"", name);
        return PSTMT_CLOSED;
    }
    c->pool->stats.parse_count++; /* as PgBouncer: named statements pgbun keeps */
    if ((e.name = strdup(name)) == NULL) return out_of_memory(c);
    if (c->stmts != NULL && pstmt_name_find(c->stmts, name) != NULL) {
        /*
         * PostgreSQL refuses it, even with the same text. The server fails a
         * Describe in its place, so that the transaction fails as it would
         * there; pgbun's error replaces the server's.
         */
        e.type = 'D';
        e.action = REPLYQ_SUBST;
        evbuffer_drain(c->in, (size_t)len + 1);
        proto_add_statement_request(s->out, 'D', PSTMT_NO_SUCH_NAME);
        return queued(c, s, &e);
    }
    if (c->stmts == NULL && (c->stmts = calloc(1, sizeof(*c->stmts))) == NULL) {
        free(e.name);
        return out_of_memory(c);
    }
    if ((p = pstmt_get(&c->w->stmts, r.p, r.left)) == NULL || (p->refs == 1 && !learn_effects(p, s))) {
        if (p != NULL) pstmt_put(&c->w->stmts, p);
        free(e.name);
        return out_of_memory(c);
    }
    if (!pstmt_name_add(c->stmts, name, p)) {
        pstmt_put(&c->w->stmts, p);
        free(e.name);
        return out_of_memory(c);
    }
    e.adds_name = true; /* undone if the server refuses it, or skips it after an error */
    e.named = p->id;
    evbuffer_drain(c->in, (size_t)len + 1);
    if (s->txstatus == 'E' && replyq_empty(&s->rq)) {
        /*
         * A failed transaction: PostgreSQL refuses any Parse (25P02), which
         * the server's cache would hide. It refuses this one in its place
         * (of the unnamed statement, which it cannot replace now).
         */
        e.action = REPLYQ_PASS;
        proto_add_parse(s->out, "", "SELECT 1", NULL, 0);
        return queued(c, s, &e);
    }
    if (holds(s, p, &unsure)) {
        e.action = REPLYQ_SYNTH;
        e.synth = '1';
        return queued(c, s, &e);
    }
    e.action = REPLYQ_PASS;
    return prepare_on(c, s, p, &e, unsure) ? PSTMT_DONE : PSTMT_CLOSED;
}

/*
 * The head of a Bind or Describe m, up to the end of the statement name
 * (name_at to name_end), goes out with pgbun's name for p; the rest of the
 * message follows as it is.
 */
static void rewrite_head(struct server *s, const uint8_t *m, size_t name_at, size_t name_end, uint32_t len,
                         const struct pstmt *p)
{
    char   name[SERVER_NAME_LEN];
    size_t n;

    server_name(name, p->id);
    n = strlen(name) + 1;
    proto_add_header(s->out, (char)m[0], len - (uint32_t)(name_end - name_at) + (uint32_t)n);
    evbuffer_add(s->out, m + 5, name_at - 5);
    evbuffer_add(s->out, name, n);
}

static enum pstmt_fwd_step on_bind(struct client *c, struct server *s, uint32_t len, size_t *taken)
{
    size_t         have = whole_or(evbuffer_get_length(c->in), len);
    size_t         portal_end = names_end(c->in, have, 1), name_end = names_end(c->in, have, 2);
    const uint8_t *m;
    struct pstmt  *p;

    if (name_end == 0) return PSTMT_PASS; /* malformed: PostgreSQL's to refuse */
    m = evbuffer_pullup(c->in, (ev_ssize_t)name_end);
    if (m[portal_end] == '\0') return PSTMT_PASS;
    c->pool->stats.bind_count++; /* as PgBouncer: Binds of named statements pgbun keeps */
    if (c->stmts == NULL) return PSTMT_PASS;
    if ((p = pstmt_name_find(c->stmts, (const char *)m + portal_end)) == NULL)
        return PSTMT_PASS; /* PostgreSQL says it does not exist */
    if (p->effects != 0 && !note_effects(c, p, s)) return out_of_memory(c);
    if ((p->effects & SCAN_RESTORE) && c->params.count > 0) s->restore_due = true; /* RESET ALL, prepared */
    if (p->effects & SCAN_UNKNOWN) s->unknown_of = c->id;
    if (!ensure_on(c, s, p)) return PSTMT_CLOSED;
    rewrite_head(s, m, portal_end, name_end, len, p);
    evbuffer_drain(c->in, name_end);
    *taken = name_end;
    return PSTMT_TAKEN;
}

static enum pstmt_fwd_step on_describe_close(struct client *c, struct server *s, uint8_t type, uint32_t len,
                                             size_t *taken)
{
    const uint8_t      *m = evbuffer_pullup(c->in, (ev_ssize_t)len + 1);
    struct proto_reader r;
    const char         *name;
    struct pstmt       *p;
    uint8_t             kind;

    proto_reader_init(&r, m + 5, len - 4);
    kind = proto_get_u8(&r);
    name = proto_get_str(&r);
    if (r.bad || r.left != 0 || kind != 'S' || name[0] == '\0') return PSTMT_PASS;
    if (type == 'C') {
        /* The server keeps it for other clients and the next Parse of the same text. */
        struct replyq_entry e = {.type = 'C', .action = REPLYQ_SYNTH, .synth = '3'};

        if (c->stmts != NULL && (p = pstmt_name_remove(c->stmts, name)) != NULL) pstmt_put(&c->w->stmts, p);
        evbuffer_drain(c->in, (size_t)len + 1);
        return queued(c, s, &e);
    }
    if (c->stmts == NULL || (p = pstmt_name_find(c->stmts, name)) == NULL) return PSTMT_PASS;
    if (!ensure_on(c, s, p)) return PSTMT_CLOSED;
    rewrite_head(s, m, 6, (size_t)len + 1, len, p);
    evbuffer_drain(c->in, (size_t)len + 1);
    *taken = (size_t)len + 1;
    return PSTMT_TAKEN;
}

enum pstmt_fwd_step pstmt_fwd_message(struct client *c, struct server *s, uint8_t type, uint32_t len, size_t *taken)
{
    *taken = 0;
    switch (type) {
    case 'P': return on_parse(c, s, len);
    case 'B': return on_bind(c, s, len, taken);
    case 'D':
    case 'C': return on_describe_close(c, s, type, len, taken);
    default: return PSTMT_PASS;
    }
}

static void names_free(struct client *c, struct pstmt_names **m)
{
    if (*m == NULL) return;
    pstmt_names_clear(*m, &c->w->stmts);
    free(*m);
    *m = NULL;
}

void pstmt_fwd_text_dropped(struct client *c, struct server *s, unsigned flags)
{
    /* DEALLOCATE of one name: pstmt_fwd_deallocate's, or a SQL-level statement's (which pins its client). */
    if ((flags & (SCAN_DEALLOCATE_ALL | SCAN_DISCARD_ALL)) == 0) return;
    /* Whether the server's went is known only after it ran: prepare afresh, closing the name first. */
    pstmt_cache_clear(&s->stmts);
    s->stmts_dirty = true;
    /*
     * The client's go when PostgreSQL says it ran the command, which it may
     * refuse (25001 in a transaction block); a Parse sent behind it, before
     * its reply, names a statement of its own.
     */
    s->drop_all_due = true;
    if (c->stmts == NULL) return;
    if (c->stmts_dropping == NULL) {
        c->stmts_dropping = c->stmts;
    } else {
        pstmt_names_move(c->stmts_dropping, c->stmts, &c->w->stmts);
        free(c->stmts);
    }
    c->stmts = NULL;
}

void pstmt_fwd_command_done(struct client *c, const char *tag, size_t len)
{
    static const char discard[] = "DISCARD ALL", deallocate[] = "DEALLOCATE ALL";

    /* DEALLOCATE ALL and DISCARD ALL dropped the client's statements too. */
    if ((len == sizeof(discard) && memcmp(tag, discard, len) == 0) ||
        (len == sizeof(deallocate) && memcmp(tag, deallocate, len) == 0))
        names_free(c, &c->stmts_dropping);
}

void pstmt_fwd_drop_refused(struct client *c)
{
    if (c->stmts_dropping == NULL) return;
    if (c->stmts == NULL) {
        c->stmts = c->stmts_dropping;
    } else {
        pstmt_names_move(c->stmts, c->stmts_dropping, &c->w->stmts); /* a name prepared since wins */
        free(c->stmts_dropping);
    }
    c->stmts_dropping = NULL;
}

enum pstmt_fwd_step pstmt_fwd_deallocate(struct client *c, struct server *s, uint8_t type, uint32_t len,
                                         const char *target, size_t *taken)
{
    const uint8_t      *m = evbuffer_pullup(c->in, (ev_ssize_t)len + 1);
    struct proto_reader r;
    char                text[16 + SERVER_NAME_LEN], name[SERVER_NAME_LEN];
    struct pstmt       *p;
    bool                unsure;

    *taken = 0;
    proto_reader_init(&r, m + 5, len - 4);
    if (type == 'P' && proto_get_str(&r)[0] != '\0') return PSTMT_PASS; /* a named statement of it: left alone */
    (void)proto_get_str(&r);                                            /* the text, which the scanner has read */
    if (r.bad || c->stmts == NULL || (p = pstmt_name_find(c->stmts, target)) == NULL)
        return PSTMT_PASS; /* not one of the client's protocol-level names: the server's to judge */
    if (type == 'Q' && !holds(s, p, &unsure)) {
        /*
         * Prepared first, behind a Sync of pgbun's own: a Query after a
         * Parse that failed would be skipped, waiting for a Sync that the
         * client never sends. So the Query runs, and reports what it finds.
         */
        struct replyq_entry parse = {.type = 'P', .action = REPLYQ_DROP};

        if (s->unsynced) return PSTMT_PASS; /* extended messages before it: theirs is the Sync */
        if (!prepare_on(c, s, p, &parse, unsure)) return PSTMT_CLOSED;
        proto_add_sync(s->out);
        if (!replyq_push_simple(&s->rq, 'S', REPLYQ_DROP)) return out_of_memory(c);
    } else if (!ensure_on(c, s, p)) {
        return PSTMT_CLOSED;
    }
    server_name(name, p->id);
    snprintf(text, sizeof(text), "DEALLOCATE %s", name);
    if (type == 'Q')
        proto_add_query(s->out, text);
    else
        proto_add_parse(s->out, "", text, r.p, r.left);
    /* The server loses it for every client: prepared again where needed, closed first in case it ran not. */
    pstmt_cache_remove(&s->stmts, p->id);
    s->stmts_dirty = true;
    pstmt_put(&c->w->stmts, pstmt_name_remove(c->stmts, target));
    evbuffer_drain(c->in, (size_t)len + 1);
    *taken = (size_t)len + 1;
    return PSTMT_TAKEN;
}

bool pstmt_fwd_emit(const struct replyq_entry *e, void *arg)
{
    struct server *s = arg;
    struct client *c = s->client;

    if (c == NULL) return true;        /* nobody to answer */
    if (s->fwd_left > 0) return false; /* a reply is half relayed: after it */
    if (e->action == REPLYQ_SUBST)
        proto_add_error(c->out, "ERROR", "42P05", "prepared statement \"%s\" already exists", e->name);
    else if (e->synth == '1')
        proto_add_parse_complete(c->out);
    else
        proto_add_close_complete(c->out);
    return true;
}

void pstmt_fwd_settle(const struct replyq_entry *e, bool ok, void *arg)
{
    struct server *s = arg;
    struct client *c = s->client;
    struct pstmt  *p;

    if (ok) {
        if (e->type == 'P' && e->id != 0) pstmt_cache_confirm(&s->stmts, e->id);
        return;
    }
    if (e->type == 'C') {
        s->stmts_dirty = true; /* an eviction skipped: the name may still be there, closed before its next Parse */
        return;
    }
    if (e->id != 0) pstmt_cache_remove(&s->stmts, e->id);
    /* The name, unless a Close and a Parse behind this one gave it to another statement meanwhile. */
    if (e->adds_name && c != NULL && c->stmts != NULL && (p = pstmt_name_find(c->stmts, e->name)) != NULL &&
        p->id == e->named)
        pstmt_put(&c->w->stmts, pstmt_name_remove(c->stmts, e->name));
}

size_t pstmt_fwd_client_count(const struct client *c)
{
    return c->stmts ? c->stmts->n : 0;
}

size_t pstmt_fwd_server_count(const struct server *s)
{
    return s->stmts.n;
}

void pstmt_fwd_client_free(struct client *c)
{
    names_free(c, &c->stmts);
    names_free(c, &c->stmts_dropping);
}
