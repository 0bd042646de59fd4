/*
 * pool.c - pools, state lists, linking and the wait queue.
 *
 * Clients queue FIFO on their pool's WAITING list. pool_dispatch pairs them
 * with idle servers (most recently used first, so warm backends stay warm)
 * and opens new servers while the pool is under pool_size.
 *
 *   pool_request_server(c) -> WAITING -> pool_dispatch -> pool_link(c, s)
 *        -> server_prepare_for(s, c) -> SETs if needed -> client_start(c)
 *
 * Closed objects are parked on a reap list and freed by a zero-delay event,
 * never inside the callback that closed them. Timeouts and the periodic
 * pass over the pools are janitor.c's.
 */
#define LOG_EVENT LOGE_POOL /* the event kind of this file's log lines (log.h) */
#include "pool.h"

#include <assert.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cancel.h"
#include "client.h"
#include "log.h"
#include "pgbun.h"
#include "server.h"
#include "str.h"
#include "tls.h"
#include "worker.h"

TAILQ_HEAD(pool_list, pool);

/* One worker's pools and lists (worker.pw). */
struct pool_world {
    struct pool_list   pools;
    struct pool       *pool_index;   /* the same pools by key: find_or_make() */
    struct client     *cancel_index; /* logged-in clients by cancel key */
    struct pool_list   due;          /* pools whose dispatch runs after this loop iteration */
    int                ndue;
    struct client_list login_clients;
    int                nlogin_clients;
    struct client_list reap_clients;
    struct server_list reap_servers;
    struct event      *reap_event;
    int                nblocked; /* pools waiting on a max_db_connections or max_user_connections limit */
};

#define PW (worker_self->pw)

/*
 * What the pools of every worker share: for one (database, user) the open
 * server connections that pool_size limits, and for one database or one
 * user those that max_db_connections or max_user_connections limit. Made
 * with the first pool that needs one, kept until exit; the counts are
 * atomic, so a worker reserves a connection before it opens one.
 */
struct pool_share {
    struct pool_share *next;
    UT_hash_handle     hh;   /* in share_index, by key */
    char              *key;  /* kind, dbname and user: name_key() */
    char               kind; /* 'p' pool, 'a' admin pool, 'd' database, 'u' user */
    char              *dbname;
    char              *user;
    atomic_int         servers;           /* open (not closing) server connections */
    atomic_int         peak;              /* most at once since the start or RESET STATS */
    atomic_uint        wanting;           /* bit per worker whose clients wait and may not open one */
    atomic_int         clients;           /* 'd' and 'u': logged-in clients, for max_*_client_connections */
    atomic_uint        login_gen;         /* 'p': bumped when RELOAD or RECONNECT retires its servers */
    atomic_int         held[WORKERS_MAX]; /* 'p': servers on each worker */
    /* 'd', 'u': per worker, since when the clients of its pools blocked on this limit have waited (0: none) */
    _Atomic usec_t blocked_since[WORKERS_MAX];
    struct varlist welcome; /* 'p': ParameterStatus of the first login (share_lock) */
    bool           welcome_ready;
};

static pthread_mutex_t    share_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pool_share *shares;
static struct pool_share *share_index; /* the same, by key (share_lock) */
static atomic_uint        next_pool_id;

/* PAUSE db / DISABLE db, kept by database name so that pools made later inherit it. Changed only with the world
 * stopped. */
struct db_state {
    char *name;
    bool  paused;
    bool  disabled;
};
static struct db_state *db_states;
static size_t           ndb_states;

/*
 * The key a pool or a share is found by: a tag, then each name with a mark
 * of whether it is there ("+name" or "-"), NUL between. Written into buf
 * when it fits (cap bytes), else malloc'd; *len is its length. NULL: out of
 * memory.
 */
static char *name_key(char *buf, size_t cap, char tag, const char *a, const char *b, size_t *len)
{
    size_t alen = a ? strlen(a) : 0, blen = b ? strlen(b) : 0;
    char  *k, *o;

    *len = 1 + 1 + alen + 1 + 1 + blen;
    k = *len <= cap ? buf : malloc(*len);
    if (k == NULL) return NULL;
    o = k;
    *o++ = tag;
    *o++ = a ? '+' : '-';
    if (a) o = (char *)memcpy(o, a, alen) + alen;
    *o++ = '\0';
    *o++ = b ? '+' : '-';
    if (b) memcpy(o, b, blen);
    return k;
}

static struct pool_share *share_get(char kind, const char *dbname, const char *user)
{
    struct pool_share *sh;
    char               buf[256], *key;
    size_t             len;

    if ((key = name_key(buf, sizeof(buf), kind, dbname, user, &len)) == NULL) return NULL;
    pthread_mutex_lock(&share_lock);
    HASH_FIND(hh, share_index, key, len, sh);
    if (sh == NULL && (sh = calloc(1, sizeof(*sh))) != NULL) {
        sh->kind = kind;
        sh->dbname = dbname ? strdup(dbname) : NULL;
        sh->user = user ? strdup(user) : NULL;
        if ((!dbname || sh->dbname) && (!user || sh->user) && (sh->key = malloc(len)) != NULL) {
            memcpy(sh->key, key, len);
            HASH_ADD_KEYPTR(hh, share_index, sh->key, len, sh);
        }
        if (sh->hh.tbl == NULL) { /* out of memory: in no table */
            free(sh->dbname);
            free(sh->user);
            free(sh->key);
            free(sh);
            sh = NULL;
        } else {
            sh->next = shares;
            shares = sh;
        }
    }
    pthread_mutex_unlock(&share_lock);
    if (key != buf) free(key);
    return sh;
}

static void shares_free(void)
{
    struct pool_share *sh;

    HASH_CLEAR(hh, share_index);
    while ((sh = shares) != NULL) {
        shares = sh->next;
        free(sh->key);
        varlist_clear(&sh->welcome);
        free(sh->dbname);
        free(sh->user);
        free(sh);
    }
}

/* One more server under `limit` (negative: none); false when it is reached. */
static bool share_take(struct pool_share *sh, int limit)
{
    int n = atomic_load(&sh->servers);

    do {
        if (limit >= 0 && n >= limit) return false;
    } while (!atomic_compare_exchange_weak(&sh->servers, &n, n + 1));
    n++;
    for (int peak = atomic_load(&sh->peak); n > peak && !atomic_compare_exchange_weak(&sh->peak, &peak, n);)
        ;
    return true;
}

static void share_put(struct pool_share *sh)
{
    atomic_fetch_sub(&sh->servers, 1);
}

int pool_servers_total(const struct pool *p)
{
    return atomic_load(&p->share->servers);
}

int pool_peak_servers(const struct pool *p)
{
    return atomic_load(&p->share->peak);
}

int pool_peak_db_servers(const struct pool *p)
{
    return atomic_load(&p->db_share->peak);
}

void pool_reset_peaks(void)
{
    pthread_mutex_lock(&share_lock);
    for (struct pool_share *sh = shares; sh != NULL; sh = sh->next)
        atomic_store(&sh->peak, atomic_load(&sh->servers));
    pthread_mutex_unlock(&share_lock);
}

/*
 * The first server login's ParameterStatus, kept for the pool of every
 * worker: a client whose worker has no server of the pool yet logs in at
 * once all the same.
 */
static void share_welcome(struct pool *p)
{
    pthread_mutex_lock(&share_lock);
    if (!p->share->welcome_ready && p->welcome_ready && varlist_copy(&p->share->welcome, &p->welcome))
        p->share->welcome_ready = true;
    else if (p->share->welcome_ready && !p->welcome_ready && varlist_copy(&p->welcome, &p->share->welcome))
        p->welcome_ready = true;
    pthread_mutex_unlock(&share_lock);
}

bool pool_same(const struct pool *a, const struct pool *b)
{
    return a->share == b->share;
}

/* Frees what was closed; nothing may still point at it. */
static void reap_now(struct pool_world *pw)
{
    struct client *c;
    struct server *s;

    while ((c = TAILQ_FIRST(&pw->reap_clients)) != NULL) {
        TAILQ_REMOVE(&pw->reap_clients, c, entry);
        client_free(c);
    }
    while ((s = TAILQ_FIRST(&pw->reap_servers)) != NULL) {
        TAILQ_REMOVE(&pw->reap_servers, s, entry);
        server_free(s);
    }
}

/* Runs once per loop iteration after something closed or asked for a dispatch. */
static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pool_world *pw = PW;
    struct pool       *p;

    reap_now(pw);
    /* The pools due now; one made due by a dispatch waits for the next iteration. */
    for (int n = pw->ndue; n > 0 && (p = TAILQ_FIRST(&pw->due)) != NULL; n--) {
        TAILQ_REMOVE(&pw->due, p, due_entry);
        pw->ndue--;
        p->dispatch_due = false;
        pool_dispatch(p);
    }
}

void pool_dispatch_later(struct pool *p)
{
    struct pool_world *pw = p->w->pw;

    if (!p->dispatch_due) {
        p->dispatch_due = true;
        TAILQ_INSERT_TAIL(&pw->due, p, due_entry);
        pw->ndue++;
    }
    event_active(pw->reap_event, 0, 0);
}

/* Out of the world's lists and index, before it is freed. */
static void unlink_pool(struct pool_world *pw, struct pool *p)
{
    if (p->dispatch_due) {
        TAILQ_REMOVE(&pw->due, p, due_entry);
        pw->ndue--;
        p->dispatch_due = false;
    }
    HASH_DELETE(hh, pw->pool_index, p);
    TAILQ_REMOVE(&pw->pools, p, entry);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    pool_dispatch(arg);
}

bool pool_init(struct worker *w)
{
    struct pool_world *pw = calloc(1, sizeof(*pw));

    if (pw == NULL) return false;
    TAILQ_INIT(&pw->pools);
    TAILQ_INIT(&pw->due);
    TAILQ_INIT(&pw->login_clients);
    TAILQ_INIT(&pw->reap_clients);
    TAILQ_INIT(&pw->reap_servers);
    w->pw = pw;
    pw->reap_event = event_new(w->base, -1, 0, reap_cb, NULL);
    return pw->reap_event != NULL;
}

static void pool_free(struct pool *p)
{
    free(p->key);
    free(p->dbname);
    free(p->user);
    free(p->host);
    free(p->ports);
    free(p->server_db);
    free(p->server_user);
    free(p->password);
    free(p->secret_place);
    free(p->application_name);
    free(p->connect_query);
    free(p->tls_own);
    varlist_clear(&p->welcome);
    if (p->retry_timer) event_free(p->retry_timer);
    free(p);
}

/* Every queued job hears that it will not run. */
static void fail_jobs(struct pool *p, const char *sqlstate, const char *msg)
{
    struct pool_job *j;

    while ((j = TAILQ_FIRST(&p->jobs)) != NULL) {
        TAILQ_REMOVE(&p->jobs, j, entry);
        p->njobs--;
        j->fail(j, sqlstate, msg);
    }
}

void pool_fini(struct worker *w)
{
    struct pool_world *pw = w->pw;
    struct pool       *p;
    struct client     *c;

    if (pw == NULL) return;
    worker_self = w;
    while ((c = TAILQ_FIRST(&pw->login_clients)) != NULL)
        client_close(c, "57P01", "pgbun is shutting down");
    TAILQ_FOREACH(p, &pw->pools, entry)
    {
        fail_jobs(p, "57P01", "pgbun is shutting down");
        for (int st = 0; st < CL_CLOSING; st++)
            while ((c = TAILQ_FIRST(&p->clients[st])) != NULL)
                client_close(c, "57P01", "pgbun is shutting down");
        for (int st = 0; st < SV_CLOSING; st++) {
            struct server *s;

            while ((s = TAILQ_FIRST(&p->servers[st])) != NULL)
                server_close(s, "pgbun is shutting down");
        }
    }
    reap_now(pw);
    cancel_fini(w);
    while ((p = TAILQ_FIRST(&pw->pools)) != NULL) {
        unlink_pool(pw, p);
        pool_free(p);
    }
    if (pw->reap_event) event_free(pw->reap_event);
    free(pw);
    w->pw = NULL;
    worker_self = worker_get(0);
}

void pool_fini_shared(void)
{
    for (size_t i = 0; i < ndb_states; i++)
        free(db_states[i].name);
    free(db_states);
    db_states = NULL;
    ndb_states = 0;
    shares_free();
}

static double secs(usec_t us)
{
    return (double)us / USEC_PER_SEC;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void replace(char **dst, const char *src)
{
    free(*dst);
    *dst = dup_or_null(src);
}

static bool resolve_server(struct pool *p);

/* Resolves the pool's settings: user entry > database entry > [pgbun]. */
static bool resolve(struct pool *p)
{
    if (p->admin) {
        p->client_idle_timeout = pgbun.cfg->client_idle_timeout; /* the one timeout a console client meets */
        return true;
    }
    return resolve_server(p);
}

/*
 * Where pgbun's own logins as the server user find an md5 secret or SCRAM
 * keys: auth_file's user, or the place auth_query looked it up for this
 * database (the same role name may have another password elsewhere).
 */
static const char *secret_place(const struct pool *p)
{
    static _Thread_local char where[CONFIG_PLACE_MAX];
    struct config_auth_route  r;

    if (pgbun.auth != NULL && auth_file_find(pgbun.auth, p->server_user) != NULL) return "auth_file";
    if (!config_auth_route(pgbun.cfg, p->dbname, false, &r) || !config_auth_place(&r, where)) return NULL;
    return where;
}

static bool resolve_server(struct pool *p)
{
    const struct pgbun_config *cfg = pgbun.cfg;
    const struct db_config    *db = config_find_db(cfg, p->dbname);
    const char                *password;
    struct config_settings     set;

    if (db == NULL) return false;
    config_resolve(cfg, db, config_find_user(cfg, p->user), p->dbname, &set);
    replace(&p->host, set.host);
    p->port = set.port;
    replace(&p->ports, set.ports);
    replace(&p->server_db, set.dbname);
    replace(&p->server_user, set.force_user ? set.force_user : p->user);
    password = set.password;
    if (password == NULL && pgbun.auth != NULL) {
        const struct secret *sec = auth_file_find(pgbun.auth, p->server_user);

        /* A plain secret logs in everywhere; an md5 one answers md5 challenges. */
        if (sec != NULL && sec->kind != SECRET_SCRAM) password = sec->secret;
    }
    replace(&p->password, password);
    replace(&p->secret_place, secret_place(p));
    replace(&p->application_name, set.application_name);
    replace(&p->connect_query, set.connect_query);
    p->tls = tls_target_for(pgbun.tls, db->name);
    if (db->sslmode != NULL || db->sslrootcert != NULL || db->sslcert != NULL || db->sslkey != NULL) {
        char own[1024];

        snprintf(own, sizeof(own), "%s|%s|%s|%s", set.sslmode, set.sslrootcert ? set.sslrootcert : "",
                 set.sslcert ? set.sslcert : "", set.sslkey ? set.sslkey : "");
        replace(&p->tls_own, own);
    } else {
        replace(&p->tls_own, NULL);
    }
    p->pool_size = set.pool_size == 0 ? POOL_SIZE_UNLIMITED : set.pool_size; /* PgBouncer 1.24: 0 sets no limit */
    p->min_pool_size = set.min_pool_size;
    p->reserve_pool_size = set.reserve_pool_size > POOL_SIZE_UNLIMITED ? POOL_SIZE_UNLIMITED : set.reserve_pool_size;
    p->server_lifetime = set.server_lifetime;
    p->query_wait_timeout = set.query_wait_timeout;
    p->query_timeout = set.query_timeout;
    p->idle_transaction_timeout = set.idle_transaction_timeout;
    p->transaction_timeout = set.transaction_timeout;
    p->client_idle_timeout = set.client_idle_timeout;
    p->max_db_client_connections = set.max_db_client_connections;
    p->mode = set.pool_mode;
    p->track_session = p->mode != POOL_SESSION && set.session_state != SESSION_OFF;
    p->pin_settings = p->track_session && set.session_state == SESSION_PIN;
    p->track_prepared = p->track_session && cfg->max_prepared_statements > 0;
    p->max_db_connections = set.max_db_connections;
    p->max_user_connections = set.max_user_connections;
    return true;
}

static struct pool *find_or_make(const char *dbname, const char *user, bool admin, const char **err)
{
    struct pool *p;
    char         buf[256], *key;
    size_t       len;

    if ((key = name_key(buf, sizeof(buf), admin ? 'a' : 'p', dbname, user, &len)) == NULL) {
        *err = "out of memory";
        return NULL;
    }
    HASH_FIND(hh, PW->pool_index, key, len, p);
    if (p != NULL) {
        if (key != buf) free(key);
        return p;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL || (p->key = malloc(len)) == NULL || (p->dbname = strdup(dbname)) == NULL ||
        (p->user = strdup(user)) == NULL) {
        if (key != buf) free(key);
        if (p) pool_free(p);
        *err = "out of memory";
        return NULL;
    }
    memcpy(p->key, key, len);
    p->keylen = len;
    if (key != buf) free(key);
    p->admin = admin;
    if (admin) p->mode = POOL_STATEMENT;
    if (!resolve(p)) {
        pool_free(p);
        *err = "no such database";
        return NULL;
    }
    p->share = share_get(admin ? 'a' : 'p', dbname, user);
    p->db_share = share_get('d', dbname, NULL);
    p->user_share = share_get('u', NULL, user);
    if (p->share == NULL || p->db_share == NULL || p->user_share == NULL) {
        pool_free(p);
        *err = "out of memory";
        return NULL;
    }
    p->w = worker_self;
    p->id = atomic_fetch_add(&next_pool_id, 1) + 1;
    if (!admin) share_welcome(p);
    for (int i = 0; i < CL_NSTATES; i++)
        TAILQ_INIT(&p->clients[i]);
    for (int i = 0; i < SV_NSTATES; i++)
        TAILQ_INIT(&p->servers[i]);
    TAILQ_INIT(&p->jobs);
    HASH_ADD_KEYPTR(hh, PW->pool_index, p->key, p->keylen, p);
    if (p->hh.tbl == NULL) {
        pool_free(p);
        *err = "out of memory";
        return NULL;
    }
    TAILQ_INSERT_TAIL(&PW->pools, p, entry);
    if (log_enabled(LOGL_DEBUG)) {
        /* "created" follows the pool's name in the text line: the name is a field in JSON, the message kept whole. */
        struct log_field f[] = {LOG_STR("database", p->dbname), LOG_STR("user", p->user)};

        if (admin)
            log_line(LOGL_DEBUG, LOGE_POOL, NULL, f, 2, "pool %s/%s created: admin console", p->dbname, p->user);
        else
            log_line(LOGL_DEBUG, LOGE_POOL, NULL, f, 2,
                     "pool %s/%s created: server %s:%d db=%s user=%s pool_size=%d mode=%s", p->dbname, p->user, p->host,
                     p->port, p->server_db, p->server_user, p->pool_size, config_pool_mode_name(p->mode));
    }
    return p;
}

struct pool *pool_get(const char *dbname, const char *user, const char **err)
{
    const struct db_config *db = config_find_db(pgbun.cfg, dbname);

    /* A database with a forced user has one pool, the forced user's, as in
     * PgBouncer: its pool_size bounds it whoever the clients log in as. */
    if (db != NULL && db->user != NULL) user = db->user;
    return find_or_make(dbname, user, false, err);
}

struct pool *pool_get_admin(const char *dbname, const char *user)
{
    const char *err;

    return find_or_make(dbname, user, true, &err);
}

static void set_blocked(struct pool *p, bool on);

void pool_remove(struct pool *p)
{
    set_blocked(p, false);
    unlink_pool(p->w->pw, p);
    pool_free(p);
}

/* The first element of one list of a worker's pool_world. */
typedef void *world_list_first(struct pool_world *pw);

static void *first_pool(struct pool_world *pw)
{
    return TAILQ_FIRST(&pw->pools);
}

static void *first_login(struct pool_world *pw)
{
    return TAILQ_FIRST(&pw->login_clients);
}

/* The first element of that list on worker `from` or a later one. */
static void *first_from(int from, world_list_first *first)
{
    for (int i = from; i < worker_count(); i++) {
        struct pool_world *pw = worker_get(i)->pw;
        void              *e = pw ? first(pw) : NULL;

        if (e != NULL) return e;
    }
    return NULL;
}

struct pool *pool_first(void)
{
    return first_from(0, first_pool);
}

struct pool *pool_next(const struct pool *p)
{
    struct pool *n = TAILQ_NEXT(p, entry);

    return n != NULL ? n : first_from(p->w->id + 1, first_pool);
}

struct pool *pool_first_of(const struct worker *w)
{
    return TAILQ_FIRST(&w->pw->pools);
}

struct pool *pool_next_same(const struct pool *p)
{
    for (int i = p->w->id + 1; i < worker_count(); i++) {
        struct pool *q;

        HASH_FIND(hh, worker_get(i)->pw->pool_index, p->key, p->keylen, q);
        if (q != NULL) return q;
    }
    return NULL;
}

bool pool_seen(const struct pool *p)
{
    /* A worker has one pool per key, and pools are walked worker by worker: look in the workers before p's. */
    for (int i = 0; i < p->w->id; i++) {
        struct pool *q;

        HASH_FIND(hh, worker_get(i)->pw->pool_index, p->key, p->keylen, q);
        if (q != NULL) return true;
    }
    return false;
}

struct client *pool_first_login_client(void)
{
    return first_from(0, first_login);
}

struct client *pool_next_login_client(const struct client *c)
{
    struct client *n = TAILQ_NEXT(c, entry);

    return n != NULL ? n : first_from(c->w->id + 1, first_login);
}

/* ---- PAUSE and DISABLE by database ---- */

static struct db_state *db_state(const char *name, bool create)
{
    struct db_state *d;

    for (size_t i = 0; i < ndb_states; i++)
        if (strcmp(db_states[i].name, name) == 0) return &db_states[i];
    if (!create) return NULL;
    d = realloc(db_states, (ndb_states + 1) * sizeof(*d));
    if (d == NULL) return NULL;
    db_states = d;
    d = &db_states[ndb_states];
    if ((d->name = strdup(name)) == NULL) return NULL;
    d->paused = d->disabled = false;
    ndb_states++;
    return d;
}

/* Drops entries that say nothing any more, so that the table stays as small as what is paused or disabled. */
static void db_states_trim(void)
{
    for (size_t i = 0; i < ndb_states;) {
        if (db_states[i].paused || db_states[i].disabled) {
            i++;
            continue;
        }
        free(db_states[i].name);
        db_states[i] = db_states[--ndb_states];
    }
}

void pool_pause(const char *dbname, bool on)
{
    struct db_state *d;

    if (dbname == NULL) {
        pgbun.paused = on;
        for (size_t i = 0; !on && i < ndb_states; i++)
            db_states[i].paused = false;
    } else if ((d = db_state(dbname, on)) != NULL) {
        d->paused = on;
    }
    db_states_trim();
    if (!on) pool_dispatch_all();
}

bool pool_is_paused(const char *dbname)
{
    const struct db_state *d;

    if (pgbun.paused) return true;
    return dbname != NULL && ndb_states > 0 && (d = db_state(dbname, false)) != NULL && d->paused;
}

bool pool_db_paused(const char *dbname)
{
    const struct db_state *d = ndb_states > 0 ? db_state(dbname, false) : NULL;

    return d != NULL && d->paused;
}

bool pool_any_paused(void)
{
    for (size_t i = 0; i < ndb_states; i++)
        if (db_states[i].paused) return true;
    return pgbun.paused;
}

void pool_disable(const char *dbname, bool on)
{
    struct db_state *d = db_state(dbname, on);

    if (d != NULL) d->disabled = on;
    db_states_trim();
}

bool pool_is_disabled(const char *dbname)
{
    const struct db_state *d;

    return ndb_states > 0 && (d = db_state(dbname, false)) != NULL && d->disabled;
}

/* Closes p's idle servers and marks the others to close when released; how many were marked. */
static int retire_servers(struct pool *p, const char *why)
{
    struct server *s;
    int            marked = 0;

    /* A server on its way to another worker is on no list: it finds out when adopted (pool_adopt_server). */
    atomic_fetch_add(&p->share->login_gen, 1);
    while ((s = TAILQ_FIRST(&p->servers[SV_IDLE])) != NULL)
        server_close(s, "%s: closed while idle", why);
    for (int st = 0; st < SV_CLOSING; st++)
        TAILQ_FOREACH(s, &p->servers[st], entry)
        {
            s->close_needed = true;
            marked++;
        }
    return marked;
}

int pool_reconnect(const char *dbname)
{
    struct pool *p;
    int          marked = 0;

    for (p = pool_first(); p != NULL; p = pool_next(p))
        if (!p->admin && (dbname == NULL || strcmp(p->dbname, dbname) == 0)) marked += retire_servers(p, "RECONNECT");
    return marked;
}

int pool_close_pending(const char *dbname)
{
    struct pool *p;
    int          n = 0;

    for (p = pool_first(); p != NULL; p = pool_next(p)) {
        const struct server *s;

        if (dbname != NULL && strcmp(p->dbname, dbname) != 0) continue;
        for (int st = 0; st < SV_CLOSING; st++)
            TAILQ_FOREACH(s, &p->servers[st], entry)
        if (s->close_needed) n++;
    }
    return n;
}

int pool_busy_servers(const char *dbname)
{
    struct pool *p;
    int          n = 0;

    for (p = pool_first(); p != NULL; p = pool_next(p))
        if (dbname == NULL || strcmp(p->dbname, dbname) == 0) n += p->nservers[SV_ACTIVE] + p->nservers[SV_RESETTING];
    return n;
}

/* Where and as whom p's servers log in, and what they run first. */
struct server_login {
    char *host;
    int   port;
    char *ports;
    char *server_db;
    char *server_user;
    char *password;
    char *connect_query;
    char *tls_own;
};

static void login_take(struct server_login *l, struct pool *p)
{
    *l = (struct server_login){p->host,        p->port,     p->ports,         p->server_db,
                               p->server_user, p->password, p->connect_query, p->tls_own};
    p->host = p->ports = p->server_db = p->server_user = p->password = p->connect_query = p->tls_own = NULL;
}

static void login_give_back(struct server_login *l, struct pool *p)
{
    p->host = l->host;
    p->ports = l->ports;
    p->server_db = l->server_db;
    p->server_user = l->server_user;
    p->password = l->password;
    p->connect_query = l->connect_query;
    p->tls_own = l->tls_own;
}

static bool login_same(const struct server_login *l, const struct pool *p)
{
    return l->port == p->port && str_same(l->host, p->host) && str_same(l->ports, p->ports) &&
           str_same(l->server_db, p->server_db) && str_same(l->server_user, p->server_user) &&
           str_same(l->password, p->password) && str_same(l->connect_query, p->connect_query) &&
           str_same(l->tls_own, p->tls_own);
}

static void login_free(struct server_login *l)
{
    free(l->host);
    free(l->ports);
    free(l->server_db);
    free(l->server_user);
    free(l->password);
    free(l->connect_query);
    free(l->tls_own);
}

void pool_config_changed(void)
{
    struct pool *p;

    for (p = pool_first(); p != NULL; p = pool_next(p)) {
        struct server_login old;
        bool                moved;

        if (p->admin) {
            (void)resolve(p);
            continue;
        }
        login_take(&old, p);
        if (!resolve(p)) {
            login_give_back(&old, p);
            /* The entry's own TLS went with the old config: new servers are reached the global way. */
            p->tls = &pgbun.tls->server;
            pool_log(p, LOGL_WARNING, "database entry removed; keeping its last settings%s",
                     p->tls_own != NULL ? " but its TLS keys (server_tls_* from now on)" : "");
            continue;
        }
        moved = !login_same(&old, p);
        login_free(&old);
        if (moved) {
            /* Its servers are another database's, or another user's: none may serve again. */
            int busy = retire_servers(p, "RELOAD: the database's server settings changed");

            pool_log(p, LOGL_INFO, "server settings changed: now %s:%d db=%s user=%s%s", p->host, p->port, p->server_db,
                     p->server_user, busy ? "; busy servers close when released" : "");
            p->last_fail_time = 0; /* a fixed password or host is tried at once */
            p->fail_count = 0;
        }
        pool_dispatch_later(p); /* sizes and limits may have grown */
    }
}

/* ---- state lists ---- */

static struct client_list *client_list_of(struct client *c, enum client_state st)
{
    if (st == CL_CLOSING) return &c->w->pw->reap_clients;
    if (c->pool == NULL) {
        assert(st == CL_LOGIN);
        return &c->w->pw->login_clients;
    }
    return &c->pool->clients[st];
}

static void client_count(struct client *c, enum client_state st, int delta)
{
    if (st == CL_CLOSING) return;
    if (c->pool == NULL)
        c->w->pw->nlogin_clients += delta;
    else
        c->pool->nclients[st] += delta;
}

void pool_set_client_state(struct client *c, enum client_state st)
{
    enum client_state old = c->state;

    assert(old != CL_CLOSING);
    assert(st != CL_ACTIVE || c->server != NULL);
    assert(st == CL_ACTIVE || st == CL_CLOSING || c->server == NULL);
    TAILQ_REMOVE(client_list_of(c, old), c, entry);
    client_count(c, old, -1);
    c->state = st;
    c->state_since = pgbun_now();
    TAILQ_INSERT_TAIL(client_list_of(c, st), c, entry);
    client_count(c, st, +1);
    if (st == CL_CLOSING) {
        if (c->cancel_indexed) HASH_DELETE(cancel_hh, c->w->pw->cancel_index, c);
        c->cancel_indexed = false;
        /* Its places under max_db_client_connections and max_user_client_connections are free. */
        if (c->db_clients != NULL) atomic_fetch_sub(&c->db_clients->clients, 1);
        if (c->user_clients != NULL) atomic_fetch_sub(&c->user_clients->clients, 1);
        c->db_clients = c->user_clients = NULL;
        event_active(c->w->pw->reap_event, 0, 0);
    }
}

void pool_register_client(struct client *c)
{
    c->state = CL_LOGIN;
    c->state_since = pgbun_now();
    c->pool = NULL;
    TAILQ_INSERT_TAIL(&c->w->pw->login_clients, c, entry);
    c->w->pw->nlogin_clients++;
}

/* One more client under `limit` (negative: none); false when it is reached. */
static bool clients_take(struct pool_share *sh, int limit)
{
    int n = atomic_load(&sh->clients);

    do {
        if (limit >= 0 && n >= limit) return false;
    } while (!atomic_compare_exchange_weak(&sh->clients, &n, n + 1));
    return true;
}

static int limit_of(int max);

bool pool_admit_client(struct pool *p, struct client *c)
{
    struct config_settings set;
    int                    ulimit;
    struct pool_share     *ush;

    assert(c->db_clients == NULL && c->user_clients == NULL);
    if (p->admin) return true;
    /* The user a client logged in as, whatever user its database forces on the server. */
    config_resolve(pgbun.cfg, NULL, config_find_user(pgbun.cfg, c->user), NULL, &set);
    ulimit = set.max_user_client_connections;
    if (!clients_take(p->db_share, limit_of(p->max_db_client_connections))) {
        client_close(c, "53300", "client connections exceeded (max_db_client_connections = %d)",
                     p->max_db_client_connections);
        return false;
    }
    c->db_clients = p->db_share;
    if ((ush = share_get('u', NULL, c->user)) == NULL) {
        client_close(c, "53200", "out of memory");
        return false;
    }
    if (!clients_take(ush, limit_of(ulimit))) {
        client_close(c, "53300", "client connections exceeded (max_user_client_connections = %d)", ulimit);
        return false;
    }
    c->user_clients = ush;
    return true;
}

int pool_share_clients(const char *dbname, const char *user)
{
    struct pool_share *sh;
    char               buf[256], *key;
    size_t             len;
    int                n = 0;

    if ((key = name_key(buf, sizeof(buf), dbname ? 'd' : 'u', dbname, user, &len)) == NULL) return 0;
    pthread_mutex_lock(&share_lock);
    HASH_FIND(hh, share_index, key, len, sh);
    if (sh != NULL) n = atomic_load(&sh->clients);
    pthread_mutex_unlock(&share_lock);
    if (key != buf) free(key);
    return n;
}

void pool_adopt_client(struct pool *p, struct client *c)
{
    assert(c->pool == NULL && c->state == CL_LOGIN && p->w == c->w);
    TAILQ_REMOVE(&c->w->pw->login_clients, c, entry);
    c->w->pw->nlogin_clients--;
    c->pool = p;
    TAILQ_INSERT_TAIL(&p->clients[CL_LOGIN], c, entry);
    p->nclients[CL_LOGIN]++;
}

/* Pools of any worker waiting on a max_db_connections or max_user_connections limit. */
static atomic_int nblocked_all;

static bool db_full(const struct pool *p);
static bool user_full(const struct pool *p);

/* Since when this worker's pools blocked on limit `sh` have waited, for the other workers to see. */
static void publish_blocked(struct worker *w, struct pool_share *sh)
{
    struct pool *q;
    usec_t       oldest = 0;

    TAILQ_FOREACH(q, &w->pw->pools, entry)
    {
        usec_t since;

        if (!q->blocked ||
            !((q->db_share == sh && q->max_db_connections > 0) || (q->user_share == sh && q->max_user_connections > 0)))
            continue;
        since = pool_waiting_since(q);
        if (since != 0 && (oldest == 0 || since < oldest)) oldest = since;
    }
    atomic_store(&sh->blocked_since[w->id], oldest);
}

static void set_blocked(struct pool *p, bool on)
{
    if (!on) p->handed = 0; /* it runs its queue now: what it was handed is free for it to take */
    if (p->blocked == on) return;
    p->blocked = on;
    p->w->pw->nblocked += on ? 1 : -1;
    atomic_fetch_add(&nblocked_all, on ? 1 : -1);
    if (worker_count() == 1) return;
    publish_blocked(p->w, p->db_share);
    publish_blocked(p->w, p->user_share);
    /* Other workers' idle servers under the limit make room (pool_serve_blocked). */
    if (on) worker_wake_others(p->w, WAKE_BLOCKED);
}

/*
 * A pool of another worker is blocked on a database or user limit that p
 * is under, and its clients have waited longer than p's (mine; 0: none
 * wait): p's next free server makes room for it. Returns the limit's name,
 * or NULL.
 */
static const char *blocked_elsewhere(const struct pool *p, usec_t mine)
{
    static const char *const names[2] = {"max_db_connections", "max_user_connections"};
    const struct pool_share *sh[2] = {p->max_db_connections > 0 ? p->db_share : NULL,
                                      p->max_user_connections > 0 ? p->user_share : NULL};

    if (worker_count() == 1 || atomic_load(&nblocked_all) == p->w->pw->nblocked) return NULL;
    for (int k = 0; k < 2; k++) {
        for (int i = 0; sh[k] != NULL && i < worker_count(); i++) {
            usec_t since = i == p->w->id ? 0 : atomic_load(&sh[k]->blocked_since[i]);

            if (since != 0 && (mine == 0 || since < mine)) return names[k];
        }
    }
    return NULL;
}

static bool same_db(const struct pool *a, const struct pool *b)
{
    return strcmp(a->dbname, b->dbname) == 0;
}

static bool same_user(const struct pool *a, const struct pool *b)
{
    return strcmp(a->user, b->user) == 0;
}

/* A server of `p` went idle or away: a blocked pool sharing its limit may use the slot. */
static void wake_blocked(const struct pool *p)
{
    struct pool *q;

    if (p->w->pw->nblocked > 0) {
        TAILQ_FOREACH(q, &p->w->pw->pools, entry)
        {
            if (q != p && q->blocked &&
                ((q->max_db_connections > 0 && same_db(q, p)) || (q->max_user_connections > 0 && same_user(q, p))))
                pool_dispatch_later(q);
        }
    }
    /* Pools of other workers blocked on a limit this one shares look again. */
    if (atomic_load(&nblocked_all) > p->w->pw->nblocked) worker_wake_others(p->w, WAKE_BLOCKED);
}

static int victim_rank(const struct pool *q, const struct server *s);

void pool_serve_blocked(void)
{
    struct pool *p;
    /* One idle server makes room per look (each wake-up, each janitor run)
     * while a pool of another worker is blocked: the rest stay for this
     * worker's own clients until it is seen to need more. */
    int want = atomic_load(&nblocked_all) > PW->nblocked ? 1 : 0;

    TAILQ_FOREACH(p, &PW->pools, entry)
    if (p->blocked || (atomic_load(&p->share->wanting) & (1u << p->w->id))) pool_dispatch_later(p);
    while (want-- > 0) {
        struct server *victim = NULL, *s;
        const char    *limit = NULL, *l;
        int            victim_r = 0;

        TAILQ_FOREACH(p, &PW->pools, entry)
        {
            int r;

            if (p->admin || p->nclients[CL_WAITING] > 0 ||
                (s = TAILQ_LAST(&p->servers[SV_IDLE], server_list)) == NULL || (l = blocked_elsewhere(p, 0)) == NULL)
                continue;
            r = victim_rank(p, s);
            if (victim == NULL || r < victim_r || (r == victim_r && s->state_since < victim->state_since)) {
                victim = s;
                victim_r = r;
                limit = l;
            }
        }
        if (victim == NULL) break;
        server_close(victim, "%s: closed while idle to make room for a pool of another worker", limit);
    }
}

static void defer_free_server(struct server *s)
{
    struct pool_world *pw = s->pool->w->pw;

    TAILQ_INSERT_TAIL(&pw->reap_servers, s, entry);
    s->state = SV_CLOSING;
    event_active(pw->reap_event, 0, 0);
}

/* Gives back the connection's places under pool_size, max_db_connections and max_user_connections. */
static void put_slots(struct pool *p)
{
    share_put(p->share);
    share_put(p->db_share);
    share_put(p->user_share);
}

void pool_set_server_state(struct server *s, enum server_state st)
{
    struct pool      *p = s->pool;
    enum server_state old = s->state;

    assert(old != SV_CLOSING);
    assert(st != SV_ACTIVE || s->client != NULL);
    assert(st != SV_IDLE || (s->client == NULL && server_is_clean(s)));
    if (st == SV_CLOSING) {
        TAILQ_REMOVE(&p->servers[old], s, entry);
        p->nservers[old]--;
        put_slots(p);
        atomic_fetch_sub(&p->share->held[p->w->id], 1);
        defer_free_server(s);
        wake_blocked(p);
        /* Room under pool_size again: workers whose clients wait for a server of this pool may open one. */
        if (worker_count() > 1 && (atomic_load(&p->share->wanting) & ~(1u << p->w->id)))
            worker_wake_others(p->w, WAKE_BLOCKED);
        return;
    }
    TAILQ_REMOVE(&p->servers[old], s, entry);
    p->nservers[old]--;
    s->state = st;
    s->state_since = pgbun_now();
    if (st == SV_IDLE) /* LIFO: the warmest connection is reused first */
        TAILQ_INSERT_HEAD(&p->servers[st], s, entry);
    else
        TAILQ_INSERT_TAIL(&p->servers[st], s, entry);
    p->nservers[st]++;
    if (st == SV_IDLE) wake_blocked(p);
}

void pool_add_server(struct pool *p, struct server *s)
{
    s->pool = p;
    s->login_gen = atomic_load(&p->share->login_gen);
    s->state = SV_CONNECTING;
    s->state_since = pgbun_now();
    TAILQ_INSERT_TAIL(&p->servers[SV_CONNECTING], s, entry);
    p->nservers[SV_CONNECTING]++;
    p->stats.servers_opened++;
    atomic_fetch_add(&p->share->held[p->w->id], 1);
}

int pool_server_count(const struct pool *p)
{
    int n = 0;

    for (int st = 0; st < SV_CLOSING; st++)
        n += p->nservers[st];
    return n;
}

/* ---- linking ---- */

void pool_link(struct client *c, struct server *s)
{
    assert(c->server == NULL && s->client == NULL);
    assert(c->pool == s->pool);
    c->server = s;
    s->client = c;
    c->pool->stats.assignments++;
    if (s->used || s->opened_ahead) c->pool->stats.reused++;
    stats_add_wait(&c->pool->stats, c->state == CL_WAITING ? pgbun_now() - c->state_since : 0);
    s->used = true;
    s->checked = false;
    pool_set_client_state(c, CL_ACTIVE);
    pool_set_server_state(s, SV_ACTIVE);
}

void pool_unlink(struct client *c, struct server *s)
{
    assert(c->server == s && s->client == c);
    c->server = NULL;
    s->client = NULL;
}

void pool_queue_job(struct pool *p, struct pool_job *j)
{
    j->since = pgbun_now();
    TAILQ_INSERT_TAIL(&p->jobs, j, entry);
    p->njobs++;
    pool_dispatch(p);
}

void pool_drop_job(struct pool *p, struct pool_job *j)
{
    TAILQ_REMOVE(&p->jobs, j, entry);
    p->njobs--;
}

void pool_request_server(struct client *c)
{
    assert(c->state == CL_IDLE);
    pool_set_client_state(c, CL_WAITING);
    pool_dispatch(c->pool);
}

static bool yield_slot(struct server *s);
static bool give_away(struct server *s, bool idle);

void pool_release_server(struct server *s)
{
    struct pool *p = s->pool;
    const char  *limit;

    assert(s->client == NULL);
    if (pool_server_too_old(s, pgbun_now())) {
        server_close(s, "server_lifetime: connection older than %g s", secs(p->server_lifetime));
        return;
    }
    if (s->close_needed) {
        server_close(s, "RECONNECT: replaced once released");
        return;
    }
    /* Over pool_size (lowered by SET or RELOAD, or the reserve no longer needed): shrink. */
    if (pool_servers_total(p) > p->pool_size + (pool_reserve_open(p, pgbun_now()) ? p->reserve_pool_size : 0)) {
        server_close(s, "pool_size: %d servers open, more than pool_size %d", pool_servers_total(p), p->pool_size);
        return;
    }
    if (p->w->pw->nblocked > 0 && yield_slot(s)) return;
    if ((limit = blocked_elsewhere(p, pool_waiting_since(p))) != NULL) {
        server_close(s, "%s: handing the connection's slot to a pool of another worker, whose clients waited longer",
                     limit);
        return;
    }
    /* Not while its input is being relayed: relay() offers it once done (it must not touch a server given away). */
    if (!s->relaying && give_away(s, false)) return;
    if (s->throttled) server_resume(s); /* its last client's output was full: read again */
    pool_set_server_state(s, SV_IDLE);
    pool_dispatch(p);
}

void pool_server_ready(struct server *s)
{
    struct pool   *p = s->pool;
    struct client *c;

    if (!p->welcome_ready) {
        varlist_clear(&p->welcome);
        if (!varlist_copy(&p->welcome, &s->params)) {
            server_close(s, "out of memory");
            return;
        }
        p->welcome_ready = true;
        share_welcome(p);
    }
    p->last_fail_time = 0;
    p->fail_count = 0;
    if (s->close_needed) { /* RECONNECT came while it was logging in with the old settings */
        server_close(s, "replaced after its login: RECONNECT, or RELOAD changed its settings");
        return;
    }
    s->checked = true; /* its login just proved it alive */
    pool_set_server_state(s, SV_IDLE);
    while ((c = TAILQ_FIRST(&p->clients[CL_WELCOME])) != NULL)
        client_welcome(c);
    pool_dispatch(p);
}

static usec_t retry_pause(const struct pool *p);

/* Clients waiting for a server that cannot be had get the last failure. */
static void fail_waiting(struct pool *p)
{
    struct client *c;

    fail_jobs(p, p->last_fail_state, p->last_fail_msg);
    while ((c = TAILQ_FIRST(&p->clients[CL_WELCOME])) != NULL)
        client_close(c, p->last_fail_state, "%s", p->last_fail_msg);
    while ((c = TAILQ_FIRST(&p->clients[CL_WAITING])) != NULL)
        client_close(c, p->last_fail_state, "%s", p->last_fail_msg);
}

bool pool_failure_lasting(const char *sqlstate)
{
    /* Class 08 (refused, reset, timed out) but not 08P01, a protocol
     * violation; 57P01-57P03 (shutting down, starting up); class 53 (too
     * many connections, out of memory). Everything else - a wrong password,
     * a role or database that is gone, pg_hba.conf - needs a person. */
    if (strcmp(sqlstate, "08P01") == 0) return true;
    return strncmp(sqlstate, "08", 2) != 0 && strncmp(sqlstate, "57P", 3) != 0 && strncmp(sqlstate, "53", 2) != 0;
}

void pool_server_failed(struct pool *p, const char *sqlstate, const char *msg)
{
    usec_t now = pgbun_now();

    /* Attempts started together and failing together are one failure: only a
     * failure after the pause (a new round of attempts) makes the pause grow.
     * So a server that refused a burst of logins while it restarted is tried
     * again after 0.5 s, not 4. */
    if (p->last_fail_time == 0 || now - p->last_fail_time >= retry_pause(p)) p->fail_count++;
    p->last_fail_time = now;
    snprintf(p->last_fail_state, sizeof(p->last_fail_state), "%s", sqlstate);
    snprintf(p->last_fail_msg, sizeof(p->last_fail_msg), "%s", msg);
    /* A server that is down or restarting keeps its clients queued, to be
     * served when it is back or failed at query_wait_timeout. A failure that
     * waiting will not cure reaches every queued client now, busy servers or
     * not: they would only get it later. */
    if (pool_failure_lasting(sqlstate)) fail_waiting(p);
}

/*
 * After failures in a row, new connection attempts wait 0.5 s, 1 s, 2 s, ...
 * up to server_login_retry but never more than 4 s: a down server is not
 * hammered, and one that comes back is used within 5 s.
 */
#define RETRY_FIRST (USEC_PER_SEC / 2)
#define RETRY_MAX   (4 * USEC_PER_SEC)

static usec_t retry_pause(const struct pool *p)
{
    usec_t cap = pgbun.cfg->server_login_retry < RETRY_MAX ? pgbun.cfg->server_login_retry : RETRY_MAX;
    usec_t pause = RETRY_FIRST;

    for (int i = 1; i < p->fail_count && pause < cap; i++)
        pause *= 2;
    return pause < cap ? pause : cap;
}

/* The reserve opens to a pool whose oldest waiting client has waited reserve_pool_timeout. */
bool pool_reserve_open(const struct pool *p, usec_t now)
{
    const struct client *c = TAILQ_FIRST(&p->clients[CL_WAITING]);

    return p->reserve_pool_size > 0 && c != NULL && now - c->state_since >= pgbun.cfg->reserve_pool_timeout;
}

void pool_dispatch_all(void)
{
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p))
        pool_dispatch_later(p);
}

static bool db_full(const struct pool *p)
{
    return p->max_db_connections > 0 && atomic_load(&p->db_share->servers) >= p->max_db_connections;
}

static bool user_full(const struct pool *p)
{
    return p->max_user_connections > 0 && atomic_load(&p->user_share->servers) >= p->max_user_connections;
}

/* Clients of p that are logged in: they may ask for a server at any moment. */
static int clients_in(const struct pool *p)
{
    return p->nclients[CL_IDLE] + p->nclients[CL_ACTIVE] + p->nclients[CL_WAITING];
}

/* p's oldest waiting client has waited reserve_pool_timeout: p may close any idle server for room. */
bool pool_waited_long(const struct pool *p, usec_t now)
{
    usec_t since = pool_waiting_since(p);

    return since != 0 && now - since >= pgbun.cfg->reserve_pool_timeout;
}

/* How readily an idle server of q goes to make room: 0 first. */
static int victim_rank(const struct pool *q, const struct server *s)
{
    if (clients_in(q) == 0) return 0; /* nobody is connected to use it */
    return s->used ? 1 : 2;           /* one not used yet was opened for q's clients, who come next */
}

/*
 * The idle server of another pool sharing `same` with p that is best closed
 * to make room, or NULL: the lowest victim_rank, then the longest unused.
 * Only a pool without a server may take one its owner's clients may want.
 * A server fresh from a pool's first login (the welcome) goes last: closing
 * it would only make that pool's clients open another.
 */
static struct server *idle_victim(const struct pool *p, bool (*same)(const struct pool *, const struct pool *))
{
    struct pool   *q;
    struct server *victim = NULL, *s;
    int            victim_r = 0;
    /* A pool that has a server serves its queue with it: it takes no more
     * from pools whose clients are connected, only from deserted ones, until
     * its oldest client has waited reserve_pool_timeout (idle servers of
     * connected clients that send nothing must not hold it off for good).
     * (The count holds the slot take_slots reserved for the server to open.) */
    int max_r = pool_servers_total(p) <= 1 || pool_waited_long(p, pgbun_now()) ? 2 : 0;

    TAILQ_FOREACH(q, &p->w->pw->pools, entry)
    {
        if (q == p || !same(q, p)) continue;
        TAILQ_FOREACH_REVERSE(s, &q->servers[SV_IDLE], server_list, entry)
        {
            int r = victim_rank(q, s);

            if (r > max_r) continue;
            if (victim == NULL || r < victim_r || (r == victim_r && s->state_since < victim->state_since)) {
                victim = s;
                victim_r = r;
            }
        }
    }
    return victim;
}

static int limit_of(int max)
{
    return max > 0 ? max : -1;
}

/* A place under max_db_connections and max_user_connections. */
static bool take_shared(struct pool *p)
{
    if (!share_take(p->db_share, limit_of(p->max_db_connections))) return false;
    if (share_take(p->user_share, limit_of(p->max_user_connections))) return true;
    share_put(p->db_share);
    return false;
}

/*
 * Makes room under the full max_db_connections and max_user_connections
 * limits by closing idle servers of this worker's other pools under them,
 * but only when every full limit can give one up.
 */
static bool evict_for(const struct pool *p)
{
    bool           dbf = db_full(p), uf = user_full(p);
    struct server *dv = NULL, *uv = NULL;

    if ((!dbf && !uf) || (dbf && (dv = idle_victim(p, same_db)) == NULL) ||
        (uf && (uv = idle_victim(p, same_user)) == NULL))
        return false;
    if (dv != NULL)
        server_close(dv, "max_db_connections: closed while idle to make room for pool %s/%s", p->dbname, p->user);
    if (uv != NULL)
        server_close(uv, "max_user_connections: closed while idle to make room for pool %s/%s", p->dbname, p->user);
    return true;
}

enum take { TAKEN, POOL_FULL, SHARED_FULL };

/*
 * Reserves one more server of p under `limit` (pool_size, with the reserve
 * when open) and the database and user limits, counted over every worker.
 * With `evict`, idle servers of other pools make room under the latter.
 */
static enum take take_slots(struct pool *p, int limit, bool evict)
{
    if (!share_take(p->share, limit)) return POOL_FULL;
    if (take_shared(p) || (evict && evict_for(p) && take_shared(p))) return TAKEN;
    share_put(p->share);
    return SHARED_FULL;
}

/*
 * A server of p is free while a pool blocked on a limit it shares has waited
 * longer than p's own queue: close it so that pool gets the slot. Without
 * this a busy pool would keep a shared limit to itself.
 */
usec_t pool_waiting_since(const struct pool *p)
{
    const struct client *c = TAILQ_FIRST(&p->clients[CL_WAITING]);
    const struct client *w = p->welcome_ready ? NULL : TAILQ_FIRST(&p->clients[CL_WELCOME]);
    usec_t               since = c ? c->state_since : 0;

    if (w != NULL && (since == 0 || w->state_since < since)) since = w->state_since;
    return since;
}

/* The limit that q and p's servers both count under, that q (blocked) waits on, or NULL. */
static const char *limit_shared(const struct pool *q, const struct pool *p)
{
    if (q->max_db_connections > 0 && same_db(q, p)) return "max_db_connections";
    if (q->max_user_connections > 0 && same_user(q, p)) return "max_user_connections";
    return NULL;
}

/*
 * A pool blocked on a limit it shares with p whose clients have waited
 * longer than p's: it comes first, so p must not take the slot. *limit names
 * the shared limit. Without this a busy pool would keep a shared limit to
 * itself.
 */
static struct pool *older_blocked(const struct pool *p, const char **limit)
{
    struct pool *q;
    usec_t       mine = pool_waiting_since(p);

    TAILQ_FOREACH(q, &p->w->pw->pools, entry)
    {
        usec_t theirs = pool_waiting_since(q);

        if (q == p || !q->blocked || theirs == 0 || (mine != 0 && mine <= theirs)) continue;
        if ((*limit = limit_shared(q, p)) != NULL) return q;
    }
    return NULL;
}

/*
 * A server of p is free and a pool blocked on a limit they share waited
 * longer than p's own queue: close it so that pool gets the slot. While p's
 * own clients wait too, only a pool with fewer servers than p would keep
 * gets it: handing a slot to an equal would swap the shares, not even them,
 * and every swap closes one server and opens another.
 */
static bool yield_slot(struct server *s)
{
    struct pool *p = s->pool, *q, *to = NULL;
    usec_t       mine = pool_waiting_since(p);
    int          keep = pool_servers_total(p) - 1, fewest = 0;
    const char  *limit = NULL, *l;

    TAILQ_FOREACH(q, &p->w->pw->pools, entry)
    {
        usec_t theirs = pool_waiting_since(q);
        int    n;

        if (q == p || !q->blocked || theirs == 0 || (mine != 0 && mine <= theirs)) continue;
        if ((l = limit_shared(q, p)) == NULL) continue;
        n = pool_servers_total(q) + q->handed;
        if (mine != 0 && n > 0 && n >= keep) continue;
        if (to == NULL || n < fewest) {
            to = q;
            fewest = n;
            limit = l;
        }
    }
    if (to == NULL) return false;
    to->handed++;
    server_close(s, "%s: handing the connection's slot to pool %s/%s, whose clients waited longer", limit, to->dbname,
                 to->user);
    return true;
}

/*
 * server_check_query is due: the server last answered anything
 * server_check_delay ago or more (0: before every reuse). A login or check
 * in the last second, with no client since, counts as proof.
 */
static bool needs_check(const struct server *s, usec_t now)
{
    const struct pgbun_config *cfg = pgbun.cfg;

    if (cfg->server_check_query == NULL || cfg->server_check_query[0] == '\0') return false;
    if (s->checked && now - s->last_ready < USEC_PER_SEC) return false;
    return now - s->last_ready >= cfg->server_check_delay;
}

bool pool_server_stale(const struct server *s)
{
    return s->state == SV_IDLE && needs_check(s, pgbun_now());
}

bool pool_server_too_old(const struct server *s, usec_t now)
{
    if (s->pool->server_lifetime == 0) return s->used;
    return now - s->connect_time > s->pool->server_lifetime;
}

/* Clients that want a server, and servers on their way to being usable. */
static int demand(const struct pool *p)
{
    return p->njobs + p->nclients[CL_WAITING] + (p->welcome_ready ? 0 : p->nclients[CL_WELCOME] > 0);
}

static int coming(const struct pool *p)
{
    return p->nservers[SV_CONNECTING] + p->nservers[SV_LOGIN] + p->nservers[SV_TESTING];
}

/* ---- idle servers moving between workers ---- */

static unsigned worker_bit(const struct worker *w)
{
    return 1u << w->id;
}

/* p's clients wait and pool_size is reached: another worker with idle servers of the same pool gives one up. */
static void ask_others(struct pool *p)
{
    unsigned bit = worker_bit(p->w);

    /* A look first: under load this runs for every request, and a write would bounce the line between CPUs. */
    if (worker_count() == 1 || (atomic_load(&p->share->wanting) & bit)) return;
    if ((atomic_fetch_or(&p->share->wanting, bit) & bit) == 0) worker_wake_others(p->w, WAKE_WANT);
}

static void stop_asking(struct pool *p)
{
    if (worker_count() > 1 && (atomic_load(&p->share->wanting) & worker_bit(p->w)))
        atomic_fetch_and(&p->share->wanting, ~worker_bit(p->w));
}

/* An idle server unused this long goes to a worker that asks, even when its own holds no more than its share. */
#define SPARE_AFTER_USEC 10000

/*
 * s, clean, goes to a worker whose clients of the same pool wait while
 * pool_size is reached, one per request. Its worker gives it up when it
 * holds more than its share of pool_size, when the one asking holds none,
 * or (`idle`) when s has not been used for a while: so busy workers keep
 * about pool_size / workers servers each without trading them on every
 * transaction, none waits for ever, and servers follow the load.
 */
static bool give_away(struct server *s, bool idle)
{
    struct pool       *p = s->pool;
    struct pool_share *sh = p->share;
    unsigned           want;
    int                to, mine, fair;

    if (worker_count() == 1) return false;
    want = atomic_load(&sh->wanting) & ~worker_bit(p->w);
    if (want == 0) return false;
    to = __builtin_ctz(want);
    mine = atomic_load(&sh->held[p->w->id]);
    fair = (p->pool_size + worker_count() - 1) / worker_count();
    if (mine <= fair && atomic_load(&sh->held[to]) > 0 &&
        !(idle && p->nclients[CL_WAITING] == 0 && pgbun_now() - s->state_since >= SPARE_AFTER_USEC))
        return false;
    if ((atomic_fetch_and(&sh->wanting, ~(1u << to)) & (1u << to)) == 0) return false; /* taken meanwhile */
    TAILQ_REMOVE(&p->servers[s->state], s, entry);
    p->nservers[s->state]--;
    atomic_fetch_sub(&sh->held[p->w->id], 1);
    server_detach(s);
    if (!worker_send_server(worker_get(to), s)) {
        /* Out of memory: it stays here. */
        server_attach(s, p);
        TAILQ_INSERT_HEAD(&p->servers[s->state], s, entry);
        p->nservers[s->state]++;
        atomic_fetch_add(&sh->held[p->w->id], 1);
        return false;
    }
    return true;
}

void pool_offer_server(struct server *s)
{
    if (s->state == SV_IDLE) (void)give_away(s, false);
}

void pool_give_wanted(void)
{
    struct pool *p;

    TAILQ_FOREACH(p, &PW->pools, entry)
    {
        struct server *s;

        /* The longest unused first. */
        while (!p->admin && (s = TAILQ_LAST(&p->servers[SV_IDLE], server_list)) != NULL && give_away(s, true))
            ;
    }
}

void pool_adopt_server(struct server *s)
{
    struct pool *from = s->pool, *p;
    const char  *err;

    p = find_or_make(from->dbname, from->user, false, &err);
    if (p == NULL || p->share != from->share) {
        struct log_field f[] = {LOG_STR("database", from->dbname), LOG_STR("user", from->user)};

        log_line(LOGL_WARNING, LOGE_POOL, NULL, f, 2,
                 "S-%llu: pool %s/%s could not take the connection here (%s); closing it", (unsigned long long)s->id,
                 from->dbname, from->user, p ? "settings differ" : err);
        pool_drop_server(s);
        return;
    }
    s->state = SV_IDLE;
    server_attach(s, p);
    TAILQ_INSERT_HEAD(&p->servers[SV_IDLE], s, entry);
    p->nservers[SV_IDLE]++;
    atomic_fetch_add(&p->share->held[p->w->id], 1);
    stop_asking(p);
    if (s->login_gen != atomic_load(&p->share->login_gen)) {
        server_close(s, "RECONNECT or RELOAD retired it while it moved between workers");
        return;
    }
    if (!p->welcome_ready) {
        struct client *c;

        varlist_clear(&p->welcome);
        if (!varlist_copy(&p->welcome, &s->params)) {
            server_close(s, "out of memory");
            return;
        }
        p->welcome_ready = true;
        while ((c = TAILQ_FIRST(&p->clients[CL_WELCOME])) != NULL)
            client_welcome(c);
    }
    pool_dispatch(p);
}

void pool_drop_server(struct server *s)
{
    put_slots(s->pool);
    server_discard(s);
}

/* The idle server to use next: the most recently used (warm), or with server_round_robin the longest unused. */
static struct server *next_idle(const struct pool *p)
{
    return pgbun.cfg->server_round_robin ? TAILQ_LAST(&p->servers[SV_IDLE], server_list)
                                         : TAILQ_FIRST(&p->servers[SV_IDLE]);
}

void pool_dispatch(struct pool *p)
{
    struct pool_job *j;
    struct client   *c;
    struct server   *s;
    int              limit;
    usec_t           pause;

    if (pool_is_paused(p->dbname)) return; /* PAUSE: new work waits; what runs, finishes */
    while ((j = TAILQ_FIRST(&p->jobs)) != NULL && (s = next_idle(p)) != NULL) {
        if (needs_check(s, pgbun_now())) {
            if (p->nservers[SV_TESTING] >= p->njobs + p->nclients[CL_WAITING]) break;
            server_check(s);
            continue;
        }
        TAILQ_REMOVE(&p->jobs, j, entry);
        p->njobs--;
        pool_set_server_state(s, SV_TESTING);
        j->run(j, s);
    }
    while ((c = TAILQ_FIRST(&p->clients[CL_WAITING])) != NULL && (s = next_idle(p)) != NULL) {
        if (needs_check(s, pgbun_now())) {
            /* One check per waiting client; the rest stay idle until needed. */
            if (p->nservers[SV_TESTING] >= p->nclients[CL_WAITING]) break;
            server_check(s);
            continue;
        }
        pool_link(c, s);
        server_prepare_for(s, c);
    }

    set_blocked(p, false);
    if (demand(p) <= coming(p)) return;
    pause = retry_pause(p);
    if (p->last_fail_time != 0 && pgbun_now() - p->last_fail_time < pause) {
        usec_t         left = pause - (pgbun_now() - p->last_fail_time);
        struct timeval tv = {(time_t)(left / USEC_PER_SEC), (suseconds_t)(left % USEC_PER_SEC)};

        if (pool_failure_lasting(p->last_fail_state) && pool_servers_total(p) == 0) {
            fail_waiting(p);
            return;
        }
        /* The server may come back, or others may still serve the queue: try again when the pause is over. */
        if (p->retry_timer == NULL) p->retry_timer = evtimer_new(p->w->base, retry_cb, p);
        if (p->retry_timer != NULL) evtimer_add(p->retry_timer, &tv);
        return;
    }
    limit = p->pool_size + (pool_reserve_open(p, pgbun_now()) ? p->reserve_pool_size : 0);
    while (demand(p) > coming(p)) {
        int          fails = p->fail_count;
        const char  *shared;
        struct pool *first;

        if (p->w->pw->nblocked > 0 && (first = older_blocked(p, &shared)) != NULL) {
            /* Let the pool ahead in line use the room first. */
            pool_dispatch_later(first);
            set_blocked(p, true);
            return;
        }
        /* A failing pool does not take other pools' connections away. */
        switch (take_slots(p, limit, fails == 0)) {
        case TAKEN: break;
        case SHARED_FULL: set_blocked(p, true); return;
        case POOL_FULL: ask_others(p); return;
        }
        if (!server_launch(p, false)) {
            put_slots(p);
            return;
        }
        if (p->fail_count != fails) return; /* failed at once: the retry pause decides */
    }
    stop_asking(p);
}

void pool_open_min(struct pool *p, usec_t now)
{
    if (p->last_fail_time != 0 && now - p->last_fail_time < retry_pause(p)) return;
    if (atomic_load(&nblocked_all) > 0) return; /* a freed slot goes to clients waiting for it first */
    while (p->min_pool_size > 0 &&
           take_slots(p, p->min_pool_size < p->pool_size ? p->min_pool_size : p->pool_size, false) == TAKEN) {
        if (!server_launch(p, true)) {
            put_slots(p);
            return;
        }
    }
}

void pool_wait_timed_out(struct client *c, const char *what)
{
    const struct pool *p = c->pool;
    usec_t             waited = pgbun_now() - c->state_since;

    /* While the server cannot be reached, the client learns why. */
    if (p->fail_count > 0)
        client_close(c, p->last_fail_state, "%s: no server connection within %g s; the last attempt failed: %s", what,
                     secs(waited), p->last_fail_msg);
    else
        client_close(c, "08P01", "%s: no server connection became free within %g s", what, secs(waited));
}

/* ---- lookups ---- */

struct client *pool_find_cancel_key(const uint8_t key[8])
{
    struct client *c;

    HASH_FIND(cancel_hh, PW->cancel_index, key, sizeof(c->cancel_key), c);
    return c != NULL && c->state >= CL_IDLE && c->state <= CL_ACTIVE ? c : NULL;
}

bool pool_cancel_key_taken(const uint8_t key[8])
{
    struct client *c;

    HASH_FIND(cancel_hh, PW->cancel_index, key, sizeof(c->cancel_key), c);
    return c != NULL;
}

bool pool_index_cancel_key(struct client *c)
{
    assert(!c->cancel_indexed);
    HASH_ADD(cancel_hh, c->w->pw->cancel_index, cancel_key, sizeof(c->cancel_key), c);
    c->cancel_indexed = c->cancel_hh.tbl != NULL;
    return c->cancel_indexed;
}

int pool_total_clients(void)
{
    struct pool *p;
    int          n = 0;

    for (int i = 0; i < worker_count(); i++)
        n += worker_get(i)->pw->nlogin_clients;
    for (p = pool_first(); p != NULL; p = pool_next(p)) {
        if (p->admin) continue; /* a console holds no work: it does not keep pgbun from stopping */
        for (int st = 0; st < CL_CLOSING; st++)
            n += p->nclients[st];
    }
    return n;
}

int pool_total_active_servers(void)
{
    struct pool *p;
    int          n = 0;

    for (p = pool_first(); p != NULL; p = pool_next(p))
        n += p->nservers[SV_ACTIVE] + p->nservers[SV_RESETTING];
    return n;
}

void pool_log_line(const struct pool *p, int level, const char *fmt, ...)
{
    struct log_who who = {'P', 0, p->dbname, p->user, NULL, 0};
    va_list        ap;

    va_start(ap, fmt);
    log_vline(level, LOGE_POOL, &who, NULL, 0, fmt, ap);
    va_end(ap);
}
