/*
 * secret.c - one user's secret as auth_file holds it: a plain password, an
 * md5 secret or a SCRAM secret (secret.h), read from its text form.
 *
 * Both auth.c (the file, the plain and md5 checks) and scram.c (the SCRAM
 * exchange) work on secrets; this file sits under both. Every buffer that
 * held a secret is cleansed before it is freed.
 */
#include "secret.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "base64.h"

#define SCRAM_PREFIX "SCRAM-SHA-256$"

bool secret_eq(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

void secret_text_free(char *p)
{
    if (p == NULL) return;
    OPENSSL_cleanse(p, strlen(p));
    free(p);
}

static bool is_hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)p[i])) return false;
    return true;
}

bool secret_is_md5(const char *s)
{
    return strncmp(s, "md5", 3) == 0 && strlen(s) == MD5_PASSWD_LEN && is_hex(s + 3, MD5_PASSWD_LEN - 3);
}

/* "SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>" */
static bool parse_scram(struct secret *s, const char *text)
{
    const char *p = text + strlen(SCRAM_PREFIX), *colon, *dollar, *colon2;
    long        iter = 0;
    size_t      n;

    if (!isdigit((unsigned char)*p)) return false;
    while (isdigit((unsigned char)*p)) {
        iter = iter * 10 + (*p++ - '0');
        if (iter > INT_MAX) return false;
    }
    if (*p != ':' || iter < 1) return false;
    colon = p;
    dollar = strchr(colon + 1, '$');
    if (dollar == NULL) return false;
    colon2 = strchr(dollar + 1, ':');
    if (colon2 == NULL) return false;

    if (!base64_decode(colon + 1, (size_t)(dollar - colon - 1), s->scram_salt, sizeof(s->scram_salt), &n) || n == 0)
        return false;
    s->scram_salt_len = n;
    if (!base64_decode(dollar + 1, (size_t)(colon2 - dollar - 1), s->scram_stored_key, SCRAM_KEY_LEN, &n) ||
        n != SCRAM_KEY_LEN)
        return false;
    if (!base64_decode(colon2 + 1, strlen(colon2 + 1), s->scram_server_key, SCRAM_KEY_LEN, &n) || n != SCRAM_KEY_LEN)
        return false;
    s->scram_iter = (int)iter;
    return true;
}

/*
 * Like PostgreSQL, a text that merely starts with "md5" is a plain password
 * unless it has an md5 secret's length; at that length it must be hex.
 */
bool secret_parse(struct secret *out, const char *user, const char *secret)
{
    memset(out, 0, sizeof(*out));
    if (user == NULL || secret == NULL) return false;

    if (strncmp(secret, "md5", 3) == 0 && strlen(secret) == MD5_PASSWD_LEN) {
        if (!secret_is_md5(secret)) return false;
        out->kind = SECRET_MD5;
    } else if (strncmp(secret, SCRAM_PREFIX, strlen(SCRAM_PREFIX)) == 0) {
        if (!parse_scram(out, secret)) {
            OPENSSL_cleanse(out, sizeof(*out));
            return false;
        }
        out->kind = SECRET_SCRAM;
    } else {
        out->kind = SECRET_PLAIN;
    }
    out->user = strdup(user);
    out->secret = strdup(secret);
    if (out->user == NULL || out->secret == NULL) {
        secret_clear(out);
        return false;
    }
    return true;
}

void secret_clear(struct secret *s)
{
    if (s == NULL) return;
    free(s->user);
    secret_text_free(s->secret);
    OPENSSL_cleanse(s, sizeof(*s));
    s->user = NULL;
    s->secret = NULL;
}
