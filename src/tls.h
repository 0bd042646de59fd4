/*
 * tls.h - TLS setups built from the config, and TLS started on a connection.
 *
 * A struct tls_conf holds the two OpenSSL contexts the config asks for:
 * one to accept clients (client_tls_*), one to connect to PostgreSQL
 * (server_tls_*). It is built whole from the files when a config is
 * applied, at start and at each RELOAD, and swapped with the config while
 * the world is stopped: a file that fails to load fails the RELOAD and
 * leaves the running setup alone. A session already open keeps the context
 * it was made from (OpenSSL counts references), so it is never cut.
 *
 * Once started on a struct io, TLS is invisible to its owner: io_read and
 * io_flush (io.c) drive the handshake and carry the records.
 */
#ifndef PGBUN_TLS_H
#define PGBUN_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "io.h"

struct pgbun_config;
struct ssl_ctx_st;

/* libpq's sslmode values, in order of strictness. */
enum tls_mode {
    TLS_DISABLE,
    TLS_ALLOW,
    TLS_PREFER,
    TLS_REQUIRE,
    TLS_VERIFY_CA,
    TLS_VERIFY_FULL,
};

/* How pgbun reaches PostgreSQL: server_tls_*, or a [databases] entry's sslmode, sslrootcert, sslcert, sslkey. */
struct tls_target {
    struct ssl_ctx_st *ctx;  /* NULL: plain text (sslmode = disable) */
    enum tls_mode      mode; /* sslmode */
    char              *db;   /* the entry it is for; NULL: the global keys */
};

struct tls_conf {
    struct ssl_ctx_st *accept;      /* for clients, or NULL: client_tls_sslmode = disable */
    enum tls_mode      client_mode; /* client_tls_sslmode */
    struct tls_target  server;      /* server_tls_* */
    struct tls_target *dbs;         /* entries with TLS keys of their own */
    size_t             ndbs;
};

/* The mode a client_tls_sslmode or server_tls_sslmode value names (the config has checked it). */
enum tls_mode tls_mode_parse(const char *name);
const char   *tls_mode_name(enum tls_mode mode);

/*
 * Builds the TLS setup cfg asks for, reading every file now. NULL with
 * *errmsg (malloc'd) naming the key, the file and OpenSSL's reason.
 */
struct tls_conf *tls_conf_new(const struct pgbun_config *cfg, char **errmsg) __attribute__((warn_unused_result));
void             tls_conf_free(struct tls_conf *tc);

/*
 * Starts the server side of a handshake on io (after the 'S' answer to an
 * SSLRequest, or at once for direct TLS). false: out of memory.
 */
bool tls_accept(struct io *io, const struct tls_conf *tc) __attribute__((warn_unused_result));

/* The target for a [databases] entry (by its name: "*" for the fallback): its own, or the global one. */
const struct tls_target *tls_target_for(const struct tls_conf *tc, const char *db);

/*
 * Starts the client side of a handshake with PostgreSQL on io, after its
 * 'S'. host is the name or address connected to: sent as SNI when a name,
 * and checked against the certificate under verify-full.
 */
bool tls_connect(struct io *io, const struct tls_target *t, const char *host) __attribute__((warn_unused_result));

/* Whether the handshake of a direct TLS connection agreed on ALPN "postgresql". */
bool tls_alpn_ok(const struct io *io);

/*
 * The session as PgBouncer's SHOW CLIENTS shows it:
 * "TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519", or "" when plain.
 */
void tls_describe(const struct io *io, char *buf, size_t len);

/*
 * SCRAM's tls-server-end-point binding (RFC 5929): the hash of pgbun's own
 * certificate on this connection, by the certificate's signature hash
 * (SHA-256 for MD5 and SHA-1). Its length, or 0 when there is none.
 */
size_t tls_server_end_point(const struct io *io, unsigned char *out, size_t len);

/*
 * The common name of the client's verified certificate, for auth_type =
 * cert. false: no certificate, none verified, no common name, or one that
 * does not fit or holds a NUL.
 */
bool tls_peer_cn(const struct io *io, char *buf, size_t len);

/* Whether the first byte a client sent opens a TLS handshake: one byte decides, however the bytes were split. */
bool tls_looks_like_hello(unsigned char first);

#endif
