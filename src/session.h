/*
 * session.h - a server's session, kept in step with the client it serves.
 *
 * What a server's session holds, as pgbun knows it, and what must change when
 * it passes from one client to another (docs/SESSION_STATE.md). These are
 * decisions and SQL text over lists of settings and bits of held state;
 * server.c owns the connection and its phases, lends the lists, sends what
 * comes back, and feeds the replies in:
 *
 *   linked:     session_settings_sql -> SETs (PHASE_SETTING) -> session_settings_applied
 *   left:       session_after_client -> read-back, DISCARD ALL, reset, or release
 *   read-back:  session_readback_sql -> rows into session_read_row -> session_settings_read
 *   RESET of a startup parameter: session_restore_sql
 */
#ifndef PGBUN_SESSION_H
#define PGBUN_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "varlist.h"

/* Session state on a server that pins its client to it (docs/SESSION_STATE.md, section 6). */
enum held_state {
    HELD_LISTEN = 1u << 0,  /* LISTEN */
    HELD_LOCK = 1u << 1,    /* a session-level advisory lock */
    HELD_TEMP = 1u << 2,    /* a temp table, view or sequence */
    HELD_CURSOR = 1u << 3,  /* a cursor WITH HOLD */
    HELD_PREPARE = 1u << 4, /* SQL-level PREPARE */
    HELD_LOAD = 1u << 5,    /* LOAD: until the client leaves, which closes the server */
    HELD_SET = 1u << 6,     /* a SET, with session_state = pin */
};

/* What a clean server does when its client has left. */
enum session_next {
    SESSION_READBACK, /* the client's text may have changed settings or pinned it: ask the server first */
    SESSION_CLOSE,    /* its client loaded a library (LOAD), which nothing undoes */
    SESSION_DISCARD,  /* it held what pinned its client: DISCARD ALL */
    SESSION_RESET,    /* server_reset_query (session mode, or server_reset_query_always) */
    SESSION_RELEASE,  /* straight back to the pool */
};

/*
 * The SETs (and RESETs) that give a server a client's settings: its startup
 * parameters `params`, then its own SETs `sets` (NULL: none). Those the
 * server has already (`applied` by pgbun, or `reported` by ParameterStatus)
 * are left out, unless `clean`: then the query first resets all that an
 * earlier client may have left unnamed (what DISCARD ALL does, but for the
 * statements pgbun prepared), and `applied` is empty. An earlier client's
 * setting goes back to connect_query's value (`baseline`) or is reset.
 * Appended to *sql / *len (NULL / 0 to start), which stay so when nothing is
 * to be sent. false: out of memory.
 */
bool session_settings_sql(char **sql, size_t *len, const struct varlist *params, const struct varlist *sets,
                          const struct varlist *applied, const struct varlist *reported, const struct varlist *baseline,
                          bool clean) __attribute__((warn_unused_result));
/* dst becomes what the client wants: params, with sets (NULL: none) over them. false: out of memory. */
bool session_want_all(struct varlist *dst, const struct varlist *params, const struct varlist *sets)
    __attribute__((warn_unused_result));
/* The SETs ran: applied becomes applying, which is emptied. false: out of memory (applying is kept). */
bool session_settings_applied(struct varlist *applied, struct varlist *applying) __attribute__((warn_unused_result));

/* Whether the client's text (scan_pending: enum scan_flag) asks for a read-back before the server is released. */
bool session_readback_due(unsigned scan_pending);
/* What a clean server whose client left does next; `reset_query` when server_reset_query applies. */
enum session_next session_after_client(unsigned held, unsigned scan_pending, bool reset_query);
/* held with LOAD added when scan_pending says the client ran one: it cannot be undone, nor seen. */
unsigned session_pin_load(unsigned held, unsigned scan_pending);

/*
 * The read-back's query: the session-level settings (the built-in ones, and
 * custom ones `named` by the client's text or `applied` by pgbun) when
 * scan_pending asks for them, what pins the client when it asks for that.
 * Allocated; NULL: out of memory.
 */
char *session_readback_sql(const struct varlist *named, const struct varlist *applied, unsigned scan_pending);
/* One DataRow of the read-back: a setting (name, value) into settings, or the counts of what pins into *held. */
bool session_read_row(struct varlist *settings, unsigned *held, const uint8_t *body, size_t len)
    __attribute__((warn_unused_result));
/*
 * The settings read back: those at connect_query's value (`baseline`) are
 * no one's own and leave `read`; the rest become `applied`. With a client
 * (params not NULL), *sets becomes its own settings, those its startup
 * parameters do not already say, and `read` is emptied. false: out of memory.
 */
bool session_settings_read(struct varlist *applied, struct varlist *read, const struct varlist *baseline,
                           const struct varlist *params, struct varlist **sets) __attribute__((warn_unused_result));

/*
 * Where settings are not read back, a startup parameter (of params) that
 * the server reports changed follows the client in *sets. false: out of memory.
 */
bool session_follow_reported(const struct varlist *params, struct varlist **sets, const char *name, const char *value)
    __attribute__((warn_unused_result));
/*
 * The query that sets each startup parameter with no session-level value on
 * the server back to its startup value, after a RESET. *sql: allocated, or
 * NULL when there is none to restore. false: out of memory.
 */
bool session_restore_sql(const struct varlist *params, char **sql) __attribute__((warn_unused_result));

/* The names of held's bits ("listen,advisory_lock"), in buf. */
const char *session_held_names(unsigned held, char *buf, size_t n);

#endif
