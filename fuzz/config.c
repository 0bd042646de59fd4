/*
 * config.c - the ini parser (src/config.c) over any file: load, check, copy,
 * compare with the copy, list every key as SHOW CONFIG does, and resolve
 * every database entry's settings. What loads must survive all of it.
 */
#include <stdlib.h>

#include "config.h"
#include "fuzz.h"

static void noop(void *arg, const char *line)
{
    (void)arg;
    (void)line;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char          *path = fuzz_file("pgbun.ini", data, size);
    char                *err = NULL;
    struct pgbun_config *cfg = config_load(path, &err), *copy;

    if (cfg == NULL) return fuzz_refused(err);
    if (!config_check(cfg, &err)) free(err);
    err = NULL;
    copy = config_dup(cfg);
    if (copy == NULL) abort();
    if (config_diff(cfg, copy, noop, NULL) != 0) abort(); /* a copy differs in nothing */
    for (size_t i = 0; i < config_item_count(); i++) {
        struct config_item it;

        if (!config_item(cfg, i, &it)) abort();
        free(it.value);
    }
    for (const struct db_config *db = cfg->databases; db != NULL; db = db->next) {
        struct config_settings eff;

        config_resolve(cfg, db, cfg->users, db->name, &eff);
    }
    config_free(copy);
    config_free(cfg);
    return 0;
}
