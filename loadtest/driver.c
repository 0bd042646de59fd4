/*
 * driver.c - the client connections of a run, on one libevent loop.
 *
 * Each slot is one connection that runs its scenario's iterations back to
 * back:
 *
 *   WAITING --connect--> CONNECTING --ok--> [PAUSED] --> QUERY --answered--+
 *      ^                     |                 ^                           |
 *      +--- back-off <-- failed/lost           +------ next iteration <----+
 *
 * A step is sent with PQsendQuery (simple protocol) or PQsendQueryParams
 * (extended), flushed without blocking, and its results are read as the
 * socket becomes readable. An answer other than the step's expectation is an
 * error: the slot rolls back what it left open, or reconnects when the
 * connection is gone. When the duration ends, slots finish the iteration
 * under way (so every transaction ends one way or the other) and close; the
 * ones still busy after the grace period are cut off and counted.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loadtest.h"

#define CONNECT_TIMEOUT (15 * NS_PER_SEC)
#define BACKOFF         (100 * NS_PER_MS) /* before a reconnect */

static void next_iteration(struct slot *s);
static void slot_finish(struct slot *s);

/* The libpq keywords of every connection the tester makes, load or set-up. */
void lt_conn_params(const struct lt_options *o, const char *user, const char *password, const char *dbname,
                    struct pq_params *p)
{
    pq_param(p, "host", o->host);
    pq_param(p, "port", o->port);
    pq_param(p, "user", user);
    pq_param(p, "password", password);
    pq_param(p, "dbname", dbname);
    pq_param(p, "application_name", "pgbun-loadtest");
    pq_param(p, "connect_timeout", "15");
}

nsec_t lt_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (nsec_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

static struct timeval tv_of(nsec_t ns)
{
    struct timeval tv;

    if (ns < 0) ns = 0;
    tv.tv_sec = (time_t)(ns / NS_PER_SEC);
    tv.tv_usec = (suseconds_t)(ns % NS_PER_SEC / 1000);
    return tv;
}

static void arm(struct event *ev, nsec_t after)
{
    struct timeval tv = tv_of(after);

    evtimer_add(ev, &tv);
}

static void sock_cb(evutil_socket_t fd, short what, void *arg);

/* Watch the connection's socket for `what` (0: not at all). */
static void watch(struct slot *s, short what)
{
    evutil_socket_t fd = s->conn ? PQsocket(s->conn) : -1;

    if (fd < 0) what = 0;
    if (fd == s->sock_fd && what == s->sock_what) return;
    if (s->sock_fd >= 0) event_del(s->sock_ev);
    s->sock_fd = -1;
    s->sock_what = 0;
    if (what == 0) return;
    event_assign(s->sock_ev, s->run->base, fd, what | EV_PERSIST, sock_cb, s);
    event_add(s->sock_ev, NULL);
    s->sock_fd = fd;
    s->sock_what = what;
}

static void drop_conn(struct slot *s)
{
    watch(s, 0);
    if (s->conn == NULL) return;
    if (s->is_open) s->run->open--;
    s->is_open = false;
    PQfinish(s->conn);
    s->conn = NULL;
}

/*
 * Counts an answer that was not the expected one. In the reconnect scenario
 * connection errors are the outage, counted apart; in the idle scenario a
 * FATAL 57P05 after a pause is the clear error the scenario allows (pgbun's
 * client_idle_timeout). Failures that are not queries (a refused connection)
 * also count in run->other_failures, the rest of error_rate's denominator.
 */
static void count_error(struct slot *s, const char *code, const char *severity, const char *message)
{
    struct run *run = s->run;
    nsec_t      now = lt_now();

    run->sec_errors++;
    if (run->opt->scenario == SC_RECONNECT && scenario_outage_error(code)) {
        errors_add(&run->outage, code && code[0] ? code : "08006", message);
        if (run->reconnect.first_error == 0) run->reconnect.first_error = now;
        run->reconnect.last_error = now;
        s->last_error = now;
        return;
    }
    if (run->opt->scenario == SC_IDLE && s->after_idle && severity != NULL && strcmp(severity, "FATAL") == 0 &&
        code != NULL && strcmp(code, "57P05") == 0) {
        errors_add(&run->idle.disconnects, code, NULL);
        run->sec_errors--;
        return;
    }
    errors_add(&run->errors, code, message);
}

/* Reconnect: a slot whose last answer was an outage error still owes its recovery. */
static bool owes_recovery(const struct slot *s)
{
    return s->run->opt->scenario == SC_RECONNECT && s->last_error > s->recovered;
}

static void reconnect_later(struct slot *s, nsec_t after)
{
    drop_conn(s);
    if (s->run->stopping && !owes_recovery(s)) {
        slot_finish(s);
        return;
    }
    s->state = SL_WAITING;
    arm(s->timer, after);
}

/* A failed connection's SQLSTATE: libpq has no result for it, but its verbose
 * message reads "...failed: FATAL:  53300: no more connections allowed". */
static void connect_failed(struct slot *s, const char *message)
{
    const char *p = message ? strstr(message, "FATAL:  ") : NULL;
    char        code[6] = "08001";

    if (p != NULL) {
        p += 8;
        if (strspn(p, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 5 && p[5] == ':') {
            memcpy(code, p, 5);
            code[5] = '\0';
        }
    }
    s->run->connect_failures++;
    s->run->other_failures++;
    count_error(s, code, NULL, message ? message : "out of memory");
    reconnect_later(s, BACKOFF);
}

static void slot_connect(struct slot *s)
{
    const struct lt_options *o = s->run->opt;
    struct pq_params         p = {0};

    lt_conn_params(o, o->user, o->password, o->dbname, &p);

    s->state = SL_CONNECTING;
    s->fatal_notice = false;
    s->run->connects++;
    s->conn = PQconnectStartParams(p.keys, p.vals, 0);
    if (s->conn == NULL || PQstatus(s->conn) == CONNECTION_BAD) {
        connect_failed(s, s->conn ? PQerrorMessage(s->conn) : NULL);
        return;
    }
    PQsetErrorVerbosity(s->conn, PQERRORS_VERBOSE); /* for connect_failed's SQLSTATE */
    arm(s->timer, CONNECT_TIMEOUT);
    watch(s, EV_WRITE);
}

/* The severity in English: the V field, or S from servers that send no V. */
static const char *severity_of(const PGresult *res)
{
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);

    return sev ? sev : PQresultErrorField(res, PG_DIAG_SEVERITY);
}

static void on_notice(void *arg, const PGresult *res)
{
    struct slot *s = arg;
    const char  *sev = severity_of(res);
    const char  *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char  *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    /* libpq hands an ErrorResponse that arrives between queries to the notice receiver. */
    if (sev == NULL || (strcmp(sev, "FATAL") != 0 && strcmp(sev, "PANIC") != 0)) return;
    s->fatal_notice = true;
    snprintf(s->notice_state, sizeof(s->notice_state), "%s", code ? code : "");
    snprintf(s->notice_msg, sizeof(s->notice_msg), "%s", msg ? msg : "");
}

static void connected(struct slot *s)
{
    struct run *run = s->run;

    evtimer_del(s->timer);
    PQsetErrorVerbosity(s->conn, PQERRORS_DEFAULT);
    if (PQsetnonblocking(s->conn, 1) != 0) {
        connect_failed(s, PQerrorMessage(s->conn));
        return;
    }
    PQsetNoticeReceiver(s->conn, on_notice, s);
    s->is_open = true;
    if (++run->open > run->max_open) run->max_open = run->open;
    s->state = SL_PAUSED;
    s->paused = s->rated = false;
    scenario_connected(s);
    watch(s, EV_READ);
    next_iteration(s);
}

static void poll_connect(struct slot *s)
{
    PostgresPollingStatusType st = PQconnectPoll(s->conn);

    /* libpq may have closed the socket and opened another with the same number
     * (next address, SSL refused): register it anew, never trust the old one. */
    watch(s, 0);
    switch (st) {
    case PGRES_POLLING_READING: watch(s, EV_READ); break;
    case PGRES_POLLING_WRITING: watch(s, EV_WRITE); break;
    case PGRES_POLLING_OK: connected(s); break;
    default: /* PGRES_POLLING_FAILED */
        evtimer_del(s->timer);
        connect_failed(s, PQerrorMessage(s->conn));
        break;
    }
}

/* Under --rate, may the slot start an iteration of n queries now? Else it waits its turn. */
static bool take_turn(struct slot *s, int n)
{
    struct run *run = s->run;
    nsec_t      now, t;

    if (run->opt->rate <= 0 || s->rated || run->stopping) return true;
    now = lt_now();
    t = run->next_turn > now ? run->next_turn : now;
    run->next_turn = t + (nsec_t)((double)n * NS_PER_SEC / run->opt->rate);
    if (t <= now) return true;
    s->rated = true;
    arm(s->timer, t - now);
    return false;
}

static void fail_step(struct slot *s, const char *code, const char *severity, const char *message);

static void send_step(struct slot *s)
{
    struct step *st = &s->step[s->cur];
    const char  *params[STEP_PARAM];
    int          ok, flushed;

    if (s->fatal_notice) {
        /* The server said FATAL after its last answer and is closing: nothing is sent. */
        count_error(s, s->notice_state, "FATAL", s->notice_msg);
        if (!s->cleanup) scenario_done(s, false);
        s->cleanup = false;
        s->iterations++;
        s->state = SL_PAUSED;
        reconnect_later(s, s->run->opt->scenario == SC_IDLE && s->after_idle ? 0 : BACKOFF);
        return;
    }
    s->failed = false;
    s->sqlstate[0] = s->severity[0] = s->message[0] = s->tag[0] = '\0';
    s->has_value = false;
    for (int i = 0; i < st->nparams; i++)
        params[i] = st->param[i];
    s->state = SL_QUERY;
    s->sent_at = lt_now();
    if (st->nparams > 0)
        ok = PQsendQueryParams(s->conn, st->sql, st->nparams, NULL, params, NULL, NULL, 0);
    else
        ok = PQsendQuery(s->conn, st->sql);
    flushed = ok ? PQflush(s->conn) : -1;
    if (flushed < 0) {
        s->run->total++;
        s->run->sec_total++;
        fail_step(s, "08006", NULL, PQerrorMessage(s->conn));
        return;
    }
    watch(s, flushed == 1 ? EV_READ | EV_WRITE : EV_READ);
}

static void next_iteration(struct slot *s)
{
    if (s->state == SL_DONE) return;
    scenario_build(s);
    if (s->nsteps == 0) {
        slot_finish(s);
        return;
    }
    s->state = SL_PAUSED;
    if (s->pause > 0 && !s->paused) {
        s->paused = true;
        if (s->run->opt->scenario == SC_IDLE) s->run->idle.pauses++;
        arm(s->timer, s->pause);
        return;
    }
    if (!take_turn(s, s->nsteps)) return;
    if (s->pause > 0 && s->run->opt->scenario == SC_IDLE) s->after_idle = true;
    s->paused = s->rated = false;
    s->cur = 0;
    send_step(s);
}

static void end_iteration(struct slot *s, bool ok)
{
    if (!s->cleanup) scenario_done(s, ok);
    s->cleanup = false;
    s->iterations++;
    s->paused = s->rated = false;
    next_iteration(s);
}

/* The step's answer was not the expected one (or never came). */
static void fail_step(struct slot *s, const char *code, const char *severity, const char *message)
{
    struct run             *run = s->run;
    const struct step      *st = &s->step[s->cur];
    bool                    alive = s->conn != NULL && PQstatus(s->conn) == CONNECTION_OK;
    PGTransactionStatusType tx = alive ? PQtransactionStatus(s->conn) : PQTRANS_UNKNOWN;

    count_error(s, code, severity, message);
    /* A commit that got no clear refusal may have happened: the row check allows for it. */
    if ((st->flags & STEP_COMMITS) && !(alive && severity != NULL && strcmp(severity, "ERROR") == 0))
        run->boundary.rows_uncertain += (uint64_t)s->rows;
    s->state = SL_PAUSED;
    if (!alive) {
        bool was_cleanup = s->cleanup;

        if (!was_cleanup) scenario_done(s, false);
        s->cleanup = false;
        s->iterations++;
        /* After an idle disconnect the next query must be served at once. */
        reconnect_later(s, run->opt->scenario == SC_IDLE && s->after_idle ? 0 : BACKOFF);
        return;
    }
    if (s->cleanup || tx == PQTRANS_ACTIVE || tx == PQTRANS_UNKNOWN) {
        /* Even the ROLLBACK failed: start over on a new connection. */
        s->cleanup = false;
        s->iterations++;
        reconnect_later(s, BACKOFF);
        return;
    }
    if (tx == PQTRANS_INTRANS || tx == PQTRANS_INERROR) {
        struct step *rb = &s->step[0];

        scenario_done(s, false);
        s->cleanup = true;
        s->nsteps = 1;
        s->cur = 0;
        snprintf(rb->sql, sizeof(rb->sql), "ROLLBACK");
        rb->nparams = 0;
        rb->expect = EXPECT_TAG;
        snprintf(rb->want, sizeof(rb->want), "ROLLBACK");
        rb->flags = 0;
        send_step(s);
        return;
    }
    end_iteration(s, false);
}

/* Every result of the step is in: compare with the expectation. */
static void step_answered(struct slot *s)
{
    struct run        *run = s->run;
    const struct step *st = &s->step[s->cur];
    nsec_t             now = lt_now();
    char               why[160];

    run->total++;
    run->sec_total++;
    if (s->failed) {
        if (st->expect != EXPECT_ERROR || strcmp(s->sqlstate, st->want) != 0) {
            fail_step(s, s->sqlstate[0] ? s->sqlstate : "08006", s->severity, s->message);
            return;
        }
        run->expected_errors++;
    } else if (st->expect == EXPECT_ERROR) {
        snprintf(why, sizeof(why), "\"%.60s\" succeeded, SQLSTATE %s was expected", st->sql, st->want);
        fail_step(s, "unexpected_success", NULL, why);
        return;
    } else if (st->expect == EXPECT_TAG && strcmp(s->tag, st->want) != 0) {
        snprintf(why, sizeof(why), "\"%.60s\" answered \"%s\", \"%s\" was expected", st->sql, s->tag, st->want);
        fail_step(s, "unexpected_result", NULL, why);
        return;
    }
    if (st->flags & STEP_PID) {
        if (s->backend_pid == 0) {
            s->backend_pid = s->value;
        } else if (s->value != s->backend_pid) {
            run->longs.backend_changes++;
            snprintf(why, sizeof(why), "the transaction moved from backend %ld to %ld", s->backend_pid, s->value);
            fail_step(s, "backend_changed", NULL, why);
            return;
        }
        run->longs.holder_queries++;
    }
    run->ok++;
    run->sec_ok++;
    hist_add(&run->latency, now - s->sent_at);
    hist_add(&run->sec_latency, now - s->sent_at);
    if (s->after_idle) {
        run->idle.served_after_idle++;
        s->after_idle = false;
    }
    if (s->last_error > s->recovered) s->recovered = now;
    if (++s->cur < s->nsteps) {
        send_step(s);
        return;
    }
    s->state = SL_PAUSED;
    watch(s, EV_READ);
    end_iteration(s, true);
}

static void take_result(struct slot *s, PGresult *res)
{
    switch (PQresultStatus(res)) {
    case PGRES_FATAL_ERROR:
    case PGRES_NONFATAL_ERROR:
        if (!s->failed) {
            const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            const char *sev = severity_of(res);
            const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

            s->failed = true;
            snprintf(s->sqlstate, sizeof(s->sqlstate), "%s", code ? code : "");
            snprintf(s->severity, sizeof(s->severity), "%s", sev ? sev : "");
            snprintf(s->message, sizeof(s->message), "%s", msg ? msg : PQresultErrorMessage(res));
        }
        break;
    default:
        snprintf(s->tag, sizeof(s->tag), "%s", PQcmdStatus(res));
        if (PQntuples(res) > 0 && PQnfields(res) > 0) {
            s->value = strtol(PQgetvalue(res, 0, 0), NULL, 10);
            s->has_value = true;
        }
        break;
    }
}

static void read_results(struct slot *s)
{
    int alive = PQconsumeInput(s->conn);

    /* What arrived before a close still counts: the server may have said why. */
    while (!PQisBusy(s->conn)) {
        PGresult *res = PQgetResult(s->conn);

        if (res == NULL) {
            step_answered(s);
            return;
        }
        take_result(s, res);
        PQclear(res);
    }
    if (alive) return;
    s->run->total++;
    s->run->sec_total++;
    if (s->failed)
        fail_step(s, s->sqlstate[0] ? s->sqlstate : "08006", s->severity, s->message);
    else
        fail_step(s, "08006", NULL, PQerrorMessage(s->conn));
}

/* The connection closed (or said something) while no query was running. */
static void read_between(struct slot *s)
{
    const char *code, *msg;
    int         alive = PQconsumeInput(s->conn);

    (void)PQisBusy(s->conn); /* parses the input: an ErrorResponse reaches on_notice */
    if (alive && PQstatus(s->conn) == CONNECTION_OK) return;
    code = s->fatal_notice ? s->notice_state : "08006";
    msg = s->fatal_notice ? s->notice_msg : "the server closed the connection between queries";
    if (s->run->opt->scenario == SC_IDLE && s->paused) s->after_idle = true;
    count_error(s, code, s->fatal_notice ? "FATAL" : NULL, msg);
    evtimer_del(s->timer);
    s->paused = s->rated = false;
    reconnect_later(s, s->run->opt->scenario == SC_IDLE ? 0 : BACKOFF);
}

static void sock_cb(evutil_socket_t fd, short what, void *arg)
{
    struct slot *s = arg;

    (void)fd;
    switch (s->state) {
    case SL_CONNECTING: poll_connect(s); break;
    case SL_QUERY:
        if (what & EV_WRITE) {
            int r = PQflush(s->conn);

            if (r < 0) {
                s->run->total++;
                s->run->sec_total++;
                fail_step(s, "08006", NULL, PQerrorMessage(s->conn));
                return;
            }
            if (r == 0) watch(s, EV_READ);
        }
        if (what & EV_READ) read_results(s);
        break;
    case SL_PAUSED: read_between(s); break;
    default: watch(s, 0); break;
    }
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct slot *s = arg;

    (void)fd;
    (void)what;
    switch (s->state) {
    case SL_WAITING: slot_connect(s); break;
    case SL_CONNECTING: connect_failed(s, "no connection within 15 s"); break;
    case SL_PAUSED: next_iteration(s); break;
    default: break;
    }
}

static void slot_finish(struct slot *s)
{
    if (s->state == SL_DONE) return;
    evtimer_del(s->timer);
    drop_conn(s);
    s->state = SL_DONE;
    if (++s->run->done == s->run->nslots) {
        s->run->end = lt_now();
        event_base_loopexit(s->run->base, NULL);
    }
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct run    *run = arg;
    struct timeval grace = tv_of(run->opt->grace);

    (void)fd;
    (void)what;
    run->stopping = true;
    for (int i = 0; i < run->nslots; i++) {
        struct slot *s = &run->slots[i];

        switch (s->state) {
        case SL_WAITING:
        case SL_CONNECTING:
            if (!owes_recovery(s)) slot_finish(s); /* else it reconnects and queries once, within the grace */
            break;
        case SL_PAUSED:
            evtimer_del(s->timer);
            s->paused = s->rated = true; /* what is left (a holder's COMMIT) runs at once */
            next_iteration(s);
            break;
        default: break;
        }
    }
    if (run->done < run->nslots) evtimer_add(run->grace_ev, &grace);
}

static void grace_cb(evutil_socket_t fd, short what, void *arg)
{
    struct run *run = arg;
    char        msg[96];

    (void)fd;
    (void)what;
    snprintf(msg, sizeof(msg), "still waiting for an answer %g s after the run ended",
             (double)run->opt->grace / NS_PER_SEC);
    for (int i = 0; i < run->nslots; i++) {
        struct slot *s = &run->slots[i];

        if (s->state == SL_DONE) continue;
        errors_add(&run->errors, "unfinished", msg);
        if (s->state != SL_QUERY) {
            run->other_failures++;
        } else {
            run->total++; /* sent, never answered */
            if (s->step[s->cur].flags & STEP_COMMITS) run->boundary.rows_uncertain += (uint64_t)s->rows;
        }
        slot_finish(s);
    }
}

static void reap_restart(struct run *run, bool wait)
{
    int status;

    if (run->reconnect.child <= 0) return;
    if (waitpid(run->reconnect.child, &status, wait ? 0 : WNOHANG) == run->reconnect.child) {
        run->reconnect.restart_status = status;
        run->reconnect.restart_ended = lt_now();
        run->reconnect.child = 0;
    }
}

static void restart_cb(evutil_socket_t fd, short what, void *arg)
{
    struct run *run = arg;
    pid_t       pid;

    (void)fd;
    (void)what;
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        errors_add(&run->errors, "restart_failed", strerror(errno));
        return;
    }
    if (pid == 0) {
        signal(SIGPIPE, SIG_DFL);
        setpgid(0, 0);                      /* its own group: a kill reaches what it started */
        dup2(STDERR_FILENO, STDOUT_FILENO); /* stdout carries the JSON */
        execl("/bin/sh", "sh", "-c", run->opt->restart_command, (char *)NULL);
        _exit(127);
    }
    run->reconnect.child = pid;
    run->reconnect.restart_started = lt_now();
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct run *run = arg;

    (void)fd;
    (void)what;
    run->second++;
    if (run->csv != NULL)
        fprintf(run->csv, "%d,%d,%llu,%llu,%llu,%.3f,%.3f\n", run->second, run->open,
                (unsigned long long)run->sec_total, (unsigned long long)run->sec_ok,
                (unsigned long long)run->sec_errors, hist_avg_ms(&run->sec_latency),
                hist_quantile_ms(&run->sec_latency, 0.95));
    if (run->opt->progress)
        fprintf(stderr,
                "pgbun-loadtest: %3ds %5d connections %8llu q/s  avg %.2f ms  p95 %.2f ms  %llu errors so far\n",
                run->second, run->open, (unsigned long long)run->sec_ok, hist_avg_ms(&run->sec_latency),
                hist_quantile_ms(&run->sec_latency, 0.95), (unsigned long long)run->errors.total);
    run->sec_total = run->sec_ok = run->sec_errors = 0;
    hist_clear(&run->sec_latency);
    reap_restart(run, false);
}

bool driver_run(struct run *run)
{
    const struct lt_options *o = run->opt;
    struct timeval           sec = {1, 0}, dur = tv_of(o->duration);
    bool                     ok = false;

    {
        struct event_config *cfg = event_config_new();

        /* Timers to the microsecond: the run's length, the ramp and the rate depend on them. */
        if (cfg != NULL) event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
        run->base = cfg ? event_base_new_with_config(cfg) : NULL;
        if (cfg != NULL) event_config_free(cfg);
    }
    run->slots = calloc((size_t)o->concurrency, sizeof(*run->slots));
    if (run->base == NULL || run->slots == NULL) goto out;
    run->nslots = o->concurrency;
    run->stop_ev = evtimer_new(run->base, stop_cb, run);
    run->grace_ev = evtimer_new(run->base, grace_cb, run);
    run->tick_ev = event_new(run->base, -1, EV_PERSIST, tick_cb, run);
    run->restart_ev = evtimer_new(run->base, restart_cb, run);
    if (!run->stop_ev || !run->grace_ev || !run->tick_ev || !run->restart_ev) goto out;
    run->reconnect.restart_status = -1;
    for (int i = 0; i < run->nslots; i++) {
        struct slot *s = &run->slots[i];

        s->run = run;
        s->id = i + 1;
        s->sock_fd = -1;
        s->holder = o->scenario == SC_LONG_SESSION && i < run->longs.holders;
        s->sock_ev = event_new(run->base, -1, 0, sock_cb, s);
        s->timer = evtimer_new(run->base, timer_cb, s);
        if (s->sock_ev == NULL || s->timer == NULL) goto out;
        s->state = SL_WAITING;
    }

    run->start = lt_now();
    evtimer_add(run->stop_ev, &dur);
    event_add(run->tick_ev, &sec);
    if (o->restart_command != NULL) arm(run->restart_ev, o->restart_at);
    for (int i = 0; i < run->nslots; i++) {
        struct slot *s = &run->slots[i];

        if (o->ramp > 0 && run->nslots > 1)
            arm(s->timer, o->ramp * i / run->nslots);
        else
            slot_connect(s);
    }
    event_base_dispatch(run->base);
    if (run->end == 0) run->end = lt_now();
    if (run->reconnect.child > 0) {
        /* The restart command is still running: give it the grace period. */
        nsec_t until = lt_now() + o->grace;

        while (run->reconnect.child > 0 && lt_now() < until) {
            reap_restart(run, false);
            if (run->reconnect.child > 0) usleep(50000);
        }
        if (run->reconnect.child > 0) {
            kill(-run->reconnect.child, SIGKILL); /* main.c reports it killed */
            kill(run->reconnect.child, SIGKILL);
            reap_restart(run, true);
        }
    }
    for (int i = 0; i < run->nslots; i++) {
        struct slot *s = &run->slots[i];

        if (s->last_error > 0 && s->recovered < s->last_error) run->reconnect.not_recovered++;
        if (s->last_error > 0 && s->recovered > run->reconnect.recovered) run->reconnect.recovered = s->recovered;
    }
    ok = true;
out:
    for (int i = 0; run->slots != NULL && i < run->nslots; i++) {
        struct slot *s = &run->slots[i];

        if (s->conn != NULL) PQfinish(s->conn);
        if (s->sock_ev != NULL) event_free(s->sock_ev);
        if (s->timer != NULL) event_free(s->timer);
    }
    free(run->slots);
    run->slots = NULL;
    if (run->stop_ev) event_free(run->stop_ev);
    if (run->grace_ev) event_free(run->grace_ev);
    if (run->tick_ev) event_free(run->tick_ev);
    if (run->restart_ev) event_free(run->restart_ev);
    if (run->base) event_base_free(run->base);
    return ok;
}
