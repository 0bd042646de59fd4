/*
 * test_rowset.c - the console's result sets byte for byte: RowDescription,
 * DataRow in text and binary, CommandComplete, and numeric's binary form.
 */
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "rowset.h"
#include "tap.h"

/* Checks numeric's binary form: ndigits, weight, sign, dscale, then base-10000 digits. */
static void numeric_is(const char *dec, int ndigits, int weight, int sign, int dscale, const int *digits)
{
    uint8_t b[64];
    int     n = rowset_numeric_binary(dec, b, sizeof(b));
    int     good = n == 8 + 2 * ndigits;

#define BE16(i) ((int)(b[i] << 8 | b[(i) + 1]))
    good = good && BE16(0) == ndigits && (int16_t)BE16(2) == weight && BE16(4) == sign && BE16(6) == dscale;
    for (int i = 0; good && i < ndigits; i++)
        good = BE16(8 + 2 * i) == digits[i];
#undef BE16
    ok(good, "numeric %s in binary", dec);
}

static void test_numeric(void)
{
    numeric_is("99.52", 2, 0, 0, 2, (const int[]){99, 5200});
    numeric_is("0.25", 1, -1, 0, 2, (const int[]){2500});
    numeric_is("100.00", 1, 0, 0, 2, (const int[]){100});
    numeric_is("0.00", 0, 0, 0, 2, NULL);
    numeric_is("-12.5", 2, 0, 0x4000, 1, (const int[]){12, 5000});
    numeric_is("12345.6", 3, 1, 0, 1, (const int[]){1, 2345, 6000});
    numeric_is("10000", 1, 1, 0, 0, (const int[]){1});
    numeric_is("0.0001", 1, -1, 0, 4, (const int[]){1});
    ok(rowset_numeric_binary("1x", (uint8_t[64]){0}, 64) < 0, "a non-digit is refused");
}

/* The bytes of buf as a malloc'd copy; *len set. */
static uint8_t *take(struct evbuffer *buf, size_t *len)
{
    uint8_t *p;

    *len = evbuffer_get_length(buf);
    p = malloc(*len + 1);
    evbuffer_remove(buf, p, *len);
    return p;
}

static void test_messages(void)
{
    static const struct col cols[] = {{"name", COL_TEXT}, {"n", COL_INT8}};
    static const uint8_t    text_rows[] = {
           'T', 0,   0,   0,   49, 0,   2, /* RowDescription, 2 columns */
           'n', 'a', 'm', 'e', 0,  0,   0,   0,    0,    0,    0,    0,   0, 0, 25,   0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
           0,   0, /* text */
           'n', 0,   0,   0,   0,  0,   0,   0,    0,    0,    0,    20,  0, 8, 0xff, 0xff, 0xff, 0xff, 0,    0, /* int8 */
           'D', 0,   0,   0,   17, 0,   2,   0,    0,    0,    1,    'a', 0, 0, 0,    2,    '4',  '2', /* ('a', 42) */
           'D', 0,   0,   0,   15, 0,   2,   0xff, 0xff, 0xff, 0xff, 0,   0, 0, 1,    '7',             /* (NULL, 7) */
           'C', 0,   0,   0,   9,  'S', 'H', 'O',  'W',  0,
    };
    struct evbuffer *out = evbuffer_new();
    struct rowset    rs;
    uint8_t         *got;
    size_t           len;

    rowset_init(&rs, out);
    rowset_begin(&rs, cols, 2);
    rowset_text(&rs, "a");
    rowset_int(&rs, 42);
    rowset_text(&rs, NULL);
    rowset_int(&rs, 7);
    rowset_end(&rs, "SHOW");
    rowset_deinit(&rs);
    got = take(out, &len);
    ok(!rs.failed && len == sizeof(text_rows) && memcmp(got, text_rows, len) == 0,
       "RowDescription, two DataRows and CommandComplete in text");
    free(got);

    /* Execute after Describe: no RowDescription; binary int8 for column 2 only. */
    rowset_init(&rs, out);
    rs.header = false;
    rs.nformats = 2;
    rs.formats[0] = 0;
    rs.formats[1] = 1;
    rowset_begin(&rs, cols, 2);
    rowset_text(&rs, "a");
    rowset_int(&rs, -2);
    rowset_end(&rs, "SELECT");
    rowset_deinit(&rs);
    got = take(out, &len);
    {
        static const uint8_t want[] = {
            'D',  0,    0,    0,    23,   0,   2, 0, 0, 0,  1,   'a', 0,   0,   0,   8,   0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xfe, 'C', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ',  '1',  0,
        };

        ok(len == sizeof(want) && memcmp(got, want, len) == 0, "binary int8 and a SELECT tag with the row count");
    }
    free(got);

    /* Describe: the header alone. */
    rowset_init(&rs, out);
    rs.rows = false;
    rowset_begin(&rs, cols, 2);
    rowset_text(&rs, "a");
    rowset_int(&rs, 1);
    rowset_end(&rs, "SHOW");
    rowset_deinit(&rs);
    got = take(out, &len);
    ok(len == 50 && got[0] == 'T', "Describe sends the RowDescription only");
    free(got);

    /* Format codes that match neither 1 nor the column count fail. */
    rowset_init(&rs, out);
    rs.nformats = 3;
    rowset_begin(&rs, cols, 2);
    ok(rs.failed, "three format codes for two columns fail");
    rowset_deinit(&rs);
    evbuffer_free(out);
}

/* A sink gets each complete row as text, NULLs as NULL, and nothing is written anywhere. */
struct seen {
    int  rows;
    char text[256];
};

static void sink(void *arg, const struct rowset *rs, const char *const *cells)
{
    struct seen *s = arg;
    size_t       len = strlen(s->text);

    s->rows++;
    for (int i = 0; i < rs->ncols; i++)
        len += (size_t)snprintf(s->text + len, sizeof(s->text) - len, "%s%s=%s", i ? "," : "", rs->cols[i].name,
                                cells[i] ? cells[i] : "NULL");
    snprintf(s->text + len, sizeof(s->text) - len, ";");
}

static void test_sink(void)
{
    static const struct col cols[] = {{"name", COL_TEXT}, {"n", COL_INT8}, {"pct", COL_NUMERIC}};
    struct seen             seen = {0};
    struct rowset           rs;

    rowset_init_sink(&rs, sink, &seen);
    rowset_begin(&rs, cols, 3);
    rowset_text(&rs, "a\"b");
    rowset_int(&rs, -42);
    rowset_numeric(&rs, 99.5, 2);
    rowset_text(&rs, NULL);
    rowset_int(&rs, 7);
    is_int(seen.rows, 1, "a sink sees only complete rows");
    rowset_numeric(&rs, 0, 1);
    rowset_end(&rs, "SHOW");
    is_int(seen.rows, 2, "then the second");
    is_str(seen.text, "name=a\"b,n=-42,pct=99.50;name=NULL,n=7,pct=0.0;", "cells as the console's text format");
    ok(!rs.failed, "nothing failed");
    rowset_deinit(&rs);
}

int main(void)
{
    test_numeric();
    test_messages();
    test_sink();
    return done_testing();
}
