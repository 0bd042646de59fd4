/*
 * rowset.c - RowDescription, DataRow and CommandComplete for the admin
 * console. Rows are built in a scratch evbuffer and moved behind their
 * header once complete, so a row is never half-sent.
 */
#include "rowset.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    uint32_t oid;
    int16_t  len;
} types[] = {
    [COL_TEXT] = {25, -1},
    [COL_INT8] = {20, 8},
    [COL_NUMERIC] = {1700, -1},
};

static void put16(struct evbuffer *b, int16_t v)
{
    uint16_t n = htons((uint16_t)v);

    evbuffer_add(b, &n, 2);
}

static void put32(struct evbuffer *b, int32_t v)
{
    uint32_t n = htonl((uint32_t)v);

    evbuffer_add(b, &n, 4);
}

void rowset_init(struct rowset *rs, struct evbuffer *out)
{
    memset(rs, 0, sizeof(*rs));
    rs->out = out;
    rs->header = true;
    rs->rows = true;
}

void rowset_init_sink(struct rowset *rs, rowset_sink_fn *fn, void *arg)
{
    memset(rs, 0, sizeof(*rs));
    rs->header = false;
    rs->rows = true;
    rs->sink = fn;
    rs->sink_arg = arg;
}

void rowset_deinit(struct rowset *rs)
{
    if (rs->row) evbuffer_free(rs->row);
    rs->row = NULL;
}

/* The format code of column i: 0 text, 1 binary. */
static int16_t format_of(const struct rowset *rs, int i)
{
    if (rs->nformats == 0) return 0;
    return rs->formats[rs->nformats == 1 ? 0 : i];
}

void rowset_begin(struct rowset *rs, const struct col *cols, int ncols)
{
    rs->cols = cols;
    rs->ncols = ncols;
    rs->col = 0;
    rs->count = 0;
    if (rs->nformats > 1 && rs->nformats != ncols) rs->failed = true;
    if (rs->sink != NULL && ncols > ROWSET_MAX_COLS) rs->failed = true;
    if (rs->row == NULL && (rs->row = evbuffer_new()) == NULL) rs->failed = true;
    if (!rs->header || rs->failed) return;
    {
        struct evbuffer *b = evbuffer_new();

        if (b == NULL) {
            rs->failed = true;
            return;
        }
        put16(b, (int16_t)ncols);
        for (int i = 0; i < ncols; i++) {
            evbuffer_add(b, cols[i].name, strlen(cols[i].name) + 1);
            put32(b, 0); /* table */
            put16(b, 0); /* column */
            put32(b, (int32_t)types[cols[i].type].oid);
            put16(b, types[cols[i].type].len);
            put32(b, -1); /* typmod */
            put16(b, format_of(rs, i));
        }
        evbuffer_add(rs->out, "T", 1);
        put32(rs->out, (int32_t)(evbuffer_get_length(b) + 4));
        evbuffer_add_buffer(rs->out, b);
        evbuffer_free(b);
    }
}

/* A sink's cell: kept NUL-terminated in rs->row; the complete row goes to the sink. */
static void sink_value(struct rowset *rs, const void *v, int32_t len)
{
    const char *cells[ROWSET_MAX_COLS];
    const char *base;

    rs->offs[rs->col] = v == NULL ? -1 : (int32_t)evbuffer_get_length(rs->row);
    if (v != NULL && (evbuffer_add(rs->row, v, (size_t)len) != 0 || evbuffer_add(rs->row, "", 1) != 0)) {
        rs->failed = true;
        return;
    }
    if (++rs->col < rs->ncols) return;
    rs->col = 0;
    rs->count++;
    if ((base = (const char *)evbuffer_pullup(rs->row, -1)) == NULL && evbuffer_get_length(rs->row) > 0) {
        rs->failed = true;
        return;
    }
    for (int i = 0; i < rs->ncols; i++)
        cells[i] = rs->offs[i] < 0 ? NULL : base + rs->offs[i];
    rs->sink(rs->sink_arg, rs, cells);
    evbuffer_drain(rs->row, evbuffer_get_length(rs->row));
}

/* Adds one column value (NULL: SQL NULL); sends the row when it is complete. */
static void add_value(struct rowset *rs, const void *v, int32_t len)
{
    if (rs->failed || rs->col >= rs->ncols) {
        rs->failed = true;
        return;
    }
    if (rs->sink != NULL) {
        sink_value(rs, v, len);
        return;
    }
    if (rs->rows) {
        put32(rs->row, v == NULL ? -1 : len);
        if (v != NULL) evbuffer_add(rs->row, v, (size_t)len);
    }
    if (++rs->col < rs->ncols) return;
    rs->col = 0;
    rs->count++;
    if (!rs->rows) return;
    evbuffer_add(rs->out, "D", 1);
    put32(rs->out, (int32_t)(evbuffer_get_length(rs->row) + 6));
    put16(rs->out, (int16_t)rs->ncols);
    evbuffer_add_buffer(rs->out, rs->row);
}

void rowset_text(struct rowset *rs, const char *v)
{
    add_value(rs, v, v ? (int32_t)strlen(v) : 0);
}

void rowset_textf(struct rowset *rs, const char *fmt, ...)
{
    char    buf[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    rowset_text(rs, buf);
}

void rowset_int(struct rowset *rs, int64_t v)
{
    char buf[24];

    if (format_of(rs, rs->col) == 1) {
        uint8_t  b[8];
        uint64_t u = (uint64_t)v;

        for (int i = 7; i >= 0; i--, u >>= 8)
            b[i] = (uint8_t)(u & 0xff);
        add_value(rs, b, 8);
        return;
    }
    {
        /* Digits by hand: a SHOW of many pools writes tens of thousands of these, and snprintf is most of its cost. */
        char    *p = buf + sizeof(buf);
        uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;

        *--p = '\0';
        do
            *--p = (char)('0' + u % 10);
        while ((u /= 10) != 0);
        if (v < 0) *--p = '-';
        add_value(rs, p, (int32_t)(buf + sizeof(buf) - 1 - p));
    }
}

void rowset_numeric(struct rowset *rs, double v, int scale)
{
    char buf[64];

    snprintf(buf, sizeof(buf), "%.*f", scale, v);
    if (format_of(rs, rs->col) == 1) {
        uint8_t b[64];
        int     n = rowset_numeric_binary(buf, b, sizeof(b));

        if (n < 0) {
            rs->failed = true;
            return;
        }
        add_value(rs, b, n);
        return;
    }
    rowset_text(rs, buf);
}

void rowset_end(struct rowset *rs, const char *tag)
{
    char buf[64];

    if (rs->failed || !rs->rows || rs->sink != NULL) return;
    if (strcmp(tag, "SELECT") == 0)
        snprintf(buf, sizeof(buf), "%s %llu", tag, (unsigned long long)rs->count);
    else
        snprintf(buf, sizeof(buf), "%s", tag);
    evbuffer_add(rs->out, "C", 1);
    put32(rs->out, (int32_t)(strlen(buf) + 1 + 4));
    evbuffer_add(rs->out, buf, strlen(buf) + 1);
}

static void be16(uint8_t *p, int v)
{
    p[0] = (uint8_t)((unsigned)v >> 8);
    p[1] = (uint8_t)v;
}

int rowset_numeric_binary(const char *dec, uint8_t *buf, int cap)
{
    char        digits[64]; /* integer and fraction digits, padded to groups of 4 */
    const char *p = dec, *dot;
    int         nint, nfrac, pad, len, ngroups, first, last, weight, dscale;
    bool        neg = false;

    if (*p == '-' || *p == '+') neg = *p++ == '-';
    dot = strchr(p, '.');
    nint = dot ? (int)(dot - p) : (int)strlen(p);
    nfrac = dot ? (int)strlen(dot + 1) : 0;
    dscale = nfrac;
    pad = (4 - nint % 4) % 4;
    len = pad + nint + nfrac + 4;
    if (len >= (int)sizeof(digits)) return -1;
    memset(digits, '0', sizeof(digits));
    memcpy(digits + pad, p, (size_t)nint);
    if (nfrac) memcpy(digits + pad + nint, dot + 1, (size_t)nfrac);
    for (int i = 0; i < pad + nint + nfrac; i++)
        if (digits[i] < '0' || digits[i] > '9') return -1;
    ngroups = (pad + nint + nfrac + 3) / 4;
    weight = (pad + nint) / 4 - 1;
    first = 0;
    last = ngroups - 1;
    while (first <= last && memcmp(digits + first * 4, "0000", 4) == 0)
        first++;
    while (last >= first && memcmp(digits + last * 4, "0000", 4) == 0)
        last--;
    if (8 + (last - first + 1) * 2 > cap) return -1;
    if (first > last) { /* zero */
        be16(buf, 0);
        be16(buf + 2, 0);
        be16(buf + 4, 0);
        be16(buf + 6, dscale);
        return 8;
    }
    be16(buf, last - first + 1);
    be16(buf + 2, weight - first);
    be16(buf + 4, neg ? 0x4000 : 0);
    be16(buf + 6, dscale);
    for (int g = first; g <= last; g++) {
        const char *d = digits + g * 4;

        be16(buf + 8 + (g - first) * 2, (d[0] - '0') * 1000 + (d[1] - '0') * 100 + (d[2] - '0') * 10 + (d[3] - '0'));
    }
    return 8 + (last - first + 1) * 2;
}
