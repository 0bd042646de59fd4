/*
 * secret.h - one user's secret: plain text, `md5<32 hex>` or
 * `SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>`, as
 * auth_file and PostgreSQL's pg_authid write them.
 */
#ifndef PGBUN_SECRET_H
#define PGBUN_SECRET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_KEY_LEN  32
#define SCRAM_MAX_SALT 64
#define MD5_PASSWD_LEN 35 /* "md5" + 32 hex */

enum secret_kind {
    SECRET_PLAIN = 0,
    SECRET_MD5,
    SECRET_SCRAM,
};

struct secret {
    char            *user;
    char            *secret; /* as written in the file */
    enum secret_kind kind;
    int              scram_iter; /* SECRET_SCRAM only */
    uint8_t          scram_salt[SCRAM_MAX_SALT];
    size_t           scram_salt_len;
    uint8_t          scram_stored_key[SCRAM_KEY_LEN];
    uint8_t          scram_server_key[SCRAM_KEY_LEN];
};

/*
 * Fills a secret from its text form; false when the text is a malformed md5
 * or SCRAM secret. Like PostgreSQL, a text that merely starts with "md5" is a
 * plain password unless it has an md5 secret's length.
 */
bool secret_parse(struct secret *out, const char *user, const char *secret) __attribute__((warn_unused_result));
/* Frees and cleanses what secret_parse() filled. */
void secret_clear(struct secret *s);

/* true when s is an md5 secret: "md5" and 32 hex digits. */
bool secret_is_md5(const char *s);
/* Cleanses and frees a malloc'd text that held a secret (NULL is fine). */
void secret_text_free(char *p);
/* Constant-time memory comparison. */
bool secret_eq(const void *a, const void *b, size_t n);

#endif
