/*
 * auth.h - secrets and password checks.
 *
 * auth_file has PgBouncer's userlist.txt format: one `"user" "secret"` per
 * line, where the secret is plain text, `md5<32 hex>` or
 * `SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.
 * Double quotes inside a field are doubled; lines starting with ';' or '#'
 * and blank lines are ignored.
 */
#ifndef PGBUN_AUTH_H
#define PGBUN_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "secret.h"

struct auth_file;

/* On error returns NULL and sets *errmsg (malloc'd) naming file and line. */
struct auth_file    *auth_file_load(const char *path, char **errmsg) __attribute__((warn_unused_result));
void                 auth_file_free(struct auth_file *af);
const struct secret *auth_file_find(const struct auth_file *af, const char *user);
size_t               auth_file_count(const struct auth_file *af);
/* The i-th user name (0 <= i < auth_file_count), in name order. */
const char *auth_file_user(const struct auth_file *af, size_t i);

/* out = "md5" + hex(md5(password || user)); out must hold MD5_PASSWD_LEN + 1. */
void auth_md5_secret(const char *user, const char *password, char *out);
/* out = "md5" + hex(md5(secret_hex || salt)) where secret = "md5<hex>"; the reply to AuthenticationMD5Password. */
void auth_md5_salted(const char *md5_secret, const uint8_t salt[4], char *out);

/*
 * Checks a cleartext password a client sent against a secret of any kind.
 * Constant-time comparison.
 */
bool auth_check_plain(const struct secret *s, const char *password);
/* Checks a client's reply to AuthenticationMD5Password(salt); needs a plain or md5 secret. */
bool auth_check_md5(const struct secret *s, const uint8_t salt[4], const char *reply);

#endif
