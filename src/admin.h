/*
 * admin.h - the admin console: the virtual database `pgbun` (and its alias
 * `pgbouncer`) that pgbun answers itself, over the simple and the extended
 * query protocol.
 *
 *   login to "pgbun" -> auth as usual (or unix-socket peer = pgbun's own user)
 *     -> role from admin_users / stats_users -> admin pool, welcome
 *   Query / Parse-Bind-Describe-Execute-Sync -> admin_process -> command
 *     -> RowDescription, DataRow..., CommandComplete / ErrorResponse
 */
#ifndef PGBUN_ADMIN_H
#define PGBUN_ADMIN_H

#include <stdbool.h>

struct client;

enum admin_role {
    ADMIN_NONE = 0,
    ADMIN_STATS, /* SHOW only */
    ADMIN_FULL,  /* every command */
};

/* Is `dbname` the console (pgbun, or pgbouncer while that alias is on)? */
bool admin_is_console(const char *dbname);
/* The client is the OS user running pgbun, on the unix socket (peer check). */
bool admin_peer_is_self(const struct client *c);
struct pool;

/* Authenticated for the console: the admin pool to join, or NULL after closing a client that may not. */
struct pool *admin_login(struct client *c);
/* The console client has bytes to answer. */
void admin_process(struct client *c);
/* The client read enough of its results: carry on answering. */
void admin_output_drained(struct client *c);
/* Frees the console state of a client. */
void admin_client_free(struct client *c);

#endif
