/*
 * config.h - one immutable configuration snapshot.
 *
 * config_load() reads built-in defaults, then the ini file (if any), then the
 * environment, and returns a fresh struct pgbun_config. Nothing modifies a
 * loaded config in place: a reload builds a new one and swaps it in, and the
 * admin console's SET changes a config_dup() copy with config_set(), then
 * swaps that in. config_item() lists the [pgbun] keys for SHOW CONFIG.
 *
 *   defaults -> [pgbun]/[pgbouncer] keys -> PGBUN_<KEY> and short env names
 *            -> [databases] / [users] entries
 */
#ifndef PGBUN_CONFIG_H
#define PGBUN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hashtab.h"
#include "io.h"

typedef int64_t usec_t; /* microseconds */
#define USEC_PER_SEC ((usec_t)1000000)

enum pool_mode {
    POOL_MODE_UNSET = -1, /* inherit from the next level */
    POOL_SESSION = 0,
    POOL_TRANSACTION,
    POOL_STATEMENT,
};

/* What session state follows a client in transaction and statement mode (docs/SESSION_STATE.md). */
enum session_state {
    SESSION_STATE_UNSET = -1, /* inherit from the next level */
    SESSION_TRACK = 0,        /* settings and prepared statements follow their client */
    SESSION_PIN,              /* a SET pins its client to its server instead */
    SESSION_OFF,              /* nothing is tracked */
};

/*
 * PgBouncer's auth_query: a role's secret, NULL once rolvaliduntil has
 * passed, nothing for a role that cannot log in. pgbun runs every
 * auth_query with search_path = pg_catalog, pg_temp (authq.h).
 */
#define AUTH_QUERY_DEFAULT                                                                                             \
    "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname = "   \
    "$1 AND rolcanlogin"

enum auth_type {
    AUTH_TRUST = 0,
    AUTH_PLAIN,
    AUTH_MD5,
    AUTH_SCRAM,  /* scram-sha-256 */
    AUTH_CERT,   /* a verified TLS client certificate whose common name is the user */
    AUTH_PEER,   /* on a unix socket: the client's OS user is the user (SO_PEERCRED) */
    AUTH_HBA,    /* the method comes from auth_hba_file, per connection */
    AUTH_REJECT, /* an auth_hba_file method only: refused */
};

/*
 * One [databases] entry: "name = host=... port=... dbname=...". Every field
 * but name and next is a row of config.c's db_keys, which parses, copies,
 * frees, compares and shows it; an unset field (NULL, -1, POOL_MODE_UNSET,
 * SESSION_STATE_UNSET, port 0) inherits, see config_resolve().
 */
struct db_config {
    char              *name;               /* entry name; "*" is the fallback */
    char              *host;               /* server host or socket dir, or a list of them; NULL: server_host */
    int                port;               /* server port (the first of a list); 0: server_port */
    char              *ports;              /* "5432,5433": one port per host of a host list; NULL: port for all */
    char              *dbname;             /* server database; NULL: the client's database name */
    char              *user;               /* force_user; NULL: the client's user */
    char              *password;           /* server password; NULL: from auth_file */
    int                pool_size;          /* -1: default_pool_size */
    int                min_pool_size;      /* -1: global min_pool_size */
    int                reserve_pool_size;  /* -1: global reserve_pool_size */
    int                max_db_connections; /* -1: global max_db_connections */
    enum pool_mode     pool_mode;          /* POOL_MODE_UNSET: inherit */
    enum session_state session_state;      /* SESSION_STATE_UNSET: the global session_state */
    char              *application_name;   /* server startup application_name, or NULL */
    int                max_db_client_connections; /* -1: global */
    usec_t             server_lifetime;           /* -1: global */
    usec_t             query_wait_timeout;        /* -1: global (or the user's) */
    char              *connect_query; /* run on each new server connection before its first client, or NULL */
    char              *sslmode;       /* libpq's names for server_tls_sslmode, _ca_file, _cert_file, _key_file, */
    char              *sslrootcert;   /* ... for this database only; NULL: the global key */
    char              *sslcert;
    char              *sslkey;
    char              *auth_user; /* auth_user, auth_query and auth_dbname for this database; NULL: the global key */
    char              *auth_query;
    char              *auth_dbname;
    struct db_config  *next;
    UT_hash_handle     hh; /* in pgbun_config.db_index, by name */
};

/* One [users] entry: "name = pool_mode=... pool_size=...", its fields rows of config.c's user_keys. */
struct user_config {
    char              *name;
    int                pool_size;                   /* -1: inherit */
    enum pool_mode     pool_mode;                   /* POOL_MODE_UNSET: inherit */
    enum session_state session_state;               /* SESSION_STATE_UNSET: the database's, or global */
    int                max_user_connections;        /* -1: global */
    int                reserve_pool_size;           /* -1: the database's, or global */
    int                max_user_client_connections; /* -1: global */
    /* -1: the global value (query_wait_timeout: the database's first) */
    usec_t              query_timeout;
    usec_t              query_wait_timeout;
    usec_t              idle_transaction_timeout;
    usec_t              transaction_timeout;
    usec_t              client_idle_timeout;
    struct user_config *next;
    UT_hash_handle      hh; /* in pgbun_config.user_index, by name */
};

struct pgbun_config {
    char *path; /* ini file, or NULL in sidecar mode */

    /* listening */
    char         *listen_addr;       /* "127.0.0.1"; "*" for all; "" for none */
    int           listen_port;       /* 6432 */
    char         *unix_socket_dir;   /* "/tmp"; "" disables */
    int           unix_socket_mode;  /* 0777 */
    char         *unix_socket_group; /* group of the unix socket file, or NULL: pgbun's own */
    int           listen_backlog;    /* 128 */
    bool          so_reuseport;
    struct io_tcp tcp; /* tcp_keepalive, tcp_keepidle, ...: options of every TCP connection */

    /* process */
    int   workers; /* event loops, one thread each (1) */
    char *user;    /* setuid target when started as root */
    char *pidfile;
    char *logfile;
    int   verbose; /* 0 = LOG level; each step adds DEBUG, NOISE */
    bool  log_connections;
    bool  log_disconnections;
    bool  log_stats;       /* a totals line every stats_period */
    int   log_format;      /* enum log_format: text or json */
    bool  syslog;          /* lines go to syslog too */
    char *syslog_ident;    /* ... under this name */
    int   syslog_facility; /* ... and this facility: an index of log_syslog_facilities */

    /* pooling */
    enum pool_mode     pool_mode;
    int                max_client_conn;
    int                default_pool_size;
    int                min_pool_size;
    int                reserve_pool_size;
    usec_t             reserve_pool_timeout;
    int                max_db_connections;
    int                max_user_connections;
    int                max_db_client_connections;   /* 0: no limit on the clients of one database */
    int                max_user_client_connections; /* 0: no limit on the clients of one user */
    int                max_prepared_statements;
    enum session_state session_state;    /* track, pin or off */
    usec_t             pin_notice_delay; /* a pool whose clients stay pinned this long logs a notice; 0: never */
    bool               server_round_robin;
    char              *server_reset_query;
    bool               server_reset_query_always;
    char              *server_check_query;
    usec_t             server_check_delay;
    bool               server_fast_close; /* a linked server RECONNECT retired closes at its transaction's end */
    char              *ignore_startup_parameters; /* comma-separated */
    char              *track_extra_parameters;    /* comma-separated */
    int                pkt_buf;                   /* accepted for PgBouncer's sake; buffers grow as needed */
    int                max_packet_size;           /* 2^28 */
    bool               disable_pqexec;            /* a simple Query from a client closes it (not on the console) */
    bool               application_name_add_host; /* a login's application_name gets " - addr:port" appended */
    char              *login_notify_message;      /* a NOTICE sent to each client at login, unless empty */

    /* timeouts (0 = disabled) */
    usec_t server_lifetime;
    usec_t server_idle_timeout;
    usec_t server_connect_timeout;
    usec_t server_login_retry;
    usec_t query_timeout;
    usec_t query_wait_timeout;
    usec_t pool_idle_timeout; /* a pool without clients or servers this long is freed; 0: never */
    usec_t query_wait_notify; /* a client queued this long gets a NOTICE, once per wait */
    usec_t client_idle_timeout;
    usec_t client_login_timeout;
    usec_t idle_transaction_timeout;
    usec_t transaction_timeout;
    usec_t stats_period;

    /* authentication */
    enum auth_type auth_type;
    char          *auth_file;
    bool           auth_trust_any_user; /* trust: a user not in auth_file goes to PostgreSQL under its name */
    char          *auth_hba_file;
    char          *auth_user;            /* looks up the secrets of users not in auth_file, or NULL */
    char          *auth_query;           /* ... with this query ($1: the user name) */
    char          *auth_dbname;          /* ... in this database, or NULL: the client's */
    usec_t         auth_query_cache_ttl; /* how long a secret found by auth_query is used before asking again */
    char          *admin_users;          /* comma-separated */
    bool           pgbouncer_alias;      /* database "pgbouncer" is the console too */
    char          *stats_users;          /* comma-separated */

    /* the Prometheus endpoint (metrics.h) */
    char *metrics_listen_addr; /* like listen_addr; an entry starting with '/' is a unix socket */
    int   metrics_listen_port; /* 0: no endpoint */
    char *metrics_auth_users;  /* comma-separated: basic auth over auth_file; NULL or "": none */

    /* TLS (accepted, implemented later) */
    char *client_tls_sslmode;
    char *client_tls_cert_file;
    char *client_tls_key_file;
    char *client_tls_ca_file;
    char *server_tls_sslmode;
    char *server_tls_ca_file;
    char *server_tls_key_file;
    char *server_tls_cert_file;
    char *server_tls_protocols;
    char *server_tls_ciphers;
    char *server_tls13_ciphers;
    char *client_tls_protocols;
    char *client_tls_ciphers;
    char *client_tls13_ciphers;
    char *client_tls_dheparams;
    char *client_tls_ecdhcurve;

    /* sidecar default server (SERVER_HOST / SERVER_PORT) */
    char *server_host; /* "127.0.0.1" */
    int   server_port; /* 5432 */

    struct db_config   *databases;  /* in file order */
    struct user_config *users;      /* in file order */
    struct db_config   *db_index;   /* the same entries by name: config_find_db() */
    struct user_config *user_index; /* config_find_user() */
};

/*
 * Builds a config: defaults, then `path` (NULL: no file, sidecar mode with a
 * "*" entry forwarding to server_host:server_port), then the environment.
 * On failure returns NULL and sets *errmsg (malloc'd) to a message that names
 * the file, line and key, e.g. "pgbun.ini:12: listen_port: invalid integer 'x'".
 */
struct pgbun_config *config_load(const char *path, char **errmsg) __attribute__((warn_unused_result));
void                 config_free(struct pgbun_config *cfg);

/*
 * Refuses (false, *errmsg) a security setting pgbun cannot honour (a TLS
 * mode of require or above) and logs one warning per key it accepts but
 * does not act on yet. At start and at every RELOAD, SET and SIGHUP.
 */
bool config_check(const struct pgbun_config *cfg, char **errmsg);
/* By name, in O(1): the exact name first, then "*". NULL when neither exists. */
const struct db_config *config_find_db(const struct pgbun_config *cfg, const char *name);
/* The entry of exactly that name ("*" only for "*"), or NULL. */
const struct db_config   *config_db_named(const struct pgbun_config *cfg, const char *name);
const struct user_config *config_find_user(const struct pgbun_config *cfg, const char *name);

/* true when `name` is in the comma-separated `list` (case-insensitive, spaces ignored). */
bool config_list_has(const char *list, const char *name);

/* One [pgbun] key as SHOW CONFIG lists it. */
struct config_item {
    const char *key;        /* as in pgbouncer.ini */
    char       *value;      /* malloc'd: the current value as text ("" when unset) */
    const char *def;        /* the built-in default as text ("" when none); static */
    bool        changeable; /* SET and RELOAD apply it to a running pgbun; false: needs a restart */
};

/*
 * Values and defaults print in one canonical form that parses back to the same
 * value: integers in decimal, booleans as 1/0, times in seconds as the shortest
 * decimal ("600", "0.25"), octal modes as "0777", pool_mode and auth_type by
 * name, strings as stored. An untouched key has value equal to def.
 */

/* Number of [pgbun] keys that have a field behind them (KF_IGNORED keys are not listed), in table order. */
size_t config_item_count(void);
/* Fills *out for key i (0 <= i < config_item_count()) of cfg; out->value is malloc'd. false on OOM. */
bool config_item(const struct pgbun_config *cfg, size_t i, struct config_item *out) __attribute__((warn_unused_result));
/* A deep copy (strings, [databases] and [users] lists). NULL on OOM. */
struct pgbun_config *config_dup(const struct pgbun_config *cfg) __attribute__((warn_unused_result));
/*
 * Sets one [pgbun] key of cfg (a copy the caller owns) from text, validated exactly as in the
 * file (same parser, same ranges and choices). false with *errmsg (malloc'd) when the key is
 * unknown, ignored, not changeable at runtime, or the value is invalid; the message names the
 * key, e.g. "default_pool_size: invalid integer 'abc'" or "listen_port: cannot be changed
 * without a restart" or "unknown key 'foo'". Key names are case-insensitive. The value is
 * taken as is (no trimming or unquoting); "" unsets a key whose default is unset. cfg is
 * unchanged on failure.
 */
bool config_set(struct pgbun_config *cfg, const char *key, const char *value, char **errmsg)
    __attribute__((warn_unused_result));

/*
 * The settings of one (database, user) pair, each the user entry's if set,
 * else the database entry's, else the [pgbun] key's. Strings point into the
 * config they were resolved from.
 */
struct config_settings {
    const char        *host;       /* server host, or a comma list of them */
    int                port;       /* server port (the first of a list) */
    const char        *ports;      /* one port per host, or NULL */
    const char        *dbname;     /* server database: the entry's dbname, else the name asked for */
    const char        *force_user; /* the entry's user, or NULL: the client's */
    const char        *password;   /* the entry's password, or NULL: from auth_file */
    const char        *application_name;
    const char        *connect_query;
    const char        *sslmode;     /* server_tls_sslmode, or the entry's sslmode */
    const char        *sslrootcert; /* server_tls_ca_file, or the entry's sslrootcert */
    const char        *sslcert;     /* server_tls_cert_file, or the entry's sslcert */
    const char        *sslkey;      /* server_tls_key_file, or the entry's sslkey */
    const char        *auth_user;   /* auth_user, or the entry's: NULL when users come from auth_file only */
    const char        *auth_query;  /* auth_query, or the entry's */
    const char        *auth_dbname; /* auth_dbname, or the entry's; NULL: the database asked for */
    int                pool_size;   /* 0: no limit */
    int                min_pool_size;
    int                reserve_pool_size;
    int                max_db_connections;
    int                max_user_connections;
    int                max_db_client_connections;
    int                max_user_client_connections;
    enum pool_mode     pool_mode;
    enum session_state session_state;
    usec_t             server_lifetime;
    usec_t             query_wait_timeout;
    usec_t             query_timeout;
    usec_t             idle_transaction_timeout;
    usec_t             transaction_timeout;
    usec_t             client_idle_timeout;
};

/* auth_user is set, globally or for a database: users not in auth_file are looked up with auth_query. */
bool config_looks_up_users(const struct pgbun_config *cfg);

/* Where the users of a database (or of the console) not in auth_file are looked up. */
struct config_auth_route {
    const char *authdb;    /* the database auth_query runs in; NULL: none can be asked */
    const char *auth_user; /* who runs it */
    const char *query;
};

/* false: no auth_user for that database. `console`: the admin console, asked only in auth_dbname. */
bool config_auth_route(const struct pgbun_config *cfg, const char *dbname, bool console, struct config_auth_route *r);

/* Where a secret of that route is filed ("auth database/auth_user", creds.h): false when it has none or out is short.
 */
#define CONFIG_PLACE_MAX 400
bool config_auth_place(const struct config_auth_route *r, char out[CONFIG_PLACE_MAX]);

/*
 * Fills *out for database entry db and user entry u of cfg; either may be
 * NULL, and its level is then skipped. `dbname` is the name the client asked
 * for, the server database when db sets none (NULL when there is none).
 */
void config_resolve(const struct pgbun_config *cfg, const struct db_config *db, const struct user_config *u,
                    const char *dbname, struct config_settings *out);

/*
 * Reports every difference between two configs, one line each, in the words
 * RELOAD's NOTICEs use: "key: old -> new" for a [pgbun] key, "[databases]
 * name: added|changed|removed" and the same for [users]. Returns how many.
 */
typedef void config_change_fn(void *arg, const char *line);
int config_diff(const struct pgbun_config *old, const struct pgbun_config *now, config_change_fn *report, void *arg);

/* Which entry kind: [databases] (SHOW DATABASES) or [users] (SHOW USERS). */
enum config_entry_kind { CONFIG_DATABASE, CONFIG_USER };

/* One value as SHOW prints it: NULL, an integer or text. */
struct config_shown {
    enum { SHOWN_NULL, SHOWN_INT, SHOWN_TEXT } type;
    long long   i;
    const char *text; /* points into the config or a static name */
};

/*
 * The value of SHOW column `column` for an entry of `kind` (NULL: none),
 * whose resolved settings are *eff. false when no key of the kind is shown in
 * that column (the column is not a setting: counts, paused, ...).
 */
bool config_show(enum config_entry_kind kind, const char *column, const void *entry, const struct config_settings *eff,
                 struct config_shown *out);

/*
 * The keys of an entry kind, for tests: key i's name, and its SHOW column
 * (NULL when PgBouncer's SHOW has no column for it). false past the end.
 */
bool config_entry_key(enum config_entry_kind kind, size_t i, const char **name, const char **column);

/* Entries of a comma-separated list ("h1,h2" of host=, "5432,5433" of port=): how many, and entry i trimmed. */
int  config_list_count(const char *list);
bool config_list_entry(const char *list, int i, char *out, size_t outsz) __attribute__((warn_unused_result));
#define CONFIG_HOST_MAX 256 /* a host name, address or socket directory of a host list, NUL included */

const char *config_pool_mode_name(enum pool_mode mode);
const char *config_auth_type_name(enum auth_type type);
const char *config_session_state_name(enum session_state state);

/* Parses "15", "1.5", "500ms", "2min", "1h", "10s" into microseconds. */
bool config_parse_time(const char *s, usec_t *out) __attribute__((warn_unused_result));

#endif
