/*
 * scan.h - what a client's SQL text may do to its session.
 *
 * A lexer, not a parser: it splits a query into statements at top-level
 * semicolons (quotes, dollar quotes, quoted identifiers and comments
 * skipped) and reports, per query, which kinds of session state its
 * statements may have created or removed, and the names of the settings
 * they may have changed. "May": the server has the last word (a SET in a
 * rolled-back transaction never happened), so whoever uses this asks the
 * server for the real state once the transaction is over.
 */
#ifndef PGBUN_SCAN_H
#define PGBUN_SCAN_H

#include <stdbool.h>
#include <stddef.h>

enum scan_flag {
    SCAN_SETTING = 1u << 0,         /* SET, RESET or set_config(..., false) of the names below */
    SCAN_RESET_ALL = 1u << 1,       /* RESET ALL: every setting */
    SCAN_SETTING_ANY = 1u << 2,     /* set_config of a name that is not a literal, or too many names */
    SCAN_LISTEN = 1u << 3,          /* LISTEN */
    SCAN_UNLISTEN = 1u << 4,        /* UNLISTEN */
    SCAN_LOCK = 1u << 5,            /* a session-level advisory lock function */
    SCAN_UNLOCK = 1u << 6,          /* pg_advisory_unlock*, pg_advisory_unlock_all */
    SCAN_TEMP = 1u << 7,            /* CREATE TEMP ..., SELECT ... INTO TEMP, an object in pg_temp */
    SCAN_DROP = 1u << 8,            /* DROP ..., DISCARD TEMP */
    SCAN_HOLD = 1u << 9,            /* DECLARE ... WITH HOLD */
    SCAN_CLOSE = 1u << 10,          /* CLOSE */
    SCAN_PREPARE = 1u << 11,        /* PREPARE (not PREPARE TRANSACTION) */
    SCAN_DEALLOCATE = 1u << 12,     /* DEALLOCATE */
    SCAN_LOAD = 1u << 13,           /* LOAD */
    SCAN_DISCARD_ALL = 1u << 14,    /* DISCARD ALL: every kind of state gone */
    SCAN_DEALLOCATE_ALL = 1u << 15, /* DEALLOCATE [PREPARE] ALL (SCAN_DEALLOCATE too) */
    SCAN_RESET = 1u << 16,          /* RESET name, SET name TO DEFAULT: back to its start value (SCAN_SETTING too) */
    SCAN_CALL = 1u << 17,           /* DO, CALL, or a function not known to be harmless: may do anything */
};

/* What makes pgbun read the session's settings back at the end of the transaction. */
#define SCAN_READBACK (SCAN_SETTING | SCAN_RESET_ALL | SCAN_SETTING_ANY | SCAN_DISCARD_ALL)

/*
 * What may have changed settings pgbun cannot name, or made state it cannot
 * see: the server is cleaned before another client gets it. (A function
 * call is not read back: that would cost a read of pg_settings per call.)
 */
#define SCAN_UNKNOWN (SCAN_SETTING_ANY | SCAN_CALL)

/* What brings settings back to their start values, which for a client are its startup parameters. */
#define SCAN_RESTORE (SCAN_RESET | SCAN_RESET_ALL)

/* What may remove prepared statements from the server. */
#define SCAN_STATEMENTS (SCAN_DEALLOCATE | SCAN_DEALLOCATE_ALL | SCAN_DISCARD_ALL)

/* What may create or remove state that pins a client to its server. */
#define SCAN_PIN                                                                                                       \
    (SCAN_LISTEN | SCAN_UNLISTEN | SCAN_LOCK | SCAN_UNLOCK | SCAN_TEMP | SCAN_DROP | SCAN_HOLD | SCAN_CLOSE |          \
     SCAN_PREPARE | SCAN_DEALLOCATE | SCAN_LOAD | SCAN_DISCARD_ALL)

#define SCAN_MAX_NAMES 8   /* setting names kept per query; more set SCAN_SETTING_ANY */
#define SCAN_NAME_MAX  128 /* bytes of a setting name, NUL included; longer: SCAN_SETTING_ANY */

struct scan_effects {
    unsigned flags;                                /* enum scan_flag bits */
    int      nnames;                               /* entries of names */
    char     names[SCAN_MAX_NAMES][SCAN_NAME_MAX]; /* lower-cased, distinct */
    int      statements;                           /* statements seen, empty ones not counted */
    char     deallocated[SCAN_NAME_MAX];           /* DEALLOCATE [PREPARE] name: the name as PostgreSQL reads it */
};

void scan_init(struct scan_effects *fx);

/*
 * Adds to fx what the statements of sql (len bytes, NUL not needed) may do.
 * std_strings: standard_conforming_strings is on, so a backslash in '...'
 * is an ordinary character. want: the flags the caller looks at; text without
 * the words statements with those effects need is not scanned further. Text that ends inside a quote or
 * comment is scanned up to there (PostgreSQL rejects it whole).
 */
void scan_sql(const char *sql, size_t len, bool std_strings, unsigned want, struct scan_effects *fx);

#endif
