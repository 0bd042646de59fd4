/*
 * proto.c - PostgreSQL v3 wire protocol framing, readers and builders.
 *
 * Builders assemble a message in a small stack buffer when it fits and
 * append it to the evbuffer with one call, so a message is never half
 * written into an output buffer.
 */
#include "proto.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- framing ---- */

const uint8_t proto_fe_kinds[256] = {
    ['Q'] = FE_QUERY,    ['F'] = FE_FUNCTION, ['S'] = FE_SYNC,      ['H'] = FE_FLUSH,    ['P'] = FE_EXTENDED,
    ['B'] = FE_EXTENDED, ['D'] = FE_EXTENDED, ['E'] = FE_EXTENDED,  ['C'] = FE_EXTENDED, ['d'] = FE_COPY,
    ['c'] = FE_COPY,     ['f'] = FE_COPY,     ['X'] = FE_TERMINATE,
};

enum proto_result proto_peek_header(struct evbuffer *buf, uint32_t max_len, uint8_t *type, uint32_t *len)
{
    uint8_t  hdr[PROTO_HDR_LEN];
    uint32_t n;

    if (evbuffer_copyout(buf, hdr, sizeof(hdr)) < (ev_ssize_t)sizeof(hdr)) return PROTO_NEED_MORE;
    memcpy(&n, hdr + 1, 4);
    n = ntohl(n);
    *type = hdr[0];
    *len = n;
    if (n < 4 || n > max_len) return PROTO_BAD;
    return PROTO_OK;
}

enum proto_result proto_peek_startup(struct evbuffer *buf, uint32_t *len)
{
    uint32_t n;

    if (evbuffer_copyout(buf, &n, 4) < 4) return PROTO_NEED_MORE;
    n = ntohl(n);
    *len = n;
    if (n < PROTO_STARTUP_MIN || n > PROTO_STARTUP_MAX) return PROTO_BAD;
    return PROTO_OK;
}

/* ---- reader ---- */

void proto_reader_init(struct proto_reader *r, const void *data, size_t len)
{
    r->p = data;
    r->left = len;
    r->bad = false;
}

static const uint8_t *take(struct proto_reader *r, size_t n)
{
    const uint8_t *p = r->p;

    if (r->bad || r->left < n) {
        r->bad = true;
        return NULL;
    }
    r->p += n;
    r->left -= n;
    return p;
}

uint8_t proto_get_u8(struct proto_reader *r)
{
    const uint8_t *p = take(r, 1);

    return p ? p[0] : 0;
}

uint16_t proto_get_u16(struct proto_reader *r)
{
    const uint8_t *p = take(r, 2);

    return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}

uint32_t proto_get_u32(struct proto_reader *r)
{
    const uint8_t *p = take(r, 4);

    return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}

const char *proto_get_str(struct proto_reader *r)
{
    const uint8_t *end;
    const char    *s = (const char *)r->p;

    if (r->bad) return "";
    end = memchr(r->p, 0, r->left);
    if (end == NULL) {
        r->bad = true;
        return "";
    }
    take(r, (size_t)(end - r->p) + 1);
    return s;
}

const uint8_t *proto_get_bytes(struct proto_reader *r, size_t n)
{
    return take(r, n);
}

/* ---- startup ---- */

bool proto_parse_startup(const uint8_t *body, size_t len, struct startup_packet *sp, const char **err)
{
    struct proto_reader r;

    memset(sp, 0, sizeof(*sp));
    proto_reader_init(&r, body, len);
    sp->version = proto_get_u32(&r);
    for (;;) {
        const char *name = proto_get_str(&r);
        const char *value;

        if (r.bad) break;
        if (name[0] == '\0') {
            if (r.left != 0) {
                *err = "invalid startup packet layout: data after the final terminator";
                return false;
            }
            return true;
        }
        value = proto_get_str(&r);
        if (r.bad) break;
        if (strncmp(name, "_pq_.", 5) == 0) {
            if (!varlist_set(&sp->pq_options, name, value)) goto oom;
        } else if (!varlist_set(&sp->params, name, value)) {
            goto oom;
        }
    }
    *err = "invalid startup packet layout: expected terminator as last byte";
    return false;
oom:
    *err = "out of memory";
    return false;
}

void proto_startup_free(struct startup_packet *sp)
{
    varlist_clear(&sp->params);
    varlist_clear(&sp->pq_options);
}

/*
 * PostgreSQL's own splitting rule (pg_split_opts): whitespace separates
 * words, a backslash makes the next character literal.
 */
static char *next_word(const char **pos)
{
    const char *p = *pos;
    char       *word;
    size_t      n = 0;

    while (*p && isspace((unsigned char)*p))
        p++;
    if (*p == '\0') return NULL;
    word = malloc(strlen(p) + 1);
    if (word == NULL) return NULL;
    while (*p && !isspace((unsigned char)*p)) {
        if (*p == '\\' && p[1]) p++;
        word[n++] = *p++;
    }
    word[n] = '\0';
    *pos = p;
    return word;
}

static bool add_option(struct varlist *out, const char *opt, const char **err)
{
    const char *eq = strchr(opt, '=');
    char        name[256];
    size_t      nlen;

    if (eq == NULL || eq == opt || (size_t)(eq - opt) >= sizeof(name)) {
        *err = "invalid option in \"options\": expected name=value";
        return false;
    }
    nlen = (size_t)(eq - opt);
    memcpy(name, opt, nlen);
    name[nlen] = '\0';
    /* --work-mem=x means work_mem=x */
    for (size_t i = 0; i < nlen; i++)
        if (name[i] == '-') name[i] = '_';
    if (!varlist_set(out, name, eq + 1)) {
        *err = "out of memory";
        return false;
    }
    return true;
}

bool proto_parse_options(const char *options, struct varlist *out, const char **err)
{
    const char *pos = options;
    char       *word;
    bool        ok = true;

    while (ok && (word = next_word(&pos)) != NULL) {
        if (strcmp(word, "-c") == 0) {
            char *arg = next_word(&pos);

            if (arg == NULL) {
                *err = "invalid option in \"options\": -c without a setting";
                ok = false;
            } else {
                ok = add_option(out, arg, err);
            }
            free(arg);
        } else if (strncmp(word, "-c", 2) == 0) {
            ok = add_option(out, word + 2, err);
        } else if (strncmp(word, "--", 2) == 0) {
            ok = add_option(out, word + 2, err);
        } else {
            *err = "unsupported option in \"options\": only -c name=value and --name=value are accepted";
            ok = false;
        }
        free(word);
    }
    return ok;
}

void proto_parse_error(const uint8_t *body, size_t len, struct pg_error *out)
{
    struct proto_reader r;

    memset(out, 0, sizeof(*out));
    proto_reader_init(&r, body, len);
    for (;;) {
        uint8_t     field = proto_get_u8(&r);
        const char *value;

        if (r.bad || field == 0) break;
        value = proto_get_str(&r);
        if (r.bad) break;
        switch (field) {
        case 'V': snprintf(out->severity, sizeof(out->severity), "%s", value); break;
        case 'S':
            if (out->severity[0] == '\0') snprintf(out->severity, sizeof(out->severity), "%s", value);
            break;
        case 'C': snprintf(out->sqlstate, sizeof(out->sqlstate), "%s", value); break;
        case 'M': snprintf(out->message, sizeof(out->message), "%s", value); break;
        default: break;
        }
    }
}

/* ---- builders ---- */

/* A message under construction; small ones stay on the stack. */
struct pkt {
    uint8_t *data;
    size_t   len;
    size_t   cap;
    bool     failed;
    uint8_t  local[512];
};

static void pkt_start(struct pkt *p, uint8_t type)
{
    p->data = p->local;
    p->cap = sizeof(p->local);
    p->failed = false;
    p->len = 0;
    if (type) p->data[p->len++] = type;
    p->len += 4; /* length, filled by pkt_finish */
}

static void pkt_put(struct pkt *p, const void *src, size_t n)
{
    if (p->failed) return;
    if (p->len + n > p->cap) {
        size_t   cap = (p->len + n) * 2;
        uint8_t *d = p->data == p->local ? malloc(cap) : realloc(p->data, cap);

        if (d == NULL) {
            p->failed = true;
            return;
        }
        if (p->data == p->local) memcpy(d, p->local, p->len);
        p->data = d;
        p->cap = cap;
    }
    memcpy(p->data + p->len, src, n);
    p->len += n;
}

static void pkt_put_u8(struct pkt *p, uint8_t v)
{
    pkt_put(p, &v, 1);
}

static void pkt_put_u32(struct pkt *p, uint32_t v)
{
    v = htonl(v);
    pkt_put(p, &v, 4);
}

static void pkt_put_str(struct pkt *p, const char *s)
{
    pkt_put(p, s, strlen(s) + 1);
}

static void pkt_finish(struct pkt *p, struct evbuffer *out, bool typed)
{
    size_t   off = typed ? 1 : 0;
    uint32_t n = htonl((uint32_t)(p->len - off));

    if (!p->failed) {
        memcpy(p->data + off, &n, 4);
        evbuffer_add(out, p->data, p->len);
    }
    if (p->data != p->local) free(p->data);
}

uint8_t *proto_take_body(struct evbuffer *in, uint32_t len)
{
    uint8_t *body = malloc((size_t)len - 4 + 1);

    if (body == NULL) return NULL;
    evbuffer_drain(in, 5);
    evbuffer_remove(in, body, (size_t)len - 4);
    body[len - 4] = '\0';
    return body;
}

/* ErrorResponse ('E') or NoticeResponse ('N'): the same fields. */
static void add_report(struct evbuffer *out, uint8_t type, const char *severity, const char *sqlstate, const char *fmt,
                       va_list ap) __attribute__((format(printf, 5, 0)));

void proto_add_verror(struct evbuffer *out, const char *severity, const char *sqlstate, const char *fmt, va_list ap)
{
    add_report(out, 'E', severity, sqlstate, fmt, ap);
}

void proto_add_vnotice(struct evbuffer *out, const char *fmt, va_list ap)
{
    add_report(out, 'N', "NOTICE", "00000", fmt, ap);
}

/* A message with no body: ParseComplete, BindComplete, CloseComplete, NoData, EmptyQueryResponse. */
static void add_bare(struct evbuffer *out, uint8_t type)
{
    uint8_t msg[5] = {type, 0, 0, 0, 4};

    evbuffer_add(out, msg, sizeof(msg));
}

void proto_add_parse_complete(struct evbuffer *out)
{
    add_bare(out, '1');
}

void proto_add_bind_complete(struct evbuffer *out)
{
    add_bare(out, '2');
}

void proto_add_close_complete(struct evbuffer *out)
{
    add_bare(out, '3');
}

void proto_add_no_data(struct evbuffer *out)
{
    add_bare(out, 'n');
}

void proto_add_empty_query(struct evbuffer *out)
{
    add_bare(out, 'I');
}

void proto_add_no_params(struct evbuffer *out)
{
    static const uint8_t msg[7] = {'t', 0, 0, 0, 6, 0, 0};

    evbuffer_add(out, msg, sizeof(msg));
}

void proto_add_command_complete(struct evbuffer *out, const char *tag)
{
    struct pkt p;

    pkt_start(&p, 'C');
    pkt_put_str(&p, tag);
    pkt_finish(&p, out, true);
}

static void add_report(struct evbuffer *out, uint8_t type, const char *severity, const char *sqlstate, const char *fmt,
                       va_list ap)
{
    struct pkt p;
    char       msg[1024];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    pkt_start(&p, type);
    pkt_put_u8(&p, 'S');
    pkt_put_str(&p, severity);
    pkt_put_u8(&p, 'V');
    pkt_put_str(&p, severity);
    pkt_put_u8(&p, 'C');
    pkt_put_str(&p, sqlstate);
    pkt_put_u8(&p, 'M');
    pkt_put_str(&p, msg);
    pkt_put_u8(&p, 0);
    pkt_finish(&p, out, true);
}

void proto_add_error(struct evbuffer *out, const char *severity, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    proto_add_verror(out, severity, sqlstate, fmt, ap);
    va_end(ap);
}

void proto_add_auth(struct evbuffer *out, uint32_t code, const void *data, size_t len)
{
    struct pkt p;

    pkt_start(&p, 'R');
    pkt_put_u32(&p, code);
    if (len) pkt_put(&p, data, len);
    pkt_finish(&p, out, true);
}

void proto_add_param_status(struct evbuffer *out, const char *name, const char *value)
{
    struct pkt p;

    pkt_start(&p, 'S');
    pkt_put_str(&p, name);
    pkt_put_str(&p, value);
    pkt_finish(&p, out, true);
}

void proto_add_backend_key(struct evbuffer *out, const uint8_t key[8])
{
    struct pkt p;

    pkt_start(&p, 'K');
    pkt_put(&p, key, 8);
    pkt_finish(&p, out, true);
}

void proto_add_ready(struct evbuffer *out, char status)
{
    uint8_t msg[6] = {'Z', 0, 0, 0, 5, (uint8_t)status};

    evbuffer_add(out, msg, sizeof(msg));
}

void proto_add_query(struct evbuffer *out, const char *sql)
{
    struct pkt p;

    pkt_start(&p, 'Q');
    pkt_put_str(&p, sql);
    pkt_finish(&p, out, true);
}

void proto_add_parse(struct evbuffer *out, const char *name, const char *query, const void *params, size_t params_len)
{
    static const uint8_t none[2] = {0, 0};
    struct pkt           p;

    pkt_start(&p, 'P');
    pkt_put_str(&p, name);
    pkt_put_str(&p, query);
    if (params != NULL)
        pkt_put(&p, params, params_len);
    else
        pkt_put(&p, none, sizeof(none));
    pkt_finish(&p, out, true);
}

void proto_add_bind_text(struct evbuffer *out, const char *value)
{
    struct pkt p;

    pkt_start(&p, 'B');
    pkt_put_str(&p, "");    /* unnamed portal */
    pkt_put_str(&p, "");    /* unnamed statement */
    pkt_put(&p, "\0\0", 2); /* no format codes: all text */
    if (value != NULL) {
        size_t n = strlen(value);

        pkt_put(&p, "\0\1", 2);
        pkt_put_u32(&p, (uint32_t)n);
        pkt_put(&p, value, n);
    } else {
        pkt_put(&p, "\0\0", 2);
    }
    pkt_put(&p, "\0\0", 2); /* results in text */
    pkt_finish(&p, out, true);
}

void proto_add_execute(struct evbuffer *out)
{
    struct pkt p;

    pkt_start(&p, 'E');
    pkt_put_str(&p, "");
    pkt_put_u32(&p, 0); /* every row */
    pkt_finish(&p, out, true);
}

void proto_add_statement_request(struct evbuffer *out, char type, const char *name)
{
    struct pkt p;

    pkt_start(&p, (uint8_t)type);
    pkt_put_u8(&p, 'S');
    pkt_put_str(&p, name);
    pkt_finish(&p, out, true);
}

void proto_add_sync(struct evbuffer *out)
{
    add_bare(out, 'S');
}

void proto_add_header(struct evbuffer *out, char type, uint32_t len)
{
    uint8_t h[5] = {(uint8_t)type, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};

    evbuffer_add(out, h, sizeof(h));
}

void proto_add_password(struct evbuffer *out, const char *password)
{
    struct pkt p;

    pkt_start(&p, 'p');
    pkt_put_str(&p, password);
    pkt_finish(&p, out, true);
}

void proto_add_sasl_initial(struct evbuffer *out, const char *mech, const char *data, size_t len)
{
    struct pkt p;

    pkt_start(&p, 'p');
    pkt_put_str(&p, mech);
    pkt_put_u32(&p, (uint32_t)len);
    pkt_put(&p, data, len);
    pkt_finish(&p, out, true);
}

void proto_add_sasl_response(struct evbuffer *out, const char *data, size_t len)
{
    struct pkt p;

    pkt_start(&p, 'p');
    pkt_put(&p, data, len);
    pkt_finish(&p, out, true);
}

void proto_add_startup(struct evbuffer *out, const struct varlist *params)
{
    struct pkt p;

    pkt_start(&p, 0);
    pkt_put_u32(&p, PROTO_VERSION(3, 0));
    for (size_t i = 0; i < params->count; i++) {
        pkt_put_str(&p, params->vars[i].name);
        pkt_put_str(&p, params->vars[i].value);
    }
    pkt_put_u8(&p, 0);
    pkt_finish(&p, out, false);
}

void proto_add_cancel(struct evbuffer *out, const uint8_t key[8])
{
    struct pkt p;

    pkt_start(&p, 0);
    pkt_put_u32(&p, PROTO_CODE_CANCEL);
    pkt_put(&p, key, 8);
    pkt_finish(&p, out, false);
}

void proto_add_terminate(struct evbuffer *out)
{
    static const uint8_t msg[5] = {'X', 0, 0, 0, 4};

    evbuffer_add(out, msg, sizeof(msg));
}

void proto_add_negotiate(struct evbuffer *out, uint32_t minor, const struct varlist *unsupported)
{
    struct pkt p;

    pkt_start(&p, 'v');
    pkt_put_u32(&p, minor);
    pkt_put_u32(&p, (uint32_t)unsupported->count);
    for (size_t i = 0; i < unsupported->count; i++)
        pkt_put_str(&p, unsupported->vars[i].name);
    pkt_finish(&p, out, true);
}

bool proto_valid_param_name(const char *name)
{
    if (!isalpha((unsigned char)name[0]) && name[0] != '_') return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '$') return false;
    return strlen(name) < 64 * 2 + 1;
}

/* Appends a string literal, doubling quotes (and backslashes, with E''). */
static char *put_literal(char *d, const char *value)
{
    if (strchr(value, '\\') != NULL) *d++ = 'E';
    *d++ = '\'';
    for (const char *v = value; *v; v++) {
        if (*v == '\'' || *v == '\\') *d++ = *v;
        *d++ = *v;
    }
    *d++ = '\'';
    return d;
}

/* Appends head, name and value as literals with a comma between, and tail. false as below. */
static bool append_literals(char **sql, size_t *len, const char *head, const char *name, const char *value,
                            const char *tail)
{
    size_t need = *len + strlen(head) + 2 * strlen(name) + 2 * strlen(value) + strlen(tail) + 8;
    char  *s, *d;

    if (!proto_valid_param_name(name)) return false;
    s = realloc(*sql, need + 1);
    if (s == NULL) return false;
    d = stpcpy(s + *len, head);
    d = put_literal(d, name);
    *d++ = ',';
    d = put_literal(d, value);
    d = stpcpy(d, tail);
    *len = (size_t)(d - s);
    *sql = s;
    return true;
}

/*
 * set_config() takes the value as PostgreSQL takes a startup parameter:
 * `SET search_path TO 'a,b'` would name one schema "a,b", set_config
 * gives two.
 */
bool proto_append_set(char **sql, size_t *len, const char *name, const char *value)
{
    return append_literals(sql, len, "SELECT pg_catalog.set_config(", name, value, ",false);");
}

bool proto_append_pair(char **sql, size_t *len, size_t start, const char *name, const char *value)
{
    return append_literals(sql, len, *len == start ? "(" : ",(", name, value, ")");
}

bool proto_append_reset(char **sql, size_t *len, const char *name)
{
    size_t need = *len + strlen(name) + 8;
    char  *s;

    if (!proto_valid_param_name(name)) return false;
    s = realloc(*sql, need + 1);
    if (s == NULL) return false;
    *len += (size_t)sprintf(s + *len, "RESET %s;", name);
    *sql = s;
    return true;
}
