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
 * next Sync, and so does the queue; entries popped that way failed, and
 * the owner hears of those that prepared or named a statement, to undo it
 * (and of those that succeeded, to count on them).
 */
#ifndef PGBUN_REPLYQ_H
#define PGBUN_REPLYQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum replyq_action {
    REPLYQ_PASS,  /* the reply goes to the client */
    REPLYQ_DROP,  /* pgbun sent the request for itself: the reply is discarded (an error still reaches the client) */
    REPLYQ_SYNTH, /* pgbun answers it: `synth` is written to the client in its turn */
    REPLYQ_SUBST, /* pgbun sent a request that fails on purpose: its error is replaced by pgbun's own */
};

struct replyq_entry {
    char     type;      /* the request: P B D E C S Q F */
    uint8_t  action;    /* enum replyq_action */
    char     synth;     /* REPLYQ_SYNTH: the reply message type ('1' ParseComplete, '3' CloseComplete) */
    bool     adds_name; /* a Parse that gave the client the statement `name` */
    bool     restore;   /* a Query or Sync after which the client's startup parameters are set again */
    uint64_t id;        /* a Parse that prepares statement id on the server, a Close that evicts it; 0: none */
    uint64_t named;     /* adds_name: the statement the name was given (a later Parse may give it another) */
    char    *name;      /* owned: the client's statement name (adds_name, or the one REPLYQ_SUBST's error names) */
};

/*
 * Writes what pgbun owes the client for e: a SYNTH reply, or the error of
 * a SUBST. false: not now (a reply to the client is half written); the
 * owner calls replyq_answer_due() again once it is.
 */
typedef bool replyq_emit_fn(const struct replyq_entry *e, void *arg);
/* e (with adds_name or an id) took effect (ok), or never will: PostgreSQL skipped it or refused it. */
typedef void replyq_settle_fn(const struct replyq_entry *e, bool ok, void *arg);

struct reply_queue {
    struct replyq_entry *e;       /* ring of cap entries, cap a power of two */
    uint32_t             head, n; /* first entry, entries held */
    uint32_t             cap;
    bool                 skipping; /* after an error: requests up to the next Sync get no reply */
    uint32_t             syncs;    /* Syncs pushed so far: which requests went out before a Sync */
    replyq_emit_fn      *emit;
    replyq_settle_fn    *settle;
    void                *arg; /* for emit and settle */
};

void replyq_init(struct reply_queue *q, replyq_emit_fn *emit, replyq_settle_fn *settle, void *arg);
void replyq_deinit(struct reply_queue *q);

/*
 * A request was sent (or, REPLYQ_SYNTH, answered by pgbun); *e is copied and
 * its name owned by the queue from now on, whatever happens. A SYNTH
 * request with nothing before it is answered at once. While skipping
 * after an error, requests other than Sync are dropped (and settle as
 * failed): PostgreSQL will not answer them. false: out of memory.
 */
bool replyq_push(struct reply_queue *q, const struct replyq_entry *e) __attribute__((warn_unused_result));

/* replyq_push of a plain request. */
static inline bool replyq_push_simple(struct reply_queue *q, char type, enum replyq_action action)
{
    struct replyq_entry e = {.type = type, .action = (uint8_t)action};

    return replyq_push(q, &e);
}

/*
 * A message of type t came from the server. Returns whether it goes to the
 * client (false: the request was pgbun's own, or its error was replaced),
 * and pops what it ended. Then, once the message is passed on, replyq_answer_due().
 */
bool replyq_reply_due(struct reply_queue *q, char t);

static inline bool replyq_reply(struct reply_queue *q, char t)
{
    const struct replyq_entry *h;

    if (q->n == 0) return true; /* nothing due: the caller judges */
    h = &q->e[q->head];
    /* A Query's, a Sync's or a FunctionCall's rows and tags pass and end nothing: only Z and E need a look. */
    if (h->action == REPLYQ_PASS && (h->type == 'Q' || h->type == 'S' || h->type == 'F') && t != 'Z' && t != 'E')
        return true;
    return replyq_reply_due(q, t);
}

/* Writes, through emit, the replies pgbun owes now that the requests before them are answered. */
void replyq_answer_owed(struct reply_queue *q);

static inline void replyq_answer_due(struct reply_queue *q)
{
    if (q->n > 0 && q->e[q->head].action == REPLYQ_SYNTH) replyq_answer_owed(q);
}

/* Whether the head entry is pgbun's (its replies may be dropped or replaced): they must be read whole. */
static inline bool replyq_head_is_own(const struct reply_queue *q)
{
    return q->n > 0 && q->e[q->head].action != REPLYQ_PASS;
}

/* Whether the head entry is a SUBST, whose error pgbun replaces... */
static inline bool replyq_head_replaces_error(const struct reply_queue *q)
{
    return q->n > 0 && q->e[q->head].action == REPLYQ_SUBST;
}

/* ... unless the server's error is another than the one provoked: then it passes. */
static inline void replyq_head_pass(struct reply_queue *q)
{
    q->e[q->head].action = REPLYQ_PASS;
}

/*
 * COPY FROM STDIN began ('G'): PostgreSQL ignores the n Syncs the client
 * sent behind the Execute; their entries go.
 */
void replyq_copy_in(struct reply_queue *q, int n);

/* The entry pushed last, or NULL. */
static inline struct replyq_entry *replyq_last(struct reply_queue *q)
{
    return q->n > 0 ? &q->e[(q->head + q->n - 1) & (q->cap - 1)] : NULL;
}

/* Whether the head entry asks for the client's startup parameters once it is answered (its ReadyForQuery). */
static inline bool replyq_head_restores(const struct reply_queue *q)
{
    return q->n > 0 && q->e[q->head].restore;
}

static inline bool replyq_empty(const struct reply_queue *q)
{
    return q->n == 0;
}

#endif
