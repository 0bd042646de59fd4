/*
 * server.h - one connection to PostgreSQL.
 *
 * A server connects, logs in with the pool's credentials, then relays
 * replies to its linked client, watching ReadyForQuery to know when it is
 * clean again. Queries pgbun issues itself (SET for client parameters,
 * server_reset_query) run in a phase whose replies are not passed on; the
 * session state they keep in step (session.h) lives in the fields below.
 */
#ifndef PGBUN_SERVER_H
#define PGBUN_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "io.h"
#include "log.h"
#include "pool.h"
#include "pstmt.h"
#include "proto.h"
#include "replyq.h"
#include "session.h"
#include "varlist.h"

struct scram_client;
struct worker;
struct cancel_conn;
struct evdns_getaddrinfo_request;
struct evutil_addrinfo;

enum server_phase {
    PHASE_NONE = 0, /* replies go to the client */
    PHASE_SETTING,  /* pgbun's SETs for the client's parameters */
    PHASE_RESET,    /* server_reset_query */
    PHASE_CHECK,    /* server_check_query */
    PHASE_READBACK, /* reading the session-level settings a client's transaction left */
    PHASE_CONNECT,  /* connect_query again, after server_reset_query undid what it set */
    PHASE_LOOKUP,   /* a query of pgbun's for a job of the pool (server_lookup) */
};

/* Where server_lookup's rows and end go. */
struct server_lookup_ops {
    void (*row)(void *arg, const uint8_t *body, size_t len); /* a DataRow of the query (its body) */
    void (*done)(void *arg, const struct pg_error *err);     /* it ran (err NULL), or why it did not */
};

struct server {
    TAILQ_ENTRY(server) entry; /* on the list of its state */
    enum server_state                 state;
    struct pool                      *pool;   /* owner; never NULL */
    struct client                    *client; /* linked client, or NULL */
    struct io                         io;
    struct evbuffer                  *in;  /* bytes read, not yet relayed */
    struct evbuffer                  *out; /* bytes to write to PostgreSQL */
    uint64_t                          id;
    uint8_t                           cancel_key[8]; /* the backend's real pid and key */
    int                               backend_pid;
    struct varlist                    params;   /* ParameterStatus values */
    struct varlist                    applied;  /* values pgbun SET for clients, as the clients wrote them */
    struct varlist                    applying; /* SETs in flight (PHASE_SETTING), or settings read back */
    struct event                      timer;    /* connect / login deadline */
    struct evdns_getaddrinfo_request *dns;      /* pending lookup */
    struct evutil_addrinfo           *addrs;    /* resolved addresses, or NULL for a literal address */
    struct evutil_addrinfo           *addr;     /* the one being tried */
    char                              host[CONFIG_HOST_MAX]; /* the host (of the pool's host list) being tried */
    int                               port;                  /* ... and its port */
    unsigned                          host_at;               /* its entry in the host list */
    unsigned                          hosts_left;            /* entries not tried yet */
    bool                              tls_asked;             /* SSLRequest sent, answer not read yet */
    bool                              allow_tls;             /* sslmode allow: plain text was refused, TLS now */
    usec_t                            connect_time;
    usec_t                            state_since;         /* when it entered its current state */
    usec_t                            last_ready;          /* last ReadyForQuery */
    uint32_t                          fwd_left;            /* bytes of a message still to pass on */
    int                               expect_rfq;          /* requests sent whose ReadyForQuery is due */
    bool                              unsynced;            /* extended-protocol messages sent since the last Sync */
    bool                              in_copy;             /* COPY in progress */
    bool                              copy_in;             /* COPY FROM STDIN: Sync/Flush from the client are ignored */
    int                               syncs_since_execute; /* Syncs forwarded after the last Execute or Query */
    char                              txstatus;            /* last ReadyForQuery status: I, T or E */
    enum server_phase                 phase;
    bool                              throttled; /* reading paused: client output is full */
    bool                 relaying;    /* its input is being relayed: a call from inside asks for another pass */
    bool                 relay_again; /* ... which the outer call makes */
    struct pg_error      phase_error; /* error to report when the phase ends */
    bool                 has_phase_error;
    struct scram_client *scram;
    struct cancel_conn  *cancel;          /* CancelRequest in flight, or NULL */
    usec_t               request_start;   /* when the oldest unanswered request was sent */
    bool                 query_timed_out; /* pgbun cancelled the running query (query_timeout) */
    usec_t               cancel_sent;     /* ... when */
    usec_t               xact_start;      /* when the open transaction began */
    bool                 opened_ahead;    /* opened for min_pool_size, not for a waiting client */
    bool                 used;            /* has served a client */
    unsigned             login_gen;       /* its pool's share login_gen when it was opened */
    bool                 checked;         /* logged in or checked, and no client since */
    bool                 close_needed;    /* RECONNECT: close instead of reusing it */
    bool                 std_strings;     /* standard_conforming_strings is on */
    unsigned             scan_pending;    /* enum scan_flag: what the client's text may have changed */
    struct varlist       scan_names;      /* settings the client's text named (values unused) */
    struct reply_queue   rq;              /* requests whose reply is due, in order */
    struct pstmt_cache   stmts;           /* statements prepared under pgbun's names (pstmt_fwd.h) */
    bool                 stmts_dirty;     /* a client's text may have dropped some: close before Parse */
    bool                 drop_all_due;    /* its client's DEALLOCATE ALL or DISCARD ALL may run: its tag drops names */
    unsigned             held;            /* enum held_state: its client is pinned to it while nonzero */
    unsigned             held_read;       /* ... as the read-back found it */
    usec_t               held_since;      /* when held became nonzero */
    bool                 readback_settings; /* the read-back asks for the session's settings */
    bool                 readback_held;     /* ... and for what it holds (held_query) */
    uint64_t       unknown_of;  /* a client that may have left state pgbun cannot name here (SCAN_UNKNOWN); 0: none */
    bool           cleaning;    /* pgbun's query of its phase resets every setting first */
    bool           restore_due; /* a RESET of a client's startup parameter: its request restores them */
    int            login_rfq;   /* logging in: ReadyForQuery due for connect_query (2) and the baseline read (1) */
    char           connect_status; /* connect_query's ReadyForQuery status */
    struct varlist baseline;       /* session-level settings connect_query made (pg_settings): every client's start */
    const struct server_lookup_ops *lookup; /* PHASE_LOOKUP: whom to tell; NULL once told */
    void                           *lookup_arg;
    int                             lookup_stmt; /* statements of the lookup completed (the query is the second) */
};

/* Opens a new connection for the pool, whose places under its limits the caller has taken; `ahead` when no client is
 * waiting for it (min_pool_size). false: out of memory before anything was opened. */
bool server_launch(struct pool *p, bool ahead);
/*
 * A job's query (pool_job): `query` with `param` as $1, on server s the
 * pool gave the job (TESTING). It runs in one transaction with
 * search_path = pg_catalog, pg_temp, so that no schema a role controls can
 * stand in for what it names; ops->row gets its rows, ops->done its end
 * (also when the connection is lost, or it takes longer than
 * server_connect_timeout). The server then goes back to the pool, or is
 * closed if the query left it unclean.
 */
void server_lookup(struct server *s, const char *query, const char *param, const struct server_lookup_ops *ops,
                   void *arg);
/* An idle server runs server_check_query (TESTING), then goes back to the pool. */
void server_check(struct server *s);
/* Closes through one door: logs `reason`, unlinks, tells the pool, defers the free. */
void server_close(struct server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Linked: applies the client's parameters, then calls client_start(). */
void server_prepare_for(struct server *s, struct client *c);
/*
 * The client left: reset, release or close the server. `quit` when it said
 * Terminate: a request it sent first still runs to its end, as it would
 * without pgbun; a client that vanished has its running query cancelled.
 */
void server_client_gone(struct server *s, bool quit);
/* Client bytes were queued in s->out: write them. false when the server was closed. */
bool server_flush(struct server *s);
/*
 * Outside session mode: when the server is clean and all it sent is relayed,
 * unlink the client and return the server to the pool. true when the server
 * is no longer the client's (released, or the client was closed).
 */
bool server_release_if_done(struct server *s);
/* The client's output drained: read again. */
void server_resume(struct server *s);
/* Sends a CancelRequest with the backend's key on a new connection. */
void server_send_cancel(struct server *s);
/* An idle server leaves its worker's loop (pool.c has taken it off its lists)... */
void server_detach(struct server *s);
/* ... and joins pool p's worker, idle and reading. */
void server_attach(struct server *s, struct pool *p);
/* Closes and frees a detached server that no pool holds. */
void server_discard(struct server *s);
/*
 * server_fast_close: a linked server RECONNECT or RELOAD retired (close_needed)
 * that is clean and has relayed everything is closed, and its client with it.
 * true when it was closed.
 */
bool server_close_if_retired(struct server *s);
/* True when the server may be handed to another client. */
bool server_is_clean(const struct server *s);

void server_free(struct server *s);

/* A log line about s: its identity is the text line's prefix (S-7: db/user@host:port), and fields in JSON. */
void server_log_line(const struct server *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define server_log(s, level, ...)                                                                                      \
    do {                                                                                                               \
        if (log_enabled(level)) server_log_line(s, level, __VA_ARGS__);                                                \
    } while (0)

#endif
