/*
 * cancel.c - one-shot connections that carry a CancelRequest to PostgreSQL.
 *
 *   cancel_new (socket to the server's peer, CancelRequest queued)
 *     -> cancel_start: non-blocking connect -> writable: send
 *     -> PostgreSQL closes it (or 5 s pass, or the connect fails)
 *     -> freed, and landed(arg) told, unless cancel_orphan came first
 *
 * Each cancel waits on its worker's list (w->cancels) until it is done, so
 * that cancel_fini can drop those left at shutdown.
 */
#define LOG_EVENT LOGE_CANCEL /* the event kind of this file's log lines (log.h) */
#include "cancel.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io.h"
#include "log.h"
#include "proto.h"
#include "worker.h"

struct cancel_conn {
    TAILQ_ENTRY(cancel_conn) entry; /* on its worker's cancels until done */
    struct worker          *w;
    cancel_landed_fn       *landed; /* told when it is done; NULL once orphaned */
    void                   *arg;    /* ... with this: the server whose query it cancels */
    struct io               io;
    struct evbuffer        *out;
    struct event            timer;
    struct sockaddr_storage peer; /* the server connection's peer */
    socklen_t               peer_len;
};

static void cancel_free(struct cancel_conn *cc)
{
    cancel_landed_fn *landed = cc->landed;
    void             *arg = cc->arg;

    TAILQ_REMOVE(&cc->w->cancels, cc, entry);
    evtimer_del(&cc->timer);
    io_close(&cc->io);
    evbuffer_free(cc->out);
    free(cc);
    if (landed != NULL) landed(arg);
}

static void cancel_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    log_warning("cancel request to the server timed out");
    cancel_free(arg);
}

static void cancel_read_cb(evutil_socket_t fd, short what, void *arg)
{
    /* The server answers a CancelRequest by closing; anything else is ignored too. */
    cancel_free(arg);
}

static void cancel_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct cancel_conn *cc = arg;
    int                 err = 0;
    socklen_t           len = sizeof(err);

    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
        log_warning("cancel request: could not connect to server: %s", strerror(err ? err : errno));
        cancel_free(cc);
        return;
    }
    if (io_flush(&cc->io, cc->out) == IO_ERROR) {
        cancel_free(cc);
        return;
    }
    if (evbuffer_get_length(cc->out) == 0) io_set_reading(&cc->io, true);
}

struct cancel_conn *cancel_new(struct worker *w, int server_fd, const uint8_t key[8], cancel_landed_fn *landed,
                               void *arg)
{
    struct cancel_conn     *cc;
    struct sockaddr_storage ss;
    socklen_t               sslen = sizeof(ss);
    struct timeval          tv = {5, 0};
    int                     fd;

    /* Same address family and peer as the server connection itself. */
    if (server_fd < 0 || getpeername(server_fd, (struct sockaddr *)&ss, &sslen) < 0) return NULL;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return NULL;
    cc = calloc(1, sizeof(*cc));
    if (cc == NULL || (cc->out = evbuffer_new()) == NULL) {
        free(cc);
        close(fd);
        return NULL;
    }
    cc->w = w;
    TAILQ_INSERT_TAIL(&w->cancels, cc, entry);
    cc->landed = landed;
    cc->arg = arg;
    cc->peer = ss;
    cc->peer_len = sslen;
    io_init(&cc->io, w->base, fd, cancel_read_cb, cancel_write_cb, cc);
    evtimer_assign(&cc->timer, w->base, cancel_timeout_cb, cc);
    evtimer_add(&cc->timer, &tv);
    proto_add_cancel(cc->out, key);
    return cc;
}

void cancel_start(struct cancel_conn *cc)
{
    if (connect(cc->io.fd, (struct sockaddr *)&cc->peer, cc->peer_len) < 0 && errno != EINPROGRESS) {
        log_warning("cancel request: could not connect to server: %s", strerror(errno));
        cancel_free(cc);
        return;
    }
    if (!io_want_write(&cc->io)) {
        log_warning("cancel request: out of memory");
        cancel_free(cc);
    }
}

void cancel_orphan(struct cancel_conn *cc)
{
    cc->landed = NULL;
    cc->arg = NULL;
}

void cancel_fini(struct worker *w)
{
    struct cancel_conn *cc;

    while ((cc = TAILQ_FIRST(&w->cancels)) != NULL) {
        cancel_orphan(cc);
        cancel_free(cc);
    }
}
