/*
 * loadtest.h - pgbun-loadtest: N client connections on libpq's asynchronous
 * API, driven by one libevent loop, each running a scenario's iterations
 * (a few statements: a transaction, a query, a pause) against pgbun.
 *
 *   main.c      options, the pgbun figures read through its admin console,
 *               the row-count check, the JSON and CSV reports
 *   driver.c    the connections: connect, send, read, reconnect, rate, ramp,
 *               the end of the run
 *   scenario.c  what each scenario's iteration is, and what its answers
 *               must be
 *   metrics.c   latency histogram, errors by SQLSTATE
 */
#ifndef PGBUN_LOADTEST_H
#define PGBUN_LOADTEST_H

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "metrics.h"
#include "pqparams.h"

enum lt_mode { MODE_UNSET = 0, MODE_SESSION, MODE_TRANSACTION, MODE_STATEMENT };

enum lt_scenario { SC_LOAD = 0, SC_BOUNDARY, SC_IDLE, SC_LONG_SESSION, SC_RECONNECT };

struct lt_options {
    const char      *host, *port, *user, *password, *dbname; /* NULL: libpq's PG* defaults */
    const char      *admin_user, *admin_password, *admin_db; /* admin_db "" = no pgbun figures */
    const char      *direct;                                 /* conninfo for the row and leak checks */
    enum lt_mode     mode;
    enum lt_scenario scenario;
    int              concurrency;
    nsec_t           duration;
    double           rate;            /* queries per second over all connections; 0 = no limit */
    nsec_t           ramp;            /* connections start evenly over this time */
    nsec_t           idle;            /* idle: pause before each query; < 0 = from pgbun's timeouts */
    int              holders;         /* long-session: connections holding one transaction; < 0 = concurrency / 10 */
    const char      *restart_command; /* reconnect: run this at restart_at */
    nsec_t           restart_at;
    nsec_t           grace; /* after the duration, time for iterations under way to finish */
    const char      *out_path, *csv_path;
    bool             progress, allow_errors, keep_stats;
};

#define STEP_MAX   6
#define STEP_SQL   512
#define STEP_PARAM 3

enum expect {
    EXPECT_OK = 0, /* any success */
    EXPECT_ERROR,  /* an error with SQLSTATE want */
    EXPECT_TAG,    /* success with command tag want */
};

#define STEP_COMMITS 0x1 /* its success commits the iteration's rows */
#define STEP_PID     0x2 /* returns pg_backend_pid(): must not change while the slot holds its transaction */

struct step {
    char        sql[STEP_SQL];
    int         nparams; /* 0: simple protocol (PQsendQuery); else extended */
    char        param[STEP_PARAM][64];
    enum expect expect;
    char        want[16]; /* SQLSTATE or command tag */
    unsigned    flags;
};

enum slot_state {
    SL_WAITING,    /* not started yet (ramp), or waiting to reconnect */
    SL_CONNECTING, /* PQconnectPoll under way */
    SL_PAUSED,     /* connected, waiting for its pause or its turn under --rate */
    SL_QUERY,      /* a step sent, its results not all read */
    SL_DONE,       /* finished; conn closed */
};

struct run;

struct slot {
    struct run     *run;
    int             id;
    enum slot_state state;
    PGconn         *conn;
    bool            is_open;   /* counted in run->open */
    struct event   *sock_ev;   /* the connection's socket; reassigned as its fd or interest changes */
    evutil_socket_t sock_fd;   /* what sock_ev is assigned to, -1 if nothing */
    short           sock_what; /* ... and for which events */
    struct event   *timer;     /* ramp start, pause, reconnect back-off */

    /* the iteration under way */
    struct step step[STEP_MAX];
    int         nsteps;
    int         cur;        /* step being run */
    nsec_t      pause;      /* wait before the iteration */
    bool        paused;     /* ... done already */
    bool        rated;      /* its turn under --rate taken */
    int         rows;       /* txn_log rows the iteration commits */
    int         variant;    /* scenario's choice for this iteration */
    bool        cleanup;    /* the iteration is a ROLLBACK after an unexpected error */
    bool        after_idle; /* the iteration followed an idle pause (idle scenario) */
    nsec_t      sent_at;

    /* the step's answer */
    bool failed;
    char sqlstate[6];
    char severity[12];
    char message[256];
    char tag[32];
    long value; /* first column of the first row, as a number */
    bool has_value;
    bool fatal_notice;    /* a FATAL error arrived while no query was running */
    char notice_state[6]; /* ... its SQLSTATE */
    char notice_msg[256]; /* ... and message */

    /* scenario state that outlives an iteration */
    uint64_t iterations;
    int      phase;       /* long-session holder: 0 open, 1 holding, 2 closed */
    long     backend_pid; /* long-session holder: the backend of its transaction */
    bool     holder;
    nsec_t   last_error; /* reconnect: when its last outage error happened, 0 if none */
    nsec_t   recovered;  /* reconnect: first success after last_error */
};

/* Counters of the whole run (main.c reports them). */
struct run {
    const struct lt_options *opt;
    struct event_base       *base;
    struct slot             *slots;
    int                      nslots;
    int                      done;
    char                     tag[40]; /* boundary: the note column of this run's rows */
    nsec_t                   start, end;
    bool                     stopping;
    nsec_t                   next_turn; /* --rate: when the next iteration may start */
    struct event            *stop_ev, *grace_ev, *tick_ev, *restart_ev;
    FILE                    *csv;

    uint64_t      total, ok, expected_errors;
    uint64_t      other_failures; /* errors that were not queries: refused connections, cut-off slots */
    struct hist   latency;
    struct errors errors; /* unexpected outcomes */
    struct errors outage; /* reconnect: connection errors while PostgreSQL was away */

    uint64_t connects, connect_failures;
    int      open, max_open;

    /* the current second, for --progress and --csv */
    int         second;
    uint64_t    sec_total, sec_ok, sec_errors;
    struct hist sec_latency;

    struct {
        uint64_t committed, rolled_back, failed_as_expected, rows_expected, rows_uncertain;
    } boundary;
    struct {
        uint64_t      pauses, served_after_idle;
        struct errors disconnects; /* closed by the server after a pause, with a FATAL error */
        nsec_t        idle;
    } idle;
    struct {
        int      holders;
        uint64_t holder_queries, backend_changes;
    } longs;
    struct {
        nsec_t first_error, last_error, recovered;
        int    not_recovered;
        pid_t  child;
        nsec_t restart_started, restart_ended;
        int    restart_status; /* as from waitpid, -1 when not run */
    } reconnect;
};

nsec_t lt_now(void);

/* Adds the target's connection keywords to p (libpq's PG* variables fill in what is NULL). */
void        lt_conn_params(const struct lt_options *o, const char *user, const char *password, const char *dbname,
                           struct pq_params *p);
const char *lt_mode_name(enum lt_mode m);
const char *lt_scenario_name(enum lt_scenario s);

/* driver.c: runs the scenario for opt->duration; false if it could not start. */
bool driver_run(struct run *run);

/* scenario.c */
/* Fills s->step[] with the slot's next iteration; 0 steps: the slot is done. */
void scenario_build(struct slot *s);
/* The iteration ended: ok (every step as expected) or not. */
void scenario_done(struct slot *s, bool ok);
/* A (re)connected slot: state tied to the old session is gone. */
void scenario_connected(struct slot *s);
/* Is this error part of a PostgreSQL outage (connection lost or refused, shutting down)? */
bool scenario_outage_error(const char *sqlstate);

#endif
