/*
 * authq.h - auth_query: the secret of a user that is not in auth_file,
 * looked up in PostgreSQL on a server connection of the auth_user's pool.
 *
 *   login --authq_find--> fresh in creds.h's cache: the answer at once
 *                     \--> else it waits on its worker's lookup of that
 *                          user (one per user and place, however many log
 *                          in at once): a pool_job of the pool (auth
 *                          database, auth_user) -> server_lookup(auth_query)
 *                          -> every waiting login hears the same answer
 *
 * The lookup runs with search_path = pg_catalog, pg_temp, never with a
 * client's settings, so no object a role creates can answer in place of
 * pg_authid (PgBouncer's CVE-2025-12819).
 */
#ifndef PGBUN_AUTHQ_H
#define PGBUN_AUTHQ_H

#include <stdbool.h>
#include <sys/queue.h>

struct authq_lookup;

enum authq_status {
    AUTHQ_FOUND,   /* the role exists; secret NULL: it has no password that could match */
    AUTHQ_NO_USER, /* no such role (or one that cannot log in) */
    AUTHQ_FAILED,  /* the lookup could not run: sqlstate and message say why (never a secret) */
};

struct authq_answer {
    enum authq_status status;
    const char       *secret;
    const char       *sqlstate;
    const char       *message;
};

/* A login waiting for a lookup; embedded in the client's login state. */
struct authq_waiter {
    TAILQ_ENTRY(authq_waiter) entry;
    struct authq_lookup *lookup; /* NULL when not waiting */
    void (*done)(struct authq_waiter *w, const struct authq_answer *a);
};

enum authq_start {
    AUTHQ_OFF,     /* no auth_user for this database: users come from auth_file only */
    AUTHQ_ANSWER,  /* *a holds the answer (cached, or a database that cannot be asked) */
    AUTHQ_WAITING, /* w->done will be called, on this worker's loop, unless authq_cancel comes first */
};

/*
 * Starts finding the secret of `user` logging in to `dbname` (console:
 * the admin console, which can be asked only with auth_dbname set). With
 * AUTHQ_ANSWER, *a points into *hold (malloc'd, the caller frees it with
 * authq_answer_free) or at static text.
 */
enum authq_start authq_find(const char *dbname, const char *user, bool console, struct authq_waiter *w,
                            struct authq_answer *a, char **hold) __attribute__((warn_unused_result));
/* The login gave up (closed): it hears nothing more. The lookup itself runs on for the others. */
void authq_cancel(struct authq_waiter *w);
/* Why the lookup w waits for is slow: the last failure of its pool's server logins, or NULL. */
const char *authq_trouble(const struct authq_waiter *w);
/* The login with the secret auth_query found for user in dbname failed: the next one asks PostgreSQL again. */
void authq_failed_login(const char *dbname, const char *user, bool console);
/* Frees what authq_find left in *hold (cleansed). */
void authq_answer_free(char *hold);

#endif
