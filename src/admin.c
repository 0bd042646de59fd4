/*
 * admin.c - the console: commands over the simple and extended protocols.
 *
 * A console client sits in its own pool (pool->admin) and stays IDLE: it
 * never gets a server. Each message is answered here:
 *
 *   Query "SHOW POOLS; RELOAD"  -> run each statement -> ReadyForQuery
 *   Parse  -> the statement is checked and kept    -> ParseComplete
 *   Bind   -> a portal over it (result formats)    -> BindComplete
 *   Describe S/P -> RowDescription or NoData (nothing runs)
 *   Execute -> the command runs, rows without a RowDescription
 *   Sync   -> ReadyForQuery; after an error, messages up to Sync are dropped
 *
 * PAUSE and WAIT_CLOSE wait for servers to be released: the client's input
 * is held until a timer sees the condition met, then the reply goes out and
 * processing resumes where it stopped.
 */
#define LOG_EVENT LOGE_ADMIN /* the event kind of this file's log lines (log.h) */
#include "admin.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin_parse.h"
#include "client.h"
#include "config.h"
#include "janitor.h"
#include "log.h"
#include "pgbun.h"
#include "worker.h"
#include "pool.h"
#include "proto.h"
#include "rowset.h"
#include "server.h"
#include "show.h"

#define ADMIN_MAX_NAMED 32            /* prepared statements or portals per console client */
#define ADMIN_MSG_MAX   (1024 * 1024) /* the largest message a console client may send */
#define ADMIN_BATCH     256           /* messages answered per wakeup */

struct named {
    char   *name;
    char   *query;
    int     nformats; /* portals: result format codes from Bind */
    int16_t formats[ROWSET_MAX_FORMATS];
};

/* Why the client's input is held (reading is off meanwhile). */
enum wait_kind {
    WAIT_NONE = 0,
    WAIT_PAUSE,      /* PAUSE [db]: until no server of it is in use */
    WAIT_CLOSE_DONE, /* WAIT_CLOSE [db]: until no server of it is marked close_needed */
    WAIT_OUTPUT,     /* until the client has read what it was sent */
    WAIT_FOREVER,    /* after SHUTDOWN: nothing more is answered */
};

struct admin_session {
    enum admin_role role;
    struct named    stmts[ADMIN_MAX_NAMED];
    int             nstmts;
    struct named    portals[ADMIN_MAX_NAMED];
    int             nportals;
    bool            skipping; /* an extended-protocol error: drop messages until Sync */
    enum wait_kind  wait;
    char           *wait_db;  /* NULL: every database */
    const char     *wait_tag; /* CommandComplete to send when the wait ends */
    char           *rest;     /* statements of a Query still to run after the wait */
    bool            rest_rfq; /* the Query still owes its ReadyForQuery */
    struct event   *ev;       /* polls a wait's condition, or continues a long batch */
};

static void process(struct client *c);

/* ---- access ---- */

bool admin_is_console(const char *dbname)
{
    return strcmp(dbname, "pgbun") == 0 || (strcmp(dbname, "pgbouncer") == 0 && pgbun.cfg->pgbouncer_alias);
}

bool admin_peer_is_self(const struct client *c)
{
    struct ucred cred;
    socklen_t    len = sizeof(cred);

    return c->is_unix && c->io.fd >= 0 && getsockopt(c->io.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
           cred.uid == geteuid();
}

/* ParameterStatus a console client gets: enough for psql, drivers and monitoring. */
static bool fill_welcome(struct varlist *w)
{
    const char *version = NULL;
    char        buf[128];

    worker_stop_world(); /* the version comes from any worker's pool */
    for (struct pool *p = pool_first(); p != NULL && version == NULL; p = pool_next(p))
        if (!p->admin && p->welcome_ready) version = varlist_get(&p->welcome, "server_version");
    /* A PostgreSQL version first, so that clients parse it; then who answers. */
    snprintf(buf, sizeof(buf), "%.*s (pgbun %s)", version ? (int)strcspn(version, " ") : 4, version ? version : "16.0",
             PGBUN_VERSION);
    worker_start_world();
    return varlist_set(w, "server_version", buf) && varlist_set(w, "server_encoding", "UTF8") &&
           varlist_set(w, "client_encoding", "UTF8") && varlist_set(w, "DateStyle", "ISO, MDY") &&
           varlist_set(w, "IntervalStyle", "postgres") && varlist_set(w, "TimeZone", "UTC") &&
           varlist_set(w, "integer_datetimes", "on") && varlist_set(w, "standard_conforming_strings", "on") &&
           varlist_set(w, "is_superuser", "off") && varlist_set(w, "application_name", "");
}

static enum admin_role role_of(const struct client *c)
{
    if (c->peer_admin || config_list_has(pgbun.cfg->admin_users, c->user)) return ADMIN_FULL;
    if (config_list_has(pgbun.cfg->stats_users, c->user)) return ADMIN_STATS;
    return ADMIN_NONE;
}

struct pool *admin_login(struct client *c)
{
    enum admin_role role = role_of(c);
    struct pool    *p;

    if (role == ADMIN_NONE) {
        client_close(c, "28000",
                     "user \"%s\" may not use the admin console: it is in neither admin_users nor stats_users",
                     c->user);
        return NULL;
    }
    if ((c->console = calloc(1, sizeof(*c->console))) == NULL || (p = pool_get_admin(c->dbname, c->user)) == NULL) {
        client_close(c, "53200", "out of memory");
        return NULL;
    }
    c->console->role = role;
    /* Made anew for each login: the first real server may have appeared since. */
    varlist_clear(&p->welcome);
    if (!fill_welcome(&p->welcome)) {
        client_close(c, "53200", "out of memory");
        return NULL;
    }
    p->welcome_ready = true;
    return p;
}

static void clear_named(struct named *n)
{
    free(n->name);
    free(n->query);
    memset(n, 0, sizeof(*n));
}

void admin_client_free(struct client *c)
{
    struct admin_session *a = c->console;

    if (a == NULL) return;
    for (int i = 0; i < a->nstmts; i++)
        clear_named(&a->stmts[i]);
    for (int i = 0; i < a->nportals; i++)
        clear_named(&a->portals[i]);
    free(a->wait_db);
    free(a->rest);
    if (a->ev) event_free(a->ev);
    free(a);
    c->console = NULL;
}

/* ---- statements ---- */

static void error(struct client *c, const char *sqlstate, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void error(struct client *c, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    proto_add_verror(c->out, "ERROR", sqlstate, fmt, ap);
    va_end(ap);
}

static void notice(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void notice(struct client *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    proto_add_vnotice(c->out, fmt, ap);
    va_end(ap);
}

static void complete(struct client *c, const char *tag)
{
    proto_add_command_complete(c->out, tag);
}

/*
 * Session settings drivers send right after connecting (JDBC's SET
 * extra_float_digits = 3, ...): accepted and ignored, since the console's
 * output does not depend on them. Anything else must be a pgbun key.
 */
static bool session_setting(const char *key)
{
    static const char *const names[] = {
        "extra_float_digits", "application_name", "client_encoding",   "datestyle",    "timezone",
        "intervalstyle",      "search_path",      "statement_timeout", "lock_timeout", "client_min_messages"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(key, names[i]) == 0) return true;
    return false;
}

/* Checks a statement without running it: known, right number of arguments, allowed for this user. */
static bool check_command(struct client *c, const char *sql, struct admin_parse_cmd *cmd)
{
    char err[ADMIN_PARSE_ERR_MAX];

    if (!admin_parse_statement(sql, cmd, err, sizeof(err))) {
        error(c, "42601", "%s", err);
        return false;
    }
    /* Rights follow the running config: a RELOAD or SET that drops a user applies at once. */
    c->console->role = role_of(c);
    if (c->console->role == ADMIN_NONE) {
        error(c, "42501", "user \"%s\" is no longer in admin_users or stats_users", c->user);
        return false;
    }
    if (!cmd->show && c->console->role != ADMIN_FULL && !(strcmp(cmd->word, "SET") == 0 && session_setting(cmd->arg))) {
        error(c, "42501", "admin rights are needed for %s: user \"%s\" is in stats_users only", cmd->word, c->user);
        return false;
    }
    return true;
}

/* ---- control commands ---- */

/* Each change a RELOAD made, as a NOTICE. */
struct reload_report {
    struct client *c;
    int            changes;
};

static void notice_change(void *arg, const char *line)
{
    struct reload_report *r = arg;

    notice(r->c, "%s", line);
    r->changes++;
}

static bool cmd_reload(struct client *c)
{
    struct reload_report r = {c, 0};
    char                *err = NULL;

    if (!pgbun_reload(pgbun_config_path(), notice_change, &r, &err)) {
        error(c, "F0000", "RELOAD failed, the running configuration stays: %s", err ? err : "out of memory");
        free(err);
        return false;
    }
    log_info("RELOAD from the console (C-%llu): configuration reloaded", (unsigned long long)c->id);
    if (r.changes == 0) notice(c, "no setting changed");
    complete(c, "RELOAD");
    return true;
}

static bool cmd_set(struct client *c, const struct admin_parse_cmd *cmd)
{
    struct pgbun_config *cfg;
    char                *err = NULL;

    if (session_setting(cmd->arg)) {
        complete(c, "SET");
        return true;
    }
    cfg = config_dup(pgbun.cfg);

    if (cfg == NULL) {
        error(c, "53200", "out of memory");
        return false;
    }
    if (!config_set(cfg, cmd->arg, cmd->value, &err)) {
        config_free(cfg);
        error(c, "22023", "%s", err ? err : "out of memory");
        free(err);
        return false;
    }
    if (!pgbun_apply(cfg, pgbun_log_change, NULL, &err)) { /* cfg is freed */
        error(c, "22023", "%s", err ? err : "out of memory");
        free(err);
        return false;
    }
    log_info("SET %s = '%s' from the console (C-%llu)", cmd->arg, cmd->value, (unsigned long long)c->id);
    complete(c, "SET");
    return true;
}

/*
 * A database named in a command must exist (a [databases] entry or a pool).
 * The error is PgBouncer's, code and words, which scripts match.
 */
static bool known_db(struct client *c, const char *db)
{
    /* By its exact name: "*" would match any typo. */
    if (config_db_named(pgbun.cfg, db) != NULL) return true;
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p))
        if (strcmp(p->dbname, db) == 0) return true;
    error(c, "08P01", "no such database: %s", db);
    return false;
}

static void ev_cb(evutil_socket_t fd, short what, void *arg);

/* The session's event: a poll in 50 ms, or (now) a run after this loop iteration. */
static bool arm(struct client *c, bool now)
{
    struct admin_session *a = c->console;
    struct timeval        tv = {0, 50000};

    if (a->ev == NULL && (a->ev = evtimer_new(c->w->base, ev_cb, c)) == NULL) return false;
    if (now)
        event_active(a->ev, EV_TIMEOUT, 0);
    else
        evtimer_add(a->ev, &tv);
    return true;
}

/* Holds the client's input: no reading, no answering, until the wait ends. */
static void hold(struct client *c, enum wait_kind kind)
{
    c->console->wait = kind;
    io_set_reading(&c->io, false);
}

/* PAUSE or WAIT_CLOSE: answered with `tag` once the condition of `kind` holds; false on OOM. */
static bool start_wait(struct client *c, enum wait_kind kind, const char *db, const char *tag)
{
    struct admin_session *a = c->console;
    char                 *copy = db ? strdup(db) : NULL;

    if ((db != NULL && copy == NULL) || !arm(c, false)) {
        free(copy);
        return false;
    }
    free(a->wait_db);
    a->wait_db = copy;
    a->wait_tag = tag;
    hold(c, kind);
    return true;
}

/* Closes every server and client of the pools of db (NULL: all but the console). */
static void kill_pools(const char *db, const char *why)
{
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p)) {
        if (p->admin || (db != NULL && strcmp(p->dbname, db) != 0)) continue;
        for (int st = 0; st < CL_CLOSING; st++) {
            struct client *cl;

            while ((cl = TAILQ_FIRST(&p->clients[st])) != NULL)
                client_close(cl, "08P01", "%s", why);
        }
        for (int st = 0; st < SV_CLOSING; st++) {
            struct server *s;

            while ((s = TAILQ_FIRST(&p->servers[st])) != NULL)
                server_close(s, "%s", why);
        }
    }
}

static struct client *find_client(uint64_t id)
{
    for (struct client *c = pool_first_login_client(); c != NULL; c = pool_next_login_client(c))
        if (c->id == id) return c;
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p))
        for (int st = 0; st < CL_CLOSING; st++)
            for (struct client *c = TAILQ_FIRST(&p->clients[st]); c != NULL; c = TAILQ_NEXT(c, entry))
                if (c->id == id) return c;
    return NULL;
}

/* Runs a checked control command. Returns false after an error; *waiting when the reply comes later. */
static bool run_control(struct client *c, const struct admin_parse_cmd *cmd, bool *waiting)
{
    const char *db = cmd->nargs > 0 ? cmd->arg : NULL;

    *waiting = false;
    if (strcmp(cmd->word, "RELOAD") == 0) return cmd_reload(c);
    if (strcmp(cmd->word, "SET") == 0) return cmd_set(c, cmd);
    if (strcmp(cmd->word, "RESET") == 0) {
        if (strcasecmp(cmd->arg, "stats") != 0) {
            error(c, "42601", "syntax error: RESET takes STATS");
            return false;
        }
        janitor_reset_stats();
        log_info("RESET STATS from the console (C-%llu)", (unsigned long long)c->id);
        complete(c, "RESET");
        return true;
    }
    if (strcmp(cmd->word, "SUSPEND") == 0) {
        error(c, "0A000", "SUSPEND is not supported: pgbun has no online restart");
        return false;
    }
    if (db != NULL && strcmp(cmd->word, "KILL_CLIENT") != 0 && strcmp(cmd->word, "SHUTDOWN") != 0 && !known_db(c, db))
        return false;
    if (strcmp(cmd->word, "PAUSE") == 0) {
        pool_pause(db, true);
        log_info("PAUSE %s from the console (C-%llu)", db ? db : "(all)", (unsigned long long)c->id);
        if (pool_busy_servers(db) == 0) {
            complete(c, "PAUSE");
            return true;
        }
        *waiting = start_wait(c, WAIT_PAUSE, db, "PAUSE");
        if (!*waiting) error(c, "53200", "out of memory");
        return *waiting;
    }
    if (strcmp(cmd->word, "RESUME") == 0) {
        if (db == NULL && pgbun.shutting_down) {
            error(c, "08P01", "pooler is shutting down");
            return false;
        }
        if (db != NULL && !pool_db_paused(db)) {
            error(c, "55000",
                  pool_is_paused(db) ? "database \"%s\" is not paused by itself: all of pgbun is; RESUME "
                                       "without a database ends that"
                                     : "database \"%s\" is not paused",
                  db);
            return false;
        }
        if (db == NULL && !pool_any_paused()) {
            error(c, "55000", "nothing is paused");
            return false;
        }
        pool_pause(db, false);
        log_info("RESUME %s from the console (C-%llu)", db ? db : "(all)", (unsigned long long)c->id);
        complete(c, "RESUME");
        return true;
    }
    if (strcmp(cmd->word, "DISABLE") == 0 || strcmp(cmd->word, "ENABLE") == 0) {
        bool on = cmd->word[0] == 'D';

        pool_disable(db, on);
        log_info("%s %s from the console (C-%llu)", cmd->word, db, (unsigned long long)c->id);
        complete(c, cmd->word);
        return true;
    }
    if (strcmp(cmd->word, "KILL") == 0) {
        /* As in PgBouncer, a killed database stays paused until RESUME. */
        pool_pause(db, true);
        log_info("KILL %s from the console (C-%llu)", db ? db : "(all)", (unsigned long long)c->id);
        kill_pools(db, db ? "database killed from the admin console (KILL)" : "killed from the admin console (KILL)");
        complete(c, "KILL");
        return true;
    }
    if (strcmp(cmd->word, "KILL_CLIENT") == 0) {
        char              *end;
        unsigned long long id = strtoull(cmd->arg, &end, 10);
        struct client     *victim;

        /* PgBouncer's codes and words, which scripts match. */
        if (*end != '\0' || !isdigit((unsigned char)cmd->arg[0])) {
            error(c, "08P01", "invalid client pointer supplied");
            return false;
        }
        if ((victim = find_client(id)) == NULL) {
            error(c, "08P01", "client not found");
            return false;
        }
        if (victim == c) {
            error(c, "55000", "a console client cannot kill itself; disconnect instead");
            return false;
        }
        log_info("KILL_CLIENT %llu from the console (C-%llu)", id, (unsigned long long)c->id);
        client_close(victim, "08P01", "killed from the admin console (KILL_CLIENT)");
        complete(c, "KILL_CLIENT");
        return true;
    }
    if (strcmp(cmd->word, "RECONNECT") == 0) {
        int n = pool_reconnect(db);

        log_info("RECONNECT %s from the console (C-%llu): %d servers to replace", db ? db : "(all)",
                 (unsigned long long)c->id, n);
        complete(c, "RECONNECT");
        return true;
    }
    if (strcmp(cmd->word, "WAIT_CLOSE") == 0) {
        if (pool_close_pending(db) == 0) {
            complete(c, "WAIT_CLOSE");
            return true;
        }
        *waiting = start_wait(c, WAIT_CLOSE_DONE, db, "WAIT_CLOSE");
        if (!*waiting) error(c, "53200", "out of memory");
        return *waiting;
    }
    if (strcmp(cmd->word, "SHUTDOWN") == 0) {
        if (db == NULL) {
            hold(c, WAIT_FOREVER); /* nothing after it is answered: pgbun is going */
            *waiting = true;
            complete(c, "SHUTDOWN");
            (void)client_flush(c);
            pgbun_shutdown(PGBUN_STOP_NOW, "SHUTDOWN from the admin console", true);
        } else if (strcasecmp(db, "wait_for_servers") == 0) {
            complete(c, "SHUTDOWN");
            pgbun_shutdown(PGBUN_STOP_AFTER_SERVERS, "SHUTDOWN WAIT_FOR_SERVERS from the admin console", true);
        } else if (strcasecmp(db, "wait_for_clients") == 0) {
            complete(c, "SHUTDOWN");
            pgbun_shutdown(PGBUN_STOP_AFTER_CLIENTS, "SHUTDOWN WAIT_FOR_CLIENTS from the admin console", true);
        } else {
            error(c, "42601", "syntax error: SHUTDOWN [WAIT_FOR_SERVERS | WAIT_FOR_CLIENTS]");
            return false;
        }
        return true;
    }
    error(c, "42601", "unknown command \"%s\"", cmd->word);
    return false;
}

static void show_help(struct client *c)
{
    notice(c, "SHOW %s", show_names());
    notice(c, "SET key = value; RELOAD; RESET STATS");
    notice(c, "PAUSE [db]; RESUME [db]; DISABLE db; ENABLE db; KILL [db]; KILL_CLIENT id");
    notice(c, "RECONNECT [db]; WAIT_CLOSE [db]; SHUTDOWN [WAIT_FOR_SERVERS | WAIT_FOR_CLIENTS]");
}

/*
 * Runs (or, with describe, only describes) one statement into rs. Returns
 * false after an ErrorResponse; *waiting when a PAUSE or WAIT_CLOSE will
 * answer later.
 */
static bool run_statement_stopped(struct client *c, const char *sql, struct rowset *rs, bool describe, bool *waiting);

/* Every statement sees and changes all workers at once: it runs with the world stopped. */
static bool run_statement(struct client *c, const char *sql, struct rowset *rs, bool describe, bool *waiting)
{
    bool ok;

    worker_stop_world();
    ok = run_statement_stopped(c, sql, rs, describe, waiting);
    worker_start_world();
    return ok;
}

static bool run_statement_stopped(struct client *c, const char *sql, struct rowset *rs, bool describe, bool *waiting)
{
    struct admin_parse_cmd cmd;

    *waiting = false;
    if (!check_command(c, sql, &cmd)) return false;
    if (!cmd.show || strcasecmp(cmd.arg, "help") == 0) {
        if (describe) {
            proto_add_no_data(c->out);
            return true;
        }
        if (cmd.show) {
            show_help(c);
            complete(c, "SHOW");
            return true;
        }
        return run_control(c, &cmd, waiting);
    }
    if (describe) rs->rows = false;
    if (!show_run(cmd.arg, rs, c)) {
        error(c, "42704", "unknown SHOW \"%s\"; there are %s", cmd.arg, show_names());
        return false;
    }
    if (rs->failed) {
        error(c, "53200", "could not build the result (out of memory, or a result format the console cannot send)");
        return false;
    }
    return true;
}

/* ---- simple query ---- */

/*
 * Runs the statements of a Query from `sql` on; ends with ReadyForQuery
 * unless a wait holds the rest. `resumed`: earlier statements of the same
 * Query ran already (so an empty rest is not an empty query).
 */
static void run_simple(struct client *c, const char *sql, bool resumed)
{
    struct admin_session *a = c->console;
    const char           *s = sql;
    char                 *stmt;
    bool                  any = resumed;

    for (;;) {
        const char   *here = s;
        struct rowset rs;
        bool          ok, waiting;

        /* A client that does not read its results gets no more of them. */
        if (evbuffer_get_length(c->out) > PGBUN_OUT_LIMIT && client_flush(c) &&
            evbuffer_get_length(c->out) > PGBUN_OUT_LIMIT) {
            waiting = true;
            hold(c, WAIT_OUTPUT);
        } else {
            if ((s = admin_parse_next_statement(s, &stmt)) == NULL) break;
            if (stmt == NULL) {
                error(c, "53200", "out of memory");
                break;
            }
            any = true;
            rowset_init(&rs, c->out);
            ok = run_statement(c, stmt, &rs, false, &waiting);
            rowset_deinit(&rs);
            free(stmt);
            here = s;
            if (!waiting && !ok) break;
        }
        if (c->state == CL_CLOSING) return;
        if (waiting) {
            if (a->wait == WAIT_FOREVER) return;
            if ((a->rest = strdup(here)) == NULL) {
                error(c, "53200", "out of memory");
                break;
            }
            a->rest_rfq = true;
            return;
        }
    }
    if (!any) proto_add_empty_query(c->out);
    proto_add_ready(c->out, 'I');
}

/* ---- extended protocol ---- */

static struct named *find_named(struct named *list, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(list[i].name, name) == 0) return &list[i];
    return NULL;
}

/* The slot for `name` (replacing an unnamed one; a named one must not exist). NULL after an error. */
static struct named *claim_named(struct client *c, struct named *list, int *n, const char *name, const char *what,
                                 const char *dup_state)
{
    struct named *slot = find_named(list, *n, name);

    if (slot != NULL) {
        if (name[0] != '\0') {
            error(c, dup_state, "%s \"%s\" already exists", what, name);
            return NULL;
        }
        clear_named(slot);
    } else {
        if (*n == ADMIN_MAX_NAMED) {
            error(c, "54000", "too many %ss on the admin console (at most %d)", what, ADMIN_MAX_NAMED);
            return NULL;
        }
        slot = &list[(*n)++];
    }
    if ((slot->name = strdup(name)) == NULL) {
        error(c, "53200", "out of memory");
        return NULL;
    }
    return slot;
}

static void drop_named(struct named *list, int *n, const char *name)
{
    struct named *slot = find_named(list, *n, name);

    if (slot == NULL) return;
    clear_named(slot);
    *slot = list[--*n];
    memset(&list[*n], 0, sizeof(list[*n]));
}

static bool handle_parse(struct client *c, struct proto_reader *r)
{
    struct admin_session  *a = c->console;
    const char            *name = proto_get_str(r), *query = proto_get_str(r);
    uint16_t               nparams = proto_get_u16(r);
    struct named          *st;
    struct admin_parse_cmd cmd;
    char                  *one;
    const char            *rest;

    if (r->bad) {
        error(c, "08P01", "malformed Parse message");
        return false;
    }
    if (nparams > 0) {
        error(c, "0A000", "the admin console takes no parameters");
        return false;
    }
    /* Checked now, so that a typo fails at Parse as it would in PostgreSQL. */
    if ((rest = admin_parse_next_statement(query, &one)) != NULL) {
        bool ok = one != NULL && check_command(c, one, &cmd);

        free(one);
        if (!ok) return false;
        if (admin_parse_next_statement(rest, &one) != NULL) {
            free(one);
            error(c, "42601", "cannot insert multiple commands into a prepared statement");
            return false;
        }
    }
    if ((st = claim_named(c, a->stmts, &a->nstmts, name, "prepared statement", "42P05")) == NULL) return false;
    if ((st->query = strdup(query)) == NULL) {
        drop_named(a->stmts, &a->nstmts, name);
        error(c, "53200", "out of memory");
        return false;
    }
    proto_add_parse_complete(c->out);
    return true;
}

static bool handle_bind(struct client *c, struct proto_reader *r)
{
    struct admin_session *a = c->console;
    const char           *portal = proto_get_str(r), *stmt = proto_get_str(r);
    struct named         *st, *po;
    int16_t               formats[ROWSET_MAX_FORMATS];
    uint16_t              n;

    n = proto_get_u16(r); /* parameter format codes */
    for (uint16_t i = 0; i < n; i++)
        (void)proto_get_u16(r);
    if (proto_get_u16(r) != 0 && !r->bad) {
        error(c, "0A000", "the admin console takes no parameters");
        return false;
    }
    n = proto_get_u16(r);
    for (uint16_t i = 0; i < n && i < ROWSET_MAX_FORMATS; i++)
        formats[i] = (int16_t)proto_get_u16(r);
    if (r->bad || n > ROWSET_MAX_FORMATS) {
        error(c, "08P01", "malformed Bind message");
        return false;
    }
    for (uint16_t i = 0; i < n; i++) {
        if (formats[i] != 0 && formats[i] != 1) {
            error(c, "22023", "unsupported format code %d", formats[i]);
            return false;
        }
    }
    if ((st = find_named(a->stmts, a->nstmts, stmt)) == NULL) {
        error(c, "26000", "prepared statement \"%s\" does not exist", stmt);
        return false;
    }
    if ((po = claim_named(c, a->portals, &a->nportals, portal, "portal", "42P03")) == NULL) return false;
    if ((po->query = strdup(st->query)) == NULL) {
        drop_named(a->portals, &a->nportals, portal);
        error(c, "53200", "out of memory");
        return false;
    }
    po->nformats = n;
    memcpy(po->formats, formats, n * sizeof(formats[0]));
    proto_add_bind_complete(c->out);
    return true;
}

/* Describe or Execute one named statement/portal. */
static bool run_named(struct client *c, const struct named *n, bool describe, bool *waiting)
{
    struct rowset rs;
    char         *stmt;
    bool          ok;

    *waiting = false;
    if (admin_parse_next_statement(n->query, &stmt) == NULL) {
        if (describe)
            proto_add_no_data(c->out);
        else
            proto_add_empty_query(c->out);
        return true;
    }
    if (stmt == NULL) {
        error(c, "53200", "out of memory");
        return false;
    }
    rowset_init(&rs, c->out);
    rs.header = describe;
    rs.nformats = n->nformats;
    memcpy(rs.formats, n->formats, sizeof(rs.formats));
    ok = run_statement(c, stmt, &rs, describe, waiting);
    rowset_deinit(&rs);
    free(stmt);
    return ok;
}

static bool handle_describe(struct client *c, struct proto_reader *r)
{
    struct admin_session *a = c->console;
    uint8_t               kind = proto_get_u8(r);
    const char           *name = proto_get_str(r);
    struct named         *n;
    bool                  waiting;

    if (r->bad || (kind != 'S' && kind != 'P')) {
        error(c, "08P01", "malformed Describe message");
        return false;
    }
    n = kind == 'S' ? find_named(a->stmts, a->nstmts, name) : find_named(a->portals, a->nportals, name);
    if (n == NULL) {
        error(c, kind == 'S' ? "26000" : "34000", "%s \"%s\" does not exist",
              kind == 'S' ? "prepared statement" : "portal", name);
        return false;
    }
    if (kind == 'S') proto_add_no_params(c->out);
    return run_named(c, n, true, &waiting);
}

static bool handle_execute(struct client *c, struct proto_reader *r, bool *waiting)
{
    struct admin_session *a = c->console;
    const char           *name = proto_get_str(r);
    struct named         *po;

    *waiting = false;
    (void)proto_get_u32(r); /* row limit: results are small and sent whole */
    if (r->bad) {
        error(c, "08P01", "malformed Execute message");
        return false;
    }
    if ((po = find_named(a->portals, a->nportals, name)) == NULL) {
        error(c, "34000", "portal \"%s\" does not exist", name);
        return false;
    }
    return run_named(c, po, false, waiting);
}

static bool handle_close(struct client *c, struct proto_reader *r)
{
    struct admin_session *a = c->console;
    uint8_t               kind = proto_get_u8(r);
    const char           *name = proto_get_str(r);

    if (r->bad || (kind != 'S' && kind != 'P')) {
        error(c, "08P01", "malformed Close message");
        return false;
    }
    if (kind == 'S')
        drop_named(a->stmts, &a->nstmts, name);
    else
        drop_named(a->portals, &a->nportals, name);
    proto_add_close_complete(c->out);
    return true;
}

/* ---- the loop ---- */

/* Answers one whole message; false when the client was closed or must wait. */
static bool handle_message(struct client *c, uint8_t type, const uint8_t *body, uint32_t len)
{
    struct admin_session *a = c->console;
    struct proto_reader   r;
    bool                  ok = true, waiting = false;

    if (a->skipping && type != 'S' && type != 'X') return true;
    proto_reader_init(&r, body, len);
    switch (type) {
    case 'Q': {
        char *sql = strndup((const char *)body, len);

        if (sql == NULL || memchr(body, '\0', len) == NULL) {
            error(c, "08P01", "malformed Query message");
            proto_add_ready(c->out, 'I');
        } else {
            run_simple(c, sql, false);
        }
        free(sql);
        return a->wait == WAIT_NONE;
    }
    case 'P': ok = handle_parse(c, &r); break;
    case 'B': ok = handle_bind(c, &r); break;
    case 'D': ok = handle_describe(c, &r); break;
    case 'E': ok = handle_execute(c, &r, &waiting); break;
    case 'C': ok = handle_close(c, &r); break;
    case 'H': break;
    case 'S':
        a->skipping = false;
        /* Portals end with the implicit transaction. */
        while (a->nportals > 0)
            clear_named(&a->portals[--a->nportals]);
        proto_add_ready(c->out, 'I');
        break;
    case 'X': client_close(c, NULL, "client sent Terminate"); return false;
    case 'd':
    case 'c':
    case 'f': break; /* COPY messages outside a COPY: ignored, as PostgreSQL does */
    case 'F':
        error(c, "0A000", "the admin console has no functions to call");
        proto_add_ready(c->out, 'I');
        return true;
    default:
        client_close(c, "08P01", "unexpected message '%c' on the admin console", type >= 32 && type < 127 ? type : '?');
        return false;
    }
    if (!ok) a->skipping = true;
    return !waiting;
}

static void process(struct client *c)
{
    struct admin_session *a = c->console;

    for (int n = 0; c->state == CL_IDLE && a->wait == WAIT_NONE; n++) {
        uint8_t  type, *body;
        uint32_t len;
        bool     go_on;

        if (evbuffer_get_length(c->out) > PGBUN_OUT_LIMIT && client_flush(c) &&
            evbuffer_get_length(c->out) > PGBUN_OUT_LIMIT) {
            hold(c, WAIT_OUTPUT);
            return;
        }
        switch (proto_peek_header(c->in, ADMIN_MSG_MAX, &type, &len)) {
        case PROTO_NEED_MORE: goto out;
        case PROTO_BAD: client_close(c, "08P01", "invalid message length %u on the admin console", len); return;
        case PROTO_OK: break;
        }
        if (evbuffer_get_length(c->in) < (size_t)len + 1) break;
        if (n == ADMIN_BATCH) {
            /* Enough for one wakeup: others get their turn, then this continues. */
            if (!arm(c, true)) client_close(c, "53200", "out of memory");
            break;
        }
        if ((body = proto_take_body(c->in, len)) == NULL) {
            client_close(c, "53200", "out of memory");
            return;
        }
        go_on = handle_message(c, type, body, len - 4);
        free(body);
        if (c->state == CL_CLOSING) return;
        if (!go_on) break;
    }
out:
    if (c->state == CL_CLOSING) return;
    (void)client_flush(c);
}

void admin_process(struct client *c)
{
    process(c);
}

/* The wait is over: reply, finish the held Query, then read and answer again. */
static void resume(struct client *c)
{
    struct admin_session *a = c->console;
    char                 *rest = a->rest;

    a->wait = WAIT_NONE;
    if (a->wait_tag != NULL) complete(c, a->wait_tag);
    a->wait_tag = NULL;
    a->rest = NULL;
    if (a->rest_rfq) {
        a->rest_rfq = false;
        run_simple(c, rest ? rest : "", true);
    }
    free(rest);
    if (c->state != CL_IDLE || a->wait != WAIT_NONE) return;
    io_set_reading(&c->io, true);
    process(c);
}

void admin_output_drained(struct client *c)
{
    if (c->console != NULL && c->console->wait == WAIT_OUTPUT && evbuffer_get_length(c->out) <= PGBUN_OUT_LIMIT)
        resume(c);
}

static void ev_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client        *c = arg;
    struct admin_session *a = c->console;

    if (c->state != CL_IDLE) return;
    switch (a->wait) {
    case WAIT_NONE: process(c); return; /* a long batch continues */
    case WAIT_PAUSE:
    case WAIT_CLOSE_DONE: {
        bool busy;

        worker_stop_world();
        busy = a->wait == WAIT_PAUSE ? pool_busy_servers(a->wait_db) > 0 : pool_close_pending(a->wait_db) > 0;
        worker_start_world();
        if (busy) break;
        resume(c);
        return;
    }
    case WAIT_OUTPUT:
    case WAIT_FOREVER: return;
    }
    if (!arm(c, false)) client_close(c, "53200", "out of memory");
}
