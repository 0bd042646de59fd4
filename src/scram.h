/*
 * scram.h - SCRAM-SHA-256 (RFC 5802, RFC 7677) for both sides:
 *   server side: pgbun verifies a client against an auth_file secret;
 *   client side: pgbun logs in to PostgreSQL with a password, or with the
 *   ClientKey a client's proof revealed (pass-through: no password at all).
 * The server side does channel binding (tls-server-end-point, RFC 5929)
 * when the connection is TLS; the client side does none.
 *
 * Messages are the SASL payloads, without the PostgreSQL message framing.
 */
#ifndef PGBUN_SCRAM_H
#define PGBUN_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "secret.h"

#define SCRAM_NONCE_LEN 18 /* random bytes before base64 */
#define SCRAM_CB_MAX    64 /* channel binding data: a certificate's hash, at most SHA-512 */

struct scram_server {
    int     iter;
    uint8_t salt[SCRAM_MAX_SALT];
    size_t  salt_len;
    uint8_t stored_key[SCRAM_KEY_LEN];
    uint8_t server_key[SCRAM_KEY_LEN];
    char   *client_first_bare; /* kept for the AuthMessage */
    char   *server_first;
    char   *nonce; /* client nonce + server nonce */
    char   *gs2_header;
    uint8_t cb_data[SCRAM_CB_MAX]; /* tls-server-end-point of the connection */
    size_t  cb_len;                /* ... 0: none (plain text: SCRAM-SHA-256-PLUS not offered) */
    bool    cb_plus;               /* the client chose SCRAM-SHA-256-PLUS */
    bool    done;
    uint8_t client_key[SCRAM_KEY_LEN]; /* what the client's right proof revealed: it logs in as the user */
    bool    have_client_key;
};

struct scram_client {
    char   *client_nonce;
    char   *client_first_bare;
    char   *server_first;
    uint8_t server_signature[SCRAM_KEY_LEN];
    bool    have_signature;
};

/*
 * Server side. After a right proof, client_key holds the client's
 * ClientKey (cleansed by scram_server_free).
 * scram_server_begin takes a plain or SCRAM secret (md5 cannot
 * do SCRAM: returns false). For a plain secret a random salt and 4096
 * iterations are used. test_nonce, when not NULL, replaces the random server
 * nonce (unit tests only).
 */
bool scram_server_begin(struct scram_server *st, const struct secret *secret, const char *test_nonce)
    __attribute__((warn_unused_result));
/*
 * Over TLS, after scram_server_begin: the channel binding data
 * (tls-server-end-point, the hash of pgbun's certificate) that offering
 * SCRAM-SHA-256-PLUS promised, and whether the client chose it. A client
 * that then sends no binding under PLUS, or says "y" (it thinks the server
 * cannot bind) when it could, is refused: that is a downgrade.
 */
void scram_server_channel_binding(struct scram_server *st, const uint8_t *data, size_t len, bool plus);
/* client-first-message -> server-first-message (malloc'd, NUL-terminated). *err names the problem on failure. */
bool scram_server_first(struct scram_server *st, const char *msg, size_t len, char **out, const char **err)
    __attribute__((warn_unused_result));
/* client-final-message -> server-final-message ("v=..."). false on a wrong proof or a malformed message. */
bool scram_server_final(struct scram_server *st, const char *msg, size_t len, char **out, const char **err)
    __attribute__((warn_unused_result));
void scram_server_free(struct scram_server *st);

/* Client side. test_nonce as above. out is malloc'd. */
bool scram_client_first(struct scram_client *st, const char *test_nonce, char **out)
    __attribute__((warn_unused_result));
bool scram_client_final(struct scram_client *st, const char *password, const char *server_first, size_t len, char **out,
                        const char **err) __attribute__((warn_unused_result));
/* The same from the keys a client's proof revealed (scram_server.client_key, the secret's ServerKey): pass-through. */
bool scram_client_final_keys(struct scram_client *st, const uint8_t client_key[SCRAM_KEY_LEN],
                             const uint8_t server_key[SCRAM_KEY_LEN], const char *server_first, size_t len, char **out,
                             const char **err) __attribute__((warn_unused_result));
bool scram_client_verify(struct scram_client *st, const char *server_final, size_t len, const char **err)
    __attribute__((warn_unused_result));
void scram_client_free(struct scram_client *st);

/*
 * A SCRAM secret no password matches, for a user pgbun does not know (or
 * knows only by an md5 secret): the exchange goes on to the proof, with
 * the salt and iteration count a real secret would show, the same salt
 * for a name every time, so that the answers give away nothing about who
 * exists. false: out of memory.
 */
bool scram_mock_secret(struct secret *out, const char *user) __attribute__((warn_unused_result));

/* Builds the "SCRAM-SHA-256$iter:salt$stored:server" text for a password (salt random when NULL). */
char *scram_make_secret(const char *password, const uint8_t *salt, size_t salt_len, int iter);

#endif
