/*
 * worker.h - the event loops: one per worker thread (`workers = N`).
 *
 * A worker owns an event loop and everything on it: its listeners, the
 * clients they accepted, its pools and their servers, its timers. While it
 * runs, no other thread touches any of it. Work crosses workers in two ways:
 *
 *   - the inbox: an idle server handed to a worker whose clients wait for
 *     one, a unix-socket client accepted by worker 0, a cancel request for a
 *     client of that worker. worker_send queues it and wakes the worker.
 *   - stopping the world: the admin console, a reload, the signals and the
 *     end of a stats_period call worker_stop_world, which parks every other
 *     worker between two of its callbacks; then any worker's objects may be
 *     read and changed (each object knows its worker, so what it schedules
 *     lands on the right loop) until worker_start_world.
 *
 * With one worker there is one thread and both calls cost nothing.
 */
#ifndef PGBUN_WORKER_H
#define PGBUN_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "pstmt.h"

#define WORKERS_MAX 64

struct event;
struct event_base;
struct evdns_base;
struct server;
struct pool_world;
struct listener_set;
struct cancel_conn;
struct inbox_item;

/* What a worker is woken for besides its inbox (bits of worker.pending). */
enum {
    WAKE_PARK = 1,     /* another worker stops the world */
    WAKE_WANT = 2,     /* a worker's clients wait for a server: give idle ones away */
    WAKE_BLOCKED = 4,  /* a database or user limit has room again: serve blocked pools */
    WAKE_SHUTDOWN = 8, /* stop the loop */
};

TAILQ_HEAD(cancel_list, cancel_conn);

struct worker {
    int                   id;
    struct event_base    *base;
    struct evdns_base    *dns;     /* async resolver, made on first use */
    struct pool_world    *pw;      /* pool.c: pools, login and reap lists, timers */
    struct listener_set  *ls;      /* listener.c: this worker's listen sockets */
    struct cancel_list    cancels; /* cancel.c: cancel requests on their way to PostgreSQL */
    struct pstmt_registry stmts;   /* pstmt.c: the prepared statements of its clients */
    pthread_t             thread;
    bool                  started; /* the thread runs (workers 1..N-1) */

    int                efd;    /* eventfd other threads write to wake it (more than one worker) */
    struct event      *notify; /* ... read here */
    pthread_mutex_t    lock;   /* guards pending and the inbox */
    unsigned           pending;
    struct inbox_item *inbox;
    struct inbox_item *inbox_last;
};

/* The worker running on this thread. */
extern _Thread_local struct worker *worker_self;

/* Makes n workers with their event loops; worker 0 is this thread's. */
bool worker_setup(int n, char **err) __attribute__((warn_unused_result));
/* Re-creates each loop's kernel state after fork (daemon mode). */
void worker_reinit(void);
/* Starts workers 1..N-1 in their threads, runs worker 0 here; returns when every loop has stopped, false if a thread
 * could not start. */
bool worker_run(void);
/* Closes what is still in the inboxes (after worker_run, before pool_fini). */
void worker_drop_inboxes(void);
/* Frees what worker_setup made (after pool_fini). */
void worker_fini(void);

struct worker *worker_get(int id);
int            worker_count(void);

/* Stops every other worker at a safe point, or waits for the world another worker stopped. */
void worker_stop_world(void);
void worker_start_world(void);

/* Wakes every worker but `except` for `what`. */
void worker_wake_others(const struct worker *except, unsigned what);
/* Stops every worker's loop (shutdown). */
void worker_stop_loops(void);

/* Inbox: hands an idle, detached server, an accepted unix-socket fd or a cancel key to w. */
bool worker_send_server(struct worker *w, struct server *s);
bool worker_send_client(struct worker *w, int fd);
bool worker_send_cancel(struct worker *w, const uint8_t key[8]);

#endif
