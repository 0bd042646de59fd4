/*
 * replyq.h - which reply belongs to which request, on one server connection.
 *
 * PostgreSQL answers requests in order. To answer a message itself (a
 * Close of a client's prepared statement), to hide the reply to a message
 * it added (a Parse the server lacked), pgbun must know, for each reply,
 * which request it ends. The queue holds one entry per request sent (or
 * answered by pgbun) whose reply is still due:
 *
 *   client P B E S  ->  [P][B][E][S]  <-  1 2 D.. C Z  from the server
 *
 * A reply that ends the head entry pops it; a SYNTH entry that reaches the
 * head has its reply written by pgbun at that point. After an
 * ErrorResponse to an extended-protocol message, PostgreSQL skips to the
 * next Sync, and so does the queue. Not wired into the relay yet: see
 * docs/SESSION_STATE.md, section 1.
 */
#ifndef PGBUN_REPLYQ_H
#define PGBUN_REPLYQ_H

#include <stdbool.h>
#include <stdint.h>

enum rq_action {
    RQ_PASS,  /* the reply goes to the client */
    RQ_DROP,  /* pgbun sent the request for itself: the reply is discarded */
    RQ_SYNTH, /* pgbun answers it: `synth` is written to the client in its turn */
};

struct rq_entry {
    char    type;   /* the request: P B D E C S Q F */
    uint8_t action; /* enum rq_action */
    char    synth;  /* RQ_SYNTH: the reply message type ('1' ParseComplete, '3' CloseComplete) */
};

struct reply_queue {
    struct rq_entry *e;       /* ring of cap entries */
    uint32_t         head, n; /* first entry, entries held */
    uint32_t         cap;
    bool             skipping; /* after an error: requests up to the next Sync get no reply */
};

/* Writes a reply pgbun answers itself (type '1' or '3', empty body) to the client. */
typedef void rq_emit_fn(char type, void *arg);

void rq_init(struct reply_queue *q);
void rq_deinit(struct reply_queue *q);

/*
 * A request was sent (or, RQ_SYNTH, answered by pgbun). A SYNTH request
 * with nothing before it is answered at once through emit. While skipping
 * after an error, requests other than Sync are dropped: PostgreSQL will
 * not answer them. false: out of memory.
 */
bool rq_push(struct reply_queue *q, char type, enum rq_action action, char synth, rq_emit_fn *emit, void *arg)
    __attribute__((warn_unused_result));

/*
 * A message of type t came from the server. Returns whether it goes to the
 * client (false: the request was pgbun's own), and pops what it ended.
 * Then, once the message is passed on, rq_answer_due().
 */
bool rq_reply(struct reply_queue *q, char t);

/* Writes, through emit, the replies pgbun owes now that the requests before them are answered. */
void rq_answer_due(struct reply_queue *q, rq_emit_fn *emit, void *arg);

/*
 * COPY FROM STDIN began ('G'): PostgreSQL ignores the n Syncs the client
 * sent behind the Execute; their entries go.
 */
void rq_copy_in(struct reply_queue *q, int n);

static inline bool rq_empty(const struct reply_queue *q)
{
    return q->n == 0;
}

#endif
