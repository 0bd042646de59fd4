/*
 * pool.h - pools of server connections keyed by (database, user).
 *
 * A pool owns its clients and servers on one list per state; the state enum
 * says which list an object is on, and only pool_set_client_state /
 * pool_set_server_state move it. A link between a client and a server is
 * made and broken in pool_link / pool_unlink only.
 *
 *   client IDLE --first message--> WAITING --pool_dispatch--> ACTIVE
 *       ^                                                        |
 *       +---- ReadyForQuery 'I' (transaction/statement mode) ----+
 */
#ifndef PGBUN_POOL_H
#define PGBUN_POOL_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

struct event;

#include "config.h"
#include "log.h"
#include "stats.h"
#include "varlist.h"

struct client;
struct server;
struct tls_target;
struct worker;
struct pool_share;

enum client_state {
    CL_LOGIN = 0, /* startup and authentication; pool may be NULL */
    CL_WELCOME,   /* authenticated, waiting for the pool's first server login */
    CL_IDLE,      /* logged in, no server */
    CL_WAITING,   /* queued for a server, FIFO */
    CL_ACTIVE,    /* linked to a server */
    CL_CLOSING,   /* closed, freed after this loop iteration */
    CL_NSTATES,
};

enum server_state {
    SV_CONNECTING = 0, /* TCP/unix connect or DNS in progress */
    SV_LOGIN,          /* startup and authentication with PostgreSQL */
    SV_IDLE,           /* ready, unlinked */
    SV_TESTING,        /* running server_check_query before its next client */
    SV_ACTIVE,         /* linked to a client */
    SV_RESETTING,      /* running server_reset_query before going idle */
    SV_CLOSING,        /* closed, freed after this loop iteration */
    SV_NSTATES,
};

TAILQ_HEAD(client_list, client);
TAILQ_HEAD(server_list, server);

/*
 * Work of pgbun's own that needs a server of the pool (an auth_query
 * lookup): queued ahead of the pool's waiting clients, it counts as one
 * more of them for opening servers. `run` gets an idle, clean server in
 * TESTING, which it must hand back (pool_release_server) or close; `fail`
 * hears that the pool cannot serve it (a login failure that needs a
 * person, or shutdown). Either call ends the job's time on the queue.
 */
struct pool_job {
    TAILQ_ENTRY(pool_job) entry;
    void (*run)(struct pool_job *j, struct server *s);
    void (*fail)(struct pool_job *j, const char *sqlstate, const char *msg);
    usec_t since; /* when it was queued */
};
TAILQ_HEAD(pool_job_list, pool_job);

/*
 * Each worker has its own pool for a (database, user); they share the
 * limits through their pool_share (pool.c), and the admin console adds
 * them up.
 */
/* pool_size 0 in the configuration: no limit (room left to add the reserve to it). */
#define POOL_SIZE_UNLIMITED (INT_MAX / 2)

struct pool {
    TAILQ_ENTRY(pool) entry;
    TAILQ_ENTRY(pool) due_entry; /* on its world's due list while dispatch_due */
    UT_hash_handle     hh;       /* in its world's index, by key */
    char              *key;      /* admin flag, dbname and user */
    size_t             keylen;
    struct worker     *w;          /* whose loop its clients and servers are on */
    struct pool_share *share;      /* every worker's pool of this (database, user): pool_size */
    struct pool_share *db_share;   /* every pool of the database: max_db_connections */
    struct pool_share *user_share; /* every pool of the user: max_user_connections */
    uint32_t           id;
    bool               admin;  /* the console's pool: clients only, never a server */
    char              *dbname; /* database name clients use */
    char              *user;   /* client user name */

    /* resolved from [databases], [users] and [pgbun]; refreshed on reload */
    char                    *host; /* server host or unix socket directory, or a comma list of them */
    int                      port;
    char                    *ports;            /* one port per host of a host list, or NULL: port for all */
    unsigned                 host_next;        /* a host list's entry the next server connection starts with */
    char                    *server_db;        /* database on the server */
    char                    *server_user;      /* user on the server */
    char                    *password;         /* server password, or NULL */
    char                    *secret_place;     /* where the server user's secret comes from (creds.h), or NULL */
    char                    *application_name; /* startup application_name, or NULL */
    char                    *connect_query;    /* the database's connect_query, or NULL */
    char                    *tls_own; /* the entry's own sslmode|sslrootcert|sslcert|sslkey, resolved; NULL: none */
    const struct tls_target *tls;     /* how its servers are reached (pgbun.tls's, until the next config) */
    int                      pool_size;
    int                      min_pool_size;     /* servers kept open even when unused */
    int                      reserve_pool_size; /* extra servers for clients waiting past reserve_pool_timeout */
    enum pool_mode           mode;
    bool                     track_session;  /* not session mode, session_state = track: scan.h, server.c's read-back */
    bool                     track_prepared; /* ... and max_prepared_statements > 0: pstmt_fwd.h */
    bool                     pin_settings;   /* session_state = pin: a SET pins its client instead of following it */
    usec_t                   server_lifetime;    /* the database's, or global */
    usec_t                   query_wait_timeout; /* the user's, the database's, or global */
    usec_t                   query_timeout;      /* the user's, or global; so are the three below */
    usec_t                   idle_transaction_timeout;
    usec_t                   transaction_timeout;
    usec_t                   client_idle_timeout;
    int                      max_db_client_connections; /* the database's, or global; 0: no limit */
    usec_t                   pin_noticed;               /* when the last notice of long pins was logged */
    usec_t                   empty_since;               /* since when it has had no client and no server; 0: it has */

    struct client_list   clients[CL_NSTATES];
    int                  nclients[CL_NSTATES];
    struct server_list   servers[SV_NSTATES];
    int                  nservers[SV_NSTATES];
    struct pool_job_list jobs; /* pgbun's own work waiting for a server, FIFO */
    int                  njobs;

    struct varlist welcome; /* ParameterStatus of the first server login */
    bool           welcome_ready;
    usec_t         last_fail_time; /* last failed server connect or login */
    int            fail_count;     /* failures in a row; the retry pause grows with it */
    char           last_fail_state[6];
    char           last_fail_msg[512];
    struct event  *retry_timer;  /* serves the queue again when the pause after a failure ends */
    bool           dispatch_due; /* pool_dispatch runs after this loop iteration */

    int  max_db_connections;   /* 0: no limit on the servers of all pools of this database */
    int  max_user_connections; /* 0: no limit on the servers of all pools of this user */
    bool blocked;              /* clients wait because a database or user limit is reached */
    int  handed;               /* slots other pools closed a server to give it, not taken yet */

    struct stats stats;        /* running totals */
    struct stats period_start; /* totals when the current stats_period began */
    struct stats last_period;  /* what the last full stats_period added */
};

/* Sets up worker w's pools (the janitor's timer is janitor.h's). */
bool pool_init(struct worker *w) __attribute__((warn_unused_result));
/* Closes every connection of worker w and frees its pools (shutdown, its loop ended). */
void pool_fini(struct worker *w);
/* Frees what the workers shared (after every pool_fini). */
void pool_fini_shared(void);

/*
 * Counts c, authenticated, among the clients of p's database and of its
 * user, over every worker; false (c closed with 53300) when that would go
 * past max_db_client_connections or max_user_client_connections. The
 * places are given back when c closes.
 */
bool pool_admit_client(struct pool *p, struct client *c) __attribute__((warn_unused_result));
/* Clients counted for a database (user NULL) or a user (dbname NULL). */
int pool_share_clients(const char *dbname, const char *user);
/* Finds or creates the pool; NULL with *err when the database has no entry. */
struct pool *pool_get(const char *dbname, const char *user, const char **err);
/* The admin console's pool for `user` (database `dbname`, "pgbun" or its alias). */
struct pool *pool_get_admin(const char *dbname, const char *user);
/* Takes p, with no client and no server left, off its worker's list and frees it (pool_idle_timeout). */
void pool_remove(struct pool *p);
/*
 * Every pool of every worker, each worker's in creation order: with more
 * than one worker, only with the world stopped. Pools of one (database,
 * user) are pool_same, one per worker at most; pool_seen says whether one
 * came earlier, pool_next_same gives the next one (NULL: none), each in
 * O(workers).
 */
struct pool *pool_first(void);
struct pool *pool_next(const struct pool *p);
bool         pool_same(const struct pool *a, const struct pool *b);
bool         pool_seen(const struct pool *p);
struct pool *pool_next_same(const struct pool *p);
/* The first pool of worker w, on its own loop (TAILQ_NEXT gives the next). */
struct pool *pool_first_of(const struct worker *w);
/* Clients still logging in (no pool yet), of every worker (the same rule). */
struct client *pool_first_login_client(void);
struct client *pool_next_login_client(const struct client *c);
/* Open server connections of p's (database, user) in every worker; the most at once; the database's most at once. */
int pool_servers_total(const struct pool *p);
int pool_peak_servers(const struct pool *p);
int pool_peak_db_servers(const struct pool *p);
/* The peaks start again from what is open now (RESET STATS). */
void pool_reset_peaks(void);

/*
 * What changes shared state (PAUSE, DISABLE, RECONNECT, RESET STATS, a
 * reload, a stats_period) or adds up every worker's pools (busy servers,
 * closes pending, the totals) runs with the world stopped (worker.h); any
 * worker may read whether a database is paused or disabled.
 *
 * PAUSE/RESUME and DISABLE/ENABLE of one database; NULL for PAUSE/RESUME of all.
 */
void pool_pause(const char *dbname, bool on);
bool pool_is_paused(const char *dbname);
/* pgbun or any database is paused. */
bool pool_any_paused(void);
/* dbname itself is paused (PAUSE db or KILL db), not just all of pgbun. */
bool pool_db_paused(const char *dbname);
void pool_disable(const char *dbname, bool on);
bool pool_is_disabled(const char *dbname);
/* Servers of dbname (NULL: all) still linked to a client or resetting. */
int pool_busy_servers(const char *dbname);
/* RECONNECT: closes idle servers of dbname (NULL: all) and marks busy ones to close when released; returns those
 * marked. */
int pool_reconnect(const char *dbname);
/* Servers of dbname (NULL: all) marked close_needed and still open (WAIT_CLOSE). */
int pool_close_pending(const char *dbname);
/* Re-resolves every pool's settings from pgbun.cfg after a reload. */
void pool_config_changed(void);

void pool_set_client_state(struct client *c, enum client_state state);
void pool_set_server_state(struct server *s, enum server_state state);
/* Puts a new client on the global login list. */
void pool_register_client(struct client *c);
/* Puts a client into `pool` (from the global login list). */
void pool_adopt_client(struct pool *pool, struct client *c);

/* Puts a new server on the pool's CONNECTING list. */
void pool_add_server(struct pool *p, struct server *s);

void pool_link(struct client *c, struct server *s);
void pool_unlink(struct client *c, struct server *s);

/* Queues j for a server of p and serves the queue. */
void pool_queue_job(struct pool *p, struct pool_job *j);
/* Takes j, still queued, off p's queue: nobody wants it done any more. */
void pool_drop_job(struct pool *p, struct pool_job *j);
/* The client wants a server: queue it and serve the queue. */
void pool_request_server(struct client *c);
/* The server finished its work for the pool and is clean: idle it, serve the queue. */
void pool_release_server(struct server *s);
/* A server finished logging in. */
void pool_server_ready(struct server *s);
/*
 * A server never became usable. A failure that waiting may cure (the server
 * is down, restarting or full) keeps the queue waiting, to be retried;
 * another one (pool_failure_lasting) reaches every queued client at once.
 */
void pool_server_failed(struct pool *p, const char *sqlstate, const char *msg);
/* Whether a login failure with this SQLSTATE needs a person, not time. */
bool pool_failure_lasting(const char *sqlstate);
/* Closes c, queued too long (what: the timeout's name), with the pool's last failure if it is failing. */
void pool_wait_timed_out(struct client *c, const char *what);
/* The reserve is open to p: its oldest waiting client has waited reserve_pool_timeout. */
bool pool_reserve_open(const struct pool *p, usec_t now);
/* p's oldest client wanting a server has waited reserve_pool_timeout: p may close any idle server for room. */
bool pool_waited_long(const struct pool *p, usec_t now);
/*
 * Opens servers up to min_pool_size, within the limits: not in the pause
 * after a failed login, nor while clients of any pool wait on a database or
 * user limit (a freed slot goes to them first).
 */
void pool_open_min(struct pool *p, usec_t now);
/* Give idle servers to waiting clients; open servers while under pool_size. */
void pool_dispatch(struct pool *p);
/* pool_dispatch after this loop iteration (safe from inside any close path). */
void pool_dispatch_later(struct pool *p);
/* Every pool of every worker, on its loop: after RESUME (SIGUSR2). */
void pool_dispatch_all(void);

/* Inbox and wake-ups (worker.c): an idle server from another worker; give idle servers to workers that want them;
 * serve pools blocked on a database or user limit. */
void pool_adopt_server(struct server *s);
/* An idle server of this worker: to a worker whose clients wait for one, if it should go (pool_release_server's). */
void pool_offer_server(struct server *s);
void pool_give_wanted(void);
void pool_serve_blocked(void);
/* Frees a server in flight between workers that nobody will take (shutdown). */
void pool_drop_server(struct server *s);

/* An idle server that would run server_check_query before its next client (SHOW's "used"). */
bool pool_server_stale(const struct server *s);
/* s reached server_lifetime at `now`; with server_lifetime 0, as in PgBouncer, once it has served a client. */
bool pool_server_too_old(const struct server *s, usec_t now);
/* Since when p's longest-waiting client (queued, or waiting for the first login) has wanted a server; 0: none. */
usec_t pool_waiting_since(const struct pool *p);
/* Every open server connection of this worker's pool (not closing). */
int pool_server_count(const struct pool *p);

/* A logged-in client of this worker with that cancel key (idle, waiting or active), in O(1). */
struct client *pool_find_cancel_key(const uint8_t key[8]);
/* Whether a client of this worker has that key already. */
bool pool_cancel_key_taken(const uint8_t key[8]);
/* Puts c, with its new key, in its worker's index until it closes. false: out of memory. */
bool pool_index_cancel_key(struct client *c);

/* Number of logged-in or logging-in clients and open servers (for shutdown). */
int pool_total_clients(void);
int pool_total_active_servers(void);

/* A log line about pool p: "pool db/user: " begins the text line; database and user are fields in JSON. */
void pool_log_line(const struct pool *p, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define pool_log(p, level, ...)                                                                                        \
    do {                                                                                                               \
        if (log_enabled(level)) pool_log_line(p, level, __VA_ARGS__);                                                  \
    } while (0)

#endif
