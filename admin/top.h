/*
 * top.h - pgbun-admin's live one-screen view: per pool, clients active and
 * waiting, servers active and idle, transactions per second, p95 query time
 * and reuse, refreshed every second until Ctrl-C.
 */
#ifndef PGBUN_ADMIN_TOP_H
#define PGBUN_ADMIN_TOP_H

#include <libpq-fe.h>
#include <stdbool.h>

/* Runs the view until Ctrl-C; false when the console could not be read. */
bool top_run(bool color);

/* From pgbun-admin.c: a query on the console (reconnecting once), and a sleep Ctrl-C ends (false). */
PGresult *admin_query(const char *sql);
bool      admin_sleep(int ms);

#endif
