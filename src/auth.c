/*
 * auth.c - the auth_file and the password checks that do not need a
 * conversation (plain text and md5).
 *
 *   userlist.txt --auth_file_load--> [parse line] --secret_parse--> sorted array
 *                                                                        |
 *   login: auth_file_find(user) --> auth_check_plain / auth_check_md5 / scram.c
 *
 * Secrets never leave this file in an error message, and every buffer that
 * held one is cleansed before it is freed (secret.c). SCRAM key derivation
 * lives in scram.c; a cleartext check against a SCRAM secret goes through
 * scram_make_secret with the secret's own salt and iteration count.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf, getline */
#endif
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "base64.h"
#include "auth.h"
#include "scram.h"

struct auth_file {
    struct secret *items; /* sorted by user, one per user */
    size_t         count;
};

/* ---- small helpers ---- */

static void to_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Copies an md5 secret with its hex part lowercased: "MD5ABC..." from a file must hash like "md5abc...". */
static void md5_lower(const char *src, char *dst)
{
    for (size_t i = 0; i < MD5_PASSWD_LEN; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[MD5_PASSWD_LEN] = '\0';
}

static bool md5_hex(const void *a, size_t alen, const void *b, size_t blen, char *out)
{
    EVP_MD_CTX  *ctx = EVP_MD_CTX_new();
    uint8_t      md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    bool         good;

    good = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 && EVP_DigestUpdate(ctx, a, alen) == 1 &&
           EVP_DigestUpdate(ctx, b, blen) == 1 && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 16;
    EVP_MD_CTX_free(ctx);
    if (!good) return false;
    memcpy(out, "md5", 3);
    to_hex(md, 16, out + 3);
    return true;
}

/* ---- md5 ---- */

void auth_md5_secret(const char *user, const char *password, char *out)
{
    if (!md5_hex(password, strlen(password), user, strlen(user), out)) out[0] = '\0';
}

void auth_md5_salted(const char *md5_secret, const uint8_t salt[4], char *out)
{
    char lower[MD5_PASSWD_LEN + 1];

    out[0] = '\0';
    if (!secret_is_md5(md5_secret)) return;
    md5_lower(md5_secret, lower);
    if (!md5_hex(lower + 3, MD5_PASSWD_LEN - 3, salt, 4, out)) out[0] = '\0';
    OPENSSL_cleanse(lower, sizeof(lower));
}

/* ---- checks ---- */

static bool sha256(const void *p, size_t n, uint8_t out[32])
{
    unsigned int len = 0;

    return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1 && len == 32;
}

/* Hashing both sides first keeps the comparison time independent of either length. */
static bool plain_eq(const char *a, const char *b)
{
    uint8_t ha[32], hb[32];
    bool    eq;

    eq = sha256(a, strlen(a), ha) && sha256(b, strlen(b), hb) && secret_eq(ha, hb, 32);
    OPENSSL_cleanse(ha, sizeof(ha));
    OPENSSL_cleanse(hb, sizeof(hb));
    return eq;
}

static bool md5_eq(const char *computed, const char *other)
{
    char a[MD5_PASSWD_LEN + 1], b[MD5_PASSWD_LEN + 1];
    bool eq;

    if (strlen(computed) != MD5_PASSWD_LEN || strlen(other) != MD5_PASSWD_LEN) return false;
    md5_lower(computed, a);
    md5_lower(other, b);
    eq = secret_eq(a, b, MD5_PASSWD_LEN);
    OPENSSL_cleanse(a, sizeof(a));
    OPENSSL_cleanse(b, sizeof(b));
    return eq;
}

static bool scram_eq(const struct secret *s, const char *password)
{
    struct secret derived;
    char         *text;
    bool          eq, stored_eq, server_eq;

    text = scram_make_secret(password, s->scram_salt, s->scram_salt_len, s->scram_iter);
    if (text == NULL) return false;
    if (!secret_parse(&derived, s->user, text)) {
        secret_text_free(text);
        return false;
    }
    secret_text_free(text);
    /* Both keys, both always compared: a tampered ServerKey is as wrong as a wrong StoredKey. */
    stored_eq = secret_eq(derived.scram_stored_key, s->scram_stored_key, SCRAM_KEY_LEN);
    server_eq = secret_eq(derived.scram_server_key, s->scram_server_key, SCRAM_KEY_LEN);
    eq = derived.kind == SECRET_SCRAM && stored_eq && server_eq;
    secret_clear(&derived);
    return eq;
}

/* Empty passwords never match, as in PgBouncer and PostgreSQL. */
bool auth_check_plain(const struct secret *s, const char *password)
{
    char computed[MD5_PASSWD_LEN + 1];
    bool eq = false;

    if (s == NULL || s->secret == NULL || password == NULL || password[0] == '\0') return false;
    switch (s->kind) {
    case SECRET_PLAIN: eq = s->secret[0] != '\0' && plain_eq(s->secret, password); break;
    case SECRET_MD5:
        auth_md5_secret(s->user, password, computed);
        eq = md5_eq(computed, s->secret);
        OPENSSL_cleanse(computed, sizeof(computed));
        break;
    case SECRET_SCRAM: eq = scram_eq(s, password); break;
    }
    return eq;
}

bool auth_check_md5(const struct secret *s, const uint8_t salt[4], const char *reply)
{
    char secret[MD5_PASSWD_LEN + 1], answer[MD5_PASSWD_LEN + 1];
    bool eq = false;

    if (s == NULL || s->secret == NULL || reply == NULL) return false;
    switch (s->kind) {
    case SECRET_PLAIN:
        if (s->secret[0] == '\0') return false;
        auth_md5_secret(s->user, s->secret, secret);
        break;
    case SECRET_MD5: snprintf(secret, sizeof(secret), "%s", s->secret); break;
    case SECRET_SCRAM: return false;
    }
    auth_md5_salted(secret, salt, answer);
    eq = md5_eq(answer, reply);
    OPENSSL_cleanse(secret, sizeof(secret));
    OPENSSL_cleanse(answer, sizeof(answer));
    return eq;
}

/* ---- auth_file ---- */

/* Reads one "..." field at *pp; "" inside is a literal quote. Returns a malloc'd copy, or NULL with *what set. */
static char *read_field(const char **pp, bool is_user, const char **what)
{
    const char *p = *pp;
    char       *out, *o;

    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '"') {
        *what = is_user ? "expected a quoted user name" : "expected a quoted secret after the user name";
        return NULL;
    }
    p++;
    out = o = malloc(strlen(p) + 1);
    if (out == NULL) {
        *what = "out of memory";
        return NULL;
    }
    for (;;) {
        if (*p == '\0') {
            *what = is_user ? "unterminated user name" : "unterminated secret";
            *o = '\0';
            secret_text_free(out);
            return NULL;
        }
        if (*p == '"') {
            if (p[1] != '"') break;
            p++;
        }
        *o++ = *p++;
    }
    *o = '\0';
    *pp = p + 1;
    return out;
}

static char *fmt_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *fmt_error(const char *fmt, ...)
{
    va_list ap;
    char   *out = NULL;
    int     n;

    va_start(ap, fmt);
    n = vasprintf(&out, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : out;
}

static int cmp_user(const void *a, const void *b)
{
    const struct secret *x = a, *y = b;

    return strcmp(x->user, y->user);
}

static bool add_entry(struct auth_file *af, size_t *cap, struct secret *s)
{
    if (af->count == *cap) {
        size_t         ncap = *cap ? *cap * 2 : 16;
        struct secret *n = realloc(af->items, ncap * sizeof(*n));

        if (n == NULL) return false;
        af->items = n;
        *cap = ncap;
    }
    af->items[af->count++] = *s;
    return true;
}

struct ordered {
    struct secret s;
    size_t        line; /* position in the file */
};

static int cmp_ordered(const void *a, const void *b)
{
    const struct ordered *x = a, *y = b;
    int                   c = strcmp(x->s.user, y->s.user);

    if (c != 0) return c;
    return x->line < y->line ? -1 : x->line > y->line;
}

/*
 * Sorts for bsearch. A user listed twice keeps the later line, the way a
 * later entry overrides an earlier one in PgBouncer.
 */
static bool sort_and_dedupe(struct auth_file *af)
{
    struct ordered *tmp;
    size_t          keep = 0;

    if (af->count < 2) return true;
    tmp = malloc(af->count * sizeof(*tmp));
    if (tmp == NULL) return false;
    for (size_t i = 0; i < af->count; i++) {
        tmp[i].s = af->items[i];
        tmp[i].line = i;
    }
    qsort(tmp, af->count, sizeof(*tmp), cmp_ordered);
    for (size_t i = 0; i < af->count; i++) {
        if (i + 1 < af->count && strcmp(tmp[i].s.user, tmp[i + 1].s.user) == 0)
            secret_clear(&tmp[i].s);
        else
            af->items[keep++] = tmp[i].s;
    }
    OPENSSL_cleanse(tmp, af->count * sizeof(*tmp));
    free(tmp);
    af->count = keep;
    return true;
}

struct auth_file *auth_file_load(const char *path, char **errmsg)
{
    struct auth_file *af;
    FILE             *f;
    char             *line = NULL;
    size_t            linecap = 0, cap = 0;
    ssize_t           got;
    unsigned          lineno = 0;
    const char       *what = NULL;

    *errmsg = NULL;
    f = fopen(path, "r");
    if (f == NULL) {
        *errmsg = fmt_error("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    af = calloc(1, sizeof(*af));
    if (af == NULL) {
        fclose(f);
        *errmsg = fmt_error("%s: out of memory", path);
        return NULL;
    }
    while ((got = getline(&line, &linecap, f)) >= 0) {
        const char   *p = line;
        char         *user, *secret;
        struct secret s;

        lineno++;
        if ((size_t)got != strlen(line)) {
            what = "NUL byte in line";
            break;
        }
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == ';' || *p == '#') continue;

        user = read_field(&p, true, &what);
        if (user == NULL) break;
        secret = read_field(&p, false, &what);
        if (secret == NULL) {
            free(user);
            break;
        }
        if (user[0] == '\0') {
            what = "empty user name";
        } else if (!secret_parse(&s, user, secret)) {
            what = strncmp(secret, "md5", 3) == 0 ? "malformed md5 secret" : "malformed SCRAM secret";
        } else if (!add_entry(af, &cap, &s)) {
            secret_clear(&s);
            what = "out of memory";
        }
        free(user);
        secret_text_free(secret);
        if (what != NULL) break;
    }
    if (line != NULL) OPENSSL_cleanse(line, linecap);
    free(line);
    if (what == NULL && ferror(f)) {
        *errmsg = fmt_error("%s: read error: %s", path, strerror(errno));
        what = "";
    } else if (what == NULL && !sort_and_dedupe(af)) {
        *errmsg = fmt_error("%s: out of memory", path);
        what = "";
    } else if (what != NULL) {
        *errmsg = fmt_error("%s:%u: %s", path, lineno, what);
    }
    fclose(f);
    if (what != NULL) {
        auth_file_free(af);
        return NULL;
    }
    return af;
}

void auth_file_free(struct auth_file *af)
{
    if (af == NULL) return;
    for (size_t i = 0; i < af->count; i++)
        secret_clear(&af->items[i]);
    free(af->items);
    free(af);
}

const struct secret *auth_file_find(const struct auth_file *af, const char *user)
{
    struct secret key;

    if (af == NULL || user == NULL || af->count == 0) return NULL;
    memset(&key, 0, sizeof(key));
    key.user = (char *)user;
    return bsearch(&key, af->items, af->count, sizeof(af->items[0]), cmp_user);
}

size_t auth_file_count(const struct auth_file *af)
{
    return af ? af->count : 0;
}

const char *auth_file_user(const struct auth_file *af, size_t i)
{
    return af != NULL && i < af->count ? af->items[i].user : NULL;
}
