/*
 * admin_parse.h - the admin console's statements, as text: splitting a Query
 * into statements and parsing one into a command and its arguments.
 *
 *   "SHOW POOLS; set default_pool_size to '30'"
 *     -> admin_parse_next_statement -> "SHOW POOLS", "set default_pool_size to '30'"
 *     -> admin_parse_statement -> {SHOW, pools} and {SET, default_pool_size, 30}
 *
 * It knows the commands and how many arguments each takes, nothing of what
 * they do or who may run them (admin.c): it depends on no runtime state.
 * Every error it reports is a syntax error (SQLSTATE 42601).
 */
#ifndef PGBUN_ADMIN_PARSE_H
#define PGBUN_ADMIN_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#define ADMIN_PARSE_ERR_MAX 128 /* room for any error message of admin_parse_statement */

/* One statement: the command word and up to two arguments (SET key value). */
struct admin_parse_cmd {
    char word[32];    /* upper-cased */
    char arg[256];    /* first argument, as written (a quoted one without its quotes) */
    char value[1024]; /* SET: the value */
    int  nargs;       /* 0, 1, or 2 for SET */
    bool show;        /* SHOW-like: it answers rows; stats_users may run it */
};

/*
 * Parses "WORD [arg]" or "SET key = value" / "SET key TO value" into *cmd:
 * a known command with the right number of arguments. false: a syntax error,
 * its message (without SQLSTATE) in err.
 */
bool admin_parse_statement(const char *sql, struct admin_parse_cmd *cmd, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * The next statement of a Query from s on (split at ';' outside quotes) into
 * *out, malloc'd; returns where the statement ends. NULL at the end, when only
 * ';' and spaces are left. *out is NULL on out of memory (with a non-NULL
 * return).
 */
const char *admin_parse_next_statement(const char *s, char **out);

#endif
