/*
 * scenario.c - what one iteration of each scenario sends, and what the
 * answers must be. The driver runs the steps in order and compares each
 * answer with the step's expectation; anything else is an error.
 *
 *   load          one query: SELECT a user by id (9 in 10) or INSERT one
 *   boundary      transactions that commit, roll back, fail inside and get
 *                 rolled back, autocommit and multi-statement queries; each
 *                 committed row of txn_log is counted, and main.c compares
 *                 the count with the table afterwards
 *   idle          a query, then a pause longer than pgbun's idle timeouts,
 *                 then a query: served, or a clear FATAL error and a new
 *                 connection
 *   long-session  a few connections hold one transaction for the whole run
 *                 (their backend must never change); the rest run short
 *                 transactions beside them
 *   reconnect     one query at a time; connection errors while PostgreSQL is
 *                 away are counted apart, as the outage
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loadtest.h"

#define HOLD_PAUSE (200 * NS_PER_MS) /* between a holder's queries */

static struct step *add(struct slot *s, const char *sql, enum expect expect, const char *want, unsigned flags)
{
    struct step *st = &s->step[s->nsteps++];

    snprintf(st->sql, sizeof(st->sql), "%s", sql);
    st->nparams = 0;
    st->expect = expect;
    snprintf(st->want, sizeof(st->want), "%s", want ? want : "");
    st->flags = flags;
    return st;
}

static void param(struct step *st, const char *fmt, long v)
{
    snprintf(st->param[st->nparams++], sizeof(st->param[0]), fmt, v);
}

static long user_id(struct slot *s)
{
    return 1 + (long)((s->iterations * 7 + (uint64_t)s->id * 3) % 10); /* the 10 sample users of init.sql */
}

static void build_load(struct slot *s)
{
    struct step *st;

    if (s->run->stopping) return;
    if ((s->iterations + (uint64_t)s->id) % 10 == 0) {
        st = add(s, "INSERT INTO users (name) VALUES ($1)", EXPECT_TAG, "INSERT 0 1", 0);
        snprintf(st->param[0], sizeof(st->param[0]), "loadtest-%d-%llu", s->id, (unsigned long long)s->iterations);
        st->nparams = 1;
    } else {
        st = add(s, "SELECT id, name FROM users WHERE id = $1", EXPECT_OK, NULL, 0);
        param(st, "%ld", user_id(s));
    }
}

/* An INSERT of one row of this run into txn_log, extended protocol. */
static void insert_row(struct slot *s, unsigned flags)
{
    struct step *st =
        add(s, "INSERT INTO txn_log (client_id, amount, note) VALUES ($1, $2, $3)", EXPECT_TAG, "INSERT 0 1", flags);

    param(st, "%ld", s->id);
    param(st, "%ld.00", 1 + (long)(s->iterations % 100));
    snprintf(st->param[2], sizeof(st->param[2]), "%s", s->run->tag);
    st->nparams = 3;
}

/* The same INSERT as SQL text, for multi-statement simple queries. */
static void insert_text(struct slot *s, char *buf, size_t len)
{
    snprintf(buf, len, "INSERT INTO txn_log (client_id, amount, note) VALUES (%d, 1.00, '%s')", s->id, s->run->tag);
}

enum {
    V_AUTOCOMMIT,    /* INSERT alone: +1 row */
    V_IMPLICIT,      /* "INSERT; INSERT" in one Query, an implicit transaction: +2 */
    V_IMPLICIT_FAIL, /* "INSERT; SELECT 1/0": the implicit transaction fails, +0 */
    V_COMMIT,        /* BEGIN; INSERT; INSERT; COMMIT: +2 */
    V_ROLLBACK,      /* BEGIN; INSERT; ROLLBACK: +0 */
    V_FAIL,          /* BEGIN; INSERT; SELECT 1/0; SELECT 1 (refused); COMMIT (answers ROLLBACK): +0 */
    V_MULTI,         /* "BEGIN; INSERT; INSERT; COMMIT" in one Query: +2 */
    V_MULTI_FAIL,    /* "BEGIN; INSERT; SELECT 1/0; COMMIT" leaves a failed transaction; ROLLBACK: +0 */
    V_COUNT
};

static void build_boundary(struct slot *s)
{
    char ins[200], sql[STEP_SQL];
    /* Statement mode refuses transaction blocks: only the first three there. */
    int n = s->run->opt->mode == MODE_STATEMENT ? V_COMMIT : V_COUNT;

    if (s->run->stopping) return;
    s->variant = (int)((s->iterations + (uint64_t)s->id) % (uint64_t)n);
    insert_text(s, ins, sizeof(ins));
    switch (s->variant) {
    case V_AUTOCOMMIT:
        insert_row(s, STEP_COMMITS);
        s->rows = 1;
        break;
    case V_IMPLICIT:
        snprintf(sql, sizeof(sql), "%s; %s", ins, ins);
        add(s, sql, EXPECT_TAG, "INSERT 0 1", STEP_COMMITS);
        s->rows = 2;
        break;
    case V_IMPLICIT_FAIL:
        snprintf(sql, sizeof(sql), "%s; SELECT 1/0", ins);
        add(s, sql, EXPECT_ERROR, "22012", 0);
        s->rows = 0;
        break;
    case V_COMMIT:
        add(s, "BEGIN", EXPECT_TAG, "BEGIN", 0);
        insert_row(s, 0);
        insert_row(s, 0);
        add(s, "COMMIT", EXPECT_TAG, "COMMIT", STEP_COMMITS);
        s->rows = 2;
        break;
    case V_ROLLBACK:
        add(s, "BEGIN", EXPECT_TAG, "BEGIN", 0);
        insert_row(s, 0);
        add(s, "ROLLBACK", EXPECT_TAG, "ROLLBACK", 0);
        s->rows = 0;
        break;
    case V_FAIL:
        add(s, "BEGIN", EXPECT_TAG, "BEGIN", 0);
        insert_row(s, 0);
        add(s, "SELECT 1/0", EXPECT_ERROR, "22012", 0);
        add(s, "SELECT 1", EXPECT_ERROR, "25P02", 0);
        add(s, "COMMIT", EXPECT_TAG, "ROLLBACK", 0);
        s->rows = 0;
        break;
    case V_MULTI:
        snprintf(sql, sizeof(sql), "BEGIN; %s; %s; COMMIT", ins, ins);
        add(s, sql, EXPECT_TAG, "COMMIT", STEP_COMMITS);
        s->rows = 2;
        break;
    case V_MULTI_FAIL:
        snprintf(sql, sizeof(sql), "BEGIN; %s; SELECT 1/0; COMMIT", ins);
        add(s, sql, EXPECT_ERROR, "22012", 0);
        add(s, "ROLLBACK", EXPECT_TAG, "ROLLBACK", 0);
        s->rows = 0;
        break;
    }
}

static void build_idle(struct slot *s)
{
    if (s->run->stopping) return;
    /* The first query of a connection runs at once; every later one after the pause. */
    s->pause = s->phase > 0 ? s->run->idle.idle : 0;
    add(s, "SELECT count(*) FROM users", EXPECT_OK, NULL, 0);
}

static void build_long_session(struct slot *s)
{
    struct step *st;

    if (!s->holder) {
        if (s->run->stopping) return;
        add(s, "BEGIN", EXPECT_TAG, "BEGIN", 0);
        st = add(s, "SELECT name FROM users WHERE id = $1", EXPECT_OK, NULL, 0);
        param(st, "%ld", user_id(s));
        st = add(s, "SELECT count(*) FROM txn_log WHERE client_id = $1", EXPECT_OK, NULL, 0);
        param(st, "%ld", user_id(s));
        add(s, "COMMIT", EXPECT_TAG, "COMMIT", 0);
        return;
    }
    switch (s->phase) {
    case 0: /* open the transaction it holds */
        if (s->run->stopping) return;
        add(s, "BEGIN", EXPECT_TAG, "BEGIN", 0);
        add(s, "SELECT pg_backend_pid()", EXPECT_OK, NULL, STEP_PID);
        break;
    case 1: /* hold it: a query now and then, on the same backend */
        if (s->run->stopping) {
            add(s, "COMMIT", EXPECT_TAG, "COMMIT", 0);
            break;
        }
        s->pause = HOLD_PAUSE;
        add(s, "SELECT pg_backend_pid()", EXPECT_OK, NULL, STEP_PID);
        break;
    default: break;
    }
}

static void build_reconnect(struct slot *s)
{
    struct step *st;

    /* After the stop, only a connection not served since its last outage error queries (once). */
    if (s->run->stopping && !(s->last_error > s->recovered)) return;
    st = add(s, "SELECT id, name FROM users WHERE id = $1", EXPECT_OK, NULL, 0);
    param(st, "%ld", user_id(s));
}

void scenario_build(struct slot *s)
{
    s->nsteps = 0;
    s->cur = 0;
    s->pause = 0;
    s->rows = 0;
    switch (s->run->opt->scenario) {
    case SC_LOAD: build_load(s); break;
    case SC_BOUNDARY: build_boundary(s); break;
    case SC_IDLE: build_idle(s); break;
    case SC_LONG_SESSION: build_long_session(s); break;
    case SC_RECONNECT: build_reconnect(s); break;
    }
}

void scenario_done(struct slot *s, bool ok)
{
    struct run *run = s->run;

    switch (run->opt->scenario) {
    case SC_BOUNDARY:
        if (!ok) break;
        run->boundary.rows_expected += (uint64_t)s->rows;
        if (s->variant == V_ROLLBACK)
            run->boundary.rolled_back++;
        else if (s->variant == V_FAIL || s->variant == V_MULTI_FAIL || s->variant == V_IMPLICIT_FAIL)
            run->boundary.failed_as_expected++;
        else
            run->boundary.committed++;
        break;
    case SC_IDLE: s->phase++; break;
    case SC_LONG_SESSION:
        if (!s->holder) break;
        if (!ok) {
            s->phase = 0; /* the transaction is gone: open a new one */
            s->backend_pid = 0;
        } else if (s->phase == 0) {
            s->phase = 1;
        } else if (s->phase == 1 && s->nsteps > 0 && strcmp(s->step[0].sql, "COMMIT") == 0) {
            s->phase = 2;
        }
        break;
    default: break;
    }
}

void scenario_connected(struct slot *s)
{
    s->phase = 0;
    s->backend_pid = 0;
}

bool scenario_outage_error(const char *sqlstate)
{
    if (sqlstate == NULL || sqlstate[0] == '\0') return true;
    return strncmp(sqlstate, "08", 2) == 0 || strcmp(sqlstate, "57P01") == 0 || strcmp(sqlstate, "57P02") == 0 ||
           strcmp(sqlstate, "57P03") == 0;
}
