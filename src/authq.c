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
 * worker's pool, and its waiters are that worker's clients. Once its query
 * runs it runs to its end, even when every login that waited for it has
 * left, and its answer is cached for the next one; a lookup still queued
 * when the last login leaves is dropped, so that a server that is down is
 * not tried for nobody.
 */
#define LOG_EVENT LOGE_AUTH /* the event kind of this file's log lines (log.h) */
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
    struct pool_job      job;    /* on its pool's queue until a server runs it */
    struct authq_lookup *next;   /* on its worker's list */
    struct pool         *pool;   /* (auth database, auth_user) */
    bool                 queued; /* on its pool's queue (not yet run, nor failed) */
    char                *user;   /* whose secret */
    char                *where;  /* creds.h's place: "auth database/auth_user" */
    char                *query;
    unsigned             gen; /* creds_gen() when it began */
    struct authq_waiters waiters;
    int                  rows;
    bool                 has_name; /* the first row named the role (not NULL) */
    char                *secret;   /* ... and its secret, NULL when none */
    bool                 bad_row;  /* the first row was not (name, secret) */
};

static _Thread_local struct authq_lookup *lookups; /* this worker's, running or queued */

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

    stats_event(STATS_EV_AUTHQ_FAILURE);
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

    lk->queued = false;
    stats_event(STATS_EV_AUTHQ_LOOKUP);
    server_lookup(s, lk->query, lk->user, &lookup_ops, lk);
}

static void job_fail(struct pool_job *j, const char *sqlstate, const char *msg)
{
    ((struct authq_lookup *)j)->queued = false;
    failed((struct authq_lookup *)j, sqlstate, msg);
}

/* A new lookup on p, not queued yet; NULL: out of memory. */
static struct authq_lookup *lookup_new(struct pool *p, const char *user, const char *where, const char *query)
{
    struct authq_lookup *lk = calloc(1, sizeof(*lk));

    if (lk == NULL || (lk->user = strdup(user)) == NULL || (lk->where = strdup(where)) == NULL ||
        (lk->query = strdup(query)) == NULL) {
        if (lk != NULL) {
            free(lk->user);
            free(lk->where);
        }
        free(lk);
        return NULL;
    }
    lk->pool = p;
    lk->gen = creds_gen();
    lk->job.run = job_run;
    lk->job.fail = job_fail;
    TAILQ_INIT(&lk->waiters);
    lk->next = lookups;
    lookups = lk;
    return lk;
}

static void out_of_memory(struct authq_answer *a)
{
    a->status = AUTHQ_FAILED;
    a->sqlstate = "53200";
    a->message = "out of memory";
}

enum authq_start authq_find(const char *dbname, const char *user, bool console, struct authq_waiter *w,
                            struct authq_answer *a, char **hold)
{
    struct config_auth_route r;
    struct authq_lookup     *lk;
    struct pool             *p;
    const char              *err = NULL;
    char                     where[CONFIG_PLACE_MAX];
    bool                     oom;
    unsigned                 gen = creds_gen();

    *hold = NULL;
    w->lookup = NULL;
    if (!config_auth_route(pgbun.cfg, dbname, console, &r)) return AUTHQ_OFF;
    memset(a, 0, sizeof(*a));
    a->status = AUTHQ_NO_USER;
    /* Nowhere to ask (the console without auth_dbname): no such user, and the exchange fails at the password. */
    if (!config_auth_place(&r, where)) return AUTHQ_ANSWER;
    if (creds_find(user, where, pgbun_now(), pgbun.cfg->auth_query_cache_ttl, hold, &oom)) {
        a->status = AUTHQ_FOUND;
        a->secret = *hold;
        return AUTHQ_ANSWER;
    }
    if (oom) {
        out_of_memory(a);
        return AUTHQ_ANSWER;
    }
    /* One lookup per user and place on this worker, however many wait for it. */
    for (lk = lookups; lk != NULL; lk = lk->next)
        if (strcmp(lk->user, user) == 0 && strcmp(lk->where, where) == 0 && lk->gen == gen) break;
    if (lk == NULL) {
        /* auth_dbname is checked at start and RELOAD; the client's own database may have no entry. */
        if ((p = pool_get(r.authdb, r.auth_user, &err)) == NULL) return AUTHQ_ANSWER;
        if ((lk = lookup_new(p, user, where, r.query)) == NULL) {
            out_of_memory(a);
            return AUTHQ_ANSWER;
        }
        TAILQ_INSERT_TAIL(&lk->waiters, w, entry);
        w->lookup = lk;
        log_debug("auth_query for user \"%s\" in %s: asking PostgreSQL", user, where);
        lk->queued = true;
        pool_queue_job(p, &lk->job); /* may answer at once (a pool that failed for good): w->done is called then */
        return AUTHQ_WAITING;
    }
    TAILQ_INSERT_TAIL(&lk->waiters, w, entry);
    w->lookup = lk;
    return AUTHQ_WAITING;
}

void authq_cancel(struct authq_waiter *w)
{
    struct authq_lookup *lk = w->lookup;

    if (lk == NULL) return;
    TAILQ_REMOVE(&lk->waiters, w, entry);
    w->lookup = NULL;
    /* Nobody waits and nothing runs yet: the pool need not open a connection for it. */
    if (TAILQ_EMPTY(&lk->waiters) && lk->queued) {
        pool_drop_job(lk->pool, &lk->job);
        lookup_free(lk);
    }
}

const char *authq_trouble(const struct authq_waiter *w)
{
    const struct pool *p = w->lookup != NULL ? w->lookup->pool : NULL;

    return p != NULL && p->fail_count > 0 ? p->last_fail_msg : NULL;
}

void authq_failed_login(const char *dbname, const char *user, bool console)
{
    struct config_auth_route r;
    char                     where[CONFIG_PLACE_MAX];

    if (config_auth_route(pgbun.cfg, dbname, console, &r) && config_auth_place(&r, where)) creds_drop(user, where);
}
