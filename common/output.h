/*
 * output.h - how pgbun-admin prints a result: an aligned table like psql's,
 * CSV, or JSON (an array of objects, numbers typed) for scripts; and the
 * JSON string literal pgbun-loadtest's report is written with.
 */
#ifndef PGBUN_COMMON_OUTPUT_H
#define PGBUN_COMMON_OUTPUT_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>

enum out_format {
    OUT_TABLE = 0,
    OUT_CSV,
    OUT_JSON,
};

/* Is column `col` of res a number (bigint, integer, numeric, float)? */
bool out_is_number(const PGresult *res, int col);
/* Prints a PGRES_TUPLES_OK result to f. */
void out_print(FILE *f, const PGresult *res, enum out_format fmt);
/* Prints a JSON string literal (quotes and escapes included). */
void out_json_string(FILE *f, const char *s);

#endif
