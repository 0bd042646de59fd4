/*
 * rowset.h - result sets the admin console sends: RowDescription, DataRow
 * and CommandComplete, in text or binary format.
 *
 *   rowset_begin(rs, cols, n)          RowDescription (unless describe-free Execute)
 *   rowset_int / rowset_text / ...     one call per column; a full row is sent
 *   rowset_end(rs, "SHOW")             CommandComplete
 *
 * A Describe wants only the RowDescription: `rows` false drops the rows.
 * Execute after a Describe wants only the rows: `header` false drops it.
 */
#ifndef PGBUN_ROWSET_H
#define PGBUN_ROWSET_H

#include <stdbool.h>
#include <stdint.h>

struct evbuffer;

enum col_type {
    COL_TEXT,    /* text, OID 25 */
    COL_INT8,    /* bigint, OID 20 */
    COL_NUMERIC, /* numeric, OID 1700 */
};

struct col {
    const char   *name;
    enum col_type type;
};

#define ROWSET_MAX_FORMATS 64
#define ROWSET_MAX_COLS    64 /* a sink's rows */

struct rowset;

/* Takes each complete row, its cells as text (NULL: SQL NULL), instead of DataRows (rowset_init_sink). */
typedef void rowset_sink_fn(void *arg, const struct rowset *rs, const char *const *cells);

struct rowset {
    struct evbuffer  *out;      /* where the messages go */
    struct evbuffer  *row;      /* the DataRow being built */
    const struct col *cols;     /* the columns, from rowset_begin */
    int               ncols;    /* how many */
    int               col;      /* next column of the row being built */
    uint64_t          count;    /* rows sent */
    bool              header;   /* send RowDescription */
    bool              rows;     /* send DataRows */
    int               nformats; /* result format codes from Bind: 0 (all text), 1 (all) or ncols */
    int16_t           formats[ROWSET_MAX_FORMATS];
    bool              failed; /* out of memory or a format code it cannot honour */
    rowset_sink_fn   *sink;   /* or NULL: messages to `out` */
    void             *sink_arg;
    int32_t           offs[ROWSET_MAX_COLS]; /* a sink's row: each cell's place in `row`, -1 for NULL */
};

/* Sends to `out`: header and rows both on, text format. */
void rowset_init(struct rowset *rs, struct evbuffer *out);
/* Hands every row to fn, as text; nothing is sent (the metrics endpoint reads SHOW results this way). */
void rowset_init_sink(struct rowset *rs, rowset_sink_fn *fn, void *arg);
/* Starts a result: RowDescription when rs->header. */
void rowset_begin(struct rowset *rs, const struct col *cols, int ncols);
void rowset_text(struct rowset *rs, const char *v); /* NULL is SQL NULL */
void rowset_textf(struct rowset *rs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rowset_int(struct rowset *rs, int64_t v);
/* A numeric with `scale` digits after the point. */
void rowset_numeric(struct rowset *rs, double v, int scale);
/* CommandComplete: "tag" or, for SELECT-like tags, "tag count". */
void rowset_end(struct rowset *rs, const char *tag);
void rowset_deinit(struct rowset *rs);

/* Encodes a decimal string ("-12.345") as PostgreSQL's binary numeric into buf; returns its length or -1. */
int rowset_numeric_binary(const char *dec, uint8_t *buf, int cap);

#endif
