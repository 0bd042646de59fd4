/*
 * main.c - pgbun-loadtest: options, the run's set-up and checks, the report.
 *
 *   probe connection  (the target answers, the scenario's tables exist)
 *   admin console     SHOW POOLS: the pool's mode against --mode;
 *                     SHOW CONFIG: idle timeouts; RESET STATS
 *   driver_run        the load itself
 *   admin console     SHOW STATS: reuse and server connections of the run
 *   check connection  boundary rows counted, transactions left open
 *   report            one JSON object on stdout (and --out), --csv per second
 *
 * pgbun's figures are read through its console, never estimated: with no
 * console (a plain PostgreSQL, say) they are null.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "output.h"
#include "loadtest.h"

#define EXIT_ERRORS 1 /* the run had errors, or a check failed */
#define EXIT_SETUP  2 /* bad options, or the run could not start */

static const char *progname = "pgbun-loadtest";

static const char *const mode_names[] = {"", "session", "transaction", "statement"};
static const char *const scenario_names[] = {"load", "boundary", "idle", "long-session", "reconnect"};

const char *lt_mode_name(enum lt_mode m)
{
    return mode_names[m];
}

const char *lt_scenario_name(enum lt_scenario s)
{
    return scenario_names[s];
}

/* "pgbun-loadtest: [warning: ]message" on stderr. */
static void say(const char *what, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void say(const char *what, const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: %s", progname, what);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    say("", fmt, ap);
    va_end(ap);
    exit(code);
}

static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    say("warning: ", fmt, ap);
    va_end(ap);
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: %s [OPTION]...\n"
            "Runs a scenario against pgbun (or any PostgreSQL endpoint) with N concurrent\n"
            "connections and prints its metrics as one JSON object.\n\n"
            "Target (defaults from PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE):\n"
            "  -h, --host=HOST           pgbun's host or socket directory\n"
            "  -p, --port=PORT           pgbun's port\n"
            "  -U, --user=USER           user to connect as\n"
            "      --password=PASSWORD   its password\n"
            "  -d, --dbname=DBNAME       database (its tables: docker-entrypoint-initdb.d/init.sql)\n"
            "      --admin-user=USER     user for pgbun's console (default: --user)\n"
            "      --admin-password=PW   its password (default: --password)\n"
            "      --admin-db=NAME       pgbun's console database (default pgbun; '' for none)\n"
            "      --direct=CONNINFO     where to count rows and open transactions after the run,\n"
            "                            for example straight to PostgreSQL (default: the target)\n\n"
            "Load:\n"
            "      --scenario=NAME       load, boundary, idle, long-session or reconnect (default load)\n"
            "      --mode=MODE           session, transaction or statement: pgbun's pool mode, checked\n"
            "                            against SHOW POOLS (default: read from SHOW POOLS)\n"
            "  -c, --concurrency=N       client connections (default 10)\n"
            "  -T, --duration=TIME       how long to run: 30s, 2m, 500ms (default 30s)\n"
            "      --rate=QPS            queries per second over all connections (default: no limit)\n"
            "      --ramp=TIME           start the connections evenly over TIME (default: all at once)\n"
            "      --idle=TIME           idle: the pause between queries (default: 1.5 s past pgbun's\n"
            "                            longer idle timeout, read from SHOW CONFIG)\n"
            "      --holders=N           long-session: connections holding a transaction all run long\n"
            "                            (default concurrency / 10, at least 1)\n"
            "      --restart-command=CMD reconnect: run CMD (sh -c) during the run, e.g. a restart\n"
            "      --restart-at=TIME     when to run it (default: a third into the run)\n"
            "      --grace=TIME          after the duration, how long iterations under way may take\n"
            "                            to finish (default 30s)\n"
            "      --keep-stats          do not RESET STATS at the start: pgbun's figures then cover\n"
            "                            everything since its start or last reset\n\n"
            "Output:\n"
            "      --out=FILE            write the JSON to FILE too\n"
            "      --csv=FILE            one CSV line per second: queries, errors, latency\n"
            "      --progress            one status line per second on stderr\n"
            "      --allow-errors        exit 0 even when queries failed\n"
            "      --help                this help\n"
            "      --version             the version\n\n"
            "Exit status: 0 clean run, 1 errors or a failed check, 2 bad options or no run.\n",
            progname);
}

/* "30", "30s", "1.5s", "500ms", "2m", "1h" */
static bool parse_time(const char *s, nsec_t *out)
{
    char  *end;
    double v = strtod(s, &end), unit = NS_PER_SEC;

    if (end == s || !isfinite(v) || v < 0) return false;
    while (isspace((unsigned char)*end))
        end++;
    if (strcmp(end, "ms") == 0)
        unit = NS_PER_MS;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        unit = 60.0 * NS_PER_SEC;
    else if (strcmp(end, "h") == 0)
        unit = 3600.0 * NS_PER_SEC;
    else if (*end != '\0' && strcmp(end, "s") != 0)
        return false;
    if (v * unit > (double)(30LL * 24 * 3600 * NS_PER_SEC)) return false; /* over 30 days */
    *out = (nsec_t)(v * unit);
    return true;
}

static int parse_int(const char *name, const char *s, int min, int max)
{
    char *end;
    long  v = strtol(s, &end, 10);

    if (end == s || *end != '\0' || v < min || v > max)
        die(EXIT_SETUP, "%s must be a number from %d to %d", name, min, max);
    return (int)v;
}

static nsec_t parse_time_opt(const char *name, const char *s)
{
    nsec_t v;

    if (!parse_time(s, &v)) die(EXIT_SETUP, "%s: \"%s\" is not a time up to 30 days (30s, 500ms, 2m)", name, s);
    return v;
}

static enum lt_mode parse_mode(const char *s)
{
    for (int m = MODE_SESSION; m <= MODE_STATEMENT; m++)
        if (strcmp(s, mode_names[m]) == 0) return (enum lt_mode)m;
    die(EXIT_SETUP, "--mode must be session, transaction or statement, not \"%s\"", s);
}

static enum lt_scenario parse_scenario(const char *s)
{
    for (int i = 0; i < (int)(sizeof(scenario_names) / sizeof(scenario_names[0])); i++)
        if (strcmp(s, scenario_names[i]) == 0) return (enum lt_scenario)i;
    die(EXIT_SETUP, "--scenario must be load, boundary, idle, long-session or reconnect, not \"%s\"", s);
}

enum {
    OPT_PASSWORD = 256,
    OPT_ADMIN_USER,
    OPT_ADMIN_PASSWORD,
    OPT_ADMIN_DB,
    OPT_DIRECT,
    OPT_MODE,
    OPT_SCENARIO,
    OPT_RATE,
    OPT_RAMP,
    OPT_IDLE,
    OPT_HOLDERS,
    OPT_RESTART_COMMAND,
    OPT_RESTART_AT,
    OPT_GRACE,
    OPT_KEEP_STATS,
    OPT_OUT,
    OPT_CSV,
    OPT_PROGRESS,
    OPT_ALLOW_ERRORS,
    OPT_HELP,
    OPT_VERSION,
};

static void parse_options(int argc, char **argv, struct lt_options *o)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"user", required_argument, NULL, 'U'},
        {"password", required_argument, NULL, OPT_PASSWORD},
        {"dbname", required_argument, NULL, 'd'},
        {"admin-user", required_argument, NULL, OPT_ADMIN_USER},
        {"admin-password", required_argument, NULL, OPT_ADMIN_PASSWORD},
        {"admin-db", required_argument, NULL, OPT_ADMIN_DB},
        {"direct", required_argument, NULL, OPT_DIRECT},
        {"mode", required_argument, NULL, OPT_MODE},
        {"scenario", required_argument, NULL, OPT_SCENARIO},
        {"concurrency", required_argument, NULL, 'c'},
        {"duration", required_argument, NULL, 'T'},
        {"rate", required_argument, NULL, OPT_RATE},
        {"ramp", required_argument, NULL, OPT_RAMP},
        {"idle", required_argument, NULL, OPT_IDLE},
        {"holders", required_argument, NULL, OPT_HOLDERS},
        {"restart-command", required_argument, NULL, OPT_RESTART_COMMAND},
        {"restart-at", required_argument, NULL, OPT_RESTART_AT},
        {"grace", required_argument, NULL, OPT_GRACE},
        {"keep-stats", no_argument, NULL, OPT_KEEP_STATS},
        {"out", required_argument, NULL, OPT_OUT},
        {"csv", required_argument, NULL, OPT_CSV},
        {"progress", no_argument, NULL, OPT_PROGRESS},
        {"allow-errors", no_argument, NULL, OPT_ALLOW_ERRORS},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    int  opt;
    bool restart_at_set = false;

    memset(o, 0, sizeof(*o));
    o->admin_db = "pgbun";
    o->concurrency = 10;
    o->duration = 30 * NS_PER_SEC;
    o->idle = -1;
    o->holders = -1;
    o->grace = 30 * NS_PER_SEC;
    while ((opt = getopt_long(argc, argv, "h:p:U:d:c:T:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': o->host = optarg; break;
        case 'p': o->port = optarg; break;
        case 'U': o->user = optarg; break;
        case OPT_PASSWORD: o->password = optarg; break;
        case 'd': o->dbname = optarg; break;
        case OPT_ADMIN_USER: o->admin_user = optarg; break;
        case OPT_ADMIN_PASSWORD: o->admin_password = optarg; break;
        case OPT_ADMIN_DB: o->admin_db = optarg; break;
        case OPT_DIRECT: o->direct = optarg; break;
        case OPT_MODE: o->mode = parse_mode(optarg); break;
        case OPT_SCENARIO: o->scenario = parse_scenario(optarg); break;
        case 'c': o->concurrency = parse_int("--concurrency", optarg, 1, 100000); break;
        case 'T': o->duration = parse_time_opt("--duration", optarg); break;
        case OPT_RATE: {
            char *end;

            o->rate = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !isfinite(o->rate) || o->rate <= 0)
                die(EXIT_SETUP, "--rate must be a positive number");
            break;
        }
        case OPT_RAMP: o->ramp = parse_time_opt("--ramp", optarg); break;
        case OPT_IDLE: o->idle = parse_time_opt("--idle", optarg); break;
        case OPT_HOLDERS: o->holders = parse_int("--holders", optarg, 1, 100000); break;
        case OPT_RESTART_COMMAND: o->restart_command = optarg; break;
        case OPT_RESTART_AT:
            o->restart_at = parse_time_opt("--restart-at", optarg);
            restart_at_set = true;
            break;
        case OPT_GRACE: o->grace = parse_time_opt("--grace", optarg); break;
        case OPT_KEEP_STATS: o->keep_stats = true; break;
        case OPT_OUT: o->out_path = optarg; break;
        case OPT_CSV: o->csv_path = optarg; break;
        case OPT_PROGRESS: o->progress = true; break;
        case OPT_ALLOW_ERRORS: o->allow_errors = true; break;
        case OPT_HELP: usage(stdout); exit(0);
        case OPT_VERSION: printf("pgbun-loadtest %s\n", PACKAGE_VERSION); exit(0);
        default: fprintf(stderr, "Try \"%s --help\".\n", progname); exit(EXIT_SETUP);
        }
    }
    if (optind < argc) die(EXIT_SETUP, "unexpected argument \"%s\"", argv[optind]);
    if (o->duration <= 0) die(EXIT_SETUP, "--duration must be more than 0");
    if (o->holders < 0) o->holders = o->concurrency / 10 > 0 ? o->concurrency / 10 : 1;
    if (o->scenario == SC_LONG_SESSION && o->holders > o->concurrency)
        die(EXIT_SETUP, "--holders (%d) must not exceed --concurrency (%d)", o->holders, o->concurrency);
    if (o->restart_command != NULL && o->scenario != SC_RECONNECT)
        die(EXIT_SETUP, "--restart-command belongs to --scenario=reconnect");
    if (!restart_at_set) o->restart_at = o->duration / 3;
    if (o->admin_user == NULL) o->admin_user = o->user;
    if (o->admin_password == NULL) o->admin_password = o->password;
}

/* ---- connections for set-up and checks (blocking: they are not the load) ---- */

static PGconn *connect_to(const struct lt_options *o, const char *user, const char *password, const char *dbname)
{
    struct pq_params p = {0};

    lt_conn_params(o, user, password, dbname, &p);
    return PQconnectdbParams(p.keys, p.vals, 0);
}

static char *first_line(const char *msg)
{
    static char buf[512];
    size_t      len;

    snprintf(buf, sizeof(buf), "%s", msg ? msg : "");
    len = strcspn(buf, "\n");
    buf[len] = '\0';
    return buf;
}

#define QUERY_DEADLINE 15 /* seconds for a set-up or check query: a paused pgbun would hold it for ever */

/*
 * Runs sql (simple protocol without parameters, as PgBouncer's console wants)
 * and returns its last result; NULL and *err set unless that returned rows or
 * a command status within QUERY_DEADLINE. After a timeout the connection is in
 * the middle of a query: the caller closes it.
 */
static PGresult *query_params(PGconn *conn, const char *sql, int nparams, const char *const *params, char *err,
                              size_t errlen)
{
    nsec_t    deadline = lt_now() + QUERY_DEADLINE * NS_PER_SEC;
    PGresult *res, *last = NULL;
    int       sent =
        nparams > 0 ? PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0) : PQsendQuery(conn, sql);

    if (!sent) {
        snprintf(err, errlen, "%.60s: %.400s", sql, first_line(PQerrorMessage(conn)));
        return NULL;
    }
    for (;;) {
        while (PQisBusy(conn)) {
            struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
            nsec_t        left = deadline - lt_now();
            int           r = left > 0 ? poll(&pfd, 1, (int)(left / NS_PER_MS) + 1) : 0;

            if (r < 0 && errno == EINTR) continue;
            if (r == 0) {
                snprintf(err, errlen, "%.60s: no answer within %d s", sql, QUERY_DEADLINE);
                PQclear(last);
                return NULL;
            }
            if (r < 0) {
                snprintf(err, errlen, "%.60s: poll: %s", sql, strerror(errno));
                PQclear(last);
                return NULL;
            }
            if (!PQconsumeInput(conn)) break;
        }
        res = PQgetResult(conn);
        if (res == NULL) break;
        PQclear(last);
        last = res;
    }
    if (last != NULL && (PQresultStatus(last) == PGRES_TUPLES_OK || PQresultStatus(last) == PGRES_COMMAND_OK))
        return last;
    snprintf(err, errlen, "%.60s: %.400s", sql, first_line(last ? PQresultErrorMessage(last) : PQerrorMessage(conn)));
    PQclear(last);
    return NULL;
}

static PGresult *query(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    return query_params(conn, sql, 0, NULL, err, errlen);
}

/* The row of res whose columns a and b equal va and vb (b NULL: only a); -1 if none. */
static int find_row(const PGresult *res, const char *a, const char *va, const char *b, const char *vb)
{
    int ca = PQfnumber(res, a), cb = b ? PQfnumber(res, b) : -1;

    if (ca < 0 || (b && cb < 0)) return -1;
    for (int r = 0; r < PQntuples(res); r++)
        if (strcmp(PQgetvalue(res, r, ca), va) == 0 && (b == NULL || strcmp(PQgetvalue(res, r, cb), vb) == 0)) return r;
    return -1;
}

/* Column col of row r as text, NULL when there is no such column or it is null. */
static const char *field(const PGresult *res, int r, const char *col)
{
    int c = PQfnumber(res, col);

    return c < 0 || r < 0 || PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c);
}

struct target {
    char host[256], port[16], dbname[128], user[128];
};

/* What pgbun says about the run, from its console. */
struct pgbun_view {
    bool        ok;         /* figures were read */
    char        error[512]; /* why not */
    const char *scope;      /* "run", or "since pgbun start or last RESET STATS" */
    char        mode[16];   /* the pool's pool_mode */
    char        reuse[32];  /* reuse_efficiency_percent, as printed by pgbun */
    char        max_servers[32];
    char        assignments[32], connects[32], queries[32], xacts[32];
    double      server_idle_timeout, client_idle_timeout; /* seconds; -1 when unknown */
};

static PGconn *admin_connect(const struct lt_options *o, struct pgbun_view *v)
{
    PGconn *conn = connect_to(o, o->admin_user, o->admin_password, o->admin_db);

    if (PQstatus(conn) == CONNECTION_OK) return conn;
    snprintf(v->error, sizeof(v->error), "pgbun's console (dbname=%s): %s", o->admin_db,
             first_line(PQerrorMessage(conn)));
    PQfinish(conn);
    return NULL;
}

static double config_seconds(const PGresult *res, const char *key)
{
    int         r = find_row(res, "key", key, NULL, NULL);
    const char *value = field(res, r, "value");
    nsec_t      v;

    if (value == NULL || !parse_time(value, &v)) return -1;
    return (double)v / NS_PER_SEC;
}

/* Before the run: the pool's mode, the idle timeouts, RESET STATS. */
static void pgbun_before(const struct lt_options *o, const struct target *t, struct pgbun_view *v)
{
    PGconn   *conn;
    PGresult *res;
    char      err[512];

    v->server_idle_timeout = v->client_idle_timeout = -1;
    v->scope = "since pgbun start or last RESET STATS";
    if (o->admin_db[0] == '\0') {
        snprintf(v->error, sizeof(v->error), "no console (--admin-db='')");
        return;
    }
    conn = admin_connect(o, v);
    if (conn == NULL) return;
    if ((res = query(conn, "SHOW POOLS", v->error, sizeof(v->error))) != NULL) {
        int r = find_row(res, "database", t->dbname, "user", t->user);

        if (r >= 0 && field(res, r, "pool_mode")) snprintf(v->mode, sizeof(v->mode), "%s", field(res, r, "pool_mode"));
        PQclear(res);
    }
    if ((res = query(conn, "SHOW CONFIG", err, sizeof(err))) != NULL) {
        v->server_idle_timeout = config_seconds(res, "server_idle_timeout");
        v->client_idle_timeout = config_seconds(res, "client_idle_timeout");
        PQclear(res);
    }
    if (!o->keep_stats) {
        if ((res = query(conn, "RESET STATS", err, sizeof(err))) != NULL) {
            PQclear(res);
            v->scope = "run";
        } else {
            warn("%s; pgbun's figures cover everything since its start or last reset", err);
        }
    }
    PQfinish(conn);
}

static void copy_field(char *dst, size_t len, const PGresult *res, int r, const char *col)
{
    const char *s = field(res, r, col);

    snprintf(dst, len, "%s", s ? s : "");
}

/* After the run: SHOW STATS for the database. A new connection: the console may idle out during a run. */
static void pgbun_after(const struct lt_options *o, const struct target *t, struct pgbun_view *v)
{
    PGconn   *conn;
    PGresult *res;
    int       r;

    if (o->admin_db[0] == '\0' || (conn = admin_connect(o, v)) == NULL) return;
    res = query(conn, "SHOW STATS", v->error, sizeof(v->error));
    if (res != NULL) {
        r = find_row(res, "database", t->dbname, NULL, NULL);
        if (r < 0) {
            snprintf(v->error, sizeof(v->error), "SHOW STATS has no row for database %s", t->dbname);
        } else {
            copy_field(v->reuse, sizeof(v->reuse), res, r, "reuse_efficiency_percent");
            copy_field(v->max_servers, sizeof(v->max_servers), res, r, "max_server_connections_used");
            copy_field(v->assignments, sizeof(v->assignments), res, r, "total_server_assignment_count");
            copy_field(v->connects, sizeof(v->connects), res, r, "total_server_connect_count");
            copy_field(v->queries, sizeof(v->queries), res, r, "total_query_count");
            copy_field(v->xacts, sizeof(v->xacts), res, r, "total_xact_count");
            v->ok = true;
            v->error[0] = '\0';
        }
        PQclear(res);
    }
    PQfinish(conn);
}

/* ---- checks after the run ---- */

struct checks {
    bool    done; /* the check connection worked */
    char    error[512];
    int64_t rows_found; /* boundary: this run's rows in txn_log */
    int64_t leaked;     /* sessions of the user left idle in a transaction begun during the run */
    char    since[64];  /* PostgreSQL's clock at the start of the run */
};

static PGconn *check_connect(const struct lt_options *o, struct checks *c)
{
    static const char *const keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *const        vals[] = {o->direct, "15", "pgbun-loadtest", NULL};
    PGconn *conn = o->direct ? PQconnectdbParams(keys, vals, 1) : connect_to(o, o->user, o->password, o->dbname);

    if (PQstatus(conn) == CONNECTION_OK) return conn;
    snprintf(c->error, sizeof(c->error), "check connection: %s", first_line(PQerrorMessage(conn)));
    PQfinish(conn);
    return NULL;
}

/* The one number sql returns, or -1 (and *err set). */
static int64_t scalar(PGconn *conn, const char *sql, const char *param, char *err, size_t errlen)
{
    PGresult *res = query_params(conn, sql, 1, &param, err, errlen);
    int64_t   v = -1;

    if (res != NULL && PQntuples(res) == 1 && PQnfields(res) == 1)
        v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    else if (res != NULL)
        snprintf(err, errlen, "%s: not one value", sql);
    PQclear(res);
    return v;
}

/* Reads PostgreSQL's clock before the run: only transactions begun after it are the run's. */
static void checks_begin(const struct lt_options *o, struct checks *c)
{
    PGconn   *conn = check_connect(o, c);
    PGresult *res;

    if (conn == NULL) return;
    res = query(conn, "SELECT now()::text", c->error, sizeof(c->error));
    if (res != NULL && PQntuples(res) == 1) snprintf(c->since, sizeof(c->since), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(conn);
}

static void run_checks(const struct run *run, const struct target *t, struct checks *c)
{
    const struct lt_options *o = run->opt;
    PGconn                  *conn = check_connect(o, c);
    nsec_t                   until = lt_now() + 5 * NS_PER_SEC;

    c->rows_found = c->leaked = -1;
    if (conn == NULL) return;
    if (o->scenario == SC_BOUNDARY)
        c->rows_found =
            scalar(conn, "SELECT count(*) FROM txn_log WHERE note = $1", run->tag, c->error, sizeof(c->error));
    /* pgbun ends a gone client's transaction as it notices; give it a few seconds. */
    while (c->rows_found >= 0 || o->scenario != SC_BOUNDARY) {
        const char *params[2] = {t->user, c->since[0] ? c->since : "-infinity"};
        PGresult   *res = query_params(conn,
                                       "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                         " AND usename = $1 AND state LIKE 'idle in transaction%'"
                                         " AND xact_start >= $2::timestamptz AND pid <> pg_backend_pid()",
                                       2, params, c->error, sizeof(c->error));

        c->leaked = res != NULL && PQntuples(res) == 1 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : -1;
        PQclear(res);
        if (c->leaked <= 0 || lt_now() >= until) break;
        usleep(100000);
    }
    c->done = c->leaked >= 0 && (o->scenario != SC_BOUNDARY || c->rows_found >= 0);
    PQfinish(conn);
}

/* ---- the report ---- */

struct json {
    FILE *f;
    int   depth;
    bool  first[8];
};

static void j_key(struct json *j, const char *key)
{
    fputs(j->first[j->depth] ? "\n" : ",\n", j->f);
    j->first[j->depth] = false;
    for (int i = 0; i < j->depth; i++)
        fputs("  ", j->f);
    if (key != NULL) {
        out_json_string(j->f, key);
        fputs(": ", j->f);
    }
}

static void j_open(struct json *j, const char *key, char brace)
{
    if (j->depth > 0 || key != NULL) j_key(j, key);
    fputc(brace, j->f);
    j->first[++j->depth] = true;
}

static void j_close(struct json *j, char brace)
{
    bool empty = j->first[j->depth];

    j->depth--;
    if (!empty) {
        fputc('\n', j->f);
        for (int i = 0; i < j->depth; i++)
            fputs("  ", j->f);
    }
    fputc(brace, j->f);
}

static void j_str(struct json *j, const char *key, const char *v)
{
    j_key(j, key);
    if (v == NULL)
        fputs("null", j->f);
    else
        out_json_string(j->f, v);
}

static void j_int(struct json *j, const char *key, int64_t v)
{
    j_key(j, key);
    fprintf(j->f, "%lld", (long long)v);
}

static void j_num(struct json *j, const char *key, double v)
{
    j_key(j, key);
    fprintf(j->f, "%.3f", v);
}

static void j_bool(struct json *j, const char *key, bool v)
{
    j_key(j, key);
    fputs(v ? "true" : "false", j->f);
}

static void j_null(struct json *j, const char *key)
{
    j_key(j, key);
    fputs("null", j->f);
}

/* A number pgbun printed, or null when there was none. */
static void j_raw(struct json *j, const char *key, const char *v)
{
    char *end;

    if (v == NULL || v[0] == '\0') {
        j_null(j, key);
        return;
    }
    strtod(v, &end);
    if (*end != '\0') {
        j_str(j, key, v);
        return;
    }
    j_key(j, key);
    fputs(v, j->f);
}

static void j_errors(struct json *j, const char *key, const struct errors *e)
{
    j_open(j, key, '{');
    for (int i = 0; i <= ERR_KINDS; i++)
        if (i < e->nkinds || (i == ERR_KINDS && e->kind[i].count > 0))
            j_int(j, e->kind[i].code, (int64_t)e->kind[i].count);
    j_close(j, '}');
}

static double secs(nsec_t ns)
{
    return (double)ns / NS_PER_SEC;
}

static void j_at(struct json *j, const char *key, const struct run *run, nsec_t t)
{
    if (t == 0)
        j_null(j, key);
    else
        j_num(j, key, secs(t - run->start));
}

static void report(FILE *f, const struct run *run, const struct target *t, const struct pgbun_view *v,
                   const struct checks *c, const char *started, enum lt_mode mode)
{
    const struct lt_options *o = run->opt;
    struct json              j = {.f = f};
    double                   elapsed = secs(run->end - run->start);
    uint64_t                 total = run->total;

    j_open(&j, NULL, '{');
    j_str(&j, "scenario", lt_scenario_name(o->scenario));
    j_str(&j, "mode", mode != MODE_UNSET ? lt_mode_name(mode) : NULL);
    j_int(&j, "concurrency", o->concurrency);
    j_num(&j, "duration_seconds", elapsed);
    j_int(&j, "total_queries", (int64_t)total);
    j_int(&j, "successful_queries", (int64_t)run->ok);
    j_int(&j, "errors", (int64_t)run->errors.total);
    j_key(&j, "error_rate");
    fprintf(f, "%.6f",
            total + run->other_failures ? (double)run->errors.total / (double)(total + run->other_failures) : 0.0);
    j_num(&j, "avg_latency_ms", hist_avg_ms(&run->latency));
    j_num(&j, "p50_latency_ms", hist_quantile_ms(&run->latency, 0.50));
    j_num(&j, "p95_latency_ms", hist_quantile_ms(&run->latency, 0.95));
    j_num(&j, "p99_latency_ms", hist_quantile_ms(&run->latency, 0.99));
    j_num(&j, "max_latency_ms", (double)run->latency.max / NS_PER_MS);
    j_raw(&j, "reuse_efficiency_percent", v->ok ? v->reuse : NULL);
    j_raw(&j, "max_server_connections_used", v->ok ? v->max_servers : NULL);
    j_num(&j, "throughput_qps", elapsed > 0 ? (double)run->ok / elapsed : 0.0);
    j_int(&j, "expected_errors", (int64_t)run->expected_errors);
    j_errors(&j, "errors_by_sqlstate", &run->errors);
    j_open(&j, "error_messages", '[');
    for (int i = 0; i < run->errors.nsamples; i++)
        j_str(&j, NULL, run->errors.sample[i]);
    j_close(&j, ']');

    j_open(&j, "connections", '{');
    j_int(&j, "opened", (int64_t)run->connects);
    j_int(&j, "failed", (int64_t)run->connect_failures);
    j_int(&j, "max_open", run->max_open);
    j_close(&j, '}');

    j_open(&j, "pgbun", '{');
    j_str(&j, "scope", v->ok ? v->scope : NULL);
    j_raw(&j, "server_assignment_count", v->ok ? v->assignments : NULL);
    j_raw(&j, "server_connect_count", v->ok ? v->connects : NULL);
    j_raw(&j, "query_count", v->ok ? v->queries : NULL);
    j_raw(&j, "xact_count", v->ok ? v->xacts : NULL);
    j_str(&j, "error", v->ok ? NULL : v->error);
    j_close(&j, '}');

    if (c->leaked >= 0)
        j_int(&j, "open_transactions_after_run", c->leaked);
    else
        j_null(&j, "open_transactions_after_run");

    switch (o->scenario) {
    case SC_BOUNDARY:
        j_open(&j, "boundary", '{');
        j_int(&j, "committed_transactions", (int64_t)run->boundary.committed);
        j_int(&j, "rolled_back_transactions", (int64_t)run->boundary.rolled_back);
        j_int(&j, "failed_transactions", (int64_t)run->boundary.failed_as_expected);
        j_int(&j, "rows_expected", (int64_t)run->boundary.rows_expected);
        j_int(&j, "rows_uncertain", (int64_t)run->boundary.rows_uncertain);
        if (c->rows_found >= 0) {
            j_int(&j, "rows_found", c->rows_found);
            j_bool(&j, "rows_match",
                   (uint64_t)c->rows_found >= run->boundary.rows_expected &&
                       (uint64_t)c->rows_found <= run->boundary.rows_expected + run->boundary.rows_uncertain);
        } else {
            j_null(&j, "rows_found");
            j_null(&j, "rows_match");
        }
        j_str(&j, "tag", run->tag);
        j_close(&j, '}');
        break;
    case SC_IDLE:
        j_open(&j, "idle", '{');
        j_num(&j, "idle_seconds", secs(run->idle.idle));
        j_int(&j, "pauses", (int64_t)run->idle.pauses);
        j_int(&j, "served_after_idle", (int64_t)run->idle.served_after_idle);
        j_int(&j, "idle_disconnects", (int64_t)run->idle.disconnects.total);
        j_errors(&j, "idle_disconnects_by_sqlstate", &run->idle.disconnects);
        j_close(&j, '}');
        break;
    case SC_LONG_SESSION:
        j_open(&j, "long_session", '{');
        j_int(&j, "holders", run->longs.holders);
        j_int(&j, "holder_queries", (int64_t)run->longs.holder_queries);
        j_int(&j, "backend_changes", (int64_t)run->longs.backend_changes);
        j_close(&j, '}');
        break;
    case SC_RECONNECT:
        j_open(&j, "reconnect", '{');
        j_int(&j, "outage_errors", (int64_t)run->outage.total);
        j_errors(&j, "outage_by_sqlstate", &run->outage);
        j_at(&j, "outage_start_s", run, run->reconnect.first_error);
        j_at(&j, "outage_end_s", run, run->reconnect.last_error);
        j_num(&j, "outage_seconds",
              run->reconnect.first_error ? secs(run->reconnect.last_error - run->reconnect.first_error) : 0.0);
        j_at(&j, "recovered_s", run, run->reconnect.not_recovered ? 0 : run->reconnect.recovered);
        if (run->reconnect.first_error && run->reconnect.recovered && !run->reconnect.not_recovered)
            j_num(&j, "recovery_seconds", secs(run->reconnect.recovered - run->reconnect.first_error));
        else
            j_null(&j, "recovery_seconds");
        j_int(&j, "clients_not_recovered", run->reconnect.not_recovered);
        j_at(&j, "restart_at_s", run, run->reconnect.restart_started);
        if (run->reconnect.restart_status >= 0 && WIFEXITED(run->reconnect.restart_status))
            j_int(&j, "restart_exit_status", WEXITSTATUS(run->reconnect.restart_status));
        else
            j_null(&j, "restart_exit_status");
        j_close(&j, '}');
        break;
    default: break;
    }

    j_open(&j, "target", '{');
    j_str(&j, "host", t->host);
    j_str(&j, "port", t->port);
    j_str(&j, "dbname", t->dbname);
    j_str(&j, "user", t->user);
    j_close(&j, '}');
    if (o->rate > 0)
        j_num(&j, "rate_qps", o->rate);
    else
        j_null(&j, "rate_qps");
    j_num(&j, "ramp_seconds", secs(o->ramp));
    j_str(&j, "started_at", started);
    j_str(&j, "version", PACKAGE_VERSION);
    j_close(&j, '}');
    fputc('\n', f);
}

static void raise_fd_limit(int need)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= (rlim_t)need) return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (rlim_t)need ? (rlim_t)need : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < (rlim_t)need)
        warn("only %llu file descriptors for %d connections", (unsigned long long)rl.rlim_cur, need - 64);
}

int main(int argc, char **argv)
{
    struct lt_options o;
    struct run        run;
    struct target     t;
    struct pgbun_view view;
    struct checks     checks;
    enum lt_mode      mode;
    PGconn           *probe;
    char             *json = NULL;
    size_t            json_len = 0;
    FILE             *mem;
    char              started[32];
    time_t            now = time(NULL);
    bool              failed = false;

    parse_options(argc, argv, &o);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit(o.concurrency + 64);
    memset(&run, 0, sizeof(run));
    memset(&view, 0, sizeof(view));
    memset(&checks, 0, sizeof(checks));
    memset(&t, 0, sizeof(t));
    run.opt = &o;
    strftime(started, sizeof(started), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));

    /* The target answers, and the scenario's tables are there. */
    probe = connect_to(&o, o.user, o.password, o.dbname);
    if (PQstatus(probe) != CONNECTION_OK) {
        char msg[512];

        snprintf(msg, sizeof(msg), "%s", first_line(PQerrorMessage(probe)));
        PQfinish(probe);
        die(EXIT_SETUP, "cannot connect: %s", msg);
    }
    snprintf(t.host, sizeof(t.host), "%s", PQhost(probe));
    snprintf(t.port, sizeof(t.port), "%s", PQport(probe));
    snprintf(t.dbname, sizeof(t.dbname), "%s", PQdb(probe));
    snprintf(t.user, sizeof(t.user), "%s", PQuser(probe));
    {
        char      err[512];
        PGresult *res = query(probe, "SELECT 1 FROM users, txn_log LIMIT 0", err, sizeof(err));

        PQfinish(probe);
        if (res == NULL)
            die(EXIT_SETUP, "%s (database %s needs the tables of docker-entrypoint-initdb.d/init.sql)", err, t.dbname);
        PQclear(res);
    }

    checks_begin(&o, &checks); /* before RESET STATS: through pgbun it counts as a query */
    pgbun_before(&o, &t, &view);
    mode = o.mode;
    if (view.mode[0] != '\0') {
        enum lt_mode pool = MODE_UNSET;

        for (int m = MODE_SESSION; m <= MODE_STATEMENT; m++)
            if (strcmp(view.mode, mode_names[m]) == 0) pool = (enum lt_mode)m;
        if (o.mode != MODE_UNSET && pool != o.mode)
            die(EXIT_SETUP, "--mode=%s, but pgbun pools %s/%s in %s mode (SHOW POOLS)", lt_mode_name(o.mode), t.dbname,
                t.user, view.mode);
        mode = pool;
        o.mode = pool;
    } else if (o.mode != MODE_UNSET) {
        warn("--mode=%s not checked: %s", lt_mode_name(o.mode),
             view.error[0] ? view.error : "SHOW POOLS has no pool for this database and user");
    }
    if (o.scenario == SC_LONG_SESSION && o.mode == MODE_STATEMENT)
        die(EXIT_SETUP, "long-session needs session or transaction mode: statement mode has no transactions to hold");

    if (o.scenario == SC_IDLE) {
        run.idle.idle = o.idle;
        if (run.idle.idle < 0) {
            double longest = view.server_idle_timeout > view.client_idle_timeout ? view.server_idle_timeout
                                                                                 : view.client_idle_timeout;

            run.idle.idle = longest > 0 ? (nsec_t)((longest + 1.5) * NS_PER_SEC) : 5 * NS_PER_SEC;
        }
        if (run.idle.idle >= o.duration)
            warn("the idle pause (%.1f s) is not shorter than the run (%.1f s): each connection pauses once at most",
                 secs(run.idle.idle), secs(o.duration));
    }
    run.longs.holders = o.scenario == SC_LONG_SESSION ? o.holders : 0;
    snprintf(run.tag, sizeof(run.tag), "pgbun-loadtest %d-%lld", (int)getpid(), (long long)lt_now());
    if (o.csv_path != NULL) {
        run.csv = fopen(o.csv_path, "we");
        if (run.csv == NULL) die(EXIT_SETUP, "%s: %s", o.csv_path, strerror(errno));
        fputs("second,connections,queries,successful,errors,avg_latency_ms,p95_latency_ms\n", run.csv);
    }

    if (!driver_run(&run)) die(EXIT_SETUP, "out of memory");
    if (run.csv != NULL && fclose(run.csv) != 0) warn("%s: %s", o.csv_path, strerror(errno));
    if (run.reconnect.restart_status > 0) {
        char msg[96];
        int  st = run.reconnect.restart_status;

        if (WIFEXITED(st))
            snprintf(msg, sizeof(msg), "the restart command exited with status %d", WEXITSTATUS(st));
        else
            snprintf(msg, sizeof(msg),
                     "the restart command was killed by signal %d (still running after the grace period?)",
                     WTERMSIG(st));
        errors_add(&run.errors, "restart_failed", msg);
        run.other_failures++;
    }
    pgbun_after(&o, &t, &view);
    if (!view.ok) warn("pgbun's figures are null: %s", view.error);
    run_checks(&run, &t, &checks);
    if (!checks.done) warn("checks after the run: %s", checks.error);

    mem = open_memstream(&json, &json_len);
    if (mem == NULL) die(EXIT_SETUP, "out of memory");
    report(mem, &run, &t, &view, &checks, started, mode);
    fclose(mem);
    if (fwrite(json, 1, json_len, stdout) != json_len || fflush(stdout) != 0)
        die(EXIT_ERRORS, "cannot write the report to stdout: %s", strerror(errno));
    if (o.out_path != NULL) {
        FILE *f = fopen(o.out_path, "w");

        if (f == NULL || fwrite(json, 1, json_len, f) != json_len || fclose(f) != 0)
            die(EXIT_ERRORS, "%s: cannot write: %s", o.out_path, strerror(errno));
    }
    free(json);

    if (run.errors.total > 0 && !o.allow_errors) {
        warn("%llu errors (--allow-errors to exit 0 anyway)", (unsigned long long)run.errors.total);
        failed = true;
    }
    if (o.scenario == SC_BOUNDARY) {
        if (checks.rows_found < 0) {
            warn("boundary: this run's rows could not be counted");
            failed = true;
        } else if ((uint64_t)checks.rows_found < run.boundary.rows_expected ||
                   (uint64_t)checks.rows_found > run.boundary.rows_expected + run.boundary.rows_uncertain) {
            warn("boundary: %lld rows in txn_log, %llu committed (%llu uncertain)", (long long)checks.rows_found,
                 (unsigned long long)run.boundary.rows_expected, (unsigned long long)run.boundary.rows_uncertain);
            failed = true;
        }
    }
    if (checks.leaked > 0) {
        warn("%lld sessions of %s still idle in a transaction after the run", (long long)checks.leaked, t.user);
        failed = true;
    }
    if (o.scenario == SC_RECONNECT && run.reconnect.not_recovered > 0) {
        warn("%d connections never succeeded again after their last outage error", run.reconnect.not_recovered);
        failed = true;
    }
    return failed ? EXIT_ERRORS : 0;
}
