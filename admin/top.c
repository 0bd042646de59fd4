/*
 * top.c - the live view. Each second it reads SHOW POOLS; rates come from
 * the difference of each pool's total_xact_count between two reads, so the
 * first screen shows "-" until there is a second one.
 */
#include "top.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TOP_MAX_POOLS 512

struct seen {
    char      key[256]; /* database/user */
    long long xacts;
};

static struct seen prev[TOP_MAX_POOLS];
static int         nprev;

static long long prev_xacts(const char *key)
{
    for (int i = 0; i < nprev; i++)
        if (strcmp(prev[i].key, key) == 0) return prev[i].xacts;
    return -1;
}

static long long num(const PGresult *res, int row, const char *col)
{
    int c = PQfnumber(res, col);

    return c < 0 || PQgetisnull(res, row, c) ? 0 : atoll(PQgetvalue(res, row, c));
}

static const char *text(const PGresult *res, int row, const char *col)
{
    int c = PQfnumber(res, col);

    return c < 0 ? "" : PQgetvalue(res, row, c);
}

/* One screen; false when SHOW POOLS failed. */
static bool draw(const struct top_console *console, bool color, double elapsed)
{
    PGresult   *res = console->query("SHOW POOLS");
    struct seen now[TOP_MAX_POOLS];
    int         n = 0;
    time_t      t = time(NULL);
    struct tm   tm;
    char        when[32];

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "pgbun-admin top: SHOW POOLS failed: %s", PQresultErrorMessage(res));
        PQclear(res);
        return false;
    }
    localtime_r(&t, &tm);
    strftime(when, sizeof(when), "%H:%M:%S", &tm);
    if (isatty(STDOUT_FILENO)) fputs("\033[H\033[2J", stdout);
    printf("pgbun top - %s - %d pools - refreshed every second, Ctrl-C to leave\n\n", when, PQntuples(res));
    printf("%s%-32s %7s %7s %7s %7s %9s %9s %8s %8s%s\n", color ? "\033[1m" : "", "POOL (database/user)", "CL_ACT",
           "CL_WAIT", "SV_ACT", "SV_IDLE", "XACT/S", "P95_MS", "REUSE%", "MAXWAIT", color ? "\033[0m" : "");
    for (int r = 0; r < PQntuples(res); r++) {
        char      key[256], rate[32];
        long long xacts = num(res, r, "total_xact_count"), before;

        snprintf(key, sizeof(key), "%s/%s", text(res, r, "database"), text(res, r, "user"));
        before = prev_xacts(key);
        if (before < 0 || elapsed <= 0)
            snprintf(rate, sizeof(rate), "-");
        else
            snprintf(rate, sizeof(rate), "%.0f", (double)(xacts - before) / elapsed);
        printf("%-32.32s %7lld %7lld %7lld %7lld %9s %9.1f %8s %7llds\n", key, num(res, r, "cl_active"),
               num(res, r, "cl_waiting"), num(res, r, "sv_active"), num(res, r, "sv_idle"), rate,
               (double)num(res, r, "query_p95_us") / 1000.0, text(res, r, "reuse_efficiency_percent"),
               num(res, r, "maxwait"));
        if (n < TOP_MAX_POOLS) {
            snprintf(now[n].key, sizeof(now[n].key), "%s", key);
            now[n++].xacts = xacts;
        }
    }
    fflush(stdout);
    memcpy(prev, now, (size_t)n * sizeof(now[0]));
    nprev = n;
    PQclear(res);
    return true;
}

bool top_run(const struct top_console *console, bool color)
{
    struct timespec last, now;
    double          elapsed = 0;

    nprev = 0;
    clock_gettime(CLOCK_MONOTONIC, &last);
    for (;;) {
        if (!draw(console, color, elapsed)) return false;
        if (!console->sleep(1000)) break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        elapsed = (double)(now.tv_sec - last.tv_sec) + (double)(now.tv_nsec - last.tv_nsec) / 1e9;
        last = now;
    }
    putchar('\n');
    return true;
}
