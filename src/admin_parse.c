/*
 * admin_parse.c - splits the console's SQL text into statements and parses
 * each into a command and its arguments (admin_parse.h).
 *
 *   statement -> next_token: WORD (upper-cased)
 *             -> next_token: arg, a word or a quoted 'string' / "identifier"
 *             -> SET only: '=' or TO, then the value
 *             -> nothing but spaces may follow
 *             -> the command is known and takes that many arguments
 *
 * A word ends at a space or '='. Inside quotes a doubled quote stands for
 * one. Nothing here allocates but admin_parse_next_statement's copy.
 */
#include "admin_parse.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Copies one word or a quoted 'string' / "identifier". false on an unterminated quote or one too long for out. */
static bool next_token(const char **sp, char *out, size_t cap, bool *quoted)
{
    const char *s = *sp;
    size_t      n = 0;

    while (isspace((unsigned char)*s))
        s++;
    *quoted = false;
    if (*s == '\'' || *s == '"') {
        char q = *s++;

        *quoted = true;
        for (;;) {
            if (*s == '\0') return false;
            if (*s == q && s[1] == q) {
                s++;
            } else if (*s == q) {
                s++;
                break;
            }
            if (n + 1 >= cap) return false;
            out[n++] = *s++;
        }
    } else {
        while (*s != '\0' && !isspace((unsigned char)*s) && *s != '=') {
            if (n + 1 >= cap) return false;
            out[n++] = *s++;
        }
    }
    out[n] = '\0';
    *sp = s;
    return true;
}

/* Splits "WORD [arg]" or "SET key = value" / "SET key TO value". *err on a syntax error. */
static bool parse_command(const char *sql, struct admin_parse_cmd *cmd, const char **err)
{
    const char *s = sql;
    char        tok[1024];
    bool        quoted;

    memset(cmd, 0, sizeof(*cmd));
    if (!next_token(&s, cmd->word, sizeof(cmd->word), &quoted) || quoted || cmd->word[0] == '\0') {
        *err = "syntax error: expected a command";
        return false;
    }
    for (char *p = cmd->word; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    if (!next_token(&s, cmd->arg, sizeof(cmd->arg), &quoted)) {
        *err = "syntax error: unterminated quoted string, or a word too long";
        return false;
    }
    if (cmd->arg[0] != '\0' || quoted) cmd->nargs = 1;
    if (strcmp(cmd->word, "SET") == 0) {
        while (isspace((unsigned char)*s))
            s++;
        if (*s == '=') {
            s++;
        } else if (strncasecmp(s, "to", 2) == 0 && (isspace((unsigned char)s[2]) || s[2] == '\'')) {
            s += 2;
        } else {
            *err = "syntax error: expected SET key = value";
            return false;
        }
        if (!next_token(&s, tok, sizeof(tok), &quoted)) {
            *err = "syntax error: unterminated quoted string, or a word too long";
            return false;
        }
        if (tok[0] == '\0' && !quoted) {
            *err = "syntax error: SET needs a value";
            return false;
        }
        snprintf(cmd->value, sizeof(cmd->value), "%s", tok);
        cmd->nargs = 2;
    }
    while (isspace((unsigned char)*s))
        s++;
    if (*s != '\0') {
        *err = "syntax error: unexpected text after the command";
        return false;
    }
    return true;
}

/* Commands and whether they produce rows (Describe answers RowDescription for those). */
static const struct {
    const char *word;
    bool        show; /* SHOW-like: rows; stats_users may run it */
    int         min_args, max_args;
} commands[] = {
    {"SHOW", true, 1, 1},      {"SELECT", true, 1, 1},       {"SET", false, 2, 2},       {"RELOAD", false, 0, 0},
    {"PAUSE", false, 0, 1},    {"RESUME", false, 0, 1},      {"DISABLE", false, 1, 1},   {"ENABLE", false, 1, 1},
    {"KILL", false, 0, 1},     {"KILL_CLIENT", false, 1, 1}, {"RECONNECT", false, 0, 1}, {"WAIT_CLOSE", false, 0, 1},
    {"SHUTDOWN", false, 0, 1}, {"RESET", false, 1, 1},       {"SUSPEND", false, 0, 0},
};

static int find_command(const struct admin_parse_cmd *cmd)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].word, cmd->word) == 0) return (int)i;
    return -1;
}

bool admin_parse_statement(const char *sql, struct admin_parse_cmd *cmd, char *err, size_t errlen)
{
    const char *msg = NULL;
    int         idx;

    if (!parse_command(sql, cmd, &msg)) {
        snprintf(err, errlen, "%s", msg);
        return false;
    }
    if ((idx = find_command(cmd)) < 0) {
        snprintf(err, errlen, "unknown command \"%s\"; SHOW HELP lists the commands", cmd->word);
        return false;
    }
    if (cmd->nargs < commands[idx].min_args || cmd->nargs > commands[idx].max_args) {
        snprintf(err, errlen, "syntax error: wrong number of arguments for %s", cmd->word);
        return false;
    }
    cmd->show = commands[idx].show;
    return true;
}

const char *admin_parse_next_statement(const char *s, char **out)
{
    const char *start;
    char        q = 0;

    *out = NULL;
    while (*s == ';' || isspace((unsigned char)*s))
        s++;
    if (*s == '\0') return NULL;
    start = s;
    for (; *s != '\0'; s++) {
        if (q != 0) {
            if (*s == q) q = 0;
        } else if (*s == '\'' || *s == '"') {
            q = *s;
        } else if (*s == ';') {
            break;
        }
    }
    *out = strndup(start, (size_t)(s - start));
    return s;
}
