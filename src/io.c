/*
 * io.c - non-blocking socket reads and writes on evbuffers, plain or TLS.
 *
 * Plain: one readv() into reserved buffer space, evbuffer_write() out.
 * TLS: SSL_read_ex() into the same reserved space, and SSL_write_ex() of
 * at most one record (16 KB) per call, taken straight from the buffer's
 * first chain when it holds that much, else gathered into a per-thread
 * staging buffer: small replies moved in from many chains still leave as
 * one record and one write(). Nothing is allocated per message either way.
 */
#include "io.h"

#include <errno.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "stats.h"

/* The largest TLS record's payload: one SSL_write_ex call. */
#define TLS_RECORD_MAX 16384

/* Why the last TLS call of this thread failed: io_strerror(EPROTO) reads it right after. */
static _Thread_local char tls_reason[256];

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);

void io_init(struct io *io, struct event_base *base, int fd, event_callback_fn read_cb, event_callback_fn write_cb,
             void *arg)
{
    memset(io, 0, sizeof(*io));
    io->fd = fd;
    event_assign(&io->rev, base, fd, EV_READ | EV_PERSIST, on_readable, io);
    /* Most connections never fill their socket buffer: the write event is made when one does. */
    io->wev = NULL;
    io->read_cb = read_cb;
    io->write_cb = write_cb;
    io->arg = arg;
}

void io_close(struct io *io)
{
    if (io->fd < 0) return;
    if (io->rev_on) event_del(&io->rev);
    if (io->wev != NULL) {
        event_free(io->wev);
        io->wev = NULL;
    }
    io->reading = io->rev_on = io->writing = false;
    if (io->ssl != NULL) {
        /* A close_notify, best effort: the peer learns the end was meant, not cut. */
        if (!io->tls_handshaking && !io->tls_failed) (void)SSL_shutdown(io->ssl);
        SSL_free(io->ssl);
        io->ssl = NULL;
        ERR_clear_error();
    }
    close(io->fd);
    io->fd = -1;
}

void io_detach(struct io *io)
{
    if (io->rev_on) event_del(&io->rev);
    if (io->wev != NULL) event_free(io->wev);
    io->wev = NULL;
    io->reading = io->rev_on = io->writing = false;
}

void io_attach(struct io *io, struct event_base *base)
{
    event_assign(&io->rev, base, io->fd, EV_READ | EV_PERSIST, on_readable, io);
}

/* Read readiness is armed while the owner wants input or a TLS write waits for the socket to be readable. */
static void update_rev(struct io *io)
{
    bool want = io->fd >= 0 && (io->reading || io->tls_write_on_read);

    if (want == io->rev_on) return;
    if (want)
        event_add(&io->rev, NULL);
    else
        event_del(&io->rev);
    io->rev_on = want;
}

/* Bytes OpenSSL already took off the socket raise no readiness: come back for them in the next loop pass. */
static void tls_kick(struct io *io)
{
    if (io->rev_on && SSL_has_pending(io->ssl)) event_active(&io->rev, EV_READ, 1);
}

void io_set_reading(struct io *io, bool on)
{
    if (io->fd < 0 || io->reading == on) return;
    io->reading = on;
    update_rev(io);
    if (on && io->ssl != NULL && !io->tls_handshaking) tls_kick(io);
}

bool io_want_write(struct io *io)
{
    if (io->fd < 0 || io->writing) return true;
    if (io->wev == NULL &&
        (io->wev = event_new(event_get_base(&io->rev), io->fd, EV_WRITE | EV_PERSIST, on_writable, io)) == NULL) {
        errno = ENOMEM;
        return false;
    }
    event_add(io->wev, NULL);
    io->writing = true;
    return true;
}

void io_stop_writing(struct io *io)
{
    if (!io->writing) return;
    event_del(io->wev);
    io->writing = false;
}

/* The socket is readable: the owner reads, unless a TLS write was waiting for exactly this. */
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct io *io = arg;

    if (io->tls_write_on_read) {
        io->tls_write_on_read = false;
        update_rev(io);
        io->write_cb(fd, EV_WRITE, io->arg);
        return;
    }
    io->read_cb(fd, what, io->arg);
}

/* The socket is writable: the owner writes, unless a TLS read was waiting for exactly this. */
static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct io *io = arg;

    if (io->tls_read_on_write) {
        io->tls_read_on_write = false;
        io->read_cb(fd, EV_READ, io->arg);
        return;
    }
    io->write_cb(fd, what, io->arg);
}

void io_trim(struct io *io)
{
    if (io->ssl != NULL && !io->tls_handshaking && !io->tls_read_on_write && !io->tls_write_on_read)
        (void)SSL_free_buffers(io->ssl); /* refused, harmlessly, while a record is half read or half written */
}

const char *io_strerror(int err)
{
    return err == EPROTO && tls_reason[0] != '\0' ? tls_reason : strerror(err);
}

/*
 * A TLS call failed for good: the reason in tls_reason (a certificate that
 * did not verify says why), errno EPROTO. A peer that hung up is EOF.
 */
static int tls_fail(struct io *io, int sslerr, int saved_errno)
{
    unsigned long e = 0, last;
    long          vr = SSL_get_verify_result(io->ssl);

    io->tls_failed = true;
    while ((last = ERR_get_error()) != 0)
        e = last;
    if (e == 0 && (sslerr == SSL_ERROR_SYSCALL || sslerr == SSL_ERROR_ZERO_RETURN)) {
        if (saved_errno == 0) return 0; /* the peer closed the connection */
        errno = saved_errno;
        return IO_ERROR;
    }
    if (e != 0 && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED && vr != X509_V_OK)
        snprintf(tls_reason, sizeof(tls_reason), "TLS: certificate verify failed: %s",
                 X509_verify_cert_error_string(vr));
    else
        snprintf(tls_reason, sizeof(tls_reason), "TLS: %s",
                 e != 0 && ERR_reason_error_string(e) != NULL ? ERR_reason_error_string(e) : "protocol error");
    errno = EPROTO;
    return IO_ERROR;
}

/* Drives the handshake on: 0 once done, IO_AGAIN, IO_ERROR, or 0 with the connection closed (see tls_fail). */
static int tls_handshake(struct io *io, bool from_flush, bool *eof)
{
    int r, err;

    ERR_clear_error();
    errno = 0;
    r = SSL_do_handshake(io->ssl);
    if (r == 1) {
        io->tls_handshaking = false;
        stats_event(SSL_is_server(io->ssl) ? STATS_EV_TLS_CLIENT_HANDSHAKE : STATS_EV_TLS_SERVER_HANDSHAKE);
        /* A flush that met the handshake gets its turn now. */
        if (io->tls_flush_waiting && !from_flush) {
            io->tls_flush_waiting = false;
            if (!io_want_write(io)) return IO_ERROR;
        }
        tls_kick(io);
        return 0;
    }
    err = SSL_get_error(io->ssl, r);
    switch (err) {
    case SSL_ERROR_WANT_READ:
        if (from_flush) {
            io->tls_write_on_read = !io->reading;
            update_rev(io);
        }
        return IO_AGAIN;
    case SSL_ERROR_WANT_WRITE: return io_want_write(io) ? IO_AGAIN : IO_ERROR;
    default:
        stats_event(SSL_is_server(io->ssl) ? STATS_EV_TLS_CLIENT_FAILURE : STATS_EV_TLS_SERVER_FAILURE);
        r = tls_fail(io, err, errno);
        if (r == 0) *eof = true;
        return r == 0 ? IO_ERROR : r;
    }
}

static int tls_read(struct io *io, struct evbuffer *buf, int max)
{
    struct evbuffer_iovec v[2];
    size_t                fill[2] = {0, 0};
    int                   nvec, i = 0, err = SSL_ERROR_NONE, saved = 0;
    bool                  eof = false;

    if (io->tls_handshaking) {
        int r = tls_handshake(io, false, &eof);

        if (eof) return 0;
        if (r != 0) return r;
    }
    if ((nvec = evbuffer_reserve_space(buf, max, v, 2)) <= 0) {
        errno = ENOMEM;
        return IO_ERROR;
    }
    while (i < nvec) {
        size_t n;

        if (fill[i] == v[i].iov_len) {
            i++;
            continue;
        }
        ERR_clear_error();
        errno = 0;
        if (SSL_read_ex(io->ssl, (char *)v[i].iov_base + fill[i], v[i].iov_len - fill[i], &n) != 1) {
            err = SSL_get_error(io->ssl, 0);
            saved = errno;
            break;
        }
        fill[i] += n;
        /* With read-ahead, OpenSSL's read() took what the socket had: asking again would cost a read() for EAGAIN. */
        if (!SSL_has_pending(io->ssl)) {
            err = SSL_ERROR_WANT_READ;
            break;
        }
    }
    v[0].iov_len = fill[0];
    v[1].iov_len = fill[1];
    evbuffer_commit_space(buf, v, fill[1] > 0 ? 2 : fill[0] > 0 ? 1 : 0);
    if (fill[0] + fill[1] > 0) {
        /* Space ran out, or the error shows again on the next read. */
        if (err == SSL_ERROR_NONE) tls_kick(io);
        return (int)(fill[0] + fill[1]);
    }
    switch (err) {
    case SSL_ERROR_WANT_READ: return IO_AGAIN;
    case SSL_ERROR_WANT_WRITE: io->tls_read_on_write = true; return io_want_write(io) ? IO_AGAIN : IO_ERROR;
    case SSL_ERROR_ZERO_RETURN: return 0; /* close_notify */
    default: return tls_fail(io, err, saved);
    }
}

/*
 * One readv() straight into reserved buffer space: no FIONREAD ioctl per
 * read (evbuffer_read's way), so a wakeup costs one syscall per socket.
 */
int io_read(struct io *io, struct evbuffer *buf, int max)
{
    struct evbuffer_iovec v[2];
    int                   nvec;
    ssize_t               n;

    if (io->ssl != NULL) return tls_read(io, buf, max);
    if ((nvec = evbuffer_reserve_space(buf, max, v, 2)) <= 0) {
        errno = ENOMEM;
        return IO_ERROR;
    }
    do {
        n = readv(io->fd, (struct iovec *)v, nvec);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        int saved = errno;

        evbuffer_commit_space(buf, NULL, 0);
        if (n == 0) return 0;
        errno = saved;
        return errno == EAGAIN || errno == EWOULDBLOCK ? IO_AGAIN : IO_ERROR;
    }
    if ((size_t)n <= v[0].iov_len) {
        v[0].iov_len = (size_t)n;
        nvec = 1;
    } else {
        v[1].iov_len = (size_t)n - v[0].iov_len;
    }
    evbuffer_commit_space(buf, v, nvec);
    return (int)n;
}

static int tls_flush(struct io *io, struct evbuffer *buf)
{
    static _Thread_local unsigned char stage[TLS_RECORD_MAX];
    size_t                             len;
    bool                               eof = false;

    if (io->tls_handshaking) {
        int r;

        io->tls_flush_waiting = true;
        r = tls_handshake(io, true, &eof);
        if (eof) errno = EPIPE;
        if (r != 0) return r;
        io->tls_flush_waiting = false;
    }
    while ((len = evbuffer_get_length(buf)) > 0) {
        struct evbuffer_iovec first;
        const void           *p = stage;
        size_t                n = len < TLS_RECORD_MAX ? len : TLS_RECORD_MAX, done;
        int                   err;

        /*
         * A write OpenSSL could not finish is retried with at least the same
         * bytes (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets them move): the
         * buffer only grows at its end until they are drained.
         */
        if (evbuffer_peek(buf, -1, NULL, &first, 1) >= 1 && first.iov_len >= n)
            p = first.iov_base;
        else
            evbuffer_copyout(buf, stage, n);
        ERR_clear_error();
        errno = 0;
        if (SSL_write_ex(io->ssl, p, n, &done) == 1) {
            evbuffer_drain(buf, done);
            continue;
        }
        err = SSL_get_error(io->ssl, 0);
        switch (err) {
        case SSL_ERROR_WANT_WRITE: return io_want_write(io) ? IO_AGAIN : IO_ERROR;
        case SSL_ERROR_WANT_READ:
            io->tls_write_on_read = true;
            update_rev(io);
            return IO_AGAIN;
        default:
            if (tls_fail(io, err, errno) == 0) errno = EPIPE;
            return IO_ERROR;
        }
    }
    io_stop_writing(io);
    return 0;
}

int io_flush(struct io *io, struct evbuffer *buf)
{
    if (io->ssl != NULL) return tls_flush(io, buf);
    while (evbuffer_get_length(buf) > 0) {
        int n = evbuffer_write(buf, io->fd);

        if (n >= 0) continue;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return io_want_write(io) ? IO_AGAIN : IO_ERROR;
        return IO_ERROR;
    }
    io_stop_writing(io);
    return 0;
}
void io_tune_tcp(int fd, const struct io_tcp *t)
{
    int on = 1, keep = t->keepalive;

    /* Best effort, as PgBouncer: a refused option leaves the system's default. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &keep, sizeof(keep));
    if (keep && t->keepidle > 0) (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &t->keepidle, sizeof(t->keepidle));
    if (keep && t->keepintvl > 0) (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &t->keepintvl, sizeof(t->keepintvl));
    if (keep && t->keepcnt > 0) (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &t->keepcnt, sizeof(t->keepcnt));
    if (t->user_timeout_ms > 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &t->user_timeout_ms, sizeof(t->user_timeout_ms));
    if (t->socket_buffer > 0) {
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &t->socket_buffer, sizeof(t->socket_buffer));
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &t->socket_buffer, sizeof(t->socket_buffer));
    }
}
