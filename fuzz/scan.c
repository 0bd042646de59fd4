/*
 * scan.c - the SQL scanner (src/scan.c) over any text: both string modes,
 * every flag wanted and none; the effects it reports stay within their
 * bounds.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "scan.h"

static void check(const struct scan_effects *fx)
{
    if (fx->nnames < 0 || fx->nnames > SCAN_MAX_NAMES) abort();
    for (int i = 0; i < fx->nnames; i++)
        if (memchr(fx->names[i], '\0', SCAN_NAME_MAX) == NULL) abort();
    if (memchr(fx->deallocated, '\0', SCAN_NAME_MAX) == NULL) abort();
    if (fx->statements < 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes: the scanner must not read past len (ASan sees it). */
    char               *sql = malloc(size > 0 ? size : 1);
    struct scan_effects fx;

    if (sql == NULL) abort();
    if (size > 0) memcpy(sql, data, size);
    for (int std = 0; std < 2; std++) {
        scan_init(&fx);
        scan_sql(sql, size, std, ~0u, &fx);
        check(&fx);
        scan_init(&fx);
        scan_sql(sql, size, std, SCAN_READBACK, &fx);
        check(&fx);
    }
    /* Effects add up across queries of one transaction. */
    scan_sql(sql, size / 2, true, ~0u, &fx);
    check(&fx);
    free(sql);
    return 0;
}
