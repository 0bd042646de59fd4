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
 * never inside the callback that closed them.
 */
#include "pool.h"

#include <assert.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "log.h"
#include "pgbun.h"
#include "server.h"

TAILQ_HEAD(pool_list, pool);

static struct pool_list   pools = TAILQ_HEAD_INITIALIZER(pools);
static struct client_list login_clients = TAILQ_HEAD_INITIALIZER(login_clients);
static int                nlogin_clients;
static struct client_list reap_clients = TAILQ_HEAD_INITIALIZER(reap_clients);
static struct server_list reap_servers = TAILQ_HEAD_INITIALIZER(reap_servers);
static struct event      *reap_event;
static struct event      *janitor_event;
static uint32_t           next_pool_id;
static usec_t             period_began; /* when the current stats_period began */
static usec_t             period_len;   /* how long the last full one lasted */

/* PAUSE db / DISABLE db, kept by database name so that pools made later inherit it. */
struct db_state {
    char *name;
    bool  paused;
    bool  disabled;
};
static struct db_state *db_states;
static size_t           ndb_states;

/* Frees what was closed; nothing may still point at it. */
static void reap_now(void)
{
    struct client *c;
    struct server *s;

    while ((c = TAILQ_FIRST(&reap_clients)) != NULL) {
        TAILQ_REMOVE(&reap_clients, c, entry);
        client_free(c);
    }
    while ((s = TAILQ_FIRST(&reap_servers)) != NULL) {
        TAILQ_REMOVE(&reap_servers, s, entry);
        server_free(s);
    }
}

/* Runs once per loop iteration after something closed or asked for a dispatch. */
static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pool *p;

    reap_now();
    TAILQ_FOREACH(p, &pools, entry)
    {
        if (!p->dispatch_due) continue;
        p->dispatch_due = false;
        pool_dispatch(p);
    }
}

void pool_dispatch_later(struct pool *p)
{
    p->dispatch_due = true;
    event_active(reap_event, 0, 0);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    pool_dispatch(arg);
}

/* How often the timeouts are checked; a timeout fires at most this late. */
#define JANITOR_PERIOD_USEC 250000

static void janitor_cb(evutil_socket_t fd, short what, void *arg);

void pool_init(void)
{
    struct timeval tv = {0, JANITOR_PERIOD_USEC};

    period_began = pgbun_now();
    reap_event = event_new(pgbun.base, -1, 0, reap_cb, NULL);
    janitor_event = event_new(pgbun.base, -1, EV_PERSIST, janitor_cb, NULL);
    if (janitor_event) event_add(janitor_event, &tv);
}

static void pool_free(struct pool *p)
{
    free(p->dbname);
    free(p->user);
    free(p->host);
    free(p->server_db);
    free(p->server_user);
    free(p->password);
    free(p->application_name);
    varlist_clear(&p->welcome);
    if (p->retry_timer) event_free(p->retry_timer);
    free(p);
}

/* What a pool did over its life, logged when pgbun stops. */
static void log_totals(const struct pool *p)
{
    const struct stats *st = &p->stats;

    if (!pgbun.cfg->log_stats || p->admin) return;
    log_info("pool %s/%s: %llu transactions, %llu queries, %llu server assignments (%llu reused), %llu server "
             "connections opened, at most %d at once, %llu bytes in, %llu bytes out; average xact %llu us, query "
             "%llu us, wait %llu us; query p50 %lld us, p95 %lld us, p99 %lld us",
             p->dbname, p->user, (unsigned long long)st->xact_count, (unsigned long long)st->query_count,
             (unsigned long long)st->assignments, (unsigned long long)st->reused,
             (unsigned long long)st->servers_opened, p->max_servers_used, (unsigned long long)st->bytes_in,
             (unsigned long long)st->bytes_out, (unsigned long long)stats_avg(st->xact_time, st->xact_count),
             (unsigned long long)stats_avg(st->query_time, st->query_count),
             (unsigned long long)stats_avg(st->wait_time, st->assignments), (long long)stats_percentile(st, 0.50),
             (long long)stats_percentile(st, 0.95), (long long)stats_percentile(st, 0.99));
}

void pool_fini(void)
{
    struct pool   *p;
    struct client *c;

    TAILQ_FOREACH(p, &pools, entry) log_totals(p);
    while ((c = TAILQ_FIRST(&login_clients)) != NULL)
        client_close(c, "57P01", "pgbun is shutting down");
    TAILQ_FOREACH(p, &pools, entry)
    {
        for (int st = 0; st < CL_CLOSING; st++)
            while ((c = TAILQ_FIRST(&p->clients[st])) != NULL)
                client_close(c, "57P01", "pgbun is shutting down");
        for (int st = 0; st < SV_CLOSING; st++) {
            struct server *s;

            while ((s = TAILQ_FIRST(&p->servers[st])) != NULL)
                server_close(s, "pgbun is shutting down");
        }
    }
    reap_now();
    server_cancel_fini();
    while ((p = TAILQ_FIRST(&pools)) != NULL) {
        TAILQ_REMOVE(&pools, p, entry);
        pool_free(p);
    }
    for (size_t i = 0; i < ndb_states; i++)
        free(db_states[i].name);
    free(db_states);
    db_states = NULL;
    ndb_states = 0;
    if (reap_event) event_free(reap_event);
    reap_event = NULL;
    if (janitor_event) event_free(janitor_event);
    janitor_event = NULL;
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
    if (p->admin) return true;
    return resolve_server(p);
}

static bool resolve_server(struct pool *p)
{
    const struct pgbun_config *cfg = pgbun.cfg;
    const struct db_config    *db = config_find_db(cfg, p->dbname);
    const struct user_config  *u = config_find_user(cfg, p->user);
    const char                *password = NULL;

    if (db == NULL) return false;
    replace(&p->host, db->host ? db->host : cfg->server_host);
    p->port = db->port > 0 ? db->port : cfg->server_port;
    replace(&p->server_db, db->dbname ? db->dbname : p->dbname);
    replace(&p->server_user, db->user ? db->user : p->user);
    if (db->password != NULL) {
        password = db->password;
    } else if (pgbun.auth != NULL) {
        const struct auth_secret *sec = authfile_find(pgbun.auth, p->server_user);

        /* A plain secret logs in everywhere; an md5 one answers md5 challenges. */
        if (sec != NULL && sec->kind != SECRET_SCRAM) password = sec->secret;
    }
    replace(&p->password, password);
    replace(&p->application_name, db->application_name);
    p->pool_size = cfg->default_pool_size;
    if (db->pool_size >= 0) p->pool_size = db->pool_size;
    if (u != NULL && u->pool_size >= 0) p->pool_size = u->pool_size;
    p->min_pool_size = db->min_pool_size >= 0 ? db->min_pool_size : cfg->min_pool_size;
    p->reserve_pool_size = db->reserve_pool_size >= 0 ? db->reserve_pool_size : cfg->reserve_pool_size;
    p->mode = cfg->pool_mode;
    if (db->pool_mode != POOL_MODE_UNSET) p->mode = db->pool_mode;
    if (u != NULL && u->pool_mode != POOL_MODE_UNSET) p->mode = u->pool_mode;
    p->max_db_connections = db->max_db_connections >= 0 ? db->max_db_connections : cfg->max_db_connections;
    p->max_user_connections =
        u != NULL && u->max_user_connections >= 0 ? u->max_user_connections : cfg->max_user_connections;
    return true;
}

static struct pool *find_or_make(const char *dbname, const char *user, bool admin, const char **err)
{
    struct pool *p;

    TAILQ_FOREACH(p, &pools, entry)
    if (p->admin == admin && strcmp(p->dbname, dbname) == 0 && strcmp(p->user, user) == 0) return p;

    p = calloc(1, sizeof(*p));
    if (p == NULL || (p->dbname = strdup(dbname)) == NULL || (p->user = strdup(user)) == NULL) {
        if (p) pool_free(p);
        *err = "out of memory";
        return NULL;
    }
    p->admin = admin;
    if (admin) p->mode = POOL_STATEMENT;
    if (!resolve(p)) {
        pool_free(p);
        *err = "no such database";
        return NULL;
    }
    p->id = ++next_pool_id;
    for (int i = 0; i < CL_NSTATES; i++)
        TAILQ_INIT(&p->clients[i]);
    for (int i = 0; i < SV_NSTATES; i++)
        TAILQ_INIT(&p->servers[i]);
    TAILQ_INSERT_TAIL(&pools, p, entry);
    if (admin)
        log_debug("pool %s/%s created: admin console", p->dbname, p->user);
    else
        log_debug("pool %s/%s created: server %s:%d db=%s user=%s pool_size=%d mode=%s", p->dbname, p->user, p->host,
                  p->port, p->server_db, p->server_user, p->pool_size, config_pool_mode_name(p->mode));
    return p;
}

struct pool *pool_get(const char *dbname, const char *user, const char **err)
{
    return find_or_make(dbname, user, false, err);
}

struct pool *pool_get_admin(const char *dbname, const char *user)
{
    const char *err;

    return find_or_make(dbname, user, true, &err);
}

struct pool *pool_first(void)
{
    return TAILQ_FIRST(&pools);
}

struct pool *pool_next(const struct pool *p)
{
    return TAILQ_NEXT(p, entry);
}

struct client *pool_first_login_client(void)
{
    return TAILQ_FIRST(&login_clients);
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

int pool_reconnect(const char *dbname)
{
    struct pool *p;
    int          marked = 0;

    TAILQ_FOREACH(p, &pools, entry)
    {
        struct server *s;

        if (p->admin || (dbname != NULL && strcmp(p->dbname, dbname) != 0)) continue;
        while ((s = TAILQ_FIRST(&p->servers[SV_IDLE])) != NULL)
            server_close(s, "RECONNECT: closed while idle");
        for (int st = 0; st < SV_CLOSING; st++)
            TAILQ_FOREACH(s, &p->servers[st], entry)
            {
                s->close_needed = true;
                marked++;
            }
    }
    return marked;
}

int pool_close_pending(const char *dbname)
{
    struct pool *p;
    int          n = 0;

    TAILQ_FOREACH(p, &pools, entry)
    {
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

    TAILQ_FOREACH(p, &pools, entry)
    if (dbname == NULL || strcmp(p->dbname, dbname) == 0) n += p->nservers[SV_ACTIVE] + p->nservers[SV_RESETTING];
    return n;
}

void pool_config_changed(void)
{
    struct pool *p;

    TAILQ_FOREACH(p, &pools, entry)
    {
        if (!resolve(p))
            log_warning("pool %s/%s: database entry removed; keeping its last settings", p->dbname, p->user);
        pool_dispatch_later(p); /* sizes and limits may have grown */
    }
}

/* ---- state lists ---- */

static struct client_list *client_list_of(struct client *c, enum client_state st)
{
    if (st == CL_CLOSING) return &reap_clients;
    if (c->pool == NULL) {
        assert(st == CL_LOGIN);
        return &login_clients;
    }
    return &c->pool->clients[st];
}

static void client_count(struct client *c, enum client_state st, int delta)
{
    if (st == CL_CLOSING) return;
    if (c->pool == NULL)
        nlogin_clients += delta;
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
    if (st == CL_CLOSING) event_active(reap_event, 0, 0);
}

void pool_register_client(struct client *c)
{
    c->state = CL_LOGIN;
    c->state_since = pgbun_now();
    c->pool = NULL;
    TAILQ_INSERT_TAIL(&login_clients, c, entry);
    nlogin_clients++;
}

void pool_adopt_client(struct pool *p, struct client *c)
{
    assert(c->pool == NULL && c->state == CL_LOGIN);
    TAILQ_REMOVE(&login_clients, c, entry);
    nlogin_clients--;
    c->pool = p;
    TAILQ_INSERT_TAIL(&p->clients[CL_LOGIN], c, entry);
    p->nclients[CL_LOGIN]++;
}

/* Pools whose clients wait on a max_db_connections or max_user_connections limit. */
static int nblocked;

static void set_blocked(struct pool *p, bool on)
{
    if (p->blocked == on) return;
    p->blocked = on;
    nblocked += on ? 1 : -1;
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
static int servers_sharing(const struct pool *p, bool (*same)(const struct pool *, const struct pool *));

static void wake_blocked(const struct pool *p)
{
    struct pool *q;

    if (nblocked == 0) return;
    TAILQ_FOREACH(q, &pools, entry)
    {
        if (q != p && q->blocked &&
            ((q->max_db_connections > 0 && same_db(q, p)) || (q->max_user_connections > 0 && same_user(q, p))))
            pool_dispatch_later(q);
    }
}

static void defer_free_server(struct server *s)
{
    TAILQ_INSERT_TAIL(&reap_servers, s, entry);
    s->state = SV_CLOSING;
    event_active(reap_event, 0, 0);
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
        defer_free_server(s);
        wake_blocked(p);
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
    int n;

    s->pool = p;
    s->state = SV_CONNECTING;
    s->state_since = pgbun_now();
    TAILQ_INSERT_TAIL(&p->servers[SV_CONNECTING], s, entry);
    p->nservers[SV_CONNECTING]++;
    p->stats.servers_opened++;
    n = pool_server_count(p);
    if (n > p->max_servers_used) p->max_servers_used = n;
    n = servers_sharing(p, same_db);
    if (n > p->max_db_servers) p->max_db_servers = n;
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
    if (c->state == CL_WAITING) c->pool->stats.wait_time += (uint64_t)(pgbun_now() - c->state_since);
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

void pool_request_server(struct client *c)
{
    assert(c->state == CL_IDLE);
    pool_set_client_state(c, CL_WAITING);
    pool_dispatch(c->pool);
}

static bool server_too_old(const struct server *s, usec_t now);
static bool yield_slot(struct server *s);
static bool reserve_open(const struct pool *p, usec_t now);

void pool_release_server(struct server *s)
{
    struct pool *p = s->pool;

    assert(s->client == NULL);
    if (server_too_old(s, pgbun_now())) {
        server_close(s, "server_lifetime: connection older than %g s", secs(pgbun.cfg->server_lifetime));
        return;
    }
    if (s->close_needed) {
        server_close(s, "RECONNECT: replaced once released");
        return;
    }
    /* Over pool_size (lowered by SET or RELOAD, or the reserve no longer needed): shrink. */
    if (pool_server_count(p) > p->pool_size + (reserve_open(p, pgbun_now()) ? p->reserve_pool_size : 0)) {
        server_close(s, "pool_size: %d servers open, more than pool_size %d", pool_server_count(p), p->pool_size);
        return;
    }
    if (nblocked > 0 && yield_slot(s)) return;
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
    }
    p->last_fail_time = 0;
    p->fail_count = 0;
    if (s->close_needed) { /* RECONNECT came while it was logging in with the old settings */
        server_close(s, "RECONNECT: replaced after its login");
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

    while ((c = TAILQ_FIRST(&p->clients[CL_WELCOME])) != NULL)
        client_close(c, p->last_fail_state, "%s", p->last_fail_msg);
    while ((c = TAILQ_FIRST(&p->clients[CL_WAITING])) != NULL)
        client_close(c, p->last_fail_state, "%s", p->last_fail_msg);
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
    /* Clients keep waiting while another server may still serve them. */
    if (pool_server_count(p) == 0) fail_waiting(p);
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
static bool reserve_open(const struct pool *p, usec_t now)
{
    const struct client *c = TAILQ_FIRST(&p->clients[CL_WAITING]);

    return p->reserve_pool_size > 0 && c != NULL && now - c->state_since >= pgbun.cfg->reserve_pool_timeout;
}

void pool_dispatch_all(void)
{
    struct pool *p;

    TAILQ_FOREACH(p, &pools, entry) pool_dispatch(p);
}

/* Open servers of every pool that shares p's database (same_db) or user (same_user). */
static int servers_sharing(const struct pool *p, bool (*same)(const struct pool *, const struct pool *))
{
    const struct pool *q;
    int                n = 0;

    TAILQ_FOREACH(q, &pools, entry)
    if (same(q, p)) n += pool_server_count(q);
    return n;
}

static bool db_full(const struct pool *p)
{
    return p->max_db_connections > 0 && servers_sharing(p, same_db) >= p->max_db_connections;
}

static bool user_full(const struct pool *p)
{
    return p->max_user_connections > 0 && servers_sharing(p, same_user) >= p->max_user_connections;
}

/* The longest-unused idle server of another pool sharing `same` with p, or NULL. */
static struct server *idle_victim(const struct pool *p, bool (*same)(const struct pool *, const struct pool *))
{
    struct pool   *q;
    struct server *victim = NULL, *s;

    TAILQ_FOREACH(q, &pools, entry)
    {
        if (q == p || !same(q, p) || (s = TAILQ_LAST(&q->servers[SV_IDLE], server_list)) == NULL) continue;
        if (victim == NULL || s->state_since < victim->state_since) victim = s;
    }
    return victim;
}

/*
 * Whether max_db_connections and max_user_connections leave room for one
 * more server of p. With `evict`, room is made by closing idle servers of
 * other pools under the full limits, but only when every full limit can
 * give one up.
 */
static bool shared_room(const struct pool *p, bool evict)
{
    bool           dbf = db_full(p), uf = user_full(p);
    struct server *dv = NULL, *uv = NULL;

    if (!dbf && !uf) return true;
    if (!evict || (dbf && (dv = idle_victim(p, same_db)) == NULL) || (uf && (uv = idle_victim(p, same_user)) == NULL))
        return false;
    if (dv != NULL)
        server_close(dv, "max_db_connections: closed while idle to make room for pool %s/%s", p->dbname, p->user);
    if (uv != NULL)
        server_close(uv, "max_user_connections: closed while idle to make room for pool %s/%s", p->dbname, p->user);
    return true;
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

    TAILQ_FOREACH(q, &pools, entry)
    {
        usec_t theirs = pool_waiting_since(q);

        if (q == p || !q->blocked || theirs == 0 || (mine != 0 && mine <= theirs)) continue;
        if (q->max_db_connections > 0 && same_db(q, p))
            *limit = "max_db_connections";
        else if (q->max_user_connections > 0 && same_user(q, p))
            *limit = "max_user_connections";
        else
            continue;
        return q;
    }
    return NULL;
}

/* A server of p is free: if a pool ahead in line shares a limit with it, close it so that pool gets the slot. */
static bool yield_slot(struct server *s)
{
    const char  *limit;
    struct pool *q = older_blocked(s->pool, &limit);

    if (q == NULL) return false;
    server_close(s, "%s: handing the connection's slot to pool %s/%s, whose clients waited longer", limit, q->dbname,
                 q->user);
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

/* Clients that want a server, and servers on their way to being usable. */
static int demand(const struct pool *p)
{
    return p->nclients[CL_WAITING] + (p->welcome_ready ? 0 : p->nclients[CL_WELCOME] > 0);
}

static int coming(const struct pool *p)
{
    return p->nservers[SV_CONNECTING] + p->nservers[SV_LOGIN] + p->nservers[SV_TESTING];
}

void pool_dispatch(struct pool *p)
{
    struct client *c;
    struct server *s;
    int            limit;
    usec_t         pause;

    if (pool_is_paused(p->dbname)) return; /* PAUSE: new work waits; what runs, finishes */
    while ((c = TAILQ_FIRST(&p->clients[CL_WAITING])) != NULL && (s = TAILQ_FIRST(&p->servers[SV_IDLE])) != NULL) {
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

        if (pool_server_count(p) == 0) {
            fail_waiting(p);
            return;
        }
        /* Others may still serve the queue; try again when the pause is over. */
        if (p->retry_timer == NULL) p->retry_timer = evtimer_new(pgbun.base, retry_cb, p);
        if (p->retry_timer != NULL) evtimer_add(p->retry_timer, &tv);
        return;
    }
    limit = p->pool_size + (reserve_open(p, pgbun_now()) ? p->reserve_pool_size : 0);
    while (demand(p) > coming(p) && pool_server_count(p) < limit) {
        int fails = p->fail_count;

        const char  *shared;
        struct pool *first;

        if (nblocked > 0 && (first = older_blocked(p, &shared)) != NULL) {
            /* Let the pool ahead in line use the room first. */
            pool_dispatch_later(first);
            set_blocked(p, true);
            return;
        }
        /* A failing pool does not take other pools' connections away. */
        if (!shared_room(p, fails == 0)) {
            set_blocked(p, true);
            return;
        }
        server_launch(p, false);
        if (p->fail_count != fails) return; /* failed at once: the retry pause decides */
    }
}

/* Keeps min_pool_size servers open, and opens the reserve to clients that waited long enough. */
static void top_up(struct pool *p, usec_t now)
{
    if (pool_is_paused(p->dbname) || pgbun.shutting_down || p->admin) return;
    if (reserve_open(p, now)) {
        pool_dispatch(p);
        return;
    }
    if (p->last_fail_time != 0 && now - p->last_fail_time < retry_pause(p)) return;
    if (nblocked > 0) return; /* a freed slot goes to clients waiting for it first */
    while (pool_server_count(p) < p->min_pool_size && pool_server_count(p) < p->pool_size && shared_room(p, false))
        server_launch(p, true);
}

/* ---- timeouts ---- */

/* How long a client has gone without a query of its own running or due. */
static usec_t client_idle_for(const struct client *c, usec_t now)
{
    usec_t since = c->request_time;

    if (c->state == CL_IDLE) {
        if (c->state_since > since) since = c->state_since;
    } else if (c->state == CL_ACTIVE && server_is_clean(c->server)) {
        /* Session mode: an idle client still holds its server. */
        if (c->server->last_ready > since) since = c->server->last_ready;
    } else {
        return 0;
    }
    return now - since;
}

static bool server_too_old(const struct server *s, usec_t now)
{
    return pgbun.cfg->server_lifetime > 0 && now - s->connect_time > pgbun.cfg->server_lifetime;
}

/* query_timeout, transaction_timeout and idle_transaction_timeout of a linked server. */
static void check_linked(struct server *s, usec_t now)
{
    const struct pgbun_config *cfg = pgbun.cfg;

    if (s->client == NULL || s->phase != PHASE_NONE) return;
    if (s->txstatus != 'I' && cfg->transaction_timeout > 0 && now - s->xact_start > cfg->transaction_timeout) {
        client_close(s->client, "25P04", "transaction_timeout: transaction open for more than %g s",
                     secs(cfg->transaction_timeout));
        return;
    }
    if (s->txstatus != 'I' && s->expect_rfq == 0 && cfg->idle_transaction_timeout > 0 &&
        now - s->last_ready > cfg->idle_transaction_timeout) {
        client_close(s->client, "25P03", "idle_transaction_timeout: idle in a transaction for more than %g s",
                     secs(cfg->idle_transaction_timeout));
        return;
    }
    if (s->expect_rfq > 0 && !s->query_timed_out && cfg->query_timeout > 0 &&
        now - s->request_start > cfg->query_timeout) {
        server_log(s, LOGL_INFO, "query_timeout: canceling a query running for more than %g s",
                   secs(cfg->query_timeout));
        s->query_timed_out = true;
        server_send_cancel(s);
    }
}

/*
 * One pass over a pool's clients and servers, closing whatever outlived its
 * timeout. Each close moves only the object at hand (and its linked peer),
 * so the next element is taken before the current one is handled.
 */
static void maintain(struct pool *p, usec_t now)
{
    static const enum client_state idle_states[] = {CL_IDLE, CL_ACTIVE};
    const struct pgbun_config     *cfg = pgbun.cfg;
    struct client                 *c, *cnext;
    struct server                 *s, *snext;

    for (size_t i = 0; cfg->client_idle_timeout > 0 && i < 2; i++) {
        for (c = TAILQ_FIRST(&p->clients[idle_states[i]]); c != NULL; c = cnext) {
            cnext = TAILQ_NEXT(c, entry);
            if (client_idle_for(c, now) > cfg->client_idle_timeout)
                client_close(c, "57P05", "client_idle_timeout: idle for more than %g s",
                             secs(cfg->client_idle_timeout));
        }
    }
    for (c = TAILQ_FIRST(&p->clients[CL_WAITING]); cfg->query_wait_timeout > 0 && c != NULL; c = cnext) {
        cnext = TAILQ_NEXT(c, entry);
        if (now - c->state_since > cfg->query_wait_timeout)
            client_close(c, "08P01", "query_wait_timeout: no server connection became free within %g s",
                         secs(cfg->query_wait_timeout));
    }
    for (s = TAILQ_FIRST(&p->servers[SV_ACTIVE]); s != NULL; s = snext) {
        snext = TAILQ_NEXT(s, entry);
        check_linked(s, now);
    }
    for (s = TAILQ_FIRST(&p->servers[SV_IDLE]); s != NULL; s = snext) {
        snext = TAILQ_NEXT(s, entry);
        if (server_too_old(s, now))
            server_close(s, "server_lifetime: connection older than %g s", secs(cfg->server_lifetime));
        else if (cfg->server_idle_timeout > 0 && now - s->state_since > cfg->server_idle_timeout &&
                 pool_server_count(p) > p->min_pool_size)
            server_close(s, "server_idle_timeout: unused for more than %g s", secs(cfg->server_idle_timeout));
    }
}

/* ---- counters ---- */

void pool_stats_period(void)
{
    static struct stats total; /* ~2.5 KiB: kept off the stack */
    struct pool        *p;
    usec_t              now = pgbun_now(), len = now - period_began;
    double              s = len > 0 ? secs(len) : 1;

    memset(&total, 0, sizeof(total));
    TAILQ_FOREACH(p, &pools, entry)
    {
        const struct stats *st = &p->last_period;

        stats_diff(&p->last_period, &p->stats, &p->period_start);
        p->period_start = p->stats;
        stats_add(&total, &p->last_period);
        if (pgbun.cfg->log_stats && st->query_count > 0)
            log_info("stats: pool %s/%s: %.0f xacts/s, %.0f queries/s, query %llu us (p95 %lld us), %.1f%% reused",
                     p->dbname, p->user, (double)st->xact_count / s, (double)st->query_count / s,
                     (unsigned long long)stats_avg(st->query_time, st->query_count),
                     (long long)stats_percentile(st, 0.95), stats_percent(st->reused, st->assignments));
    }
    period_began = now;
    period_len = len;
    if (!pgbun.cfg->log_stats) return;
    log_info("stats: %.0f xacts/s, %.0f queries/s, in %.0f B/s, out %.0f B/s, xact %llu us, query %llu us, "
             "wait %llu us, query p50 %lld us, p95 %lld us, p99 %lld us, %llu of %llu server assignments reused, "
             "%llu servers opened",
             (double)total.xact_count / s, (double)total.query_count / s, (double)total.bytes_in / s,
             (double)total.bytes_out / s, (unsigned long long)stats_avg(total.xact_time, total.xact_count),
             (unsigned long long)stats_avg(total.query_time, total.query_count),
             (unsigned long long)stats_avg(total.wait_time, total.assignments),
             (long long)stats_percentile(&total, 0.50), (long long)stats_percentile(&total, 0.95),
             (long long)stats_percentile(&total, 0.99), (unsigned long long)total.reused,
             (unsigned long long)total.assignments, (unsigned long long)total.servers_opened);
}

usec_t pool_last_period_len(void)
{
    return period_len;
}

void pool_reset_stats(void)
{
    struct pool *p;

    TAILQ_FOREACH(p, &pools, entry)
    {
        memset(&p->stats, 0, sizeof(p->stats));
        memset(&p->period_start, 0, sizeof(p->period_start));
        memset(&p->last_period, 0, sizeof(p->last_period));
        /* The peaks start from what is open now, not from 0. */
        p->max_servers_used = pool_server_count(p);
        p->max_db_servers = servers_sharing(p, same_db);
    }
    period_began = pgbun_now();
    period_len = 0;
}

static void janitor_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pool *p;
    usec_t       now = pgbun_now();

    TAILQ_FOREACH(p, &pools, entry)
    {
        maintain(p, now);
        top_up(p, now);
    }
    if (pgbun.cfg->stats_period > 0 && now - period_began >= pgbun.cfg->stats_period) pool_stats_period();
}

/* ---- lookups ---- */

struct client *pool_find_cancel_key(const uint8_t key[8])
{
    struct pool   *p;
    struct client *c;

    TAILQ_FOREACH(p, &pools, entry)
    {
        for (int st = CL_IDLE; st <= CL_ACTIVE; st++)
            TAILQ_FOREACH(c, &p->clients[st], entry)
        if (memcmp(c->cancel_key, key, 8) == 0) return c;
    }
    return NULL;
}

int pool_total_clients(void)
{
    struct pool *p;
    int          n = nlogin_clients;

    TAILQ_FOREACH(p, &pools, entry)
    {
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

    TAILQ_FOREACH(p, &pools, entry) n += p->nservers[SV_ACTIVE] + p->nservers[SV_RESETTING];
    return n;
}
