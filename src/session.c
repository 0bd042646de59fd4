/*
 * session.c - keeping a server's session in step with the client it serves.
 *
 * A server's session outlives the client it serves: settings a client made,
 * and what pins it (LISTEN, advisory locks, temp tables, holdable cursors,
 * SQL-level PREPARE, LOAD), stay on it. This file decides what follows a
 * client to its next server, what the server must ask of PostgreSQL before
 * anyone else gets it, and what the answers mean. It never touches a
 * connection: server.c lends it the lists of settings (the client's
 * startup parameters and own SETs, what pgbun applied, what the server
 * reported, connect_query's baseline) and drives the phases:
 *
 *   client linked   --session_settings_sql-->  SET ...  --ReadyForQuery-->  session_settings_applied
 *   client left     --session_after_client-->  read-back | DISCARD ALL | server_reset_query | release
 *   read-back       --session_readback_sql-->  DataRows --session_read_row--> session_settings_read
 *
 * Held state is read back (a count per kind), never guessed: the client's
 * text only says when to ask (scan.h).
 */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "scan.h"

/* What a server is reset with when an earlier client may have left state pgbun cannot name or see. */
static const char clean_sql[] = "SET SESSION AUTHORIZATION DEFAULT;RESET ALL;CLOSE ALL;UNLISTEN *;"
                                "SELECT pg_catalog.pg_advisory_unlock_all();DISCARD TEMP;DISCARD SEQUENCES;";

/* Appends SET name = value to sql unless the server already has it. */
static bool want_setting(const struct varlist *applied, const struct varlist *reported, const struct var *v, char **sql,
                         size_t *len)
{
    const char *have = varlist_get(applied, v->name);
    const char *now = varlist_get(reported, v->name);

    if ((have && strcmp(have, v->value) == 0) || (now && strcmp(now, v->value) == 0)) return true;
    return proto_append_set(sql, len, v->name, v->value);
}

/* Sets every entry of src (NULL: none) in dst; false on out of memory. */
static bool overlay(struct varlist *dst, const struct varlist *src)
{
    for (size_t i = 0; src && i < src->count; i++)
        if (!varlist_set(dst, src->vars[i].name, src->vars[i].value)) return false;
    return true;
}

/* What the client wants of setting `name`: its own SET, else its startup parameter, else NULL. */
static const char *wanted(const struct varlist *params, const struct varlist *sets, const char *name)
{
    const char *v = sets ? varlist_get(sets, name) : NULL;

    return v ? v : varlist_get(params, name);
}

bool session_settings_sql(char **sql, size_t *len, const struct varlist *params, const struct varlist *sets,
                          const struct varlist *applied, const struct varlist *reported, const struct varlist *baseline,
                          bool clean)
{
    bool ok = true;

    if (clean) {
        if ((*sql = strdup(clean_sql)) == NULL) return false;
        *len = sizeof(clean_sql) - 1;
    }
    for (size_t i = 0; ok && i < params->count; i++)
        if (sets == NULL || varlist_get(sets, params->vars[i].name) == NULL)
            ok = clean ? proto_append_set(sql, len, params->vars[i].name, params->vars[i].value)
                       : want_setting(applied, reported, &params->vars[i], sql, len);
    for (size_t i = 0; ok && sets && i < sets->count; i++)
        ok = clean ? proto_append_set(sql, len, sets->vars[i].name, sets->vars[i].value)
                   : want_setting(applied, reported, &sets->vars[i], sql, len);
    /* Undo what an earlier client asked for and this one did not: back to connect_query's value, if it set one. */
    for (size_t i = 0; ok && i < applied->count; i++) {
        const char *name = applied->vars[i].name, *base = varlist_get(baseline, name);

        if (wanted(params, sets, name) == NULL)
            ok = base != NULL ? proto_append_set(sql, len, name, base) : proto_append_reset(sql, len, name);
    }
    /* RESET ALL undid connect_query's settings too. */
    for (size_t i = 0; ok && clean && i < baseline->count; i++)
        if (wanted(params, sets, baseline->vars[i].name) == NULL)
            ok = proto_append_set(sql, len, baseline->vars[i].name, baseline->vars[i].value);
    return ok;
}

bool session_want_all(struct varlist *dst, const struct varlist *params, const struct varlist *sets)
{
    varlist_clear(dst);
    return varlist_copy(dst, params) && overlay(dst, sets);
}

bool session_settings_applied(struct varlist *applied, struct varlist *applying)
{
    varlist_clear(applied);
    for (size_t i = 0; i < applying->count; i++)
        if (!varlist_set(applied, applying->vars[i].name, applying->vars[i].value)) return false;
    varlist_clear(applying);
    return true;
}

/* ---- when the client leaves ---- */

bool session_readback_due(unsigned scan_pending)
{
    return (scan_pending & (SCAN_READBACK | SCAN_PIN)) != 0;
}

enum session_next session_after_client(unsigned held, unsigned scan_pending, bool reset_query)
{
    if (session_readback_due(scan_pending)) return SESSION_READBACK;
    if (held & HELD_LOAD) return SESSION_CLOSE;
    if (held) return SESSION_DISCARD;
    return reset_query ? SESSION_RESET : SESSION_RELEASE;
}

unsigned session_pin_load(unsigned held, unsigned scan_pending)
{
    return (scan_pending & SCAN_LOAD) ? held | HELD_LOAD : held;
}

/* ---- the read-back ---- */

/*
 * What of the session's state pins its client, counted: LISTEN channels,
 * session-level advisory locks (a transaction's are gone at its end), temp
 * objects, holdable cursors, SQL-level prepared statements. One row of
 * five columns, which tells it apart from the settings' rows of two.
 */
static const char held_query[] =
    "SELECT (SELECT count(*) FROM pg_catalog.pg_listening_channels()),"
    " (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()),"
    " (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()),"
    " (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable),"
    " (SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql)";

static const unsigned held_columns[] = {HELD_LISTEN, HELD_LOCK, HELD_TEMP, HELD_CURSOR, HELD_PREPARE};

/*
 * Exact whatever the client's text did (a SET rolled back, RESET ALL,
 * set_config with a computed name, UNLISTEN *), and one round trip only
 * after such transactions.
 */
char *session_readback_sql(const struct varlist *named, const struct varlist *applied, unsigned scan_pending)
{
    static const char builtin[] = "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session'";
    /* Custom parameters (myext.tenant) are not in pg_settings: those named are asked one by one. */
    static const char custom_head[] = " UNION ALL SELECT n, current_setting(n, true) FROM unnest(ARRAY[";
    /* role and session_authorization are not in pg_settings either; "none" is no role set. */
    static const char     custom_tail[] = "]::text[]) AS n WHERE n NOT IN (SELECT name FROM pg_catalog.pg_settings)"
                                          " AND coalesce(current_setting(n, true), '') <> ''"
                                          " AND NOT (n = 'role' AND current_setting(n) = 'none')";
    const struct varlist *lists[2] = {named, applied};
    bool                  settings = (scan_pending & SCAN_READBACK) != 0, held = (scan_pending & SCAN_PIN) != 0;
    size_t                len =
        sizeof(builtin) + sizeof(custom_head) + sizeof(custom_tail) + sizeof(held_query) + sizeof("'role'") + 2;
    char *sql, *d;
    bool  any = false;

    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < lists[k]->count; i++)
            len += strlen(lists[k]->vars[i].name) + 3;
    if ((sql = malloc(len)) == NULL) return NULL;
    d = sql;
    *d = '\0';
    if (settings) d += sprintf(d, "%s", builtin);
    for (int k = 0; settings && k < 2; k++) {
        for (size_t i = 0; i < lists[k]->count; i++) {
            const char *name = lists[k]->vars[i].name;

            if (!proto_valid_param_name(name)) continue; /* [A-Za-z0-9_.$]: nothing to quote */
            d += sprintf(d, "%s'%s'", any ? "," : custom_head, name);
            any = true;
        }
    }
    /* A role set under a name pgbun could not read (set_config of a computed name) is read back too. */
    if ((scan_pending & SCAN_UNKNOWN) && settings) {
        d += sprintf(d, "%s'role'", any ? "," : custom_head);
        any = true;
    }
    if (any) d += sprintf(d, "%s", custom_tail);
    if (held) sprintf(d, "%s%s", settings ? "; " : "", held_query);
    return sql;
}

/* The row of held_query, into *held. */
static bool read_held(unsigned *held, const uint8_t *body, size_t len)
{
    struct proto_reader r;

    proto_reader_init(&r, body, len);
    if (proto_get_u16(&r) != 5) return false;
    *held = 0;
    for (int i = 0; i < 5; i++) {
        uint32_t       n = proto_get_u32(&r);
        const uint8_t *v = n == UINT32_MAX ? NULL : proto_get_bytes(&r, n);

        if (r.bad || v == NULL || n == 0) return false;
        if (!(n == 1 && v[0] == '0')) *held |= held_columns[i]; /* a count, in text: not "0" */
    }
    return r.left == 0;
}

bool session_read_row(struct varlist *settings, unsigned *held, const uint8_t *body, size_t len)
{
    struct proto_reader r;
    const uint8_t      *field[2];
    uint32_t            flen[2];
    char               *name, *value;
    bool                ok;

    if (len >= 2 && body[0] == 0 && body[1] == 5) return read_held(held, body, len);
    proto_reader_init(&r, body, len);
    if (proto_get_u16(&r) != 2) return false;
    for (int i = 0; i < 2; i++) {
        flen[i] = proto_get_u32(&r);
        if (flen[i] == UINT32_MAX) return false; /* NULL: neither column can be */
        field[i] = proto_get_bytes(&r, flen[i]);
    }
    if (r.bad || r.left != 0) return false;
    name = strndup((const char *)field[0], flen[0]);
    value = strndup((const char *)field[1], flen[1]);
    ok = name && value && varlist_set(settings, name, value);
    free(name);
    free(value);
    return ok;
}

bool session_settings_read(struct varlist *applied, struct varlist *read, const struct varlist *baseline,
                           const struct varlist *params, struct varlist **sets)
{
    /* A setting at connect_query's value is the server's baseline, not anyone's own. */
    for (size_t i = read->count; i-- > 0;) {
        const char *base = varlist_get(baseline, read->vars[i].name);

        if (base != NULL && strcmp(base, read->vars[i].value) == 0) varlist_del(read, read->vars[i].name);
    }
    varlist_clear(applied);
    if (!varlist_copy(applied, read)) return false;
    if (params == NULL) return true;
    /* The client's own settings: those its startup parameters do not already say. */
    if (*sets) varlist_clear(*sets);
    for (size_t i = 0; i < read->count; i++) {
        const struct var *v = &read->vars[i];
        const char       *start = varlist_get(params, v->name);

        if (start && strcmp(start, v->value) == 0) continue;
        if (*sets == NULL && (*sets = calloc(1, sizeof(**sets))) == NULL) return false;
        if (!varlist_set(*sets, v->name, v->value)) return false;
    }
    if (*sets && (*sets)->count == 0) {
        free(*sets);
        *sets = NULL;
    }
    varlist_clear(read);
    return true;
}

/* ---- startup parameters ---- */

/*
 * Where settings are not read back (session_state = off, session mode), a
 * startup parameter the client changed, as the server reports it, goes
 * with the client to its next server, as in PgBouncer. Its startup value
 * stays what RESET brings back.
 */
bool session_follow_reported(const struct varlist *params, struct varlist **sets, const char *name, const char *value)
{
    const char *start = varlist_get(params, name);

    if (start == NULL) return true;
    if (strcmp(start, value) == 0) {
        if (*sets != NULL) varlist_del(*sets, name);
        return true;
    }
    if (*sets == NULL && (*sets = calloc(1, sizeof(**sets))) == NULL) return false;
    return varlist_set(*sets, name, value);
}

/*
 * PostgreSQL's RESET goes back to the startup packet's value, the server's
 * goes back to its own: each startup parameter with no session-level value
 * (a custom one: empty) is set to its startup value again.
 */
bool session_restore_sql(const struct varlist *params, char **out)
{
    static const char head[] = "SELECT pg_catalog.set_config(p.n, p.v, false) FROM (VALUES ";
    static const char tail[] = ") AS p(n, v) LEFT JOIN pg_catalog.pg_settings s"
                               " ON pg_catalog.lower(s.name) = pg_catalog.lower(p.n)"
                               " WHERE CASE WHEN s.name IS NULL"
                               " THEN coalesce(pg_catalog.current_setting(p.n, true), '') = ''"
                               " ELSE s.source <> 'session' END";
    char             *sql = strdup(head), *t;
    size_t            len = sizeof(head) - 1;
    bool              any = false;

    *out = NULL;
    for (size_t i = 0; sql != NULL && i < params->count; i++) {
        const struct var *v = &params->vars[i];

        if (!proto_valid_param_name(v->name)) continue;
        if (!proto_append_pair(&sql, &len, sizeof(head) - 1, v->name, v->value)) {
            free(sql);
            sql = NULL;
        }
        any = true;
    }
    if (sql != NULL && !any) {
        free(sql);
        return true;
    }
    if (sql == NULL || (t = realloc(sql, len + sizeof(tail))) == NULL) {
        free(sql);
        return false;
    }
    memcpy(t + len, tail, sizeof(tail));
    *out = t;
    return true;
}

const char *session_held_names(unsigned held, char *buf, size_t n)
{
    static const struct {
        unsigned    bit;
        const char *name;
    } names[] = {{HELD_LISTEN, "listen"}, {HELD_LOCK, "advisory_lock"}, {HELD_TEMP, "temp_table"},
                 {HELD_CURSOR, "cursor"}, {HELD_PREPARE, "prepare"},    {HELD_LOAD, "load"},
                 {HELD_SET, "set"}};
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((held & names[i].bit) && used < n)
            used += (size_t)snprintf(buf + used, n - used, "%s%s", used ? "," : "", names[i].name);
    return buf;
}
