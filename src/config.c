/*
 * config.c - builds one struct pgbun_config from defaults, an ini file and
 * the environment.
 *
 * Every [pgbun] key is one row of `main_keys`: its name, value type, where it
 * lives in struct pgbun_config, its default as text and flags. Defaults, file
 * values and environment values all go through the same key_set(), so a
 * default is parsed exactly like a value a user writes. [databases] and
 * [users] entries are libpq-style "k=v k='v v'" strings whose keys have their
 * own small tables over struct db_config and struct user_config.
 *
 *   defaults (main_keys[].def)
 *      -> parse_file(): [pgbun]/[pgbouncer] -> key_set()
 *                       [databases]         -> parse_db_entry()   -> db list
 *                       [users]             -> parse_user_entry() -> user list
 *                       %include path       -> parse_file() (recursive)
 *      -> apply_env(): short names (POOL_MODE ...), then PGBUN_<KEY>
 *
 * Keys PgBouncer knows but pgbun does not implement yet carry KF_IGNORED:
 * they are accepted with a warning so that a pgbouncer.ini loads unchanged.
 * Keys read only at start (sockets, setuid, pidfile, logfile) carry
 * KF_RESTART: SET refuses them, and SHOW CONFIG marks them not changeable.
 * SHOW CONFIG and SET go through the same table: config_item() prints a field
 * back as text, config_set() hands text to key_set() as the file does.
 * Every error message names where it came from ("file:line: key: ..." or
 * "environment VAR: ...") and never repeats a password.
 */
#define LOG_EVENT LOGE_CONFIG /* the event kind of this file's log lines (log.h) */
#include "config.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "str.h"

#define MAX_INCLUDE_DEPTH 16
#define MAX_TIME_USEC     ((usec_t)100 * 366 * 86400 * USEC_PER_SEC) /* a century */

enum key_type {
    KT_STR,
    KT_INT,
    KT_BOOL,
    KT_TIME,      /* seconds in the file, usec_t in the struct */
    KT_POOL_MODE, /* enum pool_mode */
    KT_AUTH_TYPE, /* enum auth_type */
    KT_OCTAL,     /* int written in octal, e.g. 0777 */
    KT_PORTS,     /* [databases] port: one port, or a comma list of them (struct db_config only) */
    KT_ENUM,      /* an enum whose values are the indexes of `choices` (session_state) */
};

#define KF_IGNORED 0x01 /* accepted with a warning; no field behind it */
#define KF_RESTART 0x02 /* read at start only: a change needs a restart, SET refuses it */
#define KF_ALIAS   0x04 /* entry key: another name for the field of the row before it */
#define KF_OWN     0x08 /* entry key: SHOW prints the entry's own value (NULL when unset), not the resolved one */

#define NO_FIELD ((size_t)-1)

struct key {
    const char        *name; /* lower case, as in pgbouncer.ini */
    enum key_type      type;
    size_t             offset; /* offsetof into the owning struct */
    const char        *def;    /* default as text; NULL: field stays NULL/0 */
    unsigned           flags;  /* KF_* */
    long long          min;    /* KT_INT/KT_OCTAL range, inclusive */
    long long          max;
    const char *const *choices; /* KT_STR: allowed values (NULL-terminated), or NULL; KT_ENUM: the names */
    /* [databases] and [users] keys only: */
    size_t      global; /* offsetof the [pgbun] field it inherits, or NO_FIELD */
    size_t      res;    /* offsetof its field in struct config_settings */
    const char *column; /* its SHOW DATABASES / SHOW USERS column, or NULL: PgBouncer shows none */
};

static const char *const sslmodes[] = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full", NULL};
static const char *const dheparams[] = {"none", "auto", "legacy", NULL};
static const char *const session_states[] = {"track", "pin", "off", NULL};

/* clang-format off */
#define KEYF(S, n, t, d, f, lo, hi, ch) {.name = #n, .type = t, .offset = offsetof(S, n), .def = d, .flags = f, \
                                        .min = lo, .max = hi, .choices = ch}
#define KEY(S, n, t, d, lo, hi, ch)     KEYF(S, n, t, d, 0, lo, hi, ch)
#define IGNORED(n)                      {.name = #n, .type = KT_STR, .flags = KF_IGNORED}
/* clang-format on */

#define G_STR(n, d)         KEY(struct pgbun_config, n, KT_STR, d, 0, 0, NULL)
#define G_CHOICE(n, d, ch)  KEY(struct pgbun_config, n, KT_STR, d, 0, 0, ch)
#define G_INT(n, d, lo, hi) KEY(struct pgbun_config, n, KT_INT, d, lo, hi, NULL)
#define G_BOOL(n, d)        KEY(struct pgbun_config, n, KT_BOOL, d, 0, 0, NULL)
#define G_TIME(n, d)        KEY(struct pgbun_config, n, KT_TIME, d, 0, 0, NULL)
/* Keys that only take effect at start. */
#define R_STR(n, d)         KEYF(struct pgbun_config, n, KT_STR, d, KF_RESTART, 0, 0, NULL)
#define R_INT(n, d, lo, hi) KEYF(struct pgbun_config, n, KT_INT, d, KF_RESTART, lo, hi, NULL)
#define R_BOOL(n, d)        KEYF(struct pgbun_config, n, KT_BOOL, d, KF_RESTART, 0, 0, NULL)

static const struct key main_keys[] = {
    /* listening */
    R_STR(listen_addr, "127.0.0.1"),
    R_INT(listen_port, "6432", 1, 65535),
    R_STR(unix_socket_dir, "/tmp"),
    KEYF(struct pgbun_config, unix_socket_mode, KT_OCTAL, "0777", KF_RESTART, 0, 07777, NULL),
    R_STR(unix_socket_group, NULL),
    R_INT(listen_backlog, "128", 1, INT_MAX),
    R_BOOL(so_reuseport, "0"),

    /* process */
    R_INT(workers, "1", 1, 64),
    R_STR(user, NULL),
    R_STR(pidfile, NULL),
    R_STR(logfile, NULL),
    G_INT(verbose, "0", 0, 100),
    G_BOOL(log_connections, "1"),
    G_BOOL(log_disconnections, "1"),
    G_BOOL(log_stats, "1"),
    KEY(struct pgbun_config, log_format, KT_ENUM, "text", 0, 0, log_format_names),
    G_BOOL(syslog, "0"),
    G_STR(syslog_ident, "pgbun"),
    KEY(struct pgbun_config, syslog_facility, KT_ENUM, "daemon", 0, 0, log_syslog_facilities),

    /* pooling */
    KEY(struct pgbun_config, pool_mode, KT_POOL_MODE, "session", 0, 0, NULL),
    G_INT(max_client_conn, "100", 1, INT_MAX),
    G_INT(default_pool_size, "20", 0, INT_MAX),
    G_INT(min_pool_size, "0", 0, INT_MAX),
    G_INT(reserve_pool_size, "0", 0, INT_MAX),
    G_TIME(reserve_pool_timeout, "5"),
    G_INT(max_db_connections, "0", 0, INT_MAX),
    G_INT(max_user_connections, "0", 0, INT_MAX),
    {.name = "tcp_keepalive",
     .type = KT_BOOL,
     .offset = offsetof(struct pgbun_config, tcp.keepalive),
     .def = "1",
     .max = 0},
    {.name = "tcp_keepidle",
     .type = KT_INT,
     .offset = offsetof(struct pgbun_config, tcp.keepidle),
     .def = "0",
     .max = INT_MAX},
    {.name = "tcp_keepintvl",
     .type = KT_INT,
     .offset = offsetof(struct pgbun_config, tcp.keepintvl),
     .def = "0",
     .max = INT_MAX},
    {.name = "tcp_keepcnt",
     .type = KT_INT,
     .offset = offsetof(struct pgbun_config, tcp.keepcnt),
     .def = "0",
     .max = INT_MAX},
    {.name = "tcp_user_timeout",
     .type = KT_INT,
     .offset = offsetof(struct pgbun_config, tcp.user_timeout_ms),
     .def = "0",
     .max = INT_MAX},
    {.name = "tcp_socket_buffer",
     .type = KT_INT,
     .offset = offsetof(struct pgbun_config, tcp.socket_buffer),
     .def = "0",
     .max = INT_MAX},
    G_INT(max_db_client_connections, "0", 0, INT_MAX),
    G_INT(max_user_client_connections, "0", 0, INT_MAX),
    G_INT(max_prepared_statements, "200", 0, INT_MAX),
    KEY(struct pgbun_config, session_state, KT_ENUM, "track", 0, 0, session_states),
    G_TIME(pin_notice_delay, "60"),
    G_BOOL(server_round_robin, "0"),
    G_STR(server_reset_query, "DISCARD ALL"),
    G_BOOL(server_reset_query_always, "0"),
    G_STR(server_check_query, "<empty>"),
    G_TIME(server_check_delay, "30"),
    G_BOOL(server_fast_close, "0"),
    G_STR(ignore_startup_parameters, NULL),
    G_STR(track_extra_parameters, NULL),
    G_INT(pkt_buf, "4096", 1, INT_MAX), /* PgBouncer checks no range; pgbun sizes no buffer by it */
    G_INT(max_packet_size, "268435456", 1024, INT_MAX),
    R_BOOL(disable_pqexec, "0"),
    G_BOOL(application_name_add_host, "0"),
    G_STR(login_notify_message, NULL),

    /* timeouts */
    G_TIME(server_lifetime, "3600"),
    G_TIME(server_idle_timeout, "600"),
    G_TIME(server_connect_timeout, "15"),
    G_TIME(server_login_retry, "15"),
    G_TIME(query_timeout, "0"),
    G_TIME(query_wait_timeout, "120"),
    G_TIME(pool_idle_timeout, "0"),
    G_TIME(query_wait_notify, "5"),
    G_TIME(client_idle_timeout, "0"),
    G_TIME(client_login_timeout, "60"),
    G_TIME(idle_transaction_timeout, "0"),
    G_TIME(transaction_timeout, "0"),
    G_TIME(stats_period, "60"),

    /* authentication */
    KEY(struct pgbun_config, auth_type, KT_AUTH_TYPE, "md5", 0, 0, NULL),
    G_STR(auth_file, NULL),
    G_BOOL(auth_trust_any_user, "0"),
    G_STR(auth_hba_file, NULL),
    G_STR(auth_user, NULL),
    G_STR(auth_query, AUTH_QUERY_DEFAULT),
    G_STR(auth_dbname, NULL),
    G_TIME(auth_query_cache_ttl, "5"),
    G_STR(admin_users, NULL),
    G_BOOL(pgbouncer_alias, "1"),
    G_STR(stats_users, NULL),

    /* the Prometheus endpoint */
    G_STR(metrics_listen_addr, "127.0.0.1"),
    G_INT(metrics_listen_port, "0", 0, 65535),
    G_STR(metrics_auth_users, NULL),

    /* TLS */
    G_CHOICE(client_tls_sslmode, "disable", sslmodes),
    G_STR(client_tls_cert_file, NULL),
    G_STR(client_tls_key_file, NULL),
    G_STR(client_tls_ca_file, NULL),
    G_STR(client_tls_protocols, "secure"),
    G_STR(client_tls_ciphers, "default"),
    G_STR(client_tls13_ciphers, NULL),
    G_CHOICE(client_tls_dheparams, "auto", dheparams),
    G_STR(client_tls_ecdhcurve, "auto"),
    G_CHOICE(server_tls_sslmode, "prefer", sslmodes),
    G_STR(server_tls_ca_file, NULL),
    G_STR(server_tls_key_file, NULL),
    G_STR(server_tls_cert_file, NULL),
    G_STR(server_tls_protocols, "secure"),
    G_STR(server_tls_ciphers, "default"),
    G_STR(server_tls13_ciphers, NULL),

    /* sidecar default server */
    G_STR(server_host, "127.0.0.1"),
    G_INT(server_port, "5432", 1, 65535),

    /* PgBouncer keys accepted but not implemented yet */
    IGNORED(job_name),
    IGNORED(service_name),
    IGNORED(conffile),
    IGNORED(log_pooler_errors),
    IGNORED(tcp_defer_accept),
    IGNORED(dns_max_ttl),
    IGNORED(dns_nxdomain_ttl),
    IGNORED(dns_zone_check_period),
    IGNORED(resolv_conf),
    IGNORED(autodb_idle_timeout),
    IGNORED(suspend_timeout),
    IGNORED(cancel_wait_timeout),
    IGNORED(sbuf_loopcnt),
    IGNORED(auth_ident_file),
    IGNORED(auth_ldap_options),
    IGNORED(scram_iterations),
    IGNORED(peer_id),
};

/*
 * An entry key: the field in the entry (S), its type, range or choices, the
 * [pgbun] field it inherits (G(f) or NO_FIELD), its field in struct
 * config_settings and its SHOW column. Parse, copy, free, compare, resolve
 * and SHOW all walk these rows: a new key is a row here and the code that
 * acts on its value.
 */
/* clang-format off */
#define G(f) offsetof(struct pgbun_config, f)
#define ENTRY(S, n, t, lo, hi, ch, f, g, r, col) \
    {.name = #n, .type = t, .offset = offsetof(S, n), .flags = f, .min = lo, .max = hi, .choices = ch, \
     .global = g, .res = offsetof(struct config_settings, r), .column = col}
#define D_STR(n, g, r, col, f)     ENTRY(struct db_config, n, KT_STR, 0, 0, NULL, f, g, r, col)
#define D_INT(n, g, col)           ENTRY(struct db_config, n, KT_INT, 0, INT_MAX, NULL, 0, g, n, col)
#define D_TIME(n, col)             ENTRY(struct db_config, n, KT_TIME, 0, 0, NULL, 0, G(n), n, col)
#define U_INT(n, g, col)           ENTRY(struct user_config, n, KT_INT, 0, INT_MAX, NULL, 0, g, n, col)
#define U_TIME(n)                  ENTRY(struct user_config, n, KT_TIME, 0, 0, NULL, 0, G(n), n, NULL)
/* clang-format on */

static const struct key db_keys[] = {
    D_STR(host, G(server_host), host, "host", 0),
    ENTRY(struct db_config, port, KT_PORTS, 1, 65535, NULL, 0, G(server_port), port, "port"),
    D_STR(dbname, NO_FIELD, dbname, "database", 0),
    D_STR(user, NO_FIELD, force_user, "force_user", 0),
    D_STR(password, NO_FIELD, password, NULL, 0), /* a secret: never shown */
    D_INT(pool_size, G(default_pool_size), "pool_size"),
    D_INT(min_pool_size, G(min_pool_size), "min_pool_size"),
    D_INT(reserve_pool_size, G(reserve_pool_size), "reserve_pool_size"),
    {.name = "reserve_pool",
     .type = KT_INT,
     .offset = offsetof(struct db_config, reserve_pool_size),
     .flags = KF_ALIAS,
     .max = INT_MAX},
    D_INT(max_db_connections, G(max_db_connections), "max_connections"),
    ENTRY(struct db_config, pool_mode, KT_POOL_MODE, 0, 0, NULL, KF_OWN, G(pool_mode), pool_mode, "pool_mode"),
    ENTRY(struct db_config, session_state, KT_ENUM, 0, 0, session_states, 0, G(session_state), session_state, NULL),
    D_STR(application_name, NO_FIELD, application_name, NULL, 0),
    D_INT(max_db_client_connections, G(max_db_client_connections), "max_client_connections"),
    D_TIME(server_lifetime, "server_lifetime"),
    D_TIME(query_wait_timeout, NULL),
    D_STR(connect_query, NO_FIELD, connect_query, NULL, 0),
    ENTRY(struct db_config, sslmode, KT_STR, 0, 0, sslmodes, 0, G(server_tls_sslmode), sslmode, NULL),
    D_STR(sslrootcert, G(server_tls_ca_file), sslrootcert, NULL, 0),
    D_STR(sslcert, G(server_tls_cert_file), sslcert, NULL, 0),
    D_STR(sslkey, G(server_tls_key_file), sslkey, NULL, 0),
    D_STR(auth_user, G(auth_user), auth_user, NULL, 0),
    D_STR(auth_query, G(auth_query), auth_query, NULL, 0),
    D_STR(auth_dbname, G(auth_dbname), auth_dbname, NULL, 0),
    IGNORED(client_encoding),
    IGNORED(datestyle),
    IGNORED(timezone),
    IGNORED(load_balance_hosts),
    IGNORED(target_session_attrs),
};

static const struct key user_keys[] = {
    U_INT(pool_size, G(default_pool_size), "pool_size"),
    ENTRY(struct user_config, pool_mode, KT_POOL_MODE, 0, 0, NULL, KF_OWN, G(pool_mode), pool_mode, "pool_mode"),
    ENTRY(struct user_config, session_state, KT_ENUM, 0, 0, session_states, 0, G(session_state), session_state, NULL),
    U_INT(max_user_connections, G(max_user_connections), "max_user_connections"),
    U_INT(reserve_pool_size, G(reserve_pool_size), "reserve_pool_size"),
    U_INT(max_user_client_connections, G(max_user_client_connections), "max_user_client_connections"),
    U_TIME(query_timeout),
    U_TIME(query_wait_timeout),
    U_TIME(idle_transaction_timeout),
    U_TIME(transaction_timeout),
    U_TIME(client_idle_timeout),
};

#define NKEYS(t) (sizeof(t) / sizeof((t)[0]))

/* Short environment names for the settings a sidecar most often needs. */
static const struct {
    const char *env;
    const char *key;
} short_env[] = {
    {"POOL_MODE", "pool_mode"},
    {"SERVER_HOST", "server_host"},
    {"SERVER_PORT", "server_port"},
    {"MAX_CLIENT_CONN", "max_client_conn"},
    {"DEFAULT_POOL_SIZE", "default_pool_size"},
    {"LISTEN_ADDR", "listen_addr"},
    {"LISTEN_PORT", "listen_port"},
};

enum section {
    SECT_NONE,
    SECT_MAIN, /* [pgbun] or [pgbouncer] */
    SECT_DATABASES,
    SECT_USERS,
    SECT_SKIPPED, /* a PgBouncer section pgbun does not implement yet */
};

struct parser {
    struct pgbun_config *cfg;
    enum section         section; /* carries across %include, as in PgBouncer */
    char               **errmsg;
    struct db_config   **db_tail; /* where the next new entry goes */
    struct user_config **user_tail;
};

/* Sets *errmsg to a malloc'd message, keeping the first one. */
__attribute__((format(printf, 2, 3))) static void set_error(char **errmsg, const char *fmt, ...)
{
    va_list ap;
    int     n;
    char   *buf;

    if (errmsg == NULL || *errmsg != NULL) return;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    buf = malloc((size_t)n + 1);
    if (buf == NULL) return;
    va_start(ap, fmt);
    vsnprintf(buf, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *errmsg = buf;
}

static char *trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        end--;
    *end = '\0';
    return s;
}

static const struct key *find_key(const struct key *table, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(table[i].name, name) == 0) return &table[i];
    return NULL;
}

static bool parse_int(const char *s, long long *out)
{
    char     *end;
    long long v;

    if (*s == '\0' || isspace((unsigned char)*s)) return false;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0') return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "on", "true", "yes"};
    static const char *const no[] = {"0", "off", "false", "no"};

    for (size_t i = 0; i < NKEYS(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) return (*out = true), true;
        if (strcasecmp(s, no[i]) == 0) return (*out = false), true;
    }
    return false;
}

static bool parse_pool_mode(const char *s, enum pool_mode *out)
{
    for (enum pool_mode m = POOL_SESSION; m <= POOL_STATEMENT; m++)
        if (strcasecmp(s, config_pool_mode_name(m)) == 0) return (*out = m), true;
    return false;
}

bool config_parse_time(const char *s, usec_t *out)
{
    static const struct {
        const char *name;
        usec_t      mult;
    } units[] = {
        {"", USEC_PER_SEC},
        {"us", 1},
        {"ms", 1000},
        {"s", USEC_PER_SEC},
        {"sec", USEC_PER_SEC},
        {"min", 60 * USEC_PER_SEC},
        {"h", 3600 * USEC_PER_SEC},
        {"d", 86400 * USEC_PER_SEC},
    };
    usec_t      whole = 0, frac = 0, frac_den = 1, mult = 0, v;
    bool        digits = false;
    const char *p = s, *unit_end;

    if (s == NULL) return false;
    while (isspace((unsigned char)*p))
        p++;
    for (; isdigit((unsigned char)*p); p++) {
        if (whole > MAX_TIME_USEC) return false;
        whole = whole * 10 + (*p - '0');
        digits = true;
    }
    if (*p == '.') {
        /* Six fractional digits reach microseconds of a second; more are read and dropped. */
        for (p++; isdigit((unsigned char)*p); p++) {
            if (frac_den < 1000000) {
                frac = frac * 10 + (*p - '0');
                frac_den *= 10;
            }
            digits = true;
        }
    }
    if (!digits) return false;
    while (isspace((unsigned char)*p))
        p++;
    unit_end = p;
    while (isalpha((unsigned char)*unit_end))
        unit_end++;
    for (size_t i = 0; i < NKEYS(units); i++) {
        if (strlen(units[i].name) == (size_t)(unit_end - p) &&
            strncasecmp(units[i].name, p, (size_t)(unit_end - p)) == 0) {
            mult = units[i].mult;
            break;
        }
    }
    if (mult == 0) return false;
    p = unit_end;
    while (isspace((unsigned char)*p))
        p++;
    if (*p != '\0') return false;
    if (whole > MAX_TIME_USEC / mult) return false;
    v = whole * mult + (frac * mult + frac_den / 2) / frac_den;
    if (v > MAX_TIME_USEC) return false;
    *out = v;
    return true;
}

/*
 * Parses `value` for key `k` and stores it in `base` (the struct the key's
 * table describes). `where` starts every error message: "file:line: key" or
 * "environment VAR".
 */
static bool key_set(void *base, const struct key *k, const char *value, const char *where, char **errmsg)
{
    char     *field = (char *)base + k->offset;
    long long n;

    assert(!(k->flags & KF_IGNORED));
    switch (k->type) {
    case KT_STR: {
        char **dst = (char **)(void *)field;
        char  *copy = NULL;

        if (k->choices != NULL) {
            size_t i;
            for (i = 0; k->choices[i] != NULL; i++)
                if (strcasecmp(value, k->choices[i]) == 0) break;
            if (k->choices[i] == NULL) {
                set_error(errmsg, "%s: invalid value '%s'", where, value);
                return false;
            }
            value = k->choices[i];
        }
        /* An empty value unsets a key whose default is "not set". */
        if (value[0] != '\0' || k->def != NULL) {
            copy = strdup(value);
            if (copy == NULL) {
                set_error(errmsg, "%s: out of memory", where);
                return false;
            }
        }
        free(*dst);
        *dst = copy;
        return true;
    }
    case KT_INT:
    case KT_OCTAL:
        if (k->type == KT_INT) {
            if (!parse_int(value, &n)) {
                set_error(errmsg, "%s: invalid integer '%s'", where, value);
                return false;
            }
        } else {
            char *end;
            errno = 0;
            n = strtoll(value, &end, 8);
            if (value[0] == '\0' || value[0] == '-' || *end != '\0' || errno != 0) {
                set_error(errmsg, "%s: invalid octal mode '%s'", where, value);
                return false;
            }
        }
        if (n < k->min || n > k->max) {
            set_error(errmsg, "%s: value %s out of range (%lld..%lld)", where, value, k->min, k->max);
            return false;
        }
        *(int *)(void *)field = (int)n;
        return true;
    case KT_PORTS: {
        /* "5432" or "5432, 5433": each port in range; the first in port, the list (if any) kept as written. */
        struct db_config *db = base;
        char             *list = strdup(value), *save = NULL, *tok;
        int               count = 0, first = 0;

        assert(k->offset == offsetof(struct db_config, port));
        if (list == NULL) {
            set_error(errmsg, "%s: out of memory", where);
            return false;
        }
        for (tok = strtok_r(list, ",", &save); tok != NULL || count == 0; tok = strtok_r(NULL, ",", &save)) {
            char *t = tok != NULL ? trim(tok) : list;

            if (!parse_int(t, &n)) {
                set_error(errmsg, "%s: invalid integer '%s'", where, t);
                free(list);
                return false;
            }
            if (n < k->min || n > k->max) {
                set_error(errmsg, "%s: value %s out of range (%lld..%lld)", where, t, k->min, k->max);
                free(list);
                return false;
            }
            if (count++ == 0) first = (int)n;
            if (tok == NULL) break;
        }
        free(list);
        free(db->ports);
        db->ports = NULL;
        if (count > 1 && (db->ports = strdup(value)) == NULL) {
            set_error(errmsg, "%s: out of memory", where);
            return false;
        }
        db->port = first;
        return true;
    }
    case KT_BOOL:
        if (!parse_bool(value, (bool *)(void *)field)) {
            set_error(errmsg, "%s: invalid boolean '%s' (expected 0 or 1)", where, value);
            return false;
        }
        return true;
    case KT_TIME:
        if (!config_parse_time(value, (usec_t *)(void *)field)) {
            set_error(errmsg, "%s: invalid time '%s'", where, value);
            return false;
        }
        return true;
    case KT_POOL_MODE:
        if (!parse_pool_mode(value, (enum pool_mode *)(void *)field)) {
            set_error(errmsg, "%s: invalid pool_mode '%s' (expected session, transaction or statement)", where, value);
            return false;
        }
        return true;
    case KT_ENUM:
        for (int i = 0; k->choices[i] != NULL; i++) {
            if (strcasecmp(value, k->choices[i]) == 0) {
                *(int *)(void *)field = i;
                return true;
            }
        }
        set_error(errmsg, "%s: invalid value '%s'", where, value);
        return false;
    case KT_AUTH_TYPE:
        for (enum auth_type t = AUTH_TRUST; t <= AUTH_HBA; t++) {
            if (strcasecmp(value, config_auth_type_name(t)) == 0) {
                *(enum auth_type *)(void *)field = t;
                return true;
            }
        }
        if (strcasecmp(value, "any") == 0 || strcasecmp(value, "pam") == 0 || strcasecmp(value, "ldap") == 0)
            set_error(errmsg, "%s: auth_type '%s' is not supported yet", where, value);
        else
            set_error(errmsg,
                      "%s: invalid auth_type '%s' (expected trust, plain, md5, scram-sha-256, cert, peer or hba)",
                      where, value);
        return false;
    }
    set_error(errmsg, "%s: internal error: bad key type", where);
    return false;
}

static bool apply_defaults(struct pgbun_config *cfg, char **errmsg)
{
    for (size_t i = 0; i < NKEYS(main_keys); i++) {
        const struct key *k = &main_keys[i];

        if ((k->flags & KF_IGNORED) || k->def == NULL) continue;
        if (!key_set(cfg, k, k->def, k->name, errmsg)) return false;
    }
    return true;
}

/* The field of entry key k in `base`. */
#define FIELD(base, k, T)  ((T *)(void *)((char *)(base) + (k)->offset))
#define CFIELD(base, k, T) ((const T *)(const void *)((const char *)(base) + (k)->offset))

/* The rows of an entry table that have a field of their own: not ignored, not another name for a field. */
static bool own_field(const struct key *k)
{
    return !(k->flags & (KF_IGNORED | KF_ALIAS));
}

static void entry_free(void *entry, const struct key *table, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!own_field(&table[i])) continue;
        if (table[i].type == KT_STR) free(*FIELD(entry, &table[i], char *));
        if (table[i].type == KT_PORTS) free(((struct db_config *)entry)->ports);
    }
}

/* Every field of the entry unset: it inherits. Strings are NULL already (calloc). */
static void entry_unset(void *entry, const struct key *table, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct key *k = &table[i];

        if (!own_field(k)) continue;
        switch (k->type) {
        case KT_INT:
        case KT_ENUM: *FIELD(entry, k, int) = -1; break;
        case KT_POOL_MODE: *FIELD(entry, k, enum pool_mode) = POOL_MODE_UNSET; break;
        case KT_TIME: *FIELD(entry, k, usec_t) = -1; break;
        case KT_PORTS: *FIELD(entry, k, int) = 0; break;
        default: break;
        }
    }
}

/* true when the entry sets key k; false when it inherits it. */
static bool entry_sets(const void *entry, const struct key *k)
{
    switch (k->type) {
    case KT_STR: return *CFIELD(entry, k, char *) != NULL;
    case KT_INT:
    case KT_ENUM: return *CFIELD(entry, k, int) >= 0;
    case KT_POOL_MODE: return *CFIELD(entry, k, enum pool_mode) != POOL_MODE_UNSET;
    case KT_TIME: return *CFIELD(entry, k, usec_t) >= 0;
    case KT_PORTS: return *CFIELD(entry, k, int) > 0;
    default: return false;
    }
}

static bool entry_equal(const void *a, const void *b, const struct key *table, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct key *k = &table[i];

        if (!own_field(k)) continue;
        switch (k->type) {
        case KT_STR:
            if (!str_same(*CFIELD(a, k, char *), *CFIELD(b, k, char *))) return false;
            break;
        case KT_PORTS:
            if (!str_same(((const struct db_config *)a)->ports, ((const struct db_config *)b)->ports)) return false;
            /* fall through */
        case KT_INT:
        case KT_ENUM:
            if (*CFIELD(a, k, int) != *CFIELD(b, k, int)) return false;
            break;
        case KT_POOL_MODE:
            if (*CFIELD(a, k, enum pool_mode) != *CFIELD(b, k, enum pool_mode)) return false;
            break;
        case KT_TIME:
            if (*CFIELD(a, k, usec_t) != *CFIELD(b, k, usec_t)) return false;
            break;
        default: assert(!"entry_equal: a type no entry key has"); return false;
        }
    }
    return true;
}

/* *dst = a copy of src (NULL stays NULL). false on OOM, with *dst NULL. */
static bool dup_str(char **dst, const char *src)
{
    *dst = src != NULL ? strdup(src) : NULL;
    return src == NULL || *dst != NULL;
}

/*
 * Copies the fields of `src` into `dst`, a bitwise copy of it: each string
 * is duplicated. On OOM the strings not yet copied are NULL, so that
 * entry_free() of dst frees only what dst owns.
 */
static bool entry_dup_strings(void *dst, const void *src, const struct key *table, size_t n)
{
    bool ok = true;

    for (size_t i = 0; i < n; i++) {
        const struct key *k = &table[i];

        if (!own_field(k)) continue;
        if (k->type == KT_STR) *FIELD(dst, k, char *) = NULL;
        if (k->type == KT_PORTS) ((struct db_config *)dst)->ports = NULL;
    }
    for (size_t i = 0; ok && i < n; i++) {
        const struct key *k = &table[i];

        if (!own_field(k)) continue;
        if (k->type == KT_STR) ok = dup_str(FIELD(dst, k, char *), *CFIELD(src, k, char *));
        if (k->type == KT_PORTS)
            ok = dup_str(&((struct db_config *)dst)->ports, ((const struct db_config *)src)->ports);
    }
    return ok;
}

static void db_free(struct db_config *db)
{
    if (db == NULL) return;
    entry_free(db, db_keys, NKEYS(db_keys));
    free(db->name);
    free(db);
}

static struct db_config *db_new(const char *name)
{
    struct db_config *db = calloc(1, sizeof(*db));

    if (db == NULL) return NULL;
    db->name = strdup(name);
    if (db->name == NULL) {
        free(db);
        return NULL;
    }
    entry_unset(db, db_keys, NKEYS(db_keys));
    return db;
}

static void user_free(struct user_config *u)
{
    if (u == NULL) return;
    entry_free(u, user_keys, NKEYS(user_keys));
    free(u->name);
    free(u);
}

static struct user_config *user_new(const char *name)
{
    struct user_config *u = calloc(1, sizeof(*u));

    if (u == NULL) return NULL;
    u->name = strdup(name);
    if (u->name == NULL) {
        free(u);
        return NULL;
    }
    entry_unset(u, user_keys, NKEYS(user_keys));
    return u;
}

/*
 * fn(cfg, e, &tail): appends entry e at *tail, the end of its list, or puts
 * it in the place of an earlier entry of the same name (the last one wins,
 * as in PgBouncer), and indexes it by name. false: out of memory, e freed.
 */
#define DEFINE_ADD(fn, T, list, index, free_entry)                                                                     \
    static bool fn(struct pgbun_config *cfg, T *e, T ***tail)                                                          \
    {                                                                                                                  \
        T *old, **pp;                                                                                                  \
                                                                                                                       \
        HASH_FIND_STR(cfg->index, e->name, old);                                                                       \
        if (old != NULL) HASH_DELETE(hh, cfg->index, old);                                                             \
        memset(&e->hh, 0, sizeof(e->hh));                                                                              \
        HASH_ADD_KEYPTR(hh, cfg->index, e->name, strlen(e->name), e);                                                  \
        if (e->hh.tbl == NULL) {                                                                                       \
            free_entry(e); /* old stays in the list, freed with the config this failure discards */                    \
            return false;                                                                                              \
        }                                                                                                              \
        e->next = NULL;                                                                                                \
        if (old == NULL) {                                                                                             \
            **tail = e;                                                                                                \
            *tail = &e->next;                                                                                          \
            return true;                                                                                               \
        }                                                                                                              \
        for (pp = &cfg->list; *pp != old; pp = &(*pp)->next)                                                           \
            ;                                                                                                          \
        e->next = old->next;                                                                                           \
        *pp = e;                                                                                                       \
        if (*tail == &old->next) *tail = &e->next;                                                                     \
        free_entry(old);                                                                                               \
        return true;                                                                                                   \
    }

DEFINE_ADD(add_db, struct db_config, databases, db_index, db_free)
DEFINE_ADD(add_user, struct user_config, users, user_index, user_free)

/*
 * Reads the next "key=value" pair of a libpq-style connection string at *sp.
 * Values may be single-quoted ('it''s', 'a b'); a backslash escapes the next
 * character inside and outside quotes. Key and value are written into `buf`
 * (at least strlen(*sp) + 2 bytes). Returns 1 for a pair, 0 at the end, -1
 * on a syntax error (*errtext says which, never quoting the value).
 */
static int next_pair(const char **sp, char *buf, char **key, char **value, const char **errtext)
{
    const char *s = *sp;
    char       *o = buf;

    while (isspace((unsigned char)*s))
        s++;
    if (*s == '\0') return 0;
    *key = o;
    while (*s != '\0' && *s != '=' && !isspace((unsigned char)*s))
        *o++ = *s++;
    *o++ = '\0';
    if ((*key)[0] == '\0') {
        *errtext = "syntax error: empty key";
        return -1;
    }
    while (isspace((unsigned char)*s))
        s++;
    if (*s != '=') {
        *errtext = "missing '=' after key";
        return -1;
    }
    s++;
    while (isspace((unsigned char)*s))
        s++;
    *value = o;
    if (*s == '\'') {
        for (s++;; s++) {
            if (*s == '\0') {
                *errtext = "unterminated quoted value";
                return -1;
            }
            if (*s == '\'') {
                if (s[1] != '\'') break;
                s++;
            } else if (*s == '\\' && s[1] != '\0') {
                s++;
            }
            *o++ = *s;
        }
        s++;
        if (*s != '\0' && !isspace((unsigned char)*s)) {
            *errtext = "junk after quoted value";
            return -1;
        }
    } else {
        while (*s != '\0' && !isspace((unsigned char)*s)) {
            if (*s == '\\' && s[1] != '\0') s++;
            *o++ = *s++;
        }
    }
    *o = '\0';
    *sp = s;
    return 1;
}

/* Applies a connection string to an entry through one of the key tables. */
static bool parse_entry(void *base, const struct key *table, size_t nkeys, const char *connstr, const char *file,
                        int line, char **errmsg)
{
    char       *buf = malloc(strlen(connstr) + 2);
    char       *key = NULL, *value = NULL;
    const char *errtext = NULL;
    bool        ok = true;
    int         r;

    if (buf == NULL) {
        set_error(errmsg, "%s:%d: out of memory", file, line);
        return false;
    }
    while (ok && (r = next_pair(&connstr, buf, &key, &value, &errtext)) != 0) {
        const struct key *k;
        char              where[4400]; /* path, line and key */

        if (r < 0) {
            if (key != NULL && key[0] != '\0')
                set_error(errmsg, "%s:%d: %s: %s", file, line, key, errtext);
            else
                set_error(errmsg, "%s:%d: %s", file, line, errtext);
            ok = false;
            break;
        }
        k = find_key(table, nkeys, key);
        if (k == NULL) {
            set_error(errmsg, "%s:%d: unknown key '%s'", file, line, key);
            ok = false;
        } else if (k->flags & KF_IGNORED) {
            log_warning("%s:%d: key '%s' is not supported yet and is ignored", file, line, k->name);
        } else {
            snprintf(where, sizeof(where), "%s:%d: %s", file, line, k->name);
            ok = key_set(base, k, value, where, errmsg);
        }
    }
    free(buf);
    return ok;
}

static bool parse_db_entry(struct parser *p, const char *name, const char *connstr, const char *file, int line)
{
    struct db_config *db = db_new(name);

    if (db == NULL) {
        set_error(p->errmsg, "%s:%d: out of memory", file, line);
        return false;
    }
    if (!parse_entry(db, db_keys, NKEYS(db_keys), connstr, file, line, p->errmsg)) {
        db_free(db);
        return false;
    }
    for (int i = 0; db->host != NULL && i < config_list_count(db->host); i++) {
        char one[CONFIG_HOST_MAX];

        if (!config_list_entry(db->host, i, one, sizeof(one))) {
            set_error(p->errmsg, "%s:%d: host: entry %d of the host list is empty or too long", file, line, i + 1);
            db_free(db);
            return false;
        }
    }
    if (db->ports != NULL && config_list_count(db->ports) != config_list_count(db->host ? db->host : "")) {
        set_error(p->errmsg, "%s:%d: port: %d ports for %d hosts (give one port for all, or one per host)", file, line,
                  config_list_count(db->ports), db->host ? config_list_count(db->host) : 1);
        db_free(db);
        return false;
    }
    if (!add_db(p->cfg, db, &p->db_tail)) {
        set_error(p->errmsg, "%s:%d: out of memory", file, line);
        return false;
    }
    return true;
}

static bool parse_user_entry(struct parser *p, const char *name, const char *settings, const char *file, int line)
{
    struct user_config *u = user_new(name);

    if (u == NULL) {
        set_error(p->errmsg, "%s:%d: out of memory", file, line);
        return false;
    }
    if (!parse_entry(u, user_keys, NKEYS(user_keys), settings, file, line, p->errmsg)) {
        user_free(u);
        return false;
    }
    if (!add_user(p->cfg, u, &p->user_tail)) {
        set_error(p->errmsg, "%s:%d: out of memory", file, line);
        return false;
    }
    return true;
}

static bool parse_main_key(struct parser *p, const char *name, const char *value, const char *file, int line)
{
    const struct key *k = find_key(main_keys, NKEYS(main_keys), name);
    char              where[4400]; /* path, line and key */

    if (k == NULL) {
        set_error(p->errmsg, "%s:%d: unknown key '%s'", file, line, name);
        return false;
    }
    if (k->flags & KF_IGNORED) {
        log_warning("%s:%d: key '%s' is not supported yet and is ignored", file, line, k->name);
        return true;
    }
    snprintf(where, sizeof(where), "%s:%d: %s", file, line, k->name);
    return key_set(p->cfg, k, value, where, p->errmsg);
}

static bool parse_section(struct parser *p, char *line, const char *file, int lineno)
{
    size_t len = strlen(line);
    char  *name;

    if (len < 2 || line[len - 1] != ']') {
        set_error(p->errmsg, "%s:%d: syntax error: expected '[section]'", file, lineno);
        return false;
    }
    line[len - 1] = '\0';
    name = trim(line + 1);
    if (strcasecmp(name, "pgbun") == 0 || strcasecmp(name, "pgbouncer") == 0) {
        p->section = SECT_MAIN;
    } else if (strcasecmp(name, "databases") == 0) {
        p->section = SECT_DATABASES;
    } else if (strcasecmp(name, "users") == 0) {
        p->section = SECT_USERS;
    } else if (strcasecmp(name, "peers") == 0) {
        log_warning("%s:%d: section [%s] is not supported yet and is ignored", file, lineno, name);
        p->section = SECT_SKIPPED;
    } else {
        set_error(p->errmsg, "%s:%d: unknown section [%s]", file, lineno, name);
        return false;
    }
    return true;
}

/*
 * Splits "key = value" in place. A key may be double-quoted ("my db"), with
 * "" standing for one quote, as SQL identifiers are.
 */
static bool split_key_value(char *line, char **key, char **value, const char **errtext)
{
    char *eq;

    if (line[0] == '"') {
        char *s = line + 1, *o = line;

        for (;; s++) {
            if (*s == '\0') {
                *errtext = "unterminated quoted name";
                return false;
            }
            if (*s == '"') {
                if (s[1] != '"') break;
                s++;
            }
            *o++ = *s;
        }
        *o = '\0';
        *key = line;
        eq = s + 1;
        while (isspace((unsigned char)*eq))
            eq++;
        if (*eq != '=') {
            *errtext = "syntax error: expected 'name = value'";
            return false;
        }
    } else {
        eq = strchr(line, '=');
        if (eq == NULL) {
            *errtext = "syntax error: expected 'key = value'";
            return false;
        }
        *eq = '\0';
        *key = trim(line);
    }
    *value = trim(eq + 1);
    if ((*key)[0] == '\0') {
        *errtext = "syntax error: empty key";
        return false;
    }
    return true;
}

static bool parse_file(struct parser *p, const char *path, int depth);

/* "%include path": a relative path is taken from the including file's directory. */
static bool parse_include(struct parser *p, const char *arg, const char *file, int line, int depth)
{
    const char *slash = strrchr(file, '/');
    char       *path;
    bool        ok;

    if (arg[0] == '\0') {
        set_error(p->errmsg, "%s:%d: %%include needs a file name", file, line);
        return false;
    }
    if (depth >= MAX_INCLUDE_DEPTH) {
        set_error(p->errmsg, "%s:%d: %%include nested too deeply", file, line);
        return false;
    }
    if (arg[0] == '/' || slash == NULL) {
        path = strdup(arg);
    } else {
        size_t dirlen = (size_t)(slash - file) + 1;
        path = malloc(dirlen + strlen(arg) + 1);
        if (path != NULL) {
            memcpy(path, file, dirlen);
            strcpy(path + dirlen, arg);
        }
    }
    if (path == NULL) {
        set_error(p->errmsg, "%s:%d: out of memory", file, line);
        return false;
    }
    ok = parse_file(p, path, depth + 1);
    free(path);
    return ok;
}

static bool parse_line(struct parser *p, char *raw, const char *file, int lineno, int depth)
{
    char       *line = trim(raw), *key, *value;
    const char *errtext = NULL;

    if (line[0] == '\0' || line[0] == ';' || line[0] == '#') return true;
    if (strncmp(line, "%include", 8) == 0 && (line[8] == '\0' || isspace((unsigned char)line[8])))
        return parse_include(p, trim(line + 8), file, lineno, depth);
    if (line[0] == '[') return parse_section(p, line, file, lineno);
    if (!split_key_value(line, &key, &value, &errtext)) {
        set_error(p->errmsg, "%s:%d: %s", file, lineno, errtext);
        return false;
    }
    switch (p->section) {
    case SECT_NONE: set_error(p->errmsg, "%s:%d: key '%s' outside of any section", file, lineno, key); return false;
    case SECT_MAIN: return parse_main_key(p, key, value, file, lineno);
    case SECT_DATABASES: return parse_db_entry(p, key, value, file, lineno);
    case SECT_USERS: return parse_user_entry(p, key, value, file, lineno);
    case SECT_SKIPPED: return true;
    }
    return true;
}

static bool parse_file(struct parser *p, const char *path, int depth)
{
    FILE  *f = fopen(path, "r");
    char  *buf = NULL;
    size_t cap = 0;
    int    lineno = 0;
    bool   ok = true;

    if (f == NULL) {
        set_error(p->errmsg, "%s: cannot open: %s", path, strerror(errno));
        return false;
    }
    while (ok && getline(&buf, &cap, f) >= 0) {
        lineno++;
        ok = parse_line(p, buf, path, lineno, depth);
    }
    if (ok && ferror(f)) {
        set_error(p->errmsg, "%s: read error: %s", path, strerror(errno));
        ok = false;
    }
    free(buf);
    fclose(f);
    return ok;
}

static bool apply_env_var(struct pgbun_config *cfg, const struct key *k, const char *var, char **errmsg)
{
    const char *value = getenv(var);
    char        where[256];

    if (value == NULL) return true;
    if (k->flags & KF_IGNORED) {
        log_warning("environment %s: key '%s' is not supported yet and is ignored", var, k->name);
        return true;
    }
    snprintf(where, sizeof(where), "environment %s", var);
    return key_set(cfg, k, value, where, errmsg);
}

/* Short names first, so that the PGBUN_ form of the same key wins. */
static bool apply_env(struct pgbun_config *cfg, char **errmsg)
{
    char var[128];

    for (size_t i = 0; i < NKEYS(short_env); i++) {
        const struct key *k = find_key(main_keys, NKEYS(main_keys), short_env[i].key);

        assert(k != NULL);
        if (!apply_env_var(cfg, k, short_env[i].env, errmsg)) return false;
    }
    for (size_t i = 0; i < NKEYS(main_keys); i++) {
        const struct key *k = &main_keys[i];
        size_t            j;

        memcpy(var, "PGBUN_", 6);
        for (j = 0; k->name[j] != '\0' && j + 7 < sizeof(var); j++)
            var[6 + j] = (char)toupper((unsigned char)k->name[j]);
        var[6 + j] = '\0';
        if (!apply_env_var(cfg, k, var, errmsg)) return false;
    }
    return true;
}

struct pgbun_config *config_load(const char *path, char **errmsg)
{
    struct pgbun_config *cfg = calloc(1, sizeof(*cfg));
    struct parser        p;

    if (errmsg != NULL) *errmsg = NULL;
    if (cfg == NULL) {
        set_error(errmsg, "out of memory");
        return NULL;
    }
    if (!apply_defaults(cfg, errmsg)) goto fail;
    p.cfg = cfg;
    p.section = SECT_NONE;
    p.errmsg = errmsg;
    p.db_tail = &cfg->databases;
    p.user_tail = &cfg->users;
    if (path != NULL) {
        cfg->path = strdup(path);
        if (cfg->path == NULL) {
            set_error(errmsg, "out of memory");
            goto fail;
        }
        if (!parse_file(&p, path, 0)) goto fail;
    } else {
        /* Sidecar mode: every database goes to server_host:server_port. */
        struct db_config *db = db_new("*");

        if (db == NULL || !add_db(cfg, db, &p.db_tail)) {
            set_error(errmsg, "out of memory");
            goto fail;
        }
    }
    if (!apply_env(cfg, errmsg)) goto fail;
    return cfg;

fail:
    config_free(cfg);
    return NULL;
}

void config_free(struct pgbun_config *cfg)
{
    if (cfg == NULL) return;
    for (size_t i = 0; i < NKEYS(main_keys); i++) {
        const struct key *k = &main_keys[i];

        if (k->type == KT_STR && !(k->flags & KF_IGNORED)) free(*(char **)(void *)((char *)cfg + k->offset));
    }
    free(cfg->path);
    HASH_CLEAR(hh, cfg->db_index);
    HASH_CLEAR(hh, cfg->user_index);
    while (cfg->databases != NULL) {
        struct db_config *next = cfg->databases->next;
        db_free(cfg->databases);
        cfg->databases = next;
    }
    while (cfg->users != NULL) {
        struct user_config *next = cfg->users->next;
        user_free(cfg->users);
        cfg->users = next;
    }
    free(cfg);
}

/* The string field of a KT_STR key in `base`. */
static char **str_field(void *base, const struct key *k)
{
    assert(k->type == KT_STR && !(k->flags & KF_IGNORED));
    return (char **)(void *)((char *)base + k->offset);
}

static struct db_config *db_dup(const struct db_config *src)
{
    struct db_config *db = malloc(sizeof(*db));

    if (db == NULL) return NULL;
    *db = *src;
    db->next = NULL;
    db->name = NULL;
    if (!entry_dup_strings(db, src, db_keys, NKEYS(db_keys)) || !dup_str(&db->name, src->name)) {
        db_free(db);
        return NULL;
    }
    return db;
}

static struct user_config *user_dup(const struct user_config *src)
{
    struct user_config *u = malloc(sizeof(*u));

    if (u == NULL) return NULL;
    *u = *src;
    u->next = NULL;
    u->name = NULL;
    if (!entry_dup_strings(u, src, user_keys, NKEYS(user_keys)) || !dup_str(&u->name, src->name)) {
        user_free(u);
        return NULL;
    }
    return u;
}

struct pgbun_config *config_dup(const struct pgbun_config *cfg)
{
    struct pgbun_config *copy;
    struct db_config   **dbtail;
    struct user_config **utail;

    assert(cfg != NULL);
    copy = malloc(sizeof(*copy));
    if (copy == NULL) return NULL;
    *copy = *cfg;
    /* Detach every pointer first, so that config_free() of a half-made copy frees only what it owns. */
    copy->path = NULL;
    copy->databases = copy->db_index = NULL;
    copy->users = NULL;
    copy->user_index = NULL;
    for (size_t i = 0; i < NKEYS(main_keys); i++)
        if (main_keys[i].type == KT_STR && !(main_keys[i].flags & KF_IGNORED)) *str_field(copy, &main_keys[i]) = NULL;

    if (!dup_str(&copy->path, cfg->path)) goto fail;
    for (size_t i = 0; i < NKEYS(main_keys); i++) {
        const struct key *k = &main_keys[i];

        if (k->type != KT_STR || (k->flags & KF_IGNORED)) continue;
        if (!dup_str(str_field(copy, k), *str_field((void *)cfg, k))) goto fail;
    }
    dbtail = &copy->databases;
    for (const struct db_config *db = cfg->databases; db != NULL; db = db->next) {
        struct db_config *d = db_dup(db);

        if (d == NULL || !add_db(copy, d, &dbtail)) goto fail;
    }
    utail = &copy->users;
    for (const struct user_config *u = cfg->users; u != NULL; u = u->next) {
        struct user_config *d = user_dup(u);

        if (d == NULL || !add_user(copy, d, &utail)) goto fail;
    }
    return copy;

fail:
    config_free(copy);
    return NULL;
}

/* Writes `v` in seconds as the shortest decimal that config_parse_time() reads back exactly. */
static void format_time(char *buf, size_t size, usec_t v)
{
    int  n;
    long frac;

    assert(v >= 0);
    n = snprintf(buf, size, "%lld", (long long)(v / USEC_PER_SEC));
    frac = (long)(v % USEC_PER_SEC);
    if (frac == 0 || n < 0 || (size_t)n >= size) return;
    n += snprintf(buf + n, size - (size_t)n, ".%06ld", frac);
    if ((size_t)n >= size) return;
    while (buf[n - 1] == '0')
        buf[--n] = '\0';
}

/* The field of `k` in `base` as text that key_set() parses back to the same value. malloc'd; NULL on OOM. */
static char *key_text(const void *base, const struct key *k)
{
    const char *field = (const char *)base + k->offset;
    char        buf[64] = "";

    assert(!(k->flags & KF_IGNORED));
    switch (k->type) {
    case KT_STR: {
        const char *s = *(char *const *)(const void *)field;

        return strdup(s != NULL ? s : "");
    }
    case KT_PORTS: {
        const struct db_config *db = base;

        if (db->ports != NULL) return strdup(db->ports);
    }
        /* fall through */
    case KT_INT: snprintf(buf, sizeof(buf), "%d", *(const int *)(const void *)field); break;
    case KT_OCTAL: snprintf(buf, sizeof(buf), "%#o", (unsigned)*(const int *)(const void *)field); break;
    case KT_BOOL: return strdup(*(const bool *)(const void *)field ? "1" : "0");
    case KT_TIME: format_time(buf, sizeof(buf), *(const usec_t *)(const void *)field); break;
    case KT_POOL_MODE: return strdup(config_pool_mode_name(*(const enum pool_mode *)(const void *)field));
    case KT_AUTH_TYPE: return strdup(config_auth_type_name(*(const enum auth_type *)(const void *)field));
    case KT_ENUM: return strdup(k->choices[*(const int *)(const void *)field]);
    }
    return strdup(buf);
}

/*
 * Defaults as key_text() prints them, so that an untouched key shows value ==
 * def. Built on first use by parsing the table's text into a scratch config;
 * kept for the life of the process (SHOW CONFIG hands out pointers into it).
 */
static char *default_texts[NKEYS(main_keys)];

static const char *default_text(size_t j)
{
    const struct key   *k = &main_keys[j];
    struct pgbun_config scratch;
    char               *err = NULL;

    if (k->def == NULL) return "";
    if (default_texts[j] != NULL) return default_texts[j];
    memset(&scratch, 0, sizeof(scratch));
    if (!key_set(&scratch, k, k->def, k->name, &err)) {
        free(err); /* out of memory: a bad default already fails every config_load() */
        return NULL;
    }
    default_texts[j] = key_text(&scratch, k);
    if (k->type == KT_STR) free(*str_field(&scratch, k));
    return default_texts[j];
}

/* Index in main_keys of SHOW CONFIG row i: the i-th key with a field behind it. */
static bool item_index(size_t i, size_t *index)
{
    for (size_t j = 0; j < NKEYS(main_keys); j++) {
        if (main_keys[j].flags & KF_IGNORED) continue;
        if (i == 0) {
            *index = j;
            return true;
        }
        i--;
    }
    return false;
}

size_t config_item_count(void)
{
    size_t n = 0;

    for (size_t j = 0; j < NKEYS(main_keys); j++)
        if (!(main_keys[j].flags & KF_IGNORED)) n++;
    return n;
}

bool config_item(const struct pgbun_config *cfg, size_t i, struct config_item *out)
{
    size_t            j;
    const struct key *k;
    const char       *def;

    assert(cfg != NULL && out != NULL);
    if (!item_index(i, &j)) {
        assert(!"config_item: index out of range");
        return false;
    }
    k = &main_keys[j];
    def = default_text(j);
    if (def == NULL) return false;
    out->value = key_text(cfg, k);
    if (out->value == NULL) return false;
    out->key = k->name;
    out->def = def;
    out->changeable = !(k->flags & KF_RESTART);
    return true;
}

bool config_set(struct pgbun_config *cfg, const char *key, const char *value, char **errmsg)
{
    const struct key *k;

    assert(cfg != NULL && key != NULL && value != NULL);
    if (errmsg != NULL) *errmsg = NULL;
    k = find_key(main_keys, NKEYS(main_keys), key);
    if (k == NULL) {
        set_error(errmsg, "unknown key '%s'", key);
        return false;
    }
    if (k->flags & KF_IGNORED) {
        set_error(errmsg, "%s: not supported yet", k->name);
        return false;
    }
    if (k->flags & KF_RESTART) {
        set_error(errmsg, "%s: cannot be changed without a restart", k->name);
        return false;
    }
    /* key_set() writes the field only once the value is valid, so cfg is unchanged on failure. */
    return key_set(cfg, k, value, k->name, errmsg);
}

/* An entry by its exact name ("*" matches only "*"), or NULL. */
static const void *db_exact(const struct pgbun_config *cfg, const char *name)
{
    struct db_config *db;

    HASH_FIND_STR(cfg->db_index, name, db);
    return db;
}

static const void *user_exact(const struct pgbun_config *cfg, const char *name)
{
    struct user_config *u;

    HASH_FIND_STR(cfg->user_index, name, u);
    return u;
}

const struct db_config *config_find_db(const struct pgbun_config *cfg, const char *name)
{
    const struct db_config *db;

    if (cfg == NULL || name == NULL) return NULL;
    db = db_exact(cfg, name);
    return db != NULL ? db : db_exact(cfg, "*");
}

const struct db_config *config_db_named(const struct pgbun_config *cfg, const char *name)
{
    return cfg != NULL && name != NULL ? db_exact(cfg, name) : NULL;
}

const struct user_config *config_find_user(const struct pgbun_config *cfg, const char *name)
{
    return cfg != NULL && name != NULL ? user_exact(cfg, name) : NULL;
}

bool config_looks_up_users(const struct pgbun_config *cfg)
{
    if (cfg->auth_user != NULL) return true;
    for (const struct db_config *db = cfg->databases; db != NULL; db = db->next)
        if (db->auth_user != NULL) return true;
    return false;
}

bool config_auth_route(const struct pgbun_config *cfg, const char *dbname, bool console, struct config_auth_route *r)
{
    const struct db_config *db = console ? NULL : config_find_db(cfg, dbname);
    struct config_settings  set;

    if (db == NULL) {
        /* The console, or a database with no entry: only auth_dbname names a database to ask. */
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

bool config_auth_place(const struct config_auth_route *r, char out[CONFIG_PLACE_MAX])
{
    int n;

    if (r->authdb == NULL || r->auth_user == NULL) return false;
    n = snprintf(out, CONFIG_PLACE_MAX, "%s/%s", r->authdb, r->auth_user);
    return n > 0 && n < CONFIG_PLACE_MAX;
}

/* auth_user / auth_dbname: the database the lookups run in must exist, for every entry that looks users up. */
static bool check_auth_query(const struct pgbun_config *cfg, char **errmsg)
{
    bool any = cfg->auth_user != NULL;

    for (const struct db_config *db = cfg->databases; db != NULL; db = db->next) {
        const char *authdb = db->auth_dbname != NULL ? db->auth_dbname : cfg->auth_dbname;

        if (db->auth_user != NULL) any = true;
        if (authdb != NULL && (db->auth_user != NULL || cfg->auth_user != NULL) &&
            config_find_db(cfg, authdb) == NULL) {
            set_error(errmsg, "[databases] %s: auth_dbname \"%s\" is not a database of [databases]", db->name, authdb);
            return false;
        }
    }
    if (any && (cfg->auth_query == NULL || cfg->auth_query[0] == '\0')) {
        set_error(errmsg, "auth_query is empty: with auth_user set it must return a user's name and secret");
        return false;
    }
    for (const struct db_config *db = cfg->databases; db != NULL; db = db->next) {
        if (db->auth_query != NULL && db->auth_query[0] == '\0') {
            set_error(errmsg, "[databases] %s: auth_query is empty", db->name);
            return false;
        }
    }
    if (cfg->auth_user != NULL && cfg->auth_dbname != NULL && config_find_db(cfg, cfg->auth_dbname) == NULL) {
        set_error(errmsg, "auth_dbname \"%s\" is not a database of [databases]", cfg->auth_dbname);
        return false;
    }
    if (!any && cfg->auth_dbname != NULL)
        log_warning("auth_dbname is unused: no auth_user is set, so every user comes from auth_file");
    if (!any && cfg->auth_query != NULL && strcmp(cfg->auth_query, AUTH_QUERY_DEFAULT) != 0)
        log_warning("auth_query is unused: no auth_user is set, so every user comes from auth_file");
    return true;
}

bool config_check(const struct pgbun_config *cfg, char **errmsg)
{
    /* Only verify-ca and up ask clients for a certificate, and only a verified one may name the user. */
    if (cfg->auth_type == AUTH_CERT && strcmp(cfg->client_tls_sslmode, "verify-ca") != 0 &&
        strcmp(cfg->client_tls_sslmode, "verify-full") != 0) {
        set_error(errmsg,
                  "auth_type = cert needs client_tls_sslmode = verify-ca or verify-full (it is %s): only then do "
                  "clients present a certificate that pgbun checks",
                  cfg->client_tls_sslmode);
        return false;
    }
    if (!check_auth_query(cfg, errmsg)) return false;
    if (cfg->auth_type == AUTH_HBA && (cfg->auth_hba_file == NULL || cfg->auth_hba_file[0] == '\0')) {
        set_error(errmsg, "auth_type = hba needs auth_hba_file: the file that says which method each connection gets");
        return false;
    }
    if (cfg->auth_type != AUTH_HBA && cfg->auth_hba_file != NULL && cfg->auth_hba_file[0] != '\0')
        log_warning("auth_hba_file is not used: it is read only with auth_type = hba (auth_type is %s)",
                    config_auth_type_name(cfg->auth_type));
    if (cfg->track_extra_parameters != NULL)
        log_warning("track_extra_parameters is ignored: with session_state = track pgbun follows every parameter a "
                    "client sets, without a list");
    if (cfg->pkt_buf != 4096)
        log_warning("pkt_buf = %d is ignored: pgbun's buffers grow to fit each message", cfg->pkt_buf);
    return true;
}

bool config_list_has(const char *list, const char *name)
{
    size_t namelen;

    if (list == NULL || name == NULL || name[0] == '\0') return false;
    namelen = strlen(name);
    while (*list != '\0') {
        const char *start;

        while (*list == ',' || isspace((unsigned char)*list))
            list++;
        start = list;
        while (*list != '\0' && *list != ',' && !isspace((unsigned char)*list))
            list++;
        if ((size_t)(list - start) == namelen && strncasecmp(start, name, namelen) == 0) return true;
    }
    return false;
}

const char *config_pool_mode_name(enum pool_mode mode)
{
    switch (mode) {
    case POOL_SESSION: return "session";
    case POOL_TRANSACTION: return "transaction";
    case POOL_STATEMENT: return "statement";
    case POOL_MODE_UNSET: break;
    }
    return "unset";
}

const char *config_auth_type_name(enum auth_type type)
{
    switch (type) {
    case AUTH_TRUST: return "trust";
    case AUTH_PLAIN: return "plain";
    case AUTH_MD5: return "md5";
    case AUTH_SCRAM: return "scram-sha-256";
    case AUTH_CERT: return "cert";
    case AUTH_PEER: return "peer";
    case AUTH_HBA: return "hba";
    case AUTH_REJECT: return "reject";
    }
    return "unknown";
}

int config_list_count(const char *list)
{
    int n = 1;

    for (const char *p = list; *p != '\0'; p++)
        n += *p == ',';
    return n;
}

bool config_list_entry(const char *list, int i, char *out, size_t outsz)
{
    const char *p = list, *end;
    size_t      n;

    while (i-- > 0) {
        if ((p = strchr(p, ',')) == NULL) return false;
        p++;
    }
    end = strchr(p, ',');
    if (end == NULL) end = p + strlen(p);
    while (p < end && isspace((unsigned char)*p))
        p++;
    while (end > p && isspace((unsigned char)end[-1]))
        end--;
    n = (size_t)(end - p);
    if (n == 0 || n >= outsz) return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

const char *config_session_state_name(enum session_state state)
{
    return state >= SESSION_TRACK && state <= SESSION_OFF ? session_states[state] : "unset";
}

/* ---- entries: resolution, differences, SHOW ---- */

/*
 * Copies the value of entry key k into the settings: from an entry's own
 * field (entry true) or from the [pgbun] field it inherits.
 */
static void settle(struct config_settings *out, const struct key *k, const void *from, bool entry)
{
    size_t      at = entry ? k->offset : k->global;
    const char *src = (const char *)from + at;
    char       *dst = (char *)out + k->res;

    switch (k->type) {
    case KT_STR: *(const char **)(void *)dst = *(char *const *)(const void *)src; break;
    case KT_PORTS:
        if (entry) out->ports = ((const struct db_config *)from)->ports; /* one port per host, or NULL */
        /* fall through */
    case KT_INT:
    case KT_ENUM: *(int *)(void *)dst = *(const int *)(const void *)src; break;
    case KT_POOL_MODE: *(enum pool_mode *)(void *)dst = *(const enum pool_mode *)(const void *)src; break;
    case KT_TIME: *(usec_t *)(void *)dst = *(const usec_t *)(const void *)src; break;
    default: assert(!"settle: a type no entry key has"); break;
    }
}

/* Each key of the table the entry sets overrides what is there. */
static void settle_entry(struct config_settings *out, const void *entry, const struct key *table, size_t n)
{
    for (size_t i = 0; entry != NULL && i < n; i++)
        if (own_field(&table[i]) && entry_sets(entry, &table[i])) settle(out, &table[i], entry, true);
}

void config_resolve(const struct pgbun_config *cfg, const struct db_config *db, const struct user_config *u,
                    const char *dbname, struct config_settings *out)
{
    static const struct {
        const struct key *table;
        size_t            n;
    } tables[] = {{db_keys, NKEYS(db_keys)}, {user_keys, NKEYS(user_keys)}};

    memset(out, 0, sizeof(*out));
    for (size_t t = 0; t < NKEYS(tables); t++)
        for (size_t i = 0; i < tables[t].n; i++)
            if (own_field(&tables[t].table[i]) && tables[t].table[i].global != NO_FIELD)
                settle(out, &tables[t].table[i], cfg, false);
    out->dbname = dbname;
    settle_entry(out, db, db_keys, NKEYS(db_keys));
    settle_entry(out, u, user_keys, NKEYS(user_keys));
}

__attribute__((format(printf, 3, 4))) static void report(config_change_fn *fn, void *arg, const char *fmt, ...)
{
    va_list ap;
    char   *line = NULL;

    va_start(ap, fmt);
    if (vasprintf(&line, fmt, ap) < 0) line = NULL;
    va_end(ap);
    if (line != NULL) fn(arg, line);
    free(line);
}

/* Entries are walked by their name, the first field of either kind, and their next pointer at `next_at`. */
_Static_assert(offsetof(struct db_config, name) == 0 && offsetof(struct user_config, name) == 0, "name first");
#define ENTRY_NAME(e)          (*(char *const *)(const void *)(e))
#define ENTRY_NEXT(e, next_at) (*(const char *const *)(const void *)((const char *)(e) + (next_at)))

/* Added, changed and removed entries of one section. */
static int diff_entries(const struct pgbun_config *old, const struct pgbun_config *now, const void *old_list,
                        const void *now_list, size_t                                                       next_at,
                        const void *(*exact)(const struct pgbun_config *, const char *), const struct key *table,
                        size_t n, const char *section, config_change_fn *fn, void *arg)
{
    int changes = 0;

    for (const char *e = now_list; e != NULL; e = ENTRY_NEXT(e, next_at)) {
        const void *o = exact(old, ENTRY_NAME(e));

        if (o == NULL || !entry_equal(o, e, table, n)) {
            report(fn, arg, "[%s] %s: %s", section, ENTRY_NAME(e), o == NULL ? "added" : "changed");
            changes++;
        }
    }
    for (const char *o = old_list; o != NULL; o = ENTRY_NEXT(o, next_at)) {
        if (exact(now, ENTRY_NAME(o)) == NULL) {
            report(fn, arg, "[%s] %s: removed", section, ENTRY_NAME(o));
            changes++;
        }
    }
    return changes;
}

int config_diff(const struct pgbun_config *old, const struct pgbun_config *now, config_change_fn *fn, void *arg)
{
    int changes = 0;

    for (size_t i = 0; i < NKEYS(main_keys); i++) {
        const struct key *k = &main_keys[i];
        char             *a, *b;

        if (k->flags & KF_IGNORED) continue;
        a = key_text(old, k);
        b = key_text(now, k);
        if (a != NULL && b != NULL && strcmp(a, b) != 0) {
            report(fn, arg, "%s: %s -> %s", k->name, a, b);
            changes++;
        }
        free(a);
        free(b);
    }
    changes += diff_entries(old, now, old->databases, now->databases, offsetof(struct db_config, next), db_exact,
                            db_keys, NKEYS(db_keys), "databases", fn, arg);
    changes += diff_entries(old, now, old->users, now->users, offsetof(struct user_config, next), user_exact, user_keys,
                            NKEYS(user_keys), "users", fn, arg);
    return changes;
}

static const struct key *entry_table(enum config_entry_kind kind, size_t *n)
{
    *n = kind == CONFIG_DATABASE ? NKEYS(db_keys) : NKEYS(user_keys);
    return kind == CONFIG_DATABASE ? db_keys : user_keys;
}

bool config_show(enum config_entry_kind kind, const char *column, const void *entry, const struct config_settings *eff,
                 struct config_shown *out)
{
    /*
     * SHOW DATABASES asks for every column of every entry: what a column is
     * (a key, or none: a column of SHOW's own) is remembered by name.
     */
    static _Thread_local struct {
        char              column[32];
        const struct key *k; /* NULL: no key has this column */
    } seen[2][64];
    size_t            n, len = strlen(column), slot = (len * 31 + (unsigned char)column[0]) % 64;
    const struct key *table = entry_table(kind, &n), *k = NULL;
    const char       *at;
    int               which = kind == CONFIG_DATABASE ? 0 : 1;

    if (strcmp(seen[which][slot].column, column) == 0 && column[0] != '\0') {
        k = seen[which][slot].k;
    } else {
        for (size_t i = 0; i < n && k == NULL; i++)
            if (own_field(&table[i]) && table[i].column != NULL && strcmp(table[i].column, column) == 0) k = &table[i];
        if (len < sizeof(seen[which][slot].column)) {
            memcpy(seen[which][slot].column, column, len + 1);
            seen[which][slot].k = k;
        }
    }
    if (k == NULL) return false;
    out->type = SHOWN_NULL;
    if (k->flags & KF_OWN) {
        if (entry == NULL || !entry_sets(entry, k)) return true;
        at = (const char *)entry + k->offset;
    } else {
        at = (const char *)eff + k->res;
    }
    switch (k->type) {
    case KT_STR:
        out->text = *(const char *const *)(const void *)at;
        out->type = out->text != NULL ? SHOWN_TEXT : SHOWN_NULL;
        break;
    case KT_PORTS:
    case KT_INT:
        out->type = SHOWN_INT;
        out->i = *(const int *)(const void *)at;
        break;
    case KT_TIME:
        out->type = SHOWN_INT;
        out->i = *(const usec_t *)(const void *)at / USEC_PER_SEC;
        break;
    case KT_POOL_MODE:
        out->type = SHOWN_TEXT;
        out->text = config_pool_mode_name(*(const enum pool_mode *)(const void *)at);
        break;
    case KT_ENUM:
        out->type = SHOWN_TEXT;
        out->text = k->choices[*(const int *)(const void *)at];
        break;
    default: assert(!"config_show: a type no entry key has"); break;
    }
    return true;
}

bool config_entry_key(enum config_entry_kind kind, size_t i, const char **name, const char **column)
{
    size_t            n;
    const struct key *table = entry_table(kind, &n);

    for (size_t j = 0; j < n; j++) {
        if (!own_field(&table[j])) continue;
        if (i-- == 0) {
            *name = table[j].name;
            *column = table[j].column;
            return true;
        }
    }
    return false;
}
