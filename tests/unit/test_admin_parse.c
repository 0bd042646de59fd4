/*
 * test_admin_parse.c - the console's statements as text: every command form
 * the parser accepts, with its word, argument and value, and every syntax
 * error with its message; then splitting a Query at ';'.
 *
 * The forms and messages are those the console answered before the parser
 * had a file of its own. What a command does with its argument (RESET's
 * STATS, SHUTDOWN's mode, a SET key) is checked when it runs, not here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_parse.h"
#include "tap.h"

/* sql on one TAP line: newlines and tabs written as \n and \t. */
static const char *shown(const char *sql)
{
    static char buf[128];
    size_t      n = 0;

    for (; *sql != '\0' && n + 3 < sizeof(buf); sql++) {
        if (*sql == '\n' || *sql == '\t') {
            buf[n++] = '\\';
            buf[n++] = *sql == '\n' ? 'n' : 't';
        } else {
            buf[n++] = *sql;
        }
    }
    buf[n] = '\0';
    return buf;
}

struct accepted {
    const char *sql;
    const char *word, *arg, *value;
    int         nargs;
    bool        show;
};

static void accepted_forms(void)
{
    static const struct accepted cases[] = {
        /* SHOW and SELECT answer rows; the argument stays as written. */
        {"SHOW POOLS", "SHOW", "POOLS", "", 1, true},
        {"show pools", "SHOW", "pools", "", 1, true},
        {"ShOw Clients", "SHOW", "Clients", "", 1, true},
        {"  \t\nSHOW\t stats \n ", "SHOW", "stats", "", 1, true},
        {"SHOW \"pools\"", "SHOW", "pools", "", 1, true},
        {"SHOW \"My \"\"DB\"\"\"", "SHOW", "My \"DB\"", "", 1, true},
        {"SHOW 'it''s'", "SHOW", "it's", "", 1, true},
        {"SHOW ''", "SHOW", "", "", 1, true},
        {"SHOW help", "SHOW", "help", "", 1, true},
        {"SELECT version", "SELECT", "version", "", 1, true},
        /* Without a ';' splitter in front, a ';' is part of a word. */
        {"SHOW POOLS;", "SHOW", "POOLS;", "", 1, true},
        /* SET key = value and SET key TO value. */
        {"SET default_pool_size = 30", "SET", "default_pool_size", "30", 2, false},
        {"set default_pool_size=30", "SET", "default_pool_size", "30", 2, false},
        {"SET default_pool_size= 30", "SET", "default_pool_size", "30", 2, false},
        {"SET default_pool_size TO 30", "SET", "default_pool_size", "30", 2, false},
        {"Set default_pool_size to 30", "SET", "default_pool_size", "30", 2, false},
        {"SET default_pool_size tO\t30", "SET", "default_pool_size", "30", 2, false},
        {"SET default_pool_size TO'30'", "SET", "default_pool_size", "30", 2, false},
        {"SET admin_users = 'a, b'", "SET", "admin_users", "a, b", 2, false},
        {"SET admin_users = \"a b\"", "SET", "admin_users", "a b", 2, false},
        {"SET admin_users = ''", "SET", "admin_users", "", 2, false},
        {"SET application_name = 'it''s'", "SET", "application_name", "it's", 2, false},
        {"SET \"Key\" = 1", "SET", "Key", "1", 2, false},
        {"SET 'key' TO 1", "SET", "key", "1", 2, false},
        {"SET extra_float_digits = 3   ", "SET", "extra_float_digits", "3", 2, false},
        {"SET = 1", "SET", "", "1", 2, false}, /* an empty key: config_set refuses it when it runs */
        /* The control commands, with and without their argument. */
        {"RELOAD", "RELOAD", "", "", 0, false},
        {"reload", "RELOAD", "", "", 0, false},
        {"PAUSE", "PAUSE", "", "", 0, false},
        {"pause db1", "PAUSE", "db1", "", 1, false},
        {"PAUSE \"My DB\"", "PAUSE", "My DB", "", 1, false},
        {"RESUME", "RESUME", "", "", 0, false},
        {"Resume db1", "RESUME", "db1", "", 1, false},
        {"DISABLE db1", "DISABLE", "db1", "", 1, false},
        {"enable db1", "ENABLE", "db1", "", 1, false},
        {"KILL", "KILL", "", "", 0, false},
        {"kill db1", "KILL", "db1", "", 1, false},
        {"KILL_CLIENT 42", "KILL_CLIENT", "42", "", 1, false},
        {"kill_client x", "KILL_CLIENT", "x", "", 1, false},
        {"RECONNECT", "RECONNECT", "", "", 0, false},
        {"reconnect db1", "RECONNECT", "db1", "", 1, false},
        {"WAIT_CLOSE", "WAIT_CLOSE", "", "", 0, false},
        {"wait_close db1", "WAIT_CLOSE", "db1", "", 1, false},
        {"SHUTDOWN", "SHUTDOWN", "", "", 0, false},
        {"shutdown wait_for_servers", "SHUTDOWN", "wait_for_servers", "", 1, false},
        {"SHUTDOWN WAIT_FOR_CLIENTS", "SHUTDOWN", "WAIT_FOR_CLIENTS", "", 1, false},
        {"SHUTDOWN soon", "SHUTDOWN", "soon", "", 1, false},
        {"RESET STATS", "RESET", "STATS", "", 1, false},
        {"reset stats", "RESET", "stats", "", 1, false},
        {"RESET x", "RESET", "x", "", 1, false},
        {"SUSPEND", "SUSPEND", "", "", 0, false},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct accepted *t = &cases[i];
        struct admin_parse_cmd cmd;
        char                   err[ADMIN_PARSE_ERR_MAX] = "";
        bool                   good;

        good = admin_parse_statement(t->sql, &cmd, err, sizeof(err));
        if (!ok(good, "accepted: %s", shown(t->sql))) {
            printf("#   error: %s\n", err);
            continue;
        }
        if (!ok(strcmp(cmd.word, t->word) == 0 && strcmp(cmd.arg, t->arg) == 0 && strcmp(cmd.value, t->value) == 0 &&
                    cmd.nargs == t->nargs && cmd.show == t->show,
                "... as %s [%s] [%s], %d arguments%s", t->word, t->arg, t->value, t->nargs, t->show ? ", rows" : ""))
            printf("#   got %s [%s] [%s], %d arguments, show %d\n", cmd.word, cmd.arg, cmd.value, cmd.nargs, cmd.show);
    }
}

struct refused {
    const char *sql;
    const char *err;
};

static void check_refused(const struct refused *cases, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        struct admin_parse_cmd cmd;
        char                   err[ADMIN_PARSE_ERR_MAX] = "";

        if (!ok(!admin_parse_statement(cases[i].sql, &cmd, err, sizeof(err)), "%s refused: %s", what,
                shown(cases[i].sql)))
            continue;
        is_str(err, cases[i].err, "... with its message");
    }
}

static void syntax_errors(void)
{
    static const struct refused cases[] = {
        {"", "syntax error: expected a command"},
        {"   \t\n", "syntax error: expected a command"},
        {"'SHOW' POOLS", "syntax error: expected a command"},
        {"\"RELOAD\"", "syntax error: expected a command"},
        {"= 1", "syntax error: expected a command"},
        {"SHOW 'pools", "syntax error: unterminated quoted string, or a word too long"},
        {"SHOW \"pools", "syntax error: unterminated quoted string, or a word too long"},
        {"SHOW 'it''s", "syntax error: unterminated quoted string, or a word too long"},
        {"SET", "syntax error: expected SET key = value"},
        {"SET default_pool_size", "syntax error: expected SET key = value"},
        {"SET default_pool_size 30", "syntax error: expected SET key = value"},
        {"SET default_pool_size TO", "syntax error: expected SET key = value"},
        {"SET default_pool_size TO30", "syntax error: expected SET key = value"},
        {"SET default_pool_size : 30", "syntax error: expected SET key = value"},
        {"SET default_pool_size =", "syntax error: SET needs a value"},
        {"SET default_pool_size =   ", "syntax error: SET needs a value"},
        {"SET default_pool_size TO ", "syntax error: SET needs a value"},
        {"SET default_pool_size = = 3", "syntax error: SET needs a value"},
        {"SET default_pool_size = '30", "syntax error: unterminated quoted string, or a word too long"},
        {"SET 'key = 1", "syntax error: unterminated quoted string, or a word too long"},
    };

    check_refused(cases, sizeof(cases) / sizeof(cases[0]), "syntax");
}

static void extra_tokens(void)
{
    static const struct refused cases[] = {
        {"SHOW POOLS now", "syntax error: unexpected text after the command"},
        {"SHOW 'pools' x", "syntax error: unexpected text after the command"},
        {"SHOW a = b", "syntax error: unexpected text after the command"},
        {"PAUSE db1 db2", "syntax error: unexpected text after the command"},
        {"SET default_pool_size = 30 40", "syntax error: unexpected text after the command"},
        {"SET default_pool_size = '30' x", "syntax error: unexpected text after the command"},
        {"RELOAD=", "syntax error: unexpected text after the command"},
        /* Text after the command is a syntax error before an unknown word is. */
        {"DROP TABLE pools", "syntax error: unexpected text after the command"},
        /* The argument counts of each command. */
        {"SHOW", "syntax error: wrong number of arguments for SHOW"},
        {"select", "syntax error: wrong number of arguments for SELECT"},
        {"RELOAD now", "syntax error: wrong number of arguments for RELOAD"},
        {"reload ''", "syntax error: wrong number of arguments for RELOAD"},
        {"DISABLE", "syntax error: wrong number of arguments for DISABLE"},
        {"ENABLE", "syntax error: wrong number of arguments for ENABLE"},
        {"KILL_CLIENT", "syntax error: wrong number of arguments for KILL_CLIENT"},
        {"RESET", "syntax error: wrong number of arguments for RESET"},
        {"SUSPEND now", "syntax error: wrong number of arguments for SUSPEND"},
    };

    check_refused(cases, sizeof(cases) / sizeof(cases[0]), "extra or missing argument");
}

static void unknown_commands(void)
{
    static const struct refused cases[] = {
        {"FOO", "unknown command \"FOO\"; SHOW HELP lists the commands"},
        {"foo bar", "unknown command \"FOO\"; SHOW HELP lists the commands"},
        {"SHOWPOOLS", "unknown command \"SHOWPOOLS\"; SHOW HELP lists the commands"},
        {"SHOW\"\"", "unknown command \"SHOW\"\"\"; SHOW HELP lists the commands"},
        {"SHOW;", "unknown command \"SHOW;\"; SHOW HELP lists the commands"},
        {"KILL-CLIENT 1", "unknown command \"KILL-CLIENT\"; SHOW HELP lists the commands"},
        {"BEGIN", "unknown command \"BEGIN\"; SHOW HELP lists the commands"},
        {"reset_stats", "unknown command \"RESET_STATS\"; SHOW HELP lists the commands"},
    };

    check_refused(cases, sizeof(cases) / sizeof(cases[0]), "unknown");
}

/* Words and arguments at the edges of their buffers. */
static void limits(void)
{
    struct admin_parse_cmd cmd;
    char                   err[ADMIN_PARSE_ERR_MAX], sql[2048], word[40], arg[300], value[1100];

    memset(word, 'w', 31);
    word[31] = '\0';
    snprintf(sql, sizeof(sql), "%s", word);
    ok(!admin_parse_statement(sql, &cmd, err, sizeof(err)) && strncmp(err, "unknown command \"WWWW", 21) == 0 &&
           strstr(err, "; SHOW HELP lists the commands") != NULL,
       "a 31-character word is read, and the whole message fits");
    memset(word, 'w', 32);
    word[32] = '\0';
    snprintf(sql, sizeof(sql), "%s", word);
    ok(!admin_parse_statement(sql, &cmd, err, sizeof(err)) && strcmp(err, "syntax error: expected a command") == 0,
       "a 32-character word is not a command");

    memset(arg, 'a', 255);
    arg[255] = '\0';
    snprintf(sql, sizeof(sql), "SHOW %s", arg);
    ok(admin_parse_statement(sql, &cmd, err, sizeof(err)) && strcmp(cmd.arg, arg) == 0, "a 255-byte argument");
    snprintf(sql, sizeof(sql), "SHOW '%s'", arg);
    ok(admin_parse_statement(sql, &cmd, err, sizeof(err)) && strcmp(cmd.arg, arg) == 0, "... quoted too");
    arg[255] = 'a';
    arg[256] = '\0';
    snprintf(sql, sizeof(sql), "SHOW %s", arg);
    ok(!admin_parse_statement(sql, &cmd, err, sizeof(err)) &&
           strcmp(err, "syntax error: unterminated quoted string, or a word too long") == 0,
       "a 256-byte argument is too long");

    memset(value, 'v', 1023);
    value[1023] = '\0';
    snprintf(sql, sizeof(sql), "SET k = '%s'", value);
    ok(admin_parse_statement(sql, &cmd, err, sizeof(err)) && strcmp(cmd.value, value) == 0, "a 1023-byte SET value");
    value[1023] = 'v';
    value[1024] = '\0';
    snprintf(sql, sizeof(sql), "SET k = %s", value);
    ok(!admin_parse_statement(sql, &cmd, err, sizeof(err)) &&
           strcmp(err, "syntax error: unterminated quoted string, or a word too long") == 0,
       "a 1024-byte SET value is too long");

    ok(!admin_parse_statement("FOO", &cmd, err, 8) && strcmp(err, "unknown") == 0,
       "a short error buffer gets the message cut");
    ok(admin_parse_statement("SET k = v", &cmd, err, sizeof(err)) && admin_parse_statement("PAUSE", &cmd, err, 1) &&
           cmd.value[0] == '\0' && cmd.arg[0] == '\0' && cmd.nargs == 0,
       "each parse starts afresh");
}

/* Splits sql as a Query is split, joining the statements with '|'. */
static const char *split(const char *sql, char *out, size_t cap)
{
    const char *s = sql;
    char       *stmt;

    out[0] = '\0';
    while ((s = admin_parse_next_statement(s, &stmt)) != NULL) {
        if (stmt == NULL) return "(out of memory)";
        if (out[0] != '\0') strncat(out, "|", cap - strlen(out) - 1);
        strncat(out, stmt, cap - strlen(out) - 1);
        free(stmt);
    }
    return out;
}

static void statements(void)
{
    static const struct {
        const char *sql, *want;
    } cases[] = {
        {"", ""},
        {";", ""},
        {"  ; ;\n;\t", ""},
        {"SHOW POOLS", "SHOW POOLS"},
        {"SHOW POOLS;", "SHOW POOLS"},
        {"SHOW POOLS ;  ", "SHOW POOLS "},
        {";;SHOW POOLS;;", "SHOW POOLS"},
        {"SHOW POOLS; RELOAD", "SHOW POOLS|RELOAD"},
        {"  SHOW POOLS ;\n reload ; ", "SHOW POOLS |reload "},
        {"SET k = 'a;b'; RELOAD", "SET k = 'a;b'|RELOAD"},
        {"PAUSE \"db;1\";RESUME \"db;1\"", "PAUSE \"db;1\"|RESUME \"db;1\""},
        {"SET k = 'it''s;'; SHOW x", "SET k = 'it''s;'|SHOW x"},
        {"SHOW 'open;", "SHOW 'open;"},
    };
    struct admin_parse_cmd cmd;
    char                   buf[256], err[ADMIN_PARSE_ERR_MAX];
    const char            *rest;
    char                  *one;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        is_str(split(cases[i].sql, buf, sizeof(buf)), cases[i].want, "split: [%s]", shown(cases[i].sql));

    /* As the console runs a Query: the statement before the ';' parses. */
    rest = admin_parse_next_statement("show pools;", &one);
    ok(rest != NULL && *rest == ';' && admin_parse_statement(one, &cmd, err, sizeof(err)) &&
           strcmp(cmd.arg, "pools") == 0,
       "a trailing ';' ends the statement, outside its argument");
    free(one);
    ok(admin_parse_next_statement(rest, &one) == NULL && one == NULL, "... and nothing follows it");
}

int main(void)
{
    accepted_forms();
    syntax_errors();
    extra_tokens();
    unknown_commands();
    limits();
    statements();
    return done_testing();
}
