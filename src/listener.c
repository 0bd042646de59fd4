/*
 * listener.c - accepts client connections.
 *
 * One evconnlistener per address: each entry of listen_addr ("*" means
 * every IPv4 and IPv6 address) and the unix socket
 * <unix_socket_dir>/.s.PGSQL.<port>, named as PostgreSQL names it so that
 * `psql -h /tmp -p 6432` finds it.
 *
 * Out of file descriptors (EMFILE, ENFILE), accept() fails and the clients
 * it would have taken wait in the kernel's backlog, with no word. Each
 * worker keeps one descriptor in reserve for that moment: it is closed,
 * a waiting client accepted with it is told why it is refused (FATAL 53300,
 * before it has said anything, as PostgreSQL's postmaster answers when it
 * cannot start a backend) and closed, and the reserve is taken again, for
 * every client waiting on any worker's sockets: another worker's accept()
 * can take a reserve in the moment it is given up, and the clients waiting
 * on that worker's sockets are answered through the others'. Then the
 * worker pauses accepting for a second instead of spinning. The first
 * failure is logged, then one line a minute while failures go on; a
 * failure a minute after the last one is logged anew.
 *
 * With several workers each one has its own TCP sockets, bound with
 * SO_REUSEPORT, and the kernel spreads new connections over them. The unix
 * socket is worker 0's; it hands its clients to the workers in turn.
 */
#include "listener.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "io.h"
#include "log.h"
#include "pgbun.h"
#include "proto.h"
#include "worker.h"

#define MAX_LISTENERS     16
#define REFUSE_PER_WAKEUP 256                 /* waiting clients told "no" at one failure; the rest next second */
#define STARVED_REPORT    (60 * USEC_PER_SEC) /* while out of descriptors, one log line a minute */

struct listener {
    struct evconnlistener *lev;
    bool                   is_unix;
};

/* One worker's listen sockets (worker.ls). */
struct listener_set {
    struct worker  *w;
    struct listener l[MAX_LISTENERS];
    int             n;
    struct event   *resume_timer;
    int             spare;          /* /dev/null, given up when accept() finds no descriptor; -1: none (refuse_lock) */
    usec_t          starved_since;  /* the first accept() of this spell that failed for want of a descriptor */
    usec_t          starved_last;   /* ... the last one; a spell ends a minute after it (0: none yet) */
    usec_t          starved_logged; /* ... the last line about it */
    unsigned long   refused;        /* clients refused with 53300 since starved_since */
};

static char  unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static gid_t unix_gid = (gid_t)-1; /* unix_socket_group's, or -1: the socket keeps its creator's group */
static int   next_unix_worker;     /* worker 0's only */

/* Guards every worker's spare, and their TCP listeners while another worker may refuse clients on them. */
static pthread_mutex_t refuse_lock = PTHREAD_MUTEX_INITIALIZER;

static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct listener *l = arg;

    if (l->is_unix && worker_count() > 1) {
        struct worker *w = worker_get(next_unix_worker);

        next_unix_worker = (next_unix_worker + 1) % worker_count();
        if (w != worker_self) {
            if (!worker_send_client(w, fd)) {
                log_warning("could not hand a unix-socket client to worker %d: out of memory", w->id);
                close(fd);
            }
            return;
        }
    }
    client_accept(fd, sa, salen, l->is_unix);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct listener_set *ls = arg;

    for (int i = 0; i < ls->n; i++)
        if (ls->l[i].lev != NULL) evconnlistener_enable(ls->l[i].lev);
}

/*
 * Tells a client accepted on the reserve descriptor why it is refused, and
 * closes it, before it has been read, as PostgreSQL's postmaster does when
 * it cannot start a backend. (libpq, having asked for TLS first as it does
 * by default over TCP, then says "server sent an error response during SSL
 * exchange"; answering "N" first would need the descriptor held until its
 * startup packet came.) What it sent is read before the close: closed with
 * unread bytes, a socket sends a reset, which can reach the client before
 * the error does.
 */
static void refuse(int fd)
{
    struct evbuffer *msg = evbuffer_new();
    char             sink[1024];

    if (msg != NULL) {
        proto_add_error(msg, "FATAL", "53300", "too many connections: pgbun is out of file descriptors");
        (void)evbuffer_write(msg, fd);
        evbuffer_free(msg);
    }
    shutdown(fd, SHUT_WR);
    for (int i = 0; i < 16 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
        ;
    close(fd);
}

/* A descriptor held in reserve, by any worker; NULL if every one has been lost (refuse_lock held). */
static int *find_spare(void)
{
    for (int i = 0; i < worker_count(); i++) {
        struct listener_set *ls = worker_get(i)->ls;

        if (ls != NULL && ls->spare >= 0) return &ls->spare;
    }
    return NULL;
}

/*
 * Refuses up to max clients waiting on listen socket lfd, each through a
 * reserve descriptor (refuse_lock held). Another worker's accept() may take
 * the descriptor given up first: that reserve is lost, and the next is tried.
 */
static unsigned long refuse_on(int lfd, unsigned long max)
{
    unsigned long n = 0;
    int          *spare;

    while (n < max && (spare = find_spare()) != NULL) {
        int fd, err;

        close(*spare);
        fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        err = errno;
        if (fd >= 0) {
            refuse(fd);
            n++;
        }
        *spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
        /* Failed: no one waiting, or an error of the socket's; or out of descriptors with the reserve back (a
         * descriptor came and went): next time. Only a lost reserve goes on to the next, so this ends. */
        if (fd < 0 && (*spare >= 0 || (err != EMFILE && err != ENFILE))) break;
    }
    return n;
}

/*
 * Refuses the clients waiting on every worker's listen sockets: a worker
 * that has lost its reserve, or has none left to give, still gets its
 * clients answered by the others'. Reserves lost earlier are taken again
 * first, if a descriptor has freed up since.
 */
static unsigned long refuse_waiting(void)
{
    unsigned long n = 0;

    pthread_mutex_lock(&refuse_lock);
    for (int i = 0; i < worker_count(); i++) {
        struct listener_set *ls = worker_get(i)->ls;

        if (ls != NULL && ls->spare < 0) ls->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    for (int i = 0; i < worker_count(); i++) {
        struct listener_set *ls = worker_get(i)->ls;

        for (int j = 0; ls != NULL && j < ls->n && n < REFUSE_PER_WAKEUP; j++)
            if (ls->l[j].lev != NULL) n += refuse_on(evconnlistener_get_fd(ls->l[j].lev), REFUSE_PER_WAKEUP - n);
    }
    pthread_mutex_unlock(&refuse_lock);
    return n;
}

static void error_cb(struct evconnlistener *lev, void *arg)
{
    struct listener_set *ls = worker_self->ls;
    int                  err = EVUTIL_SOCKET_ERROR();
    struct timeval       tv = {1, 0};
    usec_t               now = pgbun_now();

    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        unsigned long refused = refuse_waiting();

        /* At the limit, descriptors come and go: one spell, one line, until a minute passes without a failure. */
        if (ls->starved_last == 0 || now - ls->starved_last >= STARVED_REPORT) {
            ls->starved_since = ls->starved_logged = now;
            ls->refused = refused;
            log_warning("accept failed: %s; %lu waiting clients refused with 53300, and new connections paused for "
                        "1 s at a time until descriptors free up",
                        strerror(err), refused);
        } else {
            ls->refused += refused;
            if (now - ls->starved_logged >= STARVED_REPORT) {
                ls->starved_logged = now;
                log_warning("still short of file descriptors after %.0f s: %lu clients refused so far",
                            (double)(now - ls->starved_since) / USEC_PER_SEC, ls->refused);
            }
        }
        ls->starved_last = now;
        for (int i = 0; i < ls->n; i++)
            if (ls->l[i].lev != NULL) evconnlistener_disable(ls->l[i].lev);
        if (ls->resume_timer == NULL) ls->resume_timer = evtimer_new(ls->w->base, resume_cb, ls);
        if (ls->resume_timer) evtimer_add(ls->resume_timer, &tv);
        return;
    }
    log_warning("accept failed: %s", strerror(err));
}

static bool add_listener(struct listener_set *ls, int fd, bool is_unix, int backlog, char **err, const char *what)
{
    struct evconnlistener *lev;

    if (ls->n == MAX_LISTENERS) {
        close(fd);
        if (asprintf(err, "too many listen addresses (at most %d)", MAX_LISTENERS) < 0) *err = NULL;
        return false;
    }
    evutil_make_socket_nonblocking(fd);
    lev = evconnlistener_new(ls->w->base, accept_cb, &ls->l[ls->n], LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                             backlog, fd);
    if (lev == NULL) {
        if (asprintf(err, "could not listen on %s: %s", what, strerror(errno)) < 0) *err = NULL;
        close(fd);
        return false;
    }
    evconnlistener_set_error_cb(lev, error_cb);
    ls->l[ls->n].lev = lev;
    ls->l[ls->n].is_unix = is_unix;
    ls->n++;
    if (ls->w->id == 0) log_info("listening on %s", what);
    return true;
}

static bool listen_tcp(struct listener_set *ls, const struct pgbun_config *cfg, const char *host, char **err)
{
    struct addrinfo  hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res, *ai;
    char             port[16];
    int              rc;

    snprintf(port, sizeof(port), "%d", cfg->listen_port);
    rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, port, &hints, &res);
    if (rc != 0) {
        if (asprintf(err, "listen_addr \"%s\": %s", host, gai_strerror(rc)) < 0) *err = NULL;
        return false;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        char what[128], name[64] = "";
        int  on = 1;
        int  fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);

        getnameinfo(ai->ai_addr, ai->ai_addrlen, name, sizeof(name), NULL, 0, NI_NUMERICHOST);
        snprintf(what, sizeof(what), ai->ai_family == AF_INET6 ? "[%s]:%d" : "%s:%d", name, cfg->listen_port);
        if (fd < 0) {
            if (asprintf(err, "could not create a socket for %s: %s", what, strerror(errno)) < 0) *err = NULL;
            goto fail;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        if (cfg->so_reuseport || worker_count() > 1) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
        if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            if (asprintf(err, "could not bind %s: %s", what, strerror(errno)) < 0) *err = NULL;
            close(fd);
            goto fail;
        }
        if (!add_listener(ls, fd, false, cfg->listen_backlog, err, what)) goto fail;
    }
    freeaddrinfo(res);
    return true;
fail:
    freeaddrinfo(res);
    return false;
}

static bool listen_unix(struct listener_set *ls, const struct pgbun_config *cfg, char **err)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    int                fd;

    if ((size_t)snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d", cfg->unix_socket_dir, cfg->listen_port) >=
        sizeof(un.sun_path)) {
        if (asprintf(err, "unix_socket_dir \"%s\" is too long", cfg->unix_socket_dir) < 0) *err = NULL;
        return false;
    }
    if (cfg->unix_socket_group != NULL && cfg->unix_socket_group[0] != '\0') {
        struct group *gr;

        errno = 0;
        if ((gr = getgrnam(cfg->unix_socket_group)) == NULL) {
            if (asprintf(err, "unix_socket_group \"%s\": %s", cfg->unix_socket_group,
                         errno != 0 ? strerror(errno) : "no such group") < 0)
                *err = NULL;
            return false;
        }
        unix_gid = gr->gr_gid;
    }
    /* A socket file nobody answers on is left over from a crash: remove it. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        if (connect(fd, (struct sockaddr *)&un, sizeof(un)) == 0) {
            close(fd);
            if (asprintf(err, "another server is already listening on %s", un.sun_path) < 0) *err = NULL;
            return false;
        }
        close(fd);
        if (errno == ECONNREFUSED) unlink(un.sun_path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0) {
        if (asprintf(err, "could not bind unix socket %s: %s", un.sun_path, strerror(errno)) < 0) *err = NULL;
        if (fd >= 0) close(fd);
        return false;
    }
    snprintf(unix_path, sizeof(unix_path), "%s", un.sun_path);
    chmod(un.sun_path, (mode_t)cfg->unix_socket_mode);
    /* Not root, pgbun may only hand it to a group it is in itself. */
    if (unix_gid != (gid_t)-1 && chown(un.sun_path, (uid_t)-1, unix_gid) != 0) {
        if (asprintf(err, "could not give unix socket %s to unix_socket_group \"%s\": %s", un.sun_path,
                     cfg->unix_socket_group, strerror(errno)) < 0)
            *err = NULL;
        close(fd);
        return false;
    }
    return add_listener(ls, fd, true, cfg->listen_backlog, err, un.sun_path);
}

static bool start_worker(struct worker *w, const struct pgbun_config *cfg, char **err)
{
    struct listener_set *ls = calloc(1, sizeof(*ls));
    char                *addrs, *tok, *save = NULL;

    if (ls == NULL) return false;
    ls->w = w;
    w->ls = ls;
    ls->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
    /* The unix socket first: once the TCP port answers, both do. */
    if (w->id == 0 && cfg->unix_socket_dir != NULL && cfg->unix_socket_dir[0] != '\0' && !listen_unix(ls, cfg, err))
        return false;
    if (cfg->listen_addr != NULL && cfg->listen_addr[0] != '\0') {
        addrs = strdup(cfg->listen_addr);
        if (addrs == NULL) return false;
        for (tok = strtok_r(addrs, ", ", &save); tok != NULL; tok = strtok_r(NULL, ", ", &save)) {
            if (!listen_tcp(ls, cfg, tok, err)) {
                free(addrs);
                return false;
            }
        }
        free(addrs);
    }
    if (ls->n == 0 && w->id == 0) {
        *err = strdup("nothing to listen on: set listen_addr or unix_socket_dir");
        return false;
    }
    return true;
}

bool listener_start(const struct pgbun_config *cfg, char **err)
{
    *err = NULL;
    for (int i = 0; i < worker_count(); i++) {
        if (!start_worker(worker_get(i), cfg, err)) {
            listener_stop();
            return false;
        }
    }
    return true;
}

void listener_chown(uid_t uid, gid_t gid)
{
    if (unix_gid != (gid_t)-1) gid = unix_gid;
    if (unix_path[0] != '\0' && chown(unix_path, uid, gid) != 0)
        log_warning("could not hand %s to uid %d: %s", unix_path, (int)uid, strerror(errno));
}

void listener_stop_tcp(void)
{
    struct evconnlistener *gone[WORKERS_MAX * MAX_LISTENERS];
    int                    n = 0;

    /*
     * Taken from their slots under the lock, so that no worker refusing
     * clients uses one, and freed after it: freeing waits for a callback of
     * the listener running in its worker, which may be waiting for the lock.
     */
    pthread_mutex_lock(&refuse_lock);
    for (int i = 0; i < worker_count(); i++) {
        struct listener_set *ls = worker_get(i)->ls;

        /* Emptied in place: each listener's callback holds its slot's address. */
        for (int j = 0; ls != NULL && j < ls->n; j++) {
            if (ls->l[j].is_unix || ls->l[j].lev == NULL) continue;
            gone[n++] = ls->l[j].lev;
            ls->l[j].lev = NULL;
        }
    }
    pthread_mutex_unlock(&refuse_lock);
    while (n > 0)
        evconnlistener_free(gone[--n]);
}

void listener_stop(void)
{
    for (int i = 0; i < worker_count(); i++) {
        struct worker       *w = worker_get(i);
        struct listener_set *ls = w->ls;

        if (ls == NULL) continue;
        for (int j = 0; j < ls->n; j++)
            if (ls->l[j].lev != NULL) evconnlistener_free(ls->l[j].lev);
        if (ls->resume_timer != NULL) event_free(ls->resume_timer);
        if (ls->spare >= 0) close(ls->spare);
        free(ls);
        w->ls = NULL;
    }
    if (unix_path[0] != '\0') {
        unlink(unix_path);
        unix_path[0] = '\0';
    }
}
