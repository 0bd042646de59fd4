/*
 * client.h - one client connection.
 *
 * A client logs in (startup, optional SSL refusal, authentication), then its
 * messages are framed and forwarded to the linked server. See pool.h for the
 * states.
 */
#ifndef PGBUN_CLIENT_H
#define PGBUN_CLIENT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "auth.h"
#include "authq.h"
#include "hashtab.h"
#include "io.h"
#include "log.h"
#include "pool.h"
#include "varlist.h"

struct pstmt_names;

struct scram_server;
struct admin_session;
struct worker;

enum login_step {
    LOGIN_STARTUP = 0,   /* waiting for SSLRequest / StartupMessage / CancelRequest */
    LOGIN_LOOKUP,        /* waiting for auth_query to find its secret (authq.h) */
    LOGIN_PASSWORD,      /* sent AuthenticationCleartextPassword or MD5Password */
    LOGIN_SASL_INITIAL,  /* sent AuthenticationSASL */
    LOGIN_SASL_RESPONSE, /* sent AuthenticationSASLContinue */
    LOGIN_DONE,
};

struct client {
    TAILQ_ENTRY(client) entry; /* on the list of its state */
    enum client_state     state;
    struct pool          *pool;         /* NULL until the startup packet names it */
    struct server        *server;       /* linked server, or NULL */
    struct worker        *w;            /* whose loop it is on */
    struct pool_share    *db_clients;   /* where it counts for max_db_client_connections, or NULL */
    struct pool_share    *user_clients; /* where it counts for max_user_client_connections, or NULL */
    struct io             io;
    struct evbuffer      *in;  /* bytes read, not yet forwarded */
    struct evbuffer      *out; /* bytes to write to the client */
    uint64_t              id;
    char                  addr[48]; /* peer address (INET6_ADDRSTRLEN is 46), or "unix" */
    int                   port;     /* peer port, 0 on a unix socket */
    bool                  is_unix;
    char                 *user;
    char                 *dbname;
    struct varlist        params;         /* startup parameters to hold on its server */
    struct varlist       *sets;           /* session-level settings it made, as read back; NULL: none */
    struct pstmt_names   *stmts;          /* its prepared statements, kept by pgbun (pstmt_fwd.h); NULL: none */
    struct pstmt_names   *stmts_dropping; /* ... those a DEALLOCATE ALL or DISCARD ALL in flight may drop */
    uint8_t               cancel_key[8];  /* BackendKeyData pgbun gave it */
    UT_hash_handle        cancel_hh;      /* in its worker's index of cancel keys, from login to closing */
    bool                  cancel_indexed; /* ... and it is there */
    usec_t                connect_time;
    usec_t                request_time;  /* last read from the client */
    usec_t                state_since;   /* when it entered its current state */
    usec_t                wait_noticed;  /* state_since of the wait query_wait_notify's NOTICE was sent for */
    uint32_t              fwd_left;      /* bytes of a message still to pass on (with no server: to drop) */
    uint8_t               fwd_type;      /* ... and its type */
    uint64_t              last_server;   /* id of the server it had last, 0 before the first */
    bool                  throttled;     /* reading paused: server output is full */
    bool                  processing;    /* its input is being handled: a call from inside asks for another pass */
    bool                  process_again; /* ... which the outer call makes */
    bool                  quit;          /* sent Terminate */
    bool                  console_db;    /* asked for the admin console's database */
    bool                  peer_admin;    /* on the unix socket as the OS user running pgbun */
    bool                  tls_checked;   /* its first bytes were looked at for a direct TLS ClientHello */
    bool                  tls_direct;    /* ... and were one: TLS without an SSLRequest */
    struct admin_session *console;       /* the console's state, or NULL */

    enum login_step      step;
    struct client_login *login; /* what only a login needs; NULL once welcomed (idle clients stay small) */
};

/* A client's state while it logs in. */
struct client_login {
    struct client       *client;
    struct event         timer;  /* client_login_timeout */
    struct secret        secret; /* copy of its auth_file entry, or of what auth_query found */
    bool                 has_secret;
    enum auth_type       method;     /* auth_type, or what auth_hba_file says for this connection */
    bool                 from_query; /* the user is not in auth_file: auth_query answered */
    bool                 mock;       /* SCRAM against a secret no password matches (the user has none) */
    struct authq_waiter  waiter;     /* ... while it is asked */
    uint8_t              md5_salt[4];
    struct scram_server *scram;
};

/* Takes ownership of an accepted socket. */
void client_accept(int fd, const struct sockaddr *sa, int salen, bool is_unix);

/*
 * Closes a client through one door: logs `reason`, sends an ErrorResponse
 * with `sqlstate` when one is given (FATAL), unlinks and defers the free.
 */
void client_close(struct client *c, const char *sqlstate, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Sends a NoticeResponse between messages (it has no server, or its server is between replies). */
void client_notice(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The pool has a welcome (server parameters): finish the login. */
void client_welcome(struct client *c);
/* The linked server is ready for the client's messages (parameters applied). */
void client_start(struct client *c);
/* The server's output to this client drained below the limit, or a server was unlinked. */
void client_resume(struct client *c);
/* Flushes c->out; closes the client on a write error. false when the client was closed. */
bool client_flush(struct client *c);

void client_free(struct client *c);
/* A CancelRequest with this key, for a client of this worker. */
void client_cancel_local(const uint8_t key[8]);
/* SHUTDOWN WAIT_FOR_SERVERS: closes every client queued for a server, or for its pool's first login (world stopped). */
void client_refuse_waiting(void);

/* A log line about c: its identity is the text line's prefix (C-7: db/user@addr:port), and fields in JSON. */
void client_log_line(const struct client *c, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define client_log(c, level, ...)                                                                                      \
    do {                                                                                                               \
        if (log_enabled(level)) client_log_line(c, level, __VA_ARGS__);                                                \
    } while (0)

#endif
