/*
 * output.c - tables, CSV and JSON for pgbun-admin (and JSON strings for
 * pgbun-loadtest).
 *
 * Tables are aligned on display width (UTF-8 aware, one column per code
 * point), with numbers right-aligned and a "(N rows)" footer, as psql prints
 * them. CSV quotes a field only when it must (RFC 4180). JSON prints numbers
 * as numbers and NULL as null.
 */
#include "output.h"

#include <stdlib.h>
#include <string.h>

/* Type OIDs of the numeric types the console sends (and a few more). */
#define INT8OID    20
#define INT2OID    21
#define INT4OID    23
#define FLOAT4OID  700
#define FLOAT8OID  701
#define NUMERICOID 1700

bool out_is_number(const PGresult *res, int col)
{
    switch (PQftype(res, col)) {
    case INT8OID:
    case INT2OID:
    case INT4OID:
    case FLOAT4OID:
    case FLOAT8OID:
    case NUMERICOID: return true;
    default: return false;
    }
}

/* Display width: code points, not bytes. */
static int width(const char *s)
{
    int n = 0;

    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80) n++;
    return n;
}

static void pad(FILE *f, int n)
{
    while (n-- > 0)
        fputc(' ', f);
}

static void print_table(FILE *f, const PGresult *res)
{
    int  ncols = PQnfields(res), nrows = PQntuples(res);
    int *w = calloc((size_t)(ncols ? ncols : 1), sizeof(*w));

    if (w == NULL) return;
    for (int c = 0; c < ncols; c++) {
        w[c] = width(PQfname(res, c));
        for (int r = 0; r < nrows; r++) {
            int n = width(PQgetvalue(res, r, c));

            if (n > w[c]) w[c] = n;
        }
    }
    /* header, centred as psql does */
    for (int c = 0; c < ncols; c++) {
        int left = (w[c] - width(PQfname(res, c))) / 2;

        fputs(c ? "|" : "", f);
        fputc(' ', f);
        pad(f, left);
        fputs(PQfname(res, c), f);
        pad(f, w[c] - width(PQfname(res, c)) - left);
        fputc(' ', f);
    }
    fputc('\n', f);
    for (int c = 0; c < ncols; c++) {
        fputs(c ? "+" : "", f);
        for (int i = 0; i < w[c] + 2; i++)
            fputc('-', f);
    }
    fputc('\n', f);
    for (int r = 0; r < nrows; r++) {
        for (int c = 0; c < ncols; c++) {
            const char *v = PQgetvalue(res, r, c);
            int         gap = w[c] - width(v);

            fputs(c ? "|" : "", f);
            fputc(' ', f);
            if (out_is_number(res, c)) pad(f, gap);
            fputs(v, f);
            if (c == ncols - 1) break; /* no trailing blanks */
            if (!out_is_number(res, c)) pad(f, gap);
            fputc(' ', f);
        }
        fputc('\n', f);
    }
    fprintf(f, "(%d row%s)\n\n", nrows, nrows == 1 ? "" : "s");
    free(w);
}

static void csv_field(FILE *f, const char *s)
{
    if (strpbrk(s, ",\"\r\n") == NULL) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void print_csv(FILE *f, const PGresult *res)
{
    int ncols = PQnfields(res), nrows = PQntuples(res);

    for (int c = 0; c < ncols; c++) {
        if (c) fputc(',', f);
        csv_field(f, PQfname(res, c));
    }
    fputc('\n', f);
    for (int r = 0; r < nrows; r++) {
        for (int c = 0; c < ncols; c++) {
            if (c) fputc(',', f);
            if (!PQgetisnull(res, r, c)) csv_field(f, PQgetvalue(res, r, c));
        }
        fputc('\n', f);
    }
}

void out_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;

        switch (ch) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (ch < 0x20)
                fprintf(f, "\\u%04x", ch);
            else
                fputc(ch, f);
        }
    }
    fputc('"', f);
}

static void print_json(FILE *f, const PGresult *res)
{
    int ncols = PQnfields(res), nrows = PQntuples(res);

    fputc('[', f);
    for (int r = 0; r < nrows; r++) {
        fputs(r ? ",\n {" : "{", f);
        for (int c = 0; c < ncols; c++) {
            if (c) fputs(", ", f);
            out_json_string(f, PQfname(res, c));
            fputs(": ", f);
            if (PQgetisnull(res, r, c))
                fputs("null", f);
            else if (out_is_number(res, c))
                fputs(PQgetvalue(res, r, c), f);
            else
                out_json_string(f, PQgetvalue(res, r, c));
        }
        fputc('}', f);
    }
    fputs("]\n", f);
}

void out_print(FILE *f, const PGresult *res, enum out_format fmt)
{
    switch (fmt) {
    case OUT_TABLE: print_table(f, res); break;
    case OUT_CSV: print_csv(f, res); break;
    case OUT_JSON: print_json(f, res); break;
    }
}
