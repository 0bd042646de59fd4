/*
 * authq.c - auth_query lookups (see authq.h for the flow).
 *
 * Where a login's lookup runs: the database entry the client asked for (or
 * `*`) names auth_user, auth_query and auth_dbname, each falling back to
 * [pgbun]; the lookup runs on the pool (auth_dbname or that database,
 * auth_user). Its answer is cached in creds.h under the user and "auth
 * database/auth_user", the place asked.
 *
 * A lookup belongs to its worker: it is queued on, and runs on, that
 * worker's pool, and its waiters are that worker's clients. It lives until
 * its query ends or its pool gives up on it, even when every login that
 * waited for it has left: the answer is cached for the next one.
 */
#include "authq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "creds.h"
#include "log.h"
#include "pgbun.h"
#include "pool.h"
#include "proto.h"
#include "server.h"

TAILQ_HEAD(authq_waiters, authq_waiter);

struct authq_lookup {
    struct pool_job      job;   /* on its pool's queue until a server runs it */
    struct authq_lookup *next;  /* on its worker's list */
    struct pool         *pool;  /* (auth database, auth_user) */
    char                *user;  /* whose secret */
    char                *where; /* creds.h's place: "auth database/auth_user" */
    char                *query;
    unsigned             gen; /* creds_gen() when it began */
    struct authq_waiters waiters;
    int                  rows;
    bool                 has_name; /* the first row named the role (not NULL) */
    char                *secret;   /* ... and its secret, NULL when none */
    bool                 bad_row;  /* the first row was not (name, secret) */
};

static _Thread_local struct authq_lookup *lookups; /* this worker's, running or queued */

/* Where `dbname`'s logins are looked up; false: nowhere (no auth_user). */
struct route {
    const char *authdb;
    const char *auth_user;
    const char *query;
};

static bool route_of(const char *dbname, bool console, struct route *r)
{
    const struct pgbun_config *cfg = pgbun.cfg;
    const struct db_config    *db = console ? NULL : config_find_db(cfg, dbname);
    struct config_settings     set;

    if (console) {
        /* The console is no PostgreSQL database: only auth_dbname names one to ask. */
        r->auth_user = cfg->auth_user;
        r->query = cfg->auth_query;
        r->authdb = cfg->auth_dbname;
        return r->auth_user != NULL;
    }
    if (db == NULL) {
        /* No such database: nothing to ask, unless auth_dbname names one; the login fails as a wrong password would. */
        r->auth_user = cfg->auth_user;
        r->query = cfg->auth_query;
        r->authdb = cfg->auth_dbname;
        return r->auth_user != NULL;
    }
    config_resolve(cfg, db, NULL, dbname, &set);
    r->auth_user = set.auth_user;
    r->query = set.auth_query != NULL ? set.auth_query : AUTH_QUERY_DEFAULT;
    r->authdb = set.auth_dbname != NULL ? set.auth_dbname : dbname;
    return r->auth_user != NULL;
}

static char *place_of(const struct route *r)
{
    size_t n = strlen(r->authdb) + strlen(r->auth_user) + 2;
    char  *p = malloc(n);

    if (p != NULL) snprintf(p, n, "%s/%s", r->authdb, r->auth_user);
    return p;
}

static void secret_free(char *p)
{
    if (p != NULL) OPENSSL_cleanse(p, strlen(p));
    free(p);
}

void authq_answer_free(char *hold)
{
    secret_free(hold);
}

static void lookup_free(struct authq_lookup *lk)
{
    struct authq_lookup **pp;

    for (pp = &lookups; *pp != NULL && *pp != lk; pp = &(*pp)->next)
        ;
    if (*pp == lk) *pp = lk->next;
    free(lk->user);
    free(lk->where);
    free(lk->query);
    secret_free(lk->secret);
    free(lk);
}

/* Every waiter hears the answer, then the lookup is freed. */
static void finish(struct authq_lookup *lk, const struct authq_answer *a)
{
    struct authq_waiter *w;

    while ((w = TAILQ_FIRST(&lk->waiters)) != NULL) {
        TAILQ_REMOVE(&lk->waiters, w, entry);
        w->lookup = NULL;
        w->done(w, a); /* may close the client: it is off the list already */
    }
    lookup_free(lk);
}

/*
 * The lookup could not run. The client hears 08006 when waiting may cure
 * it (PostgreSQL down or restarting, a connection lost), else 28000 (the
 * auth_user's login or the query itself is wrong): never 28P01, which
 * would blame its password.
 */
static void failed(struct authq_lookup *lk, const char *sqlstate, const char *why)
{
    struct authq_answer a = {
        .status = AUTHQ_FAILED, .sqlstate = pool_failure_lasting(sqlstate) ? "28000" : "08006", .message = why};

    log_warning("auth_query for user \"%s\" in %s failed: %s", lk->user, lk->where, why);
    finish(lk, &a);
}

/* A DataRow of the query: the first one decides, as in PgBouncer. */
static void lookup_row(void *arg, const uint8_t *body, size_t len)
{
    struct authq_lookup *lk = arg;
    struct proto_reader  r;
    int32_t              nlen, slen;
    const uint8_t       *name, *secret;

    if (lk->rows++ > 0) return;
    proto_reader_init(&r, body, len);
    if (proto_get_u16(&r) != 2) {
        lk->bad_row = true;
        return;
    }
    nlen = (int32_t)proto_get_u32(&r);
    name = nlen > 0 ? proto_get_bytes(&r, (size_t)nlen) : NULL;
    slen = (int32_t)proto_get_u32(&r);
    secret = slen > 0 ? proto_get_bytes(&r, (size_t)slen) : NULL;
    if (r.bad) {
        lk->bad_row = true;
        return;
    }
    lk->has_name = nlen >= 0 && name != NULL;
    if (lk->has_name && secret != NULL && memchr(secret, '\0', (size_t)slen) == NULL) {
        lk->secret = malloc((size_t)slen + 1);
        if (lk->secret != NULL) {
            memcpy(lk->secret, secret, (size_t)slen);
            lk->secret[slen] = '\0';
        }
    }
}

static void lookup_done(void *arg, const struct pg_error *err)
{
    struct authq_lookup *lk = arg;
    struct authq_answer  a = {.status = AUTHQ_NO_USER};

    if (err != NULL) {
        char why[600];

        snprintf(why, sizeof(why), "%s (SQLSTATE %s)", err->message, err->sqlstate);
        failed(lk, err->sqlstate, why);
        return;
    }
    if (lk->bad_row) {
        failed(lk, "28000", "auth_query must return two columns: the user name and its secret");
        return;
    }
    if (lk->rows > 1)
        log_warning("auth_query for user \"%s\" in %s returned %d rows: the first one is used", lk->user, lk->where,
                    lk->rows);
    if (lk->has_name) {
        a.status = AUTHQ_FOUND;
        a.secret = lk->secret;
        creds_put(lk->user, lk->where, lk->secret, lk->gen, pgbun_now());
    }
    log_debug("auth_query for user \"%s\" in %s: %s", lk->user, lk->where,
              !lk->has_name        ? "no such role"
              : lk->secret != NULL ? "secret found"
                                   : "role without password");
    finish(lk, &a);
}

static const struct server_lookup_ops lookup_ops = {lookup_row, lookup_done};

static void job_run(struct pool_job *j, struct server *s)
{
    struct authq_lookup *lk = (struct authq_lookup *)j;

    server_lookup(s, lk->query, lk->user, &lookup_ops, lk);
}

static void job_fail(struct pool_job *j, const char *sqlstate, const char *msg)
{
    failed((struct authq_lookup *)j, sqlstate, msg);
}

/* A new lookup on p, queued; NULL: out of memory. */
static struct authq_lookup *lookup_new(struct pool *p, const char *user, char *where, const char *query)
{
    struct authq_lookup *lk = calloc(1, sizeof(*lk));

    if (lk == NULL || (lk->user = strdup(user)) == NULL || (lk->query = strdup(query)) == NULL) {
        if (lk != NULL) free(lk->user);
        free(lk);
        free(where);
        return NULL;
    }
    lk->where = where;
    lk->pool = p;
    lk->gen = creds_gen();
    lk->job.run = job_run;
    lk->job.fail = job_fail;
    TAILQ_INIT(&lk->waiters);
    lk->next = lookups;
    lookups = lk;
    return lk;
}

enum authq_start authq_find(const char *dbname, const char *user, bool console, struct authq_waiter *w,
                            struct authq_answer *a, char **hold)
{
    struct route         r;
    struct authq_lookup *lk;
    struct pool         *p;
    const char          *err = NULL;
    char                *where;
    bool                 oom;

    *hold = NULL;
    w->lookup = NULL;
    if (!route_of(dbname, console, &r)) return AUTHQ_OFF;
    memset(a, 0, sizeof(*a));
    a->status = AUTHQ_NO_USER;
    if (r.authdb == NULL) return AUTHQ_ANSWER; /* nowhere to ask: no user, the exchange fails at the password */
    if ((where = place_of(&r)) == NULL) goto oom;
    if (creds_find(user, where, pgbun_now(), pgbun.cfg->auth_query_cache_ttl, hold, &oom)) {
        free(where);
        a->status = AUTHQ_FOUND;
        a->secret = *hold;
        return AUTHQ_ANSWER;
    }
    if (oom) {
        free(where);
        goto oom;
    }
    /* One lookup per user and place on this worker, however many wait for it. */
    for (lk = lookups; lk != NULL; lk = lk->next)
        if (strcmp(lk->user, user) == 0 && strcmp(lk->where, where) == 0 && lk->gen == creds_gen()) break;
    if (lk != NULL) {
        free(where);
    } else {
        if ((p = pool_get(r.authdb, r.auth_user, &err)) == NULL) {
            /* auth_dbname is checked at start and RELOAD; the client's own database may have no entry. */
            free(where);
            return AUTHQ_ANSWER;
        }
        if ((lk = lookup_new(p, user, where, r.query)) == NULL) goto oom;
        TAILQ_INSERT_TAIL(&lk->waiters, w, entry);
        w->lookup = lk;
        log_debug("auth_query for user \"%s\" in %s: asking PostgreSQL", user, lk->where);
        pool_queue_job(p, &lk->job); /* may answer at once (a pool that failed for good): w->lookup is NULL then */
        return AUTHQ_WAITING;
    }
    TAILQ_INSERT_TAIL(&lk->waiters, w, entry);
    w->lookup = lk;
    return AUTHQ_WAITING;
oom:
    a->status = AUTHQ_FAILED;
    a->sqlstate = "53200";
    a->message = "out of memory";
    return AUTHQ_ANSWER;
}

void authq_cancel(struct authq_waiter *w)
{
    if (w->lookup == NULL) return;
    TAILQ_REMOVE(&w->lookup->waiters, w, entry);
    w->lookup = NULL;
}

void authq_failed_login(const char *dbname, const char *user, bool console)
{
    struct route r;
    char        *where;

    if (!route_of(dbname, console, &r) || r.authdb == NULL || (where = place_of(&r)) == NULL) return;
    creds_drop(user, where);
    free(where);
}

void authq_reset(void)
{
    creds_reset();
}
