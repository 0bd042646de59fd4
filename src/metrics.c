/*
 * metrics.c - GET /metrics: the pgbouncer_exporter's metrics and pgbun's own.
 *
 * The exporter's metrics come from the console's SHOW results (a rowset
 * sink), column by column as that exporter maps them, so that the endpoint,
 * the console and an exporter in front of the console agree; SHOW
 * STATS_TOTALS's are added up from the same pool counters as pgbun's own.
 * A scrape reads each part with the world stopped (worker.h), one part per
 * turn of worker 0's loop, then writes the text in slices (struct job).
 *
 * Each metric family gathers its samples in a buffer of its own while the
 * SHOW results are read row by row; the families are then written one after
 * another, each under its HELP and TYPE lines, as both formats require.
 */
#define LOG_EVENT LOGE_METRICS /* the event kind of this file's log lines (log.h) */
#include "metrics.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netdb.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "base64.h"
#include "config.h"
#include "hashtab.h"
#include "log.h"
#include "pgbun.h"
#include "pool.h"
#include "rowset.h"
#include "show.h"
#include "stats.h"
#include "worker.h"

#define MAX_SOCKETS     16
#define HEADERS_MAX     8192 /* a scraper's request headers; more is refused */
#define REQUEST_TIMEOUT 10   /* s: a connection that sends nothing for this long is closed */
#define BODY_MAX        4096 /* a request body (none is wanted): more gets 413 */
#define REQUEST_MAX_AGE 30   /* s: a connection whose request is not complete by then is shut down */
#define PENDING_MAX     16   /* connections whose request is not complete: the oldest beyond are shut down */

enum mtype { GAUGE, COUNTER, HISTOGRAM };

/* Every family, in the order they are written. */
enum fam {
    F_UP,
    F_VERSION,
    F_L_DATABASES,
    F_L_USERS,
    F_L_POOLS,
    F_L_FREE_CLIENTS,
    F_L_USED_CLIENTS,
    F_L_LOGIN_CLIENTS,
    F_L_FREE_SERVERS,
    F_L_USED_SERVERS,
    F_L_DNS_NAMES,
    F_L_DNS_ZONES,
    F_L_DNS_QUERIES,
    F_C_MAX_CLIENT,
    F_C_MAX_USER,
    F_CLIENTS,
    F_D_POOL_SIZE,
    F_D_RESERVE_POOL,
    F_D_MAX_CONNECTIONS,
    F_D_CURRENT_CONNECTIONS,
    F_D_PAUSED,
    F_D_DISABLED,
    F_S_QUERIES,
    F_S_QUERY_SECONDS,
    F_S_RECEIVED,
    F_S_SENT,
    F_S_WAIT_SECONDS,
    F_S_XACTS,
    F_S_XACT_SECONDS,
    F_S_CLIENT_PARSES,
    F_S_SERVER_PARSES,
    F_S_BINDS,
    F_S_ASSIGNMENTS,
    F_P_CL_ACTIVE,
    F_P_CL_ACTIVE_CANCEL,
    F_P_CL_WAITING,
    F_P_CL_WAITING_CANCEL,
    F_P_SV_ACTIVE,
    F_P_SV_ACTIVE_CANCEL,
    F_P_SV_BEING_CANCELED,
    F_P_SV_IDLE,
    F_P_SV_USED,
    F_P_SV_TESTED,
    F_P_SV_LOGIN,
    F_P_MAXWAIT,
    /* pgbun's own */
    F_QUERY_SECONDS,
    F_XACT_SECONDS,
    F_WAIT_SECONDS,
    F_ASSIGNMENTS,
    F_REUSED,
    F_REUSE_RATIO,
    F_MAX_SERVERS,
    F_CONNECTS,
    F_STMT_HITS,
    F_STMT_MISSES,
    F_REPLAYS,
    F_PINS,
    F_TLS_HANDSHAKES,
    F_TLS_FAILURES,
    F_AUTHQ_LOOKUPS,
    F_AUTHQ_FAILURES,
    F_WORKER_BUSY,
    F_SCRAPE_SECONDS,
    F_SCRAPE_STOPPED_SECONDS,
    F_SCRAPES,
    NFAMS
};

static const struct {
    const char *name;
    enum mtype  type;
    const char *help;
} fams[NFAMS] = {
    [F_UP] = {"pgbouncer_up", GAUGE, "The pgbouncer scrape succeeded"},
    [F_VERSION] = {"pgbouncer_version_info", GAUGE, "The pgbouncer version info"},
    [F_L_DATABASES] = {"pgbouncer_databases", GAUGE, "Count of databases"},
    [F_L_USERS] = {"pgbouncer_users", GAUGE, "Count of users"},
    [F_L_POOLS] = {"pgbouncer_pools", GAUGE, "Count of pools"},
    [F_L_FREE_CLIENTS] = {"pgbouncer_free_clients", GAUGE, "Count of free clients"},
    [F_L_USED_CLIENTS] = {"pgbouncer_used_clients", GAUGE, "Count of used clients"},
    [F_L_LOGIN_CLIENTS] = {"pgbouncer_login_clients", GAUGE, "Count of clients in login state"},
    [F_L_FREE_SERVERS] = {"pgbouncer_free_servers", GAUGE, "Count of free servers"},
    [F_L_USED_SERVERS] = {"pgbouncer_used_servers", GAUGE, "Count of used servers"},
    [F_L_DNS_NAMES] = {"pgbouncer_cached_dns_names", GAUGE, "Count of DNS names in the cache"},
    [F_L_DNS_ZONES] = {"pgbouncer_cached_dns_zones", GAUGE, "Count of DNS zones in the cache"},
    [F_L_DNS_QUERIES] = {"pgbouncer_in_flight_dns_queries", GAUGE, "Count of in-flight DNS queries"},
    [F_C_MAX_CLIENT] = {"pgbouncer_config_max_client_connections", GAUGE,
                        "Config maximum number of client connections"},
    [F_C_MAX_USER] = {"pgbouncer_config_max_user_connections", GAUGE,
                      "Config maximum number of server connections per user"},
    [F_CLIENTS] = {"pgbouncer_client_connections", GAUGE,
                   "Client connections by database, user, application and state"},
    [F_D_POOL_SIZE] = {"pgbouncer_databases_pool_size", GAUGE, "Maximum number of server connections"},
    [F_D_RESERVE_POOL] = {"pgbouncer_databases_reserve_pool", GAUGE,
                          "Maximum number of additional connections for this database"},
    [F_D_MAX_CONNECTIONS] = {"pgbouncer_databases_max_connections", GAUGE,
                             "Maximum number of allowed connections for this database"},
    [F_D_CURRENT_CONNECTIONS] = {"pgbouncer_databases_current_connections", GAUGE,
                                 "Current number of connections for this database"},
    [F_D_PAUSED] = {"pgbouncer_databases_paused", GAUGE, "1 if this database is currently paused, else 0"},
    [F_D_DISABLED] = {"pgbouncer_databases_disabled", GAUGE, "1 if this database is currently disabled, else 0"},
    [F_S_QUERIES] = {"pgbouncer_stats_totals_queries_pooled_total", COUNTER, "Total number of SQL queries pooled"},
    [F_S_QUERY_SECONDS] = {"pgbouncer_stats_totals_queries_duration_seconds_total", COUNTER,
                           "Total number of seconds spent by pgbouncer when actively connected to PostgreSQL, "
                           "executing queries"},
    [F_S_RECEIVED] = {"pgbouncer_stats_totals_received_bytes_total", COUNTER,
                      "Total volume in bytes of network traffic received by pgbouncer"},
    [F_S_SENT] = {"pgbouncer_stats_totals_sent_bytes_total", COUNTER,
                  "Total volume in bytes of network traffic sent by pgbouncer"},
    [F_S_WAIT_SECONDS] = {"pgbouncer_stats_totals_client_wait_seconds_total", COUNTER,
                          "Time spent by clients waiting for a server in seconds"},
    [F_S_XACTS] = {"pgbouncer_stats_totals_sql_transactions_pooled_total", COUNTER,
                   "Total number of SQL transactions pooled"},
    [F_S_XACT_SECONDS] = {"pgbouncer_stats_totals_server_in_transaction_seconds_total", COUNTER,
                          "Total number of seconds spent by pgbouncer when connected to PostgreSQL in a transaction, "
                          "either idle in transaction or executing queries"},
    [F_S_CLIENT_PARSES] = {"pgbouncer_stats_totals_client_parses_total", COUNTER,
                           "Total number of prepared statements created by clients"},
    [F_S_SERVER_PARSES] = {"pgbouncer_stats_totals_server_parses_total", COUNTER,
                           "Total number of prepared statements created on a server"},
    [F_S_BINDS] = {"pgbouncer_stats_totals_binds_total", COUNTER, "Total number of prepared statements readied"},
    [F_S_ASSIGNMENTS] = {"pgbouncer_stats_totals_server_assignments_total", COUNTER,
                         "Total number of times a server was assigned to a client"},
    [F_P_CL_ACTIVE] = {"pgbouncer_pools_client_active_connections", GAUGE,
                       "Client connections linked to server connection and able to process queries"},
    [F_P_CL_ACTIVE_CANCEL] = {"pgbouncer_pools_client_active_cancel_connections", GAUGE,
                              "Client connections that have forwarded query cancellations to the server and are "
                              "waiting for the server response"},
    [F_P_CL_WAITING] = {"pgbouncer_pools_client_waiting_connections", GAUGE,
                        "Client connections waiting on a server connection"},
    [F_P_CL_WAITING_CANCEL] = {"pgbouncer_pools_client_waiting_cancel_connections", GAUGE,
                               "Client connections that have not forwarded query cancellations to the server yet"},
    [F_P_SV_ACTIVE] = {"pgbouncer_pools_server_active_connections", GAUGE,
                       "Server connections linked to a client connection"},
    [F_P_SV_ACTIVE_CANCEL] = {"pgbouncer_pools_server_active_cancel_connections", GAUGE,
                              "Server connections that are currently forwarding a cancel request"},
    [F_P_SV_BEING_CANCELED] = {"pgbouncer_pools_server_being_canceled_connections", GAUGE,
                               "Servers that normally could become idle but are waiting to do so until all in-flight "
                               "cancel requests have completed that were sent to cancel a query on this server"},
    [F_P_SV_IDLE] = {"pgbouncer_pools_server_idle_connections", GAUGE,
                     "Server connections idle and ready for a client query"},
    [F_P_SV_USED] = {"pgbouncer_pools_server_used_connections", GAUGE,
                     "Server connections idle more than server_check_delay, needing server_check_query"},
    [F_P_SV_TESTED] = {"pgbouncer_pools_server_testing_connections", GAUGE,
                       "Server connections currently running either server_reset_query or server_check_query"},
    [F_P_SV_LOGIN] = {"pgbouncer_pools_server_login_connections", GAUGE,
                      "Server connections currently in the process of logging in"},
    [F_P_MAXWAIT] = {"pgbouncer_pools_client_maxwait_seconds", GAUGE,
                     "Age of oldest unserved client connection, shown as second"},
    [F_QUERY_SECONDS] = {"pgbun_query_duration_seconds", HISTOGRAM,
                         "Queries by how long PostgreSQL took to answer them (to ReadyForQuery)"},
    [F_XACT_SECONDS] = {"pgbun_transaction_duration_seconds", HISTOGRAM, "Transactions by how long they lasted"},
    [F_WAIT_SECONDS] = {"pgbun_client_wait_seconds", HISTOGRAM,
                        "Server assignments by how long the client waited for the server"},
    [F_ASSIGNMENTS] = {"pgbun_pool_server_assignments_total", COUNTER, "Times a client was given a server"},
    [F_REUSED] = {"pgbun_pool_server_assignments_reused_total", COUNTER,
                  "Times a client was given a server connection that was already open"},
    [F_REUSE_RATIO] = {"pgbun_pool_reuse_ratio", GAUGE,
                       "Share of server assignments that reused an open connection (0 before the first)"},
    [F_MAX_SERVERS] = {"pgbun_pool_max_server_connections_used", GAUGE,
                       "Most server connections the pool had open at once"},
    [F_CONNECTS] = {"pgbun_server_connects_total", COUNTER, "Server connections started"},
    [F_STMT_HITS] = {"pgbun_prepared_statement_cache_hits_total", COUNTER,
                     "Prepared statements a client used that its server already had"},
    [F_STMT_MISSES] = {"pgbun_prepared_statement_cache_misses_total", COUNTER,
                       "Prepared statements a client used that pgbun had to prepare on its server first"},
    [F_REPLAYS] = {"pgbun_session_state_replays_total", COUNTER,
                   "Times a client's session settings were applied to the server it was given"},
    [F_PINS] = {"pgbun_session_state_pins_total", COUNTER, "Times a client became pinned to its server"},
    [F_TLS_HANDSHAKES] = {"pgbun_tls_handshakes_total", COUNTER, "TLS handshakes completed, with clients and servers"},
    [F_TLS_FAILURES] = {"pgbun_tls_handshake_failures_total", COUNTER, "TLS handshakes that failed"},
    [F_AUTHQ_LOOKUPS] = {"pgbun_auth_query_lookups_total", COUNTER, "auth_query lookups run"},
    [F_AUTHQ_FAILURES] = {"pgbun_auth_query_lookup_failures_total", COUNTER, "auth_query lookups that failed"},
    [F_WORKER_BUSY] = {"pgbun_worker_busy_seconds_total", COUNTER,
                       "CPU time of each worker thread; its rate is the worker's utilisation"},
    [F_SCRAPE_SECONDS] = {"pgbun_metrics_scrape_duration_seconds", GAUGE,
                          "How long the last scrape took, from its request to its reply"},
    [F_SCRAPE_STOPPED_SECONDS] = {"pgbun_metrics_scrape_stopped_seconds", GAUGE,
                                  "How long the last scrape held the workers stopped to read the counters"},
    [F_SCRAPES] = {"pgbun_metrics_scrapes_total", COUNTER, "Scrapes answered"},
};

/* The text of one scrape being written. */
struct scrape {
    struct evbuffer *fam[NFAMS];
    struct evbuffer *scratch; /* label sets are made here */
    struct evbuffer *to;      /* what `pending` goes to */
    char             pending[4096];
    size_t           npending;
    bool             failed; /* out of memory */
};

/* ---- writing samples ---- */

/* Small pieces gather in sc->pending and reach their buffer a few KB at a time. */
static void flush(struct scrape *sc)
{
    if (sc->npending > 0 && evbuffer_add(sc->to, sc->pending, sc->npending) != 0) sc->failed = true;
    sc->npending = 0;
}

static void put(struct scrape *sc, struct evbuffer *b, const char *s, size_t n)
{
    if (b != sc->to) {
        flush(sc);
        sc->to = b;
    }
    if (sc->npending + n > sizeof(sc->pending)) {
        flush(sc);
        if (n > sizeof(sc->pending)) {
            if (evbuffer_add(b, s, n) != 0) sc->failed = true;
            return;
        }
    }
    memcpy(sc->pending + sc->npending, s, n);
    sc->npending += n;
}

static void put_str(struct scrape *sc, struct evbuffer *b, const char *s)
{
    put(sc, b, s, strlen(s));
}

static void put_u64(struct scrape *sc, struct evbuffer *b, uint64_t v)
{
    char  buf[24], *p = buf + sizeof(buf);
    char *end = p;

    do
        *--p = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    put(sc, b, p, (size_t)(end - p));
}

/* us as seconds, exactly: 1500 -> "0.0015". */
static void put_usec(struct scrape *sc, struct evbuffer *b, uint64_t us)
{
    char buf[32];
    int  n = snprintf(buf, sizeof(buf), "%llu.%06llu", (unsigned long long)(us / 1000000),
                      (unsigned long long)(us % 1000000));

    while (n > 2 && buf[n - 1] == '0' && buf[n - 2] != '.')
        n--;
    put(sc, b, buf, (size_t)n);
}

/* Bytes of a valid UTF-8 sequence at s (at most n), 0 when it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;

    if (s[0] < 0x80) return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4;
    else
        return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) || (s[0] == 0xf0 && s[1] < 0x90) ||
        (s[0] == 0xf4 && s[1] > 0x8f))
        return 0; /* overlong, a surrogate, or past U+10FFFF */
    return len;
}

/* A label value, escaped as both formats require; bytes that are not UTF-8 become U+FFFD. */
static void put_label_value(struct scrape *sc, struct evbuffer *b, const char *v)
{
    const unsigned char *s = (const unsigned char *)(v != NULL ? v : "");
    size_t               n = strlen((const char *)s);

    while (n > 0) {
        size_t len = utf8_len(s, n);

        if (len == 0)
            put_str(sc, b, "\xef\xbf\xbd");
        else if (*s == '\\')
            put_str(sc, b, "\\\\");
        else if (*s == '"')
            put_str(sc, b, "\\\"");
        else if (*s == '\n')
            put_str(sc, b, "\\n");
        else
            put(sc, b, (const char *)s, len);
        if (len == 0) len = 1;
        s += len;
        n -= len;
    }
}

/* {a="x",b="y"} for nlabels (name, value) pairs into b; nothing when there are none. */
static void put_labels(struct scrape *sc, struct evbuffer *b, const char *const *names, const char *const *values,
                       int nlabels)
{
    if (nlabels == 0) return;
    put_str(sc, b, "{");
    for (int i = 0; i < nlabels; i++) {
        if (i > 0) put_str(sc, b, ",");
        put_str(sc, b, names[i]);
        put_str(sc, b, "=\"");
        put_label_value(sc, b, values[i]);
        put_str(sc, b, "\"");
    }
    put_str(sc, b, "}");
}

/* "name{labels} " into family f: the value comes next. `labels` is made by put_labels (or NULL). */
static struct evbuffer *begin_sample(struct scrape *sc, enum fam f, const char *suffix, const char *labels)
{
    struct evbuffer *b = sc->fam[f];

    put_str(sc, b, fams[f].name);
    if (suffix != NULL) put_str(sc, b, suffix);
    if (labels != NULL) put_str(sc, b, labels);
    put_str(sc, b, " ");
    return b;
}

static void sample_u64(struct scrape *sc, enum fam f, const char *labels, uint64_t v)
{
    struct evbuffer *b = begin_sample(sc, f, NULL, labels);

    put_u64(sc, b, v);
    put_str(sc, b, "\n");
}

static void sample_text(struct scrape *sc, enum fam f, const char *labels, const char *v)
{
    struct evbuffer *b = begin_sample(sc, f, NULL, labels);

    put_str(sc, b, v);
    put_str(sc, b, "\n");
}

static void sample_usec(struct scrape *sc, enum fam f, const char *labels, uint64_t us)
{
    struct evbuffer *b = begin_sample(sc, f, NULL, labels);

    put_usec(sc, b, us);
    put_str(sc, b, "\n");
}

/* A label set as text, for several samples; "" when out of memory (sc->failed says so). */
struct labels {
    char *text;
};

static void labels_make(struct scrape *sc, struct labels *l, const char *const *names, const char *const *values, int n)
{
    struct evbuffer *b = sc->scratch;
    size_t           len;

    flush(sc);
    evbuffer_drain(b, evbuffer_get_length(b));
    put_labels(sc, b, names, values, n);
    flush(sc);
    len = evbuffer_get_length(b);
    if ((l->text = malloc(len + 1)) != NULL) {
        evbuffer_remove(b, l->text, len);
        l->text[len] = '\0';
    } else {
        sc->failed = true;
    }
}

static const char *labels_text(const struct labels *l)
{
    return l->text != NULL ? l->text : "";
}

/* ---- the exporter's metrics, from SHOW results ---- */

/* A column the exporter turns into a metric of the row's labels; times in us become seconds. */
struct column_map {
    const char *column;
    enum fam    fam;
    bool        usec;
};

/* One SHOW command read the exporter's way: its label columns, then the mapped ones. */
struct show_map {
    const char              *show;
    const char *const       *labels; /* NULL-terminated */
    const struct column_map *cols;
    int                      ncols;
};

static const char *const pool_labels[] = {"database", "user", NULL};
static const char *const databases_labels[] = {"name", "host", "port", "database", "force_user", "pool_mode", NULL};

/*
 * SHOW STATS_TOTALS's columns (the exporter's source of these) are each
 * database's pools' counters added up: they are added up here from the
 * same counters, in the pass over the pools that makes the histograms,
 * rather than read back from its text. Its column, then the counter.
 */
static const struct {
    const char *column;
    enum fam    fam;
    size_t      offset; /* in struct stats */
    bool        usec;
} totals_map[] = {
    {"query_count", F_S_QUERIES, offsetof(struct stats, query_count), false},
    {"query_time", F_S_QUERY_SECONDS, offsetof(struct stats, query_time), true},
    {"bytes_received", F_S_RECEIVED, offsetof(struct stats, bytes_in), false},
    {"bytes_sent", F_S_SENT, offsetof(struct stats, bytes_out), false},
    {"wait_time", F_S_WAIT_SECONDS, offsetof(struct stats, wait_time), true},
    {"xact_count", F_S_XACTS, offsetof(struct stats, xact_count), false},
    {"xact_time", F_S_XACT_SECONDS, offsetof(struct stats, xact_time), true},
    {"client_parse_count", F_S_CLIENT_PARSES, offsetof(struct stats, parse_count), false},
    {"server_parse_count", F_S_SERVER_PARSES, offsetof(struct stats, server_parse_count), false},
    {"bind_count", F_S_BINDS, offsetof(struct stats, bind_count), false},
    {"server_assignment_count", F_S_ASSIGNMENTS, offsetof(struct stats, assignments), false},
};
#define NTOTALS ((int)(sizeof(totals_map) / sizeof(totals_map[0])))

static const struct column_map pools_cols[] = {
    {"cl_active", F_P_CL_ACTIVE, false},
    {"cl_active_cancel_req", F_P_CL_ACTIVE_CANCEL, false},
    {"cl_waiting", F_P_CL_WAITING, false},
    {"cl_waiting_cancel_req", F_P_CL_WAITING_CANCEL, false},
    {"sv_active", F_P_SV_ACTIVE, false},
    {"sv_active_cancel", F_P_SV_ACTIVE_CANCEL, false},
    {"sv_being_canceled", F_P_SV_BEING_CANCELED, false},
    {"sv_idle", F_P_SV_IDLE, false},
    {"sv_used", F_P_SV_USED, false},
    {"sv_tested", F_P_SV_TESTED, false},
    {"sv_login", F_P_SV_LOGIN, false},
};

static const struct column_map databases_cols[] = {
    {"pool_size", F_D_POOL_SIZE, false},
    {"reserve_pool", F_D_RESERVE_POOL, false},
    {"reserve_pool_size", F_D_RESERVE_POOL, false}, /* PgBouncer 1.24's name of the same column */
    {"max_connections", F_D_MAX_CONNECTIONS, false},
    {"current_connections", F_D_CURRENT_CONNECTIONS, false},
    {"paused", F_D_PAUSED, false},
    {"disabled", F_D_DISABLED, false},
};

static const struct show_map show_maps[] = {
    {"databases", databases_labels, databases_cols, sizeof(databases_cols) / sizeof(databases_cols[0])},
    {"pools", pool_labels, pools_cols, sizeof(pools_cols) / sizeof(pools_cols[0])},
};

#define MAX_LABELS 8

/* Reading one SHOW's rows: column positions are found in the first row's header. */
struct reader {
    struct scrape         *sc;
    const struct show_map *map;
    int                    label_at[MAX_LABELS];
    int                    nlabels;
    int                    col_at[16];
    int                    maxwait_at, maxwait_us_at;
    bool                   resolved;
};

static int column_index(const struct rowset *rs, const char *name)
{
    for (int i = 0; i < rs->ncols; i++)
        if (strcmp(rs->cols[i].name, name) == 0) return i;
    return -1;
}

static void resolve(struct reader *r, const struct rowset *rs)
{
    r->nlabels = 0;
    for (int i = 0; r->map->labels[i] != NULL && i < MAX_LABELS; i++)
        r->label_at[r->nlabels++] = column_index(rs, r->map->labels[i]);
    for (int i = 0; i < r->map->ncols && i < (int)(sizeof(r->col_at) / sizeof(r->col_at[0])); i++)
        r->col_at[i] = column_index(rs, r->map->cols[i].column);
    r->maxwait_at = column_index(rs, "maxwait");
    r->maxwait_us_at = column_index(rs, "maxwait_us");
    r->resolved = true;
}

/* A cell as a number the exporter would read: digits, a sign, a point. */
static bool numeric(const char *v)
{
    char *end;

    if (v == NULL || *v == '\0') return false;
    errno = 0;
    (void)strtod(v, &end);
    return *end == '\0' && errno == 0;
}

static void mapped_row(void *arg, const struct rowset *rs, const char *const *cells)
{
    struct reader *r = arg;
    const char    *values[MAX_LABELS];
    struct labels  l;

    if (!r->resolved) resolve(r, rs);
    for (int i = 0; i < r->nlabels; i++)
        values[i] = r->label_at[i] >= 0 ? cells[r->label_at[i]] : NULL;
    labels_make(r->sc, &l, r->map->labels, values, r->nlabels);
    for (int i = 0; i < r->map->ncols; i++) {
        const struct column_map *m = &r->map->cols[i];
        const char              *v = r->col_at[i] >= 0 ? cells[r->col_at[i]] : NULL;

        if (!numeric(v)) continue; /* as the exporter: a missing column drops only its metric */
        if (m->usec)
            sample_usec(r->sc, m->fam, labels_text(&l), strtoull(v, NULL, 10));
        else
            sample_text(r->sc, m->fam, labels_text(&l), v);
    }
    if (r->maxwait_at >= 0 && numeric(cells[r->maxwait_at])) {
        uint64_t us = strtoull(cells[r->maxwait_at], NULL, 10) * 1000000;

        if (r->maxwait_us_at >= 0 && numeric(cells[r->maxwait_us_at]))
            us += strtoull(cells[r->maxwait_us_at], NULL, 10);
        sample_usec(r->sc, F_P_MAXWAIT, labels_text(&l), us);
    }
    free(l.text);
}

/* SHOW LISTS: one gauge per list the exporter knows. */
static void lists_row(void *arg, const struct rowset *rs, const char *const *cells)
{
    static const struct {
        const char *list;
        enum fam    fam;
    } lists[] = {
        {"databases", F_L_DATABASES},
        {"users", F_L_USERS},
        {"pools", F_L_POOLS},
        {"free_clients", F_L_FREE_CLIENTS},
        {"used_clients", F_L_USED_CLIENTS},
        {"login_clients", F_L_LOGIN_CLIENTS},
        {"free_servers", F_L_FREE_SERVERS},
        {"used_servers", F_L_USED_SERVERS},
        {"dns_names", F_L_DNS_NAMES},
        {"dns_zones", F_L_DNS_ZONES},
        {"dns_queries", F_L_DNS_QUERIES},
    };

    if (rs->ncols != 2 || cells[0] == NULL || !numeric(cells[1])) return;
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        if (strcmp(cells[0], lists[i].list) == 0) sample_text(arg, lists[i].fam, NULL, cells[1]);
}

/* SHOW CONFIG: the two limits the exporter reads. */
static void config_row(void *arg, const struct rowset *rs, const char *const *cells)
{
    if (rs->ncols < 2 || cells[0] == NULL || !numeric(cells[1])) return;
    if (strcmp(cells[0], "max_client_conn") == 0) sample_text(arg, F_C_MAX_CLIENT, NULL, cells[1]);
    if (strcmp(cells[0], "max_user_connections") == 0) sample_text(arg, F_C_MAX_USER, NULL, cells[1]);
}

/* SHOW CLIENTS, counted by database, user, application_name and state. */
struct client_count {
    UT_hash_handle hh;
    uint64_t       n;
    char           labels[]; /* the key */
};

struct client_reader {
    struct scrape       *sc;
    struct client_count *counts;
    int                  at[4];
    bool                 resolved;
};

static const char *const client_labels[] = {"database", "user", "application_name", "state"};

static void clients_row(void *arg, const struct rowset *rs, const char *const *cells)
{
    struct client_reader *r = arg;
    struct client_count  *e;
    const char           *values[4];
    struct labels         l;
    size_t                len;

    if (!r->resolved) {
        for (int i = 0; i < 4; i++)
            r->at[i] = column_index(rs, client_labels[i]);
        r->resolved = true;
    }
    for (int i = 0; i < 4; i++)
        values[i] = r->at[i] >= 0 ? cells[r->at[i]] : NULL;
    labels_make(r->sc, &l, client_labels, values, 4);
    if (l.text == NULL) return;
    len = strlen(l.text);
    HASH_FIND(hh, r->counts, l.text, len, e);
    if (e == NULL) {
        if ((e = malloc(sizeof(*e) + len + 1)) == NULL) {
            r->sc->failed = true;
            free(l.text);
            return;
        }
        e->n = 0;
        memcpy(e->labels, l.text, len + 1);
        HASH_ADD(hh, r->counts, labels, len, e);
        if (e->hh.tbl == NULL) {
            free(e);
            r->sc->failed = true;
            free(l.text);
            return;
        }
    }
    e->n++;
    free(l.text);
}

/* ---- the snapshot: what a scrape reads with the world stopped ---- */

/*
 * One SHOW's result, copied row by row by a rowset sink: each row is one
 * block, its cells' offsets (-1: NULL) and then their text.
 */
struct table {
    const struct col *cols;
    int               ncols;
    char            **rows;
    size_t            nrows, cap;
};

struct capture {
    struct table *t;
    bool          failed;
};

static void capture_row(void *arg, const struct rowset *rs, const char *const *cells)
{
    struct capture *c = arg;
    struct table   *t = c->t;
    size_t          head = (size_t)rs->ncols * sizeof(int32_t), len = head;
    char           *row;

    t->cols = rs->cols;
    t->ncols = rs->ncols;
    for (int i = 0; i < rs->ncols; i++)
        if (cells[i] != NULL) len += strlen(cells[i]) + 1;
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        char **grown = realloc(t->rows, cap * sizeof(*grown));

        if (grown == NULL) {
            c->failed = true;
            return;
        }
        t->rows = grown;
        t->cap = cap;
    }
    if ((row = malloc(len)) == NULL) {
        c->failed = true;
        return;
    }
    len = head;
    for (int i = 0; i < rs->ncols; i++) {
        int32_t off = -1;

        if (cells[i] != NULL) {
            size_t n = strlen(cells[i]) + 1;

            off = (int32_t)len;
            memcpy(row + len, cells[i], n);
            len += n;
        }
        memcpy(row + (size_t)i * sizeof(int32_t), &off, sizeof(off));
    }
    t->rows[t->nrows++] = row;
}

/* Row i's cells into cells[] (pointers into the row). */
static void table_cells(const struct table *t, size_t i, const char **cells)
{
    const char *row = t->rows[i];

    for (int k = 0; k < t->ncols; k++) {
        int32_t off;

        memcpy(&off, row + (size_t)k * sizeof(int32_t), sizeof(off));
        cells[k] = off < 0 ? NULL : row + off;
    }
}

static void table_free(struct table *t)
{
    for (size_t i = 0; i < t->nrows; i++)
        free(t->rows[i]);
    free(t->rows);
    memset(t, 0, sizeof(*t));
}

/* One pool of pgbun's own counters, every worker's added up. */
struct pool_snap {
    char    *dbname, *user;
    uint64_t assignments, reused, opened, hits, misses, replays, pins;
    int      peak;
};

/* One database's latency histograms, every pool of it added up. */
struct db_hist {
    UT_hash_handle hh;
    char          *name;
    uint64_t       prom[STATS_PROM_KINDS][STATS_PROM_BUCKETS];
    uint64_t       sum[STATS_PROM_KINDS]; /* us */
    uint64_t       totals[NTOTALS];       /* as totals_map names them */
};

/* The SHOW commands a scrape reads, in the order their metrics are written. */
enum { T_LISTS, T_CONFIG, T_CLIENTS, T_DATABASES, T_POOLS, NTABLES };
static const char *const table_show[NTABLES] = {"lists", "config", "clients", "databases", "pools"};

struct snapshot {
    struct table      tables[NTABLES];
    struct pool_snap *pools;
    size_t            npools;
    struct db_hist   *dbs; /* hash by name, in the order of their first pool */
    uint64_t          events[STATS_EV_KINDS];
    int64_t           worker_us[WORKERS_MAX]; /* -1: unknown */
    int               nworkers;
    bool              failed;
};

/* CPU time of worker w's thread in us, or -1 when it cannot be read. */
static int64_t worker_cpu(const struct worker *w)
{
    struct timespec ts;
    clockid_t       clk;

    if (w == worker_self)
        clk = CLOCK_THREAD_CPUTIME_ID;
    else if (!w->started || pthread_getcpuclockid(w->thread, &clk) != 0)
        return -1;
    if (clock_gettime(clk, &ts) != 0) return -1;
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool snap_pool(struct snapshot *sn, struct pool *p)
{
    static struct stats total; /* ~3 KiB: kept off the stack */
    struct pool_snap   *ps = &sn->pools[sn->npools];
    struct db_hist     *h;

    memset(&total, 0, sizeof(total));
    for (struct pool *q = p; q != NULL; q = pool_next_same(q))
        stats_add_counters(&total, &q->stats);
    if ((ps->dbname = strdup(p->dbname)) == NULL || (ps->user = strdup(p->user)) == NULL) {
        free(ps->dbname);
        ps->dbname = NULL;
        return false;
    }
    sn->npools++;
    ps->assignments = total.assignments;
    ps->reused = total.reused;
    ps->opened = total.servers_opened;
    ps->hits = total.stmt_hits;
    ps->misses = total.stmt_misses;
    ps->replays = total.replays;
    ps->pins = total.pins;
    ps->peak = pool_peak_servers(p);
    HASH_FIND_STR(sn->dbs, p->dbname, h);
    if (h == NULL) {
        if ((h = calloc(1, sizeof(*h))) == NULL || (h->name = strdup(p->dbname)) == NULL) {
            free(h);
            return false;
        }
        HASH_ADD_KEYPTR(hh, sn->dbs, h->name, strlen(h->name), h);
        if (h->hh.tbl == NULL) {
            free(h->name);
            free(h);
            return false;
        }
    }
    for (int k = 0; k < STATS_PROM_KINDS; k++)
        for (int i = 0; i < STATS_PROM_BUCKETS; i++)
            h->prom[k][i] += total.prom[k][i];
    h->sum[STATS_PROM_QUERY] += total.query_time;
    h->sum[STATS_PROM_XACT] += total.xact_time;
    h->sum[STATS_PROM_WAIT] += total.wait_time;
    for (int i = 0; i < NTOTALS; i++)
        h->totals[i] += *(const uint64_t *)(const void *)((const char *)&total + totals_map[i].offset);
    return true;
}

/*
 * Each part of a scrape is read with the world stopped (copies only: the
 * text comes later), one part per turn of the loop, so that the workers
 * stop for one SHOW's worth of rows at a time. The stops add up in
 * last_stopped_len.
 */
static usec_t last_stopped_len; /* us: how long the last scrape held the workers stopped */

static void stop_world(usec_t *since)
{
    *since = pgbun_now();
    worker_stop_world();
}

static void start_world(usec_t since, usec_t *stopped)
{
    worker_start_world();
    *stopped += pgbun_now() - since;
}

/* One SHOW command's rows, copied. */
static void snapshot_table(struct snapshot *sn, int t, usec_t *stopped)
{
    struct capture c = {.t = &sn->tables[t]};
    struct rowset  rs;
    usec_t         since;

    rowset_init_sink(&rs, capture_row, &c);
    stop_world(&since);
    if (!show_run(table_show[t], &rs, NULL) || rs.failed || c.failed) sn->failed = true;
    start_world(since, stopped);
    rowset_deinit(&rs);
}

/* pgbun's own counters: the pools', the process's, the workers'. */
static void snapshot_own(struct snapshot *sn, usec_t *stopped)
{
    size_t npools = 0;
    usec_t since;

    stop_world(&since);
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p))
        npools++;
    if ((sn->pools = calloc(npools + 1, sizeof(*sn->pools))) == NULL) {
        sn->failed = true;
        start_world(since, stopped);
        return;
    }
    for (struct pool *p = pool_first(); p != NULL && !sn->failed; p = pool_next(p))
        if (!pool_seen(p) && !snap_pool(sn, p)) sn->failed = true;
    for (int i = 0; i < STATS_EV_KINDS; i++)
        sn->events[i] = stats_event_count((enum stats_event)i);
    sn->nworkers = worker_count();
    for (int i = 0; i < sn->nworkers; i++)
        sn->worker_us[i] = worker_cpu(worker_get(i));
    start_world(since, stopped);
}

static void snapshot_free(struct snapshot *sn)
{
    struct db_hist *h, *tmp;

    for (int i = 0; i < NTABLES; i++)
        table_free(&sn->tables[i]);
    for (size_t i = 0; i < sn->npools; i++) {
        free(sn->pools[i].dbname);
        free(sn->pools[i].user);
    }
    free(sn->pools);
    HASH_ITER(hh, sn->dbs, h, tmp)
    {
        HASH_DEL(sn->dbs, h);
        free(h->name);
        free(h);
    }
    memset(sn, 0, sizeof(*sn));
}

/* ---- pgbun's own ---- */

/* The bounds as exact decimal seconds (100 us is "0.0001"), then "+Inf". */
static char bound_text[STATS_PROM_BUCKETS][24];

static void make_bound_text(void)
{
    for (int i = 0; i < STATS_PROM_BOUNDS; i++) {
        usec_t us = stats_prom_bounds[i];
        int    n = snprintf(bound_text[i], sizeof(bound_text[i]), "%lld.%06lld", (long long)(us / 1000000),
                            (long long)(us % 1000000));

        while (n > 2 && bound_text[i][n - 1] == '0' && bound_text[i][n - 2] != '.')
            bound_text[i][--n] = '\0';
    }
    snprintf(bound_text[STATS_PROM_BOUNDS], sizeof(bound_text[0]), "+Inf");
}

/* `db` is the label set {database="..."}: each bucket adds its le before the closing brace. */
static void put_histogram(struct scrape *sc, enum fam f, const char *db, const struct db_hist *h, enum stats_prom kind)
{
    struct evbuffer *b = sc->fam[f];
    size_t           open = strlen(db) - 1;
    uint64_t         cum = 0;

    for (int i = 0; i < STATS_PROM_BUCKETS; i++) {
        cum += h->prom[kind][i];
        put_str(sc, b, fams[f].name);
        put_str(sc, b, "_bucket");
        put(sc, b, db, open);
        put_str(sc, b, ",le=\"");
        put_str(sc, b, bound_text[i]);
        put_str(sc, b, "\"} ");
        put_u64(sc, b, cum);
        put_str(sc, b, "\n");
    }
    put_usec(sc, begin_sample(sc, f, "_sum", db), h->sum[kind]);
    put_str(sc, b, "\n");
    put_u64(sc, begin_sample(sc, f, "_count", db), cum);
    put_str(sc, b, "\n");
}

static void write_pool(struct scrape *sc, const struct pool_snap *ps)
{
    const char *const names[] = {"database", "user"};
    const char *const values[] = {ps->dbname, ps->user};
    char              ratio[32];
    struct labels     l;

    labels_make(sc, &l, names, values, 2);
    sample_u64(sc, F_ASSIGNMENTS, labels_text(&l), ps->assignments);
    sample_u64(sc, F_REUSED, labels_text(&l), ps->reused);
    snprintf(ratio, sizeof(ratio), "%.6g", ps->assignments ? (double)ps->reused / (double)ps->assignments : 0.0);
    sample_text(sc, F_REUSE_RATIO, labels_text(&l), ratio);
    sample_u64(sc, F_MAX_SERVERS, labels_text(&l), (uint64_t)ps->peak);
    sample_u64(sc, F_CONNECTS, labels_text(&l), ps->opened);
    sample_u64(sc, F_STMT_HITS, labels_text(&l), ps->hits);
    sample_u64(sc, F_STMT_MISSES, labels_text(&l), ps->misses);
    sample_u64(sc, F_REPLAYS, labels_text(&l), ps->replays);
    sample_u64(sc, F_PINS, labels_text(&l), ps->pins);
    free(l.text);
}

static bool observed(const struct db_hist *h, enum stats_prom kind)
{
    for (int i = 0; i < STATS_PROM_BUCKETS; i++)
        if (h->prom[kind][i] != 0) return true;
    return false;
}

/* A database's SHOW STATS_TOTALS metrics and its histograms. */
static void write_database(struct scrape *sc, const struct db_hist *h)
{
    const char *const names[] = {"database"};
    const char *const values[] = {h->name};
    struct labels     l;

    labels_make(sc, &l, names, values, 1);
    for (int i = 0; i < NTOTALS && l.text != NULL; i++) {
        if (totals_map[i].usec)
            sample_usec(sc, totals_map[i].fam, l.text, h->totals[i]);
        else
            sample_u64(sc, totals_map[i].fam, l.text, h->totals[i]);
    }
    /* As a client library's histogram with labels: a database's series appear with its first observation. */
    if (l.text != NULL) {
        if (observed(h, STATS_PROM_QUERY)) put_histogram(sc, F_QUERY_SECONDS, l.text, h, STATS_PROM_QUERY);
        if (observed(h, STATS_PROM_XACT)) put_histogram(sc, F_XACT_SECONDS, l.text, h, STATS_PROM_XACT);
        if (observed(h, STATS_PROM_WAIT)) put_histogram(sc, F_WAIT_SECONDS, l.text, h, STATS_PROM_WAIT);
    }
    free(l.text);
}

static void sample_side(struct scrape *sc, enum fam f, const char *side, uint64_t v)
{
    const char *const names[] = {"side"};
    const char *const values[] = {side};
    struct labels     l;

    labels_make(sc, &l, names, values, 1);
    sample_u64(sc, f, labels_text(&l), v);
    free(l.text);
}

static usec_t   last_scrape_len; /* us: how long the previous scrape took, request to reply */
static uint64_t scrapes;

static void write_process(struct scrape *sc, const struct snapshot *sn)
{
    sample_side(sc, F_TLS_HANDSHAKES, "client", sn->events[STATS_EV_TLS_CLIENT_HANDSHAKE]);
    sample_side(sc, F_TLS_HANDSHAKES, "server", sn->events[STATS_EV_TLS_SERVER_HANDSHAKE]);
    sample_side(sc, F_TLS_FAILURES, "client", sn->events[STATS_EV_TLS_CLIENT_FAILURE]);
    sample_side(sc, F_TLS_FAILURES, "server", sn->events[STATS_EV_TLS_SERVER_FAILURE]);
    sample_u64(sc, F_AUTHQ_LOOKUPS, NULL, sn->events[STATS_EV_AUTHQ_LOOKUP]);
    sample_u64(sc, F_AUTHQ_FAILURES, NULL, sn->events[STATS_EV_AUTHQ_FAILURE]);
    for (int i = 0; i < sn->nworkers; i++) {
        const char *const names[] = {"worker"};
        char              id[16];
        const char       *values[] = {id};
        struct labels     l;

        if (sn->worker_us[i] < 0) continue;
        snprintf(id, sizeof(id), "%d", i);
        labels_make(sc, &l, names, values, 1);
        sample_usec(sc, F_WORKER_BUSY, labels_text(&l), (uint64_t)sn->worker_us[i]);
        free(l.text);
    }
    sample_usec(sc, F_SCRAPE_SECONDS, NULL, (uint64_t)last_scrape_len);
    sample_usec(sc, F_SCRAPE_STOPPED_SECONDS, NULL, (uint64_t)last_stopped_len);
    sample_u64(sc, F_SCRAPES, NULL, scrapes);
}

/*
 * A scrape in progress. The text is written a slice of rows at a time, each
 * slice a callback of its own on worker 0's loop, so that with many pools
 * the clients of that loop are served between slices.
 */
#define SLICE_ROWS 128

struct job {
    TAILQ_ENTRY(job) entry;
    struct evhttp_request *req;
    bool                   openmetrics, head;
    usec_t                 began;
    struct event          *ev;
    struct snapshot        sn;
    struct scrape          sc;
    int                    stage;   /* a table (T_*), then the pools, the histograms, the rest */
    bool                   read;    /* the stage's part of the snapshot is taken */
    size_t                 at;      /* the next row of the stage */
    usec_t                 stopped; /* how long its snapshots held the workers stopped */
    struct db_hist        *hist;    /* the next database of the histograms */
    struct reader          rd;
    struct client_reader   cr;
};

enum { STAGE_POOLS = NTABLES, STAGE_HIST, STAGE_DONE };

static TAILQ_HEAD(, job) jobs = TAILQ_HEAD_INITIALIZER(jobs);

static void job_free(struct job *j)
{
    struct client_count *e, *tmp;

    TAILQ_REMOVE(&jobs, j, entry);
    if (j->ev != NULL) event_free(j->ev);
    snapshot_free(&j->sn);
    for (int f = 0; f < NFAMS; f++)
        if (j->sc.fam[f] != NULL) evbuffer_free(j->sc.fam[f]);
    if (j->sc.scratch != NULL) evbuffer_free(j->sc.scratch);
    HASH_ITER(hh, j->cr.counts, e, tmp)
    {
        HASH_DEL(j->cr.counts, e);
        free(e);
    }
    free(j);
}

/* Row i of a table through the reader the exporter's mapping of that SHOW needs. */
static void write_row(struct job *j, int t, size_t i)
{
    const struct table *tab = &j->sn.tables[t];
    const char         *cells[ROWSET_MAX_COLS];
    struct rowset       rs = {.cols = tab->cols, .ncols = tab->ncols};

    table_cells(tab, i, cells);
    switch (t) {
    case T_LISTS: lists_row(&j->sc, &rs, cells); break;
    case T_CONFIG: config_row(&j->sc, &rs, cells); break;
    case T_CLIENTS: clients_row(&j->cr, &rs, cells); break;
    default: mapped_row(&j->rd, &rs, cells); break;
    }
}

/* A mapped table begins: its reader starts afresh. */
static void begin_table(struct job *j, int t)
{
    static const int map_of[NTABLES] = {[T_DATABASES] = 0, [T_POOLS] = 1};

    memset(&j->rd, 0, sizeof(j->rd));
    j->rd.sc = &j->sc;
    if (t == T_DATABASES || t == T_POOLS) j->rd.map = &show_maps[map_of[t]];
}

/* Counted clients, written once SHOW CLIENTS has been read. */
static void write_clients(struct job *j)
{
    struct client_count *e, *tmp;

    HASH_ITER(hh, j->cr.counts, e, tmp)
    {
        sample_u64(&j->sc, F_CLIENTS, e->labels, e->n);
        HASH_DEL(j->cr.counts, e);
        free(e);
    }
}

/* Writes up to SLICE_ROWS rows; true when everything is written. */
static bool write_slice(struct job *j)
{
    int budget = SLICE_ROWS;

    while (budget > 0 && j->stage != STAGE_DONE && !j->sc.failed && !j->sn.failed) {
        if (!j->read && j->stage <= STAGE_POOLS) {
            /* A snapshot takes a turn of its own. */
            if (budget < SLICE_ROWS) break;
            if (j->stage < NTABLES)
                snapshot_table(&j->sn, j->stage, &j->stopped);
            else
                snapshot_own(&j->sn, &j->stopped);
            j->read = true;
            break;
        }
        if (j->stage < NTABLES) {
            struct table *tab = &j->sn.tables[j->stage];

            if (j->at == 0) begin_table(j, j->stage);
            for (; j->at < tab->nrows && budget > 0; j->at++, budget--)
                write_row(j, j->stage, j->at);
            if (j->at < tab->nrows) break;
            if (j->stage == T_CLIENTS) write_clients(j);
            table_free(tab);
        } else if (j->stage == STAGE_POOLS) {
            for (; j->at < j->sn.npools && budget > 0; j->at++, budget--)
                write_pool(&j->sc, &j->sn.pools[j->at]);
            if (j->at < j->sn.npools) break;
            j->hist = j->sn.dbs;
        } else if (j->stage == STAGE_HIST) {
            for (; j->hist != NULL && budget > 0; j->hist = j->hist->hh.next, budget -= 8)
                write_database(&j->sc, j->hist);
            if (j->hist != NULL) break;
            last_stopped_len = j->stopped;
            write_process(&j->sc, &j->sn);
        }
        j->stage++;
        j->read = false;
        j->at = 0;
    }
    return j->stage == STAGE_DONE || j->sc.failed || j->sn.failed;
}

/* The families one after another into out, each under its HELP and TYPE. */
static bool assemble(struct scrape *sc, struct evbuffer *out, bool openmetrics)
{
    flush(sc);
    for (int f = 0; f < NFAMS && !sc->failed; f++) {
        const char *name = fams[f].name;
        size_t      len = strlen(name);
        const char *type = fams[f].type == GAUGE ? "gauge" : fams[f].type == COUNTER ? "counter" : "histogram";

        if (evbuffer_get_length(sc->fam[f]) == 0) continue;
        /* OpenMetrics names a counter's family without the _total of its samples. */
        if (openmetrics && fams[f].type == COUNTER && len > 6 && strcmp(name + len - 6, "_total") == 0) len -= 6;
        if (evbuffer_add_printf(out, "# HELP %.*s %s\n# TYPE %.*s %s\n", (int)len, name, fams[f].help, (int)len, name,
                                type) < 0 ||
            evbuffer_add_buffer(out, sc->fam[f]) != 0)
            sc->failed = true;
    }
    if (openmetrics && !sc->failed && evbuffer_add(out, "# EOF\n", 6) != 0) sc->failed = true;
    return !sc->failed;
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text);

static void finish(struct job *j)
{
    struct evbuffer *out = evbuffer_new();

    if (out == NULL || j->sc.failed || j->sn.failed || !assemble(&j->sc, out, j->openmetrics)) {
        reply_text(j->req, HTTP_INTERNAL, "Internal Server Error", "out of memory");
    } else {
        last_scrape_len = pgbun_now() - j->began;
        log_debug("metrics: a scrape of %zu bytes in %.3f ms, the workers stopped for %.3f ms",
                  evbuffer_get_length(out), (double)last_scrape_len / 1000, (double)last_stopped_len / 1000);
        evhttp_add_header(evhttp_request_get_output_headers(j->req), "Content-Type",
                          j->openmetrics ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                                         : "text/plain; version=0.0.4; charset=utf-8");
        evhttp_add_header(evhttp_request_get_output_headers(j->req), "Connection", "close");
        evhttp_send_reply(j->req, HTTP_OK, "OK", j->head ? NULL : out);
    }
    if (out != NULL) evbuffer_free(out);
    job_free(j);
}

static void slice_cb(evutil_socket_t fd, short what, void *arg)
{
    struct job           *j = arg;
    static struct timeval zero = {0, 0};

    (void)fd, (void)what;
    if (!write_slice(j)) {
        evtimer_add(j->ev, &zero); /* the loop serves its clients first */
        return;
    }
    finish(j);
}

/* A scrape begins: the snapshot now, the text in slices from the next turn of the loop. */
static void start_job(struct evhttp_request *req, bool openmetrics, bool head)
{
    struct job           *j = calloc(1, sizeof(*j));
    static struct timeval zero = {0, 0};

    if (j == NULL) {
        reply_text(req, HTTP_INTERNAL, "Internal Server Error", "out of memory");
        return;
    }
    TAILQ_INSERT_TAIL(&jobs, j, entry);
    j->req = req;
    j->openmetrics = openmetrics;
    j->head = head;
    j->began = pgbun_now();
    j->cr.sc = &j->sc;
    if ((j->ev = evtimer_new(worker_get(0)->base, slice_cb, j)) == NULL || (j->sc.scratch = evbuffer_new()) == NULL)
        j->sc.failed = true;
    for (int f = 0; f < NFAMS; f++)
        if ((j->sc.fam[f] = evbuffer_new()) == NULL) j->sc.failed = true;
    if (j->sc.failed) {
        finish(j);
        return;
    }
    scrapes++;
    sample_u64(&j->sc, F_UP, NULL, 1);
    {
        const char *const names[] = {"version"};
        const char *const values[] = {"pgbun " PGBUN_VERSION}; /* SHOW VERSION's text, which the exporter passes on */
        struct labels     l;

        labels_make(&j->sc, &l, names, values, 1);
        sample_u64(&j->sc, F_VERSION, labels_text(&l), 1);
        free(l.text);
    }
    evtimer_add(j->ev, &zero);
}

/* ---- HTTP ---- */

/*
 * evhttp's own timeout is one of inactivity, which a client sending a byte
 * now and then never meets, and it takes any number of connections. Each
 * connection's buffer is made here (evhttp_set_bevcb) and held by a
 * reference of ours; a connection is `served` once its request is complete
 * (request_cb). Every second a sweep shuts down the socket of one that has
 * not completed its request within REQUEST_MAX_AGE, and of the oldest past
 * PENDING_MAX such connections (evhttp sees the end and frees it), and lets
 * go of those evhttp has freed (bufferevent_free clears their callbacks).
 * Every reply says Connection: close: one request per connection.
 */
struct conn {
    struct bufferevent *bev;
    usec_t              since;
    bool                served;
};

struct endpoint {
    struct evhttp         *http;
    struct evconnlistener *lev[MAX_SOCKETS];
    int                    nlev;
    char                  *unix_paths[MAX_SOCKETS];
    int                    nunix;
    struct event          *resume; /* accepting again after running out of descriptors */
    struct conn           *conns;  /* oldest first */
    size_t                 nconns, cap;
    struct event          *sweep;
};

static struct endpoint ep;
static bool            started; /* metrics_start ran: RELOADs apply from then on */

/* The Authorization header names a user of metrics_auth_users with its auth_file password. */
static bool authorized(struct evhttp_request *req)
{
    const char          *users = pgbun.cfg->metrics_auth_users;
    const char          *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    const struct secret *s;
    uint8_t              dec[512];
    size_t               n;
    char                *colon;
    bool                 ok;

    if (users == NULL || users[0] == '\0') return true;
    if (h == NULL || strncasecmp(h, "Basic ", 6) != 0) return false;
    h += 6;
    while (*h == ' ')
        h++;
    if (!base64_decode(h, strlen(h), dec, sizeof(dec) - 1, &n)) return false;
    dec[n] = '\0';
    if (memchr(dec, '\0', n) != NULL || (colon = strchr((char *)dec, ':')) == NULL) return false;
    *colon = '\0';
    ok = config_list_has(users, (const char *)dec) && pgbun.auth != NULL &&
         (s = auth_file_find(pgbun.auth, (const char *)dec)) != NULL && auth_check_plain(s, colon + 1);
    explicit_bzero(dec, sizeof(dec));
    return ok;
}

static struct bufferevent *new_conn(struct event_base *base, void *arg)
{
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);

    (void)arg;
    if (bev == NULL) return NULL; /* evhttp makes one of its own, untracked */
    if (ep.nconns == ep.cap) {
        size_t       cap = ep.cap ? ep.cap * 2 : 16;
        struct conn *grown = realloc(ep.conns, cap * sizeof(*grown));

        if (grown == NULL) return bev;
        ep.conns = grown;
        ep.cap = cap;
    }
    bufferevent_incref(bev);
    ep.conns[ep.nconns++] = (struct conn){bev, pgbun_now(), false};
    return bev;
}

static bool conn_freed(struct bufferevent *bev)
{
    bufferevent_data_cb rd;

    bufferevent_getcb(bev, &rd, NULL, NULL, NULL);
    return rd == NULL;
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    usec_t now = pgbun_now();
    size_t pending = 0, kept = 0, evict;

    (void)fd, (void)what, (void)arg;
    for (size_t i = 0; i < ep.nconns; i++)
        if (!ep.conns[i].served && !conn_freed(ep.conns[i].bev)) pending++;
    evict = pending > PENDING_MAX ? pending - PENDING_MAX : 0;
    for (size_t i = 0; i < ep.nconns; i++) {
        struct conn *c = &ep.conns[i];

        if (conn_freed(c->bev)) {
            bufferevent_decref(c->bev);
            continue;
        }
        if (!c->served && (now - c->since > (usec_t)REQUEST_MAX_AGE * USEC_PER_SEC || evict > 0)) {
            if (evict > 0) evict--;
            if (bufferevent_getfd(c->bev) >= 0) shutdown(bufferevent_getfd(c->bev), SHUT_RDWR);
        }
        ep.conns[kept++] = *c;
    }
    ep.nconns = kept;
}

/* The request of req's connection is complete: the sweep leaves it alone. */
static void served(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent       *bev = evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;

    for (size_t i = ep.nconns; bev != NULL && i-- > 0;)
        if (ep.conns[i].bev == bev) {
            ep.conns[i].served = true;
            return;
        }
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
    struct evbuffer *b = evbuffer_new();

    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; charset=utf-8");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    if (b != NULL) evbuffer_add_printf(b, "%s\n", text);
    evhttp_send_reply(req, code, reason, b);
    if (b != NULL) evbuffer_free(b);
}

static bool wants_openmetrics(struct evhttp_request *req)
{
    const char *accept = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");

    return accept != NULL && strstr(accept, "application/openmetrics-text") != NULL;
}

static void request_cb(struct evhttp_request *req, void *arg)
{
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    const char          *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));

    (void)arg;
    served(req);
    if (path == NULL || strcmp(path, "/metrics") != 0) {
        reply_text(req, HTTP_NOTFOUND, "Not Found", "pgbun serves /metrics only");
        return;
    }
    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_text(req, 405, "Method Not Allowed", "use GET");
        return;
    }
    if (!authorized(req)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Basic realm=\"pgbun\", charset=\"UTF-8\"");
        reply_text(req, 401, "Unauthorized", "authentication required");
        return;
    }
    start_job(req, wants_openmetrics(req), method == EVHTTP_REQ_HEAD);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    for (int i = 0; i < ep.nlev; i++)
        evconnlistener_enable(ep.lev[i]);
}

/* Accepting failed (out of file descriptors): stop for a second rather than spin, and say so once. */
static void accept_error_cb(struct evconnlistener *lev, void *arg)
{
    struct timeval one = {1, 0};

    (void)arg;
    if (ep.resume != NULL && evtimer_pending(ep.resume, NULL)) {
        evconnlistener_disable(lev);
        return;
    }
    log_warning("metrics endpoint: accept failed: %s; trying again in a second", strerror(errno));
    for (int i = 0; i < ep.nlev; i++)
        evconnlistener_disable(ep.lev[i]);
    if (ep.resume == NULL) ep.resume = evtimer_new(evconnlistener_get_base(lev), resume_cb, NULL);
    if (ep.resume != NULL) evtimer_add(ep.resume, &one);
}

static bool serve_fd(int fd, const char *what, char **err)
{
    struct evhttp_bound_socket *bs;

    evutil_make_socket_nonblocking(fd);
    if (ep.nlev == MAX_SOCKETS) {
        if (asprintf(err, "metrics endpoint: too many addresses (at most %d)", MAX_SOCKETS) < 0) *err = NULL;
        close(fd);
        return false;
    }
    if (listen(fd, 128) != 0 || (bs = evhttp_accept_socket_with_handle(ep.http, fd)) == NULL) {
        if (asprintf(err, "metrics endpoint: could not listen on %s: %s", what, strerror(errno)) < 0) *err = NULL;
        close(fd);
        return false;
    }
    ep.lev[ep.nlev++] = evhttp_bound_socket_get_listener(bs);
    evconnlistener_set_error_cb(ep.lev[ep.nlev - 1], accept_error_cb);
    log_info("metrics endpoint listening on %s", what);
    return true;
}

static bool listen_unix(const char *path, int mode, char **err)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    int                fd;

    if (ep.nunix == MAX_SOCKETS || strlen(path) >= sizeof(un.sun_path)) {
        if (asprintf(err, "metrics_listen_addr: \"%s\" is too long a socket path", path) < 0) *err = NULL;
        return false;
    }
    memcpy(un.sun_path, path, strlen(path) + 1);
    /* A socket file nobody answers on is left over from a crash: remove it. */
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0) {
        if (connect(fd, (struct sockaddr *)&un, sizeof(un)) == 0) {
            close(fd);
            if (asprintf(err, "metrics endpoint: another server is already listening on %s", path) < 0) *err = NULL;
            return false;
        }
        close(fd);
        if (errno == ECONNREFUSED) unlink(path);
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 || bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0) {
        if (asprintf(err, "metrics endpoint: could not bind unix socket %s: %s", path, strerror(errno)) < 0)
            *err = NULL;
        if (fd >= 0) close(fd);
        return false;
    }
    chmod(path, (mode_t)mode);
    if ((ep.unix_paths[ep.nunix] = strdup(path)) == NULL) {
        unlink(path);
        close(fd);
        *err = NULL;
        return false;
    }
    ep.nunix++;
    return serve_fd(fd, path, err);
}

static bool listen_tcp(const char *host, int port, char **err)
{
    struct addrinfo  hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res, *ai;
    char             sport[16];
    int              rc;

    snprintf(sport, sizeof(sport), "%d", port);
    if ((rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, sport, &hints, &res)) != 0) {
        if (asprintf(err, "metrics_listen_addr \"%s\": %s", host, gai_strerror(rc)) < 0) *err = NULL;
        return false;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        char what[128], name[64] = "";
        int  on = 1, fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);

        getnameinfo(ai->ai_addr, ai->ai_addrlen, name, sizeof(name), NULL, 0, NI_NUMERICHOST);
        snprintf(what, sizeof(what), ai->ai_family == AF_INET6 ? "[%s]:%d" : "%s:%d", name, port);
        if (fd < 0) {
            if (asprintf(err, "metrics endpoint: could not create a socket for %s: %s", what, strerror(errno)) < 0)
                *err = NULL;
            freeaddrinfo(res);
            return false;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            if (asprintf(err, "metrics endpoint: could not bind %s: %s", what, strerror(errno)) < 0) *err = NULL;
            close(fd);
            freeaddrinfo(res);
            return false;
        }
        if (!serve_fd(fd, what, err)) {
            freeaddrinfo(res);
            return false;
        }
    }
    freeaddrinfo(res);
    return true;
}

bool metrics_start(const struct pgbun_config *cfg, char **err)
{
    const char *addr = cfg->metrics_listen_addr != NULL ? cfg->metrics_listen_addr : "";
    char       *list, *tok, *save = NULL;
    bool        ok = true;

    *err = NULL;
    started = true;
    if (cfg->metrics_listen_port == 0) return true;
    if (bound_text[0][0] == '\0') make_bound_text();
    if ((ep.http = evhttp_new(worker_get(0)->base)) == NULL || (list = strdup(addr)) == NULL) {
        metrics_stop();
        return false;
    }
    evhttp_set_gencb(ep.http, request_cb, NULL);
    evhttp_set_bevcb(ep.http, new_conn, NULL);
    if ((ep.sweep = event_new(worker_get(0)->base, -1, EV_PERSIST, sweep_cb, NULL)) == NULL ||
        event_add(ep.sweep, &(struct timeval){1, 0}) != 0) {
        free(list);
        metrics_stop();
        return false;
    }
    evhttp_set_allowed_methods(ep.http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_max_headers_size(ep.http, HEADERS_MAX);
    evhttp_set_max_body_size(ep.http, BODY_MAX); /* read, then refused with 405: a body is never wanted */
    evhttp_set_timeout(ep.http, REQUEST_TIMEOUT);
    for (tok = strtok_r(list, ", ", &save); tok != NULL && ok; tok = strtok_r(NULL, ", ", &save))
        ok = tok[0] == '/' ? listen_unix(tok, cfg->unix_socket_mode, err)
                           : listen_tcp(tok, cfg->metrics_listen_port, err);
    free(list);
    if (ok && ep.nunix == 0 && addr[strspn(addr, ", ")] == '\0') {
        ok = false;
        *err = strdup("metrics_listen_port is set but metrics_listen_addr is empty");
    }
    if (!ok) metrics_stop();
    return ok;
}

void metrics_apply(const struct pgbun_config *old, const struct pgbun_config *cfg)
{
    const char *was = old->metrics_listen_addr != NULL ? old->metrics_listen_addr : "";
    const char *now = cfg->metrics_listen_addr != NULL ? cfg->metrics_listen_addr : "";
    char       *err = NULL;

    if (!started) return;
    if (old->metrics_listen_port == cfg->metrics_listen_port && strcmp(was, now) == 0 &&
        old->unix_socket_mode == cfg->unix_socket_mode && (ep.http != NULL) == (cfg->metrics_listen_port != 0))
        return;
    metrics_stop();
    if (!metrics_start(cfg, &err)) {
        log_error("%s; the metrics endpoint is off", err != NULL ? err : "metrics endpoint: out of memory");
        free(err);
        return;
    }
    if (cfg->metrics_listen_port == 0 && old->metrics_listen_port != 0) log_info("metrics endpoint closed");
}

void metrics_chown(uid_t uid, gid_t gid)
{
    for (int i = 0; i < ep.nunix; i++)
        if (chown(ep.unix_paths[i], uid, gid) != 0)
            log_warning("could not hand %s to uid %d: %s", ep.unix_paths[i], (int)uid, strerror(errno));
}

void metrics_stop(void)
{
    /* Scrapes in progress are answered before their connections go. */
    while (!TAILQ_EMPTY(&jobs)) {
        struct job *j = TAILQ_FIRST(&jobs);

        reply_text(j->req, 503, "Service Unavailable", "the metrics endpoint is closing");
        job_free(j);
    }
    if (ep.resume != NULL) event_free(ep.resume);
    if (ep.sweep != NULL) event_free(ep.sweep);
    if (ep.http != NULL) evhttp_free(ep.http); /* frees its connections: ours are let go of below */
    for (size_t i = 0; i < ep.nconns; i++)
        bufferevent_decref(ep.conns[i].bev);
    free(ep.conns);
    for (int i = 0; i < ep.nunix; i++) {
        unlink(ep.unix_paths[i]);
        free(ep.unix_paths[i]);
    }
    memset(&ep, 0, sizeof(ep));
}
