/*
 * show.h - the result sets of the admin console's SHOW commands.
 *
 * Column names and order follow PgBouncer's (so exporters and dashboards
 * work unchanged); pgbun's own columns come after them.
 */
#ifndef PGBUN_SHOW_H
#define PGBUN_SHOW_H

#include <stdbool.h>

struct rowset;
struct client;

/* Sends SHOW `what` (case-insensitive) into rs; false when there is no such SHOW. */
bool show_run(const char *what, struct rowset *rs, struct client *asker);
/* The names SHOW knows, for HELP and errors: "POOLS, STATS, ...". */
const char *show_names(void);

#endif
