/*
 * worker.c - worker threads, their inboxes and stopping the world.
 *
 * Stopping the world: the stopper sets `stopping` and wakes every other
 * worker with WAKE_PARK. Each parks in its notify callback (between two
 * callbacks, so none of its objects is half-changed) until the stopper
 * calls worker_start_world. A worker that wants to stop the world while
 * another one does parks first, then stops it in turn.
 *
 * libevent runs without its thread locks: a worker is woken through its own
 * eventfd, and another thread touches its loop (adds or deletes events of
 * its objects) only while it is parked inside a callback, exactly as if one
 * of its own callbacks did so; the world lock orders the memory.
 */
#include "worker.h"

#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "client.h"
#include "log.h"
#include "pool.h"

enum inbox_kind { IN_SERVER, IN_CLIENT, IN_CANCEL };

struct inbox_item {
    struct inbox_item *next;
    enum inbox_kind    kind;
    struct server     *server;
    int                fd;
    uint8_t            key[8];
};

_Thread_local struct worker *worker_self;

static struct worker *workers;
static int            nworkers;

static pthread_mutex_t world_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  world_cond = PTHREAD_COND_INITIALIZER;
static bool            threads_running; /* workers 1..N-1 run: stopping the world means something */
static bool            stopping;        /* a worker holds the world stopped */
static struct worker  *stopper;         /* ... this one */
static int             depth;           /* its worker_stop_world calls not yet ended */
static int             parked;          /* workers parked for it, or whose loop has ended for good */

struct worker *worker_get(int id)
{
    return &workers[id];
}

int worker_count(void)
{
    return nworkers;
}

/* Called with world_lock held: waits out a stopped world, counted as parked. */
static void park_locked(void)
{
    parked++;
    pthread_cond_broadcast(&world_cond);
    while (stopping)
        pthread_cond_wait(&world_cond, &world_lock);
    parked--;
}

void worker_stop_world(void)
{
    if (!threads_running) return;
    pthread_mutex_lock(&world_lock);
    if (stopping && stopper == worker_self) { /* already stopped by this worker */
        depth++;
        pthread_mutex_unlock(&world_lock);
        return;
    }
    while (stopping)
        park_locked();
    stopping = true;
    stopper = worker_self;
    depth = 1;
    pthread_mutex_unlock(&world_lock);
    worker_wake_others(worker_self, WAKE_PARK);
    pthread_mutex_lock(&world_lock);
    while (parked < nworkers - 1)
        pthread_cond_wait(&world_cond, &world_lock);
    pthread_mutex_unlock(&world_lock);
}

void worker_start_world(void)
{
    if (!threads_running) return;
    pthread_mutex_lock(&world_lock);
    if (--depth == 0) {
        stopping = false;
        stopper = NULL;
        pthread_cond_broadcast(&world_cond);
    }
    pthread_mutex_unlock(&world_lock);
}

static void kick(struct worker *w)
{
    uint64_t one = 1;

    /* EAGAIN: the counter is full, so a wake-up is due anyway. */
    if (write(w->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_error("worker %d: eventfd: %s", w->id, strerror(errno));
}

static void wake(struct worker *w, unsigned what)
{
    pthread_mutex_lock(&w->lock);
    w->pending |= what;
    pthread_mutex_unlock(&w->lock);
    kick(w);
}

void worker_wake_others(const struct worker *except, unsigned what)
{
    for (int i = 0; i < nworkers; i++)
        if (&workers[i] != except) wake(&workers[i], what);
}

void worker_stop_loops(void)
{
    for (int i = 0; i < nworkers; i++)
        if (&workers[i] == worker_self)
            event_base_loopbreak(workers[i].base);
        else
            wake(&workers[i], WAKE_SHUTDOWN);
}

static bool send_item(struct worker *w, struct inbox_item *it)
{
    it->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->inbox_last)
        w->inbox_last->next = it;
    else
        w->inbox = it;
    w->inbox_last = it;
    pthread_mutex_unlock(&w->lock);
    kick(w);
    return true;
}

bool worker_send_server(struct worker *w, struct server *s)
{
    struct inbox_item *it = calloc(1, sizeof(*it));

    if (it == NULL) return false;
    it->kind = IN_SERVER;
    it->server = s;
    return send_item(w, it);
}

bool worker_send_client(struct worker *w, int fd)
{
    struct inbox_item *it = calloc(1, sizeof(*it));

    if (it == NULL) return false;
    it->kind = IN_CLIENT;
    it->fd = fd;
    return send_item(w, it);
}

bool worker_send_cancel(struct worker *w, const uint8_t key[8])
{
    struct inbox_item *it = calloc(1, sizeof(*it));

    if (it == NULL) return false;
    it->kind = IN_CANCEL;
    memcpy(it->key, key, sizeof(it->key));
    return send_item(w, it);
}

static void handle_item(struct inbox_item *it)
{
    switch (it->kind) {
    case IN_SERVER: pool_adopt_server(it->server); break;
    case IN_CLIENT: client_accept(it->fd, NULL, 0, true); break;
    case IN_CANCEL: client_cancel_local(it->key); break;
    }
}

static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker     *w = arg;
    struct inbox_item *items, *it;
    unsigned           pending;
    uint64_t           count;

    if (read(w->efd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        log_error("worker %d: eventfd: %s", w->id, strerror(errno));
    pthread_mutex_lock(&w->lock);
    pending = w->pending;
    w->pending = 0;
    items = w->inbox;
    w->inbox = w->inbox_last = NULL;
    pthread_mutex_unlock(&w->lock);

    if (pending & WAKE_PARK) {
        pthread_mutex_lock(&world_lock);
        if (stopping) park_locked();
        pthread_mutex_unlock(&world_lock);
    }
    while ((it = items) != NULL) {
        items = it->next;
        handle_item(it);
        free(it);
    }
    if (pending & WAKE_WANT) pool_give_wanted();
    if (pending & WAKE_BLOCKED) pool_serve_blocked();
    if (pending & WAKE_SHUTDOWN) event_base_loopbreak(w->base);
}

bool worker_setup(int n, char **err)
{
    *err = NULL;
    workers = calloc((size_t)n, sizeof(*workers));
    if (workers == NULL) return false;
    nworkers = n;
    for (int i = 0; i < n; i++) {
        struct worker *w = &workers[i];

        w->id = i;
        w->efd = -1;
        TAILQ_INIT(&w->cancels);
        pthread_mutex_init(&w->lock, NULL);
        w->base = event_base_new();
        if (w->base == NULL) {
            if (asprintf(err, "could not create event loop %d", i) < 0) *err = NULL;
            return false;
        }
        if (n == 1) continue; /* nobody to wake it */
        w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (w->efd < 0 || (w->notify = event_new(w->base, w->efd, EV_READ | EV_PERSIST, notify_cb, w)) == NULL ||
            event_add(w->notify, NULL) != 0) {
            if (asprintf(err, "could not set up worker %d: %s", i, strerror(errno)) < 0) *err = NULL;
            return false;
        }
    }
    worker_self = &workers[0];
    log_set_worker(0); /* the main thread runs worker 0's loop */
    return true;
}

void worker_reinit(void)
{
    for (int i = 0; i < nworkers; i++)
        if (event_reinit(workers[i].base) != 0) log_warning("event_reinit failed");
}

/* A loop that has ended counts as parked for good: the others may still stop the world. */
static void loop_ended(void)
{
    pthread_mutex_lock(&world_lock);
    parked++;
    pthread_cond_broadcast(&world_cond);
    pthread_mutex_unlock(&world_lock);
}

static void *thread_main(void *arg)
{
    struct worker *w = arg;

    worker_self = w;
    log_set_worker(w->id);
    event_base_dispatch(w->base);
    loop_ended();
    return NULL;
}

bool worker_run(void)
{
    bool ok = true;

    /* Set before any other thread runs: from now on stopping the world waits for every worker. */
    threads_running = nworkers > 1;
    for (int i = 1; i < nworkers; i++) {
        int rc = ok ? pthread_create(&workers[i].thread, NULL, thread_main, &workers[i]) : 0;

        if (ok && rc == 0) {
            workers[i].started = true;
            continue;
        }
        if (ok) {
            /* Its listen sockets would take connections nobody serves: stop. */
            log_error("could not start worker %d: %s", i, strerror(rc));
            ok = false;
        }
        loop_ended(); /* never runs: counts as parked */
    }
    if (ok) event_base_dispatch(workers[0].base);
    loop_ended();
    worker_stop_loops();
    for (int i = 1; i < nworkers; i++)
        if (workers[i].started) pthread_join(workers[i].thread, NULL);
    threads_running = false;
    return ok;
}

void worker_drop_inboxes(void)
{
    for (int i = 0; i < nworkers; i++) {
        struct worker     *w = &workers[i];
        struct inbox_item *it;

        while ((it = w->inbox) != NULL) {
            w->inbox = it->next;
            if (it->kind == IN_CLIENT) close(it->fd);
            if (it->kind == IN_SERVER) pool_drop_server(it->server);
            free(it);
        }
        w->inbox_last = NULL;
    }
}

void worker_fini(void)
{
    for (int i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];

        if (w->dns) evdns_base_free(w->dns, 1);
        if (w->notify) event_free(w->notify);
        if (w->efd >= 0) close(w->efd);
        if (w->base) event_base_free(w->base);
        pstmt_registry_deinit(&w->stmts);
        pthread_mutex_destroy(&w->lock);
    }
    free(workers);
    log_set_worker(-1);
    workers = NULL;
    nworkers = 0;
}
