/*
 * scan.c - a lexer for the statements that change session state.
 *
 *   sql text -> next_token() -> tokens of one statement -> on_token():
 *                                 function calls, INTO TEMP, WITH HOLD
 *                               -> at ';' or the end: classify() by the
 *                                  first tokens (SET, RESET, LISTEN, ...)
 *
 * Tokens are identifiers (unquoted ones lower-cased, as PostgreSQL folds
 * them), quoted identifiers, string constants (decoded where that is
 * cheap: '', E'' backslashes, $tag$), and single punctuation characters.
 * Only the first few tokens of a statement are kept, so a huge INSERT
 * costs one pass and no memory. Errors in the scan make pgbun ask the
 * server for more, never less: an unknown set_config name means "any
 * setting".
 */
#include "scan.h"

#include <stdint.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <string.h>
#include <strings.h>

enum tok_kind { T_END, T_IDENT, T_QIDENT, T_STRING, T_PUNCT, T_OTHER };

/* How the text of a quoted token decodes. */
enum quoting {
    Q_DOUBLED, /* '...' or "...": a doubled quote stands for one */
    Q_ESCAPE,  /* E'...' (or '...' with standard_conforming_strings off): backslashes too */
    Q_RAW,     /* $tag$...$tag$: as written */
    Q_OPAQUE,  /* U&'...', U&"...": not decoded */
};

/* A token points into the text: nothing is copied while scanning. */
struct token {
    enum tok_kind kind;
    enum quoting  quoting; /* T_STRING, T_QIDENT */
    char          punct;   /* T_PUNCT: the character */
    const char   *p;       /* the identifier, or what is between the quotes */
    size_t        n;
};

struct lexer {
    const char *p, *end;
    bool        std_strings;
};

#define KEEP 8 /* first tokens of a statement kept for classify() */

/* The leading words on_token() looks further for. */
enum lead { L_OTHER, L_CREATE, L_SELECT, L_DECLARE };

struct stmt {
    struct token first[KEEP];
    enum lead    lead;        /* what first[0] is, once seen */
    int          n;           /* tokens seen, capped at KEEP + 1 */
    struct token prev;        /* the token before the current one */
    bool         declare_for; /* DECLARE: FOR seen, WITH HOLD no longer possible */
    int          cfg_arg;     /* in set_config( ... ): argument index, or -1 */
    int          cfg_depth;   /* parenthesis depth inside set_config( */
    int          cfg_ntok;    /* tokens of the current argument */
    bool         cfg_local;   /* third argument is true */
    bool         cfg_plain;   /* third argument is one literal */
    bool         cfg_named;   /* first argument was one string literal: cfg_name */
    struct token cfg_name;
};

/* Character classes, one table lookup per byte of the text. */
enum { C_SPACE = 1, C_START = 2, C_IDENT = 4 };

static const unsigned char char_class[256] = {
    [' '] = C_SPACE,
    ['\t'] = C_SPACE,
    ['\n'] = C_SPACE,
    ['\r'] = C_SPACE,
    ['\f'] = C_SPACE,
    ['\v'] = C_SPACE,
    ['a' ... 'z'] = C_START | C_IDENT,
    ['A' ... 'Z'] = C_START | C_IDENT,
    ['_'] = C_START | C_IDENT,
    [0x80 ... 0xff] = C_START | C_IDENT,
    ['0' ... '9'] = C_IDENT,
    ['$'] = C_IDENT,
};

static bool is_space(unsigned char c)
{
    return char_class[c] & C_SPACE;
}

static bool ident_start(unsigned char c)
{
    return char_class[c] & C_START;
}

static bool ident_char(unsigned char c)
{
    return char_class[c] & C_IDENT;
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Skips blanks and comments; false at the end of the text. */
static bool skip_blank(struct lexer *lx)
{
    while (lx->p < lx->end) {
        char c = *lx->p;

        if (is_space((unsigned char)c)) {
            lx->p++;
        } else if (c != '-' && c != '/') {
            return true;
        } else if (lx->end - lx->p >= 2 && c == '-' && lx->p[1] == '-') {
            while (lx->p < lx->end && *lx->p != '\n')
                lx->p++;
        } else if (lx->end - lx->p >= 2 && c == '/' && lx->p[1] == '*') {
            int depth = 1;

            lx->p += 2;
            while (lx->p < lx->end && depth > 0) {
                if (lx->end - lx->p >= 2 && lx->p[0] == '/' && lx->p[1] == '*') {
                    depth++;
                    lx->p += 2;
                } else if (lx->end - lx->p >= 2 && lx->p[0] == '*' && lx->p[1] == '/') {
                    depth--;
                    lx->p += 2;
                } else {
                    lx->p++;
                }
            }
        } else {
            return true;
        }
    }
    return false;
}

/* From an opening quote q (' or "): up to the closing one, doubled quotes (and backslash escapes) inside. */
static void read_quoted(struct lexer *lx, struct token *t, enum tok_kind kind, enum quoting quoting)
{
    char q = *lx->p++;

    t->kind = kind;
    t->quoting = quoting;
    t->p = lx->p;
    while (lx->p < lx->end) {
        char c = *lx->p;

        if (c == '\\' && quoting == Q_ESCAPE && lx->end - lx->p >= 2) {
            lx->p += 2;
        } else if (c == q && lx->end - lx->p >= 2 && lx->p[1] == q) {
            lx->p += 2;
        } else if (c == q) {
            t->n = (size_t)(lx->p - t->p);
            lx->p++;
            return;
        } else {
            lx->p++;
        }
    }
    t->n = (size_t)(lx->p - t->p); /* unterminated: the rest of the text */
}

/* At '$': a dollar-quoted string ($tag$...$tag$) read whole, or false. */
static bool read_dollar(struct lexer *lx, struct token *t)
{
    const char *q = lx->p + 1;
    size_t      taglen;

    if (q < lx->end && !ident_start((unsigned char)*q) && *q != '$') return false;
    while (q < lx->end && *q != '$') {
        if (!ident_char((unsigned char)*q)) return false;
        q++;
    }
    if (q >= lx->end) return false;
    taglen = (size_t)(q - lx->p) + 1; /* "$tag$" */
    t->kind = T_STRING;
    t->quoting = Q_RAW;
    t->p = q + 1;
    for (q = t->p; q < lx->end; q++) {
        if (*q == '$' && (size_t)(lx->end - q) >= taglen && memcmp(q, lx->p, taglen) == 0) {
            t->n = (size_t)(q - t->p);
            lx->p = q + taglen;
            return true;
        }
    }
    t->n = (size_t)(lx->end - t->p); /* unterminated: the rest is the string */
    lx->p = lx->end;
    return true;
}

static void next_token(struct lexer *lx, struct token *t)
{
    unsigned char c;

    t->punct = 0;
    t->n = 0;
    if (!skip_blank(lx)) {
        t->kind = T_END;
        t->p = lx->p;
        return;
    }
    t->p = lx->p;
    c = (unsigned char)*lx->p;
    if (ident_start(c)) {
        /* Prefixed strings and identifiers: E'..', B'..', X'..', N'..', U&'..', U&"..". */
        if (lx->end - lx->p >= 2 && lx->p[1] == '\'') {
            if (c == 'e' || c == 'E') {
                lx->p++;
                read_quoted(lx, t, T_STRING, Q_ESCAPE);
                return;
            }
            if (c == 'b' || c == 'B' || c == 'x' || c == 'X' || c == 'n' || c == 'N') {
                lx->p++;
                read_quoted(lx, t, T_STRING, lx->std_strings ? Q_DOUBLED : Q_ESCAPE);
                return;
            }
        }
        if ((c == 'u' || c == 'U') && lx->end - lx->p >= 3 && lx->p[1] == '&' &&
            (lx->p[2] == '\'' || lx->p[2] == '"')) {
            lx->p += 2;
            read_quoted(lx, t, *lx->p == '"' ? T_QIDENT : T_STRING, Q_OPAQUE);
            return;
        }
        t->kind = T_IDENT;
        while (++lx->p < lx->end && ident_char((unsigned char)*lx->p))
            ;
        t->n = (size_t)(lx->p - t->p);
        return;
    }
    if (c == '\'') {
        read_quoted(lx, t, T_STRING, lx->std_strings ? Q_DOUBLED : Q_ESCAPE);
        return;
    }
    if (c == '"') {
        read_quoted(lx, t, T_QIDENT, Q_DOUBLED);
        return;
    }
    if (c == '$' && read_dollar(lx, t)) return;
    if ((c >= '0' && c <= '9') || c == '$') { /* numbers and $1 parameters */
        t->kind = T_OTHER;
        lx->p++;
        while (lx->p < lx->end && (ident_char((unsigned char)*lx->p) || *lx->p == '.'))
            lx->p++;
        return;
    }
    t->kind = T_PUNCT;
    t->punct = (char)c;
    lx->p++;
}

/*
 * The text of an identifier or string token, lower-cased (GUC names and
 * booleans compare so), NUL-terminated in out. False if it does not fit
 * or is not decoded here (U&, a backslash escape other than \' or \\).
 */
static bool token_text(const struct token *t, char *out, size_t outlen, bool fold_quoted)
{
    bool   quoted = t->kind != T_IDENT;
    char   q = t->kind == T_QIDENT ? '"' : '\'';
    size_t n = 0;

    if (t->kind != T_IDENT && t->kind != T_QIDENT && t->kind != T_STRING) return false;
    if (quoted && t->quoting == Q_OPAQUE) return false;
    for (size_t i = 0; i < t->n; i++) {
        char c = t->p[i];

        if (quoted && t->quoting == Q_ESCAPE && c == '\\' && i + 1 < t->n) {
            c = t->p[++i];
            if (c != '\'' && c != '\\') return false;
        } else if (quoted && t->quoting != Q_RAW && c == q && i + 1 < t->n && t->p[i + 1] == q) {
            i++;
        }
        if (n + 1 >= outlen) return false;
        out[n++] = quoted && !fold_quoted ? c : lower(c);
    }
    out[n] = '\0';
    return true;
}

/* Identifier t is keyword w (lower case, n bytes), as PostgreSQL compares keywords. */
static inline bool word_is(const struct token *t, const char *w, size_t n)
{
    return t->kind == T_IDENT && t->n == n && lower(t->p[0]) == w[0] && strncasecmp(t->p + 1, w + 1, n - 1) == 0;
}

#define is_word(t, w) word_is((t), w, sizeof(w) - 1) /* w: a string literal */

static bool is_punct(const struct token *t, char c)
{
    return t->kind == T_PUNCT && t->punct == c;
}

static void add_name(struct scan_effects *fx, const char *name)
{
    fx->flags |= SCAN_SETTING;
    for (int i = 0; i < fx->nnames; i++)
        if (strcmp(fx->names[i], name) == 0) return;
    if (fx->nnames == SCAN_MAX_NAMES || strlen(name) >= SCAN_NAME_MAX) {
        fx->flags |= SCAN_SETTING_ANY;
        return;
    }
    strcpy(fx->names[fx->nnames++], name);
}

#define NAME_PART_MAX 63 /* PostgreSQL truncates longer identifiers (NAMEDATALEN - 1) */

/*
 * A dotted name (a, a.b, "A".b) from first[from], lower-cased into out as
 * PostgreSQL's GUC lookup compares it. False if there is none or a part
 * is longer than an identifier may be.
 */
static bool dotted_name(const struct stmt *st, int from, char *out, size_t outlen)
{
    size_t n = 0;

    for (int i = from;; i += 2) {
        const struct token *t = &st->first[i];

        if (i >= st->n || i >= KEEP || (t->kind != T_IDENT && t->kind != T_QIDENT)) return false;
        if (!token_text(t, out + n, outlen - n, true) || strlen(out + n) > NAME_PART_MAX) return false;
        n += strlen(out + n);
        if (!(i + 1 < st->n && i + 1 < KEEP && is_punct(&st->first[i + 1], '.'))) return true;
        if (n + 2 > outlen) return false;
        out[n++] = '.';
        out[n] = '\0';
    }
}

static void set_name(const struct stmt *st, int from, struct scan_effects *fx)
{
    char name[SCAN_NAME_MAX];

    if (dotted_name(st, from, name, sizeof(name)))
        add_name(fx, name);
    else
        fx->flags |= SCAN_SETTING_ANY;
}

/* SET ... (first[0] is SET) and RESET ... (reset): the setting it names. */
static void classify_set(const struct stmt *st, bool reset, struct scan_effects *fx)
{
    const struct token *a = &st->first[1], *b = &st->first[2];
    int                 at = 1;

    if (st->n < 2) return;
    if (!reset) {
        if (is_word(a, "local") || is_word(a, "transaction") || is_word(a, "constraints")) return;
        if (is_word(a, "session")) {
            if (st->n < 3) return;
            if (is_word(b, "characteristics")) { /* SET SESSION CHARACTERISTICS AS TRANSACTION ... */
                add_name(fx, "default_transaction_isolation");
                add_name(fx, "default_transaction_read_only");
                add_name(fx, "default_transaction_deferrable");
                return;
            }
            if (is_word(b, "authorization")) {
                add_name(fx, "session_authorization");
                return;
            }
            at = 2;
            a = b;
            b = &st->first[3];
        }
    } else if (is_word(a, "all")) {
        fx->flags |= SCAN_RESET_ALL;
        return;
    } else if (is_word(a, "session") && st->n > 2 && is_word(b, "authorization")) {
        add_name(fx, "session_authorization");
        return;
    }
    if (is_word(a, "time") && st->n > at + 1 && is_word(b, "zone"))
        add_name(fx, "timezone");
    else if (is_word(a, "schema"))
        add_name(fx, "search_path");
    else if (is_word(a, "names"))
        add_name(fx, "client_encoding");
    else if (is_word(a, "xml") && st->n > at + 1 && is_word(b, "option"))
        add_name(fx, "xmloption");
    else
        set_name(st, at, fx); /* role, search_path, myext.tenant, ... */
}

/* At the end of a statement: what its leading words say. */
static void classify(const struct stmt *st, struct scan_effects *fx)
{
    const struct token *w = &st->first[0];

    if (st->n == 0 || w->kind != T_IDENT) return;
    if (is_word(w, "set"))
        classify_set(st, false, fx);
    else if (is_word(w, "reset"))
        classify_set(st, true, fx);
    else if (is_word(w, "discard") && st->n > 1) {
        const struct token *a = &st->first[1];

        if (is_word(a, "all"))
            fx->flags |= SCAN_DISCARD_ALL | SCAN_RESET_ALL;
        else if (is_word(a, "temp") || is_word(a, "temporary"))
            fx->flags |= SCAN_DROP;
    } else if (is_word(w, "listen"))
        fx->flags |= SCAN_LISTEN;
    else if (is_word(w, "unlisten"))
        fx->flags |= SCAN_UNLISTEN;
    else if (is_word(w, "close"))
        fx->flags |= SCAN_CLOSE;
    else if (is_word(w, "drop"))
        fx->flags |= SCAN_DROP;
    else if (is_word(w, "prepare") && !(st->n > 1 && is_word(&st->first[1], "transaction")))
        fx->flags |= SCAN_PREPARE;
    else if (is_word(w, "deallocate")) {
        int a = st->n > 1 && is_word(&st->first[1], "prepare") ? 2 : 1; /* DEALLOCATE [PREPARE] ALL */

        fx->flags |= SCAN_DEALLOCATE;
        if (a < st->n && a < KEEP && is_word(&st->first[a], "all"))
            fx->flags |= SCAN_DEALLOCATE_ALL;
        else if (a + 1 == st->n && st->first[a].kind != T_STRING && /* the name, and nothing after it */
                 !token_text(&st->first[a], fx->deallocated, sizeof(fx->deallocated), false))
            fx->deallocated[0] = '\0';
    } else if (is_word(w, "load"))
        fx->flags |= SCAN_LOAD;
}

static const char *const lock_functions[] = {"pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock",
                                             "pg_try_advisory_lock_shared"};
static const char *const unlock_functions[] = {"pg_advisory_unlock", "pg_advisory_unlock_shared",
                                               "pg_advisory_unlock_all"};

/* A function name: an identifier, or a quoted one spelled exactly so ("set_config"). */
static bool names_function(const struct token *t, const char *f)
{
    size_t n = strlen(f);

    if (t->kind == T_QIDENT) return t->quoting == Q_DOUBLED && t->n == n && memcmp(t->p, f, n) == 0;
    return word_is(t, f, n);
}

static bool in_list(const struct token *t, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (names_function(t, list[i])) return true;
    return false;
}

/* A boolean literal that reads as true: true, 't', 'on', 'yes', ... */
static bool is_true(const struct token *t)
{
    static const char *const yes[] = {"t", "true", "on", "y", "yes", "1"};
    char                     text[8];

    if (t->kind == T_IDENT) return is_word(t, "true");
    if (t->kind != T_STRING || !token_text(t, text, sizeof(text), true)) return false;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (strcmp(text, yes[i]) == 0) return true;
    return false;
}

/* Inside set_config( ... ): one more token t of its arguments. */
static void on_config_arg(struct stmt *st, const struct token *t, struct scan_effects *fx)
{
    char name[SCAN_NAME_MAX];

    if (is_punct(t, '(')) st->cfg_depth++;
    if (is_punct(t, ')') && st->cfg_depth-- == 0) {
        /* The call ends: set_config(name, value, is_local). */
        if (!st->cfg_named || !token_text(&st->cfg_name, name, sizeof(name), true))
            fx->flags |= SCAN_SETTING_ANY;
        else if (!(st->cfg_arg == 2 && st->cfg_plain && st->cfg_local))
            add_name(fx, name); /* session level, or not known to be local */
        st->cfg_arg = -1;
        return;
    }
    if (st->cfg_depth == 0 && is_punct(t, ',')) {
        st->cfg_arg++;
        st->cfg_ntok = 0;
        return;
    }
    st->cfg_ntok++;
    if (st->cfg_arg == 0) {
        st->cfg_named = st->cfg_ntok == 1 && t->kind == T_STRING;
        st->cfg_name = *t;
    } else if (st->cfg_arg == 2) {
        st->cfg_plain = st->cfg_ntok == 1;
        st->cfg_local = is_true(t);
    }
}

/* '(' after an identifier: a call of one of the functions that matter? */
static void on_call(struct stmt *st, struct scan_effects *fx)
{
    const struct token *f = &st->prev;

    if (f->n < sizeof("set_config") - 1) return; /* the shortest name below */
    if (names_function(f, "set_config")) {
        st->cfg_arg = 0;
        st->cfg_depth = st->cfg_ntok = 0;
        st->cfg_named = st->cfg_plain = st->cfg_local = false;
    } else if (in_list(f, lock_functions, sizeof(lock_functions) / sizeof(lock_functions[0]))) {
        fx->flags |= SCAN_LOCK;
    } else if (in_list(f, unlock_functions, sizeof(unlock_functions) / sizeof(unlock_functions[0]))) {
        fx->flags |= SCAN_UNLOCK;
    }
}

static bool is_temp(const struct token *t)
{
    return is_word(t, "temp") || is_word(t, "temporary");
}

/* Every token of a statement, in order: most are looked at no further than their kind. */
static void on_token(struct stmt *st, const struct token *t, struct scan_effects *fx)
{
    if (st->cfg_arg >= 0) {
        on_config_arg(st, t, fx);
    } else if (t->kind == T_PUNCT) {
        if (t->punct == '(' && (st->prev.kind == T_IDENT || st->prev.kind == T_QIDENT))
            on_call(st, fx);
        else if (t->punct == '.' && st->lead == L_CREATE && is_word(&st->prev, "pg_temp"))
            fx->flags |= SCAN_TEMP; /* CREATE ... pg_temp.t */
    } else if (t->kind == T_IDENT) {
        switch (st->lead) {
        case L_CREATE: /* CREATE [OR REPLACE] [GLOBAL|LOCAL] TEMP ... */
            if (st->n <= 3 && is_temp(t)) fx->flags |= SCAN_TEMP;
            break;
        case L_SELECT: /* SELECT ... INTO TEMP t */
            if (is_temp(t) && is_word(&st->prev, "into")) fx->flags |= SCAN_TEMP;
            break;
        case L_DECLARE: /* DECLARE name ... WITH HOLD ... FOR query */
            if (st->declare_for) break;
            if (is_word(t, "for"))
                st->declare_for = true;
            else if (is_word(t, "hold") && is_word(&st->prev, "with"))
                fx->flags |= SCAN_HOLD;
            break;
        case L_OTHER: break;
        }
    }
    if (st->n == 0) {
        st->lead = is_word(t, "create")                         ? L_CREATE
                   : is_word(t, "select") || is_word(t, "with") ? L_SELECT
                   : is_word(t, "declare")                      ? L_DECLARE
                                                                : L_OTHER;
    }
    if (st->n < KEEP) st->first[st->n] = *t;
    if (st->n <= KEEP) st->n++;
    st->prev = *t;
}

static void stmt_reset(struct stmt *st)
{
    st->n = 0;
    st->lead = L_OTHER;
    st->prev.kind = T_END;
    st->declare_for = false;
    st->cfg_arg = -1;
}

void scan_init(struct scan_effects *fx)
{
    fx->flags = 0;
    fx->nnames = 0;
    fx->statements = 0;
    fx->deallocated[0] = '\0';
}

/* Whether word w (lower case) is spelled at p, in any case, before end. */
static bool word_at(const char *p, const char *end, const char *w)
{
    for (; *w; p++, w++)
        if (p == end || lower(*p) != *w) return false;
    return true;
}

/*
 * Whether one of the words without which no statement can have an effect
 * in want starts at p, a word's start: SET, RESET and set_config contain
 * "set" or "reset", pg_advisory_lock "advisory" (after "pg_"), TEMPORARY
 * and pg_temp "temp", UNLISTEN "unlisten", and so on.
 */
static bool cue_at(const char *p, const char *end, unsigned want)
{
    switch (lower(*p)) {
    case 's': return (want & (SCAN_SETTING | SCAN_RESET_ALL | SCAN_SETTING_ANY)) && word_at(p, end, "set");
    case 'r': return (want & (SCAN_SETTING | SCAN_RESET_ALL)) && word_at(p, end, "reset");
    case 'd':
        return ((want & (SCAN_DISCARD_ALL | SCAN_RESET_ALL | SCAN_DROP)) && word_at(p, end, "discard")) ||
               ((want & (SCAN_DEALLOCATE | SCAN_DEALLOCATE_ALL)) && word_at(p, end, "dealloc")) ||
               ((want & SCAN_DROP) && word_at(p, end, "drop"));
    case 'l':
        return ((want & SCAN_LISTEN) && word_at(p, end, "listen")) || ((want & SCAN_LOAD) && word_at(p, end, "load"));
    case 'u': return (want & SCAN_UNLISTEN) && word_at(p, end, "unlisten");
    case 'a': return (want & (SCAN_LOCK | SCAN_UNLOCK)) && word_at(p, end, "advisory");
    case 't': return (want & SCAN_TEMP) && word_at(p, end, "temp");
    case 'h': return (want & SCAN_HOLD) && word_at(p, end, "hold");
    case 'c': return (want & SCAN_CLOSE) && word_at(p, end, "close");
    case 'p': return (want & SCAN_PREPARE) && word_at(p, end, "prepare");
    default: return false;
    }
}

#define CUE_LETTERS "sdlathcpru" /* the first letters cue_at knows */

/* An ASCII letter or digit: inside a word, where no cue starts. */
static bool is_alnum(char c)
{
    return (lower(c) >= 'a' && lower(c) <= 'z') || (c >= '0' && c <= '9');
}

/*
 * A look before the scan: false when no statement of the text can have an
 * effect in want, because the words such statements contain start no word
 * of it (after a space, a punctuation mark or "pg_"), strings and comments
 * included. So never a wrong "no". Sixteen bytes at a time are compared
 * with the cues' first letters and their predecessors with letters and
 * digits (SSE2); only at a word's start with such a letter is a word compared.
 */
static bool may_matter(const char *sql, size_t len, unsigned want)
{
    const char *end = sql + len, *p = sql;

    if (len == 0) return false;
    if (cue_at(p, end, want)) return true;
    p++;
#ifdef __SSE2__
    {
        const __m128i case_bit = _mm_set1_epi8(0x20); /* 'S' | 0x20 == 's'; no other byte becomes a letter of ours */
        const __m128i a_at_min = _mm_set1_epi8((char)(128 - 'a')), zero_at_min = _mm_set1_epi8((char)(128 - '0'));
        const __m128i letters_below = _mm_set1_epi8((char)(-128 + 26)), digits_below = _mm_set1_epi8((char)(-128 + 10));
        __m128i       letters[sizeof(CUE_LETTERS) - 1];

        for (size_t k = 0; k < sizeof(letters) / sizeof(letters[0]); k++)
            letters[k] = _mm_set1_epi8(CUE_LETTERS[k]);
        for (; end - p >= 16; p += 16) {
            __m128i  v = _mm_or_si128(_mm_loadu_si128((const __m128i *)(const void *)p), case_bit);
            __m128i  b = _mm_loadu_si128((const __m128i *)(const void *)(p - 1)); /* each byte's predecessor */
            __m128i  hit = _mm_cmpeq_epi8(v, letters[0]), inside;
            unsigned m;

            for (size_t k = 1; k < sizeof(letters) / sizeof(letters[0]); k++)
                hit = _mm_or_si128(hit, _mm_cmpeq_epi8(v, letters[k]));
            /* Unsigned "x - min < n" as a signed compare after moving min to -128. */
            inside = _mm_or_si128(_mm_cmplt_epi8(_mm_add_epi8(_mm_or_si128(b, case_bit), a_at_min), letters_below),
                                  _mm_cmplt_epi8(_mm_add_epi8(b, zero_at_min), digits_below));
            for (m = (unsigned)_mm_movemask_epi8(_mm_andnot_si128(inside, hit)); m != 0; m &= m - 1)
                if (cue_at(p + __builtin_ctz(m), end, want)) return true;
        }
    }
#endif
    for (; p < end; p++)
        if (!is_alnum(p[-1]) && cue_at(p, end, want)) return true;
    return false;
}

void scan_sql(const char *sql, size_t len, bool std_strings, unsigned want, struct scan_effects *fx)
{
    struct lexer lx = {sql, sql + len, std_strings};
    struct stmt  st;
    struct token t;

    if (!may_matter(sql, len, want)) return;
    stmt_reset(&st);
    for (;;) {
        next_token(&lx, &t);
        if (t.kind == T_END || is_punct(&t, ';')) {
            if (st.cfg_arg >= 0) fx->flags |= SCAN_SETTING_ANY; /* set_config( cut short */
            if (st.n > 0) fx->statements++;
            classify(&st, fx);
            if (t.kind == T_END) return;
            stmt_reset(&st);
            continue;
        }
        on_token(&st, &t, fx);
    }
}
