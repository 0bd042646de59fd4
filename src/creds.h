/*
 * creds.h - what pgbun learns of users' credentials while it runs, shared
 * by every worker:
 *   - the secrets auth_query found, by user and by where they were looked
 *     up (auth database and auth_user): fresh for auth_query_cache_ttl,
 *     kept after that for pgbun's own md5 logins to PostgreSQL;
 *   - the SCRAM keys a client's right proof revealed (ClientKey and the
 *     secret's ServerKey), by user and by where the secret came from
 *     ("auth_file" or auth_query's place), with which pgbun logs in to
 *     PostgreSQL as that user without knowing its password (pass-through).
 * Nothing here is ever logged, and every buffer that held a secret or a key
 * is cleansed before it is freed.
 */
#ifndef PGBUN_CREDS_H
#define PGBUN_CREDS_H

#include <stdbool.h>
#include <stdint.h>

#include "secret.h"
#include "config.h" /* usec_t */

/*
 * A secret auth_query found for `user` at `where` no longer than `ttl`
 * before `now`, and since the last creds_reset: true, with *secret
 * malloc'd (NULL: the role exists but has no usable password). false: ask
 * PostgreSQL (*oom: because memory ran out).
 */
bool creds_find(const char *user, const char *where, usec_t now, usec_t ttl, char **secret, bool *oom)
    __attribute__((warn_unused_result));
/* The answer, found at `now`, of a lookup that began at generation `gen` (creds_gen): kept unless a reset came since.
 */
void creds_put(const char *user, const char *where, const char *secret, unsigned gen, usec_t now);
/* A login with the secret found at `where` failed: the next one asks PostgreSQL again. */
void creds_drop(const char *user, const char *where);
/* RELOAD: every secret found so far is asked for again before a client logs in with it. */
void     creds_reset(void);
unsigned creds_gen(void);
/* user logged in with a secret auth_query found (SHOW USERS). */
bool creds_found_by_query(const char *user);
/* The md5 secret auth_query found for user at `where`, into out (MD5_PASSWD_LEN + 1): for pgbun's own md5 logins. */
bool creds_md5_secret(const char *user, const char *where, char *out);

/*
 * A client proved it knows user's password, against the secret of place
 * `where` ("auth_file", or auth_query's): its ClientKey and the secret's
 * ServerKey. A new secret found at that place forgets them.
 */
void creds_put_scram_keys(const char *user, const char *where, const uint8_t client_key[SCRAM_KEY_LEN],
                          const uint8_t server_key[SCRAM_KEY_LEN]);
/* The keys a client of user last revealed at `where`; false: none yet. */
bool creds_scram_keys(const char *user, const char *where, uint8_t client_key[SCRAM_KEY_LEN],
                      uint8_t server_key[SCRAM_KEY_LEN]);

/* Frees everything (exit). */
void creds_fini(void);

#endif
