/*
 * admin.c - the admin console's command text (src/admin_parse.c): a Query
 * split into statements, each parsed into a command; a SET that parses is
 * applied to a copy of a config (config_set), as the console does.
 */
#include <stdlib.h>
#include <string.h>

#include "admin_parse.h"
#include "config.h"
#include "fuzz.h"

static struct pgbun_config *base;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char *err = NULL;

    (void)argc;
    (void)argv;
    fuzz_quiet();
    base = config_load(NULL, &err);
    if (base == NULL) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char       *sql = fuzz_strndup(data, size);
    const char *s = sql;
    char       *stmt = NULL;

    while ((s = admin_parse_next_statement(s, &stmt)) != NULL) {
        struct admin_parse_cmd cmd;
        char                   err[ADMIN_PARSE_ERR_MAX];

        if (stmt == NULL) abort();
        if (admin_parse_statement(stmt, &cmd, err, sizeof(err))) {
            if (cmd.nargs < 0 || cmd.nargs > 2) abort();
            if (strcmp(cmd.word, "SET") == 0 && cmd.nargs == 2) {
                struct pgbun_config *cfg = config_dup(base);
                char                *msg = NULL;

                if (cfg == NULL) abort();
                if (!config_set(cfg, cmd.arg, cmd.value, &msg)) free(msg);
                config_free(cfg);
            }
        } else if (memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0') {
            abort(); /* a refusal says why */
        }
        free(stmt);
        stmt = NULL;
    }
    free(sql);
    return 0;
}
