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

/* What a scan is asked, and how deep in DO bodies it is. */
struct scan_ctx {
    bool     std_strings;
    unsigned want;
    int      depth;
};

#define KEEP 8 /* first tokens of a statement kept for classify() */

/* The leading words on_token() looks further for. */
enum lead { L_OTHER, L_CREATE, L_SELECT, L_DECLARE };

struct stmt {
    struct token first[KEEP];
    enum lead    kind;        /* what first[0] is, once seen */
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
    struct token lead;       /* the token before the current (dotted) name */
    struct token schema;     /* the part before the current name's last, if it has one */
    struct token last_name;  /* the current name's last part so far */
    bool         qualified;  /* the current name has a schema */
    bool         prev2_name; /* the token before st->prev is an identifier */
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

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* n hex digits at p (n <= 6), or -1. */
static long hex_digits(const char *p, const char *end, int n)
{
    long v = 0;

    if (end - p < n) return -1;
    for (int i = 0; i < n; i++) {
        int d = hex_value(p[i]);

        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Code point cp as UTF-8 at out[*n]; false if it does not fit in outlen - 1 bytes or is not a character. */
static bool put_utf8(long cp, char *out, size_t outlen, size_t *n)
{
    unsigned char b[4];
    size_t        k;

    if (cp <= 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        k = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xc0 | cp >> 6);
        b[1] = (unsigned char)(0x80 | (cp & 0x3f));
        k = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xe0 | cp >> 12);
        b[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp & 0x3f));
        k = 3;
    } else {
        b[0] = (unsigned char)(0xf0 | cp >> 18);
        b[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        b[3] = (unsigned char)(0x80 | (cp & 0x3f));
        k = 4;
    }
    if (*n + k >= outlen) return false;
    memcpy(out + *n, b, k);
    *n += k;
    return true;
}

/*
 * The text between the quotes of U&"..." or U&'...' with PostgreSQL's
 * default escape character: doubled quotes stand for one, \\ for a
 * backslash, \XXXX and \+XXXXXX for a character (a surrogate pair of
 * two \XXXX as well). False on anything else, or when it does not fit.
 */
static bool unicode_text(const struct token *t, char q, char *out, size_t outlen, size_t *n)
{
    const char *p = t->p, *end = t->p + t->n;

    while (p < end) {
        long cp;

        if (*p == q && end - p >= 2 && p[1] == q) {
            p++; /* the doubled quote: one, below */
        } else if (*p == '\\' && end - p >= 2 && p[1] == '\\') {
            p++;
        } else if (*p == '\\') {
            bool plus = end - p >= 2 && p[1] == '+';

            if ((cp = hex_digits(p + 1 + plus, end, plus ? 6 : 4)) < 0) return false;
            p += plus ? 8 : 5;
            if (cp >= 0xd800 && cp <= 0xdbff) { /* a high surrogate: its low one follows */
                long low = end - p >= 5 && *p == '\\' ? hex_digits(p + 1, end, 4) : -1;

                if (low < 0xdc00 || low > 0xdfff) return false;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                p += 5;
            }
            if (!put_utf8(cp, out, outlen, n)) return false;
            continue;
        }
        if (*n + 1 >= outlen) return false;
        out[(*n)++] = *p++;
    }
    return true;
}

/*
 * The text of an identifier or string token, lower-cased (GUC names and
 * booleans compare so), NUL-terminated in out. False if it does not fit
 * or is not decoded here (a backslash escape other than \' or \\, a U&
 * escape that is not one).
 */
static bool token_text(const struct token *t, char *out, size_t outlen, bool fold_quoted)
{
    bool   quoted = t->kind != T_IDENT;
    char   q = t->kind == T_QIDENT ? '"' : '\'';
    size_t n = 0;

    if (t->kind != T_IDENT && t->kind != T_QIDENT && t->kind != T_STRING) return false;
    if (quoted && t->quoting == Q_OPAQUE) {
        if (!unicode_text(t, q, out, outlen, &n)) return false;
        for (size_t i = 0; fold_quoted && i < n; i++)
            out[i] = lower(out[i]);
        out[n] = '\0';
        return true;
    }
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
        /* U&"..." UESCAPE 'c': another escape character, not decoded here. */
        if (t->kind == T_QIDENT && t->quoting == Q_OPAQUE &&
            (i + 1 >= st->n || i + 1 >= KEEP || is_word(&st->first[i + 1], "uescape")))
            return false;
        n += strlen(out + n);
        if (!(i + 1 < st->n && i + 1 < KEEP && is_punct(&st->first[i + 1], '.'))) return true;
        if (n + 2 > outlen) return false;
        out[n++] = '.';
        out[n] = '\0';
    }
}

/* The statement's last token is DEFAULT (SET name TO DEFAULT), or it has more than first[] keeps. */
static bool ends_in_default(const struct stmt *st)
{
    return st->n > KEEP || is_word(&st->first[st->n - 1], "default");
}

static void set_name(const struct stmt *st, int from, bool reset, struct scan_effects *fx)
{
    char name[SCAN_NAME_MAX];

    if (dotted_name(st, from, name, sizeof(name)))
        add_name(fx, name);
    else
        fx->flags |= SCAN_SETTING_ANY;
    if (reset || ends_in_default(st)) fx->flags |= SCAN_RESET;
}

/* A setting of its own name: SET TIME ZONE ..., SET NAMES ...; LOCAL and DEFAULT bring back its start value. */
static void set_special(const struct stmt *st, const char *name, bool reset, struct scan_effects *fx)
{
    add_name(fx, name);
    if (reset || ends_in_default(st) || is_word(&st->first[st->n - 1], "local")) fx->flags |= SCAN_RESET;
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
        set_special(st, "timezone", reset, fx);
    else if (is_word(a, "schema"))
        set_special(st, "search_path", reset, fx);
    else if (is_word(a, "names"))
        set_special(st, "client_encoding", reset, fx);
    else if (is_word(a, "xml") && st->n > at + 1 && is_word(b, "option"))
        set_special(st, "xmloption", reset, fx);
    else
        set_name(st, at, reset, fx); /* role, search_path, myext.tenant, ... */
}

static void scan_text(const char *sql, size_t len, bool std_strings, unsigned want, int depth, struct scan_effects *fx);

/*
 * DO: its code may do anything (SCAN_CALL). A body in dollar quotes, as
 * drivers and people write them, is scanned too, once, for the settings
 * it names, so that its client keeps them: PERFORM set_config('a.b', ...).
 */
static void classify_do(const struct stmt *st, const struct scan_ctx *ctx, struct scan_effects *fx)
{
    fx->flags |= SCAN_CALL;
    if (ctx->depth > 0) return;
    for (int i = 1; i < st->n && i < KEEP; i++) {
        const struct token *t = &st->first[i];

        if (t->kind == T_STRING && t->quoting == Q_RAW) {
            scan_text(t->p, t->n, ctx->std_strings, ctx->want, 1, fx);
            return;
        }
    }
}

/* At the end of a statement: what its leading words say. */
static void classify(const struct stmt *st, const struct scan_ctx *ctx, struct scan_effects *fx)
{
    const struct token *w = &st->first[0];

    if (st->n == 0 || w->kind != T_IDENT) return;
    if (is_word(w, "do"))
        classify_do(st, ctx, fx);
    else if (is_word(w, "call"))
        fx->flags |= SCAN_CALL; /* a procedure: may do anything */
    else if (is_word(w, "set"))
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
        else if (a + 1 == st->n && st->first[a].kind != T_STRING && ctx->depth == 0 && /* the name, alone */
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

/*
 * Words before a '(' that call nothing that could change a session: SQL
 * keywords and type names that take parentheses, and built-in functions
 * in common use (none of which runs SQL text or changes a setting).
 * Sorted, for bsearch. A function missing here costs a read-back, never
 * a leak; a user's function (or a built-in's name in a schema of its own)
 * is a call that may do anything.
 */
static const char *const not_calls[] = {
    "abs",
    "acos",
    "age",
    "all",
    "and",
    "any",
    "array",
    "array_agg",
    "array_append",
    "array_cat",
    "array_dims",
    "array_fill",
    "array_length",
    "array_lower",
    "array_ndims",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_remove",
    "array_replace",
    "array_to_json",
    "array_to_string",
    "array_upper",
    "as",
    "asc",
    "ascii",
    "asin",
    "atan",
    "atan2",
    "avg",
    "bernoulli",
    "between",
    "bit",
    "bit_and",
    "bit_length",
    "bit_or",
    "bool_and",
    "bool_or",
    "both",
    "bpchar",
    "btrim",
    "by",
    "cardinality",
    "case",
    "cast",
    "cbrt",
    "ceil",
    "ceiling",
    "char",
    "char_length",
    "character",
    "character_length",
    "check",
    "chr",
    "clock_timestamp",
    "coalesce",
    "col_description",
    "collate",
    "concat",
    "concat_ws",
    "conflict",
    "convert_from",
    "convert_to",
    "corr",
    "cos",
    "cot",
    "count",
    "covar_pop",
    "covar_samp",
    "cube",
    "cume_dist",
    "current_database",
    "current_schema",
    "current_schemas",
    "current_setting",
    "currval",
    "date_bin",
    "date_part",
    "date_trunc",
    "dec",
    "decimal",
    "decode",
    "default",
    "degrees",
    "dense_rank",
    "desc",
    "distinct",
    "div",
    "do",
    "else",
    "encode",
    "end",
    "every",
    "except",
    "exists",
    "exp",
    "extract",
    "filter",
    "first_value",
    "float",
    "floor",
    "following",
    "for",
    "foreign",
    "format",
    "format_type",
    "from",
    "gen_random_uuid",
    "generate_series",
    "generate_subscripts",
    "greatest",
    "group",
    "grouping",
    "has_column_privilege",
    "has_database_privilege",
    "has_function_privilege",
    "has_schema_privilege",
    "has_sequence_privilege",
    "has_table_privilege",
    "having",
    "ilike",
    "in",
    "include",
    "initcap",
    "intersect",
    "interval",
    "is",
    "isfinite",
    "join",
    "json_agg",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_each",
    "json_each_text",
    "json_extract_path",
    "json_extract_path_text",
    "json_object",
    "json_object_agg",
    "json_object_keys",
    "json_populate_record",
    "json_populate_recordset",
    "json_strip_nulls",
    "json_to_record",
    "json_to_recordset",
    "json_typeof",
    "jsonb_agg",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_insert",
    "jsonb_object",
    "jsonb_object_agg",
    "jsonb_object_keys",
    "jsonb_path_exists",
    "jsonb_path_match",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "jsonb_populate_record",
    "jsonb_populate_recordset",
    "jsonb_pretty",
    "jsonb_set",
    "jsonb_strip_nulls",
    "jsonb_to_record",
    "jsonb_to_recordset",
    "jsonb_typeof",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "key",
    "lag",
    "last_value",
    "lastval",
    "lateral",
    "lead",
    "least",
    "left",
    "length",
    "like",
    "limit",
    "ln",
    "localtime",
    "localtimestamp",
    "log",
    "log10",
    "lower",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "max",
    "md5",
    "min",
    "mod",
    "mode",
    "national",
    "nchar",
    "nextval",
    "not",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "nulls",
    "num_nonnulls",
    "num_nulls",
    "numeric",
    "obj_description",
    "octet_length",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "over",
    "overlay",
    "partition",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_backend_pid",
    "pg_column_size",
    "pg_current_xact_id",
    "pg_database_size",
    "pg_get_constraintdef",
    "pg_get_expr",
    "pg_get_functiondef",
    "pg_get_indexdef",
    "pg_get_serial_sequence",
    "pg_get_userbyid",
    "pg_get_viewdef",
    "pg_indexes_size",
    "pg_is_in_recovery",
    "pg_notify",
    "pg_postmaster_start_time",
    "pg_relation_size",
    "pg_size_pretty",
    "pg_sleep",
    "pg_table_is_visible",
    "pg_table_size",
    "pg_total_relation_size",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "pg_typeof",
    "phraseto_tsquery",
    "pi",
    "plainto_tsquery",
    "position",
    "power",
    "preceding",
    "primary",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "radians",
    "random",
    "range",
    "rank",
    "recursive",
    "references",
    "regexp_count",
    "regexp_instr",
    "regexp_like",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_substr",
    "repeat",
    "repeatable",
    "replace",
    "returning",
    "reverse",
    "right",
    "rollup",
    "round",
    "row",
    "row_number",
    "row_to_json",
    "rows",
    "rpad",
    "rtrim",
    "select",
    "set",
    "sets",
    "setseed",
    "setval",
    "sign",
    "similar",
    "sin",
    "some",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "string_to_array",
    "string_to_table",
    "strpos",
    "substr",
    "substring",
    "sum",
    "system",
    "table",
    "tablesample",
    "tan",
    "then",
    "time",
    "timeofday",
    "timestamp",
    "timestamptz",
    "timetz",
    "to",
    "to_char",
    "to_date",
    "to_hex",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_regclass",
    "to_regproc",
    "to_regtype",
    "to_timestamp",
    "to_tsquery",
    "to_tsvector",
    "transaction_timestamp",
    "translate",
    "trim",
    "trunc",
    "ts_headline",
    "ts_rank",
    "ts_rank_cd",
    "txid_current",
    "union",
    "unique",
    "unnest",
    "upper",
    "using",
    "uuid_generate_v4",
    "values",
    "var_pop",
    "var_samp",
    "varbit",
    "varchar",
    "variance",
    "varying",
    "version",
    "websearch_to_tsquery",
    "when",
    "where",
    "width_bucket",
    "window",
    "with",
    "within",
    "xmlagg",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
};

/* Words before a name whose '(' opens a list of columns or types, not a call: INSERT INTO t (a, b). */
static const char *const list_leads[] = {
    "aggregate", "as",        "copy",       "exists", "function", "inherits", "into", "prepare",
    "procedure", "recursive", "references", "table",  "type",     "view",     "with",
};

/* Statements that begin with a list in parentheses: EXPLAIN (ANALYZE), VACUUM (VERBOSE) ... */
static const char *const list_words[] = {"analyze", "cluster", "explain", "reindex", "vacuum"};

static int compare_word(const void *key, const void *elem)
{
    return strcmp(key, *(const char *const *)elem);
}

/* Identifier t, lower-cased, is one of list's n sorted words. */
static bool word_in(const struct token *t, const char *const *list, size_t n)
{
    char w[NAME_PART_MAX + 1];

    if (t->kind != T_IDENT || t->n > NAME_PART_MAX) return false;
    for (size_t i = 0; i < t->n; i++)
        w[i] = lower(t->p[i]);
    w[t->n] = '\0';
    return bsearch(w, list, n, sizeof(*list), compare_word) != NULL;
}

#define WORD_IN(t, list) word_in((t), (list), sizeof(list) / sizeof((list)[0]))

/* The name before a '(' (st->prev, with st->lead and st->schema): not a call that may change the session. */
static bool harmless_call(const struct stmt *st)
{
    const struct token *f = &st->prev;

    if (WORD_IN(&st->lead, list_leads)) return true;
    if (st->qualified) return is_word(&st->schema, "pg_catalog") && WORD_IN(f, not_calls);
    return WORD_IN(f, not_calls) || (st->n == 1 && WORD_IN(f, list_words));
}

/* '(' after an identifier: a call of one of the functions that matter? */
static void on_call(struct stmt *st, struct scan_effects *fx)
{
    const struct token *f = &st->prev;

    if (f->n < sizeof("set_config") - 1) {
        /* Shorter than every name below: known, or anything. */
        if (!harmless_call(st)) fx->flags |= SCAN_CALL;
        return;
    }
    if (st->qualified && !is_word(&st->schema, "pg_catalog")) {
        fx->flags |= SCAN_CALL; /* another schema's set_config or pg_advisory_lock is a function of its own */
    } else if (names_function(f, "set_config")) {
        st->cfg_arg = 0;
        st->cfg_depth = st->cfg_ntok = 0;
        st->cfg_named = st->cfg_plain = st->cfg_local = false;
    } else if (in_list(f, lock_functions, sizeof(lock_functions) / sizeof(lock_functions[0]))) {
        fx->flags |= SCAN_LOCK;
    } else if (in_list(f, unlock_functions, sizeof(unlock_functions) / sizeof(unlock_functions[0]))) {
        fx->flags |= SCAN_UNLOCK;
    } else if (!harmless_call(st)) {
        fx->flags |= SCAN_CALL;
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
        if (is_punct(t, '(') && (st->prev.kind == T_IDENT || st->prev.kind == T_QIDENT) && !harmless_call(st))
            fx->flags |= SCAN_CALL; /* set_config('a.b', f(), false) */
        on_config_arg(st, t, fx);
    } else if (t->kind == T_PUNCT) {
        if (t->punct == '(' && (st->prev.kind == T_IDENT || st->prev.kind == T_QIDENT))
            on_call(st, fx);
        else if (t->punct == '.' && st->kind == L_CREATE && is_word(&st->prev, "pg_temp"))
            fx->flags |= SCAN_TEMP; /* CREATE ... pg_temp.t */
    } else if (t->kind == T_IDENT) {
        switch (st->kind) {
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
        st->kind = is_word(t, "create")                         ? L_CREATE
                   : is_word(t, "select") || is_word(t, "with") ? L_SELECT
                   : is_word(t, "declare")                      ? L_DECLARE
                                                                : L_OTHER;
    }
    if (t->kind == T_IDENT || t->kind == T_QIDENT) {
        /* A name's parts: a.b.c keeps what came before a, and b as c's schema. */
        if (is_punct(&st->prev, '.') && st->prev2_name) {
            st->qualified = true;
            st->schema = st->last_name;
        } else {
            st->qualified = false;
            st->lead = st->prev;
        }
        st->last_name = *t;
    }
    st->prev2_name = st->prev.kind == T_IDENT || st->prev.kind == T_QIDENT;
    if (st->n < KEEP) st->first[st->n] = *t;
    if (st->n <= KEEP) st->n++;
    st->prev = *t;
}

static void stmt_reset(struct stmt *st)
{
    st->n = 0;
    st->kind = L_OTHER;
    st->prev.kind = T_END;
    st->lead.kind = T_END;
    st->qualified = st->prev2_name = false;
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
 * and pg_temp "temp", UNLISTEN "unlisten", SET x TO DEFAULT "default",
 * and so on. (A function call needs a '(', which may_matter looks for.)
 */
static bool cue_at(const char *p, const char *end, unsigned want)
{
    switch (lower(*p)) {
    case 's': return (want & (SCAN_SETTING | SCAN_RESET_ALL | SCAN_SETTING_ANY)) && word_at(p, end, "set");
    case 'r': return (want & (SCAN_SETTING | SCAN_RESET_ALL | SCAN_RESET)) && word_at(p, end, "reset");
    case 'd':
        return ((want & (SCAN_DISCARD_ALL | SCAN_RESET_ALL | SCAN_DROP)) && word_at(p, end, "discard")) ||
               ((want & (SCAN_DEALLOCATE | SCAN_DEALLOCATE_ALL)) && word_at(p, end, "dealloc")) ||
               ((want & SCAN_DROP) && word_at(p, end, "drop")) || ((want & SCAN_RESET) && word_at(p, end, "default")) ||
               ((want & SCAN_CALL) && word_at(p, end, "do"));
    case 'l':
        return ((want & SCAN_LISTEN) && word_at(p, end, "listen")) || ((want & SCAN_LOAD) && word_at(p, end, "load")) ||
               ((want & SCAN_RESET) && word_at(p, end, "local"));
    case 'u': return (want & SCAN_UNLISTEN) && word_at(p, end, "unlisten");
    case 'a': return (want & (SCAN_LOCK | SCAN_UNLOCK)) && word_at(p, end, "advisory");
    case 't': return (want & SCAN_TEMP) && word_at(p, end, "temp");
    case 'h': return (want & SCAN_HOLD) && word_at(p, end, "hold");
    case 'c':
        return ((want & SCAN_CLOSE) && word_at(p, end, "close")) || ((want & SCAN_CALL) && word_at(p, end, "call"));
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
    if ((want & SCAN_CALL) && memchr(sql, '(', len) != NULL) return true; /* a call, perhaps */
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

/* depth: 0 for the client's text, 1 inside a DO body (whose own DO bodies are not looked into). */
static void scan_text(const char *sql, size_t len, bool std_strings, unsigned want, int depth, struct scan_effects *fx)
{
    struct scan_ctx ctx = {std_strings, want, depth};
    struct lexer    lx = {sql, sql + len, std_strings};
    struct stmt     st;
    struct token    t;

    if (!may_matter(sql, len, want)) return;
    stmt_reset(&st);
    for (;;) {
        next_token(&lx, &t);
        if (t.kind == T_END || is_punct(&t, ';')) {
            if (st.cfg_arg >= 0) fx->flags |= SCAN_SETTING_ANY; /* set_config( cut short */
            if (st.n > 0 && depth == 0) fx->statements++;
            classify(&st, &ctx, fx);
            if (t.kind == T_END) return;
            stmt_reset(&st);
            continue;
        }
        on_token(&st, &t, fx);
    }
}

void scan_sql(const char *sql, size_t len, bool std_strings, unsigned want, struct scan_effects *fx)
{
    scan_text(sql, len, std_strings, want, 0, fx);
}
