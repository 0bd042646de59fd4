/*
 * top.h - pgbun-admin's live one-screen view: per pool, clients active and
 * waiting, servers active and idle, transactions per second, p95 query time
 * and reuse, refreshed every second until Ctrl-C.
 */
#ifndef PGBUN_ADMIN_TOP_H
#define PGBUN_ADMIN_TOP_H

#include <libpq-fe.h>
#include <stdbool.h>

/* What the view needs of its console: a query (reconnecting once), and a sleep Ctrl-C ends (false). */
struct top_console {
    PGresult *(*query)(const char *sql);
    bool (*sleep)(int ms);
};

/* Runs the view until Ctrl-C; false when the console could not be read. */
bool top_run(const struct top_console *console, bool color);

#endif
