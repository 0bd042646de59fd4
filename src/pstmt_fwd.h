/*
 * pstmt_fwd.h - forwarding a client's protocol-level prepared statements on the
 * servers it borrows (transaction and statement mode).
 *
 * The client's Parse names a statement for pgbun; the server gets it as
 * pgbun_<id> (pstmt.h), prepared once per server for every client that
 * uses the same text. Bind and Describe are rewritten to that name, with
 * a Parse put in front where the server lacks it; Close is answered here.
 * The reply queue (replyq.h) hides the replies pgbun's additions cause and
 * undoes what a failed or skipped Parse registered.
 */
#ifndef PGBUN_PSTMT_FWD_H
#define PGBUN_PSTMT_FWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "replyq.h"

struct client;
struct server;
struct evbuffer;

/* Never prepared by pgbun: a Describe of it fails, where pgbun owes the client an error of its own. */
#define PSTMT_NO_SUCH_NAME "pgbun_none"

/* Whether pgbun keeps c's statements: its pool tracks them, or it has some already. */
bool pstmt_fwd_tracked(const struct client *c);

/*
 * Whether c->in holds enough of a P, B, D or C message (len as in its
 * header, avail bytes buffered) for pstmt_fwd_message. False: wait for more.
 */
bool pstmt_fwd_ready(struct evbuffer *in, uint8_t type, uint32_t len, size_t avail);

enum pstmt_fwd_step {
    PSTMT_PASS,   /* not a named statement: forward the message as it is */
    PSTMT_TAKEN,  /* the message's head is rewritten into s->out: forward the rest (*taken bytes are gone) */
    PSTMT_DONE,   /* handled whole: consumed, its reply entry queued */
    PSTMT_CLOSED, /* the client was closed */
};

/* A P, B, D or C message of c, once pstmt_fwd_ready(). */
enum pstmt_fwd_step pstmt_fwd_message(struct client *c, struct server *s, uint8_t type, uint32_t len, size_t *taken);

/*
 * A Query, or a Parse of the unnamed statement, whose text is DEALLOCATE of
 * target alone (scan.h: scan_effects.deallocated) and target one of c's
 * statements (PHP's PDO, psycopg past prepared_max): sent to s under
 * pgbun's name, the client's name forgotten. PSTMT_PASS otherwise.
 */
enum pstmt_fwd_step pstmt_fwd_deallocate(struct client *c, struct server *s, uint8_t type, uint32_t len,
                                         const char *target, size_t *taken);

/*
 * The client's text may drop prepared statements (scan.h SCAN_STATEMENTS
 * flags): the server's are prepared afresh; the client's names so far are
 * set aside (c->stmts_dropping), and names it prepares from now on are new.
 * pstmt_fwd_command_done drops those set aside if PostgreSQL reports DEALLOCATE
 * ALL or DISCARD ALL done; pstmt_fwd_drop_refused gives them back otherwise.
 */
void pstmt_fwd_text_dropped(struct client *c, struct server *s, unsigned flags);
/* A CommandComplete for c while s->drop_all_due: tag (len bytes, its NUL included). */
void pstmt_fwd_command_done(struct client *c, const char *tag, size_t len);
/* Every request of c before that is answered, and no such tag came: its names are its own again. */
void pstmt_fwd_drop_refused(struct client *c);

/* The reply queue's callbacks for a server (arg: the server). */
replyq_emit_fn   pstmt_fwd_emit;
replyq_settle_fn pstmt_fwd_settle;

/* The number of statements c has named, and that s holds. */
size_t pstmt_fwd_client_count(const struct client *c);
size_t pstmt_fwd_server_count(const struct server *s);

/* A client's names go, with it. */
void pstmt_fwd_client_free(struct client *c);

#endif
