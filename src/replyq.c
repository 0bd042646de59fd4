/*
 * replyq.c - the queue of requests whose reply is due, on one server.
 *
 * Which reply ends which request (an entry is popped by it):
 *
 *   P Parse     '1'            B Bind      '2'          C Close   '3'
 *   D Describe  'T' or 'n' (a statement's 't' comes first)
 *   E Execute   'C', 'I' or 's' (rows, and a COPY's messages, come first)
 *   S Sync, Q Query, F FunctionCall   'Z'
 *
 * NoticeResponse, NotificationResponse and ParameterStatus may come at any
 * time and end nothing. An ErrorResponse to an extended-protocol request
 * makes PostgreSQL skip every request up to the next Sync; the queue pops
 * them without their SYNTH replies, as PostgreSQL sends none either.
 */
#include "replyq.h"

#include <stdlib.h>
#include <string.h>

static struct replyq_entry *at(const struct reply_queue *q, uint32_t i)
{
    return &q->e[(q->head + i) & (q->cap - 1)];
}

/* Pops the head; `ok`: it took effect (its reply came, or pgbun gave it). */
static void pop(struct reply_queue *q, bool ok)
{
    struct replyq_entry *h = at(q, 0);

    if (h->adds_name || h->id != 0) q->settle(h, ok, q->arg);
    free(h->name);
    q->head = (q->head + 1) & (q->cap - 1);
    if (--q->n == 0) q->head = 0;
}

static bool grow(struct reply_queue *q)
{
    uint32_t             cap = q->cap ? q->cap * 2 : 8;
    struct replyq_entry *e = malloc(cap * sizeof(*e));

    if (e == NULL) return false;
    for (uint32_t i = 0; i < q->n; i++)
        e[i] = *at(q, i);
    free(q->e);
    q->e = e;
    q->cap = cap;
    q->head = 0;
    return true;
}

void replyq_answer_owed(struct reply_queue *q)
{
    while (q->n > 0 && at(q, 0)->action == REPLYQ_SYNTH && q->emit(at(q, 0), q->arg))
        pop(q, true);
}

static bool ends(char request, char t)
{
    switch (request) {
    case 'P': return t == '1';
    case 'B': return t == '2';
    case 'C': return t == '3';
    case 'D': return t == 'T' || t == 'n';
    case 'E': return t == 'C' || t == 'I' || t == 's';
    case 'S':
    case 'Q':
    case 'F': return t == 'Z';
    default: return false;
    }
}

void replyq_init(struct reply_queue *q, replyq_emit_fn *emit, replyq_settle_fn *settle, void *arg)
{
    memset(q, 0, sizeof(*q));
    q->emit = emit;
    q->settle = settle;
    q->arg = arg;
}

void replyq_deinit(struct reply_queue *q)
{
    for (uint32_t i = 0; i < q->n; i++)
        free(at(q, i)->name);
    free(q->e);
    q->e = NULL;
    q->head = q->n = q->cap = 0;
    q->skipping = false;
}

bool replyq_push(struct reply_queue *q, const struct replyq_entry *e)
{
    if (e->type == 'S') q->syncs++;
    if (q->skipping) {
        if (e->type != 'S') {
            /* PostgreSQL skips it: no reply will come, and it never takes effect. */
            if (e->adds_name || e->id != 0) q->settle(e, false, q->arg);
            free(e->name);
            return true;
        }
        q->skipping = false;
    }
    if (q->n == q->cap && !grow(q)) {
        free(e->name);
        return false;
    }
    *at(q, q->n) = *e;
    q->n++;
    if (q->n == 1) replyq_answer_due(q);
    return true;
}

/* An error to an extended-protocol request: pop up to the next Sync. Does the client see the error? */
static bool skip_to_sync(struct reply_queue *q)
{
    bool client = false;

    while (q->n > 0 && at(q, 0)->type != 'S') {
        client |= at(q, 0)->action != REPLYQ_DROP;
        pop(q, false);
    }
    if (q->n == 0)
        q->skipping = true; /* the Sync is yet to come */
    else
        client |= at(q, 0)->action != REPLYQ_DROP;
    return client;
}

bool replyq_reply_due(struct reply_queue *q, char t)
{
    const struct replyq_entry *h = at(q, 0);
    bool                       pass;

    if (t == 'A' || t == 'S') return true; /* notifications and parameter changes are the client's */
    pass = h->action == REPLYQ_PASS;
    if (t == 'N') return pass;
    if (t == 'E' && h->type != 'Q' && h->type != 'F' && h->type != 'S') {
        if (h->action == REPLYQ_SUBST) {
            (void)q->emit(h, q->arg); /* pgbun's error in place of the server's (at a message's start: written) */
            (void)skip_to_sync(q);
            return false;
        }
        return skip_to_sync(q);
    }
    if (ends(h->type, t)) pop(q, t != 'E');
    return pass;
}

void replyq_copy_in(struct reply_queue *q, int n)
{
    /* The head is the Execute that began the COPY; the n Syncs are right behind it. */
    for (int k = 0; k < n && q->n > 1 && at(q, 1)->type == 'S'; k++) {
        for (uint32_t i = 1; i + 1 < q->n; i++)
            *at(q, i) = *at(q, i + 1);
        q->n--;
    }
}
