/*
 * show.c - SHOW POOLS, STATS, SERVERS, CLIENTS, CONFIG and the rest.
 *
 * Each builder walks the pools and writes one row per object through the
 * rowset, which decides what is sent (header, rows, text or binary). Times
 * are microseconds unless a column name says otherwise; averages are over
 * the last full stats_period.
 */
#include "show.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "auth.h"
#include "client.h"
#include "config.h"
#include "creds.h"
#include "hashtab.h"
#include "pgbun.h"
#include "pool.h"
#include "rowset.h"
#include "server.h"
#include "pstmt_fwd.h"
#include "stats.h"
#include "tls.h"

#define NCOLS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- POOLS ---- */

/* Cancel requests in flight for the pool's servers, and servers that wait only for theirs to land. */
static void canceling(const struct pool *p, int *sending, int *waiting)
{
    const struct server *s;

    *sending = *waiting = 0;
    TAILQ_FOREACH(s, &p->servers[SV_ACTIVE], entry)
    {
        if (s->cancel == NULL) continue;
        (*sending)++;
        if (s->expect_rfq == 0) (*waiting)++;
    }
}

/* Idle servers due for server_check_query: PgBouncer's "used". */
static int stale(const struct pool *p)
{
    const struct server *s;
    int                  n = 0;

    TAILQ_FOREACH(s, &p->servers[SV_IDLE], entry)
    if (pool_server_stale(s)) n++;
    return n;
}

static void show_pools(struct rowset *rs)
{
    static const struct col cols[] = {
        {"database", COL_TEXT},
        {"user", COL_TEXT},
        {"cl_active", COL_INT8},
        {"cl_waiting", COL_INT8},
        {"cl_active_cancel_req", COL_INT8},
        {"cl_waiting_cancel_req", COL_INT8},
        {"sv_active", COL_INT8},
        {"sv_active_cancel", COL_INT8},
        {"sv_being_canceled", COL_INT8},
        {"sv_idle", COL_INT8},
        {"sv_used", COL_INT8},
        {"sv_tested", COL_INT8},
        {"sv_login", COL_INT8},
        {"maxwait", COL_INT8},
        {"maxwait_us", COL_INT8},
        {"pool_mode", COL_TEXT},
        {"load_balance_hosts", COL_TEXT},
        {"reuse_efficiency_percent", COL_NUMERIC},
        {"max_server_connections_used", COL_INT8},
        {"total_xact_count", COL_INT8},
        {"total_query_count", COL_INT8},
        {"query_p95_us", COL_INT8},
    };
    static struct stats total, period; /* ~3 KiB each: kept off the stack */
    usec_t              now = pgbun_now();

    rowset_begin(rs, cols, NCOLS(cols));
    /* One row per (database, user): each worker's pool of it added up. */
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p)) {
        int    ncl[CL_NSTATES] = {0}, nsv[SV_NSTATES] = {0}, sending = 0, waiting = 0, used = 0;
        usec_t wait = 0;

        if (pool_seen(p)) continue;
        memset(&total, 0, STATS_SCALARS * sizeof(total.all[0])); /* only counters are added to it */
        memset(period.hist, 0, sizeof(period.hist));
        for (struct pool *q = p; q != NULL; q = pool_next_same(q)) {
            usec_t since = pool_waiting_since(q);
            int    qs, qw;

            for (int i = 0; i < CL_NSTATES; i++)
                ncl[i] += q->nclients[i];
            for (int i = 0; i < SV_NSTATES; i++)
                nsv[i] += q->nservers[i];
            canceling(q, &qs, &qw);
            sending += qs;
            waiting += qw;
            used += stale(q);
            if (since != 0 && now - since > wait) wait = now - since;
            /* What the row shows: four counters, and the histogram its p95 comes from. */
            total.assignments += q->stats.assignments;
            total.reused += q->stats.reused;
            total.xact_count += q->stats.xact_count;
            total.query_count += q->stats.query_count;
            if (q != p || pool_next_same(q) != NULL)
                stats_add_hist(&period, stats_last_period_len() > 0 ? &q->last_period : &q->stats);
        }
        rowset_text(rs, p->dbname);
        rowset_text(rs, p->user);
        rowset_int(rs, ncl[CL_IDLE] + ncl[CL_ACTIVE]);
        rowset_int(rs, ncl[CL_WAITING] + ncl[CL_WELCOME]);
        rowset_int(rs, 0);
        rowset_int(rs, 0);
        rowset_int(rs, nsv[SV_ACTIVE] - waiting);
        rowset_int(rs, sending);
        rowset_int(rs, waiting);
        rowset_int(rs, nsv[SV_IDLE] - used);
        rowset_int(rs, used);
        rowset_int(rs, nsv[SV_TESTING] + nsv[SV_RESETTING]);
        rowset_int(rs, nsv[SV_CONNECTING] + nsv[SV_LOGIN]);
        rowset_int(rs, wait / USEC_PER_SEC);
        rowset_int(rs, wait % USEC_PER_SEC);
        rowset_text(rs, config_pool_mode_name(p->mode));
        rowset_text(rs, NULL);
        rowset_numeric(rs, stats_percent(total.reused, total.assignments), 2);
        rowset_int(rs, pool_peak_servers(p));
        rowset_int(rs, (int64_t)total.xact_count);
        rowset_int(rs, (int64_t)total.query_count);
        /* Until a first stats_period has ended, over everything so far. */
        /* One worker's pool (the usual case): its own histogram, not a copy. */
        rowset_int(rs, stats_percentile(pool_next_same(p) != NULL     ? &period
                                        : stats_last_period_len() > 0 ? &p->last_period
                                                                      : &p->stats,
                                        0.95));
    }
    rowset_end(rs, "SHOW");
}

/* ---- STATS ---- */

/* One database's pools added up. */
struct db_sum {
    const char  *name;
    struct stats total;  /* running totals */
    struct stats period; /* the last full stats_period */
    int          max_servers;
};

/* A database's place in sum_by_db's array, found by name. */
struct db_index {
    UT_hash_handle hh;
    int            i;
};

/* The databases in order of their first pool; *n of them, malloc'd (NULL and 0 when out of memory). */
static struct db_sum *sum_by_db(int *n)
{
    struct db_sum   *sums;
    struct db_index *index = NULL, *slots;
    int              count = 0, npools = 0;

    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p))
        npools++;
    *n = 0;
    /* As many as there are pools at most, allocated once: each holds two struct stats (~6 KB), not to be moved. */
    if ((slots = calloc((size_t)npools + 1, sizeof(*slots))) == NULL) return NULL;
    if ((sums = calloc((size_t)npools + 1, sizeof(*sums))) == NULL) {
        free(slots);
        return NULL;
    }
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p)) {
        struct db_index *e;
        struct db_sum   *d;

        HASH_FIND_STR(index, p->dbname, e);
        if (e == NULL) {
            e = &slots[count];
            e->i = count;
            HASH_ADD_KEYPTR(hh, index, p->dbname, strlen(p->dbname), e);
            if (e->hh.tbl == NULL) break;
            sums[count++].name = p->dbname;
        }
        d = &sums[e->i];
        stats_add_counters(&d->total, &p->stats); /* the percentiles are the period's */
        stats_add(&d->period, &p->last_period);
        if (pool_peak_db_servers(p) > d->max_servers) d->max_servers = pool_peak_db_servers(p);
    }
    HASH_CLEAR(hh, index);
    free(slots);
    *n = count;
    return sums;
}

enum stats_view { STATS_ALL, STATS_TOTALS, STATS_AVERAGES };

/* The twelve counters, as totals or as last-period averages (rates per second, times per event). */
static void stats_counters(struct rowset *rs, const struct stats *t, bool avg, double secs)
{
    if (!avg) {
        rowset_int(rs, (int64_t)t->assignments);
        rowset_int(rs, (int64_t)t->xact_count);
        rowset_int(rs, (int64_t)t->query_count);
        rowset_int(rs, (int64_t)t->bytes_in);
        rowset_int(rs, (int64_t)t->bytes_out);
        rowset_int(rs, (int64_t)t->xact_time);
        rowset_int(rs, (int64_t)t->query_time);
        rowset_int(rs, (int64_t)t->wait_time);
        rowset_int(rs, (int64_t)t->parse_count);
        rowset_int(rs, (int64_t)t->server_parse_count);
        rowset_int(rs, (int64_t)t->bind_count);
        rowset_int(rs, (int64_t)t->login_count);
        return;
    }
    rowset_int(rs, (int64_t)((double)t->assignments / secs));
    rowset_int(rs, (int64_t)((double)t->xact_count / secs));
    rowset_int(rs, (int64_t)((double)t->query_count / secs));
    rowset_int(rs, (int64_t)((double)t->bytes_in / secs));
    rowset_int(rs, (int64_t)((double)t->bytes_out / secs));
    rowset_int(rs, (int64_t)stats_avg(t->xact_time, t->xact_count));
    rowset_int(rs, (int64_t)stats_avg(t->query_time, t->query_count));
    rowset_int(rs, (int64_t)stats_avg(t->wait_time, t->assignments));
    rowset_int(rs, (int64_t)((double)t->parse_count / secs));
    rowset_int(rs, (int64_t)((double)t->server_parse_count / secs));
    rowset_int(rs, (int64_t)((double)t->bind_count / secs));
    rowset_int(rs, (int64_t)((double)t->login_count / secs));
}

/* The twelve counters; `in`/`out` name the byte columns, which PgBouncer names differently in each view. */
#define COUNTER_COLS(prefix, in, out)                                                                                  \
    {prefix "server_assignment_count", COL_INT8}, {prefix "xact_count", COL_INT8}, {prefix "query_count", COL_INT8},   \
        {in, COL_INT8}, {out, COL_INT8}, {prefix "xact_time", COL_INT8}, {prefix "query_time", COL_INT8},              \
        {prefix "wait_time", COL_INT8}, {prefix "client_parse_count", COL_INT8},                                       \
        {prefix "server_parse_count", COL_INT8}, {prefix "bind_count", COL_INT8},                                      \
    {                                                                                                                  \
        prefix "client_login_count", COL_INT8                                                                          \
    }

static void show_stats(struct rowset *rs, enum stats_view view)
{
    static const struct col all[] = {
        {"database", COL_TEXT},
        COUNTER_COLS("total_", "total_received", "total_sent"),
        COUNTER_COLS("avg_", "avg_recv", "avg_sent"),
        {"total_server_connect_count", COL_INT8},
        {"reuse_efficiency_percent", COL_NUMERIC},
        {"max_server_connections_used", COL_INT8},
        {"query_p50_us", COL_INT8},
        {"query_p95_us", COL_INT8},
        {"query_p99_us", COL_INT8},
    };
    static const struct col totals[] = {{"database", COL_TEXT}, COUNTER_COLS("", "bytes_received", "bytes_sent")};
    static const struct col *const averages = totals; /* the same names, averaged */
    struct db_sum                 *sums;
    int                            n;
    usec_t                         len = stats_last_period_len();
    double                         secs = len > 0 ? (double)len / USEC_PER_SEC : 1;

    if (view == STATS_ALL)
        rowset_begin(rs, all, NCOLS(all));
    else if (view == STATS_TOTALS)
        rowset_begin(rs, totals, NCOLS(totals));
    else
        rowset_begin(rs, averages, NCOLS(totals));
    sums = sum_by_db(&n);
    for (int i = 0; i < n; i++) {
        const struct db_sum *d = &sums[i];

        rowset_text(rs, d->name);
        if (view != STATS_AVERAGES) stats_counters(rs, &d->total, false, secs);
        if (view != STATS_TOTALS) stats_counters(rs, &d->period, true, secs);
        if (view != STATS_ALL) continue;
        rowset_int(rs, (int64_t)d->total.servers_opened);
        rowset_numeric(rs, stats_percent(d->total.reused, d->total.assignments), 2);
        rowset_int(rs, d->max_servers);
        rowset_int(rs, stats_percentile(&d->period, 0.50));
        rowset_int(rs, stats_percentile(&d->period, 0.95));
        rowset_int(rs, stats_percentile(&d->period, 0.99));
    }
    free(sums);
    rowset_end(rs, "SHOW");
}

/* SHOW TOTALS: SHOW STATS's counters over every database, one (name, value) row each, named as PgBouncer names them. */
static void show_totals(struct rowset *rs)
{
    static const struct col  cols[] = {{"name", COL_TEXT}, {"value", COL_NUMERIC}};
    static const char *const names[] = {
        "server_assignment_count",
        "xact_count",
        "query_count",
        "client_bytes",
        "server_bytes",
        "xact_time",
        "query_time",
        "wait_time",
        "ps_client_parse_count",
        "ps_server_parse_count",
        "ps_bind_count",
        "client_connect_count",
    };
    static struct stats total, period; /* kept off the stack, as in show_pools */
    usec_t              len = stats_last_period_len();
    double              secs = len > 0 ? (double)len / USEC_PER_SEC : 1;
    char                name[64];

    memset(&total, 0, sizeof(total));
    memset(&period, 0, sizeof(period));
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p)) {
        stats_add_counters(&total, &p->stats);
        stats_add_counters(&period, &p->last_period);
    }
    {
        const struct stats *t = &total, *a = &period;
        const double        totals[] = {
                   (double)t->assignments, (double)t->xact_count,         (double)t->query_count, (double)t->bytes_in,
                   (double)t->bytes_out,   (double)t->xact_time,          (double)t->query_time,  (double)t->wait_time,
                   (double)t->parse_count, (double)t->server_parse_count, (double)t->bind_count,  (double)t->login_count,
        };
        /* Rates per second over the last stats_period; times per event, as SHOW STATS's avg_ columns. */
        const double avgs[] = {
            (double)a->assignments / secs,
            (double)a->xact_count / secs,
            (double)a->query_count / secs,
            (double)a->bytes_in / secs,
            (double)a->bytes_out / secs,
            (double)stats_avg(a->xact_time, a->xact_count),
            (double)stats_avg(a->query_time, a->query_count),
            (double)stats_avg(a->wait_time, a->assignments),
            (double)a->parse_count / secs,
            (double)a->server_parse_count / secs,
            (double)a->bind_count / secs,
            (double)a->login_count / secs,
        };

        rowset_begin(rs, cols, NCOLS(cols));
        for (int avg = 0; avg <= 1; avg++) {
            for (int i = 0; i < NCOLS(names); i++) {
                snprintf(name, sizeof(name), "%s_%s", avg ? "avg" : "total", names[i]);
                rowset_text(rs, name);
                rowset_numeric(rs, avg ? (double)(uint64_t)avgs[i] : totals[i], 0);
            }
        }
    }
    rowset_end(rs, "SHOW");
}

/* ---- SERVERS and CLIENTS ---- */

/* PgBouncer's columns of a connection, in its order: SERVERS, CLIENTS and SOCKETS start with them. */
/* clang-format off */
#define PG_CONN_COLS \
    {"type", COL_TEXT},                \
    {"user", COL_TEXT},                \
    {"database", COL_TEXT},            \
    {"replication", COL_TEXT},         \
    {"state", COL_TEXT},               \
    {"addr", COL_TEXT},                \
    {"port", COL_INT8},                \
    {"local_addr", COL_TEXT},          \
    {"local_port", COL_INT8},          \
    {"connect_time", COL_TEXT},        \
    {"request_time", COL_TEXT},        \
    {"wait", COL_INT8},                \
    {"wait_us", COL_INT8},             \
    {"close_needed", COL_INT8},        \
    {"ptr", COL_TEXT},                 \
    {"link", COL_TEXT},                \
    {"remote_pid", COL_INT8},          \
    {"tls", COL_TEXT},                 \
    {"application_name", COL_TEXT},    \
    {"prepared_statements", COL_INT8}, \
    {"id", COL_INT8}
/* clang-format on */

static const struct col conn_cols[] = {
    PG_CONN_COLS,
    {"pgbun_state", COL_TEXT},
    {"state_us", COL_INT8},
    {"pinned", COL_TEXT},
};

/* A monotonic time as wall-clock text, the way PgBouncer prints it. */
static void put_time(struct rowset *rs, usec_t mono)
{
    time_t    t = time(NULL) - (time_t)((pgbun_now() - mono) / USEC_PER_SEC);
    struct tm tm;
    char      buf[40];

    gmtime_r(&t, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
    rowset_text(rs, buf);
}

/* The local end of fd: address and port, or "unix" and 0. */
static void put_local(struct rowset *rs, int fd)
{
    struct sockaddr_storage ss;
    socklen_t               len = sizeof(ss);
    char                    host[64] = "";
    int                     port = 0;

    if (fd >= 0 && getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        } else {
            snprintf(host, sizeof(host), "unix");
        }
    }
    rowset_text(rs, host);
    rowset_int(rs, port);
}

/* The tls column: version, cipher and key exchange, or empty when plain. */
static void put_tls(struct rowset *rs, const struct io *io)
{
    char buf[128];

    tls_describe(io, buf, sizeof(buf));
    rowset_text(rs, buf);
}

/*
 * SHOW CLIENTS's state, as PgBouncer 1.25 names it: "active" when linked to
 * a server, "idle" when logged in with none (nothing of its own running or
 * due), "waiting" when queued for one.
 */
static const char *client_state_name(const struct client *c)
{
    switch (c->state) {
    case CL_LOGIN: return "login";
    case CL_WELCOME:
    case CL_WAITING: return "waiting";
    case CL_IDLE: return "idle";
    case CL_ACTIVE: return "active";
    default: return "closing";
    }
}

/* SHOW SOCKETS's state: the PgBouncer list the client is on. */
static const char *client_socket_state(const struct client *c)
{
    switch (c->state) {
    case CL_LOGIN: return "cl_login";
    case CL_WELCOME:
    case CL_WAITING: return "cl_waiting";
    default: return "cl_active";
    }
}

static const char *client_pgbun_state(const struct client *c)
{
    static const char *const names[] = {"login", "welcome", "idle", "waiting", "active", "closing"};

    return c->state < CL_NSTATES ? names[c->state] : "?";
}

/*
 * SHOW SOCKETS's low-level columns, from pgbun's buffers: bytes read and not
 * yet passed on (recv_pos, pkt_avail), what remains of a message being
 * streamed (pkt_remain), bytes waiting to be written (send_avail). pgbun
 * keeps no positions inside a buffer, so pkt_pos, send_pos and send_remain
 * are 0.
 */
static void put_buffers(struct rowset *rs, const struct evbuffer *in, const struct evbuffer *out, uint32_t fwd_left)
{
    int64_t nin = in ? (int64_t)evbuffer_get_length(in) : 0, nout = out ? (int64_t)evbuffer_get_length(out) : 0;

    rowset_int(rs, nin);
    rowset_int(rs, 0);
    rowset_int(rs, fwd_left);
    rowset_int(rs, 0);
    rowset_int(rs, 0);
    rowset_int(rs, nin);
    rowset_int(rs, nout);
}

static bool has_bytes(const struct evbuffer *in, const struct evbuffer *out, uint32_t fwd_left)
{
    return (in && evbuffer_get_length(in) > 0) || (out && evbuffer_get_length(out) > 0) || fwd_left > 0;
}

/* One client; sockets: SHOW SOCKETS's columns, else SHOW CLIENTS's. */
static void client_row(struct rowset *rs, const struct client *c, usec_t now, bool sockets)
{
    char        why[128];
    const char *app = varlist_get(&c->params, "application_name");
    usec_t      wait = (c->state == CL_WAITING || c->state == CL_WELCOME) ? now - c->state_since : 0;

    rowset_text(rs, "C");
    rowset_text(rs, c->user ? c->user : "");
    rowset_text(rs, c->dbname ? c->dbname : "");
    rowset_text(rs, "none");
    rowset_text(rs, sockets ? client_socket_state(c) : client_state_name(c));
    rowset_text(rs, c->addr);
    rowset_int(rs, c->port);
    put_local(rs, c->io.fd);
    put_time(rs, c->connect_time);
    put_time(rs, c->request_time);
    rowset_int(rs, wait / USEC_PER_SEC);
    rowset_int(rs, wait % USEC_PER_SEC);
    rowset_int(rs, 0);
    rowset_textf(rs, "%p", (const void *)c);
    if (c->server)
        rowset_textf(rs, "%p", (const void *)c->server);
    else
        rowset_text(rs, "");
    rowset_int(rs, 0);
    put_tls(rs, &c->io);
    rowset_text(rs, app ? app : "");
    rowset_int(rs, (int64_t)pstmt_fwd_client_count(c));
    rowset_int(rs, (int64_t)c->id);
    if (sockets) {
        put_buffers(rs, c->in, c->out, c->fwd_left);
        return;
    }
    rowset_text(rs, client_pgbun_state(c));
    rowset_int(rs, now - c->state_since);
    rowset_text(rs, c->server ? session_held_names(c->server->held, why, sizeof(why)) : "");
}

static void show_clients(struct rowset *rs)
{
    usec_t now = pgbun_now();

    rowset_begin(rs, conn_cols, NCOLS(conn_cols));
    for (const struct client *c = pool_first_login_client(); c != NULL; c = pool_next_login_client(c))
        client_row(rs, c, now, false);
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p))
        for (int st = 0; st < CL_CLOSING; st++)
            for (const struct client *c = TAILQ_FIRST(&p->clients[st]); c != NULL; c = TAILQ_NEXT(c, entry))
                client_row(rs, c, now, false);
    rowset_end(rs, "SHOW");
}

/* PgBouncer's names: new (logging in), idle, used (due for a check), tested (check or reset running), active. */
static const char *server_state_name(const struct server *s)
{
    switch (s->state) {
    case SV_CONNECTING:
    case SV_LOGIN: return "new";
    case SV_IDLE: return pool_server_stale(s) ? "used" : "idle";
    case SV_TESTING:
    case SV_RESETTING: return "tested";
    case SV_ACTIVE: return s->cancel != NULL && s->expect_rfq == 0 ? "being_canceled" : "active";
    default: return "closing";
    }
}

/* SHOW SOCKETS's state: the PgBouncer list the server is on. */
static const char *server_socket_state(const struct server *s)
{
    switch (s->state) {
    case SV_CONNECTING:
    case SV_LOGIN: return "sv_login";
    case SV_IDLE: return pool_server_stale(s) ? "sv_used" : "sv_idle";
    case SV_TESTING:
    case SV_RESETTING: return "sv_tested";
    default: return "sv_active";
    }
}

static const char *server_pgbun_state(const struct server *s)
{
    static const char *const names[] = {"connecting", "login", "idle", "testing", "active", "resetting", "closing"};

    return s->state < SV_NSTATES ? names[s->state] : "?";
}

/* One server; sockets: SHOW SOCKETS's columns, else SHOW SERVERS's. */
static void server_row(struct rowset *rs, const struct server *s, usec_t now, bool sockets)
{
    const struct pool *p = s->pool;
    const char        *app = varlist_get(&s->params, "application_name");
    char               why[128];

    rowset_text(rs, "S");
    rowset_text(rs, p->server_user ? p->server_user : p->user);
    rowset_text(rs, p->dbname);
    rowset_text(rs, "none");
    rowset_text(rs, sockets ? server_socket_state(s) : server_state_name(s));
    rowset_text(rs, p->host);
    rowset_int(rs, p->port);
    put_local(rs, s->io.fd);
    put_time(rs, s->connect_time);
    put_time(rs, s->last_ready ? s->last_ready : s->connect_time);
    rowset_int(rs, 0);
    rowset_int(rs, 0);
    rowset_int(rs, s->close_needed);
    rowset_textf(rs, "%p", (const void *)s);
    if (s->client)
        rowset_textf(rs, "%p", (const void *)s->client);
    else
        rowset_text(rs, "");
    rowset_int(rs, s->backend_pid);
    put_tls(rs, &s->io);
    rowset_text(rs, app ? app : "");
    rowset_int(rs, (int64_t)pstmt_fwd_server_count(s));
    rowset_int(rs, (int64_t)s->id);
    if (sockets) {
        put_buffers(rs, s->in, s->out, s->fwd_left);
        return;
    }
    rowset_text(rs, server_pgbun_state(s));
    rowset_int(rs, now - s->state_since);
    rowset_text(rs, session_held_names(s->held, why, sizeof(why)));
}

static void show_servers(struct rowset *rs)
{
    usec_t now = pgbun_now();

    rowset_begin(rs, conn_cols, NCOLS(conn_cols));
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p))
        for (int st = 0; st < SV_CLOSING; st++)
            for (const struct server *s = TAILQ_FIRST(&p->servers[st]); s != NULL; s = TAILQ_NEXT(s, entry))
                server_row(rs, s, now, false);
    rowset_end(rs, "SHOW");
}

/*
 * SHOW SOCKETS: every client and server with PgBouncer's low-level columns,
 * pool by pool, clients still logging in last. active_only (SHOW
 * ACTIVE_SOCKETS): only those with bytes in their buffers.
 */
static void show_sockets(struct rowset *rs, bool active_only)
{
    /* clang-format off */
    static const struct col cols[] = {
        PG_CONN_COLS,
        {"recv_pos", COL_INT8},
        {"pkt_pos", COL_INT8},
        {"pkt_remain", COL_INT8},
        {"send_pos", COL_INT8},
        {"send_remain", COL_INT8},
        {"pkt_avail", COL_INT8},
        {"send_avail", COL_INT8},
    };
    /* clang-format on */
    usec_t now = pgbun_now();

    rowset_begin(rs, cols, NCOLS(cols));
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p)) {
        for (int st = 0; st < CL_CLOSING; st++)
            for (const struct client *c = TAILQ_FIRST(&p->clients[st]); c != NULL; c = TAILQ_NEXT(c, entry))
                if (!active_only || has_bytes(c->in, c->out, c->fwd_left)) client_row(rs, c, now, true);
        for (int st = 0; st < SV_CLOSING; st++)
            for (const struct server *s = TAILQ_FIRST(&p->servers[st]); s != NULL; s = TAILQ_NEXT(s, entry))
                if (!active_only || has_bytes(s->in, s->out, s->fwd_left)) server_row(rs, s, now, true);
    }
    for (const struct client *c = pool_first_login_client(); c != NULL; c = pool_next_login_client(c))
        if (!active_only || has_bytes(c->in, c->out, c->fwd_left)) client_row(rs, c, now, true);
    rowset_end(rs, "SHOW");
}

static void show_all_sockets(struct rowset *rs)
{
    show_sockets(rs, false);
}

static void show_active_sockets(struct rowset *rs)
{
    show_sockets(rs, true);
}

/* pgbun resolves server host names with no cache of its own: the DNS views have PgBouncer's columns and no rows. */
static void show_dns_hosts(struct rowset *rs)
{
    static const struct col cols[] = {{"hostname", COL_TEXT}, {"ttl", COL_INT8}, {"addrs", COL_TEXT}};

    rowset_begin(rs, cols, NCOLS(cols));
    rowset_end(rs, "SHOW");
}

static void show_dns_zones(struct rowset *rs)
{
    static const struct col cols[] = {{"zonename", COL_TEXT}, {"serial", COL_INT8}, {"count", COL_INT8}};

    rowset_begin(rs, cols, NCOLS(cols));
    rowset_end(rs, "SHOW");
}

/* ---- DATABASES and USERS ---- */

/*
 * What SHOW DATABASES and SHOW USERS count per name, gathered in one walk
 * over the pools so that either SHOW is linear in the number of pools. A
 * tally's order is the order in which pools first name it.
 */
struct tally {
    UT_hash_handle hh;
    const char    *name;    /* the pool's dbname or user; pools do not change while the world is stopped */
    int            servers; /* server connections of its pools */
    int            clients; /* clients not closing (SHOW USERS: of console pools only) */
    bool           admin;   /* its first pool is the console's */
};

struct tallies {
    struct tally *tab;
    struct tally *slots; /* one per pool */
};

/* Tallies the pools by database name (by_user false) or by user name; false: out of memory. */
static bool tally_pools(struct tallies *t, bool by_user)
{
    size_t n = 0;

    t->tab = NULL;
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p))
        n++;
    if ((t->slots = calloc(n + 1, sizeof(*t->slots))) == NULL) return false;
    n = 0;
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p)) {
        const char   *name = by_user ? p->user : p->dbname;
        struct tally *e;

        HASH_FIND_STR(t->tab, name, e);
        if (e == NULL) {
            e = &t->slots[n++];
            e->name = name;
            e->admin = p->admin;
            HASH_ADD_KEYPTR(hh, t->tab, e->name, strlen(e->name), e);
            if (e->hh.tbl == NULL) {
                free(t->slots);
                return false;
            }
        }
        e->servers += pool_server_count(p);
        for (int st = 0; st < CL_CLOSING && (!by_user || p->admin); st++)
            e->clients += p->nclients[st];
    }
    return true;
}

static const struct tally *tally_of(const struct tallies *t, const char *name)
{
    static const struct tally none;
    struct tally             *e;

    HASH_FIND_STR(t->tab, name, e);
    return e != NULL ? e : &none;
}

static void tallies_free(struct tallies *t)
{
    HASH_CLEAR(hh, t->tab);
    free(t->slots);
}

/* A cell whose value is a [databases] or [users] setting; false when the column is not one. */
static bool setting_cell(struct rowset *rs, enum config_entry_kind kind, const char *column, const void *entry,
                         const struct config_settings *eff)
{
    struct config_shown v;

    if (!config_show(kind, column, entry, eff, &v)) return false;
    switch (v.type) {
    case SHOWN_NULL: rowset_text(rs, NULL); break;
    case SHOWN_INT: rowset_int(rs, v.i); break;
    case SHOWN_TEXT: rowset_text(rs, v.text); break;
    }
    return true;
}

#ifndef NDEBUG
/* Every key of the kind that has a SHOW column is among `cols`: a key added to config.c's table is shown. */
static bool shows_every_key(enum config_entry_kind kind, const struct col *cols, size_t ncols)
{
    const char *key, *column;

    for (size_t i = 0; config_entry_key(kind, i, &key, &column); i++) {
        size_t j = 0;

        while (column != NULL && j < ncols && strcmp(cols[j].name, column) != 0)
            j++;
        if (j == ncols) return false;
    }
    return true;
}
#endif

/* The console's row: no entry, a pool of its own. */
static void console_row(struct rowset *rs, const char *name, const struct tally *t)
{
    rowset_text(rs, name);
    rowset_text(rs, NULL);
    rowset_int(rs, pgbun.cfg->listen_port);
    rowset_text(rs, name);
    rowset_text(rs, NULL);
    rowset_int(rs, 2);
    rowset_int(rs, 0);
    rowset_int(rs, 0);
    rowset_int(rs, 0);
    rowset_text(rs, "statement");
    rowset_text(rs, NULL);
    rowset_int(rs, 0);
    rowset_int(rs, t->servers);
    rowset_int(rs, 0);
    rowset_int(rs, t->clients);
    rowset_int(rs, pool_db_paused(name));
    rowset_int(rs, pool_is_disabled(name));
}

static void database_row(struct rowset *rs, const struct col *cols, size_t ncols, const char *name,
                         const struct db_config *db, const struct tally *t)
{
    struct config_settings eff;

    config_resolve(pgbun.cfg, db, NULL, name, &eff);
    for (size_t i = 0; i < ncols; i++) {
        const char *col = cols[i].name;

        if (setting_cell(rs, CONFIG_DATABASE, col, db, &eff)) continue;
        if (strcmp(col, "name") == 0)
            rowset_text(rs, name);
        else if (strcmp(col, "current_connections") == 0)
            rowset_int(rs, t->servers);
        else if (strcmp(col, "current_client_connections") == 0)
            rowset_int(rs, t->clients);
        else if (strcmp(col, "paused") == 0)
            rowset_int(rs, pool_db_paused(name));
        else if (strcmp(col, "disabled") == 0)
            rowset_int(rs, pool_is_disabled(name));
        else
            rowset_text(rs, NULL); /* load_balance_hosts: pgbun has none */
    }
}

static void show_databases(struct rowset *rs)
{
    static const struct col cols[] = {
        {"name", COL_TEXT},
        {"host", COL_TEXT},
        {"port", COL_INT8},
        {"database", COL_TEXT},
        {"force_user", COL_TEXT},
        {"pool_size", COL_INT8},
        {"min_pool_size", COL_INT8},
        {"reserve_pool_size", COL_INT8},
        {"server_lifetime", COL_INT8},
        {"pool_mode", COL_TEXT},
        {"load_balance_hosts", COL_TEXT},
        {"max_connections", COL_INT8},
        {"current_connections", COL_INT8},
        {"max_client_connections", COL_INT8},
        {"current_client_connections", COL_INT8},
        {"paused", COL_INT8},
        {"disabled", COL_INT8},
    };
    const struct pgbun_config *cfg = pgbun.cfg;

    struct tallies t;

    assert(shows_every_key(CONFIG_DATABASE, cols, NCOLS(cols)));
    if (!tally_pools(&t, false)) {
        rs->failed = true; /* answered as out of memory */
        return;
    }
    rowset_begin(rs, cols, NCOLS(cols));
    for (const struct db_config *db = cfg->databases; db != NULL; db = db->next)
        database_row(rs, cols, NCOLS(cols), db->name, db, tally_of(&t, db->name));
    /* Databases reached through "*" get a row of their own, as PgBouncer's auto-databases do. */
    for (const struct tally *e = t.tab; e != NULL; e = e->hh.next) {
        if (config_db_named(cfg, e->name) != NULL) continue;
        if (e->admin)
            console_row(rs, e->name, e);
        else
            database_row(rs, cols, NCOLS(cols), e->name, config_find_db(cfg, e->name), e);
    }
    tallies_free(&t);
    rowset_end(rs, "SHOW");
}

static void user_row(struct rowset *rs, const struct col *cols, size_t ncols, const char *name, const struct tally *t)
{
    const struct user_config *u = config_find_user(pgbun.cfg, name);
    /* Clients as max_user_client_connections counts them, and the console's, which it does not. */
    int                    clients = pool_share_clients(NULL, name) + t->clients;
    struct config_settings eff;

    config_resolve(pgbun.cfg, NULL, u, NULL, &eff);
    for (size_t i = 0; i < ncols; i++) {
        const char *col = cols[i].name;

        if (setting_cell(rs, CONFIG_USER, col, u, &eff)) continue;
        if (strcmp(col, "name") == 0)
            rowset_text(rs, name);
        else if (strcmp(col, "current_connections") == 0)
            rowset_int(rs, t->servers);
        else if (strcmp(col, "secret_source") == 0)
            rowset_text(rs, auth_file_find(pgbun.auth, name) != NULL ? "auth_file"
                            : creds_found_by_query(name)             ? "auth_query"
                                                                     : "none");
        else
            rowset_int(rs, clients); /* current_client_connections */
    }
}

/*
 * Every user pgbun knows, as PgBouncer lists them: the [users] entries,
 * then the users of auth_file, then anyone else who has a pool (found by
 * auth_query, let in by auth_trust_any_user, or pgbun's own OS user on the
 * console), each with where its secret came from.
 */
static void show_users(struct rowset *rs)
{
    static const struct col cols[] = {
        {"name", COL_TEXT},
        {"pool_size", COL_INT8},
        {"reserve_pool_size", COL_INT8},
        {"pool_mode", COL_TEXT},
        {"max_user_connections", COL_INT8},
        {"current_connections", COL_INT8},
        {"max_user_client_connections", COL_INT8},
        {"current_client_connections", COL_INT8},
        {"secret_source", COL_TEXT}, /* pgbun's own: auth_file, auth_query or none; never the secret */
    };
    const struct pgbun_config *cfg = pgbun.cfg;
    const struct auth_file    *af = pgbun.auth;

    struct tallies t;

    assert(shows_every_key(CONFIG_USER, cols, NCOLS(cols)));
    if (!tally_pools(&t, true)) {
        rs->failed = true; /* answered as out of memory */
        return;
    }
    rowset_begin(rs, cols, NCOLS(cols));
    for (const struct user_config *u = cfg->users; u != NULL; u = u->next)
        user_row(rs, cols, NCOLS(cols), u->name, tally_of(&t, u->name));
    for (size_t i = 0; i < auth_file_count(af); i++) {
        const char *name = auth_file_user(af, i);

        if (config_find_user(cfg, name) == NULL) user_row(rs, cols, NCOLS(cols), name, tally_of(&t, name));
    }
    for (const struct tally *e = t.tab; e != NULL; e = e->hh.next)
        if (config_find_user(cfg, e->name) == NULL && auth_file_find(af, e->name) == NULL)
            user_row(rs, cols, NCOLS(cols), e->name, e);
    tallies_free(&t);
    rowset_end(rs, "SHOW");
}

/* ---- CONFIG, LISTS, STATE, MEM, VERSION ---- */

static void show_config(struct rowset *rs)
{
    static const struct col cols[] = {
        {"key", COL_TEXT},
        {"value", COL_TEXT},
        {"default", COL_TEXT},
        {"changeable", COL_TEXT},
    };

    rowset_begin(rs, cols, NCOLS(cols));
    for (size_t i = 0; i < config_item_count(); i++) {
        struct config_item it;

        if (!config_item(pgbun.cfg, i, &it)) {
            rs->failed = true;
            break;
        }
        rowset_text(rs, it.key);
        rowset_text(rs, it.value);
        rowset_text(rs, it.def);
        rowset_text(rs, it.changeable ? "yes" : "no");
        free(it.value);
    }
    rowset_end(rs, "SHOW");
}

static void show_lists(struct rowset *rs)
{
    static const struct col cols[] = {{"list", COL_TEXT}, {"items", COL_INT8}};
    int                     dbs = 0, users = 0, pools = 0, clients = 0, login = 0, servers = 0;

    for (const struct db_config *db = pgbun.cfg->databases; db != NULL; db = db->next)
        dbs++;
    for (const struct user_config *u = pgbun.cfg->users; u != NULL; u = u->next)
        users++;
    for (const struct client *c = pool_first_login_client(); c != NULL; c = pool_next_login_client(c))
        login++;
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p)) {
        pools++;
        servers += pool_server_count(p);
        for (int st = 0; st < CL_CLOSING; st++)
            clients += p->nclients[st];
    }
    rowset_begin(rs, cols, NCOLS(cols));
    rowset_text(rs, "databases");
    rowset_int(rs, dbs);
    rowset_text(rs, "users");
    rowset_int(rs, users);
    rowset_text(rs, "pools");
    rowset_int(rs, pools);
    rowset_text(rs, "free_clients");
    rowset_int(rs, 0);
    rowset_text(rs, "used_clients");
    rowset_int(rs, clients + login);
    rowset_text(rs, "login_clients");
    rowset_int(rs, login);
    rowset_text(rs, "free_servers");
    rowset_int(rs, 0);
    rowset_text(rs, "used_servers");
    rowset_int(rs, servers);
    rowset_text(rs, "dns_names");
    rowset_int(rs, 0);
    rowset_text(rs, "dns_zones");
    rowset_int(rs, 0);
    rowset_text(rs, "dns_queries");
    rowset_int(rs, 0);
    rowset_text(rs, "dns_pending");
    rowset_int(rs, 0);
    rowset_end(rs, "SHOW");
}

static void show_state(struct rowset *rs)
{
    static const struct col cols[] = {{"key", COL_TEXT}, {"value", COL_TEXT}};

    rowset_begin(rs, cols, NCOLS(cols));
    rowset_text(rs, "active");
    rowset_text(rs, pgbun.paused || pgbun.shutting_down ? "no" : "yes");
    rowset_text(rs, "paused");
    rowset_text(rs, pgbun.paused ? "yes" : "no");
    rowset_text(rs, "suspended");
    rowset_text(rs, "no");
    rowset_end(rs, "SHOW");
}

static void show_mem(struct rowset *rs)
{
    static const struct col cols[] = {
        {"name", COL_TEXT}, {"size", COL_INT8}, {"used", COL_INT8}, {"free", COL_INT8}, {"memtotal", COL_INT8},
    };
    int64_t npools = 0, nclients = 0, nservers = 0;

    for (const struct client *c = pool_first_login_client(); c != NULL; c = pool_next_login_client(c))
        nclients++;
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p)) {
        npools++;
        nservers += pool_server_count(p);
        for (int st = 0; st < CL_CLOSING; st++)
            nclients += p->nclients[st];
    }
    rowset_begin(rs, cols, NCOLS(cols));
    rowset_text(rs, "pool");
    rowset_int(rs, sizeof(struct pool));
    rowset_int(rs, npools);
    rowset_int(rs, 0);
    rowset_int(rs, npools * (int64_t)sizeof(struct pool));
    rowset_text(rs, "client");
    rowset_int(rs, sizeof(struct client));
    rowset_int(rs, nclients);
    rowset_int(rs, 0);
    rowset_int(rs, nclients * (int64_t)sizeof(struct client));
    rowset_text(rs, "server");
    rowset_int(rs, sizeof(struct server));
    rowset_int(rs, nservers);
    rowset_int(rs, 0);
    rowset_int(rs, nservers * (int64_t)sizeof(struct server));
    rowset_end(rs, "SHOW");
}

static void show_version(struct rowset *rs)
{
    static const struct col cols[] = {{"version", COL_TEXT}};

    rowset_begin(rs, cols, NCOLS(cols));
    rowset_text(rs, "pgbun " PGBUN_VERSION);
    rowset_end(rs, "SHOW");
}

/* ---- dispatch ---- */

static const struct {
    const char *name;
    void (*fn)(struct rowset *rs);
} simple_shows[] = {
    {"pools", show_pools},
    {"servers", show_servers},
    {"clients", show_clients},
    {"databases", show_databases},
    {"users", show_users},
    {"config", show_config},
    {"lists", show_lists},
    {"state", show_state},
    {"mem", show_mem},
    {"version", show_version},
    {"totals", show_totals},
    {"sockets", show_all_sockets},
    {"active_sockets", show_active_sockets},
    {"dns_hosts", show_dns_hosts},
    {"dns_zones", show_dns_zones},
};

const char *show_names(void)
{
    return "POOLS, STATS, STATS_TOTALS, STATS_AVERAGES, TOTALS, SERVERS, CLIENTS, SOCKETS, ACTIVE_SOCKETS, "
           "DATABASES, USERS, CONFIG, LISTS, STATE, MEM, DNS_HOSTS, DNS_ZONES, VERSION, HELP";
}

bool show_run(const char *what, struct rowset *rs, struct client *asker)
{
    (void)asker;
    if (strcasecmp(what, "stats") == 0) {
        show_stats(rs, STATS_ALL);
        return true;
    }
    if (strcasecmp(what, "stats_totals") == 0) {
        show_stats(rs, STATS_TOTALS);
        return true;
    }
    if (strcasecmp(what, "stats_averages") == 0) {
        show_stats(rs, STATS_AVERAGES);
        return true;
    }
    for (size_t i = 0; i < sizeof(simple_shows) / sizeof(simple_shows[0]); i++) {
        if (strcasecmp(what, simple_shows[i].name) == 0) {
            simple_shows[i].fn(rs);
            return true;
        }
    }
    return false;
}
